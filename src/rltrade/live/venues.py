"""Build the broker adapter (and its bar feed) that ``rltrade paper --broker`` names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rltrade.errors import ConfigError

__all__ = ["make_venue"]


def make_venue(broker: str, run: str | Path, **options: Any) -> Any:
    """The adapter for ``--broker ccxt`` or ``--broker ibkr``.

    :raises ConfigError: an unknown broker name.
    """
    raise ConfigError(f"--broker must be sim, ccxt or ibkr, got {broker!r}")
