"""Numba kernels of the trading environments: one rule set for one env and for many.

:class:`~rltrade.envs.TradingEnv` (one env) and :class:`~rltrade.envs.VecTradingEnv` (N envs)
both call :func:`step_envs` on arrays of N rows, so their numbers are the same by construction.
For each env the kernel turns the action into a target position (the action scheme), fills it
through the execution engine's own kernel (:func:`rltrade.sim.kernels.step`), computes the reward,
the termination flags, and writes the next observation (window of market rows + account block).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

from rltrade.sim import kernels as K

# -- per-env state columns ---------------------------------------------------------------------
E_START = 0  # first bar of the episode (the account is as of its close after reset)
E_END = 1  # last bar of the episode: truncated when reached
E_PREV_EQUITY = 2
E_IN_POSITION = 3  # bars the current position has been held
E_POS_SIGN = 4
E_RET_HEAD = 5  # ring buffer of returns: next write position
E_RET_COUNT = 6
E_DSR_A = 7  # differential Sharpe: EMA of returns
E_DSR_B = 8  # ... and of squared returns
E_INVALID = 9  # actions that did not apply (counted)
E_PREV_DRAWDOWN = 10
E_DONE = 13
E_RET_SUM = 14  # running sum of the returns in the ring buffer
E_RET_SUMSQ = 15  # ... and of their squares
N_ENV = 16

# -- action schemes ----------------------------------------------------------------------------
S_DISCRETE3 = 0
S_DISCRETE6 = 1
S_EXPOSURE_SL = 2

# discrete6 actions
HOLD, ENTER_LONG, ENTER_SHORT, EXIT, SCALE_IN, SCALE_OUT = 0, 1, 2, 3, 4, 5

# -- parameters --------------------------------------------------------------------------------
P_MAX_EXPOSURE = 0
P_RISK_PER_TRADE = 1
P_STOP_ATR = 2
P_MAX_CAPITAL = 3
P_MIN_STOP = 4
P_MAX_STOP = 5
P_LEVERAGE = 6
P_EQUITY_FLOOR = 7
P_OBS_CLIP = 8
P_REWARD_SCALE = 9
P_MMR = 10
N_PARAMS = 12

# -- rewards -----------------------------------------------------------------------------------
R_LOG_RETURN = 0
R_ASYMMETRIC_DRAWDOWN = 1
R_RISK_ADJUSTED = 2
R_DIFFERENTIAL_SHARPE = 3
R_CVAR_PENALIZED = 4
#: weight names per reward, in the order of the weights vector the kernel reads
REWARD_WEIGHT_ORDER: dict[str, tuple[str, ...]] = {
    "log_return": ("bankruptcy",),
    "asymmetric_drawdown": ("bankruptcy", "downside", "drawdown"),
    "risk_adjusted": ("bankruptcy", "drawdown", "volatility", "holding", "max_holding",
                      "transaction", "sharpe", "liquidation", "liquidation_distance"),
    "differential_sharpe": ("bankruptcy", "eta"),
    "cvar_penalized": ("bankruptcy", "alpha", "penalty"),
}
REWARD_IDS = {"log_return": R_LOG_RETURN, "asymmetric_drawdown": R_ASYMMETRIC_DRAWDOWN,
              "risk_adjusted": R_RISK_ADJUSTED, "differential_sharpe": R_DIFFERENTIAL_SHARPE,
              "cvar_penalized": R_CVAR_PENALIZED}

N_ACCOUNT = 9
# the step report row: reward, flags and the info values, read back by Python in one go
(Q_REWARD, Q_TERMINATED, Q_TRUNCATED, Q_BAR, Q_EQUITY, Q_POSITION, Q_PNL, Q_TRADES, Q_WIN_RATE,
 Q_MAX_DRAWDOWN, Q_COSTS, Q_BANKRUPT, Q_INVALID) = range(13)
N_REPORT = 13
ACCOUNT_FIELDS = (
    "position_exposure", "unrealized_pnl_pct", "time_in_position", "equity_ratio", "drawdown",
    "cash_ratio", "recent_sharpe", "liquidation_distance", "win_rate",
)

# Like the engine's kernels: nothing here allocates, so numba's reference counting is off (about
# 2x less call overhead); see rltrade.sim.kernels.
_jit = njit(cache=True, error_model="numpy", **K._NO_NRT)
_inline = njit(cache=True, error_model="numpy", inline="always", **K._NO_NRT)


def entry_point(kernel: Any, args: tuple[Any, ...]) -> Callable[..., Any]:
    """``kernel`` compiled for exactly the types of ``args``, as a function that skips numba's
    per-call dispatch (typing every argument and looking up the overload: about 0.5 µs of a
    26-argument :func:`step_envs` call of one env, more than its own work).

    The returned function checks nothing: call it only with arguments of the same types
    (dtype, dimensions, layout, writability) as ``args``, in practice with the same arrays.
    Falls back to the dispatcher itself where numba's API differs.
    """
    try:
        compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
    except Exception:  # pragma: no cover - depends on the numba version
        return kernel
    return compiled if callable(compiled) else kernel


@_jit
def _target(st: np.ndarray, mkt: np.ndarray, atr: np.ndarray, env: np.ndarray, a0: float,
            a1: float, scheme: int, p: np.ndarray) -> tuple[float, float, float]:
    """(target units, stop-loss level, take-profit level) of one action; NaN level = keep,
    0 = clear. Counts actions that do not apply in ``env[E_INVALID]``."""
    bar = int(st[K.BAR])
    c = mkt[bar, K.M_CLOSE]
    eq = st[K.EQUITY]
    pos = st[K.POS]
    nan = np.nan
    if scheme == S_DISCRETE3:
        side = int(a0) - 1  # 0 short, 1 flat, 2 long
        if side != 0 and pos * side > 0.0:
            return pos, nan, nan  # already on that side: hold, no re-sizing trade
        if side == 0:  # flat: clear the levels (a flat account has none: keep, a hold)
            return 0.0, (0.0 if pos != 0.0 else nan), nan
        full = p[P_LEVERAGE] * eq / c if eq > 0.0 else 0.0
        target = side * p[P_MAX_EXPOSURE] * full
        return target, nan, nan
    full = p[P_LEVERAGE] * eq / c if eq > 0.0 else 0.0
    if scheme == S_EXPOSURE_SL:
        target = a0 * full
        pct = p[P_MIN_STOP] + (a1 + 1.0) * 0.5 * (p[P_MAX_STOP] - p[P_MIN_STOP])
        if target > 0.0:
            return target, c * (1.0 - pct), nan
        if target < 0.0:
            return target, c * (1.0 + pct), nan
        return 0.0, 0.0, nan
    # discrete6
    act = int(a0)
    a = atr[bar]
    dist = p[P_STOP_ATR] * a
    if act == ENTER_LONG or act == ENTER_SHORT:  # noqa: SIM109 (numba: no tuple membership)
        side = 1.0 if act == ENTER_LONG else -1.0
        if pos * side > 0.0:
            env[E_INVALID] += 1.0  # already in that direction
            return pos, nan, nan
        size = p[P_RISK_PER_TRADE] * eq / dist if dist > 0.0 else full
        cap = min(full, p[P_MAX_CAPITAL] * eq / c) if eq > 0.0 else 0.0
        if size > cap:
            size = cap
        return side * size, c - side * dist if dist > 0.0 else nan, nan
    if pos == 0.0 and act != HOLD:
        env[E_INVALID] += 1.0  # exit / scale with no position
        return 0.0, nan, nan
    if act == EXIT:
        return 0.0, 0.0, nan
    if act == SCALE_IN:
        return pos * 1.5, nan, nan
    if act == SCALE_OUT:
        return pos * 0.5, nan, nan
    return pos, nan, nan  # HOLD


@_jit
def compute_targets(st: np.ndarray, mkt: np.ndarray, atr: np.ndarray, env: np.ndarray,
                    actions: np.ndarray, scheme: int, p: np.ndarray, targets: np.ndarray,
                    sl: np.ndarray, tp: np.ndarray) -> None:
    """Targets of every env's action (used when a risk manager adjusts them in between)."""
    for i in range(st.shape[0]):
        if env[i, E_DONE] != 0.0:
            targets[i] = np.nan
            continue
        targets[i], sl[i], tp[i] = _target(st[i], mkt, atr, env[i], actions[i, 0],
                                           actions[i, 1], scheme, p)


@_jit
def _ring_stats(e: np.ndarray, size: int) -> tuple[float, float, int]:
    """Mean, sample std and count of the returns in the ring buffer (running sums)."""
    n = min(int(e[E_RET_COUNT]), size)
    if n < 2:
        return 0.0, 0.0, n
    m = e[E_RET_SUM] / n
    var = (e[E_RET_SUMSQ] - n * m * m) / (n - 1)
    return m, math.sqrt(var) if var > 1e-30 else 0.0, n


@_inline
def _push_return(e: np.ndarray, ring: np.ndarray, ret: float) -> None:
    """Write ``ret`` into the ring, keeping the running sums (recomputed exactly on each wrap
    so rounding cannot accumulate)."""
    size = ring.shape[0]
    head = int(e[E_RET_HEAD])
    if e[E_RET_COUNT] >= size:
        old = ring[head]
        e[E_RET_SUM] -= old
        e[E_RET_SUMSQ] -= old * old
    ring[head] = ret
    e[E_RET_SUM] += ret
    e[E_RET_SUMSQ] += ret * ret
    e[E_RET_HEAD] = head + 1 if head + 1 < size else 0  # not %: an integer division a step
    e[E_RET_COUNT] += 1.0
    if head == size - 1:
        total = 0.0
        sq = 0.0
        for k in range(size):
            total += ring[k]
            sq += ring[k] * ring[k]
        e[E_RET_SUM] = total
        e[E_RET_SUMSQ] = sq


@_jit
def _cvar(rets: np.ndarray, count: int, alpha: float) -> float:
    """Mean of the worst ``max(1, int(alpha * n))`` returns in the ring (no allocation: the
    k smallest are found by repeated selection, k being small)."""
    n = min(count, rets.shape[0])
    if n < 2:
        return 0.0
    k = max(1, int(alpha * n))
    total = 0.0
    last = -np.inf  # value and position of the previous pick, to skip it and equal values
    last_j = -1
    for _ in range(k):
        best = np.inf
        best_j = -1
        for j in range(n):
            v = rets[j]
            # strictly after the previous pick in (value, index) order
            if (v > last or (v == last and j > last_j)) and (
                    v < best or (v == best and j < best_j)):
                best = v
                best_j = j
        total += best
        last = best
        last_j = best_j
    return total / k


@_jit
def _liq_distance(st: np.ndarray, c: float, mmr: float) -> float:
    """Relative distance from the close to the liquidation price (1 when none applies)."""
    pos = st[K.POS]
    if pos == 0.0 or mmr <= 0.0:
        return 1.0
    cash = st[K.CASH]
    if pos > 0.0:
        p = -cash / (pos * (1.0 - mmr))
        return 1.0 if p <= 0.0 else min(1.0, max(0.0, (c - p) / c))
    p = cash / (-pos * (1.0 + mmr))
    return min(1.0, max(0.0, (p - c) / c))


@_jit
def observe(st: np.ndarray, mkt: np.ndarray, env: np.ndarray, rets: np.ndarray,
            market: np.ndarray, window: int, p: np.ndarray, obs_market: np.ndarray,
            obs_account: np.ndarray, i: int) -> None:
    """Write env ``i``'s observation: market rows ``bar - window + 1 .. bar`` and the account."""
    s = st[i]
    bar = int(s[K.BAR])
    first = bar - window + 1
    for r in range(window):
        for j in range(market.shape[1]):
            obs_market[i, r, j] = market[first + r, j]
    c = mkt[bar, K.M_CLOSE]
    eq = s[K.EQUITY]
    clip = p[P_OBS_CLIP]
    lev = p[P_LEVERAGE]
    e = env[i]
    mean, std, n = _ring_stats(e, rets.shape[1])
    values = (
        s[K.POS] * c / eq / lev if eq > 0.0 else 0.0,
        s[K.UNREALIZED] / eq if eq > 0.0 else 0.0,
        math.tanh(e[E_IN_POSITION] / 100.0),
        eq / s[K.INITIAL_EQUITY] - 1.0,
        s[K.DRAWDOWN],
        s[K.CASH] / eq if eq > 0.0 else 0.0,
        mean / std * math.sqrt(n) if std > 0.0 else 0.0,
        _liq_distance(s, c, p[P_MMR]),
        s[K.N_WINS] / s[K.N_TRADES] if s[K.N_TRADES] > 0.0 else 0.5,
    )
    for k in range(N_ACCOUNT):
        v = values[k]
        if not math.isfinite(v):
            v = 0.0
        obs_account[i, k] = min(clip, max(-clip, v))


@_inline
def _reward(s: np.ndarray, e: np.ndarray, ring: np.ndarray, ret: float, costs_delta: float,
            c: float, reward_id: int, w: np.ndarray, p: np.ndarray) -> float:
    eq = s[K.EQUITY]
    prev = e[E_PREV_EQUITY]
    if s[K.BANKRUPT] != 0.0 or eq <= 0.0:
        return w[0]
    count = int(e[E_RET_COUNT])
    if reward_id == R_LOG_RETURN:
        return math.log(eq / prev)
    if reward_id == R_ASYMMETRIC_DRAWDOWN:
        r = ret if ret >= 0.0 else w[1] * ret
        return r - w[2] * max(0.0, s[K.DRAWDOWN] - e[E_PREV_DRAWDOWN])
    if reward_id == R_RISK_ADJUSTED:
        mean, std, n = _ring_stats(e, ring.shape[0])
        sharpe = mean / std * math.sqrt(n) if std > 0.0 else 0.0
        hold_excess = max(0.0, e[E_IN_POSITION] - w[4])
        liq = max(0.0, 1.0 - _liq_distance(s, c, p[P_MMR]) / w[8]) if w[8] > 0.0 else 0.0
        return (ret - w[1] * s[K.DRAWDOWN] - w[2] * std - w[3] * hold_excess
                - w[5] * costs_delta / prev + w[6] * sharpe - w[7] * liq)
    if reward_id == R_DIFFERENTIAL_SHARPE:
        a = e[E_DSR_A]
        b = e[E_DSR_B]
        da = ret - a
        db = ret * ret - b
        var = b - a * a
        d = (b * da - 0.5 * a * db) / var ** 1.5 if var > 1e-18 else 0.0
        eta = w[1]
        e[E_DSR_A] = a + eta * da
        e[E_DSR_B] = b + eta * db
        return d
    # cvar_penalized
    cvar = _cvar(ring, count, w[1])
    return ret - w[2] * max(0.0, -cvar)


@_inline
def transition(s: np.ndarray, lots: np.ndarray, orders: np.ndarray, trades: np.ndarray,
               mkt: np.ndarray, cfg: np.ndarray, e: np.ndarray, ring: np.ndarray, target: float,
               stop: float, take: float, reward_id: int, w: np.ndarray,
               p: np.ndarray) -> tuple[float, bool, bool]:
    """One env's bar after its action became ``(target, stop, take)``: the engine's fill and
    mark, the return ring, the reward, the termination flags (``e[E_DONE]`` set when either
    holds). Returns ``(scaled reward, terminated, truncated)``; the observation is not written
    (:func:`observe`). Shared by :func:`step_envs` and the backtest runner's loop."""
    costs_before = s[K.FEES] + s[K.SPREAD_COST] + s[K.SLIPPAGE_COST]
    K.step(s, lots, orders, trades, mkt, cfg, target, stop, take)
    bar = int(s[K.BAR])
    c = mkt[bar, K.M_CLOSE]
    eq = s[K.EQUITY]
    prev = e[E_PREV_EQUITY]
    ret = eq / prev - 1.0 if prev > 0.0 else 0.0
    _push_return(e, ring, ret)
    sign = 1.0 if s[K.POS] > 0.0 else (-1.0 if s[K.POS] < 0.0 else 0.0)
    e[E_IN_POSITION] = e[E_IN_POSITION] + 1.0 if sign != 0.0 and sign == e[E_POS_SIGN] else (
        1.0 if sign != 0.0 else 0.0)
    e[E_POS_SIGN] = sign
    costs_delta = s[K.FEES] + s[K.SPREAD_COST] + s[K.SLIPPAGE_COST] - costs_before
    r = _reward(s, e, ring, ret, costs_delta, c, reward_id, w, p) * p[P_REWARD_SCALE]
    e[E_PREV_EQUITY] = eq
    e[E_PREV_DRAWDOWN] = s[K.DRAWDOWN]
    term = s[K.BANKRUPT] != 0.0 or eq <= p[P_EQUITY_FLOOR] * s[K.INITIAL_EQUITY]
    trunc = (not term) and bar >= int(e[E_END])
    if term or trunc:
        e[E_DONE] = 1.0
    return r, term, trunc


@_jit
def step_envs(st: np.ndarray, lots: np.ndarray, orders: np.ndarray, trades: np.ndarray,
              mkt: np.ndarray, cfg: np.ndarray, atr: np.ndarray, env: np.ndarray,
              rets: np.ndarray, actions: np.ndarray, use_targets: bool, targets: np.ndarray,
              sl: np.ndarray, tp: np.ndarray, scheme: int, reward_id: int, w: np.ndarray,
              p: np.ndarray, market: np.ndarray, window: int, obs_market: np.ndarray,
              obs_account: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
              truncated: np.ndarray, report: np.ndarray) -> None:
    """One step of every env that is not done: action -> order -> next bar -> reward ->
    termination -> next observation."""
    for i in range(st.shape[0]):
        e = env[i]
        s = st[i]
        if e[E_DONE] != 0.0:
            rewards[i] = 0.0
            continue
        if use_targets:
            target, stop, take = targets[i], sl[i], tp[i]
        else:
            target, stop, take = _target(s, mkt, atr, e, actions[i, 0], actions[i, 1], scheme, p)
        r, term, trunc = transition(s, lots[i], orders[i], trades, mkt, cfg, e, rets[i], target,
                                    stop, take, reward_id, w, p)
        rewards[i] = r
        terminated[i] = term
        truncated[i] = trunc
        observe(st, mkt, env, rets, market, window, p, obs_market, obs_account, i)
        q = report[i]
        n = s[K.N_TRADES]
        q[Q_REWARD] = rewards[i]
        q[Q_TERMINATED] = 1.0 if term else 0.0
        q[Q_TRUNCATED] = 1.0 if trunc else 0.0
        q[Q_BAR] = s[K.BAR]
        q[Q_EQUITY] = s[K.EQUITY]
        q[Q_POSITION] = s[K.POS]
        q[Q_PNL] = s[K.EQUITY] - s[K.INITIAL_EQUITY]
        q[Q_TRADES] = n
        q[Q_WIN_RATE] = s[K.N_WINS] / n if n > 0.0 else 0.0
        q[Q_MAX_DRAWDOWN] = s[K.MAX_DRAWDOWN]
        q[Q_COSTS] = s[K.FEES] + s[K.SPREAD_COST] + s[K.SLIPPAGE_COST]
        q[Q_BANKRUPT] = s[K.BANKRUPT]
        q[Q_INVALID] = e[E_INVALID]


# -- the single env's step, its arguments packed -----------------------------------------------
# A compiled function unboxes each array argument it is called with (data pointer, shape,
# strides): ~0.2 µs of a 26-argument single-env step, two thirds of the kernel's own work. The
# single env's hot path (EnvCore.step_single) therefore passes one int64 table holding the
# address and shape of every array argument of step_envs, and rebuilds them inside as views of
# the same memory. pack_step_args checks every array (dtype, dimensions, C order) and the caller
# keeps the arrays alive for as long as it uses the table.

def _pointer_to(nbtype: Any) -> Any:
    """An intrinsic turning an int64 address into a ``nbtype *``."""

    @intrinsic
    def pointer(typingctx: Any, addr: Any) -> Any:
        sig = types.CPointer(nbtype)(types.int64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return sig, codegen

    return pointer


_F64 = _pointer_to(types.float64)
_F32 = _pointer_to(types.float32)
_U8 = _pointer_to(types.uint8)  # numpy bools are bytes

#: (dtype, dimensions) of step_envs's array arguments, in order (its scalars left out)
PACKED_ARRAYS: tuple[tuple[type, int], ...] = (
    (np.float64, 2), (np.float64, 3), (np.float64, 3), (np.float64, 2), (np.float64, 2),  # st..mkt
    (np.float64, 1), (np.float64, 1), (np.float64, 2), (np.float64, 2),  # cfg, atr, env, rets
    (np.float64, 2), (np.float64, 1), (np.float64, 1), (np.float64, 1),  # actions, targets, sl, tp
    (np.float64, 1), (np.float64, 1), (np.float32, 2), (np.float32, 3),  # w, p, market, obs_market
    (np.float32, 2), (np.float64, 1), (np.bool_, 1), (np.bool_, 1),  # obs_account .. truncated
    (np.float64, 2),  # report
)


def pack_step_args(args: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(table, ints)`` for :func:`step_one` from :func:`step_envs`'s arguments: one row per
    array (address, then its shape), and the int arguments (scheme, reward id, window). ``None``
    when an array is not of the expected dtype, dimensions and C order."""
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    if len(args) != 26 or len(arrays) != len(PACKED_ARRAYS) or args[10] is not False:
        return None
    table = np.zeros((len(arrays), 4), dtype=np.int64)
    for k, (a, (dtype, ndim)) in enumerate(zip(arrays, PACKED_ARRAYS, strict=True)):
        if a.dtype != dtype or a.ndim != ndim or not a.flags.c_contiguous:
            return None
        table[k, 0] = a.ctypes.data
        table[k, 1 : 1 + ndim] = a.shape
    # step_envs's scalars: use_targets (always False here), scheme, reward id, window
    return table, np.array([args[14], args[15], args[19]], dtype=np.int64)


# reference counting on: numba.carray's views of raw memory carry no reference to count, but it
# refuses to compile without it
@njit(cache=True, error_model="numpy")
def step_one(t: np.ndarray, ints: np.ndarray) -> tuple[
        float, bool, bool, int, float, float, float, int, float, float, float, bool, int]:
    """:func:`step_envs` of a single env without a risk manager, on the arrays packed by
    :func:`pack_step_args`; returns its report row with each value in the type the env hands
    out: reward, terminated, truncated, bar, equity, position, total PnL, trade count, win
    rate, max drawdown, costs, bankrupt, invalid actions."""
    report = carray(_F64(t[21, 0]), (t[21, 1], t[21, 2]))
    step_envs(carray(_F64(t[0, 0]), (t[0, 1], t[0, 2])),
              carray(_F64(t[1, 0]), (t[1, 1], t[1, 2], t[1, 3])),
              carray(_F64(t[2, 0]), (t[2, 1], t[2, 2], t[2, 3])),
              carray(_F64(t[3, 0]), (t[3, 1], t[3, 2])),
              carray(_F64(t[4, 0]), (t[4, 1], t[4, 2])),
              carray(_F64(t[5, 0]), (t[5, 1],)),
              carray(_F64(t[6, 0]), (t[6, 1],)),
              carray(_F64(t[7, 0]), (t[7, 1], t[7, 2])),
              carray(_F64(t[8, 0]), (t[8, 1], t[8, 2])),
              carray(_F64(t[9, 0]), (t[9, 1], t[9, 2])),
              False,
              carray(_F64(t[10, 0]), (t[10, 1],)),
              carray(_F64(t[11, 0]), (t[11, 1],)),
              carray(_F64(t[12, 0]), (t[12, 1],)),
              ints[0], ints[1],
              carray(_F64(t[13, 0]), (t[13, 1],)),
              carray(_F64(t[14, 0]), (t[14, 1],)),
              carray(_F32(t[15, 0]), (t[15, 1], t[15, 2])),
              ints[2],
              carray(_F32(t[16, 0]), (t[16, 1], t[16, 2], t[16, 3])),
              carray(_F32(t[17, 0]), (t[17, 1], t[17, 2])),
              carray(_F64(t[18, 0]), (t[18, 1],)),
              carray(_U8(t[19, 0]), (t[19, 1],)),
              carray(_U8(t[20, 0]), (t[20, 1],)),
              report)
    q = report[0]
    return (q[Q_REWARD], q[Q_TERMINATED] != 0.0, q[Q_TRUNCATED] != 0.0, int(q[Q_BAR]),
            q[Q_EQUITY], q[Q_POSITION], q[Q_PNL], int(q[Q_TRADES]), q[Q_WIN_RATE],
            q[Q_MAX_DRAWDOWN], q[Q_COSTS], q[Q_BANKRUPT] != 0.0, int(q[Q_INVALID]))


@_jit
def reset_env_state(st: np.ndarray, env: np.ndarray, rets: np.ndarray, i: int, start: int,
                    end: int) -> None:
    """Fresh per-env state after its account was reset to the close of ``start``."""
    e = env[i]
    for k in range(N_ENV):
        e[k] = 0.0
    e[E_START] = start
    e[E_END] = end
    e[E_PREV_EQUITY] = st[i, K.EQUITY]
    pos = st[i, K.POS]
    e[E_POS_SIGN] = 1.0 if pos > 0.0 else (-1.0 if pos < 0.0 else 0.0)
    e[E_IN_POSITION] = 1.0 if pos != 0.0 else 0.0
    e[E_PREV_DRAWDOWN] = st[i, K.DRAWDOWN]
    for k in range(rets.shape[1]):
        rets[i, k] = 0.0


@_jit
def info_values(st: np.ndarray, env: np.ndarray, i: int) -> tuple[
        int, float, float, float, int, float, float, float, bool, int]:
    """What an env's info dict reports, in one call: bar, equity, position, total PnL, trade
    count, win rate, max drawdown, costs, bankrupt, invalid actions."""
    s = st[i]
    n = int(s[K.N_TRADES])
    return (int(s[K.BAR]), s[K.EQUITY], s[K.POS], s[K.EQUITY] - s[K.INITIAL_EQUITY], n,
            s[K.N_WINS] / n if n > 0 else 0.0, s[K.MAX_DRAWDOWN],
            s[K.FEES] + s[K.SPREAD_COST] + s[K.SLIPPAGE_COST], s[K.BANKRUPT] != 0.0,
            int(env[i, E_INVALID]))
