"""Build images from declarative specs in the real daemon, run them, and rebuild only on change."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from prefect_flyimage import Image, SpecError
from prefect_flyimage.plan import BuildSecret

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "src" / "app").mkdir(parents=True)
    (tmp_path / "src" / "app" / "__init__.py").write_text("NAME = 'app'\n")
    (tmp_path / "src" / "app" / "logic.py").write_text("def answer():\n    return 41\n")
    (tmp_path / "src" / ".dockerignore").write_text("*.log\n")
    (tmp_path / "src" / "debug.log").write_text("must not be copied\n")
    (tmp_path / "requirements.txt").write_text("--no-index\n--find-links /wheels\nflyimage-extra==2.0.0\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "hello").write_text("#!/bin/sh\necho \"hello from $GREETING\"\n")
    os.chmod(tmp_path / "bin" / "hello", 0o755)
    return tmp_path


def spec(project: Path, wheelhouse: Path, registry: str, name: str) -> Image:
    return (
        Image.from_debian_base(install_prefect=False, python_version=(3, 11), registry=registry, name=name)
        .with_apt_packages("jq")
        .with_source_folder(wheelhouse, "/wheels")
        .with_pip_packages("flyimage-demo>=0.1,<1", extra_args="--no-index --find-links /wheels")
        .with_requirements(project / "requirements.txt")
        .with_env_vars({"GREETING": "the spec", "PYTHONPATH": "/srv/src"})
        .with_source_file(project / "bin" / "hello", "/usr/local/bin")
        .with_workdir("/srv")
        .with_source_folder(project / "src")
        .with_commands(["python3 -c 'import app.logic, flyimage_extra; assert flyimage_extra.ANSWER == 42'"])
    )


def test_build_push_run_and_skip(project, wheelhouse, registry, creds, unique_name, engine, run_in):
    image = spec(project, wheelhouse, registry.host, unique_name)
    uri = image.uri
    assert uri.startswith(f"{registry.host}/{unique_name}:")

    first = image.build(push=True, credentials=creds)
    assert first.built and first.pushed and first.reference == uri
    assert engine.registry_digest(uri, creds) == first.digest

    out = run_in(uri, "jq --version; flyimage-demo; hello; pwd; python3 -c 'import app.logic as l, flyimage_extra as e; print(l.answer() + 1, e.ANSWER)'; ls -A /srv/src")
    lines = out.splitlines()
    assert lines[0].startswith("jq-")
    assert lines[1:5] == ["demo says hi", "hello from the spec", "/srv", "42 42"]
    assert sorted(lines[5:]) == [".dockerignore", "app"], "debug.log is .dockerignore'd, bytecode never copied"

    # Same spec: nothing is built or pushed, the registry's digest is reported.
    again = image.build(push=True, credentials=creds)
    assert not again.built and not again.pushed and again.digest == first.digest and again.reference == uri
    assert spec(project, wheelhouse, registry.host, unique_name).uri == uri

    # A source change is a new image under a new tag; the old one stays.
    (project / "src" / "app" / "logic.py").write_text("def answer():\n    return 1\n")
    changed = spec(project, wheelhouse, registry.host, unique_name)
    assert changed.uri != uri
    result = changed.build(push=False)
    assert result.built and not result.pushed and result.reference == changed.uri
    assert run_in(changed.uri, "python3 -c 'import app.logic as l; print(l.answer())'").strip() == "1"
    local = changed.build(push=False)
    assert not local.built and local.image_id == result.image_id


def test_secret_reaches_the_build_but_not_the_image(unique_name, engine, run_in, docker_client, monkeypatch, tmp_path):
    value = "s3cr3t-" + unique_name
    monkeypatch.setenv("SPEC_BUILD_TOKEN", value)
    token_file = tmp_path / "token"
    token_file.write_text("file-" + value)
    image = (
        Image.from_debian_base(install_prefect=False, python_version=(3, 11), name=unique_name)
        # Secrets are not part of BuildKit's cache key (nor of the uri): a fresh layer per test run.
        .with_env_vars({"RUN_ID": unique_name})
        .with_commands(
            [
                # Only hashes of the secrets are kept, as proof that they arrived.
                'printf %s "$SPEC_BUILD_TOKEN" | sha256sum > /token.sha256',
                'printf %s "$file_token" | sha256sum > /file-token.sha256',
            ],
            secret_mounts=["SPEC_BUILD_TOKEN", BuildSecret("file-token", src=str(token_file))],
        )
    )
    with image.staged_plan() as plan:
        assert value not in plan.dockerfile_text and plan.backend == "buildkit"
    result = image.build(push=False)
    assert result.built

    out = run_in(image.uri, "cat /token.sha256 /file-token.sha256")
    assert hashlib.sha256(value.encode()).hexdigest() in out
    assert hashlib.sha256(("file-" + value).encode()).hexdigest() in out
    # Not in the history, the config, or the files of the image.
    img = docker_client.images.get(image.uri)
    assert value not in repr(img.history()) and value not in repr(img.attrs)
    assert run_in(image.uri, f"grep -rlsF {value} /etc /root /tmp /run /srv /token.sha256 || echo none").strip() == "none"


def test_from_dockerfile_and_its_extension(tmp_path, unique_name, run_in):
    folder = tmp_path / "docker"
    folder.mkdir()
    (folder / "Dockerfile").write_text("FROM flyimage/busybox:latest\nCOPY hello.txt /hello.txt\n")
    (folder / "hello.txt").write_text("hello v1\n")
    image = Image.from_dockerfile(folder / "Dockerfile", registry="127.0.0.1:5001", name=unique_name)
    first_uri = image.uri
    with pytest.raises(SpecError, match="extendable"):
        image.with_env_vars({"A": "1"}).build(push=False)
    result = image.build(push=False)
    assert result.built and result.reference == image.uri
    assert run_in(image.uri, "cat /hello.txt").strip() == "hello v1"

    extra = tmp_path / "extra.txt"
    extra.write_text("extra\n")
    extended = image.clone(extendable=True).with_source_file(extra, "/opt").with_env_vars({"MODE": "extended"})
    assert extended.uri != image.uri
    assert extended.build(push=False).built
    assert run_in(extended.uri, "cat /hello.txt /opt/extra.txt; echo $MODE").split() == ["hello", "v1", "extra", "extended"]

    (folder / "hello.txt").write_text("hello v2\n")  # a context file changes the image
    changed = Image.from_dockerfile(folder / "Dockerfile", registry="127.0.0.1:5001", name=unique_name)
    assert changed.uri != first_uri
    assert image.uri == changed.uri, "the uri reflects the files' current contents"
    changed.build(push=False)
    assert run_in(changed.uri, "cat /hello.txt").strip() == "hello v2"


def test_copy_into_another_registry(registry_noauth, unique_name, engine, busybox_image):
    # A clone without layers copies its base into the registry under a content tag.
    image = Image.from_base(busybox_image).clone(registry=registry_noauth.host, name=unique_name)
    result = image.build(push=True)
    assert result.pushed and engine.registry_digest(image.uri) == result.digest
    assert Image.from_base(busybox_image).build().reference == busybox_image  # a reference: nothing to do
