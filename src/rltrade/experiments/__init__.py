"""Experiments: walk-forward folds, the trial registry, sweeps and their executors."""
