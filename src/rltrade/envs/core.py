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

import functools
import math
import os
import sys
from typing import Any

import numba
import numpy as np

from rltrade.data.timeframes import parse_timeframe
from rltrade.envs import kernels as EK
from rltrade.envs.config import EnvConfig
from rltrade.envs.schemes import ACTION_SCHEMES
from rltrade.envs.spaces import check_actions
from rltrade.errors import ConfigError, DataError
from rltrade.features.dataset import Dataset
from rltrade.features.normalize import Normalizer
from rltrade.sim import kernels as K
from rltrade.sim.engine import BatchEngine
from rltrade.sim.risk import RiskConfig, RiskManager, RiskState, SessionFlags, session_flags

#: fewest envs per thread when a step is split over threads (each thread's share must outweigh
#: waking and joining it: a step is ~0.5 µs of work per env)
MIN_ENVS_PER_THREAD = 256


def step_threads(n_envs: int, threads: int | None = None) -> int:
    """Numba threads for a step of ``n_envs`` envs.

    ``None`` (the default): 1. Measured on the project's 2-core machine (``docs/benchmarks.md``,
    ``bench_envs.py --threads 2``): below a few hundred envs a split step is slower (64 envs:
    0.1-0.7x; a step of 64 envs is ~30 µs of work, less than waking and joining a second
    thread); with 1,024 envs two threads were 1.06-1.58x faster when the machine was quiet
    and 0.3-0.6x as fast when it was busy, its usual state. The serial kernel never starts
    numba's thread pool at all.

    An explicit ``threads`` (a machine with idle cores; measure it with ``bench_envs.py
    --threads``) is capped by numba's thread count, by the cores torch's threads leave free
    (when torch is loaded: its pool runs on the same cores right before and after each env
    step, the policy's forward pass) and by the batch (at least :data:`MIN_ENVS_PER_THREAD`
    envs a thread). The envs are independent: the results do not depend on the threads.

    :param n_envs: envs stepped together.
    :param threads: threads asked for (``None``: the measured default).
    """
    if threads is None or threads <= 1 or n_envs < 2 * MIN_ENVS_PER_THREAD:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    torch = sys.modules.get("torch")
    torch_threads = int(torch.get_num_threads()) if torch is not None else 1
    available = numba.get_num_threads()  # starts numba's thread pool, whose OpenMP start
    if torch is not None and torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)  # resets the process's thread count: keep torch's
    free = cores - torch_threads + 1  # the calling thread runs both
    return max(1, min(int(threads), available, free, n_envs // MIN_ENVS_PER_THREAD))


def _call_parallel(kernel: Any, threads: int, table: np.ndarray,
                   use_targets: bool) -> tuple[Any, ...]:
    return kernel(table, use_targets, threads)


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


@functools.lru_cache(maxsize=64)
def vol_bars_per_year(calendar: str | None, timeframe: str) -> float:
    """Bars a year for ``env.vol_target``'s annualisation when ``env.vol_bars_per_year`` is not
    set: the market calendar's (``XNYS-RTH`` 5m: 19,506; the mean of 2022-2024, from the
    schedule alone), else the timeframe's around-the-clock value (``1h``: 8,766)."""
    tf = parse_timeframe(timeframe)
    if calendar and calendar not in ("none", "24/7"):
        from rltrade.data.calendars import MarketCalendar

        try:
            return MarketCalendar(calendar).bars_per_year(tf)
        except DataError:  # weekly / monthly bars have no session grid
            pass
    return float(tf.bars_per_year)


class EnvCore:
    """The state and the stepping of ``n_envs`` environments (see the module docstring).

    :param dataset: the bars, features and signals to trade on.
    :param config: the :class:`EnvConfig`.
    :param n_envs: how many environments.
    :param normalizer: a fitted :class:`Normalizer`; by default the dataset's scheme, which must
        then be ``default`` (a z-score normalizer has to be fitted on the training slice and
        passed in, never fitted here on data the agent will be evaluated on).
    :param threads: numba threads a step may use (:func:`step_threads`; default 1).
    """

    def __init__(
        self,
        dataset: Dataset,
        config: EnvConfig,
        n_envs: int = 1,
        normalizer: Normalizer | None = None,
        threads: int | None = None,
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
        self.action_scheme = ACTION_SCHEMES[config.action_scheme]
        self.scheme = self.action_scheme.kernel_id
        # the ATR sizes the stops of a scheme that reads it and feeds the risk manager; nothing
        # else does, so otherwise the kernels get an empty array (`atr` still computes it)
        self._atr: np.ndarray | None = None
        needs_atr = self.action_scheme.sizes_from_atr or config.risk is not None
        self.kernel_atr = self.atr if needs_atr else np.zeros(0)
        self.reward_id, self.weights = EK.reward_weights(config.reward, config.weights)
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
        p[EK.P_DECISION_INTERVAL] = config.decision_interval
        p[EK.P_MIN_HOLD] = config.min_hold
        p[EK.P_HYSTERESIS] = config.hysteresis
        p[EK.P_VOL_TARGET] = config.vol_target or 0.0
        p[EK.P_COST_PENALTY] = config.cost_penalty
        self.params = p
        #: annualised realised volatility per bar (``vol_target`` only; else empty)
        self.vol = self._realised_vol() if config.vol_target else np.zeros(0)
        self._vol_state: tuple[int, float, float] | None = None  # refresh_vol's EWMA, carried
        #: the multiplier of the engine's costs (:meth:`set_cost_scale`); 1: the real costs
        self.cost_scale = 1.0
        self._cost_base: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        n = self.n_envs
        #: the step's arguments, one bundle (:class:`rltrade.envs.kernels.StepArgs`): every
        #: buffer below is one of its fields
        self.args = EK.StepArgs(
            st=self._st, lots=self._lots, orders=self._orders, trades=self._trades,
            mkt=self._mkt, cfg=self._cfg, atr=self.kernel_atr,
            env=np.zeros((n, EK.N_ENV)), rets=np.zeros((n, config.sharpe_window)),
            actions=np.zeros((n, 2)), targets=np.zeros(n), sl=np.zeros(n), tp=np.zeros(n),
            w=self.weights, p=self.params, vol=self.vol, market=self.market,
            obs_market=np.zeros((n, self.window, self.n_market), dtype=np.float32),
            obs_account=np.zeros((n, EK.N_ACCOUNT), dtype=np.float32),
            rewards=np.zeros(n), terminated=np.zeros(n, dtype=np.bool_),
            truncated=np.zeros(n, dtype=np.bool_), report=np.zeros((n, EK.N_REPORT)),
            scheme=int(self.scheme), reward_id=int(self.reward_id), window=int(self.window),
        )
        a = self.args
        self.env, self.rets, self.report = a.env, a.rets, a.report
        self.obs_market, self.obs_account = a.obs_market, a.obs_account
        self.rewards, self.terminated, self.truncated = a.rewards, a.terminated, a.truncated
        #: the kernel's action buffer (float64 ``[N, 2]``): ``step(core.actions)`` after writing
        #: the actions into it saves a copy
        self.actions = a.actions
        #: the targets, stop-loss and take-profit levels :meth:`decide` wrote (``[N]`` each)
        self.targets, self.sl, self.tp = a.targets, a.sl, a.tp
        self.risk: list[RiskManager] | None = (
            [RiskManager(config.risk) for _ in range(self.n_envs)] if config.risk else None
        )
        if config.risk is not None and config.risk.needs_calendar:
            flags = self.session_flags(config.risk)
            for manager in self.risk or ():
                manager.set_session_flags(flags)
        self.risk_counts: list[dict[str, int]] = [{} for _ in range(self.n_envs)]
        #: the risk manager's reasons for changing env ``i``'s last target (empty: unchanged)
        self.last_reasons: list[tuple[str, ...]] = [() for _ in range(self.n_envs)]
        #: numba threads of a step (1: the serial kernel; see :func:`step_threads`)
        self.threads = step_threads(self.n_envs, threads)
        self._bind_kernels()
        self.first_bar = self.window - 1
        self.last_bar = t_len - 1
        #: (first, last) bars a training episode may span, one pair per usable segment of
        #: ``config.segments`` (``None``: the whole dataset; ``eval`` mode ignores segments)
        self.train_spans = (self._train_spans(config.segments, t_len)
                            if config.mode == "train" else None)

    def session_flags(self, risk: RiskConfig) -> SessionFlags:
        """The risk manager's session rules for this core's bars (:func:`session_flags`), from
        the dataset's market calendar (inferred from its bars when it has none), with this
        engine's fill and decision lag.

        :raises ConfigError: when no calendar is known or fits the bars.
        """
        ds = self.dataset
        calendar = ds.calendar
        if calendar is None:
            from rltrade.data.calendars import infer_calendar

            found = infer_calendar(ds.timestamps, ds.timeframe).calendar
            calendar = found.name if found is not None else None
        if calendar is None:
            raise ConfigError(
                "risk: session rules (flat_at_session_close, no_entry_last_minutes, no_trade "
                "timezone 'exchange') need the bars' market calendar and none fits them: set "
                "data.calendar (24/7, 24/5, XNYS-RTH, XNYS-EXT or CMES)"
            )
        engine = self.config.engine
        return session_flags(risk, ds.timestamps, ds.timeframe, calendar, fill=engine.fill,
                             lag=engine.effective_lag)

    # the compiled kernels bound to this core's arrays: rebuilt, never copied, by copy and pickle
    # (a copied table of addresses would point into the original's memory)
    _BOUND = ("_table", "_step", "_reset", "_info", "_compute_targets")

    def _bind_kernels(self) -> None:
        # every argument is one of this core's arrays: each kernel compiled for their types is
        # called directly, without numba's per-call typing of the bundle; the step gets the
        # bundle as one table of addresses (self.args keeps the arrays it points to alive)
        a = self.args
        self._table = EK.pack_args(a)
        if self.threads > 1:
            parallel = EK.entry_point(EK.step_packed_parallel, (self._table, False, self.threads))
            self._step = functools.partial(_call_parallel, parallel, self.threads)
        else:
            self._step = EK.entry_point(EK.step_packed, (self._table, False))
        self._reset = EK.entry_point(EK.reset_env, (a, 0, 0, 0, 0.0))
        self._info = EK.entry_point(EK.info_values, (a, 0))
        self._compute_targets = EK.entry_point(EK.compute_targets, (a,))

    def _realised_vol(self) -> np.ndarray:
        cfg = self.config
        per_year = cfg.vol_bars_per_year
        if per_year is None:
            # the market calendar's bars a year (its schedule, known before any bar; counting
            # the dataset's own bars would read the timestamps of bars after t), else the
            # timeframe's 24/7 value
            per_year = vol_bars_per_year(self.dataset.calendar, self.dataset.timeframe)
        self.vol_per_year = float(per_year)
        close = np.ascontiguousarray(self.dataset.ohlcv[:, 3], dtype=np.float64)
        return EK.realised_vol(close, float(cfg.vol_span), self.vol_per_year)

    def refresh_vol(self, row: int) -> None:
        """Recompute the realised volatility of ``row`` after its bar was written into the
        dataset's arrays (a live feed appends bars to a core built before them). The EWMA
        state is carried from the previous row (one step a bar; computed once over the rows
        before on the first call), with the kernel's arithmetic, so the same bits as a core
        built with the bar."""
        if not self.config.vol_target or row < 1:
            return
        close = self.dataset.ohlcv[:, 3]
        span = float(self.config.vol_span)
        state = self._vol_state
        if state is None or state[0] != row - 1:  # once: the state of the rows before
            num, den = EK.vol_ewm_state(np.ascontiguousarray(close[:row], np.float64), span)
        else:  # then one step a bar
            num, den = state[1], state[2]
        num, den = EK.vol_ewm_step(num, den, close[row] / close[row - 1] - 1.0,
                                   1.0 - 2.0 / (span + 1.0))
        self._vol_state = (row, num, den)
        self.vol[row] = math.sqrt(num / den * self.vol_per_year)

    def set_cost_scale(self, scale: float) -> None:
        """Multiply the engine's costs (maker and taker fees, half-spread, slippage) by
        ``scale`` from the next step on, relative to the costs the core was built with (1: the
        real costs again, exactly). Training's ``cost_scale`` / ``cost_curriculum`` call it on
        the training envs only."""
        scale = float(scale)
        if not (np.isfinite(scale) and scale >= 0.0):
            raise ConfigError(f"cost scale must be finite and >= 0, got {scale}")
        if self._cost_base is None:
            self._cost_base = (
                self._cfg[[K.C_MAKER, K.C_TAKER, K.C_SLIP_FRAC]].copy(),
                self._mkt[:, K.M_HALF_SPREAD].copy(), self._mkt[:, K.M_ATR_SLIP].copy())
        fees, spread, slip = self._cost_base
        self._cfg[K.C_MAKER] = fees[0] * scale
        self._cfg[K.C_TAKER] = fees[1] * scale
        self._cfg[K.C_SLIP_FRAC] = fees[2] * scale
        np.multiply(spread, scale, out=self._mkt[:, K.M_HALF_SPREAD])
        np.multiply(slip, scale, out=self._mkt[:, K.M_ATR_SLIP])
        self.cost_scale = scale

    def set_bar_step(self, per_bar: bool) -> None:
        """``True``: a step covers one bar even between two decisions of ``decision_interval``
        (no order is sent on those bars); the backtest's loop records every bar this way.
        ``False`` (the envs): a step goes on to the bar of the next decision."""
        self.params[EK.P_BAR_STEP] = 1.0 if per_bar else 0.0

    def decision_due(self, i: int = 0) -> bool:
        """Whether env ``i`` decides at its current bar (always, unless ``decision_interval``
        is above 1)."""
        return bool(self.env[i, EK.E_SINCE_DECISION] == 0.0)

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
        self.args = self.args.replace(trades=buffer)
        self._bind_kernels()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._BOUND}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind_kernels()

    # -- episodes ---------------------------------------------------------------------------
    def _train_spans(self, segments: tuple[tuple[int, int], ...] | None,
                     t_len: int) -> list[tuple[int, int]] | None:
        """(first, last) bars of each segment an episode can use: the start bar's observation
        window lies inside the segment and at least one step fits."""
        if segments is None:
            return None
        spans = []
        for lo, hi in segments:
            if hi > t_len:
                raise DataError(f"env: segment [{lo}, {hi}) ends after the dataset's {t_len} rows")
            first, last = lo + self.window - 1, hi - 1
            if last > first:
                spans.append((first, last))
        if not spans:
            raise DataError(
                f"env: no training segment holds a window of {self.window} rows plus one step"
            )
        return spans

    def episode_bounds(self, rng: np.random.Generator | None) -> tuple[int, int]:
        """(start, end) bars of a new episode: random start and fixed length in ``train``
        mode, the whole range in ``eval`` mode. With ``config.segments`` a training episode
        lies inside one segment, drawn with weight its number of possible start bars."""
        lo, last = self.first_bar, self.last_bar
        if self.config.mode == "eval" or rng is None:
            return lo, last
        if self.train_spans is not None:
            spans = self.train_spans
            if len(spans) > 1:
                weights = np.array([b - a for a, b in spans], dtype=np.float64)
                lo, last = spans[int(rng.choice(len(spans), p=weights / weights.sum()))]
            else:
                lo, last = spans[0]
        length = self.config.episode_length
        if length is None:
            start = int(rng.integers(lo, last))  # at least one step
            return start, last
        length = min(length, last - lo)
        start = int(rng.integers(lo, last - length + 1))
        return start, start + length

    def reset_env(self, i: int, start: int, end: int, seed: int) -> None:
        """Reset env ``i`` to the close of ``start`` with an episode ending at ``end``."""
        self._reset(self.args, int(i), int(start), int(end), float(seed))
        if self.risk is not None:
            self.risk[i].reset()
            self.risk_counts[i] = {}

    # -- stepping ---------------------------------------------------------------------------
    def accept_actions(self, actions: Any) -> np.ndarray:
        """Check ``actions`` (one per env, in the action space's form) into :attr:`actions`,
        the kernel's float64 ``[N, 2]`` buffer; actions that had to be clipped are counted as
        invalid in their env. Raises ``ValueError`` as :func:`~rltrade.envs.spaces.check_actions`
        does (nothing is written then)."""
        _, bad = check_actions(self.config, actions, self.n_envs, out=self.actions)
        if bad is not None:
            self.env[bad, EK.E_INVALID] += 1.0
        return self.actions

    def decide(self) -> None:
        """Turn the actions in :attr:`actions` into the orders of the next step: the action
        scheme's targets, stop-loss and take-profit levels into :attr:`targets`, :attr:`sl`,
        :attr:`tp` (NaN target: the env is done, or no order this bar), then the risk
        manager's gates on the targets, its interventions recorded (:attr:`risk_counts`,
        :attr:`last_reasons`) as in :meth:`step`. :meth:`step_decided` sends exactly these
        orders; the backtesting.py bridge reads them in between to size its own orders."""
        self._compute_targets(self.args)
        if self.risk is None:
            return
        targets = self.targets
        done = self.env[:, EK.E_DONE]
        for i in range(self.n_envs):
            if done[i]:
                continue
            if np.isnan(targets[i]):
                # no order this bar (a switch against costs): the risk manager still sees the
                # position it keeps, and its exit (a changed target) becomes an order
                pos = float(self._st[i, K.POS])
                adjusted = self._risk_adjust(i, pos)
                if adjusted != pos:
                    targets[i], self.sl[i], self.tp[i] = adjusted, np.nan, np.nan
                continue
            targets[i] = self._risk_adjust(i, targets[i])

    def step_decided(self) -> tuple[float, bool, bool, dict[str, Any]]:
        """Advance every env that is not done by one bar with the orders :meth:`decide` wrote;
        returns env 0's ``(reward, terminated, truncated, info)`` (as :meth:`step_single`)."""
        row = self._step(self._table, True)
        return row[0], row[1], row[2], self._info_dict(0, row)

    def step(self, actions: np.ndarray) -> None:
        """Advance every env that is not done by one bar with ``actions`` (float64 ``[N, 2]``:
        the discrete index or the Box values); with a risk manager, through :meth:`decide`."""
        if actions is not self.actions:
            self.actions[...] = actions  # the compiled kernel reads exactly this array
        if self.risk is None:
            self._step(self._table, False)
            return
        self.decide()
        self._step(self._table, True)

    def step_single(self) -> tuple[float, bool, bool, dict[str, Any]]:
        """Step a single-env core on the actions written into :attr:`actions`:
        ``(reward, terminated, truncated, info)``, the same as :meth:`step` followed by
        :meth:`info` of env 0, in one kernel call (the single env's hot path: the kernel returns
        the values already typed, no array is read back)."""
        if self.risk is None:
            row = self._step(self._table, False)
        else:
            self.decide()
            row = self._step(self._table, True)
        return row[0], row[1], row[2], self._info_dict(0, row)

    def preview_targets(self, i: int, actions: np.ndarray) -> np.ndarray:
        """What env ``i`` would ask the engine for now, for each of ``actions``, without stepping.

        :param actions: float64 ``[n, 2]`` in the kernel's layout (discrete: the index in column
            0; ``exposure_sl``: exposure and stop tightness).
        :return: float64 ``[n, 3]``: target units, stop-loss level, take-profit level per action
            (NaN level = keep the current one, 0 = clear it; NaN target: the env is done).

        Computed by the env's own kernel on copies of its state: nothing in the env changes
        (not even the count of actions that do not apply). A3C's risk gating reads targets
        through this (the backtesting.py bridge sizes its orders from :meth:`decide`).
        """
        actions = np.array(actions, dtype=np.float64, order="C").reshape(-1, 2)
        n = actions.shape[0]
        out = np.empty((n, 3))
        preview = self.args.replace(
            st=np.repeat(self._st[i : i + 1], n, axis=0),
            env=np.repeat(self.env[i : i + 1], n, axis=0), actions=actions,
            targets=np.empty(n), sl=np.empty(n), tp=np.empty(n))
        self._compute_targets(preview)  # the same types as the core's own bundle
        out[:, 0], out[:, 1], out[:, 2] = preview.targets, preview.sl, preview.tp
        if self.env[i, EK.E_DONE] == 0.0:  # a refused change (no order): the position kept
            out[np.isnan(out[:, 0]), 0] = self._st[i, K.POS]
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
    def info(self, i: int) -> dict[str, Any]:
        """The info dict of env ``i``: equity, position, PnL, trades, win rate, drawdown,
        risk-manager interventions and actions that did not apply."""
        return self._info_dict(i, (0.0, False, False, *self._info(self.args, int(i))))

    def _info_dict(self, i: int, row: tuple[Any, ...]) -> dict[str, Any]:
        # row: EK.step_packed's layout (reward, terminated, truncated, then EK.info_values's
        # values), indexed rather than unpacked: this is most of the Python side of a step
        return {
            "bar": row[3],
            "equity": row[4],
            "position": row[5],
            "total_pnl": row[6],
            "trade_count": row[7],
            "win_rate": row[8],
            "max_drawdown": row[9],
            "costs": row[10],
            "bankrupt": row[11],
            "risk_interventions": {} if self.risk is None else dict(self.risk_counts[i]),
            "invalid_actions": row[12],
        }
