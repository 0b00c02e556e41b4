"""Several destinations: after the primary push, copy the image registry to registry.

A mirror gets the very image the primary registry confirmed (same digest), through our
Distribution client (:class:`~prefect_flyimage.registry.RegistryClient`), never through
the Docker daemon: each blob the destination lacks is mounted from the source
repository when both are in one registry (no bytes move), else streamed from the
source registry to the destination chunk by chunk (never held whole in memory). Then
the manifests are put -- for an image index, each platform's (and attestation's)
manifest by digest first, then the index under every tag -- and the destination is
asked again: it counts as published only when every tag names the primary's digest.

A destination whose tags already name the digest is skipped (a few ``HEAD`` requests).
Credentials per registry as everywhere else: the primary's for its own registry, else
those given for the destination's registry, else the docker config's (``docker login``,
credential helpers). A refused destination raises :class:`~prefect_flyimage.errors.MirrorError`
naming it and the mirrors done before it; nothing is reported as published there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, TextIO

from . import _args
from .credentials import CredentialsLike, RegistryCredentials, as_credentials, registry_host, resolve_credentials
from .engine._process import write
from .errors import FlyImageError, InvalidArgumentError, InvalidReferenceError, MirrorError, RegistryError, redact
from .names import ImageRef
from .registry import INDEX_MEDIA_TYPES, RegistryClient, registry_endpoint, shared_client

__all__ = ["MirrorCopy", "check_mirrors", "mirror"]

logger = logging.getLogger("prefect_flyimage")


@dataclass
class MirrorCopy:
    """What one destination needed: blobs streamed or mounted, manifests put (all 0: skipped)."""

    destination: str
    streamed: int = 0
    mounted: int = 0
    present: int = 0
    manifests: int = 0

    @property
    def skipped(self) -> bool:
        return not (self.streamed or self.mounted or self.manifests)


def check_mirrors(mirrors: Any, repository: Optional[str] = None) -> tuple[str, ...]:
    """``mirrors`` as repositories (``host[:port]/path``, no tag or digest), in order, once each.

    Raises :class:`InvalidArgumentError` (argument ``mirrors``) for anything else, and for
    the primary ``repository`` itself.
    """
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    found: list[str] = []
    for i, item in enumerate(_args.str_list("mirrors", mirrors)):
        try:
            ref = ImageRef.parse(item.strip())
        except InvalidReferenceError as exc:
            raise InvalidArgumentError(f"mirrors[{i}]", f"{item!r} is not a repository: {exc}") from None
        if ref.tag or ref.digest:
            raise InvalidArgumentError(
                f"mirrors[{i}]", f"{item!r} names a tag or digest; give the repository only (the image's tags are copied)"
            )
        if repository is not None and ref.name == ImageRef.parse(repository).name:
            raise InvalidArgumentError(f"mirrors[{i}]", f"{item!r} is the image's own repository")
        if ref.name not in found:
            found.append(ref.name)
    return tuple(found)


def _credentials_for(
    registry: Optional[str], primary: Optional[RegistryCredentials], primary_registry: str,
    given: Optional[Mapping[str, CredentialsLike]],
) -> Optional[RegistryCredentials]:
    endpoint = registry_endpoint(registry)
    if endpoint == primary_registry:
        return primary
    for host, value in (given or {}).items():
        if registry_endpoint(registry_host(host)) == endpoint:
            return as_credentials(value, registry=registry)
    return resolve_credentials(None, registry=registry)


def mirror(
    repository: str,
    digest: str,
    tags: Sequence[str],
    mirrors: Sequence[str],
    credentials: Optional[RegistryCredentials] = None,
    *,
    mirror_credentials: Optional[Mapping[str, CredentialsLike]] = None,
    stream: Optional[TextIO] = None,
) -> list[MirrorCopy]:
    """Give every repository in ``mirrors`` the image ``repository@digest`` under ``tags``.

    ``credentials``: the primary registry's (used for a mirror in that registry too);
    ``mirror_credentials``: ``{registry host: credentials}`` for the others (default: the
    docker config's). Returns one :class:`MirrorCopy` per mirror, in order, each confirmed
    by digest. Raises :class:`MirrorError` for the first destination that fails.
    """
    source_ref = ImageRef.parse(repository)
    source = shared_client(source_ref.registry, credentials)
    done: list[MirrorCopy] = []
    for destination in check_mirrors(mirrors, repository):
        dest_ref = ImageRef.parse(destination)
        secrets = [credentials.secret] if credentials else []
        try:
            creds = _credentials_for(dest_ref.registry, credentials, source.registry, mirror_credentials)
            secrets += [creds.secret] if creds else []
            target = shared_client(dest_ref.registry, creds)
            copy = _Copy(source, source_ref, target, dest_ref).run(digest, list(tags))
        except MirrorError:
            raise
        except FlyImageError as exc:
            raise MirrorError(
                f"mirror {destination} did not get {repository}@{digest[:19]}: {redact(str(exc), secrets)}"
                + (f" (published to {', '.join(c.destination for c in done)} before it)" if done else ""),
                destination, registry=dest_ref.registry, digest=digest, published=[c.destination for c in done],
            ) from None
        done.append(copy)
        if copy.skipped:
            note = f"mirror {destination} already holds {digest}: nothing copied"
        else:
            note = (
                f"mirrored to {destination} ({digest}): {copy.streamed} blob(s) streamed, {copy.mounted} mounted, "
                f"{copy.present} already there, {copy.manifests} manifest(s) put"
            )
        logger.info("%s", note)
        write(stream, note + "\n")
    return done


class _Copy:
    """One image, one destination."""

    def __init__(self, source: RegistryClient, source_ref: ImageRef, target: RegistryClient, dest_ref: ImageRef) -> None:
        self.source, self.target = source, target
        self.source_name, self.dest_name = source_ref.name, dest_ref.name
        self.source_repo = source._repository(source_ref)[1]
        self.dest_repo = target._repository(dest_ref)[1]
        # one registry, one login: the registry can mount blobs across repositories
        self.same_registry = source is target
        self.stats = MirrorCopy(dest_ref.name)

    def run(self, digest: str, tags: list[str]) -> MirrorCopy:
        missing = [t for t in tags if self.target.manifest_digest(f"{self.dest_name}:{t}") != digest]
        if not missing:
            return self.stats
        found = self.source.get_manifest(f"{self.source_name}@{digest}")
        if found is None:
            raise RegistryError(f"the source {self.source_name} no longer holds {digest}", self.source.registry)
        body, media_type, _ = found
        if self.target.manifest_digest(f"{self.dest_name}@{digest}") != digest:  # else: blobs and children are there
            self._tree(body, media_type)
        for tag in missing:
            self.target.put_manifest(self.dest_repo, tag, body, media_type)
            self.stats.manifests += 1
        for tag in tags:
            held = self.target.manifest_digest(f"{self.dest_name}:{tag}")
            if held != digest:
                raise RegistryError(
                    f"put {self.dest_name}:{tag} as {digest} but the registry reports {held or 'nothing'}", self.target.registry
                )
        return self.stats

    def _tree(self, body: bytes, media_type: str) -> None:
        """Everything ``body`` refers to, in the destination: blobs, then child manifests."""
        manifest: dict[str, Any] = json.loads(body)
        if media_type in INDEX_MEDIA_TYPES or "manifests" in manifest:
            for child in manifest.get("manifests") or []:
                child_digest = child["digest"]
                if self.target.manifest_digest(f"{self.dest_name}@{child_digest}") == child_digest:
                    continue
                found = self.source.get_manifest(f"{self.source_name}@{child_digest}")
                if found is None:
                    raise RegistryError(f"the source {self.source_name} lacks {child_digest} of its index", self.source.registry)
                self._tree(found[0], found[1])
                self.target.put_manifest(self.dest_repo, child_digest, found[0], found[1] or child.get("mediaType", ""))
                self.stats.manifests += 1
            return
        blobs = [manifest.get("config") or {}] + list(manifest.get("layers") or [])
        for blob in blobs:
            if blob.get("digest") and not blob.get("urls"):  # foreign layers stay where their urls say
                self._blob(blob["digest"])

    def _blob(self, digest: str) -> None:
        if self.target.blob_exists(self.dest_repo, digest):
            self.stats.present += 1
            return
        if self.same_registry and self.target.mount_blob(self.dest_repo, digest, self.source_repo):
            self.stats.mounted += 1
            return
        with self.source.open_blob(self.source_repo, digest) as (size, chunks):
            self.target.upload_blob_stream(self.dest_repo, digest, chunks, size)
        self.stats.streamed += 1
