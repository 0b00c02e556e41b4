"""YAML configuration files: parse, check against a pydantic model, name file and line.

Used by every YAML file the project reads (the refresh configuration, a tree's
``config.yaml``). A syntax error and a document of the wrong shape (wrong type, unknown
key, missing key, a failed check) both raise :class:`~prefect_flyimage.errors.ConfigError`
— never PyYAML's or pydantic's own exception — with one line per problem::

    refresh.yaml:7: images[0].max_age: max_age 'soon' is not a duration ...

Lines come from the YAML nodes' marks: each validation error's location (``images``,
``0``, ``max_age``) is walked down the composed node tree to the line it was written on.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError

__all__ = ["YamlDocument", "dotted_path", "problems_of", "read_yaml", "sort_problems", "validate"]

M = TypeVar("M", bound=BaseModel)
_LINE = re.compile(r"^.*?:(\d+)(?::\d+)?: ")
Loc = tuple[str, ...]


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file: its data and the line each key or list item was written on."""

    path: Path
    data: Any
    lines: Mapping[Loc, int] = field(default_factory=dict, repr=False)

    def line(self, loc: Iterable[Any]) -> int:
        """The line (1-based) of the deepest part of ``loc`` present in the file."""
        parts = tuple(str(p) for p in loc)
        for end in range(len(parts), 0, -1):
            if parts[:end] in self.lines:
                return self.lines[parts[:end]]
        return 1

    def where(self, loc: Sequence[Any] = ()) -> str:
        """``file:line: images[0].max_age`` (the location of a problem)."""
        dotted = dotted_path(loc)
        return f"{self.path}:{self.line(loc)}" + (f": {dotted}" if dotted else "")


def dotted_path(loc: Sequence[Any]) -> str:
    """``images[0].max_age`` for ``("images", 0, "max_age")``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _record_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*loc, str(key_node.value))
            lines.setdefault(key, key_node.start_mark.line + 1)  # "key: value" is written on the key's line
            _record_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, str(i))] = item.start_mark.line + 1
            _record_lines(item, (*loc, str(i)), lines)


def read_yaml(path: Path | str, *, error: type[ConfigError] = ConfigError) -> YamlDocument:
    """Parse ``path`` (safe YAML); an empty file is ``None`` data.

    Raises:
        ConfigError (or ``error``): the file cannot be read, or is not valid YAML (naming
            the line and column of the syntax error).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise error([f"{path}: cannot read {path}: {reason}"], path) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = exc.problem or exc.context or "syntax error"
        if exc.problem and exc.context:  # e.g. "while parsing a flow sequence" ... "started at line 1"
            start = f" started at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            what += f" ({exc.context}{start})"
        raise error([f"{where}: not valid YAML: {what}"], path) from None
    except yaml.YAMLError as exc:  # unmarked (e.g. a stream error): no line to give
        raise error([f"{path}: not valid YAML: {exc}"], path) from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    if node is not None:
        _record_lines(node, (), lines)
    return YamlDocument(path, data, lines)


def _submodel(annotation: Any) -> Optional[type[BaseModel]]:
    """The pydantic model inside ``Optional[...]``/``list[...]``/``dict[str, ...]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> Optional[type[BaseModel]]:
    current: Optional[type[BaseModel]] = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue  # a list index: the item type was found with the field
        info = current.model_fields.get(str(part))
        current = _submodel(info.annotation) if info is not None else None
    return current


def _data_loc(data: Any, loc: Sequence[Any], missing: bool) -> tuple[tuple[Any, ...], Any, tuple[Any, ...]]:
    """Split a pydantic location into the part present in the data (a missing key still
    named), the value found there, and the rest (names of union members)."""
    found: list[Any] = []
    for i, part in enumerate(loc):
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            if missing and i == len(loc) - 1:
                found.append(part)
            return tuple(found), data, tuple(loc[len(found):])
        found.append(part)
    return tuple(found), data, ()


def problems_of(doc: YamlDocument, exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One ``file:line: where: what`` line per problem of ``exc`` (input values are never shown)."""
    grouped: dict[tuple[Any, ...], list[str]] = {}
    expected: dict[tuple[Any, ...], list[str]] = {}  # union members a value matched none of
    got: dict[tuple[Any, ...], str] = {}
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        kind, msg = err["type"], str(err["msg"])
        at, value, rest = _data_loc(doc.data, loc, kind == "missing")
        if rest and kind.endswith(("_type", "_parsing")) and len(rest) == 1:
            expected.setdefault(at, []).append(str(rest[0]))
            got[at] = type(value).__name__
            continue
        if kind == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            known = f" (known: {', '.join(sorted(parent.model_fields))})" if parent is not None else ""
            msg = f"unknown key{known}"
        elif kind == "missing":
            msg = "missing key (required)"
        elif kind in ("value_error", "assertion_error"):
            msg = msg.split(", ", 1)[1] if msg.startswith(("Value error, ", "Assertion failed, ")) else msg
        else:
            msg = msg[:1].lower() + msg[1:] + (f" (got {type(value).__name__})" if kind.endswith("_type") else "")
        if msg not in grouped.setdefault(at, []):
            grouped[at].append(msg)
    for at, members in expected.items():
        grouped.setdefault(at, []).append(f"wrong type: expected {' or '.join(dict.fromkeys(members))}, got {got[at]}")
    return sort_problems(f"{doc.where(at)}: {'; '.join(msgs)}" for at, msgs in grouped.items())


def sort_problems(problems: Iterable[str]) -> list[str]:
    """``file:line: ...`` messages in line order (others first, in their order)."""
    def line(text: str) -> int:
        match = _LINE.match(text)
        return int(match.group(1)) if match else 0

    return sorted(problems, key=line)


def validate(
    doc: YamlDocument,
    model: type[M],
    *,
    data: Any = None,
    context: Optional[Mapping[str, Any]] = None,
    error: type[ConfigError] = ConfigError,
) -> M:
    """``model`` validated from the document's data (or ``data``, e.g. after substitutions).

    Raises:
        ConfigError (or ``error``): listing every problem with its file and line.
    """
    value = doc.data if data is None else data
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise error([f"{doc.path}:1: the file must hold a mapping (key: value), not {type(value).__name__}"], doc.path)
    try:
        return model.model_validate(value, context=dict(context or {}))
    except ValidationError as exc:
        raise error(problems_of(doc if data is None else YamlDocument(doc.path, value, doc.lines), exc, model), doc.path) from None
