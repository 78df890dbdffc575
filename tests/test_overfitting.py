"""Probability of Backtest Overfitting by CSCV (Bailey, Borwein, López de Prado, Zhu 2017)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rltrade.errors import ConfigError
from rltrade.evaluation.overfitting import probability_of_backtest_overfitting


def _noise(seed: int, t: int = 160, n: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.01, (t, n))


def test_pure_noise_configurations_give_pbo_near_one_half():
    # one matrix's PBO varies a lot (the combinations share their data); over seeds it is 1/2
    values = [probability_of_backtest_overfitting(_noise(seed)).pbo for seed in range(20)]
    assert abs(np.mean(values) - 0.5) < 0.1
    res = probability_of_backtest_overfitting(_noise(0))
    d = res.details
    assert d["n_combinations"] == d["total_combinations"] == math.comb(16, 8)
    assert d["sampled"] is False and d["dropped_periods"] == 0 and d["n_periods"] == 160
    assert res.logits.shape == (math.comb(16, 8),)
    assert res.pbo == np.mean(res.logits <= 0)


def test_one_real_edge_among_noise_gives_pbo_near_zero():
    m = _noise(1, t=480, n=10)
    m[:, 6] += 0.003  # a per-period Sharpe ratio of 0.3, in every period
    res = probability_of_backtest_overfitting(m)
    assert res.pbo < 0.02
    assert np.mean(res.details["best_in_sample"] == 6) > 0.95
    assert res.details["prob_oos_loss"] < 0.02 and np.median(res.logits) > 1.5


def test_a_logit_is_the_out_of_sample_rank_of_the_in_sample_best():
    # S = 2: two combinations; with two configurations the ranks are 1 or 2 of N + 1 = 3
    a = np.array([0.01, 0.03, 0.02, 0.05, 0.0, -0.01, 0.01, -0.02])
    b = np.array([0.0, 0.01, 0.0, 0.01, 0.02, 0.01, 0.03, 0.02])
    res = probability_of_backtest_overfitting(np.column_stack([a, b]), 2)
    # first half: a is better; second half: b is better -> each in-sample winner ranks last
    np.testing.assert_array_equal(res.details["best_in_sample"], [0, 1])
    np.testing.assert_allclose(res.details["oos_rank"], [1 / 3, 1 / 3])
    np.testing.assert_allclose(res.logits, [math.log(0.5), math.log(0.5)])
    assert res.pbo == 1.0


def test_too_many_combinations_are_sampled_with_the_seed():
    m = _noise(2, t=203, n=4)[3:]
    a = probability_of_backtest_overfitting(m, 20, max_combinations=500, seed=5)
    b = probability_of_backtest_overfitting(m, 20, max_combinations=500, seed=5)
    assert a.details["sampled"] and a.details["n_combinations"] == 500
    assert a.details["total_combinations"] == math.comb(20, 10)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert a.details["dropped_periods"] == 0
    c = probability_of_backtest_overfitting(_noise(2, t=203, n=4), 20, max_combinations=500,
                                            seed=5)
    assert c.details["dropped_periods"] == 3  # the first T mod S rows
    np.testing.assert_array_equal(c.logits, a.logits)


@pytest.mark.parametrize(("matrix", "kwargs", "needle"), [
    (np.zeros((64, 1)), {}, "at least 2, got 1"),
    (np.zeros(64), {}, r"\[T, N\] matrix"),
    (np.zeros((64, 3)), {"n_partitions": 15}, "even number"),
    (np.zeros((64, 3)), {"n_partitions": 0}, "even number"),
    (np.zeros((30, 3)), {"n_partitions": 16}, "at least 32 periods"),
    (np.full((64, 3), np.nan), {}, "NaN or inf"),
    (np.zeros((64, 3)), {"max_combinations": 0}, "max_combinations"),
])
def test_bad_inputs_are_refused_with_a_clear_error(matrix, kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        probability_of_backtest_overfitting(matrix, **kwargs)


def test_matches_a_direct_computation_of_every_split():
    from itertools import combinations

    m = _noise(3, t=42, n=5)  # S = 6: 20 combinations, the first 0 rows dropped (42 = 6 * 7)
    res = probability_of_backtest_overfitting(m, 6)
    blocks = np.split(m, 6)
    logits = []
    for chosen in combinations(range(6), 3):
        ins = np.concatenate([blocks[i] for i in chosen])
        outs = np.concatenate([blocks[i] for i in range(6) if i not in chosen])
        sr_in = ins.mean(0) / ins.std(0, ddof=1)
        sr_out = outs.mean(0) / outs.std(0, ddof=1)
        best = int(np.argmax(sr_in))
        omega = (1 + np.sum(sr_out < sr_out[best])) / 6
        logits.append(math.log(omega / (1 - omega)))
    np.testing.assert_allclose(res.logits, logits, rtol=1e-9)
