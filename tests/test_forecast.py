"""The ``forecast`` feature group: walk-forward forecaster, purging, skill, calibration output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rltrade.data.synthetic import synthetic_market
from rltrade.errors import ConfigError
from rltrade.features import FEATURES, BarArrays, FeatureSpec, build_dataset
from rltrade.features.forecast import (
    BASE_INPUTS,
    COLUMNS,
    forecast_diagnostics,
    forecast_inputs,
    walk_forward_forecast,
)

FAST = {"refit_every": 400, "min_train": 600, "max_train": 3000, "max_iter": 30,
        "max_leaf_nodes": 7, "min_samples_leaf": 40}


def _bars(kind: str, n: int, seed: int = 7) -> BarArrays:
    return BarArrays.from_frame(synthetic_market(kind, n, seed=seed, timeframe="1h"))


def _oos_accuracy(res) -> tuple[float, int]:
    sel = (res.model_index >= 0) & (res.labels >= 0)
    hits = np.argmax(res.proba[sel], axis=1) == res.labels[sel]
    return float(hits.mean()), int(sel.sum())


def test_registered_with_three_columns_and_documented_defaults():
    definition = FEATURES["forecast"]
    assert list(definition.norms(definition.defaults)) == list(COLUMNS)
    spec = FeatureSpec.from_dict({"features": {"forecast": {"horizon": 2}}})
    assert spec.resolved()["features"][0]["params"]["horizon"] == 2
    with pytest.raises(ConfigError, match="horizonn"):
        FeatureSpec.from_dict({"features": {"forecast": {"horizonn": 2}}})


def test_planted_alpha_is_learned_out_of_sample():
    """Horizon 1 on a planted market: alpha_signal predicts the next bar, so the walk-forward
    (always out-of-sample) accuracy beats the best constant guess clearly."""
    res = walk_forward_forecast(_bars("planted", 4000), FAST | {"horizon": 1})
    assert "alpha_signal" in res.input_names
    acc, n = _oos_accuracy(res)
    sel = (res.model_index >= 0) & (res.labels >= 0)
    base_rate = np.bincount(res.labels[sel], minlength=3).max() / n
    assert n > 3000
    assert acc > base_rate + 0.04, (acc, base_rate)
    # the signal points the right way: realised forward returns follow it
    fwd = res.forward_returns[sel]
    sig = res.signal[sel]
    assert fwd[sig > 0].mean() > 0 > fwd[sig < 0].mean()


def test_no_skill_on_a_martingale():
    res = walk_forward_forecast(_bars("gbm", 4000), FAST | {"horizon": 1})
    assert res.input_names == list(BASE_INPUTS)  # gbm publishes no alpha_signal
    acc, n = _oos_accuracy(res)
    sel = (res.model_index >= 0) & (res.labels >= 0)
    base_rate = np.bincount(res.labels[sel], minlength=3).max() / n
    # chance: no better than always guessing the most frequent class (3 sigma of a binomial)
    assert acc < base_rate + 3 * np.sqrt(0.25 / n), (acc, base_rate)


def test_purge_the_model_at_t_never_saw_a_label_ending_at_or_after_t():
    params = FAST | {"horizon": 5, "embargo": 3, "refit_every": 250}
    bars = _bars("regime", 2500)
    res = walk_forward_forecast(bars, params, keep_models=True)
    assert len(res.refits) >= 5
    for t in np.flatnonzero(res.model_index >= 0):
        refit = res.refits[res.model_index[t]]
        assert refit["bar"] <= t
        # the last training label ends at last_sample + horizon, embargo bars before the refit
        assert refit["last_sample"] + 5 <= refit["bar"] - 1 - 3
        assert refit["last_sample"] + 5 < t
    # behaviourally: rewriting every price from a refit bar on leaves that model unchanged
    j = 2
    r = res.refits[j]["bar"]
    frame = bars.to_frame()
    frame.iloc[r:, :4] *= np.exp(np.linspace(0.0, 0.5, len(frame) - r))[:, None]
    other = walk_forward_forecast(BarArrays.from_frame(frame), params, keep_models=True)
    assert other.refits[j] == res.refits[j]
    x, _ = forecast_inputs(bars, params.get("vol_window", 50), ["alpha_signal"])
    probe = x[np.isfinite(x).all(axis=1)][:500]
    np.testing.assert_array_equal(res.models[j].predict_proba(probe),
                                  other.models[j].predict_proba(probe))
    # while the next model, fitted after those labels ended, does see them
    assert not np.array_equal(res.models[j + 1].predict_proba(probe),
                              other.models[j + 1].predict_proba(probe))


def test_truncation_at_refit_boundaries():
    params = FAST | {"horizon": 3, "embargo": 1, "refit_every": 150, "min_train": 300}
    bars = _bars("regime", 1200)
    full = FEATURES["forecast"].compute(bars, params)
    res = walk_forward_forecast(bars, params)
    points = {res.refits[0]["bar"] - 1}
    for refit in res.refits[:3]:
        points |= {refit["bar"] - 1, refit["bar"], refit["bar"] + 1}
    for t in sorted(points):
        part = FEATURES["forecast"].compute(bars.slice(0, t + 1), params)
        for col in COLUMNS:
            assert part[col][-1] == full[col][t], (col, t)


def test_outputs_before_the_first_model_and_their_ranges():
    params = FAST | {"horizon": 2}
    res = walk_forward_forecast(_bars("regime", 1500), params)
    first = res.refits[0]["bar"]
    assert np.all(res.signal[:first] == 0)
    assert np.all(res.confidence[:first] == 1 / 3)
    assert np.all(res.target[:first] == 0)
    assert np.all(res.model_index[first:] >= 0)
    assert set(np.unique(res.signal[first:])) <= {-1.0, 0.0, 1.0}
    assert np.all((res.confidence[first:] >= 1 / 3 - 1e-12) & (res.confidence[first:] <= 1))
    np.testing.assert_allclose(res.proba.sum(axis=1), 1.0)
    lo = min(min(r["class_means"]) for r in res.refits)
    hi = max(max(r["class_means"]) for r in res.refits)
    assert np.all((res.target >= lo - 1e-12) & (res.target <= hi + 1e-12))


def test_deterministic_and_in_a_dataset():
    bars = synthetic_market("planted", 1500, seed=2, timeframe="1h")
    spec = FeatureSpec.from_dict({"features": {"returns": {"periods": [1]},
                                               "forecast": FAST | {"horizon": 1}}})
    a = build_dataset(bars, spec)
    b = build_dataset(bars, spec)
    np.testing.assert_array_equal(a.features, b.features)
    assert a.feature_names[-3:] == list(COLUMNS)
    assert a.feature_norms[-3:] == ["none"] * 3


def test_parameters_checked():
    bars = _bars("gbm", 300)
    for bad, match in (({"horizon": 0}, "horizon"), ({"threshold_mode": "pct"}, "threshold_mode"),
                       ({"min_train": 500, "max_train": 100}, "max_train"),
                       ({"learning_rate": 0}, "learning_rate"),
                       ({"extra_inputs": "alpha_signal"}, "extra_inputs")):
        with pytest.raises(ConfigError, match=match):
            FEATURES["forecast"].compute(bars, bad)


def test_diagnostics_json_ready():
    frame = synthetic_market("planted", 3000, seed=5, timeframe="1h")
    diag = forecast_diagnostics(frame, FAST | {"horizon": 1}, bins=5)
    text = json.dumps(diag, allow_nan=False)
    assert json.loads(text) == diag
    assert diag["n_predictions"] > 2000 and diag["n_refits"] >= 5
    assert 0 <= diag["brier"] < diag["brier_uniform"]
    assert diag["brier"] < diag["brier_climatology"]  # the planted alpha is worth something
    for curve in diag["reliability"].values():
        assert len(curve) == 5
        assert sum(b["count"] for b in curve) == diag["n_predictions"]
    top = diag["reliability"]["top_label"]
    assert all(b["count"] == 0 for b in top[:1])  # the top class has probability >= 1/3
    # a Dataset works too, with the parameters of its spec
    spec = FeatureSpec.from_dict({"features": {"forecast": FAST | {"horizon": 1}}})
    ds = build_dataset(frame, spec)
    diag_ds = forecast_diagnostics(ds)
    assert diag_ds["params"]["horizon"] == 1
    json.dumps(diag_ds, allow_nan=False)
