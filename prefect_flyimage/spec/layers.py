"""Layers of a declarative image: frozen dataclasses that render Dockerfile lines.

Every layer knows three things:

- :meth:`Layer.render` -- its Dockerfile lines. Paths into the build context are derived
  from the layer's position (``layers/03-folder/``), never from where files live on
  this machine, so the text is the same on every checkout.
- :meth:`Layer.digests` -- content digests of the local files it copies (after
  ``.dockerignore``), which the image hash combines with the rendered lines.
- :meth:`Layer.problems` -- what is wrong with it, so ``Image.validate()`` can report
  every problem at once.

Installs use BuildKit cache mounts (pip, uv, poetry, apt with ``sharing=locked``) and
BuildKit secret mounts; no value of a secret is ever written to a Dockerfile line, an
``ARG``/``ENV`` or a layer.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import ClassVar, Iterable, Literal, Optional, Sequence, Union
from urllib.parse import urlsplit

from docker.utils.build import PatternMatcher

from ..context import BuildContext, hash_file, read_dockerignore
from ..errors import SpecError
from ..plan import BuildSecret
from ._checks import requirement_problem, requirements_file_problems
from .config import read_script_metadata

__all__ = [
    "AptPackages",
    "CodeBundle",
    "Commands",
    "DEFAULT_IGNORE",
    "CODE_BUNDLE_IGNORE",
    "DockerIgnore",
    "Env",
    "Layer",
    "LayerContext",
    "PipPackages",
    "PoetryProject",
    "Requirements",
    "SecretMount",
    "SourceFiles",
    "SourceFolder",
    "UVProject",
    "UVScript",
    "WorkDir",
    "as_secrets",
    "loaded_module_files",
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


# ---- python packages -----------------------------------------------------------------


@dataclass(frozen=True)
class PipOptions(Layer):
    """Options shared by the pip and uv layers."""

    index_url: Optional[str] = None
    extra_index_urls: tuple[str, ...] = ()
    pre: bool = False
    extra_args: Optional[str] = None
    secret_mounts: tuple[BuildSecret, ...] = ()

    @property
    def secrets(self) -> tuple[BuildSecret, ...]:  # noqa: D102
        return self.secret_mounts

    @property
    def needs_buildkit(self) -> bool:  # noqa: D102
        return True

    def install_args(self) -> list[str]:
        """``--index-url``/``--extra-index-url``/``--pre`` and the split ``extra_args``."""
        args: list[str] = []
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        if self.pre:
            args.append("--pre")
        if self.extra_args:
            args += shlex.split(self.extra_args)
        return args

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        what = self.describe()
        problems = _secret_problems(what, self.secret_mounts) + _url_problems(what, (self.index_url, *self.extra_index_urls))
        if self.extra_args:
            try:
                shlex.split(self.extra_args)
            except ValueError as exc:
                problems.append(f"{what}: extra_args {self.extra_args!r} cannot be split like a shell would: {exc}")
        return problems

    def _pip_run(self, mounts: Sequence[str], args: Sequence[str]) -> str:
        command = _secret_exports(self.secret_mounts) + "python3 -m pip install " + _q(*self.install_args(), *args)
        return _run([PIP_CACHE, *mounts, *_secret_mounts(self.secret_mounts)], command)


@dataclass(frozen=True)
class PipPackages(PipOptions):
    """``pip install`` of package specs (each shell-quoted: ``numpy>=2,<3`` works)."""

    packages: tuple[str, ...] = ()
    kind: ClassVar[str] = "pip"

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        return [self._pip_run([], self.packages)]

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        problems = super().problems(ctx)
        if not self.packages:
            problems.append("with_pip_packages(): no packages given")
        for p in self.packages:
            if "\n" in p:
                problems.append(f"with_pip_packages(): package spec {p!r} must not contain a line break")
            elif p.startswith("-"):
                problems.append(f"with_pip_packages(): {p!r} is an option, not a package; pass options in extra_args=")
            elif requirement_problem(p):
                problems.append(f"with_pip_packages(): package spec {p!r} {requirement_problem(p)}")
        return problems

    def describe(self) -> str:  # noqa: D102
        return f"with_pip_packages({', '.join(self.packages)})"


@dataclass(frozen=True)
class Requirements(PipOptions):
    """``pip install -r`` of a requirements file, bind-mounted (it never lands in the image)."""

    file: Path = Path("requirements.txt")
    kind: ClassVar[str] = "requirements"

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        rel = f"{ctx.path(self.kind)}/requirements.txt"
        ctx.stage_file(self.file, rel)
        target = f"{ctx.scratch(self.kind)}.txt"
        return [self._pip_run([f"--mount=type=bind,source={rel},target={target}"], ["-r", target])]

    def digests(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        return [file_digest(self.file)]

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        missing = _file_problems(self.describe(), self.file)
        return super().problems(ctx) + (missing or requirements_file_problems(self.describe(), self.file))

    def describe(self) -> str:  # noqa: D102
        return f"with_requirements({str(self.file)!r})"


@dataclass(frozen=True)
class UVScript(PipOptions):
    """The dependencies of a PEP 723 script (``# /// script``), installed with pip.

    Only the metadata block counts: editing the script's code keeps the same image.
    """

    script: Path = Path("script.py")
    kind: ClassVar[str] = "uv-script"

    def dependencies(self) -> tuple[str, ...]:
        """The ``dependencies`` of the script's metadata block."""
        return read_script_metadata(self.script).dependencies

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        deps = self.dependencies()
        return [self._pip_run([], deps)] if deps else []

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        problems = super().problems(ctx) + _file_problems(self.describe(), self.script)
        if problems:
            return problems
        try:
            deps = self.dependencies()
        except SpecError as exc:
            return exc.problems
        return [
            f"{self.describe()}: dependency {d!r} points at a local path, which does not exist inside the "
            "build; use with_source_folder() and a path inside the image instead"
            for d in deps
            if "file://" in d
        ] + [f"{self.describe()}: dependency {d!r} {requirement_problem(d)}" for d in deps if requirement_problem(d)]

    def describe(self) -> str:  # noqa: D102
        return f"from_uv_script({str(self.script)!r})"


InstallMode = Literal["dependencies_only", "install_project"]
_INSTALL_MODES = ("dependencies_only", "install_project")


def _project_entries(src: Path, patterns: Sequence[str]) -> list[tuple[str, str]]:
    """A project folder's entries after ``.dockerignore`` (its pyproject and lock are staged separately)."""
    ctx = FolderContext(src, patterns)
    return [(e.path, e.kind) for e in ctx.entries()]


@dataclass(frozen=True)
class UVProject(PipOptions):
    """``uv sync`` of a ``pyproject.toml`` (and ``uv.lock``) into the image's Python.

    ``dependencies_only`` bind-mounts only ``pyproject.toml`` and the lock, so source
    edits reuse the layer; ``install_project`` also builds and installs the project
    from its folder (after ``.dockerignore``). uv itself runs from a throw-away folder
    and is not left in the image.
    """

    pyproject: Path = Path("pyproject.toml")
    uvlock: Optional[Path] = None
    project_install_mode: InstallMode = "dependencies_only"
    kind: ClassVar[str] = "uv"

    def _files(self) -> list[Path]:
        return [self.pyproject] + ([self.uvlock] if self.uvlock else [])

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        rel = ctx.path(self.kind)
        if self.project_install_mode == "install_project":
            ctx.stage_entries(self.pyproject.parent, _project_entries(self.pyproject.parent, ctx.ignore), rel)
            # A lock or pyproject that .dockerignore or another name hid must still be there.
            ctx.stage_file(self.pyproject, f"{rel}/pyproject.toml")
        else:
            ctx.stage_file(self.pyproject, f"{rel}/pyproject.toml")
        if self.uvlock:
            ctx.stage_file(self.uvlock, f"{rel}/uv.lock")
        src, work, tool, tmp = (ctx.scratch(k) for k in ("uv-src", "uv-work", "uv-tool", "uv-tmp"))
        sync = ["sync", "--inexact"]
        if self.uvlock:
            sync.append("--locked")
        sync += ["--no-install-project"] if self.project_install_mode == "dependencies_only" else ["--no-editable"]
        command = (
            _secret_exports(self.secret_mounts)
            + f"python3 -m pip install --target {tool} {_q(UV_REQUIREMENT)}"
            + f" && mkdir -p {work} {tmp} && cp -a {src}/. {work}/ && cd {work}"
            # uv leaves lock files in $TMPDIR: keep them out of the image.
            + f' && TMPDIR={tmp} UV_PROJECT_ENVIRONMENT="{PY_PREFIX}" UV_PYTHON="$(command -v python3)" UV_PYTHON_DOWNLOADS=never'
            # The image's CA store (which may hold a company CA), not uv's bundled roots;
            # UV_NATIVE_TLS is the older uv releases' name for it.
            + f" UV_LINK_MODE=copy UV_SYSTEM_CERTS=1 UV_NATIVE_TLS=1 {tool}/bin/uv {_q(*sync, *self.install_args())}"
            + f" && cd / && rm -rf {work} {tool} {tmp}"
        )
        mounts = [PIP_CACHE, UV_CACHE, f"--mount=type=bind,source={rel},target={src}", *_secret_mounts(self.secret_mounts)]
        return [_run(mounts, command)]

    def digests(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        out = [file_digest(f) for f in self._files()]
        if self.project_install_mode == "install_project":
            out.append("folder:" + FolderContext(self.pyproject.parent, ctx.ignore).digest())
        return out

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        what = self.describe()
        problems = super().problems(ctx) + _file_problems(what, self.pyproject)
        if self.uvlock is not None:
            problems += _file_problems(what, self.uvlock)
        if self.project_install_mode not in _INSTALL_MODES:
            problems.append(f"{what}: project_install_mode must be one of {', '.join(_INSTALL_MODES)}")
        return problems

    def describe(self) -> str:  # noqa: D102
        return f"with_uv_project({str(self.pyproject)!r})"


@dataclass(frozen=True)
class PoetryProject(Layer):
    """``poetry install --no-root`` of a Poetry project into the image's Python.

    Poetry runs from a throw-away virtualenv and installs into the environment of the
    image's ``python3`` (``$VIRTUAL_ENV`` when the base activates one). With
    ``install_project`` the project itself is then built and installed with
    ``pip install --no-deps .`` (not editable: its sources are not kept).
    """

    pyproject: Path = Path("pyproject.toml")
    poetry_lock: Path = Path("poetry.lock")
    extra_args: Optional[str] = None
    secret_mounts: tuple[BuildSecret, ...] = ()
    project_install_mode: InstallMode = "dependencies_only"
    kind: ClassVar[str] = "poetry"

    @property
    def secrets(self) -> tuple[BuildSecret, ...]:  # noqa: D102
        return self.secret_mounts

    @property
    def needs_buildkit(self) -> bool:  # noqa: D102
        return True

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        rel = ctx.path(self.kind)
        if self.project_install_mode == "install_project":
            ctx.stage_entries(self.pyproject.parent, _project_entries(self.pyproject.parent, ctx.ignore), rel)
        ctx.stage_file(self.pyproject, f"{rel}/pyproject.toml")
        ctx.stage_file(self.poetry_lock, f"{rel}/poetry.lock")
        src, work, tool, tmp = (ctx.scratch(k) for k in ("poetry-src", "poetry-work", "poetry-tool", "poetry-tmp"))
        # Poetry installs the project itself only in editable mode, pointing into the work
        # folder this step deletes: install the dependencies with Poetry, the project with pip.
        args = ["install", "--no-interaction", "--no-ansi", "--no-root"]
        if self.extra_args:
            args += [a for a in shlex.split(self.extra_args) if a != "--no-root"]
        install_root = " && python3 -m pip install --no-deps ." if self.project_install_mode == "install_project" else ""
        command = (
            _secret_exports(self.secret_mounts)
            + f'VIRTUAL_ENV="${{VIRTUAL_ENV:-{PY_PREFIX}}}" && export VIRTUAL_ENV'
            + f" && python3 -m venv {tool} && {tool}/bin/pip install {_q(POETRY_REQUIREMENT)}"
            + f" && mkdir -p {work} {tmp} && cp -a {src}/. {work}/ && cd {work}"
            # Poetry's requests trusts certifi only: point it at the image's CA store (which
            # may hold a company CA) unless the caller chose a bundle.
            + " && { [ -n \"${REQUESTS_CA_BUNDLE:-}\" ] || [ ! -f /etc/ssl/certs/ca-certificates.crt ]"
            + " || { REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt && export REQUESTS_CA_BUNDLE; }; }"
            + f" && TMPDIR={tmp} POETRY_VIRTUALENVS_CREATE=false {tool}/bin/poetry {_q(*args)}{install_root}"
            + f" && cd / && rm -rf {work} {tool} {tmp}"
        )
        mounts = [PIP_CACHE, POETRY_CACHE, f"--mount=type=bind,source={rel},target={src}", *_secret_mounts(self.secret_mounts)]
        return [_run(mounts, command)]

    def digests(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        out = [file_digest(self.pyproject), file_digest(self.poetry_lock)]
        if self.project_install_mode == "install_project":
            out.append("folder:" + FolderContext(self.pyproject.parent, ctx.ignore).digest())
        return out

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        what = self.describe()
        problems = _secret_problems(what, self.secret_mounts) + _file_problems(what, self.pyproject)
        problems += _file_problems(f"{what} (poetry.lock)", self.poetry_lock)
        if self.project_install_mode not in _INSTALL_MODES:
            problems.append(f"{what}: project_install_mode must be one of {', '.join(_INSTALL_MODES)}")
        if self.extra_args:
            try:
                shlex.split(self.extra_args)
            except ValueError as exc:
                problems.append(f"{what}: extra_args {self.extra_args!r} cannot be split like a shell would: {exc}")
        return problems

    def describe(self) -> str:  # noqa: D102
        return f"with_poetry_project({str(self.pyproject)!r})"


# ---- system ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AptPackages(Layer):
    """``apt-get install --no-install-recommends`` with locked cache mounts for lists and archives."""

    packages: tuple[str, ...] = ()
    secret_mounts: tuple[BuildSecret, ...] = ()
    kind: ClassVar[str] = "apt"

    @property
    def secrets(self) -> tuple[BuildSecret, ...]:  # noqa: D102
        return self.secret_mounts

    @property
    def needs_buildkit(self) -> bool:  # noqa: D102
        return True

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        command = (
            _secret_exports(self.secret_mounts)
            # Debian images delete downloaded .debs after each install (docker-clean),
            # which would leave the archive cache mount empty.
            + "rm -f /etc/apt/apt.conf.d/docker-clean"
            + " && apt-get update"
            + " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            + _q(*self.packages)
        )
        return [_run([*APT_CACHES, *_secret_mounts(self.secret_mounts)], command)]

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
class Commands(Layer):
    """Shell commands, one ``RUN`` each (write them without ``RUN``)."""

    commands: tuple[str, ...] = ()
    secret_mounts: tuple[BuildSecret, ...] = ()
    kind: ClassVar[str] = "commands"

    @property
    def secrets(self) -> tuple[BuildSecret, ...]:  # noqa: D102
        return self.secret_mounts

    @property
    def needs_buildkit(self) -> bool:  # noqa: D102
        return bool(self.secret_mounts)

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        mounts = _secret_mounts(self.secret_mounts)
        return [_run(mounts, _secret_exports(self.secret_mounts) + c) for c in self.commands]

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
        lines = self.path.read_text().splitlines()
        return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]

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
