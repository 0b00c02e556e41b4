"""Prefect tasks around :mod:`prefect_flyimage.fly`.

Each task retries only transient failures (:func:`prefect_flyimage.errors.is_transient`,
the one policy of :mod:`prefect_flyimage.tasks`): a refused token, a bad app name or a
failing Dockerfile fails on the first attempt instead of looping. Change the retry
budget with :func:`prefect_flyimage.tasks.configure_retries` or ``with_options``.

Pass the token as a :class:`pydantic.SecretStr` (or leave it to ``$FLY_API_TOKEN`` or
a block) so it is never shown with the task's parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from prefect import task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from . import fly
from .tasks import DEFAULT_RETRIES, DEFAULT_RETRY_BACKOFF, retry_delays, retry_on_transient

__all__ = ["build_fly_image", "ensure_fly_image", "login_fly_registry", "push_fly_image", "retry_on_transient"]


# One retry policy for every task of the package (tasks.py): transient failures only.
# The pipeline is the cache (it asks the registry), so Prefect must not cache results:
# a cached reference could point at an image the registry has since lost.
_TASK_OPTIONS: dict[str, Any] = dict(
    retries=DEFAULT_RETRIES,
    retry_delay_seconds=retry_delays(DEFAULT_RETRIES, DEFAULT_RETRY_BACKOFF),
    retry_condition_fn=retry_on_transient,
    cache_policy=NO_CACHE,
)


def _artifact_markdown(result: Any) -> str:
    rows = [
        ("reference", result.reference),
        ("digest", result.digest or "-"),
        ("pinned", result.pinned),
        ("built", result.built),
        ("pushed", result.pushed),
        ("plan hash", result.plan_hash),
    ]
    return "| field | value |\n|---|---|\n" + "\n".join(f"| {k} | `{v}` |" for k, v in rows)


@task(name="ensure_fly_image", **_TASK_OPTIONS)
async def ensure_fly_image(
    app_name: str,
    *,
    tag: str = fly.DEFAULT_TAG,
    token: fly.TokenLike = None,
    docker_context: Optional[Path | str] = None,
    build_timeout: float = 600,
    push_timeout: float = 600,
    platform: Optional[str] = fly.DEFAULT_PLATFORM,
    registry: Optional[str] = None,
    force: bool = False,
    network: Optional[str] = None,
    artifact: bool = True,
) -> str:
    """Prefect task: :func:`prefect_flyimage.fly.ensure_image`, retried on transient errors only.

    Logs whether the image was built, pushed or already in the registry and, with
    ``artifact``, records a markdown artifact (key ``fly-image-<app_name>``) with the
    reference and digest. Returns the image reference.
    """
    import asyncio

    log = get_run_logger()
    result = await asyncio.to_thread(
        fly.ensure_image_result, app_name, tag=tag, token=token, docker_context=docker_context,
        build_timeout=build_timeout, push_timeout=push_timeout, platform=platform, registry=registry, force=force,
        network=network,
    )
    if result.cached:
        log.info("%s already in the registry (%s): nothing built or pushed", result.reference, result.digest)
    else:
        log.info("%s built=%s pushed=%s digest=%s", result.reference, result.built, result.pushed, result.digest)
    if artifact:
        await acreate_markdown_artifact(
            key=f"fly-image-{app_name}", markdown=_artifact_markdown(result), description=f"Fly image {result.reference}"
        )
    return result.reference


@task(name="build_fly_image", **_TASK_OPTIONS)
async def build_fly_image(
    app_name: str,
    *,
    tag: str = fly.DEFAULT_TAG,
    platform: Optional[str] = fly.DEFAULT_PLATFORM,
    docker_context: Optional[Path | str] = None,
    timeout: float = 600,
    registry: Optional[str] = None,
    network: Optional[str] = None,
) -> str:
    """Prefect task: :func:`prefect_flyimage.fly.docker_build`."""
    return await fly.docker_build(
        app_name, tag=tag, platform=platform, docker_context=docker_context, timeout=timeout, registry=registry,
        network=network,
    )


@task(name="push_fly_image", **_TASK_OPTIONS)
async def push_fly_image(
    app_name: str,
    *,
    tag: str = fly.DEFAULT_TAG,
    timeout: float = 600,
    token: fly.TokenLike = None,
    registry: Optional[str] = None,
) -> str:
    """Prefect task: :func:`prefect_flyimage.fly.docker_push`."""
    return await fly.docker_push(app_name, tag=tag, timeout=timeout, token=token, registry=registry)


@task(name="login_fly_registry", **_TASK_OPTIONS)
async def login_fly_registry(*, token: fly.TokenLike = None, registry: Optional[str] = None) -> None:
    """Prefect task: :func:`prefect_flyimage.fly.docker_login_fly`."""
    await fly.docker_login_fly(token=token, registry=registry)
