"""rltrade: train and honestly judge reinforcement-learning trading agents."""

from loguru import logger as _logger

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

# Library code is silent until the CLI (or the user) calls rltrade.logs.setup_logging().
_logger.disable("rltrade")

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
