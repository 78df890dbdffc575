"""Executors: run many units of work (one config on one fold with one seed) and return their
results in the order of the tasks.

The interface is one method, :meth:`Executor.map` ``(fn, tasks) -> list``: ``fn`` is a plain,
importable function and each task a tuple of picklable arguments, so that the same tasks run in
this process (:class:`SequentialExecutor`), in a local process pool (:class:`LocalExecutor`,
spawned processes: nothing is inherited but the arguments) or, later, on a Ray cluster. A unit
of work must not depend on where it runs: the results are the same whichever executor ran it
(a test compares the pool with the sequential run).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol, runtime_checkable

from rltrade.errors import ConfigError
from rltrade.logs import progress_bar

__all__ = ["Executor", "LocalExecutor", "SequentialExecutor", "default_workers", "make_executor"]

#: what the progress bar of a map says (a walk-forward's fold x seed runs, CPCV's splits)
PROGRESS_LABEL = "walk-forward"


@runtime_checkable
class Executor(Protocol):
    """Runs ``fn(*task)`` for every task; returns the results in task order. The first task
    that raises stops the rest (tasks not yet started are cancelled) and its error is
    re-raised."""

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> list[Any]: ...


class SequentialExecutor:
    """Every task in this process, one after the other."""

    workers = 1

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> list[Any]:
        results = []
        with progress_bar(PROGRESS_LABEL, total=len(tasks), unit="units") as update:
            for i, task in enumerate(tasks, 1):
                results.append(fn(*task))
                update(i)
        return results


def _quiet_worker(level: str) -> None:
    """Pool initializer: the worker's log lines at ``level`` and up on stderr (training's own
    logs still go to each run's ``logs/`` folder)."""
    from rltrade.logs import setup_logging

    setup_logging(level)


class LocalExecutor:
    """A pool of ``workers`` spawned processes (:class:`concurrent.futures.ProcessPoolExecutor`
    with the ``spawn`` start method: no state is inherited from the driver, so a worker sees
    only its task's arguments, as a remote worker would).

    :param workers: processes (at most one per task is started).
    :param log_level: the workers' stderr log level.
    """

    def __init__(self, workers: int, log_level: str = "WARNING") -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers = int(workers)
        self.log_level = log_level

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> list[Any]:
        if not tasks:
            return []
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)), mp_context=ctx,
                                 initializer=_quiet_worker, initargs=(self.log_level,)) as pool:
            futures = [pool.submit(fn, *task) for task in tasks]
            try:
                with progress_bar(PROGRESS_LABEL, total=len(tasks), unit="units") as update:
                    for done, future in enumerate(as_completed(futures), 1):
                        update(done)
                        if future.exception() is not None:
                            break
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise


def default_workers() -> int:
    """The number of CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def make_executor(workers: int | None = None) -> Executor:
    """:class:`SequentialExecutor` for one worker, else :class:`LocalExecutor` (``None``: one
    worker per core)."""
    n = default_workers() if workers is None else int(workers)
    if n < 1:
        raise ConfigError(f"--workers must be at least 1, got {n}")
    return SequentialExecutor() if n == 1 else LocalExecutor(n)
