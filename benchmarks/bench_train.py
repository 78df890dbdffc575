"""Benchmark of training throughput: does the env slow PPO down?

Usage: python benchmarks/bench_train.py [--steps 32768] [--repeat 3] [--threads 1] [--quick]

One run, the same PPO (default hyperparameters and network, 8 envs, ``n_steps`` 512 so that a
timed run holds several rollouts and updates) on the bundled EUR/USD 1h sample with the default
feature spec (observation ``market [32, 51]`` + ``account [9]``), steps per second of
``model.learn`` (median of ``--repeat``, after one untimed warm-up run that also compiles the
numba kernels), with three envs of identical spaces:

* ``VecTradingEnv`` (8 envs stepped by one numba call);
* Stable-Baselines3's ``DummyVecEnv`` of 8 ``TradingEnv``;
* a do-nothing env (``rltrade.agents.SpacesEnv``: zero observations) in a ``DummyVecEnv``;
  the cost of the network alone.

The target: ``VecTradingEnv`` within 5 % of the do-nothing env. ``--threads`` sets torch's CPU
threads for all three (the training default is 1; see ``TrainingConfig.torch_threads``).
``--quick`` is a smoke test with tiny sizes.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from rltrade.agents.algorithms import SpacesEnv, make_agent
from rltrade.agents.training import make_train_env, prepare_data
from rltrade.config import RunConfig


def run(steps: int, repeat: int, threads: int, n_steps: int, source: str) -> list[tuple]:
    torch.set_num_threads(threads)
    cfg = RunConfig.from_dict({
        "data": {"source": source},
        "agent": {"hyperparams": {"n_steps": n_steps}},
        "training": {"n_envs": 8, "torch_threads": threads},
    })
    data = prepare_data(cfg)
    native = make_train_env(cfg, data)
    dummy = make_train_env(cfg.with_overrides(training={"vec_env": "dummy"}), data)
    null = DummyVecEnv([lambda: SpacesEnv(native.observation_space, native.action_space)
                        for _ in range(8)])
    envs = {"VecTradingEnv (8 envs)": native, "DummyVecEnv of 8 TradingEnv": dummy,
            "do-nothing env, same spaces": null}
    rates: dict[str, list[float]] = {k: [] for k in envs}
    models: dict[str, PPO] = {}
    for name, env in envs.items():
        models[name] = make_agent(cfg, env)
        models[name].learn(n_steps * 8)  # warm-up: numba compile, first allocations
    for _ in range(repeat):  # interleaved, so slow phases of a shared machine hit all three
        for name, model in models.items():
            t0 = time.perf_counter()
            model.learn(steps, reset_num_timesteps=False)
            rates[name].append(steps / (time.perf_counter() - t0))
    rows = []
    base = sorted(rates["do-nothing env, same spaces"])[repeat // 2]
    for name in envs:
        med = sorted(rates[name])[repeat // 2]
        rows.append((name, med, med / base))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=32_768)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-steps", type=int, default=512)
    ap.add_argument("--source", default="sample:EURUSD-1h")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.repeat, args.n_steps = 256, 1, 32
    rows = run(args.steps, args.repeat, args.threads, args.n_steps, args.source)
    print(f"# bench_train: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, {args.threads} torch thread(s)")
    print(f"# command: python benchmarks/bench_train.py {shlex.join(sys.argv[1:])}")
    print("| env | PPO steps/s | vs do-nothing env |")
    print("|---|---|---|")
    for name, rate, ratio in rows:
        print(f"| {name} | {rate:,.0f} | {ratio:.3f} |")
    gap = 1.0 - rows[0][2]
    verdict = "met" if gap <= 0.05 else "missed"
    print(f"target: VecTradingEnv within 5 % of the do-nothing env: {gap:+.1%} slower, {verdict}")


if __name__ == "__main__":
    main()
