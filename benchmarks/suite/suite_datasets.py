"""The benchmark suite's datasets: real bars from ``../shared/data`` plus the bundled EURUSD
sample, each with the costs of its market (expressed with today's engine config) and its
walk-forward plan, full and ``--quick``.

Every plan is in bars of the dataset's own timeframe (after resampling). ``--quick`` keeps
the same train and validation sizes, runs the first two folds over a shorter range and two
seeds; the full plan runs every fold the range allows with five seeds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["DATASETS", "SuiteDataset", "load_suite_bars", "shared_data_dir"]

#: seeds of the full plan; ``--quick`` takes the first two
FULL_SEEDS = [0, 1, 2, 3, 4]
QUICK_SEEDS = [0, 1]


def shared_data_dir() -> Path:
    """``$RLTRADE_SHARED_DATA``, else ``../shared/data`` next to the repository root."""
    env = os.environ.get("RLTRADE_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True)
class SuiteDataset:
    """One dataset of the suite.

    :param name: its short name (``btc_perp_1h``).
    :param source: a file under the shared data folder, or ``sample:NAME``.
    :param market: what the bars are, in words.
    :param costs: ``env.engine.costs`` for this market (fractions of notional, ``_bps`` in bps).
    :param cost_note: how the costs were chosen.
    :param bars_per_year: annualisation of its bars (``evaluation.bars_per_year``).
    :param walkforward: the full plan (``walkforward:`` keys, bars).
    :param quick: the ``--quick`` plan (``walkforward:`` keys, bars).
    :param resample: resample the loaded bars to this timeframe first.
    :param regular_hours: keep only US regular hours (09:30-16:00 America/New_York) first.
    :param start: first bar of the full range (``None``: the file's first).
    :param quick_start: first bar of the ``--quick`` range (``None``: ``start``).
    """

    name: str
    source: str
    market: str
    costs: dict[str, Any]
    cost_note: str
    bars_per_year: float
    walkforward: dict[str, Any]
    quick: dict[str, Any]
    resample: str | None = None
    regular_hours: bool = False
    start: str | None = None
    quick_start: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def shared(self) -> bool:
        """Whether the bars come from ``../shared/data`` (else a bundled sample)."""
        return not self.source.startswith("sample:")

    def path(self) -> Path | str:
        return shared_data_dir() / self.source if self.shared else self.source

    def available(self) -> bool:
        return not self.shared or Path(self.path()).is_file()

    def plan(self, quick: bool) -> dict[str, Any]:
        """The ``walkforward:`` section of this dataset in the chosen mode."""
        wf = {"scheme": "rolling", "step": None, "folds": None, "purge": None, "embargo": 0,
              "seeds": list(QUICK_SEEDS if quick else FULL_SEEDS)}
        wf.update(self.quick if quick else self.walkforward)
        return wf

    def describe(self) -> dict[str, Any]:
        """Everything that defines this dataset's bars and plan (part of the cache key)."""
        return {"name": self.name, "source": self.source, "costs": self.costs,
                "bars_per_year": self.bars_per_year, "walkforward": self.walkforward,
                "quick": self.quick, "resample": self.resample,
                "regular_hours": self.regular_hours, "start": self.start,
                "quick_start": self.quick_start}


# Costs. The engine charges ``taker_fee`` (a fraction of notional) and half of ``spread_bps``
# on every market fill, plus ``slippage_bps``. Funding of perpetual futures is not modelled
# (the engine has no funding series for these files); per-contract futures fees are
# approximated in bps of notional.
_CRYPTO_PERP = {"taker_fee": 0.0004, "maker_fee": 0.0002, "spread_bps": 1.0,
                "slippage_bps": 0.5}
_CRYPTO_SPOT_2018 = {"taker_fee": 0.002, "maker_fee": 0.001, "spread_bps": 2.0,
                     "slippage_bps": 1.0}
_FX = {"taker_fee": 0.0, "maker_fee": 0.0, "spread_bps": 0.9, "slippage_bps": 0.1}
_US_EQUITY_INTRADAY = {"taker_fee": 0.00005, "maker_fee": 0.00005, "spread_bps": 1.0,
                       "slippage_bps": 0.5}
_US_EQUITY_DAILY = {"taker_fee": 0.00005, "maker_fee": 0.00005, "spread_bps": 2.0,
                    "slippage_bps": 1.0}
_ES = {"taker_fee": 0.00001, "maker_fee": 0.00001, "spread_bps": 0.4, "slippage_bps": 0.2}

_CRYPTO_2018_PLAN = {"train": 3000, "validation": 960, "test": 960}
_CRYPTO_2018_QUICK = {"train": 3000, "validation": 960, "test": 1920, "folds": 2}

#: the suite, in leaderboard order
DATASETS: dict[str, SuiteDataset] = {d.name: d for d in [
    SuiteDataset(
        name="btc_perp_1h", source="btcusdt_perp_binance_1h_2019-09_2023-06.csv.gz",
        market="Binance BTCUSDT perpetual, 1h bars, 2019-09 .. 2023-06",
        costs=_CRYPTO_PERP,
        cost_note="taker 4 bp (Binance USD-M VIP0 taker 4-5 bp) + 1 bp spread + 0.5 bp "
                  "slippage; funding not modelled",
        bars_per_year=8760.0, start="2019-09-09",
        walkforward={"train": 4320, "validation": 720, "test": 2160},
        quick={"train": 4320, "validation": 720, "test": 2160, "folds": 2},
        quick_start="2022-04-01"),
    SuiteDataset(
        name="btc_2018_15m", source="btcusd_bitfinex_1m_2018Q1.csv.gz",
        market="Bitfinex BTC/USD spot, 1-min bars of 2018 Q1 resampled to 15 min",
        costs=_CRYPTO_SPOT_2018,
        cost_note="Bitfinex 2018 taker 0.2 % + 2 bp spread + 1 bp slippage (spot)",
        bars_per_year=35040.0, resample="15min",
        walkforward=_CRYPTO_2018_PLAN, quick=_CRYPTO_2018_QUICK),
    SuiteDataset(
        name="eth_2018_15m", source="ethusd_bitfinex_1m_2018Q1.csv.gz",
        market="Bitfinex ETH/USD spot, 1-min bars of 2018 Q1 resampled to 15 min",
        costs=_CRYPTO_SPOT_2018,
        cost_note="Bitfinex 2018 taker 0.2 % + 2 bp spread + 1 bp slippage (spot)",
        bars_per_year=35040.0, resample="15min",
        walkforward=_CRYPTO_2018_PLAN, quick=_CRYPTO_2018_QUICK),
    SuiteDataset(
        name="spy_rth_5m", source="spy_1m_2024-02_2024-05_ext_hours.csv.gz",
        market="SPY 1-min bars 2024-02 .. 05, regular hours only, resampled to 5 min",
        costs=_US_EQUITY_INTRADAY,
        cost_note="commission and fees 0.5 bp + 1 bp spread + 0.5 bp slippage",
        bars_per_year=78.0 * 252, resample="5min", regular_hours=True,
        walkforward={"train": 2340, "validation": 390, "test": 780},
        quick={"train": 2340, "validation": 390, "test": 780, "folds": 2}),
    SuiteDataset(
        name="es_5m", source="es_futures_5m_2026-02-17_2026-03-31.csv",
        market="ES futures (continuous), 5-min Globex bars, 2026-02-17 .. 03-31",
        costs=_ES,
        cost_note="about $2.5 per contract per side on ~$340k notional (0.1 bp) + one tick "
                  "(0.25 pt, ~0.4 bp) spread + 0.2 bp slippage, all in bp of notional",
        bars_per_year=276.0 * 252,
        walkforward={"train": 3000, "validation": 800, "test": 1000},
        quick={"train": 3000, "validation": 800, "test": 2000, "folds": 2}),
    SuiteDataset(
        name="aapl_1d", source="daily_us_stocks/AAPL_1d.csv",
        market="AAPL daily bars, 2005 .. 2015",
        costs=_US_EQUITY_DAILY,
        cost_note="commission 0.5 bp + 2 bp spread + 1 bp slippage",
        bars_per_year=252.0,
        walkforward={"train": 1000, "validation": 250, "test": 250},
        quick={"train": 1000, "validation": 250, "test": 450, "folds": 2}),
    SuiteDataset(
        name="jpm_1d", source="daily_us_stocks/JPM_1d.csv",
        market="JPM daily bars, 2005 .. 2015",
        costs=_US_EQUITY_DAILY,
        cost_note="commission 0.5 bp + 2 bp spread + 1 bp slippage",
        bars_per_year=252.0,
        walkforward={"train": 1000, "validation": 250, "test": 250},
        quick={"train": 1000, "validation": 250, "test": 450, "folds": 2}),
    SuiteDataset(
        name="eurusd_1h", source="sample:EURUSD-1h",
        market="EUR/USD 1h (the bundled sample, 2017-04 .. 2018-02)",
        costs=_FX,
        cost_note="about 1 pip spread (0.9 bp at 1.10), no fee, 0.1 bp slippage",
        bars_per_year=6240.0,
        walkforward={"train": 2000, "validation": 400, "test": 400},
        quick={"train": 2000, "validation": 400, "test": 1000, "folds": 2}),
]}


def _regular_hours(bars: pd.DataFrame) -> pd.DataFrame:
    """The bars inside the NYSE's regular sessions (``XNYS-RTH``: 09:30-16:00 New York time,
    early closes and holidays from the exchange calendar), labelled with that calendar."""
    from rltrade.data.calendars import MarketCalendar, session_positions

    position, _ = session_positions(bars.index.as_unit("ns").asi8, MarketCalendar("XNYS-RTH"),
                                    bars.attrs.get("timeframe") or "1m")
    out = bars.loc[position >= 0].copy()
    out.attrs = {**bars.attrs, "calendar": "XNYS-RTH"}
    return out


def load_suite_bars(dataset: SuiteDataset, quick: bool = False) -> pd.DataFrame:
    """The bars of ``dataset`` as the suite uses them: loaded (``repair`` policy), cut to
    regular hours and resampled where the dataset says so, from its (quick) start.

    :param dataset: the suite dataset.
    :param quick: start at ``quick_start`` when it is set.
    """
    from rltrade.data.loaders import load_bars
    from rltrade.data.resample import resample

    start = (dataset.quick_start if quick and dataset.quick_start else dataset.start)
    bars = load_bars(str(dataset.path()), policy="repair", start=start)
    if dataset.regular_hours:
        bars = _regular_hours(bars)
    if dataset.resample:
        bars = resample(bars, dataset.resample)
    return bars
