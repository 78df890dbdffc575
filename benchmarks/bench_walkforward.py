"""Benchmark of the walk-forward: the process pool against the sequential run, and the share of
the orchestration.

Usage: python benchmarks/bench_walkforward.py [--folds 2] [--seeds 2] [--steps 16384]
                                              [--workers 2] [--quick]

The same walk-forward (a planted synthetic market of 1h bars, the small feature set of the
tests, PPO with rollouts of 256 steps × 4 envs) runs once with ``--workers`` processes
(:class:`rltrade.experiments.executors.LocalExecutor`) and once sequentially in this process.
Both runs are timed end to end (``walk_forward``). Targets:

* speed-up: the pool's wall time at least 1.8x faster than the sequential run with 2 workers
  on 2 cores;
* orchestration under 5 % of the total: slicing and saving the Dataset, the fold plan,
  recording the trials, stitching, the statistics and the report (``timings`` of
  ``walkforward.json``: ``prepare + registry + stitch + statistics + report``; building the
  Dataset, ``dataset``, is featurisation and is shown on its own).

The pool's processes start with the ``spawn`` method: each imports torch and compiles the numba
kernels once, a fixed cost that a longer training hides. ``--quick`` is a smoke test with tiny
sizes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import machine, print_rows
from rltrade.config import RunConfig
from rltrade.experiments.walkforward import walk_forward


def _config(folds: int, seeds: int, steps: int) -> RunConfig:
    train, validation, test = 1500, 300, 400
    n_bars = train + validation + 2 * 8 + folds * test + 100
    return RunConfig.from_dict({
        "data": {"source": f"synthetic:planted?n_bars={n_bars}&seed=5"},
        "features": {"features": [{"name": "column"}, {"name": "returns"}, {"name": "rsi"}],
                     "strategies": [{"name": "supertrend", "timeframe": None}]},
        "env": {"window": 8, "episode_length": 512},
        "agent": {"hyperparams": {"n_steps": 256, "batch_size": 128, "n_epochs": 4},
                  "policy": {"net_arch": [64, 64]}},
        "training": {"total_steps": steps, "n_envs": 4, "eval_freq": max(1024, steps // 4),
                     "checkpoint_freq": 0},
        "walkforward": {"train": train, "validation": validation, "test": test,
                        "folds": folds, "seeds": list(range(seeds))},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.folds, args.seeds, args.steps = 2, 1, 1024
    cfg = _config(args.folds, args.seeds, args.steps)
    root = Path(tempfile.mkdtemp(prefix="bench_wf_"))
    try:
        pooled = walk_forward(cfg, "pooled", root, workers=args.workers)
        sequential = walk_forward(cfg, "sequential", root, workers=1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    same = pooled.oos.equals(sequential.oos)
    speedup = sequential.wall_seconds / pooled.wall_seconds
    units = args.folds * args.seeds
    rows = [
        ("units (folds x seeds)", f"{units}", f"{args.steps:,} steps each"),
        ("sequential", f"{sequential.wall_seconds:.1f} s", ""),
        (f"pool of {args.workers}", f"{pooled.wall_seconds:.1f} s",
         "spawned processes (torch import and numba compile once each)"),
        ("speed-up", f"{speedup:.2f}x", f"target >= 1.8x with 2 workers on 2 cores; "
         f"results identical: {same}"),
    ]
    for label, res in (("sequential", sequential), ("pool", pooled)):
        walls = sorted(r.wall_seconds for r in res.results)
        rows.append((f"units, {label}", f"{res.timings['units']:.1f} s",
                     f"each unit {walls[0]:.1f} .. {walls[-1]:.1f} s, "
                     f"{sum(walls):.1f} s summed"))
    for label, res in (("sequential", sequential), ("pool", pooled)):
        t = res.timings
        orch = t["prepare"] + t["registry"] + t["stitch"] + t["statistics"] + t["report"]
        rows.append((f"orchestration, {label}", f"{100 * orch / t['total']:.1f} %",
                     f"prepare {t['prepare']:.2f} s + registry {t['registry']:.2f} s + stitch "
                     f"{t['stitch']:.2f} s + statistics {t['statistics']:.2f} s + report "
                     f"{t['report']:.2f} s of {t['total']:.1f} s (target < 5 %); dataset "
                     f"build {t['dataset']:.2f} s"))
    print(f"# bench_walkforward on {machine()}")
    print_rows(rows)
    print("\ntarget: pool >= 1.8x sequential with 2 workers; orchestration < 5 % of the total")


if __name__ == "__main__":
    main()
