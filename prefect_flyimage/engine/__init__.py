"""The only package that talks to Docker.

Daemon and registry calls go through docker-py; BuildKit builds go through the
``docker`` CLI. Every Docker failure is translated into :mod:`prefect_flyimage.errors`
here, with secrets redacted; every result is a typed value (:class:`LocalImage`, ids,
digests), never a raw ``docker inspect`` dict.

- ``_types``: :class:`LocalImage` and :class:`EngineProtocol` (what the pipeline needs);
- ``_docker``: the docker-py shim (client, timeouts, transport errors, stream abort);
- ``_process``: the docker CLI and process groups (:func:`run_streaming`);
- ``_buildkit``: BuildKit builds through the docker CLI, :func:`choose_backend`;
- ``_buildx``: Prefect's buildx options as flags, the registry layer cache;
- ``_registry_errors``: what a registry's error text means (:func:`classify_registry_error`);
- ``_engine``: :class:`Engine`.
"""

from ._docker import DEFAULT_TIMEOUT, TIMEOUT_ENV, TRANSPORT_ERRORS, daemon_timeout
from ._buildkit import choose_backend
from ._engine import GENERATED_DOCKERFILE, Engine, docker_client
from ._process import TAIL_LINES, buildkit_available, docker_cli, run_streaming
from ._registry_errors import classify_registry_error
from ._types import EngineProtocol, LocalImage

__all__ = [
    "DEFAULT_TIMEOUT",
    "Engine",
    "EngineProtocol",
    "GENERATED_DOCKERFILE",
    "LocalImage",
    "TAIL_LINES",
    "TIMEOUT_ENV",
    "TRANSPORT_ERRORS",
    "buildkit_available",
    "choose_backend",
    "classify_registry_error",
    "daemon_timeout",
    "docker_cli",
    "docker_client",
    "run_streaming",
]
