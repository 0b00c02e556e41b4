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

import logging
import time
from dataclasses import replace as _with
from typing import Any, Callable, Mapping, Optional, Sequence, TextIO

from . import _args
from ._bases import resolve_plan
from ._observe import (
    Existence,
    Observation,
    RegistryLike,
    Target,
    _observe,
    _Session,
    _session,
    exists,
    local_match,
    observe,
    plan_credentials,
)
from ._publish import _adopt, _plan_lock, _publish_plan, publish, push_local
from ._mirror import check_mirrors, mirror
from .credentials import CredentialsLike, resolve_credentials
from .engine import EngineProtocol
from .engine._buildx import BUILDX_OPTIONS, CACHE_AUTH, registry_cache_options, registry_cache_ref
from .engine._process import buildx_available
from .errors import AuthenticationError, InvalidArgumentError
from .names import ImageRef
from .plan import BuildPlan, BuildResult

__all__ = [
    "Existence",
    "Observation",
    "RegistryLike",
    "Target",
    "ensure",
    "exists",
    "local_match",
    "mirrored",
    "observe",
    "plan_credentials",
    "publish",
    "push_local",
    "resolve_bases",
]

logger = logging.getLogger("prefect_flyimage")


def resolve_bases(plan: BuildPlan, credentials: CredentialsLike = None, engine: Optional[EngineProtocol] = None) -> BuildPlan:
    """``plan`` with its base images resolved to digests (when it has ``pin_bases``), so its
    hash and content tag are those :func:`ensure` will use. See :mod:`._bases`."""
    _args.build_plan("plan", plan)
    return resolve_plan(plan, plan_credentials(plan, credentials), (lambda: engine) if engine is not None else None)


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
    mirrors: Optional[Sequence[str]] = None,
    mirror_credentials: Optional[Mapping[str, CredentialsLike]] = None,
    replace: Optional[str] = None,
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
    - ``force=True`` rebuilds and re-pushes regardless; with ``replace`` (the registry
      digest the rebuild replaces) the content tag is pushed over only while it holds that
      digest: another one there is an earlier attempt of this rebuild, adopted.
    - A content tag the registry gained since the check (another build, or a publish that
      died before the other tags) is adopted before pushing: only missing tags are pushed.
    - The registry check fails closed: when the registry cannot be reached, build (the
      push then reports the outage). A refused login raises at once.
    - ``verify(image_id)`` runs after a build (or on the daemon's image) and before
      any push; raise to stop.
    - After the push the registry is asked again: a result is only returned when it
      holds the pushed digest. Another process's push of the same plan that won the
      content tag is adopted (see the module docstring).
    - ``mirrors`` (with ``push``): further repositories that get the same image, copied
      registry to registry once the primary holds it (:mod:`._mirror`), each confirmed by
      digest and listed in the result's ``mirrors``; those that already hold it are
      skipped. ``mirror_credentials``: ``{registry: credentials}`` for their registries
      (default: the docker config's). A refused one raises :class:`MirrorError`.
    """
    _args.build_plan("plan", plan)
    _args.boolean("push", push)
    _args.boolean("force", force)
    _args.timeout("build_timeout", build_timeout)
    _args.timeout("push_timeout", push_timeout)
    destinations = check_mirrors(mirrors, plan.repository)
    if destinations and not push:
        raise InvalidArgumentError("mirrors", "need push=True (mirrors get a copy of the pushed image)")
    creds = plan_credentials(plan, credentials, pushing=push)
    with _session(engine, creds, registry, plan.repository, resolve=False) as session:
        plan = resolve_plan(plan, creds, lambda: session.engine)  # bases are inputs too (issue 16)
        run = _Ensure(session, plan, push, force, stream_progress_to, build_timeout, push_timeout, verify, build_kwargs)
        run.accept_registry = accept_registry and not push and verify is None
        run.replace = _args.optional_text("replace", replace)
        result = run.run()
    return mirrored(result, destinations, session.credentials, mirror_credentials, stream_progress_to)


def mirrored(
    result: BuildResult, mirrors: Sequence[str], credentials: Optional[Any] = None,
    mirror_credentials: Optional[Mapping[str, CredentialsLike]] = None, stream: Optional[TextIO] = None,
) -> BuildResult:
    """``result`` (published, with a digest) after copying it to ``mirrors``: its ``mirrors``
    lists them, its timings a ``mirror`` step. Every front door's mirror hook."""
    if not mirrors:
        return result
    if not result.digest:
        raise InvalidArgumentError("mirrors", f"{result.reference} has no registry digest to mirror")
    started = time.monotonic()
    copies = mirror(
        result.repository, result.digest, result.tags or (result.tag or "latest",), mirrors,
        resolve_credentials(credentials, ImageRef.parse(result.repository).registry),
        mirror_credentials=mirror_credentials, stream=stream,
    )
    spent = round(time.monotonic() - started, 4)
    timings = {**result.timings, "mirror": spent}
    timings["total"] = round(float(result.timings.get("total", 0.0)) + spent, 4)
    return _with(result, mirrors=tuple(c.destination for c in copies), timings=timings)


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
        self.replace: Optional[str] = None

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.timings[name] = round(now - self.mark, 4)
        self.mark = now

    def result(self, image_id: Optional[str] = None, size: Optional[int] = None, **kw: Any) -> BuildResult:
        self.timings["total"] = round(time.monotonic() - self.started, 4)
        return BuildResult(
            reference=str(self.plan.ref), plan_hash=self.plan.hash, image_id=image_id, size=size,
            tags=self.plan.all_tags, timings=dict(self.timings), bases=self.plan.bases or (), **kw,
        )

    def run(self) -> BuildResult:
        _ = self.plan.hash
        self.lap("hash")
        self.target = Target.of(self.plan)
        if not self.force:
            done = self.reuse()
            if done is not None:
                return done
            if self.push or self.accept_registry:
                done = self.append()
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
            from ._append_path import applies

            if seen.unreachable is None and applies(self):
                return None  # the code-only path (append, next) needs no daemon: do not ask it
        local = _observe(session, target, local=True, remote=False).local
        self.lap("check_local")
        if local is None:
            return None
        logger.info("%s exists in the daemon: build skipped", self.plan.content_ref)
        for tag in target.other_tags:
            session.engine.tag(local.id, target.ref(tag))
        return self.result(image_id=local.id, size=local.size)

    def append(self) -> Optional[BuildResult]:
        """The code-only path: the tail appended in the registry to the dependency image
        (built and pushed first when the registry lacks it); ``None`` when it does not apply."""
        from ._append_path import try_append

        found = try_append(self)
        if found is not None:
            self.lap("append")
            digest, built = found
            return self.result(digest=digest, built=built, pushed=True)
        return None
    def _build_extra(self) -> Optional[dict[str, Any]]:
        """The build options, plus the default registry layer cache for a pushing
        BuildKit (buildx) build that names no cache of its own."""
        extra = self.build_kwargs
        if not (self.push and getattr(self.session.engine, "registry_cache", False)):
            return extra
        if any(k not in BUILDX_OPTIONS for k in extra or {}) or {"cache_from", "cache_to"} & set(extra or {}):
            return extra
        if self.plan.backend == "docker-py" or not buildx_available():
            return extra
        cache = registry_cache_options(self.plan.repository)
        if not cache:
            return extra
        # buildx reads logins only from the docker config: hand it the push's credentials
        # when the cache lives in the image's registry (engine._buildx.buildx_auth_env)
        creds, ref = self.session.credentials, registry_cache_ref(self.plan.repository)
        same = creds is not None and ref and ImageRef.parse(ref).registry == ImageRef.parse(self.plan.repository).registry
        return {**(extra or {}), **cache, **({CACHE_AUTH: creds} if same else {})}

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
            image_id = session.engine.build(plan, list(plan.all_tags), self.stream, self.build_timeout, extra=self._build_extra())
            built = True
            self.lap("build")
        if self.verify is not None:
            self.verify(image_id)
            self.lap("verify")
        if not self.push:
            image = local or session.engine.local_image(image_id)
            return self.result(image_id=image_id, size=image.size if image else None, built=built)
        image_id, digest = _publish_plan(session, target, image_id, self.stream, self.push_timeout, replace=(self.replace or True) if self.force else False)
        self.lap("push")
        logger.info("pushed %s (%s)", plan.ref, digest)
        image = session.engine.local_image(image_id)
        return self.result(image_id=image_id, size=image.size if image else None, digest=digest, built=built, pushed=True)
