"""The ``image-refresh`` flow: rebuild, verify and publish the images that went stale.

For every image of a configuration file (``flows/refresh.yaml`` by default; see it for
the format) — a Dockerfile project, a declarative ``Image`` spec, or a docker-pkg tree —
the flow checks whether a base image moved in its registry or the image outgrew its
``max_age``, and rebuilds only what is stale, parents before children: an image built
FROM another configured image is checked after it, so a rebuilt parent makes it stale.
How staleness is decided (base digests as a build label, hence in the content tag) is
explained in :mod:`prefect_flyimage.refresh`.

Every step is a Prefect task: check (one per image or tree), pin bases, rebuild (the
pipeline's ``ensure`` with the verification between build and push), update
deployments; tree images run as the chain's per-image tasks. The run ends with a markdown artifact (key
``image-refresh``): what was stale and why, what was rebuilt, base and image digests
before and after. Secrets never appear in it.

Run it ad hoc with ``python flows/image_refresh.py [config]`` (exit 2 with the problems
when the configuration is invalid), or deployed on a schedule from ``prefect.yaml``
(deployment ``image-refresh/nightly``).
"""

from __future__ import annotations

import contextlib
import pickle
import sys
from pathlib import Path
from typing import Any, Optional

import pendulum
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.exceptions import ObjectNotFound

from prefect_flyimage import refresh as rf
from prefect_flyimage.chain.builder import DockerBuilder
from prefect_flyimage.chain.flows import ImageJob, ImageTaskFailed, distributed_job
from prefect_flyimage.chain.flows import build_image as build_tree_image
from prefect_flyimage.chain.fsm import ImageFSM
from prefect_flyimage.chain.graph import critical_path
from prefect_flyimage.chain.scheduler import run_dag
from prefect_flyimage.distributed import BuildCluster, future_result
from prefect_flyimage.engine import Engine
from prefect_flyimage.errors import ConfigError, RefreshFailed, redact
from prefect_flyimage.pipeline import ensure
from prefect_flyimage.plan import BuildPlan, BuildResult
from prefect_flyimage.tasks import DEFAULT_RETRIES, retry_delays, retry_on_transient

# Dask workers unpickle each task run's context, which holds this flow. Loaded from its
# file (a deployment's entrypoint, ``load_flow_from_entrypoint``), this module cannot be
# imported there: ship it by value.
if __name__ != "__main__" and __name__ in sys.modules:
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Key of the run summary artifact.
ARTIFACT_KEY = "image-refresh"
#: Images of one tree built at once (this project's CI machines have 2 cores).
TREE_CONCURRENCY = 2

# Retry what a retry can cure (an unreachable registry or daemon); fail fast otherwise.
# Task inputs hold plans and credentials: never hash them into cache keys.
_TASK_OPTIONS: dict[str, Any] = dict(
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=DEFAULT_RETRIES,
    retry_delay_seconds=retry_delays(),
    retry_condition_fn=retry_on_transient,
)


# ---- tasks ------------------------------------------------------------------------------


@task(name="check-image", task_run_name="check {name}", **_TASK_OPTIONS)
def check_image(
    name: str,
    plan: BuildPlan,
    base_refs: list[str],
    book: rf.CredentialBook,
    base_source: str = "auto",
    max_age: Optional[pendulum.Duration] = None,
    previous: Optional[dict[str, Any]] = None,
    force: bool = False,
) -> rf.Check:
    """Look up the base digests and decide whether the image of ``plan`` is stale."""
    with Engine() as engine:
        check = rf.check_plan(
            engine, name, plan, base_refs, book,
            base_source=base_source, max_age=max_age, previous=previous, force=force,
        )
    logger = get_run_logger()
    for base in check.bases:
        logger.info("base %s is %s (%s)", base.ref, base.digest, base.source)
    if check.stale:
        logger.info("%s is stale: %s", name, "; ".join(check.reasons))
    else:
        logger.info("%s is fresh: %s is in the registry (%s)", name, check.reference, check.published)
    return check


@task(name="check-tree", task_run_name="check tree {name}", **_TASK_OPTIONS)
def check_tree(
    name: str,
    builder: DockerBuilder,
    book: rf.CredentialBook,
    base_source: str = "auto",
    max_age: Optional[pendulum.Duration] = None,
    previous: Optional[dict[str, dict[str, Any]]] = None,
    force: bool = False,
) -> dict[str, rf.TreeImageCheck]:
    """Label the tree's plans with their base digests and find its stale images."""
    checks = rf.check_tree(
        builder.engine, builder, book, base_source=base_source, max_age=max_age, previous=previous, force=force,
    )
    logger = get_run_logger()
    for check in checks.values():
        logger.info("%s: %s", check.label, "; ".join(check.reasons) if check.stale else "fresh")
    return checks


@task(name="pin-bases", **_TASK_OPTIONS)
def pin_bases(bases: list[rf.BaseDigest], book: rf.CredentialBook) -> list[str]:
    """Make each registry base's tag name the digest that was checked; return what was pulled."""
    with Engine() as engine:
        pulled = [f"{b.ref}@{b.digest}" for b in bases if rf.pin_base(engine, b, book.for_ref(b.ref))]
    if pulled:
        get_run_logger().info("pulled %s", ", ".join(pulled))
    return pulled


@task(name="rebuild-image", task_run_name="rebuild {name}", **_TASK_OPTIONS)
def rebuild_image(
    name: str, plan: BuildPlan, book: rf.CredentialBook, command: list[str], timeout: float = 300.0, force: bool = False,
    replaces: Optional[str] = None,
) -> BuildResult:
    """Build, verify (labels; ``command`` in the image, no network) and publish ``plan``'s image.

    The pipeline decides what exists: with ``force`` (too old, or forced) it builds anew
    although the content tag is published; a failed verification publishes nothing.
    """
    logger = get_run_logger()
    with Engine() as engine:
        def verify(image_id: str) -> None:
            checked = rf.verify_image(engine, image_id, plan, command, timeout=timeout, secrets=book.secrets)
            logger.info("%s verified (%s)", plan.ref, checked)

        # replaces: a retry finds its earlier attempt's content tag and adopts it, not a third image.
        return ensure(plan, push=True, force=force, credentials=book.for_ref(plan.repository), engine=engine, verify=verify,
                      replace=replaces)


@task(name="update-deployments", **_TASK_OPTIONS)
def update_deployments(names: list[str], image: str) -> list[str]:
    """Point the ``image`` job variable of each ``flow/deployment`` at ``image``; return those changed.

    A deployment that does not exist is logged and skipped: the image is published
    either way.
    """
    logger = get_run_logger()
    changed = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                deployment = client.read_deployment_by_name(name)
            except ObjectNotFound:
                logger.warning("deployment %s does not exist: not updated", name)
                continue
            variables = dict(deployment.job_variables or {})
            if variables.get("image") == image:
                continue
            variables["image"] = image
            client.update_deployment(deployment.id, DeploymentUpdate(job_variables=variables))
            logger.info("deployment %s now runs %s", name, image)
            changed.append(name)
    return changed


# ---- one Dockerfile or spec image ---------------------------------------------------------


def _refresh_image(entry: rf.ImageEntry, book: rf.CredentialBook, state: rf.RefreshState, force: bool, dry_run: bool) -> rf.ImageReport:
    previous = state.get(entry.name)
    with rf.prepared_plan(entry) as plan:
        base_refs = rf.external_bases(plan.dockerfile_text, dict(plan.build_args))
        check = check_image(
            entry.name, plan, base_refs, book, entry.base_source, entry.max_age, previous, force
        )
        report = dict(
            name=entry.name, kind=entry.kind, reference=check.reference, reasons=check.reasons,
            bases_before=dict((previous or {}).get("bases") or {}),
            bases_after={b.ref: b.digest for b in check.bases}, digest_before=check.current,
        )
        if not check.stale:
            state.record(entry.name, reference=check.reference, content_tag=check.plan.content_tag,
                         digest=check.published, bases=check.bases, built_at=check.created)
            updated = update_deployments(list(entry.deployments), check.reference) if entry.deployments and not dry_run else []
            return rf.ImageReport(status="fresh", digest_after=check.published, deployments=tuple(updated), **report)
        if dry_run:
            return rf.ImageReport(status="stale", **report)

        pin_bases(list(check.bases), book)
        # Too old (or forced): same plan, so rebuild over the content tag without the layer cache.
        plan = check.plan.with_(no_cache=True) if check.force else check.plan
        pushed = rebuild_image(entry.name, plan, book, list(entry.verify), entry.verify_timeout, check.force,
                               check.published if check.force else None)
        state.record(entry.name, reference=check.reference, content_tag=plan.content_tag, digest=pushed.digest,
                     bases=check.bases, built_at=pendulum.now("UTC").isoformat())
        updated = update_deployments(list(entry.deployments), check.reference) if entry.deployments else []
        return rf.ImageReport(status="rebuilt", digest_after=pushed.digest, deployments=tuple(updated), **report)


# ---- one docker-pkg tree --------------------------------------------------------------------


def _run_tree_jobs(
    entry: rf.ImageEntry, builder: DockerBuilder, checks: dict[str, rf.TreeImageCheck], cluster: Optional[BuildCluster] = None,
) -> dict[str, dict[str, Any]]:
    """Build, verify (``test.sh``) and publish the stale images, parents first, with the chain's task."""
    images = {img.short_name: img for img in builder.all_images}
    names = [n for n, c in checks.items() if c.stale]
    for name in names:
        if checks[name].force:
            images[name].force_rebuild()  # its plan's image exists: build it anew
    parents = {n: [p.short_name for p in images[n].parents if p.short_name in names] for n in names}
    priority = critical_path(names, parents)
    outcomes: dict[str, dict[str, Any]] = {}

    def submit(name: str, parent_futures: list[Any]) -> Any:
        img = images[name]
        # Parents that stay as they are were found published: pull them if the daemon lacks them.
        keep = tuple(p.label for p in img.parents if p.short_name not in names)
        if cluster is not None:  # on a build host of the cluster: parents by digest, state found there
            job = distributed_job(img, builder.base_images, True, True, recheck=not checks[name].force, keep=keep)
            task = build_tree_image.with_options(task_run_name=f"image-{name}")
            params = {"job": pickle.dumps(job), "config_path": str(entry.tree_config), "publish": True}
            return cluster.submit(task, params, priority=int(priority[name]))
        job = ImageJob(img.spec, img.plan, img.state, img.image_id, True, True, keep, replace=img.replace)
        return build_tree_image.with_options(task_run_name=f"image-{name}").submit(
            job, str(entry.tree_config), True, wait_for=parent_futures
        )

    def succeeded(name: str, future: Any) -> bool:
        result = future_result(future)
        if isinstance(result, ImageTaskFailed):
            outcomes[name] = result.outcome
        elif isinstance(result, dict):
            outcomes[name] = result
        else:
            outcomes[name] = {"state": ImageFSM.STATE_ERROR, "error": f"task ended {future.state.type.value}: {result}"}
        # Children on other build hosts pull this image by the digest it was published under.
        images[name].digest = outcomes[name].get("digest") or images[name].digest
        images[name].image_id = outcomes[name].get("image_id") or images[name].image_id
        return outcomes[name].get("state") == ImageFSM.STATE_PUBLISHED

    for event in run_dag(names, parents, submit, succeeded, max_in_flight=TREE_CONCURRENCY):
        if event.status == "blocked":
            outcomes[event.name] = {"state": "blocked", "blocked_by": event.cause}
    return outcomes


def _refresh_tree(
    entry: rf.ImageEntry, book: rf.CredentialBook, state: rf.RefreshState, force: bool, dry_run: bool, secrets: list[str],
    cluster: Optional[BuildCluster] = None,
) -> list[rf.ImageReport]:
    with Engine() as engine:  # one Docker client for the scan and checks of all the tree's images
        return _refresh_tree_with(entry, book, state, force, dry_run, secrets, rf.scan_tree(entry, engine), cluster)


def _refresh_tree_with(
    entry: rf.ImageEntry, book: rf.CredentialBook, state: rf.RefreshState, force: bool, dry_run: bool,
    secrets: list[str], builder: DockerBuilder, cluster: Optional[BuildCluster] = None,
) -> list[rf.ImageReport]:
    own = rf.tree_credentials(builder)
    if own is not None:
        secrets.append(own.secret)  # the tree's config.yaml holds a password of its own
    previous = {img.short_name: state.get(f"{entry.name}/{img.short_name}") or {} for img in builder.all_images}
    checks = check_tree(entry.name, builder, book, entry.base_source, entry.max_age, previous, force)
    stale = [c for c in checks.values() if c.stale]
    outcomes: dict[str, dict[str, Any]] = {}
    if stale and not dry_run:
        pin_bases(list({b.ref: b for c in stale for b in c.bases}.values()), book.including(own))
        outcomes = _run_tree_jobs(entry, builder, checks, cluster)
    reports = []
    for name, check in checks.items():
        key = f"{entry.name}/{name}"
        before = dict(previous[name].get("bases") or {})
        common = dict(
            name=key, kind="tree", reference=check.label, reasons=check.reasons, bases_before=before,
            bases_after={b.ref: b.digest for b in check.bases}, digest_before=check.current,
        )
        if not check.stale:
            state.record(key, reference=check.label, content_tag=check.content_tag, digest=check.current, bases=check.bases)
            reports.append(rf.ImageReport(status="fresh", digest_after=check.current, **common))
        elif dry_run:
            reports.append(rf.ImageReport(status="stale", **common))
        else:
            outcome = outcomes.get(name, {})
            if outcome.get("state") == ImageFSM.STATE_PUBLISHED:
                state.record(key, reference=check.label, content_tag=check.content_tag, digest=outcome.get("digest"),
                             bases=check.bases, built_at=pendulum.now("UTC").isoformat())
                reports.append(rf.ImageReport(status="rebuilt", digest_after=outcome.get("digest"), **common))
            elif outcome.get("state") == "blocked":
                reports.append(rf.ImageReport(status="blocked", error=f"parent {outcome.get('blocked_by')} failed", **common))
            else:
                reports.append(rf.ImageReport(
                    status="failed", error=outcome.get("error") or f"ended {outcome.get('state', 'unknown')}", **common
                ))
    return reports


# ---- the flow ---------------------------------------------------------------------------------


def _refresh_entries(order, parents, book, state, force, dry_run, secrets, reports, failed, logger, cluster) -> None:  # noqa: ANN001
    for entry in order:
        blocked_by = [p for p in parents[entry.name] if p in failed]
        if blocked_by:
            reports.append(rf.ImageReport(entry.name, entry.kind, "blocked", error=f"not checked: {', '.join(blocked_by)} failed"))
            failed.add(entry.name)
            continue
        try:
            if entry.kind == "tree":
                rows = _refresh_tree(entry, book, state, force, dry_run, secrets, cluster)
            else:
                rows = [_refresh_image(entry, book, state, force, dry_run)]
        except Exception as exc:  # noqa: BLE001 - one image failing must not stop the others
            message = redact(f"{type(exc).__name__}: {exc}", secrets)
            logger.error("%s failed: %s", entry.describe(), message)
            rows = [rf.ImageReport(entry.name, entry.kind, "failed", error=message)]
        reports += rows
        if any(r.status in ("failed", "blocked") for r in rows):
            failed.add(entry.name)
        for r in rows:
            print(f"{r.name}: {r.status}" + (f" ({'; '.join(r.reasons)})" if r.reasons and r.status != "fresh" else ""))



@flow(name="image-refresh", log_prints=True)
def image_refresh(
    config_path: str = rf.DEFAULT_CONFIG,
    force: bool = False,
    dry_run: bool = False,
    raise_on_failure: bool = True,
    docker_hosts: Optional[list[str]] = None,
    dask_address: Optional[str] = None,
) -> list[dict[str, Any]]:
    """Rebuild, verify and publish the configured images that are stale, descendants included.

    Args:
        config_path: the refresh configuration (YAML), relative to the working directory.
        force: rebuild every image, stale or not.
        dry_run: only check and report; build and publish nothing.
        raise_on_failure: fail the run (after writing the artifact) when an image failed.
        docker_hosts: build the trees' images on these Docker hosts, one Dask worker each.
        dask_address: a Dask scheduler of build workers (default with ``docker_hosts``: a local cluster).

    Returns:
        One report per image (:class:`prefect_flyimage.refresh.ImageReport` as a dict).
    """
    logger = get_run_logger()
    config = rf.load_config(config_path)
    book = rf.CredentialBook.from_config(config)
    state = rf.RefreshState(config.state_file)
    shapes = {e.name: rf.entry_shape(e) for e in config.images}
    order, parents = rf.entry_order(config.images, shapes)
    logger.info("checking %d image(s) of %s: %s", len(order), config.path, ", ".join(e.name for e in order))

    reports: list[rf.ImageReport] = []
    failed: set[str] = set()
    secrets = list(book.secrets)
    cluster = BuildCluster(docker_hosts, dask_address) if (docker_hosts or dask_address) else None
    with cluster if cluster is not None else contextlib.nullcontext():
        _refresh_entries(order, parents, book, state, force, dry_run, secrets, reports, failed, logger, cluster)
    state.save()
    markdown = rf.summary_markdown(reports, config_path=str(config.path), dry_run=dry_run, secrets=secrets)
    create_markdown_artifact(markdown=markdown, key=ARTIFACT_KEY, description="image refresh: stale images, rebuilds, digests")
    if raise_on_failure and failed:
        raise RefreshFailed(f"{len(failed)} image(s) failed or were blocked: {', '.join(sorted(failed))} (see the artifact)")
    return [r.as_dict() for r in reports]


def main(argv: Optional[list[str]] = None) -> int:
    """``python flows/image_refresh.py [CONFIG]``: run the flow; exit 2 (with the problems,
    each naming its file and line) when the configuration is invalid, 1 when images failed."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print("usage: python flows/image_refresh.py [CONFIG]  (default: flows/refresh.yaml beside this file)",
              file=sys.stderr)
        return 2
    config = args[0] if args else str(Path(__file__).with_name("refresh.yaml"))
    try:
        rf.load_config(config)  # fail before starting a flow run
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        image_refresh(config)
    except RefreshFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
