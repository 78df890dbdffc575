"""Walk-forward: one config trained on every fold with every seed, each judged once out of
sample, the test windows stitched into one out-of-sample equity.

The unit of work is :func:`run_fold` ``(config, dataset_ref, fold, seed, out_dir)``, a plain
function of picklable arguments (an executor may run it in another process, or later on another
machine):

1. **train** on the fold's training rows (the normalizer fitted on those rows only) with
   :func:`rltrade.agents.training.train`, into ``out_dir/folds/fold_<k>/seed_<s>/``, an
   ordinary run directory (``rltrade backtest --run`` works on it);
2. **select** on the validation rows only: training evaluates the model on the validation rows
   (with their ``window - 1`` context rows) every ``training.eval_freq`` steps and at the end,
   each time through :func:`~rltrade.evaluation.run_backtest`, and keeps the model with the
   highest validation **total return** in ``best/``; that is the selected checkpoint;
3. **test** it once on the test rows (with their context, :func:`~rltrade.evaluation.ranges.
   with_context`) through :func:`~rltrade.evaluation.judge.backtest_run` (the run's own costs,
   recorded in its ``metadata.json``), and every baseline on the same rows through the same
   ``run_backtest`` (:func:`~rltrade.evaluation.judge.compare_baselines`), written as
   ``comparison.csv`` beside the backtest.

The test rows are used for nothing else. :func:`walk_forward` builds the Dataset once for the
whole data range (features are causal: the truncation test proves it), saves it under
``runs/NAME/dataset/``, plans the folds (:mod:`rltrade.experiments.folds`), runs folds × seeds
through an executor (:mod:`rltrade.experiments.executors`) and writes ``walkforward.json``,
``oos_steps.csv`` and ``report.html`` (:mod:`rltrade.experiments.report`). Every fold run
trains with one torch thread (``training.torch_threads: 1``), so a pool of processes does
not oversubscribe the cores and its results equal a sequential run's.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from rltrade.config import RunConfig
from rltrade.data.store import atomic_write_bytes, atomic_write_json
from rltrade.errors import ConfigError
from rltrade.evaluation.aggregate import SUMMARY_COLUMNS
from rltrade.experiments.executors import (
    Executor,
    LocalExecutor,
    SequentialExecutor,
    close_executor,
    make_executor,
)
from rltrade.experiments.folds import (
    Block,
    CpcvPlan,
    Fold,
    FoldPlan,
    cpcv_path_statistics,
    cpcv_plan,
    default_purge,
    duration_bars,
    plan_folds,
)
from rltrade.experiments.registry import TrialRegistry, registry_path
from rltrade.features.dataset import Dataset
from rltrade.runs import check_run_name, utc_now

__all__ = [
    "AGENT",
    "OOS_LABELS",
    "SELECTION_RULE",
    "CpcvResult",
    "CpcvSplitResult",
    "FoldResult",
    "FoldTraining",
    "WalkForwardResult",
    "config_dataset",
    "cpcv_baseline_paths",
    "cpcv_path_seed_table",
    "cpcv_significance",
    "cpcv_statistics",
    "cpcv_stitch",
    "cpcv_walk_plan",
    "deflated_sharpe_fields",
    "fold_plan",
    "fold_seed_table",
    "load_dataset_ref",
    "pbo_fields",
    "record_cpcv_trials",
    "record_trials",
    "run_cpcv_split",
    "run_fold",
    "stitch",
    "stitched_returns",
    "summary_statistics",
    "train_fold",
    "walk_forward",
    "walkforward_statistics",
]

log = logger.bind(component="train")

#: the agent's column name in the per-fold equity
AGENT = "agent"
#: the columns of ``oos_steps.csv`` that label a bar (the rolling fold; the CPCV path and group)
#: rather than hold a stitched curve
OOS_LABELS = ("fold", "path", "group")
#: how the checkpoint of a fold is chosen (recorded in walkforward.json)
SELECTION_RULE = ("the model with the highest total return on the validation rows among "
                  "training's evaluations (every training.eval_freq steps and the final model)")


@dataclass
class FoldResult:
    """What one fold × seed produced (picklable: plain data and numpy arrays).

    :param equity: per test bar (``timestamps``), equity as a multiple of the initial equity,
        for the agent (``"agent"``) and every baseline; a backtest that stopped early keeps its
        last equity for the remaining bars.
    :param test_returns: the agent's per-period returns on the bars its test backtest ran
        (``test_timestamps``), as the metrics define them.
    """

    fold: int
    seed: int
    run: str
    selected: dict[str, Any]
    test: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    timestamps: np.ndarray
    equity: dict[str, np.ndarray]
    wall_seconds: float
    backtest: str | None = None
    #: the bars the test backtest ran (int64 UTC ns) and their per-period returns
    #: (:func:`~rltrade.experiments.registry.backtest_returns`): what the registry records
    test_timestamps: np.ndarray | None = None
    test_returns: np.ndarray | None = None
    #: the test backtest's annualisation (``metrics["run"]["bars_per_year"]``)
    bars_per_year: float | None = None


# -- dataset references -------------------------------------------------------------------------
_LOADED: dict[str, Dataset] = {}


def load_dataset_ref(ref: Dataset | str | Path) -> Dataset:
    """The Dataset itself, or the one saved at a path (:meth:`Dataset.save`), loaded once per
    process."""
    if isinstance(ref, Dataset):
        return ref
    key = str(Path(ref).resolve())
    if key not in _LOADED:
        _LOADED.clear()  # one walk-forward's Dataset per process at a time
        _LOADED[key] = Dataset.load(key)
    return _LOADED[key]


def _with_context(ds: Dataset, block: Block, window: int) -> Dataset:
    """The block's rows with the ``window - 1`` rows before it as context."""
    from rltrade.evaluation.ranges import with_context

    ts = ds.timestamps
    start = pd.Timestamp(int(ts[block.start]), tz="UTC")
    end = pd.Timestamp(int(ts[block.stop]), tz="UTC") if block.stop < len(ds) else None
    return with_context(ds, start, end, window, what="the walk-forward Dataset")


def _curve(equity: pd.Series, timestamps: np.ndarray, initial: float) -> np.ndarray:
    """An equity curve over ``timestamps`` as a multiple of ``initial`` (the last value
    carried over bars the backtest did not run, e.g. after it stopped early)."""
    eq = pd.Series(equity.to_numpy(dtype=np.float64) / float(initial),
                   index=pd.DatetimeIndex(equity.index).as_unit("ns").asi8)
    return eq.reindex(timestamps).ffill().fillna(1.0).to_numpy()


# -- the unit of work --------------------------------------------------------------------------
@dataclass
class FoldTraining:
    """Steps 1 and 2 of :func:`run_fold`: the run trained on a fold's training rows, its
    checkpoint selected on the validation rows (``trained.run``'s ``best/``).

    :param dataset: the whole walk-forward Dataset.
    :param config: the config trained (``training.seed`` set).
    :param validation: the validation rows with their ``window - 1`` context rows.
    :param normalizer: fitted on the training rows only.
    :param trained: :func:`rltrade.agents.training.train`'s result.
    """

    dataset: Dataset
    config: RunConfig
    validation: Dataset
    normalizer: Any
    trained: Any


def train_fold(config: RunConfig, dataset_ref: Dataset | str | Path, fold: Fold, seed: int,
               out_dir: str | Path) -> FoldTraining:
    """Train ``config`` with ``seed`` on ``fold``'s training rows (the normalizer fitted on
    them only), evaluating and selecting on its validation rows, into
    ``out_dir/folds/fold_<k>/seed_<s>/``; the test rows are not touched (:func:`run_fold`
    tests afterwards, a sweep's units never do).

    :param config: the run config (``training.seed`` is replaced by ``seed``).
    :param dataset_ref: the walk-forward's Dataset, or the folder it was saved to.
    :param fold: the fold (row ranges of that Dataset).
    :param seed: the training seed.
    :param out_dir: the folder the ``folds/`` runs go to.
    """
    from rltrade.agents.training import PreparedData, train
    from rltrade.features.normalize import Normalizer

    ds = load_dataset_ref(dataset_ref)
    cfg = config.with_overrides(training={"seed": int(seed)})
    train_ds = ds.slice(fold.train.start, fold.train.stop)
    valid_ds = _with_context(ds, fold.validation, cfg.env.window)
    normalizer = Normalizer.for_dataset(train_ds).fit(train_ds)
    data = PreparedData(ds, train_ds, valid_ds, None, normalizer)
    root = Path(out_dir) / "folds" / f"fold_{fold.index}"
    trained = train(cfg, f"seed_{seed}", runs_root=root, data=data, record_trial=False)
    return FoldTraining(ds, cfg, valid_ds, normalizer, trained)


def run_fold(config: RunConfig, dataset_ref: Dataset | str | Path, fold: Fold, seed: int,
             out_dir: str | Path) -> FoldResult:
    """Train ``config`` with ``seed`` on ``fold``'s training rows, select on its validation
    rows, backtest the selection once on its test rows with every baseline (see the module
    docstring).

    :param config: the run config (``training.seed`` is replaced by ``seed``).
    :param dataset_ref: the walk-forward's Dataset, or the folder it was saved to.
    :param fold: the fold (row ranges of that Dataset).
    :param seed: the training seed.
    :param out_dir: the walk-forward's folder; the run goes to ``folds/fold_<k>/seed_<s>/``.
    """
    from rltrade.evaluation.judge import backtest_run, compare_baselines
    from rltrade.experiments.registry import backtest_returns

    t0 = time.perf_counter()
    ft = train_fold(config, dataset_ref, fold, seed, out_dir)
    ds, cfg, normalizer, trained = ft.dataset, ft.config, ft.normalizer, ft.trained
    test_ds = _with_context(ds, fold.test, cfg.env.window)
    run = trained.run
    best = trained.best_eval or trained.final_eval
    result = backtest_run(run, test_ds, model="best", baselines=False, report=False)
    ev = cfg.evaluation
    table, equity = compare_baselines(
        test_ds, cfg.env, normalizer, agent=(AGENT, result), bars_per_year=ev.bars_per_year,
        equity_floor=ev.equity_floor, judged_under=run.name, params=cfg.baselines.params())
    if result.path is not None:
        atomic_write_bytes(result.path / "comparison.csv", table.to_csv(index=False).encode())
    rows = {str(r["name"]): _plain(r) for r in table.to_dict(orient="records")}
    timestamps = ds.timestamps[fold.test.start:fold.test.stop].astype(np.int64)
    curves = {AGENT: _curve(result.steps["equity"], timestamps,
                            result.summary["initial_equity"])}
    for name, series in equity.items():
        if name != AGENT:
            curves[name] = _curve(series, timestamps, cfg.env.engine.initial_cash)
    test_ts, test_returns = backtest_returns(result)
    bars_per_year = ((result.metrics or {}).get("run") or {}).get("bars_per_year")
    return FoldResult(
        fold=fold.index, seed=int(seed), run=str(run.path),
        selected={"model": "best", "step": best.get("step"), "rule": SELECTION_RULE,
                  "validation": _plain(best)},
        test=rows.pop(AGENT), baselines=rows, timestamps=timestamps, equity=curves,
        wall_seconds=time.perf_counter() - t0,
        backtest=str(result.path) if result.path is not None else None,
        test_timestamps=test_ts, test_returns=test_returns,
        bars_per_year=None if bars_per_year is None else float(bars_per_year))


@dataclass
class CpcvSplitResult:
    """What one CPCV split × seed produced (picklable).

    :param group_returns: per test group, the model's per-period returns on that group's bars
        (:func:`~rltrade.experiments.registry.backtest_returns`), what the backtest paths are
        assembled from (:func:`~rltrade.experiments.folds.cpcv_path_statistics`).
    :param group_tests: per test group, the backtest's summary numbers.
    :param group_timestamps: per test group, the UTC open timestamps (int64 ns) of its returns.
    :param baseline_returns: per baseline, per test group, its per-period returns on the same
        bars under the same costs (:func:`~rltrade.evaluation.judge.compare_baselines`).
    :param baseline_tests: per test group, per baseline, its comparison row.
    """

    split: int
    seed: int
    run: str
    test_groups: tuple[int, ...]
    group_returns: dict[int, np.ndarray]
    group_tests: dict[int, dict[str, Any]]
    wall_seconds: float
    bars_per_year: float | None = None
    group_timestamps: dict[int, np.ndarray] = field(default_factory=dict)
    baseline_returns: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    baseline_tests: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)


def run_cpcv_split(config: RunConfig, dataset_ref: Dataset | str | Path, plan: CpcvPlan,
                   split: int, seed: int, out_dir: str | Path) -> CpcvSplitResult:
    """Train ``config`` with ``seed`` once on CPCV split ``split``'s training rows and backtest
    the final model once on each of its test groups.

    The training rows are several segments cut by the test groups and their purge / embargo
    gaps: the run trains on the Dataset spanning them with ``env.segments`` set to them, so
    every training episode (its observation window included) lies inside one segment
    (:meth:`rltrade.envs.core.EnvCore.episode_bounds`). The normalizer is fitted on the
    training rows only. CPCV has no validation rows: ``training.eval_freq`` is set to 0 and
    the **final** model is tested; training's one evaluation (at the end) runs on the longest
    training segment, in sample, and selects nothing. Each test group is backtested through
    :func:`~rltrade.evaluation.run_backtest` on its rows with their ``window - 1`` context
    bars, into ``<run>/cpcv/group_<g>/``, and every baseline on the same bars under the same
    costs (:func:`~rltrade.evaluation.judge.compare_baselines`), their per-period returns kept
    per group.

    :param config: the run config (``training.seed`` is replaced by ``seed``).
    :param dataset_ref: the Dataset the plan is over, or the folder it was saved to.
    :param plan: the CPCV plan (:func:`~rltrade.experiments.folds.cpcv_plan`).
    :param split: the split's index in ``plan.splits``.
    :param seed: the training seed.
    :param out_dir: the run goes to ``out_dir/splits/split_<i>/seed_<s>/``.
    """
    from types import SimpleNamespace

    from rltrade.agents.training import PreparedData, train
    from rltrade.evaluation.backtest import run_backtest
    from rltrade.evaluation.judge import compare_baselines
    from rltrade.evaluation.series import equity_returns
    from rltrade.experiments.registry import backtest_returns
    from rltrade.features.normalize import Normalizer

    t0 = time.perf_counter()
    ds = load_dataset_ref(dataset_ref)
    sp = plan.splits[split]
    segments = sp.train_segments()
    lo, hi = segments[0][0], segments[-1][1]
    local = [[a - lo, b - lo] for a, b in segments]
    cfg = config.with_overrides(training={"seed": int(seed), "eval_freq": 0},
                                env={"segments": local})
    window = cfg.env.window
    train_ds = ds.slice(lo, hi)
    rows = sp.train_rows()
    normalizer = Normalizer.for_dataset(train_ds)
    normalizer.fit(SimpleNamespace(features=ds.features[rows], close=ds.close[rows],
                                   feature_names=ds.feature_names), 0, len(rows))
    # the rows it was fitted on, as [start, stop) pairs of the spanning Dataset's rows
    normalizer.fitted_rows = [x for pair in local for x in pair]
    longest = max(segments, key=lambda seg: seg[1] - seg[0])
    data = PreparedData(ds, train_ds, ds.slice(longest[0], longest[1]), None, normalizer)
    root = Path(out_dir) / "splits" / f"split_{sp.index}"
    trained = train(cfg, f"seed_{seed}", runs_root=root, data=data, record_trial=False)
    run = trained.run
    ev = cfg.evaluation
    test_env = cfg.env.model_copy(update={"segments": None})
    group_returns: dict[int, np.ndarray] = {}
    group_tests: dict[int, dict[str, Any]] = {}
    group_timestamps: dict[int, np.ndarray] = {}
    baseline_returns: dict[str, dict[int, np.ndarray]] = {}
    baseline_tests: dict[int, dict[str, dict[str, Any]]] = {}
    bars_per_year: float | None = None
    for g in sp.test_groups:
        test_ds = _with_context(ds, plan.groups[g], window)
        result = run_backtest(trained.model, test_ds, test_env, normalizer=normalizer,
                              out_dir=run.path / "cpcv" / f"group_{g}", name=f"cpcv_group_{g}",
                              bars_per_year=ev.bars_per_year, equity_floor=ev.equity_floor)
        group_timestamps[g], group_returns[g] = backtest_returns(result)
        group_tests[g] = _plain(dict(result.summary))
        bpy = ((result.metrics or {}).get("run") or {}).get("bars_per_year")
        bars_per_year = None if bpy is None else float(bpy)
        table, equity = compare_baselines(
            test_ds, test_env, normalizer, bars_per_year=ev.bars_per_year,
            equity_floor=ev.equity_floor, judged_under=run.name, params=cfg.baselines.params())
        baseline_tests[g] = {str(r["name"]): _plain(r) for r in table.to_dict(orient="records")}
        for name, series in equity.items():
            baseline_returns.setdefault(name, {})[g] = equity_returns(
                series.to_numpy(dtype=float), float(cfg.env.engine.initial_cash))
    return CpcvSplitResult(split=sp.index, seed=int(seed), run=str(run.path),
                           test_groups=tuple(sp.test_groups), group_returns=group_returns,
                           group_tests=group_tests, wall_seconds=time.perf_counter() - t0,
                           bars_per_year=bars_per_year, group_timestamps=group_timestamps,
                           baseline_returns=baseline_returns, baseline_tests=baseline_tests)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready values (numpy scalars, NaN -> None, timestamps as text)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        elif isinstance(value, pd.Timestamp):
            value = value.isoformat()
        out[key] = value
    return out


# -- the plan ----------------------------------------------------------------------------------
def _data_section(config: RunConfig, ds: Dataset) -> dict[str, Any]:
    """The ``data`` section of ``walkforward.json``: where the bars came from and their range."""
    return {"source": config.data.source, "symbol": ds.symbol, "timeframe": ds.timeframe,
            "calendar": ds.calendar, "fingerprint": ds.fingerprint, "spec_hash": ds.spec_hash,
            "rows": len(ds),
            "start": str(ds.index[0]), "end": str(ds.index[-1]),
            "warmup_dropped": ds.warmup_dropped}


def fold_plan(config: RunConfig, dataset: Dataset) -> FoldPlan:
    """The folds of ``config.walkforward`` over ``dataset`` (durations in bars of its
    timeframe, the default purge from the env config).

    :raises ConfigError: no ``walkforward`` section, bad sizes, or data too short.
    """
    wf = config.walkforward
    if wf is None:
        raise ConfigError("the config has no walkforward: section (scheme, train, validation, "
                          "test, seeds); see docs/walkforward.md")
    tf = dataset.timeframe

    def bars(value: int | str | None, key: str) -> int | None:
        return None if value is None else duration_bars(value, tf, f"walkforward.{key}")

    env = config.env
    purge = default_purge(env.window, env.engine.effective_lag) if wf.purge is None \
        else wf.purge
    return plan_folds(len(dataset), train=bars(wf.train, "train") or 0,
                      validation=bars(wf.validation, "validation") or 0,
                      test=bars(wf.test, "test"), step=bars(wf.step, "step"), folds=wf.folds,
                      purge=purge, embargo=wf.embargo, scheme=wf.scheme,
                      min_train=env.window + 2)


# -- stitching ---------------------------------------------------------------------------------
def stitch(results: list[FoldResult], seeds: list[int]) -> pd.DataFrame:
    """The test windows one after the other: per seed the agent's equity (``agent_seed_<s>``,
    a multiple of the initial equity, each fold starting where the previous one ended), the
    seeds' median (``agent_median``) and every baseline stitched the same way; ``fold`` says
    which fold each bar belongs to. Indexed by the bars' UTC open times."""
    by_fold: dict[int, dict[int, FoldResult]] = {}
    for r in results:
        by_fold.setdefault(r.fold, {})[r.seed] = r
    frames = []
    carry: dict[str, float] = {}
    for k in sorted(by_fold):
        per_seed = by_fold[k]
        first = per_seed[seeds[0]]
        cols: dict[str, np.ndarray] = {"fold": np.full(len(first.timestamps), k)}
        for s in seeds:
            col = f"agent_seed_{s}"
            cols[col] = carry.get(col, 1.0) * per_seed[s].equity[AGENT]
        for name, curve in first.equity.items():
            if name != AGENT:
                cols[name] = carry.get(name, 1.0) * curve
        for col, values in cols.items():
            if col != "fold" and len(values):
                carry[col] = float(values[-1])
        frames.append(pd.DataFrame(cols, index=first.timestamps))
    frame = pd.concat(frames)
    seed_cols = [f"agent_seed_{s}" for s in seeds]
    frame.insert(1 + len(seeds), "agent_median", frame[seed_cols].median(axis=1))
    frame.index = pd.DatetimeIndex(frame.index.to_numpy().astype("datetime64[ns]"), tz="UTC",
                                   name="timestamp")
    return frame


# -- the trial registry and the statistics ------------------------------------------------------
def record_trials(registry: TrialRegistry, experiment: str, config: RunConfig, ds: Dataset,
                  plan: FoldPlan, results: list[FoldResult]) -> list[int]:
    """Record every fold × seed test run as one trial of ``experiment`` (the driver does this,
    never a worker): its run directory, :func:`~rltrade.experiments.registry.config_hash` of
    ``config`` (the seeds and folds of one walk-forward share it), seed, fold, the Dataset's
    fingerprint, the fold's train / validation / test ranges (row indices and timestamps, with
    the purge and embargo) and the test backtest's per-period returns.

    :param registry: the trial registry.
    :param experiment: the experiment the trials belong to.
    :param config: the walk-forward's config (its hash identifies the configuration).
    :param ds: the walk-forward's Dataset.
    :param plan: the fold plan the results came from.
    :param results: the fold × seed results.
    :return: the new trial ids, in the order of ``results``.
    :raises ConfigError: a result without its test returns.
    """
    from rltrade.experiments.registry import config_hash

    digest = config_hash(config)
    folds = {f.index: f for f in plan.folds}
    ids = []
    for r in results:
        if r.test_returns is None or r.test_timestamps is None:
            raise ConfigError(f"fold {r.fold} seed {r.seed}: the result has no test returns to "
                              "record (was it made by run_fold?)")
        ranges = folds[r.fold].to_dict(ds.timestamps)
        ranges.pop("fold")
        ids.append(registry.record(
            run_path=r.run, experiment=experiment, config_hash=digest,
            returns=r.test_returns, timestamps=r.test_timestamps, seed=r.seed,
            data_fingerprint=ds.fingerprint, fold=r.fold, ranges=ranges,
            bars_per_year=r.bars_per_year))
    return ids


def record_cpcv_trials(registry: TrialRegistry, experiment: str, config: RunConfig,
                       ds: Dataset, plan: CpcvPlan, results: list[CpcvSplitResult]) -> list[int]:
    """Record every CPCV split × seed as one trial of ``experiment`` (the driver does this,
    never a worker): ``fold`` is the split index, ``ranges`` the split's training segments
    and test groups (row indices and timestamps, with the purge and embargo), the returns the
    split's test-group returns concatenated in time order with their timestamps.

    :param registry: the trial registry.
    :param experiment: the experiment the trials belong to.
    :param config: the walk-forward's config (its hash identifies the configuration).
    :param ds: the walk-forward's Dataset.
    :param plan: the CPCV plan the results came from.
    :param results: the split × seed results (:func:`run_cpcv_split`).
    :return: the new trial ids, in the order of ``results``.
    :raises ConfigError: a result without the timestamps of its test returns.
    """
    from rltrade.experiments.registry import config_hash

    digest = config_hash(config)
    ids = []
    for r in results:
        groups = sorted(r.group_returns)
        if any(g not in r.group_timestamps for g in groups):
            raise ConfigError(f"cpcv split {r.split} seed {r.seed}: the result has no test "
                              "timestamps to record (was it made by run_cpcv_split?)")
        ranges = plan.splits[r.split].to_dict(ds.timestamps)
        ranges.pop("split")
        ranges.update(purge=plan.purge, embargo=plan.embargo)
        ids.append(registry.record(
            run_path=r.run, experiment=experiment, config_hash=digest,
            returns=np.concatenate([r.group_returns[g] for g in groups]),
            timestamps=np.concatenate([r.group_timestamps[g] for g in groups]), seed=r.seed,
            data_fingerprint=ds.fingerprint, fold=r.split, ranges=ranges,
            bars_per_year=r.bars_per_year))
    return ids


def fold_seed_table(results: list[FoldResult]) -> pd.DataFrame:
    """One row per fold and seed with :data:`~rltrade.evaluation.aggregate.SUMMARY_COLUMNS`:
    the test backtest's **annualised** Sharpe ratio (its metrics' ``performance.sharpe``) and
    total return, buy-and-hold's and flat's total returns on the same test window (``NaN``
    where undefined)."""

    def num(value: Any) -> float:
        return np.nan if value is None else float(value)

    return pd.DataFrame([{
        "fold": r.fold, "seed": r.seed, "sharpe": num(r.test.get("sharpe")),
        "total_return": num(r.test.get("total_return")),
        "buy_and_hold_return": num((r.baselines.get("buy_and_hold") or {}).get("total_return")),
        "flat_return": num((r.baselines.get("flat") or {}).get("total_return")),
    } for r in results], columns=list(SUMMARY_COLUMNS))


def stitched_returns(oos: pd.DataFrame) -> pd.DataFrame:
    """Per-period simple returns of every stitched curve of :func:`stitch` (the first bar
    against the start, 1.0): each fold's bars give that fold's test returns, since each fold
    starts where the previous one ended."""
    from rltrade.evaluation.series import equity_returns

    return pd.DataFrame({c: equity_returns(oos[c].to_numpy(dtype=float), 1.0)
                         for c in oos.columns if c not in OOS_LABELS}, index=oos.index)


def deflated_sharpe_fields(registry: TrialRegistry, experiment: str, returns: np.ndarray,
                           bars_per_year: float | None) -> dict[str, Any]:
    """PSR (against 0) and DSR of ``returns`` deflated by ``experiment``'s recorded trials
    (:func:`~rltrade.experiments.registry.experiment_dsr`), as the ``significance`` fields
    ``sharpe_per_bar``, ``sharpe_annualised``, ``psr``, ``dsr``, ``n_trials``, ``n_recorded``,
    ``var_trials_per_bar`` (``None`` when not computable, ``dsr_skipped`` then says why).

    :param registry: the registry the trials were recorded in.
    :param experiment: their experiment.
    :param returns: the per-period returns judged.
    :param bars_per_year: to annualise the per-bar Sharpe ratio (``None``: not annualised).
    """
    from rltrade.experiments.registry import experiment_dsr

    out: dict[str, Any] = {"sharpe_per_bar": None, "sharpe_annualised": None, "psr": None,
                           "dsr": None, "n_trials": None, "n_recorded": None,
                           "var_trials_per_bar": None, "dsr_skipped": None}
    try:
        dsr = experiment_dsr(registry, experiment, returns)
    except ConfigError as exc:
        out["dsr_skipped"] = str(exc)
        return out
    sr = dsr["sharpe"]
    out.update(sharpe_per_bar=sr, psr=dsr["psr"], dsr=dsr["dsr"], n_trials=dsr["n_trials"],
               n_recorded=dsr["n_recorded"], var_trials_per_bar=dsr["var_trials"],
               sharpe_annualised=(sr * np.sqrt(bars_per_year)
                                  if bars_per_year is not None and np.isfinite(sr) else None))
    return out


def walkforward_statistics(results: list[FoldResult], oos: pd.DataFrame, seeds: list[int],
                           registry: TrialRegistry, experiment: str, *, seed: int = 0,
                           bars_per_year: float | None = None) -> dict[str, Any]:
    """The ``statistics`` and ``significance`` sections of ``walkforward.json``.

    ``statistics``: :func:`~rltrade.evaluation.aggregate.summarize_seeds_and_folds` over
    :func:`fold_seed_table` (IQM and stratified bootstrap 95 % interval of the annualised
    test Sharpe ratio and of the test return, the fractions of folds beating buy-and-hold and
    flat), with Hansen's SPA test of the stitched per-period returns of every seed (``[T,
    seeds]``) against stitched buy-and-hold when there are at least
    :data:`~rltrade.evaluation.aggregate.MIN_SPA_OBSERVATIONS` periods (else ``spa`` is
    ``None`` and ``spa_skipped`` says why).

    ``significance``: PSR (against 0) and DSR of the per-period returns of the seeds' median
    stitched curve (``agent_median``), DSR deflated by the experiment's recorded trials
    (:func:`~rltrade.experiments.registry.experiment_dsr`: ``N`` the number of trials, ``V``
    the variance of their **per-bar** Sharpe ratios); and PBO
    (:func:`~rltrade.experiments.registry.experiment_pbo`) when the experiment holds at least
    two configurations, else ``None`` and ``pbo_skipped`` says why.

    :param results: the fold × seed results.
    :param oos: the stitched curves (:func:`stitch`).
    :param seeds: the seeds, in column order.
    :param registry: the registry the trials were recorded in.
    :param experiment: their experiment.
    :param seed: seed of every bootstrap.
    :param bars_per_year: to annualise the per-bar Sharpe ratios (``None``: not annualised).
    :return: ``{"statistics": ..., "significance": ...}``, JSON-ready.
    """
    from rltrade.evaluation.metrics import json_ready

    returns = stitched_returns(oos)
    statistics = summary_statistics(fold_seed_table(results), returns,
                                    [f"agent_seed_{s}" for s in seeds], seed=seed)
    statistics["sharpe_units"] = "annualised (each test backtest's metrics performance.sharpe)"
    statistics["spa_returns"] = "stitched per-period returns, every seed against buy_and_hold"

    median = returns["agent_median"].to_numpy()
    significance: dict[str, Any] = {
        "experiment": experiment, "registry": str(registry.path),
        "returns": "per-period returns of agent_median (the seeds' median stitched curve)",
        "n_periods": len(median), "bars_per_year": bars_per_year,
        "sharpe_per_bar": None, "sharpe_annualised": None, "psr": None, "dsr": None,
        "n_trials": None, "n_recorded": None, "var_trials_per_bar": None,
        "n_configurations": None, "dsr_skipped": None, "pbo": None, "pbo_skipped": None,
    }
    significance.update(deflated_sharpe_fields(registry, experiment, median, bars_per_year))
    significance.update(pbo_fields(registry, experiment))
    undefined: list[str] = []
    ready = json_ready(significance, "", undefined)
    ready["undefined"] = undefined
    return {"statistics": statistics, "significance": ready}


def summary_statistics(table: pd.DataFrame, returns: pd.DataFrame, agent_columns: list[str],
                       *, seed: int = 0) -> dict[str, Any]:
    """:func:`~rltrade.evaluation.aggregate.summarize_seeds_and_folds` of ``table`` (one row
    per fold, or CPCV path, and seed: :data:`~rltrade.evaluation.aggregate.SUMMARY_COLUMNS`),
    with Hansen's SPA test of ``returns[agent_columns]`` (``[T, k]`` per-period returns)
    against ``returns["buy_and_hold"]`` on the same periods when there are at least
    :data:`~rltrade.evaluation.aggregate.MIN_SPA_OBSERVATIONS` of them, all finite (else
    ``spa`` is ``None`` and ``spa_skipped`` says why; also without the ``arch`` package).

    :param table: the fold × seed (or path × seed) table.
    :param returns: per-period returns of the stitched curves (:func:`stitched_returns`).
    :param agent_columns: the agent's columns of ``returns`` the SPA test compares.
    :param seed: seed of every bootstrap.
    :return: the summary, JSON-ready, with ``spa_skipped``.
    """
    from rltrade.evaluation.aggregate import MIN_SPA_OBSERVATIONS, summarize_seeds_and_folds

    agent = returns[agent_columns].to_numpy()
    spa_skipped = None
    spa_args: dict[str, Any] = {}
    if "buy_and_hold" not in returns.columns:
        spa_skipped = "no buy-and-hold curve to compare with"
    elif len(returns) < MIN_SPA_OBSERVATIONS:
        spa_skipped = (f"{len(returns)} stitched out-of-sample periods; the SPA test needs at "
                       f"least {MIN_SPA_OBSERVATIONS}")
    elif not (np.isfinite(agent).all() and np.isfinite(returns["buy_and_hold"]).all()):
        spa_skipped = "a stitched return is undefined (an equity reached zero)"
    else:
        spa_args = {"agent_returns": agent,
                    "benchmark_returns": returns["buy_and_hold"].to_numpy()}
    try:
        statistics = summarize_seeds_and_folds(table, seed=seed, **spa_args)
    except ImportError as exc:  # no arch: everything but the SPA test
        spa_skipped = str(exc)
        statistics = summarize_seeds_and_folds(table, seed=seed)
    statistics["spa_skipped"] = spa_skipped
    return statistics


def pbo_fields(registry: TrialRegistry, experiment: str) -> dict[str, Any]:
    """PBO of ``experiment``'s configurations (:func:`~rltrade.experiments.registry.
    experiment_pbo`: CSCV, S = 16, one column per configuration with its seeds averaged and
    its folds or CPCV splits joined, on the periods every configuration has), as the
    ``significance`` fields ``n_configurations``, ``pbo`` (``pbo``, ``logit_histogram``,
    ``n_partitions``, ``n_configurations``, ``n_periods``, ``n_combinations``,
    ``prob_oos_loss``, ``labels``) and ``pbo_skipped`` (why there is none: fewer than two
    configurations, too few common periods).

    :param registry: the registry the trials were recorded in.
    :param experiment: their experiment.
    """
    from rltrade.experiments.registry import experiment_pbo

    n_configurations = len({t.config_hash for t in registry.trials(experiment)})
    out: dict[str, Any] = {"n_configurations": n_configurations, "pbo": None,
                           "pbo_skipped": None}
    if n_configurations < 2:
        out["pbo_skipped"] = (
            f"experiment {experiment!r} has {n_configurations} configuration; PBO compares "
            "at least two (run another config with the same experiment)")
        return out
    try:
        pbo = experiment_pbo(registry, experiment)
    except ConfigError as exc:
        out["pbo_skipped"] = str(exc)
        return out
    d = pbo.details
    out["pbo"] = {
        "pbo": pbo.pbo, "logit_histogram": _histogram(pbo.logits),
        "n_partitions": d.get("n_partitions"), "n_configurations": d.get("n_configurations"),
        "n_periods": d.get("n_periods"), "n_combinations": d.get("n_combinations"),
        "prob_oos_loss": d.get("prob_oos_loss"), "labels": d.get("labels")}
    return out


def _histogram(values: np.ndarray, bins: int = 30) -> dict[str, list[float]]:
    """A histogram of the finite ``values``: ``counts`` and the ``edges`` of its bins."""
    v = np.asarray(values, dtype=float)
    counts, edges = np.histogram(v[np.isfinite(v)], bins=bins)
    return {"counts": counts.tolist(), "edges": edges.tolist()}


# -- the driver --------------------------------------------------------------------------------
@dataclass
class WalkForwardResult:
    """What :func:`walk_forward` produced: its folder, the plan, every fold × seed result (in
    fold, then seed order) and the stitched out-of-sample equity."""

    path: Path
    plan: FoldPlan
    results: list[FoldResult]
    oos: pd.DataFrame
    wall_seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def report(self) -> dict[str, Any]:
        return json.loads((self.path / "walkforward.json").read_text())


def config_dataset(config: RunConfig) -> Dataset:
    """The Dataset of ``config.data`` and its feature spec (bars loaded, features built)."""
    from rltrade.data.loaders import load_bars
    from rltrade.features.dataset import build_dataset

    dc = config.data
    bars = load_bars(dc.source, timeframe=dc.timeframe, start=dc.start, end=dc.end,
                     policy=dc.policy, symbol=dc.symbol)
    return build_dataset(bars, config.feature_spec, timeframe=dc.timeframe, symbol=dc.symbol)


def _import_quietly(module: str) -> None:
    """Import ``module`` if it is installed (a warm-up; the caller imports it again)."""
    with contextlib.suppress(ImportError):
        importlib.import_module(module)


def walk_forward(config: RunConfig, name: str, runs_root: str | Path = "runs",
                 workers: int | None = 1, *, executor: Executor | None = None,
                 dataset: Dataset | None = None, registry: str | Path | None = None,
                 experiment: str | None = None) -> WalkForwardResult | CpcvResult:
    """Run ``config.walkforward``: every fold × seed through :func:`run_fold`, each recorded
    as a trial in the registry (:func:`record_trials`), then ``walkforward.json`` (with the
    :func:`walkforward_statistics`), ``oos_steps.csv`` and ``report.html`` in
    ``runs_root/name/``.

    :param config: a run config with a ``walkforward:`` section.
    :param name: the walk-forward's folder name (letters, digits, underscores; never reused).
    :param runs_root: where it goes.
    :param workers: processes (1: sequential in this process; ``None``: one per core).
    :param executor: run the units with this instead (e.g. a Ray executor).
    :param dataset: the Dataset to use instead of building it from ``config.data`` (tests).
    :param registry: the trial registry file (default: ``$RLTRADE_REGISTRY``, else
        ``runs_root/registry.sqlite``; :func:`~rltrade.experiments.registry.registry_path`).
    :param experiment: the experiment the trials belong to (default ``name``); give several
        walk-forwards of different configs one experiment to get their PBO.
    With ``scheme: cpcv`` every split × seed runs through :func:`run_cpcv_split` instead and
    the result is a :class:`CpcvResult` (see :func:`_walk_forward_cpcv`).

    :raises ConfigError: no walkforward section, the name is taken, the data is too short.
    """
    from rltrade.agents.algorithms import check_hyperparams

    t0 = time.perf_counter()
    check_run_name(name)
    path = Path(runs_root) / name
    if path.exists():
        raise ConfigError(f"{path} already exists: choose another --name")
    if config.walkforward is None:
        raise ConfigError("the config has no walkforward: section (scheme, train, validation, "
                          "test, seeds); see docs/walkforward.md")
    check_hyperparams(config.agent)
    experiment = experiment or name
    user_config = config  # its hash identifies the configuration
    # one torch thread per unit: a pool of processes shares the cores, and the sequential run
    # equals the pooled one
    config = config.with_overrides(training={"torch_threads": 1})
    runner = executor if executor is not None else make_executor(workers)
    if executor is None and isinstance(runner, LocalExecutor):
        runner.start()  # the workers' imports run while this process builds the Dataset
        # the statistics' SPA test imports arch (about 1.5 s): import it while the units train
        threading.Thread(target=_import_quietly, args=("arch.bootstrap",), daemon=True).start()
    try:
        ds = config_dataset(config) if dataset is None else dataset
        t_data = time.perf_counter() - t0
        trials = TrialRegistry(registry_path(registry, runs_root))
        if config.walkforward.scheme == "cpcv":
            return _walk_forward_cpcv(config, path, ds, workers, runner, t0, t_data, trials,
                                      experiment, user_config)
        return _walk_forward_rolling(config, path, ds, workers, runner, t0, t_data, trials,
                                     experiment, user_config)
    finally:
        if executor is None:
            close_executor(runner)


def _walk_forward_rolling(config: RunConfig, path: Path, ds: Dataset, workers: int | None,
                          runner: Executor, t0: float, t_data: float, trials: TrialRegistry,
                          experiment: str, user_config: RunConfig) -> WalkForwardResult:
    """:func:`walk_forward` with ``scheme: rolling`` or ``anchored``: the folds × seeds through
    :func:`run_fold` on ``runner``, the trials, ``oos_steps.csv``, the statistics,
    ``walkforward.json`` and ``report.html``."""
    name = path.name
    plan = fold_plan(config, ds)
    seeds = list(config.walkforward.seeds)
    trials.connect().close()  # an unreadable registry fails now, not after the training
    log.info("walk-forward {}: {} folds x {} seeds ({} scheme, purge {}, embargo {}) over {} "
             "rows", name, len(plan.folds), len(seeds), plan.scheme, plan.purge, plan.embargo,
             len(ds))
    path.mkdir(parents=True)
    ds_dir = ds.save(path / "dataset")
    atomic_write_bytes(path / "config.yaml", config.to_yaml().encode())
    t_prep = time.perf_counter() - t0 - t_data
    # in this process the Dataset itself; other processes load the saved copy once each
    ref: Dataset | Path = ds if isinstance(runner, SequentialExecutor) else ds_dir
    tasks = [(config, ref, fold, seed, path) for fold in plan.folds for seed in seeds]
    t1 = time.perf_counter()
    results = runner.map(run_fold, tasks)
    t_units = time.perf_counter() - t1
    t2 = time.perf_counter()
    record_trials(trials, experiment, user_config, ds, plan, results)
    t_registry = time.perf_counter() - t2
    t2 = time.perf_counter()
    oos = stitch(results, seeds)
    atomic_write_bytes(path / "oos_steps.csv", oos.to_csv().encode())
    t_stitch = time.perf_counter() - t2
    t2 = time.perf_counter()
    per_year = {r.bars_per_year for r in results if r.bars_per_year is not None}
    stats = walkforward_statistics(results, oos, seeds, trials, experiment,
                                   bars_per_year=per_year.pop() if len(per_year) == 1 else None)
    timings = {"dataset": t_data, "prepare": t_prep, "units": t_units, "registry": t_registry,
               "stitch": t_stitch, "statistics": time.perf_counter() - t2, "report": 0.0,
               "total": 0.0}
    _write_json(path, config, ds, plan, results, oos, seeds, workers, timings, stats)
    from rltrade.experiments.report import write_walkforward_report

    t3 = time.perf_counter()
    write_walkforward_report(path)
    timings["report"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0
    _write_json(path, config, ds, plan, results, oos, seeds, workers, timings, stats)
    log.info("walk-forward {} done in {:.1f} s: {}", name, timings["total"], path)
    return WalkForwardResult(path, plan, results, oos, timings["total"], timings)


def _write_json(path: Path, config: RunConfig, ds: Dataset, plan: FoldPlan,
                results: list[FoldResult], oos: pd.DataFrame, seeds: list[int],
                workers: int | None, timings: dict[str, float],
                stats: dict[str, Any]) -> None:
    ts = ds.timestamps
    folds = []
    for fold in plan.folds:
        entry = fold.to_dict(ts)
        entry["seeds"] = {
            str(r.seed): {"run": str(Path(r.run).relative_to(path)),
                          "backtest": (str(Path(r.backtest).relative_to(path))
                                       if r.backtest else None),
                          "selected": r.selected, "test": r.test, "baselines": r.baselines,
                          "wall_seconds": r.wall_seconds}
            for r in results if r.fold == fold.index}
        folds.append(entry)
    last = oos.iloc[-1]
    stitched = {col: float(last[col]) - 1.0 for col in oos.columns if col != "fold"}
    atomic_write_json(path / "walkforward.json", {
        "format": "rltrade-walkforward-v1",
        "name": path.name,
        "created_at": utc_now(),
        "data": _data_section(config, ds),
        "seeds": seeds,
        "selection": SELECTION_RULE,
        "plan": {k: v for k, v in plan.to_dict(ts).items() if k != "folds"},
        "folds": folds,
        "stitched_total_return": stitched,
        "oos_bars": len(oos),
        "statistics": stats["statistics"],
        "significance": stats["significance"],
        "workers": workers,
        "timings": timings,
    })


# -- CPCV ----------------------------------------------------------------------------------------
def cpcv_walk_plan(config: RunConfig, dataset: Dataset) -> CpcvPlan:
    """The CPCV plan of ``config.walkforward`` (``groups``, ``test_groups``, ``purge``
    (default :func:`~rltrade.experiments.folds.default_purge`), ``embargo``) over
    ``dataset``'s rows."""
    wf = config.walkforward
    if wf is None:
        raise ConfigError("the config has no walkforward: section; see docs/walkforward.md")
    env = config.env
    purge = default_purge(env.window, env.engine.effective_lag) if wf.purge is None \
        else wf.purge
    return cpcv_plan(len(dataset), groups=wf.groups, test_groups=wf.test_groups, purge=purge,
                     embargo=wf.embargo)


def cpcv_baseline_paths(plan: CpcvPlan, results: list[CpcvSplitResult],
                        stats: dict[str, Any]) -> dict[str, Any]:
    """Add the baselines to one seed's :func:`~rltrade.experiments.folds.cpcv_path_statistics`
    (in place): each baseline's path is assembled like the agent's
    (:meth:`~rltrade.experiments.folds.CpcvPlan.path_returns` of its per-group returns), every
    path row gets ``<baseline>_return`` (compounded) for each baseline and
    ``beats_buy_and_hold`` (the agent's path return above buy-and-hold's), and ``stats`` gets
    ``fraction_beating_buy_and_hold`` (over the paths; ``None`` without buy-and-hold).

    :param plan: the CPCV plan.
    :param results: that seed's split results (:func:`run_cpcv_split`).
    :param stats: that seed's path statistics.
    :return: ``stats``.
    """
    names = sorted({n for r in results for n in r.baseline_returns})
    for name in names:
        returns = {(r.split, g): v for r in results
                   for g, v in r.baseline_returns.get(name, {}).items()}
        for row in stats["paths"]:
            r = plan.path_returns(returns, row["path"])
            row[f"{name}_return"] = float(np.prod(1.0 + r[np.isfinite(r)]) - 1.0)
    if "buy_and_hold" in names:
        for row in stats["paths"]:
            row["beats_buy_and_hold"] = bool(row["return"] > row["buy_and_hold_return"])
        stats["fraction_beating_buy_and_hold"] = float(np.mean(
            [row["beats_buy_and_hold"] for row in stats["paths"]]))
    else:
        stats["fraction_beating_buy_and_hold"] = None
    return stats


def cpcv_significance(plan: CpcvPlan, results: list[CpcvSplitResult],
                      statistics: dict[str, dict[str, Any]], registry: TrialRegistry,
                      experiment: str, bars_per_year: float | None) -> dict[str, Any]:
    """The ``cpcv`` section's ``significance``: PSR (against 0) and DSR of the median path's
    per-period returns (the path whose annualised Sharpe ratio is the median over every seed's
    paths, the lower middle one for an even count), DSR deflated by ``experiment``'s recorded
    trials (:func:`deflated_sharpe_fields`), and PBO over the experiment's configurations
    (:func:`pbo_fields`; ``None`` with one configuration), JSON-ready.

    :param plan: the CPCV plan.
    :param results: every split × seed result.
    :param statistics: per seed (``str``), its :func:`cpcv_path_statistics`.
    :param registry: the registry the trials were recorded in.
    :param experiment: their experiment.
    :param bars_per_year: to annualise the per-bar Sharpe ratio.
    """
    from rltrade.evaluation.metrics import json_ready

    ranked = sorted((row["sharpe"], int(seed), row["path"]) for seed, st in statistics.items()
                    for row in st["paths"] if row["sharpe"] is not None)
    out: dict[str, Any] = {"experiment": experiment, "registry": str(registry.path),
                           "returns": "per-period returns of the median path (median "
                                      "annualised Sharpe over every seed's paths)",
                           "seed": None, "path": None, "n_periods": 0,
                           "bars_per_year": bars_per_year}
    if not ranked:
        out.update(deflated_sharpe_fields(registry, experiment, np.array([]), bars_per_year))
        out["dsr_skipped"] = "no path has a defined Sharpe ratio"
    else:
        _, seed, p = ranked[(len(ranked) - 1) // 2]
        returns = {(r.split, g): v for r in results if r.seed == seed
                   for g, v in r.group_returns.items()}
        median = plan.path_returns(returns, p)
        out.update(seed=seed, path=p, n_periods=int(median.size))
        out.update(deflated_sharpe_fields(registry, experiment, median, bars_per_year))
    out.update(pbo_fields(registry, experiment))
    undefined: list[str] = []
    ready = json_ready(out, "", undefined)
    ready["undefined"] = undefined
    return ready


def _group_returns(values: np.ndarray, n: int, what: str) -> np.ndarray:
    """A test group's per-period returns over its ``n`` bars: an undefined return (after an
    equity reached zero) counts as 0, a backtest that stopped early keeps its last equity
    (returns of 0) for the bars it did not run."""
    r = np.asarray(values, dtype=np.float64).ravel()
    if r.size > n:
        raise ConfigError(f"cpcv: {what} has {r.size} returns for a group of {n} bars")
    r = np.where(np.isfinite(r), r, 0.0)
    return np.concatenate([r, np.zeros(n - r.size)])


def cpcv_stitch(plan: CpcvPlan, results: list[CpcvSplitResult], seeds: list[int],
                timestamps: np.ndarray, window: int) -> pd.DataFrame:
    """The CPCV ``oos_steps.csv``: every backtest path's test groups one after the other (in
    time order, each group from the split that tests it on that path), per seed the agent's
    equity (``agent_seed_<s>``, a multiple of the initial equity, each group starting where the
    previous one ended), the seeds' median (``agent_median``) and every baseline stitched the
    same way (its per-group returns from the first seed's splits: a baseline does not depend on
    the seed). One block of rows per path, ``path`` and ``group`` saying where a bar belongs;
    every path covers the same bars (the data's first ``window - 1`` bars are context only).
    Indexed by the bars' UTC open times.

    :param plan: the CPCV plan.
    :param results: every split × seed result (:func:`run_cpcv_split`).
    :param seeds: the seeds, in column order.
    :param timestamps: the Dataset's timestamps (int64 UTC ns), what the plan's rows index.
    :param window: the env's observation window.
    :raises ConfigError: a split × seed result is missing.
    """
    by = {(r.split, r.seed): r for r in results}
    missing = [(sp.index, s) for sp in plan.splits for s in seeds if (sp.index, s) not in by]
    if missing:
        raise ConfigError(f"cpcv: no result for (split, seed) {missing[:3]}")
    first = seeds[0]
    baselines = sorted({n for r in results if r.seed == first for n in r.baseline_returns})
    seed_cols = [f"agent_seed_{s}" for s in seeds]
    frames = []
    for p in range(plan.n_paths):
        chunks: dict[str, list[np.ndarray]] = {c: [] for c in [*seed_cols, *baselines]}
        stamps, groups = [], []
        for g, block in enumerate(plan.groups):
            split = int(plan.paths[g, p])
            start = max(block.start, window - 1)
            n = block.stop - start
            stamps.append(np.asarray(timestamps[start:block.stop], dtype=np.int64))
            groups.append(np.full(n, g))
            for s, col in zip(seeds, seed_cols, strict=True):
                chunks[col].append(_group_returns(by[(split, s)].group_returns[g], n,
                                                  f"split {split} seed {s} group {g}"))
            for name in baselines:
                chunks[name].append(_group_returns(by[(split, first)].baseline_returns[name][g],
                                                   n, f"{name} of split {split} group {g}"))
        cols: dict[str, np.ndarray] = {"path": np.full(sum(map(len, groups)), p),
                                       "group": np.concatenate(groups)}
        for col, parts in chunks.items():
            cols[col] = np.cumprod(1.0 + np.concatenate(parts))
        frame = pd.DataFrame(cols, index=np.concatenate(stamps))
        frame.insert(2 + len(seeds), "agent_median", frame[seed_cols].median(axis=1))
        frames.append(frame)
    frame = pd.concat(frames)
    frame.index = pd.DatetimeIndex(frame.index.to_numpy().astype("datetime64[ns]"), tz="UTC",
                                   name="timestamp")
    return frame


def cpcv_path_seed_table(statistics: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per backtest path and seed with :data:`~rltrade.evaluation.aggregate.
    SUMMARY_COLUMNS` (``fold`` is the path): the path's annualised Sharpe ratio and compounded
    return, buy-and-hold's and flat's returns on the same path (``NaN`` where undefined).

    :param statistics: per seed (``str``), its :func:`~rltrade.experiments.folds.
        cpcv_path_statistics` with :func:`cpcv_baseline_paths`.
    """

    def num(value: Any) -> float:
        return np.nan if value is None else float(value)

    return pd.DataFrame([{
        "fold": row["path"], "seed": int(seed), "sharpe": num(row["sharpe"]),
        "total_return": num(row["return"]),
        "buy_and_hold_return": num(row.get("buy_and_hold_return")),
        "flat_return": num(row.get("flat_return")),
    } for seed, st in statistics.items() for row in st["paths"]], columns=list(SUMMARY_COLUMNS))


def cpcv_statistics(statistics: dict[str, dict[str, Any]], oos: pd.DataFrame,
                    seeds: list[int], *, seed: int = 0) -> dict[str, Any]:
    """The CPCV ``statistics`` section of ``walkforward.json``, the rolling one's with the
    backtest paths in the place of the folds (:func:`summary_statistics` over
    :func:`cpcv_path_seed_table`): the IQM and stratified bootstrap 95 % interval of the
    paths' annualised Sharpe ratios and returns (seeds resampled within each path), the
    fractions of paths whose seeds' median return beats buy-and-hold and flat after costs
    (``fraction``; ``fraction_of_runs`` over path × seed), and Hansen's SPA test of every
    path × seed's per-period returns (``[T, paths × seeds]``, the ``agent_seed_<s>`` curves of
    :func:`cpcv_stitch`) against buy-and-hold on the same bars (every path covers the same
    bars, and buy-and-hold's returns are the same on each).

    :param statistics: per seed (``str``), its path statistics.
    :param oos: the stitched paths (:func:`cpcv_stitch`).
    :param seeds: the seeds.
    :param seed: seed of every bootstrap.
    :return: the summary (``folds`` are the paths, ``tasks: "paths"``), JSON-ready.
    """
    columns: dict[str, np.ndarray] = {}
    bench: list[np.ndarray] = []
    index = None
    for p, part in oos.groupby("path", sort=True):
        r = stitched_returns(part)
        index = r.index
        for s in seeds:
            columns[f"agent_seed_{s}_path_{p}"] = r[f"agent_seed_{s}"].to_numpy()
        if "buy_and_hold" in r.columns:
            bench.append(r["buy_and_hold"].to_numpy())
    returns = pd.DataFrame(columns, index=index)
    same = bool(bench) and all(b.shape == bench[0].shape and np.allclose(b, bench[0], rtol=0,
                                                                          atol=1e-12)
                               for b in bench)
    if same:
        returns["buy_and_hold"] = bench[0]
    out = summary_statistics(cpcv_path_seed_table(statistics), returns,
                             [c for c in returns.columns if c != "buy_and_hold"], seed=seed)
    if bench and not same:
        out["spa_skipped"] = "buy-and-hold's returns differ between the paths"
    out["tasks"] = "paths"
    out["sharpe_units"] = "annualised (each backtest path's per-bar Sharpe x sqrt(bars_per_year))"
    out["spa_returns"] = ("per-period returns of every path x seed against buy_and_hold on the "
                          "same bars")
    return out


@dataclass
class CpcvResult:
    """What a ``scheme: cpcv`` :func:`walk_forward` produced: its folder, the plan, every
    split × seed result (split, then seed order), per seed the backtest paths' Sharpe
    distribution (:func:`~rltrade.experiments.folds.cpcv_path_statistics`) and the stitched
    paths (:func:`cpcv_stitch`, what ``oos_steps.csv`` holds)."""

    path: Path
    plan: CpcvPlan
    results: list[CpcvSplitResult]
    statistics: dict[str, dict[str, Any]]
    wall_seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    oos: pd.DataFrame | None = None

    @property
    def report(self) -> dict[str, Any]:
        return json.loads((self.path / "walkforward.json").read_text())


def _walk_forward_cpcv(config: RunConfig, path: Path, ds: Dataset, workers: int | None,
                       runner: Executor, t0: float, t_data: float,
                       trials: TrialRegistry, experiment: str,
                       user_config: RunConfig) -> CpcvResult:
    """:func:`walk_forward` with ``scheme: cpcv``: every split trained once per seed
    (:func:`run_cpcv_split`), the test groups recombined into the ``φ`` backtest paths, and
    ``walkforward.json`` (its ``cpcv`` section: the splits, the paths, per seed every path's
    annualised Sharpe ratio and return, the baselines' path returns, and their distribution;
    its ``significance``; the top-level ``statistics`` of :func:`cpcv_statistics`),
    ``oos_steps.csv`` (:func:`cpcv_stitch`) and ``report.html``. Every split × seed is
    recorded as a trial of ``experiment`` (:func:`record_cpcv_trials`); ``significance`` is
    PSR and DSR (deflated by the experiment's trials, :func:`deflated_sharpe_fields`) of the
    per-period returns of the median path: the path whose annualised Sharpe ratio is the
    median over every seed's paths (the lower one of the two middle ones for an even count),
    and PBO over the experiment's configurations (:func:`pbo_fields`)."""
    plan = cpcv_walk_plan(config, ds)
    seeds = list(config.walkforward.seeds)
    trials.connect().close()  # an unreadable registry fails now, not after the training
    log.info("walk-forward {} (cpcv): {} splits x {} seeds, {} paths, purge {}, embargo {}, "
             "over {} rows", path.name, len(plan.splits), len(seeds), plan.n_paths, plan.purge,
             plan.embargo, len(ds))
    path.mkdir(parents=True)
    ds_dir = ds.save(path / "dataset")
    atomic_write_bytes(path / "config.yaml", config.to_yaml().encode())
    t_prep = time.perf_counter() - t0 - t_data
    ref: Dataset | Path = ds if isinstance(runner, SequentialExecutor) else ds_dir
    tasks = [(config, ref, plan, split.index, seed, path) for split in plan.splits
             for seed in seeds]
    t1 = time.perf_counter()
    results: list[CpcvSplitResult] = runner.map(run_cpcv_split, tasks)
    t_units = time.perf_counter() - t1
    t2 = time.perf_counter()
    record_cpcv_trials(trials, experiment, user_config, ds, plan, results)
    t_registry = time.perf_counter() - t2
    t2 = time.perf_counter()
    statistics: dict[str, dict[str, Any]] = {}
    bars_per_year = None
    for seed in seeds:
        mine = [r for r in results if r.seed == seed]
        returns = {(r.split, g): v for r in mine for g, v in r.group_returns.items()}
        per_year = {r.bars_per_year for r in mine if r.bars_per_year is not None}
        if len(per_year) != 1:
            raise ConfigError(f"cpcv: the splits' backtests disagree on bars_per_year "
                              f"({sorted(per_year)})")
        bars_per_year = per_year.pop()
        stats = cpcv_path_statistics(plan, returns, bars_per_year)
        cpcv_baseline_paths(plan, mine, stats)
        statistics[str(seed)] = stats
    t_paths = time.perf_counter() - t2
    t2 = time.perf_counter()
    oos = cpcv_stitch(plan, results, seeds, ds.timestamps, config.env.window)
    atomic_write_bytes(path / "oos_steps.csv", oos.to_csv().encode())
    t_stitch = time.perf_counter() - t2
    t2 = time.perf_counter()
    summary = cpcv_statistics(statistics, oos, seeds)
    significance = cpcv_significance(plan, results, statistics, trials, experiment,
                                     bars_per_year)
    t_statistics = time.perf_counter() - t2 + t_paths
    ts = ds.timestamps
    splits = [{"split": r.split, "seed": r.seed, "test_groups": list(r.test_groups),
               "run": str(Path(r.run).relative_to(path)),
               "tests": {str(g): t for g, t in r.group_tests.items()},
               "baselines": {str(g): t for g, t in r.baseline_tests.items()},
               "wall_seconds": r.wall_seconds} for r in results]
    timings = {"dataset": t_data, "prepare": t_prep, "units": t_units,
               "registry": t_registry, "stitch": t_stitch, "statistics": t_statistics,
               "report": 0.0, "total": 0.0}

    def write_json() -> None:
        atomic_write_json(path / "walkforward.json", {
            "format": "rltrade-walkforward-v1",
            "name": path.name,
            "created_at": utc_now(),
            "data": _data_section(config, ds),
            "seeds": seeds,
            "selection": "none: cpcv has no validation rows, each split's final model is "
                         "tested",
            "plan": plan.to_dict(ts),
            "cpcv": {"splits": splits, "n_paths": plan.n_paths, "paths": plan.paths.tolist(),
                     "seeds": statistics, "significance": significance},
            "oos_bars": int((oos["path"] == 0).sum()),
            "statistics": summary,
            "workers": workers,
            "timings": timings,
        })

    write_json()
    from rltrade.experiments.report import write_cpcv_report

    t3 = time.perf_counter()
    write_cpcv_report(path)
    timings["report"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0
    write_json()
    log.info("walk-forward {} (cpcv) done in {:.1f} s: {}", path.name, timings["total"], path)
    return CpcvResult(path, plan, results, statistics, timings["total"], timings, oos)
