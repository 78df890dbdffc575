"""Shared test fixtures: the small run config that training, A3C and judging tests train, and
rltrade's log messages captured while a test runs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from loguru import logger

from rltrade.config import RunConfig

#: A run that trains in about a second: 1,500 planted-alpha bars, three features and one
#: strategy, a window of 8, PPO with rollouts of 64 steps x 2 envs and a 16-unit network.
SMALL_RUN: dict[str, Any] = {
    "data": {"source": "synthetic:planted?n_bars=1500&seed=3"},
    "features": {"features": [{"name": "column"}, {"name": "returns", "params": {"periods": [1]}},
                              {"name": "rsi"}],
                 "strategies": [{"name": "supertrend", "timeframe": None}]},
    "env": {"window": 8, "episode_length": 256},
    "agent": {"hyperparams": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
              "policy": {"net_arch": [16]}},
    "training": {"total_steps": 512, "n_envs": 2, "eval_freq": 256, "checkpoint_freq": 128,
                 "torch_threads": 1},
}


def small_run_config(replace: dict[str, Any] | None = None, **sections: Any) -> RunConfig:
    """The small run config.

    :param replace: whole sections that replace the small run's (e.g. another ``agent``).
    :param sections: keys merged into the sections (``training={"total_steps": 256}``), as
        :meth:`RunConfig.with_overrides` does.
    """
    data = {**copy.deepcopy(SMALL_RUN), **copy.deepcopy(replace or {})}
    cfg = RunConfig.from_dict(data)
    return cfg.with_overrides(**sections) if sections else cfg


@pytest.fixture(scope="session")
def small_config() -> Callable[..., RunConfig]:
    """Factory of the small run config: ``small_config(training={"total_steps": 256})``, or
    ``small_config(replace={"agent": {...}})`` for a whole section (see
    :func:`small_run_config`)."""
    return small_run_config


@pytest.fixture
def log_messages():
    """rltrade's loguru messages ``(level, text)`` while the test runs."""
    messages: list[tuple[str, str]] = []
    handler = logger.add(lambda m: messages.append((m.record["level"].name,
                                                    m.record["message"])), level="DEBUG")
    logger.enable("rltrade")
    yield messages
    logger.disable("rltrade")
    logger.remove(handler)
