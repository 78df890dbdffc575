"""``bbands_rsi``: Bollinger Band breach confirmed by RSI, exit at the middle band.

Indicators:

* Bollinger Bands as TA-Lib's ``BBANDS``: ``middle[t]`` = mean of the ``period`` closes ending
  at ``t`` (window sum, oldest first, divided by ``period``), ``sd[t]`` = their **population**
  standard deviation (two-pass: ``sqrt(sum((close - middle)**2) / period)``),
  ``upper = middle + nbdev * sd``, ``lower = middle - nbdev * sd``; defined from bar
  ``period - 1``.
* RSI as TA-Lib's ``RSI`` (Wilder): average gain and loss of the first ``rsi_period`` changes
  (bars ``1 .. rsi_period``) seed the averages at bar ``rsi_period``, then
  ``avg = (avg * (rsi_period - 1) + x) / rsi_period``;
  ``rsi = 100 * (avg_gain / (avg_gain + avg_loss))``, and 50 when both averages are 0 (TA-Lib
  gives 0 there: a bar series that never moved is neutral, not oversold).

Rule at bar ``t``:

* ``LONG``  when ``close[t] < lower[t]`` and ``rsi[t] < oversold``;
* ``SHORT`` when ``close[t] > upper[t]`` and ``rsi[t] > overbought``;
* ``FLAT``  when the close crosses the middle band: ``close[t] - middle[t]`` and
  ``close[t-1] - middle[t-1]`` are both nonzero with opposite signs, and neither LONG nor
  SHORT fired;
* ``HOLD``  otherwise.

Warm-up: the rule needs the bands at ``t`` and ``t - 1`` and the RSI at ``t``, so the first
index that can differ from ``HOLD`` is ``max(period, rsi_period)`` (20 with the defaults):
``min_candles = max(period, rsi_period) + 1`` (21); every index ``< min_candles - 1`` is
``HOLD``. The RSI is recursive and starts at the first bar given: :attr:`BbandsRsi.lookback`
adds the bars after which the seed's weight is below 1e-6.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from numba import njit

from rltrade.features.base import BarArrays
from rltrade.features.strategies.base import FLAT, HOLD, LONG, SHORT, Strategy, register_strategy
from rltrade.features.strategies.kernels import reference_rsi, reference_sma, rsi, sma


@njit(cache=True)
def _bbands(
    close: np.ndarray, period: int, nbdev: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper, middle and lower band: window mean and two-pass population standard deviation
    (NaN before bar ``period - 1``)."""
    n = len(close)
    middle = sma(close, period)
    upper = np.full(n, np.nan)
    lower = np.full(n, np.nan)
    for t in range(period - 1, n):
        m = middle[t]
        v = 0.0
        for j in range(t - period + 1, t + 1):
            dev = close[j] - m
            v += dev * dev
        sd = math.sqrt(v / period)
        upper[t] = m + nbdev * sd
        lower[t] = m - nbdev * sd
    return upper, middle, lower


@njit(cache=True)
def _signals(
    close: np.ndarray,
    period: int,
    nbdev: float,
    rsi_period: int,
    oversold: float,
    overbought: float,
) -> np.ndarray:
    """Signal codes for every bar (see the module docstring)."""
    n = len(close)
    out = np.full(n, HOLD, dtype=np.int8)
    start = max(period, rsi_period)
    if n <= start:
        return out
    rsi_values = rsi(close, rsi_period)
    upper, middle, lower = _bbands(close, period, nbdev)
    for t in range(start, n):
        c = close[t]
        if c < lower[t] and rsi_values[t] < oversold:
            out[t] = LONG
        elif c > upper[t] and rsi_values[t] > overbought:
            out[t] = SHORT
        else:
            now = c - middle[t]
            prev = close[t - 1] - middle[t - 1]
            if (now > 0.0 and prev < 0.0) or (now < 0.0 and prev > 0.0):
                out[t] = FLAT
    return out


@register_strategy
class BbandsRsi(Strategy):
    """Bollinger Band breach with RSI confirmation (see the module)."""

    name: ClassVar[str] = "bbands_rsi"
    description: ClassVar[str] = (
        "close beyond a Bollinger Band (20, 2) with RSI(14) < 30 / > 70: LONG/SHORT; "
        "close crosses the middle band: FLAT"
    )
    timeframe: ClassVar[str | None] = "15m"
    defaults: ClassVar[dict[str, Any]] = {
        "period": 20,
        "nbdev": 2.0,
        "rsi_period": 14,
        "oversold": 30.0,
        "overbought": 70.0,
    }

    def check_params(self) -> None:
        """``period >= 2``, ``rsi_period >= 1`` integers; ``nbdev > 0``;
        ``0 <= oversold < overbought <= 100``.

        :raises ConfigError: for any other value.
        """
        self.require_int("period", minimum=2)
        self.require_int("rsi_period")
        self.require_number("nbdev", 0)
        self.require_number("oversold", 0, 100, closed=True)
        self.require_number("overbought", 0, 100, closed=True)
        self.require_less("oversold", "overbought")

    @property
    def min_candles(self) -> int:
        return max(self.params["period"], self.params["rsi_period"]) + 1

    @property
    def lookback(self) -> int:
        return self.min_candles + self.settle_bars(1.0 / self.params["rsi_period"])

    def compute(self, bars: BarArrays) -> np.ndarray:
        p = self.params
        (close,) = self.columns(bars, "close")
        return _signals(close, int(p["period"]), float(p["nbdev"]), int(p["rsi_period"]),
                        float(p["oversold"]), float(p["overbought"]))

    def reference(self, bars: BarArrays) -> int:
        """Signal of the last bar of ``bars`` by plain loops over the window.

        :param bars: the window; the RSI recursion starts at its first bar.
        :return: the signal code.
        """
        if self.warming_up(bars):
            return HOLD
        p = self.params
        period, rsi_period = int(p["period"]), int(p["rsi_period"])
        nbdev = float(p["nbdev"])
        close = bars.close.tolist()
        last = len(close) - 1
        rsi_now = reference_rsi(close, rsi_period)[last]

        def bands(end: int) -> tuple[float, float, float]:
            mean = reference_sma(close, end, period)
            squares = 0.0
            for i in range(end - period + 1, end + 1):
                squares += (close[i] - mean) * (close[i] - mean)
            sd = math.sqrt(squares / period)
            return mean - nbdev * sd, mean, mean + nbdev * sd

        lower, middle, upper = bands(last)
        _, middle_prev, _ = bands(last - 1)
        c, c_prev = close[last], close[last - 1]
        if c < lower and rsi_now < p["oversold"]:
            return LONG
        if c > upper and rsi_now > p["overbought"]:
            return SHORT
        now, prev = c - middle, c_prev - middle_prev
        if (now > 0 and prev < 0) or (now < 0 and prev > 0):
            return FLAT
        return HOLD
