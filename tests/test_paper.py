"""Paper trading through the same engine: the sim broker's session equals the backtest of the
same period (to 1e-9, trades and equity), the session folder, resume, ``paper status``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_helpers import run_cli
from rltrade.agents.training import train
from rltrade.errors import ConfigError
from rltrade.evaluation.judge import backtest_run
from rltrade.live import run_paper
from rltrade.live import trader as T
from rltrade.runs import Run

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BTC = SHARED / "btcusdt_perp_binance_1h_2019-09_2023-06.csv.gz"

#: a small run on the EUR/USD sample: a multi-timeframe strategy (ott on 4h) included
PAPER_RUN = {
    "data": {"source": "sample:EURUSD-1h"},
    "features": {"features": [{"name": "returns", "params": {"periods": [1, 4]}},
                              {"name": "rsi"}, {"name": "macd"}],
                 "strategies": [{"name": "supertrend", "timeframe": None},
                                {"name": "ott", "timeframe": "4h"}]},
}
START, END = "2018-01-10", "2018-01-18"
NUMERIC_STEPS = ["bar", "cash", "position", "equity", "realized_equity", "unrealized_pnl", "close",
                 "costs", "reward", "drawdown", "position_change"]
FLAG_STEPS = ["trade_executed", "stop_triggered", "take_profit", "liquidated",
              "invalid_action", "forced_close"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_config) -> Run:
    cfg = small_config(replace=PAPER_RUN, training={"total_steps": 128, "eval_freq": 0,
                                                    "checkpoint_freq": 0})
    return train(cfg, "paper", runs_root=tmp_path_factory.mktemp("runs")).run


def assert_same_as_backtest(paper_dir: Path, bt) -> None:
    """The session's steps and trades equal the backtest's (1e-9), row for row."""
    steps = pd.read_csv(paper_dir / "steps.csv", index_col=0, parse_dates=True)
    want = bt.steps
    assert list(steps.columns) == [c for c in want.columns if c != "benchmark_equity"]
    assert len(steps) == len(want) and (steps.index == want.index).all()
    for col in NUMERIC_STEPS:
        np.testing.assert_allclose(steps[col].to_numpy(float), want[col].to_numpy(float),
                                   rtol=0, atol=1e-9, err_msg=col)
    for col in FLAG_STEPS:
        assert (steps[col].to_numpy() == want[col].to_numpy()).all(), col
    np.testing.assert_array_equal(steps["action"].to_numpy(float),
                                  want["action"].to_numpy(float))
    trades = pd.read_csv(paper_dir / "trades.csv", index_col=0)
    wt = bt.trades
    assert list(trades.columns) == list(wt.columns)
    assert len(trades) == len(wt)
    for col in ("entry_time", "exit_time"):
        assert (pd.to_datetime(trades[col]) == wt[col]).all(), col
    for col in ("qty", "entry_price", "exit_price", "gross_pnl", "fees", "spread_cost",
                "slippage_cost", "net_pnl", "duration_bars", "entry_bar", "exit_bar"):
        np.testing.assert_allclose(trades[col].to_numpy(float), wt[col].to_numpy(float),
                                   rtol=0, atol=1e-9, err_msg=col)
    assert (trades["side"].astype(str) == wt["side"].astype(str)).all()
    assert (trades["exit_reason"].astype(str) == wt["exit_reason"].astype(str)).all()


def test_sim_session_equals_the_backtest_on_the_sample(run, monkeypatch):
    monkeypatch.setattr(T, "SPARE_ROWS", 16)  # the mirror outgrows its core several times
    bt = backtest_run(run, start=START, end=END, allow_overlap=True, baselines=False,
                      report=False)
    result = run_paper(run, start=START, end=END, session="parity")
    assert result.summary["status"] == "finished"
    assert len(bt.trades) >= 2 and bt.summary["n_fills"] >= 4
    assert_same_as_backtest(result.path, bt)
    assert result.summary["final_equity"] == pytest.approx(bt.summary["final_equity"],
                                                           abs=1e-9)
    folder = result.path
    assert folder == run.path / "paper" / "parity"
    for name in ("state.json", "orders.csv", "fills.csv", "steps.csv", "trades.csv",
                 "summary.json", "heartbeat", "paper.log"):
        assert (folder / name).is_file(), name
    # every fill recorded beside the engine's expected fill: the sim broker's are the model's
    fills = pd.read_csv(folder / "fills.csv")
    assert len(fills) > 0
    assert fills["qty"].sum() == pytest.approx(bt.summary["open_position"], abs=1e-6)
    np.testing.assert_allclose(fills["qty"], fills["expected_qty"], atol=1e-9)
    np.testing.assert_allclose(fills["slippage"], 0.0, atol=1e-9)
    orders = pd.read_csv(folder / "orders.csv")
    assert orders["client_id"].is_unique
    assert set(fills["client_id"].dropna()) <= set(orders["client_id"])
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "finished" and state["open_orders"] == []
    assert state["last_bar_time"] == str(bt.steps.index[-1].isoformat())


@pytest.mark.shared_data
@pytest.mark.skipif(not BTC.is_file(), reason="../shared/data is not present")
def test_sim_session_equals_the_backtest_on_a_real_file(run):
    src = str(BTC)
    start, end = "2022-05-07", "2022-05-14"  # a volatile week (the LUNA collapse)
    bt = backtest_run(run, source=src, start=start, end=end, allow_overlap=True,
                      baselines=False, report=False)
    result = run_paper(run, data=src, start=start, end=end, session="btc")
    assert len(bt.trades) >= 1
    assert_same_as_backtest(result.path, bt)


def test_an_existing_session_resumes_and_never_starts_over(run):
    first = run_paper(run, start=START, end=END, session="resume", max_bars=30)
    assert first.state["status"] == "running" and first.state["steps"] == 30
    # --start of a later date does not restart it: the session goes on from its state
    second = run_paper(run, start="2018-01-14", end=END, session="resume")
    assert second.state["status"] == "finished"
    bt = backtest_run(run, start=START, end=END, allow_overlap=True, baselines=False,
                      report=False)
    assert_same_as_backtest(second.path, bt)
    log = (second.path / "paper.log").read_text()
    assert "resumed" in log


def test_cli_paper_and_status(run, capsys):
    code, out, err = run_cli(["paper", "--run", str(run.path), "--broker", "sim", "--start",
                              START, "--end", "2018-01-12", "--speed", "max", "--session",
                              "cli"], capsys)
    assert code == 0, err
    assert "paper session cli (sim): finished" in out
    code, out, err = run_cli(["paper", "status", str(run.path), "--session", "cli"], capsys)
    assert code == 0, err
    for word in ("last bar", "position", "equity", "today's PnL", "open orders", "heartbeat",
                 "risk"):
        assert word in out, word
    code, out, err = run_cli(["paper", "status", str(run.path), "--session", "nope"], capsys)
    assert code == 2 and err.startswith("error: ") and "no paper session" in err
    code, _, err = run_cli(["paper", "--run", str(run.path), "--speed", "fast", "--start",
                            START, "--session", "bad"], capsys)
    assert code == 2 and "--speed" in err


def test_a_killed_session_is_not_resumed(run):
    result = run_paper(run, start=START, end=END, session="daily", max_daily_loss=1e-9)
    assert result.state["status"] == "killed"
    assert "daily loss" in result.state["kill_reason"]
    with pytest.raises(ConfigError, match="kill switch"):
        run_paper(run, start=START, end=END, session="daily")


# -- crash safety --------------------------------------------------------------------------
def _journal_submits(folder: Path) -> list[str]:
    lines = (folder / "broker_sim.jsonl").read_text().splitlines()
    return [json.loads(x)["submit"]["client_id"] for x in lines if '"submit"' in x]


def _decisions(folder: Path) -> pd.DataFrame:
    """The orders of a session without their session-specific ids, in order."""
    orders = pd.read_csv(folder / "orders.csv")
    return orders[["bar_time", "qty", "target"]].reset_index(drop=True)


class _Crash(Exception):
    pass


def test_a_crash_between_submit_and_commit_sends_nothing_twice(run, monkeypatch):
    """The worst moment: the order of a bar is at the broker, the state saying so is not."""
    clean = run_paper(run, start=START, end=END, session="clean")
    real_commit = T.Session.commit
    crashes = {"n": 0, "skip": 0}

    def crashing_commit(self, state):
        # crash right after a bar whose decision sent an order: the second and fourth such
        if state["open_orders"] and state["steps"] > 0 and crashes["n"] < 2:
            crashes["skip"] += 1
            if crashes["skip"] % 2 == 0:
                crashes["n"] += 1
                raise _Crash
        return real_commit(self, state)

    monkeypatch.setattr(T.Session, "commit", crashing_commit)
    for _ in range(3):
        try:
            result = run_paper(run, start=START, end=END, session="crashy")
            break
        except _Crash:
            continue
    monkeypatch.undo()
    assert crashes["n"] == 2
    folder = run.path / "paper" / "crashy"
    assert result.state["status"] == "finished"
    submits = _journal_submits(folder)
    assert len(submits) == len(set(submits))
    log = (folder / "paper.log").read_text()
    assert "restart reconcile" in log
    assert "already at the broker" in log and "not sent again" in log  # found, not resent
    assert_same_as_backtest(folder, backtest_run(run, start=START, end=END, allow_overlap=True,
                                                 baselines=False, report=False))
    pd.testing.assert_frame_equal(_decisions(folder), _decisions(clean.path))


def test_a_position_the_session_does_not_expect_fires_the_kill_switch(run):
    from rltrade.data import load_bars
    from rltrade.envs.config import EnvConfig
    from rltrade.live import OrderRequest, SimBroker

    bars = load_bars("sample:EURUSD-1h", end=END)
    first = int(np.searchsorted(bars.index, pd.Timestamp(START, tz="UTC")))
    venue = SimBroker(bars, EnvConfig.build(run.config.env).engine, int(bars.index[first].value),
                      symbol="EURUSD")
    # someone else trades the account: an order before the session's first (target) order
    venue.submit(OrderRequest("someone-else-1", qty=-90_000.0, target=-90_000.0))
    result = run_paper(run, broker=venue, history=bars.iloc[: first + 1], session="foreign",
                       max_stale_bars=None)
    assert result.state["status"] == "killed"
    assert "the broker reports a position of" in result.state["kill_reason"]
    assert result.state["steps"] == 1 and result.state["open_orders"] == []
    steps = pd.read_csv(result.path / "steps.csv")
    assert steps["done"].iloc[-1] and steps["action"].isna().iloc[-1]  # no decision after it


KILL_CHILD = """
import sys
from rltrade.live import run_paper
run_paper(sys.argv[1], start=sys.argv[2], end=sys.argv[3], session=sys.argv[4],
          speed="36000x")
"""


@pytest.mark.slow
def test_kill_9_at_random_bars_loses_and_duplicates_no_order(run):
    """A session killed with SIGKILL at random moments, restarted each time, ends with the
    uninterrupted session's orders and trades, each order sent once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    end = "2018-01-14"
    clean = run_paper(run, start=START, end=end, session="calm")
    folder = run.path / "paper" / "k9"
    rng = np.random.default_rng(11)
    kills = 0
    errors = open(run.path / "k9_stderr.txt", "w+b")  # noqa: SIM115 - read at the end
    for _ in range(8):
        child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(run.path), START, end,
                                  "k9"], stdout=subprocess.DEVNULL, stderr=errors)
        state = json.loads((folder / "state.json").read_text()) if (
            folder / "state.json").exists() else {"steps": 0}
        goal = state["steps"] + int(rng.integers(3, 15))
        killed = False
        while child.poll() is None:
            try:
                steps = json.loads((folder / "state.json").read_text())["steps"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                steps = 0
            if steps >= goal:
                time.sleep(float(rng.uniform(0.0, 0.1)))  # anywhere inside the next bar
                os.kill(child.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.01)
        child.wait(timeout=60)
        if killed and child.returncode == -signal.SIGKILL:
            kills += 1
            if kills < 3:
                continue
            child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(run.path), START,
                                      end, "k9"], stdout=subprocess.DEVNULL, stderr=errors)
            child.wait(timeout=300)
        errors.seek(0)
        assert child.returncode == 0, errors.read().decode()[-2000:]
        break
    errors.close()
    assert kills >= 3
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "finished"
    submits = _journal_submits(folder)
    assert len(submits) == len(set(submits))  # no order sent twice
    pd.testing.assert_frame_equal(_decisions(folder), _decisions(clean.path))  # none lost
    trades = pd.read_csv(folder / "trades.csv", index_col=0)
    pd.testing.assert_frame_equal(trades, pd.read_csv(clean.path / "trades.csv", index_col=0))
    steps = pd.read_csv(folder / "steps.csv", index_col=0)
    pd.testing.assert_frame_equal(steps, pd.read_csv(clean.path / "steps.csv", index_col=0))


def test_a_session_on_the_fake_exchange_survives_faults_and_a_restart(run, monkeypatch,
                                                                     tmp_path):
    """The trader with the ccxt adapter and its live feed on the fake exchange: lost replies,
    disconnects and server errors while it trades, a restart in between; every order placed
    once and the exchange's position the session's."""
    from fake_exchange import HOUR_MS, FakeBinance, Fault
    from rltrade.live.ccxt_broker import CcxtBroker
    from rltrade.live.venues import LiveFeed, ccxt_closed_bars

    monkeypatch.setenv("RLTRADE_BINANCE_API_KEY", "k")
    monkeypatch.setenv("RLTRADE_BINANCE_SECRET", "s")
    with FakeBinance(now="2024-03-01", listing="2023-10-01") as fake:
        history = fake.expected_bars("BTCUSDT", "1h")
        history.attrs.update(symbol="BTCUSDT", timeframe="1h")

        def clock() -> int:  # an hour passes at every poll
            fake.now_ms += HOUR_MS
            return fake.now_ms

        def venue() -> LiveFeed:
            broker = CcxtBroker("binance", "BTC/USDT", config=fake.ccxt_config(
                timeout_ms=400, market_types=("spot",)),
                state_path=tmp_path / "broker_ccxt.json", retry_wait=0.01)
            return LiveFeed(broker, ccxt_closed_bars(broker.exchange, "BTC/USDT", "1h",
                                                     now_ms=clock), "1h", poll_seconds=0.0)

        fake.inject("POST /api/v3/order", Fault.lost_reply(), Fault.disconnect(),
                    Fault.http(503), Fault.ok(), Fault.lost_reply())
        first = run_paper(run, broker=venue(), history=history, session="cx", max_bars=12,
                          position_tolerance=1e-3, max_stale_bars=None)  # the fake's clock
        assert first.state["status"] == "running"
        second = run_paper(run, broker=venue(), history=history, session="cx", max_bars=12,
                           position_tolerance=1e-3)  # a new process: the state resumes
        state = second.state
        assert state["status"] == "running" and state["steps"] == 24
        cids = [o["clientOrderId"] for o in fake.orders.values()]
        assert len(cids) >= 1 and len(cids) == len(set(cids))
        assert "lost_reply" in {r.fault for r in fake.requests_to("/api/v3/order")}
        assert all(c.startswith(f"rt-{state['session_key']}-") for c in cids)
        baseline = json.loads((tmp_path / "broker_ccxt.json").read_text())["baseline"]
        assert fake.position() - baseline == pytest.approx(state["position"], rel=1e-3,
                                                             abs=1e-6)
        fills = pd.read_csv(second.path / "fills.csv")
        assert fills["fill_id"].dropna().is_unique


def test_a_perpetual_session_books_the_backtests_funding(tmp_path, small_config):
    """A perpetual pays funding at 00/08/16 UTC from the data's funding_rate column: the paper
    mirror books each new bar's rate as the backtest does."""
    src = "synthetic:gbm?n_bars=3000&seed=3&timeframe=1h&derivatives=true"
    cfg = small_config(replace={"data": {"source": src}, "features": PAPER_RUN["features"]},
                       env={"engine": {"instrument": {"asset_class": "crypto_perp",
                                                      "funding": "schedule"}}},
                       training={"total_steps": 128, "eval_freq": 0, "checkpoint_freq": 0,
                                 "seed": 7})  # a seed whose policy trades (119 fills)
    run = train(cfg, "perp", runs_root=tmp_path).run
    start, end = "2020-04-01", "2020-04-06"
    bt = backtest_run(run, start=start, end=end, allow_overlap=True, baselines=False,
                      report=False)
    assert bt.summary["costs"]["funding"] != 0.0 and bt.summary["n_fills"] > 10
    result = run_paper(run, start=start, end=end, session="perp")
    assert_same_as_backtest(result.path, bt)
    steps = pd.read_csv(result.path / "steps.csv", index_col=0)
    np.testing.assert_allclose(steps["funding"].to_numpy(float),
                               bt.steps["funding"].to_numpy(float), rtol=0, atol=1e-9)


def test_a_session_with_switches_against_costs_equals_the_backtest(tmp_path, small_config):
    """decision_interval, min_hold, the volatility target and the abstention margin act in
    paper trading as in the backtest: the policy is asked every third close only, positions are
    sized by the realised vol of each new bar, and trades and equity agree."""
    cfg = small_config(replace=PAPER_RUN,
                       env={"decision_interval": 3, "min_hold": 4, "min_margin": 0.05,
                            "vol_target": 0.1, "vol_span": 16},
                       training={"total_steps": 128, "eval_freq": 0, "checkpoint_freq": 0,
                                 "seed": 7})
    run = train(cfg, "switches", runs_root=tmp_path).run
    bt = backtest_run(run, start=START, end=END, allow_overlap=True, baselines=False,
                      report=False)
    asked = bt.steps["action"].notna()
    assert 0 < asked.sum() < len(bt.steps) / 2  # every third close
    result = run_paper(run, start=START, end=END, session="switches")
    assert_same_as_backtest(result.path, bt)


class _Cycle:
    """A policy that cycles short / flat / long / long at every decision: positions open on
    new bars all the time (a trained 128-step policy barely trades)."""

    name = "cycle"

    def __init__(self) -> None:
        self.k = 0

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        self.k += 1
        return np.array([(0, 1, 2, 2)[self.k % 4]]), state


def test_vol_targeted_positions_on_new_bars_equal_the_backtest(tmp_path, small_config,
                                                               monkeypatch):
    """With env.vol_target, each new bar's realised vol sizes the positions opened on it,
    exactly as in the backtest (the mirror's core was built before those bars)."""
    import rltrade.evaluation.judge as J

    cfg = small_config(replace=PAPER_RUN, env={"vol_target": 0.1, "vol_span": 16},
                       training={"total_steps": 128, "eval_freq": 0, "checkpoint_freq": 0})
    run = train(cfg, "vol", runs_root=tmp_path).run
    monkeypatch.setattr(J, "load_policy", lambda *a, **k: _Cycle())
    monkeypatch.setattr(T, "load_policy", lambda *a, **k: _Cycle())
    bt = backtest_run(run, start=START, end=END, allow_overlap=True, baselines=False,
                      report=False)
    assert bt.summary["n_fills"] > 50
    result = run_paper(run, start=START, end=END, session="vol")
    assert_same_as_backtest(result.path, bt)
