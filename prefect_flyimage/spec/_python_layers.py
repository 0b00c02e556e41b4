"""Layers that install Python packages: pip packages, requirements files, PEP 723
scripts, uv projects and Poetry projects (with BuildKit cache and secret mounts)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Optional, Sequence

from ..errors import SpecError
from ..plan import BuildSecret
from ._checks import requirement_problem, requirements_file_problems
from ._layer_base import (
    PIP_CACHE,
    POETRY_CACHE,
    POETRY_REQUIREMENT,
    PY_PREFIX,
    UV_CACHE,
    UV_REQUIREMENT,
    FolderContext,
    LayerContext,
    SecretLayer,
    _file_problems,
    _q,
    _secret_problems,
    _url_problems,
    file_digest,
)
from .config import read_script_metadata

__all__ = ["InstallMode", "PipOptions", "PipPackages", "PoetryProject", "Requirements", "UVProject", "UVScript"]


def _extra_args_problems(what: str, extra_args: Optional[str]) -> list[str]:
    if extra_args:
        try:
            shlex.split(extra_args)
        except ValueError as exc:
            return [f"{what}: extra_args {extra_args!r} cannot be split like a shell would: {exc}"]
    return []


@dataclass(frozen=True)
class PipOptions(SecretLayer):
    """Options shared by the pip and uv layers."""

    index_url: Optional[str] = None
    extra_index_urls: tuple[str, ...] = ()
    pre: bool = False
    extra_args: Optional[str] = None
    secret_mounts: tuple[BuildSecret, ...] = ()

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
        return problems + _extra_args_problems(what, self.extra_args)

    def _pip_run(self, mounts: Sequence[str], args: Sequence[str]) -> str:
        return self._secret_run([PIP_CACHE, *mounts], "python3 -m pip install " + _q(*self.install_args(), *args))


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


def _project_digests(ctx: LayerContext, pyproject: Path, mode: InstallMode) -> list[str]:
    """The project folder's digest when ``install_project`` copies it (nothing otherwise)."""
    if mode != "install_project":
        return []
    return ["folder:" + FolderContext(pyproject.parent, ctx.ignore).digest()]


def _mode_problems(what: str, mode: str) -> list[str]:
    if mode not in _INSTALL_MODES:
        return [f"{what}: project_install_mode must be one of {', '.join(_INSTALL_MODES)}"]
    return []


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
            ctx.stage_folder(self.pyproject.parent, rel, ctx.ignore)
        # After the project: a lock or pyproject that .dockerignore or another name hid must still be there.
        ctx.stage_file(self.pyproject, f"{rel}/pyproject.toml")
        if self.uvlock:
            ctx.stage_file(self.uvlock, f"{rel}/uv.lock")
        src, work, tool, tmp = (ctx.scratch(k) for k in ("uv-src", "uv-work", "uv-tool", "uv-tmp"))
        sync = ["sync", "--inexact"]
        if self.uvlock:
            sync.append("--locked")
        sync += ["--no-install-project"] if self.project_install_mode == "dependencies_only" else ["--no-editable"]
        command = (
            f"python3 -m pip install --target {tool} {_q(UV_REQUIREMENT)}"
            + f" && mkdir -p {work} {tmp} && cp -a {src}/. {work}/ && cd {work}"
            # uv leaves lock files in $TMPDIR: keep them out of the image.
            + f' && TMPDIR={tmp} UV_PROJECT_ENVIRONMENT="{PY_PREFIX}" UV_PYTHON="$(command -v python3)" UV_PYTHON_DOWNLOADS=never'
            # The image's CA store (which may hold a company CA), not uv's bundled roots;
            # UV_NATIVE_TLS is the older uv releases' name for it.
            + f" UV_LINK_MODE=copy UV_SYSTEM_CERTS=1 UV_NATIVE_TLS=1 {tool}/bin/uv {_q(*sync, *self.install_args())}"
            + f" && cd / && rm -rf {work} {tool} {tmp}"
        )
        return [self._secret_run([PIP_CACHE, UV_CACHE, f"--mount=type=bind,source={rel},target={src}"], command)]

    def digests(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        return [file_digest(f) for f in self._files()] + _project_digests(ctx, self.pyproject, self.project_install_mode)

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        what = self.describe()
        problems = super().problems(ctx) + _file_problems(what, self.pyproject)
        if self.uvlock is not None:
            problems += _file_problems(what, self.uvlock)
        return problems + _mode_problems(what, self.project_install_mode)

    def describe(self) -> str:  # noqa: D102
        return f"with_uv_project({str(self.pyproject)!r})"


@dataclass(frozen=True)
class PoetryProject(SecretLayer):
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

    def render(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        rel = ctx.path(self.kind)
        if self.project_install_mode == "install_project":
            ctx.stage_folder(self.pyproject.parent, rel, ctx.ignore)
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
            f'VIRTUAL_ENV="${{VIRTUAL_ENV:-{PY_PREFIX}}}" && export VIRTUAL_ENV'
            + f" && python3 -m venv {tool} && {tool}/bin/pip install {_q(POETRY_REQUIREMENT)}"
            + f" && mkdir -p {work} {tmp} && cp -a {src}/. {work}/ && cd {work}"
            # Poetry's requests trusts certifi only: point it at the image's CA store (which
            # may hold a company CA) unless the caller chose a bundle.
            + " && { [ -n \"${REQUESTS_CA_BUNDLE:-}\" ] || [ ! -f /etc/ssl/certs/ca-certificates.crt ]"
            + " || { REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt && export REQUESTS_CA_BUNDLE; }; }"
            + f" && TMPDIR={tmp} POETRY_VIRTUALENVS_CREATE=false {tool}/bin/poetry {_q(*args)}{install_root}"
            + f" && cd / && rm -rf {work} {tool} {tmp}"
        )
        return [self._secret_run([PIP_CACHE, POETRY_CACHE, f"--mount=type=bind,source={rel},target={src}"], command)]

    def digests(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        out = [file_digest(self.pyproject), file_digest(self.poetry_lock)]
        return out + _project_digests(ctx, self.pyproject, self.project_install_mode)

    def problems(self, ctx: LayerContext) -> list[str]:  # noqa: D102
        what = self.describe()
        problems = _secret_problems(what, self.secret_mounts) + _file_problems(what, self.pyproject)
        problems += _file_problems(f"{what} (poetry.lock)", self.poetry_lock)
        return problems + _mode_problems(what, self.project_install_mode) + _extra_args_problems(what, self.extra_args)

    def describe(self) -> str:  # noqa: D102
        return f"with_poetry_project({str(self.pyproject)!r})"
