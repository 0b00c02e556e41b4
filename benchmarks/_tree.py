"""The image trees of the chain benchmarks (``chain_parallel.py``, ``chain_dask.py``):
docker-pkg folders whose builds wait on I/O (``RUN sleep S``). Not a benchmark itself."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from prefect_flyimage.chain.graph import critical_path

__all__ = ["longest_chain", "write_tree"]


def write_tree(root: Path, parents: Mapping[str, Sequence[str]], sleep: float) -> None:
    """One docker-pkg image folder per name of ``parents``; every build sleeps ``sleep`` seconds."""
    for name, deps in parents.items():
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "changelog").write_text(
            f"{name} (1.0-1) bench; urgency=medium\n\n  * Benchmark image.\n\n"
            " -- Bench <bench@example.org>  Mon, 03 Feb 2025 10:00:00 +0000\n"
        )
        base = f'{{{{ "{deps[0]}" | image_tag }}}}' if deps else "{{ seed_image }}"
        (folder / "Dockerfile.template").write_text(f"FROM {base}\nRUN sleep {sleep} && echo {name} > /{name}\n")
        if deps:
            (folder / "control").write_text(f"Package: {name}\nDepends: {', '.join(deps)}\n")


def longest_chain(parents: Mapping[str, Sequence[str]], durations: Mapping[str, float]) -> float:
    """The critical path: the costliest chain of measured durations (no schedule can beat it)."""
    return max(critical_path(parents, parents, durations.__getitem__).values())
