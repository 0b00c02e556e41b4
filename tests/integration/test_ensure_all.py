"""``prefect-flyimage ensure-all prefect.yaml``: the image of every deployment, as ``prefect deploy`` makes it.

A real ``prefect.yaml`` with four deployments: our build and push steps (credentials
from environment placeholders), prefect-docker's build and push steps (credentials from
a ``docker-registry-credentials`` block), one inheriting the file's top-level
``ensure_image`` step without push, and one that builds nothing. Real daemon, real
registry, the session's Prefect server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from prefect_flyimage.plan import TAG_LENGTH

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"

PREFECT_YAML = """\
name: ensure-all-test
prefect-version: 3.0.0

build:
- prefect_flyimage.deployments.steps.ensure_image:
    id: local-image
    requires: prefect-flyimage
    image_name: '{{{{ $FLYIMAGE_REGISTRY }}}}/{ns}/gamma'
    path: gamma
    pull: false
    push: false

deployments:
- name: alpha
  entrypoint: flows/hello.py:hello
  build:
  - prefect_flyimage.deployments.steps.build_docker_image:
      id: build-image
      requires: prefect-flyimage
      image_name: '{{{{ $FLYIMAGE_REGISTRY }}}}/{ns}/alpha'
      tag: v1
      path: alpha
      pull: false
  push:
  - prefect_flyimage.deployments.steps.push_docker_image:
      image_name: '{{{{ build-image.image_name }}}}'
      tag: '{{{{ build-image.tag }}}}'
      credentials:
        registry_url: '{{{{ $FLYIMAGE_REGISTRY }}}}'
        username: '{{{{ $FLYIMAGE_REGISTRY_USER }}}}'
        password: '{{{{ $FLYIMAGE_REGISTRY_PASSWORD }}}}'
- name: beta
  entrypoint: flows/hello.py:hello
  build:
  - prefect_docker.deployments.steps.build_docker_image:
      id: build-beta
      requires: prefect-docker
      image_name: '{{{{ $FLYIMAGE_REGISTRY }}}}/{ns}/beta'
      dockerfile: Dockerfile.beta
      path: beta
      pull: false
  push:
  - prefect_docker.deployments.steps.push_docker_image:
      image_name: '{{{{ build-beta.image_name }}}}'
      tag: '{{{{ build-beta.tag }}}}'
      credentials: '{{{{ prefect.blocks.docker-registry-credentials.{block} }}}}'
- name: gamma
  entrypoint: flows/hello.py:hello
- name: delta
  entrypoint: flows/hello.py:hello
  build: null
"""


def _project(root: Path, busybox_image: str, ns: str, block: str) -> Path:
    for name, dockerfile in (("alpha", "Dockerfile"), ("beta", "Dockerfile.beta"), ("gamma", "Dockerfile")):
        (root / name).mkdir(parents=True)
        (root / name / dockerfile).write_text(f"FROM {busybox_image}\nCOPY app.txt /app.txt\n")
        (root / name / "app.txt").write_text(f"{name} {ns}\n")
    (root / "prefect.yaml").write_text(PREFECT_YAML.format(ns=ns, block=block))
    return root / "prefect.yaml"


def _registry_digest(registry, name: str, tag: str):
    resp = requests.head(f"http://{registry.host}/v2/{name}/manifests/{tag}", auth=(registry.username, registry.password),
                         headers={"Accept": MANIFEST_TYPES}, timeout=30)
    return resp.headers["Docker-Content-Digest"] if resp.status_code == 200 else None


def _cli(args: list[str], prefect_server: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    return subprocess.run([sys.executable, "-m", "prefect_flyimage.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture
def block_name(prefect_server, registry, unique_name):
    from prefect_docker.credentials import DockerRegistryCredentials

    DockerRegistryCredentials(registry_url=registry.host, username=registry.username, password=registry.password).save(
        unique_name, overwrite=True,
    )
    return unique_name


def test_ensure_all_ensures_each_deployments_image(tmp_path, prefect_server, registry, busybox_image, unique_name,
                                                   block_name, docker_client, monkeypatch):
    path = _project(tmp_path / "project", busybox_image, unique_name, block_name)
    proc = _cli(["ensure-all", str(path), "--json"], prefect_server, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outcomes = {o["deployment"]: o for o in json.loads(proc.stdout)}
    assert sorted(outcomes) == ["alpha", "beta", "gamma"]  # delta builds nothing
    for name in ("alpha", "beta"):
        o = outcomes[name]
        assert o["error"] is None and o["built"] and o["pushed"], o
        tag = o["reference"].rsplit(":", 1)[1]
        assert _registry_digest(registry, f"{unique_name}/{name}", tag) == o["digest"]
        assert _registry_digest(registry, f"{unique_name}/{name}", o["plan_hash"][:TAG_LENGTH]) == o["digest"]
    assert outcomes["alpha"]["reference"].endswith(":v1")
    gamma = outcomes["gamma"]
    assert gamma["built"] and not gamma["pushed"] and gamma["digest"] is None
    assert docker_client.images.get(gamma["reference"]).id == gamma["image_id"]
    assert _registry_digest(registry, f"{unique_name}/gamma", gamma["reference"].rsplit(":", 1)[1]) is None

    # prefect deploy's own step, run as `prefect deploy` runs it (in the project folder), names
    # the same image: ensure-all and the step agree on the content tag.
    from prefect_flyimage.deployments.steps import build_docker_image

    monkeypatch.chdir(path.parent)
    step = build_docker_image(f"{registry.host}/{unique_name}/beta", dockerfile="Dockerfile.beta", path="beta", pull=False)
    assert step["image"] == outcomes["beta"]["reference"] and step["cached"]

    # Again: everything is where it should be; nothing is built or pushed.
    again = _cli(["ensure-all", str(path), "--json", "-d", "alpha", "-d", "beta"], prefect_server, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads(again.stdout)
    assert [(o["deployment"], o["built"], o["pushed"], o["digest"]) for o in rerun] == [
        (n, False, False, outcomes[n]["digest"]) for n in ("alpha", "beta")
    ]


def test_ensure_all_usage_errors_exit_2(tmp_path, prefect_server, busybox_image, unique_name):
    path = _project(tmp_path / "project", busybox_image, unique_name, "unused")
    for args, says in (
        (["ensure-all", str(tmp_path / "missing.yaml")], "missing.yaml"),
        (["ensure-all", str(path), "--docker-hosts", "nohost"], "'nohost'"),
        (["ensure-all", str(path), "-d", "nope"], "'nope'"),
    ):
        proc = _cli(args, prefect_server, tmp_path)
        assert proc.returncode == 2 and "Usage:" in proc.stderr and says in proc.stderr, (args, proc.stderr[-2000:])


def test_ensure_all_names_a_step_output_it_cannot_have(tmp_path, busybox_image, unique_name):
    from prefect_flyimage._deployments_yaml import deployment_images
    from prefect_flyimage.errors import ConfigError

    path = _project(tmp_path / "project", busybox_image, unique_name, "unused")
    path.write_text(path.read_text().replace("tag: v1", "tag: '{{ get-commit.stdout }}'"))
    with pytest.raises(ConfigError, match=r"prefect.yaml:\d+: deployments\[0\]\.build\[0\].*get-commit.stdout"):
        deployment_images(path)
