"""Unit tests ask no registry for base images: they are recorded by tag (offline).

Resolution against real registries is tested in ``tests/integration/test_bases.py``;
the parsing and pinning in ``tests/unit/test_bases.py`` (which turns it back on where needed).
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _offline_bases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_FLYIMAGE_OFFLINE_BASES", "1")


@pytest.fixture
def no_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """``DOCKER_HOST`` at a closed port: a test that reaches any daemon fails (``DockerUnavailable``).

    For modules whose tests must all fail or finish before Docker is contacted:
    ``pytestmark = pytest.mark.usefixtures("no_daemon")``. (The stat cache is private to
    every test already: ``_isolated_env`` in ``tests/conftest.py``.)
    """
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
