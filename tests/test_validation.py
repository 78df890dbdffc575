"""validate_bars: the malformed-file corpus, strict / repair / report, and repair invariants."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rltrade.data import load_bars, load_bars_with_report, parse_timeframe, validate_bars
from rltrade.data.validation import find_gaps, find_spikes
from rltrade.errors import DataError, ValidationError

CORPUS = Path(__file__).parent / "data" / "malformed"
sys.path.insert(0, str(CORPUS.parent))
from make_malformed import EXPECTED  # noqa: E402

ERRORS = {
    name: code
    for name, code in EXPECTED.items()
    if code not in ("unreadable", "gaps", "price_jumps", "naive_timestamps")
}
WARNINGS = {
    name: code
    for name, code in EXPECTED.items()
    if code in ("gaps", "price_jumps", "naive_timestamps")
}
UNREADABLE = [name for name, code in EXPECTED.items() if code == "unreadable"]


def test_corpus_is_complete():
    on_disk = {p.name for p in CORPUS.glob("*.csv")} - {"clean.csv"}
    assert on_disk == set(EXPECTED)


def test_clean_file_is_clean():
    df, report = load_bars_with_report(CORPUS / "clean.csv")
    assert report.clean and report.verdict() == "clean"
    assert len(df) == 48 and report.timeframe == "1h"


@pytest.mark.parametrize("name,code", sorted(ERRORS.items()))
def test_strict_names_the_problem(name, code):
    with pytest.raises(ValidationError) as info:
        load_bars(CORPUS / name)
    report = info.value.report
    assert code in {f.code for f in report.errors}
    assert code in str(info.value)  # the message names the problem
    finding = next(f for f in report.errors if f.code == code)
    assert finding.count >= 1
    assert finding.examples, "the first offending timestamps are shown"


@pytest.mark.parametrize("name,code", sorted(ERRORS.items()))
def test_repair_fixes_and_result_passes_strict(name, code):
    df, report = load_bars_with_report(CORPUS / name, policy="repair")
    assert report.ok
    assert all(f.fixed for f in report.errors)
    validate_bars(df, "1h", policy="strict")  # the repaired bars are clean of errors
    assert df.index.is_monotonic_increasing and not df.index.has_duplicates


@pytest.mark.parametrize("name,code", sorted(WARNINGS.items()))
def test_warnings_do_not_fail_strict(name, code):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, report = load_bars_with_report(CORPUS / name)
    assert code in {f.code for f in report.warnings}
    assert not report.errors


@pytest.mark.parametrize("name", UNREADABLE)
def test_unreadable_files_give_a_clear_data_error(name):
    with pytest.raises(DataError) as info:
        load_bars(CORPUS / name)
    assert not isinstance(info.value, ValidationError)
    message = str(info.value)
    assert name in message or "column" in message
    assert "Traceback" not in message


def test_report_policy_never_raises_nor_changes():
    raw = pd.read_csv(CORPUS / "unsorted.csv")
    report = validate_bars(raw, policy="report")
    assert not report.ok
    assert report.bars is not None and len(report.bars) == len(raw)
    assert not report.bars.index.is_monotonic_increasing


def test_repair_details():
    df, report = load_bars_with_report(CORPUS / "duplicate_conflicting.csv", policy="repair")
    raw = pd.read_csv(CORPUS / "duplicate_conflicting.csv")
    dup_ts = pd.Timestamp(raw.iloc[19, 0])
    # keep-last: the second of the two rows with that timestamp wins, and the report says so
    assert df.loc[dup_ts, "close"] == raw.iloc[20]["close"]
    assert "kept the last" in next(f.fixed for f in report.errors)

    df, report = load_bars_with_report(CORPUS / "nan_price.csv", policy="repair")
    assert len(df) == 48  # an isolated NaN is filled, not dropped
    assert df["close"].iloc[12] == df["close"].iloc[11]

    df, report = load_bars_with_report(CORPUS / "nonpositive_price.csv", policy="repair")
    assert (df[["open", "high", "low", "close"]] > 0).all().all()

    df, _ = load_bars_with_report(CORPUS / "ohlc_violation.csv", policy="repair")
    assert (df["high"] >= df[["open", "close", "low"]].max(axis=1)).all()
    assert (df["low"] <= df[["open", "close", "high"]].min(axis=1)).all()

    # naive rows among zoned ones: every row is kept, the naive ones taken as UTC
    df, _ = load_bars_with_report(CORPUS / "mixed_timezones.csv", policy="repair")
    pd.testing.assert_index_equal(df.index, load_bars(CORPUS / "clean.csv").index)


def test_runs_of_missing_prices_are_dropped_never_invented():
    df = load_bars(CORPUS / "clean.csv")
    broken = df.copy()
    broken.iloc[10:13, broken.columns.get_loc("close")] = np.nan  # a run of three
    report = validate_bars(broken, policy="repair")
    assert len(report.bars) == len(df) - 3
    assert not report.bars.index.isin(df.index[10:13]).any()


def test_gaps_counted_and_weekends_ignored_for_weekday_series():
    df = load_bars(CORPUS / "gaps.csv", policy="report")
    report = validate_bars(df, "1h")
    gap = next(f for f in report.warnings if f.code == "gaps")
    assert gap.count == 2 and "about 8 missing" in gap.message
    days = pd.bdate_range("2024-01-01", periods=40, tz="UTC", unit="ns", name="timestamp")
    weekday = pd.DataFrame({c: 1.0 for c in ["open", "high", "low", "close", "volume"]}, index=days)
    assert not validate_bars(weekday, "1d").warnings
    holiday = weekday.drop(days[7])
    assert [f.code for f in validate_bars(holiday, "1d").warnings] == ["gaps"]


def test_unknown_policy():
    with pytest.raises(DataError, match="unknown validation policy"):
        validate_bars(load_bars(CORPUS / "clean.csv"), policy="lenient")  # type: ignore[arg-type]


@st.composite
def messy_bars(draw):
    n = draw(st.integers(5, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    vol = rng.uniform(0, 10, n)
    frame = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": vol})
    ts = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    frame.insert(0, "timestamp", ts)
    values = frame[["open", "high", "low", "close", "volume"]].to_numpy(copy=True)
    for _ in range(draw(st.integers(0, 6))):  # corrupt random cells
        i, j = rng.integers(0, n), rng.integers(0, 5)
        values[i, j] = draw(st.sampled_from([np.nan, np.inf, -1.0, 0.0, values[i, j] * 3]))
    frame[["open", "high", "low", "close", "volume"]] = values
    if draw(st.booleans()):  # duplicate some rows, maybe with changes
        extra = frame.sample(n=min(3, n), random_state=1).copy()
        if draw(st.booleans()):
            extra["close"] *= 1.01
        frame = pd.concat([frame, extra])
    if draw(st.booleans()):
        frame = frame.sample(frac=1.0, random_state=2)  # shuffle
    return frame


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messy_bars())
def test_repair_always_yields_bars_that_pass_strict(frame):
    try:
        report = validate_bars(frame, "1h", policy="repair")
    except DataError:
        return  # e.g. every row invalid: refusing is allowed, silently inventing is not
    out = report.bars
    assert report.ok
    if len(out):
        strict = validate_bars(out, "1h", policy="strict")
        assert not strict.errors
        # repair never invents timestamps
        assert set(out.index) <= set(pd.DatetimeIndex(frame["timestamp"]))
        assert len(out) <= frame["timestamp"].nunique()


def test_fx_weekend_close_is_not_a_gap_but_a_weekday_hole_is():
    hours = pd.date_range("2024-01-01", "2024-01-31", freq="1h", tz="UTC", unit="ns",
                          name="timestamp")
    # FX hours: closed from Friday 21:00 to Sunday 21:00 UTC
    open_ = ~(((hours.day_of_week == 4) & (hours.hour >= 21)) | (hours.day_of_week == 5)
              | ((hours.day_of_week == 6) & (hours.hour < 21)))
    fx = pd.DataFrame({c: 1.0 for c in ["open", "high", "low", "close", "volume"]},
                      index=hours[open_])
    assert "gaps" not in {f.code for f in validate_bars(fx, "1h").warnings}
    holed = fx.drop(fx.index[50:53])  # three hours missing on a Wednesday
    gaps = next(f for f in validate_bars(holed, "1h").warnings if f.code == "gaps")
    assert gaps.count == 1 and "about 3 missing" in gaps.message


# ----------------------------------------------------------------------------------------------
# bad prints: one-bar spikes that revert
# ----------------------------------------------------------------------------------------------
def _bars(close: np.ndarray, start: str = "2024-01-01") -> pd.DataFrame:
    """Bars around ``close`` (open = previous close, a small wick), hourly, UTC."""
    open_ = np.concatenate(([close[0]], close[:-1]))
    index = pd.date_range(start, periods=len(close), freq="1h", tz="UTC", unit="ns",
                          name="timestamp")
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.0005,
                         "low": np.minimum(open_, close) * 0.9995, "close": close,
                         "volume": 1.0}, index=index)


def _walk(n: int, vol: float, seed: int = 0) -> np.ndarray:
    return 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, vol, n)))


def test_a_reverting_spike_is_refused_by_strict_and_flattened_by_repair():
    raw = pd.read_csv(CORPUS / "price_spike.csv")
    with pytest.raises(ValidationError) as info:
        load_bars(CORPUS / "price_spike.csv")
    finding = next(f for f in info.value.report.errors if f.code == "price_spikes")
    assert finding.count == 1 and "-97.50%" in finding.message
    assert finding.examples == ["2024-01-02 01:00:00+00:00"]
    # the spike is a bad print, not (also) a jump warning
    report = validate_bars(raw, policy="report")
    assert "price_jumps" not in {f.code for f in report.findings}

    df, report = load_bars_with_report(CORPUS / "price_spike.csv", policy="repair")
    assert len(df) == 48
    flat = df.iloc[25][["open", "high", "low", "close"]].to_numpy()
    np.testing.assert_array_equal(flat, raw.iloc[24]["close"])  # the previous close
    assert df.iloc[25]["volume"] == raw.iloc[25]["volume"]
    assert "set open/high/low/close of 1 bar(s) to the previous close" in next(
        f.fixed for f in report.errors if f.code == "price_spikes")
    assert not report.warnings  # no jump is left once the bad print is gone
    pd.testing.assert_frame_equal(df.drop(df.index[25]),
                                  load_bars(CORPUS / "clean.csv").drop(df.index[25]))


def test_the_spike_rule_scales_with_the_bars_own_volatility():
    calm, wild = _walk(400, 0.001), _walk(400, 0.05)
    for close, flagged in ((calm, True), (wild, False)):
        close = close.copy()
        close[200] *= 0.9  # -10 % for one bar, then back
        report = validate_bars(_bars(close), "1h", policy="report")
        assert ("price_spikes" in {f.code for f in report.errors}) is flagged


def test_moves_that_do_not_revert_are_never_spikes():
    base = _walk(500, 0.004, seed=3)
    shift = base.copy()
    shift[250:] *= 0.5  # a real level shift: -50 % and it stays
    partial = base.copy()
    partial[250] *= 0.5  # -50 %, and the next bar takes back less than 3/4 of the fall
    partial[251:] *= 0.75
    first_last = base.copy()
    first_last[0] *= 0.1
    first_last[-1] *= 0.1  # at the edges there is nothing to revert to
    for close in (shift, partial, first_last):
        report = validate_bars(_bars(close), "1h", policy="report")
        assert not report.errors
        assert "price_jumps" in {f.code for f in report.warnings}


def test_ordinary_and_synthetic_markets_have_no_spikes():
    from rltrade.data.synthetic import KINDS, synthetic_market

    for kind in KINDS:
        bars = synthetic_market(kind, n_bars=20_000, seed=5)
        assert not find_spikes(bars["close"].to_numpy()).any(), kind
    flat = np.full(300, 100.0)
    flat[100] = 100.01  # a one-tick blip in a market that rarely moves
    assert not find_spikes(flat).any()


# ----------------------------------------------------------------------------------------------
# rltrade data validate: exit codes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,args,code",
    [
        ("clean.csv", [], 0),
        ("clean.csv", ["--fail-on", "warning"], 0),
        ("price_spike.csv", [], 1),
        ("price_spike.csv", ["--repair"], 0),
        ("gaps.csv", [], 0),
        ("gaps.csv", ["--fail-on", "warning"], 1),
        ("gaps.csv", ["--fail-on", "error"], 0),
        ("price_jump.csv", ["--fail-on", "warning"], 1),
        ("not_a_table.csv", [], 2),
    ],
)
def test_data_validate_exit_codes(name, args, code):
    from rltrade.cli import main

    try:
        main(["data", "validate", str(CORPUS / name), *args])
        exit_code = 0  # success returns
    except SystemExit as exc:
        exit_code = exc.code or 0
    assert exit_code == code


# ----------------------------------------------------------------------------------------------
# close-only validation (external series)
# ----------------------------------------------------------------------------------------------
def test_a_close_series_with_a_broken_envelope_passes_close_only_validation():
    df = load_bars(CORPUS / "clean.csv")
    broken = df.copy()
    broken.iloc[5, broken.columns.get_loc("high")] = broken.iloc[5]["low"] * 0.5
    broken.iloc[9, broken.columns.get_loc("open")] = np.nan
    broken["volume"] = -1.0
    with pytest.raises(ValidationError, match="ohlc_envelope"):
        validate_bars(broken, "1h")
    report = validate_bars(broken, "1h", columns=("close",))
    assert report.clean
    pd.testing.assert_frame_equal(report.bars, broken)  # unchecked columns kept as they are
    # the close itself is still checked
    bad_close = broken.copy()
    bad_close.iloc[7, bad_close.columns.get_loc("close")] = -3.0
    with pytest.raises(ValidationError, match="bad_prices"):
        validate_bars(bad_close, "1h", columns=("close",))
    with pytest.raises(DataError, match="columns must be among"):
        validate_bars(broken, columns=("vwap",))


def test_a_file_of_dates_and_closes_loads_for_an_external_series(tmp_path):
    path = tmp_path / "vix.csv"
    days = pd.bdate_range("2024-01-01", periods=30)
    closes = 13 + np.arange(30) / 10
    path.write_text("date,close\n" + "".join(
        f"{d:%Y-%m-%d},{c:.2f}\n" for d, c in zip(days, closes, strict=True)))
    with pytest.raises(DataError, match=r"missing price column\(s\) \['open', 'high', 'low'\]"):
        load_bars(path)
    df = load_bars(path, columns=("close",))
    assert list(df.columns) == ["close"]
    np.testing.assert_allclose(df["close"].to_numpy(), np.round(closes, 2))
    # text in an unused open column is a note, not an error
    with_open = tmp_path / "vix_open.csv"
    with_open.write_text("date,open,close\n" + "".join(
        f"{d:%Y-%m-%d},{'abc' if i == 3 else '1.0'},{c:.2f}\n"
        for i, (d, c) in enumerate(zip(days, closes, strict=True))))
    df, report = load_bars_with_report(with_open, columns=("close",))
    note = next(f for f in report.findings if f.code == "non_numeric")
    assert note.severity == "info" and "not checked" in note.message
    assert np.isnan(df["open"].iloc[3]) and not report.errors


def test_external_series_need_only_their_column(tmp_path):
    from rltrade.features.base import BarArrays
    from rltrade.features.market import external_series

    days = pd.bdate_range("2024-01-01", periods=40, tz="UTC", unit="ns", name="timestamp")
    closes = 15 + np.arange(40) / 10
    bars = BarArrays.from_frame(load_bars(CORPUS / "clean.csv"))
    close_only = tmp_path / "vix_close.csv"
    pd.DataFrame({"close": closes}, index=days).to_csv(close_only)
    broken = tmp_path / "vix_ohlc.csv"  # open/high/low broken on every row, close fine
    pd.DataFrame({"open": 20.0, "high": 10.0, "low": 30.0, "close": closes},
                 index=days).to_csv(broken)
    for path in (close_only, broken):
        out = external_series(bars, "vix", str(path))["ext_vix"]
        # 2024-01-01 (Mon) is visible from 2024-01-02 00:00 on: the bars of Jan 2 see 15.0
        np.testing.assert_array_equal(out[:24], np.nan)
        np.testing.assert_array_equal(out[24:], 15.0)
    # what the close-only check sees in the broken file: nothing wrong
    assert validate_bars(pd.read_csv(broken), "1d", columns=("close",)).errors == []


def test_find_gaps_is_public():
    df = load_bars(CORPUS / "gaps.csv", policy="report")
    gaps = find_gaps(df.index, parse_timeframe("1h"))
    assert (gaps.events, gaps.missing) == (2, 8)
    assert gaps.largest == pd.Timedelta(hours=6)  # five bars missing


_VIX = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vix_daily_1990-2026.csv"


@pytest.mark.shared_data
@pytest.mark.skipif(not _VIX.is_file(), reason="../shared/data is not present")
def test_the_shared_vix_file_is_clean_on_its_close():
    with pytest.raises(ValidationError, match="47 bar"):  # open/high/low: 47 envelope errors
        load_bars(_VIX)
    vix, report = load_bars_with_report(_VIX, columns=("close",))
    assert len(vix) == 9235 and not report.errors
    # the close is what features use: the 2018-02-05 +115.6 % is a real jump, not a bad print
    assert "+115.60%" in next(f.message for f in report.warnings if f.code == "price_jumps")


# ----------------------------------------------------------------------------------------------
# price jumps: scaled by the bar's own recent volatility


def _regimes(seed: int = 3) -> pd.DataFrame:
    """Minute bars: a calm stretch, then a busy one ten times as volatile (24/7)."""
    rng = np.random.default_rng(seed)
    r = np.concatenate([rng.normal(0, 1e-4, 5000), rng.normal(0, 1e-3, 5000)])
    close = 100 * np.exp(np.cumsum(r))
    times = pd.date_range("2024-01-06", periods=len(close), freq="1min", tz="UTC", unit="ns",
                          name="timestamp")
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close,
                         "volume": 1.0}, index=times)


def test_ordinary_moves_of_a_busy_stretch_are_not_jumps():
    report = validate_bars(_regimes(), "1m")
    # one robust scale for the whole series flagged the busy stretch's ordinary moves
    assert sum(f.count for f in report.warnings if f.code == "price_jumps") == 0


def test_a_real_jump_in_a_calm_stretch_is_still_flagged():
    bars = _regimes()
    close = bars["close"].to_numpy().copy()
    close[3000:] *= 1.004  # a level shift of 40 calm sigmas that stays
    for column in ("open", "high", "low", "close"):
        bars[column] = close
    jumps = next(f for f in validate_bars(bars, "1m").warnings if f.code == "price_jumps")
    assert jumps.count == 1 and str(bars.index[3000]) in jumps.examples


def test_jump_scores_compare_session_openings_with_each_other():
    from rltrade.data.timeframes import parse_timeframe
    from rltrade.data.validation import jump_scores

    rng = np.random.default_rng(5)
    days = pd.bdate_range("2024-03-04", periods=30, tz="UTC")
    times = pd.DatetimeIndex(np.concatenate(
        [d + pd.Timedelta(hours=14, minutes=30) + pd.to_timedelta(np.arange(390), "min")
         for d in days.as_unit("ns")]), name="timestamp")
    r = rng.normal(0, 1e-4, len(times))
    r[::390] = rng.normal(0, 5e-3, len(days))  # overnight gaps: 50x a minute's move
    close = 100 * np.exp(np.cumsum(r))
    sessions = np.repeat(np.arange(len(days)), 390)
    z = jump_scores(close, times, parse_timeframe("1m"), sessions)
    assert np.nanmax(z) < 12  # no opening gap is a jump
