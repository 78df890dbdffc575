"""``atr_breakout``: volatility breakout beyond the previous bar's ATR bands.

Indicators:

* ``middle[t]`` = mean of the ``period`` closes ending at ``t`` (window sum, oldest first,
  divided by ``period``), defined from bar ``period - 1``.
* ATR as TA-Lib's ``ATR``: true range ``TR[i] = max(high - low, |high - close[i-1]|,
  |low - close[i-1]|)`` from bar 1; ``ATR[atr_period]`` = mean of ``TR[1 .. atr_period]``, then
  Wilder: ``ATR[t] = (ATR[t-1] * (atr_period - 1) + TR[t]) / atr_period``.
* Bands of bar ``t`` from the **previous** bar (no same-bar self-reference):
  ``upper[t] = middle[t-1] + k * ATR[t-1]``, ``lower[t] = middle[t-1] - k * ATR[t-1]``.

Rule at bar ``t``:

* ``LONG``  when ``close[t] > upper[t]`` and ``close[t-1] <= upper[t-1]`` (breaks out now);
* ``SHORT`` when ``close[t] < lower[t]`` and ``close[t-1] >= lower[t-1]``;
* ``FLAT``  when ``close[t] - middle[t-1]`` and ``close[t-1] - middle[t-2]`` are both nonzero
  with opposite signs (the close crosses the previous bar's middle) and neither LONG nor SHORT
  fired;
* ``HOLD``  otherwise.

Warm-up: ``middle`` and ``ATR`` both exist from bar ``w = max(period - 1, atr_period)``; the
bands of ``t`` read bar ``t - 1`` and the rule reads the bands of ``t - 1`` (i.e. bar
``t - 2``), so the first index that can differ from ``HOLD`` is ``w + 2`` (21 with the
defaults): ``min_candles = w + 3`` (22); every index ``< min_candles - 1`` is ``HOLD``. The
ATR is recursive and starts at the first bar given: :attr:`AtrBreakout.lookback` adds the bars
after which the seed's weight is below 1e-6.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from numba import njit

from rltrade.errors import ConfigError, DataError
from rltrade.features.base import BarArrays
from rltrade.features.strategies.base import (
    FLAT,
    HOLD,
    LONG,
    SHORT,
    Strategy,
    register_strategy,
)

_SETTLE_TOL = 1e-6


@njit(cache=True)
def _sma(x: np.ndarray, period: int) -> np.ndarray:
    """Window mean from the plain window sum, oldest bar first (NaN before bar ``period - 1``)."""
    n = len(x)
    out = np.full(n, np.nan)
    for t in range(period - 1, n):
        s = 0.0
        for j in range(t - period + 1, t + 1):
            s += x[j]
        out[t] = s / period
    return out


@njit(cache=True)
def _atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """TA-Lib's ATR: Wilder smoothing of the true range from bar 1, seeded with the mean of
    ``TR[1 .. period]`` (NaN before bar ``period``)."""
    n = len(close)
    atr = np.full(n, np.nan)
    if n <= period:
        return atr
    a = 0.0
    for i in range(1, period + 1):
        a += max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
    a = a / period
    atr[period] = a
    for t in range(period + 1, n):
        tr = max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))
        a = (a * (period - 1) + tr) / period
        atr[t] = a
    return atr


@njit(cache=True)
def _signals(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    period: int,
    atr_period: int,
    k: float,
) -> np.ndarray:
    """Signal codes for every bar (see the module docstring)."""
    n = len(close)
    out = np.full(n, HOLD, dtype=np.int8)
    first = max(period - 1, atr_period)
    if n <= first + 2:
        return out

    middle = _sma(close, period)
    atr = _atr(high, low, close, atr_period)
    for t in range(first + 2, n):
        upper = middle[t - 1] + k * atr[t - 1]
        lower = middle[t - 1] - k * atr[t - 1]
        upper_prev = middle[t - 2] + k * atr[t - 2]
        lower_prev = middle[t - 2] - k * atr[t - 2]
        c = close[t]
        c_prev = close[t - 1]
        if c > upper and c_prev <= upper_prev:
            out[t] = LONG
        elif c < lower and c_prev >= lower_prev:
            out[t] = SHORT
        else:
            now = c - middle[t - 1]
            prev = c_prev - middle[t - 2]
            if (now > 0.0 and prev < 0.0) or (now < 0.0 and prev > 0.0):
                out[t] = FLAT
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


@register_strategy
class AtrBreakout(Strategy):
    """Volatility breakout beyond the previous bar's ATR bands (see the module)."""

    name: ClassVar[str] = "atr_breakout"
    description: ClassVar[str] = (
        "close breaks SMA(20) +- 2 ATR(14) of the previous bar: LONG/SHORT; "
        "close crosses the previous middle: FLAT"
    )
    timeframe: ClassVar[str | None] = "4h"
    defaults: ClassVar[dict[str, Any]] = {"period": 20, "atr_period": 14, "k": 2.0}
    # The codes this rule can produce (the tests require each of FLAT/LONG/SHORT in it).
    emits: ClassVar[frozenset[int]] = frozenset({FLAT, LONG, SHORT, HOLD})

    def check_params(self) -> None:
        """``period``, ``atr_period`` integers >= 1; ``k > 0``.

        :raises ConfigError: for any other value.
        """
        p = self.params
        for key in ("period", "atr_period"):
            if not _is_int(p[key]) or p[key] < 1:
                raise ConfigError(f"strategy {self.name!r}: {key} must be an integer >= 1, "
                                  f"got {p[key]!r}")
        k = p["k"]
        if not isinstance(k, Real) or isinstance(k, bool) or not math.isfinite(k) or k <= 0:
            raise ConfigError(f"strategy {self.name!r}: k must be a number > 0, got {k!r}")

    @property
    def min_candles(self) -> int:
        return max(self.params["period"] - 1, self.params["atr_period"]) + 3

    @property
    def lookback(self) -> int:
        alpha = 1.0 / self.params["atr_period"]
        settle = 0 if alpha >= 1.0 else math.ceil(math.log(_SETTLE_TOL) / math.log(1.0 - alpha))
        return self.min_candles + settle

    def compute(self, bars: BarArrays) -> np.ndarray:
        """Signals for every bar at once (numba).

        :param bars: bars of the strategy's timeframe.
        :return: int8 codes, ``len(bars)`` long.
        """
        p = self.params
        return _signals(
            np.ascontiguousarray(bars.high, dtype=np.float64),
            np.ascontiguousarray(bars.low, dtype=np.float64),
            np.ascontiguousarray(bars.close, dtype=np.float64),
            int(p["period"]),
            int(p["atr_period"]),
            float(p["k"]),
        )

    def reference(self, bars: BarArrays) -> int:
        """Signal of the last bar of ``bars`` by plain loops over the window.

        :param bars: the window; the ATR recursion starts at its first bar.
        :return: the signal code.
        """
        n = len(bars)
        if n == 0:
            raise DataError("reference() needs at least one bar")
        if n < self.min_candles:
            return HOLD
        period, atr_period = int(self.params["period"]), int(self.params["atr_period"])
        k = float(self.params["k"])
        high = bars.high.tolist()
        low = bars.low.tolist()
        close = bars.close.tolist()

        def sma(end: int) -> float:
            total = 0.0
            for i in range(end - period + 1, end + 1):
                total += close[i]
            return total / period

        # ATR over the whole window; keep the values of the last three bars.
        atr_by_bar: dict[int, float] = {}
        atr = 0.0
        for i in range(1, atr_period + 1):
            atr += max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        atr = atr / atr_period
        atr_by_bar[atr_period] = atr
        for t in range(atr_period + 1, n):
            tr = max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))
            atr = (atr * (atr_period - 1) + tr) / atr_period
            atr_by_bar[t] = atr

        last = n - 1
        mid_1, mid_2 = sma(last - 1), sma(last - 2)
        upper = mid_1 + k * atr_by_bar[last - 1]
        lower = mid_1 - k * atr_by_bar[last - 1]
        upper_prev = mid_2 + k * atr_by_bar[last - 2]
        lower_prev = mid_2 - k * atr_by_bar[last - 2]
        c, c_prev = close[last], close[last - 1]
        if c > upper and c_prev <= upper_prev:
            return LONG
        if c < lower and c_prev >= lower_prev:
            return SHORT
        now, prev = c - mid_1, c_prev - mid_2
        if (now > 0 and prev < 0) or (now < 0 and prev > 0):
            return FLAT
        return HOLD
