"""Fly registry credentials and login: tokens from the argument, the environment or Prefect
blocks, and ``flyctl auth docker`` as the last resort (see :mod:`prefect_flyimage.fly`)."""

from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING, Any, Optional, Union

from pydantic import SecretStr

from .credentials import RegistryCredentials, registry_host
from .errors import AuthenticationError, InvalidArgumentError, MissingFlyToken, RegistryUnavailable

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "CREDENTIALS_BLOCK_ENV",
    "DEFAULT_REGISTRY",
    "FLY_USERNAME",
    "LOGIN_TIMEOUT",
    "REGISTRY_ENV",
    "TOKEN_ENV",
    "TOKEN_SECRET_ENV",
    "TokenLike",
    "fly_credentials",
    "fly_registry_host",
    "resolve_fly_token",
]

logger = logging.getLogger("prefect_flyimage.fly")

#: Fly's registry; ``$FLY_REGISTRY_HOST`` or ``registry=`` override it.
DEFAULT_REGISTRY = "registry.fly.io"
#: The Fly registry ignores the user name; ``x`` is what ``flyctl auth docker`` writes.
FLY_USERNAME = "x"

#: Environment variables consulted, in order, after the ``token`` argument.
TOKEN_ENV = "FLY_API_TOKEN"
CREDENTIALS_BLOCK_ENV = "PREFECT_FLYIMAGE_FLY_CREDENTIALS_BLOCK"
TOKEN_SECRET_ENV = "PREFECT_FLYIMAGE_FLY_TOKEN_SECRET"
REGISTRY_ENV = "FLY_REGISTRY_HOST"

#: Seconds ``docker login`` / ``flyctl auth docker`` may take.
LOGIN_TIMEOUT = 60.0

TokenLike = Union[str, SecretStr, None]


def fly_registry_host(registry: Optional[str] = None) -> str:
    """The registry host: ``registry``, else ``$FLY_REGISTRY_HOST``, else ``registry.fly.io``.

    URLs are reduced to ``host[:port]`` (``https://registry.fly.io/`` -> ``registry.fly.io``).
    """
    if registry is not None and not isinstance(registry, str):
        raise InvalidArgumentError("registry", f"must be a str such as 'registry.fly.io', not {type(registry).__name__}")
    value = registry or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY
    host = registry_host(value)
    if not host:
        raise InvalidArgumentError("registry", f"{value!r} names no host")
    return host


# ---- credentials -----------------------------------------------------------------------


def _secret_text(value: TokenLike) -> Optional[str]:
    if value is not None and not isinstance(value, (str, SecretStr)):
        raise InvalidArgumentError("token", f"must be a str or SecretStr, not {type(value).__name__}")  # never its value
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    # Tokens pasted from files or `fly tokens create` carry a trailing newline.
    value = (value or "").strip()
    return value or None


def _load_block(kind: str, name: str, env: str) -> Any:
    """Load a Prefect block by name; failures name the block and the variable, never a secret."""
    try:
        if kind == "credentials":
            from prefect_docker.credentials import DockerRegistryCredentials

            return DockerRegistryCredentials.load(name, _sync=True)
        from prefect.blocks.system import Secret

        return Secret.load(name, _sync=True)
    except Exception as exc:  # noqa: BLE001 - any load failure is a credentials problem
        raise AuthenticationError(
            f"cannot load the Prefect block {name!r} named by ${env}: {type(exc).__name__}: {exc}. "
            f"Create it, fix ${env}, or pass the Fly API token another way."
        ) from None


def fly_credentials(token: TokenLike = None, *, registry: Optional[str] = None) -> Optional[RegistryCredentials]:
    """Credentials for the Fly registry, or ``None`` when no token is configured.

    Looked up in this order:

    1. ``token`` (a string or :class:`pydantic.SecretStr`);
    2. ``$FLY_API_TOKEN``;
    3. the prefect-docker ``DockerRegistryCredentials`` block named by
       ``$PREFECT_FLYIMAGE_FLY_CREDENTIALS_BLOCK`` (its password is the token, its
       user name is used when set);
    4. the ``prefect.blocks.system.Secret`` block named by ``$PREFECT_FLYIMAGE_FLY_TOKEN_SECRET``.

    The user name is ``x`` unless a block sets one; the host is :func:`fly_registry_host`.
    """
    host = fly_registry_host(registry)
    secret = _secret_text(token) or _secret_text(os.environ.get(TOKEN_ENV))
    username = FLY_USERNAME
    if secret is None and os.environ.get(CREDENTIALS_BLOCK_ENV):
        block = _load_block("credentials", os.environ[CREDENTIALS_BLOCK_ENV], CREDENTIALS_BLOCK_ENV)
        secret = _secret_text(block.password)
        username = block.username or FLY_USERNAME
    if secret is None and os.environ.get(TOKEN_SECRET_ENV):
        block = _load_block("secret", os.environ[TOKEN_SECRET_ENV], TOKEN_SECRET_ENV)
        value = block.get()
        secret = _secret_text(value if isinstance(value, (str, SecretStr)) else None)
    if secret is None:
        return None
    return RegistryCredentials(host, username, secret)


def resolve_fly_token(token: TokenLike = None) -> Optional[str]:
    """The Fly API token from ``token``, the environment or a Prefect block (see :func:`fly_credentials`)."""
    creds = fly_credentials(token)
    return creds.secret if creds else None


def _missing_token(host: str) -> MissingFlyToken:
    return MissingFlyToken(
        f"no Fly API token for {host}: pass token=..., set ${TOKEN_ENV}, name a prefect-docker "
        f"DockerRegistryCredentials block in ${CREDENTIALS_BLOCK_ENV} or a Secret block in "
        f"${TOKEN_SECRET_ENV}, or install flyctl and run `flyctl auth login`. "
        "Create a token with `fly tokens create deploy -a <app>`.",
        host,
    )


def _flyctl_auth_docker(host: str) -> None:
    """``flyctl auth docker``: flyctl writes the registry login into the docker config itself."""
    from .engine import run_streaming

    # Only `flyctl`: a bare `fly` on PATH may be another tool (Concourse's CLI is `fly`).
    flyctl = shutil.which("flyctl")
    if flyctl is None:
        raise _missing_token(host)
    logger.info("no Fly API token configured; logging in with `flyctl auth docker` (%s)", flyctl)
    code, tail, _, timed_out = run_streaming([flyctl, "auth", "docker"], timeout=LOGIN_TIMEOUT)
    output = "\n".join(tail)
    if timed_out:
        raise RegistryUnavailable(
            f"`flyctl auth docker` timed out after {LOGIN_TIMEOUT:.0f}s", host, returncode=code, stderr=output
        )
    if code != 0:
        raise AuthenticationError(
            f"`flyctl auth docker` failed (rc={code}): {tail[-1] if tail else 'no output'}. "
            f"Run `flyctl auth login` or set ${TOKEN_ENV}.",
            host,
            returncode=code,
            stderr=output,
        )


def _login(token: TokenLike, registry: Optional[str], engine: Optional["Engine"]) -> None:
    """Store a login for the Fly registry in the docker config (``docker login`` or flyctl)."""
    host = fly_registry_host(registry)
    creds = _credentials_or_flyctl(token, host)
    if creds is None:
        return
    from .engine import Engine

    logger.info("logging in to %s as %r (token from %s)", host, creds.username, _token_source(token))
    if engine is not None:
        engine.cli_login(creds, timeout=LOGIN_TIMEOUT)
    else:
        with Engine() as own:
            own.cli_login(creds, timeout=LOGIN_TIMEOUT)
    logger.info("docker is logged in to %s", host)


def _token_source(token: TokenLike) -> str:
    # Which source won, for the log line (never the value).
    if _secret_text(token):
        return "the token argument"
    if _secret_text(os.environ.get(TOKEN_ENV)):
        return f"${TOKEN_ENV}"
    if os.environ.get(CREDENTIALS_BLOCK_ENV):
        return f"the block named by ${CREDENTIALS_BLOCK_ENV}"
    return f"the Secret block named by ${TOKEN_SECRET_ENV}"


def _credentials_or_flyctl(token: TokenLike, host: str) -> Optional[RegistryCredentials]:
    """Credentials for the pipeline; without a token, let flyctl configure docker (or raise)."""
    creds = fly_credentials(token, registry=host)
    if creds is None:
        _flyctl_auth_docker(host)  # docker-py then reads the docker config flyctl wrote
    return creds
