"""The one pipeline every front door goes through: plan -> exists? -> build -> verify -> push.

:func:`ensure` builds only if the image for the plan's content hash is missing from
the daemon, and pushes only if the registry lacks it, so an unchanged project costs
one hash and one registry round trip.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, TextIO

from . import _args
from .credentials import CredentialsLike, RegistryCredentials, as_credentials
from .engine import Engine
from .errors import InvalidArgumentError, PushError, RegistryUnavailable
from .names import ImageRef
from .plan import PLAN_LABEL, BuildPlan, BuildResult

logger = logging.getLogger("prefect_flyimage")


@dataclass(frozen=True)
class Existence:
    """Where the image of a plan already is."""

    local_id: Optional[str]  #: image id in the daemon (content tag with the plan's label)
    remote_digest: Optional[str]  #: digest the registry holds for the content tag

    @property
    def anywhere(self) -> bool:
        """True if the image exists locally or in the registry."""
        return bool(self.local_id or self.remote_digest)


def _check_plan(plan: Any) -> None:
    if not isinstance(plan, BuildPlan):
        raise InvalidArgumentError("plan", f"must be a BuildPlan, not {type(plan).__name__}")


def plan_credentials(plan: BuildPlan, credentials: CredentialsLike) -> Optional[RegistryCredentials]:
    """Credentials for the plan's registry from any accepted form (or ``None``)."""
    return as_credentials(credentials, registry=ImageRef.parse(plan.repository).registry)


def local_match(engine: Engine, plan: BuildPlan) -> Optional[str]:
    """Id of the local image tagged with the plan's content tag *and* built from this plan."""
    info = engine.local_image(plan.content_ref)
    if info is None:
        return None
    labels = (info.get("Config") or {}).get("Labels") or {}
    return info["Id"] if labels.get(PLAN_LABEL) == plan.hash else None


def exists(plan: BuildPlan, credentials: CredentialsLike = None, engine: Optional[Engine] = None, *, remote: bool = True) -> Existence:
    """Check the daemon and (if ``remote``) the registry for the plan's content tag."""
    _check_plan(plan)
    if engine is None:
        with Engine() as own:
            return exists(plan, credentials, own, remote=remote)
    digest = engine.registry_digest(plan.content_ref, plan_credentials(plan, credentials)) if remote else None
    return Existence(local_match(engine, plan), digest)


def publish(
    engine: Engine,
    image_id: str,
    repository: str,
    tags: Sequence[str],
    credentials: Optional[RegistryCredentials] = None,
    *,
    main_tag: Optional[str] = None,
    stream_progress_to: Optional[TextIO] = None,
    timeout: Optional[float] = None,
) -> str:
    """Push ``image_id`` as ``repository:tag`` for every tag; return the digest of ``main_tag``.

    Tags missing in the daemon are added first. After the pushes the registry is asked
    again: the digest is only returned when the registry really holds it, so nothing is
    ever reported as published that the registry lacks.
    """
    main_tag = main_tag or tags[0]
    digest: Optional[str] = None
    for tag in tags:
        ref = ImageRef.parse(f"{repository}:{tag}")
        info = engine.local_image(ref)
        if info is None or info["Id"] != image_id:
            engine.tag(image_id, ref)
        pushed = engine.push(ref, credentials, stream_progress_to, timeout)
        if tag == main_tag:
            digest = pushed
    main = ImageRef.parse(f"{repository}:{main_tag}")
    held = engine.registry_digest(main, credentials)
    if held is None or held != digest:
        raise PushError(f"pushed {main} as {digest} but the registry reports {held or 'nothing'}", main.registry)
    return held


def ensure(
    plan: BuildPlan,
    *,
    push: bool = True,
    force: bool = False,
    credentials: CredentialsLike = None,
    stream_progress_to: Optional[TextIO] = None,
    engine: Optional[Engine] = None,
    build_timeout: Optional[float] = None,
    push_timeout: Optional[float] = None,
    verify: Optional[Callable[[str], None]] = None,
    build_kwargs: Optional[dict[str, Any]] = None,
) -> BuildResult:
    """Make sure the image of ``plan`` exists locally and (with ``push``) in its registry.

    - Registry already holds the content tag (and every other tag at the same digest):
      nothing is built or pushed. Missing extra tags are added by re-pushing.
    - Daemon holds an image with the content tag built from this plan: no build.
    - ``force=True`` rebuilds and re-pushes regardless.
    - The registry check fails closed: when the registry cannot be reached, build (the
      push then reports the outage). A refused login raises at once.
    - ``verify(image_id)`` runs after a build and before any push; raise to stop.
    - After a push, the registry is asked again: a result is only returned when the
      registry holds the pushed digest.
    """
    _check_plan(plan)
    _args.boolean("push", push)
    _args.boolean("force", force)
    _args.timeout("build_timeout", build_timeout)
    _args.timeout("push_timeout", push_timeout)
    if engine is None:
        with Engine() as own:
            return ensure(
                plan, push=push, force=force, credentials=credentials, stream_progress_to=stream_progress_to,
                engine=own, build_timeout=build_timeout, push_timeout=push_timeout, verify=verify,
                build_kwargs=build_kwargs,
            )
    creds = plan_credentials(plan, credentials)
    timings: dict[str, float] = {}
    started = time.monotonic()
    mark = started

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[name] = round(now - mark, 4)
        mark = now

    _ = plan.hash
    lap("hash")
    ref = plan.ref
    tags = plan.all_tags
    refs = {t: ImageRef.parse(f"{plan.repository}:{t}") for t in tags}

    def result(**kw: Any) -> BuildResult:
        timings["total"] = round(time.monotonic() - started, 4)
        image_id = kw.pop("image_id", None)
        size = None
        if image_id:
            info = engine.local_image(image_id)
            size = info.get("Size") if info else None
        return BuildResult(reference=str(ref), plan_hash=plan.hash, image_id=image_id, size=size, tags=tags, timings=dict(timings), **kw)

    if push and not force:
        try:
            remote = engine.registry_digest(plan.content_ref, creds)
        except RegistryUnavailable as exc:
            logger.warning("cannot check %s in its registry (%s); building", plan.content_ref, exc)
            remote = None
        lap("check")
        if remote:
            stale = [t for t in tags if t != plan.content_tag and engine.registry_digest(refs[t], creds) != remote]
            local_id = local_match(engine, plan)
            if not stale:
                logger.info("%s is already in the registry (%s): nothing to build or push", ref, remote)
                return result(image_id=local_id, digest=remote)
            # The registry has the image under its content tag only: point the other tags at it.
            if local_id is None:
                local_id = engine.pull(plan.content_ref, creds)
                lap("pull")
            publish(engine, local_id, plan.repository, [plan.content_tag, *stale], creds,
                    stream_progress_to=stream_progress_to, timeout=push_timeout)
            lap("push")
            logger.info("%s was in the registry; added tags %s", plan.content_ref, ", ".join(stale))
            return result(image_id=local_id, digest=remote, pushed=True)

    local_id = None if force else local_match(engine, plan)
    lap("check_local")
    if local_id:
        logger.info("%s exists in the daemon: build skipped", plan.content_ref)
        for t in tags:
            engine.tag(local_id, refs[t])
        image_id, built = local_id, False
    else:
        logger.info("building %s (plan %s)", ref, plan.hash[:16])
        image_id = engine.build(plan, list(tags), stream_progress_to, build_timeout, extra=build_kwargs)
        built = True
        lap("build")

    if verify is not None:
        verify(image_id)
        lap("verify")

    if not push:
        return result(image_id=image_id, built=built)

    digest = publish(
        engine, image_id, plan.repository, tags, creds,
        main_tag=plan.content_tag, stream_progress_to=stream_progress_to, timeout=push_timeout,
    )
    lap("push")
    logger.info("pushed %s (%s)", ref, digest)
    return result(image_id=image_id, digest=digest, built=built, pushed=True)


__all__ = ["Existence", "ensure", "exists", "local_match", "plan_credentials", "publish"]
