"""What the backtest runner accepts as a policy, and a numpy copy of an SB3 MLP actor.

**A policy** is anything with Stable-Baselines3's ``predict``::

    action, state = policy.predict(observation, state=None, episode_start=None,
                                   deterministic=True)

so a trained SB3 model (PPO, A2C, SAC, RecurrentPPO...) is a policy as it is. The runner calls it
once per bar with the environment's observation (:class:`Policy`).

**A planned policy** (every baseline of :mod:`rltrade.agents.baselines`) has, in addition or
instead, ``plan(dataset, config) -> actions``: the action of every bar of the Dataset at once,
in the action scheme of ``config`` (or of the policy's own ``action_scheme`` attribute when it has
one). Row ``t`` is the decision taken at the close of bar ``t``; it may use data of bars ``<= t``
only (the oracle baseline is the one, declared, exception: perfect foresight). The runner then
steps the environment in one numba loop without building observations (:class:`PlannedPolicy`).

:class:`NumpyMlpPolicy` is the actor of an SB3 ``MlpPolicy`` / ``MultiInputPolicy`` (PPO, A2C,
SAC) as plain numpy weights: ``predict`` is a numpy forward pass equal to
``model.predict(obs, deterministic=True)`` (a test proves it), and the backtest runner runs it
without any per-step framework overhead (the first layer's market part is computed for all bars
at once, the rest in the runner's numba loop).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numba import njit

from rltrade.errors import CompatibilityError, ConfigError
from rltrade.sim import kernels as K

if TYPE_CHECKING:
    from rltrade.envs.config import EnvConfig
    from rltrade.features.dataset import Dataset

__all__ = [
    "MarginPolicy",
    "NumpyMlpPolicy",
    "PlanPolicy",
    "PlannedPolicy",
    "Policy",
    "action_probabilities",
    "is_planned",
]


@runtime_checkable
class Policy(Protocol):
    """Stable-Baselines3's policy interface: one action per observation."""

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[Any, Any]:
        """``(action, next_state)`` for an observation (``state`` is for recurrent policies)."""
        ...


@runtime_checkable
class PlannedPolicy(Protocol):
    """A policy that gives the action of every bar at once (see the module docstring)."""

    def plan(self, dataset: Dataset, config: EnvConfig) -> np.ndarray:
        """Actions ``[T]`` (discrete schemes) or ``[T, 2]`` (``exposure_sl``); row ``t`` is the
        decision at the close of bar ``t``."""
        ...


def is_planned(policy: Any) -> bool:
    """Whether ``policy`` has a callable ``plan`` (the runner's fast path)."""
    return callable(getattr(policy, "plan", None))


class PlanPolicy:
    """A fixed array of actions (or a function of the Dataset and config giving one) as a
    planned policy.

    :param actions: ``[T]`` / ``[T, 2]`` actions, or ``f(dataset, config) -> actions``.
    :param name: shown in backtest summaries.
    :param action_scheme: the scheme the actions are in (``None``: the config's).
    """

    def __init__(self, actions: Any, name: str = "plan", action_scheme: str | None = None) -> None:
        self._actions = actions
        self.name = name
        self.action_scheme = action_scheme

    def plan(self, dataset: Dataset, config: EnvConfig) -> np.ndarray:
        if callable(self._actions):
            return np.asarray(self._actions(dataset, config))
        return np.asarray(self._actions)

    def __repr__(self) -> str:
        return f"PlanPolicy(name={self.name!r})"


# ------------------------------------------------------------------------------- abstention
def action_probabilities(policy: Any, observation: Any) -> np.ndarray:
    """The probability of each discrete action for one observation, ``[n_actions]``.

    From the policy's own ``action_probabilities(observation)`` when it has one
    (:class:`NumpyMlpPolicy`, :class:`~rltrade.agents.ensemble.EnsemblePolicy`), else from an
    SB3 actor-critic's distribution (PPO, A2C).

    :raises ConfigError: the policy has no action probabilities (DQN's Q-values, a recurrent
        policy, a continuous one).
    """
    own = getattr(policy, "action_probabilities", None)
    if callable(own):
        return np.asarray(own(observation), dtype=np.float64).reshape(-1)
    sb3 = getattr(policy, "policy", None)
    if sb3 is not None and callable(getattr(sb3, "get_distribution", None)):
        import torch

        try:
            obs_t, _ = sb3.obs_to_tensor(observation)
            with torch.no_grad():
                dist = sb3.get_distribution(obs_t).distribution
        except TypeError:  # a recurrent policy's distribution needs its LSTM states
            dist = None
        probs = getattr(dist, "probs", None)
        if probs is not None:
            return probs.cpu().numpy().astype(np.float64).reshape(-1)
    raise ConfigError(f"min_margin: {type(policy).__name__} gives no action probabilities "
                      "(it needs a discrete actor-critic policy: PPO, A2C, or an ensemble)")


class MarginPolicy:
    """Abstention (``env.min_margin``): a discrete policy keeps its current action unless the
    action it prefers is more probable than the current one by at least ``min_margin``.

    The current action is the one that keeps the position: for ``discrete3`` the side of the
    account's position (the observation's account block, so a stop or a risk manager's exit
    counts), for ``discrete6`` ``hold``. :func:`rltrade.evaluation.run_backtest` wraps a
    discrete, non-planned policy in it when the config's ``min_margin`` is above 0.

    :param policy: the policy (anything :func:`action_probabilities` reads).
    :param min_margin: probability margin in ``(0, 1]``.
    :param action_scheme: ``discrete3`` or ``discrete6``.
    """

    def __init__(self, policy: Any, min_margin: float, action_scheme: str) -> None:
        if action_scheme not in ("discrete3", "discrete6"):
            raise ConfigError(f"min_margin needs a discrete action scheme, not {action_scheme}")
        self.policy = policy
        self.min_margin = float(min_margin)
        self.action_scheme = action_scheme
        self.name = f"{getattr(policy, 'name', type(policy).__name__)}"

    def keep_action(self, observation: Any) -> int:
        """The action that keeps the current position."""
        if self.action_scheme == "discrete6":
            return 0  # hold
        from rltrade.envs.kernels import N_ACCOUNT

        if isinstance(observation, Mapping):
            exposure = float(np.asarray(observation["account"]).reshape(-1)[0])
        else:
            exposure = float(np.asarray(observation).reshape(-1)[-N_ACCOUNT])
        return 1 + (exposure > 0.0) - (exposure < 0.0)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """The most probable action, or the current one when the margin is not met."""
        probs = action_probabilities(self.policy, observation)
        best = int(np.argmax(probs))
        keep = self.keep_action(observation)
        if best != keep and probs[best] - probs[keep] < self.min_margin:
            best = keep
        return np.asarray(best, dtype=np.int64), state

    def __repr__(self) -> str:
        return f"MarginPolicy({self.policy!r}, min_margin={self.min_margin})"


# ------------------------------------------------------------------------------- numpy MLP
# activation codes of the numba kernel
_ACTIVATIONS = {"identity": 0, "tanh": 1, "relu": 2, "elu": 3, "leaky_relu": 4, "silu": 5}


def _activate(x: np.ndarray, name: str, param: float) -> np.ndarray:
    if name == "identity":
        return x
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "elu":
        return np.where(x > 0.0, x, param * np.expm1(np.minimum(x, 0.0)))
    if name == "leaky_relu":
        return np.where(x >= 0.0, x, param * x)
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    raise ConfigError(f"NumpyMlpPolicy: unknown activation {name!r}; known: {list(_ACTIVATIONS)}")


def _torch_activation(module: Any) -> tuple[str, float] | None:
    """``(name, parameter)`` of a torch activation module, ``None`` if it is not one."""
    from torch import nn

    if isinstance(module, nn.Tanh):
        return "tanh", 0.0
    if isinstance(module, nn.ReLU):
        return "relu", 0.0
    if isinstance(module, nn.ELU):
        return "elu", float(module.alpha)
    if isinstance(module, nn.LeakyReLU):
        return "leaky_relu", float(module.negative_slope)
    if isinstance(module, nn.SiLU):
        return "silu", 0.0
    if isinstance(module, nn.Identity):
        return "identity", 0.0
    return None


def _sequential_layers(seq: Any, what: str) -> list[list[Any]]:
    """``[[W, b, activation, param], ...]`` of a torch ``Sequential`` of Linear + activations."""
    from torch import nn

    layers: list[list[Any]] = []
    modules = list(seq) if isinstance(seq, nn.Sequential) else [seq]
    for module in modules:
        if isinstance(module, nn.Linear):
            weight = module.weight.detach().cpu().double().numpy().copy()
            bias = (module.bias.detach().cpu().double().numpy().copy() if module.bias is not None
                    else np.zeros(weight.shape[0]))
            layers.append([weight, bias, "identity", 0.0])
            continue
        act = _torch_activation(module)
        if act is None or not layers or layers[-1][2] != "identity":
            raise ConfigError(
                f"NumpyMlpPolicy: {what} holds {type(module).__name__}, which has no numpy "
                "counterpart (supported: Linear followed by Tanh, ReLU, ELU, LeakyReLU, SiLU)"
            )
        layers[-1][2], layers[-1][3] = act
    return layers


class NumpyMlpPolicy:
    """A deterministic MLP actor as numpy weights (see the module docstring).

    Build it with :meth:`from_sb3`. ``predict`` takes the observations the SB3 model takes (a
    flat Box vector, or the Dict ``{"account", "market"}`` of ``layout="window"``), single or
    batched, and returns the deterministic action: the argmax of the logits for a ``Discrete``
    space, the mean clipped to the space (squashed with ``tanh`` and rescaled for SAC) for a
    ``Box``.

    :param layers: ``(W [out, in], b [out], activation, parameter)`` per layer, the last one the
        action head (activation ``identity``).
    :param action: ``"discrete"`` or ``"box"``.
    :param low: Box lower bounds (``box`` only).
    :param high: Box upper bounds.
    :param squash: ``tanh`` the mean and rescale it to ``[low, high]`` (SAC) instead of clipping.
    :param obs_keys: for Dict observations, ``(key, shape)`` in the order they are concatenated
        (SB3's ``CombinedExtractor``: the Dict space's sorted keys); ``None`` for a Box.
    :param obs_shape: the Box observation's shape (``None`` for a Dict).
    """

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray, str, float]], action: str,
                 low: np.ndarray | None = None, high: np.ndarray | None = None,
                 squash: bool = False,
                 obs_keys: list[tuple[str, tuple[int, ...]]] | None = None,
                 obs_shape: tuple[int, ...] | None = None) -> None:
        if action not in ("discrete", "box"):
            raise ConfigError(f"NumpyMlpPolicy: action must be 'discrete' or 'box', got {action!r}")
        if not layers:
            raise ConfigError("NumpyMlpPolicy: no layers")
        if (obs_keys is None) == (obs_shape is None):
            raise ConfigError("NumpyMlpPolicy: give exactly one of obs_keys (Dict) and obs_shape")
        self.layers = [(np.ascontiguousarray(w, dtype=np.float64),
                        np.ascontiguousarray(b, dtype=np.float64), str(a), float(p))
                       for w, b, a, p in layers]
        for w, b, a, _ in self.layers:
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise ConfigError("NumpyMlpPolicy: each layer needs W [out, in] and b [out]")
            if a not in _ACTIVATIONS:
                raise ConfigError(f"NumpyMlpPolicy: unknown activation {a!r}")
        for (w0, _, _, _), (w1, _, _, _) in zip(self.layers, self.layers[1:], strict=False):
            if w1.shape[1] != w0.shape[0]:
                raise ConfigError("NumpyMlpPolicy: layer sizes do not chain")
        self.action = action
        self.squash = bool(squash)
        n_out = self.layers[-1][0].shape[0]
        if action == "box":
            self.low = np.broadcast_to(np.asarray(low, dtype=np.float64), (n_out,)).copy()
            self.high = np.broadcast_to(np.asarray(high, dtype=np.float64), (n_out,)).copy()
        else:
            self.low = self.high = None
        self.obs_keys = None if obs_keys is None else [(k, tuple(s)) for k, s in obs_keys]
        self.obs_shape = None if obs_shape is None else tuple(obs_shape)
        self.obs_dim = int(sum(math.prod(s) for _, s in self.obs_keys) if self.obs_keys
                           else math.prod(self.obs_shape))
        if self.layers[0][0].shape[1] != self.obs_dim:
            raise ConfigError(
                f"NumpyMlpPolicy: first layer takes {self.layers[0][0].shape[1]} inputs, the "
                f"observation has {self.obs_dim}"
            )
        self.name = "numpy_mlp"
        #: how the backtest runner computes the first layer's market part for all bars at once
        #: (:meth:`market_preactivation`): ``"auto"`` (torch when installed), ``"torch"``,
        #: ``"numpy"``
        self.backend = "auto"

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_sb3(cls, model: Any) -> NumpyMlpPolicy:
        """The deterministic actor of an SB3 model (or policy) as numpy weights.

        Supported: PPO / A2C ``MlpPolicy`` (Box observation, ``FlattenExtractor``) and
        ``MultiInputPolicy`` (Dict observation, the default ``CombinedExtractor``: each key
        flattened, in the Dict space's sorted key order, and concatenated), with a ``Discrete``
        or ``Box`` action space; SAC's actor (``tanh``-squashed mean). Observation normalisation
        wrappers (``VecNormalize``) are not part of the model and are not applied.

        :raises ConfigError: for anything else (a CNN or recurrent extractor, gSDE...).
        """
        import gymnasium as gym
        from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor
        from torch import nn

        policy = getattr(model, "policy", model)
        if hasattr(policy, "actor") and hasattr(policy.actor, "latent_pi"):  # SAC
            actor = policy.actor
            if getattr(actor, "use_sde", False):
                raise ConfigError("NumpyMlpPolicy: SAC with gSDE is not supported")
            extractor = actor.features_extractor
            layers = _sequential_layers(actor.latent_pi, "actor.latent_pi")
            layers += _sequential_layers(actor.mu, "actor.mu")
            squash = True
        elif hasattr(policy, "mlp_extractor") and hasattr(policy, "action_net"):  # PPO, A2C
            if getattr(policy, "use_sde", False):
                raise ConfigError("NumpyMlpPolicy: policies with gSDE are not supported")
            if getattr(policy, "lstm_actor", None) is not None:
                raise ConfigError("NumpyMlpPolicy: recurrent policies are not supported")
            extractor = getattr(policy, "pi_features_extractor", policy.features_extractor)
            layers = _sequential_layers(policy.mlp_extractor.policy_net,
                                        "mlp_extractor.policy_net")
            layers += _sequential_layers(policy.action_net, "action_net")
            squash = bool(getattr(policy, "squash_output", False))
        else:
            raise ConfigError(
                f"NumpyMlpPolicy: {type(policy).__name__} is not an SB3 actor-critic or SAC "
                "policy"
            )
        if layers[-1][2] != "identity":
            raise ConfigError("NumpyMlpPolicy: the action head must be a plain Linear layer")
        space = policy.observation_space
        obs_keys = obs_shape = None
        if isinstance(extractor, FlattenExtractor):
            if not isinstance(space, gym.spaces.Box):
                raise ConfigError("NumpyMlpPolicy: a FlattenExtractor needs a Box observation")
            obs_shape = tuple(space.shape)
        elif isinstance(extractor, CombinedExtractor):
            obs_keys = []
            for key, sub in extractor.extractors.items():
                if not isinstance(sub, nn.Flatten):
                    raise ConfigError(
                        f"NumpyMlpPolicy: the extractor of {key!r} is {type(sub).__name__}; only "
                        "flattened keys are supported (no image CNN)"
                    )
                obs_keys.append((key, tuple(space.spaces[key].shape)))
        else:
            raise ConfigError(
                f"NumpyMlpPolicy: features extractor {type(extractor).__name__} is not supported "
                "(FlattenExtractor or CombinedExtractor only)"
            )
        aspace = policy.action_space
        if isinstance(aspace, gym.spaces.Discrete):
            return cls([tuple(x) for x in layers], "discrete", obs_keys=obs_keys,
                       obs_shape=obs_shape)
        if isinstance(aspace, gym.spaces.Box):
            return cls([tuple(x) for x in layers], "box", low=aspace.low, high=aspace.high,
                       squash=squash, obs_keys=obs_keys, obs_shape=obs_shape)
        raise ConfigError(f"NumpyMlpPolicy: action space {aspace} is not Discrete or Box")

    # -- inference ---------------------------------------------------------------------------
    def flatten(self, observation: Any) -> tuple[np.ndarray, bool]:
        """Observations as the network input ``[N, obs_dim]`` float64, and whether they were
        batched."""
        if self.obs_keys is not None:
            if not isinstance(observation, Mapping):
                raise ValueError("NumpyMlpPolicy: this policy takes Dict observations "
                                 f"{[k for k, _ in self.obs_keys]}")
            first_key, first_shape = self.obs_keys[0]
            first = np.asarray(observation[first_key])
            batched = first.ndim == len(first_shape) + 1
            n = first.shape[0] if batched else 1
            parts = [np.asarray(observation[k], dtype=np.float64).reshape(n, -1)
                     for k, _ in self.obs_keys]
            x = np.concatenate(parts, axis=1)
        else:
            arr = np.asarray(observation, dtype=np.float64)
            batched = arr.ndim == len(self.obs_shape) + 1
            x = arr.reshape(-1, self.obs_dim)
        if x.shape[1] != self.obs_dim:
            raise ValueError(f"NumpyMlpPolicy: observation has {x.shape[1]} values, the network "
                             f"takes {self.obs_dim}")
        return x, batched

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (Discrete) or the mean action before clipping (Box), ``[N, n_out]``."""
        h = np.asarray(x, dtype=np.float64)
        for w, b, act, param in self.layers:
            h = _activate(h @ w.T + b, act, param)
        return h

    def _actions(self, out: np.ndarray) -> np.ndarray:
        if self.action == "discrete":
            return np.argmax(out, axis=1).astype(np.int64)
        if self.squash:
            return self.low + 0.5 * (np.tanh(out) + 1.0) * (self.high - self.low)
        return np.clip(out, self.low, self.high)

    def action_probabilities(self, observation: Any) -> np.ndarray:
        """The softmax of the logits of one observation (Discrete actors only)."""
        if self.action != "discrete":
            raise ConfigError("NumpyMlpPolicy: a continuous actor has no action probabilities")
        x, _ = self.flatten(observation)
        logits = self.forward(x)[0]
        z = np.exp(logits - logits.max())
        return z / z.sum()

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """SB3's ``predict``: the deterministic action (argmax / clipped mean) and ``state``
        unchanged. Batched observations give batched actions."""
        if not deterministic:
            raise ValueError("NumpyMlpPolicy is the deterministic actor only "
                             "(predict(..., deterministic=True))")
        x, batched = self.flatten(observation)
        actions = self._actions(self.forward(x))
        return (actions if batched else actions[0]), state

    # -- the backtest runner's fast path -----------------------------------------------------
    def _input_columns(self, layout: str, window: int, n_market: int,
                       n_account: int) -> tuple[np.ndarray, np.ndarray]:
        """Column indices of the first layer fed by the market window (``[window, n_market]``,
        row-major) and by the account block."""
        if self.obs_keys is not None:
            offsets: dict[str, tuple[int, tuple[int, ...]]] = {}
            pos = 0
            for key, shape in self.obs_keys:
                offsets[key] = (pos, shape)
                pos += math.prod(shape)
            if set(offsets) != {"market", "account"}:
                raise CompatibilityError(
                    f"NumpyMlpPolicy: observation keys {sorted(offsets)} are not the trading "
                    "env's {account, market}"
                )
            m0, m_shape = offsets["market"]
            a0, a_shape = offsets["account"]
            if m_shape != (window, n_market) or a_shape != (n_account,):
                raise CompatibilityError(
                    f"NumpyMlpPolicy: the network takes market {m_shape} + account {a_shape}, the "
                    f"env gives ({window}, {n_market}) + ({n_account},)"
                )
        else:
            if layout != "flat" or self.obs_dim != window * n_market + n_account:
                raise CompatibilityError(
                    f"NumpyMlpPolicy: the network takes a flat vector of {self.obs_dim} values, "
                    f"the env ({layout!r} layout) gives window {window} x {n_market} + "
                    f"{n_account}"
                )
            m0, a0 = 0, window * n_market
        return (np.arange(m0, m0 + window * n_market), np.arange(a0, a0 + n_account))

    def fast_parts(self, layout: str, window: int, n_market: int,
                   n_account: int) -> tuple[np.ndarray, tuple[Any, ...]]:
        """What the runner's numba loop needs: the first layer's market weights
        ``[window, n_market, H]`` (float32, for :meth:`market_preactivation`) and the kernel
        arguments of :func:`mlp_action`.

        :raises CompatibilityError: when the network does not take this env's observation.
        """
        market_cols, account_cols = self._input_columns(layout, window, n_market, n_account)
        w1, b1, act1, p1 = self.layers[0]
        wm = np.ascontiguousarray(
            w1[:, market_cols].reshape(w1.shape[0], window, n_market).transpose(1, 2, 0),
            dtype=np.float32)
        wa = np.ascontiguousarray(w1[:, account_cols].T)
        rest = self.layers[1:]
        width = max([w1.shape[0]] + [w.shape[0] for w, _, _, _ in rest])
        wt = np.zeros((len(rest), width, width))
        bt = np.zeros((len(rest), width))
        dims = np.zeros((len(rest), 2), dtype=np.int64)
        acts = np.zeros((len(rest), 2))
        for i, (w, b, act, param) in enumerate(rest):
            wt[i, : w.shape[1], : w.shape[0]] = w.T
            bt[i, : w.shape[0]] = b
            dims[i] = w.shape
            acts[i] = (_ACTIVATIONS[act], param)
        kind = 0 if self.action == "discrete" else (2 if self.squash else 1)
        low = self.low if self.low is not None else np.zeros(1)
        high = self.high if self.high is not None else np.zeros(1)
        kernel = (wa, b1, np.array([_ACTIVATIONS[act1], p1], dtype=np.float64), wt, bt, dims,
                  acts, kind, low, high, np.zeros(width), np.zeros(width))
        return wm, kernel

    @staticmethod
    def market_preactivation(market: np.ndarray, wm: np.ndarray, lo: int, hi: int,
                             backend: str = "auto") -> np.ndarray:
        """The market window's part of the first layer's pre-activation for bars ``lo..hi-1``
        (``[hi - lo, H]`` float64): for each bar ``t``, the window ``market[t - window + 1 ..
        t]`` (row-major, as the observation flattens it) times the market weights ``wm
        [window, n_market, H]``, computed for all bars at once in float32 (the network's
        precision): a 1-D convolution by torch when it is installed (``backend="auto"`` or
        ``"torch"``), else a numpy matrix product per block of windows (``"numpy"``). Needs
        ``lo >= window - 1``."""
        window, n_market, width = wm.shape
        if lo < window - 1:
            raise ValueError(f"bars before {window - 1} have no full window")
        rows = np.ascontiguousarray(market[lo - window + 1: hi], dtype=np.float32)
        if backend not in ("auto", "torch", "numpy"):
            raise ValueError(f"backend must be auto, torch or numpy, got {backend!r}")
        torch: Any = None
        if backend != "numpy":
            try:
                import torch
            except ImportError:
                if backend == "torch":
                    raise
        if torch is not None:
            weight = torch.from_numpy(np.ascontiguousarray(wm.transpose(2, 1, 0)))
            with torch.no_grad():
                y = torch.nn.functional.conv1d(torch.from_numpy(rows.T.copy())[None], weight)
            return y[0].numpy().T.astype(np.float64)
        weights = wm.reshape(window * n_market, width)
        out = np.empty((hi - lo, width), dtype=np.float64)
        block = 8192
        for c in range(0, hi - lo, block):
            m = min(block, hi - lo - c)
            windows = np.lib.stride_tricks.sliding_window_view(rows[c: c + m + window - 1],
                                                               (window, n_market))
            out[c: c + m] = np.ascontiguousarray(windows.reshape(m, -1)) @ weights
        return out

    def __repr__(self) -> str:
        sizes = [self.layers[0][0].shape[1]] + [w.shape[0] for w, _, _, _ in self.layers]
        return f"NumpyMlpPolicy({' -> '.join(map(str, sizes))}, {self.action})"


# no allocation below: compiled like the engine kernels, without reference counting
_jit = njit(cache=True, error_model="numpy", **K.NO_NRT)


@njit(cache=True, error_model="numpy", inline="always", **K.NO_NRT)
def _act(x: float, code: float, param: float) -> float:
    if code == 1.0:  # tanh from one exp (half the cost of math.tanh, same to ~1e-16)
        e = math.exp(-2.0 * abs(x))
        t = (1.0 - e) / (1.0 + e)
        return t if x >= 0.0 else -t
    if code == 2.0:
        return x if x > 0.0 else 0.0
    if code == 3.0:
        return x if x > 0.0 else param * math.expm1(x)
    if code == 4.0:
        return x if x >= 0.0 else param * x
    if code == 5.0:
        return x / (1.0 + math.exp(-x))
    return x


@_jit
def mlp_action(pre: np.ndarray, account: np.ndarray, wa: np.ndarray, b1: np.ndarray,
               act1: np.ndarray, wt: np.ndarray, bt: np.ndarray, dims: np.ndarray,
               acts: np.ndarray, kind: int, low: np.ndarray, high: np.ndarray, h: np.ndarray,
               g: np.ndarray, out: np.ndarray) -> None:
    """One deterministic action of a :class:`NumpyMlpPolicy` into ``out[0:2]``, given the first
    layer's market pre-activation ``pre [H]`` and the account block (the runner's numba loop).

    ``wa``: the first layer's account weights transposed (``[n_account, H]``), ``b1`` its bias,
    ``act1`` its activation ``(code, parameter)``; then per further layer ``l``: transposed
    weights ``wt[l, :in, :out]`` (zero-padded), bias ``bt[l, :out]``, ``dims[l] = (out, in)``
    and activation ``acts[l]``. ``h``/``g`` are scratch vectors. ``kind``: 0 argmax, 1 clipped
    mean, 2 ``tanh``-squashed mean. Loops run over outputs innermost, so they vectorize without
    reordering any sum."""
    n = b1.shape[0]
    for i in range(n):
        h[i] = pre[i] + b1[i]
    for j in range(account.shape[0]):
        a = np.float64(account[j])
        w = wa[j]
        for i in range(n):
            h[i] += w[i] * a
    for i in range(n):
        h[i] = _act(h[i], act1[0], act1[1])
    for layer in range(wt.shape[0]):
        n_out = dims[layer, 0]
        n_in = dims[layer, 1]
        code = acts[layer, 0]
        param = acts[layer, 1]
        weights = wt[layer]
        bias = bt[layer]
        for i in range(n_out):
            g[i] = bias[i]
        for j in range(n_in):
            a = h[j]
            w = weights[j]
            for i in range(n_out):
                g[i] += w[i] * a
        for i in range(n_out):
            h[i] = _act(g[i], code, param)
        n = n_out
    if kind == 0:
        best = 0
        for i in range(1, n):
            if h[i] > h[best]:
                best = i
        out[0] = best
        out[1] = 0.0
        return
    for i in range(min(n, 2)):
        v = h[i]
        if kind == 2:
            v = low[i] + 0.5 * (math.tanh(v) + 1.0) * (high[i] - low[i])
        else:
            v = min(high[i], max(low[i], v))
        out[i] = v
