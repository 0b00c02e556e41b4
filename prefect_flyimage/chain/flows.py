"""The image tree as a Prefect flow: one task per image, each waiting only for its parents.

The flow scans and checks the whole tree first (a broken tree fails before any
build), then hands images to the task runner as soon as their parents are done,
at most ``max_concurrency`` at a time, longest remaining chain first. A failed image
keeps its descendants from building; unrelated branches carry on. Works with any
task runner: tasks get only picklable values, and read credentials from the config
file themselves so no secret becomes a task parameter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pickle
from dataclasses import dataclass
from typing import Any, Optional, Union

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from ..distributed import BuildCluster, future_result, host_alive, parse_docker_hosts, worker_docker_host
from ..errors import FlyImageError, ImageTaskFailed, InvalidArgumentError
from ..names import ImageRef
from ..plan import BuildPlan
from .builder import GOOD_STATES, DockerBuilder
from .changelog import ImageSpec
from .config import credentials, read_config, setting
from .errors import ChainBuildError
from .fsm import ImageFSM
from .graph import critical_path
from .report import ImageOutcome, report_run
from .scheduler import run_dag

log = logging.getLogger("prefect_flyimage.chain")


@dataclass(frozen=True)
class ImageJob:
    """Everything a task needs to build, verify and publish one image (no secrets)."""

    spec: ImageSpec
    plan: BuildPlan
    state: str
    image_id: Optional[str]
    nocache: bool
    pull: bool
    pull_parents: tuple[str, ...] = ()  #: labels of published parents to pull if missing
    #: (label, name@digest, image id or None) of parents to pull by digest and tag as label: the
    #: build is pinned to exactly the parent that was verified and published (other build host)
    parent_pins: tuple[tuple[str, str, Optional[str]], ...] = ()
    base_pulls: tuple[str, ...] = ()  #: base images to pull when the build host lacks them
    recheck: bool = False  #: find the state again first (a retry: the registry may have it already)
    replace: Union[bool, str] = False  #: a forced rebuild: the registry digest it replaces (``ImageFSM.replace``)


def _build_image(job: ImageJob | bytes, config_path: str, publish: bool = True) -> dict[str, Any]:
    """Build (unless already built), verify and optionally publish one image.

    ``job`` may come pickled: Dask rebuilds dataclass arguments field by field, which
    the plan's fields do not survive.
    """
    if isinstance(job, bytes):
        job = pickle.loads(job)  # noqa: S301 - our own flow pickled it
    config = read_config(config_path)
    fsm = ImageFSM(job.spec.folder, None, config, job.nocache, job.pull, inspect=False, spec=job.spec, plan=job.plan)
    fsm.state, fsm.image_id, fsm.replace = job.state, job.image_id, job.replace
    creds = credentials(config)
    try:
        try:
            for label in job.pull_parents:
                if fsm.engine.local_image(label) is None:
                    fsm.engine.pull(label, creds)
            _pin_parents(fsm, job, creds)
        except FlyImageError as exc:
            fsm._fail("pulling a parent", exc)
        if job.recheck and fsm.state != ImageFSM.STATE_ERROR:
            fsm.refresh_state()  # adopt what an earlier attempt published, by digest
        if fsm.state == ImageFSM.STATE_TO_BUILD:
            if job.replace:  # a forced rebuild: not this host's image of the plan from an earlier run either
                fsm.engine.remove(fsm.plan.content_ref)
            fsm.build()
        if fsm.state == ImageFSM.STATE_BUILT:
            fsm.verify()
        if publish and creds is not None and fsm.state == ImageFSM.STATE_VERIFIED:
            fsm.publish()
    finally:
        fsm.close()
    outcome = {**ImageOutcome.of(fsm).as_dict(), "image_id": fsm.image_id, "docker_host": worker_docker_host()}
    if fsm.state == ImageFSM.STATE_ERROR:
        raise ImageTaskFailed(f"{fsm.label}: {fsm.error}", outcome)
    return outcome


# The task's function stays importable under its own name, so a Dask worker unpickles it by
# reference (by value, cloudpickle would drag the module's globals along).
build_image = task(_build_image, name="build_image", cache_policy=NO_CACHE, retries=0)


def _pin_parents(fsm: ImageFSM, job: ImageJob, creds: Any) -> None:
    """Pull the build host's base images and parents; parents by digest, tagged as their label."""
    engine = fsm.engine
    for label in job.base_pulls:
        if engine.local_image(label) is None:
            ours = creds if creds is not None and label.startswith(creds.registry + "/") else None
            engine.pull(label, ours)
    for label, by_digest, image_id in job.parent_pins:
        pulled = _held(engine, by_digest, image_id) or engine.pull(by_digest, creds)
        if image_id and pulled != image_id:
            raise FlyImageError(f"{by_digest} is image {pulled}, not the verified parent {image_id}")
        engine.tag(pulled, label)


def _held(engine: Any, by_digest: str, image_id: Optional[str]) -> Optional[str]:
    """The id of the daemon's image recorded as ``name@digest`` (it built and pushed the
    parent, or pulled it before), so no pull is needed; ``None`` when it lacks it."""
    ref = ImageRef.parse(by_digest)
    local = engine.local_image(by_digest)
    if local is None or not local.has_digest(ref.name, ref.digest or "") or (image_id and local.id != image_id):
        return None
    return local.id


def distributed_job(
    img: ImageFSM, base_images: list[str], nocache: bool, pull: bool = True, recheck: bool = True, keep: tuple[str, ...] = ()
) -> ImageJob:
    """The job of ``img`` for a build host that may hold nothing: parents pinned by their
    published digest, base images pulled, the state found again there (unless ``recheck``
    is off: a forced rebuild). ``keep``: labels of parents to pull by tag (digest unknown)."""
    pins = tuple((p.label, f"{p.name}@{p.digest}", p.image_id) for p in img.parents if p.digest)
    pinned = {p.label for p in img.parents if p.digest}
    text = img.plan.dockerfile_text or ""
    bases = tuple(b for b in base_images if b in text)
    # A fresh plan: the cached build context (with its lock) stays here; the worker hashes again.
    plan = dataclasses.replace(img.plan)
    state = ImageFSM.STATE_TO_BUILD
    return ImageJob(
        img.spec, plan, state, None, nocache, pull, tuple(k for k in keep if k not in pinned), pins, bases, recheck, img.replace,
    )


def _job(builder: DockerBuilder, img: ImageFSM, distributed: bool = False) -> ImageJob:
    if distributed:
        # Another host may build the child: it gets each parent from the registry by digest.
        return distributed_job(img, builder.base_images, builder.nocache, builder.pull)
    published = [p.label for p in img.parents if p.state == ImageFSM.STATE_PUBLISHED] if builder.pull else []
    return ImageJob(img.spec, img.plan, img.state, img.image_id, builder.nocache, builder.pull, tuple(published), replace=img.replace)


def _apply(img: ImageFSM, outcome: dict[str, Any]) -> None:
    img.digest = outcome.get("digest") or img.digest
    img.image_id = outcome.get("image_id") or img.image_id
    img.error = outcome.get("error")
    img.durations = {"run": float(outcome.get("duration") or 0.0)}
    img.state = outcome["state"]


@flow(name="build-image-tree", log_prints=True)
def build_tree_flow(
    directory: str,
    config_path: str,
    selection: Optional[str] = None,
    max_concurrency: Optional[int] = None,
    publish: bool = True,
    nocache: bool = True,
    pull: bool = True,
    raise_on_failure: bool = True,
    docker_hosts: Optional[list[str]] = None,
    dask_address: Optional[str] = None,
    builds_per_host: int = 1,
) -> list[dict[str, Any]]:
    """Build, verify and publish the image tree in ``directory`` (docker-pkg layout).

    Args:
        directory: the tree root.
        config_path: docker-pkg ``config.yaml``.
        selection: glob on ``name:tag`` choosing the images (their to-build ancestors come along).
        max_concurrency: images built at the same time (default: 4; on build hosts, their
            build slots).
        publish: push verified images when the config has credentials.
        nocache: build without the layer cache.
        pull: consult the registry (published check, parents, base images).
        raise_on_failure: fail the flow run (after the artifact) when an image failed.
        docker_hosts: build hosts (Docker URLs); with ``dask_address`` or more than one host
            the images are built on a Dask cluster, one worker per host (see
            :mod:`prefect_flyimage.distributed`); an image whose host died is built again
            on another one.
        dask_address: a Dask scheduler whose build workers to use (default: a local cluster).
        builds_per_host: images each host of a local cluster builds at once (its worker's
            threads and ``docker-build`` slots; a remote worker's ``--resources
            docker-build=N`` says it). Builds wait mostly on the daemon and the registry,
            so 2-3 keep a host busy; ``max_concurrency`` still caps the whole tree.

    Returns one outcome dict per image handled (image, version, state, digest, duration, ...).
    """
    config = read_config(config_path)
    hosts = parse_docker_hosts(docker_hosts)
    if builds_per_host != 1 and not (dask_address or hosts):
        raise InvalidArgumentError("builds_per_host", "needs docker_hosts (without a cluster, max_concurrency says how many build at once)")
    cluster = BuildCluster(hosts, dask_address, builds_per_host) if (dask_address or hosts) else None
    builder = DockerBuilder(directory, config, selection, nocache, pull)
    docker_host_of: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(builder.close)
        if cluster is not None:  # a local cluster's workers start while the tree is scanned
            stack.push(cluster.start())
        builder.scan(max_workers=int(setting(config, "scan_workers") or 1))
        builder.refresh_base_images()
        if cluster is not None:
            cluster.__enter__()
            if len(cluster.live_hosts()) > 1 and not (publish and credentials(config) is not None):
                raise InvalidArgumentError(
                    "docker_hosts", "building on several docker hosts exchanges parents through the registry: "
                    "it needs publish and registry credentials in the config"
                )
        jobs = {img.short_name: img for img in builder.build_chain}
        if publish and credentials(config) is not None:
            for state in (ImageFSM.STATE_BUILT, ImageFSM.STATE_VERIFIED):
                for img in builder.images_in_state(state):
                    if builder._matches_glob(img):
                        jobs.setdefault(img.short_name, img)
        parents = {n: [p.short_name for p in img.parents] for n, img in jobs.items()}
        priority = critical_path(list(jobs), parents)
        if max_concurrency is None:
            max_concurrency = max(1, cluster.slots) if cluster is not None else 4
        where = f" on {len(cluster.live_hosts())} docker host(s)" if cluster is not None else ""
        print(f"image tree {builder.root}: {len(jobs)} image(s) to handle, up to {max_concurrency} at once{where}")

        def submit(name: str, parent_futures: list[PrefectFuture[Any]]) -> PrefectFuture[Any]:
            img = jobs[name]
            task = build_image.with_options(task_run_name=f"image-{name}")
            if cluster is not None:  # children are submitted once their parents are done
                params = {"job": pickle.dumps(_job(builder, img, True)), "config_path": str(config_path), "publish": publish}
                return cluster.submit(task, params, priority=int(priority[name]))
            return task.submit(_job(builder, img), str(config_path), publish, wait_for=parent_futures)

        def settle(name: str, fut: PrefectFuture[Any]) -> Optional[str]:
            """Apply the outcome; the docker host to blame when the host (not the image) failed."""
            result = future_result(fut)
            outcome = result.outcome if isinstance(result, ImageTaskFailed) else result
            if isinstance(outcome, dict):
                _apply(jobs[name], outcome)
                host = outcome.get("docker_host")
                if cluster is not None:  # which build host, reported only for distributed runs
                    docker_host_of[name] = host or ""
                if jobs[name].state == ImageFSM.STATE_ERROR and cluster is not None and host and not host_alive(host):
                    return host
                return None
            jobs[name].error = f"task ended {fut.state.type.value}: {result}"
            jobs[name].state = ImageFSM.STATE_ERROR
            return "" if cluster is not None else None  # a crashed task (e.g. its worker died): try again

        def succeeded(name: str, fut: PrefectFuture[Any]) -> bool:
            failed_host = settle(name, fut)
            tries = 1
            while failed_host is not None and cluster is not None and tries < max(2, len(cluster.hosts) + 1):
                if failed_host:
                    cluster.mark_dead(failed_host)
                if not cluster.live_hosts():
                    break
                print(f"* {jobs[name].label}: {jobs[name].error}; trying again on another host")
                tries += 1
                failed_host = settle(name, submit(name, []))
            return jobs[name].state in GOOD_STATES

        for event in run_dag(list(jobs), parents, submit, succeeded, max_in_flight=max(1, max_concurrency)):
            img = jobs[event.name]
            if event.status == "blocked":
                img.blocked_by = event.cause
                print(f"* {img.label}: not built, parent {event.cause} failed")
            else:
                on = f" on {docker_host_of[event.name]}" if docker_host_of.get(event.name) else ""
                print(f"* {img.label}: {img.state}" + (f" ({img.digest})" if img.digest else "") + on)
        report_run(builder.all_images, "build")
    outcomes = [ImageOutcome.of(jobs[n]) for n in sorted(jobs)]
    failed = [o.image for o in outcomes if o.state == ImageFSM.STATE_ERROR]
    blocked = [o.image for o in outcomes if o.blocked_by]
    if raise_on_failure and (failed or blocked):
        raise ChainBuildError(failed, blocked)
    return [{**o.as_dict(), **({"docker_host": docker_host_of[n]} if docker_host_of.get(n) else {})} for n, o in zip(sorted(jobs), outcomes)]


__all__ = ["ImageJob", "ImageTaskFailed", "build_image", "build_tree_flow", "distributed_job"]
