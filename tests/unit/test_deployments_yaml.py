"""Which deployments of a prefect.yaml build an image, and the plans ``ensure-all`` makes of them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from prefect_flyimage._deployments_yaml import deployment_credentials, deployment_images
from prefect_flyimage.errors import ConfigError

YAML = """\
build:
- prefect_flyimage.deployments.steps.ensure_image:
    id: shared
    image_name: 127.0.0.1:5000/team/shared
    path: shared
    push: false
deployments:
- name: ours
  build:
  - prefect.deployments.steps.run_shell_script:
      id: noise
      script: echo hi
  - prefect_flyimage.deployments.steps.build_docker_image:
      id: build-image
      image_name: '{{ $TEAM_REGISTRY }}/team/ours'
      tag: v1
      additional_tags: [latest]
      path: ours
      buildargs: {FLAVOUR: mild}
  push:
  - prefect_flyimage.deployments.steps.push_docker_image:
      image_name: '{{ build-image.image_name }}'
      credentials:
        registry_url: '{{ $TEAM_REGISTRY }}'
        username: '{{ $TEAM_USER }}'
        password: '{{ $TEAM_PASSWORD }}'
- name: theirs
  build:
  - prefect_docker.deployments.steps.build_docker_image:
      image_name: 127.0.0.1:5000/team/theirs
      dockerfile: auto
      path: theirs
      ignore_cache: true
- name: inherits
- name: nothing
  build: null
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("TEAM_REGISTRY", "127.0.0.1:5000")
    monkeypatch.setenv("TEAM_USER", "ci")
    monkeypatch.setenv("TEAM_PASSWORD", "s3cret-pw")
    for name in ("shared", "ours"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text("FROM busybox\nCOPY . /app\n")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "requirements.txt").write_text("")
    (tmp_path / "prefect.yaml").write_text(YAML)
    return tmp_path / "prefect.yaml"


def test_each_deployment_that_builds_gets_the_steps_plan(project: Path, monkeypatch, tmp_path):
    images = {d.deployment: d for d in deployment_images(project)}
    assert sorted(images) == ["inherits", "ours", "theirs"]  # "nothing" says build: null
    ours, theirs, inherits = images["ours"], images["theirs"], images["inherits"]
    assert (ours.plan.repository, ours.plan.tag, ours.plan.extra_tags) == ("127.0.0.1:5000/team/ours", "v1", ("latest",))
    assert ours.plan.context == tmp_path / "ours" and dict(ours.plan.build_args) == {"FLAVOUR": "mild"}
    assert ours.push and not ours.force and ours.index == 0
    assert not theirs.push and theirs.force and "prefect" in (theirs.plan.dockerfile_text or "").lower()
    assert inherits.step.endswith(".ensure_image") and not inherits.push and inherits.plan.repository.endswith("/shared")

    # The step itself, run where `prefect deploy` runs it, makes the same plan.
    from prefect_flyimage.deployments import steps

    monkeypatch.chdir(tmp_path)
    plan, _, _ = steps._prepare("127.0.0.1:5000/team/ours", "Dockerfile", "v1", ["latest"], False, "Dockerfile.generated",
                                "docker-py", {"path": "ours", "buildargs": {"FLAVOUR": "mild"}})
    assert plan.hash == ours.plan.hash


def test_only_the_named_deployments(project: Path):
    assert [d.deployment for d in deployment_images(project, ["theirs"])] == ["theirs"]
    with pytest.raises(ConfigError, match="no deployment named 'nope'"):
        deployment_images(project, ["nope"])


def test_credentials_come_from_the_push_step_filled_here(project: Path):
    creds = deployment_credentials(project, 0)
    assert (creds.registry, creds.username, creds.secret) == ("127.0.0.1:5000", "ci", "s3cret-pw")
    assert deployment_credentials(project, 1) is None  # no push step


def test_a_build_step_using_another_steps_output_is_a_config_error(project: Path):
    project.write_text(project.read_text().replace("tag: v1", "tag: '{{ noise.stdout }}'"))
    with pytest.raises(ConfigError, match=r"prefect.yaml:\d+: deployments\[0\]\.build\[1\].*noise.stdout"):
        deployment_images(project)


@pytest.mark.parametrize("text, says", [
    ("name: x\n", "'deployments' list"),
    ("deployments:\n- entrypoint: a.py:f\n", "must be a mapping with a 'name'"),
    ("deployments: [\n", "not valid YAML"),
])
def test_not_a_prefect_yaml(tmp_path: Path, text: str, says: str):
    path = tmp_path / "prefect.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError, match=says):
        deployment_images(path)


def test_a_bad_step_argument_names_the_step(project: Path):
    project.write_text(project.read_text().replace("tag: v1", "tag: v1\n      colour: blue").replace("buildargs: {FLAVOUR: mild}", "dockerfile: Nope"))
    with pytest.raises(ConfigError, match=r"deployments\[0\]\.build\[1\]"):
        deployment_images(project)
