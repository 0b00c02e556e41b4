"""The prefect.yaml steps called directly against the real daemon and registries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from prefect_flyimage import AuthenticationError, Engine, RegistryCredentials
from prefect_flyimage.deployments.steps import build_docker_image, ensure_image, push_docker_image
from prefect_flyimage.dockerfile import default_dockerfile_text

pytestmark = [pytest.mark.integration, pytest.mark.prefect_compat]


@pytest.fixture
def creds(registry) -> dict[str, str]:
    # What `{{ prefect.blocks.docker-registry-credentials.NAME }}` templates to.
    return {"username": registry.username, "password": registry.password, "registry_url": registry.host, "reauth": True}


@pytest.fixture
def project(cwd_project, unique_name) -> Path:
    return cwd_project({"flows.py": f"# {unique_name}\n"}, "stepsproject")


def test_build_then_push_then_nothing(project, registry, creds, unique_name, capsys):
    engine = Engine()
    name = f"{registry.host}/{unique_name}"
    built = build_docker_image(name, dockerfile="auto", pull=False, additional_tags=["latest"])
    assert built["image_name"] == name and built["image"] == f"{name}:{built['tag']}"
    assert built["tag"] == built["content_tag"] and built["cached"] is False and built["digest"] is None
    assert engine.local_image(built["image"])["Id"] == built["image_id"]
    assert engine.local_image(f"{name}:latest")["Id"] == built["image_id"]
    # build output goes to stdout, as prefect-docker's (classic "Step 1/2" or BuildKit "#5 [1/2]")
    assert re.search(r"Step 1/|#\d+ \[1/", capsys.readouterr().out)
    assert sorted(p.name for p in project.iterdir()) == ["flows.py"]

    pushed = push_docker_image(built["image_name"], built["tag"], credentials=creds, additional_tags=["latest"])
    assert pushed["pushed"] is True and pushed["cached"] is False and pushed["image"] == built["image"]
    assert pushed["digest"] == engine.registry_digest(built["image"], RegistryCredentials(**_c(creds)))
    assert engine.registry_digest(f"{name}:latest", RegistryCredentials(**_c(creds))) == pushed["digest"]
    assert pushed["pinned"] == f"{name}@{pushed['digest']}"

    again = build_docker_image(name, dockerfile="auto", pull=False, additional_tags=["latest"])
    assert again["cached"] is True and again["image_id"] == built["image_id"] and again["tag"] == built["tag"]
    repushed = push_docker_image(again["image_name"], again["tag"], credentials=creds, additional_tags=["latest"])
    assert repushed["cached"] is True and repushed["pushed"] is False and repushed["digest"] == pushed["digest"]
    out = capsys.readouterr().out
    assert "already built (build skipped)" in out and "push skipped" in out
    assert registry.password not in out


def _c(creds: dict[str, str]) -> dict[str, str]:
    return {"registry": creds["registry_url"], "username": creds["username"], "password": creds["password"]}


def test_ignore_cache_forces_a_rebuild_and_a_push(project, registry_noauth, unique_name):
    name = f"{registry_noauth.host}/{unique_name}"
    first = ensure_image(name, dockerfile="auto", pull=False)
    assert first["built"] and first["pushed"] and not first["cached"]
    same = ensure_image(name, dockerfile="auto", pull=False)
    assert same["cached"] and same["digest"] == first["digest"] and same["image"] == first["image"]
    forced = ensure_image(name, dockerfile="auto", pull=False, ignore_cache=True)
    assert forced["built"] and forced["pushed"] and forced["image"] == first["image"]
    rebuilt = build_docker_image(name, dockerfile="auto", pull=False, ignore_cache=True)
    assert rebuilt["cached"] is False
    repushed = push_docker_image(name, rebuilt["tag"], ignore_cache=True)
    assert repushed["pushed"] is True


def test_push_detects_an_image_deleted_from_the_registry(project, registry_noauth, unique_name):
    name = f"{registry_noauth.host}/{unique_name}"
    built = build_docker_image(name, dockerfile="auto", pull=False)
    first = push_docker_image(name, built["tag"])
    response = requests.delete(f"{registry_noauth.url}/v2/{unique_name}/manifests/{first['digest']}", timeout=30)
    assert response.status_code == 202
    assert Engine().registry_digest(built["image"]) is None
    again = push_docker_image(name, built["tag"])
    assert again["pushed"] is True and Engine().registry_digest(built["image"]) == again["digest"]


def test_push_notices_a_different_image_under_the_same_tag(project, registry_noauth, busybox_image, unique_name):
    # The registry holds *something* at name:dev, but not our image: it must be pushed.
    engine = Engine()
    name = f"{registry_noauth.host}/{unique_name}"
    engine.tag(busybox_image, f"{name}:dev")
    other = engine.push(f"{name}:dev")
    built = build_docker_image(name, dockerfile="auto", pull=False, tag="dev")
    pushed = push_docker_image(name, "dev")
    assert pushed["pushed"] is True and pushed["digest"] != other
    assert engine.local_image(f"{name}:dev")["Id"] == built["image_id"]


def test_persisted_dockerfile_keeps_the_tag_stable(project, registry_noauth, unique_name):
    name = f"{registry_noauth.host}/{unique_name}"
    first = build_docker_image(name, dockerfile="auto", pull=False, persist_dockerfile=True)
    assert (project / "Dockerfile.generated").read_text() == default_dockerfile_text(project)
    second = build_docker_image(name, dockerfile="auto", pull=False, persist_dockerfile=True)
    assert second["tag"] == first["tag"] and second["cached"] is True


def test_push_without_credentials_uses_the_docker_config(project, registry, creds, unique_name):
    name = f"{registry.host}/{unique_name}"
    built = build_docker_image(name, dockerfile="auto", pull=False)
    with pytest.raises(AuthenticationError) as info:
        push_docker_image(name, built["tag"])  # empty DOCKER_CONFIG
    assert registry.password not in str(info.value)
    wrong = {**creds, "password": "not-the-password-42"}
    with pytest.raises(AuthenticationError) as info:
        push_docker_image(name, built["tag"], credentials=wrong)
    assert "not-the-password-42" not in str(info.value)
    Engine().cli_login(RegistryCredentials(**_c(creds)))
    assert push_docker_image(name, built["tag"])["pushed"] is True


def test_push_of_an_image_that_was_never_built(project, registry_noauth, unique_name):
    from prefect_flyimage import FlyImageError

    with pytest.raises(FlyImageError, match="not in the Docker daemon"):
        push_docker_image(f"{registry_noauth.host}/{unique_name}", "nope")
