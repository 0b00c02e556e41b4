"""Image references: parse, validate and format ``[registry/]repository[:tag][@digest]``.

Validation follows the Distribution reference grammar
(https://github.com/distribution/reference), the grammar Docker and every OCI registry
use, so a reference accepted here is accepted by ``docker pull``/``docker push`` and a
rejected one fails *before* a long build rather than at push time.

The module also provides Prefect-compatible :func:`parse_image_tag` and
:func:`split_repository_path` (same results as ``prefect.utilities.dockerutils`` for
valid input; see their docstrings for the deliberate deviations).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional

from .errors import InvalidArgumentError, InvalidReferenceError

__all__ = [
    "ImageRef",
    "NAME_TOTAL_LENGTH_MAX",
    "TAG_LENGTH_MAX",
    "join_image_tag",
    "parse_image_tag",
    "split_repository_path",
    "validate_digest",
    "validate_platform",
    "validate_registry",
    "validate_repository",
    "validate_tag",
]

#: Maximum length of ``[registry/]repository`` (Distribution's ``NameTotalLengthMax``).
NAME_TOTAL_LENGTH_MAX = 255
#: Maximum length of a tag.
TAG_LENGTH_MAX = 128

# Go's \w is ASCII-only; Python's is Unicode, so spell the classes out.
# The separator is [-]+, not [-]*: an empty separator makes the pattern backtrack
# exponentially on a long component followed by a bad character.
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"  # domain name or IPv4
    r"|\[[a-fA-F0-9:]+\])"  # bracketed IPv6
    r"(?::[0-9]+)?"
)
# containerd's platform specifier: os[/arch[/variant]], each part [A-Za-z0-9_-]+.
_PLATFORM = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+){0,2}")
_DIGEST_ALGORITHM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[+._-][A-Za-z][A-Za-z0-9]*)*")
_DIGEST_HEX = re.compile(r"[0-9a-fA-F]{32,}")
# go-digest validates registered algorithms strictly: exact length, lower-case hex only.
_KNOWN_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}

_COMPONENT_RULE = (
    "may contain only lower-case letters, digits and the separators '.', '_', '__' "
    "or '-', and each path component must start and end with a letter or digit"
)


def _require_str(value: object, part: str) -> None:
    # A typed error naming the input, not a TypeError from deep inside re.
    if not isinstance(value, str):
        raise InvalidReferenceError(value, part, value, f"must be a str, not {type(value).__name__}")  # type: ignore[arg-type]


def _is_domain(component: str) -> bool:
    """Docker's heuristic (splitDockerDomain): is the first path component a registry?"""
    return "." in component or ":" in component or component == "localhost"


def _check_registry(reference: str, registry: str) -> None:
    if not registry:
        raise InvalidReferenceError(reference, "registry", registry, "must not be empty")
    if not _HOST.fullmatch(registry):
        raise InvalidReferenceError(
            reference,
            "registry",
            registry,
            "is not a valid host[:port] (letters, digits, '-' and '.' in the host name, "
            "digits in the port, e.g. 'ghcr.io' or 'localhost:5000')",
        )


def _check_path(reference: str, repository: str) -> None:
    if not repository:
        raise InvalidReferenceError(reference, "repository", repository, "must not be empty")
    for component in repository.split("/"):
        if _PATH_COMPONENT.fullmatch(component):
            continue
        if not component:
            reason = "has an empty path component (a leading, trailing or doubled '/')"
        elif ":" in component:
            reason = f"contains ':' in {component!r} (only one ':tag' is allowed, after the last '/')"
        elif component != component.lower() and _PATH_COMPONENT.fullmatch(component.lower()):
            # The most common mistake by far; say exactly what would work.
            reason = f"must be lower-case; did you mean {repository.lower()!r}?"
        else:
            reason = f"{_COMPONENT_RULE} (bad component {component!r})"
        raise InvalidReferenceError(reference, "repository", repository, reason)


def _check_name_length(reference: str, registry: Optional[str], repository: str) -> None:
    name = f"{registry}/{repository}" if registry else repository
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReferenceError(
            reference,
            "repository",
            repository,
            f"makes the image name {len(name)} characters long "
            f"(at most {NAME_TOTAL_LENGTH_MAX} allowed)",
        )


def _check_tag(reference: str, tag: str) -> None:
    if _TAG.fullmatch(tag):
        return
    if not tag:
        reason = "must not be empty"
    elif len(tag) > TAG_LENGTH_MAX:
        reason = f"is {len(tag)} characters long (at most {TAG_LENGTH_MAX} allowed)"
    else:
        reason = (
            "may contain only letters, digits, '_', '.' and '-', "
            "and must not start with '.' or '-'"
        )
    raise InvalidReferenceError(reference, "tag", tag, reason)


def _check_digest(reference: str, digest: str) -> None:
    algorithm, sep, encoded = digest.partition(":")
    if not sep or not _DIGEST_ALGORITHM.fullmatch(algorithm):
        raise InvalidReferenceError(
            reference, "digest", digest, "must look like 'sha256:<64 lower-case hex digits>'"
        )
    expected = _KNOWN_DIGEST_LENGTHS.get(algorithm)
    if expected is not None:
        if len(encoded) != expected or not re.fullmatch(r"[a-f0-9]+", encoded):
            raise InvalidReferenceError(
                reference,
                "digest",
                digest,
                f"must be {algorithm}: followed by exactly {expected} lower-case hex digits",
            )
    elif not _DIGEST_HEX.fullmatch(encoded):
        raise InvalidReferenceError(
            reference, "digest", digest, "must have at least 32 hex digits after the ':'"
        )


def _validate_parts(
    reference: str,
    registry: Optional[str],
    repository: str,
    tag: Optional[str],
    digest: Optional[str],
) -> None:
    if registry is not None:
        _check_registry(reference, registry)
    _check_path(reference, repository)
    _check_name_length(reference, registry, repository)
    if tag is not None:
        _check_tag(reference, tag)
    if digest is not None:
        _check_digest(reference, digest)


def _parse_parts(text: str) -> tuple[Optional[str], str, Optional[str], Optional[str]]:
    """Split and validate ``text``; raise :class:`InvalidReferenceError` naming the bad part.

    The registry is found with Docker's rule (:func:`_is_domain`). When that split is
    invalid but the other one is valid -- ``a_b.c/app`` (not a host, but a valid path) or
    ``Team/app`` (an upper-case first component is a registry for Docker) -- the other
    one is used, so exactly the references of the Distribution grammar are accepted.
    """
    parts = _split_reference(text)
    try:
        _validate_parts(text, *parts)
    except InvalidReferenceError as first:
        registry, repository, tag, digest = parts
        full = f"{registry}/{repository}" if registry is not None else repository
        head, slash, rest = full.partition("/")
        other = (None, full) if registry is not None else (head, rest) if slash else None
        if other is None:
            raise
        try:
            _validate_parts(text, other[0], other[1], tag, digest)
        except InvalidReferenceError:
            raise first from None
        return other[0], other[1], tag, digest
    return parts


def _split_reference(
    text: str,
) -> tuple[Optional[str], str, Optional[str], Optional[str]]:
    """Split text into (registry, repository, tag, digest) without validating them."""
    name, at, digest_text = text.partition("@")
    digest = digest_text if at else None
    tag: Optional[str] = None
    # A ':' after the last '/' starts the tag; an earlier one is the registry port.
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
    registry: Optional[str] = None
    first, slash, rest = name.partition("/")
    if slash and _is_domain(first):
        registry, name = first, rest
    return registry, name, tag, digest


@dataclass(frozen=True)
class ImageRef:
    """A validated image reference: ``[registry/]repository[:tag][@digest]``.

    Nothing is normalised: ``busybox`` stays ``busybox`` (not
    ``docker.io/library/busybox``), so ``str(ImageRef.parse(text)) == text`` for every
    valid ``text``.

    Attributes:
        registry: ``host[:port]`` or ``None`` (Docker Hub), e.g. ``"localhost:5000"``.
        repository: the path without the registry, e.g. ``"org/app"``.
        tag: the tag without ``:``, or ``None``.
        digest: ``algorithm:hex`` without ``@``, or ``None``.
    """

    registry: Optional[str]
    repository: str
    tag: Optional[str] = None
    digest: Optional[str] = None

    def __post_init__(self) -> None:
        # Constructing directly must not bypass the grammar parse() enforces.
        _validate_parts(str(self), self.registry, self.repository, self.tag, self.digest)

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse ``text``; raise :class:`InvalidReferenceError` naming the bad part."""
        _require_str(text, "repository")
        if not text:
            raise InvalidReferenceError(text, "repository", text, "must not be empty")
        return cls(*_parse_parts(text))

    @property
    def name(self) -> str:
        """``registry/repository`` (or just ``repository``), without tag or digest."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def namespace(self) -> Optional[str]:
        """The namespace of :attr:`name`, split the way :func:`split_repository_path` does."""
        return _prefect_split(self.name)[0]

    @property
    def basename(self) -> str:
        """The repository part of :attr:`name` after :attr:`namespace` (see :func:`split_repository_path`)."""
        return _prefect_split(self.name)[1]

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def with_tag(self, tag: Optional[str]) -> ImageRef:
        """A copy with ``tag`` (``None`` removes it); the digest is kept."""
        return replace(self, tag=tag)

    def with_digest(self, digest: Optional[str]) -> ImageRef:
        """A copy pinned to ``digest`` (``None`` removes it); the tag is kept."""
        return replace(self, digest=digest)

    def with_registry(self, registry: Optional[str]) -> ImageRef:
        """A copy in ``registry`` (``None`` means Docker Hub); tag and digest are kept."""
        return replace(self, registry=registry)


def validate_tag(tag: str) -> str:
    """Return ``tag`` unchanged if it is a valid tag, else raise :class:`InvalidReferenceError`."""
    _require_str(tag, "tag")
    _check_tag(tag, tag)
    return tag


def validate_digest(digest: str) -> str:
    """Return ``digest`` unchanged if it is a valid ``algorithm:hex``, else raise."""
    _require_str(digest, "digest")
    _check_digest(digest, digest)
    return digest


def validate_registry(registry: str) -> str:
    """Return ``registry`` unchanged if it is a valid ``host[:port]``, else raise."""
    _require_str(registry, "registry")
    _check_registry(registry, registry)
    return registry


def validate_platform(platform: str) -> str:
    """Return ``platform`` unchanged if it is an ``os[/arch[/variant]]`` specifier (containerd's
    grammar, e.g. ``linux/amd64``, ``linux/arm64/v8``), else raise :class:`InvalidArgumentError`."""
    if not isinstance(platform, str) or not _PLATFORM.fullmatch(platform):
        raise InvalidArgumentError(
            "platform", f"{platform!r} must look like 'os/arch[/variant]', e.g. 'linux/amd64' or 'linux/arm64/v8'"
        )
    return platform


def validate_repository(name: str) -> str:
    """Return ``name`` (``[registry/]repository``) unchanged if valid, else raise.

    A tag or digest is refused: this validates the name a tag is attached to.
    """
    _require_str(name, "repository")
    registry, repository, tag, digest = _split_reference(name)
    if digest is not None or tag is not None:
        extra = f"@{digest}" if digest is not None else f":{tag}"
        raise InvalidReferenceError(
            name,
            "repository",
            name,
            f"must not include a tag or digest ({extra!r}); pass it separately",
        )
    _parse_parts(name)
    return name


def parse_image_tag(name: str) -> tuple[str, Optional[str]]:
    """Split an image reference into ``(image_name, tag_or_digest)``; Prefect's result.

    Same result as Prefect's ``prefect.utilities.dockerutils.parse_image_tag`` (3.8.8
    to 3.9.1) for every valid reference, including its documented digest case:

    - ``'prefecthq/prefect:latest'`` -> ``('prefecthq/prefect', 'latest')``
    - ``'hostname.io:5050/folder/subfolder:latest'`` ->
      ``('hostname.io:5050/folder/subfolder', 'latest')``
    - ``'prefecthq/prefect@sha256:<hex>'`` -> ``('prefecthq/prefect', 'sha256:<hex>')``
    - ``'org/app:v1@sha256:<hex>'`` -> ``('org/app:v1', 'sha256:<hex>')`` (as Prefect)

    The second item is a digest when the reference has one: join it back with ``@``,
    never ``:`` (:func:`join_image_tag` does that). Our own callers (``DockerImage``,
    the ``prefect.yaml`` steps) use :meth:`ImageRef.parse`, which keeps tag and digest
    apart.

    Deliberate deviation: **invalid references raise** :class:`InvalidReferenceError`
    (a ``ValueError``) instead of returning garbage: ``'app:bad tag!'``, ``'Org/App'``,
    ``''``, ``'a:b:c'`` (where Prefect returns ``('app', 'bad tag!')``,
    ``('Org/App', None)``, ``('', None)`` and an unpacking ``ValueError``).
    """
    ref = ImageRef.parse(name)
    if ref.digest is not None:
        return str(ref.with_digest(None)), ref.digest
    return ref.name, ref.tag


def join_image_tag(image_name: str, tag_or_digest: Optional[str]) -> str:
    """The inverse of :func:`parse_image_tag`: ``name:tag``, ``name@digest`` or ``name``."""
    if not tag_or_digest:
        return image_name
    sep = "@" if ":" in tag_or_digest else ":"  # a tag never contains ':', a digest always
    return str(ImageRef.parse(f"{image_name}{sep}{tag_or_digest}"))


def _prefect_split(path: str) -> tuple[Optional[str], str]:
    # Prefect's exact rule: at most two splits, so 'a/b/c/d' -> ('a/b', 'c/d').
    parts = path.split("/", 2)
    if len(parts) == 3:
        return "/".join(parts[:2]), parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    return None, parts[0]


def split_repository_path(repository_path: str) -> tuple[Optional[str], str]:
    """Split a repository path into ``(namespace, repository)``; Prefect-compatible.

    Same result as Prefect 3.8.8's ``split_repository_path`` for every valid reference:
    the namespace is the registry and/or organisation, i.e. everything before the second
    ``/`` (``'a/b/c/d'`` -> ``('a/b', 'c/d')``, ``'org/app'`` -> ``('org', 'app')``,
    ``'app'`` -> ``(None, 'app')``). A tag or digest stays on the repository part, as
    in Prefect.

    Deviation: invalid references (``''``, upper-case paths, illegal tags) raise
    :class:`InvalidReferenceError` instead of being split blindly.
    """
    ImageRef.parse(repository_path)
    return _prefect_split(repository_path)
