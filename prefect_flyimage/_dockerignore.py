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

Known gap: BuildKit's CLI applies moby's matcher, which is case-sensitive, so with the
BuildKit backend a file left out only by docker-py's case folding (``README.MD`` under
``*.md``) is sent but not hashed (a strict-xfail test in the daemon module shows it).
"""

from __future__ import annotations

import os
import re
from typing import Optional, Sequence

from docker.utils.build import Pattern
from docker.utils.fnmatch import translate

__all__ = ["list_context"]


class _Rule:
    __slots__ = ("negate", "ndirs", "match", "text")

    def __init__(self, pattern: Pattern) -> None:
        self.negate = pattern.exclusion
        self.ndirs = len(pattern.dirs)
        self.text = pattern.cleaned_pattern
        # docker-py's fnmatch lowercases the pattern before translating it.
        self.match = re.compile(translate(pattern.cleaned_pattern.lower())).match


def _rules(patterns: Sequence[str], dockerfile: Optional[str]) -> list[_Rule]:
    texts = [*patterns, f"!{dockerfile or 'Dockerfile'}"]
    parsed = [p for p in (Pattern(t) for t in texts) if p.dirs]
    parsed.append(Pattern("!.dockerignore"))
    return [_Rule(p) for p in parsed]


def list_context(
    root: str, patterns: Sequence[str], dockerfile: Optional[str] = None, walked: Optional[list[str]] = None
) -> list[str]:
    """Relative ``/``-separated paths (files, folders, links) docker-py would send, sorted.

    ``walked``, if given, receives every folder read (``""`` for ``root``): the folders
    whose mtimes tell whether the answer can have changed. Raises :class:`OSError` (e.g. :class:`PermissionError`) when a folder cannot be read.
    """
    rules = _rules(patterns, dockerfile)
    # Last match wins: test the rules from the end and stop at the first that matches.
    backwards = rules[::-1]
    any_exclude = any(not r.negate for r in rules)
    negations = [r.text for r in rules if r.negate]
    found: list[str] = []
    stack: list[tuple[str, list[str]]] = [("", [])]
    while stack:
        rel, parts = stack.pop()
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
        if not any_exclude:  # only "!" rules: nothing is ever excluded
            for name, is_dir in entries:
                path = prefix + name
                found.append(path)
                if is_dir:
                    stack.append((path, parts + [name]))
            continue
        # Per folder: does each rule match the folder's first k components (docker-py's
        # parent test, applied only when the path itself does not match)?
        lowered = [p.lower() for p in parts]
        parent_hit = [
            bool(rel) and r.ndirs <= len(parts) and r.match("/".join(lowered[: r.ndirs])) is not None
            for r in backwards
        ]
        lower_prefix = prefix.lower()
        for name, is_dir in entries:
            path = prefix + name
            lower = lower_prefix + name.lower()
            excluded = False
            for rule, hit in zip(backwards, parent_hit):
                if hit or rule.match(lower) is not None:
                    excluded = not rule.negate
                    break
            if not excluded:
                found.append(path)
            if is_dir and (not excluded or any(t.startswith(path) for t in negations)):
                stack.append((path, parts + [name]))
    found.sort()
    return found
