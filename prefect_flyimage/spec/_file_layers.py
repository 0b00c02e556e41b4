"""Layers that set up the system (apt, commands, ``WORKDIR``, ``ENV``) and copy local
files into the image (files, folders, ``.dockerignore``, the flow's code bundle)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import ClassVar, Iterable, Literal, Optional

from docker.utils.build import PatternMatcher

from ..context import read_dockerignore, read_ignore_file
from ..plan import BuildSecret
from ._layer_base import (
    _ENV_NAME,
    APT_CACHES,
    CODE_BUNDLE_IGNORE,
    FolderContext,
    Layer,
    LayerContext,
    SecretLayer,
    _file_problems,
    _folder_problems,
    _json,
    _q,
    _secret_problems,
    file_digest,
)

__all__ = [
    "AptPackages",
    "CodeBundle",
    "Commands",
    "DockerIgnore",
    "Env",
    "SourceFiles",
    "SourceFolder",
    "WorkDir",
    "loaded_module_files",
]

@dataclass(frozen=True)
class AptPackages(SecretLayer):
    """``apt-get install --no-install-recommends`` with locked cache mounts for lists and archives."""

    packages: tuple[str, ...] = ()
    secret_mounts: tuple[BuildSecret, ...] = ()
    kind: ClassVar[str] = "apt"

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        command = (
            # Debian images delete downloaded .debs after each install (docker-clean),
            # which would leave the archive cache mount empty.
            "rm -f /etc/apt/apt.conf.d/docker-clean"
            + " && apt-get update"
            + " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            + _q(*self.packages)
        )
        return [self._secret_run(APT_CACHES, command)]

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        what = self.describe()
        problems = _secret_problems(what, self.secret_mounts)
        if not self.packages:
            problems.append("with_apt_packages(): no packages given")
        for p in self.packages:
            if not p or p.startswith("-") or any(c.isspace() for c in p):
                problems.append(f"{what}: {p!r} is not a package name (options and blanks are not allowed)")
        return problems

    def describe(self) -> str:  # noqa: D102
        return f"with_apt_packages({', '.join(self.packages)})"


@dataclass(frozen=True)
class Commands(SecretLayer):
    """Shell commands, one ``RUN`` each (write them without ``RUN``)."""

    commands: tuple[str, ...] = ()
    secret_mounts: tuple[BuildSecret, ...] = ()
    kind: ClassVar[str] = "commands"

    @property
    def needs_buildkit(self) -> bool:  # noqa: D102
        return bool(self.secret_mounts)  # plain RUN lines unless a secret is mounted

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        return [self._secret_run((), c) for c in self.commands]

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        problems = _secret_problems("with_commands()", self.secret_mounts)
        if not self.commands:
            problems.append("with_commands(): no commands given")
        for c in self.commands:
            if not c.strip():
                problems.append("with_commands(): empty command")
            elif "\n" in c:
                problems.append(f"with_commands(): command {c!r} spans several lines; join it with ' && ' or pass several commands")
            elif c.lstrip().upper().startswith("RUN "):
                problems.append(f"with_commands(): write {c!r} without the leading 'RUN'")
        return problems

    def describe(self) -> str:  # noqa: D102
        return f"with_commands({len(self.commands)} command(s))"


@dataclass(frozen=True)
class WorkDir(Layer):
    """``WORKDIR``: where later relative destinations and the container start."""

    workdir: str = "/"
    kind: ClassVar[str] = "workdir"

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        return [f"WORKDIR {self.workdir}"]

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        if not PurePosixPath(self.workdir).is_absolute() or "\n" in self.workdir:
            return [f"with_workdir({self.workdir!r}): the working directory must be an absolute path on one line"]
        return []

    def describe(self) -> str:  # noqa: D102
        return f"with_workdir({self.workdir!r})"


def _env_value(value: str) -> str:
    # Double quotes keep blanks; $VARS still expand (PATH=/x:$PATH), like Dockerfile ENV.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Env(Layer):
    """``ENV`` variables (values may refer to earlier ones: ``"/opt/bin:$PATH"``). Never put secrets here."""

    env_vars: tuple[tuple[str, str], ...] = ()
    kind: ClassVar[str] = "env"

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        if not self.env_vars:
            return []
        return ["ENV " + " \\\n    ".join(f"{k}={_env_value(v)}" for k, v in self.env_vars)]

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        problems = []
        for k, v in self.env_vars:
            if not _ENV_NAME.fullmatch(k):
                problems.append(f"with_env_vars(): {k!r} is not a valid variable name (letters, digits, '_')")
            if "\n" in v or "\r" in v:
                problems.append(f"with_env_vars(): the value of {k} must not contain line breaks")
        return problems

    def describe(self) -> str:  # noqa: D102
        return f"with_env_vars({', '.join(k for k, _ in self.env_vars)})"


# ---- files -----------------------------------------------------------------------------


def _dir_dest(dst: str) -> str:
    """``dst`` as a folder for COPY (a trailing ``/``)."""
    return dst if dst.endswith("/") else dst + "/"


def _dst_problems(what: str, dst: str) -> list[str]:
    if not dst or "\n" in dst:
        return [f"{what}: destination {dst!r} must be a non-empty path on one line"]
    return []


@dataclass(frozen=True)
class SourceFiles(Layer):
    """Local files copied into folder ``dst`` of the image (relative to ``WORKDIR``), modes kept."""

    srcs: tuple[Path, ...] = ()
    dst: str = "."
    kind: ClassVar[str] = "files"

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        rel = ctx.path(self.kind)
        for src in self.srcs:
            ctx.stage_file(src, f"{rel}/{src.name}")
        return [f"COPY {_json(*(f'{rel}/{s.name}' for s in self.srcs), _dir_dest(self.dst))}"]

    def digests(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        return [file_digest(s) for s in self.srcs]

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        what = self.describe()
        problems = [p for s in self.srcs for p in _file_problems(what, s)] + _dst_problems(what, self.dst)
        names = [s.name for s in self.srcs]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{what}: several files are named {dup!r} and would overwrite each other in {self.dst!r}")
        if not self.srcs:
            problems.append("with_source_file(): no files given")
        return problems

    def describe(self) -> str:  # noqa: D102
        return f"with_source_file({', '.join(str(s) for s in self.srcs)})"


@dataclass(frozen=True)
class SourceFolder(Layer):
    """A local folder (after ``.dockerignore``) copied to folder ``dst`` of the image."""

    src: Path = Path(".")
    dst: str = "."
    kind: ClassVar[str] = "folder"

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        rel = ctx.path(self.kind)
        ctx.stage_folder(self.src, rel, ctx.ignore)
        if ctx.stage_root is not None:
            (ctx.stage_root / rel).mkdir(parents=True, exist_ok=True)  # an empty folder still copies
        return [f"COPY {_json(rel + '/', self.dst)}"]

    def digests(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        return ["folder:" + FolderContext(self.src, ctx.ignore).digest()]

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        return _folder_problems(self.describe(), self.src) + _dst_problems(self.describe(), self.dst)

    def describe(self) -> str:  # noqa: D102
        return f"with_source_folder({str(self.src)!r})"


@dataclass(frozen=True)
class DockerIgnore(Layer):
    """A ``.dockerignore`` whose patterns apply to every folder the image copies.

    Renders nothing: its effect is on which files the other layers copy (and hash).
    """

    path: Path = Path(".dockerignore")
    kind: ClassVar[str] = "dockerignore"

    def patterns(self) -> list[str]:
        """The file's patterns, parsed like docker-py parses ``.dockerignore``."""
        return read_ignore_file(self.path)

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        return []

    def digests(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        return [file_digest(self.path)]

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        return _file_problems(self.describe(), self.path)

    def describe(self) -> str:  # noqa: D102
        return f"with_dockerignore({str(self.path)!r})"


def loaded_module_files(root: Path, modules: Optional[Iterable[ModuleType]] = None) -> list[Path]:
    """Files of loaded modules (``sys.modules``, ``__main__`` included) that live under ``root``.

    Installed code is skipped: anything below ``sys.prefix``, ``sys.base_prefix`` or a
    ``site-packages``/``dist-packages`` folder, even when that is inside ``root``.
    """
    root = root.resolve()
    installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    found: set[Path] = set()
    for module in list(modules if modules is not None else sys.modules.values()):
        try:
            file = getattr(module, "__file__", None)
        except Exception:  # lazy modules may raise on attribute access
            continue
        if not isinstance(file, str) or not file:
            continue
        path = Path(file)
        if path.suffix in (".pyc", ".pyo"):
            continue
        try:
            path = path.resolve()
            rel = path.relative_to(root)
        except (OSError, ValueError):
            continue
        if any(part in ("site-packages", "dist-packages") for part in rel.parts):
            continue
        # An interpreter prefix inside the project (a .venv) holds installed code; a prefix
        # that contains the whole project says nothing.
        if any(p in path.parents for p in installed if not (p == root or p in root.parents)):
            continue
        if path.is_file():
            found.add(path)
    return sorted(found)


@dataclass(frozen=True)
class CodeBundle(Layer):
    """The flow's source code, copied below ``dst`` with its paths relative to ``root_dir`` kept.

    ``copy_style="loaded_modules"`` copies the files of the modules loaded *when the
    image is hashed or built* (so import your flow first); ``"all"`` copies every file
    of ``root_dir``. Both skip :data:`CODE_BUNDLE_IGNORE` and ``.dockerignore`` matches.
    """

    copy_style: Literal["loaded_modules", "all"] = "loaded_modules"
    dst: str = "."
    root_dir: Path = Path(".")
    kind: ClassVar[str] = "code"

    def _patterns(self, ctx: LayerContext) -> list[str]:
        return [*CODE_BUNDLE_IGNORE, *ctx.ignore]

    def files(self, ctx: LayerContext) -> list[str]:
        """Paths (relative to ``root_dir``) of the loaded modules to copy, after ``.dockerignore``."""
        patterns = [*self._patterns(ctx), *read_dockerignore(self.root_dir)]
        matcher = PatternMatcher(patterns)
        rels = [p.relative_to(self.root_dir.resolve()).as_posix() for p in loaded_module_files(self.root_dir)]
        return [r for r in rels if not matcher.matches(r)]

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        rel = ctx.path(self.kind)
        if ctx.stage_root is not None or ctx.record is not None:
            if self.copy_style == "all":
                ctx.stage_folder(self.root_dir, rel, self._patterns(ctx))
            else:
                ctx.stage_entries(self.root_dir.resolve(), ((f, "file") for f in self.files(ctx)), rel)
        if ctx.stage_root is not None:
            (ctx.stage_root / rel).mkdir(parents=True, exist_ok=True)
        return [f"COPY {_json(rel + '/', _dir_dest(self.dst))}"]

    def digests(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        if self.copy_style == "all":
            return ["folder:" + FolderContext(self.root_dir, self._patterns(ctx)).digest()]
        root = self.root_dir.resolve()
        return [f"{f}\0{file_digest(root / f)}" for f in self.files(ctx)]

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        what = self.describe()
        problems = _folder_problems(what, self.root_dir) + _dst_problems(what, self.dst)
        if self.copy_style not in ("loaded_modules", "all"):
            problems.append(f"{what}: copy_style must be 'loaded_modules' or 'all', not {self.copy_style!r}")
        return problems

    def describe(self) -> str:  # noqa: D102
        return f"with_code_bundle({self.copy_style!r}, root_dir={str(self.root_dir)!r})"
