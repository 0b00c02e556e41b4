"""What Prefect's ``flow.deploy(image=...)`` reads from an image: reference, build(), push()."""

from __future__ import annotations

import inspect

from prefect_flyimage import Image
from prefect_flyimage.spec import SpecDockerImage


def spec() -> Image:
    return Image.from_base("flyimage/python:3.11-bookworm").clone(name="app", registry="127.0.0.1:5000").with_workdir("/app")


def test_image_has_what_deploy_uses():
    image = spec()
    assert image.reference == image.uri == f"127.0.0.1:5000/app:{image.tag}"
    # Prefect calls both without arguments.
    for method in (image.build, image.push):
        params = inspect.signature(method).parameters.values()
        assert all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def test_to_docker_image_is_shaped_like_prefects():
    from prefect.docker.docker_image import DockerImage

    image = spec()
    adapter = image.to_docker_image()
    assert isinstance(adapter, SpecDockerImage)
    assert adapter.name == "127.0.0.1:5000/app" and adapter.tag == image.tag
    assert adapter.reference == image.uri
    prefects = DockerImage(name="127.0.0.1:5000/app", tag=image.tag)
    assert (prefects.name, prefects.tag, prefects.reference) == (adapter.name, adapter.tag, adapter.reference)
    assert str(image) == image.uri
