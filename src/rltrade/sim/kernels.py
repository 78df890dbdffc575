"""Numba kernels of the execution engine: every fill, cost and accounting rule, once.

State is struct-of-arrays, all float64:

* ``st[N_STATE]`` per account: the scalars named by the slot constants below (cash, position,
  equity, counters...);
* ``lots[capacity, N_LOT]`` per account: a FIFO ring of open lots (oldest at ``st[LOT_HEAD]``);
* ``orders[capacity, N_ORDER]`` per account: pending orders in submission order;
* ``trades[rows, N_TRADE]``: closed-trade records, written only when it has rows (the single
  engine passes a growing buffer, the batch engine an empty one);
* ``mkt[T, N_MKT]``: open, high, low, close, half-spread (fraction of price), ATR slippage
  (price units per unit traded) and the funding rate booked at the bar's open (0 = none) of
  every bar;
* ``cfg[N_CFG]``: the configuration as numbers.

:func:`advance_one` processes one bar of one account. The single engine calls it for its one
account; :func:`batch_step` loops over accounts. The rules are documented in docs/engine.md.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# The kernels below never allocate: they only read and write arrays they are given. Compiled
# without numba's reference-counting runtime (``_nrt=False``) they skip an atomic incref/decref
# of every array argument on every call and exit path, which is most of the cost of a bar
# (measured: 3x on the batched path). The option is private to numba; without it, the kernels
# are the same, only slower (NO_NRT: the option for every package's allocation-free kernels).
# ``error_model="numpy"``: a float division by zero gives inf/NaN like numpy instead of a
# branch that raises (no kernel divides by a value that can be zero).
try:
    from numba.core.cpu import CPUTargetOptions

    NO_NRT: dict[str, bool] = {"_nrt": False} if hasattr(CPUTargetOptions, "_nrt") else {}
except ImportError:  # pragma: no cover - depends on the numba version
    NO_NRT = {}
_jit = njit(cache=True, error_model="numpy", **NO_NRT)
_inline = njit(cache=True, error_model="numpy", inline="always", **NO_NRT)

# ---------------------------------------------------------------------------- account slots
BAR = 0  # the account is as of the close of this bar
START = 1
CASH = 2
POS = 3
EQUITY = 4
UNREALIZED = 5
REALIZED = 6
FEES = 7
SPREAD_COST = 8
SLIPPAGE_COST = 9
MARGIN = 10
PEAK = 11
DRAWDOWN = 12
MAX_DRAWDOWN = 13
INITIAL_EQUITY = 14
BANKRUPT = 15
SL = 16  # stop-loss level of the position (0 = none)
TP = 17  # take-profit level of the position (0 = none)
LOT_HEAD = 18
LOT_COUNT = 19
ORDER_COUNT = 20
NEXT_ORDER_ID = 21
N_TRADES = 22  # closed (parts of) lots so far
N_RECORDS = 23  # records written to the trades buffer
N_FILLS = 24
N_WINS = 25
TURNOVER = 26  # traded notional at reference prices
SEED = 27
N_LIQUIDATIONS = 28
LOT_QTY = 29  # signed sum of open lot quantities
LOT_BASIS = 30  # signed sum of qty * entry price of open lots
LOT_COST = 31  # entry costs still attached to open lots
LAST_CODE = 32  # code of the last submission (0 = accepted)
LAST_ORDER_ID = 33
N_STOP_EXITS = 34
N_TP_EXITS = 35
DROPPED_RECORDS = 36  # must stay 0: records that found no room in the trades buffer
FUNDING = 37  # funding paid so far (negative: received)
COUNTS = 40  # COUNTS + code: how many times each code below happened
N_CODES = 18
N_STATE = COUNTS + N_CODES

# ------------------------------------------------------------------------------- codes
OK = 0
# rejections: the order is dropped and nothing else changes
R_BANKRUPT = 1
R_BAD_QUANTITY = 2
R_BAD_PRICE = 3
R_BAD_LEVEL = 4
R_BAD_VALIDITY = 5
R_QUEUE_FULL = 6
R_END_OF_DATA = 7
R_MIN_NOTIONAL = 8
N_REJECTIONS = 9  # codes 1..8 are rejections
# adjustments and outcomes: the order went through, changed or not traded
A_CLAMP_SHORT = 9
A_CLAMP_MAX_POSITION = 10
A_CLAMP_LEVERAGE = 11
A_LOT_ROUNDED = 12
A_DEAD_ZONE = 13
A_EXPIRED = 14
A_CANCELLED = 15
A_LOTS_MERGED = 16
A_TOUCH_MISSED = 17

# ------------------------------------------------------------------------------- lots
L_PRICE = 0
L_QTY = 1  # absolute quantity (the side is the position's)
L_BAR = 2
L_FEE = 3  # entry costs not yet attributed to a closed trade
L_SPREAD = 4
L_SLIPPAGE = 5
L_FUNDING = 6  # funding paid while the lot was open, not yet attributed to a closed trade
N_LOT = 7

# ------------------------------------------------------------------------------- orders
O_ID = 0
O_KIND = 1
O_QTY = 2
O_PRICE = 3
O_SL = 4  # NaN = keep the position's level, 0 = clear, > 0 = set
O_TP = 5
O_ACTIVE = 6  # first bar it can fill at the open / the bar at whose close it fills
O_EXPIRY = 7  # last bar a limit order is live
O_AT_CLOSE = 8
O_SUBMITTED = 9
N_ORDER = 10

# kinds, exit reasons, liquidity and random streams are floats: numba compiles a function
# once per *value* of an integer constant argument, once per type of a float one
K_TARGET = 1.0
K_DELTA = 2.0
K_LIMIT = 3.0

# ------------------------------------------------------------------------------- trades
T_ENTRY_BAR = 0
T_EXIT_BAR = 1
T_QTY = 2  # signed: > 0 long, < 0 short
T_ENTRY_PRICE = 3
T_EXIT_PRICE = 4
T_GROSS = 5
T_FEES = 6
T_SPREAD = 7
T_SLIPPAGE = 8
T_NET = 9
T_REASON = 10
T_FUNDING = 11
N_TRADE = 12

X_ORDER = 0.0
X_STOP = 1.0
X_TAKE_PROFIT = 2.0
X_LIQUIDATION = 3.0
X_END = 4.0

# ------------------------------------------------------------------------------- market, config
M_OPEN = 0
M_HIGH = 1
M_LOW = 2
M_CLOSE = 3
M_HALF_SPREAD = 4
M_ATR_SLIP = 5
M_FUNDING = 6  # funding rate paid at this bar's open by longs (received by shorts); 0 = none
N_MKT = 7

C_MAKER = 0
C_TAKER = 1
C_SLIP_MODE = 2  # 0 none / ATR (precomputed in the market array), 1 fixed, 2 random
C_SLIP_FRAC = 3
C_TOUCH_PROB = 4
C_LAG = 5
C_AT_CLOSE = 6
C_LEVERAGE = 7
C_MAX_POSITION = 8
C_DEAD_ZONE = 9
C_LOT_SIZE = 10
C_MIN_NOTIONAL = 11
C_ALLOW_SHORT = 12
C_MMR = 13
C_INITIAL_CASH = 14
C_INITIAL_POSITION = 15
C_MULTIPLIER = 16  # contract multiplier: money per unit of price per unit of position
C_TICK = 17  # tick size of fill prices (0 = any price)
C_FEE_UNIT = 18  # fee per unit traded (per contract / per share)
C_MIN_FEE = 19  # minimum fee of one fill
N_CFG = 20

SLIP_NONE = 0.0
SLIP_FIXED = 1.0
SLIP_RANDOM = 2.0

# return flags of advance / step / close_all
F_GROW = 1  # the trades buffer is nearly full: grow it before the next call
F_END = 2  # no bar left to process

TAKER = 0.0  # market, stop-loss, liquidation fills
MAKER = 1.0  # limit and take-profit fills

_GTC = 1e18
_STREAM_SLIPPAGE = 1.0
_STREAM_TOUCH = 2.0


# ------------------------------------------------------------------------------- helpers
@_inline
def _mix(z: np.uint64) -> np.uint64:
    """splitmix64 finalizer."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@_jit
def uniform(seed: float, bar: int, stream: float, k: float) -> float:
    """A uniform draw in ``[0, 1)`` that depends only on ``(seed, bar, stream, k)``.

    Counter-based: no generator state to carry, so the same account history draws the same
    numbers whatever else runs (bit for bit, in single and batch engines alike).
    """
    golden = np.uint64(0x9E3779B97F4A7C15)
    z = _mix(np.uint64(np.int64(seed)) * golden + np.uint64(1))
    z = _mix(z ^ (np.uint64(bar) * golden))
    z = _mix(z ^ (np.uint64(np.int64(stream)) << np.uint64(56)) ^ np.uint64(np.int64(k)))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@_inline
def _count(st: np.ndarray, code: int) -> None:
    if code > 0:
        st[COUNTS + code] += 1.0


@_inline
def _slip_unit(st: np.ndarray, mkt: np.ndarray, cfg: np.ndarray, bar: int, price: float) -> float:
    """Slippage per unit for a taker fill at ``price`` in ``bar`` (>= 0)."""
    mode = cfg[C_SLIP_MODE]
    slip = mkt[bar, M_ATR_SLIP]
    if mode == SLIP_FIXED:
        slip += price * cfg[C_SLIP_FRAC]
    elif mode == SLIP_RANDOM:
        slip += price * cfg[C_SLIP_FRAC] * uniform(st[SEED], bar, _STREAM_SLIPPAGE, st[N_FILLS])
    return slip


@_inline
def _record(st: np.ndarray, trades: np.ndarray, entry_bar: float, exit_bar: int, qty: float,
            entry_price: float, exit_price: float, gross: float, fees: float, spread: float,
            slippage: float, funding: float, net: float, reason: float) -> None:
    st[N_TRADES] += 1.0
    if net > 0.0:
        st[N_WINS] += 1.0
    if trades.shape[0] == 0:
        return
    n = int(st[N_RECORDS])
    if n >= trades.shape[0]:
        st[DROPPED_RECORDS] += 1.0
        return
    trades[n, T_ENTRY_BAR] = entry_bar
    trades[n, T_EXIT_BAR] = exit_bar
    trades[n, T_QTY] = qty
    trades[n, T_ENTRY_PRICE] = entry_price
    trades[n, T_EXIT_PRICE] = exit_price
    trades[n, T_GROSS] = gross
    trades[n, T_FEES] = fees
    trades[n, T_SPREAD] = spread
    trades[n, T_SLIPPAGE] = slippage
    trades[n, T_NET] = net
    trades[n, T_REASON] = reason
    trades[n, T_FUNDING] = funding
    st[N_RECORDS] = n + 1


@_inline
def _add_lot(st: np.ndarray, lots: np.ndarray, price: float, qty: float, bar: int, fee: float,
             spread: float, slippage: float, side: float) -> None:
    """Append a lot (``qty`` > 0 on ``side``); a full ring merges it into the newest lot."""
    cap = lots.shape[0]
    n = int(st[LOT_COUNT])
    head = int(st[LOT_HEAD])
    if n == cap:
        j = (head + n - 1) % cap
        q0 = lots[j, L_QTY]
        q = q0 + qty
        lots[j, L_PRICE] = (q0 * lots[j, L_PRICE] + qty * price) / q
        lots[j, L_QTY] = q
        lots[j, L_FEE] += fee
        lots[j, L_SPREAD] += spread
        lots[j, L_SLIPPAGE] += slippage
        _count(st, A_LOTS_MERGED)
    else:
        j = (head + n) % cap
        lots[j, L_PRICE] = price
        lots[j, L_QTY] = qty
        lots[j, L_BAR] = bar
        lots[j, L_FEE] = fee
        lots[j, L_SPREAD] = spread
        lots[j, L_SLIPPAGE] = slippage
        lots[j, L_FUNDING] = 0.0
        st[LOT_COUNT] = n + 1
    st[LOT_QTY] += side * qty
    st[LOT_BASIS] += side * qty * price
    st[LOT_COST] += fee + spread + slippage


@_jit
def _close_lots(st: np.ndarray, lots: np.ndarray, trades: np.ndarray, bar: int, price: float,
                closing: float, every: bool, fill_qty: float, fee: float, spread: float,
                slippage: float, reason: float, mult: float) -> None:
    """Close ``closing`` units FIFO (every lot when ``every``), one trade record per lot part.

    Each record gets its lot's entry costs and funding pro rata to the quantity closed, and the
    share ``part / fill_qty`` of this fill's costs; ``mult`` is the contract multiplier.
    """
    cap = lots.shape[0]
    side = 1.0 if st[POS] > 0 else -1.0
    rem = closing
    tol = closing * 1e-12
    while st[LOT_COUNT] > 0:
        if not every and rem <= tol:
            break
        h = int(st[LOT_HEAD])
        lq = lots[h, L_QTY]
        whole = every or rem >= lq * (1.0 - 1e-12)
        take = lq if whole else rem
        frac = 1.0 if whole else take / lq
        e_fee = lots[h, L_FEE] * frac
        e_spread = lots[h, L_SPREAD] * frac
        e_slip = lots[h, L_SLIPPAGE] * frac
        e_fund = lots[h, L_FUNDING] * frac
        share = take / fill_qty
        fees = e_fee + fee * share
        spr = e_spread + spread * share
        slp = e_slip + slippage * share
        entry = lots[h, L_PRICE]
        gross = side * take * (price - entry) * mult
        net = gross - fees - spr - slp - e_fund
        st[REALIZED] += net
        _record(st, trades, lots[h, L_BAR], bar, side * take, entry, price, gross, fees, spr,
                slp, e_fund, net, reason)
        st[LOT_QTY] -= side * take
        st[LOT_BASIS] -= side * take * entry
        st[LOT_COST] -= e_fee + e_spread + e_slip + e_fund
        if whole:
            st[LOT_HEAD] = (h + 1) % cap
            st[LOT_COUNT] -= 1.0
        else:
            lots[h, L_QTY] = lq - take
            lots[h, L_FEE] -= e_fee
            lots[h, L_SPREAD] -= e_spread
            lots[h, L_SLIPPAGE] -= e_slip
            lots[h, L_FUNDING] -= e_fund
        rem -= take


@_inline
def round_to_tick(price: float, tick: float, side: float) -> float:
    """``price`` on the ``tick`` grid against the trader: up for a buy (``side > 0``), down for
    a sell. A price within ``1e-7`` tick of the grid counts as on it (float noise of
    ``price / tick``)."""
    q = price / tick
    if side > 0.0:
        n = math.ceil(q - 1e-7)
    else:
        n = math.floor(q + 1e-7)
    return n * tick


@_jit
def pay_funding(st: np.ndarray, lots: np.ndarray, per_unit: float) -> None:
    """Book funding of ``per_unit`` money per unit held long (``price * multiplier * rate``):
    a long pays it, a short receives it. Each open lot carries its part until it is closed
    (then it is the trade's ``funding``), so realized + unrealized stays equity."""
    cap = lots.shape[0]
    head = int(st[LOT_HEAD])
    side = 1.0 if st[POS] > 0.0 else -1.0
    total = 0.0
    for k in range(int(st[LOT_COUNT])):
        j = (head + k) % cap
        amount = side * lots[j, L_QTY] * per_unit
        lots[j, L_FUNDING] += amount
        total += amount
    st[CASH] -= total
    st[FUNDING] += total
    st[LOT_COST] += total


@_jit
def fill(st: np.ndarray, lots: np.ndarray, trades: np.ndarray, mkt: np.ndarray, cfg: np.ndarray,
         bar: int, price: float, new_pos: float, liquidity: float, reason: float) -> None:
    """Move the position to ``new_pos`` at reference price ``price`` during ``bar``.

    A :data:`MAKER` fill (limit, take-profit) pays the maker fee only; a :data:`TAKER` fill
    (market, stop, liquidation) pays the taker fee, half the spread and slippage. Costs are
    booked separately and the lots keep the reference price; the fee is charged on the executed
    price (reference price moved against the trader by half the spread and the slippage, then
    rounded to the tick against the trader: buys up, sells down; the rounding is booked as
    slippage), plus the fee per unit, at least the minimum fee. Money is price times units
    times the contract multiplier.
    """
    pos = st[POS]
    delta = new_pos - pos
    if delta == 0.0:
        return
    qty = abs(delta)
    side = 1.0 if delta > 0.0 else -1.0
    mult = cfg[C_MULTIPLIER]
    if liquidity == MAKER:
        half_spread = 0.0
        slip = 0.0
        rate = cfg[C_MAKER]
    else:
        half_spread = mkt[bar, M_HALF_SPREAD] * price
        slip = _slip_unit(st, mkt, cfg, bar, price)
        rate = cfg[C_TAKER]
    executed = price + side * (half_spread + slip)
    tick = cfg[C_TICK]
    if tick > 0.0:
        on_grid = round_to_tick(executed, tick, side)
        extra = side * (on_grid - executed)
        if extra > 0.0:
            slip += extra
        executed = price + side * (half_spread + slip)
    fee = rate * qty * executed * mult + qty * cfg[C_FEE_UNIT]
    if fee < cfg[C_MIN_FEE]:
        fee = cfg[C_MIN_FEE]
    spread_cost = qty * half_spread * mult
    slip_cost = qty * slip * mult
    st[CASH] -= delta * price * mult + fee + spread_cost + slip_cost
    st[FEES] += fee
    st[SPREAD_COST] += spread_cost
    st[SLIPPAGE_COST] += slip_cost
    st[TURNOVER] += qty * price * mult
    st[N_FILLS] += 1.0

    reverses = pos != 0.0 and pos * delta < 0.0
    if reverses:
        closing = min(qty, abs(pos))
        every = new_pos == 0.0 or new_pos * pos < 0.0
        _close_lots(st, lots, trades, bar, price, closing, every, qty, fee, spread_cost,
                    slip_cost, reason, mult)
        if every:  # no lot left: drop the rounding residue of the running sums
            st[LOT_QTY] = 0.0
            st[LOT_BASIS] = 0.0
            st[LOT_COST] = 0.0
            st[LOT_HEAD] = 0.0
    if new_pos != 0.0 and (pos == 0.0 or new_pos * pos < 0.0):
        opening = abs(new_pos)  # a new position: its lot is exactly the new position
    elif not reverses:
        opening = qty
    else:
        opening = 0.0
    if opening > 0.0:
        share = opening / qty
        _add_lot(st, lots, price, opening, bar, fee * share, spread_cost * share,
                 slip_cost * share, 1.0 if new_pos > 0.0 else -1.0)
    st[POS] = new_pos
    if new_pos == 0.0 or new_pos * pos < 0.0:
        st[SL] = 0.0
        st[TP] = 0.0


@_inline
def _cap(pos: float, target: float, cap: float) -> float:
    """Bound ``|target| <= cap`` without ever trading against the order's direction.

    The result lies between ``pos`` and ``target``: as close to ``target`` as the cap allows;
    a hold or a reduction on the same side is never changed (a cap limits new exposure, it does
    not force trades); when even the first unit would break the cap, no trade (``pos``).
    """
    if abs(target) <= cap:
        return target
    if target * pos > 0.0 and abs(target) <= abs(pos):
        return target
    x = math.copysign(cap, target)
    if (x - pos) * (target - x) >= 0.0:
        return x
    return pos


@_jit
def market_order(st: np.ndarray, lots: np.ndarray, trades: np.ndarray, mkt: np.ndarray,
                 cfg: np.ndarray, bar: int, price: float, kind: float, qty: float, sl: float,
                 tp: float, liquidity: float) -> int:
    """Apply the constraints to an order and fill it at ``price``; returns a rejection code.

    In order: short clamp, max position, leverage (equity marked at ``price``), lot rounding
    of the traded quantity, dead zone, minimum notional. A close to flat is never rounded,
    dead-zoned or rejected for its notional. Adjustments are counted only when the order is
    accepted; a rejected order changes nothing but its rejection count.
    """
    if st[BANKRUPT] != 0.0:
        return R_BANKRUPT
    pos = st[POS]
    target = qty if kind == K_TARGET else pos + qty
    if target != 0.0 and abs(target) <= 1e-12 * abs(pos):
        # float dust of the position (1 - 1e-19 == 1): a close, not a position too small to
        # hold a lot, whose fees no trade would carry
        target = 0.0
    short = cfg[C_ALLOW_SHORT] == 0.0 and target < 0.0
    if short:
        target = 0.0
    clamped = _cap(pos, target, cfg[C_MAX_POSITION])
    capped = clamped != target
    target = clamped
    mult = cfg[C_MULTIPLIER]
    equity = st[CASH] + pos * price * mult
    clamped = _cap(pos, target,
                   cfg[C_LEVERAGE] * equity / price / mult if equity > 0.0 else 0.0)
    levered = clamped != target
    target = clamped
    rounded = False
    lot = cfg[C_LOT_SIZE]
    if lot > 0.0 and target != pos and target != 0.0:
        d = target - pos
        n = math.floor(abs(d) / lot + 1e-9)
        d2 = math.copysign(n * lot, d)
        rounded = abs(d2 - d) > 1e-9 * lot  # counted only when it changes something visible
        target = pos + d2 if n > 0 else pos  # always a whole number of lots
    dead = False
    if target != pos and target != 0.0:
        notional = abs(target - pos) * price * mult
        if notional < cfg[C_DEAD_ZONE] * equity:
            target = pos
            dead = True
        elif notional < cfg[C_MIN_NOTIONAL]:
            return R_MIN_NOTIONAL
    if short:
        _count(st, A_CLAMP_SHORT)
    if capped:
        _count(st, A_CLAMP_MAX_POSITION)
    if levered:
        _count(st, A_CLAMP_LEVERAGE)
    if rounded:
        _count(st, A_LOT_ROUNDED)
    if dead:
        _count(st, A_DEAD_ZONE)
    if target != pos:
        fill(st, lots, trades, mkt, cfg, bar, price, target, liquidity, X_ORDER)
    if st[POS] != 0.0:
        if not math.isnan(sl):
            st[SL] = sl
        if not math.isnan(tp):
            st[TP] = tp
    return OK


@_inline
def _remove_order(st: np.ndarray, orders: np.ndarray, i: int) -> None:
    n = int(st[ORDER_COUNT])
    for j in range(i, n - 1):
        for f in range(N_ORDER):
            orders[j, f] = orders[j + 1, f]
    st[ORDER_COUNT] = n - 1


@_jit
def cancel_all_one(st: np.ndarray) -> None:
    """Cancel every pending order (counted as cancelled)."""
    n = st[ORDER_COUNT]
    st[COUNTS + A_CANCELLED] += n
    st[ORDER_COUNT] = 0.0


@_inline
def liquidation_price(st: np.ndarray, cfg: np.ndarray) -> float:
    """Price at which equity equals maintenance margin (NaN when it cannot be reached)."""
    pos = st[POS]
    cash = st[CASH]
    mmr = cfg[C_MMR]
    units = pos * cfg[C_MULTIPLIER]
    if pos > 0.0:
        p = -cash / (units * (1.0 - mmr))
        return p if p > 0.0 else np.nan
    if pos < 0.0:
        p = cash / (-units * (1.0 + mmr))
        return p if p > 0.0 else 0.0  # a short with no cash is liquidated at any price
    return np.nan


@_jit
def _go_bankrupt(st: np.ndarray, lots: np.ndarray, trades: np.ndarray, mkt: np.ndarray,
                 cfg: np.ndarray, bar: int, price: float) -> None:
    """Equity at or below zero: close what is left at ``price``, cancel orders, freeze."""
    if st[POS] != 0.0:
        fill(st, lots, trades, mkt, cfg, bar, price, 0.0, TAKER, X_LIQUIDATION)
    cancel_all_one(st)
    st[BANKRUPT] = 1.0


@_jit
def _intrabar(st: np.ndarray, lots: np.ndarray, trades: np.ndarray, mkt: np.ndarray,
              cfg: np.ndarray, bar: int) -> None:
    """Liquidation, stop-loss and take-profit inside the bar, adverse events first."""
    pos = st[POS]
    op = mkt[bar, M_OPEN]
    hi = mkt[bar, M_HIGH]
    lo = mkt[bar, M_LOW]
    sl = st[SL]
    tp = st[TP]
    liq = liquidation_price(st, cfg)
    has_liq = not math.isnan(liq)
    if pos > 0.0:
        use_stop = sl > 0.0 and (not has_liq or sl >= liq)
        if use_stop and lo <= sl:
            st[N_STOP_EXITS] += 1.0
            fill(st, lots, trades, mkt, cfg, bar, min(op, sl), 0.0, TAKER, X_STOP)
            return
        if not use_stop and has_liq and lo < liq:
            price = min(op, liq)
            st[N_LIQUIDATIONS] += 1.0
            fill(st, lots, trades, mkt, cfg, bar, price, 0.0, TAKER, X_LIQUIDATION)
            if st[CASH] <= 0.0:
                _go_bankrupt(st, lots, trades, mkt, cfg, bar, price)
            return
        if tp > 0.0 and hi >= tp:
            st[N_TP_EXITS] += 1.0
            fill(st, lots, trades, mkt, cfg, bar, max(op, tp), 0.0, MAKER, X_TAKE_PROFIT)
    elif pos < 0.0:
        use_stop = sl > 0.0 and (not has_liq or sl <= liq)
        if use_stop and hi >= sl:
            st[N_STOP_EXITS] += 1.0
            fill(st, lots, trades, mkt, cfg, bar, max(op, sl), 0.0, TAKER, X_STOP)
            return
        if not use_stop and has_liq and hi > liq:
            price = max(op, liq)
            st[N_LIQUIDATIONS] += 1.0
            fill(st, lots, trades, mkt, cfg, bar, price, 0.0, TAKER, X_LIQUIDATION)
            if st[CASH] <= 0.0:
                _go_bankrupt(st, lots, trades, mkt, cfg, bar, price)
            return
        if tp > 0.0 and lo <= tp:
            st[N_TP_EXITS] += 1.0
            fill(st, lots, trades, mkt, cfg, bar, min(op, tp), 0.0, MAKER, X_TAKE_PROFIT)


@_jit
def _limits(st: np.ndarray, lots: np.ndarray, orders: np.ndarray, trades: np.ndarray,
            mkt: np.ndarray, cfg: np.ndarray, bar: int) -> None:
    """Limit orders live in ``bar``, in submission order: fill at the limit or better."""
    op = mkt[bar, M_OPEN]
    hi = mkt[bar, M_HIGH]
    lo = mkt[bar, M_LOW]
    i = 0
    while i < int(st[ORDER_COUNT]):
        if orders[i, O_KIND] != K_LIMIT or orders[i, O_ACTIVE] > bar:
            i += 1
            continue
        limit = orders[i, O_PRICE]
        qty = orders[i, O_QTY]
        price = np.nan
        touched = False
        if qty > 0.0:
            if op <= limit:
                price = op
            elif lo < limit:
                price = limit
            elif lo == limit:
                touched = True
        else:
            if op >= limit:
                price = op
            elif hi > limit:
                price = limit
            elif hi == limit:
                touched = True
        if touched:
            p = cfg[C_TOUCH_PROB]
            if p >= 1.0 or (p > 0.0 and uniform(st[SEED], bar, _STREAM_TOUCH, orders[i, O_ID]) < p):
                price = limit
            else:
                _count(st, A_TOUCH_MISSED)
        if not math.isnan(price):
            code = market_order(st, lots, trades, mkt, cfg, bar, price, K_DELTA, qty,
                                orders[i, O_SL], orders[i, O_TP], MAKER)
            _count(st, code)
            _remove_order(st, orders, i)
            if st[BANKRUPT] != 0.0:
                return
            continue
        if bar >= orders[i, O_EXPIRY]:
            _count(st, A_EXPIRED)
            _remove_order(st, orders, i)
            continue
        i += 1


@_jit
def _mark(st: np.ndarray, lots: np.ndarray, trades: np.ndarray, mkt: np.ndarray,
          cfg: np.ndarray, bar: int) -> None:
    """Mark to market at the close; bankruptcy; peak and drawdown."""
    close = mkt[bar, M_CLOSE]
    mult = cfg[C_MULTIPLIER]
    equity = st[CASH] + st[POS] * close * mult
    if equity <= 0.0 and st[BANKRUPT] == 0.0:
        _go_bankrupt(st, lots, trades, mkt, cfg, bar, close)
        equity = st[CASH] + st[POS] * close * mult
    st[EQUITY] = equity
    st[UNREALIZED] = (st[LOT_QTY] * close - st[LOT_BASIS]) * mult - st[LOT_COST]
    st[MARGIN] = abs(st[POS]) * close * mult / cfg[C_LEVERAGE]
    if equity > st[PEAK]:
        st[PEAK] = equity
    dd = (st[PEAK] - equity) / st[PEAK] if st[PEAK] > 0.0 else 0.0
    st[DRAWDOWN] = dd
    if dd > st[MAX_DRAWDOWN]:
        st[MAX_DRAWDOWN] = dd


# ------------------------------------------------------------------------------- per account
@_jit
def advance_one(st: np.ndarray, lots: np.ndarray, orders: np.ndarray, trades: np.ndarray,
                mkt: np.ndarray, cfg: np.ndarray) -> int:
    """Process the next bar of one account; returns :data:`F_END` when there is none.

    Order: market orders due at the previous close, market orders at this open (submission
    order), liquidation / stop-loss / take-profit inside the bar, limit orders, then the mark at
    the close (bankruptcy, peak, drawdown).
    """
    b = int(st[BAR]) + 1
    if b >= mkt.shape[0]:
        return F_END
    if st[BANKRUPT] != 0.0:
        st[BAR] = b
        return 0
    if st[ORDER_COUNT] > 0 and cfg[C_AT_CLOSE] != 0.0:
        # market orders filling at the close of the previous bar
        i = 0
        while i < int(st[ORDER_COUNT]):
            if (orders[i, O_KIND] != K_LIMIT and orders[i, O_AT_CLOSE] != 0.0
                    and orders[i, O_ACTIVE] <= b - 1):
                code = market_order(st, lots, trades, mkt, cfg, b - 1, mkt[b - 1, M_CLOSE],
                                    orders[i, O_KIND], orders[i, O_QTY], orders[i, O_SL],
                                    orders[i, O_TP], TAKER)
                _count(st, code)
                _remove_order(st, orders, i)
            else:
                i += 1
    rate = mkt[b, M_FUNDING]
    if rate != 0.0 and st[POS] != 0.0:
        # funding at this open, on the position held then (before this open's orders)
        pay_funding(st, lots, mkt[b, M_OPEN] * cfg[C_MULTIPLIER] * rate)
    if st[ORDER_COUNT] > 0:
        # market orders filling at this open
        i = 0
        while i < int(st[ORDER_COUNT]):
            if (orders[i, O_KIND] != K_LIMIT and orders[i, O_AT_CLOSE] == 0.0
                    and orders[i, O_ACTIVE] <= b):
                code = market_order(st, lots, trades, mkt, cfg, b, mkt[b, M_OPEN],
                                    orders[i, O_KIND], orders[i, O_QTY], orders[i, O_SL],
                                    orders[i, O_TP], TAKER)
                _count(st, code)
                _remove_order(st, orders, i)
            else:
                i += 1
    if st[POS] != 0.0:
        _intrabar(st, lots, trades, mkt, cfg, b)
    if st[ORDER_COUNT] > 0 and st[BANKRUPT] == 0.0:
        _limits(st, lots, orders, trades, mkt, cfg, b)
    _mark(st, lots, trades, mkt, cfg, b)
    st[BAR] = b
    return 0


@_jit
def submit_one(st: np.ndarray, orders: np.ndarray, mkt: np.ndarray, cfg: np.ndarray, kind: float,
               qty: float, price: float, sl: float, tp: float, bars_valid: float) -> int:
    """Validate an order and queue it; returns 0 or the rejection code (also counted).

    ``sl``/``tp``: NaN keeps the position's level, 0 clears it, a positive price sets it; any
    other value (negative, infinite) is malformed. ``bars_valid``: limit orders only, a whole
    number >= 1, or infinity for good-till-cancelled. With a tick size, a limit price off the
    grid is moved to it on the passive side (a buy down, a sell up).
    """
    code = _validate(st, orders, mkt, cfg, kind, qty, price, sl, tp, bars_valid)
    st[LAST_CODE] = code
    if code != OK:
        _count(st, code)
        st[LAST_ORDER_ID] = -1.0
        return code
    if kind == K_LIMIT and cfg[C_TICK] > 0.0:
        # a limit price off the tick moves to the passive side: a buy down, a sell up
        price = round_to_tick(price, cfg[C_TICK], -1.0 if qty > 0.0 else 1.0)
    b = int(st[BAR])
    n = int(st[ORDER_COUNT])
    oid = st[NEXT_ORDER_ID]
    lag = int(cfg[C_LAG])
    at_close = kind != K_LIMIT and cfg[C_AT_CLOSE] != 0.0
    orders[n, O_ID] = oid
    orders[n, O_KIND] = kind
    orders[n, O_QTY] = qty + 0.0  # -0.0 -> 0.0
    orders[n, O_PRICE] = price if kind == K_LIMIT else np.nan
    orders[n, O_SL] = sl
    orders[n, O_TP] = tp
    orders[n, O_ACTIVE] = b + lag if at_close else b + 1 + lag
    orders[n, O_EXPIRY] = (b + lag + bars_valid) if kind == K_LIMIT else _GTC
    orders[n, O_AT_CLOSE] = 1.0 if at_close else 0.0
    orders[n, O_SUBMITTED] = b
    st[ORDER_COUNT] = n + 1
    st[NEXT_ORDER_ID] = oid + 1.0
    st[LAST_ORDER_ID] = oid
    return OK


@_inline
def _validate(st: np.ndarray, orders: np.ndarray, mkt: np.ndarray, cfg: np.ndarray, kind: float,
              qty: float, price: float, sl: float, tp: float, bars_valid: float) -> int:
    if st[BANKRUPT] != 0.0:
        return R_BANKRUPT
    if not math.isfinite(qty) or (kind == K_LIMIT and qty == 0.0):
        return R_BAD_QUANTITY
    if kind == K_LIMIT:
        if not math.isfinite(price) or price <= 0.0:
            return R_BAD_PRICE
        if math.isnan(bars_valid) or bars_valid < 1.0 or (
                math.isfinite(bars_valid) and bars_valid != math.floor(bars_valid)):
            return R_BAD_VALIDITY
    for level in (sl, tp):
        if not math.isnan(level) and (not math.isfinite(level) or level < 0.0):
            return R_BAD_LEVEL
    b = int(st[BAR])
    after = qty if kind == K_TARGET else st[POS] + qty
    ref = price if kind == K_LIMIT else mkt[b, M_CLOSE]
    if after > 0.0:
        if (sl > 0.0 and sl >= ref) or (tp > 0.0 and tp <= ref):
            return R_BAD_LEVEL
    elif after < 0.0 and ((sl > 0.0 and sl <= ref) or (tp > 0.0 and tp >= ref)):
        return R_BAD_LEVEL
    if b + 1 + int(cfg[C_LAG]) > mkt.shape[0] - 1:
        return R_END_OF_DATA
    if st[ORDER_COUNT] >= orders.shape[0]:
        return R_QUEUE_FULL
    return OK


@_jit
def reset_one(st: np.ndarray, lots: np.ndarray, orders: np.ndarray, mkt: np.ndarray,
              cfg: np.ndarray, start: int, seed: float) -> None:
    """The account as of the close of bar ``start``: initial cash and inventory, no orders."""
    st[:] = 0.0
    close = mkt[start, M_CLOSE]
    st[BAR] = start
    st[START] = start
    st[SEED] = seed
    st[CASH] = cfg[C_INITIAL_CASH]
    inv = cfg[C_INITIAL_POSITION]
    if inv != 0.0:
        st[POS] = inv
        _add_lot(st, lots, close, abs(inv), start, 0.0, 0.0, 0.0, 1.0 if inv > 0.0 else -1.0)
    mult = cfg[C_MULTIPLIER]
    equity = st[CASH] + inv * close * mult
    st[EQUITY] = equity
    st[INITIAL_EQUITY] = equity
    st[PEAK] = equity
    st[MARGIN] = abs(inv) * close * mult / cfg[C_LEVERAGE]
    st[LAST_ORDER_ID] = -1.0
    orders[:, :] = 0.0
    if inv == 0.0:
        lots[:, :] = 0.0


@_jit
def close_all_one(st: np.ndarray, lots: np.ndarray, orders: np.ndarray, trades: np.ndarray,
                  mkt: np.ndarray, cfg: np.ndarray, cancel: bool) -> None:
    """Force-close the position at the close of the current bar (a taker fill, reason END)."""
    if cancel:
        cancel_all_one(st)
    if st[BANKRUPT] != 0.0 or st[POS] == 0.0:
        return
    b = int(st[BAR])
    fill(st, lots, trades, mkt, cfg, b, mkt[b, M_CLOSE], 0.0, TAKER, X_END)
    _mark(st, lots, trades, mkt, cfg, b)


@_jit
def cancel_one(st: np.ndarray, orders: np.ndarray, order_id: float) -> bool:
    """Cancel a pending order by id; ``False`` when it is not pending."""
    for i in range(int(st[ORDER_COUNT])):
        if orders[i, O_ID] == order_id:
            _remove_order(st, orders, i)
            _count(st, A_CANCELLED)
            return True
    return False


# ------------------------------------------------------------------------------- entry points
@_jit
def _room(st: np.ndarray, trades: np.ndarray, lots: np.ndarray, orders: np.ndarray) -> int:
    """:data:`F_GROW` when the trades buffer may not hold the records of one more bar."""
    if trades.shape[0] == 0:
        return 0
    worst = lots.shape[0] + 2 * orders.shape[0] + 8
    return F_GROW if trades.shape[0] - st[N_RECORDS] < worst else 0


@_inline
def _submit_target(st: np.ndarray, orders: np.ndarray, mkt: np.ndarray, cfg: np.ndarray,
                   target: float, sl: float, tp: float) -> None:
    """Queue a market order for ``target`` units, unless it is a hold (see :func:`step`)."""
    if not (target == st[POS] and st[ORDER_COUNT] == 0.0 and cfg[C_LAG] == 0.0
            and math.isnan(sl) and math.isnan(tp)):
        submit_one(st, orders, mkt, cfg, K_TARGET, target, np.nan, sl, tp, _GTC)


@_jit
def step(st: np.ndarray, lots: np.ndarray, orders: np.ndarray, trades: np.ndarray,
         mkt: np.ndarray, cfg: np.ndarray, target: float, sl: float, tp: float) -> int:
    """Submit a market order for ``target`` units and process the next bar (the env hot path).

    A hold submits nothing: a target equal to the position, with both levels NaN (keep), no
    order pending and no decision lag, would fill at the next open before anything else can
    move the position, so its order is a no-op; skipping the queue halves the cost of a bar
    (it takes no order id and, on a bankrupt account, is not counted as a rejection).
    """
    if int(st[BAR]) + 1 >= mkt.shape[0]:
        return F_END
    _submit_target(st, orders, mkt, cfg, target, sl, tp)
    advance_one(st, lots, orders, trades, mkt, cfg)
    return _room(st, trades, lots, orders)


@_jit
def advance(st: np.ndarray, lots: np.ndarray, orders: np.ndarray, trades: np.ndarray,
            mkt: np.ndarray, cfg: np.ndarray) -> int:
    """Process the next bar of one account."""
    flag = advance_one(st, lots, orders, trades, mkt, cfg)
    return flag | _room(st, trades, lots, orders)


@_jit
def close_all(st: np.ndarray, lots: np.ndarray, orders: np.ndarray, trades: np.ndarray,
              mkt: np.ndarray, cfg: np.ndarray, cancel: bool) -> int:
    """Force-close one account at its current close."""
    close_all_one(st, lots, orders, trades, mkt, cfg, cancel)
    return _room(st, trades, lots, orders)


@_jit
def _batch_range(st: np.ndarray, lots: np.ndarray, orders: np.ndarray, trades: np.ndarray,
                 mkt: np.ndarray, cfg: np.ndarray, targets: np.ndarray, sl: np.ndarray,
                 tp: np.ndarray, lo: int, hi: int) -> int:
    last = mkt.shape[0] - 1
    ends = 0
    for i in range(lo, hi):
        s = st[i]
        if int(s[BAR]) >= last:
            ends += 1
            continue
        o = orders[i]
        _submit_target(s, o, mkt, cfg, targets[i], sl[i], tp[i])
        advance_one(s, lots[i], o, trades, mkt, cfg)
    return ends


_CHUNK = 64


@njit(cache=True, parallel=True, error_model="numpy")
def batch_step(st: np.ndarray, lots: np.ndarray, orders: np.ndarray, trades: np.ndarray,
               mkt: np.ndarray, cfg: np.ndarray, targets: np.ndarray, sl: np.ndarray,
               tp: np.ndarray) -> int:
    """:func:`step` for every account at its own bar, chunks of accounts in parallel (accounts
    are independent, so the result does not depend on the threads). Accounts at the last bar
    are left as they are; returns how many there were."""
    n = st.shape[0]
    ends = 0
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        lo = c * _CHUNK
        ends += _batch_range(st, lots, orders, trades, mkt, cfg, targets, sl, tp, lo,
                             min(lo + _CHUNK, n))
    return ends


@_jit
def batch_reset(st: np.ndarray, lots: np.ndarray, orders: np.ndarray, mkt: np.ndarray,
                cfg: np.ndarray, indices: np.ndarray, starts: np.ndarray,
                seeds: np.ndarray) -> None:
    """:func:`reset_one` for the accounts ``indices``."""
    for j in range(len(indices)):
        i = indices[j]
        reset_one(st[i], lots[i], orders[i], mkt, cfg, starts[j], seeds[j])


@_jit
def batch_close_all(st: np.ndarray, lots: np.ndarray, orders: np.ndarray, trades: np.ndarray,
                    mkt: np.ndarray, cfg: np.ndarray, indices: np.ndarray, cancel: bool) -> None:
    """:func:`close_all_one` for the accounts ``indices``."""
    for j in range(len(indices)):
        i = indices[j]
        close_all_one(st[i], lots[i], orders[i], trades, mkt, cfg, cancel)


# ------------------------------------------------------------------------------- inputs
@_jit
def copy_bars(ohlcv: np.ndarray, mkt: np.ndarray) -> int:
    """Copy the open, high, low and close of every bar into ``mkt[:, :4]`` after checking it
    (finite, > 0, ``low <= open, close <= high``); returns the first bar that fails, else -1
    (one pass instead of a temporary array per check)."""
    for t in range(ohlcv.shape[0]):
        o = ohlcv[t, 0]
        h = ohlcv[t, 1]
        lo = ohlcv[t, 2]
        c = ohlcv[t, 3]
        # written so that a NaN fails every comparison it is in
        if not (o > 0.0 and h > 0.0 and lo > 0.0 and c > 0.0 and math.isfinite(o)
                and math.isfinite(h) and math.isfinite(lo) and math.isfinite(c)
                and h >= o and h >= c and lo <= o and lo <= c and lo <= h):
            return t
        mkt[t, M_OPEN] = o
        mkt[t, M_HIGH] = h
        mkt[t, M_LOW] = lo
        mkt[t, M_CLOSE] = c
    return -1


@njit(cache=True)
def atr_filled(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """TA-Lib's ATR (Wilder smoothing of the true range) with its warm-up filled.

    The true range of bar 0 is ``high - low``; bars before ``period`` (where TA-Lib gives NaN)
    get the mean true range so far, so every bar has a value known at its close.
    """
    n = len(close)
    out = np.empty(n)
    if n == 0:
        return out
    total = 0.0
    a = 0.0
    for t in range(n):
        if t == 0:
            tr = high[0] - low[0]
        else:
            tr = max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))
        if t < period:
            total += tr
            out[t] = total / (t + 1)
            if t >= 1:
                a += tr
        elif t == period:
            a = (a + tr) / period
            out[t] = a
        else:
            a = (a * (period - 1) + tr) / period
            out[t] = a
    return out
