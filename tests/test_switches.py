"""The switches against costs (docs/envs.md, "Trading less"): each off by default, each the same
in TradingEnv, VecTradingEnv and run_backtest (one implementation, in the step kernel)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rltrade.agents.policy import PlanPolicy
from rltrade.data.synthetic import synthetic_market
from rltrade.envs import EnvConfig, TradingEnv, VecTradingEnv
from rltrade.envs import kernels as EK
from rltrade.envs.core import EnvCore
from rltrade.errors import ConfigError
from rltrade.evaluation import run_backtest
from rltrade.features import FeatureSpec, build_dataset
from rltrade.sim import kernels as K

SPEC = FeatureSpec.from_dict({
    "features": {"rsi": {"period": 14}, "returns": {"periods": [1, 5]}},
    "strategies": ["supertrend"],
})
BASE = {"window": 8, "equity_floor": 0.0, "mode": "eval"}


@pytest.fixture(scope="module")
def ds():
    return build_dataset(synthetic_market("regime", 800, seed=3, timeframe="1h"), SPEC)


class StrideReplay:
    """A predict-only policy (the generic Python path) replaying ``actions[bar]``, told that it
    is asked every ``every`` bars from ``start``."""

    def __init__(self, actions, start, every=1):
        self.actions, self.start, self.every, self.i = actions, start, every, 0

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        if episode_start is not None and episode_start[0]:
            self.i = 0
        a = self.actions[self.start + self.i * self.every]
        self.i += 1
        return np.asarray(a), state


def flips(ds):
    """discrete3 actions that change every bar (long, short, flat, ...)."""
    return np.array([2, 0, 1])[np.arange(len(ds)) % 3]


# -- 1. decision interval -------------------------------------------------------------------


def test_decision_interval_steps_k_bars_and_sums_the_rewards(ds):
    one = TradingEnv(ds, BASE)
    four = TradingEnv(ds, BASE, decision_interval=4)
    one.reset(seed=0)
    _, info4 = four.reset(seed=0)
    start = info4["bar"]
    rewards = []
    for _ in range(8):  # the 1-bar env replays the 4-bar env's decision, then 3 holds
        r1 = 0.0
        _, r, *_ = one.step(2)
        r1 += r
        for _ in range(3):
            _, r, *_ = one.step(2)  # long again: a hold
            r1 += r
        _, r4, _, _, info4 = four.step(2)
        rewards.append((r1, r4))
    assert info4["bar"] == start + 32
    np.testing.assert_allclose([a for a, _ in rewards], [b for _, b in rewards], rtol=1e-12,
                               atol=1e-15)


def test_decision_interval_changes_the_position_only_every_kth_bar(ds):
    result = run_backtest(PlanPolicy(flips(ds)), ds, EnvConfig.build(BASE, decision_interval=4),
                          metrics=False, benchmark=False)
    steps = result.steps
    changed = np.flatnonzero(steps["position_change"].to_numpy() != 0.0)
    assert len(changed) > 50
    # decided at the close of bars 0, 4, 8... of the pass, filled at the next open
    assert set(changed % 4) == {1}
    decided = steps["action"].notna().to_numpy()[:-1]
    assert decided[::4].all() and not decided[1::4].any()
    every_bar = run_backtest(PlanPolicy(flips(ds)), ds, BASE, metrics=False, benchmark=False)
    assert (every_bar.steps["position_change"] != 0).sum() > 3 * len(changed)


@pytest.mark.parametrize("switches", [
    {"decision_interval": 4},
    {"min_hold": 5},
    {"hysteresis": 0.3},
    {"vol_target": 0.1, "vol_bars_per_year": 8760.0},
    {"decision_interval": 3, "min_hold": 4, "hysteresis": 0.2, "cost_penalty": 2.0,
     "vol_target": 0.2, "vol_bars_per_year": 8760.0},
])
def test_backtest_paths_and_envs_agree_with_switches(ds, switches):
    """The fused loop, the Python loop, TradingEnv and VecTradingEnv: the same numbers."""
    rng = np.random.default_rng(1)
    # float32 values: the envs take float32 actions, the plan float64 ones
    actions = rng.uniform(-1, 1, (len(ds), 2)).astype(np.float32).astype(np.float64)
    cfg = EnvConfig.build(BASE, action_scheme="exposure_sl", **switches)
    k = cfg.decision_interval
    fast = run_backtest(PlanPolicy(actions), ds, cfg, metrics=False, benchmark=False)
    slow = run_backtest(StrideReplay(actions, cfg.window - 1, k), ds, cfg, metrics=False,
                        benchmark=False)
    pd.testing.assert_frame_equal(fast.steps, slow.steps)
    assert fast.summary["n_fills"] > 10
    env = TradingEnv(ds, cfg)
    venv = VecTradingEnv(ds, n_envs=2, config=cfg, seed=0)
    _, info = env.reset(seed=0)
    venv.reset()
    bar = info["bar"]
    equity = fast.steps.set_index("bar")["equity"]
    while True:
        _, r, te, tr, info = env.step(actions[bar].astype(np.float32))
        _, vr, _, _ = venv.step(np.repeat(actions[bar][None], 2, axis=0).astype(np.float32))
        assert vr[0] == np.float32(r)
        bar = info["bar"]
        assert info["equity"] == equity[bar]
        if te or tr:
            break
        assert venv.core.info(0)["equity"] == info["equity"]


# -- 2. minimum holding period --------------------------------------------------------------


def test_min_hold_refuses_a_change_until_held(ds):
    steps = run_backtest(PlanPolicy(flips(ds)), ds, EnvConfig.build(BASE, min_hold=6),
                         metrics=False, benchmark=False).steps
    pos = steps["position"].to_numpy()
    changed = np.flatnonzero(np.diff(pos) != 0.0) + 1  # bars whose open filled a change
    held = np.diff(changed)
    assert len(changed) > 20
    assert held.min() >= 6  # each position lasted at least 6 bars
    free = run_backtest(PlanPolicy(flips(ds)), ds, BASE, metrics=False, benchmark=False).steps
    assert np.diff(np.flatnonzero(np.diff(free["position"].to_numpy()) != 0.0)).min() == 1


def test_min_hold_leaves_stops_acting(ds):
    """A stop-loss still closes a position held for less than min_hold bars."""
    cfg = EnvConfig.build(BASE, action_scheme="discrete6", min_hold=10_000, stop_atr=0.2)
    actions = np.where(np.arange(len(ds)) == cfg.window - 1, 1, 0)  # enter long once, hold
    result = run_backtest(PlanPolicy(actions), ds, cfg, metrics=False, benchmark=False)
    assert result.trades["stop_triggered"].any()


# -- 3. hysteresis ----------------------------------------------------------------------------


def test_hysteresis_skips_a_small_rebalance(ds):
    # exposure 0.8, then 0.9 (a 0.1 step: inside a 0.2 band), then -0.5 (outside)
    n = len(ds)
    start = BASE["window"] - 1
    a = np.zeros((n, 2))
    a[:, 0] = 0.8
    a[start + 5:, 0] = 0.9
    a[start + 10:, 0] = -0.5
    a[:, 1] = 1.0
    cfg = dict(BASE, action_scheme="exposure_sl", max_stop_pct=0.9)
    banded = run_backtest(PlanPolicy(a), ds, EnvConfig.build(cfg, hysteresis=0.2),
                          metrics=False, benchmark=False).steps
    free = run_backtest(PlanPolicy(a), ds, EnvConfig.build(cfg), metrics=False,
                        benchmark=False).steps
    free_changes = free["position_change"].iloc[: 12].to_numpy()
    band_changes = banded["position_change"].iloc[: 12].to_numpy()
    assert (free_changes[1:] != 0).sum() > (band_changes[1:] != 0).sum()
    assert band_changes[1] != 0  # the first entry passes
    assert (band_changes[2:11] == 0).all()  # the 0.1 rebalances and the 0.9 step are skipped
    assert band_changes[11] < 0  # the reversal passes


# -- 4. volatility targeting ----------------------------------------------------------------


def test_realised_vol_is_causal():
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    full = EK.realised_vol(close, 20.0, 8760.0)
    for t in (1, 2, 17, 150, 399):
        assert EK.realised_vol(close[: t + 1], 20.0, 8760.0)[t] == full[t]
    changed = close.copy()
    changed[200:] *= np.exp(rng.normal(0, 0.05, 200))  # the future changes, the past does not
    np.testing.assert_array_equal(EK.realised_vol(changed, 20.0, 8760.0)[:200], full[:200])
    r = close[1:] / close[:-1] - 1.0
    ref = pd.Series(r * r).ewm(span=20, adjust=True).mean().to_numpy()
    np.testing.assert_allclose(full[1:], np.sqrt(ref * 8760.0), rtol=1e-12)


def test_vol_targeted_positions_do_not_read_the_future(ds):
    """The delete-the-future test with vol targeting on (its default annualisation): a pass
    on the bars up to t trades exactly as the pass on all bars, up to t."""
    rng = np.random.default_rng(5)
    actions = rng.integers(0, 3, len(ds))
    cfg = EnvConfig.build(BASE, vol_target=0.05, vol_span=16)
    full = run_backtest(PlanPolicy(actions), ds, cfg, metrics=False, benchmark=False).steps
    for t in (60, 333):
        cut = run_backtest(PlanPolicy(actions[: t + 1]), ds.slice(0, t + 1), cfg,
                           metrics=False, benchmark=False).steps
        pd.testing.assert_series_equal(cut["position"], full["position"].iloc[: len(cut)])
        pd.testing.assert_series_equal(cut["equity"], full["equity"].iloc[: len(cut)])
    assert full["position"].abs().max() * full["close"].iloc[0] < 0.9 * full["equity"].iloc[0]


def _vol_target_exposure(vol: float) -> float:
    """Exposure (notional / equity) of a new discrete3 long when the realised vol is ``vol``."""
    rows = 64
    bars = synthetic_market("regime", 400, seed=1, timeframe="1h")
    ds = build_dataset(bars, SPEC)
    core = EnvCore(ds, EnvConfig.build(BASE, vol_target=0.1, vol_bars_per_year=8760.0,
                                       engine={"leverage": 4.0}))
    core.vol[:] = vol  # the vol the kernel reads, set directly
    core.reset_env(0, rows, len(ds) - 1, 0.0)
    core.actions[0, 0] = 2.0
    core.decide()
    st = core.engine.kernel_arrays()[0][0]
    close = ds.ohlcv[rows, 3]
    return float(core.targets[0] * close / st[K.EQUITY])


def test_vol_targeting_halves_exposure_when_vol_doubles():
    low = _vol_target_exposure(0.01)
    mid = _vol_target_exposure(0.2)
    high = _vol_target_exposure(0.4)
    assert low == pytest.approx(4.0)  # capped at max_exposure x leverage
    assert mid == pytest.approx(0.5)  # 0.1 / 0.2
    assert high == pytest.approx(mid / 2)


def test_vol_target_is_refused_for_discrete6():
    with pytest.raises(ConfigError, match="vol_target"):
        EnvConfig.build(action_scheme="discrete6", vol_target=0.1)


# -- 5. cost penalty ------------------------------------------------------------------------


def test_cost_penalty_changes_the_reward_by_lambda_times_cost(ds):
    plain = TradingEnv(ds, BASE)
    penal = TradingEnv(ds, BASE, cost_penalty=3.0)
    _, before = plain.reset(seed=0)
    penal.reset(seed=0)
    seen = 0
    for a in [2, 2, 0, 1, 0, 2]:
        _, r0, *_, i0 = plain.step(a)
        _, r1, *_, i1 = penal.step(a)
        cost = i0["costs"] - before["costs"]
        assert i0["equity"] == i1["equity"]
        assert r1 == pytest.approx(r0 - 3.0 * cost / before["equity"], rel=1e-12, abs=1e-15)
        seen += cost > 0
        before = i0
    assert seen >= 3


# -- defaults: nothing changes; the accounting identity with any switch ---------------------


def test_switches_default_off():
    cfg = EnvConfig()
    assert (cfg.decision_interval, cfg.min_hold, cfg.hysteresis, cfg.vol_target,
            cfg.cost_penalty) == (1, 0, 0.0, None, 0.0)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(1, 5), hold=st.integers(0, 6), band=st.sampled_from([0.0, 0.1, 0.5]),
       vt=st.sampled_from([None, 0.05, 0.3]), lam=st.sampled_from([0.0, 1.0]),
       scheme=st.sampled_from(["discrete3", "exposure_sl"]), seed=st.integers(0, 2**16))
def test_accounting_identity_holds_with_any_switches(ds, k, hold, band, vt, lam, scheme, seed):
    rng = np.random.default_rng(seed)
    n = len(ds)
    actions = rng.integers(0, 3, n) if scheme == "discrete3" else rng.uniform(-1, 1, (n, 2))
    cfg = EnvConfig.build(BASE, action_scheme=scheme, decision_interval=k, min_hold=hold,
                          hysteresis=band, vol_target=vt, vol_bars_per_year=8760.0,
                          cost_penalty=lam)
    result = run_backtest(PlanPolicy(actions), ds, cfg, metrics=False, benchmark=False,
                          force_close=True)
    steps = result.steps
    initial = result.summary["initial_equity"]
    # equity = cash + position value at the close; costs are inside cash
    np.testing.assert_allclose(steps["equity"], steps["cash"] + steps["position"] * steps["close"],
                               rtol=1e-9, atol=1e-6)
    # the PnL of the pass = closed trades' net PnL (everything closed at the end)
    net = result.trades["net_pnl"].sum()
    assert math.isclose(result.summary["final_equity"] - initial, net, rel_tol=1e-9,
                        abs_tol=1e-6)
    gross = result.trades["gross_pnl"].sum()
    costs = result.summary["costs"]["total"]
    assert math.isclose(gross - costs, net, rel_tol=1e-9, abs_tol=1e-6)


def test_a_risk_manager_exit_acts_between_decisions(ds):
    """decision_interval: no order of the agent's between decisions, but the risk manager's
    flatten still acts on those bars (run_backtest's Python loop, EnvCore.decide)."""
    longs = np.full(len(ds), 2)
    cfg = EnvConfig.build(BASE, decision_interval=50,
                          risk={"drawdown": {"max_drawdown": 0.005}})
    steps = run_backtest(PlanPolicy(longs), ds, cfg, metrics=False, benchmark=False).steps
    pos = steps["position"].to_numpy()
    exits = np.flatnonzero((pos[1:] == 0.0) & (pos[:-1] != 0.0))  # decided at row j
    assert len(exits) >= 1
    assert any(j % 50 != 0 for j in exits)
    assert (steps["risk_reason"].astype(str).iloc[exits] != "").all()


@pytest.mark.filterwarnings("ignore:DatetimeIndex.dayofweek:Warning")
def test_the_backtesting_py_bridge_decides_every_kth_bar():
    from rltrade.data import load_bars
    from rltrade.envs.backtesting_py import run_in_backtesting
    from rltrade.sim import EngineConfig

    eur = build_dataset(load_bars("sample:EURUSD-1h")).slice(0, 700)
    j = eur.feature_names.index("macd_hist")
    calls = []

    def policy(obs):
        calls.append(1)
        x = float(obs["market"][-1, j])
        return 2 if x > 2e-4 else 0 if x < -2e-4 else 1

    class Predict:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.asarray(policy(obs)), state

    cfg = EnvConfig(action_scheme="discrete3", max_exposure=0.5, window=32, mode="eval",
                    decision_interval=5, min_hold=3,
                    engine=EngineConfig.ideal(0.0002, initial_cash=1e7, lot_size=1))
    stats, _ = run_in_backtesting(policy, eur, cfg)
    n_bridge = len(calls)
    calls.clear()
    ours = run_backtest(Predict(), eur, cfg, metrics=False, benchmark=False)
    assert n_bridge == len(calls) == -(-(len(eur) - cfg.window) // 5)
    decisions = stats["_strategy"].decisions
    assert sum(d.action is not None for d in decisions) == n_bridge
    final = ours.summary["final_equity"]
    assert abs(stats["Equity Final [$]"] - final) / final < 1e-9
    assert ours.summary["n_trades"] > 5


def test_baselines_run_without_the_agents_switches(ds):
    from rltrade.agents import make_baseline

    on = EnvConfig.build(BASE, decision_interval=3, min_hold=5, hysteresis=0.2, vol_target=0.05,
                         cost_penalty=1.0)
    for name in ("buy_and_hold", "random"):
        policy = make_baseline(name, seed=0) if name == "random" else make_baseline(name)
        a = run_backtest(policy, ds, on, metrics=False)
        b = run_backtest(policy, ds, BASE, metrics=False)
        pd.testing.assert_frame_equal(a.steps, b.steps)
    agent = run_backtest(PlanPolicy(np.full(len(ds), 2)), ds, on, metrics=False)
    # the benchmark column is plain buy-and-hold; the vol-targeted agent holds less
    np.testing.assert_array_equal(agent.steps["benchmark_equity"], b.steps["benchmark_equity"])
    assert agent.summary["final_equity"] != b.steps["benchmark_equity"].iloc[-1]
