"""Several processes ensuring one new plan at the same time (issue 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration

N = 8

SCRIPT = r"""
import json, sys
from prefect_flyimage import BuildPlan, RegistryCredentials, ensure
context, repository, host, user = sys.argv[1:5]
password = sys.stdin.readline().rstrip("\n")  # the secret on stdin, never argv; and the start signal
plan = BuildPlan.from_dockerfile(context, repository)
result = ensure(plan, credentials=RegistryCredentials(host, user, password))
print(json.dumps({"digest": result.digest, "image_id": result.image_id, "built": result.built,
                  "pushed": result.pushed, "tag": plan.content_tag}))
"""

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])


def test_eight_processes_ensure_one_new_plan(tmp_path: Path, registry, creds, busybox_image, unique_name, docker_client):
    context = tmp_path / "ctx"
    context.mkdir()
    # A build that takes a moment, so the processes really overlap.
    (context / "Dockerfile").write_text(
        f"FROM {busybox_image}\nCOPY app.txt /app.txt\nRUN sleep 2 && date +%s%N > /built-at\n"
    )
    (context / "app.txt").write_text(unique_name + "\n")
    repository = f"{registry.host}/{unique_name}"
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(Path(__file__).resolve().parents[2]))}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(context), repository, registry.host, creds.username],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for _ in range(N)
    ]
    for p in procs:
        p.stdin.write(creds.secret + "\n")
        p.stdin.flush()
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outcomes.append(json.loads(out.strip().splitlines()[-1]))

    digests = {o["digest"] for o in outcomes}
    assert len(digests) == 1, outcomes
    digest = digests.pop()
    assert digest and digest.startswith("sha256:")
    assert sum(o["built"] for o in outcomes) >= 1

    # The registry holds that digest under the content tag ...
    tag = outcomes[0]["tag"]
    auth = (creds.username, creds.secret)
    head = requests.head(f"http://{registry.host}/v2/{unique_name}/manifests/{tag}", auth=auth,
                         headers={"Accept": MANIFEST_TYPES}, timeout=30)
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == digest
    # ... and every result's image is that manifest's image (the image id is its config
    # digest in the classic image store, the manifest digest in the containerd one).
    manifest = requests.get(f"http://{registry.host}/v2/{unique_name}/manifests/{digest}", auth=auth,
                            headers={"Accept": MANIFEST_TYPES}, timeout=30).json()
    containerd_store = "snapshotter" in json.dumps(docker_client.info().get("DriverStatus") or [])
    # (a process that started after the push found it in the registry: no daemon, no image id)
    ids = {o["image_id"] for o in outcomes if o["image_id"] is not None or o["built"]}
    assert ids == {digest if containerd_store else manifest["config"]["digest"]}
