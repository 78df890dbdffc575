"""Risk manager: gates that clamp a target position or mask discrete actions, bar by bar.

:class:`RiskManager` sits between an agent and the execution engine. It never trades itself;
it shrinks what the agent asks for. It is configured by :class:`RiskConfig`, a strict pydantic
model (unknown keys are errors) in which every gate is optional (``None`` = off). Invalid
settings raise :class:`~rltrade.errors.ConfigError` naming the key, e.g. ``drawdown.max_drawdown``.

Conventions
-----------
- **Units.** A *target* is a signed position in units of the instrument (``+2.5`` = long 2.5
  units, ``-1`` = short 1 unit, ``0`` = flat), the same quantity as :attr:`RiskState.position`.
  ``price`` in the state is used only to turn ATR into ATR% (``atr / price``).
- **Exposure** means ``|position|``. An *entry* or *increase* is any move that makes
  ``|position|`` larger or flips its sign (a reversal is an exit plus a new entry). A
  *reduction* moves the position toward zero without crossing it; exits are reductions.
- **Reductions are never blocked.** Every gate maps a target ``x`` into the closed interval
  between ``0`` and ``x``: the adjusted target never has a larger ``|exposure|`` than the one
  requested and never the opposite sign.
- **Time.** Timestamps are int64 nanoseconds since the epoch, UTC. Times of day, weekdays and
  the daily-loss session are UTC, unless ``no_trade.timezone`` names a zone (exchange time);
  the session rules follow the market calendar's sessions (:mod:`rltrade.data.calendars`).
- **Account tracking.** The manager tracks the running peak equity and the session's starting
  equity itself from :meth:`RiskManager.update` ``(timestamp, equity)``. Every
  :meth:`~RiskManager.check_target` and :meth:`~RiskManager.mask` call first does
  ``update(state.timestamp, state.equity)`` (idempotent for the same bar), so calling ``update``
  explicitly is needed only on bars where nothing is checked. Timestamps must not decrease
  (:class:`~rltrade.errors.DataError`).
- **Limits are inclusive**: a limit of ``0.2`` triggers at a loss of exactly 20%.
- Missing inputs switch a gate off for that bar: ``atr`` or ``spread_bps`` NaN (indicator
  warm-up, no quote), a non-positive price, peak or session equity.

Gates, in the order they are applied (each sees the target left by the previous one)
-----------------------------------------------------------------------------------
1. ``daily_loss`` — :class:`DailyLossConfig`. A session starts each day at
   ``session_start_hour`` UTC (``0`` = the UTC calendar day). The session's starting equity is
   the equity of the first ``update`` in that session. When
   ``equity <= start * (1 - max_daily_loss)``, a kill switch latches: the target becomes ``0``
   (flatten) and entries are blocked for the rest of the session, even if equity recovers. It
   clears at the first update of the next session.
2. ``max_drawdown`` — :class:`DrawdownConfig`. Drawdown is ``1 - equity / peak`` with ``peak``
   the highest equity seen by ``update`` since construction or :meth:`~RiskManager.reset`.
   While ``equity <= peak * (1 - max_drawdown)``: action ``"flatten"`` sets the target to ``0``;
   action ``"cut"`` multiplies it by ``cut_factor`` (``0 < cut_factor < 1``). The gate is
   evaluated each bar, not latched; note that a flat book does not recover, so ``"flatten"``
   halts trading until a new peak is set, :meth:`~RiskManager.reset_peak` or ``reset``.
3. ``volatility`` — :class:`VolatilityConfig`, on ``atr_pct = atr / price`` against
   ``max_atr_pct`` (a fraction: ``0.02`` = 2%). When ``atr_pct > max_atr_pct`` the target is
   multiplied by a scale in ``[0, 1)``:

   - ``"inverse"`` (default): ``scale = max_atr_pct / atr_pct`` (volatility targeting: the
     position's ATR risk is held at what it would be at the threshold);
   - ``"linear"``: ``scale = (zero_atr_pct - atr_pct) / (zero_atr_pct - max_atr_pct)``, clipped
     to ``[0, 1]``: full size at the threshold, falling linearly to flat at ``zero_atr_pct``;
   - ``"factor"``: ``scale = factor`` (``0 <= factor < 1``), a fixed haircut.

   A scale of ``0`` (linear above ``zero_atr_pct``, or ``factor == 0``) acts like a flatten.
4. ``spread`` — :class:`SpreadConfig`. When ``spread_bps > max_spread_bps``, no entries or
   increases: the target is clamped so that ``|target| <= |position|`` on the current side
   (a reversal is cut to ``0``); reductions and exits pass unchanged.
5. ``no_trade_window`` — :class:`NoTradeConfig`. Entries and increases are blocked (as for
   the spread gate) when the bar's timestamp falls in any of:

   - ``times``: ``["HH:MM", "HH:MM"]`` UTC ranges, start inclusive, end exclusive; a start
     later than the end wraps midnight (``["22:00", "02:00"]`` covers 22:00 to 01:59:59);
   - ``weekdays``: whole UTC days, ``0``/``"mon"`` ... ``6``/``"sun"``;
   - ``timestamps``: listed instants (int ns or ISO strings; naive = UTC), each blocking
     ``[t - pad_minutes, t + pad_minutes]`` (an exact bar match when ``pad_minutes == 0``).

   With ``timezone`` (an IANA name, or ``"exchange"``: the market calendar's zone, New York
   for ``XNYS-*``, Chicago for ``CMES``), ``times`` and ``weekdays`` are in that zone and
   follow its daylight saving (``["09:30", "10:00"]`` in New York is the first half hour of
   the US cash session all year).

Session rules (need the bars' market calendar; the env and :func:`run_backtest` precompute them
per bar from it with :func:`session_flags` and hand them over with
:meth:`RiskManager.set_session_flags`, so the step loop does one dictionary lookup):

- ``flat_at_session_close`` (reason ``session_close``, applied right after ``daily_loss``): the
  target becomes ``0`` on the bars whose orders fill last in the session (with fills at the
  next open: the second-to-last and the last bar), so the book is flat at every close, and on
  bars outside every session.
- ``no_entry_last_minutes`` (reason ``session_end``, applied last): entries and increases whose
  order would fill in the last ``N`` minutes of a session are blocked like the spread gate does.

Continuous actions: :meth:`RiskManager.check_target` returns a :class:`Decision` (adjusted
target and the reasons that changed it), and records every change as an :class:`Intervention`
(bar timestamp, reason code, target before and after the gate), counted by
:meth:`RiskManager.counts`. Reason codes are the stable strings in :data:`REASONS`.
``check_target(state, target, record=False)`` decides the same way without recording: a probe of
a target the agent might ask for.

Discrete actions: the one gating call is :meth:`RiskManager.mask` ``(state, targets, gated=)``.
It takes the target position each action would produce on this bar (an env computes them with
:meth:`~rltrade.envs.core.EnvCore.preview_targets`) and returns an :class:`ActionMask`: an action
of ``gated`` (default: every action) is disallowed when ``check_target`` would change its target
(reduce, scale or block it), with the reasons why. It never records: the probes are hypothetical,
and the target of the action actually taken is checked (and recorded) when the env steps. A
target of ``0`` is never changed, so a flat or exit action always stays allowed; an agent sets
the logits of the disallowed actions to ``-inf`` before sampling (A3C does, see
:mod:`rltrade.agents.a3c.gating`). Size-scaling gates (drawdown ``"cut"``, a volatility scale
in ``(0, 1)``) disallow the actions they would shrink too.

The per-bar path is plain Python on floats; the manager holds no global state.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rltrade.errors import ConfigError, DataError
from rltrade.strict import StrictModel

__all__ = [
    "REASONS",
    "ActionMask",
    "DailyLossConfig",
    "Decision",
    "DrawdownConfig",
    "Intervention",
    "NoTradeConfig",
    "RiskConfig",
    "RiskManager",
    "RiskState",
    "SessionFlags",
    "SpreadConfig",
    "VolatilityConfig",
    "session_flags",
]

DAILY_LOSS = "daily_loss"
MAX_DRAWDOWN = "max_drawdown"
VOLATILITY = "volatility"
SPREAD = "spread"
NO_TRADE_WINDOW = "no_trade_window"
SESSION_CLOSE = "session_close"
SESSION_END = "session_end"
#: Stable reason codes, in the order the gates are applied.
REASONS: tuple[str, ...] = (DAILY_LOSS, SESSION_CLOSE, MAX_DRAWDOWN, VOLATILITY, SPREAD,
                            NO_TRADE_WINDOW, SESSION_END)
# bits of the per-bar session flags (RiskManager.set_session_flags)
FLAT_BIT = 1
NO_ENTRY_BIT = 2

_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS
_HOUR_NS = 3_600 * _NS
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# --------------------------------------------------------------------------- configuration


class _Strict(BaseModel):
    """A gate's section: strict; its errors surface through :class:`RiskConfig` with its path."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _unit_interval(value: float, key: str, *, allow_zero: bool = False) -> float:
    ok = (0.0 <= value < 1.0) if allow_zero else (0.0 < value < 1.0)
    if not math.isfinite(value) or not ok:
        bounds = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{key} must be in {bounds}, got {value}")
    return value


def _positive(value: float, key: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key} must be a positive number, got {value}")
    return value


class DrawdownConfig(_Strict):
    """Maximum drawdown from the running peak equity.

    :param max_drawdown: fraction in ``(0, 1)``; the gate acts while ``1 - equity/peak`` is at
        or above it.
    :param action: ``"flatten"`` (target 0) or ``"cut"`` (target times ``cut_factor``).
    :param cut_factor: multiplier for ``"cut"``, in ``(0, 1)``.
    """

    max_drawdown: float
    action: Literal["flatten", "cut"] = "flatten"
    cut_factor: float = 0.5

    @field_validator("max_drawdown", "cut_factor")
    @classmethod
    def _check(cls, v: float, info: Any) -> float:
        return _unit_interval(v, info.field_name)


class VolatilityConfig(_Strict):
    """Scale exposure down when ATR% (``atr / price``) is above a threshold.

    :param max_atr_pct: threshold as a fraction of price (``0.02`` = 2%), positive.
    :param mode: ``"inverse"`` (scale ``max_atr_pct / atr_pct``), ``"linear"`` (from 1 at the
        threshold down to 0 at ``zero_atr_pct``) or ``"factor"`` (scale ``factor``).
    :param factor: fixed scale for ``"factor"``, in ``[0, 1)``.
    :param zero_atr_pct: ATR% at which ``"linear"`` reaches 0; required for it, above
        ``max_atr_pct``.
    """

    max_atr_pct: float
    mode: Literal["inverse", "linear", "factor"] = "inverse"
    factor: float = 0.5
    zero_atr_pct: float | None = None

    @field_validator("max_atr_pct")
    @classmethod
    def _check_threshold(cls, v: float) -> float:
        return _positive(v, "max_atr_pct")

    @field_validator("factor")
    @classmethod
    def _check_factor(cls, v: float) -> float:
        return _unit_interval(v, "factor", allow_zero=True)

    @field_validator("zero_atr_pct")
    @classmethod
    def _check_zero(cls, v: float | None, info: Any) -> float | None:
        if v is None:
            return v
        _positive(v, "zero_atr_pct")
        threshold = info.data.get("max_atr_pct")
        if threshold is not None and v <= threshold:
            raise ValueError(f"zero_atr_pct must be above max_atr_pct ({threshold}), got {v}")
        return v

    @model_validator(mode="after")
    def _linear_needs_zero(self) -> VolatilityConfig:
        if self.mode == "linear" and self.zero_atr_pct is None:
            raise ValueError("zero_atr_pct is required when mode is 'linear'")
        return self


class SpreadConfig(_Strict):
    """Block entries and increases while the spread is wide.

    :param max_spread_bps: threshold in basis points of price, positive; the gate acts when
        ``spread_bps`` is strictly above it.
    """

    max_spread_bps: float

    @field_validator("max_spread_bps")
    @classmethod
    def _check(cls, v: float) -> float:
        return _positive(v, "max_spread_bps")


def _parse_time_of_day(value: Any) -> str:
    """Normalize ``"H:MM"``/``"HH:MM"``/``"HH:MM:SS"`` (UTC) to ``"HH:MM"`` or ``"HH:MM:SS"``."""
    if not isinstance(value, str):
        raise ValueError(f"time of day must be a 'HH:MM' string, got {value!r}")
    parts = value.strip().split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(f"time of day must look like 'HH:MM' or 'HH:MM:SS', got {value!r}")
    h, m, s = (int(p) for p in [*parts, "0"][:3])
    if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 60):
        raise ValueError(f"time of day out of range: {value!r}")
    return f"{h:02d}:{m:02d}:{s:02d}" if s else f"{h:02d}:{m:02d}"


def _seconds_of_day(value: str) -> int:
    h, m, s = (int(p) for p in [*value.split(":"), "0"][:3])
    return h * 3600 + m * 60 + s


_WEEKDAY_NAMES = {
    name: i
    for i, full in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    )
    for name in (full, full[:3])
}


def _parse_weekday(value: Any) -> int:
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and 0 <= value <= 6:
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _WEEKDAY_NAMES:
        return _WEEKDAY_NAMES[value.strip().lower()]
    raise ValueError(
        f"weekday must be 0 (Monday) to 6 (Sunday) or a name like 'sat', got {value!r}"
    )


def _parse_timestamp(value: Any) -> int:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        import pandas as pd  # config time only, never in the per-bar path

        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"cannot parse timestamp {value!r}: {exc}") from None
        if ts is pd.NaT:
            raise ValueError(f"timestamp {value!r} is not a time")
        ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
        return int(ts.as_unit("ns").value)
    raise ValueError(f"timestamp must be int nanoseconds or an ISO string, got {value!r}")


def _is_list(v: Any) -> bool:
    return isinstance(v, Sequence | set | frozenset | np.ndarray) and not isinstance(v, str | bytes)


class NoTradeConfig(_Strict):
    """No new entries or increases at these times (reductions and exits stay allowed).

    Values are normalized so that ``model_dump()`` round-trips: times as ``"HH:MM"`` strings,
    weekdays as sorted ints, timestamps as sorted int64 UTC ns.

    :param times: UTC time-of-day ranges ``[start, end]`` as ``"HH:MM"`` strings, start
        inclusive, end exclusive; ``start > end`` wraps midnight; ``start == end`` is an error.
    :param weekdays: whole UTC weekdays, ``0``-``6`` (Monday = 0) or names (``"sat"``).
    :param timestamps: listed instants, int64 UTC ns or ISO strings (naive = UTC).
    :param pad_minutes: each listed instant blocks ``[t - pad, t + pad]``; ``0`` = exact match.
    :param timezone: the zone of ``times`` and ``weekdays``: ``None`` (UTC, the default), an
        IANA name (``America/New_York``: daylight saving followed), or ``"exchange"``, the
        time zone of the bars' market calendar (``XNYS-*``: New York, ``CMES``: Chicago).
    """

    times: tuple[tuple[str, str], ...] = ()
    weekdays: tuple[int, ...] = ()
    timestamps: tuple[int, ...] = ()
    pad_minutes: float = 0.0
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, v: str | None) -> str | None:
        if v is None or v.strip().lower() in ("utc", ""):
            return None
        if v.strip().lower() == "exchange":
            return "exchange"
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r}: use an IANA name such as America/New_York, or "
                "'exchange' for the market calendar's time zone"
            ) from None
        return v

    @field_validator("times", mode="before")
    @classmethod
    def _check_times(cls, v: Any) -> tuple[tuple[str, str], ...]:
        if not _is_list(v):
            raise ValueError("times must be a list of [start, end] 'HH:MM' pairs")
        out = []
        for window in v:
            if not _is_list(window) or len(window) != 2:
                raise ValueError(f"each time window must be a [start, end] pair, got {window!r}")
            start, end = (_parse_time_of_day(w) for w in window)
            if start == end:
                raise ValueError(f"time window {list(window)} is empty (start == end)")
            out.append((start, end))
        return tuple(out)

    @field_validator("weekdays", mode="before")
    @classmethod
    def _check_weekdays(cls, v: Any) -> tuple[int, ...]:
        if not _is_list(v):
            raise ValueError("weekdays must be a list of 0-6 or day names")
        return tuple(sorted({_parse_weekday(d) for d in v}))

    @field_validator("timestamps", mode="before")
    @classmethod
    def _check_timestamps(cls, v: Any) -> tuple[int, ...]:
        if not _is_list(v):
            raise ValueError("timestamps must be a list of int ns or ISO strings")
        return tuple(sorted({_parse_timestamp(t) for t in v}))

    @field_validator("pad_minutes")
    @classmethod
    def _check_pad(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"pad_minutes must be >= 0, got {v}")
        return v


class DailyLossConfig(_Strict):
    """Kill switch on the loss since the session's start.

    :param max_daily_loss: fraction in ``(0, 1)``; triggers at
        ``equity <= session_start_equity * (1 - max_daily_loss)``.
    :param session_start_hour: UTC hour (0-23) at which a session (trading day) begins.
    """

    max_daily_loss: float
    session_start_hour: int = Field(default=0)

    @field_validator("max_daily_loss")
    @classmethod
    def _check(cls, v: float) -> float:
        return _unit_interval(v, "max_daily_loss")

    @field_validator("session_start_hour")
    @classmethod
    def _check_hour(cls, v: int) -> int:
        if not 0 <= v <= 23:
            raise ValueError(f"session_start_hour must be 0-23, got {v}")
        return v


class RiskConfig(StrictModel):
    """Settings of :class:`RiskManager`; every gate is optional (``None`` = off).

    Construct it with keywords, :meth:`from_dict` or ``model_validate``; any invalid key or
    value raises :class:`~rltrade.errors.ConfigError` naming the key (``drawdown.cut_factor``).

    :param drawdown: maximum drawdown gate.
    :param volatility: ATR% gate.
    :param spread: spread gate.
    :param no_trade: no-trade windows.
    :param daily_loss: daily loss kill switch.
    :param flat_at_session_close: be flat at each session's close (no position held overnight
        or outside the sessions of the bars' market calendar).
    :param no_entry_last_minutes: no entries or increases whose fill would come in the last
        ``N`` minutes of a session.
    """

    drawdown: DrawdownConfig | None = None
    volatility: VolatilityConfig | None = None
    spread: SpreadConfig | None = None
    no_trade: NoTradeConfig | None = None
    daily_loss: DailyLossConfig | None = None
    flat_at_session_close: bool = False
    no_entry_last_minutes: float | None = None

    _label: ClassVar[str] = "risk"

    @field_validator("no_entry_last_minutes")
    @classmethod
    def _check_last_minutes(cls, v: float | None) -> float | None:
        return None if v is None else _positive(v, "no_entry_last_minutes")

    @property
    def session_rules(self) -> bool:
        """Whether a rule needs the bars' sessions (:meth:`RiskManager.set_session_flags`)."""
        return self.flat_at_session_close or self.no_entry_last_minutes is not None

    @property
    def needs_calendar(self) -> bool:
        """Whether a rule needs the bars' market calendar: a session rule, or no-trade
        windows in the exchange's time zone."""
        nt = self.no_trade
        return self.session_rules or (nt is not None and nt.timezone == "exchange")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RiskConfig:
        """Build from a plain mapping (a YAML section).

        :param data: the ``risk`` section; ``None`` or ``{}`` switches every gate off.
        :raises ConfigError: naming the first invalid key.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"risk: expected a mapping of gates, got {type(data).__name__}")
        return cls.model_validate(dict(data))


# --------------------------------------------------------------------------- per-bar types


@dataclass(frozen=True, slots=True)
class RiskState:
    """What the risk manager sees at the close of one bar.

    :param timestamp: bar timestamp, int64 nanoseconds since the epoch, UTC.
    :param price: current price (used for ATR%).
    :param position: current signed position in units.
    :param equity: current account equity (cash plus marked-to-market positions).
    :param atr: average true range in price units; NaN when unknown (gate skipped).
    :param spread_bps: current bid/ask spread in basis points; NaN when unknown (gate skipped).
    """

    timestamp: int
    price: float
    position: float
    equity: float
    atr: float = math.nan
    spread_bps: float = math.nan


class Decision(NamedTuple):
    """Result of :meth:`RiskManager.check_target`.

    :param target: adjusted target position in units.
    :param reasons: reason codes of the gates that changed the target, in order applied.
    """

    target: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Intervention:
    """One change made by one gate.

    :param timestamp: bar timestamp (int64 UTC ns).
    :param reason: reason code, one of :data:`REASONS`.
    :param before: target before the gate.
    :param after: target after the gate.
    """

    timestamp: int
    reason: str
    before: float
    after: float


class ActionMask(NamedTuple):
    """Result of :meth:`RiskManager.mask`.

    :param allowed: ``bool[n_actions]``, True where the action may be taken.
    :param reasons: for each disallowed action, the reason codes of the gates that would change
        its target, in order applied.
    """

    allowed: np.ndarray
    reasons: dict[int, tuple[str, ...]]


class SessionFlags(NamedTuple):
    """Per-bar session rules, precomputed from the market calendar for a run's bars.

    :param flags: bar timestamp (int64 UTC ns) -> bits (``FLAT_BIT``: the target is forced
        to 0; ``NO_ENTRY_BIT``: entries and increases are blocked), flagged bars only.
    :param calendar: the calendar's name (``XNYS-RTH``...).
    :param tz: the calendar's time zone (the ``"exchange"`` zone of no-trade windows).
    """

    flags: dict[int, int]
    calendar: str
    tz: str


def session_flags(
    config: RiskConfig,
    timestamps_ns: np.ndarray,
    timeframe: str,
    calendar: Any,
    *,
    fill: str = "open",
    lag: int = 0,
) -> SessionFlags:
    """The session rules of ``config`` for each bar, vectorised (never per step).

    ``flat_at_session_close``: the decision whose order is the last to fill inside the session
    and every later decision of the session are forced flat, so the book is flat at the
    close. With fills at the next bar's open (``fill="open"``) that is the second-to-last bar
    (its order fills at the last bar's open) and the last bar; with ``fill="close"`` the last
    bar alone; a decision lag of ``k`` bars moves it ``k`` bars earlier. The last bar of a
    session is the last bar the data has in it (a missing bar at the close moves it earlier);
    when the data ends inside a session, that session is not closed. Bars outside every session
    are forced flat too (no position outside the sessions).

    ``no_entry_last_minutes = N``: entries and increases are blocked on bars whose order would
    fill (``bar open + (1 + lag) × timeframe``) at or after ``session close - N`` minutes.

    :param config: the risk settings.
    :param timestamps_ns: the bars' open times (sorted int64 UTC ns).
    :param timeframe: the bars' timeframe.
    :param calendar: a calendar name or :class:`~rltrade.data.calendars.MarketCalendar`.
    :param fill: the engine's fill (``"open"`` or ``"close"``).
    :param lag: the engine's decision lag in force, in bars.
    """
    from rltrade.data.calendars import get_calendar, session_positions
    from rltrade.data.timeframes import parse_timeframe

    cal = get_calendar(calendar)
    if cal is None:
        raise ConfigError("session rules need a market calendar")
    tf = parse_timeframe(timeframe)
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    n = ts.size
    bits = np.zeros(n, dtype=np.int64)
    if n:
        pos, sessions = session_positions(ts, cal, tf)
        step = tf.nanos
        if config.flat_at_session_close:
            delay = (1 if fill == "open" else 0) + int(lag)
            ends = np.flatnonzero(np.r_[pos[1:] != pos[:-1], True])  # last bar of each run
            if pos[-1] >= 0 and ts[-1] + step < sessions.close[pos[-1]]:
                ends = ends[:-1]  # the data stops inside a session: it is not closed here
            rank = np.full(n, n, dtype=np.int64)  # bars before the end of their session
            run = np.searchsorted(ends, np.arange(n))
            has_end = run < ends.size
            rank[has_end] = ends[run[has_end]] - np.arange(n)[has_end]
            bits |= np.where((rank <= delay) | (pos < 0), FLAT_BIT, 0)
        if config.no_entry_last_minutes is not None:
            inside = pos >= 0
            close = np.where(inside, sessions.close[np.maximum(pos, 0)], 0)
            fill_time = ts + (1 + int(lag)) * step
            cutoff = close - round(config.no_entry_last_minutes * 60 * _NS)
            bits |= np.where(inside & (fill_time >= cutoff), NO_ENTRY_BIT, 0)
    flagged = np.flatnonzero(bits)
    flags = dict(zip(ts[flagged].tolist(), bits[flagged].tolist(), strict=True))
    return SessionFlags(flags, cal.name, cal.tz)


def _clamp_no_increase(target: float, position: float) -> float:
    """The part of ``target`` that does not open, increase or reverse exposure."""
    if target * position < 0 or position == 0.0:
        return 0.0  # a reversal keeps only its exit; from flat nothing may open
    return target if abs(target) <= abs(position) else position


# --------------------------------------------------------------------------- manager


class _Gates(NamedTuple):
    flatten: str | None  # reason forcing the target to 0
    scales: tuple[tuple[str, float], ...]  # (reason, factor in (0, 1))
    blocks: tuple[str, ...]  # reasons blocking entries/increases


class RiskManager:
    """Applies the gates of a :class:`RiskConfig` bar by bar and records every intervention.

    :param config: a :class:`RiskConfig`, a mapping for :meth:`RiskConfig.from_dict`, or
        ``None`` (all gates off).
    :param keep_records: keep the :attr:`interventions` list (counts are always kept); turn it
        off for long training runs.
    """

    def __init__(
        self,
        config: RiskConfig | Mapping[str, Any] | None = None,
        *,
        keep_records: bool = True,
    ) -> None:
        if not isinstance(config, RiskConfig):
            config = RiskConfig.from_dict(config)
        self.config: RiskConfig = config
        self.keep_records = keep_records
        nt = config.no_trade
        self._nt_times = (
            tuple((_seconds_of_day(a), _seconds_of_day(b)) for a, b in nt.times) if nt else ()
        )
        self._nt_weekdays = frozenset(nt.weekdays) if nt else frozenset()
        self._nt_stamps = list(nt.timestamps) if nt else []
        self._nt_pad = round(nt.pad_minutes * 60 * _NS) if nt else 0
        self._nt_zone: Any = None  # ZoneInfo of no-trade times in exchange time (None: UTC)
        if nt is not None and nt.timezone not in (None, "exchange"):
            from zoneinfo import ZoneInfo

            self._nt_zone = ZoneInfo(nt.timezone)
        self._flags: SessionFlags | None = None
        dl = config.daily_loss
        self._session_offset = dl.session_start_hour * _HOUR_NS if dl else 0
        self.reset()

    # ---------------------------------------------------------------- state

    def reset(self) -> None:
        """Forget tracked equity, the kill switch, interventions and counts."""
        self._last_ts: int | None = None
        self._last_equity = math.nan
        self._peak = -math.inf
        self._session: int | None = None
        self._day_start = math.nan
        self._killed = False
        self.interventions: list[Intervention] = []
        self._counts: dict[str, int] = {}

    def state_dict(self) -> dict[str, Any]:
        """What the manager has tracked (equity, peak, session, kill switch, counts), as plain
        JSON values: paper trading saves it after every bar and restores it on restart with
        :meth:`load_state_dict`. The interventions list is not part of it (the counts are)."""
        def num(x: float) -> float | None:
            return None if x != x or math.isinf(x) else float(x)

        return {"last_ts": self._last_ts, "last_equity": num(self._last_equity),
                "peak": num(self._peak), "session": self._session,
                "day_start": num(self._day_start), "killed": self._killed,
                "counts": dict(self._counts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the interventions list starts empty).

        :param state: a :meth:`state_dict`.
        """
        def num(x: Any, missing: float) -> float:
            return missing if x is None else float(x)

        self.reset()
        self._last_ts = None if state.get("last_ts") is None else int(state["last_ts"])
        self._last_equity = num(state.get("last_equity"), math.nan)
        self._peak = num(state.get("peak"), -math.inf)
        self._session = None if state.get("session") is None else int(state["session"])
        self._day_start = num(state.get("day_start"), math.nan)
        self._killed = bool(state.get("killed", False))
        self._counts = {str(k): int(v) for k, v in dict(state.get("counts", {})).items()}

    def reset_peak(self, equity: float | None = None) -> None:
        """Restart drawdown tracking from ``equity`` (default: the last equity seen).

        :param equity: the new peak; ``None`` uses the equity of the last update.
        """
        value = self._last_equity if equity is None else float(equity)
        self._peak = value if value == value else -math.inf

    @property
    def peak_equity(self) -> float:
        """Highest equity seen since construction, :meth:`reset` or :meth:`reset_peak`."""
        return self._peak

    @property
    def day_start_equity(self) -> float:
        """Equity at the first update of the current session (NaN before any update)."""
        return self._day_start

    @property
    def kill_switch_active(self) -> bool:
        """Whether the daily loss kill switch has fired in the current session."""
        return self._killed

    def session_of(self, timestamp: int) -> int:
        """Index of the session containing ``timestamp`` (days since the epoch, shifted).

        :param timestamp: int64 UTC ns.
        """
        return (int(timestamp) - self._session_offset) // _DAY_NS

    def update(self, timestamp: int, equity: float) -> None:
        """Track peak equity, the session's starting equity and the kill switch for one bar.

        Idempotent for a repeated ``(timestamp, equity)``; called by every check.

        :param timestamp: bar timestamp, int64 UTC ns, not earlier than the previous one.
        :param equity: account equity at that bar.
        :raises DataError: when timestamps go backwards.
        """
        ts = int(timestamp)
        equity = float(equity)
        if self._last_ts is not None and ts < self._last_ts:
            raise DataError(
                f"risk manager: timestamp {ts} is earlier than the previous one "
                f"{self._last_ts}; call reset() before replaying bars"
            )
        self._last_ts = ts
        self._last_equity = equity
        if equity > self._peak:
            self._peak = equity
        dl = self.config.daily_loss
        if dl is None:
            return
        session = (ts - self._session_offset) // _DAY_NS
        if session != self._session:
            self._session = session
            self._day_start = equity
            self._killed = False
        if (
            not self._killed
            and self._day_start > 0
            and equity <= self._day_start * (1.0 - dl.max_daily_loss)
        ):
            self._killed = True

    def counts(self) -> dict[str, int]:
        """Number of recorded interventions by reason code."""
        return dict(self._counts)

    def set_session_flags(self, flags: SessionFlags) -> None:
        """Use the session rules precomputed for a run's bars (:func:`session_flags`); the
        env and the backtest call it. Also fixes the ``"exchange"`` zone of no-trade windows.

        :param flags: the per-bar flags and the calendar they came from.
        """
        self._flags = flags
        nt = self.config.no_trade
        if nt is not None and nt.timezone == "exchange":
            from zoneinfo import ZoneInfo

            self._nt_zone = ZoneInfo(flags.tz)

    def _record(self, ts: int, reason: str, before: float, after: float) -> None:
        self._counts[reason] = self._counts.get(reason, 0) + 1
        if self.keep_records:
            self.interventions.append(Intervention(ts, reason, before, after))

    # ---------------------------------------------------------------- gates

    def in_no_trade_window(self, timestamp: int) -> bool:
        """Whether ``timestamp`` falls in a configured no-trade window.

        :param timestamp: int64 UTC ns.
        """
        ts = int(timestamp)
        nt = self.config.no_trade
        if nt is not None and nt.timezone is not None and (self._nt_weekdays or self._nt_times):
            if self._nt_zone is None:
                raise ConfigError(
                    "risk.no_trade.timezone 'exchange' needs the bars' market calendar "
                    "(set data.calendar); the env and the backtest provide it"
                )
            local = datetime.fromtimestamp(ts / _NS, self._nt_zone)
            if self._nt_weekdays and local.weekday() in self._nt_weekdays:
                return True
            sec = local.hour * 3600 + local.minute * 60 + local.second
            for start, end in self._nt_times:
                if (start <= sec < end) if start < end else (sec >= start or sec < end):
                    return True
        elif self._nt_weekdays and ((ts // _DAY_NS + 3) % 7) in self._nt_weekdays:
            return True  # 1970-01-01 was a Thursday (weekday 3)
        if self._nt_times and (nt is None or nt.timezone is None):
            sec = (ts // _NS) % 86_400
            for start, end in self._nt_times:
                if (start <= sec < end) if start < end else (sec >= start or sec < end):
                    return True
        if self._nt_stamps:
            stamps, pad = self._nt_stamps, self._nt_pad
            i = bisect.bisect_left(stamps, ts - pad)
            if i < len(stamps) and stamps[i] <= ts + pad:
                return True
        return False

    def _gates(self, state: RiskState) -> _Gates:
        self.update(state.timestamp, state.equity)
        cfg = self.config
        flatten: str | None = None
        scales: list[tuple[str, float]] = []
        blocks: list[str] = []
        if self._killed:
            flatten = DAILY_LOSS
        bits = 0
        if self._flags is not None:
            bits = self._flags.flags.get(int(state.timestamp), 0)
        elif cfg.flat_at_session_close or cfg.no_entry_last_minutes is not None:
            raise ConfigError(
                "risk.flat_at_session_close / no_entry_last_minutes need the bars' sessions: "
                "RiskManager.set_session_flags(session_flags(...)) (the env and the backtest "
                "do it from the data's market calendar)"
            )
        if flatten is None and bits & FLAT_BIT:
            flatten = SESSION_CLOSE
        dd = cfg.drawdown
        if (
            dd is not None
            and flatten is None
            and self._peak > 0
            and state.equity <= self._peak * (1.0 - dd.max_drawdown)
        ):
            if dd.action == "flatten":
                flatten = MAX_DRAWDOWN
            else:
                scales.append((MAX_DRAWDOWN, dd.cut_factor))
        vol = cfg.volatility
        if vol is not None and flatten is None and state.price > 0 and state.atr == state.atr:
            atr_pct = state.atr / state.price
            if atr_pct > vol.max_atr_pct:
                if vol.mode == "inverse":
                    scale = vol.max_atr_pct / atr_pct
                elif vol.mode == "linear":
                    zero = vol.zero_atr_pct
                    assert zero is not None
                    scale = max(0.0, (zero - atr_pct) / (zero - vol.max_atr_pct))
                else:
                    scale = vol.factor
                if scale <= 0.0:
                    flatten = VOLATILITY
                else:
                    scales.append((VOLATILITY, min(scale, 1.0)))
        sp = cfg.spread
        if sp is not None and state.spread_bps > sp.max_spread_bps:  # NaN compares False
            blocks.append(SPREAD)
        if cfg.no_trade is not None and self.in_no_trade_window(state.timestamp):
            blocks.append(NO_TRADE_WINDOW)
        if bits & NO_ENTRY_BIT:
            blocks.append(SESSION_END)
        return _Gates(flatten, tuple(scales), tuple(blocks))

    # ---------------------------------------------------------------- continuous

    def check_target(self, state: RiskState, target: float, *, record: bool = True) -> Decision:
        """Clamp a desired target position; record what changed it.

        :param state: the bar's :class:`RiskState`.
        :param target: desired signed position in units.
        :param record: record each change as an :class:`Intervention` and count it; ``False``
            decides the same way and leaves :attr:`interventions` and :meth:`counts` as they
            are (the tracked equity is still updated, as by every check).
        :return: the adjusted target (between 0 and ``target``) and the reasons that changed it.
        :raises DataError: ``target`` is NaN.
        """
        gates = self._gates(state)
        value = float(target)
        if value != value:
            raise DataError("risk manager: target is NaN")
        changes = self._apply(gates, value, float(state.position))
        if record:
            ts = int(state.timestamp)
            for reason, before, after in changes:
                self._record(ts, reason, before, after)
        final = changes[-1][2] if changes else value
        return Decision(final + 0.0, tuple(c[0] for c in changes))  # + 0.0: -0.0 becomes 0.0

    @staticmethod
    def _apply(gates: _Gates, target: float, position: float) -> list[tuple[str, float, float]]:
        """The gates' changes to ``target``, in order: ``(reason, before, after)`` each."""
        changes: list[tuple[str, float, float]] = []
        value = target

        def apply(reason: str, new: float) -> None:
            nonlocal value
            if new != value:
                changes.append((reason, value, new))
                value = new

        if gates.flatten is not None:
            apply(gates.flatten, 0.0)
        for reason, scale in gates.scales:
            apply(reason, value * scale)
        for reason in gates.blocks:
            apply(reason, _clamp_no_increase(value, position))
        return changes

    # ---------------------------------------------------------------- discrete

    def mask(
        self,
        state: RiskState,
        targets: Sequence[float] | np.ndarray,
        *,
        gated: Sequence[int] | None = None,
    ) -> ActionMask:
        """Which discrete actions may be taken this bar, from the target each would produce.

        An action is disallowed when :meth:`check_target` would change its target (flatten,
        scale or block it). Nothing is recorded: these are probes of actions the agent might
        take. A target of ``0`` is never changed, so an action that goes (or stays) flat always
        stays allowed.

        :param state: the bar's :class:`RiskState`.
        :param targets: ``[n_actions]`` signed target positions in units, one per action (NaN:
            nothing to check, the action stays allowed).
        :param gated: the actions to check (e.g. the scheme's ``gated_actions``, those that
            open or increase exposure); the others stay allowed. ``None`` checks every action.
        :return: the allowed actions and, for each disallowed one, the reasons.
        """
        values = np.asarray(targets, dtype=np.float64)
        if values.ndim != 1:
            raise ConfigError(f"mask: targets must be one-dimensional, got shape {values.shape}")
        n = values.shape[0]
        check = range(n) if gated is None else [int(a) for a in gated]
        bad = [a for a in check if not 0 <= a < n]
        if bad:
            raise ConfigError(f"mask: gated action(s) {bad} are not among the {n} actions")
        gates = self._gates(state)
        position = float(state.position)
        allowed = np.ones(n, dtype=bool)
        reasons: dict[int, tuple[str, ...]] = {}
        for a in check:
            target = float(values[a])
            if target != target:
                continue
            changes = self._apply(gates, target, position)
            if changes:
                allowed[a] = False
                reasons[a] = tuple(c[0] for c in changes)
        return ActionMask(allowed, reasons)
