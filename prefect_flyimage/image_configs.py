"""Read image configs (labels, creation time) and tag lists straight from a registry.

Kept for its callers: :class:`RegistryReader` is :class:`~prefect_flyimage.registry.RegistryClient`
(the one registry client: Basic/Bearer auth, loopback over plain HTTP), whose ``tags`` and
``config`` read tag lists and image configs over the Distribution API without Docker.
"""

from __future__ import annotations

from typing import Optional

from .credentials import RegistryCredentials
from .registry import RegistryClient

__all__ = ["RegistryReader"]


class RegistryReader(RegistryClient):
    """Read-only use of the registry client (``with RegistryReader(registry, creds) as r:``)."""

    def __init__(self, registry: str, credentials: Optional[RegistryCredentials] = None, timeout: float = 30.0) -> None:
        super().__init__(registry, credentials, timeout=timeout)
