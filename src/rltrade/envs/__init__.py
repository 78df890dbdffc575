"""Gymnasium trading environments over a Dataset and the execution engine.

:class:`TradingEnv` is one Gymnasium env; :class:`VecTradingEnv` is N of them as one
Stable-Baselines3 ``VecEnv`` stepped by one numba call; both share :class:`EnvCore`.
"""

from rltrade.envs.config import REWARD_DEFAULTS, REWARD_NAMES, EnvConfig
from rltrade.envs.core import EnvCore
from rltrade.envs.schemes import ACTION_SCHEMES, ActionScheme
from rltrade.envs.trading_env import TradingEnv
from rltrade.envs.vec_env import VecTradingEnv

#: reward name -> its weights and their defaults (documented in rltrade.envs.kernels)
REWARDS = REWARD_DEFAULTS

__all__ = [
    "ACTION_SCHEMES",
    "REWARDS",
    "REWARD_NAMES",
    "ActionScheme",
    "EnvConfig",
    "EnvCore",
    "TradingEnv",
    "VecTradingEnv",
]
