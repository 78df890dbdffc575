"""Hyperparameter sweeps: Optuna over a walk-forward's validation windows, the test windows
touched once, for the chosen configuration, at the end.

:func:`sweep` ``(config, space, name, n_trials)``:

* the **space** (:func:`load_space`) maps dotted config keys to distributions
  (``{type: float|int|categorical, ...}``); an unknown key, a key the sweep cannot vary
  (``data``, ``features``, ``walkforward``, ``training.seed``: the Dataset and the folds are
  fixed for the whole sweep) or an invalid range is refused, naming the key, before anything
  runs. Every bound (and every choice) is applied to the config and validated against the
  :class:`~rltrade.config.RunConfig` tree and the algorithm's hyperparameters.
* **Optuna** with a seeded TPE sampler (seed: ``seed``, default ``training.seed``; reseeded
  per batch from the number of trials so far, so a resumed sweep draws as reproducibly as an
  uninterrupted one) and a median pruner; the study lives in SQLite beside the runs
  (``runs/NAME/study.sqlite``) unless ``storage`` names another database. ``resume=True``
  continues an interrupted sweep: finished trials (complete, pruned or failed with an error)
  are kept and never run again; a trial the interruption cut short is marked failed
  (``interrupted``), its partial rows forgotten by the registry, and its parameters run again
  as a new trial.
* **Units of work**: one trial × one fold × one seed, :func:`run_validation_unit` (the
  walk-forward's :func:`~rltrade.experiments.walkforward.train_fold`, then one backtest of
  the selected checkpoint on the validation rows; the test rows are never read). Trials run
  in batches of ``parallel_trials``; a batch runs fold by fold, all its trials × seeds of one
  fold at once through the executor (local pool or :class:`~rltrade.experiments.
  ray_executor.RayExecutor`; without pruning, all its folds at once). The batch size, not
  the executor, shapes what TPE suggests, so the same command gives the same trials on a
  laptop and on a cluster.
* **Objective**: the median over folds × seeds of the selected checkpoint's annualised
  validation Sharpe ratio after costs (the run's costs; an undefined Sharpe ratio, e.g. a
  policy that never trades, counts as 0). After each fold the running median is reported to
  Optuna and the median pruner may stop the trial. A unit that raises makes its trial
  ``FAIL`` with the error recorded (user attribute ``error``); the sweep goes on.
* **Registry**: every complete or pruned trial is one row of experiment ``NAME`` in the
  trial registry, its run directory ``runs/NAME/trials/trial_<n>/`` and its returns the
  validation returns of its folds (seeds averaged per bar): N is the number of trials really
  tried and V the variance of their Sharpe ratios. The final walk-forward's own fold × seed
  rows go to experiment ``NAME_final``.
* **Final**: the best trial's configuration walks forward in ``runs/NAME/final/`` (an
  ordinary :func:`~rltrade.experiments.walkforward.walk_forward`): the only time the test
  windows are used. Its stitched out-of-sample returns are judged with DSR deflated by the
  sweep's trials and PBO over the sweep's configurations (:func:`~rltrade.experiments.
  walkforward.walkforward_statistics` with experiment ``NAME``), written to ``sweep.json``
  and ``report.html`` (:func:`write_sweep_report`).

The driver alone writes run directories (a Ray worker sends its folder back), the registry,
the study and the reports.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import numpy as np
import pandas as pd
import yaml
from loguru import logger

from rltrade.config import RunConfig
from rltrade.data.store import atomic_write_bytes, atomic_write_json
from rltrade.errors import ConfigError
from rltrade.experiments.executors import (
    Executor,
    SequentialExecutor,
    close_executor,
    make_executor,
)
from rltrade.experiments.folds import Fold
from rltrade.experiments.registry import TrialRegistry, config_hash, registry_path
from rltrade.features.dataset import Dataset
from rltrade.runs import check_run_name, utc_now

__all__ = [
    "DEFAULT_PARALLEL_TRIALS",
    "FIXED_SECTIONS",
    "Distribution",
    "SweepResult",
    "UnitResult",
    "apply_params",
    "load_space",
    "objective_value",
    "run_validation_unit",
    "sweep",
    "write_sweep_report",
]

log = logger.bind(component="train")

#: trials run together per batch (the default of ``--parallel-trials``)
DEFAULT_PARALLEL_TRIALS = 4
#: config keys a sweep cannot vary, and why
FIXED_SECTIONS = {
    "data": "the Dataset is built once for the whole sweep",
    "features": "the Dataset is built once for the whole sweep",
    "walkforward": "every trial is judged on the same folds and seeds",
    "description": "it is prose",
    "training.seed": "the seeds are walkforward.seeds",
}
_TYPES = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
          "categorical": {"choices"}}


# -- the space ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Distribution:
    """One dimension of the space: ``key`` (dotted config key) and its distribution.

    :param type: ``float``, ``int`` or ``categorical``.
    :param low: lower bound (float / int).
    :param high: upper bound, inclusive (float / int).
    :param log: sample on a log scale (``low > 0``).
    :param step: discretisation step (not with ``log``).
    :param choices: the values of a categorical.
    """

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draw this dimension's value for an Optuna ``trial``."""
        if self.type == "float":
            return trial.suggest_float(self.key, float(self.low), float(self.high),
                                       log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_categorical(self.key, list(self.choices))

    def probe_values(self) -> list[Any]:
        """The values validated before the sweep runs: both bounds, or every choice."""
        if self.type == "categorical":
            return list(self.choices)
        return [self.low, self.high]

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def _number(key: str, spec: Mapping[str, Any], name: str, kind: str) -> float | int:
    value = spec.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"space: {key}: {name} must be a number, got {value!r}")
    if kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
        raise ConfigError(f"space: {key}: {name} must be an integer for type int, got {value!r}")
    if not math.isfinite(float(value)):
        raise ConfigError(f"space: {key}: {name} must be finite, got {value!r}")
    return int(value) if kind == "int" else float(value)


def _distribution(key: str, spec: Any) -> Distribution:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"space: {key}: give a mapping like {{type: float, low: 0.1, high: "
                          f"1.0}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in _TYPES:
        raise ConfigError(f"space: {key}: type must be one of {sorted(_TYPES)}, got {kind!r}")
    unknown = sorted(set(spec) - _TYPES[kind] - {"type"})
    if unknown:
        raise ConfigError(f"space: {key}: unknown field(s) {unknown} for type {kind}; valid: "
                          f"{sorted(_TYPES[kind])}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"space: {key}: choices must be a non-empty list")
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise ConfigError(f"space: {key}: choice {c!r} is not a number, string, bool "
                                  "or null (Optuna stores only those)")
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise ConfigError(f"space: {key}: choices repeat a value")
        return Distribution(key, kind, choices=tuple(choices))
    low, high = _number(key, spec, "low", kind), _number(key, spec, "high", kind)
    log_scale = spec.get("log", False)
    if not isinstance(log_scale, bool):
        raise ConfigError(f"space: {key}: log must be true or false, got {log_scale!r}")
    if low > high:
        raise ConfigError(f"space: {key}: low {low} is above high {high}")
    if kind == "float" and low == high:
        raise ConfigError(f"space: {key}: low equals high ({low}); a fixed value belongs in "
                          "the config, not the space")
    if log_scale and low <= 0:
        raise ConfigError(f"space: {key}: log needs low > 0, got {low}")
    step = None
    if spec.get("step") is not None:
        step = _number(key, spec, "step", kind)
        if step <= 0:
            raise ConfigError(f"space: {key}: step must be positive, got {step}")
        if log_scale:
            raise ConfigError(f"space: {key}: step and log cannot be combined")
    return Distribution(key, kind, low, high, log_scale, step)


def _model_of(annotation: Any) -> Any:
    """The pydantic model class of a field's annotation (through ``X | None``), or None."""
    from pydantic import BaseModel

    candidates = [annotation, *get_args(annotation)] if get_origin(annotation) else [annotation]
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def _check_key(key: str) -> None:
    """Refuse a dotted key that does not name a field of the RunConfig tree (below a mapping
    field, such as ``agent.hyperparams``, any name is accepted here and checked by the
    probe)."""
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+",
                                                    key):
        raise ConfigError(f"space: {key!r} is not a dotted config key (section.field, e.g. "
                          "agent.hyperparams.learning_rate)")
    parts = key.split(".")
    for prefix, why in FIXED_SECTIONS.items():
        if key == prefix or key.startswith(prefix + "."):
            raise ConfigError(f"space: {key}: {prefix} cannot be swept ({why})")
    model: Any = RunConfig
    for i, part in enumerate(parts):
        fields = model.model_fields
        where = ".".join(parts[:i]) or "the config"
        if part not in fields:
            raise ConfigError(f"space: {key}: {where} has no field {part!r}; valid: "
                              f"{sorted(fields)}")
        annotation = fields[part].annotation
        sub = _model_of(annotation)
        if i == len(parts) - 1:
            if sub is not None:
                raise ConfigError(f"space: {key}: is a whole section; sweep its fields")
            return
        if sub is None:
            origin = get_origin(annotation)
            if annotation is dict or origin is dict or (
                    origin is not None and any(get_origin(a) is dict or a is dict
                                               for a in get_args(annotation))):
                return  # a mapping: its keys are free, the probe validates them
            raise ConfigError(f"space: {key}: {'.'.join(parts[:i + 1])} is a value, not a "
                              "section")
        model = sub


def apply_params(config: RunConfig, params: Mapping[str, Any]) -> RunConfig:
    """``config`` with every dotted key of ``params`` set (``{"agent.hyperparams.gamma":
    0.9}`` sets ``agent: {hyperparams: {gamma: 0.9}}``), validated again.

    :raises ConfigError: a value the config refuses (naming the key).
    """
    return config.with_dotted(params)


def load_space(source: str | Path | Mapping[str, Any],
               config: RunConfig) -> dict[str, Distribution]:
    """Read and validate a sweep space (see the module docstring).

    :param source: a YAML file, YAML text, or the mapping itself.
    :param config: the base config every trial overrides.
    :return: key -> :class:`Distribution`, in the file's order.
    :raises ConfigError: naming the key: not a field, not sweepable, a bad distribution, or a
        bound / choice the config or the algorithm refuses.
    """
    from rltrade.agents.algorithms import check_hyperparams

    if isinstance(source, Mapping):
        data: Any = dict(source)
        where = "space"
    else:
        text = str(source)
        where = "space"
        if isinstance(source, Path) or ("\n" not in text and text.endswith((".yaml", ".yml"))):
            path = Path(source)
            if not path.is_file():
                raise ConfigError(f"{path}: no such space file")
            where, text = str(path), path.read_text()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{where}: the space must be a non-empty mapping of dotted config keys "
                          "to distributions")
    space: dict[str, Distribution] = {}
    for key, spec in data.items():
        _check_key(key)
        dist = _distribution(key, spec)
        for value in dist.probe_values():
            try:
                cfg = apply_params(config, {key: value})
                check_hyperparams(cfg.agent)
            except ConfigError as exc:
                raise ConfigError(f"space: {key}: the value {value!r} is refused: {exc}") from None
        space[key] = dist
    return space


# -- the unit of work --------------------------------------------------------------------------
@dataclass
class UnitResult:
    """What one trial × fold × seed produced on its validation rows (picklable).

    :param sharpe: the selected checkpoint's annualised validation Sharpe ratio after costs
        (``None`` when undefined).
    :param timestamps: the validation bars' UTC open times (int64 ns) and ``returns`` their
        per-period returns.
    :param error: the unit's error (``Type: message``) when it failed; the rest is then empty.
    """

    fold: int
    seed: int
    run: str | None
    sharpe: float | None = None
    total_return: float | None = None
    selected_step: int | None = None
    timestamps: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    returns: np.ndarray = field(default_factory=lambda: np.empty(0))
    bars_per_year: float | None = None
    wall_seconds: float = 0.0
    error: str | None = None


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def run_validation_unit(config: RunConfig, dataset_ref: Dataset | str | Path, fold: Fold,
                        seed: int, out_dir: str | Path) -> UnitResult:
    """Train ``config`` with ``seed`` on ``fold`` and judge the selected checkpoint on the
    validation rows only (:func:`~rltrade.experiments.walkforward.train_fold`, then
    :func:`~rltrade.evaluation.judge.backtest_run` of ``best`` on the validation rows with
    their context, the run's costs). The test rows are not read. An error is returned in
    :attr:`UnitResult.error`, not raised, so one failing trial does not stop the others.

    :param config: the trial's config.
    :param dataset_ref: the sweep's Dataset, or the folder it was saved to.
    :param fold: the fold.
    :param seed: the training seed.
    :param out_dir: the trial's folder; the run goes to ``folds/fold_<k>/seed_<s>/``.
    """
    from rltrade.evaluation.judge import backtest_run
    from rltrade.experiments.registry import backtest_returns
    from rltrade.experiments.walkforward import train_fold

    t0 = time.perf_counter()
    run_path = Path(out_dir) / "folds" / f"fold_{fold.index}" / f"seed_{seed}"
    try:
        ft = train_fold(config, dataset_ref, fold, seed, out_dir)
        best = ft.trained.best_eval or ft.trained.final_eval
        result = backtest_run(ft.trained.run, ft.validation, model="best", baselines=False,
                              report=False)
        ts, returns = backtest_returns(result)
        metrics = result.metrics or {}
        bpy = (metrics.get("run") or {}).get("bars_per_year")
        return UnitResult(
            fold=fold.index, seed=int(seed), run=str(ft.trained.run.path),
            sharpe=_finite((metrics.get("performance") or {}).get("sharpe")),
            total_return=_finite(result.summary["total_return"]),
            selected_step=best.get("step"), timestamps=ts, returns=returns,
            bars_per_year=None if bpy is None else float(bpy),
            wall_seconds=time.perf_counter() - t0)
    except Exception as exc:  # the trial fails, the sweep goes on
        return UnitResult(fold=fold.index, seed=int(seed),
                          run=str(run_path) if run_path.exists() else None,
                          wall_seconds=time.perf_counter() - t0,
                          error=f"{type(exc).__name__}: {exc}")


def objective_value(results: Sequence[UnitResult]) -> float:
    """The sweep's objective: the median over ``results`` (folds × seeds) of the annualised
    validation Sharpe ratio after costs, an undefined one counted as 0."""
    if not results:
        raise ConfigError("no unit results to compute the objective of")
    return float(np.median([0.0 if r.sharpe is None else r.sharpe for r in results]))


def _validation_returns(results: Sequence[UnitResult]) -> tuple[np.ndarray, np.ndarray]:
    """The trial's validation returns over its folds: per bar the mean over seeds."""
    ts = np.concatenate([r.timestamps for r in results]).astype(np.int64)
    ret = np.concatenate([r.returns for r in results]).astype(float)
    grid, inverse = np.unique(ts, return_inverse=True)
    total = np.zeros(grid.size)
    count = np.zeros(grid.size)
    ok = np.isfinite(ret)
    np.add.at(total, inverse[ok], ret[ok])
    np.add.at(count, inverse[ok], 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return grid, np.where(count > 0, total / np.maximum(count, 1.0), np.nan)


# -- the driver --------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What :func:`sweep` produced: its folder, the trials (one row each, as in
    ``sweep.json``), the best one, the final walk-forward (``None`` when no trial completed
    or ``final=False``) and the timings."""

    path: Path
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    final: Any
    wall_seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def report(self) -> dict[str, Any]:
        return json.loads((self.path / "sweep.json").read_text())


def _redact(url: str) -> str:
    """A storage URL without its password."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()


def _trial_dir(path: Path, number: int) -> Path:
    return path / "trials" / f"trial_{number:04d}"


def _trial_row(t: Any, interrupted: set[int]) -> dict[str, Any]:
    """A frozen Optuna trial as one row of the trials table (``interrupted``: the numbers of
    the trials an interruption cut short)."""
    attrs = dict(t.user_attrs)
    return {"number": t.number, "state": t.state.name.lower(), "value": t.value,
            "params": dict(t.params), "intermediate": {str(k): v for k, v in
                                                       sorted(t.intermediate_values.items())},
            "config_hash": attrs.get("config_hash"), "error": attrs.get("error"),
            "retry_of": attrs.get("retry_of"), "interrupted": t.number in interrupted,
            "wall_seconds": attrs.get("wall_seconds"), "dir": attrs.get("dir")}


def sweep(config: RunConfig, space: str | Path | Mapping[str, Any], name: str, n_trials: int,
          runs_root: str | Path = "runs", *, workers: int | None = 1,
          executor: Executor | None = None, storage: str | None = None,
          resume: bool = False, seed: int | None = None,
          parallel_trials: int = DEFAULT_PARALLEL_TRIALS, prune: bool = True,
          registry: str | Path | None = None, dataset: Dataset | None = None,
          final: bool = True) -> SweepResult:
    """Run a sweep (see the module docstring) into ``runs_root/name/``.

    :param config: the base config, with a ``walkforward:`` section (rolling or anchored).
    :param space: the space (:func:`load_space`).
    :param name: the sweep's folder and experiment name.
    :param n_trials: finished trials wanted (complete, pruned or failed with an error).
    :param runs_root: where it goes.
    :param workers: local processes when no ``executor`` is given (1: in this process).
    :param executor: run the units with this (e.g. a Ray executor).
    :param storage: the Optuna storage URL (default SQLite ``runs_root/name/study.sqlite``).
    :param resume: continue the sweep already in ``runs_root/name``.
    :param seed: the sampler's seed (default ``training.seed``).
    :param parallel_trials: trials per batch (their units run together).
    :param prune: stop a trial early with Optuna's median pruner.
    :param registry: the trial registry file (default ``$RLTRADE_REGISTRY``, else
        ``runs_root/registry.sqlite``).
    :param dataset: the Dataset to use instead of building it from ``config.data`` (tests).
    :param final: walk the best configuration forward in ``final/`` at the end.
    :raises ConfigError: a bad space, config or name, a sweep that exists (without
        ``resume``) or does not (with it), a resume with another config or space.
    """
    import optuna
    from optuna.trial import TrialState

    from rltrade.agents.algorithms import check_hyperparams
    from rltrade.experiments.walkforward import config_dataset, fold_plan

    t0 = time.perf_counter()
    check_run_name(name)
    if n_trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {n_trials}")
    if parallel_trials < 1:
        raise ConfigError(f"--parallel-trials must be at least 1, got {parallel_trials}")
    if config.walkforward is None:
        raise ConfigError("the config has no walkforward: section (train, validation, test, "
                          "seeds): a sweep judges every trial on its validation windows; see "
                          "docs/sweep.md")
    if config.walkforward.scheme == "cpcv":
        raise ConfigError("walkforward.scheme cpcv has no validation windows to sweep on; use "
                          "rolling or anchored")
    check_hyperparams(config.agent)
    dims = load_space(space, config)
    path = Path(runs_root) / name
    if path.exists() and not resume:
        raise ConfigError(f"{path} already exists: pass --resume to continue that sweep, or "
                          "choose another --name")
    if resume and not (path / "sweep_config.json").is_file():
        raise ConfigError(f"{path} holds no sweep to resume (no sweep_config.json); run it "
                          "without --resume first")
    user_config = config
    config = config.with_overrides(training={"torch_threads": 1})
    space_dict = {k: d.to_dict() for k, d in dims.items()}
    seed = config.training.seed if seed is None else int(seed)
    setup = {"config_hash": config_hash(user_config), "space": space_dict, "seed": seed,
             "parallel_trials": parallel_trials, "prune": prune}
    storage_url = storage or f"sqlite:///{(path / 'study.sqlite').resolve()}"
    if resume:
        stored = json.loads((path / "sweep_config.json").read_text())
        for key, value in setup.items():
            if stored.get(key) != value:
                raise ConfigError(f"--resume: the sweep in {path} was started with another "
                                  f"{key.replace('_', ' ')}; resume it with the same config, "
                                  "space and options")
        if storage is None and stored.get("storage") != "default":
            raise ConfigError(f"--resume: the sweep in {path} used another Optuna storage "
                              "(not stored: its URL may hold a password); pass --storage again")
        t_data = time.perf_counter()
        ds = Dataset.load(path / "dataset") if dataset is None else dataset
    else:
        t_data = time.perf_counter()
        ds = config_dataset(config) if dataset is None else dataset
    plan = fold_plan(config, ds)
    seeds = list(config.walkforward.seeds)
    trials_reg = TrialRegistry(registry_path(registry, runs_root))
    trials_reg.connect().close()  # an unreadable registry fails now, not after the training
    if not resume:
        path.mkdir(parents=True)
        ds.save(path / "dataset")
        atomic_write_bytes(path / "config.yaml", user_config.to_yaml().encode())
        atomic_write_bytes(path / "space.yaml",
                           yaml.safe_dump(space_dict, sort_keys=False).encode())
        atomic_write_json(path / "sweep_config.json",
                          {**setup, "storage": "default" if storage is None else "given",
                           "n_trials": n_trials})
    t_data = time.perf_counter() - t_data
    _quiet_optuna()
    pruner = optuna.pruners.MedianPruner() if prune else optuna.pruners.NopPruner()
    try:
        study = optuna.create_study(storage=storage_url, study_name=name, direction="maximize",
                                    pruner=pruner, load_if_exists=resume,
                                    sampler=optuna.samplers.TPESampler(seed=seed))
    except optuna.exceptions.DuplicatedStudyError:
        raise ConfigError(f"the storage {_redact(storage_url)} already holds a study {name!r}: "
                          "pass --resume, or choose another --name") from None
    except (ValueError, ImportError, RuntimeError) as exc:
        raise ConfigError(f"cannot open the Optuna storage {_redact(storage_url)}: {exc}") \
            from None
    if resume:
        _recover_interrupted(study, trials_reg, path)
    runner = executor if executor is not None else make_executor(workers)
    try:
        ref: Dataset | Path = ds if isinstance(runner, SequentialExecutor) else path / "dataset"
        log.info("sweep {}: {} trials over {} folds x {} seeds, {} parameter(s), batches of {}",
                 name, n_trials, len(plan.folds), len(seeds), len(dims), parallel_trials)
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

        interrupted = set(study.user_attrs.get("interrupted", []))

        def n_done() -> int:
            return sum(1 for t in study.get_trials(deepcopy=False, states=finished)
                       if t.number not in interrupted)

        t_units = 0.0
        unit_seconds = 0.0
        n_run = 0
        while (done := n_done()) < n_trials:
            batch = min(parallel_trials, n_trials - done)
            study.sampler = optuna.samplers.TPESampler(
                seed=(seed * 1_000_003 + len(study.get_trials(deepcopy=False))) % 2**32)
            active: dict[int, dict[str, Any]] = {}
            for _ in range(batch):
                trial = study.ask()
                params = {k: d.suggest(trial) for k, d in dims.items()}
                tdir = _trial_dir(path, trial.number)
                trial.set_user_attr("dir", str(tdir.relative_to(path)))
                try:
                    user_cfg = apply_params(user_config, params)
                    check_hyperparams(user_cfg.agent)
                except ConfigError as exc:
                    trial.set_user_attr("error", f"ConfigError: {exc}")
                    study.tell(trial, state=TrialState.FAIL)
                    continue
                trial.set_user_attr("config_hash", config_hash(user_cfg))
                active[trial.number] = {"trial": trial, "config": apply_params(config, params),
                                        "user_config": user_cfg, "dir": tdir, "results": [],
                                        "t0": time.perf_counter(), "state": None}
            # with pruning, one fold at a time (the pruner decides between folds); without it,
            # every fold of the batch in one go (fewer, larger maps)
            stages = [[f] for f in plan.folds] if prune else [list(plan.folds)]
            for stage in stages:
                running = [n for n, a in active.items() if a["state"] is None]
                if not running:
                    break
                tasks = [(active[n]["config"], ref, fold, s, active[n]["dir"]) for n in running
                         for fold in stage for s in seeds]
                t1 = time.perf_counter()
                results = runner.map(run_validation_unit, tasks)
                t_units += time.perf_counter() - t1
                unit_seconds += sum(r.wall_seconds for r in results)
                per_trial = len(stage) * len(seeds)
                for i, n in enumerate(running):
                    a = active[n]
                    mine = results[i * per_trial:(i + 1) * per_trial]
                    for j, fold in enumerate(stage):
                        if a["state"] is not None:
                            break
                        of_fold = mine[j * len(seeds):(j + 1) * len(seeds)]
                        a["results"].extend(of_fold)
                        errors = [r for r in of_fold if r.error]
                        if errors:
                            a["state"] = "fail"
                            a["trial"].set_user_attr(
                                "error", f"fold {errors[0].fold} seed {errors[0].seed}: "
                                         f"{errors[0].error}")
                            break
                        a["trial"].report(objective_value(a["results"]), step=fold.index)
                        if prune and a["trial"].should_prune():
                            a["state"] = "pruned"
            for n, a in active.items():
                trial = a["trial"]
                trial.set_user_attr("wall_seconds", time.perf_counter() - a["t0"])
                state = a["state"] or "complete"
                value = objective_value(a["results"]) if state != "fail" else None
                atomic_write_json(a["dir"] / "trial.json",
                                  _trial_json(n, state, value, trial.params, a["results"], path))
                if state != "fail":
                    _record_trial(trials_reg, name, a, ds)
                if state == "complete":
                    study.tell(trial, value)
                elif state == "pruned":
                    study.tell(trial, state=TrialState.PRUNED)
                else:
                    study.tell(trial, state=TrialState.FAIL)
                n_run += 1
                log.info("sweep {}: trial {} {} {}", name, n, state,
                         "" if value is None else f"objective {value:.4g}")
        rows = [_trial_row(t, interrupted) for t in study.get_trials(deepcopy=False)]
        complete = [r for r in rows if r["state"] == "complete"]
        best = max(complete, key=lambda r: (r["value"], -r["number"])) if complete else None
        # driver: everything but the units and the Dataset (Optuna, registry, trial files)
        timings = {"dataset": t_data, "units": t_units, "unit_seconds": unit_seconds,
                   "trials_run": n_run, "driver": time.perf_counter() - t0 - t_units - t_data,
                   "final": 0.0, "total": 0.0}
        final_result = None
        significance: dict[str, Any] | None = None
        t_final = time.perf_counter()
        if best is not None and final:
            final_result, significance = _final(path, name, user_config, best, runner, ds,
                                                trials_reg, runs_root, registry)
        timings["final"] = time.perf_counter() - t_final
        timings["total"] = time.perf_counter() - t0
        report = {
            "format": "rltrade-sweep-v1", "name": name, "created_at": utc_now(),
            "objective": ("median over folds x seeds of the selected checkpoint's annualised "
                          "validation Sharpe ratio after costs (undefined counts as 0)"),
            "direction": "maximize", "storage": _redact(storage_url), "study": name,
            "n_trials": n_trials, "seed": seed, "parallel_trials": parallel_trials,
            "prune": prune, "space": space_dict, "folds": len(plan.folds), "seeds": seeds,
            "experiment": name, "registry": str(trials_reg.path), "trials": rows, "best": best,
            "importances": _importances(study), "final": "final" if final_result else None,
            "significance": significance, "timings": timings,
        }
        atomic_write_json(path / "sweep.json", report)
        write_sweep_report(path)
        log.info("sweep {} done in {:.1f} s: {}", name, timings["total"], path)
        return SweepResult(path, rows, best, final_result, timings["total"], timings)
    finally:
        if executor is None:
            close_executor(runner)  # the pool this sweep started


def _trial_json(number: int, state: str, value: float | None, params: dict[str, Any],
                results: list[UnitResult], path: Path) -> dict[str, Any]:
    units = []
    for r in results:
        units.append({"fold": r.fold, "seed": r.seed,
                      "run": str(Path(r.run).relative_to(path)) if r.run else None,
                      "validation_sharpe": r.sharpe, "validation_return": r.total_return,
                      "selected_step": r.selected_step, "wall_seconds": r.wall_seconds,
                      "error": r.error})
    return {"number": number, "state": state, "value": value, "params": params,
            "units": units}


def _record_trial(registry: TrialRegistry, experiment: str, active: dict[str, Any],
                  ds: Dataset) -> int:
    """One registry row for a complete or pruned trial: its folder, config hash, and its
    validation returns (seeds averaged per bar, folds in time order)."""
    results: list[UnitResult] = active["results"]
    ts, returns = _validation_returns(results)
    per_year = {r.bars_per_year for r in results if r.bars_per_year is not None}
    return registry.record(
        run_path=active["dir"], experiment=experiment,
        config_hash=config_hash(active["user_config"]), returns=returns, timestamps=ts,
        seed=None, data_fingerprint=ds.fingerprint, fold=None,
        ranges={"windows": "validation", "folds": sorted({r.fold for r in results}),
                "seeds": sorted({r.seed for r in results}), "trial": active["trial"].number},
        bars_per_year=per_year.pop() if len(per_year) == 1 else None)


def _recover_interrupted(study: Any, registry: TrialRegistry, path: Path) -> None:
    """Mark the trials an interruption cut short as failed (``interrupted``), forget any
    registry row of theirs, and queue their parameters to run again."""
    from optuna.trial import TrialState

    numbers = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        numbers.append(t.number)
        tdir = _trial_dir(path, t.number)
        stale = [row.id for row in registry.trials(path.name) if Path(row.run_path) == tdir]
        if stale:
            registry.forget(stale)
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
    if numbers:
        done = list(study.user_attrs.get("interrupted", []))
        study.set_user_attr("interrupted", sorted(set(done) | set(numbers)))
        log.info("sweep {}: trial(s) {} were interrupted; their parameters run again",
                 path.name, numbers)


def _importances(study: Any) -> dict[str, Any]:
    """Optuna's parameter importances (fANOVA, seeded) over the complete trials, or why there
    are none."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {"values": None, "skipped": f"{len(complete)} complete trial(s); importances "
                                          "need at least two"}
    try:
        values = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError) as exc:
        return {"values": None, "skipped": str(exc)}
    return {"values": {k: float(v) for k, v in values.items()}, "skipped": None,
            "method": "fANOVA over the complete trials"}


def _final(path: Path, name: str, user_config: RunConfig, best: dict[str, Any],
           runner: Executor, ds: Dataset, registry: TrialRegistry, runs_root: str | Path,
           registry_arg: str | Path | None) -> tuple[Any, dict[str, Any]]:
    """The best configuration's walk-forward in ``path/final`` (experiment ``NAME_final``),
    and its stitched returns judged against the sweep's trials (experiment ``NAME``)."""
    from rltrade.experiments.walkforward import walk_forward, walkforward_statistics

    final_dir = path / "final"
    final_experiment = f"{name}_final"
    if final_dir.exists():  # an interrupted final: run it again from scratch
        registry.forget(experiment=final_experiment)
        shutil.rmtree(final_dir)
    cfg = apply_params(user_config, best["params"])
    result = walk_forward(cfg, "final", runs_root=path, executor=runner, dataset=ds,
                          registry=registry.path, experiment=final_experiment)
    per_year = {r.bars_per_year for r in result.results if r.bars_per_year is not None}
    stats = walkforward_statistics(result.results, result.oos, list(cfg.walkforward.seeds),
                                   registry, name,
                                   bars_per_year=per_year.pop() if len(per_year) == 1 else None)
    return result, stats["significance"]


# -- the report --------------------------------------------------------------------------------
def _trials_table(report: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for r in report["trials"]:
        row: dict[str, Any] = {"trial": r["number"], "state": r["state"],
                               "objective": r["value"]}
        row.update({k: r["params"].get(k) for k in report["space"]})
        row["folds run"] = len(r["intermediate"])
        row["error"] = r["error"] or ("interrupted" if r["interrupted"] else "")
        rows.append(row)
    return pd.DataFrame(rows)


def _objective_chart(report: dict[str, Any]) -> str:
    import plotly.graph_objects as go

    from rltrade.evaluation.report import chart_html, chart_layout

    fig = go.Figure()
    for state, colour in (("complete", "#1f77b4"), ("pruned", "#ff7f0e")):
        pts = [(r["number"], r["value"] if state == "complete" else
                (list(r["intermediate"].values()) or [None])[-1])
               for r in report["trials"] if r["state"] == state]
        if pts:
            fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers",
                            name=state if state == "complete" else "pruned (last report)",
                            marker_color=colour)
    best, xs, ys = -math.inf, [], []
    for r in report["trials"]:
        if r["state"] == "complete" and r["value"] is not None:
            best = max(best, r["value"])
            xs.append(r["number"])
            ys.append(best)
    if xs:
        fig.add_scatter(x=xs, y=ys, mode="lines", line_shape="hv", name="best so far",
                        line_color="#2ca02c")
    fig.update_layout(**chart_layout("Objective over trials (median validation Sharpe)",
                                     xaxis={"title": "trial"},
                                     yaxis={"title": "objective"}))
    return chart_html(fig, "chart-objective")


def write_sweep_report(folder: str | Path) -> Path:
    """Write ``report.html`` into a sweep's folder from its ``sweep.json`` (and the final
    walk-forward's ``walkforward.json``): the trials table, the objective over trials,
    Optuna's parameter importances, and the final configuration's out-of-sample walk-forward
    with DSR deflated by the sweep's trials and PBO over its configurations; return its path.
    """
    import html

    from rltrade.evaluation.report import html_page, table_html
    from rltrade.experiments.report import fold_table, statistics_html

    folder = Path(folder)
    report = json.loads((folder / "sweep.json").read_text())
    esc = html.escape
    states = pd.Series([r["state"] for r in report["trials"]]).value_counts().to_dict()
    note = (f"Objective: {report['objective']}. {report['folds']} folds × "
            f"{len(report['seeds'])} seeds per trial, TPE seeded {report['seed']}, batches of "
            f"{report['parallel_trials']} trials, median pruner "
            f"{'on' if report['prune'] else 'off'}. Trials: "
            + ", ".join(f"{v} {k}" for k, v in sorted(states.items())) + ".")
    parts = ['<section id="trials"><h2>Trials</h2>'
             f'<p class="note">{esc(note)}</p><div class="scroll">'
             f'{table_html(_trials_table(report))}</div>'
             f'<div class="chart-box">{_objective_chart(report)}</div></section>']
    imp = report["importances"]
    parts.append('<section id="importances"><h2>Parameter importances</h2>')
    if imp.get("values"):
        frame = pd.DataFrame([{"parameter": k, "importance": v}
                              for k, v in imp["values"].items()])
        parts.append(f'<p class="note">{esc(imp.get("method") or "")}</p>{table_html(frame)}')
    else:
        parts.append(f'<p class="note">Not computed: {esc(str(imp.get("skipped")))}</p>')
    parts.append("</section>")
    parts.append('<section id="final"><h2>Final walk-forward</h2>')
    best = report.get("best")
    wf_file = folder / "final" / "walkforward.json"
    if best is None or not wf_file.is_file():
        why = "no trial completed" if best is None else "the final walk-forward was not run"
        parts.append(f'<p class="note">None: {why}.</p></section>')
    else:
        wf = json.loads(wf_file.read_text())
        params = ", ".join(f"{k} = {v}" for k, v in best["params"].items())
        stitched = pd.DataFrame([{"curve": k, "stitched return": v}
                                 for k, v in wf["stitched_total_return"].items()])
        parts.append(
            f'<p class="note">Trial {best["number"]} (objective {best["value"]:.4g}): '
            f'{esc(params)}. Walked forward once in final/ (its own report: '
            '<a href="final/report.html">final/report.html</a>): the only use of the test '
            f"windows. DSR deflated by the sweep's trials and PBO over its configurations "
            "below.</p>"
            f'{table_html(stitched, percent_columns=frozenset({"stitched return"}))}'
            f'<div class="scroll">{table_html(fold_table(wf), percent_columns=frozenset({"validation return", "test return", "max drawdown", "buy and hold", "flat"}))}'  # noqa: E501
            "</div></section>")
        sig = report.get("significance")
        if sig:
            parts.append(statistics_html({"statistics": wf["statistics"],
                                          "significance": sig}))
    nav = [("trials", "Trials"), ("importances", "Importances"), ("final", "Final")]
    if report.get("significance"):
        nav.append(("statistics", "Statistics"))
    subtitle = (f"{len(report['trials'])} trials · {len(report['space'])} parameters · "
                f"experiment {report['experiment']}")
    page = html_page(f"Sweep report: {report['name']}", subtitle, nav, "".join(parts))
    out = folder / "report.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
