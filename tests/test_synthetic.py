"""synthetic_market: layout, determinism, prefix stability, and each kind's planted property."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rltrade.data import load_bars, parse_timeframe, validate_bars
from rltrade.data.synthetic import KINDS, PARAM_DEFAULTS, oracle_positions, synthetic_market
from rltrade.data.timeframes import SECONDS_PER_YEAR, as_ns
from rltrade.errors import DataError

OHLCV = ["open", "high", "low", "close", "volume"]


def log_returns(df: pd.DataFrame) -> np.ndarray:
    """Close-to-close log returns (bar t-1 close to bar t close)."""
    return np.diff(np.log(df["close"].to_numpy()))


def body_returns(df: pd.DataFrame) -> np.ndarray:
    """Open-to-close log return of every bar."""
    return np.log(df["close"].to_numpy() / df["open"].to_numpy())


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module", params=KINDS)
def market(request) -> pd.DataFrame:
    return synthetic_market(request.param, 3000, 5, derivatives=True, include_truth=True)


# --- layout ---------------------------------------------------------------------------------


def test_kinds_exported():
    assert KINDS == ("gbm", "regime", "ou", "planted")
    assert set(PARAM_DEFAULTS) == set(KINDS)


def test_layout(market):
    kind = market.attrs["kind"]
    idx = market.index
    assert isinstance(idx, pd.DatetimeIndex)
    assert idx.name == "timestamp"
    assert str(idx.tz) == "UTC"
    assert str(idx.dtype) == "datetime64[ns, UTC]"
    assert idx[0] == pd.Timestamp("2020-01-01", tz="UTC")
    assert np.all(np.diff(as_ns(idx)) == parse_timeframe("1h").nanos)
    assert list(market.columns[:5]) == OHLCV
    assert all(market[c].dtype == np.float64 for c in market.columns)
    assert market.attrs == {
        "timeframe": "1h", "kind": kind, "seed": 5, "source": f"synthetic:{kind}",
    }
    extras = {"open_interest", "funding_rate"}
    extras |= {"alpha_signal"} if kind == "planted" else set()
    extras |= {"regime"} if kind == "regime" else set()
    assert set(market.columns[5:]) == extras


def test_prices_envelope_and_volume(market):
    values = market.to_numpy()
    assert np.all(np.isfinite(values))
    o, h, lo, c, v = (market[k].to_numpy() for k in OHLCV)
    assert np.all(lo > 0)
    assert np.all(h >= np.maximum(o, c))
    assert np.all(lo <= np.minimum(o, c))
    assert np.all(v > 0)
    # Wicks exist (not always zero) and opens sit near the previous close.
    assert np.mean(h > np.maximum(o, c)) > 0.9
    assert np.median(np.abs(np.log(o[1:] / c[:-1]))) < np.median(np.abs(np.log(c / o)))


def test_strict_validation_passes(market):
    report = validate_bars(market, policy="strict")
    assert report.errors == []
    assert report.rows_out == len(market)
    assert report.timeframe == "1h"


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic(kind):
    a = synthetic_market(kind, 800, 11, derivatives=True, include_truth=True)
    b = synthetic_market(kind, 800, 11, derivatives=True, include_truth=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    c = synthetic_market(kind, 800, 12, derivatives=True, include_truth=True)
    assert not np.array_equal(a["close"].to_numpy(), c["close"].to_numpy())
    assert not np.array_equal(a["volume"].to_numpy(), c["volume"].to_numpy())


def test_no_global_rng_state():
    np.random.seed(1)  # noqa: NPY002 - the point is that the global state does not matter
    a = synthetic_market("regime", 500, 3)
    np.random.seed(2)  # noqa: NPY002
    np.random.standard_normal(10)  # noqa: NPY002
    b = synthetic_market("regime", 500, 3)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize("tf", ["1m", "15m", "4h", "1d", "3d", "1w"])
def test_fixed_timeframes_spacing(tf):
    df = synthetic_market("gbm", 50, timeframe=tf, start="2021-03-03 05:07")
    t = parse_timeframe(tf)
    ns = as_ns(df.index)
    assert np.all(np.diff(ns) == t.nanos)
    assert df.index[0] >= pd.Timestamp("2021-03-03 05:07", tz="UTC")
    pd.testing.assert_index_equal(t.floor(df.index).as_unit("ns"), df.index, check_names=False)
    assert df.attrs["timeframe"] == t.name
    if tf == "1w":
        assert set(df.index.day_of_week) == {0}
    assert validate_bars(df, tf, policy="strict").errors == []


def test_monthly_bars_open_on_month_starts():
    df = synthetic_market("ou", 30, timeframe="1M", start="2020-01-15")
    assert str(df.index.dtype) == "datetime64[ns, UTC]"
    assert df.index[0] == pd.Timestamp("2020-02-01", tz="UTC")
    assert set(df.index.day) == {1}
    assert set(df.index.hour) == {0}
    months = df.index.year * 12 + df.index.month
    assert np.all(np.diff(months) == 1)
    assert validate_bars(df, "1M", policy="strict").errors == []


def test_per_bar_vol_scales_with_timeframe():
    for tf in ("1h", "1d"):
        df = synthetic_market("gbm", 20_000, 1, tf, annual_vol=0.4)
        expected = 0.4 * math.sqrt(parse_timeframe(tf).seconds / SECONDS_PER_YEAR)
        assert np.std(log_returns(df)) == pytest.approx(expected, rel=0.03)


# --- loader ---------------------------------------------------------------------------------


def test_load_bars_synthetic_source():
    loaded = load_bars("synthetic:planted?n_bars=2000&seed=3")
    direct = synthetic_market("planted", n_bars=2000, seed=3)
    pd.testing.assert_frame_equal(loaded, direct, check_exact=True)
    assert loaded.attrs["timeframe"] == "1h"


def test_load_bars_synthetic_with_params():
    loaded = load_bars(
        "synthetic:regime?n_bars=1500&seed=2&timeframe=4h&derivatives=1&include_truth=1"
        "&vol_crisis=2.5"
    )
    direct = synthetic_market(
        "regime", 1500, 2, "4h", derivatives=True, include_truth=True, vol_crisis=2.5
    )
    pd.testing.assert_frame_equal(loaded, direct, check_exact=True)
    assert {"open_interest", "funding_rate", "regime"} <= set(loaded.columns)


# --- prefix stability (the no-lookahead property) -------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_prefix_stable_across_block_boundaries(kind):
    long = synthetic_market(kind, 5000, 9, derivatives=True, include_truth=True)
    for m in (2, 3, 1023, 1024, 1025, 4097):
        short = synthetic_market(kind, m, 9, derivatives=True, include_truth=True)
        pd.testing.assert_frame_equal(long.iloc[:m], short, check_exact=True)


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    sizes=st.tuples(st.integers(2, 700), st.integers(2, 700)),
    seed=st.integers(0, 2**32),
)
def test_prefix_stable_property(kind, sizes, seed):
    m, n = sorted(sizes)
    long = synthetic_market(kind, n, seed, "15m", derivatives=True, include_truth=True)
    short = synthetic_market(kind, m, seed, "15m", derivatives=True, include_truth=True)
    pd.testing.assert_frame_equal(long.iloc[:m], short, check_exact=True)


@pytest.mark.parametrize("kind", KINDS)
def test_optional_columns_only_add(kind):
    plain = synthetic_market(kind, 600, 4)
    full = synthetic_market(kind, 600, 4, derivatives=True, include_truth=True)
    pd.testing.assert_frame_equal(full[plain.columns], plain, check_exact=True)


# --- planted --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    return synthetic_market("planted", 40_000, 21)


def test_planted_no_gap(planted):
    o, c = planted["open"].to_numpy(), planted["close"].to_numpy()
    np.testing.assert_array_equal(o[1:], c[:-1])
    assert o[0] == 100.0


def test_planted_alpha_is_unit_ar1(planted):
    alpha = planted["alpha_signal"].to_numpy()
    assert np.var(alpha) == pytest.approx(1.0, abs=0.05)
    assert corr(alpha[:-1], alpha[1:]) == pytest.approx(0.3, abs=0.03)


def test_planted_alpha_predicts_next_bar_only(planted):
    alpha = planted["alpha_signal"].to_numpy()
    body = body_returns(planted)
    sigma = 0.5 * math.sqrt(3600 / SECONDS_PER_YEAR)
    # Known at the close of t, predicts bar t+1 (open to close): correlation ~ alpha_strength.
    assert corr(alpha[:-1], body[1:]) == pytest.approx(0.3, abs=0.03)
    assert np.std(body) == pytest.approx(sigma, rel=0.03)
    # Against bar t itself (already happened) only what persistence implies: 0.3 * 0.3 ...
    assert corr(alpha, body) == pytest.approx(0.09, abs=0.03)
    # ... and nothing once alpha[t-1] is taken out: the fresh innovation of alpha[t] is
    # independent of bar t's return.
    innovation = alpha[1:] - 0.3 * alpha[:-1]
    assert abs(corr(innovation, body[1:])) < 0.02
    # Two bars ahead: only through persistence again.
    assert corr(alpha[:-2], body[2:]) == pytest.approx(0.09, abs=0.03)


def test_oracle_earns_random_does_not(planted):
    o, c = planted["open"].to_numpy(), planted["close"].to_numpy()
    bar_ret = c / o - 1.0  # bar t+1, filled at its open
    pos = oracle_positions(planted)
    assert pos.dtype == np.float64
    assert set(np.unique(pos)) <= {-1.0, 0.0, 1.0}
    pnl = pos[:-1] * bar_ret[1:]
    t_oracle = pnl.mean() / pnl.std() * math.sqrt(len(pnl))
    sigma = 0.5 * math.sqrt(3600 / SECONDS_PER_YEAR)
    assert pnl.mean() == pytest.approx(0.3 * sigma * math.sqrt(2 / math.pi), rel=0.15)
    assert t_oracle > 20
    rng = np.random.default_rng(123)
    random_pos = rng.choice([-1.0, 1.0], size=len(pos))
    rnd = random_pos[:-1] * bar_ret[1:]
    assert abs(rnd.mean() / rnd.std() * math.sqrt(len(rnd))) < 4
    # The same signal used one bar late (a lagged policy) is much weaker than the oracle.
    late = pos[:-2] * bar_ret[2:]
    assert late.mean() < 0.5 * pnl.mean()


def test_oracle_positions_edge_cases():
    df = synthetic_market("planted", 10, 0)
    df.loc[df.index[3], "alpha_signal"] = 0.0
    pos = oracle_positions(df)
    assert pos[3] == 0.0
    np.testing.assert_array_equal(pos, np.sign(df["alpha_signal"].to_numpy()))
    with pytest.raises(DataError, match="alpha_signal"):
        oracle_positions(synthetic_market("gbm", 10, 0))


def test_planted_strength_zero_has_no_edge():
    df = synthetic_market("planted", 20_000, 2, alpha_strength=0.0)
    alpha, body = df["alpha_signal"].to_numpy(), body_returns(df)
    assert abs(corr(alpha[:-1], body[1:])) < 0.03


# --- other kinds ----------------------------------------------------------------------------


def test_gbm_returns_uncorrelated_and_volume_follows_moves():
    df = synthetic_market("gbm", 20_000, 8)
    r = log_returns(df)
    assert abs(corr(r[:-1], r[1:])) < 0.03
    assert abs(corr(np.abs(r[:-1]), np.abs(r[1:]))) < 0.03  # no vol clustering in gbm
    assert corr(np.abs(r), np.log(df["volume"].to_numpy()[1:])) > 0.2


def test_gbm_drift():
    up = synthetic_market("gbm", 20_000, 8, "1d", annual_vol=0.2, drift=0.5)
    r = log_returns(up)
    per_bar = 0.5 / 365.25 - 0.5 * (0.2**2 / 365.25)
    assert r.mean() == pytest.approx(per_bar, abs=4 * r.std() / math.sqrt(len(r)))


def test_ou_mean_reverts():
    df = synthetic_market("ou", 20_000, 6, half_life=50)
    logp = np.log(df["close"].to_numpy())
    r = np.diff(logp)
    k = 50
    blocks = np.diff(logp[::k])
    assert corr(blocks[:-1], blocks[1:]) < -0.1
    long_var = np.var(np.diff(logp[::200]))
    assert long_var / (200 * np.var(r)) < 0.6
    assert abs(logp.mean() - math.log(100.0)) < 0.05
    # A different mean level is where the price settles.
    high = synthetic_market("ou", 5000, 6, half_life=20, mean=math.log(150.0))
    assert np.median(high["close"].to_numpy()[2000:]) == pytest.approx(150.0, rel=0.05)


def test_regime_truth():
    df = synthetic_market("regime", 20_000, 13, include_truth=True)
    state = df["regime"].to_numpy()
    assert set(np.unique(state)) == {0.0, 1.0, 2.0}
    r = log_returns(df)
    s = state[1:]
    calm, choppy, crisis = (np.std(r[s == i]) for i in (0, 1, 2))
    assert crisis > 3 * calm
    assert calm < choppy < crisis
    vol = df["volume"].to_numpy()
    assert vol[state == 2].mean() > 1.5 * vol[state == 0].mean()
    # Choppy bars mean-revert a little (negative lag-1 autocorrelation within choppy runs).
    both = (state[1:] == 1) & (state[:-1] == 1)
    rr = r[1:][both[1:]], r[:-1][both[1:]]
    assert corr(*rr) < -0.05
    # Regimes persist: few switches.
    assert np.mean(state[1:] != state[:-1]) < 0.05
    assert "regime" not in synthetic_market("regime", 100, 13).columns


def test_derivative_columns():
    df = synthetic_market("gbm", 20_000, 17, derivatives=True)
    oi, fr = df["open_interest"].to_numpy(), df["funding_rate"].to_numpy()
    assert np.all(np.isfinite(oi)) and np.all(oi > 0)
    assert np.all(np.isfinite(fr)) and np.all(np.abs(fr) < 0.003)
    assert np.median(fr) == pytest.approx(1e-4, abs=1e-4)
    log_oi = np.log(oi)
    assert corr(log_oi[:-1], log_oi[1:]) > 0.95  # slowly varying
    # Funding tilts positive after up moves (trailing 10-bar return, bars <= t).
    logc = np.log(df["close"].to_numpy())
    trailing = logc[10:] - logc[:-10]
    assert corr(trailing, fr[10:]) > 0.3
    # ... but says nothing about the next bar (it is causal, not a leak).
    nxt = np.diff(logc)
    assert abs(corr(fr[:-1], nxt)) < 0.03


@pytest.mark.parametrize("kind", KINDS)
def test_derivatives_causal_under_tampering(kind):
    """Changing the future draws (a longer series) leaves past derivative values alone."""
    a = synthetic_market(kind, 3000, 30, derivatives=True)
    b = synthetic_market(kind, 1000, 30, derivatives=True)
    for col in ("open_interest", "funding_rate"):
        np.testing.assert_array_equal(a[col].to_numpy()[:1000], b[col].to_numpy())


# --- bad inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kind": "brownian"}, "gbm, regime, ou, planted"),
        ({"n_bars": 1}, "n_bars"),
        ({"n_bars": 0}, "n_bars"),
        ({"n_bars": 2.5}, "n_bars"),
        ({"n_bars": True}, "n_bars"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"annual_vol": -0.1}, "annual_vol"),
        ({"annual_vol": 0.0}, "annual_vol"),
        ({"annual_vol": float("nan")}, "annual_vol"),
        ({"start_price": 0.0}, "start_price"),
        ({"timeframe": "7x"}, "timeframe"),
        ({"start": "not a date"}, "start"),
        ({"foo": 1.0}, "drift"),
        ({"half_life": 10.0}, "valid parameters"),
        ({"drift": "fast"}, "drift"),
        ({"gap_vol": 1.0}, "gap_vol"),
        ({"wick": -1.0}, "wick"),
        ({"kind": "planted", "alpha_strength": 1.0}, "alpha_strength"),
        ({"kind": "planted", "alpha_strength": -0.1}, "alpha_strength"),
        ({"kind": "planted", "alpha_persistence": 1.0}, "alpha_persistence"),
        ({"kind": "planted", "gap_vol": 0.1}, "alpha_strength"),
        ({"kind": "regime", "p_calm": 1.0}, "p_calm"),
        ({"kind": "regime", "vol_crisis": -3.0}, "vol_crisis"),
        ({"kind": "ou", "half_life": 0.0}, "half_life"),
        ({"kind": "gbm", "base_funding": 0.01}, "base_funding"),
        ({"n_bars": 1_000_000, "timeframe": "1w"}, "fewer bars"),
        ({"n_bars": 5000, "timeframe": "1M"}, "fewer bars"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    args = {"kind": "gbm", "n_bars": 100, **kwargs}
    with pytest.raises(DataError, match=match):
        synthetic_market(**args)


def test_bad_synthetic_source():
    with pytest.raises(DataError, match="choose one of"):
        load_bars("synthetic:nope?n_bars=100")
    with pytest.raises(DataError, match="unknown parameter"):
        load_bars("synthetic:gbm?n_bars=100&colour=3")


def test_float_overflow_is_a_data_error():
    with pytest.raises(DataError, match="float64"):
        synthetic_market("gbm", 50_000, 0, "1d", annual_vol=50.0)
