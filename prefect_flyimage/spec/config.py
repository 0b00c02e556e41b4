"""Configuration the declarative :class:`~prefect_flyimage.spec.Image` reads.

Settings live in the ``[tool.prefect-flyimage]`` table of the nearest ``pyproject.toml``
(searched from the current directory upwards) and can be overridden by environment
variables, so CI can retarget images without editing code::

    [tool.prefect-flyimage]
    registry = "ghcr.io/acme"                       # PREFECT_FLYIMAGE_REGISTRY
    debian_base = "python:{python_version}-slim-bookworm"   # PREFECT_FLYIMAGE_DEBIAN_BASE
    build_network = "host"                          # PREFECT_FLYIMAGE_BUILD_NETWORK

    [tool.prefect-flyimage.images]                  # Image.from_ref_name("default")
    default = "ghcr.io/acme/base:2024-06"           # PREFECT_FLYIMAGE_IMAGE_DEFAULT

Also here: the PEP 723 (inline script metadata) reader used by ``Image.from_uv_script``.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

from ..errors import SpecError

__all__ = [
    "ENV_PREFIX",
    "ScriptMetadata",
    "Settings",
    "choose_python_version",
    "env_key_for_ref_name",
    "load_settings",
    "read_script_metadata",
    "resolve_ref_name",
]

#: Prefix of every environment variable the spec reads.
ENV_PREFIX = "PREFECT_FLYIMAGE_"
#: ``PREFECT_FLYIMAGE_IMAGE_<NAME>`` names an image for ``Image.from_ref_name(name)``.
IMAGE_ENV_PREFIX = ENV_PREFIX + "IMAGE_"
TOOL_TABLE = "prefect-flyimage"
#: Default Debian Python base of ``from_debian_base(install_prefect=False)``.
DEFAULT_DEBIAN_BASE = "python:{python_version}-slim-bookworm"
#: Python minor versions the constructors choose from when a script constrains them.
SUPPORTED_PYTHONS: tuple[tuple[int, int], ...] = ((3, 10), (3, 11), (3, 12), (3, 13), (3, 14))


@dataclass(frozen=True)
class Settings:
    """The ``[tool.prefect-flyimage]`` table and where it came from (``path`` None: no file)."""

    path: Optional[Path]
    table: Mapping[str, Any]

    def get(self, key: str, env: Optional[str] = None) -> Optional[str]:
        """The setting ``key``; the environment variable ``env`` (if given and set) wins."""
        if env:
            value = os.environ.get(env)
            if value:
                return value
        value = self.table.get(key)
        if value is not None and not isinstance(value, str):
            # A number or table here is a typo in the file, not text to stringify.
            raise SpecError([f"{key} in [tool.{TOOL_TABLE}] of {self.path} must be a string, not {type(value).__name__} ({value!r:.60})"])
        return value or None

    @property
    def images(self) -> dict[str, str]:
        """The ``images`` sub-table (reference name -> image URI)."""
        images = self.table.get("images") or {}
        if not isinstance(images, Mapping):
            raise SpecError([f"[tool.{TOOL_TABLE}.images] in {self.path} must be a table of name = \"image uri\""])
        bad = [k for k, v in images.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise SpecError([
                f"[tool.{TOOL_TABLE}.images] in {self.path}: {k} must be an image URI string, not {images[k]!r:.60}"
                for k in bad
            ])
        return {str(k): v for k, v in images.items()}


def find_pyproject(start: Optional[Path] = None) -> Optional[Path]:
    """The nearest ``pyproject.toml`` with a ``[tool.prefect-flyimage]`` table, from ``start`` (cwd) up.

    A ``pyproject.toml`` without the table does not stop the search, so a sub-project
    inside a configured repository still finds the repository's settings.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            tool = _read_toml(candidate).get("tool", {})
            if isinstance(tool, Mapping) and TOOL_TABLE in tool:
                return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([f"{path} is not valid TOML: {exc}"]) from None
    except OSError:
        return {}


def load_settings(start: Optional[Path] = None) -> Settings:
    """Read the settings table (empty when no ``pyproject.toml`` has one)."""
    path = find_pyproject(start)
    if path is None:
        return Settings(None, {})
    table = _read_toml(path)["tool"][TOOL_TABLE]
    if not isinstance(table, Mapping):
        raise SpecError([f"[tool.{TOOL_TABLE}] in {path} must be a table, not {type(table).__name__}"])
    return Settings(path, table)


def env_key_for_ref_name(name: str) -> str:
    """``PREFECT_FLYIMAGE_IMAGE_<NAME>``: upper-cased, every other character than A-Z/0-9 as ``_``."""
    return IMAGE_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


def known_ref_names(settings: Optional[Settings] = None) -> dict[str, str]:
    """Every reference name configured, mapped to where it is defined."""
    settings = settings or load_settings()
    known = {name: f"{settings.path} [tool.{TOOL_TABLE}.images]" for name in settings.images}
    for key, value in os.environ.items():
        if key.startswith(IMAGE_ENV_PREFIX) and value and len(key) > len(IMAGE_ENV_PREFIX):
            name = key[len(IMAGE_ENV_PREFIX):].lower()
            if not any(env_key_for_ref_name(k) == key for k in known):
                known[name] = f"${key}"
    return known


def resolve_ref_name(name: str, settings: Optional[Settings] = None) -> str:
    """The image URI configured for reference ``name``; the environment wins over the file.

    Raises:
        SpecError: ``name`` is not configured; the message lists every known name.
    """
    value = os.environ.get(env_key_for_ref_name(name))
    if value:
        return value.strip()
    settings = settings or load_settings()
    images = settings.images
    if name in images:
        return images[name].strip()
    known = known_ref_names(settings)
    listing = ", ".join(f"{n!r} ({where})" for n, where in sorted(known.items())) or "none"
    where = str(settings.path) if settings.path else "no pyproject.toml with [tool.prefect-flyimage] above the current directory"
    raise SpecError(
        [
            f"unknown image reference name {name!r}; known names: {listing}. Define it under "
            f"[tool.{TOOL_TABLE}.images] ({where}) or set ${env_key_for_ref_name(name)}"
        ]
    )


# ---- PEP 723 inline script metadata ------------------------------------------------

# The reference regular expression of PEP 723.
_BLOCK = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")


@dataclass(frozen=True)
class ScriptMetadata:
    """The ``script`` block of a PEP 723 header."""

    requires_python: Optional[str]
    dependencies: tuple[str, ...]


def read_script_metadata(path: Path) -> ScriptMetadata:
    """Parse the ``# /// script`` block of ``path`` (TOML, via tomllib).

    Raises:
        SpecError: the file is unreadable, has no or several ``script`` blocks, or the
            block is not valid TOML or has fields of the wrong type.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([f"uv script {str(path)!r} cannot be read: {exc.strerror or exc}"]) from None
    blocks = [m for m in _BLOCK.finditer(text) if m.group("type") == "script"]
    if not blocks:
        raise SpecError([f"uv script {str(path)!r} has no '# /// script' metadata block (PEP 723)"])
    if len(blocks) > 1:
        raise SpecError([f"uv script {str(path)!r} has {len(blocks)} '# /// script' blocks; PEP 723 allows one"])
    content = "".join(
        line[2:] if line.startswith("# ") else line[1:]
        for line in blocks[0].group("content").splitlines(keepends=True)
    )
    try:
        data = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([f"the metadata block of uv script {str(path)!r} is not valid TOML: {exc}"]) from None
    requires = data.get("requires-python")
    deps = data.get("dependencies", [])
    problems = []
    if requires is not None and not isinstance(requires, str):
        problems.append(f"requires-python in uv script {str(path)!r} must be a string")
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        problems.append(f"dependencies in uv script {str(path)!r} must be a list of strings")
    if problems:
        raise SpecError(problems)
    return ScriptMetadata(requires, tuple(deps))


def python_satisfies(version: tuple[int, int], requires_python: Optional[str]) -> bool:
    """Whether Python ``major.minor`` can satisfy the ``requires-python`` specifier.

    A minor version satisfies it when any of its patch releases could (``>=3.11.4``
    accepts 3.11), the way installers pick an interpreter.
    """
    if not requires_python:
        return True
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier:
        raise SpecError([f"requires-python {requires_python!r} is not a valid version specifier"]) from None
    major, minor = version
    return any(spec.contains(f"{major}.{minor}.{patch}", prereleases=True) for patch in range(0, 40))


def choose_python_version(requires_python: Optional[str], preferred: tuple[int, int]) -> tuple[int, int]:
    """``preferred`` if it satisfies ``requires_python``, else the newest supported version that does."""
    if python_satisfies(preferred, requires_python):
        return preferred
    for candidate in reversed(SUPPORTED_PYTHONS):
        if python_satisfies(candidate, requires_python):
            return candidate
    return preferred  # nothing fits: validate() reports it
