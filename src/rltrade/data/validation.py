"""Validation and repair of bars: :func:`validate_bars` and its :class:`ValidationReport`.

What is checked, with its severity (errors fail the ``strict`` policy; warnings are reported):

============================  ========  =====================================================
check                         severity  what ``repair`` does
============================  ========  =====================================================
unparseable timestamps        error     drops the rows
mixed zoned / naive times     error     naive ones taken as UTC (or ``naive_tz``)
non-numeric values            error     treated as missing values (see NaN below)
unsorted rows                 error     sorts by timestamp (stable)
duplicate timestamps,         error     drops the exact copies
identical rows
duplicate timestamps,         error     keeps the last row of each timestamp and says so
conflicting values
NaN / infinite / non-positive error     treated as missing: an isolated missing value (valid
prices                                  neighbours in its column, other prices in its row)
                                        is forward-filled; rows with longer runs are dropped,
                                        never invented
negative or NaN volume        error     isolated: forward-filled; longer runs: set to 0
OHLC envelope violated        error     high = max(o, h, l, c), low = min(o, h, l, c)
(high < max(open, close),
low > min(open, close),
high < low)
one-bar spikes that revert    error     open/high/low/close of the bar set to the previous
(bad prints, see                        close (volume kept)
:func:`find_spikes`)
gaps inside the calendar's    warning   nothing: missing bars are never invented
sessions (or the timeframe)
bars outside the calendar's   warning   nothing
sessions
price jumps (a return beyond  warning   nothing: real markets jump; look at them
``jump_z`` robust sigmas of
the bar's recent returns)
naive timestamps              warning   taken as UTC (already done by parsing)
mixed UTC offsets whose       warning   nothing itself; the unsorted / duplicate rows it
conversion goes back in time            causes are errors (their messages name the offsets)
============================  ========  =====================================================

Gaps are counted inside the sessions of the series' market calendar
(:mod:`rltrade.data.calendars`: given, or inferred from the bars): nights, weekends, holidays
and the futures' daily break are not gaps. When no calendar fits, for series without Saturday
bars (stocks, FX, futures) a gap that spans weekend time is the weekend close and is not
reported, so daily stock data is not reported as full of gaps.

``columns=("close",)`` checks only the close (and the timestamps): an external series whose
open/high/low are not used (VIX) is not refused for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from rltrade.data.calendars import (
    MarketCalendar,
    bar_phase,
    get_calendar,
    infer_calendar,
    session_positions,
)
from rltrade.data.parsing import OHLCV, PRICE_COLUMNS, Finding, is_standard, standardize
from rltrade.data.timeframes import (
    NS_PER_SECOND,
    Timeframe,
    as_ns,
    infer_timeframe,
    parse_timeframe,
)
from rltrade.errors import DataError, ValidationError

Policy = Literal["strict", "repair", "report"]
_MAX_EXAMPLES = 3


@dataclass
class ValidationReport:
    """Everything validation found (and, under ``repair``, changed) in a table of bars.

    ``bars`` holds the resulting bars: unchanged under ``strict`` / ``report``, repaired under
    ``repair``. ``ok`` is true when no error remains *in* ``bars``.
    """

    policy: str
    rows_in: int
    rows_out: int
    timeframe: str | None
    findings: list[Finding] = field(default_factory=list)
    calendar: str | None = None
    source: str | None = None
    start: str | None = None
    end: str | None = None
    bars: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No error left in the returned bars (repaired errors count as fixed)."""
        return all(f.fixed is not None for f in self.errors)

    @property
    def clean(self) -> bool:
        """Nothing at all was wrong: no error and no warning."""
        return not self.errors and not self.warnings

    def verdict(self) -> str:
        if self.clean:
            return "clean"
        if not self.errors:
            return f"usable, {len(self.warnings)} warning(s)"
        if self.policy == "repair" and self.ok:
            return f"repaired {len(self.errors)} problem(s)"
        return f"{len(self.errors)} problem(s)"

    def summary(self) -> str:
        """One line per finding, for logs and exception messages."""
        head = f"{self.source or 'bars'}: {self.verdict()} ({self.rows_in} rows in"
        head += f", {self.rows_out} out)" if self.rows_out != self.rows_in else ")"
        lines = [head]
        for f in self.findings:
            if f.severity == "info":
                continue
            ex = f" e.g. {', '.join(f.examples)}" if f.examples else ""
            fix = f" -> {f.fixed}" if f.fixed else ""
            lines.append(f"  [{f.severity}] {f.code}: {f.message}{ex}{fix}")
        return "\n".join(lines)

    def one_line(self) -> str:
        """The verdict and the errors on one line (for the CLI's error message)."""
        parts = [f"{f.code} ({f.message})" for f in self.errors if f.fixed is None]
        text = f"{self.source or 'bars'}: {self.verdict()}"
        return text + (": " + "; ".join(parts) if parts else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "policy": self.policy,
            "verdict": self.verdict(),
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "timeframe": self.timeframe,
            "calendar": self.calendar,
            "start": self.start,
            "end": self.end,
            "findings": [f.to_dict() for f in self.findings],
        }


def _examples(index: pd.DatetimeIndex, mask: np.ndarray) -> list[str]:
    pos = np.flatnonzero(mask)[:_MAX_EXAMPLES]
    return [str(index[i]) for i in pos]


def _runs_isolated(bad: np.ndarray) -> np.ndarray:
    """Mask of bad entries whose neighbours (previous and next) are both good."""
    prev_good = np.concatenate(([False], ~bad[:-1]))
    next_good = np.concatenate((~bad[1:], [True]))
    return bad & prev_good & next_good


def _ffill_positions(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Forward-fill ``values`` at ``mask`` positions from the previous position."""
    out = values.copy()
    pos = np.flatnonzero(mask)
    pos = pos[pos > 0]
    out[pos] = out[pos - 1]
    return out


_WEEK = 7 * 86400 * NS_PER_SECOND
_SATURDAY_ORIGIN = 2 * 86400 * NS_PER_SECOND  # 1970-01-03 00:00 UTC was a Saturday


def _weekend_time(ns: np.ndarray) -> np.ndarray:
    """Nanoseconds of Saturday/Sunday (UTC) between an arbitrary origin and each time."""
    rel = ns - _SATURDAY_ORIGIN
    weeks, rem = np.divmod(rel, _WEEK)
    return weeks * (_WEEK * 2 // 7) + np.minimum(rem, _WEEK * 2 // 7)


class Gaps(NamedTuple):
    """Gaps of a bar index against its timeframe (see :func:`find_gaps`).

    ``outside`` counts bars that fall outside every session of the calendar (0 without one).
    """

    events: int
    missing: int
    largest: pd.Timedelta | None
    examples: list[str]
    outside: int = 0
    outside_examples: tuple[str, ...] = ()


def find_gaps(
    index: pd.DatetimeIndex, tf: Timeframe, calendar: str | MarketCalendar | None = None
) -> Gaps:
    """Gap events, missing bars, largest gap and the first examples of a sorted unique index.

    With a ``calendar`` (see :mod:`rltrade.data.calendars`), only bars the calendar expects
    count: between two consecutive bars, the missing bars are the calendar's bars of the
    timeframe in between (on the bars' own grid: a 1h series labelled at :30 is compared with
    :30 bars), so nights, weekends, holidays, early closes and the futures' daily break are
    not gaps; ``largest`` is the longest run of missing bars (its bar count times the
    timeframe), and bars outside every session are counted in ``outside``. The ``24/7``
    calendar expects every bar. Weekly and monthly bars have no session grid: the calendar is
    not used for them.

    Without a calendar, a gap is a step between consecutive bars longer than the timeframe
    (calendar timeframes: longer than ``count * 32`` days). For series without Saturday bars
    (stocks, FX, futures), a step that spans weekend time is the market's weekend close, not
    a gap.

    :param index: sorted, unique bar open times.
    :param tf: the expected bar spacing.
    :param calendar: a calendar name or :class:`~rltrade.data.calendars.MarketCalendar`.
    :returns: a :class:`Gaps` (``events, missing, largest, examples, outside``); zeros when
        none.
    """
    ns = as_ns(index)
    if len(ns) < 2:
        return Gaps(0, 0, None, [])
    cal = get_calendar(calendar)
    if cal is not None and cal.name != "24/7" and not tf.is_calendar:
        expected = cal.expected_bars(int(ns[0]), int(ns[-1]) + 1, tf, bar_phase(ns, tf))
        if expected is not None:
            return _calendar_gaps(index, ns, tf, cal, expected)
    diffs = np.diff(ns)
    step = tf.nanos
    limit = tf.count * 32 * 86400 * NS_PER_SECOND if tf.is_calendar else step
    gap = diffs > limit
    saturday_share = float(np.mean(index.day_of_week == 5))
    if gap.any() and saturday_share < 0.01 and not tf.is_calendar and cal is None:
        # A weekday-calendar series (stocks, FX, futures): a gap that spans weekend time is the
        # market's weekend close (Friday evening to Sunday evening for FX and futures), not
        # missing data.
        weekend_ns = _weekend_time(ns[1:]) - _weekend_time(ns[:-1])
        gap = gap & (weekend_ns == 0)
    if not gap.any():
        return Gaps(0, 0, None, [])
    missing = int(np.sum(np.maximum(diffs[gap] // step - 1, 1)))
    largest = pd.Timedelta(int(diffs[gap].max()), unit="ns")
    examples = [str(index[i]) for i in np.flatnonzero(gap)[:_MAX_EXAMPLES]]
    return Gaps(int(gap.sum()), missing, largest, examples)


def _calendar_gaps(
    index: pd.DatetimeIndex, ns: np.ndarray, tf: Timeframe, cal: MarketCalendar,
    expected: np.ndarray,
) -> Gaps:
    """:func:`find_gaps` against the bars a calendar expects (sorted int64 ns)."""
    between = (np.searchsorted(expected, ns[1:], side="left")
               - np.searchsorted(expected, ns[:-1], side="right"))
    gap = between > 0
    pos, _ = session_positions(ns, cal, tf)
    outside = pos < 0
    out_examples = [str(index[i]) for i in np.flatnonzero(outside)[:_MAX_EXAMPLES]]
    if not gap.any():
        return Gaps(0, 0, None, [], int(outside.sum()), tuple(out_examples))
    step = tf.nanos if tf.unit != "d" else 86400 * NS_PER_SECOND
    largest = pd.Timedelta(int(between.max()) * step, unit="ns")
    examples = [str(index[i]) for i in np.flatnonzero(gap)[:_MAX_EXAMPLES]]
    return Gaps(int(gap.sum()), int(between.sum()), largest, examples, int(outside.sum()),
                tuple(out_examples))


# Spikes: the robust scale of returns is the median absolute return over a centred window of
# this many returns on each side, never below this share of the series' own scale.
SPIKE_WINDOW = 50
_SPIKE_SCALE_FLOOR = 0.5
# The return after a spike must take back all but this share of the spike's jump.
SPIKE_REVERT = 0.25


def find_spikes(close: np.ndarray, spike_z: float = 50.0) -> np.ndarray:
    """Mask of one-bar spikes in ``close``: a jump that the next bar takes back (a bad print).

    Bar ``t`` is a spike when the log returns into it (``r1``) and out of it (``r2``) have
    opposite signs, both exceed ``spike_z`` robust sigmas of the returns around it, and
    ``|r1 + r2| <= SPIKE_REVERT * |r1|`` (the close after it is back near the close before it).
    The robust sigma is ``1.4826 * median(|r|)`` over the returns from ``SPIKE_WINDOW`` before
    ``r1`` to ``SPIKE_WINDOW`` after ``r2``, floored at half of the same figure over the
    series' non-zero returns (so stretches of unchanged prices do not make every tick a
    spike). Ordinary moves, and level shifts that do
    not revert, are never spikes; neither is the first or the last bar (nothing to compare).

    :param close: closes in time order (NaN and non-positive values never make a spike).
    :param spike_z: how many robust sigmas the jump and its reversal must both exceed.
    :returns: boolean mask, one entry per bar.
    """
    n = len(close)
    out = np.zeros(n, dtype=bool)
    if n < 3:
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        logret = np.diff(np.log(close))
    size = np.abs(logret)
    moving = size[np.isfinite(size) & (size > 0)]
    if not moving.size:
        return out
    floor = _SPIKE_SCALE_FLOOR * 1.4826 * float(np.median(moving))
    r1, r2 = logret[:-1], logret[1:]
    smaller = np.minimum(size[:-1], size[1:])
    with np.errstate(invalid="ignore"):
        # the sigma is never below the floor: only these bars can be spikes
        candidates = np.flatnonzero((smaller > spike_z * floor) & (r1 * r2 < 0)
                                    & (np.abs(r1 + r2) <= SPIKE_REVERT * size[:-1]))
    for i in candidates:  # bar i + 1, between returns i and i + 1
        around = size[max(0, i - SPIKE_WINDOW): i + SPIKE_WINDOW + 2]
        around = around[np.isfinite(around)]
        sigma = max(1.4826 * float(np.median(around)), floor)
        out[i + 1] = smaller[i] > spike_z * sigma
    return out


# ------------------------------------------------------------------------------------------
# the steps of validate_bars: each appends its findings and, under repair, returns fixed data


@dataclass
class _Columns:
    """Bar values as float64 arrays (one per column) and their index, while being checked."""

    values: dict[str, np.ndarray]
    index: pd.DatetimeIndex

    @classmethod
    def of(cls, bars: pd.DataFrame) -> _Columns:
        values = {c: bars[c].to_numpy(dtype=np.float64, copy=True) for c in bars.columns}
        return cls(values, bars.index)

    def keep(self, mask: np.ndarray) -> None:
        self.values = {c: v[mask] for c, v in self.values.items()}
        self.index = self.index[mask]

    def frame(self) -> pd.DataFrame:
        bars = pd.DataFrame(self.values, index=self.index)
        bars.index.name = "timestamp"
        return bars


def _standard_layout(
    df: pd.DataFrame, naive_tz: str | None, source: str | None, checked: tuple[str, ...]
) -> tuple[pd.DataFrame, list[Finding]]:
    """``df`` in rltrade's layout (see :func:`standardize`) and what parsing found."""
    if is_standard(df):
        return df, []
    try:
        return standardize(df, naive_tz=naive_tz, columns=checked)
    except ValidationError:
        raise
    except DataError as exc:
        raise DataError(f"{source}: {exc}" if source else str(exc)) from exc


def _note_parsing_repairs(findings: list[Finding], naive_tz: str | None) -> None:
    """What repair does about the problems parsing found (it has already done it)."""
    for f in findings:
        if f.code == "mixed_timezones":
            f.fixed = f"naive timestamps taken as {naive_tz or 'UTC'}"
        if f.code == "non_numeric":
            f.fixed = "treated as missing values"


def _drop_unparseable(bars: pd.DataFrame, findings: list[Finding]) -> pd.DataFrame:
    nat = np.asarray(bars.index.isna())
    if not nat.any():
        return bars
    for f in findings:
        if f.code == "unparseable_timestamps":
            f.fixed = f"dropped {int(nat.sum())} row(s)"
    return bars[~nat]


def _offsets_note(findings: list[Finding]) -> str:
    """`` (mixed UTC offsets +01:00, +02:00)`` when parsing found a suspicious mix, else ``""``.

    The finding's message starts with that phrase, followed by ``": "`` and the counts.
    """
    for f in findings:
        if f.code == "mixed_utc_offsets" and f.severity != "info":
            return f" ({f.message.split(': ')[0]})"
    return ""


def _check_order(bars: pd.DataFrame, findings: list[Finding], repair: bool) -> pd.DataFrame:
    index = bars.index
    ns = as_ns(index[~np.asarray(index.isna())])
    if len(ns) < 2:
        return bars
    backwards = np.diff(ns) < 0
    if not backwards.any():
        return bars
    n = int(backwards.sum())
    findings.append(
        Finding(
            "unsorted",
            "error",
            n,
            f"rows are not in time order ({n} step(s) back in time){_offsets_note(findings)}",
            [str(pd.Timestamp(v, tz="UTC")) for v in ns[1:][backwards][:_MAX_EXAMPLES]],
            fixed="sorted by timestamp" if repair else None,
        )
    )
    return bars.iloc[np.argsort(as_ns(bars.index), kind="stable")] if repair else bars


def _check_duplicates(bars: pd.DataFrame, findings: list[Finding], repair: bool) -> pd.DataFrame:
    dup_ts = bars.index.duplicated(keep=False) & ~np.asarray(bars.index.isna())
    if not dup_ts.any():
        return bars
    frame = bars.reset_index()
    exact_dup = frame.duplicated(keep="first").to_numpy()
    # A timestamp "conflicts" when its rows are not all identical.
    groups = frame[dup_ts].groupby("timestamp", sort=False)
    n_variants = groups.apply(lambda g: len(g.drop_duplicates()), include_groups=False)
    conflicting_ts = n_variants[n_variants > 1].index
    n_exact = int(exact_dup.sum())
    if n_exact:
        findings.append(
            Finding(
                "duplicate_rows",
                "error",
                n_exact,
                f"{n_exact} row(s) repeat an earlier row exactly",
                _examples(bars.index, exact_dup),
                fixed=f"dropped {n_exact} exact copies" if repair else None,
            )
        )
    if len(conflicting_ts):
        findings.append(
            Finding(
                "conflicting_duplicates",
                "error",
                len(conflicting_ts),
                f"{len(conflicting_ts)} timestamp(s) appear with different values"
                f"{_offsets_note(findings)}",
                [str(t) for t in conflicting_ts[:_MAX_EXAMPLES]],
                fixed="kept the last row of each conflicting timestamp" if repair else None,
            )
        )
    if not repair:
        return bars
    bars = bars[~exact_dup]
    return bars[~bars.index.duplicated(keep="last")]


def _check_prices(
    cols: _Columns, prices: tuple[str, ...], findings: list[Finding], repair: bool
) -> None:
    """NaN, infinite, zero or negative prices: isolated ones forward-filled, runs dropped."""
    if not prices:
        return
    values = cols.values
    with np.errstate(invalid="ignore"):
        price_bad = {c: ~np.isfinite(values[c]) | (values[c] <= 0) for c in prices}
    any_bad = np.logical_or.reduce([price_bad[c] for c in prices])
    if not any_bad.any():
        return
    counts = (
        (sum(int(np.sum(np.isnan(values[c]))) for c in prices), "NaN"),
        (sum(int(np.sum(np.isinf(values[c]))) for c in prices), "infinite"),
        (sum(int(np.sum(np.isfinite(values[c]) & (values[c] <= 0))) for c in prices),
         "zero/negative"),
    )
    parts = [f"{n} {what}" for n, what in counts if n]
    examples = _examples(cols.index, any_bad)
    fixed = None
    if repair:
        all_bad_row = np.logical_and.reduce([price_bad[c] for c in prices])
        not_first = np.arange(len(any_bad)) > 0
        filled = 0
        drop = all_bad_row.copy()
        for c in prices:
            iso = _runs_isolated(price_bad[c]) & ~all_bad_row & not_first
            values[c] = _ffill_positions(values[c], iso)
            filled += int(iso.sum())
            drop |= price_bad[c] & ~iso
        fixed = f"forward-filled {filled} isolated value(s), dropped {int(drop.sum())} row(s)"
        cols.keep(~drop)
    findings.append(
        Finding(
            "bad_prices",
            "error",
            int(any_bad.sum()),
            f"{int(any_bad.sum())} row(s) with invalid prices ({', '.join(parts)})",
            examples,
            fixed=fixed,
        )
    )


def _check_volume(cols: _Columns, findings: list[Finding], repair: bool) -> None:
    """Negative or missing volume: isolated values forward-filled, runs set to 0."""
    vol = cols.values["volume"]
    with np.errstate(invalid="ignore"):
        vol_bad = ~np.isfinite(vol) | (vol < 0)
    if not vol_bad.any():
        return
    neg = int(np.sum(np.isfinite(vol) & (vol < 0)))
    fixed = None
    if repair:
        iso = _runs_isolated(vol_bad) & (np.arange(len(vol)) > 0)
        vol = _ffill_positions(vol, iso)
        rest = vol_bad & ~iso
        vol[rest] = 0.0
        cols.values["volume"] = vol
        fixed = f"forward-filled {int(iso.sum())}, set {int(rest.sum())} to 0"
    findings.append(
        Finding(
            "bad_volume",
            "error",
            int(vol_bad.sum()),
            f"{int(vol_bad.sum())} invalid volume value(s) ({neg} negative)",
            _examples(cols.index, vol_bad),
            fixed=fixed,
        )
    )


def _check_envelope(cols: _Columns, findings: list[Finding], repair: bool) -> None:
    """high/low must contain open and close: repair widens them to the max/min of the four."""
    o, h, lo, c = (cols.values[k] for k in PRICE_COLUMNS)
    with np.errstate(invalid="ignore"):
        env_bad = (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo)
    if not env_bad.any():
        return
    fixed = None
    if repair:
        stacked = np.vstack([o, h, lo, c])
        cols.values["high"] = np.nanmax(stacked, axis=0)
        cols.values["low"] = np.nanmin(stacked, axis=0)
        fixed = "set high/low to the max/min of open, high, low, close"
    findings.append(
        Finding(
            "ohlc_envelope",
            "error",
            int(env_bad.sum()),
            f"{int(env_bad.sum())} bar(s) where high/low do not contain open and close",
            _examples(cols.index, env_bad),
            fixed=fixed,
        )
    )


def _flatten_spikes(close: np.ndarray, spikes: np.ndarray) -> np.ndarray:
    """``close`` with each spike bar set to the (already flattened) previous close."""
    if not spikes.any():
        return close
    out = close.copy()
    for t in np.flatnonzero(spikes):
        out[t] = out[t - 1]
    return out


def _check_spikes(
    cols: _Columns, prices: tuple[str, ...], findings: list[Finding], repair: bool,
    spike_z: float,
) -> np.ndarray:
    """One-bar spikes that revert (bad prints): an error; repair flattens the bar to the
    previous close. Returns the spike mask."""
    close = cols.values["close"]
    spikes = find_spikes(close, spike_z)
    if not spikes.any():
        return spikes
    with np.errstate(invalid="ignore", divide="ignore"):
        jump = np.expm1(np.log(close[1:] / close[:-1]))
    k = int(np.flatnonzero(spikes)[np.argmax(np.abs(jump[spikes[1:]]))])
    n = int(spikes.sum())
    fixed = None
    if repair:
        flat = _flatten_spikes(close, spikes)
        for c in prices:
            cols.values[c] = np.where(spikes, flat, cols.values[c])
        fixed = f"set open/high/low/close of {n} bar(s) to the previous close"
    findings.append(
        Finding(
            "price_spikes",
            "error",
            n,
            f"{n} one-bar spike(s) that the next bar takes back (bad prints: a jump and its "
            f"reversal both beyond {spike_z:g} robust sigmas of the bar's recent returns); "
            f"largest {jump[k - 1] * 100:+.2f}% at {cols.index[k]}",
            _examples(cols.index, spikes),
            fixed=fixed,
        )
    )
    return spikes


def _check_gaps(
    index: pd.DatetimeIndex, tf: Timeframe, findings: list[Finding],
    calendar: MarketCalendar | None,
) -> None:
    gaps = find_gaps(index, tf, calendar)
    within = f" inside {calendar.name} sessions" if calendar is not None else ""
    if gaps.events:
        findings.append(
            Finding(
                "gaps",
                "warning",
                gaps.events,
                f"{gaps.events} gap(s) against {tf.name} bars{within}, about {gaps.missing} "
                f"missing bar(s), largest {gaps.largest}",
                gaps.examples,
            )
        )
    if gaps.outside:
        findings.append(
            Finding(
                "outside_sessions",
                "warning",
                gaps.outside,
                f"{gaps.outside} bar(s) fall outside the {calendar} sessions (wrong calendar, "
                "or bars from another session such as extended hours?)",
                list(gaps.outside_examples),
            )
        )


#: Trailing returns whose robust scale the price-jump warning compares each return with.
JUMP_WINDOW = 100
_JUMP_MIN_PERIODS = 20


def jump_scores(
    close: np.ndarray, index: pd.DatetimeIndex, tf: Timeframe | None,
    sessions: np.ndarray | None = None,
) -> np.ndarray:
    """Each close-to-close log return in robust sigmas of the bar's own recent volatility.

    The scale of a return is ``1.4826 × median |r|`` of the :data:`JUMP_WINDOW` returns
    between adjacent bars (one timeframe apart) before it (trailing: the bar itself is not in
    its scale), floored at half of the same figure over the whole series (so a quiet stretch
    does not make every tick a jump). A return across missing bars inside a session scales it
    by the square root of the bars elapsed. A return that opens a session (the overnight or
    weekend gap, the futures' break; ``sessions`` changes) is compared with the other session
    openings (their ``1.4826 × median |r|``) when there are at least ten, else like a return
    across missing bars. So a busy minute after a quiet hour is judged against its own
    minutes, and a session's opening gap is not a jump because it is larger than a minute.

    :param close: closes in time order.
    :param index: their open times.
    :param tf: the bars' timeframe (``None``: every return counts as adjacent).
    :param sessions: each bar's session index (:func:`session_positions`; ``None``: no
        sessions known, so a gap longer than a day counts as a session opening). Daily bars
        are one bar per session: consecutive sessions are adjacent, skipped ones elapsed.
    :returns: ``|z|`` per return (``len(close) - 1`` values), NaN where undefined.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        logret = np.diff(np.log(close))
    n = logret.size
    z = np.full(n, np.nan)
    if n < 2:
        return z
    size = np.abs(logret)
    ns = as_ns(index)
    step = tf.nanos if tf is not None and not tf.is_calendar else None
    elapsed = np.diff(ns) / step if step else np.ones(n)
    if sessions is not None and tf is not None and tf.unit == "d":
        # daily bars: one bar per session, so consecutive sessions are adjacent bars
        sess = np.asarray(sessions)
        known = (sess[1:] >= 0) & (sess[:-1] >= 0)
        elapsed = np.where(known, np.diff(sess).astype(np.float64), elapsed)
        sessions = None
    adjacent = elapsed <= 1.0 + 1e-9
    if sessions is not None:
        opening = np.diff(np.asarray(sessions)) != 0
    elif tf is not None and tf.unit == "d":
        opening = np.zeros(n, dtype=bool)
    else:
        opening = np.diff(ns) > 86400 * NS_PER_SECOND
    adjacent &= ~opening
    finite = np.isfinite(size)
    base = size[adjacent & finite]
    if base.size <= 10:
        return z
    moving = base[base > 0]
    if not moving.size:
        return z
    global_scale = 1.4826 * float(np.median(base))
    if global_scale <= 0:
        global_scale = 1.4826 * float(np.median(moving))
    floor = 0.5 * global_scale
    adj_pos = np.flatnonzero(adjacent)
    trailing = (pd.Series(size[adj_pos]).rolling(JUMP_WINDOW, min_periods=_JUMP_MIN_PERIODS)
                .median().shift(1).to_numpy() * 1.4826)
    # each return's scale: the trailing adjacent scale in force at it
    local = np.full(n, np.nan)
    local[adj_pos] = trailing
    local = pd.Series(local).ffill().to_numpy()
    local = np.maximum(np.where(np.isfinite(local), local, global_scale), floor)
    scale = local * np.sqrt(np.maximum(elapsed, 1.0))
    scale[adj_pos] = local[adj_pos]
    openings = np.flatnonzero(opening)
    open_sizes = size[openings][np.isfinite(size[openings])]
    if open_sizes.size >= 10 and np.median(open_sizes) > 0:
        scale[openings] = np.maximum(1.4826 * float(np.median(open_sizes)), floor)
    with np.errstate(invalid="ignore"):
        z = size / scale
    return z


def _check_jumps(
    close: np.ndarray, index: pd.DatetimeIndex, findings: list[Finding], jump_z: float,
    tf: Timeframe | None, calendar: MarketCalendar | None,
) -> None:
    """Close-to-close moves beyond ``jump_z`` robust sigmas of the bar's own recent volatility
    (:func:`jump_scores`): a warning."""
    sessions = None
    if calendar is not None and tf is not None and len(index) and index.is_monotonic_increasing:
        sessions = session_positions(as_ns(index), calendar, tf)[0]
    z = jump_scores(close, index, tf, sessions)
    jumps = np.isfinite(z) & (z > jump_z)
    if not jumps.any():
        return
    with np.errstate(invalid="ignore", divide="ignore"):
        logret = np.diff(np.log(close))
    k = int(np.nanargmax(np.where(jumps, np.abs(logret), -np.inf)))
    findings.append(
        Finding(
            "price_jumps",
            "warning",
            int(jumps.sum()),
            f"{int(jumps.sum())} close-to-close move(s) beyond {jump_z:g} robust sigmas of "
            f"the bar's recent volatility; largest {np.expm1(logret[k]) * 100:+.2f}% at "
            f"{index[k + 1]}",
            [str(index[i + 1]) for i in np.flatnonzero(jumps)[:_MAX_EXAMPLES]],
        )
    )


def _sorted_unique(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    clean = index[~np.asarray(index.isna())]
    if not clean.is_monotonic_increasing or clean.has_duplicates:
        clean = clean.sort_values().unique()
    return clean


def _checked(columns: Iterable[str]) -> tuple[str, ...]:
    checked = tuple(dict.fromkeys(columns))
    unknown = [c for c in checked if c not in OHLCV]
    if unknown:
        raise DataError(f"validate_bars: columns must be among {', '.join(OHLCV)}; got {unknown}")
    return checked


def _resolve_calendar(
    calendar: str | MarketCalendar | None, index: pd.DatetimeIndex, tf: Timeframe | None
) -> MarketCalendar | None:
    """The calendar named, or the one :func:`infer_calendar` finds for ``"auto"``."""
    if isinstance(calendar, str) and calendar.strip().lower() == "auto":
        return infer_calendar(as_ns(index), tf).calendar if tf is not None else None
    return get_calendar(calendar)


def validate_bars(
    df: pd.DataFrame,
    timeframe: str | Timeframe | None = None,
    policy: Policy = "strict",
    *,
    naive_tz: str | None = None,
    jump_z: float = 12.0,
    spike_z: float = 50.0,
    columns: Iterable[str] = OHLCV,
    source: str | None = None,
    calendar: str | MarketCalendar | None = "auto",
) -> ValidationReport:
    """Check bars and, under ``policy="repair"``, fix what can be fixed honestly.

    :param df: bars in any layout :func:`rltrade.data.parsing.standardize` understands (a frame
        from ``load_bars``, a raw CSV table, a user's DataFrame with a DatetimeIndex).
    :param timeframe: expected bar spacing, e.g. ``"1h"``; inferred from the data when omitted.
    :param policy: ``"strict"`` raises :class:`ValidationError` listing every error;
        ``"repair"`` applies the documented fixes and returns what it changed; ``"report"``
        only reports (never raises, never changes).
    :param naive_tz: time zone of naive timestamps (default: UTC, with a warning).
    :param jump_z: robust sigmas of the bar's own recent returns beyond which a log return is
        reported as a price jump (see :func:`jump_scores`).
    :param spike_z: robust sigmas that a one-bar jump and its reversal must both exceed to be
        a bad print (see :func:`find_spikes`).
    :param columns: the columns whose values are required and checked, among ``open, high,
        low, close, volume`` (default: all five). An external series that only uses its close
        passes ``("close",)``: its other columns may be absent or broken (they are kept as
        they are), the OHLC envelope is checked only when all four prices are, and volume
        only when listed. Timestamps are always checked.
    :param calendar: the market calendar whose sessions gaps are counted in (``"24/7"``,
        ``"24/5"``, ``"XNYS-RTH"``, ``"XNYS-EXT"``, ``"CMES"``; see
        :mod:`rltrade.data.calendars`); ``"auto"`` (default) infers it from the bars
        (:func:`~rltrade.data.calendars.infer_calendar`), ``None`` uses none (the timeframe
        and the weekend rule). The calendar used is ``report.calendar``.
    :returns: a :class:`ValidationReport`; the (possibly repaired) bars are ``report.bars``.
    """
    if policy not in ("strict", "repair", "report"):
        raise DataError(f"unknown validation policy {policy!r}: use strict, repair or report")
    checked = _checked(columns)
    prices = tuple(c for c in PRICE_COLUMNS if c in checked)
    rows_in = len(df)
    bars, findings = _standard_layout(df, naive_tz, source, checked)
    if rows_in == 0:
        raise DataError(f"{source or 'bars'}: no rows")
    repair = policy == "repair"

    # timestamps: unparseable, order, duplicates
    if repair:
        _note_parsing_repairs(findings, naive_tz)
        bars = _drop_unparseable(bars, findings)
    bars = _check_order(bars, findings, repair)
    bars = _check_duplicates(bars, findings, repair)

    # values
    cols = _Columns.of(bars)
    _check_prices(cols, prices, findings, repair)
    if "volume" in checked:
        _check_volume(cols, findings, repair)
    if len(prices) == len(PRICE_COLUMNS):
        _check_envelope(cols, findings, repair)
    spikes = (_check_spikes(cols, prices, findings, repair, spike_z) if "close" in checked
              else None)
    if repair:
        bars = cols.frame()

    # timing: gaps and jumps, on sorted unique bars
    clean_index = _sorted_unique(cols.index)
    tf = parse_timeframe(timeframe) if timeframe is not None else infer_timeframe(clean_index)
    cal = _resolve_calendar(calendar, clean_index, tf)
    if tf is not None:
        _check_gaps(clean_index, tf, findings, cal)
    if spikes is not None:  # spikes are reported above, not again as jumps
        _check_jumps(_flatten_spikes(cols.values["close"], spikes), cols.index, findings, jump_z,
                     tf, cal)

    report = ValidationReport(
        policy=policy,
        rows_in=rows_in,
        rows_out=len(bars),
        timeframe=tf.name if tf else None,
        calendar=cal.name if cal is not None else None,
        findings=findings,
        source=source,
        start=str(clean_index[0]) if len(clean_index) else None,
        end=str(clean_index[-1]) if len(clean_index) else None,
        bars=bars,
    )
    if policy == "strict" and report.errors:
        raise ValidationError(
            f"{report.summary()}\n(load with policy='repair' to apply the documented fixes)",
            report,
        )
    return report


__all__ = [
    "OHLCV",
    "Finding",
    "Gaps",
    "ValidationReport",
    "find_gaps",
    "find_spikes",
    "jump_scores",
    "validate_bars",
]
