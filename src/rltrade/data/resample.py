"""Resampling bars to a higher timeframe, and merging higher-timeframe values back (no lookahead).

Bar labelling (the one convention of rltrade): a bar is labelled by its **open** time and covers
``[open, open + timeframe)``; bins are closed on the left. Days start 00:00 UTC, weeks Monday
00:00 UTC, months on the 1st 00:00 UTC, and intraday bins are aligned to 00:00 UTC (a 4h bar opens
at 00:00, 04:00, ...). A higher bar is built from the base bars whose open time falls in its bin:

=========================================  =========================================
column                                     aggregate
=========================================  =========================================
open                                       first
high / low                                 max / min
close, open_interest, funding_rate, other  last
volume, trades, quote and taker volumes    sum
vwap                                       volume-weighted mean (mean if no volume)
spread                                     mean
=========================================  =========================================

Bins without base bars are not invented. The last bin is dropped when the base bars do not reach
its close (``drop_incomplete=True``), because its values would change as more bars arrived.

:func:`merge_higher_timeframe` makes a higher bar's values visible on a base bar only when the
higher bar has closed by the base bar's close, i.e. ``higher_open + higher_tf <= base_open +
base_tf``: at the close of the last base bar inside a 4h bin, the 4h bar is complete and may be
used; one base bar earlier it may not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rltrade.data.parsing import OHLCV
from rltrade.data.timeframes import Timeframe, as_ns, infer_timeframe, parse_timeframe
from rltrade.errors import DataError

_SUM = {"volume", "trades", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"}
_MEAN = {"spread"}


def _timeframe_of(frame: pd.DataFrame, given: str | Timeframe | None, what: str) -> Timeframe:
    if given is not None:
        return parse_timeframe(given)
    attr = frame.attrs.get("timeframe")
    if attr:
        return parse_timeframe(attr)
    inferred = infer_timeframe(frame.index)
    if inferred is None:
        raise DataError(f"cannot infer the timeframe of the {what} bars: pass it explicitly")
    return inferred


def resample(
    bars: pd.DataFrame,
    timeframe: str | Timeframe,
    *,
    base_timeframe: str | Timeframe | None = None,
    drop_incomplete: bool = True,
) -> pd.DataFrame:
    """Aggregate bars to a higher ``timeframe`` (see the module doc for the rules).

    :param bars: sorted bars in rltrade's layout (from :func:`rltrade.data.load_bars`).
    :param timeframe: the target, e.g. ``"4h"``; must be a whole multiple of the base timeframe.
    :param base_timeframe: timeframe of ``bars``; from ``bars.attrs`` or inferred when omitted.
    :param drop_incomplete: drop the last bin if the base bars do not reach its close.
    :returns: bars labelled by open time, with the same columns, ``attrs["timeframe"]`` set.
    """
    tf = parse_timeframe(timeframe)
    base_tf = _timeframe_of(bars, base_timeframe, "base")
    if tf.seconds < base_tf.seconds:
        raise DataError(f"cannot resample {base_tf} bars down to {tf}")
    if len(bars) == 0:
        out = bars.copy()
        out.attrs["timeframe"] = tf.name
        return out
    index = bars.index
    if not index.is_monotonic_increasing or index.has_duplicates:
        raise DataError("resample needs sorted bars with unique timestamps: validate them first")

    labels_ns = as_ns(tf.floor(index))
    starts = np.flatnonzero(np.concatenate(([True], labels_ns[1:] != labels_ns[:-1])))
    out_index = pd.DatetimeIndex(labels_ns[starts], tz="UTC").as_unit("ns")
    ends = np.append(starts[1:], len(index)) - 1
    columns: dict[str, np.ndarray] = {}
    volume = bars["volume"].to_numpy(np.float64) if "volume" in bars else None
    for col in bars.columns:
        v = bars[col].to_numpy(np.float64)
        if col == "open":
            columns[col] = v[starts]
        elif col == "high":
            columns[col] = np.maximum.reduceat(v, starts)
        elif col == "low":
            columns[col] = np.minimum.reduceat(v, starts)
        elif col in _SUM:
            columns[col] = np.add.reduceat(v, starts)
        elif col in _MEAN:
            columns[col] = np.add.reduceat(v, starts) / np.diff(np.append(starts, len(v)))
        elif col == "vwap" and volume is not None:
            vol_sum = np.add.reduceat(volume, starts)
            weighted = np.add.reduceat(v * volume, starts)
            counts = np.diff(np.append(starts, len(v)))
            plain = np.add.reduceat(v, starts) / counts
            with np.errstate(invalid="ignore", divide="ignore"):
                columns[col] = np.where(vol_sum > 0, weighted / vol_sum, plain)
        else:  # close and state-like columns: the value at the end of the bin
            columns[col] = v[ends]
    out = pd.DataFrame(columns, index=out_index)
    out.index.name = "timestamp"
    if drop_incomplete:
        last_base_close = base_tf.close_times_ns(as_ns(index[-1:]))[0]
        last_close = tf.close_times_ns(labels_ns[-1:])[0]
        if last_close > last_base_close:
            out = out.iloc[:-1]
    out.attrs.update(bars.attrs)
    out.attrs["timeframe"] = tf.name
    ordered = [c for c in OHLCV if c in out.columns] + [c for c in out.columns if c not in OHLCV]
    return out[ordered]


def align_higher(
    base_open_ns: np.ndarray,
    base_tf: Timeframe,
    higher_open_ns: np.ndarray,
    higher_tf: Timeframe,
) -> np.ndarray:
    """For each base bar, the position of the latest higher bar closed by the base bar's close
    (-1 when none has closed yet). The one rule behind every higher-timeframe merge."""
    base_close = base_tf.close_times_ns(base_open_ns)
    higher_close = higher_tf.close_times_ns(higher_open_ns)
    if len(higher_close) > 1 and np.any(np.diff(higher_close) <= 0):
        raise DataError("higher-timeframe rows must be sorted with unique timestamps")
    return np.searchsorted(higher_close, base_close, side="right") - 1


def merge_higher_timeframe(
    base: pd.DataFrame | pd.DatetimeIndex,
    higher: pd.DataFrame,
    *,
    base_timeframe: str | Timeframe | None = None,
    higher_timeframe: str | Timeframe | None = None,
    prefix: str = "",
) -> pd.DataFrame:
    """Values of ``higher`` bars as known on each ``base`` bar, without lookahead.

    Base bar ``i`` gets the row of the latest higher bar whose close time is at or before base bar
    ``i``'s close time; rows before the first higher bar closed are NaN.

    :param base: base bars (or just their index), sorted.
    :param higher: higher-timeframe rows labelled by open time (e.g. from :func:`resample`, or any
        values computed on such bars, like a 4h strategy signal).
    :param prefix: prepended to every column name (e.g. ``"4h_"``).
    :returns: a DataFrame indexed like ``base`` with ``higher``'s columns.
    """
    base_index = base if isinstance(base, pd.DatetimeIndex) else base.index
    if isinstance(base, pd.DatetimeIndex):
        if base_timeframe is None:
            inferred = infer_timeframe(base)
            if inferred is None:
                raise DataError("cannot infer the base timeframe: pass base_timeframe")
            base_tf = inferred
        else:
            base_tf = parse_timeframe(base_timeframe)
    else:
        base_tf = _timeframe_of(base, base_timeframe, "base")
    higher_tf = _timeframe_of(higher, higher_timeframe, "higher")
    pos = align_higher(as_ns(base_index), base_tf, as_ns(higher.index), higher_tf)
    valid = pos >= 0
    out: dict[str, np.ndarray] = {}
    for col in higher.columns:
        v = higher[col].to_numpy()
        if v.dtype.kind in "fc":
            res = np.full(len(pos), np.nan, dtype=v.dtype)
        else:
            v = v.astype(np.float64)
            res = np.full(len(pos), np.nan)
        res[valid] = v[pos[valid]]
        out[f"{prefix}{col}"] = res
    return pd.DataFrame(out, index=base_index)
