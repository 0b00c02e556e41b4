"""Registry credentials, from arguments, Prefect blocks or plain dicts.

The password is held in a :class:`pydantic.SecretStr` so it never shows in a repr,
a log line or a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union
from urllib.parse import urlparse

from pydantic import SecretStr

from .errors import InvalidArgumentError


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
    """Username and password (or token) for one registry."""

    registry: str
    username: str
    password: SecretStr

    def __init__(self, registry: str, username: str, password: Union[str, SecretStr]) -> None:
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

    def __repr__(self) -> str:
        return f"RegistryCredentials(registry={self.registry!r}, username={self.username!r}, password='**********')"

    def auth_config(self) -> dict[str, str]:
        """The ``auth_config`` dict docker-py's push, pull and distribution calls take."""
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
