"""Executors: run many units of work (one config on one fold with one seed) and return their
results in the order of the tasks.

The interface is one method, :meth:`Executor.map` ``(fn, tasks) -> list``: ``fn`` is a plain,
importable function and each task a tuple of picklable arguments, so that the same tasks run in
this process (:class:`SequentialExecutor`), in a local process pool (:class:`LocalExecutor`,
fresh processes: nothing is inherited from the driver but the arguments) or, later, on a Ray
cluster. A unit of work must not depend on where it runs: the results are the same whichever
executor ran it (a test compares the pool with the sequential run).

A worker's fixed cost is its imports (torch, Stable-Baselines3, torch's compiler stack that the
first optimizer pulls in, rltrade's training and backtest modules: several seconds) and loading
the numba kernels from their on-disk cache. :class:`LocalExecutor` pays the imports **once per
pool**, not once per worker: its processes fork from a ``forkserver`` that imported
:data:`PRELOAD` (a fresh interpreter, never the driver: forking it is safe, and a worker still
inherits nothing of the driver's state). The pool is started by :meth:`LocalExecutor.start`
(``walk_forward`` calls it before it builds the Dataset, so the imports overlap the driver's
work) and reused by every :meth:`~LocalExecutor.map` until :meth:`~LocalExecutor.close`.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol, runtime_checkable

from rltrade.errors import ConfigError
from rltrade.logs import progress_bar

__all__ = ["PRELOAD", "Executor", "LocalExecutor", "SequentialExecutor", "close_executor",
           "default_workers", "make_executor"]

#: the modules the pool's forkserver imports once, before it forks the workers (the heavy part
#: of a unit's start: torch, its compiler stack that ``torch.optim`` imports on first use,
#: Stable-Baselines3, rltrade's training, backtest and walk-forward modules)
PRELOAD = ("torch", "torch._dynamo", "stable_baselines3", "rltrade.agents.training",
           "rltrade.evaluation.judge", "rltrade.experiments.walkforward")

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


def _ready() -> int:
    """A no-op task: submitting one per worker makes the pool start its processes now."""
    return os.getpid()


class LocalExecutor:
    """A pool of ``workers`` local processes (:class:`concurrent.futures.ProcessPoolExecutor`).

    With the default ``forkserver`` start method the workers fork from a fresh server process
    that imported :data:`PRELOAD` once (see the module docstring); ``spawn`` starts each one as
    a fresh interpreter that imports everything itself. Either way no state is inherited from
    the driver: a worker sees only its task's arguments, as a remote worker would. The pool
    is created on :meth:`start` (or the first :meth:`map`) and reused until :meth:`close`;
    ``with LocalExecutor(2) as ex:`` closes it.

    :param workers: processes.
    :param log_level: the workers' stderr log level.
    :param start_method: ``"forkserver"`` (default; ``"spawn"`` where there is none) or
        ``"spawn"``.
    :param preload: the modules the forkserver imports (ignored with ``spawn``).
    """

    def __init__(self, workers: int, log_level: str = "WARNING",
                 start_method: str = "forkserver", preload: Sequence[str] = PRELOAD) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        if start_method not in ("forkserver", "spawn"):
            raise ConfigError(f"start_method must be 'forkserver' or 'spawn', got "
                              f"{start_method!r}")
        if start_method not in multiprocessing.get_all_start_methods():
            start_method = "spawn"
        self.workers = int(workers)
        self.log_level = log_level
        self.start_method = start_method
        self.preload = tuple(preload)
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> LocalExecutor:
        """Start the pool's processes now (and the forkserver's imports) without waiting for
        them; :meth:`map` then finds them ready or on their way. Idempotent."""
        if self._pool is None:
            ctx = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":
                ctx.set_forkserver_preload(list(self.preload))
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                             initializer=_quiet_worker,
                                             initargs=(self.log_level,))
            for _ in range(self.workers):  # processes start on demand: ask for all of them
                self._pool.submit(_ready)
        return self

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> list[Any]:
        if not tasks:
            return []
        pool = self.start()._pool
        assert pool is not None
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

    def close(self) -> None:
        """Stop the pool's processes (after the tasks already running); a later
        :meth:`map` starts a new pool."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LocalExecutor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def close_executor(executor: Executor) -> None:
    """Close ``executor`` if it holds resources (a pool); the others need nothing."""
    close = getattr(executor, "close", None)
    if callable(close):
        close()


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
