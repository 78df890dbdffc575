"""The single execution engine: orders become fills, fills become money.

Training envs, the backtest runner and paper trading all fill through :class:`ExecutionEngine`
(one account) or :class:`BatchEngine` (many accounts, one numba call per step). Conventions are
in ``docs/engine.md``. :class:`RiskManager` gates targets, discrete actions and policy logits.
"""

from rltrade.sim.config import CostModel, EngineConfig
from rltrade.sim.engine import (
    ADJUSTMENTS,
    EXIT_REASONS,
    REJECTION_REASONS,
    TRADE_DTYPE,
    Account,
    BatchEngine,
    EngineError,
    ExecutionEngine,
    KernelArrays,
    Order,
)
from rltrade.sim.instruments import PRESETS, Instrument, funding_rates, preset
from rltrade.sim.risk import Decision, RiskConfig, RiskManager, RiskState

__all__ = [
    "ADJUSTMENTS",
    "EXIT_REASONS",
    "PRESETS",
    "REJECTION_REASONS",
    "TRADE_DTYPE",
    "Account",
    "BatchEngine",
    "CostModel",
    "Decision",
    "EngineConfig",
    "EngineError",
    "ExecutionEngine",
    "Instrument",
    "KernelArrays",
    "Order",
    "RiskConfig",
    "RiskManager",
    "RiskState",
    "funding_rates",
    "preset",
]
