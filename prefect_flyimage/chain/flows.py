"""The image tree as a Prefect flow: one task per image, each waiting only for its parents.

The flow scans and checks the whole tree first (a broken tree fails before any
build), then hands images to the task runner as soon as their parents are done,
at most ``max_concurrency`` at a time, longest remaining chain first. A failed image
keeps its descendants from building; unrelated branches carry on. Works with any
task runner: tasks get only picklable values, and read credentials from the config
file themselves so no secret becomes a task parameter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from ..errors import FlyImageError, ImageTaskFailed
from ..plan import BuildPlan
from .builder import GOOD_STATES, DockerBuilder
from .changelog import ImageSpec
from .config import credentials, read_config, setting
from .errors import ChainBuildError
from .fsm import ImageFSM
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


@task(cache_policy=NO_CACHE, retries=0)
def build_image(job: ImageJob, config_path: str, publish: bool = True) -> dict[str, Any]:
    """Build (unless already built), verify and optionally publish one image."""
    config = read_config(config_path)
    fsm = ImageFSM(job.spec.folder, None, config, job.nocache, job.pull, inspect=False, spec=job.spec, plan=job.plan)
    fsm.state, fsm.image_id = job.state, job.image_id
    creds = credentials(config)
    try:
        try:
            for label in job.pull_parents:
                if fsm.engine.local_image(label) is None:
                    fsm.engine.pull(label, creds)
        except FlyImageError as exc:
            fsm._fail("pulling a parent", exc)
        if fsm.state == ImageFSM.STATE_TO_BUILD:
            fsm.build()
        if fsm.state == ImageFSM.STATE_BUILT:
            fsm.verify()
        if publish and creds is not None and fsm.state == ImageFSM.STATE_VERIFIED:
            fsm.publish()
    finally:
        fsm.close()
    outcome = {**ImageOutcome.of(fsm).as_dict(), "image_id": fsm.image_id}
    if fsm.state == ImageFSM.STATE_ERROR:
        raise ImageTaskFailed(f"{fsm.label}: {fsm.error}", outcome)
    return outcome


def _job(builder: DockerBuilder, img: ImageFSM) -> ImageJob:
    published = [p.label for p in img.parents if p.state == ImageFSM.STATE_PUBLISHED] if builder.pull else []
    return ImageJob(img.spec, img.plan, img.state, img.image_id, builder.nocache, builder.pull, tuple(published))


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
    max_concurrency: int = 4,
    publish: bool = True,
    nocache: bool = True,
    pull: bool = True,
    raise_on_failure: bool = True,
) -> list[dict[str, Any]]:
    """Build, verify and publish the image tree in ``directory`` (docker-pkg layout).

    Args:
        directory: the tree root.
        config_path: docker-pkg ``config.yaml``.
        selection: glob on ``name:tag`` choosing the images (their to-build ancestors come along).
        max_concurrency: images built at the same time.
        publish: push verified images when the config has credentials.
        nocache: build without the layer cache.
        pull: consult the registry (published check, parents, base images).
        raise_on_failure: fail the flow run (after the artifact) when an image failed.

    Returns one outcome dict per image handled (image, version, state, digest, duration, ...).
    """
    config = read_config(config_path)
    builder = DockerBuilder(directory, config, selection, nocache, pull)
    try:
        builder.scan(max_workers=int(setting(config, "scan_workers") or 1))
        builder.refresh_base_images()
        jobs = {img.short_name: img for img in builder.build_chain}
        if publish and credentials(config) is not None:
            for state in (ImageFSM.STATE_BUILT, ImageFSM.STATE_VERIFIED):
                for img in builder.images_in_state(state):
                    if builder._matches_glob(img):
                        jobs.setdefault(img.short_name, img)
        parents = {n: [p.short_name for p in img.parents] for n, img in jobs.items()}
        print(f"image tree {builder.root}: {len(jobs)} image(s) to handle, up to {max_concurrency} at once")

        def submit(name: str, parent_futures: list[PrefectFuture[Any]]) -> PrefectFuture[Any]:
            img = jobs[name]
            return build_image.with_options(task_run_name=f"image-{name}").submit(
                _job(builder, img), str(config_path), publish, wait_for=parent_futures
            )

        def succeeded(name: str, fut: PrefectFuture[Any]) -> bool:
            fut.wait()
            result = fut.state.result(raise_on_failure=False)
            if isinstance(result, ImageTaskFailed):
                _apply(jobs[name], result.outcome)
            elif isinstance(result, dict):
                _apply(jobs[name], result)
            else:
                jobs[name].error = f"task ended {fut.state.type.value}: {result}"
                jobs[name].state = ImageFSM.STATE_ERROR
            return jobs[name].state in GOOD_STATES

        for event in run_dag(list(jobs), parents, submit, succeeded, max_in_flight=max(1, max_concurrency)):
            img = jobs[event.name]
            if event.status == "blocked":
                img.blocked_by = event.cause
                print(f"* {img.label}: not built, parent {event.cause} failed")
            else:
                print(f"* {img.label}: {img.state}" + (f" ({img.digest})" if img.digest else ""))
        report_run(builder.all_images, "build")
    finally:
        builder.close()
    outcomes = [ImageOutcome.of(jobs[n]) for n in sorted(jobs)]
    failed = [o.image for o in outcomes if o.state == ImageFSM.STATE_ERROR]
    blocked = [o.image for o in outcomes if o.blocked_by]
    if raise_on_failure and (failed or blocked):
        raise ChainBuildError(failed, blocked)
    return [o.as_dict() for o in outcomes]


__all__ = ["ImageJob", "ImageTaskFailed", "build_image", "build_tree_flow"]
