"""The backtest runner: one pass of a policy through the trading environment, logged.

::

    from rltrade.evaluation import run_backtest

    result = run_backtest(model, test_ds, env_config, normalizer=norm,
                          out_dir="runs/ppo1/backtests")
    result.steps          # one row per bar (DataFrame indexed by UTC timestamp)
    result.trades         # the engine's closed-trade records
    result.summary        # initial / final equity, returns, bankrupt, force-close flag...
    result.metrics        # compute_metrics(...), buy-and-hold as the benchmark
    result.path           # runs/ppo1/backtests/bt_YYYYMMDD_HHMMSS/

The pass goes through :class:`rltrade.envs.EnvCore` in ``eval`` mode: the same numba kernel as
training (action -> target -> the execution engine's fill -> reward), from the close of bar
``window - 1`` to the last bar (or until the episode terminates: bankruptcy, ``equity_floor``).
Every fill, cost and PnL figure is the engine's; the runner records, it does not recompute.

Three paths, same numbers (the tests compare them):

* a planned policy (``plan(dataset, config)``, every baseline, a rule strategy): the actions
  of all bars are known, and one numba loop runs the environment's own step functions on them
  (``decide_target``: action -> target; ``transition``: the engine's fill and mark, the reward, the
  termination flags); no observation is built, since nothing reads it;
* :class:`rltrade.agents.NumpyMlpPolicy`: the market window's share of the first layer is one
  matrix product per window row over all bars, the rest of the network runs inside the same
  numba loop, on the account block the environment's ``observe`` writes;
* anything else with SB3's ``predict`` (an SB3 model, a recurrent policy, a callable wrapper):
  a Python loop, one ``predict`` per bar on the environment's observation.

A risk manager in the config (``risk=``) is Python code, so with one the first two paths use the
Python loop too (still without building observations for planned policies).

Files (``out_dir`` given): ``out_dir/bt_YYYYMMDD_HHMMSS/`` (UTC; ``_2``, ``_3``... when taken)
with ``steps.csv`` (and ``steps.parquet`` beyond 100,000 rows), ``trades.csv``,
``summary.json``, ``metrics.json`` and, with ``state_debug=True``, ``state_debug.csv``. Each file
is written atomically (temporary file + rename). Columns are documented in ``docs/evaluation.md``.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger
from numba import njit

from rltrade.agents.baselines import BuyAndHold
from rltrade.agents.policy import MarginPolicy, NumpyMlpPolicy, is_planned, mlp_action
from rltrade.data.store import atomic_write_bytes
from rltrade.envs import kernels as EK
from rltrade.envs.config import EnvConfig
from rltrade.envs.core import EnvCore, market_matrix, resolve_normalizer
from rltrade.envs.schemes import ACTION_SCHEMES
from rltrade.envs.spaces import check_actions, observation
from rltrade.errors import ConfigError, RLTradeError
from rltrade.evaluation.metrics import compute_metrics, json_ready
from rltrade.features.dataset import Dataset
from rltrade.features.normalize import Normalizer
from rltrade.sim import kernels as K
from rltrade.sim.engine import (
    ADJUSTMENTS,
    EXIT_REASONS,
    REJECTION_REASONS,
    reason_counts,
    trade_table,
)

__all__ = ["BENCHMARK_COLUMN", "BacktestResult", "run_backtest", "stop_text"]

log = logger.bind(component="backtest")

#: steps beyond this many rows are also written as steps.parquet
PARQUET_ROWS = 100_000
#: the steps column of the benchmark's equity (buy-and-hold through the engine, same bars)
BENCHMARK_COLUMN = "benchmark_equity"

# What is recorded after every step: one row per value, one column per bar (each column of the
# steps table is then a contiguous row; 9 values, 72 bytes a bar). The bar of column k is the
# start bar + k (a pass steps one bar at a time).
(_R_CASH, _R_POS, _R_EQUITY, _R_REALIZED, _R_UNREALIZED, _R_COSTS, _R_DRAWDOWN, _R_REWARD,
 _R_FLAGS) = range(9)
_N_REC = 9
# _R_FLAGS: bits of what happened in the step (the engine's counters moved) and its end flags
(_F_FILL, _F_STOP, _F_TP, _F_LIQ, _F_INVALID, _F_TERMINATED, _F_TRUNCATED) = (
    1, 2, 4, 8, 16, 32, 64)
# the counters behind the first five bits, in bit order (the invalid count lives in the env)
_COUNTERS = np.array([K.N_FILLS, K.N_STOP_EXITS, K.N_TP_EXITS, K.N_LIQUIDATIONS],
                     dtype=np.int64)
_CHUNK = 65_536  # bars per first-layer block of the MLP path (bounds its memory)
_TRADE_ROWS = 4096  # trade records before the buffer first grows


@dataclass
class BacktestResult:
    """What :func:`run_backtest` returns (columns in ``docs/evaluation.md``).

    :param steps: one row per bar from the start bar to the last one processed, indexed by the
        bar's UTC timestamp.
    :param trades: the engine's closed-trade records.
    :param summary: initial and final equity, returns, bankruptcy, force close, counts.
    :param metrics: :func:`~rltrade.evaluation.compute_metrics` of the run (``None`` when not
        asked for).
    :param path: the folder the files were written to (``None`` without ``out_dir``).
    :param state_debug: the observation per bar (``state_debug=True``), else ``None``.
    :param timings: seconds spent per phase (``setup``, ``loop``, ``frames``, ``benchmark``,
        ``metrics``, ``write``); not written to the files, which stay reproducible.
    :param comparison: the baselines' comparison table when the backtest was judged against
        them (:func:`rltrade.evaluation.judge.backtest_run` with ``baselines=True``), else
        ``None``.
    """

    steps: pd.DataFrame
    trades: pd.DataFrame
    summary: dict[str, Any]
    metrics: dict[str, Any] | None
    path: Path | None = None
    state_debug: pd.DataFrame | None = field(default=None, repr=False)
    timings: dict[str, float] = field(default_factory=dict, repr=False)
    comparison: pd.DataFrame | None = field(default=None, repr=False)


# ------------------------------------------------------------------------------- kernels
_jit = njit(cache=False, error_model="numpy", **K.NO_NRT)


@_jit
def _record(s: np.ndarray, counters: np.ndarray, prev: np.ndarray, rec: np.ndarray, k: int,
            reward: float, terminated: bool, truncated: bool, invalid: float) -> None:
    """Column ``k`` of the records: the account after the step and the step's values; the
    event bits compare the engine's counters (and the env's invalid count) with ``prev``, the
    values at the previous record, which they then replace."""
    rec[_R_CASH, k] = s[K.CASH]
    rec[_R_POS, k] = s[K.POS]
    rec[_R_EQUITY, k] = s[K.EQUITY]
    rec[_R_REALIZED, k] = s[K.REALIZED]
    rec[_R_UNREALIZED, k] = s[K.UNREALIZED]
    rec[_R_COSTS, k] = s[K.FEES] + s[K.SPREAD_COST] + s[K.SLIPPAGE_COST]
    rec[_R_DRAWDOWN, k] = s[K.DRAWDOWN]
    rec[_R_REWARD, k] = reward
    flags = 0
    bit = 1
    for j in range(counters.shape[0]):
        v = s[counters[j]]
        if v > prev[j]:
            flags |= bit
        prev[j] = v
        bit *= 2
    n = counters.shape[0]
    if invalid > prev[n]:
        flags |= _F_INVALID
    prev[n] = invalid
    if terminated:
        flags |= _F_TERMINATED
    if truncated:
        flags |= _F_TRUNCATED
    rec[_R_FLAGS, k] = flags


@_jit
def _fused(a: EK.StepArgs, account: bool, margin: float, mode: int, plan: np.ndarray,
           pre: np.ndarray, pre_lo: int, mlp: tuple[Any, ...], action: np.ndarray, k: int,
           k_end: int, counters: np.ndarray, prev: np.ndarray, rec: np.ndarray,
           rec_actions: np.ndarray, rec_account: np.ndarray) -> int:
    """Step env 0 of a core's step arguments ``a`` from column ``k`` up to ``k_end`` with the
    environment's own step functions (``decide_target``, ``transition``; ``observe`` only when
    something reads the account block: the MLP, ``state_debug``); stops early when the episode
    is done or the trades buffer needs to grow. ``mode`` 0: actions from ``plan[bar]``; 1: from
    the MLP (``mlp``: the arguments of :func:`mlp_action` between the account block and the
    output; first-layer market part ``pre[bar - pre_lo]``)."""
    s = a.st[0]
    e = a.env[0]
    trades = a.trades
    while k < k_end:
        bar = int(s[K.BAR])
        if e[EK.E_SINCE_DECISION] != 0.0:  # between two decisions (decision_interval)
            a0 = np.nan
            a1 = np.nan
        elif mode == 0:
            a0 = plan[bar, 0]
            a1 = plan[bar, 1]
        else:
            mlp_action(pre[bar - pre_lo], a.obs_account[0], *mlp, action)
            a0 = action[0]
            a1 = action[1]
        rec_actions[0, k] = a0
        if rec_actions.shape[0] > 1:
            rec_actions[1, k] = a1
        target, stop, take = EK.decide_target(a, 0, a0, a1)
        r, term, trunc = EK.transition(a, 0, target, stop, take)
        if account:
            EK.observe(a, 0)
        k += 1
        _record(s, counters, prev, rec, k, r, term, trunc, e[EK.E_INVALID])
        if rec_account.shape[1] > 0:
            for j in range(a.obs_account.shape[1]):
                rec_account[j, k] = a.obs_account[0, j]
        if term or trunc:
            return k
        if trades.shape[0] > 0 and trades.shape[0] - s[K.N_RECORDS] < margin:
            return k
    return k


# ------------------------------------------------------------------------------- the core
class _Run:
    """One env of an :class:`EnvCore` and its trade-record buffer. The fused loop is handed the
    buffer; with ``bound`` (the Python loop, which calls :meth:`EnvCore.step`) it is also
    attached to the core."""

    def __init__(self, dataset: Dataset, config: EnvConfig, normalizer: Normalizer | None,
                 light: bool, start: int, seed: int, records: bool = True,
                 bound: bool = False) -> None:
        if light:
            # nothing reads the observation's market window: run the same kernel on the bars
            # only (no feature columns, window 1) and start at the agent's first bar
            t_len = len(dataset)
            dataset = replace(
                dataset, features=np.zeros((t_len, 0), np.float32), feature_names=[],
                feature_norms=[], signals=np.zeros((t_len, 0), np.float32), signal_names=[])
            config = EnvConfig.build(config, window=1)
            normalizer = Normalizer([], [], "default")
        self.core = core = EnvCore(dataset, config, 1, normalizer)
        core.set_bar_step(True)  # one record a bar, also between decisions
        self.st, self.lots, self.orders, _, self.mkt, self.cfg = core.engine.kernel_arrays()
        eng = config.engine
        self.margin = float(eng.lot_capacity + 2 * eng.order_capacity + 8)
        self.records = records
        self.bound = bound
        self.prev = np.zeros(len(_COUNTERS) + 1)  # the counters at the last record
        self.trades = core.trades  # no rows: the engine counts, records nothing
        if records:
            self._use(np.zeros((_TRADE_ROWS + int(self.margin), K.N_TRADE)))
        core.reset_env(0, start, core.last_bar, seed)

    def _use(self, buffer: np.ndarray) -> None:
        self.trades = buffer
        if self.bound:
            self.core.attach_trades(buffer)

    def ensure_room(self) -> None:
        """Grow the trade buffer when one more bar's records might not fit."""
        n = int(self.st[0, K.N_RECORDS])
        if self.records and self.trades.shape[0] - n < self.margin:
            grown = np.zeros((2 * self.trades.shape[0], K.N_TRADE))
            grown[:n] = self.trades[:n]
            self._use(grown)

    def record(self, rec: np.ndarray, rec_account: np.ndarray, k: int, reward: float,
               terminated: bool, truncated: bool) -> None:
        """Column ``k`` of the records from the core's current state (column 0: the start,
        no events)."""
        core = self.core
        if k == 0:
            self.prev[:-1] = self.st[0, _COUNTERS]
            self.prev[-1] = core.env[0, EK.E_INVALID]
        _record(self.st[0], _COUNTERS, self.prev, rec, k, reward, terminated, truncated,
                core.env[0, EK.E_INVALID])
        if rec_account.shape[1] > 0:
            rec_account[:, k] = core.obs_account[0]


# ------------------------------------------------------------------------------- helpers
def _validated_plan(policy: Any, dataset: Dataset, config: EnvConfig) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    """The plan as float64 ``[T, 2]`` kernel actions, and the rows that had to be clipped."""
    raw = np.asarray(policy.plan(dataset, config))
    t_len = len(dataset)
    sch = ACTION_SCHEMES[config.action_scheme]
    if sch.discrete and raw.shape in ((t_len,), (t_len, 1)):
        flat = raw.reshape(t_len)
    elif sch.continuous and raw.shape == (t_len, sch.width):
        flat = raw
    else:
        want = f"({t_len},)" if sch.discrete else f"({t_len}, {sch.width})"
        raise ValueError(f"plan of {getattr(policy, 'name', type(policy).__name__)}: expected "
                         f"shape {want} for {config.action_scheme!r}, got {raw.shape}")
    actions, bad = check_actions(config, flat, t_len)
    return np.ascontiguousarray(actions), (np.zeros(t_len, bool) if bad is None else bad)


def _json_safe(obj: Any) -> Any:
    """Plain JSON types; non-finite floats become ``None``, anything else its ``str``."""
    return json_ready(obj, "", [], fallback=str)


def _write_frame_csv(path: Path, frame: pd.DataFrame, index: bool = True) -> None:
    atomic_write_bytes(path, frame.to_csv(index=index).encode())


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, compression="zstd")
    atomic_write_bytes(path, buffer.getvalue())


def _new_folder(out_dir: str | Path) -> Path:
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("bt_%Y%m%d_%H%M%S")
    for i in range(1, 10_000):
        folder = root / (stamp if i == 1 else f"{stamp}_{i}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise RLTradeError(f"{root}: no free backtest folder name for {stamp}")  # pragma: no cover


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._t
        self._t = now


def _policy_name(policy: Any) -> str:
    name = getattr(policy, "name", None)
    return name if isinstance(name, str) and name else type(policy).__name__


# ------------------------------------------------------------------------------- the runner
def run_backtest(
    policy: Any,
    dataset: Dataset,
    config: EnvConfig | Mapping[str, Any] | None = None,
    *,
    normalizer: Normalizer | None = None,
    out_dir: str | Path | None = None,
    force_close: bool = False,
    state_debug: bool = False,
    name: str | None = None,
    benchmark: bool | np.ndarray | pd.Series = True,
    metrics: bool = True,
    seed: int | None = None,
    deterministic: bool = True,
    equity_floor: bool = False,
    bars_per_year: float | None = None,
) -> BacktestResult:
    """Backtest ``policy`` on ``dataset``: one pass through the environment, logged.

    This is the one way rltrade runs a policy over a slice: ``rltrade backtest``, ``compare``,
    the baselines and training's evaluation all call it.

    :param policy: an object with SB3's ``predict`` (an SB3 model, recurrent ones included,
        :class:`NumpyMlpPolicy`) or a planned policy with ``plan(dataset, config)`` (every
        baseline); see :mod:`rltrade.agents.policy`.
    :param dataset: the bars, features and signals to trade (the held-out slice).
    :param config: the agent's env config (:class:`EnvConfig` or a mapping); ``mode`` is set to
        ``eval``. A planned policy with an ``env_config(config)`` method (the baselines) runs
        under the config it returns, one with an ``action_scheme`` attribute under this config
        with that scheme.
    :param normalizer: the normalizer fitted at training (required for z-score specs).
    :param out_dir: write the files into ``out_dir/bt_YYYYMMDD_HHMMSS/``; ``None`` writes
        nothing (training's periodic evaluations).
    :param force_close: close the position still open at the last bar at its close, through the
        engine (a taker fill; its trades are flagged ``forced_close``).
    :param state_debug: also return (and write) the observation per bar: raw and normalised
        features of the bar and the account block.
    :param name: the run's name (summary, ``metrics.run.id``, report title); default the
        policy's name.
    :param benchmark: ``True``: buy-and-hold (the ``buy_and_hold`` baseline: 1x equity, the same
        costs, from the same bar) as the ``benchmark_equity`` column and ``metrics.benchmark``;
        ``False``: none; or an equity curve aligned with the steps.
    :param metrics: compute :func:`~rltrade.evaluation.compute_metrics` (``False`` skips it).
    :param seed: seed of the engine's random draws (default ``config.engine.seed``).
    :param deterministic: passed to ``predict``.
    :param equity_floor: stop when equity falls to ``config.equity_floor`` × the initial
        equity, as training episodes do. Off by default: a backtest covers the range it was
        given (bankruptcy still ends it); the summary says when a run stopped early.
    :param bars_per_year: annualisation override passed to ``compute_metrics`` (``None``: its
        own choice, recorded in ``metrics.run.bars_per_year_source``).
    :returns: a :class:`BacktestResult`.
    """
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"run_backtest needs a Dataset, got {type(dataset).__name__}")
    clock = _Clock()
    cfg = _policy_config(policy, config, equity_floor)
    if cfg.min_margin > 0 and not is_planned(policy):
        policy = MarginPolicy(policy, cfg.min_margin, cfg.action_scheme)  # abstention
    seed = cfg.engine.seed if seed is None else int(seed)
    done = _run_pass(policy, dataset, cfg, normalizer, seed, state_debug, deterministic, clock)
    forced = force_close and _force_close(done)
    clock.lap("loop")
    st = done.run.st[0]
    initial = float(st[K.INITIAL_EQUITY])
    steps = _steps_frame(dataset, cfg, done, forced, initial)
    trades = _trades_frame(_trade_records(done.run), dataset.timestamps)
    clock.lap("frames")
    bench = _benchmark(benchmark, dataset, cfg, done.start, len(steps), seed)
    if bench is not None and len(bench) == len(steps):
        steps[BENCHMARK_COLUMN] = bench
    clock.lap("benchmark")
    summary = _summary(policy, name, dataset, cfg, steps, trades, done, initial, forced,
                       force_close, bench)
    result_metrics = None
    if metrics:
        result_metrics = compute_metrics(
            steps, trades, timeframe=dataset.timeframe, initial_capital=initial,
            benchmark_equity=bench, costs=_costs(st),
            interventions=_risk_counts(done.run.core) if cfg.risk is not None else None,
            run_id=summary["name"], bars_per_year=bars_per_year)
    clock.lap("metrics")
    debug = None
    if state_debug:
        assert done.market is not None
        debug = _state_debug(dataset, done.market, steps["bar"].to_numpy(),
                             done.rec_account[:, :len(steps)])
    path = None
    if out_dir is not None:
        path = _new_folder(out_dir)
        summary["backtest_id"] = path.name
        _write(path, steps, trades, summary, result_metrics, debug)
    clock.lap("write")
    log.info("backtest {}: {} bars, {} closed trades, {} fills{}, equity {:.2f} -> {:.2f}{}{}",
             summary["name"], len(steps), len(trades), summary["n_fills"],
             f", open position {summary['open_position']:g} at the end"
             if summary["open_position"] else "", initial, summary["final_equity"],
             f" ({path})" if path else "", f"; {stop_text(summary)}" if
             summary["stopped_early"] else "")
    return BacktestResult(steps, trades, summary, result_metrics, path, debug, clock.laps)


def stop_text(summary: Mapping[str, Any]) -> str:
    """A backtest's early stop in words (empty when it covered its range)::

        stopped early at 2021-03-04T05:00:00+00:00 (bar 1,139 of 2,188): equity fell to
        the equity floor; the rest of the range was not traded
    """
    if not summary.get("stopped_early"):
        return ""
    why = _STOP_WORDS.get(str(summary.get("stop_reason")), str(summary.get("stop_reason")))
    return (f"stopped early at {summary.get('end_time')} (bar {int(summary['bars_run']):,} of "
            f"{int(summary['bars_requested']):,}): {why}; the rest of the range was not "
            "traded")


_STOP_WORDS = {
    "bankrupt": "the account went bankrupt (equity at or below zero)",
    "equity_floor": "equity fell to the equity floor (env.equity_floor × initial equity)",
}


@dataclass
class _Pass:
    """One pass of a policy: the env, what was recorded, and where it started and ended."""

    run: _Run
    start: int  # the first bar (the first decision at its close)
    requested: int  # bars from the start bar to the last bar of the dataset
    k: int  # the column of the last record (bars run = k + 1)
    rec: np.ndarray
    rec_actions: np.ndarray
    rec_account: np.ndarray
    reasons: list[str] | None
    plan_bad: np.ndarray | None
    market: np.ndarray | None


def _policy_config(policy: Any, config: EnvConfig | Mapping[str, Any] | None,
                   equity_floor: bool) -> EnvConfig:
    """The config the pass runs under: ``eval`` mode, the planned policy's own config or
    scheme, the equity floor only when asked for."""
    cfg = EnvConfig.build(config, mode="eval")
    if is_planned(policy):
        own = getattr(policy, "env_config", None)
        scheme_name = getattr(policy, "action_scheme", None)
        if callable(own):
            cfg = EnvConfig.build(own(cfg), mode="eval")
        elif scheme_name and scheme_name != cfg.action_scheme:
            cfg = EnvConfig.build(cfg, action_scheme=scheme_name)
    elif not callable(getattr(policy, "predict", None)):
        raise ConfigError(
            f"run_backtest: {type(policy).__name__} is not a policy: it needs SB3's "
            "predict(obs, state=None, episode_start=None, deterministic=True) or "
            "plan(dataset, config)"
        )
    if not equity_floor and cfg.equity_floor != 0.0:
        cfg = EnvConfig.build(cfg, equity_floor=0.0)
    return cfg


def _run_pass(policy: Any, dataset: Dataset, cfg: EnvConfig, normalizer: Normalizer | None,
              seed: int, state_debug: bool, deterministic: bool, clock: _Clock) -> _Pass:
    """Step the env from the close of bar ``window - 1`` to the last bar (or the end of the
    episode) on the fastest path that fits the policy (module docstring)."""
    start = cfg.window - 1
    last = len(dataset) - 1
    if last <= start:
        raise ConfigError(f"run_backtest: {len(dataset)} rows leave no step after the first "
                          f"window of {cfg.window} bars")
    planned = is_planned(policy)
    mlp = isinstance(policy, NumpyMlpPolicy) and not planned
    fused = cfg.risk is None and (planned or mlp)
    market: np.ndarray | None = None
    if (mlp and fused) or state_debug:
        normalizer = resolve_normalizer(dataset, normalizer, "run_backtest")
        market = market_matrix(dataset, normalizer, cfg.obs_clip)
    run = _Run(dataset, cfg, normalizer, planned or (mlp and fused), start, seed,
               bound=not fused)
    n_max = last - start + 1
    rec = np.zeros((_N_REC, n_max))
    rec_actions = np.full((ACTION_SCHEMES[cfg.action_scheme].width, n_max), np.nan)
    rec_account = np.zeros((EK.N_ACCOUNT, n_max if state_debug else 0))
    reasons: list[str] | None = [""] * n_max if cfg.risk is not None else None
    plan: np.ndarray | None = None
    plan_bad: np.ndarray | None = None
    run.record(rec, rec_account, 0, 0.0, False, False)
    if planned:
        plan, plan_bad = _validated_plan(policy, dataset, cfg)
    clock.lap("setup")
    if fused:
        k = _run_fused(run, None if planned else policy, plan, market, cfg, rec,
                       rec_actions, rec_account)
    else:
        k = _run_python(run, policy, plan, cfg, rec, rec_actions, rec_account, reasons,
                        deterministic)
    return _Pass(run, start, n_max, k, rec, rec_actions, rec_account, reasons, plan_bad, market)


def _force_close(done: _Pass) -> bool:
    """Close the open position at the last bar's close through the engine; ``True`` when a
    position was closed. The last record keeps the step's own events and gets the close's."""
    run, rec, k = done.run, done.rec, done.k
    if run.st[0, K.POS] == 0.0 or run.st[0, K.BANKRUPT] != 0.0:
        return False
    run.ensure_room()
    K.close_all(run.st[0], run.lots[0], run.orders[0], run.trades, run.mkt, run.cfg, True)
    flags = int(rec[_R_FLAGS, k])
    run.record(rec, done.rec_account, k, rec[_R_REWARD, k], bool(flags & _F_TERMINATED),
               bool(flags & _F_TRUNCATED))
    rec[_R_FLAGS, k] = flags | int(rec[_R_FLAGS, k])
    return True


def _trade_records(run: _Run) -> np.ndarray:
    """The engine's closed-trade records of the pass (all of them: a dropped record or a count
    that disagrees is an internal error, never a silently short table)."""
    st = run.st[0]
    n_records = int(st[K.N_RECORDS])
    if st[K.DROPPED_RECORDS] or n_records != int(st[K.N_TRADES]):
        raise RLTradeError("internal error: the engine's trade records are incomplete")
    return run.trades[:n_records]


def _costs(st: np.ndarray) -> dict[str, float]:
    return {"fees": float(st[K.FEES]), "spread_cost": float(st[K.SPREAD_COST]),
            "slippage_cost": float(st[K.SLIPPAGE_COST])}


def _run_fused(run: _Run, mlp: NumpyMlpPolicy | None, plan: np.ndarray | None,
               market: np.ndarray | None, cfg: EnvConfig, rec: np.ndarray,
               rec_actions: np.ndarray, rec_account: np.ndarray) -> int:
    """``cfg``: the policy's config (its layout and window shape the MLP's input; the core
    itself may be the light one, window 1)."""
    core = run.core
    n_max = rec.shape[1]
    k = 0
    if mlp is None:
        assert plan is not None
        mode = 0
        wm = np.zeros((1, 1, 1), np.float32)
        kernel: tuple[Any, ...] = (np.zeros((1, 1)), np.zeros(1), np.zeros(2),
                                   np.zeros((0, 1, 1)), np.zeros((0, 1)),
                                   np.zeros((0, 2), dtype=np.int64), np.zeros((0, 2)), 0,
                                   np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1))
    else:
        assert market is not None
        mode = 1
        plan = np.zeros((1, 2))
        wm, kernel = mlp.fast_parts(cfg.layout, cfg.window, market.shape[1], EK.N_ACCOUNT)
    # the account block is needed by the MLP and by state_debug; a plan reads nothing
    account = mode == 1 or rec_account.shape[1] > 0
    action = np.zeros(2)
    pre = np.zeros((1, 1))
    pre_lo = 0
    while True:
        k_end = n_max - 1
        if mode == 1:
            bar = int(run.st[0, K.BAR])
            hi = min(bar + _CHUNK, core.last_bar)
            pre = mlp.market_preactivation(market, wm, bar, hi, mlp.backend)  # type: ignore
            pre_lo = bar
            k_end = min(k_end, k + (hi - bar))
        k = _fused(core.args.replace(trades=run.trades), account, run.margin, mode, plan, pre,
                   pre_lo, kernel, action, k, k_end, _COUNTERS, run.prev, rec, rec_actions,
                   rec_account)
        if core.env[0, EK.E_DONE] != 0.0 or k >= n_max - 1:
            return k
        run.ensure_room()


def _run_python(run: _Run, policy: Any, plan: np.ndarray | None, cfg: EnvConfig,
                rec: np.ndarray, rec_actions: np.ndarray, rec_account: np.ndarray,
                reasons: list[str] | None, deterministic: bool) -> int:
    core = run.core
    st = run.st
    k = 0
    state = None
    episode_start = np.ones(1, dtype=bool)
    no_decision = np.full((1, 2), np.nan)
    while True:
        if not core.decision_due(0):  # decision_interval: no decision at this bar
            actions = no_decision
        elif plan is not None:
            actions = plan[int(st[0, K.BAR])][None, :]
        else:
            obs = observation(cfg, core.obs_market[0], core.obs_account[0])
            action, state = policy.predict(obs, state=state, episode_start=episode_start,
                                           deterministic=deterministic)
            episode_start = np.zeros(1, dtype=bool)
            actions, bad = check_actions(cfg, action, 1)
            if bad is not None:
                core.env[bad, EK.E_INVALID] += 1.0
        rec_actions[:, k] = actions[0, :rec_actions.shape[0]]
        core.step(actions)
        if reasons is not None:
            reasons[k] = ";".join(core.last_reasons[0])
        k += 1
        report = core.report[0]
        run.record(rec, rec_account, k, report[EK.Q_REWARD], bool(report[EK.Q_TERMINATED]),
                   bool(report[EK.Q_TRUNCATED]))
        if core.env[0, EK.E_DONE] != 0.0 or k >= rec.shape[1] - 1:
            return k
        run.ensure_room()


def _steps_frame(dataset: Dataset, cfg: EnvConfig, done: _Pass, forced: bool,
                 initial: float) -> pd.DataFrame:
    n = done.k + 1
    start = done.start
    rec = done.rec[:, :n]
    rec_actions = done.rec_actions[:, :n]
    reasons = done.reasons
    plan_bad = done.plan_bad
    take = slice(start, start + n)  # a pass steps one bar at a time
    index = pd.DatetimeIndex(dataset.timestamps[take].astype("datetime64[ns]"), tz="UTC",
                             name="timestamp")
    flags = rec[_R_FLAGS].astype(np.uint8)

    def delta(values: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        out[0] = 0.0
        np.subtract(values[1:], values[:-1], out=out[1:])
        return out

    def event(bit: int) -> np.ndarray:
        return (flags & bit) != 0

    data: dict[str, Any] = {"bar": np.arange(start, start + n)}
    if ACTION_SCHEMES[cfg.action_scheme].discrete:
        none = np.isnan(rec_actions[0])  # the last bar: no decision
        data["action"] = pd.arrays.IntegerArray(
            np.nan_to_num(rec_actions[0]).astype(np.int64), none)
    else:
        for j in range(rec_actions.shape[0]):
            data[f"action_{j}"] = rec_actions[j]
    pos = rec[_R_POS]
    invalid = event(_F_INVALID)
    if plan_bad is not None:
        invalid |= plan_bad[take] & ~np.isnan(rec_actions[0])
    done = np.zeros(n, dtype=bool)
    done[-1] = True
    data |= {
        "trade_executed": event(_F_FILL),
        "position_change": delta(pos),
        "cash": rec[_R_CASH],
        "position": pos,
        "equity": rec[_R_EQUITY],
        "realized_equity": initial + rec[_R_REALIZED],
        "unrealized_pnl": rec[_R_UNREALIZED],
        "close": dataset.ohlcv[take, 3],
        "costs": delta(rec[_R_COSTS]),
        "reward": rec[_R_REWARD],
        "stop_triggered": event(_F_STOP),
        "take_profit": event(_F_TP),
        "liquidated": event(_F_LIQ),
        "drawdown": rec[_R_DRAWDOWN],
        "risk_reason": (pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[""])
                        if reasons is None else pd.Categorical(reasons[:n])),
        "invalid_action": invalid,
        "forced_close": np.zeros(n, dtype=bool),
        "done": done,
    }
    if forced:
        data["forced_close"][-1] = True
    return pd.DataFrame(data, index=index, copy=False)


def _trades_frame(buf: np.ndarray, timestamps: np.ndarray) -> pd.DataFrame:
    table = trade_table(buf, timestamps)
    frame = pd.DataFrame({
        "entry_time": pd.DatetimeIndex(table["entry_time"], tz="UTC"),
        "exit_time": pd.DatetimeIndex(table["exit_time"], tz="UTC"),
        "entry_bar": table["entry_bar"],
        "exit_bar": table["exit_bar"],
        "side": pd.Categorical.from_codes((table["side"] > 0).astype(np.int8),
                                          categories=["short", "long"]),
        "qty": table["qty"],
        "entry_price": table["entry_price"],
        "exit_price": table["exit_price"],
        "gross_pnl": table["gross_pnl"],
        "fees": table["fees"],
        "spread_cost": table["spread_cost"],
        "slippage_cost": table["slippage_cost"],
        "net_pnl": table["net_pnl"],
        "duration_bars": table["duration_bars"],
        # from the engine's codes (EXIT_REASONS is indexed by them): no string round trip
        "exit_reason": pd.Categorical.from_codes(buf[:, K.T_REASON].astype(np.int8),
                                                 categories=list(EXIT_REASONS)),
        "stop_triggered": table["stop_loss"],
        "take_profit": table["take_profit"],
        "liquidation": table["liquidation"],
        "forced_close": table["forced_close"],
    })
    frame.index.name = "trade"
    return frame


def _benchmark(benchmark: bool | np.ndarray | pd.Series | None, dataset: Dataset,
               cfg: EnvConfig, start: int, n: int, seed: int) -> np.ndarray | None:
    """The benchmark's equity over the ``n`` bars from ``start``: buy-and-hold (``True``), none
    (``False``) or the curve given."""
    if benchmark is True:
        return _buy_and_hold(dataset, cfg, start, n, seed)
    if benchmark is False or benchmark is None:
        return None
    return np.asarray(benchmark, dtype=np.float64)


def _buy_and_hold(dataset: Dataset, cfg: EnvConfig, start: int, n: int, seed: int) -> np.ndarray:
    """Equity of the ``buy_and_hold`` baseline under its config for the agent's (1x equity, the
    same costs, no risk manager: :func:`~rltrade.agents.baselines.buy_and_hold_config`) over the
    ``n`` bars from ``start``, through the same fused loop as any planned policy: the same
    numbers as ``run_backtest(BuyAndHold(), dataset, cfg)`` on those bars."""
    policy = BuyAndHold()
    bench_cfg = _policy_config(policy, cfg, equity_floor=False)
    run = _Run(dataset, bench_cfg, None, True, start, seed, records=False)
    plan, _ = _validated_plan(policy, dataset, bench_cfg)
    rec = np.zeros((_N_REC, n))
    rec_actions = np.zeros((1, n))
    no_account = np.zeros((EK.N_ACCOUNT, 0))
    run.record(rec, no_account, 0, 0.0, False, False)
    k = (_run_fused(run, None, plan, None, bench_cfg, rec, rec_actions, no_account) if n > 1
         else 0)
    equity = rec[_R_EQUITY].copy()
    equity[k + 1:] = equity[k]  # frozen after a bankruptcy
    return equity


def _risk_counts(core: EnvCore) -> dict[str, int]:
    return dict(core.risk_counts[0])


def _stop_reason(st: np.ndarray, terminated: bool, stopped_early: bool) -> str | None:
    """Why a pass ended before its last bar: ``bankrupt``, ``equity_floor`` (``None`` when it
    did not)."""
    if not stopped_early:
        return None
    if st[K.BANKRUPT] != 0.0:
        return "bankrupt"
    return "equity_floor" if terminated else "ended"


def _summary(policy: Any, name: str | None, dataset: Dataset, cfg: EnvConfig,
             steps: pd.DataFrame, trades: pd.DataFrame, done: _Pass, initial: float,
             forced: bool, force_close: bool, bench: np.ndarray | None) -> dict[str, Any]:
    run = done.run
    st = run.st[0]
    last = done.rec[:, done.k]
    final = float(st[K.EQUITY])
    realized_final = float(steps["realized_equity"].iloc[-1])
    costs = _costs(st)
    invalid = int(steps["invalid_action"].sum())
    terminated = bool(int(last[_R_FLAGS]) & _F_TERMINATED)
    stopped_early = len(steps) < done.requested
    summary: dict[str, Any] = {
        "backtest_id": None,  # the folder's name once written
        "name": name or _policy_name(policy),
        "policy": _policy_name(policy),
        "perfect_foresight": bool(getattr(policy, "perfect_foresight", False)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": {
            "symbol": dataset.symbol,
            "timeframe": dataset.timeframe,
            "rows": len(dataset),
            "fingerprint": dataset.fingerprint,
            "spec_hash": dataset.spec_hash,
        },
        "start": steps.index[0],
        "end": steps.index[-1],
        "start_bar": int(steps["bar"].iloc[0]),
        "end_bar": int(steps["bar"].iloc[-1]),
        "bars": len(steps),
        "bars_requested": done.requested,
        "bars_run": len(steps),
        "end_time": steps.index[-1].isoformat(),
        "stopped_early": stopped_early,
        "stop_reason": _stop_reason(st, terminated, stopped_early),
        "equity_floor_applied": cfg.equity_floor > 0.0,
        "initial_equity": initial,
        "final_equity": final,
        "final_realized_equity": realized_final,
        "total_return": final / initial - 1.0,
        "realized_return": realized_final / initial - 1.0,
        "unrealized_pnl": float(st[K.UNREALIZED]),
        "open_position": float(st[K.POS]),
        "bankrupt": bool(st[K.BANKRUPT]),
        "terminated": terminated,
        "truncated": bool(int(last[_R_FLAGS]) & _F_TRUNCATED),
        "force_close": bool(force_close),
        "force_closed": forced,
        "n_trades": len(trades),
        "n_fills": int(st[K.N_FILLS]),
        "costs": {**costs, "total": costs["fees"] + costs["spread_cost"]
                  + costs["slippage_cost"]},
        "rejections": {k: v for k, v in reason_counts(st, REJECTION_REASONS).items() if v},
        "adjustments": {k: v for k, v in reason_counts(st, ADJUSTMENTS).items() if v},
        "risk_interventions": _risk_counts(run.core) if cfg.risk is not None else {},
        "invalid_actions": invalid,
        "benchmark_final_equity": float(bench[-1]) if bench is not None and len(bench) else None,
        "config": cfg.model_dump(mode="json"),
    }
    return _json_safe(summary)


def _state_debug(dataset: Dataset, market: np.ndarray, bars: np.ndarray,
                 account: np.ndarray) -> pd.DataFrame:
    index = pd.DatetimeIndex(dataset.timestamps[bars].astype("datetime64[ns]"), tz="UTC",
                             name="timestamp")
    data: dict[str, Any] = {"bar": bars}
    for j, col in enumerate(dataset.feature_names):
        data[f"raw.{col}"] = dataset.features[bars, j]
    for j, col in enumerate([*dataset.feature_names, *dataset.signal_names]):
        data[f"norm.{col}"] = market[bars, j]
    for j, col in enumerate(EK.ACCOUNT_FIELDS):
        data[f"account.{col}"] = account[j]
    return pd.DataFrame(data, index=index, copy=False)


def _write(folder: Path, steps: pd.DataFrame, trades: pd.DataFrame, summary: dict[str, Any],
           metrics: dict[str, Any] | None, debug: pd.DataFrame | None) -> None:
    _write_frame_csv(folder / "steps.csv", steps)
    if len(steps) > PARQUET_ROWS:
        _write_parquet(folder / "steps.parquet", steps)
    _write_frame_csv(folder / "trades.csv", trades)
    atomic_write_bytes(folder / "summary.json",
                       (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode())
    if metrics is not None:
        atomic_write_bytes(folder / "metrics.json",
                           (json.dumps(metrics, indent=2, allow_nan=False) + "\n").encode())
    if debug is not None:
        _write_frame_csv(folder / "state_debug.csv", debug)
