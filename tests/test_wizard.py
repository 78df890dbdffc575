"""The guided flow (``rltrade wizard``), driven through a pseudo-terminal with pexpect and
answering every question; the phase-timing table of a run's metadata; progress bars."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

import rltrade
from cli_helpers import run_cli
from rltrade.agents.training import train
from rltrade.config import RunConfig
from rltrade.errors import ConfigError
from rltrade.runs import Run
from rltrade.wizard import Prompter, list_runs, parse_day, parse_download

SOURCE = "synthetic:planted?n_bars=1500&seed=3"  # hourly, 2020-01-01 00:00 .. 2020-03-03 11:00
TIMEOUT = 600  # seconds per expected line: generous, the test machine is shared
TINY = {"training": {"total_steps": 128, "eval_freq": 0, "checkpoint_freq": 0}}


@pytest.fixture
def base_config(tmp_path, small_config) -> Path:
    """The small run config as a file, for ``--config`` (tiny features, 128 steps)."""
    path = tmp_path / "small.yaml"
    path.write_text(small_config(**TINY).to_yaml())
    return path


def _spawn(args: list[str], cwd: Path) -> pexpect.spawn:
    src = str(Path(rltrade.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src, "NO_COLOR": "1", "COLUMNS": "200",
           "RLTRADE_PROGRESS": "0", "TERM": "dumb"}
    return pexpect.spawn(sys.executable, ["-m", "rltrade.cli", *args], cwd=str(cwd), env=env,
                         encoding="utf-8", timeout=TIMEOUT, dimensions=(50, 200))


def _answer(child: pexpect.spawn, prompt: str, answer: str) -> None:
    child.expect_exact(prompt)
    child.sendline(answer)


def _finish(child: pexpect.spawn) -> str:
    child.expect(pexpect.EOF)
    child.close()
    out = child.before or ""
    assert child.exitstatus == 0, out[-3000:]
    return out


# -- end to end in a pseudo-terminal ------------------------------------------------------------


def test_wizard_train_and_backtest_answering_every_question(tmp_path, base_config):
    runs = tmp_path / "runs"
    child = _spawn(["wizard", "--config", str(base_config), "--runs-dir", str(runs)], tmp_path)
    child.expect_exact("3) BACKTEST_ONLY")
    _answer(child, "Mode [TRAIN_AND_BACKTEST]: ", "1")
    _answer(child, "Run name (letters, digits, _)", "wiz_one")
    _answer(child, "Description", "through a pty")
    _answer(child, "Data (file,", SOURCE)
    child.expect_exact("SYNTH 1h: 1,500 bars")
    # an ambiguous date is refused and asked again
    _answer(child, "Training starts on (DD-MM-YYYY)", "2020/01/05")
    child.expect_exact("is not a date as DD-MM-YYYY")
    _answer(child, "Training starts on (DD-MM-YYYY)", "05-01-2020")
    _answer(child, "Training ends on, included (DD-MM-YYYY)", "10-02-2020")
    child.expect_exact("Sunday 5 January 2020")
    child.expect_exact("Monday 10 February 2020), both days included (37 days, UTC)")
    _answer(child, "Is that right? (y/n) [y]: ", "y")
    _answer(child, "Backtest starts on (DD-MM-YYYY)", "11-02-2020")
    _answer(child, "Backtest ends on, included (DD-MM-YYYY)", "02-03-2020")
    _answer(child, "Is that right? (y/n) [y]: ", "yes")
    child.expect_exact("recurrent_ppo")
    _answer(child, "Algorithm [ppo]: ", "ppo")
    child.expect_exact("exposure_sl")
    _answer(child, "Action scheme [discrete3]: ", "discrete3")
    child.expect_exact("Run wiz_one: TRAIN_AND_BACKTEST, ppo with discrete3")
    _answer(child, "Start? (y/n) [y]: ", "y")
    out = _finish(child)
    assert "Backtest range (out of sample)" in out

    run = Run.open(runs / "wiz_one")
    meta = run.metadata
    assert meta["description"] == "through a pty"
    # the training range starts at the day asked for: the warm-up came from earlier bars
    assert meta["training"]["range"]["start"] == "2020-01-05T00:00:00+00:00"
    phases = meta["phases"]
    for phase in ("data", "features", "train", "backtest", "report"):
        assert isinstance(phases[phase], float) and phases[phase] >= 0, phases
    assert phases["total"] == pytest.approx(sum(phases[p] for p in
                                                ("data", "features", "train", "backtest",
                                                 "report")), abs=1e-3)
    (bt,) = meta["backtests"]
    assert bt["data"]["start"].startswith("2020-02-11 00:00") and not bt["overlaps_training"]
    assert bt["phases"]["backtest"] >= 0
    # the config written beside the run reproduces it
    written = runs / "wiz_one.wizard.yaml"
    assert f"rltrade train --config {written}" in written.read_text()
    cfg = RunConfig.from_yaml(written)
    assert cfg == run.config
    assert (cfg.data.start, cfg.data.end) == ("2020-01-05", "2020-02-11")
    assert cfg.backtest is not None and (cfg.backtest.start, cfg.backtest.end) == (
        "2020-02-11", "2020-03-03")
    logs = runs / "wiz_one" / "logs"
    assert "supertrend@1h" in (logs / "strategy_execution.log").read_text()
    assert "phase backtest" in (logs / "backtest.log").read_text()


def test_wizard_warns_when_the_backtest_overlaps_training(tmp_path, base_config):
    """An overlapping backtest range is warned about; answering no asks for another range."""
    runs = tmp_path / "runs"
    child = _spawn(["wizard", "--config", str(base_config), "--runs-dir", str(runs),
                    "--mode", "TRAIN_AND_BACKTEST", "--name", "ovl", "--description", "",
                    "--data", SOURCE, "--train-start", "01-01-2020", "--train-end",
                    "10-02-2020", "--algorithm", "a2c", "--action-scheme", "discrete6"],
                   tmp_path)
    _answer(child, "Backtest starts on (DD-MM-YYYY) [11-02-2020]: ", "01-02-2020")
    _answer(child, "Backtest ends on, included (DD-MM-YYYY) [03-03-2020]: ", "20-02-2020")
    _answer(child, "Is that right? (y/n) [y]: ", "")
    child.expect_exact("warning: the backtest range 01-02-2020 .. 20-02-2020 overlaps the "
                       "training range 01-01-2020 .. 10-02-2020")
    _answer(child, "Backtest the overlapping range anyway? (y/n) [n]: ", "")
    child.expect_exact("then choose another backtest range")
    _answer(child, "Backtest starts on (DD-MM-YYYY) [11-02-2020]: ", "")
    _answer(child, "Backtest ends on, included (DD-MM-YYYY) [03-03-2020]: ", "")
    _answer(child, "Is that right? (y/n) [y]: ", "y")
    child.expect_exact("Run ovl: TRAIN_AND_BACKTEST, a2c with discrete6")
    _answer(child, "Start? (y/n) [y]: ", "n")
    out = _finish(child)
    assert "not started" in out
    assert not (runs / "ovl").exists()
    cfg = RunConfig.from_yaml(runs / "ovl.wizard.yaml")
    assert cfg.agent.algorithm == "a2c" and cfg.env.action_scheme == "discrete6"
    assert cfg.backtest is not None and (cfg.backtest.start, cfg.backtest.end) == (
        "2020-02-11", "2020-03-04")


def test_wizard_overlap_accepted_marks_the_run(tmp_path, base_config):
    runs = tmp_path / "runs"
    child = _spawn(["wizard", "--config", str(base_config), "--runs-dir", str(runs),
                    "--mode", "TRAIN_AND_BACKTEST", "--name", "ovl2", "--description", "",
                    "--data", SOURCE, "--train-start", "01-01-2020", "--train-end",
                    "10-02-2020", "--backtest-start", "01-02-2020", "--backtest-end",
                    "20-02-2020", "--algorithm", "ppo", "--action-scheme", "discrete3",
                    "--allow-overlap", "--no-start"], tmp_path)
    out = _finish(child)
    assert "warning: the backtest range" in out and "IN-SAMPLE" in out
    assert "--allow-overlap" in (runs / "ovl2.wizard.yaml").read_text()


def test_wizard_yes_refuses_an_overlap_without_allow_overlap(tmp_path, base_config, capsys):
    code, _, err = run_cli(["wizard", "--yes", "--config", str(base_config), "--runs-dir",
                            str(tmp_path / "runs"), "--name", "x", "--train-start",
                            "01-01-2020", "--train-end", "10-02-2020", "--backtest-start",
                            "01-02-2020", "--backtest-end", "20-02-2020"], capsys)
    assert code == 2
    assert err.startswith("error: the backtest range overlaps the training range")
    assert not (tmp_path / "runs" / "x").exists()


def test_wizard_backtest_only_picks_a_run_from_the_list(tmp_path, small_config):
    runs = tmp_path / "runs"
    cfg = small_config(**TINY, data={"end": "2020-02-10"}, description="to pick")
    train(cfg, "picked", runs_root=runs)
    (runs / "not_a_run").mkdir()
    choices = list_runs(runs)
    assert [c.name for c in choices] == ["picked"]
    child = _spawn(["wizard", "--runs-dir", str(runs)], tmp_path)
    _answer(child, "Mode [TRAIN_AND_BACKTEST]: ", "BACKTEST_ONLY")
    child.expect_exact("name | algorithm | scheme | data | training range | created")
    child.expect_exact(f"1) picked | ppo | discrete3 | {SOURCE} (SYNTH 1h) | 2020-01-01 .. "
                       "2020-01-3")
    child.expect_exact("to pick")
    _answer(child, "Model to backtest (number or name) [picked]: ", "1")
    child.expect_exact("picked trained on")
    _answer(child, "Data (file,", "")
    _answer(child, "Backtest starts on (DD-MM-YYYY)", "10-01-2020")
    _answer(child, "Backtest ends on, included (DD-MM-YYYY)", "20-01-2020")
    _answer(child, "Is that right? (y/n) [y]: ", "y")
    child.expect_exact("overlaps the range picked was trained on")
    _answer(child, "Backtest the overlapping range anyway? (y/n) [n]: ", "n")
    _answer(child, "Backtest starts on (DD-MM-YYYY)", "15-02-2020")
    _answer(child, "Backtest ends on, included (DD-MM-YYYY)", "01-03-2020")
    _answer(child, "Is that right? (y/n) [y]: ", "y")
    _answer(child, "Start? (y/n) [y]: ", "y")
    out = _finish(child)
    assert "Backtest picked" in out and "rltrade backtest --run" in out
    (entry,) = Run.open(runs / "picked").metadata["backtests"]
    assert entry["data"]["start"].startswith("2020-02-15 00:00")
    assert entry["data"]["end"].startswith("2020-03-01 23:00")
    assert entry["phases"]["backtest"] >= 0 and entry["phases"]["data"] >= 0


def test_rltrade_alone_on_a_terminal_starts_the_wizard(tmp_path):
    child = _spawn([], tmp_path)
    child.expect_exact("Mode [TRAIN_AND_BACKTEST]: ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert "error: no answer to 'Mode'" in (child.before or "")
    assert child.exitstatus == 2


def test_rltrade_alone_off_a_terminal_prints_the_help(tmp_path):
    src = str(Path(rltrade.__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-m", "rltrade.cli"], cwd=tmp_path, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT,
                          env={**os.environ, "PYTHONPATH": src})
    assert "Usage" in proc.stdout and "wizard" in proc.stdout
    assert "Mode" not in proc.stdout


# -- the pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "day"), [("31-12-2024", dt.date(2024, 12, 31)),
                                           ("2024-12-31", dt.date(2024, 12, 31)),
                                           ("01-02-2024", dt.date(2024, 2, 1))])
def test_parse_day(text, day):
    assert parse_day(text) == day


@pytest.mark.parametrize("text", ["12-31-2024", "31/12/2024", "1-2-2024", "31-12-24",
                                  "30-02-2024", "", "tomorrow"])
def test_parse_day_refuses_what_is_ambiguous_or_no_day(text):
    with pytest.raises(ConfigError):
        parse_day(text)


def test_parse_download():
    spec = parse_download("download:binance:BTC/USDT:USDT:1h")
    assert spec is not None and (spec.exchange, spec.symbol, spec.timeframe) == (
        "binance", "BTC/USDT:USDT", "1h")
    assert spec.source == "store:BTC/USDT:USDT/1h"
    assert parse_download("sample:EURUSD-1h") is None
    with pytest.raises(ConfigError, match="download:EXCHANGE:SYMBOL:TIMEFRAME"):
        parse_download("download:binance")


def test_prompter_asks_again_until_the_answer_parses():
    said: list[str] = []
    answers = iter(["x", "", "3"])
    p = Prompter(say=said.append, read=lambda prompt: next(answers))
    assert p.choose("Pick", ["a", "b", "c"], default="b", given=None, flag="--pick") == "b"
    assert p.choose("Pick", ["a", "b", "c"], default="b", given=None, flag="--pick") == "c"
    assert any("'x' is not one of" in line for line in said)
    with pytest.raises(ConfigError, match="--pick"):
        Prompter(yes=True).choose("Pick", ["a"], default="a", given="z", flag="--pick")


# -- phase timings and progress --------------------------------------------------------------


def test_run_metadata_has_a_phase_timing_table(tmp_path, small_config):
    result = train(small_config(**TINY), "timed", runs_root=tmp_path)
    phases = json.loads((tmp_path / "timed" / "metadata.json").read_text())["phases"]
    assert set(phases) == {"data", "features", "train", "backtest", "report", "total"}
    assert all(phases[k] > 0 for k in ("data", "features", "train"))
    assert phases["backtest"] is None and phases["report"] is None  # no backtest ran
    assert result.timings.seconds["train"] == pytest.approx(phases["train"], abs=1e-3)


def test_walk_forward_units_show_a_progress_bar(capsys, monkeypatch):
    from rltrade.experiments.executors import SequentialExecutor

    monkeypatch.setenv("RLTRADE_PROGRESS", "1")
    assert SequentialExecutor().map(pow, [(2, 1), (2, 2), (2, 3)]) == [2, 4, 8]
    err = capsys.readouterr().err
    assert "walk-forward" in err and "3/3" in err


def test_wizard_downloads_the_bars_of_the_dates_asked(tmp_path, small_config, capsys,
                                                      monkeypatch):
    """``--data download:EXCHANGE:SYMBOL:TF``: the bars of the training range are fetched into
    the store (a local fake Binance), and the run trains on the store series."""
    from fake_exchange import FakeBinance
    from rltrade.data.store import BarStore

    base_config = tmp_path / "exchange.yaml"  # the small run without the synthetic column
    base_config.write_text(small_config(**TINY, features={"features": [
        {"name": "returns", "params": {"periods": [1]}}, {"name": "rsi"}]}).to_yaml())
    store = tmp_path / "store"
    monkeypatch.setenv("RLTRADE_STORE", str(store))  # restored after the test
    with FakeBinance(now="2024-03-01 10:30", listing="2023-06-01") as server:
        cfg = tmp_path / "ccxt.json"
        cfg.write_text(json.dumps(server.ccxt_config()))
        code, _, err = run_cli(
            ["wizard", "--yes", "--mode", "TRAIN_ONLY", "--name", "dl", "--config",
             str(base_config), "--runs-dir", str(tmp_path / "runs"), "--data",
             "download:binance:BTC/USDT:1h", "--train-start", "01-01-2024", "--train-end",
             "20-01-2024", "--store", str(store), "--exchange-config", str(cfg)], capsys)
    assert code == 0, err
    assert len(BarStore(store).read("BTC/USDT", "1h")) == 20 * 24
    run = Run.open(tmp_path / "runs" / "dl")
    assert run.config.data.source == "store:BTC/USDT/1h"
    assert run.metadata["training"]["dataset_range"]["bars"] > 0
    assert "from binance" in (tmp_path / "runs" / "dl.wizard.yaml").read_text()


def test_ask_plan_asks_the_scheme_again_when_the_algorithm_refuses_it(tmp_path, base_config):
    from rltrade.wizard import WizardOptions, ask_plan

    said: list[str] = []
    answers = iter(["sac", "discrete3", "3"])
    options = WizardOptions(mode="TRAIN_ONLY", name="s", description="", data=SOURCE,
                            train_start="01-01-2020", train_end="01-03-2020", start=False,
                            runs_dir=tmp_path, base_config=base_config)
    plan = ask_plan(options, Prompter(say=said.append, read=lambda prompt: next(answers)))
    assert plan.config is not None and not plan.start
    assert (plan.config.agent.algorithm, plan.config.env.action_scheme) == ("sac",
                                                                          "exposure_sl")
    assert plan.config.agent.hyperparams == {}  # the base's PPO overrides are not carried over
    assert any("sac needs a continuous action space" in line for line in said)
    assert (plan.config.data.start, plan.config.data.end) == ("2020-01-01", "2020-03-02")
