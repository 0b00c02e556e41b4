"""Names of Prefect's official images, Prefect-compatible and without subprocesses.

:func:`get_prefect_image_name` returns the same names as Prefect 3.8.8's
``prefect.utilities.dockerutils.get_prefect_image_name``. Prefect's version runs
``git rev-parse --short=7 HEAD`` on *every* call -- even for release versions, where the
result is thrown away -- in the current working directory. That costs a process spawn,
and for dev versions it picks up the sha of whatever repository the user happens to be
in (their flow project), not Prefect's. Here the sha comes from the version string
itself (versioningit writes ``3.8.8+12.gabcdef0``) or from Prefect's build info.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import Optional

from packaging.version import InvalidVersion, Version

from .errors import InvalidArgumentError, InvalidPrefectVersion

__all__ = [
    "InvalidPrefectVersion",
    "format_outlier_version_name",
    "get_prefect_image_name",
    "installed_prefect_version",
    "python_version_minor",
]

# Characters Docker allows in a tag; everything else becomes '-', as Prefect's slugify does.
_TAG_DISALLOWED = re.compile(r"[^a-zA-Z0-9_.-]+")
# slugify drops thousands separators ("1,000" -> "1000") before replacing characters.
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
# versioningit/versioneer put the abbreviated commit as "g<hex>" in the local segment.
_LOCAL_SHA = re.compile(r"g([0-9a-f]{4,40})")
_TAG_MAX = 128


def python_version_minor() -> str:
    """The running interpreter's ``major.minor`` version, e.g. ``'3.11'``."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def installed_prefect_version() -> str:
    """The installed Prefect version (``prefect.__version__``).

    Reads package metadata unless ``prefect`` is already imported, because importing
    Prefect takes seconds and we only need one string.
    """
    module = sys.modules.get("prefect")
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("prefect")
    except PackageNotFoundError:
        raise ValueError(
            "prefect is not installed, so its version is unknown; "
            "pass prefect_version= explicitly"
        ) from None


def _installed_revision() -> Optional[str]:
    """Prefect's ``__version_info__['full-revisionid']`` if available (no subprocess)."""
    try:
        import prefect
    except ImportError:
        return None
    info = getattr(prefect, "__version_info__", None) or {}
    revision = info.get("full-revisionid")
    return revision if isinstance(revision, str) and revision else None


def _dev_short_sha(version: Version) -> str:
    """The 7-character commit sha naming a dev image, read from the version or build info."""
    assert version.local is not None
    for segment in version.local.split("."):
        match = _LOCAL_SHA.fullmatch(segment)
        if match:
            return match.group(1)[:7]
    # No sha in the version string: use Prefect's own fallback (its build info).
    revision = _installed_revision()
    if revision is None:
        raise ValueError(
            f"cannot tell which commit Prefect version {str(version)!r} was built from: "
            "its local segment has no 'g<sha>' part and Prefect's build info is unavailable"
        )
    return revision[:7]


def _slugify_tag(text: str) -> str:
    """Prefect's ``slugify(text, lowercase=False, max_length=128, regex_pattern=...)``.

    Re-implemented for the inputs a tag is built from (versions, flavors): transliterate
    to ASCII, replace runs of disallowed characters with '-', trim, truncate.
    """
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = _DIGIT_COMMA.sub("", text)
    text = _TAG_DISALLOWED.sub("-", text)
    text = re.sub(r"-{2,}", "-", text).strip("-")
    return text[:_TAG_MAX].strip("-")


def get_prefect_image_name(
    prefect_version: Optional[str] = None,
    python_version: Optional[str] = None,
    flavor: Optional[str] = None,
) -> str:
    """The official Prefect image for a Prefect and Python version, like Prefect's own.

    Args:
        prefect_version: Prefect version; defaults to the installed Prefect's.
        python_version: ``major.minor`` Python version; defaults to the running one.
        flavor: an image flavor such as ``'conda'``.

    Returns:
        ``prefecthq/prefect:<version>-python<py>[-<flavor>]`` for releases and
        pre-releases (``3.8.8``, ``3.0.0rc1``, ``3.8.9.dev1``), and
        ``prefecthq/prefect-dev:sha-<sha7>-python<py>[-<flavor>]`` for builds with a
        local version segment (``3.8.8+12.gabcdef0``).

    Deviation from Prefect: never spawns a process. Prefect runs ``git rev-parse`` in the
    current directory on every call; here the dev sha is the ``g<sha>`` of the version
    string, falling back (like Prefect without git) to Prefect's recorded
    ``full-revisionid``. For an installed dev build the two agree; for an explicit
    ``prefect_version`` ours names the commit that version was built from.

    Raises:
        InvalidPrefectVersion: ``prefect_version`` is not a PEP 440 version (also
            ``packaging``'s ``InvalidVersion``, which Prefect raises).
        InvalidArgumentError: an argument is not a non-empty str.
    """
    for arg, value in (("prefect_version", prefect_version), ("python_version", python_version), ("flavor", flavor)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise InvalidArgumentError(arg, f"must be a non-empty str or None, not {value!r:.40} ({type(value).__name__})")
    try:
        parsed = Version(prefect_version or installed_prefect_version())
    except InvalidVersion:
        raise InvalidPrefectVersion("prefect_version", f"{prefect_version!r} is not a PEP 440 version such as '3.1.0'") from None
    is_release = parsed.local is None
    version_part = parsed.public if is_release else f"sha-{_dev_short_sha(parsed)}"
    python_version = python_version or python_version_minor()
    tag = _slugify_tag(f"{version_part}-python{python_version}" + (f"-{flavor}" if flavor else ""))
    image = "prefect" if is_release else "prefect-dev"
    return f"prefecthq/{image}:{tag}"


def format_outlier_version_name(version: str) -> str:
    """Strip Docker's ``-ce``/``-ee`` edition labels so ``packaging`` can parse the version.

    Same as Prefect's: ``'20.10.0-ce'`` -> ``'20.10.0'``, ``'24.0.7'`` unchanged.
    """
    if not isinstance(version, str):
        raise InvalidArgumentError("version", f"must be a str, not {type(version).__name__}")
    return version.replace("-ce", "").replace("-ee", "")
