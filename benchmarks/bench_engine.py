"""Benchmark of the execution engine (rltrade.sim).

Usage: python benchmarks/bench_engine.py [--bars 200000] [--accounts 1024] [--batch-steps 2000]
                                          [--repeat 3]

Times, numba caches warm, median of ``--repeat`` runs:

* one account called from Python, ``eng.step(target)`` on every bar of ``--bars`` synthetic
  hourly bars (default retail costs): a market order that flips long/short every bar (a fill,
  two lot operations and a trade record per bar), and a hold (the same target every bar);
* the general path ``eng.submit(Order.target(x)); eng.advance()`` with a flip every bar;
* the batched path: ``BatchEngine.step(targets)`` for ``--accounts`` accounts at random start
  bars with random targets in {-1, 0, +1} x size (an order every step), in account-bar updates
  per second, with numba's default threads and with one thread;
* backtesting.py 0.6.6 running the same flip-every-bar strategy on ``sample:EURUSD-1h`` (5,000
  bars) against the engine in ``ideal`` mode on the same bars; both must end on the same
  equity, and the ratio of their times per bar is reported.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numba
import numpy as np

from common import machine, print_rows, timeit
from rltrade.data import load_bars
from rltrade.data.synthetic import synthetic_market
from rltrade.sim import BatchEngine, EngineConfig, ExecutionEngine, Order


def single_step(eng: ExecutionEngine, targets: list[float]) -> None:
    eng.reset(0)
    step = eng.step
    for x in targets:
        step(x)


def submit_advance(eng: ExecutionEngine, targets: list[float]) -> None:
    eng.reset(0)
    for x in targets:
        eng.submit(Order.target(x))
        eng.advance()


def batch_run(batch: BatchEngine, starts: np.ndarray, targets: np.ndarray) -> None:
    batch.reset(starts=starts)
    for row in targets:
        batch.step(row)


def backtesting_flip(bars, size: float, commission: float) -> tuple[float, float]:
    """backtesting.py, a long/short flip on every bar; returns (seconds, final equity)."""
    from backtesting import Backtest, Strategy

    class Flip(Strategy):
        def init(self) -> None:
            self.i = 0

        def next(self) -> None:
            self.position.close()
            (self.buy if self.i % 2 == 0 else self.sell)(size=size)
            self.i += 1

    data = bars[["open", "high", "low", "close", "volume"]].copy()
    data.columns = ["Open", "High", "Low", "Close", "Volume"]
    data.index = data.index.tz_localize(None)
    bt = Backtest(data, Flip, cash=1e7, commission=commission, finalize_trades=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        stats = bt.run()
        seconds = time.perf_counter() - t0
    return seconds, float(stats["_equity_curve"]["Equity"].iloc[-2])


def engine_flip(bars, size: float, commission: float) -> tuple[ExecutionEngine, list[float]]:
    ohlcv = bars[["open", "high", "low", "close", "volume"]].to_numpy()
    eng = ExecutionEngine(ohlcv, EngineConfig.ideal(commission, initial_cash=1e7))
    targets = [size if i % 2 == 0 else -size for i in range(len(ohlcv) - 2)]
    return eng, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=1024)
    parser.add_argument("--batch-steps", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    frame = synthetic_market("gbm", args.bars, seed=0, timeframe="1h")
    ohlcv = frame[["open", "high", "low", "close", "volume"]].to_numpy()
    config = EngineConfig(leverage=5.0)
    eng = ExecutionEngine(ohlcv, config)
    n = args.bars - 1
    flip = [10.0 if i % 2 == 0 else -10.0 for i in range(n)]
    hold = [10.0] * n
    single_step(eng, flip[:100])  # warm caches
    submit_advance(eng, flip[:100])

    rows: list[tuple[str, str, str]] = []
    t = timeit(lambda: single_step(eng, flip), args.repeat)
    assert len(eng.trades) == n - 1
    rows.append(("single account, `step(target)`, flip every bar", f"{t / n * 1e6:.2f} us/bar",
                 "target < 3 us: " + ("met" if t / n < 3e-6 else "MISSED")))
    t = timeit(lambda: single_step(eng, hold), args.repeat)
    rows.append(("single account, `step(target)`, hold", f"{t / n * 1e6:.2f} us/bar",
                 "target < 3 us: " + ("met" if t / n < 3e-6 else "MISSED")))
    m = min(n, 50_000)
    t = timeit(lambda: submit_advance(eng, flip[:m]), args.repeat)
    rows.append(("single account, `submit(Order.target)` + `advance()`, flip",
                 f"{t / m * 1e6:.2f} us/bar", ""))

    rng = np.random.default_rng(0)
    size = 10.0
    batch = BatchEngine(ohlcv, config, args.accounts)
    starts = rng.integers(0, args.bars - args.batch_steps - 1, args.accounts)
    targets = rng.choice([-size, 0.0, size], size=(args.batch_steps, args.accounts))
    batch_run(batch, starts, targets[:10])  # warm
    updates = args.accounts * args.batch_steps
    threads = numba.get_num_threads()
    t = timeit(lambda: batch_run(batch, starts, targets), args.repeat)
    rate = updates / t
    rows.append((f"batch, {args.accounts} accounts, random targets, {threads} threads",
                 f"{rate / 1e6:.1f} M account-bars/s",
                 "target >= 10 M/s: " + ("met" if rate >= 1e7 else "MISSED")))
    numba.set_num_threads(1)
    t = timeit(lambda: batch_run(batch, starts, targets), args.repeat)
    rows.append((f"batch, {args.accounts} accounts, random targets, 1 thread",
                 f"{updates / t / 1e6:.1f} M account-bars/s", ""))
    numba.set_num_threads(threads)

    eurusd = load_bars("sample:EURUSD-1h")
    commission = 0.0002
    bt_seconds, bt_equity = backtesting_flip(eurusd, 10_000, commission)
    ref, flips = engine_flip(eurusd, 10_000, commission)
    single_step(ref, flips)
    ours = timeit(lambda: single_step(ref, flips), args.repeat)
    ref.reset(0)
    ref.advance()  # backtesting.py's first decision is after bar 1
    for x in flips[:-1]:
        ref.step(x)
    agree = abs(ref.equity - bt_equity) < 1e-6
    per_bar_bt = bt_seconds / len(flips)
    per_bar = ours / len(flips)
    rows.append(("backtesting.py 0.6.6, flip every bar, EURUSD 5,000 bars",
                 f"{per_bar_bt * 1e6:.1f} us/bar", f"equity agrees: {agree}"))
    rows.append(("engine (ideal mode), same bars and orders", f"{per_bar * 1e6:.2f} us/bar",
                 f"{per_bar_bt / per_bar:.0f}x faster than backtesting.py"))

    print(f"# rltrade.sim benchmark ({machine()}, "
          f"numba {numba.__version__}, {threads} threads; {args.bars:,} bars, "
          f"median of {args.repeat})")
    print_rows(rows)


if __name__ == "__main__":
    main()
