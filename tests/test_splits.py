"""Date-based splits and the features' warm-up taken from bars before the requested range
(:func:`rltrade.agents.training.prepare_data`)."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest
import yaml

from rltrade.agents.training import prepare_data
from rltrade.config import RunConfig, inclusive_end
from rltrade.data import load_bars
from rltrade.errors import ConfigError, DataError
from rltrade.features import build_dataset

SOURCE = "synthetic:planted?n_bars=1500&seed=3"  # hourly, 2020-01-01 00:00 .. 2020-03-03 11:00


def _ts(ds, i: int) -> pd.Timestamp:
    return ds.index[i]


def test_training_starts_at_the_requested_date_when_earlier_bars_exist(small_config):
    """The warm-up comes from the bars before data.start: the first training bar is the
    first bar at data.start, not data.start + the warm-up."""
    cfg = small_config(data={"start": "2020-01-10", "end": "2020-02-20"})
    data = prepare_data(cfg)
    assert _ts(data.train, 0) == pd.Timestamp("2020-01-10", tz="UTC")
    assert _ts(data.eval, -1) == pd.Timestamp("2020-02-19 23:00", tz="UTC")
    # the warm-up really is needed: built from data.start on, the range loses its start
    bars = load_bars(SOURCE, start="2020-01-10", end="2020-02-20")
    alone = build_dataset(bars, cfg.feature_spec)
    assert alone.warmup_dropped > 0 and alone.index[0] > pd.Timestamp("2020-01-10", tz="UTC")


def test_warmup_longer_than_the_first_margin(small_config, monkeypatch):
    """A warm-up longer than the bars featurised first: the margin grows until the range
    starts at its date."""
    import rltrade.agents.training as training

    monkeypatch.setattr(training, "FIRST_WARMUP_MARGIN", 3)
    cfg = small_config(data={"start": "2020-01-20"})
    data = prepare_data(cfg)
    assert _ts(data.train, 0) == pd.Timestamp("2020-01-20", tz="UTC")


def test_without_earlier_bars_the_warmup_eats_the_start_with_a_warning(small_config,
                                                                       log_messages):
    cfg = small_config(data={"start": "2020-01-01"})
    data = prepare_data(cfg)
    assert _ts(data.train, 0) > pd.Timestamp("2020-01-01", tz="UTC")
    assert any(level == "WARNING" and "warm-up took the first" in text
               for level, text in log_messages)


def test_fractions_behave_as_before(small_config):
    """No dates: the whole data, warm-up dropped at its start, split 75 / 25 by rows."""
    cfg = small_config(split={"train": 0.75})
    data = prepare_data(cfg)
    full = build_dataset(load_bars(SOURCE), cfg.feature_spec)
    train, ev = full.split(0.75)
    np.testing.assert_array_equal(data.train.timestamps, train.timestamps)
    np.testing.assert_array_equal(data.eval.timestamps, ev.timestamps)
    np.testing.assert_array_equal(data.train.features, train.features)


def test_split_by_date_train_end_inclusive(small_config):
    cfg = small_config(data={"start": "2020-01-10"}, split={"train_end": "2020-02-15"})
    data = prepare_data(cfg)
    assert _ts(data.train, 0) == pd.Timestamp("2020-01-10", tz="UTC")
    assert _ts(data.train, -1) == pd.Timestamp("2020-02-15 23:00", tz="UTC")  # the whole day
    assert _ts(data.eval, 0) == pd.Timestamp("2020-02-16", tz="UTC")
    assert _ts(data.eval, -1) == pd.Timestamp("2020-03-03 11:00", tz="UTC")


def test_split_by_date_with_eval_end_and_yaml_dates(small_config):
    data = small_config().to_dict()
    data["split"] = {"train_end": datetime.date(2020, 2, 1), "eval_end": datetime.date(2020, 2, 10)}
    text = yaml.safe_dump(data)
    assert "train_end: 2020-02-01\n" in text  # an unquoted YAML date
    cfg = RunConfig.from_yaml(text)
    assert cfg.split.train_end == "2020-02-01" and cfg.split.eval_end == "2020-02-10"
    data = prepare_data(cfg)
    assert _ts(data.train, -1) == pd.Timestamp("2020-02-01 23:00", tz="UTC")
    assert _ts(data.eval, 0) == pd.Timestamp("2020-02-02", tz="UTC")
    assert _ts(data.eval, -1) == pd.Timestamp("2020-02-10 23:00", tz="UTC")
    assert RunConfig.from_dict(cfg.to_dict()).split == cfg.split  # reproducible from the YAML


def test_inclusive_end():
    assert inclusive_end("2024-12-31") == pd.Timestamp("2025-01-01", tz="UTC")
    assert inclusive_end("2024-12-31T12:00") == pd.Timestamp("2024-12-31 12:00", tz="UTC") + \
        pd.Timedelta(1, "ns")


def test_backtest_range_decides_first_at_its_start(small_config):
    """A backtest before the training range gets its warm-up and its window context from
    the bars before it: its first decision is at its start."""
    cfg = small_config(data={"start": "2020-02-01"},
                       backtest={"start": "2020-01-05", "end": "2020-01-25"})
    data = prepare_data(cfg)
    window = cfg.env.window
    assert data.backtest is not None
    assert data.backtest.index[window - 1] == pd.Timestamp("2020-01-05", tz="UTC")
    assert _ts(data.train, 0) == pd.Timestamp("2020-02-01", tz="UTC")
    assert not data.overlap


@pytest.mark.parametrize(("sections", "match"), [
    ({"data": {"start": "2021-01-01"}}, "after the last bar"),
    ({"data": {"start": "2019-01-01", "end": "2019-06-01"}}, "before the first bar"),
    ({"data": {"start": "2020-01-01 00:30", "end": "2020-01-01 00:50"}}, "holds no bars"),
    ({"data": {"start": "2020-01-10"}, "split": {"train_end": "2021-01-01"}},
     "evaluation slice holds no bars"),
    ({"data": {"start": "2020-01-10"}, "split": {"train_end": "2019-12-01"}},
     "training slice holds no bars"),
    ({"data": {"start": "2020-01-10"}, "split": {"train_end": "2020-01-10T03:00"}},
     "each needs at least"),
])
def test_clear_error_for_an_empty_range_or_one_outside_the_data(small_config, sections, match):
    with pytest.raises(DataError, match=match):
        prepare_data(small_config(**sections))


def test_split_config_errors():
    with pytest.raises(ConfigError, match=r"needs split\.train_end"):
        RunConfig.from_dict({"split": {"eval_end": "2024-01-01"}})
    with pytest.raises(ConfigError, match="not after"):
        RunConfig.from_dict({"split": {"train_end": "2024-02-01", "eval_end": "2024-01-01"}})
    with pytest.raises(ConfigError, match="not a date"):
        RunConfig.from_dict({"split": {"train_end": "31-31-2024"}})
