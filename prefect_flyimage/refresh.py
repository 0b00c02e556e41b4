"""Keeping images fresh: find the stale ones, rebuild them and what builds on them, report.

An image is **stale** when

- a base image it builds on (every external ``FROM`` and ``COPY --from`` of its
  Dockerfile) now has another digest than the one it was built from, or
- it is older than its ``max_age``.

Design
------
The digests of the bases are a *label of the build* (:data:`BASE_LABEL`). Labels enter
the plan hash, so the content tag is a function of the base digests as well as of the
Dockerfile and context: a moved base gives a new content tag. "Is this image stale?" is
therefore "does the registry hold the content tag of the plan made with today's base
digests?" — one registry call, correct without any stored state, on any machine, and
an image built by hand from the same inputs and bases gets the same tag. Descendants
follow without bookkeeping: when a parent is republished, the child's base digest moves.

Base digests come from the base's registry (``Engine.registry_digest``); a base named
without a registry (``flyimage/busybox:latest``: Docker Hub syntax, but on a host without
Docker Hub it exists only locally) uses the local image id instead (``base_source``
overrides the choice). Before a rebuild, registry bases are pulled *by digest* and
tagged, so the build uses exactly the base the label names.

A small state file remembers what the previous run saw — only to explain a rebuild
(which base moved, from what to what, which image digest was replaced) and to date
images. Losing it changes no decision.

This module is the library part (configuration, Dockerfile parsing, checks, reports);
``flows/image_refresh.py`` runs it as a Prefect flow with one task per step.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
import re
import runpy
import shlex
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Optional, Sequence

import pendulum
import yaml

from .credentials import RegistryCredentials, as_credentials, registry_host
from .errors import FlyImageError, InvalidReferenceError, SpecError, redact
from .names import ImageRef
from .plan import PLAN_LABEL, BuildPlan

if TYPE_CHECKING:
    from .chain.builder import DockerBuilder
    from .engine import Engine

__all__ = [
    "BASE_LABEL",
    "BaseDigest",
    "BaseImageMissing",
    "Check",
    "CredentialBook",
    "ImageEntry",
    "ImageReport",
    "RefreshConfig",
    "RefreshConfigError",
    "RefreshState",
    "RegistryLogin",
    "VerificationError",
    "base_label",
    "check_plan",
    "entry_order",
    "external_bases",
    "image_created",
    "labelled_plan",
    "load_config",
    "parse_base_label",
    "parse_duration",
    "pin_base",
    "prepared_plan",
    "resolve_base",
    "summary_markdown",
    "verify_image",
]

#: Label holding the base digests an image was built from (``ref=digest,...``, sorted).
BASE_LABEL = "io.prefect-flyimage.base-digests"
#: Default configuration, relative to the working directory (the repository root).
DEFAULT_CONFIG = "flows/refresh.yaml"
#: Where the state file goes when the configuration names none.
DEFAULT_STATE_DIR = "/var/tmp/prefect-flyimage"

BASE_SOURCES = ("auto", "registry", "local")


class RefreshConfigError(SpecError):
    """The refresh configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: Iterable[str], path: Optional[Path] = None) -> None:
        super().__init__(problems)
        self.path = path
        where = f" in {path}" if path else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        self.args = (f"{len(self.problems)} problem(s) in the refresh configuration{where}:\n{lines}",)


class BaseImageMissing(FlyImageError):
    """A base image named by a Dockerfile is in neither its registry nor the daemon."""


class VerificationError(FlyImageError):
    """A rebuilt image failed its verification; it is not published."""


# ---- durations ------------------------------------------------------------------------

_UNITS = {
    "w": "weeks", "wk": "weeks", "week": "weeks", "weeks": "weeks",
    "d": "days", "day": "days", "days": "days",
    "h": "hours", "hr": "hours", "hrs": "hours", "hour": "hours", "hours": "hours",
    "m": "minutes", "min": "minutes", "mins": "minutes", "minute": "minutes", "minutes": "minutes",
    "s": "seconds", "sec": "seconds", "secs": "seconds", "second": "seconds", "seconds": "seconds",
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]+)")
_DURATION_FILLER = re.compile(r"(\s|,|\band\b)*")


def parse_duration(value: Any) -> pendulum.Duration:
    """A positive :class:`pendulum.Duration` from ISO 8601 (``P7D``, ``PT36H``), words
    (``7 days``, ``1 week 2 days``, ``36h``, ``90 minutes``) or a number of seconds.

    Months and years are refused: their length varies, say days instead.

    Raises:
        ValueError: naming the value and the accepted forms.
    """
    if isinstance(value, pendulum.Duration):
        duration = value
    elif isinstance(value, dt.timedelta):
        duration = pendulum.duration(seconds=value.total_seconds())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        duration = pendulum.duration(seconds=float(value))
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text[:1] in "pP":
            try:
                parsed = pendulum.parse(text.upper())
            except Exception:  # noqa: BLE001 - pendulum raises several types
                parsed = None
            if not isinstance(parsed, pendulum.Duration):
                raise ValueError(f"max_age {value!r} is not an ISO 8601 duration such as 'P7D' or 'PT12H'")
            duration = parsed
        else:
            amounts: dict[str, float] = {}
            pos = 0
            for match in _DURATION_PART.finditer(text):
                gap = text[pos:match.start()]
                unit = _UNITS.get(match.group(2).lower())
                if _DURATION_FILLER.fullmatch(gap) is None or unit is None:
                    break
                amounts[unit] = amounts.get(unit, 0.0) + float(match.group(1))
                pos = match.end()
            else:
                if amounts and _DURATION_FILLER.fullmatch(text[pos:]):
                    duration = pendulum.duration(**amounts)
                    return _positive(duration, value)
            raise ValueError(
                f"max_age {value!r} is not a duration: use ISO 8601 ('P7D', 'PT12H') or words "
                "('7 days', '1 week 2 days', '36h', '90 minutes')"
            )
    else:
        raise ValueError(f"max_age {value!r} is not a duration (ISO 8601 text, words or seconds)")
    if getattr(duration, "years", 0) or getattr(duration, "months", 0):
        raise ValueError(f"max_age {value!r} uses months or years, whose length varies; give days instead")
    return _positive(duration, value)


def _positive(duration: pendulum.Duration, value: Any) -> pendulum.Duration:
    if duration.total_seconds() <= 0:
        raise ValueError(f"max_age {value!r} must be longer than zero")
    return duration


# ---- Dockerfiles: which images does a build start from? -------------------------------

_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-+])(?P<word>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def _logical_lines(text: str) -> Iterator[str]:
    """Instructions with ``\\`` continuations joined and comment lines dropped (as Docker reads them)."""
    buf: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue  # comment lines are removed even inside a continuation
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        line = " ".join(part for part in buf if part)
        buf = []
        if line:
            yield line
    if buf:
        yield " ".join(part for part in buf if part)


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


def external_bases(dockerfile_text: str, build_args: Optional[Mapping[str, Any]] = None) -> list[str]:
    """The images a Dockerfile builds from, in order: ``FROM`` images that are not earlier
    stages (nor ``scratch``), and the images of ``COPY --from=`` and ``RUN --mount=...,from=``.

    ``ARG``s declared before the first ``FROM`` are substituted (their defaults, overridden
    by ``build_args``), as Docker does.

    Raises:
        ValueError: a ``FROM`` uses an ``ARG`` that has no value, or names no image.
    """
    overrides = {str(k): str(v) for k, v in (build_args or {}).items()}
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

    for line in _logical_lines(dockerfile_text):
        instruction, _, rest = line.partition(" ")
        keyword = instruction.upper()
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


# ---- base digests ---------------------------------------------------------------------


@dataclass(frozen=True)
class BaseDigest:
    """Which image a base reference named when it was looked up."""

    ref: str  #: as written in the Dockerfile (build args substituted)
    digest: str  #: registry manifest digest, or the local image id (``source="local"``)
    source: str  #: ``registry``, ``local`` or ``pinned`` (the Dockerfile names a digest)

    @property
    def token(self) -> str:
        """``ref=digest`` (``ref=local:sha256:...`` for a local image id): one part of the label."""
        return f"{self.ref}=local:{self.digest}" if self.source == "local" else f"{self.ref}={self.digest}"


def base_label(bases: Iterable[BaseDigest]) -> str:
    """The :data:`BASE_LABEL` value for ``bases``: sorted ``ref=digest`` tokens, comma-separated."""
    return ",".join(sorted(b.token for b in bases))


def parse_base_label(text: Optional[str]) -> dict[str, str]:
    """``ref -> digest`` (``local:sha256:...`` for local ids) from a :data:`BASE_LABEL` value."""
    found: dict[str, str] = {}
    for token in (text or "").split(","):
        ref, sep, digest = token.strip().rpartition("=")
        if sep and ref:
            found[ref] = digest
    return found


def resolve_base(
    engine: "Engine", ref: str, credentials: Optional[RegistryCredentials] = None, source: str = "auto"
) -> BaseDigest:
    """Look up the digest ``ref`` names now.

    ``source``: ``registry`` asks the base's registry; ``local`` takes the daemon's image
    id; ``auto`` (default) asks the registry when ``ref`` names one
    (``127.0.0.1:5001/base:1``, ``ghcr.io/org/img``) and the daemon otherwise. A reference
    pinned to a digest cannot move and is returned as is.

    Raises:
        BaseImageMissing: the registry (or the daemon) does not have the image.
        AuthenticationError, RegistryUnavailable: from the registry.
    """
    parsed = ImageRef.parse(ref)
    if parsed.digest:
        return BaseDigest(ref, parsed.digest, "pinned")
    if source not in BASE_SOURCES:
        raise ValueError(f"base_source {source!r} is not one of {', '.join(BASE_SOURCES)}")
    mode = source if source != "auto" else ("registry" if parsed.registry else "local")
    if mode == "registry":
        digest = engine.registry_digest(parsed, credentials)
        if digest is None:
            raise BaseImageMissing(f"base image {ref} is not in its registry ({parsed.registry or 'docker.io'})")
        return BaseDigest(ref, digest, "registry")
    info = engine.local_image(parsed)
    if info is None:
        raise BaseImageMissing(
            f"base image {ref} names no registry and is not in the Docker daemon; build or load it, "
            "or set base_source: registry to look it up on Docker Hub"
        )
    return BaseDigest(ref, str(info["Id"]), "local")


def pin_base(engine: "Engine", base: BaseDigest, credentials: Optional[RegistryCredentials] = None) -> bool:
    """Make the daemon's ``base.ref`` the image ``base.digest`` names, so a build uses exactly it.

    Registry bases are pulled by digest and tagged as ``base.ref`` (what ``docker pull``
    of the tag would do, without the race of the tag moving in between). Local and pinned
    bases need nothing. Returns True when something was pulled.
    """
    if base.source != "registry":
        return False
    local = engine.local_image(base.ref)
    if local is not None and any(str(rd).endswith("@" + base.digest) for rd in local.get("RepoDigests") or []):
        return False  # the tag already names this manifest
    parsed = ImageRef.parse(base.ref)
    image_id = engine.pull(parsed.with_digest(base.digest), credentials)
    engine.tag(image_id, base.ref)
    return True


def labelled_plan(plan: BuildPlan, bases: Sequence[BaseDigest], **changes: Any) -> BuildPlan:
    """``plan`` with :data:`BASE_LABEL` naming ``bases`` (so the content tag follows them),
    and any other ``changes`` (fields of :class:`BuildPlan`)."""
    labels = dict(plan.labels)
    if bases:
        labels[BASE_LABEL] = base_label(bases)
    else:
        labels.pop(BASE_LABEL, None)
    return _replan(plan, labels=tuple(labels.items()), **changes)


def _replan(plan: BuildPlan, **changes: Any) -> BuildPlan:
    """``plan.with_(**changes)`` for changes that keep the context (labels, tags, how to build)."""
    new = plan.with_(**changes)
    if "build_context" in plan.__dict__:
        # Same folder, same file list: keep the context object the plan was made with
        # (a staged spec context is hashed without the persistent stat cache).
        new.__dict__["build_context"] = plan.__dict__["build_context"]
    return new


def image_created(
    engine: "Engine", ref: ImageRef | str, digest: str, credentials: Optional[RegistryCredentials] = None
) -> pendulum.DateTime:
    """When the image the registry holds as ``ref`` (manifest ``digest``) was built.

    Read from the daemon when it has that very image (its ``RepoDigests`` name the
    digest); pulled by digest otherwise.
    """
    name = ImageRef.parse(str(ref)).name
    pinned = f"{name}@{digest}"
    info = engine.local_image(ref)
    if info is None or pinned not in (info.get("RepoDigests") or []):
        engine.pull(ImageRef.parse(pinned), credentials)
        info = engine.local_image(pinned)
    if info is None:
        raise FlyImageError(f"cannot read the creation time of {pinned}: not in the daemon after pulling it")
    created = pendulum.parse(str(info["Created"]))
    assert isinstance(created, pendulum.DateTime)
    return created


def verify_image(
    engine: "Engine",
    image_id: str,
    plan: BuildPlan,
    command: Sequence[str] = (),
    *,
    timeout: Optional[float] = 300,
    secrets: Iterable[Optional[str]] = (),
) -> str:
    """Check a rebuilt image before it is published; return what was checked.

    Always: the daemon's image carries the plan's hash and base digests (it is the image
    of *this* plan, built from these bases). With ``command``: it runs in the image with
    no network and must exit 0.

    Raises:
        VerificationError: naming what failed (command output tail, secrets redacted).
    """
    info = engine.local_image(image_id)
    if info is None:
        raise VerificationError(f"image {image_id} is not in the Docker daemon")
    labels = (info.get("Config") or {}).get("Labels") or {}
    if labels.get(PLAN_LABEL) != plan.hash:
        raise VerificationError(f"image {image_id[:19]} was not built from plan {plan.content_tag} (label {PLAN_LABEL})")
    expected = dict(plan.labels).get(BASE_LABEL)
    if labels.get(BASE_LABEL) != expected:
        raise VerificationError(
            f"image {image_id[:19]} records base digests {labels.get(BASE_LABEL)!r}, expected {expected!r}"
        )
    if not command:
        return "labels"
    code, output = engine.run(image_id, list(command), network="none", timeout=timeout)
    if code != 0:
        tail = redact("\n".join(output.strip().splitlines()[-20:]), secrets)
        raise VerificationError(f"verification command {shlex.join(command)!r} exited {code}:\n{tail}")
    return f"labels, {shlex.join(command)}"


# ---- configuration --------------------------------------------------------------------

_ENV = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def _expand(value: Any, missing: list[str]) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in every string of a YAML value (no other ``$`` syntax)."""
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            env = os.environ.get(m.group("name"))
            if env:
                return env
            if m.group("default") is not None:
                return m.group("default")
            missing.append(m.group("name"))
            return m.group(0)

        return _ENV.sub(repl, value)
    if isinstance(value, list):
        return [_expand(v, missing) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, missing) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class RegistryLogin:
    """How to log in to one registry: a user with a password in an environment variable,
    or a saved prefect-docker ``DockerRegistryCredentials`` block. No secret is stored here."""

    registry: str
    username: Optional[str] = None
    password_env: Optional[str] = None
    block: Optional[str] = None

    def credentials(self) -> RegistryCredentials:
        """Read the secret (environment or block) now.

        Raises:
            RefreshConfigError: the variable is unset or the block cannot be loaded.
        """
        if self.block:
            try:
                from prefect_docker.credentials import DockerRegistryCredentials

                block = DockerRegistryCredentials.load(self.block, _sync=True)  # type: ignore[call-arg]
            except Exception as exc:  # noqa: BLE001 - a missing block, an unreachable API
                raise RefreshConfigError([f"registry {self.registry}: cannot load block {self.block!r}: {exc}"]) from None
            creds = as_credentials(block, self.registry)
            assert creds is not None
            return RegistryCredentials(self.registry, creds.username, creds.password)
        password = os.environ.get(self.password_env or "")
        if not password:
            raise RefreshConfigError([f"registry {self.registry}: environment variable {self.password_env} is not set"])
        return RegistryCredentials(self.registry, self.username or "", password)


class CredentialBook:
    """Credentials by registry host, for bases, pushes and trees."""

    def __init__(self, credentials: Iterable[RegistryCredentials] = ()) -> None:
        self._by_host: dict[str, RegistryCredentials] = {}
        for creds in credentials:
            self.add(creds)

    @classmethod
    def from_config(cls, config: "RefreshConfig") -> "CredentialBook":
        """Read every login of ``config`` (environment variables, blocks)."""
        return cls(login.credentials() for login in config.registries)

    def add(self, creds: RegistryCredentials) -> None:
        """Use ``creds`` for their registry (an earlier entry for it is kept)."""
        self._by_host.setdefault(creds.registry, creds)

    def including(self, creds: Optional[RegistryCredentials]) -> "CredentialBook":
        """A copy that also knows ``creds`` (for a registry this book has no login for)."""
        book = CredentialBook(self._by_host.values())
        if creds is not None:
            book.add(creds)
        return book

    def for_ref(self, ref: ImageRef | str) -> Optional[RegistryCredentials]:
        """Credentials for the registry of an image reference or repository (``None``: anonymous)."""
        parsed = ref if isinstance(ref, ImageRef) else ImageRef.parse(str(ref))
        return self._by_host.get(parsed.registry or "docker.io")

    @property
    def secrets(self) -> list[str]:
        """Every password, for redaction."""
        return [c.secret for c in self._by_host.values()]

    def __repr__(self) -> str:
        return f"CredentialBook(registries={sorted(self._by_host)})"


@dataclass(frozen=True)
class ImageEntry:
    """One configured image (or image tree) to keep fresh."""

    name: str
    kind: str  #: ``dockerfile``, ``spec`` or ``tree``
    path: Path  #: the Dockerfile, the spec's Python file (or module name), the tree folder
    context: Optional[Path] = None  #: build context (dockerfile)
    repository: Optional[str] = None  #: image name without tag (dockerfile)
    tag: Optional[str] = None  #: explicit tag (dockerfile; default: the content tag)
    tags: tuple[str, ...] = ()  #: further tags, e.g. ``latest`` for images others build FROM
    build_args: tuple[tuple[str, str], ...] = ()
    network: Optional[str] = None
    attribute: Optional[str] = None  #: the ``Image`` object's name in the spec file/module
    tree_config: Optional[Path] = None  #: docker-pkg ``config.yaml`` of a tree
    selection: Optional[str] = None  #: glob on ``name:tag`` choosing tree images
    max_age: Optional[pendulum.Duration] = None
    base_source: str = "auto"
    verify: tuple[str, ...] = ()  #: command run in a rebuilt image (no network); must exit 0
    verify_timeout: float = 300.0
    deployments: tuple[str, ...] = ()  #: ``flow/deployment`` names whose image follows this one

    def describe(self) -> str:
        """Short human form for logs."""
        what = {"dockerfile": self.repository, "spec": f"{self.path}:{self.attribute}", "tree": str(self.path)}[self.kind]
        return f"{self.name} ({self.kind} {what})"


@dataclass(frozen=True)
class RefreshConfig:
    """A parsed refresh configuration (see ``flows/refresh.yaml``)."""

    path: Path
    images: tuple[ImageEntry, ...]
    registries: tuple[RegistryLogin, ...] = ()
    state_file: Path = field(default_factory=lambda: Path(DEFAULT_STATE_DIR) / "refresh" / "state.json")

    def entry(self, name: str) -> ImageEntry:
        """The entry called ``name``."""
        for image in self.images:
            if image.name == name:
                return image
        raise KeyError(name)


_TOP_KEYS = {"images", "registries", "defaults", "state_file"}
_DEFAULT_KEYS = {"max_age", "base_source", "verify_timeout", "network"}
_ENTRY_KEYS = {
    "name", "dockerfile", "context", "repository", "tag", "tags", "build_args", "network", "spec",
    "tree", "tree_config", "selection", "max_age", "base_source", "verify", "verify_timeout", "deployments",
}
_KIND_KEYS = ("dockerfile", "spec", "tree")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _strings(value: Any, what: str, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return tuple(str(v) for v in value)
    problems.append(f"{what} must be a string or a list of strings")
    return ()


def _parse_entry(raw: Any, index: int, base_dir: Path, defaults: Mapping[str, Any], problems: list[str]) -> Optional[ImageEntry]:
    if not isinstance(raw, dict):
        problems.append(f"images[{index}] must be a mapping")
        return None
    name = str(raw.get("name") or "")
    where = f"image {name!r}" if name else f"images[{index}]"
    before = len(problems)
    if not name or not _NAME.fullmatch(name):
        problems.append(f"{where}: 'name' is required (letters, digits, '.', '_', '-')")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_ENTRY_KEYS))})")
    kinds = [k for k in _KIND_KEYS if k in raw]
    if len(kinds) != 1:
        problems.append(f"{where}: give exactly one of 'dockerfile', 'spec' or 'tree' (got {', '.join(kinds) or 'none'})")
        return None
    kind = kinds[0]
    settings = {**defaults, **{k: v for k, v in raw.items() if k in _DEFAULT_KEYS}}

    max_age = None
    if settings.get("max_age") is not None:
        try:
            max_age = parse_duration(settings["max_age"])
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    base_source = str(settings.get("base_source") or "auto")
    if base_source not in BASE_SOURCES:
        problems.append(f"{where}: base_source {base_source!r} is not one of {', '.join(BASE_SOURCES)}")
    try:
        verify_timeout = float(settings.get("verify_timeout", 300))
    except (TypeError, ValueError):
        problems.append(f"{where}: verify_timeout must be a number of seconds")
        verify_timeout = 300.0
    verify_raw = raw.get("verify")
    verify = tuple(shlex.split(verify_raw)) if isinstance(verify_raw, str) else _strings(verify_raw, f"{where}: verify", problems)
    deployments = _strings(raw.get("deployments"), f"{where}: deployments", problems)
    for dep in deployments:
        if dep.count("/") != 1:
            problems.append(f"{where}: deployment {dep!r} must be 'flow-name/deployment-name'")
    tags = _strings(raw.get("tags"), f"{where}: tags", problems)
    build_args_raw = raw.get("build_args") or {}
    if not isinstance(build_args_raw, dict):
        problems.append(f"{where}: build_args must be a mapping")
        build_args_raw = {}
    common: dict[str, Any] = dict(
        name=name, kind=kind, max_age=max_age, base_source=base_source, verify=verify,
        verify_timeout=verify_timeout, deployments=deployments, network=settings.get("network"),
    )
    for key, kinds_allowed in (("context", {"dockerfile"}), ("repository", {"dockerfile"}), ("tag", {"dockerfile"}),
                               ("build_args", {"dockerfile"}), ("tree_config", {"tree"}), ("selection", {"tree"})):
        if key in raw and kind not in kinds_allowed:
            problems.append(f"{where}: {key!r} only applies to {' or '.join(sorted(kinds_allowed))} images")
    if kind == "tree" and (verify or deployments or tags):
        problems.append(f"{where}: trees verify with their test.sh and publish their own tags; "
                        "'verify', 'tags' and 'deployments' do not apply")

    if kind == "dockerfile":
        context = (base_dir / str(raw.get("context") or ".")).resolve()
        dockerfile = Path(str(raw["dockerfile"]))
        path = dockerfile if dockerfile.is_absolute() else context / dockerfile
        repository = str(raw.get("repository") or "")
        if not context.is_dir():
            problems.append(f"{where}: context {str(context)!r} is not a folder")
        elif not path.is_file():
            problems.append(f"{where}: Dockerfile {str(path)!r} does not exist")
        if not repository:
            problems.append(f"{where}: 'repository' is required (registry/name, no tag)")
        else:
            try:
                ref = ImageRef.parse(repository)
                if ref.tag or ref.digest:
                    problems.append(f"{where}: repository {repository!r} must not carry a tag; use 'tag'/'tags'")
                elif not ref.registry:
                    problems.append(f"{where}: repository {repository!r} names no registry to publish to")
            except InvalidReferenceError as exc:
                problems.append(f"{where}: {exc}")
        tag = str(raw["tag"]) if raw.get("tag") is not None else None
        entry = ImageEntry(
            path=path, context=context, repository=repository, tag=tag, tags=tags,
            build_args=tuple((str(k), str(v)) for k, v in build_args_raw.items()), **common,
        )
    elif kind == "spec":
        target, sep, attribute = str(raw["spec"]).rpartition(":")
        if not sep or not target or not attribute:
            problems.append(f"{where}: spec {raw['spec']!r} must be 'file.py:name' or 'package.module:name'")
            return None
        path = (base_dir / target).resolve() if target.endswith(".py") else Path(target)
        if target.endswith(".py") and not path.is_file():
            problems.append(f"{where}: spec file {str(path)!r} does not exist")
        entry = ImageEntry(path=path, attribute=attribute, tags=tags, **common)
    else:
        folder = (base_dir / str(raw["tree"])).resolve()
        tree_config = (base_dir / str(raw["tree_config"])).resolve() if raw.get("tree_config") else folder / "config.yaml"
        if not folder.is_dir():
            problems.append(f"{where}: tree {str(folder)!r} is not a folder")
        if not tree_config.is_file():
            problems.append(f"{where}: tree_config {str(tree_config)!r} does not exist")
        entry = ImageEntry(path=folder, tree_config=tree_config, selection=raw.get("selection"), **common)
    return entry if len(problems) == before else None


def load_config(path: Path | str) -> RefreshConfig:
    """Read and check a refresh configuration; relative paths are relative to its folder.

    ``${VAR}`` and ``${VAR:-default}`` are replaced from the environment in every string
    (so the same file serves several registries); passwords are never written in it:
    ``registries`` name a ``password_env`` variable or a credentials ``block``.

    Raises:
        RefreshConfigError: listing every problem (unset variables, unknown keys, missing
            files, bad durations, duplicate names).
    """
    config_path = Path(path).expanduser().resolve()
    try:
        raw = yaml.safe_load(config_path.read_text()) or {}
    except OSError as exc:
        raise RefreshConfigError([f"cannot read {config_path}: {exc.strerror or exc}"], config_path) from None
    except yaml.YAMLError as exc:
        raise RefreshConfigError([f"not valid YAML: {exc}"], config_path) from None
    if not isinstance(raw, dict):
        raise RefreshConfigError(["the file must be a mapping with an 'images' list"], config_path)
    missing: list[str] = []
    # password_env names a variable; it is read when the flow runs, never expanded here.
    registries_raw = raw.get("registries") or []
    raw = _expand({k: v for k, v in raw.items() if k != "registries"}, missing)
    problems: list[str] = []
    unknown = sorted(set(raw) - _TOP_KEYS - {"registries"})
    if unknown:
        problems.append(f"unknown top-level key(s) {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS | {'registries'}))})")

    registries: list[RegistryLogin] = []
    if not isinstance(registries_raw, list):
        problems.append("registries must be a list")
        registries_raw = []
    for i, item in enumerate(registries_raw):
        if not isinstance(item, dict):
            problems.append(f"registries[{i}] must be a mapping")
            continue
        item = {k: (v if k == "password_env" else _expand(v, missing)) for k, v in item.items()}
        bad = sorted(set(item) - {"registry", "username", "password_env", "block"})
        if "password" in item:
            bad = [b for b in bad if b != "password"]
            problems.append(f"registries[{i}]: never write a password here; name its environment variable "
                            "with password_env, or a DockerRegistryCredentials block with block")
        if bad:
            problems.append(f"registries[{i}]: unknown key(s) {', '.join(bad)}")
        if not item.get("registry"):
            problems.append(f"registries[{i}]: 'registry' is required")
            continue
        if bool(item.get("block")) == bool(item.get("password_env")):
            problems.append(f"registries[{i}] ({item['registry']}): give either block, or username with password_env")
            continue
        if item.get("password_env") and not item.get("username"):
            problems.append(f"registries[{i}] ({item['registry']}): password_env needs a username")
            continue
        registries.append(RegistryLogin(registry_host(str(item["registry"])), item.get("username"),
                                        item.get("password_env"), item.get("block")))

    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append("defaults must be a mapping")
        defaults = {}
    bad_defaults = sorted(set(defaults) - _DEFAULT_KEYS)
    if bad_defaults:
        problems.append(f"defaults: unknown key(s) {', '.join(bad_defaults)} (known: {', '.join(sorted(_DEFAULT_KEYS))})")

    images_raw = raw.get("images")
    if not isinstance(images_raw, list) or not images_raw:
        problems.append("'images' must be a non-empty list")
        images_raw = []
    entries = []
    for i, item in enumerate(images_raw):
        entry = _parse_entry(item, i, config_path.parent, defaults, problems)
        if entry is not None:
            entries.append(entry)
    names = [str(item.get("name")) for item in images_raw if isinstance(item, dict) and item.get("name")]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"image name {dup!r} is used more than once")

    state_file = raw.get("state_file")
    if state_file:
        state = (config_path.parent / str(state_file)).resolve()
    else:
        state = Path(os.environ.get("FLYIMAGE_STATE_DIR") or DEFAULT_STATE_DIR) / "refresh" / "state.json"
    if missing:
        problems.insert(0, f"environment variable(s) {', '.join(sorted(set(missing)))} not set (used as ${{VAR}})")
    if problems:
        raise RefreshConfigError(problems, config_path)
    return RefreshConfig(config_path, tuple(entries), tuple(registries), state)


# ---- plans and order ------------------------------------------------------------------


def load_spec(entry: ImageEntry) -> Any:
    """The :class:`~prefect_flyimage.spec.Image` a ``spec`` entry names."""
    from .spec import Image

    try:
        if str(entry.path).endswith(".py"):
            namespace = runpy.run_path(str(entry.path))
        else:
            namespace = vars(import_module(str(entry.path)))
    except Exception as exc:  # noqa: BLE001 - whatever the user's file raises
        raise RefreshConfigError([f"image {entry.name!r}: cannot load {entry.path}: {type(exc).__name__}: {exc}"]) from None
    image = namespace.get(entry.attribute or "")
    if not isinstance(image, Image):
        raise RefreshConfigError([f"image {entry.name!r}: {entry.path}:{entry.attribute} is not a prefect_flyimage Image "
                                  f"(got {type(image).__name__})"])
    return image


@contextmanager
def prepared_plan(entry: ImageEntry) -> Iterator[BuildPlan]:
    """The build plan of a ``dockerfile`` or ``spec`` entry, before base labels.

    A spec's context is staged in a temporary folder, removed on exit.
    """
    if entry.kind == "dockerfile":
        assert entry.context is not None and entry.repository
        yield BuildPlan.from_dockerfile(
            entry.context, entry.repository, dockerfile=entry.path, tag=entry.tag,
            build_args=dict(entry.build_args), extra_tags=entry.tags, network=entry.network, pull=False,
        )
    elif entry.kind == "spec":
        image = load_spec(entry)
        with image.staged_plan(network=entry.network) as plan:
            yield _replan(plan, extra_tags=tuple(t for t in entry.tags if t != plan.tag)) if entry.tags else plan
    else:
        raise ValueError(f"image {entry.name!r} is a tree; trees have one plan per image")


def scan_tree(entry: ImageEntry, engine: Optional["Engine"] = None) -> "DockerBuilder":
    """The entry's docker-pkg tree, scanned and checked without any Docker call.

    ``engine`` is the one its images will use later (default: one each, from the environment).
    """
    from .chain.builder import DockerBuilder
    from .chain.config import read_config

    assert entry.tree_config is not None
    config = read_config(entry.tree_config, user_config=False)
    builder = DockerBuilder(entry.path, config, entry.selection, nocache=True, pull=True, engine=engine)
    builder.scan(inspect=False)
    return builder


def tree_external_bases(builder: "DockerBuilder") -> dict[str, list[str]]:
    """For each image of a scanned tree: the bases it builds from that the tree does not make."""
    from .chain.verify import proxy_env

    own = {img.name for img in builder.all_images}
    result = {}
    for img in builder.all_images:
        bases = external_bases(img.render_dockerfile(), proxy_env(builder.config))
        result[img.short_name] = [b for b in bases if ImageRef.parse(b).name not in own]
    return result


@dataclass(frozen=True)
class EntryShape:
    """What an entry produces and needs, for ordering entries (no Docker call)."""

    outputs: frozenset[str]  #: repositories it publishes
    needs: frozenset[str]  #: repositories of the images it builds from


def entry_shape(entry: ImageEntry) -> EntryShape:
    """Outputs and external base names of ``entry``, from its files alone."""
    if entry.kind == "tree":
        builder = scan_tree(entry)
        outputs = frozenset(img.name for img in builder.all_images)
        needs = frozenset(ImageRef.parse(b).name for bases in tree_external_bases(builder).values() for b in bases)
        return EntryShape(outputs, needs)
    if entry.kind == "spec":
        image = load_spec(entry)
        return EntryShape(frozenset({image.repository}), frozenset(ImageRef.parse(b).name for b in external_bases(image.dockerfile_text())))
    assert entry.repository
    text = entry.path.read_text()
    return EntryShape(frozenset({entry.repository}), frozenset(ImageRef.parse(b).name for b in external_bases(text, dict(entry.build_args))))


def entry_order(entries: Sequence[ImageEntry], shapes: Mapping[str, EntryShape]) -> tuple[list[ImageEntry], dict[str, list[str]]]:
    """Entries parents first (an entry building FROM another's output comes after it), and
    each entry's parent entries. Ties keep the configuration's order.

    Raises:
        RefreshConfigError: the entries depend on each other in a cycle.
    """
    producers: dict[str, str] = {}
    for entry in entries:
        for repo in shapes[entry.name].outputs:
            producers.setdefault(repo, entry.name)
    parents = {
        e.name: sorted({producers[n] for n in shapes[e.name].needs if n in producers and producers[n] != e.name})
        for e in entries
    }
    order: list[ImageEntry] = []
    done: set[str] = set()
    visiting: list[str] = []
    by_name = {e.name: e for e in entries}

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = visiting[visiting.index(name):] + [name]
            raise RefreshConfigError([f"images build from each other in a cycle: {' -> '.join(cycle)}"])
        visiting.append(name)
        for parent in parents[name]:
            visit(parent)
        visiting.pop()
        done.add(name)
        order.append(by_name[name])

    for entry in entries:
        visit(entry.name)
    return order, parents


# ---- checking one image ---------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """What the check of one image found."""

    name: str
    plan: BuildPlan  #: the plan with today's base digests in its label
    bases: tuple[BaseDigest, ...]
    published: Optional[str]  #: registry digest of the plan's content tag (None: not published)
    current: Optional[str]  #: digest the image's main tag had before (the one a rebuild replaces)
    created: Optional[str]  #: when the published image was built (ISO 8601), when looked up
    reasons: tuple[str, ...]  #: why it is stale (empty: fresh)
    force: bool = False  #: rebuild although the content tag exists (too old, or forced)

    @property
    def stale(self) -> bool:
        """True when the image must be rebuilt."""
        return bool(self.reasons)

    @property
    def reference(self) -> str:
        """``repository:content_tag``: unique for these inputs and bases (what deployments use)."""
        return str(self.plan.content_ref)


def _short(digest: Optional[str]) -> str:
    if not digest:
        return "—"
    prefix, _, hexpart = digest.partition(":")
    return f"{prefix}:{hexpart[:12]}" if hexpart else digest[:19]


def stale_reasons(
    plan: BuildPlan, bases: Sequence[BaseDigest], previous: Optional[Mapping[str, Any]]
) -> list[str]:
    """Why the registry has no image for ``plan`` — explained with the previous run's record."""
    if not previous:
        return ["no image for the current inputs and base digests in the registry (first check of this image)"]
    old = previous.get("bases") or {}
    moved = [
        f"base {b.ref} changed: {_short(old[b.ref])} → {_short(b.digest)}"
        for b in bases
        if b.ref in old and old[b.ref] != b.digest
    ]
    added = [f"new base {b.ref}" for b in bases if b.ref not in old]
    if moved or added:
        return moved + added
    if previous.get("content_tag") == plan.content_tag:
        return [f"{plan.content_ref} is missing from the registry (deleted?)"]
    return ["build inputs changed (Dockerfile, context or build settings): new content tag " + plan.content_tag]


def check_plan(
    engine: "Engine",
    name: str,
    plan: BuildPlan,
    base_refs: Sequence[str],
    book: CredentialBook,
    *,
    base_source: str = "auto",
    max_age: Optional[pendulum.Duration] = None,
    previous: Optional[Mapping[str, Any]] = None,
    force: bool = False,
    now: Optional[pendulum.DateTime] = None,
) -> Check:
    """Decide whether the image of ``plan`` is stale (see the module docstring)."""
    bases = tuple(resolve_base(engine, ref, book.for_ref(ref), base_source) for ref in base_refs)
    labelled = labelled_plan(plan, bases)
    creds = book.for_ref(labelled.repository)
    published = engine.registry_digest(labelled.content_ref, creds)
    # "Before": what the image's main reference named until now.
    if labelled.tag and labelled.tag != labelled.content_tag:
        current = engine.registry_digest(labelled.ref, creds)
    else:
        current = published or (previous or {}).get("digest")
    reasons: list[str] = []
    created: Optional[str] = None
    rebuild = False
    if published is None:
        reasons = stale_reasons(labelled, bases, previous)
    else:
        if max_age is not None:
            built = image_created(engine, labelled.content_ref, published, creds)
            created = built.isoformat()
            age = (now or pendulum.now("UTC")) - built
            if age.total_seconds() > max_age.total_seconds():
                reasons.append(f"older than max_age {max_age.in_words()}: built {age.in_words()} ago")
                rebuild = True
        if force and not reasons:
            reasons.append("rebuild forced (force=True)")
            rebuild = True
    return Check(name, labelled, bases, published, current, created, tuple(reasons), rebuild)


@dataclass(frozen=True)
class TreeImageCheck:
    """What the check of one image of a tree found."""

    short_name: str
    label: str  #: ``registry/ns/name:version``
    content_ref: str  #: ``registry/ns/name:content_tag`` (the plan with today's base digests)
    content_tag: str
    bases: tuple[BaseDigest, ...]  #: its own external bases (parents in the tree are not listed)
    current: Optional[str]  #: registry digest of the label before the run
    reasons: tuple[str, ...]
    force: bool = False  #: rebuild although this plan's image is published (too old, parent rebuilt, forced)

    @property
    def stale(self) -> bool:
        """True when the image must be rebuilt."""
        return bool(self.reasons)


def tree_credentials(builder: "DockerBuilder") -> Optional[RegistryCredentials]:
    """The registry credentials of a tree's ``config.yaml`` (``None`` when it has none)."""
    from .chain.config import credentials

    return credentials(builder.config)


def check_tree(
    engine: "Engine",
    builder: "DockerBuilder",
    book: CredentialBook,
    *,
    base_source: str = "auto",
    max_age: Optional[pendulum.Duration] = None,
    previous: Optional[Mapping[str, Mapping[str, Any]]] = None,
    force: bool = False,
    now: Optional[pendulum.DateTime] = None,
) -> dict[str, TreeImageCheck]:
    """Check every (selected) image of a scanned tree; label its plans with base digests.

    Mutates ``builder``: each image's plan gets :data:`BASE_LABEL` for its own external
    bases, parents first, so a child's plan (which names its parents' plan hashes) moves
    with its parents' bases; then each image's state is read from the registry and daemon.
    A stale image makes every descendant stale too.

    ``previous`` maps short names to the state records of the last run.
    """
    from .chain.fsm import ImageFSM
    from .chain.graph import build_order

    previous = previous or {}
    own_creds = tree_credentials(builder)
    if own_creds is None:
        raise RefreshConfigError([f"tree {builder.root}: its config.yaml needs registry, username and password "
                                  "to check and publish images"])
    creds_for = book.including(own_creds).for_ref

    external = tree_external_bases(builder)
    resolved = {
        ref: resolve_base(engine, ref, creds_for(ref), base_source)
        for ref in dict.fromkeys(r for refs in external.values() for r in refs)
    }
    images = {img.short_name: img for img in builder.all_images}
    parents = {n: [p.short_name for p in img.parents] for n, img in images.items()}
    selected = [n for n, img in images.items() if builder.glob is None or fnmatch.fnmatch(img.label, builder.glob)]
    order = build_order(selected, parents)  # the selection and its ancestors, parents first
    for name in order:
        img = images[name]
        # Reading img.plan computes it from the parents' plans, already labelled above.
        img.plan = labelled_plan(img.plan, [resolved[r] for r in external[name]])  # type: ignore[misc]
    for name in order:
        images[name].refresh_state()

    reasons: dict[str, list[str]] = {}
    forced: set[str] = set()
    for name in order:  # parents first: a stale image makes its whole subtree stale
        img = images[name]
        bases = [resolved[r] for r in external[name]]
        stale_parents = [p for p in parents[name] if reasons.get(p)]
        own: list[str] = []
        if img.state != ImageFSM.STATE_PUBLISHED:
            own = stale_reasons(img.plan, bases, previous.get(name))
            if stale_parents:  # its plan moved with its parent's: only its own bases need saying
                own = [r for r in own if r.startswith(("base ", "new base "))]
        elif max_age is not None and img.digest:
            built = image_created(engine, img.label, img.digest, own_creds)
            age = (now or pendulum.now("UTC")) - built
            if age.total_seconds() > max_age.total_seconds():
                own.append(f"older than max_age {max_age.in_words()}: built {age.in_words()} ago")
                forced.add(name)
        reasons[name] = [f"parent {p} is rebuilt" for p in stale_parents] + own
        if stale_parents and img.state == ImageFSM.STATE_PUBLISHED:
            forced.add(name)  # same plan, but it must be rebuilt on the new parent
        if force and not reasons[name]:
            reasons[name].append("rebuild forced (force=True)")
            forced.add(name)

    checks = {}
    for name in order:
        img = images[name]
        current = img.digest if img.state == ImageFSM.STATE_PUBLISHED else engine.registry_digest(img.label, own_creds)
        checks[name] = TreeImageCheck(
            name, img.label, str(img.plan.content_ref), img.plan.content_tag,
            tuple(resolved[r] for r in external[name]), current, tuple(reasons[name]), name in forced,
        )
    return checks


# ---- state ----------------------------------------------------------------------------


class RefreshState:
    """What the last run saw per image (``name -> record``), in a small JSON file.

    Only explanations and dates come from it; decisions never do. A missing or corrupt
    file is an empty state. Writes are atomic.
    """

    VERSION = 1

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.images: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and data.get("version") == self.VERSION and isinstance(data.get("images"), dict):
                self.images = data["images"]
        except (OSError, ValueError):
            pass

    def get(self, name: str) -> Optional[dict[str, Any]]:
        """The record of image ``name``, if any."""
        return self.images.get(name)

    def record(self, name: str, *, reference: str, content_tag: str, digest: Optional[str],
               bases: Iterable[BaseDigest], built_at: Optional[str] = None) -> None:
        """Remember what image ``name`` is now."""
        old = self.images.get(name) or {}
        self.images[name] = {
            "reference": reference,
            "content_tag": content_tag,
            "digest": digest,
            "bases": {b.ref: b.digest for b in bases},
            "built_at": built_at or (old.get("built_at") if old.get("digest") == digest else None),
            "checked_at": pendulum.now("UTC").isoformat(),
        }

    def save(self) -> None:
        """Write the file (atomically: a crash leaves the old file or the new one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".refresh-state-")
        with os.fdopen(fd, "w") as fh:
            json.dump({"version": self.VERSION, "images": self.images}, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


# ---- reports --------------------------------------------------------------------------

STATUSES = ("fresh", "rebuilt", "stale", "failed", "blocked")


@dataclass(frozen=True)
class ImageReport:
    """The outcome of one image in a refresh run (plain data: no secrets, JSON-able)."""

    name: str
    kind: str
    status: str  #: one of :data:`STATUSES` (``stale``: found stale, not rebuilt — a dry run)
    reference: Optional[str] = None
    reasons: tuple[str, ...] = ()
    bases_before: Mapping[str, str] = field(default_factory=dict)
    bases_after: Mapping[str, str] = field(default_factory=dict)
    digest_before: Optional[str] = None
    digest_after: Optional[str] = None
    deployments: tuple[str, ...] = ()  #: deployments whose image was updated
    error: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able)."""
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["deployments"] = list(self.deployments)
        data["bases_before"] = dict(self.bases_before)
        data["bases_after"] = dict(self.bases_after)
        return data


def _cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _bases_cell(report: ImageReport) -> str:
    parts = []
    for ref in sorted(set(report.bases_before) | set(report.bases_after)):
        before, after = report.bases_before.get(ref), report.bases_after.get(ref)
        change = _short(after) if before in (None, after) else f"{_short(before)} → {_short(after)}"
        parts.append(f"`{ref}` {change}")
    return "<br>".join(_cell(p) for p in parts) or "—"


def _digest_cell(report: ImageReport) -> str:
    if report.digest_after and report.digest_before and report.digest_after != report.digest_before:
        return f"{_short(report.digest_before)} → {_short(report.digest_after)}"
    return _short(report.digest_after or report.digest_before)


def summary_markdown(
    reports: Sequence[ImageReport],
    *,
    config_path: Optional[str] = None,
    dry_run: bool = False,
    secrets: Iterable[Optional[str]] = (),
) -> str:
    """The run summary: counts, one row per image (what, why, base and image digests before
    and after), then full digests of every rebuilt image. ``secrets`` are redacted."""
    count = {s: sum(1 for r in reports if r.status == s) for s in STATUSES}
    stale = count["rebuilt"] + count["stale"] + count["failed"]
    title = f"## Image refresh{' (dry run)' if dry_run else ''}: {stale} of {len(reports)} image(s) stale"
    lines = [
        title, "",
        f"{count['rebuilt']} rebuilt, {count['fresh']} fresh, {count['failed']} failed, {count['blocked']} blocked"
        + (f", {count['stale']} not rebuilt (dry run)" if count["stale"] else "")
        + (f" — configuration `{config_path}`" if config_path else ""),
        "",
        "| Image | Result | Why | Base digests (before → after) | Image digest (before → after) |",
        "|---|---|---|---|---|",
    ]
    for r in reports:
        what = f"**{_cell(r.name)}**" + (f"<br>`{_cell(r.reference)}`" if r.reference else "")
        why = "<br>".join(_cell(x) for x in r.reasons) or ("up to date" if r.status == "fresh" else "—")
        if r.error:
            why += ("<br>" if why != "—" else "") + "**error:** " + _cell(r.error[:600])
        if r.deployments:
            why += "<br>deployments updated: " + ", ".join(f"`{_cell(d)}`" for d in r.deployments)
        lines.append(f"| {what} | {r.status} | {why} | {_bases_cell(r)} | {_digest_cell(r)} |")
    rebuilt = [r for r in reports if r.status == "rebuilt"]
    if rebuilt:
        lines += ["", "### Rebuilt", ""]
        for r in rebuilt:
            lines.append(f"- **{_cell(r.name)}** `{_cell(r.reference)}`: {r.digest_before or 'none'} → {r.digest_after}")
            for ref in sorted(r.bases_after):
                before = r.bases_before.get(ref)
                if before and before != r.bases_after[ref]:
                    lines.append(f"  - base `{_cell(ref)}`: {before} → {r.bases_after[ref]}")
    return redact("\n".join(lines) + "\n", secrets)
