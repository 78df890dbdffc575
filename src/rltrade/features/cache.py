"""``DatasetCache``: Datasets on disk, keyed by (data fingerprint, spec hash), extended in place.

``get_or_build(bars, spec)``:

1. the exact bars and spec were built before -> load them;
2. a Dataset of the same spec exists for a **prefix** of these bars (same first bar, its
   fingerprint equals the fingerprint of the first ``n`` bars here) -> recompute only the tail:
   features and signals are computed on the last ``overlap + new`` bars, the overlap rows are
   checked against the cached ones, and the new rows are appended;
3. otherwise -> full build.

Why the overlap and the check: recursive indicators (EMA, Wilder smoothing, OTT, Supertrend) and
running sums depend on where the computation started. After enough bars the recursions agree to
the last bit; running sums (TA-Lib's SMA/CCI, rolling sums) keep differences at the level of
floating-point rounding. So a tail recompute equals a full rebuild up to a relative ``1e-9`` on
features and exactly on strategy signals; the check enforces that on the overlap and falls back
to a full rebuild (logged) if it ever fails.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from rltrade.data.store import atomic_write_json, fingerprint_bars
from rltrade.data.timeframes import as_ns, parse_timeframe
from rltrade.features.dataset import Dataset, build_dataset
from rltrade.features.spec import FeatureSpec
from rltrade.features.strategies import make_strategy

log = logger.bind(component="features")
_INDEX = "index.json"
RTOL = 1e-9


def overlap_bars(spec: FeatureSpec, base_timeframe: str) -> int:
    """Base bars of history to recompute before new bars so the recursions have converged."""
    base = parse_timeframe(base_timeframe)
    resolved = spec.resolved()
    longest = 1
    for item in resolved["features"]:
        for value in item["params"].values():
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, int | float) and not isinstance(v, bool) and v >= 1:
                    longest = max(longest, int(v))
    # windows need their length; recursions (Wilder, EMA) converge to the bit within ~40 periods
    overlap = 2000 + 2 * longest
    for item in spec.strategies:
        strategy = make_strategy(item.name, item.timeframe, **item.params)
        tf = parse_timeframe(strategy.run_timeframe or base.name)
        ratio = max(1, round(tf.seconds / base.seconds))
        overlap = max(overlap, 2 * (strategy.lookback + strategy.min_candles) * ratio)
    return overlap


class DatasetCache:
    """A folder of cached Datasets (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        #: what the last call did: "hit", "tail" (with the bars recomputed), "full" or
        #: "rebuild" (a tail recompute failed its check)
        self.last_action: str = ""
        self.last_recomputed: int = 0

    def _entries(self) -> list[dict[str, Any]]:
        path = self.root / _INDEX
        return json.loads(path.read_text()) if path.exists() else []

    def _save_entries(self, entries: list[dict[str, Any]]) -> None:
        atomic_write_json(self.root / _INDEX, entries)

    @staticmethod
    def _name(fingerprint: str, spec_hash: str) -> str:
        return f"{fingerprint[:20]}_{spec_hash[:20]}"

    def get_or_build(self, bars: pd.DataFrame, spec: FeatureSpec | None = None) -> Dataset:
        """The Dataset of ``bars`` under ``spec``, from the cache when possible."""
        spec = spec or FeatureSpec.default()
        spec_hash = spec.hash()
        fingerprint = fingerprint_bars(bars)
        entries = self._entries()
        for entry in entries:
            if entry["fingerprint"] == fingerprint and entry["spec_hash"] == spec_hash:
                folder = self.root / entry["folder"]
                if folder.exists():
                    log.debug("dataset cache hit {}", entry["folder"])
                    self.last_action, self.last_recomputed = "hit", 0
                    # the calendar is the one these bars were loaded with (data.calendar)
                    return replace(Dataset.load(folder), calendar=bars.attrs.get("calendar"))
        dataset = None
        ts = as_ns(bars.index)
        for entry in sorted(entries, key=lambda e: -e["n_bars"]):
            n = entry["n_bars"]
            if (
                entry["spec_hash"] == spec_hash
                and n < len(bars)
                and ts[0] == entry["first_ts"]
                and ts[n - 1] == entry["last_ts"]
                and fingerprint_bars(bars.iloc[:n]) == entry["fingerprint"]
            ):
                cached = Dataset.load(self.root / entry["folder"])
                dataset = self.extend(cached, bars, n, spec)
                break
        if dataset is None:
            dataset = build_dataset(bars, spec)
            self.last_action, self.last_recomputed = "full", len(bars)
        dataset = replace(dataset, calendar=bars.attrs.get("calendar"))
        self._put(dataset, bars, entries)
        return dataset

    def extend(self, cached: Dataset, bars: pd.DataFrame, n_old: int, spec: FeatureSpec) -> Dataset:
        """``cached`` (built on ``bars[:n_old]``) extended to all ``bars`` by a tail recompute;
        a full rebuild if the overlap check fails."""
        overlap = overlap_bars(spec, cached.timeframe)
        start = max(0, n_old - overlap)
        tail = build_dataset(bars.iloc[start:], spec)
        new_from = int(np.searchsorted(tail.timestamps, cached.timestamps[-1], side="right"))
        check_ts = cached.timestamps[-min(len(cached), 200) :]
        pos_tail = np.searchsorted(tail.timestamps, check_ts)
        ok = start == 0 or (
            len(pos_tail) > 0
            and pos_tail[-1] < len(tail)
            and np.array_equal(tail.timestamps[pos_tail], check_ts)
            and np.allclose(
                tail.features[pos_tail], cached.features[-len(check_ts) :], rtol=RTOL, atol=0
            )
            and np.array_equal(tail.signals[pos_tail], cached.signals[-len(check_ts) :])
        )
        if not ok:
            log.warning("dataset cache: tail recompute disagreed with the cache; full rebuild")
            self.last_action, self.last_recomputed = "rebuild", len(bars)
            return build_dataset(bars, spec)
        self.last_action, self.last_recomputed = "tail", len(bars) - start
        new = tail.slice(new_from, None)
        log.info("dataset cache: recomputed {} bars for {} new rows", len(bars) - start, len(new))
        return cached.append(new, spec=spec, fingerprint=fingerprint_bars(bars))

    def _put(self, dataset: Dataset, bars: pd.DataFrame, entries: list[dict[str, Any]]) -> None:
        name = self._name(dataset.fingerprint, dataset.spec_hash)
        folder = self.root / name
        if folder.exists():
            shutil.rmtree(folder)
        dataset.save(folder)
        ts = as_ns(bars.index)
        entries = [e for e in entries if e["folder"] != name]
        entries.append(
            {
                "folder": name,
                "fingerprint": dataset.fingerprint,
                "spec_hash": dataset.spec_hash,
                "n_bars": len(bars),
                "first_ts": int(ts[0]),
                "last_ts": int(ts[-1]),
            }
        )
        self._save_entries(entries)
