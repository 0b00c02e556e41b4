"""Golden values: the hash format is a promise to every user.

A content tag names an image in users' registries; if a refactor changed how a plan is
encoded, every image would silently get a new tag (and be rebuilt and pushed again).
These literals were computed once with the format in use since the first release
(``prefect-flyimage-plan-v1`` / ``prefect-flyimage-context-v1``). A change here is a
change of format: it needs a new domain string and a migration plan, never a new literal.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefect_flyimage.context import BuildContext
from prefect_flyimage.plan import BuildPlan, BuildSecret

# --- the pinned values ---------------------------------------------------------------
LISTING = [
    ".dockerignore",
    "bin",
    "bin/run.sh",
    "cache",
    "cache/keep.txt",
    "docker",
    "empty",
    "link-to-app",
    "src",
    "src/app.py",
    "src/pkg",
    "src/pkg/__init__.py",
    "src/pkg/donn\u00e9es.txt",
    "src/pkg/space name.txt",
]
CONTEXT_DIGEST = "f878697133c8fa34e2af161e61f01d3601a40ab9c6d10503bfeae6340f0a8a7e"
PLAN_HASH = "a5eb92c553c281d464358013c4932d641b03ef307fee686737ec978134d59403"
CONTENT_TAG = "a5eb92c553c281d4"
FILE_PLAN_HASH = "7e9b50874735f57ac19a06c3bce68fe4e419a77671d17c44742e093687a7128d"
FILE_CONTENT_TAG = "7e9b50874735f57a"
# --------------------------------------------------------------------------------------

DOCKERFILE = "FROM busybox\nARG VERSION\nCOPY . /app\nRUN /app/bin/run.sh\n"


def _file(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)


def make_golden_tree(root: Path) -> Path:
    """A fixed tree; every mode set explicitly (the umask must not matter)."""
    root.mkdir()
    for d in ("src", "src/pkg", "bin", "build", "build/sub", "cache", "docker", "empty"):
        (root / d).mkdir()
    _file(root / "src" / "app.py", b"print('hello')\n", 0o644)
    _file(root / "src" / "pkg" / "__init__.py", b"", 0o600)
    _file(root / "src" / "pkg" / "donn\u00e9es.txt", "caf\u00e9\n".encode(), 0o644)
    _file(root / "src" / "pkg" / "space name.txt", b"a b\n", 0o640)
    _file(root / "bin" / "run.sh", b"#!/bin/sh\necho run\n", 0o755)
    _file(root / "build" / "out.bin", bytes(range(256)) * 4, 0o644)
    _file(root / "build" / "sub" / "x.o", b"object", 0o644)
    _file(root / "cache" / "a.tmp", b"tmp", 0o644)
    _file(root / "cache" / "keep.txt", b"kept\n", 0o644)
    _file(root / "debug.log", b"noise\n", 0o644)
    _file(root / "docker" / "Dockerfile.prod", DOCKERFILE.encode(), 0o644)
    _file(root / ".dockerignore", b"# build outputs\nbuild\n*.log\ncache/*\n!cache/keep.txt\ndocker/Dockerfile.prod\n", 0o644)
    os.symlink("src/app.py", root / "link-to-app")
    for d, mode in (("src", 0o755), ("src/pkg", 0o750), ("bin", 0o755), ("build", 0o755), ("build/sub", 0o755),
                    ("cache", 0o755), ("docker", 0o755), ("empty", 0o700)):
        os.chmod(root / d, mode)
    return root


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    return make_golden_tree(tmp_path / "ctx")


def golden_plan(root: Path) -> BuildPlan:
    return BuildPlan(
        context=root,
        dockerfile_text=DOCKERFILE,
        repository="127.0.0.1:5000/team/golden",
        build_args={"VERSION": "1.2.3", "PY": "3.11"},
        target="final",
        platform="linux/amd64",
        labels={"team": "data", "org.opencontainers.image.title": "golden"},
        secrets=(BuildSecret("token", env="HOME"),),
    )


def test_listing_is_pinned(golden):
    assert BuildContext(golden, None).paths() == LISTING


def test_context_digest_is_pinned(golden):
    assert BuildContext(golden, None).digest() == CONTEXT_DIGEST
    # Same value without the stat cache, and again from a warm cache.
    assert BuildContext(golden, None, use_cache=False).digest() == CONTEXT_DIGEST
    assert BuildContext(golden, None).digest() == CONTEXT_DIGEST
    # ContextEntry.encode is the published per-entry encoding: it must give the same digest.
    import hashlib

    entries = BuildContext(golden, None).entries()
    joined = b"".join(e.encode() for e in entries)
    assert hashlib.sha256(b"prefect-flyimage-context-v1\0" + joined).hexdigest() == CONTEXT_DIGEST
    assert [e.path for e in entries] == LISTING


def test_plan_hash_and_content_tag_are_pinned(golden):
    plan = golden_plan(golden)
    assert plan.hash == PLAN_HASH
    assert plan.content_tag == CONTENT_TAG
    assert str(plan.ref) == f"127.0.0.1:5000/team/golden:{CONTENT_TAG}"


def test_plan_from_dockerfile_is_pinned(golden):
    # The Dockerfile is excluded by .dockerignore yet sent (docker always sends it).
    plan = BuildPlan.from_dockerfile(
        golden, "127.0.0.1:5000/team/golden", dockerfile="docker/Dockerfile.prod", build_args={"VERSION": "1.2.3"}
    )
    assert "docker/Dockerfile.prod" in plan.build_context.paths()
    assert plan.hash == FILE_PLAN_HASH
    assert plan.content_tag == FILE_CONTENT_TAG


def test_context_digest_is_the_same_on_worker_processes(golden, monkeypatch):
    # Big cold trees are hashed on worker processes: same bytes, same digest.
    import prefect_flyimage._filehash as filehash
    import prefect_flyimage.context as ctx

    monkeypatch.setattr(ctx, "PROCESS_MIN_FILES", 1)
    monkeypatch.setattr(ctx, "cpu_count", lambda: 2)
    started = []
    real = filehash._start_worker
    monkeypatch.setattr(filehash, "_start_worker", lambda: started.append(real()) or started[-1])
    assert BuildContext(golden, None, use_cache=False).digest() == CONTEXT_DIGEST
    assert started and all(p is not None for p in started)
