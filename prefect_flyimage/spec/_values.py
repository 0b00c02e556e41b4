"""The arguments of :class:`~prefect_flyimage.spec.image.Image`'s constructors and
``with_*`` methods, normalised into the frozen values a spec holds (tuples, absolute
paths, ``(major, minor)``). :mod:`.image` re-exports :data:`Architecture` and
:data:`DEFAULT_PLATFORM`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from ..errors import SpecError
from ._layer_base import SecretMount, as_secrets

__all__ = ["Architecture", "DEFAULT_PLATFORM", "Platforms", "PythonVersion", "SecretMounts", "Urls"]

#: A target platform such as ``"linux/amd64"``.
Architecture = str
DEFAULT_PLATFORM: tuple[Architecture, ...] = ("linux/amd64",)
PythonVersion = Union[tuple[int, int], str]
Platforms = Union[Architecture, Sequence[Architecture], None]
Urls = Union[str, Sequence[str], None]
SecretMounts = Union[SecretMount, Iterable[SecretMount], None]


def _current_python() -> tuple[int, int]:
    return sys.version_info[0], sys.version_info[1]


def _python_version(value: Optional[PythonVersion]) -> tuple[int, int]:
    if value is None:
        return _current_python()
    if isinstance(value, str):
        match = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?", value.strip())
        if not match:
            raise SpecError([f"python_version {value!r} must look like '3.12' or (3, 12)"])
        return int(match.group(1)), int(match.group(2))
    items = tuple(value)
    if len(items) < 2 or not all(isinstance(i, int) for i in items[:2]):
        raise SpecError([f"python_version {value!r} must look like '3.12' or (3, 12)"])
    return items[0], items[1]


def _platforms(value: Platforms) -> tuple[Architecture, ...]:
    if value is None:
        return DEFAULT_PLATFORM
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _urls(value: Urls) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _absolute(path: Union[str, Path]) -> Path:
    # Resolved when the spec is written, so a later chdir does not move the files.
    return Path(path).expanduser().absolute()


def _pip_options(
    index_url: Optional[str], extra_index_urls: Urls, pre: bool, extra_args: Optional[str], secret_mounts: SecretMounts,
) -> dict[str, Any]:
    """The :class:`~prefect_flyimage.spec.layers.PipOptions` fields of a pip or uv layer."""
    return {
        "index_url": index_url, "extra_index_urls": _urls(extra_index_urls), "pre": pre,
        "extra_args": extra_args, "secret_mounts": as_secrets(secret_mounts),
    }
