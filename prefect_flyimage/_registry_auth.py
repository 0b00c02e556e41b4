"""Registry authentication as Docker does it: Basic, or Bearer tokens from the challenge's realm.

An ``httpx.Auth`` flow. The first request to a registry goes with Basic credentials (when
there are any: one round trip for htpasswd registries); a ``401`` carrying
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` makes the flow fetch a token
from the realm (with the Basic credentials, or anonymously), cache it per repository scope
until it expires, and retry. Later requests to the same repository go with the cached
token at once. Tokens and passwords never appear in a message: every error here goes
through :func:`redact` with all of them.
"""

from __future__ import annotations

__all__ = ["RegistryAuth", "parse_challenge"]

import base64
import re
import threading
import time
from collections import deque
from typing import Generator, Optional

import httpx

from .credentials import RegistryCredentials
from .errors import AuthenticationError, RegistryError, RegistryUnavailable, redact

#: Distribution's default token lifetime when the issuer does not say (token spec: 60 s).
DEFAULT_TOKEN_LIFETIME = 60.0
#: Refresh a token this many seconds before it expires.
EXPIRY_MARGIN = 5.0

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_REPO_PATH = re.compile(r"^/v2/(.+?)/(?:manifests|blobs|tags)/")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ``("bearer", {"realm": "x", "service": "y"})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in _PARAM.finditer(rest)}
    return scheme.lower(), {k: v.replace('\\"', '"') for k, v in params.items()}


def _basic_header(credentials: RegistryCredentials) -> str:
    pair = f"{credentials.username}:{credentials.secret}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _scope_key(request: httpx.Request) -> str:
    """The pull scope of the repository a request addresses (``""`` for ``/v2/``)."""
    match = _REPO_PATH.match(request.url.path)
    return f"repository:{match.group(1)}:pull" if match else ""


class RegistryAuth(httpx.Auth):
    """Basic or Bearer auth for one registry, learnt from its challenges; thread-safe.

    ``credentials`` may be ``None`` (anonymous: tokens are fetched without Basic auth).
    ``secrets()`` lists everything to redact (the password and every token handed out).
    """

    requires_response_body = False

    def __init__(self, registry: str, credentials: Optional[RegistryCredentials], *, timeout: httpx.Timeout) -> None:
        self.registry = registry
        self.credentials = credentials
        self._timeout = timeout
        self._lock = threading.Lock()
        # Basic up front saves htpasswd registries a round trip; an identity token is never a password.
        basic = credentials is not None and not credentials.is_identity_token
        self._scheme: Optional[str] = "basic" if basic else None  # what the registry asked for last
        self._challenge: dict[str, str] = {}
        self._tokens: dict[str, tuple[str, float]] = {}  # scope key -> (token, expires at)
        self._issued: deque[str] = deque(maxlen=64)  # recent tokens, for redaction (bounded: long-lived workers)

    def secrets(self) -> list[str]:
        out = [self.credentials.secret] if self.credentials else []
        with self._lock:
            return out + list(self._issued)

    def _basic(self, request: httpx.Request) -> None:
        assert self.credentials is not None
        request.headers["Authorization"] = _basic_header(self.credentials)

    def _cached_token(self, key: str) -> Optional[str]:
        with self._lock:
            found = self._tokens.get(key)
        if found and found[1] - EXPIRY_MARGIN > time.monotonic():
            return found[0]
        return None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key = _scope_key(request)
        if self._scheme == "bearer":
            token = self._cached_token(key)
            if token:
                request.headers["Authorization"] = f"Bearer {token}"
        elif self._scheme == "basic" and self.credentials and not self.credentials.is_identity_token:
            self._basic(request)
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if not self.credentials or self.credentials.is_identity_token or self._scheme == "basic":
                return  # no (usable) credentials, or these were just refused: the caller reports the 401
            self._scheme = "basic"
            self._basic(request)
            yield request
        elif scheme == "bearer" and params.get("realm"):
            self._scheme = "bearer"
            token_request = self._token_request(params)
            token_response = yield token_request
            token = self._read_token(token_response, params)
            with self._lock:
                self._tokens[key] = token
                self._issued.append(token[0])
            request.headers["Authorization"] = f"Bearer {token[0]}"
            yield request

    def _token_request(self, params: dict[str, str]) -> httpx.Request:
        query = {k: params[k] for k in ("service", "scope") if params.get(k)}
        if self.credentials and self.credentials.is_identity_token:
            # OAuth2 refresh-token grant, as the docker daemon does with an identity token.
            form = {**query, "grant_type": "refresh_token", "refresh_token": self.credentials.secret, "client_id": "prefect-flyimage"}
            return httpx.Request("POST", params["realm"], data=form)
        headers = {}
        if self.credentials:
            query["account"] = self.credentials.username
            headers["Authorization"] = _basic_header(self.credentials)
        return httpx.Request("GET", params["realm"], params=query, headers=headers)

    def _read_token(self, response: httpx.Response, params: dict[str, str]) -> tuple[str, float]:
        response.read()
        realm = params["realm"]
        secrets = self.secrets()
        if response.status_code in (401, 403):
            who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
            raise AuthenticationError(
                f"token server {realm} for registry {self.registry} refused {who} "
                f"(HTTP {response.status_code}); check the credentials for {self.registry}",
                self.registry,
            )
        if response.status_code >= 500:
            raise RegistryUnavailable(f"token server {realm} for registry {self.registry} answered HTTP {response.status_code}", self.registry)
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            token, lifetime = None, 0.0
        if response.status_code != 200 or not isinstance(token, str) or not token:
            text = redact(response.text, secrets)[:300]  # redact before cutting
            raise RegistryError(
                f"token server {realm} for registry {self.registry} gave no token (HTTP {response.status_code}): {text}",
                self.registry,
            )
        return token, time.monotonic() + lifetime
