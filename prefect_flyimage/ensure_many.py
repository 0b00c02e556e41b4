"""Ensure many images at once: one task per build plan, spread over build hosts.

For an organisation with dozens of deployments (a list of plans, or every deployment
of a ``prefect.yaml``: :func:`ensure_prefect_yaml_flow`): every plan is ensured (built unless its
content tag is in the registry, verified by nothing but the build, pushed) by one task,
on a thread pool or, given ``docker_hosts``/``dask_address``, on a Dask cluster of build
hosts (:mod:`prefect_flyimage.distributed`), where an image whose daemon died is ensured
again on another host. Credentials never become task parameters: a worker loads the
named prefect-docker ``DockerRegistryCredentials`` block, or uses its Docker config.
"""

from __future__ import annotations

__all__ = ["ensure_image_task", "ensure_images_flow", "ensure_prefect_yaml_flow"]

import dataclasses
import pickle
from pathlib import Path
from typing import Any, Optional, Sequence

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from .distributed import BuildCluster, future_result, host_alive, parse_docker_hosts, worker_docker_host
from .errors import FlyImageError
from .plan import BuildPlan


def _ensure_image(
    plan: BuildPlan | bytes, push: bool = True, credentials_block: Optional[str] = None, *, force: bool = False,
    build_kwargs: Optional[dict[str, Any]] = None, prefect_yaml: Optional[str] = None, deployment: Optional[int] = None,
) -> dict[str, Any]:
    """Ensure one plan on this worker's Docker host; the outcome as a dict (never raises for the image).

    Credentials come from the named block, else (``prefect_yaml``, ``deployment``) the
    deployment's push step, read here; else the Docker config.
    """
    from .pipeline import ensure

    if isinstance(plan, bytes):
        plan = pickle.loads(plan)  # noqa: S301 - our own flow pickled it
    host = worker_docker_host()
    creds = None
    try:
        if credentials_block:
            from prefect_docker.credentials import DockerRegistryCredentials

            creds = DockerRegistryCredentials.load(credentials_block)
        elif push and prefect_yaml is not None and deployment is not None:
            from ._deployments_yaml import deployment_credentials

            creds = deployment_credentials(prefect_yaml, deployment)
        result = ensure(plan, push=push, force=force, credentials=creds, build_kwargs=build_kwargs or None)
    except FlyImageError as exc:
        return {"reference": str(plan.ref), "plan_hash": plan.hash, "error": str(exc), "docker_host": host}
    return {
        "reference": result.reference, "plan_hash": result.plan_hash, "image_id": result.image_id,
        "digest": result.digest, "built": result.built, "pushed": result.pushed, "error": None, "docker_host": host,
    }


# Importable under its own name, so Dask workers unpickle the function by reference.
ensure_image_task = task(_ensure_image, name="ensure_image", cache_policy=NO_CACHE)


def _ensure_all(
    jobs: list[dict[str, Any]], names: list[str], docker_hosts: Optional[list[str]], dask_address: Optional[str],
    max_concurrency: int,
) -> list[dict[str, Any]]:
    """Run one :data:`ensure_image_task` per job (its keyword arguments, the plan pickled);
    on the cluster an image whose daemon died is ensured again on another host."""
    hosts = parse_docker_hosts(docker_hosts)
    outcomes: list[dict[str, Any]] = []
    if dask_address or hosts:
        with BuildCluster(hosts, dask_address) as cluster:
            def submit(i: int) -> Any:
                return cluster.submit(ensure_image_task.with_options(task_run_name=names[i]), jobs[i])

            futures = [submit(i) for i in range(len(jobs))]
            for i, fut in enumerate(futures):
                for _ in range(len(cluster.hosts) + 1):
                    out = future_result(fut)
                    if isinstance(out, dict) and not (out["error"] and not host_alive(out["docker_host"])):
                        break
                    if isinstance(out, dict):
                        cluster.mark_dead(out["docker_host"])  # the daemon died, not the image: elsewhere
                    if not cluster.live_hosts():
                        break
                    fut = submit(i)
                if not isinstance(out, dict):
                    out = {"reference": str(pickle.loads(jobs[i]["plan"]).ref), "error": f"task failed: {out}"}  # noqa: S301
                outcomes.append(out)
        return outcomes
    # No cluster: this process's DOCKER_HOST, at most max_concurrency images at once.
    for first in range(0, len(jobs), max(1, max_concurrency)):
        batch = range(first, min(len(jobs), first + max(1, max_concurrency)))
        futures = [ensure_image_task.with_options(task_run_name=names[i]).submit(**jobs[i]) for i in batch]
        outcomes.extend(f.result() for f in futures)
    return outcomes


def _finish(outcomes: list[dict[str, Any]], raise_on_failure: bool, labels: Optional[list[str]] = None) -> list[dict[str, Any]]:
    for i, o in enumerate(outcomes):
        head = f"{labels[i]}: " if labels else ""
        print(f"* {head}{o['reference']}: " + (f"error: {o['error']}" if o.get("error") else f"{o.get('digest') or o.get('image_id')}"))
    failed = [(labels[i] if labels else o["reference"]) for i, o in enumerate(outcomes) if o.get("error")]
    if raise_on_failure and failed:
        raise FlyImageError(f"{len(failed)} image(s) failed: {', '.join(failed)}")
    return outcomes


@flow(name="ensure-images", log_prints=True)
def ensure_images_flow(
    plans: Sequence[BuildPlan],
    push: bool = True,
    credentials_block: Optional[str] = None,
    docker_hosts: Optional[list[str]] = None,
    dask_address: Optional[str] = None,
    max_concurrency: int = 4,
    raise_on_failure: bool = True,
) -> list[dict[str, Any]]:
    """Ensure every plan (build unless the registry has it, push); one outcome dict per plan.

    Args:
        plans: the build plans (e.g. one per deployment of a ``prefect.yaml``).
        push: push to each plan's registry.
        credentials_block: name of a prefect-docker ``DockerRegistryCredentials`` block.
        docker_hosts: build hosts (one Dask worker each); see :class:`~prefect_flyimage.distributed.BuildCluster`.
        dask_address: a Dask scheduler of build workers (default: a local cluster of the hosts).
        max_concurrency: plans ensured at once without a cluster.
        raise_on_failure: raise :class:`~prefect_flyimage.errors.FlyImageError` naming the failed plans.
    """
    fresh = [dataclasses.replace(p) for p in plans]  # no cached build context (it holds a lock)
    jobs = [{"plan": pickle.dumps(p), "push": push, "credentials_block": credentials_block} for p in fresh]
    outcomes = _ensure_all(jobs, [f"ensure-{i}" for i in range(len(jobs))], docker_hosts, dask_address, max_concurrency)
    return _finish(outcomes, raise_on_failure)


@flow(name="ensure-deployment-images", log_prints=True)
def ensure_prefect_yaml_flow(
    prefect_yaml: str,
    deployments: Optional[list[str]] = None,
    docker_hosts: Optional[list[str]] = None,
    dask_address: Optional[str] = None,
    max_concurrency: int = 4,
    raise_on_failure: bool = True,
) -> list[dict[str, Any]]:
    """Ensure the image of every deployment of a ``prefect.yaml`` that builds one.

    A deployment builds an image when its ``build`` section has prefect-flyimage's
    ``build_docker_image``/``ensure_image`` step or prefect-docker's ``build_docker_image``
    (see :mod:`prefect_flyimage._deployments_yaml`): the plan is the one the step makes,
    pushed when the deployment's ``push`` section pushes it, with the credentials that
    step names (read again by each task, never a task parameter). Unchanged images cost
    one registry request each.

    Args:
        prefect_yaml: path of the ``prefect.yaml`` (relative paths in it are from its folder).
        deployments: names of the deployments to handle (default: all).
        docker_hosts: build hosts (one Dask worker each), as for :func:`ensure_images_flow`.
        dask_address: a Dask scheduler of build workers (default: a local cluster of the hosts).
        max_concurrency: images ensured at once without a cluster.
        raise_on_failure: raise :class:`~prefect_flyimage.errors.FlyImageError` naming the failed deployments.

    Returns one outcome dict per image (``deployment`` added).
    """
    from ._deployments_yaml import deployment_images

    path = str(Path(prefect_yaml).resolve())
    images = deployment_images(path, deployments)
    print(f"{path}: {len(images)} deployment image(s) to ensure")
    jobs = [
        {"plan": pickle.dumps(dataclasses.replace(d.plan)), "push": d.push, "force": d.force,
         "build_kwargs": d.build_kwargs or None, "prefect_yaml": path, "deployment": d.index}
        for d in images
    ]
    outcomes = _ensure_all(jobs, [f"ensure-{d.deployment}" for d in images], docker_hosts, dask_address, max_concurrency)
    outcomes = [{"deployment": d.deployment, **o} for d, o in zip(images, outcomes)]
    return _finish(outcomes, raise_on_failure, [d.deployment for d in images])
