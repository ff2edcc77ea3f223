"""Credentials are never written down: params refuse values that hold a password or token (params.yaml,
dvc.lock, git refs and MLflow params all keep what params hold), a param instead names the environment
variable that holds such a value (`tune.storage_env`, `mlflow.tracking_uri_env`, as `llm.anthropic.api_key_env`
names the API key's), and `redact` hides them in every text that is printed, logged or sent to MLflow."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from .errors import ParamsError, RagtuneError

# The name of an environment variable, for the `*_env` params.
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

# scheme://user:password@ (the user may be empty, the password runs to the last @ before the host).
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^\s/]*)@")
# ?password=..., &token=..., ... in a query string.
_QUERY = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|pass|secret|token|access_token|api[_-]?key|apikey|key|sig|signature"
    r"|sslpassword)=)(?P<value>[^&;#\s]+)",
    re.IGNORECASE,
)
# Values read from the environment through a `*_env` param or the API key: hidden wherever they turn up.
_KNOWN: set[str] = set()

# Where a refused value should go instead, by dotted param.
_ENV_TWIN = {
    "tune.storage": ("tune.storage_env", "RAGTUNE_TUNE_STORAGE"),
    "mlflow.tracking_uri": ("mlflow.tracking_uri_env", "RAGTUNE_TRACKING_URI"),
}
_HINTS = {
    "llm.anthropic.base_url": "leave llm.anthropic.base_url null and export ANTHROPIC_BASE_URL with the URL instead",
}


def redact(text: str) -> str:
    """`text` with the password of every URL, every secret query value and every value read from the
    environment as a secret replaced by ***. The one helper for every URL or message that is shown."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:***@" if m["password"] else m[0], text)
    text = _QUERY.sub(lambda m: f"{m['head']}***", text)
    for value in _KNOWN:
        text = text.replace(value, "***")
    return text


def holds_secret(value: str) -> bool:
    """Whether a param value carries a password (user:password@ in a URL) or a secret query value."""
    m = _USERINFO.search(value)
    return bool((m and m["password"]) or _QUERY.search(value))


def remember(value: str) -> str:
    """Mark a value (an API key, a URL read from the environment) as secret for `redact`; returns it."""
    if len(value) >= 6:
        _KNOWN.add(value)
        m = _USERINFO.search(value)
        if m and len(m["password"]) >= 4:
            _KNOWN.add(m["password"])
    return value


def from_env(var: str, param: str, example: str = "") -> str:
    """The value of environment variable `var`, which `param` names; an error saying how to set it when it is
    unset or empty. The value is remembered as a secret."""
    value = os.environ.get(var, "").strip()
    if not value:
        raise RagtuneError(
            f"{param} names the environment variable {var}, which is not set; export it before running"
            + (f" (e.g. export {var}='{example}')" if example else "")
            + f", or set {param}: null"
        )
    return remember(value)


def _strings(prefix: str, obj: Any) -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(f"{prefix}.{k}", v)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _strings(f"{prefix}.{i}", v)
    elif isinstance(obj, str):
        yield prefix, obj


def refuse_secrets(section: str, values: Any, source: str) -> None:
    """ParamsError when any string in a section's params holds a password or token, saying where it goes
    instead. `values` is the section as plain data (dicts, lists, strings)."""
    for key, value in _strings(section, values):
        if not holds_secret(value):
            continue
        if key in _ENV_TWIN:
            twin, var = _ENV_TWIN[key]
            how = (
                f"export the URL in an environment variable and name that variable in {twin} instead "
                f"(export {var}='{redact(value)}' with the real password; {twin}: {var}; {key}: null)"
            )
        else:
            how = _HINTS.get(key, "remove it and give the credential through the environment")
        raise ParamsError(
            f"{source}: {key} holds a password or token ({redact(value)}); params are written to dvc.lock, "
            f"git and MLflow, so they must not hold one: {how}"
        )
