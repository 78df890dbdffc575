"""The action schemes as records: what every module knows about a scheme, in one place.

Each :class:`ActionScheme` says whether the scheme is discrete, how many actions (or how wide the
continuous action) it has, the neutral action (flat / hold, what a NaN or a missing action
means), the names of its discrete actions (for plots and tables), and which actions open or
increase exposure (the ones a risk manager may gate). The kernel in :mod:`rltrade.envs.kernels`
turns an action into an order; it reads the scheme's integer ``kernel_id``.

>>> from rltrade.envs.schemes import scheme
>>> scheme("discrete3").action_names
('short', 'flat', 'long')
"""

from __future__ import annotations

from dataclasses import dataclass

from rltrade.envs import kernels as EK
from rltrade.errors import ConfigError


@dataclass(frozen=True)
class ActionScheme:
    """One action scheme.

    :param name: the config name (``env.action_scheme``).
    :param description: one line for users (``rltrade`` help, docs).
    :param discrete: ``Discrete(n)`` actions (else a ``Box([-1, 1]^width)``).
    :param n_actions: number of discrete actions; 0 for a continuous scheme.
    :param width: width of one action as the kernel reads it (1 discrete, 2 ``exposure_sl``).
    :param neutral: the action that means flat (discrete3) / hold (discrete6) / zero exposure.
    :param action_names: the discrete actions' names by index (empty for continuous).
    :param gated_actions: discrete actions that open or increase exposure (risk-gated).
    :param kernel_id: the scheme's integer in the env kernels.
    :param sizes_from_atr: the scheme sizes positions and sets stops from the ATR (the env
        then computes it for its kernels).
    """

    name: str
    description: str
    discrete: bool
    n_actions: int
    width: int
    neutral: float
    action_names: tuple[str, ...]
    gated_actions: tuple[int, ...]
    kernel_id: int
    sizes_from_atr: bool = False

    @property
    def continuous(self) -> bool:
        return not self.discrete

    def action_name(self, action: float) -> str:
        """The name of a discrete action (``"long"``), or the number formatted for continuous."""
        if self.discrete and float(action).is_integer() and 0 <= action < self.n_actions:
            return self.action_names[int(action)]
        return f"{action:g}"


ACTION_SCHEMES: dict[str, ActionScheme] = {
    s.name: s
    for s in (
        ActionScheme(
            name="discrete3",
            description="Discrete(3): short / flat / long at max_exposure of the leverage limit",
            discrete=True, n_actions=3, width=1, neutral=1.0,
            action_names=("short", "flat", "long"),
            gated_actions=(0, 2),
            kernel_id=EK.S_DISCRETE3,
        ),
        ActionScheme(
            name="discrete6",
            description=("Discrete(6): hold, enter long, enter short, exit, scale in 50%, "
                         "scale out 50%"),
            discrete=True, n_actions=6, width=1, neutral=float(EK.HOLD),
            action_names=("hold", "enter_long", "enter_short", "exit", "scale_in", "scale_out"),
            gated_actions=(EK.ENTER_LONG, EK.ENTER_SHORT, EK.SCALE_IN),
            kernel_id=EK.S_DISCRETE6,
            sizes_from_atr=True,
        ),
        ActionScheme(
            name="exposure_sl",
            description=("Box([-1,1]^2): target exposure (fraction of leverage) and stop "
                         "tightness"),
            discrete=False, n_actions=0, width=2, neutral=0.0,
            action_names=(), gated_actions=(),
            kernel_id=EK.S_EXPOSURE_SL,
        ),
    )
}
ACTION_SCHEME_NAMES: tuple[str, ...] = tuple(ACTION_SCHEMES)


def scheme(name: str) -> ActionScheme:
    """The :class:`ActionScheme` called ``name``; a :class:`ConfigError` naming the choices."""
    try:
        return ACTION_SCHEMES[name]
    except KeyError:
        raise ConfigError(
            f"unknown action scheme {name!r}; choose one of {', '.join(ACTION_SCHEMES)}"
        ) from None
