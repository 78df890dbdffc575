"""One exception hierarchy for everything rltrade raises on purpose.

The CLI turns any :class:`RLTradeError` into one line on stderr and exit code 2 (a user
mistake or bad input), so a message must say what is wrong and, where it can, what to do.
"""

from __future__ import annotations

from typing import Any


class RLTradeError(Exception):
    """Base class of every error rltrade raises deliberately."""

    exit_code: int = 2


class DataError(RLTradeError):
    """Market data cannot be read, parsed or trusted."""


class ValidationError(DataError):
    """Bars failed validation under the ``strict`` policy; ``report`` lists every problem."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class ConfigError(RLTradeError):
    """A configuration value or key is invalid; the message names the key."""


class CompatibilityError(RLTradeError):
    """A model and a dataset (or two artifacts) do not belong together."""


class RunInUseError(RLTradeError):
    """A run directory is held by another process (its training lock is taken)."""


class ExchangeError(DataError):
    """An exchange download failed after its retries, or the exchange/symbol is unknown."""


class StoreError(DataError):
    """The bar store is missing a series or holds something unreadable."""
