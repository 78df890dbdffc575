"""The IBKR adapter against a stand-in for ``ib_async.IB`` (its documented methods and events,
with ib_async's own order, trade, fill and position objects): paper accounts only, orders by
``orderRef`` (never placed twice, also after a restart), rejections, fills, positions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from eventkit import Event
from ib_async import (
    AccountValue,
    CommissionReport,
    Execution,
    Fill,
    Forex,
    OrderStatus,
    Position,
    Trade,
)

from rltrade.live import BrokerError, LiveEndpointError, OrderRequest
from rltrade.live.ibkr_broker import IbkrBroker


class Account:
    """What TWS keeps between connections: orders, executions, positions, cash."""

    def __init__(self, name: str = "DU1234567") -> None:
        self.name = name
        self.trades: list[Trade] = []
        self.fills: list[Fill] = []
        self.position = 0.0
        self.cash = 100_000.0
        self.price = 1.1
        self.next_id = 1


class StandInIB:
    """The subset of ``ib_async.IB`` the adapter uses, over an :class:`Account`."""

    def __init__(self, account: Account, managed: list[str] | None = None) -> None:
        self.acct = account
        self.managed = managed or [account.name]
        self.connected = True
        self.errorEvent = Event("errorEvent")
        self.disconnectedEvent = Event("disconnectedEvent")
        self.execDetailsEvent = Event("execDetailsEvent")
        self.orderStatusEvent = Event("orderStatusEvent")
        self.reject_next: str | None = None
        self.fill_share = 1.0

    def isConnected(self) -> bool:
        return self.connected

    def managedAccounts(self) -> list[str]:
        return list(self.managed)

    def placeOrder(self, contract, order) -> Trade:
        a = self.acct
        order.orderId = a.next_id
        a.next_id += 1
        trade = Trade(contract, order, OrderStatus(orderId=order.orderId, status="PreSubmitted",
                                                   remaining=order.totalQuantity))
        a.trades.append(trade)
        if self.reject_next:
            trade.orderStatus.status = "Inactive"
            self.errorEvent.emit(order.orderId, 201, f"Order rejected - {self.reject_next}",
                                 contract)
            self.reject_next = None
            return trade
        self.execute(trade, order.totalQuantity * self.fill_share)
        return trade

    def execute(self, trade: Trade, qty: float) -> None:
        a = self.acct
        sign = 1.0 if trade.order.action == "BUY" else -1.0
        a.position += sign * qty
        a.cash -= sign * qty * a.price + 2.0
        st = trade.orderStatus
        st.filled += qty
        st.remaining = trade.order.totalQuantity - st.filled
        st.avgFillPrice = a.price
        st.status = "Filled" if st.remaining <= 1e-12 else "Submitted"
        ex = Execution(execId=f"e{len(a.fills) + 1}", time=datetime.now(UTC),
                       acctNumber=a.name, side="BOT" if sign > 0 else "SLD", shares=qty,
                       price=a.price, orderId=trade.order.orderId,
                       orderRef=trade.order.orderRef)
        fill = Fill(trade.contract, ex, CommissionReport(execId=ex.execId, commission=2.0),
                    ex.time)
        a.fills.append(fill)
        trade.fills.append(fill)
        self.execDetailsEvent.emit(trade, fill)

    def cancelOrder(self, order) -> Trade | None:
        for t in self.acct.trades:
            if t.order.orderId == order.orderId:
                t.orderStatus.status = "Cancelled"
                return t
        return None

    def trades(self) -> list[Trade]:
        return list(self.acct.trades)

    def openTrades(self) -> list[Trade]:
        return [t for t in self.acct.trades if t.orderStatus.status in OrderStatus.ActiveStates]

    def positions(self, account: str = "") -> list[Position]:
        a = self.acct
        return [Position(a.name, Forex("EURUSD"), a.position, a.price)] if a.position else []

    def accountValues(self, account: str = "") -> list[AccountValue]:
        return [AccountValue(self.acct.name, "TotalCashValue", str(self.acct.cash), "USD", "")]

    def accountSummary(self, account: str = "") -> list[AccountValue]:
        return self.accountValues(account)

    def fills(self) -> list[Fill]:
        return list(self.acct.fills)


def order(cid: str, qty: float) -> OrderRequest:
    return OrderRequest(cid, qty=qty, target=qty)


def test_only_paper_accounts_and_ports():
    with pytest.raises(LiveEndpointError, match="not a paper account"):
        IbkrBroker(Forex("EURUSD"), ib=StandInIB(Account("U7654321")))
    with pytest.raises(LiveEndpointError, match="live"):
        IbkrBroker(Forex("EURUSD"), port=7496)  # refused before connecting
    with pytest.raises(LiveEndpointError, match="live"):
        IbkrBroker(Forex("EURUSD"), port=4001)
    two = StandInIB(Account(), managed=["DU1", "DU2"])
    with pytest.raises(BrokerError, match="--account"):
        IbkrBroker(Forex("EURUSD"), ib=two)
    assert IbkrBroker(Forex("EURUSD"), ib=two, account="DU2").account == "DU2"


def test_orders_fills_positions_and_a_restart():
    acct = Account()
    ib = StandInIB(acct)
    broker = IbkrBroker(Forex("EURUSD"), ib=ib)
    placed = broker.submit(order("rt-x-1-0", 20_000))
    assert placed.status == "filled" and placed.filled == 20_000
    assert broker.submit(order("rt-x-1-0", 20_000)).broker_id == placed.broker_id
    assert len(acct.trades) == 1
    assert broker.positions() == {"EURUSD": 20_000}
    fills, cursor = broker.fills_since(None)
    assert [(f.client_id, f.qty, f.price, f.fee) for f in fills] == [
        ("rt-x-1-0", 20_000, 1.1, 2.0)]
    assert broker.fills_since(cursor)[0] == []
    assert broker.balance() == pytest.approx(100_000 - 22_000 - 2)
    # a partial fill stays open; cancel it
    ib.fill_share = 0.5
    part = broker.submit(order("rt-x-2-0", -10_000))
    assert part.status == "open" and part.filled == -5_000
    assert [o.client_id for o in broker.open_orders()] == ["rt-x-2-0"]
    assert broker.cancel("rt-x-2-0") and broker.open_orders() == []
    assert not broker.cancel("rt-x-2-0")
    # a new connection (the trader restarted): the order is found by its orderRef
    restarted = IbkrBroker(Forex("EURUSD"), ib=StandInIB(acct))
    assert restarted.submit(order("rt-x-1-0", 20_000)).status == "filled"
    assert len(acct.trades) == 2
    again, _ = restarted.fills_since(cursor)  # from the trader's committed cursor
    assert [f.qty for f in again] == [-5_000]
    assert restarted.positions() == {"EURUSD": 15_000}


def test_rejections_and_disconnects():
    acct = Account()
    ib = StandInIB(acct)
    broker = IbkrBroker(Forex("EURUSD"), ib=ib)
    ib.reject_next = "insufficient margin"
    rejected = broker.submit(order("rt-y-1-0", 1e9))
    assert rejected.status == "rejected" and "insufficient margin" in rejected.reason
    assert broker.positions() == {}
    ib.connected = False
    ib.disconnectedEvent.emit()
    with pytest.raises(BrokerError, match="not connected"):
        broker.submit(order("rt-y-2-0", 1.0))
    assert len(acct.trades) == 1
