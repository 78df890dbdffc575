"""A3C: asynchronous advantage actor-critic (Mnih et al., 2016) on rltrade's environments.

One actor-critic lives in shared memory (``policy.share_memory()``) together with the state of
its Adam optimizer (:class:`SharedAdam`). ``n_workers`` worker processes (``spawn`` start method)
each own an environment built by an ``env_factory`` and a local copy of the network. A worker
repeatedly:

1. copies the shared weights into its local network;
2. steps its env ``n_steps`` times, sampling from the policy (risk-gated, see below);
3. computes n-step returns, bootstrapped from the value of the last state (``0`` when the episode
   terminated, the value of the final observation when it was truncated);
4. computes ``loss = policy loss + vf_coef × value loss − ent_coef × entropy``, backpropagates
   through its local network, clips the gradient norm to ``max_grad_norm``;
5. under a lock shared by all workers, hands its gradients to the shared parameters, takes one
   shared Adam step and adds its steps to the shared step counter.

The optimizer step runs **under a lock**, not Hogwild: Adam's moments and step count are updated
by one worker at a time, so the shared state is never torn (two updates interleaved element by
element) and the step counter always matches the weights. Gradients are still computed
asynchronously on stale weights (the point of A3C); only the few microseconds of the update are
serialized.

:class:`A3C` mimics the part of Stable-Baselines3's ``BaseAlgorithm`` that rltrade's training
code uses (``learn`` with the callback protocol, ``predict``, ``get_parameters`` /
``set_parameters``, ``num_timesteps``...), so a run with ``agent.algorithm: a3c`` gets the same
run directory, metadata, checkpoints, resume and safe weights as the other algorithms.

Determinism: with ``n_workers == 1`` the worker loop runs in the calling process and a seed gives
bit-identical weights. With several workers the order in which updates reach the shared model
depends on the operating system's scheduling, so runs are reproducible in distribution only.

Risk gating: when the env has a risk manager (``env.risk``) and a discrete action scheme, each
action that opens or increases exposure (``discrete3``: short and long; ``discrete6``: enter
long, enter short, scale in) is checked before sampling with
:meth:`~rltrade.sim.risk.RiskManager.check_target` on the target it would produce; an action whose
target would be reduced or blocked gets the logit ``-inf``. Flat / hold / exit are never masked.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import queue as queue_mod
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
from gymnasium import spaces
from loguru import logger
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.torch_layers import (
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
)
from stable_baselines3.common.utils import configure_logger
from torch import nn

from rltrade.envs import kernels as EK
from rltrade.envs.config import EnvConfig
from rltrade.envs.core import EnvCore
from rltrade.errors import ConfigError, RLTradeError
from rltrade.features.dataset import Dataset
from rltrade.features.normalize import Normalizer
from rltrade.sim.risk import Decision, RiskConfig, RiskManager, RiskState

__all__ = [
    "A3C",
    "GATED_ACTIONS",
    "A3CWorkerError",
    "ActorCritic",
    "SharedAdam",
    "action_targets",
    "gate_logits",
    "risk_gate",
    "risk_state",
    "trading_env_factory",
]

log = logger.bind(component="train")

#: the env factory: ``(worker_id, seed, mode="train", engine_mode=None) -> gymnasium.Env``
EnvFactory = Callable[..., gym.Env]

#: discrete actions that open or increase exposure, per action scheme: the ones risk-gated
GATED_ACTIONS: dict[str, tuple[int, ...]] = {
    "discrete3": (0, 2),  # short, long (1 = flat is never gated)
    "discrete6": (EK.ENTER_LONG, EK.ENTER_SHORT, EK.SCALE_IN),
}
_POLICY_KWARGS = ("net_arch", "activation_fn", "features_extractor_class",
                  "features_extractor_kwargs", "log_std_init", "ortho_init")
_LOG_EVERY_ROLLOUTS = 100  # SB3 logger dumps (tensorboard) every this many callback ticks
_STATS_EVERY_S = 0.5  # a worker process reports its statistics at most this often
_POLL_S = 0.005  # the main process looks at the step counter this often
_SLACK_CHUNKS = 2  # workers may run this many chunks past the next callback


class A3CWorkerError(RLTradeError):
    """An A3C worker failed: a malformed env return (NaN reward, wrong observation shape) or an
    exception in its env or network. Names the worker and its env step (1-based, counted from
    the start of ``learn``; step 0 is the first reset).

    :param worker_id: the worker's index.
    :param step: the worker's env step at which it failed.
    :param problem: what went wrong.
    :param worker_traceback: the worker's traceback (text), when it ran in another process.
    """

    def __init__(self, worker_id: int, step: int, problem: str,
                 worker_traceback: str | None = None) -> None:
        self.worker_id = int(worker_id)
        self.step = int(step)
        self.problem = problem
        self.worker_traceback = worker_traceback
        super().__init__(f"A3C worker {self.worker_id}, step {self.step}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:  # keeps every field across processes
        return (type(self), (self.worker_id, self.step, self.problem, self.worker_traceback))


# -- the shared optimizer -----------------------------------------------------------------------
class SharedAdam(torch.optim.Adam):
    """Adam whose state (``step``, ``exp_avg``, ``exp_avg_sq`` per parameter) is created at
    construction and placed in shared memory, so that every worker process updates the same
    moments. Loading a state dict keeps it shared.
    """

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         foreach=False)
        self._fill_state()
        self.share_memory()

    def _fill_state(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if "step" not in state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if "exp_avg_sq" not in state:
                    state["exp_avg_sq"] = torch.zeros_like(p,
                                                           memory_format=torch.preserve_format)

    def share_memory(self) -> SharedAdam:
        """Move every state tensor into shared memory (in place)."""
        for state in self.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    value.share_memory_()
        return self

    def is_shared(self) -> bool:
        """Whether every state tensor is in shared memory."""
        return all(v.is_shared() for s in self.state.values() for v in s.values()
                   if isinstance(v, torch.Tensor))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._fill_state()
        self.share_memory()


# -- the network ----------------------------------------------------------------------------------
class ActorCritic(nn.Module):
    """Actor-critic network with Stable-Baselines3's layout: a features extractor (``flatten``:
    SB3's ``CombinedExtractor`` / ``FlattenExtractor``, or ``features_extractor_class`` such as
    :class:`~rltrade.agents.encoders.CnnLstmAttention`), separate policy and value MLPs
    (``net_arch``, SB3's ``MlpExtractor``), a categorical head (``Discrete``) or a diagonal
    Gaussian head with a state-independent ``log_std`` (``Box``; samples clipped into the box).

    ``forward(obs)`` returns ``(logits or mean [B, n], value [B])``.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space,
                 net_arch: list[int] | dict[str, list[int]] | None = None,
                 activation_fn: type[nn.Module] = nn.Tanh,
                 features_extractor_class: type[nn.Module] | None = None,
                 features_extractor_kwargs: dict[str, Any] | None = None,
                 log_std_init: float = 0.0, ortho_init: bool = True) -> None:
        super().__init__()
        #: the constructor's arguments: a worker builds its local copy from them
        self.spec: dict[str, Any] = {
            "observation_space": observation_space, "action_space": action_space,
            "net_arch": net_arch, "activation_fn": activation_fn,
            "features_extractor_class": features_extractor_class,
            "features_extractor_kwargs": features_extractor_kwargs,
            "log_std_init": log_std_init, "ortho_init": ortho_init,
        }
        self.observation_space = observation_space
        self.action_space = action_space
        if features_extractor_class is None:
            features_extractor_class = (CombinedExtractor
                                        if isinstance(observation_space, spaces.Dict)
                                        else FlattenExtractor)
        self.features_extractor = features_extractor_class(observation_space,
                                                           **(features_extractor_kwargs or {}))
        arch = [64, 64] if net_arch is None else net_arch
        self.mlp_extractor = MlpExtractor(int(self.features_extractor.features_dim), arch,
                                          activation_fn, device="cpu")
        pi_dim, vf_dim = self.mlp_extractor.latent_dim_pi, self.mlp_extractor.latent_dim_vf
        if isinstance(action_space, spaces.Discrete):
            self.discrete = True
            self.action_net = nn.Linear(pi_dim, int(action_space.n))
        elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            self.discrete = False
            dim = int(action_space.shape[0])
            self.action_net = nn.Linear(pi_dim, dim)
            self.log_std = nn.Parameter(torch.full((dim,), float(log_std_init)))
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high,
                                                         dtype=torch.float32))
        else:
            raise ConfigError(f"A3C supports Discrete and 1-d Box action spaces, not "
                              f"{action_space}")
        self.value_net = nn.Linear(vf_dim, 1)
        if ortho_init:  # Stable-Baselines3's initialisation (gains as in its ActorCriticPolicy)
            parts: list[tuple[nn.Module, float]] = [
                (self.mlp_extractor, math.sqrt(2)), (self.action_net, 0.01),
                (self.value_net, 1.0)]  # a custom encoder keeps its own initialisation
            for module, gain in parts:
                for m in module.modules():
                    if isinstance(m, nn.Linear | nn.Conv2d):
                        nn.init.orthogonal_(m.weight, gain=gain)
                        if m.bias is not None:
                            m.bias.data.fill_(0.0)

    def forward(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features_extractor(obs)
        latent_pi, latent_vf = self.mlp_extractor(features)
        return self.action_net(latent_pi), self.value_net(latent_vf).squeeze(-1)

    def value(self, obs: Any) -> torch.Tensor:
        features = self.features_extractor(obs)
        return self.value_net(self.mlp_extractor.forward_critic(features)).squeeze(-1)

    def clone_local(self) -> ActorCritic:
        """A private (not shared) copy with the same architecture and weights."""
        local = ActorCritic(**self.spec)
        local.load_state_dict(self.state_dict())
        return local

    # distributions ------------------------------------------------------------------------
    def sample(self, out: torch.Tensor, generator: torch.Generator | None,
               deterministic: bool = False) -> torch.Tensor:
        """Actions from the head's output (masked logits, or the Gaussian mean); no gradient."""
        with torch.no_grad():
            return self._sample(out.detach(), generator, deterministic)

    def _sample(self, out: torch.Tensor, generator: torch.Generator | None,
                deterministic: bool) -> torch.Tensor:
        if self.discrete:
            if deterministic:
                return out.argmax(-1)
            probs = torch.softmax(out, -1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        if deterministic:
            return out
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype)
        return out + self.log_std.exp() * noise

    def log_prob_entropy(self, out: torch.Tensor,
                         actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of ``actions`` and the entropies, per sample. Masked (``-inf``)
        logits are clamped to the smallest float, so they get probability 0 without NaNs."""
        if self.discrete:
            logits = out.clamp(min=torch.finfo(out.dtype).min)
            logp_all = torch.log_softmax(logits, -1)
            logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
            return logp, entropy
        std = self.log_std.exp().expand_as(out)
        dist = torch.distributions.Normal(out, std)
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)

    def env_action(self, action: torch.Tensor) -> Any:
        """The env's action for one sampled action: an ``int`` or a float32 array clipped
        into the box."""
        if self.discrete:
            return int(action.item())
        return torch.clamp(action, self.low, self.high).numpy().astype(np.float32)


def obs_as_tensor(space: spaces.Space, obs: Any) -> tuple[Any, bool]:
    """``(tensor(s) with a batch axis, batched)`` of one observation or a batch of them."""
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, Mapping):
            raise ValueError(f"expected a dict observation with keys {sorted(space.spaces)}, "
                             f"got {type(obs).__name__}")
        out: dict[str, torch.Tensor] = {}
        batched: bool | None = None
        for key, sub in space.spaces.items():
            arr = np.asarray(obs[key], dtype=np.float32)
            if arr.shape == sub.shape:
                b = False
                arr = arr[None]
            elif arr.shape[1:] == sub.shape:
                b = True
            else:
                raise ValueError(f"observation[{key!r}] has shape {arr.shape}, expected "
                                 f"{sub.shape} or a batch of it")
            if batched is not None and b != batched:
                raise ValueError("observation: some keys are batched and some are not")
            batched = b
            out[key] = torch.as_tensor(arr)
        return out, bool(batched)
    arr = np.asarray(obs, dtype=np.float32)
    if arr.shape == space.shape:
        return torch.as_tensor(arr[None]), False
    if arr.shape[1:] == space.shape:
        return torch.as_tensor(arr), True
    raise ValueError(f"observation has shape {arr.shape}, expected {space.shape} or a batch")


def _stack_obs(space: spaces.Space, observations: list[Any]) -> Any:
    if isinstance(space, spaces.Dict):
        return {k: torch.as_tensor(np.stack([o[k] for o in observations]).astype(np.float32))
                for k in space.spaces}
    return torch.as_tensor(np.stack(observations).astype(np.float32))


# -- guards ---------------------------------------------------------------------------------------
def check_reward(reward: Any) -> str | None:
    """What is wrong with a reward (``None``: a finite real number)."""
    try:
        value = float(reward)
    except (TypeError, ValueError):
        return f"reward is not a number ({type(reward).__name__}: {reward!r})"
    if np.ndim(reward) != 0:
        return f"reward has shape {np.shape(reward)}, expected a scalar"
    if not math.isfinite(value):
        return f"reward is {value} (expected a finite number): check the env's reward"
    return None


def check_observation(space: spaces.Space, obs: Any) -> str | None:
    """What is wrong with an observation (``None``: it fits the space's shape and dtype and
    holds only finite values)."""
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, Mapping):
            return f"observation is a {type(obs).__name__}, expected a dict"
        if set(obs) != set(space.spaces):
            return f"observation keys {sorted(obs)} differ from {sorted(space.spaces)}"
        for key, sub in space.spaces.items():
            problem = _check_array(sub, obs[key], f"observation[{key!r}]")
            if problem:
                return problem
        return None
    return _check_array(space, obs, "observation")


def _check_array(space: spaces.Space, value: Any, name: str) -> str | None:
    if not isinstance(value, np.ndarray):
        return f"{name} is a {type(value).__name__}, expected a numpy array"
    if value.shape != space.shape:
        return f"{name} has shape {value.shape}, expected {space.shape}"
    if value.dtype != space.dtype:
        return f"{name} has dtype {value.dtype}, expected {space.dtype}"
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        bad = np.argwhere(~np.isfinite(value))[0].tolist()
        return f"{name} holds a non-finite value ({value[tuple(bad)]} at {bad})"
    return None


# -- risk gating --------------------------------------------------------------------------------
def risk_state(core: EnvCore, i: int = 0) -> RiskState:
    """The :class:`RiskState` of env ``i`` at its current bar, as the env checks targets."""
    return core.risk_state(i)


def action_targets(core: EnvCore, i: int = 0) -> np.ndarray:
    """The target position (units) each discrete action would ask for in env ``i`` now,
    computed by the env's own kernel on copies (nothing in the env changes)."""
    scheme = core.config.action_scheme
    if scheme not in GATED_ACTIONS:
        raise ConfigError(f"action_targets: the action scheme {scheme} is not discrete")
    n = 3 if scheme == "discrete3" else 6
    st = np.ascontiguousarray(core._st[i : i + 1])
    env = core.env[i : i + 1].copy()  # the kernel counts invalid actions in it
    out = np.empty(n)
    target, sl, tp = np.zeros(1), np.zeros(1), np.zeros(1)
    act = np.zeros((1, 2))
    for a in range(n):
        act[0, 0] = a
        EK.compute_targets(st, core._mkt, core.atr, env, act, core.scheme, core.params,
                           target, sl, tp)
        out[a] = target[0]
    return out


def _probe(manager: RiskManager, state: RiskState, target: float) -> Decision:
    """``manager.check_target`` without leaving a record: a probe of a hypothetical action must
    not count as an intervention (the env records the real one when it steps)."""
    n_records = len(manager.interventions)
    counts = dict(manager._counts)
    try:
        return manager.check_target(state, target)
    finally:
        del manager.interventions[n_records:]
        manager._counts = counts


def risk_gate(core: EnvCore, manager: RiskManager,
              i: int = 0) -> tuple[np.ndarray, dict[int, tuple[str, ...]]]:
    """Which discrete actions the risk manager lets through in env ``i`` now.

    Every action of :data:`GATED_ACTIONS` (those opening or increasing exposure) is checked
    with ``manager.check_target`` on the target it would produce; it is disallowed when the
    manager would reduce or block that target. Flat / hold / exit / scale-out stay allowed.

    :return: ``(allowed bool [n_actions], {action: reasons})`` for the disallowed actions.
    """
    scheme = core.config.action_scheme
    n = 3 if scheme == "discrete3" else 6
    allowed = np.ones(n, dtype=bool)
    reasons: dict[int, tuple[str, ...]] = {}
    if core.env[i, EK.E_DONE] != 0.0:
        return allowed, reasons
    state = risk_state(core, i)
    targets = action_targets(core, i)
    for a in GATED_ACTIONS[scheme]:
        target = float(targets[a])
        if target != target:
            continue
        decision = _probe(manager, state, target)
        if decision.target != target:
            allowed[a] = False
            reasons[a] = decision.reasons
    return allowed, reasons


def gate_logits(logits: torch.Tensor, allowed: np.ndarray) -> torch.Tensor:
    """``logits`` (``[..., n]``) with the disallowed actions set to ``-inf``."""
    if allowed.all():
        return logits
    if not allowed.any():  # never happens with GATED_ACTIONS; guard anyway
        raise RLTradeError("risk gating would mask every action")
    mask = torch.as_tensor(~allowed)
    return logits.masked_fill(mask, float("-inf"))


class _Gate:
    """The risk gate of one worker's env: its core and risk manager (the env's own, or one
    built from the run's risk config and reset with the env)."""

    def __init__(self, env: gym.Env, risk_config: RiskConfig | None) -> None:
        self.core: EnvCore | None = None
        self.manager: RiskManager | None = None
        self.own = False
        core = getattr(env.unwrapped, "core", None)
        if not isinstance(core, EnvCore) or core.config.action_scheme not in GATED_ACTIONS:
            return
        if core.risk is not None:
            self.core, self.manager = core, core.risk[0]
        elif risk_config is not None:
            self.core, self.manager = core, RiskManager(risk_config, keep_records=False)
            self.own = True

    @property
    def active(self) -> bool:
        return self.manager is not None

    def reset(self) -> None:
        if self.own and self.manager is not None:
            self.manager.reset()

    def __call__(self) -> tuple[np.ndarray, dict[int, tuple[str, ...]]]:
        assert self.core is not None and self.manager is not None
        return risk_gate(self.core, self.manager, 0)


# -- environments ---------------------------------------------------------------------------------
def trading_env_factory(dataset: Dataset, config: EnvConfig, normalizer: Normalizer | None,
                        worker_id: int, seed: int, mode: str = "train",
                        engine_mode: str | None = None) -> gym.Env:
    """The default env factory: a :class:`~rltrade.envs.TradingEnv` on ``dataset`` with the env
    mode (``train`` / ``eval``) and engine mode (``retail`` / ``ideal``, ``None`` = the
    config's) chosen at call time. Bind the first three arguments with ``functools.partial``
    (picklable, as the ``spawn`` start method needs)."""
    from rltrade.envs.trading_env import TradingEnv

    update: dict[str, Any] = {"mode": mode}
    if engine_mode is not None:
        update["engine"] = config.engine.model_copy(update={"mode": engine_mode})
    return TradingEnv(dataset, config.model_copy(update=update), normalizer=normalizer)


def default_env_factory(env: Any) -> EnvFactory | None:
    """``trading_env_factory`` bound to the data, config and normalizer of a training env
    (``VecTradingEnv``, a ``DummyVecEnv`` of ``TradingEnv``, or a ``TradingEnv``); ``None``
    when ``env`` is none of them."""
    core = getattr(env, "core", None)
    if core is None and hasattr(env, "envs") and env.envs:
        core = getattr(env.envs[0].unwrapped, "core", None)
    if core is None and isinstance(env, gym.Env):
        core = getattr(env.unwrapped, "core", None)
    if not isinstance(core, EnvCore):
        return None
    return functools.partial(trading_env_factory, core.dataset, core.config, core.normalizer)


# -- shared state and workers ---------------------------------------------------------------------
class _Cell:
    """A ``multiprocessing.Value`` stand-in for the in-process (one worker) loop."""

    def __init__(self, value: int) -> None:
        self.value = value

    def get_lock(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


@dataclass
class _Shared:
    """What every worker shares: the model, its optimizer, the counters and the channels."""

    policy: ActorCritic
    optimizer: SharedAdam
    lock: Any  # a multiprocessing RLock (None in-process)
    done: Any  # env steps whose updates reached the shared model
    claimed: Any  # env steps handed out to workers (reservations: learn stops exactly)
    n_updates: Any
    target: int
    stop: _Flag  # stop now (a lock-free flag: a killed parent cannot leave it locked)
    errors: Any = None  # Queue of A3CWorkerError
    messages: Any = None  # Queue of statistics
    progress: Any = None  # RawArray: each worker's env steps
    cap: Any = None  # RawValue: steps may be claimed up to here (None: up to target)


@dataclass
class _WorkerSpec:
    worker_id: int
    env_seed: int
    torch_seed: int
    env_factory: EnvFactory
    n_steps: int
    gamma: float
    ent_coef: float
    vf_coef: float
    max_grad_norm: float
    risk_config: RiskConfig | None
    parent_pid: int


class _Stopped(Exception):
    """The run is stopping (stop flag, or the parent process is gone)."""


@dataclass
class _Stats:
    worker_id: int
    episodes: list[tuple[float, int]] = field(default_factory=list)
    policy_loss: float = 0.0
    value_loss: float = 0.0
    entropy: float = 0.0
    updates: int = 0
    gated_steps: int = 0
    masked: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def merge(self, other: _Stats) -> None:
        self.episodes.extend(other.episodes)
        self.policy_loss += other.policy_loss
        self.value_loss += other.value_loss
        self.entropy += other.entropy
        self.updates += other.updates
        self.gated_steps += other.gated_steps
        self.masked += other.masked
        for k, v in other.reasons.items():
            self.reasons[k] = self.reasons.get(k, 0) + v


class _Worker:
    """One worker: its env, its local network, its random generator and its rollouts."""

    def __init__(self, spec: _WorkerSpec, shared: _Shared) -> None:
        self.spec = spec
        self.shared = shared
        self.steps = 0
        self.stats = _Stats(spec.worker_id)
        self.env = spec.env_factory(spec.worker_id, spec.env_seed, mode="train",
                                    engine_mode=None)
        policy = shared.policy
        if self.env.observation_space != policy.observation_space or (
                self.env.action_space != policy.action_space):
            raise ConfigError(
                f"env_factory built an env with spaces {self.env.observation_space} / "
                f"{self.env.action_space}, but the model has {policy.observation_space} / "
                f"{policy.action_space}"
            )
        self.space = policy.observation_space
        self.local = policy.clone_local()
        self.local.train()
        self.generator = torch.Generator().manual_seed(spec.torch_seed)
        self.gate = _Gate(self.env, spec.risk_config) if policy.discrete else None
        self.obs: Any = None
        self.episode_return = 0.0
        self.episode_length = 0

    def fail(self, problem: str) -> A3CWorkerError:
        return A3CWorkerError(self.spec.worker_id, self.steps, problem)

    def reset(self, first: bool = False) -> None:
        obs, _ = self.env.reset(seed=self.spec.env_seed if first else None)
        problem = check_observation(self.space, obs)
        if problem:
            raise self.fail(f"{problem} (returned by reset)")
        if self.gate is not None:
            self.gate.reset()
        self.obs = obs
        self.episode_return, self.episode_length = 0.0, 0

    # locking ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        lock = self.shared.lock
        if lock is None:
            yield
            return
        while not lock.acquire(timeout=1.0):
            self.check_alive()
        try:
            yield
        finally:
            lock.release()

    def check_alive(self) -> None:
        if self.shared.stop.is_set() or os.getppid() != self.spec.parent_pid:
            raise _Stopped

    def claim(self) -> int:
        """Reserve the steps of the next rollout: ``n_steps`` (fewer only for the last one of
        the budget); ``0`` when the budget is handed out. With several workers, claims wait
        while they would pass ``cap`` (set by the main process, one chunk past the next
        callback), so that callbacks keep pace with training."""
        shared, n = self.shared, self.spec.n_steps
        while True:
            with shared.claimed.get_lock():
                left = shared.target - shared.claimed.value
                if left <= 0:
                    return 0
                k = min(n, left)
                if shared.cap is None or shared.claimed.value + k <= shared.cap.value:
                    shared.claimed.value += k
                    return k
            self.check_alive()
            time.sleep(0.002)  # the main process is running callbacks: wait for it

    # one rollout and update -------------------------------------------------------------------
    def rollout(self, k: int) -> None:
        """``k`` env steps, then one update of the shared model (raises :class:`_Stopped` when
        the run stops meanwhile: the partial rollout is dropped)."""
        spec, local = self.spec, self.local
        with self.locked():
            local.load_state_dict(self.shared.policy.state_dict())
        observations: list[Any] = []
        actions: list[torch.Tensor] = []
        masks: list[np.ndarray | None] = []
        rewards = np.zeros(k)
        terminated = np.zeros(k, dtype=bool)
        truncated = np.zeros(k, dtype=bool)
        boot = np.zeros(k)
        for t in range(k):
            if self.shared.stop.is_set():
                raise _Stopped
            x, _ = obs_as_tensor(self.space, self.obs)
            with torch.no_grad():
                out, _ = local(x)
            allowed = None
            if self.gate is not None and self.gate.active:
                allowed, reasons = self.gate()
                self.stats.gated_steps += 1
                if reasons:
                    out = gate_logits(out, allowed)
                    self.stats.masked += len(reasons)
                    for why in reasons.values():
                        for r in why:
                            self.stats.reasons[r] = self.stats.reasons.get(r, 0) + 1
                else:
                    allowed = None
            action = local.sample(out, self.generator)[0]
            obs2, reward, term, trunc, _ = self.env.step(local.env_action(action))
            self.steps += 1
            if self.shared.progress is not None:
                self.shared.progress[spec.worker_id] = self.steps
            problem = check_reward(reward) or check_observation(self.space, obs2)
            if problem:
                raise self.fail(problem)
            observations.append(self.obs)
            actions.append(action)
            masks.append(allowed)
            rewards[t] = float(reward)
            terminated[t], truncated[t] = bool(term), bool(trunc) and not bool(term)
            self.episode_return += float(reward)
            self.episode_length += 1
            if term or trunc:
                if truncated[t]:
                    with torch.no_grad():
                        boot[t] = float(local.value(obs_as_tensor(self.space, obs2)[0])[0])
                self.stats.episodes.append((self.episode_return, self.episode_length))
                self.reset()
            else:
                self.obs = obs2
        last = 0.0
        if not (terminated[-1] or truncated[-1]):
            with torch.no_grad():
                last = float(local.value(obs_as_tensor(self.space, self.obs)[0])[0])
        returns = np.zeros(k)
        running = last
        for t in range(k - 1, -1, -1):
            if terminated[t]:
                running = rewards[t]
            elif truncated[t]:
                running = rewards[t] + spec.gamma * boot[t]
            else:
                running = rewards[t] + spec.gamma * running
            returns[t] = running
        self.update(observations, actions, masks, returns)

    def update(self, observations: list[Any], actions: list[torch.Tensor],
               masks: list[np.ndarray | None], returns: np.ndarray) -> None:
        spec, local = self.spec, self.local
        out, values = local(_stack_obs(self.space, observations))
        if any(m is not None for m in masks):
            allowed = np.stack([np.ones(out.shape[-1], dtype=bool) if m is None else m
                                for m in masks])
            out = gate_logits(out, allowed)
        logp, entropy = local.log_prob_entropy(out, torch.stack(actions))
        ret = torch.as_tensor(returns, dtype=values.dtype)
        advantage = (ret - values).detach()
        policy_loss = -(logp * advantage).mean()
        value_loss = torch.nn.functional.mse_loss(values, ret)
        entropy_mean = entropy.mean()
        loss = policy_loss + spec.vf_coef * value_loss - spec.ent_coef * entropy_mean
        local.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(local.parameters(), spec.max_grad_norm)
        shared = self.shared
        with self.locked():
            if shared.stop.is_set():
                raise _Stopped
            for sp, lp in zip(shared.policy.parameters(), local.parameters(), strict=True):
                sp.grad = lp.grad
            shared.optimizer.step()
            for sp in shared.policy.parameters():
                sp.grad = None
            shared.done.value += len(returns)
            shared.n_updates.value += 1
        st = self.stats
        st.policy_loss += float(policy_loss.detach())
        st.value_loss += float(value_loss.detach())
        st.entropy += float(entropy_mean.detach())
        st.updates += 1

    def take_stats(self) -> _Stats:
        stats, self.stats = self.stats, _Stats(self.spec.worker_id)
        return stats

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.env.close()


def _worker_main(spec: _WorkerSpec, shared: _Shared) -> None:
    """A worker process (``spawn``): rollouts and updates until the step budget is handed out,
    the run stops, or the parent dies. Errors go to the parent as :class:`A3CWorkerError`."""
    torch.set_num_threads(1)
    torch.manual_seed(spec.torch_seed)  # this process's own global RNG (dropout, if any)
    worker: _Worker | None = None
    last_report = time.monotonic()
    try:
        worker = _Worker(spec, shared)
        worker.reset(first=True)
        while True:
            worker.check_alive()
            k = worker.claim()
            if k == 0:
                break
            worker.rollout(k)
            if time.monotonic() - last_report >= _STATS_EVERY_S:
                shared.messages.put(worker.take_stats())
                last_report = time.monotonic()
    except _Stopped:
        pass
    except BaseException as exc:  # report every failure to the parent, then stop all
        step = worker.steps if worker is not None else 0
        err = exc if isinstance(exc, A3CWorkerError) else A3CWorkerError(
            spec.worker_id, step, f"{type(exc).__name__}: {exc}")
        err.worker_traceback = traceback.format_exc()
        shared.errors.put(err)
        shared.stop.set()
    finally:
        if worker is not None:
            with contextlib.suppress(Exception):
                shared.messages.put(worker.take_stats())
            worker.close()


# -- the algorithm ------------------------------------------------------------------------------
class A3C:
    """Asynchronous advantage actor-critic with Stable-Baselines3's interface (see the module
    docstring for the algorithm, the lock, determinism and risk gating).

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
        self._n_updates = 0
        self._logger: Any = None
        self._lock: Any = None  # the workers' lock while learn() runs
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
        return self._lock if self._lock is not None else contextlib.nullcontext()

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

    def _worker_specs(self, factory: EnvFactory, start: int) -> list[_WorkerSpec]:
        base = 0 if self.seed is None else int(self.seed)
        risk = getattr(getattr(self.env, "config", None), "risk", None)
        specs = []
        for i in range(self.n_workers):
            # a resumed run (start > 0) draws new episodes instead of replaying the first ones
            env_seed, torch_seed = np.random.SeedSequence([base, i, start]).generate_state(2)
            specs.append(_WorkerSpec(i, int(env_seed), int(torch_seed), factory, self.n_steps,
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
        self._t0, self._start, self._ticks = time.perf_counter(), start, 0
        self._stats = _Stats(-1)
        self._last_log = 0.0
        specs = self._worker_specs(factory, start)
        if self.n_workers == 1:
            completed = self._learn_in_process(specs[0], target, cb)
        else:
            completed = self._learn_workers(specs, target, cb)
        self._record(final=True)
        if self.risk_counts:
            log.info("A3C risk gating: {} action(s) masked so far ({})", self.masked_actions,
                     ", ".join(f"{k} {v}" for k, v in sorted(self.risk_counts.items())))
        if not completed:
            log.info("A3C stopped by a callback at step {}", self.num_timesteps)
        cb.on_training_end()
        return self

    def _learn_in_process(self, spec: _WorkerSpec, target: int, cb: BaseCallback) -> bool:
        shared = _Shared(self.policy, self.optimizer, None, _Cell(self.num_timesteps),
                         _Cell(self.num_timesteps), _Cell(self._n_updates), target,
                         _Flag())
        worker: _Worker | None = None

        def guarded(fn: Callable[[], Any]) -> Any:
            """Run worker code; its failures become A3CWorkerError (not the callbacks')."""
            try:
                return fn()
            except (A3CWorkerError, ConfigError):
                raise
            except Exception as exc:
                step = worker.steps if worker is not None else 0
                raise A3CWorkerError(spec.worker_id, step,
                                     f"{type(exc).__name__}: {exc}") from exc

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.torch_seed)
            try:
                worker = guarded(lambda: _Worker(spec, shared))
                guarded(lambda: worker.reset(first=True))
                while True:
                    k = worker.claim()
                    if k == 0:
                        return True
                    self.num_timesteps = shared.done.value
                    cb.on_rollout_start()
                    guarded(lambda k=k: worker.rollout(k))
                    self.num_timesteps = shared.done.value
                    self._n_updates = shared.n_updates.value
                    self._consume(worker.take_stats())
                    self._ticks += 1
                    if not cb.on_step():
                        return False
                    cb.on_rollout_end()
                    self._record()
            finally:
                if worker is not None:
                    worker.close()

    def _learn_workers(self, specs: list[_WorkerSpec], target: int, cb: BaseCallback) -> bool:
        ctx = mp.get_context("spawn")
        start = int(self.num_timesteps)
        shared = _Shared(
            self.policy, self.optimizer, ctx.RLock(), ctx.RawValue("q", start),
            ctx.Value("q", start), ctx.RawValue("q", self._n_updates), target,
            _Flag(ctx.RawValue("b", 0)), ctx.Queue(), ctx.Queue(),
            ctx.RawArray("q", len(specs)), ctx.RawValue("q", start),
        )
        chunk = self.n_steps * self.n_workers

        def open_until(cap: int) -> None:
            shared.cap.value = cap

        procs = [ctx.Process(target=_worker_main, args=(spec, shared), daemon=True,
                             name=f"rltrade-a3c-worker-{spec.worker_id}") for spec in specs]
        self._lock = shared.lock
        completed = False
        try:
            for p in procs:  # nothing can be claimed yet: all start together
                p.start()
            with self._hold(shared, procs):
                cb.on_rollout_start()
            next_tick = start + chunk
            open_until(next_tick + _SLACK_CHUNKS * chunk)
            while True:
                time.sleep(_POLL_S)
                self._drain(shared)
                self._raise_errors(shared, procs)
                finished = not any(p.is_alive() for p in procs)
                if shared.done.value >= next_tick or finished:
                    with self._hold(shared, procs):
                        self.num_timesteps = int(shared.done.value)
                        self._n_updates = int(shared.n_updates.value)
                        self._ticks += 1
                        if not finished:
                            cb.on_rollout_start()
                        go_on = cb.on_step()
                        cb.on_rollout_end()
                        self._record()
                    while next_tick <= self.num_timesteps:
                        next_tick += chunk
                    if not go_on:
                        shared.stop.set()
                        open_until(start)
                        break
                    open_until(next_tick + _SLACK_CHUNKS * chunk)
                if finished:
                    self._drain(shared)
                    self._raise_errors(shared, procs)
                    completed = True
                    break
        finally:
            shared.stop.set()
            self._shutdown(shared, procs)
            self._lock = None
            self.num_timesteps = int(shared.done.value)
            self._n_updates = int(shared.n_updates.value)
        if completed and self.num_timesteps != target:
            raise A3CWorkerError(-1, self.num_timesteps,
                                 f"workers stopped at {self.num_timesteps} of {target} steps")
        return completed

    @contextlib.contextmanager
    def _hold(self, shared: _Shared, procs: list[Any]) -> Iterator[None]:
        """The workers' lock, checking for dead workers while waiting for it."""
        while not shared.lock.acquire(timeout=1.0):
            self._raise_errors(shared, procs)
        try:
            yield
        finally:
            shared.lock.release()

    def _raise_errors(self, shared: _Shared, procs: list[Any]) -> None:
        try:
            err = shared.errors.get_nowait()
        except queue_mod.Empty:
            err = None
        if err is not None:
            shared.stop.set()
            log.error("A3C worker {} failed at step {}: {}\n{}", err.worker_id, err.step,
                      err.problem, err.worker_traceback or "")
            raise err
        for i, p in enumerate(procs):
            if p.exitcode not in (None, 0):
                shared.stop.set()
                raise A3CWorkerError(i, int(shared.progress[i]),
                                     f"the worker process died (exit code {p.exitcode})")

    def _drain(self, shared: _Shared) -> None:
        while True:
            try:
                self._consume(shared.messages.get_nowait())
            except queue_mod.Empty:
                return

    def _shutdown(self, shared: _Shared, procs: list[Any]) -> None:
        """Wait for the workers to exit (they see the stop flag), terminate stragglers."""
        deadline = time.monotonic() + 10.0
        for p in procs:
            while p.is_alive() and time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    self._drain(shared)  # keep the queue flowing, or a worker cannot exit
                p.join(timeout=0.05)
        with contextlib.suppress(Exception):
            self._drain(shared)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5.0)
        for q in (shared.messages, shared.errors):
            q.close()
            q.join_thread()

    # -- statistics and logging ---------------------------------------------------------------
    def _consume(self, stats: _Stats) -> None:
        self._stats.merge(stats)
        for ret, length in stats.episodes:
            self.ep_info_buffer.append({"r": ret, "l": length})
        if stats.masked:
            self.masked_actions += stats.masked
            new = sorted(set(stats.reasons) - set(self.risk_counts))
            for k, v in stats.reasons.items():
                self.risk_counts[k] = self.risk_counts.get(k, 0) + v
            if new:
                log.info("A3C risk gating (worker {}): actions masked for {}",
                         stats.worker_id, ", ".join(new))
            now = time.perf_counter()
            if now - self._last_log >= 1.0:
                self._last_log = now
                log.debug("A3C risk gating (worker {}): {} action(s) masked over {} step(s): {}",
                          stats.worker_id, stats.masked, stats.gated_steps,
                          ", ".join(f"{k} {v}" for k, v in sorted(stats.reasons.items())))

    def _record(self, final: bool = False) -> None:
        if self._logger is None or not (final or self._ticks % _LOG_EVERY_ROLLOUTS == 0):
            return
        st = self._stats
        lg = self._logger
        if self.ep_info_buffer:
            lg.record("rollout/ep_rew_mean",
                      float(np.mean([e["r"] for e in self.ep_info_buffer])))
            lg.record("rollout/ep_len_mean",
                      float(np.mean([e["l"] for e in self.ep_info_buffer])))
        if st.updates:
            lg.record("train/policy_loss", st.policy_loss / st.updates)
            lg.record("train/value_loss", st.value_loss / st.updates)
            lg.record("train/entropy_loss", -st.entropy / st.updates)
        lg.record("train/n_updates", self._n_updates)
        lg.record("train/risk_masked_actions", self.masked_actions)
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        lg.record("time/fps", int((self.num_timesteps - self._start) / elapsed))
        lg.record("time/total_timesteps", self.num_timesteps)
        lg.dump(step=self.num_timesteps)
        self._stats = _Stats(-1)


class _Flag:
    """A stop flag: a shared byte (``RawValue``) read and written without a lock, or a plain
    attribute in-process."""

    def __init__(self, raw: Any = None) -> None:
        self.raw = raw if raw is not None else _Cell(0)

    def is_set(self) -> bool:
        return bool(self.raw.value)

    def set(self) -> None:
        self.raw.value = 1


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
