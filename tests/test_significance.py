"""Tests of rltrade.evaluation.significance: PSR, DSR, expected max Sharpe, MinTRL.

Cross-checked against skfolio's implementation (skfolio.measures) and SciPy's normal
distribution, the worked example of Bailey & López de Prado (2014), hand computations and the
known limits of each quantity.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rltrade.errors import ConfigError
from rltrade.evaluation import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    min_track_record_length,
    probabilistic_sharpe_ratio,
    sharpe_stats,
)
from rltrade.evaluation.significance import EULER_GAMMA

REL = 1e-10


def _returns(seed: int, n: int = 750, mean: float = 0.0006, scale: float = 0.01) -> np.ndarray:
    """Fat-tailed, skewed daily-like returns."""
    rng = np.random.default_rng(seed)
    t = rng.standard_t(5, n) * scale
    return mean + t - 0.3 * np.abs(rng.normal(0, scale, n))


def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


# ----------------------------------------------------------------------------- sharpe_stats


def test_sharpe_stats_matches_skfolio_and_scipy() -> None:
    measures = pytest.importorskip("skfolio.measures")
    stats = pytest.importorskip("scipy.stats")
    r = _returns(1)
    sr, skew, kurt, n = sharpe_stats(r)
    assert n == r.size
    assert sr == pytest.approx(measures.mean(r) / measures.standard_deviation(r), rel=REL)
    assert skew == pytest.approx(measures.skew(r), rel=REL)
    assert kurt == pytest.approx(measures.kurtosis(r), rel=REL)
    assert skew == pytest.approx(stats.skew(r), rel=REL)
    # Raw kurtosis (normal = 3), i.e. Fisher=False.
    assert kurt == pytest.approx(stats.kurtosis(r, fisher=False), rel=REL)


def test_sharpe_stats_risk_free_and_nonfinite_dropped() -> None:
    r = _returns(2, n=200)
    with_nan = np.concatenate([r, [np.nan, np.inf, -np.inf]])
    assert sharpe_stats(with_nan) == sharpe_stats(r)
    sr_rf = sharpe_stats(r, risk_free=0.0002)[0]
    assert sr_rf == pytest.approx(np.mean(r - 0.0002) / np.std(r - 0.0002, ddof=1), rel=REL)


@pytest.mark.parametrize(
    "values",
    [[], [0.01], [0.0, 0.0, 0.0], [0.003] * 50, [np.nan, 0.01], [np.inf, -np.inf]],
)
def test_sharpe_stats_undefined(values: list[float]) -> None:
    sr, skew, kurt, n = sharpe_stats(values)
    assert math.isnan(sr) and math.isnan(skew) and math.isnan(kurt)
    assert n == sum(math.isfinite(v) for v in values)


def test_constant_returns_with_rounding_noise_have_no_sharpe() -> None:
    # A curve compounding 1 % per bar: returns recomputed from equity differ by ~1e-17.
    equity = 100 * 1.01 ** np.arange(300)
    r = equity[1:] / equity[:-1] - 1
    assert np.std(r) > 0  # rounding noise, not risk
    assert math.isnan(sharpe_stats(r)[0])


# ------------------------------------------------------------------------------------- PSR


def test_psr_matches_skfolio() -> None:
    measures = pytest.importorskip("skfolio.measures")
    for seed in range(5):
        r = _returns(seed, n=300 + 100 * seed)
        sr, skew, kurt, n = sharpe_stats(r)
        for bench in (0.0, 0.02, -0.01, sr):
            ours = probabilistic_sharpe_ratio(sr, bench, n, skew, kurt)
            theirs = measures.probabilistic_sharpe_ratio(r, benchmark_sharpe_ratio=bench)
            assert ours == pytest.approx(theirs, rel=REL, abs=1e-14)


def test_psr_matches_skfolio_with_risk_free() -> None:
    measures = pytest.importorskip("skfolio.measures")
    r = _returns(11)
    sr, skew, kurt, n = sharpe_stats(r, risk_free=0.0001)
    theirs = measures.probabilistic_sharpe_ratio(r, benchmark_sharpe_ratio=0.0, risk_free_rate=1e-4)
    assert probabilistic_sharpe_ratio(sr, 0.0, n, skew, kurt) == pytest.approx(theirs, rel=REL)


def test_psr_hand_computed() -> None:
    sr, bench, n, skew, kurt = 0.1, 0.02, 500, -0.8, 6.5
    z = (sr - bench) * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    # (0.08 * sqrt(499)) / sqrt(1 + 0.08 + 0.01375) = 1.78706... / 1.04582...
    assert z == pytest.approx(0.08 * math.sqrt(499) / math.sqrt(1.09375), rel=1e-15)
    assert probabilistic_sharpe_ratio(sr, bench, n, skew, kurt) == pytest.approx(_phi(z), abs=1e-12)


def test_psr_limits() -> None:
    # PSR(SR = SR*) = 1/2, whatever n, skew or kurtosis.
    for n, skew, kurt in [(10, 0.0, 3.0), (1000, -2.0, 12.0), (57.5, 0.7, 4.0)]:
        assert probabilistic_sharpe_ratio(0.05, 0.05, n, skew, kurt) == 0.5
    # More observations, more confidence; on the other side of the benchmark, less.
    ups = [probabilistic_sharpe_ratio(0.05, 0.0, n, -0.5, 5.0) for n in (10, 100, 1000, 10000)]
    assert ups == sorted(ups) and ups[0] > 0.5 and ups[-1] > 0.999
    downs = [probabilistic_sharpe_ratio(-0.05, 0.0, n, -0.5, 5.0) for n in (10, 100, 1000)]
    assert downs == sorted(downs, reverse=True) and downs[0] < 0.5
    # Negative skew and fat tails widen the uncertainty of a positive Sharpe ratio.
    normal = probabilistic_sharpe_ratio(0.1, 0.0, 250, 0.0, 3.0)
    assert probabilistic_sharpe_ratio(0.1, 0.0, 250, -1.5, 9.0) < normal
    # Normal returns: the variance term is 1 + SR²/2.
    z = 0.1 * math.sqrt(249) / math.sqrt(1 + 0.1**2 / 2)
    assert normal == pytest.approx(_phi(z), abs=1e-14)


@pytest.mark.parametrize(
    "args",
    [
        (math.nan, 0.0, 100, 0.0, 3.0),
        (0.1, 0.0, 1, 0.0, 3.0),
        (0.1, 0.0, math.inf, 0.0, 3.0),
        (0.1, math.nan, 100, 0.0, 3.0),
        (2.0, 0.0, 100, 5.0, 30.0),
        (3.0, 0.0, 100, 3.0, 10.0),
    ],
)
def test_psr_undefined_or_valid(args: tuple[float, ...]) -> None:
    value = probabilistic_sharpe_ratio(*args)
    assert math.isnan(value) or 0.0 <= value <= 1.0


def test_psr_nonpositive_variance_term_is_nan() -> None:
    # 1 - g3 SR + (g4 - 1)/4 SR² <= 0: skew 4, kurtosis 17 (>= 1 + 16), SR = 0.5:
    # 1 - 2 + 4 * 0.25 = 0.
    assert math.isnan(probabilistic_sharpe_ratio(0.5, 0.0, 100, 4.0, 17.0))
    assert math.isnan(min_track_record_length(0.5, 0.0, 4.0, 17.0))


def test_excess_kurtosis_is_refused() -> None:
    # Normal returns have raw kurtosis 3; excess kurtosis 0 is an easy mistake.
    with pytest.raises(ConfigError, match="RAW kurtosis"):
        probabilistic_sharpe_ratio(0.1, 0.0, 100, 0.0, 0.0)
    with pytest.raises(ConfigError, match="RAW kurtosis"):
        min_track_record_length(0.1, 0.0, 1.0, 1.5)


# ------------------------------------------------------------------ expected max and DSR


def test_expected_max_sharpe_matches_skfolio_and_scipy() -> None:
    measures = pytest.importorskip("skfolio.measures")
    norm = pytest.importorskip("scipy.stats").norm
    for n_trials in (2, 3, 10, 100, 1000, 12345.5):
        for var in (1e-4, 0.002, 0.5):
            ours = expected_max_sharpe(n_trials, var)
            theirs = measures.expected_max_sharpe_ratio(n_trials, math.sqrt(var))
            assert ours == pytest.approx(theirs, rel=REL)
            hand = math.sqrt(var) * (
                (1 - np.euler_gamma) * norm.ppf(1 - 1 / n_trials)
                + np.euler_gamma * norm.ppf(1 - 1 / (n_trials * math.e))
            )
            assert ours == pytest.approx(hand, rel=REL)
    assert np.euler_gamma == EULER_GAMMA


def test_expected_max_sharpe_limits() -> None:
    assert expected_max_sharpe(1, 0.3) == 0.0
    assert expected_max_sharpe(50, 0.0) == 0.0
    values = [expected_max_sharpe(n, 0.01) for n in (2, 10, 100, 1000, 1e6)]
    assert values == sorted(values) and values[0] > 0
    # It scales with the standard deviation of the trials' Sharpe ratios.
    assert expected_max_sharpe(100, 0.04) == pytest.approx(2 * expected_max_sharpe(100, 0.01))
    # A huge number of trials stays finite (the quantiles are taken in the lower tail).
    assert math.isfinite(expected_max_sharpe(1e300, 0.01))
    for bad in [(0.5, 0.1), (math.nan, 0.1), (10, -0.1), (10, math.inf)]:
        with pytest.raises(ConfigError):
            expected_max_sharpe(*bad)


def test_paper_worked_example() -> None:
    """Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", numerical example.

    N = 100 trials whose annualized Sharpe ratios have variance 1/2; the selected strategy has an
    annualized SR of 2.5 over T = 1250 daily observations, skewness -3 and kurtosis 10, with 250
    observations a year. The paper reports SR0 ≈ 0.1132 (daily) and DSR ≈ 0.9004.
    """
    norm = pytest.importorskip("scipy.stats").norm
    per_year = 250
    var_daily = 0.5 / per_year
    sr_daily = 2.5 / math.sqrt(per_year)
    sr0 = expected_max_sharpe(100, var_daily)
    dsr = probabilistic_sharpe_ratio(sr_daily, sr0, 1250, -3.0, 10.0)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert dsr == pytest.approx(0.9004, abs=5e-5)
    # The same to 1e-12 by hand, with SciPy's normal distribution.
    g = np.euler_gamma
    sr0_hand = math.sqrt(var_daily) * (
        (1 - g) * norm.ppf(1 - 1 / 100) + g * norm.ppf(1 - 1 / (100 * math.e))
    )
    z = (sr_daily - sr0_hand) * math.sqrt(1249) / math.sqrt(1 + 3 * sr_daily + 9 / 4 * sr_daily**2)
    assert sr0 == pytest.approx(sr0_hand, abs=1e-12)
    assert dsr == pytest.approx(norm.cdf(z), abs=1e-12)


def test_dsr_matches_skfolio() -> None:
    measures = pytest.importorskip("skfolio.measures")
    rng = np.random.default_rng(7)
    for seed in range(4):
        r = _returns(seed, n=1000)
        trials = rng.normal(0.02, 0.03, 20 + 10 * seed)
        ours = deflated_sharpe_ratio(r, trial_sharpes=trials)
        theirs = measures.deflated_sharpe_ratio(r, trial_sharpe_ratios=trials)
        assert ours == pytest.approx(theirs, rel=REL, abs=1e-14)


def test_dsr_hand_computed_from_variance() -> None:
    r = _returns(3, n=800)
    sr, skew, kurt, n = sharpe_stats(r)
    var, n_trials = 0.0009, 40
    g = EULER_GAMMA
    from statistics import NormalDist

    inv = NormalDist().inv_cdf
    sr0 = math.sqrt(var) * ((1 - g) * inv(1 - 1 / n_trials) + g * inv(1 - 1 / (n_trials * math.e)))
    z = (sr - sr0) * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    assert deflated_sharpe_ratio(r, n_trials, var_trials=var) == pytest.approx(_phi(z), abs=1e-12)


def test_dsr_limits_and_fallbacks() -> None:
    r = _returns(4, n=600)
    sr, skew, kurt, n = sharpe_stats(r)
    psr0 = probabilistic_sharpe_ratio(sr, 0.0, n, skew, kurt)
    # One trial: nothing to deflate.
    assert deflated_sharpe_ratio(r) == psr0
    assert deflated_sharpe_ratio(r, 1) == psr0
    assert deflated_sharpe_ratio(r, trial_sharpes=[sr]) == psr0
    # More than one trial: strictly below PSR(0), and lower the more trials were tried.
    dsrs = [deflated_sharpe_ratio(r, n, var_trials=0.001) for n in (2, 10, 100, 1000)]
    assert all(d < psr0 for d in dsrs)
    assert dsrs == sorted(dsrs, reverse=True)
    # An explicit (effective) n_trials overrides the count of the list; the variance stays.
    trials = [0.01, 0.03, -0.02, 0.05]
    var = float(np.var(trials, ddof=1))
    assert deflated_sharpe_ratio(r, 2.5, trial_sharpes=trials) == deflated_sharpe_ratio(
        r, 2.5, var_trials=var
    )
    assert deflated_sharpe_ratio(r, trial_sharpes=trials) == deflated_sharpe_ratio(
        r, 4, var_trials=var
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_trials": 5},  # several trials, no variance: refuse to guess
        {"n_trials": 5, "trial_sharpes": [0.1]},  # one Sharpe ratio gives no variance
        {"trial_sharpes": [0.1, 0.2], "var_trials": 0.1},  # ambiguous
        {"trial_sharpes": []},
        {"trial_sharpes": [0.1, math.nan]},
        {"n_trials": 0, "var_trials": 0.1},
        {"n_trials": 3, "var_trials": -1.0},
    ],
)
def test_dsr_bad_trials(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        deflated_sharpe_ratio(_returns(0, n=100), **kwargs)


def test_dsr_undefined_returns() -> None:
    assert math.isnan(deflated_sharpe_ratio([0.0] * 10, 3, var_trials=0.01))
    assert math.isnan(deflated_sharpe_ratio([0.01]))


# ---------------------------------------------------------------------------------- MinTRL


def test_min_trl_hand_and_consistency() -> None:
    norm = pytest.importorskip("scipy.stats").norm
    sr, bench, skew, kurt = 0.08, 0.01, -1.0, 7.0
    hand = 1 + (1 - skew * sr + (kurt - 1) / 4 * sr**2) * (norm.ppf(0.95) / (sr - bench)) ** 2
    mintrl = min_track_record_length(sr, bench, skew, kurt)
    assert mintrl == pytest.approx(hand, rel=1e-12)
    # PSR at n = MinTRL is exactly 1 - alpha.
    for alpha in (0.01, 0.05, 0.1, 0.25):
        n = min_track_record_length(sr, bench, skew, kurt, alpha)
        assert probabilistic_sharpe_ratio(sr, bench, n, skew, kurt) == pytest.approx(
            1 - alpha, abs=1e-12
        )
    # Stricter confidence needs a longer record.
    assert min_track_record_length(sr, bench, skew, kurt, 0.01) > mintrl


def test_min_trl_limits() -> None:
    assert min_track_record_length(0.05, 0.05) == math.inf
    assert min_track_record_length(-0.1, 0.0) == math.inf
    assert math.isnan(min_track_record_length(math.nan, 0.0))
    for alpha in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError):
            min_track_record_length(0.1, 0.0, alpha=alpha)
    # Normal returns: MinTRL = 1 + (1 + SR²/2) (z / SR)².
    z = 1.6448536269514722
    assert min_track_record_length(0.1, 0.0) == pytest.approx(1 + 1.005 * (z / 0.1) ** 2, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    sr=st.floats(-1.0, 1.0),
    bench=st.floats(-0.5, 0.5),
    skew=st.floats(-3.0, 3.0),
    extra_kurt=st.floats(0.0, 30.0),
    alpha=st.floats(0.001, 0.5),
)
def test_psr_and_mintrl_properties(
    sr: float, bench: float, skew: float, extra_kurt: float, alpha: float
) -> None:
    kurt = 1 + skew**2 + extra_kurt  # always a valid raw kurtosis
    psr = probabilistic_sharpe_ratio(sr, bench, 300, skew, kurt)
    assert math.isnan(psr) or 0.0 <= psr <= 1.0
    mintrl = min_track_record_length(sr, bench, skew, kurt, alpha)
    if math.isnan(mintrl):
        assert math.isnan(psr)
    elif math.isinf(mintrl):
        assert sr - bench < 1e-100  # at or below the benchmark (or overflowing next to it)
    else:
        assert mintrl >= 1.0
        if mintrl >= 2.0:
            at = probabilistic_sharpe_ratio(sr, bench, mintrl, skew, kurt)
            assert at == pytest.approx(1 - alpha, abs=1e-9)
