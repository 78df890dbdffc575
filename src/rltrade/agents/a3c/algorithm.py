"""``A3C``: the algorithm with Stable-Baselines3's interface (see :mod:`rltrade.agents.a3c`).

The façade builds the shared network and optimizer, validates the hyperparameters, offers the
part of SB3's ``BaseAlgorithm`` that rltrade's training code uses (``learn`` with the callback
protocol, ``predict``, ``get_parameters`` / ``set_parameters``, ``num_timesteps``...) and hands
each ``learn`` call to a :class:`~rltrade.agents.a3c.learner.Learner`.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from loguru import logger
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import configure_logger

from rltrade.agents.a3c.factories import EnvFactory, default_env_factory
from rltrade.agents.a3c.learner import Learner
from rltrade.agents.a3c.network import ActorCritic, obs_as_tensor
from rltrade.agents.a3c.optim import SharedAdam
from rltrade.agents.a3c.worker import WorkerSpec
from rltrade.errors import ConfigError

log = logger.bind(component="train")

_POLICY_KWARGS = ("net_arch", "activation_fn", "features_extractor_class",
                  "features_extractor_kwargs", "log_std_init", "ortho_init")


class A3C:
    """Asynchronous advantage actor-critic with Stable-Baselines3's interface (see
    :mod:`rltrade.agents.a3c` for the algorithm, the lock, determinism and risk gating).

    :param policy: SB3's policy name (``MlpPolicy``, ``MultiInputPolicy``); accepted for
        compatibility, the layout follows the observation space.
    :param env: the training env (a ``VecTradingEnv``): its spaces, and, unless ``env_factory``
        is given, the data, config and normalizer every worker's env is built from.
    :param seed: seeds the network's initialisation, the workers' envs and their sampling.
    :param policy_kwargs: ``net_arch``, ``activation_fn``, ``features_extractor_class``,
        ``features_extractor_kwargs``, ``log_std_init``, ``ortho_init``.
    :param tensorboard_log: a folder for TensorBoard logs (losses, episode returns).
    :param device: only ``cpu`` (shared memory between processes); ``auto`` means ``cpu``.
    :param learning_rate: the shared Adam's learning rate.
    :param n_steps: env steps per worker rollout (n-step returns).
    :param gamma: discount factor.
    :param ent_coef: entropy bonus weight.
    :param vf_coef: value loss weight.
    :param max_grad_norm: each worker's gradient norm is clipped to this.
    :param n_workers: worker processes; ``1`` runs in the calling process (bit-deterministic).
    :param env_factory: ``env_factory(worker_id, seed, mode="train", engine_mode=None)`` ->
        a ``gymnasium.Env`` with the same spaces; picklable (a top-level function or a
        ``functools.partial`` of one) when ``n_workers > 1``.
    """

    def __init__(self, policy: str, env: Any, *, seed: int | None = None,
                 policy_kwargs: dict[str, Any] | None = None,
                 tensorboard_log: str | None = None, verbose: int = 0,
                 device: str | torch.device = "cpu", learning_rate: float = 1e-4,
                 n_steps: int = 20, gamma: float = 0.99, ent_coef: float = 0.01,
                 vf_coef: float = 0.5, max_grad_norm: float = 40.0, n_workers: int = 2,
                 env_factory: EnvFactory | None = None) -> None:
        if str(device) not in ("cpu", "auto"):
            raise ValueError(f"A3C runs on the CPU (shared memory between processes), not "
                             f"{device!r}")
        for name, value, ok in (
            ("n_steps", n_steps, isinstance(n_steps, int) and n_steps >= 1),
            ("n_workers", n_workers, isinstance(n_workers, int) and n_workers >= 1),
            ("learning_rate", learning_rate,
             isinstance(learning_rate, int | float) and learning_rate > 0),
            ("gamma", gamma, 0.0 <= gamma <= 1.0),
            ("ent_coef", ent_coef, ent_coef >= 0),
            ("vf_coef", vf_coef, vf_coef >= 0),
            ("max_grad_norm", max_grad_norm, max_grad_norm > 0),
        ):
            if not ok:
                raise ValueError(f"{name} = {value!r} is out of range")
        kwargs = dict(policy_kwargs or {})
        unknown = sorted(set(kwargs) - set(_POLICY_KWARGS))
        if unknown:
            raise ValueError(f"policy_kwargs: unknown key(s) {unknown}; valid: "
                             f"{list(_POLICY_KWARGS)}")
        self.policy_name = policy
        self.env = env
        self.observation_space: spaces.Space = env.observation_space
        self.action_space: spaces.Space = env.action_space
        self.seed = seed
        self.verbose = verbose
        self.tensorboard_log = tensorboard_log
        self.device = torch.device("cpu")
        self.learning_rate = float(learning_rate)
        self.n_steps = int(n_steps)
        self.gamma = float(gamma)
        self.ent_coef = float(ent_coef)
        self.vf_coef = float(vf_coef)
        self.max_grad_norm = float(max_grad_norm)
        self.n_workers = int(n_workers)
        self.env_factory = env_factory
        self.num_timesteps = 0
        #: shared optimizer steps taken so far (over every ``learn``)
        self.n_updates = 0
        self._logger: Any = None
        self._learner: Learner | None = None  # while learn() runs
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the global RNG
            torch.manual_seed(0 if seed is None else int(seed))
            self.policy = ActorCritic(self.observation_space, self.action_space, **kwargs)
        self.policy.share_memory()
        self.optimizer = SharedAdam(self.policy.parameters(), lr=self.learning_rate)
        self.policy.optimizer = self.optimizer  # SB3's name for it ("policy.optimizer")
        self._predict_generator = torch.Generator().manual_seed(
            0 if seed is None else int(seed))
        #: risk gating totals over every learn(): reason -> masked actions, and masked actions
        self.risk_counts: dict[str, int] = {}
        self.masked_actions = 0
        self.ep_info_buffer: deque[dict[str, float]] = deque(maxlen=100)

    # -- SB3 surface ------------------------------------------------------------------------
    @property
    def logger(self) -> Any:
        return self._logger

    def get_env(self) -> Any:
        return self.env

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    def _consistent(self) -> contextlib.AbstractContextManager[Any]:
        lock = self._learner.lock if self._learner is not None else None
        return lock if lock is not None else contextlib.nullcontext()

    def get_parameters(self) -> dict[str, dict[str, Any]]:
        """Copies of the policy's and the shared optimizer's state dicts (taken under the
        workers' lock while training, so weights and optimizer state belong together)."""
        with self._consistent():
            policy = {k: v.detach().clone() for k, v in self.policy.state_dict().items()}
            opt = self.optimizer.state_dict()
            opt = {
                "state": {i: {k: (v.clone() if isinstance(v, torch.Tensor) else v)
                              for k, v in s.items()} for i, s in opt["state"].items()},
                "param_groups": [dict(g) for g in opt["param_groups"]],
            }
        return {"policy": policy, "policy.optimizer": opt}

    def set_parameters(self, load_path_or_dict: dict[str, Any], exact_match: bool = True,
                       device: Any = None) -> None:
        """Load state dicts (``policy`` and, optionally, ``policy.optimizer``) in place: the
        shared tensors stay shared.

        :raises ValueError: ``exact_match`` and a state dict is missing, or an unknown name.
        """
        params = load_path_or_dict
        if not isinstance(params, Mapping):
            raise ValueError("A3C.set_parameters takes a dict of state dicts")
        names = set(self._get_torch_save_params()[0])
        unknown = sorted(set(params) - names)
        if unknown:
            raise ValueError(f"unknown parameter group(s) {unknown}; expected {sorted(names)}")
        if exact_match and set(params) != names:
            raise ValueError(f"missing parameter group(s) {sorted(names - set(params))}")
        with self._consistent():
            if "policy" in params:
                self.policy.load_state_dict(params["policy"])
            if "policy.optimizer" in params:
                self.optimizer.load_state_dict(params["policy.optimizer"])
                for group in self.optimizer.param_groups:
                    self.learning_rate = float(group["lr"])

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, None]:
        """The policy's action for one observation (a ``{"market", "account"}`` dict or a flat
        array) or a batch of them; ``state`` and ``episode_start`` are ignored (no recurrence).
        No risk gating here: the env's risk manager still clamps the resulting target."""
        x, batched = obs_as_tensor(self.observation_space, observation)
        was_training = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad():
                out, _ = self.policy(x)
                action = self.policy.sample(out, self._predict_generator, deterministic)
        finally:
            self.policy.train(was_training)
        if self.policy.discrete:
            actions = action.numpy().astype(np.int64)
        else:
            actions = torch.clamp(action, self.policy.low, self.policy.high).numpy()
        if not batched:
            actions = actions.squeeze(0)
        return actions, None

    # -- learning ---------------------------------------------------------------------------
    def _factory(self) -> EnvFactory:
        factory = self.env_factory or default_env_factory(self.env)
        if factory is None:
            raise ConfigError(
                "A3C needs env_factory= to build its workers' envs: the env it was given "
                f"({type(self.env).__name__}) is not a TradingEnv / VecTradingEnv"
            )
        return factory

    def _worker_specs(self, factory: EnvFactory, start: int) -> list[WorkerSpec]:
        base = 0 if self.seed is None else int(self.seed)
        risk = getattr(getattr(self.env, "config", None), "risk", None)
        specs = []
        for i in range(self.n_workers):
            # a resumed run (start > 0) draws new episodes instead of replaying the first ones
            env_seed, torch_seed = np.random.SeedSequence([base, i, start]).generate_state(2)
            specs.append(WorkerSpec(i, int(env_seed), int(torch_seed), factory, self.n_steps,
                                    self.gamma, self.ent_coef, self.vf_coef,
                                    self.max_grad_norm, risk, os.getpid()))
        return specs

    def learn(self, total_timesteps: int, callback: Any = None,
              reset_num_timesteps: bool = True, tb_log_name: str = "A3C",
              progress_bar: bool = False) -> A3C:
        """Train for ``total_timesteps`` env steps over all workers (exactly: the budget is
        handed out in rollouts of at most ``n_steps``), driving SB3's callback protocol from
        the calling process: ``on_rollout_start`` / ``on_step`` / ``on_rollout_end`` each time
        the shared step count has grown by ``n_steps × n_workers`` (each rollout with one
        worker), with the workers' lock held, so that a checkpoint taken there sees weights,
        optimizer state and step count that belong together. ``on_step`` returning ``False``
        stops the workers. ``progress_bar`` is ignored.

        :raises A3CWorkerError: a worker failed (all workers are stopped first).
        """
        if reset_num_timesteps:
            self.num_timesteps = 0
        start = int(self.num_timesteps)
        target = start + int(total_timesteps)
        factory = self._factory()
        self._logger = configure_logger(self.verbose, self.tensorboard_log, tb_log_name,
                                        reset_num_timesteps)
        cb = _as_callback(callback)
        cb.init_callback(self)  # type: ignore[arg-type]
        cb.on_training_start(locals(), globals())
        learner = Learner(self, cb, target)
        specs = self._worker_specs(factory, start)
        self._learner = learner
        try:
            completed = learner.run(specs)
        finally:
            self._learner = None
        learner.record(final=True)
        if self.risk_counts:
            log.info("A3C risk gating: {} action(s) masked so far ({})", self.masked_actions,
                     ", ".join(f"{k} {v}" for k, v in sorted(self.risk_counts.items())))
        if not completed:
            log.info("A3C stopped by a callback at step {}", self.num_timesteps)
        cb.on_training_end()
        return self


class _NoCallback(BaseCallback):
    def _on_step(self) -> bool:
        return True


def _as_callback(callback: Any) -> BaseCallback:
    if callback is None:
        return _NoCallback()
    if isinstance(callback, list):
        return CallbackList(callback)
    if not isinstance(callback, BaseCallback):
        raise TypeError(f"callback must be a BaseCallback, a list of them or None, "
                        f"not {type(callback).__name__}")
    return callback
