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
lookahead for every registered strategy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from rltrade.errors import ConfigError
from rltrade.features.base import BarArrays

FLAT, LONG, SHORT, HOLD = 0, 1, 2, 3
SIGNAL_NAMES = ("FLAT", "LONG", "SHORT", "HOLD")


class Strategy(ABC):
    """Base class of rule strategies.

    Class attributes a subclass sets:

    :param name: registry key (lower case, underscores).
    :param description: one line for ``rltrade features list``.
    :param timeframe: default timeframe it runs on (``None``: the base bars' timeframe).
    :param defaults: parameters and their defaults.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    timeframe: ClassVar[str | None] = None
    defaults: ClassVar[dict[str, Any]] = {}

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
        """Signals (int8 codes) for every bar, over the whole array at once."""

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
