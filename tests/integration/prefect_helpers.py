"""Helpers of the tests that run tasks on the Prefect server and read back what it recorded.

Imported by the test modules that use them (after ``sys.path.insert`` of this folder).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

__all__ = ["read_all_logs", "run_in_flow"]


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
