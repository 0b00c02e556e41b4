"""Context listing and hashing: what changes the hash and what does not."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from prefect_flyimage.context import BuildContext, StatCache, check_context_dir
from prefect_flyimage.errors import ContextError


def make_tree(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / "README.md").write_text("readme\n")
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "build").mkdir()
    (root / "build" / "out.bin").write_bytes(b"\0" * 100)
    (root / ".dockerignore").write_text("# comment\nbuild\n*.log\n")
    return root


def old(path: Path) -> None:
    """Back-date a file so the stat cache trusts it (racy-write protection)."""
    t = time.time() - 60
    os.utime(path, (t, t))


def digest(root: Path) -> str:
    return BuildContext(root).digest()


def test_paths_follow_dockerignore(tmp_path):
    root = make_tree(tmp_path)
    (root / "debug.log").write_text("x")
    paths = BuildContext(root).paths()
    assert "src/app.py" in paths and "README.md" in paths and "Dockerfile" in paths
    assert not any(p.startswith("build") for p in paths)
    assert "debug.log" not in paths


def test_hash_changes_with_included_file_and_dockerignore(tmp_path):
    root = make_tree(tmp_path)
    base = digest(root)
    (root / "src" / "app.py").write_text("print('bye')\n")
    changed = digest(root)
    assert changed != base
    (root / ".dockerignore").write_text("build\n*.log\nREADME.md\n")
    assert digest(root) != changed


def test_hash_ignores_excluded_files_and_touches(tmp_path):
    root = make_tree(tmp_path)
    base = digest(root)
    (root / "build" / "out.bin").write_bytes(b"\1" * 100)
    (root / "trace.log").write_text("noise")
    assert digest(root) == base
    os.utime(root / "src" / "app.py", None)  # touch: same bytes
    assert digest(root) == base


def test_hash_covers_mode_and_path(tmp_path):
    root = make_tree(tmp_path)
    base = digest(root)
    os.chmod(root / "src" / "app.py", 0o755)
    assert digest(root) != base
    os.chmod(root / "src" / "app.py", 0o644)
    (root / "src" / "app.py").rename(root / "src" / "main.py")
    assert digest(root) != base


def test_length_prefix_prevents_concatenation_collisions(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "ab").write_text("c")
    (b / "a").write_text("bc")
    assert digest(a) != digest(b)


def test_stat_cache_reuses_digests_without_reading(tmp_path, monkeypatch):
    root = make_tree(tmp_path)
    for p in root.rglob("*"):
        if p.is_file():
            old(p)
    first = digest(root)
    import prefect_flyimage.context as ctx

    def boom(path):
        raise AssertionError(f"re-read {path}")

    monkeypatch.setattr(ctx, "hash_file", boom)
    assert digest(root) == first  # warm: stat only


def test_stat_cache_detects_same_size_rewrite(tmp_path):
    root = make_tree(tmp_path)
    f = root / "src" / "app.py"
    old(f)
    first = digest(root)
    f.write_text("print('HI')\n")  # same size, new mtime
    assert digest(root) != first


def test_stat_cache_survives_corruption(tmp_path):
    root = make_tree(tmp_path)
    first = digest(root)
    StatCache(root.resolve()).file.parent.mkdir(parents=True, exist_ok=True)
    StatCache(root.resolve()).file.write_text("{not json")
    assert digest(root) == first


def test_missing_context_and_file_context(tmp_path):
    with pytest.raises(ContextError, match="does not exist"):
        check_context_dir(tmp_path / "nope")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ContextError, match="not a directory"):
        check_context_dir(f)


def test_symlink_loop_is_named(tmp_path):
    root = make_tree(tmp_path)
    os.symlink("loop", root / "loop")
    with pytest.raises(ContextError, match="symlink loop at 'loop'"):
        digest(root)


def test_dangling_symlink_hashes_its_target_text(tmp_path):
    root = make_tree(tmp_path)
    os.symlink("missing-target", root / "link")
    first = digest(root)
    (root / "link").unlink()
    os.symlink("other-target", root / "link")
    assert digest(root) != first


def test_unreadable_file_is_named(tmp_path, monkeypatch):
    # Root can read any file, so the permission fault is injected.
    root = make_tree(tmp_path)
    import prefect_flyimage.context as ctx

    real = ctx.hash_file

    def deny(path):
        if path.name == "app.py":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(ctx, "hash_file", deny)
    with pytest.raises(ContextError, match="cannot read 'src/app.py'.*permission denied"):
        BuildContext(root, use_cache=False).digest()


def test_fifo_in_context_is_rejected(tmp_path):
    root = make_tree(tmp_path)
    os.mkfifo(root / "pipe")
    with pytest.raises(ContextError, match="'pipe'.*not a regular file"):
        digest(root)
