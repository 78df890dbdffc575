"""What is traded: the instrument spec (``env.engine.instrument``) and the market presets.

An :class:`Instrument` says what one unit of position is and how its prices move: the contract
multiplier (money per point per contract), the tick size of fill prices, the lot size (the
quantity step), the margin rates and, for perpetual futures, when funding is paid. The fee
schedule lives with the other costs in :class:`~rltrade.sim.CostModel` (``maker_fee`` and
``taker_fee`` as fractions of notional, ``fee_per_unit`` per contract or share, ``min_fee`` per
fill). The default instrument is a plain unit of price (multiplier 1, any price, any quantity,
no funding): the engine's behaviour before instruments existed, bit for bit.

:data:`PRESETS` holds engine settings that fit five markets (``crypto-spot``, ``crypto-perp``,
``fx``, ``us-equity``, ``cme-micro``); ``rltrade config example --preset NAME`` writes them.
Their values and sources are in ``docs/engine.md`` ("Instruments").
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import field_validator, model_validator

from rltrade.errors import ConfigError, DataError
from rltrade.strict import StrictModel

__all__ = ["ASSET_CLASSES", "PRESETS", "Instrument", "funding_rates", "preset"]

#: Asset classes an instrument may name (``generic``: the default, no assumption).
ASSET_CLASSES = ("generic", "crypto_spot", "crypto_perp", "fx", "equity", "future")

#: Asset classes that may pay funding (a spot, equity or dated-futures position does not).
_FUNDED = ("generic", "crypto_perp", "fx")
_NS_PER_HOUR = 3_600_000_000_000


class Instrument(StrictModel):
    """One tradable instrument: what a unit of position is worth and how it trades.

    :param asset_class: one of :data:`ASSET_CLASSES`. The engine's rules come from the numbers
        below; the class says which make sense: only ``crypto_perp``, ``fx`` (rollover as a
        ``funding_rate`` column) and ``generic`` may pay funding.
    :param multiplier: money per unit of price per unit of position (MES: 5 dollars per index
        point per contract). PnL, notional, margin and fees on notional use ``price * units *
        multiplier``; positions and orders are in units (contracts, shares, coins).
    :param tick_size: fill prices are rounded to this grid against the trader (a buy up, a sell
        down; the difference is booked as slippage); a limit price off the grid is moved to
        it on the passive side. ``0``: any price.
    :param lot_size: the quantity step: traded quantities are rounded toward zero to a multiple
        of it (``0``: any quantity). Sets ``engine.lot_size``.
    :param initial_margin: margin to open a position, as a fraction of notional; sets
        ``engine.leverage = 1 / initial_margin``. ``None``: ``engine.leverage`` as given.
    :param maintenance_margin: liquidation threshold as a fraction of notional; sets
        ``engine.maintenance_margin``. ``None``: ``engine.maintenance_margin`` as given.
    :param funding: ``"none"``; ``"schedule"``: funding is paid at the funding times
        (every ``funding_interval_hours`` from ``funding_offset_hours`` UTC: 00/08/16 UTC by
        default) at the dataset's ``funding_rate``; ``"column"``: on every bar whose
        ``funding_rate`` is given (finite and non-zero).
    :param funding_interval_hours: hours between funding times (``"schedule"``).
    :param funding_offset_hours: hour of the first funding time of a UTC day (``"schedule"``).
    """

    _label: ClassVar[str] = "engine.instrument"

    asset_class: Literal["generic", "crypto_spot", "crypto_perp", "fx", "equity",
                         "future"] = "generic"
    multiplier: float = 1.0
    tick_size: float = 0.0
    lot_size: float = 0.0
    initial_margin: float | None = None
    maintenance_margin: float | None = None
    funding: Literal["none", "schedule", "column"] = "none"
    funding_interval_hours: float = 8.0
    funding_offset_hours: float = 0.0

    @field_validator("multiplier")
    @classmethod
    def _multiplier(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"multiplier must be a positive number, got {v}")
        return v

    @field_validator("tick_size", "lot_size")
    @classmethod
    def _step(cls, v: float, info: Any) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{info.field_name} must be a finite number >= 0, got {v}")
        return v

    @field_validator("initial_margin", "maintenance_margin")
    @classmethod
    def _margin(cls, v: float | None, info: Any) -> float | None:
        if v is not None and not 0.0 <= v < 1.0:
            raise ValueError(f"{info.field_name} is a fraction of notional in [0, 1), got {v}")
        if info.field_name == "initial_margin" and v == 0.0:
            raise ValueError("initial_margin must be > 0 (it sets leverage = 1 / initial_margin)")
        return v

    @field_validator("funding_interval_hours")
    @classmethod
    def _interval(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0 or v > 24 * 7:
            raise ValueError(f"funding_interval_hours must be in (0, 168], got {v}")
        return v

    @field_validator("funding_offset_hours")
    @classmethod
    def _offset(cls, v: float) -> float:
        if not math.isfinite(v) or not 0 <= v < 24:
            raise ValueError(f"funding_offset_hours must be in [0, 24), got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Instrument:
        if self.funding != "none" and self.asset_class not in _FUNDED:
            raise ValueError(
                f"funding={self.funding!r} with asset_class={self.asset_class!r}: only "
                f"{', '.join(_FUNDED)} pay funding (perpetuals; FX rollover as a column)"
            )
        im, mm = self.initial_margin, self.maintenance_margin
        if im is not None and mm is not None and mm > im:
            raise ValueError(
                f"maintenance_margin ({mm}) is above initial_margin ({im}): a position opened "
                "at full leverage would be liquidated at once"
            )
        return self

    @property
    def leverage(self) -> float | None:
        """``1 / initial_margin`` (``None`` when no initial margin is set)."""
        return None if self.initial_margin is None else 1.0 / self.initial_margin


def funding_rates(instrument: Instrument, rates: Any, timestamps: np.ndarray | None,
                  t_len: int) -> np.ndarray:
    """The funding rate booked at the open of each bar (0 where none is paid).

    ``"schedule"``: a funding time ``f`` is booked at the first bar opening at or after it (bar
    ``b`` books the funding times in ``(open[b-1], open[b]]``; bar 0 those at its open), at the
    rate of that bar's row (the last rate given before it when the row has none), once per
    funding time. ``"column"``: every bar whose rate is finite and non-zero.

    :param instrument: the instrument (its ``funding`` mode and schedule).
    :param rates: the per-bar ``funding_rate`` column (fraction per funding, ``0.0001`` = 1 bp;
        positive: longs pay shorts).
    :param timestamps: int64 UTC ns bar open times (required by ``"schedule"``).
    :param t_len: number of bars.
    :raises ConfigError: when the instrument pays funding and no rate column or timestamps
        were given.
    :raises DataError: when the column is not one value per bar, or a funding time has no rate.
    """
    if instrument.funding == "none":
        return np.zeros(t_len)
    if rates is None:
        raise ConfigError(
            f"engine.instrument.funding={instrument.funding!r} needs the per-bar funding rate: "
            "a 'funding_rate' column in the data (a Dataset extra) or funding_rate= for the "
            "engine; or set funding: none"
        )
    col = np.asarray(rates, dtype=np.float64)
    if col.shape != (t_len,):
        raise DataError(f"funding_rate must have one value per bar ({t_len}), got {col.shape}")
    if np.isinf(col).any():
        raise DataError(f"funding_rate is infinite at bar {int(np.flatnonzero(np.isinf(col))[0])}")
    if instrument.funding == "column":
        return np.where(np.isfinite(col), col, 0.0)
    if timestamps is None:
        raise ConfigError("engine.instrument.funding='schedule' needs the bars' timestamps")
    ts = np.asarray(timestamps, dtype=np.int64)
    interval = round(instrument.funding_interval_hours * _NS_PER_HOUR)
    offset = round(instrument.funding_offset_hours * _NS_PER_HOUR)
    # funding times up to t: floor((t - offset) / interval) + 1 of them since the epoch
    count = np.floor_divide(ts - offset, interval)
    previous = np.empty(t_len, dtype=np.int64)
    previous[0] = np.floor_divide(ts[0] - offset - 1, interval)  # bar 0: those at its open
    previous[1:] = count[:-1]
    events = count - previous
    # the last rate given at or before each bar
    idx = np.where(np.isfinite(col), np.arange(t_len), -1)
    np.maximum.accumulate(idx, out=idx)
    need = events > 0
    if (need & (idx < 0)).any():
        first = int(np.flatnonzero(need & (idx < 0))[0])
        raise DataError(f"funding_rate: bar {first} books a funding time but no rate is given at "
                        "or before it")
    rate = np.where(idx >= 0, col[np.maximum(idx, 0)], 0.0)
    return np.where(need, rate * events, 0.0)


# ------------------------------------------------------------------------------- presets
#: Engine settings per market: the ``env.engine`` section that ``rltrade config example
#: --preset NAME`` writes (values and sources: docs/engine.md, "Instruments").
PRESETS: dict[str, dict[str, Any]] = {
    # Binance spot BTCUSDT, regular tier: 0.10 % maker and taker; tick 0.01 USDT, step 0.00001
    # BTC, minimum order 5 USDT; no leverage
    "crypto-spot": {
        "leverage": 1.0,
        "allow_short": False,
        "min_notional": 5.0,
        "instrument": {"asset_class": "crypto_spot", "tick_size": 0.01, "lot_size": 0.00001},
        "costs": {"maker_fee": 0.001, "taker_fee": 0.001, "spread_bps": 1.0,
                  "slippage_bps": 1.0},
    },
    # Binance USD-M BTCUSDT perpetual, regular tier: 0.02 % maker, 0.05 % taker; tick 0.10 USDT,
    # step 0.001 BTC, minimum order 100 USDT; maintenance 0.40 % (first bracket); 10x chosen;
    # funding every 8 h at 00/08/16 UTC from the data's funding_rate column
    "crypto-perp": {
        "min_notional": 100.0,
        "instrument": {"asset_class": "crypto_perp", "tick_size": 0.1, "lot_size": 0.001,
                       "initial_margin": 0.1, "maintenance_margin": 0.004,
                       "funding": "schedule", "funding_interval_hours": 8.0,
                       "funding_offset_hours": 0.0},
        "costs": {"maker_fee": 0.0002, "taker_fee": 0.0005, "spread_bps": 0.5,
                  "slippage_bps": 1.0},
    },
    # EURUSD at an ECN broker: commission about 3.5 USD per 100,000 per side (0.35 bp), raw
    # spread about 0.2 pip (~0.2 bp); quotes in 0.00001, micro lots of 1,000; ESMA retail limit
    # 30:1 on majors (3.33 % margin), margin close-out at 50 % of it
    "fx": {
        "instrument": {"asset_class": "fx", "tick_size": 0.00001, "lot_size": 1000.0,
                       "initial_margin": 1 / 30, "maintenance_margin": 1 / 60},
        "costs": {"maker_fee": 0.000035, "taker_fee": 0.000035, "spread_bps": 0.2,
                  "slippage_bps": 0.1},
    },
    # SPY-like US stock or ETF at Interactive Brokers (Pro, fixed): 0.005 USD a share, at least
    # 1.00 USD an order; tick 0.01, whole shares; Reg T 50 % initial, FINRA 25 % maintenance
    "us-equity": {
        "instrument": {"asset_class": "equity", "tick_size": 0.01, "lot_size": 1.0,
                       "initial_margin": 0.5, "maintenance_margin": 0.25},
        "costs": {"maker_fee": 0.0, "taker_fee": 0.0, "fee_per_unit": 0.005, "min_fee": 1.0,
                  "spread_bps": 0.5, "slippage_bps": 0.5},
    },
    # CME Micro E-mini S&P 500 (MES): 5 USD per index point, tick 0.25 index points (1.25 USD),
    # whole contracts; about 0.62 USD a contract per side all in (IBKR 0.25 + CME 0.35 +
    # NFA 0.02); margin about 6 % of notional maintenance, initial 110 % of it
    "cme-micro": {
        "instrument": {"asset_class": "future", "multiplier": 5.0, "tick_size": 0.25,
                       "lot_size": 1.0, "initial_margin": 0.066, "maintenance_margin": 0.06},
        "costs": {"maker_fee": 0.0, "taker_fee": 0.0, "fee_per_unit": 0.62,
                  "spread_bps": 0.5, "slippage": "none"},
    },
}


def preset(name: str) -> dict[str, Any]:
    """The ``env.engine`` settings of a market preset (a copy), as :data:`PRESETS` holds them.

    :param name: one of :data:`PRESETS`.
    :raises ConfigError: for an unknown name (the message lists the presets).
    """
    try:
        settings = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return {k: dict(v) if isinstance(v, dict) else v for k, v in settings.items()}
