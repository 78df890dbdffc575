"""Fold plans over a Dataset's rows: walk-forward (``rolling``, ``anchored``) and combinatorial
purged cross-validation (CPCV), with purge and embargo.

Everything here is arithmetic on row positions: a plan is made of plain dataclasses
(:class:`Block` ``[start, stop)`` row ranges) and does not touch the arrays. Window sizes come
as bar counts; :func:`duration_bars` turns a duration (``180d``, ``12h``) into bars of the data's
timeframe (``30d`` of 1h bars = 720 bars; on markets with closed sessions a window then spans
more calendar time than its duration).

Walk-forward layout of fold ``k`` (rows, left to right)::

    [ train ][ purge ][ validation ][ purge ][ test ]( embargo )

* ``rolling``: every block moves forward by ``step`` bars from one fold to the next;
  ``anchored``: the training block always starts at row 0 and grows by ``step``.
* ``purge`` (:func:`default_purge`): bars left out between training and validation and between
  validation and test. A training sample at row ``t`` observes rows ``t - window + 1 .. t`` and
  its reward is read at the next bar (plus the engine's decision lag); the validation and test
  blocks observe ``window - 1`` context rows before their first decision. With a purge of
  ``window + decision_lag`` bars no training row's observation or reward reaches a later block,
  and no later block's context window contains a training row. A feature that looks ``k`` bars
  ahead (a bug, or a label) needs a purge of at least ``k`` more bars.
* ``embargo``: bars after each test block that no other fold tests on: the next fold's test
  block starts at least ``embargo`` bars after this one ends (``step >= test + embargo``), so the
  stitched out-of-sample series skips the bars right after a test block. In CPCV the embargo
  also removes the training rows that follow a test group (there, training can follow a test
  block).

CPCV (:func:`cpcv_plan`, López de Prado, *Advances in Financial Machine Learning*, ch. 12): the
rows are cut into ``groups`` contiguous groups; every combination of ``test_groups`` of them is
one split (test on those, train on the rest, purged before and purged + embargoed after each
test group); the test groups recombine into ``φ = C(N, k) · k / N`` backtest paths, each
covering every group once. The split generator matches skfolio's ``CombinatorialPurgedCV``
(a test cross-checks it).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from rltrade.data.timeframes import parse_timeframe
from rltrade.errors import ConfigError, DataError

__all__ = ["Block", "CpcvPlan", "CpcvSplit", "Fold", "FoldPlan", "cpcv_path_statistics",
           "cpcv_plan", "default_purge", "duration_bars", "plan_folds"]

Scheme = Literal["rolling", "anchored"]


@dataclass(frozen=True)
class Block:
    """Rows ``[start, stop)`` of a Dataset."""

    start: int
    stop: int

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def rows(self) -> np.ndarray:
        return np.arange(self.start, self.stop)

    def to_dict(self, timestamps: np.ndarray | None = None) -> dict[str, Any]:
        """Row indices (``start`` inclusive, ``stop`` exclusive), the bar count, and with
        ``timestamps`` (int64 UTC ns) the first and last bar's open time in ISO form."""
        out: dict[str, Any] = {"start_row": self.start, "stop_row": self.stop, "bars": len(self)}
        if timestamps is not None and len(self):
            out["start"] = _iso(timestamps[self.start])
            out["end"] = _iso(timestamps[self.stop - 1])
        return out


def _iso(ns: Any) -> str:
    return pd.Timestamp(int(ns), tz="UTC").isoformat()


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: train, validation and test rows; the purge and embargo applied."""

    index: int
    train: Block
    validation: Block
    test: Block
    purge: int
    embargo: int

    def to_dict(self, timestamps: np.ndarray | None = None) -> dict[str, Any]:
        return {"fold": self.index, "train": self.train.to_dict(timestamps),
                "validation": self.validation.to_dict(timestamps),
                "test": self.test.to_dict(timestamps), "purge": self.purge,
                "embargo": self.embargo}


@dataclass(frozen=True)
class FoldPlan:
    """The folds of a walk-forward and the sizes (bars) they were made from."""

    scheme: str
    folds: list[Fold]
    n_rows: int
    train: int
    validation: int
    test: int
    step: int
    purge: int
    embargo: int
    #: how many folds the data allows with these sizes (``len(folds)`` or more)
    allowed: int = 0

    def to_dict(self, timestamps: np.ndarray | None = None) -> dict[str, Any]:
        return {"scheme": self.scheme, "n_rows": self.n_rows,
                "bars": {"train": self.train, "validation": self.validation, "test": self.test,
                         "step": self.step, "purge": self.purge, "embargo": self.embargo},
                "folds_allowed": self.allowed,
                "folds": [f.to_dict(timestamps) for f in self.folds]}


def duration_bars(value: int | str, timeframe: str, what: str = "walkforward") -> int:
    """A window size in bars: an int (or digits) is a bar count, a duration (``180d``,
    ``12h``, ``2w``) is divided by the bar duration of ``timeframe`` (rounded down).

    :raises ConfigError: a size that is neither, or shorter than one bar.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what}: {value!r} is not a bar count or a duration")
    if isinstance(value, int):
        bars = value
    elif str(value).strip().isdigit():
        bars = int(str(value).strip())
    else:
        try:
            span = parse_timeframe(str(value)).seconds
            bar = parse_timeframe(timeframe).seconds
        except DataError:
            raise ConfigError(f"{what}: {value!r} is not a bar count or a duration (use e.g. "
                              f"720, 180d, 12h, 2w)") from None
        bars = math.floor(span / bar + 1e-9)
    if bars < 1:
        raise ConfigError(f"{what}: {value!r} is shorter than one bar of {timeframe}")
    return bars


def default_purge(window: int, decision_lag: int = 0) -> int:
    """Bars between training and a later block so that neither side sees the other: the
    ``window - 1`` context rows of the later block's first observation, plus the bar a training
    reward is read at (plus the decision lag). Rewards' Sharpe windows (``env.sharpe_window``)
    look back, never forward, and need nothing more."""
    return int(window) + int(decision_lag)


def plan_folds(n_rows: int, *, train: int, validation: int, test: int | None = None,
               step: int | None = None, folds: int | None = None, purge: int = 0,
               embargo: int = 0, scheme: Scheme = "rolling",
               min_train: int = 1) -> FoldPlan:
    """The walk-forward folds over ``n_rows`` rows (all sizes in bars).

    :param train: bars of each training block (the first one, for ``anchored``).
    :param validation: bars of each validation block (checkpoint selection).
    :param test: bars of each test block; with ``folds`` and no ``test``, the rows after the
        first test start are shared out into ``folds`` equal test blocks.
    :param step: bars between the starts of consecutive test blocks; default ``test +
        embargo``; at least ``test + embargo``.
    :param folds: how many folds to make (the first ones); default as many as fit.
    :param purge: bars left out between train and validation and between validation and test.
    :param embargo: bars after a test block before the next one may start.
    :param scheme: ``rolling`` or ``anchored``.
    :param min_train: the fewest training bars a fold may have (``env.window + 2``).
    :raises ConfigError: inconsistent sizes, or data too short for one fold (saying the minimum
        bars and how many folds the data allows).
    """
    if scheme not in ("rolling", "anchored"):
        raise ConfigError(f"walkforward.scheme must be rolling or anchored, not {scheme!r}")
    if purge < 0 or embargo < 0:
        raise ConfigError("walkforward: purge and embargo must not be negative")
    if train < min_train:
        raise ConfigError(f"walkforward.train is {train} bars; training needs at least "
                          f"{min_train} (env.window + 2)")
    if validation < 2:
        raise ConfigError(f"walkforward.validation is {validation} bars; at least 2 needed")
    head = train + purge + validation + purge  # rows before the first test block
    if test is None:
        if folds is None:
            raise ConfigError("walkforward: give the test window (test: 30d or bars) or the "
                              "number of folds (folds: N)")
        test = (n_rows - head - (folds - 1) * embargo) // folds
        if test < 2:
            raise ConfigError(
                f"the data is too short for {folds} folds: {n_rows} rows, {head} before the "
                f"first test block (train {train} + purge {purge} + validation {validation} + "
                f"purge {purge}), leaving {max(0, n_rows - head)} to test on; at least "
                f"{head + 2 * folds + (folds - 1) * embargo} bars are needed")
    if test < 2:
        raise ConfigError(f"walkforward.test is {test} bars; at least 2 needed")
    step = test + embargo if step is None else step
    if step < test + embargo:
        raise ConfigError(f"walkforward.step ({step} bars) must be at least test + embargo "
                          f"({test} + {embargo}): test blocks never overlap")
    need = head + test
    allowed = 0 if n_rows < need else (n_rows - need) // step + 1
    if allowed < 1 or (folds is not None and allowed < folds):
        want = folds or 1
        raise ConfigError(
            f"the data is too short for {want} fold{'s' * (want != 1)}: {n_rows} rows; one "
            f"fold needs at least {need} bars (train {train} + purge {purge} + validation "
            f"{validation} + purge {purge} + test {test})"
            + (f", {want} need {need + (want - 1) * step}" if want > 1 else "")
            + f"; the data allows {allowed} fold{'s' * (allowed != 1)} with these sizes")
    count = allowed if folds is None else folds
    out: list[Fold] = []
    for k in range(count):
        shift = k * step
        tr_start = 0 if scheme == "anchored" else shift
        tr = Block(tr_start, shift + train)
        va = Block(tr.stop + purge, tr.stop + purge + validation)
        te = Block(va.stop + purge, va.stop + purge + test)
        out.append(Fold(k, tr, va, te, purge, embargo))
    return FoldPlan(scheme, out, n_rows, train, validation, test, step, purge, embargo, allowed)


# -- CPCV --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CpcvSplit:
    """One CPCV split: the test groups and the purged, embargoed training rows as contiguous
    segments."""

    index: int
    test_groups: tuple[int, ...]
    train: list[Block]
    test: list[Block]

    def train_rows(self) -> np.ndarray:
        return np.concatenate([b.rows() for b in self.train]) if self.train else np.array([], int)

    def train_segments(self) -> tuple[tuple[int, int], ...]:
        """The training rows as ``[start, stop)`` ranges, the form of
        :attr:`rltrade.envs.config.EnvConfig.segments` (episodes never cross a test group)."""
        return tuple((b.start, b.stop) for b in self.train)

    def to_dict(self, timestamps: np.ndarray | None = None) -> dict[str, Any]:
        return {"split": self.index, "test_groups": list(self.test_groups),
                "train": [b.to_dict(timestamps) for b in self.train],
                "test": [b.to_dict(timestamps) for b in self.test]}


@dataclass(frozen=True)
class CpcvPlan:
    """The groups, splits and backtest paths of a combinatorial purged cross-validation.

    ``paths[g, p]`` is the split whose test on group ``g`` is part of backtest path ``p``.
    """

    groups: list[Block]
    test_groups: int
    splits: list[CpcvSplit]
    paths: np.ndarray
    purge: int
    embargo: int
    n_rows: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def n_paths(self) -> int:
        return int(self.paths.shape[1])

    def path_segments(self, path: int) -> list[tuple[int, Block]]:
        """Backtest path ``path`` as ``(split, group block)`` in time order."""
        return [(int(self.paths[g, path]), self.groups[g]) for g in range(len(self.groups))]

    def path_returns(self, group_returns: dict[tuple[int, int], np.ndarray],
                     path: int) -> np.ndarray:
        """Backtest path ``path``'s per-period returns: for each group in time order, the
        returns of the split that tests it on this path.

        :param group_returns: ``(split, group) -> per-period returns`` of every split's model
            backtested on each of its test groups.
        :param path: the path, ``0 .. n_paths - 1``.
        :raises ConfigError: a ``(split, group)`` the path needs is missing.
        """
        parts = []
        for g in range(len(self.groups)):
            key = (int(self.paths[g, path]), g)
            if key not in group_returns:
                raise ConfigError(f"cpcv path {path}: no test returns of split {key[0]} on "
                                  f"group {g}")
            parts.append(np.asarray(group_returns[key], dtype=np.float64).ravel())
        return np.concatenate(parts)

    def to_dict(self, timestamps: np.ndarray | None = None) -> dict[str, Any]:
        return {"scheme": "cpcv", "n_rows": self.n_rows, "groups": len(self.groups),
                "test_groups": self.test_groups, "purge": self.purge, "embargo": self.embargo,
                "group_rows": [g.to_dict(timestamps) for g in self.groups],
                "splits": [s.to_dict(timestamps) for s in self.splits],
                "paths": self.paths.tolist()}


def _segments(mask: np.ndarray) -> list[Block]:
    """Contiguous runs of ``True`` in ``mask`` as blocks."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return [Block(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def cpcv_plan(n_rows: int, groups: int = 6, test_groups: int = 2, purge: int = 0,
              embargo: int = 0) -> CpcvPlan:
    """Combinatorial purged cross-validation over ``n_rows`` rows.

    Groups: ``n_rows // groups`` rows each, the last one taking the remainder. Split ``i`` tests
    the ``i``-th combination of ``test_groups`` groups (lexicographic order) and trains on every
    other row except ``purge`` rows before each test group and ``purge + embargo`` rows after
    it. Path ``p`` takes, for each group, the ``p``-th split (in split order) that tests it.

    :raises ConfigError: ``test_groups`` not in ``1 .. groups - 1``, or groups too small for the
        purge and embargo (saying the minimum rows).
    """
    if groups < 2 or not 1 <= test_groups < groups:
        raise ConfigError(f"walkforward cpcv: need groups >= 2 and 1 <= test_groups < groups "
                          f"(got groups {groups}, test_groups {test_groups})")
    size = n_rows // groups
    if purge + embargo >= size - 1:
        raise ConfigError(
            f"the data is too short for cpcv with {groups} groups: {n_rows} rows give groups of "
            f"{size} bars, which must exceed purge + embargo + 1 ({purge} + {embargo} + 1); at "
            f"least {groups * (purge + embargo + 2)} bars are needed")
    group_of = np.minimum(np.arange(n_rows) // size, groups - 1)
    blocks = [Block(int(np.argmax(group_of == g)), int(n_rows - np.argmax(group_of[::-1] == g)))
              for g in range(groups)]
    combos = list(itertools.combinations(range(groups), test_groups))
    splits = []
    member = np.zeros((groups, len(combos)), dtype=bool)
    for i, combo in enumerate(combos):
        member[list(combo), i] = True
        test = np.isin(group_of, combo)
        train = ~test
        for g in combo:
            b = blocks[g]
            if b.start > 0 and not test[b.start - 1]:
                train[max(0, b.start - purge):b.start] = False
            if b.stop < n_rows and not test[b.stop]:
                train[b.stop:min(n_rows, b.stop + purge + embargo)] = False
        splits.append(CpcvSplit(i, combo, _segments(train), _segments(test)))
    n_paths = len(combos) * test_groups // groups
    paths = np.array([np.flatnonzero(member[g]) for g in range(groups)], dtype=int)
    assert paths.shape == (groups, n_paths)
    return CpcvPlan(blocks, test_groups, splits, paths, purge, embargo, n_rows)


def cpcv_path_statistics(plan: CpcvPlan, group_returns: dict[tuple[int, int], np.ndarray],
                         bars_per_year: float) -> dict[str, Any]:
    """The distribution of the backtest paths' Sharpe ratios (the ``cpcv`` result: one number
    per path, never one number for the whole cross-validation).

    Each path's returns are :meth:`CpcvPlan.path_returns`; its Sharpe ratio is the per-period
    one (:func:`~rltrade.evaluation.significance.sharpe_stats`) times
    ``sqrt(bars_per_year)``, its return the compounded ``prod(1 + r) - 1``.

    :param plan: the CPCV plan.
    :param group_returns: ``(split, group) -> per-period returns`` (see
        :meth:`CpcvPlan.path_returns`).
    :param bars_per_year: the annualisation.
    :return: ``{"paths": [{"path", "splits", "bars", "sharpe", "return"}, ...],
        "sharpe": {"min", "q25", "median", "q75", "max", "mean", "n"}}`` (``None`` for a
        Sharpe ratio that is not defined, e.g. returns without dispersion; the distribution is
        over the defined ones).
    """
    from rltrade.evaluation.significance import sharpe_stats

    if not bars_per_year > 0:
        raise ConfigError(f"cpcv: bars_per_year must be positive (got {bars_per_year})")
    rows = []
    for p in range(plan.n_paths):
        r = plan.path_returns(group_returns, p)
        sr = sharpe_stats(r)[0]
        finite = r[np.isfinite(r)]
        rows.append({"path": p, "splits": [int(s) for s in plan.paths[:, p]],
                     "bars": int(r.size),
                     "sharpe": float(sr * math.sqrt(bars_per_year)) if math.isfinite(sr) else None,
                     "return": float(np.prod(1.0 + finite) - 1.0)})
    values = np.array([row["sharpe"] for row in rows if row["sharpe"] is not None])
    if values.size:
        q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
        dist: dict[str, Any] = {"min": float(q[0]), "q25": float(q[1]), "median": float(q[2]),
                                "q75": float(q[3]), "max": float(q[4]),
                                "mean": float(values.mean()), "n": int(values.size)}
    else:
        dist = {"min": None, "q25": None, "median": None, "q75": None, "max": None,
                "mean": None, "n": 0}
    return {"paths": rows, "sharpe": dist}
