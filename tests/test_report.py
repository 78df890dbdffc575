"""Tests of the PNG plots (rltrade.evaluation.plots) and the HTML report (...report).

A synthetic backtest (a random-walk price, a position switched every 40 bars, the trades it
makes) feeds both, with a real metrics dict from compute_metrics. The report is checked as text
(one file, no external resource, the chart divs, HTML escaping, undefined metrics) and, when a
Chromium is available, rendered in headless Chromium: no console error, no network request, the
plotly charts drawn; its screenshot is kept (copied to $RLTRADE_SCREENSHOT_DIR when set).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("plotly")

from rltrade.evaluation import compute_metrics, write_plots, write_report
from rltrade.evaluation import plots as plots_module

CAPITAL = 10_000.0
ALL_PLOTS = {
    "equity", "drawdown", "actions", "position", "rolling_sharpe", "monthly_returns",
    "reward_vs_return",
}
XSS = "<script>alert('x')</script>"


# --------------------------------------------------------------------------------------------
# a synthetic backtest in the runner's output format
# --------------------------------------------------------------------------------------------


def make_backtest(
    n: int = 1500, *, seed: int = 0, freq: str = "1h", start: str = "2024-01-01",
    hold: int = 40, fee: float = 1.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``steps`` and ``trades`` of a strategy that picks long/flat/short every ``hold`` bars."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    action = rng.integers(0, 3, n).astype(float)  # 0 flat, 1 long, 2 short
    decide = np.arange(n) % hold == 0
    position = np.zeros(n)
    cash = np.zeros(n)
    executed = np.zeros(n, dtype=bool)
    cash_now, pos_now, entry = CAPITAL, 0.0, None
    rows: list[dict[str, Any]] = []
    for t in range(n):
        if decide[t]:
            target = {0.0: 0.0, 1.0: 1.0, 2.0: -1.0}[action[t]]
            want = target * (cash_now + pos_now * close[t]) / close[t]
            if np.sign(want) != np.sign(pos_now):
                if entry is not None:
                    e_t, e_p, qty = entry
                    gross = qty * (close[t] - e_p)
                    rows.append({
                        "entry_time": index[e_t], "exit_time": index[t], "entry_price": e_p,
                        "exit_price": close[t], "quantity": abs(qty),
                        "side": "long" if qty > 0 else "short", "gross_pnl": gross,
                        "net_pnl": gross - 2 * fee, "fees": 2 * fee, "duration_bars": t - e_t,
                        "stop_triggered": False, "forced_close": False,
                    })
                    entry = None
                cash_now -= (want - pos_now) * close[t] + fee
                pos_now = want
                executed[t] = True
                if pos_now != 0:
                    entry = (t, close[t], pos_now)
        position[t], cash[t] = pos_now, cash_now
    equity = cash + position * close
    prev = np.concatenate([[CAPITAL], equity[:-1]])
    steps = pd.DataFrame(
        {
            "bar": np.arange(n), "close": close, "action": action, "trade_executed": executed,
            "position_change": np.diff(position, prepend=0.0), "cash": cash,
            "position": position, "equity": equity, "realized_equity": cash + np.where(
                position != 0, np.nan, 0.0),
            "reward": np.log(equity / prev), "stop_triggered": False, "risk_reason": "",
            "done": np.arange(n) == n - 1,
        },
        index=index,
    )
    steps["realized_equity"] = steps["realized_equity"].ffill().fillna(CAPITAL)
    trades = pd.DataFrame(rows)
    return steps, trades


def summary_of(steps: pd.DataFrame, policy: str = "ppo", backtest_id: str = "bt-001"):
    return {
        "initial_equity": CAPITAL, "final_equity": float(steps["equity"].iloc[-1]),
        "final_equity_realized": float(steps["realized_equity"].iloc[-1]),
        "total_return": float(steps["equity"].iloc[-1] / CAPITAL - 1), "bankrupt": False,
        "force_closed": False, "start": steps.index[0].isoformat(),
        "end": steps.index[-1].isoformat(), "bars": len(steps), "policy": policy,
        "backtest_id": backtest_id,
    }


@pytest.fixture(scope="module")
def backtest() -> dict[str, Any]:
    steps, trades = make_backtest()
    bench = CAPITAL * steps["close"] / steps["close"].iloc[0]
    metrics = compute_metrics(steps, trades, timeframe="1h", initial_capital=CAPITAL,
                              benchmark_equity=bench, run_id="bt-001",
                              costs={"fees": float(trades["fees"].sum())})
    return {"steps": steps, "trades": trades, "bench": bench, "metrics": metrics,
            "summary": summary_of(steps)}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"), f"{path.name} is truncated"
    return struct.unpack(">II", data[16:24])




# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------


def test_write_plots_writes_seven_valid_pngs(backtest, tmp_path, log_messages):
    written = write_plots(backtest["steps"], backtest["trades"], tmp_path / "plots",
                          benchmark_equity=backtest["bench"], title="PPO",
                          subtitle="backtest bt-001 · 2024-01-01 → 2024-03-03 · agent ppo",
                          timeframe="1h", initial_equity=CAPITAL)
    assert set(written) == ALL_PLOTS
    for name, path in written.items():
        assert path == tmp_path / "plots" / f"{name}.png"
        width, height = png_size(path)
        assert width > 500 and height > 300
    assert not [m for level, m in log_messages if level in ("WARNING", "ERROR")]
    assert not list((tmp_path / "plots").glob(".*.tmp")), "a temporary file was left behind"


def test_write_plots_leaves_no_pyplot_figures(backtest, tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    before = plt.get_fignums()
    write_plots(backtest["steps"], None, tmp_path, timeframe="1h")
    assert plt.get_fignums() == before


def test_a_failing_plot_is_logged_and_skipped(backtest, tmp_path, monkeypatch, log_messages):
    def broken(*args: Any) -> None:
        raise RuntimeError("deliberately broken")

    monkeypatch.setitem(plots_module.PLOTS, "drawdown", broken)
    written = write_plots(backtest["steps"], backtest["trades"], tmp_path, timeframe="1h")
    assert set(written) == ALL_PLOTS - {"drawdown"}
    assert not (tmp_path / "drawdown.png").exists()
    for path in written.values():
        png_size(path)
    assert any(level == "WARNING" and "drawdown" in m and "deliberately broken" in m
               for level, m in log_messages)


def _edge_cases() -> dict[str, tuple[pd.DataFrame, pd.DataFrame | None, set[str]]]:
    steps, trades = make_backtest(600, seed=3)
    flat = steps.copy()
    flat[["position", "position_change", "reward"]] = 0.0
    flat[["equity", "realized_equity", "cash"]] = CAPITAL
    flat["action"] = 0.0
    flat["trade_executed"] = False
    one_month, month_trades = make_backtest(20, seed=4, freq="1D", start="2024-02-01", hold=5)
    with_nan = steps.copy()
    with_nan.iloc[100:120, with_nan.columns.get_loc("equity")] = np.nan
    with_nan.iloc[50:55, with_nan.columns.get_loc("close")] = np.nan
    with_nan.iloc[::7, with_nan.columns.get_loc("reward")] = np.nan
    with_nan.iloc[10, with_nan.columns.get_loc("action")] = np.nan
    continuous = steps.copy()
    continuous["action"] = np.random.default_rng(1).uniform(-1, 1, len(steps))
    naive = steps.drop(columns=["reward"]).tz_localize(None)
    return {
        "no trades (None)": (steps, None, ALL_PLOTS),
        "no trades (empty)": (steps, trades.iloc[:0], ALL_PLOTS),
        "flat equity": (flat, trades.iloc[:0], ALL_PLOTS),
        "one month": (one_month, month_trades, ALL_PLOTS),
        "NaN values": (with_nan, trades, ALL_PLOTS),
        "continuous actions": (continuous, trades, ALL_PLOTS),
        "three bars": (steps.iloc[:3], None, ALL_PLOTS),
        "no reward, naive index": (naive, trades, ALL_PLOTS - {"reward_vs_return"}),
    }


@pytest.mark.parametrize("case", list(_edge_cases()))
def test_write_plots_edge_cases(case, tmp_path, log_messages):
    steps, trades, expected = _edge_cases()[case]
    written = write_plots(steps, trades, tmp_path, initial_equity=CAPITAL)
    assert set(written) == expected
    for path in written.values():
        png_size(path)
    assert not [m for level, m in log_messages if level in ("WARNING", "ERROR")]


def test_rolling_sharpe_is_annualised_from_the_timeframe():
    rng = np.random.default_rng(0)
    r = rng.normal(0.001, 0.01, 400)
    sharpe = plots_module.rolling_sharpe(r, 100, 8766.0)
    window = r[-100:]
    expected = window.mean() / window.std(ddof=1) * np.sqrt(8766.0)
    assert sharpe[-1] == pytest.approx(expected, rel=1e-9)
    assert np.isnan(plots_module.rolling_sharpe(np.zeros(50), 10, 252.0)).all()


def test_monthly_returns_compound_to_the_total_return(backtest):
    curves = plots_module.prepare_curves(backtest["steps"], initial_equity=CAPITAL)
    table = plots_module.monthly_returns(curves)
    monthly = table.to_numpy().ravel()
    monthly = monthly[np.isfinite(monthly)]
    total = backtest["steps"]["equity"].iloc[-1] / CAPITAL - 1
    assert np.prod(1 + monthly) - 1 == pytest.approx(total, rel=1e-9)


def test_minmax_downsampling_keeps_extremes():
    values = np.sin(np.linspace(0, 60, 1_000_000))
    values[123_457] = 5.0
    values[777_777] = -5.0
    idx = plots_module.minmax_indices(4000, values)
    assert idx.size <= 4002
    assert {0, 123_457, 777_777, 999_999} <= set(idx.tolist())
    assert np.all(np.diff(idx) > 0)


# --------------------------------------------------------------------------------------------
# the report as text
# --------------------------------------------------------------------------------------------


def _comparison(metrics: dict[str, Any]) -> pd.DataFrame:
    perf, trades, sig = metrics["performance"], metrics["trades"], metrics["significance"]
    return pd.DataFrame([
        {"name": "ppo", "total_return": perf["total_return"], "sharpe": perf["sharpe"],
         "max_drawdown": perf["max_drawdown"], "win_rate": trades["win_rate"],
         "profit_factor": trades["profit_factor"], "trades": trades["count"],
         "psr": sig["psr"], "dsr": sig["dsr"]},
        {"name": "buy_and_hold", "total_return": metrics["benchmark"]["total_return"],
         "sharpe": None, "max_drawdown": -0.4, "win_rate": np.nan, "profit_factor": None,
         "trades": 1, "psr": None, "dsr": None},
        {"name": XSS, "total_return": 0.1, "sharpe": 0.5, "max_drawdown": -0.1,
         "win_rate": 0.5, "profit_factor": 1.2, "trades": 3, "psr": 0.6, "dsr": 0.5},
    ])


def build_report(backtest: dict[str, Any], out: Path, **overrides: Any) -> Path:
    steps = backtest["steps"]
    kwargs: dict[str, Any] = {
        "steps": steps, "trades": backtest["trades"], "summary": backtest["summary"],
        "metrics": backtest["metrics"], "benchmark_equity": backtest["bench"],
        "comparison": _comparison(backtest["metrics"]),
        "comparison_equity": {"ppo": steps["equity"], "buy_and_hold": backtest["bench"]},
        "config": {"agent": {"algo": "ppo", "seed": 7}, "exchange": {"api_key": "SECRET-123"},
                   "note": XSS},
        "metadata": {"run_id": "bt-001", "created": pd.Timestamp("2024-05-01", tz="UTC")},
    }
    kwargs.update(overrides)
    return write_report(out, **kwargs)


def _without_plotlyjs(text: str) -> str:
    """The document without the inline plotly.js bundle (whose code mentions plotly's URLs)."""
    stripped, count = re.subn(r'<script id="plotlyjs"[^>]*>.*?</script>', "", text, flags=re.S)
    assert count == 1, "plotly.js must be embedded exactly once"
    return stripped


def assert_no_external_resources(text: str) -> None:
    body = _without_plotlyjs(text)
    assert not re.search(r"""\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""",
                         body, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", body, re.I)
    assert not re.search(r"@import", body, re.I)
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=", text, re.I)
    assert not re.search(r"https?://", body), "no URL outside plotly.js at all"


def test_report_is_one_self_contained_file(backtest, tmp_path):
    plots = write_plots(backtest["steps"], backtest["trades"], tmp_path / "plots",
                        timeframe="1h", initial_equity=CAPITAL)
    out = build_report(backtest, tmp_path / "report" / "report.html", plots=plots)
    assert out == tmp_path / "report" / "report.html"
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert_no_external_resources(text)
    for div_id in ("chart-equity", "chart-drawdown", "chart-position", "chart-comparison"):
        assert f'id="{div_id}"' in text
    assert text.count("Plotly.newPlot(") == 4
    assert _without_plotlyjs(text).count("data:image/png;base64,") == len(ALL_PLOTS)
    for heading in ("Comparison", "Charts", "Plots", "Trades", "Metrics",
                    "Config and metadata", "Total return", "Sharpe ratio", "Max drawdown",
                    "Win rate", "PSR / DSR", "Final equity", "vs buy-and-hold"):
        assert heading in text
    assert "bt-001" in text and "agent ppo" in text
    assert 0.5e6 < out.stat().st_size < 10e6


def test_report_escapes_html_and_masks_secrets(backtest, tmp_path):
    trades = backtest["trades"].copy()
    trades.loc[0, "side"] = XSS
    summary = {**backtest["summary"], "policy": XSS, "backtest_id": "<b>id</b>"}
    out = build_report(backtest, tmp_path / "report.html", trades=trades, summary=summary,
                       comparison_equity={XSS: backtest["steps"]["equity"]})
    text = _without_plotlyjs(out.read_text(encoding="utf-8"))
    assert "<script>alert" not in text
    assert "<b>id</b>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "&lt;b&gt;id&lt;/b&gt;" in text
    assert "SECRET-123" not in text
    assert "***" in text


def test_report_survives_undefined_metrics(backtest, tmp_path):
    steps = backtest["steps"].copy()
    steps[["position", "reward"]] = 0.0
    steps[["equity", "realized_equity"]] = CAPITAL
    steps.iloc[5:9, steps.columns.get_loc("equity")] = np.nan
    metrics = compute_metrics(steps, backtest["trades"].iloc[:0], timeframe="1h",
                              initial_capital=CAPITAL)
    assert metrics["undefined"], "the flat curve should leave metrics undefined"
    metrics["performance"]["cagr"] = float("nan")  # not JSON-clean, but must not break it
    metrics["benchmark"] = None
    for kwargs in (
        {"metrics": metrics, "trades": backtest["trades"].iloc[:0]},
        {"metrics": {}, "summary": {}, "trades": None, "comparison": None,
         "comparison_equity": None, "config": None, "metadata": None},
        {"metrics": None, "summary": None, "trades": None},
    ):
        out = build_report(backtest, tmp_path / "r.html", steps=steps, **kwargs)
        text = out.read_text(encoding="utf-8")
        assert_no_external_resources(text)
        assert 'id="chart-equity"' in text
        body = re.sub(r"<script.*?</script>", "", text, flags=re.S)
        assert not re.search(r">\s*(?:nan|-?inf|none)\s*<", body, re.I)


def test_report_caps_the_trades_table(backtest, tmp_path):
    trades = pd.concat([backtest["trades"]] * 200, ignore_index=True)
    out = build_report(backtest, tmp_path / "report.html", trades=trades)
    text = out.read_text(encoding="utf-8")
    n = len(trades)
    assert f"{n:,} trades: the first 500 and the last 500 are listed" in text
    assert f"… {n - 1000:,} trades not shown …" in text
    trades_html = text[text.index('id="trades"'):text.index('id="metrics"')]
    assert trades_html.count("<tr>") == 1 + 1000  # header + rows


def test_large_runs_are_downsampled(tmp_path):
    n = 100_000
    steps, trades = make_backtest(n, seed=5, freq="1min", hold=500)
    metrics = compute_metrics(steps, trades, timeframe="1m", initial_capital=CAPITAL)
    out = write_report(tmp_path / "report.html", steps=steps, trades=trades,
                       summary=summary_of(steps), metrics=metrics)
    text = out.read_text(encoding="utf-8")
    assert "downsampled" in text
    assert out.stat().st_size < 8e6


# --------------------------------------------------------------------------------------------
# the report in a real browser
# --------------------------------------------------------------------------------------------


def _find_chromium() -> str | None:
    candidates = [os.environ.get("RLTRADE_CHROMIUM")]
    candidates += [shutil.which(name) for name in (
        "chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
        "chrome", "headless_shell")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def test_report_renders_in_headless_chromium(backtest, tmp_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    executable = _find_chromium()
    plots = write_plots(backtest["steps"], backtest["trades"], tmp_path / "plots",
                        timeframe="1h", initial_equity=CAPITAL)
    out = build_report(backtest, tmp_path / "report.html", plots=plots)

    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        if executable is None:  # a browser from `playwright install`, where that was possible
            bundled = pw.chromium.executable_path
            executable = bundled if bundled and Path(bundled).is_file() else None
        if executable is None:
            pytest.skip("no Chromium found: apt-get install chromium (Debian/Ubuntu), "
                        "or set RLTRADE_CHROMIUM to a Chrome/Chromium executable")
        try:
            browser = pw.chromium.launch(
                executable_path=executable, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            )
        except Exception as exc:  # a browser that cannot start here is a skip, not a failure
            pytest.skip(f"Chromium at {executable} does not start: {exc}")
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

            def guard(route: Any) -> None:
                url = route.request.url
                if url.startswith(("file:", "data:", "blob:", "about:")):
                    route.continue_()
                else:
                    requests.append(url)
                    route.abort()

            page.route("**/*", guard)
            page.goto(out.as_uri(), wait_until="load", timeout=60_000)
            page.wait_for_function(
                "document.querySelectorAll('.js-plotly-plot svg.main-svg').length >= 4",
                timeout=60_000,
            )
            plots_drawn = page.eval_on_selector_all(".js-plotly-plot", "els => els.length")
            traces = page.eval_on_selector_all(".js-plotly-plot .scatterlayer .trace",
                                               "els => els.length")
            images = page.eval_on_selector_all(
                "img", "els => els.filter(i => i.complete && i.naturalWidth > 0).length")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    assert errors == [], f"console errors: {errors}"
    assert requests == [], f"the report asked the network for: {requests}"
    assert plots_drawn == 4
    assert traces >= 8
    assert images == len(ALL_PLOTS)
    assert png_size(shot)[1] > 1000
    keep = os.environ.get("RLTRADE_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(keep) / "report.png")


def test_plots_annualise_with_the_bars_per_year_observed_in_the_data():
    from rltrade.data import load_bars

    index = load_bars("sample:EURUSD-1h").index
    steps, _ = make_backtest(len(index), seed=9)
    steps.index = index
    curves = plots_module.prepare_curves(steps, initial_equity=CAPITAL, timeframe="1h")
    assert curves.bars_per_year == pytest.approx(6200, rel=0.02)  # 24/5, not 8,766
    assert curves.bars_per_year_source.startswith("observed")
    metrics = compute_metrics(steps, None, timeframe="1h", initial_capital=CAPITAL)
    assert curves.bars_per_year == metrics["run"]["bars_per_year"]
    given = plots_module.prepare_curves(steps, timeframe="1h", bars_per_year=252.0)
    assert (given.bars_per_year, given.bars_per_year_source) == (252.0, "override")


# --------------------------------------------------------------------------------------------
# what the report says: names, benchmark, early stops, actions
# --------------------------------------------------------------------------------------------


def _plotly_call(text: str, div_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The data and layout of the ``Plotly.newPlot`` call that draws ``div_id``."""
    import json

    match = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'"\s*,\s*', text)
    assert match, f"no chart {div_id}"
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(text, match.end())
    layout, _ = decoder.raw_decode(text, re.compile(r"\s*,\s*").match(text, end).end())
    return data, layout


def test_comparison_chart_is_log_scale_with_the_oracle_hidden(backtest, tmp_path):
    steps = backtest["steps"]
    oracle = CAPITAL * np.exp(np.linspace(0, 12, len(steps)))  # grows 160,000-fold
    out = build_report(backtest, tmp_path / "report.html", comparison_equity={
        "ppo": steps["equity"], "buy_and_hold": backtest["bench"],
        "oracle": pd.Series(oracle, index=steps.index)})
    data, layout = _plotly_call(out.read_text(encoding="utf-8"), "chart-comparison")
    assert layout["yaxis"]["type"] == "log"
    visible = {trace["name"]: trace.get("visible", True) for trace in data}
    assert visible == {"ppo": True, "buy_and_hold": True, "oracle": "legendonly"}
    assert "oracle hidden" in layout["title"]["text"]


def test_the_two_alphas_are_named_apart(backtest, tmp_path):
    text = build_report(backtest, tmp_path / "report.html").read_text(encoding="utf-8")
    metrics_html = text[text.index('id="metrics"'):]
    assert "significance level (α)" in metrics_html
    assert "CAPM alpha (annualised)" in metrics_html
    assert not re.search(r"<td[^>]*>alpha</td>", metrics_html)


def test_the_report_is_titled_by_the_run_name(backtest, tmp_path):
    summary = {**backtest["summary"], "name": "eurusd-ppo-7", "policy": "numpy_mlp"}
    text = build_report(backtest, tmp_path / "report.html",
                        summary=summary).read_text(encoding="utf-8")
    assert "<title>Backtest report: eurusd-ppo-7</title>" in text
    assert "<h1>Backtest report: eurusd-ppo-7</h1>" in text


def test_buy_and_hold_is_the_benchmark_the_backtest_recorded(backtest, tmp_path):
    steps = backtest["steps"].copy()
    # the engine's buy-and-hold pays costs: it ends below close / close[0]
    recorded = backtest["bench"].to_numpy() * np.linspace(1.0, 0.8, len(steps))
    steps["benchmark_equity"] = recorded
    recorded_return = recorded[-1] / recorded[0] - 1
    close_return = steps["close"].iloc[-1] / steps["close"].iloc[0] - 1
    assert abs(recorded_return - close_return) > 0.05
    metrics = compute_metrics(steps, backtest["trades"], timeframe="1h", initial_capital=CAPITAL)
    assert metrics["benchmark"] is None  # the card must not fall back to the close
    out = build_report(backtest, tmp_path / "report.html", steps=steps, metrics=metrics,
                       benchmark_equity=None)
    text = out.read_text(encoding="utf-8")
    cards = text[text.index('<div class="cards">'):text.index('id="comparison"')]
    assert f"buy-and-hold {recorded_return:.2%}" in cards
    assert f"{close_return:.2%}" not in cards
    curves = plots_module.prepare_curves(steps, initial_equity=CAPITAL)
    np.testing.assert_array_equal(curves.benchmark, recorded)
    # nothing recorded, nothing given: no buy-and-hold at all, not the close rebuilt
    bare = steps.drop(columns="benchmark_equity")
    assert not plots_module.prepare_curves(bare).has_benchmark
    text = build_report(backtest, tmp_path / "bare.html", steps=bare, metrics=metrics,
                        benchmark_equity=None).read_text(encoding="utf-8")
    assert "no buy-and-hold recorded" in text
    data, _ = _plotly_call(text, "chart-equity")
    assert [trace["name"] for trace in data] == ["agent"]


def test_an_early_stop_is_said_in_words(backtest, tmp_path):
    steps = backtest["steps"]
    summary = {**backtest["summary"], "bars_requested": 2188, "bars_run": 1139,
               "stopped_early": True, "stop_reason": "equity_floor",
               "end_time": "2024-02-17T10:00:00+00:00"}
    text = build_report(backtest, tmp_path / "report.html",
                        summary=summary).read_text(encoding="utf-8")
    body = _without_plotlyjs(text)
    assert ('<p class="warning" id="stopped-early" role="alert">Stopped early at bar 1,139 of '
            "2,188 on 2024-02-17 10:00 UTC: equity_floor.") in body
    cards = body[body.index('<div class="cards">'):body.index('id="charts"')]
    assert "Bars run" in cards and "1,139" in cards and "of 2,188 requested" in cards
    ran_all = {**summary, "stopped_early": False, "stop_reason": None, "bars_run": len(steps),
               "bars_requested": len(steps)}
    body = _without_plotlyjs(build_report(backtest, tmp_path / "ok.html", summary=ran_all)
                             .read_text(encoding="utf-8"))
    assert 'id="stopped-early"' not in body and "Stopped early" not in body


def _action_axes_text(steps: pd.DataFrame, tmp_path: Path, monkeypatch,
                      **kwargs: Any) -> dict[str, Any]:
    """Draw the action plot and return its first axes' tick labels, x label and title."""
    seen: dict[str, Any] = {}
    original = plots_module.PLOTS["actions"]

    def spy(fig: Any, *args: Any) -> None:
        original(fig, *args)
        ax = fig.axes[0]
        seen.update(ticks=[t.get_text() for t in ax.get_xticklabels()],
                    xlabel=ax.get_xlabel(), ylabel=ax.get_ylabel(), n_axes=len(fig.axes),
                    header=fig.texts[0].get_text() if fig.texts else "")

    monkeypatch.setitem(plots_module.PLOTS, "actions", spy)
    written = write_plots(steps, None, tmp_path, initial_equity=CAPITAL, **kwargs)
    seen["written"] = "actions" in written
    return seen


def test_discrete_actions_are_labelled_by_name(backtest, tmp_path, monkeypatch):
    steps = backtest["steps"].copy()
    steps["action"] = pd.array([*steps["action"].astype(int).tolist()[:-1], None],
                               dtype="Int64")  # the last bar has no decision
    seen = _action_axes_text(steps, tmp_path, monkeypatch, action_scheme="discrete3")
    assert seen["written"]
    assert seen["ticks"] == ["short", "flat", "long"]
    assert "discrete3" in seen["xlabel"]


def test_continuous_actions_plot_the_target_exposure(backtest, tmp_path, monkeypatch,
                                                     log_messages):
    steps = backtest["steps"].drop(columns="action")  # what exposure_sl backtests record
    rng = np.random.default_rng(2)
    steps["action_0"] = np.clip(rng.normal(0.2, 0.5, len(steps)), -1, 1)
    steps["action_1"] = rng.uniform(-1, 1, len(steps))
    seen = _action_axes_text(steps, tmp_path, monkeypatch, action_scheme="exposure_sl")
    assert seen["written"], "the action plot was skipped"
    assert "target exposure" in seen["ylabel"]
    assert "target exposure" in seen["header"]
    assert seen["n_axes"] == 2  # over time, and its histogram
    assert not [m for level, m in log_messages if level in ("WARNING", "ERROR")]
