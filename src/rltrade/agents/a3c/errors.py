"""The error an A3C worker raises: which worker, at which env step, what went wrong."""

from __future__ import annotations

from typing import Any

from rltrade.errors import RLTradeError


class A3CWorkerError(RLTradeError):
    """An A3C worker failed: a malformed env return (NaN reward, wrong observation shape) or an
    exception in its env or network. Names the worker and its env step (1-based, counted from
    the start of ``learn``; step 0 is the first reset).

    :param worker_id: the worker's index.
    :param step: the worker's env step at which it failed.
    :param problem: what went wrong.
    :param worker_traceback: the worker's traceback (text), when it ran in another process.
    """

    def __init__(self, worker_id: int, step: int, problem: str,
                 worker_traceback: str | None = None) -> None:
        self.worker_id = int(worker_id)
        self.step = int(step)
        self.problem = problem
        self.worker_traceback = worker_traceback
        super().__init__(f"A3C worker {self.worker_id}, step {self.step}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:  # keeps every field across processes
        return (type(self), (self.worker_id, self.step, self.problem, self.worker_traceback))

