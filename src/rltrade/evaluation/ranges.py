"""Time ranges of a backtest: the bars asked for plus their context, and overlap with training.

A backtest of the range ``[start, end)`` decides first at the close of ``start``; its
observation then needs the ``window - 1`` bars before ``start`` as context (observed, never
traded). :func:`with_context` cuts that slice out of a Dataset; :func:`traded_range` gives the
first and last bar a slice trades (its row ``window - 1`` on); :func:`overlaps` is the one test
of whether two closed ranges share a moment. Training (``prepare_data``) and the backtest-only
path (``rltrade backtest``) both use them::

    sliced = with_context(dataset, "2021-01-01", None, window=32)
    overlaps(traded_range(sliced, 32), (train.timestamps[0], train.timestamps[-1]))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rltrade.data.timeframes import to_utc
from rltrade.errors import ConfigError
from rltrade.features.dataset import Dataset

__all__ = ["overlaps", "range_text", "traded_range", "with_context"]


def with_context(dataset: Dataset, start: Any, end: Any, window: int,
                 what: str = "the data") -> Dataset:
    """The rows of ``dataset`` in ``[start, end)`` with the ``window - 1`` rows before ``start``
    as context (fewer when the data begins later), so that the first decision is at ``start``.

    :param dataset: the featurised bars to cut from.
    :param start: first decision bar (UTC unless zoned); ``None`` = the first row (no context).
    :param end: bars before this time; ``None`` = to the last row.
    :param window: the observation window of the policy.
    :param what: the data's name in the error message (``sample:EURUSD-1h``).
    :raises ConfigError: when no bar lies in the range.
    """
    inside = dataset.between(start, end)
    if len(inside) == 0:
        shown = f"{start or 'the start'} .. {end or 'the end'}"
        raise ConfigError(f"the range {shown} holds no bars of {what}")
    first = int(np.searchsorted(dataset.timestamps, inside.timestamps[0]))
    context = first if start is None else max(0, first - (window - 1))
    return dataset.slice(context, first + len(inside))


def traded_range(dataset: Dataset, window: int) -> tuple[int, int] | None:
    """First and last bar (int64 UTC nanoseconds) a backtest of ``dataset`` decides on: rows
    ``window - 1`` to the end; ``None`` when the slice is too short to trade."""
    if len(dataset) <= window - 1:
        return None
    return int(dataset.timestamps[window - 1]), int(dataset.timestamps[-1])


def _ns(value: Any) -> int:
    if isinstance(value, int | np.integer):
        return int(value)
    return int(to_utc(value).value)


def overlaps(a: tuple[Any, Any] | None, b: tuple[Any, Any] | None) -> bool:
    """Whether the closed time ranges ``a`` and ``b`` (``(first, last)``, as int64 UTC
    nanoseconds, timestamps or ISO strings) share a moment; ``False`` when either is ``None``
    or has a missing end."""
    if a is None or b is None or None in (*a, *b):
        return False
    return _ns(a[0]) <= _ns(b[1]) and _ns(b[0]) <= _ns(a[1])


def range_text(rng: tuple[Any, Any] | None) -> str:
    """``first .. last`` in ISO form (UTC) for messages."""
    if rng is None:
        return "(none)"
    return " .. ".join(pd.Timestamp(_ns(v), tz="UTC").isoformat() for v in rng)
