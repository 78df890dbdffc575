"""Agents: the algorithm registry (Stable-Baselines3, sb3-contrib), safe model artifacts,
training runs, encoders and the baselines, all usable as policies of the backtest runner.
"""

from rltrade.agents.algorithms import (
    SpacesEnv,
    algorithm_class,
    load_model,
    make_agent,
    save_model,
)

__all__ = [
    "SpacesEnv",
    "algorithm_class",
    "load_model",
    "make_agent",
    "save_model",
]
