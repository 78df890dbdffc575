"""Live venues for ``rltrade paper --broker ccxt|ibkr``: a broker adapter plus its bar feed.

:class:`LiveFeed` wraps an adapter with a source of **closed** bars: ``next_bar(after)`` polls
until the bar after ``after`` has closed, checks that it follows ``after`` by exactly one
timeframe (a gap stops the session: features on gapped bars would not be the backtest's), and
appends it to the bar store (``--store``) so the store stays the record of what was traded on.
A live session never ends by itself (``has_next`` is always true): stop it with Ctrl-C and
resume it with the same ``--session``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from loguru import logger

from rltrade.data.parsing import OHLCV
from rltrade.data.timeframes import parse_timeframe
from rltrade.errors import ConfigError, DataError

__all__ = ["LiveFeed", "ccxt_closed_bars", "make_venue"]

log = logger.bind(component="live.data")


class LiveFeed:
    """A broker adapter and its closed-bar source, as the paper trader's venue.

    :param broker: the adapter (every :class:`~rltrade.live.broker.Broker` method is passed
        through to it).
    :param closed_bars: ``closed_bars(after_ns)`` -> the closed bars after ``after_ns``
        (rltrade's bar layout; possibly none yet).
    :param timeframe: the bars' timeframe.
    :param poll_seconds: pause between polls while no new bar has closed.
    :param store: a :class:`~rltrade.data.store.BarStore` to append each bar to (``None``: no).
    :param symbol: the store's symbol.
    """

    def __init__(self, broker: Any, closed_bars: Callable[[int], pd.DataFrame], timeframe: str,
                 *, poll_seconds: float = 5.0, store: Any = None,
                 symbol: str | None = None) -> None:
        self.broker = broker
        self.closed_bars = closed_bars
        self.timeframe = parse_timeframe(timeframe)
        self.poll_seconds = float(poll_seconds)
        self.store = store
        self.symbol = symbol or getattr(broker, "symbol", None)
        self.name = getattr(broker, "name", "live")

    def __getattr__(self, item: str) -> Any:
        return getattr(self.broker, item)

    def has_next(self, after: int | None = None) -> bool:
        return True

    def next_bar(self, after: int) -> tuple[int, dict[str, float]]:
        """The bar that follows ``after`` (its open time, ns), once it has closed.

        :raises DataError: the next closed bar does not follow ``after`` (a gap).
        """
        step = int(self.timeframe.seconds * 1e9)
        while True:
            bars = self.closed_bars(int(after))
            if len(bars):
                ts = int(bars.index[0].value)
                if ts != int(after) + step:
                    raise DataError(
                        f"live feed: the bar after {pd.Timestamp(int(after), tz='UTC')} is "
                        f"{pd.Timestamp(ts, tz='UTC')}, not one {self.timeframe.name} later: "
                        "the bars have a gap (update the store and resume the session)")
                row = bars.iloc[:1]
                if self.store is not None and self.symbol:
                    self.store.write(self.symbol, self.timeframe, row[list(OHLCV)],
                                     source=f"paper:{self.name}")
                log.info("bar {} closed", row.index[0].isoformat())
                return ts, {k: float(v) for k, v in row.iloc[0].items()}
            time.sleep(self.poll_seconds)


def ccxt_closed_bars(exchange: Any, symbol: str, timeframe: str,
                     now_ms: Callable[[], int] | None = None) -> Callable[[int], pd.DataFrame]:
    """``closed_bars(after_ns)`` of a ccxt client: ``fetch_ohlcv`` from the bar after
    ``after_ns``, without the bar still forming."""
    tf = parse_timeframe(timeframe)
    step_ms = int(tf.seconds * 1000)

    def closed(after_ns: int) -> pd.DataFrame:
        since = after_ns // 1_000_000 + step_ms
        rows = exchange.fetch_ohlcv(symbol, timeframe, since=since, limit=100)
        now = now_ms() if now_ms is not None else exchange.milliseconds()
        rows = [r for r in rows if r[0] >= since and r[0] + step_ms <= now]
        frame = pd.DataFrame(rows, columns=["timestamp", *OHLCV], dtype="float64")
        frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("timestamp").astype("int64"),
                                                      unit="ms", utc=True), name="timestamp")
        return frame

    return closed


def make_venue(broker: str, run: str | Path, *, exchange: str | None = None,
               symbol: str | None = None, host: str = "127.0.0.1", port: int = 7497,
               account: str | None = None, store: str | Path | None = None,
               poll_seconds: float = 5.0) -> LiveFeed:
    """The venue of ``--broker ccxt`` (``--exchange``'s sandbox, bars from it) or ``--broker
    ibkr`` (the paper account, bars from its historical data).

    :raises ConfigError: an unknown broker, or a missing ``--exchange``.
    """
    from rltrade.data.store import BarStore
    from rltrade.runs import Run

    cfg = Run.open(run).config
    timeframe = cfg.data.timeframe or "1h"
    bar_store = BarStore(store) if store is not None else None
    if broker == "ccxt":
        if not exchange:
            raise ConfigError("--broker ccxt needs --exchange (a ccxt id with a sandbox)")
        from rltrade.live.ccxt_broker import CcxtBroker

        sym = symbol or cfg.data.symbol
        if not sym:
            raise ConfigError("--broker ccxt needs --symbol (e.g. BTC/USDT)")
        adapter = CcxtBroker(exchange, sym)
        return LiveFeed(adapter, ccxt_closed_bars(adapter.exchange, sym, timeframe), timeframe,
                        poll_seconds=poll_seconds, store=bar_store, symbol=sym)
    if broker == "ibkr":
        from ib_async import Forex, Stock

        from rltrade.live.ibkr_broker import IbkrBroker

        sym = (symbol or cfg.data.symbol or "").upper()
        if not sym:
            raise ConfigError("--broker ibkr needs --symbol (EURUSD, or a stock symbol)")
        contract = Forex(sym) if len(sym) == 6 and sym.isalpha() else Stock(sym, "SMART", "USD")
        adapter = IbkrBroker(contract, symbol=sym, host=host, port=port, account=account)
        return LiveFeed(adapter, ibkr_closed_bars(adapter.ib, contract, timeframe), timeframe,
                        poll_seconds=poll_seconds, store=bar_store, symbol=sym)
    raise ConfigError(f"--broker must be sim, ccxt or ibkr, got {broker!r}")


def ibkr_closed_bars(ib: Any, contract: Any, timeframe: str) -> Callable[[int], pd.DataFrame]:
    """``closed_bars(after_ns)`` from IB's historical bars (``reqHistoricalData``, midpoint
    for currency pairs, trades otherwise), without the bar still forming."""
    tf = parse_timeframe(timeframe)
    size = {60: "1 min", 300: "5 mins", 900: "15 mins", 1800: "30 mins", 3600: "1 hour",
            14400: "4 hours", 86400: "1 day"}.get(int(tf.seconds))
    if size is None:
        raise ConfigError(f"ibkr: no IB bar size for the timeframe {tf.name}")
    what = "MIDPOINT" if getattr(contract, "secType", "") == "CASH" else "TRADES"

    def closed(after_ns: int) -> pd.DataFrame:
        bars = ib.reqHistoricalData(contract, endDateTime="", durationStr="2 D",
                                    barSizeSetting=size, whatToShow=what, useRTH=False,
                                    formatDate=2)
        now = pd.Timestamp.now(tz="UTC")
        rows = [(pd.Timestamp(b.date).tz_convert("UTC") if pd.Timestamp(b.date).tzinfo
                 else pd.Timestamp(b.date, tz="UTC"), b.open, b.high, b.low, b.close,
                 max(float(b.volume), 0.0)) for b in bars]
        frame = pd.DataFrame(rows, columns=["timestamp", *OHLCV]).set_index("timestamp")
        frame.index = frame.index.as_unit("ns")
        keep = (frame.index.asi8 > after_ns) & (
            frame.index + pd.Timedelta(seconds=tf.seconds) <= now)
        return frame[keep].astype("float64")

    return closed
