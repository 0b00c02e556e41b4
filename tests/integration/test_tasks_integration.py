"""The Prefect tasks against a real Prefect server, dockerd and registry.

Covers the cache policy (a second run is a Prefect cache hit that neither builds nor
pushes; an image deleted from the daemon and the registry is detected and rebuilt),
retries on transient failures only (real faults: a refused login, a registry port
nobody listens on, a failing Dockerfile, a build that outlives its timeout), the
artifact every run leaves, and the run logs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, LogFilter, LogFilterTaskRunId

from prefect_flyimage import AuthenticationError, BuildError, BuildPlan, BuildTimeout, Engine, RegistryCredentials
from prefect_flyimage.artifacts import artifact_key
from prefect_flyimage.tasks import (
    build_image_task,
    configure_retries,
    ensure_image_task,
    login_task,
    push_image_task,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefect_helpers import read_all_logs, run_in_flow  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from project_files import write_files  # noqa: E402

pytestmark = pytest.mark.integration


# prefect_server: the session-wide fixture in tests/conftest.py


@pytest.fixture(autouse=True)
def _stat_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path_factory.mktemp("statcache")))


@pytest.fixture
def project(tmp_path: Path, busybox_image: str) -> Path:
    return write_files(tmp_path / "project", {
        "Dockerfile": f"FROM {busybox_image}\nCOPY app.txt /app.txt\nRUN echo building-the-app\n", "app.txt": "version 1\n",
    })


def plan_of(context: Path, repository: str, **kwargs: Any) -> BuildPlan:
    """A plan whose RUN steps use no network (the only kind this machine allows)."""
    return BuildPlan.from_dockerfile(context, repository, network="none", **kwargs)


def delete_from_registry(registry: Any, repository_path: str, digest: str) -> None:
    """Delete a manifest (and so every tag on it) through the registry API."""
    auth = (registry.username, registry.password) if getattr(registry, "username", None) else None
    response = requests.delete(
        f"http://{registry.host}/v2/{repository_path}/manifests/{digest}", auth=auth, timeout=30
    )
    assert response.status_code == 202, response.text


def remove_local(engine: Engine, repository: str, tags: Any) -> None:
    for tag in tags:
        engine.remove(f"{repository}:{tag}", force=True)


async def _artifacts(key: str) -> list[Any]:
    async with get_client() as client:
        return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


async def _logs(task_run_id: Any, until: str = "digest: sha256:", timeout: float = 30.0) -> list[str]:
    """The task run's log lines, once the line containing ``until`` has reached the server.

    Run logs are shipped to the server in batches by a background worker, so a read right
    after the run may see only the first of them.
    """
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        async with get_client() as client:
            logs = await read_all_logs(client, LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id])))
        messages = [log.message for log in logs]
        if any(until in m for m in messages) or time.monotonic() > deadline:
            return messages
        await asyncio.sleep(0.5)


# ---- the cache ------------------------------------------------------------------------------


def test_second_run_is_a_cache_hit_and_a_deleted_image_is_rebuilt(
    prefect_server, project, registry, creds, unique_name
):
    engine = Engine()
    repository = f"{registry.host}/{unique_name}"
    plan = plan_of(project, repository)

    first = run_in_flow(ensure_image_task, plan, credentials=creds)
    assert first.is_completed() and first.name == "Completed"
    built = first.result()
    assert built.built and built.pushed and built.digest.startswith("sha256:")
    assert engine.registry_digest(plan.content_ref, creds) == built.digest

    # Same context, fresh plan object: Prefect's cache answers; nothing is built or pushed.
    local_before = engine.local_image(plan.content_ref)
    second = run_in_flow(ensure_image_task, plan_of(project, repository), credentials=creds)
    assert second.name == "Cached"
    hit = second.result()
    assert hit.cached and hit.digest == built.digest and hit.reference == built.reference
    # No new image: same id, same creation time (other test sessions share the daemon,
    # so the daemon-wide image list is no evidence).
    local_after = engine.local_image(plan.content_ref)
    assert (local_after["Id"], local_after["Created"]) == (local_before["Id"], local_before["Created"])
    assert hit.timings == {} or set(hit.timings) == {"total"}  # the stored record: nothing ran

    # Delete the image from the daemon AND the registry: the probe sees it, the task rebuilds.
    remove_local(engine, repository, plan.all_tags)
    delete_from_registry(registry, unique_name, built.digest)
    assert engine.registry_digest(plan.content_ref, creds) is None
    third = run_in_flow(ensure_image_task, plan_of(project, repository), credentials=creds)
    assert third.name == "Completed"
    rebuilt = third.result()
    assert rebuilt.built and rebuilt.pushed and rebuilt.reference == built.reference
    assert engine.registry_digest(plan.content_ref, creds) == rebuilt.digest
    assert engine.local_image(plan.content_ref)["Id"] == rebuilt.image_id

    # ...and after the rebuild the cache works again, with the new digest.
    fourth = run_in_flow(ensure_image_task, plan_of(project, repository), credentials=creds)
    assert fourth.name == "Cached" and fourth.result().digest == rebuilt.digest

    # A change to the context is a new plan: a miss, a build and a push.
    (project / "app.txt").write_text("version 2\n")
    changed = run_in_flow(ensure_image_task, plan_of(project, repository), credentials=creds)
    assert changed.name == "Completed"
    result = changed.result()
    assert result.built and result.pushed and result.reference != built.reference


def test_force_bypasses_the_cache(prefect_server, project, registry_noauth, unique_name):
    plan = plan_of(project, f"{registry_noauth.host}/{unique_name}")
    first = run_in_flow(ensure_image_task, plan).result()
    forced = run_in_flow(ensure_image_task, plan, force=True)
    assert forced.name == "Completed"
    result = forced.result()
    assert result.built and result.pushed and first.built


def test_build_then_push_tasks_and_local_deletion(prefect_server, project, registry, creds, unique_name):
    engine = Engine()
    repository = f"{registry.host}/{unique_name}"
    plan = plan_of(project, repository, tag="dev")

    def build_and_push(p: BuildPlan) -> tuple[Any, Any]:
        box: dict[str, Any] = {}

        @flow(name="flyimage-build-push")
        def pipeline_flow() -> None:
            box["built"] = build_image_task(p, return_state=True)
            box["pushed"] = push_image_task(box["built"].result(), credentials=creds, return_state=True)

        pipeline_flow()
        return box["built"], box["pushed"]

    built, pushed = build_and_push(plan)
    assert (built.name, pushed.name) == ("Completed", "Completed")
    b, p = built.result(), pushed.result()
    assert b.built and not b.pushed and b.digest is None
    assert p.built and p.pushed and p.digest.startswith("sha256:")  # built is carried over
    for tag in ("dev", plan.content_tag):
        assert engine.registry_digest(f"{repository}:{tag}", creds) == p.digest

    built2, pushed2 = build_and_push(plan_of(project, repository, tag="dev"))
    assert (built2.name, pushed2.name) == ("Cached", "Cached")
    assert pushed2.result().digest == p.digest

    # The local image goes: the build task (local target) rebuilds, the push task sees
    # that the registry still holds its tags and stays a cache hit.
    remove_local(engine, repository, plan.all_tags)
    built3, pushed3 = build_and_push(plan_of(project, repository, tag="dev"))
    assert built3.name == "Completed" and built3.result().built
    assert pushed3.name == "Cached"


def test_push_task_needs_the_image_in_the_daemon(prefect_server, registry_noauth, unique_name):
    from prefect_flyimage import BuildResult, FlyImageError

    ghost = BuildResult(reference=f"{registry_noauth.host}/{unique_name}:x", plan_hash="ab" * 32, tags=("x",))
    state = run_in_flow(push_image_task, ghost)
    assert state.is_failed()
    with pytest.raises(FlyImageError, match="not in the Docker daemon"):
        state.result()


# ---- artifacts and logs ----------------------------------------------------------------------


def test_each_run_leaves_an_artifact_and_logs_progress(prefect_server, project, registry, creds, unique_name):
    from prefect.utilities.asyncutils import run_coro_as_sync

    repository = f"{registry.host}/{unique_name}"
    (project / "app.txt").write_text(f"unique to {unique_name}\n")  # a layer the registry lacks
    plan = plan_of(project, repository)
    first = run_in_flow(ensure_image_task, plan, credentials=creds)
    second = run_in_flow(ensure_image_task, plan, credentials=creds)
    assert second.name == "Cached"

    artifacts = run_coro_as_sync(_artifacts(artifact_key(repository)))
    by_run = {a.task_run_id: a.data for a in artifacts}
    fresh = by_run[first.state_details.task_run_id]
    cached = by_run[second.state_details.task_run_id]
    digest = first.result().digest
    assert f"`{plan.ref}`" in fresh and f"`{digest}`" in fresh and "built + pushed" in fresh
    assert "build " in fresh and "push " in fresh and "MiB" in fresh
    assert f"`{digest}`" in cached and "cached (prefect cache)" in cached

    logs = run_coro_as_sync(_logs(first.state_details.task_run_id))
    text = "\n".join(logs)
    # build output, line by line (classic builder or BuildKit)
    assert re.search(r"^(Step 3/\d+ : |#\d+ \[3/\d+\] )RUN echo building-the-app$", text, re.M)
    assert any(re.fullmatch(r"[0-9a-f]{12}: Pushed", line) for line in logs)  # push layer lines
    assert any(re.search(r": digest: sha256:[0-9a-f]{64} size: \d+$", line) for line in logs)
    assert not any("Pushing [" in line for line in logs)  # no progress bars
    for secret in (registry.password,):
        assert secret not in text
        assert all(secret not in a.data for a in artifacts)


def test_a_rebuild_artifact_says_why(prefect_server, project, registry, creds, unique_name):
    """The artifact of a rebuild names what changed against the registry's previous image."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    repository = f"{registry.host}/{unique_name}"
    first = run_in_flow(ensure_image_task, plan_of(project, repository), credentials=creds)
    assert first.result().why is not None and "first image" in first.result().why
    (project / "app.txt").write_text("version 2\n")
    (project / "extra.txt").write_text("new\n")
    second = run_in_flow(ensure_image_task, plan_of(project, repository), credentials=creds)
    assert second.result().built

    by_run = {a.task_run_id: a.data for a in run_coro_as_sync(_artifacts(artifact_key(repository)))}
    why = by_run[second.state_details.task_run_id]
    assert "Why rebuilt" in why, why
    changed = why.split("Why rebuilt", 1)[1]
    assert "app.txt" in changed and "extra.txt" in changed and "Dockerfile" not in changed
    assert registry.password not in why


# ---- retries ---------------------------------------------------------------------------------


def _attempts(state: Any) -> int:
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def read() -> int:
        async with get_client() as client:
            return (await client.read_task_run(state.state_details.task_run_id)).run_count

    return run_coro_as_sync(read())


def test_refused_login_is_not_retried(prefect_server, project, registry, unique_name):
    bad = RegistryCredentials(registry.host, registry.username, "wrong-password-123")
    task_ = configure_retries(ensure_image_task, retries=2, backoff=0)
    state = run_in_flow(task_, plan_of(project, f"{registry.host}/{unique_name}"), credentials=bad)
    assert state.is_failed()
    with pytest.raises(AuthenticationError) as info:
        state.result()
    assert "wrong-password-123" not in str(info.value)
    assert _attempts(state) == 1

    login = run_in_flow(configure_retries(login_task, retries=2, backoff=0), bad)
    assert login.is_failed() and _attempts(login) == 1
    with pytest.raises(AuthenticationError):
        login.result()


def test_login_task_accepts_good_credentials(prefect_server, registry, creds):
    state = run_in_flow(login_task, creds)
    assert state.is_completed() and state.result() == registry.host
    as_dict = run_in_flow(login_task, {"username": registry.username, "password": registry.password, "registry_url": registry.url})
    assert as_dict.result() == registry.host


def test_unreachable_registry_is_retried(prefect_server, project, unique_name):
    # Nothing listens on this port: a real "connection refused" on every attempt.
    plan = plan_of(project, f"127.0.0.1:5999/{unique_name}")
    state = run_in_flow(configure_retries(ensure_image_task, retries=2, backoff=0), plan)
    assert state.is_failed()
    from prefect_flyimage import RegistryUnavailable

    with pytest.raises(RegistryUnavailable):
        state.result()
    assert _attempts(state) == 3


def test_failing_dockerfile_is_not_retried(prefect_server, tmp_path, busybox_image, registry_noauth, unique_name):
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo about-to-fail && false\n")
    plan = plan_of(tmp_path, f"{registry_noauth.host}/{unique_name}")
    state = run_in_flow(configure_retries(build_image_task, retries=2, backoff=0), plan)
    assert state.is_failed()
    with pytest.raises(BuildError) as info:
        state.result()
    assert info.value.step and "false" in info.value.step
    assert _attempts(state) == 1


def test_build_timeout_is_retried(prefect_server, tmp_path, busybox_image, registry_noauth, unique_name):
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN sleep 30\n")
    plan = plan_of(tmp_path, f"{registry_noauth.host}/{unique_name}")
    state = run_in_flow(configure_retries(build_image_task, retries=1, backoff=0), plan, build_timeout=2)
    assert state.is_failed()
    with pytest.raises(BuildTimeout, match="timed out"):
        state.result()
    assert _attempts(state) == 2
