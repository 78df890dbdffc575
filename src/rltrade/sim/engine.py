"""The execution engine: where orders become fills and fills become money.

:class:`ExecutionEngine` keeps one account, :class:`BatchEngine` many (each at its own bar);
both are thin Python shells over the numba kernels of :mod:`rltrade.sim.kernels`, which hold
every rule once. Conventions (timing, costs, constraints, margin, trade records) are in
``docs/engine.md``::

    eng = ExecutionEngine(ohlcv, EngineConfig(), timestamps=ts)
    eng.reset(start=0)                     # the account as of the close of bar 0
    eng.submit(Order.target(10, sl=95.0))  # decided after the close of bar 0
    eng.advance()                          # bar 1: fill at its open, stop inside it, mark
    eng.step(0.0)                          # = submit(Order.target(0.0)) + advance()
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from rltrade.errors import ConfigError, DataError, RLTradeError
from rltrade.sim import kernels as K
from rltrade.sim.config import EngineConfig
from rltrade.sim.instruments import funding_rates

if TYPE_CHECKING:
    import pandas as pd

    from rltrade.features.dataset import Dataset

__all__ = [
    "ADJUSTMENTS",
    "EXIT_REASONS",
    "REJECTION_REASONS",
    "TRADE_DTYPE",
    "Account",
    "BatchEngine",
    "EngineError",
    "ExecutionEngine",
    "Order",
]


class EngineError(RLTradeError):
    """The engine was used out of order (advanced past the last bar, reset out of range)."""


#: Why an order was dropped (nothing else changed), by kernel code.
REJECTION_REASONS: dict[int, str] = {
    K.R_BANKRUPT: "bankrupt",
    K.R_BAD_QUANTITY: "bad_quantity",
    K.R_BAD_PRICE: "bad_price",
    K.R_BAD_LEVEL: "bad_stop_level",
    K.R_BAD_VALIDITY: "bad_validity",
    K.R_QUEUE_FULL: "queue_full",
    K.R_END_OF_DATA: "end_of_data",
    K.R_MIN_NOTIONAL: "min_notional",
}
#: What the engine did to orders it accepted, by kernel code.
ADJUSTMENTS: dict[int, str] = {
    K.A_CLAMP_SHORT: "clamped_short",
    K.A_CLAMP_MAX_POSITION: "clamped_max_position",
    K.A_CLAMP_LEVERAGE: "clamped_leverage",
    K.A_LOT_ROUNDED: "lot_rounded",
    K.A_DEAD_ZONE: "dead_zone",
    K.A_EXPIRED: "limit_expired",
    K.A_CANCELLED: "cancelled",
    K.A_LOTS_MERGED: "lots_merged",
    K.A_TOUCH_MISSED: "touch_missed",
}
#: Exit reasons of trade records.
EXIT_REASONS: tuple[str, ...] = ("order", "stop_loss", "take_profit", "liquidation", "end")

#: One closed (part of a) lot. ``qty > 0``; ``side`` +1 long, -1 short; prices are reference
#: prices (before spread and slippage); ``net_pnl = gross_pnl - fees - spread_cost -
#: slippage_cost - funding`` (``funding``: paid while the lot was open; negative = received).
TRADE_DTYPE = np.dtype([
    ("entry_bar", np.int64),
    ("exit_bar", np.int64),
    ("entry_time", "datetime64[ns]"),
    ("exit_time", "datetime64[ns]"),
    ("side", np.int8),
    ("qty", np.float64),
    ("entry_price", np.float64),
    ("exit_price", np.float64),
    ("gross_pnl", np.float64),
    ("fees", np.float64),
    ("spread_cost", np.float64),
    ("slippage_cost", np.float64),
    ("funding", np.float64),
    ("net_pnl", np.float64),
    ("duration_bars", np.int64),
    ("exit_reason", "U11"),
    ("stop_loss", np.bool_),
    ("take_profit", np.bool_),
    ("liquidation", np.bool_),
    ("forced_close", np.bool_),
])

_NAN = math.nan
_INVALID = -1.0  # a stop level the kernel rejects as malformed


# ------------------------------------------------------------------------------- orders
@dataclass(frozen=True, slots=True)
class Order:
    """An order, decided after the close of the account's current bar.

    Build it with :meth:`target`, :meth:`delta` or :meth:`limit`. Values are checked when the
    engine receives it: a malformed order (NaN or infinite size or price, a stop on the wrong
    side...) is rejected with a reason, counted, and changes nothing.

    :param kind: ``"target"`` (market, to a position), ``"delta"`` (market, by units) or
        ``"limit"`` (buy below / sell above ``price``, by units).
    :param units: target position or signed quantity (+ buy, - sell) in units.
    :param price: the limit price.
    :param sl: stop-loss level for the resulting position; ``None`` keeps the current level,
        ``0`` removes it.
    :param tp: take-profit level, same rules.
    :param bars_valid: limit orders: live for this many bars from activation; ``None`` =
        until cancelled.
    """

    kind: Literal["target", "delta", "limit"]
    units: float
    price: float | None = None
    sl: float | None = None
    tp: float | None = None
    bars_valid: int | None = None

    @classmethod
    def target(cls, units: float, *, sl: float | None = None, tp: float | None = None) -> Order:
        """Market order to hold ``units`` (signed) after the fill."""
        return cls("target", units, sl=sl, tp=tp)

    @classmethod
    def delta(cls, units: float, *, sl: float | None = None, tp: float | None = None) -> Order:
        """Market order to buy (``units > 0``) or sell (``units < 0``) this many units."""
        return cls("delta", units, sl=sl, tp=tp)

    @classmethod
    def limit(cls, price: float, units: float, *, bars_valid: int | None = None,
              sl: float | None = None, tp: float | None = None) -> Order:
        """Limit order: buy ``units > 0`` at ``price`` or lower, sell ``units < 0`` at
        ``price`` or higher."""
        return cls("limit", units, price=price, sl=sl, tp=tp, bars_valid=bars_valid)

    @property
    def side(self) -> int:
        """+1 buy, -1 sell, 0 for a target order (its side depends on the position)."""
        if self.kind == "target":
            return 0
        u = _number(self.units)
        return 1 if u > 0 else -1 if u < 0 else 0

    def encode(self) -> tuple[float, float, float, float, float, float]:
        """``(kind, units, price, sl, tp, bars_valid)`` as the kernel reads them."""
        kind = {"target": K.K_TARGET, "delta": K.K_DELTA, "limit": K.K_LIMIT}.get(self.kind)
        if kind is None:
            return (K.K_DELTA, _NAN, _NAN, _NAN, _NAN, _NAN)  # rejected as bad_quantity
        if self.bars_valid is None:
            valid = math.inf
        elif isinstance(self.bars_valid, bool):
            valid = _NAN
        else:
            valid = _number(self.bars_valid)
        return (float(kind), _number(self.units), _number(self.price), _level(self.sl),
                _level(self.tp), valid)


def _number(x: Any) -> float:
    """``float(x)``, NaN for anything that is not a real number (rejected downstream)."""
    if x is None or isinstance(x, bool | str | bytes):
        return _NAN
    try:
        return float(x)
    except (TypeError, ValueError):
        return _NAN


def _level(x: Any) -> float:
    if x is None:
        return _NAN  # keep
    v = _number(x)
    return v if math.isfinite(v) and v >= 0 else _INVALID


# ------------------------------------------------------------------------------- snapshot
@dataclass(frozen=True)
class Account:
    """The state of one account as of the close of bar ``bar``.

    ``equity == cash + position * close[bar]`` and
    ``equity == initial_equity + realized + unrealized``; ``realized`` is the sum of the
    closed-trade ``net_pnl``; ``unrealized`` is the open lots' gross PnL at the close minus the
    entry costs still attached to them. ``lots`` has columns ``entry_bar, entry_price, qty``
    (signed), oldest first.
    """

    bar: int
    timestamp: np.datetime64 | None
    cash: float
    position: float
    equity: float
    initial_equity: float
    realized: float
    unrealized: float
    fees: float
    spread_cost: float
    slippage_cost: float
    funding: float
    margin_used: float
    peak: float
    drawdown: float
    max_drawdown: float
    bankrupt: bool
    stop_loss: float | None
    take_profit: float | None
    n_trades: int
    n_wins: int
    n_fills: int
    turnover: float
    liquidations: int
    stop_exits: int
    take_profit_exits: int
    pending_orders: int
    lots: np.ndarray

    @property
    def costs(self) -> float:
        """Every cost paid so far: fees + spread + slippage + funding (funding received
        counts negative)."""
        return self.fees + self.spread_cost + self.slippage_cost + self.funding


def _account(st: np.ndarray, lots: np.ndarray, timestamps: np.ndarray | None) -> Account:
    n = int(st[K.LOT_COUNT])
    head = int(st[K.LOT_HEAD])
    rows = lots[(head + np.arange(n)) % lots.shape[0]]
    side = 1.0 if st[K.POS] > 0 else -1.0
    table = np.column_stack([rows[:, K.L_BAR], rows[:, K.L_PRICE], side * rows[:, K.L_QTY]])
    bar = int(st[K.BAR])
    return Account(
        bar=bar,
        timestamp=None if timestamps is None else timestamps[bar].astype("datetime64[ns]"),
        cash=float(st[K.CASH]),
        position=float(st[K.POS]),
        equity=float(st[K.EQUITY]),
        initial_equity=float(st[K.INITIAL_EQUITY]),
        realized=float(st[K.REALIZED]),
        unrealized=float(st[K.UNREALIZED]),
        fees=float(st[K.FEES]),
        spread_cost=float(st[K.SPREAD_COST]),
        slippage_cost=float(st[K.SLIPPAGE_COST]),
        funding=float(st[K.FUNDING]),
        margin_used=float(st[K.MARGIN]),
        peak=float(st[K.PEAK]),
        drawdown=float(st[K.DRAWDOWN]),
        max_drawdown=float(st[K.MAX_DRAWDOWN]),
        bankrupt=bool(st[K.BANKRUPT]),
        stop_loss=float(st[K.SL]) or None,
        take_profit=float(st[K.TP]) or None,
        n_trades=int(st[K.N_TRADES]),
        n_wins=int(st[K.N_WINS]),
        n_fills=int(st[K.N_FILLS]),
        turnover=float(st[K.TURNOVER]),
        liquidations=int(st[K.N_LIQUIDATIONS]),
        stop_exits=int(st[K.N_STOP_EXITS]),
        take_profit_exits=int(st[K.N_TP_EXITS]),
        pending_orders=int(st[K.ORDER_COUNT]),
        lots=table,
    )


def reason_counts(st: np.ndarray, names: dict[int, str]) -> dict[str, int]:
    """Counts by name; ``st`` is one account's state or a stack of them (summed)."""
    col = st[..., K.COUNTS:K.COUNTS + K.N_CODES]
    total = col.reshape(-1, K.N_CODES).sum(axis=0)
    return {name: int(total[code]) for code, name in names.items()}


# ------------------------------------------------------------------------------- inputs
def market_array(ohlcv: Any, config: EngineConfig, spread: Any, atr: Any) -> np.ndarray:
    """The kernels' market array ``[T, N_MKT]`` (validated prices, half-spread, ATR slippage;
    the funding column is filled by :func:`_funding`).

    Row ``t`` depends on bar ``t`` alone, except the ATR slippage column, computed on all rows
    when ``atr`` is ``None``: paper trading builds the row of a new bar from it with ``atr``
    given (:class:`rltrade.live.mirror.EngineMirror`).
    """
    arr = np.asarray(ohlcv, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
        raise DataError(f"ohlcv must be an array [T, 5] (or [T, 4]), got shape {arr.shape}")
    t_len = arr.shape[0]
    if t_len < 2:
        raise DataError(f"the engine needs at least 2 bars, got {t_len}")
    mkt = np.zeros((t_len, K.N_MKT))
    first = int(K.copy_bars(arr, mkt))
    if first >= 0:
        raise DataError(
            f"ohlcv bar {first} is not a valid bar (prices must be finite, > 0, "
            f"low <= open, close <= high): {arr[first, :4].tolist()}; repair the bars first"
        )
    h, lo, c = arr[:, 1], arr[:, 2], arr[:, 3]
    costs = config.costs
    source = config.effective_spread
    if spread is not None and costs.spread != "column":
        raise ConfigError(
            "a spread column was given but costs.spread is 'fixed'; set costs.spread='column' "
            "(with spread_unit) to use it"
        )
    if source == "fixed":
        mkt[:, K.M_HALF_SPREAD] = costs.spread_bps / 1e4 / 2
    elif source == "column":
        if spread is None:
            raise ConfigError(
                "costs.spread='column' needs the per-bar spread: pass spread= (or a Dataset with "
                "a 'spread' extra column)"
            )
        col = _column(spread, t_len, "spread")
        mkt[:, K.M_HALF_SPREAD] = col / (1e4 if costs.spread_unit == "bps" else 1.0) / 2
    if config.effective_slippage == "atr":
        if atr is None:
            values = K.atr_filled(h.copy(), lo.copy(), c.copy(), costs.atr_period)
        else:
            values = _column(atr, t_len, "atr")
        mkt[:, K.M_ATR_SLIP] = costs.slippage_atr * values
    return mkt


def _funding(mkt: np.ndarray, config: EngineConfig, funding_rate: Any,
             timestamps: np.ndarray | None) -> None:
    """Fill the market array's funding column: the rate booked at each bar's open."""
    if config.instrument.funding != "none":
        mkt[:, K.M_FUNDING] = funding_rates(config.instrument, funding_rate, timestamps,
                                            len(mkt))
    elif funding_rate is not None:
        raise ConfigError(
            "a funding_rate column was given but engine.instrument.funding is 'none'; set it to "
            "'schedule' or 'column' to book funding"
        )


def _column(values: Any, t_len: int, name: str) -> np.ndarray:
    col = np.asarray(values, dtype=np.float64)
    if col.shape != (t_len,):
        raise DataError(f"{name} must have one value per bar ({t_len}), got shape {col.shape}")
    bad = ~np.isfinite(col) | (col < 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name} must be finite and >= 0 on every bar; bar {first} is {col[first]}")
    return col


def _config_vector(config: EngineConfig) -> np.ndarray:
    cfg = np.zeros(K.N_CFG)
    costs = config.costs
    cfg[K.C_MAKER] = costs.maker_fee
    cfg[K.C_TAKER] = costs.taker_fee
    slip = config.effective_slippage
    cfg[K.C_SLIP_MODE] = {"fixed": K.SLIP_FIXED, "random": K.SLIP_RANDOM}.get(slip, K.SLIP_NONE)
    cfg[K.C_SLIP_FRAC] = costs.slippage_bps / 1e4
    cfg[K.C_TOUCH_PROB] = config.effective_touch_prob
    cfg[K.C_LAG] = config.effective_lag
    cfg[K.C_AT_CLOSE] = 1.0 if config.fill == "close" else 0.0
    cfg[K.C_LEVERAGE] = config.leverage
    cfg[K.C_MAX_POSITION] = math.inf if config.max_position is None else config.max_position
    cfg[K.C_DEAD_ZONE] = config.dead_zone
    cfg[K.C_LOT_SIZE] = config.lot_size
    cfg[K.C_MIN_NOTIONAL] = config.min_notional
    cfg[K.C_ALLOW_SHORT] = 1.0 if config.allow_short else 0.0
    cfg[K.C_MMR] = config.maintenance_margin
    cfg[K.C_INITIAL_CASH] = config.initial_cash
    cfg[K.C_INITIAL_POSITION] = config.initial_position
    inst = config.instrument
    cfg[K.C_MULTIPLIER] = inst.multiplier
    cfg[K.C_TICK] = inst.tick_size
    cfg[K.C_FEE_UNIT] = costs.fee_per_unit
    cfg[K.C_MIN_FEE] = costs.min_fee
    return cfg


def _dataset_columns(dataset: Dataset, config: EngineConfig) -> tuple[Any, Any]:
    """The dataset's ``spread`` and ``funding_rate`` extras the config uses (else ``None``)."""
    spread = dataset.extras.get("spread") if config.costs.spread == "column" else None
    funding = (dataset.extras.get("funding_rate") if config.instrument.funding != "none"
               else None)
    return spread, funding


def _timestamps(timestamps: Any, t_len: int) -> np.ndarray | None:
    if timestamps is None:
        return None
    if hasattr(timestamps, "as_unit"):  # a pandas DatetimeIndex (tz-aware: asi8 is UTC)
        timestamps = timestamps.as_unit("ns").asi8
    ts = np.asarray(timestamps)
    if ts.dtype.kind == "M":
        ts = ts.astype("datetime64[ns]").view(np.int64)
    ts = ts.astype(np.int64)
    if ts.shape != (t_len,):
        raise DataError(f"timestamps must have one value per bar ({t_len}), got {ts.shape}")
    return ts


def trade_table(buf: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray:
    out = np.zeros(len(buf), dtype=TRADE_DTYPE)
    entry = buf[:, K.T_ENTRY_BAR].astype(np.int64)
    exit_ = buf[:, K.T_EXIT_BAR].astype(np.int64)
    reason = buf[:, K.T_REASON].astype(np.int64)
    out["entry_bar"] = entry
    out["exit_bar"] = exit_
    if timestamps is None:
        out["entry_time"] = np.datetime64("NaT", "ns")
        out["exit_time"] = np.datetime64("NaT", "ns")
    else:
        out["entry_time"] = timestamps[entry].view("datetime64[ns]")
        out["exit_time"] = timestamps[exit_].view("datetime64[ns]")
    out["side"] = np.sign(buf[:, K.T_QTY]).astype(np.int8)
    out["qty"] = np.abs(buf[:, K.T_QTY])
    out["entry_price"] = buf[:, K.T_ENTRY_PRICE]
    out["exit_price"] = buf[:, K.T_EXIT_PRICE]
    out["gross_pnl"] = buf[:, K.T_GROSS]
    out["fees"] = buf[:, K.T_FEES]
    out["spread_cost"] = buf[:, K.T_SPREAD]
    out["slippage_cost"] = buf[:, K.T_SLIPPAGE]
    out["funding"] = buf[:, K.T_FUNDING]
    out["net_pnl"] = buf[:, K.T_NET]
    out["duration_bars"] = exit_ - entry
    out["exit_reason"] = np.asarray(EXIT_REASONS)[reason]
    out["stop_loss"] = reason == K.X_STOP
    out["take_profit"] = reason == K.X_TAKE_PROFIT
    out["liquidation"] = reason == K.X_LIQUIDATION
    out["forced_close"] = reason == K.X_END
    return out


class KernelArrays(NamedTuple):
    """The arrays the engine's kernels work on, by name: for code that fuses its own numba loop
    around :func:`rltrade.sim.kernels.step` (the trading envs) and for white-box tests of the
    account state. Mutating them outside the kernels voids every guarantee."""

    #: account state ``[N_STATE]`` (single engine) or ``[n, N_STATE]`` (batch); see ``K.*`` slots
    state: np.ndarray
    #: open FIFO lots
    lots: np.ndarray
    #: the order queue
    orders: np.ndarray
    #: the trade records (the batch engine keeps none: an empty array)
    trades: np.ndarray
    #: per-bar market matrix (prices, spread, ATR, funding)
    market: np.ndarray
    #: the config vector
    config: np.ndarray


class _Base:
    """What the single and the batch engine share: inputs, config, state arrays."""

    def __init__(self, ohlcv: Any, config: EngineConfig | None, n_accounts: int,
                 timestamps: Any, spread: Any, atr: Any, funding_rate: Any = None) -> None:
        if config is None:
            config = EngineConfig()
        elif isinstance(config, dict):
            config = EngineConfig.from_dict(config)
        elif not isinstance(config, EngineConfig):
            raise ConfigError(f"config must be an EngineConfig, got {type(config).__name__}")
        self.config: EngineConfig = config
        self._mkt = market_array(ohlcv, config, spread, atr)
        self._ts = _timestamps(timestamps, len(self._mkt))
        _funding(self._mkt, config, funding_rate, self._ts)
        self._cfg = _config_vector(config)
        self._state = np.zeros((n_accounts, K.N_STATE))
        self._lot_rows = np.zeros((n_accounts, config.lot_capacity, K.N_LOT))
        self._order_rows = np.zeros((n_accounts, config.order_capacity, K.N_ORDER))

    @property
    def n_bars(self) -> int:
        """Number of bars in the data."""
        return len(self._mkt)

    @property
    def close(self) -> np.ndarray:
        """Close prices (a read-only view)."""
        view = self._mkt[:, K.M_CLOSE]
        view.flags.writeable = False
        return view

    def _check_start(self, start: Any) -> int:
        s = int(start)
        if not 0 <= s < self.n_bars:
            raise EngineError(f"start bar {s} is outside the data (0 .. {self.n_bars - 1})")
        return s


# ------------------------------------------------------------------------------- single
class ExecutionEngine(_Base):
    """One account over an array of bars.

    :param ohlcv: float64 ``[T, 5]`` (open, high, low, close, volume; volume unused).
    :param config: the :class:`EngineConfig` (a mapping is validated into one).
    :param timestamps: int64 UTC ns (or datetime64) bar open times, for the trade table.
    :param spread: per-bar spread when ``costs.spread == "column"`` (unit ``costs.spread_unit``).
    :param atr: per-bar ATR for ``costs.slippage == "atr"``; computed when omitted.
    :param funding_rate: per-bar funding rate when ``instrument.funding`` is not ``"none"``
        (see :func:`rltrade.sim.instruments.funding_rates`).
    """

    def __init__(self, ohlcv: Any, config: EngineConfig | None = None, *,
                 timestamps: Any = None, spread: Any = None, atr: Any = None,
                 funding_rate: Any = None) -> None:
        super().__init__(ohlcv, config, 1, timestamps, spread, atr, funding_rate)
        self._st = self._state[0]
        self._lots = self._lot_rows[0]
        self._orders = self._order_rows[0]
        self._margin_rows = self.config.lot_capacity + 2 * self.config.order_capacity + 8
        self._trades = np.zeros((1024 + self._margin_rows, K.N_TRADE))
        self.reset(0)

    @classmethod
    def from_dataset(cls, dataset: Dataset, config: EngineConfig | None = None,
                     atr: Any = None) -> ExecutionEngine:
        """An engine on a :class:`~rltrade.features.dataset.Dataset` (its ``spread`` extra is
        used when ``costs.spread == "column"``, its ``funding_rate`` extra when the instrument
        pays funding)."""
        config = config or EngineConfig()
        spread, funding = _dataset_columns(dataset, config)
        return cls(dataset.ohlcv, config, timestamps=dataset.timestamps, spread=spread, atr=atr,
                   funding_rate=funding)

    def kernel_arrays(self) -> KernelArrays:
        """The :class:`KernelArrays` of this account (``state`` is ``[N_STATE]``; ``trades``
        the record buffer, of which ``len(self.trades)`` rows are filled)."""
        return KernelArrays(self._st, self._lots, self._orders, self._trades, self._mkt,
                            self._cfg)

    # -- lifecycle ---------------------------------------------------------------------------
    def reset(self, start: int = 0, *, seed: int | None = None) -> Account:
        """Start over as of the close of bar ``start``: initial cash and inventory, no orders,
        no trades.

        :param start: bar index.
        :param seed: seed of the random draws (default ``config.seed``).
        """
        s = self._check_start(start)
        seed = self.config.seed if seed is None else int(seed)
        K.reset_one(self._st, self._lots, self._orders, self._mkt, self._cfg, s, float(seed))
        return self.account

    def submit(self, order: Order) -> int | None:
        """Queue an order decided after the close of the current bar.

        :returns: the order id, or ``None`` when rejected (the reason is
            :attr:`last_rejection`, the count in :attr:`rejections`; nothing else changed).
        """
        if not isinstance(order, Order):
            raise TypeError(f"submit takes an Order, got {type(order).__name__}")
        kind, units, price, sl, tp, valid = order.encode()
        code = K.submit_one(self._st, self._orders, self._mkt, self._cfg, kind, units, price,
                            sl, tp, valid)
        return None if code else int(self._st[K.LAST_ORDER_ID])

    def advance(self) -> None:
        """Process the next bar: fills due at the previous close, market orders at the open,
        liquidation / stop-loss / take-profit inside the bar, limit orders, the mark at the
        close."""
        flag = K.advance(self._st, self._lots, self._orders, self._trades, self._mkt, self._cfg)
        if flag:
            self._after(flag)

    def step(self, target: float, sl: float | None = None, tp: float | None = None) -> None:
        """Submit ``Order.target(target, sl=sl, tp=tp)`` and :meth:`advance` (the hot path).

        A hold (``target`` equal to the position, no ``sl``/``tp``, no order pending, no
        decision lag) submits no order: it could only fill as a no-op."""
        if sl is None and tp is None:
            try:
                target = float(target)
            except (TypeError, ValueError):
                target = _NAN  # rejected as bad_quantity; the bar is still processed
            flag = K.step(self._st, self._lots, self._orders, self._trades, self._mkt,
                          self._cfg, target, _NAN, _NAN)
        else:
            flag = K.step(self._st, self._lots, self._orders, self._trades, self._mkt,
                          self._cfg, _number(target), _level(sl), _level(tp))
        if flag:
            self._after(flag)

    def close_all(self, cancel_orders: bool = True) -> None:
        """Force-close the position at the current bar's close (a taker fill; the trades are
        flagged ``forced_close``); pending orders are cancelled unless ``cancel_orders=False``.
        """
        flag = K.close_all(self._st, self._lots, self._orders, self._trades, self._mkt,
                           self._cfg, bool(cancel_orders))
        if flag:
            self._after(flag)

    def cancel(self, order_id: int) -> bool:
        """Cancel a pending order; ``False`` when no pending order has this id."""
        return bool(K.cancel_one(self._st, self._orders, float(order_id)))

    def cancel_all(self) -> int:
        """Cancel every pending order; returns how many."""
        n = int(self._st[K.ORDER_COUNT])
        K.cancel_all_one(self._st)
        return n

    def _after(self, flag: int) -> None:
        if flag & K.F_END:
            raise EngineError(
                f"no bar left to process: the account is at the last bar ({self.n_bars - 1}); "
                "check `done` before advancing"
            )
        if flag & K.F_GROW:
            n = int(self._st[K.N_RECORDS])
            grown = np.zeros((2 * len(self._trades), K.N_TRADE))
            grown[:n] = self._trades[:n]
            self._trades = grown
        if self._st[K.DROPPED_RECORDS]:  # pragma: no cover - guarded by F_GROW
            raise EngineError("internal error: trade records were dropped")

    # -- reading -----------------------------------------------------------------------------
    @property
    def bar(self) -> int:
        """Index of the bar whose close the account is at."""
        return int(self._st[K.BAR])

    @property
    def done(self) -> bool:
        """``True`` at the last bar (nothing left to advance)."""
        return int(self._st[K.BAR]) >= len(self._mkt) - 1

    @property
    def equity(self) -> float:
        """Equity at the close of the current bar."""
        return float(self._st[K.EQUITY])

    @property
    def position(self) -> float:
        """Signed position in units."""
        return float(self._st[K.POS])

    @property
    def cash(self) -> float:
        """Cash (negative when a long is financed by leverage)."""
        return float(self._st[K.CASH])

    @property
    def bankrupt(self) -> bool:
        """``True`` once equity reached zero (the account is frozen)."""
        return bool(self._st[K.BANKRUPT])

    @property
    def account(self) -> Account:
        """A snapshot of the account (see :class:`Account`)."""
        return _account(self._st, self._lots, self._ts)

    @property
    def trades(self) -> np.ndarray:
        """Closed trades so far, oldest exit first (a structured array of :data:`TRADE_DTYPE`)."""
        return trade_table(self._trades[:int(self._st[K.N_RECORDS])], self._ts)

    def trades_frame(self) -> pd.DataFrame:
        """:attr:`trades` as a DataFrame (times as UTC timestamps)."""
        import pandas as pd

        frame = pd.DataFrame(self.trades)
        for col in ("entry_time", "exit_time"):
            frame[col] = frame[col].dt.tz_localize("UTC")
        return frame

    @property
    def pending(self) -> list[dict[str, float]]:
        """Pending orders in submission order (id, kind, units, price, sl, tp, bars)."""
        kinds = {K.K_TARGET: "target", K.K_DELTA: "delta", K.K_LIMIT: "limit"}
        out = []
        for row in self._orders[:int(self._st[K.ORDER_COUNT])]:
            out.append({
                "id": int(row[K.O_ID]),
                "kind": kinds[int(row[K.O_KIND])],
                "units": float(row[K.O_QTY]),
                "price": float(row[K.O_PRICE]),
                "sl": float(row[K.O_SL]),
                "tp": float(row[K.O_TP]),
                "active_from": int(row[K.O_ACTIVE]),
                "expires_after": float(row[K.O_EXPIRY]),
                "at_close": bool(row[K.O_AT_CLOSE]),
            })
        return out

    @property
    def rejections(self) -> dict[str, int]:
        """Rejected orders by reason (each rejection changed nothing)."""
        return reason_counts(self._st, REJECTION_REASONS)

    @property
    def adjustments(self) -> dict[str, int]:
        """Accepted orders the engine clamped, rounded or did not trade (dead zone), limit
        orders expired or cancelled, touch fills missed, lots merged, by name."""
        return reason_counts(self._st, ADJUSTMENTS)

    @property
    def last_rejection(self) -> str | None:
        """Reason of the last submission's rejection, ``None`` when it was accepted."""
        code = int(self._st[K.LAST_CODE])
        return REJECTION_REASONS.get(code) if code else None


# ------------------------------------------------------------------------------- batch
class BatchEngine(_Base):
    """``n_accounts`` independent accounts on the same bars, each at its own bar index.

    Every account follows exactly the rules of :class:`ExecutionEngine` (the same kernels);
    the batch keeps no per-trade records, only counts and sums (``n_trades``, ``n_wins``,
    ``realized``...). Account ``i`` draws its random numbers with seed ``config.seed + i``
    unless :meth:`reset` says otherwise.

    :param ohlcv: float64 ``[T, 5]``.
    :param config: the :class:`EngineConfig`.
    :param n_accounts: number of accounts.
    :param spread: per-bar spread for ``costs.spread == "column"``.
    :param atr: per-bar ATR for ``costs.slippage == "atr"``.
    """

    def __init__(self, ohlcv: Any, config: EngineConfig | None = None, n_accounts: int = 1, *,
                 timestamps: Any = None, spread: Any = None, atr: Any = None,
                 funding_rate: Any = None) -> None:
        if int(n_accounts) < 1:
            raise ConfigError(f"n_accounts must be >= 1, got {n_accounts}")
        super().__init__(ohlcv, config, int(n_accounts), timestamps, spread, atr, funding_rate)
        self.n_accounts = int(n_accounts)
        self._no_trades = np.zeros((0, K.N_TRADE))
        self._keep = np.full(self.n_accounts, _NAN)
        self.reset()

    @classmethod
    def from_dataset(cls, dataset: Dataset, config: EngineConfig | None = None,
                     n_accounts: int = 1, atr: Any = None) -> BatchEngine:
        """A batch engine on a :class:`~rltrade.features.dataset.Dataset`."""
        config = config or EngineConfig()
        spread, funding = _dataset_columns(dataset, config)
        return cls(dataset.ohlcv, config, n_accounts, timestamps=dataset.timestamps,
                   spread=spread, atr=atr, funding_rate=funding)

    def reset(self, indices: Sequence[int] | np.ndarray | None = None,
              starts: Sequence[int] | np.ndarray | int = 0,
              seeds: Sequence[int] | np.ndarray | None = None) -> None:
        """Reset the accounts ``indices`` (all when ``None``) to the close of ``starts``.

        :param indices: account indices.
        :param starts: one start bar per index, or one for all.
        :param seeds: one seed per index (default ``config.seed + index``).
        """
        idx = np.arange(self.n_accounts) if indices is None else np.asarray(indices, np.int64)
        if idx.ndim != 1 or ((idx < 0) | (idx >= self.n_accounts)).any():
            raise EngineError(f"account indices must be in 0 .. {self.n_accounts - 1}")
        st = np.broadcast_to(np.asarray(starts, dtype=np.int64), idx.shape).copy()
        if ((st < 0) | (st >= self.n_bars)).any():
            raise EngineError(f"start bars must be in 0 .. {self.n_bars - 1}")
        if seeds is None:
            sd = (self.config.seed + idx).astype(np.float64)
        else:
            sd = np.broadcast_to(np.asarray(seeds, dtype=np.float64), idx.shape).copy()
        K.batch_reset(self._state, self._lot_rows, self._order_rows, self._mkt, self._cfg, idx,
                      st, sd)

    def kernel_arrays(self) -> KernelArrays:
        """The :class:`KernelArrays` of every account (``state`` is ``[n, N_STATE]``)."""
        return KernelArrays(self._state, self._lot_rows, self._order_rows, self._no_trades,
                            self._mkt, self._cfg)

    def step(self, targets: np.ndarray, sl: np.ndarray | None = None,
             tp: np.ndarray | None = None) -> int:
        """Every account submits a market order for its target and processes its next bar.

        :param targets: float64 ``[n_accounts]`` target positions in units (NaN is rejected as
            ``bad_quantity`` and the account still advances).
        :param sl: stop-loss levels: a price sets, ``0`` clears, NaN keeps the current level.
        :param tp: take-profit levels, same encoding.
        :returns: how many accounts were already at the last bar (those are left unchanged).
        """
        t = np.ascontiguousarray(targets, dtype=np.float64)
        if t.shape != (self.n_accounts,):
            raise EngineError(f"targets must have shape ({self.n_accounts},), got {t.shape}")
        s = self._keep if sl is None else self._levels(sl)
        p = self._keep if tp is None else self._levels(tp)
        return int(K.batch_step(self._state, self._lot_rows, self._order_rows, self._no_trades,
                                self._mkt, self._cfg, t, s, p))

    def _levels(self, values: Any) -> np.ndarray:
        v = np.array(values, dtype=np.float64)
        if v.shape != (self.n_accounts,):
            raise EngineError(f"stop levels must have shape ({self.n_accounts},), got {v.shape}")
        v[np.isinf(v) | (v < 0)] = _INVALID
        return v

    def close_all(self, indices: Sequence[int] | np.ndarray | None = None,
                  cancel_orders: bool = True) -> None:
        """Force-close the accounts ``indices`` (all when ``None``) at their current close."""
        idx = np.arange(self.n_accounts) if indices is None else np.asarray(indices, np.int64)
        K.batch_close_all(self._state, self._lot_rows, self._order_rows, self._no_trades,
                          self._mkt, self._cfg, idx, bool(cancel_orders))

    def account(self, i: int) -> Account:
        """Snapshot of account ``i``."""
        return _account(self._state[i], self._lot_rows[i], self._ts)

    def _col(self, slot: int) -> np.ndarray:
        return self._state[:, slot].copy()

    @property
    def bar(self) -> np.ndarray:
        """Each account's current bar."""
        return self._state[:, K.BAR].astype(np.int64)

    @property
    def done(self) -> np.ndarray:
        """``True`` for accounts at the last bar."""
        return self._state[:, K.BAR] >= self.n_bars - 1

    @property
    def cash(self) -> np.ndarray:
        """Each account's cash."""
        return self._col(K.CASH)

    @property
    def position(self) -> np.ndarray:
        """Each account's signed position in units."""
        return self._col(K.POS)

    @property
    def equity(self) -> np.ndarray:
        """Each account's equity at its current close."""
        return self._col(K.EQUITY)

    @property
    def realized(self) -> np.ndarray:
        """Each account's realized PnL (sum of its closed trades' net PnL)."""
        return self._col(K.REALIZED)

    @property
    def unrealized(self) -> np.ndarray:
        """Each account's unrealized PnL."""
        return self._col(K.UNREALIZED)

    @property
    def fees(self) -> np.ndarray:
        """Fees each account paid."""
        return self._col(K.FEES)

    @property
    def funding(self) -> np.ndarray:
        """Funding each account paid (negative: received)."""
        return self._col(K.FUNDING)

    @property
    def drawdown(self) -> np.ndarray:
        """Each account's drawdown from its running peak equity."""
        return self._col(K.DRAWDOWN)

    @property
    def bankrupt(self) -> np.ndarray:
        """Which accounts are bankrupt (frozen)."""
        return self._state[:, K.BANKRUPT] != 0

    @property
    def n_trades(self) -> np.ndarray:
        """How many (parts of) lots each account closed."""
        return self._state[:, K.N_TRADES].astype(np.int64)

    @property
    def rejections(self) -> dict[str, int]:
        """Rejected orders by reason, summed over accounts."""
        return reason_counts(self._state, REJECTION_REASONS)

    @property
    def adjustments(self) -> dict[str, int]:
        """Adjustments by name, summed over accounts."""
        return reason_counts(self._state, ADJUSTMENTS)

    def counts_by_account(self) -> np.ndarray:
        """``[n_accounts, N_CODES]`` counts of every code (see ``REJECTION_REASONS`` and
        ``ADJUSTMENTS`` for the columns)."""
        return self._state[:, K.COUNTS:K.COUNTS + K.N_CODES].astype(np.int64)
