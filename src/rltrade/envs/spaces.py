"""Action schemes and observation layouts: the spaces, and actions checked before they count.

The schemes (records in :mod:`rltrade.envs.schemes`; the kernel in :mod:`rltrade.envs.kernels`
turns an action into an order):

``discrete3``
    ``Discrete(3)``: 0 short, 1 flat, 2 long; long/short use ``max_exposure`` of the leverage
    limit (target units = ±max_exposure × leverage × equity / (close × the instrument's
    multiplier)).
``discrete6``
    ``Discrete(6)``: 0 HOLD, 1 ENTER_LONG, 2 ENTER_SHORT, 3 EXIT, 4 SCALE_IN (+50 %),
    5 SCALE_OUT (-50 %). Entries size from risk per trade (``risk_per_trade`` × equity over a
    stop of ``stop_atr`` ATRs, capped by leverage and ``max_capital_share``) and set that stop;
    entering the other side flips. An action that does not apply (EXIT when flat, ENTER_LONG
    when long...) does nothing and is counted in ``info["invalid_actions"]``.
``exposure_sl``
    ``Box([-1, 1]^2)``: ``a[0]`` target exposure as a fraction of the leverage limit;
    ``a[1]`` stop-loss tightness mapped linearly from ``min_stop_pct`` (-1) to ``max_stop_pct``
    (+1), re-set at every step relative to the close. The engine's dead-zone and caps apply.

Malformed actions: NaN, infinite, out of range or non-integer values are clipped to the nearest
valid action (NaN means flat/hold) and counted, or rejected with a ``ValueError`` when
``invalid_action="raise"``; a wrong shape is always a ``ValueError``. The env's state is never
touched by a rejected action.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rltrade.envs import kernels as EK
from rltrade.envs.config import EnvConfig
from rltrade.envs.schemes import ACTION_SCHEMES


def action_space(config: EnvConfig) -> gym.Space:
    s = ACTION_SCHEMES[config.action_scheme]
    if s.discrete:
        return gym.spaces.Discrete(s.n_actions)
    return gym.spaces.Box(-1.0, 1.0, shape=(s.width,), dtype=np.float32)


def observation_space(config: EnvConfig, n_market: int) -> gym.Space:
    clip = config.obs_clip
    market = gym.spaces.Box(-clip, clip, shape=(config.window, n_market), dtype=np.float32)
    account = gym.spaces.Box(-clip, clip, shape=(EK.N_ACCOUNT,), dtype=np.float32)
    if config.layout == "window":
        return gym.spaces.Dict({"market": market, "account": account})
    size = config.window * n_market + EK.N_ACCOUNT
    return gym.spaces.Box(-clip, clip, shape=(size,), dtype=np.float32)


def observation(config: EnvConfig, market: np.ndarray, account: np.ndarray) -> Any:
    """The observation of one env from its buffers (copies: the buffers are reused)."""
    if config.layout == "window":
        return {"market": market.copy(), "account": account.copy()}
    return np.concatenate((market.reshape(-1), account))


def observations(config: EnvConfig, market: np.ndarray, account: np.ndarray) -> Any:
    """Batched observations ``[N, ...]`` (copies)."""
    if config.layout == "window":
        return {"market": market.copy(), "account": account.copy()}
    n = market.shape[0]
    return np.concatenate((market.reshape(n, -1), account), axis=1)


def check_actions(config: EnvConfig, actions: Any, n: int,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate ``n`` actions into the kernel's float64 ``[n, 2]`` layout.

    Returns the array (``out`` when given, e.g. the env core's action buffer; it is written only
    when the actions are accepted) and a boolean mask of the actions that had to be clipped
    (``None`` when all were valid), or raises ``ValueError``.
    """
    spec = ACTION_SCHEMES[config.action_scheme]
    scheme, n_actions = spec.name, spec.n_actions
    raise_ = config.invalid_action == "raise"
    if out is None:
        out = np.zeros((n, 2))
    if (spec.discrete and isinstance(actions, np.ndarray) and actions.dtype.kind in "iu"
            and actions.size == n):  # fast path: integer actions, as SB3 passes them
        flat = actions.reshape(n)
        if flat.min() >= 0 and flat.max() < n_actions:
            out[:, 0] = flat
            out[:, 1] = 0.0
            return out, None
    try:
        arr = np.asarray(actions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"action {actions!r} is not numeric: expected "
            + ("an integer" if spec.discrete else "two floats in [-1, 1]")
        ) from None
    if spec.discrete:
        if arr.size != n:
            raise ValueError(f"expected {n} discrete action(s), got shape {arr.shape}")
        a = arr.reshape(n)
        bad = ~np.isfinite(a) | (a != np.round(a)) | (a < 0) | (a > n_actions - 1)
        if bad.any():
            if raise_:
                raise ValueError(
                    f"invalid {scheme} action(s) {a[bad].tolist()}: expected integers "
                    f"0..{n_actions - 1}"
                )
            a = np.where(np.isfinite(a), np.clip(np.round(a), 0, n_actions - 1), spec.neutral)
        out[:, 0] = a
        out[:, 1] = 0.0
        return out, bad if bad.any() else None
    width = spec.width
    if arr.size != width * n:
        raise ValueError(f"expected {n} action(s) of shape ({width},), got shape {arr.shape}")
    a = arr.reshape(n, width)
    bad_cells = ~np.isfinite(a) | (np.abs(a) > 1.0)
    if bad_cells.any():
        if raise_:
            raise ValueError(f"invalid {scheme} action(s): {a[bad_cells.any(axis=1)].tolist()}"
                             " (values must be finite, in [-1, 1])")
        a = np.clip(np.where(np.isnan(a), spec.neutral, a), -1.0, 1.0)
    out[:, :width] = a
    bad_rows = bad_cells.any(axis=1)
    return out, bad_rows if bad_rows.any() else None
