"""Typed values the engine returns, and the protocol the pipeline programs against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional, Protocol, TextIO, runtime_checkable

from ..names import ImageRef
from ..plan import PLAN_LABEL

if TYPE_CHECKING:
    from ..credentials import RegistryCredentials
    from ..plan import BuildPlan

__all__ = ["EngineProtocol", "LocalImage"]


@dataclass(frozen=True)
class LocalImage:
    """An image in the Docker daemon (the parts of ``docker inspect`` anyone needs)."""

    id: str  #: ``sha256:...`` image id (the config digest)
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    repo_digests: tuple[str, ...] = ()  #: ``name@sha256:...`` recorded by pushes and pulls
    repo_tags: tuple[str, ...] = ()
    created: str = ""  #: RFC 3339 creation time
    size: Optional[int] = None
    parent: str = ""  #: the classic builder's parent image id ("" when none)

    @classmethod
    def from_inspect(cls, info: Mapping[str, Any]) -> "LocalImage":
        """From docker-py's ``inspect_image`` dict (the one place that reads it)."""
        config = info.get("Config") or {}
        return cls(
            id=str(info["Id"]),
            labels=dict(config.get("Labels") or {}),
            repo_digests=tuple(info.get("RepoDigests") or ()),
            repo_tags=tuple(info.get("RepoTags") or ()),
            created=str(info.get("Created") or ""),
            size=info.get("Size"),
            parent=str(info.get("Parent") or ""),
        )

    @property
    def plan_hash(self) -> Optional[str]:
        """The plan hash this image was built from (its :data:`~prefect_flyimage.plan.PLAN_LABEL`)."""
        return self.labels.get(PLAN_LABEL)

    def built_from(self, plan_hash: str) -> bool:
        """True when the image carries ``plan_hash`` in its plan label."""
        return bool(plan_hash) and self.plan_hash == plan_hash

    def has_digest(self, repository: str, digest: str) -> bool:
        """True when a push or pull recorded ``repository@digest`` for this very image."""
        want = _norm(ImageRef.parse(repository).name)
        for entry in self.repo_digests:
            ref = ImageRef.parse(entry)
            if ref.digest == digest and _norm(ref.name) == want:
                return True
        return False

    # Compatibility with code written against the inspect dict (``info["Id"]``).
    _LEGACY = {
        "Id": "id", "Created": "created", "Size": "size", "RepoDigests": "repo_digests", "RepoTags": "repo_tags",
        "Parent": "parent",
    }

    def __getitem__(self, key: str) -> Any:
        if key == "Config":
            return {"Labels": dict(self.labels)}
        if key in self._LEGACY:
            value = getattr(self, self._LEGACY[key])
            return list(value) if isinstance(value, tuple) else value
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access for compatibility (``"Id"``, ``"Config"``, ``"RepoDigests"``, ...)."""
        try:
            return self[key]
        except KeyError:
            return default


def _norm(name: str) -> str:
    # Docker Hub spells one repository several ways; the daemon records the long form.
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name[len("library/"):] if name.startswith("library/") and name.count("/") == 1 else name


@runtime_checkable
class EngineProtocol(Protocol):
    """What the pipeline needs from a Docker engine (the real :class:`Engine` or a fake)."""

    def local_image(self, ref: "ImageRef | str") -> Optional[LocalImage]:
        """The daemon's image for ``ref`` (tag, digest reference or id), or ``None``."""

    def build(
        self, plan: "BuildPlan", tags: Optional[list[str]] = None, stream: Optional[TextIO] = None,
        timeout: Optional[float] = None, extra: Optional[dict[str, Any]] = None,
    ) -> str:
        """Build ``plan`` tagged ``repository:tag`` for each of ``tags``; return the image id."""

    def tag(self, image: str, ref: "ImageRef | str") -> None:
        """Tag ``image`` as ``ref``."""

    def push(
        self, ref: "ImageRef | str", credentials: "Optional[RegistryCredentials]" = None,
        stream: Optional[TextIO] = None, timeout: Optional[float] = None,
    ) -> str:
        """Push ``ref``; return the manifest digest the registry stored."""

    def pull(self, ref: "ImageRef | str", credentials: "Optional[RegistryCredentials]" = None) -> str:
        """Pull ``ref``; return the local image id."""

    def registry_digest(self, ref: "ImageRef | str", credentials: "Optional[RegistryCredentials]" = None) -> Optional[str]:
        """The digest the registry holds for ``ref`` (asked through the daemon), or ``None``."""

    def close(self) -> None:
        """Release the connection to the daemon."""
