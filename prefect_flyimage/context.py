"""Build contexts: which files Docker would send, and a content hash over them.

The file list follows docker-py's own ``.dockerignore`` rules
(:func:`docker.utils.build.exclude_paths`, compiled once in :mod:`._dockerignore`), so
what we hash is exactly what the classic builder sends. Hashing streams every file
through SHA-256 (on worker processes when the cold work is large, :mod:`._filehash`) and
keeps a persistent stat cache (:mod:`._statcache`), so an unchanged tree is re-hashed
from ``stat`` alone.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from ._dockerignore import list_context
from ._encoding import length_prefixed
from ._filehash import CHUNK, cpu_count, hash_file, hash_in_processes
from ._statcache import RACY_SECONDS, StatCache, cache_dir
from .errors import ContextError

__all__ = ["BuildContext", "ContextEntry", "StatCache", "CHUNK", "RACY_SECONDS", "cache_dir", "check_context_dir",
           "entries_digest", "hash_file", "read_dockerignore", "read_ignore_file"]

#: Cold work at least this large goes to worker processes (one per CPU); smaller trees
#: are hashed on threads, where starting interpreters costs more than it saves (2 cores:
#: 500 small files 17 ms on threads, 45 ms on processes; 2,000 files 145 ms vs 86 ms).
PROCESS_MIN_BYTES = 64 << 20
PROCESS_MIN_FILES = 1000
#: Up to this many changed entries (or an eighth of the tree) are re-read on the quick path.
_FEW_CHANGED = 64
_NO_DIGEST_HEX = "0" * 64  # a folder's digest in the stat cache's hex dump


def read_dockerignore(root: Path) -> list[str]:
    """The ``.dockerignore`` patterns of ``root``, parsed the way docker-py parses them."""
    path = root / ".dockerignore"
    return read_ignore_file(path) if path.exists() else []


def read_ignore_file(path: Path) -> list[str]:
    """The patterns of a ``.dockerignore``-style file (blank and ``#`` lines dropped, like docker-py)."""
    lines = path.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _iterable(value: object) -> Sequence[object]:
    try:
        return tuple(value)  # type: ignore[call-overload]
    except TypeError:
        return (object(),)  # not iterable: fails the element check


def check_context_dir(context: Path | str) -> Path:
    """Return ``context`` as an absolute path, or raise :class:`ContextError` saying what is wrong."""
    if not isinstance(context, (str, os.PathLike)) or not os.fspath(context):
        raise ContextError(f"build context must be a folder path (str or pathlib.Path), not {context!r:.60}", context)
    path = Path(context).expanduser()
    try:
        path = path.resolve(strict=True)
    except FileNotFoundError:
        raise ContextError(f"build context {str(context)!r} does not exist", path) from None
    except (RuntimeError, OSError) as exc:  # RuntimeError: symlink loop on older Pythons
        raise ContextError(f"build context {str(context)!r} cannot be resolved: {exc}", path) from None
    if not path.is_dir():
        raise ContextError(
            f"build context {str(context)!r} is not a directory; pass the folder that holds the files",
            path,
        )
    return path


@dataclass(frozen=True)
class ContextEntry:
    """One entry of a build context as Docker would archive it."""

    path: str  #: relative path, '/'-separated
    kind: str  #: "file", "dir" or "symlink"
    mode: int  #: permission bits (what ends up in the image)
    digest: str  #: sha256 of the contents (file), of the link target (symlink), "" for dirs
    size: int

    def encode(self) -> bytes:
        """Canonical, length-prefixed bytes of this entry for hashing."""
        return _encode_entry(self.path, self.kind, self.mode, self.digest)


def _encode_entry(path: str, kind: str, mode: int, digest: str) -> bytes:
    return length_prefixed(path, kind, b"%o" % mode, digest)


#: Domain string that starts every context digest (pinned by ``tests/unit/test_hash_golden.py``).
_CONTEXT_V1 = b"prefect-flyimage-context-v1\0"


def entries_digest(entries: Iterable[ContextEntry]) -> str:
    """The context digest of ``entries`` (sorted by path), as :meth:`BuildContext.digest`
    computes it: for contexts assembled from entries rather than scanned from a folder."""
    h = hashlib.sha256(_CONTEXT_V1)
    for entry in entries:
        h.update(entry.encode())
    return h.hexdigest()


class BuildContext:
    """The files Docker sends for a build of ``root`` with ``dockerfile``, and their hash.

    Args:
        root: the context folder.
        dockerfile: the Dockerfile's path relative to ``root`` (docker always sends it,
            even when ``.dockerignore`` excludes it), or ``None`` when the Dockerfile
            lives outside the context.
        use_cache: keep and consult the persistent stat cache (off for throw-away
            folders, which would otherwise leave one cache file each).
        extra_patterns: ``.dockerignore`` patterns applied before the folder's own file
            (so a ``!`` line in the folder can re-include what they exclude).
    """

    def __init__(
        self,
        root: Path | str,
        dockerfile: Optional[str] = "Dockerfile",
        *,
        use_cache: bool = True,
        extra_patterns: Sequence[str] = (),
    ) -> None:
        if dockerfile is not None and (not isinstance(dockerfile, str) or not dockerfile):
            raise ContextError(f"dockerfile must be a path relative to the context or None, not {dockerfile!r:.60}")
        if isinstance(extra_patterns, str) or not all(isinstance(p, str) for p in _iterable(extra_patterns)):
            raise ContextError(f"extra_patterns must be a sequence of .dockerignore patterns, not {extra_patterns!r:.60}")
        self.root = check_context_dir(root)
        self.dockerfile = dockerfile
        self.extra_patterns = tuple(extra_patterns)
        self.use_cache = use_cache
        self._rows: Optional[list[list[Any]]] = None  # [path, kind, mode, digest, size] per entry
        self._entries: Optional[list[ContextEntry]] = None
        self._digest: Optional[str] = None
        self._paths: Optional[list[str]] = None
        self._cache: Optional[StatCache] = StatCache(self.root) if use_cache else None

    def paths(self) -> list[str]:
        """Relative paths (files, folders and links) that the build would send, sorted.

        docker-py's matcher costs a regex test per file and pattern; with the stat
        cache on, the list is reused while no walked folder's mtime has changed.
        Patterns with ``!`` exceptions make docker-py walk excluded folders too, so
        those trees are always listed afresh.
        """
        patterns = [*self.extra_patterns, *read_dockerignore(self.root)]
        cacheable = self._cache is not None and not any(p.startswith("!") for p in patterns)
        key = json.dumps([patterns, self.dockerfile])
        if cacheable:
            cached = self._cache.listing(key, self.root)
            if cached is not None:
                return cached
        walked: list[str] = []
        found = self._list(patterns, walked)
        if cacheable:
            self._cache.put_listing(key, self.root, found, walked)
        return found

    def _listed(self) -> list[str]:
        """:meth:`paths`, listed once for this instance's scan."""
        if self._paths is None:
            self._paths = self.paths()
        return self._paths

    def _list(self, patterns: list[str], walked: Optional[list[str]] = None) -> list[str]:
        try:
            return list_context(str(self.root), patterns, self.dockerfile, walked)
        except PermissionError as exc:
            raise ContextError(f"cannot list {exc.filename!r} in build context {str(self.root)!r}: permission denied", exc.filename) from None
        except OSError as exc:
            raise ContextError(f"cannot list build context {str(self.root)!r}: {exc}", exc.filename) from None

    def entries(self) -> list[ContextEntry]:
        """Every context entry with its digest (computed once per instance)."""
        if self._entries is None:
            self._entries = [ContextEntry(*row) for row in self._scanned()]
        return self._entries

    def _scanned(self) -> list[list[Any]]:
        if self._rows is None:
            self._rows = self._scan()
        return self._rows

    def _stat_all(self, paths: list[str]) -> Optional[list[tuple[int, int, int, int, int]]]:
        """The signature of every path (see :func:`._statcache._signature`), or ``None`` when one
        vanished or is not a file, folder or link (the full scan then says what to do)."""
        # lstat relative to an open root: the kernel walks only the relative part (~15% faster).
        root_fd = os.open(self.root, os.O_RDONLY) if os.stat in os.supports_dir_fd else None
        names = paths if root_fd is not None else [os.path.join(str(self.root), rel) for rel in paths]
        stat_ = os.stat
        sigs: list[tuple[int, int, int, int, int]] = []
        add = sigs.append
        try:
            for name in names:
                st = stat_(name, dir_fd=root_fd, follow_symlinks=False)
                mode = st.st_mode
                kind = mode & 0o170000
                if kind == 0o100000 or kind == 0o120000:  # regular file, symlink
                    add((st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, mode))
                elif kind == 0o040000:
                    add((0, 0, 0, 0, mode))
                else:
                    return None
        except FileNotFoundError:
            return None
        finally:
            if root_fd is not None:
                os.close(root_fd)
        return sigs

    def _unchanged(self) -> Optional[str]:
        """The context digest from the last scan and one ``lstat`` per entry, when the
        listing is the last scan's: every signature as then gives the last digest (the
        no-op path: no file read, no per-entry work beyond the ``lstat``); a few changed
        entries are read again and the digest re-encoded. ``None``: the full scan decides."""
        cache = self._cache
        if cache is None or not cache.paths:
            return None
        paths = self._listed()
        if paths != cache.paths:
            return None
        sigs = self._stat_all(paths)
        if sigs is None:
            return None
        for rel, sig in zip(paths, sigs):
            if sig[4] & 0o170000 == 0o120000:
                self._link_digest(rel)  # a link's target may have become a loop since: say so as a scan would
        if cache.tree and sigs == cache.sigs:
            cache.save()  # the listing may have been refreshed
            return cache.tree
        changed = [i for i, (now, then) in enumerate(zip(sigs, cache.sigs)) if now != then]
        if len(changed) > max(_FEW_CHANGED, len(sigs) // 8):
            return None  # much has changed: the full scan (and its cold hashing) decides
        rows = self._rows_for(paths, sigs)
        todo: list[tuple[int, str, os.stat_result]] = []
        for i in changed:
            rel, kind = paths[i], rows[i][1]
            rows[i][3] = ""  # a folder now, or read below
            if kind == "file":
                try:
                    todo.append((i, rel, os.lstat(self.root / rel)))
                except FileNotFoundError:
                    return None  # vanished meanwhile: the full scan drops it
            elif kind == "symlink":
                rows[i][3] = self._link_digest(rel)
        if todo:
            self._hash_cold(todo, rows)
        self._rows = rows
        digest = _digest_rows(rows)
        cache.put_scan(rows, sigs, digest)
        cache.save()
        return digest

    def _rows_for(self, paths: list[str], sigs: list[tuple[int, int, int, int, int]]) -> list[list[Any]]:
        """Rows of ``paths`` with signatures ``sigs`` and the cache's digests (aligned with them)."""
        cache = self._cache
        assert cache is not None
        kinds = {0o100000: "file", 0o040000: "dir", 0o120000: "symlink"}
        hexes = cache.digests_hex()  # one conversion, then slices: 20,000 bytes.hex() calls cost more
        return [
            [rel, kinds[sig[4] & 0o170000], sig[4] & 0o7777, hexes[64 * i : 64 * i + 64].replace(_NO_DIGEST_HEX, ""),
             sig[0] if sig[4] & 0o170000 == 0o100000 else 0]
            for i, (rel, sig) in enumerate(zip(paths, sigs))
        ]

    def _rows_from_cache(self) -> list[list[Any]]:
        cache = self._cache
        assert cache is not None
        return self._rows_for(cache.paths, cache.sigs)

    def _scan(self) -> list[list[Any]]:
        # One pass of lstat + stat-cache lookups: on a warm tree this loop is the whole cost.
        cache = self._cache
        if cache is not None and self._digest is not None and cache.tree == self._digest:
            return self._rows_from_cache()  # digest() found the tree unchanged: the cache holds every row
        lookup = cache.lookup if cache else None
        S_ISREG, S_ISDIR, S_ISLNK, S_IMODE = stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK, stat.S_IMODE
        rows: list[list[Any]] = []  # [rel, kind, mode, digest, size]
        sigs: list[tuple[int, int, int, int, int]] = []
        todo: list[tuple[int, str, os.stat_result]] = []
        paths = self._listed()
        root_fd = os.open(self.root, os.O_RDONLY) if os.stat in os.supports_dir_fd else None
        names = paths if root_fd is not None else [os.path.join(str(self.root), rel) for rel in paths]
        stat_ = os.stat
        try:
            for rel, name in zip(paths, names):
                try:
                    st = stat_(name, dir_fd=root_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # vanished between listing and stat: Docker would not send it either
                mode = st.st_mode
                if S_ISREG(mode):
                    sig = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, mode)
                    hit = lookup(rel, sig) if lookup else None
                    if hit is not None:
                        rows.append([rel, "file", S_IMODE(mode), hit, st.st_size])
                    else:
                        todo.append((len(rows), rel, st))
                        rows.append([rel, "file", S_IMODE(mode), "", st.st_size])
                elif S_ISDIR(mode):
                    sig = (0, 0, 0, 0, mode)
                    rows.append([rel, "dir", S_IMODE(mode), "", 0])
                elif S_ISLNK(mode):
                    sig = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, mode)
                    rows.append([rel, "symlink", S_IMODE(mode), self._link_digest(rel), 0])
                else:
                    raise ContextError(
                        f"{rel!r} in build context {str(self.root)!r} is not a regular file, folder or symlink "
                        "(a socket, FIFO or device); remove it or add it to .dockerignore",
                        self.root / rel,
                    )
                sigs.append(sig)
        finally:
            if root_fd is not None:
                os.close(root_fd)

        if todo:
            self._hash_cold(todo, rows)
        if cache:
            self._digest = _digest_rows(rows)
            cache.put_scan(rows, sigs, self._digest)
            cache.save()
        return rows

    def _read_error(self, rel: str, exc: OSError) -> ContextError:
        if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
            return ContextError(
                f"cannot read {rel!r} in build context {str(self.root)!r}: permission denied; "
                "fix its permissions or add it to .dockerignore",
                self.root / rel,
            )
        return ContextError(f"cannot read {rel!r} in build context {str(self.root)!r}: {exc.strerror}", self.root / rel)

    def _hash_cold(self, todo: list[tuple[int, str, os.stat_result]], rows: list[list[Any]]) -> None:
        """Hash files the stat cache could not answer for, into ``rows[i][3]``."""

        def work(item: tuple[int, str, os.stat_result]) -> None:
            i, rel, _ = item
            try:
                digest = hash_file(self.root / rel)
            except OSError as exc:
                raise self._read_error(rel, exc) from None
            rows[i][3] = digest

        cpus = cpu_count()
        if cpus > 1 and (len(todo) >= PROCESS_MIN_FILES or sum(st.st_size for _, _, st in todo) >= PROCESS_MIN_BYTES):
            # Per-file Python work holds the GIL, so threads reach about one core on many
            # files; bare worker interpreters scale with the cores (see _filehash).
            root = str(self.root)
            items = [(os.path.join(root, rel), st.st_size) for _, rel, st in todo]

            def done(k: int, digest: str) -> None:
                rows[todo[k][0]][3] = digest

            try:
                hash_in_processes(items, min(cpus, 8), done, lambda path: hash_file(Path(path)))
            except OSError as exc:
                rel = os.path.relpath(exc.filename, root) if exc.filename else "?"
                raise self._read_error(rel, exc) from None
            return
        # Few or small files: threads (hashlib releases the GIL on large buffers).
        workers = min(4, cpus + 1, len(todo))
        if workers <= 1:
            for item in todo:
                work(item)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(work, todo):  # re-raises the first failure
                    pass

    def _link_digest(self, rel: str) -> str:
        full = self.root / rel
        target = os.readlink(full)
        try:
            os.stat(full)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ContextError(
                    f"symlink loop at {rel!r} in build context {str(self.root)!r} (points to {target!r}); "
                    "remove the link or add it to .dockerignore",
                    full,
                ) from None
            # A dangling link is legal: Docker archives the link itself.
        return hashlib.sha256(target.encode("utf-8", "surrogateescape")).hexdigest()

    def digest(self) -> str:
        """SHA-256 over all entries (length-prefixed, sorted by path); computed once per instance."""
        if self._digest is None:
            if self._rows is None:
                self._digest = self._unchanged()
            if self._digest is None:
                rows = self._scanned()
                if self._digest is None:  # no stat cache: _scan did not compute it
                    self._digest = _digest_rows(rows)
        return self._digest

    def total_size(self) -> int:
        """Bytes of regular files in the context."""
        return sum(row[4] for row in self._scanned())


_LEN = struct.Struct(">Q").pack
_KINDS = {k: _LEN(len(k)) + k.encode() for k in ("file", "dir", "symlink")}
_SHA_LEN = _LEN(64)


def _digest_rows(rows: list[list[Any]]) -> str:
    """:meth:`BuildContext.digest` of ``rows``: the bytes of :meth:`ContextEntry.encode` per
    entry, built with the constant parts (kind, mode, digest length) encoded once."""
    h = hashlib.sha256(_CONTEXT_V1)
    modes: dict[int, bytes] = {}
    parts: list[bytes] = []
    add = parts.extend
    for path, kind, mode, digest, _ in rows:
        raw = path.encode("utf-8", "surrogateescape")
        m = modes.get(mode)
        if m is None:
            m = modes[mode] = length_prefixed(b"%o" % mode)
        add((_LEN(len(raw)), raw, _KINDS[kind], m, _SHA_LEN + digest.encode() if len(digest) == 64 else length_prefixed(digest)))
    h.update(b"".join(parts))
    return h.hexdigest()
