"""Metrics of a backtest: one function, :func:`compute_metrics`, and every definition it uses.

The result is a nested dict that ``json.dumps(result, allow_nan=False)`` always accepts: a value
that is mathematically undefined on the given data (a Sortino ratio without losing bars, a profit
factor without losing trades, a Sharpe ratio of a flat equity curve, anything that overflows) is
``None``, and its dotted key (``"performance.sortino"``) is listed in ``result["undefined"]``.
A value that is ``None`` because its input was not given (no ``reward`` column, no trades) is
*not* listed there; a whole section is ``None`` when its input is missing (``trades``,
``reward``, ``benchmark``, ``costs``).

All ratios and returns are fractions (0.25 means 25 %); money is in the account currency.

Returns and annualization
-------------------------
* **Per-bar returns** are simple returns of the marked-to-market equity curve, with the initial
  capital as the value before the first bar: ``r_0 = equity_0 / initial_capital - 1`` and
  ``r_t = equity_t / equity_{t-1} - 1``. So compounding the returns gives the total return
  exactly, and ``n_returns == bars``. (If the first row of ``steps`` is the untouched starting
  state, ``r_0`` is simply 0.) A return whose previous equity is not finite or ``<= 0``
  (after a bankruptcy) is undefined and left out of every return statistic; how many were left
  out is ``data_quality.nonfinite_returns``.
* **Annualization factor** ``A`` = bars per year, **observed in the data**
  (:func:`rltrade.evaluation.series.infer_bars_per_year`): the bars in the whole weeks from the
  first bar, per week, times the weeks of a year. So a 24/7 market gets its calendar value
  (8,766 for ``1h``), EURUSD 1h about 6,200 (24/5), SPY regular-hours 1-minute bars about
  98,000, daily US stocks about 252. A sample shorter than two whole weeks falls back to the
  timeframe's 24/7 calendar (``parse_timeframe(timeframe).bars_per_year``) and says so. Pass
  ``bars_per_year=`` to override. ``run.bars_per_year_source`` is ``"calendar"``,
  ``"observed"``, ``"timeframe"`` or ``"override"``; ``run.bars_per_year_basis`` says what it
  was based on
  (``"observed: 4,993 bars in 42 whole weeks from 2017-04-19"``). With the bars' market
  calendar (``calendar=``, a backtest passes its dataset's), ``A`` is the calendar's bars per
  year and the source ``"calendar"`` (``"calendar: XNYS-RTH, 97,740 1m bars a year (sessions
  of 2024)"``).
  The number of years of a run is ``bars / A`` (as in empyrical and quantstats), not calendar time.
* **Risk-free rate**: ``risk_free_rate`` is annual (default 0); per bar it is
  ``rf = (1 + risk_free_rate) ** (1 / A) - 1``.

run
---
``id``, ``timeframe`` (canonical), ``start`` (timestamp of the first bar, its open), ``end``
(close of the last bar = its timestamp + one bar), ``duration_days`` (``end - start`` in days),
``bars``, ``initial_capital``, ``bars_per_year`` (``A``), ``bars_per_year_source``
(``"calendar"``, ``"observed"``, ``"timeframe"`` or ``"override"``), ``bars_per_year_basis``
(the sentence behind it), ``risk_free_rate`` (annual). Timestamps are UTC ISO 8601.

performance
-----------
* ``total_return`` = ``equity_last / initial_capital - 1`` (marked to market).
* ``total_return_realized`` = ``realized_equity_last / initial_capital - 1`` when ``steps`` has a
  ``realized_equity`` column, else ``sum(trades.net_pnl) / initial_capital`` when trades are
  given, else ``None``.
* ``cagr`` = ``(1 + total_return) ** (A / bars) - 1`` (empyrical's ``annual_return``); undefined
  when the final equity is negative. Short runs extrapolate wildly: read it with ``years``.
* ``years`` = ``bars / A``.
* ``annual_volatility`` = ``std(r, ddof=1) * sqrt(A)``.
* ``sharpe`` = ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(A)`` (empyrical's ``sharpe_ratio``).
* ``sortino`` = ``mean(r - rf) * A / (sqrt(mean(min(r - rf, 0)²)) * sqrt(A))``: the downside
  deviation uses *all* bars with target ``rf`` (0 by default), the standard definition and
  empyrical's ``sortino_ratio``. Undefined (not infinite) when no bar is below the target, and
  with fewer than two returns.
* ``max_drawdown`` = ``min_t(equity_t / max_{s<=t} equity_s - 1)`` over the curve that starts at
  the initial capital; a negative fraction (-0.25 = 25 % below the peak), 0 without drawdown.
* ``calmar`` = ``cagr / |max_drawdown|``; undefined when there is no drawdown.

A dispersion below ``1e-12 × max|r|`` counts as zero (floating-point noise of a constant-return
curve), which makes Sharpe, volatility-based ratios and the significance section undefined rather
than astronomically large.

risk
----
* ``exposure_time``: share of bars with a non-zero ``position``.
* ``avg_exposure`` / ``max_exposure``: mean / max over bars of ``|position × close| / equity``
  (gross exposure as a fraction of equity, 2.0 = 2× leverage); flat bars count as 0; bars with
  equity ``<= 0`` are left out.
* ``turnover``: ``sum_t |Δposition_t × close_t| / mean(equity)`` with ``Δposition_0 =
  position_0`` (the run starts flat); traded value is approximated at the bar's close.
  ``annual_turnover`` = ``turnover × A / bars``.
* ``stop_loss_count``: ``trades.stop_triggered`` summed when trades are given, else
  ``steps.stop_triggered`` summed (bars where a stop fired), else ``None``.
  ``stop_loss_rate`` = ``stop_loss_count / number of trades`` (needs trades).
* ``cvar_95`` / ``cvar_99``: historical expected shortfall of per-bar returns, as a (negative)
  return: the mean of the ``k + 1`` worst returns with ``k = floor((n - 1) × (1 - level))``
  (empyrical's ``conditional_value_at_risk``). quantstats' ``cvar`` uses a parametric VaR cutoff
  and differs.
* ``max_drawdown_duration_bars`` / ``..._days``: the longest time from a peak of the equity curve
  (initial capital included, at ``start``) to the first bar back at or above it, or to the last
  bar when it never recovered (``drawdown_recovered`` says which). Equity of bar ``t`` is
  timed at that bar's close.
* ``tail_hit_rate``: share of bars whose return is more than 2 standard deviations (``ddof=1``)
  from the mean return, ``|r - mean(r)| > 2 std(r)``. About 0.0455 for normal returns; more means
  fat tails.
* ``interventions``: the risk manager's intervention counts by reason, passed through;
  ``interventions_total`` is their sum.

trades (when ``trades`` is given)
---------------------------------
A win is a trade with ``net_pnl > 0``, a loss one with ``net_pnl < 0`` (break-even is neither).
``count``, ``wins``, ``losses``, ``win_rate`` = wins / count, ``profit_factor`` = sum of winning
net PnL / |sum of losing net PnL| (undefined without losses), ``total_net_pnl``,
``total_gross_pnl``, ``total_fees``, ``avg_net_pnl``, ``median_net_pnl``, ``avg_win``,
``avg_loss`` (negative), ``largest_win``, ``largest_loss`` (negative), ``avg_duration_bars``,
``avg_duration_days`` (from ``exit_time - entry_time``, open trades left out), ``forced_closes``,
``by_side`` (count per ``side`` value). Rows with a non-finite ``net_pnl`` are left out and
counted in ``data_quality``.

reward (when ``steps`` has a ``reward`` column)
-----------------------------------------------
``sum``, ``mean``, ``std`` (``ddof=1``) of the finite rewards, and ``corr_with_return``: Pearson
correlation of ``reward_t`` with the same bar's return ``r_t``.

data_quality
------------
``equity_min``, ``equity_max`` (finite values), ``bankrupt`` (equity ever ``<= 0``),
``nan_counts`` and ``inf_counts`` per numeric input column (``"steps.equity"``,
``"trades.net_pnl"``, ``"benchmark"``...), ``nonfinite_returns``.

benchmark (when ``benchmark_equity`` is given)
----------------------------------------------
The benchmark is an equity curve aligned with ``steps`` (same length, or a Series reindexed on the
steps' timestamps). Its first value is its starting value, so its returns start at the second bar,
and the strategy is compared on the same bars ``t >= 1`` (``r_t`` vs ``b_t``).

* ``total_return`` = ``B_last / B_first - 1``; ``excess_total_return`` = strategy
  ``total_return`` minus it.
* ``beta`` = ``cov(r - rf, b - rf) / var(b - rf)`` (OLS slope, as in empyrical).
* ``alpha_per_period`` = ``mean((r - rf) - beta (b - rf))``; ``alpha`` = ``alpha_per_period × A``
  (arithmetic annualization, like the Sharpe mean; empyrical compounds it,
  ``(1 + alpha_per_period) ** A - 1``, which overflows for minute bars).
* ``information_ratio`` = ``mean(r - b) / std(r - b, ddof=1) × sqrt(A)``;
  ``tracking_error`` = ``std(r - b, ddof=1) × sqrt(A)``; ``correlation`` of ``r`` and ``b``.

significance
------------
From :mod:`rltrade.evaluation.significance`, on the per-bar excess returns ``r - rf``:
``sharpe_per_period`` (= ``sharpe / sqrt(A)``), ``skew``, ``kurtosis`` (raw, normal = 3),
``n_returns``; ``psr`` = PSR against a per-period benchmark Sharpe of 0; ``n_trials`` and
``trial_sharpe_variance`` used; ``expected_max_sharpe`` (per period) and ``dsr`` = PSR against
it (= ``psr`` for one trial); ``min_track_record_bars`` (MinTRL for ``PSR(0) >= 1 -
alpha``, undefined when the Sharpe ratio is not positive), ``min_track_record_years`` =
``/ A``, and ``track_record_sufficient`` (``n_returns >= MinTRL``; ``False`` when the Sharpe
ratio is not positive, ``None`` when MinTRL is undefined for another reason).
``trial_sharpes`` must be per-period Sharpe ratios (``significance.sharpe_per_period`` of each
trial's metrics); ``n_trials`` defaults to their count, or 1. ``n_trials > 1`` with neither
``trial_sharpes`` nor ``var_trials`` is refused with :class:`~rltrade.errors.ConfigError`.

costs (when ``costs`` is given)
-------------------------------
``costs`` holds totals in money (``fees``, ``spread_cost``, ``slippage_cost``, ``funding``: the
perpetual's funding paid, negative when received; missing ones count as 0; any other numeric key
is kept and counted too). ``total`` is their sum.
With ``net_pnl = equity_last - initial_capital`` and ``gross_pnl = net_pnl + total`` (the PnL the
same trades would have made without costs), ``share_of_gross_pnl[k] = costs[k] / gross_pnl`` and
``total_share_of_gross_pnl = total / gross_pnl``: the fraction of the pre-cost profit eaten by each
cost. Undefined when ``gross_pnl <= 0`` (no profit to eat into). ``total_to_initial_capital`` =
``total / initial_capital`` and ``per_trade`` = ``total / number of trades`` are always
comparable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from rltrade.data.timeframes import Timeframe, parse_timeframe
from rltrade.errors import ConfigError, DataError
from rltrade.evaluation.series import (
    align_benchmark,
    drawdown,
    equity_returns,
    gross_exposure,
    numeric,
    resolve_bars_per_year,
    running_peak,
    simple_returns,
    source_kind,
    steps_index,
    total_return,
)
from rltrade.evaluation.significance import (
    expected_max_sharpe,
    is_zero_dispersion,
    min_track_record_length,
    probabilistic_sharpe_ratio,
    resolve_trials,
    sharpe_stats,
)

__all__ = ["compute_metrics", "json_ready"]

_REQUIRED_STEPS = ("equity", "position", "close")
_SECONDS_PER_DAY = 86400.0
NAN = math.nan


# --------------------------------------------------------------------------------------------
# small numeric helpers: all take finite-filtered float arrays and return NaN when undefined
# --------------------------------------------------------------------------------------------


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else NAN


def _std(x: np.ndarray) -> float:
    """Sample standard deviation (ddof=1); NaN below two values or without dispersion."""
    if x.size < 2:
        return NAN
    sd = float(np.std(x, ddof=1))
    return NAN if is_zero_dispersion(sd, x) else sd


def _div(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return NAN
    return float(np.float64(a) / np.float64(b))


def _nonzero_count(values: Any) -> int:
    v = numeric(values)
    return int(np.sum(np.isfinite(v) & (v != 0)))


def _nonfinite_counts(
    frame: pd.DataFrame | None, prefix: str, nan_counts: dict[str, int], inf_counts: dict[str, int]
) -> None:
    if frame is None:
        return
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_bool_dtype(series.dtype) or not (
            pd.api.types.is_numeric_dtype(series.dtype)
        ):
            if pd.api.types.is_datetime64_any_dtype(series.dtype):
                nan_counts[f"{prefix}.{column}"] = int(series.isna().sum())
            continue
        values = series.to_numpy(dtype=float, na_value=np.nan)
        nan_counts[f"{prefix}.{column}"] = int(np.isnan(values).sum())
        inf_counts[f"{prefix}.{column}"] = int(np.isinf(values).sum())


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


def _historical_cvar(r: np.ndarray, level: float) -> float:
    if r.size == 0:
        return NAN
    k = int((r.size - 1) * (1.0 - level))
    return float(np.mean(np.partition(r, k)[: k + 1]))


def _drawdown_stats(curve: np.ndarray, times_ns: np.ndarray) -> dict[str, Any]:
    """Max drawdown and longest drawdown duration of ``curve`` (NaN points are skipped)."""
    ok = np.isfinite(curve)
    values, idx, times = curve[ok], np.flatnonzero(ok), times_ns[ok]
    if values.size == 0:
        return {"max_drawdown": NAN, "bars": 0, "days": 0.0, "recovered": True}
    peak = running_peak(values)
    dd = drawdown(values)
    max_dd = float(np.min(dd[np.isfinite(dd)])) if np.isfinite(dd).any() else NAN
    is_high = values >= peak
    last_high = np.maximum.accumulate(np.where(is_high, np.arange(values.size), 0))
    # A drawdown runs from the last high to the first point back at a high (a recovery), or to
    # the last point when the curve ends below its peak.
    rec = np.flatnonzero(is_high[1:] & ~is_high[:-1]) + 1
    starts, ends = last_high[rec - 1], rec
    recovered = np.ones(rec.size, dtype=bool)
    if not is_high[-1]:
        starts = np.append(starts, last_high[-1])
        ends = np.append(ends, values.size - 1)
        recovered = np.append(recovered, False)
    best_bars, best_days, best_recovered = 0, 0.0, True
    if ends.size:
        lengths = idx[ends] - idx[starts]
        best = int(np.argmax(lengths))
        best_bars = int(lengths[best])
        best_days = float(times[ends[best]] - times[starts[best]]) / 1e9 / _SECONDS_PER_DAY
        best_recovered = bool(recovered[best])
    return {
        "max_drawdown": max_dd,
        "bars": best_bars,
        "days": best_days,
        "recovered": best_recovered,
    }


def _trades_section(trades: pd.DataFrame) -> tuple[dict[str, Any], int]:
    if "net_pnl" not in trades.columns:
        raise DataError(
            "trades must have a net_pnl column (PnL after costs per closed trade); "
            f"got columns {list(trades.columns)}"
        )
    pnl_all = numeric(trades["net_pnl"])
    valid = np.isfinite(pnl_all)
    pnl = pnl_all[valid]
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    count = int(pnl.size)

    def column_sum(name: str) -> float | None:
        if name not in trades.columns:
            return None
        return float(np.sum(_finite(numeric(trades[name]))))

    avg_duration_days: float | None = None
    if {"entry_time", "exit_time"} <= set(trades.columns):
        try:
            entry = pd.to_datetime(trades["entry_time"], utc=True)
            exit_ = pd.to_datetime(trades["exit_time"], utc=True)
            held = ((exit_ - entry).dt.total_seconds() / _SECONDS_PER_DAY).to_numpy(
                dtype=float, na_value=np.nan
            )
            avg_duration_days = _mean(_finite(held))
        except (TypeError, ValueError):
            avg_duration_days = None
    by_side: dict[str, int] = {}
    if "side" in trades.columns:
        for side, n in trades["side"].astype(str).value_counts(sort=False).items():
            by_side[str(side)] = int(n)
    section = {
        "count": count,
        "wins": int(wins.size),
        "losses": int(losses.size),
        "win_rate": _div(float(wins.size), float(count)),
        "profit_factor": _div(float(np.sum(wins)), abs(float(np.sum(losses))))
        if losses.size
        else NAN,
        "total_net_pnl": float(np.sum(pnl)),
        "total_gross_pnl": column_sum("gross_pnl"),
        "total_fees": column_sum("fees"),
        "avg_net_pnl": _mean(pnl),
        "median_net_pnl": float(np.median(pnl)) if count else NAN,
        "avg_win": _mean(wins),
        "avg_loss": _mean(losses),
        "largest_win": float(np.max(wins)) if wins.size else NAN,
        "largest_loss": float(np.min(losses)) if losses.size else NAN,
        "avg_duration_bars": _mean(_finite(numeric(trades["duration_bars"])))
        if "duration_bars" in trades.columns
        else None,
        "avg_duration_days": avg_duration_days,
        "forced_closes": _nonzero_count(trades["forced_close"])
        if "forced_close" in trades.columns
        else None,
        "by_side": by_side,
    }
    return section, count


def _benchmark_section(
    benchmark_equity: Any,
    index: pd.DatetimeIndex,
    equity: np.ndarray,
    strategy_total: float,
    rf: float,
    a: float,
    nan_counts: dict[str, int],
    inf_counts: dict[str, int],
) -> dict[str, Any]:
    bench = align_benchmark(benchmark_equity, index)
    nan_counts["benchmark"] = int(np.isnan(bench).sum())
    inf_counts["benchmark"] = int(np.isinf(bench).sum())
    b = simple_returns(bench)
    r = simple_returns(equity)
    both = np.isfinite(b) & np.isfinite(r)
    r_x, b_x = r[both] - rf, b[both] - rf
    beta = alpha_pp = NAN
    if b_x.size >= 2:
        b_res = b_x - np.mean(b_x)
        var_b = float(np.mean(b_res * b_res))
        if not is_zero_dispersion(math.sqrt(var_b), b_x):
            beta = float(np.mean(b_res * r_x)) / var_b
            alpha_pp = float(np.mean(r_x - beta * b_x))
    active = r[both] - b[both]
    sd_active = _std(active)
    finite_bench = bench[np.isfinite(bench)]
    b_total = total_return(bench)
    correlation = NAN
    if both.sum() >= 2 and not math.isnan(_std(r[both])) and not math.isnan(_std(b[both])):
        correlation = float(np.corrcoef(r[both], b[both])[0, 1])
    return {
        "total_return": b_total,
        "excess_total_return": strategy_total - b_total,
        "alpha": alpha_pp * a,
        "alpha_per_period": alpha_pp,
        "beta": beta,
        "information_ratio": _div(_mean(active), sd_active) * math.sqrt(a),
        "tracking_error": sd_active * math.sqrt(a),
        "correlation": correlation,
        "n_returns": int(both.sum()),
        "equity_min": float(np.min(finite_bench)) if finite_bench.size else NAN,
        "equity_max": float(np.max(finite_bench)) if finite_bench.size else NAN,
    }


def _costs_section(
    costs: Mapping[str, float], net_pnl: float, initial_capital: float, n_trades: int | None
) -> dict[str, Any]:
    totals: dict[str, float] = {"fees": 0.0, "spread_cost": 0.0, "slippage_cost": 0.0,
                                "funding": 0.0}
    for key, value in costs.items():
        try:
            totals[str(key)] = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"costs[{key!r}] must be a number, got {value!r}") from exc
    total = float(np.sum(np.fromiter(totals.values(), dtype=float)))
    gross = net_pnl + total
    positive = math.isfinite(gross) and gross > 0
    return {
        **totals,
        "total": total,
        "net_pnl": net_pnl,
        "gross_pnl": gross,
        "share_of_gross_pnl": {k: _div(v, gross) if positive else NAN for k, v in totals.items()},
        "total_share_of_gross_pnl": _div(total, gross) if positive else NAN,
        "total_to_initial_capital": _div(total, initial_capital),
        "per_trade": _div(total, float(n_trades)) if n_trades is not None else None,
    }


# --------------------------------------------------------------------------------------------
# JSON safety
# --------------------------------------------------------------------------------------------


def json_ready(obj: Any, path: str, undefined: list[str],
               fallback: Callable[[Any], Any] | None = None) -> Any:
    """``obj`` as plain Python types that ``json.dumps(..., allow_nan=False)`` accepts.

    Non-finite floats become ``None`` and their dotted path is appended to ``undefined``;
    numpy scalars become Python numbers, datetimes ISO strings, mappings dicts with string keys,
    sequences lists. Other types raise ``TypeError``, or go through ``fallback`` when given.

    :param obj: the value to convert.
    :param path: the dotted path of ``obj`` (``""`` at the top).
    :param undefined: receives the paths of the non-finite floats.
    :param fallback: converts a value of any other type (e.g. ``str``).
    :return: the JSON-ready value.
    :raises TypeError: for an unsupported type without ``fallback``.
    """
    if obj is None or isinstance(obj, str | bool):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        if math.isfinite(value):
            return value
        undefined.append(path)
        return None
    if isinstance(obj, datetime):  # pd.Timestamp included
        return obj.isoformat()
    if isinstance(obj, Mapping):
        return {
            str(k): json_ready(v, f"{path}.{k}" if path else str(k), undefined, fallback)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple | np.ndarray):
        return [json_ready(v, f"{path}[{i}]", undefined, fallback) for i, v in enumerate(obj)]
    if fallback is not None:
        return fallback(obj)
    raise TypeError(f"metrics value at {path!r} has unsupported type {type(obj).__name__}")


# --------------------------------------------------------------------------------------------
# the public function
# --------------------------------------------------------------------------------------------


def compute_metrics(
    steps: pd.DataFrame,
    trades: pd.DataFrame | None = None,
    *,
    timeframe: str | Timeframe,
    initial_capital: float,
    benchmark_equity: pd.Series | Sequence[float] | np.ndarray | None = None,
    n_trials: float | None = None,
    trial_sharpes: Sequence[float] | np.ndarray | None = None,
    var_trials: float | None = None,
    costs: Mapping[str, float] | None = None,
    interventions: Mapping[str, int] | None = None,
    run_id: str | None = None,
    bars_per_year: float | None = None,
    risk_free_rate: float = 0.0,
    alpha: float = 0.05,
    calendar: str | None = None,
) -> dict[str, Any]:
    """Every metric of one backtest, as a JSON-ready nested dict (definitions: module docstring).

    :param steps: one row per bar, indexed by UTC timestamps, with columns ``equity`` (marked to
        market), ``position`` (units, signed), ``close``; optional ``reward``, ``stop_triggered``
        and ``realized_equity``.
    :param trades: closed trades, one row each, with at least ``net_pnl``; used when present:
        ``gross_pnl``, ``fees``, ``duration_bars``, ``entry_time``, ``exit_time``, ``side``,
        ``stop_triggered``, ``forced_close``.
    :param timeframe: bar timeframe (``"1h"``...): the bars' close times, and the annualization
        factor of samples too short to observe one.
    :param initial_capital: account value before the first bar (> 0).
    :param benchmark_equity: an equity curve aligned with ``steps`` (e.g. buy-and-hold).
    :param n_trials: number of trials the strategy was selected from (for the DSR); defaults to
        ``len(trial_sharpes)``, or 1.
    :param trial_sharpes: per-period Sharpe ratios of all the trials.
    :param var_trials: variance of the trials' per-period Sharpe ratios, if the list is unknown.
    :param costs: cost totals in money: ``fees``, ``spread_cost``, ``slippage_cost``,
        ``funding`` (and more).
    :param interventions: risk-manager intervention counts by reason.
    :param run_id: identifier of the run, copied to ``run.id``.
    :param bars_per_year: annualization factor override (e.g. 252 for daily equity bars);
        default: observed in the steps' timestamps (see the module docstring).
    :param risk_free_rate: annual risk-free rate for Sharpe/Sortino/alpha/PSR (default 0).
    :param alpha: significance level of the minimum track record length (default 0.05).
    :param calendar: the bars' market calendar (``XNYS-RTH``...): when given (and no
        ``bars_per_year``), the annualization factor is the calendar's bars per year
        (:func:`rltrade.evaluation.series.resolve_bars_per_year`).
    :return: the metrics dict, with the list of undefined keys under ``"undefined"``.
    :raises DataError: for unusable ``steps``, ``trades`` or benchmark.
    :raises ConfigError: for invalid settings (capital, bars per year, trials, costs).
    """
    if not isinstance(steps, pd.DataFrame):
        raise DataError(f"steps must be a pandas DataFrame, got {type(steps).__name__}")
    missing = [c for c in _REQUIRED_STEPS if c not in steps.columns]
    if missing:
        raise DataError(
            f"steps is missing column(s) {missing}; it needs equity, position and close per bar"
        )
    if len(steps) == 0:
        raise DataError("steps has no rows: there is nothing to measure")
    if trades is not None and not isinstance(trades, pd.DataFrame):
        raise DataError(f"trades must be a pandas DataFrame, got {type(trades).__name__}")
    capital = float(initial_capital)
    if not (math.isfinite(capital) and capital > 0):
        raise ConfigError(f"initial_capital must be a positive number, got {initial_capital!r}")
    rf_annual = float(risk_free_rate)
    if not (math.isfinite(rf_annual) and rf_annual > -1):
        raise ConfigError(f"risk_free_rate must be a number > -1, got {risk_free_rate!r}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha!r}")
    tf = parse_timeframe(timeframe)
    n_trials_used, var_trials_used = resolve_trials(n_trials, trial_sharpes, var_trials)
    index = steps_index(steps)
    a, a_source = resolve_bars_per_year(index, tf, bars_per_year, calendar)

    sr0 = expected_max_sharpe(n_trials_used, var_trials_used)
    with np.errstate(all="ignore"):
        bars = _bar_series(steps, index, tf, capital, a, rf_annual)
        result = _compute(
            bars,
            steps,
            trades,
            a_source,
            rf_annual,
            alpha,
            benchmark_equity,
            (n_trials_used, var_trials_used, sr0),
            costs,
            interventions,
            run_id,
        )
    undefined: list[str] = []
    clean = json_ready(result, "", undefined)
    clean["undefined"] = undefined
    return clean


# --------------------------------------------------------------------------------------------
# the steps of compute_metrics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bars:
    """The per-bar arrays every section reads (float64, NaN where unknown)."""

    tf: Timeframe
    index: pd.DatetimeIndex
    a: float  # bars per year
    rf: float  # per-bar risk-free return
    capital: float
    equity: np.ndarray
    position: np.ndarray
    close: np.ndarray
    curve: np.ndarray  # the initial capital, then the equity of every bar
    times_ns: np.ndarray  # time of each curve point: the first open, then each bar's close
    returns: np.ndarray  # one per bar, NaN where undefined
    r: np.ndarray  # the finite returns
    excess: np.ndarray  # r - rf

    @property
    def n(self) -> int:
        return len(self.index)


def _bar_series(steps: pd.DataFrame, index: pd.DatetimeIndex, tf: Timeframe, capital: float,
                a: float, rf_annual: float) -> _Bars:
    rf = float(np.power(1.0 + rf_annual, 1.0 / a) - 1.0)
    equity = numeric(steps["equity"])
    returns = equity_returns(equity, capital)
    r = _finite(returns)
    # Time of each curve point: the initial capital at the first bar's open, bar t at its close.
    open_ns = index.as_unit("ns").asi8
    close_ns = np.asarray(tf.close_times_ns(open_ns), dtype=np.int64)
    return _Bars(
        tf=tf, index=index, a=a, rf=rf, capital=capital, equity=equity,
        position=numeric(steps["position"]), close=numeric(steps["close"]),
        curve=np.concatenate([[capital], equity]),
        times_ns=np.concatenate([open_ns[:1], close_ns]),
        returns=returns, r=r, excess=r - rf,
    )


def _performance(b: _Bars, steps: pd.DataFrame, trades: pd.DataFrame | None,
                 dd: dict[str, Any]) -> dict[str, Any]:
    a = b.a
    last = b.equity[-1]
    total = float(last / b.capital - 1.0) if math.isfinite(last) else NAN
    years = b.n / a
    growth = 1.0 + total
    cagr = float(np.power(np.float64(growth), 1.0 / years) - 1.0) if growth >= 0 else NAN
    realized: float | None = None
    if "realized_equity" in steps.columns:
        realized = float(numeric(steps["realized_equity"])[-1] / b.capital - 1.0)
    elif trades is not None and "net_pnl" in trades.columns:
        realized = float(np.sum(_finite(numeric(trades["net_pnl"])))) / b.capital
    excess = b.excess
    downside = float(np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2))) if b.r.size >= 2 else NAN
    max_dd = dd["max_drawdown"]
    return {
        "total_return": total,
        "total_return_realized": realized,
        "cagr": cagr,
        "years": years,
        "annual_volatility": _std(b.r) * math.sqrt(a),
        "sharpe": _div(_mean(excess), _std(excess)) * math.sqrt(a),
        "sortino": _div(_mean(excess) * a, downside * math.sqrt(a)),
        "max_drawdown": max_dd,
        "calmar": _div(cagr, abs(max_dd)) if max_dd < 0 else NAN,
    }


def _intervention_counts(interventions: Mapping[str, int] | None) -> dict[str, int] | None:
    if interventions is None:
        return None
    reasons: dict[str, int] = {}
    for reason, count in interventions.items():
        try:
            value = int(count)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"interventions[{reason!r}] must be a count") from exc
        if value != count or value < 0:
            raise ConfigError(
                f"interventions[{reason!r}] must be a non-negative count, got {count!r}"
            )
        reasons[str(reason)] = value
    return reasons


def _stop_count(steps: pd.DataFrame, trades: pd.DataFrame | None) -> int | None:
    if trades is not None and "stop_triggered" in trades.columns:
        return _nonzero_count(trades["stop_triggered"])
    if "stop_triggered" in steps.columns:
        return _nonzero_count(steps["stop_triggered"])
    return None


def _risk(b: _Bars, steps: pd.DataFrame, trades: pd.DataFrame | None, n_trades: int | None,
          dd: dict[str, Any], interventions: Mapping[str, int] | None) -> dict[str, Any]:
    exposure = _finite(gross_exposure(b.position, b.close, b.equity))
    finite_pos = np.isfinite(b.position)
    traded = np.abs(np.diff(b.position, prepend=0.0) * b.close)
    mean_equity = _mean(_finite(b.equity))
    turnover = _div(float(np.sum(_finite(traded))), mean_equity) if mean_equity > 0 else NAN
    stop_count = _stop_count(steps, trades)
    sd = _std(b.r)
    tail = NAN
    if b.r.size >= 2 and not math.isnan(sd):
        tail = float(np.mean(np.abs(b.r - np.mean(b.r)) > 2.0 * sd))
    reasons = _intervention_counts(interventions)
    return {
        "exposure_time": _div(float(np.sum(b.position[finite_pos] != 0)),
                              float(finite_pos.sum())),
        "avg_exposure": _mean(exposure),
        "max_exposure": float(np.max(exposure)) if exposure.size else NAN,
        "turnover": turnover,
        "annual_turnover": turnover * b.a / b.n,
        "stop_loss_count": stop_count,
        "stop_loss_rate": _div(float(stop_count), float(n_trades))
        if stop_count is not None and n_trades is not None
        else None,
        "cvar_95": _historical_cvar(b.r, 0.95),
        "cvar_99": _historical_cvar(b.r, 0.99),
        "max_drawdown_duration_bars": dd["bars"],
        "max_drawdown_duration_days": dd["days"],
        "drawdown_recovered": dd["recovered"],
        "tail_hit_rate": tail,
        "interventions": reasons,
        "interventions_total": sum(reasons.values()) if reasons is not None else None,
    }


def _reward(b: _Bars, steps: pd.DataFrame) -> dict[str, Any] | None:
    if "reward" not in steps.columns:
        return None
    reward = numeric(steps["reward"])
    finite_reward = _finite(reward)
    both = np.isfinite(reward) & np.isfinite(b.returns)
    corr = NAN
    if both.sum() >= 2 and not (
        math.isnan(_std(reward[both])) or math.isnan(_std(b.returns[both]))
    ):
        corr = float(np.corrcoef(reward[both], b.returns[both])[0, 1])
    return {
        "sum": float(np.sum(finite_reward)),
        "mean": _mean(finite_reward),
        "std": _std(finite_reward),
        "corr_with_return": corr,
    }


def _data_quality(b: _Bars, nan_counts: dict[str, int],
                  inf_counts: dict[str, int]) -> dict[str, Any]:
    finite_equity = _finite(b.equity)
    return {
        "equity_min": float(np.min(finite_equity)) if finite_equity.size else NAN,
        "equity_max": float(np.max(finite_equity)) if finite_equity.size else NAN,
        "bankrupt": bool(np.any(finite_equity <= 0)),
        "nan_counts": nan_counts,
        "inf_counts": inf_counts,
        "nonfinite_returns": int(b.returns.size - b.r.size),
    }


def _significance(b: _Bars, trials: tuple[float, float, float], alpha: float) -> dict[str, Any]:
    sr, skew, kurt, n = sharpe_stats(b.r, b.rf)
    n_trials, var_trials, sr0 = trials
    min_trl = min_track_record_length(sr, 0.0, skew, kurt, alpha)
    return {
        "sharpe_per_period": sr,
        "skew": skew,
        "kurtosis": kurt,
        "n_returns": n,
        "benchmark_sharpe": 0.0,
        "psr": probabilistic_sharpe_ratio(sr, 0.0, n, skew, kurt),
        "n_trials": int(n_trials) if float(n_trials).is_integer() else n_trials,
        "trial_sharpe_variance": var_trials,
        "expected_max_sharpe": sr0,
        "dsr": probabilistic_sharpe_ratio(sr, sr0, n, skew, kurt),
        "alpha": alpha,
        "min_track_record_bars": min_trl,
        "min_track_record_years": min_trl / b.a,
        "track_record_sufficient": None if math.isnan(min_trl) else bool(n >= min_trl),
    }


def _run(b: _Bars, run_id: str | None, a_source: str, rf_annual: float) -> dict[str, Any]:
    return {
        "id": run_id,
        "timeframe": b.tf.name,
        "start": b.index[0],
        "end": pd.Timestamp(int(b.times_ns[-1]), unit="ns", tz="UTC"),
        "duration_days": float(b.times_ns[-1] - b.times_ns[0]) / 1e9 / _SECONDS_PER_DAY,
        "bars": b.n,
        "initial_capital": b.capital,
        "bars_per_year": b.a,
        "bars_per_year_source": source_kind(a_source),
        "bars_per_year_basis": a_source,
        "risk_free_rate": rf_annual,
    }


def _compute(
    b: _Bars,
    steps: pd.DataFrame,
    trades: pd.DataFrame | None,
    a_source: str,
    rf_annual: float,
    alpha: float,
    benchmark_equity: Any,
    trials: tuple[float, float, float],
    costs: Mapping[str, float] | None,
    interventions: Mapping[str, int] | None,
    run_id: str | None,
) -> dict[str, Any]:
    nan_counts: dict[str, int] = {}
    inf_counts: dict[str, int] = {}
    _nonfinite_counts(steps, "steps", nan_counts, inf_counts)
    _nonfinite_counts(trades, "trades", nan_counts, inf_counts)
    dd = _drawdown_stats(b.curve, b.times_ns)
    performance = _performance(b, steps, trades, dd)
    trades_section, n_trades = _trades_section(trades) if trades is not None else (None, None)
    data_quality = _data_quality(b, nan_counts, inf_counts)
    benchmark = None
    if benchmark_equity is not None:  # adds the benchmark's counts to data_quality
        benchmark = _benchmark_section(benchmark_equity, b.index, b.equity,
                                       performance["total_return"], b.rf, b.a, nan_counts,
                                       inf_counts)
    cost_section = None
    if costs is not None:
        last = b.equity[-1]
        net_pnl = float(last - b.capital) if math.isfinite(last) else NAN
        cost_section = _costs_section(costs, net_pnl, b.capital, n_trades)
    return {
        "run": _run(b, run_id, a_source, rf_annual),
        "performance": performance,
        "risk": _risk(b, steps, trades, n_trades, dd, interventions),
        "trades": trades_section,
        "reward": _reward(b, steps),
        "data_quality": data_quality,
        "benchmark": benchmark,
        "significance": _significance(b, trials, alpha),
        "costs": cost_section,
    }
