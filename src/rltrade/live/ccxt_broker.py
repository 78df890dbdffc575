"""``CcxtBroker``: an exchange's **sandbox / testnet** through ccxt (spot market orders).

Safety by construction:

* the client is switched to the exchange's sandbox (``set_sandbox_mode(True)``) before anything
  else; an exchange without one is refused, and so is a client whose URLs after the switch are
  still any of the exchange's live URLs (:class:`~rltrade.live.broker.LiveEndpointError`);
* keys come from the environment only (``RLTRADE_<EXCHANGE>_API_KEY`` / ``_SECRET``, read by
  :func:`rltrade.data.exchange.make_exchange`, which refuses credentials in a config).

Consistency through a flaky venue: every order carries its deterministic client order id. When
a request fails without an answer (a disconnect, a timeout, a reply lost after the exchange
placed the order, a restart in the middle of a submit), the adapter asks the exchange for the
client id before sending again, and a "duplicate order" refusal is answered the same way: an
order is placed at most once. Network errors are retried (``retries``); a refusal (insufficient
balance, a bad order) is an order with status ``rejected``. Fills are the exchange's trades
after a cursor (the last trade id seen), which the trader keeps in its committed state: a
restarted trader asks again from its last commit and gets the same fills, none twice.

A spot *position* is the base asset's balance minus the balance when the session started
(``baseline``; kept in ``state_path``, the session's ``broker_ccxt.json``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from loguru import logger

from rltrade.data.store import atomic_write_json
from rltrade.live.broker import BrokerError, BrokerOrder, Fill, LiveEndpointError, OrderRequest

__all__ = ["CcxtBroker"]

log = logger.bind(component="live.broker")

_STATUS = {"open": "open", "closed": "filled", "canceled": "cancelled", "cancelled": "cancelled",
           "expired": "cancelled", "rejected": "rejected"}


def _live_urls(exchange_id: str) -> set[str]:
    """Every URL string in the exchange's default (live) ``urls['api']``."""
    import ccxt

    out: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, str):
            out.add(v.rstrip("/"))
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(getattr(ccxt, exchange_id)().urls.get("api"))
    return out


class CcxtBroker:
    """A ccxt exchange's sandbox as a :class:`~rltrade.live.broker.Broker`.

    :param exchange_id: the ccxt id (``binance``...).
    :param symbol: the ccxt symbol (``BTC/USDT``).
    :param config: extra ccxt settings (no credentials: those come from the environment).
    :param state_path: where the baseline and the fill cursor are kept between restarts.
    :param retries: attempts for a request that fails on the network.
    :param retry_wait: seconds between attempts.
    :raises LiveEndpointError: no sandbox, or live URLs after the switch.
    """

    name = "ccxt"

    def __init__(self, exchange_id: str, symbol: str, *, config: dict[str, Any] | None = None,
                 state_path: str | Path | None = None, retries: int = 4,
                 retry_wait: float = 0.05) -> None:
        import ccxt

        from rltrade.data.exchange import make_exchange

        self.ccxt = ccxt
        self.exchange_id = exchange_id.strip().lower()
        self.symbol = symbol
        self.retries = max(1, int(retries))
        self.retry_wait = float(retry_wait)
        ex = make_exchange(self.exchange_id, config=config)
        try:
            if not ex.urls.get("test"):
                raise ccxt.NotSupported(f"{self.exchange_id} does not have a sandbox URL")
            ex.set_sandbox_mode(True)
        except ccxt.NotSupported as exc:
            raise LiveEndpointError(
                f"{self.exchange_id} has no sandbox / testnet in ccxt: paper trading refuses "
                "live (real-money) endpoints; use an exchange with a testnet (binance, bybit, "
                "okx...) or --broker sim") from exc
        live = _live_urls(self.exchange_id)
        now: set[str] = set()
        for v in (ex.urls.get("api") or {}).values() if isinstance(ex.urls.get("api"), dict) \
                else [ex.urls.get("api")]:
            if isinstance(v, str):
                now.add(v.rstrip("/"))
        if now & live:
            raise LiveEndpointError(
                f"{self.exchange_id}: after switching to the sandbox the client still points at "
                f"live endpoints ({', '.join(sorted(now & live))}); refused")
        self.exchange = ex
        self._state_path = Path(state_path) if state_path is not None else None
        self._orders: dict[str, BrokerOrder] = {}
        saved = self._load()
        self._call(ex.load_markets)
        market = ex.market(symbol)
        self.base, self.quote = market["base"], market["quote"]
        self.baseline = (float(saved["baseline"]) if "baseline" in saved
                         else self._base_balance())
        self._save()
        log.info("ccxt sandbox {} {}: baseline {} {:g}", self.exchange_id, symbol, self.base,
                 self.baseline)

    # ---------------------------------------------------------------------------- plumbing
    def _load(self) -> dict[str, Any]:
        if self._state_path is None or not self._state_path.exists():
            return {}
        return json.loads(self._state_path.read_text())

    def _save(self) -> None:
        if self._state_path is None:
            return
        atomic_write_json(self._state_path, {"baseline": self.baseline})

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with retries on network errors."""
        err: Exception | None = None
        for attempt in range(self.retries):
            try:
                return fn(*args, **kwargs)
            except self.ccxt.NetworkError as exc:  # timeouts, disconnects, 5xx
                err = exc
                log.warning("{}: {} (attempt {}/{})", self.exchange_id, type(exc).__name__,
                            attempt + 1, self.retries)
                time.sleep(self.retry_wait)
        raise BrokerError(f"{self.exchange_id}: no answer after {self.retries} attempts: "
                          f"{type(err).__name__}: {str(err)[:200]}")

    def _base_balance(self) -> float:
        bal = self._call(self.exchange.fetch_balance)
        return float((bal.get(self.base) or {}).get("total") or 0.0)

    def _from_ccxt(self, o: dict[str, Any], client_id: str) -> BrokerOrder:
        side = 1.0 if o.get("side") == "buy" else -1.0
        status = _STATUS.get(str(o.get("status")), "open")
        return BrokerOrder(client_id, side * float(o.get("amount") or 0.0),
                           filled=side * float(o.get("filled") or 0.0), status=status,
                           broker_id=str(o.get("id") or ""),
                           avg_price=float(o["average"]) if o.get("average") else None)

    def _lookup(self, client_id: str) -> BrokerOrder | None:
        try:
            o = self._call(self.exchange.fetch_order, None, self.symbol,
                           {"origClientOrderId": client_id})
        except self.ccxt.OrderNotFound:
            return None
        order = self._from_ccxt(o, client_id)
        self._orders[client_id] = order
        return order

    # ---------------------------------------------------------------------------- Broker
    def submit(self, order: OrderRequest) -> BrokerOrder:
        cid = order.client_id
        known = self._orders.get(cid) or self._lookup(cid)
        if known is not None:
            return known
        side = "buy" if order.qty > 0 else "sell"
        amount = float(self.exchange.amount_to_precision(self.symbol, abs(order.qty)))
        for _ in range(self.retries):
            try:
                o = self.exchange.create_order(self.symbol, "market", side, amount, None,
                                               {"newClientOrderId": cid})
            except self.ccxt.NetworkError as exc:
                # no answer: placed or not? ask before sending again
                log.warning("{}: submit {}: {}; asking the exchange", self.exchange_id, cid,
                            type(exc).__name__)
                time.sleep(self.retry_wait)
                found = self._lookup(cid)
                if found is not None:
                    return found
                continue
            except self.ccxt.InvalidOrder as exc:
                if "duplicate" in str(exc).lower():
                    found = self._lookup(cid)
                    if found is not None:
                        return found
                rejected = BrokerOrder(cid, order.qty, status="rejected",
                                       reason=str(exc)[:200])
                self._orders[cid] = rejected
                return rejected
            except self.ccxt.InsufficientFunds as exc:
                rejected = BrokerOrder(cid, order.qty, status="rejected",
                                       reason=f"insufficient funds: {str(exc)[:160]}")
                self._orders[cid] = rejected
                return rejected
            placed = self._from_ccxt(o, cid)
            self._orders[cid] = placed
            return placed
        raise BrokerError(f"{self.exchange_id}: order {cid} could not be placed after "
                          f"{self.retries} attempts")

    def cancel(self, client_id: str) -> bool:
        try:
            self._call(self.exchange.cancel_order, None, self.symbol,
                       {"origClientOrderId": client_id})
        except self.ccxt.OrderNotFound:
            return False
        if client_id in self._orders:
            self._orders[client_id].status = "cancelled"
        return True

    def open_orders(self) -> list[BrokerOrder]:
        rows = self._call(self.exchange.fetch_open_orders, self.symbol)
        out = []
        for o in rows:
            cid = str(o.get("clientOrderId") or o.get("id"))
            order = self._from_ccxt(o, cid)
            self._orders[cid] = order
            out.append(order)
        return out

    def order(self, client_id: str) -> BrokerOrder | None:
        return self._lookup(client_id)

    def positions(self) -> dict[str, float]:
        pos = self._base_balance() - self.baseline
        return {self.symbol: pos} if abs(pos) > 1e-12 else {}

    def balance(self) -> float:
        bal = self._call(self.exchange.fetch_balance)
        return float((bal.get(self.quote) or {}).get("total") or 0.0)

    def fills_since(self, cursor: str | None) -> tuple[list[Fill], str | None]:
        params = {"fromId": int(cursor) + 1} if cursor is not None else {}
        rows = self._call(self.exchange.fetch_my_trades, self.symbol, None, None, params)
        fills: list[Fill] = []
        last = cursor
        ids = {o.broker_id: c for c, o in self._orders.items()}
        done: set[str] = set()
        for t in rows:
            tid = str(t["id"])
            if tid in done or (cursor is not None and int(tid) <= int(cursor)):
                continue
            done.add(tid)
            last = tid if last is None or int(tid) > int(last) else last
            oid = str(t.get("order"))
            if oid not in ids:  # an order this process has not seen (placed before a restart)
                o = self._call(self.exchange.fetch_order, oid, self.symbol)
                ids[oid] = str(o.get("clientOrderId") or "")
            cid = ids[oid]
            sign = 1.0 if t.get("side") == "buy" else -1.0
            fee = float((t.get("fee") or {}).get("cost") or 0.0)
            fills.append(Fill(fill_id=tid, client_id=cid, qty=sign * float(t["amount"]),
                              price=float(t["price"]), fee=fee,
                              time=int(t.get("timestamp") or 0) * 1_000_000))
        return fills, last
