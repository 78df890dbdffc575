"""Indicator kernels shared by the rule strategies, each with its plain-Python reference twin.

Two halves, kept apart:

* **Kernels** (top half): numba ``@njit(cache=True)`` functions over whole float64 arrays, the
  building blocks of the strategies' ``compute``. Each returns an array as long as its input,
  NaN at the bars where the indicator does not exist yet (an input too short for any value
  gives all NaN).
* **Reference twins** (bottom half, ``reference_`` prefix): plain Python loops over lists, no
  numba and no numpy, the obviously-correct slow versions the strategies' ``reference`` is
  built from. Window twins give the value of one bar (``end``);
  recursive twins give a list as long as the input, NaN where undefined, like their kernel.

A kernel and its twin perform the same floating-point operations in the same order (window
sums add the oldest bar first, starting from ``0.0``), so they agree bit for bit at every bar;
``tests/test_strategies.py`` checks each pair, and the kernels against TA-Lib.

Numba caveat: ``cache=True`` keys a function's on-disk cache on **its own** source file. A
strategy kernel in another module that calls one of these keeps its compiled copy of the old
version after this file changes, until its own file changes or its cache goes. After editing a
kernel here, delete the caches:
``find src/rltrade/features/strategies/__pycache__ -name '*.nb[ic]' -delete``.

Definitions:

* ``window_sum(x, p)[t] = x[t-p+1] + ... + x[t]`` from bar ``p - 1``.
* ``sma(x, p)[t] = window_sum(x, p)[t] / p`` (TA-Lib's ``SMA``).
* ``ema(x, p, seed_end)``: TA-Lib's EMA seeding, ``k = 2 / (p + 1)``; the value at
  ``seed_end`` is the SMA of the ``p`` values ending there, then
  ``ema[t] = (x[t] - ema[t-1]) * k + ema[t-1]``.
* ``wilder(x, p)``: Wilder smoothing of a series that starts at bar 1 (``x[0]`` is never read):
  the value at bar ``p`` is the mean of ``x[1 .. p]``, then
  ``w[t] = (w[t-1] * (p - 1) + x[t]) / p``.
* ``true_range(high, low, close)[i] = max(high - low, |high - close[i-1]|, |low - close[i-1]|)``
  from bar 1; ``atr = wilder(true_range, p)`` (TA-Lib's ``ATR``).
* ``gains_losses(close)``: ``d = close[i] - close[i-1]`` from bar 1; the gain is ``d`` where
  ``d > 0`` and the loss ``-d`` where ``d < 0``, else ``0.0``.
* ``rsi(close, p) = 100 * g / (g + l)`` with ``g``, ``l`` the Wilder averages of the gains and
  losses; 50 where both are 0 (TA-Lib gives 0 there: a series that never moved is neutral).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

__all__ = [
    "atr",
    "ema",
    "gains_losses",
    "reference_atr",
    "reference_ema",
    "reference_gains_losses",
    "reference_rsi",
    "reference_sma",
    "reference_true_range",
    "reference_wilder",
    "reference_window_sum",
    "rsi",
    "sma",
    "true_range",
    "wilder",
    "window_sum",
]

# ------------------------------------------------------------------------------------------
# Kernels (numba, whole arrays)


@njit(cache=True)
def window_sum(x: np.ndarray, period: int) -> np.ndarray:
    """Sum of the ``period`` values ending at each bar, oldest first (NaN before ``period - 1``)."""
    n = len(x)
    out = np.full(n, np.nan)
    for t in range(period - 1, n):
        s = 0.0
        for j in range(t - period + 1, t + 1):
            s += x[j]
        out[t] = s
    return out


@njit(cache=True)
def sma(x: np.ndarray, period: int) -> np.ndarray:
    """Window mean: :func:`window_sum` divided by ``period`` (NaN before ``period - 1``)."""
    return window_sum(x, period) / period


@njit(cache=True)
def ema(x: np.ndarray, period: int, seed_end: int) -> np.ndarray:
    """EMA with TA-Lib's seeding: the SMA of the ``period`` values ending at ``seed_end``, then
    ``(x - ema) * k + ema`` with ``k = 2 / (period + 1)`` (NaN before ``seed_end``)."""
    n = len(x)
    out = np.full(n, np.nan)
    if n <= seed_end:
        return out
    k = 2.0 / (period + 1)
    e = 0.0
    for j in range(seed_end - period + 1, seed_end + 1):
        e += x[j]
    e = e / period
    out[seed_end] = e
    for t in range(seed_end + 1, n):
        e = (x[t] - e) * k + e
        out[t] = e
    return out


@njit(cache=True)
def wilder(x: np.ndarray, period: int) -> np.ndarray:
    """Wilder smoothing of ``x[1:]``: the mean of ``x[1 .. period]`` at bar ``period``, then
    ``(w * (period - 1) + x) / period`` (NaN before bar ``period``)."""
    n = len(x)
    out = np.full(n, np.nan)
    if n <= period:
        return out
    a = 0.0
    for i in range(1, period + 1):
        a += x[i]
    a = a / period
    out[period] = a
    for t in range(period + 1, n):
        a = (a * (period - 1) + x[t]) / period
        out[t] = a
    return out


@njit(cache=True)
def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """True range from bar 1 (NaN at bar 0, which has no previous close)."""
    n = len(close)
    out = np.full(n, np.nan)
    for i in range(1, n):
        out[i] = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
    return out


@njit(cache=True)
def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """TA-Lib's ATR: :func:`wilder` of the :func:`true_range` (NaN before bar ``period``)."""
    return wilder(true_range(high, low, close), period)


@njit(cache=True)
def gains_losses(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upward and downward moves of the close from bar 1, each ``>= 0`` (NaN at bar 0)."""
    n = len(close)
    gain = np.full(n, np.nan)
    loss = np.full(n, np.nan)
    for i in range(1, n):
        d = close[i] - close[i - 1]
        gain[i] = d if d > 0.0 else 0.0
        loss[i] = -d if d < 0.0 else 0.0
    return gain, loss


@njit(cache=True)
def rsi(close: np.ndarray, period: int) -> np.ndarray:
    """Wilder RSI seeded with the mean of the first ``period`` moves; 50 where the close never
    moved (NaN before bar ``period``)."""
    gain, loss = gains_losses(close)
    avg_gain = wilder(gain, period)
    avg_loss = wilder(loss, period)
    n = len(close)
    out = np.full(n, np.nan)
    for i in range(period, n):
        den = avg_gain[i] + avg_loss[i]
        out[i] = 100.0 * (avg_gain[i] / den) if den != 0.0 else 50.0
    return out


# ------------------------------------------------------------------------------------------
# Reference twins (plain Python, lists): the slow versions the kernels above are proven equal to


def reference_window_sum(values: Sequence[float], end: int, length: int) -> float:
    """Sum of ``values[end - length + 1 .. end]``, oldest first (twin of :func:`window_sum`)."""
    total = 0.0
    for i in range(end - length + 1, end + 1):
        total += values[i]
    return total


def reference_sma(values: Sequence[float], end: int, length: int) -> float:
    """Mean of the ``length`` values ending at ``end`` (twin of :func:`sma`)."""
    return reference_window_sum(values, end, length) / length


def reference_ema(values: Sequence[float], length: int, seed_end: int) -> list[float]:
    """TA-Lib-seeded EMA of every bar, NaN before ``seed_end`` (twin of :func:`ema`)."""
    result = [math.nan] * len(values)
    if len(values) <= seed_end:
        return result
    k = 2.0 / (length + 1)
    average = reference_sma(values, seed_end, length)
    result[seed_end] = average
    for t in range(seed_end + 1, len(values)):
        average = (values[t] - average) * k + average
        result[t] = average
    return result


def reference_wilder(values: Sequence[float], length: int) -> list[float]:
    """Wilder smoothing of ``values[1:]`` at every bar, NaN before ``length``
    (twin of :func:`wilder`)."""
    result = [math.nan] * len(values)
    if len(values) <= length:
        return result
    average = 0.0
    for i in range(1, length + 1):
        average += values[i]
    average = average / length
    result[length] = average
    for t in range(length + 1, len(values)):
        average = (average * (length - 1) + values[t]) / length
        result[t] = average
    return result


def reference_true_range(
    high: Sequence[float], low: Sequence[float], close: Sequence[float]
) -> list[float]:
    """True range of every bar, NaN at bar 0 (twin of :func:`true_range`)."""
    result = [math.nan]
    for i in range(1, len(close)):
        result.append(max(high[i] - low[i], abs(high[i] - close[i - 1]),
                          abs(low[i] - close[i - 1])))
    return result[: len(close)]


def reference_atr(
    high: Sequence[float], low: Sequence[float], close: Sequence[float], length: int
) -> list[float]:
    """ATR of every bar, NaN before ``length`` (twin of :func:`atr`)."""
    return reference_wilder(reference_true_range(high, low, close), length)


def reference_gains_losses(close: Sequence[float]) -> tuple[list[float], list[float]]:
    """Upward and downward moves of every bar, NaN at bar 0 (twin of :func:`gains_losses`)."""
    gains = [math.nan]
    losses = [math.nan]
    for i in range(1, len(close)):
        change = close[i] - close[i - 1]
        gains.append(change if change > 0 else 0.0)
        losses.append(-change if change < 0 else 0.0)
    return gains[: len(close)], losses[: len(close)]


def reference_rsi(close: Sequence[float], length: int) -> list[float]:
    """RSI of every bar, NaN before ``length`` (twin of :func:`rsi`)."""
    gains, losses = reference_gains_losses(close)
    avg_gains = reference_wilder(gains, length)
    avg_losses = reference_wilder(losses, length)
    result = [math.nan] * len(close)
    for i in range(length, len(close)):
        total = avg_gains[i] + avg_losses[i]
        result[i] = 50.0 if total == 0 else 100.0 * (avg_gains[i] / total)
    return result
