"""Property tests of the execution engine over random bars, configs and order sequences.

Every example draws bars (with gaps, wicks and prices on a coarse grid so that touches and
ties happen), an engine configuration (costs, leverage, margin, caps, lot size, lag, fill at
the close...) and one action per bar (target, delta, flip, limit, stop levels right and wrong,
NaN and infinite orders, cancels), then checks after every bar:

* equity == cash + position * close, and == initial equity + realized + unrealized;
* fees, spread and slippage costs never negative and never decreasing;
* |position| never above ``max_position``, never short when shorts are off;
* realized PnL == sum of closed-trade net PnL; the lots add up to the position;
* a rejected submission changes nothing but its rejection count;
* after a final ``close_all`` (flat): equity - initial equity == realized PnL;
* with zero costs and constant prices, equity never moves.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rltrade.sim import BatchEngine, CostModel, EngineConfig, ExecutionEngine, Order
from rltrade.sim import kernels as K

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_UNCHANGED_ON_REJECT = np.ones(K.N_STATE, dtype=bool)
_UNCHANGED_ON_REJECT[K.COUNTS:K.COUNTS + K.N_CODES] = False
_UNCHANGED_ON_REJECT[[K.LAST_CODE, K.LAST_ORDER_ID]] = False


@st.composite
def bars(draw: st.DrawFn, min_size: int = 3, max_size: int = 40) -> np.ndarray:
    n = draw(st.integers(min_size, max_size))
    price = draw(st.sampled_from([1.0, 20.0, 100.0, 2500.0]))
    tick = price / 100  # a coarse grid: ties and exact touches happen
    rows = []
    close = price
    for _ in range(n):
        gap, ret, up, down = draw(st.tuples(
            st.one_of(st.floats(-0.01, 0.01), st.floats(-0.15, 0.15)),  # now and then a crash
            st.floats(-0.08, 0.08), st.floats(0, 0.04), st.floats(0, 0.04)))
        o = max(tick, round(close * math.exp(gap) / tick) * tick)
        c = max(tick, round(o * math.exp(ret) / tick) * tick)
        h = round(max(o, c) * math.exp(up) / tick) * tick
        lo = max(tick / 2, round(min(o, c) * math.exp(-down) / tick) * tick)
        rows.append((o, max(h, o, c), min(lo, o, c), c, 1.0))
        close = c
    return np.array(rows)


@st.composite
def configs(draw: st.DrawFn, zero_costs: bool = False) -> EngineConfig:
    if zero_costs:
        costs = CostModel.zero()
    else:
        costs = CostModel(
            maker_fee=draw(st.sampled_from([0.0, 0.0002, 0.003])),
            taker_fee=draw(st.sampled_from([0.0, 0.0005, 0.01])),
            spread_bps=draw(st.sampled_from([0.0, 2.0, 50.0])),
            slippage=draw(st.sampled_from(["none", "fixed", "atr", "random"])),
            slippage_bps=draw(st.sampled_from([0.0, 3.0, 40.0])),
            slippage_atr=draw(st.sampled_from([0.0, 0.1, 1.0])),
        )
    max_position = draw(st.sampled_from([None, 5.0, 40.0]))
    allow_short = draw(st.booleans())
    inventory = draw(st.sampled_from([0.0, 3.0, -2.0]))
    if not allow_short:
        inventory = abs(inventory)
    mode = draw(st.sampled_from(["retail", "retail", "ideal"])) if zero_costs else "retail"
    retail_only = {} if mode == "ideal" else {
        "decision_lag": draw(st.sampled_from([0, 0, 1, 2])),
        "limit_touch_prob": draw(st.sampled_from([0.0, 0.5, 1.0])),
    }
    return EngineConfig(
        mode=mode,
        costs=costs,
        **retail_only,
        initial_cash=draw(st.sampled_from([1_000.0, 50_000.0])),
        initial_position=inventory,
        fill=draw(st.sampled_from(["open", "open", "close"])),
        leverage=draw(st.sampled_from([0.5, 1.0, 3.0, 20.0])),
        maintenance_margin=draw(st.sampled_from([0.0, 0.05, 0.3])),
        max_position=max_position,
        allow_short=allow_short,
        dead_zone=draw(st.sampled_from([0.0, 0.0, 0.02])),
        lot_size=draw(st.sampled_from([0.0, 0.0, 0.5, 1.0])),
        min_notional=draw(st.sampled_from([0.0, 0.0, 30.0])),
        lot_capacity=draw(st.sampled_from([1, 2, 256])),
        order_capacity=draw(st.sampled_from([3, 64])),
        seed=draw(st.integers(0, 1000)),
    )


ACTIONS = ["none", "target", "target", "delta", "flip", "flat", "limit", "nan", "inf",
           "bad_stop", "cancel", "stop_only"]


@st.composite
def actions(draw: st.DrawFn, n: int) -> list[tuple]:
    out = []
    for _ in range(n):
        kind = draw(st.sampled_from(ACTIONS))
        # in multiples of what the initial cash buys at the current close
        units = draw(st.sampled_from([0.02, 0.1, 0.3, 0.9, 2.0, 8.0, 30.0])) * draw(
            st.sampled_from([-1.0, 1.0]))
        a, b = draw(st.floats(0.001, 0.2)), draw(st.floats(0.001, 0.2))
        with_sl, with_tp = draw(st.booleans()), draw(st.booleans())
        valid = draw(st.sampled_from([None, 1, 3]))
        out.append((kind, units, a, b, with_sl, with_tp, valid))
    return out


def make_order(eng: ExecutionEngine, action: tuple) -> Order | str | None:
    kind, units, a, b, with_sl, with_tp, valid = action
    close = float(eng.close[eng.bar])
    pos = eng.position
    units = round(units * eng.config.initial_cash / close, 3)
    if kind in ("target", "delta", "flip", "stop_only"):
        target = {"target": units, "delta": pos + units, "flip": -pos or units,
                  "stop_only": pos}[kind]
        side = np.sign(target)
        sl = close * (1 - side * a) if with_sl and side else None
        tp = close * (1 + side * b) if with_tp and side else None
        if kind == "delta":
            return Order.delta(units, sl=sl, tp=tp)
        return Order.target(target, sl=sl, tp=tp)
    if kind == "flat":
        return Order.target(0.0)
    if kind == "limit":  # at this bar's low (buy) or high (sell): on the price grid, so
        # later bars touch it exactly now and then; or a little away from the close
        row = eng._mkt[eng.bar]
        edge = row[K.M_LOW] if units > 0 else row[K.M_HIGH]
        price = edge if with_sl else close * (1 - np.sign(units) * a * 0.2)
        return Order.limit(price, units, bars_valid=valid)
    if kind == "nan":
        return Order.target(math.nan)
    if kind == "inf":
        return Order.delta(-math.inf)
    if kind == "bad_stop":  # a long with its stop above the price
        return Order.target(abs(units), sl=close * (1 + a))
    if kind == "cancel":
        return "cancel"
    return None


def check_account(eng: ExecutionEngine, config: EngineConfig, prev_costs: tuple) -> tuple:
    a = eng.account
    close = float(eng.close[a.bar])
    scale = 1.0 + abs(a.initial_equity) + a.turnover
    assert math.isclose(a.equity, a.cash + a.position * close, rel_tol=1e-9, abs_tol=1e-9 * scale)
    assert math.isclose(a.equity, a.initial_equity + a.realized + a.unrealized,
                        rel_tol=0, abs_tol=1e-9 * scale)
    costs = (a.fees, a.spread_cost, a.slippage_cost)
    for now, before in zip(costs, prev_costs, strict=True):
        assert now >= 0 and now >= before
    if config.max_position is not None:
        assert abs(a.position) <= config.max_position * (1 + 1e-12)
    if not config.allow_short:
        assert a.position >= 0
    if not a.bankrupt:
        assert a.margin_used == abs(a.position) * close / config.leverage
    assert math.isclose(a.lots[:, 2].sum(), a.position, rel_tol=1e-9, abs_tol=1e-9)
    assert len(a.lots) <= config.lot_capacity
    trades = eng.trades
    assert math.isclose(trades["net_pnl"].sum(), a.realized, rel_tol=0, abs_tol=1e-9 * scale)
    assert (trades["qty"] > 0).all() and (trades["exit_bar"] >= trades["entry_bar"]).all()
    for col in ("fees", "spread_cost", "slippage_cost"):
        assert (trades[col] >= 0).all()
    np.testing.assert_allclose(
        trades["net_pnl"],
        trades["gross_pnl"] - trades["fees"] - trades["spread_cost"] - trades["slippage_cost"],
        rtol=0, atol=1e-9 * scale)
    return costs


def run_and_check(data: np.ndarray, config: EngineConfig, plan: list[tuple],
                  constant_equity: float | None = None) -> ExecutionEngine:
    eng = ExecutionEngine(data, config)
    costs = (0.0, 0.0, 0.0)
    frozen_at: float | None = None
    for action in plan:
        if eng.done:
            break
        order = make_order(eng, action)
        if order == "cancel":
            for p in eng.pending[:1]:
                assert eng.cancel(p["id"])
        elif order is not None:
            before = tuple(a.copy() for a in eng.kernel_arrays()[:3])  # state, lots, orders
            oid = eng.submit(order)
            if oid is None:
                assert eng.last_rejection is not None
                np.testing.assert_array_equal(eng.kernel_arrays().state[_UNCHANGED_ON_REJECT],
                                              before[0][_UNCHANGED_ON_REJECT])
                np.testing.assert_array_equal(eng.kernel_arrays().orders, before[2])
                np.testing.assert_array_equal(eng.kernel_arrays().lots, before[1])
        eng.advance()
        costs = check_account(eng, config, costs)
        if constant_equity is not None:
            assert math.isclose(eng.equity, constant_equity, rel_tol=1e-12)
        if eng.bankrupt:
            assert eng.position == 0
            if frozen_at is None:
                frozen_at = eng.equity
            assert eng.equity == frozen_at
    eng.close_all()
    costs = check_account(eng, config, costs)
    a = eng.account
    assert a.position == 0 and a.unrealized == 0
    scale = 1.0 + abs(a.initial_equity) + a.turnover
    assert math.isclose(a.equity - a.initial_equity, a.realized, rel_tol=0, abs_tol=1e-9 * scale)
    return eng


@SETTINGS
@given(data=bars(), config=configs(), seed=st.integers(0, 2**32 - 1), plan_data=st.data())
def test_accounting_invariants(data: np.ndarray, config: EngineConfig, seed: int,
                               plan_data: st.DataObject) -> None:
    plan = plan_data.draw(actions(len(data)))
    run_and_check(data, config, plan)


@SETTINGS
@given(n=st.integers(3, 30), price=st.sampled_from([0.5, 100.0, 4321.0]),
       config=configs(zero_costs=True), plan_data=st.data())
def test_zero_costs_and_constant_prices_keep_equity_constant(
        n: int, price: float, config: EngineConfig, plan_data: st.DataObject) -> None:
    data = np.tile([price, price, price, price, 1.0], (n, 1))
    plan = plan_data.draw(actions(n))
    initial = config.initial_cash + config.initial_position * price
    eng = run_and_check(data, config, plan, constant_equity=initial)
    assert eng.account.costs == 0


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=bars(min_size=10, max_size=30), config=configs(), plan_data=st.data())
def test_batch_equals_single_engines(data: np.ndarray, config: EngineConfig,
                                     plan_data: st.DataObject) -> None:
    n = 3
    steps = len(data) - 1
    targets = np.array(plan_data.draw(st.lists(
        st.lists(st.sampled_from([0.0, 1.0, -2.0, 7.5, 40.0, -60.0, math.nan]),
                 min_size=n, max_size=n), min_size=steps, max_size=steps)))
    starts = plan_data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    batch = BatchEngine(data, config, n)
    batch.reset(starts=starts)
    singles = [ExecutionEngine(data, config) for _ in range(n)]
    for i, eng in enumerate(singles):
        eng.reset(starts[i], seed=config.seed + i)
    same = np.arange(K.N_STATE) != K.N_RECORDS
    for row in targets:
        batch.step(row)
        for i, eng in enumerate(singles):
            if not eng.done:
                eng.step(row[i])
            np.testing.assert_array_equal(batch.kernel_arrays().state[i][same],
                                          eng.kernel_arrays().state[same])
            np.testing.assert_array_equal(batch.kernel_arrays().lots[i], eng.kernel_arrays().lots)


@SETTINGS
@given(data=bars(min_size=8), config=configs(), mmr=st.sampled_from([0.0, 0.05]),
       plan_data=st.data())
def test_margin_stress_liquidation_and_bankruptcy(data: np.ndarray, config: EngineConfig,
                                                  mmr: float, plan_data: st.DataObject) -> None:
    """High leverage and large orders: liquidations and bankruptcies keep every invariant,
    and a bankrupt account stays frozen (checked in ``run_and_check``)."""
    config = EngineConfig.model_validate({
        **config.model_dump(exclude={"max_position", "allow_short"}),
        "leverage": 20.0, "maintenance_margin": mmr,
    })
    plan = plan_data.draw(st.lists(
        st.tuples(st.sampled_from(["target", "flip", "none"]), st.sampled_from([15.0, -15.0]),
                  st.just(0.1), st.just(0.1), st.just(False), st.just(False), st.just(None)),
        min_size=len(data), max_size=len(data)))
    run_and_check(data, config, plan)
