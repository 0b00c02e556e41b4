"""The refresh configuration (``flows/refresh.yaml``): schema, loading, durations, logins.

The file is read with :mod:`prefect_flyimage.yamlconfig` and checked against the
pydantic models below; every problem is reported at once, each with its file and line.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Optional, Union

import pendulum
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..credentials import RegistryCredentials, as_credentials, registry_host
from ..errors import InvalidReferenceError, RefreshConfigError
from ..names import ImageRef
from ..yamlconfig import YamlDocument, read_yaml, sort_problems, validate

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_STATE_DIR",
    "CredentialBook",
    "ImageEntry",
    "RefreshConfig",
    "RegistryLogin",
    "load_config",
    "parse_duration",
]

#: Default configuration, relative to the working directory (the repository root).
DEFAULT_CONFIG = "flows/refresh.yaml"
#: Where the state file goes when the configuration names none.
DEFAULT_STATE_DIR = "/var/tmp/prefect-flyimage"

# ---- durations ------------------------------------------------------------------------

# pendulum reads ISO 8601 durations; the word forms ("7 days", "36h") are ours.
_UNITS = {
    "w": "weeks", "wk": "weeks", "week": "weeks", "weeks": "weeks",
    "d": "days", "day": "days", "days": "days",
    "h": "hours", "hr": "hours", "hrs": "hours", "hour": "hours", "hours": "hours",
    "m": "minutes", "min": "minutes", "mins": "minutes", "minute": "minutes", "minutes": "minutes",
    "s": "seconds", "sec": "seconds", "secs": "seconds", "second": "seconds", "seconds": "seconds",
}
_WORDS = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*(?:,|\band\b)?")


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
    elif isinstance(value, str) and value.strip()[:1] in ("p", "P"):
        try:
            parsed = pendulum.parse(value.strip().upper())
        except Exception:  # noqa: BLE001 - pendulum raises several types
            parsed = None
        if not isinstance(parsed, pendulum.Duration):
            raise ValueError(f"max_age {value!r} is not an ISO 8601 duration such as 'P7D' or 'PT12H'")
        duration = parsed
    elif isinstance(value, str) and value.strip():
        amounts: dict[str, float] = {}
        pos, text = 0, value.strip()
        for match in _WORDS.finditer(text):
            unit = _UNITS.get(match.group(2).lower())
            if match.start() != pos or unit is None:
                break
            amounts[unit] = amounts.get(unit, 0.0) + float(match.group(1))
            pos = match.end()
        if not amounts or pos != len(text):
            raise ValueError(
                f"max_age {value!r} is not a duration: use ISO 8601 ('P7D', 'PT12H') or words "
                "('7 days', '1 week 2 days', '36h', '90 minutes')"
            )
        duration = pendulum.duration(**amounts)
    else:
        raise ValueError(f"max_age {value!r} is not a duration (ISO 8601 text, words or seconds)")
    if getattr(duration, "years", 0) or getattr(duration, "months", 0):
        raise ValueError(f"max_age {value!r} uses months or years, whose length varies; give days instead")
    if duration.total_seconds() <= 0:
        raise ValueError(f"max_age {value!r} must be longer than zero")
    return duration


# ---- what a configuration holds ------------------------------------------------------


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


# ---- the schema ----------------------------------------------------------------------

Scalar = Union[str, int, float]
Words = Union[str, list[Scalar]]  # one string, or a list of them
Duration = Annotated[Optional[pendulum.Duration], BeforeValidator(lambda v: None if v is None else parse_duration(v))]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class _Settings(_Model):
    """Keys an image may set, and ``defaults`` for all of them."""

    max_age: Duration = None
    base_source: Optional[Literal["auto", "registry", "local"]] = None
    verify_timeout: Optional[Annotated[float, Field(gt=0)]] = None
    network: Optional[str] = None


class _Registry(_Model):
    registry: str
    username: Optional[str] = None
    password_env: Optional[str] = None
    block: Optional[str] = None
    password: Any = None

    @field_validator("password")
    @classmethod
    def _no_password(cls, value: Any) -> None:
        if value is not None:  # the value is never repeated in the message
            raise ValueError("never write a password here; name its environment variable with password_env, "
                             "or a DockerRegistryCredentials block with block")

    @model_validator(mode="after")
    def _one_login(self) -> "_Registry":
        if bool(self.block) == bool(self.password_env):
            raise ValueError(f"registry {self.registry}: give either block, or username with password_env")
        if self.password_env and not self.username:
            raise ValueError(f"registry {self.registry}: password_env needs a username")
        return self


_KINDS = ("dockerfile", "spec", "tree")
_ONLY_FOR = {"context": "dockerfile", "repository": "dockerfile", "tag": "dockerfile", "build_args": "dockerfile",
             "tree_config": "tree", "selection": "tree"}


class _Image(_Settings):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    # Fields a later one's check reads (context, tree_config) come first: a field validator
    # sees the fields validated before it.
    context: Optional[str] = None
    tree_config: Optional[str] = None
    dockerfile: Optional[str] = None
    spec: Optional[str] = None
    tree: Optional[str] = None
    repository: Optional[str] = None
    tag: Optional[Scalar] = None
    tags: Optional[Words] = None
    build_args: Optional[dict[str, Optional[Union[Scalar, bool]]]] = None
    selection: Optional[str] = None
    verify: Optional[Words] = None
    deployments: Optional[Words] = None

    @field_validator("dockerfile")
    @classmethod
    def _dockerfile(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        if value is not None:
            context = (_base_dir(info) / (info.data.get("context") or ".")).resolve()
            if not context.is_dir():
                raise ValueError(f"context {str(context)!r} is not a folder")
            if not (context / value).is_file():
                raise ValueError(f"Dockerfile {str(context / value)!r} does not exist")
        return value

    @field_validator("spec")
    @classmethod
    def _spec(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        if value is not None:
            target, sep, attribute = value.rpartition(":")
            if not sep or not target or not attribute:
                raise ValueError(f"spec {value!r} must be 'file.py:name' or 'package.module:name'")
            if target.endswith(".py") and not (_base_dir(info) / target).is_file():
                raise ValueError(f"spec file {str((_base_dir(info) / target).resolve())!r} does not exist")
        return value

    @field_validator("tree")
    @classmethod
    def _tree(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        if value is not None:
            folder = (_base_dir(info) / value).resolve()
            own = info.data.get("tree_config")
            config = (_base_dir(info) / own).resolve() if own else folder / "config.yaml"
            if not folder.is_dir():
                raise ValueError(f"tree {str(folder)!r} is not a folder")
            if not config.is_file():
                raise ValueError(f"tree_config {str(config)!r} does not exist")
        return value

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: Optional[str]) -> Optional[str]:
        if value:
            try:
                ref = ImageRef.parse(value)
            except InvalidReferenceError as exc:
                raise ValueError(str(exc)) from None
            if ref.tag or ref.digest:
                raise ValueError(f"repository {value!r} must not carry a tag; use 'tag'/'tags'")
            if not ref.registry:
                raise ValueError(f"repository {value!r} names no registry to publish to")
        return value

    @field_validator("deployments")
    @classmethod
    def _deployments(cls, value: Optional[Words]) -> Optional[Words]:
        for dep in _words(value):
            if dep.count("/") != 1:
                raise ValueError(f"deployment {dep!r} must be 'flow-name/deployment-name'")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> "_Image":
        kinds = [k for k in _KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of 'dockerfile', 'spec' or 'tree' (got {', '.join(kinds) or 'none'})")
        kind, problems = kinds[0], []
        for key, allowed in _ONLY_FOR.items():
            if getattr(self, key) is not None and kind != allowed:
                problems.append(f"{key!r} only applies to {allowed} images")
        if kind == "tree" and (self.verify or self.deployments or self.tags):
            problems.append("trees verify with their test.sh and publish their own tags; "
                            "'verify', 'tags' and 'deployments' do not apply")
        if kind == "dockerfile" and not self.repository:
            problems.append("'repository' is required (registry/name, no tag)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _base_dir(info: ValidationInfo) -> Path:
    return Path((info.context or {}).get("base_dir", "."))


class _File(_Model):
    images: Annotated[list[_Image], Field(min_length=1)]
    registries: list[_Registry] = []
    defaults: _Settings = _Settings()
    state_file: Optional[str] = None


def _words(value: Optional[Words], split: bool = False) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(shlex.split(value)) if split else (value,)
    return tuple(str(v) for v in value)


def _entry(image: _Image, defaults: _Settings, base_dir: Path) -> ImageEntry:
    def setting(key: str, fallback: Any) -> Any:
        own = getattr(image, key)
        return own if own is not None else (getattr(defaults, key) if getattr(defaults, key) is not None else fallback)

    common: dict[str, Any] = dict(
        name=image.name, max_age=setting("max_age", None), base_source=setting("base_source", "auto"),
        verify=_words(image.verify, split=True), verify_timeout=float(setting("verify_timeout", 300.0)),
        deployments=_words(image.deployments), network=setting("network", None), tags=_words(image.tags),
    )
    if image.dockerfile is not None:
        context = (base_dir / (image.context or ".")).resolve()
        args = {str(k): str(v) for k, v in (image.build_args or {}).items() if v is not None}  # None: unset
        return ImageEntry(kind="dockerfile", path=context / image.dockerfile, context=context,
                          repository=image.repository, tag=None if image.tag is None else str(image.tag),
                          build_args=tuple(args.items()), **common)
    if image.spec is not None:
        target, _, attribute = image.spec.rpartition(":")
        path = (base_dir / target).resolve() if target.endswith(".py") else Path(target)
        return ImageEntry(kind="spec", path=path, attribute=attribute, **common)
    folder = (base_dir / str(image.tree)).resolve()
    tree_config = (base_dir / image.tree_config).resolve() if image.tree_config else folder / "config.yaml"
    return ImageEntry(kind="tree", path=folder, tree_config=tree_config, selection=image.selection, **common)


# ---- loading ------------------------------------------------------------------------

_ENV = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def _expand(value: Any, loc: tuple[Any, ...], missing: list[tuple[str, tuple[Any, ...]]]) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in every string of a YAML value (no other ``$`` syntax)."""
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            env = os.environ.get(m.group("name"))
            if env:
                return env
            if m.group("default") is not None:
                return m.group("default")
            missing.append((m.group("name"), loc))
            return m.group(0)

        return _ENV.sub(repl, value)
    if isinstance(value, list):
        return [_expand(v, (*loc, i), missing) for i, v in enumerate(value)]
    if isinstance(value, dict):
        # password_env names a variable; it is read when the flow runs, never expanded here.
        return {k: v if k == "password_env" else _expand(v, (*loc, k), missing) for k, v in value.items()}
    return value


def _duplicate_names(doc: YamlDocument, data: Any) -> list[str]:
    images = data.get("images") if isinstance(data, dict) else None
    seen: dict[str, int] = {}
    problems = []
    for i, image in enumerate(images if isinstance(images, list) else []):
        name = image.get("name") if isinstance(image, dict) else None
        if isinstance(name, str) and name in seen:
            problems.append(f"{doc.where(('images', i, 'name'))}: image name {name!r} is used more than once "
                            f"(first at line {doc.line(('images', seen[name], 'name'))})")
        elif isinstance(name, str):
            seen[name] = i
    return problems


def load_config(path: Path | str) -> RefreshConfig:
    """Read and check a refresh configuration; relative paths are relative to its folder.

    ``${VAR}`` and ``${VAR:-default}`` are replaced from the environment in every string
    (so the same file serves several registries); passwords are never written in it:
    ``registries`` name a ``password_env`` variable or a credentials ``block``.

    Raises:
        RefreshConfigError: listing every problem with its file and line (not valid YAML,
            unset variables, unknown or missing keys, wrong types, missing files, bad
            durations, duplicate names).
    """
    config_path = Path(path).expanduser().resolve()
    doc = read_yaml(config_path, error=RefreshConfigError)
    missing: list[tuple[str, tuple[Any, ...]]] = []
    data = _expand(doc.data, (), missing) if isinstance(doc.data, dict) else doc.data
    problems = [f"{doc.where(loc)}: environment variable {name} not set (used as ${{{name}}})" for name, loc in missing]
    problems += _duplicate_names(doc, data)
    try:
        parsed = validate(doc, _File, data=data, context={"base_dir": config_path.parent}, error=RefreshConfigError)
    except RefreshConfigError as exc:
        raise RefreshConfigError(sort_problems(problems + exc.problems), config_path) from None
    if problems:
        raise RefreshConfigError(problems, config_path)
    entries = tuple(_entry(image, parsed.defaults, config_path.parent) for image in parsed.images)
    logins = tuple(RegistryLogin(registry_host(r.registry), r.username, r.password_env, r.block) for r in parsed.registries)
    if parsed.state_file:
        state = (config_path.parent / parsed.state_file).resolve()
    else:
        state = Path(os.environ.get("FLYIMAGE_STATE_DIR") or DEFAULT_STATE_DIR) / "refresh" / "state.json"
    return RefreshConfig(config_path, entries, logins, state)
