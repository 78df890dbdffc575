"""Seeded synthetic markets with known properties: :func:`synthetic_market`.

Four kinds, each a bar series in exactly the layout :func:`rltrade.data.load_bars` returns
(UTC nanosecond ``DatetimeIndex`` named ``timestamp`` holding bar **open** times, float64
``open, high, low, close, volume`` and optional extra columns):

``gbm``
    Geometric Brownian motion. With the default ``drift=0`` the *price* is a martingale (the
    log price drifts by ``-sigma**2 / 2`` per bar), so no policy has an edge before costs.
``regime``
    Three volatility regimes with Markov switching: 0 calm, 1 choppy, 2 crisis. Choppy bars are
    a little mean-reverting (a negative MA(1) in their shocks), crisis bars carry a negative
    drift and more volume. ``include_truth=True`` adds the hidden state as column ``regime``.
``ou``
    A mean-reverting (Ornstein-Uhlenbeck) log price around ``mean`` with half-life
    ``half_life`` bars.
``planted``
    Returns partly predictable from the published column ``alpha_signal``, so that an oracle
    exists and a learning agent has something to find (see *Timing contract* below).

Timing contract of ``planted`` (the no-lookahead rule of the whole project)
    ``alpha_signal[t]`` is known at the **close** of bar ``t``. It predicts the return of bar
    ``t + 1`` from its open to its close, i.e. exactly what a decision taken at the close of
    ``t`` and filled at the open of ``t + 1`` earns::

        alpha[t] = alpha_persistence * alpha[t-1] + sqrt(1 - alpha_persistence**2) * u[t]
        log(close[t+1] / open[t+1]) = s * sigma * alpha[t] + sqrt(1 - s**2) * sigma * eps[t+1]
        open[t+1] == close[t]                       (no gap, so nothing leaks into the open)

    with ``s = alpha_strength`` and ``u``, ``eps`` independent standard normals; ``alpha`` has
    unit stationary variance, so ``corr(alpha[t], log(close[t+1]/open[t+1])) == s``. The
    **oracle policy** holds ``sign(alpha_signal[t])`` over bar ``t + 1``
    (:func:`oracle_positions`); it earns ``s * sigma * sqrt(2 / pi)`` per bar on average, a
    policy that ignores ``alpha_signal`` earns nothing.

Common to all kinds:

* ``sigma = annual_vol * sqrt(timeframe seconds / SECONDS_PER_YEAR)`` is the per-bar log
  volatility (the ``choppy`` regime's volatility for ``regime``).
* Bars open near the previous close (gap noise ``gap_vol * sigma``; none for ``planted``);
  ``high``/``low`` reach beyond the body by ``wick * sigma * |N(0, 1)|`` in log terms, so
  ``high >= max(open, close)``, ``low <= min(open, close)`` and every price is positive.
* Volume is lognormal around ``base_volume``, rises with ``|return|`` and with the regime's
  volatility, and clusters (an AR(1) component).
* ``derivatives=True`` adds ``open_interest`` (slowly varying, driven by volume and trend) and
  ``funding_rate`` (per bar, around ``base_funding``, tilting positive after up moves,
  ``|x| < 0.003``). Both are causal: their value at bar ``t`` uses bars ``<= t`` only.
* Deterministic and **prefix-stable**: each random stream is an independent child of
  ``numpy.random.default_rng(seed)`` consumed in bar order and every recursion is causal, so a
  series of ``M`` bars equals the first ``M`` bars of a longer one with the same arguments.
  Turning ``derivatives`` or ``include_truth`` on only adds columns; the others do not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd

from rltrade.data.timeframes import SECONDS_PER_YEAR, Timeframe, as_ns, parse_timeframe, to_utc
from rltrade.errors import DataError

KINDS = ("gbm", "regime", "ou", "planted")

# Parameters every kind accepts, then each kind's own (name -> default). ``None`` for ``mean``
# means log(start_price).
_COMMON_PARAMS: dict[str, float] = {
    "wick": 0.5,
    "base_volume": 1000.0,
    "base_open_interest": 50_000.0,
    "base_funding": 1e-4,
}
_KIND_PARAMS: dict[str, dict[str, float | None]] = {
    "gbm": {"drift": 0.0, "gap_vol": 0.1},
    "regime": {
        "drift": 0.0,
        "crisis_drift": -1.0,
        "p_calm": 0.995,
        "p_choppy": 0.99,
        "p_crisis": 0.98,
        "vol_calm": 0.5,
        "vol_choppy": 1.0,
        "vol_crisis": 3.0,
        "choppy_reversion": 0.2,
        "gap_vol": 0.1,
    },
    "ou": {"half_life": 50.0, "mean": None, "gap_vol": 0.1},
    "planted": {"alpha_strength": 0.3, "alpha_persistence": 0.3},
}
#: Default value of every parameter, by kind (``mean=None`` stands for ``log(start_price)``).
PARAM_DEFAULTS: dict[str, dict[str, float | None]] = {
    kind: {**own, **_COMMON_PARAMS} for kind, own in _KIND_PARAMS.items()
}

# (low, high, low inclusive, high inclusive); None = unbounded.
_BOUNDS: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "wick": (0.0, None, True, False),
    "base_volume": (0.0, None, False, False),
    "base_open_interest": (0.0, None, False, False),
    "base_funding": (-0.002, 0.002, True, True),
    "drift": (None, None, False, False),
    "crisis_drift": (None, None, False, False),
    "p_calm": (0.0, 1.0, True, False),
    "p_choppy": (0.0, 1.0, True, False),
    "p_crisis": (0.0, 1.0, True, False),
    "vol_calm": (0.0, None, False, False),
    "vol_choppy": (0.0, None, False, False),
    "vol_crisis": (0.0, None, False, False),
    "choppy_reversion": (0.0, 1.0, True, False),
    "gap_vol": (0.0, 1.0, True, False),
    "half_life": (0.0, None, False, False),
    "mean": (None, None, False, False),
    "alpha_strength": (0.0, 1.0, True, False),
    "alpha_persistence": (-1.0, 1.0, False, False),
}

# Independent random streams (children of default_rng(seed)); fixed roles, never reordered.
_GAP, _BODY, _HIGH, _LOW, _VOLUME, _KIND, _DERIV = range(7)
_N_STREAMS = 7

# Volume model: log(volume / base) = _V_SHOCK * (|r| / bar vol - E|N|) + _V_REGIME * log(vol mult)
#                                    + AR(1) cluster (sd _V_CLUSTER) + iid noise (sd _V_NOISE)
_V_SHOCK, _V_REGIME, _V_CLUSTER, _V_NOISE, _V_PERSIST = 0.5, 0.8, 0.3, 0.3, 0.9
_E_ABS_NORMAL = math.sqrt(2.0 / math.pi)
# Open interest: log(oi / base) is an AR(1) with this persistence driven by volume and returns.
_OI_PERSIST, _OI_VOLUME, _OI_TREND, _OI_NOISE = 0.995, 0.0025, 0.01, 0.01
# Funding: base + amp * tanh(gain * EMA of normalized returns) + noise, clipped below 0.003.
_F_PERSIST, _F_AMP, _F_GAIN, _F_NOISE, _F_CLIP = 0.9, 5e-4, 2.0, 5e-5, 0.0029


def _ar1(innovations: np.ndarray, phi: float, x0: float = 0.0) -> np.ndarray:
    """``x[t] = phi * x[t-1] + innovations[t]`` with ``x[-1] = x0``, vectorized.

    A log-depth scan (Hillis-Steele): after the pass with shift ``s`` every entry holds the sum of
    its last ``2 * s`` innovations weighted by powers of ``phi``. Entry ``t`` only ever reads
    entries ``<= t`` and goes through the same operations whatever the array length, so the
    result is bit-identical on prefixes (never overflows, unlike a ``phi**-t`` cumsum).
    """
    y = np.array(innovations, dtype=np.float64, copy=True)
    n = len(y)
    if n == 0:
        return y
    y[0] += phi * x0
    shift, coef = 1, float(phi)
    while shift < n and coef != 0.0:
        y[shift:] += coef * y[:-shift]
        shift *= 2
        coef *= coef
    return y


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise DataError(f"synthetic market: {name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise DataError(f"synthetic market: {name} must be finite, got {value!r}")
    return out


def _check_bounds(name: str, value: float) -> None:
    lo, hi, lo_inc, hi_inc = _BOUNDS[name]
    bad_lo = lo is not None and (value < lo or (value == lo and not lo_inc))
    bad_hi = hi is not None and (value > hi or (value == hi and not hi_inc))
    if bad_lo or bad_hi:
        left = "(-inf" if lo is None else ("[" if lo_inc else "(") + f"{lo:g}"
        right = "inf)" if hi is None else f"{hi:g}" + ("]" if hi_inc else ")")
        raise DataError(f"synthetic market: {name}={value!r} is outside {left}, {right}")


def _resolve_params(kind: str, params: dict[str, Any], start_price: float) -> dict[str, float]:
    """Defaults overlaid with checked user values; ``mean=None`` becomes ``log(start_price)``."""
    allowed = PARAM_DEFAULTS[kind]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise DataError(
            f"synthetic market: unknown parameter(s) {', '.join(map(repr, unknown))} for kind "
            f"{kind!r}; valid parameters are {', '.join(sorted(allowed))} (plus n_bars, seed, "
            "timeframe, start, derivatives, include_truth, annual_vol, start_price)"
        )
    out: dict[str, float] = {}
    for name, default in allowed.items():
        value = params.get(name, default)
        if name == "mean" and value is None:
            out[name] = math.log(start_price)
            continue
        out[name] = _as_float(name, value)
        _check_bounds(name, out[name])
    return out


def _bar_index(start: str | pd.Timestamp, tf: Timeframe, n: int) -> pd.DatetimeIndex:
    """``n`` bar open times, the first at ``start`` rounded up to a bar boundary."""
    try:
        first = to_utc(start)
    except (ValueError, TypeError) as exc:
        raise DataError(f"synthetic market: cannot read start={start!r} as a timestamp") from exc
    if first is pd.NaT or pd.isna(first):
        raise DataError(f"synthetic market: cannot read start={start!r} as a timestamp")
    first = first.as_unit("ns")
    floored = tf.floor(pd.DatetimeIndex([first]).as_unit("ns")).as_unit("ns")[0]
    if floored < first:
        step = pd.DateOffset(months=tf.count) if tf.is_calendar else pd.Timedelta(tf.nanos, "ns")
        floored = floored + step
    too_long = DataError(
        f"synthetic market: {n} bars of {tf.name} from {floored} run past pandas' last "
        f"timestamp {pd.Timestamp.max}; use fewer bars or a shorter timeframe"
    )
    if tf.is_calendar:
        try:
            index = pd.date_range(floored, periods=n, freq=tf.pandas_freq).as_unit("ns")
        except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime) as exc:
            raise too_long from exc
        if len(index) != n:
            raise too_long
        index = pd.DatetimeIndex(index, freq=None)
    else:
        start_ns = int(as_ns(pd.DatetimeIndex([floored]))[0])
        if start_ns + (n - 1) * tf.nanos > pd.Timestamp.max.value:
            raise too_long
        ns = start_ns + np.arange(n, dtype=np.int64) * np.int64(tf.nanos)
        index = pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")
    index.name = "timestamp"
    return index


def _regime_states(rng: np.random.Generator, n: int, stay: np.ndarray) -> np.ndarray:
    """Markov regime path of ``n`` bars, simulated as segments (vectorized, prefix-stable).

    The first state is drawn from the stationary distribution. A segment in state ``i`` lasts a
    geometric number of bars with mean ``1 / (1 - stay[i])``; on leaving, the next state is
    either other state with equal probability (so ``next = (state + 1 or 2) mod 3``).
    """
    mean_len = 1.0 / (1.0 - stay)
    stationary = mean_len / mean_len.sum()
    s0 = int(np.searchsorted(np.cumsum(stationary), rng.random(), side="right"))
    s0 = min(s0, 2)
    with np.errstate(divide="ignore"):
        log_stay = np.log(stay)  # -inf for stay == 0: every segment then lasts one bar
    states: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    covered, state, chunk = 0, s0, max(16, int(2 * n / mean_len.min()) + 16)
    while covered < n:
        draws = rng.random((chunk, 2))  # per segment: (duration uniform, next-state uniform)
        steps = np.where(draws[:, 1] < 0.5, 1, 2)
        seg_states = (state + np.concatenate(([0], np.cumsum(steps[:-1])))) % 3
        state = int((seg_states[-1] + steps[-1]) % 3)
        u = 1.0 - draws[:, 0]  # in (0, 1]
        with np.errstate(divide="ignore"):
            ratio = np.log(u) / log_stay[seg_states]  # -log(u) / -log(p) >= 0
        seg_len = 1 + np.floor(np.minimum(np.nan_to_num(ratio, nan=0.0), 2.0**40)).astype(np.int64)
        states.append(seg_states)
        lengths.append(seg_len)
        covered += int(seg_len.sum())
    return np.repeat(np.concatenate(states), np.concatenate(lengths))[:n]


def _validate_basics(
    kind: Any, n_bars: Any, seed: Any, annual_vol: Any, start_price: Any
) -> tuple[str, int, int, float, float]:
    if not isinstance(kind, str) or kind.strip().lower() not in KINDS:
        raise DataError(f"unknown synthetic kind {kind!r}: choose one of {', '.join(KINDS)}")
    if isinstance(n_bars, bool) or not isinstance(n_bars, Integral) or int(n_bars) < 2:
        raise DataError(f"synthetic market: n_bars must be an integer >= 2, got {n_bars!r}")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0:
        raise DataError(f"synthetic market: seed must be a non-negative integer, got {seed!r}")
    vol = _as_float("annual_vol", annual_vol)
    if vol <= 0:
        raise DataError(f"synthetic market: annual_vol must be positive, got {annual_vol!r}")
    price = _as_float("start_price", start_price)
    if price <= 0:
        raise DataError(f"synthetic market: start_price must be positive, got {start_price!r}")
    return kind.strip().lower(), int(n_bars), int(seed), vol, price


def synthetic_market(
    kind: str = "gbm",
    n_bars: int = 10_000,
    seed: int = 0,
    timeframe: str = "1h",
    *,
    start: str | pd.Timestamp = "2020-01-01",
    derivatives: bool = False,
    include_truth: bool = False,
    annual_vol: float = 0.5,
    start_price: float = 100.0,
    **params: float,
) -> pd.DataFrame:
    """A seeded synthetic bar series of a given ``kind`` (see the module docstring).

    :param kind: one of :data:`KINDS`: ``"gbm"``, ``"regime"``, ``"ou"``, ``"planted"``.
    :param n_bars: number of bars, at least 2.
    :param seed: seed of ``numpy.random.default_rng``; equal arguments give identical frames.
    :param timeframe: bar spacing (``"1m"``, ``"1h"``, ``"1d"``, ``"1w"``, ``"1M"``...).
    :param start: open time of the first bar (UTC unless zoned), rounded up to a bar boundary.
    :param derivatives: add causal ``open_interest`` and ``funding_rate`` columns.
    :param include_truth: for ``regime``, add the hidden state as column ``regime``
        (0 calm, 1 choppy, 2 crisis, as float64); other kinds have no hidden column
        (``planted`` always publishes ``alpha_signal``).
    :param annual_vol: annualized log volatility; per bar
        ``annual_vol * sqrt(timeframe seconds / SECONDS_PER_YEAR)``.
    :param start_price: price level the series starts from (the first bar opens near it).
    :param params: parameters of the kind, all numbers (defaults in :data:`PARAM_DEFAULTS`).
        Every kind: ``wick`` (0.5; wick size in units of the bar's vol), ``base_volume``
        (1000), ``base_open_interest`` (50,000), ``base_funding`` (1e-4 per bar).
        ``gbm``: ``drift`` (0.0, annual), ``gap_vol`` (0.1; open gap noise as a fraction of
        the bar's vol). ``regime``: ``drift`` (0.0), ``crisis_drift`` (-1.0, annual, added in
        crisis), ``p_calm`` / ``p_choppy`` / ``p_crisis`` (0.995 / 0.99 / 0.98, probability of
        staying in the regime for another bar), ``vol_calm`` / ``vol_choppy`` / ``vol_crisis``
        (0.5 / 1.0 / 3.0, multipliers of the per-bar vol), ``choppy_reversion`` (0.2, negative
        MA(1) coefficient of choppy shocks), ``gap_vol`` (0.1). ``ou``: ``half_life`` (50.0
        bars), ``mean`` (log-price level, default ``log(start_price)``), ``gap_vol`` (0.1).
        ``planted``: ``alpha_strength`` (0.3, in [0, 1)), ``alpha_persistence`` (0.3, AR(1)
        coefficient of ``alpha_signal``, in (-1, 1)).
    :returns: a DataFrame like :func:`rltrade.data.load_bars` returns, with ``attrs``
        ``timeframe``, ``kind``, ``seed`` and ``source`` (``"synthetic:KIND"``).
    :raises DataError: unknown kind or parameter, or a value out of range (the message names
        the valid choices), or a series that would leave the datetime or float64 range.
    """
    kind, n, seed, annual_vol, start_price = _validate_basics(
        kind, n_bars, seed, annual_vol, start_price
    )
    tf = parse_timeframe(timeframe)
    p = _resolve_params(kind, params, start_price)
    index = _bar_index(start, tf, n)

    dt = tf.seconds / SECONDS_PER_YEAR
    sigma = annual_vol * math.sqrt(dt)
    streams = np.random.default_rng(seed).spawn(_N_STREAMS)
    path = _price_path(kind, streams, n, sigma, dt, p, start_price)
    sig_t = sigma * path.vol_mult
    high, low = _wicks(streams, path.open, path.close, sig_t, p["wick"])
    for name, values in (("open", path.open), ("high", high), ("low", low),
                         ("close", path.close)):
        if not (np.all(np.isfinite(values)) and np.all(values > 0)):
            raise DataError(
                f"synthetic market: these parameters drive {name} out of the float64 range "
                f"(annual_vol={annual_vol}, n_bars={n}, timeframe={tf.name}); lower annual_vol, "
                "drift or n_bars"
            )
    ret = np.log(path.close / np.concatenate(([start_price], path.close[:-1])))
    volume, log_vol = _volume(streams, ret, sig_t, path.vol_mult, p["base_volume"])

    columns: dict[str, np.ndarray] = {
        "open": path.open, "high": high, "low": low, "close": path.close, "volume": volume,
    }
    columns.update(path.extras)
    if derivatives:
        columns.update(_derivatives(streams, ret / sigma, log_vol, p))
    if include_truth:
        columns.update(path.truth)
    for name, values in columns.items():
        if not np.all(np.isfinite(values)) or (name in ("volume", "open_interest")
                                                 and not np.all(values > 0)):
            raise DataError(
                f"synthetic market: these parameters drive {name} out of the float64 range; "
                "use more moderate values"
            )

    frame = pd.DataFrame(columns, index=index, copy=False)
    frame.attrs.update(timeframe=tf.name, kind=kind, seed=seed, source=f"synthetic:{kind}")
    return frame


@dataclass
class _Path:
    """A kind's prices before wicks and volume: opens, closes, the per-bar volatility
    multiplier, published extra columns and hidden truth columns."""

    open: np.ndarray
    close: np.ndarray
    vol_mult: np.ndarray | float = 1.0
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)


def _price_path(
    kind: str, streams: list[np.random.Generator], n: int, sigma: float, dt: float,
    p: dict[str, float], start_price: float,
) -> _Path:
    """Opens and closes of ``kind`` (see the module docstring for each model)."""
    z_body = streams[_BODY].standard_normal(n)
    log_s0 = math.log(start_price)
    if kind == "planted":
        return _planted_path(streams[_KIND], z_body, sigma, p, log_s0, start_price)
    gap_vol = p["gap_vol"]
    z_gap = streams[_GAP].standard_normal(n)
    body_scale = math.sqrt(1.0 - gap_vol * gap_vol)
    vol_mult: np.ndarray | float = 1.0
    truth: dict[str, np.ndarray] = {}
    if kind == "gbm":
        mu = p["drift"] * dt - 0.5 * sigma**2
        gap = gap_vol * sigma * z_gap
        body = mu + body_scale * sigma * z_body
        log_close = log_s0 + np.cumsum(gap + body)
    elif kind == "regime":
        log_close, body, vol_mult, state = _regime_path(
            streams[_KIND], z_body, z_gap, sigma, dt, p, log_s0, body_scale
        )
        truth["regime"] = state.astype(np.float64)
    else:  # ou
        phi = 0.5 ** (1.0 / p["half_life"])
        gap = gap_vol * sigma * z_gap
        dev = _ar1(gap + body_scale * sigma * z_body, phi, x0=log_s0 - p["mean"])
        log_close = p["mean"] + dev
        prev = np.concatenate(([log_s0], log_close[:-1]))
        body = log_close - (prev + gap)
    return _Path(np.exp(log_close - body), np.exp(log_close), vol_mult, truth=truth)


def _planted_path(
    rng: np.random.Generator, z_body: np.ndarray, sigma: float, p: dict[str, float],
    log_s0: float, start_price: float,
) -> _Path:
    """``planted``: bodies partly predicted by the published AR(1) ``alpha_signal``; no gaps."""
    n = len(z_body)
    rho, strength = p["alpha_persistence"], p["alpha_strength"]
    u = rng.standard_normal(n)
    innov = math.sqrt(1.0 - rho * rho) * u
    innov[0] = u[0]  # start in the stationary distribution (unit variance)
    alpha = _ar1(innov, rho)
    body = sigma * z_body
    body[1:] = strength * sigma * alpha[:-1] + math.sqrt(1.0 - strength**2) * sigma * z_body[1:]
    close = np.exp(log_s0 + np.cumsum(body))
    open_ = np.empty(n)
    open_[0] = start_price
    open_[1:] = close[:-1]  # no gap: open[t+1] == close[t]
    return _Path(open_, close, extras={"alpha_signal": alpha})


def _regime_path(
    rng: np.random.Generator, z_body: np.ndarray, z_gap: np.ndarray, sigma: float, dt: float,
    p: dict[str, float], log_s0: float, body_scale: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``regime``: log closes, bodies, volatility multipliers and the hidden states."""
    stay = np.array([p["p_calm"], p["p_choppy"], p["p_crisis"]], dtype=np.float64)
    mults = np.array([p["vol_calm"], p["vol_choppy"], p["vol_crisis"]], dtype=np.float64)
    state = _regime_states(rng, len(z_body), stay)
    vol_mult = mults[state]
    sig_t = sigma * vol_mult
    theta = p["choppy_reversion"]
    z_prev = np.concatenate(([0.0], z_body[:-1]))
    shocks = np.where(state == 1, (z_body - theta * z_prev) / math.sqrt(1.0 + theta**2), z_body)
    drift_t = p["drift"] + p["crisis_drift"] * (state == 2)
    mu = drift_t * dt - 0.5 * sig_t**2
    gap = p["gap_vol"] * sig_t * z_gap
    body = mu + body_scale * sig_t * shocks
    return log_s0 + np.cumsum(gap + body), body, vol_mult, state


def _wicks(
    streams: list[np.random.Generator], open_: np.ndarray, close: np.ndarray,
    sig_t: np.ndarray | float, wick: float,
) -> tuple[np.ndarray, np.ndarray]:
    """High and low beyond the body by ``wick * sigma * |N(0, 1)|`` in log terms."""
    n = len(close)
    up = np.exp(wick * sig_t * np.abs(streams[_HIGH].standard_normal(n)))
    down = np.exp(-wick * sig_t * np.abs(streams[_LOW].standard_normal(n)))
    return np.maximum(open_, close) * up, np.minimum(open_, close) * down


def _volume(
    streams: list[np.random.Generator], ret: np.ndarray, sig_t: np.ndarray | float,
    vol_mult: np.ndarray | float, base_volume: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Volume (lognormal, larger after big moves and in volatile regimes, clustered) and its
    log relative to ``base_volume``."""
    n = len(ret)
    z_vol = streams[_VOLUME].standard_normal((n, 2))
    cluster_innov = math.sqrt(1.0 - _V_PERSIST**2) * _V_CLUSTER * z_vol[:, 1]
    cluster_innov[0] = _V_CLUSTER * z_vol[0, 1]
    log_vol = (
        _V_SHOCK * (np.abs(ret) / sig_t - _E_ABS_NORMAL)
        + _V_REGIME * np.log(vol_mult)
        + _ar1(cluster_innov, _V_PERSIST)
        + _V_NOISE * z_vol[:, 0]
    )
    return base_volume * np.exp(log_vol), log_vol


def _derivatives(
    streams: list[np.random.Generator], norm_ret: np.ndarray, log_vol: np.ndarray,
    p: dict[str, float],
) -> dict[str, np.ndarray]:
    """Causal ``open_interest`` (driven by volume and trend) and ``funding_rate`` (tilting
    with recent returns, clipped)."""
    z_der = streams[_DERIV].standard_normal((len(norm_ret), 2))
    oi_innov = _OI_VOLUME * log_vol + _OI_TREND * norm_ret + _OI_NOISE * z_der[:, 0]
    momentum = _ar1((1.0 - _F_PERSIST) * norm_ret, _F_PERSIST)
    funding = p["base_funding"] + _F_AMP * np.tanh(_F_GAIN * momentum) + _F_NOISE * z_der[:, 1]
    return {
        "open_interest": p["base_open_interest"] * np.exp(_ar1(oi_innov, _OI_PERSIST)),
        "funding_rate": np.clip(funding, -_F_CLIP, _F_CLIP),
    }


def oracle_positions(df: pd.DataFrame) -> np.ndarray:
    """The oracle policy of a ``planted`` market: ``sign(alpha_signal)``, as float64.

    Entry ``t`` is the position to take at the close of bar ``t`` and hold over bar ``t + 1``
    (filled at its open, which equals the close of ``t``); 0 where ``alpha_signal`` is exactly 0.

    :param df: a frame from ``synthetic_market("planted", ...)`` (or ``load_bars`` of one).
    :returns: array of -1.0, 0.0 or +1.0, one per bar.
    :raises DataError: when ``df`` has no ``alpha_signal`` column.
    """
    if "alpha_signal" not in df.columns:
        raise DataError(
            "oracle_positions needs an 'alpha_signal' column: use a synthetic 'planted' market"
        )
    return np.sign(df["alpha_signal"].to_numpy(dtype=np.float64))


__all__ = ["KINDS", "PARAM_DEFAULTS", "oracle_positions", "synthetic_market"]
