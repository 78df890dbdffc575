"""Experiments: walk-forward and CPCV fold plans with purge and embargo (:mod:`.folds`), the
unit of work (one config on one fold with one seed, :func:`run_fold`), the walk-forward driver
(:func:`walk_forward`) and the executors that run many units (:mod:`.executors`)."""

from rltrade.experiments.folds import (
    Block,
    CpcvPlan,
    CpcvSplit,
    Fold,
    FoldPlan,
    cpcv_plan,
    default_purge,
    duration_bars,
    plan_folds,
)

__all__ = ["Block", "CpcvPlan", "CpcvSplit", "Fold", "FoldPlan", "cpcv_plan", "default_purge",
           "duration_bars", "plan_folds"]
