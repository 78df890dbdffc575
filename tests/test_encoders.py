"""The CNN-LSTM-attention encoder: shapes, gradients, attention read-out, every SB3 algorithm."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from gymnasium import spaces

from rltrade.agents import ENCODERS, CnnLstmAttention
from rltrade.data.synthetic import synthetic_market
from rltrade.envs import TradingEnv
from rltrade.errors import ConfigError
from rltrade.features import FeatureSpec, build_dataset


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny networks: torch's thread pool costs more than it gives (and the cores are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = {"features_dim": 16, "channels": 4, "kernel_size": 3, "hidden_size": 8, "heads": 2}


def obs_space(window: int, n_features: int, n_account: int = 9) -> spaces.Dict:
    return spaces.Dict({
        "market": spaces.Box(-10, 10, shape=(window, n_features), dtype=np.float32),
        "account": spaces.Box(-10, 10, shape=(n_account,), dtype=np.float32),
    })


def batch(space: spaces.Dict, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn((n, *s.shape), generator=gen) for k, s in space.spaces.items()}


@pytest.mark.parametrize("window,n_features", [(1, 1), (4, 3), (16, 7), (32, 40), (64, 5)])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_output_shapes(window, n_features, kernel_size):
    torch.manual_seed(0)
    space = obs_space(window, n_features)
    enc = CnnLstmAttention(space, **(TINY | {"kernel_size": kernel_size}))
    obs = batch(space, 3)
    assert enc.features_dim == 16
    assert enc(obs).shape == (3, 16)
    weights = enc.attention_weights(obs)
    assert weights.shape == (3, 2, window)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    space = obs_space(12, 6)
    enc = CnnLstmAttention(space, **(TINY | {"lstm_layers": 2}))
    out = enc(batch(space, 5))
    (out**2).sum().backward()
    params = dict(enc.named_parameters())
    assert {n.split(".")[0] for n in params} == {"conv", "lstm", "query", "attention", "head"}
    for name, p in params.items():
        assert p.grad is not None, f"{name} has no gradient"
        assert p.grad.abs().sum() > 0, f"{name}'s gradient is all zero"


def test_attention_weights_sum_to_one_and_are_read_from_an_env_observation():
    ds = build_dataset(synthetic_market("regime", 400, seed=3, timeframe="1h"),
                       FeatureSpec.from_dict({"features": {"returns": {"periods": [1, 5]}}}))
    env = TradingEnv(ds, window=10, episode_length=50)
    torch.manual_seed(1)
    enc = CnnLstmAttention(env.observation_space, **TINY | {"dropout": 0.2})
    obs, _ = env.reset(seed=0)
    w = enc.attention_weights(obs)  # a single numpy observation: batch of one
    assert w.shape == (1, 2, 10)
    assert torch.all(w >= 0)
    torch.testing.assert_close(w.sum(dim=-1), torch.ones(1, 2))
    assert enc.training  # the read-out does not leave the module in eval mode
    # the same weights from a batched tensor observation, deterministic (no dropout)
    tensor_obs = {k: torch.as_tensor(v)[None].repeat(2, *([1] * v.ndim)) for k, v in obs.items()}
    w2 = enc.attention_weights(tensor_obs)
    torch.testing.assert_close(w2, w.repeat(2, 1, 1))


def test_feature_count_comes_from_the_dataset():
    spec_a = FeatureSpec.from_dict({"features": {"returns": {"periods": [1]}}})
    spec_b = FeatureSpec.from_dict({"features": {"returns": {"periods": [1, 5, 20]}, "rsi": {}},
                                    "strategies": ["supertrend"]})
    bars = synthetic_market("gbm", 300, seed=2, timeframe="1h")
    for spec in (spec_a, spec_b):
        ds = build_dataset(bars, spec)
        env = TradingEnv(ds, window=8, episode_length=40)
        enc = CnnLstmAttention(env.observation_space, **TINY)
        assert enc.n_features == len(ds.feature_names) + len(ds.signal_names)
        assert enc.window == 8


def test_bad_spaces_and_sizes_are_clear_errors():
    flat = spaces.Box(-1, 1, shape=(50,), dtype=np.float32)
    with pytest.raises(ConfigError, match="layout='window'"):
        CnnLstmAttention(flat)
    with pytest.raises(ConfigError, match="multiple of heads"):
        CnnLstmAttention(obs_space(8, 3), hidden_size=10, heads=4)
    with pytest.raises(ConfigError, match="channels"):
        CnnLstmAttention(obs_space(8, 3), channels=0)
    with pytest.raises(ConfigError, match="dropout"):
        CnnLstmAttention(obs_space(8, 3), dropout=1.0)


def test_registry():
    assert ENCODERS["cnn_lstm_attention"] is CnnLstmAttention
    assert ENCODERS["mlp"] is None


# -- every Stable-Baselines3 algorithm we offer accepts it ------------------------------------


@pytest.fixture(scope="module")
def small_ds():
    spec = FeatureSpec.from_dict({"features": {"returns": {"periods": [1, 5]}, "rsi": {}}})
    return build_dataset(synthetic_market("regime", 500, seed=4, timeframe="1h"), spec)


def _algorithm(name):
    import sb3_contrib
    import stable_baselines3 as sb3

    return {
        "ppo": (sb3.PPO, "MultiInputPolicy", "discrete3", {"n_steps": 32, "batch_size": 16}),
        "a2c": (sb3.A2C, "MultiInputPolicy", "discrete3", {"n_steps": 8}),
        "sac": (sb3.SAC, "MultiInputPolicy", "exposure_sl",
                {"learning_starts": 16, "batch_size": 16, "buffer_size": 200}),
        "dqn": (sb3.DQN, "MultiInputPolicy", "discrete3",
                {"learning_starts": 16, "batch_size": 16, "buffer_size": 200}),
        "recurrent_ppo": (sb3_contrib.RecurrentPPO, "MultiInputLstmPolicy", "discrete3",
                          {"n_steps": 32, "batch_size": 16, "policy_kwargs": {
                              "lstm_hidden_size": 8}}),
    }[name]


@pytest.mark.parametrize("name", ["ppo", "a2c", "sac", "dqn", "recurrent_ppo"])
def test_sb3_algorithms_accept_the_encoder(name, small_ds):
    cls, policy, scheme, hyper = _algorithm(name)
    env = TradingEnv(small_ds, action_scheme=scheme, window=8, episode_length=40)
    policy_kwargs = {
        **hyper.pop("policy_kwargs", {}),
        "net_arch": [16],
        "features_extractor_class": ENCODERS["cnn_lstm_attention"],
        "features_extractor_kwargs": TINY,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3's notes on tiny n_steps / batch sizes
        model = cls(policy, env, seed=0, device="cpu", policy_kwargs=policy_kwargs, **hyper)
        model.learn(total_timesteps=64)
    assert any(isinstance(m, CnnLstmAttention) for m in model.policy.modules())
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action).reshape(env.action_space.shape)
                                     .astype(env.action_space.dtype))
