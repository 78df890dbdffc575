"""Feature extractors (encoders) for the env's window observations, by name in :data:`ENCODERS`.

``cnn_lstm_attention`` (:class:`CnnLstmAttention`) reads the window layout of
:class:`rltrade.envs.TradingEnv` (``{"market": [window, F], "account": [9]}``, batched
``[batch, window, F]``) and is a Stable-Baselines3 ``BaseFeaturesExtractor``, so it plugs into
every algorithm we offer through ``policy_kwargs``::

    from rltrade.agents import ENCODERS
    policy_kwargs = {
        "features_extractor_class": ENCODERS["cnn_lstm_attention"],
        "features_extractor_kwargs": {"channels": 32, "hidden_size": 64, "heads": 4},
    }
    PPO("MultiInputPolicy", env, policy_kwargs=policy_kwargs)

``mlp`` maps to ``None``: keep Stable-Baselines3's default extractor (``CombinedExtractor`` for
the window layout, ``FlattenExtractor`` for ``layout="flat"``) and its MLP.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn
from torch.nn import functional as F

from rltrade.errors import ConfigError
from rltrade.features.base import require_int, require_number

_OWNER = "encoder 'cnn_lstm_attention'"


class CnnLstmAttention(BaseFeaturesExtractor):
    """Conv1d over time, an LSTM, attention pooling over the time steps, then the account block.

    ``market [B, W, F]`` → causal ``Conv1d(F, channels, kernel_size)`` + ReLU + dropout →
    ``LSTM(channels, hidden_size, lstm_layers, batch_first)`` → a learned query attends over the
    ``W`` LSTM outputs (``nn.MultiheadAttention(hidden_size, heads, batch_first=True)``) → one
    vector ``[B, hidden_size]`` → concatenated with ``account [B, A]`` → ``Linear`` + ReLU →
    ``[B, features_dim]``.

    The convolution is **causal** (padded ``kernel_size - 1`` steps on the past side only): the
    output at step ``s`` mixes steps ``s - kernel_size + 1 .. s``, so the sequence keeps its
    length ``W``, no step sees a later bar, and the newest bar (the one the decision is taken at)
    is never blended with zero padding standing for bars that do not exist yet. Only the oldest
    ``kernel_size - 1`` steps see padding. (Everything in the window is already past data; causal
    padding keeps the LSTM's order meaningful and the last step clean.)

    The number of features ``F`` and the window ``W`` are read from the observation space, i.e.
    from the Dataset the env was built on; nothing is fixed.

    :param observation_space: the env's ``Dict`` space (``layout="window"``): ``market``
        ``Box [window, F]`` and optionally ``account`` ``Box [A]``.
    :param features_dim: size of the output vector.
    :param channels: Conv1d output channels.
    :param kernel_size: Conv1d kernel length, in bars.
    :param hidden_size: LSTM hidden size (also the attention's embedding size): a multiple of
        ``heads``.
    :param heads: attention heads.
    :param dropout: dropout after the convolution, on the attention weights and between LSTM
        layers (``0`` disables it).
    :param lstm_layers: stacked LSTM layers.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        features_dim: int = 128,
        channels: int = 32,
        kernel_size: int = 5,
        hidden_size: int = 64,
        heads: int = 4,
        dropout: float = 0.0,
        lstm_layers: int = 1,
    ) -> None:
        market_space, account_space = _check_space(observation_space)
        for key, value in (("features_dim", features_dim), ("channels", channels),
                           ("kernel_size", kernel_size), ("hidden_size", hidden_size),
                           ("heads", heads), ("lstm_layers", lstm_layers)):
            require_int(_OWNER, key, value)
        require_number(_OWNER, "dropout", dropout, 0.0, 1.0, closed=True)
        if dropout >= 1.0:
            raise ConfigError(f"{_OWNER}: dropout must be below 1, got {dropout!r}")
        if hidden_size % heads:
            raise ConfigError(
                f"{_OWNER}: hidden_size ({hidden_size}) must be a multiple of heads ({heads})"
            )
        super().__init__(observation_space, features_dim)
        self.window, self.n_features = (int(d) for d in market_space.shape)
        self.n_account = int(account_space.shape[0]) if account_space is not None else 0
        self.kernel_size = int(kernel_size)
        self.heads = int(heads)
        self.conv = nn.Conv1d(self.n_features, channels, kernel_size)
        self.conv_dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            channels, hidden_size, num_layers=lstm_layers, batch_first=True,
            dropout=dropout if lstm_layers > 1 else 0.0,
        )
        self.query = nn.Parameter(torch.empty(1, 1, hidden_size))
        nn.init.normal_(self.query, std=0.02)  # starts near mean pooling over time
        self.attention = nn.MultiheadAttention(
            hidden_size, heads, dropout=dropout, batch_first=True
        )
        self.head = nn.Sequential(nn.Linear(hidden_size + self.n_account, features_dim), nn.ReLU())

    def _encode(
        self, observations: dict[str, torch.Tensor], need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        market = observations["market"]  # [B, W, F]
        x = market.transpose(1, 2)  # [B, F, W]: Conv1d runs over the last axis (time)
        x = F.pad(x, (self.kernel_size - 1, 0))  # causal: pad the past side only
        x = self.conv_dropout(F.relu(self.conv(x)))  # [B, C, W]
        seq, _ = self.lstm(x.transpose(1, 2))  # [B, W, H]
        query = self.query.expand(seq.shape[0], -1, -1)  # [B, 1, H]
        pooled, weights = self.attention(
            query, seq, seq, need_weights=need_weights, average_attn_weights=False
        )  # [B, 1, H], [B, heads, 1, W]
        parts = [pooled.squeeze(1)]
        if self.n_account:
            parts.append(observations["account"].reshape(market.shape[0], -1))
        features = self.head(torch.cat(parts, dim=1))
        return features, (weights.squeeze(2) if weights is not None else None)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[batch, features_dim]`` from a batch of window observations."""
        return self._encode(observations, need_weights=False)[0]

    def attention_weights(self, observations: dict[str, Any]) -> torch.Tensor:
        """The attention weights over time, ``[batch, heads, window]`` (each row sums to 1).

        ``observations`` is a (batched or single) window observation: a dict of tensors or
        numpy arrays, e.g. straight from ``env.reset()`` / ``env.step()``. Computed without
        gradients and in eval mode (no dropout); weight ``[b, h, s]`` is how much head ``h``
        attends to step ``s`` of the window (``s = window - 1`` is the newest bar).
        """
        device = self.query.device
        obs = {
            k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v,
                               dtype=torch.float32, device=device)
            for k, v in observations.items()
        }
        if obs["market"].dim() == 2:
            obs = {k: v.unsqueeze(0) for k, v in obs.items()}
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                _, weights = self._encode(obs, need_weights=True)
        finally:
            self.train(was_training)
        assert weights is not None
        return weights


def _check_space(space: Any) -> tuple[spaces.Box, spaces.Box | None]:
    if not isinstance(space, spaces.Dict):
        raise ConfigError(
            f"{_OWNER} needs the env's window observation (layout='window': a Dict with "
            f"'market' [window, F] and 'account'), got {space}; set the env's layout to "
            f"'window' or use the 'mlp' encoder"
        )
    unknown = sorted(set(space.spaces) - {"market", "account"})
    market = space.spaces.get("market")
    if unknown or not isinstance(market, spaces.Box) or len(market.shape) != 2:
        raise ConfigError(
            f"{_OWNER}: expected a Dict with 'market' Box [window, F] and optionally 'account' "
            f"Box [A] (layout='window'), got {space}"
        )
    account = space.spaces.get("account")
    if account is not None and (not isinstance(account, spaces.Box) or len(account.shape) != 1):
        raise ConfigError(f"{_OWNER}: 'account' must be a 1-d Box, got {account}")
    return market, account


#: encoder name (the config's ``policy: {encoder: ...}``) -> features extractor class;
#: ``None`` keeps Stable-Baselines3's default extractor
ENCODERS: dict[str, type[BaseFeaturesExtractor] | None] = {
    "mlp": None,
    "cnn_lstm_attention": CnnLstmAttention,
}
