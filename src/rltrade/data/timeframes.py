"""Timeframe strings ("1m", "15m", "1h", "4h", "1d", "1w", "1M") and bar arithmetic.

Conventions (used everywhere in rltrade):

* A bar's timestamp is its **open** time, in UTC. The bar covers ``[open, open + duration)``
  and its values are known at its close, ``open + duration``.
* ``m`` is minutes and ``M`` is months (the CCXT convention); ``s``, ``h``, ``d``, ``w`` are
  seconds, hours, days and weeks. Weekly bars open on Monday 00:00 UTC, monthly bars on the first
  day of the month 00:00 UTC, daily bars at 00:00 UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from rltrade.errors import DataError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w|M)\s*$")
NS_PER_SECOND = 1_000_000_000
# Used for annualization and for scaling synthetic volatility.
SECONDS_PER_YEAR = 365.25 * 86400
_MONTH_SECONDS = SECONDS_PER_YEAR / 12


@dataclass(frozen=True)
class Timeframe:
    """A parsed timeframe. ``seconds`` is nominal (a month counts 30.44 days)."""

    count: int
    unit: str

    @property
    def name(self) -> str:
        return f"{self.count}{self.unit}"

    @property
    def is_calendar(self) -> bool:
        """Months have no fixed length; everything else does."""
        return self.unit == "M"

    @property
    def seconds(self) -> float:
        if self.unit == "M":
            return self.count * _MONTH_SECONDS
        return float(self.count * _UNITS[self.unit])

    @property
    def nanos(self) -> int:
        """Fixed duration in nanoseconds (nominal for months)."""
        return round(self.seconds * NS_PER_SECOND)

    @property
    def pandas_freq(self) -> str:
        """The pandas offset alias whose bins match our labelling."""
        return {
            "s": f"{self.count}s",
            "m": f"{self.count}min",
            "h": f"{self.count}h",
            "d": f"{self.count}D",
            "w": f"{self.count}W-MON",
            "M": f"{self.count}MS",
        }[self.unit]

    @property
    def bars_per_year(self) -> float:
        return SECONDS_PER_YEAR / self.seconds

    def close_times(self, open_times: pd.DatetimeIndex) -> pd.DatetimeIndex:
        """Close time of each bar given its open time (exact for months)."""
        if self.unit == "M":
            return open_times + pd.DateOffset(months=self.count)
        return open_times + pd.Timedelta(seconds=self.seconds)

    def close_times_ns(self, open_ns: np.ndarray) -> np.ndarray:
        """Close times as int64 UTC nanoseconds for int64 open times."""
        open_ns = np.asarray(open_ns, dtype=np.int64)
        if self.unit == "M":
            idx = pd.DatetimeIndex(open_ns.astype("datetime64[ns]"))
            return as_ns(self.close_times(idx))
        return open_ns + np.int64(self.nanos)

    def floor(self, ts: pd.DatetimeIndex) -> pd.DatetimeIndex:
        """The open time of the bar of this timeframe that contains each timestamp."""
        if self.unit == "M":
            months = ts.year * 12 + (ts.month - 1)
            months = (months // self.count) * self.count
            years, mon = np.divmod(np.asarray(months), 12)
            floored = pd.DatetimeIndex(
                pd.to_datetime({"year": years, "month": mon + 1, "day": 1})
            ).as_unit("ns")
            return floored.tz_localize(ts.tz) if ts.tz is not None else floored
        if self.unit == "w":
            # Weeks start on Monday; 1970-01-05 was a Monday.
            origin = pd.Timestamp("1970-01-05", tz=ts.tz)
            width = self.nanos
            offs = (as_ns(ts) - as_ns(pd.DatetimeIndex([origin]))[0]) // width * width
            return origin + pd.to_timedelta(offs, unit="ns")
        return ts.floor(pd.Timedelta(seconds=self.seconds))

    def __str__(self) -> str:
        return self.name


def as_ns(index: pd.DatetimeIndex | pd.Series | np.ndarray) -> np.ndarray:
    """Int64 nanoseconds since the epoch (UTC) of timestamps, whatever their pandas unit.

    pandas 3 infers microsecond resolution for parsed timestamps, so ``.asi8`` alone is not
    nanoseconds; every conversion to integers in rltrade goes through here.
    """
    if isinstance(index, pd.Series):
        index = pd.DatetimeIndex(index)
    if isinstance(index, pd.DatetimeIndex):
        return index.as_unit("ns").asi8
    arr = np.asarray(index)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[ns]").astype(np.int64)
    return arr.astype(np.int64)


def to_utc(value: str | pd.Timestamp) -> pd.Timestamp:
    """A timestamp in UTC; naive values are taken as UTC."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


@lru_cache(maxsize=256)
def parse_timeframe(value: str | Timeframe) -> Timeframe:
    """Parse ``"15m"``, ``"1h"``, ``"1d"``, ``"1M"`` ... into a :class:`Timeframe`.

    Raises :class:`DataError` for anything else. Aliases ``"1min"``, ``"60min"``, ``"1H"``,
    ``"1D"``, ``"1W"`` are accepted and canonicalised.
    """
    if isinstance(value, Timeframe):
        return value
    text = str(value).strip()
    alias = re.fullmatch(r"(\d+)\s*(min|T)", text)
    if alias:
        text = f"{alias.group(1)}m"
    elif re.fullmatch(r"\d+\s*[HDW]", text):
        text = text[:-1] + text[-1].lower()
    match = _PATTERN.match(text)
    if not match or int(match.group(1)) <= 0:
        raise DataError(
            f"unknown timeframe {value!r}: use a count and a unit, e.g. 1m, 15m, 1h, 4h, 1d, 1w, 1M"
        )
    tf = Timeframe(int(match.group(1)), match.group(2))
    # Canonicalise: 60m -> 1h, 24h -> 1d (but not 7d -> 1w: week bins start on Monday).
    secs = tf.seconds
    if tf.unit in ("s", "m", "h"):
        for unit in ("d", "h", "m"):
            size = _UNITS[unit]
            if secs % size == 0 and _UNITS[tf.unit] < size:
                return Timeframe(int(secs // size), unit)
    return tf


_KNOWN = [
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
]


def infer_timeframe(index: pd.DatetimeIndex | np.ndarray) -> Timeframe | None:
    """Guess the timeframe of bars from the most common spacing between timestamps.

    Returns ``None`` for fewer than three bars. The mode of the spacing is used (not the median),
    so weekends and overnight gaps do not fool it; daily bars with weekend gaps give ``1d`` and
    month-end or month-start labels give ``1M``.
    """
    values = as_ns(index)
    if len(values) < 3:
        return None
    diffs = np.diff(np.sort(values))
    diffs = diffs[diffs > 0]
    if len(diffs) == 0:
        return None
    uniq, counts = np.unique(diffs, return_counts=True)
    step = float(uniq[np.argmax(counts)]) / NS_PER_SECOND
    # Month lengths vary (28..31 days): treat a modal spacing in that band as monthly.
    if 27 * 86400 <= step <= 32 * 86400:
        return Timeframe(1, "M")
    exact = [parse_timeframe(k) for k in _KNOWN if parse_timeframe(k).seconds == step]
    if exact:
        return exact[0]
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if step >= size and step % size == 0:
            return Timeframe(int(step // size), unit)
    return Timeframe(max(1, round(step)), "s")
