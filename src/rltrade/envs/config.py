"""``EnvConfig``: everything that defines a trading environment besides its data.

A strict pydantic model (unknown keys and bad values are a :class:`~rltrade.errors.ConfigError`
naming the key, e.g. ``env.window``). It is the ``env`` section of a run config; keywords given to
:class:`~rltrade.envs.TradingEnv` override it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from rltrade.errors import ConfigError
from rltrade.sim.config import EngineConfig
from rltrade.sim.risk import RiskConfig
from rltrade.strict import StrictModel

#: Reward weights and their defaults, per reward (the reward itself: a branch of the kernel's
#: ``_reward`` in rltrade.envs.kernels, with its weights' order in ``REWARD_KERNELS``).
REWARD_DEFAULTS: dict[str, dict[str, float]] = {
    "log_return": {"bankruptcy": -1.0},
    "asymmetric_drawdown": {"downside": 2.0, "drawdown": 0.0, "bankruptcy": -1.0},
    "risk_adjusted": {
        "drawdown": 0.1,
        "volatility": 0.1,
        "holding": 1e-5,
        "max_holding": 500.0,
        "transaction": 1.0,
        "sharpe": 1e-3,
        "liquidation": 1e-3,
        "liquidation_distance": 0.05,
        "bankruptcy": -1.0,
    },
    "differential_sharpe": {"eta": 0.01, "bankruptcy": -1.0},
    "cvar_penalized": {"alpha": 0.05, "penalty": 1.0, "bankruptcy": -1.0},
}
REWARD_NAMES: tuple[str, ...] = tuple(REWARD_DEFAULTS)

#: The switches against costs (docs/envs.md, "Trading less") at their defaults: off. They are
#: the agent's decision rules; the baselines run without them (:meth:`EnvConfig.without_switches`).
SWITCHES_OFF: dict[str, Any] = {
    "decision_interval": 1, "min_hold": 0, "hysteresis": 0.0, "vol_target": None,
    "cost_penalty": 0.0, "min_margin": 0.0,
}


class EnvConfig(StrictModel):
    """Configuration of :class:`~rltrade.envs.TradingEnv` and :class:`~rltrade.envs.VecTradingEnv`.

    :param action_scheme: ``discrete3`` (short / flat / long), ``discrete6`` (hold, enter long,
        enter short, exit, scale in, scale out) or ``exposure_sl`` (Box [-1, 1]^2: target
        exposure as a fraction of the leverage limit, and stop-loss tightness).
    :param reward: one of :data:`REWARD_NAMES`; ``reward_weights`` override its defaults.
    :param reward_scale: multiplies every reward (per-bar returns are small numbers).
    :param window: rows of features in each observation.
    :param layout: ``window`` (a Dict of ``market [window, features]`` and ``account [9]``, for
        sequence encoders) or ``flat`` (one Box, for MLPs).
    :param episode_length: bars per training episode (random start); ``None`` = to the end.
    :param mode: ``train`` (random start, fixed length) or ``eval`` (one pass over everything).
    :param segments: optional row ranges ``[start, end)`` of the dataset that training episodes
        may use (``None``: all rows). Each ``train``-mode episode lies inside one segment, its
        observation window included, and never crosses the rows between segments (how a
        combinatorial purged cross-validation split trains on rows cut by its test groups).
        ``eval`` mode ignores it.
    :param equity_floor: terminate when equity falls to this share of the initial equity.
    :param obs_clip: observations are clipped to ``[-obs_clip, obs_clip]``.
    :param invalid_action: ``clip`` (NaN -> flat/hold, out of range -> nearest valid; counted)
        or ``raise`` (a clear ValueError).
    :param max_exposure: share of the leverage limit a full long/short uses (discrete3).
    :param risk_per_trade: discrete6 entry size: equity share risked over the stop distance.
    :param stop_atr: discrete6 stop distance in ATRs (also the sizing distance).
    :param max_capital_share: discrete6 cap on a position's notional as a share of equity.
    :param min_stop_pct: exposure_sl: tightest stop (fraction of price).
    :param max_stop_pct: exposure_sl: loosest stop.
    :param atr_period: ATR used for discrete6 sizing and stops.
    :param sharpe_window: bars of returns for the account's recent Sharpe (and rewards).
    :param decision_interval: the agent decides every this many bars: one env step covers
        ``decision_interval`` bars (its reward the sum of theirs), no order is sent between two
        decisions (pending orders, stops, liquidation still act); a backtest decides on every
        ``decision_interval``-th bar. 1: every bar.
    :param min_hold: a change of the position is refused until it has been held this many bars
        (the bar of its fill included; flat counts as a position). 0: off.
    :param hysteresis: a new target is refused when it moves the position by no more than this
        share of the full position (``max_exposure`` × leverage × equity / close). 0: off.
    :param vol_target: annualised volatility target (e.g. 0.15): a new target is scaled by
        ``min(1, vol_target / (realised_vol × max_exposure × leverage))``, so a full position
        has notional / equity ``min(max_exposure × leverage, vol_target / realised_vol)``.
        ``None``: off. Not for ``discrete6`` (sized from the ATR already).
    :param vol_span: span (bars) of the EWMA of squared bar returns behind ``realised_vol``.
    :param vol_bars_per_year: annualisation of ``realised_vol``; ``None``: the 24/7 calendar
        of the dataset's timeframe (8,760 for hourly bars). Set it for a market with sessions
        (e.g. 252 × bars a day for equities).
    :param cost_penalty: the reward of a step loses this × the step's engine costs (fees,
        spread, slippage) / the equity before it (in units of the real cost). 0: off.
    :param min_margin: abstention in :func:`~rltrade.evaluation.run_backtest` (every backtest,
        training's evaluations included; the training envs ignore it): a discrete policy keeps
        the action that keeps its position unless the action it prefers is more probable by at
        least this margin (:class:`~rltrade.agents.policy.MarginPolicy`). 0: off.
    :param engine: the execution engine's configuration.
    :param risk: optional risk manager in the loop (same gates as backtests and live).
    """

    _label: ClassVar[str] = "env"

    action_scheme: Literal["discrete3", "discrete6", "exposure_sl"] = "discrete3"
    reward: Literal[
        "log_return",
        "asymmetric_drawdown",
        "risk_adjusted",
        "differential_sharpe",
        "cvar_penalized",
    ] = "log_return"
    reward_weights: dict[str, float] = Field(default_factory=dict)
    reward_scale: float = Field(1.0, gt=0)
    window: int = Field(32, ge=1, le=4096)
    layout: Literal["window", "flat"] = "window"
    episode_length: int | None = Field(1024, ge=2)
    mode: Literal["train", "eval"] = "train"
    segments: tuple[tuple[int, int], ...] | None = None
    equity_floor: float = Field(0.5, ge=0, lt=1)
    obs_clip: float = Field(10.0, gt=0)
    invalid_action: Literal["clip", "raise"] = "clip"
    max_exposure: float = Field(1.0, gt=0, le=1)
    risk_per_trade: float = Field(0.02, gt=0, le=1)
    stop_atr: float = Field(1.5, gt=0)
    max_capital_share: float = Field(1.0, gt=0)
    min_stop_pct: float = Field(0.005, gt=0, lt=1)
    max_stop_pct: float = Field(0.05, gt=0, lt=1)
    atr_period: int = Field(14, ge=1)
    sharpe_window: int = Field(64, ge=4, le=4096)
    decision_interval: int = Field(1, ge=1, le=100_000)
    min_hold: int = Field(0, ge=0)
    hysteresis: float = Field(0.0, ge=0, lt=1)
    vol_target: float | None = Field(None, gt=0)
    vol_span: int = Field(64, ge=2)
    vol_bars_per_year: float | None = Field(None, gt=0)
    cost_penalty: float = Field(0.0, ge=0)
    min_margin: float = Field(0.0, ge=0, le=1)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    risk: RiskConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> EnvConfig:
        if self.vol_target is not None and self.action_scheme == "discrete6":
            raise ValueError("vol_target: discrete6 sizes its positions from the ATR; use "
                             "discrete3 or exposure_sl, or set vol_target to None")
        if self.min_margin > 0 and self.action_scheme == "exposure_sl":
            raise ValueError("min_margin: abstention needs a discrete action scheme (discrete3 "
                             "or discrete6); set it to 0 for exposure_sl")
        if self.min_stop_pct > self.max_stop_pct:
            raise ValueError("min_stop_pct must not exceed max_stop_pct")
        if self.segments is not None:
            if not self.segments:
                raise ValueError("segments: give at least one [start, end) row range, or None")
            for lo, hi in self.segments:
                if not 0 <= lo < hi:
                    raise ValueError(f"segments: [{lo}, {hi}) is not a row range 0 <= start < end")
        unknown = sorted(set(self.reward_weights) - set(REWARD_DEFAULTS[self.reward]))
        if unknown:
            raise ValueError(
                f"reward_weights: unknown weight(s) {unknown} for reward {self.reward!r}; "
                f"valid: {sorted(REWARD_DEFAULTS[self.reward])}"
            )
        return self

    def without_switches(self) -> EnvConfig:
        """This config with every switch against costs off (:data:`SWITCHES_OFF`)."""
        if all(getattr(self, k) == v for k, v in SWITCHES_OFF.items()):
            return self
        return EnvConfig.build(self, **SWITCHES_OFF)

    @property
    def weights(self) -> dict[str, float]:
        """The reward's weights: defaults overlaid with ``reward_weights``."""
        return {**REWARD_DEFAULTS[self.reward], **self.reward_weights}

    @classmethod
    def build(
        cls, config: EnvConfig | Mapping[str, Any] | None = None, **overrides: Any
    ) -> EnvConfig:
        """A config from an ``EnvConfig``, a mapping (a YAML section) or defaults, with keyword
        overrides; errors become :class:`ConfigError` naming the key."""
        if isinstance(config, EnvConfig):
            data = config.model_dump()
            data["engine"] = config.engine
            data["risk"] = config.risk
        elif config is None:
            data = {}
        elif isinstance(config, Mapping):
            data = dict(config)
        else:
            raise ConfigError(f"env config must be a mapping, got {type(config).__name__}")
        data.update(overrides)
        for key, model in (("engine", EngineConfig), ("risk", RiskConfig)):
            if isinstance(data.get(key), Mapping):
                data[key] = model.from_dict(data[key])
        return cls.model_validate(data)
