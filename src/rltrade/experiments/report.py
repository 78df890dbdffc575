"""The walk-forward's ``report.html``: :func:`write_walkforward_report`.

It is built from the walk-forward's own files (``walkforward.json`` and ``oos_steps.csv``), so
it can be written again at any time. It uses the page, table and chart helpers of the backtest
report (:mod:`rltrade.evaluation.report`): one self-contained file that works offline. It
holds:

* the **stitched out-of-sample returns**: per seed, the seeds' median and every baseline;
* the **fold table**: one row per fold and seed, with the train / validation / test ranges,
  the selected step and its validation return, the test return, Sharpe, drawdown and trades,
  and buy-and-hold and flat on the same test window;
* the **stitched equity** of every seed, their median and every baseline (log scale, the
  oracle hidden until clicked);
* the **per-fold test returns** as a bar chart: each seed against buy-and-hold;
* the **statistics** (``walkforward.json``'s ``statistics`` and ``significance``): the IQM and
  95 % stratified bootstrap interval of the annualised test Sharpe ratio and of the test
  return over folds × seeds, the fractions of folds beating buy-and-hold and flat, Hansen's
  SPA p-values, PSR against DSR with the ``N`` and ``V`` that deflate it, and PBO with its
  logit histogram (or why there is none).

A ``scheme: cpcv`` walk-forward gets :func:`write_cpcv_report`: the distribution of the
backtest paths' Sharpe ratios, the path table and histogram, the stitched paths of its
``oos_steps.csv`` against every baseline, and the same statistics with the paths in the place
of the folds.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd

from rltrade.data.store import atomic_write_bytes
from rltrade.evaluation.report import (
    chart_html,
    chart_layout,
    equity_chart_html,
    html_page,
    table_html,
)

__all__ = ["cpcv_curves", "cpcv_path_table", "fold_table", "statistics_html", "write_cpcv_report",
           "write_walkforward_report"]

_PERCENT = frozenset({"validation return", "test return", "max drawdown", "buy and hold",
                      "flat", "stitched return"})


def _short(rng: dict[str, Any]) -> str:
    start, end = str(rng.get("start", ""))[:16], str(rng.get("end", ""))[:16]
    return f"{start.replace('T', ' ')} .. {end.replace('T', ' ')} ({rng.get('bars', 0):,})"


def fold_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per fold and seed from ``walkforward.json``'s content."""
    rows = []
    for fold in report["folds"]:
        for seed, s in sorted(fold["seeds"].items(), key=lambda kv: int(kv[0])):
            test, base = s["test"], s["baselines"]
            rows.append({
                "fold": fold["fold"], "seed": int(seed),
                "train": _short(fold["train"]), "validation": _short(fold["validation"]),
                "test": _short(fold["test"]),
                "selected step": s["selected"].get("step"),
                "validation return": (s["selected"].get("validation") or {}).get("total_return"),
                "test return": test.get("total_return"), "Sharpe": test.get("sharpe"),
                "max drawdown": test.get("max_drawdown"), "trades": test.get("trades"),
                "buy and hold": (base.get("buy_and_hold") or {}).get("total_return"),
                "flat": (base.get("flat") or {}).get("total_return"),
            })
    return pd.DataFrame(rows)


def _returns_chart(table: pd.DataFrame) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    folds = sorted(table["fold"].unique())
    labels = [f"fold {k}" for k in folds]
    for seed in sorted(table["seed"].unique()):
        part = table[table["seed"] == seed].set_index("fold").reindex(folds)
        fig.add_bar(x=labels, y=(part["test return"].astype(float) * 100).tolist(),
                    name=f"agent seed {seed}")
    first = table.drop_duplicates("fold").set_index("fold").reindex(folds)
    fig.add_bar(x=labels, y=(first["buy and hold"].astype(float) * 100).tolist(),
                name="buy and hold", marker_color="#7f7f7f")
    fig.update_layout(**chart_layout("Test return per fold (%)", barmode="group",
                                     yaxis={"title": "return (%)"}))
    return chart_html(fig, "chart-fold-returns")


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value):+.2%}"


def _num(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{float(value):.{digits}g}"


def statistics_html(report: dict[str, Any]) -> str:
    """The statistics section of the report from ``walkforward.json``'s ``statistics`` and
    ``significance`` (a cpcv walk-forward's ``cpcv.significance``, its paths in the place of
    the folds; empty for a walk-forward written before they existed)."""
    stats = report.get("statistics")
    sig = report.get("significance") or (report.get("cpcv") or {}).get("significance")
    if not stats or not sig:
        return ""
    cpcv = stats.get("tasks") == "paths"
    task, tasks = ("path", "paths") if cpcv else ("fold", "folds")
    parts = ['<section id="statistics"><h2>Statistics</h2>']
    sharpe, ret = stats["sharpe"], stats["total_return"]
    level = f"{float(sharpe['level']):.0%}"
    spread = pd.DataFrame([
        {"out of sample": "Sharpe ratio (annualised)", "IQM": _num(sharpe["iqm"]),
         f"{level} CI": f"{_num(sharpe['ci_lower'])} .. {_num(sharpe['ci_upper'])}",
         "runs": sharpe["n"], "undefined": sharpe["n_undefined"]},
        {"out of sample": "path return" if cpcv else "test return", "IQM": _pct(ret["iqm"]),
         f"{level} CI": f"{_pct(ret['ci_lower'])} .. {_pct(ret['ci_upper'])}",
         "runs": ret["n"], "undefined": ret["n_undefined"]},
    ])
    one_seed = (" With one seed the interval has no width: it measures the spread over seeds."
                if stats["n_seeds"] == 1 else "")
    parts.append(
        f'<p class="note">Over {stats["n_folds"]} {tasks} × {stats["n_seeds"]} seeds: the '
        "interquartile mean and its stratified bootstrap interval (seeds resampled within "
        f"each {task}, {sharpe['reps']:,} replicates, percentile interval).{one_seed}</p>"
        f"{table_html(spread)}")
    beats = []
    for key, label in (("beats_buy_and_hold", "buy and hold"), ("beats_flat", "flat")):
        b = stats[key]
        beats.append({"baseline": label,
                      f"{tasks} beaten (seeds' median)": f"{b['folds_beating']} of {b['folds']}",
                      f"fraction of {tasks}": _pct(b["fraction"]).lstrip("+"),
                      "runs beaten": f"{b['runs_beating']} of {b['runs']}"})
    parts.append('<h3>Beating the baselines after costs</h3>'
                 f"{table_html(pd.DataFrame(beats))}")
    spa = stats.get("spa")
    spa_what = ("The per-period returns of every backtest path of every seed" if cpcv
                else "Every seed's stitched per-period returns")
    parts.append("<h3>Hansen's SPA test against buy-and-hold</h3>")
    if spa:
        parts.append(
            f'<p class="note">{spa_what} against buy-and-hold '
            f"on the same {spa['n_observations']:,} bars; null: none of them beats "
            "buy-and-hold. "
            f"Stationary bootstrap, {spa['reps']:,} replicates, mean block length "
            f"{spa['block_size']}. A p-value below 0.05 rejects the null.</p>"
            + table_html(pd.DataFrame([{
                "p-value (consistent)": _num(spa["consistent"]),
                "lower": _num(spa["lower"]), "upper (Reality Check)": _num(spa["upper"]),
                "mean excess return per bar": ", ".join(
                    f"{float(x):+.3g}" for x in spa["mean_excess_return"])}])))
    else:
        parts.append(f'<p class="note">Not computed: {_escape(str(stats.get("spa_skipped")))}'
                     "</p>")
    judged = (f"the median backtest path (path {sig.get('path')} of seed {sig.get('seed')}: "
              "the median annualised Sharpe ratio over every seed's paths)" if cpcv
              else "the seeds' median stitched curve")
    parts.append("<h3>Sharpe ratio significance: PSR and DSR</h3>")
    if sig.get("dsr_skipped"):
        parts.append(f'<p class="note">Not computed: {_escape(sig["dsr_skipped"])}</p>')
    else:
        parts.append(
            f'<p class="note">Of the per-bar returns of {judged} '
            f"({sig['n_periods']:,} bars). PSR: probability that the true Sharpe ratio is above "
            f"0. DSR: the same against the Sharpe ratio the best of N trials would reach by "
            f"luck, N = {_num(sig['n_trials'], 6)} trials recorded for experiment "
            f"{_escape(repr(sig['experiment']))} and V = {_num(sig['var_trials_per_bar'])} "
            "the variance of their per-bar Sharpe ratios.</p>"
            + table_html(pd.DataFrame([{
                "Sharpe (per bar)": _num(sig["sharpe_per_bar"]),
                "Sharpe (annualised)": _num(sig["sharpe_annualised"]),
                "PSR": _num(sig["psr"]), "DSR": _num(sig["dsr"]),
                "N (trials)": _num(sig["n_trials"], 6),
                "V (per-bar Sharpe variance)": _num(sig["var_trials_per_bar"])}])))
    parts.append("<h3>Probability of Backtest Overfitting</h3>")
    pbo = sig.get("pbo")
    if pbo:
        parts.append(
            f'<p class="note">CSCV over the experiment\'s {pbo["n_configurations"]} '
            f"configurations on {pbo['n_periods']:,} common bars, S = {pbo['n_partitions']}, "
            f"{pbo['n_combinations']:,} splits: PBO = {_num(pbo['pbo'])} (the share of splits "
            "whose in-sample best configuration ranks at or below the median out of sample; "
            "about 0.5 means no skill).</p>"
            f'<div class="chart-box">{_logit_chart(pbo["logit_histogram"])}</div>')
    else:
        parts.append(f'<p class="note">Not computed: {_escape(str(sig.get("pbo_skipped")))}'
                     "</p>")
    parts.append("</section>")
    return "".join(parts)


def _logit_chart(hist: dict[str, list[float]]) -> str:
    import plotly.graph_objects as go

    edges = hist["edges"]
    centres = [(a + b) / 2 for a, b in pairwise(edges)]
    fig = go.Figure()
    fig.add_bar(x=centres, y=hist["counts"], name="splits", marker_color="#1f77b4")
    fig.add_vline(x=0.0, line_dash="dash", line_color="#7f7f7f")
    fig.update_layout(**chart_layout("PBO: logit of the in-sample best's out-of-sample rank",
                                     xaxis={"title": "logit (≤ 0: overfit)"},
                                     yaxis={"title": "splits"}, bargap=0.05))
    return chart_html(fig, "chart-pbo-logits")


def write_walkforward_report(folder: str | Path) -> Path:
    """Write ``report.html`` into a walk-forward's folder from its ``walkforward.json`` and
    ``oos_steps.csv``; return its path."""
    folder = Path(folder)
    report = json.loads((folder / "walkforward.json").read_text())
    oos = _read_oos(folder)
    curves = {c: oos[c] for c in oos.columns if c != "fold"}
    stitched = pd.DataFrame([{"curve": c, "stitched return": float(s.iloc[-1]) - 1.0}
                             for c, s in curves.items()])
    table = fold_table(report)
    plan = report["plan"]
    bars = plan["bars"]
    note = (f"{plan['scheme']} scheme: train {bars['train']:,}, validation "
            f"{bars['validation']:,}, test {bars['test']:,} bars, step {bars['step']:,}, purge "
            f"{bars['purge']}, embargo {bars['embargo']}. Checkpoint selection: "
            f"{report['selection']}; each test window was backtested once. Every baseline ran "
            f"on the same bars through the same backtest and costs.")
    body = "".join([
        '<section id="stitched"><h2>Stitched out of sample</h2>'
        f'<p class="note">{_escape(note)}</p>'
        f'{table_html(stitched, percent_columns=_PERCENT)}</section>',
        '<section id="folds"><h2>Folds</h2><div class="scroll">'
        f'{table_html(table, percent_columns=_PERCENT)}</div></section>',
        '<section id="charts"><h2>Charts</h2>'
        f'<div class="chart-box">{equity_chart_html(curves, "chart-stitched")}</div>'
        f'<div class="chart-box">{_returns_chart(table)}</div></section>',
        statistics_html(report),
    ])
    data = report["data"]
    subtitle = (f"{data.get('source')} · {data.get('timeframe')} · {len(report['folds'])} folds"
                f" × {len(report['seeds'])} seeds · {report['oos_bars']:,} out-of-sample bars")
    nav = [("stitched", "Stitched"), ("folds", "Folds"), ("charts", "Charts")]
    if report.get("statistics"):
        nav.append(("statistics", "Statistics"))
    page = html_page(f"Walk-forward report: {report['name']}", subtitle, nav, body)
    out = folder / "report.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def cpcv_path_table(report: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From a cpcv ``walkforward.json``: one row per seed and backtest path (its splits, bars,
    annualised Sharpe ratio, return, buy-and-hold's return on the same path and whether the
    agent beat it), and one row per seed with the distribution of its path Sharpe ratios and
    the fraction of its paths beating buy-and-hold."""
    paths, dists = [], []
    for seed, stats in sorted(report["cpcv"]["seeds"].items(), key=lambda kv: int(kv[0])):
        for row in stats["paths"]:
            paths.append({"seed": int(seed), "path": row["path"],
                          "splits": " ".join(str(s) for s in row["splits"]),
                          "bars": row["bars"], "Sharpe": row["sharpe"],
                          "path return": row["return"],
                          "buy-and-hold return": row.get("buy_and_hold_return"),
                          "beats buy-and-hold": row.get("beats_buy_and_hold")})
        dists.append({"seed": int(seed), **stats["sharpe"],
                      "paths beating buy-and-hold": stats.get("fraction_beating_buy_and_hold")})
    return pd.DataFrame(paths), pd.DataFrame(dists)


def _cpcv_histogram(paths: pd.DataFrame) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for seed, rows in paths.groupby("seed"):
        fig.add_histogram(x=rows["Sharpe"].dropna(), name=f"seed {seed}", opacity=0.75)
    fig.update_layout(**chart_layout("CPCV: Sharpe ratio of every backtest path",
                                     xaxis={"title": "annualised Sharpe ratio"},
                                     yaxis={"title": "paths"}, barmode="overlay"))
    return chart_html(fig, "chart-cpcv-paths")


def cpcv_curves(oos: pd.DataFrame) -> dict[str, pd.Series]:
    """The curves of a cpcv ``oos_steps.csv`` to draw: every path's seeds' median
    (``path <p> agent_median``) and every baseline once (path 0's: each path covers the same
    bars, and a baseline's returns are the same on each)."""
    from rltrade.experiments.walkforward import OOS_LABELS

    curves: dict[str, pd.Series] = {}
    for p, part in oos.groupby("path", sort=True):
        curves[f"path {p} agent_median"] = part["agent_median"]
    first = oos[oos["path"] == oos["path"].min()]
    for col in first.columns:
        if col not in OOS_LABELS and not col.startswith("agent_"):
            curves[col] = first[col]
    return curves


def _read_oos(folder: Path) -> pd.DataFrame:
    oos = pd.read_csv(folder / "oos_steps.csv", index_col=0)
    oos.index = pd.DatetimeIndex(pd.to_datetime(oos.index, utc=True), name="timestamp")
    return oos


def write_cpcv_report(folder: str | Path) -> Path:
    """Write ``report.html`` of a ``scheme: cpcv`` walk-forward from its ``walkforward.json``
    and ``oos_steps.csv``: the distribution of the backtest paths' Sharpe ratios per seed,
    the path table, a histogram of the path Sharpe ratios, the stitched equity of every
    path's seeds' median against every baseline (when ``oos_steps.csv`` exists) and the
    statistics (IQM and interval, fractions of paths beating the baselines, SPA, PSR / DSR,
    PBO); return its path."""
    folder = Path(folder)
    report = json.loads((folder / "walkforward.json").read_text())
    plan = report["plan"]
    paths, dists = cpcv_path_table(report)
    note = (f"cpcv: {plan['groups']} groups, {plan['test_groups']} tested per split, "
            f"{len(plan['splits'])} splits each trained once per seed, "
            f"{report['cpcv']['n_paths']} backtest paths; purge {plan['purge']}, embargo "
            f"{plan['embargo']}. {report['selection']}. The result is the distribution of the "
            "path Sharpe ratios, not one number.")
    percent = frozenset({"path return", "buy-and-hold return"})
    body = "".join([
        '<section id="distribution"><h2>Path Sharpe distribution</h2>'
        f'<p class="note">{_escape(note)}</p>{table_html(dists)}</section>',
        '<section id="paths"><h2>Backtest paths</h2><div class="scroll">'
        f'{table_html(paths, percent_columns=percent)}</div>'
        f'<div class="chart-box">{_cpcv_histogram(paths)}</div></section>',
    ])
    nav = [("distribution", "Distribution"), ("paths", "Paths")]
    if (folder / "oos_steps.csv").is_file():
        curves = cpcv_curves(_read_oos(folder))
        body += ('<section id="stitched"><h2>Stitched paths</h2><p class="note">Each backtest '
                 "path's test groups one after the other, each group starting where the "
                 "previous one ended: the seeds' median per path, and every baseline on the "
                 "same bars (oos_steps.csv holds every seed).</p>"
                 f'<div class="chart-box">{equity_chart_html(curves, "chart-stitched")}</div>'
                 "</section>")
        nav.append(("stitched", "Stitched"))
    stats = statistics_html(report)
    if stats:
        body += stats
        nav.append(("statistics", "Statistics"))
    data = report["data"]
    subtitle = (f"{data.get('source')} · {data.get('timeframe')} · cpcv · "
                f"{len(plan['splits'])} splits × {len(report['seeds'])} seeds · "
                f"{report['cpcv']['n_paths']} paths")
    page = html_page(f"Walk-forward report: {report['name']}", subtitle, nav, body)
    out = folder / "report.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
