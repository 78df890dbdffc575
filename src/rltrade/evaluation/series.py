"""Return, equity and index helpers shared by the metrics, the plots and the report.

One definition each, so a number drawn in a plot is the number in ``metrics.json``:

* :func:`numeric`: any column or array as float64, non-numbers as NaN;
* :func:`utc_index` / :func:`steps_index`: a frame's DatetimeIndex in UTC (a naive one is taken
  as UTC); the second also insists on strictly increasing bars;
* :func:`simple_returns` / :func:`equity_returns` / :func:`total_return`: returns of an equity
  curve (the first return of a backtest is measured against the initial capital);
* :func:`running_peak` / :func:`drawdown`: the drawdown curve ``equity / running peak - 1``;
* :func:`gross_exposure`: ``|position × close| / equity``;
* :func:`align_benchmark`: a benchmark equity curve on the steps' timestamps;
* :func:`infer_bars_per_year` / :func:`resolve_bars_per_year`: the annualisation factor.

Bars per year
-------------
Sharpe ratio, volatility and CAGR are annualised with ``A`` = bars per year. The timeframe alone
gives a 24/7 calendar (``1h`` → 8,766), right for crypto only: EURUSD trades 24/5 (about 6,200
hourly bars a year), SPY's regular session 390 minutes on about 252 days (about 98,000 one-minute
bars). So ``A`` is **observed**: the bars counted in the longest run of whole weeks from the
first bar (``[first, first + k weeks)``, ``k`` = whole weeks between the first bar's open and the
last bar's close), divided by those ``k`` weeks, times the weeks of a year (365.25 days). Whole
weeks matter: a window of exactly ``k`` weeks holds every weekday and the weekend exactly ``k``
times, so a sample that starts on a Monday and ends on a Friday is not mistaken for a 7-day
week, and a gapless 24/7 series gives exactly the timeframe's value. Holidays and missing bars
inside the window count as they happened.

A sample shorter than :data:`MIN_OBSERVED_WEEKS` whole weeks shows too little of its calendar
(one holiday in a single week is 20 % of it): the timeframe's 24/7 value is used and the source
says so. An explicit ``bars_per_year`` (the run config's ``evaluation.bars_per_year``,
``--bars-per-year``) overrides both.

**A known market calendar comes first.** When the bars' calendar is known (``data.calendar``,
or inferred when the bars were loaded: :mod:`rltrade.data.calendars`), ``A`` is the bars of
the timeframe the calendar holds per year, over the calendar years the data spans (its
sessions, holidays and early closes from ``exchange_calendars``): ``XNYS-RTH`` 1m about
252 × 390, ``XNYS-EXT`` 1m about 252 × 960, ``CMES`` 5m about 258 × 276, ``24/5`` 1h about
6,250, ``24/7`` the timeframe's own value over 365.25 days (8,766 for ``1h``, as before).
Observing the data stays the fallback for bars without a calendar (and for weekly or monthly
bars).

The source string starts with its kind, ``"calendar"``, ``"observed"``, ``"timeframe"`` or
``"override"`` (:func:`source_kind`), followed after ``": "`` by what it was based on, e.g.
``"observed: 5,000 bars in 41 whole weeks from 2017-04-19"`` or ``"calendar: XNYS-RTH,
97,740 1m bars a year (sessions of 2024)"``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from rltrade.data.timeframes import (
    NS_PER_SECOND,
    SECONDS_PER_YEAR,
    Timeframe,
    as_ns,
    infer_timeframe,
    parse_timeframe,
)
from rltrade.errors import ConfigError, DataError

__all__ = [
    "MIN_OBSERVED_WEEKS",
    "align_benchmark",
    "calendar_bars_per_year",
    "drawdown",
    "equity_returns",
    "gross_exposure",
    "infer_bars_per_year",
    "numeric",
    "resolve_bars_per_year",
    "running_peak",
    "simple_returns",
    "source_kind",
    "steps_index",
    "total_return",
    "utc_index",
]

#: Whole weeks of data needed to observe bars per year; shorter samples use the timeframe.
MIN_OBSERVED_WEEKS = 2
_WEEK_NS = 7 * 86400 * NS_PER_SECOND
_YEAR_NS = SECONDS_PER_YEAR * NS_PER_SECOND
_SOURCES = ("calendar", "observed", "timeframe", "override")


# --------------------------------------------------------------------------------------------
# values and indexes
# --------------------------------------------------------------------------------------------


def numeric(values: Any) -> np.ndarray:
    """``values`` (a Series, list or array) as a flat float64 array; non-numbers become NaN.

    :param values: a column, list or array.
    :return: float64 values, NaN where a value is missing or not a number.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values).ravel())
    if series.dtype == object or isinstance(series.dtype, pd.StringDtype):
        series = pd.to_numeric(series, errors="coerce")
    return series.to_numpy(dtype=float, na_value=np.nan)


def utc_index(frame: pd.DataFrame | pd.Series) -> pd.DatetimeIndex:
    """The frame's DatetimeIndex in UTC (a naive one is taken as UTC).

    :param frame: a DataFrame or Series indexed by timestamps.
    :return: the index converted to UTC.
    :raises DataError: when the index is not a DatetimeIndex.
    """
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(
            "steps must be indexed by bar timestamps (a DatetimeIndex in UTC), got "
            f"{type(index).__name__}; set the index with steps.set_index('timestamp')"
        )
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def steps_index(steps: pd.DataFrame) -> pd.DatetimeIndex:
    """:func:`utc_index` of backtest steps, which must be sorted bars without repeats.

    :param steps: one row per bar.
    :return: the UTC index.
    :raises DataError: for a missing timestamp, or an index that is not strictly increasing.
    """
    index = utc_index(steps)
    if index.hasnans:
        raise DataError("steps index has missing timestamps (NaT)")
    if not index.is_monotonic_increasing or not index.is_unique:
        raise DataError("steps index must be strictly increasing (sorted, no duplicate bars)")
    return index


# --------------------------------------------------------------------------------------------
# returns, drawdown, exposure
# --------------------------------------------------------------------------------------------


def simple_returns(curve: np.ndarray) -> np.ndarray:
    """``curve[1:] / curve[:-1] - 1``, NaN where the previous value is not finite or ``<= 0``.

    :param curve: an equity curve (float64).
    :return: one return per step, ``len(curve) - 1`` values.
    """
    prev, cur = curve[:-1], curve[1:]
    ok = np.isfinite(prev) & (prev > 0) & np.isfinite(cur)
    out = np.full(cur.shape, np.nan)
    with np.errstate(all="ignore"):
        out[ok] = cur[ok] / prev[ok] - 1.0
    out[~np.isfinite(out)] = np.nan
    return out


def equity_returns(equity: np.ndarray, initial: float) -> np.ndarray:
    """Per-bar returns of a backtest's equity, the first one against the initial capital.

    Compounding them gives the total return exactly, and there is one return per bar.

    :param equity: marked-to-market equity at each bar's close.
    :param initial: the account value before the first bar.
    :return: ``simple_returns([initial, *equity])``.
    """
    return simple_returns(np.concatenate([[float(initial)], np.asarray(equity, dtype=float)]))


def total_return(curve: np.ndarray) -> float:
    """``curve[-1] / curve[0] - 1``; NaN unless both ends are finite and the start is ``> 0``.

    :param curve: an equity curve whose first value is its starting value.
    :return: the total return as a fraction.
    """
    if curve.size == 0:
        return math.nan
    first, last = float(curve[0]), float(curve[-1])
    if not (math.isfinite(first) and first > 0 and math.isfinite(last)):
        return math.nan
    return last / first - 1.0


def running_peak(curve: np.ndarray) -> np.ndarray:
    """The highest value so far at each point (NaN points are skipped, not propagated).

    :param curve: an equity curve.
    :return: ``max(curve[:t+1])`` over finite values, NaN before the first finite value.
    """
    return np.fmax.accumulate(np.asarray(curve, dtype=float))


def drawdown(curve: np.ndarray) -> np.ndarray:
    """``curve / running peak - 1``: 0 at a new high, negative below it; NaN at NaN points.

    :param curve: an equity curve (start it at the initial capital to measure from there).
    :return: the drawdown at each point, a fraction ``<= 0``.
    """
    curve = np.asarray(curve, dtype=float)
    with np.errstate(all="ignore"):
        out = curve / running_peak(curve) - 1.0
    out[~np.isfinite(out)] = np.nan
    return out


def gross_exposure(position: np.ndarray, close: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """``|position × close| / equity`` per bar (2.0 = 2× leverage); 0 when flat.

    :param position: units held (signed).
    :param close: the bar's close.
    :param equity: marked-to-market equity.
    :return: the gross exposure; NaN where equity is not finite or ``<= 0``.
    """
    out = np.full(equity.shape, np.nan)
    valid = np.isfinite(equity) & (equity > 0)
    with np.errstate(all="ignore"):
        out[valid] = np.abs(position[valid] * close[valid]) / equity[valid]
    out[valid & (position == 0)] = 0.0
    return out


def align_benchmark(benchmark_equity: Any, index: pd.DatetimeIndex) -> np.ndarray:
    """A benchmark curve on the steps' ``index``.

    :param benchmark_equity: a Series on timestamps (reindexed onto ``index``, missing bars
        NaN), a one-column DataFrame, or any sequence with one value per bar.
    :param index: the steps' UTC index.
    :return: float64 values aligned with ``index``.
    :raises DataError: for several columns, or a sequence of another length.
    """
    if isinstance(benchmark_equity, pd.DataFrame):
        if benchmark_equity.shape[1] != 1:
            raise DataError("benchmark_equity must be one equity curve (a Series or 1-D array)")
        benchmark_equity = benchmark_equity.iloc[:, 0]
    if isinstance(benchmark_equity, pd.Series) and isinstance(
        benchmark_equity.index, pd.DatetimeIndex
    ):
        return numeric(benchmark_equity.set_axis(utc_index(benchmark_equity)).reindex(index))
    bench = numeric(benchmark_equity)
    if bench.size != index.size:
        raise DataError(
            f"benchmark_equity has {bench.size} values but steps has {index.size} bars; "
            "align the benchmark curve with the steps"
        )
    return bench


# --------------------------------------------------------------------------------------------
# bars per year
# --------------------------------------------------------------------------------------------


def source_kind(source: str) -> str:
    """``"observed"``, ``"timeframe"`` or ``"override"``: the kind of a bars-per-year source.

    :param source: a source string from :func:`infer_bars_per_year` or
        :func:`resolve_bars_per_year`.
    :return: its kind (the text before ``": "``): ``calendar``, ``observed``, ``timeframe``
        or ``override``.
    """
    kind = str(source).split(":", 1)[0].strip()
    return kind if kind in _SOURCES else str(source)


def _timestamps_ns(timestamps_ns: Any) -> np.ndarray:
    """Sorted, unique int64 nanoseconds of bar open times (missing ones, NaT, left out)."""
    values = np.asarray(as_ns(timestamps_ns), dtype=np.int64)
    values = values[values != np.iinfo(np.int64).min]  # NaT
    if values.size > 1 and np.any(np.diff(values) <= 0):
        values = np.unique(values)
    return values


def infer_bars_per_year(
    timestamps_ns: Any, timeframe: str | Timeframe | None = None
) -> tuple[float, str]:
    """Bars per year observed in the data (see the module docstring), or the timeframe's.

    :param timestamps_ns: bar open times: int64 UTC nanoseconds, or a DatetimeIndex.
    :param timeframe: the bars' timeframe (``"1h"``); inferred from the spacing when ``None``.
    :return: ``(bars_per_year, source)``; ``source`` starts with ``"observed"`` or, for a sample
        shorter than :data:`MIN_OBSERVED_WEEKS` whole weeks, ``"timeframe"`` (the 24/7 value),
        and says what it was based on. NaN with an unknown timeframe and too few bars.
    """
    ts = _timestamps_ns(timestamps_ns)
    tf = parse_timeframe(timeframe) if timeframe is not None else infer_timeframe(ts)
    calendar = float(tf.bars_per_year) if tf is not None else math.nan
    tf_name = tf.name if tf is not None else "an unknown timeframe"
    bar_ns = tf.nanos if tf is not None else 0
    span_ns = int(ts[-1] - ts[0]) + bar_ns if ts.size else 0
    weeks = span_ns // _WEEK_NS
    if weeks < MIN_OBSERVED_WEEKS:
        days = span_ns / NS_PER_SECOND / 86400
        return calendar, (
            f"timeframe: {ts.size:,} bars over {days:.1f} days, shorter than "
            f"{MIN_OBSERVED_WEEKS} whole weeks; the 24/7 calendar of {tf_name} is assumed"
        )
    count = int(np.searchsorted(ts, ts[0] + weeks * _WEEK_NS, side="left"))
    value = count / (weeks * _WEEK_NS) * _YEAR_NS
    first = pd.Timestamp(int(ts[0]), unit="ns", tz="UTC").strftime("%Y-%m-%d")
    return float(value), f"observed: {count:,} bars in {weeks:,} whole weeks from {first}"


def calendar_bars_per_year(
    calendar: str, timestamps_ns: Any, timeframe: str | Timeframe | None = None
) -> tuple[float, str] | None:
    """Bars per year of a market calendar, over the calendar years the bars span.

    :param calendar: a calendar name (``XNYS-RTH``...; see :mod:`rltrade.data.calendars`).
    :param timestamps_ns: bar open times (int64 UTC nanoseconds or a DatetimeIndex).
    :param timeframe: the bars' timeframe, or ``None`` to infer it.
    :return: ``(bars_per_year, source)`` with source ``"calendar: ..."``; ``None`` when the
        calendar has no session grid for the timeframe (weekly, monthly bars) or no bars.
    :raises ConfigError: for an unknown calendar.
    """
    from rltrade.data.calendars import MarketCalendar

    cal = MarketCalendar(calendar)
    ts = _timestamps_ns(timestamps_ns)
    tf = parse_timeframe(timeframe) if timeframe is not None else infer_timeframe(ts)
    if tf is None or ts.size == 0 or tf.unit in ("w", "M") or (tf.unit == "d" and tf.count > 1):
        return None
    if cal.name == "24/7":  # around the clock: the timeframe's own 365.25-day value
        value = float(tf.bars_per_year)
        return value, f"calendar: 24/7, {value:,.0f} {tf.name} bars a year (365.25 days)"
    first = pd.Timestamp(int(ts[0]), unit="ns", tz="UTC").year
    last = pd.Timestamp(int(ts[-1]), unit="ns", tz="UTC").year
    try:
        value = cal.bars_per_year(tf, first, last)
    except DataError:
        return None
    years = str(first) if first == last else f"{first}-{last}"
    return value, f"calendar: {cal.name}, {value:,.0f} {tf.name} bars a year (sessions of {years})"


def resolve_bars_per_year(
    timestamps_ns: Any,
    timeframe: str | Timeframe | None = None,
    override: float | None = None,
    calendar: str | None = None,
) -> tuple[float, str]:
    """The annualisation factor: ``override`` when given, else the market calendar's
    (:func:`calendar_bars_per_year`) when known, else :func:`infer_bars_per_year`.

    :param timestamps_ns: bar open times (int64 UTC nanoseconds or a DatetimeIndex).
    :param timeframe: the bars' timeframe, or ``None`` to infer it.
    :param override: an explicit bars per year (e.g. 252 for daily equity bars).
    :param calendar: the bars' market calendar (``XNYS-RTH``...), ``None`` when unknown.
    :return: ``(bars_per_year, source)``, source ``"override"`` for an override.
    :raises ConfigError: for an override that is not a positive finite number.
    """
    if override is None:
        if calendar is not None:
            found = calendar_bars_per_year(calendar, timestamps_ns, timeframe)
            if found is not None:
                return found
        return infer_bars_per_year(timestamps_ns, timeframe)
    try:
        value = float(override)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"bars_per_year must be a positive number, got {override!r}")
    return value, "override"
