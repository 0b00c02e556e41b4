"""Keeping images fresh: find the stale ones, rebuild them and what builds on them, report.

An image is **stale** when

- a base image it builds on (every external ``FROM`` and ``COPY --from`` of its
  Dockerfile) now has another digest than the one it was built from, or
- it is older than its ``max_age``.

Design
------
The digests of the bases are a *label of the build* (:data:`BASE_LABEL`). Labels enter
the plan hash, so the content tag is a function of the base digests as well as of the
Dockerfile and context: a moved base gives a new content tag. "Is this image stale?" is
therefore "does the registry hold the content tag of the plan made with today's base
digests?" — the pipeline's existence check, correct without any stored state, on any
machine, and an image built by hand from the same inputs and bases gets the same tag.
Descendants follow without bookkeeping: when a parent is republished, the child's base
digest moves.

Base digests come from the base's registry (:func:`registry_digest`, the one lookup); a
base named without a registry (``flyimage/busybox:latest``: Docker Hub syntax, but on a
host without Docker Hub it exists only locally) uses the local image id instead
(``base_source`` overrides the choice). Before a rebuild, registry bases are pulled *by
digest* and tagged, so the build uses exactly the base the label names.

A small state file remembers what the previous run saw — only to explain a rebuild
(which base moved, from what to what, which image digest was replaced) and to date
images. Losing it changes no decision.

Modules: :mod:`.config` (the YAML file, durations, logins), :mod:`.bases` (base images,
digests, labels, verification), :mod:`.planning` (plans, trees, order),
:mod:`.staleness` (the checks), :mod:`.state`, :mod:`.report`. ``flows/image_refresh.py``
runs them as a Prefect flow with one task per step.
"""

from ..errors import BaseImageMissing, RefreshConfigError, RefreshFailed, VerificationError
from .bases import (
    BASE_LABEL,
    BASE_SOURCES,
    BaseDigest,
    base_label,
    external_bases,
    image_created,
    labelled_plan,
    parse_base_label,
    pin_base,
    registry_digest,
    resolve_base,
    verify_image,
)
from .config import (
    DEFAULT_CONFIG,
    DEFAULT_STATE_DIR,
    CredentialBook,
    ImageEntry,
    RefreshConfig,
    RegistryLogin,
    load_config,
    parse_duration,
)
from .planning import EntryShape, entry_order, entry_shape, load_spec, prepared_plan, scan_tree, tree_external_bases
from .report import STATUSES, ImageReport, summary_markdown
from .staleness import Check, TreeImageCheck, check_plan, check_tree, stale_reasons, tree_credentials
from .state import RefreshState

__all__ = [
    "BASE_LABEL",
    "BASE_SOURCES",
    "DEFAULT_CONFIG",
    "DEFAULT_STATE_DIR",
    "STATUSES",
    "BaseDigest",
    "BaseImageMissing",
    "Check",
    "CredentialBook",
    "EntryShape",
    "ImageEntry",
    "ImageReport",
    "RefreshConfig",
    "RefreshConfigError",
    "RefreshFailed",
    "RefreshState",
    "RegistryLogin",
    "TreeImageCheck",
    "VerificationError",
    "base_label",
    "check_plan",
    "check_tree",
    "entry_order",
    "entry_shape",
    "external_bases",
    "image_created",
    "labelled_plan",
    "load_config",
    "load_spec",
    "parse_base_label",
    "parse_duration",
    "pin_base",
    "prepared_plan",
    "registry_digest",
    "resolve_base",
    "scan_tree",
    "stale_reasons",
    "summary_markdown",
    "tree_credentials",
    "tree_external_bases",
    "verify_image",
]
