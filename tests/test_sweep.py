"""Sweeps: the space refused before anything runs, trials on the validation windows only, a
failing trial recorded and the sweep going on, the final walk-forward judged against the
sweep's trials (DSR, PBO), and an interrupted sweep resumed without repeating finished
trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cli_helpers import run_cli
from rltrade.errors import ConfigError
from rltrade.experiments.executors import SequentialExecutor
from rltrade.experiments.registry import TrialRegistry
from rltrade.experiments.sweep import (
    UnitResult,
    apply_params,
    load_space,
    objective_value,
    sweep,
)

#: two folds of train 200 / validation 50 / test 60 bars, one seed, tiny training
WF = {"train": 200, "validation": 50, "test": 60, "folds": 2, "seeds": [0]}
SPACE = {"agent.hyperparams.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-3,
                                             "log": True},
         "agent.hyperparams.gamma": {"type": "categorical", "choices": [0.9, 0.99]}}


def sweep_config(small_config):
    cfg = small_config(data={"source": "synthetic:planted?n_bars=420&seed=3"},
                       training={"total_steps": 64, "eval_freq": 64, "checkpoint_freq": 64},
                       agent={"hyperparams": {"n_steps": 32, "batch_size": 32, "n_epochs": 1}})
    return cfg.with_overrides(walkforward=WF)


# -- the space ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "spec", "needle"), [
    ("env.no_such_field", {"type": "int", "low": 1, "high": 2}, "env has no field"),
    ("nosection.x", {"type": "int", "low": 1, "high": 2}, "the config has no field"),
    ("agent.hyperparams.no_such_kwarg", {"type": "float", "low": 0.1, "high": 0.2},
     "unknown key"),
    ("env.window.x", {"type": "int", "low": 1, "high": 2}, "is a value, not a section"),
    ("env", {"type": "int", "low": 1, "high": 2}, "not a dotted config key"),
    ("env.engine", {"type": "int", "low": 1, "high": 2}, "is a whole section"),
    ("walkforward.folds", {"type": "int", "low": 1, "high": 3}, "cannot be swept"),
    ("data.timeframe", {"type": "categorical", "choices": ["1h", "4h"]}, "cannot be swept"),
    ("training.seed", {"type": "int", "low": 0, "high": 3}, "cannot be swept"),
    ("training.n_envs", {"type": "int", "low": 0, "high": 4}, "greater than or equal to 1"),
    ("training.n_envs", {"type": "int", "low": 5, "high": 2}, "above high"),
    ("training.n_envs", {"type": "int", "low": 1.5, "high": 2}, "must be an integer"),
    ("agent.hyperparams.learning_rate", {"type": "float", "low": 0.0, "high": 1e-3,
                                         "log": True}, "log needs low > 0"),
    ("agent.hyperparams.learning_rate", {"type": "float", "low": 1e-3, "high": 1e-3},
     "low equals high"),
    ("agent.hyperparams.learning_rate", {"type": "uniform", "low": 0.1, "high": 0.2},
     "type must be one of"),
    ("agent.hyperparams.learning_rate", {"type": "float", "low": 0.1, "high": 0.2, "q": 1},
     "unknown field"),
    ("agent.hyperparams.learning_rate", {"type": "float", "low": "a", "high": 0.2},
     "must be a number"),
    ("env.reward", {"type": "categorical", "choices": []}, "non-empty list"),
    ("env.reward", {"type": "categorical", "choices": ["log_return", "no_such_reward"]},
     "'no_such_reward' is refused"),
])
def test_a_bad_space_is_refused_naming_the_key(small_config, key, spec, needle):
    with pytest.raises(ConfigError) as err:
        load_space({key: spec}, sweep_config(small_config))
    assert key in str(err.value) or key.split(".")[0] in str(err.value)
    assert needle in str(err.value)


def test_the_issue_space_is_accepted(small_config, tmp_path):
    text = ("agent.hyperparams.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-3, "
            "log: true}\n"
            "env.reward: {type: categorical, choices: [log_return, differential_sharpe]}\n"
            "training.n_envs: {type: int, low: 2, high: 8}\n")
    (tmp_path / "space.yaml").write_text(text)
    space = load_space(tmp_path / "space.yaml", sweep_config(small_config))
    assert list(space) == ["agent.hyperparams.learning_rate", "env.reward", "training.n_envs"]
    assert space["agent.hyperparams.learning_rate"].log
    assert space["env.reward"].choices == ("log_return", "differential_sharpe")


def test_apply_params_sets_dotted_keys(small_config):
    cfg = apply_params(sweep_config(small_config), {"agent.hyperparams.gamma": 0.9,
                                                    "env.reward": "differential_sharpe"})
    assert cfg.agent.hyperparams["gamma"] == 0.9
    assert cfg.agent.hyperparams["n_steps"] == 32  # the rest kept
    assert cfg.env.reward == "differential_sharpe"


def test_objective_is_the_median_with_undefined_as_zero():
    units = [UnitResult(0, 0, None, sharpe=s) for s in (1.0, None, 3.0, -1.0, 2.0)]
    assert objective_value(units) == 1.0


def test_cli_refuses_a_bad_space_before_anything_runs(small_config, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(sweep_config(small_config).to_yaml())
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"env.rewrd": {"type": "categorical",
                                                   "choices": ["log_return"]}}))
    code, _, err = run_cli(["sweep", "--config", str(cfg), "--space", str(space), "--trials",
                            "2", "--name", "s", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2
    assert err.startswith("error: space: env.rewrd: env has no field 'rewrd'")
    assert not (tmp_path / "runs").exists()


def test_cli_sweep_prints_every_trial_with_its_state(small_config, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(sweep_config(small_config).to_yaml())
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"agent.hyperparams.learning_rate": {
        "type": "categorical", "choices": [-1.0]}}))
    code, out, err = run_cli(["sweep", "--config", str(cfg), "--space", str(space), "--trials",
                              "2", "--name", "c", "--runs-dir", str(tmp_path / "runs"),
                              "--workers", "1", "--parallel-trials", "1"], capsys)
    assert code == 0, err
    assert out.count(" fail ") == 2
    assert (tmp_path / "runs" / "c" / "report.html").is_file()


def test_an_existing_sweep_needs_resume_and_resume_needs_a_sweep(small_config, tmp_path):
    cfg = sweep_config(small_config)
    (tmp_path / "s").mkdir()
    with pytest.raises(ConfigError, match="pass --resume"):
        sweep(cfg, SPACE, "s", 2, tmp_path)
    with pytest.raises(ConfigError, match="no sweep to resume"):
        sweep(cfg, SPACE, "t", 2, tmp_path, resume=True)
    with pytest.raises(ConfigError, match="cpcv has no validation"):
        sweep(cfg.with_overrides(walkforward={"scheme": "cpcv", "groups": 4, "test_groups": 2}),
              SPACE, "u", 2, tmp_path)


def test_a_failing_trial_is_recorded_with_its_error_and_the_sweep_goes_on(small_config,
                                                                           tmp_path):
    """A learning rate torch refuses fails every unit of its trial: each trial is recorded as
    failed with the error, the next trial still runs, nothing reaches the registry and there
    is no final walk-forward."""
    space = {"agent.hyperparams.learning_rate": {"type": "categorical", "choices": [-1.0]}}
    res = sweep(sweep_config(small_config), space, "bad", 2, tmp_path, parallel_trials=1)
    assert [r["state"] for r in res.trials] == ["fail", "fail"]
    for r in res.trials:
        assert "fold 0 seed 0" in r["error"] and "learning rate" in r["error"].lower()
    assert res.best is None and res.final is None
    assert TrialRegistry(tmp_path / "registry.sqlite").trials("bad") == []
    report = json.loads((res.path / "sweep.json").read_text())
    assert report["significance"] is None
    html = (res.path / "report.html").read_text()
    assert "no trial completed" in html


class CountingExecutor(SequentialExecutor):
    """The sequential executor, counting its map calls and their tasks."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def map(self, fn, tasks):
        self.calls.append(len(tasks))
        return super().map(fn, tasks)


def test_without_pruning_a_batch_maps_all_its_folds_at_once(small_config, tmp_path):
    cfg = sweep_config(small_config)
    counting = CountingExecutor()
    res = sweep(cfg, SPACE, "np", 1, tmp_path, executor=counting, prune=False, final=False)
    assert counting.calls == [2]  # 1 trial x 2 folds x 1 seed in one map
    (row,) = res.trials
    assert row["state"] == "complete" and list(row["intermediate"]) == ["0", "1"]
    assert row["value"] == row["intermediate"]["1"]  # the median over both folds


def test_a_resume_must_match_the_sweep_it_continues(small_config, tmp_path):
    """A resume with another space, or without the storage the sweep was given, is refused;
    a resume of a finished sweep runs nothing again."""
    cfg = sweep_config(small_config)
    space = {"agent.hyperparams.learning_rate": {"type": "categorical", "choices": [-1.0]}}
    storage = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    first = sweep(cfg, space, "r", 1, tmp_path, storage=storage)
    assert not (first.path / "study.sqlite").exists() and (tmp_path / "elsewhere.sqlite").exists()
    assert "elsewhere" not in (first.path / "sweep_config.json").read_text()
    with pytest.raises(ConfigError, match="another space"):
        sweep(cfg, {**space, "agent.hyperparams.gamma": {"type": "categorical",
                                                          "choices": [0.9]}},
              "r", 1, tmp_path, resume=True, storage=storage)
    with pytest.raises(ConfigError, match="pass --storage again"):
        sweep(cfg, space, "r", 1, tmp_path, resume=True)
    again = sweep(cfg, space, "r", 1, tmp_path, resume=True, storage=storage)
    assert again.trials == first.trials and again.timings["trials_run"] == 0


# -- a whole sweep -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, small_config):
    runs = tmp_path_factory.mktemp("runs")
    counting = CountingExecutor()
    res = sweep(sweep_config(small_config), SPACE, "sw", 4, runs, parallel_trials=2,
                executor=counting)
    res.map_calls = counting.calls
    return res


@pytest.mark.slow
def test_a_sweep_runs_its_trials_on_validation_windows_and_walks_the_best_forward(
        local_sweep):
    res = local_sweep
    assert [r["state"] for r in res.trials] == ["complete"] * 4
    assert res.best == max(res.trials, key=lambda r: r["value"])
    # with pruning, batch by batch and fold by fold: 2 batches x 2 folds of 2 trials; then
    # the final walk-forward's one map of its 2 folds
    assert res.map_calls == [2, 2, 2, 2, 2]
    # every trial ran each fold with each seed on the validation rows only: no test backtest
    for r in res.trials:
        tj = json.loads((res.path / r["dir"] / "trial.json").read_text())
        assert [(u["fold"], u["seed"]) for u in tj["units"]] == [(0, 0), (1, 0)]
        assert tj["value"] == pytest.approx(np.median([u["validation_sharpe"] or 0.0
                                                       for u in tj["units"]]))
        for u in tj["units"]:
            meta = json.loads((res.path / u["run"] / "metadata.json").read_text())
            (bt,) = meta["backtests"]
            assert pd.Timestamp(bt["data"]["end"]) == pd.Timestamp(
                meta["training"]["eval_range"]["end"])
    # the final walk-forward is an ordinary one, of the best trial's configuration
    wf = json.loads((res.path / "final" / "walkforward.json").read_text())
    assert len(wf["folds"]) == 2
    final_cfg = yaml.safe_load((res.path / "final" / "config.yaml").read_text())
    for key, value in res.best["params"].items():
        section, sub, name = key.split(".")
        assert final_cfg[section][sub][name] == pytest.approx(value)


@pytest.mark.slow
def test_the_final_is_judged_against_every_trial_dsr_and_pbo(local_sweep):
    res = local_sweep
    reg = TrialRegistry(res.path.parent / "registry.sqlite")
    rows = reg.trials("sw")
    assert len(rows) == 4  # one row per trial, its validation returns
    assert {Path(r.run_path).name for r in rows} == {f"trial_{i:04d}" for i in range(4)}
    assert all(r.n_returns == 2 * 50 for r in rows)
    assert len(reg.trials("sw_final")) == 2  # the final's folds, its own experiment
    sig = res.report["significance"]
    assert sig["experiment"] == "sw" and sig["n_trials"] == 4
    var = float(np.var([r.sharpe for r in rows], ddof=1))
    assert sig["var_trials_per_bar"] == pytest.approx(var)
    assert sig["dsr"] is not None and sig["dsr"] <= sig["psr"]
    assert 0.0 <= sig["pbo"]["pbo"] <= 1.0 and sig["pbo"]["n_configurations"] == len(
        {r.config_hash for r in rows})
    html = (res.path / "report.html").read_text()
    for text in ("Trials", "Objective over trials", "Parameter importances",
                 "Final walk-forward", "DSR", "Probability of Backtest Overfitting"):
        assert text in html
    assert res.report["importances"]["values"] or res.report["importances"]["skipped"]


# -- killed and resumed ------------------------------------------------------------------------
def _study_trials(path: Path) -> list:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=path.name, storage=f"sqlite:///{path / 'study.sqlite'}")
    return study.get_trials()


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_repeating_finished_trials(small_config, tmp_path,
                                                                  capsys):
    cfg_file, space_file = tmp_path / "cfg.yaml", tmp_path / "space.yaml"
    cfg_file.write_text(sweep_config(small_config).to_yaml())
    space_file.write_text(yaml.safe_dump(SPACE))
    runs = tmp_path / "runs"
    argv = ["sweep", "--config", str(cfg_file), "--space", str(space_file), "--trials", "2",
            "--name", "k", "--runs-dir", str(runs), "--workers", "1",
            "--parallel-trials", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "rltrade.cli", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = runs / "k" / "trials" / "trial_0001" / "folds"
    deadline = time.monotonic() + 240
    try:
        while not second.exists():  # trial 0 finished, trial 1 under way
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    before = {t.number: t for t in _study_trials(runs / "k")}
    assert before[0].state.name == "COMPLETE" and before[1].state.name == "RUNNING"
    first_unit = runs / "k" / "trials" / "trial_0000" / "folds" / "fold_0" / "seed_0"
    stamp = (first_unit / "metadata.json").stat().st_mtime_ns

    code, _, err = run_cli([*argv, "--resume"], capsys)
    assert code == 0, err
    after = {t.number: t for t in _study_trials(runs / "k")}
    assert after[0].value == before[0].value and after[0].params == before[0].params
    assert after[1].state.name == "FAIL"  # interrupted: not a finished trial
    retry = [t for t in after.values() if t.user_attrs.get("retry_of") == 1]
    assert len(retry) == 1 and retry[0].params == before[1].params
    finished = [t for t in after.values() if t.state.name == "COMPLETE"]
    assert len(finished) == 2, [(t.number, t.state, t.user_attrs) for t in after.values()]
    assert (first_unit / "metadata.json").stat().st_mtime_ns == stamp  # trial 0 not re-run
    rows = TrialRegistry(runs / "registry.sqlite").trials("k")
    assert sorted(Path(r.run_path).name for r in rows) == sorted(
        f"trial_{t.number:04d}" for t in finished)
    assert (runs / "k" / "final" / "walkforward.json").is_file()
    rows_json = {r["number"]: r for r in json.loads((runs / "k" / "sweep.json").read_text())[
        "trials"]}
    assert rows_json[1]["interrupted"] and not rows_json[0]["interrupted"]


def test_cli_sweep_prints_the_final_out_of_sample_and_why_a_figure_is_missing(
        small_config, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(sweep_config(small_config).to_yaml())
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"agent.hyperparams.learning_rate": {
        "type": "categorical", "choices": [3.0e-4]}}))
    code, out, err = run_cli(["sweep", "--config", str(cfg), "--space", str(space), "--trials",
                              "1", "--name", "one", "--runs-dir", str(tmp_path / "runs"),
                              "--workers", "1", "--parallel-trials", "1"], capsys)
    assert code == 0, err
    assert "its test windows, stitched, after costs: agent (seeds' median)" in out
    assert "buy-and-hold" in out
    # one configuration: no PBO, and the line says why instead of a bare n/a
    assert "n/a: experiment 'one' has 1 configuration; PBO compares at least two" in out
