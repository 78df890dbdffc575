"""The HTML report of one backtest: :func:`write_report`.

``report.html`` is one self-contained file that works offline: plotly.js is embedded once,
inline; the PNG plots are embedded as base64 ``data:`` images; there is no reference to anything
on a network. It holds, top to bottom:

* a header (title: the run's name, the summary's ``name``; backtest id, agent, range, bars);
  a **warning line** in words when the backtest stopped before the end of its range
  (``stopped early at bar N of M on DATE: equity_floor``); **summary cards**: total return,
  return against buy-and-hold (the benchmark the backtest recorded: buy-and-hold at 1x through
  the engine, same costs and bars; never rebuilt from the close), Sharpe ratio (with the bars per
  year it was annualised with, and their source), max drawdown, win rate, PSR / DSR, trades,
  bars run (of those requested), final equity;
* the **comparison table** (agents and baselines, one row each) when given;
* **interactive charts**: equity against buy-and-hold, drawdown, position over price with the
  trades marked, and the equity of every compared agent when given, on a log scale with the
  perfect-foresight oracle hidden until its legend entry is clicked (:data:`HIDDEN_BY_DEFAULT`).
  Runs longer than :data:`MAX_CHART_POINTS` bars are thinned (min/max per bucket, so peaks and
  troughs survive) and the chart title says so;
* the **PNG plots** from :func:`rltrade.evaluation.plots.write_plots` when given;
* the **trades table** (the first and last :data:`MAX_TRADE_ROWS` ``/ 2`` trades of a longer
  list, with a note saying how many were left out);
* every **metric** of :func:`rltrade.evaluation.compute_metrics`, one table per section
  (``—`` marks an undefined value; the two alphas are labelled apart: ``significance level
  (α)`` and ``CAPM alpha (annualised)``, :data:`METRIC_LABELS`);
* the run's **config** and **metadata** as collapsible JSON (values of keys that look like
  secrets are masked).

Every string that comes from the user (names, config values, trade fields) is HTML-escaped.
The file is written atomically.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

import rltrade
from rltrade.credentials import looks_like_credential
from rltrade.data.store import atomic_write_bytes
from rltrade.evaluation.metrics import json_ready
from rltrade.evaluation.plots import (
    Curves,
    default_subtitle,
    format_time,
    minmax_indices,
    prepare_curves,
    stride_indices,
)
from rltrade.evaluation.series import numeric, total_return, utc_index

__all__ = ["HIDDEN_BY_DEFAULT", "MAX_CHART_POINTS", "MAX_TRADE_ROWS", "METRIC_LABELS",
           "chart_html", "chart_layout", "equity_chart_html", "html_page", "table_html",
           "write_report"]

log = logger.bind(component="backtest")

#: Points per line in an interactive chart at most (about; min/max per bucket beyond that).
MAX_CHART_POINTS = 4000
#: Trades listed in the table at most (the first and last half of a longer list).
MAX_TRADE_ROWS = 1000
#: Trade markers drawn on the position chart at most (evenly strided beyond that).
MAX_CHART_MARKERS = 2000

_PERCENT_KEYS = {
    "total_return", "total_return_realized", "cagr", "annual_volatility", "max_drawdown",
    "win_rate", "exposure_time", "avg_exposure", "max_exposure", "cvar_95", "cvar_99",
    "tail_hit_rate", "stop_loss_rate", "excess_total_return", "alpha", "tracking_error",
    "risk_free_rate", "total_share_of_gross_pnl", "total_to_initial_capital",
}
_PERCENT_COLUMNS = {"total_return", "max_drawdown", "win_rate", "cagr", "annual_volatility",
                    "excess_total_return", "exposure_time", "total_return_realized"}
_SECTIONS = ("run", "performance", "risk", "trades", "reward", "benchmark", "significance",
             "costs", "data_quality")
#: Row labels of metrics whose key alone is ambiguous, by (section, key); the key is kept in the
#: row's tooltip. Two different things are called alpha in metrics.json.
METRIC_LABELS = {
    ("significance", "alpha"): "significance level (α)",
    ("benchmark", "alpha"): "CAPM alpha (annualised)",
    ("benchmark", "alpha_per_period"): "CAPM alpha per bar",
}
#: Curves of the comparison chart hidden until their legend entry is clicked: the perfect-
#: foresight oracle grows so fast that every other line would look flat next to it.
HIDDEN_BY_DEFAULT = frozenset({"oracle"})
_CHART_CONFIG = {"displaylogo": False, "responsive": True,
                 "modeBarButtonsToRemove": ["sendDataToCloud"]}

_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#e3e6ec; --bg:#f6f7f9; --card:#fff;
        --up:#1a7f37; --down:#c62828; --accent:#1f77b4; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       color:var(--fg); background:var(--bg); }
header { background:#1d2330; color:#fff; padding:18px 28px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header .sub { color:#c9cfdb; font-size:13px; }
main { padding:18px 28px 40px; max-width:1400px; margin:0 auto; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
          padding:14px 18px; margin:0 0 18px; }
h2 { font-size:17px; margin:0 0 10px; }
h3 { font-size:14px; margin:14px 0 6px; color:var(--muted); text-transform:uppercase;
     letter-spacing:.04em; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(140px,1fr)); gap:12px;
         margin-bottom:18px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px;
        padding:10px 14px; }
.card .label { color:var(--muted); font-size:12px; }
.card .value { font-size:20px; font-weight:600; margin-top:2px; overflow-wrap:break-word; }
.card .hint { color:var(--muted); font-size:11px; }
.pos { color:var(--up); } .neg { color:var(--down); }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { padding:4px 8px; border-bottom:1px solid var(--line); text-align:right;
         white-space:nowrap; }
th { background:#f0f2f5; font-weight:600; position:sticky; top:0; }
td:first-child, th:first-child { text-align:left; }
tr.highlight td { background:#eef5fc; font-weight:600; }
tr.gap td { text-align:center; color:var(--muted); font-style:italic; }
.scroll { max-height:520px; overflow:auto; border:1px solid var(--line); }
.metrics { display:grid; grid-template-columns:repeat(auto-fill,minmax(380px,1fr)); gap:6px 24px; }
.metrics td { text-align:left; } .metrics td + td { text-align:right; }
.chart { width:100%; height:460px; margin-bottom:8px; }
.note { color:var(--muted); font-size:12px; margin:4px 0 8px; }
.warning { background:#fdecea; border:1px solid #f5c2c0; color:var(--down); border-radius:8px;
           padding:10px 14px; margin:0 0 18px; font-weight:600; }
.plots img { max-width:100%; border:1px solid var(--line); margin:6px 0 14px; display:block; }
details { margin:6px 0; } summary { cursor:pointer; font-weight:600; }
pre { background:#f6f8fa; border:1px solid var(--line); padding:10px; overflow:auto;
      max-height:600px; font-size:12px; }
nav a { color:#c9cfdb; margin-right:14px; font-size:13px; text-decoration:none; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px; }
"""


def _require_plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the HTML report needs plotly: pip install 'rltrade[report]'") from exc
    return go


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool | str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt_number(value: Any, *, percent: bool = False, digits: int = 4) -> str:
    """A readable number; ``—`` for None / NaN / non-numbers that are not strings."""
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    number = _finite(value)
    if number is None:
        return "—"
    if percent:
        return f"{number:.2%}"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if number != 0 and (abs(number) >= 1e7 or abs(number) < 1e-4):
        return f"{number:.4g}"
    if abs(number) >= 1000:
        return f"{number:,.2f}"
    return f"{number:.{digits}g}" if abs(number) < 1 else f"{number:,.{digits}f}".rstrip(
        "0").rstrip(".")


def _sign_class(value: Any) -> str:
    number = _finite(value)
    if number is None or number == 0:
        return ""
    return "pos" if number > 0 else "neg"


def _get(mapping: Mapping[str, Any] | None, *path: str) -> Any:
    node: Any = mapping
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _mask_secrets(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {
            str(k): ("***" if looks_like_credential(k) and v not in (None, "") else
                     _mask_secrets(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [_mask_secrets(v) for v in obj]
    return obj


def _pretty_json(obj: Any) -> str:
    if hasattr(obj, "model_dump"):  # a pydantic model (RunConfig)
        obj = obj.model_dump(mode="json")
    plain = json_ready(_mask_secrets(obj), "", [], fallback=str)
    return json.dumps(plain, indent=2, sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


def _card(label: str, value: str, hint: str = "", css: str = "") -> str:
    hint_html = f'<div class="hint">{_esc(hint)}</div>' if hint else ""
    return (f'<div class="card"><div class="label">{_esc(label)}</div>'
            f'<div class="value {css}">{_esc(value)}</div>{hint_html}</div>')


def _bars_run(summary: Mapping[str, Any], steps: pd.DataFrame) -> tuple[Any, Any]:
    """``(bars run, bars requested)`` from the summary (the steps' length when unknown)."""
    run = summary.get("bars_run", summary.get("bars", len(steps)))
    return run, summary.get("bars_requested")


def _early_stop(summary: Mapping[str, Any], steps: pd.DataFrame) -> str:
    """The warning line of a backtest that stopped before the end of its range, or ``""``."""
    if not summary.get("stopped_early"):
        return ""
    run, requested = _bars_run(summary, steps)
    of = f" of {_fmt_number(requested)}" if requested is not None else ""
    end = summary.get("end_time", summary.get("end"))
    on = f" on {format_time(end)}" if end is not None else ""
    reason = summary.get("stop_reason") or "reason not recorded"
    text = (f"Stopped early at bar {_fmt_number(run)}{of}{on}: {reason}. The metrics cover "
            "only the bars that were run.")
    return f'<p class="warning" id="stopped-early" role="alert">{_esc(text)}</p>'


def _cards(summary: Mapping[str, Any], metrics: Mapping[str, Any], curves: Curves,
           steps: pd.DataFrame) -> str:
    perf = metrics.get("performance") or {}
    total = perf.get("total_return", summary.get("total_return"))
    bench_total = _get(metrics, "benchmark", "total_return")
    if bench_total is None and curves.has_benchmark:
        bench_total = total_return(curves.benchmark)
    bench_hint = ("1x through the engine, same costs and bars" if bench_total is not None
                  else "no buy-and-hold recorded")
    excess = _get(metrics, "benchmark", "excess_total_return")
    if excess is None and _finite(total) is not None and _finite(bench_total) is not None:
        excess = float(total) - float(bench_total)
    trades = metrics.get("trades") or {}
    final = summary.get("final_equity")
    if final is None:
        eq = curves.equity[np.isfinite(curves.equity)]
        final = float(eq[-1]) if eq.size else None
    initial = summary.get("initial_equity", _get(metrics, "run", "initial_capital"))
    sig = metrics.get("significance") or {}
    run, requested = _bars_run(summary, steps)
    stopped = bool(summary.get("stopped_early"))
    bars_hint = (f"of {_fmt_number(requested)} requested" if requested is not None else "")
    if stopped:
        bars_hint = f"{bars_hint}, stopped early: {summary.get('stop_reason') or '?'}".lstrip(", ")
    bpy = _get(metrics, "run", "bars_per_year")
    sharpe_hint = "annualised"
    if _finite(bpy) is not None:
        sharpe_hint = (f"annualised, {_fmt_number(round(float(bpy)))} bars/year "
                       f"({_get(metrics, 'run', 'bars_per_year_source') or '?'})")
    cards = [
        _card("Total return", _fmt_number(total, percent=True),
              f"realized {_fmt_number(perf.get('total_return_realized'), percent=True)}",
              _sign_class(total)),
        _card("vs buy-and-hold", _fmt_number(excess, percent=True),
              f"buy-and-hold {_fmt_number(bench_total, percent=True)} ({bench_hint})",
              _sign_class(excess)),
        _card("Sharpe ratio", _fmt_number(perf.get("sharpe"), digits=3), sharpe_hint,
              _sign_class(perf.get("sharpe"))),
        _card("Max drawdown", _fmt_number(perf.get("max_drawdown"), percent=True), "",
              "neg" if (_finite(perf.get("max_drawdown")) or 0) < 0 else ""),
        _card("Win rate", _fmt_number(trades.get("win_rate"), percent=True),
              f"profit factor {_fmt_number(trades.get('profit_factor'), digits=3)}"),
        _card("PSR / DSR", f"{_fmt_number(sig.get('psr'), digits=2)} / "
              f"{_fmt_number(sig.get('dsr'), digits=2)}",
              f"P(Sharpe > 0) / > best of {_fmt_number(sig.get('n_trials'))} trials"),
        _card("Trades", _fmt_number(trades.get("count")),
              f"{_fmt_number(trades.get('wins'))} won, {_fmt_number(trades.get('losses'))} lost"
              if trades else "no trade list"),
        _card("Bars run", _fmt_number(run), bars_hint, "neg" if stopped else ""),
        _card("Final equity", _fmt_number(final), f"from {_fmt_number(initial)}",
              _sign_class((_finite(final) or 0) - (_finite(initial) or 0))),
    ]
    costs = metrics.get("costs") or summary.get("costs")
    if isinstance(costs, Mapping):
        cards.append(_card("Costs", _fmt_number(costs.get("total"), digits=2),
                           _cost_breakdown(costs)))
    flags = []
    if summary.get("bankrupt"):
        flags.append("bankrupt")
    if summary.get("force_closed"):
        flags.append("position force-closed at the end")
    flag_html = (f'<p class="note neg">{_esc("; ".join(flags))}</p>' if flags else "")
    return f'<div class="cards">{"".join(cards)}</div>{flag_html}'


def _cost_breakdown(costs: Mapping[str, Any]) -> str:
    """``fees 12.3, spread 4.5, slippage 1.2, funding -0.8`` (funding: negative when
    received)."""
    names = (("fees", "fees"), ("spread_cost", "spread"), ("slippage_cost", "slippage"),
             ("funding", "funding"))
    return ", ".join(f"{label} {_fmt_number(costs.get(key), digits=2)}" for key, label in names
                     if key in costs)


def _table(frame: pd.DataFrame, *, percent_columns: AbstractSet[str] = frozenset(),
           highlight: str | None = None, gap_after: int | None = None, gap_text: str = "") -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    rows = []
    for i, (_, row) in enumerate(frame.iterrows()):
        cells = []
        for column, value in row.items():
            if isinstance(value, pd.Timestamp):
                text = value.strftime("%Y-%m-%d %H:%M")
            else:
                text = _fmt_number(value, percent=str(column) in percent_columns)
            cells.append(f"<td>{_esc(text)}</td>")
        first = row.iloc[0] if len(row) else None
        css = ' class="highlight"' if highlight is not None and str(first) == highlight else ""
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
        if gap_after is not None and i == gap_after:
            rows.append(f'<tr class="gap"><td colspan="{len(frame.columns)}">'
                        f"{_esc(gap_text)}</td></tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _comparison_section(comparison: pd.DataFrame | None, highlight: Any) -> str:
    if comparison is None or len(comparison) == 0:
        return ""
    frame = comparison.copy()
    if "name" not in frame.columns:
        frame = frame.reset_index()
    return ('<section id="comparison"><h2>Comparison</h2>'
            '<p class="note">One row per agent or baseline on the same bars; '
            "returns and drawdown in %.</p>"
            f'<div class="scroll">{_table(frame, percent_columns=_PERCENT_COLUMNS, highlight=None if highlight is None else str(highlight))}'  # noqa: E501
            "</div></section>")


def _trades_section(trades: pd.DataFrame | None) -> str:
    if trades is None or len(trades) == 0:
        return ('<section id="trades"><h2>Trades</h2><p class="note">No closed trades.</p>'
                "</section>")
    n = len(trades)
    frame = trades.reset_index(drop=True)
    frame.insert(0, "#", np.arange(1, n + 1))
    for column in ("entry_time", "exit_time"):
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce")
    gap_after, gap_text, note = None, "", f"{n:,} trades. Times in UTC."
    if n > MAX_TRADE_ROWS:
        half = MAX_TRADE_ROWS // 2
        frame = pd.concat([frame.iloc[:half], frame.iloc[-half:]])
        gap_after = half - 1
        gap_text = f"… {n - 2 * half:,} trades not shown …"
        note = (f"{n:,} trades: the first {half:,} and the last {half:,} are listed, "
                f"{n - 2 * half:,} in between are left out. Times in UTC.")
    return (f'<section id="trades"><h2>Trades</h2><p class="note">{_esc(note)}</p>'
            f'<div class="scroll">{_table(frame, gap_after=gap_after, gap_text=gap_text)}</div>'
            "</section>")


def _flatten(section: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in section.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if not value:
                rows.append((name, "(none)"))
            elif str(key).endswith("_counts") and all(v == 0 for v in value.values()):
                rows.append((name, f"0 in all {len(value)} columns"))
            else:
                if str(key).endswith("_counts"):
                    value = {k: v for k, v in value.items() if v != 0}
                rows.extend(_flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            rows.append((name, ", ".join(_fmt_number(v) for v in value) or "(none)"))
        else:
            rows.append((name, value))
    return rows


def _metrics_section(metrics: Mapping[str, Any]) -> str:
    undefined = set(metrics.get("undefined") or [])
    names = [s for s in _SECTIONS if s in metrics] + [
        s for s in metrics if s not in _SECTIONS and s != "undefined"
    ]
    blocks = []
    for name in names:
        section = metrics.get(name)
        if section is None:
            body = '<p class="note">not available (its input was not given)</p>'
        elif not isinstance(section, Mapping):
            body = f"<p>{_esc(_fmt_number(section))}</p>"
        else:
            rows = []
            for key, value in _flatten(section):
                leaf = key.rsplit(".", 1)[-1]
                text = _fmt_number(value, percent=leaf in _PERCENT_KEYS)
                title = (' title="undefined on this data"'
                         if f"{name}.{key}" in undefined else "")
                label = METRIC_LABELS.get((name, key), key)
                tip = f' title="{_esc(name)}.{_esc(key)}"' if label != key else ""
                rows.append(f"<tr><td{tip}>{_esc(label)}</td><td{title}>{_esc(text)}</td></tr>")
            body = f"<table><tbody>{''.join(rows)}</tbody></table>"
        blocks.append(f"<div><h3>{_esc(name)}</h3>{body}</div>")
    note = ("All ratios and returns are fractions shown in %; money in the account currency. "
            "— marks a value that is undefined on this data (e.g. a Sortino ratio without "
            "losing bars) or whose input was not given.")
    return (f'<section id="metrics"><h2>Metrics</h2><p class="note">{_esc(note)}</p>'
            f'<div class="metrics">{"".join(blocks)}</div></section>')


def _json_section(config: Any, metadata: Any) -> str:
    parts = []
    for label, obj in (("Config (resolved)", config), ("Metadata", metadata)):
        if obj is None:
            continue
        parts.append(f"<details><summary>{_esc(label)}</summary>"
                     f"<pre>{_esc(_pretty_json(obj))}</pre></details>")
    if not parts:
        return ""
    return ('<section id="config"><h2>Config and metadata</h2>'
            '<p class="note">Values of keys that look like secrets are masked.</p>'
            f"{''.join(parts)}</section>")


def _plots_section(plots: Mapping[str, Any] | None) -> str:
    if not plots:
        return ""
    images = []
    for name, path in plots.items():
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            log.warning("plot {} not embedded: {}", name, exc)
            continue
        if not data.startswith(b"\x89PNG"):
            log.warning("plot {} not embedded: {} is not a PNG", name, path)
            continue
        encoded = base64.b64encode(data).decode("ascii")
        images.append(f"<h3>{_esc(str(name).replace('_', ' '))}</h3>"
                      f'<img alt="{_esc(name)}" src="data:image/png;base64,{encoded}">')
    if not images:
        return ""
    return f'<section id="plots" class="plots"><h2>Plots</h2>{"".join(images)}</section>'


# --------------------------------------------------------------------------------------------
# interactive charts
# --------------------------------------------------------------------------------------------


def _naive(index: pd.DatetimeIndex) -> np.ndarray:
    """Epoch milliseconds (UTC) as float64, NaN for NaT: compact in the page (base64) and read
    as dates by plotly's ``type="date"`` axes."""
    index = pd.DatetimeIndex(index)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    ms = index.as_unit("ns").asi8.astype(np.float64) / 1e6
    ms[np.asarray(index.isna())] = np.nan
    return ms


def _thin_title(title: str, n: int, kept: int) -> str:
    if kept < n:
        return f"{title} <sup>(downsampled: {kept:,} of {n:,} bars, min/max per bucket)</sup>"
    return title


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "template": "plotly_white",
        "margin": {"l": 60, "r": 30, "t": 60, "b": 40},
        "hovermode": "x unified",
        "legend": {"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right",
                   "yanchor": "bottom"},
        **extra,
    }


def _date_axes(fig: Any) -> Any:
    """x values are epoch milliseconds: show them as UTC dates."""
    fig.update_xaxes(type="date")
    return fig


def _array(values: np.ndarray) -> np.ndarray:
    """float64 values with non-finite ones as NaN (a gap in the line)."""
    out = np.array(values, dtype=np.float64)
    out[~np.isfinite(out)] = np.nan
    return out


def _equity_figure(go: Any, curves: Curves) -> Any:
    idx = minmax_indices(MAX_CHART_POINTS, curves.equity, curves.benchmark)
    x = _naive(curves.index[idx])
    fig = go.Figure()
    fig.add_scatter(x=x, y=_array(curves.equity[idx]), name="agent", mode="lines",
                    line={"color": "#1f77b4", "width": 1.6})
    if curves.has_benchmark:
        fig.add_scatter(x=x, y=_array(curves.benchmark[idx]), name=curves.benchmark_label,
                        mode="lines", line={"color": "#7f7f7f", "width": 1.2, "dash": "dash"})
    fig.update_layout(**_layout(_thin_title("Equity vs buy-and-hold", curves.equity.size,
                                            idx.size), yaxis={"title": "equity"},
                                xaxis={"title": "time (UTC)"}))
    return _date_axes(fig)


def _drawdown_figure(go: Any, curves: Curves) -> Any:
    dd, bench_dd = curves.equity_drawdown, curves.benchmark_drawdown
    idx = minmax_indices(MAX_CHART_POINTS, dd, bench_dd)
    x = _naive(curves.index[idx])
    fig = go.Figure()
    fig.add_scatter(x=x, y=_array(dd[idx]), name="agent", mode="lines", fill="tozeroy",
                    line={"color": "#c62828", "width": 1})
    if curves.has_benchmark:
        fig.add_scatter(x=x, y=_array(bench_dd[idx]), name=curves.benchmark_label, mode="lines",
                        line={"color": "#7f7f7f", "width": 1, "dash": "dash"})
    fig.update_layout(**_layout(_thin_title("Drawdown", dd.size, idx.size),
                                yaxis={"title": "drawdown", "tickformat": ".1%"},
                                xaxis={"title": "time (UTC)"}))
    return _date_axes(fig)


def _position_figure(go: Any, curves: Curves, trades: pd.DataFrame | None) -> Any:
    from plotly.subplots import make_subplots

    idx = minmax_indices(MAX_CHART_POINTS, curves.close, curves.position)
    x = _naive(curves.index[idx])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32],
                        vertical_spacing=0.04)
    fig.add_scatter(x=x, y=_array(curves.close[idx]), name="close", mode="lines",
                    line={"color": "#333333", "width": 1}, row=1, col=1)
    title = _thin_title("Position over price", curves.close.size, idx.size)
    if trades is not None and len(trades) and {"entry_time", "entry_price"} <= set(
        trades.columns
    ):
        keep = stride_indices(len(trades), MAX_CHART_MARKERS)
        t = trades.iloc[keep]
        if keep.size < len(trades):
            title += f" <sup>({keep.size:,} of {len(trades):,} trades marked)</sup>"
        side = (t["side"].astype(str).str.lower() if "side" in t.columns
                else pd.Series("long", index=t.index))
        pnl = numeric(t["net_pnl"]) if "net_pnl" in t.columns else np.full(len(t), np.nan)
        entry_time = _naive(pd.DatetimeIndex(pd.to_datetime(t["entry_time"], utc=True,
                                                            errors="coerce")))
        hover = [f"{_esc(s)} net {_fmt_number(p)}" for s, p in zip(side, pnl, strict=True)]
        for label, mask, symbol, color in (
            ("long entry", (side != "short").to_numpy(), "triangle-up", "#1a7f37"),
            ("short entry", (side == "short").to_numpy(), "triangle-down", "#c62828"),
        ):
            if mask.any():
                fig.add_scatter(x=entry_time[mask], y=_array(numeric(t["entry_price"])[mask]),
                                mode="markers", name=label, text=np.asarray(hover)[mask],
                                marker={"symbol": symbol, "size": 9, "color": color,
                                        "line": {"width": 0.5, "color": "black"}},
                                row=1, col=1)
        if {"exit_time", "exit_price"} <= set(t.columns):
            exit_time = _naive(pd.DatetimeIndex(pd.to_datetime(t["exit_time"], utc=True,
                                                               errors="coerce")))
            fig.add_scatter(x=exit_time, y=_array(numeric(t["exit_price"])), mode="markers",
                            name="exit", text=hover,
                            marker={"symbol": "x", "size": 8,
                                    "color": np.where(pnl > 0, "#1a7f37", "#c62828").tolist()},
                            row=1, col=1)
    fig.add_scatter(x=x, y=_array(curves.position[idx]), name="position (units)", mode="lines",
                    line={"color": "#ff7f0e", "width": 1, "shape": "hv"}, fill="tozeroy",
                    row=2, col=1)
    fig.update_layout(**_layout(title))
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="position", row=2, col=1)
    fig.update_xaxes(title_text="time (UTC)", row=2, col=1)
    return _date_axes(fig)


def _comparison_figure(go: Any, equity: Mapping[str, Any], index: pd.DatetimeIndex,
                       hidden: AbstractSet[str]) -> Any:
    fig = go.Figure()
    thinned = False
    hidden_shown: list[str] = []
    for name, series in equity.items():
        if isinstance(series, pd.Series) and isinstance(series.index, pd.DatetimeIndex):
            s_index = utc_index(series)
            values = numeric(series)
        else:
            values = numeric(series)
            if values.size != index.size:
                log.warning("comparison curve {} skipped: {} values for {} bars", name,
                            values.size, index.size)
                continue
            s_index = index
        values = np.where(values > 0, values, np.nan)  # a log axis has no place for <= 0
        idx = minmax_indices(MAX_CHART_POINTS, values)
        thinned = thinned or idx.size < values.size
        visible: bool | str = True
        if str(name) in hidden:
            visible = "legendonly"
            hidden_shown.append(str(name))
        fig.add_scatter(x=_naive(s_index[idx]), y=_array(values[idx]), name=_esc(name),
                        mode="lines", line={"width": 1.2}, visible=visible)
    title = "Equity of the compared agents and baselines <sup>(log scale"
    if hidden_shown:
        title += f"; {_esc(', '.join(hidden_shown))} hidden: click the legend to show"
    title += ")</sup>"
    if thinned:
        title += " <sup>(downsampled, min/max per bucket)</sup>"
    fig.update_layout(**_layout(title, yaxis={"title": "equity (log scale)", "type": "log"},
                                xaxis={"title": "time (UTC)"}))
    return _date_axes(fig)


def _chart_div(fig: Any, div_id: str) -> str:
    import plotly.io as pio

    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                       config=_CHART_CONFIG, default_height="460px", default_width="100%")


def _charts_section(go: Any, curves: Curves, trades: pd.DataFrame | None,
                    comparison_equity: Mapping[str, Any] | None,
                    hidden: AbstractSet[str] = HIDDEN_BY_DEFAULT) -> str:
    builders: list[tuple[str, Any]] = [
        ("chart-equity", lambda: _equity_figure(go, curves)),
        ("chart-drawdown", lambda: _drawdown_figure(go, curves)),
        ("chart-position", lambda: _position_figure(go, curves, trades)),
    ]
    if comparison_equity:
        builders.append(("chart-comparison",
                         lambda: _comparison_figure(go, comparison_equity, curves.index,
                                                    hidden)))
    divs = []
    for div_id, build in builders:
        try:
            with np.errstate(all="ignore"):
                divs.append(f'<div class="chart-box">{_chart_div(build(), div_id)}</div>')
        except Exception as exc:  # one broken chart must not take the report down
            log.opt(exception=exc).warning("chart {} failed and was left out: {}", div_id, exc)
            divs.append(f'<p class="note neg">Chart {_esc(div_id)} could not be drawn: '
                        f"{_esc(exc)}</p>")
    return f'<section id="charts"><h2>Charts</h2>{"".join(divs)}</section>'


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    # "</script" cannot occur inside an inline script element; plotly.js has none, but be sure.
    return get_plotlyjs().replace("</script", "<\\/script")


# --------------------------------------------------------------------------------------------
# the public function
# --------------------------------------------------------------------------------------------


def write_report(
    path: str | Path,
    *,
    steps: pd.DataFrame,
    trades: pd.DataFrame | None,
    summary: Mapping[str, Any] | None,
    metrics: Mapping[str, Any] | None,
    benchmark_equity: pd.Series | np.ndarray | None = None,
    comparison: pd.DataFrame | None = None,
    comparison_equity: Mapping[str, pd.Series | Sequence[float]] | None = None,
    config: Any = None,
    metadata: Mapping[str, Any] | None = None,
    plots: Mapping[str, str | Path] | None = None,
    title: str | None = None,
    hidden_curves: AbstractSet[str] = HIDDEN_BY_DEFAULT,
) -> Path:
    """Write the self-contained HTML report of one backtest to ``path``; return the path.

    :param path: the file to write (``report.html``); its folder is created if needed.
    :param steps: one row per bar, indexed by UTC timestamps, with ``close``, ``equity`` and
        ``position`` (see the backtest runner).
    :param trades: closed trades, or ``None`` / empty for none.
    :param summary: the backtest summary (``name``, ``initial_equity``, ``final_equity``,
        ``policy``, ``backtest_id``, ``start``, ``end``, ``bars_requested``, ``bars_run``,
        ``stopped_early``, ``stop_reason``, ``end_time``...); missing keys are shown as unknown.
        When ``stopped_early`` is true a warning line says where and why.
    :param metrics: the dict from :func:`rltrade.evaluation.compute_metrics` (None values and
        missing sections are fine).
    :param benchmark_equity: buy-and-hold equity aligned with ``steps``; default: the steps'
        ``benchmark_equity`` column (the backtest's buy-and-hold through the engine), else none
        (never rebuilt from the close, which would know no costs).
    :param comparison: one row per agent/baseline (``name``, ``total_return``, ``sharpe``, ...).
    :param comparison_equity: name -> equity curve (a Series on timestamps, or aligned with
        ``steps``) for the comparison chart (log scale).
    :param config: the run's resolved config (a dict or a pydantic model), shown as JSON
        (secret-looking keys masked).
    :param metadata: the run's metadata.json, shown as JSON.
    :param plots: name -> PNG path (from :func:`~rltrade.evaluation.plots.write_plots`),
        embedded as images.
    :param title: the page title; default ``"Backtest report: <name>"`` with the summary's
        ``name`` (the run's name), else its ``policy``.
    :param hidden_curves: comparison curves hidden until their legend entry is clicked
        (default: the perfect-foresight ``oracle``).
    :return: the path written.
    :raises DataError: when ``steps`` has no rows or lacks ``close`` / ``equity``.
    """
    go = _require_plotly()
    summary = dict(summary or {})
    metrics = dict(metrics or {})
    initial = _finite(summary.get("initial_equity")) or _finite(
        _get(metrics, "run", "initial_capital"))
    curves = prepare_curves(steps, benchmark_equity=benchmark_equity, initial_equity=initial,
                            timeframe=_get(metrics, "run", "timeframe"),
                            bars_per_year=_finite(_get(metrics, "run", "bars_per_year")),
                            bars_per_year_source=_get(metrics, "run", "bars_per_year_basis"))
    name = summary.get("name") or summary.get("policy")
    page_title = title or (f"Backtest report: {name}" if name else "Backtest report")
    subtitle = default_subtitle(steps, summary)
    timeframe = _get(metrics, "run", "timeframe")
    if timeframe:
        subtitle += f" · {timeframe}"

    body = [
        _early_stop(summary, steps),
        _cards(summary, metrics, curves, steps),
        _comparison_section(comparison, name),
        _charts_section(go, curves, trades, comparison_equity, hidden_curves),
        _plots_section(plots),
        _trades_section(trades),
        _metrics_section(metrics) if metrics else "",
        _json_section(config, metadata),
    ]
    nav_items = [("charts", "Charts"), ("trades", "Trades"), ("metrics", "Metrics")]
    if comparison is not None and len(comparison):
        nav_items.insert(0, ("comparison", "Comparison"))
    if plots:
        nav_items.insert(-2, ("plots", "Plots"))
    if config is not None or metadata is not None:
        nav_items.append(("config", "Config"))
    document = html_page(page_title, subtitle, nav_items, "".join(part for part in body if part))
    out = Path(path)
    atomic_write_bytes(out, document.encode("utf-8"))
    log.info("wrote report {} ({:.1f} MB)", out, out.stat().st_size / 1e6)
    return out


# --------------------------------------------------------------------------------------------
# page pieces other reports reuse (the walk-forward report, rltrade.experiments.report)
# --------------------------------------------------------------------------------------------


def html_page(title: str, subtitle: str, nav_items: Sequence[tuple[str, str]],
              body: str) -> str:
    """A whole self-contained page (this module's style, plotly.js inline, header, navigation,
    footer) around ``body``.

    :param title: the page title (escaped here).
    :param subtitle: the line under it (escaped here).
    :param nav_items: ``(anchor, label)`` links to the body's sections.
    :param body: HTML of the sections (already escaped).
    """
    nav = "".join(f'<a href="#{a}">{_esc(label)}</a>' for a, label in nav_items)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="rltrade {_esc(rltrade.__version__)}">
<title>{_esc(title)}</title>
<style>{_CSS}</style>
<script id="plotlyjs" type="text/javascript">{_plotly_js()}</script>
</head>
<body>
<header><h1>{_esc(title)}</h1><div class="sub">{_esc(subtitle)}</div>
<nav>{nav}</nav></header>
<main>
{body}
</main>
<footer>Generated {_esc(generated)} by rltrade {_esc(rltrade.__version__)}.
Self-contained: works offline.</footer>
</body>
</html>
"""


def table_html(frame: pd.DataFrame, *, percent_columns: AbstractSet[str] = frozenset()) -> str:
    """``frame`` as an HTML table in the report's number format (``percent_columns`` in %)."""
    return _table(frame, percent_columns=percent_columns)


def chart_layout(title: str, **extra: Any) -> dict[str, Any]:
    """The report's plotly layout (title, template, margins, legend) with ``extra`` keys."""
    return _layout(title, **extra)


def chart_html(fig: Any, div_id: str) -> str:
    """A plotly figure as a ``div`` of the page (plotly.js comes once, from :func:`html_page`)."""
    return _chart_div(fig, div_id)


def equity_chart_html(equity: Mapping[str, pd.Series], div_id: str,
                      hidden: AbstractSet[str] = HIDDEN_BY_DEFAULT) -> str:
    """The comparison chart of the backtest report (equity curves on timestamps, log scale,
    thinned, ``hidden`` curves shown on a legend click) as a ``div``."""
    go = _require_plotly()
    first = next(iter(equity.values()))
    with np.errstate(all="ignore"):
        return _chart_div(_comparison_figure(go, equity, utc_index(first), hidden), div_id)
