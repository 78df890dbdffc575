"""Configuration of the execution engine: :class:`CostModel` and :class:`EngineConfig`.

Both are strict pydantic models (unknown keys are errors, values are checked); an invalid value
raises :class:`~rltrade.errors.ConfigError` naming the key, e.g. ``engine.costs.taker_fee``.
Every convention behind these numbers is written out in ``docs/engine.md``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import field_validator, model_validator

from rltrade.sim.instruments import Instrument
from rltrade.strict import StrictModel

__all__ = ["CostModel", "EngineConfig"]


class _Strict(StrictModel):
    """The engine's sections (errors labelled ``engine.``)."""

    _label: ClassVar[str] = "engine"


def _non_negative(value: float, key: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be a finite number >= 0, got {value}")
    return value


class CostModel(_Strict):
    """Every cost of a fill. All rates are fractions of notional unless named ``_bps``.

    :param maker_fee: fee rate of limit and take-profit fills (``0.0002`` = 2 bps).
    :param taker_fee: fee rate of market, stop-loss and liquidation fills.
    :param fee_per_unit: fee in money per unit traded, on every fill: per contract for futures,
        per share for stocks (added to the rate on notional).
    :param min_fee: the least fee of one fill (a broker's minimum per order; ``0``: none).
    :param spread: ``"fixed"`` (``spread_bps`` on every bar) or ``"column"`` (the data's
        per-bar ``spread`` column, in ``spread_unit``).
    :param spread_bps: the full bid-ask spread in basis points of price for ``"fixed"``. Half of
        it is paid on each market, stop and liquidation fill; limit and take-profit fills pay none.
    :param spread_unit: unit of the ``spread`` column: ``"bps"`` of price or ``"fraction"`` of
        price (``0.0001`` = 1 bp). Required with ``spread="column"``: the engine will not guess.
    :param slippage: ``"none"``, ``"fixed"`` (``slippage_bps`` of price per unit),
        ``"atr"`` (``slippage_atr`` times the bar's ATR per unit, i.e. ``k * ATR / price`` as a
        fraction of price) or ``"random"`` (uniform in ``[0, slippage_bps]`` bps, seeded).
        Slippage is paid on market, stop and liquidation fills only, always against the trader.
    :param slippage_bps: bps for ``"fixed"``; the upper bound for ``"random"``.
    :param slippage_atr: the multiplier ``k`` for ``"atr"``.
    :param atr_period: ATR period when the engine computes the ATR itself (TA-Lib's Wilder ATR).
    """

    _label: ClassVar[str] = "costs"

    maker_fee: float = 0.0002
    taker_fee: float = 0.0005
    fee_per_unit: float = 0.0
    min_fee: float = 0.0
    spread: Literal["fixed", "column"] = "fixed"
    spread_bps: float = 1.0
    spread_unit: Literal["bps", "fraction"] | None = None
    slippage: Literal["none", "fixed", "atr", "random"] = "fixed"
    slippage_bps: float = 1.0
    slippage_atr: float = 0.05
    atr_period: int = 14

    @field_validator("maker_fee", "taker_fee")
    @classmethod
    def _fee(cls, v: float, info: Any) -> float:
        _non_negative(v, info.field_name)
        if v >= 0.1:
            raise ValueError(f"{info.field_name} is a fraction of notional; {v} is >= 10%")
        return v

    @field_validator("fee_per_unit", "min_fee")
    @classmethod
    def _money(cls, v: float, info: Any) -> float:
        return _non_negative(v, info.field_name)

    @field_validator("spread_bps", "slippage_bps", "slippage_atr")
    @classmethod
    def _rate(cls, v: float, info: Any) -> float:
        _non_negative(v, info.field_name)
        if info.field_name.endswith("_bps") and v >= 10_000:
            raise ValueError(f"{info.field_name} is in basis points; {v} is 100% or more")
        return v

    @field_validator("atr_period")
    @classmethod
    def _period(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"atr_period must be >= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _column_needs_unit(self) -> CostModel:
        if self.spread == "column" and self.spread_unit is None:
            raise ValueError(
                "spread='column' needs spread_unit: 'bps' or 'fraction' (of price) -- say what "
                "the data's spread column holds"
            )
        return self

    @classmethod
    def zero(cls) -> CostModel:
        """No fee, no spread, no slippage."""
        return cls(maker_fee=0.0, taker_fee=0.0, spread_bps=0.0, slippage="none")

    @property
    def has_fixed_fees(self) -> bool:
        """``True`` when a fill pays more than a rate of its notional (per unit, minimum)."""
        return self.fee_per_unit > 0.0 or self.min_fee > 0.0


class EngineConfig(_Strict):
    """How the engine fills orders and keeps the account.

    :param mode: ``"retail"`` (spread, slippage, limit touch probability and decision lag as
        configured) or ``"ideal"`` (deterministic replay with the semantics of backtesting.py:
        fees only, no spread or slippage, touch fills always, no decision lag). In ``"ideal"``
        those four are switched off whatever their values; setting one of them explicitly to
        something else is a :class:`ConfigError`.
    :param costs: the :class:`CostModel`.
    :param instrument: the :class:`~rltrade.sim.instruments.Instrument` traded (multiplier,
        tick, lot size, margin, funding); its ``lot_size``, ``initial_margin`` and
        ``maintenance_margin``, when set, set ``lot_size``, ``leverage`` and
        ``maintenance_margin`` here (giving both with other values is an error).
    :param initial_cash: cash at reset (> 0).
    :param initial_position: units held at reset, as one lot bought at the start bar's close
        without costs (negative = short).
    :param fill: where market orders fill: ``"open"`` of the next bar (default) or ``"close"``
        of the decision bar (explicit opt-in; see docs/engine.md).
    :param decision_lag: ``k`` bars between a decision and its activation.
    :param limit_touch_prob: probability that a limit order fills on a bar that only touches its
        price (``low == limit`` for a buy), drawn from the engine's seeded generator.
    :param leverage: ``|position * price| <= leverage * equity`` at every fill (orders are
        clamped); margin used is ``|position| * price / leverage``.
    :param maintenance_margin: maintenance margin rate; an account is liquidated inside a bar
        when its equity at the bar's adverse extreme falls below ``rate * |position| * price``.
    :param max_position: cap on ``|position|`` in units (``None`` = none).
    :param allow_short: ``False`` clamps every target at ``0`` from below.
    :param dead_zone: no trade when ``|delta units * price| / equity`` is below this.
    :param lot_size: traded quantities are rounded toward zero to a multiple of this
        (``0`` = any quantity).
    :param min_notional: orders trading less than this notional are rejected.
    :param lot_capacity: FIFO lots kept per account; when full, a new lot is merged into the
        newest one at their quantity-weighted average price.
    :param order_capacity: pending orders kept per account.
    :param seed: seed of every random draw (random slippage, touch fills).
    """

    _label: ClassVar[str] = "engine"

    mode: Literal["retail", "ideal"] = "retail"
    costs: CostModel = CostModel()
    instrument: Instrument = Instrument()
    initial_cash: float = 50_000.0
    initial_position: float = 0.0
    fill: Literal["open", "close"] = "open"
    decision_lag: int = 0
    limit_touch_prob: float = 0.5
    leverage: float = 1.0
    maintenance_margin: float = 0.0
    max_position: float | None = None
    allow_short: bool = True
    dead_zone: float = 0.0
    lot_size: float = 0.0
    min_notional: float = 0.0
    lot_capacity: int = 256
    order_capacity: int = 64
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _from_instrument(cls, data: Any) -> Any:
        """The instrument's lot size and margin rates fill ``lot_size``, ``leverage`` and
        ``maintenance_margin`` (one value per setting: both given and different is an error)."""
        if not isinstance(data, dict) or data.get("instrument") is None:
            return data
        inst = data["instrument"]
        if isinstance(inst, dict):
            inst = Instrument(**inst)
        if not isinstance(inst, Instrument):
            return data
        out = dict(data)
        pairs = (("lot_size", inst.lot_size or None), ("leverage", inst.leverage),
                 ("maintenance_margin", inst.maintenance_margin))
        for key, value in pairs:
            if value is None:
                continue
            given = out.get(key)
            if given is not None and not math.isclose(float(given), value, rel_tol=1e-12):
                source = {"lot_size": "instrument.lot_size",
                          "leverage": "1 / instrument.initial_margin",
                          "maintenance_margin": "instrument.maintenance_margin"}[key]
                raise ValueError(f"{key}={given} disagrees with {source} = {value}; set one")
            out[key] = value
        return out

    @field_validator("initial_cash", "leverage")
    @classmethod
    def _positive(cls, v: float, info: Any) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{info.field_name} must be a positive number, got {v}")
        return v

    @field_validator("initial_position")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"initial_position must be finite, got {v}")
        return v

    @field_validator("dead_zone", "lot_size", "min_notional")
    @classmethod
    def _nonneg(cls, v: float, info: Any) -> float:
        return _non_negative(v, info.field_name)

    @field_validator("max_position")
    @classmethod
    def _max_position(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v < 0):
            raise ValueError(f"max_position must be a finite number >= 0 or None, got {v}")
        return v

    @field_validator("limit_touch_prob")
    @classmethod
    def _prob(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"limit_touch_prob must be in [0, 1], got {v}")
        return v

    @field_validator("maintenance_margin")
    @classmethod
    def _mmr(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"maintenance_margin must be in [0, 1), got {v}")
        return v

    @field_validator("decision_lag", "seed")
    @classmethod
    def _count(cls, v: int, info: Any) -> int:
        if v < 0:
            raise ValueError(f"{info.field_name} must be >= 0, got {v}")
        if info.field_name == "seed" and v >= 2**53:
            raise ValueError("seed must be below 2**53")
        return v

    @field_validator("lot_capacity", "order_capacity")
    @classmethod
    def _capacity(cls, v: int, info: Any) -> int:
        if not 1 <= v <= 1_000_000:
            raise ValueError(f"{info.field_name} must be in [1, 1000000], got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EngineConfig:
        if self.decision_lag >= self.order_capacity:
            raise ValueError(
                f"decision_lag ({self.decision_lag}) must be below order_capacity "
                f"({self.order_capacity}): each bar of lag keeps one more order pending"
            )
        if self.max_position is not None and abs(self.initial_position) > self.max_position:
            raise ValueError(
                f"initial_position ({self.initial_position}) is beyond max_position "
                f"({self.max_position})"
            )
        if not self.allow_short and self.initial_position < 0:
            raise ValueError("initial_position is short but allow_short is False")
        if self.mode == "ideal":
            bad = []
            if "decision_lag" in self.model_fields_set and self.decision_lag != 0:
                bad.append(f"decision_lag={self.decision_lag}")
            if "limit_touch_prob" in self.model_fields_set and self.limit_touch_prob != 1.0:
                bad.append(f"limit_touch_prob={self.limit_touch_prob}")
            c = self.costs
            if "spread" in c.model_fields_set and c.spread != "fixed":
                bad.append(f"costs.spread={c.spread!r}")
            if "spread_bps" in c.model_fields_set and c.spread_bps != 0:
                bad.append(f"costs.spread_bps={c.spread_bps}")
            if "slippage" in c.model_fields_set and c.slippage != "none":
                bad.append(f"costs.slippage={c.slippage!r}")
            if bad:
                raise ValueError(
                    "mode='ideal' replays with fees only (no spread, slippage, decision lag, "
                    f"touch probability); remove {', '.join(bad)} or use mode='retail'"
                )
        return self

    @classmethod
    def ideal(cls, commission: float = 0.0, **kwargs: Any) -> EngineConfig:
        """The ``"ideal"`` mode with one fee rate for every fill (backtesting.py's
        ``commission``).

        :param commission: fee rate for maker and taker fills alike.
        :param kwargs: any other :class:`EngineConfig` field.
        """
        costs = CostModel(maker_fee=commission, taker_fee=commission, spread_bps=0.0,
                          slippage="none")
        return cls(mode="ideal", costs=costs, **kwargs)

    # -- what the kernels use ------------------------------------------------------------------
    @property
    def ideal_mode(self) -> bool:
        return self.mode == "ideal"

    @property
    def effective_lag(self) -> int:
        """Decision lag in force (``0`` in ideal mode)."""
        return 0 if self.ideal_mode else self.decision_lag

    @property
    def effective_touch_prob(self) -> float:
        """Touch-fill probability in force (``1`` in ideal mode)."""
        return 1.0 if self.ideal_mode else self.limit_touch_prob

    @property
    def effective_slippage(self) -> str:
        """Slippage model in force (``"none"`` in ideal mode)."""
        return "none" if self.ideal_mode else self.costs.slippage

    @property
    def effective_spread(self) -> str:
        """Spread source in force: ``"none"`` in ideal mode, else ``costs.spread``."""
        return "none" if self.ideal_mode else self.costs.spread
