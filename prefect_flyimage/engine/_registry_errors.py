"""What a daemon's or registry's error text means: refused credentials, an unreachable
registry, a missing manifest, or another registry error (:func:`classify_registry_error`).

Split from :mod:`._engine`, whose login, pull, push and digest calls use it; the text
is redacted before it is matched or quoted.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

from ..errors import (
    AuthenticationError,
    PushAuthenticationError,
    PushError,
    PushUnavailableError,
    RegistryError,
    RegistryUnavailable,
    redact,
)

__all__ = ["AUTH_PATTERNS", "MISSING_PATTERNS", "UNREACHABLE_PATTERNS", "classify_registry_error"]

AUTH_PATTERNS = re.compile(
    r"unauthorized|authentication required|no basic auth credentials|denied|"
    r"incorrect username or password|401 Unauthorized|403 Forbidden",
    re.IGNORECASE,
)
UNREACHABLE_PATTERNS = re.compile(
    r"connection refused|no such host|i/o timeout|dial tcp|connection reset|"
    r"server gave HTTP response to HTTPS client|tls: |EOF|context deadline exceeded|"
    r"503 Service Unavailable|502 Bad Gateway|no route to host",
    re.IGNORECASE,
)
MISSING_PATTERNS = re.compile(r"manifest unknown|not found|name unknown|no such manifest|404", re.IGNORECASE)


def classify_registry_error(
    message: str, registry: Optional[str], *, push: bool = False, secrets: Iterable[Optional[str]] = ()
) -> RegistryError:
    """Map a daemon/registry error text to the right exception type."""
    text = redact(message, secrets)
    if AUTH_PATTERNS.search(text):
        cls = PushAuthenticationError if push else AuthenticationError
        hint = f"; check the credentials for {registry}" if registry else ""
        return cls(f"registry {registry or '?'} refused the credentials: {text}{hint}", registry)
    if UNREACHABLE_PATTERNS.search(text):
        cls = PushUnavailableError if push else RegistryUnavailable
        return cls(f"registry {registry or '?'} is unreachable: {text}", registry)
    if push:
        return PushError(f"push to {registry or '?'} failed: {text}", registry)
    return RegistryError(f"registry {registry or '?'} error: {text}", registry)
