"""The code tail as one deterministic layer, and the image config it leads to.

:func:`layer_entries` applies ``COPY``'s path rules to the context entries (after
``.dockerignore``): a relative destination is under the current ``WORKDIR``; a
destination ending in ``/`` (or ``.``), or several sources, is a folder; a folder source
copies its contents (the destination folder takes the source folder's mode); later copies
replace earlier ones. Owners are ``0:0`` or ``COPY --chown``'s numeric ids; modes are
kept. Folders a copy creates, as measured on Docker 20.10's classic builder and on
BuildKit (Docker 26): a folder the image has keeps its mode and owner (a folder copy's
destination too: ``COPY`` copies the contents); a new one is ``0755``, owned by the
copy's owner -- for a file, all its missing parents; for a folder, its destination, and
with BuildKit its missing parents too (classic makes those root's). Every folder above an
entry is in the tar, as in a build's layer, with the image's mode and owner (looked up in
its layers: :class:`._append.ImageDirs`) -- left out, the extraction would make it 0755
root in the new layer and hide e.g. ``/tmp``'s 1777. ``WORKDIR`` makes missing folders as
root (classic) or as the current ``USER`` (BuildKit; numeric ``uid:gid``, else :class:`~prefect_flyimage.errors.AppendNotApplicable`).

:func:`write_layer` writes the tar with entries sorted by path, mtime 0, no user or
group names, and gzips it with mtime 0 and no file name: the same files always give
the same bytes (the ``diff_id`` is stable everywhere; the compressed digest as long as
zlib compresses alike). Every file is read without following links and checked against
the digest the plan hashed: a file that changed since (or while being read) is refused.

:func:`apply_config` updates an image config as the tail's instructions would.
"""

from __future__ import annotations

__all__ = ["LayerEntry", "Layer", "layer_entries", "write_layer", "apply_config"]

import copy as _copy
import gzip
import hashlib
import io
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ._split import Split, _matches, _normal_source
from .context import ContextEntry
from .errors import AppendNotApplicable, ContextError

#: gzip level of the appended layer (fixed: the compressed digest depends on it).
GZIP_LEVEL = 6


@dataclass(frozen=True)
class LayerEntry:
    """One tar member: its path in the image, the context entry it comes from, its owner."""

    path: str  #: absolute path in the image, no trailing slash
    entry: ContextEntry
    uid: int
    gid: int


@dataclass(frozen=True)
class Layer:
    """A written layer: the gzipped blob, its digest and the uncompressed tar's (diff id)."""

    blob: bytes
    digest: str
    diff_id: str
    size: int


def _workdir(current: str, requested: str) -> str:
    """Docker's rule: a relative WORKDIR is joined and cleaned; an absolute one is kept as
    written (``/a/b/`` stays ``/a/b/``). Measured: BuildKit and Docker 20.10's classic
    builder keep it; Docker 26's classic builder (used only where buildx is missing)
    writes ``/a/b`` -- the same folder, the one difference an appended image keeps."""
    if requested.startswith("/"):
        return requested
    return posixpath.normpath(posixpath.join("/", current or "/", requested))


def _dest_path(dest: str, workdir: str) -> tuple[str, bool]:
    """(absolute destination, is it a folder)."""
    folder = dest.endswith(("/", "/.")) or dest in (".", "..")
    if not dest.startswith("/"):
        dest = posixpath.join(workdir or "/", dest)
    return posixpath.normpath(dest), folder


def _expand(entries: Sequence[ContextEntry], source: str) -> list[ContextEntry]:
    """The context entries a source names (wildcards expanded); a ContextError if none."""
    norm = _normal_source(source)
    if norm == "":
        return [ContextEntry("", "dir", -1, "", 0)]
    found = [e for e in entries if e.path == norm or (any(c in norm for c in "*?[") and _matches(e.path, norm)
                                                      and e.path.count("/") == norm.count("/"))]
    if not found:
        raise ContextError(f"COPY source {source!r} is not in the build context (or is excluded by .dockerignore)", source)
    return found


def _owner_of(user: str) -> Optional[tuple[int, int]]:
    """``USER``'s numeric ``uid:gid`` (root for ``""``/``root``); ``None`` when a name or
    a lone uid needs the image's ``/etc/passwd``."""
    if user in ("", "root", "0", "0:0", "root:root"):
        return (0, 0)
    uid, colon, gid = user.partition(":")
    return (int(uid), int(gid)) if colon and uid.isdigit() and gid.isdigit() else None


def _dir_entry(path: str, uid: int, gid: int) -> LayerEntry:
    return LayerEntry(path, ContextEntry(path.lstrip("/"), "dir", 0o755, "", 0), uid, gid)


def layer_entries(
    split: Split, entries: Sequence[ContextEntry], workdir: str = "/", root: Optional[Path] = None,
    dir_exists: Optional[Callable[[str], bool]] = None, classic: bool = False, user: str = "",
) -> list[LayerEntry]:
    """The layer's members for the split's ``COPY`` steps (see the module docstring).

    ``root``: where the context's files are (default: the plan's folder). ``dir_exists``:
    whether the dependency image has a folder -- ``(mode, uid, gid)`` (the layer then
    carries it as the image has it), ``True`` (there, mode unknown: left out) or falsy;
    ``None`` answers ``True``.
    ``classic``/``user``: the builder and the image's ``USER`` (see the module docstring).
    """
    out: dict[str, LayerEntry] = {}
    root = Path(root if root is not None else split.plan.context)
    exists = dir_exists or (lambda path: True)
    made: dict[str, Optional[tuple[int, int]]] = {}  # WORKDIR folders: owner if created, None if it existed

    def known(path: str) -> bool:
        """In the layer or made by the tail already (no question to the image)."""
        if path == "/" or path in made or (path in out and out[path].entry.kind == "dir"):
            return True
        prefix = path + "/"
        return any(p.startswith(prefix) for p in out)

    def present(path: str) -> bool:
        return known(path) or exists(path)

    def parents(path: str, uid: int, gid: int) -> None:
        """Folders ``COPY`` creates above ``path`` (missing ones): owned as the copy, 0755.
        Root-owned ones are left to the extraction (it makes them so)."""
        if not (uid or gid):
            return
        missing = []
        d = posixpath.dirname(path)
        while d != "/" and not present(d):
            missing.append(d)
            d = posixpath.dirname(d)
        for d in missing:
            out[d] = _dir_entry(d, uid, gid)

    for step in split.steps:
        if step.keyword == "USER":
            user = step.value
            continue
        if step.keyword == "WORKDIR":
            workdir = _workdir(workdir, step.value)
            # Classic makes WORKDIR folders as root; BuildKit as the current USER.
            owner = (0, 0) if classic else _owner_of(user)
            d = workdir
            while d != "/" and d not in made and not (d in out or _known_below(out, d)):
                made[d] = owner
                d = posixpath.dirname(d)
            continue
        if step.copy is None:
            continue
        c = step.copy
        dest, folder = _dest_path(c.dest, workdir)
        matched = [m for s in c.sources for m in _expand(entries, s)]
        if len(matched) > 1 or dest == posixpath.normpath(workdir or "/") or known(dest):
            folder = True  # several sources, or a folder known to exist: COPY puts files into it
        elif not folder and len(matched) == 1 and matched[0].kind != "dir" and dir_exists is not None and dir_exists(dest):
            folder = True  # a file copied onto the name of a folder the image has: into it
        for src in matched:
            if src.kind == "symlink":
                raise ContextError(
                    f"COPY source {src.path!r} is a symlink; Docker would follow it out of the named path -- "
                    "copy its target instead", root / src.path,
                )
            if src.kind == "dir":
                prefix = "" if src.path == "" else src.path + "/"
                children = [e for e in entries if e.path.startswith(prefix) and e.path != src.path]
                # COPY copies the folder's contents: a destination that exists keeps its
                # mode and owner; a new one is 0755 and the copy's owner (root: the
                # extraction makes it so, unless nothing is inside to make it).
                if (c.uid or c.gid or not children) and not present(dest):
                    if not classic:
                        parents(dest, c.uid, c.gid)  # BuildKit owns the new parents too; classic: root
                    out[dest] = _dir_entry(dest, c.uid, c.gid)
                for e in children:
                    _check_link(root, e)
                    path = posixpath.join(dest, e.path[len(prefix):])
                    out[path] = LayerEntry(path, e, c.uid, c.gid)
            else:
                path = posixpath.join(dest, posixpath.basename(src.path)) if folder else dest
                parents(path, c.uid, c.gid)
                out[path] = LayerEntry(path, src, c.uid, c.gid)
    # WORKDIR folders the image lacks: made as their owner.
    for d, owner in sorted(made.items()):
        if d in out or exists(d):
            continue
        if owner is None:
            raise AppendNotApplicable(f"WORKDIR {d} is created as USER {user!r}, a name only the image's /etc/passwd resolves")
        out[d] = _dir_entry(d, *owner)
    # Every folder above an entry is in the layer, as a build's layer has it: with the
    # image's mode and owner where the image has it (an extraction would otherwise make
    # it 0755 root in the new layer, hiding e.g. /tmp's 1777), 0755 root where not.
    for path in list(out):
        d = posixpath.dirname(path)
        while d != "/" and d not in out:
            meta = exists(d)
            if isinstance(meta, tuple):
                out[d] = LayerEntry(d, ContextEntry(d.lstrip("/"), "dir", meta[0], "", 0), meta[1], meta[2])
            elif not meta:
                out[d] = _dir_entry(d, 0, 0)
            d = posixpath.dirname(d)
    return [out[p] for p in sorted(out)]


def _known_below(out: dict[str, LayerEntry], path: str) -> bool:
    prefix = path.rstrip("/") + "/"
    return any(p.startswith(prefix) for p in out)


def _check_link(root: Path, e: ContextEntry) -> None:
    if e.kind != "symlink":
        return
    target = os.readlink(root / e.path)
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(e.path), target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise ContextError(
            f"symlink {e.path!r} in build context {str(root)!r} points outside the context ({target!r}); "
            "remove it or add it to .dockerignore", root / e.path,
        )


def _read_checked(root: Path, e: ContextEntry) -> bytes:
    """The bytes of ``e``, read without following links, equal to what the plan hashed."""
    full = root / e.path
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ContextError(f"cannot read {e.path!r} in build context {str(root)!r}: {exc.strerror or exc}", full) from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise ContextError(f"{e.path!r} in build context {str(root)!r} is no longer a regular file", full)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if (before.st_mtime_ns, before.st_size) != (after.st_mtime_ns, after.st_size) or hashlib.sha256(data).hexdigest() != e.digest:
        raise ContextError(
            f"{e.path!r} in build context {str(root)!r} changed while the image was being made; try again", full,
        )
    return data


def write_layer(root: Path, members: Sequence[LayerEntry]) -> Layer:
    """The gzipped tar of ``members`` (see the module docstring)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.path.lstrip("/"))
            info.mtime = 0
            info.uid, info.gid, info.uname, info.gname = m.uid, m.gid, "", ""
            info.mode = m.entry.mode & 0o7777
            kind = m.entry.kind
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(root / m.entry.path)
                tar.addfile(info)
            else:
                data = _read_checked(root, m.entry)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0, compresslevel=GZIP_LEVEL) as gz:
        gz.write(tar_bytes)
    blob = packed.getvalue()
    return Layer(
        blob=blob, digest="sha256:" + hashlib.sha256(blob).hexdigest(),
        diff_id="sha256:" + hashlib.sha256(tar_bytes).hexdigest(), size=len(blob),
    )


def _shell_form(command: Any, shell: list[str]) -> list[str]:
    return list(command) if isinstance(command, list) else [*shell, command]


def _set_env(env: list[str], key: str, value: str) -> list[str]:
    out = [e for e in env if e.partition("=")[0] != key]
    # Docker keeps the variable's place when it replaces it.
    for i, e in enumerate(env):
        if e.partition("=")[0] == key:
            out = list(env)
            out[i] = f"{key}={value}"
            return out
    return out + [f"{key}={value}"]


def apply_config(
    config: dict[str, Any], split: Split, layer: Layer, labels: dict[str, str], created: Optional[str] = None,
    classic: bool = False,
) -> dict[str, Any]:
    """A new image config: ``config`` with the tail's metadata, ``layer`` appended, ``labels`` set.

    ``classic``: the builder (folder ownership rules; see the module docstring;
    BuildKit keeps it as written), so an appended image equals what a build here gives."""
    new = _copy.deepcopy(config)
    c = new.setdefault("config", {}) or {}
    new["config"] = c
    shell = c.get("Shell") or ["/bin/sh", "-c"]
    workdir = c.get("WorkingDir") or "/"
    when = created or new.get("created")
    history = new.setdefault("history", [])
    cmd_set_here = split.head_sets_cmd
    for step in split.steps:
        k, v = step.keyword, step.value
        if k == "WORKDIR":
            workdir = _workdir(workdir, v)
            c["WorkingDir"] = workdir
        elif k == "ENV":
            env = list(c.get("Env") or [])
            for key, value in v:
                env = _set_env(env, key, value)
            c["Env"] = env
        elif k == "LABEL":
            c["Labels"] = {**(c.get("Labels") or {}), **dict(v)}
        elif k == "CMD":
            c["Cmd"] = _shell_form(v, shell)
            cmd_set_here = True
        elif k == "ENTRYPOINT":
            c["Entrypoint"] = _shell_form(v, shell)
            if not cmd_set_here:
                c["Cmd"] = None  # Docker: a new ENTRYPOINT drops an inherited CMD
        elif k == "USER":
            c["User"] = v
        elif k == "EXPOSE":
            c["ExposedPorts"] = {**(c.get("ExposedPorts") or {}), **{p: {} for p in v}}
        if step.copy is None:
            history.append({"created": when, "created_by": f"/bin/sh -c #(nop) {step.text}", "empty_layer": True})
    c["Labels"] = {**(c.get("Labels") or {}), **labels}
    texts = "; ".join(s.text for s in split.steps if s.copy)
    history.append({"created": when, "created_by": f"prefect-flyimage append: {texts}", "comment": "code layer"})
    rootfs = new.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), layer.diff_id]
    if when is not None:
        new["created"] = when
    for build_only in ("container", "container_config"):
        new.pop(build_only, None)
    return new
