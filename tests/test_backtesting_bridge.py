"""The backtesting.py bridge runs a policy exactly as ``TradingEnv`` does (``ideal`` mode).

One deterministic policy runs (a) through ``TradingEnv`` (``mode="eval"``, ideal engine, whole
unit lots) and (b) inside backtesting.py through :mod:`rltrade.envs.backtesting_py`, on
``sample:EURUSD-1h``. The env keeps no trade records (its engine is the batch engine), so its
position path is replayed through an ``ExecutionEngine`` (checked to give the env's equity bar
for bar) to get its trades; they must equal backtesting.py's trade for trade, with the same
equity curve and final equity.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest

from rltrade.data import load_bars
from rltrade.envs import EnvConfig, TradingEnv
from rltrade.envs.backtesting_py import (
    BridgeMismatchError,
    as_policy,
    backtesting_data,
    bridge_config,
    policy_strategy,
    run_in_backtesting,
)
from rltrade.errors import ConfigError, DataError
from rltrade.features.dataset import Dataset, build_dataset
from rltrade.sim import EngineConfig, ExecutionEngine, Order
from rltrade.sim.risk import RiskConfig

# backtesting.py 0.6.6's statistics use an index attribute pandas 3 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:DatetimeIndex.dayofweek:DeprecationWarning",
                                        "ignore:The inplace keyword:DeprecationWarning",
                                        "ignore::UserWarning:backtesting")

CASH = 1e7  # ~4.5 million EURUSD units at half exposure: whole units are fine-grained
COMMISSION = 0.0002


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return build_dataset(load_bars("sample:EURUSD-1h"))


@pytest.fixture(scope="module")
def config() -> EnvConfig:
    return EnvConfig(action_scheme="discrete3", max_exposure=0.5, window=32, mode="eval",
                     engine=EngineConfig.ideal(COMMISSION, initial_cash=CASH, lot_size=1))


def feature_policy(ds: Dataset, name: str = "macd_hist", band: float = 2e-4):
    """discrete3 from the sign of one feature of the last observed row (flat inside a band)."""
    j = ds.feature_names.index(name)

    def policy(obs: dict[str, np.ndarray]) -> int:
        x = float(obs["market"][-1, j])
        return 2 if x > band else 0 if x < -band else 1

    return policy


def hashed(obs: dict[str, np.ndarray]) -> float:
    """A pseudo-random number in [0, 1) that is a pure function of the observation."""
    return zlib.crc32(obs["market"][-1].tobytes()) / 2**32


class Recorder:
    """Wraps a policy and keeps every observation it was given."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.observations: list[Any] = []

    def __call__(self, obs: Any) -> Any:
        self.observations.append(obs)
        return self.policy(obs)


def run_env(ds: Dataset, config: EnvConfig, policy: Any) -> dict[str, Any]:
    """One eval episode of ``TradingEnv``: observations, positions, equity and the risk
    manager's reasons for changing each step's target."""
    act = as_policy(policy)
    env = TradingEnv(ds, config)
    obs, info = env.reset()
    out: dict[str, Any] = {"start": info["bar"], "obs": [], "positions": [],
                           "equity": [info["equity"]], "reasons": []}
    while True:
        out["obs"].append(obs)
        obs, _, terminated, truncated, info = env.step(act(obs))
        out["positions"].append(info["position"])
        out["equity"].append(info["equity"])
        out["reasons"].append(env.core.last_reasons[0])
        if terminated or truncated:
            break
    out["info"] = info
    out["env"] = env
    return out


def replay(ds: Dataset, config: EnvConfig, start: int,
           positions: list[float]) -> tuple[ExecutionEngine, list[float]]:
    """The env's position path as target orders through an engine that records trades;
    returns the engine and its equity at every bar from ``start``."""
    eng = ExecutionEngine.from_dataset(ds, config.engine)
    eng.reset(start=start)
    equity = [eng.equity]
    for target in positions:
        eng.submit(Order.target(target))
        eng.advance()
        equity.append(eng.equity)
    return eng, equity


def trade_frames(eng: ExecutionEngine, stats: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    ours = pd.DataFrame(eng.trades)
    theirs = stats["_trades"]
    mine = pd.DataFrame({
        "size": ours["side"] * ours["qty"], "entry_bar": ours["entry_bar"],
        "exit_bar": ours["exit_bar"], "entry_price": ours["entry_price"],
        "exit_price": ours["exit_price"], "pnl": ours["net_pnl"], "commission": ours["fees"],
    })
    ref = pd.DataFrame({
        "size": theirs["Size"].astype(float), "entry_bar": theirs["EntryBar"],
        "exit_bar": theirs["ExitBar"], "entry_price": theirs["EntryPrice"],
        "exit_price": theirs["ExitPrice"], "pnl": theirs["PnL"],
        "commission": theirs["Commission"],
    })
    key = ["exit_bar", "entry_bar", "size", "entry_price", "exit_price"]
    mine = mine.sort_values(key, kind="stable").reset_index(drop=True)
    ref = ref.sort_values(key, kind="stable").reset_index(drop=True)
    return mine, ref


def test_same_trades_and_equity_as_the_env(ds: Dataset, config: EnvConfig) -> None:
    policy = feature_policy(ds)
    env_run = run_env(ds, config, Recorder(policy))
    info = env_run["info"]
    eng, equity = replay(ds, config, env_run["start"], env_run["positions"])
    # the replay is the env's account, bar for bar (the same kernels: bit for bit)
    np.testing.assert_array_equal(equity, env_run["equity"])
    assert eng.adjustments["lots_merged"] == 0

    recorder = Recorder(policy)
    stats, _ = run_in_backtesting(recorder, ds, config)
    strategy = stats["_strategy"]
    assert strategy.start_bar == env_run["start"]

    # the policy saw exactly the env's observations, at the same bars
    assert len(recorder.observations) == len(env_run["obs"]) == len(strategy.decisions)
    for mine, ref in zip(recorder.observations, env_run["obs"], strict=True):
        np.testing.assert_array_equal(mine["market"], ref["market"])
        np.testing.assert_array_equal(mine["account"], ref["account"])
    assert [d.position for d in strategy.decisions] == env_run["positions"]

    # closed trades: entry/exit bars, prices and sizes identical, PnL and commission to 1e-9
    mine, ref = trade_frames(eng, stats)
    assert len(mine) == len(ref) == info["trade_count"] > 200
    assert stats["# Trades"] == len(ref)
    for col in ("size", "entry_bar", "exit_bar", "entry_price", "exit_price"):
        np.testing.assert_array_equal(mine[col].to_numpy(), ref[col].to_numpy(), err_msg=col)
    np.testing.assert_allclose(mine["pnl"], ref["pnl"], rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(mine["commission"], ref["commission"], rtol=1e-9, atol=1e-9)
    assert (mine["size"] == mine["size"].round()).all()
    # the position still open at the end: the same lots
    lots = eng.account.lots
    open_trades = strategy.trades
    assert len(open_trades) == len(lots) > 0
    np.testing.assert_array_equal([t.entry_bar for t in open_trades], lots[:, 0])
    np.testing.assert_array_equal([t.entry_price for t in open_trades], lots[:, 1])
    np.testing.assert_array_equal([t.size for t in open_trades], lots[:, 2])

    # equity: the whole curve from the first decision, and the final equity
    curve = stats["_equity_curve"]["Equity"].to_numpy()[env_run["start"]:]
    np.testing.assert_allclose(curve, env_run["equity"], rtol=1e-9)
    final_env = info["equity"]
    assert abs(stats["Equity Final [$]"] - final_env) / final_env < 1e-9
    assert final_env != CASH


@pytest.mark.parametrize("scheme", ["exposure_sl", "discrete6"])
def test_stops_and_leverage_cap_follow_the_env(ds: Dataset, scheme: str) -> None:
    """Schemes with position-level stops (hit often) and, for exposure_sl, full exposure that
    the engine's leverage cap clamps at the open: backtesting.py follows bar for bar."""
    config = EnvConfig(action_scheme=scheme, window=16, mode="eval", min_stop_pct=0.0005,
                       max_stop_pct=0.003, stop_atr=1.0,
                       engine=EngineConfig.ideal(COMMISSION, initial_cash=CASH, lot_size=1))
    j = ds.feature_names.index("ret_5")

    def policy(obs: dict[str, np.ndarray]) -> Any:
        u = hashed(obs)
        if scheme == "discrete6":
            return int(u * 6)
        side = 1.0 if obs["market"][-1, j] > 0 else -1.0
        exposure = 0.0 if u < 0.15 else side * (1.0 if u > 0.6 else u)
        return np.array([exposure, 2 * hashed({"market": obs["market"][-2:]}) - 1])

    env_run = run_env(ds, config, policy)
    info = env_run["info"]
    account = env_run["env"].account
    assert account.stop_exits > 20
    if scheme == "exposure_sl":
        assert env_run["env"].core.engine.adjustments["clamped_leverage"] > 20

    stats, _ = run_in_backtesting(policy, ds, config)
    curve = stats["_equity_curve"]["Equity"].to_numpy()[env_run["start"]:]
    np.testing.assert_allclose(curve, env_run["equity"], rtol=1e-9)
    assert abs(stats["Equity Final [$]"] - info["equity"]) / info["equity"] < 1e-9
    assert len(stats["_trades"]) == info["trade_count"] > 100
    assert len(stats["_strategy"].decisions) == len(env_run["obs"])


def exposure_policy(ds: Dataset):
    """exposure_sl from the sign of ``ret_5`` with a pseudo-random size and stop tightness."""
    j = ds.feature_names.index("ret_5")

    def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
        u = hashed(obs)
        side = 1.0 if obs["market"][-1, j] > 0 else -1.0
        exposure = 0.0 if u < 0.15 else side * (1.0 if u > 0.6 else u)
        return np.array([exposure, 2 * hashed({"market": obs["market"][-2:]}) - 1])

    return policy


@pytest.mark.parametrize("scheme", ["discrete3", "exposure_sl"])
def test_risk_manager_in_the_loop(ds: Dataset, scheme: str) -> None:
    """A risk manager whose four gates all intervene (drawdown cut, volatility scaling, the
    daily-loss kill switch, a no-trade window): backtesting.py still follows the env trade for
    trade, and the bridge records the env's interventions, decision by decision."""
    part = ds.slice(0, 2500)
    risk = RiskConfig.from_dict({
        "drawdown": {"max_drawdown": 0.015, "action": "cut", "cut_factor": 0.5},
        "volatility": {"max_atr_pct": 0.0012, "mode": "inverse"},
        "daily_loss": {"max_daily_loss": 0.0025},
        "no_trade": {"times": [["13:00", "15:00"]]},
    })
    config = EnvConfig(action_scheme=scheme, max_exposure=0.5, window=32, mode="eval",
                       min_stop_pct=0.0005, max_stop_pct=0.003, risk=risk,
                       engine=EngineConfig.ideal(COMMISSION, initial_cash=CASH, lot_size=1))
    policy = feature_policy(part) if scheme == "discrete3" else exposure_policy(part)
    env_run = run_env(part, config, policy)
    info = env_run["info"]
    counts = info["risk_interventions"]
    assert set(counts) == {"max_drawdown", "volatility", "daily_loss", "no_trade_window"}
    assert min(counts.values()) >= 20

    stats, _ = run_in_backtesting(policy, part, config)
    strategy = stats["_strategy"]
    decisions = strategy.decisions
    assert strategy.risk_interventions == counts
    assert [d.risk_reasons for d in decisions] == env_run["reasons"]
    assert len(stats["_trades"]) == info["trade_count"] > 500
    curve = stats["_equity_curve"]["Equity"].to_numpy()[env_run["start"]:]
    np.testing.assert_allclose(curve, env_run["equity"], rtol=1e-9)
    assert abs(stats["Equity Final [$]"] - info["equity"]) / info["equity"] < 1e-9
    if scheme == "exposure_sl":
        assert env_run["env"].account.stop_exits > 20
        return
    # no stops: the env's positions replayed through an engine give its trades, one by one
    assert [d.position for d in decisions] == env_run["positions"]
    eng, equity = replay(part, config, env_run["start"], env_run["positions"])
    np.testing.assert_array_equal(equity, env_run["equity"])
    mine, ref = trade_frames(eng, stats)
    for col in ("size", "entry_bar", "exit_bar", "entry_price", "exit_price"):
        np.testing.assert_array_equal(mine[col].to_numpy(), ref[col].to_numpy(), err_msg=col)
    np.testing.assert_allclose(mine["pnl"], ref["pnl"], rtol=1e-9, atol=1e-6)


def test_baseline_callable_and_predict_object(ds: Dataset) -> None:
    """A stateful signal-following baseline, and the same as an SB3-like ``predict`` object."""
    part = ds.slice(0, 1500)
    config = EnvConfig(action_scheme="discrete3", max_exposure=0.8, window=8)
    cols = [part.signal_names.index(f"supertrend@1h_{s}") for s in ("FLAT", "LONG", "SHORT")]

    def make_baseline():
        last = {"action": 1}

        def baseline(obs: dict[str, np.ndarray]) -> int:
            flat, long, short = (obs["market"][-1, n - len(part.signal_names)] for n in cols)
            if long:
                last["action"] = 2
            elif short:
                last["action"] = 0
            elif flat:
                last["action"] = 1
            return last["action"]  # HOLD keeps the last action

        return baseline

    class Model:
        def __init__(self) -> None:
            self.calls = 0
            self.baseline = make_baseline()

        def predict(self, obs: Any, deterministic: bool = False) -> tuple[np.ndarray, None]:
            assert deterministic
            self.calls += 1
            return np.array(self.baseline(obs)), None

    bridged = bridge_config(config, cash=CASH, commission=0.0001)
    env_run = run_env(part, bridged, make_baseline())
    expected = env_run["info"]["trade_count"]
    assert expected > 20

    stats_fn, bt = run_in_backtesting(make_baseline(), part, config, cash=CASH,
                                      commission=0.0001)
    model = Model()
    stats_model, _ = run_in_backtesting(model, part, config, cash=CASH, commission=0.0001)
    assert model.calls == len(env_run["obs"])
    for stats in (stats_fn, stats_model):
        assert stats["# Trades"] == expected
        assert stats["Equity Final [$]"] == pytest.approx(env_run["info"]["equity"], rel=1e-9)
    # the same strategy through a Backtest built by hand
    strategy = policy_strategy(make_baseline(), part, config, cash=CASH, commission=0.0001)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(backtesting_data(part), strategy, **strategy.backtest_kwargs()).run()
    assert stats["# Trades"] == expected
    assert isinstance(bt, Backtest)
    # finalize_trades: the position left open at the end counts too (closed at the last open)
    final, _ = run_in_backtesting(make_baseline(), part, config, cash=CASH, commission=0.0001,
                                  finalize_trades=True)
    assert final["# Trades"] == expected + len(env_run["env"].account.lots) > expected


def test_stable_baselines3_model(ds: Dataset, tmp_path: Path) -> None:
    """An (untrained) SB3 model: its deterministic actions in the env and in backtesting.py."""
    sb3 = pytest.importorskip("stable_baselines3")
    part = ds.slice(0, 600)
    config = bridge_config(EnvConfig(action_scheme="discrete3", max_exposure=0.5, window=16),
                           cash=CASH, commission=COMMISSION)
    model = sb3.PPO("MultiInputPolicy", TradingEnv(part, config), seed=3, n_steps=64,
                    device="cpu")
    env_run = run_env(part, config, model)
    stats, bt = run_in_backtesting(model, part, config)
    assert stats["# Trades"] == env_run["info"]["trade_count"]
    assert stats["Equity Final [$]"] == pytest.approx(env_run["info"]["equity"], rel=1e-9)
    out = tmp_path / "chart.html"
    bt.plot(filename=str(out), open_browser=False)
    assert out.stat().st_size > 10_000


def test_decisions_do_not_depend_on_later_bars(ds: Dataset, config: EnvConfig) -> None:
    """Delete the future: cutting the data after bar ``n`` changes no observation, action or
    position before it (an order's size reads only its own fill price, the next open)."""
    policy = feature_policy(ds, band=0.0)
    full, _ = run_in_backtesting(policy, ds.slice(0, 2000), config)
    cut, _ = run_in_backtesting(policy, ds.slice(0, 1200), config)
    a = full["_strategy"].decisions
    b = cut["_strategy"].decisions
    assert len(b) == 1200 - 1 - b[0].bar
    assert [(d.bar, d.action, d.position) for d in a[:len(b)]] == [
        (d.bar, d.action, d.position) for d in b]
    np.testing.assert_array_equal(full["_equity_curve"]["Equity"].to_numpy()[:1200],
                                  cut["_equity_curve"]["Equity"].to_numpy())


def test_flat_layout_and_fill_at_close(ds: Dataset) -> None:
    """``layout="flat"`` observations and ``fill="close"`` (backtesting.py's trade_on_close)."""
    part = ds.slice(0, 1500)
    n_market = len(part.feature_names) + len(part.signal_names)
    window = 4
    j = (window - 1) * n_market + part.feature_names.index("ret_1")
    config = EnvConfig(action_scheme="discrete3", max_exposure=0.5, window=window,
                       layout="flat", mode="eval",
                       engine=EngineConfig.ideal(COMMISSION, initial_cash=CASH, lot_size=1000,
                                                 fill="close"))

    def policy(obs: np.ndarray) -> int:
        return 2 if obs[j] > 0 else 0

    env_run = run_env(part, config, policy)
    stats, bt = run_in_backtesting(policy, part, config)
    assert bt._broker.keywords["trade_on_close"] is True
    sizes = stats["_trades"]["Size"].abs()
    assert (sizes % 1000 == 0).all()
    assert stats["# Trades"] == env_run["info"]["trade_count"] > 50
    curve = stats["_equity_curve"]["Equity"].to_numpy()[env_run["start"]:]
    np.testing.assert_allclose(curve, env_run["equity"], rtol=1e-9)


def test_mismatch_is_detected(ds: Dataset, config: EnvConfig) -> None:
    """A Backtest whose margin binds where the engine's leverage cap does not: the mirror check
    stops the run (strict) or warns once."""
    part = ds.slice(0, 800)
    full = EnvConfig.build(config, max_exposure=1.0)
    strategy = policy_strategy(feature_policy(part, band=0.0), part, full)
    kwargs = strategy.backtest_kwargs(margin=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(backtesting_data(part), strategy, **kwargs)
        with pytest.raises(BridgeMismatchError, match="left the env"):
            bt.run()
        loose = policy_strategy(feature_policy(part, band=0.0), part, full, strict=False)
        bt = Backtest(backtesting_data(part), loose, **loose.backtest_kwargs(margin=1.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = bt.run()
    ours = [w for w in caught if "left the env" in str(w.message)]
    assert len(ours) == 1  # once, and the run went on to the end
    assert len(stats["_strategy"].decisions) == len(part) - 1 - stats["_strategy"].start_bar


def test_backtest_must_match_the_config(ds: Dataset, config: EnvConfig) -> None:
    part = ds.slice(0, 300)
    strategy = policy_strategy(lambda obs: 1, part, config)
    kwargs = strategy.backtest_kwargs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match="commission"):
            Backtest(backtesting_data(part), strategy, **{**kwargs, "commission": 0.001}).run()
        with pytest.raises(ConfigError, match="cash"):
            Backtest(backtesting_data(part), strategy, **{**kwargs, "cash": 1e6}).run()
        with pytest.raises(DataError, match="bars"):
            Backtest(backtesting_data(ds.slice(0, 299)), strategy, **kwargs).run()


def test_bridge_config() -> None:
    retail = EnvConfig(engine=EngineConfig(leverage=3, dead_zone=0.01))
    cfg = bridge_config(retail, cash=1e6)
    assert cfg.mode == "eval"
    assert cfg.engine.mode == "ideal"
    assert cfg.engine.costs.maker_fee == cfg.engine.costs.taker_fee == 0.0005
    assert cfg.engine.lot_size == 1
    assert cfg.engine.leverage == 3 and cfg.engine.dead_zone == 0.01
    assert cfg.engine.initial_cash == 1e6
    assert bridge_config(EnvConfig(engine=EngineConfig(lot_size=100))).engine.lot_size == 100
    assert bridge_config(retail, commission=0.0, lot_size=10).engine.costs.taker_fee == 0
    with pytest.raises(ConfigError, match="whole number"):
        bridge_config(retail, lot_size=0.5)
    with pytest.raises(ConfigError, match="initial_position"):
        bridge_config(EnvConfig(engine=EngineConfig(initial_position=5)))
    gated = RiskConfig.from_dict({"drawdown": {"max_drawdown": 0.1}})
    assert bridge_config(EnvConfig(risk=gated)).risk == gated  # kept in the loop
    with pytest.raises(TypeError, match="callable"):
        as_policy(42)
