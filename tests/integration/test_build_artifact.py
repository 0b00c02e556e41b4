"""The build artifact's lineage (issue 11, deliver 7) against a real Prefect server:
plan hash, inputs, platforms, digest, mirrors, provenance and the flow run that built it
(with its page in the Prefect UI when PREFECT_UI_URL is set)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.settings import PREFECT_UI_URL, temporary_settings
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_flyimage import BuildPlan
from prefect_flyimage.artifacts import artifact_key
from prefect_flyimage.engine._process import buildx_available, docker_cli
from prefect_flyimage.tasks import ensure_image_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefect_helpers import run_in_flow  # noqa: E402

pytestmark = pytest.mark.integration

UI = "http://ui.flyimage.test:4200"


def _artifacts(repository: str) -> dict[Any, str]:
    async def read() -> list[Any]:
        async with get_client() as client:
            key = artifact_key(repository)
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

    return {a.task_run_id: a.data for a in run_coro_as_sync(read())}


def _flow_run_name(flow_run_id: Any) -> str:
    async def read() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(flow_run_id)).name

    return run_coro_as_sync(read())


@pytest.fixture
def project(tmp_path: Path, busybox_image: str) -> Path:
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nARG FLAVOUR=plain\nCOPY app.txt /app.txt\n")
    (tmp_path / "app.txt").write_text("lineage\n")
    return tmp_path


def test_artifact_links_plan_inputs_platforms_digest_mirrors_and_the_flow_run(
    prefect_server, project, registry, registry_noauth, creds, unique_name
):
    repository = f"{registry.host}/{unique_name}"
    mirror = f"{registry_noauth.host}/{unique_name}-mirror"
    plan = BuildPlan.from_dockerfile(project, repository, build_args={"FLAVOUR": "s3cr3t-flavour"})
    with temporary_settings({PREFECT_UI_URL: UI}):
        first = run_in_flow(ensure_image_task, plan, credentials=creds, mirrors=[mirror])
        again = run_in_flow(ensure_image_task, plan, credentials=creds)
    result = first.result()
    assert result.built and result.pushed and result.mirrors == (mirror,)
    assert again.name == "Cached"
    run_id = first.state_details.flow_run_id
    name = _flow_run_name(run_id)

    by_run = _artifacts(repository)
    fresh = by_run[first.state_details.task_run_id]
    assert f"- **Plan hash**: `{plan.hash}`" in fresh
    assert "- **Inputs**: 2 context file(s)" in fresh and "Dockerfile sha256:" in fresh and "build args FLAVOUR" in fresh
    assert "s3cr3t-flavour" not in fresh  # names of build args only
    assert "- **Platforms**: the daemon’s own" in fresh
    assert f"- **Digest**: `{result.digest}`" in fresh
    assert f"- **Mirrors**: `{mirror}`" in fresh
    assert "- **Provenance**: " in fresh
    assert f"- **Built by flow run**: [{name}]({UI}/runs/flow-run/{run_id}) (`{run_id}`)" in fresh
    assert registry.password not in fresh
    # a Prefect cache hit: same image, so the same lineage (the run that built it)
    cached = by_run[again.state_details.task_run_id]
    assert "cached (prefect cache)" in cached and f"(`{run_id}`)" in cached and f"`{result.digest}`" in cached


def test_a_multi_platform_image_carries_its_provenance_attestations(
    prefect_server, busybox_image, registry_noauth, unique_name, tmp_path
):
    if not buildx_available():
        pytest.skip(f"{docker_cli()} has no buildx (classic daemon; the modern stack has it)")
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY a.txt /a.txt\n")
    (tmp_path / "a.txt").write_text("two platforms\n")
    repository = f"{registry_noauth.host}/{unique_name}"
    plan = BuildPlan.from_dockerfile(tmp_path, repository, platform="linux/amd64,linux/arm64")
    state = run_in_flow(ensure_image_task, plan)
    result = state.result()
    index = httpx.get(
        f"http://{registry_noauth.host}/v2/{unique_name}/manifests/{result.digest}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
    ).json()
    attestations = [m for m in index["manifests"]
                    if (m.get("annotations") or {}).get("vnd.docker.reference.type") == "attestation-manifest"]
    assert len(attestations) == 2  # BuildKit's provenance, one per platform, pushed with the index
    layer = httpx.get(
        f"http://{registry_noauth.host}/v2/{unique_name}/manifests/{attestations[0]['digest']}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).json()["layers"][0]
    assert layer["annotations"]["in-toto.io/predicate-type"].startswith("https://slsa.dev/provenance/")
    text = _artifacts(repository)[state.state_details.task_run_id]
    assert "- **Platforms**: linux/amd64, linux/arm64" in text
    for attestation in attestations:
        assert f"`{attestation['digest']}`" in text
    assert "(linux/amd64)" in text and "(linux/arm64)" in text
