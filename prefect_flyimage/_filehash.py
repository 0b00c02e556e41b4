"""SHA-256 of many files on every core: worker processes for big cold trees.

Threads do not scale here: ``hashlib`` releases the GIL only while hashing a buffer,
and the per-file Python work (open, read, hexdigest, bookkeeping) holds it, so on a
tree of many ~50 KB files threads reach about one core. Worker processes do scale.

The workers are plain ``python -I -S -c <script>`` subprocesses speaking a line protocol
over pipes, not :mod:`multiprocessing`:

- ``fork`` is unsafe in a threaded process (Prefect workers, event loops, docker-py's
  connection pools): a lock held by another thread at fork time stays held in the child;
- ``spawn``/``forkserver`` children re-import the function's package (``docker`` and
  more: ~150 ms each) and ``forkserver`` preloads are global state of the user's process;
- ``subprocess`` is fork+exec (safe from any thread), starts a bare interpreter in
  ~5 ms, and runs only the standard library.

Work is handed out in small batches, two in flight per worker, so a worker that is slow
(a loaded machine) simply takes fewer batches. If a worker cannot start or dies, its
driver thread hashes the rest itself: the result never depends on the workers.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence

if TYPE_CHECKING:
    import subprocess

from .errors import WorkerOSError

__all__ = ["CHUNK", "hash_file", "hash_in_processes", "cpu_count"]

#: Chunk size for streaming files through the hash (never read a file whole).
CHUNK = 1 << 20
_HELLO = b"flyimage-hash-1\n"
# A worker that has not said hello by then is not a Python running our script.
_HELLO_TIMEOUT = 10.0
# Each request line is a path in hex (paths may hold any byte but NUL); each answer line
# is the hex digest or "!<errno> <message>".
_WORKER = r"""
import hashlib, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
buf = bytearray(%d)
view = memoryview(buf)
out.write(%r)
out.flush()
for line in inp:
    try:
        h = hashlib.sha256()
        with open(bytes.fromhex(line.decode()), "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(buf)
                if not n:
                    break
                h.update(view[:n])
        out.write(h.hexdigest().encode() + b"\n")
    except OSError as exc:
        msg = (exc.strerror or str(exc)).replace("\n", " ")
        out.write(b"!%%d %%s\n" %% (exc.errno or 0, msg.encode("utf-8", "replace")))
    out.flush()
""" % (CHUNK, _HELLO)

# A batch is at most this many files or bytes, whichever comes first.
_BATCH_FILES = 64
_BATCH_BYTES = 8 << 20


def cpu_count() -> int:
    """CPUs this process may run on (respects affinity masks and container cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def hash_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, streamed in chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def _batches(items: Sequence[tuple[str, int]]) -> Iterator[list[int]]:
    batch: list[int] = []
    size = 0
    for i, (_, n) in enumerate(items):
        batch.append(i)
        size += n
        if len(batch) >= _BATCH_FILES or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _start_worker() -> "Optional[subprocess.Popen[bytes]]":
    import subprocess

    if not sys.executable or getattr(sys, "frozen", False):
        return None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
    except OSError:
        return None
    assert proc.stdout is not None
    if os.name == "posix":
        import select

        ready, _, _ = select.select([proc.stdout], [], [], _HELLO_TIMEOUT)
    else:
        ready = [proc.stdout]
    if not ready or proc.stdout.readline() != _HELLO:  # not a Python that runs our script
        proc.kill()
        proc.communicate()  # closes the pipes
        return None
    return proc


def hash_in_processes(
    items: Sequence[tuple[str, int]],
    workers: int,
    done: Callable[[int, str], None],
    fallback: Callable[[str], str],
) -> None:
    """Hash ``items`` (absolute path, size) on ``workers`` processes.

    Calls ``done(index, hexdigest)`` for each item (from driver threads, in any order).
    A file the worker cannot read raises :class:`OSError` (``errno``, ``strerror`` and
    ``filename`` as if read here); files left by a worker that failed are hashed with
    ``fallback(path)`` in the calling process.
    """
    batches = _batches(items)
    lock = threading.Lock()
    stop = threading.Event()
    procs: list = []

    def take() -> Optional[list[int]]:
        with lock:
            return None if stop.is_set() else next(batches, None)

    def inline(batch: list[int]) -> None:
        for i in batch:
            if stop.is_set():
                return
            done(i, fallback(items[i][0]))

    def drive() -> None:
        proc = _start_worker()
        if proc is None:
            while (batch := take()) is not None:
                inline(batch)
            return
        with lock:
            procs.append(proc)
        assert proc.stdin is not None and proc.stdout is not None
        pending: deque[list[int]] = deque()
        broken = False
        try:
            while True:
                while not broken and len(pending) < 2 and (batch := take()) is not None:
                    try:
                        proc.stdin.write(b"".join(os.fsencode(items[i][0]).hex().encode() + b"\n" for i in batch))
                        proc.stdin.flush()
                    except OSError:
                        broken = True
                    pending.append(batch)
                if not pending:
                    return
                batch = pending.popleft()
                for k, i in enumerate(batch):
                    line = b"" if broken else proc.stdout.readline()
                    if not line.endswith(b"\n"):  # the worker died: finish its work here
                        broken = True
                        inline(batch[k:])
                        break
                    if line.startswith(b"!"):
                        code, _, msg = line[1:-1].partition(b" ")
                        raise WorkerOSError(int(code), msg.decode("utf-8", "replace"), items[i][0])
                    done(i, line[:-1].decode())
                if broken:
                    for rest in pending:
                        inline(rest)
                    pending.clear()
                    while (batch := take()) is not None:
                        inline(batch)
                    return
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flyimage-hash")
    try:
        futures = [pool.submit(drive) for _ in range(workers)]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in finished:
            f.result()  # the first failure, if any, stops the others below
        for f in futures:
            f.result()
    except BaseException:
        stop.set()
        with lock:
            for proc in procs:
                proc.kill()
        raise
    finally:
        pool.shutdown(wait=True)
        with lock:
            for proc in procs:
                proc.stdout.close()
                proc.wait()
