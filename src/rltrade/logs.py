"""Logging through loguru, bound per component (data, features, train, backtest, live).

rltrade's library code logs with ``logger.bind(component=...)`` and is silent until logging is
switched on: the CLI calls :func:`setup_logging`; in your own scripts call it too, or
``loguru.logger.enable("rltrade")`` to route messages to your own handlers.

The CLI holds its log lines back (``setup_logging(defer=True)``) until a command has either
succeeded or committed to long work, so that a command that fails on its input prints only its
one-line ``error:`` (``-v`` streams everything as it happens): :func:`release_deferred_logs`
prints what was held and streams from then on (training calls it once its run directory exists),
:func:`discard_deferred_logs` drops it (the CLI, on an error).

A run's own files (``logs/``) get every message of their components: :func:`hold_run_logs`
keeps the lines logged before the run directory exists, :func:`run_log_files` writes them first.

:class:`PhaseTimer` times the phases of a run (data, features, train, backtest, report): each
phase logs its start and its seconds (or its failure), and the table is recorded in the run's
``metadata.json`` (``phases``).

:func:`progress_bar` shows a progress bar (rich) on long steps when stderr is a terminal:
a count (download, walk-forward units) or, where the total is unknown or the work is one call
into compiled code (feature build, a backtest), the elapsed time. Updates are throttled; hot
loops are never touched.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loguru import logger

__all__ = [
    "PHASES",
    "RUN_LOG_FILES",
    "HeldLogs",
    "PhaseTimer",
    "discard_deferred_logs",
    "hold_run_logs",
    "progress_bar",
    "progress_enabled",
    "release_deferred_logs",
    "run_log_files",
    "setup_logging",
]

_FORMAT = (
    "<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> "
    "<cyan>{extra[component]: <8}</cyan> {message}"
)
_FILE_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {extra[component]: <8} {message}"
_handlers: list[int] = []


class _StderrSink:
    """stderr, looked up at each write (so a redirected ``sys.stderr`` is honoured), or a
    buffer while deferred."""

    def __init__(self, deferred: bool) -> None:
        self.deferred = deferred
        self.held: list[str] = []

    def write(self, message: Any) -> None:
        if self.deferred:
            self.held.append(str(message))
        else:
            sys.stderr.write(str(message))
            sys.stderr.flush()

    def release(self) -> None:
        self.deferred = False
        held, self.held = self.held, []
        for line in held:
            self.write(line)

    def discard(self) -> None:
        self.held = []
        self.deferred = False


_stderr: _StderrSink | None = None


def _colours() -> bool:
    return "NO_COLOR" not in os.environ and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def setup_logging(level: str = "INFO", log_file: str | Path | None = None, *,
                  defer: bool = False) -> None:
    """Send rltrade's log messages to stderr (and optionally a file) at ``level``.

    :param level: the lowest level shown on stderr.
    :param log_file: also write every message (DEBUG and up) here.
    :param defer: hold the stderr lines back until :func:`release_deferred_logs` (printed then)
        or :func:`discard_deferred_logs` (dropped); the file gets them as they come.
    """
    global _stderr
    for handler_id in [*_handlers, 0]:  # 0 is loguru's default handler
        with contextlib.suppress(ValueError):
            logger.remove(handler_id)
    _handlers.clear()
    logger.configure(extra={"component": "rltrade"})
    _stderr = _StderrSink(deferred=defer)
    _handlers.append(logger.add(_stderr.write, level=level, format=_FORMAT,
                                colorize=_colours()))
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        _handlers.append(logger.add(str(log_file), level="DEBUG", format=_FORMAT, colorize=False))
    logger.enable("rltrade")


def release_deferred_logs() -> None:
    """Print the stderr lines held back by ``setup_logging(defer=True)`` and stream from now on
    (a no-op when nothing is deferred)."""
    if _stderr is not None:
        _stderr.release()


def discard_deferred_logs() -> None:
    """Drop the stderr lines held back by ``setup_logging(defer=True)``: the command failed and
    says why in one line (a no-op when nothing is deferred)."""
    if _stderr is not None:
        _stderr.discard()


#: log file of a run directory -> the components it collects
RUN_LOG_FILES: dict[str, tuple[str, ...]] = {
    "training.log": ("train",),
    "data_pipeline.log": ("data", "features"),
    "strategy_execution.log": ("strategy",),
    "backtest.log": ("backtest",),
}

#: the phases of a run, in order, with the component each one logs as
PHASES: dict[str, str] = {
    "data": "data",
    "features": "features",
    "train": "train",
    "backtest": "backtest",
    "report": "backtest",
}


class PhaseTimer:
    """Wall-clock seconds per phase of a run (:data:`PHASES`; a phase run twice adds up).

    ``with timer.phase("features"): ...`` logs the phase's start and, at its end, its seconds
    (or that it failed after so many seconds) under the phase's component.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name``."""
        plog = logger.bind(component=PHASES.get(name, "rltrade"))
        plog.debug("phase {}: start", name)
        t0 = time.perf_counter()
        try:
            yield
        except BaseException:
            plog.error("phase {} failed after {:.2f} s", name, time.perf_counter() - t0)
            raise
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        plog.info("phase {}: {:.2f} s", name, self.seconds[name])

    def to_dict(self) -> dict[str, float | None]:
        """The table: every phase of :data:`PHASES` (``None`` when it did not run), then any
        other phase, in seconds, plus ``total``."""
        table: dict[str, float | None] = {name: None for name in PHASES}
        table.update({k: round(v, 4) for k, v in self.seconds.items()})
        table["total"] = round(sum(self.seconds.values()), 4)
        return table


class HeldLogs:
    """Formatted log lines of rltrade's components, kept in memory until a run's ``logs/``
    exists (see :func:`hold_run_logs`)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str | None, str]] = []

    def write(self, message: Any) -> None:
        self.lines.append((message.record["extra"].get("component"), str(message)))


_enabled_depth = 0


@contextlib.contextmanager
def _rltrade_enabled() -> Iterator[None]:
    """rltrade's messages reach the handlers while the block runs (nested blocks included);
    afterwards the library is silent again unless :func:`setup_logging` switched it on."""
    global _enabled_depth
    _enabled_depth += 1
    logger.enable("rltrade")
    try:
        yield
    finally:
        _enabled_depth -= 1
        if _enabled_depth == 0 and not _handlers:
            logger.disable("rltrade")


@contextlib.contextmanager
def hold_run_logs() -> Iterator[HeldLogs]:
    """Keep every component's messages logged while the block runs, for
    :func:`run_log_files` to write into a run's files once the run directory exists."""
    held = HeldLogs()
    with _rltrade_enabled():
        handler_id = logger.add(held.write, level="DEBUG", format=_FILE_FORMAT, colorize=False)
        try:
            yield held
        finally:
            with contextlib.suppress(ValueError):
                logger.remove(handler_id)


@contextlib.contextmanager
def run_log_files(logs_dir: str | Path, files: dict[str, tuple[str, ...]] | None = None, *,
                  replay: HeldLogs | None = None) -> Iterator[Path]:
    """Write the messages of each component into its file of a run's ``logs/`` while the block
    runs (``training.log``, ``data_pipeline.log``, ``backtest.log``; appended to).

    :param replay: lines held before the run directory existed (:func:`hold_run_logs`),
        written first.
    """
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    files = files or RUN_LOG_FILES
    if replay is not None:
        for name, components in files.items():
            lines = [text for comp, text in replay.lines if comp in components]
            if lines:
                with open(logs_dir / name, "a", encoding="utf-8") as fh:
                    fh.writelines(lines)
    with _rltrade_enabled():
        ids = []
        for name, components in files.items():
            ids.append(logger.add(
                str(logs_dir / name), level="DEBUG", colorize=False, format=_FILE_FORMAT,
                filter=lambda record, c=components: record["extra"].get("component") in c,
            ))
        try:
            yield logs_dir
        finally:
            for handler_id in ids:
                with contextlib.suppress(ValueError):
                    logger.remove(handler_id)


def progress_enabled() -> bool:
    """Whether :func:`progress_bar` draws: stderr is a terminal (``RLTRADE_PROGRESS=0`` turns it
    off, ``=1`` on, drawn as on a terminal)."""
    env = os.environ.get("RLTRADE_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None, *, unit: str = "",
                 enabled: bool | None = None) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr while the block runs; yields ``update(done, total=None)``.

    :param description: what is running (``features``, ``backtest``, ``walk-forward``).
    :param total: the count to reach (``None``: unknown, the bar shows the elapsed time).
    :param unit: the counted thing, shown after the count (``bars``, ``runs``).
    :param enabled: draw or not (default :func:`progress_enabled`); when off, ``update`` does
        nothing.
    """
    on = progress_enabled() if enabled is None else enabled
    if not on:
        yield lambda done, total=None: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [SpinnerColumn(), TextColumn(f"[bold]{description}"), BarColumn()]
    if total is not None:
        columns += [MofNCompleteColumn(), TextColumn(unit), TimeRemainingColumn()]
    columns.append(TimeElapsedColumn())
    forced = os.environ.get("RLTRADE_PROGRESS") not in (None, "0", "false", "no", "")
    progress = Progress(*columns, console=Console(stderr=True, force_terminal=forced or None),
                        transient=True)
    task = progress.add_task(description, total=total)
    last = [0.0]

    def update(done: int, new_total: int | None = None) -> None:
        now = time.perf_counter()
        if now - last[0] < 0.2 and (new_total is None and done != total):
            return
        last[0] = now
        progress.update(task, completed=done, total=new_total if new_total is not None else total)

    with progress:
        yield update
