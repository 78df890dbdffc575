"""One ``A3C.learn`` call, seen from the training process: drive the workers and the callbacks.

With one worker the worker loop runs here, between callbacks (bit-deterministic). With several,
:class:`Learner` starts them as ``spawn``-ed processes sharing the model, its optimizer and the
step counters (:class:`~rltrade.agents.a3c.worker.Shared`), and every time the shared step count
has grown by ``n_steps × n_workers`` it runs SB3's callback protocol (``on_rollout_start`` /
``on_step`` / ``on_rollout_end``) with the workers' lock held, so a checkpoint taken there sees
weights, optimizer state and step count that belong together. Workers may claim steps at most
``_SLACK_CHUNKS`` chunks past the next callback. A worker's failure stops all of them and is
raised here as :class:`~rltrade.agents.a3c.errors.A3CWorkerError`.

The learner also merges the workers' statistics into the model's totals (episode returns, risk
gating counts) and writes them to SB3's logger (TensorBoard).
"""

from __future__ import annotations

import contextlib
import queue as queue_mod
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.multiprocessing as mp
from loguru import logger
from stable_baselines3.common.callbacks import BaseCallback

from rltrade.agents.a3c.errors import A3CWorkerError
from rltrade.agents.a3c.worker import Cell, Flag, Shared, Stats, Worker, WorkerSpec, worker_main
from rltrade.errors import ConfigError

if TYPE_CHECKING:
    from rltrade.agents.a3c.algorithm import A3C

log = logger.bind(component="train")

_LOG_EVERY_ROLLOUTS = 100  # SB3 logger dumps (tensorboard) every this many callback ticks
_POLL_S = 0.005  # the main process looks at the step counter this often
_SLACK_CHUNKS = 2  # workers may run this many chunks past the next callback


class Learner:
    """Runs one ``learn`` call of ``model`` up to ``target`` env steps (see the module docstring).

    It updates the model's public counters as it goes (``num_timesteps``, ``n_updates``, and the
    totals ``ep_info_buffer``, ``masked_actions``, ``risk_counts``), so callbacks see them.

    :param model: the :class:`~rltrade.agents.a3c.A3C` being trained.
    :param callback: the SB3 callback (already initialised and told that training started).
    :param target: the shared step count at which training ends.
    """

    def __init__(self, model: A3C, callback: BaseCallback, target: int) -> None:
        self.model = model
        self.callback = callback
        self.target = int(target)
        self.start = int(model.num_timesteps)
        self.t0 = time.perf_counter()
        self.ticks = 0
        self.stats = Stats(-1)
        self.last_log = 0.0
        #: the workers' lock while worker processes run (``None`` otherwise)
        self.lock: Any = None

    def run(self, specs: list[WorkerSpec]) -> bool:
        """Train with one worker per spec; ``False`` when a callback stopped training.

        :raises A3CWorkerError: a worker failed (all workers are stopped first).
        """
        if len(specs) == 1:
            return self.in_process(specs[0])
        return self.with_workers(specs)

    # -- one worker, in this process ---------------------------------------------------------
    def in_process(self, spec: WorkerSpec) -> bool:
        """The worker loop in the calling process, a callback tick after every rollout."""
        model, cb = self.model, self.callback
        shared = Shared(model.policy, model.optimizer, None, Cell(model.num_timesteps),
                        Cell(model.num_timesteps), Cell(model.n_updates), self.target, Flag())
        worker: Worker | None = None

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
                worker = guarded(lambda: Worker(spec, shared))
                guarded(lambda: worker.reset(first=True))
                while True:
                    k = worker.claim()
                    if k == 0:
                        return True
                    model.num_timesteps = shared.done.value
                    cb.on_rollout_start()
                    guarded(lambda k=k: worker.rollout(k))
                    model.num_timesteps = shared.done.value
                    model.n_updates = shared.n_updates.value
                    self.consume(worker.take_stats())
                    self.ticks += 1
                    if not cb.on_step():
                        return False
                    cb.on_rollout_end()
                    self.record()
            finally:
                if worker is not None:
                    worker.close()

    # -- worker processes --------------------------------------------------------------------
    def with_workers(self, specs: list[WorkerSpec]) -> bool:
        """Start one ``spawn``-ed process per spec and tick the callbacks as the steps grow."""
        model, cb, target = self.model, self.callback, self.target
        ctx = mp.get_context("spawn")
        start = int(model.num_timesteps)
        shared = Shared(
            model.policy, model.optimizer, ctx.RLock(), ctx.RawValue("q", start),
            ctx.Value("q", start), ctx.RawValue("q", model.n_updates), target,
            Flag(ctx.RawValue("b", 0)), ctx.Queue(), ctx.Queue(),
            ctx.RawArray("q", len(specs)), ctx.RawValue("q", start),
        )
        chunk = model.n_steps * model.n_workers

        def open_until(cap: int) -> None:
            shared.cap.value = cap

        procs = [ctx.Process(target=worker_main, args=(spec, shared), daemon=True,
                             name=f"rltrade-a3c-worker-{spec.worker_id}") for spec in specs]
        self.lock = shared.lock
        completed = False
        try:
            for p in procs:  # nothing can be claimed yet: all start together
                p.start()
            with self.hold(shared, procs):
                cb.on_rollout_start()
            next_tick = start + chunk
            open_until(next_tick + _SLACK_CHUNKS * chunk)
            while True:
                time.sleep(_POLL_S)
                self.drain(shared)
                self.raise_errors(shared, procs)
                finished = not any(p.is_alive() for p in procs)
                if shared.done.value >= next_tick or finished:
                    with self.hold(shared, procs):
                        model.num_timesteps = int(shared.done.value)
                        model.n_updates = int(shared.n_updates.value)
                        self.ticks += 1
                        if not finished:
                            cb.on_rollout_start()
                        go_on = cb.on_step()
                        cb.on_rollout_end()
                        self.record()
                    while next_tick <= model.num_timesteps:
                        next_tick += chunk
                    if not go_on:
                        shared.stop.set()
                        open_until(start)
                        break
                    open_until(next_tick + _SLACK_CHUNKS * chunk)
                if finished:
                    self.drain(shared)
                    self.raise_errors(shared, procs)
                    completed = True
                    break
        finally:
            shared.stop.set()
            self.shutdown(shared, procs)
            self.lock = None
            model.num_timesteps = int(shared.done.value)
            model.n_updates = int(shared.n_updates.value)
        if completed and model.num_timesteps != target:
            raise A3CWorkerError(-1, model.num_timesteps,
                                 f"workers stopped at {model.num_timesteps} of {target} steps")
        return completed

    @contextlib.contextmanager
    def hold(self, shared: Shared, procs: list[Any]) -> Iterator[None]:
        """The workers' lock, checking for dead workers while waiting for it."""
        while not shared.lock.acquire(timeout=1.0):
            self.raise_errors(shared, procs)
        try:
            yield
        finally:
            shared.lock.release()

    def raise_errors(self, shared: Shared, procs: list[Any]) -> None:
        """Raise a worker's reported error, or an error for a worker process that died."""
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

    def drain(self, shared: Shared) -> None:
        """Take every statistics message the workers have sent so far."""
        while True:
            try:
                self.consume(shared.messages.get_nowait())
            except queue_mod.Empty:
                return

    def shutdown(self, shared: Shared, procs: list[Any]) -> None:
        """Wait for the workers to exit (they see the stop flag), terminate stragglers."""
        deadline = time.monotonic() + 10.0
        for p in procs:
            while p.is_alive() and time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    self.drain(shared)  # keep the queue flowing, or a worker cannot exit
                p.join(timeout=0.05)
        with contextlib.suppress(Exception):
            self.drain(shared)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5.0)
        for q in (shared.messages, shared.errors):
            q.close()
            q.join_thread()

    # -- statistics and logging ---------------------------------------------------------------
    def consume(self, stats: Stats) -> None:
        """Merge a worker's statistics: into this call's losses, the model's episode buffer and
        risk gating totals (logging a reason the first time it masks an action)."""
        model = self.model
        self.stats.merge(stats)
        for ret, length in stats.episodes:
            model.ep_info_buffer.append({"r": ret, "l": length})
        if stats.masked:
            model.masked_actions += stats.masked
            new = sorted(set(stats.reasons) - set(model.risk_counts))
            for k, v in stats.reasons.items():
                model.risk_counts[k] = model.risk_counts.get(k, 0) + v
            if new:
                log.info("A3C risk gating (worker {}): actions masked for {}",
                         stats.worker_id, ", ".join(new))
            now = time.perf_counter()
            if now - self.last_log >= 1.0:
                self.last_log = now
                log.debug("A3C risk gating (worker {}): {} action(s) masked over {} step(s): {}",
                          stats.worker_id, stats.masked, stats.gated_steps,
                          ", ".join(f"{k} {v}" for k, v in sorted(stats.reasons.items())))

    def record(self, final: bool = False) -> None:
        """Write the statistics to SB3's logger every ``_LOG_EVERY_ROLLOUTS`` ticks (and at
        the end), then start summing anew."""
        lg = self.model.logger
        if lg is None or not (final or self.ticks % _LOG_EVERY_ROLLOUTS == 0):
            return
        st = self.stats
        model = self.model
        if model.ep_info_buffer:
            lg.record("rollout/ep_rew_mean",
                      float(np.mean([e["r"] for e in model.ep_info_buffer])))
            lg.record("rollout/ep_len_mean",
                      float(np.mean([e["l"] for e in model.ep_info_buffer])))
        if st.updates:
            lg.record("train/policy_loss", st.policy_loss / st.updates)
            lg.record("train/value_loss", st.value_loss / st.updates)
            lg.record("train/entropy_loss", -st.entropy / st.updates)
        lg.record("train/n_updates", model.n_updates)
        lg.record("train/risk_masked_actions", model.masked_actions)
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        lg.record("time/fps", int((model.num_timesteps - self.start) / elapsed))
        lg.record("time/total_timesteps", model.num_timesteps)
        lg.dump(step=model.num_timesteps)
        self.stats = Stats(-1)
