"""Backtest-only path, comparison and the demo, end to end on a small trained run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rltrade.agents.training import train
from rltrade.cli import main
from rltrade.config import RunConfig
from rltrade.errors import CompatibilityError, ConfigError
from rltrade.evaluation.judge import backtest_run, compare, load_policy, run_dataset
from rltrade.runs import Run

SMALL = {
    "data": {"source": "synthetic:planted?n_bars=1500&seed=3", "end": "2020-02-20"},
    "features": {"features": [{"name": "column"}, {"name": "returns", "params": {"periods": [1]}},
                              {"name": "rsi"}],
                 "strategies": [{"name": "supertrend", "timeframe": None}]},
    "env": {"window": 8, "episode_length": 256},
    "agent": {"hyperparams": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
              "policy": {"net_arch": [16]}},
    "training": {"total_steps": 512, "n_envs": 2, "eval_freq": 0, "checkpoint_freq": 0},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("runs")
    return train(RunConfig.from_dict(SMALL), "judged", runs_root=root).run


def test_backtest_only_path_writes_everything_and_records_it(run):
    result = backtest_run(run, start="2020-02-21", baselines=True)
    folder = result.path
    assert folder.parent == run.path / "backtests"
    for name in ("steps.csv", "trades.csv", "summary.json", "metrics.json", "report.html"):
        assert (folder / name).is_file(), name
    assert len(list((folder / "plots").glob("*.png"))) >= 6
    html = (folder / "report.html").read_text()
    assert "oracle" in html and "buy_and_hold" in html  # the comparison table
    # the first decision is at the requested start; training ended before it
    assert result.steps.index[0] >= pd.Timestamp("2020-02-21", tz="UTC")
    entry = run.metadata["backtests"][-1]
    assert entry["id"] == folder.name and entry["overlaps_training"] is False
    assert entry["data"]["fingerprint"]
    assert "backtest of judged" in (run.path / "logs" / "backtest.log").read_text()


def test_a_backtest_over_the_training_range_is_refused_unless_allowed(run, capsys):
    before = len(run.metadata["backtests"])
    with pytest.raises(ConfigError, match="overlaps the training range .* --allow-overlap"):
        backtest_run(run, start="2020-01-05", end="2020-01-20", baselines=False, report=False)
    assert len(run.metadata["backtests"]) == before  # nothing ran, nothing recorded
    backtest_run(run, start="2020-01-05", end="2020-01-20", baselines=False, report=False,
                 allow_overlap=True)
    entry = run.metadata["backtests"][-1]
    assert entry["overlaps_training"] is True and entry["allow_overlap"] is True
    # the CLI: one error line and exit 2, or --allow-overlap
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--run", str(run.path), "--start", "2020-01-05", "--end",
              "2020-01-20", "--no-baselines"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "--allow-overlap" in err[-1]
    main_ok(["backtest", "--run", str(run.path), "--start", "2020-01-05", "--end",
             "2020-01-20", "--no-baselines", "--allow-overlap"])
    assert run.metadata["backtests"][-1]["allow_overlap"] is True


def test_mismatched_dataset_is_refused_naming_each_mismatch(run, tmp_path):
    with pytest.raises(CompatibilityError) as err:
        backtest_run(run, source="sample:EURUSD-1h", baselines=False)  # no alpha_signal
    assert "column" in str(err.value) or "alpha_signal" in str(err.value)
    # same bars, a different spec: features and strategies differ, each named
    other = RunConfig.from_dict({**SMALL, "features": {
        "features": [{"name": "returns", "params": {"periods": [1]}}], "strategies": []}})
    from rltrade.features import build_dataset

    ds = build_dataset(SMALL["data"]["source"], other.feature_spec)
    with pytest.raises(CompatibilityError) as err:
        backtest_run(run, ds, baselines=False)
    msg = str(err.value)
    for needle in ("missing ['col_alpha_signal', 'rsi_14']", "strategy set/order differs",
                   "spec hash differs", "observation shape differs"):
        assert needle in msg
    # the normalizer is part of the model
    (run.path / "normalizer.json").rename(tmp_path / "n.json")
    try:
        with pytest.raises(CompatibilityError, match="normalizer missing"):
            backtest_run(run, start="2020-02-21", baselines=False)
    finally:
        (tmp_path / "n.json").rename(run.path / "normalizer.json")


def test_cli_backtest_mismatch_is_one_error_line(run, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--run", str(run.path), "--data", "sample:EURUSD-1h",
              "--no-baselines"])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if "WARNING" not in line]  # the data layer's log of the sample's price jumps
    assert len(err) == 1 and err[0].startswith("error:") and "alpha_signal" in err[0]


def test_fast_policy_equals_the_torch_model(run):
    fast = load_policy(run, fast=True)
    slow = load_policy(run, fast=False)
    assert type(fast).__name__ == "NumpyMlpPolicy"
    ds = run_dataset(run, start="2020-02-21")
    from rltrade.evaluation import run_backtest

    a = run_backtest(fast, ds, run.config.env, normalizer=run.normalizer(), metrics=False)
    b = run_backtest(slow, ds, run.config.env, normalizer=run.normalizer(), metrics=False)
    np.testing.assert_array_equal(a.steps["equity"].to_numpy(), b.steps["equity"].to_numpy())


def test_compare_runs_and_baselines(run, tmp_path):
    result = compare([run.path, run.path], start="2020-02-21", baselines=["buy_and_hold",
                     "oracle", "flat"], out_dir=tmp_path / "cmp")
    table = result.table
    assert list(table["name"]) == ["judged", "judged", "buy_and_hold", "oracle", "flat"]
    assert table.loc[table["name"] == "flat", "total_return"].item() == 0.0
    oracle = table.loc[table["name"] == "oracle", "total_return"].item()
    assert oracle >= table["total_return"].max() - 1e-12  # the upper bound
    for name in ("comparison.csv", "comparison.md", "equity.png"):
        assert (tmp_path / "cmp" / name).is_file()
    assert pd.read_csv(tmp_path / "cmp" / "comparison.csv").shape[0] == 5


def test_cli_train_then_compare(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(RunConfig.from_dict(SMALL).to_yaml())
    main_ok(["train", "--config", str(cfg), "--name", "cli_run", "--runs-dir",
             str(tmp_path / "runs"), "--no-progress", "--backtest-start", "2020-02-21"])
    out = capsys.readouterr().out
    assert "Evaluation on the held-out slice" in out and "buy and hold" in out
    assert "Backtest range (out of sample)" in out and "report.html" in out
    main_ok(["compare", str(tmp_path / "runs" / "cli_run"), "--baselines",
             "buy_and_hold,oracle", "--out", str(tmp_path / "cmp"), "--start", "2020-02-21"])
    assert "oracle" in capsys.readouterr().out
    meta = json.loads((tmp_path / "runs" / "cli_run" / "metadata.json").read_text())
    assert meta["run_mode"] == "train+backtest"
    assert len(meta["backtests"]) == 1 and meta["backtests"][0]["overlaps_training"] is False


def test_cli_config_example_and_validate(tmp_path, capsys):
    main_ok(["config", "example", "--out", str(tmp_path / "c.yaml")])
    main_ok(["config", "validate", str(tmp_path / "c.yaml")])
    assert "valid" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("agent:\n  algoritm: ppo\n")
    with pytest.raises(SystemExit) as exc:
        main(["config", "validate", str(tmp_path / "bad.yaml")])
    assert exc.value.code == 2
    assert "agent.algoritm: unknown key" in capsys.readouterr().err


def main_ok(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
