"""The base of every configuration model: strict pydantic, errors as :class:`ConfigError`.

Frozen models, unknown keys forbidden; a validation error becomes one
:class:`~rltrade.errors.ConfigError` naming each key with its section (``engine.costs.taker_fee:
...``), so a YAML typo is reported as such, never as a pydantic traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from rltrade.errors import ConfigError

__all__ = ["StrictModel", "config_error"]


def config_error(exc: ValidationError, label: str) -> ConfigError:
    """One :class:`ConfigError` listing every problem of ``exc`` as ``label.key: message``."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling against the documented fields"
        lines.append(f"{label}.{key}: {msg}")
    return ConfigError(f"invalid {label} config: " + "; ".join(lines))


class StrictModel(BaseModel):
    """Frozen, unknown keys forbidden, pydantic errors turned into :class:`ConfigError`.

    Subclasses set ``_label`` (the config section they are, e.g. ``"engine"``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    _label: ClassVar[str] = "config"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, self._label) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Validate a mapping, turning errors into :class:`ConfigError`."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise config_error(exc, cls._label) from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Any:
        """Build from a plain mapping (a YAML section); ``None`` gives the defaults."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls._label}: expected a mapping, got {type(data).__name__}")
        return cls.model_validate(dict(data))
