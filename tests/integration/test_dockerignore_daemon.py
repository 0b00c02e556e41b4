"""Property, against the daemon itself: the entries we hash are the entries a build receives.

For random small trees and random ``.dockerignore`` files (``!`` exceptions, ``**``,
folder patterns, leading ``/``), a real classic-builder build of
``FROM busybox`` + ``COPY . /x`` lists what arrived (``stat`` of every entry: type, mode,
path), and that list must equal :meth:`BuildContext.entries` (kind, mode, path).

One documented difference is left out of the comparison: the daemon deletes
``.dockerignore`` and the Dockerfile from the context after reading them when
``.dockerignore`` excludes them (moby's ``removeDockerfile``); both are sent, and
hashing them too only means an edit of an excluded ``.dockerignore`` line is noticed.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefect_flyimage._dockerignore import list_context
from prefect_flyimage.context import BuildContext, read_dockerignore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dockerignore_strategies import blocked, pattern_line  # noqa: E402

pytestmark = pytest.mark.integration

NAMES = ["a", "A", "b.py", "B.PY", "x.txt", ".env", "sp ace", "caf\u00e9", "Dockerfile", "keep"]
DIRS = ["a", "src", "Src", "build", ".git", "node_modules", "sub"]
SEGMENTS = ["a", "A", "src", "build", "*", "**", "?", "*.py", "*.PY", "[ab]", "[!a]", ".git", "keep", "sub",
            "node_modules", "x.txt", "caf\u00e9", ".env"]
DOCKERFILE = """FROM {base}
COPY . /x
RUN cd /x && find . -mindepth 1 -exec stat -c '@@%a|%F|%n' {{}} +
"""
SKIP = {"./.dockerignore", "./Dockerfile"}  # see the module docstring


@st.composite
def cases(draw):
    files = draw(st.lists(st.tuples(st.lists(st.sampled_from(DIRS), max_size=3), st.sampled_from(NAMES)), min_size=1, max_size=12))
    modes = draw(st.lists(st.sampled_from([0o644, 0o600, 0o755, 0o640]), min_size=len(files), max_size=len(files)))
    empty = draw(st.lists(st.lists(st.sampled_from(DIRS), min_size=1, max_size=2), max_size=2))
    link = draw(st.sampled_from([None, "a", "src", "missing"]))
    pats = [draw(pattern_line(SEGMENTS)) for _ in range(draw(st.integers(1, 5)))]
    return files, modes, empty, link, pats


def make(root: Path, case, base: str) -> None:
    files, modes, empty, link, pats = case
    for (dirs, name), mode in zip(files, modes):
        parent = root.joinpath(*dirs)
        if blocked(parent) or os.path.lexists(parent / name):
            continue
        parent.mkdir(parents=True, exist_ok=True)
        (parent / name).write_text(f"{'/'.join(dirs)}/{name}\n")
        os.chmod(parent / name, mode)
    for dirs in empty:
        if not blocked(root.joinpath(*dirs)):
            root.joinpath(*dirs).mkdir(parents=True, exist_ok=True)
    if link and not os.path.lexists(root / "ln"):
        os.symlink(link, root / "ln")
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
    (root / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (root / ".dockerignore").write_text("\n".join(pats) + "\n")


def received(client, root: Path) -> set[tuple[str, str, str]]:
    """(path, kind, mode) of what ``COPY . /x`` put in the image, from the build's own output."""
    lines: list[str] = []
    image_id = None
    for chunk in client.api.build(path=str(root), rm=True, forcerm=True, network_mode="none", decode=True):
        if "error" in chunk:
            raise AssertionError(chunk["error"])
        lines.extend(chunk.get("stream", "").splitlines())
        image_id = (chunk.get("aux") or {}).get("ID", image_id)
    if image_id:
        client.images.remove(image_id, force=True, noprune=False)
    out = set()
    for line in lines:
        if line.startswith("@@"):
            mode, kind, path = line[2:].split("|", 2)
            if path not in SKIP:
                out.add((path[2:], {"regular file": "file", "regular empty file": "file", "directory": "dir",
                                    "symbolic link": "symlink"}[kind], mode))
    return out


def hashed(root: Path) -> set[tuple[str, str, str]]:
    entries = BuildContext(root, "Dockerfile", use_cache=False).entries()
    return {(e.path, e.kind, "%o" % e.mode) for e in entries if "./" + e.path not in SKIP}


@settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_hashed_entries_equal_what_the_daemon_receives(docker_client, busybox_image, case):
    with tempfile.TemporaryDirectory(prefix="flyimage-ignore-") as tmp:
        root = Path(tmp)
        make(root, case, busybox_image)
        assert hashed(root) == received(docker_client, root), (root / ".dockerignore").read_text()


def test_daemon_oracle_sees_exclusions(docker_client, busybox_image, tmp_path):
    # The oracle itself must notice an excluded and a re-included file, or the property proves nothing.
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "out.bin").write_text("x")
    (tmp_path / "build" / "keep").write_text("k")
    (tmp_path / "app.py").write_text("y")
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.format(base=busybox_image))
    (tmp_path / ".dockerignore").write_text("build/*\n!build/keep\n")
    got = received(docker_client, tmp_path)
    assert {p for p, _, _ in got} == {"app.py", "build", "build/keep"}
    assert got == hashed(tmp_path)


BUILDKIT_CASES = {
    # sent by moby's case-sensitive matcher, left out by docker-py's (and so by the hash)
    "folded-out": ({"README.MD": "n", "app.py": "x", "Src/a*b?.py": "s", "keep/x.txt": "k"}, "*.md\nsrc\n"),
    # hashed (docker-py re-includes case-insensitively), dropped by moby's
    "folded-in": ({"build/Keep": "k", "build/out.bin": "o", "build/sub/z": "z", "app.py": "x"}, "build\n!build/keep\n"),
    # a folder that changes side, with entries of both kinds inside
    "folder": ({"Build/a": "a", "Build/b.MD": "b", "Build/Deep/c": "c", "x.md": "x"}, "build\n!build/deep\n*.md\n**/*.md\n"),
    "folder-reinclude": ({"Build/Deep/c": "c", "Build/Deep/d.MD": "d", "Build/e": "e", "A*b?[c].MD": "w"},
                         "build\n!Build/Deep\n**/*.md\n"),
}


@pytest.mark.parametrize("case", sorted(BUILDKIT_CASES))
def test_buildkit_receives_the_hashed_entries(busybox_image, tmp_path, unique_name, case):
    # Our BuildKit build writes a Dockerfile-specific ignore file for what the two
    # matchers disagree on, so BuildKit (case-sensitive) receives what we hash.
    import io

    from prefect_flyimage.engine import Engine
    from prefect_flyimage.plan import BuildPlan

    files, ignore = BUILDKIT_CASES[case]
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.format(base=busybox_image))
    (tmp_path / ".dockerignore").write_text(ignore)
    plan = BuildPlan.from_dockerfile(tmp_path, unique_name, tag="probe", backend="buildkit", no_cache=True, network="host")
    out = io.StringIO()
    Engine().build(plan, stream=out)
    found = (re.match(r"#\d+ [\d.]+ @@\d+\|[^|]+\|\./(.*)$", line) for line in out.getvalue().splitlines())
    got = {m.group(1) for m in found if m}
    want = {p for p, _, _ in hashed(tmp_path)}
    # A folder holding a sent entry arrives with it, whatever the builder (not a matcher question).
    implied = {"/".join(p.split("/")[:i]) for p in want for i in range(1, p.count("/") + 1)}
    assert got - {"Dockerfile", ".dockerignore"} == want | implied
    # The case really is a gap: without the ignore file BuildKit would receive something else.
    moby = list_context(str(tmp_path), read_dockerignore(tmp_path), "Dockerfile", case_sensitive=True)
    assert set(moby) - {"Dockerfile", ".dockerignore"} != want
