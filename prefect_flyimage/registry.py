"""A small client of the Distribution (OCI) registry API: is this tag there, at which digest.

The unchanged-redeploy path asks the registry directly (one ``HEAD`` of the manifest)
instead of going through the daemon: no Docker client, no ``/_ping``, no daemon round trip.
The same credentials as the push are used; Basic and Bearer-token registries both work
(see :mod:`._registry_auth`). Clients are meant to be reused: :func:`shared_client` keeps
one per registry and credentials for the life of the process, so a second check costs
one request on an open connection.

Plain HTTP is used where Docker allows it: registries on loopback (``localhost``,
``127.0.0.0/8``, ``::1``) and those listed in ``$PREFECT_FLYIMAGE_INSECURE_REGISTRIES``
(comma-separated ``host[:port]`` or CIDR, like the daemon's ``insecure-registries``). Those
are tried over HTTPS too (without certificate checks), whichever answers first is kept.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_TIMEOUT",
    "INSECURE_ENV",
    "MANIFEST_MEDIA_TYPES",
    "TIMEOUT_ENV",
    "RegistryClient",
    "close_shared_clients",
    "registry_endpoint",
    "shared_client",
]

import atexit
import hashlib
import ipaddress
import os
import threading
from typing import Callable, Optional, TypeVar

import httpx

from ._registry_auth import RegistryAuth
from .credentials import RegistryCredentials, registry_host, retry_refused
from .errors import AuthenticationError, RegistryError, RegistryUnavailable, redact
from .names import ImageRef

T = TypeVar("T")

#: Seconds to wait for the registry (connect, and each read) unless told otherwise.
DEFAULT_TIMEOUT = 10.0
TIMEOUT_ENV = "PREFECT_FLYIMAGE_REGISTRY_TIMEOUT"
INSECURE_ENV = "PREFECT_FLYIMAGE_INSECURE_REGISTRIES"

#: What we accept for a manifest: without the v2/OCI types a registry may convert the
#: manifest (schema 1) and report another digest than the push did.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
_DOCKER_HUB = {None, "docker.io", "index.docker.io", "registry-1.docker.io"}


def registry_endpoint(registry: Optional[str]) -> str:
    """The host to talk to for ``registry`` (``None`` and ``docker.io`` are Docker Hub)."""
    return "registry-1.docker.io" if registry in _DOCKER_HUB else registry_host(registry or "")


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_loopback(host: str) -> bool:
    name = _hostname(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _listed_insecure(host: str) -> bool:
    name = _hostname(host)
    for entry in os.environ.get(INSECURE_ENV, "").replace(",", " ").split():
        if entry in (host, name):
            return True
        try:
            if ipaddress.ip_address(name) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _default_timeout() -> float:
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"${TIMEOUT_ENV} must be a number of seconds, not {value!r}") from None
    if seconds <= 0:
        raise ValueError(f"${TIMEOUT_ENV} must be positive, not {value!r}")
    return seconds


class RegistryClient:
    """Talks to one registry's ``/v2/`` API with one set of credentials (or none).

    Args:
        registry: ``host[:port]`` (a URL is accepted; ``None``/``docker.io`` mean Docker Hub).
        credentials: used for Basic auth and to fetch Bearer tokens; ``None`` is anonymous.
        timeout: seconds for connecting and for each read (default
            ``$PREFECT_FLYIMAGE_REGISTRY_TIMEOUT`` or 10). A registry that accepts the
            connection and never answers is reported after this long.
    """

    def __init__(
        self, registry: Optional[str], credentials: Optional[RegistryCredentials] = None, *, timeout: Optional[float] = None
    ) -> None:
        self.registry = registry_endpoint(registry)
        self.credentials = credentials
        self.timeout = float(timeout) if timeout is not None else _default_timeout()
        timeouts = httpx.Timeout(self.timeout)
        self._timeouts = timeouts
        self._auth = RegistryAuth(self.registry, credentials, timeout=timeouts)
        insecure = _is_loopback(self.registry) or _listed_insecure(self.registry)
        # Loopback registries are nearly always plain HTTP: ask that way first.
        self._schemes = (["http", "https"] if _is_loopback(self.registry) else ["https", "http"]) if insecure else ["https"]
        self._client = httpx.Client(auth=self._auth, timeout=timeouts, verify=not insecure, follow_redirects=True)
        self._lock = threading.Lock()
        self.closed = False

    def __repr__(self) -> str:
        user = self.credentials.username if self.credentials else None
        return f"RegistryClient(registry={self.registry!r}, username={user!r})"

    def close(self) -> None:
        """Close the connections (idempotent)."""
        self.closed = True
        self._client.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests -------------------------------------------------------------------
    def _refusable(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; if refused with a credential helper's credentials, fetch them again once."""

        def call(credentials: Optional[RegistryCredentials]) -> T:
            if credentials is not self.credentials:
                with self._lock:
                    self.credentials = credentials
                    self._auth = RegistryAuth(self.registry, credentials, timeout=self._timeouts)
                    self._client.auth = self._auth
            return fn()

        return retry_refused(call, self.credentials)

    def _request(self, method: str, path: str, *, what: str, headers: Optional[dict[str, str]] = None) -> httpx.Response:
        """One request, over the first scheme that answers; transport failures -> RegistryUnavailable."""
        last: Optional[Exception] = None
        fallback: Optional[httpx.Response] = None
        for scheme in list(self._schemes):
            try:
                response = self._client.request(method, f"{scheme}://{self.registry}{path}", headers=headers)
            except httpx.TransportError as exc:
                elsewhere = self._elsewhere(exc)
                if elsewhere:  # the token server, not the registry: no point in another scheme
                    raise RegistryUnavailable(
                        f"token server {elsewhere} for registry {self.registry} is unreachable while checking "
                        f"{what}: {redact(str(exc) or type(exc).__name__, self._auth.secrets())}",
                        self.registry,
                    ) from None
                if isinstance(exc, httpx.TimeoutException):
                    raise RegistryUnavailable(
                        f"registry {self.registry} did not answer within {self.timeout:g}s while checking {what} "
                        f"(set ${TIMEOUT_ENV} for a slower registry)",
                        self.registry,
                    ) from None
                if isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError)):
                    last = exc  # maybe the other scheme: TLS spoken to a plain-HTTP port, or the reverse
                    continue
                raise self._unavailable(what, exc) from None
            if scheme == "http" and response.status_code == 400 and response.http_version == "HTTP/1.0":
                # Go's bare answer to plain HTTP on a TLS port ("Client sent an HTTP request
                # to an HTTPS server"; a HEAD gets no body): try HTTPS, else report this 400.
                fallback = response
                continue
            if self._schemes[0] != scheme:
                with self._lock:
                    self._schemes = [scheme] + [s for s in self._schemes if s != scheme]
            return response
        if fallback is not None:
            return fallback
        raise self._unavailable(what, last)

    def _elsewhere(self, exc: httpx.TransportError) -> Optional[str]:
        """The URL ``exc`` failed on when that is not this registry (a token realm), else None."""
        try:
            url = exc.request.url
        except RuntimeError:  # no request attached
            return None
        host = url.host if url.port is None else f"{url.host}:{url.port}"
        return None if host == self.registry else str(url.copy_with(query=None))

    def _unavailable(self, what: str, exc: Optional[Exception]) -> RegistryUnavailable:
        detail = redact(str(exc) or type(exc).__name__, self._auth.secrets()) if exc else "no answer"
        return RegistryUnavailable(f"registry {self.registry} is unreachable while checking {what}: {detail}", self.registry)

    def _fail(self, response: httpx.Response, what: str) -> RegistryError:
        """The typed error for an unexpected status (bodies are redacted)."""
        status = response.status_code
        if status in (401, 403):
            if self.credentials is None:
                return AuthenticationError(
                    f"registry {self.registry} refused anonymous access to {what} (HTTP {status}); "
                    f"pass credentials for {self.registry}",
                    self.registry,
                )
            return AuthenticationError(
                f"registry {self.registry} refused the credentials of user {self.credentials.username!r} for {what} "
                f"(HTTP {status}); check the credentials for {self.registry}",
                self.registry,
            )
        if status == 429 or status >= 500:
            return RegistryUnavailable(f"registry {self.registry} answered HTTP {status} for {what}; try again later", self.registry)
        # Redact before cutting: a cut-off secret would no longer match.
        body = redact(response.read().decode("utf-8", "replace"), self._auth.secrets())[:300]
        return RegistryError(f"registry {self.registry} answered HTTP {status} for {what}: {body}".rstrip(": "), self.registry)

    def _repository(self, ref: ImageRef | str) -> tuple[ImageRef, str]:
        r = ref if isinstance(ref, ImageRef) else ImageRef.parse(str(ref))
        if registry_endpoint(r.registry) != self.registry:
            raise ValueError(f"{r} is not in registry {self.registry}")
        repo = r.repository
        if self.registry == "registry-1.docker.io" and "/" not in repo:
            repo = f"library/{repo}"
        return r, repo

    # ---- the API ----------------------------------------------------------------------
    def manifest_digest(self, ref: ImageRef | str) -> Optional[str]:
        """The digest of the manifest the registry holds for ``ref`` (tag or digest), or ``None``.

        ``None`` means the registry answered that it has no such manifest (or repository).
        Raises :class:`AuthenticationError` when the credentials (or anonymous access) are
        refused, :class:`RegistryUnavailable` when the registry cannot be reached, does not
        answer in time or fails (5xx, 429), :class:`RegistryError` for other answers.
        """
        return self._refusable(lambda: self._manifest_digest(ref))

    def manifest_platforms(self, ref: ImageRef | str) -> Optional[set[str]]:
        """The platforms (``os/arch[/variant]``) of the image index the registry holds for
        ``ref``; ``None`` when it has none, or a single-platform manifest. Attestation
        manifests (``unknown/unknown``) are left out."""
        return self._refusable(lambda: self._manifest_platforms(ref))

    def _manifest_platforms(self, ref: ImageRef | str) -> Optional[set[str]]:
        r, repo = self._repository(ref)
        what = str(r)
        response = self._request("GET", f"/v2/{repo}/manifests/{r.digest or r.tag or 'latest'}", what=what, headers={"Accept": _ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, what)
        try:
            manifests = response.json().get("manifests")
        except ValueError:
            return None
        if not isinstance(manifests, list):
            return None
        found = set()
        for m in manifests:
            p = m.get("platform") or {} if isinstance(m, dict) else {}
            if p.get("os") and p.get("architecture") and p.get("os") != "unknown":
                found.add("/".join(filter(None, [p["os"], p["architecture"], p.get("variant")])))
        return found

    def _manifest_digest(self, ref: ImageRef | str) -> Optional[str]:
        r, repo = self._repository(ref)
        reference = r.digest or r.tag or "latest"
        path = f"/v2/{repo}/manifests/{reference}"
        what = str(r)
        response = self._request("HEAD", path, what=what, headers={"Accept": _ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, what)
        digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        if r.digest:
            return r.digest
        # Not every registry sends the header (it is optional in the OCI spec): hash the body.
        response = self._request("GET", path, what=what, headers={"Accept": _ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, what)
        return "sha256:" + hashlib.sha256(response.read()).hexdigest()


# ---- one client per registry and credentials, per process --------------------------------------
_shared: dict[tuple, RegistryClient] = {}
_shared_lock = threading.Lock()


def shared_client(
    registry: Optional[str], credentials: Optional[RegistryCredentials] = None, *, timeout: Optional[float] = None
) -> RegistryClient:
    """A process-wide :class:`RegistryClient` for ``registry`` and ``credentials``.

    Reusing it keeps the connection open and the tokens cached, so repeated checks cost
    one request each. Do not close it (:func:`close_shared_clients` does, also at exit);
    a closed one is replaced. Keyed by process id too: connections never cross a fork.
    """
    secret_hash = hashlib.sha256(credentials.secret.encode()).hexdigest() if credentials else None
    key = (
        os.getpid(), registry_endpoint(registry), credentials.username if credentials else None, secret_hash,
        float(timeout) if timeout is not None else _default_timeout(), os.environ.get(INSECURE_ENV, ""),
    )
    with _shared_lock:
        client = _shared.get(key)
        if client is None or client.closed:
            client = _shared[key] = RegistryClient(registry, credentials, timeout=timeout)
        return client


def close_shared_clients() -> None:
    """Close every client :func:`shared_client` handed out in this process."""
    with _shared_lock:
        clients = [c for k, c in _shared.items() if k[0] == os.getpid()]
        _shared.clear()
    for client in clients:
        client.close()


atexit.register(close_shared_clients)
