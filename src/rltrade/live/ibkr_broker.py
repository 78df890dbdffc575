"""``IbkrBroker``: an Interactive Brokers **paper** account through ``ib_async``.

Safety by construction: the live ports (TWS 7496, IB Gateway 4001) are refused before
connecting, and so is any account that does not start with ``DU`` (IB's paper accounts);
nothing is sent before both checks pass (:class:`~rltrade.live.broker.LiveEndpointError`).

The client order id travels as the order's ``orderRef`` (IB's own order ids are per client
connection and restart at each session): before placing an order the adapter looks for its
``orderRef`` among the session's trades and executions (``IB.trades()``, ``IB.fills()``, which
``ib_async`` loads at connect: open and completed orders, the day's executions), so a restarted
trader never places it twice. Rejections arrive on ``errorEvent`` (by the order's id) and as the
``Inactive`` / ``Cancelled`` status; fills are ``IB.fills()`` of the account and contract
whose execution ids are not in the cursor (the ids already taken, kept by the trader in its
committed state: a restarted trader gets again exactly what it had not committed).

Methods of ``ib_async.IB`` used: ``connect``, ``isConnected``, ``managedAccounts``,
``placeOrder``, ``cancelOrder``, ``openTrades``, ``trades``, ``positions``, ``accountValues``,
``fills``; events ``errorEvent``, ``disconnectedEvent``.
"""

from __future__ import annotations

import json
from typing import Any

from loguru import logger

from rltrade.live.broker import BrokerError, BrokerOrder, Fill, LiveEndpointError, OrderRequest

__all__ = ["LIVE_PORTS", "IbkrBroker"]

log = logger.bind(component="live.broker")

#: TWS and IB Gateway's default live (real-money) ports: refused
LIVE_PORTS = (7496, 4001)
_DONE = {"Filled": "filled", "Cancelled": "cancelled", "ApiCancelled": "cancelled",
         "Inactive": "rejected"}


class IbkrBroker:
    """An IB paper account as a :class:`~rltrade.live.broker.Broker`.

    :param contract: the ``ib_async`` contract traded (``Forex("EURUSD")``, ``Stock(...)``).
    :param symbol: the name positions are reported under (default the contract's symbol; a
        currency pair's symbol and currency: ``EURUSD``).
    :param ib: a connected ``ib_async.IB`` (or a stand-in); ``None`` connects one to
        ``host:port`` with ``client_id``.
    :param account: the paper account (``DU...``; default the only managed account).
    :raises LiveEndpointError: a live port, or an account that is not a paper account.
    """

    name = "ibkr"

    def __init__(self, contract: Any, *, symbol: str | None = None, ib: Any = None,
                 host: str = "127.0.0.1", port: int = 7497, client_id: int = 17,
                 account: str | None = None) -> None:
        if ib is None:
            if int(port) in LIVE_PORTS:
                raise LiveEndpointError(
                    f"port {port} is a live (real-money) TWS / IB Gateway port; paper trading "
                    "uses the paper ports (TWS 7497, IB Gateway 4002)")
            from ib_async import IB

            ib = IB()
            ib.connect(host, int(port), clientId=int(client_id), account=account or "")
        self.ib = ib
        accounts = list(ib.managedAccounts())
        if account is None:
            if len(accounts) != 1:
                raise BrokerError(f"ibkr: {len(accounts)} managed accounts ({accounts}); name "
                                  "the paper account with --account DU...")
            account = accounts[0]
        if not str(account).startswith("DU"):
            raise LiveEndpointError(
                f"ibkr account {account} is not a paper account (IB paper accounts start with "
                "DU); paper trading refuses live accounts")
        if account not in accounts:
            raise BrokerError(f"ibkr: account {account} is not managed by this connection "
                              f"({accounts})")
        self.account = account
        self.contract = contract
        default = getattr(contract, "symbol", "") or "SYMBOL"
        if getattr(contract, "secType", "") == "CASH":  # Forex("EURUSD"): symbol EUR, USD
            default += getattr(contract, "currency", "")
        self.symbol = symbol or default
        self._errors: dict[int, str] = {}
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnect
        log.info("ibkr paper account {} ({})", account, self.symbol)

    # ---------------------------------------------------------------------------- events
    def _on_error(self, req_id: int, code: int, message: str, *args: Any) -> None:
        if req_id and req_id > 0:
            self._errors[int(req_id)] = f"{code}: {message}"
        log.warning("ibkr error {} (request {}): {}", code, req_id, message)

    def _on_disconnect(self) -> None:
        log.error("ibkr: disconnected from TWS / IB Gateway")

    def _check_connected(self) -> None:
        if not self.ib.isConnected():
            raise BrokerError("ibkr: not connected to TWS / IB Gateway (reconnect, then resume "
                              "the session: it reconciles before deciding)")

    # ---------------------------------------------------------------------------- helpers
    def _mine(self, contract: Any) -> bool:
        mine = self.contract
        if getattr(mine, "conId", 0) and getattr(contract, "conId", 0):
            return bool(contract.conId == mine.conId)
        return (getattr(contract, "symbol", None) == getattr(mine, "symbol", None)
                and getattr(contract, "secType", None) == getattr(mine, "secType", None))

    def _view(self, trade: Any) -> BrokerOrder:
        order, status = trade.order, trade.orderStatus
        sign = 1.0 if order.action == "BUY" else -1.0
        state = _DONE.get(status.status, "open")
        reason = self._errors.get(int(order.orderId), "") if state != "filled" else ""
        return BrokerOrder(order.orderRef, sign * float(order.totalQuantity),
                           filled=sign * float(status.filled), status=state,
                           broker_id=str(order.orderId), reason=reason,
                           avg_price=float(status.avgFillPrice) or None)

    def _find(self, client_id: str) -> Any:
        for trade in self.ib.trades():
            if trade.order.orderRef == client_id:
                return trade
        return None

    # ---------------------------------------------------------------------------- Broker
    def submit(self, order: OrderRequest) -> BrokerOrder:
        from ib_async import MarketOrder

        self._check_connected()
        known = self._find(order.client_id)
        if known is not None:
            return self._view(known)
        if any(f.execution.orderRef == order.client_id for f in self.ib.fills()):
            return BrokerOrder(order.client_id, order.qty, filled=order.qty, status="filled")
        ib_order = MarketOrder("BUY" if order.qty > 0 else "SELL", abs(float(order.qty)),
                               orderRef=order.client_id, account=self.account, tif="DAY")
        trade = self.ib.placeOrder(self.contract, ib_order)
        return self._view(trade)

    def cancel(self, client_id: str) -> bool:
        self._check_connected()
        trade = self._find(client_id)
        if trade is None or _DONE.get(trade.orderStatus.status):
            return False
        self.ib.cancelOrder(trade.order)
        return True

    def open_orders(self) -> list[BrokerOrder]:
        return [self._view(t) for t in self.ib.openTrades()
                if t.order.account in ("", self.account) and self._mine(t.contract)]

    def order(self, client_id: str) -> BrokerOrder | None:
        trade = self._find(client_id)
        return None if trade is None else self._view(trade)

    def positions(self) -> dict[str, float]:
        total = sum(float(p.position) for p in self.ib.positions(self.account)
                    if self._mine(p.contract))
        return {self.symbol: total} if total else {}

    def balance(self) -> float:
        for value in self.ib.accountValues(self.account):
            if value.tag == "TotalCashValue" and value.currency not in ("", "BASE"):
                return float(value.value)
        for value in self.ib.accountValues(self.account):
            if value.tag in ("TotalCashValue", "CashBalance"):
                return float(value.value)
        raise BrokerError(f"ibkr: no cash value for account {self.account}")

    def fills_since(self, cursor: str | None) -> tuple[list[Fill], str | None]:
        taken: list[str] = json.loads(cursor) if cursor else []
        seen = set(taken)
        out: list[Fill] = []
        for f in self.ib.fills():
            ex = f.execution
            if ex.acctNumber not in ("", self.account) or not self._mine(f.contract):
                continue
            if ex.execId in seen:
                continue
            seen.add(ex.execId)
            taken.append(ex.execId)
            sign = 1.0 if ex.side == "BOT" else -1.0
            fee = float(f.commissionReport.commission) if f.commissionReport else 0.0
            out.append(Fill(fill_id=ex.execId, client_id=ex.orderRef, qty=sign * float(ex.shares),
                            price=float(ex.price), fee=fee,
                            time=int(f.time.timestamp() * 1e9) if f.time else 0))
        return out, json.dumps(taken)
