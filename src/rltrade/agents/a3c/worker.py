"""A3C's workers: the state they share with the training process, and the worker loop.

Each worker owns an env (built by the run's env factory), a local copy of the network and its own
random generator. A rollout copies the shared weights, steps the env ``n_steps`` times (sampling
from the risk-gated policy), computes n-step returns, and, under the lock shared by all workers,
hands its gradients to the shared parameters and takes one shared Adam step. With one worker the
loop runs in the training process (:class:`Cell` stands in for the shared counters); with several,
each runs :func:`worker_main` in a ``spawn``-ed process, so everything here is importable and
picklable from this module.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rltrade.agents.a3c.errors import A3CWorkerError
from rltrade.agents.a3c.factories import EnvFactory
from rltrade.agents.a3c.gating import RiskGate, gate_logits
from rltrade.agents.a3c.guards import check_observation, check_reward
from rltrade.agents.a3c.network import ActorCritic, obs_as_tensor, stack_obs
from rltrade.agents.a3c.optim import SharedAdam
from rltrade.errors import ConfigError
from rltrade.sim.risk import RiskConfig

_STATS_EVERY_S = 0.5  # a worker process reports its statistics at most this often


class Cell:
    """A ``multiprocessing.Value`` stand-in for the in-process (one worker) loop."""

    def __init__(self, value: int) -> None:
        self.value = value

    def get_lock(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


class Flag:
    """A stop flag: a shared byte (``RawValue``) read and written without a lock, or a plain
    attribute in-process."""

    def __init__(self, raw: Any = None) -> None:
        self.raw = raw if raw is not None else Cell(0)

    def is_set(self) -> bool:
        return bool(self.raw.value)

    def set(self) -> None:
        self.raw.value = 1


@dataclass
class Shared:
    """What every worker shares: the model, its optimizer, the counters and the channels."""

    policy: ActorCritic
    optimizer: SharedAdam
    lock: Any  # a multiprocessing RLock (None in-process)
    done: Any  # env steps whose updates reached the shared model
    claimed: Any  # env steps handed out to workers (reservations: learn stops exactly)
    n_updates: Any
    target: int
    stop: Flag  # stop now (a lock-free flag: a killed parent cannot leave it locked)
    errors: Any = None  # Queue of A3CWorkerError
    messages: Any = None  # Queue of statistics
    progress: Any = None  # RawArray: each worker's env steps
    cap: Any = None  # RawValue: steps may be claimed up to here (None: up to target)


@dataclass
class WorkerSpec:
    """What one worker is told at its start: its id and seeds, how to build its env, the
    update's hyperparameters, the run's risk config and the training process's id (a worker
    exits when its parent is gone)."""

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


class Stopped(Exception):
    """The run is stopping (stop flag, or the parent process is gone)."""


@dataclass
class Stats:
    """What a worker reports to the training process (summed until taken): finished
    episodes ``(return, length)``, summed losses over its updates, and risk gating counts."""

    worker_id: int
    episodes: list[tuple[float, int]] = field(default_factory=list)
    policy_loss: float = 0.0
    value_loss: float = 0.0
    entropy: float = 0.0
    updates: int = 0
    gated_steps: int = 0
    masked: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def merge(self, other: Stats) -> None:
        self.episodes.extend(other.episodes)
        self.policy_loss += other.policy_loss
        self.value_loss += other.value_loss
        self.entropy += other.entropy
        self.updates += other.updates
        self.gated_steps += other.gated_steps
        self.masked += other.masked
        for k, v in other.reasons.items():
            self.reasons[k] = self.reasons.get(k, 0) + v


class Worker:
    """One worker: its env, its local network, its random generator and its rollouts."""

    def __init__(self, spec: WorkerSpec, shared: Shared) -> None:
        self.spec = spec
        self.shared = shared
        self.steps = 0
        self.stats = Stats(spec.worker_id)
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
        self.gate = RiskGate(self.env, spec.risk_config) if policy.discrete else None
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
            raise Stopped

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
        """``k`` env steps, then one update of the shared model (raises :class:`Stopped` when
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
                raise Stopped
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
        out, values = local(stack_obs(self.space, observations))
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
                raise Stopped
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

    def take_stats(self) -> Stats:
        stats, self.stats = self.stats, Stats(self.spec.worker_id)
        return stats

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.env.close()


def worker_main(spec: WorkerSpec, shared: Shared) -> None:
    """A worker process (``spawn``): rollouts and updates until the step budget is handed out,
    the run stops, or the parent dies. Errors go to the parent as :class:`A3CWorkerError`."""
    torch.set_num_threads(1)
    torch.manual_seed(spec.torch_seed)  # this process's own global RNG (dropout, if any)
    worker: Worker | None = None
    last_report = time.monotonic()
    try:
        worker = Worker(spec, shared)
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
    except Stopped:
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
