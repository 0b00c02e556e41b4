"""Build contexts: which files Docker would send, and a content hash over them.

The file list comes from docker-py's own ``.dockerignore`` matching
(:func:`docker.utils.build.exclude_paths`), so what we hash is exactly what the
classic builder sends. Hashing streams every file through SHA-256 and keeps a
persistent stat cache, so an unchanged tree is re-hashed from ``stat`` alone.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from docker.utils.build import exclude_paths

from .errors import ContextError

#: Chunk size for streaming files through the hash (never read a file whole).
CHUNK = 1 << 20
#: Files modified this recently are never trusted from the stat cache: a write in the
#: same clock tick as our stat would otherwise go unnoticed ("racy git" problem).
RACY_SECONDS = 2.0
_CACHE_VERSION = 1


def cache_dir() -> Path:
    """Folder of the persistent stat cache (``$PREFECT_FLYIMAGE_CACHE_DIR`` or XDG cache)."""
    env = os.environ.get("PREFECT_FLYIMAGE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "prefect-flyimage"


def read_dockerignore(root: Path) -> list[str]:
    """The ``.dockerignore`` patterns of ``root``, parsed the way docker-py parses them."""
    path = root / ".dockerignore"
    if not path.exists():
        return []
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


def _len_prefixed(*parts: bytes) -> bytes:
    # Length-prefixing makes the encoding injective: ("ab","c") != ("a","bc").
    return b"".join(len(p).to_bytes(8, "big") + p for p in parts)


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
        return _len_prefixed(
            self.path.encode("utf-8", "surrogateescape"),
            self.kind.encode(),
            b"%o" % self.mode,
            self.digest.encode(),
        )


class StatCache:
    """A persistent map from (path, size, mtime_ns, inode, ctime_ns) to the file's SHA-256.

    Stored as one JSON file per context root under :func:`cache_dir`. Safe to lose:
    a missing or corrupt cache only means files are hashed again.
    """

    def __init__(self, root: Path, directory: Optional[Path] = None) -> None:
        self._root = str(root)
        key = hashlib.sha256(self._root.encode()).hexdigest()[:24]
        self.file = (directory or cache_dir()) / f"stat-{key}.json"
        self._entries: dict[str, list] = {}
        self._listing: dict[str, Any] = {}
        self._dirty = False
        self._lock = threading.Lock()
        try:
            data = json.loads(self.file.read_text())
            if data.get("version") == _CACHE_VERSION and data.get("root") == self._root:
                self._entries = data["entries"]
                self._listing = data.get("listing") or {}
        except (OSError, ValueError, KeyError, TypeError):
            pass

    @staticmethod
    def _sig(st: os.stat_result) -> list:
        return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]

    def get(self, rel: str, st: os.stat_result) -> Optional[str]:
        """The cached digest of ``rel`` if its stat signature is unchanged and not racy."""
        hit = self._entries.get(rel)
        if hit is None or hit[:4] != self._sig(st):
            return None
        return hit[4]

    def put(self, rel: str, st: os.stat_result, digest: str) -> None:
        """Remember ``digest`` for ``rel``, unless the file changed too recently to trust."""
        if time.time() - st.st_mtime_ns / 1e9 < RACY_SECONDS:
            return
        with self._lock:
            self._entries[rel] = self._sig(st) + [digest]
            self._dirty = True

    def listing(self, key: str, root: Path) -> Optional[list[str]]:
        """The cached file list for ``key`` if no folder it walked has changed since."""
        hit = self._listing.get("key") == key and self._listing
        if not hit:
            return None
        for rel, mtime_ns in hit["dirs"].items():
            try:
                if os.stat(root / rel).st_mtime_ns != mtime_ns:
                    return None
            except OSError:
                return None
        return list(hit["paths"])

    def put_listing(self, key: str, root: Path, paths: list[str]) -> None:
        """Remember the file list; keyed by the folders' mtimes (entries added, removed or renamed)."""
        dirs: dict[str, int] = {}
        now = time.time()
        for rel in [""] + paths:
            full = root / rel
            if rel and not (full.is_dir() and not full.is_symlink()):
                continue
            mtime_ns = os.stat(full).st_mtime_ns
            if now - mtime_ns / 1e9 < RACY_SECONDS:
                return  # a folder changed just now: don't trust a cache keyed on its mtime
            dirs[rel] = mtime_ns
        self._listing = {"key": key, "dirs": dirs, "paths": paths}
        self._dirty = True

    def prune(self, keep: Iterable[str]) -> None:
        """Forget entries for files no longer in the context."""
        keep = set(keep)
        stale = [k for k in self._entries if k not in keep]
        for k in stale:
            del self._entries[k]
        self._dirty = self._dirty or bool(stale)

    def save(self) -> None:
        """Write the cache atomically; failures are ignored (the cache is an optimisation)."""
        if not self._dirty:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.file.parent, prefix=".stat-")
            with os.fdopen(fd, "w") as fh:
                json.dump(
                    {"version": _CACHE_VERSION, "root": self._root, "entries": self._entries, "listing": self._listing}, fh
                )
            os.replace(tmp, self.file)
            self._dirty = False
        except OSError:
            pass


def hash_file(path: Path) -> str:
    """SHA-256 of a file, streamed in chunks."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
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
        self._entries: Optional[list[ContextEntry]] = None
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
        found = self._list(patterns)
        if cacheable:
            self._cache.put_listing(key, self.root, found)
        return found

    def _list(self, patterns: list[str]) -> list[str]:
        try:
            found = exclude_paths(str(self.root), list(patterns), dockerfile=self.dockerfile)
        except PermissionError as exc:
            raise ContextError(f"cannot list {exc.filename!r} in build context {str(self.root)!r}: permission denied", exc.filename) from None
        except OSError as exc:
            raise ContextError(f"cannot list build context {str(self.root)!r}: {exc}", exc.filename) from None
        return sorted(p.replace(os.sep, "/") for p in found)

    def entries(self) -> list[ContextEntry]:
        """Every context entry with its digest (computed once per instance)."""
        if self._entries is None:
            self._entries = self._scan()
        return self._entries

    def _scan(self) -> list[ContextEntry]:
        cache = self._cache
        stats: list[tuple[str, os.stat_result]] = []
        root = str(self.root)
        join = os.path.join  # plain strings: pathlib costs more than the stat itself here
        for rel in self.paths():
            try:
                st = os.lstat(join(root, rel))
            except FileNotFoundError:
                continue  # vanished between listing and stat: Docker would not send it either
            stats.append((rel, st))

        todo: list[tuple[int, str, os.stat_result]] = []
        digests: dict[int, str] = {}
        for i, (rel, st) in enumerate(stats):
            if stat.S_ISREG(st.st_mode):
                cached = cache.get(rel, st) if cache else None
                if cached is None:
                    todo.append((i, rel, st))
                else:
                    digests[i] = cached
            elif stat.S_ISLNK(st.st_mode):
                digests[i] = self._link_digest(rel)
            elif stat.S_ISDIR(st.st_mode):
                digests[i] = ""
            else:
                raise ContextError(
                    f"{rel!r} in build context {str(self.root)!r} is not a regular file, folder or symlink "
                    "(a socket, FIFO or device); remove it or add it to .dockerignore",
                    self.root / rel,
                )

        def work(item: tuple[int, str, os.stat_result]) -> tuple[int, str]:
            i, rel, st = item
            try:
                digest = hash_file(self.root / rel)
            except PermissionError:
                raise ContextError(
                    f"cannot read {rel!r} in build context {str(self.root)!r}: permission denied; "
                    "fix its permissions or add it to .dockerignore",
                    self.root / rel,
                ) from None
            except OSError as exc:
                raise ContextError(f"cannot read {rel!r} in build context {str(self.root)!r}: {exc.strerror}", self.root / rel) from None
            if cache:
                cache.put(rel, st, digest)
            return i, digest

        if todo:
            # hashlib releases the GIL on large buffers, so threads overlap I/O and hashing.
            workers = min(4, (os.cpu_count() or 1) + 1, len(todo))
            if workers <= 1:
                results = map(work, todo)
                digests.update(results)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    digests.update(pool.map(work, todo))

        entries = []
        for i, (rel, st) in enumerate(stats):
            kind = "file" if stat.S_ISREG(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else "dir"
            entries.append(ContextEntry(rel, kind, stat.S_IMODE(st.st_mode), digests[i], st.st_size if kind == "file" else 0))
        if cache:
            cache.prune(rel for rel, _ in stats)
            cache.save()
        return entries

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
        """SHA-256 over all entries (length-prefixed, sorted by path)."""
        h = hashlib.sha256(b"prefect-flyimage-context-v1\0")
        for entry in self.entries():
            h.update(entry.encode())
        return h.hexdigest()

    def total_size(self) -> int:
        """Bytes of regular files in the context."""
        return sum(e.size for e in self.entries())
