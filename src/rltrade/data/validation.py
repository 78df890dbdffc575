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
gaps against the timeframe    warning   nothing: missing bars are never invented
price jumps (robust z-score   warning   nothing: real markets jump; look at them
of log returns > threshold)
naive timestamps              warning   taken as UTC (already done by parsing)
============================  ========  =====================================================

For series without Saturday bars (stocks, FX, futures), a gap that spans weekend time is the
weekend close and is not reported, so daily stock data is not reported as full of gaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

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


def _gaps(
    index: pd.DatetimeIndex, tf: Timeframe
) -> tuple[int, int, pd.Timedelta | None, list[str]]:
    """Gap events, missing bars, largest gap and examples for a sorted unique index."""
    ns = as_ns(index)
    if len(ns) < 2:
        return 0, 0, None, []
    diffs = np.diff(ns)
    if tf.is_calendar:
        limit = tf.count * 32 * 86400 * NS_PER_SECOND
        step = tf.nanos
    else:
        step = tf.nanos
        limit = step
    gap = diffs > limit
    saturday_share = float(np.mean(index.day_of_week == 5))
    if gap.any() and saturday_share < 0.01 and not tf.is_calendar:
        # A weekday-calendar series (stocks, FX, futures): a gap that spans weekend time is the
        # market's weekend close (Friday evening to Sunday evening for FX and futures), not
        # missing data.
        weekend_ns = _weekend_time(ns[1:]) - _weekend_time(ns[:-1])
        gap = gap & (weekend_ns == 0)
    if not gap.any():
        return 0, 0, None, []
    missing = int(np.sum(np.maximum(diffs[gap] // step - 1, 1)))
    largest = pd.Timedelta(int(diffs[gap].max()), unit="ns")
    examples = [str(index[i]) for i in np.flatnonzero(gap)[:_MAX_EXAMPLES]]
    return int(gap.sum()), missing, largest, examples


def validate_bars(
    df: pd.DataFrame,
    timeframe: str | Timeframe | None = None,
    policy: Policy = "strict",
    *,
    naive_tz: str | None = None,
    jump_z: float = 12.0,
    source: str | None = None,
) -> ValidationReport:
    """Check bars and, under ``policy="repair"``, fix what can be fixed honestly.

    :param df: bars in any layout :func:`rltrade.data.parsing.standardize` understands (a frame
        from ``load_bars``, a raw CSV table, a user's DataFrame with a DatetimeIndex).
    :param timeframe: expected bar spacing, e.g. ``"1h"``; inferred from the data when omitted.
    :param policy: ``"strict"`` raises :class:`ValidationError` listing every error;
        ``"repair"`` applies the documented fixes and returns what it changed; ``"report"``
        only reports (never raises, never changes).
    :param naive_tz: time zone of naive timestamps (default: UTC, with a warning).
    :param jump_z: robust z-score above which a log return is reported as a price jump.
    :returns: a :class:`ValidationReport`; the (possibly repaired) bars are ``report.bars``.
    """
    if policy not in ("strict", "repair", "report"):
        raise DataError(f"unknown validation policy {policy!r}: use strict, repair or report")
    rows_in = len(df)
    if is_standard(df):
        bars, findings = df, []
    else:
        try:
            bars, findings = standardize(df, naive_tz=naive_tz)
        except ValidationError:
            raise
        except DataError as exc:
            raise DataError(f"{source}: {exc}" if source else str(exc)) from exc
    repair = policy == "repair"
    if rows_in == 0:
        raise DataError(f"{source or 'bars'}: no rows")

    # --- timestamps -----------------------------------------------------------------------
    for f in findings:
        if f.code == "mixed_timezones" and repair:
            f.fixed = f"naive timestamps taken as {naive_tz or 'UTC'}"
        if f.code == "non_numeric" and repair:
            f.fixed = "treated as missing values"
    nat = np.asarray(bars.index.isna())
    if nat.any() and repair:
        bars = bars[~nat]
        for f in findings:
            if f.code == "unparseable_timestamps":
                f.fixed = f"dropped {int(nat.sum())} row(s)"

    index = bars.index
    ns = as_ns(index[~np.asarray(index.isna())]) if not repair else as_ns(index)
    if len(ns) > 1:
        backwards = np.diff(ns) < 0
        if backwards.any():
            findings.append(
                Finding(
                    "unsorted",
                    "error",
                    int(backwards.sum()),
                    f"rows are not in time order ({int(backwards.sum())} step(s) back in time)",
                    [str(pd.Timestamp(v, tz="UTC")) for v in ns[1:][backwards][:_MAX_EXAMPLES]],
                    fixed="sorted by timestamp" if repair else None,
                )
            )
            if repair:
                bars = bars.iloc[np.argsort(as_ns(bars.index), kind="stable")]

    # --- duplicates -----------------------------------------------------------------------
    dup_ts = bars.index.duplicated(keep=False) & ~np.asarray(bars.index.isna())
    if dup_ts.any():
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
                    f"{len(conflicting_ts)} timestamp(s) appear with different values",
                    [str(t) for t in conflicting_ts[:_MAX_EXAMPLES]],
                    fixed="kept the last row of each conflicting timestamp" if repair else None,
                )
            )
        if repair:
            bars = bars[~exact_dup]
            bars = bars[~bars.index.duplicated(keep="last")]

    # --- values ---------------------------------------------------------------------------
    values = {c: bars[c].to_numpy(dtype=np.float64, copy=True) for c in bars.columns}
    index = bars.index
    price_bad = {}
    for c in PRICE_COLUMNS:
        v = values[c]
        with np.errstate(invalid="ignore"):
            price_bad[c] = ~np.isfinite(v) | (v <= 0)
    any_price_bad = np.zeros(len(index), dtype=bool)
    for c in PRICE_COLUMNS:
        any_price_bad |= price_bad[c]
    if any_price_bad.any():
        nonpos = sum(int(np.sum(np.isfinite(values[c]) & (values[c] <= 0))) for c in PRICE_COLUMNS)
        nan = sum(int(np.sum(np.isnan(values[c]))) for c in PRICE_COLUMNS)
        inf = sum(int(np.sum(np.isinf(values[c]))) for c in PRICE_COLUMNS)
        parts = [
            f"{n} {what}"
            for n, what in ((nan, "NaN"), (inf, "infinite"), (nonpos, "zero/negative"))
            if n
        ]
        fixed = None
        if repair:
            all_bad_row = np.all(np.vstack([price_bad[c] for c in PRICE_COLUMNS]), axis=0)
            filled = 0
            drop = all_bad_row.copy()
            for c in PRICE_COLUMNS:
                iso = _runs_isolated(price_bad[c]) & ~all_bad_row
                values[c] = _ffill_positions(values[c], iso & (np.arange(len(iso)) > 0))
                filled += int(iso[1:].sum())
                drop |= price_bad[c] & ~(iso & (np.arange(len(iso)) > 0))
            fixed = f"forward-filled {filled} isolated value(s), dropped {int(drop.sum())} row(s)"
            keep = ~drop
            values = {c: v[keep] for c, v in values.items()}
            index = index[keep]
        findings.append(
            Finding(
                "bad_prices",
                "error",
                int(any_price_bad.sum()),
                f"{int(any_price_bad.sum())} row(s) with invalid prices ({', '.join(parts)})",
                _examples(bars.index, any_price_bad),
                fixed=fixed,
            )
        )

    vol = values["volume"]
    with np.errstate(invalid="ignore"):
        vol_bad = ~np.isfinite(vol) | (vol < 0)
    if vol_bad.any():
        neg = int(np.sum(np.isfinite(vol) & (vol < 0)))
        fixed = None
        if repair:
            iso = _runs_isolated(vol_bad) & (np.arange(len(vol)) > 0)
            vol = _ffill_positions(vol, iso)
            rest = vol_bad & ~iso
            vol[rest] = 0.0
            values["volume"] = vol
            fixed = f"forward-filled {int(iso.sum())}, set {int(rest.sum())} to 0"
        findings.append(
            Finding(
                "bad_volume",
                "error",
                int(vol_bad.sum()),
                f"{int(vol_bad.sum())} invalid volume value(s) ({neg} negative)",
                _examples(index, vol_bad),
                fixed=fixed,
            )
        )

    o, h, lo, c = (values[k] for k in PRICE_COLUMNS)
    with np.errstate(invalid="ignore"):
        env_bad = (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo)
    if env_bad.any():
        fixed = None
        if repair:
            stacked = np.vstack([o, h, lo, c])
            values["high"] = np.nanmax(stacked, axis=0)
            values["low"] = np.nanmin(stacked, axis=0)
            fixed = "set high/low to the max/min of open, high, low, close"
        findings.append(
            Finding(
                "ohlc_envelope",
                "error",
                int(env_bad.sum()),
                f"{int(env_bad.sum())} bar(s) where high/low do not contain open and close",
                _examples(index, env_bad),
                fixed=fixed,
            )
        )

    if repair:
        bars = pd.DataFrame(values, index=index)
        bars.index.name = "timestamp"

    # --- timing: gaps and jumps (on sorted unique bars) ----------------------------------
    clean_index = index[~np.asarray(index.isna())]
    if not clean_index.is_monotonic_increasing or clean_index.has_duplicates:
        clean_index = clean_index.sort_values().unique()
    tf = parse_timeframe(timeframe) if timeframe is not None else infer_timeframe(clean_index)
    if tf is not None:
        n_gaps, n_missing, largest, examples = _gaps(clean_index, tf)
        if n_gaps:
            findings.append(
                Finding(
                    "gaps",
                    "warning",
                    n_gaps,
                    f"{n_gaps} gap(s) against {tf.name} bars, about {n_missing} missing bar(s), "
                    f"largest {largest}",
                    examples,
                )
            )
    close = values["close"]
    with np.errstate(invalid="ignore", divide="ignore"):
        logret = np.diff(np.log(close))
    finite = logret[np.isfinite(logret)]
    if finite.size > 10:
        med = np.median(finite)
        mad = np.median(np.abs(finite - med)) * 1.4826
        if mad > 0:
            z = np.abs(logret - med) / mad
            jumps = np.isfinite(z) & (z > jump_z)
            if jumps.any():
                k = int(np.nanargmax(np.where(jumps, np.abs(logret), -np.inf)))
                findings.append(
                    Finding(
                        "price_jumps",
                        "warning",
                        int(jumps.sum()),
                        f"{int(jumps.sum())} close-to-close move(s) beyond robust z {jump_z:g}; "
                        f"largest {np.expm1(logret[k]) * 100:+.2f}% at {index[k + 1]}",
                        [str(index[i + 1]) for i in np.flatnonzero(jumps)[:_MAX_EXAMPLES]],
                    )
                )

    report = ValidationReport(
        policy=policy,
        rows_in=rows_in,
        rows_out=len(bars),
        timeframe=tf.name if tf else None,
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


__all__ = ["OHLCV", "Finding", "ValidationReport", "validate_bars"]
