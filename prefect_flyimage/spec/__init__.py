"""Declarative container images (Flyte 2's ``flyte.Image`` API) for Prefect deployments.

:class:`Image` is the entry point (also ``prefect_flyimage.Image``); the layer classes
are public for ``Image.clone(addl_layer=...)`` and for inspecting :attr:`Image.layers`.
"""

from __future__ import annotations

from .config import ScriptMetadata, read_script_metadata, resolve_ref_name
from .image import DEFAULT_NAME, DEFAULT_PLATFORM, Architecture, Image, SpecDockerImage
from .layers import (
    AptPackages,
    CodeBundle,
    Commands,
    DockerIgnore,
    Env,
    Layer,
    LayerContext,
    PipPackages,
    PoetryProject,
    Requirements,
    SecretMount,
    SourceFiles,
    SourceFolder,
    UVProject,
    UVScript,
    WorkDir,
    loaded_module_files,
)

__all__ = [
    "AptPackages",
    "Architecture",
    "CodeBundle",
    "Commands",
    "DEFAULT_NAME",
    "DEFAULT_PLATFORM",
    "DockerIgnore",
    "Env",
    "Image",
    "Layer",
    "LayerContext",
    "PipPackages",
    "PoetryProject",
    "Requirements",
    "ScriptMetadata",
    "SecretMount",
    "SourceFiles",
    "SourceFolder",
    "SpecDockerImage",
    "UVProject",
    "UVScript",
    "WorkDir",
    "loaded_module_files",
    "read_script_metadata",
    "resolve_ref_name",
]
