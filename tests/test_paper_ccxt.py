"""The ccxt adapter against the fake exchange (tests/fake_exchange.py, 127.0.0.1): sandbox only,
keys from the environment, and a consistent state through disconnects, timeouts, rejected
orders, partial fills and a restart in the middle of a submit."""

from __future__ import annotations

import pandas as pd
import pytest

from fake_exchange import FakeBinance, Fault
from rltrade.live import BrokerError, LiveEndpointError, OrderRequest
from rltrade.live.ccxt_broker import CcxtBroker

ORDER = "/api/v3/order"
POST = "POST /api/v3/order"  # faults for placing orders only (not the lookups)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("RLTRADE_BINANCE_API_KEY", "test-key")
    monkeypatch.setenv("RLTRADE_BINANCE_SECRET", "test-secret")
    with FakeBinance(now="2024-03-01") as server:
        yield server


def make(fake: FakeBinance, tmp_path, **kw) -> CcxtBroker:
    return CcxtBroker("binance", "BTC/USDT",
                      config=fake.ccxt_config(timeout_ms=400, market_types=("spot",)),
                      state_path=tmp_path / "broker_ccxt.json", retry_wait=0.01, **kw)


def order(cid: str, qty: float) -> OrderRequest:
    return OrderRequest(cid, qty=qty, target=qty)


def submits(fake: FakeBinance) -> int:
    return sum(1 for r in fake.requests_to(ORDER) if r.method == "POST")


def assert_consistent(broker: CcxtBroker, fake: FakeBinance) -> None:
    """The adapter's view equals the exchange's."""
    assert broker.positions().get("BTC/USDT", 0.0) == pytest.approx(
        fake.position() - broker.baseline, abs=1e-9)
    want = {o["clientOrderId"] for o in fake.orders.values()
            if o["status"] in ("NEW", "PARTIALLY_FILLED")}
    assert {o.client_id for o in broker.open_orders()} == want
    assert broker.balance() == pytest.approx(fake.balances["USDT"], abs=1e-6)
    cids = [o["clientOrderId"] for o in fake.orders.values()]
    assert len(cids) == len(set(cids))


def test_live_endpoints_are_refused_by_construction(fake, monkeypatch):
    import ccxt

    live = {k: v for k, v in ccxt.binance().urls["api"].items() if isinstance(v, str)}
    with pytest.raises(LiveEndpointError, match="live endpoints"):
        CcxtBroker("binance", "BTC/USDT", config={"urls": {"test": live}})
    no_sandbox = next(e for e in ("bitstamp", "kraken", "coinbase", "gemini", "bitfinex")
                      if not getattr(ccxt, e)().urls.get("test"))
    with pytest.raises(LiveEndpointError, match="no sandbox"):
        CcxtBroker(no_sandbox, "BTC/USDT")
    from rltrade.data.exchange import ExchangeError

    with pytest.raises(ExchangeError, match="environment"):
        CcxtBroker("binance", "BTC/USDT", config={"apiKey": "k", "secret": "s"})


def test_orders_fills_and_positions(fake, tmp_path):
    broker = make(fake, tmp_path)
    assert broker.baseline == 10.0 and broker.positions() == {}
    placed = broker.submit(order("rt-a-1-0", 0.5))
    assert placed.status == "filled" and placed.filled == pytest.approx(0.5)
    assert broker.submit(order("rt-a-1-0", 0.5)) is placed  # known: not sent again
    assert submits(fake) == 1
    broker.submit(order("rt-a-2-0", -0.2))
    fills, cursor = broker.fills_since(None)
    assert [f.client_id for f in fills] == ["rt-a-1-0", "rt-a-2-0"]
    assert [f.qty for f in fills] == pytest.approx([0.5, -0.2])
    assert fills[0].price == 30_000.0 and fills[0].fee == pytest.approx(15.0)
    again, cursor2 = broker.fills_since(cursor)
    assert again == [] and cursor2 == cursor
    # a trader restarted from an earlier commit asks from its cursor: the same fills again
    assert [f.fill_id for f in broker.fills_since(None)[0]] == [f.fill_id for f in fills]
    assert_consistent(broker, fake)


def test_disconnects_timeouts_and_server_errors_place_each_order_once(fake, tmp_path):
    broker = make(fake, tmp_path)
    fake.inject(POST, Fault.disconnect())  # nothing placed: sent again
    assert broker.submit(order("rt-b-1-0", 0.1)).status == "filled"
    fake.inject(POST, Fault.lost_reply())  # placed, the answer lost: found, not sent again
    assert broker.submit(order("rt-b-2-0", 0.1)).status == "filled"
    fake.inject(POST, Fault.delay(0.8))  # the client times out; the exchange places it late
    got = broker.submit(order("rt-b-3-0", 0.1))
    assert got.status in ("filled", "open")
    fake.inject(POST, Fault.http(503), Fault.http(502))
    assert broker.submit(order("rt-b-4-0", 0.1)).status == "filled"
    fake.inject("/api/v3/account", Fault.disconnect(), Fault.http(500))
    assert_consistent(broker, fake)
    assert sorted(o["clientOrderId"] for o in fake.orders.values()) == [
        "rt-b-1-0", "rt-b-2-0", "rt-b-3-0", "rt-b-4-0"]
    assert fake.position() == pytest.approx(10.4)
    fills, _ = broker.fills_since(None)
    assert len(fills) == 4 and len({f.fill_id for f in fills}) == 4


def test_rejected_orders_and_partial_fills(fake, tmp_path):
    broker = make(fake, tmp_path)
    fake.inject(POST, Fault.reject())
    rejected = broker.submit(order("rt-c-1-0", 1.0))
    assert rejected.status == "rejected" and "insufficient" in rejected.reason
    assert fake.orders == {}
    too_big = broker.submit(order("rt-c-2-0", -50.0))  # more BTC than the account holds
    assert too_big.status == "rejected"
    fake.inject(POST, Fault.partial(0.25))
    part = broker.submit(order("rt-c-3-0", 2.0))
    assert part.status == "open" and part.filled == pytest.approx(0.5)
    assert_consistent(broker, fake)
    assert broker.positions()["BTC/USDT"] == pytest.approx(0.5)
    fills, cursor = broker.fills_since(None)
    assert [f.qty for f in fills] == pytest.approx([0.5])
    assert fake.fill_open() == 1
    more, _ = broker.fills_since(cursor)
    assert [f.qty for f in more] == pytest.approx([1.5])
    assert broker.order("rt-c-3-0").status == "filled"
    assert_consistent(broker, fake)


def test_a_restart_in_the_middle_of_a_submit_sends_nothing_twice(fake, tmp_path):
    broker = make(fake, tmp_path)
    broker.submit(order("rt-d-1-0", 0.3))
    # the order is placed, its answer lost, and the trader hears nothing more (it dies)
    fake.inject(POST, Fault.lost_reply())
    fake.inject("GET /api/v3/order", Fault.ok(), *[Fault.disconnect()] * 4)
    with pytest.raises(BrokerError, match="no answer"):
        broker.submit(order("rt-d-2-0", 0.2))
    fake.clear()
    assert len(fake.orders) == 2  # placed once, although the trader never heard of it
    restarted = make(fake, tmp_path)  # a new process: baseline and cursor from its file
    assert restarted.baseline == broker.baseline
    again = restarted.submit(order("rt-d-2-0", 0.2))
    assert again.status == "filled" and submits(fake) == 0
    assert_consistent(restarted, fake)
    fills, _ = restarted.fills_since(None)
    assert {f.client_id for f in fills} == {"rt-d-1-0", "rt-d-2-0"}


def test_live_feed_gives_closed_bars_in_order_refuses_gaps_and_fills_the_store(fake, tmp_path):
    from fake_exchange import HOUR_MS
    from rltrade.data.store import BarStore
    from rltrade.errors import DataError
    from rltrade.live.venues import LiveFeed, ccxt_closed_bars

    broker = make(fake, tmp_path)
    closed = ccxt_closed_bars(broker.exchange, "BTC/USDT", "1h", now_ms=lambda: fake.now_ms)
    store = BarStore(tmp_path / "store")
    feed = LiveFeed(broker, closed, "1h", poll_seconds=0.01, store=store, symbol="BTC/USDT")
    assert feed.has_next() and feed.positions() == {}  # the adapter's methods pass through
    start = (fake.now_ms // HOUR_MS - 5) * HOUR_MS * 1_000_000
    ts, bar = feed.next_bar(start)
    assert ts == start + 3_600 * 10**9 and set(bar) >= {"open", "high", "low", "close"}
    truth = fake.expected_bars("BTCUSDT", "1h", pd.Timestamp(ts, tz="UTC"),
                               pd.Timestamp(ts + 3_600 * 10**9, tz="UTC"))
    assert bar["close"] == pytest.approx(float(truth["close"].iloc[0]))
    assert len(store.read("BTC/USDT", "1h")) == 1
    # the bar still forming at `now` is never given
    last_closed = (fake.now_ms // HOUR_MS - 1) * HOUR_MS * 1_000_000
    assert len(closed(last_closed)) == 0
    ts_ms = ts // 1_000_000
    fake.gaps = [(ts_ms + HOUR_MS, ts_ms + 2 * HOUR_MS)]  # the next bar is missing
    with pytest.raises(DataError, match="gap"):
        feed.next_bar(ts)
