"""Extend a :class:`~rltrade.features.dataset.Dataset` one closed bar at a time.

Paper trading sees one new bar at a time and must not rebuild a million-bar Dataset for each.
:class:`IncrementalDataset` keeps the bars and the Dataset's arrays in buffers that grow by
doubling, and computes the row of a new bar with :func:`~rltrade.features.dataset.build_dataset`
itself on a **trailing window** of the last ``tail`` bars: the same code as the batch build, so
every feature and strategy signal is the one the batch build gives, as long as the window is
long enough for the longest memory in the spec (rolling windows, Wilder and exponential
smoothing, higher-timeframe strategy bars).

"Long enough" is checked, not assumed: :meth:`IncrementalDataset.calibrate` recomputes the last
rows of the history (whose batch values are known) from trailing windows and doubles ``tail``
until every value is bit-for-bit equal; :func:`extension_mismatches` compares an extended
Dataset with a batch rebuild on the same bars (the tests run it over many bars). Exponential
smoothing forgets its start geometrically, so its trailing value reaches the batch value's
exact bits after a finite window. Some values never do: TA-Lib's rolling sums (Bollinger
bands) update a running sum, whose rounding carries over from the first bar of the series, so
on a long history their last bits depend on every bar. A feature group that no window up to
``full_after`` bars reproduces is computed **on the whole history** for each new bar (only that
group: a TA-Lib pass over a million bars is a few milliseconds); one that still differs (a
strategy signal) makes calibration fail loudly instead of trading on a different number.

::

    inc = IncrementalDataset(history_bars, spec, timeframe="1h")
    inc.calibrate()                # tail doubled until the last rows match the batch build
    row = inc.append(ts_ns, o, h, l, c, v)   # the new bar's Dataset row index
    ds = inc.dataset                # views of every row so far
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from rltrade.data.parsing import OHLCV
from rltrade.data.timeframes import parse_timeframe
from rltrade.errors import ConfigError, DataError
from rltrade.features.base import FEATURES, BarArrays
from rltrade.features.dataset import Dataset, build_dataset, compute_features
from rltrade.features.spec import FeatureSpec

__all__ = ["DEFAULT_TAIL", "IncrementalDataset", "extension_mismatches"]

log = logger.bind(component="features")

#: bars of the trailing window a new row is computed on before calibration
DEFAULT_TAIL = 2048
#: the longest trailing window calibration tries before giving up
MAX_TAIL = 1 << 17
#: past this window, feature groups that still differ are computed on the whole history
FULL_AFTER = 1 << 14


class _Grow:
    """A numpy array that grows along axis 0 by doubling (amortised O(1) appends)."""

    def __init__(self, values: np.ndarray, extra: int = 1024) -> None:
        self.n = len(values)
        self.buf = np.empty((self.n + max(extra, 16), *values.shape[1:]), dtype=values.dtype)
        self.buf[: self.n] = values

    def push(self, row: Any) -> None:
        if self.n == len(self.buf):
            grown = np.empty((2 * len(self.buf), *self.buf.shape[1:]), dtype=self.buf.dtype)
            grown[: self.n] = self.buf[: self.n]
            self.buf = grown
        self.buf[self.n] = row
        self.n += 1

    def truncate(self, n: int) -> None:
        self.n = n

    @property
    def view(self) -> np.ndarray:
        return self.buf[: self.n]


class IncrementalDataset:
    """A Dataset that grows by one closed bar at a time, equal to a batch rebuild.

    :param bars: the history (validated bars, as :func:`rltrade.data.load_bars` returns them);
        the batch build of these gives the first rows.
    :param spec: the feature spec (the run's).
    :param timeframe: the bars' timeframe (default: ``bars.attrs`` or inferred).
    :param symbol: the symbol recorded in the Dataset.
    :param tail: bars of the trailing window each new row is computed on.
    :param dataset: the batch build of ``bars`` when the caller has it already.
    """

    def __init__(self, bars: pd.DataFrame, spec: FeatureSpec | None = None, *,
                 timeframe: str | None = None, symbol: str | None = None,
                 tail: int = DEFAULT_TAIL, dataset: Dataset | None = None) -> None:
        self.spec = spec or FeatureSpec.default()
        self.timeframe = timeframe or bars.attrs.get("timeframe")
        self.symbol = symbol or bars.attrs.get("symbol")
        self.tail = int(tail)
        base = dataset if dataset is not None else build_dataset(
            bars, self.spec, timeframe=self.timeframe, symbol=self.symbol)
        self.timeframe = base.timeframe
        self._base = base
        self.extra_columns = [c for c in bars.columns if c not in OHLCV]
        self._bar_ts = _Grow(np.asarray(bars.index.as_unit("ns").asi8, dtype=np.int64))
        raw = np.empty((len(bars), 5 + len(self.extra_columns)))
        for j, col in enumerate([*OHLCV, *self.extra_columns]):
            raw[:, j] = bars[col].to_numpy(np.float64)
        self._bars = _Grow(raw)
        self._ts = _Grow(base.timestamps)
        self._ohlcv = _Grow(base.ohlcv)
        self._features = _Grow(base.features)
        self._signals = _Grow(base.signals)
        self._extras = {k: _Grow(v) for k, v in base.extras.items()}
        #: Dataset row 0 is bar ``offset`` of the bars (the batch build's warm-up)
        self.offset = base.warmup_dropped
        self.attrs = dict(bars.attrs)
        #: feature groups computed on the whole history (calibration's finding), their columns
        self.full_groups: list[str] = []
        self._full_spec: FeatureSpec | None = None
        self._full_cols: list[int] = []

    # ---------------------------------------------------------------------------- views
    def __len__(self) -> int:
        return self._ts.n

    @property
    def n_bars(self) -> int:
        """Bars held (the Dataset's rows plus the warm-up rows before them)."""
        return self._bars.n

    @property
    def dataset(self) -> Dataset:
        """Every row so far as a :class:`Dataset` (views of the buffers: valid until the next
        :meth:`append`)."""
        return replace(self._base, timestamps=self._ts.view, ohlcv=self._ohlcv.view,
                       features=self._features.view, signals=self._signals.view,
                       extras={k: g.view for k, g in self._extras.items()})

    def bars_frame(self, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
        """Bars ``[lo, hi)`` as a DataFrame in rltrade's bar layout."""
        hi = self._bars.n if hi is None else hi
        raw = self._bars.view[lo:hi]
        frame = pd.DataFrame(raw, columns=[*OHLCV, *self.extra_columns], copy=False)
        frame.index = pd.DatetimeIndex(self._bar_ts.view[lo:hi].view("datetime64[ns]"),
                                       tz="UTC", name="timestamp")
        frame.attrs.update(self.attrs)
        return frame

    # ---------------------------------------------------------------------------- growth
    def row_from_tail(self, end: int, tail: int | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                         np.ndarray]:
        """Features, signals and extras of bar ``end - 1`` computed on the ``tail`` bars before
        ``end`` (``end`` counts bars, not Dataset rows).

        :raises DataError: when the window is too short for the features' warm-up.
        """
        tail = self.tail if tail is None else int(tail)
        lo = max(0, end - tail)
        ds = build_dataset(self.bars_frame(lo, end), self.spec, timeframe=self.timeframe,
                           symbol=self.symbol, quiet=True)
        if int(ds.timestamps[-1]) != int(self._bar_ts.view[end - 1]):  # pragma: no cover
            raise DataError("incremental features: the trailing build lost the last bar")
        extras = np.array([ds.extras[k][-1] for k in self._extras])
        feats = ds.features[-1]
        if self._full_spec is not None:
            feats = feats.copy()
            feats[self._full_cols] = self._full_row(end)
        return feats, ds.signals[-1], extras

    def _full_row(self, end: int) -> np.ndarray:
        """The whole-history groups' values of bar ``end - 1`` (bars ``[0, end)``)."""
        assert self._full_spec is not None
        raw = self._bars.view[:end]
        arrays = BarArrays(
            timestamps=self._bar_ts.view[:end], open=raw[:, 0], high=raw[:, 1],
            low=raw[:, 2], close=raw[:, 3], volume=raw[:, 4],
            timeframe=parse_timeframe(self.timeframe),
            extras={c: raw[:, 5 + j] for j, c in enumerate(self.extra_columns)})
        columns, _, _ = compute_features(arrays, self._full_spec)
        names = self._base.feature_names
        return np.array([columns[names[j]][-1] for j in self._full_cols], dtype=np.float32)

    def use_full_history(self, groups: list[str]) -> None:
        """Compute the feature groups ``groups`` (spec feature names) on the whole history.

        :raises ConfigError: a name that is not a feature group of the spec.
        """
        items = [item for item in self.spec.features if item.name in groups]
        missing = sorted(set(groups) - {item.name for item in items})
        if missing:
            raise ConfigError(f"incremental features: {missing} are not features of the spec")
        self.full_groups = sorted(set(groups))
        self._full_spec = self.spec.model_copy(update={"features": items, "strategies": [],
                                                       "external": []})
        cols: list[int] = []
        names = self._base.feature_names
        for item in items:
            definition = FEATURES[item.name]
            for col in definition.norms(definition.resolve(item.params)):
                if col in names:
                    cols.append(names.index(col))
        self._full_cols = cols

    def group_of(self, column: str) -> str | None:
        """The spec feature group that produces ``column`` (``None``: a signal or external)."""
        for item in self.spec.features:
            definition = FEATURES[item.name]
            if column in definition.norms(definition.resolve(item.params)):
                return item.name
        return None

    def append(self, timestamp: int, open_: float, high: float, low: float, close: float,
               volume: float, **extras: float) -> int:
        """Add one closed bar and its Dataset row; returns the row's index.

        :param timestamp: the bar's open time, int64 UTC ns, after the last bar's.
        :param extras: the values of the bars' extra columns (``spread``...), all of them.
        :raises DataError: a bar not after the last one, or missing extra columns.
        """
        ts = int(timestamp)
        if self._bar_ts.n and ts <= int(self._bar_ts.view[-1]):
            last = pd.Timestamp(int(self._bar_ts.view[-1]), tz="UTC")
            raise DataError(f"incremental features: bar {pd.Timestamp(ts, tz='UTC')} is not "
                            f"after the last bar {last}")
        missing = [c for c in self.extra_columns if c not in extras]
        if missing:
            raise DataError(f"incremental features: the new bar lacks column(s) {missing}")
        row = [open_, high, low, close, volume, *(extras[c] for c in self.extra_columns)]
        self._bar_ts.push(ts)
        self._bars.push(np.asarray(row, dtype=np.float64))
        try:
            feats, sigs, extra_vals = self.row_from_tail(self._bars.n)
        except BaseException:
            self._bar_ts.truncate(self._bar_ts.n - 1)
            self._bars.truncate(self._bars.n - 1)
            raise
        self._ts.push(ts)
        self._ohlcv.push(np.asarray(row[:5], dtype=np.float64))
        self._features.push(feats)
        self._signals.push(sigs)
        for (_, g), v in zip(self._extras.items(), extra_vals, strict=True):
            g.push(v)
        return self._ts.n - 1

    def append_frame(self, bars: pd.DataFrame) -> list[int]:
        """:meth:`append` every row of ``bars`` (rltrade's bar layout); the rows' indices."""
        out = []
        for ts, values in zip(bars.index.as_unit("ns").asi8, bars.itertuples(index=False),
                              strict=True):
            rec = values._asdict()
            extras = {c: rec[c] for c in self.extra_columns}
            out.append(self.append(int(ts), rec["open"], rec["high"], rec["low"], rec["close"],
                                   rec["volume"], **extras))
        return out

    def calibrate(self, rows: int = 32, max_tail: int = MAX_TAIL,
                  full_after: int = FULL_AFTER) -> int:
        """Double :attr:`tail` until the last ``rows`` Dataset rows of the history, recomputed
        from trailing windows, equal their batch values bit for bit; returns the tail.

        Feature groups that still differ once the window passes ``full_after`` bars are
        computed on the whole history (:meth:`use_full_history`). With fewer history bars than
        the tail, the trailing window is the whole history and equality holds by construction.

        :raises DataError: no tail up to ``max_tail`` reproduces the batch rows (a strategy
            signal, or a feature whose whole-history value differs too).
        """
        rows = min(rows, len(self) - 1)
        initial = self.tail
        while True:
            if self.tail >= self._bars.n:
                return self.tail
            bad = self.mismatches(rows)
            if not bad:
                log.debug("incremental features: a trailing window of {} bars reproduces the "
                          "last {} rows exactly{}", self.tail, rows,
                          f" ({', '.join(self.full_groups)} on the whole history)"
                          if self.full_groups else "")
                return self.tail
            groups = {self.group_of(c) for c in bad}
            if self.tail >= full_after and None not in groups:
                new = sorted({g for g in groups if g} - set(self.full_groups))
                if new:
                    log.info("incremental features: {} carry rounding from the first bar; "
                             "computed on the whole history", ", ".join(new))
                    self.use_full_history([*self.full_groups, *new])
                    self.tail = initial  # the other groups may need far less
                    continue
            if self.tail >= max_tail:
                raise DataError(
                    f"incremental features: a trailing window of {self.tail} bars does not "
                    f"reproduce the batch values of {', '.join(bad[:5])}; a feature of the "
                    "spec has an unbounded memory"
                )
            self.tail *= 2

    def mismatches(self, rows: int) -> list[str]:
        """Columns whose values in the last ``rows`` Dataset rows, recomputed as a new bar's
        row would be (trailing window, whole-history groups), differ from the batch build's
        (``["the warm-up"]``: the window is too short for the warm-up)."""
        ds = self.dataset
        bad: list[str] = []
        for r in range(len(ds) - rows, len(ds)):
            try:
                feats, sigs, _ = self.row_from_tail(r + self.offset + 1)
            except DataError:
                return ["the warm-up"]
            for j in np.flatnonzero(~_same(feats, ds.features[r])):
                bad.append(ds.feature_names[j])
            for j in np.flatnonzero(~_same(sigs, ds.signals[r])):
                bad.append(ds.signal_names[j])
        return sorted(set(bad))


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise equality that counts NaN equal to NaN."""
    return (a == b) | (np.isnan(a) & np.isnan(b))


def extension_mismatches(extended: Dataset, batch: Dataset) -> list[str]:
    """Columns where an extended Dataset differs from a batch build on the same bars (exact
    comparison, NaN equal to NaN; rows aligned on timestamps); empty when they are equal.

    :param extended: :attr:`IncrementalDataset.dataset` after appending bars.
    :param batch: :func:`build_dataset` on the same bars.
    """
    problems: list[str] = []
    if extended.feature_names != batch.feature_names:
        problems.append("feature_names")
    if extended.signal_names != batch.signal_names:
        problems.append("signal_names")
    if problems:
        return problems
    common = np.intersect1d(extended.timestamps, batch.timestamps)
    if len(common) == 0:
        return ["no common rows"]
    a = np.searchsorted(extended.timestamps, common)
    b = np.searchsorted(batch.timestamps, common)
    if not np.array_equal(extended.ohlcv[a], batch.ohlcv[b]):
        problems.append("ohlcv")
    for j, name in enumerate(extended.feature_names):
        if not _same(extended.features[a, j], batch.features[b, j]).all():
            problems.append(name)
    for j, name in enumerate(extended.signal_names):
        if not np.array_equal(extended.signals[a, j], batch.signals[b, j]):
            problems.append(name)
    for k in extended.extras:
        if not _same(extended.extras[k][a], batch.extras[k][b]).all():
            problems.append(k)
    return problems
