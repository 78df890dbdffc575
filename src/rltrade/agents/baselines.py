"""Baselines as planned policies: what an agent has to beat, and the most it could have made.

Every baseline says, for every bar, whether to be **long, flat or short** after that bar's close
(a *side*: +1, 0, -1). :meth:`Baseline.plan` turns the sides into ``discrete3`` actions
(``side + 1``) and the backtest runner runs them through the same environment kernel and
execution engine as the agent, **under the agent's** :class:`~rltrade.envs.EnvConfig` (costs,
fills, leverage, ``max_exposure``, risk manager, window: the first decision is at the same bar)
**with** ``action_scheme="discrete3"`` (:func:`baseline_config`; each baseline's
:meth:`Baseline.env_config`). So "long" is the agent's full long: ``max_exposure`` × leverage ×
equity, re-targeted at every bar like any ``discrete3`` action (with ``engine.dead_zone = 0`` the
engine trades the small differences, as it does for the agent). The one exception is
``buy_and_hold``, the benchmark, which holds 1x equity (below).

Names (:data:`BASELINES`, :func:`baseline_names`, :func:`make_baseline`):

``buy_and_hold``
    long on every bar at **1x equity** (:func:`buy_and_hold_config`: the agent's costs, fills
    and first bar, ``max_exposure = min(1, 1 / leverage)``, no risk manager). It is *the*
    buy-and-hold of rltrade: the backtest runner's benchmark column (``benchmark_equity``), the
    metrics' benchmark and training's evaluation run this same baseline under this same config,
    so they cannot disagree.
``flat``
    never in the market.
``random``
    a uniformly random side, drawn anew every ``hold`` bars from a generator seeded with
    ``seed`` (short is left out when the engine forbids it).
``signal:<strategy>``
    one of the Dataset's strategies followed as it is: its ``LONG`` / ``SHORT`` / ``FLAT``
    signal sets the side, ``HOLD`` keeps the previous one. When a strategy runs on two
    timeframes the name carries the timeframe: ``signal:supertrend@4h``.
``oracle``
    perfect foresight (the one baseline that reads the future, on purpose): the sequence of
    sides that maximizes log equity over the whole run, found by dynamic programming over the
    states {short, flat, long} with the engine's per-switch costs (taker fee, half spread and
    slippage, as fractions of the fill price) and its fill timing (next open, or the close, plus
    the decision lag). Its plan is then run through the engine like any other, so its reported
    equity is the engine's; it is the upper bound a report divides by ("the agent captured x %
    of the achievable return").
``rule``
    the fixed-rule baseline of the source documents: enter long when the direction of the
    signal consensus (or of the forecast) is up with confidence above ``threshold`` and the
    confirming feature agrees, short in the mirror case; exit after ``max_hold`` bars or when
    the trade's return at a close reaches ``take_profit`` or ``-stop_loss`` (see
    :class:`RuleBaseline`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numba import njit

from rltrade.envs.config import EnvConfig
from rltrade.envs.schemes import ACTION_SCHEMES
from rltrade.errors import ConfigError
from rltrade.features.dataset import Dataset
from rltrade.sim import kernels as K
from rltrade.sim.engine import BatchEngine

__all__ = [
    "BASELINES",
    "Baseline",
    "BuyAndHold",
    "Flat",
    "OracleBaseline",
    "RandomBaseline",
    "RuleBaseline",
    "SignalBaseline",
    "baseline_config",
    "baseline_names",
    "buy_and_hold_config",
    "make_baseline",
    "oracle_sides",
    "plan_log_growth",
    "sides_to_actions",
    "strategy_views",
]

SHORT_SIDE, FLAT_SIDE, LONG_SIDE = -1, 0, 1
# one-hot signal layout of a Dataset (rltrade.features.strategies): FLAT, LONG, SHORT, HOLD
_SIG_FLAT, _SIG_LONG, _SIG_SHORT, _SIG_HOLD = 0, 1, 2, 3
#: the scheme every baseline plans in
_SCHEME = ACTION_SCHEMES["discrete3"]
# side + 1 (short, flat, long) -> the scheme's action of that name
_SIDE_ACTIONS = np.array([_SCHEME.action_names.index(n) for n in ("short", "flat", "long")],
                         dtype=np.int64)


def baseline_config(config: EnvConfig | Mapping[str, Any] | None = None) -> EnvConfig:
    """The agent's config with ``action_scheme="discrete3"`` and the agent's switches against
    costs off (``decision_interval``, ``min_hold``, ``hysteresis``, ``vol_target``,
    ``cost_penalty``, ``min_margin``: the agent's decision rules, not the market's): what
    every baseline runs under."""
    return EnvConfig.build(EnvConfig.build(config).without_switches(),
                           action_scheme=_SCHEME.name)


def buy_and_hold_config(config: EnvConfig | Mapping[str, Any] | None = None) -> EnvConfig:
    """What buy-and-hold runs under: the agent's config (costs, fills, engine, window) at 1x
    equity (``max_exposure = min(1, 1 / leverage)``), ``discrete3``, no risk manager, no
    equity floor, no switch against costs."""
    cfg = EnvConfig.build(config).without_switches()
    return EnvConfig.build(cfg, action_scheme=_SCHEME.name, risk=None, equity_floor=0.0,
                           max_exposure=min(1.0, 1.0 / cfg.engine.leverage))


def sides_to_actions(sides: np.ndarray) -> np.ndarray:
    """Sides (-1 short, 0 flat, +1 long) -> ``discrete3`` actions (0 short, 1 flat, 2 long)."""
    s = np.asarray(sides)
    if s.size and (not np.isin(s, (-1, 0, 1)).all()):
        raise ValueError("sides must be -1 (short), 0 (flat) or +1 (long)")
    return _SIDE_ACTIONS[s.astype(np.int64) + 1]


class Baseline:
    """A planned policy from a side per bar (subclasses implement :meth:`sides`).

    :meth:`env_config` is the config the runner runs the plan under, given the agent's: by
    default the agent's with ``action_scheme="discrete3"`` (:attr:`action_scheme`).
    """

    name: str = "baseline"
    action_scheme: str = _SCHEME.name
    #: ``True`` only for the oracle, which reads future bars on purpose
    perfect_foresight: bool = False

    def env_config(self, config: EnvConfig | Mapping[str, Any] | None = None) -> EnvConfig:
        """The config this baseline runs under when judged beside an agent with ``config``."""
        return baseline_config(config)

    def sides(self, dataset: Dataset, config: EnvConfig) -> np.ndarray:
        """The side (-1, 0, +1) to hold after the close of every bar, ``int8 [T]``."""
        raise NotImplementedError

    def plan(self, dataset: Dataset, config: EnvConfig | Mapping[str, Any] | None = None
             ) -> np.ndarray:
        """``discrete3`` actions of every bar (row ``t`` = the decision at the close of ``t``)."""
        cfg = self.env_config(config)
        sides = np.asarray(self.sides(dataset, cfg))
        if sides.shape != (len(dataset),):
            raise ValueError(f"{self.name}: sides must have one value per bar ({len(dataset)}), "
                             f"got shape {sides.shape}")
        return sides_to_actions(sides)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class BuyAndHold(Baseline):
    """Long on every bar at 1x equity, with the agent's costs and no risk manager
    (:func:`buy_and_hold_config`): the runner's benchmark is this baseline."""

    name = "buy_and_hold"

    def env_config(self, config: EnvConfig | Mapping[str, Any] | None = None) -> EnvConfig:
        return buy_and_hold_config(config)

    def sides(self, dataset: Dataset, config: EnvConfig) -> np.ndarray:
        return np.ones(len(dataset), dtype=np.int8)


class Flat(Baseline):
    """Never in the market (equity stays at the initial cash)."""

    name = "flat"

    def sides(self, dataset: Dataset, config: EnvConfig) -> np.ndarray:
        return np.zeros(len(dataset), dtype=np.int8)


class RandomBaseline(Baseline):
    """A uniformly random side, redrawn every ``hold`` bars.

    :param seed: seed of its own generator (``numpy.random.default_rng``).
    :param hold: bars between draws (1: a new side every bar).
    """

    name = "random"

    def __init__(self, seed: int = 0, hold: int = 1) -> None:
        if isinstance(hold, bool) or not isinstance(hold, int | np.integer) or hold < 1:
            raise ConfigError(f"baseline 'random': hold must be an integer >= 1, got {hold!r}")
        self.seed = int(seed)
        self.hold = int(hold)

    def sides(self, dataset: Dataset, config: EnvConfig) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        choices = np.array([-1, 0, 1] if config.engine.allow_short else [0, 1], dtype=np.int8)
        draws = rng.choice(choices, size=-(-len(dataset) // self.hold))
        return np.repeat(draws, self.hold)[: len(dataset)]


# -------------------------------------------------------------------------- strategy signals
def _strategy_labels(dataset: Dataset) -> list[str]:
    """``name`` per strategy, or ``name@timeframe`` when a name occurs more than once."""
    names = list(dataset.strategy_names)
    tfs = list(dataset.strategy_timeframes) or [""] * len(names)
    return [f"{n}@{tf}" if names.count(n) > 1 else n for n, tf in zip(names, tfs, strict=True)]


def _strategy_column(dataset: Dataset, strategy: str) -> int:
    """Index ``j`` of a strategy (its one-hot block is ``signals[:, 4j:4j+4]``)."""
    names = list(dataset.strategy_names)
    tfs = list(dataset.strategy_timeframes) or [""] * len(names)
    labels = _strategy_labels(dataset)
    for j, (n, tf) in enumerate(zip(names, tfs, strict=True)):
        if strategy in (labels[j], f"{n}@{tf}"):
            return j
    if names.count(strategy) > 1:
        raise ConfigError(f"strategy {strategy!r} runs on several timeframes; name one of "
                          f"{[label for label in labels if label.startswith(strategy + '@')]}")
    raise ConfigError(f"the dataset has no strategy {strategy!r}; it has {labels}")


def strategy_views(dataset: Dataset, carry_hold: bool = True) -> np.ndarray:
    """Each strategy's view after every bar, ``int8 [T, S]``: +1 after ``LONG``, -1 after
    ``SHORT``, 0 after ``FLAT``; ``HOLD`` keeps the previous view (``carry_hold``, starting
    flat) or counts as 0."""
    n_strat = dataset.signals.shape[1] // 4
    t_len = len(dataset)
    views = np.zeros((t_len, n_strat), dtype=np.int8)
    for j in range(n_strat):
        code = np.argmax(dataset.signals[:, 4 * j: 4 * j + 4], axis=1)
        value = np.select([code == _SIG_LONG, code == _SIG_SHORT], [1, -1], 0).astype(np.int8)
        if carry_hold:
            known = code != _SIG_HOLD
            last = np.maximum.accumulate(np.where(known, np.arange(t_len), -1))
            value = np.where(last >= 0, value[np.maximum(last, 0)], 0).astype(np.int8)
        views[:, j] = value
    return views


class SignalBaseline(Baseline):
    """One strategy of the Dataset followed as a policy: ``LONG`` -> long, ``SHORT`` -> short,
    ``FLAT`` -> flat, ``HOLD`` -> keep the previous side (flat before its first signal).

    :param strategy: the strategy's name (``name@timeframe`` when it runs on several).
    """

    def __init__(self, strategy: str) -> None:
        self.strategy = str(strategy)
        self.name = f"signal:{self.strategy}"

    def sides(self, dataset: Dataset, config: EnvConfig) -> np.ndarray:
        j = _strategy_column(dataset, self.strategy)
        return strategy_views(dataset, carry_hold=True)[:, j]


# -------------------------------------------------------------------------- oracle
def _cost_rates(dataset: Dataset, config: EnvConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per bar: the reference fill price of a decision taking effect in that bar and the cost
    of trading there as a fraction of it (fee on the executed price, half spread, slippage),
    read from the engine's own market and config arrays."""
    engine = BatchEngine.from_dataset(dataset, config.engine, 1)
    _, _, _, _, mkt, cfg = engine.kernel_arrays()
    at_close = cfg[K.C_AT_CLOSE] != 0.0
    t_len = mkt.shape[0]
    ref = np.empty(t_len)
    rows = np.empty(t_len, dtype=np.int64)
    if at_close:  # a decision at close b-1 fills at that close
        ref[1:] = mkt[:-1, K.M_CLOSE]
        rows[1:] = np.arange(t_len - 1)
    else:
        ref[1:] = mkt[1:, K.M_OPEN]
        rows[1:] = np.arange(1, t_len)
    ref[0] = mkt[0, K.M_OPEN]
    rows[0] = 0
    mode = cfg[K.C_SLIP_MODE]
    if mode == K.SLIP_FIXED:
        slip = np.full(t_len, cfg[K.C_SLIP_FRAC])
    elif mode == K.SLIP_RANDOM:
        slip = np.full(t_len, cfg[K.C_SLIP_FRAC] / 2.0)  # the mean of the uniform draw
    else:  # none, or ATR slippage (price units per unit, zero when not configured)
        slip = mkt[rows, K.M_ATR_SLIP] / ref
    adverse = mkt[rows, K.M_HALF_SPREAD] + slip
    rate = adverse + cfg[K.C_TAKER] * (1.0 + adverse)
    return ref, rate


@njit(cache=True)
def _growth(p: int, s: int, e: float, ref: float, prev_close: float, close: float,
            rate: float) -> float:
    """Log growth of equity over one bar holding side ``s`` after holding ``p`` before it."""
    g = (1.0 + p * e * (ref / prev_close - 1.0) + s * e * (close - ref) / prev_close
         - abs(s - p) * e * rate * ref / prev_close)
    return math.log(g) if g > 0.0 else -np.inf


@njit(cache=True)
def _oracle_dp(ref: np.ndarray, close: np.ndarray, rate: np.ndarray, e: float, first: int,
               allow_short: bool) -> np.ndarray:
    """Held side over bars ``first..T-1`` maximizing the sum of log growths (starting flat)."""
    t_len = close.shape[0]
    lo = -1 if allow_short else 0
    choice = np.zeros((t_len, 3), dtype=np.int8)
    value = np.zeros(3)  # value[p + 1]: best log growth from bar b on, having held p before it
    nxt = np.zeros(3)
    for b in range(t_len - 1, first - 1, -1):
        for p in range(lo, 2):
            best = -np.inf
            best_s = 0
            for s in range(lo, 2):
                v = _growth(p, s, e, ref[b], close[b - 1], close[b], rate[b]) + value[s + 1]
                if v > best:
                    best = v
                    best_s = s
            nxt[p + 1] = best
            choice[b, p + 1] = best_s
        for i in range(3):
            value[i] = nxt[i]
    held = np.zeros(t_len, dtype=np.int8)
    p = 0
    for b in range(first, t_len):
        p = choice[b, p + 1]
        held[b] = p
    return held


def _exposure(config: EnvConfig) -> float:
    """The fraction of equity a ``discrete3`` long holds: ``max_exposure`` × leverage."""
    return float(config.max_exposure * config.engine.leverage)


def _first_held_bar(config: EnvConfig) -> int:
    """The first bar over which a decision can be held: the first decision is at the close of
    bar ``window - 1`` and takes effect ``1 + decision_lag`` bars later."""
    return config.window + config.engine.effective_lag


def oracle_sides(dataset: Dataset, config: EnvConfig | Mapping[str, Any] | None = None
                 ) -> np.ndarray:
    """The oracle's side after the close of every bar (perfect foresight, see the module
    docstring); ``int8 [T]``, flat where no decision takes effect."""
    cfg = baseline_config(config)
    ref, rate = _cost_rates(dataset, cfg)
    close = np.ascontiguousarray(dataset.ohlcv[:, 3], dtype=np.float64)
    first = _first_held_bar(cfg)
    decisions = np.zeros(len(dataset), dtype=np.int8)
    if first >= len(dataset):
        return decisions
    held = _oracle_dp(ref, close, rate, _exposure(cfg), first, cfg.engine.allow_short)
    shift = 1 + cfg.engine.effective_lag
    decisions[: len(dataset) - shift] = held[shift:]
    decisions[: cfg.window - 1] = 0
    return decisions


def plan_log_growth(sides: np.ndarray, dataset: Dataset,
                    config: EnvConfig | Mapping[str, Any] | None = None) -> float:
    """The oracle's objective for any plan of sides (row ``t`` = the side decided at the close
    of bar ``t``): the sum over bars of the log growth of equity under the cost model the
    dynamic program uses, ``-inf`` if equity would reach zero. The oracle's plan maximizes it.
    """
    cfg = baseline_config(config)
    ref, rate = _cost_rates(dataset, cfg)
    close = dataset.ohlcv[:, 3]
    first = _first_held_bar(cfg)
    shift = 1 + cfg.engine.effective_lag
    s = np.asarray(sides, dtype=np.int64)
    if s.shape != (len(dataset),):
        raise ValueError(f"sides must have one value per bar ({len(dataset)})")
    total = 0.0
    p = 0
    e = _exposure(cfg)
    lo = -1 if cfg.engine.allow_short else 0  # the engine clamps a short target to flat
    for b in range(first, len(dataset)):
        h = max(int(s[b - shift]), lo)
        total += _growth(p, h, e, ref[b], close[b - 1], close[b], rate[b])
        p = h
    return total


class OracleBaseline(Baseline):
    """Perfect foresight over long / flat / short with the engine's costs (see the module
    docstring); an upper bound, not a strategy."""

    name = "oracle"
    perfect_foresight = True

    def sides(self, dataset: Dataset, config: EnvConfig) -> np.ndarray:
        return oracle_sides(dataset, config)


# -------------------------------------------------------------------------- rule
_CONFIRM_DEFAULTS = ("macd_hist", "ret_20", "ret_5", "ret_1", "log_ret")


@njit(cache=True)
def _rule_loop(direction: np.ndarray, confident: np.ndarray, open_: np.ndarray,
               close: np.ndarray, first: int, fill_shift: int, at_close: bool, max_hold: int,
               take_profit: float, stop_loss: float) -> np.ndarray:
    t_len = close.shape[0]
    out = np.zeros(t_len, dtype=np.int8)
    pos = 0
    entry_bar = 0
    entry_price = 0.0
    for t in range(first, t_len):
        if pos != 0:
            if t < entry_bar:  # not filled yet (decision lag)
                out[t] = pos
                continue
            ret = pos * (close[t] / entry_price - 1.0)
            held = t - entry_bar + (0 if at_close else 1)  # bars in the trade at this close
            if (held >= max_hold or (take_profit > 0.0 and ret >= take_profit)
                    or (stop_loss > 0.0 and ret <= -stop_loss)):
                pos = 0  # exit at the next fill; no new entry at the same close
                continue
            out[t] = pos
            continue
        if direction[t] != 0 and confident[t]:
            pos = direction[t]
            fill = t + fill_shift
            if at_close:
                entry_bar = fill - 1
                entry_price = close[min(fill - 1, t_len - 1)]
            else:
                entry_bar = fill
                entry_price = open_[min(fill, t_len - 1)]
            out[t] = pos
    return out


class RuleBaseline(Baseline):
    """The fixed-rule baseline: enter on a confident, confirmed direction; exit after
    ``max_hold`` bars or at a profit / loss threshold.

    Direction and confidence at the close of bar ``t``:

    * ``source="consensus"``: each strategy's view (+1 after ``LONG``, -1 after ``SHORT``, 0
      after ``FLAT``, ``HOLD`` keeps its previous view); the score is their mean, the direction
      its sign and the confidence its absolute value (the share of strategies agreeing, net);
    * ``source="forecast"``: ``sign(forecast_signal)`` and ``forecast_confidence`` (the
      ``forecast`` feature group);
    * ``source="auto"`` (default): the forecast when the Dataset has both features, else the
      consensus.

    Entry, when flat: the direction is not 0, the confidence is above ``threshold`` and the
    confirming feature agrees (``direction × feature > confirm_threshold``; ``confirm=None``
    skips the check; ``"auto"`` takes the first of ``macd_hist``, ``ret_20``, ``ret_5``,
    ``ret_1``, ``log_ret`` the Dataset has). Short entries need ``engine.allow_short``.

    Exit, checked at each close once the entry has filled: after ``max_hold`` bars in the
    trade, or when its return since the entry fill price (``side × (close / entry − 1)``)
    reaches ``take_profit`` or falls to ``-stop_loss`` (0 disables either). The exit fills like
    any decision (next open by default); the rule stays flat at that close and may enter again
    from the next one.
    """

    name = "rule"

    def __init__(self, source: str = "auto", threshold: float = 0.5, confirm: str | None = "auto",
                 confirm_threshold: float = 0.0, max_hold: int = 24, take_profit: float = 0.02,
                 stop_loss: float = 0.01, carry_hold: bool = True) -> None:
        if source not in ("auto", "consensus", "forecast"):
            raise ConfigError(f"baseline 'rule': source must be auto, consensus or forecast, got "
                              f"{source!r}")
        if isinstance(max_hold, bool) or not isinstance(max_hold, int | np.integer) \
                or max_hold < 1:
            raise ConfigError(f"baseline 'rule': max_hold must be an integer >= 1, got "
                              f"{max_hold!r}")
        for key, value in (("threshold", threshold), ("take_profit", take_profit),
                           ("stop_loss", stop_loss)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"baseline 'rule': {key} must be a number >= 0, got {value!r}")
        self.source = source
        self.threshold = float(threshold)
        self.confirm = confirm
        self.confirm_threshold = float(confirm_threshold)
        self.max_hold = int(max_hold)
        self.take_profit = float(take_profit)
        self.stop_loss = float(stop_loss)
        self.carry_hold = bool(carry_hold)

    def direction(self, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
        """``(direction int8 [T], confidence float [T])`` at each close (see the class doc)."""
        has_forecast = {"forecast_signal", "forecast_confidence"} <= set(dataset.feature_names)
        source = self.source
        if source == "auto":
            source = "forecast" if has_forecast else "consensus"
        if source == "forecast":
            if not has_forecast:
                raise ConfigError("baseline 'rule': source='forecast' needs the features "
                                  "forecast_signal and forecast_confidence (the forecast group)")
            signal = np.nan_to_num(dataset.feature("forecast_signal").astype(np.float64))
            conf = np.nan_to_num(dataset.feature("forecast_confidence").astype(np.float64))
            return np.sign(signal).astype(np.int8), conf
        if dataset.signals.shape[1] == 0:
            raise ConfigError("baseline 'rule': the dataset has no strategy signals for a "
                              "consensus (and no forecast features)")
        score = strategy_views(dataset, self.carry_hold).mean(axis=1)
        return np.sign(score).astype(np.int8), np.abs(score)

    def confirm_feature(self, dataset: Dataset) -> str | None:
        """The confirming feature's name (``None``: no confirmation)."""
        if self.confirm is None:
            return None
        if self.confirm == "auto":
            return next((n for n in _CONFIRM_DEFAULTS if n in dataset.feature_names), None)
        if self.confirm not in dataset.feature_names:
            raise ConfigError(f"baseline 'rule': no confirming feature {self.confirm!r} in the "
                              f"dataset; it has {dataset.feature_names}")
        return self.confirm

    def sides(self, dataset: Dataset, config: EnvConfig) -> np.ndarray:
        direction, conf = self.direction(dataset)
        if not config.engine.allow_short:
            direction = np.maximum(direction, 0).astype(np.int8)
        confident = conf > self.threshold
        feature = self.confirm_feature(dataset)
        if feature is not None:
            values = np.nan_to_num(dataset.feature(feature).astype(np.float64))
            confident &= direction * values > self.confirm_threshold
        lag = config.engine.effective_lag
        at_close = config.engine.fill == "close"
        return _rule_loop(direction, confident, np.ascontiguousarray(dataset.ohlcv[:, 0]),
                          np.ascontiguousarray(dataset.ohlcv[:, 3]), config.window - 1, 1 + lag,
                          at_close, self.max_hold, self.take_profit, self.stop_loss)


# -------------------------------------------------------------------------- registry
#: Baseline name -> factory (keyword parameters -> a baseline). ``signal`` takes
#: ``strategy=``; :func:`make_baseline` also accepts ``"signal:<strategy>"``.
BASELINES: dict[str, Callable[..., Baseline]] = {
    "buy_and_hold": BuyAndHold,
    "flat": Flat,
    "random": RandomBaseline,
    "signal": SignalBaseline,
    "oracle": OracleBaseline,
    "rule": RuleBaseline,
}


def baseline_names(dataset: Dataset) -> list[str]:
    """Every baseline for this Dataset: the fixed ones, ``signal:<strategy>`` per strategy, and
    ``rule`` when the Dataset has what it trades on (strategy signals or the forecast
    features)."""
    signals = [f"signal:{label}" for label in _strategy_labels(dataset)]
    forecast = {"forecast_signal", "forecast_confidence"} <= set(dataset.feature_names)
    rule = ["rule"] if dataset.signals.shape[1] > 0 or forecast else []
    return ["buy_and_hold", "flat", "random", *signals, "oracle", *rule]


def make_baseline(name: str, dataset: Dataset | None = None, **params: Any) -> Baseline:
    """A baseline by name (:func:`baseline_names`), with its parameters.

    :param name: ``buy_and_hold``, ``flat``, ``random``, ``signal:<strategy>``, ``oracle`` or
        ``rule``.
    :param dataset: when given, ``signal:`` names are checked against its strategies.
    :raises ConfigError: for an unknown name or parameter.
    """
    key, _, arg = name.partition(":")
    if key not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; known: {sorted(BASELINES)} "
                          "(signal as signal:<strategy>)")
    if key == "signal":
        if arg:
            if "strategy" in params:
                raise ConfigError(f"baseline {name!r}: the strategy is named twice")
            params["strategy"] = arg
        if "strategy" not in params:
            raise ConfigError("baseline 'signal' needs a strategy: signal:<strategy>")
        if dataset is not None:
            _strategy_column(dataset, params["strategy"])
    elif arg:
        raise ConfigError(f"baseline {key!r} takes no ':' argument, got {name!r}")
    try:
        return BASELINES[key](**params)
    except TypeError as exc:
        raise ConfigError(f"baseline {key!r}: {exc}") from None
