"""Instruments: contract multiplier, tick and lot rounding, per-unit and minimum fees, margin,
the market presets and `rltrade config example --preset` (docs/engine.md, "Instruments").

The MES numbers are computed by hand in the comments: 5 USD per index point, tick 0.25,
0.62 USD a contract per side.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import run_cli
from rltrade.config import RunConfig, example_yaml
from rltrade.errors import ConfigError
from rltrade.sim import (
    PRESETS,
    CostModel,
    EngineConfig,
    ExecutionEngine,
    Instrument,
    Order,
    preset,
)
from rltrade.sim import kernels as K

# open, high, low, close, volume
MES_BARS = np.array([
    [5000.00, 5002.00, 4998.00, 5001.00, 1.0],
    [5001.00, 5010.00, 5000.00, 5008.50, 1.0],
    [5008.75, 5012.00, 5005.00, 5010.25, 1.0],
    [5010.00, 5011.00, 5000.00, 5003.00, 1.0],
    [5003.00, 5004.00, 4990.00, 4995.50, 1.0],
])


def mes(spread_bps: float = 0.0, **engine) -> EngineConfig:
    costs = CostModel(maker_fee=0.0, taker_fee=0.0, fee_per_unit=0.62, spread_bps=spread_bps,
                      slippage="none")
    inst = Instrument(asset_class="future", multiplier=5.0, tick_size=0.25, lot_size=1.0,
                      initial_margin=0.1, maintenance_margin=0.05)
    return EngineConfig(costs=costs, instrument=inst, initial_cash=100_000.0, **engine)


# -- multiplier and per-contract fees ------------------------------------------------------------


def test_mes_backtest_books_multiplier_and_per_contract_fees_exactly():
    eng = ExecutionEngine(MES_BARS, mes())
    eng.reset(0)
    eng.step(3)  # buy 3 at bar 1's open, 5001.00
    a = eng.account
    # cash = 100,000 - 3 * 5001 * 5 - 3 * 0.62 = 24,983.14
    assert a.cash == pytest.approx(24_983.14, abs=1e-9)
    assert a.fees == pytest.approx(1.86, abs=1e-12)
    # equity = cash + 3 * 5008.50 * 5 = 100,110.64 (112.50 of points minus 1.86 of fees)
    assert a.equity == pytest.approx(100_110.64, abs=1e-9)
    assert a.unrealized == pytest.approx(112.5 - 1.86, abs=1e-9)
    assert a.turnover == pytest.approx(3 * 5001 * 5, abs=1e-9)
    assert a.margin_used == pytest.approx(3 * 5008.5 * 5 * 0.1, abs=1e-9)

    eng.step(-2)  # sell 5 at bar 2's open, 5008.75: close 3, open a short of 2
    a = eng.account
    # cash = 24,983.14 + 5 * 5008.75 * 5 - 5 * 0.62 = 150,198.79
    assert a.cash == pytest.approx(150_198.79, abs=1e-9)
    # equity = cash - 2 * 5010.25 * 5 = 100,096.29
    assert a.equity == pytest.approx(100_096.29, abs=1e-9)
    assert a.fees == pytest.approx(8 * 0.62, abs=1e-12)
    (t,) = eng.trades
    assert (t["side"], t["qty"], t["entry_price"], t["exit_price"]) == (1, 3.0, 5001.0, 5008.75)
    assert t["gross_pnl"] == pytest.approx(3 * 7.75 * 5, abs=1e-9)  # 116.25
    assert t["fees"] == pytest.approx(6 * 0.62, abs=1e-12)  # entry 1.86 + 3 of 5 exit fees
    assert t["net_pnl"] == pytest.approx(116.25 - 3.72, abs=1e-9)

    eng.step(0)  # buy 2 back at bar 3's open, 5010.00
    a = eng.account
    assert a.position == 0.0
    # the short: 2 * (5008.75 - 5010.00) * 5 = -12.50, fees 2 * 0.62 + 2 * 0.62 = 2.48
    t = eng.trades[-1]
    assert t["gross_pnl"] == pytest.approx(-12.5, abs=1e-9)
    assert t["fees"] == pytest.approx(2.48, abs=1e-12)
    assert a.equity == pytest.approx(100_000 + 116.25 - 12.5 - 10 * 0.62, abs=1e-9)
    assert a.equity - a.initial_equity == pytest.approx(a.realized, abs=1e-9)


def test_multiplier_scales_leverage_and_liquidation():
    # leverage 10 (initial margin 10 %): at most 10 * 100,000 / (5001 * 5) = 39.99 -> 39 lots
    eng = ExecutionEngine(MES_BARS, mes())
    eng.reset(0)
    eng.step(1000)
    assert eng.position == 39.0
    assert eng.adjustments["clamped_leverage"] == 1
    # the liquidation price is in index points: cash / (|q| * 5 * (1 - m)) for a long
    p = K.liquidation_price(eng.kernel_arrays().state, eng.kernel_arrays().config)
    assert p == pytest.approx(-eng.cash / (39 * 5 * (1 - 0.05)))


# -- tick and lot rounding -----------------------------------------------------------------------


def test_tick_rounding_is_against_the_trader_and_booked_as_slippage():
    # half spread 0.25 bp of 5001.00 = 0.125025: a buy executes at 5001.125025, on the tick
    # grid 5001.25; a sell at bar 2's open 5008.75 - 0.12521875 = 5008.62478125 -> 5008.50
    eng = ExecutionEngine(MES_BARS, mes(spread_bps=0.5))
    eng.reset(0)
    eng.step(2)
    a = eng.account
    assert a.spread_cost == pytest.approx(2 * 5001 * 0.25e-4 * 5, rel=1e-12)
    assert a.spread_cost + a.slippage_cost == pytest.approx(2 * 0.25 * 5, abs=1e-9)
    # cash moved by the executed price on the grid: 2 * 5001.25 * 5 + fees
    assert a.cash == pytest.approx(100_000 - 2 * 5001.25 * 5 - 2 * 0.62, abs=1e-9)
    eng.step(0)
    a = eng.account
    assert a.cash == pytest.approx(100_000 - 2 * 5001.25 * 5 + 2 * 5008.5 * 5 - 4 * 0.62,
                                   abs=1e-9)
    t = eng.trades[-1]
    assert t["spread_cost"] + t["slippage_cost"] == pytest.approx(2 * 2 * 0.25 * 5, abs=1e-9)
    # trades keep reference prices
    assert (t["entry_price"], t["exit_price"]) == (5001.0, 5008.75)


def test_round_to_tick():
    assert K.round_to_tick(5001.125, 0.25, 1.0) == 5001.25
    assert K.round_to_tick(5001.125, 0.25, -1.0) == 5001.0
    assert K.round_to_tick(5001.25, 0.25, 1.0) == 5001.25  # on the grid: unchanged
    assert K.round_to_tick(1.1, 0.1, 1.0) == pytest.approx(1.1)  # 1.1 / 0.1 = 11.000000000000002
    assert K.round_to_tick(1.10001, 0.00001, -1.0) == pytest.approx(1.10001)


def test_limit_prices_move_to_the_tick_on_the_passive_side():
    eng = ExecutionEngine(MES_BARS, mes())
    eng.reset(0)
    eng.submit(Order.limit(4999.1, 1))
    eng.submit(Order.limit(5003.1, -1))
    prices = [o["price"] for o in eng.pending]
    assert prices == [4999.0, 5003.25]


def test_lot_rounding_of_the_instrument():
    eng = ExecutionEngine(MES_BARS, mes())
    eng.reset(0)
    eng.step(2.7)
    assert eng.position == 2.0
    assert eng.adjustments["lot_rounded"] == 1
    assert EngineConfig(instrument={"lot_size": 0.001}).lot_size == 0.001
    with pytest.raises(ConfigError, match="lot_size"):
        EngineConfig(lot_size=0.01, instrument={"lot_size": 0.001})


def test_instrument_margin_sets_leverage_and_maintenance():
    cfg = EngineConfig(instrument={"initial_margin": 0.05, "maintenance_margin": 0.01})
    assert cfg.leverage == pytest.approx(20.0)
    assert cfg.maintenance_margin == 0.01
    # a resolved config (both written) loads again
    again = EngineConfig.from_dict(cfg.model_dump(mode="json"))
    assert again == cfg
    with pytest.raises(ConfigError, match="leverage"):
        EngineConfig(leverage=5, instrument={"initial_margin": 0.05})
    with pytest.raises(ConfigError, match="maintenance_margin"):
        Instrument(initial_margin=0.05, maintenance_margin=0.1)
    with pytest.raises(ConfigError, match="multiplier"):
        Instrument(multiplier=0)
    with pytest.raises(ConfigError, match="pay funding"):
        Instrument(asset_class="equity", funding="schedule")


def test_per_share_fee_with_a_minimum():
    costs = CostModel(maker_fee=0.0, taker_fee=0.0, fee_per_unit=0.005, min_fee=1.0,
                      spread_bps=0.0, slippage="none")
    bars = MES_BARS.copy()
    bars[:, :4] /= 10  # a 500 USD share
    eng = ExecutionEngine(bars, EngineConfig(costs=costs, initial_cash=1e6, leverage=2.0,
                                             instrument={"lot_size": 1.0}))
    eng.reset(0)
    eng.step(100)  # 100 * 0.005 = 0.50 -> the minimum, 1.00
    assert eng.account.fees == pytest.approx(1.0)
    eng.step(1100)  # 1000 * 0.005 = 5.00
    assert eng.account.fees == pytest.approx(6.0)


def test_default_instrument_is_a_plain_unit():
    cfg = EngineConfig()
    assert cfg.instrument == Instrument()
    eng = ExecutionEngine(MES_BARS, cfg)
    vec = eng.kernel_arrays().config
    assert (vec[K.C_MULTIPLIER], vec[K.C_TICK], vec[K.C_FEE_UNIT], vec[K.C_MIN_FEE]) == (
        1.0, 0.0, 0.0, 0.0)
    assert not eng.kernel_arrays().market[:, K.M_FUNDING].any()


#: (cash, equity, realized, fees, spread, slippage, trades) of the scenario below, recorded on the
#: commit before instruments existed (dc204b0): the default instrument must reproduce them bit
#: for bit
OLD_NUMBERS = [
    (6490.921236453662, 50297.77722886592, 75.34771653029247, 1838.1777228389788,
     171.25605979559802, 342.51211959119604, 118),
    (5420.168962607189, 49198.178609563714, -1005.0492057237107, 2363.6874244135415,
     664.6453933640704, 1851.0773598899455, 127),
]


def test_default_instrument_reproduces_the_old_numbers_bit_for_bit():
    from rltrade.data.synthetic import synthetic_market

    bars = synthetic_market("gbm", 400, seed=11, timeframe="1h")
    ohlcv = bars[["open", "high", "low", "close", "volume"]].to_numpy()
    configs = (EngineConfig(), EngineConfig(leverage=4, maintenance_margin=0.1, lot_size=0.5,
                                            costs=CostModel(slippage="atr", spread_bps=3)))
    for cfg, expected in zip(configs, OLD_NUMBERS, strict=True):
        eng = ExecutionEngine(ohlcv, cfg)
        eng.reset(0)
        r = np.random.default_rng(3)
        while not eng.done:
            u = r.uniform()
            c = eng.close[eng.bar]
            if u < 0.3:
                eng.step(r.uniform(-900, 900), sl=c * 0.98 if u < 0.1 else None,
                         tp=c * 1.03 if u > 0.2 else None)
            elif u < 0.45:
                eng.submit(Order.limit(c * r.uniform(0.99, 1.01), r.uniform(-300, 300),
                                       bars_valid=3))
                eng.advance()
            else:
                eng.advance()
        a = eng.account
        assert (a.cash, a.equity, a.realized, a.fees, a.spread_cost, a.slippage_cost,
                a.n_trades) == expected
        assert a.funding == 0.0


def test_env_sizes_contracts_with_the_multiplier():
    """discrete3 'long' at 1x: position * close * multiplier is about the equity, not 5x."""
    from rltrade.agents import make_baseline
    from rltrade.data.synthetic import synthetic_market
    from rltrade.evaluation import run_backtest
    from rltrade.features import FeatureSpec, build_dataset

    bars = synthetic_market("gbm", 200, seed=1, timeframe="5min")
    bars[["open", "high", "low", "close"]] *= 50  # index points around 5,000
    ds = build_dataset(bars, FeatureSpec.from_dict({"features": {"returns": {"periods": [1]}},
                                                    "strategies": []}))
    engine = {"initial_cash": 1_000_000.0, "costs": {"maker_fee": 0.0, "taker_fee": 0.0,
                                                   "fee_per_unit": 0.62, "spread_bps": 0.0,
                                                   "slippage": "none"},
              "instrument": {"multiplier": 5.0, "tick_size": 0.25, "lot_size": 1.0}}
    result = run_backtest(make_baseline("buy_and_hold"), ds, {"window": 4, "engine": engine},
                          benchmark=False)
    first = result.steps.iloc[1]
    exposure = first["position"] * first["close"] * 5 / first["equity"]
    assert first["position"] == math.floor(first["position"]) and first["position"] > 0
    assert 0.9 < exposure <= 1.0
    assert result.summary["costs"]["fees"] == pytest.approx(0.62 * first["position"])


# -- presets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_load_and_validate(name):
    cfg = EngineConfig(**preset(name))
    assert cfg.instrument.asset_class != "generic"
    assert cfg.maintenance_margin <= 1 / cfg.leverage
    run = RunConfig.from_dict(yaml.safe_load(example_yaml(name)))
    assert run.env.engine == cfg
    # the venue's margin limit is the engine's; a full discrete3 position stays at 1x equity
    assert run.env.max_exposure * cfg.leverage == pytest.approx(1.0, rel=1e-5)


def test_cme_micro_preset_is_mes():
    cfg = EngineConfig(**preset("cme-micro"))
    assert (cfg.instrument.multiplier, cfg.instrument.tick_size, cfg.lot_size) == (5.0, 0.25, 1.0)
    assert cfg.costs.fee_per_unit > 0
    perp = EngineConfig(**preset("crypto-perp")).instrument
    assert (perp.funding, perp.funding_interval_hours) == ("schedule", 8.0)


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="crypto-perp"):
        preset("crypto-perpetual")


def test_the_docs_instrument_example_runs_as_written():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "engine.md").read_text()
    section = text.split("## 12. Instruments and funding", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "docs/engine.md", "exec"), scope)
    eng = scope["eng"]
    assert eng.account.funding == pytest.approx(0.5)


def test_cli_config_example_preset(tmp_path, capsys):
    out = tmp_path / "perp.yaml"
    assert run_cli(["config", "example", "--preset", "crypto-perp", "--out", str(out)],
                   capsys)[0] == 0
    cfg = RunConfig.from_yaml(out)
    assert cfg.env.engine.instrument.funding == "schedule"
    assert cfg.env.engine.costs.taker_fee == 0.0005
    code, _, err = run_cli(["config", "example", "--preset", "nope"], capsys)
    assert code == 2 and "unknown preset" in err


# -- property: the accounting identities hold with any instrument ---------------------------------


@st.composite
def instrument_cases(draw: st.DrawFn) -> tuple[np.ndarray, EngineConfig, np.ndarray, list]:
    n = draw(st.integers(3, 30))
    price = draw(st.sampled_from([1.1, 95.0, 5000.0]))
    rets = draw(st.lists(st.floats(-0.05, 0.05), min_size=n, max_size=n))
    close = price * np.exp(np.cumsum(rets))
    open_ = np.concatenate([[price], close[:-1]]) * np.exp(
        np.array(draw(st.lists(st.floats(-0.01, 0.01), min_size=n, max_size=n))))
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    ohlcv = np.column_stack([open_, high, low, close, np.ones(n)])
    rates = np.array(draw(st.lists(st.sampled_from([0.0, 0.0, 1e-4, -3e-4, 0.01]),
                                   min_size=n, max_size=n)))
    inst = Instrument(multiplier=draw(st.sampled_from([1.0, 5.0, 50.0, 0.1])),
                      tick_size=draw(st.sampled_from([0.0, 0.01, 0.25])),
                      lot_size=draw(st.sampled_from([0.0, 0.5, 1.0])),
                      funding=draw(st.sampled_from(["none", "column"])))
    costs = CostModel(maker_fee=draw(st.sampled_from([0.0, 0.0002])),
                      taker_fee=draw(st.sampled_from([0.0, 0.0005])),
                      fee_per_unit=draw(st.sampled_from([0.0, 0.62])),
                      min_fee=draw(st.sampled_from([0.0, 1.0])),
                      spread_bps=draw(st.sampled_from([0.0, 3.0])),
                      slippage=draw(st.sampled_from(["none", "fixed"])))
    cfg = EngineConfig(costs=costs, instrument=inst, initial_cash=100_000.0,
                       leverage=draw(st.sampled_from([1.0, 3.0])), maintenance_margin=0.05)
    actions = draw(st.lists(st.one_of(
        st.tuples(st.just("target"), st.floats(-200, 200)),
        st.tuples(st.just("limit"), st.floats(-50, 50).filter(lambda x: abs(x) > 0.01))),
        min_size=n, max_size=n))
    return ohlcv, cfg, rates, actions


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(instrument_cases())
def test_accounting_identities_hold_with_any_instrument(case):
    ohlcv, cfg, rates, actions = case
    mult = cfg.instrument.multiplier
    funding = rates if cfg.instrument.funding != "none" else None
    eng = ExecutionEngine(ohlcv, cfg, funding_rate=funding)
    eng.reset(0)
    for kind, units in actions:
        if eng.done:
            break
        close = eng.close[eng.bar]
        if kind == "target":
            eng.step(units / mult)
        else:
            eng.submit(Order.limit(close * (0.995 if units > 0 else 1.005), units / mult,
                                   bars_valid=2))
            eng.advance()
        a = eng.account
        tol = 1e-9 * (a.initial_equity + a.turnover)
        close = ohlcv[a.bar, 3]
        if not a.bankrupt:
            assert a.equity == pytest.approx(a.cash + a.position * close * mult, abs=tol)
        assert a.equity == pytest.approx(a.initial_equity + a.realized + a.unrealized, abs=tol)
        assert min(a.fees, a.spread_cost, a.slippage_cost) >= 0.0
        # the cost lines of the closed trades plus those still attached to the open lots are
        # the account's totals
        t = eng.trades
        open_gross = float((a.lots[:, 2] * (close - a.lots[:, 1])).sum() * mult)
        attached = open_gross - a.unrealized
        booked = float((t["fees"] + t["spread_cost"] + t["slippage_cost"] + t["funding"]).sum())
        assert booked + attached == pytest.approx(a.costs, abs=tol)
        assert a.costs == a.fees + a.spread_cost + a.slippage_cost + a.funding
        assert a.realized == pytest.approx(float(t["net_pnl"].sum()), abs=tol)
        if cfg.lot_size and not a.bankrupt:
            assert abs(a.position / cfg.lot_size - round(a.position / cfg.lot_size)) < 1e-6


def test_a_target_within_float_dust_of_flat_closes_and_its_fee_stays_on_a_trade():
    """Found by the property above: a target of 7e-19 after a position of 1 left a 7e-19
    position with no lot, and its closing fill's minimum fee reached no trade."""
    ohlcv = np.tile([1.1, 1.111, 1.089, 1.1, 1.0], (6, 1))
    cfg = EngineConfig(costs=CostModel(min_fee=1.0, spread_bps=0.0, slippage="none"),
                       initial_cash=100_000.0)
    eng = ExecutionEngine(ohlcv, cfg)
    eng.reset(0)
    for units in (1.0, 7.195614602792772e-19, 0.0, 0.0):
        eng.step(units)
    a = eng.account
    assert a.position == 0.0
    assert a.equity == pytest.approx(a.initial_equity + a.realized + a.unrealized, abs=1e-9)
    assert a.fees == pytest.approx(2.0)  # open and close: one minimum fee each, no third
