"""validate_bars: the malformed-file corpus, strict / repair / report, and repair invariants."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rltrade.data import load_bars, load_bars_with_report, validate_bars
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
