"""The trial registry: rows, returns files, crash safety, alignment, DSR from the trials."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rltrade.config import RunConfig
from rltrade.errors import ConfigError
from rltrade.evaluation.significance import (
    deflated_sharpe_ratio,
    effective_n_trials,
    probabilistic_sharpe_ratio,
    sharpe_stats,
)
from rltrade.experiments.registry import (
    REGISTRY_ENV,
    RETURNS_FILE,
    SCHEMA_VERSION,
    RegistryError,
    TrialRegistry,
    config_hash,
    experiment_dsr,
    registry_path,
)

HOUR = 3600 * 10**9


def _record(reg: TrialRegistry, root: Path, name: str, returns, start: int = 0, **kw) -> int:
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    r = np.asarray(returns, dtype=float)
    ts = (start + np.arange(r.size, dtype=np.int64)) * HOUR
    kw.setdefault("experiment", "exp")
    kw.setdefault("config_hash", "c" + name)
    return reg.record(run_path=run, returns=r, timestamps=ts, **kw)


def _count(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return con.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    finally:
        con.close()


def test_record_and_read_back_a_trial(tmp_path):
    reg = TrialRegistry(tmp_path / "runs" / "registry.sqlite")
    r = np.random.default_rng(0).normal(0.001, 0.01, 50)
    tid = _record(reg, tmp_path / "runs", "a", r, seed=3, fold=2, data_fingerprint="fp",
                  ranges={"test": {"start": "2020-01-01"}}, bars_per_year=8760)
    (t,) = reg.trials("exp")
    assert (t.id, t.seed, t.fold, t.data_fingerprint, t.n_returns) == (tid, 3, 2, "fp", 50)
    assert t.ranges == {"test": {"start": "2020-01-01"}} and t.bars_per_year == 8760
    assert t.sharpe == pytest.approx(sharpe_stats(r)[0])
    assert t.returns_file == (tmp_path / "runs" / "a" / RETURNS_FILE).resolve()
    arr = np.load(t.returns_file, allow_pickle=False)  # plain structured array, no pickle
    assert arr.dtype.names == ("timestamp", "ret")
    ts, got = t.load_returns()
    np.testing.assert_array_equal(got, r)
    np.testing.assert_array_equal(ts, np.arange(50) * HOUR)
    # the returns path is stored relative to the registry: the runs folder can move whole
    shutil.move(tmp_path / "runs", tmp_path / "moved")
    (t2,) = TrialRegistry(tmp_path / "moved" / "registry.sqlite").trials()
    np.testing.assert_array_equal(t2.load_returns()[1], r)
    assert reg.trials("other") == [] and TrialRegistry(tmp_path / "none.sqlite").trials() == []


def test_a_run_recorded_again_replaces_its_row(tmp_path):
    reg = TrialRegistry(tmp_path / "registry.sqlite")
    _record(reg, tmp_path, "a", [0.01, -0.02, 0.03])
    second = _record(reg, tmp_path, "a", [0.01, 0.02])
    assert [(t.id, t.n_returns) for t in reg.trials()] == [(second, 2)]


def test_record_refuses_bad_inputs(tmp_path):
    reg = TrialRegistry(tmp_path / "registry.sqlite")
    (tmp_path / "a").mkdir()
    with pytest.raises(ConfigError, match="timestamps"):
        reg.record(run_path=tmp_path / "a", experiment="e", config_hash="h",
                   returns=[0.1, 0.2], timestamps=[1])
    with pytest.raises(ConfigError, match="increasing"):
        reg.record(run_path=tmp_path / "a", experiment="e", config_hash="h",
                   returns=[0.1, 0.2], timestamps=[2, 1])
    with pytest.raises(ConfigError, match="experiment"):
        reg.record(run_path=tmp_path / "a", experiment=" ", config_hash="h",
                   returns=[0.1], timestamps=[1])
    with pytest.raises(ConfigError, match="does not exist"):
        reg.record(run_path=tmp_path / "b", experiment="e", config_hash="h",
                   returns=[0.1], timestamps=[1])
    assert reg.trials() == []


def test_an_error_inside_the_transaction_writes_nothing(tmp_path):
    reg = TrialRegistry(tmp_path / "registry.sqlite")
    _record(reg, tmp_path, "a", [0.01, 0.02])
    with pytest.raises(RuntimeError, match="boom"), reg.transaction() as con:
        con.execute("DELETE FROM trials")
        con.execute("INSERT INTO trials (created_at, run_path, experiment, config_hash, ranges, "
                    "n_returns, returns_path) VALUES ('t', 'half', 'e', 'h', '{}', 0, 'x')")
        raise RuntimeError("boom")
    assert [t.run_path for t in reg.trials()] == [str(tmp_path / "a")]


#: records trial "b", but SIGKILLs itself when SQLite starts the COMMIT (the row is inserted)
KILL_AT_COMMIT = """
import os, signal, sys
import numpy as np
from rltrade.experiments.registry import TrialRegistry

class Dying(TrialRegistry):
    def connect(self):
        con = super().connect()
        def trace(sql):
            if sql.strip().upper() == "COMMIT" and os.environ.get("ARMED"):
                os.kill(os.getpid(), signal.SIGKILL)
            if sql.lstrip().upper().startswith("INSERT INTO TRIALS"):
                os.environ["ARMED"] = "1"
        con.set_trace_callback(trace)
        return con

root = sys.argv[1]
os.makedirs(root + "/b", exist_ok=True)
Dying(root + "/registry.sqlite").record(run_path=root + "/b", experiment="exp",
    config_hash="h", returns=np.array([0.1, 0.2]), timestamps=np.array([1, 2]))
print("not killed")
"""


def test_a_process_killed_mid_commit_leaves_no_half_written_row(tmp_path):
    reg = TrialRegistry(tmp_path / "registry.sqlite")
    _record(reg, tmp_path, "a", [0.01, 0.02])
    proc = subprocess.run([sys.executable, "-c", KILL_AT_COMMIT, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stdout + proc.stderr  # SIGKILL, inside the transaction
    assert _count(tmp_path / "registry.sqlite") == 1
    assert [t.run_path for t in reg.trials()] == [str(tmp_path / "a")]
    _record(reg, tmp_path, "c", [0.01, 0.02])  # and the registry still takes writes
    assert _count(tmp_path / "registry.sqlite") == 2


def test_forget_by_id_and_by_experiment(tmp_path):
    reg = TrialRegistry(tmp_path / "registry.sqlite")
    a = _record(reg, tmp_path, "a", [0.01, 0.02])
    _record(reg, tmp_path, "b", [0.01, 0.02])
    _record(reg, tmp_path, "c", [0.01, 0.02], experiment="other")
    assert reg.forget([a]) == 1
    assert reg.forget(experiment="exp") == 1
    assert [t.experiment for t in reg.trials()] == ["other"]
    assert (tmp_path / "a" / RETURNS_FILE).is_file()  # the run keeps its returns
    with pytest.raises(ConfigError, match="not both"):
        reg.forget()
    with pytest.raises(ConfigError, match="not both"):
        reg.forget([1], experiment="other")


def test_returns_matrix_aligns_by_timestamp(tmp_path):
    reg = TrialRegistry(tmp_path / "registry.sqlite")
    _record(reg, tmp_path, "a", [1.0, 2.0, 3.0, 4.0], start=0, config_hash="x", seed=0)
    _record(reg, tmp_path, "b", [10.0, 20.0, 30.0], start=2, config_hash="x", seed=1)
    _record(reg, tmp_path, "c", [5.0, 6.0, 7.0, 8.0, 9.0], start=1, config_hash="y")
    inner = reg.returns_matrix("exp")
    np.testing.assert_array_equal(inner.timestamps, np.array([2, 3]) * HOUR)
    np.testing.assert_array_equal(inner.returns, [[3.0, 10.0, 6.0], [4.0, 20.0, 7.0]])
    assert inner.labels == ["trial 1", "trial 2", "trial 3"]
    outer = reg.returns_matrix("exp", join="outer")
    assert outer.returns.shape == (6, 3) and np.isnan(outer.returns[0, 1:]).all()
    by_config = reg.returns_matrix("exp", by="config", join="outer")
    assert by_config.trial_ids == [[1, 2], [3]]
    # seeds of one configuration: their mean where both have a return, else the one there is
    np.testing.assert_array_equal(by_config.returns[:, 0], [1.0, 2.0, 6.5, 12.0, 30.0, np.nan])
    with pytest.raises(ConfigError, match="no trials"):
        reg.returns_matrix("nope")


def test_a_file_that_is_not_a_registry_or_is_newer_is_refused(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database at all, just text" * 100)
    with pytest.raises(RegistryError, match="not a trial registry"):
        TrialRegistry(bad).trials()
    reg = TrialRegistry(tmp_path / "registry.sqlite")
    _record(reg, tmp_path, "a", [0.01, 0.02])
    con = sqlite3.connect(reg.path)
    con.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(RegistryError, match="newer"):
        reg.trials()


def test_registry_path_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    assert registry_path(runs_root=tmp_path) == tmp_path / "registry.sqlite"
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "env.sqlite"))
    assert registry_path(runs_root=tmp_path) == tmp_path / "env.sqlite"
    assert registry_path(tmp_path / "arg.sqlite", tmp_path) == tmp_path / "arg.sqlite"


def test_config_hash_is_stable_and_ignores_the_seed():
    base = RunConfig()
    assert config_hash(base) == config_hash(RunConfig())
    assert config_hash(base) == config_hash(base.with_overrides(training={"seed": 99}))
    assert config_hash(base) != config_hash(base.with_overrides(training={"total_steps": 999}))


# -- DSR from the registry ------------------------------------------------------------------
def test_dsr_with_one_trial_equals_psr(tmp_path):
    reg = TrialRegistry(tmp_path / "registry.sqlite")
    r = np.random.default_rng(1).normal(0.002, 0.01, 200)
    _record(reg, tmp_path, "a", r)
    out = experiment_dsr(reg, "exp", r)
    sr, skew, kurt, n = sharpe_stats(r)
    assert out["n_trials"] == 1 and out["dsr"] == out["psr"]
    assert out["psr"] == pytest.approx(probabilistic_sharpe_ratio(sr, 0.0, n, skew, kurt))
    assert experiment_dsr(reg, "exp", r, n_trials="effective")["dsr"] == out["psr"]


def test_dsr_with_several_trials_is_below_psr(tmp_path):
    reg = TrialRegistry(tmp_path / "registry.sqlite")
    rng = np.random.default_rng(2)
    trials = [rng.normal(0.0, 0.01, 300) for _ in range(8)]
    for k, r in enumerate(trials):
        _record(reg, tmp_path, f"t{k}", r)
    best = max(trials, key=lambda r: sharpe_stats(r)[0])
    out = experiment_dsr(reg, "exp", best)
    assert out["n_trials"] == 8 and out["dsr"] < out["psr"]
    sharpes = [sharpe_stats(r)[0] for r in trials]
    assert out["var_trials"] == pytest.approx(np.var(sharpes, ddof=1))
    assert out["dsr"] == pytest.approx(deflated_sharpe_ratio(best, trial_sharpes=sharpes))
    eff = experiment_dsr(reg, "exp", best, n_trials="effective")
    assert 1 < eff["n_trials"] <= 8 and out["dsr"] <= eff["dsr"] < eff["psr"]
    with pytest.raises(ConfigError, match="no trials"):
        experiment_dsr(reg, "nope", best)


def test_effective_n_trials_counts_correlated_trials_once():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 1))
    assert effective_n_trials(np.repeat(x, 5, axis=1)) == pytest.approx(1.0)
    independent = effective_n_trials(rng.normal(size=(500, 5)))
    assert 4.5 < independent <= 5.0
    half = effective_n_trials(x + rng.normal(size=(500, 5)))  # pairwise correlation ~0.5
    assert 2.5 < half < 3.5
    assert effective_n_trials(x) == 1.0
    with pytest.raises(ConfigError):
        effective_n_trials(np.zeros(5))


# -- the CLI and the training hook ----------------------------------------------------------
def test_trials_list_and_forget_with_confirmation(tmp_path, capsys, monkeypatch):
    from cli_helpers import run_cli

    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    reg = TrialRegistry(tmp_path / "runs" / "registry.sqlite")
    _record(reg, tmp_path / "runs", "a", [0.01, -0.02, 0.03], experiment="alpha",
            bars_per_year=8760)
    _record(reg, tmp_path / "runs", "b", [0.01, 0.02, -0.01], experiment="beta", seed=7)
    runs = ["--runs-dir", str(tmp_path / "runs")]
    code, out, err = run_cli(["trials", "list", *runs], capsys)
    assert code == 0, err
    assert "alpha" in out and "beta" in out and ": 2" in out
    code, out, _ = run_cli(["trials", "list", "--experiment", "beta", *runs], capsys)
    assert "alpha" not in out and "beta" in out and "/bar" in out
    assert "N = 1 trial(s)" in out
    # the prompt: "n" keeps everything, "y" forgets
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("n\n"))
    code, out, _ = run_cli(["trials", "forget", "--experiment", "alpha", *runs], capsys)
    assert code == 0 and "Forget 1 trial(s)" in out and "nothing forgotten" in out
    assert len(reg.trials()) == 2
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("y\n"))
    code, out, _ = run_cli(["trials", "forget", "--experiment", "alpha", *runs], capsys)
    assert code == 0 and "forgot 1 trial(s)" in out
    assert [t.experiment for t in reg.trials()] == ["beta"]
    (beta,) = reg.trials()
    code, out, _ = run_cli(["trials", "forget", "--id", str(beta.id), "--yes",
                            "--registry", str(reg.path)], capsys)
    assert code == 0 and reg.trials() == []
    code, _, err = run_cli(["trials", "forget", "--id", "99", "--yes", *runs], capsys)
    assert code == 2 and "no trial with id 99" in err
    code, _, err = run_cli(["trials", "forget", *runs], capsys)
    assert code == 2 and "--experiment NAME or --id N" in err


def test_a_completed_training_run_is_recorded_as_a_trial(tmp_path, small_config, capsys,
                                                         monkeypatch):
    from cli_helpers import run_cli
    from rltrade.agents.training import train
    from rltrade.evaluation import run_backtest
    from rltrade.experiments.registry import backtest_returns

    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    cfg = small_config(training={"total_steps": 128, "eval_freq": 0, "checkpoint_freq": 0})
    path = tmp_path / "small.yaml"
    path.write_text(cfg.to_yaml())
    runs = tmp_path / "runs"
    code, _, err = run_cli(["train", "--config", str(path), "--name", "one", "--runs-dir",
                            str(runs), "--experiment", "sweep", "--no-progress"], capsys)
    assert code == 0, err
    (t,) = TrialRegistry(runs / "registry.sqlite").trials("sweep")
    assert t.run_path == str(runs / "one") and t.seed == cfg.training.seed
    assert t.config_hash == config_hash(cfg)
    # the returns are the final evaluation's: the backtest of the final model on the eval slice
    result = train(cfg, "two", runs_root=runs, registry=tmp_path / "elsewhere.sqlite")
    bt = run_backtest(result.model, result.data.eval, cfg.env, normalizer=result.data.normalizer)
    ts, r = backtest_returns(bt)
    (t2,) = TrialRegistry(tmp_path / "elsewhere.sqlite").trials("two")  # experiment = name
    got_ts, got_r = t2.load_returns()
    np.testing.assert_array_equal(got_ts, ts)
    np.testing.assert_array_equal(got_r, r)
    assert t2.data_fingerprint == result.data.dataset.fingerprint
    assert t2.bars_per_year == result.final_eval["bars_per_year"]
    assert t2.ranges["evaluation"]["bars"] == len(result.data.eval)
    # compounding the returns gives the evaluation's total return
    assert np.prod(1 + got_r) - 1 == pytest.approx(result.final_eval["total_return"])
    train(cfg, "three", runs_root=runs, record_trial=False)
    assert [t.run_path for t in TrialRegistry(runs / "registry.sqlite").trials()] == [
        str(runs / "one")]


def test_pbo_of_an_experiments_configurations(tmp_path):
    from rltrade.evaluation.overfitting import probability_of_backtest_overfitting
    from rltrade.experiments.registry import experiment_pbo

    reg = TrialRegistry(tmp_path / "registry.sqlite")
    rng = np.random.default_rng(4)
    columns = []
    for k in range(4):  # four configurations, two seeds each
        seeds = [rng.normal(0.0, 0.01, 64) for _ in range(2)]
        for s, r in enumerate(seeds):
            _record(reg, tmp_path, f"c{k}s{s}", r, config_hash=f"cfg{k}", seed=s)
        columns.append((seeds[0] + seeds[1]) / 2)
    res = experiment_pbo(reg, "exp", 8)
    want = probability_of_backtest_overfitting(np.column_stack(columns), 8)
    np.testing.assert_allclose(res.logits, want.logits)
    assert res.details["labels"] == ["cfg0", "cfg1", "cfg2", "cfg3"]
    assert experiment_pbo(reg, "exp", 8, by="trial").details["n_configurations"] == 8
    _record(reg, tmp_path, "lone", rng.normal(size=64), experiment="one")
    with pytest.raises(ConfigError, match="PBO compares at least two"):
        experiment_pbo(reg, "one", 8)


def test_trials_list_of_an_experiment_says_n_v_and_pbo(tmp_path, capsys, monkeypatch):
    from cli_helpers import run_cli

    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    reg = TrialRegistry(tmp_path / "registry.sqlite")
    rng = np.random.default_rng(5)
    for k in range(3):
        _record(reg, tmp_path, f"r{k}", rng.normal(0, 0.01, 64))
    code, out, err = run_cli(["trials", "list", "-e", "exp", "--registry", str(reg.path)],
                             capsys)
    assert code == 0, err
    assert "N = 3 trial(s); effective N = " in out and "V = " in out
    assert "PBO = " in out and "over 3 configurations (CSCV, S = 16)" in out


def test_train_resume_is_not_refused_for_the_registry_env_var(tmp_path, small_config, capsys,
                                                              monkeypatch):
    from cli_helpers import lock_held_elsewhere, run_cli
    from rltrade.runs import Run

    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "env.sqlite"))
    run_ = Run.create("busy", small_config(), tmp_path)
    run_.release_lock()
    with lock_held_elsewhere(run_.path) as holder:
        code, _out, err = run_cli(["train", "--resume", str(run_.path), "--no-progress"], capsys)
    assert code == 2 and f"is in use by process {holder.pid}" in err  # not "drop --registry"


#: ``python -c WRITER REGISTRY ROOT TAG``: records 15 trials
WRITER = """
import sys
import numpy as np
from pathlib import Path
from rltrade.experiments.registry import TrialRegistry

reg, root, tag = TrialRegistry(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
for k in range(15):
    run = root / f"{tag}{k}"
    run.mkdir()
    reg.record(run_path=run, experiment=tag, config_hash="h", returns=np.ones(3) * k,
               timestamps=np.arange(3))
"""


def test_concurrent_writers_lose_no_trial(tmp_path):
    reg = TrialRegistry(tmp_path / "registry.sqlite")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(reg.path), str(tmp_path), tag],
                              stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    assert len(reg.trials("a")) == len(reg.trials("b")) == 15
    assert _count(reg.path) == 30
