"""Run a policy inside backtesting.py: its statistics and interactive chart for any agent.

A policy (a trained agent or a baseline) becomes a ``backtesting.Strategy`` that trades exactly
as :class:`~rltrade.envs.TradingEnv` would with the same config, in the engine's ``ideal`` mode
(backtesting.py's fill semantics, see ``docs/engine.md`` section 8)::

    from rltrade.envs.backtesting_py import run_in_backtesting

    stats, bt = run_in_backtesting(model, ds, env_config, cash=1e7, commission=2e-4)
    print(stats)          # backtesting.py's statistics
    bt.plot()             # its interactive chart

How it works. The strategy drives a *mirror*: a ``TradingEnv`` (``mode="eval"``, the bridge's
engine config) stepped in lockstep with backtesting.py's bars. In ``next()`` at bar ``t``
(backtesting.py calls it after the close of ``t`` with ``self.data`` ending at ``t``):

1. the mirror processes bar ``t`` with the orders it decided at ``t - 1`` (never a bar beyond
   ``t``), and its account is checked against backtesting.py's (same position, same equity to
   1e-8 relative: the account block of the observation is only right if both agree);
2. the policy gets the mirror's observation, i.e. exactly the env's observation at ``t``;
3. the mirror decides, as its own step does: the action becomes a target position by the env's
   rule (its numba kernel), then, with a risk manager in the config, passes its gates (drawdown,
   volatility, daily loss, no-trade windows...; each intervention recorded once, in
   ``Decision.risk_reasons`` and :attr:`PolicyStrategy.risk_interventions`, as the env counts
   them). The engine's fill-time constraints (short clamp, ``max_position``, leverage cap, lot
   rounding, dead zone, ``min_notional``, stop-level checks) are then applied by the engine's
   own order kernel on a scratch copy of the account, at the price the order will fill at: the
   open of ``t + 1`` (or the close of ``t`` with ``fill="close"``). Only that sizing step reads
   the fill price, as the engine does at the fill; the observation, the action and the risk
   gates only see bars ``<= t``;
4. the difference to backtesting.py's position becomes orders: reductions through
   ``Trade.close`` (oldest trade first, FIFO), increases through ``buy``/``sell`` carrying the
   position's stop-loss / take-profit, flips as close-all plus a new order, level changes through
   ``Trade.sl`` / ``Trade.tp`` on every open trade (the recipe proven trade for trade in
   ``tests/test_engine_vs_backtesting.py``).

Rounding. backtesting.py sizes are whole units (or fractions of equity). The bridge's engine
config therefore rounds every traded quantity toward zero to a multiple of ``lot_size`` whole
units (default: the config's ``lot_size`` when it is a whole number, else ``1``); an env meant
to match the bridge must use the same config (:func:`bridge_config` gives it). Use enough cash
that whole units are fine-grained (e.g. ``cash=1e7`` on EURUSD).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd
from backtesting import Backtest, Strategy

from rltrade.envs.config import EnvConfig
from rltrade.envs.spaces import observation
from rltrade.envs.trading_env import TradingEnv
from rltrade.errors import ConfigError, DataError, RLTradeError
from rltrade.features.dataset import Dataset
from rltrade.features.normalize import Normalizer
from rltrade.sim import kernels as K
from rltrade.sim.config import EngineConfig

__all__ = [
    "BridgeMismatchError",
    "Decision",
    "PolicyStrategy",
    "as_policy",
    "backtesting_data",
    "bridge_config",
    "policy_strategy",
    "run_in_backtesting",
]

#: Relative equity tolerance of the lockstep check (the golden test agrees to ~1e-13).
EQUITY_RTOL = 1e-8

#: Engine fields copied as they are into the bridge's ideal-mode engine config.
_ENGINE_FIELDS = ("initial_cash", "fill", "leverage", "maintenance_margin", "max_position",
                  "allow_short", "dead_zone", "min_notional", "lot_capacity", "order_capacity",
                  "seed")


class BridgeMismatchError(RLTradeError):
    """backtesting.py's account left the env mirror's (position or equity differ)."""


class Decision(NamedTuple):
    """One decision of the policy inside backtesting.py.

    :param bar: the bar whose close it was taken at (row of the Dataset).
    :param action: the policy's action, as returned (``None`` between two decisions of
        ``env.decision_interval``).
    :param position: the position (whole units) the engine holds after the fill.
    :param sl: the position's stop-loss level after the fill (0 = none).
    :param tp: the position's take-profit level after the fill (0 = none).
    :param risk_reasons: the risk manager's reason codes for changing the action's target
        (empty: unchanged, or no risk manager), as in the env and the backtest's steps.
    """

    bar: int
    action: Any
    position: float
    sl: float
    tp: float
    risk_reasons: tuple[str, ...] = ()


# ------------------------------------------------------------------------------- helpers
def backtesting_data(dataset: Dataset) -> pd.DataFrame:
    """The Dataset's bars as backtesting.py wants them: ``Open, High, Low, Close, Volume``
    indexed by the bars' open times (UTC, timezone-naive), one row per Dataset row.

    :param dataset: the Dataset the policy trades.
    """
    index = pd.DatetimeIndex(dataset.timestamps.astype("datetime64[ns]"), name="timestamp")
    return pd.DataFrame(np.asarray(dataset.ohlcv, dtype=np.float64),
                        columns=["Open", "High", "Low", "Close", "Volume"], index=index)


def bridge_config(config: EnvConfig | Mapping[str, Any] | None = None, *,
                  cash: float | None = None, commission: float | None = None,
                  lot_size: float | None = None, **overrides: Any) -> EnvConfig:
    """The env config the bridge runs (and an env must use to match it trade for trade).

    ``mode="eval"``; the engine in ``ideal`` mode (fees only: spread, slippage, decision lag
    and touch probability are dropped) with one fee rate, backtesting.py's ``commission``, and
    whole-unit lots. Every other engine setting (leverage, caps, dead zone, ``fill``...) is kept:
    the bridge applies it exactly as the engine does. A risk manager (``risk``) stays in the
    loop: the env's own gates decide the target of every order, as in the env and in
    backtests (the ideal engine has no spread, so the spread gate never fires).

    :param config: the env config (``EnvConfig``, a mapping or ``None`` for the defaults).
    :param cash: initial cash (default: ``config.engine.initial_cash``).
    :param commission: fee rate of every fill (default: ``config.engine.costs.taker_fee``; the
        env's action schemes never set a take-profit, so maker fills do not occur).
    :param lot_size: traded quantities are rounded toward zero to a multiple of this many whole
        units (default: the engine's ``lot_size`` when it is a whole number ``>= 1``, else 1).
    :param overrides: keyword overrides of ``config`` (as for ``TradingEnv``).
    :raises ConfigError: for settings backtesting.py has no counterpart of: an initial
        position, a fractional lot size.
    """
    cfg = EnvConfig.build(config, **overrides)
    eng = cfg.engine
    if eng.initial_position != 0:
        raise ConfigError(
            "backtesting.py bridge: engine.initial_position must be 0 (backtesting.py starts "
            "flat)"
        )
    if lot_size is None:
        lot_size = eng.lot_size if eng.lot_size >= 1 and float(eng.lot_size).is_integer() else 1
    if not (math.isfinite(lot_size) and lot_size >= 1 and float(lot_size).is_integer()):
        raise ConfigError(
            f"backtesting.py bridge: lot_size must be a whole number of units >= 1 "
            f"(backtesting.py trades whole units), got {lot_size}"
        )
    fields = {name: getattr(eng, name) for name in _ENGINE_FIELDS}
    if cash is not None:
        fields["initial_cash"] = float(cash)
    fee = eng.costs.taker_fee if commission is None else float(commission)
    engine = EngineConfig.ideal(fee, lot_size=float(lot_size), **fields)
    return EnvConfig.build(cfg, mode="eval", engine=engine)


def as_policy(policy: Any) -> Callable[[Any], Any]:
    """A plain ``obs -> action`` callable from a policy.

    An object with a ``predict`` method (a Stable-Baselines3 model) is asked for its
    deterministic action, ``model.predict(obs, deterministic=True)[0]``; any other callable is
    used as it is.

    :param policy: an SB3 model (or anything with SB3's ``predict``) or a callable.
    """
    predict = getattr(policy, "predict", None)
    if callable(predict):
        def _predict(obs: Any) -> Any:
            return predict(obs, deterministic=True)[0]
        return _predict
    if callable(policy):
        return policy
    raise TypeError(
        f"policy must be callable (obs -> action) or have SB3's predict(obs, deterministic=True);"
        f" got {type(policy).__name__}"
    )


def _backtest_kwargs(config: EnvConfig, margin: float | None = None) -> dict[str, Any]:
    eng = config.engine
    if margin is None:
        # The engine's leverage cap is applied when the bridge sizes an order; backtesting.py's
        # own margin check (which marks at the fill bar's close) must never second-guess it.
        margin = min(1.0, 0.1 / eng.leverage)
    return {"cash": eng.initial_cash, "commission": eng.costs.taker_fee, "margin": margin,
            "trade_on_close": eng.fill == "close", "hedging": False, "exclusive_orders": False,
            "spread": 0.0}


# ------------------------------------------------------------------------------- strategy
class PolicyStrategy(Strategy):
    """A backtesting.py ``Strategy`` that trades a policy through a lockstep env mirror.

    Build one with :func:`policy_strategy` (which fills the class parameters) and run it with
    ``Backtest(backtesting_data(ds), S, **S.backtest_kwargs())``, or use
    :func:`run_in_backtesting`. After the run, the strategy instance (``stats["_strategy"]``)
    holds ``mirror`` (the env, at the last bar), ``start_bar`` and ``decisions``
    (one :class:`Decision` per bar the policy was asked).

    Class parameters (backtesting.py's strategy parameters):

    :param policy: a callable ``obs -> action`` or an object with SB3's ``predict``.
    :param dataset: the Dataset whose bars the Backtest runs on (checked in ``init``).
    :param env_config: the env config, already passed through :func:`bridge_config`.
    :param normalizer: a fitted normalizer (z-score specs), as for ``TradingEnv``.
    :param start: the bar of the first decision (default: the env's first full window, or
        backtesting.py's first ``next()`` call if later).
    :param strict: raise :class:`BridgeMismatchError` when backtesting.py's account leaves the
        mirror's; ``False`` warns once and goes on.
    """

    policy: ClassVar[Any] = None
    dataset: ClassVar[Dataset | None] = None
    env_config: ClassVar[EnvConfig | None] = None
    normalizer: ClassVar[Normalizer | None] = None
    start: ClassVar[int | None] = None
    strict: ClassVar[bool] = True

    @classmethod
    def backtest_kwargs(cls, margin: float | None = None) -> dict[str, Any]:
        """The ``Backtest(...)`` keywords that match the env config (cash, commission, margin,
        ``trade_on_close``...).

        :param margin: backtesting.py's margin (default: loose enough never to bind; the
            engine's leverage cap is the one in force).
        """
        if cls.env_config is None:
            raise ConfigError("PolicyStrategy: build the class with policy_strategy()")
        return _backtest_kwargs(cls.env_config, margin)

    # -- backtesting.py hooks --------------------------------------------------------------
    def init(self) -> None:
        """Check the Backtest against the config and build the mirror env."""
        if self.policy is None or self.dataset is None or self.env_config is None:
            raise ConfigError("PolicyStrategy: build the class with policy_strategy()")
        config = self.env_config
        self._act = as_policy(self.policy)
        self._check_data(self.dataset)
        self._check_broker(config)
        self.mirror = TradingEnv(self.dataset, config, self.normalizer)
        core = self.mirror.core
        core.set_bar_step(True)  # backtesting.py calls next() on every bar
        self.start_bar: int | None = None
        self.decisions: list[Decision] = []
        (self._st, self._lots, self._orders, self._no_trades, self._mkt, self._cfg) = (
            core.engine.kernel_arrays()
        )
        self._at_close = config.engine.fill == "close"
        self._obs: Any = None
        self._done = False
        self._warned = False

    def next(self) -> None:
        """Catch the mirror up to this bar, check it, ask the policy, send the orders."""
        if self._done:
            return
        t = len(self.data) - 1
        core = self.mirror.core
        if self.start_bar is None:
            first = core.first_bar if self.start is None else int(self.start)
            if self.start is not None and t > first:
                raise ConfigError(
                    f"PolicyStrategy: start={first} but backtesting.py calls next() from bar {t} "
                    "(indicator warm-up); use a later start"
                )
            if t < first:
                return
            if t >= core.last_bar:
                self._done = True
                return
            self._obs, _ = self.mirror.reset(options={"start": t})
            self.start_bar = t
        else:
            # the env's step with the orders it decided at the previous bar
            _, terminated, truncated, _ = core.step_decided()
            self._obs = observation(self.env_config, core.obs_market[0], core.obs_account[0])
            if int(self._st[0, K.BAR]) != t:  # pragma: no cover - guarded by construction
                raise BridgeMismatchError(
                    f"the mirror is at bar {int(self._st[0, K.BAR])}, backtesting.py at {t}"
                )
            self._check_sync(t)
            if terminated or truncated:
                self._done = True
                return
        # the env's decision, once: the action scheme's target, then the risk manager's gates
        # (their interventions recorded in the mirror, as the env's step records them);
        # between two decisions (env.decision_interval) the policy is not asked and no order
        # is sent, but the risk manager still sees the position
        action = None
        if core.decision_due(0):
            action = self._act(self._obs)
            core.accept_actions(action)
        core.decide()
        position, sl, tp = self._preview(t, float(core.targets[0]), float(core.sl[0]),
                                         float(core.tp[0]))
        self.decisions.append(Decision(t, action, position, sl, tp, core.last_reasons[0]))
        self._rebalance(position, sl, tp)

    @property
    def risk_interventions(self) -> dict[str, int]:
        """The risk manager's interventions so far by reason code (empty without one): the
        mirror env's ``info["risk_interventions"]``."""
        core = self.mirror.core
        return dict(core.risk_counts[0]) if core.risk is not None else {}

    # -- the order of a decision ---------------------------------------------------------------
    def _preview(self, t: int, target: float, sl: float, tp: float) -> tuple[float, float, float]:
        """(position, stop-loss, take-profit) after the fill of the order for ``target`` units
        with levels ``sl`` / ``tp`` the env decided at ``t``, computed by the engine's own
        submission and order kernels on a copy of the account."""
        st = self._st[0].copy()
        pos = float(st[K.POS])
        code = K.submit_one(st, self._orders[0].copy(), self._mkt, self._cfg, K.K_TARGET,
                            target, math.nan, sl, tp, math.inf)
        if code != K.OK:  # rejected at submission: nothing changes
            return pos, float(st[K.SL]), float(st[K.TP])
        bar, price = (t, self._mkt[t, K.M_CLOSE]) if self._at_close else (
            t + 1, self._mkt[t + 1, K.M_OPEN])
        # the same constraints, in the same order, at the fill price
        K.market_order(st, self._lots[0].copy(), self._no_trades, self._mkt, self._cfg, bar,
                       float(price), K.K_TARGET, target, sl, tp, K.TAKER)
        return float(st[K.POS]), float(st[K.SL]), float(st[K.TP])

    # -- orders --------------------------------------------------------------------------------
    def _rebalance(self, position: float, sl: float, tp: float) -> None:
        """Orders that take backtesting.py's position to ``position`` with the position-level
        stop-loss ``sl`` and take-profit ``tp`` (0 = none), filled at the next open."""
        trades = list(self.trades)
        pos = sum(int(tr.size) for tr in trades)
        new = round(position)
        new_sl = sl if sl > 0 else None
        new_tp = tp if tp > 0 else None
        if new == pos:
            if pos:
                self._set_levels(trades, new_sl, new_tp)
            return
        if pos == 0 or new == 0 or (new > 0) != (pos > 0):
            for tr in reversed(trades):  # each close goes to the queue's front: oldest first
                tr.close()
            if new:
                (self.buy if new > 0 else self.sell)(size=abs(new), sl=new_sl, tp=new_tp)
            return
        # same side: levels first (stop orders go to the queue's front), then the reductions
        # in front of them, so they fill at the open before any stop, as in the engine
        self._set_levels(trades, new_sl, new_tp)
        if abs(new) > abs(pos):
            (self.buy if new > 0 else self.sell)(size=abs(new) - abs(pos), sl=new_sl,
                                                 tp=new_tp)
            return
        left = abs(pos) - abs(new)
        closes = []
        for tr in trades:
            if left <= 0:
                break
            take = min(left, abs(int(tr.size)))
            closes.append((tr, take))
            left -= take
        for tr, take in reversed(closes):
            size = abs(int(tr.size))
            if take >= size:
                tr.close()
            else:
                tr.close(take / size)

    @staticmethod
    def _set_levels(trades: list[Any], sl: float | None, tp: float | None) -> None:
        for tr in trades:
            if tr.sl != sl:
                tr.sl = sl
            if tr.tp != tp:
                tr.tp = tp

    # -- checks ----------------------------------------------------------------------------
    def _check_sync(self, t: int) -> None:
        pos_env = float(self._st[0, K.POS])
        eq_env = float(self._st[0, K.EQUITY])
        pos_bt = float(self.position.size)
        eq_bt = float(self.equity)
        scale = max(abs(eq_env), float(self._st[0, K.INITIAL_EQUITY]))
        # positions are whole units on both sides; the tolerance only forgives the engine's
        # lot rounding, which leaves a quantity within 1e-9 lot of a whole one unrounded
        if abs(pos_env - pos_bt) <= 1e-6 and abs(eq_env - eq_bt) <= EQUITY_RTOL * scale:
            return
        msg = (
            f"backtesting.py left the env at bar {t} ({self.data.index[-1]}): position "
            f"{pos_bt:g} vs the env's {pos_env:g}, equity {eq_bt:.6f} vs {eq_env:.6f}. Usual "
            "causes: a leverage cap or stop that backtesting.py treats differently (see "
            "docs/envs.md, backtesting.py bridge), or a Backtest not built with "
            "backtest_kwargs()"
        )
        if self.strict:
            raise BridgeMismatchError(msg)
        if not self._warned:
            warnings.warn(msg + "; going on (strict=False)", UserWarning, stacklevel=2)
            self._warned = True

    def _check_data(self, dataset: Dataset) -> None:
        n = len(self.data)
        if n != len(dataset):
            raise DataError(
                f"PolicyStrategy: the Backtest has {n} bars, the Dataset {len(dataset)}; build "
                "the Backtest on backtesting_data(dataset)"
            )
        ohlc = np.column_stack([self.data.Open, self.data.High, self.data.Low, self.data.Close])
        if not np.array_equal(ohlc, dataset.ohlcv[:, :4]):
            raise DataError(
                "PolicyStrategy: the Backtest's prices are not the Dataset's; build the Backtest "
                "on backtesting_data(dataset)"
            )

    def _check_broker(self, config: EnvConfig) -> None:
        """The Backtest's settings against the config (backtesting.py keeps them private: only
        the ones it exposes under these names are checked)."""
        want = _backtest_kwargs(config)
        broker = self._broker
        problems = []
        if abs(self.equity - want["cash"]) > 1e-9 * want["cash"]:
            problems.append(f"cash={self.equity:g} (want {want['cash']:g})")
        checks = (("_commission_relative", want["commission"], "commission"),
                  ("_commission_fixed", 0, "fixed commission"),
                  ("_spread", 0.0, "spread"),
                  ("_trade_on_close", want["trade_on_close"], "trade_on_close"),
                  ("_hedging", False, "hedging"),
                  ("_exclusive_orders", False, "exclusive_orders"))
        for attr, expected, name in checks:
            value = getattr(broker, attr, expected)
            if value != expected:
                problems.append(f"{name}={value!r} (want {expected!r})")
        if problems:
            raise ConfigError(
                "PolicyStrategy: the Backtest does not match the env config: "
                + ", ".join(problems) + "; use Backtest(..., **S.backtest_kwargs())"
            )


def policy_strategy(policy: Any, dataset: Dataset,
                    env_config: EnvConfig | Mapping[str, Any] | None = None,
                    normalizer: Normalizer | None = None, *, cash: float | None = None,
                    commission: float | None = None, lot_size: float | None = None,
                    start: int | None = None, strict: bool = True) -> type[PolicyStrategy]:
    """A backtesting.py ``Strategy`` class that trades ``policy`` on ``dataset``.

    >>> S = policy_strategy(model, ds, env_config, cash=1e7, commission=2e-4)
    >>> stats = Backtest(backtesting_data(ds), S, **S.backtest_kwargs()).run()

    :param policy: a callable ``obs -> action`` or an SB3 model (``predict``, deterministic).
    :param dataset: the Dataset (the Backtest must run on ``backtesting_data(dataset)``).
    :param env_config: the env config the policy was trained with (see :func:`bridge_config`
        for what the bridge changes).
    :param normalizer: a fitted normalizer (required for z-score specs).
    :param cash: initial cash (default: the config's).
    :param commission: fee rate of every fill (default: the config's taker fee).
    :param lot_size: whole units per lot (see :func:`bridge_config`).
    :param start: bar of the first decision (default: the env's first full window).
    :param strict: raise when backtesting.py's account leaves the env's (else warn once).
    """
    config = bridge_config(env_config, cash=cash, commission=commission, lot_size=lot_size)
    as_policy(policy)  # fail early on something that is not a policy
    # staticmethod: a plain function stored on a class would be bound to the instance
    attrs = {"policy": staticmethod(policy), "dataset": dataset, "env_config": config,
             "normalizer": normalizer, "start": start, "strict": strict,
             "__doc__": PolicyStrategy.__doc__}
    return type("PolicyStrategy", (PolicyStrategy,), attrs)


def run_in_backtesting(policy: Any, dataset: Dataset,
                       env_config: EnvConfig | Mapping[str, Any] | None = None,
                       normalizer: Normalizer | None = None, *, cash: float | None = None,
                       commission: float | None = None, lot_size: float | None = None,
                       margin: float | None = None, finalize_trades: bool = False,
                       start: int | None = None,
                       strict: bool = True) -> tuple[pd.Series, Backtest]:
    """Run ``policy`` on ``dataset`` inside backtesting.py; returns ``(stats, backtest)``.

    ``stats`` is backtesting.py's result (``stats["_trades"]``, ``stats["_equity_curve"]``,
    ``stats["_strategy"].decisions``...); ``backtest.plot()`` draws the interactive chart.

    :param policy: a callable ``obs -> action`` or an SB3 model (``predict``, deterministic).
    :param dataset: the Dataset to trade.
    :param env_config: the env config (see :func:`bridge_config`).
    :param normalizer: a fitted normalizer (required for z-score specs).
    :param cash: initial cash (default: the config's).
    :param commission: fee rate of every fill (default: the config's taker fee).
    :param lot_size: whole units per lot (see :func:`bridge_config`).
    :param margin: backtesting.py's margin (default: loose enough never to bind: the engine's
        leverage cap, applied when orders are sized, is the one in force).
    :param finalize_trades: close the position still open at the end so that it counts in the
        statistics (backtesting.py closes it at the last bar's open; the env leaves it open, so
        the last point of the equity curve then differs from the env's). By default the open
        position stays open: it is in the equity, not in ``stats["_trades"]``.
    :param start: bar of the first decision (default: the env's first full window).
    :param strict: raise when backtesting.py's account leaves the env's (else warn once).
    """
    strategy = policy_strategy(policy, dataset, env_config, normalizer, cash=cash,
                               commission=commission, lot_size=lot_size, start=start,
                               strict=strict)
    with warnings.catch_warnings():
        # the open position at the end is expected (see finalize_trades); whole units of a
        # price above the cash are still whole units
        warnings.filterwarnings("ignore", message="Some trades remain open")
        warnings.filterwarnings("ignore", message="Some prices are larger than initial cash")
        bt = Backtest(backtesting_data(dataset), strategy, finalize_trades=finalize_trades,
                      **strategy.backtest_kwargs(margin))
        stats = bt.run()
    return stats, bt
