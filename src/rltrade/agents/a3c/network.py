"""A3C's actor-critic network (Stable-Baselines3's layout) and the conversion of observations
into its input tensors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import (
    CombinedExtractor,
    FlattenExtractor,
    MlpExtractor,
)
from torch import nn

from rltrade.errors import ConfigError


class ActorCritic(nn.Module):
    """Actor-critic network with Stable-Baselines3's layout: a features extractor (``flatten``:
    SB3's ``CombinedExtractor`` / ``FlattenExtractor``, or ``features_extractor_class`` such as
    :class:`~rltrade.agents.encoders.CnnLstmAttention`), separate policy and value MLPs
    (``net_arch``, SB3's ``MlpExtractor``), a categorical head (``Discrete``) or a diagonal
    Gaussian head with a state-independent ``log_std`` (``Box``; samples clipped into the box).

    ``forward(obs)`` returns ``(logits or mean [B, n], value [B])``.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space,
                 net_arch: list[int] | dict[str, list[int]] | None = None,
                 activation_fn: type[nn.Module] = nn.Tanh,
                 features_extractor_class: type[nn.Module] | None = None,
                 features_extractor_kwargs: dict[str, Any] | None = None,
                 log_std_init: float = 0.0, ortho_init: bool = True) -> None:
        super().__init__()
        #: the constructor's arguments: a worker builds its local copy from them
        self.spec: dict[str, Any] = {
            "observation_space": observation_space, "action_space": action_space,
            "net_arch": net_arch, "activation_fn": activation_fn,
            "features_extractor_class": features_extractor_class,
            "features_extractor_kwargs": features_extractor_kwargs,
            "log_std_init": log_std_init, "ortho_init": ortho_init,
        }
        self.observation_space = observation_space
        self.action_space = action_space
        if features_extractor_class is None:
            features_extractor_class = (CombinedExtractor
                                        if isinstance(observation_space, spaces.Dict)
                                        else FlattenExtractor)
        self.features_extractor = features_extractor_class(observation_space,
                                                           **(features_extractor_kwargs or {}))
        arch = [64, 64] if net_arch is None else net_arch
        self.mlp_extractor = MlpExtractor(int(self.features_extractor.features_dim), arch,
                                          activation_fn, device="cpu")
        pi_dim, vf_dim = self.mlp_extractor.latent_dim_pi, self.mlp_extractor.latent_dim_vf
        if isinstance(action_space, spaces.Discrete):
            self.discrete = True
            self.action_net = nn.Linear(pi_dim, int(action_space.n))
        elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            self.discrete = False
            dim = int(action_space.shape[0])
            self.action_net = nn.Linear(pi_dim, dim)
            self.log_std = nn.Parameter(torch.full((dim,), float(log_std_init)))
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high,
                                                         dtype=torch.float32))
        else:
            raise ConfigError(f"A3C supports Discrete and 1-d Box action spaces, not "
                              f"{action_space}")
        self.value_net = nn.Linear(vf_dim, 1)
        if ortho_init:  # Stable-Baselines3's initialisation (gains as in its ActorCriticPolicy)
            parts: list[tuple[nn.Module, float]] = [
                (self.mlp_extractor, math.sqrt(2)), (self.action_net, 0.01),
                (self.value_net, 1.0)]  # a custom encoder keeps its own initialisation
            for module, gain in parts:
                for m in module.modules():
                    if isinstance(m, nn.Linear | nn.Conv2d):
                        nn.init.orthogonal_(m.weight, gain=gain)
                        if m.bias is not None:
                            m.bias.data.fill_(0.0)

    def forward(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features_extractor(obs)
        latent_pi, latent_vf = self.mlp_extractor(features)
        return self.action_net(latent_pi), self.value_net(latent_vf).squeeze(-1)

    def value(self, obs: Any) -> torch.Tensor:
        features = self.features_extractor(obs)
        return self.value_net(self.mlp_extractor.forward_critic(features)).squeeze(-1)

    def clone_local(self) -> ActorCritic:
        """A private (not shared) copy with the same architecture and weights."""
        local = ActorCritic(**self.spec)
        local.load_state_dict(self.state_dict())
        return local

    # distributions ------------------------------------------------------------------------
    def sample(self, out: torch.Tensor, generator: torch.Generator | None,
               deterministic: bool = False) -> torch.Tensor:
        """Actions from the head's output (masked logits, or the Gaussian mean); no gradient."""
        with torch.no_grad():
            return self._sample(out.detach(), generator, deterministic)

    def _sample(self, out: torch.Tensor, generator: torch.Generator | None,
                deterministic: bool) -> torch.Tensor:
        if self.discrete:
            if deterministic:
                return out.argmax(-1)
            probs = torch.softmax(out, -1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        if deterministic:
            return out
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype)
        return out + self.log_std.exp() * noise

    def log_prob_entropy(self, out: torch.Tensor,
                         actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of ``actions`` and the entropies, per sample. Masked (``-inf``)
        logits are clamped to the smallest float, so they get probability 0 without NaNs."""
        if self.discrete:
            logits = out.clamp(min=torch.finfo(out.dtype).min)
            logp_all = torch.log_softmax(logits, -1)
            logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
            return logp, entropy
        std = self.log_std.exp().expand_as(out)
        dist = torch.distributions.Normal(out, std)
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)

    def env_action(self, action: torch.Tensor) -> Any:
        """The env's action for one sampled action: an ``int`` or a float32 array clipped
        into the box."""
        if self.discrete:
            return int(action.item())
        return torch.clamp(action, self.low, self.high).numpy().astype(np.float32)


def obs_as_tensor(space: spaces.Space, obs: Any) -> tuple[Any, bool]:
    """``(tensor(s) with a batch axis, batched)`` of one observation or a batch of them."""
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, Mapping):
            raise ValueError(f"expected a dict observation with keys {sorted(space.spaces)}, "
                             f"got {type(obs).__name__}")
        out: dict[str, torch.Tensor] = {}
        batched: bool | None = None
        for key, sub in space.spaces.items():
            arr = np.asarray(obs[key], dtype=np.float32)
            if arr.shape == sub.shape:
                b = False
                arr = arr[None]
            elif arr.shape[1:] == sub.shape:
                b = True
            else:
                raise ValueError(f"observation[{key!r}] has shape {arr.shape}, expected "
                                 f"{sub.shape} or a batch of it")
            if batched is not None and b != batched:
                raise ValueError("observation: some keys are batched and some are not")
            batched = b
            out[key] = torch.as_tensor(arr)
        return out, bool(batched)
    arr = np.asarray(obs, dtype=np.float32)
    if arr.shape == space.shape:
        return torch.as_tensor(arr[None]), False
    if arr.shape[1:] == space.shape:
        return torch.as_tensor(arr), True
    raise ValueError(f"observation has shape {arr.shape}, expected {space.shape} or a batch")


def stack_obs(space: spaces.Space, observations: list[Any]) -> Any:
    """A batch (tensor, or dict of tensors) of a list of observations of ``space``."""
    if isinstance(space, spaces.Dict):
        return {k: torch.as_tensor(np.stack([o[k] for o in observations]).astype(np.float32))
                for k in space.spaces}
    return torch.as_tensor(np.stack(observations).astype(np.float32))

