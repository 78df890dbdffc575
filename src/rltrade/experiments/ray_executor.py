"""The Ray executor: the units of work of a walk-forward or a sweep as Ray tasks, on one
machine or a cluster, with the same results as the local pool.

:class:`RayExecutor` has the executors' one method, :meth:`RayExecutor.map` ``(fn, tasks) ->
list`` (:mod:`rltrade.experiments.executors`): every task becomes one Ray task that reserves
``num_cpus`` CPUs (and ``num_gpus`` GPUs when the config asks for one, :func:`unit_resources`)
and is retried ``max_retries`` times when its worker dies (Ray's task retries; an exception
raised by the unit itself is not retried: it is the unit's error).

**Data.** A task argument that is a :class:`~rltrade.features.dataset.Dataset`, or the folder
a Dataset was saved to, is loaded once on the driver and put in the Ray object store once
(``ray.put``); every task gets a reference to it, so the workers need no shared filesystem
for the data. The worker checks what it received against the driver's Dataset before it runs
the unit: the Dataset's ``fingerprint`` and :func:`dataset_digest` (sha256 of every array), a
mismatch is a :class:`~rltrade.errors.DataError`.

**Run directories.** By the units' convention the *last* argument of a task is the folder
its run directories go to (``run_fold(config, dataset, fold, seed, out_dir)``, the sweep's
units alike). With ``ship_outputs`` (the default) the worker runs the unit with a private
temporary folder in its place, then returns that folder's files as one tar archive with the
unit's result; the driver unpacks them into the real folder (each unit's run directories are
moved in with one rename each, so a crash leaves whole runs or none) and rewrites the result's
paths from the worker's folder to the driver's. So the driver writes every run directory and
the registry, and the workers need no shared filesystem for the outputs either.

**Connecting.** :func:`connect` ``(address)``: ``"local"`` starts a private local Ray instance
(on 127.0.0.1, no dashboard), any other address joins that cluster (``ray start --head`` on
the head node prints it; ``auto`` joins the cluster this machine is part of); ``None`` reads
``RAY_ADDRESS``. A Ray already initialised in this process (a test's ``ray.init(...)``) is
used as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rltrade.errors import ConfigError, DataError

__all__ = ["RAY_ADDRESS_ENV", "RayExecutor", "ShippedFolder", "connect", "dataset_digest",
           "unit_resources"]

#: the environment variable Ray (and ``rltrade sweep``) read the cluster address from
RAY_ADDRESS_ENV = "RAY_ADDRESS"


def dataset_digest(dataset: Any) -> str:
    """sha256 (hex) of a Dataset's arrays (timestamps, OHLCV, features, signals, extras: dtype,
    shape and bytes), its names, spec hash and fingerprint: what a worker checks the Dataset it
    got from the object store against.

    :param dataset: a :class:`~rltrade.features.dataset.Dataset`.
    """
    h = hashlib.sha256()
    for text in (dataset.fingerprint, dataset.spec_hash, dataset.timeframe,
                 ",".join(dataset.feature_names), ",".join(dataset.signal_names)):
        h.update(str(text).encode())
        h.update(b"\0")
    arrays = [dataset.timestamps, dataset.ohlcv, dataset.features, dataset.signals]
    arrays += [dataset.extras[k] for k in sorted(dataset.extras)]
    for arr in arrays:
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def unit_resources(config: Any) -> tuple[float, float]:
    """The CPUs and GPUs one unit of work of ``config`` reserves: one CPU (walk-forward and
    sweep units train with one torch thread, their envs stepped in the same process), and one
    GPU when ``training.device`` is ``auto`` and the Ray cluster has GPUs (else none: ``auto``
    then trains on the CPU).

    :param config: a :class:`~rltrade.config.RunConfig`.
    :return: ``(num_cpus, num_gpus)``.
    """
    import ray

    cpus = 1.0
    gpus = 0.0
    if config.training.device == "auto" and ray.is_initialized() and \
            float(ray.cluster_resources().get("GPU", 0.0)) > 0:
        gpus = 1.0
    return cpus, gpus


def connect(address: str | None = None, *, num_cpus: int | None = None) -> str:
    """Initialise Ray in this process (once).

    :param address: ``"local"`` (a private local instance on 127.0.0.1, without the dashboard),
        a cluster address (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``), or ``None`` for
        ``$RAY_ADDRESS``.
    :param num_cpus: the CPUs of a ``local`` instance (default: all).
    :return: how Ray was reached (``"already initialised"``, ``"local"`` or the address).
    :raises ConfigError: no address and no ``RAY_ADDRESS``, or Ray cannot connect.
    """
    import ray

    if ray.is_initialized():
        return "already initialised"
    address = address or os.environ.get(RAY_ADDRESS_ENV) or None
    if address is None:
        raise ConfigError(f"no Ray address: pass --ray-address ADDR (or 'local'), or set "
                          f"{RAY_ADDRESS_ENV}")
    try:
        if address == "local":
            # the local workers import rltrade as the driver does (a source checkout on
            # PYTHONPATH); a cluster's nodes have their own installation
            env = {k: os.environ[k] for k in ("PYTHONPATH",) if os.environ.get(k)}
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     log_to_driver=False, runtime_env={"env_vars": env} if env else None,
                     _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from exc
    return address


@dataclasses.dataclass(frozen=True)
class ShippedFolder:
    """A worker's output folder sent back to the driver: ``root`` (the worker's path, to
    rewrite the result's paths) and ``archive`` (its files as an uncompressed tar)."""

    root: str
    archive: bytes


_WORKER_QUIET = False


def _quiet_worker() -> None:
    global _WORKER_QUIET
    if not _WORKER_QUIET:
        from rltrade.logs import setup_logging

        setup_logging("WARNING")
        _WORKER_QUIET = True


def _pack(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name)
    return buf.getvalue()


def remote_unit(fn: Callable[..., Any], ship: bool, expected: dict[int, tuple[str, str]],
                *args: Any) -> tuple[Any, ShippedFolder | None]:
    """What a Ray task runs (on the worker): check every Dataset argument against the driver's
    (``expected``: position -> ``(fingerprint, digest)``), run ``fn(*args)`` with, when
    ``ship``, a temporary folder in place of the last argument, and return the result with
    that folder's files.

    :raises DataError: a Dataset that is not the driver's.
    """
    _quiet_worker()
    for i, (fingerprint, digest) in expected.items():
        ds = args[i]
        if getattr(ds, "fingerprint", None) != fingerprint or dataset_digest(ds) != digest:
            raise DataError(f"the Dataset this worker received (argument {i}) is not the "
                            f"driver's (fingerprint {getattr(ds, 'fingerprint', None)!r}, "
                            f"expected {fingerprint!r}): the object store or the data path "
                            "gave another Dataset")
    if not ship:
        return fn(*args), None
    with tempfile.TemporaryDirectory(prefix="rltrade-unit-") as tmp:
        result = fn(*args[:-1], Path(tmp))
        return result, ShippedFolder(str(Path(tmp)), _pack(Path(tmp)))


def merge_tree(src: Path, dst: Path) -> None:
    """Move ``src``'s entries into ``dst``: an entry ``dst`` lacks is moved with one rename
    (a whole run directory at once), a folder both have is merged, a file both have is
    replaced."""
    dst.mkdir(parents=True, exist_ok=True)
    for child in sorted(src.iterdir()):
        target = dst / child.name
        if child.is_dir() and target.is_dir():
            merge_tree(child, target)
        else:
            os.replace(child, target)


def receive(shipped: ShippedFolder, out_dir: str | Path, result: Any) -> Any:
    """On the driver: unpack a worker's folder into ``out_dir`` (through a temporary folder
    inside it, :func:`merge_tree`) and return ``result`` with every path under the worker's
    folder rewritten to ``out_dir``.

    :param shipped: what the worker sent.
    :param out_dir: the folder the unit was given.
    :param result: the unit's result (a dataclass, mapping, sequence or string).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    incoming = out / f".incoming-{uuid.uuid4().hex}"
    try:
        incoming.mkdir()
        with tarfile.open(fileobj=io.BytesIO(shipped.archive), mode="r") as tar:
            tar.extractall(incoming, filter="data")
        merge_tree(incoming, out)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    return rebase_paths(result, shipped.root, str(out))


def rebase_paths(value: Any, old: str, new: str) -> Any:
    """``value`` with every string that is ``old`` or a path under it rewritten under ``new``
    (through dataclass fields, mappings, lists and tuples)."""
    if isinstance(value, str):
        if value == old or value.startswith(old.rstrip("/") + "/"):
            return new + value[len(old):]
        return value
    if isinstance(value, Path):
        return Path(rebase_paths(str(value), old, new))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: rebase_paths(getattr(value, f.name), old, new)
                   for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    if isinstance(value, dict):
        return {k: rebase_paths(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [rebase_paths(v, old, new) for v in value]
    if isinstance(value, tuple):
        return tuple(rebase_paths(v, old, new) for v in value)
    return value


def _saved_dataset(arg: Any) -> Path | None:
    if isinstance(arg, (str, Path)):
        p = Path(arg)
        if (p / "dataset.json").is_file() and (p / "arrays.npz").is_file():
            return p
    return None


class RayExecutor:
    """Runs every task as a Ray task (see the module docstring).

    :param address: passed to :func:`connect` on the first :meth:`map` (``None``: a Ray
        already initialised, else ``$RAY_ADDRESS``).
    :param num_cpus: CPUs each task reserves.
    :param num_gpus: GPUs each task reserves.
    :param max_retries: retries of a task whose worker died.
    :param ship_outputs: run each unit in a worker folder and unpack it on the driver (the
        last task argument is the output folder); ``False``: the unit writes where it is told
        (a filesystem every node shares).
    :param local_cpus: the CPUs of an ``address="local"`` instance.
    """

    def __init__(self, address: str | None = None, *, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, max_retries: int = 3, ship_outputs: bool = True,
                 local_cpus: int | None = None) -> None:
        if num_cpus <= 0:
            raise ConfigError(f"a Ray task reserves at least some CPU, got num_cpus={num_cpus}")
        if num_gpus < 0 or max_retries < 0:
            raise ConfigError("num_gpus and max_retries cannot be negative")
        self.address = address
        self.num_cpus = float(num_cpus)
        self.num_gpus = float(num_gpus)
        self.max_retries = int(max_retries)
        self.ship_outputs = ship_outputs
        self.local_cpus = local_cpus
        # Datasets put in the object store, kept across map calls (a sweep maps once per
        # fold and batch): key -> (the Dataset, its reference, (fingerprint, digest))
        self._stored: dict[Any, tuple[Any, Any, tuple[str, str]]] = {}

    @property
    def workers(self) -> int:
        """The tasks the cluster can run at once (its CPUs over ``num_cpus``)."""
        import ray

        connect(self.address, num_cpus=self.local_cpus)
        return max(1, int(float(ray.cluster_resources().get("CPU", 1.0)) // self.num_cpus))

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run ``fn(*task)`` for every task as a Ray task; the results in task order. The
        first task that raises cancels the others and its error is re-raised."""
        if not tasks:
            return []
        import ray

        from rltrade.features.dataset import Dataset

        connect(self.address, num_cpus=self.local_cpus)
        remote = ray.remote(remote_unit).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries)
        stored = self._stored

        def put(key: Any, load: Callable[[], Any]) -> tuple[Any, tuple[str, str]]:
            if key not in stored:
                ds = load()
                stored[key] = (ds, ray.put(ds), (ds.fingerprint, dataset_digest(ds)))
            return stored[key][1], stored[key][2]

        pending: list[tuple[Any, Any]] = []
        for task in tasks:
            args = list(task)
            expected: dict[int, tuple[str, str]] = {}
            for i, arg in enumerate(args):
                if isinstance(arg, Dataset):
                    args[i], expected[i] = put(id(arg), lambda arg=arg: arg)
                elif (folder := _saved_dataset(arg)) is not None:
                    key = str(folder.resolve())
                    args[i], expected[i] = put(key, lambda key=key: Dataset.load(key))
            ship = self.ship_outputs and bool(args) and isinstance(args[-1], (str, Path))
            ref = remote.remote(fn, ship, expected, *args)
            pending.append((ref, args[-1] if ship else None))
        results = []
        try:
            for ref, out_dir in pending:
                result, shipped = ray.get(ref)
                if shipped is not None:
                    result = receive(shipped, out_dir, result)
                results.append(result)
        except BaseException:
            for ref, _ in pending:
                ray.cancel(ref)
            raise
        return results
