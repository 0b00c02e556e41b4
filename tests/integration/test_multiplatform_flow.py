"""Two platforms end to end (issue 11): the modern stack's base images hold linux/amd64 and
linux/arm64 under one tag; a flow image built FROM the Prefect stand-in for both is pushed as
one index; a docker worker runs the flow from it (amd64) and an arm64 container of the same
index digest runs it under qemu, each against the test Prefect server.

Real parts only (Docker 26 + buildx + qemu, the registry, the Prefect server, prefect-docker's
worker). Skipped on the classic stack, whose bases are amd64 only.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_flyimage import DockerImage
from prefect_flyimage.engine._process import docker_cli

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefect_helpers import create_docker_pool  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLATFORMS = ["linux/amd64", "linux/arm64"]
INDEX_TYPES = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json"


@pytest.fixture
def two_platform_stack(services):
    if services.get("FLYIMAGE_DOCKER") != "modern":
        pytest.skip("the base images hold linux/arm64 on the modern stack only (FLYIMAGE_DOCKER=modern)")


def _run(image: str, platform: str, *argv: str, network: str = "none", env: dict[str, str] | None = None,
         logs: bool = False) -> str:
    cmd = [docker_cli(), "run", "--rm", "--network", network, "--platform", platform]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    proc = subprocess.run([*cmd, image, *argv], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr if logs else proc.stdout  # Prefect logs (and log_prints) go to stderr


def test_bases_hold_both_platforms(two_platform_stack, busybox_image, python_image, prefect_image):
    for platform, machine in (("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")):
        assert _run(busybox_image, platform, "uname", "-m").split() == [machine]
        out = _run(python_image, platform, "python", "-c", "import platform, sys; print(sys.version_info[:2], platform.machine())")
        assert out.split() == ["(3,", "11)", machine]
    version = prefect_image.split(":")[1].split("-python")[0]
    out = _run(prefect_image, "linux/arm64", "python", "-c",
               "import platform, prefect, prefect_docker, sys; print(platform.machine(), prefect.__version__, sys.prefix)")
    assert out.split() == ["aarch64", version, "/opt/prefect-venv"]
    assert "aarch64" in _run(prefect_image, "linux/arm64", "uv", "--version")
    assert _run(prefect_image, "linux/amd64", "python", "-c", "import prefect; print(prefect.__version__)").strip() == version


@pytest.fixture
def arch_project(tmp_path: Path, unique_name: str, monkeypatch) -> Path:
    root = tmp_path / "archproject"
    root.mkdir()
    (root / "flows.py").write_text(textwrap.dedent(f"""\
        import platform

        from prefect import flow


        @flow(name="arch-{unique_name}", log_prints=True)
        def arch(expected: str) -> str:
            machine = platform.machine()
            print(f"machine={{machine}}")
            if machine != expected:
                raise RuntimeError(f"ran on {{machine}}, expected {{expected}}")
            return machine
        """))
    monkeypatch.chdir(root)  # flow.deploy records the entrypoint relative to here
    return root


def _state(flow_run_id) -> object:
    async def read():
        async with get_client() as client:
            return (await client.read_flow_run(flow_run_id)).state

    return run_coro_as_sync(read())


def test_two_platform_flow_image_runs_on_a_docker_worker_and_on_arm64(
    two_platform_stack, arch_project, prefect_server, registry_noauth, unique_name, prefect_image
):
    from prefect_docker.worker import DockerWorker

    pool = create_docker_pool(f"pool-{unique_name}")
    flow = load_flow_from_entrypoint(str(arch_project / "flows.py:arch"))
    repository = f"{registry_noauth.host}/{unique_name}"
    image = DockerImage(repository, pull=False, platforms=PLATFORMS, stream_progress_to=None)
    deployment_id = flow.deploy(
        name="arch", work_pool_name=pool, image=image, build=True, push=True, print_next_steps=False,
        # host networking: the container reaches the server on 127.0.0.1 (no bridge here);
        # "Always": the worker pulls the pushed index from the registry
        job_variables={"network_mode": "host", "image_pull_policy": "Always", "auto_remove": True},
    )
    assert image.result.built and image.result.pushed

    # One index in the registry, both platforms in it, and that is the digest we report.
    r = httpx.get(f"http://{registry_noauth.host}/v2/{unique_name}/manifests/{image.tag}", headers={"Accept": INDEX_TYPES})
    r.raise_for_status()
    assert r.headers["Docker-Content-Digest"] == image.digest
    platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}" for m in r.json()["manifests"]
                 if m.get("annotations", {}).get("vnd.docker.reference.type") != "attestation-manifest"}
    assert platforms == set(PLATFORMS)

    # amd64: prefect-docker's worker pulls the image and runs the flow.
    amd64_run = run_deployment(deployment_id, parameters={"expected": "x86_64"}, timeout=0)
    run_coro_as_sync(DockerWorker(work_pool_name=pool, name=f"worker-{unique_name}").start(run_once=True, with_healthcheck=False))
    state = _state(amd64_run.id)
    assert state is not None and state.is_completed(), state

    # arm64: a container of the SAME pushed index digest, under qemu, runs the flow run the
    # way the worker would (the flow raises unless platform.machine() is aarch64).
    arm64_run = run_deployment(deployment_id, parameters={"expected": "aarch64"}, timeout=0)
    out = _run(f"{repository}@{image.digest}", "linux/arm64", "prefect", "flow-run", "execute", str(arm64_run.id),
               network="host", env={"PREFECT_API_URL": prefect_server}, logs=True)
    state = _state(arm64_run.id)
    assert state is not None and state.is_completed(), (state, out[-2000:])
    assert "machine=aarch64" in out
