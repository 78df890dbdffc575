"""Tests of rltrade.evaluation.compute_metrics.

The common metrics are cross-checked against empyrical-reloaded and quantstats on the same return
series (to 1e-10 relative where the definitions match); where a definition legitimately differs
the test says why and checks a hand computation instead. Hand-made steps and trades frames pin
exposure, turnover, drawdown duration, trade statistics, costs and interventions; hypothesis
checks that no NaN or inf ever reaches the (JSON) output.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rltrade.errors import ConfigError, DataError
from rltrade.evaluation import compute_metrics, probabilistic_sharpe_ratio, sharpe_stats

REL = 1e-10
A = 252.0  # bars per year used in the cross-checks (daily equity bars)
CAPITAL = 10_000.0


def _index(n: int, freq: str = "D") -> pd.DatetimeIndex:
    return pd.date_range("2022-01-03", periods=n, freq=freq, tz="UTC")


def _returns(seed: int, n: int = 600) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 0.0005 + rng.standard_t(4, n) * 0.008 - 0.002 * np.abs(rng.normal(size=n))


def _steps(returns: np.ndarray, **extra: Any) -> pd.DataFrame:
    """Steps whose equity compounds ``returns`` from CAPITAL (so r_0 is returns[0])."""
    n = returns.size
    rng = np.random.default_rng(n)
    frame = pd.DataFrame(
        {
            "equity": CAPITAL * np.cumprod(1.0 + returns),
            "position": rng.integers(-2, 3, n).astype(float),
            "close": 100.0 + np.cumsum(rng.normal(0, 1, n)),
        },
        index=_index(n),
    )
    for key, value in extra.items():
        frame[key] = value
    return frame


def _metrics(
    steps: pd.DataFrame, trades: pd.DataFrame | None = None, **kwargs: Any
) -> dict[str, Any]:
    kwargs.setdefault("timeframe", "1d")
    kwargs.setdefault("initial_capital", CAPITAL)
    return compute_metrics(steps, trades, **kwargs)


def _assert_json_clean(result: dict[str, Any]) -> None:
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result
    for path in result["undefined"]:
        node: Any = result
        for part in path.split("."):
            node = node[part]
        assert node is None, path


# ------------------------------------------------------------ cross-checks: empyrical


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rf_annual", [0.0, 0.03])
def test_matches_empyrical(seed: int, rf_annual: float) -> None:
    ep = pytest.importorskip("empyrical")
    r = _returns(seed)
    m = _metrics(_steps(r), bars_per_year=A, risk_free_rate=rf_annual)
    perf, risk = m["performance"], m["risk"]
    rf = (1 + rf_annual) ** (1 / A) - 1

    assert perf["sharpe"] == pytest.approx(
        ep.sharpe_ratio(r, risk_free=rf, annualization=A), rel=REL
    )
    assert perf["sortino"] == pytest.approx(
        ep.sortino_ratio(r, required_return=rf, annualization=A), rel=REL
    )
    assert perf["annual_volatility"] == pytest.approx(
        ep.annual_volatility(r, annualization=A), rel=REL
    )
    assert perf["cagr"] == pytest.approx(ep.annual_return(r, annualization=A), rel=REL)
    assert perf["max_drawdown"] == pytest.approx(ep.max_drawdown(r), rel=REL)
    assert perf["calmar"] == pytest.approx(ep.calmar_ratio(r, annualization=A), rel=REL)
    assert perf["total_return"] == pytest.approx(ep.cum_returns_final(r), rel=REL)
    assert risk["cvar_95"] == pytest.approx(ep.conditional_value_at_risk(r, 0.05), rel=REL)
    assert risk["cvar_99"] == pytest.approx(ep.conditional_value_at_risk(r, 0.01), rel=REL)
    # Only a losing draw leaves something undefined: no track record proves a negative Sharpe.
    assert all(p.startswith("significance.min_track_record") for p in m["undefined"])


def test_first_bar_loss_counts_in_drawdown() -> None:
    """The initial capital is the first point of the curve, as in empyrical's drawdown."""
    ep = pytest.importorskip("empyrical")
    r = np.array([-0.1, 0.05, 0.02, -0.01, 0.03])
    m = _metrics(_steps(r), bars_per_year=A)
    assert m["performance"]["max_drawdown"] == pytest.approx(-0.1, rel=REL)
    assert m["performance"]["max_drawdown"] == pytest.approx(ep.max_drawdown(r), rel=REL)


@pytest.mark.parametrize("seed", [3, 4])
def test_benchmark_matches_empyrical(seed: int) -> None:
    ep = pytest.importorskip("empyrical")
    rng = np.random.default_rng(seed)
    b = rng.normal(0.0003, 0.01, 500)
    r = 0.0002 + 1.3 * b + rng.normal(0, 0.004, 500)
    bench_curve = 5_000.0 * np.cumprod(np.concatenate([[1.0], 1.0 + b[1:]]))
    m = _metrics(_steps(r), bars_per_year=A, benchmark_equity=bench_curve)
    bm = m["benchmark"]
    # The benchmark's first value is its start, so both are compared on bars 1..n-1.
    rs, bs = r[1:], b[1:]
    alpha_emp, beta_emp = ep.alpha_beta_aligned(rs, bs, annualization=A)
    assert bm["beta"] == pytest.approx(beta_emp, rel=REL)
    # empyrical compounds the per-period alpha, (1 + a) ** A - 1; we annualize arithmetically
    # (a * A, which cannot overflow for minute bars), so compare the per-period alpha.
    assert bm["alpha_per_period"] == pytest.approx((1 + alpha_emp) ** (1 / A) - 1, rel=1e-9)
    assert bm["alpha"] == pytest.approx(bm["alpha_per_period"] * A, rel=REL)
    assert bm["information_ratio"] == pytest.approx(
        ep.excess_sharpe(rs, bs) * math.sqrt(A), rel=REL
    )
    assert bm["tracking_error"] == pytest.approx(np.std(rs - bs, ddof=1) * math.sqrt(A), rel=REL)
    assert bm["total_return"] == pytest.approx(np.prod(1 + bs) - 1, rel=REL)
    assert bm["excess_total_return"] == pytest.approx(
        m["performance"]["total_return"] - bm["total_return"], rel=REL
    )
    assert bm["correlation"] == pytest.approx(np.corrcoef(rs, bs)[0, 1], rel=REL)
    assert bm["n_returns"] == 499


# ------------------------------------------------------------ cross-checks: quantstats


def test_matches_quantstats() -> None:
    qs = pytest.importorskip("quantstats")
    r = _returns(5)
    m = _metrics(_steps(r), bars_per_year=A)
    perf = m["performance"]
    series = pd.Series(r, index=_index(r.size).tz_localize(None))
    assert perf["sharpe"] == pytest.approx(qs.stats.sharpe(series, periods=252), rel=REL)
    assert perf["sortino"] == pytest.approx(qs.stats.sortino(series, periods=252), rel=REL)
    assert perf["annual_volatility"] == pytest.approx(
        qs.stats.volatility(series, periods=252), rel=REL
    )
    assert perf["cagr"] == pytest.approx(qs.stats.cagr(series, periods=252), rel=REL)
    assert perf["max_drawdown"] == pytest.approx(qs.stats.max_drawdown(series), rel=REL)


def test_cvar_is_historical_not_quantstats_parametric() -> None:
    """quantstats' ``cvar`` averages the returns below a *parametric* (normal) VaR, so its cutoff
    differs; ours is the historical expected shortfall, checked by hand here."""
    r = np.array([0.01, -0.05, 0.02, -0.03, 0.0, 0.015, -0.01, 0.005, -0.02, 0.03] * 10)
    m = _metrics(_steps(r), bars_per_year=A)
    # n = 100: k = floor(99 * 0.05) = 4 -> mean of the 5 worst returns (ten copies of -0.05).
    assert m["risk"]["cvar_95"] == pytest.approx(-0.05, rel=REL)
    # k = floor(99 * 0.01) = 0 -> the worst return.
    assert m["risk"]["cvar_99"] == pytest.approx(-0.05, rel=REL)
    r2 = np.linspace(-0.1, 0.1, 21)  # n = 21: k = floor(20 * 0.05) = 1 -> mean(-0.1, -0.09)
    assert _metrics(_steps(r2), bars_per_year=A)["risk"]["cvar_95"] == pytest.approx(-0.095)


# ------------------------------------------------------------------------------- run


def test_run_section_and_annualization() -> None:
    r = _returns(6, n=48)
    steps = _steps(r)
    steps.index = _index(48, "h")
    m = _metrics(steps, timeframe="60m", run_id="abc")
    run = m["run"]
    assert run["id"] == "abc"
    assert run["timeframe"] == "1h"
    assert run["bars"] == 48
    assert run["bars_per_year"] == pytest.approx(365.25 * 24)
    assert run["bars_per_year_source"] == "timeframe"
    assert run["start"] == "2022-01-03T00:00:00+00:00"
    assert run["end"] == "2022-01-05T00:00:00+00:00"  # close of the last bar
    assert run["duration_days"] == pytest.approx(2.0)
    assert run["initial_capital"] == CAPITAL
    assert m["performance"]["years"] == pytest.approx(48 / 8766)
    sharpe_24_7 = m["performance"]["sharpe"]
    equities = _metrics(steps, timeframe="1h", bars_per_year=252 * 6.5)
    assert equities["run"]["bars_per_year_source"] == "override"
    assert equities["performance"]["sharpe"] == pytest.approx(
        sharpe_24_7 * math.sqrt(252 * 6.5 / 8766), rel=REL
    )


def test_naive_index_is_utc() -> None:
    steps = _steps(_returns(7, n=10))
    naive = steps.copy()
    naive.index = naive.index.tz_localize(None)
    assert _metrics(naive) == _metrics(steps)


# ------------------------------------------------------------------ hand-made steps


def _hand_steps() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "equity": [1000.0, 1010.0, 990.0, 1000.0, 1020.0],
            "position": [0.0, 2.0, 2.0, -1.0, 0.0],
            "close": [100.0, 101.0, 99.0, 100.0, 102.0],
            "stop_triggered": [False, False, True, False, False],
            "realized_equity": [1000.0, 1000.0, 995.0, 995.0, 1018.0],
        },
        index=_index(5),
    )


def test_exposure_turnover_and_drawdown_by_hand() -> None:
    m = _metrics(_hand_steps(), initial_capital=1000.0, bars_per_year=A)
    risk = m["risk"]
    assert risk["exposure_time"] == pytest.approx(3 / 5)
    # |position * close| / equity: 0, 202/1010, 198/990, 100/1000, 0
    assert risk["avg_exposure"] == pytest.approx((0.2 + 0.2 + 0.1) / 5)
    assert risk["max_exposure"] == pytest.approx(0.2)
    # Δposition from flat: 0, 2, 0, -3, 1; traded value 0 + 202 + 0 + 300 + 102 = 604.
    turnover = 604 / np.mean([1000, 1010, 990, 1000, 1020])
    assert risk["turnover"] == pytest.approx(turnover)
    assert risk["annual_turnover"] == pytest.approx(turnover * A / 5)
    # No trades frame: stops come from the steps; no rate without trades.
    assert risk["stop_loss_count"] == 1
    assert risk["stop_loss_rate"] is None
    # Curve 1000 (start), 1000, 1010, 990, 1000, 1020: peak 1010 at point 2, back above at 5.
    assert m["performance"]["max_drawdown"] == pytest.approx(990 / 1010 - 1)
    assert risk["max_drawdown_duration_bars"] == 3
    assert risk["max_drawdown_duration_days"] == pytest.approx(3.0)
    assert risk["drawdown_recovered"] is True
    perf = m["performance"]
    assert perf["total_return"] == pytest.approx(0.02)
    assert perf["total_return_realized"] == pytest.approx(0.018)
    assert m["data_quality"]["equity_min"] == 990.0
    assert m["data_quality"]["equity_max"] == 1020.0
    assert m["data_quality"]["bankrupt"] is False
    assert m["significance"]["n_returns"] == 5


def test_unrecovered_drawdown() -> None:
    steps = _hand_steps()
    steps["equity"] = [1100.0, 1000.0, 1050.0, 1080.0, 1090.0]
    risk = _metrics(steps, initial_capital=1000.0)["risk"]
    # Peak 1100 at point 1 (bar 0), never regained: 4 bars to the end.
    assert risk["max_drawdown_duration_bars"] == 4
    assert risk["max_drawdown_duration_days"] == pytest.approx(4.0)
    assert risk["drawdown_recovered"] is False


def test_drawdown_duration_uses_timestamps() -> None:
    steps = _hand_steps()
    steps.index = pd.DatetimeIndex(
        ["2022-01-03", "2022-01-04", "2022-01-05", "2022-01-10", "2022-01-11"], tz="UTC"
    )
    risk = _metrics(steps, initial_capital=1000.0)["risk"]
    # From the close of bar 1 (01-05) to the close of bar 4 (01-12).
    assert risk["max_drawdown_duration_bars"] == 3
    assert risk["max_drawdown_duration_days"] == pytest.approx(7.0)


def test_tail_hit_rate_by_hand() -> None:
    r = np.array([0.001] * 18 + [0.05, -0.06])
    m = _metrics(_steps(r))
    mean, sd = r.mean(), r.std(ddof=1)
    assert m["risk"]["tail_hit_rate"] == pytest.approx(np.mean(np.abs(r - mean) > 2 * sd))
    assert m["risk"]["tail_hit_rate"] == pytest.approx(2 / 20)


def test_interventions_passthrough() -> None:
    m = _metrics(_hand_steps(), initial_capital=1000.0, interventions={"max_dd": 2, "lev": 0})
    assert m["risk"]["interventions"] == {"max_dd": 2, "lev": 0}
    assert m["risk"]["interventions_total"] == 2
    assert _metrics(_hand_steps(), initial_capital=1000.0)["risk"]["interventions"] is None
    for bad in ({"x": 1.5}, {"x": -1}, {"x": "many"}):
        with pytest.raises(ConfigError):
            _metrics(_hand_steps(), initial_capital=1000.0, interventions=bad)


def test_reward_section() -> None:
    r = _returns(8, n=50)
    m = _metrics(_steps(r, reward=2 * r + 1))
    rw = m["reward"]
    assert rw["sum"] == pytest.approx(np.sum(2 * r + 1))
    assert rw["mean"] == pytest.approx(np.mean(2 * r + 1))
    assert rw["std"] == pytest.approx(np.std(2 * r + 1, ddof=1))
    assert rw["corr_with_return"] == pytest.approx(1.0)
    assert _metrics(_steps(r))["reward"] is None


# ------------------------------------------------------------------ hand-made trades


def _hand_trades() -> pd.DataFrame:
    entry = pd.DatetimeIndex(
        ["2022-01-03", "2022-01-05", "2022-01-10", "2022-01-12", "2022-01-13"], tz="UTC"
    )
    return pd.DataFrame(
        {
            "entry_time": entry,
            "exit_time": entry + pd.to_timedelta([3, 5, 2, 1, 4], unit="D"),
            "entry_price": [100.0, 101.0, 99.0, 98.0, 97.0],
            "exit_price": [101.0, 100.0, 99.5, 98.0, 97.5],
            "quantity": [1.0, 1.0, 1.0, 1.0, 1.0],
            "side": ["long", "short", "long", "long", "short"],
            "gross_pnl": [102.0, -48.0, 31.0, 1.0, -19.0],
            "net_pnl": [100.0, -50.0, 30.0, 0.0, -20.0],
            "fees": [2.0, 2.0, 1.0, 1.0, 1.0],
            "duration_bars": [3, 5, 2, 1, 4],
            "stop_triggered": [False, True, False, False, True],
            "forced_close": [False, False, False, True, False],
        }
    )


def test_trade_metrics_by_hand() -> None:
    m = _metrics(_hand_steps(), _hand_trades(), initial_capital=1000.0)
    t = m["trades"]
    assert t["count"] == 5
    assert t["wins"] == 2 and t["losses"] == 2  # the break-even trade is neither
    assert t["win_rate"] == pytest.approx(0.4)
    assert t["profit_factor"] == pytest.approx(130 / 70)
    assert t["total_net_pnl"] == pytest.approx(60.0)
    assert t["total_gross_pnl"] == pytest.approx(67.0)
    assert t["total_fees"] == pytest.approx(7.0)
    assert t["avg_net_pnl"] == pytest.approx(12.0)
    assert t["median_net_pnl"] == pytest.approx(0.0)
    assert t["avg_win"] == pytest.approx(65.0)
    assert t["avg_loss"] == pytest.approx(-35.0)
    assert t["largest_win"] == pytest.approx(100.0)
    assert t["largest_loss"] == pytest.approx(-50.0)
    assert t["avg_duration_bars"] == pytest.approx(3.0)
    assert t["avg_duration_days"] == pytest.approx(3.0)
    assert t["forced_closes"] == 1
    assert t["by_side"] == {"long": 3, "short": 2}
    # With trades, stops are counted per trade.
    assert m["risk"]["stop_loss_count"] == 2
    assert m["risk"]["stop_loss_rate"] == pytest.approx(0.4)
    assert m["undefined"] == []


def test_trades_without_losses_or_trades() -> None:
    trades = _hand_trades()
    trades["net_pnl"] = [10.0, 5.0, 0.0, 1.0, 2.0]
    m = _metrics(_hand_steps(), trades, initial_capital=1000.0)
    assert m["trades"]["profit_factor"] is None
    assert "trades.profit_factor" in m["undefined"]
    assert "trades.avg_loss" in m["undefined"]
    empty = _metrics(_hand_steps(), trades.iloc[:0], initial_capital=1000.0)
    assert empty["trades"]["count"] == 0
    assert empty["trades"]["win_rate"] is None
    assert "risk.stop_loss_rate" in empty["undefined"]
    _assert_json_clean(empty)


def test_realized_return_from_trades_when_no_column() -> None:
    steps = _hand_steps().drop(columns="realized_equity")
    m = _metrics(steps, _hand_trades(), initial_capital=1000.0)
    assert m["performance"]["total_return_realized"] == pytest.approx(60 / 1000)
    assert _metrics(steps, initial_capital=1000.0)["performance"]["total_return_realized"] is None


def test_trades_need_net_pnl() -> None:
    with pytest.raises(DataError, match="net_pnl"):
        _metrics(_hand_steps(), _hand_trades().drop(columns="net_pnl"), initial_capital=1000.0)


# ------------------------------------------------------------------------------- costs


def test_cost_shares_by_hand() -> None:
    costs = {"fees": 6.0, "spread_cost": 3.0, "slippage_cost": 1.0}
    m = _metrics(_hand_steps(), _hand_trades(), initial_capital=1000.0, costs=costs)
    c = m["costs"]
    # net PnL 1020 - 1000 = 20, gross 20 + 10 = 30.
    assert c["total"] == pytest.approx(10.0)
    assert c["net_pnl"] == pytest.approx(20.0)
    assert c["gross_pnl"] == pytest.approx(30.0)
    assert c["share_of_gross_pnl"]["fees"] == pytest.approx(0.2)
    assert c["share_of_gross_pnl"]["spread_cost"] == pytest.approx(0.1)
    assert c["share_of_gross_pnl"]["slippage_cost"] == pytest.approx(1 / 30)
    assert c["total_share_of_gross_pnl"] == pytest.approx(1 / 3)
    assert c["total_to_initial_capital"] == pytest.approx(0.01)
    assert c["per_trade"] == pytest.approx(2.0)


def test_cost_shares_undefined_without_gross_profit() -> None:
    steps = _hand_steps()
    steps["equity"] = [1000.0, 990.0, 980.0, 970.0, 960.0]
    m = _metrics(steps, initial_capital=1000.0, costs={"fees": 5.0, "funding": 1.0})
    c = m["costs"]
    assert c["total"] == pytest.approx(6.0)  # extra keys count, missing ones are 0
    assert c["spread_cost"] == 0.0
    assert c["gross_pnl"] == pytest.approx(-34.0)
    assert c["total_share_of_gross_pnl"] is None
    assert "costs.share_of_gross_pnl.fees" in m["undefined"]
    assert "costs.total_share_of_gross_pnl" in m["undefined"]
    assert c["per_trade"] is None  # no trades given
    with pytest.raises(ConfigError):
        _metrics(steps, initial_capital=1000.0, costs={"fees": "a lot"})


# ------------------------------------------------------------------------- significance


def test_significance_section() -> None:
    r = _returns(9, n=1000) + 0.001  # a positive Sharpe ratio, so MinTRL exists
    m = _metrics(_steps(r), bars_per_year=A)
    sig = m["significance"]
    assert m["undefined"] == []
    sr, skew, kurt, n = sharpe_stats(r)
    assert sig["sharpe_per_period"] == pytest.approx(sr, rel=REL)
    assert sig["sharpe_per_period"] * math.sqrt(A) == pytest.approx(
        m["performance"]["sharpe"], rel=REL
    )
    assert sig["skew"] == pytest.approx(skew, rel=REL)
    assert sig["kurtosis"] == pytest.approx(kurt, rel=REL)
    assert sig["n_returns"] == n == 1000
    assert sig["psr"] == pytest.approx(probabilistic_sharpe_ratio(sr, 0.0, n, skew, kurt))
    assert sig["n_trials"] == 1
    assert sig["dsr"] == sig["psr"]
    assert sig["expected_max_sharpe"] == 0.0
    assert sig["min_track_record_years"] == pytest.approx(sig["min_track_record_bars"] / A)
    assert sig["track_record_sufficient"] is (n >= sig["min_track_record_bars"])

    trials = np.random.default_rng(0).normal(0.0, 0.03, 30)
    deflated = _metrics(_steps(r), bars_per_year=A, trial_sharpes=trials)["significance"]
    assert deflated["n_trials"] == 30
    assert deflated["trial_sharpe_variance"] == pytest.approx(np.var(trials, ddof=1))
    assert deflated["expected_max_sharpe"] > 0
    assert deflated["dsr"] < deflated["psr"] == sig["psr"]
    via_var = _metrics(_steps(r), bars_per_year=A, n_trials=30, var_trials=np.var(trials, ddof=1))
    assert via_var["significance"]["dsr"] == pytest.approx(deflated["dsr"], rel=REL)


def test_dsr_with_skfolio_through_compute_metrics() -> None:
    measures = pytest.importorskip("skfolio.measures")
    r = _returns(10, n=800)
    trials = np.random.default_rng(1).normal(0.01, 0.02, 25)
    sig = _metrics(_steps(r), trial_sharpes=trials)["significance"]
    assert sig["dsr"] == pytest.approx(measures.deflated_sharpe_ratio(r, trials), rel=REL)
    assert sig["psr"] == pytest.approx(measures.probabilistic_sharpe_ratio(r), rel=REL)


def test_several_trials_need_their_spread() -> None:
    with pytest.raises(ConfigError, match="trial_sharpes"):
        _metrics(_steps(_returns(0, n=50)), n_trials=10)


def test_losing_strategy_has_no_min_track_record() -> None:
    r = -np.abs(_returns(11, n=100)) - 0.001
    m = _metrics(_steps(r))
    assert m["significance"]["min_track_record_bars"] is None
    assert "significance.min_track_record_bars" in m["undefined"]
    assert m["significance"]["track_record_sufficient"] is False
    assert m["significance"]["psr"] < 0.5


# ------------------------------------------------------------------ degenerate curves


def _degenerate(equity: list[float]) -> pd.DataFrame:
    n = len(equity)
    return pd.DataFrame(
        {"equity": equity, "position": [1.0] * n, "close": [10.0] * n}, index=_index(n)
    )


@pytest.mark.parametrize(
    ("name", "equity"),
    [
        ("flat", [CAPITAL] * 30),
        ("constant_growth", list(CAPITAL * 1.01 ** np.arange(1, 31))),
        ("one_bar", [CAPITAL * 1.02]),
        ("one_bar_flat", [CAPITAL]),
        ("with_zeros", [CAPITAL, 5000.0, 0.0, 0.0, 100.0, 200.0]),
        ("all_losses", list(CAPITAL * 0.97 ** np.arange(1, 21))),
        ("all_wins", list(CAPITAL * np.cumprod(1 + np.linspace(0.001, 0.02, 20)))),
        ("negative", [CAPITAL, -500.0, -200.0, 100.0]),
        ("nan_inf", [CAPITAL, np.nan, 9000.0, np.inf, 9500.0, -np.inf, 9700.0]),
        ("all_nan", [np.nan, np.nan]),
    ],
)
def test_degenerate_curves_are_json_clean(name: str, equity: list[float]) -> None:
    steps = _degenerate(equity)
    m = _metrics(
        steps,
        _hand_trades().iloc[:0],
        benchmark_equity=np.full(len(equity), 100.0),
        costs={"fees": 1.0},
        interventions={},
    )
    _assert_json_clean(m)
    perf = m["performance"]
    if name == "flat":
        assert perf["sharpe"] is None and "performance.sharpe" in m["undefined"]
        assert perf["max_drawdown"] == 0.0
        assert perf["calmar"] is None
        assert perf["total_return"] == 0.0
    if name == "constant_growth":
        # Every bar +1 %: no dispersion, so no Sharpe ratio (not 1e16 from rounding noise).
        assert perf["sharpe"] is None and perf["cagr"] is not None
    if name == "all_wins":
        assert perf["sortino"] is None and "performance.sortino" in m["undefined"]
        assert perf["sharpe"] is not None
    if name == "all_losses":
        assert perf["max_drawdown"] == pytest.approx(0.97**20 - 1)
        assert m["risk"]["drawdown_recovered"] is False
    if name in ("with_zeros", "negative"):
        assert m["data_quality"]["bankrupt"] is True
    if name == "nan_inf":
        dq = m["data_quality"]
        assert dq["nan_counts"]["steps.equity"] == 1
        assert dq["inf_counts"]["steps.equity"] == 2
        assert dq["nonfinite_returns"] == 6
        assert dq["equity_min"] == 9000.0
    # A flat benchmark has no beta.
    assert m["benchmark"]["beta"] is None


def test_sortino_no_losses_is_none_not_inf() -> None:
    r = np.abs(_returns(12, n=100)) + 1e-4
    m = _metrics(_steps(r))
    assert m["performance"]["sortino"] is None
    assert m["performance"]["sharpe"] > 0


@st.composite
def _weird_inputs(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 25))
    special = st.sampled_from([0.0, -1.0, 1e-300, 1e300, -1e300, np.nan, np.inf, -np.inf, 1e4])
    value = st.one_of(st.floats(allow_nan=True, allow_infinity=True), special)
    kind = draw(st.sampled_from(["free", "flat", "walk"]))
    if kind == "free":
        equity = draw(st.lists(value, min_size=n, max_size=n))
    elif kind == "flat":
        equity = [draw(st.sampled_from([CAPITAL, 0.0, 1.0, 1e300]))] * n
    else:
        steps = draw(st.lists(st.floats(-0.99, 5.0), min_size=n, max_size=n))
        equity = list(CAPITAL * np.cumprod(1 + np.array(steps)))
    position = draw(st.lists(value, min_size=n, max_size=n))
    close = draw(st.lists(value, min_size=n, max_size=n))
    reward = draw(st.lists(value, min_size=n, max_size=n))
    bench = draw(st.lists(value, min_size=n, max_size=n))
    pnl = draw(st.lists(value, min_size=0, max_size=6))
    return {
        "equity": equity,
        "position": position,
        "close": close,
        "reward": reward,
        "bench": bench,
        "pnl": pnl,
        "costs": draw(st.dictionaries(st.sampled_from(["fees", "spread_cost"]), value)),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_weird_inputs())
def test_nan_and_inf_never_reach_the_output(data: dict[str, Any]) -> None:
    n = len(data["equity"])
    steps = pd.DataFrame(
        {
            "equity": data["equity"],
            "position": data["position"],
            "close": data["close"],
            "reward": data["reward"],
            "stop_triggered": [i % 3 == 0 for i in range(n)],
        },
        index=_index(n, "h"),
    )
    trades = pd.DataFrame(
        {
            "net_pnl": data["pnl"],
            "duration_bars": [1] * len(data["pnl"]),
            "stop_triggered": [True] * len(data["pnl"]),
        }
    )
    m = compute_metrics(
        steps,
        trades,
        timeframe="1h",
        initial_capital=CAPITAL,
        benchmark_equity=data["bench"],
        costs=data["costs"],
        interventions={"x": 1},
        trial_sharpes=[0.01, 0.02, -0.01],
    )
    _assert_json_clean(m)


# ------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_errors() -> None:
    steps = _hand_steps()
    with pytest.raises(DataError, match="position"):
        _metrics(steps.drop(columns="position"), initial_capital=1000.0)
    with pytest.raises(DataError, match="DatetimeIndex"):
        _metrics(steps.reset_index(drop=True), initial_capital=1000.0)
    with pytest.raises(DataError, match="no rows"):
        _metrics(steps.iloc[:0], initial_capital=1000.0)
    with pytest.raises(DataError, match="increasing"):
        _metrics(steps.iloc[::-1], initial_capital=1000.0)
    with pytest.raises(DataError, match="benchmark"):
        _metrics(steps, initial_capital=1000.0, benchmark_equity=[1.0, 2.0])
    for capital in (0.0, -5.0, math.nan):
        with pytest.raises(ConfigError, match="initial_capital"):
            _metrics(steps, initial_capital=capital)
    with pytest.raises(ConfigError, match="bars_per_year"):
        _metrics(steps, initial_capital=1000.0, bars_per_year=0)
    with pytest.raises(DataError, match="timeframe"):
        _metrics(steps, initial_capital=1000.0, timeframe="7 parsecs")


def test_benchmark_series_is_aligned_on_timestamps() -> None:
    steps = _hand_steps()
    bench = pd.Series([100.0, 101.0, 99.0, 100.0, 103.0], index=steps.index)
    shuffled = bench.iloc[[4, 2, 0, 3, 1]]
    a = _metrics(steps, initial_capital=1000.0, benchmark_equity=bench)
    b = _metrics(steps, initial_capital=1000.0, benchmark_equity=shuffled)
    assert a["benchmark"] == b["benchmark"]
    assert a["benchmark"]["total_return"] == pytest.approx(0.03)


# ------------------------------------------------------------ bars per year from the data

NYSE_HOLIDAYS_2023 = ("2023-01-02", "2023-01-16", "2023-02-20", "2023-04-07", "2023-05-29",
                      "2023-06-19", "2023-07-04", "2023-09-04", "2023-11-23", "2023-12-25")


def _regular_hours_minutes(start: str, end: str,
                           holidays: tuple[str, ...] = ()) -> pd.DatetimeIndex:
    """SPY-like bars: 390 one-minute bars (09:30-16:00 New York) on each weekday but holidays."""
    days = pd.bdate_range(start, end).difference(pd.DatetimeIndex(holidays))
    minutes = pd.to_timedelta(np.arange(390), unit="min") + pd.Timedelta(hours=9, minutes=30)
    local = (days.values[:, None] + minutes.values[None, :]).ravel()
    return pd.DatetimeIndex(local).tz_localize("America/New_York").tz_convert("UTC")


def _flat_steps(index: pd.DatetimeIndex) -> pd.DataFrame:
    n = len(index)
    rng = np.random.default_rng(n)
    return pd.DataFrame({"equity": CAPITAL * np.cumprod(1 + rng.normal(0, 1e-3, n)),
                         "position": 1.0, "close": 100.0}, index=index)


def test_bars_per_year_of_eurusd_is_24_5_not_24_7() -> None:
    from rltrade.data import load_bars
    from rltrade.evaluation.series import infer_bars_per_year

    bars = load_bars("sample:EURUSD-1h")
    value, source = infer_bars_per_year(bars.index, "1h")
    assert value == pytest.approx(24 * 5 * 52, rel=0.02)  # about 6,200, not 8,766
    assert source.startswith("observed")
    m = _metrics(_flat_steps(bars.index), timeframe="1h")
    assert m["run"]["bars_per_year"] == pytest.approx(value)
    assert m["run"]["bars_per_year_source"] == "observed"
    assert m["run"]["bars_per_year_basis"] == source
    curve = np.concatenate([[CAPITAL], _flat_steps(bars.index)["equity"].to_numpy()])
    r = curve[1:] / curve[:-1] - 1
    assert m["performance"]["sharpe"] == pytest.approx(
        r.mean() / r.std(ddof=1) * math.sqrt(value), rel=1e-9)


def test_bars_per_year_of_regular_hours_minutes() -> None:
    from rltrade.evaluation.series import infer_bars_per_year

    index = _regular_hours_minutes("2023-01-01", "2023-12-31", NYSE_HOLIDAYS_2023)
    value, source = infer_bars_per_year(index.as_unit("ns").asi8, "1m")
    assert value == pytest.approx(98_000, rel=0.02)  # 390 × ~251 days, not 525,960
    assert source.startswith("observed")
    m = _metrics(_flat_steps(index), timeframe="1m")
    assert m["run"]["bars_per_year"] == pytest.approx(value)
    assert m["performance"]["years"] == pytest.approx(len(index) / value)


def test_bars_per_year_counts_whole_weeks() -> None:
    """Monday open to Friday close of three weeks: the weekends at both ends are not lost."""
    from rltrade.evaluation.series import infer_bars_per_year

    index = _regular_hours_minutes("2024-04-01", "2024-04-19")  # Mon .. Fri, no holiday or DST
    value, _ = infer_bars_per_year(index, "1m")
    assert value == pytest.approx(390 * 5 * 365.25 / 7, rel=1e-9)
    gapless = pd.date_range("2024-01-01 13:00", periods=24 * 40, freq="h", tz="UTC")
    assert infer_bars_per_year(gapless, "1h")[0] == pytest.approx(8766.0, rel=1e-12)


def test_short_samples_fall_back_to_the_timeframe_and_say_so() -> None:
    from rltrade.evaluation.series import infer_bars_per_year

    index = _regular_hours_minutes("2024-03-04", "2024-03-12")  # 7 trading days
    value, source = infer_bars_per_year(index, "1m")
    assert value == pytest.approx(525_960)
    assert source.startswith("timeframe") and "shorter than 2 whole weeks" in source
    m = _metrics(_flat_steps(index), timeframe="1m")
    assert m["run"]["bars_per_year_source"] == "timeframe"
    assert "24/7" in m["run"]["bars_per_year_basis"]


def test_bars_per_year_override_wins() -> None:
    index = _regular_hours_minutes("2023-01-01", "2023-03-31", NYSE_HOLIDAYS_2023)
    m = _metrics(_flat_steps(index), timeframe="1m", bars_per_year=252 * 390)
    assert m["run"]["bars_per_year"] == 252 * 390
    assert m["run"]["bars_per_year_source"] == "override"


@pytest.mark.shared_data
def test_bars_per_year_of_spy_regular_hours_from_shared_data() -> None:
    from pathlib import Path

    from rltrade.data import load_bars
    from rltrade.evaluation.series import infer_bars_per_year

    path = (Path(__file__).resolve().parents[1].parent / "shared" / "data"
            / "spy_1m_2024-02_2024-05_ext_hours.csv.gz")
    if not path.is_file():
        pytest.skip("../shared/data has no SPY 1-minute file")
    bars = load_bars(path)
    local = bars.index.tz_convert("America/New_York")
    minute = local.hour * 60 + local.minute
    regular = bars[(minute >= 9 * 60 + 30) & (minute < 16 * 60)]
    value, source = infer_bars_per_year(regular.index, "1m")
    assert value == pytest.approx(98_000, rel=0.05)
    assert source.startswith("observed")
