"""Dockerfile helpers compatible with ``prefect.utilities.dockerutils``.

:class:`ImageBuilder`, :func:`to_run_command` and :func:`generate_default_dockerfile`
behave like Prefect 3.8.8's, so code written against Prefect's API works unchanged.
Where Prefect fails late or obscurely, these fail early with a :class:`ContextError`
that names the path and still subclasses the exception Prefect raised:

- a ``Dockerfile`` already in the context: :class:`DockerfileExistsError`
  (a ``ValueError`` like ``ImageBuilder``'s and a ``RuntimeError`` like
  ``generate_default_dockerfile``'s);
- a missing file or context: :class:`ContextPathNotFoundError` (a ``FileNotFoundError``);
- a copy source outside ``base_directory``: :class:`ContextError` (a ``ValueError``) --
  Prefect raises that for absolute paths but silently copies ``../x`` *out of* the
  temporary context.

Other deliberate fixes: ``copy()`` of a directory works whatever the current directory
(Prefect tests ``is_dir()`` relative to the cwd), ``copy(".")`` works (Prefect's
``copytree`` fails on the existing context), ``Path(".")`` as a context names the real
folder in the default Dockerfile (Prefect writes ``/opt/prefect//``), and the
``assert_*`` helpers still check under ``python -O``.

:func:`default_dockerfile_text` returns the default Dockerfile without writing anything.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from tempfile import TemporaryDirectory
from types import TracebackType
from typing import Any, Mapping, Optional, TextIO, TypeVar, Union

from . import _args
from .errors import ContextError, ContextPathNotFoundError, DockerfileExistsError
from .prefect_images import get_prefect_image_name

__all__ = [
    "ContextPathNotFoundError",
    "DockerfileExistsError",
    "ImageBuilder",
    "base_images",
    "default_dockerfile_text",
    "generate_default_dockerfile",
    "to_run_command",
]


_Builder = TypeVar("_Builder", bound="ImageBuilder")


def to_run_command(command: list[str]) -> str:
    """Turn ``["pip", "install", "x"]`` into a Dockerfile ``RUN`` line, like Prefect's.

    Arguments after the first are written with Python's ``repr`` (``RUN pip 'install'
    'x'``), exactly as Prefect does, so generated Dockerfiles are byte-identical. An
    empty list gives ``""``.
    """
    _args.str_list("command", command)  # a lone str would be split into characters
    if not command:
        return ""
    run_command = f"RUN {command[0]}"
    if len(command) > 1:
        run_command += " " + " ".join(repr(arg) for arg in command[1:])
    return run_command


def _format_lines(lines: list[str], start: int, stop: int) -> str:
    """Numbered excerpt of ``lines[start:stop]`` (1-based numbers, clamped)."""
    start, stop = max(start, 0), min(stop, len(lines))
    return "\n".join(f"  {n + 1:>3}: {lines[n]}" for n in range(start, stop))


class ImageBuilder:
    """Prepare a Docker build context and Dockerfile, then build it (Prefect-compatible).

    Use it as a context manager to get a temporary build context that is removed on
    exit, or pass ``context=`` to build in an existing folder::

        with ImageBuilder("python:3.12-slim") as builder:
            builder.copy("requirements.txt", "/app/requirements.txt")
            builder.add_line("RUN pip install -r /app/requirements.txt")
            image_id = builder.build()
    """

    base_directory: Path
    context: Optional[Path]
    platform: Optional[str]
    dockerfile_lines: list[str]
    temporary_directory: Optional[TemporaryDirectory[str]]

    def __init__(
        self,
        base_image: str,
        base_directory: Optional[Path] = None,
        platform: Optional[str] = None,
        context: Optional[Path] = None,
    ) -> None:
        """Create an ImageBuilder.

        Args:
            base_image: the image for the ``FROM`` line.
            base_directory: where relative copy sources are found; defaults to
                ``context``, else the current directory.
            platform: the target platform, e.g. ``"linux/amd64"``.
            context: build in this folder instead of a temporary one; it must not
                already contain a ``Dockerfile``.

        Raises:
            DockerfileExistsError: ``context`` already has a ``Dockerfile``.
        """
        _args.text("base_image", base_image)
        _args.optional_text("platform", platform)
        for arg, value in (("base_directory", base_directory), ("context", context)):
            if value is not None:
                _args.path(arg, value)
        self.base_directory = base_directory or context or Path().absolute()
        self.temporary_directory = None
        self.context = context
        self.platform = platform
        self.dockerfile_lines = []

        if self.context:
            dockerfile_path = self.context / "Dockerfile"
            if dockerfile_path.exists():
                # build() writes and then deletes context/Dockerfile: never clobber a user's.
                raise DockerfileExistsError(
                    f"There is already a Dockerfile at {context}", dockerfile_path
                )

        self.add_line(f"FROM {base_image}")

    def __enter__(self: _Builder) -> _Builder:
        if self.context and not self.temporary_directory:
            return self
        self.temporary_directory = TemporaryDirectory()
        self.context = Path(self.temporary_directory.__enter__())
        return self

    def __exit__(
        self,
        exc: Optional[type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        if not self.temporary_directory:
            return
        self.temporary_directory.__exit__(exc, value, traceback)
        self.temporary_directory = None
        self.context = None

    def _require_context(self) -> Path:
        if not self.context:
            raise ContextError(
                "No context available: use the ImageBuilder in a 'with' block "
                "(for a temporary context) or pass context="
            )
        if not self.context.is_dir():
            raise ContextPathNotFoundError(
                f"build context {str(self.context)!r} does not exist or is not a directory",
                self.context,
            )
        return self.context

    def add_line(self, line: str) -> None:
        """Add a line to this image's Dockerfile."""
        self.add_lines([line])

    def add_lines(self, lines: Iterable[str]) -> None:
        """Add lines to this image's Dockerfile."""
        self.dockerfile_lines.extend(lines)

    def _relative_source(self, source: Union[str, Path]) -> Path:
        """``source`` relative to ``base_directory``; refuse anything outside it."""
        path = Path(source)
        base = self.base_directory.resolve()
        if path.is_absolute():
            try:
                return path.resolve().relative_to(base)
            except ValueError:
                raise ContextError(
                    f"cannot copy {str(source)!r}: it is outside the base directory "
                    f"{str(base)!r}, and Docker can only COPY files inside the build context",
                    path,
                ) from None
        # Prefect does not check this and would write '../x' outside the temporary context.
        normalized = os.path.normpath(path)
        if normalized == ".." or normalized.startswith(".." + os.sep):
            raise ContextError(
                f"cannot copy {str(source)!r}: it is outside the base directory {str(base)!r}",
                path,
            )
        return path

    def copy(self, source: Union[str, Path], destination: Union[str, PurePosixPath]) -> None:
        """Copy a file or folder (relative to ``base_directory``) into the image.

        With a temporary context the file is copied into it now; with a given context
        it is assumed to be there already (as in Prefect), only the ``COPY`` is added.

        Raises:
            ContextError: no context yet, or ``source`` is outside ``base_directory``.
            ContextPathNotFoundError: ``source`` does not exist.
        """
        context = self._require_context()
        if not isinstance(destination, PurePosixPath):
            destination = PurePosixPath(destination)
        source = self._relative_source(source)

        if self.temporary_directory:
            origin = self.base_directory / source
            if not os.path.lexists(origin):
                raise ContextPathNotFoundError(
                    f"cannot copy {str(origin)!r} into the image: it does not exist", origin
                )
            os.makedirs(context / source.parent, exist_ok=True)
            if origin.is_dir():
                # dirs_exist_ok lets copy(".", ...) work; Prefect's fails on the existing context.
                shutil.copytree(origin, context / source, dirs_exist_ok=True)
            else:
                shutil.copy2(origin, context / source)

        self.add_line(f"COPY {source} {destination}")

    def write_text(self, text: str, destination: Union[str, PurePosixPath]) -> None:
        """Write ``text`` to ``destination`` in the image (via a content-named file)."""
        context = self._require_context()
        if not isinstance(destination, PurePosixPath):
            destination = PurePosixPath(destination)
        # Named by content hash so equal texts share one file and the layer cache hits.
        source_hash = hashlib.sha256(text.encode()).hexdigest()
        (context / f".{source_hash}").write_text(text, encoding="utf-8")
        self.add_line(f"COPY .{source_hash} {destination}")

    def build(self, pull: bool = False, stream_progress_to: Optional[TextIO] = None) -> str:
        """Build the image from the current Dockerfile lines and context.

        Args:
            pull: pull the base image even if it is present locally.
            stream_progress_to: a text stream that receives the build output.

        Returns:
            The image ID.
        """
        from .dockerutils import build_image  # lazy: keeps docker-py out of import time

        context = self._require_context()
        dockerfile_path = context / "Dockerfile"
        with dockerfile_path.open("w", encoding="utf-8") as dockerfile:
            dockerfile.writelines(line + "\n" for line in self.dockerfile_lines)
        try:
            return build_image(
                context,
                platform=self.platform,
                pull=pull,
                stream_progress_to=stream_progress_to,
            )
        finally:
            os.unlink(dockerfile_path)

    # The assert_* helpers raise AssertionError explicitly (Prefect uses `assert`, which
    # `python -O` strips, turning every check into a silent pass).

    def assert_has_line(self, line: str) -> None:
        """Raise ``AssertionError`` unless ``line`` is in the Dockerfile."""
        if line not in self.dockerfile_lines:
            all_lines = _format_lines(self.dockerfile_lines, 0, len(self.dockerfile_lines))
            raise AssertionError(
                f"Expected {line!r} not found in Dockerfile.  Dockerfile:\n{all_lines}"
            )

    def assert_line_absent(self, line: str) -> None:
        """Raise ``AssertionError`` if ``line`` is in the Dockerfile."""
        if line not in self.dockerfile_lines:
            return
        i = self.dockerfile_lines.index(line)
        surrounding = _format_lines(self.dockerfile_lines, i - 2, i + 3)
        raise AssertionError(
            f"Unexpected {line!r} found in Dockerfile at line {i + 1}.  "
            f"Surrounding lines:\n{surrounding}"
        )

    def assert_line_before(self, first: str, second: str) -> None:
        """Raise ``AssertionError`` unless ``first`` appears before ``second``."""
        self.assert_has_line(first)
        self.assert_has_line(second)
        first_index = self.dockerfile_lines.index(first)
        second_index = self.dockerfile_lines.index(second)
        if first_index < second_index:
            return
        surrounding = _format_lines(self.dockerfile_lines, second_index - 2, first_index + 3)
        raise AssertionError(
            f"Expected {first!r} to appear before {second!r} in the Dockerfile, but "
            f"{first!r} was at line {first_index + 1} and {second!r} as at line "
            f"{second_index + 1}.  Surrounding lines:\n{surrounding}"
        )

    def assert_line_after(self, second: str, first: str) -> None:
        """Raise ``AssertionError`` unless ``second`` appears after ``first``."""
        self.assert_line_before(first, second)

    def assert_has_file(self, source: Path, container_path: PurePosixPath) -> None:
        """Raise ``AssertionError`` unless ``source`` is copied to ``container_path``."""
        if Path(source).is_absolute():
            source = self._relative_source(source)
        self.assert_has_line(f"COPY {source} {container_path}")


def _check_context(context: Optional[Path]) -> Path:
    if not context:
        return Path.cwd()
    context = Path(context)
    if not context.is_dir():
        raise ContextPathNotFoundError(
            f"build context {str(context)!r} does not exist or is not a directory", context
        )
    return context


def default_dockerfile_text(context: Optional[Path] = None, *, base_image: Optional[str] = None) -> str:
    """The Dockerfile Prefect's ``generate_default_dockerfile`` writes, without writing it.

    ``FROM`` the matching Prefect image (or ``base_image``), install
    ``requirements.txt`` with ``uv pip install`` if the context has one, copy the
    context to ``/opt/prefect/<folder name>/`` and make that the working directory.

    Args:
        context: the build context folder; defaults to the current directory.
        base_image: the ``FROM`` image; defaults to :func:`get_prefect_image_name`.

    Raises:
        ContextPathNotFoundError: ``context`` is not an existing folder.
    """
    context = _check_context(context)
    # abspath (not resolve: symlinked folders keep their name) so "." and ".." name the
    # real folder; Prefect would write "/opt/prefect//" for Path(".").
    dir_name = Path(os.path.abspath(context)).name
    lines = [f"FROM {base_image or get_prefect_image_name()}"]
    if (context / "requirements.txt").exists():
        lines.append(f"COPY requirements.txt /opt/prefect/{dir_name}/requirements.txt")
        lines.append(f"RUN uv pip install -r /opt/prefect/{dir_name}/requirements.txt")
    lines.append(f"COPY . /opt/prefect/{dir_name}/")
    lines.append(f"WORKDIR /opt/prefect/{dir_name}/")
    return "".join(line + "\n" for line in lines)


@contextmanager
def generate_default_dockerfile(context: Optional[Path] = None) -> Iterator[Path]:
    """Write the default Dockerfile into ``context``, yield its path, delete it on exit.

    Prefect-compatible (see :func:`default_dockerfile_text` for the content).

    Raises:
        DockerfileExistsError: ``context`` already has a ``Dockerfile`` (also a
            ``RuntimeError``, as Prefect raises).
        ContextPathNotFoundError: ``context`` is not an existing folder.
    """
    context = _check_context(context)
    text = default_dockerfile_text(context)
    dockerfile = context / "Dockerfile"
    if dockerfile.exists():
        raise DockerfileExistsError(
            f"Failed to generate Dockerfile: {str(dockerfile)!r} already exists; "
            "remove it or pass its path as the dockerfile to build",
            dockerfile,
        )
    dockerfile.write_text(text, encoding="utf-8")
    try:
        yield dockerfile
    finally:
        dockerfile.unlink(missing_ok=True)


# ---- reading Dockerfiles: which images does a build start from? ----------------------

_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-+])(?P<word>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def instructions(text: str) -> Iterator[tuple[str, str]]:
    """``(KEYWORD, rest)`` per instruction, continuations joined and comment lines dropped
    (comment lines are removed even inside a continuation, as Docker reads them)."""
    buf: list[str] = []

    def joined() -> Iterator[tuple[str, str]]:
        line = " ".join(part for part in buf if part)
        if line:
            keyword, _, rest = line.partition(" ")
            yield keyword.upper(), rest.strip()

    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        yield from joined()
        buf = []
    yield from joined()


def _substitute(text: str, values: Mapping[str, Optional[str]], missing: list[str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain")
        value = values.get(name)
        op = m.group("op")
        if op and op.endswith("-"):
            return value if value else m.group("word")
        if op and op.endswith("+"):
            return m.group("word") if value else ""
        if value is None:
            missing.append(name)
            return ""
        return value

    return _VAR.sub(repl, text)


def base_images(dockerfile_text: str, build_args: Optional[Mapping[str, Any]] = None) -> list[str]:
    """The images a Dockerfile builds from, in order: ``FROM`` images that are not earlier
    stages (nor ``scratch``), and the images of ``COPY --from=`` and ``RUN --mount=...,from=``.

    ``ARG``s declared before the first ``FROM`` are substituted (their defaults, overridden
    by ``build_args``), as Docker does.

    Raises:
        ValueError: a ``FROM`` uses an ``ARG`` that has no value, or names no image.
    """
    overrides = {str(k): str(v) for k, v in (build_args or {}).items() if v is not None}
    args: dict[str, Optional[str]] = {}
    stages: set[str] = set()
    bases: list[str] = []
    seen_from = False

    def add(image: str, line: str) -> None:
        missing: list[str] = []
        value = _substitute(image, args, missing).strip()
        if missing:
            raise ValueError(f"{line!r} uses build arg(s) {', '.join(sorted(set(missing)))} that have no value")
        if not value:
            raise ValueError(f"{line!r} names no image")
        if value.lower() == "scratch" or value.lower() in stages or value.isdigit():
            return
        if value not in bases:
            bases.append(value)

    for keyword, rest in instructions(dockerfile_text):
        line = f"{keyword} {rest}"
        if keyword == "ARG" and not seen_from:
            for token in shlex.split(rest):
                name, eq, default = token.partition("=")
                args[name] = overrides.get(name, default if eq else None)
        elif keyword == "FROM":
            seen_from = True
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words:
                raise ValueError(f"{line!r} names no image")
            add(words[0], line)
            if len(words) >= 3 and words[1].lower() == "as":
                stages.add(words[2].lower())
        elif keyword in ("COPY", "ADD", "RUN"):
            for word in rest.split():
                if not word.startswith("--"):
                    break  # flags come first; the rest is the command or the sources
                if word.startswith("--from="):
                    add(word[len("--from="):], line)
                elif word.startswith("--mount="):
                    for option in word[len("--mount="):].split(","):
                        key, _, value = option.partition("=")
                        if key == "from" and value:
                            add(value, line)
    return bases
