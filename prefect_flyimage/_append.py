"""Append the code tail to the dependency image straight in the registry: no Docker daemon.

Given a plan that splits (:mod:`._split`) and a registry holding its dependency image
(under the dependency plan's content tag), :func:`append_image`:

1. reads the dependency manifest (Docker v2 or OCI; an index: each platform's) and config;
2. writes the tail's layer (:mod:`._layer`) and uploads it once -- the base layers are in
   the same repository already and are only referenced, never sent again;
3. writes the new config (diff ids, history, Env, WorkingDir, Cmd, Entrypoint, User,
   ExposedPorts, Labels with the plan hash and inputs labels) and uploads it;
4. puts the manifest by digest, then under the content tag, confirms the registry holds
   that digest, and only then moves the other tags.

The registry checks that every blob a manifest names exists, so a tag never points at a
broken manifest: a refused upload stops before any manifest is put.
"""

from __future__ import annotations

__all__ = ["AppendOutcome", "ImageDirs", "append_image", "dependency_ref", "tag_in_registry"]

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

from ._layer import Layer, apply_config, layer_entries, write_layer
from ._split import Split, context_folder
from .engine import choose_backend
from .errors import PushError, RegistryError
from .names import ImageRef
from .registry import INDEX_MEDIA_TYPES, RegistryClient

logger = logging.getLogger("prefect_flyimage")

_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_LAYER_TYPES = {
    _DOCKER_MANIFEST: "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.manifest.v1+json": "application/vnd.oci.image.layer.v1.tar+gzip",
}


@dataclass(frozen=True)
class AppendOutcome:
    """What :func:`append_image` put: the digest under every tag, and the layer's."""

    digest: str
    layer: Layer
    tags: tuple[str, ...]


class ImageDirs:
    """The folders of an image (its layers, bottom first): ``image_dirs(path)`` is
    ``(mode, uid, gid)`` of the folder, or ``None`` when the image has none there.

    A layer is read only when a question needs it, newest first, stopping at the first
    layer that decides (the folder's entry, a file by that name, a whiteout of it or of a
    folder above, an opaque folder above). Each layer's listing is kept on disk by its
    digest (``cache_dir()/layer-dirs``), so an image is read once per machine."""

    def __init__(self, client: RegistryClient, repo: str, layer_digests: list[str]) -> None:
        self.client, self.repo, self.digests = client, repo, list(reversed(layer_digests))
        self._listings: dict[str, dict[str, Any]] = {}
        self._answers: dict[str, Optional[tuple[int, int, int]]] = {}

    def _listing(self, digest: str) -> dict[str, Any]:
        """``dirs`` (name -> [mode, uid, gid]), ``files`` and ``implied`` (parents of entries)."""
        if digest in self._listings:
            return self._listings[digest]
        from .context import cache_dir

        cached = cache_dir() / "layer-dirs" / f"{digest.replace(':', '-')}.json"
        try:
            listing = json.loads(cached.read_text())
        except (OSError, ValueError):
            listing = self._read(digest)
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(listing))
                os.replace(tmp, cached)
            except OSError:
                pass  # a cache only
        listing["files"] = set(listing["files"])
        listing["implied"] = set(listing["implied"])
        self._listings[digest] = listing
        return listing

    def _read(self, digest: str) -> dict[str, Any]:
        import gzip
        import io
        import tarfile

        blob = self.client.get_blob(self.repo, digest)
        if blob is None:
            raise RegistryError(f"registry {self.client.registry} lacks layer {digest} of {self.repo}", self.client.registry)
        data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        dirs: dict[str, list[int]] = {}
        files: set[str] = set()
        implied: set[str] = set()
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar:
                name = member.name.strip("/").removeprefix("./").strip("/")
                if not name or name == ".":
                    continue
                if member.isdir():
                    dirs[name] = [member.mode & 0o7777, member.uid, member.gid]
                else:
                    files.add(name)
                parts = name.split("/")
                implied.update("/".join(parts[:k]) for k in range(1, len(parts)))
        return {"dirs": dirs, "files": sorted(files), "implied": sorted(implied)}

    def __call__(self, path: str) -> Any:
        rel = path.strip("/")
        if not rel:
            return True
        if rel not in self._answers:
            self._answers[rel] = self._find(rel)
        return self._answers[rel]

    def _find(self, rel: str) -> Any:
        parts = rel.split("/")
        above = ["/".join(parts[:k]) for k in range(1, len(parts))]
        implied = False
        for digest in self.digests:
            listing = self._listing(digest)
            if rel in listing["dirs"]:
                return tuple(listing["dirs"][rel])
            files = listing["files"]
            if rel in files:
                return True if implied else None  # a file by that name: no folder
            if rel in listing["implied"]:
                implied = True  # there, but this layer does not say how: look further down
                continue
            for a in [*above, rel]:
                parent, _, base = a.rpartition("/")
                if (f"{parent}/.wh.{base}" if parent else f".wh.{base}") in files:
                    return True if implied else None  # deleted here
            if any(f"{a}/.wh..wh..opq" in files for a in above):
                return True if implied else None  # a folder above was replaced here: lower layers do not count
        return True if implied else None


def dependency_ref(split: Split) -> ImageRef:
    """Where the dependency image lives: the dependency plan's content tag."""
    assert split.dependency is not None
    return split.dependency.content_ref


def _json(body: bytes) -> bytes:
    # Compact and key-sorted: the same config always hashes alike.
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode() if not isinstance(body, bytes) else body


def _one_image(
    client: RegistryClient, repo: str, manifest: dict[str, Any], media_type: str, split: Split,
    labels: dict[str, str], layers: dict[Any, Layer],
) -> tuple[bytes, str]:
    """Append to one platform's image; returns the new manifest (bytes, media type)."""
    if media_type not in _LAYER_TYPES:
        raise RegistryError(f"cannot append to a manifest of type {media_type!r}", client.registry)
    config_desc = manifest.get("config") or {}
    raw = client.get_blob(repo, config_desc.get("digest", ""))
    if raw is None:
        raise RegistryError(f"registry {client.registry} lacks the config {config_desc.get('digest')} of {repo}", client.registry)
    config = json.loads(raw)
    workdir = (config.get("config") or {}).get("WorkingDir") or "/"
    user = (config.get("config") or {}).get("User") or ""
    # Several platforms always build with BuildKit; one follows this machine's builder.
    classic = "," not in (split.plan.platform or "") and choose_backend(split.plan) == "docker-py"
    dirs = ImageDirs(client, repo, [d["digest"] for d in manifest.get("layers", [])])
    entries = split.plan.build_context.entries()
    with context_folder(split.plan) as root:
        members = layer_entries(split, entries, workdir, root, dir_exists=dirs, classic=classic, user=user)
        key = tuple((m.path, m.entry.kind, m.entry.digest, m.entry.mode, m.uid, m.gid) for m in members)
        if key not in layers:  # the same members give the same layer (across platforms, as a rule)
            layers[key] = write_layer(root, members)
    layer = layers[key]
    client.upload_blob(repo, layer.blob, layer.digest)
    new_config = _json(apply_config(config, split, layer, labels, classic=classic))  # type: ignore[arg-type]
    config_digest = "sha256:" + hashlib.sha256(new_config).hexdigest()
    client.upload_blob(repo, new_config, config_digest)
    new = dict(manifest)
    new["config"] = {**config_desc, "digest": config_digest, "size": len(new_config)}
    new["layers"] = [*manifest.get("layers", []), {"mediaType": _LAYER_TYPES[media_type], "size": layer.size, "digest": layer.digest}]
    return json.dumps(new, indent=3).encode(), media_type


def append_image(client: RegistryClient, split: Split, tags: tuple[str, ...], labels: dict[str, str]) -> Optional[AppendOutcome]:
    """Append ``split``'s tail to its dependency image as ``repository:tag`` for each of
    ``tags`` (the first is the content tag). ``None`` when the registry lacks the
    dependency image. Raises :class:`PushError` when the registry does not end up holding
    the new image under the first tag."""
    dep = dependency_ref(split)
    repo = dep.repository
    found = client.get_manifest(dep)
    if found is None:
        return None
    body, media_type, _ = found
    manifest = json.loads(body)
    layers: dict[Any, Layer] = {}
    if media_type in INDEX_MEDIA_TYPES or "manifests" in manifest:
        children = []
        for child in manifest.get("manifests", []):
            platform = child.get("platform") or {}
            if platform.get("os") == "unknown":  # attestations: they describe the old image
                continue
            got = client.get_manifest(f"{dep.name}@{child['digest']}")
            if got is None:
                raise RegistryError(f"registry {client.registry} lacks {dep.name}@{child['digest']} named by its index", client.registry)
            new_body, new_type = _one_image(client, repo, json.loads(got[0]), got[1], split, labels, layers)
            digest = client.put_manifest(repo, "sha256:" + hashlib.sha256(new_body).hexdigest(), new_body, new_type)
            children.append({**child, "digest": digest, "size": len(new_body), "mediaType": new_type})
        index = {**manifest, "manifests": children}
        final_body, final_type = json.dumps(index, indent=3).encode(), media_type
    else:
        final_body, final_type = _one_image(client, repo, manifest, media_type, split, labels, layers)
    first, rest = tags[0], tags[1:]
    digest = client.put_manifest(repo, first, final_body, final_type)
    ref = f"{dep.name}:{first}"
    held = client.manifest_digest(ref)
    if held != digest:
        raise PushError(f"put {ref} as {digest} but the registry reports {held or 'nothing'}", client.registry)
    for tag in rest:
        client.put_manifest(repo, tag, final_body, final_type)
    logger.info("appended the code layer %s to %s: %s", next(iter(layers.values())).digest[:19], dep, digest)
    return AppendOutcome(digest, next(iter(layers.values())), tags)


def tag_in_registry(client: RegistryClient, name: str, digest: str, tags: tuple[str, ...]) -> list[str]:
    """Make every one of ``tags`` of ``name`` point at ``digest`` by putting its manifest
    again (no daemon, no layer moves); returns the tags that were moved. Raises
    :class:`PushError` when the registry lacks ``digest`` or reports another digest."""
    ref = ImageRef.parse(name)
    moved = []
    body: Optional[tuple[bytes, str, str]] = None
    for tag in tags:
        if client.manifest_digest(f"{name}:{tag}") == digest:
            continue
        if body is None:
            body = client.get_manifest(f"{name}@{digest}")
            if body is None:
                raise PushError(f"the registry lacks {name}@{digest}, so it cannot be tagged {tag}", ref.registry)
        put = client.put_manifest(ref.repository, tag, body[0], body[1])
        if put != digest:
            raise PushError(f"tagged {name}:{tag} as {digest} but the registry reports {put}", ref.registry)
        moved.append(tag)
    return moved
