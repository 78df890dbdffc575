"""TradingEnv and VecTradingEnv: the Gymnasium contract, timing, equivalence, rewards, actions."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from rltrade.data import load_bars
from rltrade.data.synthetic import synthetic_market
from rltrade.envs import ACTION_SCHEMES, REWARDS, TradingEnv, VecTradingEnv
from rltrade.envs import kernels as EK
from rltrade.errors import ConfigError, DataError
from rltrade.features import FeatureSpec, Normalizer, build_dataset
from rltrade.sim import EngineConfig, ExecutionEngine

SPEC = FeatureSpec.from_dict({
    "features": {"rsi": {"period": 14}, "returns": {"periods": [1, 5]}, "atr": {}},
    "strategies": ["supertrend"],
})


@pytest.fixture(scope="module")
def ds():
    return build_dataset(synthetic_market("regime", 1500, seed=5, timeframe="1h"), SPEC)


@pytest.fixture(scope="module")
def eurusd():
    return build_dataset(load_bars("sample:EURUSD-1h"))


def rollout(env, actions, seed=0, options=None):
    obs, info = env.reset(seed=seed, options=options)
    out = [(obs, 0.0, False, False, info)]
    for a in actions:
        obs, r, te, tr, info = env.step(a)
        out.append((obs, r, te, tr, info))
        if te or tr:
            break
    return out


def flat_obs(obs):
    if isinstance(obs, dict):
        return np.concatenate([obs["market"].ravel(), obs["account"]])
    return obs


# -- the Gymnasium and SB3 contracts ------------------------------------------------------------


@pytest.mark.parametrize("scheme", list(ACTION_SCHEMES))
@pytest.mark.parametrize("reward", list(REWARDS))
def test_check_env_every_scheme_and_reward(ds, scheme, reward):
    env = TradingEnv(ds, action_scheme=scheme, reward=reward, window=16, episode_length=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium's notes on Box bounds for float observations
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=False)


@pytest.mark.parametrize("layout", ["window", "flat"])
def test_spaces_declared_exactly(ds, layout):
    env = TradingEnv(ds, layout=layout, window=16)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    width = len(ds.feature_names) + len(ds.signal_names)
    if layout == "window":
        assert obs["market"].shape == (16, width) and obs["market"].dtype == np.float32
        assert obs["account"].shape == (9,)
    else:
        assert obs.shape == (16 * width + 9,) and obs.dtype == np.float32
    for _ in range(50):
        obs, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)


def test_observation_is_the_window_ending_at_the_current_bar(ds):
    env = TradingEnv(ds, window=8, mode="eval")
    obs, info = env.reset(seed=0)
    norm = Normalizer.for_dataset(ds).transform(ds)
    bar = info["bar"]
    assert bar == 7  # first full window
    np.testing.assert_array_equal(obs["market"][:, : norm.shape[1]], norm[bar - 7 : bar + 1])
    np.testing.assert_array_equal(obs["market"][:, norm.shape[1]:], ds.signals[bar - 7 : bar + 1])
    obs, *_, info = env.step(1)
    assert info["bar"] == bar + 1
    np.testing.assert_array_equal(obs["market"][-1, : norm.shape[1]], norm[bar + 1])


# -- episodes --------------------------------------------------------------------------------


def test_train_episodes_random_start_fixed_length_seeded(ds):
    env = TradingEnv(ds, window=16, episode_length=100)
    starts = set()
    for seed in range(8):
        steps = rollout(env, [1] * 1000, seed=seed)
        assert len(steps) - 1 == 100 and steps[-1][3] and not steps[-1][2]  # truncated
        starts.add(steps[0][4]["bar"])
    assert len(starts) > 4
    a = rollout(env, [0, 2, 1, 2] * 30, seed=3)
    b = rollout(env, [0, 2, 1, 2] * 30, seed=3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(flat_obs(x[0]), flat_obs(y[0]))
        assert x[1] == y[1]


def test_train_episodes_stay_inside_one_segment(ds):
    """CPCV trains on rows cut by test groups: no episode (nor its observation window) crosses
    a gap between segments, and every segment is used."""
    from rltrade.envs.config import EnvConfig
    from rltrade.envs.core import EnvCore

    segments = ((0, 120), (150, 260), (300, len(ds)))
    window = 16
    core = EnvCore(ds, EnvConfig(window=window, episode_length=50, segments=segments))
    rng = np.random.default_rng(0)
    used = set()
    for _ in range(2000):
        start, end = core.episode_bounds(rng)
        inside = [k for k, (lo, hi) in enumerate(segments)
                  if lo <= start - window + 1 and start < end <= hi - 1]
        assert len(inside) == 1, (start, end)
        assert end - start == 50
        used.add(inside[0])
    assert used == {0, 1, 2}
    # the env's rollouts agree: every bar it visits lies in the episode's segment
    env = TradingEnv(ds, window=window, episode_length=200, segments=segments)
    for seed in range(6):
        bars = [step[4]["bar"] for step in rollout(env, [1] * 1000, seed=seed)]
        seg = [k for k, (lo, hi) in enumerate(segments) if lo + window - 1 <= bars[0] < hi]
        assert len(seg) == 1
        lo, hi = segments[seg[0]]
        assert all(lo + window - 1 <= b <= hi - 1 for b in bars)
    # a segment too short for a window plus one step is never used; none usable is an error
    short = EnvCore(ds, EnvConfig(window=window, segments=((0, 16), (100, 300))))
    assert short.train_spans == [(115, 299)]
    with pytest.raises(DataError, match="no training segment"):
        EnvCore(ds, EnvConfig(window=window, segments=((0, 16),)))
    with pytest.raises(DataError, match="ends after"):
        EnvCore(ds, EnvConfig(window=window, segments=((0, len(ds) + 1),)))
    with pytest.raises(ConfigError, match="segments"):
        EnvConfig.build({"segments": [[5, 5]]})


def test_eval_is_one_pass_over_everything(ds):
    env = TradingEnv(ds, window=16, mode="eval")
    steps = rollout(env, [1] * 10_000)
    assert steps[0][4]["bar"] == 15
    assert steps[-1][4]["bar"] == len(ds) - 1 and steps[-1][3]
    assert len(steps) - 1 == len(ds) - 16
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)


def test_terminated_on_equity_floor():
    # a crash: long with leverage into a falling market hits the floor
    frame = synthetic_market("gbm", 400, seed=1, timeframe="1h", drift=-40.0, annual_vol=0.8)
    data = build_dataset(frame, SPEC)
    env = TradingEnv(data, window=8, mode="eval", equity_floor=0.9,
                     engine=EngineConfig(leverage=3.0))
    steps = rollout(env, [2] * 10_000)
    assert steps[-1][2] and not steps[-1][3]
    assert steps[-1][4]["equity"] <= 0.9 * 50_000


def test_info_carries_the_account(ds):
    env = TradingEnv(ds, window=16, mode="eval")
    steps = rollout(env, [2, 2, 0, 0, 1] * 40)
    info = steps[-1][4]
    for key in ("equity", "position", "total_pnl", "trade_count", "win_rate", "max_drawdown",
                "risk_interventions", "invalid_actions"):
        assert key in info
    assert info["trade_count"] >= 3
    assert info["total_pnl"] == pytest.approx(info["equity"] - 50_000)


# -- the timing contract, end to end -------------------------------------------------------------


def test_delete_the_future():
    """Up to bar t, an env on data truncated after t (or with noise after t) yields the same
    observations, rewards and (for a fixed policy) actions as the env on the full data."""
    frame = synthetic_market("regime", 1200, seed=9, timeframe="1h")
    full = build_dataset(frame, SPEC)

    def policy(obs):  # a fixed policy that reads the observation
        return int(np.sign(obs["market"][-1, 1]) + 1)

    def run(dataset, n):
        env = TradingEnv(dataset, window=16, mode="eval")
        obs, _ = env.reset(seed=0)
        out = []
        for _ in range(n):
            a = policy(obs)
            obs, r, te, tr, _ = env.step(a)
            out.append((a, flat_obs(obs), r))
            if te or tr:
                break
        return out

    rng = np.random.default_rng(0)
    reference = run(full, 10_000)
    for cut in sorted(rng.integers(400, 1150, 4)):
        truncated = build_dataset(frame.iloc[: cut + 1], SPEC)
        noisy_frame = frame.copy()
        noise = synthetic_market("gbm", len(frame) - cut - 1, seed=int(cut), timeframe="1h")
        noisy_frame.iloc[cut + 1:, :5] = noise.iloc[:, :5].to_numpy() * (
            frame["close"].iloc[cut] / 100.0)
        noisy = build_dataset(noisy_frame, SPEC)
        offset = full.warmup_dropped
        steps = cut - offset - 15  # steps that end at or before bar `cut`
        for other in (run(truncated, steps), run(noisy, steps)):
            assert len(other) == steps
            for k, (x, y) in enumerate(zip(reference[:steps], other, strict=True)):
                assert x[0] == y[0], f"action differs at step {k} (cut {cut})"
                np.testing.assert_array_equal(x[1], y[1], err_msg=f"obs at step {k}")
                assert x[2] == y[2], f"reward differs at step {k}"


# -- the env's numbers are the engine's numbers ----------------------------------------------------


def test_env_equity_equals_an_engine_replay_of_its_targets(eurusd):
    env = TradingEnv(eurusd, window=32, mode="eval", action_scheme="exposure_sl",
                     engine=EngineConfig(leverage=2.0))
    rng = np.random.default_rng(4)
    _, info = env.reset(seed=0)
    engine = ExecutionEngine.from_dataset(eurusd, EngineConfig(leverage=2.0))
    engine.reset(info["bar"])
    equity_env, equity_engine = [], []
    for _ in range(1500):
        a = rng.uniform(-1, 1, 2)
        c = eurusd.close[engine.bar]
        target = a[0] * 2.0 * engine.equity / c
        pct = 0.005 + (a[1] + 1) / 2 * (0.05 - 0.005)
        sl = c * (1 - pct) if target > 0 else (c * (1 + pct) if target < 0 else 0.0)
        engine.step(target, sl=sl)
        _, _, te, tr, info = env.step(a)
        equity_env.append(info["equity"])
        equity_engine.append(engine.equity)
        if te or tr:
            break
    np.testing.assert_allclose(equity_env, equity_engine, rtol=1e-12)
    assert info["trade_count"] == engine.account.n_trades


# -- rewards ---------------------------------------------------------------------------------


def test_log_return_reward_is_the_log_equity_change(ds):
    env = TradingEnv(ds, window=16, mode="eval", reward="log_return")
    steps = rollout(env, [2, 2, 0, 1, 2] * 20)
    eq = [s[4]["equity"] for s in steps]
    for k in range(1, len(steps)):
        assert steps[k][1] == pytest.approx(math.log(eq[k] / eq[k - 1]), abs=1e-15)


def test_differential_sharpe_matches_moody_saffell(ds):
    eta = 0.05
    env = TradingEnv(ds, window=16, mode="eval", reward="differential_sharpe",
                     reward_weights={"eta": eta})
    steps = rollout(env, [2, 0, 2, 2, 1, 0] * 20)
    eq = [s[4]["equity"] for s in steps]
    a = b = 0.0
    for k in range(1, len(steps)):
        ret = eq[k] / eq[k - 1] - 1
        da, db = ret - a, ret * ret - b
        var = b - a * a
        expected = (b * da - 0.5 * a * db) / var ** 1.5 if var > 1e-18 else 0.0
        assert steps[k][1] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        a, b = a + eta * da, b + eta * db


def test_asymmetric_and_cvar_rewards(ds):
    env = TradingEnv(ds, window=16, mode="eval", reward="asymmetric_drawdown",
                     reward_weights={"downside": 3.0})
    steps = rollout(env, [2, 0] * 40)
    eq = [s[4]["equity"] for s in steps]
    for k in range(1, len(steps)):
        ret = eq[k] / eq[k - 1] - 1
        assert steps[k][1] == pytest.approx(ret if ret >= 0 else 3.0 * ret, abs=1e-15)
    env = TradingEnv(ds, window=16, mode="eval", reward="cvar_penalized", sharpe_window=20,
                     reward_weights={"alpha": 0.1, "penalty": 2.0})
    steps = rollout(env, [2, 0, 2] * 30)
    eq = np.array([s[4]["equity"] for s in steps])
    rets = eq[1:] / eq[:-1] - 1
    for k in range(1, len(steps)):
        window = np.sort(rets[max(0, k - 20):k])
        tail = window[: max(1, int(0.1 * len(window)))] if len(window) >= 2 else np.zeros(1)
        expected = rets[k - 1] - 2.0 * max(0.0, -tail.mean())
        assert steps[k][1] == pytest.approx(expected, abs=1e-12)


def test_bankruptcy_reward_and_reward_scale(ds):
    env = TradingEnv(ds, window=16, mode="eval", reward_scale=100.0)
    steps = rollout(env, [2, 2, 0, 1] * 10)
    eq = [s[4]["equity"] for s in steps]
    assert steps[1][1] == pytest.approx(100 * math.log(eq[1] / eq[0]))


def test_risk_adjusted_reward_penalises_drawdown(ds):
    base = TradingEnv(ds, window=16, mode="eval", reward="risk_adjusted",
                      reward_weights={"drawdown": 0.0, "volatility": 0.0, "holding": 0.0,
                                      "transaction": 0.0, "sharpe": 0.0, "liquidation": 0.0})
    penal = TradingEnv(ds, window=16, mode="eval", reward="risk_adjusted",
                       reward_weights={"drawdown": 1.0, "volatility": 0.0, "holding": 0.0,
                                       "transaction": 0.0, "sharpe": 0.0, "liquidation": 0.0})
    a = rollout(base, [2] * 300)
    b = rollout(penal, [2] * 300)
    equity = np.array([x[4]["equity"] for x in a])
    peak = np.maximum.accumulate(equity)
    drawdown = (peak - equity) / peak
    assert drawdown.max() > 0
    for k in range(1, len(a)):
        assert b[k][1] == pytest.approx(a[k][1] - drawdown[k], abs=1e-12)


# -- actions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 7, -1, 1.5])
def test_malformed_discrete_actions_clip_or_raise(ds, bad):
    env = TradingEnv(ds, window=16)
    env.reset(seed=0)
    before = env.core.engine.account(0)
    _, _, _, _, info = env.step(bad)
    assert info["invalid_actions"] >= 1
    strict = TradingEnv(ds, window=16, invalid_action="raise")
    strict.reset(seed=0)
    with pytest.raises(ValueError, match="invalid discrete3"):
        strict.step(bad)
    assert strict.core.engine.account(0).equity == before.equity  # nothing happened
    assert strict.core.engine.account(0).bar == strict.core.engine.account(0).bar


def test_malformed_box_actions(ds):
    env = TradingEnv(ds, window=16, action_scheme="exposure_sl")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([np.nan, 5.0]))
    assert info["invalid_actions"] == 1 and info["position"] == 0.0  # NaN exposure -> flat
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="not numeric"):
        env.step("buy")
    strict = TradingEnv(ds, window=16, action_scheme="exposure_sl", invalid_action="raise")
    strict.reset(seed=0)
    bar = strict.core.engine.account(0).bar
    with pytest.raises(ValueError, match="finite"):
        strict.step(np.array([0.5, np.inf]))
    assert strict.core.engine.account(0).bar == bar


def test_discrete6_semantics(ds):
    env = TradingEnv(ds, window=16, mode="eval", action_scheme="discrete6",
                     engine=EngineConfig(leverage=5.0))
    env.reset(seed=0)
    _, _, _, _, info = env.step(EK.EXIT)  # exit when flat: does not apply
    assert info["invalid_actions"] == 1 and info["position"] == 0
    _, _, _, _, info = env.step(EK.ENTER_LONG)
    pos = info["position"]
    assert pos > 0
    acct = env.account
    assert acct.stop_loss is not None and acct.stop_loss < ds.close[acct.bar]
    _, _, _, _, info = env.step(EK.ENTER_LONG)  # already long
    assert info["invalid_actions"] == 2 and info["position"] == pytest.approx(pos)
    _, _, _, _, info = env.step(EK.SCALE_IN)
    assert info["position"] == pytest.approx(1.5 * pos, rel=1e-9)
    _, _, _, _, info = env.step(EK.SCALE_OUT)
    assert info["position"] == pytest.approx(0.75 * pos, rel=1e-9)
    _, _, _, _, info = env.step(EK.ENTER_SHORT)  # flips
    assert info["position"] < 0
    _, _, _, _, info = env.step(EK.EXIT)
    assert info["position"] == 0


def test_risk_manager_in_the_loop(ds):
    hour = int((ds.timestamps[200] // 3_600_000_000_000) % 24)
    window = [f"{hour:02d}:00", f"{(hour + 1) % 24:02d}:00"]
    env = TradingEnv(ds, window=16, mode="eval", risk={"no_trade": {"times": [window]}})
    steps = rollout(env, [2, 0] * 200)  # a trade every bar, inside the window too
    counts = steps[-1][4]["risk_interventions"]
    assert counts.get("no_trade_window", 0) >= 1


def test_discrete3_holds_its_position_while_the_side_is_unchanged(ds):
    env = TradingEnv(ds, window=16, mode="eval")
    env.reset(seed=0)
    _, _, _, _, info = env.step(2)
    units = info["position"]
    assert units > 0
    for _ in range(50):  # prices and equity move; a re-sizing trade would cost fees every bar
        _, _, _, _, info = env.step(2)
        assert info["position"] == units
    assert info["trade_count"] == 0  # nothing closed
    _, _, _, _, info = env.step(0)  # the other side: a flip
    assert info["position"] < 0


def test_config_errors_name_the_key(ds):
    with pytest.raises(ConfigError, match=r"env\.window"):
        TradingEnv(ds, window=0)
    with pytest.raises(ConfigError, match="reward_weights"):
        TradingEnv(ds, reward="log_return", reward_weights={"downside": 2.0})
    with pytest.raises(ConfigError, match=r"env\.nope"):
        TradingEnv(ds, nope=1)
    zds = build_dataset(synthetic_market("gbm", 400, seed=0),
                        FeatureSpec.from_dict({"features": {"rsi": {}}, "normalization": "zscore"}))
    with pytest.raises(ConfigError, match="fit a Normalizer"):
        TradingEnv(zds)


# -- the vectorized env ------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", list(ACTION_SCHEMES))
def test_vec_env_equals_separate_envs(ds, scheme):
    n = 5
    venv = VecTradingEnv(ds, n_envs=n, seed=10, window=16, episode_length=60,
                         action_scheme=scheme)
    envs = [TradingEnv(ds, window=16, episode_length=60, action_scheme=scheme)
            for _ in range(n)]
    obs_v = venv.reset()
    obs_s = [e.reset(seed=10 + i)[0] for i, e in enumerate(envs)]
    space = envs[0].action_space
    space.seed(0)
    for step in range(150):
        actions = np.stack([np.asarray(space.sample()) for _ in range(n)])
        for i in range(n):
            np.testing.assert_array_equal(obs_v["market"][i], obs_s[i]["market"])
            np.testing.assert_array_equal(obs_v["account"][i], obs_s[i]["account"])
        obs_v, rew_v, done_v, info_v = venv.step(actions)
        for i, env in enumerate(envs):
            o, r, te, tr, _ = env.step(actions[i])
            assert np.float32(r) == rew_v[i], f"reward env {i} step {step}"
            assert (te or tr) == done_v[i]
            if te or tr:
                term = info_v[i]["terminal_observation"]
                np.testing.assert_array_equal(term["market"], o["market"])
                assert info_v[i]["TimeLimit.truncated"] == (tr and not te)
                o, _ = env.reset()  # continue with the env's own generator, like the vec env
            obs_s[i] = o


def test_vec_env_trains_with_sb3_ppo(ds):
    from stable_baselines3 import PPO

    venv = VecTradingEnv(ds, n_envs=4, seed=0, window=8, episode_length=64, layout="flat")
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert isinstance(venv.action_space, gym.spaces.Discrete)


def test_core_records_trades_into_an_attached_buffer(ds):
    from rltrade.envs import EnvConfig, EnvCore
    from rltrade.sim import kernels as K

    cfg = EnvConfig.build(None, window=4, mode="eval")
    core = EnvCore(ds, cfg, 1)
    assert core.trades.shape == (0, K.N_TRADE)  # counts only by default
    with pytest.raises(ValueError, match="float64"):
        core.attach_trades(np.zeros((10, K.N_TRADE), dtype=np.float32))
    with pytest.raises(ValueError, match=str(K.N_TRADE)):
        core.attach_trades(np.zeros((10, K.N_TRADE + 1)))
    buf = np.zeros((500, K.N_TRADE))
    core.attach_trades(buf)
    core.reset_env(0, core.first_bar, core.last_bar, 0)
    for t in range(300):
        core.actions[0, 0] = 2.0 if (t // 5) % 2 else 0.0  # long / short every 5 bars
        core.step(core.actions)
    st = core.engine.kernel_arrays()[0][0]
    n = int(st[K.N_RECORDS])
    assert n == int(st[K.N_TRADES]) > 20 and st[K.DROPPED_RECORDS] == 0
    assert core.trades is buf and (buf[:n, K.T_EXIT_BAR] > 0).all()


# -- the kernels' argument bundle, the decision API, threads -----------------------------------


def test_rewards_and_schemes_are_registered_once():
    """A reward is its kernel branch and id (EK.REWARD_KERNELS) plus its config defaults; a
    scheme is its ActionScheme record: the config's choices are exactly those."""
    from typing import get_args

    from rltrade.envs import REWARD_NAMES, EnvConfig

    fields = EnvConfig.model_fields
    assert get_args(fields["reward"].annotation) == REWARD_NAMES == tuple(EK.REWARD_KERNELS)
    for name, (_, order) in EK.REWARD_KERNELS.items():
        assert order[0] == "bankruptcy" and sorted(order) == sorted(REWARDS[name])
    assert get_args(fields["action_scheme"].annotation) == tuple(ACTION_SCHEMES)
    ids = [s.kernel_id for s in ACTION_SCHEMES.values()]
    assert sorted(ids) == list(range(len(ids)))


def test_step_args_bundle_and_its_packed_table(ds):
    """Every kernel argument is a field of one StepArgs; the packed table the hot path passes
    describes the same arrays (stepping through it equals stepping the bundle itself), and an
    array of the wrong type is refused by name."""
    from rltrade.envs import EnvConfig, EnvCore

    core = EnvCore(ds, EnvConfig.build(None, window=8, mode="eval"), 3)
    a = core.args
    assert [name for name, _, _ in EK.STEP_LAYOUT] == list(EK.StepArgs._fields)
    for name, dtype, ndim in EK.STEP_LAYOUT:
        value = getattr(a, name)
        if dtype is None:
            assert isinstance(value, int)
        else:
            assert value.dtype == dtype and value.ndim == ndim, name
    twin = EnvCore(ds, EnvConfig.build(None, window=8, mode="eval"), 3)
    for c in (core, twin):
        for i in range(3):
            c.reset_env(i, c.first_bar + 10 * i, c.last_bar, i)
    rng = np.random.default_rng(0)
    for _ in range(40):
        core.actions[:, 0] = twin.actions[:, 0] = rng.integers(0, 3, 3)
        EK.step_packed(EK.pack_args(core.args), False)  # the table
        EK.step_envs(twin.args, False)  # the bundle itself, through numba's dispatcher
        np.testing.assert_array_equal(core.report, twin.report)
        np.testing.assert_array_equal(core.obs_account, twin.obs_account)
    with pytest.raises(ValueError, match=r"StepArgs\.rets"):
        EK.pack_args(a.replace(rets=a.rets.astype(np.float32)))


def test_decide_then_step_decided_is_the_step(ds):
    """decide() + step_decided() (the backtesting.py bridge's path: the orders are read in
    between) is exactly step(): same account, observations and risk interventions, each
    recorded once."""
    from rltrade.envs import EnvConfig, EnvCore

    cfg = EnvConfig.build(None, window=8, mode="eval", action_scheme="exposure_sl",
                          risk={"drawdown": {"max_drawdown": 0.02, "action": "cut"},
                                "volatility": {"max_atr_pct": 0.004}})
    one, two = EnvCore(ds, cfg, 2), EnvCore(ds, cfg, 2)
    for c in (one, two):
        for i in range(2):
            c.reset_env(i, c.first_bar + 3 * i, c.last_bar, 7)
    rng = np.random.default_rng(1)
    for _ in range(300):
        actions = rng.uniform(-1.0, 1.0, (2, 2))
        one.step(actions)
        two.accept_actions(actions)
        two.decide()
        targets = two.targets.copy()
        two.step_decided()
        np.testing.assert_array_equal(two.targets, targets)  # the step sent what was decided
        np.testing.assert_array_equal(one.report, two.report)
        np.testing.assert_array_equal(one.obs_account, two.obs_account)
        assert one.last_reasons == two.last_reasons
    assert one.risk_counts == two.risk_counts
    assert sum(one.risk_counts[0].values()) > 20


def test_accept_actions_counts_what_it_clips(ds):
    from rltrade.envs import EnvConfig, EnvCore

    core = EnvCore(ds, EnvConfig.build(None, window=8), 3)
    out = core.accept_actions(np.array([2.0, np.nan, 7.0]))
    assert out is core.actions
    np.testing.assert_array_equal(core.actions[:, 0], [2.0, 1.0, 2.0])
    np.testing.assert_array_equal(core.env[:, EK.E_INVALID], [0.0, 1.0, 1.0])


def test_scheme_record_says_which_kernels_read_the_atr(ds):
    from rltrade.envs import EnvConfig, EnvCore

    for name, scheme in ACTION_SCHEMES.items():
        core = EnvCore(ds, EnvConfig.build(None, window=8, action_scheme=name), 1)
        assert (core.kernel_atr.size > 0) == scheme.sizes_from_atr
        assert core.args.atr is core.kernel_atr


def test_threads_change_no_number(ds):
    """A step split over numba threads (threads=2, a batch large enough) gives the serial
    step's numbers; small batches and the default stay on one thread."""
    import numba
    import torch

    from rltrade.envs.core import MIN_ENVS_PER_THREAD, step_threads

    assert step_threads(4096) == 1  # the measured default
    assert step_threads(2 * MIN_ENVS_PER_THREAD - 1, 8) == 1  # too small to split
    n = 2 * MIN_ENVS_PER_THREAD
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as training does by default: the cores are numba's
    try:
        split = VecTradingEnv(ds, n, seed=4, window=8, episode_length=40, threads=2)
        assert torch.get_num_threads() == 1  # numba's OpenMP start does not leak into torch
    finally:
        torch.set_num_threads(before)
    if split.core.threads < 2:
        pytest.skip(f"one core or numba thread here ({numba.config.NUMBA_NUM_THREADS})")
    serial = VecTradingEnv(ds, n, seed=4, window=8, episode_length=40)
    assert serial.core.threads == 1
    obs_a, obs_b = split.reset(), serial.reset()
    rng = np.random.default_rng(2)
    for _ in range(60):  # episodes end and auto-reset inside
        actions = rng.integers(0, 3, n)
        obs_a, rew_a, done_a, _ = split.step(actions)
        obs_b, rew_b, done_b, _ = serial.step(actions)
        np.testing.assert_array_equal(obs_a["market"], obs_b["market"])
        np.testing.assert_array_equal(obs_a["account"], obs_b["account"])
        np.testing.assert_array_equal(rew_a, rew_b)
        np.testing.assert_array_equal(done_a, done_b)
    assert split.infos() == serial.infos()
