"""Market calendars: when a series trades, from ``exchange_calendars`` (no hand-written holidays).

A calendar is a list of **sessions**, each an interval ``[open, close)`` in UTC nanoseconds.
rltrade knows five, by name (:data:`CALENDARS`):

==============  ==================================================================================
``24/7``        crypto: one session per UTC day, every day (exchange_calendars' ``24/7``).
``24/5``        FX: one session per weekday ``d`` from 17:00 New York time on the day before to
                17:00 on ``d`` (Sunday 17:00 to Friday 17:00 ET, the FX week), on the weekdays
                of exchange_calendars' ``24/5`` (no holidays).
``XNYS-RTH``    US equities, regular hours: the NYSE sessions of exchange_calendars' ``XNYS``
                (09:30-16:00 ET, early closes and holidays included).
``XNYS-EXT``    US equities with extended hours: on each ``XNYS`` session, 04:00 ET to four
                hours after the regular close (20:00 ET; 17:00 ET on a 13:00 early close).
``CMES``        CME Globex (equity index futures such as ES, MES): exchange_calendars' ``CMES``
                sessions (17:00 CT on the day before to 17:00 CT, holidays and early closes
                included) with the daily maintenance break: a session closes at 16:00 CT at
                the latest (an early close stays as it is), so 16:00-17:00 CT is never trading.
==============  ==================================================================================

Bars of a calendar for a timeframe (:meth:`MarketCalendar.expected_bars`): for intraday
timeframes, every bar of the grid (times ``phase + k * step``) that overlaps a session; for
daily bars, one bar per session, labelled by the session's date at 00:00 UTC (rltrade's
convention for daily bars). Weeks and months have no session grid (``None``).

:func:`infer_calendar` picks the tightest calendar that holds (nearly) all of a series' bars;
:func:`session_positions` maps bars to their sessions, vectorised, for validation (gaps only
inside sessions), annualisation (bars per year from the calendar) and the risk manager's
session rules (flat at the close, no entries in the last minutes).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pandas as pd

from rltrade.data.timeframes import NS_PER_SECOND, Timeframe, as_ns, parse_timeframe
from rltrade.errors import ConfigError, DataError

__all__ = [
    "CALENDARS",
    "CalendarFit",
    "MarketCalendar",
    "Sessions",
    "get_calendar",
    "infer_calendar",
    "session_positions",
]

_DAY_NS = 86_400 * NS_PER_SECOND
_HOUR_NS = 3_600 * NS_PER_SECOND
#: Calendar names and what each is for.
CALENDARS: dict[str, str] = {
    "24/7": "crypto: every day, around the clock",
    "24/5": "FX: Sunday 17:00 to Friday 17:00 New York time",
    "XNYS-RTH": "US equities, regular hours 09:30-16:00 ET on NYSE sessions",
    "XNYS-EXT": "US equities, extended hours 04:00-20:00 ET on NYSE sessions",
    "CMES": "CME Globex futures, 17:00-16:00 CT with the daily 16:00-17:00 CT break",
}
# exchange_calendars' calendar under each of ours, and our exchange time zone
_BASE = {"24/7": "24/7", "24/5": "24/5", "XNYS-RTH": "XNYS", "XNYS-EXT": "XNYS", "CMES": "CMES"}
_TZ = {"24/7": "UTC", "24/5": "America/New_York", "XNYS-RTH": "America/New_York",
       "XNYS-EXT": "America/New_York", "CMES": "America/Chicago"}
# the order in which infer_calendar tries them: tightest first
_TIGHTEST_FIRST = ("XNYS-RTH", "XNYS-EXT", "CMES", "24/5")
#: Share of bars that must fall inside a calendar's sessions for :func:`infer_calendar`.
INFER_INSIDE_SHARE = 0.995


class Sessions(NamedTuple):
    """Sessions as arrays: ``open`` and ``close`` int64 UTC ns (``[open, close)``), and
    ``label`` the session's date as int64 UTC ns of its 00:00 (daily bars' label)."""

    open: np.ndarray
    close: np.ndarray
    label: np.ndarray


def _canonical(name: str) -> str:
    key = str(name).strip().upper()
    for known in CALENDARS:
        if known.upper() == key:
            return known
    raise ConfigError(
        f"unknown calendar {name!r}: use one of {', '.join(CALENDARS)} "
        "(24/7 crypto, 24/5 FX, XNYS-RTH / XNYS-EXT US equities, CMES CME Globex)"
    )


@lru_cache(maxsize=64)
def _schedule(base: str, first_year: int, last_year: int) -> pd.DataFrame:
    """exchange_calendars' schedule of ``base`` over whole years (cached)."""
    try:
        import exchange_calendars as xc
    except ImportError as exc:  # pragma: no cover - the markets extra is installed in CI
        raise ConfigError(
            "market calendars need the 'exchange_calendars' package: "
            "pip install 'rltrade[markets]'"
        ) from exc
    try:
        with warnings.catch_warnings():  # pandas deprecation notes from inside the package
            warnings.simplefilter("ignore")
            cal = xc.get_calendar(base, start=f"{first_year}-01-01", end=f"{last_year}-12-31")
    except Exception as exc:  # exchange_calendars' own errors for dates out of its bounds
        raise DataError(
            f"calendar {base}: no sessions between {first_year} and {last_year} ({exc})"
        ) from exc
    return cal.schedule


@dataclass(frozen=True)
class MarketCalendar:
    """One of the :data:`CALENDARS`, by name; see the module docstring for each.

    :param name: ``24/7``, ``24/5``, ``XNYS-RTH``, ``XNYS-EXT`` or ``CMES`` (any case).
    """

    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _canonical(self.name))

    @property
    def tz(self) -> str:
        """The exchange's time zone (IANA name), for rules stated in exchange time."""
        return _TZ[self.name]

    def sessions(self, start_ns: int, end_ns: int) -> Sessions:
        """The sessions that overlap ``[start_ns, end_ns)`` (int64 UTC ns), in order.

        :param start_ns: first instant of interest.
        :param end_ns: end of the span (exclusive).
        :raises DataError: when exchange_calendars has no sessions for the span.
        """
        first = pd.Timestamp(int(start_ns) - 2 * _DAY_NS, unit="ns").year
        last = pd.Timestamp(int(end_ns) + 2 * _DAY_NS, unit="ns").year
        sched = _schedule(_BASE[self.name], first, last)
        dates = pd.DatetimeIndex(sched.index)
        label = as_ns(dates.tz_localize("UTC") if dates.tz is None else dates)
        opens, closes = as_ns(pd.DatetimeIndex(sched["open"])), as_ns(
            pd.DatetimeIndex(sched["close"]))
        if self.name == "24/5":
            # the FX day: 17:00 New York on the day before to 17:00 New York on the date
            local = pd.DatetimeIndex(sched.index).tz_localize(None)
            five_pm = (local + pd.Timedelta(hours=17)).tz_localize("America/New_York")
            closes = as_ns(five_pm)
            opens = as_ns((local - pd.Timedelta(hours=7)).tz_localize("America/New_York"))
        elif self.name == "XNYS-EXT":
            local = pd.DatetimeIndex(sched.index).tz_localize(None)
            opens = as_ns((local + pd.Timedelta(hours=4)).tz_localize("America/New_York"))
            closes = closes + 4 * _HOUR_NS
        elif self.name == "CMES":
            local = pd.DatetimeIndex(sched.index).tz_localize(None)
            four_pm = as_ns((local + pd.Timedelta(hours=16)).tz_localize("America/Chicago"))
            closes = np.minimum(closes, four_pm)
        keep = (closes > int(start_ns)) & (opens < int(end_ns))
        return Sessions(opens[keep], closes[keep], label[keep])

    def expected_bars(
        self, start_ns: int, end_ns: int, timeframe: str | Timeframe, phase_ns: int = 0
    ) -> np.ndarray | None:
        """Open times (int64 UTC ns, sorted) of every bar the calendar expects in
        ``[start_ns, end_ns)``, vectorised.

        :param start_ns: first open time of interest.
        :param end_ns: end of the span (exclusive).
        :param timeframe: the bars' timeframe.
        :param phase_ns: intraday grid offset (bars open at ``phase + k * step``); daily bars
            ignore it.
        :return: the bar open times, or ``None`` for weekly and monthly bars (no grid).
        """
        tf = parse_timeframe(timeframe)
        sessions = self.sessions(start_ns, end_ns)
        if tf.unit in ("w", "M") or (tf.unit == "d" and tf.count > 1):
            return None
        if tf.unit == "d":
            out = sessions.label
        else:
            first, counts = _grid_counts(sessions, tf.nanos, phase_ns)
            out = _expand(first, counts, tf.nanos)
        return out[(out >= int(start_ns)) & (out < int(end_ns))]

    def bars_per_year(
        self, timeframe: str | Timeframe, year: int | None = None, last_year: int | None = None
    ) -> float:
        """Bars of ``timeframe`` the calendar holds in a year (the mean over three whole
        years, or over ``year`` alone when given): ``252 × 390`` for ``XNYS-RTH`` 1m bars in a
        typical year. Sessions are counted by their date.

        :param timeframe: the bars' timeframe (intraday or ``1d``).
        :param year: a specific year; default the three years 2022-2024.
        :param last_year: with ``year``, the mean over ``year`` to ``last_year``.
        :raises DataError: for weekly or monthly bars.
        """
        years = (year, last_year or year) if year is not None else (2022, 2024)
        start = as_ns(pd.DatetimeIndex([pd.Timestamp(f"{years[0]}-01-01", tz="UTC")]))[0]
        end = as_ns(pd.DatetimeIndex([pd.Timestamp(f"{years[1] + 1}-01-01", tz="UTC")]))[0]
        tf = parse_timeframe(timeframe)
        sessions = self.sessions(int(start), int(end))
        if tf.unit in ("w", "M") or (tf.unit == "d" and tf.count > 1):
            raise DataError(f"calendar {self.name}: no session grid for {tf.name} bars")
        inside = (sessions.label >= start) & (sessions.label < end)
        if tf.unit == "d":
            count = int(inside.sum())
        else:
            count = int(_grid_counts(sessions, tf.nanos, 0)[1][inside].sum())
        return float(count) / (years[1] - years[0] + 1)

    def __str__(self) -> str:
        return self.name


def _grid_counts(sessions: Sessions, step: int, phase: int) -> tuple[np.ndarray, np.ndarray]:
    """First grid bar and number of grid bars overlapping each session (``[open, close)``)."""
    # bar g overlaps [open, close) when g < close and g + step > open
    first_k = -((-(sessions.open - step + 1 - phase)) // step)  # ceil division
    last_k = -((-(sessions.close - phase)) // step) - 1
    counts = np.maximum(last_k - first_k + 1, 0)
    return first_k * step + phase, counts


def _expand(first: np.ndarray, counts: np.ndarray, step: int) -> np.ndarray:
    """``first[i] + step * arange(counts[i])`` for every ``i``, concatenated (vectorised);
    bars shared by adjacent sessions (a grid bar across a session edge) appear once."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(first, counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    out = starts + offsets * step  # non-decreasing: sessions are ordered and disjoint
    return out[np.concatenate(([True], np.diff(out) > 0))]


def get_calendar(name: str | MarketCalendar | None) -> MarketCalendar | None:
    """A :class:`MarketCalendar` by name (``None`` stays ``None``).

    :raises ConfigError: for an unknown name, listing the known ones.
    """
    if name is None or isinstance(name, MarketCalendar):
        return name
    return MarketCalendar(name)


def bar_phase(timestamps_ns: np.ndarray, timeframe: str | Timeframe) -> int:
    """The grid offset of intraday bars: the most common ``open mod step`` (0 for daily+)."""
    tf = parse_timeframe(timeframe)
    if tf.unit not in ("s", "m", "h") or len(timestamps_ns) == 0:
        return 0
    rem = np.asarray(timestamps_ns, dtype=np.int64) % tf.nanos
    values, counts = np.unique(rem, return_counts=True)
    return int(values[np.argmax(counts)])


def session_positions(
    timestamps_ns: np.ndarray, calendar: MarketCalendar, timeframe: str | Timeframe
) -> tuple[np.ndarray, Sessions]:
    """The session of each bar: its index into the returned :class:`Sessions`, ``-1`` for a
    bar outside every session.

    A bar belongs to the session its interval overlaps (intraday) or whose date it is labelled
    with (daily bars).

    :param timestamps_ns: sorted bar open times, int64 UTC ns.
    :param calendar: the calendar.
    :param timeframe: the bars' timeframe.
    """
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    tf = parse_timeframe(timeframe)
    if ts.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, Sessions(empty, empty, empty)
    sessions = calendar.sessions(int(ts[0]) - _DAY_NS, int(ts[-1]) + tf.nanos + _DAY_NS)
    if len(sessions.open) == 0:
        return np.full(ts.size, -1, dtype=np.int64), sessions
    if tf.unit in ("d", "w", "M"):
        pos = np.searchsorted(sessions.label, ts)
        ok = (pos < len(sessions.label)) & (
            sessions.label[np.minimum(pos, len(sessions.label) - 1)] == ts)
        return np.where(ok, pos, -1), sessions
    # the last session opening before the bar's close, if the bar starts before its close
    pos = np.searchsorted(sessions.open, ts + tf.nanos, side="left") - 1
    safe = np.maximum(pos, 0)
    ok = (pos >= 0) & (ts < sessions.close[safe])
    return np.where(ok, pos, -1), sessions


class CalendarFit(NamedTuple):
    """What :func:`infer_calendar` found: the calendar (``None``: none fits) and why."""

    calendar: MarketCalendar | None
    reason: str


def infer_calendar(
    timestamps_ns: np.ndarray, timeframe: str | Timeframe | None
) -> CalendarFit:
    """The tightest calendar that holds the bars, or ``None`` when none fits well.

    Bars on Saturdays (UTC; more than 1 %) make it ``24/7``. Otherwise the calendars
    ``XNYS-RTH``, ``XNYS-EXT``, ``CMES`` and ``24/5`` are tried in that order (tightest
    first), and the first that holds :data:`INFER_INSIDE_SHARE` of the bars inside its
    sessions is taken. A series that none holds (e.g. weekday bars on a UTC day grid) gets
    ``None``: validation then falls back to the timeframe and the weekend rule.

    :param timestamps_ns: sorted, unique bar open times (int64 UTC ns).
    :param timeframe: the bars' timeframe (``None``: no calendar).
    """
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    if timeframe is None or ts.size < 3:
        return CalendarFit(None, "too few bars or no timeframe")
    tf = parse_timeframe(timeframe)
    if tf.unit in ("w", "M") or (tf.unit == "d" and tf.count > 1):
        return CalendarFit(None, f"no session grid for {tf.name} bars")
    saturday = ((ts // _DAY_NS + 3) % 7) == 5  # 1970-01-01 was a Thursday
    if float(np.mean(saturday)) > 0.01:
        return CalendarFit(MarketCalendar("24/7"), "bars on Saturdays")
    for name in _TIGHTEST_FIRST:
        cal = MarketCalendar(name)
        try:
            pos, _ = session_positions(ts, cal, tf)
        except DataError:
            continue
        inside = float(np.mean(pos >= 0))
        if inside >= INFER_INSIDE_SHARE:
            return CalendarFit(cal, f"{inside:.1%} of the bars fall in {name} sessions")
    return CalendarFit(None, "no calendar holds the bars")
