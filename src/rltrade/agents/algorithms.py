"""The algorithm registry over Stable-Baselines3 and sb3-contrib, and safe model artifacts.

* :func:`make_agent` builds the algorithm a :class:`~rltrade.config.RunConfig` names, with its
  hyperparameters and policy network, on a given ``VecEnv``.
* :func:`check_hyperparams` refuses a hyperparameter the algorithm's constructor does not take,
  listing the valid ones (``train``, ``make_agent`` and ``rltrade config validate`` call it;
  the config module itself knows nothing of the algorithm classes).
* :func:`save_model` / :func:`load_model` store a model so that loading it runs no code: the
  tensors in ``weights.pt`` (read back with ``torch.load(weights_only=True)``, which refuses
  anything but tensors and plain containers) and everything else in ``model.json``. Stable-
  Baselines3's own ``.zip`` holds a pickle and is never used.

Off-policy algorithms (SAC, DQN) keep their replay buffer in memory only: a resumed run refills
it (``learning_starts`` steps) before learning again.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from rltrade.config import ALGORITHM_DEFAULTS, AgentConfig, RunConfig
from rltrade.data.store import atomic_write_bytes, atomic_write_json
from rltrade.envs import spaces as S
from rltrade.envs.config import EnvConfig
from rltrade.errors import CompatibilityError, ConfigError, StoreError

__all__ = [
    "LinearSchedule",
    "SpacesEnv",
    "algorithm_class",
    "apply_schedules",
    "check_hyperparams",
    "hyperparam_schedules",
    "hyperparameter_names",
    "load_model",
    "make_agent",
    "policy_kwargs",
    "policy_name",
    "save_model",
]

WEIGHTS = "weights.pt"
MODEL_JSON = "model.json"
_OFF_POLICY = ("sac", "dqn")
_ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    """The Stable-Baselines3 (or sb3-contrib) class of an algorithm name."""
    if name == "ppo":
        from stable_baselines3 import PPO

        return PPO
    if name == "a2c":
        from stable_baselines3 import A2C

        return A2C
    if name == "sac":
        from stable_baselines3 import SAC

        return SAC
    if name == "dqn":
        from stable_baselines3 import DQN

        return DQN
    if name == "recurrent_ppo":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    if name == "a3c":  # rltrade's own, with the same interface (rltrade.agents.a3c)
        from rltrade.agents.a3c import A3C

        return A3C  # type: ignore[return-value]
    raise ConfigError(f"agent.algorithm: unknown algorithm {name!r}")


#: Constructor arguments a run sets itself: never hyperparameters.
_RESERVED = frozenset({"policy", "env", "seed", "verbose", "tensorboard_log", "device",
                       "policy_kwargs", "_init_setup_model", "self"})


#: hyperparameters that may be a linear schedule (``agent.hyperparams``: ``{"schedule":
#: "linear", "start": a, "end": b}``): SB3 takes the first three as functions of the progress;
#: ``ent_coef`` is set by training's callback before each rollout
SCHEDULABLE = ("learning_rate", "clip_range", "clip_range_vf", "ent_coef")


class LinearSchedule:
    """A value moving linearly from ``start`` (the first step) to ``end`` (the last planned
    step), as a function of SB3's ``progress_remaining`` (1 at the start, 0 at the end).

    :param start: the value at the first step.
    :param end: the value at the last planned step.
    """

    def __init__(self, start: float, end: float) -> None:
        self.start = float(start)
        self.end = float(end)

    def __call__(self, progress_remaining: float) -> float:
        return self.end + (self.start - self.end) * float(progress_remaining)

    def __repr__(self) -> str:
        return f"LinearSchedule({self.start:g} -> {self.end:g})"


def hyperparam_schedules(algorithm: str, hyper: dict[str, Any]) -> tuple[
        dict[str, Any], dict[str, LinearSchedule]]:
    """Split ``hyper`` into constructor values (a schedule of ``learning_rate`` /
    ``clip_range`` / ``clip_range_vf`` becomes the :class:`LinearSchedule` SB3 calls; one of
    ``ent_coef`` its start value) and the schedules training applies itself (``ent_coef``).

    :raises ConfigError: a malformed schedule, or one for a key or algorithm that takes none.
    """
    values = dict(hyper)
    applied: dict[str, LinearSchedule] = {}
    for key, value in hyper.items():
        if not isinstance(value, dict):
            continue
        where = f"agent.hyperparams.{key}"
        if key not in SCHEDULABLE or (algorithm in ("a3c", "sac", "dqn") and key == "ent_coef"):
            raise ConfigError(f"{where}: only {', '.join(SCHEDULABLE)} take a schedule "
                              "(ent_coef: PPO, A2C and recurrent PPO)")
        if algorithm == "a3c":
            raise ConfigError(f"{where}: A3C takes no schedules")
        if set(value) != {"schedule", "start", "end"} or value["schedule"] != "linear":
            raise ConfigError(f"{where}: a schedule is {{schedule: linear, start: <number>, "
                              f"end: <number>}}, got {value}")
        try:
            schedule = LinearSchedule(float(value["start"]), float(value["end"]))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: start and end must be numbers, got {value}") from None
        if key == "ent_coef":
            values[key] = schedule.start
            applied[key] = schedule
        else:
            values[key] = schedule
    return values, applied


def apply_schedules(model: BaseAlgorithm, progress_remaining: float) -> None:
    """Set the hyperparameters training schedules itself (``ent_coef``) on ``model`` for
    ``progress_remaining`` (1 at the start, 0 at the end); nothing without schedules."""
    for key, schedule in getattr(model, "rltrade_schedules", {}).items():
        setattr(model, key, schedule(progress_remaining))


def hyperparameter_names(algorithm: str) -> set[str]:
    """The hyperparameters ``agent.hyperparams`` may set for ``algorithm``: the keyword
    arguments of its constructor, minus what the run sets (policy, env, seed, device...); for
    A3C the keys of its defaults (:data:`rltrade.config.ALGORITHM_DEFAULTS`)."""
    if algorithm == "a3c":  # its constructor also takes an env factory: not a config value
        return set(ALGORITHM_DEFAULTS["a3c"])
    cls = algorithm_class(algorithm)
    return set(inspect.signature(cls.__init__).parameters) - _RESERVED


def check_hyperparams(agent: AgentConfig) -> None:
    """Refuse hyperparameters the algorithm does not take.

    :param agent: the ``agent`` section of a run config.
    :raises ConfigError: naming each unknown key and listing the valid ones; a malformed
        schedule (:func:`hyperparam_schedules`).
    """
    allowed = hyperparameter_names(agent.algorithm)
    unknown = sorted(set(agent.hyperparams) - allowed)
    if unknown:
        raise ConfigError(
            f"agent.hyperparams: unknown key(s) {unknown} for {agent.algorithm}; valid: "
            f"{sorted(allowed)}"
        )
    hyperparam_schedules(agent.algorithm, agent.resolved_hyperparams)  # well-formed schedules


def policy_name(algorithm: str, layout: str) -> str:
    """The SB3 policy class name for an algorithm and an observation layout."""
    recurrent = algorithm == "recurrent_ppo"
    if layout == "window":
        return "MultiInputLstmPolicy" if recurrent else "MultiInputPolicy"
    return "MlpLstmPolicy" if recurrent else "MlpPolicy"


def policy_kwargs(agent: AgentConfig) -> dict[str, Any]:
    """``policy_kwargs`` for the SB3 constructor from the ``agent.policy`` section."""
    pol = agent.policy
    kwargs: dict[str, Any] = {
        "net_arch": list(pol.net_arch),
        "activation_fn": _ACTIVATIONS[pol.activation],
    }
    if pol.encoder != "mlp":
        from rltrade.agents.encoders import ENCODERS

        kwargs["features_extractor_class"] = ENCODERS[pol.encoder]
        kwargs["features_extractor_kwargs"] = dict(pol.encoder_kwargs)
    elif pol.encoder_kwargs:
        raise ConfigError("agent.policy.encoder_kwargs: the mlp encoder takes no arguments")
    if agent.algorithm == "recurrent_ppo":
        kwargs["lstm_hidden_size"] = pol.lstm_hidden_size
    return kwargs


def make_agent(config: RunConfig, env: VecEnv | gym.Env, *, tensorboard_log: str | None = None,
               verbose: int = 0, **overrides: Any) -> BaseAlgorithm:
    """The algorithm of ``config.agent`` on ``env``, seeded with ``config.training.seed``.

    :param overrides: hyperparameters that win over the config (e.g. a tiny replay buffer when
        a model is only rebuilt to load weights into).
    :raises ConfigError: for a hyperparameter the algorithm rejects (named).
    """
    agent = config.agent
    check_hyperparams(agent)
    cls = algorithm_class(agent.algorithm)
    hyper, schedules = hyperparam_schedules(agent.algorithm,
                                            {**agent.resolved_hyperparams, **overrides})
    device = "cpu" if config.training.device == "cpu" else "auto"
    try:
        model = cls(
            policy_name(agent.algorithm, config.env.layout),
            env,
            seed=config.training.seed,
            policy_kwargs=policy_kwargs(agent),
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            **hyper,
        )
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"agent: {agent.algorithm} rejected its settings: {exc}") from exc
    #: the schedules :func:`apply_schedules` sets before each rollout (ent_coef)
    model.rltrade_schedules = schedules  # type: ignore[attr-defined]
    return model


class SpacesEnv(gym.Env):
    """A do-nothing env with given spaces: zero observations and rewards.

    Used to rebuild a model for loading (only its spaces matter) and as the "no env cost"
    reference in the training benchmark.
    """

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self, observation_space: gym.Space, action_space: gym.Space,
                 episode_length: int = 1024) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.episode_length = episode_length
        self._t = 0
        self._zero = _zeros(observation_space)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t = 0
        return _copy(self._zero), {}

    def step(self, action: Any):
        self._t += 1
        return _copy(self._zero), 0.0, False, self._t >= self.episode_length, {}


def _zeros(space: gym.Space) -> Any:
    if isinstance(space, gym.spaces.Dict):
        return {k: _zeros(v) for k, v in space.spaces.items()}
    return np.zeros(space.shape, dtype=space.dtype)


def _copy(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: v.copy() for k, v in obs.items()}
    return obs.copy()


def env_spaces(env_config: EnvConfig, n_market: int) -> tuple[gym.Space, gym.Space]:
    """The observation and action spaces of an env with ``n_market`` market columns."""
    return S.observation_space(env_config, n_market), S.action_space(env_config)


# -- safe artifacts -------------------------------------------------------------------------
def _torch_variables(model: BaseAlgorithm) -> list[str]:
    return list(model._get_torch_save_params()[1])


def save_model(model: BaseAlgorithm, directory: str | Path, **info: Any) -> Path:
    """Store ``model`` in ``directory``: ``weights.pt`` (state dicts of the policy and its
    optimizers, plus loose tensors such as SAC's entropy coefficient) and ``model.json``
    (algorithm, step count, ``info``). Both files are written atomically.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    params = model.get_parameters()
    for name in _torch_variables(model):
        value = _getattr_path(model, name)
        if isinstance(value, torch.Tensor):
            params[f"var:{name}"] = value.detach().cpu()
    import io

    buf = io.BytesIO()
    torch.save(params, buf)
    atomic_write_bytes(directory / WEIGHTS, buf.getvalue())
    meta = {
        "format": "rltrade-model-1",
        "class": type(model).__name__,
        "num_timesteps": int(model.num_timesteps),
        "learning_rate": _jsonable(model.learning_rate),
        **info,
    }
    atomic_write_json(directory / MODEL_JSON, meta)
    return directory


def _jsonable(x: Any) -> Any:
    return x if isinstance(x, int | float | str) else repr(x)


def _getattr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def read_weights(directory: str | Path) -> dict[str, Any]:
    """The tensors of a stored model, read without running any code."""
    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise StoreError(f"{path}: no model weights here")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which
        raise StoreError(f"{path}: not a readable rltrade weights file ({exc})") from exc


def load_into(model: BaseAlgorithm, directory: str | Path, *, optimizers: bool = True) -> dict:
    """Load stored weights (and optimizer states) into an existing model of the same shape."""
    directory = Path(directory)
    params = read_weights(directory)
    meta = json.loads((directory / MODEL_JSON).read_text())
    if meta.get("class") != type(model).__name__:
        raise CompatibilityError(
            f"{directory}: the stored model is a {meta.get('class')}, not a {type(model).__name__}"
        )
    variables = {k.removeprefix("var:"): v for k, v in params.items() if k.startswith("var:")}
    states = {k: v for k, v in params.items() if not k.startswith("var:")}
    if not optimizers:
        states = {k: v for k, v in states.items() if "optimizer" not in k}
    try:
        model.set_parameters(states, exact_match=optimizers, device=model.device)
    except (RuntimeError, ValueError) as exc:
        raise CompatibilityError(
            f"{directory}: the stored weights do not fit this model's network: {exc}"
        ) from exc
    with torch.no_grad():
        for name, value in variables.items():
            _getattr_path(model, name).copy_(value)
    model.num_timesteps = int(meta.get("num_timesteps", 0))
    return meta


def load_model(directory: str | Path, config: RunConfig, n_market: int) -> BaseAlgorithm:
    """Rebuild the model ``config`` describes for an env with ``n_market`` market columns and
    load the stored weights into it (no pickle is read)."""
    obs_space, act_space = env_spaces(config.env, n_market)
    env = DummyVecEnv([lambda: SpacesEnv(obs_space, act_space)])
    off_policy = config.agent.algorithm in _OFF_POLICY
    small = {"buffer_size": 1, "learning_starts": 0} if off_policy else {}
    model = make_agent(config, env, **small)
    load_into(model, directory, optimizers=False)
    return model
