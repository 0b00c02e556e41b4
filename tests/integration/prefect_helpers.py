"""Helpers of the tests that run tasks on the Prefect server and read back what it recorded.

Imported by the test modules that use them (after ``sys.path.insert`` of this folder).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

__all__ = ["create_docker_pool", "read_all_logs", "run_in_flow"]


def run_in_flow(task_: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a task inside a flow (so its logs and artifacts reach the server); return the task's final state."""
    box: dict[str, Any] = {}

    @flow(name="flyimage-test-flow")
    def wrapper() -> None:
        # Kept out of the flow's return value: a returned state would become the flow's.
        box["state"] = task_(*args, return_state=True, **kwargs)

    wrapper()
    return box["state"]


async def read_all_logs(client: Any, log_filter: Any) -> list[Any]:
    """Every log record the server holds for ``log_filter``, page after page (the API pages at 200)."""
    logs: list[Any] = []
    while page := await client.read_logs(log_filter=log_filter, offset=len(logs)):
        logs += page
    return logs


def create_docker_pool(name: str) -> str:
    """Create the work pool ``name`` of type ``docker`` (prefect-docker's default job
    template, as ``prefect work-pool create --type docker``); return its name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect_docker.worker import DockerWorker

    async def create() -> str:
        async with get_client() as client:
            template = DockerWorker.get_default_base_job_template()
            pool = await client.create_work_pool(WorkPoolCreate(name=name, type="docker", base_job_template=template))
            return pool.name

    return run_coro_as_sync(create())
