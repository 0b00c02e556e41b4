"""The pipeline's second verb: make the registry hold it (:func:`publish`; see :mod:`.pipeline`)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from typing import Iterator, Optional, Sequence, TextIO, Union

from . import _args
from .credentials import RegistryCredentials
from .engine import EngineProtocol
from .engine._process import write
from .errors import AuthenticationError, PushAuthenticationError, PushError, PushUnavailableError, RegistryError, RegistryUnavailable
from .names import ImageRef
from .plan import TAG_LENGTH, BuildResult
from ._observe import RegistryLike, Target, _observe, _Session, _session

__all__ = ["publish", "push_local"]

logger = logging.getLogger("prefect_flyimage")


# ---- publishing -------------------------------------------------------------------------


def _push_tags(
    session: _Session, image_id: str, repository: str, tags: Sequence[str], stream: Optional[TextIO], timeout: Optional[float],
    digest: Optional[str] = None,
) -> dict[str, str]:
    """Tag ``image_id`` as ``repository:tag`` where needed and push each tag, in order.

    Once the registry holds the image in ``repository`` (``digest``, or the first push's),
    a registry asked directly gets the other tags by its manifest put again: its manifest
    fetched once, then a request or two per tag instead of a daemon push (which re-sends
    every layer's check and the manifest). The daemon gets every tag either way.
    """
    pushed: dict[str, str] = {}
    in_registry: list[str] = []  # tags moved by the registry client, after the daemon's
    puts = _puts_manifests(session.registry)
    for tag in tags:
        ref = ImageRef.parse(f"{repository}:{tag}")
        info = session.engine.local_image(ref)
        if info is None or info.id != image_id:
            session.engine.tag(image_id, ref)
        if digest is not None and puts:
            in_registry.append(tag)
        else:
            pushed[tag] = session.engine.push(ref, session.credentials, stream, timeout)
            digest = digest or pushed[tag]
    if in_registry:
        assert digest is not None
        _put_tags(session, repository, in_registry, digest, stream)
        pushed.update(dict.fromkeys(in_registry, digest))
    return pushed


def _puts_manifests(registry: object) -> bool:
    """True for a registry client that can move a tag itself (the pipeline's ``RegistryClient``)."""
    return callable(getattr(registry, "get_manifest", None)) and callable(getattr(registry, "put_manifest", None))


def _put_tags(session: _Session, repository: str, tags: list[str], digest: str, stream: Optional[TextIO]) -> None:
    """Make the registry's ``repository:tag`` name ``digest`` (held in ``repository``) for
    every one of ``tags``, by its manifest put again. Failures are the push's, as a daemon
    push would raise them (:class:`PushAuthenticationError`, :class:`PushUnavailableError`,
    :class:`PushError`)."""
    from ._append import tag_in_registry

    what = f"{repository}:{','.join(tags)}"
    try:
        moved = tag_in_registry(session.registry, ImageRef.parse(repository).name, digest, tuple(tags))  # type: ignore[arg-type]
    except PushError:
        raise
    except AuthenticationError as exc:
        raise PushAuthenticationError(f"cannot push {what}: {exc}", exc.registry) from exc
    except RegistryUnavailable as exc:
        raise PushUnavailableError(f"cannot push {what}: {exc}", exc.registry) from exc
    except RegistryError as exc:
        raise PushError(f"cannot push {what}: {exc}", exc.registry) from exc
    for tag in moved:
        write(stream, f"{repository}:{tag}: tagged {digest} in the registry\n")


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
    _args.text("image_id", image_id)
    ImageRef.parse(_args.text("repository", repository))
    if not _args.str_list("tags", tags):
        raise _args.InvalidArgumentError("tags", "must name at least one tag")
    _args.timeout("timeout", timeout)
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


def _replaces(replace: Union[bool, str], held: str) -> bool:
    return replace is True or (isinstance(replace, str) and replace == held)


def _missing_tags(session: _Session, target: Target, digest: str, tags: Sequence[str]) -> list[str]:
    """The ``tags`` the registry does not hold at ``digest`` (what a half-finished publish left out)."""
    return [t for t in tags if session.registry.manifest_digest(str(target.ref(t))) != digest]


def _publish_plan(
    session: _Session, target: Target, image_id: str, stream: Optional[TextIO], timeout: Optional[float],
    *, digest: Optional[str] = None, tags: Optional[Sequence[str]] = None, replace: Union[bool, str] = False,
) -> tuple[str, str]:
    """Publish the plan's image; return (image id, digest) as the registry holds them.

    The content tag goes first (unless ``digest`` says the registry already holds it).
    Before it is pushed the registry is asked for it: a content tag already there is
    this plan's image, published by another build or by an earlier attempt that died
    before pushing the other tags (a half-finished publish). That image is adopted
    (plan label checked) and only the tags the registry lacks are pushed, so a plan is
    never published under two digests. When the registry holds another digest right
    after our push, another build won the tag: that image is adopted too. ``tags``
    (default: all other tags) are pushed only then, so they always point at the
    content tag's image.

    ``replace`` is for a forced rebuild, whose new image must replace the registry's:
    ``True`` pushes over whatever the content tag holds; a digest pushes over that
    digest only (the image the rebuild replaces) and adopts any other one (an earlier
    attempt of the same rebuild).
    """
    content, ref = target.content_tag, target.ref()
    wanted = [t for t in (target.other_tags if tags is None else tags) if t != content]
    pending = wanted
    if digest is None:
        try:
            held = session.registry.manifest_digest(str(ref))
        except RegistryUnavailable as exc:
            # The check opens the push: an outage here is the push's (as docker push says it).
            raise PushUnavailableError(f"cannot push {ref}: {exc}", exc.registry) from exc
        if held is not None and not _replaces(replace, held):
            local = session.engine.local_image(image_id)
            if local is None or not local.has_digest(target.repository, held):
                logger.info("%s is already in the registry as %s (another build, or an unfinished publish): adopting it", ref, held)
                image_id = _adopt(session, target, held)
            digest = held
            pending = _missing_tags(session, target, digest, wanted)
        else:
            digest = _push_tags(session, image_id, target.repository, [content], stream, timeout)[content]
    for _ in range(_ADOPT_ATTEMPTS):
        held = session.registry.manifest_digest(str(ref))
        if held is None:
            raise PushError(f"pushed {ref} as {digest} but the registry reports nothing", ref.registry)
        if held != digest:
            logger.info("%s was published meanwhile as %s by another build of the same plan: adopting it", ref, held)
            image_id, digest = _adopt(session, target, held), held
            pending = _missing_tags(session, target, digest, target.other_tags)
        if not pending:
            return image_id, digest
        pushed = _push_tags(session, image_id, target.repository, pending, stream, timeout, digest)
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
    replace: Union[bool, str] = False,
) -> BuildResult:
    """Publish an image that is already in the daemon, unless the registry holds it.

    With ``plan_hash`` the image is the plan's (its content tag is pushed first and
    adopted if another build of the plan won it) and "held" means the registry has the
    content tag and every tag at its digest: then the daemon is not asked at all.
    Without, the image is ``repository:tags[0]`` and "held" means the registry's digest
    of every tag is one recorded for this very image (its ``RepoDigests``).

    With ``plan_hash``, a content tag the registry already holds is adopted and only the
    missing tags are pushed (see :func:`_publish_plan`), unless ``replace`` says this is
    a forced rebuild replacing that image (``True``, or the digest it replaces).
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
                image_id, digest = _publish_plan(session, target, local.id, stream_progress_to, timeout, replace=replace)
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
    """Hold this host's lock for ``target``; yields True when another process held it first.

    Best effort: where no lock file can be made (a read-only cache folder), go on
    without one -- the registry's first-writer-wins rule still keeps results consistent.
    """
    from .context import cache_dir

    key = hashlib.sha256(f"{target.repository}\0{target.plan_hash}".encode()).hexdigest()[:32]
    try:
        folder = cache_dir() / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        logger.debug("no lock for %s (%s); going on without one", target.ref(), exc)
        yield False
        return
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
