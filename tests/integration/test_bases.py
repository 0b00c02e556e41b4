"""Base images are inputs: a base moved under the same tag rebuilds, once (issue 16).

Real parts only: bases are built from the busybox stand-in with a distinct file and
pushed to the local registry; the same tag is then pushed again with another file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from prefect_flyimage import BuildPlan, DockerImage, Engine, ensure
from prefect_flyimage.pipeline import resolve_bases

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from project_files import write_files  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _online_bases(monkeypatch):
    monkeypatch.delenv("PREFECT_FLYIMAGE_OFFLINE_BASES", raising=False)


def push_base(tmp_path: Path, repository: str, content: str, busybox: str) -> str:
    """Build ``FROM busybox`` + ``/base.txt`` = ``content``, push it as ``repository:1``; its digest."""
    ctx = write_files(tmp_path / f"base-{content}", {"Dockerfile": f"FROM {busybox}\nCOPY base.txt /base.txt\n",
                                                     "base.txt": content})
    result = ensure(BuildPlan.from_dockerfile(ctx, repository, tag="1"))
    assert result.pushed and result.digest
    return result.digest


def app_on(tmp_path: Path, base: str) -> Path:
    """The app project ``tmp_path/app``: ``FROM base:1`` plus one file of its own."""
    return write_files(tmp_path / "app", {"Dockerfile": f"FROM {base}:1\nCOPY app.txt /app.txt\n", "app.txt": "app\n"})


def cat(image_id: str, path: str) -> str:
    code, output = Engine().run(image_id, ["cat", path])
    assert code == 0, output
    return output


def test_moved_base_rebuilds_once_and_the_build_uses_the_resolved_digest(tmp_path, registry_noauth, busybox_image, unique_name):
    base = f"{registry_noauth.host}/{unique_name}-base"
    first_digest = push_base(tmp_path, base, "A", busybox_image)
    app = app_on(tmp_path, base)

    def plan() -> BuildPlan:
        return BuildPlan.from_dockerfile(app, f"{registry_noauth.host}/{unique_name}", pull=True, pin_bases=True)

    first = ensure(plan())
    assert first.built and first.pushed and cat(first.image_id, "/base.txt") == "A"
    resolved = resolve_bases(plan())
    assert resolved.bases == ((f"{base}:1", first_digest),) and resolved.hash == first.plan_hash
    assert resolved.hash != plan().hash  # the unresolved plan: without the base digest

    second_digest = push_base(tmp_path, base, "B", busybox_image)  # same tag, other content
    assert second_digest != first_digest
    # A plan resolved before the move builds exactly what it hashed (FROM pinned by digest).
    pinned = ensure(resolved, force=True, push=False)
    assert pinned.built and cat(pinned.image_id, "/base.txt") == "A"

    second = ensure(plan())
    assert second.built and second.pushed and second.reference != first.reference
    assert cat(second.image_id, "/base.txt") == "B"
    third = ensure(plan())
    assert third.cached and third.reference == second.reference and third.digest == second.digest


def test_multi_stage_with_an_arg_selected_base(tmp_path, registry_noauth, busybox_image, unique_name):
    base = f"{registry_noauth.host}/{unique_name}-base"
    push_base(tmp_path, base, "A", busybox_image)
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text(
        f"ARG BASE={registry_noauth.host}/{unique_name}-absent:1\n"
        "FROM ${BASE} AS src\n"
        "RUN cp /base.txt /copied.txt\n"
        "FROM scratch AS empty\n"
        "COPY app.txt /app.txt\n"
        "FROM ${BASE}\n"
        "COPY --from=src /copied.txt /copied.txt\n"
        "COPY app.txt /app.txt\n"
    )
    (app / "app.txt").write_text("app\n")

    def plan() -> BuildPlan:
        return BuildPlan.from_dockerfile(
            app, f"{registry_noauth.host}/{unique_name}", pull=True, pin_bases=True, build_args={"BASE": f"{base}:1"},
        )

    first = ensure(plan())
    assert first.built and cat(first.image_id, "/copied.txt") == "A"
    assert ensure(plan()).cached
    push_base(tmp_path, base, "B", busybox_image)
    second = ensure(plan())
    assert second.built and second.pushed and second.reference != first.reference
    assert cat(second.image_id, "/copied.txt") == "B" and cat(second.image_id, "/base.txt") == "B"
    assert ensure(plan()).cached


def test_prefect_default_dockerfile_records_its_base(tmp_path, registry_noauth, prefect_image, unique_name, monkeypatch):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "flows.py").write_text("print('hi')\n")
    monkeypatch.chdir(project)
    engine = Engine()
    stand_in = engine.local_image(prefect_image)
    assert stand_in is not None

    def image() -> DockerImage:
        return DockerImage(f"{registry_noauth.host}/{unique_name}", dockerfile="auto", pull=False, stream_progress_to=None)

    first = image()
    # pull=False: the base is the daemon's image (its id is what the hash covers).
    assert first.plan.bases == ((prefect_image, "local:" + stand_in.id),)
    first.build()
    first.push()
    assert first.result.built and first.result.pushed
    again = image()
    again.build()
    again.push()
    assert again.result.cached and again.reference == first.reference


def _inspect(app: Path, repository: str, *extra: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "prefect_flyimage.cli", "inspect", str(app), "-r", repository, "--pull", "--json", *extra],
        capture_output=True, text=True, timeout=300, env={**os.environ},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_inspect_shows_bases_and_why_names_a_moved_base(tmp_path, registry_noauth, busybox_image, unique_name):
    base = f"{registry_noauth.host}/{unique_name}-base"
    old = push_base(tmp_path, base, "A", busybox_image)
    app = app_on(tmp_path, base)
    repository = f"{registry_noauth.host}/{unique_name}"
    first = ensure(BuildPlan.from_dockerfile(app, repository, pull=True, pin_bases=True))

    info = _inspect(app, repository)
    assert info["bases"] == [{"ref": f"{base}:1", "digest": old, "source": "registry", "hashed": True}]
    assert info["hash"] == first.plan_hash and info["registry_digest"] == first.digest

    new = push_base(tmp_path, base, "B", busybox_image)
    why = _inspect(app, repository, "--why")["why"]
    assert why["status"] == "changed" and why["compared_with"] == first.reference
    assert why["changes"]["bases"] == {f"{base}:1": [old, new]}
    assert why["changes"]["files_changed"] == [] and why["changes"]["dockerfile_changed"] is False
