"""Benchmark of the trading environments (rltrade.envs) against gym-anytrading and gym-trading-env.

Usage: python benchmarks/bench_envs.py [--bars 100000] [--steps N] [--repeat 3]
                                        [--short-bars 10000] [--long-bars 1000000] [--quick]
                                        [--clock wall|cpu] [--threads 2]

One run, numba caches warm, median of ``--repeat`` runs, random actions drawn before the timed
loops (the same sequence for every env; gym-anytrading's two actions come from the same
generator):

* one dataset of ``--bars`` hourly bars (``synthetic_market("regime")`` + ``build_dataset``
  with the default spec: window 32, every default feature and 5 strategies, so the observation
  is ``market [32, 51]`` + ``account [9]``), and the same OHLCV fed to gym-anytrading's
  ``StocksEnv(window_size=32)`` and gym-trading-env's ``TradingEnv(windows=32,
  positions=[-1, 0, 1])`` (its five ``feature_*`` columns from its documentation's example);
* µs per step of ``TradingEnv`` (discrete3, default window layout) in train mode (1,024-step
  episodes with random starts, the resets inside the loop timed too) and in eval mode (one pass,
  like the other two), of ``StocksEnv`` and of gym-trading-env's ``TradingEnv`` (one pass each;
  the reset before a pass is not timed), and the ratios ours / theirs;
* env-steps per second of ``VecTradingEnv`` with 1, 16 and 64 envs (SB3 API, episodes
  auto-reset inside the loop);
* threads: ``VecTradingEnv`` with 64 and 1,024 envs stepped on one numba thread and split over
  ``--threads`` (``threads=``; the default is one; torch set to one thread, as training does
  by default, so that it leaves the cores to numba), alternating within each repeat so that
  both see the same machine load, always on wall time (a CPU clock would miss the other
  threads' work); ``--threads 1`` skips it;
* dataset length: ``TradingEnv`` and ``VecTradingEnv(64)`` steps on the first
  ``--short-bars`` bars of a ``--long-bars`` dataset and on all of it, and ``reset()`` of ours
  and of gym-trading-env on both (its reset is O(N));
* step index: the first 1,000 steps of one eval-mode episode against steps 200,000-201,000 of
  the same episode (``equity_floor=0`` so random trading cannot end it first).

``--steps`` is the number of env-steps per timed run (default: one pass over the dataset);
``--quick`` is a smoke test of a few seconds with tiny sizes. ``--clock cpu`` times with the
calling thread's CPU time instead of wall time: every timed loop is single-threaded, so on an
idle machine the two agree, and on a shared one the CPU time leaves out the time the process
waited for a core (the competitors are timed with the same clock).
"""

from __future__ import annotations

import argparse
import gc
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import numba
import numpy as np
import pandas as pd

from common import machine, print_rows
from rltrade.data.synthetic import synthetic_market
from rltrade.envs import TradingEnv, VecTradingEnv
from rltrade.envs.core import MIN_ENVS_PER_THREAD
from rltrade.features import build_dataset
from rltrade.features.dataset import Dataset

WINDOW = 32  # the default EnvConfig.window; the competitors get the same
VEC_SIZES = (1, 16, 64)
THREAD_SIZES = (64, 1024)
REF_ANYTRADING_US = 3.0  # the reference figures, used when a package is missing
REF_GTE_US = 22.5

Row = tuple[str, str, str]
CLOCK: Callable[[], float] = time.perf_counter  # --clock cpu: time.thread_time


def timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``fn`` on :data:`CLOCK`."""
    times = []
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return statistics.median(times)


# -- drivers -----------------------------------------------------------------------------------
def drive(env: Any, actions: Sequence[int]) -> int:
    """Step ``env`` through ``actions``, resetting at episode ends (the same loop for all);
    returns how many episodes ended."""
    step = env.step
    reset = env.reset
    ends = 0
    for a in actions:
        _, _, terminated, truncated, _ = step(a)
        if terminated or truncated:
            reset()
            ends += 1
    return ends


def per_step(env: Any, actions: Sequence[int], repeat: int) -> float:
    """Median seconds per step of ``actions`` from a fresh episode (that reset is not timed)."""
    gc.collect()
    times = []
    for _ in range(repeat):
        env.reset(seed=0)
        times.append(timeit(lambda: drive(env, actions), 1))
    return statistics.median(times) / len(actions)


def drive_vec(venv: VecTradingEnv, actions: np.ndarray) -> None:
    step = venv.step
    for row in actions:
        step(row)


def vec_rate(venv: VecTradingEnv, actions: np.ndarray, repeat: int) -> float:
    """Env-steps per second (median), auto-resets included."""
    gc.collect()
    venv.reset()
    drive_vec(venv, actions[:50])  # warm
    return actions.size / timeit(lambda: drive_vec(venv, actions), repeat)


def reset_cost(reset: Callable[[], object], calls: int, repeat: int) -> float:
    """Median seconds of one ``reset()`` call (``calls`` per timed run)."""

    def run() -> None:
        for _ in range(calls):
            reset()

    gc.collect()
    return timeit(run, repeat) / calls


# -- competitors -------------------------------------------------------------------------------
def import_anytrading() -> tuple[type | None, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from gym_anytrading.envs import StocksEnv
        return StocksEnv, version("gym-anytrading")
    except Exception as exc:  # ImportError, or one of its own imports (matplotlib) failing
        return None, f"skipped: gym-anytrading not importable ({type(exc).__name__}: {exc})"


def import_gte() -> tuple[Any, str]:
    """gym-trading-env, imported so that its ``warnings.filterwarnings("error")`` does not leak
    (``catch_warnings`` restores the process's filters)."""
    try:
        with warnings.catch_warnings():
            import gym_trading_env  # noqa: F401 (registers "TradingEnv")
            import gymnasium as gym
        return gym, version("gym-trading-env")
    except Exception as exc:  # ImportError, or its own imports (ccxt...) failing
        return None, f"skipped: gym-trading-env not importable ({type(exc).__name__}: {exc})"


def anytrading_env(stocks_env: type, ds: Dataset) -> Any:
    df = pd.DataFrame(ds.ohlcv, columns=["Open", "High", "Low", "Close", "Volume"],
                      index=ds.index.tz_localize(None))
    return stocks_env(df, window_size=WINDOW, frame_bound=(WINDOW, len(df)))


def gte_frame(ds: Dataset) -> pd.DataFrame:
    """The bars with the ``feature_*`` columns of gym-trading-env's documentation example (NaN
    warm-ups filled so that it gets exactly the same bars)."""
    df = pd.DataFrame(ds.ohlcv, columns=["open", "high", "low", "close", "volume"],
                      index=ds.index.tz_localize(None))
    close = df["close"]
    df["feature_close"] = close.pct_change().fillna(0.0)
    df["feature_open"] = df["open"] / close
    df["feature_high"] = df["high"] / close
    df["feature_low"] = df["low"] / close
    df["feature_volume"] = df["volume"] / df["volume"].rolling(7 * 24, min_periods=1).max()
    return df


def gte_env(gym: Any, ds: Dataset) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make("TradingEnv", df=gte_frame(ds), positions=[-1, 0, 1], windows=WINDOW,
                        verbose=0)


def quiet(fn: Callable[[], float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


# -- formatting --------------------------------------------------------------------------------
def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} us/step"


def flat_note(a: float, b: float, what: str) -> str:
    r = b / a
    return f"{what} = {r:.2f}x; target flat (< 1.5x): {met(r < 1.5)}"


def build(n_bars: int, seed: int = 0) -> Dataset:
    return build_dataset(synthetic_market("regime", n_bars, seed=seed, timeframe="1h"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=None,
                        help="env-steps per timed run (default: one pass over the dataset)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--short-bars", type=int, default=10_000)
    parser.add_argument("--long-bars", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny sizes, one repeat, a few seconds")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time with wall time (default) or the thread's CPU time")
    parser.add_argument("--threads", type=int, default=2,
                        help="numba threads of the threads section (1: skip it)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    late = 200_000  # first step of the late block of the step-index test
    block = 1_000
    min_vec_steps = 4096
    if args.quick:
        args.bars, args.short_bars, args.long_bars = 3_000, 2_000, 20_000
        args.repeat, late, block, min_vec_steps = 1, 10_000, 500, 200
        args.steps = min(args.steps or 2_000, 2_000)
    t_start = time.perf_counter()
    stocks_env, at_version = import_anytrading()
    gym, gte_version = import_gte()
    # the ~300k objects of the imported libraries (numba, pandas, gymnasium...) are left out of
    # every later collection, so the gc.collect() before each timed section is cheap and a
    # full collection cannot land inside a timed loop with a 0.1 s pause
    gc.collect()
    gc.freeze()
    print("# command: " + shlex.join([sys.executable, *sys.argv]))

    # -- data ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    ds = build(args.bars)
    t_build = time.perf_counter() - t0
    n_steps = args.steps or len(ds) - WINDOW - 2  # one pass for every env
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 3, n_steps).tolist()  # discrete3 and gym-trading-env's 3 positions
    acts2 = rng.integers(0, 2, n_steps).tolist()  # gym-anytrading: Sell / Buy

    env = TradingEnv(ds)
    env.reset(seed=0)
    obs = env.observation_space
    obs_desc = (f"market {obs['market'].shape} + account {obs['account'].shape}")
    drive(env, acts[:2000])  # warm numba and the Python paths

    rows: list[Row] = []
    sections: list[tuple[str, list[Row]]] = [
        (f"single envs: {len(ds):,} bars, {n_steps:,} steps per timed run; our obs "
         f"{obs_desc}", rows)]

    # -- single env ----------------------------------------------------------------------------
    t_train = per_step(env, acts, args.repeat)
    env_eval = TradingEnv(ds, mode="eval")
    env_eval.reset(seed=0)
    drive(env_eval, acts[:200])
    t_eval = per_step(env_eval, acts, args.repeat)

    t_at: float | None = None
    if stocks_env is not None:
        at = anytrading_env(stocks_env, ds)
        at.reset(seed=0)
        drive(at, acts2[:200])
        t_at = quiet(lambda: per_step(at, acts2, args.repeat))
        del at  # its history lists would otherwise live on through the next sections
    t_gte: float | None = None
    if gym is not None:
        gte = gte_env(gym, ds)
        t_gte = quiet(lambda: per_step(gte, acts, args.repeat))
        del gte

    ref_at = t_at if t_at is not None else REF_ANYTRADING_US * 1e-6
    ref_src = "measured" if t_at is not None else "issue's reference"
    rows.append(("TradingEnv discrete3, train (1,024-step episodes, resets timed)", us(t_train),
                 f"target <= StocksEnv ({ref_src} {ref_at * 1e6:.2f} us): "
                 f"{met(t_train <= ref_at)}"))
    rows.append(("TradingEnv discrete3, eval mode (one pass)", us(t_eval),
                 f"target <= StocksEnv: {met(t_eval <= ref_at)}"))
    if t_at is not None:
        rows.append((f"gym-anytrading {at_version} StocksEnv, obs (32, 2), one pass", us(t_at),
                     f"ours/theirs: train {t_train / t_at:.2f}, eval {t_eval / t_at:.2f}"))
    else:
        rows.append(("gym-anytrading StocksEnv", "-", at_version))
    if t_gte is not None:
        rows.append((f"gym-trading-env {gte_version} TradingEnv, obs (32, 7), one pass",
                     us(t_gte), f"ours/theirs: train {t_train / t_gte:.2f}, "
                     f"eval {t_eval / t_gte:.2f} ({t_gte / t_train:.1f}x faster)"))
    else:
        rows.append(("gym-trading-env TradingEnv", "-", gte_version))

    # -- vectorized ----------------------------------------------------------------------------
    vec_rows: list[Row] = []
    sections.append(("VecTradingEnv (SB3 VecEnv, default config, auto-reset inside)", vec_rows))
    rates: dict[int, float] = {}
    for n in VEC_SIZES:
        steps = max(n_steps // n, min_vec_steps)
        vacts = rng.integers(0, 3, (steps, n))
        venv = VecTradingEnv(ds, n, seed=0)
        rates[n] = vec_rate(venv, vacts, args.repeat)
        note = f"{rates[n] / rates[1]:.1f}x one env" if n > 1 else (
            f"{1e6 / rates[n]:.2f} us/env-step")
        if n == 64:
            note += f"; target >= 1,000,000/s: {met(rates[n] >= 1e6)}"
        vec_rows.append((f"VecTradingEnv, {n} env{'s' if n > 1 else ''}, {steps:,} steps",
                         f"{rates[n]:,.0f} env-steps/s", note))
    ref_gte = t_gte if t_gte is not None else REF_GTE_US * 1e-6
    vec_rows.append(("VecTradingEnv(64) env-step rate vs the single envs' step rate", "",
                     f"{rates[64] * ref_at:.1f}x StocksEnv, {rates[64] * ref_gte:.0f}x "
                     "gym-trading-env" + ("" if t_at is not None and t_gte is not None
                                          else " (issue's reference for a missing one)")))

    # -- threads -------------------------------------------------------------------------------
    if args.threads > 1:
        torch = sys.modules.get("torch")  # imported by Stable-Baselines3's VecEnv
        if torch is not None:
            torch.set_num_threads(1)  # as training does by default (training.torch_threads)
        thread_rows: list[Row] = []
        sections.append((f"threads: VecTradingEnv on 1 vs {args.threads} numba threads "
                         "(wall clock, alternating in each repeat; torch on 1 thread as in "
                         "training)", thread_rows))
        for n in THREAD_SIZES:
            steps = max(n_steps // n, min_vec_steps)
            tacts = rng.integers(0, 3, (steps, n))
            venvs = {k: VecTradingEnv(ds, n, seed=0, threads=k) for k in (1, args.threads)}
            used = venvs[args.threads].core.threads
            times: dict[int, list[float]] = {k: [] for k in venvs}
            for venv in venvs.values():
                venv.reset()
                drive_vec(venv, tacts[:50])  # warm
            gc.collect()
            for _ in range(args.repeat):
                for k, venv in venvs.items():
                    t0 = time.perf_counter()
                    drive_vec(venv, tacts)
                    times[k].append(time.perf_counter() - t0)
            one = tacts.size / statistics.median(times[1])
            many = tacts.size / statistics.median(times[args.threads])
            note = (f"{used} threads = {many / one:.2f}x one" if used > 1 else
                    f"threads={args.threads} steps on 1 (under {2 * MIN_ENVS_PER_THREAD} envs): "
                    f"{many / one:.2f}x, the same kernel")
            thread_rows.append((f"VecTradingEnv, {n:,} envs, {steps:,} steps, 1 / {used} threads",
                                f"{one / 1e6:.3f} / {many / 1e6:.3f} M/s", note))

    # -- dataset length ------------------------------------------------------------------------
    len_rows: list[Row] = []
    t0 = time.perf_counter()
    big = build(args.long_bars, seed=1)
    t_big = time.perf_counter() - t0
    small = big.slice(0, args.short_bars)
    sections.append((f"dataset length: {len(small):,} vs {len(big):,} bars (the first "
                     f"{len(small):,} of the long one, built in {t_big:.2f} s)", len_rows))
    len_steps = min(n_steps, len(small) - WINDOW - 2)
    lacts = acts[:len_steps]
    step_t: dict[str, float] = {}
    reset_t: dict[str, float] = {}
    vec_t: dict[str, float] = {}
    vsteps = max(len_steps // 64, min_vec_steps)
    vacts = rng.integers(0, 3, (vsteps, 64))
    for name, d in (("short", small), ("long", big)):
        # eval mode from the first bar, no equity floor: the same bars, actions and fills on
        # both datasets, only their length differs
        e = TradingEnv(d, mode="eval", equity_floor=0.0)
        e.reset(seed=0)
        drive(e, lacts[:200])
        step_t[name] = per_step(e, lacts, args.repeat)
        e = TradingEnv(d)  # train mode: random start bars over the whole dataset
        e.reset(seed=0)
        reset_t[name] = reset_cost(e.reset, 1000 if not args.quick else 50, args.repeat)
        vec_t[name] = vec_rate(VecTradingEnv(d, 64, seed=0), vacts, args.repeat)
        del e
    len_rows.append(("TradingEnv step (eval, same bars and actions), short / long",
                     f"{step_t['short'] * 1e6:.2f} / {us(step_t['long'])}",
                     flat_note(step_t["short"], step_t["long"], "long/short")))
    len_rows.append(("VecTradingEnv(64) env-steps/s (random starts), short / long",
                     f"{vec_t['short'] / 1e6:.2f} / {vec_t['long'] / 1e6:.2f} M/s",
                     flat_note(vec_t["long"], vec_t["short"], "short/long rate")))
    len_rows.append(("TradingEnv reset() (train, random start), short / long",
                     f"{reset_t['short'] * 1e6:.1f} / {reset_t['long'] * 1e6:.1f} us",
                     flat_note(reset_t["short"], reset_t["long"], "long/short")))
    if gym is not None:
        gte_reset: dict[str, float] = {}
        for name, d in (("short", small), ("long", big)):
            g = gte_env(gym, d)
            gte_reset[name] = quiet(lambda g=g: reset_cost(g.reset, 1, args.repeat))
            del g
        len_rows.append(("gym-trading-env reset(), short / long",
                         f"{gte_reset['short'] * 1e3:.2f} / {gte_reset['long'] * 1e3:.1f} ms",
                         f"long/short = {gte_reset['long'] / gte_reset['short']:.0f}x (O(N)); "
                         f"ours {gte_reset['long'] / reset_t['long']:,.0f}x faster at "
                         f"{len(big):,} bars"))
    else:
        len_rows.append(("gym-trading-env reset()", "-", gte_version))

    # -- step index ----------------------------------------------------------------------------
    idx_rows: list[Row] = []
    late = min(late, len(big) - WINDOW - block - 2)
    sections.append((f"step index: one eval episode on {len(big):,} bars, steps 0-{block:,} "
                     f"vs {late:,}-{late + block:,}", idx_rows))
    long_env = TradingEnv(big, mode="eval", equity_floor=0.0)
    long_acts = rng.integers(0, 3, late + block).tolist()
    early_t, late_t = [], []
    ended = False
    for _ in range(args.repeat):
        long_env.reset(seed=0)
        early_t.append(timeit(lambda: drive(long_env, long_acts[:block]), 1))
        ended = ended or drive(long_env, long_acts[block:late]) > 0
        late_t.append(timeit(lambda: drive(long_env, long_acts[late:]), 1))
    te, tl = statistics.median(early_t) / block, statistics.median(late_t) / block
    idx_rows.append(("TradingEnv step, early / late",
                     f"{te * 1e6:.2f} / {us(tl)}",
                     flat_note(te, tl, "late/early")
                     + ("  (NOTE: the episode ended early)" if ended else "")))

    # -- report --------------------------------------------------------------------------------
    try:
        pool = f"thread pool started ({numba.threading_layer()})"
    except ValueError:  # numba: no parallel kernel has run
        pool = "thread pool never started"
    print(f"# rltrade.envs benchmark ({machine()}, "
          f"numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads, {pool}; "
          f"{args.clock} clock; "
          f"median of {args.repeat}; dataset {len(ds):,} 1h bars built in {t_build:.1f} s)")
    print_rows([r for _, rs in sections for r in rs], [(t, len(rs)) for t, rs in sections])
    print(f"\n# total {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
