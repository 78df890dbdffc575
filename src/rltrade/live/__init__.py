"""Paper trading through the same engine: the loop, the broker adapters, the session state.

* :class:`PaperTrader` / :func:`run_paper` - the loop (``rltrade paper``), crash-safe;
* :class:`Broker` - the adapters' interface; :class:`SimBroker` (replay, no network),
  :class:`~rltrade.live.ccxt_broker.CcxtBroker` (exchange sandbox),
  :class:`~rltrade.live.ibkr_broker.IbkrBroker` (Interactive Brokers paper account);
* :class:`EngineMirror` - the env's core following live bars.

See ``docs/paper.md``.
"""

from rltrade.live.broker import (
    Broker,
    BrokerError,
    BrokerOrder,
    Fill,
    LiveEndpointError,
    OrderRequest,
    client_order_id,
)
from rltrade.live.mirror import EngineMirror
from rltrade.live.sim import SimBroker
from rltrade.live.trader import PaperResult, PaperTrader, paper_status, run_paper

__all__ = ["Broker", "BrokerError", "BrokerOrder", "EngineMirror", "Fill", "LiveEndpointError",
           "OrderRequest", "PaperResult", "PaperTrader", "SimBroker", "client_order_id",
           "paper_status", "run_paper"]
