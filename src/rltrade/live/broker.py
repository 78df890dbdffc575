"""The one small interface every broker adapter implements, and the records it speaks.

A broker adapter turns the paper trader's orders into a venue's and reports back what the venue
did: :meth:`Broker.submit`, :meth:`Broker.cancel`, :meth:`Broker.open_orders`,
:meth:`Broker.positions`, :meth:`Broker.balance`, :meth:`Broker.fills_since`. Three adapters:
:class:`~rltrade.live.sim.SimBroker` (a replay through the execution engine, no network),
:class:`~rltrade.live.ccxt_broker.CcxtBroker` (an exchange's sandbox) and
:class:`~rltrade.live.ibkr_broker.IbkrBroker` (an Interactive Brokers paper account).

Client order ids are deterministic (:func:`client_order_id`): the same run, session, bar and
leg always give the same id, so a restarted trader that finds its order already at the broker
does not send it again.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from rltrade.errors import RLTradeError

__all__ = [
    "Broker",
    "BrokerError",
    "BrokerOrder",
    "Fill",
    "LiveEndpointError",
    "OrderRequest",
    "client_order_id",
    "session_key",
]


class BrokerError(RLTradeError):
    """A broker refused a request or could not be reached (after its retries)."""


class LiveEndpointError(BrokerError):
    """A real-money endpoint or account: paper trading refuses it by construction."""


def session_key(run: str, session: str) -> str:
    """Ten hex digits naming a (run, session) pair inside client order ids."""
    return hashlib.sha256(f"{run}\0{session}".encode()).hexdigest()[:10]


def client_order_id(run: str, session: str, bar: int, leg: int = 0) -> str:
    """The deterministic client order id of leg ``leg`` of the order decided at ``bar``.

    ``rt-<session key>-<bar>-<leg>`` (at most 36 characters of ``[a-z0-9-]``, what exchanges
    accept): the same run, session, bar and leg give the same id on every restart.

    :param run: the run's name.
    :param session: the paper session's name.
    :param bar: the decision bar's key (its open time in epoch seconds).
    :param leg: which order of that decision (0: the position change).
    """
    return f"rt-{session_key(run, session)}-{int(bar)}-{int(leg)}"


@dataclass
class OrderRequest:
    """A market order the trader asks the broker for.

    :param client_id: the deterministic client order id.
    :param qty: signed units to trade (buy > 0, sell < 0).
    :param target: the position the decision wants after the fill (the sim broker fills
        ``target`` through the engine, as the backtest does; real venues trade ``qty``).
    :param sl: stop-loss level for the position (``None``: keep).
    :param tp: take-profit level (``None``: keep).
    :param bar: the decision bar's key.
    """

    client_id: str
    qty: float
    target: float
    sl: float | None = None
    tp: float | None = None
    bar: int = 0
    symbol: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BrokerOrder:
    """An order as the broker knows it.

    :param status: ``open``, ``filled``, ``cancelled`` or ``rejected``.
    """

    client_id: str
    qty: float
    filled: float = 0.0
    status: str = "open"
    broker_id: str = ""
    reason: str = ""
    avg_price: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Fill:
    """One execution reported by the broker.

    :param fill_id: the broker's id of the execution (unique; fills are deduplicated by it).
    :param qty: signed units.
    :param price: average price of the execution (costs included for the sim broker, whose
        fills are the engine's account changes).
    :param fee: fee paid, in the account currency.
    :param time: int64 UTC ns of the execution (the bar's open time for the sim broker).
    """

    fill_id: str
    client_id: str
    qty: float
    price: float
    fee: float = 0.0
    time: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Broker(Protocol):
    """What the paper trader needs from a venue (all quantities in units of the traded
    symbol, signed; cash in the account currency)."""

    name: str

    def submit(self, order: OrderRequest) -> BrokerOrder:
        """Send ``order``; an order whose client id the broker already has is not sent again
        (its current state is returned)."""
        ...

    def cancel(self, client_id: str) -> bool:
        """Cancel an open order; ``False`` when it is no longer open."""
        ...

    def open_orders(self) -> list[BrokerOrder]:
        """Orders still working at the broker."""
        ...

    def order(self, client_id: str) -> BrokerOrder | None:
        """The broker's view of one order by client id (``None``: unknown to the broker)."""
        ...

    def positions(self) -> dict[str, float]:
        """Signed position per symbol (zero positions may be left out)."""
        ...

    def balance(self) -> float:
        """Cash (quote currency) of the account."""
        ...

    def fills_since(self, cursor: str | None) -> tuple[list[Fill], str | None]:
        """Fills after ``cursor`` (``None``: all) and the new cursor."""
        ...
