"""Technical indicators through TA-Lib, registered as feature groups.

TA-Lib's functions are trailing (the value at bar ``t`` uses bars ``<= t``) and seed their
recursions at the first bar of the array, so a value computed on ``bars[:t+1]`` equals the one
computed on all bars: the truncation test checks it for each group here.
"""

from __future__ import annotations

import numpy as np
import talib

from rltrade.errors import ConfigError
from rltrade.features.base import BarArrays, register_feature, require_int, require_number


def _periods(name: str, **periods: int) -> None:
    for key, value in periods.items():
        require_int(f"feature {name!r}", key, value)


@register_feature(
    "macd",
    description="MACD line, signal and histogram (EMA fast - EMA slow), relative to close",
    defaults={"fast": 12, "slow": 26, "signal": 9},
    norms=lambda p: {"macd": "rel_close", "macd_signal": "rel_close", "macd_hist": "rel_close"},
)
def macd(bars: BarArrays, fast: int, slow: int, signal: int) -> dict[str, np.ndarray]:
    _periods("macd", fast=fast, slow=slow, signal=signal)
    if fast >= slow:
        raise ConfigError(f"feature 'macd': fast ({fast}) must be below slow ({slow})")
    line, sig, hist = talib.MACD(bars.close, int(fast), int(slow), int(signal))
    return {"macd": line, "macd_signal": sig, "macd_hist": hist}


@register_feature(
    "bbands",
    description="Bollinger Bands upper/middle/lower, %B position and width",
    defaults={"period": 20, "nbdev": 2.0},
    norms=lambda p: {
        "bb_upper": "price",
        "bb_middle": "price",
        "bb_lower": "price",
        "bb_pctb": "none",
        "bb_width": "none",
    },
)
def bbands(bars: BarArrays, period: int, nbdev: float) -> dict[str, np.ndarray]:
    _periods("bbands", period=period)
    require_number("feature 'bbands'", "nbdev", nbdev, 0.0)
    upper, middle, lower = talib.BBANDS(bars.close, int(period), float(nbdev), float(nbdev))
    span = upper - lower
    with np.errstate(invalid="ignore", divide="ignore"):
        pctb = np.where(span > 0, (bars.close - lower) / span, 0.5)
        width = np.where(middle != 0, span / middle, 0.0)
    pctb[np.isnan(span)] = np.nan
    width[np.isnan(span)] = np.nan
    return {
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
        "bb_pctb": pctb,
        "bb_width": width,
    }


@register_feature(
    "rsi",
    description="Relative Strength Index (Wilder), 0..100",
    defaults={"period": 14},
    norms=lambda p: {f"rsi_{p['period']}": "osc100"},
)
def rsi(bars: BarArrays, period: int) -> dict[str, np.ndarray]:
    _periods("rsi", period=period)
    return {f"rsi_{period}": talib.RSI(bars.close, int(period))}


@register_feature(
    "adx",
    description="Directional movement index DX and its average ADX, 0..100",
    defaults={"period": 30},
    norms=lambda p: {f"dx_{p['period']}": "osc100", f"adx_{p['period']}": "osc100"},
)
def adx(bars: BarArrays, period: int) -> dict[str, np.ndarray]:
    _periods("adx", period=period)
    h, lo, c, n = bars.high, bars.low, bars.close, int(period)
    return {f"dx_{period}": talib.DX(h, lo, c, n), f"adx_{period}": talib.ADX(h, lo, c, n)}


@register_feature(
    "cci",
    description="Commodity Channel Index (typically within +-100..300)",
    defaults={"period": 30},
    norms=lambda p: {f"cci_{p['period']}": "osc100"},
)
def cci(bars: BarArrays, period: int) -> dict[str, np.ndarray]:
    _periods("cci", period=period)
    return {f"cci_{period}": talib.CCI(bars.high, bars.low, bars.close, int(period))}


@register_feature(
    "sma",
    description="Simple moving average of close",
    defaults={"period": 30},
    norms=lambda p: {f"sma_{p['period']}": "price"},
)
def sma(bars: BarArrays, period: int) -> dict[str, np.ndarray]:
    _periods("sma", period=period)
    return {f"sma_{period}": talib.SMA(bars.close, int(period))}


@register_feature(
    "atr",
    description="Average True Range (Wilder) relative to close, and NATR in percent",
    defaults={"period": 14},
    norms=lambda p: {f"atr_{p['period']}": "rel_close", f"natr_{p['period']}": "none"},
)
def atr(bars: BarArrays, period: int) -> dict[str, np.ndarray]:
    _periods("atr", period=period)
    h, lo, c, n = bars.high, bars.low, bars.close, int(period)
    return {f"atr_{period}": talib.ATR(h, lo, c, n), f"natr_{period}": talib.NATR(h, lo, c, n)}
