"""Image metadata from Debian ``changelog`` and ``control`` files, and changelog updates.

The package name of the newest changelog entry is the image name and its version the
tag; ``Build-Depends``/``Depends`` of ``control`` name the parent images. Parsing and
writing go through python-debian, as in docker-pkg.
"""

from __future__ import annotations

import datetime
import email.utils
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from debian.changelog import Changelog, ChangelogParseError
from debian.deb822 import Packages

from .config import setting

TEMPLATE = "Dockerfile.template"
CHANGELOG = "changelog"
CONTROL = "control"

# docker-pkg's separator: a comma, then any whitespace (continuation lines included).
_DEP_SPLIT = re.compile(r"\s*,[\s\n]*")
# "name (>= 1.0)" or "name [arch]": only the name matters for ordering.
_DEP_NAME = re.compile(r"^\s*([^\s(\[|]+)")


@dataclass(frozen=True)
class ImageSpec:
    """What one image folder declares."""

    folder: Path
    name: str  #: short name (changelog package)
    version: str  #: tag (changelog version, plus the nightly suffix if any)
    depends: tuple[str, ...]  #: parent image short names, Build-Depends first


def read_depends(folder: Path) -> tuple[str, ...]:
    """Parent image names from ``folder/control`` (empty when there is no control file)."""
    path = folder / CONTROL
    if not path.exists():
        return ()
    deps: list[str] = []
    with open(path, "rb") as fh:
        for para in Packages.iter_paragraphs(fh, use_apt_pkg=False):
            for key in ("Build-Depends", "Depends"):
                for item in _DEP_SPLIT.split(para.get(key, "") or ""):
                    m = _DEP_NAME.match(item)
                    if m and m.group(1) not in deps:
                        deps.append(m.group(1))
    return tuple(deps)


def read_changelog(folder: Path) -> Changelog:
    """The parsed changelog of ``folder``; ``ValueError`` naming the file if it has no usable entry.

    Parsed leniently like docker-pkg (odd trailers are fine), but a changelog without
    a package name and version is an error rather than an image called "None".
    """
    path = folder / CHANGELOG
    try:
        with open(path, "rb") as fh:
            changelog = Changelog(fh, max_blocks=1)
    except ChangelogParseError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not changelog.package or changelog.version is None:
        raise ValueError(f"{path} has no entry with a package name and version")
    return changelog


def read_spec(folder: Path | str, nightly_format: Optional[str] = None, now: Optional[datetime.datetime] = None) -> ImageSpec:
    """Read the name, tag and parents declared in ``folder``.

    ``nightly_format`` (a ``strftime`` format) appends ``-<date>`` to the tag, like
    docker-pkg's ``--nightly``/``--snapshot``. Raises ``ValueError`` or ``OSError``
    naming the file when the metadata cannot be read.
    """
    folder = Path(folder)
    changelog = read_changelog(folder)
    version = str(changelog.version)
    if nightly_format:
        version += "-" + (now or datetime.datetime.now()).strftime(nightly_format)
    return ImageSpec(folder=folder, name=str(changelog.package), version=version, depends=read_depends(folder))


def new_tag(version: str, identifier: Optional[str] = "s") -> str:
    """The next update version after ``version``: ``1.0`` -> ``1.0-s1``, ``1.0-s1`` -> ``1.0-s2``.

    Same scheme as docker-pkg: only digits, dots and dashes before the update suffix
    are understood; anything else raises ``ValueError``.
    """
    identifier = identifier or ""
    m = re.match(r"^([\d\-\.]+?)(-{}(\d+))?$".format(re.escape(identifier)), version)
    if not m:
        raise ValueError(f"cannot derive an update version from {version!r} (expected digits, '.' and '-')")
    base, _, seq = m.groups()
    return f"{base}-{identifier}{1 if seq is None else int(seq) + 1}"


def _git_config(key: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def author(config: Mapping[str, Any]) -> tuple[str, str]:
    """Name and e-mail for a new changelog entry: ``$DEBFULLNAME``/``$DEBEMAIL``, git, then config."""
    name = os.environ.get("DEBFULLNAME") or _git_config("user.name") or setting(config, "fallback_author")
    mail = os.environ.get("DEBEMAIL") or _git_config("user.email") or setting(config, "fallback_email")
    return name, mail


def add_entry(
    spec: ImageSpec,
    reason: str,
    config: Mapping[str, Any],
    version: Optional[str] = None,
    when: Optional[datetime.datetime] = None,
) -> str:
    """Prepend a changelog entry to ``spec``'s folder and return its version.

    Without ``version`` the next update version (see :func:`new_tag`) of the
    changelog's own version is used. Each line of ``reason`` becomes a change line.
    """
    path = spec.folder / CHANGELOG
    with open(path, "rb") as fh:
        changelog = Changelog(fh)
    if version is None:
        version = new_tag(str(changelog.version), setting(config, "update_id"))
    name, mail = author(config)
    stamp = email.utils.format_datetime(when or datetime.datetime.now().astimezone())
    changelog.new_block(
        package=spec.name,
        version=version,
        distributions=setting(config, "distribution"),
        urgency="high",
        author=f"{name} <{mail}>",
        date=stamp,
    )
    changelog.add_change("")
    for line in reason.split("\n"):
        changelog.add_change(f"   {line}")
    changelog.add_change("")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as out:
        changelog.write_to_open_file(out)
    os.replace(tmp, path)  # never leave a half-written changelog behind
    return version


__all__ = ["CHANGELOG", "CONTROL", "TEMPLATE", "ImageSpec", "add_entry", "author", "new_tag", "read_changelog", "read_depends", "read_spec"]
