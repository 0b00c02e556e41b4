"""The project whose Dockerfile splits (a dependency part and a code tail) that the
append tests deploy: ``test_docker_image_integration.py`` and ``test_append_front_doors.py``.

Imported by those modules (after ``sys.path.insert`` of this folder).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["split_project"]


def split_project(root: Path, base: str, tail: str = "") -> Path:
    """Write the project under ``root``: ``FROM base``, a dependency part (RUN), then the code
    tail (``WORKDIR``, ``COPY pkg/``, and ``tail``'s instructions). Returns ``root``."""
    (root / "pkg").mkdir(parents=True)
    (root / "requirements.txt").write_text("dep==1\n")
    (root / "pkg" / "flow.py").write_text("VERSION = 1\n")
    (root / "Dockerfile").write_text(
        f"FROM {base}\nCOPY requirements.txt /deps/\nRUN cp /deps/requirements.txt /installed\n"
        f"WORKDIR /app\nCOPY pkg/ pkg/\n{tail}"
    )
    return root
