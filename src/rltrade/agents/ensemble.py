"""An ensemble of trained policies (several seeds of one config) as one policy.

A single policy flip-flops near its decision boundary; the members of an ensemble disagree
there, and their vote (or mean) stays put. ``EnsemblePolicy`` is an ordinary policy (SB3's
``predict``), so :func:`rltrade.evaluation.run_backtest` runs it like any other::

    from rltrade.agents.ensemble import ensemble_from_runs

    policy, normalizer = ensemble_from_runs(["runs/s0", "runs/s1", "runs/s2"], which="best")
    result = run_backtest(policy, test_ds, config.env, normalizer=normalizer)

Discrete schemes: each member's deterministic action is one vote; the ensemble takes the action
with the most votes (a tie keeps the action that keeps the position, else the scheme's neutral
one), and its :meth:`EnsemblePolicy.action_probabilities` are the vote shares, so abstention
(``env.min_margin``) trades only when the majority beats the current action's votes by the
margin. ``combine="mean"`` averages the members' action probabilities instead of counting votes
(members without probabilities vote). Continuous schemes (``exposure_sl``): the members' actions
are averaged, so the target exposure is sized by their agreement (two members long and one
short: a third of the size).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rltrade.agents.policy import MarginPolicy, action_probabilities
from rltrade.errors import CompatibilityError, ConfigError

__all__ = ["EnsemblePolicy", "ensemble_from_runs"]


class EnsemblePolicy:
    """Several policies acting as one (see the module docstring).

    :param members: the policies (anything with SB3's ``predict``); recurrent members get their
        own states.
    :param action_scheme: the env's action scheme (``discrete3``, ``discrete6`` or
        ``exposure_sl``).
    :param combine: ``vote`` (discrete: one vote per member) or ``mean`` (discrete: the mean of
        the members' action probabilities; continuous schemes always average the actions).
    :param name: shown in backtest summaries.
    """

    def __init__(self, members: Sequence[Any], action_scheme: str,
                 combine: Literal["vote", "mean"] = "vote", name: str = "ensemble") -> None:
        if not members:
            raise ConfigError("EnsemblePolicy: give at least one member policy")
        if combine not in ("vote", "mean"):
            raise ConfigError(f"EnsemblePolicy: combine must be 'vote' or 'mean', not {combine!r}")
        from rltrade.envs.schemes import scheme

        self.scheme = scheme(action_scheme)
        self.members = list(members)
        self.action_scheme = action_scheme
        self.combine = combine
        self.name = name
        self._keep = (MarginPolicy(None, 1.0, action_scheme).keep_action
                      if self.scheme.discrete else None)

    def _member_actions(self, observation: Any, state: Any, episode_start: Any,
                        deterministic: bool) -> tuple[list[np.ndarray], list[Any]]:
        states = state if isinstance(state, list) else [None] * len(self.members)
        actions, new_states = [], []
        for member, st in zip(self.members, states, strict=True):
            action, st = member.predict(observation, state=st, episode_start=episode_start,
                                        deterministic=deterministic)
            actions.append(np.asarray(action))
            new_states.append(st)
        return actions, new_states

    def action_probabilities(self, observation: Any) -> np.ndarray:
        """Discrete schemes: the vote shares of the actions (``combine="vote"``) or the mean of
        the members' probabilities (``"mean"``), ``[n_actions]``."""
        if not self.scheme.discrete:
            raise ConfigError("EnsemblePolicy: a continuous ensemble has no action probabilities")
        n = self.scheme.n_actions
        if self.combine == "mean":
            return np.mean([self._probs(m, observation) for m in self.members], axis=0)
        votes = np.zeros(n)
        for member in self.members:
            action, _ = member.predict(observation, deterministic=True)
            votes[int(np.asarray(action).reshape(-1)[0])] += 1.0
        return votes / len(self.members)

    def _probs(self, member: Any, observation: Any) -> np.ndarray:
        try:
            return action_probabilities(member, observation)
        except ConfigError:  # no probabilities: its action is a sure vote
            action, _ = member.predict(observation, deterministic=True)
            out = np.zeros(self.scheme.n_actions)
            out[int(np.asarray(action).reshape(-1)[0])] = 1.0
            return out

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """The ensemble's action for one observation; ``state`` is the list of the members'
        states (``None`` at the start)."""
        actions, states = self._member_actions(observation, state, episode_start, deterministic)
        if not self.scheme.discrete:
            return np.mean([a.reshape(-1) for a in actions], axis=0).astype(np.float32), states
        n = self.scheme.n_actions
        if self.combine == "mean":
            share = np.mean([self._probs(m, observation) for m in self.members], axis=0)
        else:
            share = np.bincount([int(a.reshape(-1)[0]) for a in actions], minlength=n)
        top = np.flatnonzero(share == share.max())
        if len(top) == 1:
            best = int(top[0])
        else:
            assert self._keep is not None
            keep = self._keep(observation)
            best = keep if keep in top else int(self.scheme.neutral)
        return np.asarray(best, dtype=np.int64), states

    def __repr__(self) -> str:
        return f"EnsemblePolicy({len(self.members)} members, {self.combine})"


def ensemble_from_runs(paths: Sequence[str | Path], which: str = "best",
                       combine: Literal["vote", "mean"] = "vote",
                       fast: bool = True) -> tuple[EnsemblePolicy, Any]:
    """An :class:`EnsemblePolicy` of the model ``which`` (``best``, ``final``) of each run
    directory, and the normalizer they share.

    The runs must observe the same thing: the same feature spec, env config and fitted
    normalizer (seeds of one config on one training slice).

    :param paths: the run directories.
    :param which: the model of each run (:meth:`rltrade.runs.Run.model_dir`).
    :param combine: as :class:`EnsemblePolicy`.
    :param fast: NumPy copies of plain MLP actors (``load_policy``).
    :raises CompatibilityError: runs that differ in features, env config or normalizer.
    """
    from rltrade.evaluation.judge import load_policy  # evaluation imports agents
    from rltrade.runs import Run

    if not paths:
        raise ConfigError("ensemble_from_runs: give at least one run directory")
    runs = [Run.open(p) for p in paths]
    first = runs[0]
    ref_env = first.config.env.model_dump(mode="json")
    ref_spec = first.config.features
    ref_norm = first.normalizer_path.read_bytes()
    for run in runs[1:]:
        spec = run.config.features
        if run.config.env.model_dump(mode="json") != ref_env:
            raise CompatibilityError(f"ensemble: {run.path} has another env config than "
                                     f"{first.path}")
        if spec != ref_spec:
            raise CompatibilityError(f"ensemble: {run.path} has other features than {first.path}")
        if run.normalizer_path.read_bytes() != ref_norm:
            raise CompatibilityError(f"ensemble: {run.path} was normalised on other data than "
                                     f"{first.path} (its normalizer.json differs)")
    members = [load_policy(run, which, fast=fast) for run in runs]
    policy = EnsemblePolicy(members, first.config.env.action_scheme, combine,
                            name=f"ensemble of {len(runs)}")
    return policy, first.normalizer()
