"""Baselines as planned policies: names, plans, no lookahead, the oracle's optimality, the rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rltrade.agents import BASELINES, baseline_names, make_baseline
from rltrade.agents.baselines import (
    RuleBaseline,
    baseline_config,
    oracle_sides,
    plan_log_growth,
    sides_to_actions,
    strategy_views,
)
from rltrade.data.synthetic import synthetic_market
from rltrade.envs import EnvConfig
from rltrade.errors import ConfigError
from rltrade.evaluation import run_backtest
from rltrade.features import FeatureSpec, build_dataset

SPEC = FeatureSpec.from_dict({
    "features": {"rsi": {"period": 14}, "returns": {"periods": [1, 5]}},
    "strategies": ["supertrend", "ott", "awesome_macd"],
})
# the agent's config every baseline runs under (with action_scheme="discrete3")
CFG = {"window": 8, "equity_floor": 0.0, "action_scheme": "exposure_sl"}


@pytest.fixture(scope="module")
def ds():
    return build_dataset(synthetic_market("planted", 2500, seed=3, timeframe="1h"), SPEC)


@pytest.fixture(scope="module")
def finals(ds):
    """Final equity of every baseline (engine, same config)."""
    return {name: run_backtest(make_baseline(name, ds), ds, CFG, benchmark=False,
                               metrics=False).summary["final_equity"]
            for name in baseline_names(ds)}


# -- names ----------------------------------------------------------------------------------


def test_names_resolve(ds):
    names = baseline_names(ds)
    assert names[:3] == ["buy_and_hold", "flat", "random"]
    assert names[-2:] == ["oracle", "rule"]
    assert {n for n in names if n.startswith("signal:")} == {
        "signal:supertrend", "signal:ott", "signal:awesome_macd"}
    assert set(BASELINES) == {"buy_and_hold", "flat", "random", "signal", "oracle", "rule"}
    for name in names:
        baseline = make_baseline(name, ds)
        assert baseline.name == name
        plan = baseline.plan(ds, CFG)
        assert plan.shape == (len(ds),) and set(np.unique(plan)) <= {0, 1, 2}
    assert make_baseline("signal", ds, strategy="ott").name == "signal:ott"
    assert make_baseline("random", seed=3, hold=5).hold == 5


def test_name_errors(ds):
    with pytest.raises(ConfigError, match="unknown baseline"):
        make_baseline("nope")
    with pytest.raises(ConfigError, match="no strategy 'bbands_rsi'"):
        make_baseline("signal:bbands_rsi", ds)
    with pytest.raises(ConfigError, match="needs a strategy"):
        make_baseline("signal")
    with pytest.raises(ConfigError, match="takes no ':'"):
        make_baseline("flat:x")
    with pytest.raises(ConfigError, match="rule"):
        make_baseline("rule", max_hold=0)
    with pytest.raises(ConfigError, match="baseline 'random'"):
        make_baseline("random", colour=1)
    with pytest.raises(ValueError, match="sides"):
        sides_to_actions(np.array([0, 2]))


def test_baselines_run_under_the_agents_config_with_discrete3(ds):
    cfg = baseline_config(CFG)
    assert cfg.action_scheme == "discrete3" and cfg.window == 8
    result = run_backtest(make_baseline("buy_and_hold"), ds, CFG, benchmark=False, metrics=False)
    assert result.summary["config"]["action_scheme"] == "discrete3"
    assert result.summary["start_bar"] == 7  # the agent's first decision bar


# -- the simple ones --------------------------------------------------------------------------


def test_flat_and_random(ds):
    flat = run_backtest(make_baseline("flat"), ds, CFG, benchmark=False, metrics=False)
    assert (flat.steps["equity"] == flat.summary["initial_equity"]).all() and flat.trades.empty
    a = make_baseline("random", seed=1).plan(ds, CFG)
    assert np.array_equal(a, make_baseline("random", seed=1).plan(ds, CFG))
    assert not np.array_equal(a, make_baseline("random", seed=2).plan(ds, CFG))
    held = make_baseline("random", seed=1, hold=10).plan(ds, CFG)
    blocks = held[: len(held) // 10 * 10].reshape(-1, 10)
    assert (blocks == blocks[:, :1]).all()
    long_only = EnvConfig.build(CFG, engine={"allow_short": False})
    assert set(np.unique(make_baseline("random").plan(ds, long_only))) == {1, 2}


def test_buy_and_hold_follows_the_price_with_costs(ds):
    result = run_backtest(make_baseline("buy_and_hold"), ds, CFG, benchmark=False, metrics=False)
    steps = result.steps
    start = steps["bar"].iloc[0]
    entry = ds.ohlcv[start + 1, 0]  # filled at the next open
    price_path = result.summary["initial_equity"] * steps["close"].iloc[1:] / entry
    ratio = steps["equity"].iloc[1:] / price_path
    # one entry's costs (taker fee 5 bp + half spread 0.5 bp + slippage 1 bp) plus the small
    # re-targeting trades of discrete3
    assert abs(ratio.iloc[0] - 1) < 1e-3
    assert (ratio - 1).abs().max() < 5e-3
    assert (steps["position"].iloc[1:] > 0).all()


def test_signal_baseline_follows_its_strategy(ds):
    j = ds.strategy_names.index("supertrend")
    codes = np.argmax(ds.signals[:, 4 * j: 4 * j + 4], axis=1)
    expected = np.zeros(len(ds), dtype=int)
    side = 0
    for t, code in enumerate(codes):
        side = {0: 0, 1: 1, 2: -1}.get(int(code), side)  # FLAT, LONG, SHORT; HOLD keeps
        expected[t] = side
    assert np.array_equal(make_baseline("signal:supertrend").plan(ds, CFG), expected + 1)
    assert np.array_equal(strategy_views(ds)[:, j], expected)


@pytest.mark.parametrize("name", ["buy_and_hold", "random", "signal:ott", "rule"])
def test_causal_baselines_do_not_look_ahead(ds, name):
    full = make_baseline(name, ds).plan(ds, CFG)
    for cut in (300, 1234):
        assert np.array_equal(make_baseline(name, ds).plan(ds.slice(0, cut), CFG), full[:cut])


# -- the rule -------------------------------------------------------------------------------


def _trades_of(sides):
    """(entry decision bar, exit decision bar, side) of each run of a non-zero side."""
    out = []
    t, n = 0, len(sides)
    while t < n:
        if sides[t] != 0:
            start, side = t, sides[t]
            while t < n and sides[t] == side:
                t += 1
            out.append((start, t, side))  # flat (or another side) decided at t
        else:
            t += 1
    return out


def test_rule_exits_after_n_bars_or_at_thresholds(ds):
    rule = RuleBaseline(threshold=0.3, max_hold=12, take_profit=0.01, stop_loss=0.005)
    cfg = baseline_config(CFG)
    sides = rule.sides(ds, cfg)
    opens, closes = ds.ohlcv[:, 0], ds.ohlcv[:, 3]
    trades = _trades_of(sides)
    assert len(trades) > 20
    reasons = set()
    for start, end, side in trades[:-1]:
        assert end - start <= 12  # held at most max_hold bars after the fill at start + 1
        ret = side * (closes[end] / opens[start + 1] - 1)
        if end - start == 12:
            reasons.add("time")
        elif ret >= 0.01:
            reasons.add("take_profit")
        else:
            assert ret <= -0.005, (start, end, ret)
            reasons.add("stop_loss")
    assert reasons == {"time", "take_profit", "stop_loss"}
    # entries: confident consensus and the confirming feature (ret_5) agree
    direction, conf = rule.direction(ds)
    assert rule.confirm_feature(ds) == "ret_5"
    for start, _, side in trades:
        assert direction[start] == side and conf[start] > 0.3
        assert side * ds.feature("ret_5")[start] > 0


def test_rule_trades_last_max_hold_bars_in_the_engine(ds):
    """Without profit/loss exits every trade lasts exactly max_hold bars (a dead zone keeps the
    engine from re-targeting the size each bar: a trade is one record)."""
    rule = RuleBaseline(threshold=0.3, max_hold=7, take_profit=0, stop_loss=0)
    cfg = EnvConfig.build(CFG, engine={"dead_zone": 0.2})
    result = run_backtest(rule, ds, cfg, benchmark=False, metrics=False)
    trades = result.trades
    assert len(trades) > 10
    assert (trades["duration_bars"] == 7).all()
    assert (trades["exit_reason"] == "order").all()


def test_rule_uses_the_forecast_when_present(ds):
    rule = RuleBaseline(source="forecast")
    with pytest.raises(ConfigError, match="forecast_signal"):
        rule.sides(ds, baseline_config(CFG))
    with pytest.raises(ConfigError, match="no confirming feature"):
        RuleBaseline(confirm="nope").sides(ds, baseline_config(CFG))


# -- the oracle -----------------------------------------------------------------------------


def test_oracle_beats_every_baseline(finals):
    others = {name: value for name, value in finals.items() if name != "oracle"}
    assert all(finals["oracle"] > value for value in others.values()), finals


def test_oracle_is_an_upper_bound_of_random_plans_in_the_engine(ds, finals):
    for seed in range(8):
        for hold in (1, 4, 24):
            result = run_backtest(make_baseline("random", seed=seed, hold=hold), ds, CFG,
                                  benchmark=False, metrics=False)
            assert result.summary["final_equity"] < finals["oracle"]


def test_oracle_plan_runs_through_the_engine(ds):
    """The plan is what the runner trades, and the engine's equity is close to the dynamic
    program's own estimate (which leaves out the small re-targeting trades of discrete3)."""
    oracle = make_baseline("oracle")
    result = run_backtest(oracle, ds, CFG, benchmark=False, metrics=False)
    plan = oracle.plan(ds, CFG)
    steps = result.steps
    decided = steps.iloc[:-1]
    assert np.array_equal(decided["action"].to_numpy(int), plan[decided["bar"].to_numpy()])
    assert result.summary["perfect_foresight"] is True
    model = plan_log_growth(oracle_sides(ds, CFG), ds, CFG)
    engine = np.log(result.summary["final_equity"] / result.summary["initial_equity"])
    assert model > 1.0
    assert abs(engine - model) < 0.02 * model


def _tiny(ds, n, **engine):
    cfg = EnvConfig.build(CFG, window=1, engine=engine)
    return ds.slice(100, 100 + n), cfg


@pytest.mark.parametrize("costs", [{}, {"costs": {"taker_fee": 0.01}},
                                   {"allow_short": False}, {"fill": "close"},
                                   {"decision_lag": 1}])
def test_oracle_is_the_best_plan_by_brute_force(ds, costs):
    small, cfg = _tiny(ds, 7, **costs)
    best = plan_log_growth(oracle_sides(small, cfg), small, cfg)
    values = [plan_log_growth(np.array(p), small, cfg)
              for p in itertools.product((-1, 0, 1), repeat=len(small))]
    assert best == pytest.approx(max(values), abs=1e-12)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), fee=st.floats(0, 0.005), spread=st.floats(0, 20),
       slippage=st.floats(0, 20), leverage=st.sampled_from([1.0, 2.0]),
       hold=st.integers(1, 30))
def test_oracle_beats_any_random_plan_under_the_same_costs(ds, seed, fee, spread, slippage,
                                                          leverage, hold):
    small = ds.slice(0, 300)
    cfg = EnvConfig.build(CFG, engine={"leverage": leverage, "costs": {
        "taker_fee": fee, "spread_bps": spread, "slippage_bps": slippage}})
    rng = np.random.default_rng(seed)
    plan = np.repeat(rng.integers(-1, 2, size=300 // hold + 1), hold)[:300]
    assert plan_log_growth(oracle_sides(small, cfg), small, cfg) >= (
        plan_log_growth(plan, small, cfg) - 1e-9)


# -- the rule's parameters from the config ---------------------------------------------------


def test_rule_defaults_are_the_source_documents():
    """0.6 confidence, 20 bars, +1 % / -0.5 %: the baseline's own defaults and the config's."""
    from rltrade.config import RunConfig

    rule = RuleBaseline()
    assert (rule.threshold, rule.max_hold, rule.take_profit, rule.stop_loss) == (
        0.6, 20, 0.01, 0.005)
    params = RunConfig().baselines.params()["rule"]
    assert (params["threshold"], params["max_hold"], params["take_profit"],
            params["stop_loss"]) == (0.6, 20, 0.01, 0.005)


def test_rule_takes_its_parameters_from_the_config(ds):
    """``baselines.rule`` in a run config reaches the rule row of the baseline comparison."""
    from rltrade.config import RunConfig
    from rltrade.evaluation.judge import compare_baselines

    cfg = RunConfig.from_yaml("baselines:\n  rule: {confidence: 0.3, horizon: 7, "
                              "take_profit: 0, stop_loss: 0}\n")
    assert cfg.baselines.rule.horizon == 7
    env = EnvConfig.build(CFG, engine={"dead_zone": 0.2})
    table, _ = compare_baselines(ds, env, None, ["rule"], params=cfg.baselines.params())
    direct = run_backtest(RuleBaseline(threshold=0.3, max_hold=7, take_profit=0, stop_loss=0),
                          ds, env, benchmark=False, metrics=False)
    default, _ = compare_baselines(ds, env, None, ["rule"])
    row = table.iloc[0]
    assert row["final_equity"] == pytest.approx(direct.summary["final_equity"])
    assert row["trades"] == len(direct.trades)
    assert default.iloc[0]["final_equity"] != pytest.approx(row["final_equity"])
    with pytest.raises(ConfigError, match=r"baselines\.rule\.horizon"):
        RunConfig.from_dict({"baselines": {"rule": {"horizon": 0}}})
