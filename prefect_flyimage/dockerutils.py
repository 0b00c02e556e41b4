"""Prefect's ``prefect.utilities.dockerutils`` build and push functions, done right.

Same names, parameters, defaults and return values as Prefect's; the differences
are documented on each function and covered by tests:

- errors are typed (:class:`BuildError`, :class:`PushError` and its
  authentication/unreachable subclasses) and name the image;
- a registry that says "denied" is reported as an authentication error, not as
  "Docker is not running";
- ``push_image`` returns ``name@sha256:...``-safe references and never leaves its
  temporary registry tag behind; its progress lines are Prefect's (``status progress``,
  without the layer id the engine's own lines carry).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Optional, TextIO

import pendulum
from slugify import slugify

from . import _args
from .context import check_context_dir
from .credentials import registry_host
from .engine import Engine, docker_client
from .errors import ContextError
from .names import ImageRef, validate_platform
from .plan import build_arg_pairs

__all__ = ["build_image", "docker_client", "push_image", "IMAGE_LABELS"]


def _image_labels() -> dict[str, str]:
    # Prefect labels every image it builds with its version; keep that for compatibility.
    # Read from package metadata: importing prefect costs seconds.
    from .prefect_images import installed_prefect_version

    return {"io.prefect.version": installed_prefect_version()}


IMAGE_LABELS = _image_labels()

_LAYER_PREFIX = re.compile(r"^[0-9a-f]{12}: ", re.M)


class _PrefectPushLines(io.TextIOBase):
    """Writes the engine's ``<layer>: <status> <progress>`` lines as Prefect's ``<status> <progress>``."""

    def __init__(self, target: TextIO) -> None:
        self.target = target

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        self.target.write(_LAYER_PREFIX.sub("", text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()


def build_image(
    context: Path,
    dockerfile: str = "Dockerfile",
    tag: Optional[str] = None,
    pull: bool = False,
    platform: Optional[str] = None,
    stream_progress_to: Optional[TextIO] = None,
    **kwargs: Any,
) -> str:
    """Builds a Docker image, returning the image ID.

    Args:
        context: the root directory for the Docker build context
        dockerfile: the path to the Dockerfile, relative to the context
        tag: the tag to give this image
        pull: True to pull the base image during the build
        platform: the platform to build for (e.g. ``linux/amd64``)
        stream_progress_to: an optional stream (like sys.stdout, or an io.TextIO) that
            will collect the build output as it is reported by Docker
        **kwargs: further arguments for docker-py's ``APIClient.build``

    Raises:
        ContextError: (a ``ValueError``, as Prefect raises) when the context is missing,
            not a folder, or has no such Dockerfile.
        BuildError: when the build fails; ``step`` and ``output`` tell where.
    """
    if not context:
        raise ContextError("context required to build an image")
    _args.path("dockerfile", dockerfile)
    _args.boolean("pull", pull)
    if platform is not None:
        validate_platform(platform)
    root = check_context_dir(context)
    df = Path(dockerfile)
    if not (df if df.is_absolute() else root / df).is_file():
        raise ContextError(f"Dockerfile {dockerfile!r} not found in build context {str(root)!r}", root / df)
    if tag is not None:
        ImageRef.parse(tag)  # a bad tag is an input error, not a daemon error
    if kwargs.get("buildargs") is not None:  # None values mean unset; non-scalars are a SpecError
        kwargs["buildargs"] = dict(build_arg_pairs(kwargs["buildargs"])) or None
    labels = {**IMAGE_LABELS, **dict(build_arg_pairs(kwargs.pop("labels", None), "label"))}
    with Engine() as engine:
        return engine.build_classic(
            root, dockerfile, tag, stream=stream_progress_to, pull=pull, platform=platform, labels=labels, **kwargs
        )


def push_image(
    image_id: str,
    registry_url: str,
    name: str,
    tag: Optional[str] = None,
    stream_progress_to: Optional[TextIO] = None,
) -> str:
    """Pushes a local image to a Docker registry, returning the registry-qualified tag.

    Like Prefect's, this relies on the daemon's (or docker config's) credentials for
    the registry, tags the image ``<registry host>/<name>:<tag>`` (tag defaulting to a
    slug of the current UTC time), pushes it, removes that temporary tag, and returns
    ``<registry host>/<name>:<tag>``.

    Raises:
        PushAuthenticationError: the registry refused the credentials.
        PushUnavailableError: the registry cannot be reached.
        PushError: any other push failure (all three are ``PushError``).
    """
    _args.text("image_id", image_id)
    _args.text("registry_url", registry_url)
    _args.text("name", name)
    _args.optional_text("tag", tag)
    if not tag:
        tag = slugify(pendulum.now("UTC").isoformat())
    registry = registry_host(registry_url)
    ref = ImageRef.parse(f"{registry}/{name}:{tag}")
    with Engine() as engine:
        engine.tag(image_id, ref)
        try:
            engine.push(ref, stream=_PrefectPushLines(stream_progress_to) if stream_progress_to else None)
        finally:
            engine.remove(ref)
    return str(ref)
