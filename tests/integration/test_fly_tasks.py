"""The Fly Prefect tasks and block-based tokens, against a temporary Prefect server.

Retries are counted from what Prefect recorded (the task run's ``run_count``), so a
retry loop on a refused token cannot go unnoticed.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydantic import SecretStr

from prefect_flyimage import errors, fly

pytestmark = pytest.mark.integration


# prefect_server: the session-wide fixture in tests/conftest.py


@pytest.fixture(autouse=True)
def fly_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, fly_registry, prefect_server) -> None:
    for name in (fly.TOKEN_ENV, fly.CREDENTIALS_BLOCK_ENV, fly.TOKEN_SECRET_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(fly.REGISTRY_ENV, fly_registry.host)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path_factory.mktemp("docker-config")))
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def app_name(docker_client, fly_registry) -> Iterator[str]:
    name = f"fly-task-{uuid.uuid4().hex[:10]}"
    yield name
    for image in docker_client.images.list():
        for tag in image.tags:
            if f"/{name}:" in tag:
                docker_client.images.remove(tag, force=True)


@pytest.fixture
def context(tmp_path: Path, busybox_image: str) -> Path:
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY app.txt /app.txt\n")
    (tmp_path / "app.txt").write_text(uuid.uuid4().hex + "\n")
    return tmp_path


def run_task(task: Any, **kwargs: Any) -> tuple[Any, Any]:
    """Run ``task`` in a flow; return (its final state, its task run as the server recorded it)."""
    from prefect import flow, get_client
    from prefect.exceptions import ObjectNotFound

    holder: list[Any] = []

    @flow(name="fly-task-test")
    async def wrapper() -> None:
        # Keep the state out of the flow's return value, or a failed task fails the flow.
        holder.append(await task(**kwargs, return_state=True))

    async def main() -> tuple[Any, Any]:
        await wrapper()
        state = holder[0]
        # Task runs reach the server through events, a little after the flow ends: poll.
        async with get_client() as client:
            for _ in range(100):
                try:
                    task_run = await client.read_task_run(state.state_details.task_run_id)
                except ObjectNotFound:
                    task_run = None
                if task_run is not None and task_run.state is not None and task_run.state.is_final():
                    return state, task_run
                await asyncio.sleep(0.2)
        raise AssertionError(f"task run {state.state_details.task_run_id} never reached a final state on the server")

    return asyncio.run(main())


def test_refused_token_is_not_retried(app_name, context, fly_registry):
    from prefect_flyimage.fly_tasks import ensure_fly_image

    wrong = SecretStr("FlyV1 wrong-" + uuid.uuid4().hex)
    task = ensure_fly_image.with_options(retries=3, retry_delay_seconds=0)
    state, task_run = run_task(task, app_name=app_name, token=wrong, docker_context=context)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, errors.AuthenticationError)
    assert task_run.run_count == 1
    assert wrong.get_secret_value() not in str(exc)


def test_unreachable_registry_is_retried(app_name, context, fly_registry):
    from prefect_flyimage.fly_tasks import ensure_fly_image

    # Nothing listens on port 9: the registry check and the push cannot connect.
    task = ensure_fly_image.with_options(retries=1, retry_delay_seconds=0)
    state, task_run = run_task(
        task, app_name=app_name, token=SecretStr(fly_registry.password), docker_context=context, registry="127.0.0.1:9",
        artifact=False,
    )
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), errors.RegistryUnavailable)
    assert task_run.run_count == 2


def test_task_with_secret_block_token_pushes_and_records_artifact(app_name, context, fly_registry, monkeypatch):
    from prefect import get_client
    from prefect.blocks.system import Secret
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, LogFilter, LogFilterFlowRunId

    from prefect_flyimage.fly_tasks import ensure_fly_image

    token = fly_registry.password
    block = f"fly-token-{uuid.uuid4().hex[:8]}"
    Secret(value=token).save(block)
    monkeypatch.setenv(fly.TOKEN_SECRET_ENV, block)

    state, task_run = run_task(ensure_fly_image, app_name=app_name, docker_context=context)
    assert state.is_completed(), state
    ref = state.result()
    assert ref == f"{fly_registry.host}/{app_name}:latest"
    assert task_run.run_count == 1

    # Second run: the registry holds it; the task says so in the run's logs and does nothing.
    state2, task_run2 = run_task(ensure_fly_image, app_name=app_name, docker_context=context)
    assert state2.result() == ref

    async def read() -> tuple[list[Any], list[str], list[str]]:
        async with get_client() as client:
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"fly-image-{app_name}"]))
            )
            logs = []
            for run in (task_run, task_run2):
                # Logs are shipped in batches: wait for the task's summary line.
                for _ in range(50):
                    found = await client.read_logs(
                        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.flow_run_id]))
                    )
                    messages = [log.message for log in found]
                    if any(ref in m for m in messages):
                        break
                    await asyncio.sleep(0.2)
                logs.append("\n".join(messages))
        return artifacts, logs

    artifacts, (first_logs, second_logs) = asyncio.run(read())
    assert "built=True pushed=True" in first_logs
    assert "already in the registry" in second_logs and "built=True" not in second_logs
    assert len(artifacts) == 2 and all(ref in str(a.data) and "sha256:" in str(a.data) for a in artifacts)
    assert token not in "".join(str(a.data) + str(a.description) for a in artifacts)
    assert token not in first_logs + second_logs


def test_docker_registry_credentials_block_logs_in(fly_registry, monkeypatch):
    from prefect_docker.credentials import DockerRegistryCredentials

    block = f"fly-creds-{uuid.uuid4().hex[:8]}"
    DockerRegistryCredentials(username="x", password=fly_registry.password, registry_url=fly_registry.host).save(block)
    monkeypatch.setenv(fly.CREDENTIALS_BLOCK_ENV, block)
    creds = fly.fly_credentials()
    assert creds is not None and creds.secret == fly_registry.password and creds.username == "x"
    asyncio.run(fly.docker_login_fly())  # a real `docker login` with the block's token

    monkeypatch.setenv(fly.CREDENTIALS_BLOCK_ENV, "no-such-block")
    with pytest.raises(errors.AuthenticationError, match="no-such-block"):
        asyncio.run(fly.docker_login_fly())
