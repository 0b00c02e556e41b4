"""The one length-prefixed encoding behind every hash (plan, context entries, spec).

Each part is written as its length (8 bytes, big-endian) followed by its bytes, so the
encoding is injective: ``("ab", "c")`` and ``("a", "bc")`` never give the same bytes.
Content tags in users' registries depend on these exact bytes (pinned by
``tests/unit/test_hash_golden.py``).
"""

from __future__ import annotations

__all__ = ["length_prefixed"]


def length_prefixed(*parts: bytes | str) -> bytes:
    """Concatenate ``parts``, each preceded by its byte length; ``str`` is UTF-8 (surrogateescape)."""
    out = []
    for part in parts:
        data = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
        out.append(len(data).to_bytes(8, "big"))
        out.append(data)
    return b"".join(out)
