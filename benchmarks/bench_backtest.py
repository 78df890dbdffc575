"""Benchmark of the backtest runner (rltrade.evaluation.run_backtest).

Usage: python benchmarks/bench_backtest.py [--bars 1000000] [--repeat 3] [--sb3-bars 5000]
                                            [--part all|mlp|rule] [--skip-backtesting]

Times, numba caches warm, median of ``--repeat`` runs (backtesting.py: one run):

* **MLP policy.** ``--bars`` hourly bars of ``synthetic_market("planted")`` through
  ``build_dataset`` with the default spec (31 features + 5 strategies = 51 market columns),
  ``EnvConfig(window=32, layout="flat")`` (a 1,641-value observation), an SB3 PPO
  ``MlpPolicy`` (64-64 tanh, untrained: it trades a lot, the slow case) turned into a
  :class:`~rltrade.agents.NumpyMlpPolicy`; ``run_backtest`` without files, metrics or
  benchmark, in bars per second, with the first layer's market part computed by torch's
  ``conv1d`` (the default when torch is installed) and by numpy; the same run with metrics and
  the buy-and-hold benchmark; and the SB3 model itself (``model.predict`` once per bar, the
  generic path) on the first ``--sb3-bars`` bars.
* **Rule strategy.** SMA 10/30 crossover (long after the fast SMA crosses above the slow one,
  short after it crosses below; TA-Lib's SMA on both sides, ``self.I(talib.SMA, ...)`` in
  backtesting.py, the same values, so the same crossing bars) on
  ``--bars`` bars of ``synthetic_market("ou")``, 0.1 % commission, next-open fills, 100 units a
  trade: a planned policy through ``run_backtest`` (engine in ``ideal`` mode, the size fixed by
  ``max_position``), and backtesting.py 0.6.6 (``position.close()`` then ``buy``/``sell(size=
  100)``, ``finalize_trades=True``) on the same bars. Both must make the same trades and end
  on the same equity (compared at the second-to-last bar: backtesting.py closes the last trade
  at the last bar's open). The ratio of their times is reported for the whole ``run_backtest``
  (steps, trades, summary) and for its engine pass alone (``result.timings["loop"]``).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numba
import numpy as np
import talib

from common import machine, print_rows, timeit
from rltrade.agents import NumpyMlpPolicy
from rltrade.agents.baselines import sides_to_actions
from rltrade.agents.policy import PlanPolicy
from rltrade.data.synthetic import synthetic_market
from rltrade.envs import EnvConfig, TradingEnv
from rltrade.envs.backtesting_py import backtesting_data
from rltrade.evaluation import run_backtest
from rltrade.features import FeatureSpec, build_dataset
from rltrade.sim import EngineConfig

TARGET_BARS_PER_S = 50_000
TARGET_RATIO = 50.0
SIZE = 100.0
COMMISSION = 0.001


def sma_sides(close: np.ndarray, fast: int = 10, slow: int = 30) -> np.ndarray:
    """+1 after the fast SMA crosses above the slow one, -1 after it crosses below, flat
    before the first cross (backtesting.py's ``crossover``, on TA-Lib's SMA as the
    backtesting.py strategy below uses: the same indicator values on both sides, so the
    crossings are the same bars; pandas' rolling mean differs from it by ~1e-12)."""
    d = talib.SMA(close, fast) - talib.SMA(close, slow)  # NaN in the warm-up
    # the sign of a difference of two floats is exact: d < 0 iff fast < slow
    below, above = d < 0, d > 0
    up = below[:-1] & above[1:]  # crossover(fast, slow) at bar t + 1
    down = above[:-1] & below[1:]
    events = np.flatnonzero(up | down)
    sides = np.zeros(len(close), dtype=np.int8)
    if len(events):
        starts = events + 1
        values = np.where(up[events], 1, -1).astype(np.int8)
        sides[starts[0]:] = np.repeat(values, np.diff(np.append(starts, len(close))))
    return sides


def sma_policy() -> PlanPolicy:
    return PlanPolicy(lambda ds, cfg: sides_to_actions(sma_sides(ds.ohlcv[:, 3])),
                      name="sma_10_30", action_scheme="discrete3")


def backtesting_sma(ds) -> tuple[float, int, float]:
    """backtesting.py's SMA 10/30 crossover: (seconds, trades, equity at the second-to-last
    bar)."""
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    class SmaCross(Strategy):
        def init(self) -> None:
            self.s1 = self.I(talib.SMA, self.data.Close, 10)
            self.s2 = self.I(talib.SMA, self.data.Close, 30)

        def next(self) -> None:
            if crossover(self.s1, self.s2):
                self.position.close()
                self.buy(size=SIZE)
            elif crossover(self.s2, self.s1):
                self.position.close()
                self.sell(size=SIZE)

    bt = Backtest(backtesting_data(ds), SmaCross, cash=1e7, commission=COMMISSION,
                  finalize_trades=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        stats = bt.run()
        seconds = time.perf_counter() - t0
    return seconds, int(stats["# Trades"]), float(stats["_equity_curve"]["Equity"].iloc[-2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sb3-bars", type=int, default=5000)
    parser.add_argument("--part", choices=("all", "mlp", "rule"), default="all",
                        help="run only the MLP policy part or only the rule strategy part")
    parser.add_argument("--skip-backtesting", action="store_true",
                        help="leave out the backtesting.py comparison (about 10 s per 1M bars)")
    args = parser.parse_args()
    from stable_baselines3 import PPO

    rows: list[tuple[str, str, str]] = []

    if args.part in ("all", "mlp"):
        # -- (a) an MLP policy --------------------------------------------------------------------
        ds = build_dataset(synthetic_market("planted", args.bars, seed=0, timeframe="1h"))
        cfg = EnvConfig.build(None, window=32, layout="flat", equity_floor=0.0)
        model = PPO("MlpPolicy", TradingEnv(ds.slice(0, 2000), cfg), seed=0, device="cpu")
        mlp = NumpyMlpPolicy.from_sb3(model)
        n_bars = len(ds) - cfg.window + 1
        run_backtest(mlp, ds.slice(0, 500), cfg, benchmark=False, metrics=False)  # warm
        for backend in ("auto", "numpy"):
            mlp.backend = backend
            t = timeit(lambda: run_backtest(mlp, ds, cfg, benchmark=False, metrics=False),
                       args.repeat)
            rate = n_bars / t
            label = "torch conv1d" if backend == "auto" else "numpy matmul"
            rows.append((f"MLP policy, NumpyMlpPolicy, first layer by {label}",
                         f"{rate:,.0f} bars/s",
                         f"target >= {TARGET_BARS_PER_S:,}: "
                         + ("met" if rate >= TARGET_BARS_PER_S else "MISSED")))
        mlp.backend = "auto"
        t0 = time.perf_counter()
        full = run_backtest(mlp, ds, cfg)
        t_full = time.perf_counter() - t0
        rows.append(("  same, with metrics and the buy-and-hold benchmark",
                     f"{n_bars / t_full:,.0f} bars/s",
                     ", ".join(f"{k} {v:.2f} s" for k, v in full.timings.items())))
        small = ds.slice(0, min(len(ds), args.sb3_bars))
        t_sb3 = timeit(lambda: run_backtest(model, small, cfg, benchmark=False, metrics=False), 1)
        sb3_rate = (len(small) - cfg.window + 1) / t_sb3
        check = run_backtest(mlp, small, cfg, benchmark=False, metrics=False)
        ref = run_backtest(model, small, cfg, benchmark=False, metrics=False)
        same = bool((check.steps["action"] == ref.steps["action"]).all())
        rows.append((f"  SB3 model.predict per bar (generic path), {len(small):,} bars",
                     f"{sb3_rate:,.0f} bars/s",
                     f"NumpyMlpPolicy {n_bars / t_full:,.0f} / {sb3_rate:,.0f} = "
                     f"{n_bars / t_full / sb3_rate:.0f}x; same actions: {same}"))

    if args.part in ("all", "rule"):
        # -- (b) a rule strategy against backtesting.py ------------------------------------------
        spec = FeatureSpec.from_dict({"features": {"returns": {"periods": [1]}}, "strategies": []})
        bars = build_dataset(synthetic_market("ou", args.bars + 1, seed=0, timeframe="1h"), spec)
        engine = EngineConfig.ideal(COMMISSION, initial_cash=1e7, max_position=SIZE)
        sma_cfg = EnvConfig.build(None, window=1, equity_floor=0.0, engine=engine)
        policy = sma_policy()
        # warm: numba, and this process's first touch of ~200 MB (on this VM, memory a process
        # touches for the first time costs up to 1 s per 500 MB; both tools run after this)
        run_backtest(policy, bars, sma_cfg, benchmark=False, metrics=False)
        # only the last result is kept: a result holds ~150 MB, and keeping every one alive
        # would make each run touch memory this process never used (see the warm-up)
        loops: list[float] = []
        last: list = []

        def once() -> None:
            last[:] = []
            last.append(run_backtest(policy, bars, sma_cfg, benchmark=False, metrics=False))
            loops.append(last[0].timings["loop"])

        t_ours = timeit(once, args.repeat)
        result = last[0]
        t_loop = float(np.median(loops))
        n_trades = len(result.trades) + int(result.summary["open_position"] != 0)
        rows.append((f"SMA 10/30 crossover, run_backtest (steps + trades + summary), "
                     f"{len(bars):,} bars", f"{t_ours:.3f} s", f"{n_trades:,} trades"))
        rows.append(("  its engine pass (the loop of env step functions)", f"{t_loop:.3f} s", ""))
        if not args.skip_backtesting:
            bt_seconds, bt_trades, bt_equity = backtesting_sma(bars)
            equity = float(result.steps["equity"].iloc[-2])
            agree = abs(equity - bt_equity) <= 1e-6 * abs(bt_equity)
            assert bt_trades == n_trades, (f"trades differ: backtesting.py {bt_trades}, "
                                           f"ours {n_trades}")
            assert agree, f"final equity differs: backtesting.py {bt_equity}, ours {equity}"
            ratio = bt_seconds / t_ours
            rows.append(("  backtesting.py 0.6.6, same bars, orders and commission",
                         f"{bt_seconds:.3f} s",
                         f"same trades: {bt_trades == n_trades}, equity agrees: {agree}"))
            rows.append(("  ratio, whole run_backtest", f"{ratio:.1f}x",
                         f"target >= {TARGET_RATIO:.0f}x: "
                         + ("met" if ratio >= TARGET_RATIO else "MISSED")))
            rows.append(("  ratio, engine pass alone", f"{bt_seconds / t_loop:.1f}x", ""))

    print(f"# rltrade backtest benchmark ({machine()}, "
          f"numba {numba.__version__}, {numba.get_num_threads()} threads; {args.bars:,} bars, "
          f"median of {args.repeat})")
    print_rows(rows)


if __name__ == "__main__":
    main()
