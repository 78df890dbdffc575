"""The larger real files in ../shared/data: our validator must agree with their PROVENANCE.md.

Skipped when the folder is absent (a user's machine does not have it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rltrade.data import load_bars, load_bars_with_report
from rltrade.data.resample import resample

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present"),
]


@pytest.mark.parametrize(
    "name,rows,gap_events,missing",
    [
        ("btcusd_bitfinex_1m_2018Q1.csv.gz", 129433, 21, 167),
        ("ethusd_bitfinex_1m_2018Q1.csv.gz", 129187, 228, 413),
    ],
)
def test_bitfinex_minute_bars_gaps_match_provenance(name, rows, gap_events, missing):
    df, report = load_bars_with_report(SHARED / name)
    assert len(df) == rows and report.timeframe == "1m"
    assert not report.errors
    gaps = next(f for f in report.warnings if f.code == "gaps")
    assert gaps.count == gap_events
    assert f"about {missing} missing" in gaps.message


def test_binance_perp_hourly_is_clean_and_complete():
    df, report = load_bars_with_report(SHARED / "btcusdt_perp_binance_1h_2019-09_2023-06.csv.gz")
    assert len(df) == 33364 and report.timeframe == "1h"
    assert not report.errors
    assert "gaps" not in {f.code for f in report.warnings}  # provenance: 0 missing bars
    # the largest move in the file is the March 2020 crash bar, flagged as a jump
    jumps = next(f for f in report.warnings if f.code == "price_jumps")
    assert "-18.71%" in jumps.message


def test_vix_envelope_violations_found_and_repaired():
    _, report = load_bars_with_report(SHARED / "vix_daily_1990-2026.csv", policy="report")
    envelope = next(f for f in report.errors if f.code == "ohlc_envelope")
    assert envelope.count == 47  # as PROVENANCE.md reports
    df = load_bars(SHARED / "vix_daily_1990-2026.csv", policy="repair")
    assert len(df) == 9235
    assert (df["high"] >= np.maximum(df["open"], df["close"])).all()


def test_spy_minute_extended_hours_resamples_to_hourly():
    df = load_bars(SHARED / "spy_1m_2024-02_2024-05_ext_hours.csv.gz")
    assert len(df) == 49720
    hourly = resample(df, "1h")
    in_bins = df.index.floor("1h").isin(hourly.index)
    assert hourly["volume"].sum() == pytest.approx(df.loc[in_bins, "volume"].sum(), rel=1e-12)
    assert hourly["high"].max() == df["high"].max()
    assert (hourly["high"] >= hourly[["open", "close"]].max(axis=1)).all()


def test_daily_stocks_all_load_strict():
    files = sorted((SHARED / "daily_us_stocks").glob("*_1d.csv"))
    assert len(files) >= 29
    for path in files:
        _, report = load_bars_with_report(path)
        assert report.timeframe == "1d", path.name
        assert not report.errors, path.name


def test_vix_joined_after_one_day_on_daily_stocks():
    from rltrade.features import FeatureSpec, build_dataset

    vix_path = SHARED / "vix_daily_1990-2026.csv"
    spec = FeatureSpec.from_dict({
        "features": {"rsi": {"period": 14}},
        "external": [{"name": "vix", "source": str(vix_path)}],
    })
    bars = load_bars(SHARED / "daily_us_stocks" / "AAPL_1d.csv")
    ds = build_dataset(bars, spec)
    vix = load_bars(vix_path, policy="repair")
    frame = ds.to_frame()
    # the bar of 2008-09-30 sees the VIX close of 09-29, never its own day's
    def seen(day: str) -> float:
        return float(frame.loc[day, "ext_vix"])

    def vix_close(day: str) -> float:
        return float(np.float32(vix.loc[day, "close"]))  # features are stored as float32

    assert seen("2008-09-30") == vix_close("2008-09-29")
    assert seen("2008-10-01") == vix_close("2008-09-30")
    assert seen("2008-10-06") == vix_close("2008-10-03")  # Monday sees Friday


def test_default_dataset_on_real_minute_crypto():
    from rltrade.features import build_dataset

    bars = load_bars(SHARED / "btcusd_bitfinex_1m_2018Q1.csv.gz")
    ds = build_dataset(bars)
    assert ds.strategy_timeframes == ["1h", "15m", "4h", "1h", "4h"]
    assert np.isfinite(ds.features).all()
    codes = ds.signals.reshape(len(ds), 5, 4).argmax(axis=2)
    assert (codes != 3).any(axis=0).all()  # every strategy says something besides HOLD
