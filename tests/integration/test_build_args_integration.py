"""Build args reach the daemon as docker-py would send them; ``None`` leaves the ARG's default."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_flyimage.pipeline import ensure
from prefect_flyimage.plan import BuildPlan

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["docker-py", "buildkit"])
def test_none_keeps_the_default_and_scalars_render(tmp_path: Path, busybox_image, unique_name, docker_client, monkeypatch, backend):
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(
        f"FROM {busybox_image}\nARG A=default\nARG B\nARG C\nRUN echo \"$A|$B|$C\" > /args\n"
    )
    plan = BuildPlan.from_dockerfile(tmp_path / "ctx", unique_name, build_args={"A": None, "B": True, "C": 7},
                                     backend=backend)
    result = ensure(plan, push=False)
    out = docker_client.containers.run(result.reference, ["cat", "/args"], remove=True)
    assert out.decode().strip() == "default|true|7"
