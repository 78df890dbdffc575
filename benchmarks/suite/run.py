"""The benchmark suite: every (dataset, config) through a rolling walk-forward, then the
leaderboard (docs/leaderboard.md and docs/leaderboard.csv).

    python benchmarks/suite/run.py --quick                      # old and new defaults
    python benchmarks/suite/run.py --quick --configs old-defaults,every-4 --datasets eurusd_1h
    python benchmarks/suite/run.py                              # the full suite (hours)

Cases are cached per (dataset, config) under ``--cache`` (default
``benchmarks/out/suite/<mode>``): run the same command again to continue an interrupted run.
See docs/benchmarks.md, "Benchmark suite".
"""

from __future__ import annotations

import argparse
import multiprocessing
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (str(HERE), str(ROOT / "src")):
    if p not in sys.path:
        sys.path.insert(0, p)

from suite_configs import CONFIGS, DEFAULT_CONFIGS  # noqa: E402
from suite_datasets import DATASETS  # noqa: E402
from suite_harness import run_case  # noqa: E402
from suite_report import csv_rows, leaderboard_markdown  # noqa: E402

from rltrade.data.store import atomic_write_bytes  # noqa: E402


def _quiet(level: str) -> None:
    from rltrade.logs import setup_logging

    setup_logging(level)


def _names(text: str | None, known: dict, default: list[str], what: str) -> list[str]:
    names = default if not text else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"error: unknown {what} {', '.join(unknown)}; known: "
                         f"{', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 folds x 2 seeds, 16,384 steps, shorter ranges (≈10-15 min)")
    ap.add_argument("--datasets", help="comma-separated (default: all whose data is present)")
    ap.add_argument("--configs", help=f"comma-separated (default: {','.join(DEFAULT_CONFIGS)})")
    ap.add_argument("--out", default="docs/leaderboard.md",
                    help="the markdown leaderboard; the CSV goes next to it (.csv)")
    ap.add_argument("--cache", help="cases folder (default benchmarks/out/suite/<mode>)")
    ap.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    ap.add_argument("--force", action="store_true", help="ignore the cache")
    ap.add_argument("--notes", default=str(HERE / "leaderboard_notes.md"),
                    help="markdown put under the leaderboard's header (the reading of the "
                         "numbers, written by hand); skipped when the file is absent")
    args = ap.parse_args(argv)

    command = "python benchmarks/suite/run.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    mode = "quick" if args.quick else "full"
    all_ds = [n for n, d in DATASETS.items() if d.available()]
    skipped = [n for n, d in DATASETS.items() if not d.available()]
    datasets = _names(args.datasets, DATASETS, all_ds, "dataset")
    missing = [n for n in datasets if not DATASETS[n].available()]
    if missing:
        print(f"skipping {', '.join(missing)}: no data under the shared data folder")
        datasets = [n for n in datasets if n not in missing]
    configs = _names(args.configs, CONFIGS, DEFAULT_CONFIGS, "config")
    cache = Path(args.cache) if args.cache else ROOT / "benchmarks" / "out" / "suite" / mode
    tasks = [(d, c) for c in configs for d in datasets]
    t0 = time.perf_counter()
    cases: dict[tuple[str, str], dict] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, min(args.workers, len(tasks))), mp_context=ctx,
                             initializer=_quiet, initargs=("WARNING",)) as pool:
        futures = {pool.submit(run_case, d, c, args.quick, cache, args.force): (d, c)
                   for d, c in tasks}
        for fut in as_completed(futures):
            d, c = futures[fut]
            case = fut.result()
            cases[(d, c)] = case
            a = case["agent"]
            took = "cached" if case.get("cached") else f"{case['wall_seconds']:.0f} s"
            print(f"[{time.perf_counter() - t0:7.1f} s] {d:<14} {c:<20} {took:>7}"
                  f"  return {a['total_return']['iqm']:+.4f}  val Sharpe "
                  f"{case['validation_sharpe_median']:+.2f}", flush=True)
    wall = time.perf_counter() - t0
    ordered = [cases[(d, c)] for c in configs for d in datasets]
    notes = []
    if skipped and not args.datasets:
        notes.append(f"Skipped (data absent): {', '.join(skipped)}.")
    if args.notes and Path(args.notes).is_file():
        notes.append(Path(args.notes).read_text().strip())
    note = "\n\n".join(notes)
    md = leaderboard_markdown(ordered, command, mode=mode, wall_seconds=wall, note=note)
    out = Path(args.out)
    atomic_write_bytes(out, md.encode())
    atomic_write_bytes(out.with_suffix(".csv"), csv_rows(ordered).encode())
    print(f"wrote {out} and {out.with_suffix('.csv')} in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
