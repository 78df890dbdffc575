"""A3C: asynchronous advantage actor-critic (Mnih et al., 2016) on rltrade's environments.

One actor-critic lives in shared memory (``policy.share_memory()``) together with the state of
its Adam optimizer (:class:`SharedAdam`). ``n_workers`` worker processes (``spawn`` start method)
each own an environment built by an ``env_factory`` and a local copy of the network. A worker
repeatedly:

1. copies the shared weights into its local network;
2. steps its env ``n_steps`` times, sampling from the policy (risk-gated, see below);
3. computes n-step returns, bootstrapped from the value of the last state (``0`` when the episode
   terminated, the value of the final observation when it was truncated);
4. computes ``loss = policy loss + vf_coef × value loss − ent_coef × entropy``, backpropagates
   through its local network, clips the gradient norm to ``max_grad_norm``;
5. under a lock shared by all workers, hands its gradients to the shared parameters, takes one
   shared Adam step and adds its steps to the shared step counter.

The optimizer step runs **under a lock**, not Hogwild: Adam's moments and step count are updated
by one worker at a time, so the shared state is never torn (two updates interleaved element by
element) and the step counter always matches the weights. Gradients are still computed
asynchronously on stale weights (the point of A3C); only the few microseconds of the update are
serialized.

:class:`A3C` mimics the part of Stable-Baselines3's ``BaseAlgorithm`` that rltrade's training
code uses (``learn`` with the callback protocol, ``predict``, ``get_parameters`` /
``set_parameters``, ``num_timesteps``...), so a run with ``agent.algorithm: a3c`` gets the same
run directory, metadata, checkpoints, resume and safe weights as the other algorithms.

Determinism: with ``n_workers == 1`` the worker loop runs in the calling process and a seed gives
bit-identical weights. With several workers the order in which updates reach the shared model
depends on the operating system's scheduling, so runs are reproducible in distribution only.

Risk gating: when the env has a risk manager (``env.risk``) and a discrete action scheme, each
action that opens or increases exposure (the scheme's ``gated_actions``: ``discrete3`` short and
long; ``discrete6`` enter long, enter short, scale in) is checked before sampling by the risk
manager's :meth:`~rltrade.sim.risk.RiskManager.mask` on the target it would produce; an action
whose target would be reduced or blocked gets the logit ``-inf``. Flat / hold / exit are never
masked.

The package, one concept a module:

- :mod:`~rltrade.agents.a3c.algorithm`: :class:`A3C`, the SB3-style façade;
- :mod:`~rltrade.agents.a3c.learner`: one ``learn`` call in the training process (worker
  processes, callbacks, statistics and logging);
- :mod:`~rltrade.agents.a3c.worker`: the shared state and the worker loop (rollout, update);
- :mod:`~rltrade.agents.a3c.network`: :class:`ActorCritic` and observations as tensors;
- :mod:`~rltrade.agents.a3c.optim`: :class:`SharedAdam`;
- :mod:`~rltrade.agents.a3c.gating`: risk gating of the discrete actions;
- :mod:`~rltrade.agents.a3c.guards`: checks of rewards and observations;
- :mod:`~rltrade.agents.a3c.factories`: the workers' env factories;
- :mod:`~rltrade.agents.a3c.errors`: :class:`A3CWorkerError`.
"""

from rltrade.agents.a3c.algorithm import A3C
from rltrade.agents.a3c.errors import A3CWorkerError
from rltrade.agents.a3c.factories import EnvFactory, default_env_factory, trading_env_factory
from rltrade.agents.a3c.gating import (
    GATED_ACTIONS,
    RiskGate,
    action_targets,
    gate_logits,
    risk_gate,
    risk_state,
)
from rltrade.agents.a3c.guards import check_observation, check_reward
from rltrade.agents.a3c.network import ActorCritic, obs_as_tensor
from rltrade.agents.a3c.optim import SharedAdam

__all__ = [
    "A3C",
    "GATED_ACTIONS",
    "A3CWorkerError",
    "ActorCritic",
    "EnvFactory",
    "RiskGate",
    "SharedAdam",
    "action_targets",
    "check_observation",
    "check_reward",
    "default_env_factory",
    "gate_logits",
    "obs_as_tensor",
    "risk_gate",
    "risk_state",
    "trading_env_factory",
]
