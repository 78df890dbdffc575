"""The trial registry: every training run recorded once, so a Sharpe ratio can be deflated by
what was really tried.

A :class:`TrialRegistry` is one SQLite file (stdlib :mod:`sqlite3`), by default
``runs/registry.sqlite`` beside the runs (:func:`registry_path`: an explicit path, else the
``RLTRADE_REGISTRY`` environment variable, else ``<runs root>/registry.sqlite``). One row per
trial (a run directory):

``id``, ``created_at`` (UTC ISO), ``run_path``, ``experiment``, ``config_hash``
(:func:`config_hash`: seeds of one configuration share it), ``seed``, ``data_fingerprint``,
``fold`` (``NULL`` outside walk-forward), ``ranges`` (JSON: the train / evaluation / test ranges),
``sharpe`` (the **per-period** Sharpe ratio of the stored returns, :func:`~rltrade.evaluation.
significance.sharpe_stats`; ``NULL`` when undefined), ``bars_per_year`` (to annualise it),
``n_returns`` and ``returns_path``: the trial's out-of-sample per-period returns, stored next to
the run as ``oos_returns.npy`` (a structured array of ``timestamp`` int64 UTC nanoseconds and
``ret`` float64, written atomically, read with ``allow_pickle=False``). ``returns_path`` is
relative to the registry's folder when the run lies under it, so a runs folder can move whole.

Crash safety: the returns file is written (atomically) first, then the row is inserted in one
transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error). A crash at any point
leaves either the whole row or none of it; at worst an orphan ``oos_returns.npy`` that no row
references. A run is one trial: recording a run path again replaces its row, in the same
transaction. A ``schema_version`` table holds :data:`SCHEMA_VERSION`; a registry written by a
newer rltrade is refused rather than misread.

:func:`experiment_dsr` deflates a Sharpe ratio by the experiment's trials (see its docstring
for ``N`` and ``V``); :func:`experiment_pbo` is the Probability of Backtest Overfitting of its
configurations.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rltrade.data.store import atomic_write_bytes
from rltrade.errors import ConfigError, RLTradeError
from rltrade.evaluation.overfitting import (
    DEFAULT_MAX_COMBINATIONS,
    PBOResult,
    probability_of_backtest_overfitting,
)
from rltrade.evaluation.series import equity_returns, steps_index
from rltrade.evaluation.significance import (
    deflated_sharpe_ratio,
    effective_n_trials,
    sharpe_stats,
)

__all__ = [
    "REGISTRY_ENV",
    "RETURNS_DTYPE",
    "RETURNS_FILE",
    "SCHEMA_VERSION",
    "RegistryError",
    "ReturnsMatrix",
    "Trial",
    "TrialRegistry",
    "backtest_returns",
    "config_hash",
    "experiment_dsr",
    "experiment_pbo",
    "registry_path",
]

#: environment variable naming the registry file (overridden by an explicit path)
REGISTRY_ENV = "RLTRADE_REGISTRY"
#: file name of a trial's out-of-sample returns, inside its run directory
RETURNS_FILE = "oos_returns.npy"
#: the structured dtype of that file
RETURNS_DTYPE = np.dtype([("timestamp", "<i8"), ("ret", "<f8")])
#: the schema this code writes and reads
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    run_path TEXT NOT NULL,
    experiment TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    seed INTEGER,
    data_fingerprint TEXT,
    fold INTEGER,
    ranges TEXT NOT NULL,
    sharpe REAL,
    bars_per_year REAL,
    n_returns INTEGER NOT NULL,
    returns_path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trials_experiment ON trials (experiment);
CREATE INDEX IF NOT EXISTS trials_run_path ON trials (run_path);
"""
_COLUMNS = ("id", "created_at", "run_path", "experiment", "config_hash", "seed",
            "data_fingerprint", "fold", "ranges", "sharpe", "bars_per_year", "n_returns",
            "returns_path")


class RegistryError(RLTradeError):
    """The trial registry cannot be read or written (not SQLite, newer schema, missing file)."""


def registry_path(registry: str | Path | None = None, runs_root: str | Path = "runs") -> Path:
    """Where the registry lives: ``registry`` if given, else ``$RLTRADE_REGISTRY``, else
    ``<runs_root>/registry.sqlite``.

    :param registry: an explicit path.
    :param runs_root: the folder the runs live in.
    :return: the registry file's path.
    """
    if registry is not None:
        return Path(registry)
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env)
    return Path(runs_root) / "registry.sqlite"


def config_hash(config: Any) -> str:
    """Stable sha256 (hex) of a resolved run config, without its seed and description.

    The seed has its own column, so the seeds of one configuration share a hash (and
    :meth:`TrialRegistry.returns_matrix` can group by configuration); the description is prose.
    The hash is of the canonical JSON (sorted keys) of the config validated again from its
    ``to_dict()`` (so defaults left unresolved, e.g. ``RunConfig()``'s feature spec, hash like
    their resolved form) or of the mapping given.

    :param config: a ``RunConfig`` or its ``to_dict()``.
    :return: 64 hex characters.
    """
    if hasattr(config, "to_dict") and hasattr(config, "from_dict"):
        data = type(config).from_dict(config.to_dict()).to_dict()
    else:
        data = dict(config)
    data = json.loads(json.dumps(data, default=str))  # a deep, plain copy
    data.pop("description", None)
    training = data.get("training")
    if isinstance(training, dict):
        training.pop("seed", None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def backtest_returns(result: Any) -> tuple[np.ndarray, np.ndarray]:
    """A backtest's per-period returns, as the metrics define them (the first bar against the
    initial equity, :func:`~rltrade.evaluation.series.equity_returns`), with their bars' UTC
    open timestamps.

    :param result: a :class:`~rltrade.evaluation.backtest.BacktestResult`.
    :return: ``(timestamps, returns)``: int64 nanoseconds and float64, one per bar run.
    """
    steps = result.steps
    timestamps = steps_index(steps).as_unit("ns").asi8.astype(np.int64)
    returns = equity_returns(steps["equity"].to_numpy(dtype=float),
                             float(result.summary["initial_equity"]))
    return timestamps, returns


@dataclass(frozen=True)
class Trial:
    """One row of the registry (columns: module docstring); ``returns_file`` is absolute."""

    id: int
    created_at: str
    run_path: str
    experiment: str
    config_hash: str
    seed: int | None
    data_fingerprint: str | None
    fold: int | None
    ranges: dict[str, Any]
    sharpe: float | None
    bars_per_year: float | None
    n_returns: int
    returns_file: Path

    def load_returns(self) -> tuple[np.ndarray, np.ndarray]:
        """The trial's out-of-sample returns.

        :return: ``(timestamps, returns)``: int64 UTC nanoseconds and float64 per-period returns.
        :raises RegistryError: the file is missing or not a returns array.
        """
        try:
            arr = np.load(self.returns_file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RegistryError(f"trial {self.id}: cannot read its returns "
                                f"{self.returns_file}: {exc}") from exc
        if arr.dtype != RETURNS_DTYPE or arr.ndim != 1:
            raise RegistryError(f"trial {self.id}: {self.returns_file} is not a returns array "
                                f"(dtype {arr.dtype}, shape {arr.shape})")
        return arr["timestamp"].copy(), arr["ret"].copy()


@dataclass(frozen=True)
class ReturnsMatrix:
    """Per-period returns of several trials (or configurations) on common timestamps.

    :param timestamps: ``[T]`` int64 UTC nanoseconds, increasing.
    :param returns: ``[T, N]`` float64; NaN where a column has no return (``join="outer"``).
    :param labels: one per column: ``"trial <id>"`` or the configuration hash's first 12 chars.
    :param trial_ids: the trials behind each column.
    """

    timestamps: np.ndarray
    returns: np.ndarray
    labels: list[str]
    trial_ids: list[list[int]]


class TrialRegistry:
    """The SQLite registry of trials (see the module docstring).

    :param path: the registry file; created (with its folder) on the first write.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TrialRegistry({str(self.path)!r})"

    # -- connection ------------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode (transactions are explicit), schema checked.

        :raises RegistryError: the file is not an SQLite registry, or has a newer schema.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open the trial registry {self.path}: {exc}") from exc
        try:
            self._check_schema(con)
        except BaseException:
            con.close()
            raise
        return con

    def _check_schema(self, con: sqlite3.Connection) -> None:
        try:
            with _transaction(con):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        con.execute(statement)
                rows = con.execute("SELECT version FROM schema_version").fetchall()
                if not rows:
                    con.execute("INSERT INTO schema_version (version) VALUES (?)",
                                (SCHEMA_VERSION,))
                    rows = [(SCHEMA_VERSION,)]
        except sqlite3.DatabaseError as exc:
            raise RegistryError(f"{self.path} is not a trial registry (SQLite said: {exc}); "
                                "pass another --registry path") from exc
        version = int(rows[0][0])
        if version > SCHEMA_VERSION:
            raise RegistryError(f"{self.path} has registry schema {version}, newer than this "
                                f"rltrade reads ({SCHEMA_VERSION}); upgrade rltrade")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE``: committed when the block ends, rolled back
        (nothing written) when it raises."""
        con = self.connect()
        try:
            with _transaction(con):
                yield con
        finally:
            con.close()

    # -- writes ----------------------------------------------------------------------------
    def record(self, *, run_path: str | Path, experiment: str, config_hash: str,
               returns: Sequence[float] | np.ndarray,
               timestamps: Sequence[int] | np.ndarray,
               seed: int | None = None, data_fingerprint: str | None = None,
               fold: int | None = None, ranges: Mapping[str, Any] | None = None,
               bars_per_year: float | None = None) -> int:
        """Record one trial: its returns to ``run_path/oos_returns.npy``, then its row.

        A run path recorded before is replaced (one trial per run), in the same transaction.

        :param run_path: the trial's run directory (must exist).
        :param experiment: the experiment it belongs to (non-empty).
        :param config_hash: :func:`config_hash` of its config.
        :param returns: its out-of-sample per-period simple returns.
        :param timestamps: one per return: int64 UTC nanoseconds (or anything
            ``numpy.datetime64[ns]`` accepts), strictly increasing.
        :param seed: its training seed.
        :param data_fingerprint: the Dataset fingerprint it was trained on.
        :param fold: walk-forward fold index, ``None`` outside walk-forward.
        :param ranges: its train / evaluation / test ranges (JSON-serialisable).
        :param bars_per_year: to annualise the stored per-period Sharpe ratio.
        :return: the new trial's id.
        :raises ConfigError: bad inputs (lengths, order, empty experiment, missing run folder).
        """
        if not experiment or not str(experiment).strip():
            raise ConfigError("a trial needs a non-empty experiment name")
        run_dir = Path(run_path)
        if not run_dir.is_dir():
            raise ConfigError(f"run directory {run_dir} does not exist")
        r = np.asarray(returns, dtype=float).ravel()
        ts = _as_ns(timestamps)
        if ts.shape != r.shape:
            raise ConfigError(f"{r.size} returns but {ts.size} timestamps; give one per return")
        if ts.size > 1 and not np.all(np.diff(ts) > 0):
            raise ConfigError("trial timestamps must be strictly increasing (no repeats)")
        ranges_json = json.dumps(dict(ranges or {}), sort_keys=True, default=str)
        arr = np.empty(r.size, dtype=RETURNS_DTYPE)
        arr["timestamp"], arr["ret"] = ts, r
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        returns_file = run_dir / RETURNS_FILE
        atomic_write_bytes(returns_file, buf.getvalue())
        sr = sharpe_stats(r)[0]
        row = (_utc_now(), str(run_dir), str(experiment), str(config_hash),
               None if seed is None else int(seed), data_fingerprint,
               None if fold is None else int(fold), ranges_json,
               sr if math.isfinite(sr) else None,
               None if bars_per_year is None else float(bars_per_year), int(r.size),
               self._stored_path(returns_file))
        with self.transaction() as con:
            con.execute("DELETE FROM trials WHERE run_path = ?", (str(run_dir),))
            cur = con.execute(
                f"INSERT INTO trials ({', '.join(_COLUMNS[1:])}) "
                f"VALUES ({', '.join('?' * (len(_COLUMNS) - 1))})", row)
            new_id = int(cur.lastrowid or 0)
        return new_id

    def forget(self, ids: Sequence[int] | None = None, *,
               experiment: str | None = None) -> int:
        """Remove trials by id or by experiment (the run directories and their returns files
        stay: only the registry forgets them).

        :param ids: trial ids to remove.
        :param experiment: remove every trial of this experiment.
        :return: how many rows were removed.
        :raises ConfigError: neither or both selectors given.
        """
        if (ids is None) == (experiment is None):
            raise ConfigError("forget needs either trial ids or an experiment, not both")
        with self.transaction() as con:
            if experiment is not None:
                cur = con.execute("DELETE FROM trials WHERE experiment = ?", (experiment,))
            else:
                id_list = [int(i) for i in ids or []]
                cur = con.executemany("DELETE FROM trials WHERE id = ?",
                                      [(i,) for i in id_list])
            return int(cur.rowcount)

    # -- reads -----------------------------------------------------------------------------
    def trials(self, experiment: str | None = None) -> list[Trial]:
        """Trials in id order, all or of one experiment.

        :param experiment: only this experiment's trials.
        """
        if not self.path.exists():
            return []
        con = self.connect()
        try:
            sql = f"SELECT {', '.join(_COLUMNS)} FROM trials"
            args: tuple[Any, ...] = ()
            if experiment is not None:
                sql += " WHERE experiment = ?"
                args = (experiment,)
            rows = con.execute(sql + " ORDER BY id", args).fetchall()
        finally:
            con.close()
        return [self._trial(row) for row in rows]

    def experiments(self) -> list[str]:
        """The experiment names, sorted."""
        return sorted({t.experiment for t in self.trials()})

    def returns_matrix(self, experiment: str, *, by: Literal["trial", "config"] = "trial",
                       join: Literal["inner", "outer"] = "inner") -> ReturnsMatrix:
        """The experiment's out-of-sample returns as one ``[T, N]`` matrix aligned by timestamp.

        :param experiment: the experiment.
        :param by: ``"trial"``: one column per trial; ``"config"``: one per configuration hash,
            the mean over its trials (seeds) of the returns at each timestamp any of them has
            (walk-forward folds of one configuration thus stitch into one column).
        :param join: ``"inner"``: only timestamps every column has; ``"outer"``: all of them,
            NaN where a column has none.
        :return: a :class:`ReturnsMatrix`.
        :raises ConfigError: no trials, or a bad ``by`` / ``join``.
        """
        if by not in ("trial", "config"):
            raise ConfigError(f"by must be 'trial' or 'config', got {by!r}")
        if join not in ("inner", "outer"):
            raise ConfigError(f"join must be 'inner' or 'outer', got {join!r}")
        trials = self.trials(experiment)
        if not trials:
            raise ConfigError(f"no trials recorded for experiment {experiment!r} in {self.path}")
        groups: dict[str, list[Trial]] = {}
        for t in trials:
            key = f"trial {t.id}" if by == "trial" else t.config_hash[:12]
            groups.setdefault(key, []).append(t)
        series = {id(t): t.load_returns() for t in trials}
        grid = np.unique(np.concatenate([series[id(t)][0] for t in trials]))
        out = np.full((grid.size, len(groups)), np.nan)
        present = np.zeros((grid.size, len(groups)), dtype=bool)
        for j, members in enumerate(groups.values()):
            total = np.zeros(grid.size)
            count = np.zeros(grid.size)
            for t in members:
                ts, r = series[id(t)]
                pos = np.searchsorted(grid, ts)
                ok = np.isfinite(r)
                total[pos[ok]] += r[ok]
                count[pos[ok]] += 1
                present[pos, j] = True
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, j] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        keep = present.all(axis=1) if join == "inner" else present.any(axis=1)
        return ReturnsMatrix(grid[keep], out[keep], list(groups),
                             [[t.id for t in m] for m in groups.values()])

    # -- helpers ---------------------------------------------------------------------------
    def _stored_path(self, file: Path) -> str:
        base = self.path.resolve().parent
        target = file.resolve()
        try:
            return target.relative_to(base).as_posix()
        except ValueError:
            return str(target)

    def _trial(self, row: tuple[Any, ...]) -> Trial:
        d = dict(zip(_COLUMNS, row, strict=True))
        stored = Path(d["returns_path"])
        file = stored if stored.is_absolute() else self.path.resolve().parent / stored
        return Trial(id=int(d["id"]), created_at=d["created_at"], run_path=d["run_path"],
                     experiment=d["experiment"], config_hash=d["config_hash"], seed=d["seed"],
                     data_fingerprint=d["data_fingerprint"], fold=d["fold"],
                     ranges=json.loads(d["ranges"]), sharpe=d["sharpe"],
                     bars_per_year=d["bars_per_year"], n_returns=int(d["n_returns"]),
                     returns_file=file)


@contextmanager
def _transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _as_ns(timestamps: Sequence[int] | np.ndarray) -> np.ndarray:
    ts = np.asarray(timestamps)
    if ts.dtype.kind == "M":
        return ts.astype("datetime64[ns]").astype(np.int64).ravel()
    if ts.dtype.kind in "iu":
        return ts.astype(np.int64).ravel()
    if ts.size == 0:
        return np.empty(0, dtype=np.int64)
    try:
        return np.asarray(ts, dtype="datetime64[ns]").astype(np.int64).ravel()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"timestamps must be int64 UTC nanoseconds or datetimes: {exc}") from exc


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- deflation -------------------------------------------------------------------------------
def experiment_dsr(registry: TrialRegistry, experiment: str,
                   returns: Sequence[float] | np.ndarray, *,
                   n_trials: Literal["count", "effective"] | float = "count",
                   risk_free: float = 0.0) -> dict[str, Any]:
    """Deflated Sharpe Ratio of ``returns`` selected among the experiment's recorded trials.

    ``V`` is the sample variance of the trials' per-period Sharpe ratios (those that are
    defined). ``N`` is, with ``n_trials="count"``, the number of trials; with ``"effective"``,
    :func:`~rltrade.evaluation.significance.effective_n_trials` of their returns' correlation
    (the trials aligned by timestamp, inner join: correlated trials count as fewer independent
    ones); or a number given. With one trial, ``N = 1`` and DSR equals PSR(0).

    :param registry: the registry.
    :param experiment: the experiment whose trials were tried.
    :param returns: per-period returns of the selected strategy.
    :param n_trials: ``"count"``, ``"effective"`` or an explicit ``N``.
    :param risk_free: per-period risk-free return.
    :return: ``dsr``, ``psr`` (against 0), ``n_trials`` (the N used), ``n_recorded``,
        ``var_trials`` (V), ``sharpe`` (per period) and ``n_trials_method``.
    :raises ConfigError: no trials, or fewer than two defined Sharpe ratios with ``N > 1``.
    """
    trials = registry.trials(experiment)
    if not trials:
        raise ConfigError(f"no trials recorded for experiment {experiment!r} in "
                          f"{registry.path}; train with --experiment {experiment} first")
    sharpes = np.array([t.sharpe for t in trials if t.sharpe is not None], dtype=float)
    if isinstance(n_trials, str):
        if n_trials == "count":
            n = float(len(trials))
        elif n_trials == "effective":
            n = 1.0 if len(trials) < 2 else effective_n_trials(
                registry.returns_matrix(experiment, by="trial", join="inner").returns)
        else:
            raise ConfigError(f"n_trials must be 'count', 'effective' or a number, got "
                              f"{n_trials!r}")
        method = n_trials
    else:
        n, method = float(n_trials), "given"
    if n > 1 and sharpes.size < 2:
        raise ConfigError(f"experiment {experiment!r} has fewer than two trials with a defined "
                          "Sharpe ratio: no variance across trials to deflate by")
    var = float(np.var(sharpes, ddof=1)) if sharpes.size >= 2 else 0.0
    dsr = deflated_sharpe_ratio(returns, n, var_trials=var, risk_free=risk_free)
    psr = deflated_sharpe_ratio(returns, 1, risk_free=risk_free)
    return {"dsr": dsr, "psr": psr, "n_trials": n, "n_recorded": len(trials),
            "var_trials": var, "sharpe": sharpe_stats(returns, risk_free)[0],
            "n_trials_method": method}


def experiment_pbo(registry: TrialRegistry, experiment: str, n_partitions: int = 16, *,
                   by: Literal["trial", "config"] = "config",
                   max_combinations: int = DEFAULT_MAX_COMBINATIONS,
                   seed: int = 0) -> PBOResult:
    """Probability of Backtest Overfitting of the experiment's configurations (CSCV,
    :func:`~rltrade.evaluation.overfitting.probability_of_backtest_overfitting`).

    The matrix is :meth:`TrialRegistry.returns_matrix` with ``join="inner"``: by default one
    column per configuration (its seeds averaged, its folds stitched), on the periods every
    configuration has.

    :param registry: the registry.
    :param experiment: the experiment.
    :param n_partitions: ``S`` (even).
    :param by: ``"config"`` or ``"trial"`` columns.
    :param max_combinations: the most CSCV combinations computed (a seeded sample above).
    :param seed: seed of that sample.
    :return: the :class:`~rltrade.evaluation.overfitting.PBOResult`; its ``details`` add
        ``labels`` (the columns) and ``trial_ids``.
    :raises ConfigError: fewer than two configurations, or too few common periods.
    """
    matrix = registry.returns_matrix(experiment, by=by, join="inner")
    if matrix.returns.shape[1] < 2:
        raise ConfigError(f"experiment {experiment!r} has {matrix.returns.shape[1]} "
                          f"{'configuration' if by == 'config' else 'trial'}; PBO compares at "
                          "least two")
    result = probability_of_backtest_overfitting(matrix.returns, n_partitions,
                                                 max_combinations=max_combinations, seed=seed)
    result.details.update(labels=matrix.labels, trial_ids=matrix.trial_ids)
    return result
