"""Training runs: config, run directory, safe weights, determinism, resume after SIGKILL, and the
run lifecycle (nothing left behind by a run that cannot start, failed runs moved aside, one
process per run, step rounding, the speed of a resumed session)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from cli_helpers import lock_held_elsewhere
from rltrade.agents import training
from rltrade.agents.algorithms import load_model, read_weights
from rltrade.agents.training import planned_steps, resume, step_plan, train
from rltrade.config import RunConfig, example_yaml
from rltrade.errors import (
    CompatibilityError,
    ConfigError,
    DataError,
    RLTradeError,
    RunInUseError,
)
from rltrade.features import build_dataset
from rltrade.runs import Run


# -- config -----------------------------------------------------------------------------------
def test_example_config_validates_and_equals_defaults_where_shown():
    cfg = RunConfig.from_yaml(example_yaml())
    assert cfg.agent.algorithm == "ppo"
    assert cfg.agent.resolved_hyperparams["learning_rate"] == 3e-4
    # issue 16: the example is the default config plus what the benchmark suite chose on
    # validation windows (docs/leaderboard.md): short PPO rollouts and the switches against
    # costs; everything else equals the defaults
    assert cfg.agent.resolved_hyperparams["n_steps"] == 256
    assert cfg.agent.resolved_hyperparams["n_epochs"] == 4
    assert cfg.split.train == 0.75
    default = RunConfig()
    switches = {"decision_interval", "cost_penalty", "vol_target", "min_margin"}
    assert cfg.env.model_dump(exclude=switches) == default.env.model_dump(exclude=switches)
    assert (cfg.env.decision_interval, cfg.env.cost_penalty, cfg.env.vol_target,
            cfg.env.min_margin) == (4, 1.0, 0.1, 0.2)
    assert cfg.training.model_dump(exclude={"cost_scale"}) == \
        default.training.model_dump(exclude={"cost_scale"})
    assert cfg.training.cost_scale == 1.5
    # the example's walk-forward fits the bundled sample it names (5 folds)
    from rltrade.experiments.walkforward import fold_plan
    from rltrade.features import build_dataset

    ds = build_dataset(cfg.data.source, cfg.feature_spec)
    assert len(fold_plan(cfg, ds).folds) == 5


def test_source_document_defaults():
    ppo = RunConfig().agent.resolved_hyperparams
    assert (ppo["learning_rate"], ppo["n_steps"], ppo["batch_size"], ppo["n_epochs"],
            ppo["gamma"], ppo["gae_lambda"], ppo["clip_range"], ppo["ent_coef"]) == (
        3e-4, 2048, 64, 10, 0.99, 0.95, 0.2, 0.01)
    a2c = RunConfig.from_dict({"agent": {"algorithm": "a2c"}}).agent.resolved_hyperparams
    assert (a2c["learning_rate"], a2c["n_steps"]) == (7e-4, 5)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"agent": {"algoritm": "ppo"}}, "agent.algoritm: unknown key"),
        ({"training": {"total_steps": -5}}, "training.total_steps"),
        ({"env": {"window": 0}}, "env.window"),
        ({"agent": {"algorithm": "sac"}}, "exposure_sl"),
        ({"agent": {"algorithm": "dqn"}, "env": {"action_scheme": "exposure_sl"}}, "discrete"),
        ({"split": {"train": 1.5}}, "split.train"),
        ({"features": {"features": [{"name": "nope"}]}}, "unknown feature 'nope'"),
        ({"data": {"start": "not a date"}}, "data.start"),
        ({"surprise": 1}, "config.surprise: unknown key"),
    ],
)
def test_bad_config_names_the_key(data, needle):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(data)
    assert needle in str(err.value)


def test_config_yaml_round_trip(tmp_path, small_config):
    cfg = small_config()
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert RunConfig.from_yaml(path) == cfg
    with pytest.raises(ConfigError, match="no such config file"):
        RunConfig.from_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("agent: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.from_yaml(tmp_path / "bad.yaml")


def test_planned_steps_round_to_whole_rollouts(small_config):
    cfg = small_config(training={"total_steps": 300})
    assert planned_steps(cfg) == 384  # rollouts of 64 x 2 envs
    off = small_config(replace={"agent": {"algorithm": "dqn"}}, training={"total_steps": 301})
    assert planned_steps(off) == 302


# -- a trained run ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_config):
    root = tmp_path_factory.mktemp("runs")
    return train(small_config(), "base", runs_root=root)


def test_run_directory_is_complete(trained, small_config):
    run = trained.run
    p = run.path
    for name in ("config.yaml", "metadata.json", "manifest.json", "state.json",
                 "normalizer.json", "model/weights.pt", "model/model.json", "best/weights.pt",
                 "logs/training.log", "logs/data_pipeline.log"):
        assert (p / name).is_file(), name
    assert list((p / "tensorboard").rglob("events.out.tfevents*"))
    assert (p / "logs" / "training.log").read_text().count("eval at step") >= 2
    assert "loaded 1500 bars" in (p / "logs" / "data_pipeline.log").read_text()
    assert RunConfig.from_yaml(p / "config.yaml") == small_config()
    meta = json.loads((p / "metadata.json").read_text())
    for section in ("name", "machine", "description", "created_at", "run_mode", "training", "rl",
                    "env_spec", "environment", "data", "features", "versions", "backtests"):
        assert section in meta, section
    assert meta["rl"]["algorithm"] == "ppo" and meta["rl"]["seed"] == 0
    assert meta["env_spec"]["observation_shape"] == {"account": [9], "market": [8, 7]}
    assert meta["features"]["names"] == ["col_alpha_signal", "ret_1", "rsi_14"]
    assert meta["data"]["fingerprint"] == trained.data.dataset.fingerprint
    manifest = json.loads((p / "manifest.json").read_text())
    assert manifest["steps"] == 512 == trained.steps
    assert manifest["approx_training_flops"] > 0 and manifest["steps_per_second"] > 0
    assert manifest["best_eval"]["total_return"] >= manifest["final_eval"]["total_return"] or (
        manifest["best_eval"]["step"] < 512)
    assert run.state["status"] == "completed"
    assert not any((p / "backtests").iterdir())  # evaluations write no files
    # checkpoints: only the newest `keep_checkpoints` are kept
    assert [c.name for c in run.checkpoints()] == [
        "step_000000000128", "step_000000000256", "step_000000000384"]


def test_evaluation_is_the_backtest_of_the_eval_slice(trained):
    """Training's evaluation is run_backtest + compute_metrics; its buy-and-hold is the one
    buy-and-hold (1x, the run's costs, the same bars) in the manifest and the CLI table."""
    from rltrade.agents import make_baseline
    from rltrade.agents.training import buy_and_hold_return
    from rltrade.evaluation import run_backtest

    data, env = trained.data, trained.run.config.env
    res = run_backtest(trained.model, data.eval, env, normalizer=data.normalizer)
    final = trained.final_eval
    perf = res.metrics["performance"]
    assert final["total_return"] == res.summary["total_return"] == perf["total_return"]
    assert final["sharpe"] == perf["sharpe"] and final["max_drawdown"] == perf["max_drawdown"]
    assert final["trades"] == res.summary["n_trades"]
    assert final["bars"] == len(res.steps) == final["bars_requested"]
    assert final["stopped_early"] is False and final["stop_reason"] is None
    assert final["total_reward"] == pytest.approx(res.steps["reward"].sum(), rel=1e-12)
    assert final["bars_per_year"] == res.metrics["run"]["bars_per_year"]
    bh = run_backtest(make_baseline("buy_and_hold"), data.eval, env, benchmark=False,
                      metrics=False).summary["total_return"]
    manifest = trained.run.manifest
    assert manifest["buy_and_hold_eval_return"] == final["buy_and_hold_return"]
    assert final["buy_and_hold_return"] == pytest.approx(bh, rel=1e-12)
    assert buy_and_hold_return(data.eval, env) == bh
    # with costs: not the close-to-close move
    closes = data.eval.close[env.window - 1], data.eval.close[-1]
    assert bh != closes[1] / closes[0] - 1


def test_existing_run_is_never_overwritten(trained, small_config):
    with pytest.raises(ConfigError, match="already exists"):
        train(small_config(), "base", runs_root=trained.run.path.parent)
    with pytest.raises(ConfigError, match="already exists"):  # not even to replace a failed one
        train(small_config(), "base", runs_root=trained.run.path.parent, overwrite_failed=True)
    with pytest.raises(ConfigError, match="letters, digits and underscores"):
        train(small_config(), "bad name!", runs_root=trained.run.path.parent)


def test_weights_load_without_pickle_and_predict_the_same(trained):
    run = trained.run
    tensors = read_weights(run.path / "model")  # torch.load(weights_only=True)
    assert "policy" in tensors and "policy.optimizer" in tensors
    loaded = load_model(run.path / "model", run.config, run.metadata["env_spec"]["n_market"])
    rng = np.random.default_rng(0)
    space = trained.model.observation_space
    for _ in range(20):
        obs = {k: rng.standard_normal(v.shape).astype(np.float32)
               for k, v in space.spaces.items()}
        a1, _ = trained.model.predict(obs, deterministic=True)
        a2, _ = loaded.predict(obs, deterministic=True)
        assert a1 == a2
    # a weights file that is a pickle of arbitrary objects is refused
    evil = run.path.parent / "evil"
    evil.mkdir()
    torch.save({"x": object()}, evil / "weights.pt")
    with pytest.raises(Exception, match="not a readable rltrade weights file"):
        read_weights(evil)


def test_compatibility_check_names_each_mismatch(trained):
    run = trained.run
    run.check_compatible(trained.data.dataset)  # the training data fits
    other = build_dataset("synthetic:planted?n_bars=1500&seed=3",
                          RunConfig.from_dict({"features": {
                              "features": [{"name": "returns", "params": {"periods": [1]}},
                                           {"name": "rsi"}],
                              "strategies": []}}).feature_spec)
    with pytest.raises(CompatibilityError) as err:
        run.check_compatible(other)
    msg = str(err.value)
    assert "missing ['col_alpha_signal']" in msg
    assert "strategy set/order differs" in msg
    assert "spec hash differs" in msg
    assert "observation shape differs" in msg


def test_same_seed_gives_bit_identical_weights_and_evaluations(trained, tmp_path, small_config):
    again = train(small_config(), "again", runs_root=tmp_path)
    w1 = read_weights(trained.run.path / "model")["policy"]
    w2 = read_weights(again.run.path / "model")["policy"]
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
    assert again.evaluations == trained.evaluations
    other = train(small_config(training={"seed": 1}), "other_seed", runs_root=tmp_path)
    w3 = read_weights(other.run.path / "model")["policy"]
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)


def test_backtest_range_overlapping_training_is_refused_unless_allowed(tmp_path, small_config):
    cfg = small_config()
    ds = build_dataset("synthetic:planted?n_bars=1500&seed=3", cfg.feature_spec)
    mid = str(ds.index[len(ds) // 3])
    with pytest.raises(ConfigError, match="overlaps the training slice"):
        train(cfg, "overlap", runs_root=tmp_path, backtest_start=mid)
    assert not (tmp_path / "overlap").exists()  # refused before the run directory exists
    res = train(cfg, "overlap_ok", runs_root=tmp_path, backtest_start=mid, allow_overlap=True)
    meta = res.run.metadata
    assert meta["training"]["overlaps_backtest"] is True
    assert meta["run_mode"] == "train+backtest"


def test_backtest_range_after_the_training_range(tmp_path, small_config):
    cfg = small_config()
    ds = build_dataset("synthetic:planted?n_bars=1500&seed=3", cfg.feature_spec)
    cut = str(ds.index[1000])
    cfg = cfg.with_overrides(data={"end": cut})
    res = train(cfg, "later", runs_root=tmp_path, backtest_start=cut)
    data = res.data
    assert data.train.timestamps[-1] < data.eval.timestamps[0] < ds.timestamps[1000]
    # the backtest slice: window - 1 context bars, then the range
    assert data.backtest.timestamps[cfg.env.window - 1] == ds.timestamps[1000]
    assert res.run.metadata["training"]["overlaps_backtest"] is False
    # a crash: the resumed run asks for the same ranges (same data, same slices)
    res.run.write_state(status="running")
    again = resume(res.run.path)
    assert again.steps == res.steps
    assert np.array_equal(again.data.backtest.timestamps, data.backtest.timestamps)


@pytest.mark.parametrize(
    ("algorithm", "scheme", "extra"),
    [
        ("a2c", "discrete3", {}),
        ("sac", "exposure_sl", {"learning_starts": 64, "buffer_size": 2000, "batch_size": 32}),
        ("dqn", "discrete6", {"learning_starts": 64, "buffer_size": 2000, "batch_size": 32}),
        ("recurrent_ppo", "discrete3", {"n_steps": 64, "batch_size": 64, "n_epochs": 1}),
    ],
)
def test_every_algorithm_trains_saves_and_loads(algorithm, scheme, extra, tmp_path,
                                                small_config):
    cfg = small_config(replace={
        "env": {"window": 8, "episode_length": 256, "action_scheme": scheme,
                "layout": "flat" if algorithm == "sac" else "window"},
        "agent": {"algorithm": algorithm, "hyperparams": extra,
                  "policy": {"net_arch": [16], "lstm_hidden_size": 8}},
        "training": {"total_steps": 256, "n_envs": 2, "eval_freq": 0, "checkpoint_freq": 128,
                     "torch_threads": 1},
    })
    res = train(cfg, algorithm, runs_root=tmp_path)
    assert res.steps == planned_steps(cfg)
    # its evaluation is its backtest (recurrent state and episode starts included)
    from rltrade.evaluation import run_backtest

    bt = run_backtest(res.model, res.data.eval, cfg.env, normalizer=res.data.normalizer)
    assert res.final_eval["total_return"] == bt.summary["total_return"]
    assert res.final_eval["bars"] == len(bt.steps)
    loaded = load_model(res.run.path / "model", cfg, res.run.metadata["env_spec"]["n_market"])
    obs = res.model.observation_space.sample()
    state = None
    if algorithm == "recurrent_ppo":
        a1, _ = res.model.predict(obs, state=state, episode_start=np.ones(1, bool),
                                  deterministic=True)
        a2, _ = loaded.predict(obs, state=state, episode_start=np.ones(1, bool),
                               deterministic=True)
    else:
        a1, _ = res.model.predict(obs, deterministic=True)
        a2, _ = loaded.predict(obs, deterministic=True)
    assert np.array_equal(a1, a2)


# -- crash and resume -----------------------------------------------------------------------
_CHILD = """
import sys
from rltrade.agents.training import train
from rltrade.config import RunConfig
cfg = RunConfig.from_yaml(sys.argv[1])
train(cfg, "crash", runs_root=sys.argv[2])
"""


def test_sigkill_mid_training_then_resume_completes(tmp_path, small_config):
    cfg = small_config(training={"total_steps": 30000, "checkpoint_freq": 256,
                                 "eval_freq": 8192})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(cfg.to_yaml())
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(cfg_path), str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_dir = tmp_path / "crash"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            cps = [p for p in (run_dir / "checkpoints").glob("step_*")
                   if (p / "model.json").exists()] if run_dir.exists() else []
            if len(cps) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        # the run is still training: a resume is refused, naming the process that trains it
        with pytest.raises(RunInUseError, match=f"in use by process {proc.pid}"):
            resume(run_dir)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    run = Run.open(run_dir)
    assert run.state["status"] == "running"  # it never got to say anything else
    # the newest complete checkpoint is where training resumes; the kill can land between a
    # checkpoint's publication and the state file's update, so the state may say one earlier
    killed_at = int(run.checkpoints()[-1].name.removeprefix("step_"))
    assert 0 < run.state["steps_done"] <= killed_at < planned_steps(cfg)
    assert run.lock_holder() is None  # the kernel let the killed process's lock go
    res = resume(run_dir)
    assert res.steps == planned_steps(cfg) == 30080
    assert run.state["status"] == "completed"
    manifest = run.manifest
    assert manifest["resumed"] is True and manifest["steps"] == 30080
    # the resumed run, once complete, is recorded as a trial of its experiment (its name)
    from rltrade.experiments.registry import TrialRegistry

    (trial,) = TrialRegistry(tmp_path / "registry.sqlite").trials("crash")
    assert trial.run_path == str(run_dir) and trial.n_returns == manifest["final_eval"]["bars"]
    # this session's speed is over this session's steps; the totals count the first session too
    assert res.resumed_from == killed_at and res.session_steps == 30080 - killed_at
    assert manifest["session"] == {"resumed_from": killed_at, "steps": 30080 - killed_at,
                                   "wall_seconds": res.wall_seconds,
                                   "steps_per_second": res.steps_per_second}
    assert res.steps_per_second == pytest.approx(res.session_steps / res.wall_seconds)
    assert manifest["wall_seconds"] == res.total_wall_seconds > res.wall_seconds
    assert f"resumed at step {killed_at:,}" in res.describe()
    assert "30,080 steps in all" in res.describe()
    # every artifact in the directory is readable
    for path in run_dir.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif path.name == "weights.pt":
            read_weights(path.parent)
    assert not list(run_dir.rglob("*.tmp"))
    with pytest.raises(ConfigError, match="already complete"):
        resume(run_dir)


def test_forecast_diagnostics_are_written_with_the_run(tmp_path, small_config):
    cfg = small_config(replace={
        "features": {"features": [
            {"name": "returns", "params": {"periods": [1]}},
            {"name": "forecast", "params": {"horizon": 1, "refit_every": 400, "min_train": 300,
                                            "max_iter": 10}}], "strategies": []},
        "training": {"total_steps": 128, "n_envs": 2, "eval_freq": 0, "checkpoint_freq": 0},
    })
    res = train(cfg, "fc", runs_root=tmp_path)
    diag = json.loads((res.run.path / "forecast_diagnostics.json").read_text())
    assert diag["n_predictions"] > 0 and 0.0 <= diag["brier"] <= 2.0
    assert "reliability" in diag


# -- lifecycle ----------------------------------------------------------------------------------
def _garbage(path):
    path.write_bytes(b"\x00\x1b[31m\xff\xfe" * 50)
    return str(path)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("missing file", DataError),
        ("too few bars", DataError),
        ("dates outside the data", DataError),
        ("unreadable file", DataError),
        ("unknown hyperparameter", ConfigError),
        ("backtest range without bars", RLTradeError),
    ],
)
def test_a_run_that_cannot_start_leaves_nothing_behind(case, error, tmp_path, small_config):
    kwargs = {}
    cfg = {
        "missing file": lambda: small_config(data={"source": str(tmp_path / "nope.csv")}),
        "too few bars": lambda: small_config(
            data={"source": "synthetic:planted?n_bars=25&seed=3"}),
        "dates outside the data": lambda: small_config(data={"start": "2031-01-01"}),
        "unreadable file": lambda: small_config(data={"source": _garbage(tmp_path / "b.csv")}),
        "unknown hyperparameter": lambda: small_config(agent={"hyperparams": {"n_stepz": 3}}),
        "backtest range without bars": lambda: small_config(),
    }[case]()
    if case == "backtest range without bars":
        kwargs = {"backtest_start": "2031-01-01"}
    root = tmp_path / "runs"
    with pytest.raises(error):
        train(cfg, "doomed", runs_root=root, **kwargs)
    assert not (root / "doomed").exists()
    assert not root.exists() or not list(root.iterdir())


def test_a_failed_run_is_moved_aside_only_when_asked(tmp_path, small_config, monkeypatch):
    cfg = small_config(training={"total_steps": 256, "eval_freq": 0, "checkpoint_freq": 0})

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as m:  # the final model cannot be written
        m.setattr(training, "save_model", boom)
        with pytest.raises(RuntimeError, match="disk on fire"):
            train(cfg, "flaky", runs_root=tmp_path)
    failed = Run.open(tmp_path / "flaky")
    assert failed.state["status"] == "failed" and "disk on fire" in failed.state["error"]
    assert failed.lock_holder() is None  # the lock went with the failed attempt
    with pytest.raises(ConfigError, match="--overwrite-failed") as err:
        train(cfg, "flaky", runs_root=tmp_path)
    assert "failed attempt" in str(err.value) and "disk on fire" in str(err.value)
    res = train(cfg, "flaky", runs_root=tmp_path, overwrite_failed=True)
    assert res.run.state["status"] == "completed" and res.steps == 256
    moved = res.run.replaced
    assert moved is not None and moved.parent == tmp_path
    assert moved.name.startswith("flaky.failed-")
    assert Run.open(moved).state["error"] == "RuntimeError: disk on fire"  # nothing deleted
    assert "moved the failed run" in (res.run.path / "logs" / "training.log").read_text()




def test_a_run_is_trained_by_one_process_at_a_time(tmp_path, small_config):
    run = Run.create("busy", small_config(), tmp_path)
    run.release_lock()
    with lock_held_elsewhere(run.path) as holder:
        assert run.lock_holder() == holder.pid
        with pytest.raises(RunInUseError) as err:
            resume(run.path)
        assert f"process {holder.pid}" in str(err.value) and "train.lock" in str(err.value)
        with pytest.raises(RunInUseError):
            run.acquire_lock()
    assert run.lock_holder() is None
    with run.locked():  # free again once the holder is gone
        assert run.lock_holder() == os.getpid()


def test_step_counts_round_to_whole_rollouts_and_are_recorded(tmp_path, small_config):
    default = step_plan(RunConfig.from_dict({"training": {"total_steps": 4000}}))
    assert default.unit == 2048 * 8
    assert (default.total_steps, default.eval_freq, default.checkpoint_freq) == (
        16384, 16384, 16384)
    assert default.notes()[0] == ("training.total_steps 4,000 becomes 16,384: the run steps in "
                                  "rollouts of 2,048 steps x 8 envs (16,384 steps)")
    assert any("training.eval_freq 20,000 becomes 16,384" in n for n in default.notes())
    exact = step_plan(small_config())
    assert exact.notes() == [] and exact.asked == exact.actual
    # an evaluation every 200 steps asked, rollouts of 128: every 256, at fixed multiples
    cfg = small_config(training={"total_steps": 1000, "eval_freq": 200, "checkpoint_freq": 300})
    plan = step_plan(cfg)
    assert plan.actual == {"total_steps": 1024, "eval_freq": 256, "checkpoint_freq": 256}
    res = train(cfg, "rounded", runs_root=tmp_path)
    assert [e["step"] for e in res.evaluations] == [256, 512, 768, 1024]
    assert [c.name for c in res.run.checkpoints()] == [
        "step_000000000256", "step_000000000512", "step_000000000768"]
    meta = res.run.metadata["rl"]["step_plan"]
    assert meta["asked"] == {"total_steps": 1000, "eval_freq": 200, "checkpoint_freq": 300}
    assert meta["actual"] == {"total_steps": 1024, "eval_freq": 256, "checkpoint_freq": 256}
    log = (res.run.path / "logs" / "training.log").read_text()
    assert "training.eval_freq 200 becomes 256" in log and "WARNING" in log


def test_timeframe_is_part_of_compatibility(trained):
    spec = trained.run.config.feature_spec
    four_hours = build_dataset("synthetic:planted?n_bars=1500&seed=3&timeframe=4h", spec)
    with pytest.raises(CompatibilityError) as err:
        trained.run.check_compatible(four_hours)
    msg = str(err.value)
    assert "bar timeframe differs: model trained on 1h bars, data has 4h bars" in msg
    assert "strategy timeframes differ: model supertrend@1h, data supertrend@4h" in msg
