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

from typing import Any, ClassVar

import numpy as np
from numba import njit

from rltrade.features.base import BarArrays
from rltrade.features.strategies.base import HOLD, LONG, SHORT, Strategy, register_strategy
from rltrade.features.strategies.kernels import atr, reference_atr


@njit(cache=True)
def _signals(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int, multiplier: float
) -> np.ndarray:
    """Signal codes for every bar (see the module docstring)."""
    n = len(close)
    out = np.full(n, HOLD, dtype=np.int8)
    if n <= period + 1:
        return out
    atr_values = atr(high, low, close, period)
    hl2 = (high[period] + low[period]) / 2.0
    upper = hl2 + multiplier * atr_values[period]
    lower = hl2 - multiplier * atr_values[period]
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
        basic_upper = hl2 + multiplier * atr_values[t]
        basic_lower = hl2 - multiplier * atr_values[t]
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


@register_strategy
class Supertrend(Strategy):
    """Supertrend flips (see the module)."""

    name: ClassVar[str] = "supertrend"
    description: ClassVar[str] = (
        "Supertrend (ATR 10, x3): close breaks the trailing band, trend flips: LONG/SHORT"
    )
    timeframe: ClassVar[str | None] = "1h"
    defaults: ClassVar[dict[str, Any]] = {"period": 10, "multiplier": 3.0}
    emits: ClassVar[tuple[int, ...]] = (LONG, SHORT, HOLD)

    def check_params(self) -> None:
        """``period`` an integer >= 1, ``multiplier > 0``.

        :raises ConfigError: for any other value.
        """
        self.require_int("period")
        self.require_number("multiplier", 0)

    @property
    def min_candles(self) -> int:
        return self.params["period"] + 2

    @property
    def lookback(self) -> int:
        return self.min_candles + self.settle_bars(1.0 / self.params["period"])

    def compute(self, bars: BarArrays) -> np.ndarray:
        p = self.params
        high, low, close = self.columns(bars, "high", "low", "close")
        return _signals(high, low, close, int(p["period"]), float(p["multiplier"]))

    def reference(self, bars: BarArrays) -> int:
        """Signal of the last bar of ``bars`` by a plain loop over the window.

        :param bars: the window; ATR, bands and trend start at its first bars.
        :return: the signal code.
        """
        if self.warming_up(bars):
            return HOLD
        period = int(self.params["period"])
        mult = float(self.params["multiplier"])
        high = bars.high.tolist()
        low = bars.low.tolist()
        close = bars.close.tolist()

        atr_values = reference_atr(high, low, close, period)
        final_upper = (high[period] + low[period]) / 2.0 + mult * atr_values[period]
        final_lower = (high[period] + low[period]) / 2.0 - mult * atr_values[period]
        trend = 0  # 0 undetermined, 1 up, -1 down
        signal = HOLD
        for t in range(period + 1, len(close)):
            signal = HOLD
            if trend != 1 and close[t] > final_upper:
                trend, signal = 1, LONG
            elif trend != -1 and close[t] < final_lower:
                trend, signal = -1, SHORT
            basic_upper = (high[t] + low[t]) / 2.0 + mult * atr_values[t]
            basic_lower = (high[t] + low[t]) / 2.0 - mult * atr_values[t]
            if not (basic_upper < final_upper or close[t - 1] > final_upper):
                basic_upper = final_upper
            if not (basic_lower > final_lower or close[t - 1] < final_lower):
                basic_lower = final_lower
            final_upper, final_lower = basic_upper, basic_lower
        return signal
