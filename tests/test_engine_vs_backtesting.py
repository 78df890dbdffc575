"""Golden test: ``mode="ideal"`` replays exactly what backtesting.py 0.6.6 computes.

The same fixed pseudo-random sequence of target positions (whole units, long/short/flat, with
stop-loss and take-profit levels on some, clearing them on a few) runs through the engine and
through a backtesting.py ``Strategy`` on ``sample:EURUSD-1h`` with a commission. Trades (entry
and exit bars, prices, sizes, PnL, commissions) and the equity curve must agree.

backtesting.py models orders as sizes and stop/take-profit per trade; the strategy below turns
each target into the orders that give the engine's position-level semantics (see
docs/engine.md, "Checked against backtesting.py"): reductions through ``Trade.close`` (which
backtesting.py processes before stop orders, at the open, like the engine), increases through
``buy``/``sell`` carrying the position's levels, level changes through ``Trade.sl``/``tp`` on
every open trade.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy

from rltrade.data import load_bars
from rltrade.sim import EngineConfig, ExecutionEngine, Order

CASH = 1e7  # 250x the largest notional: whole units never bind
UNIT = 10_000


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_bars("sample:EURUSD-1h")


def make_plan(close: np.ndarray, seed: int, p_act: float = 0.25) -> dict[int, tuple]:
    """bar -> (target units, sl, tp); sl/tp None = keep, 0 = clear, a price = set."""
    rng = np.random.default_rng(seed)
    t_len = len(close)
    plan: dict[int, tuple] = {}
    for i in range(1, t_len - 3):
        if rng.random() > p_act:
            continue
        target = float(rng.integers(-3, 4) * UNIT + rng.integers(-3, 4) * 1000)
        sl = tp = None
        if target != 0:
            side = 1 if target > 0 else -1
            u = rng.random()
            if u < 0.35:
                sl = close[i] * (1 - side * rng.uniform(0.0005, 0.004))
            elif u < 0.40:
                sl = 0.0
            v = rng.random()
            if v < 0.35:
                tp = close[i] * (1 + side * rng.uniform(0.0005, 0.004))
            elif v < 0.40:
                tp = 0.0
        plan[i] = (target, sl, tp)
    plan[t_len - 3] = (0.0, None, None)
    return plan


def run_engine(bars: pd.DataFrame, plan: dict, commission: float, fill: str = "open"):
    ohlcv = bars[["open", "high", "low", "close", "volume"]].to_numpy()
    config = EngineConfig.ideal(commission, initial_cash=CASH, fill=fill)
    eng = ExecutionEngine(ohlcv, config, timestamps=bars.index)
    eng.reset(start=1)
    equity = [eng.equity]
    while not eng.done:
        action = plan.get(eng.bar)
        if action is not None:
            target, sl, tp = action
            assert eng.submit(Order.target(target, sl=sl, tp=tp)) is not None, eng.last_rejection
        eng.advance()
        equity.append(eng.equity)
    assert eng.position == 0
    return eng, np.array(equity)


class Replay(Strategy):
    plan: ClassVar[dict] = {}

    def init(self) -> None:
        pass

    def next(self) -> None:
        action = self.plan.get(len(self.data) - 1)
        if action is None:
            return
        target, sl, tp = action
        trades = list(self.trades)
        pos = sum(t.size for t in trades)
        closing = target == 0 or (pos != 0 and (target > 0) != (pos > 0))
        cur_sl = None if closing or not trades else trades[0].sl
        cur_tp = None if closing or not trades else trades[0].tp
        new_sl = cur_sl if sl is None else (sl or None)
        new_tp = cur_tp if tp is None else (tp or None)
        if not closing and pos != 0:
            # levels first: backtesting.py queues stop orders at the front, close orders go
            # in front of them below, so the reductions fill at the open before any stop
            if sl is not None or tp is not None:
                for t in trades:
                    t.sl = new_sl
                    t.tp = new_tp
            if abs(target) < abs(pos):
                left = abs(pos) - abs(target)
                closes = []
                for t in trades:
                    if left <= 0:
                        break
                    take = min(left, abs(t.size))
                    closes.append((t, take))
                    left -= take
                for t, take in reversed(closes):  # each goes to the queue's front: FIFO
                    t.close(take / abs(t.size))
            elif abs(target) > abs(pos):
                size = abs(target) - abs(pos)
                (self.buy if target > 0 else self.sell)(size=size, sl=new_sl, tp=new_tp)
        else:
            for t in reversed(trades):
                t.close()
            if target != 0:
                (self.buy if target > 0 else self.sell)(size=abs(target), sl=new_sl, tp=new_tp)


def run_backtesting(bars: pd.DataFrame, plan: dict, commission: float,
                    trade_on_close: bool = False):
    data = bars[["open", "high", "low", "close", "volume"]].copy()
    data.columns = ["Open", "High", "Low", "Close", "Volume"]
    data.index = data.index.tz_localize(None)
    bt = Backtest(data, Replay, cash=CASH, commission=commission, finalize_trades=True,
                  trade_on_close=trade_on_close)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bt.run(plan=plan)


def compare(eng: ExecutionEngine, equity: np.ndarray, stats: pd.Series) -> None:
    ours = pd.DataFrame(eng.trades)
    theirs = stats["_trades"]
    assert len(ours) == len(theirs) > 50
    mine = pd.DataFrame({
        "size": ours["side"] * ours["qty"],
        "entry_bar": ours["entry_bar"],
        "exit_bar": ours["exit_bar"],
        "entry_price": ours["entry_price"],
        "exit_price": ours["exit_price"],
        "pnl": ours["net_pnl"],
        "commission": ours["fees"],
    })
    ref = pd.DataFrame({
        "size": theirs["Size"].astype(float),
        "entry_bar": theirs["EntryBar"],
        "exit_bar": theirs["ExitBar"],
        "entry_price": theirs["EntryPrice"],
        "exit_price": theirs["ExitPrice"],
        "pnl": theirs["PnL"],
        "commission": theirs["Commission"],
    })
    key = ["exit_bar", "entry_bar", "size", "entry_price", "exit_price"]
    mine = mine.sort_values(key, kind="stable").reset_index(drop=True)
    ref = ref.sort_values(key, kind="stable").reset_index(drop=True)
    for col in ("size", "entry_bar", "exit_bar", "entry_price", "exit_price"):
        np.testing.assert_array_equal(mine[col].to_numpy(), ref[col].to_numpy(), err_msg=col)
    np.testing.assert_allclose(mine["pnl"], ref["pnl"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mine["commission"], ref["commission"], rtol=1e-9, atol=1e-12)
    # Equity: relative agreement, and the PnL curve (equity - cash) to a millionth of a dollar.
    curve = stats["_equity_curve"]["Equity"].to_numpy()[1:]
    assert len(curve) == len(equity)
    np.testing.assert_allclose(equity, curve, rtol=1e-9)
    np.testing.assert_allclose(equity - CASH, curve - CASH, rtol=0, atol=1e-6)
    assert abs(stats["Equity Final [$]"] - eng.equity) < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_ideal_mode_matches_backtesting(bars: pd.DataFrame, seed: int) -> None:
    close = bars["close"].to_numpy()
    plan = make_plan(close, seed)
    eng, equity = run_engine(bars, plan, commission=0.0002)
    stats = run_backtesting(bars, plan, commission=0.0002)
    reasons = pd.DataFrame(eng.trades)["exit_reason"].value_counts()
    # the sequence exercises every kind of exit
    assert reasons.get("stop_loss", 0) > 10 and reasons.get("take_profit", 0) > 10
    assert reasons.get("order", 0) > 50
    compare(eng, equity, stats)


def test_fill_at_close_matches_trade_on_close(bars: pd.DataFrame) -> None:
    close = bars["close"].to_numpy()
    plan = make_plan(close, seed=2)
    eng, equity = run_engine(bars, plan, commission=0.0005, fill="close")
    stats = run_backtesting(bars, plan, commission=0.0005, trade_on_close=True)
    compare(eng, equity, stats)


class LimitReplay(Strategy):
    plan: ClassVar[dict] = {}

    def init(self) -> None:
        pass

    def next(self) -> None:
        for units, price in self.plan.get(len(self.data) - 1, ()):
            (self.buy if units > 0 else self.sell)(size=abs(units), limit=price)


def test_limit_orders_match_backtesting(bars: pd.DataFrame) -> None:
    """Good-till-cancelled limit orders, touch fills always (ideal), FIFO netting."""
    close = bars["close"].to_numpy()
    rng = np.random.default_rng(3)
    t_len = len(close) // 2
    plan: dict[int, list] = {}
    for i in range(1, t_len - 3):
        if rng.random() < 0.2:
            units = float(rng.choice([-1, 1]) * rng.integers(1, 5) * 1000)
            price = round(close[i] * (1 - np.sign(units) * rng.uniform(0, 0.002)), 5)
            plan[i] = [(units, price)]
    part = bars.iloc[:t_len]
    ohlcv = part[["open", "high", "low", "close", "volume"]].to_numpy()
    eng = ExecutionEngine(ohlcv, EngineConfig.ideal(0.0003, initial_cash=CASH))
    eng.reset(start=1)
    equity = [eng.equity]
    while not eng.done:
        for units, price in plan.get(eng.bar, ()):
            assert eng.submit(Order.limit(price, units)) is not None
        eng.advance()
        equity.append(eng.equity)
    data = part[["open", "high", "low", "close", "volume"]].copy()
    data.columns = ["Open", "High", "Low", "Close", "Volume"]
    data.index = data.index.tz_localize(None)
    bt = Backtest(data, LimitReplay, cash=CASH, commission=0.0003)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = bt.run(plan=plan)
    # compare the closed trades and the whole equity curve (open trades included)
    theirs = stats["_trades"]
    ours = pd.DataFrame(eng.trades)
    assert len(ours) == len(theirs) > 20
    np.testing.assert_array_equal(ours["entry_bar"], theirs["EntryBar"])
    np.testing.assert_array_equal(ours["exit_bar"], theirs["ExitBar"])
    np.testing.assert_array_equal(ours["entry_price"], theirs["EntryPrice"])
    np.testing.assert_array_equal(ours["exit_price"], theirs["ExitPrice"])
    np.testing.assert_array_equal(ours["side"] * ours["qty"], theirs["Size"])
    np.testing.assert_allclose(ours["net_pnl"], theirs["PnL"], rtol=1e-9, atol=1e-9)
    curve = stats["_equity_curve"]["Equity"].to_numpy()[1:]
    np.testing.assert_allclose(np.array(equity) - CASH, curve - CASH, rtol=0, atol=1e-6)
