"""Risk gating of A3C's discrete actions: the env's risk manager decides, A3C masks the logits.

Before each action is sampled, the target position of every action is read from the env's own
kernel (:meth:`~rltrade.envs.core.EnvCore.preview_targets`, on copies: nothing in the env
changes) and passed to the risk manager's one gating call,
:meth:`~rltrade.sim.risk.RiskManager.mask`, for the scheme's ``gated_actions`` (those that open
or increase exposure: ``discrete3`` short and long, ``discrete6`` enter long, enter short and
scale in). An action whose target the manager would reduce or block gets the logit ``-inf``
(:func:`gate_logits`); flat / hold / exit / scale out are never masked. The mask is a probe: it
records nothing in the manager, which records the real intervention when the env steps.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rltrade.envs import kernels as EK
from rltrade.envs.core import EnvCore
from rltrade.envs.schemes import ACTION_SCHEMES
from rltrade.errors import ConfigError, RLTradeError
from rltrade.sim.risk import ActionMask, RiskConfig, RiskManager, RiskState

#: discrete actions that open or increase exposure, per discrete action scheme: the ones
#: risk-gated (read from :data:`rltrade.envs.schemes.ACTION_SCHEMES`)
GATED_ACTIONS: dict[str, tuple[int, ...]] = {
    name: s.gated_actions for name, s in ACTION_SCHEMES.items() if s.discrete
}


def risk_state(core: EnvCore, i: int = 0) -> RiskState:
    """The :class:`RiskState` of env ``i`` at its current bar, as the env checks targets."""
    return core.risk_state(i)


def action_targets(core: EnvCore, i: int = 0) -> np.ndarray:
    """The target position (units) each discrete action would ask for in env ``i`` now,
    computed by the env's own kernel on copies (nothing in the env changes).

    :raises ConfigError: the env's action scheme is not discrete.
    """
    scheme = core.action_scheme
    if not scheme.discrete:
        raise ConfigError(f"action_targets: the action scheme {scheme.name} is not discrete")
    actions = np.zeros((scheme.n_actions, 2))
    actions[:, 0] = np.arange(scheme.n_actions)
    return core.preview_targets(i, actions)[:, 0]


def risk_gate(core: EnvCore, manager: RiskManager, i: int = 0) -> ActionMask:
    """Which discrete actions the risk manager lets through in env ``i`` now.

    Every action of the scheme's ``gated_actions`` (those opening or increasing exposure) is
    disallowed when the manager would reduce or block the target it would produce
    (:meth:`RiskManager.mask`); the others stay allowed. Nothing is recorded in the manager.

    :return: ``(allowed bool [n_actions], {action: reasons})`` for the disallowed actions;
        everything is allowed once the env's episode is over.
    """
    scheme = core.action_scheme
    if core.env[i, EK.E_DONE] != 0.0:
        return ActionMask(np.ones(scheme.n_actions, dtype=bool), {})
    return manager.mask(risk_state(core, i), action_targets(core, i),
                        gated=scheme.gated_actions)


def gate_logits(logits: torch.Tensor, allowed: np.ndarray) -> torch.Tensor:
    """``logits`` (``[..., n]``) with the disallowed actions set to ``-inf``.

    :param logits: the policy head's output, ``[n]`` or batched.
    :param allowed: ``bool``, broadcastable to ``logits`` (``[n]``, or one row per sample).
    :raises RLTradeError: every action would be masked.
    """
    if allowed.all():
        return logits
    if not allowed.any():  # never happens with gated_actions (flat / exit stay); guard anyway
        raise RLTradeError("risk gating would mask every action")
    mask = torch.as_tensor(~allowed)
    return logits.masked_fill(mask, float("-inf"))


class RiskGate:
    """The risk gate of one worker's env: its core and risk manager (the env's own, or one
    built from the run's risk config and reset with the env). Inactive for an env that is not
    rltrade's, a continuous scheme, or no risk manager at all.

    :param env: the worker's env.
    :param risk_config: the run's risk config, used when the env has no risk manager.
    """

    def __init__(self, env: gym.Env, risk_config: RiskConfig | None) -> None:
        self.core: EnvCore | None = None
        self.manager: RiskManager | None = None
        self.own = False
        core = getattr(env.unwrapped, "core", None)
        if not isinstance(core, EnvCore) or not core.action_scheme.gated_actions:
            return
        if core.risk is not None:
            self.core, self.manager = core, core.risk[0]
        elif risk_config is not None:
            self.core, self.manager = core, RiskManager(risk_config, keep_records=False)
            self.own = True
            if risk_config.needs_calendar:
                self.manager.set_session_flags(core.session_flags(risk_config))

    @property
    def active(self) -> bool:
        return self.manager is not None

    def reset(self) -> None:
        """Forget the tracked equity of a risk manager of its own (the env resets its own)."""
        if self.own and self.manager is not None:
            self.manager.reset()

    def __call__(self) -> ActionMask:
        assert self.core is not None and self.manager is not None
        return risk_gate(self.core, self.manager, 0)
