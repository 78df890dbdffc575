"""The ``Dataset`` every env and backtest reads, and ``build_dataset`` that makes it.

A Dataset is aligned numpy arrays plus what they mean:

* ``timestamps`` int64 ``[T]``: bar open times, UTC nanoseconds;
* ``ohlcv`` float64 ``[T, 5]``;
* ``features`` float32 ``[T, F]`` (raw values; see :class:`rltrade.features.Normalizer`) with
  ``feature_names`` and ``feature_norms`` (normalisation kind per column);
* ``signals`` float32 ``[T, 4 * S]``: strategy signals one-hot (FLAT, LONG, SHORT, HOLD) per
  strategy, in spec order, with ``signal_names``;
* ``extras`` float64 columns the engine may need (``spread``, ``funding_rate``...);
* the spec, its hash, the fingerprint of the input bars, the timeframe and symbol, and
  ``warmup_dropped``: how many leading bars were dropped because a feature was still warming up.

Row ``t`` holds only what was known at the close of bar ``t``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from rltrade.data.parsing import OHLCV
from rltrade.data.resample import align_higher, resample
from rltrade.data.store import atomic_write_bytes, atomic_write_json, fingerprint_bars
from rltrade.data.timeframes import parse_timeframe
from rltrade.errors import CompatibilityError, ConfigError, DataError
from rltrade.features.base import FEATURES, BarArrays
from rltrade.features.market import external_series
from rltrade.features.spec import FeatureSpec
from rltrade.features.strategies import HOLD, SIGNAL_NAMES, make_strategy

log = logger.bind(component="features")
_ARRAYS = ("timestamps", "ohlcv", "features", "signals")


@dataclass
class Dataset:
    """Aligned arrays of bars, features and strategy signals (see the module docstring)."""

    timestamps: np.ndarray
    ohlcv: np.ndarray
    features: np.ndarray
    feature_names: list[str]
    feature_norms: list[str]
    signals: np.ndarray
    signal_names: list[str]
    spec: FeatureSpec
    spec_hash: str
    fingerprint: str
    timeframe: str
    symbol: str | None = None
    warmup_dropped: int = 0
    strategy_timeframes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    #: the market calendar of the bars (``XNYS-RTH``...; see :mod:`rltrade.data.calendars`)
    calendar: str | None = None

    # -- views ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def close(self) -> np.ndarray:
        return self.ohlcv[:, 3]

    @property
    def index(self) -> pd.DatetimeIndex:
        idx = pd.DatetimeIndex(self.timestamps.astype("datetime64[ns]"), tz="UTC")
        idx.name = "timestamp"
        return idx

    @property
    def strategy_names(self) -> list[str]:
        return self.spec.strategy_order

    def feature(self, name: str) -> np.ndarray:
        try:
            return self.features[:, self.feature_names.index(name)]
        except ValueError:
            raise KeyError(f"no feature {name!r}; have {self.feature_names}") from None

    def slice(self, start: int | None = None, stop: int | None = None) -> Dataset:
        """Rows ``[start:stop]`` by position (views)."""
        sl = slice(start, stop)
        return self.with_rows(lambda a: a[sl])

    def with_rows(self, rows: Callable[[np.ndarray], np.ndarray], **changes: Any) -> Dataset:
        """A Dataset with ``rows(array)`` applied to every row-aligned array (timestamps, OHLCV,
        features, signals, extras); metadata copied, ``changes`` overriding it."""
        return replace(
            self,
            **{name: rows(getattr(self, name)) for name in _ARRAYS},
            extras={k: rows(v) for k, v in self.extras.items()},
            **changes,
        )

    def append(self, other: Dataset, **changes: Any) -> Dataset:
        """The rows of ``self`` followed by those of ``other`` (same columns, later bars)."""
        return replace(
            self,
            **{name: np.concatenate([getattr(self, name), getattr(other, name)])
               for name in _ARRAYS},
            extras={k: np.concatenate([v, other.extras[k]]) for k, v in self.extras.items()},
            **changes,
        )

    def between(self, start: str | pd.Timestamp | None, end: str | pd.Timestamp | None) -> Dataset:
        """Rows whose open time is in ``[start, end)`` (UTC unless zoned)."""
        from rltrade.data.timeframes import to_utc

        lo = 0 if start is None else int(np.searchsorted(self.timestamps, to_utc(start).value))
        hi = len(self) if end is None else int(np.searchsorted(self.timestamps, to_utc(end).value))
        return self.slice(lo, hi)

    def split(self, train_share: float = 0.75) -> tuple[Dataset, Dataset]:
        """Split by time: the first ``train_share`` of rows, and the rest."""
        if not 0 < train_share < 1:
            raise ConfigError(f"train_share must be in (0, 1), got {train_share}")
        cut = round(len(self) * train_share)
        return self.slice(0, cut), self.slice(cut, None)

    def to_frame(self) -> pd.DataFrame:
        """Everything as one DataFrame (for inspection; envs read the arrays)."""
        data: dict[str, Any] = {c: self.ohlcv[:, i] for i, c in enumerate(OHLCV)}
        data |= {n: self.features[:, i] for i, n in enumerate(self.feature_names)}
        data |= {n: self.signals[:, i] for i, n in enumerate(self.signal_names)}
        data |= self.extras
        return pd.DataFrame(data, index=self.index)

    # -- compatibility ----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """JSON-ready metadata (no arrays)."""
        return {
            "format": "rltrade-dataset-v1",
            "spec": self.spec.model_dump(),
            "spec_hash": self.spec_hash,
            "fingerprint": self.fingerprint,
            "timeframe": self.timeframe,
            "symbol": self.symbol,
            "calendar": self.calendar,
            "rows": len(self),
            "start": str(self.index[0]) if len(self) else None,
            "end": str(self.index[-1]) if len(self) else None,
            "warmup_dropped": self.warmup_dropped,
            "feature_names": self.feature_names,
            "feature_norms": self.feature_norms,
            "signal_names": self.signal_names,
            "strategy_order": self.strategy_names,
            "strategy_timeframes": self.strategy_timeframes,
            "skipped": self.skipped,
            "extras": sorted(self.extras),
        }

    def check_compatible(
        self,
        spec_hash: str,
        feature_names: list[str] | None = None,
        signal_names: list[str] | None = None,
    ) -> None:
        """Raise :class:`CompatibilityError` naming every mismatch with what a model expects."""
        problems = []
        if spec_hash != self.spec_hash:
            problems.append(f"feature spec hash {self.spec_hash[:12]} != expected {spec_hash[:12]}")
        if feature_names is not None and feature_names != self.feature_names:
            missing = [n for n in feature_names if n not in self.feature_names]
            extra = [n for n in self.feature_names if n not in feature_names]
            detail = (
                f"missing {missing}, unexpected {extra}" if missing or extra else "order differs"
            )
            problems.append(f"features differ: {detail}")
        if signal_names is not None and signal_names != self.signal_names:
            problems.append(f"strategy signals differ: {self.signal_names} vs {signal_names}")
        if problems:
            raise CompatibilityError("dataset does not match the model: " + "; ".join(problems))

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``arrays.npz`` and ``dataset.json`` into ``directory`` (atomically)."""
        import io

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        arrays |= {f"extra__{k}": v for k, v in self.extras.items()}
        np.savez(buffer, **arrays)
        atomic_write_bytes(folder / "arrays.npz", buffer.getvalue())
        atomic_write_json(folder / "dataset.json", self.describe())
        return folder

    @classmethod
    def load(cls, directory: str | Path) -> Dataset:
        """Read a Dataset written by :meth:`save` (no pickle is ever loaded)."""
        folder = Path(directory)
        meta_path = folder / "dataset.json"
        if not meta_path.exists():
            raise DataError(f"{folder}: not a dataset folder (no dataset.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != "rltrade-dataset-v1":
            raise DataError(f"{folder}: unknown dataset format {meta.get('format')!r}")
        with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        spec = FeatureSpec.from_dict(meta["spec"])
        if spec.hash() != meta["spec_hash"]:
            raise CompatibilityError(
                f"{folder}: the stored spec hashes to {spec.hash()[:12]}, not the recorded "
                f"{meta['spec_hash'][:12]} (feature definitions changed since it was built)"
            )
        return cls(
            timestamps=arrays["timestamps"],
            ohlcv=arrays["ohlcv"],
            features=arrays["features"],
            feature_names=meta["feature_names"],
            feature_norms=meta["feature_norms"],
            signals=arrays["signals"],
            signal_names=meta["signal_names"],
            spec=spec,
            spec_hash=meta["spec_hash"],
            fingerprint=meta["fingerprint"],
            timeframe=meta["timeframe"],
            symbol=meta["symbol"],
            calendar=meta.get("calendar"),
            warmup_dropped=meta["warmup_dropped"],
            strategy_timeframes=meta["strategy_timeframes"],
            skipped=meta["skipped"],
            extras={
                k.removeprefix("extra__"): v for k, v in arrays.items() if k.startswith("extra__")
            },
        )


# ------------------------------------------------------------------------------------------


def compute_features(
    bars: BarArrays,
    spec: FeatureSpec,
    external_frames: dict[str, pd.DataFrame] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """All feature columns of a spec on these bars (no warm-up dropped).

    Returns columns, their normalisation kinds, and the groups skipped (with the reason).
    """
    columns: dict[str, np.ndarray] = {}
    norms: dict[str, str] = {}
    skipped: list[str] = []
    for item in spec.features:
        definition = FEATURES[item.name]
        ok, why = definition.applicable(bars)
        if not ok:
            skipped.append(why)
            continue
        params = definition.resolve(item.params)
        out = definition.compute(bars, params)
        for name, kind in definition.norms(params).items():
            if name in columns:
                raise ConfigError(f"feature spec: column {name!r} is produced twice")
            columns[name] = out[name]
            norms[name] = kind
    for ext in spec.external:
        frame = (external_frames or {}).get(ext.name)
        out = external_series(bars, ext.name, ext.source, ext.column, ext.shift, frame=frame)
        for name, values in out.items():
            columns[name] = values
            norms[name] = "fitted"  # a level of unknown scale (VIX 10..80): fitted on training
    return columns, norms, skipped


def compute_signals(bars: BarArrays, spec: FeatureSpec) -> tuple[np.ndarray, list[str]]:
    """Strategy signal codes ``[T, S]`` on the base bars, their names and effective timeframes.

    Each strategy runs on its own timeframe (resampled from the base bars; the base timeframe
    when the strategy's is finer) and its signal reaches the base bars only once its bar closed.
    Base bars before the first closed strategy bar get HOLD.
    """
    codes = np.full((len(bars), len(spec.strategies)), HOLD, dtype=np.int8)
    timeframes: list[str] = []
    frame: pd.DataFrame | None = None
    for j, item in enumerate(spec.strategies):
        strategy = make_strategy(item.name, item.timeframe, **item.params)
        tf = parse_timeframe(strategy.run_timeframe or bars.timeframe)
        if tf.seconds <= bars.timeframe.seconds:
            if tf != bars.timeframe:
                log.debug("{} asks for {}; running on the base {}", item.name, tf, bars.timeframe)
            tf = bars.timeframe
            codes[:, j] = strategy.compute(bars)
        else:
            if frame is None:
                frame = bars.to_frame()
            higher = BarArrays.from_frame(resample(frame, tf, base_timeframe=bars.timeframe), tf)
            higher_codes = strategy.compute(higher)
            pos = align_higher(bars.timestamps, bars.timeframe, higher.timestamps, tf)
            ok = pos >= 0
            codes[ok, j] = higher_codes[pos[ok]]
        timeframes.append(tf.name)
    return codes, timeframes


def build_dataset(
    bars: pd.DataFrame | str,
    spec: FeatureSpec | None = None,
    *,
    timeframe: str | None = None,
    symbol: str | None = None,
    external_frames: dict[str, pd.DataFrame] | None = None,
    quiet: bool = False,
) -> Dataset:
    """Validated bars -> :class:`Dataset` (features, strategy signals, metadata).

    :param bars: bars from :func:`rltrade.data.load_bars`, or any source string it accepts.
    :param spec: the feature spec; ``None`` means :meth:`FeatureSpec.default`.
    :param timeframe: the bars' timeframe when ``bars.attrs`` lacks it and it cannot be inferred.
    :param external_frames: already-loaded external series by name (else read from their source).
    :param quiet: log the build at DEBUG instead of INFO (a live feed rebuilds its trailing
        window on every bar).
    :returns: the Dataset, with leading warm-up rows dropped (their count in ``warmup_dropped``).
    """
    from rltrade.data import load_bars

    if isinstance(bars, str):
        bars = load_bars(bars)
    spec = spec or FeatureSpec.default()
    arrays = BarArrays.from_frame(bars, timeframe)
    spec_hash = spec.hash()
    fingerprint = fingerprint_bars(bars)
    columns, norms, skipped = compute_features(arrays, spec, external_frames)
    codes, strategy_tfs = compute_signals(arrays, spec)
    for reason in skipped:
        log.log("DEBUG" if quiet else "INFO", "feature skipped: {}", reason)

    names = list(columns)
    t_len = len(arrays)
    features = np.empty((t_len, len(names)), dtype=np.float32)  # filled in place: no stacking
    row_ok = np.ones(t_len, dtype=bool)
    for j, name in enumerate(names):
        features[:, j] = columns[name]
        row_ok &= np.isfinite(columns[name])
    bad_rows = np.flatnonzero(~row_ok)
    warmup = int(np.argmax(row_ok)) if row_ok.any() else t_len
    if len(bad_rows):
        # Any incomplete row after the first complete one is a data problem, not warm-up.
        late = bad_rows[bad_rows >= warmup]
        if len(late):
            cols = sorted(n for n in names if not np.isfinite(columns[n][late]).all())
            when = pd.DatetimeIndex(arrays.timestamps[late[:3]].astype("datetime64[ns]"), tz="UTC")
            raise DataError(
                f"features {cols} are NaN/inf after their warm-up (first at "
                f"{', '.join(map(str, when))}): repair the bars or drop these features"
            )
    if warmup >= t_len:
        raise DataError(
            f"{t_len} bars are not enough: the features' warm-up needs more "
            f"(no row has every feature yet); load more history"
        )
    signal_names = [
        f"{item.name}@{tf}_{label}"
        for item, tf in zip(spec.strategies, strategy_tfs, strict=True)
        for label in SIGNAL_NAMES
    ]
    signals = np.zeros((t_len, 4 * codes.shape[1]), dtype=np.float32)
    rows = np.arange(t_len)
    for j in range(codes.shape[1]):
        signals[rows, 4 * j + codes[:, j]] = 1.0
    ohlcv = np.empty((t_len, 5))
    for j, col in enumerate(("open", "high", "low", "close", "volume")):
        ohlcv[:, j] = getattr(arrays, col)
    keep = slice(warmup, None)
    dataset = Dataset(
        timestamps=arrays.timestamps[keep],
        ohlcv=ohlcv[keep],
        features=features[keep],
        feature_names=names,
        feature_norms=[norms[n] for n in names],
        signals=signals[keep],
        signal_names=signal_names,
        spec=spec,
        spec_hash=spec_hash,
        fingerprint=fingerprint,
        timeframe=arrays.timeframe.name,
        symbol=symbol or bars.attrs.get("symbol"),
        calendar=bars.attrs.get("calendar"),
        warmup_dropped=warmup,
        strategy_timeframes=strategy_tfs,
        skipped=skipped,
        extras={k: v[keep] for k, v in arrays.extras.items()},
    )
    log.log(
        "DEBUG" if quiet else "INFO",
        "dataset: {} rows x {} features + {} signal columns; {} warm-up rows dropped",
        len(dataset),
        len(names),
        len(signal_names),
        warmup,
    )
    return dataset
