"""The unchanged redeploy needs no Docker daemon: the stat walk and one registry request."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_flyimage import BuildPlan, DockerImage, ensure
from prefect_flyimage.errors import DockerUnavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, busybox_image: str) -> Path:
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY app.txt /app.txt\n")
    (tmp_path / "app.txt").write_text("v1\n")
    return tmp_path


def test_unchanged_redeploy_works_with_the_daemon_gone(project, registry, creds, unique_name, monkeypatch):
    repository = f"{registry.host}/{unique_name}"
    first = ensure(BuildPlan.from_dockerfile(project, repository), credentials=creds)
    assert first.built and first.pushed

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # any daemon call would fail now
    again = ensure(BuildPlan.from_dockerfile(project, repository), credentials=creds)
    assert again.cached and again.digest == first.digest and again.image_id is None

    # DockerImage(pull=False): its base is the daemon's image, whose id is an input (issue 16),
    # so it needs the daemon even when unchanged, and says so.
    image = DockerImage(repository, dockerfile="Dockerfile", context=project, pull=False, credentials=creds,
                        stream_progress_to=None)
    with pytest.raises(DockerUnavailable, match="nonexistent"):
        image.build()

    # A change needs the daemon, and says so.
    (project / "app.txt").write_text("v2\n")
    with pytest.raises(DockerUnavailable, match="nonexistent"):
        ensure(BuildPlan.from_dockerfile(project, repository), credentials=creds)
