"""Market features: returns, volatility, volume, turbulence, regimes, time, derivatives, external.

Every function here is causal: the value at bar ``t`` uses bars ``<= t`` only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit

from rltrade.data.timeframes import as_ns, parse_timeframe
from rltrade.errors import ConfigError, DataError
from rltrade.features.base import (
    BarArrays,
    register_feature,
    require_int,
    rolling_mean,
    rolling_std,
    shift,
)

_DAY_NS = 86_400 * 1_000_000_000


def _check_window(name: str, key: str, value: int, minimum: int = 1) -> None:
    require_int(f"feature {name!r}", key, value, minimum)


def _pct_change(x: np.ndarray, k: int) -> np.ndarray:
    prev = shift(x, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(prev != 0, x / prev - 1.0, np.nan)


@register_feature(
    "returns",
    description="Simple returns of close over k bars, for each k in periods",
    defaults={"periods": [1, 5, 20]},
    norms=lambda p: {f"ret_{k}": "none" for k in p["periods"]},
)
def returns(bars: BarArrays, periods: list[int]) -> dict[str, np.ndarray]:
    if not periods or len(set(periods)) != len(periods):
        raise ConfigError("feature 'returns': periods must be a non-empty list without repeats")
    for k in periods:
        _check_window("returns", "periods", k)
    return {f"ret_{k}": _pct_change(bars.close, k) for k in periods}


def _log_returns(close: np.ndarray) -> np.ndarray:
    out = np.full(len(close), np.nan)
    out[1:] = np.diff(np.log(close))
    return out


@register_feature(
    "log_return",
    description="Log return of close over one bar",
    defaults={},
    norms=lambda p: {"log_ret": "none"},
)
def log_return(bars: BarArrays) -> dict[str, np.ndarray]:
    return {"log_ret": _log_returns(bars.close)}


@register_feature(
    "realized_vol",
    description="Realized volatility: std of one-bar log returns over a trailing window",
    defaults={"window": 20},
    norms=lambda p: {f"rvol_{p['window']}": "none"},
)
def realized_vol(bars: BarArrays, window: int) -> dict[str, np.ndarray]:
    _check_window("realized_vol", "window", window, 2)
    return {f"rvol_{window}": rolling_std(_log_returns(bars.close), window)}


@register_feature(
    "volume_ratio",
    description="Volume over its trailing mean (1 = normal; 1 when the mean is 0)",
    defaults={"window": 20},
    norms=lambda p: {f"vol_ratio_{p['window']}": "none"},
)
def volume_ratio(bars: BarArrays, window: int) -> dict[str, np.ndarray]:
    _check_window("volume_ratio", "window", window)
    mean = rolling_mean(bars.volume, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(mean > 0, bars.volume / mean, 1.0)
    ratio[np.isnan(mean)] = np.nan
    return {f"vol_ratio_{window}": ratio}


@njit(cache=True)
def _turbulence_kernel(x: np.ndarray, valid: np.ndarray, window: int, ridge: float) -> np.ndarray:
    t_len, k = x.shape
    c1 = np.zeros((t_len + 1, k))
    c2 = np.zeros((t_len + 1, k, k))
    cn = np.zeros(t_len + 1, dtype=np.int64)
    for t in range(t_len):
        cn[t + 1] = cn[t] + (0 if valid[t] else 1)
        for i in range(k):
            xi = x[t, i] if valid[t] else 0.0
            c1[t + 1, i] = c1[t, i] + xi
            for j in range(k):
                xj = x[t, j] if valid[t] else 0.0
                c2[t + 1, i, j] = c2[t, i, j] + xi * xj
    out = np.full(t_len, np.nan)
    mean = np.empty(k)
    cov = np.empty((k, k))
    low = np.empty((k, k))
    diff = np.empty(k)
    for t in range(window, t_len):
        if cn[t] - cn[t - window] > 0 or not valid[t]:
            continue
        trace = 0.0
        for i in range(k):
            mean[i] = (c1[t, i] - c1[t - window, i]) / window
        for i in range(k):
            for j in range(k):
                cov[i, j] = (c2[t, i, j] - c2[t - window, i, j] - window * mean[i] * mean[j]) / (
                    window - 1
                )
            trace += cov[i, i]
        scale = max(trace / k, 1e-300)
        for i in range(k):
            cov[i, i] += ridge * scale
            diff[i] = x[t, i] - mean[i]
        # Cholesky cov = L L^T, then distance = |L^-1 diff|^2
        ok = True
        for i in range(k):
            for j in range(i + 1):
                acc = cov[i, j]
                for m in range(j):
                    acc -= low[i, m] * low[j, m]
                if i == j:
                    if acc <= 0.0:
                        ok = False
                        break
                    low[i, i] = np.sqrt(acc)
                else:
                    low[i, j] = acc / low[j, j]
            if not ok:
                break
        if not ok:
            continue
        dist = 0.0
        for i in range(k):
            acc = diff[i]
            for m in range(i):
                acc -= low[i, m] * diff[m]
            diff[i] = acc / low[i, i]
            dist += diff[i] * diff[i]
        out[t] = dist
    return out


def turbulence_index(vectors: np.ndarray, window: int, ridge: float = 1e-12) -> np.ndarray:
    """Mahalanobis distance of each row from the mean and covariance of the ``window`` rows
    **before** it (the current row is excluded; NaN until ``window`` complete rows exist).

    ``vectors`` is ``[T, k]``: one symbol's multi-horizon returns, or the aligned returns of
    several symbols. Window sums of ``x`` and ``x x^T`` come from prefix sums and each row is
    solved by a ``k x k`` Cholesky factorisation (numba), ``O(T k^3)`` in all.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if len(x) <= window:
        return np.full(len(x), np.nan)
    valid = np.all(np.isfinite(x), axis=1)
    return _turbulence_kernel(np.ascontiguousarray(x), valid, int(window), float(ridge))


@register_feature(
    "turbulence",
    description="Turbulence: Mahalanobis distance of the multi-horizon return vector from the "
    "trailing window's mean and covariance (past data only)",
    defaults={"window": 250, "horizons": [1, 5, 20]},
    norms=lambda p: {"turbulence": "tanh"},
)
def turbulence(bars: BarArrays, window: int, horizons: list[int]) -> dict[str, np.ndarray]:
    _check_window("turbulence", "window", window, 10)
    if not horizons:
        raise ConfigError("feature 'turbulence': horizons must not be empty")
    logc = np.log(bars.close)
    vectors = np.column_stack([logc - shift(logc, int(h)) for h in horizons])
    return {"turbulence": turbulence_index(vectors, window)}


@register_feature(
    "regime",
    description="Volatility regime one-hot (calm / choppy / crisis) from trailing quantiles of "
    "realized volatility",
    defaults={"vol_window": 20, "lookback": 500, "calm_quantile": 0.33, "crisis_quantile": 0.9},
    norms=lambda p: {"regime_calm": "none", "regime_choppy": "none", "regime_crisis": "none"},
)
def regime(
    bars: BarArrays, vol_window: int, lookback: int, calm_quantile: float, crisis_quantile: float
) -> dict[str, np.ndarray]:
    _check_window("regime", "vol_window", vol_window, 2)
    _check_window("regime", "lookback", lookback, 10)
    if not 0 < calm_quantile < crisis_quantile < 1:
        raise ConfigError("feature 'regime': need 0 < calm_quantile < crisis_quantile < 1")
    rv = rolling_std(_log_returns(bars.close), vol_window)
    past = pd.Series(shift(rv, 1))  # thresholds from strictly earlier volatility
    roll = past.rolling(lookback, min_periods=lookback)
    low = roll.quantile(calm_quantile).to_numpy()
    high = roll.quantile(crisis_quantile).to_numpy()
    ready = np.isfinite(rv) & np.isfinite(low) & np.isfinite(high)
    calm = (rv <= low).astype(np.float64)
    crisis = (rv > high).astype(np.float64)
    choppy = 1.0 - calm - crisis
    for arr in (calm, choppy, crisis):
        arr[~ready] = np.nan
    return {"regime_calm": calm, "regime_choppy": choppy, "regime_crisis": crisis}


@register_feature(
    "time",
    description="Time of day and day of week as sine/cosine pairs (intraday bars only)",
    defaults={},
    norms=lambda p: {"tod_sin": "none", "tod_cos": "none", "dow_sin": "none", "dow_cos": "none"},
    intraday_only=True,
)
def time_features(bars: BarArrays) -> dict[str, np.ndarray]:
    ts = bars.timestamps
    tod = (ts % _DAY_NS) / _DAY_NS * 2 * np.pi
    dow = ((ts // _DAY_NS + 3) % 7) / 7 * 2 * np.pi  # 1970-01-01 was a Thursday (Monday = 0)
    return {
        "tod_sin": np.sin(tod),
        "tod_cos": np.cos(tod),
        "dow_sin": np.sin(dow),
        "dow_cos": np.cos(dow),
    }


@register_feature(
    "open_interest",
    description="Open-interest change over k bars and its divergence from the price change "
    "(needs an open_interest column)",
    defaults={"k": 24},
    norms=lambda p: {f"oi_change_{p['k']}": "none", f"oi_price_div_{p['k']}": "none"},
    requires=("open_interest",),
)
def open_interest(bars: BarArrays, k: int) -> dict[str, np.ndarray]:
    _check_window("open_interest", "k", k)
    oi_change = _pct_change(bars.column("open_interest"), k)
    return {
        f"oi_change_{k}": oi_change,
        f"oi_price_div_{k}": oi_change - _pct_change(bars.close, k),
    }


@register_feature(
    "funding",
    description="Perpetual-swap funding rate in basis points (needs a funding_rate column)",
    defaults={},
    norms=lambda p: {"funding_bps": "none"},
    requires=("funding_rate",),
)
def funding(bars: BarArrays) -> dict[str, np.ndarray]:
    return {"funding_bps": bars.column("funding_rate") * 1e4}


@register_feature(
    "column",
    description="A numeric column of the bars as it is (a published signal known at the bar's "
    "close, e.g. the planted market's alpha_signal); the column must exist",
    defaults={"name": "alpha_signal"},
    norms=lambda p: {f"col_{p['name']}": "fitted"},  # any scale: fitted on the training slice
)
def column(bars: BarArrays, name: str) -> dict[str, np.ndarray]:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"feature 'column': name must be a column name, got {name!r}")
    if name in ("open", "high", "low", "close", "volume"):
        raise ConfigError(f"feature 'column': {name!r} is a price/volume column; use the "
                          f"returns or indicator features for it")
    return {f"col_{name}": bars.column(name).astype(np.float64)}  # DataError when absent


def external_series(
    bars: BarArrays,
    name: str,
    source: str,
    column: str = "close",
    shift_by: str = "1d",
    frame: pd.DataFrame | None = None,
) -> dict[str, np.ndarray]:
    """An external series (e.g. VIX daily) as known on each bar, after ``shift_by``.

    The value labelled ``D`` is used on bars that **open** at or after ``D + shift_by``: with
    the default one-day shift, the bars of day ``D + 1`` (daily or intraday) see the value of day
    ``D``, never the value of their own day. Returns ``{f"ext_{name}": values}`` (NaN before the
    first visible value).
    """
    from rltrade.data import OHLCV, load_bars

    # Only the column used is checked (and required): an external series' others are unused.
    used = tuple(c for c in (column,) if c in OHLCV)
    ext = frame if frame is not None else load_bars(source, policy="repair", columns=used)
    if column not in ext.columns:
        raise DataError(f"external series {name!r}: {source} has no column {column!r}")
    delay = parse_timeframe(shift_by).nanos
    visible_at = as_ns(ext.index) + delay
    values = ext[column].to_numpy(np.float64)
    pos = np.searchsorted(visible_at, bars.timestamps, side="right") - 1
    out = np.full(len(bars), np.nan)
    ok = pos >= 0
    out[ok] = values[pos[ok]]
    return {f"ext_{name}": out}
