"""A3C: training runs (1 worker bit-identical, 2 workers), safe weights, resume, worker guards,
risk gating and the shared optimizer."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from rltrade.agents import training
from rltrade.agents.a3c import (
    A3C,
    A3CWorkerError,
    SharedAdam,
    action_targets,
    gate_logits,
    risk_gate,
    risk_state,
    trading_env_factory,
)
from rltrade.agents.algorithms import (
    algorithm_class,
    check_hyperparams,
    load_model,
    make_agent,
    read_weights,
)
from rltrade.agents.training import make_train_env, planned_steps, prepare_data, resume, train
from rltrade.config import RunConfig
from rltrade.envs import TradingEnv
from rltrade.envs.schemes import ACTION_SCHEMES
from rltrade.errors import ConfigError
from rltrade.runs import Run

A3C_AGENT = {"algorithm": "a3c",
             "hyperparams": {"n_steps": 16, "n_workers": 1, "learning_rate": 1e-3},
             "policy": {"net_arch": [16]}}
A3C_TRAINING = {"total_steps": 300, "n_envs": 1, "eval_freq": 160, "checkpoint_freq": 96,
                "torch_threads": 1}


@pytest.fixture(scope="session")
def small(small_config):
    """The shared small run (tests/conftest.py) with A3C as its agent."""
    def make(**sections) -> RunConfig:
        return small_config(replace={"agent": A3C_AGENT, "training": A3C_TRAINING}, **sections)

    return make


def _weights(run: Run, folder: str = "model") -> dict:
    return read_weights(run.path / folder)


def _same_tensors(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# -- one worker: a whole run, deterministic ----------------------------------------------------
@pytest.fixture(scope="module")
def one_worker(tmp_path_factory, small):
    return train(small(), "a3c_one", runs_root=tmp_path_factory.mktemp("runs"))


def test_registry_and_planned_steps(small):
    assert algorithm_class("a3c") is A3C
    assert planned_steps(small()) == 304  # rollouts of 16 steps x 1 worker
    two = small(agent={"hyperparams": {"n_workers": 2}})
    assert planned_steps(two) == 320  # 16 x 2
    with pytest.raises(Exception, match="n_stepz"):
        check_hyperparams(small(agent={"hyperparams": {"n_stepz": 3}}).agent)


def test_one_worker_run_directory(one_worker, small):
    run = one_worker.run
    assert one_worker.steps == planned_steps(small()) == 304
    assert run.state["status"] == "completed"
    meta = run.metadata
    assert meta["rl"]["algorithm"] == "a3c" and meta["rl"]["policy_class"] == "ActorCritic"
    assert meta["rl"]["planned_steps"] == 304
    assert [c.name for c in run.checkpoints()] == [
        "step_000000000096", "step_000000000192", "step_000000000288"]
    assert [e["step"] for e in one_worker.evaluations] == [160, 304]
    manifest = run.manifest
    assert manifest["steps"] == 304 and manifest["approx_training_flops"] > 0
    # the shared optimizer made one step per rollout
    opt = _weights(run)["policy.optimizer"]
    assert {float(s["step"]) for s in opt["state"].values()} == {304 / 16}


def test_one_worker_is_bit_identical(one_worker, tmp_path, small):
    again = train(small(), "a3c_again", runs_root=tmp_path)
    w1, w2 = _weights(one_worker.run), _weights(again.run)
    assert _same_tensors(w1["policy"], w2["policy"])
    assert _same_tensors(w1["policy.optimizer"], w2["policy.optimizer"])
    assert again.evaluations == one_worker.evaluations
    other = train(small(training={"seed": 1}), "a3c_seed1", runs_root=tmp_path)
    assert not _same_tensors(w1["policy"], _weights(other.run)["policy"])


def test_safe_weights_load_and_predict_the_same(one_worker):
    run = one_worker.run
    loaded = load_model(run.path / "model", run.config, run.metadata["env_spec"]["n_market"])
    assert isinstance(loaded, A3C)
    assert _same_tensors(loaded.policy.state_dict(), one_worker.model.policy.state_dict())
    rng = np.random.default_rng(0)
    space = one_worker.model.observation_space
    batch = {k: rng.standard_normal((20, *v.shape)).astype(np.float32)
             for k, v in space.spaces.items()}
    a_batch, state = loaded.predict(batch, deterministic=True)
    assert state is None and a_batch.shape == (20,)
    assert np.array_equal(a_batch, one_worker.model.predict(batch, deterministic=True)[0])
    for i in range(20):
        single = {k: v[i] for k, v in batch.items()}
        a1, _ = one_worker.model.predict(single, deterministic=True)
        a2, _ = loaded.predict(single, deterministic=True)
        assert a1.shape == () and a1 == a2 == a_batch[i]


def test_resume_after_a_crash(tmp_path, monkeypatch, small):
    cfg = small(training={"total_steps": 400, "eval_freq": 0, "checkpoint_freq": 128})
    original = training._Trainer.checkpoint

    def crash_after_first(self, model):
        original(self, model)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(training._Trainer, "checkpoint", crash_after_first)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, "crash", runs_root=tmp_path)
    monkeypatch.setattr(training._Trainer, "checkpoint", original)
    run = Run.open(tmp_path / "crash")
    assert run.state["status"] == "failed" and run.state["steps_done"] == 128
    res = resume(tmp_path / "crash")
    assert res.steps == planned_steps(cfg) == 400
    assert run.state["status"] == "completed" and run.manifest["resumed"] is True
    opt = _weights(run)["policy.optimizer"]  # the optimizer state went on from the checkpoint
    assert {float(s["step"]) for s in opt["state"].values()} == {400 / 16}


def test_callback_returning_false_stops(tmp_path, small):
    cfg = small()
    data = prepare_data(cfg)
    model = make_agent(cfg, make_train_env(cfg, data))

    class StopAt(BaseCallback):
        def _on_step(self) -> bool:
            return self.num_timesteps < 48

    model.learn(1000, callback=StopAt())
    assert model.num_timesteps == 48


# -- several workers ----------------------------------------------------------------------------
def test_two_workers_train_to_the_planned_steps(tmp_path, small):
    cfg = small(agent={"hyperparams": {"n_workers": 2}},
                training={"total_steps": 320, "eval_freq": 0, "checkpoint_freq": 128})
    res = train(cfg, "two", runs_root=tmp_path)
    assert res.steps == planned_steps(cfg) == 320
    run = res.run
    assert run.state["status"] == "completed"
    assert run.checkpoints()  # checkpoints were taken while the workers ran
    opt = _weights(run)["policy.optimizer"]
    assert {float(s["step"]) for s in opt["state"].values()} == {320 / 16}
    assert all(p.is_shared() for p in res.model.policy.parameters())
    assert res.model.optimizer.is_shared()


class _BadAt(gym.Wrapper):
    """Returns a NaN reward (or a wrong-shape observation) at step ``k``."""

    def __init__(self, env: gym.Env, k: int, what: str) -> None:
        super().__init__(env)
        self.k, self.what, self.n = k, what, 0

    def step(self, action):
        obs, reward, term, trunc, info = self.env.step(action)
        self.n += 1
        if self.n == self.k:
            if self.what == "nan":
                reward = float("nan")
            else:
                obs = {**obs, "market": obs["market"][:-1]}
        return obs, reward, term, trunc, info


def bad_factory(dataset, config, normalizer, bad_worker, k, what, worker_id, seed,
                mode="train", engine_mode=None):
    env = trading_env_factory(dataset, config, normalizer, worker_id, seed, mode, engine_mode)
    return _BadAt(env, k, what) if worker_id == bad_worker else env


@pytest.fixture(scope="module")
def prepared(small):
    cfg = small()
    return cfg, prepare_data(cfg)


def _model(prepared, n_workers: int, factory=None) -> A3C:
    cfg, data = prepared
    env = make_train_env(cfg, data)
    return make_agent(cfg, env, n_workers=n_workers, env_factory=factory)


def _bad(prepared, bad_worker, k, what):
    cfg, data = prepared
    env_cfg = cfg.env.model_copy(update={"mode": "train"})
    return functools.partial(bad_factory, data.train, env_cfg, data.normalizer, bad_worker, k,
                             what)


def test_nan_reward_names_the_worker_and_step_in_process(prepared):
    model = _model(prepared, 1, _bad(prepared, 0, 37, "nan"))
    with pytest.raises(A3CWorkerError, match=r"worker 0, step 37: reward is nan") as err:
        model.learn(200)
    assert (err.value.worker_id, err.value.step) == (0, 37)
    model = _model(prepared, 1, _bad(prepared, 0, 5, "shape"))
    with pytest.raises(A3CWorkerError, match=r"worker 0, step 5: .*'market'.* has shape"):
        model.learn(200)


def test_nan_reward_in_a_worker_process_stops_the_run(prepared):
    model = _model(prepared, 2, _bad(prepared, 1, 37, "nan"))
    with pytest.raises(A3CWorkerError, match=r"worker 1, step 37: reward is nan") as err:
        model.learn(2000)
    assert err.value.worker_traceback and "reward is nan" in err.value.worker_traceback
    assert model.num_timesteps < 2000


# -- risk gating -------------------------------------------------------------------------------
def _env(prepared, scheme: str, risk: dict | None) -> TradingEnv:
    cfg, data = prepared
    env_cfg = cfg.env.model_copy(update={"action_scheme": scheme})
    return TradingEnv(data.train, env_cfg, normalizer=data.normalizer, risk=risk)


def test_risk_gate_masks_entries_when_the_spread_is_wide(prepared):
    env = _env(prepared, "discrete3", {"spread": {"max_spread_bps": 0.5}})  # spread is 1 bp
    env.reset(seed=0)
    core, manager = env.core, env.core.risk[0]
    state = risk_state(core)
    assert state.spread_bps == pytest.approx(1.0) and state.position == 0
    targets = action_targets(core)
    assert targets[1] == 0 and targets[0] == -targets[2] < 0
    allowed, reasons = risk_gate(core, manager)
    assert allowed.tolist() == [False, True, False]
    assert reasons == {0: ("spread",), 2: ("spread",)}
    assert manager.counts() == {} and manager.interventions == []  # probes leave no record
    logits = gate_logits(torch.zeros(1, 3), allowed)
    assert torch.isinf(logits[0, [0, 2]]).all() and logits[0, 1] == 0
    # discrete6 from flat: the entries are masked; hold, exit, scale in/out (no-ops) stay
    env6 = _env(prepared, "discrete6", {"spread": {"max_spread_bps": 0.5}})
    env6.reset(seed=0)
    allowed6, reasons6 = risk_gate(env6.core, env6.core.risk[0])
    assert allowed6.tolist() == [True, False, False, True, True, True]
    assert set(reasons6) == {1, 2}


def test_risk_gate_volatility_scaling_and_no_gate(prepared):
    env = _env(prepared, "discrete3", {"volatility": {"max_atr_pct": 1e-6, "mode": "factor",
                                                      "factor": 0.5}})
    env.reset(seed=0)
    allowed, reasons = risk_gate(env.core, env.core.risk[0])
    assert allowed.tolist() == [False, True, False]
    assert reasons[0] == ("volatility",)
    loose = _env(prepared, "discrete3", {"spread": {"max_spread_bps": 50.0}})
    loose.reset(seed=0)
    allowed, reasons = risk_gate(loose.core, loose.core.risk[0])
    assert allowed.all() and reasons == {}


@pytest.mark.parametrize("scheme,risk", [
    ("discrete3", {"spread": {"max_spread_bps": 0.5}}),
    ("discrete3", {"drawdown": {"max_drawdown": 0.005, "action": "cut"},
                   "no_trade": {"times": [["10:00", "14:00"]]}}),
    ("discrete6", {"drawdown": {"max_drawdown": 0.01}, "no_trade": {"weekdays": ["mon"]}}),
    ("discrete6", {"volatility": {"max_atr_pct": 0.002, "mode": "factor", "factor": 0.5}}),
])
def test_risk_gate_predicts_what_the_env_does_to_each_action(prepared, scheme, risk):
    """On every state of a random walk, an action is masked exactly when the env's own risk
    manager changes its target on stepping it (the gate's definition), with the same reasons;
    and probing leaves the manager's records as they were."""
    env = _env(prepared, scheme, risk)
    env.reset(seed=1)
    manager = env.core.risk[0]
    gated = ACTION_SCHEMES[scheme].gated_actions
    rng = np.random.default_rng(0)
    masked = 0
    for _ in range(40):
        interventions, counts = list(manager.interventions), manager.counts()
        allowed, reasons = risk_gate(env.core, manager)
        assert manager.interventions == interventions and manager.counts() == counts
        for a in range(env.action_space.n):
            if a not in gated:
                assert allowed[a]
                continue
            probe = copy.deepcopy(env)
            probe.step(a)
            expected = probe.core.last_reasons[0]
            assert allowed[a] == (not expected) and reasons.get(a, ()) == expected
        masked += len(reasons)
        _, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        if term or trunc:
            env.reset()
    assert masked > 0


def test_risk_probes_leave_the_managers_records_unchanged(prepared):
    env = _env(prepared, "discrete3", {"spread": {"max_spread_bps": 0.5}})
    env.reset(seed=0)
    manager = env.core.risk[0]
    env.step(2)  # a real long entry: the env's manager records its intervention
    assert manager.counts() == {"spread": 1} and len(manager.interventions) == 1
    before = list(manager.interventions)
    allowed, reasons = risk_gate(env.core, manager)
    assert allowed.tolist() == [False, True, False] and set(reasons) == {0, 2}
    assert manager.counts() == {"spread": 1} and manager.interventions == before
    with pytest.raises(ConfigError, match="not discrete"):
        action_targets(_env(prepared, "exposure_sl", None).core)


def test_training_with_a_risk_manager_never_samples_a_masked_action(prepared):
    cfg, data = prepared
    risky = cfg.with_overrides(env={"risk": {"spread": {"max_spread_bps": 0.5}}})
    env = make_train_env(risky, data)
    model = make_agent(risky, env)
    model.learn(96)
    assert model.num_timesteps == 96
    assert model.masked_actions == 2 * 96  # short and long, at every step
    assert model.risk_counts == {"spread": 2 * 96}


# -- the network and the shared optimizer -------------------------------------------------------
def test_shared_adam_state_lives_in_shared_memory():
    net = torch.nn.Linear(3, 2)
    net.share_memory()
    opt = SharedAdam(net.parameters(), lr=1e-2)
    assert opt.is_shared()
    assert all(set(s) == {"step", "exp_avg", "exp_avg_sq"} for s in opt.state.values())
    net(torch.ones(4, 3)).sum().backward()
    opt.step()
    assert opt.is_shared() and all(float(s["step"]) == 1 for s in opt.state.values())
    before = {i: s["exp_avg"].clone() for i, s in enumerate(opt.state.values())}
    other = SharedAdam(net.parameters(), lr=1e-2)
    other.load_state_dict(opt.state_dict())
    assert other.is_shared()
    assert all(torch.equal(s["exp_avg"], before[i]) for i, s in enumerate(other.state.values()))


def test_continuous_actions_flat_layout(tmp_path, small):
    cfg = small(env={"action_scheme": "exposure_sl", "layout": "flat"},
                training={"total_steps": 64, "eval_freq": 0, "checkpoint_freq": 0})
    res = train(cfg, "box", runs_root=tmp_path)
    assert res.steps == 64
    model = res.model
    obs = model.observation_space.sample()
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (2,) and model.action_space.contains(action.astype(np.float32))
    sampled, _ = model.predict(np.stack([obs] * 5))
    assert sampled.shape == (5, 2) and (np.abs(sampled) <= 1).all()
    loaded = load_model(res.run.path / "model", cfg, res.run.metadata["env_spec"]["n_market"])
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], action)


def test_cnn_lstm_attention_encoder(prepared):
    cfg, data = prepared
    enc = cfg.with_overrides(agent={"policy": {"encoder": "cnn_lstm_attention", "encoder_kwargs": {
        "features_dim": 16, "channels": 4, "hidden_size": 8, "heads": 2}}})
    model = make_agent(enc, make_train_env(enc, data))
    assert type(model.policy.features_extractor).__name__ == "CnnLstmAttention"
    model.learn(32)
    assert model.num_timesteps == 32
    obs = model.observation_space.sample()
    assert model.predict(obs, deterministic=True)[0].shape == ()


def test_default_env_factory_chooses_env_and_engine_mode(prepared):
    model = _model(prepared, 1)
    factory = model._factory()
    env = factory(3, 7, mode="eval", engine_mode="ideal")
    assert env.config.mode == "eval" and env.config.engine.mode == "ideal"
    assert env.observation_space == model.observation_space
    env.reset(seed=0)
    assert env.step(1)[1] == env.step(1)[1] == 0.0  # flat, no costs: nothing happens
    train_env = factory(0, 0)
    assert train_env.config.mode == "train" and train_env.config.engine.mode == "retail"


def test_a3c_is_a_package_of_small_modules():
    import rltrade.agents.a3c as package

    sizes = {p.name: len(p.read_text().splitlines())
             for p in Path(package.__file__).parent.glob("*.py")}
    assert len(sizes) >= 8 and max(sizes.values()) <= 400, sizes
