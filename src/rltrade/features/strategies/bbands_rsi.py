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
def _rsi(close: np.ndarray, rsi_period: int) -> np.ndarray:
    """Wilder RSI seeded with the simple average of the first ``rsi_period`` changes
    (NaN before bar ``rsi_period``)."""
    n = len(close)
    rsi = np.full(n, np.nan)
    if n <= rsi_period:
        return rsi
    gain = 0.0
    loss = 0.0
    for i in range(1, rsi_period + 1):
        d = close[i] - close[i - 1]
        if d > 0.0:
            gain += d
        elif d < 0.0:
            loss += -d
    gain = gain / rsi_period
    loss = loss / rsi_period
    for i in range(rsi_period, n):
        if i > rsi_period:
            d = close[i] - close[i - 1]
            g = d if d > 0.0 else 0.0
            lo = -d if d < 0.0 else 0.0
            gain = (gain * (rsi_period - 1) + g) / rsi_period
            loss = (loss * (rsi_period - 1) + lo) / rsi_period
        den = gain + loss
        rsi[i] = 100.0 * (gain / den) if den != 0.0 else 50.0
    return rsi


@njit(cache=True)
def _bbands(
    close: np.ndarray, period: int, nbdev: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper, middle and lower band: window mean and two-pass population standard deviation
    (NaN before bar ``period - 1``)."""
    n = len(close)
    middle = np.full(n, np.nan)
    upper = np.full(n, np.nan)
    lower = np.full(n, np.nan)
    for t in range(period - 1, n):
        s = 0.0
        for j in range(t - period + 1, t + 1):
            s += close[j]
        m = s / period
        v = 0.0
        for j in range(t - period + 1, t + 1):
            dev = close[j] - m
            v += dev * dev
        sd = math.sqrt(v / period)
        middle[t] = m
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
    rsi = _rsi(close, rsi_period)
    upper, middle, lower = _bbands(close, period, nbdev)
    for t in range(start, n):
        c = close[t]
        if c < lower[t] and rsi[t] < oversold:
            out[t] = LONG
        elif c > upper[t] and rsi[t] > overbought:
            out[t] = SHORT
        else:
            now = c - middle[t]
            prev = close[t - 1] - middle[t - 1]
            if (now > 0.0 and prev < 0.0) or (now < 0.0 and prev > 0.0):
                out[t] = FLAT
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


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
    # The codes this rule can produce (the tests require each of FLAT/LONG/SHORT in it).
    emits: ClassVar[frozenset[int]] = frozenset({FLAT, LONG, SHORT, HOLD})

    def check_params(self) -> None:
        """``period >= 2``, ``rsi_period >= 1`` integers; ``nbdev > 0``;
        ``0 <= oversold < overbought <= 100``.

        :raises ConfigError: for any other value.
        """
        p = self.params
        if not _is_int(p["period"]) or p["period"] < 2:
            raise ConfigError(f"strategy {self.name!r}: period must be an integer >= 2, "
                              f"got {p['period']!r}")
        if not _is_int(p["rsi_period"]) or p["rsi_period"] < 1:
            raise ConfigError(f"strategy {self.name!r}: rsi_period must be an integer >= 1, "
                              f"got {p['rsi_period']!r}")
        if not _is_real(p["nbdev"]) or p["nbdev"] <= 0:
            raise ConfigError(f"strategy {self.name!r}: nbdev must be a number > 0, "
                              f"got {p['nbdev']!r}")
        for key in ("oversold", "overbought"):
            if not _is_real(p[key]) or not 0 <= p[key] <= 100:
                raise ConfigError(f"strategy {self.name!r}: {key} must be a number in "
                                  f"[0, 100], got {p[key]!r}")
        if p["oversold"] >= p["overbought"]:
            raise ConfigError(f"strategy {self.name!r}: oversold ({p['oversold']}) must be < "
                              f"overbought ({p['overbought']})")

    @property
    def min_candles(self) -> int:
        return max(self.params["period"], self.params["rsi_period"]) + 1

    @property
    def lookback(self) -> int:
        alpha = 1.0 / self.params["rsi_period"]
        settle = 0 if alpha >= 1.0 else math.ceil(math.log(_SETTLE_TOL) / math.log(1.0 - alpha))
        return self.min_candles + settle

    def compute(self, bars: BarArrays) -> np.ndarray:
        """Signals for every bar at once (numba).

        :param bars: bars of the strategy's timeframe.
        :return: int8 codes, ``len(bars)`` long.
        """
        p = self.params
        close = np.ascontiguousarray(bars.close, dtype=np.float64)
        return _signals(close, int(p["period"]), float(p["nbdev"]), int(p["rsi_period"]),
                        float(p["oversold"]), float(p["overbought"]))

    def reference(self, bars: BarArrays) -> int:
        """Signal of the last bar of ``bars`` by plain loops over the window.

        :param bars: the window; the RSI recursion starts at its first bar.
        :return: the signal code.
        """
        n = len(bars)
        if n == 0:
            raise DataError("reference() needs at least one bar")
        if n < self.min_candles:
            return HOLD
        p = self.params
        period, rsi_period = int(p["period"]), int(p["rsi_period"])
        nbdev = float(p["nbdev"])
        close = bars.close.tolist()

        # RSI over the whole window.
        avg_gain = 0.0
        avg_loss = 0.0
        for i in range(1, rsi_period + 1):
            change = close[i] - close[i - 1]
            if change > 0:
                avg_gain += change
            elif change < 0:
                avg_loss += -change
        avg_gain = avg_gain / rsi_period
        avg_loss = avg_loss / rsi_period
        for i in range(rsi_period + 1, n):
            change = close[i] - close[i - 1]
            gain = change if change > 0 else 0.0
            loss = -change if change < 0 else 0.0
            avg_gain = (avg_gain * (rsi_period - 1) + gain) / rsi_period
            avg_loss = (avg_loss * (rsi_period - 1) + loss) / rsi_period
        if avg_gain + avg_loss == 0:
            rsi = 50.0
        else:
            rsi = 100.0 * (avg_gain / (avg_gain + avg_loss))

        def bands(end: int) -> tuple[float, float, float]:
            total = 0.0
            for i in range(end - period + 1, end + 1):
                total += close[i]
            mean = total / period
            squares = 0.0
            for i in range(end - period + 1, end + 1):
                squares += (close[i] - mean) * (close[i] - mean)
            sd = math.sqrt(squares / period)
            return mean - nbdev * sd, mean, mean + nbdev * sd

        lower, middle, upper = bands(n - 1)
        _, middle_prev, _ = bands(n - 2)
        c, c_prev = close[n - 1], close[n - 2]
        if c < lower and rsi < p["oversold"]:
            return LONG
        if c > upper and rsi > p["overbought"]:
            return SHORT
        now, prev = c - middle, c_prev - middle_prev
        if (now > 0 and prev < 0) or (now < 0 and prev > 0):
            return FLAT
        return HOLD
