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

import math
from numbers import Integral
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
def _ao(hl2: np.ndarray, ao_fast: int, ao_slow: int) -> np.ndarray:
    """Awesome Oscillator from window sums, oldest bar first (NaN before bar ``ao_slow - 1``)."""
    n = len(hl2)
    ao = np.full(n, np.nan)
    for t in range(ao_slow - 1, n):
        s_fast = 0.0
        for j in range(t - ao_fast + 1, t + 1):
            s_fast += hl2[j]
        s_slow = 0.0
        for j in range(t - ao_slow + 1, t + 1):
            s_slow += hl2[j]
        ao[t] = s_fast / ao_fast - s_slow / ao_slow
    return ao


@njit(cache=True)
def _macd_hist(close: np.ndarray, fast: int, slow: int, signal: int) -> np.ndarray:
    """MACD histogram with TA-Lib's seeding (NaN before bar ``slow + signal - 2``)."""
    n = len(close)
    hist = np.full(n, np.nan)
    first_hist = slow + signal - 2
    if n <= first_hist:
        return hist
    k_fast = 2.0 / (fast + 1)
    k_slow = 2.0 / (slow + 1)
    k_sig = 2.0 / (signal + 1)
    # Both EMAs start at bar slow - 1, each seeded with the SMA of the bars ending there.
    e_fast = 0.0
    for j in range(slow - fast, slow):
        e_fast += close[j]
    e_fast = e_fast / fast
    e_slow = 0.0
    for j in range(0, slow):
        e_slow += close[j]
    e_slow = e_slow / slow
    line = np.full(n, np.nan)
    line[slow - 1] = e_fast - e_slow
    for t in range(slow, n):
        e_fast = (close[t] - e_fast) * k_fast + e_fast
        e_slow = (close[t] - e_slow) * k_slow + e_slow
        line[t] = e_fast - e_slow
    sig = 0.0
    for j in range(slow - 1, first_hist + 1):
        sig += line[j]
    sig = sig / signal
    hist[first_hist] = line[first_hist] - sig
    for t in range(first_hist + 1, n):
        sig = (line[t] - sig) * k_sig + sig
        hist[t] = line[t] - sig
    return hist


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


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


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
    # The codes this rule can produce (the tests require each of FLAT/LONG/SHORT in it).
    emits: ClassVar[frozenset[int]] = frozenset({FLAT, LONG, SHORT, HOLD})

    def check_params(self) -> None:
        """Periods are positive integers with ``ao_fast < ao_slow`` and ``fast < slow``.

        :raises ConfigError: for any other value.
        """
        p = self.params
        for key in ("ao_fast", "ao_slow", "fast", "slow", "signal"):
            if not _is_int(p[key]) or p[key] < 1:
                raise ConfigError(f"strategy {self.name!r}: {key} must be an integer >= 1, "
                                  f"got {p[key]!r}")
        if p["ao_fast"] >= p["ao_slow"]:
            raise ConfigError(f"strategy {self.name!r}: ao_fast ({p['ao_fast']}) must be < "
                              f"ao_slow ({p['ao_slow']})")
        if p["fast"] >= p["slow"]:
            raise ConfigError(f"strategy {self.name!r}: fast ({p['fast']}) must be < "
                              f"slow ({p['slow']})")

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
        return self.min_candles + math.ceil(math.log(_SETTLE_TOL) / math.log(1.0 - alpha))

    def compute(self, bars: BarArrays) -> np.ndarray:
        """Signals for every bar at once (numba).

        :param bars: bars of the strategy's timeframe.
        :return: int8 codes, ``len(bars)`` long.
        """
        p = self.params
        high = np.asarray(bars.high, dtype=np.float64)
        low = np.asarray(bars.low, dtype=np.float64)
        hl2 = np.ascontiguousarray((high + low) / 2.0)
        close = np.ascontiguousarray(bars.close, dtype=np.float64)
        return _signals(hl2, close, int(p["ao_fast"]), int(p["ao_slow"]), int(p["fast"]),
                        int(p["slow"]), int(p["signal"]))

    def reference(self, bars: BarArrays) -> int:
        """Signal of the last bar of ``bars`` by plain loops over the window.

        :param bars: the window; recursions start at its first bar.
        :return: the signal code.
        """
        n = len(bars)
        if n == 0:
            raise DataError("reference() needs at least one bar")
        if n < self.min_candles:
            return HOLD
        p = self.params
        ao_fast, ao_slow = int(p["ao_fast"]), int(p["ao_slow"])
        fast, slow, signal = int(p["fast"]), int(p["slow"]), int(p["signal"])
        high = bars.high.tolist()
        low = bars.low.tolist()
        close = bars.close.tolist()
        hl2 = []
        for i in range(n):
            hl2.append((high[i] + low[i]) / 2.0)

        def sma(values: list[float], end: int, length: int) -> float:
            total = 0.0
            for i in range(end - length + 1, end + 1):
                total += values[i]
            return total / length

        ao_now = sma(hl2, n - 1, ao_fast) - sma(hl2, n - 1, ao_slow)
        ao_prev = sma(hl2, n - 2, ao_fast) - sma(hl2, n - 2, ao_slow)

        k_fast, k_slow, k_sig = 2.0 / (fast + 1), 2.0 / (slow + 1), 2.0 / (signal + 1)
        ema_fast = sma(close, slow - 1, fast)
        ema_slow = sma(close, slow - 1, slow)
        line = [ema_fast - ema_slow]  # line[i] belongs to bar slow - 1 + i
        for t in range(slow, n):
            ema_fast = (close[t] - ema_fast) * k_fast + ema_fast
            ema_slow = (close[t] - ema_slow) * k_slow + ema_slow
            line.append(ema_fast - ema_slow)
        sig = sma(line, signal - 1, signal)
        hist = [line[signal - 1] - sig]
        for i in range(signal, len(line)):
            sig = (line[i] - sig) * k_sig + sig
            hist.append(line[i] - sig)
        h_now, h_prev = hist[-1], hist[-2]

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
