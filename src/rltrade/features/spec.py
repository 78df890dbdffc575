"""``FeatureSpec``: what to compute, with which parameters, in which order; and its hash.

A spec is written in YAML, e.g.::

    features:
      macd: {fast: 12, slow: 26, signal: 9}
      rsi: [{period: 14}, {period: 30}]     # a list: several instances of one feature
      atr: {}                               # defaults
    strategies: [supertrend, {ott: {timeframe: 4h, percent: 1.4}}]
    external:
      - {name: vix, source: ../shared/data/vix_daily_1990-2026.csv}
    normalization: default                  # or zscore (fitted on the training slice)

The hash is the sha256 of the canonical JSON of the spec with every default filled in, so
``rsi: {}`` and ``rsi: {period: 14}`` hash alike, while any change of a parameter, of the
feature list, of the strategy set **or order**, of the external series or of the normalisation
scheme changes it. A model remembers the hash of the spec it was trained on and refuses a dataset
built with another.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rltrade.errors import ConfigError

_STRICT = ConfigDict(extra="forbid")


class FeatureItem(BaseModel):
    """One feature group with its parameters."""

    model_config = _STRICT
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class StrategyItem(BaseModel):
    """One rule strategy; ``timeframe`` overrides the strategy's default."""

    model_config = _STRICT
    name: str
    timeframe: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class ExternalItem(BaseModel):
    """An external daily series (e.g. VIX) joined after a shift (default one day)."""

    model_config = _STRICT
    name: str
    source: str
    column: str = "close"
    shift: str = "1d"


def _items(value: Any, key: str) -> list[dict[str, Any]]:
    """Mapping or list forms -> a list of ``{"name": ..., "params": {...}}``."""
    if value is None:
        return []
    if isinstance(value, dict):
        out = []
        for name, params in value.items():
            for p in params if isinstance(params, list) else [params]:
                out.append({"name": name, "params": dict(p or {})})
        return out
    if isinstance(value, list):
        out = []
        for entry in value:
            if isinstance(entry, str):
                out.append({"name": entry})
            elif isinstance(entry, dict) and "name" in entry:
                out.append(entry)
            elif isinstance(entry, dict) and len(entry) == 1:
                ((name, params),) = entry.items()
                out.append({"name": name, "params": dict(params or {})})
            else:
                raise ConfigError(f"{key}: cannot read entry {entry!r}")
        return out
    raise ConfigError(f"{key}: expected a mapping or a list, got {type(value).__name__}")


class FeatureSpec(BaseModel):
    """The list of features and strategies a Dataset is built from."""

    model_config = _STRICT
    version: Literal[1] = 1
    features: list[FeatureItem] = Field(default_factory=list)
    strategies: list[StrategyItem] = Field(default_factory=list)
    external: list[ExternalItem] = Field(default_factory=list)
    normalization: Literal["default", "zscore"] = "default"

    @model_validator(mode="before")
    @classmethod
    def _accept_short_forms(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "features" in data:
            data["features"] = _items(data["features"], "features")
        if "strategies" in data:
            strategies = []
            for item in _items(data["strategies"], "strategies"):
                params = dict(item.get("params", {}))
                tf = item.get("timeframe", params.pop("timeframe", None))
                strategies.append({"name": item["name"], "timeframe": tf, "params": params})
            data["strategies"] = strategies
        return data

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def default(cls) -> FeatureSpec:
        """The default spec: what the source documents use (see docs/features.md)."""
        return cls.model_validate(DEFAULT_SPEC)

    @classmethod
    def from_yaml(cls, source: str | Path) -> FeatureSpec:
        """Load from a YAML file path or a YAML string."""
        text = source
        if isinstance(source, Path) or (
            isinstance(source, str)
            and "\n" not in source
            and Path(source).suffix in (".yaml", ".yml")
        ):
            path = Path(source)
            if not path.exists():
                raise ConfigError(f"{path}: no such feature spec file")
            text = path.read_text()
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"feature spec is not valid YAML: {exc}") from exc
        if isinstance(data, dict) and "features" not in data and "strategies" not in data:
            data = data.get("feature_spec", data)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "spec"
            raise ConfigError(f"feature spec: {where}: {first['msg']}") from exc
        spec.resolved()  # unknown names / parameters fail here, naming them
        return spec

    # -- canonical form -----------------------------------------------------------------------
    def resolved(self) -> dict[str, Any]:
        """The spec with every default filled in (what the hash is computed from)."""
        from rltrade.features.base import FEATURES
        from rltrade.features.strategies import make_strategy

        feats = []
        for item in self.features:
            if item.name not in FEATURES:
                raise ConfigError(
                    f"feature spec: unknown feature {item.name!r}; available: {', '.join(FEATURES)}"
                )
            feats.append({"name": item.name, "params": FEATURES[item.name].resolve(item.params)})
        strategies = []
        for item in self.strategies:
            st = make_strategy(item.name, item.timeframe, **item.params)
            strategies.append(
                {"name": item.name, "timeframe": st.run_timeframe, "params": st.params}
            )
        return {
            "version": 1,
            "features": feats,
            "strategies": strategies,
            "external": [e.model_dump() for e in self.external],
            "normalization": self.normalization,
        }

    def hash(self) -> str:
        """Stable sha256 (hex) of the resolved spec."""
        canonical = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def strategy_order(self) -> list[str]:
        return [s.name for s in self.strategies]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.resolved(), sort_keys=False)


DEFAULT_SPEC: dict[str, Any] = {
    "features": [
        {"name": "macd", "params": {"fast": 12, "slow": 26, "signal": 9}},
        {"name": "bbands", "params": {"period": 20, "nbdev": 2.0}},
        {"name": "rsi", "params": {"period": 14}},
        {"name": "rsi", "params": {"period": 30}},
        {"name": "adx", "params": {"period": 30}},
        {"name": "cci", "params": {"period": 30}},
        {"name": "sma", "params": {"period": 30}},
        {"name": "sma", "params": {"period": 60}},
        {"name": "atr", "params": {"period": 14}},
        {"name": "returns", "params": {"periods": [1, 5, 20]}},
        {"name": "log_return", "params": {}},
        {"name": "realized_vol", "params": {"window": 20}},
        {"name": "volume_ratio", "params": {"window": 20}},
        {"name": "turbulence", "params": {}},
        {"name": "regime", "params": {}},
        {"name": "time", "params": {}},
        {"name": "open_interest", "params": {}},
        {"name": "funding", "params": {}},
    ],
    "strategies": [
        {"name": "awesome_macd"},
        {"name": "bbands_rsi"},
        {"name": "ott"},
        {"name": "supertrend"},
        {"name": "atr_breakout"},
    ],
    "normalization": "default",
}
