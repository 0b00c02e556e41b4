"""The content-hash URI: which changes make a new image and which do not."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest

from prefect_flyimage import Image
from prefect_flyimage.plan import BuildSecret
from prefect_flyimage.spec.image import URI_TAG_LENGTH

BASE = "flyimage/python:3.11-bookworm"
REGISTRY = "127.0.0.1:5000/team"


def base() -> Image:
    return Image.from_base(BASE).clone(name="app", registry=REGISTRY)


def full(project: Path) -> Image:
    return (
        base()
        .with_apt_packages("jq")
        .with_pip_packages("six>=1.16,<2")
        .with_requirements(project / "requirements.txt")
        .with_env_vars({"MODE": "prod"})
        .with_source_folder(project / "src")
        .with_source_file(project / "run.sh", "/usr/local/bin")
        .with_workdir("/app")
        .with_commands(["echo built"])
    )


def test_uri_is_registry_name_and_hash(project):
    uri = full(project).uri
    assert re.fullmatch(rf"127\.0\.0\.1:5000/team/app:[0-9a-f]{{{URI_TAG_LENGTH}}}", uri), uri
    assert full(project).tag == uri.rsplit(":", 1)[1]
    assert full(project).reference == uri


def test_same_spec_same_uri(project):
    assert full(project).uri == full(project).uri
    assert full(project) == full(project)  # immutable values compare by content
    assert hash(full(project)) == hash(full(project))


# Each entry: a change to the spec (or the files it copies) that must change the URI.
CHANGES: dict[str, Callable[[Path], Image]] = {
    "base image": lambda p: Image.from_base("flyimage/python:3.12-bookworm").clone(name="app", registry=REGISTRY),
    "platform": lambda p: base().clone(platform="linux/arm64"),
    "apt package": lambda p: base().with_apt_packages("curl"),
    "pip spec": lambda p: base().with_pip_packages("six>=1.17,<2"),
    "pip index": lambda p: base().with_pip_packages("six>=1.16,<2", index_url="https://pypi.example/simple"),
    "pip pre": lambda p: base().with_pip_packages("six>=1.16,<2", pre=True),
    "pip extra args": lambda p: base().with_pip_packages("six>=1.16,<2", extra_args="--no-deps"),
    "pip secret": lambda p: base().with_pip_packages("six>=1.16,<2", secret_mounts=["TOKEN"]),
    "env value": lambda p: base().with_env_vars({"MODE": "dev"}),
    "workdir": lambda p: base().with_workdir("/srv"),
    "command": lambda p: base().with_commands(["echo other"]),
    "copy destination": lambda p: base().with_source_folder(p / "src", "/opt/src"),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_spec_changes_change_uri(project, name):
    reference = {
        "base image": base(),
        "platform": base(),
        "apt package": base().with_apt_packages("jq"),
        "pip spec": base().with_pip_packages("six>=1.16,<2"),
        "pip index": base().with_pip_packages("six>=1.16,<2"),
        "pip pre": base().with_pip_packages("six>=1.16,<2"),
        "pip extra args": base().with_pip_packages("six>=1.16,<2"),
        "pip secret": base().with_pip_packages("six>=1.16,<2"),
        "env value": base().with_env_vars({"MODE": "prod"}),
        "workdir": base().with_workdir("/app"),
        "command": base().with_commands(["echo built"]),
        "copy destination": base().with_source_folder(project / "src"),
    }[name]
    assert CHANGES[name](project).uri != reference.uri


def test_layer_order_changes_uri():
    a = base().with_env_vars({"A": "1"}).with_workdir("/app")
    b = base().with_workdir("/app").with_env_vars({"A": "1"})
    assert a.uri != b.uri


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: (p / "src" / "pkg" / "core.py").write_text("VALUE = 2\n"),  # contents
        lambda p: (p / "src" / "pkg" / "new.py").write_text(""),  # a new file
        lambda p: (p / "src" / "pkg" / "core.py").unlink(),  # a removed file
        lambda p: (p / "src" / "pkg" / "core.py").rename(p / "src" / "pkg" / "moved.py"),  # a rename
        lambda p: os.chmod(p / "src" / "pkg" / "core.py", 0o755),  # the mode (COPY keeps it)
        lambda p: (p / "requirements.txt").write_text("six==1.16.0\n"),  # a requirements file
        lambda p: (p / "run.sh").write_text("#!/bin/sh\necho changed\n"),  # a copied file
        lambda p: os.chmod(p / "run.sh", 0o700),
    ],
    ids=["contents", "new-file", "removed-file", "rename", "folder-mode", "requirements", "file", "file-mode"],
)
def test_file_changes_change_uri(project, edit):
    before = full(project).uri
    edit(project)
    assert full(project).uri != before


def test_unchanged_content_keeps_uri(project, tmp_path_factory):
    before = full(project).uri
    # Touching files, another checkout location, registry/name and __pycache__ do not matter.
    os.utime(project / "src" / "pkg" / "core.py", (1, 1))
    (project / "src" / "pkg" / "__pycache__").mkdir()
    (project / "src" / "pkg" / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"\0junk")
    (project / "src" / "pkg" / "stale.pyc").write_bytes(b"\0junk")
    assert full(project).uri == before
    elsewhere = tmp_path_factory.mktemp("checkout") / "project"
    shutil.copytree(project, elsewhere, symlinks=True)
    assert full(elsewhere).uri == before
    renamed = full(project).clone(name="other", registry="127.0.0.1:5001")
    assert renamed.tag == full(project).tag
    assert renamed.uri == f"127.0.0.1:5001/other:{full(project).tag}"


def test_dockerignore_decides_what_counts(project):
    (project / "src" / ".dockerignore").write_text("*.log\n")
    before = full(project).uri
    (project / "src" / "debug.log").write_text("noise")
    assert full(project).uri == before, "an ignored file must not change the uri"
    (project / "src" / "data.txt").write_text("data")
    assert full(project).uri != before


def test_with_dockerignore_patterns_apply_to_folders(project, tmp_path):
    ignore = tmp_path / "ignore"
    ignore.write_text("**/*.tmp\n")
    image = lambda: base().with_dockerignore(ignore).with_source_folder(project / "src")  # noqa: E731
    before = image().uri
    (project / "src" / "pkg" / "scratch.tmp").write_text("x")
    assert image().uri == before
    # One identity (the plan's): what the patterns select counts, not how they are written.
    ignore.write_text("**/*.tmp\n# comment\n")
    assert image().uri == before
    ignore.write_text("**/*.log\n")
    assert image().uri != before, "scratch.tmp is copied now"


def test_secret_values_do_not_count(project, monkeypatch):
    image = lambda: base().with_pip_packages("six", secret_mounts=["TOKEN"])  # noqa: E731
    monkeypatch.setenv("TOKEN", "one")
    before = image().uri
    monkeypatch.setenv("TOKEN", "two")
    assert image().uri == before
    same_id = base().with_pip_packages("six", secret_mounts=[BuildSecret("TOKEN", src="/elsewhere")])
    assert same_id.uri == before, "only the secret's id is part of the image"


def test_length_prefixed_no_concatenation_collisions():
    # Flyte hashes "".join(items): ("ab", "c") and ("a", "bc") collide there.
    assert base().with_apt_packages("ab", "c").uri != base().with_apt_packages("a", "bc").uri
    assert base().with_commands(["ab", "c"]).uri != base().with_commands(["a", "bc"]).uri


def test_from_dockerfile_hashes_text_and_context(project):
    df = project / "docker" / "Dockerfile"
    image = lambda: Image.from_dockerfile(df, registry=REGISTRY, name="df")  # noqa: E731
    before = image().uri
    moved = project / "elsewhere"
    shutil.copytree(project / "docker", moved)
    assert Image.from_dockerfile(moved / "Dockerfile", registry=REGISTRY, name="df").uri == before
    df.write_text(df.read_text() + "ENV X=1\n")
    after_text = image().uri
    assert after_text != before
    (project / "docker" / "hello.txt").write_text("changed\n")
    assert image().uri != after_text, "a file of the Dockerfile's context is part of the image"


def test_uv_script_only_the_header_counts(tmp_path):
    script = tmp_path / "job.py"
    header = '# /// script\n# requires-python = ">=3.10"\n# dependencies = ["six"]\n# ///\n'
    script.write_text(header + "print('v1')\n")
    image = lambda: Image.from_uv_script(script, name="job", registry=REGISTRY, python_version=(3, 11))  # noqa: E731
    before = image().uri
    script.write_text(header + "print('v2')\n")
    assert image().uri == before
    script.write_text(header.replace('["six"]', '["six", "idna"]') + "print('v2')\n")
    assert image().uri != before


def test_reference_images_keep_their_uri():
    assert Image.from_base(BASE).uri == BASE
    assert Image.from_debian_base(prefect_version="3.8.8", python_version=(3, 11)).uri == "prefecthq/prefect:3.8.8-python3.11"
    # A clone is an image of its own, even without layers.
    copy = Image.from_base(BASE).clone(name="mirror", registry=REGISTRY)
    assert copy.uri.startswith(f"{REGISTRY}/mirror:") and not copy.is_reference


def test_registry_from_environment(monkeypatch):
    image = Image.from_base(BASE).clone(name="app").with_workdir("/app")
    assert image.uri.startswith("app:")
    monkeypatch.setenv("PREFECT_FLYIMAGE_REGISTRY", "registry.example:5000/acme")
    assert image.uri.startswith("registry.example:5000/acme/app:")
    assert image.registry is None
