"""Benchmark of the sweep: the driver's overhead per trial, and Ray against the local pool on
one machine.

Usage: python benchmarks/bench_sweep.py [--trials 4] [--steps 16384] [--workers 2]
                                        [--parallel 2] [--no-ray] [--quick]

The same sweep (the walk-forward benchmark's example config: a planted synthetic market of 1h
bars, the small feature set, PPO with rollouts of 256 steps × 4 envs; 2 folds × 1 seed; a
two-parameter space) runs once on the local process pool (``--workers`` processes) and once on
a private local Ray instance with as many CPUs, without the final walk-forward (the same
for both). Figures:

* **driver overhead per trial**: the sweep's wall time outside the units and the Dataset build
  (Optuna's ask / report / tell, the registry row, the trial files; ``timings.driver``),
  divided by the trials, as a share of a trial's training time (its units' summed wall time,
  ``timings.unit_seconds``). Target under 2 %.
* **executor**: the wall time of the units (``timings.units``) against their summed time over
  the workers: what scheduling costs on top (process spawn, imports, numba compilation in
  fresh workers, shipping the run directories back from Ray workers).
* **Ray against the pool**: the two sweeps' wall times (Ray's start-up shown on its own).
  Target: Ray within 10 % of the pool.

``--quick`` is a smoke test with tiny sizes (and no Ray).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import machine, print_rows, walkforward_config
from rltrade.config import RunConfig
from rltrade.experiments.sweep import sweep

SPACE = {"agent.hyperparams.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-3,
                                             "log": True},
         "agent.hyperparams.gamma": {"type": "categorical", "choices": [0.95, 0.99]}}


def _config(steps: int, folds: int = 2) -> RunConfig:
    return walkforward_config(folds, 1, steps)


def _rows(label: str, res, workers: int) -> list[tuple[str, str, str]]:
    t = res.timings
    n = max(1, int(t["trials_run"]))
    per_trial = t["unit_seconds"] / n
    driver = t["driver"] / n
    ideal = t["unit_seconds"] / workers
    return [
        (f"{label}: wall", f"{res.wall_seconds:.1f} s",
         f"dataset {t['dataset']:.1f} s, units {t['units']:.1f} s, driver {t['driver']:.2f} s"),
        (f"{label}: driver per trial", f"{100 * driver / per_trial:.2f} %",
         f"{driver:.3f} s of a trial's {per_trial:.1f} s of training (target < 2 %)"),
        (f"{label}: executor", f"{t['units'] / ideal:.2f}x",
         f"units wall {t['units']:.1f} s against {ideal:.1f} s (summed unit time / "
         f"{workers} workers)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=2, help="trials per batch")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.steps, args.no_ray = 2, 1024, True
    cfg = _config(args.steps)
    root = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    rows: list[tuple[str, str, str]] = [
        ("trials x folds x seeds", f"{args.trials} x 2 x 1",
         f"{args.steps:,} steps a unit, batches of {args.parallel} trials")]
    try:
        pool = sweep(cfg, SPACE, "pool", args.trials, root / "pool", workers=args.workers,
                     parallel_trials=args.parallel, final=False)
        rows += _rows(f"pool of {args.workers}", pool, args.workers)
        if not args.no_ray:
            import ray

            from rltrade.experiments.ray_executor import RayExecutor, connect

            t0 = time.perf_counter()
            connect("local", num_cpus=args.workers)
            t_init = time.perf_counter() - t0
            on_ray = sweep(cfg, SPACE, "ray", args.trials, root / "ray",
                           executor=RayExecutor(num_cpus=1), parallel_trials=args.parallel,
                           final=False)
            ray.shutdown()
            rows += _rows(f"ray, {args.workers} CPUs", on_ray, args.workers)
            same = [(a["params"], a["value"]) for a in pool.trials] == [
                (b["params"], b["value"]) for b in on_ray.trials]
            rows.append(("ray / pool wall", f"{on_ray.wall_seconds / pool.wall_seconds:.2f}x",
                         f"target <= 1.10x; Ray start-up {t_init:.1f} s not included; same "
                         f"trials: {same}"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"# bench_sweep on {machine()}")
    print_rows(rows)
    print("\ntarget: driver overhead < 2 % of a trial's training; Ray within 10 % of the pool")


if __name__ == "__main__":
    main()
