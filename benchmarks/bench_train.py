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

``--planted`` instead measures wall-clock to the learning target of the slow test
(``tests/test_learning.py``: capture half of the planted oracle's out-of-sample log growth, 12,000
hourly bars) for the default config (``n_steps`` 512 × 8 envs, batch 64, 10 epochs) and a
throughput preset (``n_steps`` 128 × 32 envs, batch 256, 10 epochs, learning rate 6e-4): the
evaluation every 8,192 steps gives the first step at which the target is met, and its time.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from common import machine
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


PRESETS = {
    "default": ({"n_steps": 512}, 8),
    "throughput": ({"n_steps": 128, "batch_size": 256, "n_epochs": 10,
                    "learning_rate": 6e-4}, 32),
}


def planted(steps: int, threads: int) -> list[tuple]:
    import math
    import tempfile

    from rltrade.agents.training import train
    from rltrade.data.synthetic import oracle_positions, synthetic_market
    from rltrade.envs import TradingEnv

    bars = synthetic_market("planted", 12_000, seed=5, timeframe="1h")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/planted.parquet"
        bars.to_parquet(path)
        for name, (hyper, n_envs) in PRESETS.items():
            cfg = RunConfig.from_dict({
                "data": {"source": path},
                "features": {"features": [{"name": "column"}, {"name": "returns"},
                                          {"name": "rsi"}, {"name": "realized_vol"},
                                          {"name": "atr"}],
                             "strategies": [{"name": "supertrend"}, {"name": "atr_breakout"}]},
                "agent": {"hyperparams": hyper},
                "training": {"total_steps": steps, "n_envs": n_envs, "eval_freq": 8192,
                             "checkpoint_freq": 0, "torch_threads": threads},
            })
            res = train(cfg, name, runs_root=tmp)
            ds = res.data.eval
            sides = dict(zip(bars.index.asi8, oracle_positions(bars), strict=True))
            env = TradingEnv(ds, cfg.env, normalizer=res.data.normalizer, mode="eval")
            _, info = env.reset(seed=0)
            done = False
            while not done:
                a = int(sides[int(ds.timestamps[info["bar"]])] + 1)
                _, _, te, tr, info = env.step(a)
                done = te or tr
            oracle = math.log(info["equity"] / cfg.env.engine.initial_cash)
            first = next((e["step"] for e in res.evaluations
                          if math.log1p(e["total_return"]) >= 0.5 * oracle), None)
            final = math.log1p(res.final_eval["total_return"]) / oracle
            t_hit = (None if first is None else res.wall_seconds * first / res.steps)
            rows.append((name, res.steps_per_second, first, t_hit, final))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=32_768)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-steps", type=int, default=512)
    ap.add_argument("--source", default="sample:EURUSD-1h")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--planted", action="store_true")
    args = ap.parse_args(argv)
    if args.planted:
        rows = planted(args.steps, args.threads)
        print(f"# command: python benchmarks/bench_train.py {shlex.join(sys.argv[1:])}")
        print("| preset | PPO steps/s | first eval step at target | wall-clock to target | "
              "final capture |")
        print("|---|---|---|---|---|")
        for name, rate, first, t_hit, final in rows:
            hit = "not reached" if first is None else f"{first:,}"
            when = "-" if t_hit is None else f"{t_hit:.0f} s"
            print(f"| {name} | {rate:,.0f} | {hit} | {when} | {final:.2f} |")
        print("target: capture >= 0.5 of the oracle's out-of-sample log growth")
        return
    if args.quick:
        args.steps, args.repeat, args.n_steps = 256, 1, 32
    rows = run(args.steps, args.repeat, args.threads, args.n_steps, args.source)
    print(f"# bench_train: {machine()}, torch "
          f"{torch.__version__}, {args.threads} torch thread(s)")
    print(f"# command: python benchmarks/bench_train.py {shlex.join(sys.argv[1:])}")
    print("| env | PPO steps/s | vs do-nothing env |")
    print("|---|---|---|")
    for name, rate, ratio in rows:
        print(f"| {name} | {rate:,.0f} | {ratio:.3f} |")
    ratio = rows[0][2]
    verdict = "met" if ratio >= 0.95 else "missed"
    print(f"target: VecTradingEnv within 5 % of the do-nothing env: {ratio:.3f}x its steps/s, "
          f"{verdict}")


if __name__ == "__main__":
    main()
