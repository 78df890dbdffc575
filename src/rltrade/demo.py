"""The end-to-end demo (``rltrade demo``, ``make demo``): train, evaluate out of sample, report.

On the bundled EUR/USD hourly sample with the default feature spec: train PPO for a few minutes
on the first 75 % of the bars, then backtest the agent and the baselines on the last 25 % (never
seen in training) through the same engine and costs, print the comparison and write the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rltrade.config import RunConfig

__all__ = ["DEMO_STEPS", "DemoResult", "demo_config", "run_demo"]

#: Training steps of the demo: a few minutes on two CPU cores.
DEMO_STEPS = 196_608


def demo_config(steps: int = DEMO_STEPS, source: str = "sample:EURUSD-1h") -> RunConfig:
    """The demo's run config: ``rltrade config example`` (the defaults the benchmark suite
    chose on validation windows, docs/leaderboard.md) on ``source``, trained for ``steps``
    on 8 envs, evaluated every 16,384 steps; the example's ``walkforward:`` section is dropped
    (the demo is one train / held-out split)."""
    from rltrade.config import example_yaml

    example = RunConfig.from_yaml(example_yaml())
    data = example.to_dict()
    data.update(description="rltrade demo: PPO on EUR/USD 1h, the example config's defaults, "
                            "retail costs",
                walkforward=None)
    data["data"] = {**data["data"], "source": source}
    data["training"] = {**data["training"], "total_steps": steps, "n_envs": 8,
                        "eval_freq": 16_384, "checkpoint_freq": 16_384}
    return RunConfig.from_dict(data)


@dataclass
class DemoResult:
    run_path: Path
    train: Any
    comparison: Any = None
    report: Path | None = None
    backtest: Any = None


def run_demo(*, runs_root: str | Path = "runs", name: str | None = None,
             steps: int = DEMO_STEPS, source: str = "sample:EURUSD-1h",
             progress: bool = True) -> DemoResult:
    """Train, then judge the final model (not the one selected on the evaluation slice, so
    the slice stays out of sample) on the held-out last 25 % against every baseline, and write
    the backtest with its report into the run."""
    from rltrade.agents.training import train
    from rltrade.evaluation.judge import backtest_run

    name = name or "demo_" + datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    result = train(demo_config(steps, source), name, runs_root=runs_root, progress=progress)
    # one backtest of the agent and each baseline: the report's comparison is the demo's
    bt = backtest_run(result.run, result.data.eval, model="final", baselines=True)
    report = bt.path / "report.html" if bt.path is not None else None
    return DemoResult(result.run.path, result, bt.comparison, report, bt)
