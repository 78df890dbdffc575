"""``ott``: Optimized Trend Tracker (Anıl Özekşi), VAR crossing OTT lagged two bars.

Indicators, as in the original Pine script (``length``, ``percent``, ``cmo_period``):

* Chande momentum over ``cmo_period`` changes: ``vUD[t]`` = sum over bars
  ``t - cmo_period + 1 .. t`` of ``close[i] - close[i-1]`` where positive, ``vDD[t]`` likewise
  of ``close[i-1] - close[i]``; ``vCMO = (vUD - vDD) / (vUD + vDD)`` (0 when ``vUD + vDD`` is
  0); defined from bar ``t0 = cmo_period``.
* VAR (VIDYA): ``a = valpha * |vCMO[t]|`` with ``valpha = 2 / (length + 1)``,
  ``VAR[t] = a * close[t] + (1 - a) * VAR[t-1]``. **Seed**: ``VAR[t0] = close[t0]`` at the first
  bar with a full CMO window (the Pine script starts VAR at 0 on the first bar, which makes it
  crawl up from zero for dozens of bars: a seed at the price avoids that artificial warm-up).
* ``fark = VAR * percent / 100``; ``longStop = VAR - fark``, raised to ``max(longStop,
  longStopPrev)`` when ``VAR > longStopPrev``; ``shortStop = VAR + fark``, lowered to
  ``min(shortStop, shortStopPrev)`` when ``VAR < shortStopPrev`` (at ``t0`` the previous stops
  are the current ones); ``dir`` is 1 at ``t0``, becomes 1 when ``dir == -1 and VAR >
  shortStopPrev`` and -1 when ``dir == 1 and VAR < longStopPrev``; ``MT = longStop`` if
  ``dir == 1`` else ``shortStop``; ``OTT = MT * (200 + percent) / 200`` if ``VAR > MT`` else
  ``MT * (200 - percent) / 200``.

Rule at bar ``t`` (``OTT`` lagged two bars, as the script plots it):

* ``LONG``  when ``VAR[t] > OTT[t-2]`` and ``VAR[t-1] <= OTT[t-3]`` (crossover);
* ``SHORT`` when ``VAR[t] < OTT[t-2]`` and ``VAR[t-1] >= OTT[t-3]`` (crossunder);
* ``HOLD``  otherwise (OTT never emits FLAT).

Warm-up: OTT exists from ``t0 = cmo_period`` and the rule reads ``OTT[t-3]``, so the first
index that can differ from ``HOLD`` is ``cmo_period + 3`` (12 with the defaults):
``min_candles = cmo_period + 4`` (13); every index ``< min_candles - 1`` is ``HOLD``. VAR and
the trailing stops are recursive and start at the first bar given; VAR's smoothing factor
varies with the CMO, so :attr:`Ott.lookback` is a heuristic: ``min_candles + 200`` bars.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numba import njit

from rltrade.features.base import BarArrays
from rltrade.features.strategies.base import HOLD, LONG, SHORT, Strategy, register_strategy
from rltrade.features.strategies.kernels import (
    gains_losses,
    reference_gains_losses,
    reference_window_sum,
    window_sum,
)

_LOOKBACK_EXTRA = 200


@njit(cache=True)
def _var_ott(
    close: np.ndarray, length: int, percent: float, cmo_period: int
) -> tuple[np.ndarray, np.ndarray]:
    """VAR and OTT for every bar (NaN before bar ``cmo_period``)."""
    n = len(close)
    var = np.full(n, np.nan)
    ott = np.full(n, np.nan)
    t0 = cmo_period
    valpha = 2.0 / (length + 1)
    v = 0.0
    long_prev = 0.0
    short_prev = 0.0
    direction = 1
    gain, loss = gains_losses(close)
    up_sums = window_sum(gain, cmo_period)
    down_sums = window_sum(loss, cmo_period)
    for t in range(t0, n):
        up = up_sums[t]
        down = down_sums[t]
        den = up + down
        cmo = (up - down) / den if den != 0.0 else 0.0
        if t == t0:
            v = close[t]
        else:
            a = valpha * abs(cmo)
            v = a * close[t] + (1.0 - a) * v
        fark = v * percent / 100.0
        long_stop = v - fark
        short_stop = v + fark
        if t > t0:
            if v > long_prev:
                long_stop = max(long_stop, long_prev)
            if v < short_prev:
                short_stop = min(short_stop, short_prev)
            if direction == -1 and v > short_prev:
                direction = 1
            elif direction == 1 and v < long_prev:
                direction = -1
        mt = long_stop if direction == 1 else short_stop
        if v > mt:
            o = mt * (200.0 + percent) / 200.0
        else:
            o = mt * (200.0 - percent) / 200.0
        var[t] = v
        ott[t] = o
        long_prev = long_stop
        short_prev = short_stop
    return var, ott


@njit(cache=True)
def _signals(close: np.ndarray, length: int, percent: float, cmo_period: int) -> np.ndarray:
    """Signal codes for every bar (see the module docstring)."""
    n = len(close)
    out = np.full(n, HOLD, dtype=np.int8)
    var, ott = _var_ott(close, length, percent, cmo_period)
    for t in range(cmo_period + 3, n):
        if var[t] > ott[t - 2] and var[t - 1] <= ott[t - 3]:
            out[t] = LONG
        elif var[t] < ott[t - 2] and var[t - 1] >= ott[t - 3]:
            out[t] = SHORT
    return out


@register_strategy
class Ott(Strategy):
    """Optimized Trend Tracker crossovers (see the module)."""

    name: ClassVar[str] = "ott"
    description: ClassVar[str] = (
        "Optimized Trend Tracker (VAR 2, 1.4%): VAR crosses OTT lagged 2 bars: LONG/SHORT"
    )
    timeframe: ClassVar[str | None] = "4h"
    defaults: ClassVar[dict[str, Any]] = {"length": 2, "percent": 1.4, "cmo_period": 9}
    emits: ClassVar[tuple[int, ...]] = (LONG, SHORT, HOLD)

    def check_params(self) -> None:
        """``length``, ``cmo_period`` integers >= 1; ``0 < percent < 100``.

        :raises ConfigError: for any other value.
        """
        self.require_int("length", "cmo_period")
        self.require_number("percent", 0, 100)

    @property
    def min_candles(self) -> int:
        return self.params["cmo_period"] + 4

    @property
    def lookback(self) -> int:
        return self.min_candles + _LOOKBACK_EXTRA

    def compute(self, bars: BarArrays) -> np.ndarray:
        p = self.params
        (close,) = self.columns(bars, "close")
        return _signals(close, int(p["length"]), float(p["percent"]), int(p["cmo_period"]))

    def reference(self, bars: BarArrays) -> int:
        """Signal of the last bar of ``bars`` by a plain loop over the window.

        :param bars: the window; VAR and the stops start at its bar ``cmo_period``.
        :return: the signal code.
        """
        if self.warming_up(bars):
            return HOLD
        p = self.params
        length, cmo_period = int(p["length"]), int(p["cmo_period"])
        percent = float(p["percent"])
        close = bars.close.tolist()
        gains, losses = reference_gains_losses(close)
        valpha = 2.0 / (length + 1)

        var_hist: list[float] = []
        ott_hist: list[float] = []
        var = long_prev = short_prev = 0.0
        direction = 1
        for t in range(cmo_period, len(close)):
            v_up = reference_window_sum(gains, t, cmo_period)
            v_down = reference_window_sum(losses, t, cmo_period)
            if v_up + v_down == 0:
                cmo = 0.0
            else:
                cmo = (v_up - v_down) / (v_up + v_down)
            if t == cmo_period:
                var = close[t]
            else:
                alpha = valpha * abs(cmo)
                var = alpha * close[t] + (1.0 - alpha) * var
            fark = var * percent / 100.0
            long_stop = var - fark
            short_stop = var + fark
            if t > cmo_period:
                if var > long_prev:
                    long_stop = max(long_stop, long_prev)
                if var < short_prev:
                    short_stop = min(short_stop, short_prev)
                if direction == -1 and var > short_prev:
                    direction = 1
                elif direction == 1 and var < long_prev:
                    direction = -1
            mt = long_stop if direction == 1 else short_stop
            if var > mt:
                ott = mt * (200.0 + percent) / 200.0
            else:
                ott = mt * (200.0 - percent) / 200.0
            var_hist.append(var)
            ott_hist.append(ott)
            long_prev, short_prev = long_stop, short_stop

        if var_hist[-1] > ott_hist[-3] and var_hist[-2] <= ott_hist[-4]:
            return LONG
        if var_hist[-1] < ott_hist[-3] and var_hist[-2] >= ott_hist[-4]:
            return SHORT
        return HOLD
