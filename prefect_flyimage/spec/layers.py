"""Layers of a declarative image: frozen dataclasses that render Dockerfile lines.

Every layer knows three things:

- :meth:`Layer.render` -- its Dockerfile lines. Paths into the build context are derived
  from the layer's position (``layers/03-folder/``), never from where files live on
  this machine, so the text is the same on every checkout.
- :meth:`Layer.digests` -- content digests of the local files it copies (after
  ``.dockerignore``), which the image hash combines with the rendered lines.
- :meth:`Layer.problems` -- what is wrong with it, so ``Image.validate()`` can report
  every problem at once.

Installs use BuildKit cache mounts (pip, uv, poetry, apt with ``sharing=locked``) and
BuildKit secret mounts; no value of a secret is ever written to a Dockerfile line, an
``ARG``/``ENV`` or a layer.

The base (:class:`Layer`, :class:`LayerContext`, shared helpers) lives in
``_layer_base``, the Python installers in ``_python_layers``, the system and file layers in
``_file_layers``; this module is the one public name for all of them.
"""

from __future__ import annotations

from ._file_layers import (
    AptPackages,
    CodeBundle,
    Commands,
    DockerIgnore,
    Env,
    SourceFiles,
    SourceFolder,
    WorkDir,
    loaded_module_files,
)
from ._layer_base import (
    APT_CACHES,  # noqa: F401 - kept importable from here
    CODE_BUNDLE_IGNORE,
    DEFAULT_IGNORE,
    PIP_CACHE,  # noqa: F401 - kept importable from here
    POETRY_CACHE,  # noqa: F401 - kept importable from here
    POETRY_REQUIREMENT,  # noqa: F401 - kept importable from here
    PY_PREFIX,  # noqa: F401 - kept importable from here
    SCRATCH,  # noqa: F401 - kept importable from here
    UV_CACHE,  # noqa: F401 - kept importable from here
    UV_REQUIREMENT,  # noqa: F401 - kept importable from here
    FolderContext,  # noqa: F401 - kept importable from here
    Layer,
    LayerContext,
    SecretMount,
    as_secrets,
    file_digest,  # noqa: F401 - kept importable from here
    secret_env_name,  # noqa: F401 - kept importable from here
)
from ._python_layers import (
    InstallMode,  # noqa: F401 - kept importable from here
    PipOptions,  # noqa: F401 - kept importable from here
    PipPackages,
    PoetryProject,
    Requirements,
    UVProject,
    UVScript,
)

__all__ = [
    "AptPackages",
    "CodeBundle",
    "Commands",
    "DEFAULT_IGNORE",
    "CODE_BUNDLE_IGNORE",
    "DockerIgnore",
    "Env",
    "Layer",
    "LayerContext",
    "PipPackages",
    "PoetryProject",
    "Requirements",
    "SecretMount",
    "SourceFiles",
    "SourceFolder",
    "UVProject",
    "UVScript",
    "WorkDir",
    "as_secrets",
    "loaded_module_files",
]

