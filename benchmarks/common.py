"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rltrade.config import RunConfig


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


def walkforward_config(folds: int, seeds: int, steps: int) -> RunConfig:
    """The walk-forward and sweep benchmarks' config: a planted synthetic market, a small
    feature set and network, ``folds`` folds x ``seeds`` seeds of ``steps`` PPO steps."""
    from rltrade.config import RunConfig

    train, validation, test = 1500, 300, 400
    n_bars = train + validation + 2 * 8 + folds * test + 100
    return RunConfig.from_dict({
        "data": {"source": f"synthetic:planted?n_bars={n_bars}&seed=5"},
        "features": {"features": [{"name": "column"}, {"name": "returns"}, {"name": "rsi"}],
                     "strategies": [{"name": "supertrend", "timeframe": None}]},
        "env": {"window": 8, "episode_length": 512},
        "agent": {"hyperparams": {"n_steps": 256, "batch_size": 128, "n_epochs": 4},
                  "policy": {"net_arch": [64, 64]}},
        "training": {"total_steps": steps, "n_envs": 4, "eval_freq": max(1024, steps // 4),
                     "checkpoint_freq": 0},
        "walkforward": {"train": train, "validation": validation, "test": test,
                        "folds": folds, "seeds": list(range(seeds))},
    })
