"""Judging a backtest: metrics (:func:`compute_metrics`) and the significance of its Sharpe ratio.

Definitions of every metric are in :mod:`rltrade.evaluation.metrics`; the Probabilistic and
Deflated Sharpe Ratios and the minimum track record length in
:mod:`rltrade.evaluation.significance`.
"""

from rltrade.evaluation.backtest import BacktestResult, run_backtest
from rltrade.evaluation.metrics import compute_metrics
from rltrade.evaluation.plots import write_plots
from rltrade.evaluation.report import write_report
from rltrade.evaluation.significance import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    min_track_record_length,
    probabilistic_sharpe_ratio,
    sharpe_stats,
)

__all__ = [
    "BacktestResult",
    "compute_metrics",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "min_track_record_length",
    "probabilistic_sharpe_ratio",
    "run_backtest",
    "sharpe_stats",
    "write_plots",
    "write_report",
]
