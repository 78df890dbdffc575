"""Is a Sharpe ratio real? Probabilistic and Deflated Sharpe Ratios (Bailey & López de Prado).

Everything here works in **per-period** units: the Sharpe ratio of one bar's returns, never an
annualized one (divide an annualized Sharpe by ``sqrt(bars_per_year)`` first). Kurtosis is the
**raw** fourth standardized moment (a normal distribution has 3), not the excess kurtosis.

Definitions
-----------
``sharpe_stats(returns)``
    ``SR = mean(r) / std(r)`` with the sample standard deviation (``ddof=1``); skewness
    ``g3 = m3 / m2**1.5`` and raw kurtosis ``g4 = m4 / m2**2`` from the population central moments
    ``m_k = mean((r - mean(r))**k)``. These are the conventions of the papers and of skfolio.
    Non-finite values are dropped first; ``n`` is the number of values left. With fewer than two
    values, or with no dispersion (``std <= 1e-12 * max|r|``, e.g. a flat equity curve), the
    statistics are NaN.

Probabilistic Sharpe Ratio (Bailey & López de Prado 2012, "The Sharpe Ratio Efficient Frontier")
    ``PSR(SR*) = Φ( (SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR²) )``: the probability
    that the true Sharpe ratio exceeds ``SR*`` given ``n`` observations, their skewness and
    kurtosis. NaN when ``n < 2``, when an input is not finite, or when the variance term under the
    square root is not positive.

Expected maximum Sharpe ratio (Bailey & López de Prado 2014, "The Deflated Sharpe Ratio")
    ``SR0 = sqrt(V) ((1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e)))`` with ``N`` independent trials,
    ``V`` the variance of the trials' (per-period) Sharpe ratios and ``γ`` the Euler–Mascheroni
    constant: the Sharpe ratio the best of ``N`` skill-less trials is expected to show. ``N = 1``
    (no selection) gives 0.

Deflated Sharpe Ratio
    ``DSR = PSR(SR0)``. How ``N`` and ``V`` are found (:func:`deflated_sharpe_ratio`):

    * ``trial_sharpes`` given: ``V`` is their sample variance (``ddof=1``, as in skfolio); ``N``
      defaults to their count. An explicit ``n_trials`` overrides ``N`` (e.g. an *effective*
      number of independent trials after clustering correlated trials), and ``V`` still comes from
      the list.
    * ``var_trials`` given instead: ``V = var_trials`` and ``N = n_trials``.
    * Neither: ``n_trials`` must be 1 (or left out) and then ``DSR = PSR(0)``. With
      ``n_trials > 1`` and no variance we refuse (:class:`~rltrade.errors.ConfigError`) rather
      than guess: a made-up variance would make the deflation look like evidence it is not.

Effective number of trials (Bailey & López de Prado 2014, "The Deflated Sharpe Ratio", §3)
    Correlated trials are fewer independent ones. :func:`effective_n_trials` of ``M`` trials'
    return series uses the paper's approximation ``N = ρ̄ + (1 - ρ̄) M`` with ``ρ̄`` the mean
    pairwise correlation of their returns (clipped to [0, 1]: ``ρ̄ = 0`` keeps ``N = M``,
    ``ρ̄ = 1`` gives ``N = 1``). Rows with a non-finite value are dropped first; pairs with an
    undefined correlation (a constant series) are left out of the mean.

Minimum Track Record Length
    ``MinTRL = 1 + (1 - g3 SR + (g4 - 1) / 4 SR²) (Φ⁻¹(1 - α) / (SR - SR*))²``: the number of
    observations needed for ``PSR(SR*) >= 1 - α``; by construction ``PSR`` evaluated at
    ``n = MinTRL`` equals ``1 - α``. ``inf`` when ``SR <= SR*`` (no track record is long enough),
    NaN when the variance term is not positive or an input is not finite.

Normal CDF and quantiles come from :class:`statistics.NormalDist` (no SciPy needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from rltrade.errors import ConfigError

__all__ = [
    "EULER_GAMMA",
    "ZERO_DISPERSION",
    "deflated_sharpe_ratio",
    "effective_n_trials",
    "expected_max_sharpe",
    "is_zero_dispersion",
    "min_track_record_length",
    "probabilistic_sharpe_ratio",
    "resolve_trials",
    "sharpe_stats",
]

EULER_GAMMA = 0.57721566490153286
_NORMAL = NormalDist()
#: Dispersion below this share of the largest ``|value|`` is rounding noise, not risk.
ZERO_DISPERSION = 1e-12


def is_zero_dispersion(std: float, values: np.ndarray) -> bool:
    """Whether ``std`` is rounding noise: not above :data:`ZERO_DISPERSION` × ``max|values|``.

    :param std: a standard deviation of ``values``.
    :param values: the values it was computed from.
    :return: ``True`` when the values have no real dispersion (e.g. a flat equity curve).
    """
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    return not std > ZERO_DISPERSION * scale


def sharpe_stats(
    returns: Sequence[float] | np.ndarray, risk_free: float = 0.0
) -> tuple[float, float, float, int]:
    """Per-period Sharpe ratio, skewness, raw kurtosis and count of a return series.

    :param returns: per-period simple returns; non-finite values are dropped.
    :param risk_free: per-period risk-free return subtracted from every return (default 0).
    :return: ``(sr, skew, kurtosis_raw, n)``; the three statistics are NaN when ``n < 2`` or the
        returns have no dispersion.
    """
    r = np.asarray(returns, dtype=float).ravel()
    r = r[np.isfinite(r)] - float(risk_free)
    n = int(r.size)
    if n < 2:
        return math.nan, math.nan, math.nan, n
    # numpy scalars throughout: overflow gives inf (then NaN checks), never OverflowError.
    with np.errstate(all="ignore"):
        mean = np.mean(r)
        dev = r - mean
        dev = dev - np.mean(dev)  # remove the residual offset left by rounding the mean
        std = np.sqrt(np.sum(dev**2) / (n - 1))
        m2 = np.mean(dev**2)
        if not np.isfinite(std) or is_zero_dispersion(float(std), r):
            return math.nan, math.nan, math.nan, n
        sr = float(mean / std)
        skew = float(np.mean(dev**3) / m2**1.5)
        kurt = float(np.mean(dev**4) / m2**2)
    return sr, skew, kurt, n


def _variance_term(sr: float, skew: float, kurtosis: float) -> float:
    return 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr


def _check_kurtosis(skew: float, kurtosis: float) -> None:
    # Pearson's inequality: raw kurtosis >= 1 + skew². Excess kurtosis (normal = 0) breaks it.
    if math.isfinite(skew) and math.isfinite(kurtosis):
        bound = 1.0 + skew * skew
        if kurtosis < bound - 1e-9 * max(1.0, bound):
            raise ConfigError(
                f"kurtosis={kurtosis!r} is impossible with skew={skew!r} (raw kurtosis is at "
                f"least 1 + skew² = {bound:.6g}); pass the RAW kurtosis (normal = 3), not the "
                "excess kurtosis"
            )


def probabilistic_sharpe_ratio(
    sr: float, sr_benchmark: float, n: float, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """Probability that the true Sharpe ratio exceeds ``sr_benchmark`` (PSR).

    :param sr: observed per-period (not annualized) Sharpe ratio.
    :param sr_benchmark: per-period benchmark Sharpe ratio ``SR*`` (0 asks "is there any skill?").
    :param n: number of return observations (may be fractional, e.g. a MinTRL).
    :param skew: skewness of the returns (0 for normal returns).
    :param kurtosis: RAW kurtosis of the returns (3 for normal returns, not excess kurtosis).
    :return: PSR in [0, 1]; NaN when undefined (``n < 2``, non-finite input, or a non-positive
        variance term).
    :raises ConfigError: when ``kurtosis < 1 + skew²``, which only excess kurtosis produces.
    """
    values = (sr, sr_benchmark, n, skew, kurtosis)
    if not all(math.isfinite(float(v)) for v in values) or n < 2:
        return math.nan
    _check_kurtosis(skew, kurtosis)
    var = _variance_term(sr, skew, kurtosis)
    if not var > 0.0:
        return math.nan
    z = (sr - sr_benchmark) * math.sqrt(n - 1.0) / math.sqrt(var)
    return _NORMAL.cdf(z)


def expected_max_sharpe(n_trials: float, var_trials: float) -> float:
    """Expected maximum per-period Sharpe ratio of ``n_trials`` skill-less independent trials.

    :param n_trials: number of independent trials ``N`` (>= 1; may be a fractional effective N).
    :param var_trials: variance ``V`` of the trials' per-period Sharpe ratios (>= 0).
    :return: ``SR0``; 0 when ``N == 1`` or ``V == 0``.
    :raises ConfigError: when ``n_trials < 1`` or ``var_trials < 0`` (or either is not finite).
    """
    n_trials = float(n_trials)
    var_trials = float(var_trials)
    if not math.isfinite(n_trials) or n_trials < 1:
        raise ConfigError(f"n_trials must be a finite number >= 1, got {n_trials!r}")
    if not math.isfinite(var_trials) or var_trials < 0:
        raise ConfigError(f"var_trials must be a finite variance >= 0, got {var_trials!r}")
    if n_trials == 1 or var_trials == 0:
        return 0.0
    # Φ⁻¹(1 - p) = -Φ⁻¹(p): exact in the far tail, where 1 - p would round to 1.
    z1 = -_NORMAL.inv_cdf(1.0 / n_trials)
    z2 = -_NORMAL.inv_cdf(1.0 / n_trials / math.e)
    return math.sqrt(var_trials) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def resolve_trials(
    n_trials: float | None,
    trial_sharpes: Sequence[float] | np.ndarray | None,
    var_trials: float | None,
) -> tuple[float, float]:
    """``(N, V)`` for the deflation, following the rules in the module docstring.

    :param n_trials: number of trials, or ``None`` for the count of ``trial_sharpes`` (or 1).
    :param trial_sharpes: per-period Sharpe ratios of all trials.
    :param var_trials: variance of the trials' per-period Sharpe ratios.
    :return: ``(N, V)``.
    :raises ConfigError: for both lists given, bad values, or ``N > 1`` without a variance.
    """
    if trial_sharpes is not None and var_trials is not None:
        raise ConfigError("pass either trial_sharpes or var_trials, not both")
    if trial_sharpes is not None:
        values = np.asarray(trial_sharpes, dtype=float).ravel()
        if not np.all(np.isfinite(values)):
            raise ConfigError("trial_sharpes must all be finite per-period Sharpe ratios")
        if values.size == 0:
            raise ConfigError("trial_sharpes is empty; pass the Sharpe ratio of every trial")
        n = float(values.size) if n_trials is None else float(n_trials)
        if values.size < 2:
            if n > 1:
                raise ConfigError(
                    "one trial Sharpe ratio gives no variance across trials; pass the Sharpe "
                    "ratios of all trials (at least two) or var_trials"
                )
            return n, 0.0
        return n, float(np.var(values, ddof=1))
    n = 1.0 if n_trials is None else float(n_trials)
    if var_trials is not None:
        return n, float(var_trials)
    if n != 1.0:
        raise ConfigError(
            f"n_trials={n_trials!r} needs the spread of the trials' Sharpe ratios: pass "
            "trial_sharpes (the per-period Sharpe ratio of every trial) or var_trials"
        )
    return n, 0.0


def deflated_sharpe_ratio(
    returns: Sequence[float] | np.ndarray,
    n_trials: float | None = None,
    *,
    trial_sharpes: Sequence[float] | np.ndarray | None = None,
    var_trials: float | None = None,
    risk_free: float = 0.0,
) -> float:
    """Deflated Sharpe Ratio of the returns of a strategy selected among several trials.

    ``DSR = PSR(SR0)`` where ``SR0`` is :func:`expected_max_sharpe` of the trials. See the module
    docstring for how ``N`` and ``V`` are resolved; with one trial ``DSR = PSR(0)``.

    :param returns: per-period simple returns of the selected strategy.
    :param n_trials: number of (effective, independent) trials; defaults to
        ``len(trial_sharpes)`` or 1.
    :param trial_sharpes: per-period Sharpe ratios of all trials (their variance is ``V``).
    :param var_trials: variance of the trials' per-period Sharpe ratios, when the list is unknown.
    :param risk_free: per-period risk-free return.
    :return: DSR in [0, 1], NaN when the returns do not define a Sharpe ratio.
    :raises ConfigError: for ``n_trials > 1`` without a variance, or invalid trial inputs.
    """
    n, var = resolve_trials(n_trials, trial_sharpes, var_trials)
    sr0 = expected_max_sharpe(n, var)
    sr, skew, kurt, count = sharpe_stats(returns, risk_free)
    return probabilistic_sharpe_ratio(sr, sr0, count, skew, kurt)


def effective_n_trials(returns: np.ndarray) -> float:
    """Effective number of independent trials ``N = ρ̄ + (1 - ρ̄) M`` (module docstring).

    :param returns: ``[T, M]`` per-period returns, one column per trial, aligned in time.
    :return: ``N`` in ``[1, M]``.
    :raises ConfigError: not a 2-D matrix, no trial, or fewer than two complete rows with
        ``M > 1``.
    """
    r = np.asarray(returns, dtype=float)
    if r.ndim != 2 or r.shape[1] < 1:
        raise ConfigError(f"returns must be a [T, M] matrix with M >= 1, got shape {r.shape}")
    m = r.shape[1]
    if m == 1:
        return 1.0
    r = r[np.all(np.isfinite(r), axis=1)]
    if r.shape[0] < 2:
        raise ConfigError("fewer than two periods where every trial has a return: the trials' "
                          "correlation is undefined")
    dev = r - r.mean(axis=0)
    std = np.sqrt(np.sum(dev**2, axis=0))
    with np.errstate(all="ignore"):
        corr = (dev.T @ dev) / np.outer(std, std)
    pairs = corr[np.triu_indices(m, k=1)]
    pairs = pairs[np.isfinite(pairs)]
    rho = float(np.clip(pairs.mean(), 0.0, 1.0)) if pairs.size else 0.0
    return rho + (1.0 - rho) * m


def min_track_record_length(
    sr: float, sr_benchmark: float, skew: float = 0.0, kurtosis: float = 3.0, alpha: float = 0.05
) -> float:
    """Minimum number of observations for ``PSR(sr_benchmark) >= 1 - alpha`` (MinTRL).

    :param sr: observed per-period Sharpe ratio.
    :param sr_benchmark: per-period benchmark Sharpe ratio ``SR*``.
    :param skew: skewness of the returns.
    :param kurtosis: RAW kurtosis of the returns (normal = 3).
    :param alpha: significance level in (0, 1); 0.05 asks for 95 % confidence.
    :return: MinTRL in observations (bars); ``inf`` when ``sr <= sr_benchmark``, NaN when
        undefined.
    :raises ConfigError: when ``alpha`` is not in (0, 1), or ``kurtosis < 1 + skew²``.
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha!r}")
    if not all(math.isfinite(float(v)) for v in (sr, sr_benchmark, skew, kurtosis)):
        return math.nan
    _check_kurtosis(skew, kurtosis)
    var = _variance_term(sr, skew, kurtosis)
    if not var > 0.0:
        return math.nan
    if sr <= sr_benchmark:
        return math.inf
    q = _NORMAL.inv_cdf(1.0 - alpha) / (sr - sr_benchmark)
    return 1.0 + var * q * q
