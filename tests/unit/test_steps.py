"""The prefect.yaml steps without Docker: drop-in signatures, return keys, early errors."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from prefect_docker.deployments import steps as prefect_docker_steps

from prefect_flyimage import ContextError, InvalidReferenceError
from prefect_flyimage.deployments import steps
from prefect_flyimage.dockerfile import DockerfileExistsError

pytestmark = [
    pytest.mark.prefect_compat,  # also run on the oldest supported Prefect (scripts/test.sh)
    pytest.mark.usefixtures("no_daemon"),  # every test here must fail before talking to Docker
]


@pytest.fixture
def project(cwd_project) -> Path:
    return cwd_project({"flows.py": "x = 1\n"})


def _params(fn):
    return inspect.signature(inspect.unwrap(fn)).parameters


@pytest.mark.parametrize("name", ["build_docker_image", "push_docker_image"])
def test_parameters_are_a_superset_of_prefect_dockers(name):
    theirs, ours = _params(getattr(prefect_docker_steps, name)), _params(getattr(steps, name))
    for param, spec in theirs.items():
        assert param in ours, param
        assert ours[param].kind == spec.kind, param
        assert ours[param].default == spec.default, param


@pytest.mark.parametrize(
    "theirs, ours",
    [
        (prefect_docker_steps.BuildDockerImageResult, steps.BuildDockerImageResult),
        (prefect_docker_steps.PushDockerImageResult, steps.PushDockerImageResult),
    ],
)
def test_results_have_prefect_dockers_keys_plus_digest_and_cached(theirs, ours):
    assert set(theirs.__annotations__) <= set(ours.__annotations__)
    assert {"digest", "cached"} <= set(ours.__annotations__)
    assert {"image", "image_id", "digest", "cached", "pinned"} <= set(steps.EnsureImageResult.__annotations__)


def test_spaces_in_the_name(project):
    with pytest.raises(ValueError, match="cannot contain spaces"):
        steps.build_docker_image("127.0.0.1:5000/my app")
    with pytest.raises(ValueError, match="cannot contain spaces"):
        steps.push_docker_image("127.0.0.1:5000/my app", tag="x")


def test_invalid_names_are_typed(project):
    with pytest.raises(InvalidReferenceError) as info:
        steps.build_docker_image("127.0.0.1:5000/My-App", dockerfile="auto")
    assert info.value.part == "repository" and "my-app" in str(info.value)
    with pytest.raises(InvalidReferenceError):
        steps.ensure_image("127.0.0.1:5000/app", tag="bad tag", dockerfile="auto")


def test_two_different_tags(project):
    with pytest.raises(ValueError, match="Only one tag"):
        steps.build_docker_image("127.0.0.1:5000/app:v1", tag="v2", dockerfile="auto")


def test_auto_with_existing_dockerfile_names_it(project):
    (project / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(DockerfileExistsError) as info:
        steps.build_docker_image("127.0.0.1:5000/app", dockerfile="auto")
    assert info.value.path == project / "Dockerfile" and str(project / "Dockerfile") in str(info.value)
    assert isinstance(info.value, ValueError)  # prefect-docker raises ValueError here too
    assert (project / "Dockerfile").read_text() == "FROM scratch\n"


def test_missing_dockerfile_and_context(project, tmp_path):
    with pytest.raises(ContextError, match="'Dockerfile' not found"):
        steps.build_docker_image("127.0.0.1:5000/app")
    with pytest.raises(ContextError, match="does not exist"):
        steps.build_docker_image("127.0.0.1:5000/app", dockerfile="auto", path=str(tmp_path / "missing"))


def test_build_options_we_own_are_refused(project):
    with pytest.raises(ValueError, match="fileobj"):
        steps.build_docker_image("127.0.0.1:5000/app", dockerfile="auto", fileobj=b"x")
    with pytest.raises(ValueError, match="build_backend"):
        steps.build_docker_image("127.0.0.1:5000/app", dockerfile="auto", build_backend="kaniko")


def test_bad_credentials_shape_is_reported_without_the_password(project):
    with pytest.raises(ValueError) as info:
        steps.push_docker_image("127.0.0.1:5000/app", tag="x", credentials={"password": "pw-never-shown"})
    assert "username=missing" in str(info.value) and "pw-never-shown" not in str(info.value)
