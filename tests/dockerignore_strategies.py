"""Hypothesis pieces of the ``.dockerignore`` property tests: a random pattern line and the
guard that keeps a generated tree consistent.

Shared by ``tests/unit/test_dockerignore_property.py`` (against docker-py) and
``tests/integration/test_dockerignore_daemon.py`` (against the daemon); each test module
brings its own segments (the names its trees use).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from hypothesis import strategies as st

__all__ = ["blocked", "pattern_line"]


@st.composite
def pattern_line(draw, segments: Sequence[str]) -> str:
    """One pattern: 1-3 ``segments`` joined by ``/``, maybe anchored (``/``), a folder (``/`` after) or an exception (``!``)."""
    body = "/".join(draw(st.lists(st.sampled_from(segments), min_size=1, max_size=3)))
    if draw(st.booleans()):
        body = "/" + body
    if draw(st.integers(0, 4)) == 0:
        body += "/"
    if draw(st.integers(0, 2)) == 0:
        body = "!" + body
    return body


def blocked(path: Path) -> bool:
    """A file or link already holds the name of ``path`` or of one of its parents."""
    return any(os.path.lexists(p) and (p.is_symlink() or not p.is_dir()) for p in [path, *path.parents])
