"""Registry credentials, from arguments, Prefect blocks, plain dicts or the docker config.

The password is held in a :class:`pydantic.SecretStr` so it never shows in a repr,
a log line or a traceback. :func:`resolve_credentials` is what the pipeline uses: the
credentials given, else those the docker CLI would use for the registry (credential
helpers, ``credsStore``, ``auths``; see :mod:`._docker_config`). :func:`retry_refused`
asks a credential helper once more when the registry refuses what it handed out.
"""

from __future__ import annotations

__all__ = [
    "CredentialsLike",
    "RegistryCredentials",
    "as_credentials",
    "docker_config_credentials",
    "refetch",
    "registry_host",
    "resolve_credentials",
    "retry_refused",
]

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, TypeVar, Union
from urllib.parse import urlparse

from pydantic import SecretStr

from . import _docker_config
from .errors import AuthenticationError, InvalidArgumentError

logger = logging.getLogger("prefect_flyimage")
T = TypeVar("T")
#: The user name a credential helper gives for an identity (OAuth refresh) token.
TOKEN_USERNAME = "<token>"


def registry_host(url_or_host: str) -> str:
    """``https://host:5000/path`` or ``host:5000`` -> ``host:5000`` (what Docker keys auth by)."""
    if not isinstance(url_or_host, str):
        raise InvalidArgumentError("registry", f"must be a str such as 'ghcr.io' or 'https://host:5000', not {type(url_or_host).__name__}")
    text = url_or_host.strip()
    if "://" in text:
        return urlparse(text).netloc
    return text.split("/", 1)[0]


@dataclass(frozen=True)
class RegistryCredentials:
    """Username and password (or token) for one registry.

    ``helper`` names the ``docker-credential-*`` program that handed them out (``None``
    when given directly or read from the config file): only those are fetched again
    when refused. A username of ``<token>`` marks an identity (OAuth refresh) token.
    """

    registry: str
    username: str
    password: SecretStr
    helper: Optional[str] = field(default=None, compare=False)

    def __init__(
        self, registry: str, username: str, password: Union[str, SecretStr], *, helper: Optional[str] = None
    ) -> None:
        # Typed errors naming the argument; the password's value is never shown.
        if not isinstance(registry, str) or not registry_host(registry):
            raise InvalidArgumentError("registry", f"must name a registry host such as 'ghcr.io', not {registry!r:.60}")
        if not isinstance(username, str) or not username:
            raise InvalidArgumentError("username", f"must be a non-empty str, not {type(username).__name__}")
        if not isinstance(password, (str, SecretStr)) or not (
            password.get_secret_value() if isinstance(password, SecretStr) else password
        ):
            raise InvalidArgumentError("password", f"must be a non-empty str or SecretStr, not {type(password).__name__}")
        object.__setattr__(self, "registry", registry_host(registry))
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "password", password if isinstance(password, SecretStr) else SecretStr(password))
        object.__setattr__(self, "helper", helper)

    def __repr__(self) -> str:
        via = f", helper={self.helper!r}" if self.helper else ""
        return f"RegistryCredentials(registry={self.registry!r}, username={self.username!r}, password='**********'{via})"

    @property
    def is_identity_token(self) -> bool:
        """True for an identity token (exchanged for registry tokens, never sent as a password)."""
        return self.username == TOKEN_USERNAME

    def auth_config(self) -> dict[str, str]:
        """The ``auth_config`` dict docker-py's push, pull and distribution calls take."""
        if self.is_identity_token:
            return {"identitytoken": self.password.get_secret_value(), "serveraddress": self.registry}
        return {
            "username": self.username,
            "password": self.password.get_secret_value(),
            "serveraddress": self.registry,
        }

    @property
    def secret(self) -> str:
        """The password in clear, for redaction lists and ``--password-stdin``."""
        return self.password.get_secret_value()


CredentialsLike = Union[RegistryCredentials, Mapping[str, Any], Any, None]


def as_credentials(value: CredentialsLike, registry: Optional[str] = None) -> Optional[RegistryCredentials]:
    """Normalise credentials given as our type, a prefect-docker block or a dict.

    Accepts :class:`RegistryCredentials`, prefect-docker's ``DockerRegistryCredentials``
    (or anything with ``username``/``password``/``registry_url``), a dict with those keys,
    or ``None``. ``registry`` fills in the host when the value has none.
    """
    if value is None or isinstance(value, RegistryCredentials):
        return value
    if isinstance(value, Mapping):
        get = value.get
    else:
        def get(key: str, default: Any = None) -> Any:
            return getattr(value, key, default)
    username = get("username")
    password = get("password")
    url = get("registry_url") or get("registry") or get("serveraddress") or registry
    if not username or password is None or not url:
        raise InvalidArgumentError(
            "credentials", "need username, password and registry_url "
            f"(got keys for {type(value).__name__}: username={'set' if username else 'missing'}, "
            f"password={'set' if password is not None else 'missing'}, registry_url={url or 'missing'})"
        )
    return RegistryCredentials(url, username, password)


def docker_config_credentials(registry: Optional[str], *, fresh: bool = False) -> Optional[RegistryCredentials]:
    """The credentials the docker CLI would use for ``registry`` (``None`` if it has none).

    ``registry`` is ``host[:port]`` (``None`` or ``docker.io``: Docker Hub). Read from
    ``$DOCKER_CONFIG/config.json`` (default ``~/.docker``): ``credHelpers[registry]``, else
    ``credsStore``, else ``auths[registry]``. ``fresh=True`` asks the helper again.
    Raises :class:`AuthenticationError` when a configured helper is missing, fails or hangs.
    """
    found = _docker_config.lookup(registry_host(registry) if registry else None, fresh=fresh)
    if found is None:
        return None
    return RegistryCredentials(registry or "docker.io", found.username, found.secret, helper=found.helper)


def resolve_credentials(value: CredentialsLike, registry: Optional[str] = None) -> Optional[RegistryCredentials]:
    """Credentials given in any accepted form (they win), else the docker config's for ``registry``.

    What existence checks and pushes use, so a ``docker login`` or a cloud registry's
    credential helper (ECR, GCR/Artifact Registry, ACR) works as it does for ``docker push``.
    """
    given = as_credentials(value, registry=registry)
    if given is not None or registry is None:
        return given
    return docker_config_credentials(registry)


def refetch(credentials: Optional[RegistryCredentials]) -> Optional[RegistryCredentials]:
    """Ask the credential helper that handed out ``credentials`` again.

    ``None`` when they did not come from a helper, or the helper now has nothing else
    to give (the same secret, or none): then there is nothing worth retrying with.
    """
    if credentials is None or credentials.helper is None:
        return None
    # Another caller may have fetched a newer one since: use it without asking again.
    cached = docker_config_credentials(credentials.registry)
    if cached is not None and cached.helper and cached.secret != credentials.secret:
        return cached
    fresh = docker_config_credentials(credentials.registry, fresh=True)
    if fresh is None or fresh.secret == credentials.secret:
        return None
    return fresh


def retry_refused(call: Callable[[Optional[RegistryCredentials]], T], credentials: Optional[RegistryCredentials]) -> T:
    """``call(credentials)``; when refused and they came from a helper, once more with a fresh fetch.

    Cloud registries hand out short-lived tokens through credential helpers: one that
    expired (or was rotated) since it was fetched is fetched again once; a second refusal
    is raised as the :class:`AuthenticationError` it is.
    """
    try:
        return call(credentials)
    except AuthenticationError:
        fresh = refetch(credentials)
        if fresh is None:
            raise
        assert credentials is not None
        logger.info("registry %s refused the credential from %s; fetched it again", credentials.registry, credentials.helper)
    return call(fresh)
