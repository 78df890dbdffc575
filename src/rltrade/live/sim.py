"""``SimBroker``: a dry-run venue that replays bars and fills through the execution engine.

The sim broker is the market and the exchange of a replay: it holds the bars of a file or the
store, reveals them one at a time (:meth:`SimBroker.next_bar`, at full speed or paced) and
fills the orders it received through :class:`~rltrade.sim.ExecutionEngine` under the run's
engine config, so a paper session over a past period trades exactly as the backtest of that
period. No network.

Like a real exchange it outlives the trader: everything it was told (orders, bars revealed)
goes to an append-only journal (``broker_sim.jsonl`` in the session folder, one JSON line per
event, written and closed before the call returns: it survives a killed trader process, the
case the sim venue stands in for; ``durable=True`` also fsyncs each line); a restarted broker
replays the journal through a fresh engine and is in exactly the state it was in (the engine
is deterministic). A line cut short by a crash is ignored: its event never happened.

Fills are the engine's account changes of a bar: one :class:`~rltrade.live.broker.Fill` per
bar in which the position moved, with the order's client id (empty for a stop, take-profit or
liquidation with no order), the signed units, the average price (``-(cash change + fees) /
units``) and the fee.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from rltrade.data.parsing import OHLCV
from rltrade.errors import ConfigError
from rltrade.live.broker import BrokerError, BrokerOrder, Fill, OrderRequest
from rltrade.sim import kernels as K
from rltrade.sim.config import EngineConfig
from rltrade.sim.engine import ExecutionEngine, Order

__all__ = ["SimBroker", "parse_speed"]

log = logger.bind(component="live.broker")


def parse_speed(speed: str | float | None) -> float | None:
    """``"max"`` / ``None`` -> ``None`` (no pause); ``"60x"`` -> 60.0 (a bar of an hour takes a
    minute).

    :raises ConfigError: anything else.
    """
    if speed is None or (isinstance(speed, str) and speed.strip().lower() == "max"):
        return None
    text = str(speed).strip().lower().removesuffix("x")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or not math.isfinite(value):
        raise ConfigError(f"--speed must be 'max' or a factor like '60x', got {speed!r}")
    return value


class SimBroker:
    """A replay venue.

    :param bars: every bar the replay may reveal (rltrade's bar layout, UTC index), the
        history before the start included.
    :param engine: the run's engine config (costs, leverage, fills).
    :param start: the bar (its open time) the account starts at, as of its close: the session's
        first decision bar.
    :param journal: the journal file (``None``: in memory only, nothing survives a restart).
    :param symbol: the symbol positions are reported under.
    :param speed: bars per real second factor (``None``: full speed).
    :param seed: the engine's seed (default the config's).
    :param durable: fsync every journal line (survives a power cut, at a few ms a line).
    """

    name = "sim"

    def __init__(self, bars: pd.DataFrame, engine: EngineConfig, start: Any, *,
                 journal: str | Path | None = None, symbol: str = "SYMBOL",
                 speed: float | None = None, seed: int | None = None,
                 durable: bool = False) -> None:
        self.bars = bars
        self.durable = durable
        self.symbol = symbol
        self.speed = speed
        ts = bars.index.as_unit("ns").asi8
        self.timestamps = np.asarray(ts, dtype=np.int64)
        start_ns = int(pd.Timestamp(start).value) if not isinstance(start, int) else start
        self.start = int(np.searchsorted(self.timestamps, start_ns))
        if self.start >= len(bars):
            raise ConfigError(f"sim broker: no bar at or after {pd.Timestamp(start_ns, tz='UTC')}")
        spread = (bars["spread"].to_numpy(np.float64)
                  if engine.costs.spread == "column" and "spread" in bars else None)
        funding = (bars["funding_rate"].to_numpy(np.float64)
                   if engine.instrument.funding != "none" and "funding_rate" in bars else None)
        self.engine = ExecutionEngine(bars[list(OHLCV)].to_numpy(np.float64), engine,
                                      timestamps=self.timestamps, spread=spread,
                                      funding_rate=funding)
        self.seed = engine.seed if seed is None else int(seed)
        self._journal_path = Path(journal) if journal is not None else None
        self._replaying = False
        self._reset_state()
        if self._journal_path is not None and self._journal_path.exists():
            self._replay()

    # --------------------------------------------------------------------------- state
    def _reset_state(self) -> None:
        self.engine.reset(self.start, seed=self.seed)
        self.revealed = self.start  # the last bar the market has shown
        self.orders: dict[str, BrokerOrder] = {}
        self._engine_ids: dict[str, int] = {}
        self._pending: list[str] = []
        self.fills: list[Fill] = []

    def _journal(self, event: dict[str, Any]) -> None:
        if self._journal_path is None or self._replaying:
            return
        self._journal_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._journal_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")
            if self.durable:
                fh.flush()
                os.fsync(fh.fileno())

    def _replay(self) -> None:
        assert self._journal_path is not None
        self._replaying = True
        try:
            raw = self._journal_path.read_bytes()
            complete = raw.rfind(b"\n") + 1
            if complete < len(raw):  # a line cut short by a crash: never happened
                with open(self._journal_path, "r+b") as fh:
                    fh.truncate(complete)
            for line in raw[:complete].decode("utf-8").split("\n"):
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue  # empty, or cut short by a crash: never happened
                if "submit" in event:
                    self.submit(OrderRequest(**event["submit"]))
                elif "cancel" in event:
                    self.cancel(event["cancel"])
                elif "advance" in event:
                    self._advance()
        finally:
            self._replaying = False
        log.info("sim broker: journal replayed, at bar {} with {} order(s), position {:g}",
                 self.revealed, len(self.orders), self.engine.position)

    # --------------------------------------------------------------------------- feed
    @property
    def last_index(self) -> int:
        return len(self.bars) - 1

    def has_next(self, after: int | None = None) -> bool:
        """Whether a bar after the bar at open time ``after`` (default: the last revealed)
        exists in the replay."""
        i = self.revealed if after is None else int(np.searchsorted(self.timestamps, after,
                                                                     side="right")) - 1
        return i < self.last_index

    def bar_at(self, i: int) -> tuple[int, dict[str, float]]:
        """Bar ``i``: its open time (ns) and its values."""
        row = self.bars.iloc[i]
        return int(self.timestamps[i]), {k: float(v) for k, v in row.items()}

    def next_bar(self, after: int) -> tuple[int, dict[str, float]] | None:
        """The first closed bar after open time ``after``: one the market showed already (a
        restarted trader catching up), else the next one, revealed now (its orders filled at
        its open through the engine). ``None`` at the end of the replay."""
        i = int(np.searchsorted(self.timestamps, after, side="right"))
        if i > self.last_index:
            return None
        if i <= self.revealed:
            return self.bar_at(i)
        if i != self.revealed + 1:  # pragma: no cover - the trader asks in order
            raise BrokerError(f"sim broker: bar {i} asked for before bar {self.revealed + 1}")
        if self.speed is not None and i > 0:
            seconds = (self.timestamps[i] - self.timestamps[i - 1]) / 1e9 / self.speed
            time.sleep(max(0.0, min(seconds, 60.0)))
        self._journal({"advance": i})
        self._advance()
        return self.bar_at(i)

    def _advance(self) -> None:
        eng = self.engine
        st = eng.kernel_arrays().state
        pos0, cash0, fees0 = float(st[K.POS]), float(st[K.CASH]), float(st[K.FEES])
        pending = list(self._pending)
        eng.advance()
        self.revealed = eng.bar
        dpos = float(st[K.POS]) - pos0
        dfees = float(st[K.FEES]) - fees0
        dcash = float(st[K.CASH]) - cash0
        live = {p["id"] for p in eng.pending}
        self._pending = [c for c in pending if self._engine_ids[c] in live]
        done = [c for c in pending if self._engine_ids[c] not in live]
        for c in done:
            order = self.orders[c]
            order.status = "filled"
        client = done[-1] if done else ""
        if dpos != 0.0:
            price = -(dcash + dfees) / dpos
            self.fills.append(Fill(fill_id=f"sim-{self.timestamps[self.revealed] // 10**9}",
                                   client_id=client, qty=dpos, price=price, fee=dfees,
                                   time=int(self.timestamps[self.revealed])))
            if client:
                self.orders[client].filled += dpos
                self.orders[client].avg_price = price

    # --------------------------------------------------------------------------- Broker
    def submit(self, order: OrderRequest) -> BrokerOrder:
        known = self.orders.get(order.client_id)
        if known is not None:
            return known
        self._journal({"submit": order.to_dict()})
        oid = self.engine.submit(Order.target(order.target, sl=order.sl, tp=order.tp))
        if oid is None:
            state = BrokerOrder(order.client_id, order.qty, status="rejected",
                                reason=self.engine.last_rejection or "rejected")
        else:
            state = BrokerOrder(order.client_id, order.qty, broker_id=str(oid))
            self._engine_ids[order.client_id] = oid
            self._pending.append(order.client_id)
        self.orders[order.client_id] = state
        return state

    def cancel(self, client_id: str) -> bool:
        if client_id not in self._pending:
            return False
        self._journal({"cancel": client_id})
        ok = self.engine.cancel(self._engine_ids[client_id])
        self._pending.remove(client_id)
        self.orders[client_id].status = "cancelled"
        return ok

    def open_orders(self) -> list[BrokerOrder]:
        return [self.orders[c] for c in self._pending]

    def order(self, client_id: str) -> BrokerOrder | None:
        return self.orders.get(client_id)

    def positions(self) -> dict[str, float]:
        pos = self.engine.position
        return {self.symbol: pos} if pos != 0.0 else {}

    def balance(self) -> float:
        return self.engine.cash

    def fills_since(self, cursor: str | None) -> tuple[list[Fill], str | None]:
        start = 0 if cursor is None else int(cursor)
        return self.fills[start:], str(len(self.fills))
