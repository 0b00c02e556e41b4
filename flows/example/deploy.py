"""Deploy the example flow from Python, with prefect-flyimage's ``DockerImage``.

The YAML way is the root ``prefect.yaml``; both build the same image (same Dockerfile,
same folder, hence the same content tag), so whichever runs second builds and pushes
nothing. From the repository root, with the services' environment::

    prefect work-pool create flyimage-docker --type docker
    python flows/example/deploy.py
"""

from __future__ import annotations

import os
from pathlib import Path

from hello import hello

from prefect_flyimage import DockerImage, RegistryCredentials

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Build and push the image if needed, then create or update ``hello/example-python``."""
    registry = os.environ["FLYIMAGE_REGISTRY"]
    image = DockerImage(
        f"{registry}/prefect-flyimage-example",
        dockerfile="deploy.Dockerfile",
        context=HERE,
        pull=False,  # the base image is local to the build machine (no Docker Hub here)
        stream_progress_to=None,
        credentials=RegistryCredentials(
            registry, os.environ["FLYIMAGE_REGISTRY_USER"], os.environ["FLYIMAGE_REGISTRY_PASSWORD"]
        ),
    )
    hello.deploy(
        name="example-python",
        work_pool_name=os.environ.get("FLYIMAGE_WORK_POOL", "flyimage-docker"),
        image=image,
        job_variables={"network_mode": "host"},
        print_next_steps=False,
    )
    result = image.result
    assert result is not None
    print(f"{image.reference} {image.digest} built={result.built} pushed={result.pushed}")


if __name__ == "__main__":
    main()
