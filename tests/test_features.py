"""Feature spec, feature groups against naive references, Dataset and Normalizer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rltrade.data import load_bars
from rltrade.data.synthetic import synthetic_market
from rltrade.errors import CompatibilityError, ConfigError, DataError
from rltrade.features import FEATURES, BarArrays, Dataset, FeatureSpec, Normalizer, build_dataset
from rltrade.features.market import turbulence_index


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return load_bars("sample:EURUSD-1h")


@pytest.fixture(scope="module")
def dataset(eurusd) -> Dataset:
    return build_dataset(eurusd)


# -- spec ------------------------------------------------------------------------------------


def test_spec_yaml_forms_and_stable_hash(tmp_path):
    text = """
features:
  macd: {fast: 12, slow: 26, signal: 9}
  rsi: [{period: 14}, {period: 30}]
  atr: {}
strategies: [supertrend, {ott: {timeframe: 4h}}]
"""
    spec = FeatureSpec.from_yaml(text)
    assert [f.name for f in spec.features] == ["macd", "rsi", "rsi", "atr"]
    assert spec.strategies[1].timeframe == "4h"
    same = FeatureSpec.from_yaml(text.replace("atr: {}", "atr: {period: 14}"))
    assert spec.hash() == same.hash()  # defaults resolved before hashing
    path = tmp_path / "spec.yaml"
    path.write_text(spec.to_yaml())
    assert FeatureSpec.from_yaml(path).hash() == spec.hash()  # round trip


def test_spec_hash_changes_with_params_and_strategy_order():
    base = FeatureSpec.from_dict({"features": {"rsi": {"period": 14}},
                                  "strategies": ["supertrend", "ott"]})
    other_param = FeatureSpec.from_dict({"features": {"rsi": {"period": 15}},
                                         "strategies": ["supertrend", "ott"]})
    other_order = FeatureSpec.from_dict({"features": {"rsi": {"period": 14}},
                                         "strategies": ["ott", "supertrend"]})
    other_norm = FeatureSpec.from_dict({"features": {"rsi": {"period": 14}},
                                        "strategies": ["supertrend", "ott"],
                                        "normalization": "zscore"})
    hashes = {s.hash() for s in (base, other_param, other_order, other_norm)}
    assert len(hashes) == 4
    assert FeatureSpec.default().hash() == FeatureSpec.default().hash()


@pytest.mark.parametrize(
    "data,match",
    [
        ({"features": {"nope": {}}}, "unknown feature 'nope'"),
        ({"features": {"rsi": {"window": 3}}}, "unknown parameter"),
        ({"strategies": ["nope"]}, "unknown strategy 'nope'"),
        ({"normalization": "minmax"}, "normalization"),
        ({"featurez": {}}, "featurez"),
    ],
)
def test_spec_errors_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        FeatureSpec.from_dict(data)


# -- feature groups against naive references --------------------------------------------------


def naive_turbulence(x: np.ndarray, window: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for t in range(window, len(x)):
        hist = x[t - window : t]
        if not np.isfinite(hist).all() or not np.isfinite(x[t]).all():
            continue
        mu = hist.mean(axis=0)
        cov = np.cov(hist, rowvar=False)
        d = x[t] - mu
        out[t] = d @ np.linalg.solve(cov, d)
    return out


def test_turbulence_matches_naive_mahalanobis():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.01, (600, 3)) @ np.array([[1, 0.3, 0], [0, 1, 0.5], [0, 0, 1]])
    x[100] = np.nan
    ours = turbulence_index(x, 120)
    ref = naive_turbulence(x, 120)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, equal_nan=True)


def test_market_features_match_pandas(eurusd):
    bars = BarArrays.from_frame(eurusd)
    close = eurusd["close"]
    out = FEATURES["returns"].compute(bars)
    np.testing.assert_allclose(out["ret_5"], close.pct_change(5, fill_method=None), equal_nan=True)
    out = FEATURES["realized_vol"].compute(bars)
    ref = np.log(close).diff().rolling(20).std()
    np.testing.assert_allclose(out["rvol_20"], ref, rtol=1e-9, equal_nan=True)
    out = FEATURES["volume_ratio"].compute(bars)
    vol = eurusd["volume"]
    np.testing.assert_allclose(out["vol_ratio_20"], vol / vol.rolling(20).mean(), rtol=1e-12,
                               equal_nan=True)
    out = FEATURES["bbands"].compute(bars)
    mid = close.rolling(20).mean()
    sd = close.rolling(20).std(ddof=0)
    np.testing.assert_allclose(out["bb_upper"], mid + 2 * sd, rtol=1e-9, equal_nan=True)
    pctb = (close - (mid - 2 * sd)) / (4 * sd)
    np.testing.assert_allclose(out["bb_pctb"], pctb, rtol=1e-6, atol=1e-9, equal_nan=True)


def test_time_features_cyclic_and_intraday_only(eurusd):
    bars = BarArrays.from_frame(eurusd)
    out = FEATURES["time"].compute(bars)
    np.testing.assert_allclose(out["tod_sin"] ** 2 + out["tod_cos"] ** 2, 1.0)
    monday_noon = np.flatnonzero((eurusd.index.day_of_week == 0) & (eurusd.index.hour == 12))[0]
    assert out["dow_sin"][monday_noon] == pytest.approx(0.0, abs=1e-12)
    assert out["tod_cos"][monday_noon] == pytest.approx(-1.0)
    daily = BarArrays.from_frame(load_bars("sample:GOOG-1d"))
    assert not FEATURES["time"].applicable(daily)[0]


def test_regime_one_hot_tracks_true_regimes():
    frame = synthetic_market("regime", 6000, seed=2, timeframe="1h", include_truth=True)
    out = FEATURES["regime"].compute(BarArrays.from_frame(frame))
    stacked = np.column_stack([out["regime_calm"], out["regime_choppy"], out["regime_crisis"]])
    ready = np.isfinite(stacked).all(axis=1)
    assert np.all(stacked[ready].sum(axis=1) == 1.0)
    truth = frame["regime"].to_numpy()[ready]
    crisis = stacked[ready, 2] == 1
    assert truth[crisis].mean() > truth[~crisis].mean()  # flagged crisis is truly more volatile


def test_derivative_features():
    frame = synthetic_market("gbm", 500, seed=1, timeframe="1h", derivatives=True)
    bars = BarArrays.from_frame(frame)
    oi = FEATURES["open_interest"].compute(bars, {"k": 4})
    ref = frame["open_interest"].pct_change(4, fill_method=None)
    np.testing.assert_allclose(oi["oi_change_4"], ref, equal_nan=True)
    div = ref - frame["close"].pct_change(4, fill_method=None)
    np.testing.assert_allclose(oi["oi_price_div_4"], div, equal_nan=True)
    np.testing.assert_allclose(FEATURES["funding"].compute(bars)["funding_bps"],
                               frame["funding_rate"] * 1e4)


# -- dataset ----------------------------------------------------------------------------------


def test_default_dataset_on_eurusd(dataset, eurusd):
    assert dataset.features.dtype == np.float32 and dataset.signals.dtype == np.float32
    assert dataset.ohlcv.dtype == np.float64 and dataset.timestamps.dtype == np.int64
    assert len(dataset) + dataset.warmup_dropped == len(eurusd)
    assert np.isfinite(dataset.features).all()
    expected = {"macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower",
                "bb_pctb", "bb_width", "rsi_14", "rsi_30", "dx_30", "adx_30", "cci_30",
                "sma_30", "sma_60", "atr_14", "natr_14", "ret_1", "ret_5", "ret_20", "log_ret",
                "rvol_20", "vol_ratio_20", "turbulence", "regime_calm", "regime_choppy",
                "regime_crisis", "tod_sin", "tod_cos", "dow_sin", "dow_cos"}
    assert set(dataset.feature_names) == expected
    assert any("open_interest" in s for s in dataset.skipped)  # reported, not silent
    assert dataset.signals.shape[1] == 4 * 5
    np.testing.assert_array_equal(dataset.signals.reshape(len(dataset), 5, 4).sum(axis=2), 1.0)
    assert dataset.timeframe == "1h" and dataset.symbol == "EURUSD"
    # strategies finer than the base bars run on the base timeframe
    assert dataset.strategy_timeframes[1] == "1h"


def test_dataset_save_load_round_trip(dataset, tmp_path):
    dataset.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    for name in ("timestamps", "ohlcv", "features", "signals"):
        np.testing.assert_array_equal(getattr(back, name), getattr(dataset, name))
        assert getattr(back, name).dtype == getattr(dataset, name).dtype
    assert back.describe() == dataset.describe()
    assert back.spec_hash == dataset.spec_hash


def test_compatibility_check_names_each_mismatch(dataset):
    dataset.check_compatible(dataset.spec_hash, dataset.feature_names, dataset.signal_names)
    with pytest.raises(CompatibilityError) as info:
        dataset.check_compatible("0" * 64, [*dataset.feature_names[:-1], "x"],
                                 dataset.signal_names[::-1])
    msg = str(info.value)
    assert "hash" in msg and "missing ['x']" in msg and "signals differ" in msg


def test_slices_and_split(dataset):
    train, test = dataset.split(0.75)
    assert len(train) + len(test) == len(dataset)
    assert train.timestamps[-1] < test.timestamps[0]
    part = dataset.between("2017-10-01", "2017-11-01")
    assert part.index[0] >= pd.Timestamp("2017-10-01", tz="UTC")
    assert part.index[-1] < pd.Timestamp("2017-11-01", tz="UTC")


def test_not_enough_bars_is_a_clear_error():
    with pytest.raises(DataError, match="not enough"):
        build_dataset(load_bars("sample:BTCUSD-1M"))


def test_late_nan_is_an_error_not_silently_filled(eurusd):
    broken = eurusd.copy()
    broken.iloc[3000, broken.columns.get_loc("volume")] = np.nan
    spec = FeatureSpec.from_dict({"features": {"volume_ratio": {}}})
    with pytest.raises(DataError, match="vol_ratio_20"):
        build_dataset(broken, spec)


# -- normalizer -------------------------------------------------------------------------------


def test_default_normalization_scheme(dataset):
    norm = Normalizer.for_dataset(dataset)
    out = norm.transform(dataset)
    assert out.dtype == np.float32 and out.shape == dataset.features.shape
    col = dataset.feature_names.index
    close = dataset.close
    np.testing.assert_allclose(out[:, col("sma_30")], dataset.feature("sma_30") / close - 1,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out[:, col("rsi_14")], dataset.feature("rsi_14") / 100, rtol=1e-6)
    np.testing.assert_allclose(out[:, col("macd")], dataset.feature("macd") / close, rtol=1e-5,
                               atol=1e-9)
    np.testing.assert_allclose(out[:, col("turbulence")],
                               np.tanh(dataset.feature("turbulence") / 10), rtol=1e-5, atol=1e-7)
    assert np.abs(out).max() <= 10
    back = norm.inverse_transform(out, close)
    np.testing.assert_allclose(back[:, col("rsi_14")], dataset.feature("rsi_14"), rtol=1e-5)


def test_zscore_fitted_on_training_slice_only(dataset, tmp_path):
    spec = FeatureSpec.from_dict({**dataset.spec.model_dump(), "normalization": "zscore"})
    # no clipping here, so the fitted mean is exactly what the transform removes
    norm = Normalizer(dataset.feature_names, dataset.feature_norms, spec.normalization, clip=1e9)
    train, _ = dataset.split(0.75)
    norm.fit(dataset, 0, len(train))
    out = norm.transform(train)
    np.testing.assert_allclose(out.mean(axis=0)[np.std(train.features, axis=0) > 0], 0, atol=2e-3)
    # statistics must not move when the evaluation rows change
    other = Normalizer(dataset.feature_names, dataset.feature_norms, "zscore", 1e9).fit(train)
    np.testing.assert_array_equal(other.mean, norm.mean)
    norm.save(tmp_path / "norm.json")
    loaded = Normalizer.load(tmp_path / "norm.json")
    np.testing.assert_array_equal(loaded.transform(dataset), norm.transform(dataset))
    back = norm.inverse_transform(norm.transform(dataset), dataset.close)
    np.testing.assert_allclose(back, dataset.features, rtol=1e-4, atol=1e-6)


def test_normalizer_refuses_other_features(dataset):
    norm = Normalizer(dataset.feature_names[:-1], dataset.feature_norms[:-1])
    with pytest.raises(CompatibilityError, match="other features"):
        norm.transform(dataset)
    with pytest.raises(ConfigError, match="before fit"):
        Normalizer(dataset.feature_names, dataset.feature_norms, "zscore").transform(dataset)


# -- cache ------------------------------------------------------------------------------------


def test_cache_hit_and_tail_recompute_equals_full_rebuild(tmp_path):
    from rltrade.features.cache import DatasetCache

    frame = synthetic_market("regime", 9000, seed=4, timeframe="1h", derivatives=True)
    cache = DatasetCache(tmp_path / "cache")
    first = cache.get_or_build(frame.iloc[:7000])
    assert cache.last_action == "full"
    again = cache.get_or_build(frame.iloc[:7000])
    assert cache.last_action == "hit"
    np.testing.assert_array_equal(first.features, again.features)
    extended = cache.get_or_build(frame)  # 2,000 new bars appended
    assert cache.last_action == "tail" and cache.last_recomputed < 9000 - 2000
    full = build_dataset(frame)
    np.testing.assert_array_equal(extended.timestamps, full.timestamps)
    np.testing.assert_array_equal(extended.signals, full.signals)
    np.testing.assert_allclose(extended.features, full.features, rtol=1e-9, atol=1e-12)
    assert extended.fingerprint == full.fingerprint and extended.spec_hash == full.spec_hash
    # the cached prefix rows are reused untouched
    np.testing.assert_array_equal(extended.features[: len(first)], first.features)


def test_docs_example_strategy_registers_and_passes_the_contract():
    """The 'Adding a strategy' example of docs/features.md works as written."""
    import re
    from pathlib import Path

    from rltrade.features import STRATEGIES

    doc = (Path(__file__).parents[1] / "docs" / "features.md").read_text()
    section = doc.split("### Adding a strategy", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    try:
        exec(compile(code, "docs/features.md", "exec"), namespace)
        assert "momentum" in STRATEGIES
        strategy = STRATEGIES["momentum"]()
        bars = BarArrays.from_frame(synthetic_market("gbm", 400, seed=0, timeframe="1h"))
        full = strategy.compute(bars)
        for t in (5, 10, 11, 200, 399):
            assert full[t] == strategy.reference(bars.slice(0, t + 1))
            assert strategy.compute(bars.slice(0, t + 1))[-1] == full[t]
        spec = FeatureSpec.from_dict({"features": {"rsi": {}}, "strategies": ["momentum"]})
        assert build_dataset(synthetic_market("gbm", 300, seed=1), spec).signals.shape[1] == 4
    finally:
        STRATEGIES.pop("momentum", None)


@pytest.mark.parametrize(
    "features,match",
    [
        ({"rsi": {"period": 0}}, "feature 'rsi': period must be an integer >= 1"),
        ({"macd": {"fast": 30, "slow": 26}}, "fast"),
        ({"bbands": {"nbdev": -1}}, "feature 'bbands': nbdev must be a number > 0"),
        ({"returns": {"periods": [1, 1]}}, "without repeats"),
        ({"regime": {"lookback": 3}}, "feature 'regime': lookback must be an integer >= 10"),
        ({"turbulence": {"window": 2.5}}, "feature 'turbulence': window must be an integer"),
        ({"open_interest": {"k": True}}, "feature 'open_interest': k must be an integer"),
    ],
)
def test_bad_feature_parameters_name_the_feature_and_key(features, match):
    bars = synthetic_market("gbm", 300, seed=0, derivatives=True)
    with pytest.raises(ConfigError, match=match):
        build_dataset(bars, FeatureSpec.from_dict({"features": features}))


# -- every feature reaches the agent with information -----------------------------------------


def _vix_like(index: pd.DatetimeIndex) -> pd.DataFrame:
    """A daily VIX-like level between 10 and 80 over the days of ``index`` (and a week before)."""
    days = pd.date_range(index[0].normalize() - pd.Timedelta(days=7), index[-1].normalize(),
                         freq="D", tz="UTC")
    rng = np.random.default_rng(11)
    level = 10 + 70 * (0.5 + 0.5 * np.sin(np.arange(len(days)) / 25.0))
    close = np.clip(level + rng.normal(0, 2, len(days)), 10, 80)
    return pd.DataFrame({"close": close}, index=days)


@pytest.fixture
def warnings_logged():
    """The warnings rltrade logs while the test runs, as (component, message)."""
    from loguru import logger

    seen: list[tuple[str, str]] = []
    handler = logger.add(lambda m: seen.append((m.record["extra"].get("component", ""),
                                                m.record["message"])), level="WARNING")
    logger.enable("rltrade")
    yield seen
    logger.disable("rltrade")
    logger.remove(handler)


def test_an_external_series_reaches_the_agent_with_its_variance(eurusd, warnings_logged):
    from rltrade.envs import EnvConfig, TradingEnv

    spec = FeatureSpec.from_dict({"features": {"rsi": {"period": 14}},
                                  "external": [{"name": "vix", "source": "inline"}]})
    ds = build_dataset(eurusd, spec, external_frames={"vix": _vix_like(eurusd.index)})
    j = ds.feature_names.index("ext_vix")
    raw = ds.features[:, j].astype(np.float64)
    assert raw.min() >= 10 and raw.max() <= 80 and raw.std() > 5
    assert ds.feature_norms[j] == "fitted"
    norm = Normalizer.for_dataset(ds)
    assert not norm.fitted  # the scale of VIX is learnt from the training rows, not assumed
    with pytest.raises(ConfigError, match="fitted"):
        TradingEnv(ds, EnvConfig())
    train = len(ds) * 3 // 4
    norm.fit(ds, 0, train)
    assert norm.mean[j] == pytest.approx(raw[:train].mean())  # training rows only
    assert norm.std[j] == pytest.approx(raw[:train].std())
    env = TradingEnv(ds, EnvConfig(), normalizer=norm)
    seen = env.core.market[:, j].astype(np.float64)  # what the agent observes
    assert seen.std() > 0.5
    assert np.mean(np.abs(seen) >= EnvConfig().obs_clip) < 0.01  # not flattened at the clip
    assert np.corrcoef(seen, raw)[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert not [m for _, m in warnings_logged if "ext_vix" in m]
    back = norm.inverse_transform(norm.transform(ds), ds.close)[:, j]
    np.testing.assert_allclose(back, raw, rtol=1e-5)
    loaded = Normalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(loaded.transform(ds), norm.transform(ds))


def _bars_with_bad_columns(eurusd: pd.DataFrame) -> pd.DataFrame:
    bars = eurusd.copy()
    bars["flat_signal"] = 3.0  # the same value on every bar
    # about ±50 bps: far beyond the ±10 clip when passed through as is
    bars["funding_rate"] = np.random.default_rng(5).normal(0.0, 0.005, len(bars))
    bars.attrs = dict(eurusd.attrs)
    return bars


def test_fit_warns_naming_constant_and_clipped_features(eurusd, warnings_logged):
    spec = FeatureSpec.from_dict({"features": [{"name": "rsi"}, {"name": "funding"},
                                               {"name": "column",
                                                "params": {"name": "flat_signal"}}]})
    ds = build_dataset(_bars_with_bad_columns(eurusd), spec)
    norm = Normalizer.for_dataset(ds)
    norm.fit(ds, 0, len(ds) // 2)
    problems = norm.check(ds, 0, len(ds) // 2)
    assert set(problems) == {"col_flat_signal", "funding_bps"}
    assert "constant" in problems["col_flat_signal"]
    assert "clipped at ±10 on 8" in problems["funding_bps"]  # 84 % of the rows
    assert "constant" not in problems["funding_bps"]
    messages = [m for component, m in warnings_logged if component == "features"]
    assert any(m.startswith("feature col_flat_signal: constant") for m in messages)
    assert any(m.startswith("feature funding_bps: clipped") for m in messages)
    assert not [m for m in messages if "rsi_14" in m]


def test_training_checks_the_normalised_training_slice(eurusd, tmp_path, warnings_logged):
    from rltrade.agents.training import prepare_data
    from rltrade.config import RunConfig

    path = tmp_path / "bars.parquet"
    _bars_with_bad_columns(eurusd).to_parquet(path)
    config = RunConfig.from_dict({
        "data": {"source": str(path)},
        "features": {"features": [{"name": "rsi"},
                                  {"name": "column", "params": {"name": "flat_signal"}}],
                     "strategies": []},
    })
    prepare_data(config)
    assert any(m.startswith("feature col_flat_signal: constant") for _, m in warnings_logged)
