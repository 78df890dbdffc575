"""The leaderboard: the cases' summaries as markdown (``docs/leaderboard.md``) and CSV, the
validation-only selection of the defaults and the issue's targets, each marked met or not."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np
from suite_configs import CONFIGS
from suite_datasets import DATASETS

__all__ = ["TARGET_ANNUAL_VS_FLAT", "csv_rows", "leaderboard_markdown", "select_default",
           "targets"]

#: the issue's floor: stitched out-of-sample return at least -5 % a year against flat
TARGET_ANNUAL_VS_FLAT = -0.05

SELECTION_RULE = (
    "highest median, over the datasets, of the per-dataset median validation Sharpe ratio "
    "(annualised, after costs) of the checkpoints the walk-forward selected, over folds x "
    "seeds; an undefined Sharpe ratio (an agent that never trades) counts as 0. Only "
    "validation windows enter; `new-defaults` is not a candidate of its own (it is the "
    "winner, re-run under its new name)")


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:+.{digits}f} %"


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _ci(entry: dict[str, Any], pct: bool = True) -> str:
    f = _pct if pct else _num
    if entry.get("iqm") is None:
        return "–"
    if entry.get("n", 0) < 2:
        return f(entry["iqm"])
    return f"{f(entry['iqm'])} [{f(entry['ci_lower'])}, {f(entry['ci_upper'])}]"


def select_default(cases: list[dict[str, Any]]) -> tuple[str | None, dict[str, float]]:
    """The configuration the suite's rule (:data:`SELECTION_RULE`) picks, and every
    candidate's score. Validation windows only: the test numbers are not read."""
    by_config: dict[str, list[float]] = {}
    for c in cases:
        if c["config"] == "new-defaults":
            continue
        by_config.setdefault(c["config"], []).append(c["validation_sharpe_median"])
    scores = {k: float(np.median(v)) for k, v in by_config.items()}
    if not scores:
        return None, scores
    best = max(scores, key=lambda k: (scores[k], k))
    return best, scores


def targets(case: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's targets for one case.

    * ``floor``: the seeds' IQM of the annualised stitched return minus flat's is at least
      -5 % a year;
    * ``costs``: on every seed whose gross PnL (before costs, summed over the folds) is
      positive, costs are at most the gross PnL (``None`` when no seed's gross is positive);
    * ``beats``: the IQM of the agent's stitched return beats random's and flat's or
      buy-and-hold's.
    """
    v = case["versus"]
    floor = (v["flat"]["excess_annual"]["iqm"] or -math.inf) >= TARGET_ANNUAL_VS_FLAT
    positive = [s for s in case["per_seed"].values() if s["gross"] > 0]
    costs = None if not positive else all(s["costs"] <= s["gross"] for s in positive)
    ex = {k: (v[k]["excess_total"]["iqm"] or -math.inf) for k in ("random", "flat",
                                                                   "buy_and_hold")}
    beats = ex["random"] > 0 and (ex["flat"] > 0 or ex["buy_and_hold"] > 0)
    return {"floor": bool(floor), "costs": costs, "beats": bool(beats)}


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


COLUMNS = ["dataset", "config", "mode", "folds", "seeds", "oos_bars", "oos_start", "oos_end",
           "validation_sharpe_median", "validation_return_median",
           "return_iqm", "return_ci_lower", "return_ci_upper", "annual_return_iqm",
           "sharpe_iqm", "max_drawdown_iqm", "annual_turnover_iqm", "cost_share_iqm",
           "costs_iqm", "gross_iqm", "trades_iqm",
           "flat_return", "buy_and_hold_return", "random_return",
           "best_signal_validation_return", "best_signal_hindsight_return",
           "best_signal_hindsight_name",
           "excess_annual_vs_flat", "excess_vs_buy_and_hold", "excess_vs_random",
           "excess_vs_best_signal_validation", "target_floor", "target_costs",
           "target_beats", "wall_seconds"]


def csv_rows(cases: list[dict[str, Any]]) -> str:
    """One CSV row per case (:data:`COLUMNS`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for c in cases:
        a, b, v = c["agent"], c["baselines"], c["versus"]
        t = targets(c)
        bsv = b.get("best_signal_validation") or {}
        bsh = b.get("best_signal_hindsight") or {}
        w.writerow({
            "dataset": c["dataset"], "config": c["config"], "mode": c["mode"],
            "folds": c["folds"], "seeds": len(c["seeds"]), "oos_bars": c["oos_bars"],
            "oos_start": c["oos_start"], "oos_end": c["oos_end"],
            "validation_sharpe_median": c["validation_sharpe_median"],
            "validation_return_median": c["validation_return_median"],
            "return_iqm": a["total_return"]["iqm"],
            "return_ci_lower": a["total_return"]["ci_lower"],
            "return_ci_upper": a["total_return"]["ci_upper"],
            "annual_return_iqm": a["annual_return"]["iqm"], "sharpe_iqm": a["sharpe"]["iqm"],
            "max_drawdown_iqm": a["max_drawdown"]["iqm"],
            "annual_turnover_iqm": a["annual_turnover"]["iqm"],
            "cost_share_iqm": a["cost_share"]["iqm"], "costs_iqm": a["costs"]["iqm"],
            "gross_iqm": a["gross"]["iqm"], "trades_iqm": a["trades"]["iqm"],
            "flat_return": b["flat"]["total_return"],
            "buy_and_hold_return": b["buy_and_hold"]["total_return"],
            "random_return": b["random"]["total_return"],
            "best_signal_validation_return": bsv.get("total_return"),
            "best_signal_hindsight_return": bsh.get("total_return"),
            "best_signal_hindsight_name": bsh.get("name"),
            "excess_annual_vs_flat": v["flat"]["excess_annual"]["iqm"],
            "excess_vs_buy_and_hold": v["buy_and_hold"]["excess_total"]["iqm"],
            "excess_vs_random": v["random"]["excess_total"]["iqm"],
            "excess_vs_best_signal_validation":
                (v.get("best_signal_validation") or {}).get("excess_total", {}).get("iqm"),
            "target_floor": t["floor"], "target_costs": t["costs"], "target_beats": t["beats"],
            "wall_seconds": c.get("wall_seconds"),
        })
    return buf.getvalue()


def _versus(c: dict[str, Any], name: str) -> str:
    v = c["versus"].get(name)
    if v is None:
        return "–"
    return f"{_pct(v['excess_total']['iqm'])} ({v['seeds_beating']}/{len(c['seeds'])})"


def _dataset_section(name: str, cases: list[dict[str, Any]]) -> list[str]:
    d = DATASETS[name]
    first = cases[0]
    b = first["baselines"]
    lines = [f"### {name}", "",
             f"{d.market}. Costs: {d.cost_note}. Out of sample: {first['oos_start'][:16]} .. "
             f"{first['oos_end'][:16]} ({first['oos_bars']} bars, {first['folds']} folds x "
             f"{len(first['seeds'])} seeds).", ""]
    bsv = b.get("best_signal_validation")
    bsh = b.get("best_signal_hindsight")
    base = [f"buy-and-hold {_pct(b['buy_and_hold']['total_return'])} "
            f"({_pct(b['buy_and_hold']['annual_return'])}/yr)",
            f"random {_pct(b['random']['total_return'])}", "flat +0.0 %"]
    if bsv:
        base.append(f"best strategy signal chosen on validation "
                    f"{_pct(bsv['total_return'])}")
    if bsh:
        base.append(f"best signal in hindsight (`{bsh['name']}`, chosen on the test windows, "
                    f"not a fair baseline) {_pct(bsh['total_return'])}")
    lines += ["Baselines, stitched over the same test windows with the same costs: "
              + "; ".join(base) + ".", ""]
    lines += ["| config | validation Sharpe (median) | OOS return, IQM [95 % CI] | per year | "
              "Sharpe | max DD | turnover / yr | costs / gross | trades | vs flat | vs B&H | "
              "vs random | vs best signal (val) | targets: floor / costs / beats |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in cases:
        a = c["agent"]
        t = targets(c)
        share = a["cost_share"]
        share_text = _num(share["iqm"]) + "x" if share["iqm"] is not None else \
            "gross ≤ 0"
        lines.append(
            f"| `{c['config']}` | {_num(c['validation_sharpe_median'])} | "
            f"{_ci(a['total_return'])} | {_pct(a['annual_return']['iqm'])} | "
            f"{_num(a['sharpe']['iqm'])} | {_pct(a['max_drawdown']['iqm'])} | "
            f"{_num(a['annual_turnover']['iqm'], 0)} | {share_text} | "
            f"{_num(a['trades']['iqm'], 0)} | {_versus(c, 'flat')} | "
            f"{_versus(c, 'buy_and_hold')} | {_versus(c, 'random')} | "
            f"{_versus(c, 'best_signal_validation')} | "
            f"{_mark(t['floor'])} / {_mark(t['costs'])} / {_mark(t['beats'])} |")
    return [*lines, ""]


def _targets_table(cases: list[dict[str, Any]], configs: list[str]) -> list[str]:
    datasets = [d for d in DATASETS if any(c["dataset"] == d for c in cases)]
    lines = ["| target | " + " | ".join(f"`{k}`" for k in configs) + " |",
             "|---|" + "---|" * len(configs)]
    rows = {
        "stitched OOS return ≥ −5 %/yr against flat, on every dataset": "floor",
        "costs ≤ gross PnL wherever gross PnL > 0, on every dataset": "costs",
        "beats random and one of flat / buy-and-hold, on most datasets": "beats",
    }
    for text, key in rows.items():
        cells = []
        for k in configs:
            mine = [c for c in cases if c["config"] == k]
            marks = [targets(c)[key] for c in mine]
            judged = [m for m in marks if m is not None]
            good = sum(bool(m) for m in judged)
            if key == "beats":
                ok = good > len(judged) / 2
            else:
                ok = good == len(judged)
            failing = [c["dataset"] for c, m in zip(mine, marks, strict=True) if m is False]
            note = f"{good}/{len(judged)}" + (f"; not on {', '.join(failing)}"
                                              if failing else "")
            cells.append(f"{_mark(ok)} ({note})")
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Datasets: {', '.join(datasets)}.")
    return lines


def leaderboard_markdown(cases: list[dict[str, Any]], command: str, *, mode: str,
                         wall_seconds: float, note: str = "") -> str:
    """The whole ``docs/leaderboard.md``."""
    configs = [k for k in CONFIGS if any(c["config"] == k for c in cases)]
    chosen, scores = select_default(cases)
    out = ["# Leaderboard: agents after costs", "",
           "Produced by:", "", "```bash", command, "```", "",
           f"Mode `{mode}`; wall time of this command {wall_seconds / 60:.1f} min "
           f"(cases found in the cache cost nothing and keep the time of their own run). "
           f"See [benchmarks.md](benchmarks.md#benchmark-suite-agents-after-costs) for how the "
           f"suite works and what `--quick` cuts.", ""]
    if note:
        out += [note, ""]
    out += ["## Configurations", "", "| config | what |", "|---|---|"]
    out += [f"| `{k}` | {CONFIGS[k][2]}; overlay `{CONFIGS[k][1] or '{}'}` on "
            f"{'old-defaults' if CONFIGS[k][0] == 'old' else 'rltrade config example'} |"
            for k in configs]
    out += ["", "## Choice of the defaults (validation windows only)", "",
            f"Rule: {SELECTION_RULE}.", "",
            "| config | score: median validation Sharpe over datasets | "
            + " | ".join(d for d in DATASETS if any(c['dataset'] == d for c in cases)) + " |",
            "|---|---:|" + "---:|" * len({c["dataset"] for c in cases})]
    for k in configs:
        if k not in scores:
            continue
        per = {c["dataset"]: c["validation_sharpe_median"] for c in cases if c["config"] == k}
        cells = [_num(per.get(d)) for d in DATASETS if any(c["dataset"] == d for c in cases)]
        star = " (chosen)" if k == chosen else ""
        out.append(f"| `{k}`{star} | {_num(scores[k])} | " + " | ".join(cells) + " |")
    out += ["", "## Targets of issue 16", ""]
    out += _targets_table(cases, configs)
    out += ["", "## Per dataset (test windows, stitched)", "",
            "Returns are the stitched out-of-sample (test-window) equity after costs; IQM and "
            "95 % bootstrap interval over the seeds. `vs X`: the IQM of the agent's stitched "
            "return minus X's, and in brackets how many seeds beat X. `costs / gross`: total "
            "costs over the gross PnL (before costs) of the test windows, summed over folds; "
            "`gross ≤ 0` when there was no gross profit to eat into.", ""]
    for d in DATASETS:
        mine = [c for c in cases if c["dataset"] == d]
        mine.sort(key=lambda c: configs.index(c["config"]))
        if mine:
            out += _dataset_section(d, mine)
    return "\n".join(out).rstrip() + "\n"
