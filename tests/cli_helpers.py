"""Helpers the CLI and training tests share: run the ``rltrade`` command in-process, and a
second process that holds a run's training lock."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rltrade.cli import main

#: ``python -c HOLD_LOCK RUN_DIR``: takes the run's training lock, says "locked", then waits
HOLD_LOCK = """
import sys, time
from rltrade.runs import Run
Run.open(sys.argv[1]).acquire_lock()
print("locked", flush=True)
time.sleep(120)
"""


@contextmanager
def lock_held_elsewhere(run_path: Path) -> Iterator[subprocess.Popen]:
    """A second process holds the training lock of ``run_path`` while the block runs (killed
    after it)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stderr is not None
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=30)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``rltrade ARGV`` in-process: ``(exit code, stdout, stderr)`` (a success returns 0)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
