"""Build plans and their results.

A :class:`BuildPlan` holds everything that decides the bytes of an image. Its
:attr:`~BuildPlan.hash` covers the Dockerfile text, build args, target, platform,
labels and every file of the context after ``.dockerignore`` (path, kind, mode and
contents), length-prefixed so that no two different plans collide by concatenation.
The first :data:`TAG_LENGTH` hex digits of the hash are the image's default tag.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Optional

from .context import BuildContext, check_context_dir
from .errors import ContextError
from .names import ImageRef, validate_tag

#: Hex digits of the plan hash used as the default ("content") tag: 64 bits.
TAG_LENGTH = 16
#: Label every image built by a plan carries, so a local image can be matched to its plan.
PLAN_LABEL = "io.prefect-flyimage.plan-hash"

BACKENDS = ("auto", "docker-py", "buildkit")


def _pairs(value: Optional[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (value or {}).items()))


def _lp(*parts: str) -> bytes:
    return b"".join(len(b).to_bytes(8, "big") + b for b in (p.encode("utf-8", "surrogateescape") for p in parts))


@dataclass(frozen=True)
class BuildSecret:
    """A BuildKit build secret (``RUN --mount=type=secret,id=...``).

    Exactly one of ``src`` (a file on the host) or ``env`` (an environment variable of
    the building process) gives its value. Only ``id`` enters the plan hash: the value
    never reaches a log, a tag or a layer.
    """

    id: str
    src: Optional[str] = None
    env: Optional[str] = None

    def __post_init__(self) -> None:
        if (self.src is None) == (self.env is None):
            raise ValueError(f"build secret {self.id!r} needs exactly one of src= or env=")

    def __repr__(self) -> str:
        return f"BuildSecret(id={self.id!r}, {'src' if self.src else 'env'}=...)"


@dataclass(frozen=True)
class BuildPlan:
    """Everything that decides an image's bytes, plus where it goes.

    Build with :meth:`from_dockerfile` (a Dockerfile on disk) or directly with
    Dockerfile text. ``repository`` is the full name without tag
    (``127.0.0.1:5000/team/app``); ``tag`` an explicit tag (the content tag is pushed too).
    Fields after ``labels`` steer *how* to build and do not enter the hash.
    """

    context: Path
    dockerfile_text: str
    repository: str
    tag: Optional[str] = None
    build_args: tuple[tuple[str, str], ...] = ()
    target: Optional[str] = None
    platform: Optional[str] = None
    labels: tuple[tuple[str, str], ...] = ()
    # --- not hashed: how to build, not what ---
    extra_tags: tuple[str, ...] = ()
    secrets: tuple[BuildSecret, ...] = ()
    network: Optional[str] = None
    pull: bool = False
    no_cache: bool = False
    backend: str = "auto"
    dockerfile_name: Optional[str] = field(default=None, compare=False)
    #: Use the persistent stat cache when hashing the context; off for staged, throw-away contexts.
    stat_cache: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "context", check_context_dir(self.context))
        object.__setattr__(self, "build_args", _pairs(dict(self.build_args)))
        object.__setattr__(self, "labels", _pairs(dict(self.labels)))
        object.__setattr__(self, "extra_tags", tuple(validate_tag(t) for t in self.extra_tags))
        ImageRef.parse(self.repository)  # raises InvalidReferenceError naming the bad part
        if ":" in self.repository.rsplit("/", 1)[-1] or "@" in self.repository:
            raise ContextError(f"repository {self.repository!r} must not carry a tag or digest; pass tag= instead")
        if self.tag is not None:
            validate_tag(self.tag)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")

    @classmethod
    def from_dockerfile(
        cls,
        context: Path | str,
        repository: str,
        *,
        dockerfile: str | Path = "Dockerfile",
        tag: Optional[str] = None,
        build_args: Optional[Mapping[str, Any]] = None,
        labels: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> "BuildPlan":
        """Plan a build of ``context`` with the Dockerfile at ``dockerfile``.

        ``dockerfile`` is relative to the context (as in ``docker build -f``) or
        absolute. A missing Dockerfile, or one outside the context, raises
        :class:`ContextError` naming it.
        """
        root = check_context_dir(context)
        path = Path(dockerfile)
        full = path if path.is_absolute() else root / path
        if not full.is_file():
            raise ContextError(
                f"Dockerfile {str(dockerfile)!r} not found in build context {str(root)!r}"
                + ("" if full.exists() else "; create it, or pass dockerfile='auto' where supported"),
                full,
            )
        try:
            rel = str(full.resolve().relative_to(root))
        except ValueError:
            # docker would accept it, but then the Dockerfile is not part of what the
            # context hash and .dockerignore describe: almost always a wrong path.
            raise ContextError(
                f"Dockerfile {str(dockerfile)!r} is outside the build context {str(root)!r}; move it into "
                "the context, or pass its text as BuildPlan(dockerfile_text=...)",
                full,
            ) from None
        return cls(
            context=root,
            dockerfile_text=full.read_text(),
            repository=repository,
            tag=tag,
            build_args=_pairs(build_args),
            labels=_pairs(labels),
            dockerfile_name=rel,
            **kwargs,
        )

    def with_(self, **changes: Any) -> "BuildPlan":
        """A copy of this plan with ``changes`` applied."""
        return replace(self, **changes)

    @cached_property
    def build_context(self) -> BuildContext:
        """The :class:`BuildContext` (file list and digests) this plan sends to Docker."""
        return BuildContext(self.context, self.dockerfile_name, use_cache=self.stat_cache)

    @cached_property
    def hash(self) -> str:
        """Hex SHA-256 over everything that decides the image's bytes."""
        h = hashlib.sha256(b"prefect-flyimage-plan-v1\0")
        h.update(_lp("dockerfile", self.dockerfile_text))
        h.update(_lp("target", self.target or "", "platform", self.platform or ""))
        h.update(_lp("args", *(s for kv in self.build_args for s in kv)))
        h.update(_lp("labels", *(s for kv in self.labels for s in kv)))
        h.update(_lp("secrets", *sorted(s.id for s in self.secrets)))
        h.update(_lp("context", self.build_context.digest()))
        return h.hexdigest()

    @property
    def content_tag(self) -> str:
        """The default tag: the first :data:`TAG_LENGTH` hex digits of :attr:`hash`."""
        return self.hash[:TAG_LENGTH]

    @property
    def content_ref(self) -> ImageRef:
        """``repository:content_tag``: the reference existence checks look for."""
        return ImageRef.parse(f"{self.repository}:{self.content_tag}")

    @property
    def ref(self) -> ImageRef:
        """The reference users see: ``repository:tag``, the content tag by default."""
        return ImageRef.parse(f"{self.repository}:{self.tag or self.content_tag}")

    @property
    def all_tags(self) -> tuple[str, ...]:
        """Every tag the image gets: the chosen tag, the content tag, then extra tags."""
        seen: dict[str, None] = {}
        for t in (self.tag or self.content_tag, self.content_tag, *self.extra_tags):
            seen.setdefault(t, None)
        return tuple(seen)

    @property
    def image_labels(self) -> dict[str, str]:
        """The labels applied at build time: the plan's own, :data:`PLAN_LABEL` and the
        inputs manifest (:data:`~prefect_flyimage.inputs.INPUTS_LABEL`; not hashed)."""
        from .inputs import INPUTS_LABEL, label_for

        return {**dict(self.labels), PLAN_LABEL: self.hash, INPUTS_LABEL: label_for(self)}

    def needs_buildkit(self) -> bool:
        """True when only BuildKit can build this plan (secrets, ``RUN --mount``, heredocs)."""
        text = self.dockerfile_text
        return bool(self.secrets) or "--mount=" in text or "<<" in text

    def describe(self) -> dict[str, Any]:
        """What the hash covers, for ``prefect-flyimage inspect`` and artifacts."""
        entries = self.build_context.entries()
        return {
            "repository": self.repository,
            "tag": self.tag or self.content_tag,
            "hash": self.hash,
            "content_tag": self.content_tag,
            "context": str(self.context),
            "files": sum(1 for e in entries if e.kind == "file"),
            "bytes": self.build_context.total_size(),
            "context_digest": self.build_context.digest(),
            "dockerfile_sha256": hashlib.sha256(self.dockerfile_text.encode()).hexdigest(),
            "build_args": dict(self.build_args),
            "target": self.target,
            "platform": self.platform,
            "labels": dict(self.labels),
            "secrets": [s.id for s in self.secrets],
        }


@dataclass(frozen=True)
class BuildResult:
    """What :func:`prefect_flyimage.pipeline.ensure` did and produced."""

    reference: str  #: repository:tag
    plan_hash: str
    image_id: Optional[str] = None
    digest: Optional[str] = None  #: registry manifest digest, when pushed or found
    built: bool = False  #: False when the build was skipped (image existed)
    pushed: bool = False  #: False when nothing was pushed (registry held it, or push=False)
    size: Optional[int] = None
    tags: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def cached(self) -> bool:
        """True when neither a build nor a push happened."""
        return not self.built and not self.pushed

    @property
    def repository(self) -> str:
        """The reference without its tag."""
        return ImageRef.parse(self.reference).name

    @property
    def tag(self) -> Optional[str]:
        """The reference's tag."""
        return ImageRef.parse(self.reference).tag

    @property
    def pinned(self) -> str:
        """``repository@sha256:...`` when the digest is known, else :attr:`reference`."""
        return f"{self.repository}@{self.digest}" if self.digest else self.reference

    def as_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON output and deployment step results)."""
        return {
            "reference": self.reference,
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "pinned": self.pinned,
            "image_id": self.image_id,
            "plan_hash": self.plan_hash,
            "built": self.built,
            "pushed": self.pushed,
            "cached": self.cached,
            "size": self.size,
            "tags": list(self.tags),
            "timings": dict(self.timings),
        }
