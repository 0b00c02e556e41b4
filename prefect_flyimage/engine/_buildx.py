"""Prefect's buildx build options turned into ``docker buildx build`` flags, and the
credentials buildx needs for a registry cache.

buildx reads registry credentials only from the docker config (``$DOCKER_CONFIG``), never
from the daemon or from us. For the registry cache of an auth registry the pipeline hands
the push's credentials in (:data:`CACHE_AUTH`); :func:`buildx_auth_env` writes them into a
private docker config for that one build: a folder of mode 0700 inside the build's
temporary folder (removed with it), holding ``config.json`` (0600) with that registry's
``auth`` plus the user's other logins and helpers, so base images from other private
registries still resolve. The secret never reaches the command line, the logs or an error.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any, Optional

__all__ = ["BUILDX_OPTIONS", "CACHE_AUTH", "buildx_auth_env", "buildx_flags", "cache_refused", "load_output",
           "registry_cache_options", "registry_cache_ref"]

#: ``PREFECT_FLYIMAGE_REGISTRY_CACHE``: ``0``/``false``/``off`` turns the registry layer
#: cache off; another value is the cache ref (``{repository}`` in it: the repository).
DEFAULT_CACHE_REF = "{repository}-buildcache:cache"
_CACHE_ERROR = re.compile(
    r"^ > exporting cache to registry:|^#\d+ ERROR: (error writing|failed to export|failed to configure registry cache importer)",
    re.IGNORECASE,
)
#: The ``extra`` key under which the pipeline passes the cache registry's credentials
#: (a :class:`~prefect_flyimage.credentials.RegistryCredentials`) to a buildx build.
CACHE_AUTH = "_cache_auth"
_HUB = "https://index.docker.io/v1/"

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


def registry_cache_ref(repository: str) -> Optional[str]:
    """The default registry cache ref of ``repository`` (``None``: turned off)."""
    setting = os.environ.get("PREFECT_FLYIMAGE_REGISTRY_CACHE", "").strip()
    if setting.lower() in {"0", "false", "off", "no"}:
        return None
    if not setting:
        setting = DEFAULT_CACHE_REF
    return setting.format(repository=repository) if "{repository}" in setting else setting


def registry_cache_options(repository: str) -> Optional[dict[str, str]]:
    """The default registry layer cache of a pushing buildx build: imported from and
    exported (``mode=max``: every stage's layers) to a ref beside the repository, so a
    fresh CI runner reuses the layers of the last push. ``ignore-error``: a registry
    that refuses the cache ref does not fail the build (:func:`cache_refused` tells)."""
    ref = registry_cache_ref(repository)
    if ref is None:
        return None
    return {"cache_from": f"type=registry,ref={ref}", "cache_to": f"type=registry,ref={ref},mode=max,ignore-error=true"}


def cache_refused(tail: list[str]) -> Optional[str]:
    """The line saying the cache export failed (buildx went on without it), if any."""
    return next((line for line in tail if _CACHE_ERROR.search(line)), None)


def buildx_auth_env(opts: dict[str, Any], tmp: Path) -> dict[str, str]:
    """Environment for one buildx build whose registry cache needs credentials
    (``opts[CACHE_AUTH]``): ``DOCKER_CONFIG`` pointing at a private config under ``tmp``
    (the build's temporary folder, removed after it). ``{}`` when there are none."""
    creds = opts.get(CACHE_AUTH)
    if creds is None:
        return {}
    from ..credentials import registry_host

    host = registry_host(creds.registry)
    original = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        user = json.loads((original / "config.json").read_text())
        user = user if isinstance(user, dict) else {}
    except (OSError, ValueError):
        user = {}
    helpers = {k: v for k, v in (user.get("credHelpers") or {}).items() if k != host}
    auths: dict[str, Any] = {}
    for server, entry in (user.get("auths") or {}).items():
        if server == host or not isinstance(entry, dict):
            continue
        if entry.get("auth") or entry.get("identitytoken"):
            auths[server] = entry
        elif user.get("credsStore") and server not in helpers:
            helpers[server] = user["credsStore"]  # a login kept in the store: ask it per registry
    if creds.is_identity_token:
        auths[host] = {"identitytoken": creds.secret}
    else:
        auths[host] = {"auth": base64.b64encode(f"{creds.username}:{creds.secret}".encode()).decode("ascii")}
    folder = tmp / "docker-config"
    folder.mkdir(mode=0o700)
    config = folder / "config.json"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"auths": auths, **({"credHelpers": helpers} if helpers else {})}, f)
    if (original / "cli-plugins").is_dir():  # a buildx installed per user stays found
        (folder / "cli-plugins").symlink_to(original / "cli-plugins")
    env = {"DOCKER_CONFIG": str(folder)}
    if not os.environ.get("BUILDX_CONFIG"):
        env["BUILDX_CONFIG"] = str(original / "buildx")  # the user's builder selection stays
    return env
