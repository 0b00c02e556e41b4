"""The repository's ``prefect.yaml``: ``prefect deploy --all``, then a Docker worker runs it.

Against a real Prefect server (the session's ``prefect_test_harness``), the real dockerd
and the authenticated registry. A copy of the repository's ``prefect.yaml`` and
``flows/`` is deployed with ``FLYIMAGE_REGISTRY`` pointing at a fresh namespace of the
auth registry, so nothing here touches images other tests use.

``flows/example/deploy.py`` (``flow.deploy`` with our ``DockerImage``) must find that
image already built and pushed. The end-to-end test starts ``prefect worker start --type docker --run-once``: the worker
pulls the image the deploy pushed (its local copy is removed first) with the work
pool's ``DockerRegistryCredentials`` block, and runs the flow in it with host networking.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import StateType

from prefect_flyimage import BuildPlan, Engine, RegistryCredentials
from prefect_flyimage.pipeline import resolve_bases

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_POOL = "flyimage-docker"
REFRESH_POOL = "flyimage-refresh"


@dataclass(frozen=True)
class Deployed:
    """The outcome of ``prefect deploy --all`` on a copy of the repository."""

    project: Path
    repository: str  #: where the example image went: <registry>/<namespace>/prefect-flyimage-example
    namespace: str
    output: str  #: the deploy command's stdout + stderr
    env: dict[str, str]  #: environment for Prefect CLI subprocesses (API URL, home, docker config)
    example: Any  #: DeploymentResponse of hello/example
    refresh: Any  #: DeploymentResponse of image-refresh/nightly


def _copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO_ROOT / "prefect.yaml", dest / "prefect.yaml")
    shutil.copytree(REPO_ROOT / "flows", dest / "flows", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _create_pools(block_id: Any) -> None:
    """The Docker pool pulls with the credentials block (by reference: the password stays in
    the block); the refresh flow's pool runs processes."""
    from prefect_docker.worker import DockerWorker

    template = DockerWorker.get_default_base_job_template()
    template["variables"]["properties"]["registry_credentials"]["default"] = {
        "$ref": {"block_document_id": str(block_id)}
    }

    async def create() -> None:
        async with get_client() as client:
            for name, kind, base in ((DOCKER_POOL, "docker", template), (REFRESH_POOL, "process", None)):
                pool = WorkPoolCreate(name=name, type=kind, **({"base_job_template": base} if base else {}))
                await client.create_work_pool(pool, overwrite=True)

    from prefect.utilities.asyncutils import run_coro_as_sync

    run_coro_as_sync(create())


def _read(coro_fn: Any) -> Any:
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def go() -> Any:
        async with get_client() as client:
            return await coro_fn(client)

    return run_coro_as_sync(go())


@pytest.fixture(scope="module")
def deployed(prefect_server: str, registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """``prefect deploy --all`` run once for the module, in a copy of the repository."""
    from prefect_docker.credentials import DockerRegistryCredentials

    namespace = f"t-yaml-{secrets.token_hex(4)}"
    root = tmp_path_factory.mktemp("yaml")
    project = _copy_project(root / "repo")
    block_id = DockerRegistryCredentials(
        username=registry.username, password=registry.password, registry_url=registry.host
    ).save(f"creds-{namespace}")
    _create_pools(block_id)

    docker_config = root / "docker-config"  # empty: the push uses the step's credentials only
    docker_config.mkdir()
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(root / "cli-prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DOCKER_CONFIG": str(docker_config),
        "PREFECT_FLYIMAGE_CACHE_DIR": str(root / "statcache"),
        "FLYIMAGE_REGISTRY": f"{registry.host}/{namespace}",
        "FLYIMAGE_REGISTRY_USER": registry.username,
        "FLYIMAGE_REGISTRY_PASSWORD": registry.password,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    example = _read(lambda c: c.read_deployment_by_name("hello/example"))
    refresh = _read(lambda c: c.read_deployment_by_name("image-refresh/nightly"))
    repository = f"{registry.host}/{namespace}/prefect-flyimage-example"
    try:
        yield Deployed(project, repository, namespace, output, env, example, refresh)
    finally:
        engine = Engine()
        for tag in engine.list_tags(repository):
            engine.remove(f"{repository}:{tag}", force=True)


def test_prefect_deploy_creates_both_deployments(deployed: Deployed, registry: Any) -> None:
    engine = Engine()
    creds = RegistryCredentials(registry.host, registry.username, registry.password)
    # The example runs the image our steps built: tagged with the content hash of flows/example.
    plan = BuildPlan.from_dockerfile(deployed.project / "flows" / "example", deployed.repository, dockerfile="deploy.Dockerfile",
                                     pull=False, pin_bases=True)
    image = f"{deployed.repository}:{resolve_bases(plan).content_tag}"  # its base's image id is an input too
    example = deployed.example
    assert example.entrypoint == "flows/example/hello.py:hello"
    assert example.work_pool_name == DOCKER_POOL
    assert example.job_variables["image"] == image
    assert example.job_variables["network_mode"] == "host"
    assert example.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/prefect"}}]
    assert engine.registry_digest(image, creds) is not None
    assert f"{image}: built" in deployed.output or f"{image}: already built" in deployed.output
    # No secret in what the deploy printed, nor in what it stored.
    assert registry.password not in deployed.output
    assert registry.password not in str(example.job_variables) + str(example.pull_steps)

    refresh = deployed.refresh
    assert refresh.entrypoint == "flows/image_refresh.py:image_refresh"
    assert refresh.work_pool_name == REFRESH_POOL
    assert refresh.parameters == {"config_path": "flows/refresh.yaml"}
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in refresh.schedules] == [("0 3 * * *", "UTC", True)]
    # A process worker runs it from the folder it was deployed from.
    assert refresh.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(deployed.project.resolve())}}
    ]


def test_docker_image_deploy_reuses_the_image_the_steps_pushed(deployed: Deployed) -> None:
    # flows/example/deploy.py: flow.deploy with our DockerImage, the Python front door.
    proc = subprocess.run(
        [sys.executable, "flows/example/deploy.py"], cwd=deployed.project, env=deployed.env,
        capture_output=True, text=True, timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    image = deployed.example.job_variables["image"]
    assert f"{image} sha256:" in output and "built=False pushed=False" in output  # same content tag: nothing to do
    python = _read(lambda c: c.read_deployment_by_name("hello/example-python"))
    assert python.job_variables["image"] == image
    assert python.entrypoint == "flows/example/hello.py:hello"
    assert deployed.env["FLYIMAGE_REGISTRY_PASSWORD"] not in output


def test_shipped_refresh_config_keeps_the_example_deployment_fresh(
    deployed: Deployed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # flows/refresh.yaml as shipped: the example image, verified in the image, its deployment following.
    from prefect.flows import load_flow_from_entrypoint

    for key in ("FLYIMAGE_REGISTRY", "PREFECT_FLYIMAGE_CACHE_DIR"):
        monkeypatch.setenv(key, deployed.env[key])
    monkeypatch.setenv("FLYIMAGE_STATE_DIR", str(tmp_path))
    image_refresh = load_flow_from_entrypoint(str(deployed.project / "flows" / "image_refresh.py:image_refresh"))
    config = str(deployed.project / "flows" / "refresh.yaml")

    # The steps' image already covers its base's digest (issue 16: the refresh and the steps
    # share one mechanism), so the refresh finds it fresh and the deployment keeps it.
    deployed_image = _read(lambda c: c.read_deployment_by_name("hello/example")).job_variables["image"]
    (first,) = image_refresh(config)
    assert first["status"] == "fresh" and first["deployments"] == []
    assert first["reference"] == deployed_image
    assert first["bases_after"] == {"prefecthq/prefect:3.8.8-python3.11": Engine().local_image("prefecthq/prefect:3.8.8-python3.11")["Id"]}
    assert _read(lambda c: c.read_deployment_by_name("hello/example")).job_variables["image"] == deployed_image
    (second,) = image_refresh(config)
    assert second["status"] == "fresh" and second["reference"] == first["reference"] and second["deployments"] == []


@pytest.mark.slow
def test_docker_worker_runs_the_example_in_the_pushed_image(deployed: Deployed, registry: Any, tmp_path: Path) -> None:
    from prefect.deployments import run_deployment

    engine = Engine()
    image = _read(lambda c: c.read_deployment_by_name("hello/example")).job_variables["image"]
    assert image.startswith(deployed.repository + ":")
    # The worker must pull the image from the authenticated registry: drop the local copy.
    engine.remove(image, force=True)
    assert engine.local_image(image) is None

    greeting = f"hello {deployed.namespace} from Python"
    flow_run = run_deployment("hello/example", parameters={"name": deployed.namespace}, timeout=0)
    env = {**deployed.env, "DOCKER_CONFIG": str(tmp_path)}  # no stored login: only the pool's block
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", DOCKER_POOL, "--type", "docker",
         "--run-once", "--name", f"worker-{deployed.namespace}", "--install-policy", "never"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    output = worker.stdout + worker.stderr
    run = _read(lambda c: c.read_flow_run(flow_run.id))
    logs = _read(lambda c: c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id]))))
    messages = "\n".join(log.message for log in logs)
    assert run.state.type == StateType.COMPLETED, f"{run.state}\n--- worker ---\n{output}\n--- run logs ---\n{messages}"
    assert greeting in messages
    assert "Logging into Docker registry" in output and f"Pulling image {image!r}" in output
    assert engine.local_image(image) is not None  # pulled by the worker
    assert registry.password not in output + messages
