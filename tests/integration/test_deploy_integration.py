"""End to end: ``flow.deploy(image=DockerImage(...))`` and ``prefect deploy`` with our steps.

Both run against a real Prefect server (``prefect_test_harness``), the real dockerd and
the auth registry. Each checks that the deployment names the pushed image, that the
registry holds it, and that deploying an unchanged project again builds and pushes
nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_flyimage import DockerImage, Engine
from prefect_flyimage.dockerfile import default_dockerfile_text
from prefect_flyimage.plan import BuildPlan
from prefect_flyimage.pipeline import resolve_bases

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefect_helpers import create_docker_pool  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.prefect_compat]

REPO_ROOT = Path(__file__).resolve().parents[2]

# prefect_server: the session-wide fixture in tests/conftest.py


@pytest.fixture
def docker_pool(prefect_server, unique_name) -> str:
    """A work pool of type ``docker`` (``prefect work-pool create --type docker``)."""
    return create_docker_pool(f"pool-{unique_name}")


@pytest.fixture
def project(tmp_path: Path, unique_name: str, monkeypatch) -> Path:
    root = tmp_path / "deployproject"
    root.mkdir()
    (root / "flows.py").write_text(
        textwrap.dedent(
            f"""\
            from prefect import flow

            @flow(name="hello-{unique_name}")
            def hello() -> str:
                return "hello from {unique_name}"
            """
        )
    )
    monkeypatch.chdir(root)
    return root


def _deployment(name: str) -> Any:
    async def read() -> Any:
        async with get_client() as client:
            return await client.read_deployment_by_name(name)

    return run_coro_as_sync(read())


# ---- flow.deploy ---------------------------------------------------------------------------


def test_flow_deploy_builds_and_pushes_once(project, docker_pool, registry, creds, unique_name, prefect_image):
    engine = Engine()
    engine.cli_login(creds)  # Prefect's way: the push reads the docker config
    hello = load_flow_from_entrypoint(str(project / "flows.py:hello"))
    repository = f"{registry.host}/{unique_name}"

    image = DockerImage(repository, pull=False, stream_progress_to=None)
    hello.deploy(name="e2e", work_pool_name=docker_pool, image=image, build=True, push=True, print_next_steps=False)
    assert image.result.built and image.result.pushed
    # The base is an input (issue 16): pull=False, so the stand-in's daemon image id is hashed too.
    expected_tag = resolve_bases(
        BuildPlan(project, default_dockerfile_text(project), repository, pull=False, pin_bases=True)
    ).content_tag
    assert image.reference == f"{repository}:{expected_tag}"

    deployment = _deployment(f"hello-{unique_name}/e2e")
    assert deployment.job_variables["image"] == image.reference
    assert deployment.work_pool_name == docker_pool
    assert engine.registry_digest(image.reference, creds) == image.digest
    # The pushed image runs the flow file where the deployment expects it.
    code, output = engine.run(image.reference, ["python", "-c", "import flows; print(flows.hello.name)"])
    assert (code, output.strip()) == (0, f"hello-{unique_name}")
    created = engine.local_image(image.reference)["Created"]

    # Deploy the unchanged project again: nothing built, nothing pushed, same reference.
    again = DockerImage(repository, pull=False, stream_progress_to=None)
    hello.deploy(name="e2e", work_pool_name=docker_pool, image=again, build=True, push=True, print_next_steps=False)
    assert not again.result.built and not again.result.pushed
    assert again.reference == image.reference and again.digest == image.digest
    assert engine.local_image(image.reference)["Created"] == created
    assert _deployment(f"hello-{unique_name}/e2e").job_variables["image"] == image.reference

    # A change to the flow: a new content tag, a build, a push, and the deployment follows.
    (project / "flows.py").write_text((project / "flows.py").read_text() + "\n# changed\n")
    changed = DockerImage(repository, pull=False, stream_progress_to=None)
    hello.deploy(name="e2e", work_pool_name=docker_pool, image=changed, build=True, push=True, print_next_steps=False)
    assert changed.result.built and changed.result.pushed and changed.reference != image.reference
    assert _deployment(f"hello-{unique_name}/e2e").job_variables["image"] == changed.reference


# ---- prefect deploy with prefect.yaml --------------------------------------------------------

PREFECT_YAML = """\
name: flyimage-e2e
prefect-version: 3.8.8

build:
- prefect_flyimage.deployments.steps.build_docker_image:
    id: build-image
    requires: prefect-flyimage
    image_name: {repository}
    dockerfile: auto
    pull: false

push:
- prefect_flyimage.deployments.steps.push_docker_image:
    id: push-image
    requires: prefect-flyimage
    image_name: '{{{{ build-image.image_name }}}}'
    tag: '{{{{ build-image.tag }}}}'
    credentials: '{{{{ prefect.blocks.docker-registry-credentials.{block} }}}}'

pull:
- prefect.deployments.steps.set_working_directory:
    directory: /opt/prefect/deployproject

deployments:
- name: from-yaml
  entrypoint: flows.py:hello
  work_pool:
    name: {pool}
    job_variables:
      image: '{{{{ build-image.image }}}}'
"""


def _prefect_deploy(project: Path, api_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(project.parent / "cli-prefect-home"),
        # prefect deploy imports the step by its path; `requires:` would pip-install it otherwise.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    return subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )


def test_prefect_deploy_with_our_steps(project, docker_pool, registry, creds, unique_name, prefect_server):
    from prefect_docker.credentials import DockerRegistryCredentials

    engine = Engine()
    block = f"creds-{unique_name}"
    DockerRegistryCredentials(
        username=registry.username, password=registry.password, registry_url=registry.host
    ).save(block)
    repository = f"{registry.host}/{unique_name}"
    (project / "prefect.yaml").write_text(PREFECT_YAML.format(repository=repository, block=block, pool=docker_pool))

    first = _prefect_deploy(project, prefect_server)
    assert first.returncode == 0, first.stdout + first.stderr
    assert ": built" in first.stdout and ": pushed sha256:" in first.stdout
    assert registry.password not in first.stdout + first.stderr

    deployment = _deployment(f"hello-{unique_name}/from-yaml")
    image = deployment.job_variables["image"]
    content_tag = resolve_bases(  # the base's daemon image id is an input too (pull: false)
        BuildPlan(project, default_dockerfile_text(project), repository, pull=False, pin_bases=True)
    ).content_tag
    assert image == f"{repository}:{content_tag}"
    digest = engine.registry_digest(image, creds)
    assert digest is not None
    assert not (project / "Dockerfile").exists()  # dockerfile: auto wrote nothing
    created = engine.local_image(image)["Created"]

    second = _prefect_deploy(project, prefect_server)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already built (build skipped)" in second.stdout
    assert "already in the registry (push skipped)" in second.stdout
    assert engine.registry_digest(image, creds) == digest
    assert engine.local_image(image)["Created"] == created
    assert _deployment(f"hello-{unique_name}/from-yaml").job_variables["image"] == image
