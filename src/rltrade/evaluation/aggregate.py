"""Across seeds and folds: interquartile mean, stratified bootstrap intervals.

One fold with one seed is one draw of a noisy number. The functions here aggregate a score matrix
``[runs, tasks]`` (for rltrade: ``[seeds, folds]``) the way rliable does (Agarwal, Schwarzer,
Castro, Courville, Bellemare 2021, "Deep Reinforcement Learning at the Edge of the Statistical
Precipice").

Definitions
-----------
Interquartile mean (:func:`iqm`)
    The mean of the middle 50 % of all scores pooled: sort the ``n`` values, drop
    ``floor(0.25 n)`` from each end, average the rest. This is
    ``scipy.stats.trim_mean(scores, 0.25, axis=None)``, which rliable uses; robust to a
    seed that diverged, far less noisy than the median.

Stratified bootstrap (:func:`stratified_bootstrap_ci`)
    Each replicate resamples the runs **with replacement independently within each task**
    (column): a fold always contributes as many values as it has, only which of its seeds
    represent it varies. The statistic of the pooled replicate is recorded; the interval is the
    **percentile** interval (the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
    replicates, linear interpolation), rliable's default. Replicates come from a seeded
    :class:`numpy.random.Generator`, so an interval is reproducible bit for bit.

Beating a baseline (:func:`fraction_beating`)
    Per fold and seed, the agent beats a baseline when its out-of-sample return (after costs)
    is **strictly** greater than the baseline's on the same test window (a tie does not beat).
    Per fold, the agent's **median over seeds** is compared with the baseline (its median over
    seeds too, when the baseline has one value per seed; buy-and-hold and flat are the same for
    every seed). ``fraction`` is the share of folds whose median beats the baseline;
    ``fraction_of_runs`` the share of all fold × seed runs that do. A fold whose agent returns or
    baseline return are all undefined is left out of ``fraction`` and counted in
    ``folds_undefined``.

Hansen's SPA test (:func:`spa_test`)
    Hansen (2005), "A Test for Superior Predictive Ability", as implemented by
    :class:`arch.bootstrap.SPA` (the ``stats`` extra: ``pip install 'rltrade[stats]'``). Losses
    are negative per-period returns: the benchmark's losses are ``-benchmark_returns``, each
    model's ``-agent_returns[:, k]`` (one column per seed or agent), so the loss differential is
    ``agent - benchmark`` per period. The null hypothesis is that **no** agent has a higher
    expected per-period return than the benchmark; a small p-value rejects it. Three p-values:
    ``consistent`` (Hansen's, the one to read), ``lower`` and ``upper`` (bounds from never / always
    re-centring models that look worse than the benchmark; ``upper`` is White's Reality Check).
    The bootstrap is the **stationary bootstrap** (Politis & Romano 1994), seeded. Its mean block
    length defaults to the Politis & White (2004; Patton, Politis & White 2009) optimal stationary
    block length of the loss differential (the largest over its columns, rounded up, at least 1:
    1 means the differential shows no serial dependence; constant columns are skipped), from
    :func:`arch.bootstrap.optimal_block_length`; arch's own default would be ``sqrt(T)``.
    arch (8.0) forms the p-values from the maximum *mean* differential, not studentized; the
    differential's long-run variance enters only the consistent p-value's re-centring rule.
    When every column of the differential is constant (the agent *is* the benchmark, plus a
    constant), the bootstrap has nothing to resample: the p-values are 0 when the constant is
    positive and 1 otherwise, and ``degenerate`` says so.

The summary of a walk-forward (:func:`summarize_seeds_and_folds`)
    From a tidy table, one row per fold and seed (:data:`SUMMARY_COLUMNS`), the IQM and
    stratified bootstrap interval of the out-of-sample Sharpe ratio and total return over the
    ``[seeds, folds]`` matrix, the fractions of folds beating buy-and-hold and flat, and, when
    the stitched per-period returns are given, the SPA test against buy-and-hold. The bootstraps
    of the Sharpe ratio, the return and the SPA test draw from independent streams spawned from
    one seed (:class:`numpy.random.SeedSequence`), so the result is reproducible.

Undefined scores
    A non-finite score (``NaN``: a Sharpe ratio of a flat equity curve is undefined) is left
    out of the pool and of its task's resampling; the other runs of the task still count. A task
    with no finite score contributes nothing. With no finite score at all, the statistic and the
    interval are ``NaN``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from rltrade.errors import ConfigError, DataError
from rltrade.evaluation.metrics import json_ready

#: The fewest stitched periods :func:`spa_test` accepts: the block length and the long-run
#: variance need a sample, and the p-values of a shorter one mean little.
MIN_SPA_OBSERVATIONS = 30

__all__ = [
    "MIN_SPA_OBSERVATIONS",
    "SUMMARY_COLUMNS",
    "Interval",
    "fraction_beating",
    "iqm",
    "score_matrix",
    "spa_test",
    "stratified_bootstrap_ci",
    "summarize_seeds_and_folds",
]

#: The columns :func:`summarize_seeds_and_folds` reads: one row per fold and seed; returns are
#: fractions after costs on the fold's test window, ``sharpe`` the annualised Sharpe ratio
#: (``metrics["performance"]["sharpe"]``; ``NaN``/``None`` where undefined).
SUMMARY_COLUMNS = ("fold", "seed", "sharpe", "total_return", "buy_and_hold_return", "flat_return")

#: A statistic over pooled scores: ``f(x, axis=...)`` like :func:`numpy.mean`, :func:`iqm`.
Statistic = Callable[..., Any]


def iqm(scores: Any, axis: int | None = None) -> Any:
    """Interquartile mean: the mean of the middle 50 % of the scores (25 % trimmed each side).

    Equal to ``scipy.stats.trim_mean(scores, 0.25, axis=axis)``: ``floor(0.25 n)`` values are
    dropped from each end of the sorted sample of size ``n``.

    :param scores: the scores, any shape.
    :param axis: the axis to reduce; ``None`` pools all values (rliable's IQM of a
        ``[runs, tasks]`` matrix).
    :return: a float for ``axis=None``, else an array without ``axis``; ``NaN`` where the
        sample holds a ``NaN`` (leave undefined scores out first, as
        :func:`stratified_bootstrap_ci` does).
    :raises DataError: for an empty sample.
    """
    x = np.asarray(scores, dtype=np.float64)
    if axis is None:
        x = x.reshape(-1)
        axis = 0
    n = x.shape[axis]
    if n == 0:
        raise DataError("the interquartile mean of an empty sample is undefined")
    cut = int(0.25 * n)
    middle = np.sort(x, axis=axis).take(np.arange(cut, n - cut), axis=axis)
    result = middle.mean(axis=axis)
    # sorting moves NaN to the end, where trimming could silently drop it: propagate it instead
    result = np.where(np.isnan(x).any(axis=axis), np.nan, result)
    return float(result) if np.ndim(result) == 0 else result


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap confidence interval.

    :param point: the statistic on the observed scores.
    :param lower: the lower end of the interval.
    :param upper: the upper end of the interval.
    :param level: the confidence level (0.95).
    :param reps: the bootstrap replicates.
    :param n: the finite scores used.
    :param n_undefined: the non-finite scores left out.
    :param method: how the interval was formed (``"percentile"``).
    """

    point: float
    lower: float
    upper: float
    level: float
    reps: int
    n: int
    n_undefined: int
    method: str = "percentile"

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


def score_matrix(scores: Any) -> np.ndarray:
    """``scores`` as a float64 ``[runs, tasks]`` matrix; a 1-D input is one run over tasks.

    :param scores: a 2-D array-like ``[runs, tasks]`` or a 1-D one (one run).
    :return: the matrix.
    :raises DataError: for another shape or an empty matrix.
    """
    m = np.asarray(scores, dtype=np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.size == 0:
        raise DataError(
            f"scores must be a non-empty [runs, tasks] matrix (seeds × folds), got shape "
            f"{np.shape(scores)}"
        )
    return m


def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, int | np.integer):
        return np.random.default_rng(0 if rng is None else int(rng))
    raise ConfigError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def stratified_bootstrap_ci(
    scores: Any,
    statistic: Statistic = iqm,
    reps: int = 2000,
    level: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> Interval:
    """A statistic of a ``[runs, tasks]`` score matrix and its stratified bootstrap interval.

    Each replicate draws, for every task (column) separately, as many runs as that task has
    finite scores, with replacement, from that task's runs; the statistic is taken over the
    pooled draws. The interval is the percentile interval of the replicates (rliable's default).

    :param scores: ``[runs, tasks]`` (seeds × folds); 1-D means one run. Non-finite values are
        left out (see the module docstring).
    :param statistic: ``f(x, axis=...)`` over pooled scores, vectorised along ``axis`` like
        :func:`iqm`, :func:`numpy.mean`, :func:`numpy.median`.
    :param reps: bootstrap replicates (rliable's examples use 2,000 to 50,000).
    :param level: the confidence level, in (0, 1).
    :param rng: a :class:`numpy.random.Generator` or an int seed (``None`` is seed 0).
    :return: the :class:`Interval`.
    :raises ConfigError: for ``reps < 1`` or a level outside (0, 1).
    :raises DataError: for a score matrix of another shape.
    """
    if int(reps) != reps or reps < 1:
        raise ConfigError(f"reps must be a positive integer, got {reps!r}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must lie strictly between 0 and 1, got {level!r}")
    m = score_matrix(scores)
    gen = _generator(rng)
    finite = np.isfinite(m)
    columns = [m[finite[:, j], j] for j in range(m.shape[1])]
    columns = [c for c in columns if c.size]
    n = int(finite.sum())
    n_undefined = int(m.size - n)
    if n == 0:
        nan = math.nan
        return Interval(nan, nan, nan, float(level), int(reps), 0, n_undefined)
    point = float(statistic(np.concatenate(columns), axis=0))
    draws = np.concatenate(
        [c[gen.integers(0, c.size, size=(int(reps), c.size))] for c in columns], axis=1
    )
    replicates = np.asarray(statistic(draws, axis=1), dtype=np.float64)
    alpha = (1.0 - level) / 2.0
    lower, upper = np.quantile(replicates, [alpha, 1.0 - alpha])
    return Interval(point, float(lower), float(upper), float(level), int(reps), n, n_undefined)


def _baseline_matrix(baseline: Any, agent: np.ndarray) -> np.ndarray:
    b = np.asarray(baseline, dtype=np.float64)
    if b.ndim == 1 and b.shape[0] == agent.shape[1]:
        b = np.broadcast_to(b[None, :], agent.shape)
    if b.shape != agent.shape:
        raise DataError(
            f"the baseline returns have shape {np.shape(baseline)}, the agent's {agent.shape} "
            f"(seeds × folds): give the baseline one return per fold, or one per seed and fold"
        )
    return b


def fraction_beating(agent_returns_by_fold: Any, baseline_returns_by_fold: Any) -> dict[str, Any]:
    """How often the agent's out-of-sample return beats a baseline's, per fold and seed.

    :param agent_returns_by_fold: the agent's test-window returns after costs, ``[seeds, folds]``
        (1-D: one seed); ``NaN`` marks a missing or undefined run.
    :param baseline_returns_by_fold: the baseline's returns on the same test windows, ``[folds]``
        or ``[seeds, folds]``.
    :return: ``fraction`` (folds whose median-over-seeds return beats the baseline, over the
        folds compared), ``folds_beating``, ``folds``, ``folds_undefined``, ``per_fold`` (a list
        of bool, ``None`` where undefined), ``fraction_of_runs``, ``runs_beating``, ``runs``,
        ``per_run`` (``[seeds][folds]`` bool or ``None``). Fractions are ``NaN`` when nothing
        could be compared.
    :raises DataError: when the shapes do not match.
    """
    agent = score_matrix(agent_returns_by_fold)
    base = _baseline_matrix(baseline_returns_by_fold, agent)
    run_defined = np.isfinite(agent) & np.isfinite(base)
    run_beats = run_defined & (np.where(run_defined, agent, 0.0) > np.where(run_defined, base, 0.0))
    per_run = [
        [bool(run_beats[i, j]) if run_defined[i, j] else None for j in range(agent.shape[1])]
        for i in range(agent.shape[0])
    ]
    per_fold: list[bool | None] = []
    for j in range(agent.shape[1]):
        a = agent[:, j][np.isfinite(agent[:, j])]
        b = base[:, j][np.isfinite(base[:, j])]
        per_fold.append(bool(np.median(a) > np.median(b)) if a.size and b.size else None)
    compared = [v for v in per_fold if v is not None]
    runs = int(run_defined.sum())
    return {
        "fraction": sum(compared) / len(compared) if compared else math.nan,
        "folds_beating": int(sum(compared)),
        "folds": len(compared),
        "folds_undefined": len(per_fold) - len(compared),
        "per_fold": per_fold,
        "fraction_of_runs": int(run_beats.sum()) / runs if runs else math.nan,
        "runs_beating": int(run_beats.sum()),
        "runs": runs,
        "per_run": per_run,
    }


def _returns_matrix(values: Any, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise DataError(
            f"{name} must be per-period returns [periods] or [periods, models], got shape "
            f"{np.shape(values)}"
        )
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise DataError(
            f"{name} holds {bad} non-finite value(s): the SPA test needs a return for every "
            f"period (drop undefined periods from both series first)"
        )
    return x


def spa_test(
    agent_returns: Any,
    benchmark_returns: Any,
    reps: int = 1000,
    block_size: int | None = None,
    seed: int | np.random.Generator = 0,
) -> dict[str, Any]:
    """Hansen's test of superior predictive ability of the agent(s) over a benchmark.

    Run it on the stitched out-of-sample per-period returns, the benchmark (buy-and-hold) on the
    same periods. See the module docstring for the losses, the p-values and the block length.

    :param agent_returns: per-period returns after costs, ``[T]`` or ``[T, k]`` (one column per
        seed or agent: the test then asks whether *any* of them beats the benchmark, accounting
        for having looked at ``k``).
    :param benchmark_returns: the benchmark's per-period returns on the same ``T`` periods.
    :param reps: bootstrap replicates.
    :param block_size: mean block length of the stationary bootstrap, in periods; ``None``
        chooses it from the data (Politis & White).
    :param seed: an int seed or a :class:`numpy.random.Generator` for the bootstrap.
    :return: ``{"consistent", "lower", "upper"}`` p-values, ``block_size``,
        ``block_size_source`` (``"politis_white"`` or ``"given"``), ``bootstrap``
        (``"stationary"``), ``reps``, ``n_observations``, ``n_models``,
        ``mean_excess_return`` (per period, per model: agent minus benchmark), ``degenerate``.
    :raises DataError: for mismatched lengths, fewer than :data:`MIN_SPA_OBSERVATIONS` periods
        or non-finite returns.
    :raises ConfigError: for ``reps < 1`` or ``block_size < 1``.
    :raises ImportError: without the ``arch`` package.
    """
    agent = _returns_matrix(agent_returns, "agent_returns")
    bench = np.asarray(benchmark_returns, dtype=np.float64)
    if bench.ndim == 2 and bench.shape[1] == 1:
        bench = bench[:, 0]
    if bench.ndim != 1:
        raise DataError(
            f"benchmark_returns must be one series of per-period returns, got shape "
            f"{np.shape(benchmark_returns)}"
        )
    bench = _returns_matrix(bench, "benchmark_returns")[:, 0]
    if agent.shape[0] != bench.shape[0]:
        raise DataError(
            f"agent_returns has {agent.shape[0]} periods, benchmark_returns {bench.shape[0]}: "
            f"the SPA test compares the same periods; align both on the stitched test windows"
        )
    t = agent.shape[0]
    if t < MIN_SPA_OBSERVATIONS:
        raise DataError(
            f"the SPA test needs at least {MIN_SPA_OBSERVATIONS} periods of out-of-sample "
            f"returns, got {t}"
        )
    if int(reps) != reps or reps < 1:
        raise ConfigError(f"reps must be a positive integer, got {reps!r}")
    if block_size is not None and (int(block_size) != block_size or block_size < 1):
        raise ConfigError(f"block_size must be a positive integer or None, got {block_size!r}")
    try:
        from arch.bootstrap import SPA, optimal_block_length
    except ImportError as exc:
        raise ImportError(
            "Hansen's SPA test needs arch: pip install 'rltrade[stats]' (or arch>=7.0)"
        ) from exc

    diff = agent - bench[:, None]
    excess = diff.mean(axis=0)
    result: dict[str, Any] = {
        "bootstrap": "stationary",
        "reps": int(reps),
        "n_observations": int(t),
        "n_models": int(agent.shape[1]),
        "mean_excess_return": excess.tolist(),
        "degenerate": False,
    }
    constant = np.ptp(diff, axis=0) <= 1e-12 * np.max(np.abs(diff), axis=0)
    if constant.all():
        p = 0.0 if np.max(excess) > 0 else 1.0
        result.update(
            consistent=p, lower=p, upper=p, degenerate=True,
            block_size=None if block_size is None else int(block_size),
            block_size_source="given" if block_size is not None else None,
        )
        return result
    if block_size is None:
        # a constant column has no autocorrelation to measure (and would divide by zero)
        lengths = optimal_block_length(diff[:, ~constant])["stationary"].to_numpy()
        chosen = max(1, math.ceil(float(np.max(lengths))))
        source = "politis_white"
    else:
        chosen, source = int(block_size), "given"
    spa = SPA(-bench, -agent, block_size=chosen, reps=int(reps), bootstrap="stationary",
              seed=_generator(seed))
    spa.compute()
    pvalues = spa.pvalues
    result.update(
        consistent=float(pvalues["consistent"]),
        lower=float(pvalues["lower"]),
        upper=float(pvalues["upper"]),
        block_size=chosen,
        block_size_source=source,
    )
    return result


def _pivot(table: pd.DataFrame, column: str, seeds: list[Any], folds: list[Any]) -> np.ndarray:
    """``table[column]`` as a ``[seeds, folds]`` matrix, ``NaN`` where a run is missing."""
    try:
        values = table[column].astype("float64")
    except (TypeError, ValueError) as exc:
        raise DataError(f"metrics_table column {column!r} must be numeric: {exc}") from exc
    frame = pd.DataFrame({"seed": table["seed"], "fold": table["fold"], "v": values})
    wide = frame.pivot(index="seed", columns="fold", values="v")
    return wide.reindex(index=seeds, columns=folds).to_numpy(dtype=np.float64)


def _interval_entry(interval: Interval) -> dict[str, Any]:
    entry = interval.to_dict()
    return {
        "iqm": entry.pop("point"),
        "ci_lower": entry.pop("lower"),
        "ci_upper": entry.pop("upper"),
        **entry,
    }


def summarize_seeds_and_folds(
    metrics_table: pd.DataFrame,
    *,
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    agent_returns: Any = None,
    benchmark_returns: Any = None,
    spa_reps: int = 1000,
    block_size: int | None = None,
) -> dict[str, Any]:
    """Aggregate statistics of an agent over walk-forward folds and seeds, JSON-ready.

    :param metrics_table: one row per fold and seed with the columns :data:`SUMMARY_COLUMNS`
        (other columns are ignored): ``fold`` and ``seed`` identify the run, ``sharpe`` and
        ``total_return`` are the agent's out-of-sample metrics after costs on the fold's test
        window, ``buy_and_hold_return`` and ``flat_return`` the baselines' on the same window.
        Undefined values are ``None``/``NaN``; a missing (fold, seed) row counts as undefined.
    :param reps: bootstrap replicates of the intervals.
    :param level: confidence level of the intervals.
    :param seed: seed of every bootstrap here.
    :param agent_returns: the stitched out-of-sample per-period returns, ``[T]`` (e.g. the
        seeds' median) or ``[T, seeds]``; with ``benchmark_returns``, adds the SPA test.
    :param benchmark_returns: buy-and-hold's per-period returns on the same ``T`` periods.
    :param spa_reps: bootstrap replicates of the SPA test.
    :param block_size: the SPA test's mean block length (``None``: chosen from the data).
    :return: a dict that ``json.dumps(..., allow_nan=False)`` accepts: ``folds``, ``seeds``
        (their ids, sorted; every per-fold list follows ``folds``), ``n_folds``, ``n_seeds``,
        ``sharpe`` and ``total_return`` (each ``iqm``, ``ci_lower``, ``ci_upper``, ``level``,
        ``reps``, ``n``, ``n_undefined``, ``method``), ``beats_buy_and_hold`` and ``beats_flat``
        (:func:`fraction_beating`), ``spa`` (:func:`spa_test`, or ``None``), ``undefined``
        (dotted paths of the values that were not finite, now ``None``).
    :raises DataError: for missing columns, duplicated (fold, seed) rows, non-numeric values, an
        empty table, or only one of the two return series.
    """
    missing = [c for c in SUMMARY_COLUMNS if c not in metrics_table.columns]
    if missing:
        raise DataError(
            f"metrics_table lacks the column(s) {missing}; it needs one row per fold and seed "
            f"with {list(SUMMARY_COLUMNS)}"
        )
    if metrics_table.empty:
        raise DataError("metrics_table has no rows: no fold was evaluated")
    duplicated = metrics_table.duplicated(subset=["fold", "seed"])
    if duplicated.any():
        first = metrics_table.loc[duplicated, ["fold", "seed"]].iloc[0].tolist()
        raise DataError(
            f"metrics_table has {int(duplicated.sum())} duplicated (fold, seed) row(s), first "
            f"(fold, seed) = {tuple(first)}: give one row per run"
        )
    if (agent_returns is None) != (benchmark_returns is None):
        raise DataError(
            "the SPA test needs both agent_returns and benchmark_returns (or neither)"
        )
    folds = sorted(metrics_table["fold"].unique().tolist())
    seeds = sorted(metrics_table["seed"].unique().tolist())
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    sharpe = _pivot(metrics_table, "sharpe", seeds, folds)
    total = _pivot(metrics_table, "total_return", seeds, folds)
    summary: dict[str, Any] = {
        "folds": folds,
        "seeds": seeds,
        "n_folds": len(folds),
        "n_seeds": len(seeds),
        "sharpe": _interval_entry(
            stratified_bootstrap_ci(sharpe, iqm, reps=reps, level=level, rng=streams[0])
        ),
        "total_return": _interval_entry(
            stratified_bootstrap_ci(total, iqm, reps=reps, level=level, rng=streams[1])
        ),
        "beats_buy_and_hold": fraction_beating(
            total, _pivot(metrics_table, "buy_and_hold_return", seeds, folds)
        ),
        "beats_flat": fraction_beating(total, _pivot(metrics_table, "flat_return", seeds, folds)),
        "spa": None,
    }
    if agent_returns is not None:
        summary["spa"] = spa_test(agent_returns, benchmark_returns, reps=spa_reps,
                                  block_size=block_size, seed=streams[2])
    undefined: list[str] = []
    ready = json_ready(summary, "", undefined)
    ready["undefined"] = undefined
    return ready
