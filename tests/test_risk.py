"""Tests of the risk manager (rltrade.sim.risk): every gate on hand-built states."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rltrade.errors import ConfigError, DataError
from rltrade.sim.risk import (
    REASONS,
    Decision,
    Intervention,
    RiskConfig,
    RiskManager,
    RiskState,
)

HOLD, OPEN, EXIT, REDUCE = range(4)


def targets(position: float) -> list[float]:
    """The targets of four discrete actions from ``position``: hold, open one more unit on the
    current side (long from flat), exit, halve."""
    side = 1.0 if position >= 0 else -1.0
    return [position, position + side, 0.0, position / 2]


def ns(iso: str) -> int:
    """UTC ISO time to int64 nanoseconds."""
    return int(np.datetime64(iso, "ns").astype(np.int64))


def state(
    when: str | int = "2024-01-03T12:00",  # a Wednesday
    *,
    price: float = 100.0,
    position: float = 0.0,
    equity: float = 1_000.0,
    atr: float = math.nan,
    spread_bps: float = math.nan,
) -> RiskState:
    ts = ns(when) if isinstance(when, str) else when
    return RiskState(ts, price, position, equity, atr, spread_bps)


# --------------------------------------------------------------------------- config


def test_no_gates_pass_everything_through() -> None:
    m = RiskManager()
    s = state(position=1.0, atr=50.0, spread_bps=1e6)
    assert m.check_target(s, 7.5) == Decision(7.5, ())
    assert m.mask(s, targets(1.0)).allowed.all()
    assert m.interventions == [] and m.counts() == {}


def test_manager_accepts_mapping_and_config() -> None:
    cfg = {"spread": {"max_spread_bps": 10}}
    assert RiskManager(cfg).config == RiskManager(RiskConfig(**cfg)).config
    assert RiskManager(cfg).config.spread is not None


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"bogus": 1}, "risk.bogus"),
        ({"drawdown": {"max_drawdown": 0.2, "max_dd": 0.1}}, "risk.drawdown.max_dd"),
        ({"no_trade": {"time": [["22:00", "02:00"]]}}, "risk.no_trade.time"),
    ],
)
def test_unknown_keys_raise_naming_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        RiskConfig.from_dict(data)
    assert "unknown key" in str(info.value)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"drawdown": {"max_drawdown": -0.1}}, "drawdown.max_drawdown"),
        ({"drawdown": {"max_drawdown": 1.0}}, "drawdown.max_drawdown"),
        ({"drawdown": {"max_drawdown": 0.2, "cut_factor": 1.5}}, "drawdown.cut_factor"),
        ({"drawdown": {"max_drawdown": 0.2, "action": "sell"}}, "drawdown.action"),
        ({"volatility": {"max_atr_pct": -0.01}}, "volatility.max_atr_pct"),
        ({"volatility": {"max_atr_pct": 0.01, "factor": -0.5}}, "volatility.factor"),
        ({"volatility": {"max_atr_pct": 0.01, "mode": "linear"}}, "volatility"),
        (
            {"volatility": {"max_atr_pct": 0.02, "mode": "linear", "zero_atr_pct": 0.01}},
            "volatility.zero_atr_pct",
        ),
        ({"spread": {"max_spread_bps": -5}}, "spread.max_spread_bps"),
        ({"spread": {"max_spread_bps": "wide"}}, "spread.max_spread_bps"),
        ({"spread": {}}, "spread.max_spread_bps"),
        ({"daily_loss": {"max_daily_loss": 0}}, "daily_loss.max_daily_loss"),
        (
            {"daily_loss": {"max_daily_loss": 0.05, "session_start_hour": 24}},
            "daily_loss.session_start_hour",
        ),
        ({"no_trade": {"pad_minutes": -1}}, "no_trade.pad_minutes"),
    ],
)
def test_bad_values_raise_naming_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=r"risk\." + key.replace(".", r"\.")):
        RiskConfig.from_dict(data)


@pytest.mark.parametrize(
    ("no_trade", "key"),
    [
        ({"times": [["22:00", "22:00"]]}, "times"),  # empty window
        ({"times": [["25:00", "02:00"]]}, "times"),  # hour out of range
        ({"times": [["22:60", "23:00"]]}, "times"),
        ({"times": [["22", "23:00"]]}, "times"),
        ({"times": [["22:00"]]}, "times"),  # not a pair
        ({"times": "22:00-02:00"}, "times"),
        ({"weekdays": [7]}, "weekdays"),
        ({"weekdays": ["funday"]}, "weekdays"),
        ({"weekdays": [True]}, "weekdays"),
        ({"timestamps": ["not a time"]}, "timestamps"),
        ({"timestamps": [1.5]}, "timestamps"),
    ],
)
def test_bad_windows_raise(no_trade: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"risk\.no_trade\.{key}"):
        RiskConfig.from_dict({"no_trade": no_trade})


def test_direct_construction_and_model_validate_raise_config_error() -> None:
    with pytest.raises(ConfigError, match=r"risk\.spread\.max_spread_bps"):
        RiskConfig(spread={"max_spread_bps": 0})
    with pytest.raises(ConfigError, match=r"risk\.nope"):
        RiskConfig.model_validate({"nope": {}})
    with pytest.raises(ConfigError, match="mapping"):
        RiskConfig.from_dict([1, 2])  # type: ignore[arg-type]
    assert RiskConfig.from_dict(None) == RiskConfig()


def test_config_round_trips_through_json_dump() -> None:
    cfg = RiskConfig.from_dict(
        {
            "drawdown": {"max_drawdown": 0.2, "action": "cut", "cut_factor": 0.25},
            "volatility": {"max_atr_pct": 0.01, "mode": "linear", "zero_atr_pct": 0.03},
            "spread": {"max_spread_bps": 8},
            "no_trade": {
                "times": [["22:00", "2:00"], ["09:30:15", "10:00"]],
                "weekdays": ["sat", 6, "Saturday"],
                "timestamps": ["2024-01-05 13:30", ns("2024-01-02T00:00")],
                "pad_minutes": 15,
            },
            "daily_loss": {"max_daily_loss": 0.05, "session_start_hour": 8},
        }
    )
    nt = cfg.no_trade
    assert nt is not None
    assert nt.times == (("22:00", "02:00"), ("09:30:15", "10:00"))
    assert nt.weekdays == (5, 6)
    assert nt.timestamps == (ns("2024-01-02T00:00"), ns("2024-01-05T13:30"))
    assert RiskConfig.from_dict(cfg.model_dump(mode="json")) == cfg


def test_iso_timestamps_with_offsets_are_converted_to_utc() -> None:
    cfg = RiskConfig.from_dict({"no_trade": {"timestamps": ["2024-01-05T14:30+01:00"]}})
    assert cfg.no_trade is not None
    assert cfg.no_trade.timestamps == (ns("2024-01-05T13:30"),)


# --------------------------------------------------------------------------- drawdown


def test_drawdown_flatten() -> None:
    m = RiskManager({"drawdown": {"max_drawdown": 0.2}})
    m.update(ns("2024-01-03T10:00"), 1_000.0)
    m.update(ns("2024-01-03T10:15"), 1_250.0)  # new peak
    assert m.peak_equity == 1_250.0
    assert m.check_target(state(equity=1_001.0, position=3.0), 3.0) == Decision(3.0, ())
    # exactly at the limit triggers (limits are inclusive)
    d = m.check_target(state("2024-01-03T12:15", equity=1_000.0, position=3.0), 3.0)
    assert d == Decision(0.0, ("max_drawdown",))
    d = m.check_target(state("2024-01-03T12:30", equity=900.0, position=-2.0), -5.0)
    assert d == Decision(0.0, ("max_drawdown",))
    # flat and asking for flat: nothing to change, nothing recorded
    assert m.check_target(state("2024-01-03T12:45", equity=900.0), 0.0) == Decision(0.0, ())
    assert m.counts() == {"max_drawdown": 2}


def test_drawdown_cut_and_recovery() -> None:
    m = RiskManager({"drawdown": {"max_drawdown": 0.1, "action": "cut", "cut_factor": 0.5}})
    m.update(ns("2024-01-03T10:00"), 1_000.0)
    assert m.check_target(state(equity=850.0), 4.0) == Decision(2.0, ("max_drawdown",))
    assert m.check_target(state(equity=850.0), -3.0) == Decision(-1.5, ("max_drawdown",))
    # not latched: once the drawdown is back under the limit the target passes
    assert m.check_target(state("2024-01-03T13:00", equity=950.0), 4.0) == Decision(4.0, ())


def test_reset_peak_rearms_trading_after_a_flatten() -> None:
    m = RiskManager({"drawdown": {"max_drawdown": 0.2}})
    m.update(ns("2024-01-03T10:00"), 1_000.0)
    assert m.check_target(state(equity=700.0), 1.0).target == 0.0
    m.reset_peak()  # restart from the last equity seen (700)
    assert m.peak_equity == 700.0
    assert m.check_target(state(equity=700.0), 1.0) == Decision(1.0, ())
    m.reset_peak(2_000.0)
    assert m.check_target(state(equity=700.0), 1.0).target == 0.0


# --------------------------------------------------------------------------- volatility


def test_volatility_inverse_scaling() -> None:
    m = RiskManager({"volatility": {"max_atr_pct": 0.01}})  # mode "inverse" by default
    assert m.check_target(state(atr=1.0), 6.0) == Decision(6.0, ())  # at the threshold
    d = m.check_target(state(atr=3.0), 6.0)  # ATR% 3% -> scale 1/3
    assert d.target == pytest.approx(2.0) and d.reasons == ("volatility",)
    assert m.check_target(state(atr=4.0), -8.0).target == pytest.approx(-2.0)
    assert m.check_target(state(atr=math.nan), 6.0) == Decision(6.0, ())  # warm-up: off


def test_volatility_linear_and_factor() -> None:
    m = RiskManager({"volatility": {"max_atr_pct": 0.01, "mode": "linear", "zero_atr_pct": 0.03}})
    assert m.check_target(state(atr=2.0), 4.0).target == pytest.approx(2.0)  # halfway
    assert m.check_target(state(atr=2.5), 4.0).target == pytest.approx(1.0)
    assert m.check_target(state(atr=3.0, position=4.0), 4.0) == Decision(0.0, ("volatility",))
    assert m.check_target(state(atr=9.0), -4.0) == Decision(0.0, ("volatility",))
    f = RiskManager({"volatility": {"max_atr_pct": 0.01, "mode": "factor", "factor": 0.25}})
    assert f.check_target(state(atr=1.5), 4.0) == Decision(1.0, ("volatility",))
    assert f.check_target(state(atr=50.0), 4.0) == Decision(1.0, ("volatility",))
    assert f.check_target(state(atr=0.5), 4.0) == Decision(4.0, ())


# --------------------------------------------------------------------------- spread


@pytest.mark.parametrize(
    ("position", "target", "expected"),
    [
        (2.0, 5.0, 2.0),  # increase blocked: keep the current position
        (2.0, 1.0, 1.0),  # reduction allowed
        (2.0, 2.0, 2.0),  # hold allowed
        (2.0, 0.0, 0.0),  # exit allowed
        (2.0, -3.0, 0.0),  # reversal: only the exit part
        (-2.0, -5.0, -2.0),
        (-2.0, -0.5, -0.5),
        (-2.0, 4.0, 0.0),
        (0.0, 1.0, 0.0),  # no new entry
        (0.0, -1.0, 0.0),
    ],
)
def test_spread_blocks_entries_but_allows_exits(
    position: float, target: float, expected: float
) -> None:
    m = RiskManager({"spread": {"max_spread_bps": 10}})
    d = m.check_target(state(position=position, spread_bps=25.0), target)
    assert d.target == expected
    assert d.reasons == (("spread",) if expected != target else ())


def test_spread_at_threshold_or_unknown_passes() -> None:
    m = RiskManager({"spread": {"max_spread_bps": 10}})
    assert m.check_target(state(spread_bps=10.0), 1.0) == Decision(1.0, ())
    assert m.check_target(state(spread_bps=math.nan), 1.0) == Decision(1.0, ())


# --------------------------------------------------------------------------- no-trade windows


def test_time_window_wrapping_midnight() -> None:
    m = RiskManager({"no_trade": {"times": [["22:00", "02:00"]]}})
    blocked = ["2024-01-03T22:00", "2024-01-03T23:30", "2024-01-04T00:00", "2024-01-04T01:59:59"]
    allowed = ["2024-01-03T21:59:59", "2024-01-04T02:00", "2024-01-03T12:00"]
    assert all(m.in_no_trade_window(ns(t)) for t in blocked)
    assert not any(m.in_no_trade_window(ns(t)) for t in allowed)
    m2 = RiskManager()
    for t in blocked:
        assert m.check_target(state(t), 1.0) == Decision(0.0, ("no_trade_window",))
        assert m.check_target(state(t, position=2.0), 0.5) == Decision(0.5, ())  # reduction
        assert m2.check_target(state(t), 1.0) == Decision(1.0, ())


def test_time_window_within_a_day() -> None:
    m = RiskManager({"no_trade": {"times": [["09:00", "10:00"], ["15:30", "16:00"]]}})
    assert m.in_no_trade_window(ns("2024-01-03T09:00"))
    assert m.in_no_trade_window(ns("2024-01-03T15:45"))
    assert not m.in_no_trade_window(ns("2024-01-03T10:00"))
    assert not m.in_no_trade_window(ns("2024-01-03T23:00"))


def test_weekday_windows() -> None:
    m = RiskManager({"no_trade": {"weekdays": ["sat", "sunday"]}})
    assert m.in_no_trade_window(ns("2024-01-06T00:00"))  # Saturday
    assert m.in_no_trade_window(ns("2024-01-07T23:59:59"))  # Sunday
    assert not m.in_no_trade_window(ns("2024-01-05T23:59:59"))  # Friday
    assert not m.in_no_trade_window(ns("2024-01-08T00:00"))  # Monday
    assert not m.in_no_trade_window(ns("1970-01-01T00:00"))  # Thursday
    assert RiskManager({"no_trade": {"weekdays": [3]}}).in_no_trade_window(0)
    d = m.check_target(state("2024-01-06T12:00", position=-1.0), -2.0)
    assert d == Decision(-1.0, ("no_trade_window",))


def test_listed_timestamps_exact_and_padded() -> None:
    news = "2024-01-05T13:30"
    exact = RiskManager({"no_trade": {"timestamps": [news]}})
    assert exact.in_no_trade_window(ns(news))
    assert not exact.in_no_trade_window(ns(news) + 1)
    assert not exact.in_no_trade_window(ns(news) - 1)
    padded = RiskManager(
        {"no_trade": {"timestamps": [news, ns("2024-02-01T00:00")], "pad_minutes": 30}}
    )
    assert padded.in_no_trade_window(ns("2024-01-05T13:00"))
    assert padded.in_no_trade_window(ns("2024-01-05T14:00"))
    assert not padded.in_no_trade_window(ns("2024-01-05T14:00") + 1)
    assert not padded.in_no_trade_window(ns("2024-01-05T12:59:59"))
    assert padded.in_no_trade_window(ns("2024-01-31T23:45"))
    assert not padded.in_no_trade_window(ns("2024-01-20T00:00"))
    assert exact.check_target(state(news), 3.0) == Decision(0.0, ("no_trade_window",))
    assert exact.check_target(state(news, position=3.0), 0.0) == Decision(0.0, ())


# --------------------------------------------------------------------------- daily loss


def test_daily_kill_switch_latches_and_resets_next_utc_day() -> None:
    m = RiskManager({"daily_loss": {"max_daily_loss": 0.05}})
    m.update(ns("2024-01-03T00:00"), 1_000.0)
    assert m.day_start_equity == 1_000.0
    assert m.check_target(state("2024-01-03T10:00", equity=960.0), 2.0) == Decision(2.0, ())
    assert not m.kill_switch_active
    d = m.check_target(state("2024-01-03T11:00", equity=950.0, position=2.0), 2.0)
    assert d == Decision(0.0, ("daily_loss",))
    assert m.kill_switch_active
    # latched for the rest of the session, even after equity recovers
    d = m.check_target(state("2024-01-03T23:59", equity=1_100.0), 1.0)
    assert d == Decision(0.0, ("daily_loss",))
    # next UTC day: cleared, new starting equity
    assert m.check_target(state("2024-01-04T00:00", equity=1_080.0), 1.0) == Decision(1.0, ())
    assert not m.kill_switch_active
    assert m.day_start_equity == 1_080.0


def test_daily_kill_switch_with_session_start_hour() -> None:
    m = RiskManager({"daily_loss": {"max_daily_loss": 0.1, "session_start_hour": 8}})
    m.update(ns("2024-01-02T08:00"), 1_000.0)
    m.update(ns("2024-01-03T03:00"), 890.0)  # same session (began 2024-01-02 08:00)
    assert m.kill_switch_active  # update alone arms it
    assert m.check_target(state("2024-01-03T07:59", equity=890.0), 1.0).target == 0.0
    assert m.check_target(state("2024-01-03T08:00", equity=890.0), 1.0) == Decision(1.0, ())
    assert m.day_start_equity == 890.0
    assert m.session_of(ns("2024-01-03T07:59")) + 1 == m.session_of(ns("2024-01-03T08:00"))


def test_timestamps_must_not_go_backwards() -> None:
    m = RiskManager()
    m.update(ns("2024-01-03T10:00"), 1_000.0)
    m.update(ns("2024-01-03T10:00"), 1_000.0)  # same bar again is fine
    with pytest.raises(DataError, match="earlier"):
        m.check_target(state("2024-01-03T09:00"), 1.0)
    m.reset()
    m.check_target(state("2024-01-03T09:00"), 1.0)


def test_nan_target_is_rejected() -> None:
    with pytest.raises(DataError, match="NaN"):
        RiskManager().check_target(state(), math.nan)


# --------------------------------------------------------------------------- discrete actions


def test_mask_blocks_only_increases_for_spread_and_windows() -> None:
    m = RiskManager({"spread": {"max_spread_bps": 10}, "no_trade": {"weekdays": ["sat"]}})
    assert m.mask(state(spread_bps=5.0), targets(1.0)).allowed.tolist() == [True] * 4
    wide = m.mask(state(spread_bps=50.0, position=1.0), targets(1.0))
    assert wide.allowed.tolist() == [True, False, True, True]
    assert wide.reasons == {OPEN: ("spread",)}
    saturday = m.mask(state("2024-01-06T12:00", position=-2.0), targets(-2.0))
    assert saturday.allowed.tolist() == [True, False, True, True]
    assert saturday.reasons == {OPEN: ("no_trade_window",)}
    # a reversal is an exit plus an entry: blocked too; from flat every entry is blocked
    flat = m.mask(state("2024-01-06T12:00"), [0.0, 1.0, -1.0])
    assert flat.allowed.tolist() == [True, False, False]


def test_mask_forces_exit_under_kill_switch() -> None:
    m = RiskManager({"daily_loss": {"max_daily_loss": 0.05}})
    m.update(ns("2024-01-03T00:00"), 1_000.0)
    open_pos = state(equity=900.0, position=2.0)
    gate = m.mask(open_pos, targets(2.0))
    assert gate.allowed.tolist() == [False, False, True, False]  # only the exit is left
    assert gate.reasons == {HOLD: ("daily_loss",), OPEN: ("daily_loss",),
                            REDUCE: ("daily_loss",)}
    # already flat: hold, exit and halve are all no-ops (target 0) and stay allowed
    assert m.mask(state(equity=900.0), targets(0.0)).allowed.tolist() == [True, False, True, True]
    # only the gated actions are checked: hold (0) stays allowed when it is not gated
    assert m.mask(open_pos, targets(2.0), gated=[1]).allowed.tolist() == [True, False, True, True]


def test_mask_under_drawdown_flatten_and_scaling() -> None:
    m = RiskManager({"drawdown": {"max_drawdown": 0.2}, "volatility": {"max_atr_pct": 0.01}})
    m.update(ns("2024-01-03T10:00"), 1_000.0)
    # volatility scales every non-zero target: all but the exit would be shrunk
    scaled = m.mask(state(position=1.0, atr=5.0), targets(1.0))
    assert scaled.allowed.tolist() == [False, False, True, False]
    assert set(scaled.reasons.values()) == {("volatility",)}
    assert m.mask(state(equity=700.0, position=1.0), targets(1.0)).allowed.tolist() == [
        False,
        False,
        True,
        False,
    ]


def test_mask_skips_nan_targets_and_rejects_bad_input() -> None:
    m = RiskManager({"spread": {"max_spread_bps": 10}})
    s = state(spread_bps=50.0)
    assert m.mask(s, [math.nan, 1.0]).allowed.tolist() == [True, False]
    with pytest.raises(ConfigError, match="gated action"):
        m.mask(s, [0.0, 1.0], gated=[2])
    with pytest.raises(ConfigError, match="one-dimensional"):
        m.mask(s, np.zeros((2, 2)))


def test_mask_and_unrecorded_checks_leave_no_record() -> None:
    m = RiskManager({"spread": {"max_spread_bps": 10}, "drawdown": {"max_drawdown": 0.1}})
    m.update(ns("2024-01-03T10:00"), 1_000.0)
    s = state(equity=850.0, position=1.0, spread_bps=50.0)
    assert not m.mask(s, targets(1.0)).allowed[OPEN]
    d = m.check_target(s, 3.0, record=False)
    assert d == Decision(0.0, ("max_drawdown",))
    assert m.interventions == [] and m.counts() == {}
    assert m.check_target(s, 3.0) == d  # the recorded check decides the same
    assert m.counts() == {"max_drawdown": 1} and len(m.interventions) == 1


# --------------------------------------------------------------------------- records


def test_interventions_record_reasons_and_counts() -> None:
    m = RiskManager(
        {
            "drawdown": {"max_drawdown": 0.1, "action": "cut", "cut_factor": 0.5},
            "volatility": {"max_atr_pct": 0.01, "mode": "factor", "factor": 0.5},
            "spread": {"max_spread_bps": 10},
        }
    )
    m.update(ns("2024-01-03T10:00"), 1_000.0)
    s = state(equity=800.0, position=1.5, atr=2.0, spread_bps=30.0)
    d = m.check_target(s, 8.0)  # 8 -> 4 (drawdown) -> 2 (volatility) -> 1.5 (spread)
    assert d == Decision(1.5, ("max_drawdown", "volatility", "spread"))
    assert m.interventions == [
        Intervention(s.timestamp, "max_drawdown", 8.0, 4.0),
        Intervention(s.timestamp, "volatility", 4.0, 2.0),
        Intervention(s.timestamp, "spread", 2.0, 1.5),
    ]
    # 4 -> 2 (drawdown) -> 1 (volatility); 1 is within the position: the spread gate passes
    assert m.check_target(s, 4.0) == Decision(1.0, ("max_drawdown", "volatility"))
    assert m.interventions[-1] == Intervention(s.timestamp, "volatility", 2.0, 1.0)
    assert m.counts() == {"max_drawdown": 2, "volatility": 2, "spread": 1}
    assert set(m.counts()) <= set(REASONS)
    m.reset()
    assert m.interventions == [] and m.counts() == {}
    assert m.peak_equity == -math.inf and math.isnan(m.day_start_equity)


def test_keep_records_off_still_counts() -> None:
    m = RiskManager({"spread": {"max_spread_bps": 10}}, keep_records=False)
    for minute in range(3):
        m.check_target(state(f"2024-01-03T12:0{minute}", spread_bps=20.0), 1.0)
    assert m.interventions == [] and m.counts() == {"spread": 3}


def test_deterministic() -> None:
    cfg = {
        "drawdown": {"max_drawdown": 0.05, "action": "cut"},
        "volatility": {"max_atr_pct": 0.01},
        "spread": {"max_spread_bps": 5},
        "no_trade": {"times": [["23:00", "01:00"]]},
        "daily_loss": {"max_daily_loss": 0.03},
    }
    rng = np.random.default_rng(7)
    t0 = ns("2024-01-03T00:00")
    bars = [
        state(
            t0 + i * 900 * 10**9,
            equity=1_000 + 40 * math.sin(i / 7),
            position=float(rng.integers(-3, 4)),
            atr=float(rng.uniform(0.1, 3)),
            spread_bps=float(rng.uniform(0, 10)),
        )
        for i in range(300)
    ]
    targets = rng.normal(scale=3, size=len(bars))
    runs = []
    for _ in range(2):
        m = RiskManager(cfg)
        out = [m.check_target(s, float(t)) for s, t in zip(bars, targets, strict=True)]
        runs.append((out, m.interventions, m.counts()))
    assert runs[0] == runs[1]
    assert sum(runs[0][2].values()) > 0


# --------------------------------------------------------------------------- properties

_finite = st.floats(-1e6, 1e6, allow_nan=False)
_configs = st.fixed_dictionaries(
    {},
    optional={
        "drawdown": st.fixed_dictionaries(
            {
                "max_drawdown": st.floats(0.01, 0.9),
                "action": st.sampled_from(["flatten", "cut"]),
                "cut_factor": st.floats(0.01, 0.99),
            }
        ),
        "volatility": st.one_of(
            st.fixed_dictionaries(
                {"max_atr_pct": st.floats(0.001, 0.1), "mode": st.just("inverse")}
            ),
            st.fixed_dictionaries(
                {
                    "max_atr_pct": st.just(0.01),
                    "mode": st.just("linear"),
                    "zero_atr_pct": st.floats(0.011, 0.2),
                }
            ),
            st.fixed_dictionaries(
                {
                    "max_atr_pct": st.floats(0.001, 0.1),
                    "mode": st.just("factor"),
                    "factor": st.floats(0.0, 0.99),
                }
            ),
        ),
        "spread": st.fixed_dictionaries({"max_spread_bps": st.floats(0.1, 50)}),
        "no_trade": st.fixed_dictionaries(
            {"times": st.just([["22:00", "02:00"]]), "weekdays": st.just([5, 6])}
        ),
        "daily_loss": st.fixed_dictionaries(
            {"max_daily_loss": st.floats(0.01, 0.5), "session_start_hour": st.integers(0, 23)}
        ),
    },
)
_states = st.builds(
    RiskState,
    timestamp=st.integers(ns("2024-01-01T00:00"), ns("2024-12-31T00:00")),
    price=st.floats(0.01, 1e5),
    position=st.one_of(st.just(0.0), _finite),
    equity=st.floats(0.0, 1e7),
    atr=st.one_of(st.just(math.nan), st.floats(0.0, 1e4)),
    spread_bps=st.one_of(st.just(math.nan), st.floats(0.0, 100)),
)


@settings(max_examples=300, deadline=None)
@given(cfg=_configs, s=_states, target=_finite, prior=st.floats(1.0, 1e7))
def test_adjusted_target_never_grows_or_flips(
    cfg: dict, s: RiskState, target: float, prior: float
) -> None:
    m = RiskManager(cfg)
    m.update(s.timestamp - 3_600 * 10**9, prior)  # sets the peak and the session start
    d = m.check_target(s, target)
    assert abs(d.target) <= abs(target)
    assert d.target * target >= 0
    assert set(d.reasons) <= set(REASONS)
    assert len(d.reasons) == len(set(d.reasons))


@settings(max_examples=200, deadline=None)
@given(
    s=_states,
    fraction=st.floats(0.0, 1.0),
    spread=st.floats(0.1, 50),
)
def test_reductions_are_never_blocked(s: RiskState, fraction: float, spread: float) -> None:
    m = RiskManager(
        {
            "spread": {"max_spread_bps": spread},
            "no_trade": {"times": [["22:00", "02:00"]], "weekdays": ["sat", "sun"]},
        }
    )
    target = s.position * fraction  # between flat and the current position
    assert m.check_target(s, target) == Decision(target, ())
    allowed = m.mask(s, targets(s.position)).allowed
    assert allowed[[HOLD, EXIT, REDUCE]].all()


@settings(max_examples=200, deadline=None)
@given(
    cfg=_configs,
    s=_states,
    others=st.lists(_finite, max_size=6),
    prior=st.floats(1.0, 1e7),
)
def test_mask_agrees_with_check_target_and_keeps_flat(
    cfg: dict, s: RiskState, others: list[float], prior: float
) -> None:
    values = [0.0, *others]
    m = RiskManager(cfg)
    m.update(s.timestamp - 3_600 * 10**9, prior)
    gate = m.mask(s, values)
    assert gate.allowed.shape == (len(values),) and gate.allowed[0]  # flat is never blocked
    for a, target in enumerate(values):
        d = m.check_target(s, target, record=False)
        assert gate.allowed[a] == (d.target == target)
        assert gate.reasons.get(a, ()) == d.reasons
    assert m.interventions == [] and m.counts() == {}
