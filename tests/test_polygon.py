"""Polygon.io aggregates (REST JSON, flat files, folder trees) and multi-file `data import`.

Every fixture file is written by the test: no downloaded data is committed.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from cli_helpers import run_cli
from rltrade.data import load_bars
from rltrade.data.loaders import symbol_from_path
from rltrade.data.parsing import read_polygon
from rltrade.data.store import BarStore
from rltrade.errors import DataError

# 2024-03-11 09:30 ET (EDT) = 13:30 UTC, in ms and ns
OPEN_MS = int(pd.Timestamp("2024-03-11T13:30Z").value // 1_000_000)


def _rest(n: int = 30, ticker: str = "SPY", start_ms: int = OPEN_MS) -> dict:
    rng = np.random.default_rng(1)
    close = 510 + np.cumsum(rng.normal(0, 0.05, n))
    results = [{"v": 1000.0 + i, "vw": round(c - 0.01, 4), "o": round(c - 0.02, 4),
                "c": round(c, 4), "h": round(c + 0.05, 4), "l": round(c - 0.07, 4),
                "t": start_ms + 60_000 * i, "n": 10 + i} for i, c in enumerate(close)]
    return {"ticker": ticker, "queryCount": n, "resultsCount": n, "adjusted": True,
            "results": results, "status": "OK", "request_id": "abc", "count": n}


def _flat_rows(day: str, tickers=("SPY", "QQQ"), n: int = 20) -> str:
    start = pd.Timestamp(f"{day}T13:30Z").value  # window_start: Unix nanoseconds
    lines = ["ticker,volume,open,close,high,low,window_start,transactions"]
    for k, ticker in enumerate(tickers):
        base = 510.0 if ticker == "SPY" else 440.0
        for i in range(n):
            price = base + 0.01 * i + k
            lines.append(f"{ticker},{1000 + i},{price:.2f},{price + 0.01:.2f},"
                         f"{price + 0.03:.2f},{price - 0.02:.2f},{start + i * 60 * 10**9},"
                         f"{7 + i}")
    return "\n".join(lines) + "\n"


def _write_gz(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        fh.write(text)
    return path


def test_rest_json_response_imports_with_vwap_and_trades(tmp_path):
    path = tmp_path / "spy_minute.json"
    doc = _rest()
    path.write_text(json.dumps(doc))
    bars = load_bars(path, format="polygon", symbol="SPY")
    assert len(bars) == 30 and bars.index[0] == pd.Timestamp("2024-03-11T13:30Z")
    assert {"vwap", "trades"} <= set(bars.columns)
    assert bars["vwap"].iloc[3] == doc["results"][3]["vw"]
    assert bars["trades"].iloc[3] == 13
    assert bars.attrs["symbol"] == "SPY" and bars.attrs["timeframe"] == "1m"
    assert load_bars(path).attrs["symbol"] == "SPY"  # a .json file is recognised


def test_flat_file_is_filtered_by_ticker(tmp_path):
    path = _write_gz(tmp_path / "2024-03-11.csv.gz", _flat_rows("2024-03-11"))
    spy = load_bars(path, symbol="SPY")  # the flat-file header is recognised
    assert len(spy) == 20 and spy["close"].iloc[0] == pytest.approx(510.01)
    assert spy.index[1] - spy.index[0] == pd.Timedelta(minutes=1)  # ns window_start
    assert spy["trades"].iloc[0] == 7 and spy.attrs["symbol"] == "SPY"
    qqq = load_bars(path, format="polygon", symbol="QQQ")
    assert qqq["close"].iloc[0] == pytest.approx(441.01)
    with pytest.raises(DataError, match=r"2 tickers \(QQQ, SPY\).*--symbol"):
        load_bars(path, format="polygon")
    with pytest.raises(DataError, match="no bars of IWM"):
        load_bars(path, format="polygon", symbol="IWM")


def test_a_partitioned_folder_tree_is_read_as_one_series(tmp_path):
    root = tmp_path / "us_stocks_sip" / "minute_aggs_v1"
    for day in ("2024-03-11", "2024-03-12", "2024-03-13"):
        _write_gz(root / "2024" / "03" / f"{day}.csv.gz", _flat_rows(day))
    bars = load_bars(root, symbol="SPY", policy="report")
    assert len(bars) == 60 and bars.index.is_monotonic_increasing
    assert bars.index[20] == pd.Timestamp("2024-03-12T13:30Z")


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("bad.json", "{not json", "not readable as JSON"),
        ("error.json", json.dumps({"status": "ERROR", "error": "Unknown API Key"}),
         "no 'results' list (status 'ERROR': 'Unknown API Key')"),
        ("empty.json", json.dumps({"status": "OK", "results": []}), "no bars"),
        ("partial.json", json.dumps({"results": [{"t": OPEN_MS, "o": 1.0}]}),
         "results lack ['h', 'l', 'c']"),
        ("flat.csv", "ticker,open,close\nSPY,1,2\n", "not a Polygon flat file: missing"),
    ],
)
def test_malformed_polygon_files_give_one_clear_error(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as info:
        read_polygon(path, "SPY")
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_cli_imports_a_polygon_file_and_says_what_is_wrong_in_one_line(tmp_path, capsys):
    path = tmp_path / "spy.json"
    path.write_text(json.dumps(_rest(60)))
    store = tmp_path / "store"
    code, out, err = run_cli(["data", "import", str(path), "--format", "polygon", "--symbol",
                              "SPY", "--store", str(store)], capsys)
    assert code == 0, err
    assert "SPY" in out and "XNYS-RTH" in out
    stored = BarStore(store).read("SPY", "1m")
    assert len(stored) == 60 and {"vwap", "trades"} <= set(stored.columns)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"status": "ERROR"}))
    code, out, err = run_cli(["data", "import", str(bad), "--format", "polygon", "--store",
                              str(store)], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "no 'results' list" in err


def test_cli_imports_several_polygon_flat_files_as_one_series(tmp_path, capsys):
    files = [_write_gz(tmp_path / f"{d}.csv.gz", _flat_rows(d))
             for d in ("2024-03-11", "2024-03-12")]
    store = tmp_path / "store"
    code, out, err = run_cli(["data", "import", *map(str, files), "--symbol", "QQQ",
                              "--store", str(store)], capsys)
    assert code == 0, err
    assert "QQQ 1m: 40 added" in out
    assert len(BarStore(store).read("QQQ", "1m")) == 40


# --------------------------------------------------------------------------- several files


def _daily(path, start: str, n: int = 30, seed: int = 0) -> None:
    days = pd.bdate_range(start, periods=n)
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    pd.DataFrame({"timestamp": days.strftime("%Y-%m-%d"), "open": close, "high": close * 1.01,
                  "low": close * 0.99, "close": close, "volume": 1e6}).to_csv(path, index=False)


def test_symbol_from_a_file_name():
    assert symbol_from_path("daily/HD_1d.csv") == "HD"
    assert symbol_from_path("btcusdt_perp_1h.csv.gz") == "btcusdt_perp"
    assert symbol_from_path("SPY.parquet") == "SPY"
    assert symbol_from_path("my_file.csv") == "my_file"


def test_cli_imports_several_files_each_validated_with_a_summary_table(tmp_path, capsys):
    folder = tmp_path / "daily"
    folder.mkdir()
    for k, name in enumerate(("AAPL", "HD", "KO")):
        _daily(folder / f"{name}_1d.csv", "2024-07-08", seed=k)
    store = tmp_path / "store"
    code, out, err = run_cli(["data", "import", str(folder / "*_1d.csv"), "--store",
                              str(store)], capsys)  # a quoted glob: expanded here
    assert code == 0, err
    for name in ("AAPL", "HD", "KO"):
        assert name in out and len(BarStore(store).read(name, "1d")) == 30
    assert out.count("XNYS-RTH") == 3
    # one broken file among good ones: the others are imported, its row says why, exit 1
    (folder / "BAD_1d.csv").write_text("timestamp,open\n2024-01-01,1\n")
    _daily(folder / "MSFT_1d.csv", "2024-07-08", seed=9)
    code, out, err = run_cli(["data", "import", *sorted(map(str, folder.glob("*.csv"))),
                              "--store", str(store)], capsys)
    assert code == 1 and "1 of 5 file(s) not imported" in err
    assert "missing price column" in out
    assert len(BarStore(store).read("MSFT", "1d")) == 30
    code, _, err = run_cli(["data", "import", str(folder / "*.parquet"), "--store",
                            str(store)], capsys)
    assert code == 2 and "no file matches" in err
