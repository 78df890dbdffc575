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
from rltrade.agents.baselines import BASELINES, baseline_names, make_baseline
from rltrade.agents.encoders import ENCODERS, CnnLstmAttention
from rltrade.agents.policy import NumpyMlpPolicy

__all__ = [
    "BASELINES",
    "ENCODERS",
    "CnnLstmAttention",
    "NumpyMlpPolicy",
    "SpacesEnv",
    "algorithm_class",
    "baseline_names",
    "load_model",
    "make_agent",
    "make_baseline",
    "save_model",
]
