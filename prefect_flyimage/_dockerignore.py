"""The files a build sends: docker-py's ``.dockerignore`` walk, compiled once.

docker-py's :func:`docker.utils.build.exclude_paths` decides what the classic builder
receives, so its answer is the one we must reproduce to the path. It is also slow on big
trees: per file and pattern it splits paths, re-joins parent folders and looks the regex
up in a 100-entry cache. :func:`list_context` walks with :func:`os.scandir` and applies
the same rules with each pattern compiled once and each folder's parent-prefix matches
computed once per folder:

- patterns are normalised by docker-py's own :class:`~docker.utils.build.Pattern` and
  translated by its own :func:`~docker.utils.fnmatch.translate`; matching is
  case-insensitive (docker-py lowercases name and pattern);
- ``!<dockerfile>`` (default ``Dockerfile``) and then ``!.dockerignore`` are appended,
  patterns with no path left (``.``, ``/``) are dropped;
- a path is excluded when the last pattern matching it (or, for a pattern of *k*
  components, the path's first *k* parent folders) is not a ``!`` pattern;
- an excluded folder is not entered unless some ``!`` pattern's text starts with the
  folder's path (docker-py's string-prefix test, quirks included);
- symlinks to folders are listed, never followed.

``tests/unit/test_dockerignore_property.py`` compares this with docker-py on random trees
and patterns; ``tests/integration/test_dockerignore_daemon.py`` with what the daemon receives.

BuildKit applies moby's matcher, which is case-sensitive (the same rules otherwise):
``list_context(..., case_sensitive=True)`` reproduces it, :func:`case_gap` finds in one
walk what the two matchers disagree on, and :func:`buildkit_ignore` writes the
Dockerfile-specific ignore file (``<dockerfile>.dockerignore``, read by BuildKit instead
of the context's) that makes BuildKit receive exactly the hashed entries.
"""

from __future__ import annotations

import os
import re
from typing import Optional, Sequence

from docker.utils.build import Pattern
from docker.utils.fnmatch import translate

__all__ = ["buildkit_ignore", "case_gap", "list_context"]


class _Rule:
    __slots__ = ("negate", "ndirs", "match", "text")

    def __init__(self, pattern: Pattern, folded: bool = True) -> None:
        self.negate = pattern.exclusion
        self.ndirs = len(pattern.dirs)
        self.text = pattern.cleaned_pattern
        # docker-py's fnmatch lowercases the pattern before translating it; moby does not.
        self.match = re.compile(translate(pattern.cleaned_pattern.lower() if folded else pattern.cleaned_pattern)).match


def _rules(patterns: Sequence[str], dockerfile: Optional[str], folded: bool = True) -> list[_Rule]:
    texts = [*patterns, f"!{dockerfile or 'Dockerfile'}"]
    parsed = [p for p in (Pattern(t) for t in texts) if p.dirs]
    parsed.append(Pattern("!.dockerignore"))
    return [_Rule(p, folded) for p in parsed]


def list_context(
    root: str, patterns: Sequence[str], dockerfile: Optional[str] = None, walked: Optional[list[str]] = None,
    case_sensitive: bool = False,
) -> list[str]:
    """Relative ``/``-separated paths (files, folders, links) docker-py would send, sorted
    (with ``case_sensitive``: what BuildKit, matching with moby's rules, would send).

    ``walked``, if given, receives every folder read (``""`` for ``root``): the folders
    whose mtimes tell whether the answer can have changed. Raises :class:`OSError` (e.g. :class:`PermissionError`) when a folder cannot be read.
    """
    return _walk(root, [(_rules(patterns, dockerfile, not case_sensitive), not case_sensitive)], walked)[0]


def case_gap(root: str, patterns: Sequence[str], dockerfile: Optional[str] = None) -> tuple[list[str], list[str]]:
    """``(hashed, sent)``: :func:`list_context` of ``root`` case-insensitive (docker-py,
    what we hash) and case-sensitive (BuildKit), from one walk of the tree."""
    hashed, sent = _walk(root, [(_rules(patterns, dockerfile, True), True), (_rules(patterns, dockerfile, False), False)])
    return hashed, sent


def _walk(root: str, modes: list[tuple[list[_Rule], bool]], walked: Optional[list[str]] = None) -> list[list[str]]:
    # Per mode: its rules from the end (last match wins: stop at the first that matches).
    plans = [(rules[::-1], folded, any(not r.negate for r in rules), [r.text for r in rules if r.negate]) for rules, folded in modes]
    founds: list[list[str]] = [[] for _ in modes]
    every = tuple(True for _ in modes)
    # (folder, its components, per mode: whether that mode's walk entered it)
    stack: list[tuple[str, list[str], tuple[bool, ...]]] = [("", [], every)]
    while stack:
        rel, parts, inside = stack.pop()
        if walked is not None:
            walked.append(rel)
        prefix = rel + "/" if rel else ""
        entries = []
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for e in it:
                try:
                    entries.append((e.name, e.is_dir(follow_symlinks=False)))
                except OSError:  # vanished meanwhile: docker-py's os.path.isdir says False too
                    entries.append((e.name, False))
        enter: dict[str, list[bool]] = {}
        for m, (backwards, folded, any_exclude, negations) in enumerate(plans):
            if not inside[m]:
                continue
            found = founds[m]
            if not any_exclude:  # only "!" rules: nothing is ever excluded
                for name, is_dir in entries:
                    found.append(prefix + name)
                    if is_dir:
                        enter.setdefault(name, [False] * len(modes))[m] = True
                continue
            # Per folder: does each rule match the folder's first k components (docker-py's
            # parent test, applied only when the path itself does not match)?
            comps = [p.lower() for p in parts] if folded else parts
            parent_hit = [
                bool(rel) and r.ndirs <= len(parts) and r.match("/".join(comps[: r.ndirs])) is not None
                for r in backwards
            ]
            key_prefix = prefix.lower() if folded else prefix
            for name, is_dir in entries:
                path = prefix + name
                key = key_prefix + (name.lower() if folded else name)
                excluded = False
                for rule, hit in zip(backwards, parent_hit):
                    if hit or rule.match(key) is not None:
                        excluded = not rule.negate
                        break
                if not excluded:
                    found.append(path)
                if is_dir and (not excluded or any(t.startswith(path) for t in negations)):
                    enter.setdefault(name, [False] * len(modes))[m] = True
        for name, modes_in in enter.items():
            stack.append((prefix + name, parts + [name], tuple(modes_in)))
    for found in founds:
        found.sort()
    return founds


def _escape(path: str) -> str:
    """``path`` as an exact, rooted moby pattern (``\\`` escapes; a trailing blank as a class)."""
    text = re.sub(r"([*?\[\\])", r"\\\1", path)
    stripped = text.rstrip()
    tail = "".join(f"[{c}]" for c in text[len(stripped):])  # moby trims trailing blanks off lines
    return "/" + stripped + tail


def buildkit_ignore(root: str, patterns: Sequence[str], hashed: Sequence[str], sent: Sequence[str]) -> Optional[str]:
    """The text of a ``.dockerignore`` that makes BuildKit send exactly ``hashed``
    (``sent``: what ``patterns`` alone make it send), or ``None`` when they agree.

    The user's patterns, then exact exclusions of what is sent but not hashed, then the
    hashed entries under any folder that changed side: moby's matcher applies a rule to
    a folder's whole subtree, so each such folder is re-included and emptied
    (``!/f``, ``/f/*``) and its hashed entries re-included one by one.
    """
    want, got = set(hashed), set(sent)
    extra, missing = sorted(got - want), sorted(want - got)
    if not extra and not missing:
        return None
    moved = [p + "/" for p in (*extra, *missing) if os.path.isdir(os.path.join(root, p)) and not os.path.islink(os.path.join(root, p))]
    touched = set(missing)
    if moved:
        touched.update(h for h in want if any(h.startswith(d) for d in moved))
    lines = [*patterns, *(_escape(p) for p in extra)]
    for path in sorted(touched):
        lines.append("!" + _escape(path))
        full = os.path.join(root, path)
        if os.path.isdir(full) and not os.path.islink(full):
            lines.append(_escape(path) + "/*")
    return "\n".join(lines) + "\n"
