"""Download bars from exchanges through CCXT into a :class:`~rltrade.data.store.BarStore`.

:func:`download_bars` is incremental and careful:

* **Only what is missing is asked for.** The expected bar grid of the timeframe in
  ``[start, end)`` (closed bars only, see ``now``) minus the bars already stored, minus the bar
  slots recorded in the store's *coverage* (slots the exchange was already asked for and had
  nothing in: before the listing date, exchange outages) is merged into contiguous spans, and
  only those spans are downloaded. A second identical call makes no candle request at all
  (only ``load_markets``, when the client has not loaded its markets yet).
* **Pagination** with ``fetch_ohlcv(symbol, timeframe, since, limit)``: ``since`` advances to the
  last received open time plus one bar. A short page (fewer bars than asked) is not an end: the
  next page starts after its last bar. A span ends when a page reaches the span's end (each page
  asks for at most the bars left plus one, so the exchange proves the end by answering a bar at or
  after it), on an explicit end of history, or on a page that makes no progress (never loops
  forever).
* **Empty pages** are never believed at once: an empty answer is asked again ``empty_retries``
  times with backoff ``backoff * 2**k``. If it stays empty, one request for the exchange's latest
  bar (``since=None, limit=1``) tells an end of history (the latest bar opens before ``since``
  and closed ``_HISTORY_END_AGE`` bars, at least a day, ago: a delisted market; the slots after
  it are recorded as covered) from a hiccup (the exchange has later bars, or is only late). A
  hiccup skips one page width, which is **not** recorded as covered, logs a warning and is
  listed in :attr:`DownloadResult.incomplete`; the next run asks for it again.
  After ``_MAX_EMPTY_WINDOWS`` such windows in a row the rest of the span is left for the next
  run. Slots before the market's creation time (ccxt's ``market["created"]``, where the
  exchange states one) count as the exchange's own statement that nothing is there.
* **Retries**: ccxt's ``OperationFailed`` family (``NetworkError``: HTTP 429/418 rate limits as
  ``RateLimitExceeded``/``DDoSProtection``, 5xx as ``ExchangeNotAvailable``, timeouts as
  ``RequestTimeout``; plus Binance's "server busy" codes) is retried with exponential backoff
  ``backoff * 2**k`` seconds (at least the ``Retry-After`` the exchange sends with a 429, 418 or
  5xx answer, in seconds or as an HTTP date), up to ``max_retries`` times, then
  :class:`~rltrade.errors.ExchangeError` names the symbol, the ``since`` time and the last error.
  A ``Retry-After`` above ``_MAX_RETRY_AFTER_S`` (an IP ban) fails at once. Any other ccxt error
  (``BadSymbol``, ``BadRequest``, ``AuthenticationError``...) raises ``ExchangeError`` at once.
  ccxt's own rate limiter (``enableRateLimit``) is always on.
* **No incomplete candle** is ever stored: bars with ``open + timeframe > now`` are dropped and
  nothing at or after the last closed bar is marked as covered.
* **Deduplication**: repeated bars (overlapping pages, repeated rows) are stored once; on
  conflicting values the later answer wins.
* **Validation**: bars are checked with :func:`rltrade.data.validate_bars` (``strict``) before
  they are stored; broken OHLC from an exchange raises :class:`~rltrade.errors.DataError`.
* **Crash safety**: bars are written with :meth:`BarStore.write` (atomic per file) and only then
  is coverage recorded for the empty slots of the same stretch, so an interrupted download never
  marks as covered a range whose bars it did not store. Long spans are written in chunks, so an
  interrupted download keeps what it got, and the next run asks only for the rest. Coverage holds
  only the slots the exchange had *no* bar for, never those of stored bars, so bars deleted from
  the store (a removed year file) are downloaded again.
* **Derivatives** (``with_derivatives=True``, contract markets such as ``BTC/USDT:USDT``): open
  interest (``fetchOpenInterestHistory``) and funding rates (``fetchFundingRateHistory``) over the
  downloaded bars, as columns ``open_interest`` and ``funding_rate``, aligned *as of each bar's
  close*: a bar gets the last value stamped at or before ``open + timeframe``, never a later one.
  An empty funding page is asked again like an empty candle page; bars left without a value
  (NaN) are named in a warning with their range and listed in
  :attr:`DownloadResult.derivative_gaps`.

Credentials are never arguments: :func:`make_exchange` reads them from the environment
(``RLTRADE_<EXCHANGE>_API_KEY``, ``_SECRET``, ``_PASSWORD``, ``_UID``); public market data needs
none.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import email.utils
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ccxt
import numpy as np
import pandas as pd
from loguru import logger

from rltrade.credentials import credential_paths
from rltrade.data.parsing import OHLCV
from rltrade.data.store import BarStore
from rltrade.data.timeframes import Timeframe, as_ns, parse_timeframe, to_utc
from rltrade.data.validation import validate_bars
from rltrade.errors import DataError, ExchangeError, ValidationError

log = logger.bind(component="data")

NS_PER_MS = 1_000_000
_DAY_NS = 86_400 * 1_000_000_000

_ENV_CREDENTIALS = {"API_KEY": "apiKey", "SECRET": "secret", "PASSWORD": "password", "UID": "uid"}
_POPULAR = ("binance", "binanceusdm", "bybit", "okx", "kraken", "coinbase", "bitstamp", "kucoin")

# Bars buffered before they are written (and their coverage recorded) in the middle of a span.
_FLUSH_BARS = 100_000
# Longest Retry-After honoured; a longer one (an IP ban) fails the download instead.
_MAX_RETRY_AFTER_S = 300.0
# Errors raised from an HTTP answer, whose Retry-After header (if any) is honoured.
_RETRY_AFTER_ERRORS = (ccxt.DDoSProtection, ccxt.RateLimitExceeded, ccxt.ExchangeNotAvailable)
# Unexplained empty pages skipped in a row before the rest of a span is left for the next run.
_MAX_EMPTY_WINDOWS = 3
# An exchange whose latest bar closed this many bars (and at least a day) ago has ended.
_HISTORY_END_AGE = 10
# Page sizes of the derivative endpoints: (open interest, funding rates); unknown exchanges get a
# conservative size most exchanges accept.
_DERIVATIVE_LIMITS = {"binance": (500, 1000), "binanceusdm": (500, 1000)}
_DEFAULT_DERIVATIVE_LIMITS = (100, 100)
# Exchanges that only serve recent open interest history (Binance: about the last 30 days, an
# older startTime is refused); requests are clipped to this horizon before ``now``.
_OI_HISTORY = {"binance": pd.Timedelta(days=29), "binanceusdm": pd.Timedelta(days=29)}
_OI_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
# How old a derivative value may be at a bar's close and still describe that bar.
_FUNDING_MAX_AGE_NS = _DAY_NS


# ----------------------------------------------------------------------------------------------
# exchanges
# ----------------------------------------------------------------------------------------------
def make_exchange(name: str, *, config: dict[str, Any] | None = None) -> ccxt.Exchange:
    """A synchronous ccxt client for exchange ``name``, with ccxt's rate limiter on.

    :param name: a ccxt exchange id such as ``"binance"`` (case-insensitive).
    :param config: extra ccxt constructor settings (``options``, ``timeout``, ``urls``...).
        Credentials are refused here: set ``RLTRADE_<EXCHANGE>_API_KEY`` and
        ``RLTRADE_<EXCHANGE>_SECRET`` (and ``_PASSWORD`` / ``_UID`` where the exchange needs
        them) in the environment instead. ``enableRateLimit`` is always ``True``.
    :returns: a ``ccxt.Exchange`` instance (markets not loaded yet).
    :raises ExchangeError: for an unknown exchange id or credentials passed in ``config``.
    """
    key = str(name).strip().lower()
    if key not in ccxt.exchanges:
        close = difflib.get_close_matches(key, ccxt.exchanges, n=4, cutoff=0.75)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        popular = ", ".join(e for e in _POPULAR if e in ccxt.exchanges)
        raise ExchangeError(
            f"unknown exchange {name!r}: {hint}valid ccxt ids include {popular} "
            f"({len(ccxt.exchanges)} in all, listed in ccxt.exchanges)"
        )
    env_prefix = f"RLTRADE_{re.sub(r'[^A-Z0-9]', '_', key.upper())}_"
    cfg = copy.deepcopy(config) if config else {}
    # keys that look like credentials, at any depth (headers.X-MBX-APIKEY, options.apiKey):
    # they would end up in logs and shell history; read from the environment instead
    secrets = credential_paths(cfg)
    if secrets:
        raise ExchangeError(
            f"credentials ({', '.join(secrets)}) must not be passed in the exchange config: set "
            f"{env_prefix}API_KEY and {env_prefix}SECRET (and _PASSWORD / _UID where needed) in "
            f"the environment instead"
        )
    if cfg.get("enableRateLimit") is False:
        log.warning("{}: enableRateLimit=False ignored; ccxt's rate limiter stays on", key)
    cfg["enableRateLimit"] = True
    found = []
    for suffix, field_name in _ENV_CREDENTIALS.items():
        value = os.environ.get(env_prefix + suffix)
        if value:
            cfg[field_name] = value
            found.append(env_prefix + suffix)
    exchange = getattr(ccxt, key)(cfg)
    log.debug(
        "ccxt {} client {} (credentials: {})", ccxt.__version__, key,
        ", ".join(found) if found else "none, public data only",
    )
    return exchange


# ----------------------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------------------
@dataclass
class DownloadResult:
    """What :func:`download_bars` did.

    ``requested`` lists the spans ``(start, end)`` asked from the exchange (empty when the store
    already had everything); ``pages`` counts OHLCV requests that got an answer (empty answers
    asked again and latest-bar probes included); ``bars_received`` counts the candles in those
    answers; ``bars_added`` / ``bars_replaced`` are the store's counts; ``retries`` counts failed
    requests that were retried (all endpoints); ``empty_retries`` counts empty answers asked
    again; ``derivatives`` names the columns added. ``incomplete`` lists the ranges
    ``(start, end, bars)`` left unfetched (empty pages although the exchange has later bars):
    they are not recorded as covered, and the next run asks for them again.
    ``derivative_gaps`` holds one line per derivative column left NaN on some bars.
    """

    symbol: str
    timeframe: str
    requested: list[tuple[pd.Timestamp, pd.Timestamp]] = field(default_factory=list)
    pages: int = 0
    bars_received: int = 0
    bars_added: int = 0
    bars_replaced: int = 0
    retries: int = 0
    derivatives: list[str] = field(default_factory=list)
    exchange: str = ""
    derivative_pages: int = 0
    empty_retries: int = 0
    incomplete: list[tuple[pd.Timestamp, pd.Timestamp, int]] = field(default_factory=list)
    derivative_gaps: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every requested bar was fetched or proven absent."""
        return not self.incomplete

    @property
    def bars_missing(self) -> int:
        """Bars of the requested spans left unfetched (see ``incomplete``)."""
        return sum(n for _, _, n in self.incomplete)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        head = f"{self.exchange + ' ' if self.exchange else ''}{self.symbol} {self.timeframe}"
        if not self.requested:
            return f"{head}: up to date, nothing requested"
        first, last = self.requested[0][0], self.requested[-1][1]
        text = (
            f"{head}: {len(self.requested)} span(s) between {first} and {last}, "
            f"{self.pages} page(s), {self.bars_received} bar(s) received, "
            f"{self.bars_added} added, {self.bars_replaced} replaced, {self.retries} retr"
            f"{'y' if self.retries == 1 else 'ies'}"
        )
        if self.derivatives:
            text += f", derivatives: {', '.join(self.derivatives)}"
        if self.incomplete:
            ranges = ", ".join(f"{a} .. {b}" for a, b, _ in self.incomplete[:3])
            more = f" and {len(self.incomplete) - 3} more" if len(self.incomplete) > 3 else ""
            text += (
                f"; INCOMPLETE: {self.bars_missing} bar(s) not fetched ({ranges}{more}), "
                "not recorded as covered: run the download again"
            )
        return text


# ----------------------------------------------------------------------------------------------
# grid arithmetic
# ----------------------------------------------------------------------------------------------
@dataclass
class _Span:
    start_ns: int
    end_ns: int
    slots: np.ndarray  # expected open times (ns) in the span, sorted


def _ts(ns: int | None) -> str:
    if ns is None:
        return "-"
    return str(pd.Timestamp(int(ns), unit="ns", tz="UTC"))


def _grid(tf: Timeframe, lo: pd.Timestamp, hi: pd.Timestamp, now_ns: int) -> np.ndarray:
    """Open times (int64 ns) of the bars with ``lo <= open < hi`` that are closed at ``now``."""
    if hi <= lo:
        return np.empty(0, dtype=np.int64)
    first = tf.floor(pd.DatetimeIndex([lo]))
    if first[0] < lo:
        first = tf.close_times(first)
    if tf.is_calendar:
        opens = as_ns(pd.date_range(first[0], hi, freq=tf.pandas_freq, inclusive="left"))
    else:
        opens = np.arange(as_ns(first)[0], as_ns(pd.DatetimeIndex([hi]))[0], tf.nanos,
                          dtype=np.int64)
    return opens[tf.close_times_ns(opens) <= now_ns]


def _merge(intervals: list[tuple[int, int]]) -> np.ndarray:
    out: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in intervals):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def _covered(values: np.ndarray, intervals: list[tuple[int, int]]) -> np.ndarray:
    """Mask of ``values`` inside one of the ``[start, end)`` intervals."""
    iv = _merge(intervals)
    out = np.zeros(len(values), dtype=bool)
    if not len(iv) or not len(values):
        return out
    idx = np.searchsorted(iv[:, 0], values, side="right") - 1
    ok = idx >= 0
    out[ok] = values[ok] < iv[idx[ok], 1]
    return out


def _runs(tf: Timeframe, slots: np.ndarray, grid: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """Contiguous runs (in grid positions) of ``slots``: ``(start_ns, end_ns, run_slots)``."""
    if not len(slots):
        return []
    pos = np.searchsorted(grid, slots)
    breaks = np.flatnonzero(np.diff(pos) != 1) + 1
    out = []
    for run in np.split(np.arange(len(slots)), breaks):
        run_slots = slots[run]
        end = int(tf.close_times_ns(run_slots[-1:])[0])
        out.append((int(run_slots[0]), end, run_slots))
    return out


def _asof(closes: np.ndarray, stamps: np.ndarray, values: np.ndarray, max_age_ns: int
          ) -> np.ndarray:
    """For each close time, the last value stamped at or before it (NaN if none or too old)."""
    out = np.full(len(closes), np.nan)
    if not len(stamps):
        return out
    order = np.argsort(stamps, kind="stable")
    stamps, values = stamps[order], values[order]
    last = np.r_[stamps[1:] != stamps[:-1], True]  # duplicates: the later answer wins
    stamps, values = stamps[last], values[last]
    pos = np.searchsorted(stamps, closes, side="right") - 1
    ok = pos >= 0
    ok[ok] = (closes[ok] - stamps[pos[ok]]) <= max_age_ns
    out[ok] = values[pos[ok]]
    return out


def _frame(rows: list[list[Any]]) -> pd.DataFrame:
    """ccxt OHLCV rows -> rltrade layout; duplicates keep the last (latest) answer."""
    ts = np.fromiter((int(r[0]) for r in rows), dtype=np.int64, count=len(rows)) * NS_PER_MS
    values = np.array([[np.nan if v is None else v for v in r[1:6]] for r in rows],
                      dtype=np.float64).reshape(-1, 5)
    index = pd.DatetimeIndex(ts.astype("datetime64[ns]")).tz_localize("UTC")
    index.name = "timestamp"
    frame = pd.DataFrame(values, index=index, columns=list(OHLCV))
    frame = frame[~frame.index.duplicated(keep="last")]
    return frame.sort_index(kind="stable")


# ----------------------------------------------------------------------------------------------
# the downloader
# ----------------------------------------------------------------------------------------------
class _Downloader:
    def __init__(
        self,
        ex: ccxt.Exchange,
        symbol: str,
        tf: Timeframe,
        store: BarStore,
        *,
        now_ns: int,
        page_limit: int | None,
        max_retries: int,
        backoff: float,
        progress: Callable[[int, int], None] | None,
        result: DownloadResult,
        empty_retries: int = 3,
    ) -> None:
        self.ex = ex
        self.symbol = symbol
        self.tf = tf
        self.store = store
        self.now_ns = now_ns
        self.page_limit = page_limit
        self.max_retries = max_retries
        self.backoff = backoff
        self.empty_retries = empty_retries
        self.progress = progress
        self.result = result
        self.source = f"ccxt:{ex.id}"
        self.market: dict[str, Any] = {}
        self.open_interest = False
        self.funding = False
        self.grid = np.empty(0, dtype=np.int64)

    # -- requests ------------------------------------------------------------------------------
    def call(self, what: str, since_ms: int | None, fn: Callable[..., Any], *args: Any,
             **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with retries of transient failures."""
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except ccxt.OperationFailed as exc:
                since = _ts(since_ms * NS_PER_MS) if since_ms is not None else "-"
                detail = f"{type(exc).__name__}: {_short(exc)}"
                if attempt >= self.max_retries:
                    raise ExchangeError(
                        f"{self.ex.id}: {what} for {self.symbol} since {since} still failing "
                        f"after {attempt + 1} attempt(s) ({self.max_retries} retries): {detail}"
                    ) from exc
                delay = self.backoff * 2**attempt
                wait = self._retry_after(exc)
                if wait is not None:
                    if wait > _MAX_RETRY_AFTER_S:
                        raise ExchangeError(
                            f"{self.ex.id}: {what} for {self.symbol} since {since}: the exchange "
                            f"asks to wait {wait:.0f} s (rate-limit ban), giving up: {detail}"
                        ) from exc
                    delay = max(delay, wait)
                log.warning("{}: {} for {} since {} failed ({}); retry {}/{} in {:.3g} s",
                            self.ex.id, what, self.symbol, since, type(exc).__name__,
                            attempt + 1, self.max_retries, delay)
                time.sleep(delay)
                attempt += 1
                self.result.retries += 1
            except ccxt.BaseError as exc:
                since = _ts(since_ms * NS_PER_MS) if since_ms is not None else "-"
                raise ExchangeError(
                    f"{self.ex.id} refused {what} for {self.symbol} since {since}: "
                    f"{type(exc).__name__}: {_short(exc)}"
                ) from exc

    def _retry_after(self, exc: Exception) -> float | None:
        """Seconds the exchange asked to wait (``Retry-After``: seconds or an HTTP date)."""
        if not isinstance(exc, _RETRY_AFTER_ERRORS):
            return None
        headers = getattr(self.ex, "last_response_headers", None) or {}
        try:
            value = headers.get("Retry-After") or headers.get("retry-after")
        except AttributeError:
            return None
        return _retry_after_seconds(value)

    def fetch_nonempty(self, what: str, since_ms: int | None, fn: Callable[..., Any],
                       *args: Any, ohlcv: bool = True, **kwargs: Any) -> list[Any]:
        """:meth:`call`, asking again (with backoff) while the answer is an empty page.

        Returns the first non-empty answer, or ``[]`` after ``empty_retries`` more empty ones.
        Answers count in ``result.pages`` and ``result.bars_received`` (``ohlcv``), else in
        ``result.derivative_pages``.
        """
        for attempt in range(self.empty_retries + 1):
            page = self.call(what, since_ms, fn, *args, **kwargs) or []
            if not ohlcv:
                self.result.derivative_pages += 1
            else:
                self.result.pages += 1
                self.result.bars_received += len(page)
            if page or attempt == self.empty_retries:
                return list(page)
            delay = self.backoff * 2**attempt
            log.debug("{}: {} for {} since {} answered an empty page; asking again in {:.3g} s",
                      self.ex.id, what, self.symbol,
                      _ts(since_ms * NS_PER_MS) if since_ms is not None else "-", delay)
            time.sleep(delay)
            self.result.empty_retries += 1
        return []

    # -- setup ---------------------------------------------------------------------------------
    def prepare(self, with_derivatives: bool) -> None:
        ex = self.ex
        if not ex.has.get("fetchOHLCV"):
            raise ExchangeError(f"{ex.id} does not serve candles (fetchOHLCV) through ccxt")
        if ex.timeframes and self.tf.name not in ex.timeframes:
            offered = ", ".join(sorted(ex.timeframes, key=lambda t: parse_timeframe(t).seconds))
            raise ExchangeError(f"{ex.id} has no {self.tf.name} candles; it offers {offered}")
        self.call("load_markets", None, ex.load_markets)
        try:
            self.market = ex.market(self.symbol)
        except ccxt.BaseError as exc:
            close = difflib.get_close_matches(self.symbol, list(ex.symbols or []), n=5)
            hint = f" close matches: {', '.join(close)};" if close else ""
            raise ExchangeError(
                f"{ex.id} has no market {self.symbol!r}:{hint} spot markets look like BTC/USDT, "
                "perpetual swaps like BTC/USDT:USDT"
            ) from exc
        if with_derivatives:
            self._check_derivatives()

    def _check_derivatives(self) -> None:
        ex, market = self.ex, self.market
        if not market.get("contract"):
            log.warning("{}: {} is a spot market; open interest and funding rates exist for "
                        "contracts (e.g. BTC/USDT:USDT): downloading bars only",
                        ex.id, self.symbol)
            return
        self.open_interest = bool(ex.has.get("fetchOpenInterestHistory"))
        if not self.open_interest:
            log.warning("{} has no open interest history (fetchOpenInterestHistory); "
                        "no open_interest column", ex.id)
        self.funding = bool(ex.has.get("fetchFundingRateHistory")) and bool(market.get("swap"))
        if not self.funding:
            log.warning("{} has no funding rate history for {} (fetchFundingRateHistory); "
                        "no funding_rate column", ex.id, self.symbol)

    def limit(self) -> int:
        if self.page_limit is not None:
            return self.page_limit
        try:
            value = self.ex.feature_value(self.symbol, "fetchOHLCV", "limit")
        except Exception:
            value = None
        return int(value) if value else 500

    # -- bars ----------------------------------------------------------------------------------
    def download_span(self, span: _Span, done_before: int, total: int) -> None:
        tf, limit = self.tf, self.limit()
        since = self.first_listed(span)
        chunk_start = span.start_ns
        rows: list[list[Any]] = []
        empty_windows = 0
        log.info("{}: {} {} {} .. {} ({} bar(s) missing)", self.ex.id, self.symbol, tf.name,
                 _ts(span.start_ns), _ts(span.end_ns), len(span.slots))
        try:
            while since < span.end_ns:
                left = len(span.slots) - int(np.searchsorted(span.slots, since))
                asked = max(1, min(limit, left + 1))
                since_ms = since // NS_PER_MS
                page = self.fetch_nonempty(
                    "fetch_ohlcv", since_ms, self.ex.fetch_ohlcv, self.symbol, tf.name,
                    since=since_ms, limit=asked,
                )
                if not page:
                    if self.history_ends_before(since):
                        since = span.end_ns  # proven: the exchange has nothing from `since` on
                        break
                    # A hiccup: skip one page width, which stays uncovered for the next run.
                    self.flush(rows, chunk_start, since, span)
                    rows = []
                    empty_windows += 1
                    skip_to = (span.end_ns if empty_windows >= _MAX_EMPTY_WINDOWS
                               else self.slot_after(span, since, limit))
                    self.leave_unfetched(span, since, skip_to, "empty pages although the "
                                         "exchange has later bars")
                    since = chunk_start = skip_to
                    continue
                empty_windows = 0
                opens = np.fromiter((int(r[0]) for r in page), dtype=np.int64,
                                    count=len(page)) * NS_PER_MS
                # Rows repeated from before `since` are kept too: the later answer wins.
                keep = (opens >= chunk_start) & (opens < span.end_ns)
                rows.extend(r for r, k in zip(page, keep, strict=True) if k)
                if (opens >= span.end_ns).any():
                    since = span.end_ns  # a bar past the span: nothing else is left in it
                    break
                new = opens[keep & (opens >= since)]
                if not len(new):
                    log.warning("{}: page for {} since {} made no progress; stopping this span",
                                self.ex.id, self.symbol, _ts(since))
                    self.flush(rows, chunk_start, since, span)
                    rows, chunk_start = [], since
                    self.leave_unfetched(span, since, span.end_ns, "a page made no progress")
                    break
                # A short page (fewer bars than asked) is no end: go on after its last bar.
                since = int(tf.close_times_ns(new.max(keepdims=True))[0])
                if self.progress is not None:
                    done = int(np.searchsorted(span.slots, min(since, span.end_ns)))
                    self.progress(done_before + done, total)
                if len(rows) >= _FLUSH_BARS and since < span.end_ns:
                    self.flush(rows, chunk_start, since, span)
                    rows, chunk_start = [], since
        except ExchangeError:
            if rows:  # keep what was received; the next run asks only for the rest
                try:
                    self.flush(rows, chunk_start, since, span)
                except DataError as exc:
                    log.warning("{}: could not keep the partial download: {}", self.ex.id, exc)
            raise
        self.flush(rows, chunk_start, min(since, span.end_ns), span)

    def first_listed(self, span: _Span) -> int:
        """Where to start asking: the span's start, or the market's creation if later.

        The slots before ``market["created"]`` (when the exchange states one) are recorded as
        covered: the exchange itself says there is nothing there.
        """
        created = self.market.get("created") if self.market else None
        if not isinstance(created, int | float) or created <= 0:
            return span.start_ns
        created_ns = int(created) * NS_PER_MS
        first = int(span.slots[np.searchsorted(span.slots, created_ns)]) if (
            created_ns <= span.slots[-1]) else span.end_ns
        if first > span.start_ns:
            self.flush([], span.start_ns, first, span)
            log.debug("{}: {} was created at {}; nothing asked before it", self.ex.id,
                      self.symbol, _ts(created_ns))
        return max(first, span.start_ns)

    def history_ends_before(self, since: int) -> bool:
        """Whether the exchange's latest bar opens before ``since`` (an end of history).

        Only a latest bar that closed long ago (``_HISTORY_END_AGE`` bars, at least a day,
        before ``now``) proves it: an exchange that is merely late with its newest bars is not
        taken for a delisted market.
        """
        latest = self.call("fetch_ohlcv (latest bar)", None, self.ex.fetch_ohlcv, self.symbol,
                           self.tf.name, limit=1) or []
        self.result.pages += 1
        self.result.bars_received += len(latest)
        if not latest:
            return False
        last_open = max(int(r[0]) for r in latest) * NS_PER_MS
        last_close = int(self.tf.close_times_ns(np.array([last_open], dtype=np.int64))[0])
        stale = self.now_ns - last_close >= max(_HISTORY_END_AGE * self.tf.nanos, _DAY_NS)
        if last_open < since and stale:
            log.info("{}: the latest {} {} bar opens at {}: nothing after it, recorded as "
                     "covered", self.ex.id, self.symbol, self.tf.name, _ts(last_open))
            return True
        return False

    @staticmethod
    def slot_after(span: _Span, since: int, width: int) -> int:
        """The slot ``width`` bars after ``since`` in ``span`` (its end when past it)."""
        pos = int(np.searchsorted(span.slots, since)) + width
        return int(span.slots[pos]) if pos < len(span.slots) else span.end_ns

    def leave_unfetched(self, span: _Span, lo: int, hi: int, why: str) -> None:
        """Record ``[lo, hi)`` as not fetched (never covered), with a warning saying ``why``."""
        n = int(np.sum((span.slots >= lo) & (span.slots < hi)))
        if not n:
            return
        start = pd.Timestamp(lo, unit="ns", tz="UTC")
        end = pd.Timestamp(hi, unit="ns", tz="UTC")
        self.result.incomplete.append((start, end, n))
        log.warning(
            "{}: {} {}: {} from {}; {} bar(s) up to {} not fetched and not recorded as "
            "covered: run the download again",
            self.ex.id, self.symbol, self.tf.name, why, start, n, end,
        )

    def flush(self, rows: list[list[Any]], lo: int, hi: int, span: _Span) -> None:
        """Validate and write the bars of ``[lo, hi)``, then cover its slots without bars."""
        if hi <= lo:
            return
        frame = _frame(rows) if rows else None
        if frame is not None:
            ns = as_ns(frame.index)
            closes = self.tf.close_times_ns(ns)
            frame = frame[(ns >= lo) & (ns < hi) & (closes <= self.now_ns)]
            if not len(frame):
                frame = None
        if frame is not None:
            try:
                validate_bars(frame, self.tf, policy="strict",
                              source=f"{self.ex.id} {self.symbol} {self.tf.name}")
            except ValidationError as exc:
                report = exc.report.summary() if exc.report is not None else str(exc)
                raise DataError(
                    f"{self.ex.id} sent invalid bars for {self.symbol} {self.tf.name} between "
                    f"{_ts(lo)} and {_ts(hi)}; nothing of that stretch was stored:\n{report}"
                ) from exc
            misaligned = ~np.isin(as_ns(frame.index), self.grid)
            if misaligned.any():
                log.warning("{}: {} bar(s) of {} {} are not on rltrade's {} grid, e.g. {}",
                            self.ex.id, int(misaligned.sum()), self.symbol, self.tf.name,
                            self.tf.name, frame.index[misaligned][0])
            if self.open_interest or self.funding:
                frame = self.add_derivatives(frame)
            stats = self.store.write(self.symbol, self.tf, frame, source=self.source)
            self.result.bars_added += stats["added"]
            self.result.bars_replaced += stats["replaced"]
            got = as_ns(frame.index)
        else:
            got = np.empty(0, dtype=np.int64)
        slots = span.slots[(span.slots >= lo) & (span.slots < hi)]
        empty = slots[~np.isin(slots, got)]
        for start, end, _ in _runs(self.tf, empty, self.grid):
            self.store.add_coverage(self.symbol, self.tf, start, end)
        if len(empty):
            log.debug("{}: {} {} slot(s) without bars on the exchange recorded as covered",
                      self.ex.id, self.symbol, len(empty))

    # -- derivatives ---------------------------------------------------------------------------
    def add_derivatives(self, frame: pd.DataFrame) -> pd.DataFrame:
        closes = self.tf.close_times_ns(as_ns(frame.index))
        frame = frame.copy()
        if self.open_interest:
            period = self._oi_period()
            max_age = 2 * parse_timeframe(period).nanos
            stamps, values = self._open_interest(period, int(closes[0]) - max_age,
                                                 int(closes[-1]))
            frame["open_interest"] = _asof(closes, stamps, values, max_age)
        if self.funding:
            stamps, values = self._funding(int(closes[0]) - _FUNDING_MAX_AGE_NS, int(closes[-1]))
            frame["funding_rate"] = _asof(closes, stamps, values, _FUNDING_MAX_AGE_NS)
        self.warn_derivative_gaps(frame, closes)
        for col in ("open_interest", "funding_rate"):
            if col in frame.columns and col not in self.result.derivatives:
                self.result.derivatives.append(col)
        return frame

    def _oi_first_ns(self) -> int:
        """First time the exchange serves open interest for (0: no limit known)."""
        horizon = _OI_HISTORY.get(self.ex.id)
        return 0 if horizon is None else self.now_ns - horizon.value

    def warn_derivative_gaps(self, frame: pd.DataFrame, closes: np.ndarray) -> None:
        """Name each derivative column left NaN on some bars, with the range of those bars.

        Open interest older than the exchange's history horizon is already reported where the
        requests are clipped, and not again here.
        """
        for col in ("open_interest", "funding_rate"):
            if col not in frame.columns:
                continue
            missing = np.isnan(frame[col].to_numpy())
            if col == "open_interest":
                missing &= closes >= self._oi_first_ns()
            if not missing.any():
                continue
            where = frame.index[missing]
            line = (f"{self.ex.id} {self.symbol} {self.tf.name}: {col} has no value for "
                    f"{int(missing.sum())} of {len(frame)} bar(s) between {where[0]} and "
                    f"{where[-1]} (the exchange sent none recent enough); left NaN")
            self.result.derivative_gaps.append(line)
            log.warning(line)

    def _oi_period(self) -> str:
        fitting = [p for p in _OI_PERIODS if parse_timeframe(p).seconds <= self.tf.seconds]
        return fitting[-1] if fitting else _OI_PERIODS[0]

    def _limits(self) -> tuple[int, int]:
        return _DERIVATIVE_LIMITS.get(self.ex.id, _DEFAULT_DERIVATIVE_LIMITS)

    def _open_interest(self, period: str, lo_ns: int, hi_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Open interest (base amount) stamped in ``[lo_ns, hi_ns]``, in windows of one page."""
        first = self._oi_first_ns()
        if lo_ns < first:
            horizon = _OI_HISTORY[self.ex.id]
            log.warning("{} keeps about {} days of open interest history: bars before {} "
                        "get no open_interest", self.ex.id, horizon.days + 1, _ts(first))
            lo_ns = first
        limit = self._limits()[0]
        step_ms = parse_timeframe(period).nanos // NS_PER_MS
        since_ms, hi_ms = -(-lo_ns // NS_PER_MS), hi_ns // NS_PER_MS
        stamps: list[int] = []
        values: list[float] = []
        while since_ms <= hi_ms:
            until_ms = min(since_ms + limit * step_ms - 1, hi_ms)
            page = self.call(
                "fetch_open_interest_history", since_ms, self.ex.fetch_open_interest_history,
                self.symbol, period, since=since_ms, limit=limit, params={"until": until_ms},
            )
            self.result.derivative_pages += 1
            for item in page or []:
                ts, amount = item.get("timestamp"), item.get("openInterestAmount")
                if ts is not None and since_ms <= ts <= until_ms:
                    stamps.append(int(ts))
                    values.append(np.nan if amount is None else float(amount))
            since_ms = until_ms + 1
        return np.asarray(stamps, dtype=np.int64) * NS_PER_MS, np.asarray(values, dtype=float)

    def _funding(self, lo_ns: int, hi_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Funding rates stamped in ``[lo_ns, hi_ns]``; pages until a short or empty one."""
        limit = self._limits()[1]
        since_ms, hi_ms = -(-lo_ns // NS_PER_MS), hi_ns // NS_PER_MS
        stamps: list[int] = []
        values: list[float] = []
        while since_ms <= hi_ms:
            page = self.fetch_nonempty(
                "fetch_funding_rate_history", since_ms, self.ex.fetch_funding_rate_history,
                self.symbol, since=since_ms, limit=limit, params={"until": hi_ms}, ohlcv=False,
            )
            got = [(int(i["timestamp"]), i.get("fundingRate")) for i in page or []
                   if i.get("timestamp") is not None and since_ms <= i["timestamp"] <= hi_ms]
            for ts, rate in got:
                stamps.append(ts)
                values.append(np.nan if rate is None else float(rate))
            if not got or len(page) < limit:
                break
            since_ms = max(ts for ts, _ in got) + 1
        return np.asarray(stamps, dtype=np.int64) * NS_PER_MS, np.asarray(values, dtype=float)


def _retry_after_seconds(value: Any) -> float | None:
    """A ``Retry-After`` header value in seconds: a number, or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def _short(exc: BaseException, width: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= width else text[: width - 3] + "..."


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------
def download_bars(
    exchange: str | ccxt.Exchange,
    symbol: str,
    timeframe: str,
    start: str | pd.Timestamp,
    end: str | pd.Timestamp | None,
    store: BarStore,
    *,
    with_derivatives: bool = False,
    page_limit: int | None = None,
    max_retries: int = 5,
    backoff: float = 1.0,
    empty_retries: int = 3,
    progress: Callable[[int, int], None] | None = None,
    now: pd.Timestamp | str | None = None,
) -> DownloadResult:
    """Download the bars of ``[start, end)`` that ``store`` lacks, and store them.

    :param exchange: a ccxt exchange id (built with :func:`make_exchange`) or a ccxt client.
    :param symbol: unified ccxt market symbol, e.g. ``"BTC/USDT"`` (spot) or
        ``"BTC/USDT:USDT"`` (USD-M perpetual swap).
    :param timeframe: bar timeframe, e.g. ``"1h"``; must be one the exchange serves.
    :param start: first bar open time (inclusive), UTC; naive times are UTC.
    :param end: last bar open time bound (exclusive), UTC; ``None`` means ``now``.
    :param store: the :class:`BarStore` to complete.
    :param with_derivatives: also fetch open interest and funding rates (contract markets) and
        store them as columns ``open_interest`` / ``funding_rate`` of the downloaded bars, as of
        each bar's close (the last value stamped at or before it; open interest older than
        two periods of the history used, or a funding rate older than a day, is left NaN).
        Only the bars this call downloads get them. Binance serves only about 30 days of open
        interest history: older bars get NaN ``open_interest``.
    :param page_limit: candles per request; default: the exchange's own maximum from ccxt's
        feature table (Binance spot: 1000), else 500.
    :param max_retries: retries of a failing request (network errors, rate limits, 5xx) before
        giving up with :class:`ExchangeError`.
    :param backoff: first retry delay in seconds; the k-th retry waits ``backoff * 2**k``.
    :param empty_retries: times an empty page inside the range is asked again (with the same
        backoff) before it is checked against the exchange's latest bar: an end of history is
        recorded as covered, anything else is left for the next run and listed in
        ``result.incomplete`` with a warning.
    :param progress: called as ``progress(bars_done, bars_total)`` over the missing bars.
    :param now: the current time (default: the clock); bars not closed by then are never
        stored and never marked as covered.
    :returns: a :class:`DownloadResult`; ``result.complete`` is false when some bars could not be
        fetched (see ``result.incomplete``).
    :raises ExchangeError: unknown exchange or symbol, refused request, retries exhausted.
    :raises DataError: bad arguments, or the exchange sent bars that fail validation.
    """
    tf = parse_timeframe(timeframe)
    try:
        now_ts = pd.Timestamp.now(tz="UTC") if now is None else to_utc(now)
        lo = to_utc(start)
        hi = now_ts if end is None else to_utc(end)
    except (TypeError, ValueError) as exc:
        raise DataError(f"download: cannot read start/end/now as times ({exc})") from exc
    if hi <= lo:
        raise DataError(f"download: start {lo} must be before end {hi}")
    if page_limit is not None and page_limit <= 0:
        raise DataError(f"download: page_limit must be positive, got {page_limit}")
    if max_retries < 0:
        raise DataError(f"download: max_retries must be >= 0, got {max_retries}")
    if empty_retries < 0:
        raise DataError(f"download: empty_retries must be >= 0, got {empty_retries}")

    ex = make_exchange(exchange) if isinstance(exchange, str) else exchange
    now_ns = int(as_ns(pd.DatetimeIndex([now_ts]))[0])
    result = DownloadResult(symbol=symbol, timeframe=tf.name, exchange=ex.id)
    run = _Downloader(ex, symbol, tf, store, now_ns=now_ns, page_limit=page_limit,
                      max_retries=max_retries, backoff=backoff, progress=progress, result=result,
                      empty_retries=empty_retries)
    run.prepare(with_derivatives)

    grid = _grid(tf, lo, min(hi, now_ts), now_ns)
    run.grid = grid
    missing = np.ones(len(grid), dtype=bool)
    if len(grid) and store.has(symbol, tf):
        stored = store.read(symbol, tf, lo, hi)
        missing &= ~np.isin(grid, as_ns(stored.index))
        if (run.open_interest or run.funding) and len(stored):
            lacking = [c for c in ("open_interest", "funding_rate") if c not in stored.columns]
            if lacking:
                log.warning("{} {}: {} stored bar(s) in the range have no {}; only bars "
                            "downloaded now get derivative columns", symbol, tf.name,
                            len(stored), ", ".join(lacking))
    missing &= ~_covered(grid, store.coverage(symbol, tf))
    spans = [_Span(a, b, s) for a, b, s in _runs(tf, grid[missing], grid)]
    total = int(missing.sum())
    if not spans:
        log.info("{}: {} {} {} .. {} already complete", ex.id, symbol, tf.name, lo, hi)
        return result

    done = 0
    for span in spans:
        result.requested.append((pd.Timestamp(span.start_ns, unit="ns", tz="UTC"),
                                 pd.Timestamp(span.end_ns, unit="ns", tz="UTC")))
        run.download_span(span, done, total)
        done += len(span.slots)
        if progress is not None:
            progress(done, total)
    if result.complete:
        log.info(result.summary())
    else:
        log.warning(result.summary())
    return result


__all__ = ["DownloadResult", "download_bars", "make_exchange"]
