"""``PaperTrader``: a trained run trading bar by bar through a broker, crash-safe.

For each newly **closed** bar ``t``:

1. *data* - the bar is appended to the bars held;
2. *features* - the Dataset grows by one row (:class:`~rltrade.features.IncrementalDataset`,
   equal to a batch rebuild);
3. the mirror (:class:`~rltrade.live.mirror.EngineMirror`, the env's own core) processes the
   bar: the order decided at the close of ``t - 1`` fills at the open of ``t`` under the engine's
   cost model (the *expected* fill), stops, the mark at the close;
4. *broker* - the broker's fills since the last bar are recorded beside the expected fill
   (``fills.csv``: the slippage against the model), open orders and the position are reconciled
   with the broker's; a position the mirror does not expect fires the kill switch;
5. *risk* - the daily-loss kill switch (``max_daily_loss``) and the run's risk manager;
6. *policy* - at the close of ``t``: observation (the run's normaliser) -> the policy's action
   -> the action scheme's target -> the risk manager -> an order for the difference to the
   position, with a deterministic client order id, sent to the broker (it fills at the open of
   ``t + 1``, as in training);
7. the bar's row goes to ``steps.csv`` and the state to ``state.json`` (atomically), then the
   heartbeat.

A session that exists is resumed from its state, never started over: the mirror's account, the
risk manager, the policy's recurrent state and the broker cursor come back from ``state.json``,
the files are cut back to their committed length, and open orders and positions are reconciled
with the broker before the first decision (differences are logged and kept in the state). An
order whose client id the broker already has is not sent again.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from rltrade.agents.policy import MarginPolicy, is_planned
from rltrade.data.loaders import load_bars
from rltrade.data.store import atomic_write_bytes, atomic_write_json
from rltrade.envs import kernels as EK
from rltrade.envs.config import EnvConfig
from rltrade.envs.schemes import ACTION_SCHEMES
from rltrade.envs.spaces import observation
from rltrade.errors import ConfigError, DataError
from rltrade.evaluation.backtest import trades_frame
from rltrade.evaluation.judge import load_policy
from rltrade.features.incremental import DEFAULT_TAIL, IncrementalDataset
from rltrade.live.broker import BrokerOrder, OrderRequest, client_order_id, session_key
from rltrade.live.mirror import SPARE_ROWS, EngineMirror
from rltrade.live.session import Session, read_state
from rltrade.live.sim import SimBroker, parse_speed
from rltrade.logs import run_log_files
from rltrade.runs import Run
from rltrade.sim import kernels as K

__all__ = ["PAPER_LOG_COMPONENTS", "PaperResult", "PaperTrader", "paper_status", "run_paper",
           "step_columns"]

_log = {c: logger.bind(component=f"live.{c}")
        for c in ("data", "features", "policy", "risk", "broker", "session")}
#: the components written to a session's ``paper.log``
PAPER_LOG_COMPONENTS = tuple(f"live.{c}" for c in _log)
_NS_DAY = 86_400 * 10**9


def step_columns(config: EnvConfig) -> list[str]:
    """``steps.csv``'s columns: the backtest's (``docs/evaluation.md``), in its order."""
    scheme = ACTION_SCHEMES[config.action_scheme]
    actions = ["action"] if scheme.discrete else [f"action_{j}" for j in range(scheme.width)]
    return ["timestamp", "bar", *actions, "trade_executed", "position_change", "cash",
            "position", "equity", "realized_equity", "unrealized_pnl", "close", "costs",
            "funding", "reward", "stop_triggered", "take_profit", "liquidated", "drawdown",
            "risk_reason", "invalid_action", "forced_close", "done"]


@dataclass
class PaperResult:
    """What :func:`run_paper` returns.

    :param path: the session folder.
    :param state: the final ``state.json``.
    :param summary: ``summary.json``.
    """

    path: Path
    state: dict[str, Any]
    summary: dict[str, Any]
    steps: pd.DataFrame | None = field(default=None, repr=False)
    trades: pd.DataFrame | None = field(default=None, repr=False)


def _ts_text(ns: int | None) -> str | None:
    """ISO time of int64 UTC ns (as ``pd.Timestamp(ns, tz="UTC").isoformat()``, faster)."""
    if ns is None:
        return None
    ns = int(ns)
    if ns % 10**9:
        return pd.Timestamp(ns, tz="UTC").isoformat()
    return datetime.fromtimestamp(ns // 10**9, UTC).isoformat()


def _nan_none(x: float) -> float | None:
    return None if x != x else float(x)


class PaperTrader:
    """The paper-trading loop of one session (module docstring).

    :param run: the trained run.
    :param broker: the venue (:class:`~rltrade.live.broker.Broker`); also the bar feed:
        ``broker.next_bar(after_ns)`` gives the next closed bar (``None`` at the end of a
        replay), ``broker.has_next(after_ns)`` whether one will come.
    :param session: the session's files.
    :param history: the bars up to and including the last bar the session has processed (a new
        session: up to its first decision bar).
    :param name: the session's name.
    :param model: ``final``, ``best`` or ``last``.
    :param max_daily_loss: kill switch: stop when equity falls this fraction below the
        equity at the start of the UTC day (``None``: off).
    :param position_tolerance: units of difference between the broker's position and the
        mirror's that count as equal.
    :param tail: bars of the incremental features' trailing window (calibrated up).
    :param policy: the policy (default: the run's model).
    """

    def __init__(self, run: Run, broker: Any, session: Session, history: pd.DataFrame, *,
                 name: str, model: str = "final", max_daily_loss: float | None = None,
                 position_tolerance: float = 1e-9, tail: int = DEFAULT_TAIL,
                 policy: Any = None, symbol: str | None = None) -> None:
        self.run = run
        self.broker = broker
        self.session = session
        self.name = name
        cfg = run.config
        self.config = EnvConfig.build(cfg.env, mode="eval")
        if not cfg.evaluation.equity_floor and self.config.equity_floor != 0.0:
            self.config = EnvConfig.build(self.config, equity_floor=0.0)
        self.max_daily_loss = max_daily_loss
        self.tolerance = float(position_tolerance)
        self.symbol = symbol or getattr(broker, "symbol", None) or cfg.data.symbol or "SYMBOL"
        self.scheme = ACTION_SCHEMES[self.config.action_scheme]
        state = session.state()
        self.resumed = state is not None
        if state is not None and state.get("status") == "killed":
            raise ConfigError(
                f"paper session {name} was stopped by its kill switch ({state.get('kill_reason')})"
                "; look at the broker account, then start a new session (--session NEW)")
        # -- data and features
        _log["features"].info("building the Dataset of {} history bars", len(history))
        self.data = IncrementalDataset(history, cfg.feature_spec, timeframe=cfg.data.timeframe,
                                       symbol=cfg.data.symbol, tail=tail)
        run.check_compatible(self.data.dataset)
        self.tail = self.data.calibrate()
        _log["features"].info("incremental features: trailing window of {} bars", self.tail)
        ds = self.data.dataset
        last_row = len(ds) - 1
        if last_row < self.config.window - 1:
            raise DataError(f"paper: {len(ds)} Dataset rows before the first decision; the "
                            f"observation window needs {self.config.window}")
        origin = (None if state is None else
                  int(np.searchsorted(ds.timestamps, int(state["origin_ns"]))))
        self.mirror = EngineMirror(self.data, self.config, run.normalizer(), last_row,
                                   self.config.engine.seed, spare=SPARE_ROWS, origin=origin)
        self.policy = policy if policy is not None else load_policy(run, model)
        if self.config.min_margin > 0 and not is_planned(self.policy):
            # abstention, as run_backtest applies it
            self.policy = MarginPolicy(self.policy, self.config.min_margin,
                                       self.config.action_scheme)
        self.recurrent: Any = None
        self.episode_start = np.ones(1, dtype=bool)
        self.cursor: str | None = None
        self.open_orders: dict[str, dict[str, Any]] = {}
        self.reconcile_report: list[str] = []
        self.status = "running"
        self.kill_reason: str | None = None
        self.day = (int(ds.timestamps[-1]) // _NS_DAY)
        self.day_start_equity = float(self.mirror.state[K.EQUITY])
        self.n_steps = 0
        self.prev_counts = self._counts()
        self.prev_costs = self._cost_total()
        self.prev_funding = float(self.mirror.state[K.FUNDING])
        self.prev_invalid = 0.0
        self.prev_position = float(self.mirror.state[K.POS])
        self.last_reward = 0.0
        self.last_latency = math.nan
        self._trades_written = -1
        if state is None:
            self.created = datetime.now(UTC).isoformat(timespec="seconds")
            self.first_time = int(ds.timestamps[-1])
            session.start_files(None)
        else:
            self._restore(state)
            session.start_files(state.get("files"))

    # ------------------------------------------------------------------------- state
    def _counts(self) -> np.ndarray:
        st = self.mirror.state
        return np.array([st[K.N_FILLS], st[K.N_STOP_EXITS], st[K.N_TP_EXITS],
                         st[K.N_LIQUIDATIONS]])

    def _cost_total(self) -> float:
        st = self.mirror.state
        return float(st[K.FEES] + st[K.SPREAD_COST] + st[K.SLIPPAGE_COST] + st[K.FUNDING])

    def _recurrent_json(self) -> Any:
        if self.recurrent is None:
            return None
        if isinstance(self.recurrent, tuple | list):
            return [np.asarray(x).tolist() for x in self.recurrent]
        return np.asarray(self.recurrent).tolist()

    def state_dict(self) -> dict[str, Any]:
        """The session's state as written to ``state.json``."""
        st = self.mirror.state
        last = int(self.mirror.ds.timestamps[self.mirror.bar])
        return {
            "version": 1,
            "run": self.run.name,
            "session": self.name,
            "session_key": session_key(self.run.name, self.name),
            "broker": getattr(self.broker, "name", type(self.broker).__name__),
            "symbol": self.symbol,
            "created": self.created,
            "status": self.status,
            "kill_reason": self.kill_reason,
            "first_bar_time": _ts_text(self.first_time),
            "first_bar_ns": self.first_time,
            "origin_ns": int(self.mirror.ds.timestamps[0]),
            "last_bar_time": _ts_text(last),
            "last_bar_ns": last,
            "steps": self.n_steps,
            "position": float(st[K.POS]),
            "cash": float(st[K.CASH]),
            "equity": float(st[K.EQUITY]),
            "initial_equity": float(st[K.INITIAL_EQUITY]),
            "day": {"day": self.day, "start_equity": self.day_start_equity},
            "open_orders": list(self.open_orders.values()),
            "broker_cursor": self.cursor,
            "risk": {
                "counts": dict(self.mirror.core.risk_counts[0]),
                "manager": (self.mirror.core.risk[0].state_dict()
                            if self.mirror.core.risk is not None else None),
                "max_daily_loss": self.max_daily_loss,
            },
            "recurrent_state": self._recurrent_json(),
            "episode_start": bool(self.episode_start[0]),
            "prev": {"counts": self.prev_counts.tolist(), "costs": self.prev_costs,
                     "funding": self.prev_funding,
                     "invalid": self.prev_invalid, "position": self.prev_position},
            "reconcile": self.reconcile_report[-20:],
            "tail": self.tail,
            "mirror": self.mirror.snapshot(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.created = state["created"]
        self.first_time = int(state["first_bar_ns"])
        if int(self.data.dataset.timestamps[-1]) != int(state["last_bar_ns"]):
            raise DataError(f"paper session {self.name}: the history does not end at the "
                            f"session's last bar {state['last_bar_time']}")
        self.mirror.restore(state["mirror"])
        self.n_steps = int(state["steps"])
        self.status = state["status"]
        self.day = int(state["day"]["day"])
        self.day_start_equity = float(state["day"]["start_equity"])
        self.open_orders = {o["client_id"]: o for o in state["open_orders"]}
        self.cursor = state.get("broker_cursor")
        rec = state.get("recurrent_state")
        if rec is not None:
            self.recurrent = tuple(np.asarray(x, dtype=np.float32) for x in rec)
        self.episode_start = np.array([bool(state.get("episode_start", False))])
        prev = state["prev"]
        self.prev_counts = np.asarray(prev["counts"], dtype=np.float64)
        self.prev_costs = float(prev["costs"])
        self.prev_funding = float(prev.get("funding", 0.0))
        self.prev_invalid = float(prev["invalid"])
        self.prev_position = float(prev["position"])
        self.reconcile_report = list(state.get("reconcile", []))

    def commit(self) -> None:
        """Write ``trades.csv``, ``state.json`` and the heartbeat (after every bar)."""
        self.write_trades()
        self.session.commit(self.state_dict())

    def write_trades(self, force: bool = False) -> None:
        """Rewrite ``trades.csv`` (atomically) when a trade closed since the last write."""
        n = int(self.mirror.state[K.N_RECORDS])
        path = self.session.folder / "trades.csv"
        if n == self._trades_written and path.exists() and not force:
            return
        trades = trades_frame(self.mirror.trades[:n], self.mirror.ds.timestamps)
        atomic_write_bytes(path, trades.to_csv().encode())
        self._trades_written = n

    # ------------------------------------------------------------------------- the loop
    def start(self, has_next: bool) -> None:
        """A new session: decide at the close of its first bar (when a bar will follow) and
        commit. A resumed one: nothing (it goes on with the next bar)."""
        if self.resumed:
            _log["session"].info("paper session {} resumed at {} (position {:g}, equity {:.2f})",
                                 self.name, _ts_text(int(self.data.dataset.timestamps[-1])),
                                 self.mirror.state[K.POS], self.mirror.state[K.EQUITY])
            self.reconcile_on_restart()
            return
        _log["session"].info("paper session {} starts at {} with equity {:.2f}", self.name,
                             _ts_text(self.first_time), self.mirror.state[K.EQUITY])
        self._after_bar(has_next, first=True)

    def on_bar(self, timestamp: int, bar: dict[str, float], has_next: bool) -> None:
        """Process one newly closed bar (module docstring, steps 1-7).

        :param timestamp: its open time, int64 UTC ns.
        :param bar: ``open``, ``high``, ``low``, ``close``, ``volume`` and any extra column.
        :param has_next: whether another bar will follow (``False`` at the end of a replay:
            no decision is taken at the last bar, as in a backtest).
        """
        t0 = time.perf_counter()
        extras = {k: v for k, v in bar.items() if k not in ("open", "high", "low", "close",
                                                            "volume")}
        self.data.append(timestamp, bar["open"], bar["high"], bar["low"], bar["close"],
                         bar["volume"], **{k: extras[k] for k in self.data.extra_columns})
        self.mirror.add_bar()
        st = self.mirror.state
        before = (float(st[K.POS]), float(st[K.CASH]), float(st[K.FEES]))
        reward, _, _ = self.mirror.step()
        self.last_reward = reward
        self.n_steps += 1
        self._record_fills(timestamp, before)
        self._reconcile(timestamp)
        self._check_daily_loss(timestamp)
        self._after_bar(has_next, first=False)
        self.last_latency = time.perf_counter() - t0

    def _after_bar(self, has_next: bool, first: bool) -> None:
        """Decide (when trading goes on), write the bar's step row, commit."""
        mirror = self.mirror
        ts = int(mirror.ds.timestamps[mirror.bar])
        done = bool(mirror.core.env[0, EK.E_DONE])
        action = None
        reasons = ""
        counts = self._counts()
        invalid_now = float(mirror.core.env[0, EK.E_INVALID])
        if has_next and not done and self.status == "running":
            action, reasons = self._decide(ts)
        if (not has_next or done) and self.status == "running":
            self.status = "finished"
        self._write_step(ts, first, action, reasons, counts, invalid_now)
        self.commit()

    def _decide(self, ts: int) -> tuple[Any, str]:
        mirror = self.mirror
        due = mirror.decision_due()
        if due:
            market, account = mirror.observation_parts()
            obs = observation(self.config, market, account)
            action, self.recurrent = self.policy.predict(obs, state=self.recurrent,
                                                         episode_start=self.episode_start,
                                                         deterministic=True)
            self.episode_start = np.zeros(1, dtype=bool)
        else:  # decision_interval: the policy is not asked at this close
            action = None
        target, sl, tp, _ = mirror.decide(action)
        reasons = ";".join(mirror.core.last_reasons[0])
        if reasons:
            _log["risk"].info("risk manager at {}: {}", _ts_text(ts), reasons)
        position = float(mirror.state[K.POS])
        if target == target and (target != position or sl == sl or tp == tp):
            bar_key = ts // 10**9
            order = OrderRequest(client_order_id(self.run.name, self.name, bar_key, 0),
                                 qty=target - position, target=target, sl=_nan_none(sl),
                                 tp=_nan_none(tp), bar=bar_key, symbol=self.symbol)
            self._send(order, ts)
        return (np.asarray(mirror.core.actions[0]).copy() if due else None), reasons

    def _send(self, order: OrderRequest, ts: int) -> BrokerOrder:
        known = self.broker.order(order.client_id)
        if known is not None:
            self.reconcile_report.append(
                f"{_ts_text(ts)}: order {order.client_id} already at the broker "
                f"({known.status}); not sent again")
            _log["broker"].warning("order {} already at the broker ({}); not sent again",
                                   order.client_id, known.status)
            result = known
        else:
            result = self.broker.submit(order)
            _log["broker"].info("order {} {:+g} -> target {:g}: {}", order.client_id, order.qty,
                                order.target, result.status)
        if result.status == "open":
            self.open_orders[order.client_id] = {
                "client_id": order.client_id, "qty": order.qty, "target": order.target,
                "sl": order.sl, "tp": order.tp, "bar_time": _ts_text(ts),
                "broker_id": result.broker_id}
        self.session.append("orders.csv", [{
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "bar_time": _ts_text(ts), "client_id": order.client_id, "qty": order.qty,
            "target": order.target, "sl": order.sl, "tp": order.tp, "status": result.status,
            "broker_id": result.broker_id, "reason": result.reason}])
        return result

    def _record_fills(self, ts: int, before: tuple[float, float, float]) -> None:
        st = self.mirror.state
        exp_qty = float(st[K.POS]) - before[0]
        exp_fee = float(st[K.FEES]) - before[2]
        exp_price = (-(float(st[K.CASH]) - before[1] + exp_fee) / exp_qty
                     if exp_qty != 0.0 else None)
        fills, self.cursor = self.broker.fills_since(self.cursor)
        rows = []
        for f in fills:
            rows.append({"time": _ts_text(f.time) if f.time else None, "bar_time": _ts_text(ts),
                         "fill_id": f.fill_id, "client_id": f.client_id, "qty": f.qty,
                         "price": f.price, "fee": f.fee, "expected_qty": exp_qty,
                         "expected_price": exp_price, "expected_fee": exp_fee,
                         "slippage": (f.price - exp_price) * math.copysign(1.0, f.qty)
                         if exp_price is not None else None})
            self.open_orders.pop(f.client_id, None)
        if not fills and exp_qty != 0.0:
            rows.append({"bar_time": _ts_text(ts), "expected_qty": exp_qty,
                         "expected_price": exp_price, "expected_fee": exp_fee})
        self.session.append("fills.csv", rows)

    def _reconcile(self, ts: int) -> None:
        """Open orders and the position against the broker's."""
        broker_open = {o.client_id: o for o in self.broker.open_orders()}
        for cid in list(self.open_orders):
            if cid not in broker_open:
                known = self.broker.order(cid)
                status = known.status if known is not None else "unknown to the broker"
                if status != "filled":
                    self.reconcile_report.append(f"{_ts_text(ts)}: order {cid} is {status}")
                    _log["broker"].warning("order {} is {} at the broker", cid, status)
                self.open_orders.pop(cid)
        key = session_key(self.run.name, self.name)
        for cid in broker_open:
            if cid not in self.open_orders and not cid.startswith(f"rt-{key}-"):
                self.reconcile_report.append(f"{_ts_text(ts)}: open order {cid} at the broker "
                                             "is not this session's")
        differs = self._position_difference()
        if differs is not None:
            self.kill(f"the broker reports a position of {differs[0]:g} where the session "
                      f"expects {differs[1]:g}")

    def _position_difference(self) -> tuple[float, float] | None:
        """``(broker's, session's)`` position when they differ beyond the tolerance."""
        broker_pos = float(self.broker.positions().get(self.symbol, 0.0))
        mine = float(self.mirror.state[K.POS])
        if abs(broker_pos - mine) > self.tolerance * max(1.0, abs(mine)):
            return broker_pos, mine
        return None

    def reconcile_on_restart(self) -> list[str]:
        """Compare the broker's open orders and position with the state's before the first
        decision after a restart; log and keep every difference (``state.json``'s
        ``reconcile``). Orders and fills the broker has of bars the state did not commit are
        taken up when those bars are processed again (their order ids are the same, so nothing
        is sent twice); a position that still differs then fires the kill switch."""
        last = _ts_text(int(self.data.dataset.timestamps[-1]))
        found: list[str] = []
        broker_open = {o.client_id: o for o in self.broker.open_orders()}
        for cid in self.open_orders:
            if cid not in broker_open:
                known = self.broker.order(cid)
                found.append(f"order {cid} of the state is "
                             f"{known.status if known is not None else 'unknown'} at the broker")
        for cid, o in broker_open.items():
            if cid not in self.open_orders:
                found.append(f"the broker has open order {cid} ({o.qty:+g}) the state does not "
                             "list (sent before the crash, or not this session's)")
        differs = self._position_difference()
        if differs is not None:
            found.append(f"the broker's position is {differs[0]:g}, the state's {differs[1]:g} "
                         f"(as of {last})")
        for line in found:
            _log["broker"].warning("restart reconcile: {}", line)
        if not found:
            _log["broker"].info("restart reconcile: the broker agrees with the state as of {}",
                                last)
        self.reconcile_report.extend(f"restart at {last}: {line}" for line in found)
        return found

    def _check_daily_loss(self, ts: int) -> None:
        equity = float(self.mirror.state[K.EQUITY])
        day = ts // _NS_DAY
        if day != self.day:
            self.day = day
            self.day_start_equity = equity
            return
        if (self.max_daily_loss is not None and self.status == "running"
                and equity <= self.day_start_equity * (1.0 - self.max_daily_loss)):
            self.kill(f"daily loss: equity {equity:.2f} is {1 - equity / self.day_start_equity:.2%}"
                      f" below the day's start {self.day_start_equity:.2f} (limit "
                      f"{self.max_daily_loss:.2%})")

    def kill(self, reason: str) -> None:
        """The kill switch: cancel the session's open orders and stop deciding. The position
        is left as it is (a person looks at the account first)."""
        if self.status == "killed":
            return
        self.status = "killed"
        self.kill_reason = reason
        for cid in list(self.open_orders):
            self.broker.cancel(cid)
            self.open_orders.pop(cid)
        _log["risk"].error("kill switch: {}; session {} stopped", reason, self.name)

    def _write_step(self, ts: int, first: bool, action: Any, reasons: str, counts: np.ndarray,
                    invalid_now: float) -> None:
        st = self.mirror.state
        changed = counts > self.prev_counts
        row: dict[str, Any] = {
            "timestamp": _ts_text(ts), "bar": self.mirror.bar,
        }
        width = 1 if self.scheme.discrete else self.scheme.width
        vals = [None] * width if action is None else [float(action[j]) for j in range(width)]
        if self.scheme.discrete:
            row["action"] = None if vals[0] is None else int(vals[0])
        else:
            for j in range(width):
                row[f"action_{j}"] = vals[j]
        pos = float(st[K.POS])
        costs = self._cost_total()
        row.update({
            "trade_executed": bool(changed[0]) and not first,
            "position_change": pos - self.prev_position,
            "cash": float(st[K.CASH]), "position": pos, "equity": float(st[K.EQUITY]),
            "realized_equity": float(st[K.INITIAL_EQUITY]) + float(st[K.REALIZED]),
            "unrealized_pnl": float(st[K.UNREALIZED]),
            "close": float(self.mirror.ds.ohlcv[self.mirror.bar, 3]),
            "costs": 0.0 if first else costs - self.prev_costs,
            "funding": 0.0 if first else float(st[K.FUNDING]) - self.prev_funding,
            "reward": 0.0 if first else self.last_reward,
            "stop_triggered": bool(changed[1]) and not first,
            "take_profit": bool(changed[2]) and not first,
            "liquidated": bool(changed[3]) and not first,
            "drawdown": float(st[K.DRAWDOWN]), "risk_reason": reasons,
            "invalid_action": (invalid_now > self.prev_invalid) and not first,
            "forced_close": False, "done": self.status != "running",
        })
        self.prev_counts = counts
        self.prev_costs = costs
        self.prev_funding = float(st[K.FUNDING])
        self.prev_position = pos
        self.prev_invalid = float(self.mirror.core.env[0, EK.E_INVALID])
        self.session.append("steps.csv", [row])

    def summary(self) -> dict[str, Any]:
        st = self.mirror.state
        initial = float(st[K.INITIAL_EQUITY])
        return {
            "run": self.run.name, "session": self.name, "status": self.status,
            "kill_reason": self.kill_reason,
            "broker": getattr(self.broker, "name", type(self.broker).__name__),
            "start": _ts_text(self.first_time),
            "end": _ts_text(int(self.mirror.ds.timestamps[self.mirror.bar])),
            "bars": self.n_steps + 1, "initial_equity": initial,
            "final_equity": float(st[K.EQUITY]),
            "total_return": float(st[K.EQUITY]) / initial - 1.0,
            "open_position": float(st[K.POS]),
            "n_trades": int(st[K.N_TRADES]), "n_fills": int(st[K.N_FILLS]),
            "costs": {"fees": float(st[K.FEES]), "spread_cost": float(st[K.SPREAD_COST]),
                      "slippage_cost": float(st[K.SLIPPAGE_COST])},
            "risk_interventions": dict(self.mirror.core.risk_counts[0]),
            "reconcile": self.reconcile_report,
            "incremental_tail": self.tail,
        }


# ----------------------------------------------------------------------------------- driver
def _session_name() -> str:
    return "s_" + datetime.now(UTC).strftime("%Y%m%d_%H%M%S")


def run_paper(run: Run | str | Path, *, broker: str | Any = "sim", data: str | None = None,
              start: str | None = None, end: str | None = None, speed: str | None = "max",
              session: str | None = None, model: str = "final",
              max_daily_loss: float | None = None, max_bars: int | None = None,
              tail: int = DEFAULT_TAIL, history: pd.DataFrame | None = None,
              max_stale_bars: int | None = 2,
              position_tolerance: float = 1e-9) -> PaperResult:
    """Run (or resume) a paper session of a trained run: ``rltrade paper``.

    :param run: the run folder (or :class:`Run`).
    :param broker: ``sim`` (a replay of ``data`` from ``start``), or a
        :class:`~rltrade.live.broker.Broker` that is also the bar feed (``next_bar`` /
        ``has_next``), such as the ccxt and ibkr adapters with their feeds.
    :param data: the bars' source (default: the run's).
    :param start: the first decision bar (a new sim session; UTC).
    :param end: bars before this time (exclusive; sim).
    :param speed: ``max`` or ``60x`` (sim pacing).
    :param session: the session's name; an existing session is resumed.
    :param max_daily_loss: the daily-loss kill switch (fraction, ``None``: off).
    :param max_bars: stop after this many bars of this call (the session stays resumable).
    :param history: bars up to the first decision bar for a broker other than sim (default:
        ``data`` or the run's source, loaded now).
    :param max_stale_bars: a new session with a broker other than sim is refused when its
        history ends more than this many bars before now (``None``: no check; a replay).
    :param position_tolerance: relative difference between the broker's position and the
        mirror's still counted as equal (a venue's lot size rounds the orders' units).
    """
    run = run if isinstance(run, Run) else Run.open(run)
    root = run.path / "paper"
    name = session or _session_name()
    folder = root / name
    state = read_state(folder)
    cfg = run.config
    dc = cfg.data
    with run_log_files(folder, files={"paper.log": PAPER_LOG_COMPONENTS}):
        if isinstance(broker, str):
            if broker != "sim":
                raise ConfigError(f"run_paper: broker {broker!r} needs its adapter object; "
                                  "the CLI builds it (rltrade paper --broker ...)")
            if state is not None:
                start = state["first_bar_time"]
            if start is None:
                raise ConfigError("paper --broker sim needs --start (the first decision bar)")
            src = data or dc.source
            bars = load_bars(src, timeframe=dc.timeframe, policy=dc.policy, symbol=dc.symbol,
                             end=end)
            start_ns = int(pd.Timestamp(start).tz_localize("UTC").value
                           if pd.Timestamp(start).tzinfo is None else pd.Timestamp(start).value)
            first = int(np.searchsorted(bars.index.as_unit("ns").asi8, start_ns))
            if first >= len(bars):
                raise ConfigError(f"the range {start} .. {end or 'the end'} holds no bars of "
                                  f"{src}")
            venue = SimBroker(bars, EnvConfig.build(cfg.env).engine, int(bars.index[first].value),
                              journal=folder / "broker_sim.jsonl",
                              symbol=dc.symbol or str(bars.attrs.get("symbol") or "SYMBOL"),
                              speed=parse_speed(speed))
            upto = first if state is None else int(np.searchsorted(
                bars.index.as_unit("ns").asi8, int(state["last_bar_ns"])))
            hist = bars.iloc[: upto + 1]
        else:
            venue = broker
            if history is None:  # the bars so far: the store or file the user keeps current
                history = load_bars(data or dc.source, timeframe=dc.timeframe,
                                    policy=dc.policy, symbol=dc.symbol)
            hist = history
            if state is not None:
                last = int(state["last_bar_ns"])
                hist = _history_to(history, last, venue)
            elif max_stale_bars is not None and len(hist):
                step = pd.Timedelta(hist.index[-1] - hist.index[-2]) if len(hist) > 1 else None
                age = pd.Timestamp.now(tz="UTC") - hist.index[-1]
                if step is not None and age > step * (max_stale_bars + 1):
                    raise ConfigError(
                        f"the history ends at {hist.index[-1]}, {age} ago: a new live session "
                        "would decide on old bars; update the bars first (rltrade data "
                        "download ... into the store) and start again")
        sess = Session(folder, step_columns(EnvConfig.build(cfg.env)))
        trader = PaperTrader(run, venue, sess, hist, name=name, model=model,
                             max_daily_loss=max_daily_loss, tail=tail,
                             position_tolerance=position_tolerance,
                             symbol=getattr(venue, "symbol", None))
        last = int(trader.data.dataset.timestamps[-1])
        trader.start(bool(venue.has_next(last)))
        n = 0
        while trader.status == "running" and (max_bars is None or n < max_bars):
            nxt = venue.next_bar(last)
            if nxt is None:
                break
            ts, values = nxt
            trader.on_bar(ts, values, bool(venue.has_next(ts)))
            last = ts
            n += 1
        summary = trader.summary()
        atomic_write_json(folder / "summary.json", summary)
        _log["session"].info("paper session {}: {} after {} bar(s), equity {:.2f}", name,
                             trader.status, trader.n_steps, summary["final_equity"])
        return PaperResult(folder, trader.state_dict(), summary)


def _history_to(history: pd.DataFrame, last: int, venue: Any) -> pd.DataFrame:
    """``history`` up to the bar at ``last`` (ns), completed from the venue's closed bars
    (``venue.closed_bars(after_ns)``) when the stored bars end before it."""
    stamps = history.index.as_unit("ns").asi8
    hist = history[stamps <= last]
    closed = getattr(venue, "closed_bars", None)
    while len(hist) and int(hist.index[-1].value) < last and closed is not None:
        more = closed(int(hist.index[-1].value))
        more = more[more.index.as_unit("ns").asi8 <= last]
        if not len(more):
            break
        more.attrs = dict(hist.attrs)
        hist = pd.concat([hist, more[list(hist.columns)]])
        hist.attrs = dict(history.attrs)
    return hist


def paper_status(run: Run | str | Path, session: str | None = None) -> dict[str, Any]:
    """What ``rltrade paper status`` shows of a session (default: the latest one): last bar,
    position, equity, open orders, today's PnL, heartbeat age, the risk manager's state.

    :raises ConfigError: the run has no paper session (of that name).
    """
    run = run if isinstance(run, Run) else Run.open(run)
    root = run.path / "paper"
    folders = sorted((p for p in root.iterdir() if (p / "state.json").exists()),
                     key=lambda p: (p / "state.json").stat().st_mtime) if root.exists() else []
    if session is not None:
        folders = [p for p in folders if p.name == session]
    if not folders:
        raise ConfigError(f"{run.path}: no paper session{f' named {session}' if session else ''}"
                          " (start one with rltrade paper --run ...)")
    folder = folders[-1]
    state = read_state(folder)
    assert state is not None
    sess = Session(folder, [])
    day_start = state["day"]["start_equity"]
    return {
        "session": state["session"], "path": str(folder), "status": state["status"],
        "kill_reason": state.get("kill_reason"), "broker": state["broker"],
        "last_bar": state["last_bar_time"], "steps": state["steps"],
        "position": state["position"], "cash": state["cash"], "equity": state["equity"],
        "open_orders": state["open_orders"],
        "today_pnl": state["equity"] - day_start,
        "heartbeat_age_s": sess.heartbeat_age(),
        "risk": state["risk"], "reconcile": state.get("reconcile", []),
    }

