"""Benchmark of the walk-forward: the process pool against the sequential run, and the share of
the orchestration.

Usage: python benchmarks/bench_walkforward.py [--folds 2] [--seeds 2] [--steps 16384]
                                              [--workers 2] [--repeat 2] [--spawn]
                                              [--baseline-src DIR] [--quick]

The same walk-forward (a planted synthetic market of 1h bars, the small feature set of the
tests, PPO with rollouts of 256 steps × 4 envs) runs sequentially (``--workers 1``) and with
``--workers`` processes (:class:`rltrade.experiments.executors.LocalExecutor`), each run in a
**fresh Python process**, as ``rltrade walkforward`` runs: nothing imported, compiled or
started by one run helps the next. The runs alternate (sequential first, then the pool first)
``--repeat`` times, so that a change in the machine's load hits both; each repeat gives one
ratio, and all of them are printed. ``--spawn`` adds a pool whose workers start with ``spawn``
(each imports torch and the rest itself) instead of forking from a preloaded forkserver;
``--baseline-src DIR`` adds runs of another rltrade source tree (e.g. ``git archive`` of an
older commit) to compare in the same session. Targets:

* speed-up: the pool's wall time at least 1.8x faster than the sequential run with 2 workers
  on 2 cores (``walk_forward``'s wall, and the whole process's, imports included);
* orchestration under 5 % of the total: slicing and saving the Dataset, the fold plan,
  recording the trials, stitching, the statistics and the report (``timings`` of
  ``walkforward.json``: ``prepare + registry + stitch + statistics + report``; building the
  Dataset, ``dataset``, is featurisation and is shown on its own).

Every run's ``oos_steps.csv`` is hashed: the pool's must equal the sequential run's bit for bit.
``--quick`` is a smoke test with tiny sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, print_rows, walkforward_config

HERE = Path(__file__).resolve().parent


def _one(args: argparse.Namespace) -> None:
    """One walk-forward in this (fresh) process; prints its numbers as JSON."""
    t_start = time.perf_counter()
    from rltrade.experiments.executors import LocalExecutor
    from rltrade.experiments.walkforward import walk_forward

    cfg = walkforward_config(args.folds, args.seeds, args.steps)
    executor = None
    if args.workers > 1 and args.spawn:
        executor = LocalExecutor(args.workers, start_method="spawn")
    root = Path(tempfile.mkdtemp(prefix="bench_wf_"))
    try:
        t0 = time.perf_counter()
        res = walk_forward(cfg, "wf", root, workers=args.workers, executor=executor)
        wall = time.perf_counter() - t0
        digest = hashlib.sha256((res.path / "oos_steps.csv").read_bytes()).hexdigest()
    finally:
        if executor is not None:
            executor.close()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"wall": wall, "imports": t0 - t_start, "timings": res.timings,
                      "units": sorted(r.wall_seconds for r in res.results), "oos": digest}))


def _run(args: argparse.Namespace, workers: int, spawn: bool = False,
         src: str | None = None) -> dict:
    env = dict(os.environ)
    paths = [str(HERE)] + ([src] if src else []) + [env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", "--folds", str(args.folds),
           "--seeds", str(args.seeds), "--steps", str(args.steps), "--workers", str(workers)]
    if spawn:
        cmd.append("--spawn")
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["process"] = time.perf_counter() - t0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--spawn", action="store_true",
                        help="also a pool of spawned workers (with --one: that pool only)")
    parser.add_argument("--baseline-src", default=None,
                        help="also run the rltrade sources in this folder (its src/)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.folds, args.seeds, args.steps, args.repeat = 2, 1, 1024, 1
    if args.one:
        _one(args)
        return
    variants: list[tuple[str, int, bool, str | None]] = [
        ("sequential", 1, False, None), (f"pool of {args.workers}", args.workers, False, None)]
    if args.spawn:
        variants.append((f"pool of {args.workers} (spawn)", args.workers, True, None))
    if args.baseline_src:
        variants += [("baseline: sequential", 1, False, args.baseline_src),
                     (f"baseline: pool of {args.workers}", args.workers, False,
                      args.baseline_src)]
    runs: dict[str, list[dict]] = {v[0]: [] for v in variants}
    for r in range(args.repeat):
        order = variants if r % 2 == 0 else variants[::-1]
        for label, workers, spawn, src in order:
            runs[label].append(_run(args, workers, spawn, src))
    units = args.folds * args.seeds
    rows = [("units (folds x seeds)", f"{units}", f"{args.steps:,} steps each; "
             f"{args.repeat} repeat(s), each run in a fresh process")]
    for label, results in runs.items():
        walls = ", ".join(f"{x['wall']:.1f}" for x in results)
        procs = ", ".join(f"{x['process']:.1f}" for x in results)
        unit = results[0]["units"]
        rows.append((label, f"{walls} s", f"whole process {procs} s; units "
                     f"{unit[0]:.1f} .. {unit[-1]:.1f} s ({sum(unit):.1f} s summed, 1st run)"))
    pairs = [("", "sequential", f"pool of {args.workers}")]
    if args.spawn:
        pairs.append((" (spawn)", "sequential", f"pool of {args.workers} (spawn)"))
    if args.baseline_src:
        pairs.append((" (baseline)", "baseline: sequential",
                      f"baseline: pool of {args.workers}"))
    for suffix, seq, pool in pairs:
        ratios = [a["wall"] / b["wall"] for a, b in zip(runs[seq], runs[pool], strict=True)]
        procs = [a["process"] / b["process"] for a, b in zip(runs[seq], runs[pool],
                                                                strict=True)]
        same = {x["oos"] for x in runs[seq] + runs[pool]}
        rows.append((f"speed-up{suffix}", ", ".join(f"{x:.2f}x" for x in ratios),
                     "walk_forward wall, per repeat; whole process "
                     + ", ".join(f"{x:.2f}x" for x in procs)
                     + f"; oos_steps.csv identical: {len(same) == 1}"))
    for label in ("sequential", f"pool of {args.workers}"):
        t = runs[label][0]["timings"]
        orch = t["prepare"] + t["registry"] + t["stitch"] + t["statistics"] + t["report"]
        rows.append((f"orchestration, {label}", f"{100 * orch / t['total']:.1f} %",
                     f"prepare {t['prepare']:.2f} s + registry {t['registry']:.2f} s + stitch "
                     f"{t['stitch']:.2f} s + statistics {t['statistics']:.2f} s + report "
                     f"{t['report']:.2f} s of {t['total']:.1f} s (target < 5 %); dataset "
                     f"build {t['dataset']:.2f} s"))
    load = os.getloadavg()
    print(f"# bench_walkforward on {machine()}, {os.cpu_count()} cores, load average "
          f"{load[0]:.1f} at the end")
    print_rows(rows)
    print("\ntarget: pool >= 1.8x sequential with 2 workers; orchestration < 5 % of the total")


if __name__ == "__main__":
    main()
