"""Unit tests ask no registry for base images: they are recorded by tag (offline).

Resolution against real registries is tested in ``tests/integration/test_bases.py``;
the parsing and pinning in ``tests/unit/test_bases.py`` (which turns it back on where needed).
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _offline_bases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_FLYIMAGE_OFFLINE_BASES", "1")
