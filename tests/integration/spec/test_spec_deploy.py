"""``flow.deploy(image=Image...)``: Prefect builds, pushes and records the spec's URI; the run works in the image."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path

import pytest

from prefect_flyimage import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from prefect_helpers import create_docker_pool  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# prefect_server: the session-wide fixture in tests/conftest.py


@pytest.fixture
def flow_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    package = f"deployflows_{uuid.uuid4().hex[:8]}"
    root = tmp_path / "project"
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "steps.py").write_text("def shout(text):\n    return text.upper()\n")
    (root / package / "main.py").write_text(
        "from prefect import flow\n"
        f"from {package}.steps import shout\n\n\n"
        "@flow(log_prints=True)\n"
        "def greet(name: str = 'image') -> str:\n"
        "    message = shout(f'hello {name}')\n"
        "    print(message)\n"
        "    return message\n"
    )
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    request.addfinalizer(lambda: [sys.modules.pop(m) for m in list(sys.modules) if m.startswith(package)])
    return root / package / "main.py"


@pytest.mark.parametrize("as_docker_image", [False, True], ids=["image", "to_docker_image"])
def test_flow_deploy_with_image_spec(prefect_server, flow_project, registry, creds, unique_name, engine, as_docker_image):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    module = importlib.import_module(f"{flow_project.parent.name}.main")
    pool = f"pool-{unique_name}"
    create_docker_pool(pool)
    image = (
        Image.from_debian_base(python_version=(3, 11), prefect_version="3.8.8", registry=registry.host,
                               name=unique_name, registry_secret=creds)
        .with_env_vars({"PREFECT_FLYIMAGE_TEST": "1"})
        .with_code_bundle()
    )
    target = image.to_docker_image() if as_docker_image else image
    deployment_id = module.greet.deploy("spec", work_pool_name=pool, image=target, print_next_steps=False)

    # Prefect built and pushed exactly the spec's URI and recorded it on the deployment.
    assert engine.registry_digest(image.uri, creds)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
    assert deployment.job_variables["image"] == image.uri
    assert deployment.entrypoint == f"{flow_project.parent.name}/main.py:greet"

    # Run it the way the Docker worker would: `prefect flow-run execute` inside the image.
    run = run_deployment(deployment_id, timeout=0)
    code, output = engine.run(
        image.uri,
        ["prefect", "flow-run", "execute", str(run.id)],
        network="host",
        environment={"PREFECT_API_URL": prefect_server},
        timeout=300,
    )
    assert code == 0, output
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state is not None and state.is_completed(), (state, output)
    assert "HELLO IMAGE" in output
