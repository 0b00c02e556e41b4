"""A small example flow, deployed in its own image: by ``prefect.yaml`` (prefect-flyimage's
build and push steps) or by ``deploy.py`` (prefect-flyimage's ``DockerImage``)."""

from __future__ import annotations

import platform

from prefect import flow, get_run_logger, task


@task
def greet(name: str) -> str:
    """Say hello from inside the container."""
    return f"hello {name} from Python {platform.python_version()}"


@flow(log_prints=True)
def hello(name: str = "prefect-flyimage") -> str:
    """Greet someone; the image that runs this was built only if this folder changed."""
    message = greet(name)
    get_run_logger().info(message)
    return message


if __name__ == "__main__":
    hello()
