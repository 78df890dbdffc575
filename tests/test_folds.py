"""Fold plans: walk-forward (rolling, anchored) and CPCV, purge and embargo."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from rltrade.errors import ConfigError
from rltrade.experiments.folds import (
    cpcv_path_statistics,
    cpcv_plan,
    default_purge,
    duration_bars,
    plan_folds,
)


def _blocks(fold):
    return (fold.train, fold.validation, fold.test)


@pytest.mark.parametrize("scheme", ["rolling", "anchored"])
def test_blocks_do_not_overlap_and_purge_gaps_are_kept(scheme):
    plan = plan_folds(1000, train=200, validation=50, test=60, purge=9, embargo=5,
                      scheme=scheme)
    assert len(plan.folds) == plan.allowed == (1000 - (200 + 9 + 50 + 9 + 60)) // 65 + 1
    tests = []
    for fold in plan.folds:
        tr, va, te = _blocks(fold)
        assert tr.stop <= va.start and va.stop <= te.start  # in time order, no overlap
        assert va.start - tr.stop == 9 and te.start - va.stop == 9  # the purge gaps
        assert (len(va), len(te)) == (50, 60)
        assert te.stop <= 1000
        tests.append(te)
    for a, b in itertools.pairwise(tests):
        assert b.start - a.stop >= 5  # the embargo after each test block


def test_anchored_training_grows_rolling_training_slides():
    rolling = plan_folds(1000, train=200, validation=50, test=60, purge=4, scheme="rolling")
    anchored = plan_folds(1000, train=200, validation=50, test=60, purge=4, scheme="anchored")
    assert all(f.train.start == 0 for f in anchored.folds)
    sizes = [len(f.train) for f in anchored.folds]
    assert sizes == sorted(sizes) and sizes[0] == 200 and sizes[-1] > sizes[0]
    assert {len(f.train) for f in rolling.folds} == {200}
    assert [f.train.start for f in rolling.folds] == [60 * k for k in range(len(rolling.folds))]
    # same validation and test blocks either way
    assert [f.test for f in rolling.folds] == [f.test for f in anchored.folds]


def test_number_of_folds_shares_out_the_test_rows():
    plan = plan_folds(1000, train=300, validation=50, folds=4, purge=10, embargo=2)
    assert len(plan.folds) == 4
    assert plan.test == (1000 - 370 - 3 * 2) // 4
    assert plan.folds[-1].test.stop <= 1000


def test_too_short_data_is_refused_with_the_minimum_and_the_folds_allowed():
    with pytest.raises(ConfigError, match=r"one fold needs at least 400 bars.*allows 0 folds"):
        plan_folds(399, train=200, validation=50, test=130, purge=10)
    with pytest.raises(ConfigError, match=r"too short for 5 folds.*5 need 920.*allows 3 folds"):
        plan_folds(700, train=200, validation=50, test=130, purge=10, folds=5)


def test_durations_become_bars_of_the_timeframe():
    assert duration_bars("30d", "1h") == 720
    assert duration_bars("12h", "15m") == 48
    assert duration_bars(500, "1h") == duration_bars("500", "1h") == 500
    with pytest.raises(ConfigError, match="not a bar count or a duration"):
        duration_bars("a while", "1h")
    with pytest.raises(ConfigError, match="shorter than one bar"):
        duration_bars("1h", "1d")


def test_a_feature_looking_k_bars_ahead_cannot_reach_a_test_block(small_config):
    """Plant a feature that looks ``k`` bars ahead (close shifted by -k): whatever a training
    row shows the agent (its observation window of that feature) must never contain a close
    of a validation or test bar. With the default purge (``window + lag`` >= k) it does not;
    without a purge it does (the check can fail)."""
    from rltrade.features.dataset import build_dataset

    cfg = small_config()
    window, k = cfg.env.window, 5
    ds = build_dataset("synthetic:planted?n_bars=600&seed=3", cfg.feature_spec)
    close = ds.close
    peek = np.concatenate([close[k:], np.full(k, np.nan)])  # row t holds close[t + k]
    ds = dataclasses.replace(ds, features=np.column_stack([ds.features, peek]).astype(np.float64),
                             feature_names=[*ds.feature_names, "peek"])

    def leaks(purge: int) -> int:
        plan = plan_folds(len(ds), train=200, validation=40, test=60, purge=purge)
        found = 0
        for fold in plan.folds:
            seen = ds.slice(fold.train.start, fold.train.stop).feature("peek")
            later = close[fold.validation.start:fold.test.stop]
            found += int(np.isin(seen, later).sum())
        return found

    purge = default_purge(window, cfg.env.engine.effective_lag)
    assert purge >= k
    assert leaks(purge) == 0
    assert leaks(k) == 0  # an explicit purge of k bars is the least that works
    assert leaks(0) > 0 and leaks(k - 1) > 0


def test_default_purge_covers_the_observation_window_and_the_reward_bar():
    plan = plan_folds(600, train=200, validation=40, test=60, purge=default_purge(8))
    for fold in plan.folds:
        # the validation / test block's first observation (window - 1 context rows) holds no
        # training row, and the last training reward (read at the next bar) is before it
        assert fold.validation.start - (8 - 1) > fold.train.stop
        assert fold.test.start - (8 - 1) > fold.validation.stop


@pytest.mark.parametrize(("n", "groups", "k", "purge", "embargo"),
                         [(120, 6, 2, 0, 0), (600, 6, 2, 9, 3), (503, 5, 3, 4, 0),
                          (1000, 8, 2, 10, 7)])
def test_cpcv_matches_skfolio(n, groups, k, purge, embargo):
    from skfolio.model_selection import CombinatorialPurgedCV

    plan = cpcv_plan(n, groups=groups, test_groups=k, purge=purge, embargo=embargo)
    cv = CombinatorialPurgedCV(n_folds=groups, n_test_folds=k, purged_size=purge,
                               embargo_size=embargo)
    theirs = list(cv.split(np.zeros((n, 1))))
    assert len(plan.splits) == len(theirs) == math.comb(groups, k)
    for split, (train, tests) in zip(plan.splits, theirs, strict=True):
        np.testing.assert_array_equal(split.train_rows(), train)
        np.testing.assert_array_equal(np.concatenate([b.rows() for b in split.test]),
                                      np.sort(np.concatenate(tests)))
    assert plan.n_paths == cv.n_test_paths == math.comb(groups, k) * k // groups
    np.testing.assert_array_equal(plan.paths, cv.recombined_paths)


def test_cpcv_paths_cover_every_group_once_from_splits_that_test_it():
    plan = cpcv_plan(600, groups=6, test_groups=2, purge=5)
    assert plan.n_paths == 5
    for p in range(plan.n_paths):
        segments = plan.path_segments(p)
        assert [g for _, g in segments] == plan.groups
        for g, (split, _) in enumerate(segments):
            assert g in plan.splits[split].test_groups
    for split in plan.splits:  # training never touches a test group, nor the purged rows
        rows = split.train_rows()
        for g in split.test_groups:
            b = plan.groups[g]
            assert not np.any((rows >= b.start - 5) & (rows < b.stop + 5))


def test_cpcv_train_segments_are_the_training_rows():
    plan = cpcv_plan(400, groups=4, test_groups=2, purge=3, embargo=2)
    for split in plan.splits:
        segs = split.train_segments()
        assert all(lo < hi for lo, hi in segs)
        np.testing.assert_array_equal(
            np.concatenate([np.arange(lo, hi) for lo, hi in segs]), split.train_rows())


def test_cpcv_paths_assemble_each_group_once_and_give_a_sharpe_distribution():
    plan = cpcv_plan(400, groups=4, test_groups=2, purge=3)
    assert (len(plan.splits), plan.n_paths) == (6, 3)
    rng = np.random.default_rng(1)
    # each (split, group) test gets its own returns, tagged by a constant offset per split so
    # the assembled path shows which split each group's returns came from
    returns = {}
    for split in plan.splits:
        for g in split.test_groups:
            n = len(plan.groups[g])
            returns[(split.index, g)] = 0.001 * split.index + rng.normal(0, 0.01, n)
    for p in range(plan.n_paths):
        r = plan.path_returns(returns, p)
        assert r.size == 400  # every group exactly once, in time order
        for g, block in enumerate(plan.groups):
            np.testing.assert_array_equal(r[block.start:block.stop],
                                          returns[(int(plan.paths[g, p]), g)])
    stats = cpcv_path_statistics(plan, returns, bars_per_year=252)
    sharpes = []
    for row in stats["paths"]:
        r = plan.path_returns(returns, row["path"])
        expected = r.mean() / r.std(ddof=1) * math.sqrt(252)
        assert row["sharpe"] == pytest.approx(expected)
        assert row["return"] == pytest.approx(np.prod(1 + r) - 1)
        assert row["bars"] == 400
        sharpes.append(expected)
    dist = stats["sharpe"]
    assert dist["n"] == 3 and len(set(np.round(sharpes, 9))) == 3  # a distribution, not a number
    assert dist["min"] == pytest.approx(min(sharpes))
    assert dist["max"] == pytest.approx(max(sharpes))
    assert dist["median"] == pytest.approx(float(np.median(sharpes)))
    assert dist["min"] <= dist["q25"] <= dist["median"] <= dist["q75"] <= dist["max"]
    del returns[(int(plan.paths[2, 1]), 2)]
    with pytest.raises(ConfigError, match="path 1: no test returns"):
        cpcv_path_statistics(plan, returns, bars_per_year=252)


def test_cpcv_refuses_groups_smaller_than_purge_and_embargo():
    with pytest.raises(ConfigError, match="at least 120 bars"):
        cpcv_plan(100, groups=6, test_groups=2, purge=10, embargo=8)
