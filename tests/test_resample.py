"""resample and merge_higher_timeframe: labelling, aggregation, and no lookahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rltrade.data import load_bars
from rltrade.data.resample import merge_higher_timeframe, resample
from rltrade.errors import DataError


def hourly(n: int = 24, start: str = "2024-01-01") -> pd.DataFrame:
    idx = pd.date_range(start, periods=n, freq="1h", tz="UTC", unit="ns", name="timestamp")
    idx.freq = None
    k = np.arange(n, dtype=float)
    # every bar distinct, so using the wrong bar changes the answer
    frame = pd.DataFrame(
        {
            "open": 100 + k,
            "high": 100.5 + k,
            "low": 99.5 + k,
            "close": 100.25 + k,
            "volume": 1 + k,
            "open_interest": 1000 + k,
            "vwap": 100.1 + k,
            "trades": 2 * k,
        },
        index=idx,
    )
    frame.attrs["timeframe"] = "1h"
    return frame


def test_resample_4h_aggregates_and_labels_by_open():
    bars = hourly(24)
    out = resample(bars, "4h")
    assert len(out) == 6
    assert out.index[1] == pd.Timestamp("2024-01-01 04:00", tz="UTC")
    first = out.iloc[0]
    assert first["open"] == 100 and first["close"] == 103.25
    assert first["high"] == 103.5 and first["low"] == 99.5
    assert first["volume"] == 1 + 2 + 3 + 4 and first["trades"] == 2 * (0 + 1 + 2 + 3)
    assert first["open_interest"] == 1003  # state: last value
    vol = np.array([1, 2, 3, 4.0])
    assert first["vwap"] == pytest.approx(np.sum((100.1 + np.arange(4)) * vol) / vol.sum())
    assert out.attrs["timeframe"] == "4h"


def test_resample_matches_pandas_on_real_data():
    bars = load_bars("sample:EURUSD-1h")
    ours = resample(bars, "1d", drop_incomplete=False)
    ref = (
        bars.resample("1D", label="left", closed="left")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        .dropna()
    )
    ref = ref[ref.index.isin(ours.index)]
    pd.testing.assert_frame_equal(ours, ref, check_freq=False)


def test_incomplete_last_bin_dropped_and_gaps_not_invented():
    bars = hourly(22)  # the 20:00 4h bin lacks 22:00 and 23:00
    assert resample(bars, "4h").index[-1] == pd.Timestamp("2024-01-01 16:00", tz="UTC")
    assert resample(bars, "4h", drop_incomplete=False).index[-1] == pd.Timestamp(
        "2024-01-01 20:00", tz="UTC"
    )
    holey = hourly(24).drop(hourly(24).index[4:8])  # the whole 04:00 bin missing
    holey.attrs["timeframe"] = "1h"
    out = resample(holey, "4h")
    assert pd.Timestamp("2024-01-01 04:00", tz="UTC") not in out.index


def test_weekly_and_monthly_bins():
    bars = load_bars("sample:GOOG-1d")
    weekly = resample(bars, "1w")
    assert (weekly.index.day_of_week == 0).all()  # weeks open on Monday
    monthly = resample(bars, "1M")
    assert (monthly.index.day == 1).all()
    jan = bars[(bars.index >= "2005-01-01") & (bars.index < "2005-02-01")]
    row = monthly.loc[pd.Timestamp("2005-01-01", tz="UTC")]
    assert row["open"] == jan["open"].iloc[0] and row["close"] == jan["close"].iloc[-1]
    assert row["high"] == jan["high"].max() and row["volume"] == jan["volume"].sum()


def test_merge_shows_a_higher_bar_only_after_it_closed():
    bars = hourly(24)
    four = resample(bars, "4h")
    merged = merge_higher_timeframe(bars, four[["close"]], prefix="h4_")
    # 4h bar 00:00-04:00 closes at 04:00 = close of the 03:00 hourly bar.
    at = merged["h4_close"]
    assert np.isnan(at.iloc[0:3]).all()  # 00:00, 01:00, 02:00: not closed yet
    assert at.iloc[3] == four["close"].iloc[0] == bars["close"].iloc[3]
    assert at.iloc[4:7].tolist() == [four["close"].iloc[0]] * 3
    assert at.iloc[7] == four["close"].iloc[1]
    # the lookahead mistake (joining on open times) would give a different answer here
    wrong = four["close"].reindex(bars.index).ffill()
    assert wrong.iloc[0] != at.iloc[0] or np.isnan(at.iloc[0])


def test_merge_truncation_no_lookahead():
    """merge(resample(bars[:t+1]))[t] == merge(resample(bars))[t] for every t."""
    bars = load_bars("sample:EURUSD-1h").iloc[:400]
    full = merge_higher_timeframe(bars, resample(bars, "4h"))
    for t in range(0, 400, 7):
        part = bars.iloc[: t + 1]
        if len(part) < 3:
            continue
        got = merge_higher_timeframe(
            part,
            resample(part, "4h", base_timeframe="1h"),
            base_timeframe="1h",
            higher_timeframe="4h",
        )
        np.testing.assert_array_equal(got.iloc[-1].to_numpy(), full.iloc[t].to_numpy())


def test_merge_with_base_gap_uses_latest_closed_bar():
    bars = hourly(24).drop(hourly(24).index[3])  # 03:00 missing: 00-04 bar closes unseen
    bars.attrs["timeframe"] = "1h"
    four = resample(bars, "4h")
    merged = merge_higher_timeframe(bars, four[["close"]], base_timeframe="1h")
    at_4 = merged.loc[pd.Timestamp("2024-01-01 04:00", tz="UTC"), "close"]
    assert at_4 == four["close"].iloc[0]


def test_resample_errors():
    bars = hourly(24)
    with pytest.raises(DataError, match="down to"):
        resample(bars, "15m")
    with pytest.raises(DataError, match="sorted"):
        resample(bars.iloc[::-1], "4h", base_timeframe="1h")
