"""Numba kernels of the trading environments: one rule set for one env and for many.

:class:`~rltrade.envs.TradingEnv` (one env) and :class:`~rltrade.envs.VecTradingEnv` (N envs)
both call :func:`step_envs` on arrays of N rows, so their numbers are the same by construction.
For each env the kernel turns the action into a target position (the action scheme), fills it
through the execution engine's own kernel (:func:`rltrade.sim.kernels.step`), computes the reward,
the termination flags, and writes the next observation (window of market rows + account block).

Every kernel takes the step's arguments as one :class:`StepArgs` bundle (its field list is the
one place the step's signature lives); Python calls the step through :func:`step_packed` with
the bundle packed into one table of addresses (:func:`pack_args`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Annotated, Any, NamedTuple, get_type_hints

import numpy as np
from numba import from_dtype, njit, prange, types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

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
E_SINCE_DECISION = 11  # bars since the last decision, modulo decision_interval (0: one is due)
E_HELD = 12  # bars (closes) the position has been held unchanged, the bar of its fill included
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
# the switches against costs (docs/envs.md, "Trading less"); each 0 = off
P_DECISION_INTERVAL = 11  # decide every k bars (1 = every bar)
P_MIN_HOLD = 12  # bars a position is held before its target may change
P_HYSTERESIS = 13  # band on |target - position| as a share of the full position
P_VOL_TARGET = 14  # annualised volatility target (the vol per bar is StepArgs.vol)
P_COST_PENALTY = 15  # reward -= this x the step's engine costs / equity
P_BAR_STEP = 16  # 1: a step covers one bar even between decisions (the backtest's per-bar loop)
N_PARAMS = 20

# -- rewards -----------------------------------------------------------------------------------
# A reward is a branch of `_reward` below, its id here and its weights in REWARD_KERNELS; its
# name and default weights are config (rltrade.envs.config.REWARD_DEFAULTS). Nothing else names
# it: every kernel takes the step's arguments as one StepArgs bundle (docs/envs.md, "Adding a
# reward").
R_LOG_RETURN = 0
R_ASYMMETRIC_DRAWDOWN = 1
R_RISK_ADJUSTED = 2
R_DIFFERENTIAL_SHARPE = 3
R_CVAR_PENALIZED = 4
#: reward name -> (its id in the kernel, its weight names in the order of the weights vector the
#: kernel reads: ``w[0]`` is always the bankruptcy reward)
REWARD_KERNELS: dict[str, tuple[int, tuple[str, ...]]] = {
    "log_return": (R_LOG_RETURN, ("bankruptcy",)),
    "asymmetric_drawdown": (R_ASYMMETRIC_DRAWDOWN, ("bankruptcy", "downside", "drawdown")),
    "risk_adjusted": (R_RISK_ADJUSTED, (
        "bankruptcy", "drawdown", "volatility", "holding", "max_holding", "transaction", "sharpe",
        "liquidation", "liquidation_distance")),
    "differential_sharpe": (R_DIFFERENTIAL_SHARPE, ("bankruptcy", "eta")),
    "cvar_penalized": (R_CVAR_PENALIZED, ("bankruptcy", "alpha", "penalty")),
}


def reward_weights(reward: str, weights: Mapping[str, float]) -> tuple[int, np.ndarray]:
    """``(kernel id, weights vector)`` of ``reward`` from its named ``weights``
    (:attr:`rltrade.envs.EnvConfig.weights`)."""
    rid, order = REWARD_KERNELS[reward]
    return rid, np.array([weights[k] for k in order], dtype=np.float64)

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
_jit = njit(cache=True, error_model="numpy", **K.NO_NRT)
_inline = njit(cache=True, error_model="numpy", inline="always", **K.NO_NRT)

# -- the step's arguments: one bundle ----------------------------------------------------------
# Array fields carry their dtype and dimensions; the table of the single env's fast path, its
# checks and its unpacking in numba are all generated from this one class.
F64_1 = Annotated[np.ndarray, np.float64, 1]
F64_2 = Annotated[np.ndarray, np.float64, 2]
F64_3 = Annotated[np.ndarray, np.float64, 3]
F32_2 = Annotated[np.ndarray, np.float32, 2]
F32_3 = Annotated[np.ndarray, np.float32, 3]
BOOL_1 = Annotated[np.ndarray, np.bool_, 1]


class StepArgs(NamedTuple):
    """Everything a step of N envs reads or writes, as one argument of every kernel here.

    Built once by :class:`~rltrade.envs.EnvCore` (its ``args``); rows are envs. A new input of a
    reward or of the step is one field here (and its array in ``EnvCore``), not a change of
    every kernel's signature.
    """

    st: F64_2  #: the engine's accounts ``[N, K.N_STATE]``
    lots: F64_3  #: their lot rings ``[N, capacity, K.N_LOT]``
    orders: F64_3  #: their order queues ``[N, capacity, K.N_ORDER]``
    trades: F64_2  #: closed-trade records ``[rows, K.N_TRADE]`` (no rows: counts only)
    mkt: F64_2  #: the engine's market rows ``[T, K.N_MKT]``
    cfg: F64_1  #: the engine's config vector
    atr: F64_1  #: ATR per bar (empty when neither the scheme nor a risk manager reads it)
    env: F64_2  #: per-env state ``[N, N_ENV]`` (the ``E_*`` columns)
    rets: F64_2  #: per-env ring of recent returns ``[N, sharpe_window]``
    actions: F64_2  #: the actions ``[N, 2]`` (discrete index in column 0)
    targets: F64_1  #: targets decided outside the kernel (a risk manager) ``[N]``
    sl: F64_1  #: ... their stop-loss levels
    tp: F64_1  #: ... their take-profit levels
    w: F64_1  #: the reward's weights (:data:`REWARD_KERNELS` order)
    p: F64_1  #: parameters (the ``P_*`` slots)
    vol: F64_1  #: realised volatility per bar, annualised (empty unless ``vol_target`` is set)
    market: F32_2  #: normalised features and signals ``[T, F]``
    obs_market: F32_3  #: observation windows ``[N, window, F]``
    obs_account: F32_2  #: account blocks ``[N, N_ACCOUNT]``
    rewards: F64_1  #: ``[N]``
    terminated: BOOL_1  #: ``[N]``
    truncated: BOOL_1  #: ``[N]``
    report: F64_2  #: step report rows ``[N, N_REPORT]`` (the ``Q_*`` columns)
    scheme: int  #: the action scheme's kernel id
    reward_id: int  #: the reward's kernel id
    window: int  #: rows of the observation window

    def replace(self, **changes: Any) -> StepArgs:
        """A copy with some fields replaced (arrays of the same dtype and dimensions)."""
        return self._replace(**changes)


def _layout() -> tuple[tuple[str, np.dtype | None, int], ...]:
    hints = get_type_hints(StepArgs, include_extras=True)
    out = []
    for name in StepArgs._fields:
        meta = getattr(hints[name], "__metadata__", None)
        out.append((name, np.dtype(meta[0]), int(meta[1])) if meta else (name, None, 0))
    return tuple(out)


#: ``(name, dtype, dimensions)`` of each field of :class:`StepArgs` (dtype ``None``: an int)
STEP_LAYOUT = _layout()
_TABLE_WIDTH = 1 + max(nd for _, _, nd in STEP_LAYOUT)  # address (or value), then the shape


def pack_args(args: StepArgs) -> np.ndarray:
    """The table of :func:`step_packed`: one int64 row per field of ``args``, the address and
    shape of an array, the value of an int. The caller keeps ``args`` alive for as long as it
    uses the table (it points into their memory).

    :raises ValueError: when an array is not of its field's dtype and dimensions, C order and
        writable.
    """
    table = np.zeros((len(STEP_LAYOUT), _TABLE_WIDTH), dtype=np.int64)
    for k, (name, dtype, ndim) in enumerate(STEP_LAYOUT):
        value = args[k]
        if dtype is None:
            table[k, 0] = int(value)
            continue
        if (not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != ndim
                or not value.flags.c_contiguous or not value.flags.writeable):
            raise ValueError(f"StepArgs.{name}: expected a writable C-order {dtype} array of "
                             f"{ndim} dimension(s)")
        table[k, 0] = value.ctypes.data
        table[k, 1 : 1 + ndim] = value.shape
    return table


def _field_type(dtype: np.dtype | None, ndim: int) -> Any:
    return types.int64 if dtype is None else types.Array(from_dtype(dtype), ndim, "C")


_ARGS_TYPE = types.NamedTuple([_field_type(d, nd) for _, d, nd in STEP_LAYOUT], StepArgs)


@intrinsic
def unpack_args(typingctx: Any, table: Any) -> Any:
    """The :class:`StepArgs` a :func:`pack_args` table describes, as views of the same memory
    (no copy, no reference counting: the table's owner keeps the arrays alive). A compiled
    function unboxes each array argument it is called with (data pointer, shape, strides):
    ~0.2 µs of a single env's step, two thirds of the kernel's own work; one table is one
    argument."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        base = make_array(signature.args[0])(context, builder, args[0]).data
        intp = context.get_value_type(types.intp)

        def cell(k: int, j: int) -> Any:
            return builder.load(builder.gep(base, [intp(k * _TABLE_WIDTH + j)]))

        values = []
        for k, (_, dtype, ndim) in enumerate(STEP_LAYOUT):
            if dtype is None:
                values.append(cell(k, 0))
                continue
            aty = signature.return_type.types[k]
            shape = [cell(k, 1 + d) for d in range(ndim)]
            strides = [intp(0)] * ndim
            stride = intp(dtype.itemsize)
            for d in range(ndim - 1, -1, -1):  # C order
                strides[d] = stride
                stride = builder.mul(stride, shape[d])
            data = builder.inttoptr(cell(k, 0), context.get_data_type(aty.dtype).as_pointer())
            ary = make_array(aty)(context, builder)
            populate_array(ary, data=data, shape=shape, strides=strides,
                           itemsize=intp(dtype.itemsize), meminfo=None)
            values.append(ary._getvalue())
        return context.make_tuple(builder, signature.return_type, values)

    if not (isinstance(table, types.Array) and table.dtype == types.int64 and table.ndim == 2
            and table.layout == "C"):
        return None
    return _ARGS_TYPE(table), codegen


def entry_point(kernel: Any, args: tuple[Any, ...]) -> Callable[..., Any]:
    """``kernel`` compiled for exactly the types of ``args``, as a function that skips numba's
    per-call dispatch (typing every argument and looking up the overload: microseconds for a
    :class:`StepArgs`, more than a single env's step).

    The returned function checks nothing: call it only with arguments of the same types
    (dtype, dimensions, layout, writability) as ``args``, in practice with the same arrays.
    Falls back to the dispatcher itself where numba's API differs.
    """
    try:
        compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
    except Exception:  # pragma: no cover - depends on the numba version
        return kernel
    return compiled if callable(compiled) else kernel


# -- action -> target --------------------------------------------------------------------------
@_jit
def target_of(a: StepArgs, i: int, a0: float, a1: float) -> tuple[float, float, float]:
    """(target units, stop-loss level, take-profit level) of env ``i``'s action ``(a0, a1)``;
    NaN level = keep, 0 = clear. Counts actions that do not apply in ``a.env[i, E_INVALID]``."""
    st = a.st[i]
    p = a.p
    bar = int(st[K.BAR])
    c = a.mkt[bar, K.M_CLOSE]
    mult = a.cfg[K.C_MULTIPLIER]  # units are contracts: one is worth c * mult
    eq = st[K.EQUITY]
    pos = st[K.POS]
    nan = np.nan
    scheme = a.scheme
    if scheme == S_DISCRETE3:
        side = int(a0) - 1  # 0 short, 1 flat, 2 long
        if side != 0 and pos * side > 0.0:
            return pos, nan, nan  # already on that side: hold, no re-sizing trade
        if side == 0:  # flat: clear the levels (a flat account has none: keep, a hold)
            return 0.0, (0.0 if pos != 0.0 else nan), nan
        full = p[P_LEVERAGE] * eq / c / mult if eq > 0.0 else 0.0
        target = side * p[P_MAX_EXPOSURE] * full
        return target, nan, nan
    full = p[P_LEVERAGE] * eq / c / mult if eq > 0.0 else 0.0
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
    dist = p[P_STOP_ATR] * a.atr[bar]
    if act == ENTER_LONG or act == ENTER_SHORT:  # noqa: SIM109 (numba: no tuple membership)
        side = 1.0 if act == ENTER_LONG else -1.0
        if pos * side > 0.0:
            a.env[i, E_INVALID] += 1.0  # already in that direction
            return pos, nan, nan
        size = p[P_RISK_PER_TRADE] * eq / dist / mult if dist > 0.0 else full
        cap = min(full, p[P_MAX_CAPITAL] * eq / c / mult) if eq > 0.0 else 0.0
        if size > cap:
            size = cap
        return side * size, c - side * dist if dist > 0.0 else nan, nan
    if pos == 0.0 and act != HOLD:
        a.env[i, E_INVALID] += 1.0  # exit / scale with no position
        return 0.0, nan, nan
    if act == EXIT:
        return 0.0, 0.0, nan
    if act == SCALE_IN:
        return pos * 1.5, nan, nan
    if act == SCALE_OUT:
        return pos * 0.5, nan, nan
    return pos, nan, nan  # HOLD


@_jit
def decide_target(a: StepArgs, i: int, a0: float, a1: float) -> tuple[float, float, float]:
    """Env ``i``'s order for its action ``(a0, a1)``: :func:`target_of`, then the switches
    against costs (each off at 0): no decision between two decisions (``decision_interval``),
    volatility targeting of a new target's size (``vol_target``), a change refused before the
    position was held ``min_hold`` bars, or when it moves the position by no more than the
    ``hysteresis`` band. A NaN target is no order at all (the bar is processed as it is:
    pending orders, stops and the mark still act)."""
    e = a.env[i]
    p = a.p
    nan = np.nan
    if e[E_SINCE_DECISION] != 0.0:
        return nan, nan, nan
    target, stop, take = target_of(a, i, a0, a1)
    st = a.st[i]
    pos = st[K.POS]
    if target == pos:
        return target, stop, take
    if p[P_VOL_TARGET] > 0.0:
        vol = a.vol[int(st[K.BAR])]
        cap = p[P_MAX_EXPOSURE] * p[P_LEVERAGE]
        if vol > 0.0 and p[P_VOL_TARGET] < vol * cap:
            target = target * (p[P_VOL_TARGET] / (vol * cap))
    if p[P_MIN_HOLD] > 0.0 and e[E_HELD] < p[P_MIN_HOLD]:
        return nan, nan, nan
    if p[P_HYSTERESIS] > 0.0:
        eq = st[K.EQUITY]
        c = a.mkt[int(st[K.BAR]), K.M_CLOSE]
        unit = c * a.cfg[K.C_MULTIPLIER]  # one contract's notional
        full = p[P_MAX_EXPOSURE] * p[P_LEVERAGE] * eq / unit if eq > 0.0 else 0.0
        if abs(target - pos) <= p[P_HYSTERESIS] * full:
            return nan, nan, nan
    return target, stop, take


@_jit
def compute_targets(a: StepArgs) -> None:
    """``a.targets`` / ``a.sl`` / ``a.tp`` of every env's action in ``a.actions`` through
    :func:`decide_target` (NaN target: the env is done, or no order this bar); used when a risk
    manager adjusts the targets before the step."""
    for i in range(a.st.shape[0]):
        if a.env[i, E_DONE] != 0.0:
            a.targets[i] = np.nan
            continue
        a.targets[i], a.sl[i], a.tp[i] = decide_target(a, i, a.actions[i, 0], a.actions[i, 1])


@njit(cache=True, error_model="numpy")  # allocates its output: with numba's runtime
def realised_vol(close: np.ndarray, span: float, bars_per_year: float) -> np.ndarray:
    """Annualised realised volatility at the close of every bar: the square root of an EWMA
    (``alpha = 2 / (span + 1)``, weights normalised as pandas' ``adjust=True``) of the squared
    close-to-close returns of bars ``1 .. t``, times ``sqrt(bars_per_year)``. Causal: the value
    at ``t`` reads closes ``0 .. t`` only. Bar 0 has no return: NaN (no scaling)."""
    n = close.shape[0]
    out = np.empty(n)
    if n == 0:
        return out
    out[0] = np.nan
    decay = 1.0 - 2.0 / (span + 1.0)
    num = 0.0
    den = 0.0
    for t in range(1, n):
        num, den = vol_ewm_step(num, den, close[t] / close[t - 1] - 1.0, decay)
        out[t] = math.sqrt(num / den * bars_per_year)
    return out


@njit(cache=True, error_model="numpy")
def vol_ewm_step(num: float, den: float, r: float, decay: float) -> tuple[float, float]:
    """One bar of :func:`realised_vol`'s EWMA: the weighted sum of squared returns and of the
    weights after a return ``r`` (the vol is ``sqrt(num / den * bars_per_year)``)."""
    return num * decay + r * r, den * decay + 1.0


@njit(cache=True, error_model="numpy")
def vol_ewm_state(close: np.ndarray, span: float) -> tuple[float, float]:
    """:func:`realised_vol`'s EWMA state at the close of the last of ``close`` (a live feed
    carries it on with :func:`vol_ewm_step`, one new bar at a time)."""
    decay = 1.0 - 2.0 / (span + 1.0)
    num = 0.0
    den = 0.0
    for t in range(1, close.shape[0]):
        num, den = vol_ewm_step(num, den, close[t] / close[t - 1] - 1.0, decay)
    return num, den


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
def _liq_distance(st: np.ndarray, c: float, mmr: float, cfg: np.ndarray) -> float:
    """Relative distance from the close to the engine's liquidation price (1 when none
    applies)."""
    pos = st[K.POS]
    if pos == 0.0 or mmr <= 0.0:
        return 1.0
    p = K.liquidation_price(st, cfg)
    if pos > 0.0:
        return 1.0 if math.isnan(p) else min(1.0, max(0.0, (c - p) / c))
    return min(1.0, max(0.0, (p - c) / c))


@_jit
def observe(a: StepArgs, i: int) -> None:
    """Write env ``i``'s observation: market rows ``bar - window + 1 .. bar`` and the account."""
    s = a.st[i]
    bar = int(s[K.BAR])
    first = bar - a.window + 1
    market = a.market
    obs = a.obs_market[i]
    for r in range(a.window):
        for j in range(market.shape[1]):
            obs[r, j] = market[first + r, j]
    p = a.p
    c = a.mkt[bar, K.M_CLOSE]
    eq = s[K.EQUITY]
    clip = p[P_OBS_CLIP]
    lev = p[P_LEVERAGE]
    e = a.env[i]
    mean, std, n = _ring_stats(e, a.rets.shape[1])
    values = (
        s[K.POS] * c * a.cfg[K.C_MULTIPLIER] / eq / lev if eq > 0.0 else 0.0,
        s[K.UNREALIZED] / eq if eq > 0.0 else 0.0,
        math.tanh(e[E_IN_POSITION] / 100.0),
        eq / s[K.INITIAL_EQUITY] - 1.0,
        s[K.DRAWDOWN],
        s[K.CASH] / eq if eq > 0.0 else 0.0,
        mean / std * math.sqrt(n) if std > 0.0 else 0.0,
        _liq_distance(s, c, p[P_MMR], a.cfg),
        s[K.N_WINS] / s[K.N_TRADES] if s[K.N_TRADES] > 0.0 else 0.5,
    )
    account = a.obs_account[i]
    for k in range(N_ACCOUNT):
        v = values[k]
        if not math.isfinite(v):
            v = 0.0
        account[k] = min(clip, max(-clip, v))


@_inline
def _reward(a: StepArgs, i: int, ret: float, costs_delta: float, c: float) -> float:
    """Env ``i``'s reward for the bar just processed (before ``reward_scale``)."""
    s = a.st[i]
    e = a.env[i]
    ring = a.rets[i]
    w = a.w
    eq = s[K.EQUITY]
    prev = e[E_PREV_EQUITY]
    if s[K.BANKRUPT] != 0.0 or eq <= 0.0:
        return w[0]
    reward_id = a.reward_id
    if reward_id == R_LOG_RETURN:
        return math.log(eq / prev)
    if reward_id == R_ASYMMETRIC_DRAWDOWN:
        r = ret if ret >= 0.0 else w[1] * ret
        return r - w[2] * max(0.0, s[K.DRAWDOWN] - e[E_PREV_DRAWDOWN])
    if reward_id == R_RISK_ADJUSTED:
        mean, std, n = _ring_stats(e, ring.shape[0])
        sharpe = mean / std * math.sqrt(n) if std > 0.0 else 0.0
        hold_excess = max(0.0, e[E_IN_POSITION] - w[4])
        liq = (max(0.0, 1.0 - _liq_distance(s, c, a.p[P_MMR], a.cfg) / w[8]) if w[8] > 0.0
               else 0.0)
        return (ret - w[1] * s[K.DRAWDOWN] - w[2] * std - w[3] * hold_excess
                - w[5] * costs_delta / prev + w[6] * sharpe - w[7] * liq)
    if reward_id == R_DIFFERENTIAL_SHARPE:
        ma = e[E_DSR_A]
        mb = e[E_DSR_B]
        da = ret - ma
        db = ret * ret - mb
        var = mb - ma * ma
        d = (mb * da - 0.5 * ma * db) / var ** 1.5 if var > 1e-18 else 0.0
        eta = w[1]
        e[E_DSR_A] = ma + eta * da
        e[E_DSR_B] = mb + eta * db
        return d
    # cvar_penalized
    cvar = _cvar(ring, int(e[E_RET_COUNT]), w[1])
    return ret - w[2] * max(0.0, -cvar)


@_inline
def transition(a: StepArgs, i: int, target: float, stop: float,
               take: float) -> tuple[float, bool, bool]:
    """Env ``i``'s bar after its action became ``(target, stop, take)``: the engine's fill and
    mark, the return ring, the reward, the termination flags (``env[i, E_DONE]`` set when either
    holds). Returns ``(scaled reward, terminated, truncated)``; the observation is not written
    (:func:`observe`). Shared by :func:`step_envs` and the backtest runner's loop."""
    s = a.st[i]
    e = a.env[i]
    p = a.p
    costs_before = s[K.FEES] + s[K.SPREAD_COST] + s[K.SLIPPAGE_COST]
    funding_before = s[K.FUNDING]
    pos_before = s[K.POS]
    if math.isnan(target):  # no order (decide_target): the bar as it comes
        K.advance(s, a.lots[i], a.orders[i], a.trades, a.mkt, a.cfg)
    else:
        K.step(s, a.lots[i], a.orders[i], a.trades, a.mkt, a.cfg, target, stop, take)
    bar = int(s[K.BAR])
    c = a.mkt[bar, K.M_CLOSE]
    eq = s[K.EQUITY]
    prev = e[E_PREV_EQUITY]
    ret = eq / prev - 1.0 if prev > 0.0 else 0.0
    _push_return(e, a.rets[i], ret)
    sign = 1.0 if s[K.POS] > 0.0 else (-1.0 if s[K.POS] < 0.0 else 0.0)
    e[E_IN_POSITION] = e[E_IN_POSITION] + 1.0 if sign != 0.0 and sign == e[E_POS_SIGN] else (
        1.0 if sign != 0.0 else 0.0)
    e[E_POS_SIGN] = sign
    e[E_HELD] = e[E_HELD] + 1.0 if s[K.POS] == pos_before else 1.0
    if p[P_DECISION_INTERVAL] > 1.0:
        since = e[E_SINCE_DECISION] + 1.0
        e[E_SINCE_DECISION] = 0.0 if since >= p[P_DECISION_INTERVAL] else since
    trade_costs = s[K.FEES] + s[K.SPREAD_COST] + s[K.SLIPPAGE_COST] - costs_before
    costs_delta = trade_costs + (s[K.FUNDING] - funding_before)
    r = _reward(a, i, ret, costs_delta, c)
    if p[P_COST_PENALTY] != 0.0 and prev > 0.0:  # the trades' costs, not funding
        r -= p[P_COST_PENALTY] * trade_costs / prev
    r *= p[P_REWARD_SCALE]
    e[E_PREV_EQUITY] = eq
    e[E_PREV_DRAWDOWN] = s[K.DRAWDOWN]
    term = s[K.BANKRUPT] != 0.0 or eq <= p[P_EQUITY_FLOOR] * s[K.INITIAL_EQUITY]
    trunc = (not term) and bar >= int(e[E_END])
    if term or trunc:
        e[E_DONE] = 1.0
    return r, term, trunc


@_inline
def _step_env(a: StepArgs, i: int, use_targets: bool) -> None:
    """One step of env ``i`` (not done): action -> order -> next bar -> reward -> termination
    -> next observation -> report row."""
    if use_targets:
        target, stop, take = a.targets[i], a.sl[i], a.tp[i]
    else:
        target, stop, take = decide_target(a, i, a.actions[i, 0], a.actions[i, 1])
    r, term, trunc = transition(a, i, target, stop, take)
    # decision_interval k: the step goes on, without orders, to the bar of the next decision
    # (the backtest's per-bar loop, P_BAR_STEP, steps one bar at a time); rewards summed
    while not (term or trunc) and a.env[i, E_SINCE_DECISION] != 0.0 and a.p[P_BAR_STEP] == 0.0:
        r2, term, trunc = transition(a, i, np.nan, np.nan, np.nan)
        r += r2
    a.rewards[i] = r
    a.terminated[i] = term
    a.truncated[i] = trunc
    observe(a, i)
    s = a.st[i]
    q = a.report[i]
    n = s[K.N_TRADES]
    q[Q_REWARD] = r
    q[Q_TERMINATED] = 1.0 if term else 0.0
    q[Q_TRUNCATED] = 1.0 if trunc else 0.0
    q[Q_BAR] = s[K.BAR]
    q[Q_EQUITY] = s[K.EQUITY]
    q[Q_POSITION] = s[K.POS]
    q[Q_PNL] = s[K.EQUITY] - s[K.INITIAL_EQUITY]
    q[Q_TRADES] = n
    q[Q_WIN_RATE] = s[K.N_WINS] / n if n > 0.0 else 0.0
    q[Q_MAX_DRAWDOWN] = s[K.MAX_DRAWDOWN]
    q[Q_COSTS] = s[K.FEES] + s[K.SPREAD_COST] + s[K.SLIPPAGE_COST] + s[K.FUNDING]
    q[Q_BANKRUPT] = s[K.BANKRUPT]
    q[Q_INVALID] = a.env[i, E_INVALID]


@_jit
def step_range(a: StepArgs, use_targets: bool, lo: int, hi: int) -> None:
    """One step of envs ``lo .. hi - 1`` that are not done (a done env's reward is 0)."""
    for i in range(lo, hi):
        if a.env[i, E_DONE] != 0.0:
            a.rewards[i] = 0.0
            continue
        _step_env(a, i, use_targets)


@_jit
def step_envs(a: StepArgs, use_targets: bool) -> None:
    """One step of every env that is not done (a done env's reward is 0). ``use_targets``:
    the targets in ``a.targets`` / ``a.sl`` / ``a.tp`` (a risk manager's), else each env's own
    action through the action scheme."""
    step_range(a, use_targets, 0, a.st.shape[0])


@_inline
def _report_of(a: StepArgs, i: int) -> tuple[
        float, bool, bool, int, float, float, float, int, float, float, float, bool, int]:
    q = a.report[i]
    return (q[Q_REWARD], q[Q_TERMINATED] != 0.0, q[Q_TRUNCATED] != 0.0, int(q[Q_BAR]),
            q[Q_EQUITY], q[Q_POSITION], q[Q_PNL], int(q[Q_TRADES]), q[Q_WIN_RATE],
            q[Q_MAX_DRAWDOWN], q[Q_COSTS], q[Q_BANKRUPT] != 0.0, int(q[Q_INVALID]))


@_jit
def step_packed(t: np.ndarray, use_targets: bool) -> tuple[
        float, bool, bool, int, float, float, float, int, float, float, float, bool, int]:
    """:func:`step_envs` on the :class:`StepArgs` packed by :func:`pack_args` (the envs' hot
    path: one array to unbox instead of 22); returns env 0's report row with each value in the
    type the env hands out: reward, terminated, truncated, then :func:`info_values`'s values in
    its order (bar, equity, position, total PnL, trade count, win rate, max drawdown, costs,
    bankrupt, invalid actions)."""
    a = unpack_args(t)
    step_envs(a, use_targets)
    return _report_of(a, 0)


# The parallel step lives in functions of its own: loading a kernel that calls a parallel one
# starts numba's thread pool, which the serial path never needs.
@njit(cache=True, error_model="numpy", parallel=True)
def step_envs_parallel(a: StepArgs, use_targets: bool, chunks: int) -> None:
    """:func:`step_envs` with the envs split into ``chunks`` contiguous blocks stepped in
    parallel, so at most ``chunks`` threads work (envs are independent: the results do not
    depend on the threads)."""
    n = a.st.shape[0]
    size = (n + chunks - 1) // chunks
    for c in prange(chunks):
        # a call, not the loop's body: numba's parallel transform would treat the body's writes
        # into the bundle's arrays as private to the thread (measured: rewards lost)
        step_range(a, use_targets, c * size, min(n, (c + 1) * size))


@_jit
def step_packed_parallel(t: np.ndarray, use_targets: bool, threads: int) -> tuple[
        float, bool, bool, int, float, float, float, int, float, float, float, bool, int]:
    """:func:`step_packed` with the envs split over ``threads`` numba threads."""
    a = unpack_args(t)
    step_envs_parallel(a, use_targets, threads)
    return _report_of(a, 0)


# -- episodes and info -------------------------------------------------------------------------
@_jit
def reset_env(a: StepArgs, i: int, start: int, end: int, seed: float) -> None:
    """Env ``i``: its account reset to the close of ``start`` (the engine's
    :func:`~rltrade.sim.kernels.reset_one`), a fresh episode ending at ``end``, its first
    observation."""
    K.reset_one(a.st[i], a.lots[i], a.orders[i], a.mkt, a.cfg, start, seed)
    s = a.st[i]
    e = a.env[i]
    for k in range(N_ENV):
        e[k] = 0.0
    e[E_START] = start
    e[E_END] = end
    e[E_PREV_EQUITY] = s[K.EQUITY]
    pos = s[K.POS]
    e[E_POS_SIGN] = 1.0 if pos > 0.0 else (-1.0 if pos < 0.0 else 0.0)
    e[E_IN_POSITION] = 1.0 if pos != 0.0 else 0.0
    e[E_PREV_DRAWDOWN] = s[K.DRAWDOWN]
    e[E_HELD] = 1e18  # min_hold: the starting position counts as held long enough
    ring = a.rets[i]
    for k in range(ring.shape[0]):
        ring[k] = 0.0
    observe(a, i)


@_jit
def info_values(a: StepArgs, i: int) -> tuple[
        int, float, float, float, int, float, float, float, bool, int]:
    """What env ``i``'s info dict reports, in one call: bar, equity, position, total PnL, trade
    count, win rate, max drawdown, costs, bankrupt, invalid actions."""
    s = a.st[i]
    n = int(s[K.N_TRADES])
    return (int(s[K.BAR]), s[K.EQUITY], s[K.POS], s[K.EQUITY] - s[K.INITIAL_EQUITY], n,
            s[K.N_WINS] / n if n > 0 else 0.0, s[K.MAX_DRAWDOWN],
            s[K.FEES] + s[K.SPREAD_COST] + s[K.SLIPPAGE_COST] + s[K.FUNDING],
            s[K.BANKRUPT] != 0.0,
            int(a.env[i, E_INVALID]))
