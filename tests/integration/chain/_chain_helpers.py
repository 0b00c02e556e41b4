"""Helpers shared by the chain integration tests."""

from __future__ import annotations

from pathlib import Path


def break_test(tree: Path, image: str) -> None:
    """Make ``image``'s test.sh run the image and then fail."""
    script = tree / image / "test.sh"
    script.write_text(script.read_text() + '\necho "deliberate failure"\nexit 1\n')
