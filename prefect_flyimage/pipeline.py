"""The one pipeline every front door goes through: plan -> observe -> build -> verify -> publish.

The pipeline alone owns two decisions:

- :func:`observe` -- where is this image? What the daemon holds (the content tag with
  the plan's label) and what the registry holds (the content tag's digest, then every
  other tag's). Typed: an :class:`Observation`.
- :func:`publish` -- make the registry hold it: push every tag, then ask the registry
  again; a digest is returned only when the registry holds it.

:func:`ensure` combines them: an unchanged plan whose content tag the registry holds
costs the hash plus one registry request, and no Docker daemon at all. Front doors
(``DockerImage``, steps, tasks, ``Image``, ``fly``, ``chain``, the CLI) build a plan
and call these; none of them checks existence or pushes on its own.

Concurrency: processes of one host that ensure the same plan take turns (a file lock
per plan, taken only when something must be built or pushed): the first builds and
pushes, the others then find the registry holding it. Across hosts, the first writer
of the content tag wins: a process whose push was overtaken adopts the registry's
image (pulls it, checks its plan label) instead of failing, so every result pairs an
image id with its own digest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, Sequence, TextIO, Union

from .credentials import CredentialsLike, RegistryCredentials, resolve_credentials
from .engine import Engine, EngineProtocol, LocalImage
from .errors import AuthenticationError, PushError, RegistryUnavailable
from .names import ImageRef
from .plan import TAG_LENGTH, BuildPlan, BuildResult

__all__ = [
    "Existence",
    "Observation",
    "RegistryLike",
    "Target",
    "ensure",
    "exists",
    "local_match",
    "observe",
    "plan_credentials",
    "publish",
    "push_local",
]

logger = logging.getLogger("prefect_flyimage")


# ---- what is observed -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where an image of a plan should be: its repository, plan hash and tags."""

    repository: str
    plan_hash: str
    tags: tuple[str, ...]  #: every tag; the content tag among them

    @classmethod
    def of(cls, plan: Union[BuildPlan, "Target"]) -> "Target":
        """The target of a plan (a target is its own)."""
        if isinstance(plan, Target):
            return plan
        return cls(plan.repository, plan.hash, plan.all_tags)

    @property
    def content_tag(self) -> str:
        """The plan's content tag (a prefix of the plan hash)."""
        return self.plan_hash[:TAG_LENGTH]

    @property
    def other_tags(self) -> tuple[str, ...]:
        """Every tag but the content tag."""
        return tuple(t for t in self.tags if t != self.content_tag)

    def ref(self, tag: Optional[str] = None) -> ImageRef:
        """``repository:tag`` (the content tag by default)."""
        return ImageRef.parse(f"{self.repository}:{tag or self.content_tag}")


@dataclass(frozen=True)
class Observation:
    """What the daemon and the registry hold for a :class:`Target` (what was asked)."""

    target: Target
    local: Optional[LocalImage] = None  #: daemon image tagged with the content tag *and* built from the plan
    remote_digest: Optional[str] = None  #: digest the registry holds for the content tag
    tag_digests: Mapping[str, Optional[str]] = field(default_factory=dict, hash=False)  #: registry digests of the other tags
    local_tags: Mapping[str, Optional[str]] = field(default_factory=dict, hash=False)  #: daemon image ids of the other tags
    unreachable: Optional[str] = None  #: why the registry could not be asked (the check failed closed)

    @property
    def local_id(self) -> Optional[str]:
        """Id of :attr:`local`, or ``None``."""
        return self.local.id if self.local else None

    @property
    def stale_tags(self) -> tuple[str, ...]:
        """Other tags the registry lacks or holds at another digest than the content tag."""
        return tuple(t for t in self.target.other_tags if self.tag_digests.get(t) != self.remote_digest)

    @property
    def published(self) -> bool:
        """The registry holds the content tag and every other tag at the same digest."""
        return bool(self.remote_digest) and not self.stale_tags

    @property
    def complete_locally(self) -> bool:
        """The daemon holds the plan's image under every tag."""
        return self.local is not None and all(self.local_tags.get(t) == self.local.id for t in self.target.other_tags)

    @property
    def anywhere(self) -> bool:
        """True if the image exists locally or in the registry."""
        return bool(self.local or self.remote_digest)


#: The name ``exists`` used to return (same fields: ``local_id``, ``remote_digest``).
Existence = Observation


class RegistryLike(Protocol):
    """Asks a registry which digest a reference has (``RegistryClient`` has this shape)."""

    def manifest_digest(self, ref: str) -> Optional[str]:
        """The manifest digest for ``ref``, ``None`` when the registry has none.

        Raises AuthenticationError (credentials refused) or RegistryUnavailable.
        """


def _open_registry(session: "_Session") -> RegistryLike:
    """The one place that decides how the registry is asked: directly (Distribution API,
    same credentials as the push), on a connection kept for the process."""
    from .registry import shared_client

    return shared_client(session.registry_host, session.credentials)


class _Session:
    """One pipeline call's engine and registry, each made only when first needed."""

    def __init__(
        self, engine: Optional[EngineProtocol], credentials: Optional[RegistryCredentials], registry: Optional[RegistryLike],
        registry_host: Optional[str],
    ) -> None:
        self._engine = engine
        self._own_engine: Optional[Engine] = None
        self._registry = registry
        self.registry_host = registry_host
        self.credentials = credentials

    @property
    def engine(self) -> EngineProtocol:
        if self._engine is None:
            self._own_engine = Engine()
            self._engine = self._own_engine
        return self._engine

    @property
    def registry(self) -> RegistryLike:
        if self._registry is None:
            self._registry = _open_registry(self)  # shared by the process: not closed here
        return self._registry

    def close(self) -> None:
        if self._own_engine is not None:
            self._own_engine.close()


@contextlib.contextmanager
def _session(
    engine: Optional[EngineProtocol], credentials: Optional[RegistryCredentials], registry: Optional[RegistryLike],
    repository: str,
) -> Iterator[_Session]:
    host = ImageRef.parse(repository).registry
    # Given credentials win; else the docker config's (a `docker login`, a credential
    # helper), as the daemon would use them for the push.
    session = _Session(engine, resolve_credentials(credentials, registry=host), registry, host)
    try:
        yield session
    finally:
        session.close()


def plan_credentials(plan: Union[BuildPlan, Target], credentials: CredentialsLike) -> Optional[RegistryCredentials]:
    """Credentials for the plan's registry: those given, else the docker config's (or ``None``)."""
    return resolve_credentials(credentials, registry=ImageRef.parse(plan.repository).registry)


def _observe(session: _Session, target: Target, *, local: bool, remote: bool, every_local_tag: bool = False) -> Observation:
    digest: Optional[str] = None
    tag_digests: dict[str, Optional[str]] = {}
    unreachable: Optional[str] = None
    if remote:
        try:
            digest = session.registry.manifest_digest(str(target.ref()))
            if digest:
                for tag in target.other_tags:
                    tag_digests[tag] = session.registry.manifest_digest(str(target.ref(tag)))
        except RegistryUnavailable as exc:
            unreachable, digest, tag_digests = str(exc), None, {}
    found: Optional[LocalImage] = None
    local_tags: dict[str, Optional[str]] = {}
    if local:
        image = session.engine.local_image(target.ref())
        found = image if image is not None and image.built_from(target.plan_hash) else None
        if found is not None and every_local_tag:
            for tag in target.other_tags:
                other = session.engine.local_image(target.ref(tag))
                local_tags[tag] = other.id if other else None
    return Observation(target, found, digest, tag_digests, local_tags, unreachable)


def observe(
    plan: Union[BuildPlan, Target],
    credentials: CredentialsLike = None,
    engine: Optional[EngineProtocol] = None,
    *,
    local: bool = True,
    remote: bool = True,
    every_local_tag: bool = False,
    registry: Optional[RegistryLike] = None,
) -> Observation:
    """What the daemon (``local``) and the registry (``remote``) hold for ``plan``.

    The registry is asked for the content tag, then (only when it holds it) for every
    other tag. An unreachable registry is recorded in :attr:`Observation.unreachable`
    (the check fails closed: nothing counts as published); refused credentials raise
    :class:`~prefect_flyimage.errors.AuthenticationError`. The daemon is contacted
    only when ``local`` is true.
    """
    target = Target.of(plan)
    with _session(engine, plan_credentials(target, credentials), registry, target.repository) as session:
        return _observe(session, target, local=local, remote=remote, every_local_tag=every_local_tag)


def exists(plan: BuildPlan, credentials: CredentialsLike = None, engine: Optional[EngineProtocol] = None, *, remote: bool = True) -> Observation:
    """:func:`observe` of the daemon and (if ``remote``) the registry (the older name)."""
    return observe(plan, credentials, engine, remote=remote)


def local_match(engine: EngineProtocol, plan: BuildPlan) -> Optional[str]:
    """Id of the local image tagged with the plan's content tag *and* built from this plan."""
    image = engine.local_image(plan.content_ref)
    return image.id if image is not None and image.built_from(plan.hash) else None


# ---- publishing -------------------------------------------------------------------------


def _push_tags(
    session: _Session, image_id: str, repository: str, tags: Sequence[str], stream: Optional[TextIO], timeout: Optional[float]
) -> dict[str, str]:
    """Tag ``image_id`` as ``repository:tag`` where needed and push each tag, in order."""
    pushed: dict[str, str] = {}
    for tag in tags:
        ref = ImageRef.parse(f"{repository}:{tag}")
        info = session.engine.local_image(ref)
        if info is None or info.id != image_id:
            session.engine.tag(image_id, ref)
        pushed[tag] = session.engine.push(ref, session.credentials, stream, timeout)
    return pushed


def _confirm(session: _Session, ref: ImageRef, digest: str) -> None:
    held = session.registry.manifest_digest(str(ref))
    if held != digest:
        raise PushError(f"pushed {ref} as {digest} but the registry reports {held or 'nothing'}", ref.registry)


def _publish(
    session: _Session, image_id: str, repository: str, tags: Sequence[str], main_tag: str,
    stream: Optional[TextIO], timeout: Optional[float],
) -> str:
    pushed = _push_tags(session, image_id, repository, tags, stream, timeout)
    digest = pushed[main_tag]
    odd = {t: d for t, d in pushed.items() if d != digest}
    if odd:
        raise PushError(f"pushed {repository} as {digest} under {main_tag} but as {odd} under other tags", ImageRef.parse(repository).registry)
    _confirm(session, ImageRef.parse(f"{repository}:{main_tag}"), digest)
    return digest


def publish(
    engine: Optional[EngineProtocol],
    image_id: str,
    repository: str,
    tags: Sequence[str],
    credentials: Optional[RegistryCredentials] = None,
    *,
    main_tag: Optional[str] = None,
    stream_progress_to: Optional[TextIO] = None,
    timeout: Optional[float] = None,
    registry: Optional[RegistryLike] = None,
) -> str:
    """Push ``image_id`` as ``repository:tag`` for every tag (in order); return the digest.

    Tags missing in the daemon are added first. Every push must report the same
    digest, and afterwards the registry must hold it under ``main_tag`` (default: the
    first tag): nothing is ever reported as published that the registry lacks.
    """
    with _session(engine, credentials, registry, repository) as session:
        return _publish(session, image_id, repository, list(tags), main_tag or tags[0], stream_progress_to, timeout)


def _adopt(session: _Session, target: Target, digest: str) -> str:
    """Make the registry's image of the plan (``digest``) the local one; return its id.

    Used when another writer's build of the same plan holds the content tag. Its plan
    label is checked, so a foreign image under the content tag is never adopted.
    """
    pinned = ImageRef.parse(f"{target.repository}@{digest}")
    image_id = session.engine.pull(pinned, session.credentials)
    image = session.engine.local_image(image_id)
    if image is None or not image.built_from(target.plan_hash):
        raise PushError(
            f"the registry holds {target.ref()} as {digest}, which was not built from plan {target.plan_hash[:16]}; "
            "remove that tag from the registry",
            pinned.registry,
        )
    for tag in target.tags:
        session.engine.tag(image_id, target.ref(tag))
    return image_id


#: How often a content tag overtaken by another writer is adopted before giving up.
_ADOPT_ATTEMPTS = 3


def _publish_plan(
    session: _Session, target: Target, image_id: str, stream: Optional[TextIO], timeout: Optional[float],
    *, digest: Optional[str] = None, tags: Optional[Sequence[str]] = None,
) -> tuple[str, str]:
    """Publish the plan's image; return (image id, digest) as the registry holds them.

    The content tag goes first (unless ``digest`` says the registry already holds it).
    When the registry then holds another digest under it, another build of the same
    plan won the tag: that image is adopted. ``tags`` (default: all other tags) are
    pushed only then, so they always point at the content tag's image.
    """
    content, ref = target.content_tag, target.ref()
    if digest is None:
        digest = _push_tags(session, image_id, target.repository, [content], stream, timeout)[content]
    pending = [t for t in (target.other_tags if tags is None else tags) if t != content]
    for _ in range(_ADOPT_ATTEMPTS):
        held = session.registry.manifest_digest(str(ref))
        if held is None:
            raise PushError(f"pushed {ref} as {digest} but the registry reports nothing", ref.registry)
        if held != digest:
            logger.info("%s was published meanwhile as %s by another build of the same plan: adopting it", ref, held)
            image_id, digest = _adopt(session, target, held), held
            pending = list(target.other_tags)
        if not pending:
            return image_id, digest
        pushed = _push_tags(session, image_id, target.repository, pending, stream, timeout)
        odd = {t: d for t, d in pushed.items() if d != digest}
        if odd:
            raise PushError(f"pushed {ref} as {digest} but other tags as {odd}", ref.registry)
        pending = []
    raise PushError(f"{ref} kept changing in the registry while it was published", ref.registry)


def push_local(
    repository: str,
    tags: Sequence[str],
    credentials: Optional[RegistryCredentials] = None,
    *,
    plan_hash: Optional[str] = None,
    force: bool = False,
    engine: Optional[EngineProtocol] = None,
    registry: Optional[RegistryLike] = None,
    stream_progress_to: Optional[TextIO] = None,
    timeout: Optional[float] = None,
) -> BuildResult:
    """Publish an image that is already in the daemon, unless the registry holds it.

    With ``plan_hash`` the image is the plan's (its content tag is pushed first and
    adopted if another build of the plan won it) and "held" means the registry has the
    content tag and every tag at its digest: then the daemon is not asked at all.
    Without, the image is ``repository:tags[0]`` and "held" means the registry's digest
    of every tag is one recorded for this very image (its ``RepoDigests``).
    """
    started = time.monotonic()
    timings: dict[str, float] = {}
    tags = list(dict.fromkeys(tags))
    with _session(engine, credentials, registry, repository) as session:
        if plan_hash:
            target = Target(repository, plan_hash, tuple(dict.fromkeys((*tags, plan_hash[:TAG_LENGTH]))))
            if not force:
                seen = _observe(session, target, local=False, remote=True)
                timings["check"] = round(time.monotonic() - started, 4)
                if seen.published:
                    timings["total"] = round(time.monotonic() - started, 4)
                    return BuildResult(f"{repository}:{tags[0]}", plan_hash, digest=seen.remote_digest, tags=tuple(tags), timings=timings)
            local = session.engine.local_image(target.ref())
            if local is None:
                raise PushError(
                    f"{target.ref()} is not in the Docker daemon, so it cannot be pushed; build it first, "
                    "or ensure it (which builds as needed)", target.ref().registry,
                )
            mark = time.monotonic()
            with _plan_lock(target):
                image_id, digest = _publish_plan(session, target, local.id, stream_progress_to, timeout)
        else:
            main = ImageRef.parse(f"{repository}:{tags[0]}")
            local = session.engine.local_image(main)
            if local is None:
                raise PushError(f"{main} is not in the Docker daemon, so it cannot be pushed; build it first", main.registry)
            if not force:
                remote = session.registry.manifest_digest(str(main))
                timings["check"] = round(time.monotonic() - started, 4)
                if (
                    remote is not None and local.has_digest(repository, remote)
                    and all(session.registry.manifest_digest(f"{repository}:{t}") == remote for t in tags[1:])
                ):
                    timings["total"] = round(time.monotonic() - started, 4)
                    return BuildResult(str(main), local.plan_hash or "", image_id=local.id, digest=remote,
                                       size=local.size, tags=tuple(tags), timings=timings)
            mark = time.monotonic()
            image_id = local.id
            digest = _publish(session, image_id, repository, tags, tags[0], stream_progress_to, timeout)
        timings["push"] = round(time.monotonic() - mark, 4)
        timings["total"] = round(time.monotonic() - started, 4)
        return BuildResult(f"{repository}:{tags[0]}", plan_hash or local.plan_hash or "", image_id=image_id, digest=digest,
                           pushed=True, size=local.size, tags=tuple(tags), timings=timings)


# ---- one build at a time per plan on this host ---------------------------------------------


@contextlib.contextmanager
def _plan_lock(target: Target) -> Iterator[bool]:
    """Hold this host's lock for ``target``; yields True when another process held it first."""
    from .context import cache_dir

    folder = cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{target.repository}\0{target.plan_hash}".encode()).hexdigest()[:32]
    fd = os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            logger.info("another process is building or pushing %s; waiting for it", target.ref())
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited = True
        yield waited
    finally:
        os.close(fd)  # releases the lock


# ---- ensure -----------------------------------------------------------------------------


def ensure(
    plan: BuildPlan,
    *,
    push: bool = True,
    force: bool = False,
    credentials: CredentialsLike = None,
    stream_progress_to: Optional[TextIO] = None,
    engine: Optional[EngineProtocol] = None,
    build_timeout: Optional[float] = None,
    push_timeout: Optional[float] = None,
    verify: Optional[Callable[[str], None]] = None,
    build_kwargs: Optional[dict[str, Any]] = None,
    registry: Optional[RegistryLike] = None,
    accept_registry: bool = False,
) -> BuildResult:
    """Make sure the image of ``plan`` exists locally and (with ``push``) in its registry.

    ``accept_registry`` (with ``push=False``): a registry that already holds the image
    satisfies the call as well as the daemon does (a worker pulls it from there), so an
    unchanged project never contacts the daemon.

    - Registry holds the content tag and every other tag at the same digest: nothing is
      built or pushed, and the Docker daemon is not contacted (``image_id`` is ``None``).
    - Registry holds the content tag only: the other tags are pushed from the local
      image (pulled first if the daemon lacks it).
    - Daemon holds an image with the content tag built from this plan: no build.
    - ``force=True`` rebuilds and re-pushes regardless.
    - The registry check fails closed: when the registry cannot be reached, build (the
      push then reports the outage). A refused login raises at once.
    - ``verify(image_id)`` runs after a build (or on the daemon's image) and before
      any push; raise to stop.
    - After the push the registry is asked again: a result is only returned when it
      holds the pushed digest. Another process's push of the same plan that won the
      content tag is adopted (see the module docstring).
    """
    creds = plan_credentials(plan, credentials)
    with _session(engine, creds, registry, plan.repository) as session:
        run = _Ensure(session, plan, push, force, stream_progress_to, build_timeout, push_timeout, verify, build_kwargs)
        run.accept_registry = accept_registry and not push and verify is None
        return run.run()


class _Ensure:
    """One :func:`ensure` call: its decisions, in order, with timings."""

    def __init__(
        self, session: _Session, plan: BuildPlan, push: bool, force: bool, stream: Optional[TextIO],
        build_timeout: Optional[float], push_timeout: Optional[float], verify: Optional[Callable[[str], None]],
        build_kwargs: Optional[dict[str, Any]],
    ) -> None:
        self.session, self.plan, self.push, self.force, self.stream = session, plan, push, force, stream
        self.build_timeout, self.push_timeout, self.verify, self.build_kwargs = build_timeout, push_timeout, verify, build_kwargs
        self.timings: dict[str, float] = {}
        self.started = self.mark = time.monotonic()
        self.accept_registry = False

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.timings[name] = round(now - self.mark, 4)
        self.mark = now

    def result(self, image_id: Optional[str] = None, size: Optional[int] = None, **kw: Any) -> BuildResult:
        self.timings["total"] = round(time.monotonic() - self.started, 4)
        return BuildResult(
            reference=str(self.plan.ref), plan_hash=self.plan.hash, image_id=image_id, size=size,
            tags=self.plan.all_tags, timings=dict(self.timings), **kw,
        )

    def run(self) -> BuildResult:
        _ = self.plan.hash
        self.lap("hash")
        self.target = Target.of(self.plan)
        if not self.force:
            done = self.reuse()
            if done is not None:
                return done
        with _plan_lock(self.target) as waited:
            if waited and not self.force:
                self.lap("wait")
                # Whoever held the lock may have done the work (and left the image in
                # this daemon: name it, since this is the slow path anyway).
                done = self.reuse(name_local=True)
                if done is not None:
                    return done
            return self.build_and_publish()

    def reuse(self, name_local: bool = False) -> Optional[BuildResult]:
        """The result when the registry (push) or the daemon (no push) already holds the image.

        ``name_local``: also report the daemon's image when it is the registry's.
        """
        session, target = self.session, self.target
        if self.push:
            seen = _observe(session, target, local=False, remote=True)
            self.lap("check")
            if seen.unreachable:
                logger.warning("cannot check %s in its registry (%s); building", target.ref(), seen.unreachable)
                return None
            if seen.published:
                logger.info("%s is already in the registry (%s): nothing to build or push", self.plan.ref, seen.remote_digest)
                local = _observe(session, target, local=True, remote=False).local if name_local else None
                if local is not None and seen.remote_digest and local.has_digest(target.repository, seen.remote_digest):
                    return self.result(image_id=local.id, size=local.size, digest=seen.remote_digest)
                return self.result(digest=seen.remote_digest)
            if seen.remote_digest:
                # The registry has the image under its content tag only: point the other
                # tags at the registry's image (the daemon's, if it is that very image).
                local = _observe(session, target, local=True, remote=False).local
                if local is not None and local.has_digest(target.repository, seen.remote_digest):
                    image_id = local.id
                else:
                    image_id = _adopt(session, target, seen.remote_digest)
                    self.lap("pull")
                image_id, digest = _publish_plan(
                    session, target, image_id, self.stream, self.push_timeout, digest=seen.remote_digest, tags=seen.stale_tags,
                )
                self.lap("push")
                logger.info("%s was in the registry; added tags %s", target.ref(), ", ".join(seen.stale_tags))
                return self.result(image_id=image_id, digest=digest, pushed=True)
            return None
        if self.verify is not None:
            return None  # the daemon's image must still be verified: build_and_publish does
        if self.accept_registry:
            try:
                seen = _observe(session, target, local=False, remote=True)
            except AuthenticationError as exc:  # a local build needs no registry: just look locally
                logger.info("cannot check %s in its registry (%s); looking in the daemon", target.ref(), exc)
                seen = Observation(target)
            self.lap("check")
            if seen.published:
                logger.info("%s is already in the registry (%s): nothing to build", self.plan.ref, seen.remote_digest)
                return self.result(digest=seen.remote_digest)
        local = _observe(session, target, local=True, remote=False).local
        self.lap("check_local")
        if local is None:
            return None
        logger.info("%s exists in the daemon: build skipped", self.plan.content_ref)
        for tag in target.other_tags:
            session.engine.tag(local.id, target.ref(tag))
        return self.result(image_id=local.id, size=local.size)

    def build_and_publish(self) -> BuildResult:
        session, target, plan = self.session, self.target, self.plan
        local = None if self.force else _observe(session, target, local=True, remote=False).local
        self.lap("check_local")
        if local is not None:
            logger.info("%s exists in the daemon: build skipped", plan.content_ref)
            for tag in target.other_tags:
                session.engine.tag(local.id, target.ref(tag))
            image_id, built = local.id, False
        else:
            logger.info("building %s (plan %s)", plan.ref, plan.hash[:16])
            image_id = session.engine.build(plan, list(plan.all_tags), self.stream, self.build_timeout, extra=self.build_kwargs)
            built = True
            self.lap("build")
        if self.verify is not None:
            self.verify(image_id)
            self.lap("verify")
        if not self.push:
            image = local or session.engine.local_image(image_id)
            return self.result(image_id=image_id, size=image.size if image else None, built=built)
        image_id, digest = _publish_plan(session, target, image_id, self.stream, self.push_timeout)
        self.lap("push")
        logger.info("pushed %s (%s)", plan.ref, digest)
        image = session.engine.local_image(image_id)
        return self.result(image_id=image_id, size=image.size if image else None, digest=digest, built=built, pushed=True)
