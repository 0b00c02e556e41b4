"""``prefect-flyimage inspect --why``: what changed against the image the registry holds.

Real builds pushed to the authenticated registry; the explanation comes from the inputs
label in the pushed image's config, read back from the registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_flyimage import BuildPlan, ensure
from prefect_flyimage.image_configs import RegistryReader
from prefect_flyimage.inputs import INPUTS_LABEL, decode, inputs_of

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, busybox_image: str, monkeypatch) -> Path:
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "p"
    (root / "pkg").mkdir(parents=True)
    (root / "Dockerfile").write_text(f"FROM {busybox_image}\nARG A=0\nCOPY . /app\nRUN echo $A > /a\n")
    (root / "a.txt").write_text("a\n")
    (root / "b.txt").write_text("b\n")
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    return root


def _plan(project: Path, repository: str, **args: str) -> BuildPlan:
    return BuildPlan.from_dockerfile(project, repository, build_args=args or {"A": "1"})


def _why(project: Path, repository: str, registry, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefect_flyimage.cli", "inspect", str(project), "-r", repository, "--why",
         "-u", registry.username, "--password-stdin", *extra],
        input=registry.password + "\n", capture_output=True, text=True, timeout=300,
        env={**os.environ},
    )


def _why_json(project: Path, repository: str, registry, *extra: str) -> dict:
    proc = _why(project, repository, registry, "--json", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert registry.password not in proc.stdout + proc.stderr
    return json.loads(proc.stdout)["why"]


def test_why_names_exactly_what_changed(project, registry, creds, unique_name):
    repository = f"{registry.host}/{unique_name}"
    first = ensure(_plan(project, repository), credentials=creds)
    assert first.built and first.pushed

    # The label is in the pushed config, and it describes the plan that built it.
    with RegistryReader(registry.host, creds) as reader:
        labels = reader.config(first.reference)["config"]["Labels"]
    assert decode(labels[INPUTS_LABEL]) == inputs_of(_plan(project, repository))

    assert _why_json(project, repository, registry, "--build-arg", "A=1")["status"] == "unchanged"

    # Change a file, add a file, change an arg: --why names exactly those.
    (project / "a.txt").write_text("a, changed\n")
    (project / "c.txt").write_text("new\n")
    why = _why_json(project, repository, registry, "--build-arg", "A=2")
    assert why["status"] == "changed" and why["compared_with"] == first.reference
    changes = why["changes"]
    assert changes["files_changed"] == ["a.txt"]
    assert changes["files_added"] == ["c.txt"]
    assert changes["files_removed"] == []
    assert changes["build_args"] == {"A": ["1", "2"]}
    assert changes["dockerfile_changed"] is False
    assert changes["platform"] is None and changes["target"] is None and changes["labels"] == {}

    # Build that; then remove a file and touch the Dockerfile: compared with the newest image.
    second = ensure(_plan(project, repository, A="2"), credentials=creds)
    assert second.built and second.reference != first.reference
    (project / "pkg" / "mod.py").unlink()
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "LABEL stage=two\n")
    why = _why_json(project, repository, registry, "--build-arg", "A=2")
    assert why["compared_with"] == second.reference
    changes = why["changes"]
    assert changes["files_removed"] == ["pkg/mod.py"]
    assert changes["files_changed"] == ["Dockerfile"]  # it is in the context (COPY . /app)
    assert changes["files_added"] == [] and changes["build_args"] == {}
    assert changes["dockerfile_changed"] is True

    # The same in words, and against a chosen tag.
    text = _why(project, repository, registry, "--build-arg", "A=2", "--against", first.tag)
    assert text.returncode == 0, text.stderr
    assert f"compared with {first.reference}" in text.stdout
    for line in ("file added: c.txt", "file removed: pkg/mod.py", "file changed: a.txt", "Dockerfile changed",
                 "build arg A: '1' -> '2'"):
        assert line in text.stdout, text.stdout


def test_why_first_image_and_platform(project, registry, creds, unique_name):
    repository = f"{registry.host}/{unique_name}"
    assert _why_json(project, repository, registry, "--build-arg", "A=1")["status"] == "no-previous-image"
    ensure(_plan(project, repository), credentials=creds)
    why = _why_json(project, repository, registry, "--build-arg", "A=1", "--platform", "linux/amd64")
    assert why["status"] == "changed"
    assert why["changes"]["platform"] == [None, "linux/amd64"]
    assert why["changes"]["files_added"] == why["changes"]["files_changed"] == []


def test_why_with_an_explicit_tag_compares_with_that_tag(project, registry, creds, unique_name):
    repository = f"{registry.host}/{unique_name}"
    stable = ensure(BuildPlan.from_dockerfile(project, repository, tag="stable", build_args={"A": "1"}), credentials=creds)
    newer = ensure(_plan(project, repository, A="2"), credentials=creds)  # newest image, other tag
    assert stable.built and newer.built
    why = _why_json(project, repository, registry, "--build-arg", "A=3", "-t", "stable")
    assert why["compared_with"] == f"{repository}:stable"
    assert why["changes"]["build_args"] == {"A": ["1", "3"]}
    # without the tag: the newest labelled image
    why = _why_json(project, repository, registry, "--build-arg", "A=3")
    assert why["compared_with"] == newer.reference and why["changes"]["build_args"] == {"A": ["2", "3"]}
