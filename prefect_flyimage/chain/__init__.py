"""Image trees in docker-pkg's format, built in parallel through the core pipeline.

One folder per image (``Dockerfile.template``, Debian ``changelog``, optional
``control``, ``test.sh`` and ``.dockerignore``) and docker-pkg's ``config.yaml``.
:class:`DockerBuilder` scans, checks and builds a tree; :class:`ImageFSM` is one image.
The Prefect flow lives in :mod:`prefect_flyimage.chain.flows` (imported on demand).
"""

from __future__ import annotations

from .builder import DockerBuilder
from .changelog import ImageSpec, new_tag, read_spec
from .cli import main
from .config import DEFAULTS, read_config
from .errors import ChainBuildError, IllegalTransitionError, TreeProblem, TreeSpecError
from .fsm import ImageFSM
from .report import ImageOutcome, markdown_table
from .templates import TemplateRenderer

__all__ = [
    "DEFAULTS",
    "ChainBuildError",
    "DockerBuilder",
    "IllegalTransitionError",
    "ImageFSM",
    "ImageOutcome",
    "ImageSpec",
    "TemplateRenderer",
    "TreeProblem",
    "TreeSpecError",
    "main",
    "markdown_table",
    "new_tag",
    "read_config",
    "read_spec",
]
