"""Rule strategies: one base class, one registry, one signal vocabulary.

A strategy reads bars of **its own timeframe** (resampled from the base bars) and emits one
signal per bar, known at that bar's close:

* ``LONG``  (1): enter or be long now;
* ``SHORT`` (2): enter or be short now;
* ``FLAT``  (0): get out, no position;
* ``HOLD``  (3): nothing new (also during the warm-up, before ``min_candles`` bars).

Signals are one-hot encoded in the order ``(FLAT, LONG, SHORT, HOLD)`` and merged onto the base
bars only once the strategy's bar has closed (:func:`rltrade.data.resample.merge_higher_timeframe`).

To add a strategy, subclass :class:`Strategy`, set the class attributes, implement
:meth:`Strategy.compute` over the whole array at once (numpy, numba for recursions) and
:meth:`Strategy.reference` as a plain per-window loop, and decorate the class with
:func:`register_strategy`. The test suite proves ``compute`` equal to ``reference`` and free of
lookahead for every registered strategy. Common indicators (SMA, EMA, Wilder smoothing, ATR,
RSI, window sums) are in :mod:`rltrade.features.strategies.kernels`: a numba kernel for
``compute`` and its plain-Python ``reference_`` twin for ``reference``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from rltrade.errors import ConfigError, DataError
from rltrade.features.base import BarArrays, require_int, require_number

FLAT, LONG, SHORT, HOLD = 0, 1, 2, 3
SIGNAL_NAMES = ("FLAT", "LONG", "SHORT", "HOLD")

#: Weight of a recursion's seed below which a recursive strategy counts it as forgotten
#: (see :meth:`Strategy.settle_bars`).
SETTLE_TOL = 1e-6


class Strategy(ABC):
    """Base class of rule strategies.

    Class attributes a subclass sets:

    :param name: registry key (lower case, underscores).
    :param description: one line for ``rltrade features list``.
    :param timeframe: default timeframe it runs on (``None``: the base bars' timeframe).
    :param defaults: parameters and their defaults.
    :param emits: the signal codes the rule can produce, ``(FLAT, LONG, SHORT, HOLD)`` unless
        a subclass narrows it (a rule that never says ``FLAT`` sets ``(LONG, SHORT, HOLD)``).
        The tests require every one of ``FLAT``/``LONG``/``SHORT`` listed here to occur on
        real data, and no code outside it ever to occur.

    Helpers for subclasses: :meth:`require_int`, :meth:`require_number` and
    :meth:`require_less` for :meth:`check_params`; :meth:`warming_up` for the start of
    :meth:`reference`; :meth:`settle_bars` for :attr:`lookback` of recursive rules.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    timeframe: ClassVar[str | None] = None
    defaults: ClassVar[dict[str, Any]] = {}
    emits: ClassVar[tuple[int, ...]] = (FLAT, LONG, SHORT, HOLD)

    def __init__(self, timeframe: str | None = None, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"strategy {self.name!r}: unknown parameter(s) {unknown}; "
                f"valid: {sorted(self.defaults)}"
            )
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.run_timeframe: str | None = timeframe or type(self).timeframe
        self.check_params()

    def check_params(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`ConfigError` for invalid parameter values (optional)."""

    def require_int(self, *keys: str, minimum: int = 1) -> None:
        """Each parameter in ``keys`` is an integer (not a bool) ``>= minimum``.

        :raises ConfigError: naming the first one that is not.
        """
        for key in keys:
            require_int(f"strategy {self.name!r}", key, self.params[key], minimum)

    def require_number(
        self, key: str, low: float, high: float | None = None, *, closed: bool = False
    ) -> None:
        """Parameter ``key`` is a finite real number (not a bool) above ``low`` and, when
        ``high`` is given, below ``high``; ``closed`` admits the bounds themselves.

        :raises ConfigError: when it is not.
        """
        require_number(f"strategy {self.name!r}", key, self.params[key], low,
                       math.inf if high is None else high, closed=closed)

    def require_less(self, smaller: str, larger: str) -> None:
        """Parameter ``smaller`` is strictly below parameter ``larger``.

        :raises ConfigError: when it is not.
        """
        p = self.params
        if p[smaller] >= p[larger]:
            raise ConfigError(f"strategy {self.name!r}: {smaller} ({p[smaller]}) must be < "
                              f"{larger} ({p[larger]})")

    def warming_up(self, bars: BarArrays) -> bool:
        """Whether ``bars`` is shorter than :attr:`min_candles`, so that the signal of its last
        bar is ``HOLD``: the first line of every :meth:`reference`,
        ``if self.warming_up(bars): return HOLD``.

        :raises DataError: for no bars at all (there is no last bar to give a signal for).
        """
        if len(bars) == 0:
            raise DataError("reference() needs at least one bar")
        return len(bars) < self.min_candles

    @staticmethod
    def columns(bars: BarArrays, *names: str) -> tuple[np.ndarray, ...]:
        """The named price columns of ``bars`` (``"high"``, ``"close"``, ...) as contiguous
        float64 arrays, ready for a numba kernel (no copy when they already are)."""
        return tuple(np.ascontiguousarray(getattr(bars, name), dtype=np.float64)
                     for name in names)

    @staticmethod
    def settle_bars(alpha: float) -> int:
        """Bars after which the seed of a recursion ``y = alpha * x + (1 - alpha) * y`` weighs
        less than :data:`SETTLE_TOL` (0 when ``alpha >= 1``: no memory at all)."""
        if alpha >= 1.0:
            return 0
        return math.ceil(math.log(SETTLE_TOL) / math.log(1.0 - alpha))

    @property
    @abstractmethod
    def lookback(self) -> int:
        """Bars of history (of its timeframe) one signal depends on, for non-recursive rules;
        for recursive ones, the bars after which the start no longer matters in practice."""

    @property
    @abstractmethod
    def min_candles(self) -> int:
        """Bars (of its timeframe) needed before the first signal other than HOLD."""

    @abstractmethod
    def compute(self, bars: BarArrays) -> np.ndarray:
        """Signals for every bar, over the whole array at once (numpy, numba for recursions).

        :param bars: bars of the strategy's timeframe.
        :return: int8 codes, ``len(bars)`` long.
        """

    @abstractmethod
    def reference(self, bars: BarArrays) -> int:
        """The signal of the **last** bar of ``bars``, by a plain loop over the window: the
        obviously-correct slow version that ``compute`` must equal."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(timeframe={self.run_timeframe!r}, {self.params})"


STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator adding a strategy to :data:`STRATEGIES` under ``cls.name``."""
    if not getattr(cls, "name", None):
        raise ConfigError(f"{cls.__name__} has no name")
    if cls.name in STRATEGIES and STRATEGIES[cls.name] is not cls:
        raise ConfigError(f"strategy {cls.name!r} is already registered")
    STRATEGIES[cls.name] = cls
    return cls


def make_strategy(name: str, timeframe: str | None = None, **params: Any) -> Strategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown strategy {name!r}; registered: {', '.join(STRATEGIES)}"
        ) from None
    return cls(timeframe=timeframe, **params)


def one_hot(codes: np.ndarray) -> np.ndarray:
    """``[T]`` int codes -> ``[T, 4]`` float32 one-hot in the order FLAT, LONG, SHORT, HOLD."""
    codes = np.asarray(codes, dtype=np.int64)
    out = np.zeros((len(codes), 4), dtype=np.float32)
    out[np.arange(len(codes)), codes] = 1.0
    return out
