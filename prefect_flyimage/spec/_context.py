"""The build context of an :class:`~prefect_flyimage.spec.Image`, described instead of copied.

Layers say which local files go where in the context (``LayerContext`` records their
staging calls). :class:`SpecContext` hashes those files where they are -- folders through
their persistent stat cache -- so an image's identity (its plan's content tag) costs no
copy. Only a build stages the context into a temporary folder (:meth:`SpecContext.stage`).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

from ..context import BuildContext, ContextEntry, entries_digest, hash_file
from ..errors import ContextError

__all__ = ["SpecContext"]

Call = tuple[str, tuple[object, ...]]
#: Mode recorded for the folders a context adds around its parts (staging sets it too).
DIR_MODE = 0o755


def _entry(path: str, full: Path) -> ContextEntry:
    try:
        st = os.lstat(full)
    except OSError as exc:
        raise ContextError(f"cannot read {str(full)!r}: {exc.strerror or exc}", full) from None
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(full)
        return ContextEntry(path, "symlink", mode, hashlib.sha256(target.encode("utf-8", "surrogateescape")).hexdigest(), 0)
    if stat.S_ISDIR(st.st_mode):
        return ContextEntry(path, "dir", mode, "", 0)
    try:
        return ContextEntry(path, "file", mode, hash_file(full), st.st_size)
    except OSError as exc:
        raise ContextError(f"cannot read {str(full)!r}: {exc.strerror or exc}", full) from None


def _under(rel: str, path: str) -> str:
    return path if rel in ("", ".") else f"{rel}/{path}"


class SpecContext:
    """A build context assembled from recorded staging calls (see ``LayerContext.record``).

    Has the interface of :class:`~prefect_flyimage.context.BuildContext` that a
    :class:`~prefect_flyimage.plan.BuildPlan` needs (``entries``, ``digest``,
    ``total_size``), plus :meth:`stage`.
    """

    def __init__(self, calls: Sequence[Call], root: Optional[BuildContext] = None) -> None:
        self.calls = list(calls)
        self.root = root  #: a folder that is the context's root (a Dockerfile's folder), if any
        self.staged_at: Optional[Path] = None  #: where :meth:`stage` last put it, if kept
        self._entries: Optional[list[ContextEntry]] = None

    def entries(self) -> list[ContextEntry]:
        """Every entry, with digests, sorted by path (computed once)."""
        if self._entries is None:
            found: dict[str, ContextEntry] = {}
            if self.root is not None:
                for e in self.root.entries():
                    found[e.path] = e
            for name, args in self.calls:
                for e in self._entries_of(name, args):
                    found[e.path] = e
            for path in list(found):
                for parent in PurePosixPath(path).parents:
                    key = parent.as_posix()
                    if key != "." and key not in found:
                        found[key] = ContextEntry(key, "dir", DIR_MODE, "", 0)
            self._entries = [found[p] for p in sorted(found)]
        return self._entries

    @staticmethod
    def _entries_of(name: str, args: tuple[object, ...]) -> list[ContextEntry]:
        if name == "stage_file":
            src, rel = args
            return [_entry(str(rel), Path(str(src)))]
        if name == "stage_entries":
            src_root, items, rel = args
            out = [ContextEntry(str(rel), "dir", DIR_MODE, "", 0)] if rel not in ("", ".") else []
            for path, _kind in items:  # type: ignore[union-attr]
                out.append(_entry(_under(str(rel), str(path)), Path(str(src_root)) / str(path)))
            return out
        if name == "stage_folder":
            src, rel, patterns = args
            folder = BuildContext(Path(str(src)), None, extra_patterns=tuple(patterns))  # type: ignore[arg-type]
            out = [ContextEntry(str(rel), "dir", DIR_MODE, "", 0)]
            out += [ContextEntry(_under(str(rel), e.path), e.kind, e.mode, e.digest, e.size) for e in folder.entries()]
            return out
        raise ValueError(f"unknown staging call {name!r}")

    def digest(self) -> str:
        """SHA-256 over all entries, as :meth:`BuildContext.digest` computes it."""
        return entries_digest(self.entries())

    def total_size(self) -> int:
        """Bytes of regular files in the context."""
        return sum(e.size for e in self.entries())

    def stage(self, root: Path) -> None:
        """Copy the context into the empty folder ``root`` (for a build)."""
        from .layers import LayerContext

        stager = LayerContext(0, stage_root=root)
        if self.root is not None:
            stager.stage_entries(self.root.root, ((e.path, e.kind) for e in self.root.entries()), ".")
        for name, args in self.calls:
            getattr(stager, name)(*args)
            if name != "stage_file":
                (root / str(args[-2 if name == "stage_folder" else -1])).mkdir(parents=True, exist_ok=True)
        for entry in self.entries():
            if entry.kind == "dir" and entry.mode == DIR_MODE and not (self.root and (self.root.root / entry.path).is_dir()):
                os.chmod(root / entry.path, DIR_MODE)
