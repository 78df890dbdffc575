"""What counts as a credential in a settings mapping: one rule for every place that reads one.

Secrets (exchange keys, passwords, tokens) come from the environment only: a key that looks like
a credential is refused in a run config and in an exchange config, at any depth, and its value
is masked in reports. A key looks like a credential when, lower-cased with everything but
letters and digits removed (``X-MBX-APIKEY`` -> ``xmbxapikey``, ``api_key`` -> ``apikey``), it
contains one of :data:`CREDENTIAL_PARTS` or is one of :data:`CREDENTIAL_NAMES`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CREDENTIAL_NAMES",
    "CREDENTIAL_PARTS",
    "credential_paths",
    "looks_like_credential",
]

#: A key containing any of these (normalised) looks like a credential.
CREDENTIAL_PARTS = (
    "apikey", "apisecret", "secret", "passw", "passphrase", "pwd", "token", "privatekey",
    "credential", "authorization", "bearer", "accesskey", "sessionkey", "signingkey",
    "mnemonic", "seedphrase",
)
#: Keys that are credentials by exact (normalised) name: ccxt's ``uid``, ``login``,
#: ``twofa`` and ``walletAddress``.
CREDENTIAL_NAMES = frozenset({"uid", "login", "twofa", "walletaddress", "auth"})
#: Normalised keys that contain a credential word but are not one (ccxt's rate limiter).
_NOT_CREDENTIALS = frozenset({"tokenbucket"})
_NON_ALNUM = re.compile(r"[^a-z0-9]")


def _normalise(key: Any) -> str:
    return _NON_ALNUM.sub("", str(key).lower())


def looks_like_credential(key: Any) -> bool:
    """Whether a settings key names a credential (case and separators ignored).

    :param key: a mapping key (``"apiKey"``, ``"X-MBX-APIKEY"``, ``"timeout"``...).
    """
    norm = _normalise(key)
    if not norm or norm in _NOT_CREDENTIALS:
        return False
    return norm in CREDENTIAL_NAMES or any(part in norm for part in CREDENTIAL_PARTS)


def credential_paths(obj: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every key in ``obj`` (mappings and lists, at any depth) that looks like a
    credential: ``{"headers": {"X-MBX-APIKEY": ...}}`` -> ``["headers.X-MBX-APIKEY"]``.

    :param obj: a settings tree (dicts, lists, scalars).
    :param prefix: prepended to every path (e.g. the section name).
    """
    found: list[str] = []
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if looks_like_credential(key):
                found.append(path)
            else:
                found.extend(credential_paths(value, path))
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            found.extend(credential_paths(value, f"{prefix}[{i}]"))
    return found
