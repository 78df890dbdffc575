"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``fn`` (seconds)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    """The processor as the benchmark headers name it."""
    import platform

    return platform.processor() or platform.machine()


def print_rows(rows: list[tuple[str, str, str]], sections: list[tuple[str, int]] | None = None,
               ) -> None:
    """Print ``(name, value, note)`` rows as aligned columns; ``sections``: ``(title, count)``
    pairs, each title printed before its next ``count`` rows."""
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    bounds = sections or [("", len(rows))]
    i = 0
    for title, count in bounds:
        if title:
            print(f"\n## {title}")
        for name, value, note in rows[i:i + count]:
            print(f"{name:<{width}}  {value:>{vwidth}}  {note}".rstrip())
        i += count
