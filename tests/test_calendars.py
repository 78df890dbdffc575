"""Market calendars (rltrade.data.calendars) and session-aware validation.

The synthetic cases always run; the real files of ../shared/data are skipped when absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rltrade.data import load_bars, load_bars_with_report, validate_bars
from rltrade.data.calendars import (
    CALENDARS,
    MarketCalendar,
    get_calendar,
    infer_calendar,
    session_positions,
)
from rltrade.data.timeframes import as_ns
from rltrade.errors import ConfigError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPY = SHARED / "spy_1m_2024-02_2024-05_ext_hours.csv.gz"
ES = SHARED / "es_futures_5m_2026-02-17_2026-03-31.csv"


def _ns(text: str) -> int:
    return int(pd.Timestamp(text).tz_convert("UTC").as_unit("ns").value)


def _bars(times: pd.DatetimeIndex, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-4, len(times))))
    frame = pd.DataFrame({"open": close, "high": close * 1.0001, "low": close * 0.9999,
                          "close": close, "volume": 1.0}, index=times.tz_convert("UTC"))
    frame.index.name = "timestamp"
    return frame


def _session_minutes(calendar: str, start: str, end: str, tf: str = "1m") -> pd.DatetimeIndex:
    cal = MarketCalendar(calendar)
    bars = cal.expected_bars(_ns(start), _ns(end), tf)
    return pd.DatetimeIndex(bars.astype("datetime64[ns]"), tz="UTC")


# --------------------------------------------------------------------------- the calendars


def test_names_and_unknown_calendar():
    assert set(CALENDARS) == {"24/7", "24/5", "XNYS-RTH", "XNYS-EXT", "CMES"}
    assert MarketCalendar("xnys-rth").name == "XNYS-RTH"
    assert get_calendar(None) is None
    with pytest.raises(ConfigError, match="unknown calendar 'NYSE'"):
        MarketCalendar("NYSE")


def test_xnys_regular_hours_holidays_and_early_closes_come_from_exchange_calendars():
    cal = MarketCalendar("XNYS-RTH")
    s = cal.sessions(_ns("2024-07-01T00:00Z"), _ns("2024-07-06T00:00Z"))
    opens = pd.DatetimeIndex(s.open.astype("datetime64[ns]"), tz="UTC").tz_convert(cal.tz)
    closes = pd.DatetimeIndex(s.close.astype("datetime64[ns]"), tz="UTC").tz_convert(cal.tz)
    assert [d.day for d in opens] == [1, 2, 3, 5]  # Independence Day is no session
    assert all(o.strftime("%H:%M") == "09:30" for o in opens)
    assert [c.strftime("%H:%M") for c in closes] == ["16:00", "16:00", "13:00", "16:00"]
    # 2024: 252 sessions, three of them closing at 13:00 (Jul 3, Nov 29, Dec 24)
    assert cal.bars_per_year("1d", 2024) == 252
    assert cal.bars_per_year("1m", 2024) == 252 * 390 - 3 * 180


def test_extended_hours_are_4am_to_8pm_new_york_on_nyse_sessions():
    bars = _session_minutes("XNYS-EXT", "2024-03-11T00:00Z", "2024-03-12T00:00Z")
    local = bars.tz_convert("America/New_York")
    assert len(bars) == 16 * 60
    assert local[0].strftime("%H:%M") == "04:00" and local[-1].strftime("%H:%M") == "19:59"
    assert not len(_session_minutes("XNYS-EXT", "2024-03-09T06:00Z", "2024-03-10T06:00Z"))


def test_cme_globex_has_its_daily_break_and_sunday_open():
    cal = MarketCalendar("CMES")
    bars = _session_minutes("CMES", "2026-03-01T00:00Z", "2026-03-07T00:00Z", "5m")
    local = bars.tz_convert(cal.tz)
    minutes = local.hour * 60 + local.minute
    assert not ((minutes >= 16 * 60) & (minutes < 17 * 60)).any()  # 16:00-17:00 CT break
    assert local[0].strftime("%a %H:%M") == "Sun 17:00"
    assert local[-1].strftime("%a %H:%M") == "Fri 15:55"
    # a regular Globex day: 23 hours of 5-minute bars
    per_day = pd.Series(1, index=local).groupby(local.date).size()
    assert per_day.loc[pd.Timestamp("2026-03-03").date()] == 24 * 12 - 12


def test_fx_week_runs_sunday_to_friday_5pm_new_york():
    bars = _session_minutes("24/5", "2024-01-05T00:00Z", "2024-01-09T00:00Z", "1h")
    local = bars.tz_convert("America/New_York")
    assert local[local.day_of_week == 4][-1].strftime("%H:%M") == "16:00"  # Friday's last bar
    assert local[local.day_of_week == 6][0].strftime("%H:%M") == "17:00"  # Sunday's first
    assert not (local.day_of_week == 5).any()


def test_crypto_is_every_minute_and_the_grid_follows_the_bars_phase():
    bars = MarketCalendar("24/7").expected_bars(_ns("2024-01-06T00:00Z"),
                                                _ns("2024-01-08T00:00Z"), "1m")
    assert len(bars) == 2 * 1440 and np.all(np.diff(bars) == 60 * 10**9)
    half_past = MarketCalendar("XNYS-RTH").expected_bars(
        _ns("2024-03-11T00:00Z"), _ns("2024-03-12T00:00Z"), "1h", phase_ns=30 * 60 * 10**9)
    local = pd.DatetimeIndex(half_past.astype("datetime64[ns]"), tz="UTC").tz_convert(
        "America/New_York")
    assert [t.strftime("%H:%M") for t in local] == [f"{h:02d}:30" for h in range(9, 16)]


def test_daily_bars_are_session_dates():
    days = MarketCalendar("XNYS-RTH").expected_bars(_ns("2024-12-23T00:00Z"),
                                                    _ns("2024-12-28T00:00Z"), "1d")
    labels = pd.DatetimeIndex(days.astype("datetime64[ns]"), tz="UTC")
    assert [d.day for d in labels] == [23, 24, 26, 27]  # Christmas Day closed
    assert MarketCalendar("XNYS-RTH").expected_bars(0, 10**18, "1w") is None


def test_session_positions_mark_bars_outside_sessions():
    times = pd.DatetimeIndex(["2024-03-11T13:29Z", "2024-03-11T13:30Z", "2024-03-11T19:59Z",
                              "2024-03-11T20:00Z", "2024-03-12T13:30Z"])
    pos, sessions = session_positions(as_ns(times), MarketCalendar("XNYS-RTH"), "1m")
    assert list(pos >= 0) == [False, True, True, False, True]
    assert pos[1] == pos[2] and pos[4] == pos[1] + 1
    assert len(sessions.open) >= 2


@pytest.mark.parametrize(
    "calendar,start,end,tf",
    [("XNYS-RTH", "2024-03-04T00:00Z", "2024-03-16T00:00Z", "1m"),
     ("XNYS-EXT", "2024-03-04T00:00Z", "2024-03-16T00:00Z", "1m"),
     ("CMES", "2026-03-01T00:00Z", "2026-03-14T00:00Z", "5m"),
     ("24/5", "2024-01-07T00:00Z", "2024-01-20T00:00Z", "1h"),
     ("24/7", "2024-01-01T00:00Z", "2024-01-10T00:00Z", "1h")],
)
def test_infer_calendar_finds_the_tightest_calendar_holding_the_bars(calendar, start, end, tf):
    bars = _session_minutes(calendar, start, end, tf)
    fit = infer_calendar(as_ns(bars), tf)
    assert fit.calendar is not None and fit.calendar.name == calendar, fit.reason


def test_infer_calendar_gives_none_when_no_calendar_holds_the_bars():
    # weekday bars on a UTC day (Monday 00:00 to Friday 23:00 UTC): not the FX week
    hours = pd.date_range("2024-01-01", "2024-01-31", freq="1h", tz="UTC")
    hours = hours[hours.day_of_week < 5]
    assert infer_calendar(as_ns(hours), "1h").calendar is None


# --------------------------------------------------------------------------- validation


def test_regular_hours_gaps_are_counted_only_inside_sessions():
    times = _session_minutes("XNYS-RTH", "2024-03-04T00:00Z", "2024-03-16T00:00Z")
    bars = _bars(times).drop(times[[100, 101, 102, 500, 3000]])
    report = validate_bars(bars, "1m")
    assert report.calendar == "XNYS-RTH"  # inferred
    gaps = next(f for f in report.warnings if f.code == "gaps")
    assert gaps.count == 3 and "about 5 missing" in gaps.message
    # without a calendar every night is a gap: that was the bug
    legacy = next(f for f in validate_bars(bars, "1m", calendar=None).warnings
                  if f.code == "gaps")
    assert legacy.count > 10


def test_a_missing_last_bar_of_the_day_is_a_gap_a_night_is_not():
    times = _session_minutes("XNYS-RTH", "2024-03-04T00:00Z", "2024-03-09T00:00Z")
    local = times.tz_convert("America/New_York")
    last = times[(local.hour == 15) & (local.minute == 59)][1]  # Tuesday's 15:59 bar
    report = validate_bars(_bars(times).drop(last), "1m", calendar="XNYS-RTH")
    gaps = next(f for f in report.warnings if f.code == "gaps")
    assert gaps.count == 1 and "about 1 missing" in gaps.message


def test_futures_daily_break_is_not_a_gap():
    times = _session_minutes("CMES", "2026-03-01T00:00Z", "2026-03-14T00:00Z", "5m")
    report = validate_bars(_bars(times), "5m")
    assert report.calendar == "CMES"
    assert not {"gaps", "outside_sessions"} & {f.code for f in report.warnings}
    holed = validate_bars(_bars(times).drop(times[[40, 41]]), "5m", calendar="CMES")
    assert "about 2 missing" in next(f.message for f in holed.warnings if f.code == "gaps")


def test_bars_outside_the_given_calendar_are_reported():
    times = _session_minutes("XNYS-EXT", "2024-03-04T00:00Z", "2024-03-09T06:00Z")
    report = validate_bars(_bars(times), "1m", calendar="XNYS-RTH")
    outside = next(f for f in report.warnings if f.code == "outside_sessions")
    assert outside.count == 5 * (16 * 60 - 390)
    assert "gaps" not in {f.code for f in report.warnings}


def test_load_bars_records_the_calendar(tmp_path):
    times = _session_minutes("XNYS-RTH", "2024-03-04T00:00Z", "2024-03-09T00:00Z")
    path = tmp_path / "spy.csv"
    _bars(times).to_csv(path)
    assert load_bars(path).attrs["calendar"] == "XNYS-RTH"
    assert load_bars(path, calendar="XNYS-EXT").attrs["calendar"] == "XNYS-EXT"
    assert load_bars(path, calendar=None).attrs["calendar"] is None
    with pytest.raises(ConfigError, match="unknown calendar"):
        load_bars(path, calendar="LSE")


# --------------------------------------------------------------------------- the real files


@pytest.mark.shared_data
@pytest.mark.skipif(not SPY.is_file(), reason="../shared/data is not present")
def test_spy_minute_file_gaps_agree_with_its_real_missing_bars():
    # extended hours: 63 sessions of 960 minutes hold 60,480 bars, the file 49,720: the
    # thin pre/post-market minutes without trades (PROVENANCE: 10,753 inside first..last bar)
    bars, report = load_bars_with_report(SPY, policy="report")
    assert report.calendar == "XNYS-EXT"
    gaps = next(f for f in report.warnings if f.code == "gaps")
    missing = int(gaps.message.split("about ")[1].split()[0])
    assert 10_700 <= missing <= 10_800  # was 34,658 counted against a 24/7 grid
    # the regular-hours cut: every one of its 24,570 minutes is there
    local = bars.index.tz_convert("America/New_York")
    minute = local.hour * 60 + local.minute
    rth = bars[(minute >= 570) & (minute < 960)]
    cut = validate_bars(rth, policy="report")
    assert cut.calendar == "XNYS-RTH" and len(rth) == 24_570
    assert "gaps" not in {f.code for f in cut.warnings}  # was 52,500 "missing" bars
    # ordinary minute moves are not jumps (a global MAD flagged 37)
    jumps = [f.count for f in cut.warnings if f.code == "price_jumps"]
    assert sum(jumps) <= 5


@pytest.mark.shared_data
@pytest.mark.skipif(not ES.is_file(), reason="../shared/data is not present")
def test_es_five_minute_file_gaps_agree_with_provenance():
    _, report = load_bars_with_report(ES, policy="report")
    assert report.calendar == "CMES"
    gaps = next(f for f in report.warnings if f.code == "gaps")
    assert "about 34 missing" in gaps.message  # PROVENANCE.md: 34 (was 324 with the break)
    assert "outside_sessions" not in {f.code for f in report.warnings}


# --------------------------------------------------------------------------- annualisation


@pytest.fixture(scope="module")
def rth_dataset():
    """Six weeks of regular-hours 5-minute bars, loaded (calendar inferred) into a Dataset."""
    from rltrade.features import FeatureSpec, build_dataset

    times = _session_minutes("XNYS-RTH", "2024-03-04T00:00Z", "2024-04-13T00:00Z", "5m")
    rng = np.random.default_rng(11)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, len(times))))
    frame = pd.DataFrame({"open": np.r_[close[0], close[:-1]], "close": close,
                          "volume": 1.0}, index=times)
    frame["high"] = frame[["open", "close"]].max(axis=1) * 1.0005
    frame["low"] = frame[["open", "close"]].min(axis=1) * 0.9995
    frame.index.name = "timestamp"
    bars = load_bars(frame[["open", "high", "low", "close", "volume"]])
    spec = FeatureSpec.from_dict({"features": {"returns": {"periods": [1]}}, "strategies": []})
    return build_dataset(bars, spec)


def test_bars_per_year_come_from_the_calendar():
    from rltrade.evaluation.series import resolve_bars_per_year, source_kind

    times = _session_minutes("XNYS-RTH", "2024-03-04T00:00Z", "2024-04-13T00:00Z")
    value, source = resolve_bars_per_year(times, "1m", calendar="XNYS-RTH")
    assert value == 252 * 390 - 3 * 180  # 2024's sessions, early closes included
    assert source_kind(source) == "calendar" and "XNYS-RTH" in source and "2024" in source
    observed, basis = resolve_bars_per_year(times, "1m")  # the fallback: counted in the data
    assert source_kind(basis) == "observed" and observed != value
    assert resolve_bars_per_year(times, "1m", 5000.0, calendar="XNYS-RTH") == (5000.0,
                                                                               "override")
    crypto, basis = resolve_bars_per_year(times, "1h", calendar="24/7")
    assert crypto == pytest.approx(8766.0) and "24/7" in basis  # 365.25 days, leap or not


def test_a_backtest_annualises_with_its_datasets_calendar(rth_dataset):
    from dataclasses import replace

    from rltrade.agents import make_baseline
    from rltrade.evaluation import run_backtest

    assert rth_dataset.calendar == "XNYS-RTH"
    assert rth_dataset.describe()["calendar"] == "XNYS-RTH"  # recorded with the dataset
    cfg = {"window": 8, "equity_floor": 0.0}
    run = run_backtest(make_baseline("random", seed=0, hold=5), rth_dataset, cfg).metrics["run"]
    assert run["bars_per_year_source"] == "calendar"
    assert run["bars_per_year"] == MarketCalendar("XNYS-RTH").bars_per_year("5m", 2024)
    plain = replace(rth_dataset, calendar=None)
    run = run_backtest(make_baseline("random", seed=0, hold=5), plain, cfg).metrics["run"]
    assert run["bars_per_year_source"] == "observed"


def test_the_data_config_names_a_calendar():
    from rltrade.config import DataConfig

    assert DataConfig().calendar == "auto"
    assert DataConfig(calendar="xnys-rth").calendar == "XNYS-RTH"
    assert DataConfig(calendar="none").calendar is None
    with pytest.raises(ConfigError, match="calendar"):
        DataConfig(calendar="NYSE")


# --------------------------------------------------------------------------- session rules


def _rth_minutes(days: str = "2024-03-11T00:00Z", until: str = "2024-03-13T00:00Z"):
    return as_ns(_session_minutes("XNYS-RTH", days, until))


def _local_hhmm(ns) -> list[str]:
    idx = pd.DatetimeIndex(np.asarray(ns).astype("datetime64[ns]"), tz="UTC")
    return [t.strftime("%H:%M") for t in idx.tz_convert("America/New_York")]


def test_flat_at_session_close_flags_the_bars_whose_orders_fill_last_in_the_session():
    from rltrade.sim.risk import FLAT_BIT, RiskConfig, session_flags

    ts = _rth_minutes()
    cfg = RiskConfig(flat_at_session_close=True)
    flags = session_flags(cfg, ts, "1m", "XNYS-RTH").flags  # fills at the next bar's open
    assert _local_hhmm(sorted(flags)) == ["15:58", "15:59"] * 2
    assert set(flags.values()) == {FLAT_BIT}
    close = session_flags(cfg, ts, "1m", "XNYS-RTH", fill="close").flags
    assert _local_hhmm(sorted(close)) == ["15:59"] * 2
    lagged = session_flags(cfg, ts, "1m", "XNYS-RTH", lag=1).flags
    assert _local_hhmm(sorted(lagged)) == ["15:57", "15:58", "15:59"] * 2
    # data that stops inside a session: that session is not closed at the data's end
    cut = session_flags(cfg, ts[:-30], "1m", "XNYS-RTH").flags
    assert _local_hhmm(sorted(cut)) == ["15:58", "15:59"]
    # bars outside every session are flat too
    ext = as_ns(_session_minutes("XNYS-EXT", "2024-03-11T00:00Z", "2024-03-12T06:00Z"))
    outside = session_flags(cfg, ext, "1m", "XNYS-RTH").flags
    assert len(outside) == len(ext) - 390 + 2


def test_no_entry_in_the_last_minutes_blocks_orders_that_would_fill_then():
    from rltrade.sim.risk import NO_ENTRY_BIT, RiskConfig, session_flags

    ts = _rth_minutes("2024-03-11T00:00Z", "2024-03-12T00:00Z")
    flags = session_flags(RiskConfig(no_entry_last_minutes=15), ts, "1m", "XNYS-RTH").flags
    hhmm = _local_hhmm(sorted(flags))
    assert hhmm[0] == "15:44" and hhmm[-1] == "15:59" and len(hhmm) == 16  # fills 15:45-16:00
    assert set(flags.values()) == {NO_ENTRY_BIT}


def test_session_rules_clamp_targets_and_need_the_sessions():
    from rltrade.errors import ConfigError as CE
    from rltrade.sim.risk import RiskConfig, RiskManager, RiskState, session_flags

    ts = _rth_minutes("2024-03-11T00:00Z", "2024-03-12T00:00Z")
    cfg = RiskConfig(flat_at_session_close=True, no_entry_last_minutes=15)
    manager = RiskManager(cfg)
    with pytest.raises(CE, match="session"):
        manager.check_target(RiskState(int(ts[0]), 100.0, 0.0, 1e4), 1.0)
    manager.set_session_flags(session_flags(cfg, ts, "1m", "XNYS-RTH"))
    assert manager.check_target(RiskState(int(ts[100]), 100.0, 0.0, 1e4), 1.0).target == 1.0
    late = manager.check_target(RiskState(int(ts[380]), 100.0, 1.0, 1e4), 2.0)  # 15:50
    assert late.target == 1.0 and late.reasons == ("session_end",)  # no increase; holds
    last = manager.check_target(RiskState(int(ts[388]), 100.0, 1.0, 1e4), 1.0)  # 15:58
    assert last.target == 0.0 and last.reasons == ("session_close",)
    assert manager.counts() == {"session_end": 1, "session_close": 1}


def test_no_trade_windows_in_exchange_time_follow_daylight_saving():
    from rltrade.sim.risk import RiskConfig, RiskManager, session_flags

    window = {"times": [["09:30", "10:00"]], "timezone": "America/New_York"}
    manager = RiskManager(RiskConfig(no_trade=window))
    assert manager.in_no_trade_window(_ns("2024-03-08T14:45Z"))  # EST: 09:45
    assert not manager.in_no_trade_window(_ns("2024-03-08T13:45Z"))
    assert manager.in_no_trade_window(_ns("2024-03-11T13:45Z"))  # EDT: 09:45
    assert not manager.in_no_trade_window(_ns("2024-03-11T14:45Z"))
    utc = RiskManager(RiskConfig(no_trade={"times": [["09:30", "10:00"]]}))
    assert utc.in_no_trade_window(_ns("2024-03-11T09:45Z"))  # UTC, as before
    exchange = RiskManager(RiskConfig(no_trade={"times": [["09:30", "10:00"]],
                                                "timezone": "exchange"}))
    with pytest.raises(ConfigError, match="calendar"):
        exchange.in_no_trade_window(_ns("2024-03-11T13:45Z"))
    exchange.set_session_flags(session_flags(RiskConfig(), _rth_minutes(), "1m", "CMES"))
    assert exchange.in_no_trade_window(_ns("2024-03-11T14:45Z"))  # Chicago: 09:45 CDT
    with pytest.raises(ConfigError, match="time zone"):
        RiskConfig(no_trade={"times": [["09:30", "10:00"]], "timezone": "Mars/Olympus"})


def _session_last_bars(ds) -> np.ndarray:
    pos, _ = session_positions(ds.timestamps, MarketCalendar("XNYS-RTH"), ds.timeframe)
    return np.flatnonzero(np.r_[pos[1:] != pos[:-1], False])


def test_a_backtest_is_flat_at_every_session_close(rth_dataset):
    from rltrade.agents.policy import PlanPolicy
    from rltrade.envs import EnvConfig
    from rltrade.evaluation import run_backtest

    long = PlanPolicy(np.full(len(rth_dataset), 2))  # discrete3: always long
    base = {"window": 8, "equity_floor": 0.0}
    held = run_backtest(long, rth_dataset, base, metrics=False).steps
    last = _session_last_bars(rth_dataset)
    bars = held["bar"].to_numpy()
    at_close = np.isin(bars, last)
    assert (held["position"].to_numpy()[at_close] != 0).all()  # held overnight
    cfg = EnvConfig.build(base, risk={"flat_at_session_close": True})
    flat = run_backtest(long, rth_dataset, cfg, metrics=False).steps
    assert (flat["position"].to_numpy()[np.isin(flat["bar"].to_numpy(), last)] == 0).all()
    assert (flat["position"].to_numpy() != 0).mean() > 0.9  # long the rest of the day
    assert "session_close" in set(flat["risk_reason"].astype(str))


def test_the_training_env_applies_the_same_session_rules(rth_dataset):
    from rltrade.envs import TradingEnv

    env = TradingEnv(rth_dataset, window=8, mode="eval", equity_floor=0.0,
                     risk={"flat_at_session_close": True, "no_entry_last_minutes": 30})
    env.reset(seed=0)
    last = set(_session_last_bars(rth_dataset).tolist())
    checked = 0
    for k in range(600):
        _, _, terminated, truncated, info = env.step(2 if k % 2 else 1)  # enter, exit, ...
        if info["bar"] in last:
            assert info["position"] == 0.0
            checked += 1
        if terminated or truncated:
            break
    assert checked >= 6
    assert {"session_close", "session_end"} <= set(info["risk_interventions"])


def test_cli_validate_names_the_calendar_and_takes_one(tmp_path, capsys):
    from cli_helpers import run_cli

    times = _session_minutes("XNYS-RTH", "2024-03-04T00:00Z", "2024-03-09T00:00Z")
    path = tmp_path / "spy.csv"
    _bars(times).to_csv(path)
    code, out, _ = run_cli(["data", "validate", str(path)], capsys)
    assert code == 0 and "calendar XNYS-RTH" in out and "gaps" not in out
    code, out, _ = run_cli(["data", "validate", str(path), "--calendar", "none"], capsys)
    assert code == 0 and "calendar -" in out and "gaps" in out  # every night a "gap"
    code, out, _ = run_cli(["data", "summary", str(path)], capsys)
    assert code == 0 and "XNYS-RTH" in out and "calendar: XNYS-RTH" in out


def test_the_store_counts_gaps_inside_sessions_too(tmp_path):
    from rltrade.data.store import BarStore

    times = _session_minutes("XNYS-RTH", "2024-03-04T00:00Z", "2024-03-09T00:00Z")
    store = BarStore(tmp_path / "store")
    store.write("SPY", "1m", _bars(times).drop(times[[10, 11]]))
    (info,) = store.info()
    assert (info.gaps, info.missing_bars) == (1, 2)  # not every night


def test_a_cached_dataset_takes_the_calendar_its_bars_were_loaded_with(tmp_path):
    from rltrade.features import FeatureSpec
    from rltrade.features.cache import DatasetCache

    times = _session_minutes("XNYS-RTH", "2024-03-04T00:00Z", "2024-03-09T00:00Z", "5m")
    frame = _bars(times)
    spec = FeatureSpec.from_dict({"features": {"returns": {"periods": [1]}}, "strategies": []})
    cache = DatasetCache(tmp_path / "cache")
    assert cache.get_or_build(load_bars(frame), spec).calendar == "XNYS-RTH"
    again = cache.get_or_build(load_bars(frame, calendar="XNYS-EXT"), spec)
    assert cache.last_action == "hit" and again.calendar == "XNYS-EXT"
