"""The pipeline's first verb: where is this image? (:func:`observe`; see :mod:`.pipeline`)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional, Protocol, Union

from .credentials import CredentialsLike, RegistryCredentials, resolve_credentials
from .engine import Engine, EngineProtocol, LocalImage
from .errors import AuthenticationError, InvalidArgumentError, RegistryUnavailable
from .names import ImageRef
from .plan import TAG_LENGTH, BuildPlan

__all__ = ["Existence", "Observation", "RegistryLike", "Target", "exists", "local_match", "observe", "plan_credentials"]

logger = logging.getLogger("prefect_flyimage")


# ---- what is observed -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where an image of a plan should be: its repository, plan hash and tags."""

    repository: str
    plan_hash: str
    tags: tuple[str, ...]  #: every tag; the content tag among them
    #: platforms of a multi-platform plan (each must be in the registry's index)
    platforms: tuple[str, ...] = ()

    @classmethod
    def of(cls, plan: Union[BuildPlan, "Target"]) -> "Target":
        """The target of a plan (a target is its own)."""
        if isinstance(plan, Target):
            return plan
        platforms = tuple(plan.platform.split(",")) if plan.platform and "," in plan.platform else ()
        return cls(plan.repository, plan.hash, plan.all_tags, platforms)

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
    repository: str, *, resolve: bool = True,
) -> Iterator[_Session]:
    host = ImageRef.parse(repository).registry
    # Given credentials win; else the docker config's (a `docker login`, a credential
    # helper), as the daemon would use them for the push. ``resolve=False``: the caller
    # resolved them already (plan_credentials), ``None`` included.
    creds = resolve_credentials(credentials, registry=host) if resolve else credentials
    session = _Session(engine, creds, registry, host)
    try:
        yield session
    finally:
        session.close()


def plan_credentials(
    plan: Union[BuildPlan, Target], credentials: CredentialsLike, *, pushing: bool = True,
) -> Optional[RegistryCredentials]:
    """Credentials for the plan's registry: those given, else the docker config's (or ``None``).

    ``pushing=False`` (a build that never pushes): a docker config naming a credential
    helper that is missing or fails costs only the registry check, which goes on
    anonymously with a warning -- as ``docker build`` of a public base would.
    """
    registry = ImageRef.parse(plan.repository).registry
    try:
        return resolve_credentials(credentials, registry=registry)
    except AuthenticationError as exc:
        if pushing or credentials is not None:
            raise
        logger.warning("no credentials for %s (%s); asking the registry anonymously, nothing is pushed", registry, exc)
        return None


def _observe(session: _Session, target: Target, *, local: bool, remote: bool, every_local_tag: bool = False) -> Observation:
    digest: Optional[str] = None
    tag_digests: dict[str, Optional[str]] = {}
    unreachable: Optional[str] = None
    if remote:
        try:
            digest = session.registry.manifest_digest(str(target.ref()))
            if digest and target.platforms and not _has_platforms(session.registry, target):
                digest = None  # an index lacking a platform is rebuilt and pushed again
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


def _has_platforms(registry: RegistryLike, target: Target) -> bool:
    """True when the registry's index for the content tag lists every platform of the target."""
    platforms = getattr(registry, "manifest_platforms", None)
    if platforms is None:
        return True  # a registry stand-in that cannot tell: trust the digest
    present = platforms(str(target.ref()))
    if present is None:
        return False
    norm = {_same_platform(p) for p in present}
    return all(_same_platform(p) in norm for p in target.platforms)


def _same_platform(platform: str) -> str:
    # containerd's normalisation: arm64 is arm64/v8
    return platform[: -len("/v8")] if platform.endswith("arm64/v8") else platform


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
    if not isinstance(plan, (BuildPlan, Target)):
        raise InvalidArgumentError("plan", f"must be a BuildPlan, not {type(plan).__name__}")
    target = Target.of(plan)
    with _session(engine, plan_credentials(target, credentials), registry, target.repository, resolve=False) as session:
        return _observe(session, target, local=local, remote=remote, every_local_tag=every_local_tag)


def exists(plan: BuildPlan, credentials: CredentialsLike = None, engine: Optional[EngineProtocol] = None, *, remote: bool = True) -> Observation:
    """:func:`observe` of the daemon and (if ``remote``) the registry (the older name)."""
    return observe(plan, credentials, engine, remote=remote)


def local_match(engine: EngineProtocol, plan: BuildPlan) -> Optional[str]:
    """Id of the local image tagged with the plan's content tag *and* built from this plan."""
    image = engine.local_image(plan.content_ref)
    return image.id if image is not None and image.built_from(plan.hash) else None
