"""Registry credentials where the docker CLI keeps them: ``$DOCKER_CONFIG/config.json``.

Resolution follows Docker (docker-py's ``AuthConfig``, which parses the file): the
registry's ``credHelpers`` entry, else the ``credsStore``, each a
``docker-credential-<name>`` program asked with the ``get`` protocol (server on stdin,
``{"Username", "Secret"}`` on stdout); else the base64 ``auths[registry].auth``.

Helpers are run here rather than through docker-py's ``Store`` because a helper that
hangs (a keychain prompt, a slow cloud API) must end in an error, not a hung deploy: they
get ``$PREFECT_FLYIMAGE_CREDENTIAL_HELPER_TIMEOUT`` seconds (30). Their answers are kept
for :data:`HELPER_CACHE_SECONDS` per process, so an unchanged redeploy does not spawn a
helper each time; a credential the registry refuses is fetched again at once
(:func:`lookup` with ``fresh=True``).
"""

from __future__ import annotations

__all__ = ["HELPER_CACHE_SECONDS", "HELPER_TIMEOUT_ENV", "Found", "clear_cache", "config_file", "lookup"]

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import docker.auth
import docker.errors
# Bound by name: Prefect lazy-imports `docker`, and the lazy module can lose its `utils.config` attribute.
from docker.auth import load_config, resolve_index_name
from docker.utils.config import find_config_file

from ._args import env_seconds
from .errors import AuthenticationError

logger = logging.getLogger("prefect_flyimage")

HELPER_TIMEOUT_ENV = "PREFECT_FLYIMAGE_CREDENTIAL_HELPER_TIMEOUT"
DEFAULT_HELPER_TIMEOUT = 30.0
#: How long a helper's answer is reused within a process.
HELPER_CACHE_SECONDS = 300.0
#: What Docker calls Docker Hub in config files and helper requests.
INDEX_SERVER = "https://index.docker.io/v1/"
_HUB_NAMES = {None, "", "docker.io", "index.docker.io", "registry-1.docker.io", INDEX_SERVER}
_NOT_FOUND = ("credentials not found", "no credentials", "not found in native keychain")


@dataclass(frozen=True)
class Found:
    """Credentials found for a registry; ``helper`` names the program that gave them (or None)."""

    username: str
    secret: str = field(repr=False)
    helper: Optional[str] = None


_lock = threading.Lock()
_configs: dict[tuple[str, int], Any] = {}  # (path, mtime_ns) -> docker.auth.AuthConfig
_answers: dict[tuple[str, str], tuple[Optional[Found], float]] = {}  # (helper path, server) -> answer, time


def clear_cache() -> None:
    """Forget every cached config and helper answer (tests; a changed helper)."""
    with _lock:
        _configs.clear()
        _answers.clear()


def config_file() -> Optional[str]:
    """The config.json Docker would read (``$DOCKER_CONFIG``, else ``~/.docker``), if it exists."""
    return find_config_file()


def _auth_config() -> Optional[Any]:
    path = config_file()
    if not path:
        return None
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return None
    with _lock:
        cached = _configs.get((path, mtime))
    if cached is not None:
        return cached
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise ValueError("the top level is not a JSON object")
        parsed = load_config(config_dict=data)
    except (OSError, ValueError, docker.errors.DockerException) as exc:
        # As the docker CLI does: warn, naming the file, and go on without stored logins.
        logger.warning("ignoring docker config %s: %s", path, exc)
        return None
    with _lock:
        _configs[(path, mtime)] = parsed
    return parsed


def _helper_timeout() -> float:
    return env_seconds(HELPER_TIMEOUT_ENV, DEFAULT_HELPER_TIMEOUT)


def _run_helper(name: str, exe: str, server: str, registry: str) -> Optional[Found]:
    program = f"docker-credential-{name}"
    timeout = _helper_timeout()
    try:
        proc = subprocess.run(
            [exe, "get"], input=server.encode(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AuthenticationError(
            f"credential helper {program} did not answer within {timeout:g}s for {registry} "
            f"(set ${HELPER_TIMEOUT_ENV} for a slower one)",
            registry,
        ) from None
    except OSError as exc:
        raise AuthenticationError(f"cannot run credential helper {program} for {registry}: {exc.strerror}", registry) from None
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        text = (out.strip() or proc.stderr.decode("utf-8", "replace").strip())[-300:]
        if any(marker in text.lower() for marker in _NOT_FOUND):
            return None
        raise AuthenticationError(
            f"credential helper {program} failed for {registry} (exit {proc.returncode}): {text}", registry
        )
    try:
        data = json.loads(out)
        username, secret = data["Username"], data["Secret"]
    except (ValueError, KeyError, TypeError):
        # Never echo the output: it may hold a secret in a shape we did not expect.
        raise AuthenticationError(
            f"credential helper {program} gave {registry} an answer that is not "
            '{"Username": ..., "Secret": ...} JSON', registry,
        ) from None
    if not username and not secret:
        return None  # docker-credential-pass answers unknown servers with empty fields
    return Found(str(username), str(secret), program)


def _from_helper(name: str, registry: str, server: str, fresh: bool) -> Optional[Found]:
    exe = shutil.which(f"docker-credential-{name}")
    if exe is None:
        raise AuthenticationError(
            f"the docker config names credential helper docker-credential-{name} for {registry}, "
            "but it is not on PATH; install it or remove it from the config",
            registry,
        )
    key = (exe, server)
    now = time.monotonic()
    if not fresh:
        with _lock:
            cached = _answers.get(key)
        if cached is not None and now - cached[1] < HELPER_CACHE_SECONDS:
            return cached[0]
    found = _run_helper(name, exe, server, registry)
    with _lock:
        _answers[key] = (found, now)
    return found


def lookup(registry: Optional[str], *, fresh: bool = False) -> Optional[Found]:
    """Credentials the docker config holds for ``registry`` (``host[:port]``; None = Docker Hub).

    ``fresh=True`` asks the credential helper again instead of reusing its last answer.
    Raises :class:`AuthenticationError` when a configured helper is missing, fails or hangs.
    """
    config = _auth_config()
    if config is None or config.is_empty:
        return None
    hub = registry in _HUB_NAMES
    key = INDEX_SERVER if hub else registry
    helper = config.cred_helpers.get(key) or (config.cred_helpers.get("docker.io") if hub else None) or config.creds_store
    if helper:
        found = _from_helper(helper, registry or "docker.io", key, fresh)
        if found is not None:
            return found
    # The plain entries, matched as docker-py does (URLs reduced to their host).
    wanted = "docker.io" if hub else registry
    for name, entry in config.auths.items():
        if resolve_index_name(name) == wanted and entry.get("username") is not None:
            return Found(entry["username"], entry.get("password") or "")
        if resolve_index_name(name) == wanted and entry.get("IdentityToken"):
            return Found("<token>", entry["IdentityToken"])
    return None

