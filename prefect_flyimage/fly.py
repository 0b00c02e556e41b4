"""Fly.io's container registry: build, log in to and push ``registry.fly.io/<app>:<tag>``.

A drop-in for flaude's ``flaude.image`` (same names, parameters, defaults, return
values and :class:`ImageBuildError`), with three differences:

- :func:`ensure_image` goes through the content-addressed pipeline: when the
  registry already holds the image of this build context it neither builds nor
  pushes (flaude always rebuilds and re-pushes);
- logging in needs no ``flyctl``: the Fly registry accepts the user ``x`` with a Fly
  API token as password. The token comes from the ``token`` argument,
  ``$FLY_API_TOKEN``, or a Prefect block (see :func:`fly_credentials`); only when
  none is found is ``flyctl auth docker`` used, if installed;
- the registry host is configurable (``registry=`` or ``$FLY_REGISTRY_HOST``).

The token never reaches argv, a log line, an exception message or an image layer:
docker-py gets it as ``auth_config`` and ``docker login`` reads it from stdin.

Every function exists in a blocking form (``*_sync``) too; Prefect tasks with
retries on transient errors only (``ensure_fly_image``, ...) live in
:mod:`prefect_flyimage.fly_tasks` (which imports this module, never the reverse).
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from . import _args
from ._fly_auth import (
    CREDENTIALS_BLOCK_ENV,
    DEFAULT_REGISTRY,
    FLY_USERNAME,
    LOGIN_TIMEOUT,
    REGISTRY_ENV,
    TOKEN_ENV,
    TOKEN_SECRET_ENV,
    TokenLike,
    _credentials_or_flyctl,
    _login,
    _secret_text,
    fly_credentials,
    fly_registry_host,
    resolve_fly_token,
)
from .credentials import RegistryCredentials
from .errors import (
    FLY_APP_NAME_MAX,
    ContextError,
    FlyContextError,
    ImageBuildError,
    InvalidAppName,
    MissingFlyToken,
    is_transient,
    redact,
)
from .names import validate_tag

if TYPE_CHECKING:
    from .engine import Engine
    from .plan import BuildPlan, BuildResult

__all__ = [
    "CREDENTIALS_BLOCK_ENV",
    "DEFAULT_PLATFORM",
    "DEFAULT_REGISTRY",
    "DEFAULT_TAG",
    "FLY_USERNAME",
    "FlyContextError",
    "ImageBuildError",
    "InvalidAppName",
    "LOGIN_TIMEOUT",
    "MissingFlyToken",
    "REGISTRY_ENV",
    "TOKEN_ENV",
    "TOKEN_SECRET_ENV",
    "TokenLike",
    "docker_build",
    "docker_build_sync",
    "docker_login_fly",
    "docker_login_fly_sync",
    "docker_push",
    "docker_push_sync",
    "ensure_image",
    "ensure_image_result",
    "ensure_image_sync",
    "fly_credentials",
    "fly_registry_host",
    "image_ref",
    "is_transient",
    "resolve_fly_token",
    "validate_app_name",
]

logger = logging.getLogger("prefect_flyimage.fly")

#: Tag used when none is given (flaude's default).
DEFAULT_TAG = "latest"
#: Fly machines run linux/amd64 (flaude's ``docker_build`` default).
DEFAULT_PLATFORM = "linux/amd64"
_APP_NAME = re.compile(r"[a-z][a-z0-9-]*")
_APP_NAME_MAX = FLY_APP_NAME_MAX

# ---- names --------------------------------------------------------------------------


def validate_app_name(app_name: str) -> str:
    """Return ``app_name`` if it is a valid Fly app name, else raise :class:`InvalidAppName`."""
    if not isinstance(app_name, str) or not app_name:
        raise InvalidAppName(app_name, "must be a non-empty string")
    if len(app_name) > _APP_NAME_MAX:
        raise InvalidAppName(app_name, f"has {len(app_name)} characters")
    if not app_name[0].isascii() or not app_name[0].isalpha() or not app_name[0].islower():
        raise InvalidAppName(app_name, "must start with a lower-case letter")
    if not _APP_NAME.fullmatch(app_name):
        bad = sorted({c for c in app_name if not (c.islower() and c.isascii() or c.isdigit() or c == "-")})
        raise InvalidAppName(app_name, f"contains {''.join(bad)!r}")
    return app_name


def image_ref(app_name: str, tag: str = DEFAULT_TAG, *, registry: Optional[str] = None) -> str:
    """``<registry>/<app_name>:<tag>`` after validating the app name and the tag."""
    return f"{fly_registry_host(registry)}/{validate_app_name(app_name)}:{validate_tag(tag)}"


# ---- plan / pipeline ----------------------------------------------------------------------


def _plan(
    app_name: str, tag: str, docker_context: Optional[Path | str], platform: Optional[str], host: str, network: Optional[str]
) -> "BuildPlan":
    from .plan import BuildPlan

    context = _args.path("docker_context", docker_context) if docker_context is not None else Path.cwd()
    if not context.is_dir():
        raise FlyContextError(f"Docker context directory does not exist: {context}", context)
    if not (context / "Dockerfile").is_file():
        raise FlyContextError(f"Dockerfile not found at: {context / 'Dockerfile'}", context / "Dockerfile")
    try:
        return BuildPlan.from_dockerfile(
            context, repository=f"{host}/{app_name}", tag=tag, platform=platform, network=network
        )
    except ContextError as exc:
        raise FlyContextError(str(exc), exc.path) from None


def _ensure(
    app_name: str,
    *,
    tag: str,
    token: TokenLike,
    docker_context: Optional[Path | str],
    build_timeout: Optional[float],
    push_timeout: Optional[float],
    platform: Optional[str],
    registry: Optional[str],
    force: bool,
    network: Optional[str],
    engine: Optional["Engine"],
) -> "BuildResult":
    from . import pipeline

    validate_app_name(app_name)
    validate_tag(tag)
    _args.timeout("build_timeout", build_timeout)
    _args.timeout("push_timeout", push_timeout)
    _args.boolean("force", force)
    _secret_text(token)  # a wrong type is refused before anything is built
    host = fly_registry_host(registry)
    plan = _plan(app_name, tag, docker_context, platform, host, network)
    # Credentials first: a missing or refused token fails before a long build.
    creds = _credentials_or_flyctl(token, host)
    logger.info("ensuring %s from %s (content tag %s)", plan.ref, plan.context, plan.content_tag)
    try:
        result = pipeline.ensure(
            plan,
            credentials=creds,
            engine=engine,
            build_timeout=build_timeout,
            push_timeout=push_timeout,
            force=force,
        )
    except ImageBuildError as exc:
        _scrub(exc, creds)
        raise
    if result.cached:
        logger.info("%s: the registry already holds this context's image (%s); nothing built or pushed", plan.ref, result.digest)
    else:
        logger.info(
            "%s: %s and %s (%s)", plan.ref, "built" if result.built else "build skipped (image was in the daemon)",
            "pushed" if result.pushed else "not pushed", result.digest,
        )
    return result


def _scrub(exc: BaseException, creds: Optional[RegistryCredentials]) -> None:
    # Belt and braces: the engine redacts already, but nothing may carry the token onwards.
    if creds is None:
        return
    secrets = [creds.secret]
    exc.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in exc.args)
    if isinstance(exc, ImageBuildError):
        exc.stderr = redact(exc.stderr or "", secrets)


# ---- blocking API ------------------------------------------------------------------------


def ensure_image_result(
    app_name: str,
    *,
    tag: str = DEFAULT_TAG,
    token: TokenLike = None,
    docker_context: Optional[Path | str] = None,
    build_timeout: Optional[float] = 600,
    push_timeout: Optional[float] = 600,
    platform: Optional[str] = DEFAULT_PLATFORM,
    registry: Optional[str] = None,
    force: bool = False,
    network: Optional[str] = None,
    engine: Optional["Engine"] = None,
) -> "BuildResult":
    """Like :func:`ensure_image_sync` but return the full :class:`~prefect_flyimage.plan.BuildResult`.

    The result says whether the image was built (``built``), pushed (``pushed``) or
    neither (``cached``), and carries the registry digest and timings.
    """
    return _ensure(
        app_name, tag=tag, token=token, docker_context=docker_context, build_timeout=build_timeout,
        push_timeout=push_timeout, platform=platform, registry=registry, force=force, network=network,
        engine=engine,
    )


def ensure_image_sync(
    app_name: str,
    *,
    tag: str = DEFAULT_TAG,
    token: TokenLike = None,
    docker_context: Optional[Path | str] = None,
    build_timeout: Optional[float] = 600,
    push_timeout: Optional[float] = 600,
    platform: Optional[str] = DEFAULT_PLATFORM,
    registry: Optional[str] = None,
    force: bool = False,
    network: Optional[str] = None,
    engine: Optional["Engine"] = None,
) -> str:
    """Blocking :func:`ensure_image`."""
    return ensure_image_result(
        app_name, tag=tag, token=token, docker_context=docker_context, build_timeout=build_timeout,
        push_timeout=push_timeout, platform=platform, registry=registry, force=force, network=network,
        engine=engine,
    ).reference


def docker_build_sync(
    app_name: str,
    *,
    tag: str = DEFAULT_TAG,
    platform: Optional[str] = DEFAULT_PLATFORM,
    docker_context: Optional[Path | str] = None,
    timeout: Optional[float] = 600,
    registry: Optional[str] = None,
    network: Optional[str] = None,
    engine: Optional["Engine"] = None,
) -> str:
    """Blocking :func:`docker_build`."""
    from . import pipeline

    validate_app_name(app_name)
    validate_tag(tag)
    _args.timeout("timeout", timeout)
    host = fly_registry_host(registry)
    plan = _plan(app_name, tag, docker_context, platform, host, network)
    result = pipeline.ensure(plan, push=False, engine=engine, build_timeout=timeout)
    logger.info("%s %s", plan.ref, "built" if result.built else "was in the daemon already (same context): build skipped")
    return str(plan.ref)


def docker_push_sync(
    app_name: str,
    *,
    tag: str = DEFAULT_TAG,
    timeout: Optional[float] = 600,
    token: TokenLike = None,
    registry: Optional[str] = None,
    engine: Optional["Engine"] = None,
) -> str:
    """Blocking :func:`docker_push`."""
    from . import pipeline

    ref = image_ref(app_name, tag, registry=registry)
    _args.timeout("timeout", timeout)
    _secret_text(token)
    host = fly_registry_host(registry)
    # Without a token, docker-py falls back to the docker config (docker_login_fly / flyctl).
    creds = fly_credentials(token, registry=host)
    logger.info("pushing %s", ref)
    try:
        result = pipeline.push_local(f"{host}/{app_name}", [tag], creds, engine=engine, timeout=timeout)
    except ImageBuildError as exc:
        _scrub(exc, creds)
        raise
    logger.info("%s %s (%s)", "pushed" if result.pushed else "registry already holds", ref, result.digest)
    return ref


def docker_login_fly_sync(
    *, token: TokenLike = None, registry: Optional[str] = None, engine: Optional["Engine"] = None
) -> None:
    """Blocking :func:`docker_login_fly`."""
    _login(token, registry, engine)


# ---- async API (flaude's) ----------------------------------------------------------------


async def ensure_image(
    app_name: str,
    *,
    tag: str = DEFAULT_TAG,
    token: TokenLike = None,
    docker_context: Optional[Path | str] = None,
    build_timeout: Optional[float] = 600,
    push_timeout: Optional[float] = 600,
    platform: Optional[str] = DEFAULT_PLATFORM,
    registry: Optional[str] = None,
    force: bool = False,
    network: Optional[str] = None,
    engine: Optional["Engine"] = None,
) -> str:
    """Make sure ``<registry>/<app_name>:<tag>`` holds the image of ``docker_context``.

    Unlike flaude's build → login → push, this hashes the context first: when the
    registry already holds the image for this context (under its content tag and
    ``tag``) nothing is built or pushed, and a log line says so. A changed file,
    Dockerfile or platform changes the hash, so the image is rebuilt and pushed.

    Args:
        app_name: The Fly.io app name (validated against Fly's naming rules).
        tag: Image tag. Defaults to ``latest``.
        token: Fly API token for the registry; see :func:`fly_credentials` for the
            fallbacks (``$FLY_API_TOKEN``, Prefect blocks, then ``flyctl auth docker``).
        docker_context: Directory holding the ``Dockerfile``. Defaults to the
            **current working directory** (flaude defaulted to a Dockerfile shipped in
            its package, which has no equivalent here).
        build_timeout: Max seconds for the build; the build is then cancelled and
            nothing is tagged.
        push_timeout: Max seconds for each push; the push is then aborted.
        platform: Target platform (Fly machines run ``linux/amd64``).
        registry: Registry host; defaults to ``$FLY_REGISTRY_HOST`` or ``registry.fly.io``.
        force: Rebuild and re-push even if the image exists.
        network: Network mode of ``RUN`` steps (``docker build --network``), e.g.
            ``"none"`` or ``"host"``; Docker's default when ``None``. Not part of the hash.
        engine: The :class:`~prefect_flyimage.engine.Engine` to use (one from the
            environment by default).

    Returns:
        The full image reference (e.g. ``registry.fly.io/my-app:latest``).

    Raises:
        InvalidAppName: ``app_name`` breaks Fly's rules (a ``ValueError``).
        ImageBuildError: any failure: :class:`FlyContextError` (no context or
            Dockerfile), :class:`~prefect_flyimage.errors.AuthenticationError` (token
            refused or missing), :class:`~prefect_flyimage.errors.BuildError` (failed or
            timed out), :class:`~prefect_flyimage.errors.PushError`,
            :class:`~prefect_flyimage.errors.RegistryUnavailable`,
            :class:`~prefect_flyimage.errors.DockerUnavailable`.
    """
    return await asyncio.to_thread(
        ensure_image_sync, app_name, tag=tag, token=token, docker_context=docker_context,
        build_timeout=build_timeout, push_timeout=push_timeout, platform=platform, registry=registry,
        force=force, network=network, engine=engine,
    )


async def docker_build(
    app_name: str,
    *,
    tag: str = DEFAULT_TAG,
    platform: Optional[str] = DEFAULT_PLATFORM,
    docker_context: Optional[Path | str] = None,
    timeout: Optional[float] = 600,
    registry: Optional[str] = None,
    network: Optional[str] = None,
    engine: Optional["Engine"] = None,
) -> str:
    """Build the image of ``docker_context`` and tag it ``<registry>/<app_name>:<tag>``.

    The image also gets its content tag and a label with the plan hash, so a later
    :func:`ensure_image` of the same context finds it; an identical image already in
    the daemon is re-tagged instead of rebuilt.

    Args:
        app_name: The Fly.io app name (used in the image reference).
        tag: Image tag. Defaults to ``latest``.
        platform: Target platform. Defaults to ``linux/amd64`` (what Fly runs).
        docker_context: Directory holding the ``Dockerfile``. Defaults to the current
            working directory.
        timeout: Max seconds for the build; the build is then cancelled and nothing is tagged.
        registry: Registry host; defaults to ``$FLY_REGISTRY_HOST`` or ``registry.fly.io``.
        network: Network mode of ``RUN`` steps (e.g. ``"none"``, ``"host"``); Docker's default when ``None``.
        engine: The :class:`~prefect_flyimage.engine.Engine` to use.

    Returns:
        The full image reference (e.g. ``registry.fly.io/my-app:latest``).

    Raises:
        ImageBuildError: the build failed or timed out (:class:`~prefect_flyimage.errors.BuildError`),
            or the context or Dockerfile is missing (:class:`FlyContextError`, ``returncode`` ``None``).
    """
    return await asyncio.to_thread(
        docker_build_sync, app_name, tag=tag, platform=platform, docker_context=docker_context,
        timeout=timeout, registry=registry, network=network, engine=engine,
    )


async def docker_push(
    app_name: str,
    *,
    tag: str = DEFAULT_TAG,
    timeout: Optional[float] = 600,
    token: TokenLike = None,
    registry: Optional[str] = None,
    engine: Optional["Engine"] = None,
) -> str:
    """Push ``<registry>/<app_name>:<tag>`` (built by :func:`docker_build`) to the Fly registry.

    Authenticates with the token from ``token``/the environment/a Prefect block when
    one is configured, otherwise with the docker config written by
    :func:`docker_login_fly` or ``flyctl auth docker``.

    Args:
        app_name: The Fly.io app name.
        tag: Image tag. Defaults to ``latest``.
        timeout: Max seconds for the push; the push is then aborted.
        token: Fly API token (see :func:`fly_credentials`).
        registry: Registry host; defaults to ``$FLY_REGISTRY_HOST`` or ``registry.fly.io``.
        engine: The :class:`~prefect_flyimage.engine.Engine` to use.

    Returns:
        The full image reference that was pushed.

    Raises:
        ImageBuildError: the push failed (:class:`~prefect_flyimage.errors.PushError`,
            with :class:`~prefect_flyimage.errors.PushAuthenticationError` for a refused token).
    """
    return await asyncio.to_thread(
        docker_push_sync, app_name, tag=tag, timeout=timeout, token=token, registry=registry, engine=engine
    )


async def docker_login_fly(
    *, token: TokenLike = None, registry: Optional[str] = None, engine: Optional["Engine"] = None
) -> None:
    """Log the docker CLI in to the Fly registry (``docker login`` as user ``x``, token on stdin).

    Needs no ``flyctl``; the token comes from ``token``, ``$FLY_API_TOKEN`` or a Prefect
    block (see :func:`fly_credentials`). Only when none is configured is
    ``flyctl auth docker`` run, if ``flyctl`` is on ``PATH``. The login is stored in
    the docker config (``$DOCKER_CONFIG``, default ``~/.docker``).

    Raises:
        MissingFlyToken: no token and no flyctl (an :class:`ImageBuildError`).
        AuthenticationError: the registry refused the token, or flyctl failed.
        RegistryUnavailable: the registry cannot be reached.
    """
    await asyncio.to_thread(_login, token, registry, engine)
