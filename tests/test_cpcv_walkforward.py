"""``walkforward.scheme: cpcv``: the statistics over backtest paths and seeds (IQM, bootstrap
interval, fractions beating the baselines, SPA), PBO over the experiment's configurations, the
stitched paths of ``oos_steps.csv`` and their place in ``report.html``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from rltrade.experiments.registry import TrialRegistry
from rltrade.experiments.walkforward import (
    CpcvResult,
    cpcv_path_seed_table,
    stitched_returns,
    walk_forward,
)

#: 3 groups, 2 tested per split: 3 splits, 2 backtest paths of every bar but the first
#: window - 1 (context only), two seeds
CPCV = {"scheme": "cpcv", "groups": 3, "test_groups": 2, "seeds": [0, 1]}


def _config(small_config, **wf):
    cfg = small_config(data={"source": "synthetic:planted?n_bars=420&seed=3"},
                       training={"total_steps": 128, "checkpoint_freq": 0})
    return cfg.with_overrides(walkforward={**CPCV, **wf})


@pytest.fixture(scope="module")
def cpcv(tmp_path_factory, small_config) -> CpcvResult:
    res = walk_forward(_config(small_config), "cv", tmp_path_factory.mktemp("runs"), workers=1)
    assert isinstance(res, CpcvResult)
    return res


def _oos(res: CpcvResult) -> pd.DataFrame:
    oos = pd.read_csv(res.path / "oos_steps.csv", index_col=0)
    oos.index = pd.DatetimeIndex(pd.to_datetime(oos.index, utc=True))
    return oos


def test_oos_steps_csv_stitches_every_path_per_seed_with_the_median_and_baselines(cpcv):
    res = cpcv
    oos = _oos(res)
    window = 8
    bars = res.plan.n_rows - (window - 1)
    assert list(oos.columns[:5]) == ["path", "group", "agent_seed_0", "agent_seed_1",
                                     "agent_median"]
    assert {"buy_and_hold", "flat", "random", "oracle"} <= set(oos.columns)
    assert oos.groupby("path").size().tolist() == [bars] * res.plan.n_paths
    by = {(r.split, r.seed): r for r in res.results}
    for p, part in oos.groupby("path"):
        # every path covers the same bars, group by group in time order
        assert (part.index == oos[oos["path"] == 0].index).all()
        assert part["group"].is_monotonic_increasing
        for seed in (0, 1):
            want = np.concatenate([by[(int(res.plan.paths[g, p]), seed)].group_returns[g]
                                   for g in range(len(res.plan.groups))])
            np.testing.assert_allclose(part[f"agent_seed_{seed}"], np.cumprod(1 + want),
                                       rtol=1e-12)
            row = res.statistics[str(seed)]["paths"][p]
            assert part[f"agent_seed_{seed}"].iloc[-1] - 1 == pytest.approx(row["return"])
            assert part["buy_and_hold"].iloc[-1] - 1 == pytest.approx(
                row["buy_and_hold_return"])
        np.testing.assert_allclose(part["agent_median"],
                                   part[["agent_seed_0", "agent_seed_1"]].median(axis=1))
        np.testing.assert_allclose(part["flat"], 1.0)
    pd.testing.assert_frame_equal(oos, res.oos, check_freq=False, check_index_type=False,
                                  check_names=False)


def test_walkforward_json_statistics_are_over_the_paths_and_seeds(cpcv):
    from rltrade.evaluation.aggregate import iqm

    res = cpcv
    report = json.loads((res.path / "walkforward.json").read_text())
    stats = report["statistics"]
    assert stats["tasks"] == "paths" and (stats["n_folds"], stats["n_seeds"]) == (2, 2)
    table = cpcv_path_seed_table(report["cpcv"]["seeds"])
    assert len(table) == 4
    sharpes = [row["sharpe"] for s in ("0", "1") for row in report["cpcv"]["seeds"][s]["paths"]]
    assert stats["sharpe"]["iqm"] == pytest.approx(iqm(np.array(sharpes)))
    assert stats["sharpe"]["ci_lower"] <= stats["sharpe"]["iqm"] <= stats["sharpe"]["ci_upper"]
    assert stats["total_return"]["iqm"] == pytest.approx(iqm(table["total_return"]))
    wide = table.pivot(index="seed", columns="fold", values="total_return")
    bh = table.groupby("fold")["buy_and_hold_return"].first()
    beats = [bool(wide[p].median() > bh[p]) for p in range(2)]
    assert stats["beats_buy_and_hold"]["per_fold"] == beats
    assert stats["beats_buy_and_hold"]["fraction"] == pytest.approx(np.mean(beats))
    assert stats["beats_flat"]["folds"] == 2 and stats["beats_flat"]["runs"] == 4
    # SPA: every path x seed against buy-and-hold on the same bars
    spa = stats["spa"]
    assert stats["spa_skipped"] is None
    assert (spa["n_observations"], spa["n_models"]) == (res.plan.n_rows - 7, 4)
    oos = _oos(res)
    excess = []
    for _, part in oos.groupby("path"):
        r = stitched_returns(part)
        excess += [(r[f"agent_seed_{s}"] - r["buy_and_hold"]).mean() for s in (0, 1)]
    np.testing.assert_allclose(sorted(spa["mean_excess_return"]), sorted(excess), rtol=1e-9)
    assert 0.0 <= spa["consistent"] <= 1.0
    assert set(report["timings"]) >= {"units", "registry", "stitch", "statistics", "report",
                                      "total"}
    # one configuration: no PBO, and the reason
    sig = report["cpcv"]["significance"]
    assert sig["n_configurations"] == 1 and sig["pbo"] is None
    assert "1 configuration" in sig["pbo_skipped"]


def test_cpcv_report_html_shows_the_stitched_paths_and_the_statistics(cpcv):
    page = (cpcv.path / "report.html").read_text()
    stats = cpcv.report["statistics"]
    assert 'id="chart-stitched"' in page and "path 1 agent_median" in page
    assert 'id="statistics"' in page and "Over 2 paths × 2 seeds" in page
    assert "paths beaten (seeds&#x27; median)" in page or "paths beaten (seeds' median)" in page
    assert f"{stats['spa']['consistent']:.3g}" in page and "p-value (consistent)" in page
    assert "the median backtest path" in page and "Probability of Backtest Overfitting" in page


def test_a_second_cpcv_config_in_the_experiment_gives_pbo(cpcv, tmp_path, small_config):
    root = tmp_path / "runs"  # a copy: the fixture's registry stays as it was
    shutil.copytree(cpcv.path.parent, root)
    cfg = _config(small_config, seeds=[0]).with_overrides(training={"total_steps": 64})
    res = walk_forward(cfg, "cv_other", root, experiment="cv")
    trials = TrialRegistry(root / "registry.sqlite").trials("cv")
    assert len(trials) == 6 + 3 and len({t.config_hash for t in trials}) == 2
    sig = res.report["cpcv"]["significance"]
    assert sig["n_configurations"] == 2 and sig["pbo_skipped"] is None
    pbo = sig["pbo"]
    assert 0.0 <= pbo["pbo"] <= 1.0 and pbo["n_configurations"] == 2
    # every configuration covers every bar once its splits are joined (CSCV uses the
    # largest multiple of S = 16 of them)
    bars = res.plan.n_rows - 7
    assert pbo["n_periods"] == bars - bars % 16
    assert sum(pbo["logit_histogram"]["counts"]) == pbo["n_combinations"]
    page = (res.path / "report.html").read_text()
    assert 'id="chart-pbo-logits"' in page


def test_a_cpcv_training_row_never_sees_a_test_group_bar_with_the_default_purge(small_config):
    """A training sample at row ``t`` observes rows ``t - window + 1 .. t`` and, through a
    planted feature that looks ``k`` bars ahead, row ``t + k``. With the default purge
    (``window + lag`` >= k) no training sample of any split sees a bar of its test groups,
    before or after them; without a purge it does (the check can fail)."""
    from rltrade.experiments.folds import cpcv_plan, default_purge

    cfg = small_config()
    window, k, n = cfg.env.window, 5, 600

    def leaks(purge: int) -> int:
        plan = cpcv_plan(n, groups=6, test_groups=2, purge=purge)
        found = 0
        for split in plan.splits:
            test = np.zeros(n, dtype=bool)
            for block in split.test:
                test[block.start:block.stop] = True
            for seg_start, seg_stop in split.train_segments():
                # an episode never starts before its segment's window - 1 context rows
                for t in range(seg_start + window - 1, seg_stop):
                    seen = [*range(t - window + 1, t + 1), min(t + k, n - 1)]
                    found += int(test[seen].any())
        return found

    purge = default_purge(window, cfg.env.engine.effective_lag)
    assert purge >= k and leaks(purge) == 0
    assert leaks(0) > 0
