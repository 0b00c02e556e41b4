"""Prefect's buildx build options turned into ``docker buildx build`` flags."""

from __future__ import annotations

from typing import Any

__all__ = ["BUILDX_OPTIONS", "buildx_flags"]

#: Prefect's buildx build options (python-on-whales' names) the engine takes in
#: ``extra`` for BuildKit builds through ``docker buildx build``. They decide how the image
#: is built, not what it is: none enters the plan hash.
BUILDX_OPTIONS = frozenset({"secrets", "ssh", "cache_from", "cache_to"})


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _cache_spec(value: Any) -> str:
    """python-on-whales' cache value: ``"type=registry,ref=..."``, a bare ref, or a dict."""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    text = str(value)
    return text if "=" in text else f"type=registry,ref={text}"


def buildx_flags(opts: dict[str, Any]) -> list[str]:
    """``docker buildx build`` flags for Prefect's buildx options. Secrets are references
    (``id=x,src=path`` or ``id=x,env=VAR``): no secret value reaches the command line."""
    flags: list[str] = []
    for secret in _as_list(opts.get("secrets") or []):
        if "=" not in str(secret):
            raise ValueError(f"secrets: {secret!r} must look like 'id=NAME,src=PATH' or 'id=NAME,env=VAR'")
        flags += ["--secret", str(secret)]
    for ssh in _as_list(opts.get("ssh") or []):
        flags += ["--ssh", str(ssh)]
    for value in _as_list(opts.get("cache_from") or []):
        flags += ["--cache-from", _cache_spec(value)]
    for value in _as_list(opts.get("cache_to") or []):
        flags += ["--cache-to", _cache_spec(value)]
    return flags
