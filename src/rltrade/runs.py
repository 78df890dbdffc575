"""The run directory ``runs/<name>/`` and the compatibility of a trained model with a dataset.

Layout (every JSON/YAML file written atomically; nothing here is ever unpickled)::

    runs/<name>/
      config.yaml          the resolved RunConfig
      metadata.json        what was trained on what (sections below), plus ``backtests``
      manifest.json        one-page summary: data, config, FLOPs, wall time, steps/s, best metrics
      state.json           status (created / running / completed / failed), steps done, pid,
                           last checkpoint
      train.lock           the training lock: an exclusive OS file lock (``fcntl.flock``) held
                           by the one process that trains or resumes the run; holds its pid
      normalizer.json      the fitted feature normalizer
      model/               final weights (weights.pt + model.json)
      best/                the weights with the best evaluation return
      checkpoints/step_<n>/  periodic weights + optimizer state (resume)
      tensorboard/         TensorBoard event files
      logs/                training.log, data_pipeline.log, backtest.log
      backtests/bt_<UTC time>/  one folder per backtest

``metadata.json`` sections: ``name``, ``machine``, ``description``, ``created_at`` (UTC),
``run_mode`` (``train``, ``train+backtest`` or ``walkforward_fold``); ``training`` (range,
split, bars); ``rl`` (algorithm, gamma, learning rate, network, total steps, seed,
parameters); ``env_spec`` (observation and action shapes); ``environment`` (cash, leverage,
stops, dead-zone, fees, slippage, reward and weights); ``data`` (source, symbol, timeframe,
fingerprint); ``features`` (spec, hash, names, signal names, strategy order); ``versions``
(packages, git commit); ``backtests`` (a list each backtest appends to).

Lifecycle: :meth:`Run.create` makes the directory only once the data and config of a run were
checked (``train`` does that first), and takes the training lock at once; :meth:`Run.acquire_lock`
refuses a second process with :class:`~rltrade.errors.RunInUseError` naming the pid that holds
it. A run that failed (status ``failed``, or ``created`` without ever starting) blocks its name
until it is moved aside: ``Run.create(..., overwrite_failed=True)`` renames it to
``<name>.failed-<UTC time>`` (nothing is deleted) and starts afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import yaml
from loguru import logger

from rltrade.config import RunConfig
from rltrade.data.store import atomic_write_bytes, atomic_write_json
from rltrade.data.timeframes import parse_timeframe
from rltrade.errors import CompatibilityError, ConfigError, DataError, RunInUseError, StoreError
from rltrade.features.dataset import Dataset
from rltrade.features.normalize import Normalizer

__all__ = ["FAILED_STATES", "LOCK_FILE", "Run", "RunLock", "check_run_name", "package_versions"]

log = logger.bind(component="train")

#: the training lock's file in a run directory
LOCK_FILE = "train.lock"
#: states of a run that holds nothing worth keeping under its name: it failed, or it was created
#: and never started training
FAILED_STATES = ("failed", "created")

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


class RunLock:
    """An exclusive OS lock on a file (``fcntl.flock``, non-blocking), with the holder's pid
    written into it. The kernel releases it when the holding process ends, however it ends
    (a crash, ``SIGKILL``), so a stale lock never blocks a resume.

    :param path: the lock file (created if missing; its content is only informative).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def _try(self) -> int | None:
        """A descriptor holding the lock, or ``None`` when another one holds it."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def acquire(self, what: str = "this run") -> None:
        """Take the lock (idempotent for its holder).

        :param what: how the error names the locked thing.
        :raises RunInUseError: another process holds it (named by pid when it wrote one).
        """
        if self._fd is not None:
            return
        for _ in range(2):  # the holder may let go between our attempt and our reading its pid
            fd = self._try()
            if fd is not None:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            pid = self.holder()
            if pid is not None:
                raise RunInUseError(
                    f"{what} is in use by process {pid} (it holds {self.path}): wait for it to "
                    f"finish, or stop it (kill {pid}), then try again"
                )
        raise RunInUseError(f"{what} is in use by another process (it holds {self.path})")

    def release(self) -> None:
        """Let the lock go (a no-op when not held)."""
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def holder(self, wait: float = 1.0) -> int | None:
        """The pid of the process that holds the lock, ``None`` when it is free.

        :param wait: how long to wait for a holder that has just taken the lock to write its pid.
        """
        if self._fd is not None:
            return os.getpid()
        if not self.path.exists():
            return None
        deadline = time.monotonic() + wait
        while True:
            fd = self._try()
            if fd is not None:  # free
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                return None
            with contextlib.suppress(OSError, ValueError):
                return int(self.path.read_text().strip())
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)


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
        self._lock = RunLock(self.path / LOCK_FILE)
        #: where :meth:`create` moved a failed run of the same name (``None``: nothing moved)
        self.replaced: Path | None = None

    # -- creation -------------------------------------------------------------------------
    @classmethod
    def check_name_free(cls, name: str, root: str | Path = "runs", *,
                        overwrite_failed: bool = False) -> None:
        """Refuse a name that is taken, before any work is done for a new run under it.

        Free: nothing at ``root/name``, or (with ``overwrite_failed``) a failed run there that
        no process holds, which :meth:`create` will move aside.

        :raises ConfigError: the name is invalid, or taken (by a run that is running, resumable
            or complete; by a failed run without ``overwrite_failed``; by something that is not
            a run); each message says what to do.
        :raises RunInUseError: a process holds the failed run's lock.
        """
        check_run_name(name)
        path = Path(root) / name
        if not path.exists():
            return
        if not (path / "config.yaml").is_file():
            raise ConfigError(f"{path} exists and is not a run directory: choose another --name "
                              f"or move it away")
        other = cls(path)
        state = other.state
        status = state.get("status", "unknown")
        if status not in FAILED_STATES:
            raise ConfigError(
                f"run {path} already exists (status {status}, {state.get('steps_done', 0):,} "
                f"steps): choose another --name"
                + ("" if status == "completed" else f", or continue it with --resume {path}")
            )
        if not overwrite_failed:
            why = f": {state['error']}" if state.get("error") else ""
            raise ConfigError(
                f"run {path} exists from a failed attempt (status {status}{why}): pass "
                f"--overwrite-failed to move it aside to {path.name}.failed-<time> and train "
                f"under this name again, or choose another --name"
            )
        pid = other.lock_holder()
        if pid is not None:
            raise RunInUseError(f"run {path} is in use by process {pid}: it cannot be moved "
                                f"aside while that process runs")

    @classmethod
    def create(cls, name: str, config: RunConfig, root: str | Path = "runs", *,
               overwrite_failed: bool = False) -> Run:
        """Make ``root/name`` with its folders and ``config.yaml``, holding its training lock
        (:meth:`release_lock` lets it go). Never overwrites a run; with ``overwrite_failed`` a
        failed run of the same name is first moved aside to ``<name>.failed-<UTC time>``
        (recorded in :attr:`replaced`).

        :raises ConfigError: see :meth:`check_name_free`.
        """
        cls.check_name_free(name, root, overwrite_failed=overwrite_failed)
        path = Path(root) / name
        replaced = cls._move_aside(path) if path.exists() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:
            raise ConfigError(f"run {path} already exists") from None
        run = cls(path)
        run.acquire_lock()
        run.replaced = replaced
        for sub in ("model", "best", "checkpoints", "tensorboard", "logs", "backtests"):
            (path / sub).mkdir()
        atomic_write_bytes(path / "config.yaml", config.to_yaml().encode())
        run.write_state(status="created", steps_done=0, last_checkpoint=None)
        return run

    @staticmethod
    def _move_aside(path: Path) -> Path:
        """Rename a failed run to ``<name>.failed-<UTC time>`` (``-2``, ``-3``... if taken)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = path.with_name(f"{path.name}.failed-{stamp}")
        n = 2
        while target.exists():
            target = path.with_name(f"{path.name}.failed-{stamp}-{n}")
            n += 1
        os.rename(path, target)
        log.warning("moved the failed run {} aside to {}", path, target)
        return target

    # -- the training lock ----------------------------------------------------------------
    def acquire_lock(self) -> None:
        """Take the run's training lock (see :class:`RunLock`); held until
        :meth:`release_lock` or the end of this process.

        :raises RunInUseError: another process holds it; the message names its pid.
        """
        self._lock.acquire(what=f"run {self.path}")

    def release_lock(self) -> None:
        """Let the training lock go (a no-op when this object does not hold it)."""
        self._lock.release()

    @contextlib.contextmanager
    def locked(self) -> Iterator[Run]:
        """Hold the training lock while the block runs."""
        held = self._lock.held
        self.acquire_lock()
        try:
            yield self
        finally:
            if not held:
                self.release_lock()

    def lock_holder(self) -> int | None:
        """The pid of the process holding the training lock, ``None`` when it is free."""
        return self._lock.holder()

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
        """Refuse a dataset the model was not trained for, naming every mismatch: the bars'
        timeframe, feature set and order, strategy set, order and timeframes, external series
        (turbulence / VIX), the feature spec hash, the observation shape, and the normalizer."""
        meta = self.metadata
        feats = meta.get("features")
        if not feats:
            raise CompatibilityError(f"{self.path}: metadata.json has no features section; "
                                     f"was the run trained?")
        problems: list[str] = []
        want_tf = (meta.get("data") or {}).get("timeframe")
        if want_tf and not _same_timeframe(want_tf, dataset.timeframe):
            problems.append(f"bar timeframe differs: model trained on {want_tf} bars, data has "
                            f"{dataset.timeframe} bars")
        want_names = feats.get("names", [])
        if want_names != dataset.feature_names:
            missing = [n for n in want_names if n not in dataset.feature_names]
            extra = [n for n in dataset.feature_names if n not in want_names]
            if missing or extra:
                problems.append(f"indicator/feature set differs: missing {missing}, "
                                f"unexpected {extra}")
            else:
                problems.append("feature order differs")
        want_signals = feats.get("signal_names", [])
        if feats.get("strategy_order", []) != dataset.strategy_names:
            problems.append(f"strategy set/order differs: model {feats.get('strategy_order')} vs "
                            f"data {dataset.strategy_names}")
        elif _strategy_timeframes(want_signals) != _strategy_timeframes(dataset.signal_names):
            problems.append(
                f"strategy timeframes differ: model "
                f"{', '.join(_strategy_timeframes(want_signals))}, data "
                f"{', '.join(_strategy_timeframes(dataset.signal_names))}")
        elif want_signals != dataset.signal_names:
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


def _same_timeframe(a: str, b: str) -> bool:
    try:
        return parse_timeframe(a) == parse_timeframe(b)
    except DataError:
        return str(a) == str(b)


def _strategy_timeframes(signal_names: list[str]) -> list[str]:
    """``name@timeframe`` of each strategy, from its one-hot signal columns
    (``supertrend@1h_FLAT``, ``..._LONG``, ``..._SHORT``, ``..._HOLD``)."""
    return [n.rsplit("_", 1)[0] for n in signal_names[::4]]
