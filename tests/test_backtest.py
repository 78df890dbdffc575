"""The backtest runner: steps / trades / summary consistency, files, paths, NumpyMlpPolicy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rltrade.agents import NumpyMlpPolicy, make_baseline
from rltrade.agents.policy import PlanPolicy
from rltrade.data.synthetic import synthetic_market
from rltrade.envs import EnvConfig, TradingEnv
from rltrade.errors import ConfigError
from rltrade.evaluation import BacktestResult, compute_metrics, run_backtest
from rltrade.evaluation import backtest as B
from rltrade.features import FeatureSpec, Normalizer, build_dataset

SPEC = FeatureSpec.from_dict({
    "features": {"rsi": {"period": 14}, "returns": {"periods": [1, 5]}},
    "strategies": ["supertrend"],
})
CFG = {"window": 8, "equity_floor": 0.0}
NUMERIC = ["bar", "trade_executed", "position_change", "cash", "position", "equity",
           "realized_equity", "unrealized_pnl", "close", "costs", "reward", "stop_triggered",
           "take_profit", "liquidated", "drawdown", "invalid_action", "forced_close", "done"]


@pytest.fixture(scope="module")
def ds():
    return build_dataset(synthetic_market("planted", 1500, seed=5, timeframe="1h"), SPEC)


def flip_plan(ds, every=10):
    """discrete3: long / short alternating every ``every`` bars."""
    return PlanPolicy(np.where(np.arange(len(ds)) // every % 2 == 0, 2, 0), name="flip")


class Replay:
    """A predict-only policy replaying planned actions (so the generic Python path runs)."""

    def __init__(self, actions, start):
        self.actions = actions
        self.start = start
        self.i = 0

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        if episode_start is not None and episode_start[0]:
            self.i = 0
        a = self.actions[self.start + self.i]
        self.i += 1
        return np.asarray(a), state


# -- consistency ----------------------------------------------------------------------------


def test_steps_trades_summary_agree(ds):
    result = run_backtest(make_baseline("random", seed=0, hold=5), ds, CFG)
    assert isinstance(result, BacktestResult) and result.path is None
    steps, trades, summary = result.steps, result.trades, result.summary
    assert isinstance(steps.index, pd.DatetimeIndex) and str(steps.index.tz) == "UTC"
    assert steps.index.name == "timestamp" and steps.index.is_monotonic_increasing
    assert steps["bar"].iloc[0] == 7 and steps["bar"].iloc[-1] == len(ds) - 1
    first = steps.iloc[0]
    assert first["equity"] == summary["initial_equity"] == 50_000.0
    assert first["reward"] == 0 and not first["trade_executed"] and first["action"] >= 0
    assert pd.isna(steps["action"].iloc[-1]) and steps["action"].iloc[:-1].notna().all()
    assert steps["done"].iloc[-1] and not steps["done"].iloc[0]
    assert summary["final_equity"] == steps["equity"].iloc[-1]
    assert summary["final_realized_equity"] == steps["realized_equity"].iloc[-1]
    assert summary["bars"] == len(steps) and summary["n_trades"] == len(trades)
    # realized equity moves only by closed trades' net PnL (the engine's FIFO records)
    change = steps["realized_equity"].iloc[-1] - steps["realized_equity"].iloc[0]
    assert trades["net_pnl"].sum() == pytest.approx(change, abs=1e-6)
    by_exit = trades.groupby("exit_bar")["net_pnl"].sum()
    realized_steps = steps.set_index("bar")["realized_equity"].diff()
    assert np.allclose(realized_steps.loc[by_exit.index], by_exit, atol=1e-6)
    # net = gross - costs, costs summed per bar = the account's totals
    assert np.allclose(trades["net_pnl"], trades["gross_pnl"] - trades["fees"]
                       - trades["spread_cost"] - trades["slippage_cost"])
    assert steps["costs"].sum() == pytest.approx(summary["costs"]["total"])
    # equity = cash + position x close; position changes are the fills
    assert np.allclose(steps["equity"], steps["cash"] + steps["position"] * steps["close"])
    assert np.allclose(steps["position"].diff().fillna(0), steps["position_change"])
    assert (steps.loc[steps["position_change"] != 0, "trade_executed"]).all()
    assert summary["total_return"] == pytest.approx(summary["final_equity"] / 50_000 - 1)
    json.dumps(summary, allow_nan=False)
    json.dumps(result.metrics, allow_nan=False)


def test_reward_is_the_envs_log_return(ds):
    steps = run_backtest(make_baseline("random", seed=1), ds, CFG, metrics=False).steps
    expected = np.log(steps["equity"] / steps["equity"].shift())
    assert np.allclose(steps["reward"].iloc[1:], expected.iloc[1:])


def test_flips_are_an_exit_and_an_entry(ds):
    # a dead zone keeps discrete3 from re-targeting the size every bar: one lot per side
    cfg = EnvConfig.build(CFG, engine={"dead_zone": 0.5})
    result = run_backtest(flip_plan(ds), ds, cfg, force_close=True, metrics=False)
    trades, steps = result.trades, result.steps
    flips = steps.index[(np.sign(steps["position"]) * np.sign(steps["position"].shift()) < 0)]
    assert len(flips) > 50
    for when in flips:
        exits, entries = trades[trades["exit_time"] == when], trades[trades["entry_time"] == when]
        assert len(exits) == 1 and len(entries) == 1
        assert exits["side"].iloc[0] != entries["side"].iloc[0]
    entries, exits = trades["entry_time"].to_numpy(), trades["exit_time"].to_numpy()
    assert (entries[1:] == exits[:-1]).all()
    assert set(trades["side"]) == {"long", "short"}
    assert (trades["duration_bars"] == 10).sum() >= len(trades) - 2


def test_force_close(ds):
    plan = make_baseline("buy_and_hold")
    kept = run_backtest(plan, ds, CFG, metrics=False)
    closed = run_backtest(plan, ds, CFG, force_close=True)
    assert kept.summary["open_position"] > 0 and not kept.summary["force_closed"]
    s = closed.summary
    assert s["force_closed"] and s["open_position"] == 0
    assert s["final_equity"] == pytest.approx(s["final_realized_equity"])
    assert s["final_equity"] < kept.summary["final_equity"]  # the exit's costs
    last = closed.trades.iloc[-1]
    assert last["forced_close"] and last["exit_reason"] == "end"
    assert last["exit_time"] == closed.steps.index[-1]
    assert closed.steps["forced_close"].iloc[-1] and closed.steps["position"].iloc[-1] == 0
    assert closed.steps["trade_executed"].iloc[-1]  # the close's fill is the last row's event
    assert closed.metrics["trades"]["forced_closes"] >= 1


def test_metrics_have_the_benchmark_and_costs(ds):
    result = run_backtest(make_baseline("random", seed=2, hold=24), ds, CFG)
    m = result.metrics
    assert m["benchmark"] is not None and m["costs"]["total"] == pytest.approx(
        result.summary["costs"]["total"])
    assert m["performance"]["total_return"] == pytest.approx(result.summary["total_return"])
    assert m["run"]["id"] == "random" and m["run"]["bars"] == len(result.steps)
    # buy-and-hold at 1x through the engine, from the same bar: the buy_and_hold baseline's
    # equity under this (unlevered) config
    bh = run_backtest(make_baseline("buy_and_hold"), ds, CFG, metrics=False, benchmark=False)
    assert result.summary["benchmark_final_equity"] == pytest.approx(bh.summary["final_equity"])
    again = compute_metrics(result.steps, result.trades, timeframe="1h",
                            initial_capital=50_000, benchmark_equity=bh.steps["equity"])
    assert again["benchmark"]["total_return"] == pytest.approx(m["benchmark"]["total_return"])
    none = run_backtest(make_baseline("flat"), ds, CFG, benchmark=False)
    assert none.metrics["benchmark"] is None


def test_the_equity_floor_stops_a_backtest_only_when_asked_and_the_summary_says_so(ds):
    cfg = EnvConfig.build(CFG, equity_floor=0.95, engine={"leverage": 5.0})
    # by default a backtest covers the range it was given, whatever the env's floor
    full = run_backtest(make_baseline("random", seed=3), ds, cfg)
    s = full.summary
    assert s["truncated"] and not s["terminated"] and not s["stopped_early"]
    assert full.steps["bar"].iloc[-1] == len(ds) - 1
    assert s["bars_run"] == s["bars_requested"] == len(ds) - 7 == len(full.steps)
    assert s["stop_reason"] is None and B.stop_text(s) == ""
    assert s["end_time"] == full.steps.index[-1].isoformat()
    # asked for: it stops at the floor, as a training episode does, and says so
    result = run_backtest(make_baseline("random", seed=3), ds, cfg, equity_floor=True)
    s = result.summary
    assert s["terminated"] and not s["truncated"]
    assert result.steps["bar"].iloc[-1] < len(ds) - 1
    assert result.steps["done"].iloc[-1]
    assert s["stopped_early"] and s["stop_reason"] == "equity_floor"
    assert s["bars_run"] == len(result.steps) < s["bars_requested"] == len(ds) - 7
    assert s["end_time"] == result.steps.index[-1].isoformat()
    text = B.stop_text(s)
    assert "stopped early" in text and "equity floor" in text
    assert f"{s['bars_run']:,} of {s['bars_requested']:,}" in text
    # the benchmark covers the same bars as the agent
    assert len(result.steps["benchmark_equity"]) == len(result.steps)
    assert result.steps["benchmark_equity"].to_numpy() == pytest.approx(
        full.steps["benchmark_equity"].to_numpy()[:len(result.steps)], rel=0, abs=0)
    assert len(result.metrics["benchmark"]) > 0


def test_buy_and_hold_is_defined_once(ds):
    """One buy-and-hold (1x equity, the agent's costs, the same bars): the summary, the steps
    column, the metrics' benchmark and the ``buy_and_hold`` baseline's row are one number."""
    from rltrade.evaluation.judge import comparison_row

    cfg = EnvConfig.build(CFG, engine={"leverage": 2.0, "costs": {"taker_fee": 0.001}})
    agent = run_backtest(make_baseline("random", seed=2, hold=24), ds, cfg)
    baseline = run_backtest(make_baseline("buy_and_hold"), ds, cfg)
    assert baseline.summary["costs"]["total"] > 0
    np.testing.assert_array_equal(agent.steps["benchmark_equity"].to_numpy(),
                                  baseline.steps["equity"].to_numpy())
    final = baseline.summary["final_equity"]
    assert agent.summary["benchmark_final_equity"] == final
    assert agent.steps["benchmark_equity"].iloc[-1] == final
    row = comparison_row("buy_and_hold", "baseline", baseline)
    assert row["total_return"] == agent.metrics["benchmark"]["total_return"] == pytest.approx(
        final / 50_000 - 1, rel=1e-12)
    # at 1x equity, not at the agent's leverage of 2
    held = baseline.steps.iloc[2:]
    exposure = (held["position"] * held["close"]).abs() / held["equity"]
    assert exposure.max() < 1.01 and exposure.min() > 0.98
    assert baseline.summary["config"]["risk"] is None


def test_bankruptcy_is_an_early_stop(ds):
    cfg = EnvConfig.build(CFG, engine={"leverage": 50.0})
    result = run_backtest(flip_plan(ds, 3), ds, cfg, metrics=False)
    s = result.summary
    assert s["bankrupt"] and s["stopped_early"] and s["stop_reason"] == "bankrupt"
    assert "bankrupt" in B.stop_text(s)


# -- the three paths give the same numbers -------------------------------------------------


@pytest.mark.parametrize("scheme", ["discrete3", "discrete6", "exposure_sl"])
def test_planned_fast_path_equals_the_python_path(ds, scheme):
    rng = np.random.default_rng(4)
    n = {"discrete3": 3, "discrete6": 6}.get(scheme)
    actions = rng.integers(0, n, len(ds)) if n else rng.uniform(-1, 1, (len(ds), 2))
    cfg = EnvConfig.build(CFG, action_scheme=scheme)
    fast = run_backtest(PlanPolicy(actions), ds, cfg, force_close=True, metrics=False)
    slow = run_backtest(Replay(actions, 7), ds, cfg, force_close=True, metrics=False)
    pd.testing.assert_frame_equal(fast.steps, slow.steps)
    pd.testing.assert_frame_equal(fast.trades, slow.trades)
    assert len(fast.trades) > 100


def test_trade_buffer_grows(ds, monkeypatch):
    monkeypatch.setattr(B, "_TRADE_ROWS", 8)
    small = run_backtest(flip_plan(ds, 1), ds, CFG, metrics=False, benchmark=False)
    monkeypatch.undo()
    big = run_backtest(flip_plan(ds, 1), ds, CFG, metrics=False, benchmark=False)
    pd.testing.assert_frame_equal(small.trades, big.trades)
    assert len(big.trades) > 1000


def test_risk_manager_reasons_are_logged(ds):
    hour = int((ds.timestamps[200] // 3_600_000_000_000) % 24)
    window = [f"{hour:02d}:00", f"{(hour + 1) % 24:02d}:00"]
    cfg = EnvConfig.build(CFG, risk={"no_trade": {"times": [window]}})
    flips = np.where(np.arange(len(ds)) % 2 == 0, 2, 0)  # a trade every bar, in the window too
    result = run_backtest(PlanPolicy(flips), ds, cfg)
    reasons = result.steps["risk_reason"].astype(str)
    assert (reasons == "no_trade_window").sum() >= 1
    assert result.summary["risk_interventions"]["no_trade_window"] == (reasons != "").sum()
    assert result.metrics["risk"]["interventions_total"] >= 1


# -- files ----------------------------------------------------------------------------------


def test_files(ds, tmp_path, monkeypatch):
    monkeypatch.setattr(B, "PARQUET_ROWS", 100)
    out = tmp_path / "runs" / "demo" / "backtests"
    a = run_backtest(make_baseline("rule"), ds, CFG, out_dir=out, state_debug=True, name="demo")
    b = run_backtest(make_baseline("rule"), ds, CFG, out_dir=out)
    assert a.path.parent == out and a.path.name.startswith("bt_") and a.path != b.path
    names = {p.name for p in a.path.iterdir()}
    assert names == {"steps.csv", "steps.parquet", "trades.csv", "summary.json", "metrics.json",
                     "state_debug.csv"}
    assert "state_debug.csv" not in {p.name for p in b.path.iterdir()}
    summary = json.loads((a.path / "summary.json").read_text())
    assert summary == a.summary and summary["name"] == "demo"
    assert summary["backtest_id"] == a.path.name
    metrics = json.loads((a.path / "metrics.json").read_text())
    assert metrics["run"]["id"] == "demo"
    steps = pd.read_csv(a.path / "steps.csv", index_col="timestamp", parse_dates=True)
    assert len(steps) == len(a.steps)
    assert np.allclose(steps["equity"], a.steps["equity"])
    parquet = pd.read_parquet(a.path / "steps.parquet")
    assert np.array_equal(parquet["equity"], a.steps["equity"])
    trades = pd.read_csv(a.path / "trades.csv")
    assert len(trades) == len(a.trades) and np.allclose(trades["net_pnl"], a.trades["net_pnl"])
    debug = pd.read_csv(a.path / "state_debug.csv")
    assert {"raw.rsi_14", "norm.rsi_14", "norm.supertrend@1h_LONG",
            "account.position_exposure"} <= set(debug.columns)
    assert np.allclose(debug["norm.rsi_14"], debug["raw.rsi_14"] / 100, atol=1e-6)
    assert not list(a.path.glob("*.tmp"))


def test_state_debug_is_the_observation(ds):
    env = TradingEnv(ds, CFG, mode="eval", layout="flat")
    obs, _ = env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 3, len(ds))
    observations = [obs]
    for a in actions[7:27]:
        obs, *_ = env.step(int(a))
        observations.append(obs)
    debug = run_backtest(PlanPolicy(actions), ds, CFG, state_debug=True,
                         metrics=False).state_debug
    n_market = len(ds.feature_names) + len(ds.signal_names)
    for k, obs in enumerate(observations):
        market = obs[: -9].reshape(8, n_market)[-1]  # the window's last row: this bar's
        row = debug.iloc[k]
        assert np.allclose(market, row.filter(like="norm.").to_numpy(float), atol=1e-6)
        assert np.allclose(obs[-9:], row.filter(like="account.").to_numpy(float), atol=1e-6)


# -- policies -------------------------------------------------------------------------------


def test_not_a_policy_and_bad_plans(ds):
    with pytest.raises(ConfigError, match="not a policy"):
        run_backtest(object(), ds, CFG)
    with pytest.raises(ValueError, match="expected shape"):
        run_backtest(PlanPolicy(np.zeros(5)), ds, CFG)
    bad = np.full(len(ds), 1)
    bad[100] = 7  # out of range: clipped and counted
    result = run_backtest(PlanPolicy(bad), ds, CFG, metrics=False)
    assert result.summary["invalid_actions"] == 1
    zds = build_dataset(synthetic_market("gbm", 300, seed=0),
                        FeatureSpec.from_dict({"features": {"rsi": {}},
                                               "normalization": "zscore"}))
    with pytest.raises(ConfigError, match="normalizer"):
        run_backtest(Replay(np.ones(300, int), 7), zds, CFG)
    fitted = Normalizer.for_dataset(zds).fit(zds)
    assert run_backtest(Replay(np.ones(300, int), 7), zds, CFG, normalizer=fitted).steps.size


@pytest.fixture(scope="module")
def sb3_models(ds):
    import torch
    from stable_baselines3 import A2C, PPO, SAC

    models = {}
    env = TradingEnv(ds, CFG)
    trained = PPO("MultiInputPolicy", env, seed=0, n_steps=128, batch_size=64, n_epochs=1,
                  device="cpu")
    trained.learn(256)
    models["ppo_dict_trained"] = (trained, CFG)
    flat = {**CFG, "layout": "flat"}
    models["ppo_flat"] = (PPO("MlpPolicy", TradingEnv(ds, flat), seed=1, device="cpu"), flat)
    box = {**flat, "action_scheme": "exposure_sl"}
    models["a2c_box"] = (A2C("MlpPolicy", TradingEnv(ds, box), seed=2, device="cpu"), box)
    d6 = {**CFG, "action_scheme": "discrete6"}
    models["a2c_d6_relu"] = (A2C("MultiInputPolicy", TradingEnv(ds, d6), seed=3, device="cpu",
                                 policy_kwargs={"activation_fn": torch.nn.ReLU,
                                                "net_arch": [32, 16, 8]}), d6)
    models["sac_box"] = (SAC("MlpPolicy", TradingEnv(ds, box), seed=4, device="cpu",
                             buffer_size=1000), box)
    return models


@pytest.mark.parametrize("key", ["ppo_dict_trained", "ppo_flat", "a2c_box", "a2c_d6_relu",
                                 "sac_box"])
def test_numpy_mlp_equals_torch(ds, sb3_models, key):
    model, cfg = sb3_models[key]
    policy = NumpyMlpPolicy.from_sb3(model)
    space = model.observation_space
    space.seed(0)
    observations = [space.sample() for _ in range(300)]
    # realistic ones too: the env's own observations under random actions
    env = TradingEnv(ds, cfg, mode="eval")
    obs, _ = env.reset(seed=0)
    for _ in range(200):
        observations.append(obs)
        obs, *_ = env.step(env.action_space.sample())
    torch_actions = np.array([model.predict(o, deterministic=True)[0] for o in observations])
    ours = np.array([policy.predict(o)[0] for o in observations])
    if policy.action == "discrete":
        assert np.array_equal(torch_actions, ours)
    else:
        assert np.allclose(torch_actions, ours, atol=1e-5)
    # batched observations give the batched actions
    if isinstance(observations[0], dict):
        batch = {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    else:
        batch = np.stack(observations)
    torch_batch = model.predict(batch, deterministic=True)[0]
    assert np.allclose(policy.predict(batch)[0], torch_batch, atol=1e-5)


@pytest.mark.parametrize("key", ["ppo_dict_trained", "ppo_flat", "a2c_box", "a2c_d6_relu"])
def test_numpy_mlp_backtest_equals_the_sb3_models(ds, sb3_models, key):
    model, cfg = sb3_models[key]
    policy = NumpyMlpPolicy.from_sb3(model)
    ref = run_backtest(model, ds, cfg, metrics=False, benchmark=False)
    for backend in ("auto", "numpy"):
        policy.backend = backend
        fast = run_backtest(policy, ds, cfg, metrics=False, benchmark=False)
        cols = ["action"] if "action" in ref.steps else ["action_0", "action_1"]
        if policy.action == "discrete":
            pd.testing.assert_frame_equal(fast.steps, ref.steps)
            pd.testing.assert_frame_equal(fast.trades, ref.trades)
        else:
            assert np.allclose(fast.steps[cols], ref.steps[cols], atol=1e-5, equal_nan=True)
            assert np.allclose(fast.steps["equity"], ref.steps["equity"], rtol=1e-6)


def test_numpy_mlp_refuses_what_it_cannot_run(ds, sb3_models):
    model, cfg = sb3_models["ppo_flat"]
    policy = NumpyMlpPolicy.from_sb3(model)
    with pytest.raises(ValueError, match="deterministic"):
        policy.predict(np.zeros(policy.obs_dim, np.float32), deterministic=False)
    with pytest.raises(Exception, match="network takes"):
        run_backtest(policy, ds, {**cfg, "window": 4})
    class Odd:
        policy = object()

    with pytest.raises(ConfigError, match="not an SB3"):
        NumpyMlpPolicy.from_sb3(Odd())


def test_the_cli_tables_say_when_a_backtest_stopped_early(ds, capsys):
    from rltrade.cli import _print_backtest, _print_comparison
    from rltrade.evaluation.judge import compare_baselines

    cfg = EnvConfig.build(CFG, equity_floor=0.95, engine={"leverage": 5.0})
    result = run_backtest(make_baseline("random", seed=3), ds, cfg, equity_floor=True)
    s = result.summary
    _print_backtest(result)
    out = " ".join(capsys.readouterr().out.split())
    assert f"({s['bars_run']:,} of {s['bars_requested']:,} bars)" in out
    assert "early stop" in out and "equity floor" in out
    table, _ = compare_baselines(ds, cfg, None, ["buy_and_hold"], agent=("agent", result))
    assert list(table["bars_run"]) == [s["bars_run"], s["bars_requested"]]
    _print_comparison("t", table, "agent")
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "policy" in line)
    assert "bars" in header and "end" in header
    row = next(line for line in out.splitlines() if line.startswith("│ agent "))
    assert f"{s['bars_run']:,} of {s['bars_requested']:,}" in row
    assert f"{result.steps.index[-1]:%Y-%m-%d %H:%M}" in row
    assert "agent: stopped early at" in " ".join(out.split())


def test_an_open_position_at_the_end_is_said_not_hidden_behind_zero_trades(ds, capsys):
    """Buy-and-hold never closes a trade: the table must not read "0 trades" alone next to a
    return that came from a position still open."""
    from rltrade.cli import _print_backtest

    result = run_backtest(make_baseline("buy_and_hold"), ds, CFG)
    s = result.summary
    assert s["n_trades"] == 0 and s["open_position"] > 0 and s["n_fills"] >= 1
    _print_backtest(result)
    out = " ".join(capsys.readouterr().out.split())
    assert "closed trades │ 0" in out and f"fills │ {s['n_fills']}" in out
    assert f"open position at the end │ {s['open_position']:g} (not closed)" in out


def test_a_recurrent_policy_gets_its_state_and_episode_start(ds):
    class Recurrent:
        """Checks SB3's recurrent protocol: the state it returned comes back, and
        ``episode_start`` is true on the first call only."""

        def __init__(self):
            self.calls = 0

        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            if self.calls == 0:
                assert state is None and episode_start.tolist() == [True]
            else:
                assert state == ("h", self.calls) and episode_start.tolist() == [False]
            self.calls += 1
            return np.asarray(2 if self.calls % 7 else 0), ("h", self.calls)

    policy = Recurrent()
    result = run_backtest(policy, ds, CFG, metrics=False)
    assert policy.calls == len(result.steps) - 1 and len(result.trades) > 0
