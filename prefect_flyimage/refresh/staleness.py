"""Is an image stale? One image of a plan, or every image of a docker-pkg tree.

Whether the image of a plan exists is the pipeline's decision
(:func:`prefect_flyimage.pipeline.exists`); a tree's images are asked through the chain's
:class:`~prefect_flyimage.chain.ImageFSM`, which asks the pipeline in turn.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import pendulum

from ..credentials import RegistryCredentials
from ..errors import RefreshConfigError
from ..plan import BuildPlan
from .bases import BaseDigest, image_created, labelled_plan, registry_digest, resolve_base
from .config import CredentialBook
from .planning import tree_external_bases
from .report import short_digest

if TYPE_CHECKING:
    from ..chain.builder import DockerBuilder
    from ..engine import Engine

__all__ = ["Check", "TreeImageCheck", "check_plan", "check_tree", "stale_reasons", "tree_credentials"]


@dataclass(frozen=True)
class Check:
    """What the check of one image found."""

    name: str
    plan: BuildPlan  #: the plan with today's base digests in its label
    bases: tuple[BaseDigest, ...]
    published: Optional[str]  #: registry digest of the plan's content tag (None: not published)
    current: Optional[str]  #: digest the image's main tag had before (the one a rebuild replaces)
    created: Optional[str]  #: when the published image was built (ISO 8601), when looked up
    reasons: tuple[str, ...]  #: why it is stale (empty: fresh)
    force: bool = False  #: rebuild although the content tag exists (too old, or forced)

    @property
    def stale(self) -> bool:
        """True when the image must be rebuilt."""
        return bool(self.reasons)

    @property
    def reference(self) -> str:
        """``repository:content_tag``: unique for these inputs and bases (what deployments use)."""
        return str(self.plan.content_ref)


def stale_reasons(
    plan: BuildPlan, bases: Sequence[BaseDigest], previous: Optional[Mapping[str, Any]]
) -> list[str]:
    """Why the registry has no image for ``plan`` — explained with the previous run's record."""
    if not previous:
        return ["no image for the current inputs and base digests in the registry (first check of this image)"]
    old = previous.get("bases") or {}
    moved = [
        f"base {b.ref} changed: {short_digest(old[b.ref])} → {short_digest(b.digest)}"
        for b in bases
        if b.ref in old and old[b.ref] != b.digest
    ]
    added = [f"new base {b.ref}" for b in bases if b.ref not in old]
    if moved or added:
        return moved + added
    if previous.get("content_tag") == plan.content_tag:
        return [f"{plan.content_ref} is missing from the registry (deleted?)"]
    return ["build inputs changed (Dockerfile, context or build settings): new content tag " + plan.content_tag]


def _too_old(
    engine: "Engine", ref: Any, digest: str, creds: Optional[RegistryCredentials],
    max_age: pendulum.Duration, now: Optional[pendulum.DateTime],
) -> tuple[str, Optional[str]]:
    """(why it is too old or ``""``, when it was built)."""
    built = image_created(engine, ref, digest, creds)
    age = (now or pendulum.now("UTC")) - built
    if age.total_seconds() > max_age.total_seconds():
        return f"older than max_age {max_age.in_words()}: built {age.in_words()} ago", built.isoformat()
    return "", built.isoformat()


def check_plan(
    engine: "Engine",
    name: str,
    plan: BuildPlan,
    base_refs: Sequence[str],
    book: CredentialBook,
    *,
    base_source: str = "auto",
    max_age: Optional[pendulum.Duration] = None,
    previous: Optional[Mapping[str, Any]] = None,
    force: bool = False,
    now: Optional[pendulum.DateTime] = None,
) -> Check:
    """Decide whether the image of ``plan`` is stale (see :mod:`prefect_flyimage.refresh`)."""
    from ..pipeline import exists

    bases = tuple(resolve_base(engine, ref, book.for_ref(ref), base_source) for ref in base_refs)
    labelled = labelled_plan(plan, bases)
    creds = book.for_ref(labelled.repository)
    published = exists(labelled, creds, engine).remote_digest
    # "Before": what the image's main reference named until now.
    if labelled.tag and labelled.tag != labelled.content_tag:
        current = registry_digest(engine, labelled.ref, creds)
    else:
        current = published or (previous or {}).get("digest")
    reasons: list[str] = []
    created: Optional[str] = None
    if published is None:
        reasons = stale_reasons(labelled, bases, previous)
    elif max_age is not None:
        why, created = _too_old(engine, labelled.content_ref, published, creds, max_age, now)
        reasons = [why] if why else []
    rebuild = bool(published and reasons)
    if published and force and not reasons:
        reasons, rebuild = ["rebuild forced (force=True)"], True
    return Check(name, labelled, bases, published, current, created, tuple(reasons), rebuild)


@dataclass(frozen=True)
class TreeImageCheck:
    """What the check of one image of a tree found."""

    short_name: str
    label: str  #: ``registry/ns/name:version``
    content_ref: str  #: ``registry/ns/name:content_tag`` (the plan with today's base digests)
    content_tag: str
    bases: tuple[BaseDigest, ...]  #: its own external bases (parents in the tree are not listed)
    current: Optional[str]  #: registry digest of the label before the run
    reasons: tuple[str, ...]
    force: bool = False  #: rebuild although this plan's image is published (too old, parent rebuilt, forced)

    @property
    def stale(self) -> bool:
        """True when the image must be rebuilt."""
        return bool(self.reasons)


def tree_credentials(builder: "DockerBuilder") -> Optional[RegistryCredentials]:
    """The registry credentials of a tree's ``config.yaml`` (``None`` when it has none)."""
    from ..chain.config import credentials

    return credentials(builder.config)


def check_tree(
    engine: "Engine",
    builder: "DockerBuilder",
    book: CredentialBook,
    *,
    base_source: str = "auto",
    max_age: Optional[pendulum.Duration] = None,
    previous: Optional[Mapping[str, Mapping[str, Any]]] = None,
    force: bool = False,
    now: Optional[pendulum.DateTime] = None,
) -> dict[str, TreeImageCheck]:
    """Check every (selected) image of a scanned tree; label its plans with base digests.

    Changes ``builder``'s images through their API (:meth:`ImageFSM.set_plan`): each
    image's plan gets the base label for its own external bases, parents first, so a
    child's plan (which names its parents' plan hashes) moves with its parents' bases;
    then each image's state is read (:meth:`ImageFSM.refresh_state`). A stale image makes
    every descendant stale too.

    ``previous`` maps short names to the state records of the last run.
    """
    from ..chain.fsm import ImageFSM
    from ..chain.graph import build_order

    previous = previous or {}
    own_creds = tree_credentials(builder)
    if own_creds is None:
        raise RefreshConfigError([f"tree {builder.root}: its config.yaml needs registry, username and password "
                                  "to check and publish images"])
    creds_for = book.including(own_creds).for_ref

    external = tree_external_bases(builder)
    resolved = {
        ref: resolve_base(engine, ref, creds_for(ref), base_source)
        for ref in dict.fromkeys(r for refs in external.values() for r in refs)
    }
    images = {img.short_name: img for img in builder.all_images}
    parents = {n: [p.short_name for p in img.parents] for n, img in images.items()}
    selected = [n for n, img in images.items() if builder.glob is None or fnmatch.fnmatch(img.label, builder.glob)]
    order = build_order(selected, parents)  # the selection and its ancestors, parents first
    for name in order:
        # Reading img.plan computes it from the parents' plans, already labelled above.
        images[name].set_plan(labelled_plan(images[name].plan, [resolved[r] for r in external[name]]))
    for name in order:
        images[name].refresh_state()

    reasons: dict[str, list[str]] = {}
    forced: set[str] = set()
    for name in order:  # parents first: a stale image makes its whole subtree stale
        img = images[name]
        bases = [resolved[r] for r in external[name]]
        stale_parents = [p for p in parents[name] if reasons.get(p)]
        own: list[str] = []
        if img.state != ImageFSM.STATE_PUBLISHED:
            own = stale_reasons(img.plan, bases, previous.get(name))
            if stale_parents:  # its plan moved with its parent's: only its own bases need saying
                own = [r for r in own if r.startswith(("base ", "new base "))]
        elif max_age is not None and img.digest:
            why, _ = _too_old(engine, img.label, img.digest, own_creds, max_age, now)
            if why:
                own.append(why)
                forced.add(name)
        reasons[name] = [f"parent {p} is rebuilt" for p in stale_parents] + own
        if stale_parents and img.state == ImageFSM.STATE_PUBLISHED:
            forced.add(name)  # same plan, but it must be rebuilt on the new parent
        if force and not reasons[name]:
            reasons[name].append("rebuild forced (force=True)")
            forced.add(name)

    checks = {}
    for name in order:
        img = images[name]
        current = img.digest if img.state == ImageFSM.STATE_PUBLISHED else registry_digest(engine, img.label, own_creds)
        checks[name] = TreeImageCheck(
            name, img.label, str(img.plan.content_ref), img.plan.content_tag,
            tuple(resolved[r] for r in external[name]), current, tuple(reasons[name]), name in forced,
        )
    return checks
