"""Exchange download through ccxt, against a real HTTP server speaking Binance's formats.

Every test runs the real ``ccxt.binance`` client against :class:`FakeBinance` on 127.0.0.1 (see
``tests/fake_exchange.py``); nothing reaches the internet.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from fake_exchange import DAY_MS, HOUR_MS, FakeBinance, Fault
from rltrade.data import exchange as exchange_mod
from rltrade.data.exchange import DownloadResult, download_bars, make_exchange
from rltrade.data.store import BarStore
from rltrade.data.timeframes import as_ns
from rltrade.errors import DataError, ExchangeError

NOW = pd.Timestamp("2024-03-01 10:30", tz="UTC")
LISTING = pd.Timestamp("2023-06-01", tz="UTC")
KLINES = "/api/v3/klines"
FKLINES = "/fapi/v1/klines"
OI = "/futures/data/openInterestHist"
FUNDING = "/fapi/v1/fundingRate"
SPOT = "BTC/USDT"
SWAP = "BTC/USDT:USDT"


@pytest.fixture
def fake():
    with FakeBinance(now=NOW, listing=LISTING) as server:
        yield server
        # ccxt must only have called endpoints the server serves (no sapi, no time, ...).
        assert server.unknown_paths == []


@pytest.fixture
def store(tmp_path: Path) -> BarStore:
    return BarStore(tmp_path / "store")




def run(fake: FakeBinance, store: BarStore, start, end, *, symbol: str = SPOT,
        timeframe: str = "1h", client=None, **kwargs) -> DownloadResult:
    kwargs.setdefault("backoff", 0.001)
    kwargs.setdefault("now", NOW)
    return download_bars(client or fake.client(), symbol, timeframe, start, end, store, **kwargs)


def starts(fake: FakeBinance, path: str = KLINES) -> list[int]:
    return [int(r.params["startTime"]) for r in fake.requests_to(path)]


def ms(ts: str | pd.Timestamp) -> int:
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tz is None else t
    return int(t.value // 1_000_000)


def assert_same_bars(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert not got.index.has_duplicates
    assert got.index.is_monotonic_increasing
    assert str(got.index.dtype) == "datetime64[ns, UTC]"
    assert list(got.columns[:5]) == ["open", "high", "low", "close", "volume"]
    assert all(got[c].dtype == np.float64 for c in got.columns)
    np.testing.assert_array_equal(as_ns(got.index), as_ns(expected.index))
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_freq=False)


# ----------------------------------------------------------------------------------------------
# full download, pagination
# ----------------------------------------------------------------------------------------------
def test_full_download_in_pages_equals_the_server_bars(fake, store):
    start = LISTING
    end = start + pd.Timedelta(hours=3500)
    result = run(fake, store, start, end, page_limit=1000)

    expected = fake.expected_bars("BTCUSDT", "1h", start, end)
    assert len(expected) == 3500
    assert_same_bars(store.read(SPOT, "1h"), expected)
    assert result.pages == 4 and fake.count(KLINES) == 4
    assert result.bars_added == 3500 and result.bars_replaced == 0 and result.retries == 0
    assert result.bars_received >= 3500
    assert result.requested == [(start, end)]
    # since advances by last open + one bar; each page asks for at most what is left (+1).
    assert starts(fake) == [ms(start) + k * 1000 * HOUR_MS for k in range(4)]
    assert [r.params["limit"] for r in fake.requests_to(KLINES)] == ["1000"] * 3 + ["501"]
    assert store.meta(SPOT, "1h")["sources"] == ["ccxt:binance"]
    assert "4 page(s)" in result.summary() and "3500 added" in result.summary()


def test_default_page_size_is_the_exchange_maximum(fake, store):
    run(fake, store, LISTING, LISTING + pd.Timedelta(hours=2500))
    assert [r.params["limit"] for r in fake.requests_to(KLINES)] == ["1000", "1000", "501"]


@pytest.mark.parametrize("timeframe", ["1d", "1w", "1M"])
def test_calendar_timeframes(fake, store, timeframe):
    result = run(fake, store, "2023-01-01", "2024-03-01", timeframe=timeframe)
    expected = fake.expected_bars("BTCUSDT", timeframe, "2023-01-01", "2024-03-01")
    assert_same_bars(store.read(SPOT, timeframe), expected)
    assert result.pages == 1
    fake.clear()
    again = run(fake, store, "2023-01-01", "2024-03-01", timeframe=timeframe)
    assert again.requested == [] and fake.count(KLINES) == 0


def test_progress_is_reported(fake, store):
    calls: list[tuple[int, int]] = []
    run(fake, store, LISTING, LISTING + pd.Timedelta(hours=2500), page_limit=1000,
        progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (2500, 2500)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert {t for _, t in calls} == {2500}


# ----------------------------------------------------------------------------------------------
# faults
# ----------------------------------------------------------------------------------------------
def test_rate_limits_and_server_errors_are_retried(fake, store):
    end = LISTING + pd.Timedelta(hours=3500)
    fake.inject(KLINES, Fault.http(429), Fault.ok(), Fault.http(500), Fault.http(503),
                Fault.ok(), Fault.http(418))
    result = run(fake, store, LISTING, end, page_limit=1000)

    assert_same_bars(store.read(SPOT, "1h"), fake.expected_bars("BTCUSDT", "1h", LISTING, end))
    assert result.retries == 4
    assert result.pages == 4
    assert fake.count(KLINES) == 8
    assert fake.pending_faults(KLINES) == 0
    # a retried request asks for the same page again
    assert sorted(set(starts(fake))) == [ms(LISTING) + k * 1000 * HOUR_MS for k in range(4)]


def test_timeouts_are_retried(fake, store):
    fake.inject(KLINES, Fault.delay(2.0))
    client = fake.client(timeout_ms=500)
    end = LISTING + pd.Timedelta(hours=100)
    result = run(fake, store, LISTING, end, client=client)
    assert result.retries >= 1
    assert_same_bars(store.read(SPOT, "1h"), fake.expected_bars("BTCUSDT", "1h", LISTING, end))


def _gap_after(fake: FakeBinance, path: str, status: str) -> float:
    """Seconds between the first request answered ``status`` and the next one to ``path``."""
    reqs = fake.requests_to(path)
    k = next(i for i, r in enumerate(reqs) if r.status == int(status))
    return reqs[k + 1].at - reqs[k].at


@pytest.mark.parametrize("status", ["429", "503"])
def test_retry_after_is_honoured(fake, store, status):
    end = LISTING + pd.Timedelta(hours=100)
    fake.inject(KLINES, Fault.http(int(status), retry_after="0.6"))
    result = run(fake, store, LISTING, end)  # backoff 0.001 s: only Retry-After can wait
    assert result.retries == 1
    assert _gap_after(fake, KLINES, status) >= 0.6
    assert_same_bars(store.read(SPOT, "1h"), fake.expected_bars("BTCUSDT", "1h", LISTING, end))


def test_retry_after_as_an_http_date(fake, store):
    import email.utils
    from datetime import UTC, datetime, timedelta

    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    fake.inject(KLINES, Fault.http(429, retry_after=when))
    run(fake, store, LISTING, LISTING + pd.Timedelta(hours=10))
    assert _gap_after(fake, KLINES, "429") >= 0.9  # the date has whole seconds


def test_a_retry_after_beyond_the_bound_fails_at_once(fake, store):
    fake.inject(KLINES, Fault.http(429, retry_after="3600"))
    with pytest.raises(ExchangeError, match="asks to wait 3600 s"):
        run(fake, store, LISTING, LISTING + pd.Timedelta(hours=10))
    assert fake.count(KLINES) == 1


def test_too_many_failures_raise_a_clear_exchange_error(fake, store):
    fake.inject(KLINES, *[Fault.http(429)] * 3)
    with pytest.raises(ExchangeError) as info:
        run(fake, store, LISTING, LISTING + pd.Timedelta(hours=100), max_retries=2)
    message = str(info.value)
    assert "BTC/USDT" in message
    assert "since 2023-06-01 00:00:00+00:00" in message
    assert "3 attempt(s)" in message
    assert "DDoSProtection: binance 429 Too Many Requests" in message
    assert fake.count(KLINES) == 3
    assert not store.has(SPOT, "1h") and store.coverage(SPOT, "1h") == []


def test_a_failed_download_keeps_what_it_got_and_resumes(fake, store):
    end = LISTING + pd.Timedelta(hours=3500)
    fake.inject(KLINES, Fault.ok(), *[Fault.http(500)] * 3)
    with pytest.raises(ExchangeError, match="since 2023-07-12 16:00:00"):
        run(fake, store, LISTING, end, page_limit=1000, max_retries=2)
    first = store.read(SPOT, "1h")
    assert len(first) == 1000
    assert store.coverage(SPOT, "1h") == []  # nothing claimed beyond what was stored

    fake.clear()
    result = run(fake, store, LISTING, end, page_limit=1000)
    assert result.requested == [(LISTING + pd.Timedelta(hours=1000), end)]
    assert starts(fake)[0] == ms(LISTING) + 1000 * HOUR_MS
    assert_same_bars(store.read(SPOT, "1h"), fake.expected_bars("BTCUSDT", "1h", LISTING, end))


def test_non_network_errors_fail_at_once(fake, store):
    fake.inject(KLINES, Fault.error(400, -1121, "Invalid symbol."))
    with pytest.raises(ExchangeError, match=r"refused fetch_ohlcv for BTC/USDT.*Invalid symbol"):
        run(fake, store, LISTING, LISTING + pd.Timedelta(hours=10))
    assert fake.count(KLINES) == 1


def test_unknown_symbol(fake, store):
    with pytest.raises(ExchangeError, match=r"no market 'ETH/USDT'.*BTC/USDT:USDT"):
        run(fake, store, LISTING, LISTING + pd.Timedelta(hours=10), symbol="ETH/USDT")
    assert fake.count(KLINES) == 0


def test_unknown_timeframe(fake, store):
    with pytest.raises(ExchangeError, match="no 7m candles"):
        run(fake, store, LISTING, LISTING + pd.Timedelta(hours=10), timeframe="7m")


def test_empty_page_in_the_middle_loses_nothing(fake, store):
    end = LISTING + pd.Timedelta(hours=3500)
    fake.inject(KLINES, Fault.ok(), Fault.empty())
    result = run(fake, store, LISTING, end, page_limit=1000)
    assert_same_bars(store.read(SPOT, "1h"), fake.expected_bars("BTCUSDT", "1h", LISTING, end))
    assert result.pages == 5  # the empty answer was checked by asking once more
    assert store.coverage(SPOT, "1h") == []


def test_overlapping_and_repeated_pages_create_no_duplicates(fake, store):
    end = LISTING + pd.Timedelta(hours=3500)
    fake.inject(KLINES, Fault.ok(), Fault.overlap(7), Fault.repeat(3, revise=False))
    run(fake, store, LISTING, end, page_limit=1000)
    assert_same_bars(store.read(SPOT, "1h"), fake.expected_bars("BTCUSDT", "1h", LISTING, end))


def test_conflicting_repeated_bars_the_later_answer_wins(fake, store):
    end = LISTING + pd.Timedelta(hours=50)
    fake.inject(KLINES, Fault.repeat(3, revise=True))
    run(fake, store, LISTING, end)
    got = store.read(SPOT, "1h")
    expected = fake.expected_bars("BTCUSDT", "1h", LISTING, end)
    assert len(got) == 50 and not got.index.has_duplicates
    np.testing.assert_allclose(got["volume"].iloc[:3], 2 * expected["volume"].iloc[:3])
    assert_same_bars(got.iloc[3:], expected.iloc[3:])


def test_broken_ohlc_from_the_exchange_is_not_stored(fake, store):
    fake.inject(KLINES, Fault.broken_ohlc(5))
    with pytest.raises(DataError, match="ohlc_envelope"):
        run(fake, store, LISTING, LISTING + pd.Timedelta(hours=100))
    assert not store.has(SPOT, "1h")
    assert store.coverage(SPOT, "1h") == []


# ----------------------------------------------------------------------------------------------
# incremental downloads
# ----------------------------------------------------------------------------------------------
def test_second_identical_run_requests_nothing(fake, store):
    end = LISTING + pd.Timedelta(hours=1500)
    run(fake, store, "2023-05-01", end)
    before = store.read(SPOT, "1h")
    fake.clear()
    result = run(fake, store, "2023-05-01", end)
    assert fake.count(KLINES) == 0
    assert result.requested == [] and result.pages == 0 and result.bars_added == 0
    assert "up to date" in result.summary()
    pd.testing.assert_frame_equal(store.read(SPOT, "1h"), before)


def test_extending_the_end_downloads_only_the_tail(fake, store):
    mid = LISTING + pd.Timedelta(hours=1500)
    end = LISTING + pd.Timedelta(hours=1800)
    run(fake, store, LISTING, mid)
    fake.clear()
    result = run(fake, store, LISTING, end)
    assert result.requested == [(mid, end)]
    assert starts(fake) == [ms(mid)]
    assert result.bars_added == 300
    assert_same_bars(store.read(SPOT, "1h"), fake.expected_bars("BTCUSDT", "1h", LISTING, end))


def test_a_deleted_year_is_downloaded_again_and_only_it(tmp_path):
    store = BarStore(tmp_path / "store")
    with FakeBinance(now=NOW, listing="2020-06-01") as fake:
        run(fake, store, "2020-01-01", "2024-01-01", timeframe="1d")
        expected = fake.expected_bars("BTCUSDT", "1d", "2020-01-01", "2024-01-01")
        assert_same_bars(store.read(SPOT, "1d"), expected)
        (store.series_dir(SPOT, "1d") / "2022.parquet").unlink()

        fake.clear()
        year = (pd.Timestamp("2022-01-01", tz="UTC"), pd.Timestamp("2023-01-01", tz="UTC"))
        result = run(fake, store, "2020-01-01", "2024-01-01", timeframe="1d")
        assert result.requested == [year]
        assert starts(fake) == [ms(year[0])]
        assert result.bars_added == 365
        assert_same_bars(store.read(SPOT, "1d"), expected)


def test_a_store_with_a_hole_gets_only_the_hole(fake, store):
    end = LISTING + pd.Timedelta(hours=2000)
    expected = fake.expected_bars("BTCUSDT", "1h", LISTING, end)
    hole = (LISTING + pd.Timedelta(hours=700), LISTING + pd.Timedelta(hours=760))
    outside = (expected.index < hole[0]) | (expected.index >= hole[1])
    store.write(SPOT, "1h", expected[outside], source="csv")

    result = run(fake, store, LISTING, end)
    assert result.requested == [hole]
    assert fake.count(KLINES) == 1
    assert result.bars_added == 60
    assert_same_bars(store.read(SPOT, "1h"), expected)


def test_ranges_before_the_listing_are_recorded_and_not_asked_again(fake, store):
    end = LISTING + pd.Timedelta(hours=48)
    result = run(fake, store, "2023-01-01", end)
    assert result.bars_added == 48
    assert store.coverage(SPOT, "1h") == [(ms("2023-01-01") * 10**6, ms(LISTING) * 10**6)]
    fake.clear()
    assert run(fake, store, "2023-01-01", end).requested == []
    # a range entirely before the listing: one request proves it empty, then never again
    result = run(fake, store, "2022-01-01", "2022-06-01")
    assert fake.count(KLINES) == 1 and result.bars_added == 0
    fake.clear()
    assert run(fake, store, "2022-01-01", "2023-01-01").requested == [
        (pd.Timestamp("2022-06-01", tz="UTC"), pd.Timestamp("2023-01-01", tz="UTC"))
    ]
    fake.clear()
    assert run(fake, store, "2022-01-01", end).requested == []
    assert fake.count(KLINES) == 0


def test_gaps_the_exchange_lacks_are_not_asked_again(tmp_path):
    store = BarStore(tmp_path / "store")
    gap = ("2023-07-01 05:00", "2023-07-01 09:00")
    with FakeBinance(now=NOW, listing=LISTING, gaps=[gap]) as fake:
        end = LISTING + pd.Timedelta(days=60)
        run(fake, store, LISTING, end)
        got = store.read(SPOT, "1h")
        assert len(got) == 60 * 24 - 4
        assert_same_bars(got, fake.expected_bars("BTCUSDT", "1h", LISTING, end))
        assert store.coverage(SPOT, "1h") == [(ms(gap[0]) * 10**6, ms(gap[1]) * 10**6)]
        fake.clear()
        assert run(fake, store, LISTING, end).requested == []
        assert fake.count(KLINES) == 0


def test_an_empty_tail_is_proven_by_the_latest_bar_then_covered(tmp_path):
    # the exchange stopped serving the market (delisted): the tail is empty, not a glitch; the
    # exchange's own latest bar (a request without startTime) opens before it, which proves it
    store = BarStore(tmp_path / "store")
    with FakeBinance(now=NOW, listing=LISTING, gaps=[("2023-08-01", NOW)]) as fake:
        result = run(fake, store, "2023-07-31", "2023-08-03")
        assert result.bars_added == 24 and result.complete
        # bars, an empty page asked again 3 times, the latest-bar probe
        assert result.pages == 6 and result.empty_retries == 3
        probe = fake.requests_to(KLINES)[-1]
        assert "startTime" not in probe.params and probe.params["limit"] == "1"
        fake.clear()
        assert run(fake, store, "2023-07-31", "2023-08-03").requested == []


def test_an_exchange_late_with_its_newest_bars_is_not_taken_for_an_end(tmp_path):
    # the exchange has not published its last 3 closed hours yet: not an end of history
    store = BarStore(tmp_path / "store")
    late = (NOW - pd.Timedelta(hours=3, minutes=30), NOW + pd.Timedelta(hours=1))
    with FakeBinance(now=NOW, listing=LISTING, gaps=[late]) as fake:
        start = NOW - pd.Timedelta(hours=24, minutes=30)
        result = run(fake, store, start, NOW)
        assert result.bars_added == 21
        assert result.incomplete == [(pd.Timestamp("2024-03-01 07:00", tz="UTC"),
                                      pd.Timestamp("2024-03-01 10:00", tz="UTC"), 3)]
        assert store.coverage(SPOT, "1h") == []


def test_two_empty_pages_mid_range_are_retried_not_believed(fake, store):
    """The hiccup of issue 13: two empty pages in a row in the middle of a range."""
    end = LISTING + pd.Timedelta(hours=3500)
    fake.inject(KLINES, Fault.ok(), Fault.empty(), Fault.empty())
    result = run(fake, store, LISTING, end, page_limit=1000)
    assert result.complete and result.empty_retries == 2
    assert_same_bars(store.read(SPOT, "1h"), fake.expected_bars("BTCUSDT", "1h", LISTING, end))
    assert store.coverage(SPOT, "1h") == []
    # the empty answers were asked again with backoff, from the same startTime
    assert starts(fake)[1:4] == [ms(LISTING) + 1000 * HOUR_MS] * 3


def test_a_lasting_hiccup_is_reported_and_fetched_by_the_next_run(fake, store, log_messages):
    end = LISTING + pd.Timedelta(hours=3500)
    # the page at bar 1000 stays empty through every retry (1 + 3): a lasting hiccup
    fake.inject(KLINES, Fault.ok(), *[Fault.empty()] * 4)
    result = run(fake, store, LISTING, end, page_limit=1000)
    hole = (LISTING + pd.Timedelta(hours=1000), LISTING + pd.Timedelta(hours=2000), 1000)
    assert not result.complete and result.incomplete == [hole]
    assert result.bars_missing == 1000
    assert "INCOMPLETE: 1000 bar(s) not fetched" in result.summary()
    warnings = [m for level, m in log_messages if level == "WARNING"]
    assert any("empty pages although the exchange has later bars from 2023-07-12 16:00:00+00:00"
               in m and "1000 bar(s)" in m
               for m in warnings)
    # the pages after the skipped window were fetched; the window was not recorded as covered
    got = store.read(SPOT, "1h")
    assert len(got) == 2500
    assert store.coverage(SPOT, "1h") == []

    fake.clear()
    again = run(fake, store, LISTING, end, page_limit=1000)
    assert again.requested == [(hole[0], hole[1])] and again.complete
    assert_same_bars(store.read(SPOT, "1h"), fake.expected_bars("BTCUSDT", "1h", LISTING, end))
    fake.clear()
    assert run(fake, store, LISTING, end).requested == []


def test_an_exchange_answering_only_empty_pages_gives_up_after_a_few_windows(fake, store):
    end = LISTING + pd.Timedelta(hours=5000)
    fake.inject(KLINES, *[Fault.empty()] * 100)
    result = run(fake, store, LISTING, end, page_limit=1000)
    assert result.bars_added == 0 and result.bars_missing == 5000
    # three windows of (1 + 3 asks + 1 probe) requests, then the rest is left for the next run
    assert fake.count(KLINES) == 15
    assert result.incomplete[-1][1] == end
    assert store.coverage(SPOT, "1h") == []


def test_slots_before_the_market_creation_are_not_asked(fake, store):
    # Binance USD-M states the listing (onboardDate -> market["created"])
    start = LISTING - pd.Timedelta(days=30)
    end = LISTING + pd.Timedelta(hours=48)
    result = run(fake, store, start, end, symbol=SWAP)
    assert result.bars_added == 48 and result.complete
    assert starts(fake, FKLINES) == [ms(LISTING)]
    assert store.coverage(SWAP, "1h") == [(ms(start) * 10**6, ms(LISTING) * 10**6)]


def test_truncated_pages_are_continued_not_taken_for_an_end(fake, store):
    end = LISTING + pd.Timedelta(hours=3500)
    fake.inject(KLINES, Fault.truncate(10), Fault.ok(), Fault.truncate(1), Fault.truncate(0))
    result = run(fake, store, LISTING, end, page_limit=1000)
    assert result.complete
    assert_same_bars(store.read(SPOT, "1h"), fake.expected_bars("BTCUSDT", "1h", LISTING, end))
    assert store.coverage(SPOT, "1h") == []
    first = starts(fake)[:3]
    assert first == [ms(LISTING), ms(LISTING) + 10 * HOUR_MS, ms(LISTING) + 1010 * HOUR_MS]


# ----------------------------------------------------------------------------------------------
# the current candle
# ----------------------------------------------------------------------------------------------
def test_the_incomplete_current_candle_is_never_stored(fake, store):
    start = NOW - pd.Timedelta(days=2)
    result = run(fake, store, start, NOW + pd.Timedelta(days=1))
    got = store.read(SPOT, "1h")
    assert got.index[-1] == pd.Timestamp("2024-03-01 09:00", tz="UTC")  # closed at 10:00
    assert result.bars_received == len(got) + 1  # the live 10:00 bar was sent, and dropped
    now_ns = ms(NOW) * 10**6
    assert all(end <= now_ns for _, end in store.coverage(SPOT, "1h"))

    # one hour later the 10:00 bar is complete: it is fetched, with its final values
    later = NOW + pd.Timedelta(hours=1)
    fake.now_ms = ms(later)
    fake.clear()
    result = run(fake, store, start, NOW + pd.Timedelta(days=1), now=later)
    assert result.requested == [(pd.Timestamp("2024-03-01 10:00", tz="UTC"),
                                 pd.Timestamp("2024-03-01 11:00", tz="UTC"))]
    expected = fake.expected_bars("BTCUSDT", "1h", start, later)
    assert_same_bars(store.read(SPOT, "1h"), expected)


def test_a_page_running_past_now_is_cut_at_the_last_closed_bar(fake, store):
    fake.inject(KLINES, Fault.ignore_end())
    start = NOW - pd.Timedelta(hours=20)
    run(fake, store, start, NOW + pd.Timedelta(days=1), page_limit=1000)
    got = store.read(SPOT, "1h")
    assert got.index[-1] == pd.Timestamp("2024-03-01 09:00", tz="UTC")


# ----------------------------------------------------------------------------------------------
# derivatives
# ----------------------------------------------------------------------------------------------
def _asof(series: pd.Series, closes: pd.DatetimeIndex) -> np.ndarray:
    """Reference alignment: the last value stamped at or before each close (no lookahead)."""
    out = []
    for close in closes:
        past = series[series.index <= close]
        out.append(past.iloc[-1] if len(past) else np.nan)
    return np.asarray(out, dtype=float)


@pytest.mark.parametrize("offset_ms", [0, 1])
def test_derivatives_are_aligned_as_of_each_bar_close(tmp_path, offset_ms):
    store = BarStore(tmp_path / "store")
    with FakeBinance(now=NOW, listing=LISTING, funding_offset_ms=offset_ms) as fake:
        start, end = pd.Timestamp("2024-02-20", tz="UTC"), pd.Timestamp("2024-02-25", tz="UTC")
        result = run(fake, store, start, end, symbol=SWAP, with_derivatives=True)
        assert result.derivatives == ["open_interest", "funding_rate"]
        got = store.read(SWAP, "1h")
        assert_same_bars(got[["open", "high", "low", "close", "volume"]],
                         fake.expected_bars("BTCUSDT", "1h", start, end, market="linear"))
        closes = got.index + pd.Timedelta(hours=1)
        funding = fake.funding_rates("BTCUSDT", start - pd.Timedelta(days=2), end)
        oi = fake.open_interest("BTCUSDT", "1h", start - pd.Timedelta(days=2), end)
        np.testing.assert_array_equal(got["funding_rate"].to_numpy(), _asof(funding, closes))
        np.testing.assert_array_equal(got["open_interest"].to_numpy(), _asof(oi, closes))

        # the funding at 2024-02-21 08:00 (+offset): exactly at the close of the 07:00 bar
        stamp = pd.Timestamp("2024-02-21 08:00", tz="UTC") + pd.Timedelta(milliseconds=offset_ms)
        rate = funding[stamp]
        bar_07 = got.loc[pd.Timestamp("2024-02-21 07:00", tz="UTC"), "funding_rate"]
        bar_08 = got.loc[pd.Timestamp("2024-02-21 08:00", tz="UTC"), "funding_rate"]
        previous = funding[stamp - pd.Timedelta(hours=8)]
        if offset_ms == 0:
            assert bar_07 == rate  # known at the bar's close
        else:
            assert bar_07 == previous  # 1 ms after the close: not on this bar
        assert bar_08 == rate
        # open interest stamped at 08:00 belongs to the bar closing at 08:00
        assert got.loc[pd.Timestamp("2024-02-21 07:00", tz="UTC"), "open_interest"] == oi[
            pd.Timestamp("2024-02-21 08:00", tz="UTC")]
        assert fake.count(OI) >= 1 and fake.count(FUNDING) >= 1
        assert fake.count(KLINES) == 0 and fake.count(FKLINES) == 1
        assert fake.unknown_paths == []


def test_open_interest_outside_the_exchange_history_is_left_empty(tmp_path):
    store = BarStore(tmp_path / "store")
    with FakeBinance(now=NOW, listing=LISTING, oi_history_days=30) as fake:
        start = NOW - pd.Timedelta(days=45)
        result = run(fake, store, start, NOW, symbol=SWAP, with_derivatives=True)
        assert result.derivatives == ["open_interest", "funding_rate"]
        got = store.read(SWAP, "1h")
        horizon = NOW - pd.Timedelta(days=29)
        assert got.loc[got.index + pd.Timedelta(hours=1) < horizon, "open_interest"].isna().all()
        assert got.loc[got.index >= horizon, "open_interest"].notna().all()
        assert got["funding_rate"].notna().all()
        assert all(r.status == 200 for r in fake.requests_to(OI))
        horizon_ms = ms(NOW) - 30 * DAY_MS
        assert min(starts(fake, OI)) >= horizon_ms


def test_derivatives_on_a_spot_symbol_or_without_endpoints_are_skipped(fake, store):
    result = run(fake, store, LISTING, LISTING + pd.Timedelta(hours=10), with_derivatives=True)
    assert result.derivatives == []
    assert list(store.read(SPOT, "1h").columns) == ["open", "high", "low", "close", "volume"]

    client = fake.client()
    client.has = dict(client.has, fetchOpenInterestHistory=False)
    result = run(fake, store, "2024-02-20", "2024-02-21", symbol=SWAP, client=client,
                 with_derivatives=True)
    assert result.derivatives == ["funding_rate"]
    assert "open_interest" not in store.read(SWAP, "1h").columns
    assert fake.count(OI) == 0


def test_an_empty_funding_page_is_asked_again(fake, store):
    fake.inject(FUNDING, Fault.empty())
    result = run(fake, store, "2024-02-20", "2024-02-21", symbol=SWAP, with_derivatives=True)
    assert result.empty_retries == 1 and result.derivative_gaps == []
    assert store.read(SWAP, "1h")["funding_rate"].notna().all()


def test_funding_left_empty_is_named_in_a_warning(fake, store, log_messages):
    fake.inject(FUNDING, *[Fault.empty()] * 4)  # empty through every retry
    result = run(fake, store, "2024-02-20", "2024-02-21", symbol=SWAP, with_derivatives=True)
    got = store.read(SWAP, "1h")
    assert got["funding_rate"].isna().all() and got["open_interest"].notna().all()
    assert len(result.derivative_gaps) == 1
    line = result.derivative_gaps[0]
    assert "BTC/USDT:USDT 1h: funding_rate has no value for 24 of 24 bar(s)" in line
    assert "between 2024-02-20 00:00:00+00:00 and 2024-02-20 23:00:00+00:00" in line
    assert ("WARNING", line) in log_messages


def test_derivative_requests_are_retried(fake, store):
    fake.inject(OI, Fault.http(429))
    fake.inject(FUNDING, Fault.http(502))
    result = run(fake, store, "2024-02-20", "2024-02-21", symbol=SWAP, with_derivatives=True)
    assert result.retries == 2
    assert store.read(SWAP, "1h")[["open_interest", "funding_rate"]].notna().all().all()


# ----------------------------------------------------------------------------------------------
# exchanges and arguments
# ----------------------------------------------------------------------------------------------
def test_unknown_exchange_name():
    with pytest.raises(ExchangeError, match=r"unknown exchange 'binanse'.*did you mean binance"):
        make_exchange("binanse")
    with pytest.raises(ExchangeError, match="valid ccxt ids include binance"):
        download_bars("no-such-exchange", SPOT, "1h", "2024-01-01", "2024-01-02",
                      BarStore("/nonexistent"))


def test_credentials_come_only_from_the_environment(monkeypatch):
    with pytest.raises(ExchangeError, match="RLTRADE_BINANCE_API_KEY"):
        make_exchange("binance", config={"apiKey": "k", "secret": "s"})
    monkeypatch.setenv("RLTRADE_BINANCE_API_KEY", "key-from-env")
    monkeypatch.setenv("RLTRADE_BINANCE_SECRET", "secret-from-env")
    client = make_exchange("binance", config={"enableRateLimit": False})
    assert client.apiKey == "key-from-env" and client.secret == "secret-from-env"
    assert client.enableRateLimit is True


def test_bad_arguments(fake, store):
    with pytest.raises(DataError, match="before end"):
        run(fake, store, "2024-01-02", "2024-01-01")
    with pytest.raises(DataError, match="page_limit"):
        run(fake, store, "2024-01-01", "2024-01-02", page_limit=0)


def test_chunked_writes_give_the_same_bars(fake, store, monkeypatch):
    monkeypatch.setattr(exchange_mod, "_FLUSH_BARS", 900)
    end = LISTING + pd.Timedelta(hours=3500)
    fake.inject(KLINES, Fault.ok(), Fault.ok(), Fault.http(500))
    result = run(fake, store, LISTING, end, page_limit=1000)
    assert result.bars_added == 3500
    assert_same_bars(store.read(SPOT, "1h"), fake.expected_bars("BTCUSDT", "1h", LISTING, end))


@given(
    stamps=st.lists(st.integers(0, 10_000), max_size=40),
    closes=st.lists(st.integers(0, 10_000), min_size=1, max_size=40, unique=True),
    max_age=st.integers(0, 3_000),
)
def test_asof_alignment_never_looks_ahead(stamps, closes, max_age):
    stamps_arr = np.asarray(stamps, dtype=np.int64)
    values = np.arange(len(stamps), dtype=float)  # a duplicate stamp: the later value wins
    closes_arr = np.sort(np.asarray(closes, dtype=np.int64))
    got = exchange_mod._asof(closes_arr, stamps_arr, values, max_age)
    for close, value in zip(closes_arr, got, strict=True):
        past = [i for i, s in enumerate(stamps) if s <= close]
        if past:
            latest = max(stamps[i] for i in past)
            best = max(i for i in past if stamps[i] == latest)
            expected = float(best) if close - latest <= max_age else np.nan
        else:
            expected = np.nan
        np.testing.assert_equal(value, expected)


def test_cli_download_is_incremental(tmp_path, capsys):
    """`rltrade data download` end to end against the local server, twice."""
    import json

    from rltrade.cli import main

    with FakeBinance(now=NOW, listing=LISTING) as server:
        cfg = tmp_path / "ccxt.json"
        cfg.write_text(json.dumps(server.ccxt_config()))
        argv = ["data", "download", "--exchange", "binance", "--symbol", SPOT, "--timeframe",
                "1h", "--start", "2024-01-01", "--end", "2024-01-03", "--store",
                str(tmp_path / "store"), "--exchange-config", str(cfg)]
        for attempt in range(2):
            try:
                main(argv)
            except SystemExit as exc:
                assert exc.code in (0, None)
            out = capsys.readouterr().out
            if attempt == 0:
                assert server.count(KLINES) >= 1 and "48" in out
        assert server.count(KLINES) == 1  # the second run asked for nothing
    bars = BarStore(tmp_path / "store").read(SPOT, "1h")
    assert len(bars) == 48
    with pytest.raises(SystemExit) as info:
        main(["data", "download", "--exchange", "binance", "--symbol", SPOT, "--timeframe", "1h",
              "--start", "2024-01-01", "--end", "2024-01-02", "--store", str(tmp_path / "s2"),
              "--exchange-config", str(tmp_path / "missing.json")])
    assert info.value.code == 2


def test_cli_download_exits_1_when_bars_are_missing(tmp_path, capsys):
    import json

    from rltrade.cli import main

    with FakeBinance(now=NOW, listing=LISTING) as server:
        cfg = tmp_path / "ccxt.json"
        cfg.write_text(json.dumps(server.ccxt_config()))
        server.inject(KLINES, *[Fault.empty()] * 4)  # the only page stays empty
        argv = ["data", "download", "--exchange", "binance", "--symbol", SPOT, "--timeframe",
                "1h", "--start", "2024-01-01", "--end", "2024-01-03", "--store",
                str(tmp_path / "store"), "--exchange-config", str(cfg), "--backoff", "0.001"]
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 1
        captured = capsys.readouterr()
        assert "INCOMPLETE: 48 bar(s) not fetched" in captured.out
        assert "incomplete: 48 bar(s) not fetched; run the same command again" in captured.err
        main(argv)  # the hiccup is over: the bars come now (success returns, no exit)
    assert len(BarStore(tmp_path / "store").read(SPOT, "1h")) == 48
