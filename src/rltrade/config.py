"""``RunConfig``: one pydantic model tree for a whole run, loaded from YAML, saved resolved.

Sections (every key documented on its model below and in ``rltrade config example``):

* ``data``: where the bars come from and which range (:class:`DataConfig`);
* ``features``: the feature spec (:class:`~rltrade.features.FeatureSpec`, YAML form);
* ``env``: the environment, its costs, engine and risk manager (:class:`~rltrade.envs.EnvConfig`);
* ``agent``: algorithm, hyperparameters and policy network (:class:`AgentConfig`);
* ``training``: steps, seed, envs, evaluation and checkpoint frequency (:class:`TrainingConfig`);
* ``split``: the train / evaluation split by time (:class:`SplitConfig`);
* ``backtest``: an optional out-of-sample range (:class:`BacktestConfig`);
* ``evaluation``: how runs are judged: annualisation, the equity floor (:class:`EvaluationConfig`);
* ``walkforward``: an optional walk-forward plan, folds and seeds (:class:`WalkForwardConfig`);
* ``baselines``: the baselines' parameters, e.g. the fixed rule's (:class:`BaselinesConfig`).

Unknown keys and bad values are one :class:`~rltrade.errors.ConfigError` naming each key
(``config.agent.algorithm: ...``); so are a range whose start is not before its end, an empty
file, and any key that looks like a credential (:mod:`rltrade.credentials`: secrets come from
the environment only). The hyperparameters are checked against the algorithm's constructor by
:func:`rltrade.agents.algorithms.check_hyperparams` (``train`` and ``rltrade config validate``
call it): this module imports nothing from ``rltrade.agents``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
import yaml
from pydantic import Field, ValidationInfo, field_validator, model_validator

from rltrade.credentials import credential_paths
from rltrade.data.timeframes import to_utc
from rltrade.envs.config import EnvConfig
from rltrade.errors import ConfigError
from rltrade.features.spec import DEFAULT_SPEC, FeatureSpec
from rltrade.strict import StrictModel

__all__ = [
    "ALGORITHM_DEFAULTS",
    "AgentConfig",
    "BacktestConfig",
    "BaselinesConfig",
    "DataConfig",
    "EvaluationConfig",
    "PolicyConfig",
    "RuleBaselineConfig",
    "RunConfig",
    "SplitConfig",
    "TrainingConfig",
    "WalkForwardConfig",
    "example_yaml",
    "inclusive_end",
]

#: Hyperparameter defaults per algorithm: the source documents' values (PPO, A2C) and
#: Stable-Baselines3's otherwise. Keys are keyword arguments of the algorithm's constructor.
ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {
        "learning_rate": 3e-4,
        "n_steps": 2048,
        "batch_size": 64,
        "n_epochs": 10,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "clip_range": 0.2,
        "ent_coef": 0.01,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
    },
    "a2c": {
        "learning_rate": 7e-4,
        "n_steps": 5,
        "gamma": 0.99,
        "gae_lambda": 1.0,
        "ent_coef": 0.01,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
    },
    "sac": {
        "learning_rate": 3e-4,
        "buffer_size": 50_000,
        "learning_starts": 1000,
        "batch_size": 256,
        "tau": 0.005,
        "gamma": 0.99,
        "train_freq": 1,
        "gradient_steps": 1,
    },
    "recurrent_ppo": {
        "learning_rate": 3e-4,
        "n_steps": 256,
        "batch_size": 128,
        "n_epochs": 10,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "clip_range": 0.2,
        "ent_coef": 0.01,
    },
    "dqn": {
        "learning_rate": 1e-4,
        "buffer_size": 50_000,
        "learning_starts": 1000,
        "batch_size": 64,
        "gamma": 0.99,
        "train_freq": 4,
        "target_update_interval": 2000,
        "exploration_fraction": 0.2,
        "exploration_final_eps": 0.02,
    },
    "a3c": {
        "learning_rate": 1e-4,
        "n_steps": 20,
        "gamma": 0.99,
        "ent_coef": 0.01,
        "vf_coef": 0.5,
        "max_grad_norm": 40.0,
        "n_workers": 2,
    },
}

ALGORITHMS = tuple(ALGORITHM_DEFAULTS)
_NAME_CHARS = "letters, digits and underscores"
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date_text(value: Any) -> Any:
    """An unquoted YAML date or time (``start: 2021-03-01``) as the ISO text it was."""
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def _check_range(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a date/time: {value!r}") from exc
    return str(value)


def inclusive_end(value: str) -> pd.Timestamp:
    """The exclusive UTC bound of an inclusive end: a date (``2024-12-31``) covers its whole
    day (bound: the next midnight), a date and time covers the bar opening then (bound: one
    nanosecond later)."""
    text = str(value).strip()
    ts = to_utc(text)
    if _DATE_ONLY.fullmatch(text):
        return ts + pd.Timedelta(days=1)
    return ts + pd.Timedelta(1, "ns")


def _check_end(end: str | None, info: ValidationInfo) -> str | None:
    """A range must start before it ends (both given); ``end`` is validated after ``start``."""
    start = info.data.get("start")
    if start is not None and end is not None and to_utc(start) >= to_utc(end):
        raise ValueError(f"start {start!r} is not before end {end!r} (end is exclusive): "
                         f"swap them or widen the range")
    return end


class DataConfig(StrictModel):
    """Where the bars come from.

    :param source: a CSV/Parquet path, ``sample:EURUSD-1h``, ``synthetic:planted?n_bars=20000``
        or ``store:SYMBOL/TF`` (see :func:`rltrade.data.load_bars`).
    :param start: first bar (open time, UTC unless zoned); ``None`` = from the beginning.
    :param end: bars before this time (exclusive); ``None`` = to the end.
    :param timeframe: expected bar spacing; inferred when omitted.
    :param symbol: overrides the symbol the source reports.
    :param policy: ``strict`` (errors stop the run) or ``repair`` (documented fixes applied).
    :param calendar: the market calendar (``24/7``, ``24/5``, ``XNYS-RTH``, ``XNYS-EXT``,
        ``CMES``; :mod:`rltrade.data.calendars`): gaps are counted inside its sessions, Sharpe
        is annualised with its bars per year and the risk manager's session rules use it;
        ``auto`` (default) infers it from the bars, ``none`` uses none.
    """

    _label: ClassVar[str] = "data"

    source: str = "sample:EURUSD-1h"
    start: str | None = None
    end: str | None = None
    timeframe: str | None = None
    symbol: str | None = None
    policy: Literal["strict", "repair"] = "strict"
    calendar: str | None = "auto"

    _yaml_dates = field_validator("start", "end", mode="before")(_date_text)

    @field_validator("calendar")
    @classmethod
    def _known_calendar(cls, v: str | None) -> str | None:
        if v is None or v.strip().lower() == "none":
            return None
        if v.strip().lower() == "auto":
            return "auto"
        from rltrade.data.calendars import MarketCalendar

        try:
            return MarketCalendar(v).name
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    _dates = field_validator("start", "end")(_check_range)
    _ordered = field_validator("end")(_check_end)


class PolicyConfig(StrictModel):
    """The policy network.

    :param encoder: ``mlp`` (Stable-Baselines3's default: every observation part flattened and
        concatenated) or ``cnn_lstm_attention`` (:class:`rltrade.agents.CnnLstmAttention` over
        the window, needs ``env.layout: window``).
    :param net_arch: hidden layer sizes of the policy and value heads.
    :param activation: ``tanh`` or ``relu``.
    :param encoder_kwargs: the encoder's sizes (``channels``, ``kernel_size``, ``hidden_size``,
        ``heads``, ``dropout``, ``features_dim``).
    :param lstm_hidden_size: LSTM size of ``recurrent_ppo``'s policy.
    """

    _label: ClassVar[str] = "agent.policy"

    encoder: Literal["mlp", "cnn_lstm_attention"] = "mlp"
    net_arch: list[int] = Field(default_factory=lambda: [64, 64])
    activation: Literal["tanh", "relu"] = "tanh"
    encoder_kwargs: dict[str, Any] = Field(default_factory=dict)
    lstm_hidden_size: int = Field(64, ge=1)

    @field_validator("net_arch")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(int(x) < 1 for x in v):
            raise ValueError("net_arch must be a non-empty list of positive layer sizes")
        return v


class AgentConfig(StrictModel):
    """The learning algorithm.

    :param algorithm: ``ppo``, ``a2c``, ``sac`` (needs ``env.action_scheme: exposure_sl``),
        ``recurrent_ppo`` (LSTM policy, sb3-contrib), ``dqn`` (needs a discrete scheme) or
        ``a3c``.
    :param hyperparams: overrides of :data:`ALGORITHM_DEFAULTS` for the algorithm: keyword
        arguments of its constructor (``learning_rate``, ``n_steps``, ``batch_size``...).
    :param policy: the network (:class:`PolicyConfig`).
    """

    _label: ClassVar[str] = "agent"

    algorithm: Literal["ppo", "a2c", "sac", "recurrent_ppo", "dqn", "a3c"] = "ppo"
    hyperparams: dict[str, Any] = Field(default_factory=dict)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)

    @property
    def resolved_hyperparams(self) -> dict[str, Any]:
        """The algorithm's defaults overlaid with ``hyperparams``."""
        return {**ALGORITHM_DEFAULTS[self.algorithm], **self.hyperparams}


class CostCurriculum(StrictModel):
    """A ramp of the training costs (``training.cost_curriculum``).

    :param start: the cost multiplier at step 0 (a share of the real costs × ``cost_scale``).
    :param share: the share of the planned steps over which it rises linearly to 1.
    """

    _label: ClassVar[str] = "training.cost_curriculum"

    start: float = Field(0.0, ge=0, le=1)
    share: float = Field(0.5, gt=0, le=1)

    def factor(self, step: int, planned: int) -> float:
        """The multiplier at ``step`` of ``planned`` steps."""
        done = min(1.0, step / max(1.0, self.share * planned))
        return self.start + (1.0 - self.start) * done


class TrainingConfig(StrictModel):
    """How long and how to train.

    :param total_steps: environment steps over all envs.
    :param seed: seeds the envs, the network initialisation and the algorithm.
    :param n_envs: environments stepped together (one ``VecTradingEnv``).
    :param vec_env: ``native`` (:class:`~rltrade.envs.VecTradingEnv`) or ``dummy``
        (Stable-Baselines3's ``DummyVecEnv`` of ``TradingEnv``s, for comparison).
    :param eval_freq: evaluate on the held-out slice every this many steps (0 = only at the end).
    :param checkpoint_freq: write a checkpoint every this many steps (0 = only at the end).
    :param keep_checkpoints: how many checkpoints to keep (the newest).
    :param torch_threads: CPU threads for torch. Default 1: the networks here are small, and
        with more threads torch's OpenMP workers contend with the env (and any other process)
        for the cores; measured 25x slower with 2 threads on a busy 2-core machine.
        ``None`` keeps torch's default (all cores).
    :param device: ``cpu`` (bit-reproducible) or ``auto`` (a GPU when there is one).
    :param cost_scale: the training envs' costs (fees, spread, slippage) are the real ones × this
        (e.g. 0.5: train at half the costs); evaluation during training and every backtest use
        the real costs. 1: off.
    :param cost_curriculum: ramp the training costs from ``start`` × to 1 × ``cost_scale``,
        linearly over the first ``share`` of the planned steps (then constant); ``None``: off.
    :param early_stop_patience: stop training when the validation return (the periodic
        evaluation on the held-out slice, every ``eval_freq`` steps) has not improved on the
        best one for this many evaluations in a row; ``None``: off. The ``best/`` model is
        still the best evaluation's.
    """

    _label: ClassVar[str] = "training"

    total_steps: int = Field(100_000, ge=1)
    seed: int = Field(0, ge=0)
    n_envs: int = Field(8, ge=1, le=4096)
    vec_env: Literal["native", "dummy"] = "native"
    eval_freq: int = Field(20_000, ge=0)
    checkpoint_freq: int = Field(20_000, ge=0)
    keep_checkpoints: int = Field(3, ge=1)
    torch_threads: int | None = Field(1, ge=1)
    device: Literal["cpu", "auto"] = "cpu"
    cost_scale: float = Field(1.0, ge=0)
    cost_curriculum: CostCurriculum | None = None
    early_stop_patience: int | None = Field(None, ge=1)


class SplitConfig(StrictModel):
    """Train / evaluation split of the training range (``data.start`` .. ``data.end``), by time:
    a share of the bars, or dates.

    :param train: share of the bars used for training; the rest, later in time, is the
        evaluation slice used during training (best model selection). Used when ``train_end``
        is not given.
    :param train_end: the last moment of training, **inclusive**: a date (``2024-12-31``)
        trains through that whole day, a date and time through the bar that opens then. The
        evaluation slice starts after it.
    :param eval_end: the last moment of the evaluation slice, inclusive like ``train_end``
        (``None``: to ``data.end``, else to the end of the data). Needs ``train_end``.

    The features' warm-up is taken from bars before ``data.start`` when the data has them, so
    the training slice starts at ``data.start`` exactly (see
    :func:`rltrade.agents.training.prepare_data`).
    """

    _label: ClassVar[str] = "split"

    train: float = Field(0.75, gt=0, lt=1)
    train_end: str | None = None
    eval_end: str | None = None

    _yaml_dates = field_validator("train_end", "eval_end", mode="before")(_date_text)
    _dates = field_validator("train_end", "eval_end")(_check_range)

    @model_validator(mode="after")
    def _ordered_ends(self) -> SplitConfig:
        if self.eval_end is not None and self.train_end is None:
            raise ValueError("split.eval_end needs split.train_end (the evaluation slice "
                             "starts after it)")
        if self.train_end is not None and self.eval_end is not None and \
                inclusive_end(self.eval_end) <= inclusive_end(self.train_end):
            raise ValueError(f"split.eval_end {self.eval_end!r} is not after split.train_end "
                             f"{self.train_end!r}")
        return self

    @property
    def eval(self) -> float:
        return 1.0 - self.train

    @property
    def by_date(self) -> bool:
        """Whether the split is by dates (``train_end``) rather than by share."""
        return self.train_end is not None

    def describe(self) -> dict[str, Any]:
        """The split as recorded in a run's metadata."""
        if self.by_date:
            return {"train_end": self.train_end, "eval_end": self.eval_end}
        return {"train": self.train, "eval": self.eval}


class RuleBaselineConfig(StrictModel):
    """The fixed-rule baseline (``rule``, :class:`rltrade.agents.baselines.RuleBaseline`);
    defaults are the source documents' rule.

    :param confidence: enter only when the direction's confidence is above this (0.6).
    :param horizon: exit after this many bars in the trade (20).
    :param take_profit: exit when the trade's return reaches this fraction (0.01 = +1 %).
    :param stop_loss: exit when the trade's return falls to minus this fraction (0.005 = -0.5 %).
    :param source: ``auto``, ``consensus`` (the strategies' signals) or ``forecast``.
    :param confirm: the confirming feature (``auto``, a feature name, or ``null``: none).
    """

    _label: ClassVar[str] = "baselines.rule"

    confidence: float = Field(0.6, ge=0)
    horizon: int = Field(20, ge=1)
    take_profit: float = Field(0.01, ge=0)
    stop_loss: float = Field(0.005, ge=0)
    source: Literal["auto", "consensus", "forecast"] = "auto"
    confirm: str | None = "auto"

    def baseline_params(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~rltrade.agents.baselines.RuleBaseline`."""
        return {"threshold": self.confidence, "max_hold": self.horizon,
                "take_profit": self.take_profit, "stop_loss": self.stop_loss,
                "source": self.source, "confirm": self.confirm}


class BaselinesConfig(StrictModel):
    """Parameters of the baselines a run is judged against (``rltrade backtest``, ``compare``,
    walk-forward folds).

    :param rule: the fixed-rule baseline (:class:`RuleBaselineConfig`).
    """

    _label: ClassVar[str] = "baselines"

    rule: RuleBaselineConfig = Field(default_factory=RuleBaselineConfig)

    def params(self) -> dict[str, dict[str, Any]]:
        """Baseline name -> keyword parameters (what :func:`~rltrade.evaluation.judge.
        compare_baselines` takes as ``params``)."""
        return {"rule": self.rule.baseline_params()}


class BacktestConfig(StrictModel):
    """An out-of-sample range to backtest after training (``rltrade train --backtest-start``).

    :param start: first bar of the backtest (UTC unless zoned).
    :param end: bars before this time; ``None`` = to the end of the data.
    :param force_close: close the open position at the last bar.
    """

    _label: ClassVar[str] = "backtest"

    start: str | None = None
    end: str | None = None
    force_close: bool = False

    _yaml_dates = field_validator("start", "end", mode="before")(_date_text)
    _dates = field_validator("start", "end")(_check_range)
    _ordered = field_validator("end")(_check_end)


class EvaluationConfig(StrictModel):
    """How a run is judged: training's evaluations, ``rltrade backtest`` and ``compare``.

    :param bars_per_year: annualisation factor for Sharpe, volatility and CAGR (``None``: the
        metrics module's own choice, recorded in ``metrics.run.bars_per_year_source``); the
        ``--bars-per-year`` option of ``backtest`` and ``compare`` overrides it.
    :param equity_floor: stop evaluations and backtests when equity falls to
        ``env.equity_floor`` × the initial equity, as training episodes do. Default off: a
        backtest covers the range it was asked for (bankruptcy still ends it, and the summary
        says so).
    """

    _label: ClassVar[str] = "evaluation"

    bars_per_year: float | None = Field(None, gt=0)
    equity_floor: bool = False


class WalkForwardConfig(StrictModel):
    """A walk-forward (``rltrade walkforward``): folds of train / validation / test windows over
    the data range, each trained with every seed (see :mod:`rltrade.experiments.folds`).

    :param scheme: ``rolling`` (every window moves by ``step``), ``anchored`` (training
        always starts at the first row and grows) or ``cpcv`` (combinatorial purged
        cross-validation over ``groups`` groups, ``test_groups`` tested per split; ``train``,
        ``validation``, ``test``, ``step`` and ``folds`` do not apply).
    :param groups: cpcv: how many groups the rows are cut into.
    :param test_groups: cpcv: groups tested per split.
    :param train: training window: bars (``2000``) or a duration (``180d``, ``12h``), turned
        into bars of the data's timeframe.
    :param validation: validation window (checkpoint selection only), bars or a duration.
    :param test: test window (one backtest of the selected checkpoint), bars or a duration;
        may be left out when ``folds`` is given (the rest of the data is shared out).
    :param step: bars or duration between consecutive test windows (default ``test +
        embargo``).
    :param folds: how many folds (default: as many as the data allows).
    :param purge: bars left out between train and validation and between validation and test;
        ``None`` = ``env.window + env.engine.decision_lag`` (no training observation or reward
        reaches a later block, see :func:`rltrade.experiments.default_purge`).
    :param embargo: bars after each test window that no later test window starts in.
    :param seeds: training seeds; every fold is trained once per seed (``training.seed`` is
        replaced).
    """

    _label: ClassVar[str] = "walkforward"

    scheme: Literal["rolling", "anchored", "cpcv"] = "rolling"
    groups: int = Field(6, ge=2)
    test_groups: int = Field(2, ge=1)
    train: int | str = "180d"
    validation: int | str = "30d"
    test: int | str | None = "30d"
    step: int | str | None = None
    folds: int | None = Field(None, ge=1)
    purge: int | None = Field(None, ge=0)
    embargo: int = Field(0, ge=0)
    seeds: list[int] = Field(default_factory=lambda: [0])

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or any(int(s) < 0 for s in v) or len(set(v)) != len(v):
            raise ValueError("seeds must be a non-empty list of distinct non-negative integers")
        return v

    @model_validator(mode="after")
    def _test_or_folds(self) -> WalkForwardConfig:
        if self.test is None and self.folds is None:
            raise ValueError("give the test window (test: 30d or a bar count) or folds: N")
        return self


class RunConfig(StrictModel):
    """A whole run: data, features, env, agent, training, split and an optional backtest.

    Load with :meth:`from_yaml` (a path or YAML text) or :meth:`from_dict`; ``to_yaml()`` is the
    resolved config saved into every run directory.
    """

    _label: ClassVar[str] = "config"

    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    features: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_SPEC))
    env: EnvConfig = Field(default_factory=EnvConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    backtest: BacktestConfig | None = None
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    walkforward: WalkForwardConfig | None = None
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        found = credential_paths(data)
        if found:
            raise ConfigError(
                f"config: {', '.join(found)} look(s) like a credential; secrets never go in a "
                f"config file (it is copied into every run directory): read them from "
                f"environment variables"
            )
        return data

    @field_validator("features", mode="before")
    @classmethod
    def _spec(cls, value: Any) -> Any:
        if isinstance(value, FeatureSpec):
            return value.resolved()
        if value is None:
            return dict(DEFAULT_SPEC)
        if not isinstance(value, dict):
            raise ValueError("must be a feature spec mapping (features, strategies, ...)")
        try:
            return FeatureSpec.from_dict(value).resolved()
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _compatible(self) -> RunConfig:
        scheme = self.env.action_scheme
        algo = self.agent.algorithm
        if algo == "sac" and scheme != "exposure_sl":
            raise ValueError(
                f"agent.algorithm sac needs a continuous action space: set env.action_scheme to "
                f"exposure_sl (it is {scheme})"
            )
        if algo == "dqn" and scheme == "exposure_sl":
            raise ValueError("agent.algorithm dqn needs a discrete action scheme "
                             "(discrete3 or discrete6), not exposure_sl")
        tc = self.training
        if algo == "a3c" and (tc.cost_scale != 1.0 or tc.cost_curriculum is not None):
            raise ValueError("training.cost_scale / cost_curriculum: not supported with "
                             "agent.algorithm a3c (its workers build their own envs)")
        if self.agent.policy.encoder == "cnn_lstm_attention" and self.env.layout != "window":
            raise ValueError("agent.policy.encoder cnn_lstm_attention needs env.layout: window")
        return self

    # -- construction ---------------------------------------------------------------------
    @property
    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec.from_dict(self.features)

    @classmethod
    def from_yaml(cls, source: str | Path) -> RunConfig:
        """Load from a YAML file (a path) or YAML text.

        :raises ConfigError: a missing or unreadable file, invalid YAML, an empty document (no
            settings at all, or only comments) or one that is not a mapping of sections; each
            names the file.
        """
        text: str
        where = "config"
        if isinstance(source, Path) or ("\n" not in str(source) and
                                        str(source).endswith((".yaml", ".yml"))):
            path = Path(source)
            if not path.is_file():
                raise ConfigError(f"{path}: no such config file")
            where = str(path)
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
        else:
            text = str(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where} is not valid YAML: {exc}") from None
        if data is None:
            raise ConfigError(
                f"{where}: the config is empty (no settings, only blanks or comments); "
                f"start from `rltrade config example`, or leave out --config for the defaults"
            )
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: the YAML document must be a mapping of sections")
        return cls.from_dict(data)

    def with_overrides(self, **sections: dict[str, Any]) -> RunConfig:
        """A copy with some keys of some sections replaced: ``with_overrides(training={...})``."""
        data = self.to_dict()
        for section, values in sections.items():
            if section not in data:
                raise ConfigError(f"config: unknown section {section!r}")
            if isinstance(data[section], dict) and isinstance(values, dict):
                data[section] = _deep_merge(data[section], values)
            else:
                data[section] = values
        return RunConfig.from_dict(data)

    def with_dotted(self, values: Mapping[str, Any]) -> RunConfig:
        """A copy with dotted keys set (``{"agent.hyperparams.gamma": 0.9, "env.window": 8}``),
        validated again: sweeps' parameters and the benchmark suite's overlays.

        :raises ConfigError: a key that crosses a value, or a value the config refuses.
        """
        sections: dict[str, Any] = {}
        for key, value in values.items():
            parts = key.split(".")
            node = sections
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"config: {key} crosses a value")
            node[parts[-1]] = value
        return self.with_overrides(**sections) if sections else self

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what ``config.yaml`` holds)."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _deep_merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


EXAMPLE_YAML = """\
# rltrade run config. Every key is optional: what is left out takes the default shown here.
# Check a file with `rltrade config validate FILE`; train with
#   rltrade train --config FILE --name my_run
description: "PPO on EURUSD 1h, default features"

data:
  source: sample:EURUSD-1h   # CSV/Parquet path, sample:NAME, synthetic:KIND?n_bars=N, store:SYM/TF
  start: null                # first bar (UTC), null = from the beginning
  end: null                  # bars before this time, null = to the end
  timeframe: null            # inferred from the bars when null
  policy: strict             # strict: data errors stop the run; repair: documented fixes

# features: the feature spec (`rltrade features spec` prints the default one in full).
# Leave it out for the default: indicators, market features and five strategy signals.

env:
  action_scheme: discrete3   # discrete3 (short/flat/long), discrete6, exposure_sl (continuous)
  reward: log_return         # log_return, asymmetric_drawdown, risk_adjusted,
                             # differential_sharpe, cvar_penalized
  reward_scale: 1.0
  window: 32                 # bars of features in each observation
  layout: window             # window (sequence encoders) or flat (one vector)
  episode_length: 1024       # bars per training episode (random start)
  equity_floor: 0.5          # end the episode when equity falls to half of the start
  # trading less (docs/envs.md, "Trading less"): the benchmark suite's choice on validation
  # windows (docs/leaderboard.md); each is off at 1 / 0 / null
  decision_interval: 4       # the agent decides every 4 bars; no order in between
  cost_penalty: 1.0          # reward minus 1 x the step's real costs (fees, spread, slippage)
  vol_target: 0.1            # size a full position to 10 % annual volatility (null: off)
  vol_bars_per_year: null    # its annualisation; null: the data's market calendar (XNYS-RTH
                             # 5m: 19,506 bars a year; 24/5 FX 1h: 6,256), else around the clock
  min_margin: 0.2            # abstention (backtests, evaluations): trade only when the
                             # preferred action is this much more probable (0: off)
  engine:
    mode: retail             # retail (spread, slippage, fees) or ideal (fees only)
    initial_cash: 50000.0
    leverage: 1.0
    fill: open               # market orders fill at the next bar's open, or at "close"
    costs:
      taker_fee: 0.0005      # 5 bps per market fill
      spread_bps: 1.0        # full bid-ask spread
      slippage_bps: 1.0
  risk: null                 # a risk manager section turns the guardrails on in training

agent:
  algorithm: ppo             # ppo, a2c, sac (exposure_sl), recurrent_ppo, dqn (discrete), a3c
  hyperparams:               # overrides of the algorithm's defaults (constructor keywords)
    learning_rate: 0.0003
    n_steps: 256             # short rollouts (x 8 envs): many small updates
    batch_size: 64
    n_epochs: 4
  policy:
    encoder: mlp             # mlp or cnn_lstm_attention
    net_arch: [64, 64]
    activation: tanh

training:
  total_steps: 100000
  seed: 0
  n_envs: 8
  eval_freq: 20000           # evaluate on the held-out slice every N steps
  checkpoint_freq: 20000     # crash-safe checkpoint every N steps (resume with --resume)
  cost_scale: 1.5            # the training envs trade at the real costs x this

split:
  train: 0.75                # first 75 % trains, the last 25 % evaluates (by time)
  # train_end: 2024-12-31    # or by date: train through this day (inclusive), evaluate after
  # eval_end: null           # last day of the evaluation slice (default: data.end)

# backtest:                  # an out-of-sample range to backtest after training
#   start: "2020-01-01"
#   end: null
#   force_close: false

evaluation:                  # how the run is judged (evaluations, backtest, compare)
  bars_per_year: null        # annualisation override (e.g. 98280 for US regular-hours 1m bars)
  equity_floor: false        # true: backtests stop at env.equity_floor like training episodes

baselines:
  rule:                      # the fixed-rule baseline (the source documents' rule)
    confidence: 0.6          # enter when the signals' confidence is above this
    horizon: 20              # exit after this many bars
    take_profit: 0.01        # or at +1 %
    stop_loss: 0.005         # or at -0.5 %

walkforward:                 # `rltrade walkforward` (ignored by `train`); docs/walkforward.md
  scheme: rolling            # rolling or anchored (training always starts at the first bar)
  train: 2000                # bars, or a duration such as 180d (bars of the data's timeframe)
  validation: 400            # checkpoint selection only
  test: 400                  # one backtest per fold and seed, never used for a choice
  step: 400                  # distance between test windows
  purge: null                # default: env.window + decision lag
  embargo: 0
  seeds: [0, 1, 2]           # 5 folds x 3 seeds on the bundled sample (try --steps 20000)
"""


#: What each market preset trades and where its bars come from (comments of the example).
_PRESET_NOTES = {
    "crypto-spot": ("BTC/USDT spot, Binance regular-tier fees", "sample:BTCUSD-1M"),
    "crypto-perp": ("BTC/USDT perpetual, Binance USD-M; the bars need a funding_rate column "
                    "(fraction per 8 h funding, + = longs pay)", "path/to/BTCUSDT-perp-1h.csv"),
    "fx": ("EUR/USD at an ECN broker, ESMA retail leverage", "sample:EURUSD-1h"),
    "us-equity": ("a US stock or ETF (SPY) at Interactive Brokers, Reg T margin",
                  "path/to/SPY-1m.csv"),
    "cme-micro": ("CME Micro E-mini S&P 500 (MES), 5 USD per point", "path/to/MES-5m.csv"),
}


def _preset_settings(name: str) -> dict[str, Any]:
    from rltrade.sim.instruments import preset

    return preset(name)


def _preset_engine_block(name: str) -> str:
    """The ``env.engine`` section of a market preset as YAML, indented under ``env:``."""
    settings = _preset_settings(name)
    engine = {"mode": "retail", "initial_cash": 50000.0, "fill": "open", **settings}
    body = yaml.safe_dump({"engine": engine}, sort_keys=False, default_flow_style=False)
    what, _ = _PRESET_NOTES[name]
    lines = [f"  # preset {name}: {what}.", "  # Values and their sources: docs/engine.md, "
             "section Instruments; check them against your venue."]
    lines += ["  " + line for line in body.rstrip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def example_yaml(preset: str | None = None) -> str:
    """A commented starting config (``rltrade config example``); it validates as is.

    :param preset: a market preset (:data:`rltrade.sim.instruments.PRESETS`): the engine
        section (costs, instrument, margin) and the data source fit that market.
    :raises ConfigError: for an unknown preset.
    """
    if preset is None:
        return EXAMPLE_YAML
    block = _preset_engine_block(preset)
    start = EXAMPLE_YAML.index("  engine:\n")
    end = EXAMPLE_YAML.index("  risk: null")
    text = EXAMPLE_YAML[:start] + block + EXAMPLE_YAML[end:]
    from rltrade.sim.config import EngineConfig

    leverage = EngineConfig(**_preset_settings(preset)).leverage
    if leverage > 1.0:
        # the margin is the venue's limit; a full discrete3 position stays 1x equity
        exposure = f"{1.0 / leverage:.6g}"
        text = text.replace(
            "  equity_floor: 0.5 ",
            f"  max_exposure: {exposure:<12} # x leverage {leverage:.4g} (the margin limit): a "
            "full discrete3 position = 1x equity\n  equity_floor: 0.5 ")
    what, source = _PRESET_NOTES[preset]
    text = text.replace('description: "PPO on EURUSD 1h, default features"',
                        f'description: "PPO, preset {preset}: {what.split(";")[0]}"')
    return text.replace("  source: sample:EURUSD-1h ", f"  source: {source} ")
