"""A half-finished publish, left for real in the registry, is finished with its own digest.

A build host that dies after pushing a plan's content tag but before its other tags
leaves exactly this registry state: the content tag only. Here it is made with the real
daemon and registry (build, push the content tag alone, drop the image from the daemon
as if another host retries), then the plan is published again: by ``ensure``, and by
the tree's publish after its own new build. Both must adopt the registry's digest and
push only the missing tags.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from prefect_flyimage import BuildPlan, pipeline
from prefect_flyimage.engine import Engine

pytestmark = pytest.mark.integration

MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def _plan(tmp_path: Path, busybox_image: str, repository: str) -> BuildPlan:
    context = tmp_path / "ctx"
    context.mkdir()
    # Every build makes another image (a new timestamp), as the tree's no-cache builds do.
    (context / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY app.txt /app.txt\nRUN date +%s%N > /built-at\n")
    (context / "app.txt").write_text(repository + "\n")
    return BuildPlan.from_dockerfile(context, repository, tag="v1", no_cache=True)


def _digest(registry, creds, repository: str, tag: str):
    name = repository.split("/", 1)[1]
    resp = requests.head(f"http://{registry.host}/v2/{name}/manifests/{tag}", auth=(creds.username, creds.secret),
                         headers={"Accept": MANIFEST_TYPES}, timeout=30)
    return resp.headers["Docker-Content-Digest"] if resp.status_code == 200 else None


def _half_publish(plan: BuildPlan, creds, docker_client) -> tuple[str, str]:
    """Build, push the content tag only, then drop the image from the daemon: (image id, digest)."""
    built = pipeline.ensure(plan, push=False, credentials=creds)
    with Engine() as engine:
        digest = engine.push(plan.content_ref, creds)
    docker_client.images.remove(built.image_id, force=True)
    return built.image_id, digest


def test_ensure_finishes_a_half_finished_publish(tmp_path, registry, creds, busybox_image, unique_name, docker_client):
    repository = f"{registry.host}/{unique_name}"
    plan = _plan(tmp_path, busybox_image, repository)
    image_id, digest = _half_publish(plan, creds, docker_client)
    assert _digest(registry, creds, repository, plan.content_tag) == digest
    assert _digest(registry, creds, repository, "v1") is None  # the half-finished state, for real

    result = pipeline.ensure(plan, credentials=creds)
    assert not result.built and result.pushed and result.digest == digest and result.image_id == image_id
    assert _digest(registry, creds, repository, "v1") == digest
    assert _digest(registry, creds, repository, plan.content_tag) == digest


def test_tree_publish_after_a_new_build_adopts_the_registry_digest(tmp_path, registry, creds, busybox_image, unique_name, docker_client):
    repository = f"{registry.host}/{unique_name}"
    plan = _plan(tmp_path, busybox_image, repository)
    first_id, digest = _half_publish(plan, creds, docker_client)
    retry = pipeline.ensure(plan, push=False, credentials=creds)  # the retry's host builds the plan again
    assert retry.built and retry.image_id != first_id

    # What ImageFSM.publish does: content tag, latest, version tag.
    result = pipeline.push_local(repository, [plan.content_tag, "latest", "v1"], creds, plan_hash=plan.hash, force=True)
    assert result.digest == digest and result.image_id == first_id  # the first attempt's image, not the retry's
    for tag in (plan.content_tag, "latest", "v1"):
        assert _digest(registry, creds, repository, tag) == digest, tag
    assert docker_client.images.get(f"{repository}:v1").id == first_id
