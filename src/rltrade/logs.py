"""Logging through loguru, bound per component (data, features, train, backtest, live).

rltrade's library code logs with ``logger.bind(component=...)`` and is silent until logging is
switched on: the CLI calls :func:`setup_logging`; in your own scripts call it too, or
``loguru.logger.enable("rltrade")`` to route messages to your own handlers.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from loguru import logger

_FORMAT = (
    "<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> "
    "<cyan>{extra[component]: <8}</cyan> {message}"
)
_handlers: list[int] = []


def setup_logging(level: str = "INFO", log_file: str | Path | None = None) -> None:
    """Send rltrade's log messages to stderr (and optionally a file) at ``level``."""
    for handler_id in [*_handlers, 0]:  # 0 is loguru's default handler
        with contextlib.suppress(ValueError):
            logger.remove(handler_id)
    _handlers.clear()
    logger.configure(extra={"component": "rltrade"})
    _handlers.append(logger.add(sys.stderr, level=level, format=_FORMAT, colorize=None))
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        _handlers.append(logger.add(str(log_file), level="DEBUG", format=_FORMAT, colorize=False))
    logger.enable("rltrade")


#: log file of a run directory -> the components it collects
RUN_LOG_FILES: dict[str, tuple[str, ...]] = {
    "training.log": ("train",),
    "data_pipeline.log": ("data", "features"),
    "backtest.log": ("backtest",),
}


@contextlib.contextmanager
def run_log_files(logs_dir: str | Path, files: dict[str, tuple[str, ...]] | None = None):
    """Write the messages of each component into its file of a run's ``logs/`` while the block
    runs (``training.log``, ``data_pipeline.log``, ``backtest.log``; appended to)."""
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    was_enabled = bool(_handlers)
    ids = []
    for name, components in (files or RUN_LOG_FILES).items():
        ids.append(logger.add(
            str(logs_dir / name), level="DEBUG", colorize=False,
            format="{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {extra[component]: <8} {message}",
            filter=lambda record, c=components: record["extra"].get("component") in c,
        ))
    logger.enable("rltrade")
    try:
        yield logs_dir
    finally:
        for handler_id in ids:
            with contextlib.suppress(ValueError):
                logger.remove(handler_id)
        if not was_enabled:
            logger.disable("rltrade")
