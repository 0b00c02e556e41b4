"""Fixtures for the declarative Image spec's unit tests (no Docker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Private stat cache; no spec settings leaking in from the environment or the repo's pyproject."""
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    for key in ("PREFECT_FLYIMAGE_REGISTRY", "PREFECT_FLYIMAGE_DEBIAN_BASE", "PREFECT_FLYIMAGE_BUILD_NETWORK"):
        monkeypatch.delenv(key, raising=False)
    workdir = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(workdir)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small project: a source folder, a requirements file, a script and a Dockerfile folder."""
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "__init__.py").write_text("")
    (tmp_path / "src" / "pkg" / "core.py").write_text("VALUE = 1\n")
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\necho run\n")
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "Dockerfile").write_text("FROM flyimage/busybox:latest\nCOPY hello.txt /hello.txt\n")
    (tmp_path / "docker" / "hello.txt").write_text("hello\n")
    return tmp_path
