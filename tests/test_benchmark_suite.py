"""The benchmark suite (benchmarks/suite/): a tiny run of one case on the bundled EURUSD sample
(walk-forward, summary, cache, leaderboard), the validation-only choice of the defaults, the
targets, and the real datasets' plans (skipped when ../shared/data is absent)."""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from rltrade.config import RunConfig
from rltrade.errors import ConfigError

SUITE = Path(__file__).parents[1] / "benchmarks" / "suite"
sys.path.insert(0, str(SUITE))

import suite_configs  # noqa: E402
import suite_datasets  # noqa: E402
import suite_harness  # noqa: E402
import suite_report  # noqa: E402

#: a config that trains in a second: rollouts of 64 x 2 envs, one epoch, a 16-unit network
TINY = ("old", {"agent.hyperparams.n_steps": 64, "agent.hyperparams.n_epochs": 1,
                "training.n_envs": 2, "agent.policy.net_arch": [16], "env.window": 8},
        "tiny test config")


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    """One case, eurusd_1h x tiny, quick: 2 folds of 600 / 200 / 200 bars, 2 seeds, 128 steps."""
    mp = pytest.MonkeyPatch()
    mp.setitem(suite_configs.CONFIGS, "tiny", TINY)
    mp.setitem(suite_configs.CONFIGS, "tiny-half", (
        "old", {**TINY[1], "env.max_exposure": 0.5}, "tiny at half size"))
    d = suite_datasets.DATASETS["eurusd_1h"]
    mp.setitem(suite_datasets.DATASETS, "eurusd_1h", dataclasses.replace(
        d, quick={"train": 600, "validation": 200, "test": 200, "folds": 2}))
    mp.setitem(suite_harness.MODES, "quick",
               {"total_steps": 128, "eval_freq": 128, "checkpoint_freq": 128})
    out = tmp_path_factory.mktemp("suite")
    case = suite_harness.run_case("eurusd_1h", "tiny", True, out)
    yield out, case
    mp.undo()


def test_a_case_runs_the_walkforward_and_summarises_it(tiny_suite):
    _, case = tiny_suite
    assert case["cached"] is False and case["folds"] == 2 and case["seeds"] == [0, 1]
    assert case["oos_bars"] == 400
    # the stitched return of each seed compounds the folds' test returns of its walk-forward
    wf = suite_harness.json.loads((Path(case["run"]) / "walkforward.json").read_text())
    for seed, stats in case["per_seed"].items():
        growth = np.prod([1 + f["seeds"][seed]["test"]["total_return"] for f in wf["folds"]])
        assert stats["total_return"] == pytest.approx(growth - 1, rel=1e-9)
        assert stats["trades"] == sum(f["seeds"][seed]["test"]["trades"] for f in wf["folds"])
        assert stats["costs"] >= 0 and stats["annual_turnover"] >= 0
        # gross = net + costs
        assert stats["gross"] == pytest.approx(stats["total_return"] + stats["costs"], abs=0.02)
    assert case["baselines"]["flat"]["total_return"] == 0.0
    bh = np.prod([1 + f["seeds"]["0"]["baselines"]["buy_and_hold"]["total_return"]
                  for f in wf["folds"]]) - 1
    assert case["baselines"]["buy_and_hold"]["total_return"] == pytest.approx(bh, rel=1e-9)
    # the best signal is chosen per fold on the validation rows, among the strategy signals
    for choice in case["signal_choice"].values():
        rets = choice["validation_returns"]
        assert choice["chosen"] == max(rets, key=lambda k: (rets[k], k))
        assert all(n.startswith("signal:") for n in rets)
    assert len(case["validation"]) == 4
    assert set(case["versus"]) >= {"flat", "buy_and_hold", "random", "best_signal_validation"}


def test_a_cached_case_is_not_run_again_and_the_same_config_is_reused(tiny_suite):
    out, case = tiny_suite
    runs_before = sorted(p.name for p in (out / "runs").iterdir())
    again = suite_harness.run_case("eurusd_1h", "tiny", True, out)
    assert again["cached"] is True and again["key"] == case["key"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == runs_before
    # another config changes the key
    other = suite_harness.case_config(suite_datasets.DATASETS["eurusd_1h"], "tiny-half", True)
    assert suite_harness.case_key(suite_datasets.DATASETS["eurusd_1h"], other, True) \
        != case["key"]


def test_the_leaderboard_has_the_command_every_column_and_the_targets(tiny_suite):
    _, case = tiny_suite
    md = suite_report.leaderboard_markdown([case], "python benchmarks/suite/run.py --quick",
                                           mode="quick", wall_seconds=60.0)
    assert "python benchmarks/suite/run.py --quick" in md.split("## Configurations")[0]
    assert "### eurusd_1h" in md and "`tiny`" in md
    for text in ("vs flat", "vs B&H", "vs random", "vs best signal (val)", "costs / gross",
                 "turnover / yr", "validation Sharpe", "best signal in hindsight"):
        assert text in md
    rows = suite_report.csv_rows([case]).strip().splitlines()
    assert rows[0].split(",") == suite_report.COLUMNS and len(rows) == 2


def _fake(config, dataset, val_sharpe, test_return, gross=0.01, costs=0.005):
    iq = {"iqm": test_return, "ci_lower": test_return, "ci_upper": test_return, "n": 2}
    seeds = {"0": {"gross": gross, "costs": costs}, "1": {"gross": gross, "costs": costs}}
    return {"config": config, "dataset": dataset, "validation_sharpe_median": val_sharpe,
            "per_seed": seeds,
            "versus": {"flat": {"excess_annual": iq, "excess_total": iq},
                       "random": {"excess_total": iq},
                       "buy_and_hold": {"excess_total": {"iqm": -1.0}}}}


def test_the_defaults_are_chosen_on_validation_never_on_test():
    # "a" is far better on the test windows, "b" on validation: the rule picks "b"
    cases = [_fake("a", d, 0.1, 0.5) for d in ("x", "y", "z")]
    cases += [_fake("b", d, 0.9, -0.5) for d in ("x", "y", "z")]
    cases += [_fake("new-defaults", d, 5.0, 0.0) for d in ("x", "y", "z")]
    chosen, scores = suite_report.select_default(cases)
    assert chosen == "b" and scores == {"a": 0.1, "b": 0.9}
    # the median over datasets: one great dataset does not carry a config
    cases = [_fake("a", "x", 9.0, 0.0), _fake("a", "y", -1.0, 0.0), _fake("a", "z", -1.0, 0.0),
             _fake("b", "x", 0.2, 0.0), _fake("b", "y", 0.2, 0.0), _fake("b", "z", 0.2, 0.0)]
    assert suite_report.select_default(cases)[0] == "b"


def test_the_targets_of_a_case():
    ok = _fake("a", "x", 0.0, 0.01)
    assert suite_report.targets(ok) == {"floor": True, "costs": True, "beats": True}
    bad = _fake("a", "x", 0.0, -0.2, gross=0.01, costs=0.05)
    assert suite_report.targets(bad) == {"floor": False, "costs": False, "beats": False}
    # no gross profit: the cost target does not apply
    assert suite_report.targets(_fake("a", "x", 0.0, -0.2, gross=-0.01))["costs"] is None
    assert math.isclose(suite_report.TARGET_ANNUAL_VS_FLAT, -0.05)


def test_configs_are_overlays_and_old_defaults_stay_frozen():
    dotted = RunConfig().with_dotted({"env.engine.leverage": 2.0, "env.window": 8})
    assert dotted.env.engine.leverage == 2.0 and dotted.env.window == 8
    with pytest.raises(ConfigError, match="crosses a value"):
        RunConfig().with_dotted({"env.window": 8, "env.window.x": 1})
    old = suite_configs.suite_config("old-defaults")
    assert old.to_dict() == suite_configs.base_config("old").to_dict()
    assert old.agent.resolved_hyperparams["n_steps"] == 2048 and old.env.window == 32
    for name in suite_configs.CONFIGS:  # every shipped config validates
        suite_configs.suite_config(name)
    with pytest.raises(ConfigError, match="unknown suite config"):
        suite_configs.suite_config("no-such-config")


def test_the_case_config_carries_the_market_costs_and_plan():
    d = suite_datasets.DATASETS["btc_perp_1h"]
    cfg = suite_harness.case_config(d, "old-defaults", quick=True)
    assert cfg.env.engine.costs.taker_fee == pytest.approx(0.0004)
    assert cfg.evaluation.bars_per_year == 8760.0
    assert cfg.walkforward.folds == 2 and cfg.walkforward.seeds == [0, 1]
    # the plan replaces the example's walkforward section (its step of 400 bars) whole
    assert cfg.walkforward.step is None and cfg.walkforward.test == 2160
    assert cfg.training.total_steps == suite_harness.MODES["quick"]["total_steps"]
    full = suite_harness.case_config(d, "old-defaults", quick=False)
    assert full.walkforward.folds is None and len(full.walkforward.seeds) == 5


SHARED = [n for n, d in suite_datasets.DATASETS.items() if d.shared]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", SHARED)
def test_each_real_dataset_holds_its_quick_plan(name):
    from rltrade.experiments.walkforward import fold_plan
    from rltrade.features.dataset import build_dataset

    d = suite_datasets.DATASETS[name]
    if not d.available():
        pytest.skip(f"{d.path()} is absent (../shared/data)")
    bars = suite_datasets.load_suite_bars(d, quick=True)
    if d.regular_hours:
        local = bars.index.tz_convert("America/New_York")
        minutes = local.hour * 60 + local.minute
        assert minutes.min() >= 9 * 60 + 30 and minutes.max() < 16 * 60
    cfg = suite_harness.case_config(d, "old-defaults", quick=True)
    ds = build_dataset(bars, cfg.feature_spec)
    plan = fold_plan(cfg, ds)
    assert len(plan.folds) == 2


def test_a_dataset_copy_is_independent():
    # the fixture patches DATASETS; the module's plan dicts are not shared mutable state
    d = suite_datasets.DATASETS["eurusd_1h"]
    plan = d.plan(quick=True)
    plan["folds"] = 99
    assert d.plan(quick=True)["folds"] != 99
    assert copy.deepcopy(d) == d


def test_the_example_and_the_demo_carry_the_config_the_suite_chose():
    """``rltrade config example`` and the demo are the suite's chosen candidate
    (docs/leaderboard.md): the same env (costs included), agent and training switches as
    ``suite_config(CHOSEN_DEFAULT)``."""
    from rltrade.config import RunConfig, example_yaml
    from rltrade.demo import demo_config

    chosen = suite_configs.suite_config(suite_configs.CHOSEN_DEFAULT)
    example = RunConfig.from_yaml(example_yaml())
    assert suite_configs.CONFIGS[suite_configs.CHOSEN_DEFAULT][0] == "old"
    assert example.env == chosen.env and example.agent == chosen.agent
    assert example.training == chosen.training
    # the case configs of new-defaults and the chosen candidate are one (one cache key)
    d = suite_datasets.DATASETS["eurusd_1h"]
    keys = {suite_harness.case_key(d, suite_harness.case_config(d, name, True), True)
            for name in ("new-defaults", suite_configs.CHOSEN_DEFAULT)}
    assert len(keys) == 1
    demo = demo_config(steps=4096)
    assert demo.env == example.env and demo.agent == example.agent
    assert demo.walkforward is None and demo.training.total_steps == 4096
    assert demo.training.cost_scale == example.training.cost_scale
