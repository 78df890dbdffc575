"""Abstention (env.min_margin, MarginPolicy) and ensembles of seeds (EnsemblePolicy)."""

from __future__ import annotations

import numpy as np
import pytest

from rltrade.agents import training as T
from rltrade.agents.ensemble import EnsemblePolicy, ensemble_from_runs
from rltrade.agents.policy import MarginPolicy, NumpyMlpPolicy, action_probabilities
from rltrade.data.synthetic import synthetic_market
from rltrade.envs import EnvConfig, TradingEnv
from rltrade.errors import CompatibilityError, ConfigError
from rltrade.evaluation import run_backtest
from rltrade.features import FeatureSpec, build_dataset

SPEC = FeatureSpec.from_dict({
    "features": {"rsi": {"period": 14}, "returns": {"periods": [1, 5]}},
    "strategies": ["supertrend"],
})
CFG = {"window": 8, "equity_floor": 0.0}


@pytest.fixture(scope="module")
def ds():
    return build_dataset(synthetic_market("regime", 600, seed=4, timeframe="1h"), SPEC)


class Wobbly:
    """A discrete3 policy whose preference flips every bar by a small probability margin
    (0.1), with a clear call (margin 0.8) every 25th call."""

    name = "wobbly"

    def __init__(self):
        self.i = 0

    def action_probabilities(self, obs):
        i = self.i
        self.i += 1
        if i % 25 == 0:
            return np.array([0.1, 0.0, 0.9]) if i % 50 == 0 else np.array([0.9, 0.0, 0.1])
        return np.array([0.45, 0.0, 0.55]) if i % 2 else np.array([0.55, 0.0, 0.45])

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return np.asarray(int(np.argmax(self.action_probabilities(obs)))), state


def test_margin_keeps_the_position_unless_the_preference_is_clear():
    class Fixed:
        def __init__(self, p):
            self.p = np.asarray(p)

        def action_probabilities(self, obs):
            return self.p

    flat = {"market": np.zeros((2, 2)), "account": np.zeros(9, np.float32)}
    long = {"market": np.zeros((2, 2)), "account": np.array([0.5] + [0] * 8, np.float32)}
    assert MarginPolicy(Fixed([0.3, 0.3, 0.4]), 0.2, "discrete3").predict(flat)[0] == 1
    assert MarginPolicy(Fixed([0.3, 0.3, 0.4]), 0.05, "discrete3").predict(flat)[0] == 2
    assert MarginPolicy(Fixed([0.45, 0.1, 0.45]), 0.05, "discrete3").predict(long)[0] == 2
    assert MarginPolicy(Fixed([0.6, 0.1, 0.3]), 0.2, "discrete3").predict(long)[0] == 0
    flat_layout = np.zeros(20, np.float32)
    flat_layout[-9] = -0.3  # short: the account block ends the flat observation
    assert MarginPolicy(Fixed([0.3, 0.3, 0.4]), 0.5, "discrete3").predict(flat_layout)[0] == 0


def test_min_margin_in_run_backtest_trades_only_clear_calls(ds):
    free = run_backtest(Wobbly(), ds, CFG, metrics=False, benchmark=False)
    gated = run_backtest(Wobbly(), ds, EnvConfig.build(CFG, min_margin=0.5), metrics=False,
                         benchmark=False)
    n_free = int((free.steps["position_change"] != 0).sum())
    n_gated = int((gated.steps["position_change"] != 0).sum())
    assert n_free > 400
    assert 0 < n_gated <= len(ds) // 25 + 2
    assert gated.summary["name"] == "wobbly"
    with pytest.raises(ConfigError, match="min_margin"):
        EnvConfig.build(CFG, action_scheme="exposure_sl", min_margin=0.1)


def test_action_probabilities_of_sb3_and_its_numpy_copy(ds):
    from stable_baselines3 import PPO

    env = TradingEnv(ds, CFG)
    model = PPO("MultiInputPolicy", env, seed=0, device="cpu")
    obs, _ = env.reset(seed=0)
    p_torch = action_probabilities(model, obs)
    p_numpy = action_probabilities(NumpyMlpPolicy.from_sb3(model), obs)
    assert p_torch.shape == (3,) and p_torch.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(p_numpy, p_torch, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="no action probabilities"):
        action_probabilities(object(), obs)


class Const:
    def __init__(self, action):
        self.action = np.asarray(action)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.action, state


def test_ensemble_votes_and_averages():
    obs_flat = {"market": np.zeros((2, 2)), "account": np.zeros(9, np.float32)}
    obs_long = {"market": np.zeros((2, 2)), "account": np.array([1.0] + [0] * 8, np.float32)}
    vote = EnsemblePolicy([Const(2), Const(2), Const(0)], "discrete3")
    assert vote.predict(obs_flat)[0] == 2
    np.testing.assert_allclose(vote.action_probabilities(obs_flat), [1 / 3, 0, 2 / 3])
    tie = EnsemblePolicy([Const(2), Const(0)], "discrete3")
    assert tie.predict(obs_flat)[0] == 1  # a tie keeps the position (flat)
    assert tie.predict(obs_long)[0] == 2
    box = EnsemblePolicy([Const([1.0, 0.0]), Const([1.0, 1.0]), Const([-1.0, 1.0])],
                         "exposure_sl")
    np.testing.assert_allclose(box.predict(obs_flat)[0], [1 / 3, 2 / 3])  # sized by agreement
    # abstention on the vote: 2 of 3 long is a 2/3 - 0 margin over flat
    assert MarginPolicy(vote, 0.7, "discrete3").predict(obs_flat)[0] == 1
    assert MarginPolicy(vote, 0.6, "discrete3").predict(obs_flat)[0] == 2


def test_ensemble_from_runs_backtests(tmp_path, small_config):
    a = T.train(small_config(training={"total_steps": 128, "eval_freq": 0}), "s0",
                runs_root=tmp_path)
    b = T.train(small_config(training={"total_steps": 128, "eval_freq": 0, "seed": 1}), "s1",
                runs_root=tmp_path)
    policy, norm = ensemble_from_runs([a.run.path, b.run.path], which="final")
    cfg = a.run.config.env
    result = run_backtest(policy, a.data.eval, cfg, normalizer=norm, metrics=False)
    assert result.summary["name"] == "ensemble of 2"
    single = run_backtest(*ensemble_from_runs([a.run.path, a.run.path], which="final")[:1],
                          a.data.eval, cfg, normalizer=norm, metrics=False)
    alone = run_backtest(a.model, a.data.eval, cfg, normalizer=norm, metrics=False)
    np.testing.assert_array_equal(single.steps["position"], alone.steps["position"])
    other = T.train(small_config(data={"source": "synthetic:planted?n_bars=1500&seed=9"},
                                 training={"total_steps": 128, "eval_freq": 0}), "other",
                    runs_root=tmp_path)
    with pytest.raises(CompatibilityError, match="normali"):
        ensemble_from_runs([a.run.path, other.run.path])
