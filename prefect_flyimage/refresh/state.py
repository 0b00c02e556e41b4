"""What the last refresh run saw per image: only to explain a rebuild and date images."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

import pendulum

from .bases import BaseDigest

__all__ = ["RefreshState"]


class RefreshState:
    """What the last run saw per image (``name -> record``), in a small JSON file.

    Only explanations and dates come from it; decisions never do. A missing or corrupt
    file is an empty state. Writes are atomic.
    """

    VERSION = 1

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.images: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and data.get("version") == self.VERSION and isinstance(data.get("images"), dict):
                self.images = data["images"]
        except (OSError, ValueError):
            pass

    def get(self, name: str) -> Optional[dict[str, Any]]:
        """The record of image ``name``, if any."""
        return self.images.get(name)

    def record(self, name: str, *, reference: str, content_tag: str, digest: Optional[str],
               bases: Iterable[BaseDigest], built_at: Optional[str] = None) -> None:
        """Remember what image ``name`` is now."""
        old = self.images.get(name) or {}
        self.images[name] = {
            "reference": reference,
            "content_tag": content_tag,
            "digest": digest,
            "bases": {b.ref: b.digest for b in bases},
            "built_at": built_at or (old.get("built_at") if old.get("digest") == digest else None),
            "checked_at": pendulum.now("UTC").isoformat(),
        }

    def save(self) -> None:
        """Write the file (atomically: a crash leaves the old file or the new one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".refresh-state-")
        with os.fdopen(fd, "w") as fh:
            json.dump({"version": self.VERSION, "images": self.images}, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
