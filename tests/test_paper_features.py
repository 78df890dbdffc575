"""Incremental Dataset extension (equal to a batch rebuild, every feature and signal) and the
engine mirror (the env's core fed one bar at a time equals the backtest on the batch Dataset:
ATR-sized stops, ATR slippage, a spread column, the risk manager, the core outgrowing itself)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rltrade.agents.policy import PlanPolicy
from rltrade.data import load_bars
from rltrade.data.synthetic import synthetic_market
from rltrade.envs.config import EnvConfig
from rltrade.errors import ConfigError, DataError
from rltrade.evaluation.backtest import run_backtest
from rltrade.evaluation.ranges import with_context
from rltrade.features.dataset import build_dataset
from rltrade.features.incremental import IncrementalDataset, extension_mismatches
from rltrade.features.normalize import Normalizer
from rltrade.features.spec import FeatureSpec
from rltrade.live.mirror import EngineMirror
from rltrade.sim import kernels as K
from rltrade.sim.risk import RiskManager, RiskState


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return load_bars("sample:EURUSD-1h")


def test_extending_by_one_bar_equals_a_batch_rebuild_default_spec(eurusd):
    """The default spec (18 feature groups, five strategies): 200 bars appended one at a
    time give exactly the batch build's rows, every feature and signal."""
    cut, n_new = 2700, 200
    inc = IncrementalDataset(eurusd.iloc[:cut])
    assert inc.calibrate() == 2048
    rows = inc.append_frame(eurusd.iloc[cut: cut + n_new])
    assert rows == list(range(rows[0], rows[0] + n_new))
    batch = build_dataset(eurusd.iloc[: cut + n_new])
    ext = inc.dataset
    assert len(ext) == len(batch)
    assert extension_mismatches(ext, batch) == []
    assert np.array_equal(ext.features, batch.features)
    assert np.array_equal(ext.signals, batch.signals)
    assert np.array_equal(ext.timestamps, batch.timestamps)


def test_extension_with_extra_columns_and_higher_timeframe_strategies():
    bars = synthetic_market("regime", 2600, seed=4, timeframe="15m", derivatives=True)
    bars["spread"] = 0.5 + (np.arange(len(bars)) % 7) / 10
    spec = FeatureSpec.from_dict({
        "features": [{"name": "returns", "params": {"periods": [1, 8]}}, {"name": "atr"},
                     {"name": "funding"}, {"name": "open_interest"}, {"name": "adx"}],
        "strategies": [{"name": "supertrend", "timeframe": "1h"},
                       {"name": "bbands_rsi", "timeframe": "4h"},
                       {"name": "atr_breakout", "timeframe": None}]})
    inc = IncrementalDataset(bars.iloc[:2300], spec, tail=1024)
    inc.calibrate()
    inc.append_frame(bars.iloc[2300:])
    batch = build_dataset(bars, spec)
    assert set(batch.extras) >= {"spread"} and len(batch.signal_names) == 12
    assert extension_mismatches(inc.dataset, batch) == []


def test_calibration_lengthens_a_window_too_short_for_the_features(eurusd):
    inc = IncrementalDataset(eurusd.iloc[:3000], tail=64)  # shorter than the warm-up (520)
    with pytest.raises(DataError, match="not enough"):
        inc.row_from_tail(inc.n_bars)
    assert inc.calibrate() >= 1024
    inc.append_frame(eurusd.iloc[3000:3040])
    assert extension_mismatches(inc.dataset, build_dataset(eurusd.iloc[:3040])) == []


def test_a_window_that_cannot_reproduce_the_batch_is_refused(eurusd):
    inc = IncrementalDataset(eurusd.iloc[:3000], tail=600)
    with pytest.raises(DataError, match="unbounded memory"):
        inc.calibrate(max_tail=600)


def test_append_refuses_bars_out_of_order_or_lacking_columns(eurusd):
    inc = IncrementalDataset(eurusd.iloc[:1500], tail=1024)
    last = int(eurusd.index[1499].value)
    with pytest.raises(DataError, match="not after the last bar"):
        inc.append(last, 1.0, 1.0, 1.0, 1.0, 0.0)
    bars = synthetic_market("gbm", 800, seed=2, timeframe="1h")
    bars["spread"] = 1.0
    spec = FeatureSpec.from_dict({"features": [{"name": "rsi"}], "strategies": []})
    inc2 = IncrementalDataset(bars.iloc[:700], spec)
    nxt = bars.iloc[700]
    with pytest.raises(DataError, match="lacks column"):
        inc2.append(int(bars.index[700].value), nxt.open, nxt.high, nxt.low, nxt.close,
                    nxt.volume)
    n = len(inc2)
    inc2.append(int(bars.index[700].value), nxt.open, nxt.high, nxt.low, nxt.close,
                nxt.volume, spread=1.0)
    assert len(inc2) == n + 1


# -- the engine mirror ------------------------------------------------------------------------
def _action(plan: np.ndarray, row: int) -> np.ndarray:
    return plan[row][None, :] if plan.ndim == 2 else np.array([plan[row]])


def _mirror_vs_backtest(bars: pd.DataFrame, spec: FeatureSpec, cfg: EnvConfig, cut: int,
                        spare: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Feed the mirror the bars after ``cut`` one at a time with a random plan; return the
    backtest's steps and the mirror's equity and position per bar."""
    batch = build_dataset(bars, spec)
    start_ts = bars.index[cut - 1]
    sliced = with_context(batch, start_ts, None, cfg.window)
    rng = np.random.default_rng(7)
    if cfg.action_scheme == "exposure_sl":
        plan = rng.uniform(-1, 1, (len(sliced), 2))
        kernel_plan = plan
    else:
        plan = rng.integers(0, 3, len(sliced))
        kernel_plan = np.stack([plan, np.zeros(len(plan))], axis=1).astype(float)
    norm = Normalizer.for_dataset(batch)
    bt = run_backtest(PlanPolicy(plan, action_scheme=cfg.action_scheme), sliced, cfg,
                      normalizer=norm, metrics=False, benchmark=False)
    inc = IncrementalDataset(bars.iloc[:cut], spec, tail=1024)
    mirror = EngineMirror(inc, EnvConfig.build(cfg, mode="eval"), norm, len(inc) - 1,
                          cfg.engine.seed, spare=spare)
    offset = int(np.searchsorted(sliced.timestamps, inc.dataset.timestamps[-1]))
    equity, position = [mirror.state[K.EQUITY]], [mirror.state[K.POS]]
    mirror.decide(_action(plan, offset))
    for i in range(cut, len(bars)):
        row = bars.iloc[i]
        inc.append(int(bars.index[i].value), row.open, row.high, row.low, row.close,
                   row.volume, **{c: row[c] for c in inc.extra_columns})
        mirror.add_bar()
        mirror.step()
        equity.append(mirror.state[K.EQUITY])
        position.append(mirror.state[K.POS])
        if i < len(bars) - 1:
            mirror.decide(_action(plan, offset + i - cut + 1))
    del kernel_plan
    return bt.steps, np.array(equity), np.array(position)


def test_mirror_fed_bar_by_bar_equals_the_backtest_with_stops_slippage_and_risk():
    bars = synthetic_market("regime", 1700, seed=9, timeframe="1h")
    bars["spread"] = 1.0 + (np.arange(len(bars)) % 5)
    spec = FeatureSpec.from_dict({"features": [{"name": "returns", "params": {"periods": [1]}},
                                               {"name": "rsi"}],
                                  "strategies": [{"name": "supertrend", "timeframe": None}]})
    cfg = EnvConfig.build({
        "action_scheme": "exposure_sl", "window": 6, "mode": "eval",
        "engine": {"leverage": 3, "costs": {"spread": "column", "spread_unit": "bps",
                                            "slippage": "atr"}},
        "risk": {"drawdown": {"max_drawdown": 0.08, "action": "cut"},
                 "volatility": {"max_atr_pct": 0.004}, "daily_loss": {"max_daily_loss": 0.03}},
    })
    steps, equity, position = _mirror_vs_backtest(bars, spec, cfg, 1400, spare=5)
    assert len(steps) == len(equity)
    assert steps["stop_triggered"].sum() > 0 and (steps["risk_reason"] != "").sum() > 0
    np.testing.assert_allclose(equity, steps["equity"].to_numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(position, steps["position"].to_numpy(), rtol=0, atol=1e-9)


def test_mirror_snapshot_restores_the_same_account():
    bars = synthetic_market("gbm", 900, seed=3, timeframe="1h")
    spec = FeatureSpec.from_dict({"features": [{"name": "rsi"}], "strategies": []})
    cfg = EnvConfig.build({"window": 4, "mode": "eval",
                           "risk": {"daily_loss": {"max_daily_loss": 0.5}}})
    norm = Normalizer.for_dataset(build_dataset(bars.iloc[:800], spec))

    def mirror_at(n: int, origin: int | None = None) -> EngineMirror:
        inc = IncrementalDataset(bars.iloc[:n], spec)
        return EngineMirror(inc, cfg, norm, len(inc) - 1, 0, spare=50, origin=origin)

    a = mirror_at(800)
    for i in range(800, 850):
        a.decide(np.array([i % 3]))
        row = bars.iloc[i]
        a.data.append(int(bars.index[i].value), row.open, row.high, row.low, row.close,
                      row.volume)
        a.add_bar()
        a.step()
    a.decide(np.array([2]))
    snap = a.snapshot()
    b = mirror_at(850, a.origin)
    b.restore(snap)
    assert np.array_equal(a.state, b.state)
    assert b.core.risk[0].state_dict() == a.core.risk[0].state_dict()
    for mirror in (a, b):
        row = bars.iloc[850]
        mirror.data.append(int(bars.index[850].value), row.open, row.high, row.low, row.close,
                           row.volume)
        mirror.add_bar()
        mirror.step()
    assert np.array_equal(a.state, b.state)


def test_risk_manager_state_round_trip():
    cfg = {"drawdown": {"max_drawdown": 0.1}, "daily_loss": {"max_daily_loss": 0.02}}
    a = RiskManager(cfg)
    h = 3_600 * 10**9
    for k, eq in enumerate([100.0, 104.0, 101.0, 97.0]):
        a.check_target(RiskState(k * h, 1.0, 1.0, eq, 0.01, 1.0), 5.0)
    assert a.kill_switch_active
    b = RiskManager(cfg)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()
    assert b.kill_switch_active and b.peak_equity == 104.0 and b.counts() == a.counts()
    s = RiskState(5 * h, 1.0, 1.0, 96.0, 0.01, 1.0)
    assert a.check_target(s, 5.0) == b.check_target(s, 5.0)


def test_groups_no_window_reproduces_are_computed_on_the_whole_history(eurusd):
    """A window too short for RSI's smoothing, with the whole-history fallback from 64 bars:
    RSI moves to the whole history, everything else stays on the trailing window."""
    spec = FeatureSpec.from_dict({"features": [{"name": "rsi", "params": {"period": 14}},
                                               {"name": "returns", "params": {"periods": [1]}}],
                                  "strategies": []})
    inc = IncrementalDataset(eurusd.iloc[:1500], spec, tail=64)
    assert inc.mismatches(8) == ["rsi_14"]  # the premise of the test
    assert inc.calibrate(rows=8, full_after=64) == 64
    assert inc.full_groups == ["rsi"]
    inc.append_frame(eurusd.iloc[1500:1560])
    assert extension_mismatches(inc.dataset, build_dataset(eurusd.iloc[:1560], spec)) == []
    with pytest.raises(ConfigError, match="not features of the spec"):
        inc.use_full_history(["macd"])
