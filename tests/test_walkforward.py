"""Walk-forward: the unit of work (train on a fold, select on validation, test once), the
driver's files, stitching, and the process pool equal to the sequential run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rltrade.errors import ConfigError
from rltrade.experiments.executors import LocalExecutor, SequentialExecutor, make_executor
from rltrade.experiments.registry import TrialRegistry, config_hash, registry_path
from rltrade.experiments.walkforward import (
    AGENT,
    FoldResult,
    fold_plan,
    fold_seed_table,
    run_fold,
    stitch,
    stitched_returns,
    walk_forward,
)
from rltrade.features.dataset import build_dataset
from rltrade.features.normalize import Normalizer
from rltrade.runs import Run

#: two folds of train 200 / validation 50 / test 60 bars (purge = window 8), tiny training
WF = {"train": 200, "validation": 50, "test": 60, "folds": 2, "seeds": [0, 1]}


def _config(small_config, **wf):
    cfg = small_config(data={"source": "synthetic:planted?n_bars=420&seed=3"},
                       training={"total_steps": 256, "eval_freq": 128, "checkpoint_freq": 128})
    return cfg.with_overrides(walkforward={**WF, **wf})


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, small_config):
    cfg = _config(small_config)
    return walk_forward(cfg, "wf", tmp_path_factory.mktemp("runs"), workers=1)


def test_walkforward_writes_its_plan_folds_and_stitched_equity(sequential):
    res = sequential
    path = res.path
    report = json.loads((path / "walkforward.json").read_text())
    assert report["plan"]["bars"] == {"train": 200, "validation": 50, "test": 60, "step": 60,
                                      "purge": 8, "embargo": 0}
    assert [f["fold"] for f in report["folds"]] == [0, 1]
    ds = res.plan  # the row ranges recorded are the plan's
    for entry, fold in zip(report["folds"], ds.folds, strict=True):
        for key in ("train", "validation", "test"):
            block = getattr(fold, key)
            assert entry[key]["start_row"] == block.start and entry[key]["stop_row"] == block.stop
            assert entry[key]["start"] and entry[key]["end"]
        assert entry["purge"] == 8 and entry["embargo"] == 0
        assert set(entry["seeds"]) == {"0", "1"}
        for seed, s in entry["seeds"].items():
            assert s["run"] == f"folds/fold_{fold.index}/seed_{seed}"
            assert s["test"]["bars_run"] == 60
            assert {"buy_and_hold", "flat"} <= set(s["baselines"])
            assert s["selected"]["model"] == "best"
    oos = pd.read_csv(path / "oos_steps.csv", index_col=0, parse_dates=True)
    assert len(oos) == 2 * 60
    assert list(oos.columns[:4]) == ["fold", "agent_seed_0", "agent_seed_1", "agent_median"]
    assert "buy_and_hold" in oos.columns
    np.testing.assert_allclose(oos["agent_median"],
                               oos[["agent_seed_0", "agent_seed_1"]].median(axis=1))
    # the stitched curve ends at the product of the folds' test growths
    for seed in (0, 1):
        growth = np.prod([1 + e["seeds"][str(seed)]["test"]["total_return"]
                          for e in report["folds"]])
        assert oos[f"agent_seed_{seed}"].iloc[-1] == pytest.approx(growth, rel=1e-9)
    bh = np.prod([1 + e["seeds"]["0"]["baselines"]["buy_and_hold"]["total_return"]
                  for e in report["folds"]])
    assert oos["buy_and_hold"].iloc[-1] == pytest.approx(bh, rel=1e-9)


def test_each_fold_seed_is_an_ordinary_run_trained_on_its_rows_only(sequential):
    res = sequential
    from rltrade.features.dataset import Dataset

    ds = Dataset.load(res.path / "dataset")
    for r in res.results:
        fold = res.plan.folds[r.fold]
        run = Run.open(res.path / "folds" / f"fold_{r.fold}" / f"seed_{r.seed}")
        assert run.state["status"] == "completed"
        assert run.config.training.seed == r.seed
        meta = run.metadata
        assert meta["run_mode"] == "walkforward_fold"
        train = ds.slice(fold.train.start, fold.train.stop)
        assert meta["training"]["range"] == {"start": train.index[0].isoformat(),
                                             "end": train.index[-1].isoformat(), "bars": 200}
        # evaluated (selection) on the validation rows and their window - 1 context rows
        ev = meta["training"]["eval_range"]
        assert ev["end"] == ds.index[fold.validation.stop - 1].isoformat()
        assert ev["bars"] == len(fold.validation) + 8 - 1
        # the normalizer was fitted on the fold's training rows only
        fitted = Normalizer.for_dataset(train).fit(train).to_dict()
        assert run.normalizer().to_dict() == fitted
        # the test rows were backtested once, with the selected (best) model
        (bt,) = meta["backtests"]
        assert bt["model"] == "best" and not bt["overlaps_training"]
        assert bt["data"]["start"] == str(ds.index[fold.test.start])
        assert (run.path / bt["path"] / "comparison.csv").is_file()
        assert run.model_dir("best").is_dir()


def test_the_test_rows_play_no_part_in_the_selection(sequential, small_config):
    """Scramble the prices and features of a fold's test rows: the training, the
    validation evaluations and the selected checkpoint stay exactly the same; only the test
    result changes."""
    from rltrade.features.dataset import Dataset

    res = sequential
    ds = Dataset.load(res.path / "dataset")
    fold = res.plan.folds[1]
    rows = slice(fold.test.start, fold.test.stop)
    rng = np.random.default_rng(0)
    ohlcv = ds.ohlcv.copy()
    ohlcv[rows] *= rng.uniform(0.9, 1.1, size=(fold.test.stop - fold.test.start, 1))
    features = ds.features.copy()
    features[rows] = rng.normal(size=features[rows].shape)
    scrambled = dataclasses.replace(ds, ohlcv=ohlcv, features=features)
    cfg = _config(small_config).with_overrides(training={"torch_threads": 1})
    out = res.path.parent / "scrambled"
    got = run_fold(cfg, scrambled, fold, 0, out)
    want = next(r for r in res.results if r.fold == 1 and r.seed == 0)
    assert got.selected == want.selected
    assert Run.open(got.run).state["evaluations"] == Run.open(want.run).state["evaluations"]
    assert got.test["total_return"] != want.test["total_return"]


def test_a_process_pool_gives_the_sequential_results(sequential, tmp_path, small_config):
    cfg = _config(small_config)
    pooled = walk_forward(cfg, "wf", tmp_path, workers=2)
    assert isinstance(make_executor(2), LocalExecutor)
    pd.testing.assert_frame_equal(pooled.oos, sequential.oos)
    # the driver recorded the trials of the worker processes' runs; same statistics
    assert len(TrialRegistry(registry_path(None, tmp_path)).trials("wf")) == 4
    assert pooled.report["statistics"] == sequential.report["statistics"]
    a, b = pooled.report["significance"], sequential.report["significance"]
    assert a.pop("registry") != b.pop("registry") and a == b
    for a, b in zip(pooled.results, sequential.results, strict=True):
        assert (a.fold, a.seed) == (b.fold, b.seed)
        assert a.selected == b.selected and a.test == b.test and a.baselines == b.baselines


def test_data_too_short_is_refused_before_anything_is_written(tmp_path, small_config):
    cfg = _config(small_config, folds=5)
    with pytest.raises(ConfigError, match=r"too short for 5 folds.*allows 2 folds"):
        walk_forward(cfg, "wf", tmp_path)
    assert not (tmp_path / "wf").exists() and not (tmp_path / "registry.sqlite").exists()


def test_an_unreadable_registry_is_refused_before_any_training(tmp_path, small_config):
    from rltrade.experiments.registry import RegistryError

    bad = tmp_path / "not_a_registry.sqlite"
    bad.write_text("not SQLite")
    with pytest.raises(RegistryError, match="is not a trial registry"):
        walk_forward(_config(small_config), "wf", tmp_path, registry=bad)
    assert not (tmp_path / "wf").exists()


def test_a_config_without_walkforward_or_a_taken_name_is_refused(tmp_path, small_config):
    with pytest.raises(ConfigError, match="no walkforward: section"):
        walk_forward(small_config(), "wf", tmp_path)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        walk_forward(_config(small_config), "taken", tmp_path)


def test_fold_plan_reads_durations_in_bars_of_the_data(small_config):
    cfg = _config(small_config, train="8d", validation="2d", test="60h", folds=None)
    ds = build_dataset("synthetic:planted?n_bars=420&seed=3", cfg.feature_spec)
    plan = fold_plan(cfg, ds)
    assert (plan.train, plan.validation, plan.test, plan.purge) == (192, 48, 60, 8)
    cfg = cfg.with_overrides(walkforward={"purge": 20, "embargo": 3})
    assert (fold_plan(cfg, ds).purge, fold_plan(cfg, ds).step) == (20, 63)


def _fake(fold: int, seed: int, growth: list[float], bh: list[float]) -> FoldResult:
    ts = np.arange(len(growth), dtype=np.int64) + 100 * fold
    return FoldResult(fold, seed, "", {}, {}, {}, ts,
                      {AGENT: np.array(growth), "buy_and_hold": np.array(bh)}, 0.0)


def test_stitch_chains_the_test_windows_per_seed_and_takes_the_median():
    results = [_fake(0, 0, [1.0, 1.1], [1.0, 0.5]), _fake(0, 1, [1.0, 0.9], [1.0, 0.5]),
               _fake(1, 0, [1.0, 2.0], [1.0, 3.0]), _fake(1, 1, [0.5, 0.5], [1.0, 3.0])]
    oos = stitch(results, [0, 1])
    np.testing.assert_allclose(oos["agent_seed_0"], [1.0, 1.1, 1.1, 2.2])
    np.testing.assert_allclose(oos["agent_seed_1"], [1.0, 0.9, 0.45, 0.45])
    np.testing.assert_allclose(oos["agent_median"], [1.0, 1.0, 0.775, 1.325])
    np.testing.assert_allclose(oos["buy_and_hold"], [1.0, 0.5, 0.5, 1.5])
    assert oos["fold"].tolist() == [0, 0, 1, 1]


def test_executors_return_results_in_task_order():
    tasks = [(3,), (1,), (2,)]
    assert SequentialExecutor().map(abs, tasks) == [3, 1, 2]
    with pytest.raises(ConfigError):
        make_executor(0)


def _probe() -> tuple[int, bool]:
    """A worker's process id, and whether torch's compiler stack (imported by the first
    optimizer, otherwise lazily) was there before its first task."""
    import os
    import sys

    return os.getpid(), "torch._dynamo" in sys.modules


def test_the_local_pool_is_started_once_with_preloaded_workers_and_reused():
    """The pool's workers fork from a forkserver that imported the heavy modules once, and
    the same processes serve every map until the pool is closed (no start-up per map)."""
    with LocalExecutor(2) as ex:
        first = ex.map(_probe, [()] * 4)
        second = ex.map(_probe, [()] * 4)
    assert all(preloaded for _, preloaded in first + second)
    pids = {pid for pid, _ in first}
    assert 1 <= len(pids) <= 2 and {pid for pid, _ in second} <= pids
    spawned = LocalExecutor(1, start_method="spawn")
    try:
        assert spawned.map(_probe, [()]) == [(spawned.map(_probe, [()])[0][0], False)]
    finally:
        spawned.close()
    with pytest.raises(ConfigError, match="start_method"):
        LocalExecutor(2, start_method="fork")


def test_cli_walkforward_writes_the_files_and_refuses_short_data(tmp_path, capsys,
                                                                  small_config):
    from cli_helpers import run_cli

    cfg = _config(small_config, seeds=[3])
    path = tmp_path / "wf.yaml"
    path.write_text(cfg.to_yaml())
    registry = tmp_path / "trials.sqlite"
    code, out, _ = run_cli(["walkforward", "--config", str(path), "--name", "cli_wf",
                            "--runs-dir", str(tmp_path), "--workers", "1", "--steps", "128",
                            "--experiment", "cli_exp", "--registry", str(registry)],
                           capsys)
    assert code == 0
    assert "stitched out-of-sample return" in out and "agent_seed_3" in out
    assert "IQM Sharpe (annualised)" in out and "N = 2 trials of cli_exp" in out
    assert [(t.fold, t.seed) for t in TrialRegistry(registry).trials("cli_exp")] == [(0, 3),
                                                                                     (1, 3)]
    folder = tmp_path / "cli_wf"
    assert (folder / "walkforward.json").is_file() and (folder / "oos_steps.csv").is_file()
    assert Run.open(folder / "folds" / "fold_1" / "seed_3").manifest["steps"] == 128
    path.write_text(cfg.with_overrides(walkforward={"folds": 9}).to_yaml())
    code, _, err = run_cli(["walkforward", "--config", str(path), "--name", "short",
                            "--runs-dir", str(tmp_path)], capsys)
    assert code == 2
    assert err.startswith("error: the data is too short for 9 folds")
    assert len(err.strip().splitlines()) == 1


def test_a_fold_run_is_not_resumed_and_a_prepared_split_takes_no_backtest_range(
        sequential, small_config, tmp_path):
    import shutil

    from rltrade.agents.training import resume, train

    copy = tmp_path / "seed_0"  # a fold run that crashed
    shutil.copytree(next(iter(sequential.results)).run, copy,
                    ignore=shutil.ignore_patterns("train.lock"))
    Run.open(copy).write_state(status="failed")
    with pytest.raises(ConfigError, match="walk-forward fold"):
        resume(copy)
    with pytest.raises(ConfigError, match="give no backtest range"):
        train(small_config(), "x", runs_root=sequential.path.parent, backtest_start="2020-01-10",
              data=object())  # type: ignore[arg-type]


def test_report_html_has_the_fold_table_and_both_charts(sequential):
    from rltrade.experiments.report import fold_table
    from test_report import assert_no_external_resources

    page = (sequential.path / "report.html").read_text()
    report = json.loads((sequential.path / "walkforward.json").read_text())
    table = fold_table(report)
    assert len(table) == 4 and list(table["seed"]) == [0, 1, 0, 1]
    assert table["test return"].tolist() == [r.test["total_return"]
                                             for r in sequential.results]
    assert 'id="chart-stitched"' in page and 'id="chart-fold-returns"' in page
    assert "agent_median" in page and "buy_and_hold" in page
    assert page.count("<tr>") >= 1 + 4 + 1 + oos_columns(sequential)
    assert_no_external_resources(page)  # self-contained, like the backtest report


def oos_columns(result) -> int:
    return len([c for c in result.oos.columns if c != "fold"])


def test_baselines_of_a_dataset_without_strategies_leave_out_the_rule(small_config):
    """A walk-forward over features only (no strategies) judges against every baseline that
    can run on it: ``rule`` needs strategy signals or the forecast features."""
    from rltrade.agents.baselines import baseline_names
    from rltrade.evaluation.judge import compare_baselines

    cfg = small_config(features={"strategies": []})
    ds = build_dataset("synthetic:planted?n_bars=300&seed=3", cfg.feature_spec)
    assert ds.signals.shape[1] == 0
    assert baseline_names(ds) == ["buy_and_hold", "flat", "random", "oracle"]
    table, _ = compare_baselines(ds, cfg.env, None)
    assert list(table["name"]) == ["buy_and_hold", "flat", "random", "oracle"]


@pytest.mark.slow
def test_on_a_planted_market_the_walk_forward_agent_beats_buy_and_hold_on_most_folds(tmp_path):
    """``alpha_signal`` predicts the next bar's return: trained on each fold's past, selected
    on its validation window, the agent beats buy-and-hold on most test windows and over the
    stitched out-of-sample period (about a minute on 2 cores; measured: 4 of 4 folds)."""
    from rltrade.config import RunConfig

    cfg = RunConfig.from_dict({
        "data": {"source": "synthetic:planted?n_bars=4000&seed=5"},
        "features": {"features": [{"name": "column"},
                                  {"name": "returns", "params": {"periods": [1]}}],
                     "strategies": []},
        "env": {"window": 4, "episode_length": 512},
        "agent": {"hyperparams": {"n_steps": 256, "batch_size": 128, "n_epochs": 10,
                                  "learning_rate": 0.001},
                  "policy": {"net_arch": [32]}},
        "training": {"total_steps": 49152, "n_envs": 4, "eval_freq": 4096,
                     "checkpoint_freq": 0},
        "walkforward": {"train": 1500, "validation": 300, "test": 400, "folds": 4,
                        "seeds": [0]},
    })
    res = walk_forward(cfg, "planted", tmp_path, workers=1)
    wins = sum(r.test["total_return"] > r.baselines["buy_and_hold"]["total_return"]
               for r in res.results)
    assert wins >= 3
    assert res.oos["agent_seed_0"].iloc[-1] > res.oos["buy_and_hold"].iloc[-1]


# -- the trial registry and the statistics ------------------------------------------------------
def _registry(result) -> TrialRegistry:
    return TrialRegistry(registry_path(None, result.path.parent))


def test_every_fold_seed_test_run_is_recorded_as_one_trial(sequential, small_config):
    from rltrade.features.dataset import Dataset

    res = sequential
    ds = Dataset.load(res.path / "dataset")
    trials = _registry(res).trials("wf")
    assert [(t.fold, t.seed) for t in trials] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    returns = stitched_returns(res.oos)
    want_hash = config_hash(_config(small_config))
    for t, r in zip(trials, res.results, strict=True):
        fold = res.plan.folds[r.fold]
        assert t.run_path == r.run and t.experiment == "wf"
        assert t.config_hash == want_hash and t.data_fingerprint == ds.fingerprint
        assert t.bars_per_year == pytest.approx(8766.0)
        for key in ("train", "validation", "test"):
            block = getattr(fold, key)
            assert (t.ranges[key]["start_row"], t.ranges[key]["stop_row"]) == (block.start,
                                                                              block.stop)
            assert t.ranges[key]["start"] == ds.index[block.start].isoformat()
        assert (t.ranges["purge"], t.ranges["embargo"]) == (8, 0)
        # the test backtest's per-bar returns: its bars, compounding to its total return,
        # and equal to this fold's part of the stitched curve
        ts, ret = t.load_returns()
        np.testing.assert_array_equal(ts, ds.timestamps[fold.test.start:fold.test.stop])
        assert np.prod(1 + ret) - 1 == pytest.approx(r.test["total_return"], rel=1e-9)
        part = returns.loc[(res.oos["fold"] == r.fold).to_numpy(), f"agent_seed_{r.seed}"]
        np.testing.assert_allclose(ret, part.to_numpy(), rtol=1e-9, atol=1e-15)
        sharpe = np.mean(ret) / np.std(ret, ddof=1)
        assert t.sharpe == pytest.approx(sharpe, rel=1e-9)  # per bar


def test_walkforward_json_statistics_follow_the_fold_table(sequential):
    from rltrade.evaluation.aggregate import iqm

    res = sequential
    report = res.report
    stats, sig = report["statistics"], report["significance"]
    table = fold_seed_table(res.results)
    for entry in report["folds"]:
        for seed, s in entry["seeds"].items():
            row = table[(table["fold"] == entry["fold"]) & (table["seed"] == int(seed))].iloc[0]
            assert row["sharpe"] == s["test"]["sharpe"]  # annualised, from the test metrics
            assert row["total_return"] == s["test"]["total_return"]
            assert row["buy_and_hold_return"] == s["baselines"]["buy_and_hold"]["total_return"]
            assert row["flat_return"] == s["baselines"]["flat"]["total_return"]
    assert (stats["n_folds"], stats["n_seeds"]) == (2, 2)
    assert stats["sharpe"]["iqm"] == pytest.approx(iqm(table["sharpe"]))
    assert stats["total_return"]["iqm"] == pytest.approx(iqm(table["total_return"]))
    assert stats["sharpe"]["ci_lower"] <= stats["sharpe"]["iqm"] <= stats["sharpe"]["ci_upper"]
    wide = table.pivot(index="seed", columns="fold", values="total_return")
    bh = table.groupby("fold")["buy_and_hold_return"].first()
    beats = [bool(wide[k].median() > bh[k]) for k in (0, 1)]
    assert stats["beats_buy_and_hold"]["per_fold"] == beats
    assert stats["beats_buy_and_hold"]["fraction"] == pytest.approx(sum(beats) / 2)
    assert stats["beats_flat"]["folds"] == 2
    spa = stats["spa"]  # every seed's 120 stitched bars against buy-and-hold
    assert stats["spa_skipped"] is None
    assert (spa["n_observations"], spa["n_models"]) == (120, 2)
    returns = stitched_returns(res.oos)
    excess = (returns[["agent_seed_0", "agent_seed_1"]].sub(returns["buy_and_hold"], axis=0)
              .mean().to_numpy())
    np.testing.assert_allclose(spa["mean_excess_return"], excess, rtol=1e-9)
    assert 0.0 <= spa["consistent"] <= 1.0
    # significance: of the median curve's per-bar returns, deflated by the 4 recorded trials
    sharpes = [t.sharpe for t in _registry(res).trials("wf")]
    assert (sig["n_trials"], sig["n_recorded"]) == (4, 4)
    assert sig["var_trials_per_bar"] == pytest.approx(np.var(sharpes, ddof=1))
    median = returns["agent_median"].to_numpy()
    assert sig["sharpe_per_bar"] == pytest.approx(np.mean(median) / np.std(median, ddof=1))
    assert sig["sharpe_annualised"] == pytest.approx(sig["sharpe_per_bar"] * np.sqrt(8766))
    assert sig["pbo"] is None and "1 configuration" in sig["pbo_skipped"]
    assert sig["undefined"] == [] and sig["dsr_skipped"] is None


def test_dsr_deflated_by_the_walk_forwards_trials_is_below_psr(sequential):
    sig = sequential.report["significance"]
    assert sig["n_trials"] == 4 and sig["var_trials_per_bar"] > 0
    assert 0.0 <= sig["dsr"] < sig["psr"] <= 1.0


def test_a_second_config_in_the_experiment_gives_pbo_in_json_and_report(sequential, tmp_path,
                                                                          small_config):
    import shutil

    root = tmp_path / "runs"  # a copy: the fixture's registry stays as it was
    shutil.copytree(sequential.path.parent, root)
    cfg = _config(small_config, seeds=[0]).with_overrides(training={"total_steps": 128})
    res = walk_forward(cfg, "wf_other", root, experiment="wf")
    trials = TrialRegistry(root / "registry.sqlite").trials("wf")
    assert len(trials) == 6 and len({t.config_hash for t in trials}) == 2
    sig = res.report["significance"]
    assert (sig["n_trials"], sig["n_configurations"]) == (6, 2)
    pbo = sig["pbo"]
    assert sig["pbo_skipped"] is None and 0.0 <= pbo["pbo"] <= 1.0
    assert pbo["n_configurations"] == 2 and pbo["n_partitions"] == 16
    assert sum(pbo["logit_histogram"]["counts"]) == pbo["n_combinations"]
    page = (res.path / "report.html").read_text()
    assert "Probability of Backtest Overfitting" in page and 'id="chart-pbo-logits"' in page


def test_report_html_shows_the_statistics(sequential):
    page = (sequential.path / "report.html").read_text()
    report = sequential.report
    sig = report["significance"]
    assert 'id="statistics"' in page and "IQM" in page and "95% CI" in page
    assert "Sharpe ratio (annualised)" in page and "buy and hold" in page
    assert "p-value (consistent)" in page
    assert f"{report['statistics']['spa']['consistent']:.3g}" in page
    assert "PSR" in page and "DSR" in page and "N = 4 trials" in page
    assert f"{sig['psr']:.3g}" in page and f"{sig['dsr']:.3g}" in page
    assert "Not computed: experiment &#x27;wf&#x27; has 1 configuration" in page


@pytest.mark.slow
def test_on_a_random_walk_the_spa_test_finds_no_edge(tmp_path, small_config):
    """A zero-drift GBM: no policy has an edge, so the SPA test of every seed against
    buy-and-hold on 2 x 300 stitched test bars does not reject (p > 0.05)."""
    features = {"features": [{"name": "returns", "params": {"periods": [1]}}, {"name": "rsi"}],
                "strategies": [{"name": "supertrend", "timeframe": None}]}
    cfg = small_config(replace={"features": features},
                       data={"source": "synthetic:gbm?n_bars=1000&seed=11"},
                       training={"total_steps": 256, "eval_freq": 128, "checkpoint_freq": 128})
    cfg = cfg.with_overrides(walkforward={**WF, "test": 300})
    res = walk_forward(cfg, "gbm", tmp_path)
    spa = res.report["statistics"]["spa"]
    assert spa["n_observations"] == 600 and spa["n_models"] == 2
    assert spa["consistent"] > 0.05


def test_a_cpcv_split_trains_once_inside_its_segments_and_tests_each_group(tmp_path,
                                                                           small_config):
    from rltrade.experiments.folds import cpcv_path_statistics, cpcv_plan
    from rltrade.experiments.walkforward import run_cpcv_split

    cfg = _config(small_config)
    ds = build_dataset("synthetic:planted?n_bars=420&seed=3", cfg.feature_spec)
    plan = cpcv_plan(len(ds), groups=4, test_groups=2, purge=8)
    results = [run_cpcv_split(cfg, ds, plan, i, 0, tmp_path) for i in range(len(plan.splits))]
    for res, split in zip(results, plan.splits, strict=True):
        run = Run.open(res.run)
        assert res.run.endswith(f"splits/split_{split.index}/seed_0")
        assert run.config.env.segments is not None
        span = split.train_segments()[0][0]
        assert [tuple(np.add(s, span)) for s in run.config.env.segments] == list(
            split.train_segments())
        for g in split.test_groups:  # every bar of the group (the data's first window - 1
            block = plan.groups[g]    # bars only give the first group's context)
            first = max(block.start, cfg.env.window - 1)
            assert res.group_returns[g].size == block.stop - first
            assert (tmp_path / res.run / "cpcv" / f"group_{g}").is_dir()
            # the baselines on the same bars: same length, and flat stays flat
            for name in ("buy_and_hold", "flat"):
                assert res.baseline_returns[name][g].size == res.group_returns[g].size
                assert res.baseline_tests[g][name]["name"] == name
            assert res.group_timestamps[g].size == res.group_returns[g].size
            assert np.allclose(res.baseline_returns["flat"][g], 0.0)
    returns = {(r.split, g): v for r in results for g, v in r.group_returns.items()}
    stats = cpcv_path_statistics(plan, returns, results[0].bars_per_year)
    assert len(stats["paths"]) == plan.n_paths == 3
    assert all(p["bars"] == len(ds) - (cfg.env.window - 1) for p in stats["paths"])
    assert stats["sharpe"]["n"] == 3


def test_walkforward_cpcv_trains_every_split_once_and_reports_the_path_sharpes(tmp_path,
                                                                               small_config):
    from rltrade.experiments.walkforward import CpcvResult

    cfg = _config(small_config, scheme="cpcv", groups=4, test_groups=2, seeds=[0])
    res = walk_forward(cfg, "cv", tmp_path, workers=1)
    assert isinstance(res, CpcvResult)
    report = json.loads((res.path / "walkforward.json").read_text())
    cpcv = report["cpcv"]
    # every split trained exactly once (one seed), each its own run directory
    assert sorted(s["split"] for s in cpcv["splits"]) == list(range(6))
    runs = [s["run"] for s in cpcv["splits"]]
    assert len(set(runs)) == 6 and all((res.path / r / "metadata.json").is_file() for r in runs)
    for s in cpcv["splits"]:
        segs = Run.open(res.path / s["run"]).config.env.segments
        assert segs is not None and len(segs) >= 1
    assert cpcv["n_paths"] == 3 and np.array(cpcv["paths"]).shape == (4, 3)
    stats = cpcv["seeds"]["0"]
    assert len(stats["paths"]) == 3
    assert all(p["bars"] == res.plan.n_rows - (cfg.env.window - 1)
               for p in stats["paths"])
    sharpes = [p["sharpe"] for p in stats["paths"]]
    # baselines per group and per path: buy-and-hold's path return is the same on every path
    # (deterministic on the same bars), the agent judged against it path by path
    for s in cpcv["splits"]:
        for g in s["test_groups"]:
            assert {"buy_and_hold", "flat"} <= set(s["baselines"][str(g)])
    bh = [p["buy_and_hold_return"] for p in stats["paths"]]
    assert bh == pytest.approx([bh[0]] * 3) and all(p["flat_return"] == 0.0
                                                      for p in stats["paths"])
    assert [p["beats_buy_and_hold"] for p in stats["paths"]] == [
        p["return"] > p["buy_and_hold_return"] for p in stats["paths"]]
    assert stats["fraction_beating_buy_and_hold"] == pytest.approx(
        np.mean([p["beats_buy_and_hold"] for p in stats["paths"]]))
    assert stats["sharpe"]["n"] == 3
    # every split x seed recorded by the driver as one trial of the walk-forward's experiment
    registry = TrialRegistry(tmp_path / "registry.sqlite")
    trials = registry.trials("cv")
    assert sorted(t.fold for t in trials) == list(range(6))
    for t in trials:
        split = res.plan.splits[t.fold]
        assert t.ranges["test_groups"] == list(split.test_groups)
        assert [b["start_row"] for b in t.ranges["train"]] == [b.start for b in split.train]
        assert "start" in t.ranges["test"][0] and t.ranges["purge"] == res.plan.purge
        mine = next(r for r in res.results if r.split == t.fold)
        stamps, got = t.load_returns()
        assert np.allclose(got, np.concatenate([mine.group_returns[g]
                                                for g in sorted(mine.group_returns)]))
        assert (np.diff(stamps) > 0).all() and stamps.size == got.size
    sig = cpcv["significance"]
    assert sig["n_recorded"] == 6 and sig["n_trials"] == 6
    assert sig["path"] in range(3) and sig["seed"] == 0
    assert sig["dsr"] <= sig["psr"]
    median = sorted(sharpes)[1]
    assert sig["sharpe_annualised"] == pytest.approx(median)
    assert stats["sharpe"]["min"] == pytest.approx(min(sharpes))
    assert stats["sharpe"]["max"] == pytest.approx(max(sharpes))
    html = (res.path / "report.html").read_text()
    assert "Path Sharpe distribution" in html and "chart-cpcv-paths" in html
    assert "buy-and-hold return" in html and "paths beating buy-and-hold" in html
    for p in stats["paths"]:
        assert f"{p['sharpe']:.3f}"[:4] in html


def test_cli_walkforward_cpcv_prints_the_path_sharpe_distribution(tmp_path, capsys,
                                                                  small_config):
    from cli_helpers import run_cli

    cfg = _config(small_config, scheme="cpcv", groups=3, test_groups=1, seeds=[0])
    path = tmp_path / "cv.yaml"
    path.write_text(cfg.to_yaml())
    code, out, _ = run_cli(["walkforward", "--config", str(path), "--name", "cli_cv",
                            "--runs-dir", str(tmp_path), "--workers", "1", "--steps", "128"],
                           capsys)
    assert code == 0
    assert "(cpcv): annualised Sharpe of the" in out and "median" in out and "report.html" in out
    report = json.loads((tmp_path / "cli_cv" / "walkforward.json").read_text())
    assert report["cpcv"]["n_paths"] == 1 and len(report["cpcv"]["splits"]) == 3


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BTC = SHARED / "btcusdt_perp_binance_1h_2019-09_2023-06.csv.gz"


def _docs_example_config() -> dict:
    """The YAML of docs/walkforward.md's "Example config" section."""
    import re

    import yaml

    text = (Path(__file__).resolve().parents[1] / "docs" / "walkforward.md").read_text()
    section = text.split("## Example config", 1)[1]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not BTC.is_file(), reason="../shared/data is not present")
def test_cli_walkforward_on_btc_with_the_docs_example_config_writes_every_file(tmp_path,
                                                                             capsys):
    """``rltrade walkforward`` on the BTCUSDT perpetual 1h file with the example config of
    docs/walkforward.md, with fewer steps (``--steps 256``) and the data cut to 2019-09 ..
    2020-07 (two monthly folds of 180 days' training; three seeds): every file of the
    walk-forward's folder is written."""
    import yaml

    from cli_helpers import run_cli

    data = _docs_example_config()
    assert data["data"]["source"] == f"../shared/data/{BTC.name}"
    data["data"].update(source=str(BTC), end="2020-07-01")
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, out, err = run_cli(["walkforward", "--config", str(path), "--name", "btc_wf",
                              "--runs-dir", str(tmp_path), "--workers", "1",
                              "--steps", "256"], capsys)
    assert code == 0, err
    folder = tmp_path / "btc_wf"
    report = json.loads((folder / "walkforward.json").read_text())
    assert len(report["folds"]) == 2 and report["seeds"] == [0, 1, 2]
    assert report["plan"]["bars"]["train"] == 180 * 24 and report["plan"]["bars"]["purge"] == 32
    oos = pd.read_csv(folder / "oos_steps.csv", index_col=0)
    assert len(oos) == 2 * 30 * 24
    assert {"fold", "agent_seed_0", "agent_seed_1", "agent_seed_2", "agent_median",
            "buy_and_hold", "flat", "oracle"} <= set(oos.columns)
    page = (folder / "report.html").read_text()
    assert 'id="chart-stitched"' in page and 'id="statistics"' in page
    assert (folder / "config.yaml").is_file() and (folder / "dataset").is_dir()
    for fold in report["folds"]:
        for seed, entry in fold["seeds"].items():
            run = folder / entry["run"]
            assert run == folder / "folds" / f"fold_{fold['fold']}" / f"seed_{seed}"
            assert (run / "metadata.json").is_file() and (folder / entry["backtest"]).is_dir()
            assert (folder / entry["backtest"] / "comparison.csv").is_file()
    trials = TrialRegistry(tmp_path / "registry.sqlite").trials("btc_wf")
    assert len(trials) == 6
    sig = report["significance"]
    assert sig["n_trials"] == 6 and sig["dsr"] <= sig["psr"]  # deflated by the six trials
    assert "stitched out-of-sample return" in out
