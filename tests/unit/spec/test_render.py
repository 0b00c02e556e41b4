"""Rendering to Dockerfile lines and staging the build context into a BuildPlan."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from prefect_flyimage import BuildPlan, Image, SpecError
from prefect_flyimage.plan import BuildSecret

BASE = "flyimage/python:3.11-bookworm"


def named() -> Image:
    return Image.from_base(BASE).clone(name="app", registry="127.0.0.1:5000")


def run_lines(text: str) -> list[str]:
    """The RUN instructions of a Dockerfile, continuation lines joined."""
    return [line for line in text.replace("\\\n", "").splitlines() if line.startswith("RUN ")]


def test_no_syntax_line_and_from_first():
    text = named().with_pip_packages("six").dockerfile_text()
    assert text.splitlines()[0] == f"FROM {BASE}"
    assert "# syntax" not in text


def test_package_specs_are_shell_quoted():
    text = named().with_pip_packages("numpy>=2,<3", "requests[socks]; python_version>'3'").dockerfile_text()
    (run,) = run_lines(text)
    argv = shlex.split(run.split("python3 -m pip install", 1)[1])
    assert argv == ["numpy>=2,<3", "requests[socks]; python_version>'3'"]


def test_installs_use_cache_mounts():
    text = named().with_apt_packages("jq", "curl").with_pip_packages("six").dockerfile_text()
    apt, pip = run_lines(text)
    assert "--mount=type=cache,target=/var/cache/apt,sharing=locked" in apt
    assert "--mount=type=cache,target=/var/lib/apt/lists,sharing=locked" in apt
    assert "apt-get install -y --no-install-recommends jq curl" in apt
    assert "--mount=type=cache,target=/root/.cache/pip" in pip


def test_secrets_use_secret_mounts_never_arg_or_env(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://user:s3cr3t-value@pypi.example/simple")
    image = named().with_pip_packages("private-pkg", secret_mounts=["PIP_INDEX_URL"]).with_commands(
        ["curl -H \"Authorization: $API_TOKEN\" https://example.invalid"],
        secret_mounts=[BuildSecret("API_TOKEN", src="/run/token")],
    )
    text = image.dockerfile_text()
    assert "--mount=type=secret,id=PIP_INDEX_URL" in text
    assert 'PIP_INDEX_URL="$(cat /run/secrets/PIP_INDEX_URL)" && export PIP_INDEX_URL' in text
    assert "--mount=type=secret,id=API_TOKEN" in text
    assert "s3cr3t-value" not in text
    assert not any(line.startswith(("ARG", "ENV")) for line in text.splitlines())
    secrets = {s.id: s for s in image.secrets}
    assert secrets["PIP_INDEX_URL"].env == "PIP_INDEX_URL" and secrets["API_TOKEN"].src == "/run/token"
    assert "s3cr3t-value" not in repr(image)


def test_env_workdir_and_copy_lines(project):
    text = (
        named()
        .with_env_vars({"GREETING": 'say "hi"', "PATH": "/opt/tools/bin:$PATH"})
        .with_workdir("/srv/app")
        .with_source_folder(project / "src")
        .with_source_folder(project / "src", "/opt/code", copy_contents_only=True)
        .with_source_file([project / "run.sh", project / "requirements.txt"], "/usr/local/bin")
        .dockerfile_text()
    )
    assert 'ENV GREETING="say \\"hi\\"" \\\n    PATH="/opt/tools/bin:$PATH"' in text
    assert "WORKDIR /srv/app" in text
    copies = [json.loads(line[len("COPY "):]) for line in text.splitlines() if line.startswith("COPY ")]
    assert copies == [
        ["layers/02-folder/", "./src"],
        ["layers/03-folder/", "/opt/code"],
        ["layers/04-files/run.sh", "layers/04-files/requirements.txt", "/usr/local/bin/"],
    ]


def test_to_plan_stages_context_and_tags_with_uri(project, tmp_path):
    (project / "src" / "pkg" / "__pycache__").mkdir()
    (project / "src" / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    os.chmod(project / "run.sh", 0o755)
    image = (
        named()
        .with_requirements(project / "requirements.txt")
        .with_source_folder(project / "src")
        .with_source_file(project / "run.sh", "/usr/local/bin")
    )
    ctx = tmp_path / "ctx"
    plan = image.to_plan(ctx, network="host")
    assert isinstance(plan, BuildPlan)
    assert plan.context == ctx.resolve()
    assert plan.repository == "127.0.0.1:5000/app" and plan.content_tag == image.tag
    assert str(plan.ref) == image.uri  # one identity: the URI's tag is the plan's content tag
    assert plan.hash == image.spec_hash() and not plan.labels  # no second label
    assert plan.hash == image.to_plan().hash  # staging changes nothing about it
    assert plan.backend == "buildkit" and plan.network == "host" and plan.platform == "linux/amd64"
    assert plan.dockerfile_text == image.dockerfile_text()
    staged = sorted(p.relative_to(ctx).as_posix() for p in ctx.rglob("*") if p.is_file())
    assert staged == [
        "layers/00-requirements/requirements.txt",
        "layers/01-folder/pkg/__init__.py",
        "layers/01-folder/pkg/core.py",
        "layers/02-files/run.sh",
    ]
    assert os.stat(ctx / "layers/02-files/run.sh").st_mode & 0o777 == 0o755
    with pytest.raises(SpecError, match="must be empty"):
        image.to_plan(ctx)


def test_copy_only_plans_use_the_default_backend(project):
    with named().with_source_folder(project / "src").staged_plan() as plan:
        assert plan.backend == "auto" and not plan.needs_buildkit()


def test_staged_plan_removes_its_folder(project):
    with named().with_source_folder(project / "src").staged_plan() as plan:
        context = plan.context
        assert (context / "layers" / "00-folder" / "pkg" / "core.py").is_file()
    assert not context.exists()


def test_build_network_from_environment(project, monkeypatch):
    monkeypatch.setenv("PREFECT_FLYIMAGE_BUILD_NETWORK", "host")
    with named().with_workdir("/app").staged_plan() as plan:
        assert plan.network == "host"


def test_from_dockerfile_without_layers_builds_its_folder(project):
    image = Image.from_dockerfile(project / "docker" / "Dockerfile", registry="127.0.0.1:5000", name="df", platform="linux/amd64")
    plan = image.to_plan()
    assert plan.context == (project / "docker").resolve()
    assert plan.dockerfile_name == "Dockerfile" and plan.content_tag == image.tag
    assert plan.dockerfile_text == (project / "docker" / "Dockerfile").read_text()


def test_extendable_dockerfile_image_stages_both(project):
    image = (
        Image.from_dockerfile(project / "docker" / "Dockerfile", registry="127.0.0.1:5000", name="df")
        .clone(extendable=True)
        .with_source_file(project / "run.sh", "/usr/local/bin")
    )
    with image.staged_plan() as plan:
        assert (plan.context / "hello.txt").is_file()
        assert (plan.context / ".prefect-flyimage/layers/00-files/run.sh").is_file()
        assert plan.dockerfile_text.startswith("FROM flyimage/busybox:latest\nCOPY hello.txt /hello.txt\n")
        assert '["./.prefect-flyimage/layers/00-files/run.sh"' not in plan.dockerfile_text
        assert 'COPY [".prefect-flyimage/layers/00-files/run.sh", "/usr/local/bin/"]' in plan.dockerfile_text


def test_uv_and_poetry_render(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\nversion='0'\n")
    (tmp_path / "uv.lock").write_text("version = 1\n")
    (tmp_path / "poetry.lock").write_text("")
    uv = named().with_uv_project(tmp_path / "pyproject.toml", extra_args="--no-dev")
    assert uv.layers[0].uvlock == tmp_path / "uv.lock"  # found next to pyproject.toml
    (run,) = run_lines(uv.dockerfile_text())
    assert "--mount=type=cache,target=/root/.cache/uv" in run
    assert "--mount=type=bind,source=layers/00-uv,target=/tmp/prefect-flyimage/00-uv-src" in run
    assert "uv sync --inexact --locked --no-install-project --no-dev" in run
    assert run.rstrip().endswith("rm -rf /tmp/prefect-flyimage/00-uv-work /tmp/prefect-flyimage/00-uv-tool /tmp/prefect-flyimage/00-uv-tmp")
    poetry = named().with_poetry_project(tmp_path / "pyproject.toml", project_install_mode="install_project")
    (run,) = run_lines(poetry.dockerfile_text())
    assert "poetry install --no-interaction --no-ansi --no-root && python3 -m pip install --no-deps ." in run
    assert "POETRY_VIRTUALENVS_CREATE=false" in run


def test_staging_keeps_symlinks_and_modes(project):
    (project / "src" / "link.py").symlink_to("pkg/core.py")
    (project / "src" / "pkg" / "tool.sh").write_text("#!/bin/sh\n")
    os.chmod(project / "src" / "pkg" / "tool.sh", 0o750)
    os.chmod(project / "src" / "pkg", 0o750)
    with named().with_source_folder(project / "src").staged_plan() as plan:
        staged = plan.context / "layers" / "00-folder"
        assert os.readlink(staged / "link.py") == "pkg/core.py"
        assert os.stat(staged / "pkg" / "tool.sh").st_mode & 0o777 == 0o750
        assert os.stat(staged / "pkg").st_mode & 0o777 == 0o750
