"""The pieces every feature and strategy is built from: bar arrays and the feature registry.

A *feature group* is a registered function ``f(bars: BarArrays, **params) -> dict[name, array]``
returning float64 columns aligned with the bars, NaN during its warm-up. It must be **causal**:
the value at bar ``t`` may depend on bars ``0..t`` only (known at the close of bar ``t``). The
no-lookahead test (``tests/test_no_lookahead.py``) runs over every entry of :data:`FEATURES`, so
a new feature cannot be registered without being checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd

from rltrade.data.parsing import OHLCV
from rltrade.data.timeframes import Timeframe, as_ns, infer_timeframe, parse_timeframe
from rltrade.errors import ConfigError, DataError


@dataclass(frozen=True)
class BarArrays:
    """Bars as numpy arrays: what feature functions and strategies compute on.

    ``timestamps`` are int64 UTC nanoseconds of bar open times; prices and volume float64;
    ``extras`` holds any other columns (``open_interest``, ``funding_rate``, ``spread``...).
    """

    timestamps: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    timeframe: Timeframe
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, bars: pd.DataFrame, timeframe: str | Timeframe | None = None) -> BarArrays:
        """Arrays of a DataFrame in rltrade's bar layout (see :func:`rltrade.data.load_bars`)."""
        missing = [c for c in OHLCV if c not in bars.columns]
        if missing:
            raise DataError(f"bars lack column(s) {missing}")
        if timeframe is None:
            timeframe = bars.attrs.get("timeframe") or infer_timeframe(bars.index)
            if timeframe is None:
                raise DataError("cannot infer the bars' timeframe: pass timeframe=")
        cols = {c: np.ascontiguousarray(bars[c].to_numpy(np.float64)) for c in bars.columns}
        return cls(
            timestamps=as_ns(bars.index),
            open=cols.pop("open"),
            high=cols.pop("high"),
            low=cols.pop("low"),
            close=cols.pop("close"),
            volume=cols.pop("volume"),
            timeframe=parse_timeframe(timeframe),
            extras=cols,
        )

    def __len__(self) -> int:
        return len(self.close)

    def has(self, column: str) -> bool:
        return column in OHLCV or column in self.extras

    def column(self, name: str) -> np.ndarray:
        if name in OHLCV:
            return getattr(self, name)
        try:
            return self.extras[name]
        except KeyError:
            raise DataError(f"bars have no column {name!r}") from None

    def slice(self, start: int = 0, stop: int | None = None) -> BarArrays:
        """Bars ``[start:stop]`` (views, no copy)."""
        sl = slice(start, stop)
        return BarArrays(
            self.timestamps[sl],
            self.open[sl],
            self.high[sl],
            self.low[sl],
            self.close[sl],
            self.volume[sl],
            self.timeframe,
            {k: v[sl] for k, v in self.extras.items()},
        )

    def to_frame(self) -> pd.DataFrame:
        index = pd.DatetimeIndex(self.timestamps.astype("datetime64[ns]"), tz="UTC")
        index.name = "timestamp"
        data = {c: getattr(self, c) for c in OHLCV} | dict(self.extras)
        frame = pd.DataFrame(data, index=index)
        frame.attrs["timeframe"] = self.timeframe.name
        return frame

    @property
    def intraday(self) -> bool:
        return self.timeframe.seconds < 86400


# Normalisation kinds a feature column declares (see rltrade.features.normalize):
#   "price"       a price level: x / close - 1
#   "rel_close"   a price difference (MACD, ATR): x / close
#   "osc100"      an oscillator on a 0..100 (or +-100) scale: x / 100
#   "log_volume"  log1p(x) / 20
#   "tanh"        squashed: tanh(x / 10)  (turbulence, unbounded positive scores)
#   "none"        as is (returns, ratios already near unit scale, cyclic time, one-hot)
#   "fitted"      (x - mean) / std fitted on the training slice (a scale nobody knows in
#                 advance: external series such as VIX, a column of the bars)
NORM_KINDS = ("price", "rel_close", "osc100", "log_volume", "tanh", "none", "fitted")

FeatureFunc = Callable[..., dict[str, np.ndarray]]


@dataclass(frozen=True)
class FeatureDef:
    """A registered feature group."""

    name: str
    description: str
    defaults: dict[str, Any]
    func: FeatureFunc
    norms: Callable[[dict[str, Any]], dict[str, str]]
    requires: tuple[str, ...] = ()
    intraday_only: bool = False

    def resolve(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults overlaid with ``params``; unknown keys are a :class:`ConfigError`."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"feature {self.name!r}: unknown parameter(s) {unknown}; "
                f"valid: {sorted(self.defaults)}"
            )
        return {**self.defaults, **params}

    def applicable(self, bars: BarArrays) -> tuple[bool, str]:
        """Whether the group can run on these bars, and why not."""
        if self.intraday_only and not bars.intraday:
            return False, f"{self.name}: intraday bars only (these are {bars.timeframe})"
        missing = [c for c in self.requires if not bars.has(c)]
        if missing:
            return False, f"{self.name}: bars lack {missing}"
        return True, ""

    def compute(
        self, bars: BarArrays, params: dict[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        resolved = self.resolve(params)
        out = self.func(bars, **resolved)
        norms = self.norms(resolved)
        if list(out) != list(norms):
            raise RuntimeError(
                f"feature {self.name}: columns {list(out)} != declared {list(norms)}"
            )
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


FEATURES: dict[str, FeatureDef] = {}


def register_feature(
    name: str,
    *,
    description: str,
    defaults: dict[str, Any],
    norms: Callable[[dict[str, Any]], dict[str, str]],
    requires: tuple[str, ...] = (),
    intraday_only: bool = False,
) -> Callable[[FeatureFunc], FeatureFunc]:
    """Decorator registering a feature group in :data:`FEATURES`.

    ``norms(params)`` returns the output column names, in order, each with its normalisation
    kind (one of :data:`NORM_KINDS`).
    """

    def wrap(func: FeatureFunc) -> FeatureFunc:
        if name in FEATURES:
            raise ConfigError(f"feature {name!r} is already registered")
        FEATURES[name] = FeatureDef(
            name,
            description,
            dict(defaults),
            func,
            norms,
            requires,
            intraday_only,
        )
        return func

    return wrap


# ------------------------------------------------------------------------------------------
# Parameter checks shared by feature groups and strategies.


def require_int(owner: str, key: str, value: Any, minimum: int = 1) -> None:
    """``value`` is an integer (not a bool) ``>= minimum``, else a :class:`ConfigError`
    naming ``owner`` (e.g. ``"feature 'rsi'"``) and ``key``."""
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{owner}: {key} must be an integer >= {minimum}, got {value!r}")


def require_number(owner: str, key: str, value: Any, low: float, high: float = math.inf, *,
                   closed: bool = False) -> None:
    """``value`` is a finite real number (not a bool) in ``(low, high)`` (``[low, high]`` when
    ``closed``), else a :class:`ConfigError` naming ``owner`` and ``key``."""
    ok = (isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
          and (low <= value <= high if closed else low < value < high))
    if not ok:
        if high == math.inf:
            what = f">= {low}" if closed else f"> {low}"
        else:
            what = f"in [{low}, {high}]" if closed else f"in ({low}, {high})"
        raise ConfigError(f"{owner}: {key} must be a number {what}, got {value!r}")


# ------------------------------------------------------------------------------------------
# Small causal array helpers shared by features and strategies.


def rolling_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing sum over ``window`` bars (NaN for the first ``window - 1``), via cumsum.

    NaNs inside the window make the result NaN.
    """
    n = len(x)
    out = np.full(n, np.nan)
    if window <= 0 or n < window:
        return out
    nan = np.isnan(x)
    filled = np.where(nan, 0.0, x)
    c = np.concatenate(([0.0], np.cumsum(filled)))
    cn = np.concatenate(([0], np.cumsum(nan)))
    sums = c[window:] - c[:-window]
    bad = (cn[window:] - cn[:-window]) > 0
    out[window - 1 :] = np.where(bad, np.nan, sums)
    return out


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    return rolling_sum(x, window) / window


def rolling_std(x: np.ndarray, window: int, ddof: int = 1) -> np.ndarray:
    """Trailing standard deviation over ``window`` bars (NaN until ``window`` values), by pandas'
    numerically careful O(n) rolling algorithm; causal and prefix-stable."""
    return pd.Series(x).rolling(window, min_periods=window).std(ddof=ddof).to_numpy()


def shift(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` delayed by ``k >= 0`` bars (NaN-padded): the value known ``k`` bars ago."""
    out = np.full(len(x), np.nan)
    if k == 0:
        return x.astype(np.float64, copy=True)
    if k < len(x):
        out[k:] = x[:-k]
    return out
