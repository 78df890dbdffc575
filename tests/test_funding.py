"""Funding of perpetual futures: when it is booked, its sign for longs and shorts, and its own
cost line in the account, the trades, the steps, the summary, the metrics and the report
(docs/engine.md, "Instruments"). Hand-computed numbers in the comments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rltrade.errors import ConfigError, DataError
from rltrade.sim import CostModel, EngineConfig, ExecutionEngine, Instrument, funding_rates

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def hourly(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Bars opening at 100 + t (t = 0 at 2024-01-01 00:00 UTC), closing 0.5 higher."""
    t = np.arange(n, dtype=float)
    o = 100.0 + t
    c = o + 0.5
    ohlcv = np.column_stack([o, c + 1.0, o - 1.0, c, np.ones(n)])
    ts = (T0 + pd.to_timedelta(np.arange(n), "h")).as_unit("ns").asi8
    return ohlcv, ts


def perp(funding: str = "schedule", **inst) -> EngineConfig:
    return EngineConfig(costs=CostModel.zero(), initial_cash=100_000.0, leverage=5.0,
                        instrument=Instrument(asset_class="crypto_perp", funding=funding, **inst))


RATES = np.full(24, 1e-4)
RATES[16] = -2e-4  # 16:00 UTC: shorts pay longs


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_perpetual_books_funding_at_00_08_16_utc_with_the_sign_of_the_side(side):
    ohlcv, ts = hourly()
    eng = ExecutionEngine(ohlcv, perp(), timestamps=ts, funding_rate=RATES)
    eng.reset(0)
    eng.step(2 * side)  # fill at bar 1's open, 101
    for _ in range(6):
        eng.step(2 * side)  # through bar 7: no funding time yet
    assert eng.account.funding == 0.0
    eng.step(2 * side)  # bar 8 opens at 08:00 UTC: a long pays 2 * 108 * 0.0001 = 0.0216
    a = eng.account
    assert a.funding == pytest.approx(side * 0.0216, abs=1e-15)
    assert a.cash == pytest.approx(100_000 - side * 2 * 101 - side * 0.0216, abs=1e-9)
    assert a.equity == pytest.approx(a.cash + side * 2 * ohlcv[8, 3], abs=1e-9)
    assert a.unrealized == pytest.approx(side * 2 * (108.5 - 101) - side * 0.0216, abs=1e-9)
    for _ in range(8):
        eng.step(2 * side)  # through bar 16 (16:00): the rate is -0.0002, a long receives
    a = eng.account
    # 0.0216 - 2 * 116 * 0.0002 = 0.0216 - 0.0464 = -0.0248 for the long
    assert a.funding == pytest.approx(side * -0.0248, abs=1e-12)
    eng.step(0.0)  # flat at bar 17's open (117)
    (t,) = eng.trades
    assert t["funding"] == pytest.approx(side * -0.0248, abs=1e-12)
    assert t["gross_pnl"] == pytest.approx(side * 2 * (117 - 101), abs=1e-9)
    assert t["net_pnl"] == pytest.approx(t["gross_pnl"] - t["funding"], abs=1e-12)
    a = eng.account
    assert a.equity - a.initial_equity == pytest.approx(a.realized, abs=1e-9)
    assert a.costs == pytest.approx(side * -0.0248, abs=1e-12)


def test_flat_accounts_pay_no_funding_and_orders_at_the_funding_open_come_after_it():
    ohlcv, ts = hourly()
    eng = ExecutionEngine(ohlcv, perp(), timestamps=ts, funding_rate=RATES)
    eng.reset(7)
    eng.step(1.0)  # bought at bar 8's open, after its funding: nothing paid
    assert eng.account.funding == 0.0
    eng.reset(6)
    eng.step(1.0)
    eng.step(0.0)  # sold at bar 8's open, after paying its funding on 1 unit at 108
    assert eng.account.funding == pytest.approx(108e-4)
    assert eng.trades[0]["funding"] == pytest.approx(108e-4)


def test_funding_uses_the_multiplier_and_splits_over_lots():
    ohlcv, ts = hourly()
    eng = ExecutionEngine(ohlcv, perp(multiplier=10.0), timestamps=ts, funding_rate=RATES)
    eng.reset(5)
    eng.step(1.0)  # lot 1 at 106
    eng.step(3.0)  # lot 2 (2 units) at 107
    eng.step(1.0)  # bar 8: funding on 3 units: 3 * 108 * 10 * 1e-4 = 0.324; then sell 2 FIFO
    trades = eng.trades
    # lot 1 (1 unit) carried 0.108, half of lot 2's 0.216 is closed with it
    assert trades["funding"] == pytest.approx([0.108, 0.108])
    assert eng.account.funding == pytest.approx(0.324)
    a = eng.account
    assert a.equity == pytest.approx(a.initial_equity + a.realized + a.unrealized, abs=1e-9)


def test_column_mode_books_the_bars_that_have_a_rate():
    ohlcv, ts = hourly()
    rates = np.full(24, np.nan)
    rates[[5, 12]] = [3e-4, -1e-4]
    eng = ExecutionEngine(ohlcv, perp("column"), timestamps=ts, funding_rate=rates)
    eng.reset(0)
    for _ in range(14):
        eng.step(-1.0)  # a short of 1 from bar 1
    # the short receives 105 * 3e-4 and pays 112 * 1e-4
    assert eng.account.funding == pytest.approx(-105 * 3e-4 + 112 * 1e-4)


def test_batch_accounts_book_the_same_funding():
    from rltrade.sim import BatchEngine

    ohlcv, ts = hourly()
    batch = BatchEngine(ohlcv, perp(), 2, timestamps=ts, funding_rate=RATES)
    batch.reset()
    for _ in range(10):
        batch.step(np.array([2.0, -2.0]))
    # both filled at bar 1 (101) and paid / received 2 * 108 * 1e-4 at bar 8
    assert batch.funding == pytest.approx([0.0216, -0.0216])


def test_funding_schedule_on_other_timeframes():
    inst = Instrument(funding="schedule")
    rate = np.full(6, 1e-4)
    ts4h = (T0 + pd.to_timedelta(np.arange(6) * 4, "h")).as_unit("ns").asi8
    assert funding_rates(inst, rate, ts4h, 6).tolist() == [1e-4, 0, 1e-4, 0, 1e-4, 0]
    shifted = Instrument(funding="schedule", funding_offset_hours=4.0)
    assert funding_rates(shifted, rate, ts4h, 6).tolist() == [0, 1e-4, 0, 1e-4, 0, 1e-4]
    daily = (T0 + pd.to_timedelta(np.arange(3), "D")).as_unit("ns").asi8
    # a daily bar books the three funding times since the previous open (08, 16 and 00 UTC)
    assert funding_rates(inst, rate[:3], daily, 3) == pytest.approx([1e-4, 3e-4, 3e-4])
    # a missing rate takes the last one given; none before a funding time is an error
    gappy = np.array([2e-4, np.nan, np.nan, np.nan, 1e-4, np.nan])
    assert funding_rates(inst, gappy, ts4h, 6).tolist() == [2e-4, 0, 2e-4, 0, 1e-4, 0]
    with pytest.raises(DataError, match="no rate"):
        funding_rates(inst, np.array([np.nan, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4]), ts4h, 6)


def test_funding_needs_its_column_and_the_column_needs_funding():
    ohlcv, ts = hourly()
    with pytest.raises(ConfigError, match="funding_rate"):
        ExecutionEngine(ohlcv, perp(), timestamps=ts)
    with pytest.raises(ConfigError, match="timestamps"):
        ExecutionEngine(ohlcv, perp(), funding_rate=RATES)
    with pytest.raises(ConfigError, match="funding is 'none'"):
        ExecutionEngine(ohlcv, EngineConfig(), timestamps=ts, funding_rate=RATES)
    with pytest.raises(DataError, match="one value per bar"):
        ExecutionEngine(ohlcv, perp(), timestamps=ts, funding_rate=RATES[:5])


# -- through the backtest runner -----------------------------------------------------------------


@pytest.fixture(scope="module")
def perp_dataset():
    from rltrade.data.synthetic import synthetic_market
    from rltrade.features import FeatureSpec, build_dataset

    bars = synthetic_market("gbm", 300, seed=3, timeframe="1h")
    bars["funding_rate"] = np.where(bars.index.hour % 8 == 0, 1e-4, np.nan)
    return build_dataset(bars, FeatureSpec.from_dict({"features": {"returns": {"periods": [1]}},
                                                      "strategies": []}))


@pytest.mark.parametrize("action,sign", [(2, 1.0), (0, -1.0)])  # discrete3: long, short
def test_backtest_books_funding_as_its_own_cost_line(perp_dataset, action, sign, tmp_path):
    from rltrade.agents.policy import PlanPolicy
    from rltrade.evaluation import run_backtest, write_report

    ds = perp_dataset
    engine = {"costs": {"taker_fee": 0.0005, "spread_bps": 0.0, "slippage": "none"},
              "instrument": {"asset_class": "crypto_perp", "funding": "schedule"}}
    hold = PlanPolicy(np.full(len(ds), action), name="hold")
    result = run_backtest(hold, ds, {"window": 4, "engine": engine}, force_close=True)
    steps, trades, summary = result.steps, result.trades, result.summary
    # by hand: position held into each funding bar's open x open price x rate
    pos_before = steps["position"].shift(1).to_numpy()
    bars = steps["bar"].to_numpy()
    funding_bar = (pd.DatetimeIndex(steps.index).hour % 8 == 0) & (np.arange(len(steps)) > 0)
    expected = np.where(funding_bar, pos_before * ds.ohlcv[bars, 0] * 1e-4, 0.0)
    assert np.sign(expected[funding_bar]).tolist() == [sign] * int(funding_bar.sum())
    np.testing.assert_allclose(steps["funding"].to_numpy(), expected, rtol=1e-12, atol=1e-12)
    total = float(expected.sum())
    costs = summary["costs"]
    assert costs["funding"] == pytest.approx(total, rel=1e-12)
    assert costs["total"] == pytest.approx(
        costs["fees"] + costs["spread_cost"] + costs["slippage_cost"] + costs["funding"])
    assert steps["costs"].sum() == pytest.approx(costs["total"], rel=1e-9)
    assert trades["funding"].sum() == pytest.approx(total, rel=1e-9)  # flat at the end
    assert (trades["net_pnl"] == trades["gross_pnl"] - trades["fees"] - trades["spread_cost"]
            - trades["slippage_cost"] - trades["funding"]).all()
    assert result.metrics["costs"]["funding"] == pytest.approx(total, rel=1e-12)
    html = write_report(tmp_path / "report.html", steps=steps, trades=trades, summary=summary,
                        metrics=result.metrics).read_text()
    assert "funding" in html and "Costs" in html
