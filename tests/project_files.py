"""Writing the small projects (build contexts) that tests build.

Imported by ``tests/conftest.py`` and by test modules (after ``sys.path.insert`` of the
``tests`` folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

__all__ = ["write_files"]


def write_files(root: Path, files: Mapping[str, str]) -> Path:
    """Write ``files`` (path relative to ``root`` -> text) under ``root``, creating folders; return ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
