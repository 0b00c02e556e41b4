"""Property: our compiled .dockerignore walk lists exactly what docker-py's does.

docker-py's :func:`docker.utils.build.exclude_paths` builds the tar the classic builder
receives, so it is the reference; ``tests/integration/test_dockerignore_daemon.py``
checks the same property against the daemon itself on fewer examples.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefect_flyimage._dockerignore import list_context
from prefect_flyimage.context import BuildContext

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dockerignore_strategies import blocked, pattern_line  # noqa: E402

NAMES = ["a", "b", "A", "ab", "a.py", "b.PY", "x.txt", ".hidden", "Dockerfile", "build", "sp ace", "é"]
DIRS = ["a", "b", "build", "src", "Src", "node_modules", ".git", "a.py"]


@st.composite
def trees(draw):
    """Files (and some empty folders, links) at depth <= 3, names that clash with patterns."""
    files = draw(
        st.lists(
            st.tuples(st.lists(st.sampled_from(DIRS), max_size=3), st.sampled_from(NAMES)),
            min_size=1,
            max_size=14,
        )
    )
    empty = draw(st.lists(st.lists(st.sampled_from(DIRS), min_size=1, max_size=3), max_size=3))
    links = draw(st.lists(st.tuples(st.sampled_from(["ln", "lnk.py"]), st.sampled_from(["a", "src", "missing"])), max_size=2))
    return files, empty, links


SEGMENTS = ["a", "b", "A", "src", "build", "*", "**", "?", "a*", "*.py", "*.PY", "[ab]", "[!a]", "[", ".", "..",
            "Dockerfile", ".hidden", "node_modules", ".git", "é", "sp ace", "x.txt"]


@st.composite
def patterns(draw):
    return [draw(pattern_line(SEGMENTS)) for _ in range(draw(st.integers(0, 5)))]


def build(root: Path, tree) -> None:
    files, empty, links = tree
    for dirs, name in files:
        parent = root.joinpath(*dirs)
        if blocked(parent):
            continue
        parent.mkdir(parents=True, exist_ok=True)
        target = parent / name
        if not os.path.lexists(target):
            target.write_text(name)
    for dirs in empty:
        path = root.joinpath(*dirs)
        if not blocked(path):
            path.mkdir(parents=True, exist_ok=True)
    for name, target in links:
        if not os.path.lexists(root / name):
            os.symlink(target, root / name)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), pats=patterns(), dockerfile=st.sampled_from([None, "Dockerfile", "a/Dockerfile", "./src/Dockerfile.x"]))
def test_listing_equals_docker_py(tree, pats, dockerfile):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, tree)
        expected = sorted(exclude_paths(str(root), list(pats), dockerfile=dockerfile))
        walked: list[str] = []
        assert list_context(str(root), pats, dockerfile, walked) == expected
        assert "" in walked


@settings(max_examples=60, deadline=None, database=None)
@given(tree=trees(), pats=patterns())
def test_build_context_lists_what_docker_py_sends(tree, pats):
    # Through BuildContext: .dockerignore parsing (comments, blanks, spaces) and the listing cache.
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as cache:
        root = Path(tmp)
        build(root, tree)
        (root / ".dockerignore").write_text("# generated\n\n" + "\n".join(f"  {p} " for p in pats) + "\n")
        expected = sorted(exclude_paths(str(root), list(pats), dockerfile=None))
        os.environ["PREFECT_FLYIMAGE_CACHE_DIR"] = cache
        assert BuildContext(root, None).paths() == expected
        assert BuildContext(root, None).paths() == expected  # possibly from the listing cache


@pytest.mark.parametrize(
    "pats, present, absent",
    [
        (["build", "!build/keep"], ["build/keep"], ["build/drop"]),
        (["*/keep"], ["build"], ["build/keep"]),
        (["**/*.py"], ["build"], ["build/keep/x.py", "top.py"]),
        (["BUILD"], [], ["build"]),  # docker-py matches case-insensitively
        (["build/"], [], ["build"]),
        (["/build"], [], ["build"]),
        (["build", "!bu"], [], ["build/keep"]),  # "bu" is a string prefix of nothing below "build"
        (["build", "!build/ke"], [], ["build", "build/keep", "build/drop"]),  # entered (prefix), nothing re-included
    ],
)
def test_known_cases(tmp_path, pats, present, absent):
    (tmp_path / "build" / "keep").mkdir(parents=True)
    (tmp_path / "build" / "keep" / "x.py").write_text("")
    (tmp_path / "build" / "drop").write_text("")
    (tmp_path / "top.py").write_text("")
    got = list_context(str(tmp_path), pats)
    assert got == sorted(exclude_paths(str(tmp_path), list(pats)))
    assert all(p in got for p in present) and not any(p in got for p in absent)
