"""The quick-start job: build the example flow's image and push it to the local registry.

``python -m prefect_flyimage.demo`` (what ``scripts/demo.sh`` runs after starting the
services). The image uses Prefect's default Dockerfile for ``flows/example``; a second
run with no change neither builds nor pushes. Prints the reference and the pinned
digest reference.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .credentials import RegistryCredentials
from .dockerfile import default_dockerfile_text
from .pipeline import ensure
from .plan import BuildPlan

DEFAULT_PROJECT = Path(__file__).resolve().parent.parent / "flows" / "example"


def main(argv: list[str] | None = None) -> int:
    """Build and push the example image; print its reference. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m prefect_flyimage.demo", description=__doc__)
    parser.add_argument("--project", type=Path, default=DEFAULT_PROJECT, help="folder of the flow (build context)")
    parser.add_argument("--registry", default=os.environ.get("FLYIMAGE_REGISTRY", "127.0.0.1:5000"))
    parser.add_argument("--name", default="prefect-flyimage-example", help="repository name in the registry")
    args = parser.parse_args(argv)

    username = os.environ.get("FLYIMAGE_REGISTRY_USER")
    password = os.environ.get("FLYIMAGE_REGISTRY_PASSWORD")
    creds = RegistryCredentials(args.registry, username, password) if username and password else None
    plan = BuildPlan(
        context=args.project,
        dockerfile_text=default_dockerfile_text(args.project),
        repository=f"{args.registry}/{args.name}",
        network="host",  # the default Dockerfile may `uv pip install` requirements
    )
    result = ensure(plan, credentials=creds, stream_progress_to=sys.stderr)
    state = "cached (nothing built or pushed)" if result.cached else f"built={result.built} pushed={result.pushed}"
    print(f"{result.reference}  [{state}]", file=sys.stderr)
    print(result.reference)
    print(result.pinned)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
