"""``supertrend``: Supertrend flips (ATR bands around the median price).

Indicators (``hl2 = (high + low) / 2``, ``m = multiplier``):

* ATR as TA-Lib's ``ATR``: true range ``TR[i] = max(high - low, |high - close[i-1]|,
  |low - close[i-1]|)`` from bar 1; ``ATR[period]`` = mean of ``TR[1 .. period]``, then Wilder:
  ``ATR[t] = (ATR[t-1] * (period - 1) + TR[t]) / period``; defined from bar ``period``.
* Basic bands ``hl2 + m * ATR`` and ``hl2 - m * ATR``. Final bands start equal to the basic
  bands at bar ``period``; after that
  ``final_upper[t] = basic_upper[t]`` if ``basic_upper[t] < final_upper[t-1]`` or
  ``close[t-1] > final_upper[t-1]``, else ``final_upper[t-1]``;
  ``final_lower[t] = basic_lower[t]`` if ``basic_lower[t] > final_lower[t-1]`` or
  ``close[t-1] < final_lower[t-1]``, else ``final_lower[t-1]``.
* Trend: **undetermined** at bar ``period`` (neither up nor down, so the first breakout in
  either direction is reported; TradingView's script starts "up", which hides a first LONG);
  it turns up at ``t`` when it is not up and ``close[t] > final_upper[t-1]``, else down when
  it is not down and ``close[t] < final_lower[t-1]``.

Rule at bar ``t``: ``LONG`` on the bar the trend turns up, ``SHORT`` on the bar it turns down,
``HOLD`` otherwise (no FLAT).

Warm-up: the bands exist from bar ``period`` and a flip compares with the bands of ``t - 1``,
so the first index that can differ from ``HOLD`` is ``period + 1`` (11 with the defaults):
``min_candles = period + 2`` (12); every index ``< min_candles - 1`` is ``HOLD``. ATR and the
bands are recursive and start at the first bar given: :attr:`Supertrend.lookback` adds the
bars after which the ATR seed's weight is below 1e-6 (the ratcheting bands forget their start
at the first breakout).
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
    HOLD,
    LONG,
    SHORT,
    Strategy,
    register_strategy,
)

_SETTLE_TOL = 1e-6


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
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int, multiplier: float
) -> np.ndarray:
    """Signal codes for every bar (see the module docstring)."""
    n = len(close)
    out = np.full(n, HOLD, dtype=np.int8)
    if n <= period + 1:
        return out
    atr = _atr(high, low, close, period)
    hl2 = (high[period] + low[period]) / 2.0
    upper = hl2 + multiplier * atr[period]
    lower = hl2 - multiplier * atr[period]
    trend = 0
    for t in range(period + 1, n):
        c = close[t]
        if trend != 1 and c > upper:
            trend = 1
            out[t] = LONG
        elif trend != -1 and c < lower:
            trend = -1
            out[t] = SHORT
        hl2 = (high[t] + low[t]) / 2.0
        basic_upper = hl2 + multiplier * atr[t]
        basic_lower = hl2 - multiplier * atr[t]
        prev_close = close[t - 1]
        if basic_upper < upper or prev_close > upper:
            new_upper = basic_upper
        else:
            new_upper = upper
        if basic_lower > lower or prev_close < lower:
            new_lower = basic_lower
        else:
            new_lower = lower
        upper = new_upper
        lower = new_lower
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


@register_strategy
class Supertrend(Strategy):
    """Supertrend flips (see the module)."""

    name: ClassVar[str] = "supertrend"
    description: ClassVar[str] = (
        "Supertrend (ATR 10, x3): close breaks the trailing band, trend flips: LONG/SHORT"
    )
    timeframe: ClassVar[str | None] = "1h"
    defaults: ClassVar[dict[str, Any]] = {"period": 10, "multiplier": 3.0}
    # The codes this rule can produce (the tests require each of FLAT/LONG/SHORT in it).
    emits: ClassVar[frozenset[int]] = frozenset({LONG, SHORT, HOLD})

    def check_params(self) -> None:
        """``period`` an integer >= 1, ``multiplier > 0``.

        :raises ConfigError: for any other value.
        """
        p = self.params
        if not _is_int(p["period"]) or p["period"] < 1:
            raise ConfigError(f"strategy {self.name!r}: period must be an integer >= 1, "
                              f"got {p['period']!r}")
        m = p["multiplier"]
        if not isinstance(m, Real) or isinstance(m, bool) or not math.isfinite(m) or m <= 0:
            raise ConfigError(f"strategy {self.name!r}: multiplier must be a number > 0, "
                              f"got {m!r}")

    @property
    def min_candles(self) -> int:
        return self.params["period"] + 2

    @property
    def lookback(self) -> int:
        alpha = 1.0 / self.params["period"]
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
            float(p["multiplier"]),
        )

    def reference(self, bars: BarArrays) -> int:
        """Signal of the last bar of ``bars`` by a plain loop over the window.

        :param bars: the window; ATR, bands and trend start at its first bars.
        :return: the signal code.
        """
        n = len(bars)
        if n == 0:
            raise DataError("reference() needs at least one bar")
        if n < self.min_candles:
            return HOLD
        period = int(self.params["period"])
        mult = float(self.params["multiplier"])
        high = bars.high.tolist()
        low = bars.low.tolist()
        close = bars.close.tolist()

        def true_range(i: int) -> float:
            return max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))

        atr = 0.0
        for i in range(1, period + 1):
            atr += true_range(i)
        atr = atr / period
        final_upper = (high[period] + low[period]) / 2.0 + mult * atr
        final_lower = (high[period] + low[period]) / 2.0 - mult * atr
        trend = 0  # 0 undetermined, 1 up, -1 down
        signal = HOLD
        for t in range(period + 1, n):
            atr = (atr * (period - 1) + true_range(t)) / period
            signal = HOLD
            if trend != 1 and close[t] > final_upper:
                trend, signal = 1, LONG
            elif trend != -1 and close[t] < final_lower:
                trend, signal = -1, SHORT
            basic_upper = (high[t] + low[t]) / 2.0 + mult * atr
            basic_lower = (high[t] + low[t]) / 2.0 - mult * atr
            if not (basic_upper < final_upper or close[t - 1] > final_upper):
                basic_upper = final_upper
            if not (basic_lower > final_lower or close[t - 1] < final_lower):
                basic_lower = final_lower
            final_upper, final_lower = basic_upper, basic_lower
        return signal
