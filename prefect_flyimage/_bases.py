"""Base images are inputs too: find every stage's ``FROM``, resolve it to a digest, pin it.

A plan's hash covers the Dockerfile text, but ``FROM python:3.11-slim`` names whatever
the tag points at today. Before hashing, the pipeline resolves each external base
(:func:`resolve_plan`): with ``pull`` on (Prefect's default) the manifest digest its
registry holds now -- one ``HEAD`` per distinct base, issued while the context is being
hashed; with ``pull`` off the daemon's image id (the registry's digest if the daemon
lacks it, as ``docker build`` would then pull). The digests enter the hash as an added
section (:attr:`BuildPlan.bases`), so a moved base gives a new content tag, and a plan
that never resolved bases hashes exactly as before.

The build then uses exactly what was hashed: each resolved ``FROM ref`` becomes
``FROM name@sha256:...`` in the Dockerfile text sent to the daemon (:func:`pinned_dockerfile`;
the hash input keeps the text as written). Local image ids are not pinned (BuildKit cannot
``FROM`` an id); they name what the daemon holds at the time of the build anyway.

``$PREFECT_FLYIMAGE_OFFLINE_BASES=1`` skips the lookups: each base is recorded as
``offline`` (the tag as written is built, and the log says so).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from .credentials import RegistryCredentials, resolve_credentials
from .dockerfile import _substitute
from .errors import AuthenticationError, BaseImageUnresolved, RegistryError
from .names import ImageRef

if TYPE_CHECKING:
    from .engine import EngineProtocol
    from .plan import BuildPlan

__all__ = [
    "OFFLINE",
    "OFFLINE_ENV",
    "describe_bases",
    "FromLine",
    "external_bases",
    "from_lines",
    "offline_requested",
    "pinned_dockerfile",
    "resolve_plan",
]

logger = logging.getLogger("prefect_flyimage")

#: Set to ``1`` to build bases by tag without looking their digests up (no network).
OFFLINE_ENV = "PREFECT_FLYIMAGE_OFFLINE_BASES"
#: The digest recorded for a base that was not looked up (offline).
OFFLINE = "offline"
#: The digest recorded for a ``pull=False`` base the daemon lacks and its registry would not
#: give: the build pulls it by tag as ``docker build`` would, and reports any failure itself.
UNRESOLVED = "unresolved"
#: Prefix of a recorded local image id (``pull`` off), so it never reads as a registry digest.
LOCAL_PREFIX = "local:"


def offline_requested() -> bool:
    """True when :data:`OFFLINE_ENV` asks to skip base lookups."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# ---- reading FROM lines ------------------------------------------------------------------


@dataclass(frozen=True)
class FromLine:
    """One ``FROM`` instruction: where it is in the text and what it names."""

    first: int  #: index of its first line in ``text.splitlines()``
    last: int  #: index of its last line (continuations)
    image: str  #: the image after build args are applied
    flags: tuple[str, ...]  #: ``--platform=...`` and other flags, as written
    alias: Optional[str]  #: ``AS name``
    external: bool  #: not ``scratch`` and not an earlier stage


def _logical_lines(text: str) -> list[tuple[int, int, str]]:
    """``(first, last, joined)`` per instruction, as :func:`dockerfile.instructions` joins them."""
    out: list[tuple[int, int, str]] = []
    buf: list[str] = []
    first = 0
    for i, raw in enumerate(text.splitlines()):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if not buf:
            first = i
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        out.append((first, i, " ".join(p for p in buf if p).strip()))
        buf = []
    if buf:
        out.append((first, len(text.splitlines()) - 1, " ".join(p for p in buf if p).strip()))
    return out


def from_lines(text: str, build_args: Optional[Mapping[str, Any]] = None) -> list[FromLine]:
    """Every ``FROM`` of ``text`` with ``ARG`` lines before the first ``FROM`` applied
    (their defaults, overridden by ``build_args``), as Docker does.

    Raises:
        ValueError: a ``FROM`` uses an ``ARG`` without a value, or names no image.
    """
    overrides = {str(k): str(v) for k, v in (build_args or {}).items() if v is not None}
    args: dict[str, Optional[str]] = {}
    stages: set[str] = set()
    found: list[FromLine] = []
    for first, last, line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not found:
            for token in shlex.split(rest):
                name, eq, default = token.partition("=")
                # A default may use earlier ARGs (``ARG BASE=${REG}/img``), as Docker expands it.
                value = _substitute(default, args, []) if eq else None
                args[name] = overrides.get(name, value)
        elif keyword == "FROM":
            words = rest.split()
            flags = tuple(w for w in words if w.startswith("--"))
            words = [w for w in words if not w.startswith("--")]
            if not words:
                raise ValueError(f"{line!r} names no image")
            missing: list[str] = []
            image = _substitute(words[0], args, missing).strip()
            if missing:
                raise ValueError(f"{line!r} uses build arg(s) {', '.join(sorted(set(missing)))} that have no value")
            if not image:
                raise ValueError(f"{line!r} names no image")
            alias = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            external = image.lower() != "scratch" and image.lower() not in stages and not image.isdigit()
            found.append(FromLine(first, last, image, flags, alias, external))
            if alias:
                stages.add(alias.lower())
    return found


def external_bases(text: str, build_args: Optional[Mapping[str, Any]] = None) -> list[str]:
    """The distinct images the stages of ``text`` start from, in order (no ``scratch``, no stages)."""
    seen: dict[str, None] = {}
    for f in from_lines(text, build_args):
        if f.external:
            seen.setdefault(f.image, None)
    return list(seen)


def pinned_dockerfile(text: str, build_args: Optional[Mapping[str, Any]], pins: Mapping[str, str]) -> str:
    """``text`` with each ``FROM ref`` whose ``ref`` has a registry digest in ``pins``
    rewritten to ``FROM name@sha256:...`` (flags and ``AS name`` kept). Other lines are
    left byte for byte; a ``FROM`` spread over continuation lines becomes one line."""
    digests = {ref: d for ref, d in pins.items() if d.startswith("sha256:")}
    if not digests:
        return text
    lines = text.splitlines(keepends=True)
    for f in reversed(from_lines(text, build_args)):
        digest = digests.get(f.image) if f.external else None
        if digest is None:
            continue
        ref = ImageRef.parse(f.image)
        if ref.digest:
            continue  # already pinned
        words = ["FROM", *f.flags, str(ImageRef(ref.registry, ref.repository, None, digest))]
        if f.alias:
            words += ["AS", f.alias]
        ending = "\n" if lines[f.last].endswith("\n") else ""
        lines[f.first : f.last + 1] = [" ".join(words) + ending]
    return "".join(lines)


# ---- resolving -----------------------------------------------------------------------------


def _registry_digest(ref: ImageRef, credentials: Optional[RegistryCredentials]) -> Optional[str]:
    from .registry import shared_client

    return shared_client(ref.registry, credentials).manifest_digest(ref)


def _where(ref: ImageRef) -> str:
    return ref.registry or "docker.io"


def _resolve_one(
    text: str, pull: bool, plan_registry: Optional[str], plan_credentials: Optional[RegistryCredentials],
    engine: Callable[[], "EngineProtocol"],
) -> str:
    ref = ImageRef.parse(text)
    if ref.digest:
        return ref.digest  # pinned in the Dockerfile: cannot move
    if not pull:
        image = engine().local_image(ref)
        if image is not None:
            return LOCAL_PREFIX + image.id
    # The plan's own credentials apply in its own registry; elsewhere, the docker config's.
    creds = plan_credentials if ref.registry == plan_registry else resolve_credentials(None, registry=ref.registry)
    try:
        digest = _registry_digest(ref, creds)
    except RegistryError as exc:
        if pull:
            raise _unresolved(text, ref, exc) from None
        # pull=False: the daemon would pull it at build time (with its own logins) and report
        # a failure as docker build does (prefect-docker's BuildError and hint).
        logger.warning("base image %s is not in the daemon and its registry cannot be asked (%s); "
                       "the build pulls it by tag", text, exc)
        return UNRESOLVED
    if digest is None:
        raise BaseImageUnresolved(text, _where(ref), "the registry has no such image" + ("" if pull else " and the daemon neither"))
    return digest


def _unresolved(text: str, ref: ImageRef, exc: RegistryError) -> BaseImageUnresolved:
    if isinstance(exc, AuthenticationError):
        return BaseImageUnresolved(text, _where(ref), f"the registry refused the credentials ({exc})")
    return BaseImageUnresolved(text, _where(ref), f"the registry cannot be asked ({exc})")


def resolve_plan(
    plan: "BuildPlan",
    credentials: Optional[RegistryCredentials],
    engine: Optional[Callable[[], "EngineProtocol"]] = None,
) -> "BuildPlan":
    """``plan`` with :attr:`~BuildPlan.bases` filled in, when it asks for it (``pin_bases``)
    and has none yet; else ``plan`` itself.

    Each distinct base is looked up once, concurrently, while the context is hashed in
    this thread. ``credentials`` are the plan's registry's; ``engine`` makes the daemon
    client when a local image id is needed (``pull`` off).

    Raises:
        BaseImageUnresolved: naming the base and its registry.
        SpecError: a ``FROM`` that uses a build arg without a value.
    """
    if plan.bases is not None or not plan.pin_bases:
        return plan
    try:
        refs = external_bases(plan.dockerfile_text, dict(plan.build_args))
    except ValueError as exc:
        from .errors import SpecError

        raise SpecError([f"Dockerfile: {exc}"]) from None
    if not refs:
        return plan.with_bases(())
    if offline_requested():
        logger.warning("%s=1: base image(s) %s built by tag, not resolved to a digest", OFFLINE_ENV, ", ".join(refs))
        return plan.with_bases(tuple((r, OFFLINE) for r in refs))
    engine_made: list[Any] = []
    if engine is None:
        own = engine_made

        def engine() -> "EngineProtocol":
            if not own:
                from .engine import Engine

                own.append(Engine())
            return own[0]  # type: ignore[no-any-return]

    plan_registry = ImageRef.parse(plan.repository).registry
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(refs), 8), thread_name_prefix="flyimage-bases") as pool:
        futures = [pool.submit(_resolve_one, r, plan.pull, plan_registry, credentials, engine) for r in refs]
        plan.build_context.digest()  # hash the context meanwhile (cached on the plan)
        try:
            digests = [f.result() for f in futures]
        finally:
            if engine_made:
                engine_made[0].close()
    resolved = tuple(zip(refs, digests))
    logger.debug("base images: %s", ", ".join(f"{r}={d}" for r, d in resolved))
    return plan.with_bases(resolved)


def describe_bases(plan: "BuildPlan") -> list[dict[str, str]]:
    """``[{"ref", "digest", "source"}]`` for ``inspect`` and artifacts."""
    out = []
    for ref, digest in plan.bases or ():
        if digest == OFFLINE:
            source = "offline (tag as written)"
        elif digest == UNRESOLVED:
            source = "unresolved (not in the daemon; pulled by tag at build time)"
        elif digest.startswith(LOCAL_PREFIX):
            source = "local image id"
        else:
            source = "registry" if not ImageRef.parse(ref).digest else "pinned in the Dockerfile"
        out.append({"ref": ref, "digest": digest, "source": source})
    return out

