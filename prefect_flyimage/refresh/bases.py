"""Base images: which ones a build starts from, what digest each names now.

The digests go into the plan the way every front door's do (issue 16):
:meth:`BuildPlan.with_bases` -- an added section of the plan hash, pinned ``FROM`` lines for
the build, and the derived :data:`BASE_LABEL` on the image. :func:`labelled_plan` is that
call. :func:`registry_digest` is the one place the refresh asks a registry for a digest
(directly, :func:`prefect_flyimage.registry.shared_client`, like the pipeline);
:func:`local_facts` is the one place it reads the daemon's answer.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import pendulum

from ..credentials import RegistryCredentials
from ..dockerfile import base_images
from ..errors import BaseImageMissing, FlyImageError, VerificationError, redact
from ..names import ImageRef
from ..plan import BASES_LABEL, PLAN_LABEL, BuildPlan

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = [
    "BASE_LABEL",
    "BASE_SOURCES",
    "BaseDigest",
    "LocalFacts",
    "base_label",
    "external_bases",
    "image_created",
    "labelled_plan",
    "local_facts",
    "parse_base_label",
    "pin_base",
    "registry_digest",
    "resolve_base",
    "verify_image",
]

#: Label holding the base digests an image was built from (``ref=digest,...``, sorted).
BASE_LABEL = BASES_LABEL
#: Where a base's digest is looked up (``auto``: the registry when the reference names one).
BASE_SOURCES = ("auto", "registry", "local")

#: The images a Dockerfile builds from (the project's one Dockerfile reader).
external_bases = base_images


@dataclass(frozen=True)
class BaseDigest:
    """Which image a base reference named when it was looked up."""

    ref: str  #: as written in the Dockerfile (build args substituted)
    digest: str  #: registry manifest digest, or the local image id (``source="local"``)
    source: str  #: ``registry``, ``local`` or ``pinned`` (the Dockerfile names a digest)

    @property
    def token(self) -> str:
        """``ref=digest`` (``ref=local:sha256:...`` for a local image id): one part of the label."""
        return f"{self.ref}=local:{self.digest}" if self.source == "local" else f"{self.ref}={self.digest}"


def base_label(bases: Iterable[BaseDigest]) -> str:
    """The :data:`BASE_LABEL` value for ``bases``: sorted ``ref=digest`` tokens, comma-separated."""
    return ",".join(sorted(b.token for b in bases))


def parse_base_label(text: Optional[str]) -> dict[str, str]:
    """``ref -> digest`` (``local:sha256:...`` for local ids) from a :data:`BASE_LABEL` value."""
    found: dict[str, str] = {}
    for token in (text or "").split(","):
        ref, sep, digest = token.strip().rpartition("=")
        if sep and ref:
            found[ref] = digest
    return found


def labelled_plan(plan: BuildPlan, bases: Sequence[BaseDigest], **changes: Any) -> BuildPlan:
    """``plan`` built from ``bases``: their digests in :attr:`BuildPlan.bases` (so the content
    tag follows them, the build pins them and the image carries :data:`BASE_LABEL`), and
    any other ``changes`` (fields of :class:`BuildPlan`)."""
    resolved = plan.with_bases(tuple((b.ref, b.token.partition("=")[2]) for b in _by_ref(bases)))
    return resolved.with_(**changes) if changes else resolved


def _by_ref(bases: Sequence[BaseDigest]) -> list[BaseDigest]:
    return list({b.ref: b for b in bases}.values())


# ---- what the registry and the daemon say --------------------------------------------


def registry_digest(
    engine: "Engine", ref: ImageRef | str, credentials: Optional[RegistryCredentials] = None
) -> Optional[str]:
    """The manifest digest the registry holds for ``ref`` now (``None``: it holds nothing).

    Asked directly, as the pipeline resolves bases (``engine`` is kept for callers)."""
    from ..registry import shared_client

    r = ImageRef.parse(str(ref))
    return shared_client(r.registry, credentials).manifest_digest(r)


@dataclass(frozen=True)
class LocalFacts:
    """What the refresh reads about an image in the daemon."""

    id: str
    labels: dict[str, str]
    repo_digests: tuple[str, ...]
    created: Optional[str]


def local_facts(engine: "Engine", ref: ImageRef | str) -> Optional[LocalFacts]:
    """The daemon's image ``ref`` (``None``: not there), from a typed engine value or an inspect dict."""
    info = engine.local_image(ref)
    if info is None:
        return None
    if not isinstance(info, dict):  # a typed engine value (id, labels, repo_digests, created)
        return LocalFacts(str(info.id), dict(getattr(info, "labels", None) or {}),
                          tuple(getattr(info, "repo_digests", None) or ()), _text(getattr(info, "created", None)))
    return LocalFacts(str(info["Id"]), dict((info.get("Config") or {}).get("Labels") or {}),
                      tuple(info.get("RepoDigests") or ()), _text(info.get("Created")))


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def resolve_base(
    engine: "Engine", ref: str, credentials: Optional[RegistryCredentials] = None, source: str = "auto"
) -> BaseDigest:
    """Look up the digest ``ref`` names now.

    ``source``: ``registry`` asks the base's registry; ``local`` takes the daemon's image
    id; ``auto`` (default) asks the registry when ``ref`` names one
    (``127.0.0.1:5001/base:1``, ``ghcr.io/org/img``) and the daemon otherwise. A reference
    pinned to a digest cannot move and is returned as is.

    Raises:
        BaseImageMissing: the registry (or the daemon) does not have the image.
        AuthenticationError, RegistryUnavailable: from the registry.
    """
    parsed = ImageRef.parse(ref)
    if parsed.digest:
        return BaseDigest(ref, parsed.digest, "pinned")
    if source not in BASE_SOURCES:
        raise ValueError(f"base_source {source!r} is not one of {', '.join(BASE_SOURCES)}")
    mode = source if source != "auto" else ("registry" if parsed.registry else "local")
    if mode == "registry":
        digest = registry_digest(engine, parsed, credentials)
        if digest is None:
            raise BaseImageMissing(f"base image {ref} is not in its registry ({parsed.registry or 'docker.io'})")
        return BaseDigest(ref, digest, "registry")
    local = local_facts(engine, parsed)
    if local is None:
        raise BaseImageMissing(
            f"base image {ref} names no registry and is not in the Docker daemon; build or load it, "
            "or set base_source: registry to look it up on Docker Hub"
        )
    return BaseDigest(ref, local.id, "local")


def pin_base(engine: "Engine", base: BaseDigest, credentials: Optional[RegistryCredentials] = None) -> bool:
    """Make the daemon's ``base.ref`` the image ``base.digest`` names, so a build uses exactly it.

    Registry bases are pulled by digest and tagged as ``base.ref`` (what ``docker pull``
    of the tag would do, without the race of the tag moving in between). Local and pinned
    bases need nothing. Returns True when something was pulled.
    """
    if base.source != "registry":
        return False
    local = local_facts(engine, base.ref)
    if local is not None and any(rd.endswith("@" + base.digest) for rd in local.repo_digests):
        return False  # the tag already names this manifest
    image_id = engine.pull(ImageRef.parse(base.ref).with_digest(base.digest), credentials)
    engine.tag(image_id, base.ref)
    return True


def image_created(
    engine: "Engine", ref: ImageRef | str, digest: str, credentials: Optional[RegistryCredentials] = None
) -> pendulum.DateTime:
    """When the image the registry holds as ``ref`` (manifest ``digest``) was built.

    Read from the daemon when it has that very image (its repo digests name the
    digest); pulled by digest otherwise.
    """
    pinned = ImageRef.parse(f"{ImageRef.parse(str(ref)).name}@{digest}")  # as repo digests are written
    local = local_facts(engine, ref)
    if local is None or str(pinned) not in local.repo_digests:
        engine.pull(pinned, credentials)
        local = local_facts(engine, pinned)
    if local is None or not local.created:
        raise FlyImageError(f"cannot read the creation time of {pinned}: not in the daemon after pulling it")
    created = pendulum.parse(local.created)
    assert isinstance(created, pendulum.DateTime)
    return created


def verify_image(
    engine: "Engine",
    image_id: str,
    plan: BuildPlan,
    command: Sequence[str] = (),
    *,
    timeout: Optional[float] = 300,
    secrets: Iterable[Optional[str]] = (),
) -> str:
    """Check a rebuilt image before it is published; return what was checked.

    Always: the daemon's image carries the plan's hash and base digests (it is the image
    of *this* plan, built from these bases). With ``command``: it runs in the image with
    no network and must exit 0.

    Raises:
        VerificationError: naming what failed (command output tail, secrets redacted).
    """
    local = local_facts(engine, image_id)
    if local is None:
        raise VerificationError(f"image {image_id} is not in the Docker daemon")
    if local.labels.get(PLAN_LABEL) != plan.hash:
        raise VerificationError(f"image {image_id[:19]} was not built from plan {plan.content_tag} (label {PLAN_LABEL})")
    expected = plan.image_labels.get(BASE_LABEL)
    if local.labels.get(BASE_LABEL) != expected:
        raise VerificationError(
            f"image {image_id[:19]} records base digests {local.labels.get(BASE_LABEL)!r}, expected {expected!r}"
        )
    if not command:
        return "labels"
    code, output = engine.run(image_id, list(command), network="none", timeout=timeout)
    if code != 0:
        tail = redact("\n".join(output.strip().splitlines()[-20:]), secrets)
        raise VerificationError(f"verification command {shlex.join(command)!r} exited {code}:\n{tail}")
    return f"labels, {shlex.join(command)}"
