"""Judging trained runs: backtest a run on new data, compare runs and baselines, report.

* :func:`load_policy` - a run's trained model as a fast policy (numpy forward pass when the
  network allows it, proven equal to the torch one in the tests).
* :func:`backtest_run` - ``rltrade backtest``: check that the data fits the model (refusing
  with a :class:`~rltrade.errors.CompatibilityError` that names every mismatch), backtest it,
  write plots and ``report.html``, append the backtest to the run's ``metadata.json`` (flagged
  when its range overlaps training).
* :func:`judge_run` - one run backtested under its own settings (env config, costs, risk
  manager, normalizer, ``evaluation`` section): what ``backtest`` and ``compare`` both call.
* :func:`compare` - ``rltrade compare``: every run over the same bars, each under its own
  settings (its row equals its own ``rltrade backtest``), the baselines under one named run's
  settings, one table (console, markdown, CSV) and one equity chart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from rltrade.data.loaders import load_bars
from rltrade.data.store import atomic_write_bytes
from rltrade.envs.config import EnvConfig
from rltrade.errors import CompatibilityError, ConfigError, DataError
from rltrade.evaluation.backtest import BENCHMARK_COLUMN, BacktestResult, run_backtest, stop_text
from rltrade.evaluation.ranges import overlaps, range_text, traded_range, with_context
from rltrade.features.dataset import Dataset, build_dataset
from rltrade.features.normalize import Normalizer
from rltrade.logs import PhaseTimer, progress_bar, run_log_files
from rltrade.runs import Run

__all__ = ["COMPARISON_COLUMNS", "Comparison", "backtest_run", "check_overlap", "compare",
           "compare_baselines", "comparison_row", "judge_run", "load_policy", "run_dataset",
           "run_label", "training_range"]

log = logger.bind(component="backtest")

#: the comparison table's columns
COMPARISON_COLUMNS = ("name", "kind", "judged_under", "total_return", "sharpe", "max_drawdown",
                      "win_rate", "profit_factor", "trades", "psr", "dsr", "final_equity",
                      "bars_run", "bars_requested", "end_time", "stopped_early", "stop_reason")


def load_policy(run: Run, which: str = "final", fast: bool = True) -> Any:
    """The run's model (``final``, ``best`` or ``last`` checkpoint) as a policy.

    With ``fast`` the actor is converted to :class:`~rltrade.agents.NumpyMlpPolicy` when its
    network is a plain MLP (same actions, no torch in the loop); otherwise the SB3 model.
    """
    from rltrade.agents.algorithms import load_model
    from rltrade.agents.policy import NumpyMlpPolicy

    meta = run.metadata
    model = load_model(run.model_dir(which), run.config, int(meta["env_spec"]["n_market"]))
    if fast:
        try:
            return NumpyMlpPolicy.from_sb3(model)
        except ConfigError:
            pass
    return model


def run_dataset(run: Run, source: str | None = None, start: str | None = None,
                end: str | None = None) -> Dataset:
    """The bars of ``source`` (default: the run's data source) featurised with the run's spec;
    ``start`` keeps ``window - 1`` earlier bars as context so the first decision is at
    ``start`` (:func:`~rltrade.evaluation.ranges.with_context`)."""
    config = run.config
    dc = config.data
    src = source or dc.source
    bars = load_bars(src, timeframe=dc.timeframe, policy=dc.policy, symbol=dc.symbol,
                     end=end, calendar=dc.calendar)
    try:
        dataset = build_dataset(bars, config.feature_spec, timeframe=dc.timeframe,
                                symbol=dc.symbol)
    except DataError as exc:
        raise CompatibilityError(f"{src} cannot give the features model {run.name} was trained "
                                 f"on: {exc}") from exc
    if start is not None:
        dataset = with_context(dataset, start, None, config.env.window, what=src)
    return dataset


def training_range(run: Run) -> tuple[str, str] | None:
    """The first and last bar the run trained on (ISO, from ``metadata.json``)."""
    rng = run.metadata.get("training", {}).get("range") or {}
    if not rng.get("start") or not rng.get("end"):
        return None
    return str(rng["start"]), str(rng["end"])


def check_overlap(run: Run, dataset: Dataset, allow_overlap: bool = False) -> bool:
    """Whether a backtest of ``dataset`` trades bars the run was trained on.

    :raises ConfigError: when it does and ``allow_overlap`` is not set (an in-sample backtest
        is refused unless asked for, as ``rltrade train`` does).
    """
    traded = traded_range(dataset, run.config.env.window)
    trained = training_range(run)
    overlap = overlaps(traded, trained)
    if overlap and not allow_overlap:
        raise ConfigError(
            f"the backtest range ({range_text(traded)}) overlaps the training range of run "
            f"{run.name} ({range_text(trained)}): an in-sample backtest; start after the "
            f"training range (--start), or pass --allow-overlap (the backtest is then marked "
            f"in-sample)"
        )
    return overlap


def run_label(run: Run, model: str = "final") -> str:
    """The name a run's backtest goes by (summary, metrics, report title, comparison row): the
    run's name, with the model when it is not the final one."""
    return run.name if model == "final" else f"{run.name} ({model})"


def judge_run(run: Run, dataset: Dataset, *, model: str = "final",
              out_dir: str | Path | None = None, force_close: bool = False,
              state_debug: bool = False, bars_per_year: float | None = None,
              equity_floor: bool | None = None) -> BacktestResult:
    """Backtest a run under its own settings: its env config (action scheme, costs, engine,
    risk manager, window), its normalizer and its ``evaluation`` section. ``rltrade backtest``
    and ``rltrade compare`` both call this, so a run's row in a comparison is its backtest.

    :param run: the trained run.
    :param dataset: featurised with the run's spec (checked: :meth:`Run.check_compatible`).
    :param model: ``final``, ``best`` or ``last``.
    :param out_dir: write the backtest's files there (``None``: nothing written).
    :param force_close: close the open position at the last bar.
    :param state_debug: also record the observations.
    :param bars_per_year: annualisation override; default the run's
        ``evaluation.bars_per_year``.
    :param equity_floor: stop at the env's equity floor; default the run's
        ``evaluation.equity_floor`` (off).
    """
    config = run.config
    ev = config.evaluation
    run.check_compatible(dataset)
    return run_backtest(
        load_policy(run, model), dataset, config.env, normalizer=run.normalizer(),
        out_dir=out_dir, force_close=force_close, state_debug=state_debug,
        name=run_label(run, model),
        bars_per_year=ev.bars_per_year if bars_per_year is None else bars_per_year,
        equity_floor=ev.equity_floor if equity_floor is None else equity_floor)


def backtest_run(run: Run | str | Path, dataset: Dataset | None = None, *,
                 source: str | None = None, start: str | None = None, end: str | None = None,
                 model: str = "final", force_close: bool = False, baselines: bool = True,
                 report: bool = True, state_debug: bool = False, allow_overlap: bool = False,
                 bars_per_year: float | None = None,
                 equity_floor: bool | None = None,
                 timings: PhaseTimer | None = None) -> BacktestResult:
    """Backtest a trained run on ``dataset`` (or on ``source`` between ``start`` and ``end``).

    Compatibility is checked first (feature set and order, strategies, turbulence / VIX flags,
    spec hash, observation shape, normalizer), then overlap with training (refused unless
    ``allow_overlap``). Writes ``runs/NAME/backtests/bt_<time>/`` with steps, trades, summary,
    metrics, ``plots/`` and ``report.html`` (with the baselines' comparison when
    ``baselines``, also returned as ``result.comparison``), and appends the backtest to
    ``metadata.json``.

    :param allow_overlap: accept a range that overlaps training (recorded, marked in-sample).
    :param bars_per_year: annualisation override (default the run's
        ``evaluation.bars_per_year``).
    :param equity_floor: stop at the env's equity floor (default the run's
        ``evaluation.equity_floor``: off).
    :param timings: add this backtest's phases (``data`` when it loads the bars, ``backtest``,
        ``report``) to a run's timer; the backtest's own entry in ``metadata.json`` records them
        as ``phases`` either way.
    :raises CompatibilityError: the data does not fit the model.
    :raises ConfigError: the range overlaps training and ``allow_overlap`` is not set.
    """
    run = run if isinstance(run, Run) else Run.open(run)
    config = run.config
    own = PhaseTimer()
    with run_log_files(run.path / "logs"):
        if dataset is None:
            with own.phase("data"), progress_bar("data and features"):
                dataset = run_dataset(run, source, start, end)
        run.check_compatible(dataset)
        overlap = check_overlap(run, dataset, allow_overlap)
        log.info("backtest of {} ({}) on {} rows {} .. {}", run.name, model, len(dataset),
                 dataset.index[0], dataset.index[-1])
        floor = config.evaluation.equity_floor if equity_floor is None else equity_floor
        equity = None
        with own.phase("backtest"), progress_bar(f"backtest ({len(dataset):,} bars"
                                                  f"{', baselines' if baselines else ''})"):
            result = judge_run(run, dataset, model=model, out_dir=run.path / "backtests",
                               force_close=force_close, state_debug=state_debug,
                               bars_per_year=bars_per_year, equity_floor=equity_floor)
            if baselines:
                result.comparison, equity = compare_baselines(
                    dataset, config.env, run.normalizer(),
                    agent=(result.summary["name"], result),
                    bars_per_year=_bars_per_year(run, bars_per_year),
                    equity_floor=floor, judged_under=run.name,
                    params=config.baselines.params())
        if report and result.path is not None:
            with own.phase("report"):
                write_backtest_report(result, run=run, comparison=result.comparison,
                                      comparison_equity=equity, overlap=overlap)
        if timings is not None:
            for name, seconds in own.seconds.items():
                timings.seconds[name] = timings.seconds.get(name, 0.0) + seconds
        run.append_backtest(_metadata_entry(run, dataset, result, model=model,
                                            source=source or config.data.source,
                                            overlap=overlap, allow_overlap=allow_overlap,
                                            force_close=force_close, phases=own.to_dict()))
        s = result.summary
        if overlap:
            log.warning("backtest range overlaps the training range: in-sample, allowed by "
                        "--allow-overlap and marked")
        if s.get("stopped_early"):
            log.warning("backtest {}: {}", result.path.name if result.path else s["name"],
                        stop_text(s))
        log.info("backtest {}: return {:+.2%}, final equity {:,.2f}",
                 result.path.name if result.path else None,
                 s.get("total_return", float("nan")), s.get("final_equity", float("nan")))
    return result


def _bars_per_year(run: Run, override: float | None) -> float | None:
    return run.config.evaluation.bars_per_year if override is None else override


def _metadata_entry(run: Run, dataset: Dataset, result: BacktestResult, *, model: str,
                    source: str, overlap: bool, allow_overlap: bool,
                    force_close: bool, phases: dict[str, Any] | None = None) -> dict[str, Any]:
    """The backtest's entry in the run's ``metadata.json``."""
    s = result.summary
    m = result.metrics or {}
    return {
        "id": result.path.name if result.path else None,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": model,
        "data": {"source": source, "fingerprint": dataset.fingerprint,
                 "start": str(dataset.index[run.config.env.window - 1]),
                 "end": str(dataset.index[-1]), "bars": len(dataset)},
        "overlaps_training": overlap,
        "allow_overlap": allow_overlap,
        "force_close": force_close,
        "phases": phases,
        "bars_requested": s.get("bars_requested"),
        "bars_run": s.get("bars_run"),
        "end_time": s.get("end_time"),
        "stopped_early": s.get("stopped_early"),
        "stop_reason": s.get("stop_reason"),
        "total_return": s.get("total_return"),
        "final_equity": s.get("final_equity"),
        "sharpe": (m.get("performance") or {}).get("sharpe"),
        "bars_per_year": (m.get("run") or {}).get("bars_per_year"),
        "bars_per_year_source": (m.get("run") or {}).get("bars_per_year_source"),
        "path": str(result.path.relative_to(run.path)) if result.path else None,
    }


def comparison_row(name: str, kind: str, result: BacktestResult,
                   judged_under: str | None = None) -> dict[str, Any]:
    """One row of the comparison table from a backtest.

    :param judged_under: the run whose settings (env config: costs, engine, risk) the backtest
        ran under; default ``name``.
    """
    m = result.metrics or {}
    perf = m.get("performance") or {}
    trades = m.get("trades") or {}
    sig = m.get("significance") or {}
    s = result.summary
    return {
        "name": name,
        "kind": kind,
        "judged_under": judged_under or name,
        "total_return": perf.get("total_return"),
        "sharpe": perf.get("sharpe"),
        "max_drawdown": perf.get("max_drawdown"),
        "win_rate": trades.get("win_rate"),
        "profit_factor": trades.get("profit_factor"),
        "trades": trades.get("count", 0),
        "psr": sig.get("psr"),
        "dsr": sig.get("dsr"),
        "final_equity": s.get("final_equity"),
        "bars_run": s.get("bars_run"),
        "bars_requested": s.get("bars_requested"),
        "end_time": s.get("end_time"),
        "stopped_early": s.get("stopped_early"),
        "stop_reason": s.get("stop_reason"),
    }


def compare_baselines(dataset: Dataset, env_config: EnvConfig, normalizer: Normalizer | None,
                      names: list[str] | None = None,
                      agent: tuple[str, BacktestResult] | None = None, *,
                      bars_per_year: float | None = None, equity_floor: bool = False,
                      judged_under: str | None = None,
                      params: dict[str, dict[str, Any]] | None = None,
                      ) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """Backtest the baselines (default: all of :func:`~rltrade.agents.baseline_names`) under
    ``env_config``'s engine and costs; the agent's own result first when given.

    :param judged_under: the run whose settings ``env_config`` is (the table's
        ``judged_under`` column).
    :param params: baseline name (without ``:argument``) -> its keyword parameters: a run's
        ``config.baselines.params()`` (the fixed rule's confidence, horizon, take-profit and
        stop-loss).
    """
    from rltrade.agents.baselines import baseline_names, make_baseline

    rows: list[dict[str, Any]] = []
    equity: dict[str, pd.Series] = {}
    if agent is not None:
        rows.append(comparison_row(agent[0], "agent", agent[1], judged_under))
        equity[agent[0]] = agent[1].steps["equity"]
    for name in names or baseline_names(dataset):
        kwargs = (params or {}).get(name.partition(":")[0], {})
        res = run_backtest(make_baseline(name, dataset, **kwargs), dataset, env_config,
                           normalizer=normalizer, name=name, bars_per_year=bars_per_year,
                           equity_floor=equity_floor)
        rows.append(comparison_row(name, "baseline", res, judged_under))
        equity[name] = res.steps["equity"]
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS)), equity


def write_backtest_report(result: BacktestResult, *, run: Run | None = None,
                          comparison: pd.DataFrame | None = None,
                          comparison_equity: dict[str, pd.Series] | None = None,
                          overlap: bool = False) -> Path:
    """``plots/`` and ``report.html`` into the backtest's folder, titled by the backtest's name
    (the run's name), not its policy class."""
    from rltrade.evaluation.plots import write_plots
    from rltrade.evaluation.report import write_report

    assert result.path is not None
    s = result.summary
    name = str(s.get("name") or s.get("policy") or "agent")
    bench = _benchmark_curve(result)
    start, end = result.steps.index[0], result.steps.index[-1]
    subtitle = (f"{result.path.name} · {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} · "
                f"agent {name} ({s.get('policy', '')})"
                + (" · IN-SAMPLE (overlaps training)" if overlap else "")
                + (f" · STOPPED EARLY ({s.get('stop_reason')}, bar {s.get('bars_run'):,} of "
                   f"{s.get('bars_requested'):,})" if s.get("stopped_early") else ""))
    metrics_run = (result.metrics or {}).get("run", {})
    plots = write_plots(result.steps, result.trades, result.path / "plots",
                        benchmark_equity=bench, title=name,
                        subtitle=subtitle, timeframe=metrics_run.get("timeframe"),
                        initial_equity=s.get("initial_equity"),
                        action_scheme=(s.get("config") or {}).get("action_scheme"),
                        bars_per_year=metrics_run.get("bars_per_year"))
    return write_report(
        result.path / "report.html", steps=result.steps, trades=result.trades, summary=s,
        metrics=result.metrics or {}, benchmark_equity=bench, comparison=comparison,
        comparison_equity=comparison_equity,
        config=run.config.to_dict() if run is not None else None,
        metadata=run.metadata if run is not None else None, plots=plots,
    )


def _benchmark_curve(result: BacktestResult) -> pd.Series | None:
    if BENCHMARK_COLUMN in result.steps.columns:
        return result.steps[BENCHMARK_COLUMN]
    return None


@dataclass
class Comparison:
    """What :func:`compare` produced.

    :param table: one row per run and baseline (:data:`COMPARISON_COLUMNS`).
    :param equity: name -> equity curve.
    :param results: run name -> its backtest.
    :param out_dir: where the table and chart were written.
    :param baselines_under: the run whose settings the baselines ran under (``None``: no
        baselines).
    """

    table: pd.DataFrame
    equity: dict[str, pd.Series]
    results: dict[str, BacktestResult] = field(default_factory=dict)
    out_dir: Path | None = None
    baselines_under: str | None = None


def compare(runs: list[Run | str | Path], dataset: Dataset | None = None, *,
            source: str | None = None, start: str | None = None, end: str | None = None,
            baselines: list[str] | str | None = "all", model: str = "final",
            out_dir: str | Path | None = None, bars_per_year: float | None = None,
            baselines_under: str | None = None) -> Comparison:
    """Every run over the same bars, each judged under its own settings, and the baselines.

    Each run is backtested exactly as ``rltrade backtest`` does (:func:`judge_run`): on the
    bars of ``source`` (default: the first run's source) between ``start`` and ``end``,
    featurised with its own spec, under its own env config (action scheme, costs, engine, risk
    manager), normalizer and ``evaluation`` settings; so its row equals its own backtest of the
    same range. The baselines run under one named run's settings (``baselines_under``, default
    the first run), said in the table's ``judged_under`` column. The table and an equity chart
    are written to ``out_dir`` (CSV, markdown, PNG).

    :param bars_per_year: annualisation override for every row (default: each run's
        ``evaluation.bars_per_year``).
    """
    opened = [r if isinstance(r, Run) else Run.open(r) for r in runs]
    if not opened:
        raise ConfigError("compare needs at least one run")
    by_name = {run.name: run for run in opened}
    if baselines_under is not None and baselines_under not in by_name:
        raise ConfigError(f"baselines_under: {baselines_under!r} is not one of the compared "
                          f"runs {list(by_name)}")
    ref = by_name[baselines_under] if baselines_under is not None else opened[0]
    src = source or opened[0].config.data.source
    datasets: dict[str, Dataset] = {}

    def data_of(run: Run) -> Dataset:
        if dataset is not None:
            return dataset
        key = json.dumps([run.config.features, run.config.data.model_dump(mode="json",
                          exclude={"source", "start", "end"}), run.config.env.window],
                         sort_keys=True)
        if key not in datasets:
            datasets[key] = run_dataset(run, src, start, end)
        return datasets[key]

    rows: list[dict[str, Any]] = []
    equity: dict[str, pd.Series] = {}
    results: dict[str, BacktestResult] = {}
    for run in opened:
        res = judge_run(run, data_of(run), model=model, bars_per_year=bars_per_year)
        name = res.summary["name"]
        rows.append(comparison_row(name, "agent", res))
        equity[name] = res.steps["equity"]
        results[name] = res
    under = None
    if baselines:
        from rltrade.agents.baselines import baseline_names

        ref_data = data_of(ref)
        names = baseline_names(ref_data) if baselines == "all" else list(baselines)
        table, eq = compare_baselines(
            ref_data, ref.config.env, ref.normalizer(), names,
            bars_per_year=_bars_per_year(ref, bars_per_year),
            equity_floor=ref.config.evaluation.equity_floor, judged_under=ref.name,
            params=ref.config.baselines.params())
        rows.extend(table.to_dict("records"))
        equity.update(eq)
        under = ref.name
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    out = None
    if out_dir is not None:
        out = write_comparison(out_dir, table, equity)
    return Comparison(table, equity, results, out, under)


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if pct:
        return f"{value * 100:+.2f}%"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def bars_text(row: Mapping[str, Any]) -> str:
    """``2,188`` bars, or ``1,139 of 2,188`` when the backtest stopped early (a summary or a
    comparison row)."""
    run, asked = row.get("bars_run"), row.get("bars_requested")
    if run is None:
        return "n/a"
    if row.get("stopped_early") and asked is not None:
        return f"{int(run):,} of {int(asked):,}"
    return f"{int(run):,}"


def end_text(row: Mapping[str, Any]) -> str:
    """The last bar's time, ``YYYY-MM-DD HH:MM`` (UTC)."""
    end = row.get("end_time")
    if not isinstance(end, str) or not end:
        return "n/a"
    return f"{pd.Timestamp(end):%Y-%m-%d %H:%M}"


def early_stops(table: pd.DataFrame) -> list[str]:
    """One line in words per row of a comparison that stopped early."""
    return [f"{r['name']}: {stop_text(r)}" for r in table.to_dict("records")
            if r.get("stopped_early")]


def comparison_markdown(table: pd.DataFrame) -> str:
    """The comparison table as markdown (returns in percent), then a line per early stop."""
    cols = ["name", "kind", "judged under", "total return", "Sharpe", "max drawdown",
            "win rate", "profit factor", "trades", "PSR", "DSR", "bars", "end"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table.to_dict("records"):
        lines.append("| " + " | ".join([
            str(r["name"]), str(r["kind"]), str(r["judged_under"]),
            _fmt(r["total_return"], True), _fmt(r["sharpe"]),
            _fmt(r["max_drawdown"], True), _fmt(r["win_rate"], True),
            _fmt(r["profit_factor"]), _fmt(r["trades"]), _fmt(r["psr"]), _fmt(r["dsr"]),
            bars_text(r), end_text(r),
        ]) + " |")
    stops = early_stops(table)
    if stops:
        lines += ["", *stops]
    return "\n".join(lines) + "\n"


def write_comparison(out_dir: str | Path, table: pd.DataFrame,
                     equity: dict[str, pd.Series]) -> Path:
    """``comparison.csv``, ``comparison.md`` and ``equity.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "comparison.csv", table.to_csv(index=False).encode())
    atomic_write_bytes(out / "comparison.md", comparison_markdown(table).encode())
    try:
        _equity_chart(out / "equity.png", equity)
    except Exception as exc:  # a chart must never lose the table
        log.warning("comparison chart failed: {}", exc)
    return out


def _equity_chart(path: Path, equity: dict[str, pd.Series]) -> None:
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5.5), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in equity.items():
        values = np.asarray(curve, dtype=float)
        step = max(1, len(values) // 4000)
        ax.plot(curve.index[::step], values[::step], lw=1.6 if name in equity and
                not name.startswith(("signal:", "random", "flat")) else 0.8, label=name)
    ax.set_yscale("log")
    ax.set_title("Equity of every agent and baseline (same bars, each run under its own "
                 "settings; log scale)")
    ax.set_ylabel("equity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
