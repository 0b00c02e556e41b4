"""Read image configs (labels, creation time) and tag lists straight from a registry.

The daemon's distribution API gives a manifest digest but not the config, and pulling
an image just to read its labels would download every layer. The Distribution HTTP API
gives both in two small requests: the manifest, then the config blob it names. Auth is
the registry's own: HTTP basic with the credentials, or the bearer-token handshake its
``WWW-Authenticate`` challenge asks for (Docker Hub, GHCR, ...).

Plain HTTP for loopback registries (as dockerd treats them), HTTPS otherwise.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import httpx

from .credentials import RegistryCredentials
from .errors import AuthenticationError, RegistryError, RegistryUnavailable, redact
from .names import ImageRef

__all__ = ["RegistryReader"]

_MANIFESTS = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
])
_INDEXES = ("application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json")
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


def _base_url(registry: str) -> str:
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    loopback = host in ("localhost", "[::1]") or host.startswith("127.")
    return f"{'http' if loopback else 'https'}://{registry}"


class RegistryReader:
    """Read-only registry access for one registry (``with RegistryReader(...) as r:``)."""

    def __init__(self, registry: str, credentials: Optional[RegistryCredentials] = None, timeout: float = 30.0) -> None:
        self.registry = registry
        self.credentials = credentials
        self._secrets = [credentials.secret] if credentials else []
        self._client = httpx.Client(base_url=_base_url(registry), timeout=timeout, follow_redirects=True)
        self._token: Optional[str] = None

    def __enter__(self) -> "RegistryReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    # ---- transport --------------------------------------------------------------
    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _basic(self) -> Optional[httpx.BasicAuth]:
        c = self.credentials
        return httpx.BasicAuth(c.username, c.secret) if c else None

    def _get(self, path: str, accept: Optional[str] = None) -> httpx.Response:
        headers = {"Accept": accept} if accept else {}
        try:
            response = self._client.get(path, headers={**headers, **self._auth_headers()},
                                        auth=self._basic() if not self._token else httpx.USE_CLIENT_DEFAULT)
            challenge = response.headers.get("WWW-Authenticate", "")
            if response.status_code == 401 and challenge.lower().startswith("bearer"):
                self._token = self._fetch_token(dict(_CHALLENGE.findall(challenge)))
                response = self._client.get(path, headers={**headers, **self._auth_headers()})
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"cannot reach registry {self.registry}: {exc}", self.registry) from None
        if response.status_code in (401, 403):
            raise AuthenticationError(
                f"registry {self.registry} refused access to {path} (HTTP {response.status_code})", self.registry
            )
        if response.status_code >= 500:
            raise RegistryUnavailable(f"registry {self.registry} answered HTTP {response.status_code} for {path}", self.registry)
        return response

    def _fetch_token(self, challenge: dict[str, str]) -> str:
        realm = challenge.pop("realm", None)
        if not realm:
            raise RegistryError(f"registry {self.registry} asked for a bearer token without a realm", self.registry)
        try:
            response = httpx.get(realm, params=challenge, auth=self._basic(), timeout=self._client.timeout)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"cannot reach the token server {realm} of {self.registry}: {exc}", self.registry) from None
        if response.status_code in (401, 403):
            raise AuthenticationError(f"the token server of {self.registry} refused the credentials", self.registry)
        try:
            body = response.json()
            return body.get("token") or body["access_token"]
        except (ValueError, KeyError):
            text = redact(response.text[:200], self._secrets)
            raise RegistryError(f"the token server of {self.registry} answered no token: {text}", self.registry) from None

    # ---- API --------------------------------------------------------------------
    def tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (the path without the registry); ``[]`` if it has none."""
        tags: list[str] = []
        path: Optional[str] = f"/v2/{repository}/tags/list?n=1000"
        while path:
            response = self._get(path)
            if response.status_code == 404:
                return []
            tags += response.json().get("tags") or []
            link = response.headers.get("Link", "")
            m = re.match(r"<([^>]+)>", link)
            path = m.group(1) if m else None
        return tags

    def config(self, ref: ImageRef | str, platform: Optional[str] = None) -> Optional[dict[str, Any]]:
        """The image config JSON of ``ref`` (``config.Labels``, ``created``, ...), or ``None`` if missing.

        For a multi-platform index, the manifest for ``platform`` (``os/arch``; default
        linux/amd64) is followed.
        """
        r = ImageRef.parse(str(ref))
        manifest = self._manifest(r.repository, r.digest or r.tag or "latest")
        if manifest is None:
            return None
        if manifest.get("mediaType") in _INDEXES or "manifests" in manifest:
            want = (platform or "linux/amd64").split("/")
            chosen = next(
                (m for m in manifest.get("manifests", [])
                 if [m.get("platform", {}).get("os"), m.get("platform", {}).get("architecture")] == want[:2]),
                None,
            )
            if chosen is None:
                return None
            manifest = self._manifest(r.repository, chosen["digest"])
            if manifest is None:
                return None
        digest = (manifest.get("config") or {}).get("digest")
        if not digest:
            return None
        response = self._get(f"/v2/{r.repository}/blobs/{digest}")
        if response.status_code == 404:
            return None
        return response.json()

    def _manifest(self, repository: str, reference: str) -> Optional[dict[str, Any]]:
        response = self._get(f"/v2/{repository}/manifests/{reference}", _MANIFESTS)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryError(f"registry {self.registry} answered HTTP {response.status_code} for {repository}:{reference}", self.registry)
        return response.json()
