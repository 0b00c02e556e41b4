"""Build plans and their results.

A :class:`BuildPlan` holds everything that decides the bytes of an image. Its
:attr:`~BuildPlan.hash` covers the Dockerfile text, build args, target, platform,
labels and every file of the context after ``.dockerignore`` (path, kind, mode and
contents), length-prefixed so that no two different plans collide by concatenation.
The first :data:`TAG_LENGTH` hex digits of the hash are the image's default tag.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from ._encoding import length_prefixed as _lp
from .context import BuildContext, check_context_dir
from .errors import ContextError, DockerfileNotFoundError, InvalidArgumentError, SpecError
from .names import ImageRef, validate_platform, validate_tag

#: Hex digits of the plan hash used as the default ("content") tag: 64 bits.
TAG_LENGTH = 16
#: Label every image built by a plan carries, so a local image can be matched to its plan.
PLAN_LABEL = "io.prefect-flyimage.plan-hash"
#: Label naming the resolved base images (``ref=digest,...``, sorted; ``ref=local:sha256:...``
#: for a daemon image id), written when the plan has :attr:`BuildPlan.bases`.
BASES_LABEL = "io.prefect-flyimage.base-digests"

BACKENDS = ("auto", "docker-py", "buildkit")


BuildArgs = Union[Mapping[str, Any], Iterable[tuple[str, Any]], None]


def _scalar(what: str, key: str, value: Any) -> Optional[str]:
    """The text Docker receives for one value; ``None`` means unset (the key is left out)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"  # what docker-py's json.dumps sends
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError([f"{what} {key!r}: {value!r} is not a finite number"])
        return json.dumps(value)
    raise SpecError([
        f"{what} {key!r}: value of type {type(value).__name__} ({value!r:.60}) is not a string, number or bool; "
        "pass the text the Dockerfile should see, or None to leave it unset"
    ])


def build_arg_pairs(value: BuildArgs, what: str = "build arg") -> tuple[tuple[str, str], ...]:
    """Normalise build args (or labels): sorted ``(key, text)`` pairs.

    Takes a mapping or ``(key, value)`` pairs. ``None`` values mean *unset*, as in
    docker-py and Prefect: the key is dropped, so it is neither passed to Docker nor
    hashed (a plan without ``None`` values hashes as before). ``str`` passes as is;
    ``bool`` becomes ``"true"``/``"false"`` and numbers their JSON text, which is what
    docker-py sends. Anything else -- lists, dicts, bytes, objects -- and keys that are
    not non-empty strings without ``=`` raise :class:`SpecError` naming the key.
    """
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, (Mapping, Iterable)):
        raise SpecError([f"{what}s must be a mapping of names to values, not {type(value).__name__} ({value!r:.60})"])
    items = value.items() if isinstance(value, Mapping) else value
    out: dict[str, str] = {}
    for item in items:
        if not isinstance(value, Mapping) and (not isinstance(item, (tuple, list)) or len(item) != 2):
            raise SpecError([f"{what}s must be a mapping or (name, value) pairs; got the item {item!r:.60}"])
        key, raw = item
        if not isinstance(key, str) or not key or "=" in key:
            raise SpecError([f"{what} name {key!r} must be a non-empty string without '='"])
        text = _scalar(what, key, raw)
        if text is None:
            out.pop(key, None)
        else:
            out[key] = text
    return tuple(sorted(out.items()))


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
        if not isinstance(self.id, str) or not self.id:
            raise SpecError([f"build secret id must be a non-empty str, not {self.id!r}"])
        for name in ("src", "env"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (str, Path)) or not str(value)):
                raise SpecError([f"build secret {self.id!r}: {name} must be a non-empty str, not {type(value).__name__}"])
        if (self.src is None) == (self.env is None):
            raise SpecError([f"build secret {self.id!r} needs exactly one of src= or env="])
        if isinstance(self.src, Path):
            object.__setattr__(self, "src", str(self.src))

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
    #: Apply a code-only tail in the registry when the plan splits (see ``_split``); False builds.
    append: bool = True
    dockerfile_name: Optional[str] = field(default=None, compare=False)
    #: Use the persistent stat cache when hashing the context; off for staged, throw-away contexts.
    stat_cache: bool = field(default=True, compare=False)
    #: A context assembled from several places (e.g. an ``Image`` spec's layers) instead of
    #: the folder ``context``: it hashes the files where they are and is staged only to build
    #: (``entries()``, ``digest()``, ``total_size()``, ``stage(folder)``, ``staged_at``).
    generated_context: Optional[Any] = field(default=None, compare=False, repr=False)
    #: Resolved base images, ``((ref, digest), ...)`` in Dockerfile order (``None``: not
    #: resolved). Hashed as an added section when non-empty (see :mod:`._bases`).
    bases: Optional[tuple[tuple[str, str], ...]] = None
    #: Let the pipeline resolve ``bases`` before hashing (registry digest with ``pull``,
    #: the daemon's image id without). Front doors that follow Prefect turn it on.
    pin_bases: bool = False

    def __post_init__(self) -> None:
        _check_fields(self)
        object.__setattr__(self, "context", check_context_dir(self.context))
        object.__setattr__(self, "build_args", build_arg_pairs(self.build_args))
        object.__setattr__(self, "labels", build_arg_pairs(self.labels, "label"))
        object.__setattr__(self, "extra_tags", tuple(validate_tag(t) for t in self.extra_tags))
        if self.platform is not None:
            # "linux/amd64,linux/arm64": one image index (BuildKit through buildx only)
            for one in self.platform.split(","):
                validate_platform(one)
        ref = ImageRef.parse(self.repository)  # raises InvalidReferenceError naming the bad part
        if ref.tag is not None or ref.digest is not None:
            raise ContextError(f"repository {self.repository!r} must not carry a tag or digest; pass tag= instead")
        if self.tag is not None:
            validate_tag(self.tag)
        if self.backend not in BACKENDS:
            raise InvalidArgumentError("backend", f"{self.backend!r} is not one of {', '.join(BACKENDS)}")

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
        if not isinstance(dockerfile, (str, Path)) or not str(dockerfile).strip():
            raise ContextError(f"dockerfile must be a non-empty path, not {dockerfile!r}")
        root = check_context_dir(context)
        path = Path(dockerfile)
        full = path if path.is_absolute() else root / path
        if not full.is_file():
            raise DockerfileNotFoundError(
                f"Cannot locate specified Dockerfile: Dockerfile {str(dockerfile)!r} not found in build context {str(root)!r}"
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
            build_args=() if build_args is None else build_args,  # type: ignore[arg-type]  # normalised by __post_init__
            labels=() if labels is None else labels,  # type: ignore[arg-type]
            dockerfile_name=rel,
            **kwargs,
        )

    def with_(self, **changes: Any) -> "BuildPlan":
        """A copy of this plan with ``changes`` applied."""
        return replace(self, **changes)

    def with_bases(self, bases: tuple[tuple[str, str], ...]) -> "BuildPlan":
        """A copy with resolved ``bases`` (``((ref, digest), ...)``); the context hash is kept."""
        new = replace(self, bases=tuple((str(r), str(d)) for r, d in bases))
        if "build_context" in self.__dict__:
            new.__dict__["build_context"] = self.__dict__["build_context"]
        return new

    @property
    def build_dockerfile_text(self) -> str:
        """The Dockerfile text sent to the daemon: :attr:`dockerfile_text` with every
        resolved base pinned by digest (the hash covers the text as written)."""
        if not self.bases:
            return self.dockerfile_text
        from ._bases import pinned_dockerfile

        return pinned_dockerfile(self.dockerfile_text, dict(self.build_args), dict(self.bases))

    @cached_property
    def build_context(self) -> BuildContext:
        """The :class:`BuildContext` (file list and digests) this plan sends to Docker."""
        if self.generated_context is not None:
            return self.generated_context  # type: ignore[no-any-return]
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
        if self.bases:  # added only when present: a plan without resolved bases hashes as before
            h.update(_lp("bases", *(s for kv in self.bases for s in kv)))
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
        """The labels applied at build time: the plan's own, :data:`PLAN_LABEL`, the
        inputs manifest (:data:`~prefect_flyimage.inputs.INPUTS_LABEL`) and, with resolved
        bases, :data:`BASES_LABEL` (all derived, not hashed themselves)."""
        from .inputs import INPUTS_LABEL, label_for

        labels = {**dict(self.labels), PLAN_LABEL: self.hash, INPUTS_LABEL: label_for(self)}
        if self.bases:  # derived from the hashed bases, like PLAN_LABEL: which bases the image was built from
            labels[BASES_LABEL] = ",".join(sorted(f"{ref}={digest}" for ref, digest in self.bases))
        return labels

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
            **({"bases": dict(self.bases)} if self.bases is not None else {}),
        }


_OPTIONAL_TEXT = ("tag", "target", "platform", "network", "dockerfile_name")


def _check_fields(plan: BuildPlan) -> None:
    """Type checks of every field, all problems at once, before anything touches them."""
    problems = []
    if not isinstance(plan.context, (str, Path)) or not str(plan.context):
        problems.append(f"context must be a folder path, not {plan.context!r:.60}")
    if not isinstance(plan.dockerfile_text, str) or not plan.dockerfile_text.strip():
        problems.append(f"dockerfile_text must be the non-empty text of a Dockerfile, not {plan.dockerfile_text!r:.60}")
    if not isinstance(plan.repository, str):
        problems.append(f"repository must be a str such as '127.0.0.1:5000/team/app', not {type(plan.repository).__name__}")
    for name in _OPTIONAL_TEXT:
        value = getattr(plan, name)
        if value is not None and (not isinstance(value, str) or not value):
            problems.append(f"{name} must be a non-empty str or None, not {value!r:.60}")
    for name in ("pull", "no_cache", "stat_cache", "pin_bases", "append"):
        if not isinstance(getattr(plan, name), bool):
            problems.append(f"{name} must be True or False, not {getattr(plan, name)!r:.60}")
    if isinstance(plan.extra_tags, str) or not isinstance(plan.extra_tags, Iterable):
        problems.append(f"extra_tags must be a sequence of tags, not {plan.extra_tags!r:.60}")
    elif any(not isinstance(t, str) for t in plan.extra_tags):
        problems.append(f"extra_tags must all be str, got {tuple(plan.extra_tags)!r:.80}")
    if isinstance(plan.secrets, (str, BuildSecret)) or not isinstance(plan.secrets, Iterable):
        problems.append(f"secrets must be a sequence of BuildSecret, not {plan.secrets!r:.60}")
    else:
        object.__setattr__(plan, "secrets", tuple(plan.secrets))
        bad = [s for s in plan.secrets if not isinstance(s, BuildSecret)]
        if bad:
            problems.append(f"secrets must be BuildSecret objects, not {type(bad[0]).__name__}")
    if problems:
        raise SpecError([f"BuildPlan: {p}" for p in problems])


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
    #: Base images the plan was built from, ``((ref, digest), ...)``; ``"offline"`` marks one built by tag.
    bases: tuple[tuple[str, str], ...] = ()
    #: Markdown saying what changed against the registry's previous image, when a task
    #: built one (``inputs.why_markdown``); shown in the build artifact.
    why: Optional[str] = field(default=None, compare=False)
    #: Further repositories (mirrors) that hold the image at :attr:`digest`, confirmed after the push.
    mirrors: tuple[str, ...] = ()
    #: What the build artifact shows beside the table (filled by the tasks): ``inputs`` (a
    #: summary), ``platforms``, ``provenance`` (attestation manifests in the registry's
    #: index), ``built_by`` (the flow run: ``id``, ``name``, ``url``).
    details: Mapping[str, Any] = field(default_factory=dict, compare=False)

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
            "bases": dict(self.bases),
            "mirrors": list(self.mirrors),
        }
