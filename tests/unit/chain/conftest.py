"""Helpers for the chain unit tests: small image trees written on the fly."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import pytest


def write_image(root: Path, folder: str, name: str, version: str = "1.0", depends: tuple[str, ...] = (),
                template: Optional[str] = None) -> Path:
    """Write one docker-pkg image folder under ``root``."""
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    (path / "changelog").write_text(
        f"{name} ({version}) test; urgency=medium\n\n  * Initial release.\n\n"
        " -- Tester <t@example.org>  Mon, 03 Feb 2025 10:00:00 +0000\n"
    )
    if depends:
        (path / "control").write_text(f"Package: {name}\nDepends: {', '.join(depends)}\n")
    (path / "Dockerfile.template").write_text(template if template is not None else f"FROM base\nRUN echo {name}\n")
    return path


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """``make_image(folder, name, version, depends, template)`` in a fresh tree at ``tmp_path/tree``."""
    root = tmp_path / "tree"
    root.mkdir()

    def make(folder: str, name: Optional[str] = None, version: str = "1.0", depends: tuple[str, ...] = (),
             template: Optional[str] = None) -> Path:
        return write_image(root, folder, name or folder, version, depends, template)

    make.root = root  # type: ignore[attr-defined]
    return make
