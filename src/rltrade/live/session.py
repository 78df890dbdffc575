"""A paper session's folder: ``runs/NAME/paper/<session>/``.

* ``state.json`` - everything needed to go on after a crash (written atomically after every
  bar: temporary file + rename, so a crash leaves the last good state);
* ``orders.csv``, ``fills.csv``, ``steps.csv`` - appended one bar at a time (closed before the
  state is committed, so they survive a killed process; only ``state.json`` is fsynced, once a
  bar); ``state.json``
  records each file's length at its commit and a restart cuts the files back to it, so rows of
  a bar that was not committed are written once, never twice;
* ``trades.csv`` (the backtest's columns) and ``summary.json`` - rewritten atomically;
* ``heartbeat`` - the time of the trader's last sign of life and the last bar;
* ``paper.log`` - the session's log lines (components ``live.*``);
* ``broker_sim.jsonl`` - the sim broker's journal (the sim venue's own memory).
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rltrade.data.store import atomic_write_bytes

__all__ = ["CSV_FILES", "Session", "read_state"]

#: the appended files and their columns (steps.csv's columns depend on the action scheme)
CSV_FILES = {
    "orders.csv": ["time", "bar_time", "client_id", "qty", "target", "sl", "tp", "status",
                   "broker_id", "reason"],
    "fills.csv": ["time", "bar_time", "fill_id", "client_id", "qty", "price", "fee",
                  "expected_qty", "expected_price", "expected_fee", "slippage"],
}


def read_state(folder: str | Path) -> dict[str, Any] | None:
    """A session's ``state.json`` (``None`` when it has none)."""
    path = Path(folder) / "state.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


class Session:
    """The files of one paper session.

    :param folder: ``runs/NAME/paper/<session>``.
    :param step_columns: the columns of ``steps.csv`` (the backtest's, for this scheme).
    """

    def __init__(self, folder: str | Path, step_columns: list[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.columns = {**CSV_FILES, "steps.csv": step_columns}

    @property
    def state_path(self) -> Path:
        return self.folder / "state.json"

    def state(self) -> dict[str, Any] | None:
        return read_state(self.folder)

    def offsets(self) -> dict[str, int]:
        """Each appended file's current length in bytes."""
        return {name: (self.folder / name).stat().st_size if (self.folder / name).exists()
                else 0 for name in self.columns}

    def start_files(self, offsets: dict[str, int] | None) -> None:
        """Create the CSV files with their headers (new session), or cut them back to the
        lengths of the last committed state (a restart)."""
        for name, cols in self.columns.items():
            path = self.folder / name
            if offsets is None or not path.exists():
                header = io.StringIO()
                csv.writer(header, lineterminator="\n").writerow(cols)
                atomic_write_bytes(path, header.getvalue().encode())
                continue
            with open(path, "r+b") as fh:
                fh.truncate(int(offsets.get(name, 0)))

    def append(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Append rows (dicts keyed by column) to one of the CSV files."""
        if not rows:
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        cols = self.columns[name]
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in cols])
        with open(self.folder / name, "a", encoding="utf-8") as fh:
            fh.write(buf.getvalue())  # in the OS's hands once closed: survives a killed process

    def commit(self, state: dict[str, Any]) -> None:
        """Write ``state.json`` atomically (with the files' lengths) and the heartbeat."""
        state["files"] = self.offsets()
        state["committed"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        # compact: json's C encoder (an indented dump is several times slower per bar)
        atomic_write_bytes(self.state_path, json.dumps(state, separators=(",", ":")).encode())
        self.heartbeat(state.get("last_bar_time"))

    def heartbeat(self, last_bar: Any = None) -> None:
        """Write the heartbeat (replaced atomically; not fsynced: a lost heartbeat after a power
        cut only looks older)."""
        tmp = self.folder / ".heartbeat.tmp"
        tmp.write_text(json.dumps({"time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                                   "pid": os.getpid(), "last_bar": last_bar}))
        os.replace(tmp, self.folder / "heartbeat")

    def heartbeat_age(self) -> float | None:
        """Seconds since the last heartbeat (``None``: none yet)."""
        path = self.folder / "heartbeat"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return (datetime.now(UTC) - datetime.fromisoformat(data["time"])).total_seconds()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return value
