"""rltrade: train and honestly judge reinforcement-learning trading agents."""

from rltrade.errors import (
    CompatibilityError,
    ConfigError,
    DataError,
    ExchangeError,
    RLTradeError,
    StoreError,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "CompatibilityError",
    "ConfigError",
    "DataError",
    "ExchangeError",
    "RLTradeError",
    "StoreError",
    "ValidationError",
    "__version__",
]
