"""The benchmark suite's named configs: overlays of dotted keys on a base RunConfig.

``old-defaults`` is ``rltrade config example`` as it was before issue 16 (frozen in
``old_defaults.yaml`` so that it keeps its meaning), ``new-defaults`` is today's
``rltrade config example``; every candidate is ``old-defaults`` plus its overlay. The suite sets
each dataset's costs, bars per year, walk-forward plan and training steps on top (the same for
every config), so configs differ only in what they name here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rltrade.config import RunConfig, example_yaml
from rltrade.errors import ConfigError

__all__ = ["CONFIGS", "DEFAULT_CONFIGS", "base_config", "suite_config"]

OLD_DEFAULTS = Path(__file__).with_name("old_defaults.yaml")

#: PPO with short rollouts and fewer epochs (the walk-forward example's hyperparameters):
#: many more updates per step than 2,048 x 8 envs with 10 epochs
_SHORT_ROLLOUTS = {"agent.hyperparams.n_steps": 256, "agent.hyperparams.batch_size": 64,
                   "agent.hyperparams.n_epochs": 4}

#: name -> (base, overlay of dotted keys, what it is)
CONFIGS: dict[str, tuple[str, dict[str, Any], str]] = {
    "old-defaults": ("old", {}, "rltrade config example before issue 16, unchanged"),
    "new-defaults": ("example", {}, "today's rltrade config example, unchanged (since issue 16: "
                     "the chosen candidate)"),
    "short-rollouts": ("old", dict(_SHORT_ROLLOUTS),
                       "n_steps 256, batch 64, 4 epochs (more, smaller PPO updates)"),
    "half-size": ("old", {**_SHORT_ROLLOUTS, "env.max_exposure": 0.5},
                  "short rollouts, discrete3 at half the exposure"),
    # the switches of issue 16 (env.decision_interval, cost_penalty, vol_target, min_margin;
    # training.cost_scale), see docs/envs.md and docs/training.md, "Trading less"
    "every4-pen1-vol10": ("old", {**_SHORT_ROLLOUTS, "env.decision_interval": 4,
                                  "env.cost_penalty": 1.0, "env.vol_target": 0.10},
                          "short rollouts; decide every 4 bars; reward - 1x the real costs; "
                          "positions sized to 10 % annual volatility"),
    "every4-pen1-vol10-margin": ("old", {**_SHORT_ROLLOUTS, "env.decision_interval": 4,
                                         "env.cost_penalty": 1.0, "env.vol_target": 0.10,
                                         "env.min_margin": 0.2, "training.cost_scale": 1.5},
                                 "every4-pen1-vol10, plus abstention (trade only on a 0.2 "
                                 "probability margin) and training at 1.5x the costs"),
    "every4-pen2-vol05-margin": ("old", {**_SHORT_ROLLOUTS, "env.decision_interval": 4,
                                        "env.cost_penalty": 2.0, "env.vol_target": 0.05,
                                        "env.min_margin": 0.2},
                                "every 4 bars, reward - 2x the real costs, 5 % annual "
                                "volatility target, abstention on a 0.2 margin"),
    "every4-pen2-vol05": ("old", {**_SHORT_ROLLOUTS, "env.decision_interval": 4,
                                  "env.cost_penalty": 2.0, "env.vol_target": 0.05},
                          "every4-pen2-vol05-margin without the abstention"),
}

#: the candidate the suite's rule chose on validation windows (docs/leaderboard.md); it is
#: ``rltrade config example`` (and so ``new-defaults``) and the demo's config
CHOSEN_DEFAULT = "every4-pen1-vol10-margin"

#: what ``run.py`` runs without ``--configs``
DEFAULT_CONFIGS = ["old-defaults", "new-defaults"]


def base_config(base: str) -> RunConfig:
    """``old``: the frozen pre-issue-16 example; ``example``: today's ``rltrade config
    example``."""
    if base == "old":
        return RunConfig.from_yaml(OLD_DEFAULTS)
    if base == "example":
        return RunConfig.from_yaml(example_yaml())
    raise ConfigError(f"unknown base {base!r}: old or example")


def suite_config(name: str) -> RunConfig:
    """The named config (its base plus its overlay), before the dataset's settings.

    :raises ConfigError: an unknown name, or an overlay key the config does not have (a switch
        that has not landed yet).
    """
    if name not in CONFIGS:
        raise ConfigError(f"unknown suite config {name!r}; known: {', '.join(CONFIGS)}")
    base, overlay, _ = CONFIGS[name]
    cfg = base_config(base)
    return cfg.with_dotted(overlay)
