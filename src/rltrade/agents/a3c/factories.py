"""The envs of A3C's workers: the default env factory and how it is found from a training env.

An env factory is ``env_factory(worker_id, seed, mode="train", engine_mode=None) -> gymnasium.Env``;
with several workers it must be picklable (a top-level function or a ``functools.partial`` of
one), since each worker process is started with ``spawn`` and builds its own env.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from rltrade.envs.config import EnvConfig
from rltrade.envs.core import EnvCore
from rltrade.features.dataset import Dataset
from rltrade.features.normalize import Normalizer

#: the env factory: ``(worker_id, seed, mode="train", engine_mode=None) -> gymnasium.Env``
EnvFactory = Callable[..., gym.Env]


def trading_env_factory(dataset: Dataset, config: EnvConfig, normalizer: Normalizer | None,
                        worker_id: int, seed: int, mode: str = "train",
                        engine_mode: str | None = None) -> gym.Env:
    """The default env factory: a :class:`~rltrade.envs.TradingEnv` on ``dataset`` with the env
    mode (``train`` / ``eval``) and engine mode (``retail`` / ``ideal``, ``None`` = the
    config's) chosen at call time. Bind the first three arguments with ``functools.partial``
    (picklable, as the ``spawn`` start method needs)."""
    from rltrade.envs.trading_env import TradingEnv

    update: dict[str, Any] = {"mode": mode}
    if engine_mode is not None:
        update["engine"] = config.engine.model_copy(update={"mode": engine_mode})
    return TradingEnv(dataset, config.model_copy(update=update), normalizer=normalizer)


def default_env_factory(env: Any) -> EnvFactory | None:
    """``trading_env_factory`` bound to the data, config and normalizer of a training env
    (``VecTradingEnv``, a ``DummyVecEnv`` of ``TradingEnv``, or a ``TradingEnv``); ``None``
    when ``env`` is none of them."""
    core = getattr(env, "core", None)
    if core is None and hasattr(env, "envs") and env.envs:
        core = getattr(env.envs[0].unwrapped, "core", None)
    if core is None and isinstance(env, gym.Env):
        core = getattr(env.unwrapped, "core", None)
    if not isinstance(core, EnvCore):
        return None
    return functools.partial(trading_env_factory, core.dataset, core.config, core.normalizer)

