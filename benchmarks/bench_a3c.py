"""Benchmark of A3C (2 worker processes) against A2C (Stable-Baselines3) on the same env and budget.

Usage: python benchmarks/bench_a3c.py [--steps 50000] [--seeds 0 1 2] [--source sample:EURUSD-1h]
                                       [--quick]

The same run config for every contestant: ``--source`` (default the bundled EUR/USD 1h sample)
with the default feature spec (observation ``market [32, 51]`` + ``account [9]``), ``discrete3``,
retail costs, the default network (``[64, 64]``, tanh), 75 % / 25 % train / eval split. Each
algorithm uses its own defaults (:data:`rltrade.config.ALGORITHM_DEFAULTS`: A3C ``n_steps`` 20,
learning rate 1e-4, gradient norm 40; A2C ``n_steps`` 5, learning rate 7e-4, norm 0.5) and
trains for the same ``--steps`` env steps:

* **A3C, 2 workers**: two ``spawn`` worker processes, each stepping its own ``TradingEnv``;
* **A2C, 2 envs**: SB3's A2C on one ``VecTradingEnv`` of 2 envs (the same number of envs
  stepped at once as A3C's two workers, one process);
* **A3C, 1 worker**: the in-process, bit-deterministic mode, for reference.

Reported per contestant (median over ``--seeds``): steps per second of the whole ``learn()``
call (A3C's includes starting its worker processes, which re-import torch: several seconds),
steps per second after that start (from the first callback after step 0 to the end), and the
return of one deterministic pass over the held-out slice (:func:`rltrade.agents.training.evaluate`;
mean and range over the seeds), with buy-and-hold over the same slice for scale. Torch uses 1
thread per process. ``--quick`` is a smoke test.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from typing import Any

import torch
from stable_baselines3.common.callbacks import BaseCallback

from common import machine
from rltrade.agents.algorithms import make_agent
from rltrade.agents.training import (
    buy_and_hold_return,
    evaluate,
    make_train_env,
    prepare_data,
)
from rltrade.config import RunConfig


class _Clock(BaseCallback):
    """Times of the callbacks: the steady-state rate excludes the workers' start."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[float, int]] = []

    def _on_step(self) -> bool:
        self.marks.append((time.perf_counter(), int(self.model.num_timesteps)))
        return True

    def steady_rate(self) -> float:
        (t0, n0), (t1, n1) = self.marks[0], self.marks[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")


def _config(source: str, algorithm: str, n: int, seed: int, quick: bool) -> RunConfig:
    hyper: dict[str, Any] = {"n_workers": n} if algorithm == "a3c" else {}
    data: dict[str, Any] = {
        "data": {"source": source},
        "agent": {"algorithm": algorithm, "hyperparams": hyper},
        "training": {"n_envs": 1 if algorithm == "a3c" else n, "seed": seed,
                     "torch_threads": 1},
    }
    if quick:
        data["features"] = {"features": [{"name": "returns", "params": {"periods": [1]}},
                                         {"name": "rsi"}], "strategies": []}
        data["env"] = {"window": 8}
        data["agent"]["policy"] = {"net_arch": [16]}
    return RunConfig.from_dict(data)


def run_one(source: str, algorithm: str, n: int, seed: int, steps: int,
            quick: bool, prepared: dict[str, Any]) -> dict[str, float]:
    cfg = _config(source, algorithm, n, seed, quick)
    key = (cfg.data.source, quick)
    if key not in prepared:
        prepared[key] = prepare_data(cfg)
    data = prepared[key]
    env = make_train_env(cfg, data)
    model = make_agent(cfg, env)
    clock = _Clock()
    t0 = time.perf_counter()
    model.learn(steps, callback=clock)
    wall = time.perf_counter() - t0
    result = evaluate(model, data.eval, cfg.env, data.normalizer)
    env.close()
    return {"rate": model.num_timesteps / wall, "steady": clock.steady_rate(),
            "return": result["total_return"], "wall": wall}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--source", default="sample:EURUSD-1h")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.seeds = 400, [0]
        args.source = "synthetic:planted?n_bars=1500&seed=3"
    torch.set_num_threads(1)
    contestants = [("A3C, 2 workers", "a3c", 2), ("A2C, 2 envs", "a2c", 2),
                   ("A3C, 1 worker (in-process)", "a3c", 1)]
    prepared: dict[Any, Any] = {}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in contestants}
    for seed in args.seeds:  # interleaved, so slow phases of a shared machine hit all of them
        for name, algorithm, n in contestants:
            rows[name].append(run_one(args.source, algorithm, n, seed, args.steps, args.quick,
                                      prepared))
    print(f"# bench_a3c: {machine()}, torch "
          f"{torch.__version__}, 1 torch thread per process, {args.steps} steps, seeds "
          f"{args.seeds}")
    print(f"# command: python benchmarks/bench_a3c.py {shlex.join(sys.argv[1:])}")
    print("| contestant | steps/s, whole learn() | steps/s after start-up | eval return: mean "
          "(min .. max) |")
    print("|---|---:|---:|---|")
    med: dict[str, float] = {}
    for name, _, _ in contestants:
        rs = rows[name]
        rate = statistics.median(r["rate"] for r in rs)
        steady = statistics.median(r["steady"] for r in rs)
        med[name] = steady
        rets = [r["return"] for r in rs]
        print(f"| {name} | {rate:,.0f} | {steady:,.0f} | {statistics.mean(rets):+.2%} "
              f"({min(rets):+.2%} .. {max(rets):+.2%}) |")
    data = next(iter(prepared.values()))
    cfg = _config(args.source, "a2c", 2, 0, args.quick)
    print(f"buy-and-hold over the same eval slice: {buy_and_hold_return(data.eval, cfg.env):+.2%}")
    ratio = med["A3C, 2 workers"] / med["A2C, 2 envs"]
    print(f"ratio: A3C (2 workers) / A2C (2 envs) steps/s after start-up = {ratio:.2f} "
          f"(target: informational, no target set)")


if __name__ == "__main__":
    main()
