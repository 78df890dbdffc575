"""``TradingEnv``: a Gymnasium environment trading one Dataset through the execution engine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from rltrade.envs.config import EnvConfig
from rltrade.envs.core import EnvCore
from rltrade.envs.spaces import action_space, observation, observation_space
from rltrade.features.dataset import Dataset
from rltrade.features.normalize import Normalizer

_INTEGERS = (int, np.integer)
_VIEWS = ("_action_cell", "_obs_market", "_obs_account")  # views of the core's buffers


class TradingEnv(gym.Env):
    """Trade one :class:`~rltrade.features.Dataset` bar by bar, with realistic fills and costs.

    >>> env = TradingEnv(ds, action_scheme="exposure_sl", reward="log_return", window=32)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    :param dataset: the Dataset (bars, features, strategy signals) to trade.
    :param config: the env part of a run config (:class:`EnvConfig` or a mapping).
    :param normalizer: a fitted :class:`~rltrade.features.Normalizer` (required for z-score
        specs; the dataset's default scheme otherwise).
    :param overrides: keyword overrides of ``config`` (``window=64``, ``reward="..."``...).

    Observation (``layout="window"``): ``{"market": float32 [window, features + 4 * strategies],
    "account": float32 [9]}``; ``layout="flat"`` concatenates both into one vector. The account
    block is: position exposure (fraction of the leverage limit, signed), unrealized PnL / equity,
    time in position (tanh(bars / 100)), equity / initial - 1, drawdown, cash / equity, recent
    Sharpe (last ``sharpe_window`` bars), distance to liquidation, win rate.

    Episodes: ``mode="train"`` starts at a random bar (drawn from the generator seeded by
    ``reset(seed=)``) and lasts ``episode_length`` bars; ``mode="eval"`` makes one pass from the
    first full window to the last bar. Terminated on bankruptcy or when equity falls to
    ``equity_floor`` × initial; truncated at the end of the episode or of the data.
    """

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self, dataset: Dataset, config: EnvConfig | Mapping[str, Any] | None = None,
                 normalizer: Normalizer | None = None, **overrides: Any) -> None:
        super().__init__()
        self.config = EnvConfig.build(config, **overrides)
        self.core = EnvCore(dataset, self.config, 1, normalizer)
        self.action_space = action_space(self.config)
        self.observation_space = observation_space(self.config, self.core.n_market)
        self._needs_reset = True
        self._n_discrete = int(getattr(self.action_space, "n", 0))
        self._window_layout = self.config.layout == "window"
        self._bind_views()

    def _bind_views(self) -> None:
        # bound once (the step is the hot path): the kernel's action cell of env 0 and its
        # observation buffers (returned as copies: they are reused)
        core = self.core
        self._action_cell = core.actions.reshape(-1)
        self._obs_market = core.obs_market[0]
        self._obs_account = core.obs_account[0]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _VIEWS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # copy and pickle would turn the views into arrays of their own: bind them again
        self.__dict__.update(state)
        self._bind_views()

    @property
    def dataset(self) -> Dataset:
        return self.core.dataset

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode; ``options={"start": bar}`` forces the start bar."""
        super().reset(seed=seed)
        if options and "start" in options:
            start = int(options["start"])
            if not self.core.first_bar <= start < self.core.last_bar:
                raise ValueError(
                    f"start must be in {self.core.first_bar}..{self.core.last_bar - 1}"
                )
            end = self.core.last_bar if self.config.mode == "eval" or (
                self.config.episode_length is None
            ) else min(self.core.last_bar, start + self.config.episode_length)
        else:
            start, end = self.core.episode_bounds(self.np_random)
        engine_seed = int(self.np_random.integers(0, 2**31 - 1))
        self.core.reset_env(0, start, end, engine_seed)
        self._needs_reset = False
        return self._obs(), self.core.info(0)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("TradingEnv.step() called before reset() or after the episode "
                               "ended: call reset()")
        core = self.core
        n = self._n_discrete
        if n and isinstance(action, _INTEGERS) and 0 <= action < n:
            self._action_cell[0] = action  # fast path: a valid discrete action
        else:
            core.accept_actions(action)
        reward, terminated, truncated, info = core.step_single()
        if terminated or truncated:
            self._needs_reset = True
        if self._window_layout:
            obs = {"market": self._obs_market.copy(), "account": self._obs_account.copy()}
        else:
            obs = self._obs()
        return obs, reward, terminated, truncated, info

    def _obs(self) -> Any:
        return observation(self.config, self._obs_market, self._obs_account)

    # -- convenience ------------------------------------------------------------------------
    def set_cost_scale(self, scale: float) -> None:
        """The engine's costs × ``scale`` from the next step on (:meth:`EnvCore.set_cost_scale`;
        training's ``cost_scale`` / ``cost_curriculum``)."""
        self.core.set_cost_scale(scale)

    @property
    def account(self) -> Any:
        """The engine's account snapshot (cash, position, equity, costs...)."""
        return self.core.engine.account(0)
