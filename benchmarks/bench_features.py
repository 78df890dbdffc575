"""Benchmark of the features pipeline: 1,000,000 one-minute bars to a Dataset.

Usage: python benchmarks/bench_features.py [--rows 1000000] [--repeat 3] [--reference-bars 3000]

Times, on ``--rows`` synthetic one-minute bars (``synthetic_market("regime")``):

* ``build_dataset`` with the default spec (its five strategies on their default timeframes);
* ``build_dataset`` with the default features and all five strategies on each of 15m, 1h and
  4h (fifteen strategy instances);
* the pieces: TA-Lib indicators, market features, resampling + strategies + merge;
* the usual per-window approach (run each strategy's plain reference on every trailing window),
  timed on ``--reference-bars`` bars of each strategy timeframe and extrapolated to the number of
  strategy bars in ``--rows`` one-minute bars.
"""

from __future__ import annotations

import argparse
import platform
import time

from common import timeit
from rltrade.data.synthetic import synthetic_market
from rltrade.features import FEATURES, STRATEGIES, BarArrays, FeatureSpec, build_dataset
from rltrade.features.dataset import compute_features, compute_signals
from rltrade.features.spec import DEFAULT_SPEC
from rltrade.features.strategies import make_strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference-bars", type=int, default=3000)
    args = parser.parse_args()
    frame = synthetic_market("regime", args.rows, seed=0, timeframe="1m")
    bars = BarArrays.from_frame(frame)
    default = FeatureSpec.default()
    all_tf = FeatureSpec.from_dict({
        "features": DEFAULT_SPEC["features"],
        "strategies": [{name: {"timeframe": tf}} for tf in ("15m", "1h", "4h")
                       for name in STRATEGIES],
    })
    features_only = FeatureSpec.from_dict({"features": DEFAULT_SPEC["features"]})
    talib_groups = FeatureSpec.from_dict({"features": [
        f for f in DEFAULT_SPEC["features"]
        if f["name"] in ("macd", "bbands", "rsi", "adx", "cci", "sma", "atr")]})
    build_dataset(frame.iloc[:20_000], all_tf)  # warm numba caches

    rows: list[tuple[str, float, str]] = []
    rows.append(("TA-Lib indicators (default set)", timeit(
        lambda: compute_features(bars, talib_groups), args.repeat), ""))
    rows.append(("all default features (no strategies)", timeit(
        lambda: compute_features(bars, features_only), args.repeat), ""))
    rows.append(("5 strategies x 3 timeframes (resample+run+merge)", timeit(
        lambda: compute_signals(bars, all_tf), args.repeat), ""))
    t_default = timeit(lambda: build_dataset(frame, default), args.repeat)
    rows.append(("build_dataset, default spec", t_default, "target < 3 s"))
    t_all = timeit(lambda: build_dataset(frame, all_tf), args.repeat)
    rows.append(("build_dataset, 5 strategies on 15m/1h/4h", t_all, "target < 3 s"))

    # The per-window approach: each strategy's plain reference on every trailing window.
    ref_total = 0.0
    ref_lines = []
    n_ref = args.reference_bars
    for tf, minutes in (("15m", 15), ("1h", 60), ("4h", 240)):
        higher = synthetic_market("regime", n_ref, seed=1, timeframe=tf)
        hb = BarArrays.from_frame(higher)
        strategy_bars = args.rows // minutes
        for name in STRATEGIES:
            strategy = make_strategy(name)
            window = max(strategy.lookback, strategy.min_candles)
            sample = range(window, n_ref, max(1, (n_ref - window) // 200))
            t0 = time.perf_counter()
            for t in sample:
                strategy.reference(hb.slice(max(0, t + 1 - window), t + 1))
            per_call = (time.perf_counter() - t0) / len(sample)
            ref_total += per_call * strategy_bars
            ref_lines.append(f"  {name}@{tf}: {per_call * 1e3:.3f} ms per window of {window} bars")
    rows.append(("per-window reference, extrapolated", ref_total,
                 f"{ref_total / t_all:,.0f}x slower than build_dataset"))

    print(f"# features pipeline, {args.rows:,} one-minute bars, median of {args.repeat}")
    print(f"# python {platform.python_version()}, {platform.machine()}; "
          f"{len(FEATURES)} feature groups, {len(STRATEGIES)} strategies registered")
    print(f"{'step':52s} {'seconds':>10s}  note")
    for name, seconds, note in rows:
        print(f"{name:52s} {seconds:10.3f}  {note}")
    print("\n".join(ref_lines))


if __name__ == "__main__":
    main()
