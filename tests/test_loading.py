"""load_bars: every file layout and source kind it promises to understand."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rltrade.data import DataWarning, load_bars, load_bars_with_report
from rltrade.data.parsing import BINANCE_KLINE_COLUMNS
from rltrade.errors import DataError, RLTradeError

N = 30


@pytest.fixture
def bars() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    idx = pd.date_range("2024-03-01", periods=N, freq="1h", tz="UTC", unit="ns", name="timestamp")
    idx.freq = None  # loaded bars carry no freq
    close = 50 + np.cumsum(rng.normal(0, 0.5, N))
    open_ = np.concatenate(([50.0], close[:-1]))
    high = np.maximum(open_, close) + 0.25
    low = np.minimum(open_, close) - 0.25
    vol = rng.uniform(1, 100, N).round(3)
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": vol}, index=idx
    )


def assert_layout(df: pd.DataFrame) -> None:
    assert isinstance(df.index, pd.DatetimeIndex)
    assert df.index.name == "timestamp"
    assert str(df.index.dtype) == "datetime64[ns, UTC]"
    assert list(df.columns[:5]) == ["open", "high", "low", "close", "volume"]
    assert all(df[c].dtype == np.float64 for c in df.columns)


def write_csv(path: Path, bars: pd.DataFrame, ts: list[str] | np.ndarray, header: str) -> Path:
    lines = [header]
    for t, row in zip(ts, bars.itertuples(index=False), strict=True):
        lines.append(f"{t},{row.open!r},{row.high!r},{row.low!r},{row.close!r},{row.volume!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("unit,scale", [("s", 1e-9), ("ms", 1e-6), ("us", 1e-3), ("ns", 1)])
def test_epoch_units_detected(tmp_path, bars, unit, scale):
    ns = bars.index.as_unit("ns").asi8
    ts = (ns * scale).astype(np.int64) if scale != 1 else ns
    path = write_csv(tmp_path / f"{unit}.csv", bars, ts, "Timestamp,Open,High,Low,Close,Volume")
    df = load_bars(path)
    assert_layout(df)
    pd.testing.assert_index_equal(df.index, bars.index)
    np.testing.assert_array_equal(df["close"].to_numpy(), bars["close"].to_numpy())


@pytest.mark.parametrize(
    "name", ["timestamp", "Date", "DATETIME", "time", "open_time", "Open Time"]
)
def test_timestamp_column_names(tmp_path, bars, name):
    ts = bars.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    df = load_bars(write_csv(tmp_path / "x.csv", bars, ts, f"{name},open,high,low,close,volume"))
    pd.testing.assert_index_equal(df.index, bars.index)


def test_one_letter_names_any_case_and_semicolons(tmp_path, bars):
    ts = bars.index.strftime("%Y-%m-%d %H:%M:%S+00:00")
    path = write_csv(tmp_path / "x.csv", bars, ts, "DATE,O,h,L,c,V")
    path.write_text(path.read_text().replace(",", ";"))
    df = load_bars(path)
    pd.testing.assert_frame_equal(df, bars)


def test_zoned_timestamps_converted_to_utc(tmp_path, bars):
    local = bars.index.tz_convert("America/New_York")
    ts = [t.isoformat() for t in local]  # e.g. 2024-02-29T19:00:00-05:00
    df = load_bars(write_csv(tmp_path / "ny.csv", bars, ts, "timestamp,open,high,low,close,volume"))
    pd.testing.assert_index_equal(df.index, bars.index)


def test_naive_timestamps_warn_and_are_utc(tmp_path, bars):
    ts = bars.index.strftime("%Y-%m-%d %H:%M:%S")
    path = write_csv(tmp_path / "naive.csv", bars, ts, "timestamp,open,high,low,close,volume")
    with pytest.warns(DataWarning, match="no time zone"):
        df = load_bars(path)
    pd.testing.assert_index_equal(df.index, bars.index)


def test_naive_timestamps_with_given_zone(tmp_path, bars):
    local = bars.index.tz_convert("Europe/Berlin")
    ts = local.strftime("%Y-%m-%d %H:%M:%S")
    path = write_csv(tmp_path / "berlin.csv", bars, ts, "timestamp,open,high,low,close,volume")
    df = load_bars(path, naive_tz="Europe/Berlin")
    pd.testing.assert_index_equal(df.index, bars.index)


def test_dates_and_yyyymmdd(tmp_path, bars):
    daily = bars.copy()
    daily.index = pd.date_range(
        "2024-01-01", periods=N, freq="D", tz="UTC", unit="ns", name="timestamp"
    )
    daily.index.freq = None
    df = load_bars(
        write_csv(
            tmp_path / "d.csv",
            daily,
            daily.index.strftime("%Y-%m-%d"),
            "date,open,high,low,close,volume",
        )
    )
    pd.testing.assert_index_equal(df.index, daily.index)
    assert df.attrs["timeframe"] == "1d"
    df2 = load_bars(
        write_csv(
            tmp_path / "d2.csv",
            daily,
            daily.index.strftime("%Y%m%d"),
            "date,open,high,low,close,volume",
        )
    )
    pd.testing.assert_index_equal(df2.index, daily.index)


def test_binance_kline_export_headerless(tmp_path, bars):
    open_ms = bars.index.as_unit("ms").asi8
    lines = []
    for t, row in zip(open_ms, bars.itertuples(index=False), strict=True):
        lines.append(
            f"{t},{row.open},{row.high},{row.low},{row.close},{row.volume},{t + 3_599_999},"
            f"{row.volume * row.close},17,{row.volume / 2},{row.volume * row.close / 2},0"
        )
    assert len(lines[0].split(",")) == len(BINANCE_KLINE_COLUMNS)
    path = tmp_path / "BTCUSDT-1h-2024-03.csv"
    path.write_text("\n".join(lines) + "\n")
    df = load_bars(path)
    assert_layout(df)
    pd.testing.assert_index_equal(df.index, bars.index)
    assert {"quote_volume", "trades", "taker_buy_volume"} <= set(df.columns)
    assert "ignore" not in df.columns and "close_time" not in df.columns
    assert (df["trades"] == 17).all()


def test_extra_columns_kept(tmp_path, bars):
    frame = bars.copy()
    frame["OpenInterest"] = np.arange(N, dtype=float) + 1000
    frame["funding_rate"] = 1e-4
    frame["Spread"] = 0.01
    frame["VWAP"] = frame["close"]
    frame["Trades"] = 5
    frame["symbol"] = "ES"  # non-numeric: dropped with a note
    path = tmp_path / "extra.csv"
    frame.to_csv(path)
    df, report = load_bars_with_report(path)
    assert list(df.columns) == [
        "open",
        "high",
        "low",
        "close",
        "volume",
        "open_interest",
        "funding_rate",
        "spread",
        "vwap",
        "trades",
    ]
    assert any(f.code == "dropped_column" for f in report.findings)


def test_gzip_and_parquet_round_trip(tmp_path, bars):
    csv_gz = tmp_path / "bars.csv.gz"
    with gzip.open(csv_gz, "wt") as fh:
        bars.to_csv(fh, date_format="%Y-%m-%dT%H:%M:%SZ")
    pd.testing.assert_frame_equal(load_bars(csv_gz), bars)
    pq_path = tmp_path / "bars.parquet"
    bars.to_parquet(pq_path)
    pd.testing.assert_frame_equal(load_bars(pq_path), bars)
    flat = tmp_path / "flat.parquet"
    bars.reset_index().rename(columns={"timestamp": "Date"}).to_parquet(flat)
    pd.testing.assert_frame_equal(load_bars(flat), bars)


def test_dataframe_source_and_range(bars):
    df = load_bars(bars, start="2024-03-01 05:00", end="2024-03-01 10:00")
    assert len(df) == 5
    assert df.index[0] == pd.Timestamp("2024-03-01 05:00", tz="UTC")
    with pytest.raises(DataError, match="no bars between"):
        load_bars(bars, start="2030-01-01")


def test_int_volume_and_missing_volume(tmp_path, bars):
    frame = bars.drop(columns="volume")
    path = tmp_path / "novol.csv"
    frame.to_csv(path)
    df, report = load_bars_with_report(path)
    assert (df["volume"] == 0).all()
    assert any(f.code == "no_volume" for f in report.warnings)


@pytest.mark.parametrize(
    "name,symbol,timeframe,rows",
    [
        ("EURUSD-1h", "EURUSD", "1h", 5000),
        ("GOOG-1d", "GOOG", "1d", 2148),
        ("BTCUSD-1M", "BTCUSD", "1M", 156),
    ],
)
def test_bundled_samples(name, symbol, timeframe, rows):
    df, report = load_bars_with_report(f"sample:{name}")
    assert_layout(df)
    assert len(df) == rows
    assert df.attrs["symbol"] == symbol and df.attrs["timeframe"] == timeframe
    assert report.ok and not report.errors
    assert df.index.is_monotonic_increasing and not df.index.has_duplicates


def test_btcusd_monthly_relabelled_to_month_open():
    df = load_bars("sample:BTCUSD-1M")
    assert (df.index.day == 1).all()
    assert df.index[0] == pd.Timestamp("2012-01-01", tz="UTC")


@pytest.mark.parametrize(
    "source,match",
    [
        ("sample:NOPE", "unknown sample"),
        ("/definitely/not/here.csv", "no such file"),
        ("store:onlysymbol", "store:SYMBOL/TIMEFRAME"),
    ],
)
def test_bad_sources(source, match):
    with pytest.raises(RLTradeError, match=match):
        load_bars(source)


def test_synthetic_source_query_parsing():
    df = load_bars("synthetic:regime?n_bars=2e3&include_truth=true&start=2021-01-01T05:00:00+02:00")
    assert len(df) == 2000 and "regime" in df.columns
    assert df.index[0] == pd.Timestamp("2021-01-01 03:00", tz="UTC")  # "+02:00" kept
    assert "open_interest" in load_bars("synthetic:gbm?n_bars=50&derivatives=on").columns
    for bad in ("synthetic:gbm?n_bars=2.5", "synthetic:gbm?derivatives=maybe",
                "synthetic:gbm?half_life=3", "synthetic:nope"):
        with pytest.raises(DataError):
            load_bars(bad)


# ----------------------------------------------------------------------------------------------
# raw bytes never reach the terminal
# ----------------------------------------------------------------------------------------------
_CONTROL = [chr(c) for c in range(32) if chr(c) not in "\n"] + ["\x7f"]


def _assert_printable(text: str) -> None:
    bad = [c for c in text if c in _CONTROL]
    assert not bad, f"raw control characters in {text!r}"


def test_an_unparseable_row_is_quoted_as_a_short_escaped_excerpt(tmp_path):
    from rltrade.data.parsing import excerpt

    path = tmp_path / "binary.csv"
    evil = b"\x1b[31m\x00\x07" + bytes(range(128, 256)) * 3
    path.write_bytes(b"timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,1,1,1,1\n"
                     + evil + b"\n")
    with pytest.raises(DataError) as info:
        load_bars(path)
    message = str(info.value)
    _assert_printable(message)
    assert "\\x1b[31m\\x00\\x07" in message  # escaped, repr-style
    quoted = message.split("row ", 1)[1]
    assert quoted.startswith("'") and quoted.endswith("'...") and len(quoted) <= 60
    assert excerpt("a\x00b") == "'a\\x00b'" and excerpt("x" * 100).endswith("'...")
    assert len(excerpt("\x00" * 100)) <= 60


def test_raw_bytes_in_cells_and_headers_are_escaped(tmp_path, capsys):
    from rltrade.cli import main

    path = tmp_path / "cells.csv"
    path.write_bytes(b"timestamp,open,high,low,close,volume\n"
                     b"2024-01-01T00:00:00Z,1,1,1,1,1\n"
                     b"\x1b]0;pwned\x07\x00,1,1,1,1,1\n"
                     b"2024-01-01T02:00:00Z,1\x1b[2J,1,1,1,1\n")
    with pytest.raises(SystemExit) as info:
        main(["data", "validate", str(path)])
    assert info.value.code == 1
    out = capsys.readouterr()
    _assert_printable(out.out.replace("\n", "") + out.err.replace("\n", ""))
    assert "\\x1b]0;pwned\\x07\\x00" in out.out and "\\x1b[2J" in out.out

    header = tmp_path / "header.csv"
    header.write_bytes(b"\x1b[31mwhen\x00," + b"\x01x," * 40 + b"close\n1,2,3\n")
    with pytest.raises(DataError) as err:
        load_bars(header)
    _assert_printable(str(err.value))
    assert len(str(err.value)) < 600


# ----------------------------------------------------------------------------------------------
# mixed UTC offsets
# ----------------------------------------------------------------------------------------------
def test_mixed_utc_offsets_are_named(tmp_path, bars):
    # a file that switches from +01:00 to +02:00 labels while the wall clock runs on: the
    # converted times repeat an hour, which shows as conflicting duplicates
    wall = bars.index.tz_localize(None)
    ts = [f"{t:%Y-%m-%dT%H:%M:%S}{'+01:00' if i < 12 else '+02:00'}" for i, t in enumerate(wall)]
    path = write_csv(tmp_path / "mixed.csv", bars, ts, "timestamp,open,high,low,close,volume")
    _, report = load_bars_with_report(path, policy="report")
    offsets = next(f for f in report.findings if f.code == "mixed_utc_offsets")
    assert offsets.severity == "warning"
    assert offsets.message.startswith("mixed UTC offsets +01:00, +02:00: +01:00: 12 rows, "
                                      "+02:00: 18 rows")
    conflicting = next(f for f in report.errors if f.code == "conflicting_duplicates")
    assert "(mixed UTC offsets +01:00, +02:00)" in conflicting.message
    with pytest.raises(RLTradeError, match=r"mixed UTC offsets \+01:00, \+02:00"):
        load_bars(path)


def test_offsets_of_a_daylight_saving_change_are_only_noted(tmp_path, bars):
    hours = pd.date_range("2024-03-30 20:00", periods=N, freq="1h", tz="UTC", unit="ns",
                          name="timestamp")
    local = hours.tz_convert("Europe/Berlin")
    ts = [t.isoformat() for t in local]  # +01:00 then +02:00 at 01:00 UTC on March 31
    moved = bars.set_axis(hours)
    df, report = load_bars_with_report(write_csv(tmp_path / "dst.csv", moved, ts,
                                                 "timestamp,open,high,low,close,volume"))
    pd.testing.assert_index_equal(df.index, hours, check_exact=True, check_freq=False)
    offsets = next(f for f in report.findings if f.code == "mixed_utc_offsets")
    assert offsets.severity == "info" and "+01:00, +02:00" in offsets.message
    assert report.clean


# ----------------------------------------------------------------------------------------------
# day-month dates
# ----------------------------------------------------------------------------------------------
def _daily(bars: pd.DataFrame, start: str) -> pd.DataFrame:
    out = bars.copy()
    out.index = pd.date_range(start, periods=N, freq="D", tz="UTC", unit="ns", name="timestamp")
    return out


def test_ambiguous_day_month_dates_are_refused(tmp_path, bars):
    daily = _daily(bars, "2021-03-01")[:12]
    # every first number is the day and at most 12: 01-03-2021 could be 1 March or 3 January
    ts = [f"{t:%m-%d-%Y}".replace(f"{t:%m}-{t:%d}", f"{t:%d}-{t:%m}") for t in daily.index]
    path = write_csv(tmp_path / "dm.csv", daily, ts, "date,open,high,low,close,volume")
    with pytest.raises(DataError, match=r"ambiguous day-month dates such as '01-03-2021'.*ISO"):
        load_bars(path)


@pytest.mark.parametrize("fmt", ["%d-%m-%Y", "%d/%m/%Y", "%d.%m.%Y %H:%M", "%m/%d/%Y"])
def test_a_column_proving_its_day_month_order_is_read_in_that_order(tmp_path, bars, fmt):
    daily = _daily(bars, "2021-03-01")  # March 1..30: days above 12 prove the order
    ts = daily.index.strftime(fmt)
    df, report = load_bars_with_report(
        write_csv(tmp_path / "d.csv", daily, ts, "date,open,high,low,close,volume"))
    pd.testing.assert_index_equal(df.index, daily.index, check_freq=False)
    assert "mixed_timezones" not in {f.code for f in report.findings}
    assert df.index[0] == pd.Timestamp("2021-03-01", tz="UTC")  # 01-03-2021 is 1 March here


def test_day_first_and_month_first_in_one_column_are_refused(tmp_path, bars):
    daily = _daily(bars, "2021-03-01")[:20]
    ts = list(daily.index.strftime("%d/%m/%Y"))
    ts[-1] = "03/25/2021"
    path = write_csv(tmp_path / "both.csv", daily, ts, "date,open,high,low,close,volume")
    with pytest.raises(DataError, match="some dates have a day first and others a month first"):
        load_bars(path)
