"""``awesome_macd``: Awesome Oscillator and MACD histogram agreeing on a direction.

Indicators (``hl2 = (high + low) / 2``):

* ``AO[t] = SMA(hl2, ao_fast)[t] - SMA(hl2, ao_slow)[t]``, defined from bar ``ao_slow - 1``;
  each SMA is the plain sum of its window, oldest bar first, divided by its length.
* MACD with TA-Lib's ``MACD`` definition and seeding: ``k = 2 / (period + 1)``; both EMAs of
  ``close`` start at bar ``slow - 1``, each seeded with the SMA of the ``period`` closes ending
  there (so the fast EMA is seeded with closes ``slow - fast .. slow - 1``), then
  ``ema[t] = (close[t] - ema[t-1]) * k + ema[t-1]``; ``line = ema_fast - ema_slow`` from bar
  ``slow - 1``; the signal line is the EMA of ``line`` seeded with the SMA of its first
  ``signal`` values (so it starts at bar ``slow + signal - 2``); ``hist = line - signal_line``.

Rule at bar ``t`` (events, known at the close of ``t``):

* ``LONG``  when ``AO[t] > 0 and hist[t] > 0`` and not ``(AO[t-1] > 0 and hist[t-1] > 0)``;
* ``SHORT`` when ``AO[t] < 0 and hist[t] < 0`` and not ``(AO[t-1] < 0 and hist[t-1] < 0)``;
* ``FLAT``  when ``AO[t]`` and ``hist[t]`` have opposite strict signs while at ``t - 1`` they
  had the same strict sign;
* ``HOLD``  otherwise.

Warm-up: both indicators exist from bar ``w = max(ao_slow - 1, slow + signal - 2)`` (33 with
the defaults) and the rule also reads bar ``t - 1``, so the first signal that can differ from
``HOLD`` is at index ``w + 1``: ``min_candles = w + 2`` (35 with the defaults); every index
``< min_candles - 1`` is ``HOLD``. The EMAs are recursive and start at the first bar of the
bars given: :attr:`AwesomeMacd.lookback` adds the bars after which the seed's weight in the
slowest EMA is below 1e-6.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numba import njit

from rltrade.features.base import BarArrays
from rltrade.features.strategies.base import FLAT, HOLD, LONG, SHORT, Strategy, register_strategy
from rltrade.features.strategies.kernels import ema, reference_ema, reference_sma, sma


@njit(cache=True)
def _ao(hl2: np.ndarray, ao_fast: int, ao_slow: int) -> np.ndarray:
    """Awesome Oscillator from window means, oldest bar first (NaN before bar ``ao_slow - 1``)."""
    return sma(hl2, ao_fast) - sma(hl2, ao_slow)


@njit(cache=True)
def _macd_hist(close: np.ndarray, fast: int, slow: int, signal: int) -> np.ndarray:
    """MACD histogram with TA-Lib's seeding (NaN before bar ``slow + signal - 2``)."""
    # Both EMAs start at bar slow - 1, each seeded with the SMA of the bars ending there.
    line = ema(close, fast, slow - 1) - ema(close, slow, slow - 1)
    return line - ema(line, signal, slow + signal - 2)


@njit(cache=True)
def _signals(
    hl2: np.ndarray,
    close: np.ndarray,
    ao_fast: int,
    ao_slow: int,
    fast: int,
    slow: int,
    signal: int,
) -> np.ndarray:
    """Signal codes for every bar (see the module docstring)."""
    n = len(close)
    out = np.full(n, HOLD, dtype=np.int8)
    first = max(ao_slow - 1, slow + signal - 2)
    if n <= first + 1:
        return out
    ao = _ao(hl2, ao_fast, ao_slow)
    hist = _macd_hist(close, fast, slow, signal)
    for t in range(first + 1, n):
        a, h, ap, hp = ao[t], hist[t], ao[t - 1], hist[t - 1]
        bull_prev = ap > 0.0 and hp > 0.0
        bear_prev = ap < 0.0 and hp < 0.0
        if a > 0.0 and h > 0.0:
            if not bull_prev:
                out[t] = LONG
        elif a < 0.0 and h < 0.0:
            if not bear_prev:
                out[t] = SHORT
        elif ((a > 0.0 and h < 0.0) or (a < 0.0 and h > 0.0)) and (bull_prev or bear_prev):
            out[t] = FLAT
    return out


@register_strategy
class AwesomeMacd(Strategy):
    """Awesome Oscillator and MACD histogram turning to the same side (see the module)."""

    name: ClassVar[str] = "awesome_macd"
    description: ClassVar[str] = (
        "AO(5, 34) and MACD(12, 26, 9) histogram turn to the same sign: LONG/SHORT; "
        "they disagree after agreeing: FLAT"
    )
    timeframe: ClassVar[str | None] = "1h"
    defaults: ClassVar[dict[str, Any]] = {
        "ao_fast": 5,
        "ao_slow": 34,
        "fast": 12,
        "slow": 26,
        "signal": 9,
    }

    def check_params(self) -> None:
        """Periods are positive integers with ``ao_fast < ao_slow`` and ``fast < slow``.

        :raises ConfigError: for any other value.
        """
        self.require_int("ao_fast", "ao_slow", "fast", "slow", "signal")
        self.require_less("ao_fast", "ao_slow")
        self.require_less("fast", "slow")

    @property
    def _first(self) -> int:
        """First bar where both AO and the histogram exist."""
        p = self.params
        return max(p["ao_slow"] - 1, p["slow"] + p["signal"] - 2)

    @property
    def min_candles(self) -> int:
        return self._first + 2

    @property
    def lookback(self) -> int:
        p = self.params
        alpha = min(2.0 / (p["slow"] + 1), 2.0 / (p["signal"] + 1))
        return self.min_candles + self.settle_bars(alpha)

    def compute(self, bars: BarArrays) -> np.ndarray:
        p = self.params
        high, low, close = self.columns(bars, "high", "low", "close")
        return _signals((high + low) / 2.0, close, int(p["ao_fast"]), int(p["ao_slow"]),
                        int(p["fast"]), int(p["slow"]), int(p["signal"]))

    def reference(self, bars: BarArrays) -> int:
        """Signal of the last bar of ``bars`` by plain loops over the window.

        :param bars: the window; recursions start at its first bar.
        :return: the signal code.
        """
        if self.warming_up(bars):
            return HOLD
        p = self.params
        ao_fast, ao_slow = int(p["ao_fast"]), int(p["ao_slow"])
        fast, slow, signal = int(p["fast"]), int(p["slow"]), int(p["signal"])
        high = bars.high.tolist()
        low = bars.low.tolist()
        close = bars.close.tolist()
        hl2 = []
        for i in range(len(close)):
            hl2.append((high[i] + low[i]) / 2.0)
        last = len(close) - 1

        ao_now = reference_sma(hl2, last, ao_fast) - reference_sma(hl2, last, ao_slow)
        ao_prev = reference_sma(hl2, last - 1, ao_fast) - reference_sma(hl2, last - 1, ao_slow)

        ema_fast = reference_ema(close, fast, slow - 1)
        ema_slow = reference_ema(close, slow, slow - 1)
        line = []  # NaN before bar slow - 1
        for i in range(len(close)):
            line.append(ema_fast[i] - ema_slow[i])
        signal_line = reference_ema(line, signal, slow + signal - 2)
        h_now = line[last] - signal_line[last]
        h_prev = line[last - 1] - signal_line[last - 1]

        bull_prev = ao_prev > 0 and h_prev > 0
        bear_prev = ao_prev < 0 and h_prev < 0
        if ao_now > 0 and h_now > 0:
            return HOLD if bull_prev else LONG
        if ao_now < 0 and h_now < 0:
            return HOLD if bear_prev else SHORT
        opposite = (ao_now > 0 and h_now < 0) or (ao_now < 0 and h_now > 0)
        if opposite and (bull_prev or bear_prev):
            return FLAT
        return HOLD
