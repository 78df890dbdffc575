"""Rule strategies: importing this package registers the five built-in strategies.

Registry order (:data:`STRATEGIES`): ``awesome_macd``, ``bbands_rsi``, ``ott``, ``supertrend``,
``atr_breakout``. See :mod:`rltrade.features.strategies.base` for the contract every strategy
follows and each module's docstring for its exact rule and warm-up.
"""

from __future__ import annotations

from rltrade.features.strategies.base import (
    FLAT,
    HOLD,
    LONG,
    SHORT,
    SIGNAL_NAMES,
    STRATEGIES,
    Strategy,
    make_strategy,
    one_hot,
    register_strategy,
)

# The import order below is the registry order: keep it.
# isort: off
from rltrade.features.strategies import awesome_macd  # noqa: F401
from rltrade.features.strategies import bbands_rsi  # noqa: F401
from rltrade.features.strategies import ott  # noqa: F401
from rltrade.features.strategies import supertrend  # noqa: F401
from rltrade.features.strategies import atr_breakout  # noqa: F401
# isort: on

__all__ = [
    "FLAT",
    "HOLD",
    "LONG",
    "SHORT",
    "SIGNAL_NAMES",
    "STRATEGIES",
    "Strategy",
    "make_strategy",
    "one_hot",
    "register_strategy",
]
