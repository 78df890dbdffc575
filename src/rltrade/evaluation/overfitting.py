"""Probability of Backtest Overfitting by combinatorially symmetric cross-validation (CSCV).

Bailey, Borwein, López de Prado, Zhu (2017), "The Probability of Backtest Overfitting",
Journal of Computational Finance 20(4). Given the per-period returns of ``N`` configurations
(trials) over the same ``T`` periods, :func:`probability_of_backtest_overfitting`:

1. drops the first ``T mod S`` rows and cuts the rest, in time order, into ``S`` (even)
   contiguous blocks of equal size;
2. for every combination ``C`` of ``S/2`` blocks (there are ``C(S, S/2)``: 12,870 for the
   default ``S = 16``), takes the rows of ``C`` as the in-sample set ``J`` and the other half as
   the out-of-sample set ``J̄``;
3. finds the configuration ``n*`` with the best in-sample performance (the per-period Sharpe
   ratio ``mean / std``, ``ddof=1``; an undefined Sharpe ratio, e.g. of a constant series,
   counts as the worst), and its relative rank out of sample ``ω = rank / (N + 1)``, rank 1 the
   worst and ``N`` the best (ties share their mean rank);
4. records the logit ``λ = ln(ω / (1 - ω))``: ``λ > 0`` when the in-sample winner is above the
   out-of-sample median.

``PBO`` is the fraction of combinations with ``λ <= 0``: the probability that the configuration
chosen in sample does no better than the median configuration out of sample. Skill-less
configurations give PBO near 0.5; a real edge that persists gives PBO near 0.

When ``C(S, S/2)`` exceeds ``max_combinations`` the combinations are a uniform random sample of
``max_combinations`` distinct ones, drawn with the given seed (``details["sampled"]`` says so).
Every combination is computed from per-block sums, so the work is ``O(K · S · N)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from rltrade.errors import ConfigError

__all__ = ["DEFAULT_MAX_COMBINATIONS", "PBOResult", "probability_of_backtest_overfitting"]

#: all combinations of the default 16 partitions (C(16, 8) = 12,870) fit under this cap
DEFAULT_MAX_COMBINATIONS = 20_000


@dataclass(frozen=True)
class PBOResult:
    """What :func:`probability_of_backtest_overfitting` found.

    :param pbo: the Probability of Backtest Overfitting, the fraction of ``logits <= 0``.
    :param logits: ``λ`` per combination (for a histogram).
    :param details: ``n_partitions`` (S), ``n_configurations`` (N), ``n_periods`` (rows
        used), ``dropped_periods``, ``n_combinations`` (K), ``total_combinations``, ``sampled``,
        ``seed``, and per combination: ``best_in_sample`` (index of ``n*``), ``oos_rank`` (ω),
        ``sharpe_in_sample`` and ``sharpe_out_of_sample`` of ``n*`` (per period);
        ``prob_oos_loss`` (the fraction of combinations where ``n*`` loses out of sample).
    """

    pbo: float
    logits: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)


def _combinations(s: int, max_combinations: int, seed: int) -> tuple[np.ndarray, int, bool]:
    """Boolean ``[K, S]`` masks of the in-sample blocks, the total count, whether sampled."""
    half = s // 2
    total = math.comb(s, half)
    if total <= max_combinations:
        masks = np.zeros((total, s), dtype=bool)
        for k, chosen in enumerate(combinations(range(s), half)):
            masks[k, list(chosen)] = True
        return masks, total, False
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, ...]] = set()
    rows: list[tuple[int, ...]] = []
    while len(rows) < max_combinations:
        chosen = tuple(sorted(rng.choice(s, size=half, replace=False).tolist()))
        if chosen not in seen:
            seen.add(chosen)
            rows.append(chosen)
    masks = np.zeros((len(rows), s), dtype=bool)
    for k, chosen in enumerate(rows):
        masks[k, list(chosen)] = True
    return masks, total, True


def _sharpe_from_sums(total: np.ndarray, squares: np.ndarray, n: float) -> np.ndarray:
    """Per-period Sharpe ratios from sums and sums of squares of ``n`` values; NaN without
    dispersion."""
    mean = total / n
    var = (squares - n * mean * mean) / (n - 1.0)
    with np.errstate(all="ignore"):
        sr = mean / np.sqrt(var)
    # rounding can leave a tiny positive variance for a constant series: treat as undefined
    flat = ~(var > 1e-12 * np.maximum(squares / n, 1e-300))
    sr[flat | ~np.isfinite(sr)] = np.nan
    return sr


def probability_of_backtest_overfitting(
    returns: np.ndarray, n_partitions: int = 16, *,
    max_combinations: int = DEFAULT_MAX_COMBINATIONS, seed: int = 0,
) -> PBOResult:
    """PBO of choosing the best of ``N`` configurations by CSCV (module docstring).

    :param returns: ``[T, N]`` per-period returns, one column per configuration, rows aligned
        in time (e.g. :meth:`rltrade.experiments.registry.TrialRegistry.returns_matrix`).
    :param n_partitions: ``S``, even, at least 2, with at least 2 rows per partition.
    :param max_combinations: the most combinations computed; above it a seeded sample.
    :param seed: seed of that sample.
    :return: a :class:`PBOResult`.
    :raises ConfigError: fewer than 2 configurations, a non-finite value, ``S`` odd or too
        large for ``T``, or ``max_combinations < 1``.
    """
    m = np.asarray(returns, dtype=float)
    if m.ndim != 2:
        raise ConfigError(f"returns must be a [T, N] matrix (periods × configurations), got "
                          f"shape {m.shape}")
    t, n = m.shape
    if n < 2:
        raise ConfigError(f"PBO compares configurations: it needs at least 2, got {n}")
    if not np.all(np.isfinite(m)):
        raise ConfigError("returns hold NaN or inf: align the configurations on common periods "
                          "first (e.g. returns_matrix(..., join='inner'))")
    s = int(n_partitions)
    if s < 2 or s % 2:
        raise ConfigError(f"n_partitions must be an even number >= 2, got {n_partitions}")
    if t // s < 2:
        raise ConfigError(f"n_partitions={s} needs at least {2 * s} periods (2 per partition), "
                          f"got {t}; use fewer partitions or more data")
    if max_combinations < 1:
        raise ConfigError(f"max_combinations must be >= 1, got {max_combinations}")
    size = t // s
    dropped = t - size * s
    blocks = m[dropped:].reshape(s, size, n)
    block_sum = blocks.sum(axis=1)  # [S, N]
    block_sq = (blocks * blocks).sum(axis=1)
    masks, total, sampled = _combinations(s, int(max_combinations), seed)
    rows = size * (s // 2)
    ins = masks.astype(float)
    outs = (~masks).astype(float)
    sr_in = _sharpe_from_sums(ins @ block_sum, ins @ block_sq, rows)  # [K, N]
    sr_out = _sharpe_from_sums(outs @ block_sum, outs @ block_sq, rows)
    ranked_in = np.where(np.isnan(sr_in), -np.inf, sr_in)
    best = np.argmax(ranked_in, axis=1)  # first best on ties
    k = np.arange(len(masks))
    ranked_out = np.where(np.isnan(sr_out), -np.inf, sr_out)
    chosen = ranked_out[k, best][:, None]
    below = np.sum(ranked_out < chosen, axis=1)
    ties = np.sum(ranked_out == chosen, axis=1)  # includes n* itself
    rank = below + (ties + 1) / 2.0  # 1 = worst, N = best; ties share their mean rank
    omega = rank / (n + 1.0)
    logits = np.log(omega / (1.0 - omega))
    details = {
        "n_partitions": s, "n_configurations": n, "n_periods": size * s,
        "dropped_periods": dropped, "n_combinations": len(masks),
        "total_combinations": total, "sampled": sampled, "seed": seed,
        "best_in_sample": best, "oos_rank": omega,
        "sharpe_in_sample": sr_in[k, best], "sharpe_out_of_sample": sr_out[k, best],
        "prob_oos_loss": float(np.mean(~(sr_out[k, best] > 0))),
    }
    return PBOResult(float(np.mean(logits <= 0)), logits, details)
