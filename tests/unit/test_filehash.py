"""Hashing on worker processes: same digests as inline, errors named, workers that fail replaced."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

import prefect_flyimage._filehash as fh
import prefect_flyimage.context as ctx
from prefect_flyimage.context import BuildContext
from prefect_flyimage.errors import ContextError


@pytest.fixture
def processes(monkeypatch):
    """Send every cold file to worker processes, whatever the tree size and CPU count."""
    monkeypatch.setattr(ctx, "PROCESS_MIN_FILES", 1)
    monkeypatch.setattr(ctx, "cpu_count", lambda: 2)
    started = []
    real = fh._start_worker

    def counting():
        proc = real()
        started.append(proc)
        return proc

    monkeypatch.setattr(fh, "_start_worker", counting)
    return started


def files(tmp_path: Path, n: int = 300) -> list[tuple[str, int]]:
    items = []
    for i in range(n):
        p = tmp_path / f"f{i:04d}\n name"  # a newline in the name: the protocol must carry any byte
        p.write_bytes(i.to_bytes(4, "big") * (i * 37 % 5000))
        items.append((str(p), p.stat().st_size))
    return items


def make_tree(root: Path) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    for i in range(40):
        (root / "src" / "pkg" / f"m{i}.py").write_text(f"x = {i}\n" * i)
    (root / "src" / "big.bin").write_bytes(bytes(range(256)) * 9000)
    (root / "Dockerfile").write_text("FROM scratch\n")
    return root


def test_same_digest_on_workers_as_on_threads(tmp_path, monkeypatch):
    root = make_tree(tmp_path)
    threads = BuildContext(root, use_cache=False).digest()
    monkeypatch.setattr(ctx, "PROCESS_MIN_FILES", 1)
    monkeypatch.setattr(ctx, "cpu_count", lambda: 2)
    started = []
    real = fh._start_worker
    monkeypatch.setattr(fh, "_start_worker", lambda: started.append(real()) or started[-1])
    assert BuildContext(root, use_cache=False).digest() == threads
    assert len(started) == 2 and all(p is not None and p.returncode == 0 for p in started)  # exited on EOF


def test_workers_match_hashlib(tmp_path, processes):
    items = files(tmp_path)
    got: dict[int, str] = {}
    fh.hash_in_processes(items, 2, got.__setitem__, fh.hash_file)
    assert got == {i: hashlib.sha256(Path(p).read_bytes()).hexdigest() for i, (p, _) in enumerate(items)}
    assert len(processes) == 2


def test_worker_read_error_is_raised_with_errno(tmp_path, processes):
    items = files(tmp_path, 100)
    items.insert(50, (str(tmp_path / "gone"), 10))
    with pytest.raises(OSError) as err:
        fh.hash_in_processes(items, 2, lambda i, d: None, fh.hash_file)
    assert err.value.errno == 2 and err.value.filename == str(tmp_path / "gone")
    for proc in processes:
        assert proc.poll() is not None  # no worker left running


def test_context_names_the_unreadable_file(tmp_path, processes, monkeypatch):
    root = make_tree(tmp_path)
    real = ctx.BuildContext.paths
    monkeypatch.setattr(ctx.BuildContext, "paths", lambda self: real(self) + ["zz-vanished"])
    monkeypatch.setattr(ctx.os, "stat", _pretend_file(ctx.os.stat, "zz-vanished", root / "Dockerfile"))
    with pytest.raises(ContextError, match="cannot read 'zz-vanished'.*No such file"):
        BuildContext(root, use_cache=False).digest()


def _pretend_file(real_stat, name, stand_in):
    # The file vanishes between stat and read (a race we cannot schedule for real).
    def fake(path, *a, **kw):
        return real_stat(stand_in, follow_symlinks=False) if str(path).endswith(name) else real_stat(path, *a, **kw)

    return fake


def test_worker_that_dies_is_replaced_inline(tmp_path, processes, monkeypatch):
    # A worker killed mid-way (OOM killer, signal): its driver hashes the rest in-process.
    die = "    out.flush()\n    if hashlib.sha256(line).digest()[0] < 40: raise SystemExit(9)\n"
    monkeypatch.setattr(fh, "_WORKER", fh._WORKER.replace("    out.flush()\n", die, 1))
    items = files(tmp_path)
    got: dict[int, str] = {}
    fh.hash_in_processes(items, 2, got.__setitem__, fh.hash_file)
    assert got == {i: fh.hash_file(p) for i, (p, _) in enumerate(items)}
    assert any(p.returncode == 9 for p in processes)


def test_no_python_for_workers_falls_back_to_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(fh.sys, "executable", "/bin/cat")  # runs, but is not Python
    items = files(tmp_path, 50)
    got: dict[int, str] = {}
    fh.hash_in_processes(items, 2, got.__setitem__, fh.hash_file)
    assert got == {i: fh.hash_file(p) for i, (p, _) in enumerate(items)}


def test_concurrent_digests_from_threads(tmp_path, processes):
    # Prefect runs tasks on threads: several contexts hashed at once on worker processes.
    root = make_tree(tmp_path)
    expected = BuildContext(root, use_cache=False).digest()
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(BuildContext(root, use_cache=False).digest())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 4 and len(processes) == 10


def test_executable_that_hangs_is_not_waited_for(tmp_path, monkeypatch):
    # sys.executable may be an embedding binary (uwsgi, a frozen app) that never answers.
    script = tmp_path / "silent"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(0o755)
    monkeypatch.setattr(fh.sys, "executable", str(script))
    monkeypatch.setattr(fh, "_HELLO_TIMEOUT", 0.5)
    items = files(tmp_path, 20)
    got: dict[int, str] = {}
    fh.hash_in_processes(items, 2, got.__setitem__, fh.hash_file)
    assert got == {i: fh.hash_file(p) for i, (p, _) in enumerate(items)}
