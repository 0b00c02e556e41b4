"""Fixtures for the registry client's tests: pushed images, registries that misbehave.

Imported by the test modules that use them (``from registry_fixtures import *`` after
putting this folder on ``sys.path``), so they stay out of the shared ``conftest.py``.
Extra servers run on free loopback ports and are stopped by their fixture.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Iterator

import pytest

__all__ = ["HangingServer", "PushedImage", "hanging_server", "push_image_to"]


@dataclass(frozen=True)
class PushedImage:
    """An image the test pushed: ``ref`` (registry/name:tag) and the digest ``docker push`` reported."""

    ref: str
    digest: str


def push_image_to(host: str, name: str, tag: str, source: str, credentials=None) -> PushedImage:
    """Tag ``source`` as ``host/name:tag`` and push it through the daemon."""
    from prefect_flyimage.engine import Engine

    ref = f"{host}/{name}:{tag}"
    with Engine() as engine:
        engine.tag(source, ref)
        digest = engine.push(ref, credentials)
    return PushedImage(ref, digest)


class HangingServer:
    """A TCP server on a free loopback port that accepts connections and never answers."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._server.getsockname()[1]}"
        self.accepted = 0
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            self._clients.append(conn)  # held open, never read from or written to

    def close(self) -> None:
        self._server.close()
        for conn in self._clients:
            conn.close()
        self._thread.join(timeout=5)


@pytest.fixture
def hanging_server() -> Iterator[HangingServer]:
    server = HangingServer()
    try:
        yield server
    finally:
        server.close()
