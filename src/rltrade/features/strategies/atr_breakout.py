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

from typing import Any, ClassVar

import numpy as np
from numba import njit

from rltrade.features.base import BarArrays
from rltrade.features.strategies.base import FLAT, HOLD, LONG, SHORT, Strategy, register_strategy
from rltrade.features.strategies.kernels import atr, reference_atr, reference_sma, sma


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

    middle = sma(close, period)
    atr_values = atr(high, low, close, atr_period)
    for t in range(first + 2, n):
        upper = middle[t - 1] + k * atr_values[t - 1]
        lower = middle[t - 1] - k * atr_values[t - 1]
        upper_prev = middle[t - 2] + k * atr_values[t - 2]
        lower_prev = middle[t - 2] - k * atr_values[t - 2]
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

    def check_params(self) -> None:
        """``period``, ``atr_period`` integers >= 1; ``k > 0``.

        :raises ConfigError: for any other value.
        """
        self.require_int("period", "atr_period")
        self.require_number("k", 0)

    @property
    def min_candles(self) -> int:
        return max(self.params["period"] - 1, self.params["atr_period"]) + 3

    @property
    def lookback(self) -> int:
        return self.min_candles + self.settle_bars(1.0 / self.params["atr_period"])

    def compute(self, bars: BarArrays) -> np.ndarray:
        p = self.params
        high, low, close = self.columns(bars, "high", "low", "close")
        return _signals(high, low, close, int(p["period"]), int(p["atr_period"]), float(p["k"]))

    def reference(self, bars: BarArrays) -> int:
        """Signal of the last bar of ``bars`` by plain loops over the window.

        :param bars: the window; the ATR recursion starts at its first bar.
        :return: the signal code.
        """
        if self.warming_up(bars):
            return HOLD
        period, atr_period = int(self.params["period"]), int(self.params["atr_period"])
        k = float(self.params["k"])
        high = bars.high.tolist()
        low = bars.low.tolist()
        close = bars.close.tolist()
        atr_values = reference_atr(high, low, close, atr_period)

        last = len(close) - 1
        mid_1 = reference_sma(close, last - 1, period)
        mid_2 = reference_sma(close, last - 2, period)
        upper = mid_1 + k * atr_values[last - 1]
        lower = mid_1 - k * atr_values[last - 1]
        upper_prev = mid_2 + k * atr_values[last - 2]
        lower_prev = mid_2 - k * atr_values[last - 2]
        c, c_prev = close[last], close[last - 1]
        if c > upper and c_prev <= upper_prev:
            return LONG
        if c < lower and c_prev >= lower_prev:
            return SHORT
        now, prev = c - mid_1, c_prev - mid_2
        if (now > 0 and prev < 0) or (now < 0 and prev > 0):
            return FLAT
        return HOLD
