"""Judging trained runs: backtest a run on new data, compare runs and baselines, report.

* :func:`load_policy` - a run's trained model as a fast policy (numpy forward pass when the
  network allows it, proven equal to the torch one in the tests).
* :func:`backtest_run` - ``rltrade backtest``: check that the data fits the model (refusing
  with a :class:`~rltrade.errors.CompatibilityError` that names every mismatch), backtest it,
  write plots and ``report.html``, append the backtest to the run's ``metadata.json`` (flagged
  when its range overlaps training).
* :func:`compare` - ``rltrade compare``: every run and baseline over the same data with the same
  costs, one table (console, markdown, CSV) and one equity chart.
"""

from __future__ import annotations

import math
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
from rltrade.evaluation.backtest import BacktestResult, run_backtest
from rltrade.features.dataset import Dataset, build_dataset
from rltrade.features.normalize import Normalizer
from rltrade.logs import run_log_files
from rltrade.runs import Run

__all__ = ["COMPARISON_COLUMNS", "Comparison", "backtest_run", "compare", "comparison_row",
           "load_policy", "run_dataset"]

log = logger.bind(component="backtest")

#: the comparison table's columns
COMPARISON_COLUMNS = ("name", "kind", "total_return", "sharpe", "max_drawdown", "win_rate",
                      "profit_factor", "trades", "psr", "dsr", "final_equity")


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
    ``start``."""
    config = run.config
    dc = config.data
    src = source or dc.source
    bars = load_bars(src, timeframe=dc.timeframe, policy=dc.policy, symbol=dc.symbol,
                     end=end)
    try:
        dataset = build_dataset(bars, config.feature_spec, timeframe=dc.timeframe,
                                symbol=dc.symbol)
    except DataError as exc:
        raise CompatibilityError(f"{src} cannot give the features model {run.name} was trained "
                                 f"on: {exc}") from exc
    if start is not None:
        inside = dataset.between(start, None)
        if len(inside) == 0:
            raise ConfigError(f"no bars of {src} at or after {start}")
        first = len(dataset) - len(inside)
        dataset = dataset.slice(max(0, first - (config.env.window - 1)), None)
    return dataset


def _overlaps(run: Run, dataset: Dataset, window: int) -> bool:
    rng = run.metadata.get("training", {}).get("range") or {}
    if not rng.get("start") or len(dataset) <= window - 1:
        return False
    lo = pd.Timestamp(rng["start"]).value
    hi = pd.Timestamp(rng["end"]).value
    traded = dataset.timestamps[window - 1:]
    return bool(traded[0] <= hi and traded[-1] >= lo)


def backtest_run(run: Run | str | Path, dataset: Dataset | None = None, *,
                 source: str | None = None, start: str | None = None, end: str | None = None,
                 model: str = "final", force_close: bool = False, baselines: bool = True,
                 report: bool = True, state_debug: bool = False) -> BacktestResult:
    """Backtest a trained run on ``dataset`` (or on ``source`` between ``start`` and ``end``).

    Compatibility is checked first (feature set and order, strategies, turbulence / VIX flags,
    spec hash, observation shape, normalizer). Writes ``runs/NAME/backtests/bt_<time>/`` with
    steps, trades, summary, metrics, ``plots/`` and ``report.html`` (with the baselines'
    comparison when ``baselines``), and appends the backtest to ``metadata.json``.
    """
    run = run if isinstance(run, Run) else Run.open(run)
    config = run.config
    with run_log_files(run.path / "logs"):
        if dataset is None:
            dataset = run_dataset(run, source, start, end)
        run.check_compatible(dataset)
        normalizer = run.normalizer()
        policy = load_policy(run, model)
        log.info("backtest of {} ({}) on {} rows {} .. {}", run.name, model, len(dataset),
                 dataset.index[0], dataset.index[-1])
        result = run_backtest(policy, dataset, config.env, normalizer=normalizer,
                              out_dir=run.path / "backtests", force_close=force_close,
                              state_debug=state_debug, name=f"{run.name}:{model}")
        overlap = _overlaps(run, dataset, config.env.window)
        comparison = None
        equity = None
        if baselines:
            comparison, equity = compare_baselines(dataset, config.env, normalizer,
                                                   agent=(run.name, result))
        if report and result.path is not None:
            write_backtest_report(result, run=run, comparison=comparison,
                                  comparison_equity=equity, overlap=overlap)
        s = result.summary
        entry = {
            "id": result.path.name if result.path else None,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": model,
            "data": {"source": source or config.data.source, "fingerprint": dataset.fingerprint,
                     "start": str(dataset.index[config.env.window - 1]),
                     "end": str(dataset.index[-1]), "bars": len(dataset)},
            "overlaps_training": overlap,
            "force_close": force_close,
            "total_return": s.get("total_return"),
            "final_equity": s.get("final_equity"),
            "sharpe": (result.metrics or {}).get("performance", {}).get("sharpe"),
            "path": str(result.path.relative_to(run.path)) if result.path else None,
        }
        run.append_backtest(entry)
        if overlap:
            log.warning("backtest range overlaps the training range: in-sample, marked")
        log.info("backtest {}: return {:+.2%}, final equity {:,.2f}", entry["id"],
                 s.get("total_return", float("nan")), s.get("final_equity", float("nan")))
    return result


def comparison_row(name: str, kind: str, result: BacktestResult) -> dict[str, Any]:
    """One row of the comparison table from a backtest."""
    m = result.metrics or {}
    perf = m.get("performance") or {}
    trades = m.get("trades") or {}
    sig = m.get("significance") or {}
    return {
        "name": name,
        "kind": kind,
        "total_return": perf.get("total_return"),
        "sharpe": perf.get("sharpe"),
        "max_drawdown": perf.get("max_drawdown"),
        "win_rate": trades.get("win_rate"),
        "profit_factor": trades.get("profit_factor"),
        "trades": trades.get("count", 0),
        "psr": sig.get("psr"),
        "dsr": sig.get("dsr"),
        "final_equity": result.summary.get("final_equity"),
    }


def compare_baselines(dataset: Dataset, env_config: EnvConfig, normalizer: Normalizer | None,
                      names: list[str] | None = None,
                      agent: tuple[str, BacktestResult] | None = None,
                      ) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """Backtest the baselines (default: all of :func:`~rltrade.agents.baseline_names`) under
    ``env_config``'s engine and costs; the agent's own result first when given."""
    from rltrade.agents.baselines import baseline_names, make_baseline

    rows: list[dict[str, Any]] = []
    equity: dict[str, pd.Series] = {}
    if agent is not None:
        rows.append(comparison_row(agent[0], "agent", agent[1]))
        equity[agent[0]] = agent[1].steps["equity"]
    for name in names or baseline_names(dataset):
        res = run_backtest(make_baseline(name, dataset), dataset, env_config,
                           normalizer=normalizer, name=name)
        rows.append(comparison_row(name, "baseline", res))
        equity[name] = res.steps["equity"]
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS)), equity


def write_backtest_report(result: BacktestResult, *, run: Run | None = None,
                          comparison: pd.DataFrame | None = None,
                          comparison_equity: dict[str, pd.Series] | None = None,
                          overlap: bool = False) -> Path:
    """``plots/`` and ``report.html`` into the backtest's folder."""
    from rltrade.evaluation.plots import write_plots
    from rltrade.evaluation.report import write_report

    assert result.path is not None
    s = result.summary
    bench = _benchmark_curve(result)
    start, end = result.steps.index[0], result.steps.index[-1]
    subtitle = (f"{result.path.name} · {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} · "
                f"agent {s.get('policy', '')}" + (" · IN-SAMPLE (overlaps training)"
                                                  if overlap else ""))
    metrics_run = (result.metrics or {}).get("run", {})
    plots = write_plots(result.steps, result.trades, result.path / "plots",
                        benchmark_equity=bench,
                        title=str(s.get("name") or s.get("policy", "agent")),
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
    if "benchmark_equity" in result.steps.columns:
        return result.steps["benchmark_equity"]
    return None


@dataclass
class Comparison:
    """What :func:`compare` produced."""

    table: pd.DataFrame
    equity: dict[str, pd.Series]
    results: dict[str, BacktestResult] = field(default_factory=dict)
    out_dir: Path | None = None


def compare(runs: list[Run | str | Path], dataset: Dataset | None = None, *,
            source: str | None = None, start: str | None = None, end: str | None = None,
            baselines: list[str] | str | None = "all", model: str = "final",
            out_dir: str | Path | None = None) -> Comparison:
    """Every run and baseline over the same data with the same costs (the first run's env
    config); the table and an equity chart written to ``out_dir`` (CSV, markdown, PNG)."""
    opened = [r if isinstance(r, Run) else Run.open(r) for r in runs]
    if not opened:
        raise ConfigError("compare needs at least one run")
    first = opened[0]
    if dataset is None:
        dataset = run_dataset(first, source, start, end)
    env_config = first.config.env
    rows: list[dict[str, Any]] = []
    equity: dict[str, pd.Series] = {}
    results: dict[str, BacktestResult] = {}
    normalizer = None
    for run in opened:
        run.check_compatible(dataset)
        normalizer = run.normalizer()
        res = run_backtest(load_policy(run, model), dataset, env_config,
                           normalizer=normalizer, name=run.name)
        rows.append(comparison_row(run.name, "agent", res))
        equity[run.name] = res.steps["equity"]
        results[run.name] = res
    if baselines:
        from rltrade.agents.baselines import baseline_names

        names = baseline_names(dataset) if baselines == "all" else list(baselines)
        table, eq = compare_baselines(dataset, env_config, normalizer, names)
        rows.extend(table.to_dict("records"))
        equity.update(eq)
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    out = None
    if out_dir is not None:
        out = write_comparison(out_dir, table, equity)
    return Comparison(table, equity, results, out)


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if pct:
        return f"{value * 100:+.2f}%"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def comparison_markdown(table: pd.DataFrame) -> str:
    """The comparison table as markdown (returns in percent)."""
    cols = ["name", "kind", "total return", "Sharpe", "max drawdown", "win rate",
            "profit factor", "trades", "PSR", "DSR"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table.to_dict("records"):
        lines.append("| " + " | ".join([
            str(r["name"]), str(r["kind"]), _fmt(r["total_return"], True), _fmt(r["sharpe"]),
            _fmt(r["max_drawdown"], True), _fmt(r["win_rate"], True),
            _fmt(r["profit_factor"]), _fmt(r["trades"]), _fmt(r["psr"]), _fmt(r["dsr"]),
        ]) + " |")
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
    ax.set_title("Equity of every agent and baseline (same data, same costs; log scale)")
    ax.set_ylabel("equity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
