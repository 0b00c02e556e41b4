"""``DockerImage.build()``/``.push()`` against the real daemon and registry (no Prefect server)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from prefect_flyimage import AuthenticationError, DockerImage, Engine

pytestmark = [pytest.mark.integration, pytest.mark.prefect_compat]


@pytest.fixture
def project(tmp_path: Path, monkeypatch, unique_name) -> Path:
    root = tmp_path / "flowproject"
    root.mkdir()
    (root / "flows.py").write_text(f"# {unique_name}\nfrom prefect import flow\n\n@flow\ndef hello():\n    return 1\n")
    monkeypatch.chdir(root)
    return root


def test_auto_dockerfile_build_push_and_nothing_twice(project, prefect_image, registry, creds, unique_name):
    engine = Engine()
    out = io.StringIO()
    image = DockerImage(f"{registry.host}/{unique_name}", pull=False, credentials=creds, stream_progress_to=out)
    listing = sorted(p.name for p in project.iterdir())
    image.build()
    assert image.result.built and not image.result.pushed
    # Prefect's default Dockerfile, streamed output (BuildKit spells the base docker.io/...)
    assert re.search(rf"FROM (docker\.io/)?{re.escape(prefect_image)}", out.getvalue())
    assert sorted(p.name for p in project.iterdir()) == listing  # no Dockerfile was written
    image.push()
    assert image.result.built and image.result.pushed
    assert image.digest and engine.registry_digest(image.reference, creds) == image.digest
    assert image.pinned == f"{image.name}@{image.digest}"

    # The project landed where Prefect's default Dockerfile puts it.
    code, output = engine.run(image.reference, ["python", "-c", "import os; print(sorted(os.listdir('.')))"])
    assert (code, output.strip()) == (0, "['flows.py']")

    created = engine.local_image(image.reference)["Created"]
    again = DockerImage(f"{registry.host}/{unique_name}", pull=False, credentials=creds, stream_progress_to=None)
    assert again.reference == image.reference
    again.build()
    again.push()
    assert not again.result.built and not again.result.pushed and again.result.cached
    assert again.digest == image.digest
    assert engine.local_image(image.reference)["Created"] == created


def test_explicit_tag_custom_context_and_dockerfile(tmp_path, busybox_image, registry_noauth, unique_name, monkeypatch):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "build.Dockerfile").write_text(f"FROM {busybox_image}\nCOPY data.txt /data.txt\n")
    (context / "data.txt").write_text("payload\n")
    monkeypatch.chdir(tmp_path)  # cwd is NOT the context: Prefect 3.8.8 would have ignored context=
    engine = Engine()
    image = DockerImage(
        f"{registry_noauth.host}/{unique_name}:v1", dockerfile="build.Dockerfile", context=context, pull=False,
        stream_progress_to=None,
    )
    assert image.reference.endswith(":v1")
    image.build()
    image.push()
    assert image.result.built and image.result.pushed
    assert engine.run(image.reference, ["cat", "/data.txt"]) == (0, "payload\n")
    # Both the tag and the content tag are published, at one digest.
    assert engine.registry_digest(image.reference) == image.digest
    assert engine.registry_digest(f"{image.name}:{image.plan.content_tag}") == image.digest


def test_push_uses_the_docker_config_like_prefect(project, registry, creds, unique_name):
    image = DockerImage(f"{registry.host}/{unique_name}", pull=False, stream_progress_to=None)
    image.build()
    with pytest.raises(AuthenticationError) as info:
        image.push()  # empty docker config: the registry refuses
    assert registry.password not in str(info.value)
    Engine().cli_login(creds)  # writes $DOCKER_CONFIG/config.json, as `docker login` does
    image.push()
    assert image.result.pushed and Engine().registry_digest(image.reference, creds) == image.digest
