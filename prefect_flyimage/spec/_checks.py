"""Argument checks for the public methods of :class:`~prefect_flyimage.spec.image.Image`.

Wrong *types* (a float ``python_version``, a list where one string is expected, an int
environment value) are caught where the call is made, as one :class:`SpecError` naming
the method and every bad parameter -- not as a ``TypeError`` from deep inside a later
build. Wrong *values* of the right type (a missing file, a bad platform string) stay
problems that :meth:`Image.validate` reports all at once.

Also: requirement syntax (PEP 508, with ``packaging``) of ``with_pip_packages`` specs and
requirements files, used by the layers' ``problems()``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from packaging.requirements import InvalidRequirement, Requirement

from ..errors import SpecError
from ..plan import BuildSecret

__all__ = ["check_call", "requirement_problem", "requirements_file_problems"]


def _type(value: Any) -> str:
    return f"{value!r:.60} ({type(value).__name__})"


def _python_version(value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return None  # the text is parsed (and reported) by the caller
    if isinstance(value, (tuple, list)) and len(value) >= 2 and all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        return None
    return f"must be a string such as '3.12' or a tuple such as (3, 12), not {_type(value)}"


def _text(value: Any) -> Optional[str]:
    if isinstance(value, str) and value.strip():
        return None
    return f"must be a non-empty str, not {_type(value)}"


def _optional_text(value: Any) -> Optional[str]:
    return None if value is None else _text(value)


def _path(value: Any) -> Optional[str]:
    if isinstance(value, (str, os.PathLike)) and str(os.fspath(value)).strip():
        return None
    return f"must be a path (str or pathlib.Path), not {_type(value)}"


def _optional_path(value: Any) -> Optional[str]:
    return None if value is None else _path(value)


def _paths(value: Any) -> Optional[str]:
    if isinstance(value, (str, os.PathLike)):
        return _path(value)
    if not isinstance(value, Iterable) or isinstance(value, (bytes, Mapping)):
        return f"must be a path or a sequence of paths, not {_type(value)}"
    items = list(value)
    if not items:
        return "must name at least one file"
    for i, item in enumerate(items):
        if _path(item):
            return f"item {i} must be a path (str or pathlib.Path), not {_type(item)}"
    return None


def _optional_str(value: Any) -> Optional[str]:
    return None if value is None or isinstance(value, str) else f"must be a str or None, not {_type(value)}"


def _str(value: Any) -> Optional[str]:
    return None if isinstance(value, str) else f"must be a str, not {_type(value)}"


def _timeout(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        return f"must be a positive number of seconds or None, not {_type(value)}"
    return None


def _stream(value: Any) -> Optional[str]:
    if value is None or callable(getattr(value, "write", None)):
        return None
    return f"must be a writable text stream (with .write()) or None, not {_type(value)}"


def _bool(value: Any) -> Optional[str]:
    return None if isinstance(value, bool) else f"must be True or False, not {_type(value)}"


def _optional_bool(value: Any) -> Optional[str]:
    return None if value is None else _bool(value)


def _strs_or_str(value: Any) -> Optional[str]:
    """One string, a sequence of strings, or ``None``."""
    if value is None or isinstance(value, str):
        return None
    if not isinstance(value, Iterable) or isinstance(value, (bytes, Mapping)):
        return f"must be a str or a sequence of str, not {_type(value)}"
    for i, item in enumerate(value):
        if not isinstance(item, str):
            return f"item {i} must be a str, not {_type(item)}"
    return None


def _packages(value: Any) -> Optional[str]:
    for i, item in enumerate(value):
        if not isinstance(item, str):
            hint = "; pass several as separate arguments" if isinstance(item, (list, tuple)) else ""
            return f"package {i} must be a str, not {_type(item)}{hint}"
    return None


def _env_vars(value: Any) -> Optional[str]:
    if not isinstance(value, Mapping):
        return f"must be a mapping of names to str values, not {_type(value)}"
    bad = [f"{k!r}: {_type(v)}" for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        return f"names and values must be str (write numbers as text): {', '.join(bad)}"
    return None


def _platform(value: Any) -> Optional[str]:
    return _strs_or_str(value)  # the strings themselves are checked by validate()


def _secret_mounts(value: Any) -> Optional[str]:
    if value is None or isinstance(value, (str, BuildSecret)):
        return None
    if not isinstance(value, Iterable) or isinstance(value, (bytes, Mapping)):
        return f"must be a name, a BuildSecret or a sequence of them, not {_type(value)}"
    for i, item in enumerate(value):
        if not isinstance(item, (str, BuildSecret)):
            return f"item {i} must be a str (an environment variable's name) or a BuildSecret, not {_type(item)}"
    return None


def _layer(value: Any) -> Optional[str]:
    from .layers import Layer

    return None if value is None or isinstance(value, Layer) else f"must be a Layer, not {_type(value)}"


# Parameter name -> its check, shared by every method that takes the parameter.
_RULES: dict[str, Callable[[Any], Optional[str]]] = {
    "python_version": _python_version,
    "prefect_version": _optional_text,
    "install_prefect": _bool,
    "registry": _optional_str,  # '' means "keep" in clone(); validate() checks the text
    "name": _optional_str,
    "platform": _platform,
    "image_uri": _str,  # validate() reports an empty or malformed one
    "base_image": _optional_str,
    "script": _path,
    "file": _path,
    "path": _path,
    "src": _paths,
    "dst": _str,  # validate() reports an empty destination with the other problems
    "root_dir": _optional_path,
    "pyproject_file": _path,
    "uvlock": _optional_path,
    "poetry_lock": _optional_path,
    "index_url": _optional_text,
    "extra_index_urls": _strs_or_str,
    "pre": _bool,
    "extra_args": _optional_text,
    "secret_mounts": _secret_mounts,
    "copy_style": _str,  # validate() reports unknown values
    "project_install_mode": _str,
    "copy_contents_only": _bool,
    "extendable": _optional_bool,
    "addl_layer": _layer,
    "workdir": _str,  # validate() reports a relative or empty one
    "packages": _packages,
    "env_vars": _env_vars,
    "commands": _strs_or_str,
    # build() / to_plan() / push()
    "push": _bool,
    "force": _bool,
    "pull": _bool,
    "no_cache": _bool,
    "network": _optional_text,
    "build_timeout": _timeout,
    "push_timeout": _timeout,
    "append": _bool,
    "context_dir": _optional_path,
    "stream_progress_to": _stream,
}
# Where a parameter is required by one method but optional in others.
_REQUIRED = {("from_ref_name", "name"): _text, ("from_uv_script", "name"): _text}


def check_call(method: str, arguments: Mapping[str, Any]) -> None:
    """Check the arguments of ``Image.<method>`` (its ``locals()`` on entry); raise one SpecError.

    Parameters without a rule (``self``, ``cls``, ``registry_secret``) are not checked.
    """
    problems = []
    for param, value in arguments.items():
        rule = _REQUIRED.get((method, param)) or _RULES.get(param)
        problem = rule(value) if rule else None
        if problem:
            problems.append(f"{method}(): {param} {problem}")
    if method == "with_source_folder" and isinstance(arguments.get("src"), Iterable) and not isinstance(
        arguments.get("src"), (str, os.PathLike)
    ):
        problems.append(f"{method}(): src must be one folder, not {_type(arguments['src'])}")
    if problems:
        raise SpecError(problems)


# ---- requirement syntax ------------------------------------------------------------------

# pip accepts these besides PEP 508 requirements: local paths, archive/VCS URLs.
_URL_OR_PATH = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|\.{0,2}/|~|[A-Za-z]:[\\/])|\.(?:whl|zip|tar\.gz|tgz|tar\.bz2)$")
# Per-requirement options pip allows after a requirement on a requirements-file line.
_LINE_OPTIONS = re.compile(r"\s+(?:--hash|--config-settings|--global-option|--install-option|-C)(?:[=\s].*)?$")


def requirement_problem(spec: str) -> Optional[str]:
    """Why ``spec`` is not something pip can install, or ``None`` when it is.

    PEP 508 requirements (``pandas>=2,<3``, ``name[extra] @ https://...; python_version<'4'``)
    are parsed with ``packaging``; URLs and local paths are left to pip.
    """
    text = spec.strip()
    if not text:
        return "is empty"
    if "${" in text or (_URL_OR_PATH.search(text) and " @ " not in text):
        return None  # pip expands ${VARS}; URLs and paths are pip's to check
    try:
        Requirement(text)
    except InvalidRequirement as exc:
        return f"is not a valid requirement: {str(exc).splitlines()[0]}"
    return None


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """(first line number, line) after joining ``\\`` continuations, as pip reads them."""
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not buffer:
            start = number
        if raw.endswith("\\"):
            buffer += raw[:-1]
            continue
        yield start, buffer + raw
        buffer = ""
    if buffer:
        yield start, buffer


def requirements_file_problems(what: str, path: Path) -> list[str]:
    """Lines of a requirements file that are not valid requirements, naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{what}: cannot read {str(path)!r}: {exc}"]
    problems = []
    for number, line in _logical_lines(text):
        line = re.sub(r"(^|\s)#.*$", "", line).strip()  # comments, as pip strips them
        if not line or line.startswith("-"):
            continue  # blank, or an option line (-r, -c, -e, --index-url, ...)
        line = _LINE_OPTIONS.sub("", line)
        problem = requirement_problem(line)
        if problem:
            problems.append(f"{what}: {str(path)!r} line {number}: {line!r} {problem}")
    return problems
