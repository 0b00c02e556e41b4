"""``DockerImage`` for ``flow.deploy(image=...)``: Prefect's, content-addressed.

A drop-in subclass of :class:`prefect.docker.DockerImage` (so type checks and
``isinstance`` tests that expect Prefect's class pass). Name handling is Prefect's:
the namespace defaults to ``PREFECT_DEFAULT_DOCKER_BUILD_NAMESPACE`` and a tag in the
name plus ``tag=`` raises "Only one tag can be provided". The differences:

- **The default tag is the plan's content tag** (16 hex digits of the plan hash), not a
  timestamp, so an unchanged project gets the same reference every time.
- **Nothing is rebuilt or re-pushed needlessly**: :meth:`DockerImage.build` builds only
  if the daemon lacks the image of this plan, :meth:`DockerImage.push` pushes only if
  the registry lacks it. The digest is recorded (:attr:`DockerImage.digest`,
  :attr:`DockerImage.pinned`).
- **``dockerfile="auto"`` never writes into the project**: the default Dockerfile text
  is built from memory. A ``Dockerfile`` already in the context is an error
  (:class:`~prefect_flyimage.dockerfile.DockerfileExistsError`, a ``ContextError``
  naming it) — Prefect raises too, but only after starting to write.
- **The ``context`` build kwarg is honoured** (Prefect 3.8.8 only honours it for its
  docker-py backend); it defaults to the current directory.
- **Code-only redeploys append in the registry** (issue 12): see :meth:`DockerImage.build`;
  ``append=False`` (or ``$PREFECT_FLYIMAGE_APPEND=0``) opts out.
- **Typed errors** from :mod:`prefect_flyimage.errors`; ``credentials=`` (ours,
  prefect-docker's ``DockerRegistryCredentials`` or a dict) is used for the registry
  check and the push, otherwise the docker config (``docker login``) is.

``pull`` defaults to ``True`` like Prefect's (always fetch a fresh base image); pass
``pull=False`` when the base image only exists locally.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, TextIO

from prefect.docker.docker_image import DockerImage as _PrefectDockerImage
from prefect.settings import PREFECT_DEFAULT_DOCKER_BUILD_NAMESPACE

from . import _args, pipeline
from ._mirror import check_mirrors
from .context import check_context_dir
from .credentials import CredentialsLike, as_credentials
from .dockerfile import DockerfileExistsError, default_dockerfile_text
from .errors import InvalidArgumentError, InvalidReferenceError
from .names import ImageRef, split_repository_path
from .plan import BuildPlan, BuildResult

__all__ = ["BUILD_BACKENDS", "DockerImage", "plan_for_build", "resolve_image_name", "split_name_and_tag"]

logger = logging.getLogger("prefect_flyimage")

#: Accepted ``build_backend`` values and the plan backend each maps to. Prefect's
#: values keep their meaning: "docker-py" (its default) is docker-py's classic builder,
#: taking BuildKit only for Dockerfiles the classic builder cannot build (``RUN --mount``,
#: heredocs) or when ``PREFECT_FLYIMAGE_BUILD_BACKEND=buildkit`` asks; "buildx" is our
#: BuildKit (docker CLI) backend. "auto" and "buildkit" are our spellings of the same.
BUILD_BACKENDS = {"docker-py": "auto", "buildx": "buildkit", "auto": "auto", "buildkit": "buildkit"}

# docker-py build kwargs that decide *what* is built (they enter the plan hash) and
# those that only decide *how* (plan fields that are not hashed).
_HASHED_KWARGS = {"buildargs", "labels", "target", "platform"}
_HOW_KWARGS = {"pull", "nocache", "network_mode"}
# Set by us from the plan; a caller passing them would be silently overridden.
_RESERVED_KWARGS = {"tag", "dockerfile", "fileobj", "custom_context", "encoding", "path", "context"}
_IGNORED_KWARGS = {"decode", "quiet", "stream_progress_to"}


def resolve_image_name(name: str) -> str:
    """Prefect's naming rule: add ``PREFECT_DEFAULT_DOCKER_BUILD_NAMESPACE`` to a bare name.

    ``name`` has no tag here. Raises :class:`InvalidReferenceError` for names Docker
    would reject and for digests (a digest names an existing image; nothing to build).
    """
    if "@" in name:
        _without_digest(name)
    namespace, repository = split_repository_path(name)
    if not namespace:
        namespace = PREFECT_DEFAULT_DOCKER_BUILD_NAMESPACE.value()
    full = "/".join(filter(None, [namespace, repository]))
    ImageRef.parse(full)  # the namespace setting could itself be invalid
    return full


def split_name_and_tag(name: str) -> tuple[str, Optional[str]]:
    """``(name, tag)`` of an image to build; a digest in ``name`` is an error.

    Prefect's ``parse_image_tag`` returns a digest as the "tag", from which Prefect's
    ``DockerImage`` makes the invalid ``name:sha256:...``; a digest names an existing
    image, so there is nothing to build: :class:`InvalidReferenceError` says so.
    """
    ref = _without_digest(name)
    return ref.name, ref.tag


def _without_digest(name: str) -> ImageRef:
    """``name`` parsed; a digest in it is an :class:`InvalidReferenceError` (nothing to build)."""
    ref = ImageRef.parse(name)
    if ref.digest is not None:
        raise InvalidReferenceError(
            name, "digest", ref.digest, "names an existing image; to build one, drop the digest"
        )
    return ref


def plan_for_build(
    repository: str,
    *,
    context: Optional[Path | str] = None,
    dockerfile: str | Path = "auto",
    tag: Optional[str] = None,
    extra_tags: Iterable[str] = (),
    build_kwargs: Optional[Mapping[str, Any]] = None,
    backend: str = "docker-py",
    default_pull: bool = True,
) -> tuple[BuildPlan, dict[str, Any]]:
    """Turn Prefect-style build arguments into a :class:`BuildPlan`.

    Args:
        repository: full image name without tag.
        context: the build context folder (default: the current directory).
        dockerfile: ``"auto"`` for Prefect's default Dockerfile (built from memory,
            never written), or a path relative to the context (or absolute).
        tag: explicit tag; the content tag is used (and always pushed) otherwise.
        extra_tags: further tags for the same image.
        build_kwargs: docker-py ``build`` arguments. ``buildargs``, ``labels``,
            ``target`` and ``platform`` enter the plan hash; ``pull``, ``nocache`` and
            ``network_mode`` steer the build; anything else (``shmsize``,
            ``extra_hosts``, ...) is passed to docker-py as is and does not change the tag.
        backend: a key of :data:`BUILD_BACKENDS` (default: Prefect's ``"docker-py"``).
        default_pull: ``pull`` when ``build_kwargs`` does not say (Prefect: ``True``).

    Returns:
        The plan and the remaining docker-py keyword arguments.

    Raises:
        ContextError: missing context or Dockerfile; ``DockerfileExistsError`` (a
            ``ContextError``) for ``dockerfile="auto"`` when the context has a Dockerfile.
        ValueError: an unknown backend, or build kwargs we must set ourselves.
    """
    if backend not in BUILD_BACKENDS:
        raise InvalidArgumentError("build_backend", f"{backend!r} is not one of {', '.join(BUILD_BACKENDS)}")
    kwargs = dict(build_kwargs or {})
    for key in _IGNORED_KWARGS:
        kwargs.pop(key, None)
    reserved = sorted(k for k in kwargs if k in _RESERVED_KWARGS)
    if reserved:
        raise InvalidArgumentError(
            "build_kwargs", f"option(s) {', '.join(reserved)} are set by prefect-flyimage; "
            "pass the context, Dockerfile and tag as their own arguments"
        )
    root = check_context_dir(context if context is not None else Path.cwd())
    fields: dict[str, Any] = dict(
        tag=tag,
        extra_tags=tuple(t for t in extra_tags if t and t != tag),
        target=kwargs.pop("target", None),
        platform=_platform_field(kwargs.pop("platform", None), kwargs.pop("platforms", None)),
        pull=bool(kwargs.pop("pull", default_pull)),
        no_cache=bool(kwargs.pop("nocache", False)),
        network=kwargs.pop("network_mode", None),
        backend=BUILD_BACKENDS[backend],
        pin_bases=True,  # bases are inputs: resolved to digests before hashing (issue 16)
    )
    build_args = kwargs.pop("buildargs", None)
    labels = kwargs.pop("labels", None)
    if str(dockerfile) == "auto":
        existing = root / "Dockerfile"
        if existing.exists():
            raise DockerfileExistsError(
                # Prefect's wording first, so code matching prefect-docker's message still matches.
                f"Dockerfile already exists: dockerfile='auto' would generate one, but the build context "
                f"{str(root)!r} has {str(existing)!r}; pass dockerfile='Dockerfile' to build it, or remove it",
                existing,
            )
        plan = BuildPlan(
            context=root,
            dockerfile_text=default_dockerfile_text(root),
            repository=repository,
            build_args=() if build_args is None else build_args,  # BuildPlan checks and normalises them
            labels=() if labels is None else labels,
            **fields,
        )
    else:
        plan = BuildPlan.from_dockerfile(
            root, repository, dockerfile=dockerfile, build_args=build_args, labels=labels, **fields
        )
    return plan, kwargs


def _platform_field(platform: Any, platforms: Any) -> Optional[str]:
    """Prefect's ``platform`` (a string or a list) and buildx's ``platforms`` (a list) as
    the plan's one hashed field: ``"linux/amd64,linux/arm64"`` is one image index."""
    value = platforms if platforms else platform
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(p, str) for p in value):
        raise InvalidArgumentError("platforms", f"expected a list of platforms like ['linux/amd64', 'linux/arm64'], not {value!r:.80}")
    return ",".join(value)


class DockerImage(_PrefectDockerImage):
    """Configuration used to build and push a Docker image for a deployment.

    Same constructor as :class:`prefect.docker.DockerImage`; see the module docstring
    for the differences.

    Args:
        name: image name, with registry and repository, optionally with a tag.
        tag: the tag (default: the plan's content tag). Only one of this and a tag in
            ``name`` may be given.
        dockerfile: ``"auto"`` (Prefect's default Dockerfile, from memory) or the path
            of a Dockerfile relative to the context.
        stream_progress_to: where build and push output goes (``None``: nowhere).
        build_backend: Prefect's ``"docker-py"`` (default; BuildKit still builds
            Dockerfiles only it can build) or ``"buildx"`` (BuildKit); ``"auto"`` and
            ``"buildkit"`` are accepted too. Kept as given in :attr:`build_backend`, as
            Prefect does; the backend the plan uses is ``plan.backend``.
        credentials: registry credentials for the existence check and the push.
        append: ``False`` turns the code-only path off for this image (always build in
            the daemon and push the built image), like ``$PREFECT_FLYIMAGE_APPEND=0``
            for every plan. Not hashed: it changes how, not what.
        **build_kwargs: docker-py build arguments (see :func:`plan_for_build`);
            ``context`` sets the build context (default: the current directory);
            ``mirrors`` (ours, not Prefect's): further repositories that get a copy of the
            pushed image, registry to registry (see :func:`pipeline.ensure`).
    """

    def __init__(
        self,
        name: str,
        tag: Optional[str] = None,
        dockerfile: str = "auto",
        stream_progress_to: Optional[TextIO] = sys.stdout,
        build_backend: str = "docker-py",
        credentials: CredentialsLike = None,
        append: bool = True,
        **build_kwargs: Any,
    ) -> None:
        # Deliberately not calling Prefect's __init__: it would stamp a timestamp tag and
        # validate with its looser parser. Every attribute it sets is set here.
        image_name, image_tag = split_name_and_tag(name)
        _args.optional_text("tag", tag)
        self.append: bool = _args.boolean("append", append)
        if not isinstance(dockerfile, Path):
            _args.text("dockerfile", dockerfile)
        if tag and image_tag:
            raise InvalidArgumentError(
                "tag", f"Only one tag can be provided - both {image_tag!r} and {tag!r} were provided as tags."
            )
        if build_backend not in BUILD_BACKENDS:
            raise InvalidArgumentError("build_backend", f"Invalid build_backend {build_backend!r}. Must be one of {', '.join(BUILD_BACKENDS)}.")
        self.name: str = resolve_image_name(image_name)
        self._tag: Optional[str] = tag or image_tag
        if self._tag is not None:
            ImageRef.parse(f"{self.name}:{self._tag}")
        self.dockerfile: str = dockerfile
        self.stream_progress_to: Optional[TextIO] = stream_progress_to
        self.build_backend: str = build_backend
        self.build_kwargs: dict[str, Any] = build_kwargs
        self._pushed_during_build: bool = False
        self._push_in_build: bool = False
        self._mirrors: Any = build_kwargs.get("mirrors")
        self.credentials = as_credentials(credentials, ImageRef.parse(self.name).registry)
        self._plan: Optional[BuildPlan] = None
        self._extra: dict[str, Any] = {}
        self._result: Optional[BuildResult] = None

    def __repr__(self) -> str:
        return f"DockerImage(name={self.name!r}, tag={self._tag!r}, dockerfile={self.dockerfile!r})"

    # ---- the plan ------------------------------------------------------------------
    def _make_plan(self) -> BuildPlan:
        kwargs = dict(self.build_kwargs)
        context = kwargs.pop("context", None)
        # Prefect's buildx `push=True`: build() pushes too, and push() then does nothing
        self._push_in_build = bool(kwargs.pop("push", False))
        self._mirrors = kwargs.pop("mirrors", None)  # not a build option: where the push goes too
        plan, self._extra = plan_for_build(
            self.name,
            context=context if context is not None else Path.cwd(),
            dockerfile=self.dockerfile,
            tag=self._tag,
            build_kwargs=kwargs,
            backend=self.build_backend,  # Prefect's value; plan_for_build maps it to ours
        )
        return plan if self.append else plan.with_(append=False)

    @property
    def plan(self) -> BuildPlan:
        """The :class:`BuildPlan` of this image (hashes the context on first use)."""
        if self._plan is None:
            self._plan = self._resolved(self._make_plan())
        return self._plan

    def _resolved(self, plan: BuildPlan) -> BuildPlan:
        """``plan`` with its base images resolved to digests: what is built and tagged."""
        return pipeline.resolve_bases(plan, self.credentials)

    @property
    def tag(self) -> str:  # type: ignore[override]
        """The explicit tag, or the plan's content tag (which hashes the context once)."""
        return self._tag if self._tag is not None else self.plan.content_tag

    @tag.setter
    def tag(self, value: Optional[str]) -> None:
        if value is not None:
            ImageRef.parse(f"{self.name}:{value}")
        self._tag = value
        self._plan = None
        self._result = None

    @property
    def reference(self) -> str:
        """``name:tag``: what ``flow.deploy`` puts in the deployment's ``image`` job variable."""
        return f"{self.name}:{self.tag}"

    # ---- results --------------------------------------------------------------------
    @property
    def result(self) -> Optional[BuildResult]:
        """The :class:`BuildResult` of the last :meth:`build` or :meth:`push`."""
        return self._result

    @property
    def digest(self) -> Optional[str]:
        """The registry digest, once pushed (or found in the registry)."""
        return self._result.digest if self._result else None

    @property
    def pinned(self) -> str:
        """``name@sha256:...`` once the digest is known, else :attr:`reference`."""
        return f"{self.name}@{self.digest}" if self.digest else self.reference

    # ---- actions --------------------------------------------------------------------
    def build(self) -> None:
        """Build the image into the local daemon unless the daemon already has it.

        The context is hashed afresh, so edits made since :attr:`reference` was first
        read are picked up (and :attr:`tag` follows them).

        ``build()`` cannot know whether ``push()`` follows (``flow.deploy(push=False)``
        calls only ``build()``), so it only reads the registry: a registry holding this
        plan's image satisfies it, and a registry holding the plan's *dependency image*
        (this project published there before) gets the code appended at once (no
        daemon; ``push()`` then only confirms it). It never pushes the dependency image
        or a built image: a registry without the dependency image means a build in the
        daemon and nothing written to any registry. ``append=False`` turns the append off.
        """
        self._plan = self._resolved(self._make_plan())  # bases are inputs: their digests enter the content tag
        # A registry that already holds this plan's image satisfies the build as well
        # (flow.deploy pushes next; a worker pulls): the unchanged redeploy never needs the daemon.
        self._result = pipeline.ensure(
            self._plan,
            push=self._push_in_build,
            credentials=self.credentials,
            stream_progress_to=self.stream_progress_to,
            build_kwargs=self._extra or None,
            accept_registry=not self._push_in_build,
            mirrors=self._mirrors if self._push_in_build else None,
        )
        self._pushed_during_build = self._push_in_build
        logger.info("%s %s", self._result.reference, "built" if self._result.built else "already built: build skipped")

    def push(self) -> None:
        """Push the image unless the registry already holds it (builds first if needed)."""
        plan = self.plan
        if self._pushed_during_build and self._result is not None and self._result.plan_hash == plan.hash:
            # Prefect's buildx semantics: build(push=True) already pushed
            logger.info("%s pushed by the build: push skipped (%s)", self._result.reference, self._result.digest)
            return
        if self._result is not None and self._result.plan_hash == plan.hash and self._result.digest and not self._result.built:
            # build() just found this very image in the registry: nothing to push.
            logger.info("%s already in the registry: push skipped (%s)", self._result.reference, self._result.digest)
            self._result = pipeline.mirrored(
                self._result, check_mirrors(self._mirrors, self.name), self.credentials, stream=self.stream_progress_to
            )
            return
        result = pipeline.ensure(
            plan,
            push=True,
            credentials=self.credentials,
            stream_progress_to=self.stream_progress_to,
            build_kwargs=self._extra or None,
            mirrors=self._mirrors,
        )
        if self._result is not None and self._result.plan_hash == result.plan_hash:
            # Keep what build() did, so .result tells the whole story of this deploy.
            result = replace(result, built=self._result.built or result.built)
        self._result = result
        logger.info("%s %s (%s)", result.reference, "pushed" if result.pushed else "already in the registry: push skipped", result.digest)
