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
* the **per-fold test returns** as a bar chart: each seed against buy-and-hold.
"""

from __future__ import annotations

import json
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

__all__ = ["fold_table", "write_walkforward_report"]

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


def write_walkforward_report(folder: str | Path) -> Path:
    """Write ``report.html`` into a walk-forward's folder from its ``walkforward.json`` and
    ``oos_steps.csv``; return its path."""
    folder = Path(folder)
    report = json.loads((folder / "walkforward.json").read_text())
    oos = pd.read_csv(folder / "oos_steps.csv", index_col=0)
    oos.index = pd.DatetimeIndex(pd.to_datetime(oos.index, utc=True), name="timestamp")
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
    ])
    data = report["data"]
    subtitle = (f"{data.get('source')} · {data.get('timeframe')} · {len(report['folds'])} folds"
                f" × {len(report['seeds'])} seeds · {report['oos_bars']:,} out-of-sample bars")
    nav = [("stitched", "Stitched"), ("folds", "Folds"), ("charts", "Charts")]
    page = html_page(f"Walk-forward report: {report['name']}", subtitle, nav, body)
    out = folder / "report.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)
