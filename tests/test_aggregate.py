"""Tests of rltrade.evaluation.aggregate: IQM, stratified bootstrap intervals, fractions of folds
beating a baseline, Hansen's SPA test and the seeds × folds summary.

IQM is cross-checked against SciPy's trimmed mean (rliable's definition); the bootstrap interval's
coverage is checked on a known distribution; the SPA test on a planted edge and a random walk.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import trim_mean

from rltrade.errors import ConfigError, DataError
from rltrade.evaluation.aggregate import (
    MIN_SPA_OBSERVATIONS,
    fraction_beating,
    iqm,
    spa_test,
    stratified_bootstrap_ci,
    summarize_seeds_and_folds,
)

# --------------------------------------------------------------------------------------------
# IQM
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 5), (4, 4), (5, 10), (10, 1)])
def test_iqm_equals_scipy_trim_mean_on_pooled_scores(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    scores = rng.standard_t(3, size=shape)
    assert iqm(scores) == pytest.approx(trim_mean(scores.ravel(), 0.25), rel=1e-12, abs=1e-15)


def test_iqm_along_an_axis_equals_scipy_row_by_row() -> None:
    x = np.random.default_rng(1).normal(size=(6, 13))
    np.testing.assert_allclose(iqm(x, axis=1), trim_mean(x, 0.25, axis=1), rtol=1e-12)


def test_iqm_ignores_an_outlying_seed() -> None:
    scores = np.array([[1.0, 1.2, 0.9, 1.1], [1.05, 0.95, 1.0, 1.0], [1.0, 1.0, 1.1, -50.0]])
    assert iqm(scores) == pytest.approx(1.0, abs=0.05)
    assert np.mean(scores) < -3


def test_iqm_propagates_nan_instead_of_trimming_it_away() -> None:
    assert np.isnan(iqm([1.0, 2.0, 3.0, np.nan]))
    rows = iqm(np.array([[1.0, 2.0, 3.0, np.nan], [1.0, 2.0, 3.0, 4.0]]), axis=1)
    assert np.isnan(rows[0]) and rows[1] == 2.5


def test_iqm_of_nothing_is_refused() -> None:
    with pytest.raises(DataError, match="empty"):
        iqm([])


# --------------------------------------------------------------------------------------------
# stratified bootstrap
# --------------------------------------------------------------------------------------------


def test_bootstrap_is_reproducible_with_a_seed() -> None:
    scores = np.random.default_rng(3).normal(size=(3, 8))
    a = stratified_bootstrap_ci(scores, reps=300, rng=7)
    b = stratified_bootstrap_ci(scores, reps=300, rng=np.random.default_rng(7))
    c = stratified_bootstrap_ci(scores, reps=300, rng=8)
    assert a == b
    assert (a.lower, a.upper) != (c.lower, c.upper)
    assert a.lower <= a.point <= a.upper
    assert a.point == iqm(scores)
    assert a.method == "percentile" and a.level == 0.95 and a.n == 24 and a.n_undefined == 0


def test_bootstrap_resamples_within_each_task_only() -> None:
    # every fold's runs are equal: a stratified draw always holds each fold's value as often as
    # the fold has runs, so the pooled mean cannot move; a pooled (unstratified) resample would.
    scores = np.tile(np.arange(6, dtype=float), (4, 1))
    ci = stratified_bootstrap_ci(scores, statistic=np.mean, reps=500, rng=0)
    assert ci.lower == pytest.approx(2.5, abs=1e-12)
    assert ci.upper == pytest.approx(2.5, abs=1e-12)


def test_bootstrap_interval_is_the_percentile_interval_of_the_replicates() -> None:
    scores = np.random.default_rng(5).normal(size=(4, 3))
    ci = stratified_bootstrap_ci(scores, statistic=np.mean, reps=400, level=0.9, rng=11)
    # the same replicates, drawn by hand
    gen = np.random.default_rng(11)
    draws = np.concatenate(
        [scores[:, j][gen.integers(0, 4, size=(400, 4))] for j in range(3)], axis=1
    )
    reps = draws.mean(axis=1)
    assert ci.lower == pytest.approx(np.quantile(reps, 0.05), rel=1e-12)
    assert ci.upper == pytest.approx(np.quantile(reps, 0.95), rel=1e-12)


def test_bootstrap_interval_covers_the_true_iqm_about_95_percent() -> None:
    # normal scores: the population IQM equals the mean (symmetric distribution)
    rng = np.random.default_rng(2024)
    trials, hits = 300, 0
    for _ in range(trials):
        scores = rng.normal(1.0, 2.0, size=(10, 6))
        ci = stratified_bootstrap_ci(scores, reps=300, rng=rng)
        hits += ci.lower <= 1.0 <= ci.upper
    coverage = hits / trials
    assert 0.88 <= coverage <= 0.99, coverage


def test_bootstrap_leaves_undefined_scores_out() -> None:
    scores = np.array([[1.0, np.nan, 3.0], [2.0, 5.0, np.nan], [1.5, 6.0, 4.0]])
    ci = stratified_bootstrap_ci(scores, reps=200, rng=0)
    assert ci.n == 7 and ci.n_undefined == 2
    assert ci.point == pytest.approx(trim_mean(scores[np.isfinite(scores)], 0.25))
    assert np.isfinite(ci.lower) and np.isfinite(ci.upper)
    empty = stratified_bootstrap_ci(np.full((2, 2), np.nan), reps=10, rng=0)
    assert np.isnan(empty.point) and np.isnan(empty.lower) and empty.n_undefined == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"reps": 0}, ConfigError, "reps"),
        ({"level": 1.0}, ConfigError, "level"),
        ({"rng": "seed"}, ConfigError, "rng"),
    ],
)
def test_bootstrap_refuses_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        stratified_bootstrap_ci(np.ones((2, 2)), **kwargs)


def test_bootstrap_refuses_a_cube() -> None:
    with pytest.raises(DataError, match=r"\[runs, tasks\]"):
        stratified_bootstrap_ci(np.ones((2, 2, 2)))


# --------------------------------------------------------------------------------------------
# fraction of folds beating a baseline
# --------------------------------------------------------------------------------------------


def test_fraction_beating_uses_the_median_over_seeds_per_fold() -> None:
    agent = np.array(
        [
            [0.10, -0.20, 0.05, 0.00],
            [0.20, -0.10, -0.30, 0.01],
            [-0.50, 0.30, 0.02, 0.02],
        ]
    )
    buy_and_hold = np.array([0.0, 0.0, 0.03, 0.01])
    out = fraction_beating(agent, buy_and_hold)
    # medians per fold: 0.10, -0.10, 0.02, 0.01 -> beats, no, no, tie (no)
    assert out["per_fold"] == [True, False, False, False]
    assert out["fraction"] == 0.25 and out["folds_beating"] == 1 and out["folds"] == 4
    # runs: fold 0: 2 of 3; fold 1: 1 of 3; fold 2: 1 of 3; fold 3: 1 of 3 (0.02 > 0.01)
    assert out["runs_beating"] == 5 and out["runs"] == 12
    assert out["fraction_of_runs"] == pytest.approx(5 / 12)
    assert out["per_run"][2] == [False, True, False, True]


def test_fraction_beating_flat_and_a_per_seed_baseline() -> None:
    agent = np.array([0.01, -0.02, 0.03])
    flat = fraction_beating(agent, np.zeros(3))
    assert flat["per_fold"] == [True, False, True] and flat["fraction"] == pytest.approx(2 / 3)
    per_seed = fraction_beating(
        np.array([[0.1, 0.1], [0.3, 0.0]]), np.array([[0.0, 0.2], [0.2, 0.05]])
    )
    assert per_seed["per_run"] == [[True, False], [True, False]]
    # fold 0: median agent 0.2 > median baseline 0.1; fold 1: 0.05 > 0.125 is false
    assert per_seed["per_fold"] == [True, False]


def test_fraction_beating_leaves_undefined_folds_out() -> None:
    agent = np.array([[0.1, np.nan, 0.2], [np.nan, np.nan, -0.1]])
    out = fraction_beating(agent, np.array([0.0, 0.0, np.nan]))
    assert out["per_fold"] == [True, None, None]
    assert out["folds"] == 1 and out["folds_undefined"] == 2 and out["fraction"] == 1.0
    assert out["runs"] == 1
    nothing = fraction_beating(np.array([np.nan]), np.array([0.0]))
    assert np.isnan(nothing["fraction"]) and np.isnan(nothing["fraction_of_runs"])


def test_fraction_beating_refuses_mismatched_shapes() -> None:
    with pytest.raises(DataError, match="one return per fold"):
        fraction_beating(np.zeros((2, 3)), np.zeros(4))


# --------------------------------------------------------------------------------------------
# Hansen's SPA test
# --------------------------------------------------------------------------------------------


def _market(seed: int, n: int = 500) -> tuple[np.random.Generator, np.ndarray]:
    """A zero-drift random-walk market: its per-period returns are buy-and-hold's."""
    rng = np.random.default_rng(seed)
    return rng, rng.normal(0.0, 0.01, n)


def _random_agent(rng: np.random.Generator, market: np.ndarray, k: int = 1) -> np.ndarray:
    """Random long / flat / short positions on the market: no edge by construction."""
    positions = rng.choice([-1.0, 0.0, 1.0], size=(market.size, k))
    return (positions * market[:, None]).squeeze()


def test_spa_finds_a_planted_edge() -> None:
    rng, market = _market(0, 1000)
    agent = market + 0.001 + rng.normal(0.0, 0.005, market.size)
    out = spa_test(agent, market, reps=300, seed=1)
    assert out["consistent"] < 0.01 and out["lower"] < 0.01 and out["upper"] < 0.01
    assert out["mean_excess_return"][0] == pytest.approx(np.mean(agent - market))
    assert out["n_observations"] == 1000 and out["n_models"] == 1
    assert out["bootstrap"] == "stationary" and not out["degenerate"]


def test_spa_finds_the_one_seed_with_an_edge_among_several() -> None:
    rng, market = _market(3, 1000)
    agents = np.stack([_random_agent(rng, market), _random_agent(rng, market),
                       market + 0.0015 + rng.normal(0.0, 0.005, market.size)], axis=1)
    assert spa_test(agents, market, reps=300, seed=0)["consistent"] < 0.01
    assert spa_test(agents[:, :2], market, reps=300, seed=0)["consistent"] > 0.05


def test_spa_sees_nothing_in_a_random_agent() -> None:
    rng, market = _market(0)
    out = spa_test(_random_agent(rng, market), market, reps=300, seed=0)
    assert out["consistent"] > 0.05
    assert out["lower"] <= out["consistent"] <= out["upper"]


def test_spa_rejects_about_five_percent_of_random_agents() -> None:
    # the size of the test: under the null the consistent p-value is about uniform
    rejections = 0
    for seed in range(40):
        rng, market = _market(100 + seed)
        agents = _random_agent(rng, market, k=2)
        rejections += spa_test(agents, market, reps=200, seed=seed)["consistent"] < 0.05
    assert rejections <= 5, rejections


def test_spa_is_reproducible_and_reports_its_block_size() -> None:
    rng, market = _market(5)
    agent = _random_agent(rng, market)
    a = spa_test(agent, market, reps=200, seed=4)
    assert a == spa_test(agent, market, reps=200, seed=np.random.default_rng(4))
    assert a["block_size_source"] == "politis_white" and a["block_size"] >= 1
    given = spa_test(agent, market, reps=200, block_size=7, seed=4)
    assert given["block_size"] == 7 and given["block_size_source"] == "given"


def test_spa_block_size_grows_with_serial_dependence() -> None:
    rng = np.random.default_rng(8)
    shocks = rng.normal(0.0, 0.01, 2000)
    persistent = np.empty_like(shocks)
    persistent[0] = shocks[0]
    for t in range(1, shocks.size):
        persistent[t] = 0.8 * persistent[t - 1] + shocks[t]
    market = rng.normal(0.0, 0.01, 2000)
    iid = spa_test(market + shocks, market, reps=50)["block_size"]
    dependent = spa_test(market + persistent, market, reps=50)["block_size"]
    assert iid <= 3 < 10 <= dependent


def test_spa_of_the_benchmark_against_itself_is_degenerate() -> None:
    _, market = _market(1)
    same = spa_test(market, market, reps=50)
    assert same["degenerate"] and same["consistent"] == 1.0 and same["upper"] == 1.0
    ahead = spa_test(market + 0.001, market, reps=50)
    assert ahead["degenerate"] and ahead["consistent"] == 0.0


def test_spa_with_one_seed_equal_to_the_benchmark_still_tests_the_others() -> None:
    rng, market = _market(6)
    agents = np.stack([market, market + 0.002 + rng.normal(0.0, 0.005, market.size)], axis=1)
    with np.errstate(divide="raise", invalid="raise"):
        out = spa_test(agents, market, reps=200, seed=0)
    assert not out["degenerate"] and out["consistent"] < 0.01 and out["block_size"] >= 1


@pytest.mark.parametrize(
    ("agent", "benchmark", "kwargs", "error", "match"),
    [
        (np.zeros(100), np.zeros(99), {}, DataError, "100 periods, benchmark_returns 99"),
        (np.ones(MIN_SPA_OBSERVATIONS - 1), np.zeros(MIN_SPA_OBSERVATIONS - 1), {}, DataError,
         f"at least {MIN_SPA_OBSERVATIONS}"),
        (np.r_[np.nan, np.ones(99)], np.zeros(100), {}, DataError, "non-finite"),
        (np.zeros(100), np.zeros((100, 2)), {}, DataError, "one series"),
        (np.zeros((100, 2, 2)), np.zeros(100), {}, DataError, "per-period returns"),
        (np.ones(100), np.zeros(100), {"reps": 0}, ConfigError, "reps"),
        (np.ones(100), np.zeros(100), {"block_size": 0}, ConfigError, "block_size"),
    ],
)
def test_spa_refuses_bad_input(agent: np.ndarray, benchmark: np.ndarray, kwargs: dict,
                               error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        spa_test(agent, benchmark, **kwargs)


def test_spa_without_arch_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "arch.bootstrap", None)
    _, market = _market(2)
    with pytest.raises(ImportError, match=r"rltrade\[stats\]"):
        spa_test(market * 0.5, market)


# --------------------------------------------------------------------------------------------
# the seeds × folds summary
# --------------------------------------------------------------------------------------------


def _table(n_folds: int = 5, n_seeds: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for fold in range(n_folds):
        bh = rng.normal(0.0, 0.05)
        for s in range(n_seeds):
            rows.append({"fold": fold, "seed": s, "sharpe": rng.normal(0.5, 1.0),
                         "total_return": bh + rng.normal(0.01, 0.03),
                         "buy_and_hold_return": bh, "flat_return": 0.0, "extra": "ignored"})
    return pd.DataFrame(rows)


def test_summary_matches_its_parts() -> None:
    table = _table()
    out = summarize_seeds_and_folds(table, reps=300, seed=3)
    json.dumps(out, allow_nan=False)
    assert out["folds"] == [0, 1, 2, 3, 4] and out["seeds"] == [0, 1, 2]
    assert out["n_folds"] == 5 and out["n_seeds"] == 3 and out["spa"] is None
    sharpe = table.pivot(index="seed", columns="fold", values="sharpe").to_numpy()
    total = table.pivot(index="seed", columns="fold", values="total_return").to_numpy()
    assert out["sharpe"]["iqm"] == pytest.approx(trim_mean(sharpe.ravel(), 0.25))
    assert out["total_return"]["iqm"] == pytest.approx(trim_mean(total.ravel(), 0.25))
    for key in ("sharpe", "total_return"):
        entry = out[key]
        assert entry["ci_lower"] <= entry["iqm"] <= entry["ci_upper"]
        assert entry["level"] == 0.95 and entry["reps"] == 300 and entry["n"] == 15
        assert entry["method"] == "percentile"
    bh = table.pivot(index="seed", columns="fold", values="buy_and_hold_return").to_numpy()
    assert out["beats_buy_and_hold"] == fraction_beating(total, bh[0])
    assert out["beats_flat"] == fraction_beating(total, np.zeros(5))
    assert out == summarize_seeds_and_folds(table.sample(frac=1.0, random_state=1), reps=300,
                                            seed=3)
    assert out != summarize_seeds_and_folds(table, reps=300, seed=4)


def test_summary_with_the_spa_test_and_undefined_values() -> None:
    table = _table(n_folds=4, n_seeds=2)
    table.loc[0, "sharpe"] = None  # a flat agent: its Sharpe ratio is undefined
    table = table.drop(index=7)  # fold 3, seed 1 never finished
    rng, market = _market(9, 400)
    agent = market + 0.002 + rng.normal(0.0, 0.004, market.size)
    out = summarize_seeds_and_folds(table, reps=200, agent_returns=agent,
                                    benchmark_returns=market, spa_reps=200)
    json.dumps(out, allow_nan=False)
    assert out["sharpe"]["n"] == 6 and out["sharpe"]["n_undefined"] == 2
    assert out["total_return"]["n"] == 7 and out["beats_flat"]["runs"] == 7
    assert out["beats_flat"]["per_run"][1][3] is None
    assert out["spa"]["consistent"] < 0.01 and out["spa"]["n_observations"] == 400
    assert out["undefined"] == []


def test_summary_reports_what_was_undefined() -> None:
    table = _table(n_folds=2, n_seeds=2)
    table["sharpe"] = np.nan
    out = summarize_seeds_and_folds(table, reps=20)
    assert out["sharpe"]["iqm"] is None
    assert {"sharpe.iqm", "sharpe.ci_lower", "sharpe.ci_upper"} <= set(out["undefined"])


@pytest.mark.parametrize(
    ("change", "kwargs", "match"),
    [
        (lambda t: t.drop(columns="flat_return"), {}, "flat_return"),
        (lambda t: t.iloc[:0], {}, "no rows"),
        (lambda t: pd.concat([t, t.iloc[[2]]]), {}, r"duplicated \(fold, seed\)"),
        (lambda t: t.assign(sharpe="high"), {}, "numeric"),
        (lambda t: t, {"agent_returns": np.zeros(50)}, "both"),
    ],
)
def test_summary_refuses_bad_tables(change: object, kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        summarize_seeds_and_folds(change(_table()), reps=10, **kwargs)  # type: ignore[operator]

