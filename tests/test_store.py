"""BarStore: partitioning, atomic writes, merge/dedupe, archiving, fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rltrade.data import load_bars
from rltrade.data.store import BarStore, fingerprint_bars, symbol_key
from rltrade.errors import StoreError


@pytest.fixture
def goog() -> pd.DataFrame:
    return load_bars("sample:GOOG-1d")


def test_partitioned_by_symbol_timeframe_year(tmp_path, goog):
    store = BarStore(tmp_path)
    stats = store.write("GOOG", "1d", goog, source="sample")
    assert stats == {"added": len(goog), "replaced": 0, "unchanged": 0}
    years = sorted(p.stem for p in (tmp_path / "GOOG" / "1d").glob("*.parquet"))
    assert years == [str(y) for y in range(2004, 2014)]
    back = store.read("GOOG", "1d")
    pd.testing.assert_frame_equal(back, goog, check_freq=False)
    assert store.series() == [("GOOG", "1d")]
    assert store.meta("GOOG", "1d")["fingerprint"] == fingerprint_bars(goog)


def test_read_range(tmp_path, goog):
    store = BarStore(tmp_path)
    store.write("GOOG", "1d", goog)
    part = store.read("GOOG", "1d", start="2008-03-01", end="2009-01-01")
    assert part.index[0] >= pd.Timestamp("2008-03-01", tz="UTC")
    assert part.index[-1] < pd.Timestamp("2009-01-01", tz="UTC")
    pd.testing.assert_frame_equal(part, goog.loc["2008-03-01":"2008-12-31"], check_freq=False)


def test_append_merges_dedupes_and_new_rows_win(tmp_path, goog):
    store = BarStore(tmp_path)
    store.write("GOOG", "1d", goog.iloc[:1000])
    update = goog.iloc[900:1500].copy()
    update.iloc[0, update.columns.get_loc("close")] += 1.0  # a corrected bar
    update.iloc[0, update.columns.get_loc("high")] += 1.0
    stats = store.write("GOOG", "1d", update)
    assert stats == {"added": 500, "replaced": 1, "unchanged": 99}
    back = store.read("GOOG", "1d")
    assert len(back) == 1500 and not back.index.has_duplicates
    assert back["close"].iloc[900] == goog["close"].iloc[900] + 1.0
    # the year file whose values changed was archived, nothing lost; appends are not archived
    archived = list((tmp_path / "archived" / "GOOG" / "1d").glob("*.parquet"))
    year = str(goog.index[900].year)
    assert [p.stem.split("__")[0] for p in archived] == [year]
    old = pd.read_parquet(archived[0])
    assert old["close"].loc[goog.index[900]] == goog["close"].iloc[900]


def test_rewriting_identical_bars_touches_nothing(tmp_path, goog):
    store = BarStore(tmp_path)
    store.write("GOOG", "1d", goog)
    stats = store.write("GOOG", "1d", goog)
    assert stats["unchanged"] == len(goog) and stats["added"] == 0
    assert not (tmp_path / "archived").exists()


def test_atomic_write_leaves_previous_file_on_crash(tmp_path, goog, monkeypatch):
    store = BarStore(tmp_path)
    store.write("GOOG", "1d", goog.iloc[:100])
    target = tmp_path / "GOOG" / "1d" / "2004.parquet"
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.write("GOOG", "1d", goog.iloc[50:150])
    assert target.read_bytes() == before  # untouched, readable
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    pd.testing.assert_frame_equal(store.read("GOOG", "1d"), goog.iloc[:100], check_freq=False)


def test_fingerprint_is_canonical(goog, tmp_path):
    fp = fingerprint_bars(goog)
    assert fp == fingerprint_bars(goog.iloc[::-1])  # row order
    assert fp == fingerprint_bars(goog[["close", "open", "volume", "low", "high"]])
    coarse = goog.copy()
    coarse.index = coarse.index.as_unit("us")
    assert fp == fingerprint_bars(coarse)  # pandas time unit
    changed = goog.copy()
    changed.iloc[5, 3] = np.nextafter(changed.iloc[5, 3], np.inf)
    assert fp != fingerprint_bars(changed)  # one ulp in one cell
    path = tmp_path / "g.csv"
    goog.to_csv(path)
    assert fingerprint_bars(load_bars(path)) == fp  # same bars, through a file


def test_coverage_intervals_merge(tmp_path):
    store = BarStore(tmp_path)
    store.add_coverage("BTC/USDT", "1h", 0, 10)
    store.add_coverage("BTC/USDT", "1h", 10, 20)
    store.add_coverage("BTC/USDT", "1h", 30, 40)
    assert store.coverage("BTC/USDT", "1h") == [(0, 20), (30, 40)]


def test_symbols_with_slashes_and_errors(tmp_path, goog):
    assert symbol_key("BTC/USDT:USDT") == "BTC-USDT-USDT"
    store = BarStore(tmp_path)
    store.write("BTC/USDT", "1d", goog.iloc[:10])
    assert store.series() == [("BTC/USDT", "1d")]
    with pytest.raises(StoreError, match="the store has: BTC/USDT/1d"):
        store.read("ETH/USDT", "1d")
    with pytest.raises(StoreError):
        symbol_key("../../etc")


def test_load_bars_from_store(tmp_path, goog):
    BarStore(tmp_path).write("GOOG", "1d", goog)
    df = load_bars("store:GOOG/1d", store_root=tmp_path)
    pd.testing.assert_frame_equal(df, goog, check_freq=False)
    assert df.attrs["symbol"] == "GOOG"


def test_info(tmp_path, goog):
    store = BarStore(tmp_path)
    store.write("GOOG", "1d", goog)
    (info,) = store.info()
    assert info.rows == len(goog) and info.timeframe == "1d"
    assert info.start == goog.index[0] and info.end == goog.index[-1]
    assert info.gaps == 0  # US market holidays are not gaps on the inferred XNYS calendar
    assert Path(tmp_path / "GOOG" / "1d" / "_meta.json").exists()
