"""``VecTradingEnv``: N trading environments as one Stable-Baselines3 ``VecEnv``.

The N envs are stepped by one numba call on arrays (the engine's batched path), not by a Python
loop over N :class:`~rltrade.envs.TradingEnv` objects; the rules are the same code
(:class:`~rltrade.envs.core.EnvCore`), and a test proves the numbers identical step by step.

Auto-reset follows SB3: when env ``i`` is done, ``infos[i]["terminal_observation"]`` holds its
last observation, ``infos[i]["TimeLimit.truncated"]`` is true when it ended by truncation (not
termination), and the returned observation is already the first of its next episode. Env ``i``
draws its episodes from a generator seeded with ``seed + i`` (same as a ``TradingEnv`` reset
with ``seed=seed + i``).

By default an ``info`` carries the account summary (equity, position, PnL, trades, win rate,
drawdown, risk interventions) only when its episode ends, which keeps a step of 64 envs cheap;
``full_info=True`` fills it at every step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from rltrade.envs.config import EnvConfig
from rltrade.envs.core import EnvCore
from rltrade.envs.spaces import action_space, observation_space, observations
from rltrade.features.dataset import Dataset
from rltrade.features.normalize import Normalizer


class VecTradingEnv(VecEnv):
    """``n_envs`` trading environments on one Dataset, stepped together (see module doc).

    :param dataset: the Dataset to trade.
    :param n_envs: number of environments.
    :param config: the env config (as for :class:`~rltrade.envs.TradingEnv`).
    :param normalizer: a fitted normalizer (required for z-score specs).
    :param seed: base seed; env ``i`` uses ``seed + i``.
    :param full_info: fill every info dict at every step (slower).
    :param threads: numba threads a step may split the envs over (default 1, measured fastest
        on the project's machine; see :func:`rltrade.envs.core.step_threads` for the caps).
    :param overrides: keyword overrides of ``config``.
    """

    def __init__(self, dataset: Dataset, n_envs: int = 8,
                 config: EnvConfig | Mapping[str, Any] | None = None,
                 normalizer: Normalizer | None = None, seed: int | None = None,
                 full_info: bool = False, threads: int | None = None,
                 **overrides: Any) -> None:
        self.config = EnvConfig.build(config, **overrides)
        self.core = EnvCore(dataset, self.config, n_envs, normalizer, threads=threads)
        self.render_mode = None
        super().__init__(n_envs, observation_space(self.config, self.core.n_market),
                         action_space(self.config))
        self.full_info = full_info
        self._seeds: list[int | None] = [None if seed is None else seed + i for i in range(n_envs)]
        self._rngs: list[np.random.Generator] = []
        self._actions: np.ndarray | None = None
        self._episode_returns = np.zeros(n_envs)
        self._episode_lengths = np.zeros(n_envs, dtype=np.int64)

    # -- VecEnv API -------------------------------------------------------------------------
    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        self._seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        return self._seeds

    def reset(self) -> Any:
        self._rngs = [seeding.np_random(s)[0] for s in self._seeds]
        self._seeds = [None] * self.num_envs  # like SB3: seeds apply to the next reset only
        for i in range(self.num_envs):
            self._reset_one(i)
        self.reset_infos = [self.core.info(i) for i in range(self.num_envs)]
        return observations(self.config, self.core.obs_market, self.core.obs_account)

    def _reset_one(self, i: int) -> None:
        rng = self._rngs[i]
        start, end = self.core.episode_bounds(rng)
        self.core.reset_env(i, start, end, int(rng.integers(0, 2**31 - 1)))
        self._episode_returns[i] = 0.0
        self._episode_lengths[i] = 0

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if not self._rngs:
            raise RuntimeError("VecTradingEnv.step() called before reset()")
        core = self.core
        core.step(core.accept_actions(self._actions))
        rewards = core.rewards.astype(np.float32)
        self._episode_returns += core.rewards
        self._episode_lengths += 1
        dones = core.terminated | core.truncated
        infos: list[dict[str, Any]] = (
            [core.info(i) for i in range(self.num_envs)] if self.full_info
            else [{} for _ in range(self.num_envs)]
        )
        if dones.any():
            final = observations(self.config, core.obs_market, core.obs_account)
            for i in np.flatnonzero(dones):
                info = infos[i] if self.full_info else core.info(i)
                if self.config.layout == "window":
                    info["terminal_observation"] = {k: v[i] for k, v in final.items()}
                else:
                    info["terminal_observation"] = final[i]
                info["TimeLimit.truncated"] = bool(core.truncated[i] and not core.terminated[i])
                info["episode"] = {"r": float(self._episode_returns[i]),
                                   "l": int(self._episode_lengths[i])}
                infos[i] = info
                self._reset_one(i)
        obs = observations(self.config, core.obs_market, core.obs_account)
        return obs, rewards, dones.copy(), infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None,
                   **method_kwargs: Any) -> list[Any]:
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def _indices(self, indices: Any) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices

    # -- extras -----------------------------------------------------------------------------
    def set_cost_scale(self, scale: float) -> None:
        """The engine's costs × ``scale`` in every env from the next step on
        (:meth:`EnvCore.set_cost_scale`; training's ``cost_scale`` / ``cost_curriculum``)."""
        self.core.set_cost_scale(scale)

    def infos(self) -> list[dict[str, Any]]:
        """The account summary of every env now."""
        return [self.core.info(i) for i in range(self.num_envs)]
