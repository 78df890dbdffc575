"""Training's switches against costs: cost_scale, cost_curriculum (training envs only, the
evaluation keeps the real costs) and validation-based early stopping."""

from __future__ import annotations

import numpy as np
import pytest

from rltrade.agents import training as T
from rltrade.config import CostCurriculum
from rltrade.errors import ConfigError
from rltrade.evaluation import run_backtest
from rltrade.sim import kernels as K


def test_cost_curriculum_ramps_linearly():
    ramp = CostCurriculum(start=0.2, share=0.5)
    assert ramp.factor(0, 1000) == pytest.approx(0.2)
    assert ramp.factor(250, 1000) == pytest.approx(0.6)
    assert ramp.factor(500, 1000) == 1.0
    assert ramp.factor(900, 1000) == 1.0


def test_cost_scale_scales_the_training_envs_costs_only(small_config):
    real = small_config(env={"engine": {"costs": {"taker_fee": 0.001, "spread_bps": 2.0}}})
    cfg = real.with_overrides(training={"cost_scale": 0.25})
    data = T.prepare_data(cfg)
    for vec in ("native", "dummy"):
        env = T.make_train_env(cfg.with_overrides(training={"vec_env": vec}), data)
        core = env.core if vec == "native" else env.envs[0].core
        _, _, _, _, mkt, cfgv = core.engine.kernel_arrays()
        assert cfgv[K.C_TAKER] == pytest.approx(0.00025)
        np.testing.assert_allclose(mkt[:, K.M_HALF_SPREAD], 0.25 * 1e-4)
        core.set_cost_scale(1.0)  # back to the real costs, exactly
        assert cfgv[K.C_TAKER] == 0.001
        np.testing.assert_array_equal(mkt[:, K.M_HALF_SPREAD], 1e-4)
    plain = T.make_train_env(real, data)
    assert plain.core.engine.kernel_arrays()[5][K.C_TAKER] == 0.001


def test_training_at_scaled_costs_evaluates_at_the_real_costs(tmp_path, small_config):
    cfg = small_config(env={"engine": {"costs": {"taker_fee": 0.001}}},
                       training={"cost_scale": 0.0, "total_steps": 256})
    result = T.train(cfg, "scaled", runs_root=tmp_path)
    again = run_backtest(result.model, result.data.eval, cfg.env,
                         normalizer=result.data.normalizer, name="evaluation")
    assert result.final_eval["total_return"] == again.summary["total_return"]
    if again.summary["n_fills"]:
        assert again.summary["costs"]["fees"] > 0.0


def test_the_cost_curriculum_updates_the_envs_during_training(tmp_path, small_config,
                                                               monkeypatch):
    seen: list[float] = []
    original = T.set_train_cost_scale

    def record(env, scale):
        seen.append(scale)
        original(env, scale)

    monkeypatch.setattr(T, "set_train_cost_scale", record)
    cfg = small_config(training={"total_steps": 1024, "eval_freq": 0,
                                 "cost_curriculum": {"start": 0.0, "share": 0.5}})
    result = T.train(cfg, "ramp", runs_root=tmp_path)
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert seen == sorted(seen) and len(set(seen)) >= 3
    assert result.model.get_env().core.cost_scale == 1.0


def test_cost_switches_are_refused_for_a3c(small_config):
    with pytest.raises(ConfigError, match="cost_scale"):
        small_config(replace={"agent": {"algorithm": "a3c"}}, training={"cost_scale": 0.5})


def test_early_stopping_on_the_validation_return(tmp_path, small_config):
    cfg = small_config(training={"total_steps": 6144, "eval_freq": 128,
                                 "early_stop_patience": 2})
    result = T.train(cfg, "early", runs_root=tmp_path)
    manifest = result.run.manifest
    stop = manifest["early_stop"]
    assert stop is not None and result.steps < 6144
    returns = [e["total_return"] for e in result.evaluations]
    best = returns.index(max(returns[:-1]))  # the last one is the final evaluation
    assert stop["evaluations_without_improvement"] == 2
    assert stop["best_step"] == result.evaluations[best]["step"]
    assert result.best_eval["step"] == stop["best_step"]


def test_linear_schedules_of_learning_rate_and_entropy(tmp_path, small_config):
    cfg = small_config(agent={"hyperparams": {
        "learning_rate": {"schedule": "linear", "start": 1e-3, "end": 1e-4},
        "ent_coef": {"schedule": "linear", "start": 0.05, "end": 0.0}}},
        training={"total_steps": 512, "eval_freq": 0})
    result = T.train(cfg, "sched", runs_root=tmp_path)
    model = result.model
    assert model.lr_schedule(1.0) == pytest.approx(1e-3)
    # SB3 sets the rate of an update from the progress after its rollout: the last one's is 0
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    # the last rollout started at step 384 of 512: ent_coef = 0.05 * (1 - 384 / 512)
    assert model.ent_coef == pytest.approx(0.05 * 128 / 512)
    again = T.train(cfg, "sched2", runs_root=tmp_path)
    assert again.final_eval == result.final_eval  # deterministic, and saved / loaded
    with pytest.raises(ConfigError, match=r"agent\.hyperparams\.learning_rate"):
        T.train(small_config(agent={"hyperparams": {"learning_rate": {"schedule": "cosine",
                                                                      "start": 1, "end": 0}}}),
                "bad", runs_root=tmp_path)
    with pytest.raises(ConfigError, match=r"agent\.hyperparams\.gamma"):
        T.train(small_config(agent={"hyperparams": {"gamma": {"schedule": "linear",
                                                              "start": 1, "end": 0}}}),
                "bad2", runs_root=tmp_path)


def test_no_early_stop_is_reported_for_a_run_that_ran_to_its_end(tmp_path, small_config):
    """The final evaluation does not count towards the patience: a run that made all its
    steps records no early stop."""
    cfg = small_config(training={"total_steps": 768, "eval_freq": 128,
                                 "early_stop_patience": 3})
    result = T.train(cfg, "full", runs_root=tmp_path)
    returns = [e["total_return"] for e in result.evaluations]
    periodic = returns[:-1]
    since = len(periodic) - 1 - periodic.index(max(periodic))
    assert since == 2 and result.steps == 768
    assert returns[-1] < max(periodic)  # the final one would have been the third
    assert result.run.manifest["early_stop"] is None
