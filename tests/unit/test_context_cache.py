"""The stat cache's whole-tree answer: an unchanged tree costs its lstat walk, and any change
that matters to the digest still reaches it (same digests as without the cache)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import prefect_flyimage.context as ctx
from prefect_flyimage.context import BuildContext, StatCache


def old(path: Path) -> None:
    t = time.time() - 60
    os.utime(path, (t, t), follow_symlinks=False)


def make_tree(root: Path) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    for i in range(30):
        (root / "src" / "pkg" / f"m{i}.py").write_text(f"x = {i}\n" * (i + 1))
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "build").mkdir()
    (root / "build" / "out.bin").write_bytes(b"\0" * 100)
    os.symlink("app.py", root / "src" / "link.py")
    (root / ".dockerignore").write_text("build\n*.log\n")
    for dirpath, dirnames, names in os.walk(root):
        for n in names + dirnames:
            old(Path(dirpath) / n)
    old(root)
    return root


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path / "cache"))
    return make_tree(tmp_path / "ctx")


@pytest.fixture
def reads(monkeypatch):
    """Paths hashed (read) by the context, in this process."""
    seen: list[str] = []
    real = ctx.hash_file

    def counting(path):
        seen.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(ctx, "hash_file", counting)
    return seen


def fresh(root: Path) -> str:
    return BuildContext(root, use_cache=False).digest()


def test_unchanged_tree_is_answered_without_scanning(tree, reads, monkeypatch):
    first = BuildContext(tree).digest()
    assert first == fresh(tree)
    reads.clear()

    def no_scan(self):
        raise AssertionError("unchanged tree scanned entry by entry")

    monkeypatch.setattr(BuildContext, "_scan", no_scan)
    assert BuildContext(tree).digest() == first
    assert reads == []


def test_entries_after_the_whole_tree_answer_match_a_fresh_scan(tree):
    BuildContext(tree).digest()
    warm = BuildContext(tree)
    assert warm.digest() == fresh(tree)
    assert warm.entries() == BuildContext(tree, use_cache=False).entries()
    assert warm.total_size() == BuildContext(tree, use_cache=False).total_size()


@pytest.mark.parametrize(
    "change",
    [
        "rewrite_same_size",
        "chmod",
        "rename",
        "new_file",
        "delete",
        "relink",
        "new_dir",
        "chmod_dir",
        "dockerignore",
        "file_becomes_folder",
        "link_becomes_file",
    ],
)
def test_every_change_that_matters_reaches_the_digest(tree, change):
    before = BuildContext(tree).digest()
    app = tree / "src" / "app.py"
    if change == "rewrite_same_size":
        mtime = app.stat().st_mtime_ns
        app.write_text("print('HI')\n")
        os.utime(app, ns=(mtime, mtime))  # same size and mtime: only ctime tells
    elif change == "chmod":
        app.chmod(0o755)
    elif change == "rename":
        app.rename(tree / "src" / "main.py")
    elif change == "new_file":
        (tree / "src" / "pkg" / "new.py").write_text("new\n")
    elif change == "delete":
        (tree / "src" / "pkg" / "m3.py").unlink()
    elif change == "relink":
        (tree / "src" / "link.py").unlink()
        os.symlink("pkg/m1.py", tree / "src" / "link.py")
    elif change == "new_dir":
        (tree / "src" / "empty").mkdir()
    elif change == "chmod_dir":
        (tree / "src" / "pkg").chmod(0o700)
    elif change == "file_becomes_folder":
        app.unlink()
        app.mkdir()
    elif change == "link_becomes_file":
        (tree / "src" / "link.py").unlink()
        (tree / "src" / "link.py").write_text("print('hi')\n")
    elif change == "dockerignore":
        (tree / ".dockerignore").write_text("build\n*.log\nsrc/pkg/m2.py\n")
    after = BuildContext(tree).digest()
    assert after != before
    assert after == fresh(tree)
    assert BuildContext(tree).digest() == after  # and again, warm


def test_changes_that_do_not_matter_rehash_nothing(tree, reads):
    before = BuildContext(tree).digest()
    reads.clear()
    (tree / "debug.log").write_text("noise")  # ignored, but the root folder's mtime moves
    (tree / "build" / "out.bin").write_bytes(b"\1" * 100)
    os.utime(tree / "src", None)
    assert BuildContext(tree).digest() == before
    assert reads == []


def test_one_changed_file_is_the_only_one_read(tree, reads):
    BuildContext(tree).digest()
    reads.clear()
    target = tree / "src" / "pkg" / "m7.py"
    target.write_text("changed\n")
    old(target)
    warm = BuildContext(tree).digest()
    assert reads == ["m7.py"]
    assert warm == fresh(tree)


def test_a_few_changes_skip_the_full_scan(tree, reads, monkeypatch):
    BuildContext(tree).digest()
    reads.clear()
    for name in ("m4.py", "m9.py"):
        (tree / "src" / "pkg" / name).write_text(f"# {name} changed\n")
    monkeypatch.setattr(BuildContext, "_scan", lambda self: pytest.fail("full scan for two changed files"))
    warm = BuildContext(tree)
    digest = warm.digest()
    assert sorted(reads) == ["m4.py", "m9.py"]
    monkeypatch.undo()
    assert digest == fresh(tree)
    assert warm.entries() == BuildContext(tree, use_cache=False).entries()


def test_recently_written_files_are_never_trusted(tree, reads):
    recent = tree / "src" / "pkg" / "m5.py"
    recent.write_text("just written\n")  # mtime now: within RACY_SECONDS
    first = BuildContext(tree).digest()
    reads.clear()
    assert BuildContext(tree).digest() == first
    assert reads == ["m5.py"]  # read again: its stat signature alone cannot be trusted yet


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_root", "empty"])
def test_a_damaged_cache_only_costs_a_rehash(tree, damage):
    first = BuildContext(tree).digest()
    cache = StatCache(tree.resolve())
    data = cache.file.read_bytes()
    if damage == "truncate":
        cache.file.write_bytes(data[: len(data) - 40])
    elif damage == "garbage":
        cache.file.write_bytes(data[:30] + b"\xff" * 50 + data[80:])
    elif damage == "other_root":
        cache.file.write_bytes(data.replace(str(tree.resolve()).encode(), str(tree.resolve())[:-1].encode() + b"X"))
    else:
        cache.file.write_bytes(b"")
    assert BuildContext(tree).digest() == first


def test_undecodable_file_names_round_trip(tree):
    name = os.fsdecode(b"caf\xe9.py")  # not UTF-8: kept with surrogateescape
    (tree / "src" / name).write_text("latin-1 name\n")
    old(tree / "src" / name)
    first = BuildContext(tree).digest()
    assert first == fresh(tree)
    assert StatCache(tree.resolve()).paths.count(f"src/{name}") == 1
    assert BuildContext(tree).digest() == first
