"""The engine mirror: the trading environment's own core, stepped one live bar at a time.

Paper trading decides exactly as the backtest does, so it runs the same object:
:class:`~rltrade.envs.EnvCore` in ``eval`` mode (observation, action scheme, risk manager,
the execution engine's fill, cost and stop rules). A core is built on a fixed array of bars; the
mirror gives it one with spare rows after the last known bar (copies of it, never read before
they are overwritten) and writes each new bar's row into every array the kernels read (bars,
normalised features and signals, the engine's market row, the ATR) before stepping onto it.
When the spare rows run out, a core twice as large takes over the state (:meth:`snapshot` /
:meth:`restore`, the same pair a restarted session uses).

Nothing at or after a bar is read before the bar closed: the kernels read row ``t + 1`` only
when stepping onto it (the order filled at its open), and a spare row is overwritten before.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from rltrade.envs import kernels as EK
from rltrade.envs.config import EnvConfig
from rltrade.envs.core import EnvCore, market_matrix
from rltrade.features.dataset import Dataset
from rltrade.features.incremental import IncrementalDataset
from rltrade.features.normalize import Normalizer
from rltrade.sim import kernels as K
from rltrade.sim.engine import market_array
from rltrade.sim.instruments import funding_rates

__all__ = ["EngineMirror"]

#: spare rows a mirror keeps beyond the last known bar
SPARE_ROWS = 4096
_TRADE_ROWS = 1024


def _atr_next(prev: float, high: float, low: float, prev_close: float, period: int) -> float:
    """One more step of :func:`rltrade.sim.kernels.atr_filled` past its warm-up (the same
    arithmetic, so the same bits)."""
    tr = max(high - low, abs(high - prev_close), abs(low - prev_close))
    return (prev * (period - 1) + tr) / period


class _Atr:
    """The filled Wilder ATR of the bars so far, extended one bar at a time."""

    def __init__(self, ohlcv: np.ndarray, period: int) -> None:
        self.period = int(period)
        self.values = list(K.atr_filled(np.ascontiguousarray(ohlcv[:, 1]),
                                        np.ascontiguousarray(ohlcv[:, 2]),
                                        np.ascontiguousarray(ohlcv[:, 3]), self.period))

    def extend(self, ohlcv: np.ndarray) -> float:
        """The value of the bar after the known ones (``ohlcv``: every bar, the new one last)."""
        n = len(ohlcv) - 1
        if n <= self.period:  # still inside the warm-up: recompute the few bars
            value = float(K.atr_filled(np.ascontiguousarray(ohlcv[:, 1]),
                                       np.ascontiguousarray(ohlcv[:, 2]),
                                       np.ascontiguousarray(ohlcv[:, 3]), self.period)[-1])
        else:
            value = _atr_next(self.values[-1], float(ohlcv[n, 1]), float(ohlcv[n, 2]),
                              float(ohlcv[n - 1, 3]), self.period)
        self.values.append(value)
        return value


class EngineMirror:
    """An :class:`EnvCore` (one env, ``eval`` mode) that follows a growing Dataset.

    :param data: the incremental Dataset (its rows so far are the known bars).
    :param config: the run's env config.
    :param normalizer: the run's fitted normalizer.
    :param start: the Dataset row of the first decision (the account is reset at its close).
    :param seed: the engine's seed (the backtest's: ``config.engine.seed``).
    :param spare: spare rows kept after the last known bar.
    :param origin: the first Dataset row the core holds (default ``start - window + 1``: the
        backtest's slice, whose first rows are the first decision's context). The core's
        ATRs (stop sizing, the risk manager's volatility gate, ATR slippage) start there, as
        the backtest's do, and its bar numbers count from there (the backtest's ``bar``).
    """

    def __init__(self, data: IncrementalDataset, config: EnvConfig, normalizer: Normalizer,
                 start: int, seed: int, spare: int = SPARE_ROWS,
                 origin: int | None = None) -> None:
        self.data = data
        self.config = config
        self.normalizer = normalizer
        self.seed = int(seed)
        self.spare = max(int(spare), 2)
        self.origin = max(0, int(start) - config.window + 1) if origin is None else int(origin)
        self.start = int(start) - self.origin  # core row
        ds = data.dataset.slice(self.origin)
        eng = config.engine
        self._slip_atr = (_Atr(ds.ohlcv, eng.costs.atr_period)
                          if eng.effective_slippage == "atr" else None)
        self._env_atr = _Atr(ds.ohlcv, config.atr_period)
        self.n = len(ds)  # core rows known
        self._build(self.n + self.spare)
        self.core.reset_env(0, self.start, self.capacity - 1, self.seed)

    # ------------------------------------------------------------------------- building
    def _build(self, capacity: int) -> None:
        ds = self.data.dataset.slice(self.origin)
        n = len(ds)
        pad = capacity - n

        def padded(a: np.ndarray) -> np.ndarray:
            out = np.empty((capacity, *a.shape[1:]), dtype=a.dtype)
            out[:n] = a
            out[n:] = a[-1]
            return out

        ts = np.empty(capacity, dtype=np.int64)
        ts[:n] = ds.timestamps
        ts[n:] = ds.timestamps[-1] + np.arange(1, pad + 1)  # spare rows: placeholders only
        self.ds: Dataset = replace(ds, timestamps=ts, ohlcv=padded(ds.ohlcv),
                                   features=padded(ds.features), signals=padded(ds.signals),
                                   extras={k: padded(v) for k, v in ds.extras.items()})
        self.core = EnvCore(self.ds, self.config, 1, self.normalizer)
        self.core.set_bar_step(True)  # one step a bar, as the backtest's loop (decision_interval)
        self.capacity = capacity
        self.trades = np.zeros((_TRADE_ROWS + self._margin, K.N_TRADE))
        self.core.attach_trades(self.trades)

    @property
    def _margin(self) -> int:
        eng = self.config.engine
        return int(eng.lot_capacity + 2 * eng.order_capacity + 8)

    # ------------------------------------------------------------------------- state
    _ARRAYS = ("st", "lots", "orders", "env", "rets", "actions", "targets", "sl", "tp",
               "obs_market", "obs_account")

    def snapshot(self) -> dict[str, Any]:
        """Everything the mirror's account and env carry from bar to bar, as plain lists
        (JSON-ready; floats survive a JSON round trip exactly)."""
        a = self.core.args
        st = a.st[0]
        out: dict[str, Any] = {k: getattr(a, k).tolist() for k in self._ARRAYS}
        out["trades"] = self.trades[: int(st[K.N_RECORDS])].tolist()
        out["risk"] = ([r.state_dict() for r in self.core.risk]
                       if self.core.risk is not None else None)
        out["risk_counts"] = self.core.risk_counts[0]
        out["last_reasons"] = list(self.core.last_reasons[0])
        return out

    def restore(self, snap: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back (the episode's end moved to this core's last row)."""
        a = self.core.args
        for k in self._ARRAYS:
            arr = getattr(a, k)
            arr[...] = np.asarray(snap[k], dtype=arr.dtype).reshape(arr.shape)
        a.env[0, EK.E_END] = self.capacity - 1
        rows = np.asarray(snap["trades"], dtype=np.float64).reshape(-1, K.N_TRADE)
        self.ensure_trade_room(len(rows))
        self.trades[: len(rows)] = rows
        if self.core.risk is not None and snap.get("risk") is not None:
            self.core.risk[0].load_state_dict(snap["risk"][0])
        self.core.risk_counts[0] = {str(k): int(v) for k, v in snap["risk_counts"].items()}
        self.core.last_reasons[0] = tuple(snap.get("last_reasons", ()))

    def ensure_trade_room(self, rows: int = 0) -> None:
        """Grow the trade-record buffer when one more bar's records might not fit."""
        n = max(int(self.core.args.st[0, K.N_RECORDS]), rows)
        if self.trades.shape[0] - n < self._margin:
            grown = np.zeros((2 * self.trades.shape[0] + rows, K.N_TRADE))
            grown[: len(self.trades)] = self.trades
            self.trades = grown
            self.core.attach_trades(grown)

    # ------------------------------------------------------------------------- bars
    def add_bar(self) -> int:
        """Write the row of the Dataset's newest bar (appended to :attr:`data` just before)
        into the core's arrays; returns its (core) row."""
        ds = self.data.dataset.slice(self.origin)
        n = len(ds) - 1
        if n != self.n:
            raise RuntimeError(f"mirror: expected row {self.n}, the dataset has {n + 1} rows")
        if n + 2 > self.capacity:
            snap = self.snapshot()
            self._build(2 * self.capacity)
            self.restore(snap)
            # the rebuilt core has every known row already (built from the dataset)
            self._env_atr.extend(ds.ohlcv)
            if self._slip_atr is not None:
                self._slip_atr.extend(ds.ohlcv)
            self.n += 1
            return n
        core = self.core
        a = core.args
        self.ds.timestamps[n] = ds.timestamps[n]
        self.ds.ohlcv[n] = ds.ohlcv[n]
        self.ds.features[n] = ds.features[n]
        self.ds.signals[n] = ds.signals[n]
        for k, v in ds.extras.items():
            self.ds.extras[k][n] = v[n]
        a.market[n] = market_matrix(self.ds.slice(n, n + 1), self.normalizer,
                                    self.config.obs_clip)[0]
        env_atr = self._env_atr.extend(ds.ohlcv)
        if len(a.atr):
            a.atr[n] = env_atr
        eng = self.config.engine
        slip = None
        if self._slip_atr is not None:
            value = self._slip_atr.extend(ds.ohlcv)
            slip = np.array([self._slip_atr.values[-2], value])
        spread = (self.ds.extras["spread"][n - 1: n + 1]
                  if eng.costs.spread == "column" else None)
        a.mkt[n] = market_array(self.ds.ohlcv[n - 1: n + 1], eng, spread, slip)[1]
        core.refresh_vol(n)  # env.vol_target sizes with the realised vol at this close
        if eng.instrument.funding != "none":
            # the rate booked at this bar's open; the schedule carries the last rate given, so
            # it reads the rates so far (perpetuals only)
            rates = self.ds.extras.get("funding_rate")
            a.mkt[n, K.M_FUNDING] = funding_rates(
                eng.instrument, None if rates is None else rates[: n + 1],
                self.ds.timestamps[: n + 1], n + 1)[n]
        self.n += 1
        return n

    # ------------------------------------------------------------------------- stepping
    @property
    def bar(self) -> int:
        """The core row the account is at (as of its close; Dataset row ``origin + bar``)."""
        return int(self.core.args.st[0, K.BAR])

    @property
    def state(self) -> np.ndarray:
        """The account's state vector (``K.*`` slots; read only)."""
        return self.core.args.st[0]

    def step(self) -> tuple[float, bool, bool]:
        """Process the next bar (known already: :meth:`add_bar`) with the orders decided at the
        last close; ``(reward, terminated, truncated)``."""
        if self.bar + 1 >= self.n:
            raise RuntimeError("mirror: the next bar is not known yet")
        self.ensure_trade_room()
        reward, term, trunc, _ = self.core.step_decided()
        return float(reward), bool(term), bool(trunc)

    def decision_due(self) -> bool:
        """Whether the policy decides at this close (``env.decision_interval``)."""
        return self.core.decision_due(0)

    def decide(self, action: Any) -> tuple[float, float, float, bool]:
        """Decide at the current close: the action through the scheme and the risk manager;
        ``(target, sl, tp, invalid)`` (NaN target: the episode is done, or no order). ``None``:
        no decision at this close (between two of ``decision_interval``): no order, but the
        risk manager still acts, as in the backtest."""
        core = self.core
        before = core.env[0, EK.E_INVALID]
        if action is None:
            core.actions[...] = np.nan
        else:
            core.accept_actions(action)
        core.decide()
        return (float(core.targets[0]), float(core.sl[0]), float(core.tp[0]),
                bool(core.env[0, EK.E_INVALID] > before))

    def observation_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """The observation buffers (market window, account block) at the current close."""
        return self.core.obs_market[0], self.core.obs_account[0]
