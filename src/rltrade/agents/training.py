"""Training runs: one :class:`~rltrade.config.RunConfig` in, a complete run directory out.

:func:`train` loads and validates the bars, builds the Dataset, splits it by time (train /
evaluation, and an optional backtest range that must not overlap training unless allowed),
fits the normalizer on the training slice only, trains the configured algorithm on a
:class:`~rltrade.envs.VecTradingEnv`, evaluates on the held-out slice during training (the best
model is kept), checkpoints crash-safely, and writes the model, metadata and manifest.
:func:`resume` continues a run from its newest checkpoint after a crash.

Lifecycle: :func:`train` checks the run name, the hyperparameters, the data and the model
*before* the run directory exists, so a run that cannot start leaves nothing behind; the run
directory is then created holding its training lock (:meth:`rltrade.runs.Run.acquire_lock`), which
:func:`resume` takes too: one process trains a run at a time. A run that fails after its
directory exists is marked ``failed``; ``train(..., overwrite_failed=True)`` moves it aside and
reuses the name.

Step counts (:func:`step_plan`): on-policy algorithms (PPO, A2C, recurrent PPO) collect whole
rollouts of ``n_steps × n_envs`` steps (A3C: ``n_steps × n_workers``; off-policy: steps of
``n_envs``), so a run trains ``total_steps`` rounded up to a whole rollout, and evaluates and
checkpoints every ``eval_freq`` / ``checkpoint_freq`` rounded to the nearest whole number of
rollouts (at least one). The rounding is logged, printed by ``rltrade config validate`` and
recorded in ``metadata.json`` (``rl.step_plan``: asked and actual). Checkpoints of on-policy runs
are taken between rollouts, so a resumed run makes exactly the same number of updates and steps
as one that was never interrupted.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from loguru import logger
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from rltrade.agents.algorithms import (
    apply_schedules,
    check_hyperparams,
    load_into,
    make_agent,
    save_model,
)
from rltrade.agents.baselines import BuyAndHold
from rltrade.config import RunConfig
from rltrade.data.loaders import load_bars
from rltrade.data.timeframes import to_utc
from rltrade.envs import TradingEnv, VecTradingEnv
from rltrade.envs.config import EnvConfig
from rltrade.errors import ConfigError, DataError, StoreError
from rltrade.evaluation.backtest import BacktestResult, run_backtest
from rltrade.evaluation.ranges import overlaps, range_text, traded_range, with_context
from rltrade.features.dataset import Dataset, build_dataset
from rltrade.features.normalize import Normalizer
from rltrade.logs import hold_run_logs, release_deferred_logs, run_log_files
from rltrade.runs import Run, machine_info, package_versions, utc_now

__all__ = ["PreparedData", "StepPlan", "TrainResult", "buy_and_hold_return", "evaluate",
           "evaluation_backtest", "evaluation_summary", "planned_steps", "prepare_data",
           "resume", "step_plan", "train"]

log = logger.bind(component="train")
dlog = logger.bind(component="data")
_ON_POLICY = ("ppo", "a2c", "recurrent_ppo", "a3c")


# -- data ---------------------------------------------------------------------------------
@dataclass
class PreparedData:
    """The Dataset of a run and its slices by time."""

    dataset: Dataset
    train: Dataset
    eval: Dataset
    backtest: Dataset | None
    normalizer: Normalizer
    overlap: bool = False
    #: the backtest range as asked for (``start``, ``end``, ``allow_overlap``): what a resumed
    #: run asks for again
    backtest_request: dict[str, Any] = field(default_factory=dict)


def _range(ds: Dataset) -> dict[str, Any]:
    if len(ds) == 0:
        return {"start": None, "end": None, "bars": 0}
    idx = ds.index
    return {"start": idx[0].isoformat(), "end": idx[-1].isoformat(), "bars": len(ds)}


def prepare_data(config: RunConfig, *, backtest_start: str | None = None,
                 backtest_end: str | None = None, allow_overlap: bool = False) -> PreparedData:
    """Bars -> Dataset -> train / eval slices (and the backtest range); the normalizer is fitted
    on the training slice only.

    The training range is ``config.data`` (``start`` .. ``end``), split by time into the training
    and evaluation slices. A backtest range (arguments, else ``config.backtest``) may lie outside
    it: the bars of both are loaded and featurised together, and the backtest slice gets the
    ``window - 1`` bars before its start as context (observed, never traded).

    :raises ConfigError: a backtest range that overlaps the training slice, unless
        ``allow_overlap`` (then ``overlap`` is set and the run is marked).
    """
    dc = config.data
    bt = config.backtest
    bs = backtest_start if backtest_start is not None else (bt.start if bt else None)
    be = backtest_end if backtest_end is not None else (bt.end if bt else None)
    if be is not None and bs is None:
        raise ConfigError("a backtest range needs a start (--backtest-start)")
    lo, hi = dc.start, dc.end
    if bs is not None:
        lo = None if lo is None else min(to_utc(lo), to_utc(bs)).isoformat()
        hi = None if (hi is None or be is None) else max(to_utc(hi), to_utc(be)).isoformat()
    bars = load_bars(dc.source, timeframe=dc.timeframe, start=lo, end=hi, policy=dc.policy,
                     symbol=dc.symbol)
    dlog.info("loaded {} bars of {} ({} {})", len(bars), dc.source, bars.attrs.get("symbol"),
              bars.attrs.get("timeframe"))
    full = build_dataset(bars, config.feature_spec, timeframe=dc.timeframe, symbol=dc.symbol)
    dlog.info("dataset: {} rows x {} features + {} signal columns (warm-up {} dropped), spec {}",
              len(full), len(full.feature_names), len(full.signal_names), full.warmup_dropped,
              full.spec_hash[:12])
    dataset = full.between(dc.start, dc.end) if bs is not None else full
    train_ds, eval_ds = _split(dataset, config)
    backtest = None
    overlap = False
    if bs is not None:
        window = config.env.window
        backtest = with_context(full, bs, be, window, what=f"{dc.source} (backtest range)")
        traded = traded_range(backtest, window)
        trained = (train_ds.timestamps[0], train_ds.timestamps[-1])
        overlap = overlaps(traded, trained)
        if overlap and not allow_overlap:
            raise ConfigError(
                f"the backtest range ({range_text(traded)}) overlaps the training slice "
                f"({range_text(trained)}): move --backtest-start after the training slice "
                f"or set data.end, or pass --allow-overlap (the run is then marked)"
            )
    # fitted on the training slice only; fit() also warns about features that reach the agent
    # constant or clipped
    normalizer = Normalizer.for_dataset(train_ds).fit(train_ds)
    dlog.info("train {} | eval {} | backtest {}", _range(train_ds), _range(eval_ds),
              _range(backtest) if backtest is not None else None)
    request = {"start": bs, "end": be, "allow_overlap": allow_overlap} if bs is not None else {}
    return PreparedData(dataset, train_ds, eval_ds, backtest, normalizer, overlap, request)


def _split(ds: Dataset, config: RunConfig) -> tuple[Dataset, Dataset]:
    need = config.env.window + 2
    if len(ds) < 2 * need:
        raise DataError(f"{len(ds)} rows are too few to train and evaluate with a window of "
                        f"{config.env.window}: load more data")
    train_ds, eval_ds = ds.split(config.split.train)
    if len(train_ds) < need or len(eval_ds) < need:
        raise DataError(f"split {config.split.train}: train {len(train_ds)} / eval "
                        f"{len(eval_ds)} rows; each needs at least {need}")
    return train_ds, eval_ds


# -- evaluation -----------------------------------------------------------------------------
def evaluate(model: Any, dataset: Dataset, env_config: EnvConfig, normalizer: Normalizer,
             deterministic: bool = True, *, bars_per_year: float | None = None,
             equity_floor: bool = False) -> dict[str, Any]:
    """One deterministic pass of ``model`` over ``dataset``: :func:`~rltrade.evaluation.
    run_backtest` (no files written) and its :func:`~rltrade.evaluation.compute_metrics`, so an
    evaluation reads exactly like a backtest of the same bars.

    :param model: anything with SB3's ``predict`` (recurrent policies get their state and
        ``episode_start``).
    :param dataset: the slice to evaluate on (its first ``window - 1`` rows are context).
    :param env_config: the run's env config.
    :param normalizer: the normalizer fitted on the training slice.
    :param deterministic: passed to ``predict``.
    :param bars_per_year: annualisation override (``evaluation.bars_per_year``).
    :param equity_floor: stop at ``env.equity_floor`` (``evaluation.equity_floor``).
    :returns: ``total_return``, ``final_equity``, ``total_reward``, ``trades``,
        ``max_drawdown`` (a negative fraction), ``sharpe`` (annualised, ``None`` when
        undefined), ``bars`` (bars run), ``bars_requested``, ``stopped_early``, ``stop_reason``,
        ``bankrupt``, ``buy_and_hold_return`` (the backtest's benchmark over the same bars) and
        ``bars_per_year``.
    """
    return evaluation_summary(evaluation_backtest(model, dataset, env_config, normalizer,
                                                  deterministic, bars_per_year=bars_per_year,
                                                  equity_floor=equity_floor))


def evaluation_backtest(model: Any, dataset: Dataset, env_config: EnvConfig,
                        normalizer: Normalizer, deterministic: bool = True, *,
                        bars_per_year: float | None = None,
                        equity_floor: bool = False) -> BacktestResult:
    """The backtest behind :func:`evaluate` (same parameters), whole: its steps give the
    evaluation's per-period returns (what a run records as its trial)."""
    return run_backtest(model, dataset, env_config, normalizer=normalizer,
                        deterministic=deterministic, bars_per_year=bars_per_year,
                        equity_floor=equity_floor, name="evaluation")


def evaluation_summary(result: BacktestResult) -> dict[str, Any]:
    """The numbers of a backtest that training records per evaluation (see :func:`evaluate`)."""
    s = result.summary
    m = result.metrics or {}
    perf = m.get("performance") or {}
    bench = m.get("benchmark") or {}
    return {
        "total_return": s["total_return"],
        "final_equity": s["final_equity"],
        "total_reward": float(result.steps["reward"].sum()),
        "trades": s["n_trades"],
        "max_drawdown": perf.get("max_drawdown"),
        "sharpe": perf.get("sharpe"),
        "bars": s["bars_run"],
        "bars_requested": s["bars_requested"],
        "stopped_early": s["stopped_early"],
        "stop_reason": s["stop_reason"],
        "bankrupt": s["bankrupt"],
        "buy_and_hold_return": bench.get("total_return"),
        "bars_per_year": (m.get("run") or {}).get("bars_per_year"),
    }


def buy_and_hold_return(dataset: Dataset, env_config: EnvConfig) -> float:
    """Buy-and-hold over the bars an evaluation of ``dataset`` trades: the ``buy_and_hold``
    baseline through :func:`~rltrade.evaluation.run_backtest` (1x equity, the run's costs), the
    same number as an evaluation's ``buy_and_hold_return``."""
    result = run_backtest(BuyAndHold(), dataset, env_config, benchmark=False, metrics=False)
    return float(result.summary["total_return"])


# -- the callback -------------------------------------------------------------------------
class _RunCallback(BaseCallback):
    """Checkpoints, evaluation with best-model keeping, progress, per-run state."""

    def __init__(self, trainer: _Trainer) -> None:
        super().__init__()
        self.trainer = trainer

    def _on_training_start(self) -> None:
        self.trainer.update_costs(self.model)
        self.trainer.update_schedules(self.model)

    def _on_rollout_start(self) -> None:
        # on-policy: between rollouts the weights match the step count exactly
        if self.trainer.on_policy:
            self.trainer.maybe_checkpoint(self.model)
            self.trainer.maybe_evaluate(self.model)
            self.trainer.update_costs(self.model)
            self.trainer.update_schedules(self.model)

    def _on_step(self) -> bool:
        tr = self.trainer
        if not tr.on_policy:
            tr.maybe_checkpoint(self.model)
            tr.maybe_evaluate(self.model)
            tr.update_costs(self.model)
        tr.progress_update(self.model.num_timesteps)
        return tr.early_stop is None


@dataclass
class TrainResult:
    """What :func:`train` / :func:`resume` produced.

    ``steps`` counts every step of the model; ``wall_seconds`` and ``steps_per_second`` are
    this session's (the process that returned this), over the ``session_steps`` it made from
    step ``resumed_from`` on; ``total_wall_seconds`` adds the earlier sessions' training time
    (up to the checkpoint this one resumed from).
    """

    run: Run
    model: BaseAlgorithm
    steps: int
    wall_seconds: float
    steps_per_second: float
    best_eval: dict[str, Any] | None
    final_eval: dict[str, Any]
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    data: PreparedData | None = None
    resumed_from: int = 0
    session_steps: int = 0
    total_wall_seconds: float = 0.0

    def describe(self) -> str:
        """One line: steps, time and speed of this session, and the totals after a resume."""
        head = (f"run {self.run.path}: {self.session_steps:,} steps in {self.wall_seconds:.1f} s "
                f"({self.steps_per_second:,.0f} steps/s)")
        if not self.resumed_from:
            return head
        return (f"{head} this session, resumed at step {self.resumed_from:,}; {self.steps:,} "
                f"steps in all, {self.total_wall_seconds:.1f} s of training over all sessions")


class _Trainer:
    def __init__(self, run: Run, config: RunConfig, data: PreparedData, progress: bool,
                 prior_wall: float = 0.0) -> None:
        self.run = run
        self.config = config
        self.data = data
        self.on_policy = config.agent.algorithm in _ON_POLICY
        self.plan = step_plan(config)
        self.planned = self.plan.total_steps
        self.checkpoint_freq = self.plan.checkpoint_freq
        self.eval_freq = self.plan.eval_freq
        self.next_checkpoint: float = self.checkpoint_freq or math.inf
        self.next_eval: float = self.eval_freq or math.inf
        #: training seconds of the earlier sessions, up to the checkpoint this one resumed from
        self.prior_wall = prior_wall
        state = run.state
        self.evaluations: list[dict[str, Any]] = list(state.get("evaluations", []))
        self.best = state.get("best_eval")
        #: set when ``training.early_stop_patience`` stops the run: step, patience, best step
        self.early_stop: dict[str, Any] | None = None
        #: the cost multiplier last given to the training envs (:meth:`update_costs`)
        self.cost_factor = train_cost_factor(config, 0, self.planned)
        self.show_progress = progress
        self._progress: Any = None
        #: the latest evaluation's backtest (the final one records the run as a trial)
        self.last_backtest: BacktestResult | None = None
        self._task: Any = None
        self._t0 = time.perf_counter()
        self._start_steps = 0

    def schedule_after(self, done: int) -> None:
        """The next checkpoint and evaluation after ``done`` steps (a resumed run)."""
        if self.checkpoint_freq:
            self.next_checkpoint = (done // self.checkpoint_freq + 1) * self.checkpoint_freq
        if self.eval_freq:
            self.next_eval = (done // self.eval_freq + 1) * self.eval_freq

    def wall_so_far(self) -> float:
        """Training seconds of the run up to now: earlier sessions plus this one."""
        return self.prior_wall + (time.perf_counter() - self._t0)

    # checkpoints --------------------------------------------------------------------------
    def maybe_checkpoint(self, model: BaseAlgorithm) -> None:
        n = model.num_timesteps
        if n < self.next_checkpoint or n >= self.planned:
            return
        while self.next_checkpoint <= n:
            self.next_checkpoint += self.checkpoint_freq
        self.checkpoint(model)

    def checkpoint(self, model: BaseAlgorithm) -> Path:
        n = model.num_timesteps
        folder = self.run.path / "checkpoints" / f"step_{n:012d}"
        if folder.exists():
            shutil.rmtree(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        wall = self.wall_so_far()
        save_model(model, tmp, evaluations=len(self.evaluations), wall_seconds=wall)
        os.replace(tmp, folder)
        self.run.write_state(status="running", steps_done=n, last_checkpoint=folder.name,
                             evaluations=self.evaluations, best_eval=self.best,
                             wall_seconds=wall)
        log.info("checkpoint at step {} -> {}", n, folder.name)
        for old in self.run.checkpoints()[: -self.config.training.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    # evaluation ---------------------------------------------------------------------------
    def maybe_evaluate(self, model: BaseAlgorithm) -> None:
        n = model.num_timesteps
        if n < self.next_eval or n >= self.planned:
            return
        while self.next_eval <= n:
            self.next_eval += self.eval_freq
        self.evaluate(model)
        self._check_early_stop(n)  # periodic evaluations only, never the final one

    def evaluate(self, model: BaseAlgorithm) -> dict[str, Any]:
        ev = self.config.evaluation
        backtest = evaluation_backtest(model, self.data.eval, self.config.env,
                                       self.data.normalizer, bars_per_year=ev.bars_per_year,
                                       equity_floor=ev.equity_floor)
        self.last_backtest = backtest
        result = evaluation_summary(backtest)
        result["step"] = int(model.num_timesteps)
        self.evaluations.append(result)
        if self.best is None or result["total_return"] > self.best["total_return"]:
            self.best = result
            save_model(model, self.run.path / "best", eval=result)
        log.info("eval at step {}: return {:+.2%}, reward {:.4f}, trades {}, best {:+.2%}",
                 result["step"], result["total_return"], result["total_reward"],
                 result["trades"], self.best["total_return"])
        if self.logger_ok(model):
            model.logger.record("eval/total_return", result["total_return"])
            model.logger.record("eval/total_reward", result["total_reward"])
        self._eval_text = f"{result['total_return']:+.2%}"
        return result

    def _check_early_stop(self, step: int) -> None:
        """``training.early_stop_patience``: stop once that many evaluations in a row have not
        improved on the best validation return (the first best counts: ties do not improve)."""
        patience = self.config.training.early_stop_patience
        if patience is None or self.early_stop is not None or not self.evaluations:
            return
        returns = [e["total_return"] for e in self.evaluations]
        best_at = returns.index(max(returns))
        since = len(returns) - 1 - best_at
        if since >= patience:
            self.early_stop = {"step": int(step), "patience": patience,
                               "best_step": self.evaluations[best_at].get("step"),
                               "evaluations_without_improvement": since}
            log.info("early stop at step {}: the validation return has not improved for {} "
                     "evaluations (best at step {})", step, since,
                     self.early_stop["best_step"])

    def update_schedules(self, model: BaseAlgorithm) -> None:
        """The scheduled hyperparameters training sets itself (``ent_coef``) for this step."""
        apply_schedules(model, 1.0 - min(1.0, model.num_timesteps / max(1, self.planned)))

    def update_costs(self, model: BaseAlgorithm) -> None:
        """Give the training envs the cost multiplier of this step (``training.cost_scale``
        and ``cost_curriculum``); only when it moved by at least 0.5 % of the real costs."""
        factor = train_cost_factor(self.config, int(model.num_timesteps), self.planned)
        final = self.config.training.cost_scale
        if factor == self.cost_factor or (abs(factor - self.cost_factor) < 0.005
                                          and factor != final):
            return
        env = model.get_env()
        if env is not None:
            set_train_cost_scale(env, factor)
            self.cost_factor = factor

    @staticmethod
    def logger_ok(model: BaseAlgorithm) -> bool:
        return getattr(model, "_logger", None) is not None

    # progress -----------------------------------------------------------------------------
    def progress_start(self, done: int) -> None:
        self._start_steps = done
        self._t0 = time.perf_counter()
        self._eval_text = "-"
        if not self.show_progress:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} steps/s"), TextColumn("eval {task.fields[eval]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=self.planned, completed=done,
                                             rate="-", eval="-")
        self._last_update = 0.0

    def progress_update(self, n: int) -> None:
        if self._progress is None:
            return
        now = time.perf_counter()
        if now - self._last_update < 0.25 and n < self.planned:
            return
        self._last_update = now
        rate = (n - self._start_steps) / max(now - self._t0, 1e-9)
        self._progress.update(self._task, completed=n, rate=f"{rate:,.0f}", eval=self._eval_text)

    def progress_stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@dataclass(frozen=True)
class StepPlan:
    """The step counts a run makes, from the ones its config asks for.

    :param unit: steps between two points where the algorithm can stop, evaluate or
        checkpoint (a rollout: ``n_steps × n_envs`` on-policy, ``n_steps × n_workers`` for A3C;
        ``n_envs`` off-policy).
    :param unit_text: the unit in words (``"rollouts of 64 steps x 2 envs"``).
    :param asked: ``total_steps``, ``eval_freq``, ``checkpoint_freq`` as configured.
    :param actual: the same, rounded: ``total_steps`` up to whole units, the frequencies to the
        nearest whole number of units (at least one; 0 stays 0: only at the end).
    """

    unit: int
    unit_text: str
    asked: dict[str, int]
    actual: dict[str, int]

    @property
    def total_steps(self) -> int:
        return self.actual["total_steps"]

    @property
    def eval_freq(self) -> int:
        return self.actual["eval_freq"]

    @property
    def checkpoint_freq(self) -> int:
        return self.actual["checkpoint_freq"]

    def notes(self) -> list[str]:
        """One sentence per rounded count (none when the config's counts are used as asked)."""
        return [f"training.{key} {self.asked[key]:,} becomes {self.actual[key]:,}: the run "
                f"steps in {self.unit_text} ({self.unit:,} steps)"
                for key in self.asked if self.asked[key] != self.actual[key]]

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "unit_text": self.unit_text, "asked": dict(self.asked),
                "actual": dict(self.actual)}


def step_plan(config: RunConfig) -> StepPlan:
    """How many steps a run makes, and when it evaluates and checkpoints (see :class:`StepPlan`).

    A3C's ``learn`` stops exactly at the budget it is given; its callbacks come every
    ``n_steps × n_workers`` steps.
    """
    tc = config.training
    hp = config.agent.resolved_hyperparams
    algo = config.agent.algorithm
    if algo == "a3c":  # a3c: rollouts of n_steps by each of n_workers
        n, k = int(hp["n_steps"]), int(hp["n_workers"])
        unit, text = n * k, f"rollouts of {n:,} steps x {k} worker{'s' * (k != 1)}"
    elif algo in _ON_POLICY:
        n = int(hp["n_steps"])
        unit = n * tc.n_envs
        text = f"rollouts of {n:,} steps x {tc.n_envs} env{'s' * (tc.n_envs != 1)}"
    else:
        unit, text = tc.n_envs, f"steps of all {tc.n_envs} envs at once"

    def nearest(freq: int) -> int:
        return 0 if freq == 0 else max(1, math.floor(freq / unit + 0.5)) * unit

    asked = {"total_steps": tc.total_steps, "eval_freq": tc.eval_freq,
             "checkpoint_freq": tc.checkpoint_freq}
    actual = {"total_steps": math.ceil(tc.total_steps / unit) * unit,
              "eval_freq": nearest(tc.eval_freq),
              "checkpoint_freq": nearest(tc.checkpoint_freq)}
    return StepPlan(unit, text, asked, actual)


def planned_steps(config: RunConfig) -> int:
    """The steps a run will make: ``total_steps`` rounded up to whole rollouts (on-policy) or
    to a multiple of ``n_envs`` (off-policy); for A3C to a multiple of ``n_steps × n_workers``
    (see :func:`step_plan`)."""
    return step_plan(config).total_steps


# -- env and model --------------------------------------------------------------------------
def train_cost_factor(config: RunConfig, step: int, planned: int) -> float:
    """The multiplier of the real costs the training envs use at ``step`` of ``planned``:
    ``training.cost_scale`` × the ``cost_curriculum``'s ramp (1 without either)."""
    tc = config.training
    ramp = tc.cost_curriculum.factor(step, planned) if tc.cost_curriculum else 1.0
    return tc.cost_scale * ramp


def set_train_cost_scale(env: VecEnv, scale: float) -> None:
    """The engine costs × ``scale`` in every env of a training ``VecEnv`` (native or
    ``DummyVecEnv`` of :class:`TradingEnv`)."""
    if isinstance(env, VecTradingEnv):
        env.set_cost_scale(scale)
    else:
        env.env_method("set_cost_scale", scale)


def make_train_env(config: RunConfig, data: PreparedData) -> VecEnv:
    """The training ``VecEnv``: native :class:`VecTradingEnv` or SB3's ``DummyVecEnv``, its
    costs × :func:`train_cost_factor` at step 0 (the evaluation envs keep the real costs)."""
    tc = config.training
    env_config = config.env.model_copy(update={"mode": "train"})
    if tc.vec_env == "native":
        venv: VecEnv = VecTradingEnv(data.train, n_envs=tc.n_envs, config=env_config,
                                     normalizer=data.normalizer, seed=tc.seed)
    else:
        fns = [lambda: TradingEnv(data.train, env_config, normalizer=data.normalizer)
               for _ in range(tc.n_envs)]
        venv = DummyVecEnv(fns)
        venv.seed(tc.seed)
    factor = train_cost_factor(config, 0, planned_steps(config))
    if factor != 1.0:
        set_train_cost_scale(venv, factor)
    return venv


def _set_threads(config: RunConfig) -> None:
    if config.training.torch_threads:
        torch.set_num_threads(config.training.torch_threads)


def _network_flops(model: BaseAlgorithm) -> int:
    """Multiply-adds × 2 of one forward pass of the policy (linear, conv and LSTM layers)."""
    total = 0
    for module in model.policy.modules():
        if isinstance(module, torch.nn.Linear):
            total += 2 * module.in_features * module.out_features
        elif isinstance(module, torch.nn.LSTM):
            total += 2 * 4 * module.hidden_size * (module.input_size + module.hidden_size)
    return total


def approx_training_flops(model: BaseAlgorithm, config: RunConfig, steps: int) -> float:
    """Approximate training FLOPs: one forward per env step, plus forward + backward (×3) per
    sample per epoch (on-policy) or per gradient step batch (off-policy)."""
    fwd = _network_flops(model)
    hp = config.agent.resolved_hyperparams
    if config.agent.algorithm in _ON_POLICY:
        epochs = hp.get("n_epochs", 1)
        return float(fwd * steps * (1 + 3 * epochs))
    grad_steps = steps / max(1, hp.get("train_freq", 1)) * hp.get("gradient_steps", 1)
    return float(fwd * steps + 3 * fwd * grad_steps * hp.get("batch_size", 1))


# -- metadata -----------------------------------------------------------------------------
def _metadata(run: Run, config: RunConfig, data: PreparedData, model: BaseAlgorithm,
              mode: str) -> dict[str, Any]:
    ds = data.dataset
    env = config.env
    eng = env.engine
    hp = config.agent.resolved_hyperparams
    obs_space = model.observation_space
    obs_shape = ({k: list(v.shape) for k, v in obs_space.spaces.items()}
                 if hasattr(obs_space, "spaces") else list(obs_space.shape))
    act = model.action_space
    return {
        "name": run.name,
        "machine": machine_info(),
        "description": config.description,
        "created_at": utc_now(),
        "run_mode": mode,
        "training": {
            "range": _range(data.train),
            "eval_range": _range(data.eval),
            "backtest_range": _range(data.backtest) if data.backtest is not None else None,
            "backtest_request": data.backtest_request or None,
            "overlaps_backtest": data.overlap,
            "split": {"train": config.split.train, "eval": config.split.eval},
            "dataset_range": _range(ds),
        },
        "rl": {
            "algorithm": config.agent.algorithm,
            "gamma": hp.get("gamma"),
            "learning_rate": hp.get("learning_rate"),
            "network": config.agent.policy.model_dump(mode="json"),
            "policy_class": type(model.policy).__name__,
            "total_steps": config.training.total_steps,
            "planned_steps": planned_steps(config),
            "step_plan": step_plan(config).to_dict(),
            "seed": config.training.seed,
            "n_envs": config.training.n_envs,
            "parameters": hp,
            "trainable_parameters": int(sum(p.numel() for p in model.policy.parameters()
                                            if p.requires_grad)),
        },
        "env_spec": {
            "observation_shape": obs_shape,
            "action_space": repr(act),
            "action_shape": list(act.shape) if act.shape else [],
            "n_actions": int(getattr(act, "n", 0)) or None,
            "n_market": len(ds.feature_names) + len(ds.signal_names),
            "window": env.window,
            "layout": env.layout,
            "action_scheme": env.action_scheme,
        },
        "environment": {
            "initial_cash": eng.initial_cash,
            "leverage": eng.leverage,
            "engine_mode": eng.mode,
            "fill": eng.fill,
            "dead_zone": eng.dead_zone,
            "fees": {"maker": eng.costs.maker_fee, "taker": eng.costs.taker_fee},
            "spread_bps": eng.costs.spread_bps,
            "slippage": {"model": eng.costs.slippage, "bps": eng.costs.slippage_bps},
            "stops": {"min_stop_pct": env.min_stop_pct, "max_stop_pct": env.max_stop_pct,
                      "stop_atr": env.stop_atr},
            "reward": env.reward,
            "reward_weights": env.weights,
            "reward_scale": env.reward_scale,
            "equity_floor": env.equity_floor,
            "risk_manager": env.risk is not None,
        },
        "data": {
            "source": config.data.source,
            "symbol": ds.symbol,
            "timeframe": ds.timeframe,
            "fingerprint": ds.fingerprint,
            "rows": len(ds),
            "warmup_dropped": ds.warmup_dropped,
        },
        "features": {
            "spec": config.features,
            "spec_hash": ds.spec_hash,
            "names": ds.feature_names,
            "signal_names": ds.signal_names,
            "strategy_order": ds.strategy_names,
            "normalization": config.feature_spec.normalization,
        },
        "versions": package_versions(),
        "backtests": [],
    }


# -- public entry points ----------------------------------------------------------------------
def train(config: RunConfig, name: str, *, runs_root: str | Path = "runs",
          backtest_start: str | None = None, backtest_end: str | None = None,
          allow_overlap: bool = False, progress: bool = False,
          overwrite_failed: bool = False, data: PreparedData | None = None,
          experiment: str | None = None, registry: str | Path | None = None,
          record_trial: bool = True) -> TrainResult:
    """Train ``config`` into a new run directory ``runs_root/name`` (never overwritten).

    Everything that can be checked is checked before the directory exists (the name, the
    hyperparameters, the data and its split, the backtest range, the model): a run that cannot
    start leaves nothing behind. The directory is created holding the run's training lock,
    released when this returns.

    :param backtest_start: with ``backtest_end``, an out-of-sample range kept out of training
        (see :func:`prepare_data`); the CLI backtests it after training.
    :param allow_overlap: accept a backtest range that overlaps training (marked in metadata).
    :param progress: show a progress bar (steps/s, latest evaluation return).
    :param overwrite_failed: when a failed run holds the name, move it aside to
        ``<name>.failed-<UTC time>`` and train under the name again (see
        :meth:`rltrade.runs.Run.create`).
    :param data: an already prepared split to train on instead of loading ``config.data``
        (:func:`prepare_data`): a walk-forward fold's training and validation rows of a Dataset
        built once (:func:`rltrade.experiments.run_fold`); its ``eval`` slice is what training
        evaluates and selects the best model on, its normalizer must be fitted on ``train``
        only. Not combined with a backtest range.
    :param experiment: the experiment the run is a trial of (default: the run name).
    :param registry: the trial registry file (default: ``$RLTRADE_REGISTRY``, else
        ``runs_root/registry.sqlite``; see :func:`rltrade.experiments.registry.registry_path`).
    :param record_trial: record the completed run in the registry, with its final
        evaluation's per-period returns (a resumed run records itself when it completes). A
        driver that records its own trials (walk-forward) passes ``False``.
    :raises ConfigError: the name is taken or invalid, a bad hyperparameter, a backtest range
        that overlaps training; :class:`~rltrade.errors.DataError` for data that cannot train.
    """
    Run.check_name_free(name, runs_root, overwrite_failed=overwrite_failed)
    check_hyperparams(config.agent)
    if data is not None and (backtest_start or backtest_end):
        raise ConfigError("train(data=...) trains a prepared split: give no backtest range")
    mode = "train+backtest" if (backtest_start or backtest_end or config.backtest) else "train"
    if data is not None:
        mode = "walkforward_fold"
    with hold_run_logs() as held:
        if data is None:
            data = prepare_data(config, backtest_start=backtest_start,
                                backtest_end=backtest_end, allow_overlap=allow_overlap)
        diagnostics = _forecast_diagnostics(config, data)
        env, model = _build(config, data, Path(runs_root) / name / "tensorboard")
        try:
            run = Run.create(name, config, runs_root, overwrite_failed=overwrite_failed)
        except BaseException:
            env.close()
            raise
    try:
        with run_log_files(run.path / "logs", replay=held):
            data.normalizer.save(run.normalizer_path)
            if diagnostics is not None:
                from rltrade.data.store import atomic_write_json

                atomic_write_json(run.path / "forecast_diagnostics.json", diagnostics)
            trial = {"record": record_trial, "experiment": experiment or name,
                     "registry": None if registry is None else str(registry)}
            return _fit(run, config, data, env, model, progress, resume_from=None, mode=mode,
                        trial=trial)
    except BaseException as exc:
        if run.state.get("status") == "created":  # failed before training started
            run.write_state(status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        run.release_lock()


def _record_trial(run: Run, config: RunConfig, data: PreparedData,
                  backtest: BacktestResult | None) -> None:
    """Record the completed run in the trial registry its metadata names (``trial``)."""
    options = run.metadata.get("trial") or {"record": True, "experiment": run.name}
    if not options.get("record", True) or backtest is None:
        return
    from rltrade.experiments.registry import TrialRegistry, backtest_returns, config_hash
    from rltrade.experiments.registry import registry_path as resolve_registry

    timestamps, returns = backtest_returns(backtest)
    path = resolve_registry(options.get("registry"), run.path.parent)
    training = run.metadata.get("training", {})
    trial_id = TrialRegistry(path).record(
        run_path=run.path, experiment=options.get("experiment") or run.name,
        config_hash=config_hash(config), returns=returns, timestamps=timestamps,
        seed=config.training.seed, data_fingerprint=data.dataset.fingerprint,
        ranges={"train": training.get("range"), "evaluation": training.get("eval_range")},
        bars_per_year=(backtest.metrics or {}).get("run", {}).get("bars_per_year"))
    log.info("recorded as trial {} of experiment {!r} in {}", trial_id,
             options.get("experiment") or run.name, path)


def _forecast_diagnostics(config: RunConfig, data: PreparedData) -> dict[str, Any] | None:
    """With the ``forecast`` feature group in the spec: its calibration (reliability curve,
    Brier score) over the training slice's out-of-sample predictions, written to the run as
    ``forecast_diagnostics.json``."""
    items = [f for f in config.features.get("features", []) if f.get("name") == "forecast"]
    if not items:
        return None
    from rltrade.features.forecast import forecast_diagnostics

    diag = forecast_diagnostics(data.train, items[0].get("params"))
    dlog.info("forecast diagnostics: Brier {} over {} predictions",
              diag.get("brier"), diag.get("n_predictions"))
    return diag


def _build(config: RunConfig, data: PreparedData,
           tensorboard: Path) -> tuple[VecEnv, BaseAlgorithm]:
    """The training env and the (untrained) model; nothing is written yet."""
    _set_threads(config)
    env = make_train_env(config, data)
    try:
        model = make_agent(config, env, tensorboard_log=str(tensorboard))
    except BaseException:
        env.close()
        raise
    return env, model


def resume(path: str | Path, *, progress: bool = False) -> TrainResult:
    """Continue the run at ``path`` from its newest checkpoint (after a crash or a kill).

    The run's training lock is taken first: a run that another process is training is refused
    (:class:`~rltrade.errors.RunInUseError`, naming its pid). The data is rebuilt from the
    saved config and must have the same fingerprint; the run then trains to the same planned
    step count as an uninterrupted run. A completed run is refused.
    """
    run = Run.open(path)
    with run.locked():
        state = run.state
        if state.get("status") == "completed":
            raise ConfigError(f"run {run.path} is already complete; nothing to resume")
        config = run.config
        check_hyperparams(config.agent)
        with run_log_files(run.path / "logs"):
            meta = run.metadata
            if meta.get("run_mode") == "walkforward_fold":
                raise ConfigError(f"run {run.path} is a walk-forward fold (trained on a slice of "
                                  f"a Dataset): run the walk-forward again instead of --resume")
            bt = meta.get("training", {}).get("backtest_request") or {}
            data = prepare_data(config, backtest_start=bt.get("start"),
                                backtest_end=bt.get("end"),
                                allow_overlap=bool(bt.get("allow_overlap")))
            want = meta.get("data", {}).get("fingerprint")
            if want and want != data.dataset.fingerprint:
                raise StoreError(f"run {run.name}: the data changed since training started "
                                 f"(fingerprint {data.dataset.fingerprint[:12]} != {want[:12]})")
            if run.normalizer_path.is_file():
                data.normalizer = Normalizer.load(run.normalizer_path)
            cps = run.checkpoints()
            resume_from = cps[-1] if cps else None
            env, model = _build(config, data, run.path / "tensorboard")
            prior_wall = 0.0
            if resume_from is not None:
                stored = load_into(model, resume_from, optimizers=True)
                prior_wall = float(stored.get("wall_seconds", 0.0))
            log.info("resuming {} from {}", run.name,
                     resume_from.name if resume_from else "scratch")
            return _fit(run, config, data, env, model, progress, resume_from=resume_from,
                        mode=meta.get("run_mode", "train"), prior_wall=prior_wall)


def _fit(run: Run, config: RunConfig, data: PreparedData, env: VecEnv, model: BaseAlgorithm,
         progress: bool, resume_from: Path | None, mode: str,
         prior_wall: float = 0.0, trial: dict[str, Any] | None = None) -> TrainResult:
    release_deferred_logs()  # the run is committed: from here on its log lines matter
    done = int(model.num_timesteps)
    if resume_from is None:
        run.write_metadata({**_metadata(run, config, data, model, mode),
                            "trial": trial or {"record": True, "experiment": run.name,
                                               "registry": None}})
    trainer = _Trainer(run, config, data, progress, prior_wall=prior_wall)
    planned = trainer.planned
    trainer.schedule_after(done)  # next checkpoint / eval after what was already done
    tc = config.training
    run.write_state(status="running", steps_done=done, planned_steps=planned,
                    pid=os.getpid(), evaluations=trainer.evaluations, best_eval=trainer.best,
                    error=None)
    for note in trainer.plan.notes():
        log.warning("{}", note)
    log.info("training {} ({}) for {} steps ({} planned, {} done) on {} envs",
             run.name, config.agent.algorithm, tc.total_steps, planned, done, tc.n_envs)
    trainer.progress_start(done)
    try:
        return _train_and_finish(run, config, data, env, model, trainer, done, resume_from)
    except BaseException as exc:
        trainer.progress_stop()
        run.write_state(status="failed", error=f"{type(exc).__name__}: {exc}")
        log.error("training failed at step {}: {}", model.num_timesteps, exc)
        raise


def _train_and_finish(run: Run, config: RunConfig, data: PreparedData, env: VecEnv,
                      model: BaseAlgorithm, trainer: _Trainer, done: int,
                      resume_from: Path | None) -> TrainResult:
    """Learn to the planned steps, evaluate, write the final model, manifest and state."""
    planned = trainer.planned
    t0 = time.perf_counter()
    if planned > done:
        model.learn(total_timesteps=planned - done, callback=_RunCallback(trainer),
                    reset_num_timesteps=resume_from is None, tb_log_name="train",
                    progress_bar=False)
    trainer.progress_stop()
    wall = time.perf_counter() - t0
    steps = int(model.num_timesteps)
    final = trainer.evaluate(model)
    save_model(model, run.path / "model", eval=final)
    total_wall = trainer.prior_wall + wall
    rate = (steps - done) / wall if wall > 0 else 0.0
    manifest = {
        "name": run.name,
        "created_at": run.metadata.get("created_at"),
        "completed_at": utc_now(),
        "data": run.metadata.get("data"),
        "training_range": run.metadata.get("training", {}).get("range"),
        "config": config.to_dict(),
        "algorithm": config.agent.algorithm,
        "steps": steps,
        "planned_steps": planned,
        "step_plan": trainer.plan.to_dict(),
        "approx_training_flops": approx_training_flops(model, config, steps),
        "wall_seconds": total_wall,
        "steps_per_second": rate,
        "session": {"resumed_from": done, "steps": steps - done, "wall_seconds": wall,
                    "steps_per_second": rate},
        "resumed": resume_from is not None,
        "best_eval": trainer.best,
        "early_stop": trainer.early_stop,
        "final_eval": final,
        "buy_and_hold_eval_return": final["buy_and_hold_return"],
    }
    run.write_manifest(manifest)
    # recorded before the run is marked completed: a completed run is a recorded trial (a
    # record that fails leaves the run resumable; recording a run again replaces its row)
    _record_trial(run, config, data, trainer.last_backtest)
    run.write_state(status="completed", steps_done=steps, wall_seconds=total_wall,
                    evaluations=trainer.evaluations, best_eval=trainer.best)
    result = TrainResult(run, model, steps, wall, rate, trainer.best, final, trainer.evaluations,
                         data, resumed_from=done, session_steps=steps - done,
                         total_wall_seconds=total_wall)
    log.info("done: {}; eval return {:+.2%}, best {:+.2%}", result.describe(),
             final["total_return"], trainer.best["total_return"])
    env.close()
    return result
