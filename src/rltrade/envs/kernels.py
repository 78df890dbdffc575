"""Numba kernels of the trading environments: one rule set for one env and for many.

:class:`~rltrade.envs.TradingEnv` (one env) and :class:`~rltrade.envs.VecTradingEnv` (N envs)
both call :func:`step_envs` on arrays of N rows, so their numbers are the same by construction.
For each env the kernel turns the action into a target position (the action scheme), fills it
through the execution engine's own kernel (:func:`rltrade.sim.kernels.step`), computes the reward,
the termination flags, and writes the next observation (window of market rows + account block).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

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
SCHEME_IDS = {"discrete3": S_DISCRETE3, "discrete6": S_DISCRETE6, "exposure_sl": S_EXPOSURE_SL}

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
    full = p[P_LEVERAGE] * eq / c if eq > 0.0 else 0.0
    if scheme == S_DISCRETE3:
        side = int(a0) - 1  # 0 short, 1 flat, 2 long
        target = side * p[P_MAX_EXPOSURE] * full
        return target, (0.0 if side == 0 else nan), nan
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


@_jit
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
    e[E_RET_HEAD] = (head + 1) % size
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


@_jit
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
        costs_before = s[K.FEES] + s[K.SPREAD_COST] + s[K.SLIPPAGE_COST]
        K.step(s, lots[i], orders[i], trades, mkt, cfg, target, stop, take)
        bar = int(s[K.BAR])
        c = mkt[bar, K.M_CLOSE]
        eq = s[K.EQUITY]
        prev = e[E_PREV_EQUITY]
        ret = eq / prev - 1.0 if prev > 0.0 else 0.0
        ring = rets[i]
        _push_return(e, ring, ret)
        sign = 1.0 if s[K.POS] > 0.0 else (-1.0 if s[K.POS] < 0.0 else 0.0)
        e[E_IN_POSITION] = e[E_IN_POSITION] + 1.0 if sign != 0.0 and sign == e[E_POS_SIGN] else (
            1.0 if sign != 0.0 else 0.0)
        e[E_POS_SIGN] = sign
        costs_delta = s[K.FEES] + s[K.SPREAD_COST] + s[K.SLIPPAGE_COST] - costs_before
        r = _reward(s, e, ring, ret, costs_delta, c, reward_id, w, p)
        rewards[i] = r * p[P_REWARD_SCALE]
        e[E_PREV_EQUITY] = eq
        e[E_PREV_DRAWDOWN] = s[K.DRAWDOWN]
        term = s[K.BANKRUPT] != 0.0 or eq <= p[P_EQUITY_FLOOR] * s[K.INITIAL_EQUITY]
        trunc = (not term) and bar >= int(e[E_END])
        terminated[i] = term
        truncated[i] = trunc
        if term or trunc:
            e[E_DONE] = 1.0
        observe(st, mkt, env, rets, market, window, p, obs_market, obs_account, i)
        q = report[i]
        n = s[K.N_TRADES]
        q[Q_REWARD] = rewards[i]
        q[Q_TERMINATED] = 1.0 if term else 0.0
        q[Q_TRUNCATED] = 1.0 if trunc else 0.0
        q[Q_BAR] = bar
        q[Q_EQUITY] = eq
        q[Q_POSITION] = s[K.POS]
        q[Q_PNL] = eq - s[K.INITIAL_EQUITY]
        q[Q_TRADES] = n
        q[Q_WIN_RATE] = s[K.N_WINS] / n if n > 0.0 else 0.0
        q[Q_MAX_DRAWDOWN] = s[K.MAX_DRAWDOWN]
        q[Q_COSTS] = s[K.FEES] + s[K.SPREAD_COST] + s[K.SLIPPAGE_COST]
        q[Q_BANKRUPT] = s[K.BANKRUPT]
        q[Q_INVALID] = e[E_INVALID]


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
