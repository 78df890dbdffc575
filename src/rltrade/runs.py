"""The run directory ``runs/<name>/`` and the compatibility of a trained model with a dataset.

Layout (every JSON/YAML file written atomically; nothing here is ever unpickled)::

    runs/<name>/
      config.yaml          the resolved RunConfig
      metadata.json        what was trained on what (sections below), plus ``backtests``
      manifest.json        one-page summary: data, config, FLOPs, wall time, steps/s, best metrics
      state.json           status (running / completed / failed), steps done, last checkpoint
      normalizer.json      the fitted feature normalizer
      model/               final weights (weights.pt + model.json)
      best/                the weights with the best evaluation return
      checkpoints/step_<n>/  periodic weights + optimizer state (resume)
      tensorboard/         TensorBoard event files
      logs/                training.log, data_pipeline.log, backtest.log
      backtests/bt_<UTC time>/  one folder per backtest

``metadata.json`` sections: ``name``, ``machine``, ``description``, ``created_at`` (UTC),
``run_mode`` (``train`` or ``train+backtest``); ``training`` (range, split, bars); ``rl``
(algorithm, gamma, learning rate, network, total steps, seed, parameters); ``env_spec``
(observation and action shapes); ``environment`` (cash, leverage, stops, dead-zone, fees,
slippage, reward and weights); ``data`` (source, symbol, timeframe, fingerprint); ``features``
(spec, hash, names, signal names, strategy order); ``versions`` (packages, git commit);
``backtests`` (a list each backtest appends to).
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import yaml

from rltrade.config import RunConfig
from rltrade.data.store import atomic_write_bytes, atomic_write_json
from rltrade.errors import CompatibilityError, ConfigError, StoreError
from rltrade.features.dataset import Dataset
from rltrade.features.normalize import Normalizer

__all__ = ["Run", "check_run_name", "package_versions"]

_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_PACKAGES = ("rltrade", "numpy", "pandas", "numba", "torch", "gymnasium", "stable-baselines3",
             "sb3-contrib", "ta-lib", "backtesting", "pydantic")


def check_run_name(name: str) -> str:
    """A run name: letters, digits and underscores only (it becomes a folder name)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"run name {name!r} is not valid: use letters, digits and underscores only"
        )
    return name


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def package_versions() -> dict[str, Any]:
    """Versions of the packages a result depends on, and the git commit of the checkout."""
    versions: dict[str, Any] = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            versions[pkg] = None
    versions["git_commit"] = _git_commit()
    return versions


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    import os

    return {"hostname": platform.node(), "platform": platform.platform(),
            "processor": platform.machine(), "cpus": os.cpu_count()}


class Run:
    """One run directory (see the module docstring). Create with :meth:`create`, open an
    existing one with :meth:`open`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = self.path.name

    # -- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, config: RunConfig, root: str | Path = "runs") -> Run:
        """Make ``root/name`` with its folders and ``config.yaml``; never overwrites a run."""
        check_run_name(name)
        path = Path(root) / name
        if path.exists():
            raise ConfigError(f"run {path} already exists: choose another --name, or resume it "
                              f"with --resume {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:
            raise ConfigError(f"run {path} already exists") from None
        for sub in ("model", "best", "checkpoints", "tensorboard", "logs", "backtests"):
            (path / sub).mkdir()
        run = cls(path)
        atomic_write_bytes(path / "config.yaml", config.to_yaml().encode())
        run.write_state(status="created", steps_done=0, last_checkpoint=None)
        return run

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """An existing run directory (it must hold ``config.yaml``)."""
        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise StoreError(f"{path} is not a run directory (no config.yaml)")
        return cls(path)

    # -- files ----------------------------------------------------------------------------
    @property
    def config(self) -> RunConfig:
        return RunConfig.from_yaml(self.path / "config.yaml")

    def _read_json(self, name: str) -> dict[str, Any]:
        path = self.path / name
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{path}: not valid JSON ({exc})") from exc

    @property
    def metadata(self) -> dict[str, Any]:
        return self._read_json("metadata.json")

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        atomic_write_json(self.path / "metadata.json", metadata)

    def update_metadata(self, **sections: Any) -> dict[str, Any]:
        meta = self.metadata
        meta.update(sections)
        self.write_metadata(meta)
        return meta

    def append_backtest(self, entry: dict[str, Any]) -> None:
        """Record one backtest in ``metadata.json["backtests"]``."""
        meta = self.metadata
        meta.setdefault("backtests", []).append(entry)
        self.write_metadata(meta)

    @property
    def state(self) -> dict[str, Any]:
        return self._read_json("state.json")

    def write_state(self, **values: Any) -> None:
        state = {**self.state, **values, "updated_at": utc_now()}
        atomic_write_json(self.path / "state.json", state)

    @property
    def manifest(self) -> dict[str, Any]:
        return self._read_json("manifest.json")

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.path / "manifest.json", manifest)

    def write_yaml(self, name: str, data: Any) -> None:
        atomic_write_bytes(self.path / name, yaml.safe_dump(data, sort_keys=False).encode())

    @property
    def normalizer_path(self) -> Path:
        return self.path / "normalizer.json"

    def normalizer(self) -> Normalizer:
        if not self.normalizer_path.is_file():
            raise CompatibilityError(f"{self.path}: the run has no fitted normalizer "
                                     f"(normalizer.json); it cannot be backtested")
        return Normalizer.load(self.normalizer_path)

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (a checkpoint is complete once its
        ``model.json`` exists: it is written last)."""
        folder = self.path / "checkpoints"
        found = [p for p in folder.glob("step_*") if (p / "model.json").is_file()]
        return sorted(found, key=lambda p: int(p.name.removeprefix("step_")))

    def model_dir(self, which: str = "final") -> Path:
        """``final`` (``model/``), ``best`` (``best/``) or ``last`` (newest checkpoint)."""
        if which == "final":
            path = self.path / "model"
        elif which == "best":
            path = self.path / "best"
        elif which == "last":
            cps = self.checkpoints()
            if not cps:
                raise StoreError(f"{self.path}: no checkpoint yet")
            path = cps[-1]
        else:
            raise ConfigError(f"model must be final, best or last, not {which!r}")
        if not (path / "model.json").is_file():
            raise StoreError(f"{path}: no stored model there (was the run completed?)")
        return path

    # -- compatibility --------------------------------------------------------------------
    def check_compatible(self, dataset: Dataset) -> None:
        """Refuse a dataset the model was not trained for, naming every mismatch: feature set
        and order, strategy set and order, external series (turbulence / VIX), the feature
        spec hash, the observation shape, and the normalizer."""
        meta = self.metadata
        feats = meta.get("features")
        if not feats:
            raise CompatibilityError(f"{self.path}: metadata.json has no features section; "
                                     f"was the run trained?")
        problems: list[str] = []
        want_names = feats.get("names", [])
        if want_names != dataset.feature_names:
            missing = [n for n in want_names if n not in dataset.feature_names]
            extra = [n for n in dataset.feature_names if n not in want_names]
            if missing or extra:
                problems.append(f"indicator/feature set differs: missing {missing}, "
                                f"unexpected {extra}")
            else:
                problems.append("feature order differs")
        if feats.get("strategy_order", []) != dataset.strategy_names:
            problems.append(f"strategy set/order differs: model {feats.get('strategy_order')} vs "
                            f"data {dataset.strategy_names}")
        if feats.get("signal_names", []) != dataset.signal_names:
            problems.append("strategy signal columns differ (timeframes or order)")
        for flag in ("turbulence", "vix"):
            had = any(flag in n for n in want_names)
            has = any(flag in n for n in dataset.feature_names)
            if had != has:
                problems.append(f"{flag} flag differs: model {had}, data {has}")
        if feats.get("spec_hash") != dataset.spec_hash:
            problems.append(f"feature spec hash differs: model {str(feats.get('spec_hash'))[:12]}"
                            f", data {dataset.spec_hash[:12]}")
        spec = meta.get("env_spec", {})
        n_market = len(dataset.feature_names) + len(dataset.signal_names)
        if spec.get("n_market") is not None and spec["n_market"] != n_market:
            problems.append(f"observation shape differs: model expects {spec['n_market']} market "
                            f"columns per row, data gives {n_market}")
        if not self.normalizer_path.is_file():
            problems.append("normalizer missing (normalizer.json)")
        if problems:
            raise CompatibilityError(
                f"model {self.name} does not fit this data: " + "; ".join(problems)
            )
