"""The case-sensitive (moby) mode of the ``.dockerignore`` matcher and the BuildKit ignore file.

Expected listings follow moby's patternmatcher (``filepath.Match`` semantics, case kept,
last match wins, a rule matching a folder covers its subtree).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_flyimage._dockerignore import _escape, buildkit_ignore, case_gap, list_context
from prefect_flyimage.engine._buildkit import context_ignore


def tree(root: Path, files: list[str]) -> None:
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text(f)


FILES = ["README.MD", "readme.md", "Src/a.py", "src/b.py", "Build/keep", "Build/out", "deep/x/Y.TXT", "deep/x/y.txt"]


@pytest.mark.parametrize(
    "patterns, moby",
    [
        # case kept: *.md leaves README.MD
        (["*.md"], {"README.MD", "Src", "Src/a.py", "src", "src/b.py", "Build", "Build/keep", "Build/out",
                    "deep", "deep/x", "deep/x/Y.TXT", "deep/x/y.txt"}),
        # ** crosses folders, case kept
        (["**/*.txt"], {"README.MD", "readme.md", "Src", "Src/a.py", "src", "src/b.py", "Build", "Build/keep",
                        "Build/out", "deep", "deep/x", "deep/x/Y.TXT"}),
        # a folder rule covers its subtree; "!" re-includes only the exact case
        (["Build", "!Build/keep", "!build/out", "src"], {"README.MD", "readme.md", "Src", "Src/a.py",
                                                          "Build/keep", "deep", "deep/x", "deep/x/Y.TXT", "deep/x/y.txt"}),
    ],
)
def test_case_sensitive_matches_moby(tmp_path, patterns, moby):
    tree(tmp_path, FILES)
    assert set(list_context(str(tmp_path), patterns, "Dockerfile", case_sensitive=True)) == moby
    # docker-py's default (what we hash) is case-insensitive: it differs on these trees
    assert set(list_context(str(tmp_path), patterns, "Dockerfile")) != moby


def test_case_gap_is_both_listings_from_one_walk(tmp_path):
    tree(tmp_path, FILES)
    pats = ["*.md", "build", "!build/KEEP", "**/y.txt"]
    hashed, sent = case_gap(str(tmp_path), pats, "Dockerfile")
    assert hashed == list_context(str(tmp_path), pats, "Dockerfile")
    assert sent == list_context(str(tmp_path), pats, "Dockerfile", case_sensitive=True)


@pytest.mark.parametrize(
    "name, pattern",
    [("a*b", "/a\\*b"), ("q?", "/q\\?"), ("[x]", "/\\[x]"), ("b\\s", "/b\\\\s"), ("t ", "/t[ ]"),
     ("!bang", "/!bang"), ("#hash", "/#hash"), ("d/e", "/d/e")],
)
def test_escape_names_exactly(name, pattern):
    assert _escape(name) == pattern


def test_ignore_file_excludes_sent_and_reincludes_hashed(tmp_path):
    tree(tmp_path, ["README.MD", "a*b?.MD", "app.py", "build/Keep", "build/out"])
    pats = ["*.md", "build", "!build/keep"]
    hashed, sent = case_gap(str(tmp_path), pats, "Dockerfile")
    assert "README.MD" in sent and "README.MD" not in hashed  # the gap exists both ways
    assert "build/Keep" in hashed and "build/Keep" not in sent
    text = buildkit_ignore(str(tmp_path), pats, hashed, sent)
    assert text == "*.md\nbuild\n!build/keep\n/README.MD\n/a\\*b\\?.MD\n!/build/Keep\n"


def test_ignore_file_for_a_folder_that_changes_side(tmp_path):
    tree(tmp_path, ["Build/Deep/c", "Build/Deep/d.MD", "Build/e"])
    pats = ["build", "!Build/Deep", "**/*.md"]
    hashed, sent = case_gap(str(tmp_path), pats, "Dockerfile")
    assert hashed == ["Build/Deep", "Build/Deep/c"]
    assert sent == ["Build", "Build/Deep", "Build/Deep/c", "Build/Deep/d.MD", "Build/e"]
    # the folder goes whole (moby: a rule covers the subtree), then each hashed entry under
    # it comes back, a folder emptied first so only its hashed entries return
    assert buildkit_ignore(str(tmp_path), pats, hashed, sent).splitlines() == [
        *pats, "/Build", "/Build/Deep/d.MD", "/Build/e", "!/Build/Deep", "/Build/Deep/*", "!/Build/Deep/c",
    ]


def test_no_ignore_file_when_the_matchers_agree(tmp_path):
    tree(tmp_path, ["readme.md", "app.py", "UPPER.txt"])
    pats = ["*.md", "*.txt"]
    hashed, sent = case_gap(str(tmp_path), pats, "Dockerfile")
    assert buildkit_ignore(str(tmp_path), pats, hashed, sent) is None  # UPPER.txt: its cased part is not matched
    (tmp_path / ".dockerignore").write_text("*.md\n")
    assert context_ignore(tmp_path, "Dockerfile") is None
    (tmp_path / "NOTES.MD").write_text("n")
    assert context_ignore(tmp_path, "Dockerfile") == "*.md\n/NOTES.MD\n"
