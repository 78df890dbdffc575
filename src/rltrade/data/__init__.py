"""The data layer: loading, validation, resampling, the bar store, exchange download."""

from rltrade.data.loaders import SAMPLES, DataWarning, load_bars, load_bars_with_report
from rltrade.data.parsing import OHLCV, Finding
from rltrade.data.timeframes import Timeframe, infer_timeframe, parse_timeframe
from rltrade.data.validation import ValidationReport, validate_bars

__all__ = [
    "OHLCV",
    "SAMPLES",
    "DataWarning",
    "Finding",
    "Timeframe",
    "ValidationReport",
    "infer_timeframe",
    "load_bars",
    "load_bars_with_report",
    "parse_timeframe",
    "validate_bars",
]
