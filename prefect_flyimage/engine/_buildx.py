"""Prefect's buildx build options turned into ``docker buildx build`` flags."""

from __future__ import annotations

import os
import re
from typing import Any, Optional

__all__ = ["BUILDX_OPTIONS", "buildx_flags", "cache_refused", "load_output", "registry_cache_options"]

#: ``PREFECT_FLYIMAGE_REGISTRY_CACHE``: ``0``/``false``/``off`` turns the registry layer
#: cache off; another value is the cache ref (``{repository}`` in it: the repository).
DEFAULT_CACHE_REF = "{repository}-buildcache:cache"
_CACHE_ERROR = re.compile(r"^ > exporting cache to registry:|^#\d+ ERROR: (error writing|failed to export)", re.IGNORECASE)

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


#: ``PREFECT_FLYIMAGE_LAYER_COMPRESSION``: gzip level (0-9) of the layers a buildx build
#: writes into the daemon's image store, or ``default`` for BuildKit's own (gzip's 6).
DEFAULT_LAYER_COMPRESSION = "1"


def load_output() -> list[str]:
    """The output flag of a buildx build that loads its image into the daemon: ``--load``
    with the layers gzipped at level 1 unless ``PREFECT_FLYIMAGE_LAYER_COMPRESSION`` says
    otherwise. With the containerd image store the layers are compressed at build time,
    and BuildKit's default level costs most of a first build (2,000 files, 20 MiB of
    code: 6-9 s at level 6, 0.6-1 s at level 1, loaded 2-core machine); the layers stay
    plain gzip (any runtime pulls them), a little larger. The classic image store
    ignores the setting (it compresses at push)."""
    level = os.environ.get("PREFECT_FLYIMAGE_LAYER_COMPRESSION", "").strip().lower() or DEFAULT_LAYER_COMPRESSION
    if level == "default":
        return ["--load"]
    if not (level.isdigit() and 0 <= int(level) <= 9):
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError("PREFECT_FLYIMAGE_LAYER_COMPRESSION", f"must be a gzip level 0-9 or 'default', not {level!r}")
    return ["--output", f"type=docker,compression=gzip,compression-level={int(level)}"]


def registry_cache_options(repository: str) -> Optional[dict[str, str]]:
    """The default registry layer cache of a pushing buildx build: imported from and
    exported (``mode=max``: every stage's layers) to a ref beside the repository, so a
    fresh CI runner reuses the layers of the last push. ``ignore-error``: a registry
    that refuses the cache ref does not fail the build (:func:`cache_refused` tells)."""
    setting = os.environ.get("PREFECT_FLYIMAGE_REGISTRY_CACHE", "").strip()
    if setting.lower() in {"0", "false", "off", "no"}:
        return None
    if not setting:
        setting = DEFAULT_CACHE_REF
    ref = setting.format(repository=repository) if "{repository}" in setting else setting
    return {"cache_from": f"type=registry,ref={ref}", "cache_to": f"type=registry,ref={ref},mode=max,ignore-error=true"}


def cache_refused(tail: list[str]) -> Optional[str]:
    """The line saying the cache export failed (buildx went on without it), if any."""
    return next((line for line in tail if _CACHE_ERROR.search(line)), None)
