"""``BarStore``: a Parquet store of bars, partitioned by symbol / timeframe / year.

Layout under ``root``::

    root/
      BTC-USDT/1h/2023.parquet      one file per calendar year (UTC) of bar open times
      BTC-USDT/1h/2024.parquet
      BTC-USDT/1h/_meta.json        original symbol, source, coverage, fingerprint
      archived/BTC-USDT/1h/2024__20250101T120000Z.parquet   files a write replaced

* Every write is atomic: the new file is written next to its target under a temporary name and
  moved into place with :func:`os.replace`. A crash leaves the previous file, never half a file.
* :meth:`BarStore.write` merges with what is stored: rows are deduplicated by timestamp and, on a
  conflict, the newly written row wins (and the count is returned). A year file whose stored
  values change is first copied to ``archived/`` with a UTC time stamp, so nothing is ever lost
  silently (a pure append, which loses nothing, is not archived).
* ``coverage`` records the time ranges a downloader has already asked an exchange for, so an
  incremental download does not ask again for ranges the exchange has no bars in.
* Each series has a fingerprint: the sha256 of its canonical content (see
  :func:`fingerprint_bars`), which ties a trained model to the exact bars it saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rltrade.data.parsing import OHLCV
from rltrade.data.timeframes import Timeframe, as_ns, parse_timeframe, to_utc
from rltrade.errors import StoreError

_META = "_meta.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        table = pa.Table.from_pandas(frame, preserve_index=True)
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fingerprint_bars(bars: pd.DataFrame) -> str:
    """sha256 of the canonical content of bars: timestamps and values, column by column.

    Canonical means: rows in time order, timestamps as little-endian int64 UTC nanoseconds,
    columns ``open, high, low, close, volume`` then extra columns in name order, each as
    little-endian float64, each preceded by its name. Two frames with the same bars give the same
    fingerprint whatever their file format, column order or pandas time unit.
    """
    frame = bars if bars.index.is_monotonic_increasing else bars.sort_index()
    digest = hashlib.sha256()
    digest.update(b"rltrade-bars-v1\0")
    digest.update(as_ns(frame.index).astype("<i8").tobytes())
    extras = sorted(c for c in frame.columns if c not in OHLCV)
    for col in [*[c for c in OHLCV if c in frame.columns], *extras]:
        digest.update(col.encode() + b"\0")
        digest.update(np.ascontiguousarray(frame[col].to_numpy(np.float64)).astype("<f8").tobytes())
    return digest.hexdigest()


def symbol_key(symbol: str) -> str:
    """Folder name of a symbol: ``BTC/USDT`` -> ``BTC-USDT``, ``X/USDT:USDT`` -> ``X-USDT-USDT``.

    Keys that could escape the store (leading dots, separators) are refused.
    """
    key = re.sub(r"[/:\\ ]+", "-", symbol.strip()).strip("-")
    if not key or key.startswith(".") or not re.fullmatch(r"[A-Za-z0-9._\-^=]+", key):
        raise StoreError(f"symbol {symbol!r} cannot be used as a store key")
    return key


@dataclass
class SeriesInfo:
    """Summary of one stored series (what ``rltrade data info`` prints)."""

    symbol: str
    timeframe: str
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    rows: int
    gaps: int
    missing_bars: int
    fingerprint: str
    columns: list[str]


def _merge_intervals(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class BarStore:
    """A folder of Parquet bar files, partitioned by symbol, timeframe and year."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- paths -------------------------------------------------------------------------------
    def series_dir(self, symbol: str, timeframe: str | Timeframe) -> Path:
        return self.root / symbol_key(symbol) / parse_timeframe(timeframe).name

    def _meta_path(self, symbol: str, timeframe: str | Timeframe) -> Path:
        return self.series_dir(symbol, timeframe) / _META

    def _year_files(self, symbol: str, timeframe: str | Timeframe) -> list[Path]:
        folder = self.series_dir(symbol, timeframe)
        if not folder.exists():
            return []
        return sorted(p for p in folder.glob("*.parquet") if re.fullmatch(r"\d{4}", p.stem))

    # -- metadata ----------------------------------------------------------------------------
    def meta(self, symbol: str, timeframe: str | Timeframe) -> dict[str, Any]:
        path = self._meta_path(symbol, timeframe)
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{path}: unreadable store metadata ({exc})") from exc

    def _write_meta(self, symbol: str, timeframe: str | Timeframe, meta: dict[str, Any]) -> None:
        atomic_write_json(self._meta_path(symbol, timeframe), meta)

    def coverage(self, symbol: str, timeframe: str | Timeframe) -> list[tuple[int, int]]:
        """Time ranges ``[start_ns, end_ns)`` already requested from a source."""
        return [tuple(x) for x in self.meta(symbol, timeframe).get("coverage", [])]  # type: ignore[misc]

    def add_coverage(
        self, symbol: str, timeframe: str | Timeframe, start_ns: int, end_ns: int
    ) -> None:
        meta = self.meta(symbol, timeframe)
        merged = _merge_intervals([*map(tuple, meta.get("coverage", [])), (start_ns, end_ns)])
        meta["coverage"] = [list(x) for x in merged]
        meta.setdefault("symbol", symbol)
        meta.setdefault("timeframe", parse_timeframe(timeframe).name)
        self._write_meta(symbol, timeframe, meta)

    # -- reading -----------------------------------------------------------------------------
    def series(self) -> list[tuple[str, str]]:
        """All stored ``(symbol, timeframe)`` pairs (original symbol names when known)."""
        out = []
        if not self.root.exists():
            return out
        for sym_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if sym_dir.name == "archived":
                continue
            for tf_dir in sorted(p for p in sym_dir.iterdir() if p.is_dir()):
                if not any(tf_dir.glob("*.parquet")):
                    continue
                meta_path = tf_dir / _META
                symbol = sym_dir.name
                if meta_path.exists():
                    symbol = json.loads(meta_path.read_text()).get("symbol", symbol)
                out.append((symbol, tf_dir.name))
        return out

    def has(self, symbol: str, timeframe: str | Timeframe) -> bool:
        return bool(self._year_files(symbol, timeframe))

    def read(
        self,
        symbol: str,
        timeframe: str | Timeframe,
        start: str | pd.Timestamp | None = None,
        end: str | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Bars of one series, optionally limited to ``[start, end)``; raises if absent."""
        files = self._year_files(symbol, timeframe)
        if not files:
            have = ", ".join(f"{s}/{t}" for s, t in self.series()) or "nothing"
            raise StoreError(
                f"no bars for {symbol} {parse_timeframe(timeframe).name} in {self.root} "
                f"(the store has: {have})"
            )
        lo = to_utc(start) if start is not None else None
        hi = to_utc(end) if end is not None else None
        frames = []
        for path in files:
            year = int(path.stem)
            if lo is not None and year < lo.year:
                continue
            if hi is not None and year > hi.year:
                continue
            try:
                frames.append(pq.read_table(path).to_pandas())
            except (pa.ArrowInvalid, OSError) as exc:
                raise StoreError(f"{path}: unreadable Parquet file ({exc})") from exc
        if not frames:
            return self._empty_like(files[0])
        frame = pd.concat(frames) if len(frames) > 1 else frames[0]
        frame.index = pd.DatetimeIndex(frame.index).tz_convert("UTC").as_unit("ns")
        frame.index.name = "timestamp"
        if lo is not None:
            frame = frame[frame.index >= lo]
        if hi is not None:
            frame = frame[frame.index < hi]
        frame.attrs.update(symbol=symbol, timeframe=parse_timeframe(timeframe).name)
        return frame

    @staticmethod
    def _empty_like(path: Path) -> pd.DataFrame:
        frame = pq.read_table(path).to_pandas().iloc[:0]
        frame.index = pd.DatetimeIndex(frame.index).tz_convert("UTC").as_unit("ns")
        return frame

    def fingerprint(self, symbol: str, timeframe: str | Timeframe) -> str:
        return fingerprint_bars(self.read(symbol, timeframe))

    # -- writing -----------------------------------------------------------------------------
    def write(
        self,
        symbol: str,
        timeframe: str | Timeframe,
        bars: pd.DataFrame,
        *,
        source: str | None = None,
    ) -> dict[str, int]:
        """Merge ``bars`` into the stored series; returns counts of added / replaced rows.

        ``bars`` must already be in rltrade's layout (from :func:`rltrade.data.load_bars`):
        a UTC DatetimeIndex and float64 columns. New rows win over stored rows with the same
        timestamp. Changed year files are archived before they are replaced.
        """
        tf = parse_timeframe(timeframe)
        if not isinstance(bars.index, pd.DatetimeIndex) or bars.index.tz is None:
            raise StoreError("bars must have a UTC DatetimeIndex (load them with load_bars)")
        missing = [c for c in OHLCV if c not in bars.columns]
        if missing:
            raise StoreError(f"bars lack column(s) {missing}")
        new = bars.copy()
        new.index = new.index.tz_convert("UTC").as_unit("ns")
        new.index.name = "timestamp"
        new = new[~new.index.duplicated(keep="last")].sort_index()
        new = new.astype(np.float64)
        stats = {"added": 0, "replaced": 0, "unchanged": 0}
        folder = self.series_dir(symbol, tf)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        for year, chunk in new.groupby(new.index.year, sort=True):
            path = folder / f"{int(year)}.parquet"
            if path.exists():
                old = pq.read_table(path).to_pandas()
                old.index = pd.DatetimeIndex(old.index).tz_convert("UTC").as_unit("ns")
                old.index.name = "timestamp"
                common = old.index.intersection(chunk.index)
                cols = [c for c in chunk.columns if c in old.columns]
                replaced = 0
                if len(common):
                    a = old.loc[common, cols].to_numpy()
                    b = chunk.loc[common, cols].to_numpy()
                    same = np.all((a == b) | (np.isnan(a) & np.isnan(b)), axis=1)
                    replaced = int((~same).sum())
                    stats["unchanged"] += int(same.sum())
                    stats["replaced"] += replaced
                stats["added"] += len(chunk) - len(common)
                merged = pd.concat([old, chunk])
                merged = merged[~merged.index.duplicated(keep="last")].sort_index()
                if merged.shape == old.shape and merged.equals(old):
                    continue
                if replaced or set(old.columns) - set(chunk.columns):
                    # Stored values change (not a pure append): keep the old file.
                    archive = self.root / "archived" / folder.relative_to(self.root)
                    archive.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, archive / f"{path.stem}__{stamp}.parquet")
                _atomic_write_parquet(path, merged)
            else:
                stats["added"] += len(chunk)
                _atomic_write_parquet(path, chunk)
        meta = self.meta(symbol, tf)
        meta.update(symbol=symbol, timeframe=tf.name)
        if source:
            sources = set(meta.get("sources", []))
            sources.add(source)
            meta["sources"] = sorted(sources)
        meta["fingerprint"] = self.fingerprint(symbol, tf)
        meta["updated_at"] = datetime.now(UTC).isoformat()
        self._write_meta(symbol, tf, meta)
        return stats

    # -- summaries ---------------------------------------------------------------------------
    def info(self) -> list[SeriesInfo]:
        """One :class:`SeriesInfo` per stored series (gaps counted inside the sessions of the
        market calendar inferred from the bars, as :func:`~rltrade.data.validate_bars` does)."""
        from rltrade.data.calendars import infer_calendar
        from rltrade.data.validation import find_gaps

        rows = []
        for symbol, tf in self.series():
            frame = self.read(symbol, tf)
            timeframe = parse_timeframe(tf)
            calendar = infer_calendar(as_ns(frame.index), timeframe).calendar  # as validation
            gaps = find_gaps(frame.index, timeframe, calendar)
            rows.append(
                SeriesInfo(
                    symbol=symbol,
                    timeframe=tf,
                    start=frame.index[0] if len(frame) else None,
                    end=frame.index[-1] if len(frame) else None,
                    rows=len(frame),
                    gaps=gaps.events,
                    missing_bars=gaps.missing,
                    fingerprint=fingerprint_bars(frame),
                    columns=list(frame.columns),
                )
            )
        return rows
