"""Ensure many images at once: one task per build plan, spread over build hosts.

For an organisation with dozens of deployments: every plan is ensured (built unless its
content tag is in the registry, verified by nothing but the build, pushed) by one task,
on a thread pool or, given ``docker_hosts``/``dask_address``, on a Dask cluster of build
hosts (:mod:`prefect_flyimage.distributed`), where an image whose daemon died is ensured
again on another host. Credentials never become task parameters: a worker loads the
named prefect-docker ``DockerRegistryCredentials`` block, or uses its Docker config.
"""

from __future__ import annotations

__all__ = ["ensure_image_task", "ensure_images_flow"]

import dataclasses
import pickle
from typing import Any, Optional, Sequence

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from .distributed import BuildCluster, host_alive, parse_docker_hosts, worker_docker_host
from .errors import FlyImageError
from .plan import BuildPlan


def _ensure_image(plan: BuildPlan | bytes, push: bool = True, credentials_block: Optional[str] = None) -> dict[str, Any]:
    """Ensure one plan on this worker's Docker host; the outcome as a dict (never raises for the image)."""
    from .pipeline import ensure

    if isinstance(plan, bytes):
        plan = pickle.loads(plan)  # noqa: S301 - our own flow pickled it
    host = worker_docker_host()
    creds = None
    try:
        if credentials_block:
            from prefect_docker.credentials import DockerRegistryCredentials

            creds = DockerRegistryCredentials.load(credentials_block)
        result = ensure(plan, push=push, credentials=creds)
    except FlyImageError as exc:
        return {"reference": str(plan.ref), "plan_hash": plan.hash, "error": str(exc), "docker_host": host}
    return {
        "reference": result.reference, "plan_hash": result.plan_hash, "image_id": result.image_id,
        "digest": result.digest, "built": result.built, "pushed": result.pushed, "error": None, "docker_host": host,
    }


# Importable under its own name, so Dask workers unpickle the function by reference.
ensure_image_task = task(_ensure_image, name="ensure_image", cache_policy=NO_CACHE)


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
    hosts = parse_docker_hosts(docker_hosts)
    fresh = [dataclasses.replace(p) for p in plans]  # no cached build context (it holds a lock)
    outcomes: list[dict[str, Any]]
    if dask_address or hosts:
        with BuildCluster(hosts, dask_address) as cluster:
            def submit(i: int) -> Any:
                params = {"plan": pickle.dumps(fresh[i]), "push": push, "credentials_block": credentials_block}
                return cluster.submit(ensure_image_task.with_options(task_run_name=f"ensure-{i}"), params)

            futures = [submit(i) for i in range(len(fresh))]
            outcomes = []
            for i, fut in enumerate(futures):
                for _ in range(len(cluster.hosts) + 1):
                    fut.wait()
                    out = fut.state.result(raise_on_failure=False)
                    if isinstance(out, dict) and not (out["error"] and not host_alive(out["docker_host"])):
                        break
                    if isinstance(out, dict):
                        cluster.mark_dead(out["docker_host"])  # the daemon died, not the image: elsewhere
                    if not cluster.live_hosts():
                        break
                    fut = submit(i)
                if not isinstance(out, dict):
                    out = {"reference": str(fresh[i].ref), "error": f"task failed: {out}"}
                outcomes.append(out)
    else:
        futures = [ensure_image_task.with_options(task_run_name=f"ensure-{i}").submit(p, push, credentials_block) for i, p in enumerate(fresh)]
        outcomes = [f.result() for f in futures]
    for o in outcomes:
        print(f"* {o['reference']}: " + (f"error: {o['error']}" if o.get("error") else f"{o.get('digest') or o.get('image_id')}"))
    failed = [o["reference"] for o in outcomes if o.get("error")]
    if raise_on_failure and failed:
        raise FlyImageError(f"{len(failed)} image(s) failed: {', '.join(failed)}")
    return outcomes
