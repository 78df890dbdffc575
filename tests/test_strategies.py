"""Rule strategies: ``compute`` equals the per-window ``reference``, no lookahead, warm-up,
hand-computed cases, shared kernels equal to their reference twins and to TA-Lib, parameter
checks.

Every test that loops over strategies is parametrized over the registry, so a newly
registered strategy is checked without touching this file.
"""

from __future__ import annotations

import zlib
from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as hst

from rltrade.data.loaders import load_bars
from rltrade.data.synthetic import synthetic_market
from rltrade.data.timeframes import parse_timeframe
from rltrade.errors import ConfigError, DataError
from rltrade.features.base import BarArrays
from rltrade.features.strategies import (
    FLAT,
    HOLD,
    LONG,
    SHORT,
    STRATEGIES,
    Strategy,
    kernels,
    make_strategy,
)

NAMES = list(STRATEGIES)
DATASETS = ("eurusd", "regime-3", "regime-8")
ALL_CODES = frozenset({FLAT, LONG, SHORT, HOLD})

EXHAUSTIVE = 300  # every t for this many bars after the warm-up ...
SAMPLED = 200  # ... then this many random t's


@cache
def _dataset(key: str) -> BarArrays:
    if key == "eurusd":
        return BarArrays.from_frame(load_bars("sample:EURUSD-1h"))
    kind, seed = key.split("-")
    return BarArrays.from_frame(synthetic_market(kind, 3000, seed=int(seed)))


def _emits(strategy: Strategy) -> frozenset[int]:
    return frozenset(strategy.emits)


def _rng(*keys: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(keys).encode()))


def _check_ts(n: int, min_candles: int, rng: np.random.Generator) -> np.ndarray:
    """Every t up to ``EXHAUSTIVE`` bars after the warm-up, then a random sample."""
    head = np.arange(min(n, min_candles + EXHAUSTIVE))
    rest = np.arange(len(head), n)
    tail = rng.choice(rest, size=min(SAMPLED, len(rest)), replace=False) if len(rest) else rest
    return np.concatenate([head, np.sort(tail), [n - 1]]).astype(int)


def _bars(
    close: np.ndarray | list[float],
    high: np.ndarray | list[float] | None = None,
    low: np.ndarray | list[float] | None = None,
    open_: np.ndarray | list[float] | None = None,
) -> BarArrays:
    """Hourly bars from price arrays (high/low default to the close, open to the last close)."""
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    high = close.copy() if high is None else np.asarray(high, dtype=np.float64)
    low = close.copy() if low is None else np.asarray(low, dtype=np.float64)
    if open_ is None:
        open_ = np.concatenate([close[:1], close[:-1]])
    timestamps = np.datetime64("2024-01-01T00:00", "ns").astype(np.int64) + np.arange(
        n, dtype=np.int64
    ) * 3_600_000_000_000
    return BarArrays(
        timestamps, np.asarray(open_, dtype=np.float64), high, low, close,
        np.full(n, 1000.0), parse_timeframe("1h"),
    )


def _random_walk(seed: int, n: int, tick: float | None) -> BarArrays:
    """Random-walk bars; with ``tick`` prices are rounded to it, so ties and flat bars occur."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0.0, 0.001, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.004, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.004, n)))
    if tick is not None:
        close, open_ = np.round(close / tick) * tick, np.round(open_ / tick) * tick
        high = np.maximum(np.round(high / tick) * tick, np.maximum(open_, close))
        low = np.minimum(np.round(low / tick) * tick, np.minimum(open_, close))
    return _bars(close, high, low, open_)


def _assert_matches_reference(strategy: Strategy, bars: BarArrays, ts: np.ndarray) -> None:
    signals = strategy.compute(bars)
    assert signals.dtype == np.int8 and signals.shape == (len(bars),)
    bad = []
    for t in ts:
        ref = strategy.reference(bars.slice(0, int(t) + 1))
        if ref != signals[t]:
            bad.append((int(t), int(signals[t]), ref))
    assert not bad, f"{strategy.name}: (t, compute, reference) differ at {bad[:10]}"


# ------------------------------------------------------------------------------------------
# compute == reference


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("name", NAMES)
def test_compute_matches_reference(name: str, dataset: str) -> None:
    bars = _dataset(dataset)
    strategy = make_strategy(name)
    ts = _check_ts(len(bars), strategy.min_candles, _rng(name, dataset))
    _assert_matches_reference(strategy, bars, ts)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=8, deadline=None)
@given(
    seed=hst.integers(0, 2**32 - 1),
    n=hst.integers(1, 260),
    tick=hst.sampled_from([None, 0.01, 0.5]),
)
def test_compute_matches_reference_random_walks(
    name: str, seed: int, n: int, tick: float | None
) -> None:
    bars = _random_walk(seed, n, tick)
    _assert_matches_reference(make_strategy(name), bars, np.arange(n))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=8, deadline=None)
@given(data=hst.data(), seed=hst.integers(0, 2**32 - 1), n=hst.integers(1, 200))
def test_compute_matches_reference_random_params(
    name: str, data: hst.DataObject, seed: int, n: int
) -> None:
    """Other parameter values (small periods included) keep compute and reference equal."""
    cls = STRATEGIES[name]
    params: dict[str, Any] = {}
    for key, default in cls.defaults.items():
        if isinstance(default, bool):
            continue
        if isinstance(default, int):
            params[key] = data.draw(hst.integers(1, max(2, 2 * default)), label=key)
        elif isinstance(default, float):
            params[key] = data.draw(
                hst.floats(default / 2, default * 2, allow_nan=False), label=key
            )
    try:
        strategy = make_strategy(name, **params)
    except ConfigError:
        assume(False)
        raise
    _assert_matches_reference(strategy, _random_walk(seed, n, 0.01), np.arange(n))


# ------------------------------------------------------------------------------------------
# No lookahead


@pytest.mark.parametrize("name", NAMES)
def test_truncation_does_not_change_signals(name: str) -> None:
    bars = _dataset("eurusd")
    strategy = make_strategy(name)
    full = strategy.compute(bars)
    rng = _rng(name, "truncation")
    for t in rng.choice(len(bars), size=400, replace=False):
        assert strategy.compute(bars.slice(0, int(t) + 1))[-1] == full[t], f"t={t}"
    for t in (0, strategy.min_candles - 2, strategy.min_candles - 1, strategy.min_candles,
              777, 2501, len(bars) - 2):
        if t < 0:
            continue
        prefix = strategy.compute(bars.slice(0, t + 1))
        np.testing.assert_array_equal(prefix, full[: t + 1], err_msg=f"{name} t={t}")


@pytest.mark.parametrize("name", NAMES)
def test_future_bars_do_not_leak(name: str) -> None:
    """Replacing everything after bar t with garbage leaves signals up to t unchanged."""
    bars = _dataset("regime-3")
    strategy = make_strategy(name)
    full = strategy.compute(bars)
    t = 1500
    rng = np.random.default_rng(0)
    mangled = [a.copy() for a in (bars.open, bars.high, bars.low, bars.close)]
    for a in mangled:
        a[t + 1 :] *= np.exp(rng.normal(0, 0.2, len(a) - t - 1))
    o, c = mangled[0], mangled[3]
    h = np.maximum(mangled[1], np.maximum(o, c))
    lo = np.minimum(mangled[2], np.minimum(o, c))
    other = BarArrays(bars.timestamps, o, h, lo, c, bars.volume, bars.timeframe)
    np.testing.assert_array_equal(strategy.compute(other)[: t + 1], full[: t + 1])


# ------------------------------------------------------------------------------------------
# Output, warm-up, signal coverage


@pytest.mark.parametrize("name", NAMES)
def test_output_warmup_and_signal_coverage(name: str) -> None:
    bars = _dataset("eurusd")
    strategy = make_strategy(name)
    signals = strategy.compute(bars)
    assert signals.dtype == np.int8
    assert signals.shape == (len(bars),)
    assert set(np.unique(signals).tolist()) <= ALL_CODES
    assert (signals[: strategy.min_candles - 1] == HOLD).all()
    emitted = set(np.unique(signals[strategy.min_candles - 1 :]).tolist())
    expected = _emits(strategy)
    assert emitted <= expected, f"{name} emitted {emitted - expected}, which it never should"
    for code in (LONG, SHORT, FLAT):
        if code in expected:
            assert code in emitted, f"{name} never emitted {code} on EURUSD"
    assert 1 <= strategy.min_candles <= strategy.lookback


@pytest.mark.parametrize("name", NAMES)
def test_short_inputs_are_all_hold(name: str) -> None:
    strategy = make_strategy(name)
    bars = _dataset("eurusd")
    for n in (0, 1, 2, strategy.min_candles - 1):
        signals = strategy.compute(bars.slice(0, n))
        assert signals.dtype == np.int8 and signals.shape == (n,)
        assert (signals == HOLD).all()
        if n:
            assert strategy.reference(bars.slice(0, n)) == HOLD
    with pytest.raises(DataError):
        strategy.reference(bars.slice(0, 0))


def test_registry_order_and_defaults() -> None:
    assert NAMES[:5] == ["awesome_macd", "bbands_rsi", "ott", "supertrend", "atr_breakout"]
    timeframes = {name: STRATEGIES[name].timeframe for name in NAMES[:5]}
    assert timeframes == {
        "awesome_macd": "1h", "bbands_rsi": "15m", "ott": "4h", "supertrend": "1h",
        "atr_breakout": "4h",
    }
    expected_min_candles = {
        "awesome_macd": 35, "bbands_rsi": 21, "ott": 13, "supertrend": 12, "atr_breakout": 22,
    }
    for name, value in expected_min_candles.items():
        assert make_strategy(name).min_candles == value, name


# ------------------------------------------------------------------------------------------
# Hand-computed cases


def test_supertrend_flips_short_exactly_at_the_crash() -> None:
    # close = 100 + t, high/low = close -+ 0.5, open = previous close: TR = 1.5 from bar 1,
    # ATR(10) = 1.5, bands = close -+ 4.5 at bar 10. The upper band stays at 110 + 4.5 until a
    # close exceeds it (bar 15: 115 > 114.5, first breakout: LONG); the lower band trails at
    # close[t] - 4.5. Bar 30 crashes to 110 < 129 - 4.5: SHORT; flat afterwards: nothing.
    close = [100.0 + t for t in range(30)] + [110.0] * 10
    high = [c + 0.5 for c in close]
    low = [c - 0.5 for c in close]
    bars = _bars(close, high, low)
    strategy = make_strategy("supertrend")
    signals = strategy.compute(bars)
    expected = np.full(len(close), HOLD, dtype=np.int8)
    expected[15] = LONG
    expected[30] = SHORT
    np.testing.assert_array_equal(signals, expected)
    assert [strategy.reference(bars.slice(0, t + 1)) for t in range(len(close))] == list(expected)


def test_bbands_rsi_hand_case() -> None:
    # Closes alternate 100, 101: any 20-bar window has middle 100.5 and population sd 0.5, so
    # the bands are 99.5 / 101.5 and the close crosses the middle on every bar (FLAT from the
    # first signal bar, 20) while RSI stays near 50. Bar 40 falls to 80: far below the lower
    # band, RSI ~ 20: LONG. Bar 41 jumps to 140: above the upper band, RSI ~ 73: SHORT (both
    # also cross the middle, but LONG/SHORT take precedence over FLAT).
    close = [100.0 + (t % 2) for t in range(40)] + [80.0, 140.0]
    bars = _bars(close)
    strategy = make_strategy("bbands_rsi")
    expected = np.full(len(close), HOLD, dtype=np.int8)
    expected[20:40] = FLAT
    expected[40] = LONG
    expected[41] = SHORT
    np.testing.assert_array_equal(strategy.compute(bars), expected)
    assert [strategy.reference(bars.slice(0, t + 1)) for t in range(len(close))] == list(expected)
    # A stricter RSI threshold turns the LONG into a plain middle-band cross (FLAT).
    strict = make_strategy("bbands_rsi", oversold=10.0)
    assert strict.compute(bars)[40] == FLAT


def test_atr_breakout_hand_case() -> None:
    # Flat 100 with high/low 100.5/99.5: middle 100, ATR 1, bands 98/102 from the previous bar.
    # Bar 30 closes 103 > 102: LONG; bar 31 stays up: nothing new; bar 32 back to 100 - 1 = 99:
    # crosses the previous middle from above: FLAT; bar 33 drops to 90: SHORT.
    close = [100.0] * 30 + [103.0, 103.5, 99.0, 90.0]
    high = [c + 0.5 for c in close]
    low = [c - 0.5 for c in close]
    bars = _bars(close, high, low, open_=close)
    strategy = make_strategy("atr_breakout")
    signals = strategy.compute(bars)
    expected = np.full(len(close), HOLD, dtype=np.int8)
    expected[30], expected[32], expected[33] = LONG, FLAT, SHORT
    np.testing.assert_array_equal(signals, expected)
    assert [strategy.reference(bars.slice(0, t + 1)) for t in range(len(close))] == list(expected)


# ------------------------------------------------------------------------------------------
# Shared kernels equal their plain-Python reference twins, bit for bit


def _same_bits(fast: np.ndarray, slow: list[float], label: str) -> None:
    """The same bit pattern at every bar (the sign of zero included), NaN exactly where the
    other is NaN."""
    expected = np.asarray(slow, dtype=np.float64)
    assert fast.dtype == np.float64 and fast.shape == expected.shape, label
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(expected), err_msg=label)
    defined = ~np.isnan(fast)
    np.testing.assert_array_equal(
        fast[defined].view(np.int64), expected[defined].view(np.int64), err_msg=label
    )


@pytest.mark.parametrize("source", ["eurusd", "regime-8", "walk-0.5", "walk-none"])
def test_kernels_equal_reference_twins(source: str) -> None:
    if source.startswith("walk"):
        bars = _random_walk(11, 400, None if source.endswith("none") else 0.5)
    else:
        bars = _dataset(source).slice(0, 600)
    high, low, close = (np.ascontiguousarray(a, dtype=np.float64)
                        for a in (bars.high, bars.low, bars.close))
    for m in (0, 1, 2, 5, len(close)):  # short inputs too: all NaN where nothing is defined
        h, lo, c = high[:m], low[:m], close[:m]
        hl, ll, cl = h.tolist(), lo.tolist(), c.tolist()
        _same_bits(kernels.true_range(h, lo, c), kernels.reference_true_range(hl, ll, cl),
                   f"true_range m={m}")
        gains, losses = kernels.gains_losses(c)
        ref_gains, ref_losses = kernels.reference_gains_losses(cl)
        _same_bits(gains, ref_gains, f"gains m={m}")
        _same_bits(losses, ref_losses, f"losses m={m}")
        for p in (1, 2, 3, 14):
            label = f"m={m} p={p}"
            _same_bits(kernels.atr(h, lo, c, p), kernels.reference_atr(hl, ll, cl, p),
                       f"atr {label}")
            _same_bits(kernels.wilder(c, p), kernels.reference_wilder(cl, p), f"wilder {label}")
            _same_bits(kernels.rsi(c, p), kernels.reference_rsi(cl, p), f"rsi {label}")
            for seed_end in (p - 1, p + 4):
                _same_bits(kernels.ema(c, p, seed_end), kernels.reference_ema(cl, p, seed_end),
                           f"ema {label} seed_end={seed_end}")
            undefined = [float("nan")] * min(p - 1, m)
            sums = [kernels.reference_window_sum(cl, t, p) for t in range(p - 1, m)]
            means = [kernels.reference_sma(cl, t, p) for t in range(p - 1, m)]
            _same_bits(kernels.window_sum(c, p), undefined + sums, f"window_sum {label}")
            _same_bits(kernels.sma(c, p), undefined + means, f"sma {label}")


# ------------------------------------------------------------------------------------------
# Indicators agree with TA-Lib (the definitions the module docstrings promise)


def test_indicators_agree_with_talib() -> None:
    talib = pytest.importorskip("talib")
    from rltrade.features.strategies import awesome_macd, bbands_rsi

    bars = _dataset("eurusd")
    h, lo, c = bars.high, bars.low, bars.close
    hl2 = (h + lo) / 2.0

    def same(ours: np.ndarray, theirs: np.ndarray) -> None:
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12, equal_nan=True)

    same(awesome_macd._macd_hist(c, 12, 26, 9), talib.MACD(c, 12, 26, 9)[2])
    same(awesome_macd._macd_hist(c, 5, 13, 4), talib.MACD(c, 5, 13, 4)[2])
    same(awesome_macd._ao(hl2, 5, 34), talib.SMA(hl2, 5) - talib.SMA(hl2, 34))
    same(kernels.ema(c, 12, 11), talib.EMA(c, 12))
    same(kernels.rsi(c, 14), talib.RSI(c, 14))
    for ours, theirs in zip(bbands_rsi._bbands(c, 20, 2.0), talib.BBANDS(c, 20, 2.0, 2.0),
                            strict=True):
        same(ours, theirs)
    same(kernels.atr(h, lo, c, 10), talib.ATR(h, lo, c, 10))
    same(kernels.atr(h, lo, c, 14), talib.ATR(h, lo, c, 14))
    same(kernels.true_range(h, lo, c), talib.TRANGE(h, lo, c))
    same(kernels.sma(c, 20), talib.SMA(c, 20))
    same(kernels.window_sum(c, 20), talib.SUM(c, 20))


# ------------------------------------------------------------------------------------------
# Parameters

BAD_PARAMS: dict[str, list[dict[str, Any]]] = {
    "awesome_macd": [
        {"fast": 0}, {"fast": 26}, {"fast": 30, "slow": 12}, {"ao_fast": 34}, {"signal": 0},
        {"signal": 2.5}, {"slow": True}, {"ao_slow": -1},
    ],
    "bbands_rsi": [
        {"period": 1}, {"period": 0}, {"nbdev": 0.0}, {"nbdev": -1.0},
        {"nbdev": float("nan")}, {"rsi_period": 0}, {"oversold": 70.0, "overbought": 30.0},
        {"overbought": 120.0}, {"oversold": -5.0}, {"period": "20"},
    ],
    "ott": [
        {"length": 0}, {"percent": 0.0}, {"percent": -1.4}, {"percent": 150.0},
        {"cmo_period": 0}, {"length": 2.0}, {"percent": float("inf")},
    ],
    "supertrend": [
        {"period": 0}, {"period": 10.5}, {"multiplier": 0.0}, {"multiplier": -3.0},
        {"multiplier": "3"},
    ],
    "atr_breakout": [
        {"period": 0}, {"atr_period": 0}, {"atr_period": -14}, {"k": 0.0}, {"k": -2.0},
        {"k": None},
    ],
}


@pytest.mark.parametrize("name", NAMES)
def test_bad_params_raise(name: str) -> None:
    for params in BAD_PARAMS.get(name, []):
        with pytest.raises(ConfigError):
            make_strategy(name, **params)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_params_raise(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown parameter"):
        make_strategy(name, no_such_parameter=1)
    make_strategy(name, **STRATEGIES[name].defaults)  # the defaults themselves are valid


def test_unknown_strategy_raises() -> None:
    with pytest.raises(ConfigError, match="unknown strategy"):
        make_strategy("no_such_strategy")
