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
    "INDEX_MEDIA_TYPES",
    "INSECURE_ENV",
    "MANIFEST_MEDIA_TYPES",
    "TIMEOUT_ENV",
    "RegistryClient",
    "close_shared_clients",
    "registry_endpoint",
    "shared_client",
]

import atexit
import contextlib
import hashlib
import json
import ipaddress
import os
import threading
from typing import Any, Callable, Iterator, Optional, TypeVar

import httpx

from ._args import env_seconds
from ._registry_auth import RegistryAuth
from .credentials import RegistryCredentials, registry_host, retry_refused
from .errors import AuthenticationError, RegistryError, RegistryUnavailable, redact
from .names import ImageRef

T = TypeVar("T")

#: Seconds to wait for the registry (connect, and each read) unless told otherwise.
DEFAULT_TIMEOUT = 10.0
TIMEOUT_ENV = "PREFECT_FLYIMAGE_REGISTRY_TIMEOUT"
INSECURE_ENV = "PREFECT_FLYIMAGE_INSECURE_REGISTRIES"
_CHUNK = 1 << 20  # bytes per chunk when a blob is streamed registry to registry

#: What we accept for a manifest: without the v2/OCI types a registry may convert the
#: manifest (schema 1) and report another digest than the push did.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
#: An index (multi-platform) rather than one image's manifest.
INDEX_MEDIA_TYPES = (MANIFEST_MEDIA_TYPES[1], MANIFEST_MEDIA_TYPES[3])
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
    return env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT)


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


    # ---- reading and writing images (tags, manifests, configs, blobs) ---------------------
    # Used by ``inspect --why`` (tags, configs) and by the registry append (:mod:`._append`).
    def _call(
        self, method: str, path_or_url: str, *, what: str, headers: Optional[dict[str, str]] = None,
        content: Optional[bytes] = None, params: Optional[dict[str, str]] = None,
    ) -> httpx.Response:
        """One request with a body or to an absolute URL (an upload's ``Location``)."""
        if path_or_url.startswith(("http://", "https://")):
            url = path_or_url
        else:
            if len(self._schemes) > 1 and not getattr(self, "_scheme_settled", False):
                self._request("GET", "/v2/", what=what)  # settles HTTP or HTTPS once
                self._scheme_settled = True
            url = f"{self._schemes[0]}://{self.registry}{path_or_url}"
        try:
            return self._client.request(method, url, headers=headers, content=content, params=params)
        except httpx.TransportError as exc:
            raise self._unavailable(what, exc) from None

    def tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (the path without the registry); ``[]`` if it has none."""
        import re

        tags: list[str] = []
        path: Optional[str] = f"/v2/{repository}/tags/list?n=1000"
        while path:
            response = self._refusable(lambda p=path: self._call("GET", p, what=f"the tags of {repository}"))
            if response.status_code == 404:
                return tags
            if response.status_code != 200:
                raise self._fail(response, f"the tags of {repository}")
            tags += response.json().get("tags") or []
            m = re.match(r"<([^>]+)>", response.headers.get("Link", ""))
            path = m.group(1) if m else None
        return tags

    def get_manifest(self, ref: ImageRef | str) -> Optional[tuple[bytes, str, str]]:
        """``(body, media type, digest)`` of ``ref``'s manifest (or index), ``None`` when absent."""
        r, repo = self._repository(ref)
        reference = r.digest or r.tag or "latest"
        what = str(r)
        response = self._refusable(
            lambda: self._request("GET", f"/v2/{repo}/manifests/{reference}", what=what, headers={"Accept": _ACCEPT})
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, what)
        body = response.read()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            media_type = json.loads(body).get("mediaType") or media_type
        except ValueError:
            raise RegistryError(f"registry {self.registry} sent a manifest for {what} that is not JSON", self.registry) from None
        return body, media_type, digest

    def get_blob(self, repository: str, digest: str) -> Optional[bytes]:
        """The blob ``digest`` of ``repository`` (checked against its digest), ``None`` when absent."""
        response = self._blob("GET", repository, digest)
        if response is None:
            return None
        body = response.read()
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RegistryError(f"registry {self.registry} sent blob {repository}@{digest} with other contents", self.registry)
        return body

    def config(self, ref: ImageRef | str, platform: Optional[str] = None) -> Optional[dict[str, Any]]:
        """The image config JSON of ``ref`` (for an index: the ``platform`` one, default
        linux/amd64), or ``None`` if missing."""
        r, repo = self._repository(ref)
        found = self.get_manifest(r)
        if found is None:
            return None
        manifest = json.loads(found[0])
        if found[1] in INDEX_MEDIA_TYPES or "manifests" in manifest:
            want = (platform or "linux/amd64").split("/")
            chosen = next(
                (m for m in manifest.get("manifests", [])
                 if [m.get("platform", {}).get("os"), m.get("platform", {}).get("architecture")] == want[:2]),
                None,
            )
            if chosen is None:
                return None
            found = self.get_manifest(f"{r.name}@{chosen['digest']}")
            if found is None:
                return None
            manifest = json.loads(found[0])
        digest = (manifest.get("config") or {}).get("digest")
        blob = self.get_blob(repo, digest) if digest else None
        return None if blob is None else json.loads(blob)

    def blob_exists(self, repository: str, digest: str) -> bool:
        """True when ``repository`` holds blob ``digest``."""
        return self._blob("HEAD", repository, digest) is not None

    def _blob(self, method: str, repository: str, digest: str) -> Optional[httpx.Response]:
        """The answer to ``method`` on blob ``digest``: ``None`` when absent, an error unless 200."""
        what = f"{repository}@{digest}"
        response = self._refusable(lambda: self._call(method, f"/v2/{repository}/blobs/{digest}", what=what))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, what)
        return response

    def upload_blob(self, repository: str, data: bytes, digest: str) -> None:
        """Upload ``data`` as blob ``digest`` (one POST, one PUT) unless the registry has it."""
        if self.blob_exists(repository, digest):
            return
        what = f"the upload of {repository}@{digest}"

        def upload() -> httpx.Response:
            started = self._call("POST", f"/v2/{repository}/blobs/uploads/", what=what)
            if started.status_code != 202:
                raise self._fail(started, what)
            location = started.headers.get("Location", "")
            if not location.startswith(("http://", "https://")):
                location = f"{self._schemes[0]}://{self.registry}{location}"
            sep = "&" if "?" in location else "?"
            return self._call(
                "PUT", f"{location}{sep}digest={digest}", what=what, content=data,
                headers={"Content-Type": "application/octet-stream"},
            )

        done = self._refusable(upload)
        if done.status_code not in (201, 204):
            raise self._fail(done, what)
        reported = done.headers.get("Docker-Content-Digest")
        if reported and reported != digest:
            raise RegistryError(f"registry {self.registry} stored {what} as {reported}", self.registry)
        # (a manifest naming a blob the registry lacks is refused at the put: no extra HEAD here)

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Ask the registry to mount blob ``digest`` from ``source`` (no bytes sent); True when it did."""
        if source == repository:
            return self.blob_exists(repository, digest)
        what = f"mounting {digest} into {repository}"
        response = self._refusable(lambda: self._call(
            "POST", f"/v2/{repository}/blobs/uploads/", what=what, params={"mount": digest, "from": source},
        ))
        if response.status_code == 201:
            return True
        if response.status_code == 202:  # not mounted: cancel the upload it opened
            location = response.headers.get("Location")
            if location:
                self._call("DELETE", location, what=what)
            return False
        raise self._fail(response, what)

    @contextlib.contextmanager
    def open_blob(self, repository: str, digest: str) -> Iterator[tuple[Optional[int], Iterator[bytes]]]:
        """Stream blob ``digest`` of ``repository``: yields ``(size or None, chunks)``.

        For copying registry to registry without holding a layer in memory (the
        destination checks the digest; :meth:`upload_blob_stream` does too).
        """
        what = f"{repository}@{digest}"

        def start() -> httpx.Response:
            url = self._url(f"/v2/{repository}/blobs/{digest}", what)
            try:
                response = self._client.send(self._client.build_request("GET", url), stream=True)
            except httpx.TransportError as exc:
                raise self._unavailable(what, exc) from None
            if response.status_code in (401, 403):
                response.read()
                response.close()
                raise self._fail(response, what)
            return response

        response = self._refusable(start)
        try:
            if response.status_code != 200:
                response.read()
                raise self._fail(response, what)
            length = response.headers.get("Content-Length")
            yield (int(length) if length and length.isdigit() else None), response.iter_raw(_CHUNK)  # bytes as stored: no decoding
        finally:
            response.close()

    def upload_blob_stream(self, repository: str, digest: str, chunks: Iterator[bytes], size: Optional[int] = None) -> None:
        """Upload blob ``digest`` from ``chunks`` (one POST, one streamed PUT); the bytes are
        hashed on the way and the registry checks them against ``digest`` too."""
        what = f"the upload of {repository}@{digest}"

        def begin() -> httpx.Response:
            started = self._call("POST", f"/v2/{repository}/blobs/uploads/", what=what)
            if started.status_code != 202:
                raise self._fail(started, what)
            return started

        started = self._refusable(begin)  # authenticated here: the PUT reuses the token or Basic
        location = started.headers.get("Location", "")
        if not location.startswith(("http://", "https://")):
            location = f"{self._schemes[0]}://{self.registry}{location}"
        sep = "&" if "?" in location else "?"
        hasher = hashlib.sha256()

        def body() -> Iterator[bytes]:
            for chunk in chunks:
                hasher.update(chunk)
                yield chunk

        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)
        try:
            done = self._client.request("PUT", f"{location}{sep}digest={digest}", content=body(), headers=headers)
        except httpx.StreamConsumed:  # the registry asked to authenticate again mid-upload
            raise RegistryError(f"registry {self.registry} asked to authenticate again during {what}", self.registry) from None
        except httpx.TransportError as exc:
            raise self._unavailable(what, exc) from None
        if done.status_code not in (201, 204):
            raise self._fail(done, what)
        if "sha256:" + hasher.hexdigest() != digest:
            raise RegistryError(f"the source sent other contents than {digest} for {what}", self.registry)

    def _url(self, path: str, what: str) -> str:
        if len(self._schemes) > 1 and not getattr(self, "_scheme_settled", False):
            self._request("GET", "/v2/", what=what)  # settles HTTP or HTTPS once
            self._scheme_settled = True
        return f"{self._schemes[0]}://{self.registry}{path}"

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Put ``body`` as ``repository:reference``; return the digest the registry reports
        (checked against the body's)."""
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        what = f"{repository}:{reference}"
        response = self._refusable(lambda: self._call(
            "PUT", f"/v2/{repository}/manifests/{reference}", what=what, content=body, headers={"Content-Type": media_type},
        ))
        if response.status_code not in (200, 201, 202):
            raise self._fail(response, what)
        reported = response.headers.get("Docker-Content-Digest")
        if reported and reported != digest:
            raise RegistryError(f"registry {self.registry} stored {what} as {reported}, not {digest}", self.registry)
        return digest


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
