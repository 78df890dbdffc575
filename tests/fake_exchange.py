"""A fake Binance REST server on 127.0.0.1 for download tests (a reusable test helper).

:class:`FakeBinance` runs a real HTTP server (``http.server.ThreadingHTTPServer`` in a background
thread) on a free port and answers the public endpoints ccxt's ``binance`` client calls to load
markets and download history, in Binance's exact response formats:

==================================  ========================================================
``GET /api/v3/exchangeInfo``        spot markets (``BTCUSDT`` by default)
``GET /api/v3/klines``              spot klines: ``symbol interval startTime endTime limit``
``GET /fapi/v1/exchangeInfo``       USD-M perpetual markets (ccxt symbol ``BTC/USDT:USDT``)
``GET /fapi/v1/klines``             USD-M klines
``GET /futures/data/openInterestHist``  ``symbol period startTime endTime limit``
``GET /fapi/v1/fundingRate``        ``symbol startTime endTime limit``
``GET /api/v3/time``, ``/fapi/v1/time``, ``/api/v3/ping``  server time / ping
==================================  ========================================================

Data are generated, deterministic functions of the open time: the same bar always has the same
values, whatever page it is served in. The server has a clock (``now``): klines exist from
``listing`` up to the bar containing ``now``, and that last bar is *incomplete* (its values
differ from the final bar, as on the real exchange). ``gaps`` are ranges the exchange itself
lacks. :meth:`FakeBinance.expected_bars`, :meth:`FakeBinance.open_interest` and
:meth:`FakeBinance.funding_rates` give the ground truth to compare a download with.

The spot account (paper trading, signed endpoints; the signature is not checked, the
``X-MBX-APIKEY`` header must be there): ``POST /api/v3/order`` (market orders, filled at
:attr:`FakeBinance.price`, with ``newClientOrderId``; a client id already used is refused
with Binance's ``-2010 Duplicate order sent.``), ``GET /api/v3/order`` (by ``orderId`` or
``origClientOrderId``; ``-2013 Order does not exist.``), ``DELETE /api/v3/order``,
``GET /api/v3/openOrders``, ``GET /api/v3/account`` (balances), ``GET /api/v3/myTrades``
(``fromId``), in Binance's formats. :attr:`FakeBinance.balances`, :attr:`FakeBinance.orders`
and :attr:`FakeBinance.trades` are the ground truth; :meth:`FakeBinance.fill_open` fills what
partially filled orders left.

Every request is recorded (:attr:`FakeBinance.requests`), and scripted faults can be queued per
path with :meth:`FakeBinance.inject` (or per method and path: ``"POST /api/v3/order"``); each
request to that path consumes the next fault:

* ``Fault.http(429)`` / ``Fault.http(418)``: Binance's rate-limit / IP-ban answer (JSON body
  ``{"code": -1003, ...}`` and a ``Retry-After`` header); ``Fault.http(500)``, ``502``, ``503``:
  an HTML server error; ``Fault.error(400, -1121, "Invalid symbol.")``: a Binance JSON error;
* ``Fault.ok()``: a normal answer (schedules the next faults for later requests);
* ``Fault.empty()``: an empty page ``[]``;
* ``Fault.overlap(n)``: the page starts ``n`` bars before ``startTime`` (repeats earlier bars);
* ``Fault.repeat(n, revise=True)``: the first ``n`` bars of the page appear twice, the second
  copy with a revised volume (a conflicting answer);
* ``Fault.truncate(n)``: a short page of only ``n`` bars;
* ``Fault.ignore_end()``: ``endTime`` is ignored (the page may run past it, up to ``now``);
* ``Fault.broken_ohlc(k)``: bar ``k`` of the page has ``high < low``;
* ``Fault.delay(seconds)``: the answer comes late (a client timeout, if short enough);
* ``Fault.disconnect()``: the connection is closed before the request is processed;
* ``Fault.lost_reply()``: the request is processed (an order is placed), then the connection is
  closed without an answer (a restart in the middle of a submit, as the client sees it);
* ``Fault.partial(fraction)``: the order fills only ``fraction`` of its quantity now
  (``PARTIALLY_FILLED``, the rest stays open until :meth:`FakeBinance.fill_open`);
* ``Fault.reject()``: the order is refused for insufficient balance (``-2010``).

Usage::

    with FakeBinance(now="2024-03-01", listing="2023-06-01") as fake:
        exchange = fake.client()            # a real ccxt.binance pointed at the server
        fake.inject("/api/v3/klines", Fault.http(429), Fault.empty())
        ...
        assert fake.count("/api/v3/klines") == 5
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

MS = 1
SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# Binance kline intervals with a fixed length (epoch-aligned, except weeks: Monday 00:00 UTC).
INTERVAL_MS = {
    "1s": SECOND_MS, "1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS, "30m": 30 * MINUTE_MS, "1h": HOUR_MS, "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS, "6h": 6 * HOUR_MS, "8h": 8 * HOUR_MS, "12h": 12 * HOUR_MS,
    "1d": DAY_MS, "3d": 3 * DAY_MS, "1w": 7 * DAY_MS,
}
OI_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
_MONDAY_MS = 4 * DAY_MS  # 1970-01-05 was a Monday
FUNDING_INTERVAL_MS = 8 * HOUR_MS

_SPOT, _LINEAR = "spot", "linear"
#: the signed spot endpoints of the paper account
_PRIVATE = ("/api/v3/order", "/api/v3/openOrders", "/api/v3/account", "/api/v3/myTrades")
_KLINE_LIMITS = {_SPOT: (500, 1000), _LINEAR: (500, 1500)}  # (default, max) as on Binance


def _ms(value: str | pd.Timestamp | int) -> int:
    if isinstance(value, int | np.integer):
        return int(value)
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value // 1_000_000)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 arithmetic wraps around on purpose)."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniform(t_ms: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic uniforms in [0, 1) from times and a salt."""
    x = np.asarray(t_ms, dtype=np.int64).astype(np.uint64) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF)
    return (_mix(x) >> np.uint64(11)).astype(np.float64) / float(2**53)


def _salt(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode()) * 0x9E3779B1


def _fmt(values: Iterable[float], decimals: int) -> list[str]:
    return [f"{v:.{decimals}f}" for v in values]


def _month_starts(lo_ms: int, hi_ms: int) -> np.ndarray:
    lo = pd.Timestamp(lo_ms, unit="ms", tz="UTC")
    first = pd.Timestamp(year=lo.year, month=lo.month, day=1, tz="UTC")
    if first < lo:
        first = first + pd.DateOffset(months=1)
    idx = pd.date_range(first, pd.Timestamp(hi_ms, unit="ms", tz="UTC"), freq="MS")
    return (idx.as_unit("ns").asi8 // 1_000_000).astype(np.int64)


def interval_opens(interval: str, lo_ms: int, hi_ms: int) -> np.ndarray:
    """Open times (ms) of ``interval`` bars with ``lo_ms <= open <= hi_ms``, Binance-aligned."""
    if hi_ms < lo_ms:
        return np.empty(0, dtype=np.int64)
    if interval == "1M":
        return _month_starts(lo_ms, hi_ms)
    step = INTERVAL_MS[interval]
    origin = _MONDAY_MS if interval == "1w" else 0
    first = origin + -(-(lo_ms - origin) // step) * step
    return np.arange(first, hi_ms + 1, step, dtype=np.int64)


def interval_closes(interval: str, opens: np.ndarray) -> np.ndarray:
    """Close times (ms, exclusive) of bars opening at ``opens``."""
    if interval == "1M":
        idx = pd.DatetimeIndex(np.asarray(opens, dtype="datetime64[ms]")).tz_localize("UTC")
        nxt = idx + pd.DateOffset(months=1)
        return (nxt.as_unit("ns").asi8 // 1_000_000).astype(np.int64)
    return np.asarray(opens, dtype=np.int64) + INTERVAL_MS[interval]


@dataclass
class Fault:
    """One scripted misbehaviour of the server, consumed by one request to its path."""

    kind: str
    status: int = 0
    n: int = 0
    seconds: float = 0.0
    revise: bool = False
    retry_after: str | None = None
    body: dict[str, Any] | None = None

    @staticmethod
    def http(status: int, retry_after: str | None = "auto") -> Fault:
        """An HTTP error answer: 429/418 with Binance's JSON body, 5xx with plain text.

        ``retry_after`` is the ``Retry-After`` header (seconds); ``"auto"`` sends ``"0"`` with
        429/418 (Binance always sends one) and nothing with other statuses.
        """
        if retry_after == "auto":
            retry_after = "0" if status in (418, 429) else None
        return Fault("http", status=status, retry_after=retry_after)

    @staticmethod
    def error(status: int, code: int, msg: str) -> Fault:
        """An HTTP error with Binance's JSON error body ``{"code": code, "msg": msg}``."""
        return Fault("http", status=status, body={"code": code, "msg": msg})

    @staticmethod
    def ok() -> Fault:
        """No fault: a normal answer (to schedule faults for later requests)."""
        return Fault("ok")

    @staticmethod
    def empty() -> Fault:
        """An empty page ``[]`` although data exist."""
        return Fault("empty")

    @staticmethod
    def overlap(n: int) -> Fault:
        """The page starts ``n`` bars before the requested ``startTime``."""
        return Fault("overlap", n=n)

    @staticmethod
    def repeat(n: int, revise: bool = True) -> Fault:
        """The first ``n`` bars appear twice; with ``revise`` the copy has another volume."""
        return Fault("repeat", n=n, revise=revise)

    @staticmethod
    def truncate(n: int) -> Fault:
        """Only the first ``n`` bars of the page are sent."""
        return Fault("truncate", n=n)

    @staticmethod
    def ignore_end() -> Fault:
        """``endTime`` is ignored for this page."""
        return Fault("ignore_end")

    @staticmethod
    def broken_ohlc(k: int = 0) -> Fault:
        """Bar ``k`` of the page has ``high < low``."""
        return Fault("broken_ohlc", n=k)

    @staticmethod
    def delay(seconds: float) -> Fault:
        """Answer normally, but only after ``seconds``."""
        return Fault("delay", seconds=seconds)

    @staticmethod
    def disconnect() -> Fault:
        """Close the connection without processing the request."""
        return Fault("disconnect")

    @staticmethod
    def lost_reply() -> Fault:
        """Process the request, then close the connection without answering."""
        return Fault("lost_reply")

    @staticmethod
    def partial(fraction: float) -> Fault:
        """An order fills ``fraction`` of its quantity; the rest stays open."""
        return Fault("partial", seconds=fraction)

    @staticmethod
    def reject() -> Fault:
        """An order is refused: insufficient balance."""
        return Fault("http", status=400, body={
            "code": -2010, "msg": "Account has insufficient balance for requested action."})


@dataclass
class Request:
    """One request the server received."""

    path: str
    params: dict[str, str]
    status: int = 200
    fault: str | None = None
    at: float = field(default_factory=time.monotonic)
    method: str = "GET"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeBinance

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out closed its socket before a delayed answer: not an error here.
        return


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "FakeBinance/1.0"

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            params.update(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        keyed = bool(self.headers.get("X-MBX-APIKEY"))
        answer = self.server.fake.handle(url.path, params, method=method, keyed=keyed)
        if answer is None:  # a dropped connection
            self.close_connection = True
            return
        status, body, headers = answer
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        content_type = "text/plain" if isinstance(body, bytes) else "application/json"
        self.send_header("Content-Type", f"{content_type};charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _error(status: int, code: int, msg: str) -> tuple[int, Any, dict[str, str]]:
    return status, {"code": code, "msg": msg}, {}


class FakeBinance:
    """A fake Binance (spot + USD-M futures public API) on ``127.0.0.1``.

    :param now: the server's clock; the bar containing it is served incomplete.
    :param listing: first bar open time; there is no data before it.
    :param gaps: ``[(start, end), ...]`` ranges of kline open times the exchange lacks.
    :param symbols: market ids served (base + ``USDT``), on spot and USD-M futures.
    :param oi_history_days: open interest is only served for this many days before ``now``;
        an older ``startTime`` is refused as Binance does (HTTP 400, code -1130).
    :param funding_offset_ms: funding times are ``00:00/08:00/16:00 UTC`` plus this offset.
    :param seed: changes every generated value.
    """

    def __init__(
        self,
        *,
        now: str | pd.Timestamp = "2024-03-01",
        listing: str | pd.Timestamp = "2023-01-01",
        gaps: Iterable[tuple[str | pd.Timestamp, str | pd.Timestamp]] = (),
        symbols: Iterable[str] = ("BTCUSDT",),
        oi_history_days: float | None = None,
        funding_offset_ms: int = 0,
        seed: int = 0,
    ) -> None:
        self.now_ms = _ms(now)
        self.listing_ms = _ms(listing)
        self.gaps = [(_ms(a), _ms(b)) for a, b in gaps]
        self.symbols = list(symbols)
        self.oi_history_days = oi_history_days
        self.funding_offset_ms = int(funding_offset_ms)
        self.seed = seed
        self.requests: list[Request] = []
        #: the spot account: balances per asset, orders by id, trades, the fill price
        self.balances: dict[str, float] = {"USDT": 1_000_000.0}
        for sym in self.symbols:
            self.balances[sym[:-4]] = 10.0
        self.orders: dict[int, dict[str, Any]] = {}
        self.trades: list[dict[str, Any]] = []
        self.price = 30_000.0
        self.fee_rate = 0.001
        self._faults: dict[str, deque[Fault]] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeBinance:
        """Bind to a free port on 127.0.0.1 and serve in a background thread."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-binance",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43121``."""
        if self._server is None:
            raise RuntimeError("FakeBinance is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- the ccxt client ---------------------------------------------------------------------
    def ccxt_config(
        self,
        *,
        rate_limit_ms: float = 1,
        timeout_ms: int = 5000,
        market_types: Iterable[str] = (_SPOT, _LINEAR),
    ) -> dict[str, Any]:
        """ccxt constructor config pointing every Binance API URL at this server.

        Every entry of ``urls['api']`` (public, fapiPublic, fapiData, sapi, dapi...) keeps its
        path and gets this server's scheme and host, so nothing can reach the real exchange.
        ``fetchMarkets.types`` limits ``load_markets`` to the exchangeInfo endpoints served here;
        currencies (a private sapi call), margin pairs and the time-difference call are off.
        """
        import ccxt

        template = ccxt.binance().urls["api"]
        api = {}
        for key, value in template.items():
            if isinstance(value, str):
                api[key] = self.url + urlsplit(value).path
        return {
            "rateLimit": rate_limit_ms,
            "timeout": timeout_ms,
            # the sandbox (testnet) URLs too: set_sandbox_mode(True) switches to these
            "urls": {"api": api, "test": dict(api)},
            "options": {
                "fetchMarkets": {"types": list(market_types)},
                "fetchCurrencies": False,
                "fetchMargins": False,
                "adjustForTimeDifference": False,
            },
        }

    def client(self, **kwargs: Any) -> Any:
        """A real ``ccxt.binance`` (through :func:`rltrade.data.exchange.make_exchange`)."""
        from rltrade.data.exchange import make_exchange

        return make_exchange("binance", config=self.ccxt_config(**kwargs))

    # -- faults and the request log ----------------------------------------------------------
    def inject(self, path: str, *faults: Fault) -> None:
        """Queue ``faults`` for ``path``; each request to it consumes the next one."""
        with self._lock:
            self._faults.setdefault(path, deque()).extend(faults)

    def pending_faults(self, path: str) -> int:
        with self._lock:
            return len(self._faults.get(path, ()))

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def count(self, path: str) -> int:
        """Number of requests received for ``path`` (faulty ones included)."""
        return len(self.requests_to(path))

    def clear(self) -> None:
        """Forget recorded requests and queued faults."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()

    @property
    def unknown_paths(self) -> list[str]:
        """Paths requested that this server does not serve (answered 404)."""
        with self._lock:
            return [r.path for r in self.requests if r.status == 404]

    # -- ground truth ------------------------------------------------------------------------
    def _market(self, market: str) -> int:
        return 1 if market == _SPOT else 2

    def _kline_opens(self, market: str, interval: str, lo_ms: int, hi_ms: int) -> np.ndarray:
        """Open times the exchange has, within ``[lo_ms, hi_ms]``, up to the bar at ``now``."""
        opens = interval_opens(interval, max(lo_ms, self.listing_ms), min(hi_ms, self.now_ms))
        for a, b in self.gaps:
            opens = opens[(opens < a) | (opens >= b)]
        return opens

    def _kline_values(
        self, symbol: str, market: str, interval: str, opens: np.ndarray
    ) -> dict[str, np.ndarray]:
        salt = _salt(self.seed, symbol, market, interval)
        t = opens.astype(np.float64)
        level = 20000.0 if symbol.startswith("BTC") else 1500.0
        mid = level * np.exp(
            0.25 * np.sin(2 * np.pi * t / (97 * DAY_MS))
            + 0.04 * np.sin(2 * np.pi * t / (5.3 * DAY_MS))
            + (0.002 if market == _LINEAR else 0.0)
        )
        u = [_uniform(opens, salt + k) for k in range(6)]
        o = np.round(mid * (1 + 0.01 * (u[0] - 0.5)), 2)
        c = np.round(mid * (1 + 0.01 * (u[1] - 0.5)), 2)
        h = np.round(np.maximum(o, c) * (1 + 0.004 * u[2]), 2)
        lo = np.round(np.minimum(o, c) * (1 - 0.004 * u[3]), 2)
        v = np.round(10 + 90 * u[4], 5)
        return {"open": o, "high": h, "low": lo, "close": c, "volume": v, "u": u[5]}

    def expected_bars(
        self,
        symbol: str = "BTCUSDT",
        interval: str = "1h",
        start: str | pd.Timestamp | int | None = None,
        end: str | pd.Timestamp | int | None = None,
        *,
        market: str = _SPOT,
    ) -> pd.DataFrame:
        """The final (complete) bars the exchange has with ``start <= open < end``.

        Bars that are not closed at the server's ``now`` are left out. Values are the floats of
        the exact strings the server sends, in rltrade's layout (UTC ns index ``timestamp``,
        float64 ``open high low close volume``).
        """
        lo = self.listing_ms if start is None else _ms(start)
        hi = self.now_ms if end is None else _ms(end) - 1
        opens = self._kline_opens(market, interval, lo, hi)
        opens = opens[interval_closes(interval, opens) <= self.now_ms]
        vals = self._kline_values(symbol, market, interval, opens)
        index = pd.DatetimeIndex(opens.astype("datetime64[ms]")).tz_localize("UTC").as_unit("ns")
        index.name = "timestamp"
        frame = pd.DataFrame(
            {k: np.array([float(s) for s in _fmt(vals[k], 5 if k == "volume" else 2)])
             for k in ("open", "high", "low", "close", "volume")},
            index=index,
        )
        return frame

    def _oi_stamps(self, period: str, lo_ms: int, hi_ms: int) -> np.ndarray:
        return interval_opens(period, max(lo_ms, self.listing_ms), min(hi_ms, self.now_ms))

    def _oi_values(self, symbol: str, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = _uniform(stamps, _salt(self.seed, symbol, "oi"))
        t = stamps.astype(np.float64)
        oi = np.round(80000 + 6000 * np.sin(2 * np.pi * t / (11 * DAY_MS)) + 800 * u, 3)
        return oi, np.round(oi * 20000.0, 2)

    def open_interest(
        self, symbol: str = "BTCUSDT", period: str = "1h",
        start: str | pd.Timestamp | int | None = None, end: str | pd.Timestamp | int | None = None,
    ) -> pd.Series:
        """Open interest (``sumOpenInterest``) by timestamp, ``start <= ts <= end``."""
        lo = self.listing_ms if start is None else _ms(start)
        hi = self.now_ms if end is None else _ms(end)
        stamps = self._oi_stamps(period, lo, hi)
        oi, _ = self._oi_values(symbol, stamps)
        idx = pd.DatetimeIndex(stamps.astype("datetime64[ms]")).tz_localize("UTC").as_unit("ns")
        return pd.Series([float(s) for s in _fmt(oi, 3)], index=idx, name="open_interest")

    def _funding_stamps(self, lo_ms: int, hi_ms: int) -> np.ndarray:
        off = self.funding_offset_ms
        lo, hi = max(lo_ms, self.listing_ms), min(hi_ms, self.now_ms)
        base = interval_opens("8h", lo - off, hi - off)
        stamps = base + off
        return stamps[stamps >= self.listing_ms]

    def _funding_values(self, symbol: str, stamps: np.ndarray) -> np.ndarray:
        u = _uniform(stamps, _salt(self.seed, symbol, "funding"))
        return np.round(0.0001 + 0.0004 * (u - 0.5), 8)

    def funding_rates(
        self, symbol: str = "BTCUSDT",
        start: str | pd.Timestamp | int | None = None, end: str | pd.Timestamp | int | None = None,
    ) -> pd.Series:
        """Funding rates by funding time, ``start <= ts <= end``."""
        lo = self.listing_ms if start is None else _ms(start)
        hi = self.now_ms if end is None else _ms(end)
        stamps = self._funding_stamps(lo, hi)
        rates = self._funding_values(symbol, stamps)
        idx = pd.DatetimeIndex(stamps.astype("datetime64[ms]")).tz_localize("UTC").as_unit("ns")
        return pd.Series([float(s) for s in _fmt(rates, 8)], index=idx, name="funding_rate")

    # -- request handling --------------------------------------------------------------------
    def handle(self, path: str, params: dict[str, str], method: str = "GET",
               keyed: bool = False) -> tuple[int, Any, dict[str, str]] | None:
        """Answer one request: ``(status, json-able body or bytes, extra headers)``, or
        ``None`` to drop the connection without an answer."""
        with self._lock:  # faults queued for "METHOD path" first, then for the path
            queue = self._faults.get(f"{method} {path}") or self._faults.get(path)
            fault = queue.popleft() if queue else None
            record = Request(path, dict(params), fault=fault.kind if fault else None,
                             method=method)
            self.requests.append(record)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
            fault = None
        if fault is not None and fault.kind == "disconnect":
            record.status = 0
            return None
        if fault is not None and fault.kind == "http":
            status, body, headers = self._http_fault(fault)
        else:
            try:
                if path in _PRIVATE:
                    if not keyed:
                        raise _BadRequest(-2014, "API-key format invalid.")
                    with self._lock:
                        status, body, headers = self._private(path, method, params, fault)
                else:
                    status, body, headers = self._route(path, params, fault)
            except _BadRequest as exc:
                status, body, headers = _error(400, exc.code, exc.msg)
        record.status = status
        if fault is not None and fault.kind == "lost_reply":
            return None
        return status, body, headers

    # -- the spot account ----------------------------------------------------------------------
    def _order_view(self, order: dict[str, Any]) -> dict[str, Any]:
        keys = ("symbol", "orderId", "orderListId", "clientOrderId", "price", "origQty",
                "executedQty", "cummulativeQuoteQty", "status", "timeInForce", "type", "side",
                "stopPrice", "icebergQty", "time", "updateTime", "isWorking", "workingTime",
                "origQuoteOrderQty", "selfTradePreventionMode")
        return {k: order[k] for k in keys}

    def _execute(self, order: dict[str, Any], qty: float) -> list[dict[str, Any]]:
        """Fill ``qty`` of ``order`` at :attr:`price`; returns the FULL response's fills."""
        base, quote = order["symbol"][:-4], order["symbol"][-4:]
        price = self.price
        fee = qty * price * self.fee_rate
        sign = 1.0 if order["side"] == "BUY" else -1.0
        self.balances[base] = self.balances.get(base, 0.0) + sign * qty
        self.balances[quote] = self.balances.get(quote, 0.0) - sign * qty * price - fee
        trade_id = len(self.trades) + 1
        self.trades.append({
            "symbol": order["symbol"], "id": trade_id, "orderId": order["orderId"],
            "orderListId": -1, "price": f"{price:.8f}", "qty": f"{qty:.8f}",
            "quoteQty": f"{qty * price:.8f}", "commission": f"{fee:.8f}",
            "commissionAsset": quote, "time": self.now_ms, "isBuyer": sign > 0,
            "isMaker": False, "isBestMatch": True})
        executed = float(order["executedQty"]) + qty
        order["executedQty"] = f"{executed:.8f}"
        order["cummulativeQuoteQty"] = f"{float(order['cummulativeQuoteQty']) + qty * price:.8f}"
        done = executed >= float(order["origQty"]) - 1e-12
        order["status"] = "FILLED" if done else "PARTIALLY_FILLED"
        order["isWorking"] = not done
        order["updateTime"] = self.now_ms
        return [{"price": f"{price:.8f}", "qty": f"{qty:.8f}", "commission": f"{fee:.8f}",
                 "commissionAsset": quote, "tradeId": trade_id}]

    def fill_open(self) -> int:
        """Fill the rest of every partially filled order at :attr:`price`; how many."""
        with self._lock:
            n = 0
            for order in self.orders.values():
                if order["status"] == "PARTIALLY_FILLED":
                    self._execute(order, float(order["origQty"]) - float(order["executedQty"]))
                    n += 1
            return n

    def position(self, symbol: str = "BTCUSDT") -> float:
        """The base asset's balance (what a spot position is)."""
        return self.balances.get(symbol[:-4], 0.0)

    def _find(self, params: dict[str, str]) -> dict[str, Any]:
        if params.get("orderId"):
            order = self.orders.get(int(params["orderId"]))
        else:
            cid = params.get("origClientOrderId")
            order = next((o for o in self.orders.values() if o["clientOrderId"] == cid), None)
        if order is None or order["symbol"] != params.get("symbol"):
            raise _BadRequest(-2013, "Order does not exist.")
        return order

    def _private(self, path: str, method: str, params: dict[str, str],
                 fault: Fault | None) -> tuple[int, Any, dict[str, str]]:
        if path == "/api/v3/account":
            return 200, {
                "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0,
                "sellerCommission": 0, "canTrade": True, "canWithdraw": True,
                "canDeposit": True, "brokered": False, "requireSelfTradePrevention": False,
                "preventSor": False, "updateTime": self.now_ms, "accountType": "SPOT",
                "balances": [{"asset": a, "free": f"{v:.8f}", "locked": "0.00000000"}
                             for a, v in self.balances.items()],
                "permissions": ["SPOT"], "uid": 1}, {}
        symbol = params.get("symbol")
        if symbol not in self.symbols:
            raise _BadRequest(-1121, "Invalid symbol.")
        if path == "/api/v3/openOrders":
            return 200, [self._order_view(o) for o in self.orders.values()
                         if o["symbol"] == symbol and o["status"] in ("NEW",
                                                                      "PARTIALLY_FILLED")], {}
        if path == "/api/v3/myTrades":
            start = int(params.get("fromId") or 0)
            limit = int(params.get("limit") or 500)
            rows = [t for t in self.trades if t["symbol"] == symbol and t["id"] >= start]
            return 200, rows[:limit], {}
        if method == "GET":
            return 200, self._order_view(self._find(params)), {}
        if method == "DELETE":
            order = self._find(params)
            if order["status"] not in ("NEW", "PARTIALLY_FILLED"):
                raise _BadRequest(-2011, "Unknown order sent.")
            order["status"] = "CANCELED"
            order["isWorking"] = False
            return 200, self._order_view(order), {}
        cid = params.get("newClientOrderId") or f"x-{len(self.orders) + 1}"
        if any(o["clientOrderId"] == cid for o in self.orders.values()):
            raise _BadRequest(-2010, "Duplicate order sent.")
        if params.get("type") != "MARKET":
            raise _BadRequest(-1116, "Invalid orderType.")
        qty = float(params["quantity"])
        side = params.get("side")
        base, quote = symbol[:-4], symbol[-4:]
        need_quote = qty * self.price * (1 + self.fee_rate)
        if (side == "BUY" and self.balances.get(quote, 0.0) < need_quote) or (
                side == "SELL" and self.balances.get(base, 0.0) < qty):
            raise _BadRequest(-2010, "Account has insufficient balance for requested action.")
        order_id = len(self.orders) + 1
        order = {"symbol": symbol, "orderId": order_id, "orderListId": -1,
                 "clientOrderId": cid, "price": "0.00000000", "origQty": f"{qty:.8f}",
                 "executedQty": "0.00000000", "cummulativeQuoteQty": "0.00000000",
                 "status": "NEW", "timeInForce": "GTC", "type": "MARKET", "side": side,
                 "stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": self.now_ms,
                 "updateTime": self.now_ms, "isWorking": True, "workingTime": self.now_ms,
                 "origQuoteOrderQty": "0.00000000", "selfTradePreventionMode": "EXPIRE_MAKER"}
        self.orders[order_id] = order
        share = fault.seconds if fault is not None and fault.kind == "partial" else 1.0
        fills = self._execute(order, qty * share)
        body = {**self._order_view(order), "transactTime": self.now_ms, "fills": fills}
        return 200, body, {}

    @staticmethod
    def _http_fault(fault: Fault) -> tuple[int, Any, dict[str, str]]:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        if fault.body is not None:
            return fault.status, fault.body, headers
        if fault.status == 429:
            return 429, {
                "code": -1003,
                "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per "
                       "minute. Please use the websocket for live updates to avoid polling "
                       "the API.",
            }, headers
        if fault.status == 418:
            return 418, {
                "code": -1003,
                "msg": "Way too many requests; IP(127.0.0.1) banned until 1700000000000. Please "
                       "use the websocket for live updates to avoid bans.",
            }, headers
        return fault.status, b"<html><body><h1>Internal Server Error</h1></body></html>", headers

    def _route(
        self, path: str, params: dict[str, str], fault: Fault | None
    ) -> tuple[int, Any, dict[str, str]]:
        if path == "/api/v3/ping":
            return 200, {}, {}
        if path in ("/api/v3/time", "/fapi/v1/time"):
            return 200, {"serverTime": self.now_ms}, {}
        if path == "/api/v3/exchangeInfo":
            return 200, self._exchange_info(_SPOT), {}
        if path == "/fapi/v1/exchangeInfo":
            return 200, self._exchange_info(_LINEAR), {}
        if path == "/api/v3/klines":
            return 200, self._klines(_SPOT, params, fault), {}
        if path == "/fapi/v1/klines":
            return 200, self._klines(_LINEAR, params, fault), {}
        if path == "/futures/data/openInterestHist":
            return 200, self._open_interest_hist(params, fault), {}
        if path == "/fapi/v1/fundingRate":
            return 200, self._funding_rate(params, fault), {}
        return 404, b"<html><body><h1>404 Not Found</h1></body></html>", {}

    # -- endpoints ---------------------------------------------------------------------------
    def _exchange_info(self, market: str) -> dict[str, Any]:
        symbols = []
        for sym in self.symbols:
            base, quote = sym[:-4], sym[-4:]
            filters = [
                {"filterType": "PRICE_FILTER", "minPrice": "0.01000000",
                 "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
                {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
                 "stepSize": "0.00001000"},
                {"filterType": "NOTIONAL", "minNotional": "5.00000000",
                 "applyMinToMarket": True, "maxNotional": "9000000.00000000",
                 "applyMaxToMarket": False, "avgPriceMins": 5},
            ]
            if market == _SPOT:
                symbols.append({
                    "symbol": sym, "status": "TRADING", "baseAsset": base,
                    "baseAssetPrecision": 8, "quoteAsset": quote, "quotePrecision": 8,
                    "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
                    "quoteCommissionPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT",
                                   "TAKE_PROFIT_LIMIT"],
                    "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
                    "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
                    "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": True, "filters": filters, "permissions": [],
                    "permissionSets": [["SPOT", "MARGIN"]],
                    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER",
                                                        "EXPIRE_BOTH"],
                })
            else:
                symbols.append({
                    "symbol": sym, "pair": sym, "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000, "onboardDate": self.listing_ms,
                    "status": "TRADING", "maintMarginPercent": "2.5000",
                    "requiredMarginPercent": "5.0000", "baseAsset": base, "quoteAsset": quote,
                    "marginAsset": quote, "pricePrecision": 2, "quantityPrecision": 3,
                    "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
                    "underlyingSubType": ["PoW"], "settlePlan": 0, "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500", "marketTakeBound": "0.05",
                    "maxMoveOrderLimit": 10000,
                    "filters": [
                        {"filterType": "PRICE_FILTER", "minPrice": "556.80",
                         "maxPrice": "4529764", "tickSize": "0.10"},
                        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000",
                         "stepSize": "0.001"},
                        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120",
                         "stepSize": "0.001"},
                        {"filterType": "MIN_NOTIONAL", "notional": "100"},
                    ],
                    "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                                   "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                })
        info: dict[str, Any] = {
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                 "limit": 100},
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }
        if market == _LINEAR:
            info["futuresType"] = "U_MARGINED"
            info["assets"] = [{"asset": "USDT", "marginAvailable": True,
                               "autoAssetExchange": "-10000"}]
        return info

    def _symbol(self, params: dict[str, str], required: bool = True) -> str | None:
        sym = params.get("symbol")
        if sym is None:
            if required:
                raise _BadRequest(-1102, "Mandatory parameter 'symbol' was not sent, was empty/"
                                         "null, or malformed.")
            return None
        if sym not in self.symbols:
            raise _BadRequest(-1121, "Invalid symbol.")
        return sym

    @staticmethod
    def _int(params: dict[str, str], key: str) -> int | None:
        if key not in params:
            return None
        try:
            return int(params[key])
        except ValueError:
            raise _BadRequest(-1100, f"Illegal characters found in parameter '{key}'; legal "
                                     f"range is '^[0-9]{{1,20}}$'.") from None

    def _limit(self, params: dict[str, str], default: int, maximum: int) -> int:
        limit = self._int(params, "limit")
        if limit is None:
            return default
        if limit <= 0 or limit > maximum:
            raise _BadRequest(-1130, "Data sent for parameter 'limit' is not valid.")
        return limit

    @staticmethod
    def _select(stamps: np.ndarray, start: int | None, end: int | None, limit: int) -> np.ndarray:
        """Binance's selection: from ``startTime`` forward, else the latest ``limit``."""
        if start is not None:
            stamps = stamps[stamps >= start]
        if end is not None:
            stamps = stamps[stamps <= end]
        return stamps[:limit] if start is not None else stamps[-limit:]

    def _klines(self, market: str, params: dict[str, str], fault: Fault | None) -> list[list[Any]]:
        sym = self._symbol(params)
        assert sym is not None
        interval = params.get("interval", "")
        if interval not in INTERVAL_MS and interval != "1M":
            raise _BadRequest(-1120, "Invalid interval.")
        default, maximum = _KLINE_LIMITS[market]
        limit = self._limit(params, default, maximum)
        start, end = self._int(params, "startTime"), self._int(params, "endTime")
        kind = fault.kind if fault is not None else None
        if kind == "empty":
            return []
        if kind == "ignore_end":
            end = None
        if kind == "overlap" and start is not None:
            earlier = self._kline_opens(market, interval, self.listing_ms, start - 1)
            start = int(earlier[-fault.n]) if len(earlier) >= fault.n else self.listing_ms
        every = self._kline_opens(market, interval, start if start is not None else 0,
                                  end if end is not None else self.now_ms)
        opens = self._select(every, start, end, limit)
        if kind == "truncate":
            opens = opens[: fault.n]
        if not len(opens):
            return []
        vals = self._kline_values(sym, market, interval, opens)
        closes = interval_closes(interval, opens)
        o, h, lo, c, v = (vals[k].copy() for k in ("open", "high", "low", "close", "volume"))
        live = closes > self.now_ms  # the current, incomplete bar
        if live.any():
            frac = (self.now_ms - opens[live]) / (closes[live] - opens[live])
            c[live] = np.round(o[live] * (1 + 0.002 * (vals["u"][live] - 0.5)), 2)
            h[live] = np.maximum(h[live], np.maximum(o[live], c[live]))
            lo[live] = np.minimum(lo[live], np.minimum(o[live], c[live]))
            v[live] = np.round(v[live] * frac, 5)
        if kind == "broken_ohlc":
            k = min(fault.n, len(opens) - 1)
            h[k], lo[k] = lo[k] * 0.99, h[k]
        rows = []
        for i in range(len(opens)):
            vol = v[i]
            qv = vol * c[i]
            rows.append([
                int(opens[i]), f"{o[i]:.2f}", f"{h[i]:.2f}", f"{lo[i]:.2f}", f"{c[i]:.2f}",
                f"{vol:.5f}", int(closes[i]) - 1, f"{qv:.8f}", int(100 + 1000 * vals["u"][i]),
                f"{vol / 2:.5f}", f"{qv / 2:.8f}", "0",
            ])
        if kind == "repeat":
            out = []
            for i, row in enumerate(rows):
                out.append(row)
                if i < fault.n:
                    copy = list(row)
                    if fault.revise:
                        copy[5] = f"{float(row[5]) * 2:.5f}"
                    out.append(copy)
            rows = out
        return rows

    def _open_interest_hist(
        self, params: dict[str, str], fault: Fault | None
    ) -> list[dict[str, Any]]:
        sym = self._symbol(params)
        assert sym is not None
        period = params.get("period", "")
        if period not in OI_PERIODS:
            raise _BadRequest(-1120, "Invalid period.")
        limit = self._limit(params, 30, 500)
        start, end = self._int(params, "startTime"), self._int(params, "endTime")
        if self.oi_history_days is not None and start is not None:
            horizon = self.now_ms - int(self.oi_history_days * DAY_MS)
            if start < horizon:
                raise _BadRequest(-1130, "parameter 'startTime' is invalid.")
        if fault is not None and fault.kind == "empty":
            return []
        every = self._oi_stamps(period, start if start is not None else 0,
                                end if end is not None else self.now_ms)
        if self.oi_history_days is not None:
            every = every[every >= self.now_ms - int(self.oi_history_days * DAY_MS)]
        stamps = self._select(every, start, end, limit)
        oi, value = self._oi_values(sym, stamps)
        return [
            {"symbol": sym, "sumOpenInterest": f"{oi[i]:.3f}",
             "sumOpenInterestValue": f"{value[i]:.8f}",
             "CMCCirculatingSupply": "19500000.000", "timestamp": int(stamps[i])}
            for i in range(len(stamps))
        ]

    def _funding_rate(self, params: dict[str, str], fault: Fault | None) -> list[dict[str, Any]]:
        sym = self._symbol(params, required=False) or self.symbols[0]
        limit = self._limit(params, 100, 1000)
        start, end = self._int(params, "startTime"), self._int(params, "endTime")
        if fault is not None and fault.kind == "empty":
            return []
        every = self._funding_stamps(start if start is not None else 0,
                                     end if end is not None else self.now_ms)
        stamps = self._select(every, start, end, limit)
        rates = self._funding_values(sym, stamps)
        return [
            {"symbol": sym, "fundingTime": int(stamps[i]), "fundingRate": f"{rates[i]:.8f}",
             "markPrice": "20000.00000000"}
            for i in range(len(stamps))
        ]


class _BadRequest(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
