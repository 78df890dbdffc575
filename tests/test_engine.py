"""Hand-computed cases of the execution engine (every number below is worked out in a comment).

Bars are written ``(open, high, low, close)``. Unless a test says otherwise costs are zero,
the account starts with 50,000 cash at the close of bar 0 and market orders fill at the next
open.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rltrade.errors import ConfigError, DataError
from rltrade.sim import (
    BatchEngine,
    CostModel,
    EngineConfig,
    EngineError,
    ExecutionEngine,
    Order,
)
from rltrade.sim import kernels as K

FLAT = (100.0, 101.0, 99.0, 100.0)


def ohlcv(rows) -> np.ndarray:
    return np.array([[o, h, lo, c, 1.0] for o, h, lo, c in rows], dtype=float)


def random_bars(rng: np.random.Generator, t_len: int) -> np.ndarray:
    """A random walk of ``t_len`` valid bars (gapped opens, wicks), float64 ``[T, 5]``."""
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, t_len)))
    opens = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.002, t_len))
    high = np.maximum(opens, close) * (1 + rng.uniform(0, 0.01, t_len))
    low = np.minimum(opens, close) * (1 - rng.uniform(0, 0.01, t_len))
    return np.column_stack([opens, high, low, close, np.ones(t_len)])


def make(rows, costs: CostModel | None = None, **kw) -> ExecutionEngine:
    config = EngineConfig(costs=costs or CostModel.zero(), **kw)
    return ExecutionEngine(ohlcv(rows), config)


def trades(eng: ExecutionEngine) -> list[dict]:
    return [dict(zip(t.dtype.names, t.tolist(), strict=True)) for t in eng.trades]


def assert_identities(eng: ExecutionEngine) -> None:
    a = eng.account
    close = eng.close[a.bar]
    assert a.equity == pytest.approx(a.cash + a.position * close, rel=1e-12, abs=1e-9)
    assert a.equity == pytest.approx(a.initial_equity + a.realized + a.unrealized, abs=1e-9)
    assert a.realized == pytest.approx(sum(t["net_pnl"] for t in trades(eng)), abs=1e-9)


# ----------------------------------------------------------------------------- timing
def test_market_order_fills_at_next_open() -> None:
    eng = make([FLAT, (102, 103, 101, 103), (103, 104, 102, 104)])
    assert eng.submit(Order.target(10)) == 0
    assert eng.position == 0  # submitting changes nothing until the next bar
    eng.advance()
    a = eng.account
    assert (a.bar, a.position) == (1, 10)
    assert a.cash == 50_000 - 10 * 102  # filled at the open of bar 1
    assert a.equity == 50_000 + 10 * (103 - 102)
    assert a.unrealized == 10
    assert a.lots.tolist() == [[1, 102, 10]]
    assert_identities(eng)


def test_fill_at_close_books_the_decision_bar() -> None:
    eng = make([FLAT, (102, 103, 101, 103), FLAT], fill="close")
    eng.submit(Order.target(10))
    eng.advance()  # the fill happens at the close of bar 0 (100), booked at bar 0
    assert eng.cash == 50_000 - 10 * 100
    assert eng.equity == 50_000 + 10 * (103 - 100)
    eng.step(0)
    assert trades(eng)[0]["entry_bar"] == 0 and trades(eng)[0]["entry_price"] == 100
    assert trades(eng)[0]["exit_bar"] == 1 and trades(eng)[0]["exit_price"] == 103


@pytest.mark.parametrize("fill,lag,bar,price", [
    ("open", 2, 3, 103.0),  # decided after bar 0, active from the open of bar 0 + 1 + 2
    ("close", 1, 1, 101.5),  # the close of bar 0 + 1
    ("close", 2, 2, 102.5),
])
def test_decision_lag(fill: str, lag: int, bar: int, price: float) -> None:
    rows = [FLAT] + [(100.0 + i, 105.0 + i, 95.0 + i, 100.5 + i) for i in range(1, 6)]
    eng = make(rows, fill=fill, decision_lag=lag)
    eng.submit(Order.target(1))
    positions = []
    for _ in range(4):
        eng.advance()
        positions.append(eng.position)
    eng.close_all()
    t = trades(eng)[0]
    assert (t["entry_bar"], t["entry_price"]) == (bar, price)
    first_held = positions.index(1.0) + 1  # the bar at whose close the position shows
    assert first_held == (bar if fill == "open" else bar + 1)


def test_ideal_mode_ignores_lag_spread_and_slippage_and_rejects_contradictions() -> None:
    config = EngineConfig.ideal(0.001)
    assert config.effective_lag == 0 and config.effective_touch_prob == 1.0
    eng = ExecutionEngine(ohlcv([FLAT, FLAT, FLAT]), config)
    eng.step(10)
    assert eng.account.spread_cost == 0 and eng.account.slippage_cost == 0
    assert eng.account.fees == pytest.approx(0.001 * 10 * 100)
    with pytest.raises(ConfigError, match="ideal"):
        EngineConfig(mode="ideal", decision_lag=2)
    with pytest.raises(ConfigError, match="spread_bps"):
        EngineConfig(mode="ideal", costs=CostModel(spread_bps=3))


# ----------------------------------------------------------------------------- stops
def test_stop_loss_inside_the_bar_fills_at_the_stop() -> None:
    eng = make([FLAT, FLAT, (98, 99, 94, 96), FLAT])
    eng.submit(Order.target(10, sl=95))
    eng.advance()  # long 10 at 100, stop 95
    eng.advance()  # low 94 <= 95, opened at 98 above it: out at 95
    t = trades(eng)
    assert len(t) == 1 and t[0]["exit_price"] == 95 and t[0]["stop_loss"]
    assert t[0]["gross_pnl"] == 10 * (95 - 100)
    assert eng.position == 0 and eng.account.stop_loss is None  # levels go with the position
    assert eng.equity == 50_000 - 50


def test_stop_that_gaps_fills_at_the_open() -> None:
    eng = make([FLAT, FLAT, (93, 94, 90, 91), FLAT])
    eng.submit(Order.target(10, sl=95))
    eng.advance()
    eng.advance()  # opens at 93, already through the stop: out at 93, not 95
    t = trades(eng)[0]
    assert t["exit_price"] == 93 and t["exit_reason"] == "stop_loss"
    assert eng.equity == 50_000 + 10 * (93 - 100)


def test_short_stop_gap_and_take_profit() -> None:
    eng = make([FLAT, FLAT, (106, 108, 104, 107), FLAT, (97, 98, 90, 92)])
    eng.submit(Order.target(-10, sl=105))
    eng.advance()  # short 10 at 100
    eng.advance()  # opens at 106 above the stop 105: out at 106
    assert trades(eng)[0]["exit_price"] == 106
    eng.submit(Order.target(-10, tp=95))  # at close 107 (after bar 2)
    eng.advance()  # bar 3: short 10 at 100
    eng.advance()  # bar 4: opens 97, low 90 reaches the take-profit 95: out at 95 (maker)
    t = trades(eng)[1]
    assert t["take_profit"] and t["exit_price"] == 95 and t["gross_pnl"] == 50


def test_stop_and_take_profit_in_one_bar_assume_the_stop_first() -> None:
    eng = make([FLAT, FLAT, (100, 106, 94, 103), FLAT])
    eng.submit(Order.target(10, sl=95, tp=105))
    eng.advance()
    eng.advance()  # both 95 and 105 inside [94, 106]: pessimistic, the stop
    t = trades(eng)[0]
    assert t["exit_reason"] == "stop_loss" and t["exit_price"] == 95


def test_take_profit_gap_fills_at_the_better_open() -> None:
    eng = make([FLAT, FLAT, (107, 108, 104, 106), FLAT])
    eng.submit(Order.target(10, sl=95, tp=105))
    eng.advance()
    eng.advance()
    t = trades(eng)[0]
    assert t["exit_reason"] == "take_profit" and t["exit_price"] == 107


def test_stop_hit_in_the_bar_of_entry() -> None:
    eng = make([FLAT, (100, 101, 94, 96), FLAT])
    eng.submit(Order.target(10, sl=95))
    eng.advance()  # in at the open 100, the same bar falls to 94: out at 95
    t = trades(eng)[0]
    assert (t["entry_bar"], t["exit_bar"], t["duration_bars"]) == (1, 1, 0)
    assert t["exit_price"] == 95


def test_levels_kept_cleared_and_validated() -> None:
    eng = make([FLAT] * 6)
    eng.submit(Order.target(10, sl=95, tp=110))
    eng.advance()
    eng.step(12)  # sl/tp None: kept for the whole position
    assert (eng.account.stop_loss, eng.account.take_profit) == (95, 110)
    eng.step(12, sl=0)  # 0 clears
    assert (eng.account.stop_loss, eng.account.take_profit) == (None, 110)
    # a long's stop must lie below the last close, its take-profit above
    assert eng.submit(Order.target(12, sl=101)) is None
    assert eng.last_rejection == "bad_stop_level"
    assert eng.submit(Order.target(-5, sl=99)) is None  # the short's stop is below: wrong side
    assert eng.rejections["bad_stop_level"] == 2
    eng.step(-5)  # a flip drops the long's levels
    assert (eng.account.stop_loss, eng.account.take_profit) == (None, None)


# ----------------------------------------------------------------------------- lots
def test_flip_long_to_short_lot_by_lot() -> None:
    eng = make([FLAT, FLAT, (102, 103, 101, 102), (104, 105, 103, 104), FLAT])
    eng.step(10)  # lot 1: 10 at 100 (bar 1)
    eng.step(15)  # lot 2: 5 at 102 (bar 2)
    eng.step(-8)  # bar 3 open 104: close 10 and 5, open a short 8 at 104
    t = trades(eng)
    assert [(x["entry_bar"], x["qty"], x["side"], x["gross_pnl"]) for x in t] == [
        (1, 10, 1, 10 * (104 - 100)),
        (2, 5, 1, 5 * (104 - 102)),
    ]
    assert eng.account.lots.tolist() == [[3, 104, -8]]
    assert eng.position == -8
    assert_identities(eng)


def test_partial_close_across_fifo_lots_with_pro_rata_fees() -> None:
    costs = CostModel(maker_fee=0.0, taker_fee=0.001, spread_bps=0.0, slippage="none")
    rows = [FLAT, FLAT, (102, 103, 101, 102), (104, 105, 103, 104), (106, 107, 105, 106)]
    eng = make(rows, costs=costs)
    eng.step(10)  # 10 @ 100, fee 1.00
    eng.step(15)  # 5 @ 102, fee 0.51
    eng.step(20)  # 5 @ 104, fee 0.52
    eng.step(3)  # sell 17 @ 106, fee 0.001 * 17 * 106 = 1.802
    t = trades(eng)
    assert [(x["qty"], x["entry_price"]) for x in t] == [(10, 100), (5, 102), (2, 104)]
    exit_fee = 0.001 * 17 * 106
    # lot 3 closes 2 of its 5 units: 2/5 of its entry fee, 2/17 of the exit fee
    assert t[2]["fees"] == pytest.approx(0.52 * 2 / 5 + exit_fee * 2 / 17, rel=1e-12)
    assert t[0]["fees"] == pytest.approx(1.00 + exit_fee * 10 / 17, rel=1e-12)
    assert t[2]["net_pnl"] == pytest.approx(2 * (106 - 104) - t[2]["fees"], rel=1e-12)
    assert eng.account.lots.tolist() == [[3, 104, 3]]
    # the open lot keeps the rest of its entry fee: 3/5 of 0.52
    assert eng.account.unrealized == pytest.approx(3 * (106 - 104) - 0.52 * 3 / 5, rel=1e-12)
    assert sum(x["fees"] for x in t) + 0.52 * 3 / 5 == pytest.approx(eng.account.fees)
    assert_identities(eng)


def test_full_lot_ring_merges_into_the_newest_lot() -> None:
    rows = [FLAT, FLAT, (102, 103, 101, 102), (104, 105, 103, 104), FLAT]
    eng = make(rows, lot_capacity=2)
    eng.step(1)  # 1 @ 100
    eng.step(2)  # 1 @ 102
    eng.step(3)  # ring full: merged into the newest lot, 2 @ 103, entry bar 2
    assert eng.account.lots.tolist() == [[1, 100, 1], [2, 103, 2]]
    assert eng.adjustments["lots_merged"] == 1
    eng.step(0)
    assert [(x["qty"], x["entry_price"], x["entry_bar"]) for x in trades(eng)] == [
        (1, 100, 1), (2, 103, 2)]
    assert eng.equity == 50_000 + (100 - 100) + (100 - 102) + (100 - 104)


def test_initial_inventory_is_a_lot_at_the_start_close() -> None:
    eng = make([FLAT, (100, 106, 99, 105), (105, 106, 104, 105)], initial_position=10)
    a = eng.account
    assert a.cash == 50_000 and a.equity == a.initial_equity == 50_000 + 10 * 100
    assert a.lots.tolist() == [[0, 100, 10]]
    eng.advance()
    assert eng.equity == 51_050 and eng.account.unrealized == 50
    eng.step(0)
    assert trades(eng)[0]["entry_bar"] == 0 and trades(eng)[0]["gross_pnl"] == 50


def test_close_all_at_the_current_close_is_flagged() -> None:
    eng = make([FLAT, FLAT, (100, 104, 99, 103), FLAT])
    eng.step(10)
    eng.advance()
    assert eng.submit(Order.limit(90, 5)) is not None
    eng.close_all()
    t = trades(eng)[0]
    assert t["forced_close"] and t["exit_price"] == 103 and t["exit_bar"] == 2
    assert eng.position == 0 and eng.account.pending_orders == 0
    assert eng.equity == 50_030
    assert eng.adjustments["cancelled"] == 1


# ----------------------------------------------------------------------------- costs
def test_taker_fee_spread_and_fixed_slippage() -> None:
    costs = CostModel(maker_fee=0.001, taker_fee=0.002, spread_bps=10, slippage="fixed",
                      slippage_bps=5)
    eng = make([FLAT, FLAT, (110, 111, 109, 110)], costs=costs)
    eng.step(10)
    # buy 10 at 100: half spread 0.05, slippage 0.05 per unit, executed 100.10
    a = eng.account
    assert a.spread_cost == pytest.approx(0.5) and a.slippage_cost == pytest.approx(0.5)
    assert a.fees == pytest.approx(0.002 * 10 * 100.1)
    assert a.cash == pytest.approx(50_000 - 1000 - 2.002 - 0.5 - 0.5)
    eng.step(0)
    # sell 10 at 110: half spread 0.055, slippage 0.055, executed 109.89, fee 2.1978
    t = trades(eng)[0]
    assert t["entry_price"] == 100 and t["exit_price"] == 110  # reference prices
    assert t["gross_pnl"] == pytest.approx(100)
    assert t["fees"] == pytest.approx(2.002 + 2.1978)
    assert t["spread_cost"] == pytest.approx(0.5 + 0.55)
    assert t["slippage_cost"] == pytest.approx(0.5 + 0.55)
    assert t["net_pnl"] == pytest.approx(100 - 4.1998 - 1.05 - 1.05)
    assert eng.equity - 50_000 == pytest.approx(t["net_pnl"], abs=1e-9)


def test_limit_fill_pays_maker_fee_and_no_spread() -> None:
    costs = CostModel(maker_fee=0.001, taker_fee=0.002, spread_bps=10, slippage="fixed",
                      slippage_bps=5)
    eng = make([FLAT, (100, 101, 98, 100), FLAT], costs=costs)
    eng.submit(Order.limit(99, 10))
    eng.advance()  # low 98 < 99: filled at 99
    a = eng.account
    assert a.position == 10 and a.lots.tolist() == [[1, 99, 10]]
    assert a.fees == pytest.approx(0.001 * 10 * 99)
    assert a.spread_cost == 0 and a.slippage_cost == 0


@pytest.mark.parametrize("unit,scale", [("bps", 1.0), ("fraction", 1e-4)])
def test_spread_from_a_per_bar_column(unit: str, scale: float) -> None:
    spread = np.array([5.0, 10.0, 40.0]) * scale  # 10 bps at bar 1, 40 bps at bar 2
    costs = CostModel(maker_fee=0, taker_fee=0, slippage="none", spread="column",
                      spread_unit=unit)
    eng = ExecutionEngine(ohlcv([FLAT, FLAT, FLAT]), EngineConfig(costs=costs), spread=spread)
    eng.step(10)  # half of 10 bps of 100 on 10 units
    assert eng.account.spread_cost == pytest.approx(10 * 100 * 0.0005)
    eng.step(0)  # half of 40 bps
    assert eng.account.spread_cost == pytest.approx(0.5 + 10 * 100 * 0.002)


def test_spread_column_needs_its_unit_and_its_data() -> None:
    with pytest.raises(ConfigError, match="spread_unit"):
        CostModel(spread="column")
    costs = CostModel(spread="column", spread_unit="bps")
    with pytest.raises(ConfigError, match="spread"):
        ExecutionEngine(ohlcv([FLAT, FLAT]), EngineConfig(costs=costs))
    with pytest.raises(DataError, match="spread"):
        ExecutionEngine(ohlcv([FLAT, FLAT]), EngineConfig(costs=costs), spread=[1.0, np.nan])
    with pytest.raises(ConfigError, match="fixed"):
        ExecutionEngine(ohlcv([FLAT, FLAT]), EngineConfig(), spread=[1.0, 1.0])


def test_atr_scaled_slippage() -> None:
    costs = CostModel(maker_fee=0, taker_fee=0, spread_bps=0, slippage="atr", slippage_atr=0.5)
    atr = np.array([2.0, 4.0, 6.0])
    eng = ExecutionEngine(ohlcv([FLAT, FLAT, FLAT]), EngineConfig(costs=costs), atr=atr)
    eng.step(10)  # 0.5 * ATR(bar 1) = 2 per unit
    assert eng.account.slippage_cost == pytest.approx(20)
    eng.step(0)  # 0.5 * 6 = 3 per unit
    assert eng.account.slippage_cost == pytest.approx(50)
    assert eng.equity == pytest.approx(50_000 - 50)


def test_computed_atr_matches_talib_after_warm_up() -> None:
    from rltrade.features.strategies.kernels import atr as talib_atr

    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    high = close * (1 + rng.uniform(0, 0.01, 300))
    low = close * (1 - rng.uniform(0, 0.01, 300))
    ours = K.atr_filled(high, low, close, 14)
    ref = talib_atr(high, low, close, 14)
    np.testing.assert_allclose(ours[14:], ref[14:], rtol=1e-12)
    assert np.isfinite(ours).all() and ours[0] == high[0] - low[0]


def test_random_slippage_is_seeded_bounded_and_reproducible() -> None:
    costs = CostModel(maker_fee=0, taker_fee=0, spread_bps=0, slippage="random",
                      slippage_bps=10)
    rows = [FLAT] * 40

    def run(seed: int) -> list[float]:
        eng = make(rows, costs=costs, seed=seed)
        out = []
        for i in range(39):
            before = eng.account.slippage_cost
            eng.step(10 if i % 2 == 0 else -10)
            out.append(eng.account.slippage_cost - before)
        return out

    a, b, c = run(1), run(1), run(2)
    assert a == b and a != c
    per_unit = np.array(a) / np.array([10] + [20] * 38)  # first fill 10 units, then flips
    assert (per_unit >= 0).all() and (per_unit <= 100 * 0.001 + 1e-12).all()
    assert per_unit.std() > 0


# ----------------------------------------------------------------------------- constraints
def test_leverage_and_max_position_clamp() -> None:
    eng = make([FLAT] * 4, max_position=400)
    eng.step(1000)  # leverage 1: at most 50,000 / 100 = 500 units; max position 400
    assert eng.position == 400
    assert eng.adjustments["clamped_leverage"] == 0
    assert eng.adjustments["clamped_max_position"] == 1
    eng = make([FLAT] * 4, leverage=2)
    eng.step(-1500)  # 2 * 50,000 / 100 = 1,000 units either way
    assert eng.position == -1000 and eng.adjustments["clamped_leverage"] == 1


def test_a_cap_never_forces_a_trade_on_a_hold_or_blocks_a_reduction() -> None:
    eng = make([FLAT, FLAT, (80, 81, 79, 80)] + [(80, 81, 79, 80)] * 3, leverage=2)
    eng.step(1000)  # 1,000 units at 100 (cap 1,000)
    eng.step(1000)  # at 80: equity 30,000, cap 750 units; holding 1,000 is not cut
    assert eng.position == 1000
    eng.step(900)  # a reduction that stays above the cap goes through as asked
    assert eng.position == 900
    eng.step(1200)  # an increase beyond the cap: no unit can be added
    assert eng.position == 900
    assert eng.adjustments["clamped_leverage"] == 1


def test_short_selling_disabled_clamps_at_zero() -> None:
    eng = make([FLAT] * 4, allow_short=False)
    eng.step(-5)
    assert eng.position == 0 and eng.adjustments["clamped_short"] == 1
    eng.step(5)
    eng.step(-5)  # closes the long, opens nothing
    assert eng.position == 0 and eng.adjustments["clamped_short"] == 2
    with pytest.raises(ConfigError, match="allow_short"):
        EngineConfig(allow_short=False, initial_position=-1)


def test_dead_zone_skips_small_changes_but_applies_levels() -> None:
    eng = make([FLAT] * 5, dead_zone=0.01)  # 1% of 50,000 = 500 of notional
    eng.step(4)  # 400 < 500: no trade
    assert eng.position == 0 and eng.adjustments["dead_zone"] == 1
    eng.step(6)  # 600: trades
    assert eng.position == 6
    eng.step(9, sl=90)  # +300: no trade, but the stop is set
    assert eng.position == 6 and eng.account.stop_loss == 90
    eng.step(0)  # closing to flat is never dead-zoned
    assert eng.position == 0


def test_lot_size_rounds_toward_zero_and_min_notional_rejects() -> None:
    eng = make([FLAT] * 5, lot_size=0.5, min_notional=300)
    eng.step(3.7)  # 3.7 -> 3.5 (toward zero)
    assert eng.position == 3.5 and eng.adjustments["lot_rounded"] == 1
    before = eng.kernel_arrays().state.copy()
    eng.step(5.2, sl=90)  # +1.7 -> +1.5 = 150 < 300: rejected, the stop not set either
    assert eng.position == 3.5 and eng.account.stop_loss is None
    assert eng.rejections["min_notional"] == 1
    changed = np.flatnonzero(before != eng.kernel_arrays().state)
    assert set(changed) <= {K.BAR, K.EQUITY, K.UNREALIZED, K.MARGIN, K.PEAK, K.DRAWDOWN,
                            K.MAX_DRAWDOWN, K.COUNTS + K.R_MIN_NOTIONAL, K.NEXT_ORDER_ID,
                            K.LAST_ORDER_ID}
    eng.step(0)  # a close to flat is exempt from the minimum notional
    assert eng.position == 0


def test_invalid_orders_are_rejected_with_a_reason_and_change_nothing() -> None:
    eng = make([FLAT] * 4, order_capacity=2)
    eng.step(3)
    before = tuple(a.copy() for a in eng.kernel_arrays()[:3])  # state, lots, orders
    bad = {
        "bad_quantity": [Order.target(math.nan), Order.delta(math.inf), Order.target("x"),
                         Order.limit(99, 0)],
        "bad_price": [Order.limit(math.nan, 1), Order.limit(-5, 1), Order.limit(None, 1)],
        "bad_validity": [Order.limit(99, 1, bars_valid=0), Order.limit(99, 1, bars_valid=1.5)],
        "bad_stop_level": [Order.target(5, sl=math.nan), Order.target(5, tp=-1),
                           Order.target(5, sl=101), Order.limit(99, 1, tp=98)],
    }
    for reason, orders in bad.items():
        for order in orders:
            assert eng.submit(order) is None
            assert eng.last_rejection == reason
        assert eng.rejections[reason] == len(orders)
    st, lots, orders = before
    counts = slice(K.COUNTS, K.COUNTS + K.N_CODES)
    keep = np.ones(K.N_STATE, bool)
    keep[counts] = False
    keep[[K.LAST_CODE, K.LAST_ORDER_ID]] = False
    np.testing.assert_array_equal(eng.kernel_arrays().state[keep], st[keep])
    np.testing.assert_array_equal(eng.kernel_arrays().orders, orders)
    np.testing.assert_array_equal(eng.kernel_arrays().lots, lots)
    # queue full, end of data
    assert eng.submit(Order.limit(50, 1)) is not None
    assert eng.submit(Order.limit(50, 1)) is not None
    assert eng.submit(Order.limit(50, 1)) is None and eng.last_rejection == "queue_full"
    eng.cancel_all()
    eng.advance()
    eng.advance()
    assert eng.done
    assert eng.submit(Order.target(0)) is None and eng.last_rejection == "end_of_data"
    with pytest.raises(EngineError, match="last bar"):
        eng.advance()
    with pytest.raises(TypeError):
        eng.submit("buy")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- limits
def test_limit_order_rules() -> None:
    rows = [FLAT, (101, 102, 100, 101), (98, 99, 97, 98), FLAT, FLAT, FLAT]
    eng = make(rows)
    eng.submit(Order.limit(99.5, 1))  # bar 1 never trades at 99.5 or below
    eng.advance()
    assert eng.position == 0 and eng.account.pending_orders == 1
    eng.advance()  # bar 2 opens at 98 below the limit: filled at the open, not the limit
    assert eng.account.lots.tolist() == [[2, 98, 1]]
    oid = eng.submit(Order.limit(102, -1, bars_valid=2))  # sell above: bars 3 and 4
    eng.advance()
    eng.advance()
    assert eng.position == 1 and eng.account.pending_orders == 0
    assert eng.adjustments["limit_expired"] == 1
    oid = eng.submit(Order.limit(50, 1))
    assert eng.cancel(oid) and not eng.cancel(oid)


@pytest.mark.parametrize("prob,filled", [(0.0, False), (1.0, True)])
def test_touch_fill_probability(prob: float, filled: bool) -> None:
    eng = make([FLAT, FLAT, FLAT], limit_touch_prob=prob)
    eng.submit(Order.limit(99, 1))  # the bar's low is exactly 99
    eng.advance()
    assert (eng.position == 1) is filled
    assert eng.adjustments["touch_missed"] == (0 if filled else 1)


def test_touch_fills_with_a_seeded_probability() -> None:
    fills = []
    for seed in range(200):
        eng = make([FLAT, FLAT], limit_touch_prob=0.3, seed=seed)
        eng.submit(Order.limit(99, 1))
        eng.advance()
        fills.append(eng.position)
    assert 0.2 < np.mean(fills) < 0.4


# ----------------------------------------------------------------------------- margin
LEVERED = {"initial_cash": 1000.0, "leverage": 10.0}


def test_liquidation_at_the_liquidation_price() -> None:
    eng = make([FLAT, FLAT, (99, 99.5, 90, 95), FLAT], maintenance_margin=0.05, **LEVERED)
    eng.step(90)  # 9,000 at 100 on 1,000 equity; cash -8,000
    assert eng.account.margin_used == pytest.approx(900)
    eng.advance()
    # equity = -8000 + 90 p falls below 5% of 90 p at p = 8000 / (90 * 0.95)
    p_liq = 8000 / (90 * 0.95)
    t = trades(eng)[0]
    assert t["liquidation"] and t["exit_price"] == pytest.approx(p_liq, rel=1e-12)
    assert eng.equity == pytest.approx(0.05 * 90 * p_liq, rel=1e-9)
    assert not eng.bankrupt and eng.account.liquidations == 1


def test_liquidation_gap_fills_at_the_open() -> None:
    eng = make([FLAT, FLAT, (92, 92, 90, 91), FLAT], maintenance_margin=0.05, **LEVERED)
    eng.step(90)
    eng.advance()
    assert trades(eng)[0]["exit_price"] == 92
    assert eng.equity == pytest.approx(-8000 + 90 * 92)


def test_bankruptcy_freezes_the_account() -> None:
    eng = make([FLAT, FLAT, (85, 86, 80, 82), (90, 95, 89, 94), FLAT], **LEVERED)
    eng.step(90)
    eng.submit(Order.limit(50, 1))
    eng.advance()  # gaps through the zero-equity price 88.9: out at 85, equity -350
    assert eng.bankrupt and eng.position == 0 and eng.equity == pytest.approx(-350)
    assert eng.account.pending_orders == 0
    assert eng.submit(Order.target(1)) is None and eng.last_rejection == "bankrupt"
    eng.step(5)
    assert eng.rejections["bankrupt"] == 2
    assert eng.equity == pytest.approx(-350) and eng.position == 0
    assert eng.account.drawdown == pytest.approx(1.35)


# ----------------------------------------------------------------------------- misc
def test_trade_buffer_grows_and_records_stay_consistent() -> None:
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, 3000)))
    rows = [(c, c * 1.001, c * 0.999, c) for c in close]
    eng = make(rows, costs=CostModel(), leverage=5)
    for i in range(2999):
        eng.step(10.0 if i % 2 == 0 else -10.0)
    assert len(eng.trades) == 2998
    assert_identities(eng)
    frame = eng.trades_frame()
    assert list(frame.columns)[:4] == ["entry_bar", "exit_bar", "entry_time", "exit_time"]


def test_trades_frame_carries_utc_times() -> None:
    ts = np.array(["2024-01-01T00", "2024-01-01T01", "2024-01-01T02"], dtype="datetime64[ns]")
    eng = ExecutionEngine(ohlcv([FLAT] * 3), EngineConfig(costs=CostModel.zero()),
                          timestamps=ts)
    eng.step(1)
    eng.step(0)
    frame = eng.trades_frame()
    assert str(frame["entry_time"].dt.tz) == "UTC"
    assert frame["exit_time"].iloc[0].hour == 2


@pytest.mark.parametrize("bad", [
    (np.nan, 101, 99, 100), (100, np.nan, 99, 100), (100, 101, np.nan, 100),
    (100, 101, 99, np.nan), (np.inf, np.inf, 99, 100), (100, 101, -np.inf, 100),
    (0.0, 101, 0.0, 100), (-1.0, 101, -2.0, 100), (100, 101, 99, 0.0),
    (100, 99.5, 99, 99.8),  # high < open
    (100, 101, 99, 101.5),  # close > high
    (100, 101, 100.5, 100.7),  # low > open
    (100.5, 101, 99, 98.0),  # close < low
    (100, 99, 101, 100),  # low > high
])
@pytest.mark.parametrize("where", [0, 3, 6])
def test_every_kind_of_bad_bar_is_refused_with_its_index(bad, where) -> None:
    rows = [FLAT] * 7
    rows[where] = bad
    data = ohlcv(rows)
    with pytest.raises(DataError, match=rf"ohlcv bar {where} is not a valid bar"):
        ExecutionEngine(data)
    # the same check on float32 and on a strided view (no contiguous float64 copy given)
    with pytest.raises(DataError, match=rf"bar {where} "):
        ExecutionEngine(data.astype(np.float32))
    wide = np.zeros((7, 10))
    wide[:, ::2] = data
    with pytest.raises(DataError, match=rf"bar {where} "):
        ExecutionEngine(wide[:, ::2])


def test_valid_bars_at_the_edges_are_accepted() -> None:
    # equalities are valid: open == high == low == close, low == open, close == high
    eng = ExecutionEngine(ohlcv([(100, 100, 100, 100), (100, 101, 100, 101), FLAT]))
    assert eng.close.tolist() == [100.0, 101.0, 100.0]


def test_bad_bars_and_config_are_clear_errors() -> None:
    with pytest.raises(DataError, match="bar 1"):
        ExecutionEngine(ohlcv([FLAT, (100, 99, 98, 100.5)]))
    with pytest.raises(DataError, match="at least 2"):
        ExecutionEngine(ohlcv([FLAT]))
    with pytest.raises(ConfigError, match=r"costs\.taker_fee"):
        EngineConfig(costs={"taker_fee": -0.1})
    with pytest.raises(ConfigError, match="unknown key"):
        EngineConfig.from_dict({"levrage": 2})
    with pytest.raises(ConfigError, match="decision_lag"):
        EngineConfig(decision_lag=5, order_capacity=4)
    eng = make([FLAT] * 3)
    with pytest.raises(EngineError, match="outside"):
        eng.reset(3)


def test_reset_is_a_fresh_account_and_runs_repeat_bit_for_bit() -> None:
    costs = CostModel(slippage="random", slippage_bps=5)
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    rows = [(c, c * 1.01, c * 0.99, c) for c in close]
    eng = make(rows, costs=costs, limit_touch_prob=0.5)
    targets = rng.integers(-5, 6, 150).astype(float)

    def run() -> tuple:
        eng.reset(10)
        for x in targets:
            eng.step(x, sl=None)
        return eng.kernel_arrays().state.copy(), eng.kernel_arrays().trades[:len(eng.trades)].copy()

    a, b = run(), run()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_batch_engine_matches_single_engines_step_by_step() -> None:
    rng = np.random.default_rng(7)
    t_len = 400
    data = random_bars(rng, t_len)
    config = EngineConfig(costs=CostModel(slippage="random", slippage_bps=3), leverage=3,
                          maintenance_margin=0.02, lot_capacity=4, dead_zone=0.001)
    n = 6
    batch = BatchEngine(data, config, n)
    starts = rng.integers(0, 200, n)
    batch.reset(starts=starts)
    singles = [ExecutionEngine(data, config) for _ in range(n)]
    for i, eng in enumerate(singles):
        eng.reset(int(starts[i]), seed=config.seed + i)
    for _ in range(250):
        targets = rng.integers(-300, 301, n).astype(float)
        targets[rng.random(n) < 0.05] = np.nan
        close_now = np.array([e.close[e.bar] for e in singles])
        side = np.sign(targets)
        sl = np.where(rng.random(n) < 0.3, close_now * (1 - side * 0.01), np.nan)
        tp = np.where(rng.random(n) < 0.3, close_now * (1 + side * 0.01), np.nan)
        sl[targets == 0] = np.nan
        tp[targets == 0] = np.nan
        done = sum(e.done for e in singles)
        assert batch.step(targets, sl, tp) == done
        for i, eng in enumerate(singles):
            if eng.done:
                continue
            s = None if np.isnan(sl[i]) else sl[i]
            p = None if np.isnan(tp[i]) else tp[i]
            eng.step(targets[i], s, p)
        for i, eng in enumerate(singles):
            same = np.arange(K.N_STATE) != K.N_RECORDS  # the batch keeps no records
            np.testing.assert_array_equal(batch.kernel_arrays().state[i][same],
                                          eng.kernel_arrays().state[same])
            np.testing.assert_array_equal(batch.kernel_arrays().lots[i], eng.kernel_arrays().lots)
    assert (batch.n_trades > 10).all()
    assert batch.rejections["bad_quantity"] > 0
    # resetting a subset leaves the others alone
    before = batch.kernel_arrays().state.copy()
    batch.reset([1, 3], starts=[5, 6])
    assert batch.bar[1] == 5 and batch.bar[3] == 6
    np.testing.assert_array_equal(batch.kernel_arrays().state[[0, 2, 4, 5]],
                                  before[[0, 2, 4, 5]])
    assert batch.account(1).equity == config.initial_cash


def test_batch_accounts_at_the_last_bar_are_left_unchanged() -> None:
    batch = BatchEngine(ohlcv([FLAT] * 5), EngineConfig(costs=CostModel.zero()), 3)
    batch.reset(starts=[0, 3, 4])
    assert batch.step(np.array([1.0, 1.0, 1.0])) == 1
    assert batch.bar.tolist() == [1, 4, 4]
    assert batch.done.tolist() == [False, True, True]
    assert batch.position.tolist() == [1, 1, 0]


def test_the_docs_example_runs_as_written() -> None:
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "engine.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "docs/engine.md", "exec"), scope)
    eng = scope["eng"]
    assert eng.rejections == dict.fromkeys(eng.rejections, 0)
    assert eng.position == 0 and len(eng.trades) >= 1


def test_from_dataset_uses_its_arrays_and_spread_column() -> None:
    from rltrade.features.dataset import Dataset

    data = ohlcv([FLAT, FLAT, FLAT])
    ts = np.array([0, 3_600_000_000_000, 7_200_000_000_000], dtype=np.int64)
    ds = Dataset(timestamps=ts, ohlcv=data, features=np.zeros((3, 0), np.float32),
                 feature_names=[], feature_norms=[], signals=np.zeros((3, 0), np.float32),
                 signal_names=[], spec=None, spec_hash="", fingerprint="", timeframe="1h",
                 extras={"spread": np.array([2.0, 2.0, 2.0])})  # type: ignore[arg-type]
    costs = CostModel(maker_fee=0, taker_fee=0, slippage="none", spread="column",
                      spread_unit="bps")
    eng = ExecutionEngine.from_dataset(ds, EngineConfig(costs=costs))
    eng.step(10)
    assert eng.account.spread_cost == pytest.approx(10 * 100 * 0.0001)
    assert eng.account.timestamp == np.datetime64(3_600_000_000_000, "ns")
    batch = BatchEngine.from_dataset(ds, EngineConfig(costs=costs), n_accounts=2)
    batch.step(np.array([10.0, 10.0]))
    np.testing.assert_allclose(batch.equity, eng.equity)


@pytest.mark.parametrize("lag", [0, 2])
def test_a_hold_submits_nothing_and_changes_nothing_else(lag) -> None:
    """K.step skips the order queue for a hold (target == position, levels kept, nothing
    pending, no lag). Replayed against the same targets always submitted, the accounts and
    trade records must be identical except for the order-id counters."""
    rng = np.random.default_rng(3)
    t_len = 3000
    data = random_bars(rng, t_len)
    config = EngineConfig(costs=CostModel(slippage="random", slippage_bps=3), leverage=2,
                          maintenance_margin=0.05, decision_lag=lag)
    fast, slow = ExecutionEngine(data, config), ExecutionEngine(data, config)
    held = 0
    for _ in range(t_len - 1):
        pos = fast.position
        r = rng.random()
        if r < 0.8:
            target, sl = pos, None  # hold
        elif r < 0.9:
            target, sl = float(rng.integers(-50, 51)), None
        else:
            target = float(rng.integers(1, 51))
            sl = fast.close[fast.bar] * 0.97  # a level makes it an order, never a hold
        held += target == pos and sl is None
        fast.step(target, sl)
        # the reference: always through the queue
        ref = slow.kernel_arrays()  # re-read: the trade buffer grows
        K.submit_one(ref.state, ref.orders, ref.market, ref.config, K.K_TARGET, target,
                     np.nan, np.nan if sl is None else sl, np.nan, K._GTC)
        K.advance_one(ref.state, ref.lots, ref.orders, ref.trades, ref.market, ref.config)
        if len(ref.trades) - ref.state[K.N_RECORDS] < 64:
            slow._after(K.F_GROW)
    assert held > 1500 and len(fast.trades) > 100
    ids = {K.NEXT_ORDER_ID, K.LAST_ORDER_ID, K.LAST_CODE}
    same = np.array([i not in ids for i in range(K.N_STATE)])
    fast_st, slow_st = fast.kernel_arrays().state, slow.kernel_arrays().state
    np.testing.assert_array_equal(fast_st[same], slow_st[same])
    np.testing.assert_array_equal(fast.kernel_arrays().lots, slow.kernel_arrays().lots)
    a, b = fast.trades, slow.trades
    assert a.dtype == b.dtype and len(a) == len(b)
    for name in a.dtype.names:
        np.testing.assert_array_equal(a[name], b[name])
    if lag == 0:  # holds took no order id
        assert fast_st[K.NEXT_ORDER_ID] < slow_st[K.NEXT_ORDER_ID]
    else:  # with a decision lag every target is queued
        assert fast_st[K.NEXT_ORDER_ID] == slow_st[K.NEXT_ORDER_ID]
