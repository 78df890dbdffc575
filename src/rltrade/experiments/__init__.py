"""Experiments: walk-forward and CPCV fold plans with purge and embargo (:mod:`.folds`), the
unit of work (one config on one fold with one seed, :func:`run_fold`), the walk-forward driver
(:func:`walk_forward`), the executors that run many units (:mod:`.executors`) and the
walk-forward report (:mod:`.report`); the trial registry is :mod:`.registry`."""

from rltrade.experiments.executors import (
    Executor,
    LocalExecutor,
    SequentialExecutor,
    make_executor,
)
from rltrade.experiments.folds import (
    Block,
    CpcvPlan,
    CpcvSplit,
    Fold,
    FoldPlan,
    cpcv_path_statistics,
    cpcv_plan,
    default_purge,
    duration_bars,
    plan_folds,
)
from rltrade.experiments.walkforward import (
    CpcvSplitResult,
    FoldResult,
    WalkForwardResult,
    fold_plan,
    run_cpcv_split,
    run_fold,
    stitch,
    walk_forward,
)

__all__ = ["Block", "CpcvPlan", "CpcvSplit", "CpcvSplitResult", "Executor", "Fold", "FoldPlan",
           "FoldResult", "LocalExecutor", "SequentialExecutor", "WalkForwardResult",
           "cpcv_path_statistics", "cpcv_plan", "default_purge", "duration_bars", "fold_plan",
           "make_executor", "plan_folds", "run_cpcv_split", "run_fold", "stitch",
           "walk_forward"]
