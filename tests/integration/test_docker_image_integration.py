"""``DockerImage.build()``/``.push()`` against the real daemon and registry (no Prefect server)."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import pytest

from prefect_flyimage import AuthenticationError, DockerImage, Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from split_project import split_project  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.prefect_compat]


@pytest.fixture
def project(cwd_project, unique_name) -> Path:
    return cwd_project({"flows.py": f"# {unique_name}\nfrom prefect import flow\n\n@flow\ndef hello():\n    return 1\n"},
                       "flowproject")


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


# ---- build() with flow.deploy(push=False): nothing written to any registry (issue 12) -----

NO_DAEMON = "unix:///nonexistent/docker.sock"


@pytest.fixture
def pushed_base(busybox_image, registry_noauth, unique_name, docker_client) -> str:
    """The base in the registry: with pull=True a base is resolved there (no daemon needed)."""
    ref = f"{registry_noauth.host}/{unique_name}-base:1"
    docker_client.images.get(busybox_image).tag(ref)
    docker_client.images.push(ref)
    return ref


def _tags(registry_host: str, repository: str) -> list[str]:
    from prefect_flyimage.registry import RegistryClient

    with RegistryClient(registry_host) as client:
        return sorted(client.tags(repository))


def test_build_without_push_writes_nothing_when_the_registry_lacks_the_dependency(
    tmp_path, pushed_base, registry_noauth, unique_name, monkeypatch
):
    from prefect_flyimage._append_path import path_of

    project = split_project(tmp_path / "proj", pushed_base)
    monkeypatch.chdir(project)
    base_tags = _tags(registry_noauth.host, f"{unique_name}-base")
    image = DockerImage(f"{registry_noauth.host}/{unique_name}", dockerfile="Dockerfile", stream_progress_to=None, pull=True)
    assert path_of(image.plan)[0] == "append"  # the code-only path would apply
    image.build()  # what flow.deploy(build=True, push=False) calls, and nothing else
    # nothing was written to the registry: no repository (no tags), the base's untouched
    assert _tags(registry_noauth.host, unique_name) == []
    assert _tags(registry_noauth.host, f"{unique_name}-base") == base_tags
    # the image is in the daemon, built
    assert image.result.built and not image.result.pushed and image.digest is None
    local = Engine().local_image(image.reference)
    assert local is not None and local["Id"] == image.result.image_id


def test_build_without_push_appends_when_the_registry_holds_the_dependency(
    tmp_path, pushed_base, registry_noauth, unique_name, monkeypatch
):
    project = split_project(tmp_path / "proj", pushed_base)
    monkeypatch.chdir(project)
    name = f"{registry_noauth.host}/{unique_name}"

    def image(**kw) -> DockerImage:
        return DockerImage(name, dockerfile="Dockerfile", stream_progress_to=None, pull=True, **kw)

    first = image()
    first.build()
    first.push()  # build() then push(), as flow.deploy(push=True): publishes the dependency image
    published = _tags(registry_noauth.host, unique_name)
    assert first.reference.split(":")[-1] in published and len(published) == 2  # the image and its dependency image

    # a code-only change, build() only: appended in the registry at once, no daemon needed
    (project / "pkg" / "flow.py").write_text("VERSION = 2\n")
    daemon = os.environ["DOCKER_HOST"]
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    second = image()
    second.build()
    assert not second.result.built and second.result.image_id is None and second.digest
    assert _tags(registry_noauth.host, unique_name) == sorted([*published, second.tag])
    assert _digest(registry_noauth.host, second.reference) == second.digest
    second.push()  # only confirms it
    assert second.digest == _digest(registry_noauth.host, second.reference)

    # append=False: the same build() builds in the daemon and writes nothing
    monkeypatch.setenv("DOCKER_HOST", daemon)
    (project / "pkg" / "flow.py").write_text("VERSION = 3\n")
    before = _tags(registry_noauth.host, unique_name)
    third = image(append=False)
    third.build()
    assert third.result.built and third.digest is None
    assert _tags(registry_noauth.host, unique_name) == before


def _digest(registry_host: str, reference: str):
    from prefect_flyimage.registry import RegistryClient

    with RegistryClient(registry_host) as client:
        return client.manifest_digest(reference)
