"""Argument checks for the front doors: a wrong type or value is an :class:`InvalidArgumentError`
naming the argument, raised before anything is built, pushed, written or contacted.

Each check returns the value (normalised where noted), so a front door reads
``tag = _args.optional_text("tag", tag)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from .plan import BuildPlan

__all__ = [
    "boolean", "build_plan", "env_seconds", "non_negative_int", "non_negative_number", "optional_text", "path", "str_list", "text", "timeout",
]


def _shown(value: Any) -> str:
    return f"{value!r:.60} ({type(value).__name__})"


def text(name: str, value: Any) -> str:
    """A non-empty ``str``."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(name, f"must be a non-empty str, not {_shown(value)}")
    return value


def optional_text(name: str, value: Any) -> Optional[str]:
    """``None`` or a non-empty ``str``."""
    return None if value is None else text(name, value)


def boolean(name: str, value: Any) -> bool:
    """``True`` or ``False`` (not a truthy string such as ``"no"``)."""
    if not isinstance(value, bool):
        raise InvalidArgumentError(name, f"must be True or False, not {_shown(value)}")
    return value


def timeout(name: str, value: Any) -> Optional[float]:
    """``None`` (no limit) or a positive, finite number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError(name, f"must be a positive number of seconds or None, not {_shown(value)}")
    return value


def env_seconds(variable: str, default: float) -> float:
    """A positive, finite number of seconds from environment ``variable`` (``default``
    when unset or blank): the one reader of the ``*_TIMEOUT`` settings."""
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidArgumentError(f"${variable}", f"must be a positive number of seconds, not {value!r}")
    return seconds


def non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(name, f"must be a whole number >= 0, not {_shown(value)}")
    return value


def non_negative_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(name, f"must be a number >= 0, not {_shown(value)}")
    return value


def path(name: str, value: Any) -> Path:
    """A ``str`` or ``os.PathLike`` that is not empty (existence is the caller's check)."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise InvalidArgumentError(name, f"must be a path (str or pathlib.Path), not {_shown(value)}")
    return Path(value)


def str_list(name: str, value: Any) -> list[str]:
    """A list/tuple of ``str`` (``None`` is an empty list); a lone ``str`` is refused, not split into characters."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgumentError(name, f"must be a list of str, not {_shown(value)}")
    items = list(value)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidArgumentError(f"{name}[{i}]", f"must be a str, not {_shown(item)}")
    return items


def build_plan(name: str, value: Any) -> "BuildPlan":
    """A :class:`~prefect_flyimage.plan.BuildPlan`."""
    from .plan import BuildPlan  # lazily: the other checks need no plan (nor its imports)

    if not isinstance(value, BuildPlan):
        raise InvalidArgumentError(name, f"must be a BuildPlan, not {type(value).__name__}")
    return value
