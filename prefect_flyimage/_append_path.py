"""The pipeline's code-only path: when it applies, and taking it (see :mod:`._append`).

It applies when the plan splits (:func:`._split.split_plan`), ``plan.append`` and
``$PREFECT_FLYIMAGE_APPEND`` allow it, the result goes to the registry, nothing needs the
image in the daemon (no ``verify``, no docker-py-only build options) and the registry is
asked directly. The dependency image is found by its own content tag; when the registry
lacks it, a push builds and pushes it first (the one step that needs the daemon), while a
build that only accepts the registry (``accept_registry``, ``DockerImage.build()``) never
pushes it: it builds in the daemon as before, writing nothing to the registry.

Front doors that build and push in two calls (the ``prefect.yaml`` steps, the task pair)
cannot know whether a push follows a build. They use :func:`dependency_published`: a
registry that holds the plan's dependency image is where this project publishes (a push
put it there), so the build appends there at once and the push confirms it; a registry
without it gets a build in the daemon as before, and the push then seeds the dependency
image (:func:`seed_dependency`) so the next code-only change appends.
"""

from __future__ import annotations

__all__ = ["applies", "confirm_appended", "dependency_published", "path_of", "seed_dependency", "try_append"]

import logging
from typing import TYPE_CHECKING, Any, Optional

from ._split import Split, append_enabled, split_plan
from .credentials import CredentialsLike
from .errors import AppendNotApplicable, FlyImageError, RegistryUnavailable
from .plan import BuildPlan

if TYPE_CHECKING:
    from .plan import BuildResult

logger = logging.getLogger("prefect_flyimage")


def path_of(plan: BuildPlan) -> tuple[str, Split]:
    """``("append" | "build", split)``: the path ensure takes for ``plan`` (when the registry
    is the target), and the split with its reason when it does not split."""
    split = split_plan(plan)
    if not plan.append:
        return "build", Split(plan, reason="the plan opts out (append=False)")
    if not append_enabled():
        return "build", Split(plan, reason="$PREFECT_FLYIMAGE_APPEND turns the append off")
    return ("append" if split.splits else "build"), split


def applies(run: Any) -> bool:
    """True when ``run`` (a pipeline ``_Ensure``) would try the code-only path."""
    from .registry import RegistryClient

    return (
        run.verify is None and not run.build_kwargs and isinstance(run.session.registry, RegistryClient)
        and path_of(run.plan)[0] == "append"
    )


def try_append(run: Any) -> Optional[tuple[str, bool]]:
    """``(digest, dependency built)`` when ``run`` (a pipeline ``_Ensure``) took the
    code-only path, ``None`` when it does not apply (the caller builds as before)."""
    from ._append import append_image
    from ._publish import _plan_lock
    from .registry import RegistryClient

    plan: BuildPlan = run.plan
    path, split = path_of(plan)
    if run.verify is not None or run.build_kwargs or path != "append":
        logger.debug("%s builds: %s", plan.ref, split.reason)
        return None
    registry = run.session.registry
    if not isinstance(registry, RegistryClient):
        return None
    dep = split.dependency
    assert dep is not None
    tags = (plan.content_tag, *(t for t in plan.all_tags if t != plan.content_tag))
    built = False
    with _plan_lock(run.target):
        try:
            outcome = append_image(registry, split, tags, plan.image_labels)
        except RegistryUnavailable:
            return None  # the build path reports the outage
        except AppendNotApplicable as exc:
            logger.info("%s builds: %s", plan.ref, exc)
            return None
        if outcome is None and not run.push:
            # A build that only accepts the registry (DockerImage.build(), which cannot know
            # whether a push follows) must not push: it builds in the daemon instead.
            logger.info("the registry lacks the dependency image %s: building %s in the daemon", dep.content_ref, plan.ref)
            return None
        if outcome is None:
            from .pipeline import ensure

            logger.info("the registry lacks the dependency image %s: building and pushing it first", dep.content_ref)
            ensure(
                dep, push=True, engine=run.session.engine, registry=registry, credentials=run.session.credentials,
                stream_progress_to=run.stream, build_timeout=run.build_timeout, push_timeout=run.push_timeout,
            )
            built = True
            try:
                outcome = append_image(registry, split, tags, plan.image_labels)
            except AppendNotApplicable as exc:
                logger.info("%s builds: %s", plan.ref, exc)
                return None
    if outcome is None:
        return None
    logger.info("%s: code appended in the registry to %s (%s)", plan.ref, dep.content_ref, outcome.digest)
    return outcome.digest, built


def dependency_published(plan: BuildPlan, credentials: CredentialsLike = None, build_kwargs: Any = None) -> bool:
    """True when the code-only path applies to ``plan`` (its bases resolved, as
    :func:`~prefect_flyimage.pipeline.resolve_bases` gives it) and its registry holds the
    dependency image already. A registry that cannot be asked says ``False`` (build)."""
    from ._observe import plan_credentials
    from .registry import shared_client

    path, split = path_of(plan)
    if path != "append" or build_kwargs:
        return False
    assert split.dependency is not None
    dep = split.dependency.content_ref
    try:
        return shared_client(dep.registry, plan_credentials(plan, credentials)).manifest_digest(str(dep)) is not None
    except FlyImageError as exc:
        logger.info("cannot check the dependency image %s (%s): building", dep, exc)
        return False


def seed_dependency(plan: BuildPlan, credentials: CredentialsLike = None, stream: Any = None) -> Optional[str]:
    """Make the registry hold ``plan``'s dependency image (after a push of a plan built in
    the daemon), so the next code-only change appends. Cheap then: its steps are the
    ones just built (the layer cache has them) and its layers are in the repository.
    Returns its digest, ``None`` when the plan does not split; a failure only warns (the
    pushed image is fine, the next redeploy just builds)."""
    from .pipeline import ensure

    path, split = path_of(plan)
    if path != "append" or split.dependency is None:
        return None
    try:
        done = ensure(split.dependency, push=True, credentials=credentials, stream_progress_to=stream)
    except FlyImageError as exc:
        logger.warning("could not publish the dependency image %s (%s); the next code-only redeploy builds",
                       split.dependency.content_ref, exc)
        return None
    if done.pushed:
        logger.info("published the dependency image %s: the next code-only redeploy appends", split.dependency.content_ref)
    return done.digest


def confirm_appended(
    plan: BuildPlan, name: str, digest: str, tags: list[str], credentials: CredentialsLike = None,
    plan_hash: Optional[str] = None,
) -> "BuildResult":
    """The push after an append: the registry holds ``name@digest`` under every one of
    ``tags`` (tags it lacks are moved there by putting the manifest again; no daemon).
    ``pushed`` says whether a tag moved; ``plan_hash`` (default ``plan``'s) goes on the result."""
    from ._append import tag_in_registry
    from ._observe import plan_credentials
    from .names import ImageRef
    from .plan import BuildResult
    from .registry import shared_client

    client = shared_client(ImageRef.parse(name).registry, plan_credentials(plan, credentials))
    moved = tag_in_registry(client, name, digest, tuple(tags))
    return BuildResult(f"{name}:{tags[0]}", plan_hash or plan.hash, digest=digest, pushed=bool(moved), tags=tuple(tags))
