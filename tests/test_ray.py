"""The Ray executor: a worker's folder shipped back to the driver, the Dataset checked on the
worker, and (slow, on a local Ray head on 127.0.0.1) a sweep on Ray equal to the local run
trial for trial, with a dead worker's task retried."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from rltrade.errors import DataError
from rltrade.experiments.executors import SequentialExecutor
from rltrade.experiments.ray_executor import (
    RayExecutor,
    dataset_digest,
    merge_tree,
    rebase_paths,
    receive,
    remote_unit,
)
from rltrade.experiments.sweep import sweep
from rltrade.features.dataset import build_dataset
from test_sweep import SPACE, sweep_config

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Out:
    run: str
    other: str
    rows: int


def write_a_run(dataset, name: str, out_dir: Path) -> Out:
    """A toy unit: writes ``runs/<name>/result.txt`` under its folder."""
    run = Path(out_dir) / "runs" / name
    run.mkdir(parents=True)
    (run / "result.txt").write_text(f"{len(dataset)} rows")
    return Out(str(run), "/elsewhere", len(dataset))


def die_once(marker: str, out_dir: Path) -> str:
    """A toy unit whose worker dies the first time (the process exits), then succeeds."""
    flag = Path(marker)
    if not flag.exists():
        flag.write_text("died once")
        os._exit(1)
    return "survived"


@pytest.fixture(scope="module")
def dataset(small_config):
    from rltrade.data.loaders import load_bars

    cfg = sweep_config(small_config)
    bars = load_bars(cfg.data.source, timeframe=cfg.data.timeframe)
    return build_dataset(bars, cfg.feature_spec, timeframe=cfg.data.timeframe)


def test_a_worker_folder_is_unpacked_on_the_driver_with_its_paths_rebased(dataset, tmp_path):
    expected = {0: (dataset.fingerprint, dataset_digest(dataset))}
    result, shipped = remote_unit(write_a_run, True, expected, dataset, "a", tmp_path / "x")
    # the worker wrote into a private folder, now gone, and sent its files back
    assert not (tmp_path / "x").exists() and not Path(shipped.root).exists()
    assert result.run.startswith(shipped.root)
    driver = tmp_path / "driver"
    (driver / "runs" / "kept").mkdir(parents=True)  # another unit's run stays
    got = receive(shipped, driver, result)
    assert got == Out(str(driver / "runs" / "a"), "/elsewhere", len(dataset))
    assert (driver / "runs" / "a" / "result.txt").read_text() == f"{len(dataset)} rows"
    assert (driver / "runs" / "kept").is_dir()
    assert [p.name for p in driver.iterdir()] == ["runs"]  # no temporary folder left


def test_a_dataset_that_is_not_the_drivers_is_refused_on_the_worker(dataset, tmp_path):
    expected = {0: (dataset.fingerprint, dataset_digest(dataset))}
    changed = dataclasses.replace(dataset, ohlcv=dataset.ohlcv.copy())
    changed.ohlcv[5, 3] *= 1.01  # same fingerprint text, other prices
    with pytest.raises(DataError, match="not the driver's"):
        remote_unit(write_a_run, True, expected, changed, "a", tmp_path / "x")
    assert dataset_digest(dataset) != dataset_digest(changed)


def test_rebase_and_merge(tmp_path):
    assert rebase_paths({"a": ["/w/x/y", "/w/xy", Path("/w/x")]}, "/w/x", "/d") == {
        "a": ["/d/y", "/w/xy", Path("/d")]}
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "f" / "new").mkdir(parents=True)
    (src / "f" / "file.txt").write_text("new")
    (dst / "f" / "old").mkdir(parents=True)
    (dst / "f" / "file.txt").write_text("old")
    merge_tree(src, dst)
    assert sorted(p.name for p in (dst / "f").iterdir()) == ["file.txt", "new", "old"]
    assert (dst / "f" / "file.txt").read_text() == "new"


# -- on a local Ray head -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}"}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_a_dead_worker_is_retried(local_ray, tmp_path):
    marker = tmp_path / "marker"
    assert RayExecutor(max_retries=1).map(die_once, [(str(marker), tmp_path / "o")]) == [
        "survived"]
    marker.unlink()
    with pytest.raises(Exception, match=r"(?i)worker|died|crash"):
        RayExecutor(max_retries=0).map(die_once, [(str(marker), tmp_path / "o")])


@pytest.mark.slow
def test_a_sweep_on_ray_equals_the_local_sweep_trial_for_trial(local_ray, small_config,
                                                               tmp_path):
    cfg = sweep_config(small_config)
    local = sweep(cfg, SPACE, "sw", 4, tmp_path / "local", parallel_trials=2,
                  executor=SequentialExecutor())
    on_ray = sweep(cfg, SPACE, "sw", 4, tmp_path / "ray", parallel_trials=2,
                   executor=RayExecutor(num_cpus=1))
    assert len(local.trials) == len(on_ray.trials) == 4
    for a, b in zip(local.trials, on_ray.trials, strict=True):
        assert (a["number"], a["state"], a["params"]) == (b["number"], b["state"], b["params"])
        assert a["value"] == b["value"] and a["intermediate"] == b["intermediate"]
    assert local.best["number"] == on_ray.best["number"]
    # the driver wrote every run directory: the trials' and the final walk-forward's
    for r in on_ray.trials:
        for fold in (0, 1):
            run = on_ray.path / r["dir"] / "folds" / f"fold_{fold}" / "seed_0"
            assert (run / "metadata.json").is_file()
    for a, b in zip(local.final.results, on_ray.final.results, strict=True):
        assert b.run.startswith(str(on_ray.path / "final"))
        assert Path(b.run, "metadata.json").is_file()
        assert a.test == b.test
        np.testing.assert_array_equal(a.test_returns, b.test_returns)
    assert local.report["significance"]["dsr"] == on_ray.report["significance"]["dsr"]


def test_a_unit_that_writes_nothing_ships_an_empty_folder(tmp_path):
    marker = tmp_path / "marker"
    marker.write_text("already died")
    result, shipped = remote_unit(die_once, True, {}, str(marker), tmp_path / "o")
    assert receive(shipped, tmp_path / "o", result) == "survived"
    assert list((tmp_path / "o").iterdir()) == []
