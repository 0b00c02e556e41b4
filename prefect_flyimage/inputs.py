"""A compact manifest of a plan's inputs, stored with the image, to explain rebuilds.

Every image a plan builds carries the label :data:`INPUTS_LABEL`: base64 of zlib-compressed
JSON holding what the plan hash covers, item by item — ``{path: file digest}`` for the
context, the Dockerfile's digest, the build args, target, platform and labels. Comparing
the manifest of the plan at hand with the one in the registry's image config says *why*
a new image is needed ("hello.py changed, ARG A 1 -> 2") instead of only *that* the hash
differs (:func:`compare`).

Why a label: it travels inside the image config the registry already serves, so reading
it costs two small requests and no pull; there is no second object (OCI artifact, extra
tag) to push, authorize and garbage-collect, and old registries need no referrers API.
Why compact: the config is fetched on every pull and shown by ``docker inspect``, so the
label is capped at :data:`MAX_LABEL_BYTES` (file digests are cut to 64 bits — enough to
see a change, it is not a security check). A context too large for that is described
per folder instead (``"src/"`` -> digest of everything under it), then with the folder
level coarsened until it fits; ``--why`` then names changed folders rather than files.

The label is applied at build time and is *not* part of the plan hash (it is derived
from the hashed inputs, so the same plan always writes the same label).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from .plan import BuildPlan

__all__ = ["INPUTS_LABEL", "MAX_LABEL_BYTES", "Changes", "compare", "decode", "encode", "explain", "inputs_of", "label_for", "why_markdown"]

#: Image label holding the encoded inputs manifest.
INPUTS_LABEL = "io.prefect-flyimage.inputs"
#: Largest encoded label written (also below Linux's 128 KiB limit for one argv string,
#: which the BuildKit backend passes it in).
MAX_LABEL_BYTES = 48 * 1024
_DIGEST_CHARS = 16
_VERSION = 1


def _short(digest: str) -> str:
    return digest[:_DIGEST_CHARS]


def _files(plan: "BuildPlan") -> dict[str, str]:
    files: dict[str, str] = {}
    for entry in plan.build_context.entries():
        if entry.kind == "dir":
            continue
        value = _short(entry.digest)
        if entry.kind == "symlink":
            value = "->" + value
        elif entry.mode != 0o644:
            value += f"/{entry.mode:o}"  # the mode is hashed too: chmod +x is a change
        files[entry.path] = value
    return files


def _by_folder(files: dict[str, str], depth: int) -> dict[str, str]:
    """Files grouped under their first ``depth`` folders: ``{"a/b/": digest, "top.txt": ...}``."""
    groups: dict[str, list[str]] = {}
    out: dict[str, str] = {}
    for path, value in sorted(files.items()):
        parts = path.split("/")
        if len(parts) <= depth:
            out[path] = value
        else:
            groups.setdefault("/".join(parts[:depth]) + "/", []).append(f"{path}\0{value}")
    for folder, items in groups.items():
        out[folder] = _short(hashlib.sha256("\n".join(items).encode("utf-8", "surrogateescape")).hexdigest())
    return out


def inputs_of(plan: "BuildPlan") -> dict[str, Any]:
    """The full (uncapped) manifest of ``plan``'s inputs."""
    return {
        "v": _VERSION,
        "dockerfile": _short(hashlib.sha256(plan.dockerfile_text.encode("utf-8", "surrogateescape")).hexdigest()),
        "args": dict(plan.build_args),
        "target": plan.target,
        "platform": plan.platform,
        "labels": dict(plan.labels),
        "secrets": sorted(s.id for s in plan.secrets),
        "files": _files(plan),
        # Resolved base images (issue 16): only when the plan has them, so older labels read the same.
        **({"bases": dict(plan.bases)} if plan.bases else {}),
    }


def encode(manifest: dict[str, Any]) -> str:
    """base64(zlib(JSON)), deterministic for the same manifest."""
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogateescape")
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def decode(text: str) -> dict[str, Any]:
    """The manifest in a label; ``ValueError`` if it is not one of ours."""
    try:
        manifest = json.loads(zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True)))
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"not a prefect-flyimage inputs label: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("v") != _VERSION:
        raise ValueError("not a prefect-flyimage inputs label (unknown version)")
    return manifest


def label_for(plan: "BuildPlan") -> str:
    """The label value for ``plan``: file by file if it fits, else folder by folder."""
    manifest = inputs_of(plan)
    text = encode(manifest)
    files = manifest["files"]
    depth = max((p.count("/") for p in files), default=0)
    while len(text) > MAX_LABEL_BYTES and depth >= 1:
        manifest = {**manifest, "files": _by_folder(files, depth), "grouped": depth}
        text = encode(manifest)
        depth -= 1
    if len(text) > MAX_LABEL_BYTES:
        manifest = {**manifest, "files": {"./": _short(plan.build_context.digest())}, "grouped": 0}
        text = encode(manifest)
    return text


@dataclass
class Changes:
    """What differs between an earlier image's inputs (``old``) and a plan's (``new``)."""

    files_added: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    dockerfile: bool = False
    args: dict[str, tuple[Optional[str], Optional[str]]] = field(default_factory=dict)
    target: Optional[tuple[Optional[str], Optional[str]]] = None
    platform: Optional[tuple[Optional[str], Optional[str]]] = None
    labels: dict[str, tuple[Optional[str], Optional[str]]] = field(default_factory=dict)
    secrets: Optional[tuple[list[str], list[str]]] = None
    grouped: bool = False  #: files were compared folder by folder (a large context)
    bases: dict[str, tuple[Optional[str], Optional[str]]] = field(default_factory=dict)  #: base ref -> (old, new digest)

    @property
    def empty(self) -> bool:
        return not (self.files_added or self.files_removed or self.files_changed or self.dockerfile or self.args
                    or self.target or self.platform or self.labels or self.secrets or self.bases)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files_added": self.files_added,
            "files_removed": self.files_removed,
            "files_changed": self.files_changed,
            "dockerfile_changed": self.dockerfile,
            "build_args": {k: list(v) for k, v in self.args.items()},
            "target": list(self.target) if self.target else None,
            "platform": list(self.platform) if self.platform else None,
            "labels": {k: list(v) for k, v in self.labels.items()},
            "secrets": list(self.secrets) if self.secrets else None,
            "grouped_by_folder": self.grouped,
            "bases": {k: list(v) for k, v in self.bases.items()},
        }

    def lines(self) -> list[str]:
        """One human-readable line per difference."""
        out = [_base_line(k, a, b) for k, (a, b) in sorted(self.bases.items())]
        out += [f"file added: {p}" for p in self.files_added]
        out += [f"file removed: {p}" for p in self.files_removed]
        out += [f"file changed: {p}" for p in self.files_changed]
        if self.dockerfile:
            out.append("Dockerfile changed")
        out += [f"build arg {k}: {_show(a)} -> {_show(b)}" for k, (a, b) in sorted(self.args.items())]
        if self.target:
            out.append(f"target: {_show(self.target[0])} -> {_show(self.target[1])}")
        if self.platform:
            out.append(f"platform: {_show(self.platform[0])} -> {_show(self.platform[1])}")
        out += [f"label {k}: {_show(a)} -> {_show(b)}" for k, (a, b) in sorted(self.labels.items())]
        if self.secrets:
            out.append(f"build secrets: {self.secrets[0]} -> {self.secrets[1]}")
        return out


def _base_line(ref: str, old: Optional[str], new: Optional[str]) -> str:
    if old is None:
        return f"base {ref}: now resolved to {new}"
    if new is None:
        return f"base {ref}: no longer used (was {old})"
    return f"base {ref} moved: {old} -> {new}"


def _show(value: Optional[str]) -> str:
    return "(unset)" if value is None else repr(value)


def _mapping_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Optional[str], Optional[str]]]:
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def compare(old: dict[str, Any], plan: "BuildPlan") -> Changes:
    """The changes from ``old`` (a decoded label) to ``plan``'s inputs, at ``old``'s granularity."""
    new = inputs_of(plan)
    grouped = old.get("grouped")
    if grouped is not None:
        new_files = _by_folder(new["files"], grouped) if grouped else {"./": _short(plan.build_context.digest())}
    else:
        new_files = new["files"]
    old_files: dict[str, str] = old.get("files") or {}
    changes = Changes(
        files_added=sorted(set(new_files) - set(old_files)),
        files_removed=sorted(set(old_files) - set(new_files)),
        files_changed=sorted(p for p in set(old_files) & set(new_files) if old_files[p] != new_files[p]),
        dockerfile=old.get("dockerfile") != new["dockerfile"],
        args=_mapping_changes(old.get("args") or {}, new["args"]),
        labels=_mapping_changes(old.get("labels") or {}, new["labels"]),
        grouped=grouped is not None,
    )
    for key in ("target", "platform"):
        if old.get(key) != new[key]:
            setattr(changes, key, (old.get(key), new[key]))
    if old.get("bases") is not None or new.get("bases") is not None:
        changes.bases = _mapping_changes(old.get("bases") or {}, new.get("bases") or {})
    if sorted(old.get("secrets") or []) != new["secrets"]:
        changes.secrets = (sorted(old.get("secrets") or []), new["secrets"])
    return changes


def explain(plan: "BuildPlan", credentials: Any = None, against: Optional[str] = None) -> dict[str, Any]:
    """Why ``plan`` needs a new image: its inputs against the image the registry holds.

    The image compared with is ``against`` (a tag) if given, else the plan's explicit
    tag, else the newest image of the repository (by config ``created``) that carries
    an inputs label. Returns ``status`` — ``"unchanged"`` (the registry holds this
    plan's image), ``"changed"`` (``changes`` says what), ``"no-previous-image"`` or
    ``"no-inputs-label"`` (an image built before labels, or by something else) — with
    ``compared_with`` and ``created`` of that image.
    """
    from .image_configs import RegistryReader
    from .names import ImageRef
    from .plan import PLAN_LABEL

    ref = ImageRef.parse(plan.repository)
    registry = ref.registry or "registry-1.docker.io"
    path = ref.repository if ref.registry or "/" in ref.repository else f"library/{ref.repository}"
    with RegistryReader(registry, credentials) as reader:
        if against:
            tags = [against]
        else:
            # the explicit tag first (if the registry has it, that is the one to compare
            # with), else every tag; the content tag first: if present, nothing changed
            tags = [t for t in (plan.tag, plan.content_tag) if t]
            if plan.tag is None or reader.config(f"{registry}/{path}:{plan.tag}", plan.platform) is None:
                tags += [t for t in reader.tags(path) if t not in tags]
        best: Optional[tuple[str, dict[str, Any]]] = None
        unlabelled: Optional[str] = None
        for tag in tags[:200]:  # bounded: one manifest and one config request per tag
            config = reader.config(f"{registry}/{path}:{tag}", plan.platform)
            if config is None:
                continue
            labels = (config.get("config") or {}).get("Labels") or {}
            if labels.get(PLAN_LABEL) == plan.hash:
                return {"status": "unchanged", "compared_with": f"{plan.repository}:{tag}",
                        "created": config.get("created"), "changes": Changes()}
            if INPUTS_LABEL not in labels:
                unlabelled = unlabelled or f"{plan.repository}:{tag}"
                continue
            if best is None or (config.get("created") or "") > (best[1].get("created") or ""):
                best = (tag, config)
            if plan.tag and tag == plan.tag:
                break  # the explicit tag's image is the one to compare with
    if best is None:
        status = "no-inputs-label" if unlabelled else "no-previous-image"
        return {"status": status, "compared_with": unlabelled, "created": None, "changes": None}
    tag, config = best
    old = decode(config["config"]["Labels"][INPUTS_LABEL])
    changes = compare(old, plan)
    return {"status": "changed", "compared_with": f"{plan.repository}:{tag}", "created": config.get("created"),
            "changes": changes}


def why_markdown(explanation: dict[str, Any]) -> str:
    """:func:`explain`'s result as markdown, for a build artifact."""
    status, ref = explanation["status"], explanation.get("compared_with")
    if status == "unchanged":
        return f"**Why**: nothing to rebuild: the registry holds this plan's image as `{ref}`.\n"
    if status == "no-previous-image":
        return "**Why**: the first image of this repository.\n"
    if status == "no-inputs-label":
        return f"**Why**: unknown: `{ref}` carries no inputs label.\n"
    changes: Changes = explanation["changes"]
    items = changes.lines() or ["no input differs"]
    return f"**Why rebuilt** (compared with `{ref}`):\n\n" + "".join(f"- {line}\n" for line in items)
