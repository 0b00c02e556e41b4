"""The base of every layer: :class:`Layer`, :class:`LayerContext` and the helpers layers share.

Shared helpers render ``RUN`` lines with cache and secret mounts, export BuildKit secrets
inside a step (by reference, never by value) and report problems of files, folders,
secrets and index URLs. The layer classes live in :mod:`._python_layers` and
:mod:`._file_layers`; :mod:`.layers` is the public module that names them all.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Iterable, Optional, Sequence, Union
from urllib.parse import urlsplit

from ..context import BuildContext, hash_file
from ..errors import SpecError
from ..plan import BuildSecret

__all__ = [
    "APT_CACHES",
    "CODE_BUNDLE_IGNORE",
    "DEFAULT_IGNORE",
    "FolderContext",
    "Layer",
    "LayerContext",
    "PIP_CACHE",
    "POETRY_CACHE",
    "POETRY_REQUIREMENT",
    "PY_PREFIX",
    "SCRATCH",
    "SecretLayer",
    "SecretMount",
    "UV_CACHE",
    "UV_REQUIREMENT",
    "as_secrets",
    "file_digest",
    "secret_env_name",
]

#: A secret for ``secret_mounts=``: the name of an environment variable of the building
#: process (its value becomes the secret), or a :class:`~prefect_flyimage.plan.BuildSecret`.
SecretMount = Union[str, BuildSecret]

#: Never copied from source folders (compiled bytecode changes on every import).
DEFAULT_IGNORE: tuple[str, ...] = ("**/__pycache__", "**/*.py[co]")
#: Additionally never copied by ``with_code_bundle`` (VCS data, environments, tool caches).
CODE_BUNDLE_IGNORE: tuple[str, ...] = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".ipynb_checkpoints",
    "node_modules",
)

#: Where RUN steps mount and unpack their inputs; removed again by the same step.
SCRATCH = "/tmp/prefect-flyimage"
PIP_CACHE = "--mount=type=cache,target=/root/.cache/pip"
UV_CACHE = "--mount=type=cache,target=/root/.cache/uv"
POETRY_CACHE = "--mount=type=cache,target=/root/.cache/pypoetry"
# apt cannot share its lists and archives between concurrent builds: lock them.
APT_CACHES = (
    "--mount=type=cache,target=/var/cache/apt,sharing=locked",
    "--mount=type=cache,target=/var/lib/apt/lists,sharing=locked",
)
#: What the uv and poetry layers install into a throw-away location to do their work.
UV_REQUIREMENT = "uv>=0.5,<1"
POETRY_REQUIREMENT = "poetry>=1.8,<3"
# The interpreter every install targets: the first python3 on PATH (a venv's when the
# base image activates one through PATH, as Prefect's images do).
PY_PREFIX = "$(python3 -c 'import sys; print(sys.prefix)')"

_SECRET_ID = re.compile(r"[A-Za-z0-9_.-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _q(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in args)


def _json(*items: str) -> str:
    return json.dumps(list(items))


def as_secrets(value: Union[None, SecretMount, Iterable[SecretMount]]) -> tuple[BuildSecret, ...]:
    """Normalise ``secret_mounts=``: a name, a :class:`BuildSecret`, or an iterable of them.

    A plain name ``"GITHUB_TOKEN"`` means the secret with id ``GITHUB_TOKEN`` whose
    value is the building process's environment variable of that name.
    """
    if value is None:
        return ()
    items = [value] if isinstance(value, (str, BuildSecret)) else list(value)
    out = []
    for item in items:
        if isinstance(item, BuildSecret):
            out.append(item)
        elif isinstance(item, str):
            out.append(BuildSecret(id=item, env=item))
        else:
            raise SpecError([f"secret_mounts items must be str or BuildSecret, not {type(item).__name__}"])
    return tuple(out)


def secret_env_name(secret_id: str) -> str:
    """The variable a secret is exported as inside its RUN step (non-identifier characters as ``_``)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", secret_id)
    return f"_{name}" if name[:1].isdigit() else name


def _secret_mounts(secrets: Sequence[BuildSecret]) -> list[str]:
    return [f"--mount=type=secret,id={s.id}" for s in secrets]


def _secret_exports(secrets: Sequence[BuildSecret]) -> str:
    # The value is read from the mounted file at run time: the Dockerfile only names it.
    return "".join(
        f'{secret_env_name(s.id)}="$(cat /run/secrets/{s.id})" && export {secret_env_name(s.id)} && ' for s in secrets
    )


def _run(mounts: Sequence[str], command: str) -> str:
    """A ``RUN`` line with one mount per continuation line, for readable Dockerfiles."""
    if not mounts:
        return f"RUN {command}"
    return "RUN " + " \\\n    ".join([*mounts, command])


def _secret_problems(what: str, secrets: Sequence[BuildSecret]) -> list[str]:
    problems = []
    for s in secrets:
        if not _SECRET_ID.fullmatch(s.id):
            problems.append(f"{what}: secret id {s.id!r} may contain only letters, digits, '_', '.' and '-'")
    ids = [s.id for s in secrets]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"{what}: secret {dup!r} is mounted twice")
    return problems


def _url_problems(what: str, urls: Iterable[Optional[str]]) -> list[str]:
    problems = []
    for url in urls:
        if url and urlsplit(url).password:
            problems.append(
                f"{what}: index URL {urlsplit(url).hostname!r} embeds a password, which would end up in the "
                "Dockerfile and the image history; pass it as a secret instead, e.g. "
                "secret_mounts=['PIP_INDEX_URL'] (pip and uv read it from the environment)"
            )
    return problems


def _file_problems(what: str, path: Optional[Path], *, required: bool = True) -> list[str]:
    if path is None:
        return [f"{what}: no file given"] if required else []
    if not path.exists():
        return [f"{what}: {str(path)!r} does not exist"]
    if not path.is_file():
        return [f"{what}: {str(path)!r} is not a file"]
    if not os.access(path, os.R_OK):
        return [f"{what}: {str(path)!r} is not readable"]
    return []


def _folder_problems(what: str, path: Path) -> list[str]:
    if not path.exists():
        return [f"{what}: folder {str(path)!r} does not exist"]
    if not path.is_dir():
        return [f"{what}: {str(path)!r} is not a folder"]
    return []


def file_digest(path: Path) -> str:
    """``sha256:<hex>:<mode>`` of one file: contents and permission bits (COPY keeps both)."""
    try:
        return f"sha256:{hash_file(path)}:{stat.S_IMODE(os.stat(path).st_mode):o}"
    except OSError as exc:
        raise SpecError([f"cannot read {str(path)!r}: {exc.strerror or exc}"]) from None


def FolderContext(root: Path | str, patterns: Sequence[str] = ()) -> BuildContext:
    """A :class:`BuildContext` of a folder with extra ``.dockerignore`` patterns.

    ``patterns`` come first, then the folder's own ``.dockerignore``, so a ``!`` line in
    the folder can re-include what a default pattern excludes. Digests go through the
    persistent stat cache of the folder.
    """
    return BuildContext(root, None, extra_patterns=patterns)


@dataclass
class LayerContext:
    """What a layer needs to render, hash or stage itself.

    Args:
        index: the layer's position (names its folder in the build context).
        ignore: ``.dockerignore`` patterns applied to every folder copy (defaults plus
            the image's ``with_dockerignore`` files).
        prefix: prefix of context paths (non-empty when the context also holds a
            user's Dockerfile context).
        stage_root: the build context being staged, or ``None`` to only render/hash.
    """

    index: int
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    prefix: str = ""
    stage_root: Optional[Path] = None
    #: When a list, every staging call is also recorded here as ``(method, args)``, so a
    #: context can be described (and hashed) without copying anything.
    record: Optional[list[tuple[str, tuple[object, ...]]]] = None

    def path(self, kind: str) -> str:
        """This layer's folder in the build context, e.g. ``layers/03-folder``."""
        return f"{self.prefix}layers/{self.index:02d}-{kind}"

    def scratch(self, kind: str) -> str:
        """A per-layer scratch folder inside the image (``/tmp/prefect-flyimage/03-uv``)."""
        return f"{SCRATCH}/{self.index:02d}-{kind}"

    # ---- staging -------------------------------------------------------------------
    def _dest(self, rel: str) -> Optional[Path]:
        if self.stage_root is None:
            return None
        dest = self.stage_root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest

    def stage_file(self, src: Path, rel: str) -> None:
        """Copy one file (contents and mode) to ``rel`` in the context being staged."""
        if self.record is not None:
            self.record.append(("stage_file", (src, rel)))
        dest = self._dest(rel)
        if dest is not None:
            shutil.copy2(src, dest)

    def stage_entries(self, src_root: Path, entries: Iterable[tuple[str, str]], rel: str) -> None:
        """Copy ``(relative path, kind)`` entries of ``src_root`` below ``rel``."""
        if self.record is not None:
            entries = list(entries)
            self.record.append(("stage_entries", (src_root, tuple(entries), rel)))
        dest_root = self._dest(rel + "/x")
        if dest_root is None:
            return
        base = dest_root.parent
        base.mkdir(parents=True, exist_ok=True)
        dirs: list[tuple[Path, Path]] = []
        for path, kind in entries:
            src, dest = src_root / path, base / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dir":
                dest.mkdir(exist_ok=True)
                dirs.append((src, dest))
            elif kind == "symlink":
                os.symlink(os.readlink(src), dest)
            else:
                shutil.copy2(src, dest)
        # Folder modes last: a read-only folder would refuse the files copied into it.
        for src, dest in reversed(dirs):
            shutil.copystat(src, dest)

    def stage_folder(self, src: Path, rel: str, patterns: Sequence[str]) -> None:
        """Copy what ``.dockerignore`` leaves of folder ``src`` to ``rel``."""
        if self.record is not None:
            self.record.append(("stage_folder", (src, rel, tuple(patterns))))
        if self.stage_root is None:
            return
        ctx = FolderContext(src, patterns)
        self.stage_entries(ctx.root, ((e.path, e.kind) for e in ctx.entries()), rel)


@dataclass(frozen=True)
class Layer:
    """One step of an image spec. Subclasses are frozen dataclasses (hashable, comparable)."""

    #: Short name of the layer's folder in the build context.
    kind: ClassVar[str] = "layer"

    def __post_init__(self) -> None:
        # Lists would make the layer unhashable: catch them where the mistake is made.
        for name, value in vars(self).items():
            if isinstance(value, (list, dict, set)):
                raise TypeError(
                    f"{type(self).__name__}.{name} must be a tuple, not {type(value).__name__}; "
                    "pass several items as separate arguments"
                )

    def render(self, ctx: LayerContext) -> list[str]:
        """The Dockerfile lines of this layer (stages its files when ``ctx.stage_root`` is set)."""
        raise NotImplementedError

    def digests(self, ctx: LayerContext) -> list[str]:
        """Digests of the local files this layer copies (none by default)."""
        return []

    def problems(self, ctx: LayerContext) -> list[str]:
        """Everything wrong with this layer, as messages; empty when it is fine."""
        return []

    @property
    def secrets(self) -> tuple[BuildSecret, ...]:
        """The BuildKit secrets this layer mounts."""
        return ()

    @property
    def needs_buildkit(self) -> bool:
        """True when the rendered lines use ``RUN --mount`` (cache, bind or secret)."""
        return False

    def describe(self) -> str:
        """One line for logs and ``repr``-like listings."""
        return type(self).__name__


@dataclass(frozen=True)
class SecretLayer(Layer):
    """A layer whose ``RUN`` steps mount the BuildKit secrets of its ``secret_mounts`` field.

    Declares no field itself (each subclass keeps its own field order); it only supplies
    what every such layer did alike: :attr:`secrets`, :attr:`needs_buildkit` and
    :meth:`_secret_run`. Each layer still renders and hashes itself.
    """

    if TYPE_CHECKING:  # a field of every subclass; not one here (it would move their fields)
        secret_mounts: tuple[BuildSecret, ...]

    @property
    def secrets(self) -> tuple[BuildSecret, ...]:  # noqa: D102
        return self.secret_mounts

    @property
    def needs_buildkit(self) -> bool:  # noqa: D102
        return True

    def _secret_run(self, mounts: Sequence[str], command: str) -> str:
        """``RUN`` with ``mounts`` plus this layer's secret mounts; ``command`` runs after the
        secrets are exported (by reference: the Dockerfile never holds a value)."""
        return _run([*mounts, *_secret_mounts(self.secret_mounts)], _secret_exports(self.secret_mounts) + command)
