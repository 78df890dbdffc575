"""Checks of what an env returns to an A3C worker: a finite scalar reward, an observation that
fits the observation space (shape, dtype, keys) and holds only finite values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces


def check_reward(reward: Any) -> str | None:
    """What is wrong with a reward (``None``: a finite real number)."""
    try:
        value = float(reward)
    except (TypeError, ValueError):
        return f"reward is not a number ({type(reward).__name__}: {reward!r})"
    if np.ndim(reward) != 0:
        return f"reward has shape {np.shape(reward)}, expected a scalar"
    if not math.isfinite(value):
        return f"reward is {value} (expected a finite number): check the env's reward"
    return None


def check_observation(space: spaces.Space, obs: Any) -> str | None:
    """What is wrong with an observation (``None``: it fits the space's shape and dtype and
    holds only finite values)."""
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, Mapping):
            return f"observation is a {type(obs).__name__}, expected a dict"
        if set(obs) != set(space.spaces):
            return f"observation keys {sorted(obs)} differ from {sorted(space.spaces)}"
        for key, sub in space.spaces.items():
            problem = _check_array(sub, obs[key], f"observation[{key!r}]")
            if problem:
                return problem
        return None
    return _check_array(space, obs, "observation")


def _check_array(space: spaces.Space, value: Any, name: str) -> str | None:
    if not isinstance(value, np.ndarray):
        return f"{name} is a {type(value).__name__}, expected a numpy array"
    if value.shape != space.shape:
        return f"{name} has shape {value.shape}, expected {space.shape}"
    if value.dtype != space.dtype:
        return f"{name} has dtype {value.dtype}, expected {space.dtype}"
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        bad = np.argwhere(~np.isfinite(value))[0].tolist()
        return f"{name} holds a non-finite value ({value[tuple(bad)]} at {bad})"
    return None

