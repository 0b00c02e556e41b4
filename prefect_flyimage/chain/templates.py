"""Rendering ``Dockerfile.template`` files the way docker-pkg does.

Jinja2 with ``StrictUndefined`` (an undefined variable is an error), the config keys as
template variables, and docker-pkg's filters: ``image_tag``, ``upstream_version``,
``apt_install``, ``apt_remove``, ``uid`` and ``add_user``. Unlike docker-pkg, each
tree has its own renderer (no class-level state shared between trees or threads) and
``image_tag`` understands registries with a port.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, MutableMapping

import debian.debian_support
import jinja2
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..errors import redact
from .changelog import TEMPLATE
from .config import image_name, secrets
from .errors import TreeProblem, TreeSpecError

log = logging.getLogger("prefect_flyimage.chain")


def _text(config: Mapping[str, Any], key: str) -> str:
    # Jinja renders a missing variable of a lax template as "", anything else via str().
    return str(config[key]) if key in config else ""


def apt_install(packages: str, config: Mapping[str, Any]) -> str:
    """Shell for installing ``packages`` with apt (docker-pkg's ``apt_install`` output)."""
    packages = packages.replace("\n", " ")  # newline separated lists are allowed
    opts = _text(config, "apt_options")
    proxy = config.get("apt_only_proxy")
    lines = []
    if proxy:
        lines.append(f"echo 'Acquire::http::Proxy \"{proxy}\";' > /etc/apt/apt.conf.d/80_proxy \\")
        lines.append(f"    && apt-get update {opts} \\")
    else:
        lines.append(f"apt-get update {opts} \\")
    lines.append("    && DEBIAN_FRONTEND=noninteractive \\")
    lines.append(f"    apt-get install {opts} --yes {packages} --no-install-recommends \\")
    if proxy:
        lines.append("    && rm -f /etc/apt/apt.conf.d/80_proxy \\")
    lines.append("    && apt-get clean && rm -rf /var/lib/apt/lists/* ")
    return "\n".join(lines)


def apt_remove(packages: str, config: Mapping[str, Any]) -> str:
    """Shell for purging ``packages`` with apt (docker-pkg's ``apt_remove`` output).

    With a proxy, docker-pkg glues ``&& \\`` straight onto ``apt-get``; kept as is so
    rendered Dockerfiles stay byte-identical.
    """
    proxy = config.get("apt_only_proxy")
    head = f"echo 'Acquire::http::Proxy \"{proxy}\";' > /etc/apt/apt.conf.d/80_proxy  && \\" if proxy else ""
    lines = [f"{head}apt-get update && DEBIAN_FRONTEND=noninteractive apt-get remove --yes --purge {packages} \\"]
    if proxy:
        lines.append("    && rm -f /etc/apt/apt.conf.d/80_proxy \\")
    lines.append("    && apt-get clean && rm -rf /var/lib/apt/lists/* ")
    return "\n".join(lines)


def upstream_version(image_with_tag: str) -> str:
    """The upstream part of an image's Debian version: ``img:1.63.0-1`` -> ``1.63.0``."""
    name, sep, tag = image_with_tag.rpartition(":")
    if not sep or not name or "/" in tag:
        raise ValueError(f"upstream_version({image_with_tag}) -> no image name found in input")
    if "-" not in tag:
        return tag
    # Only the first -suffix is a Debian revision (1.63.0-1-20241211 keeps "1.63.0-1").
    if tag.count("-") > 1:
        tag = "-".join(tag.split("-")[:2])
    return str(debian.debian_support.BaseVersion(tag).upstream_version)


def split_label(label: str) -> tuple[str, str | None]:
    """``registry:5000/ns/img:tag`` -> (``registry:5000/ns/img``, ``tag``); no tag -> None."""
    name, sep, tag = label.rpartition(":")
    if not sep or "/" in tag:
        return label, None
    return name, tag


class TemplateRenderer:
    """Renders the templates of one tree with its config and known images.

    ``known_images`` maps a full image name (``registry/ns/name``) to its label
    (``name:tag``); the builder fills it while scanning, ``base_images`` are added
    here. The mapping is read at render time, as docker-pkg's set was.
    """

    def __init__(self, config: Mapping[str, Any], known_images: MutableMapping[str, str] | None = None) -> None:
        self.config = config
        self.known_images: MutableMapping[str, str] = known_images if known_images is not None else {}
        self.base_images: dict[str, str] = {}
        for label in config.get("base_images") or []:
            name, tag = split_label(str(label))
            if tag is not None:
                self.base_images.setdefault(name, str(label))
        self._env = Environment(extensions=["jinja2.ext.do"], undefined=StrictUndefined)
        self._env.filters.update(self.filters())

    def filters(self) -> dict[str, Callable[..., str]]:
        """The docker-pkg filters, bound to this tree."""
        return {
            "image_tag": self.image_tag,
            "upstream_version": upstream_version,
            "apt_install": lambda pkgs: apt_install(pkgs, self.config),
            "apt_remove": lambda pkgs: apt_remove(pkgs, self.config),
            "uid": self.uid,
            "add_user": self.add_user,
        }

    def image_tag(self, short_name: str) -> str:
        """``name`` -> ``registry/ns/name:tag`` of a scanned image or a base image."""
        full = image_name(self.config, short_name)
        label = self.known_images.get(full) or self.base_images.get(full)
        if label is None:
            known = sorted({*self.known_images.values(), *self.base_images.values()})
            raise ValueError(f"Image {full} not found, or it has no tag (known={known})")
        return label

    def uid(self, user: str) -> str:
        """The numeric uid of ``user`` from ``known_uid_mappings``, or the name if unmapped."""
        mappings = self.config.get("known_uid_mappings") or {}
        if user not in mappings:
            log.warning("UID mapping for user %s not found", user)
            return user
        return str(mappings[user])

    def add_user(self, user: str) -> str:
        """Shell creating ``user`` and its group with the mapped uid (an unmapped user is an error)."""
        uid = self.uid(user)
        if uid == user:
            raise ValueError(f"No mapping found for user '{user}'")
        return (
            f"groupadd -o -g {uid} -r {user} && "
            f"useradd -l -o -r -m -d /var/lib/{user} -g {user} -u {uid} {user}"
        )

    def render(self, folder: Path | str, image: str | None = None) -> str:
        """Render ``folder/Dockerfile.template``.

        Raises :class:`TreeSpecError` with one ``template`` problem naming the folder
        (and the template line, when Jinja knows it) on any template error.
        """
        folder = Path(folder)
        env = self._env.overlay(loader=FileSystemLoader(str(folder)))
        try:
            return env.get_template(TEMPLATE).render(**self.config)
        except Exception as exc:  # noqa: BLE001 - any template failure is a spec problem
            raise TreeSpecError([TreeProblem("template", self._describe(exc, folder), (str(folder),), image)]) from None

    def _describe(self, exc: BaseException, folder: Path) -> str:
        line = getattr(exc, "lineno", None)
        if line is None:
            # Runtime errors: find the template frame in the traceback for the line number.
            for frame, lineno in traceback.walk_tb(sys.exc_info()[2]):
                if frame.f_code.co_filename.endswith(TEMPLATE):
                    line = lineno
        where = f"{TEMPLATE}" + (f" line {line}" if line else "")
        kind = "syntax error" if isinstance(exc, jinja2.TemplateSyntaxError) else type(exc).__name__
        return redact(f"{where}: {kind}: {exc}", secrets(self.config))


__all__ = ["TemplateRenderer", "apt_install", "apt_remove", "split_label", "upstream_version"]
