"""Benchmark of paper trading: from a bar's close to the order submitted, with a long history.

Usage: python benchmarks/bench_paper.py [--history 1000000] [--bars 200] [--spec small|default]
                                        [--quick]

A tiny run is trained on a short synthetic market (``synthetic:gbm``, 1h bars), then a paper
session (sim broker) starts after ``--history`` bars of the same kind of market and processes
``--bars`` more, one at a time, through :class:`rltrade.live.PaperTrader`. For each bar the
time from handing the closed bar to the trader to the broker's ``submit`` being called is
recorded (append the bar, extend the Dataset incrementally, write the core's row, step the
engine mirror, reconcile with the broker, observation, policy, risk manager, order); bars
that hold their position send no order and are not counted. The whole bar (with the state
commit: ``state.json`` written and fsynced) is reported beside it.

``--spec small``: the benchmark run's spec (returns, RSI, MACD, supertrend, OTT on 4h);
``--spec default``: the default feature spec (18 groups, five strategies). Target: the median
bar close -> order submitted under 50 ms with a 1,000,000-bar history.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine
from rltrade.agents.training import train
from rltrade.config import RunConfig
from rltrade.data import load_bars
from rltrade.envs.config import EnvConfig
from rltrade.live.session import Session
from rltrade.live.sim import SimBroker
from rltrade.live.trader import PaperTrader, step_columns

SMALL_SPEC = {"features": [{"name": "returns", "params": {"periods": [1, 4]}}, {"name": "rsi"},
                           {"name": "macd"}],
              "strategies": [{"name": "supertrend", "timeframe": None},
                             {"name": "ott", "timeframe": "4h"}]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--history", type=int, default=1_000_000)
    ap.add_argument("--bars", type=int, default=200)
    ap.add_argument("--spec", choices=["small", "default"], default="small")
    ap.add_argument("--quick", action="store_true", help="a smoke test on tiny inputs")
    args = ap.parse_args(argv)
    if args.quick:
        args.history, args.bars = 4000, 20
    settings: dict = {
        "data": {"source": "synthetic:gbm?n_bars=3000&seed=1"},
        "env": {"window": 16},
        "agent": {"hyperparams": {"n_steps": 64, "batch_size": 64, "n_epochs": 1},
                  "policy": {"net_arch": [32]}},
        "training": {"total_steps": 128, "n_envs": 2, "eval_freq": 0, "checkpoint_freq": 0,
                     "torch_threads": 1},
    }
    if args.spec == "small":
        settings["features"] = SMALL_SPEC
    cfg = RunConfig.from_dict(settings)
    root = Path(tempfile.mkdtemp(prefix="bench_paper_"))
    run = train(cfg, "bench", runs_root=root).run
    n_total = args.history + args.bars
    t0 = time.perf_counter()
    bars = load_bars(f"synthetic:gbm?n_bars={n_total}&seed=2", timeframe="1h")
    load_s = time.perf_counter() - t0
    env = EnvConfig.build(run.config.env)
    start = args.history - 1
    venue = SimBroker(bars, env.engine, int(bars.index[start].value), symbol="SYNTH")
    submitted: list[float] = []
    real_submit = venue.submit

    def timed_submit(order):
        submitted.append(time.perf_counter())
        return real_submit(order)

    venue.submit = timed_submit  # type: ignore[method-assign]
    session = Session(root / "bench" / "paper" / "bench", step_columns(env))
    t0 = time.perf_counter()
    trader = PaperTrader(run, venue, session, bars.iloc[: start + 1], name="bench")
    setup_s = time.perf_counter() - t0
    trader.start(True)
    to_order, whole = [], []
    last = int(bars.index[start].value)
    for _ in range(args.bars):
        nxt = venue.next_bar(last)
        if nxt is None:
            break
        ts, values = nxt
        before = len(submitted)
        t1 = time.perf_counter()
        trader.on_bar(ts, values, venue.has_next(ts))
        whole.append(time.perf_counter() - t1)
        if len(submitted) > before:
            to_order.append(submitted[before] - t1)
        last = ts

    def ms(values: list[float], q: float) -> str:
        return f"{1000 * float(np.quantile(values, q)):.1f} ms" if values else "n/a"

    print(f"bench_paper on {machine()}, Python {sys.version.split()[0]}")
    print(f"history {args.history:,} bars (load {load_s:.1f} s; trader setup: batch Dataset, "
          f"calibration, engine core, policy {setup_s:.1f} s), spec {args.spec} "
          f"({len(trader.data.dataset.feature_names)} features, "
          f"{len(trader.data.dataset.signal_names)} signal columns), trailing window "
          f"{trader.tail} bars, on the whole history: {trader.data.full_groups or 'none'}")
    print(f"bars processed {len(whole)}, orders sent {len(to_order)}")
    print(f"bar close -> order submitted: median {ms(to_order, 0.5)}, p90 {ms(to_order, 0.9)}, "
          f"max {ms(to_order, 1.0)}  (target: median < 50 ms)")
    print(f"whole bar (with state.json commit): median {ms(whole, 0.5)}, p90 {ms(whole, 0.9)}")
    if to_order:
        print(f"target met: {statistics.median(to_order) < 0.05}")


if __name__ == "__main__":
    main()
