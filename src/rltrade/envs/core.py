"""``EnvCore``: N trading environments on one Dataset, stepped by one numba call.

Both :class:`~rltrade.envs.TradingEnv` (N = 1) and :class:`~rltrade.envs.VecTradingEnv` wrap
this class, so a single env and a vectorized one follow exactly the same rules.

Timing: after ``reset`` an env's account is as of the close of its start bar and its observation
holds the ``window`` rows of features ending at that bar. ``step(action)`` decides at that close;
the engine fills at the next bar's open (or as configured), the reward is the equity change over
that bar, and the new observation ends at the new bar. Nothing at or after bar ``t + 1`` is ever
read before the step that processes bar ``t + 1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rltrade.envs import kernels as EK
from rltrade.envs.config import EnvConfig
from rltrade.envs.schemes import ACTION_SCHEMES
from rltrade.errors import ConfigError, DataError
from rltrade.features.dataset import Dataset
from rltrade.features.normalize import Normalizer
from rltrade.sim import kernels as K
from rltrade.sim.engine import BatchEngine
from rltrade.sim.risk import RiskManager, RiskState


def market_matrix(dataset: Dataset, normalizer: Normalizer, clip: float) -> np.ndarray:
    """Normalised features and strategy signals side by side, float32 ``[T, F + 4S]``."""
    feats = normalizer.transform(dataset)
    out = np.empty((len(dataset), feats.shape[1] + dataset.signals.shape[1]), dtype=np.float32)
    out[:, : feats.shape[1]] = feats
    out[:, feats.shape[1] :] = dataset.signals
    np.clip(out, -clip, clip, out=out)
    return out


def resolve_normalizer(dataset: Dataset, normalizer: Normalizer | None,
                       owner: str) -> Normalizer:
    """``normalizer``, or the dataset's default scheme when it needs no fitting. A z-score spec
    without a fitted normalizer is refused: fitting it here, on data the agent is judged on,
    would leak."""
    if normalizer is not None:
        return normalizer
    normalizer = Normalizer.for_dataset(dataset)
    if not normalizer.fitted:
        raise ConfigError(
            f"{owner}: the dataset's normalisation is fitted (a z-score spec, or an external "
            "series or bars column); fit a Normalizer on the training slice and pass it as "
            "normalizer="
        )
    return normalizer


class EnvCore:
    """The state and the stepping of ``n_envs`` environments (see the module docstring).

    :param dataset: the bars, features and signals to trade on.
    :param config: the :class:`EnvConfig`.
    :param n_envs: how many environments.
    :param normalizer: a fitted :class:`Normalizer`; by default the dataset's scheme, which must
        then be ``default`` (a z-score normalizer has to be fitted on the training slice and
        passed in, never fitted here on data the agent will be evaluated on).
    """

    def __init__(
        self,
        dataset: Dataset,
        config: EnvConfig,
        n_envs: int = 1,
        normalizer: Normalizer | None = None,
    ) -> None:
        normalizer = resolve_normalizer(dataset, normalizer, "env")
        self.dataset = dataset
        self.config = config
        self.normalizer = normalizer
        self.n_envs = int(n_envs)
        self.window = config.window
        t_len = len(dataset)
        if t_len < self.window + 1:
            raise DataError(
                f"env: {t_len} rows are not enough for a window of {self.window} plus one step"
            )
        self.market = market_matrix(dataset, normalizer, config.obs_clip)
        self.n_market = self.market.shape[1]
        self.engine = BatchEngine.from_dataset(dataset, config.engine, self.n_envs)
        (self._st, self._lots, self._orders, self._trades, self._mkt, self._cfg) = (
            self.engine.kernel_arrays()
        )
        # the ATR sizes discrete6's stops and feeds the risk manager; nothing else reads it,
        # so otherwise the kernels get an empty array (`kernel_atr`; `atr` still computes it)
        self._atr: np.ndarray | None = None
        needs_atr = config.action_scheme == "discrete6" or config.risk is not None  # sizes stops
        self.kernel_atr = self.atr if needs_atr else np.zeros(0)
        self.env = np.zeros((self.n_envs, EK.N_ENV))
        self.rets = np.zeros((self.n_envs, config.sharpe_window))
        self.obs_market = np.zeros((self.n_envs, self.window, self.n_market), dtype=np.float32)
        self.obs_account = np.zeros((self.n_envs, EK.N_ACCOUNT), dtype=np.float32)
        self.rewards = np.zeros(self.n_envs)
        self.terminated = np.zeros(self.n_envs, dtype=np.bool_)
        self.truncated = np.zeros(self.n_envs, dtype=np.bool_)
        self.report = np.zeros((self.n_envs, EK.N_REPORT))
        self._targets = np.zeros(self.n_envs)
        self._sl = np.zeros(self.n_envs)
        self._tp = np.zeros(self.n_envs)
        self.action_scheme = ACTION_SCHEMES[config.action_scheme]
        self.scheme = self.action_scheme.kernel_id
        self.reward_id = EK.REWARD_IDS[config.reward]
        weights = config.weights
        self.weights = np.array([weights[k] for k in EK.REWARD_WEIGHT_ORDER[config.reward]])
        p = np.zeros(EK.N_PARAMS)
        p[EK.P_MAX_EXPOSURE] = config.max_exposure
        p[EK.P_RISK_PER_TRADE] = config.risk_per_trade
        p[EK.P_STOP_ATR] = config.stop_atr
        p[EK.P_MAX_CAPITAL] = config.max_capital_share
        p[EK.P_MIN_STOP] = config.min_stop_pct
        p[EK.P_MAX_STOP] = config.max_stop_pct
        p[EK.P_LEVERAGE] = config.engine.leverage
        p[EK.P_EQUITY_FLOOR] = config.equity_floor
        p[EK.P_OBS_CLIP] = config.obs_clip
        p[EK.P_REWARD_SCALE] = config.reward_scale
        p[EK.P_MMR] = config.engine.maintenance_margin
        self.params = p
        self.risk: list[RiskManager] | None = (
            [RiskManager(config.risk) for _ in range(self.n_envs)] if config.risk else None
        )
        self.risk_counts: list[dict[str, int]] = [{} for _ in range(self.n_envs)]
        #: the risk manager's reasons for changing env ``i``'s last target (empty: unchanged)
        self.last_reasons: list[tuple[str, ...]] = [() for _ in range(self.n_envs)]
        #: the kernel's action buffer (float64 ``[N, 2]``): ``step(core.actions)`` after writing
        #: the actions into it saves a copy
        self.actions = np.zeros((self.n_envs, 2))
        # the kernel's arguments, bound once (the step is the hot path)
        self._head = (self._st, self._lots, self._orders, self._trades, self._mkt, self._cfg,
                      self.kernel_atr, self.env, self.rets)
        self._middle = (self._targets, self._sl, self._tp)
        self._tail = (self.scheme, self.reward_id, self.weights, self.params, self.market,
                      self.window, self.obs_market, self.obs_account, self.rewards,
                      self.terminated, self.truncated, self.report)
        self._bind_kernels()
        self.first_bar = self.window - 1
        self.last_bar = t_len - 1

    # the compiled kernels bound to this core's arrays: rebuilt, never copied, by copy and pickle
    # (a copied table of addresses would point into the original's memory)
    _BOUND = ("_args", "_step_kernel", "_packed", "_step_one")

    def _bind_kernels(self) -> None:
        # without a risk manager every argument is one of these arrays: the kernel compiled for
        # their types is called directly, without numba's per-call typing of 26 arguments
        self._args = (*self._head, self.actions, False, *self._middle, *self._tail)
        self._step_kernel = EK.entry_point(EK.step_envs, self._args)
        # a single env without a risk manager: the arguments packed into one table (see
        # EK.step_one; self._args keeps the arrays it points to alive)
        self._packed = EK.pack_step_args(self._args) if self.n_envs == 1 else None
        self._step_one = (EK.step_one if self._packed is None
                          else EK.entry_point(EK.step_one, self._packed))

    @property
    def atr(self) -> np.ndarray:
        """The ATR of every bar (``config.atr_period``, warm-up filled), computed once."""
        if self._atr is None:
            ohlcv = self.dataset.ohlcv
            self._atr = K.atr_filled(
                np.ascontiguousarray(ohlcv[:, 1]),
                np.ascontiguousarray(ohlcv[:, 2]),
                np.ascontiguousarray(ohlcv[:, 3]),
                self.config.atr_period,
            )
        return self._atr

    @property
    def trades(self) -> np.ndarray:
        """The closed-trade record buffer the kernel writes into (``[rows, K.N_TRADE]``; no rows
        by default: the batch engine under the envs keeps counts and sums only)."""
        return self._trades

    def attach_trades(self, buffer: np.ndarray) -> None:
        """Record closed trades into ``buffer`` (float64, C order, ``[rows, K.N_TRADE]``), from
        the next step on. The engine writes ``st[K.N_RECORDS]`` rows and counts what did not fit
        in ``st[K.DROPPED_RECORDS]``; a caller that wants every record keeps room for one more
        bar's worth (``lot_capacity + 2 * order_capacity`` rows) and attaches a larger copy when
        it runs short. Used by the backtest runner."""
        if (not isinstance(buffer, np.ndarray) or buffer.dtype != np.float64 or buffer.ndim != 2
                or buffer.shape[1] != K.N_TRADE or not buffer.flags.c_contiguous
                or not buffer.flags.writeable):
            raise ValueError(f"attach_trades: expected a writable C-order float64 array "
                             f"[rows, {K.N_TRADE}]")
        self._trades = buffer
        self._head = (*self._head[:3], buffer, *self._head[4:])
        self._bind_kernels()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._BOUND}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind_kernels()

    # -- episodes ---------------------------------------------------------------------------
    def episode_bounds(self, rng: np.random.Generator | None) -> tuple[int, int]:
        """(start, end) bars of a new episode: random start and fixed length in ``train``
        mode, the whole range in ``eval`` mode."""
        lo, last = self.first_bar, self.last_bar
        if self.config.mode == "eval" or rng is None:
            return lo, last
        length = self.config.episode_length
        if length is None:
            start = int(rng.integers(lo, last))  # at least one step
            return start, last
        length = min(length, last - lo)
        start = int(rng.integers(lo, last - length + 1))
        return start, start + length

    def reset_env(self, i: int, start: int, end: int, seed: int) -> None:
        """Reset env ``i`` to the close of ``start`` with an episode ending at ``end``."""
        K.batch_reset(
            self._st,
            self._lots,
            self._orders,
            self._mkt,
            self._cfg,
            np.array([i], dtype=np.int64),
            np.array([start], dtype=np.int64),
            np.array([float(seed)]),
        )
        EK.reset_env_state(self._st, self.env, self.rets, i, start, end)
        if self.risk is not None:
            self.risk[i].reset()
            self.risk_counts[i] = {}
        EK.observe(
            self._st,
            self._mkt,
            self.env,
            self.rets,
            self.market,
            self.window,
            self.params,
            self.obs_market,
            self.obs_account,
            i,
        )

    # -- stepping ---------------------------------------------------------------------------
    def step(self, actions: np.ndarray) -> None:
        """Advance every env that is not done by one bar with ``actions`` (float64 ``[N, 2]``:
        the discrete index or the Box values)."""
        if self.risk is None:
            if actions is not self.actions:
                self.actions[...] = actions  # the compiled kernel takes exactly this array
            self._step_kernel(*self._args)
            return
        EK.compute_targets(self._st, self._mkt, self.kernel_atr, self.env, actions, self.scheme,
                           self.params, self._targets, self._sl, self._tp)
        for i in range(self.n_envs):
            if self.env[i, EK.E_DONE]:
                continue
            self._targets[i] = self._risk_adjust(i, self._targets[i])
        EK.step_envs(*self._head, actions, True, *self._middle, *self._tail)

    def step_single(self) -> tuple[float, bool, bool, dict[str, Any]]:
        """Step the env of a single-env core on the actions written into :attr:`actions`:
        ``(reward, terminated, truncated, info)``, the same as :meth:`step` followed by
        :meth:`step_info` of its report row, in one kernel call (the single env's hot path)."""
        packed = self._packed
        if packed is None or self.risk is not None:
            self.step(self.actions)
            row = self.report[0].tolist()
            return (row[EK.Q_REWARD], row[EK.Q_TERMINATED] != 0.0, row[EK.Q_TRUNCATED] != 0.0,
                    self.step_info(row))
        (reward, terminated, truncated, bar, equity, position, pnl, trades, win_rate, max_dd,
         costs, bankrupt, invalid) = self._step_one(*packed)  # already typed
        # the dict of step_info, built here without its call and conversions (~0.2 µs, a tenth
        # of the step): keep the two in step
        return reward, terminated, truncated, {
            "bar": bar,
            "equity": equity,
            "position": position,
            "total_pnl": pnl,
            "trade_count": trades,
            "win_rate": win_rate,
            "max_drawdown": max_dd,
            "costs": costs,
            "bankrupt": bankrupt,
            "risk_interventions": {},  # no risk manager on this path
            "invalid_actions": invalid,
        }

    def preview_targets(self, i: int, actions: np.ndarray) -> np.ndarray:
        """What env ``i`` would ask the engine for now, for each of ``actions``, without stepping.

        :param actions: float64 ``[n, 2]`` in the kernel's layout (discrete: the index in column
            0; ``exposure_sl``: exposure and stop tightness).
        :return: float64 ``[n, 3]``: target units, stop-loss level, take-profit level per action
            (NaN level = keep the current one, 0 = clear it; NaN target: the env is done).

        Computed by the env's own kernel on copies of its state: nothing in the env changes
        (not even the count of actions that do not apply). A3C's risk gating and the
        backtesting.py bridge read targets through this.
        """
        actions = np.ascontiguousarray(actions, dtype=np.float64).reshape(-1, 2)
        n = actions.shape[0]
        st = np.repeat(self._st[i : i + 1], n, axis=0)
        env = np.repeat(self.env[i : i + 1], n, axis=0)
        out = np.empty((n, 3))
        targets, sl, tp = np.empty(n), np.empty(n), np.empty(n)
        EK.compute_targets(st, self._mkt, self.atr, env, actions, self.scheme, self.params,
                           targets, sl, tp)
        out[:, 0], out[:, 1], out[:, 2] = targets, sl, tp
        return out

    def risk_state(self, i: int = 0) -> RiskState:
        """What the risk manager sees of env ``i`` at its current bar (price = the close, the
        spread in bps)."""
        s = self._st[i]
        bar = int(s[K.BAR])
        return RiskState(
            timestamp=int(self.dataset.timestamps[bar]),
            price=float(self._mkt[bar, K.M_CLOSE]),
            position=float(s[K.POS]),
            equity=float(s[K.EQUITY]),
            atr=float(self.atr[bar]),
            spread_bps=float(self._mkt[bar, K.M_HALF_SPREAD] * 2e4),  # fraction -> bps
        )

    def _risk_adjust(self, i: int, target: float) -> float:
        assert self.risk is not None
        state = self.risk_state(i)
        decision = self.risk[i].check_target(state, float(target))
        self.last_reasons[i] = decision.reasons
        for reason in decision.reasons:
            self.risk_counts[i][reason] = self.risk_counts[i].get(reason, 0) + 1
        return decision.target

    # -- views ------------------------------------------------------------------------------
    def step_info(self, row: list[float], i: int = 0) -> dict[str, Any]:
        """The info dict of env ``i`` from its step report row (``report[i].tolist()``)."""
        return {
            "bar": int(row[EK.Q_BAR]),
            "equity": row[EK.Q_EQUITY],
            "position": row[EK.Q_POSITION],
            "total_pnl": row[EK.Q_PNL],
            "trade_count": int(row[EK.Q_TRADES]),
            "win_rate": row[EK.Q_WIN_RATE],
            "max_drawdown": row[EK.Q_MAX_DRAWDOWN],
            "costs": row[EK.Q_COSTS],
            "bankrupt": row[EK.Q_BANKRUPT] != 0.0,
            "risk_interventions": dict(self.risk_counts[i]) if self.risk is not None else {},
            "invalid_actions": int(row[EK.Q_INVALID]),
        }

    def info(self, i: int) -> dict[str, Any]:
        """The info dict of env ``i``: equity, position, PnL, trades, win rate, drawdown,
        risk-manager interventions and actions that did not apply."""
        bar, equity, position, pnl, n_trades, win_rate, max_dd, costs, bankrupt, invalid = (
            EK.info_values(self._st, self.env, i))
        return {
            "bar": bar,
            "equity": equity,
            "position": position,
            "total_pnl": pnl,
            "trade_count": n_trades,
            "win_rate": win_rate,
            "max_drawdown": max_dd,
            "costs": costs,
            "bankrupt": bankrupt,
            "risk_interventions": dict(self.risk_counts[i]) if self.risk is not None else {},
            "invalid_actions": invalid,
        }
