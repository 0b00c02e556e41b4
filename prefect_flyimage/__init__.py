"""prefect-flyimage: content-addressed container images for Prefect deployments.

The core (plans, context hashing, the Docker engine, the pipeline) imports no
Prefect; Prefect-facing pieces (tasks, :class:`DockerImage`, the Fly.io module, the
declarative :class:`Image`) load on first use so ``import prefect_flyimage`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .context import BuildContext
from .credentials import RegistryCredentials
from .dockerfile import ImageBuilder, generate_default_dockerfile, to_run_command
from .dockerutils import build_image, docker_client, push_image
from .engine import Engine, LocalImage
from .errors import (
    AuthenticationError,
    BuildError,
    BuildTimeout,
    ContextError,
    DockerUnavailable,
    FlyImageError,
    ImageBuildError,
    InvalidArgumentError,
    InvalidReferenceError,
    PushAuthenticationError,
    PushError,
    PushTimeout,
    PushUnavailableError,
    RegistryError,
    RegistryUnavailable,
    SpecError,
)
from .names import ImageRef, parse_image_tag, split_repository_path
from .pipeline import Observation, ensure, exists, observe, publish
from .plan import BuildPlan, BuildResult, BuildSecret
from .prefect_images import format_outlier_version_name, get_prefect_image_name

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access.
_LAZY = {
    "DockerImage": ".docker_image",
    "Image": ".spec",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prefect_flyimage' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AuthenticationError",
    "BuildContext",
    "BuildError",
    "BuildTimeout",
    "BuildPlan",
    "BuildResult",
    "BuildSecret",
    "ContextError",
    "DockerImage",
    "DockerUnavailable",
    "Engine",
    "FlyImageError",
    "Image",
    "ImageBuildError",
    "ImageBuilder",
    "ImageRef",
    "InvalidArgumentError",
    "InvalidReferenceError",
    "LocalImage",
    "Observation",
    "PushAuthenticationError",
    "PushError",
    "PushTimeout",
    "PushUnavailableError",
    "RegistryCredentials",
    "RegistryError",
    "RegistryUnavailable",
    "SpecError",
    "build_image",
    "docker_client",
    "ensure",
    "exists",
    "format_outlier_version_name",
    "generate_default_dockerfile",
    "observe",
    "get_prefect_image_name",
    "parse_image_tag",
    "publish",
    "push_image",
    "split_repository_path",
    "to_run_command",
]
