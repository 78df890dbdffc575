"""The truncation test: computed on bars[:t+1], every value at t equals the full computation.

Parametrized over the registries at collection time, so every registered feature group and
strategy is in it: a new one cannot be registered without being checked. The cut points include
the first bar after the warm-up and the bars around higher-timeframe boundaries.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rltrade.data.synthetic import synthetic_market
from rltrade.features import FEATURES, STRATEGIES, BarArrays, FeatureSpec, build_dataset
from rltrade.features.dataset import compute_features, compute_signals

N = 1400
# Parameters for groups whose defaults would make the test slow or leave it trivial (the
# forecast's first model would come after ~1000 bars): small, walk-forward exercised often.
TRUNCATION_PARAMS = {
    "forecast": {"horizon": 3, "refit_every": 97, "min_train": 200, "max_train": 600,
                 "embargo": 2, "max_iter": 10, "max_leaf_nodes": 7, "min_samples_leaf": 20,
                 "extra_inputs": ["alpha_signal", "funding_rate"]},
}


@pytest.fixture(scope="module")
def bars_frame() -> pd.DataFrame:
    # 15-minute bars with open interest and funding, so every feature group applies
    df = synthetic_market("regime", N, seed=11, timeframe="15m", derivatives=True)
    # a published per-bar signal, for the `column` feature
    df["alpha_signal"] = np.random.default_rng(3).standard_normal(len(df))
    return df


@pytest.fixture(scope="module")
def bars(bars_frame) -> BarArrays:
    return BarArrays.from_frame(bars_frame)


def _cut_points(first_valid: int, n: int, rng: np.random.Generator) -> list[int]:
    points = {first_valid, first_valid + 1, first_valid + 2, n - 1, n - 2}
    points |= set(rng.integers(first_valid, n, 25).tolist())
    return sorted(p for p in points if 0 <= p < n)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


def test_every_feature_applies_to_the_test_bars(bars):
    for name, definition in FEATURES.items():
        assert definition.applicable(bars)[0], f"{name} would be skipped: test it on bars it fits"


@pytest.mark.parametrize("name", list(FEATURES))
def test_feature_truncation(name, bars):
    definition = FEATURES[name]
    params = TRUNCATION_PARAMS.get(name)
    full = definition.compute(bars, params)
    first_valid = min(
        (int(np.argmax(np.isfinite(v))) for v in full.values() if np.isfinite(v).any()),
        default=0,
    )
    for t in _cut_points(first_valid, len(bars), np.random.default_rng(hash(name) % 2**32)):
        part = definition.compute(bars.slice(0, t + 1), params)
        for col, values in full.items():
            assert _same(part[col][-1], values[t]), f"{name}.{col} differs at t={t}"
    # and the whole prefix, at one point
    t = (first_valid + len(bars)) // 2
    part = definition.compute(bars.slice(0, t + 1), params)
    for col, values in full.items():
        assert _same(part[col], values[: t + 1]), f"{name}.{col} prefix differs"


def _boundary_points(bars: BarArrays, tf_minutes: int) -> list[int]:
    """Base bars at, just before and just after the close of higher-timeframe bars."""
    minutes = (bars.timestamps // 60_000_000_000) % (24 * 60)
    closes = np.flatnonzero((minutes + 15) % tf_minutes == 0)  # last 15m bar of a higher bar
    picks = set()
    for c in closes[[0, 1, 2, len(closes) // 2, -1]]:
        picks |= {int(c) - 1, int(c), int(c) + 1}
    return sorted(p for p in picks if 0 <= p < len(bars))


@pytest.mark.parametrize("timeframe,minutes", [("15m", 15), ("1h", 60), ("4h", 240)])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_signal_truncation(name, timeframe, minutes, bars):
    spec = FeatureSpec.from_dict({"strategies": [{name: {"timeframe": timeframe}}]})
    full, _ = compute_signals(bars, spec)
    points = set(_boundary_points(bars, minutes))
    points |= set(np.random.default_rng(5).integers(50, len(bars), 15).tolist())
    for t in sorted(points):
        part, _ = compute_signals(bars.slice(0, t + 1), spec)
        assert part[-1, 0] == full[t, 0], f"{name}@{timeframe} differs at t={t}"


def test_external_series_truncation_and_shift(bars, bars_frame):
    days = pd.date_range(bars_frame.index[0].normalize() - pd.Timedelta(days=3),
                         bars_frame.index[-1].normalize(), freq="D", tz="UTC")
    vix = pd.DataFrame({"open": 20.0, "high": 21.0, "low": 19.0,
                        "close": 20.0 + np.arange(len(days)), "volume": 0.0}, index=days)
    spec = FeatureSpec.from_dict({"external": [{"name": "vix", "source": "inline"}]})
    full, _, _ = compute_features(bars, spec, {"vix": vix})
    values = full["ext_vix"]
    for t in range(0, len(bars), 37):
        part, _, _ = compute_features(bars.slice(0, t + 1), spec, {"vix": vix})
        assert _same(part["ext_vix"][-1], values[t])
    # one-day shift: every bar of day D (even the one closing at midnight) shows day D-1
    for i in (200, 201, 96 * 3 - 1, 96 * 3):
        opened = pd.Timestamp(int(bars.timestamps[i]), tz="UTC")
        assert values[i] == vix.loc[opened.normalize() - pd.Timedelta(days=1), "close"]


def test_dataset_truncation_end_to_end(bars_frame):
    """The whole default pipeline: row t of a Dataset built on bars[:t+1] equals row t of the
    Dataset built on all bars."""
    full = build_dataset(bars_frame)
    rng = np.random.default_rng(3)
    first = full.warmup_dropped
    for t in sorted({first, first + 1, N - 1, *rng.integers(first, N, 6).tolist()}):
        part = build_dataset(bars_frame.iloc[: t + 1])
        row = t - full.warmup_dropped
        assert part.timestamps[-1] == full.timestamps[row]
        np.testing.assert_array_equal(part.features[-1], full.features[row])
        np.testing.assert_array_equal(part.signals[-1], full.signals[row])
