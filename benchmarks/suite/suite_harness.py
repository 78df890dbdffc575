"""The benchmark suite's harness: one walk-forward per (dataset, config), summarised into the
numbers of the leaderboard, cached per case so that a long run can be continued.

:func:`run_case` builds the case's config (the named config, then the dataset's costs, bars per
year, walk-forward plan and the mode's training steps), runs
:func:`rltrade.experiments.walkforward.walk_forward` on the dataset's bars (rolling folds, the
checkpoint selected on each fold's validation rows only, several seeds) and
:func:`summarize_case` turns its result into one JSON-ready dict, written to
``OUT/cases/<dataset>__<config>.json``. The file carries a key (a hash of the resolved config,
the dataset's definition and the mode): a case whose file holds the same key is not run again.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from suite_configs import suite_config
from suite_datasets import DATASETS, SuiteDataset, load_suite_bars

from rltrade.config import RunConfig
from rltrade.data.store import atomic_write_json

__all__ = ["MODES", "SUITE_VERSION", "case_config", "case_key", "curve_stats", "load_case",
           "run_case", "summarize_case"]

#: bump when the summary's meaning changes (part of the cache key). 2: the baselines run
#: without the agent's switches against costs (``agents.baselines.baseline_config``)
SUITE_VERSION = 2

#: training per fold and seed in each mode (every config gets the same)
MODES: dict[str, dict[str, int]] = {
    "quick": {"total_steps": 16_384, "eval_freq": 4_096, "checkpoint_freq": 16_384},
    "full": {"total_steps": 100_000, "eval_freq": 20_000, "checkpoint_freq": 20_000},
}

#: the baselines every agent is compared with (their stitched test curves)
FIXED_BASELINES = ("flat", "buy_and_hold", "random")


def case_config(dataset: SuiteDataset, config_name: str, quick: bool) -> RunConfig:
    """The config a case runs: the named config with the dataset's costs, bars per year,
    walk-forward plan and the mode's training steps on top."""
    cfg = suite_config(config_name)
    mode = MODES["quick" if quick else "full"]
    env: dict[str, Any] = {"engine": {"costs": dict(dataset.costs)}}
    if getattr(cfg.env, "vol_target", None) is not None and cfg.env.vol_bars_per_year is None:
        # volatility targeting annualises with the market's own sessions
        env["vol_bars_per_year"] = dataset.bars_per_year
    return cfg.with_overrides(
        description=f"suite: {config_name} on {dataset.name}",
        data={"source": str(dataset.path()), "policy": "repair"},
        env=env,
        evaluation={"bars_per_year": dataset.bars_per_year},
        training=dict(mode),
        walkforward=dataset.plan(quick),
    )


def case_key(dataset: SuiteDataset, cfg: RunConfig, quick: bool) -> str:
    """The cache key of a case: its resolved config, the dataset's definition and the mode.

    The config enters without the keys that hold their default value, so that a new switch
    (off by default) does not invalidate the cases run before it landed, and two names of one
    config (``new-defaults`` and the candidate it was chosen from) share one key.
    """
    config = cfg.model_dump(mode="json", exclude_defaults=True)
    config.pop("description", None)  # names the config; not part of what runs
    blob = json.dumps({"version": SUITE_VERSION, "dataset": dataset.describe(),
                       "config": config, "quick": quick}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def case_path(out_root: Path, dataset_name: str, config_name: str) -> Path:
    return Path(out_root) / "cases" / f"{dataset_name}__{config_name}.json"


def load_case(out_root: Path, dataset_name: str, config_name: str,
              key: str | None = None) -> dict[str, Any] | None:
    """The cached summary of a case, or ``None`` (absent, unreadable, or another key)."""
    path = case_path(out_root, dataset_name, config_name)
    try:
        case = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if key is not None and case.get("key") != key:
        return None
    return case


def _same_key(out_root: Path, key: str) -> dict[str, Any] | None:
    """A cached case of any name whose key is ``key`` (deterministic runs: the same numbers)."""
    for path in sorted((Path(out_root) / "cases").glob("*.json")):
        try:
            case = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if case.get("key") == key:
            return case
    return None


# -- numbers of one equity curve ------------------------------------------------------------
def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def curve_stats(curve: np.ndarray, bars_per_year: float) -> dict[str, float | None]:
    """Total and annualised return, annualised Sharpe ratio and maximum drawdown of a stitched
    equity curve (a multiple of the start, one value per bar).

    A curve without dispersion (always flat) has Sharpe ``None``.
    """
    from rltrade.evaluation.series import drawdown, equity_returns
    from rltrade.evaluation.significance import sharpe_stats

    curve = np.asarray(curve, dtype=float)
    n = len(curve)
    final = float(curve[-1]) if n else 1.0
    total = final - 1.0
    annual = final ** (bars_per_year / n) - 1.0 if n and final > 0 else -1.0
    sr = sharpe_stats(equity_returns(curve, 1.0))[0]
    dd = drawdown(np.concatenate([[1.0], curve]))
    return {"total_return": total, "annual_return": annual,
            "sharpe": _num(sr * math.sqrt(bars_per_year)) if math.isfinite(sr) else None,
            "max_drawdown": float(np.nanmin(dd)) if dd.size else 0.0}


def _stitch_chosen(results_seed0: list[Any], chosen: dict[int, str]) -> np.ndarray:
    """The test curves of one baseline per fold (``chosen[fold]``), one after the other."""
    parts, carry = [], 1.0
    for r in sorted(results_seed0, key=lambda r: r.fold):
        curve = carry * np.asarray(r.equity[chosen[r.fold]], dtype=float)
        parts.append(curve)
        if len(curve):
            carry = float(curve[-1])
    return np.concatenate(parts)


def _signal_names(results: list[Any]) -> list[str]:
    return sorted(n for n in results[0].equity if n.startswith("signal:"))


def _best_signal_on_validation(cfg: RunConfig, ds: Any, plan: Any,
                               signals: list[str]) -> dict[int, dict[str, Any]]:
    """Per fold, the strategy signal with the highest total return on the fold's validation
    rows (after costs, through the same ``run_backtest``), and every signal's validation
    return. The test rows play no part."""
    from rltrade.evaluation.judge import compare_baselines
    from rltrade.evaluation.ranges import with_context

    out: dict[int, dict[str, Any]] = {}
    window = cfg.env.window
    for fold in plan.folds:
        first = ds.timestamps[fold.validation.start]
        stop = fold.validation.stop
        end = ds.timestamps[stop] if stop < len(ds) else None
        valid = with_context(ds, pd.Timestamp(int(first), tz="UTC"),
                             None if end is None else pd.Timestamp(int(end), tz="UTC"), window)
        table, _ = compare_baselines(valid, cfg.env, None, names=signals,
                                     bars_per_year=cfg.evaluation.bars_per_year)
        returns = {str(r["name"]): float(r["total_return"]) for r in table.to_dict("records")}
        best = max(returns, key=lambda k: (returns[k], k))
        out[fold.index] = {"chosen": best, "validation_returns": returns}
    return out


def _fold_costs(result: Any) -> dict[str, float]:
    """A fold's test backtest: costs and gross PnL as fractions of its start, turnover (traded
    notional / mean equity) and the number of trades, from its ``metrics.json``."""
    metrics = json.loads((Path(result.backtest) / "metrics.json").read_text())
    summary = json.loads((Path(result.backtest) / "summary.json").read_text())
    initial = float(summary["initial_equity"])
    costs = metrics.get("costs") or {}
    return {"costs": float(costs.get("total", 0.0)) / initial,
            "gross": float(costs.get("gross_pnl", 0.0)) / initial,
            "turnover": _num((metrics.get("risk") or {}).get("turnover")) or 0.0,
            "trades": float((metrics.get("trades") or {}).get("count") or 0)}


def _iqm_interval(values: list[float | None]) -> dict[str, Any]:
    """IQM over the seeds and its bootstrap 95 % interval (seeds resampled; seed 0)."""
    from rltrade.evaluation.aggregate import stratified_bootstrap_ci

    v = np.array([np.nan if x is None else x for x in values], dtype=float)[:, None]
    ci = stratified_bootstrap_ci(v, reps=2000, rng=0)
    return {"iqm": _num(ci.point), "ci_lower": _num(ci.lower), "ci_upper": _num(ci.upper),
            "n": ci.n}


def summarize_case(res: Any, ds: Any, cfg: RunConfig, dataset: SuiteDataset) -> dict[str, Any]:
    """The leaderboard's numbers of one walk-forward (see docs/leaderboard.md, "Columns")."""
    bpy = float(dataset.bars_per_year)
    seeds = list(cfg.walkforward.seeds)
    oos = res.oos
    n_bars = len(oos)
    seed0 = [r for r in res.results if r.seed == seeds[0]]
    signals = _signal_names(seed0)
    per_seed: dict[str, dict[str, Any]] = {}
    for s in seeds:
        stats = curve_stats(oos[f"agent_seed_{s}"].to_numpy(), bpy)
        folds = [_fold_costs(r) for r in res.results if r.seed == s]
        costs = sum(f["costs"] for f in folds)
        gross = sum(f["gross"] for f in folds)
        turnover = sum(f["turnover"] for f in folds)
        stats.update({
            "costs": costs, "gross": gross,
            "cost_share": costs / gross if gross > 0 else None,
            "turnover": turnover, "annual_turnover": turnover * bpy / n_bars,
            "trades": sum(f["trades"] for f in folds),
        })
        per_seed[str(s)] = stats
    baselines = {name: curve_stats(oos[name].to_numpy(), bpy) for name in FIXED_BASELINES}
    choice = _best_signal_on_validation(cfg, ds, res.plan, signals) if signals else {}
    if choice:
        baselines["best_signal_validation"] = curve_stats(
            _stitch_chosen(seed0, {k: v["chosen"] for k, v in choice.items()}), bpy)
        hindsight = {n: curve_stats(oos[n].to_numpy(), bpy) for n in signals}
        best_h = max(hindsight, key=lambda n: (hindsight[n]["total_return"], n))
        baselines["best_signal_hindsight"] = {**hindsight[best_h], "name": best_h}
    validation = [{"fold": r.fold, "seed": r.seed,
                   "sharpe": _num(r.selected["validation"].get("sharpe")),
                   "total_return": _num(r.selected["validation"].get("total_return")),
                   "step": r.selected.get("step")} for r in res.results]
    agent_returns = [per_seed[str(s)]["total_return"] for s in seeds]
    agent_annual = [per_seed[str(s)]["annual_return"] for s in seeds]
    versus = {}
    for name, b in baselines.items():
        versus[name] = {
            "excess_annual": _iqm_interval([a - b["annual_return"] for a in agent_annual]),
            "excess_total": _iqm_interval([a - b["total_return"] for a in agent_returns]),
            "seeds_beating": int(sum(a > b["total_return"] for a in agent_returns)),
        }
    summary = {
        "seeds": seeds, "folds": len(res.plan.folds), "oos_bars": n_bars,
        "oos_start": str(oos.index[0]), "oos_end": str(oos.index[-1]),
        "bars_per_year": bpy, "per_seed": per_seed, "baselines": baselines,
        "versus": versus, "validation": validation,
        "signal_choice": {str(k): v for k, v in choice.items()},
        "agent": {key: _iqm_interval([per_seed[str(s)][key] for s in seeds])
                  for key in ("total_return", "annual_return", "sharpe", "max_drawdown",
                              "annual_turnover", "cost_share", "trades", "costs", "gross")},
        "validation_sharpe_median": _median_flat_zero([v["sharpe"] for v in validation]),
        "validation_return_median": float(np.median([v["total_return"] or 0.0
                                                     for v in validation])),
    }
    return summary


def _median_flat_zero(values: list[float | None]) -> float:
    """The median, an undefined Sharpe ratio (a flat agent: no dispersion) counted as 0."""
    return float(np.median([0.0 if v is None else v for v in values]))


def run_case(dataset_name: str, config_name: str, quick: bool, out_root: str | Path,
             force: bool = False) -> dict[str, Any]:
    """Run (or load from the cache) one (dataset, config) case and return its summary.

    :param dataset_name: a key of :data:`~suite_datasets.DATASETS`.
    :param config_name: a key of :data:`~suite_configs.CONFIGS`.
    :param quick: the ``--quick`` plan and steps.
    :param out_root: the suite's output folder (``cases/``, ``runs/``).
    :param force: run it even when the cache holds it.
    """
    from rltrade.experiments.walkforward import walk_forward
    from rltrade.features.dataset import build_dataset

    out_root = Path(out_root)
    dataset = DATASETS[dataset_name]
    cfg = case_config(dataset, config_name, quick)
    key = case_key(dataset, cfg, quick)
    if not force:
        cached = load_case(out_root, dataset_name, config_name, key)
        if cached is None:
            cached = _same_key(out_root, key)
            if cached is not None:  # the same resolved config under another name
                cached.update(config=config_name, reused_from=cached["config"])
                atomic_write_json(case_path(out_root, dataset_name, config_name), cached)
        if cached is not None:
            cached["cached"] = True
            return cached
    t0 = time.perf_counter()
    bars = load_suite_bars(dataset, quick)
    ds = build_dataset(bars, cfg.feature_spec)
    runs_root = out_root / "runs"
    name = f"{dataset_name}__{config_name.replace('-', '_')}__{key[:8]}"
    for stale in (runs_root / name, runs_root / f"{name}.sqlite"):
        if stale.is_dir():
            shutil.rmtree(stale)  # an interrupted earlier try of this very case
        elif stale.exists():
            stale.unlink()
    runs_root.mkdir(parents=True, exist_ok=True)
    res = walk_forward(cfg, name, runs_root, workers=1, dataset=ds,
                       registry=runs_root / f"{name}.sqlite")
    summary = summarize_case(res, ds, cfg, dataset)
    case = {"key": key, "dataset": dataset_name, "config": config_name,
            "mode": "quick" if quick else "full", "run": str(res.path),
            "wall_seconds": time.perf_counter() - t0, **summary}
    atomic_write_json(case_path(out_root, dataset_name, config_name), case)
    case["cached"] = False
    return case
