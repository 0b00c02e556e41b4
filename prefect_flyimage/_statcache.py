"""The persistent stat cache behind :class:`~prefect_flyimage.context.BuildContext`.

One binary file per context root remembers each entry's ``lstat`` signature and SHA-256
and the context digest they gave, so an unchanged tree is re-hashed from ``stat`` alone.
Split from :mod:`.context`, which re-exports :class:`StatCache`, :data:`RACY_SECONDS`
and :func:`cache_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any, Iterable, Optional

__all__ = ["RACY_SECONDS", "StatCache", "cache_dir"]

#: Files modified this recently are never trusted from the stat cache: a write in the
#: same clock tick as our stat would otherwise go unnoticed ("racy git" problem).
RACY_SECONDS = 2.0


def cache_dir() -> Path:
    """Folder of the persistent stat cache (``$PREFECT_FLYIMAGE_CACHE_DIR`` or XDG cache)."""
    env = os.environ.get("PREFECT_FLYIMAGE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "prefect-flyimage"



class StatCache:
    """The last scan of a context root: each entry's stat signature and SHA-256, and the
    context digest they gave.

    An unchanged tree is answered from ``lstat`` alone: when the listing and every
    entry's signature (size, mtime_ns, inode, ctime_ns, mode) equal the last scan's, the
    last scan's context digest is the digest (:attr:`tree`); otherwise each file whose
    signature is unchanged keeps its SHA-256 (:meth:`lookup`). Entries modified too
    recently to trust (:data:`RACY_SECONDS`) are stored with a signature that never matches.

    One binary file per context root under :func:`cache_dir` (a JSON header, then the
    paths, signatures and digests as flat arrays: loading 20,000 entries costs a few ms,
    where a JSON map took 30-50 ms). Safe to lose: a missing or corrupt cache only means
    files are hashed again.
    """

    _MAGIC = b"flyimage-stat-2\n"

    def __init__(self, root: Path, directory: Optional[Path] = None) -> None:
        self._root = str(root)
        key = hashlib.sha256(self._root.encode()).hexdigest()[:24]
        self.file = (directory or cache_dir()) / f"stat-{key}.bin"
        self.paths: list[str] = []  #: the last scan's entries, sorted
        self.sigs: list[tuple[int, int, int, int, int]] = []  #: their signatures (see :func:`_signature`)
        self._digests = b""  # 32 bytes per entry (zeros for folders)
        self.tree = ""  #: the context digest of the last scan ("" if unknown)
        self._listing: dict[str, Any] = {}  # {"key", "dirs", "paths"}: the last listing and its folders' mtimes
        self._index: Optional[dict[str, int]] = None
        self._dirty = False
        try:
            self._load(self.file.read_bytes())
        except (OSError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError, OverflowError):
            self.paths, self.sigs, self._digests, self.tree, self._listing = [], [], b"", "", {}

    def _load(self, data: bytes) -> None:
        if not data.startswith(self._MAGIC):
            return
        pos = len(self._MAGIC)
        (size,) = _U64.unpack_from(data, pos)
        pos += 8
        header = json.loads(data[pos : pos + size])
        pos += size
        if header.get("root") != self._root or header.get("byteorder") != sys.byteorder:
            return
        n = header["n"]
        sections = []
        for length in header["sections"]:  # paths, listing paths, signatures, inodes, digests
            sections.append(data[pos : pos + length])
            pos += length
        names, listed, packed, inodes, digests = sections
        if pos != len(data) or len(digests) != 32 * n:
            raise ValueError("truncated stat cache")
        paths = _split_paths(names, n)
        q = array("q")
        q.frombytes(packed)
        ino = array("Q")
        ino.frombytes(inodes)
        if len(q) != 4 * n or len(ino) != n:
            raise ValueError("truncated stat cache")
        self.sigs = list(zip(q[0::4], q[1::4], ino, q[2::4], q[3::4]))
        self.paths, self._digests, self.tree = paths, digests, header.get("tree") or ""
        listing = header.get("listing")
        if listing:
            same = listing.pop("same", False)
            listing["paths"] = paths if same else _split_paths(listed, None)
            self._listing = listing

    def lookup(self, rel: str, sig: tuple[int, int, int, int, int]) -> Optional[str]:
        """The SHA-256 of ``rel`` from the last scan, if its signature is unchanged (and was trusted)."""
        if self._index is None:
            self._index = {p: i for i, p in enumerate(self.paths)}
        i = self._index.get(rel)
        if i is None or self.sigs[i] != sig:
            return None
        return self._digests[32 * i : 32 * i + 32].hex()

    def get(self, rel: str, st: os.stat_result) -> Optional[str]:
        """The cached digest of ``rel`` if its stat signature is unchanged and not racy."""
        return self.lookup(rel, _signature(st))

    def digest_at(self, i: int) -> str:
        """The stored SHA-256 of entry ``i`` ("" for a folder)."""
        raw = self._digests[32 * i : 32 * i + 32]
        return raw.hex() if any(raw) else ""

    def digests_hex(self) -> str:
        """Every stored SHA-256 in hex, 64 characters per entry (zeros for folders)."""
        return self._digests.hex()

    def put_scan(self, rows: list[list[Any]], sigs: list[tuple[int, int, int, int, int]], tree: str) -> None:
        """Remember a whole scan: ``rows`` ([path, kind, mode, digest, size]), their signatures
        and the context digest. Files changed in the last :data:`RACY_SECONDS` are stored
        untrusted (never matched)."""
        newest = time.time_ns() - int(RACY_SECONDS * 1e9)
        stored = [
            sig if row[1] == "dir" or sig[1] < newest else _UNTRUSTED
            for row, sig in zip(rows, sigs)
        ]
        paths = [row[0] for row in rows]
        digests = b"".join([bytes.fromhex(row[3]) if row[3] else _NO_DIGEST for row in rows])
        if stored == self.sigs and paths == self.paths and digests == self._digests and tree == self.tree:
            return
        self.paths, self.sigs, self._digests, self.tree, self._index = paths, stored, digests, tree, None
        self._dirty = True

    def listing(self, key: str, root: Path) -> Optional[list[str]]:
        """The cached file list for ``key`` if no folder it walked has changed since."""
        hit = self._listing.get("key") == key and self._listing
        if not hit:
            return None
        base = str(root)
        stat_ = os.stat
        join = os.path.join
        for rel, mtime_ns in hit["dirs"].items():
            try:
                if stat_(join(base, rel) if rel else base).st_mtime_ns != mtime_ns:
                    return None
            except OSError:
                return None
        return list(hit["paths"])

    def put_listing(self, key: str, root: Path, paths: list[str], walked: Iterable[str]) -> None:
        """Remember the file list, keyed by the mtimes of the ``walked`` folders (entries added, removed or renamed)."""
        dirs: dict[str, int] = {}
        now = time.time()
        base = str(root)
        for rel in walked:
            try:
                mtime_ns = os.stat(os.path.join(base, rel) if rel else base).st_mtime_ns
            except OSError:
                return
            if now - mtime_ns / 1e9 < RACY_SECONDS:
                return  # a folder changed just now: don't trust a cache keyed on its mtime
            dirs[rel] = mtime_ns
        self._listing = {"key": key, "dirs": dirs, "paths": paths}
        self._dirty = True

    def save(self) -> None:
        """Write the cache atomically; failures are ignored (the cache is an optimisation)."""
        if not self._dirty:
            return
        try:
            n = len(self.paths)
            names = "\0".join(self.paths).encode("utf-8", "surrogateescape")
            listing: Optional[dict[str, Any]] = None
            listed = b""
            if self._listing:
                same = self._listing["paths"] == self.paths
                listing = {"key": self._listing["key"], "dirs": self._listing["dirs"], "same": same}
                if not same:
                    listed = "\0".join(self._listing["paths"]).encode("utf-8", "surrogateescape")
            q = array("q")
            ino = array("Q")
            for size, mtime_ns, inode, ctime_ns, mode in self.sigs:
                q.extend((size, mtime_ns, ctime_ns, mode))
                ino.append(inode)
            sections = [names, listed, q.tobytes(), ino.tobytes(), self._digests]
            header = json.dumps({
                "root": self._root, "byteorder": sys.byteorder, "n": n, "tree": self.tree, "listing": listing,
                "sections": [len(x) for x in sections],
            }).encode()
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.file.parent, prefix=".stat-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"".join([self._MAGIC, _U64.pack(len(header)), header, *sections]))
            os.replace(tmp, self.file)
            self._dirty = False
        except (OSError, OverflowError, ValueError):
            pass


#: Signature stored for an entry too recently modified to trust: no ``lstat`` gives it.
_UNTRUSTED = (-1, -1, 0, -1, -1)
_NO_DIGEST = bytes(32)
_U64 = struct.Struct("<Q")


def _split_paths(blob: bytes, n: Optional[int]) -> list[str]:
    if not blob:
        paths: list[str] = []
    else:
        paths = blob.decode("utf-8", "surrogateescape").split("\0")
    if n is not None and len(paths) != n:
        raise ValueError("stat cache paths do not match its entries")
    return paths


def _signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What must be unchanged for an entry's stored digest to hold. A folder enters the
    context digest by path and mode alone: its mtime (entries added, even ignored ones)
    matters only to the listing, which checks it itself."""
    if stat.S_ISDIR(st.st_mode):
        return (0, 0, 0, 0, st.st_mode)
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, st.st_mode)
