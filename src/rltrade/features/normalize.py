"""``Normalizer``: raw feature values -> the scale a network sees, and back.

Two schemes:

``default`` (the source documents' scheme)
    each column by its declared kind: prices relative to close (``x / close - 1``), price
    differences such as MACD or ATR relative to close (``x / close``), oscillators ``x / 100``,
    volume ``log1p(x) / 20``, turbulence squashed ``tanh(x / 10)``, values already near unit
    scale (returns, ratios, one-hot) as is, and columns of unknown scale (kind ``fitted``:
    external series such as VIX, a bars column added with the ``column`` feature)
    ``(x - mean) / std`` with mean and std **fitted on the training slice only**. Without a
    ``fitted`` column nothing is fitted.
``zscore``
    ``(x - mean) / std`` for every column, fitted on the training slice only.

A column with zero spread on the training slice keeps std 1. Both schemes clip the result to
``[-clip, clip]`` (default 10). Strategy signals are one-hot and are never normalised. The fitted
normalizer is saved with a model (JSON) and reused unchanged at backtest and in paper trading;
:meth:`Normalizer.inverse_transform` gives readable values back (exact except where clipping
bit).

Every feature must reach the agent with information. :meth:`Normalizer.fit` checks the
normalised training slice (:meth:`Normalizer.check`) and warns, naming the feature, when a column
is constant (it tells the agent nothing) or clipped on more than :data:`MAX_CLIPPED_SHARE` of the
rows (VIX passed through raw was 10.0 on every bar).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from loguru import logger

from rltrade.data.store import atomic_write_json
from rltrade.errors import CompatibilityError, ConfigError
from rltrade.features.base import NORM_KINDS

__all__ = ["MAX_CLIPPED_SHARE", "Normalizer"]

log = logger.bind(component="features")

_TANH_SCALE = 10.0
_LOG_VOLUME_SCALE = 20.0
#: A normalised training column clipped on more than this share of its rows is reported.
MAX_CLIPPED_SHARE = 0.01


class Normalizer:
    """Per-column scaling of a Dataset's features (see the module docstring)."""

    def __init__(
        self,
        feature_names: list[str],
        kinds: list[str],
        scheme: Literal["default", "zscore"] = "default",
        clip: float = 10.0,
    ) -> None:
        if scheme not in ("default", "zscore"):
            raise ConfigError(f"normalization: unknown scheme {scheme!r}; use default or zscore")
        if len(feature_names) != len(kinds):
            raise ConfigError("normalization: one kind per feature name is needed")
        bad = sorted(set(kinds) - set(NORM_KINDS))
        if bad:
            raise ConfigError(f"normalization: unknown kind(s) {bad}; known: {NORM_KINDS}")
        self.feature_names = list(feature_names)
        self.kinds = list(kinds)
        self.scheme = scheme
        self.clip = float(clip)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.fitted_rows: list[int] | None = None

    @classmethod
    def for_dataset(cls, dataset: Any, clip: float = 10.0) -> Normalizer:
        """A normalizer for a Dataset's columns with its spec's scheme (not yet fitted)."""
        return cls(dataset.feature_names, dataset.feature_norms, dataset.spec.normalization, clip)

    @property
    def fitted(self) -> bool:
        """Ready to transform: nothing to fit, or fitted."""
        return self.mean is not None or (self.scheme == "default" and "fitted" not in self.kinds)

    @property
    def _fitted_columns(self) -> np.ndarray:
        """Columns scaled by a fitted mean and std."""
        if self.scheme == "zscore":
            return np.ones(len(self.kinds), dtype=bool)
        return np.array([kind == "fitted" for kind in self.kinds], dtype=bool)

    def fit(self, dataset: Any, start: int = 0, stop: int | None = None) -> Normalizer:
        """Fit on rows ``[start:stop]`` of ``dataset`` (the training slice) and check them.

        ``zscore`` fits every column, ``default`` its ``fitted`` columns (nothing when it has
        none). Then :meth:`check` warns about every column that reaches the agent constant or
        clipped on those rows. Returns ``self``.

        :param dataset: the Dataset (its features and close).
        :param start: first training row.
        :param stop: end of the training rows (exclusive); default: the last row.
        :return: ``self``.
        :raises ConfigError: with fewer than two training rows to fit on.
        """
        self._check_names(dataset.feature_names)
        columns = self._fitted_columns
        if columns.any():
            rows = dataset.features[start:stop].astype(np.float64)
            if len(rows) < 2:
                raise ConfigError("normalization: fitting needs at least two training rows")
            mean = np.zeros(len(self.kinds))
            std = np.ones(len(self.kinds))
            mean[columns] = rows[:, columns].mean(axis=0)
            spread = rows[:, columns].std(axis=0)
            std[columns] = np.where(spread > 0, spread, 1.0)
            self.mean, self.std = mean, std
            self.fitted_rows = [int(start), int(stop if stop is not None else len(dataset))]
        self.check(dataset, start, stop)
        return self

    def check(self, dataset: Any, start: int = 0, stop: int | None = None) -> dict[str, str]:
        """Warn about normalised columns that reach the agent without information.

        A column is reported when, on rows ``[start:stop]``, it is constant after normalisation
        or is clipped at ``±clip`` on more than :data:`MAX_CLIPPED_SHARE` of the rows. Each
        problem is logged as a warning naming the feature.

        :param dataset: the Dataset.
        :param start: first row checked (the training slice's).
        :param stop: end of the rows checked (exclusive).
        :return: feature name -> what is wrong with it (empty when all is well).
        """
        self._check_names(dataset.feature_names)
        scaled = self._scaled(dataset.features[start:stop], dataset.close[start:stop])
        problems: dict[str, str] = {}
        n = len(scaled)
        if n == 0:
            return problems
        clipped = np.mean(np.abs(scaled) > self.clip, axis=0)
        shown = np.clip(scaled, -self.clip, self.clip)
        constant = np.all(shown == shown[:1], axis=0)
        for j, name in enumerate(self.feature_names):
            why = []
            if clipped[j] > MAX_CLIPPED_SHARE:
                why.append(f"clipped at ±{self.clip:g} on {clipped[j]:.1%} of the {n:,} training "
                           "rows after normalisation: its scale is lost")
            if constant[j]:
                why.append(f"constant ({shown[0, j]:.6g} on all {n:,} training rows after "
                           "normalisation): it tells the agent nothing")
            if why:
                problems[name] = f"{'; '.join(why)} (normalisation kind {self.kinds[j]!r})"
        for name, problem in problems.items():
            log.warning("feature {}: {}", name, problem)
        return problems

    def transform(self, dataset: Any) -> np.ndarray:
        """Normalised features of a Dataset, float32 ``[T, F]``."""
        self._check_names(dataset.feature_names)
        return self.transform_array(dataset.features, dataset.close)

    def transform_array(self, features: np.ndarray, close: np.ndarray) -> np.ndarray:
        """Normalise raw ``features [T, F]`` given the bars' ``close [T]``."""
        out = self._scaled(features, close)
        np.clip(out, -self.clip, self.clip, out=out)
        return out.astype(np.float32)

    def _scaled(self, features: np.ndarray, close: np.ndarray) -> np.ndarray:
        """The normalised values before clipping (float64)."""
        if not self.fitted:
            raise ConfigError("normalization: a normalizer with fitted columns used before fit()")
        x = np.asarray(features, dtype=np.float64)
        if self.scheme == "zscore":
            return (x - self.mean) / self.std
        out = np.empty_like(x)
        c = np.asarray(close, dtype=np.float64)[:, None]
        for j, kind in enumerate(self.kinds):
            col = x[:, j : j + 1]
            if kind == "price":
                out[:, j : j + 1] = col / c - 1.0
            elif kind == "rel_close":
                out[:, j : j + 1] = col / c
            elif kind == "osc100":
                out[:, j : j + 1] = col / 100.0
            elif kind == "log_volume":
                out[:, j : j + 1] = np.log1p(np.maximum(col, 0.0)) / _LOG_VOLUME_SCALE
            elif kind == "tanh":
                out[:, j : j + 1] = np.tanh(col / _TANH_SCALE)
            elif kind == "fitted":
                out[:, j : j + 1] = (col - self.mean[j]) / self.std[j]  # type: ignore[index]
            else:
                out[:, j : j + 1] = col
        return out

    def inverse_transform(self, normed: np.ndarray, close: np.ndarray) -> np.ndarray:
        """Readable raw values back from normalised ones (float64)."""
        y = np.asarray(normed, dtype=np.float64)
        if self.scheme == "zscore":
            return y * self.std + self.mean
        c = np.asarray(close, dtype=np.float64)[:, None]
        out = np.empty_like(y)
        for j, kind in enumerate(self.kinds):
            col = y[:, j : j + 1]
            if kind == "price":
                out[:, j : j + 1] = (col + 1.0) * c
            elif kind == "rel_close":
                out[:, j : j + 1] = col * c
            elif kind == "osc100":
                out[:, j : j + 1] = col * 100.0
            elif kind == "log_volume":
                out[:, j : j + 1] = np.expm1(col * _LOG_VOLUME_SCALE)
            elif kind == "tanh":
                out[:, j : j + 1] = np.arctanh(np.clip(col, -1 + 1e-12, 1 - 1e-12)) * _TANH_SCALE
            elif kind == "fitted":
                out[:, j : j + 1] = col * self.std[j] + self.mean[j]  # type: ignore[index]
            else:
                out[:, j : j + 1] = col
        return out

    def _check_names(self, names: list[str]) -> None:
        if list(names) != self.feature_names:
            raise CompatibilityError(
                "normalizer was built for other features: "
                f"missing {[n for n in self.feature_names if n not in names]}, "
                f"unexpected {[n for n in names if n not in self.feature_names]}"
            )

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "rltrade-normalizer-v1",
            "scheme": self.scheme,
            "clip": self.clip,
            "feature_names": self.feature_names,
            "kinds": self.kinds,
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
            "fitted_rows": self.fitted_rows,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        if data.get("format") != "rltrade-normalizer-v1":
            raise CompatibilityError(f"unknown normalizer format {data.get('format')!r}")
        norm = cls(data["feature_names"], data["kinds"], data["scheme"], data["clip"])
        if data.get("mean") is not None:
            norm.mean = np.asarray(data["mean"], dtype=np.float64)
            norm.std = np.asarray(data["std"], dtype=np.float64)
        norm.fitted_rows = data.get("fitted_rows")
        return norm

    def save(self, path: str | Path) -> None:
        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        path = Path(path)
        if not path.exists():
            raise CompatibilityError(f"{path}: normalizer file is missing")
        return cls.from_dict(json.loads(path.read_text()))
