"""PNG plots of one backtest (matplotlib): :func:`write_plots`.

Seven pictures, one function each (listed in :data:`PLOTS`, in this order):

* ``equity``: the agent's equity against buy-and-hold: the benchmark the backtest recorded (the
  steps' ``benchmark_equity`` column: buy-and-hold through the engine at 1x, same costs, same
  bars) or the given ``benchmark_equity``; without either there is no buy-and-hold line (it is
  never rebuilt from ``close / close[0]``, which knows no costs).
* ``drawdown``: ``equity / running peak - 1`` of the agent (and buy-and-hold, dashed).
* ``actions``: discrete actions: how often each action was chosen, labelled by its name
  (``short`` / ``flat`` / ``long`` of :data:`rltrade.envs.schemes.ACTION_SCHEMES`); continuous
  actions (``exposure_sl``: ``action_0`` is the target exposure): the target exposure over time
  and its histogram. Both split into bars where a trade was executed and where not.
* ``position``: the close price with trade entries (▲ long, ▼ short) and exits (✕, green for a
  winning trade, red for a losing one) on top; the position (units) and the gross exposure
  ``position × close / equity`` below.
* ``rolling_sharpe``: the Sharpe ratio of the per-bar returns over a rolling window, annualised
  with the bars per year observed in the data
  (:func:`rltrade.evaluation.series.infer_bars_per_year`) unless ``bars_per_year`` is given.
* ``monthly_returns``: a heatmap of calendar-month returns (UTC) of the equity curve, years by
  months.
* ``reward_vs_return``: each bar's reward against the same bar's equity return, with their
  correlation.

Each plot is drawn on its own :class:`matplotlib.figure.Figure` (pyplot is never used, so no
global figure state leaks and the Agg canvas is used whatever backend the user selected); a
plot that fails, or has nothing to show (no ``reward`` column), is logged and skipped, and the
others are still written. Files are written atomically.

Long runs are thinned before drawing (min/max per bucket, so spikes and drawdowns survive) to
keep plotting fast at a million bars.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from rltrade.data.store import atomic_write_bytes
from rltrade.envs import schemes
from rltrade.envs.schemes import ActionScheme
from rltrade.errors import DataError
from rltrade.evaluation.series import (
    align_benchmark,
    drawdown,
    equity_returns,
    gross_exposure,
    numeric,
    resolve_bars_per_year,
    utc_index,
)
from rltrade.evaluation.significance import ZERO_DISPERSION

__all__ = ["PLOTS", "PlotSkipped", "write_plots"]

log = logger.bind(component="backtest")

#: Points kept per line after min/max thinning (about half as many buckets).
MAX_LINE_POINTS = 4000
#: Trade markers drawn at most (evenly strided beyond that).
MAX_MARKERS = 3000
#: Points in the reward scatter at most (evenly strided beyond that).
MAX_SCATTER_POINTS = 20000
_DPI = 110
_SIZE = (11.0, 5.0)
_AGENT_COLOR = "#1f77b4"
_BENCH_COLOR = "#7f7f7f"
_UP_COLOR = "#2ca02c"
_DOWN_COLOR = "#d62728"


class PlotSkipped(Exception):
    """Raised by a plot function when its input is absent (logged at info level, not a failure)."""


def _require_matplotlib() -> Any:
    """A factory of figures rendered by the Agg canvas (no pyplot, no global backend switch)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'rltrade[report]'") from exc

    def new_figure(**kwargs: Any) -> Any:
        fig = Figure(**kwargs)
        FigureCanvasAgg(fig)
        return fig

    return new_figure


# --------------------------------------------------------------------------------------------
# data preparation, shared with the HTML report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curves:
    """The arrays every picture is drawn from (float64, NaN where unknown)."""

    index: pd.DatetimeIndex  # UTC
    close: np.ndarray
    equity: np.ndarray
    position: np.ndarray
    initial_equity: float
    benchmark: np.ndarray  # all NaN when no benchmark was recorded or given
    benchmark_label: str
    bars_per_year: float
    bars_per_year_source: str  # see rltrade.evaluation.series.resolve_bars_per_year

    @property
    def returns(self) -> np.ndarray:
        """Per-bar simple returns, the first against the initial equity (as in the metrics)."""
        return equity_returns(self.equity, self.initial_equity)

    @property
    def exposure(self) -> np.ndarray:
        """Gross exposure ``|position × close| / equity`` (NaN where equity ``<= 0``)."""
        return gross_exposure(self.position, self.close, self.equity)

    @property
    def has_benchmark(self) -> bool:
        return bool(np.isfinite(self.benchmark).any())

    @property
    def equity_drawdown(self) -> np.ndarray:
        """The agent's drawdown per bar, measured from the initial equity on."""
        return drawdown(np.concatenate([[self.initial_equity], self.equity]))[1:]

    @property
    def benchmark_drawdown(self) -> np.ndarray:
        """Buy-and-hold's drawdown per bar (NaN without a benchmark)."""
        return drawdown(self.benchmark)


#: The column of backtest steps holding the buy-and-hold equity the runner recorded.
BENCHMARK_COLUMN = "benchmark_equity"
#: The label of the benchmark line.
BENCHMARK_LABEL = "buy-and-hold"


def prepare_curves(
    steps: pd.DataFrame,
    *,
    benchmark_equity: Any = None,
    initial_equity: float | None = None,
    timeframe: Any = None,
    bars_per_year: float | None = None,
    bars_per_year_source: str | None = None,
) -> Curves:
    """Validate ``steps`` and derive the curves the plots and the report draw.

    :param steps: one row per bar with ``close`` and ``equity`` (``position`` optional).
    :param benchmark_equity: buy-and-hold equity aligned with ``steps``; default: the steps'
        ``benchmark_equity`` column (what the backtest recorded), else none.
    :param initial_equity: account value before the first bar; default the first equity.
    :param timeframe: the bars' timeframe, for bars per year (inferred when ``None``).
    :param bars_per_year: an explicit annualisation factor (e.g. the metrics' value).
    :param bars_per_year_source: what ``bars_per_year`` came from (default ``"override"``).
    :return: the curves.
    :raises DataError: without rows, ``close`` or ``equity``.
    """
    if not isinstance(steps, pd.DataFrame):
        raise DataError(f"steps must be a pandas DataFrame, got {type(steps).__name__}")
    missing = [c for c in ("close", "equity") if c not in steps.columns]
    if missing:
        raise DataError(f"steps is missing column(s) {missing}; plots need close and equity")
    if len(steps) == 0:
        raise DataError("steps has no rows: there is nothing to plot")
    index = utc_index(steps)
    close = numeric(steps["close"])
    equity = numeric(steps["equity"])
    position = (
        numeric(steps["position"]) if "position" in steps.columns else np.zeros(len(steps))
    )
    start = float(initial_equity) if initial_equity is not None else math.nan
    if not (math.isfinite(start) and start > 0):
        finite = equity[np.isfinite(equity)]
        start = float(finite[0]) if finite.size else 1.0
    if benchmark_equity is None and BENCHMARK_COLUMN in steps.columns:
        benchmark_equity = steps[BENCHMARK_COLUMN]
    if benchmark_equity is not None:
        bench = align_benchmark(benchmark_equity, index)
    else:
        bench = np.full(close.shape, np.nan)
    bpy, source = resolve_bars_per_year(index, timeframe, bars_per_year)
    if bars_per_year is not None and bars_per_year_source:
        source = str(bars_per_year_source)
    return Curves(index, close, equity, position, start, bench, BENCHMARK_LABEL, bpy, source)


def minmax_indices(max_points: int, *series: np.ndarray) -> np.ndarray:
    """Indices that keep each bucket's min and max of every series (first and last kept).

    Returns all indices when the series are short enough. With ``k`` series about
    ``max_points`` indices per series are kept.
    """
    n = series[0].size
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, max_points // 2)
    size = math.ceil(n / buckets)
    padded = buckets * size
    keep = [np.array([0, n - 1])]
    starts = np.arange(buckets) * size
    for values in series:
        v = np.asarray(values, dtype=float)
        lo = np.full(padded, np.inf)
        hi = np.full(padded, -np.inf)
        finite = np.isfinite(v)
        lo[:n][finite] = v[finite]
        hi[:n][finite] = v[finite]
        keep.append(starts + np.argmin(lo.reshape(buckets, size), axis=1))
        keep.append(starts + np.argmax(hi.reshape(buckets, size), axis=1))
        # a gap (NaN) inside a bucket is kept so lines break there instead of bridging it
        nan_pos = np.flatnonzero(~finite)
        if nan_pos.size:
            keep.append(nan_pos[np.unique(nan_pos // size, return_index=True)[1]])
    idx = np.unique(np.concatenate(keep))
    return idx[idx < n]


def stride_indices(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def default_rolling_window(n: int, bars_per_year: float) -> int:
    """About a month of bars (at least 20), but at most a quarter of the run (at least 5)."""
    month = bars_per_year / 12 if math.isfinite(bars_per_year) else 30.0
    window = max(20, round(month))
    return int(max(5, min(window, n // 4)))


def rolling_sharpe(returns: np.ndarray, window: int, bars_per_year: float) -> np.ndarray:
    """Annualised rolling Sharpe ratio (``ddof=1``); NaN where the window has no dispersion."""
    r = pd.Series(returns)
    roll = r.rolling(window, min_periods=max(2, window // 2))
    mean, sd = roll.mean().to_numpy(), roll.std(ddof=1).to_numpy()
    scale = math.sqrt(bars_per_year) if math.isfinite(bars_per_year) else 1.0
    biggest = r.abs().rolling(window, min_periods=1).max().to_numpy()
    with np.errstate(all="ignore"):
        tiny = sd <= ZERO_DISPERSION * biggest
        out = mean / sd * scale
    out[tiny | ~np.isfinite(out)] = np.nan
    return out


def monthly_returns(curves: Curves) -> pd.DataFrame:
    """Calendar-month returns (UTC) of the equity curve: rows = years, columns = 1..12.

    A month's return is its last equity over the previous month's last equity (the initial
    equity for the first month), minus one.
    """
    equity = pd.Series(curves.equity, index=curves.index).dropna()
    if equity.empty:
        raise PlotSkipped("the equity curve has no finite value")
    month_end = equity.groupby([equity.index.year, equity.index.month]).last()
    prev = month_end.shift(1)
    prev.iloc[0] = curves.initial_equity
    with np.errstate(all="ignore"):
        rets = month_end / prev.where(prev > 0) - 1.0
    rets.index = rets.index.set_names(["year", "month"])
    table = rets.unstack("month").reindex(columns=range(1, 13))
    return table.astype(float)


# --------------------------------------------------------------------------------------------
# the seven plots: each takes (fig, curves, steps, trades, ctx) and draws on the empty figure
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    title: str
    subtitle: str
    rolling_window: int | None
    scheme: ActionScheme | None = None


def _x(curves: Curves, idx: np.ndarray) -> np.ndarray:
    return curves.index[idx].tz_convert(None).to_numpy()


def _header(fig: Any, ctx: _Context, what: str) -> None:
    fig.suptitle(f"{ctx.title}: {what}", fontsize=13, x=0.01, ha="left", y=0.99)
    if ctx.subtitle:
        fig.text(0.01, 0.925, ctx.subtitle, fontsize=9, color="#555555", ha="left")


def _thin_note(n: int, kept: int) -> str:
    return f" (thinned: {kept:,} of {n:,} bars, min/max per bucket)" if kept < n else ""


def _plot_equity(
    fig: Any, curves: Curves, steps: pd.DataFrame, trades: pd.DataFrame | None, ctx: _Context
) -> None:
    idx = minmax_indices(MAX_LINE_POINTS, curves.equity, curves.benchmark)
    ax = fig.add_subplot(1, 1, 1)
    x = _x(curves, idx)
    ax.plot(x, curves.equity[idx], color=_AGENT_COLOR, lw=1.3, label="agent")
    if curves.has_benchmark:
        ax.plot(
            x, curves.benchmark[idx], color=_BENCH_COLOR, lw=1.0, ls="--",
            label=curves.benchmark_label,
        )
    ax.axhline(curves.initial_equity, color="#bbbbbb", lw=0.8, zorder=0)
    ax.set_ylabel("equity")
    ax.set_xlabel("time (UTC)" + _thin_note(curves.equity.size, idx.size))
    ax.legend(loc="best", fontsize=9)
    ax.grid(alpha=0.3)
    _header(fig, ctx, "equity vs buy-and-hold" if curves.has_benchmark else
            "equity (no buy-and-hold recorded)")


def _plot_drawdown(
    fig: Any, curves: Curves, steps: pd.DataFrame, trades: pd.DataFrame | None, ctx: _Context
) -> None:
    dd, bench_dd = curves.equity_drawdown, curves.benchmark_drawdown
    idx = minmax_indices(MAX_LINE_POINTS, dd, bench_dd)
    x = _x(curves, idx)
    ax = fig.add_subplot(1, 1, 1)
    ax.fill_between(x, dd[idx] * 100, 0, color=_DOWN_COLOR, alpha=0.35, lw=0, label="agent")
    ax.plot(x, dd[idx] * 100, color=_DOWN_COLOR, lw=0.8)
    if curves.has_benchmark:
        ax.plot(x, bench_dd[idx] * 100, color=_BENCH_COLOR, lw=0.9, ls="--",
                label=curves.benchmark_label)
    finite = dd[np.isfinite(dd)]
    worst = float(finite.min()) if finite.size else math.nan
    ax.set_ylabel("drawdown (%)")
    ax.set_xlabel("time (UTC)" + _thin_note(dd.size, idx.size))
    ax.set_title(f"max drawdown {worst:.2%}" if math.isfinite(worst) else "", fontsize=10)
    if finite.size and worst == 0:
        ax.set_ylim(-1, 0.5)
    ax.legend(loc="lower left", fontsize=9)
    ax.grid(alpha=0.3)
    _header(fig, ctx, "drawdown")


def _executed(steps: pd.DataFrame) -> np.ndarray:
    if "trade_executed" in steps.columns:
        return steps["trade_executed"].fillna(False).to_numpy(dtype=bool)
    return np.zeros(len(steps), dtype=bool)


def _action_values(steps: pd.DataFrame, scheme: ActionScheme | None) -> tuple[np.ndarray, bool]:
    """The decision per bar and whether it is a discrete action (else a target exposure).

    A continuous scheme (``exposure_sl``) records its target exposure as ``action_0``; a
    discrete one its action index as ``action``.
    """
    if "action" in steps.columns:
        values = numeric(steps["action"])
        if scheme is not None:
            return values, scheme.discrete
        a = values[np.isfinite(values)]
        return values, bool(np.all(a == np.round(a))) and np.unique(a).size <= 32
    if "action_0" in steps.columns:
        return numeric(steps["action_0"]), False
    raise PlotSkipped("steps has no action column (action, or action_0 for continuous actions)")


def _plot_discrete_actions(fig: Any, a: np.ndarray, ex: np.ndarray,
                           scheme: ActionScheme | None) -> None:
    ax = fig.add_subplot(1, 1, 1)
    uniq = np.unique(a)
    if scheme is not None and scheme.discrete:
        uniq = np.union1d(np.arange(scheme.n_actions, dtype=float), uniq)
    traded = np.array([np.sum((a == u) & ex) for u in uniq])
    held = np.array([np.sum((a == u) & ~ex) for u in uniq])
    pos = np.arange(uniq.size)
    ax.bar(pos, held, color=_AGENT_COLOR, alpha=0.6, label="no trade executed")
    ax.bar(pos, traded, bottom=held, color="#ff7f0e", alpha=0.8, label="trade executed")
    for p, total in zip(pos, held + traded, strict=True):
        ax.text(p, total, f"{total / a.size:.1%}", ha="center", va="bottom", fontsize=8)
    if scheme is not None:
        ax.set_xticks(pos, [scheme.action_name(v) for v in uniq])
        ax.set_xlabel(f"action ({scheme.name})")
    else:
        ax.set_xticks(pos, [str(int(v)) for v in uniq])
        ax.set_xlabel("action (discrete index; action scheme unknown)")
    ax.set_ylabel("bars")
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3, axis="y")


def _plot_target_exposure(fig: Any, curves: Curves, action: np.ndarray, finite: np.ndarray,
                          ex: np.ndarray) -> None:
    gs = fig.add_gridspec(1, 2, width_ratios=[2.4, 1.0], wspace=0.18)
    ax = fig.add_subplot(gs[0])
    idx = minmax_indices(MAX_LINE_POINTS, action)
    ax.step(_x(curves, idx), action[idx], where="post", color=_AGENT_COLOR, lw=0.8)
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(maxticks=6)  # a narrower panel than the other plots
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.axhline(0, color="#999999", lw=0.6)
    ax.set_ylabel("target exposure (fraction of the limit)")
    ax.set_xlabel("time (UTC)" + _thin_note(action.size, idx.size))
    ax.grid(alpha=0.3)
    a, e = action[finite], ex[finite]
    hist = fig.add_subplot(gs[1], sharey=ax)
    bins = np.linspace(a.min(), a.max(), 41) if a.max() > a.min() else 10
    hist.hist([a[~e], a[e]], bins=bins, stacked=True, orientation="horizontal",
              color=[_AGENT_COLOR, "#ff7f0e"], alpha=0.7,
              label=["no trade executed", "trade executed"])
    hist.set_xlabel("bars")
    hist.tick_params(labelleft=False)
    hist.legend(fontsize=8)
    hist.grid(alpha=0.3)


def _plot_actions(
    fig: Any, curves: Curves, steps: pd.DataFrame, trades: pd.DataFrame | None, ctx: _Context
) -> None:
    action, discrete = _action_values(steps, ctx.scheme)
    finite = np.isfinite(action)
    if not finite.any():
        raise PlotSkipped("no finite action")
    executed = _executed(steps)
    if discrete:
        _plot_discrete_actions(fig, action[finite], executed[finite], ctx.scheme)
        what = "action distribution"
    else:
        _plot_target_exposure(fig, curves, action, finite, executed)
        what = "target exposure (continuous actions)"
    skipped = int((~finite).sum())
    fig.axes[0].set_title(f"{int(finite.sum()):,} decisions" + (
        f", {skipped:,} without a decision left out" if skipped else ""), fontsize=10)
    _header(fig, ctx, what)


def _trade_frame(trades: pd.DataFrame | None) -> pd.DataFrame:
    if trades is None or len(trades) == 0:
        return pd.DataFrame()
    need = {"entry_time", "entry_price"}
    if not need <= set(trades.columns):
        return pd.DataFrame()
    return trades


def _times(values: pd.Series) -> np.ndarray:
    return pd.to_datetime(values, utc=True, errors="coerce").dt.tz_convert(None).to_numpy()


def _plot_position(
    fig: Any, curves: Curves, steps: pd.DataFrame, trades: pd.DataFrame | None, ctx: _Context
) -> None:
    exposure = curves.exposure
    idx = minmax_indices(MAX_LINE_POINTS, curves.close, curves.position)
    x = _x(curves, idx)
    gs = fig.add_gridspec(2, 1, height_ratios=[2.2, 1.0], hspace=0.08)
    ax = fig.add_subplot(gs[0])
    ax2 = fig.add_subplot(gs[1], sharex=ax)
    ax.plot(x, curves.close[idx], color="#333333", lw=0.9, label="close")
    tr = _trade_frame(trades)
    note = ""
    if len(tr):
        keep = stride_indices(len(tr), MAX_MARKERS)
        if keep.size < len(tr):
            note = f" ({keep.size:,} of {len(tr):,} trades marked)"
        t = tr.iloc[keep]
        side = t["side"].astype(str).str.lower() if "side" in t.columns else None
        entry_t, entry_p = _times(t["entry_time"]), numeric(t["entry_price"])
        is_short = (side == "short").to_numpy() if side is not None else np.zeros(len(t), bool)
        ax.scatter(entry_t[~is_short], entry_p[~is_short], marker="^", s=36, color=_UP_COLOR,
                   edgecolor="black", linewidths=0.4, zorder=3, label="long entry")
        if is_short.any():
            ax.scatter(entry_t[is_short], entry_p[is_short], marker="v", s=36,
                       color=_DOWN_COLOR, edgecolor="black", linewidths=0.4, zorder=3,
                       label="short entry")
        if {"exit_time", "exit_price"} <= set(t.columns):
            pnl = numeric(t["net_pnl"]) if "net_pnl" in t.columns else np.zeros(len(t))
            colors = np.where(pnl > 0, _UP_COLOR, _DOWN_COLOR)
            ax.scatter(_times(t["exit_time"]), numeric(t["exit_price"]), marker="x", s=30,
                       c=colors, linewidths=1.2, zorder=3, label="exit (green = win)")
    ax.set_ylabel("price")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(("no trades" if not len(tr) else f"{len(tr):,} trades") + note, fontsize=10)
    ax.tick_params(labelbottom=False)
    ax2.fill_between(x, exposure[idx] * np.sign(curves.position[idx]), 0, step="post",
                     color=_AGENT_COLOR, alpha=0.35, lw=0)
    ax2.set_ylabel("exposure (± × equity)", fontsize=9)
    ax2.axhline(0, color="#999999", lw=0.6)
    ax2.grid(alpha=0.3)
    ax3 = ax2.twinx()
    ax3.step(x, curves.position[idx], where="post", color="#ff7f0e", lw=0.8)
    ax3.set_ylabel("position (units)", fontsize=9, color="#ff7f0e")
    ax2.set_xlabel("time (UTC)" + _thin_note(curves.close.size, idx.size))
    _header(fig, ctx, "position and exposure over price")


def _plot_rolling_sharpe(
    fig: Any, curves: Curves, steps: pd.DataFrame, trades: pd.DataFrame | None, ctx: _Context
) -> None:
    returns = curves.returns
    window = ctx.rolling_window or default_rolling_window(returns.size, curves.bars_per_year)
    window = int(max(2, window))
    sharpe = rolling_sharpe(returns, window, curves.bars_per_year)
    idx = minmax_indices(MAX_LINE_POINTS, sharpe)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(_x(curves, idx), sharpe[idx], color=_AGENT_COLOR, lw=1.0)
    ax.axhline(0, color="#999999", lw=0.7)
    ax.set_ylabel("annualised Sharpe ratio")
    ax.set_xlabel("time (UTC)" + _thin_note(sharpe.size, idx.size))
    if math.isfinite(curves.bars_per_year):
        note = f"{curves.bars_per_year:,.1f} bars/year ({curves.bars_per_year_source})"
    else:
        note = "not annualised (unknown timeframe)"
    ax.set_title(f"window {window:,} bars, {note}", fontsize=10)
    if not np.isfinite(sharpe).any():
        ax.text(0.5, 0.5, "undefined: no return dispersion in any window", ha="center",
                va="center", transform=ax.transAxes, color="#777777")
        ax.set_xlim(_x(curves, np.array([0]))[0], _x(curves, np.array([-1]))[0])
        ax.set_ylim(-1, 1)
    ax.grid(alpha=0.3)
    _header(fig, ctx, "rolling Sharpe ratio")


def _plot_monthly_returns(
    fig: Any, curves: Curves, steps: pd.DataFrame, trades: pd.DataFrame | None, ctx: _Context
) -> None:
    table = monthly_returns(curves)
    values = table.to_numpy(dtype=float) * 100
    finite = values[np.isfinite(values)]
    limit = float(np.max(np.abs(finite))) if finite.size else 1.0
    limit = limit if limit > 0 else 1.0
    ax = fig.add_subplot(1, 1, 1)
    masked = np.ma.masked_invalid(values)
    ax.set_facecolor("#eeeeee")  # months without data
    image = ax.imshow(masked, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
                              "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(table.index)), [str(y) for y in table.index])
    if values.size <= 12 * 30:
        for (row, col), value in np.ndenumerate(values):
            if np.isfinite(value):
                dark = abs(value) > 0.6 * limit
                ax.text(col, row, f"{value:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label="return (%)")
    ax.set_title("calendar months (UTC), % return", fontsize=10)
    _header(fig, ctx, "monthly returns")


def _plot_reward_vs_return(
    fig: Any, curves: Curves, steps: pd.DataFrame, trades: pd.DataFrame | None, ctx: _Context
) -> None:
    if "reward" not in steps.columns:
        raise PlotSkipped("steps has no reward column")
    reward = numeric(steps["reward"])
    returns = curves.returns
    ok = np.isfinite(reward) & np.isfinite(returns)
    if not ok.any():
        raise PlotSkipped("no bar with a finite reward and return")
    r, w = returns[ok] * 100, reward[ok]
    keep = stride_indices(r.size, MAX_SCATTER_POINTS)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(r[keep], w[keep], s=6, alpha=0.35, color=_AGENT_COLOR, lw=0)
    corr = math.nan
    if r.size >= 2 and np.std(r) > 0 and np.std(w) > 0:
        corr = float(np.corrcoef(r, w)[0, 1])
    title = f"correlation {corr:.3f}" if math.isfinite(corr) else "correlation undefined"
    if keep.size < r.size:
        title += f" ({keep.size:,} of {r.size:,} bars shown)"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("bar return of equity (%)")
    ax.set_ylabel("reward")
    ax.axhline(0, color="#999999", lw=0.6)
    ax.axvline(0, color="#999999", lw=0.6)
    ax.grid(alpha=0.3)
    _header(fig, ctx, "reward vs return")


PlotFunction = Callable[[Any, Curves, pd.DataFrame, "pd.DataFrame | None", _Context], None]

#: name -> plot function, in the order they are drawn; the file is ``<name>.png``.
PLOTS: dict[str, PlotFunction] = {
    "equity": _plot_equity,
    "drawdown": _plot_drawdown,
    "actions": _plot_actions,
    "position": _plot_position,
    "rolling_sharpe": _plot_rolling_sharpe,
    "monthly_returns": _plot_monthly_returns,
    "reward_vs_return": _plot_reward_vs_return,
}


def default_subtitle(steps: pd.DataFrame, summary: Mapping[str, Any] | None = None) -> str:
    """``backtest <id> · <policy> · <start> → <end> · <bars> bars`` from what is known."""
    parts: list[str] = []
    summary = summary or {}
    if summary.get("backtest_id"):
        parts.append(f"backtest {summary['backtest_id']}")
    if summary.get("policy"):
        parts.append(f"agent {summary['policy']}")
    start, end = summary.get("start"), summary.get("end")
    if (start is None or end is None) and isinstance(steps.index, pd.DatetimeIndex) and len(
        steps
    ):
        start, end = steps.index[0], steps.index[-1]
    if start is not None and end is not None:
        parts.append(f"{format_time(start)} → {format_time(end)}")
    parts.append(f"{len(steps):,} bars")
    return " · ".join(parts)


def format_time(value: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM UTC`` (a naive one is taken as UTC); anything that is
    not a timestamp as its text.

    :param value: a timestamp, an ISO string, or anything else.
    :return: the formatted time.
    """
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return str(value)
    if ts is pd.NaT:
        return str(value)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def write_plots(
    steps: pd.DataFrame,
    trades: pd.DataFrame | None,
    out_dir: str | Path,
    *,
    benchmark_equity: pd.Series | np.ndarray | None = None,
    title: str = "Backtest",
    subtitle: str | None = None,
    rolling_window: int | None = None,
    timeframe: str | None = None,
    initial_equity: float | None = None,
    action_scheme: str | None = None,
    bars_per_year: float | None = None,
) -> dict[str, Path]:
    """Draw the seven PNG plots of a backtest into ``out_dir``; return name -> path written.

    :param steps: one row per bar, indexed by UTC timestamps, with ``close`` and ``equity``;
        used when present: ``position``, ``action`` (discrete) or ``action_0`` (continuous
        target exposure), ``trade_executed``, ``reward``, ``benchmark_equity``.
    :param trades: closed trades (``entry_time``, ``entry_price``, ``exit_time``,
        ``exit_price``, ``side``, ``net_pnl``), or ``None`` / empty for none.
    :param out_dir: folder to write ``<name>.png`` into (created if needed).
    :param benchmark_equity: buy-and-hold equity aligned with ``steps`` (a Series on the same
        timestamps, or an array of the same length); default: the steps' ``benchmark_equity``
        column (the backtest's buy-and-hold), else no benchmark line.
    :param title: first line of every picture.
    :param subtitle: second line (backtest id, range, agent); default: range and bar count.
    :param rolling_window: bars in the rolling Sharpe window; default about a month of bars.
    :param timeframe: bar timeframe (``"1h"``); default: inferred from the timestamps' spacing.
    :param initial_equity: account value before the first bar (returns and drawdown start
        there, as in the metrics); default: the first equity.
    :param action_scheme: the env's action scheme (``discrete3``...; the backtest summary's
        ``config.action_scheme``): discrete actions are labelled by name; default: inferred
        from the columns, discrete actions labelled by index.
    :param bars_per_year: annualisation factor of the rolling Sharpe ratio; default: observed
        in the data (:func:`rltrade.evaluation.series.infer_bars_per_year`).
    :return: the plots that were written; a plot that failed is logged and missing.
    :raises DataError: when ``steps`` cannot be plotted at all (no rows, no equity/close).
    """
    new_figure = _require_matplotlib()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves = prepare_curves(
        steps, benchmark_equity=benchmark_equity, initial_equity=initial_equity,
        timeframe=timeframe, bars_per_year=bars_per_year,
    )
    ctx = _Context(
        title=str(title),
        subtitle=default_subtitle(steps) if subtitle is None else str(subtitle),
        rolling_window=rolling_window,
        scheme=None if action_scheme is None else schemes.scheme(action_scheme),
    )
    written: dict[str, Path] = {}
    for name, function in list(PLOTS.items()):
        fig = new_figure(figsize=_SIZE, dpi=_DPI, layout="none")
        try:
            with np.errstate(all="ignore"):
                function(fig, curves, steps, trades, ctx)
                fig.subplots_adjust(left=0.07, right=0.93, top=0.86, bottom=0.12)
                buffer = io.BytesIO()
                fig.savefig(buffer, format="png", dpi=_DPI)
            path = out / f"{name}.png"
            atomic_write_bytes(path, buffer.getvalue())
            written[name] = path
        except PlotSkipped as why:
            log.info("plot {} skipped: {}", name, why)
        except Exception as exc:  # a broken plot must not take the others down
            log.opt(exception=exc).warning("plot {} failed and was skipped: {}", name, exc)
        finally:
            fig.clear()
            del fig
    log.info("wrote {} of {} plots to {}", len(written), len(PLOTS), out)
    return written
