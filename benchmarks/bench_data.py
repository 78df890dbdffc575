"""Benchmark of the data layer: load CSV / Parquet, validate, store write / read.

Usage: python benchmarks/bench_data.py [--rows 1000000] [--repeat 3]

Times the median of ``--repeat`` runs of each step on ``--rows`` one-minute bars, next to plain
pandas doing the least it can for the same file (``read_csv`` with the pyarrow engine and
``read_parquet``), reported as a ratio: these machines are shared, absolute times move.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from common import timeit
from rltrade.data import load_bars, validate_bars
from rltrade.data.store import BarStore


def make_bars(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2020-01-01", periods=n, freq="1min", tz="UTC", unit="ns", name="timestamp")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    wick = np.abs(rng.normal(0, 2e-4, (2, n)))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wick[0]),
            "low": np.minimum(open_, close) * (1 - wick[1]),
            "close": close,
            "volume": rng.lognormal(3, 1, n),
        },
        index=idx,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, rep = args.rows, args.repeat
    bars = make_bars(n)
    results: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "bars.csv"
        pq_path = Path(tmp) / "bars.parquet"
        bars.to_csv(csv_path, date_format="%Y-%m-%dT%H:%M:%SZ")
        bars.to_parquet(pq_path)

        t_pd_csv = timeit(lambda: pd.read_csv(csv_path, engine="pyarrow"), rep)
        t_csv = timeit(lambda: load_bars(csv_path, timeframe="1m"), rep)
        results.append(("load_bars CSV (parse + validate)", t_csv,
                        f"{t_csv / t_pd_csv:.2f}x pandas read_csv(engine=pyarrow)"))
        t_pd_pq = timeit(lambda: pd.read_parquet(pq_path), rep)
        t_pq = timeit(lambda: load_bars(pq_path, timeframe="1m"), rep)
        results.append(("load_bars Parquet (read + validate)", t_pq,
                        f"{t_pq / t_pd_pq:.2f}x pandas read_parquet; target < 2 s"))
        t_val = timeit(lambda: validate_bars(bars, "1m", policy="strict"), rep)
        results.append(("validate_bars strict (in memory)", t_val, ""))
        t_rep = timeit(lambda: validate_bars(bars, "1m", policy="repair"), rep)
        results.append(("validate_bars repair (in memory)", t_rep, ""))

        def write() -> None:
            with tempfile.TemporaryDirectory(dir=tmp) as root:
                BarStore(root).write("BENCH", "1m", bars)

        t_write = timeit(write, rep)
        results.append(("BarStore.write (new series)", t_write, ""))
        store = BarStore(Path(tmp) / "store")
        store.write("BENCH", "1m", bars)
        t_read = timeit(lambda: store.read("BENCH", "1m"), rep)
        results.append(("BarStore.read", t_read, ""))
        t_load_store = timeit(lambda: load_bars("store:BENCH/1m", store_root=store.root), rep)
        results.append(("load_bars store: (read + validate)", t_load_store, ""))

    print(f"# data layer, {n:,} one-minute bars, median of {rep}")
    print(f"# python {platform.python_version()}, pandas {pd.__version__}, "
          f"{platform.machine()}, {platform.processor() or 'cpu'}")
    print(f"{'step':40s} {'seconds':>9s} {'Mrows/s':>8s}  note")
    for name, seconds, note in results:
        print(f"{name:40s} {seconds:9.3f} {n / seconds / 1e6:8.2f}  {note}")


if __name__ == "__main__":
    main()
