"""The rltrade command: exit codes, one-line errors, and the data commands end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cli_helpers import lock_held_elsewhere, run_cli

CORPUS = Path(__file__).parent / "data" / "malformed"




def test_help_lists_command_groups(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and "data" in out


def test_data_default_summarises_bundled_sample(capsys):
    code, out, _ = run_cli(["data"], capsys)
    assert code == 0
    assert "EURUSD" in out and "5,000" in out and "Validation" in out


def test_validate_exit_codes(capsys):
    code, out, _ = run_cli(["data", "validate", str(CORPUS / "clean.csv")], capsys)
    assert code == 0 and "clean" in out
    code, out, _ = run_cli(["data", "validate", str(CORPUS / "gaps.csv")], capsys)
    assert code == 0 and "gaps" in out  # warnings only
    code, out, _ = run_cli(["data", "validate", str(CORPUS / "ohlc_violation.csv")], capsys)
    assert code == 1 and "ohlc_envelope" in out
    code, out, err = run_cli(["data", "validate", str(CORPUS / "ragged.csv")], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "name", sorted(p.name for p in CORPUS.glob("*.csv") if p.name != "clean.csv")
)
def test_every_corpus_file_gets_a_verdict(name, capsys):
    code, out, err = run_cli(["data", "validate", str(CORPUS / name)], capsys)
    assert code in (0, 1, 2)
    assert "Traceback" not in out + err
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    else:
        assert "Validation:" in out


def test_validate_repair_writes_clean_file(tmp_path, capsys):
    out_file = tmp_path / "fixed.csv"
    code, out, _ = run_cli(
        ["data", "validate", str(CORPUS / "unsorted.csv"), "--repair", "--out", str(out_file)],
        capsys,
    )
    assert code == 0, out
    code, out, _ = run_cli(["data", "validate", str(out_file)], capsys)
    assert code == 0 and "clean" in out


def test_strict_load_error_is_one_line_with_exit_2(capsys):
    code, _, err = run_cli(["data", "summary", str(CORPUS / "unsorted.csv")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "unsorted" in err and "--repair" in err


def test_import_info_and_resample(tmp_path, capsys):
    store = tmp_path / "store"
    code, out, _ = run_cli(
        [
            "data",
            "import",
            str(CORPUS / "clean.csv"),
            "--symbol",
            "TEST",
            "--timeframe",
            "1h",
            "--store",
            str(store),
        ],
        capsys,
    )
    assert code == 0 and "48 added" in out
    code, out, _ = run_cli(
        ["data", "import", str(CORPUS / "clean.csv"), "--symbol", "TEST", "--store", str(store)],
        capsys,
    )
    assert code == 0 and "48 unchanged" in out
    code, out, _ = run_cli(["data", "info", "--store", str(store)], capsys)
    assert code == 0 and "TEST" in out and "48" in out
    target = tmp_path / "4h.parquet"
    code, out, _ = run_cli(
        ["data", "resample", str(CORPUS / "clean.csv"), "-t", "4h", "--out", str(target)], capsys
    )
    assert code == 0
    assert len(pd.read_parquet(target)) == 12


def test_console_script_installed():
    """The real entry point, as a user runs it."""
    exe = Path(sys.executable).parent / "rltrade"
    result = subprocess.run(
        [str(exe), "data", "validate", str(CORPUS / "empty.csv")],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {CORPUS / 'empty.csv'}: the file is empty"


def test_features_list_spec_and_build(tmp_path, capsys):
    code, out, _ = run_cli(["features", "list"], capsys)
    assert code == 0
    for name in ("macd", "turbulence", "supertrend", "ott", "atr_breakout", "bbands_rsi"):
        assert name in out
    spec_file = tmp_path / "spec.yaml"
    code, _, _ = run_cli(["features", "spec", "--out", str(spec_file)], capsys)
    assert code == 0 and "turbulence" in spec_file.read_text()
    out_dir = tmp_path / "ds"
    code, out, err = run_cli(["features", "build", "--data", "sample:EURUSD-1h", "--spec",
                          str(spec_file), "--out", str(out_dir)], capsys)
    assert code == 0, err
    assert (out_dir / "arrays.npz").exists() and "warm-up" in out
    from rltrade.features import Dataset

    assert len(Dataset.load(out_dir)) > 4000


def test_features_build_from_a_users_csv(tmp_path, capsys):
    csv = tmp_path / "mine.csv"
    from rltrade.data import load_bars

    load_bars("sample:GOOG-1d").to_csv(csv)
    code, _out, err = run_cli(["features", "build", "--data", str(csv), "--out",
                          str(tmp_path / "goog")], capsys)
    assert code == 0, err
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: {rsi: {length: 3}}\n")
    code, _, err = run_cli(["features", "build", "--data", str(csv), "--spec", str(bad),
                        "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "unknown parameter" in err and err.count("\n") == 1


# -- one error line, nothing else ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["data", "import", "--symbol", "X"], "rltrade data import: Missing argument 'files'"),
        (["data", "import", "a.csv", "--no-such"],
         "rltrade data import: No such option: --no-such"),
        (["train", "--no-such-option"], "rltrade train: No such option: --no-such-option"),
        (["config", "validate"], "rltrade config validate: Missing argument 'file'"),
        (["train", "--steps", "many"], "rltrade train: Invalid value for '--steps'"),
        (["no-such-command"], "rltrade: No such command 'no-such-command'"),
    ],
)
def test_usage_errors_are_one_error_line_with_exit_2(argv, needle, capsys):
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err and "--help" in err


def test_no_arguments_still_prints_the_help(capsys):
    code, out, err = run_cli(["config"], capsys)
    assert code == 2 and "validate" in out and "error" not in err


def _small_yaml(tmp_path, small_config, **sections) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(small_config(**sections).to_yaml())
    return path


def test_a_failing_command_prints_only_its_error_line(tmp_path, small_config):
    """As a user runs it: the data layer logs INFO lines before training refuses the data."""
    cfg = _small_yaml(tmp_path, small_config,
                      data={"source": "synthetic:planted?n_bars=25&seed=3"})
    argv = ["train", "--config", str(cfg), "--name", "few", "--runs-dir", str(tmp_path / "runs"),
            "--no-progress"]
    env = {**os.environ, "NO_COLOR": "1"}
    quiet = subprocess.run([sys.executable, "-m", "rltrade.cli", *argv], capture_output=True,
                           text=True, env=env, timeout=300)
    assert quiet.returncode == 2
    assert quiet.stderr.startswith("error: ") and quiet.stderr.count("\n") == 1, quiet.stderr
    assert "too few" in quiet.stderr or "not enough" in quiet.stderr
    assert not (tmp_path / "runs" / "few").exists()
    loud = subprocess.run([sys.executable, "-m", "rltrade.cli", "-v", *argv],
                          capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 2
    lines = loud.stderr.strip().splitlines()
    assert any("loaded 25 bars" in line for line in lines)  # -v: every log line, as it came
    assert lines[-1] == quiet.stderr.strip()


def test_log_lines_of_a_command_that_succeeds_are_printed(tmp_path, capsys):
    argv = ["features", "build", "--data", "synthetic:planted?n_bars=1500&seed=1", "--out"]
    code, out, err = run_cli([*argv, str(tmp_path / "a")], capsys)
    assert code == 0 and "Dataset" in out
    assert "INFO" in err and "dataset: " in err  # held while it ran, printed once it succeeded


def test_config_validate_says_how_steps_round(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  total_steps: 4000\n  eval_freq: 20000\n")
    code, out, err = run_cli(["config", "validate", str(path)], capsys)
    assert code == 0, err
    assert "16,384 steps on sample:EURUSD-1h" in out
    assert ("note: training.total_steps 4,000 becomes 16,384: the run steps in rollouts of 2,048 "
            "steps x 8 envs (16,384 steps)") in out
    assert "note: training.eval_freq 20,000 becomes 16,384" in out




def test_train_resume_of_a_run_in_use_exits_2_naming_the_pid(tmp_path, small_config, capsys):
    from rltrade.runs import Run

    run_ = Run.create("busy", small_config(), tmp_path)
    run_.release_lock()
    with lock_held_elsewhere(run_.path) as holder:
        code, _out, err = run_cli(["train", "--resume", str(run_.path), "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: run {run_.path} is in use by process {holder.pid}")


def test_train_overwrite_failed_moves_the_failed_run_aside(tmp_path, small_config, capsys):
    from rltrade.runs import Run

    cfg = _small_yaml(tmp_path, small_config,
                      training={"total_steps": 128, "eval_freq": 0, "checkpoint_freq": 0})
    failed = Run.create("again", small_config(), tmp_path / "runs")  # died before training
    failed.release_lock()
    argv = ["train", "--config", str(cfg), "--name", "again", "--runs-dir",
            str(tmp_path / "runs"), "--no-progress"]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "failed attempt (status created)" in err and "--overwrite-failed" in err
    code, out, err = run_cli([*argv, "--overwrite-failed"], capsys)
    assert code == 0, err
    assert "the failed run of this name was moved aside to" in out
    assert "128 steps in" in out
    aside = [p.name for p in (tmp_path / "runs").iterdir()
             if p.name not in ("again", "registry.sqlite")]  # the trial registry lives here
    assert len(aside) == 1 and aside[0].startswith("again.failed-")
    assert "moved the failed run" in err  # the log line, printed once the run started


def test_data_summary_annualises_with_the_markets_calendar(capsys):
    """EURUSD trades 24/5: its volatility is annualised with the 24/5 calendar's ~6,250 hourly
    bars a year (the calendar is inferred from the bars), not the 8,766 of a 24/7 calendar."""
    code, out, _ = run_cli(["data", "summary", "sample:EURUSD-1h"], capsys)
    assert code == 0
    text = " ".join(out.split())
    assert "bars per year │ 6,252 (calendar: 24/5" in text


def test_data_validate_says_each_finding_once(capsys):
    """The findings table is the report: the same warnings are not printed again as log lines
    after it (they were held back while the command ran)."""
    import subprocess
    import sys

    gaps = str(CORPUS / "gaps.csv")
    done = subprocess.run([sys.executable, "-m", "rltrade.cli", "data", "validate", gaps],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "gaps" in done.stdout
    assert "WARNING" not in done.stderr, done.stderr
