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
from rltrade.evaluation.judge import (
    backtest_run,
    compare,
    comparison_row,
    load_policy,
    run_dataset,
)
from rltrade.runs import Run


@pytest.fixture(scope="module")
def judged_config(small_config) -> RunConfig:
    """The shared small run (tests/conftest.py), trained on data up to 2020-02-20."""
    return small_config(data={"end": "2020-02-20"},
                        training={"eval_freq": 0, "checkpoint_freq": 0})


@pytest.fixture(scope="module")
def run(tmp_path_factory, judged_config) -> Run:
    root = tmp_path_factory.mktemp("runs")
    return train(judged_config, "judged", runs_root=root).run


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
    with pytest.raises(ConfigError, match=r"overlaps the training range .* --allow-overlap"):
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


def test_mismatched_dataset_is_refused_naming_each_mismatch(run, tmp_path, judged_config):
    with pytest.raises(CompatibilityError) as err:
        backtest_run(run, source="sample:EURUSD-1h", baselines=False)  # no alpha_signal
    assert "column" in str(err.value) or "alpha_signal" in str(err.value)
    # same bars, a different spec: features and strategies differ, each named
    other = judged_config.with_overrides(features={
        "features": [{"name": "returns", "params": {"periods": [1]}}], "strategies": []})
    from rltrade.features import build_dataset

    ds = build_dataset(judged_config.data.source, other.feature_spec)
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


def test_cli_train_then_compare(tmp_path, capsys, judged_config):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(judged_config.to_yaml())
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


# -- one evaluation path: ranges, compare under each run's own settings ----------------------
def _config(base: RunConfig, algorithm: str, scheme: str, hyperparams: dict,
            **sections) -> RunConfig:
    return RunConfig.from_dict({
        **base.to_dict(),
        "env": {"window": 8, "episode_length": 256, "action_scheme": scheme,
                "layout": "flat" if algorithm == "sac" else "window",
                **sections.pop("env", {})},
        "agent": {"algorithm": algorithm, "hyperparams": hyperparams,
                  "policy": {"net_arch": [16], "lstm_hidden_size": 8}},
        "training": {"total_steps": 256, "n_envs": 2, "eval_freq": 0, "checkpoint_freq": 0,
                     "torch_threads": 1},
        **sections,
    })


@pytest.fixture(scope="module")
def others(tmp_path_factory, judged_config) -> dict[str, Run]:
    """Tiny runs of other algorithms and schemes; the SAC run has its own costs and
    annualisation."""
    root = tmp_path_factory.mktemp("others")
    off_policy = {"learning_starts": 64, "buffer_size": 2000, "batch_size": 32}
    configs = {
        "sac_run": _config(judged_config, "sac", "exposure_sl", off_policy,
                           env={"engine": {"costs": {"taker_fee": 0.001}}},
                           evaluation={"bars_per_year": 5000}),
        "lstm_run": _config(judged_config, "recurrent_ppo", "discrete3",
                            {"n_steps": 64, "batch_size": 64, "n_epochs": 1}),
        "dqn_run": _config(judged_config, "dqn", "discrete6", off_policy),
    }
    return {name: train(cfg, name, runs_root=root).run for name, cfg in configs.items()}


def test_ranges_context_and_overlap(run):
    from rltrade.evaluation.ranges import overlaps, range_text, traded_range, with_context

    full = run_dataset(run)
    sliced = with_context(full, "2020-02-21", "2020-02-25", window=8)
    assert sliced.index[7] == pd.Timestamp("2020-02-21", tz="UTC")  # 7 context bars
    assert sliced.index[-1] < pd.Timestamp("2020-02-25", tz="UTC")
    assert len(with_context(full, None, None, window=8)) == len(full)  # no start, no context
    with pytest.raises(ConfigError, match="holds no bars"):
        with_context(full, "2031-01-01", None, window=8)
    traded = traded_range(sliced, 8)
    assert traded == (int(sliced.timestamps[7]), int(sliced.timestamps[-1]))
    assert traded_range(sliced.slice(0, 7), 8) is None
    assert overlaps(traded, ("2020-02-24", "2020-03-01"))
    assert overlaps(("2020-01-01", "2020-01-02"), ("2020-01-02", "2020-01-05"))  # closed
    assert not overlaps(("2020-01-01", "2020-01-02"), ("2020-01-02T01:00", "2020-01-05"))
    assert not overlaps(traded, None)
    assert range_text(traded).startswith("2020-02-21T00:00:00+00:00 .. ")
    # the backtest-only path and training cut the same slice
    assert np.array_equal(run_dataset(run, start="2020-02-21", end="2020-02-25").timestamps,
                          sliced.timestamps)


def test_compare_judges_each_run_under_its_own_settings(run, others, tmp_path):
    runs = [run, others["sac_run"], others["lstm_run"], others["dqn_run"]]
    result = compare([r.path for r in runs], start="2020-02-21",
                     baselines=["buy_and_hold", "flat"], out_dir=tmp_path / "cmp")
    table = result.table
    assert list(table["name"]) == ["judged", "sac_run", "lstm_run", "dqn_run", "buy_and_hold",
                                   "flat"]
    assert list(table["judged_under"]) == ["judged", "sac_run", "lstm_run", "dqn_run",
                                           "judged", "judged"]
    assert result.baselines_under == "judged"
    schemes = {name: res.summary["config"]["action_scheme"]
               for name, res in result.results.items()}
    assert schemes == {"judged": "discrete3", "sac_run": "exposure_sl",
                       "lstm_run": "discrete3", "dqn_run": "discrete6"}
    sac = result.results["sac_run"]
    assert sac.summary["config"]["engine"]["costs"]["taker_fee"] == 0.001
    assert {"action_0", "action_1"} <= set(sac.steps.columns) and len(sac.trades) > 0
    assert result.results["judged"].summary["config"]["engine"]["costs"]["taker_fee"] == 0.0005
    assert sac.metrics["run"]["bars_per_year"] == 5000  # its own evaluation section
    # a compared run's row is its own backtest of the same range, bit for bit
    for r in (run, others["sac_run"]):
        own = backtest_run(r, start="2020-02-21", baselines=False, report=False)
        mine = result.results[r.name]
        pd.testing.assert_frame_equal(mine.steps, own.steps, check_exact=True)
        pd.testing.assert_frame_equal(mine.trades, own.trades, check_exact=True)
        assert comparison_row(r.name, "agent", mine) == comparison_row(r.name, "agent", own)
        row = table.set_index("name").loc[r.name]
        assert row["total_return"] == own.summary["total_return"]
        assert row["final_equity"] == own.summary["final_equity"]
        assert row["bars_run"] == own.summary["bars_run"]
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "judged under" in md and "sac_run" in md
    # the baselines under another run's settings, named
    under = compare([run.path, others["sac_run"].path], start="2020-02-21",
                    baselines=["buy_and_hold"], baselines_under="sac_run")
    bh = under.table.set_index("name").loc["buy_and_hold"]
    assert bh["judged_under"] == "sac_run"
    with pytest.raises(ConfigError, match="not one of the compared runs"):
        compare([run.path], start="2020-02-21", baselines_under="nope")


def test_cli_compare_prints_what_each_backtest_prints(run, others, capsys):
    sac = others["sac_run"]
    printed = {}
    for r in (run, sac):
        main_ok(["backtest", "--run", str(r.path), "--start", "2020-02-21", "--no-baselines"])
        out = capsys.readouterr().out
        printed[r.name] = {key: _cell(out, key) for key in (
            "total return", "Sharpe (annualised)", "max drawdown", "closed trades")}
    main_ok(["compare", str(run.path), str(sac.path), "--start", "2020-02-21", "--baselines",
             "buy_and_hold", "--out", str(run.path.parent / "cmp_cli")])
    out = capsys.readouterr().out
    for name, values in printed.items():
        line = next(line for line in out.splitlines() if line.startswith(f"│ {name} "))
        cells = [c.strip() for c in line.strip("│").split("│")]
        assert cells[1:4] == [values["total return"], values["Sharpe (annualised)"],
                              values["max drawdown"]]
        assert cells[6] == values["closed trades"]
    assert "baselines ran under the settings (costs, engine, risk manager) of judged" in out


def _cell(out: str, key: str) -> str:
    line = next(line for line in out.splitlines() if line.startswith(f"│ {key} "))
    return line.strip("│").split("│")[1].strip()


def test_bars_per_year_override_reaches_the_metrics(run, others, capsys):
    res = backtest_run(run, start="2020-02-21", baselines=True, report=False, bars_per_year=252)
    assert res.metrics["run"]["bars_per_year"] == 252
    assert res.metrics["run"]["bars_per_year_source"] == "override"
    assert run.metadata["backtests"][-1]["bars_per_year"] == 252
    # the baselines of the same backtest are annualised alike
    default = backtest_run(run, start="2020-02-21", baselines=False, report=False)
    assert default.metrics["run"]["bars_per_year_source"] != "override"
    assert res.summary["total_return"] == default.summary["total_return"]
    # the run config's evaluation.bars_per_year: training's evaluation and the backtest; the
    # option beats it
    sac = others["sac_run"]
    assert sac.manifest["final_eval"]["bars_per_year"] == 5000
    assert backtest_run(sac, start="2020-02-21", baselines=False,
                        report=False).metrics["run"]["bars_per_year"] == 5000
    cmp = compare([run.path, sac.path], start="2020-02-21", baselines=None, bars_per_year=9000)
    assert {r.metrics["run"]["bars_per_year"] for r in cmp.results.values()} == {9000}
    main_ok(["backtest", "--run", str(sac.path), "--start", "2020-02-21", "--no-baselines",
             "--bars-per-year", "252"])
    assert _cell(capsys.readouterr().out, "bars per year") == "252 (override)"
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--run", str(sac.path), "--bars-per-year", "0"])
    assert exc.value.code == 2
    assert "--bars-per-year must be a positive number" in capsys.readouterr().err


def test_report_is_titled_by_the_run_name(run):
    res = backtest_run(run, start="2020-02-21", baselines=False)
    assert res.summary["name"] == "judged" and res.summary["policy"] == "numpy_mlp"
    html = (res.path / "report.html").read_text()
    assert "<title>Backtest report: judged</title>" in html


def test_demo_logs_each_baseline_once(tmp_path, monkeypatch, judged_config):
    from loguru import logger

    import rltrade.demo as demo
    from rltrade.logs import setup_logging

    monkeypatch.setattr(demo, "demo_config", lambda steps, source: judged_config)
    setup_logging("INFO")  # as the CLI does: logging stays on between run log files
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        result = demo.run_demo(runs_root=tmp_path, name="demo_once", progress=False)
    finally:
        logger.remove(sink)
    names = list(result.comparison["name"])
    assert names[0] == "demo_once" and "buy_and_hold" in names and "oracle" in names
    for name in names[1:]:
        assert sum(line.startswith(f"backtest {name}:") for line in lines) == 1, name
    assert sum(line.startswith("backtest demo_once:") for line in lines) == 1
