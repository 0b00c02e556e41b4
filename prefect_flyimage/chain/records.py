"""Verification records: which image, built from which plan, passed its ``test.sh``.

A verification cannot be written into the image (labels are fixed at build time), so
it is kept as a small JSON file per plan hash. A record only counts for the exact
image id it names: a rebuilt image must be verified again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Optional


class VerificationRecords:
    """Records under ``root`` (created on first write), one file per plan hash."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, plan_hash: str) -> Path:
        if not plan_hash.isalnum():
            raise ValueError(f"not a plan hash: {plan_hash!r}")
        return self.root / "verified" / f"{plan_hash}.json"

    def get(self, plan_hash: str) -> Optional[dict[str, Any]]:
        """The record of ``plan_hash``, or ``None`` (a corrupt file counts as none)."""
        path = self._path(plan_hash)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def is_verified(self, plan_hash: str, image_id: str) -> bool:
        """True when ``image_id`` built from ``plan_hash`` passed verification."""
        record = self.get(plan_hash)
        return bool(record and record.get("image_id") == image_id)

    def record(self, plan_hash: str, image_id: str, label: str) -> None:
        """Remember that ``image_id`` passed verification (atomic write)."""
        path = self._path(plan_hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"plan_hash": plan_hash, "image_id": image_id, "label": label, "verified_at": time.time()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".rec-")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)  # a crash mid-write leaves the old record or none, never half of one

    def forget(self, plan_hash: str) -> None:
        """Drop the record of ``plan_hash`` (no error if there is none)."""
        try:
            self._path(plan_hash).unlink()
        except FileNotFoundError:
            pass


__all__ = ["VerificationRecords"]
