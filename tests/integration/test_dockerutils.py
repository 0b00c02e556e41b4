"""Prefect-compatible build_image / push_image / ImageBuilder, for real."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from prefect_flyimage import (
    ContextError,
    Engine,
    ImageBuilder,
    PushAuthenticationError,
    PushError,
    RegistryCredentials,
    build_image,
    generate_default_dockerfile,
    push_image,
)

pytestmark = [pytest.mark.integration, pytest.mark.prefect_compat]


@pytest.fixture
def docker_config(tmp_path_factory, monkeypatch) -> Path:
    """A private docker config, so CLI logins never touch the user's ~/.docker."""
    path = tmp_path_factory.mktemp("docker-config")
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    return path


def test_build_image_streams_and_returns_id(tmp_path, busybox_image, unique_name):
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo built-here > /marker\n")
    out = io.StringIO()
    image_id = build_image(tmp_path, tag=f"{unique_name}:v1", stream_progress_to=out)
    assert image_id.startswith("sha256:")
    assert "built-here" in out.getvalue() or "Step 2/2" in out.getvalue()
    info = Engine().local_image(f"{unique_name}:v1")
    assert info["Id"] == image_id and "io.prefect.version" in info["Config"]["Labels"]


def test_build_image_bad_inputs(tmp_path):
    with pytest.raises(ContextError, match="does not exist"):
        build_image(tmp_path / "missing")
    with pytest.raises(ContextError, match="Dockerfile 'Dockerfile' not found"):
        build_image(tmp_path)
    with pytest.raises(ValueError):  # ContextError is a ValueError, as Prefect raises
        build_image(tmp_path)


def test_image_builder_builds_for_real(tmp_path, busybox_image, unique_name):
    src = tmp_path / "hello.txt"
    src.write_text("hello from the builder\n")
    with ImageBuilder(busybox_image, base_directory=tmp_path) as builder:
        builder.copy("hello.txt", "/hello.txt")
        builder.add_line('CMD ["cat", "/hello.txt"]')
        image_id = builder.build()
    code, out = Engine().run(image_id, None)
    assert code == 0 and out == "hello from the builder\n"
    Engine().remove(image_id, force=True)


def test_push_image_to_authenticated_registry(tmp_path, busybox_image, registry, unique_name, docker_config):
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo pushed > /p\n")
    image_id = build_image(tmp_path, tag=f"{unique_name}:local")
    # Like Prefect's, push_image relies on the docker config's credentials.
    Engine().cli_login(RegistryCredentials(registry.host, registry.username, registry.password))
    out = io.StringIO()
    ref = push_image(image_id, f"http://{registry.host}", unique_name, tag="v1", stream_progress_to=out)
    assert ref == f"{registry.host}/{unique_name}:v1"
    assert "Pushed" in out.getvalue() or "digest" in out.getvalue()
    engine = Engine()
    creds = RegistryCredentials(registry.host, registry.username, registry.password)
    digest = engine.registry_digest(ref, creds)
    assert digest and engine.local_image(ref) is None  # temporary tag removed, like Prefect
    engine.remove(f"{unique_name}:local", force=True)
    assert engine.pull(f"{registry.host}/{unique_name}@{digest}", creds) == image_id


def test_push_image_denied_is_not_docker_not_running(tmp_path, busybox_image, registry, unique_name, docker_config):
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\n")
    image_id = build_image(tmp_path, tag=f"{unique_name}:local")
    with pytest.raises(PushAuthenticationError) as err:
        push_image(image_id, registry.url, unique_name, tag="v1")
    assert isinstance(err.value, PushError)
    assert "Docker is not running" not in str(err.value)
    assert Engine().local_image(f"{registry.host}/{unique_name}:v1") is None


def test_default_dockerfile_builds_on_the_prefect_image(tmp_path, prefect_image, unique_name):
    (tmp_path / "flow.py").write_text("from prefect import flow\n\n@flow\ndef hello():\n    return 42\n")
    with generate_default_dockerfile(tmp_path) as dockerfile:
        assert Path(dockerfile).read_text().startswith(f"FROM {prefect_image}")
        image_id = build_image(tmp_path, tag=f"{unique_name}:auto", network_mode="host")
    assert not (tmp_path / "Dockerfile").exists()
    code, out = Engine().run(image_id, ["python", "-c", "import flow; print(flow.hello.fn())"])
    assert (code, out.strip()) == (0, "42")
