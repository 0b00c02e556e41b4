"""Image trees on a Dask cluster across three build hosts (real dockerd daemons, real workers).

Every build host starts with an empty image store: the seed image comes from the local
registry, and a child built on another host than its parent gets the parent from the
registry by digest. Faults: a build daemon killed mid-tree, a Dask worker killed mid-tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import docker
import httpx
import pytest

from prefect_flyimage.chain.flows import build_tree_flow

sys.path.insert(0, str(Path(__file__).parent))
from _dask_hosts import alive, dask_cluster, daemons  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def build_hosts():
    with daemons(3) as hosts:
        yield hosts


@pytest.fixture
def cluster(build_hosts, prefect_server, tmp_path):
    env = {"PREFECT_API_URL": prefect_server, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    with dask_cluster([d.url for d in build_hosts], env, tmp_path / "dask-logs", preload=("prefect_flyimage.distributed",)) as c:
        yield c


def _push_seed(image: str, repository: str, auth: dict[str, str] | None = None) -> str:
    """Push ``image`` as ``repository:latest`` and drop the local tag; return that reference."""
    client = docker.from_env()
    try:
        client.api.tag(image, repository, "latest")
        for event in client.api.push(repository, "latest", auth_config=auth, stream=True, decode=True):
            assert "error" not in event, event
        client.api.remove_image(f"{repository}:latest")
    finally:
        client.close()
    return f"{repository}:latest"


@pytest.fixture
def dask_config(chain_config, registry, busybox_image, unique_name, services) -> dict[str, Any]:
    """The chain config with the seed image in the registry (the build hosts have no images)."""
    seed = _push_seed(busybox_image, f"{registry.host}/{chain_config['namespace']}/seed",
                      {"username": registry.username, "password": registry.password})
    return {**chain_config, "seed_image": seed, "base_images": [seed], "refresh_base_images": False}


def _registry_digest(registry, ref: str) -> tuple[str, str]:
    """(manifest digest, config digest = image id) the registry holds for ``host/name:tag``."""
    host, rest = ref.split("/", 1)
    name, tag = rest.rsplit(":", 1)
    resp = httpx.get(
        f"http://{host}/v2/{name}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES},
        auth=(registry.username, registry.password), timeout=30,
    )
    resp.raise_for_status()
    return resp.headers["Docker-Content-Digest"], resp.json()["config"]["digest"]


def _check_published(outcomes: list[dict[str, Any]], registry, state_dir: Path, n: int = 7) -> None:
    """Every image published once: the registry's tags name the digest built and verified."""
    assert len(outcomes) == n
    verified = {json.loads(p.read_text())["image_id"] for p in (state_dir / "verified").glob("*.json")}
    for o in outcomes:
        assert o["state"] == "published", o
        digest, config = _registry_digest(registry, o["image"])
        assert digest == o["digest"], o
        latest = o["image"].rsplit(":", 1)[0] + ":latest"
        assert _registry_digest(registry, latest)[0] == digest, o  # no second push of another build
        assert config in verified, o  # the image in the registry is the one that passed its test


def test_tree_builds_on_three_hosts_through_the_registry(cluster, build_hosts, chain_tree, dask_config, write_config, registry):
    config_path = write_config(dask_config)
    hosts = [d.url for d in build_hosts]
    outcomes = build_tree_flow(str(chain_tree), str(config_path), max_concurrency=6, docker_hosts=hosts, dask_address=cluster.address)
    _check_published(outcomes, registry, Path(dask_config["state_dir"]))
    used = {o["docker_host"] for o in outcomes}
    assert used <= set(hosts) and len(used) >= 2  # two independent roots start at once on two hosts
    # Each host holds only what it built or pulled: its store started empty.
    for d in build_hosts:
        client = docker.DockerClient(base_url=d.url)
        try:
            tags = {t for img in client.images.list() for t in img.tags}
        finally:
            client.close()
        built_here = {o["image"] for o in outcomes if o["docker_host"] == d.url}
        assert built_here <= tags


def test_cli_builds_on_a_local_cluster_of_the_hosts(build_hosts, prefect_server, chain_tree, dask_config, write_config, registry):
    config_path = write_config(dask_config)
    hosts = ",".join(d.url for d in build_hosts)
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    proc = subprocess.run(
        [sys.executable, "-m", "prefect_flyimage.chain", "-c", str(config_path), "build", str(chain_tree),
         "--docker-hosts", hosts, "--workers", "6"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("* ") and ": published (" in line]
    assert len(lines) == 7, proc.stdout
    assert {line.rsplit(" on ", 1)[1] for line in lines} <= set(hosts.split(","))


def test_cli_rejects_a_docker_host_that_is_not_a_url(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "prefect_flyimage.chain", "build", str(tmp_path), "--docker-hosts", "nohost"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "usage:" in proc.stderr and "'nohost'" in proc.stderr


def _slow_tree(tree: Path) -> None:
    """Give every image a step waiting on I/O, so a fault lands while images are building."""
    for template in tree.glob("*/Dockerfile.template"):
        template.write_text(template.read_text() + "\nRUN sleep 6\n")


def _fault_mid_tree(build_hosts, fault: Callable[[Any], None], run: Callable[[], list[dict[str, Any]]]) -> tuple[list, str]:
    """Run the tree in a thread; once a host runs a build step, apply ``fault`` to it."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["outcomes"] = run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline and thread.is_alive():
        for d in build_hosts:
            if alive(d.url):
                client = docker.DockerClient(base_url=d.url, timeout=5)
                try:
                    if client.containers.list():
                        victim = d
                        break
                finally:
                    client.close()
        time.sleep(0.5)
    assert victim is not None, "no build step ran"
    fault(victim)
    thread.join(900)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    return result["outcomes"], victim.url


def test_a_build_daemon_killed_mid_tree_moves_its_images(cluster, build_hosts, chain_tree, dask_config, write_config, registry):
    _slow_tree(chain_tree)
    config_path = write_config(dask_config)
    hosts = [d.url for d in build_hosts]
    outcomes, dead = _fault_mid_tree(
        build_hosts, lambda d: d.kill(),
        lambda: build_tree_flow(str(chain_tree), str(config_path), max_concurrency=6, docker_hosts=hosts, dask_address=cluster.address),
    )
    _check_published(outcomes, registry, Path(dask_config["state_dir"]))
    assert dead not in {o["docker_host"] for o in outcomes}  # what it was building went elsewhere


def test_a_dask_worker_killed_mid_tree_moves_its_images(cluster, build_hosts, chain_tree, dask_config, write_config, registry):
    _slow_tree(chain_tree)
    config_path = write_config(dask_config)
    hosts = [d.url for d in build_hosts]
    outcomes, lost = _fault_mid_tree(
        build_hosts, lambda d: cluster.kill_worker(d.url),
        lambda: build_tree_flow(str(chain_tree), str(config_path), max_concurrency=6, docker_hosts=hosts, dask_address=cluster.address),
    )
    _check_published(outcomes, registry, Path(dask_config["state_dir"]))
    assert lost not in {o["docker_host"] for o in outcomes}


def test_ensure_images_flow_spreads_plans_over_the_hosts(cluster, build_hosts, registry_noauth, unique_name, tmp_path):
    from prefect_flyimage.ensure_many import ensure_images_flow
    from prefect_flyimage.plan import BuildPlan

    seed = _push_seed(os.environ.get("FLYIMAGE_BUSYBOX_IMAGE", "flyimage/busybox:latest"), f"{registry_noauth.host}/{unique_name}/seed")
    plans = []
    for i in range(3):
        ctx = tmp_path / f"app{i}"
        ctx.mkdir()
        (ctx / "marker").write_text(f"app {i}\n")
        plans.append(BuildPlan(
            context=ctx, dockerfile_text=f"FROM {seed}\nCOPY marker /marker\nRUN sleep 2\n",
            repository=f"{registry_noauth.host}/{unique_name}/app{i}", tag="v1", network="none", pull=True,
        ))
    hosts = [d.url for d in build_hosts]
    outcomes = ensure_images_flow(plans, docker_hosts=hosts, dask_address=cluster.address)
    assert [o["reference"] for o in outcomes] == [str(p.ref) for p in plans]
    for o in outcomes:
        assert o["error"] is None and o["built"] and o["pushed"], o
        resp = httpx.get(f"http://{registry_noauth.host}/v2/{o['reference'].split('/', 1)[1].replace(':v1', '')}/manifests/v1",
                         headers={"Accept": MANIFEST_TYPES}, timeout=30)
        assert resp.headers["Docker-Content-Digest"] == o["digest"]
        assert resp.json()["config"]["digest"] == o["image_id"]
    assert len({o["docker_host"] for o in outcomes}) >= 2
    # Again: every content tag is in the registry, nothing is built or pushed anywhere.
    again = ensure_images_flow(plans, docker_hosts=hosts, dask_address=cluster.address)
    assert [(o["built"], o["pushed"], o["digest"]) for o in again] == [(False, False, o["digest"]) for o in outcomes]


def test_image_refresh_runs_the_tree_on_the_cluster(cluster, build_hosts, chain_tree, dask_config, write_config, registry, tmp_path):
    """The refresh flow's tree on the build hosts: the first run builds everything; ``force=True``
    rebuilds each image once, and every tag of it then names the new digest (none the old)."""
    from prefect.flows import load_flow_from_entrypoint

    image_refresh = load_flow_from_entrypoint(str(Path(__file__).resolve().parents[3] / "flows" / "image_refresh.py:image_refresh"))
    tree_config = write_config(dask_config)
    config = tmp_path / "refresh.yaml"
    config.write_text(f"state_file: {tmp_path / 'refresh-state.json'}\nimages:\n"
                      f"- name: tree\n  tree: {chain_tree}\n  tree_config: {tree_config}\n")
    hosts = [d.url for d in build_hosts]

    def refresh(**kw: Any) -> dict[str, dict[str, Any]]:
        reports = image_refresh(str(config), docker_hosts=hosts, dask_address=cluster.address, **kw)
        return {r["name"]: r for r in reports}

    first = refresh()
    assert len(first) == 7 and {r["status"] for r in first.values()} == {"rebuilt"}, first
    forced = refresh(force=True)
    assert {r["status"] for r in forced.values()} == {"rebuilt"}, forced
    for name, r in forced.items():
        assert r["digest_before"] == first[name]["digest_after"] != r["digest_after"], r
        assert _registry_digest(registry, r["reference"])[0] == r["digest_after"], r
        latest = r["reference"].rsplit(":", 1)[0] + ":latest"
        assert _registry_digest(registry, latest)[0] == r["digest_after"], r


DEPLOYMENT = """\
- name: appN
  entrypoint: flows/hello.py:hello
  build:
  - prefect_flyimage.deployments.steps.build_docker_image:
      id: build-image
      image_name: '{{ $FLYIMAGE_REGISTRY_NOAUTH }}/NS/appN'
      tag: v1
      path: appN
      network_mode: none
  push:
  - prefect_flyimage.deployments.steps.push_docker_image:
      image_name: '{{ build-image.image_name }}'
      tag: '{{ build-image.tag }}'
"""


def test_ensure_all_spreads_a_prefect_yaml_over_the_hosts(cluster, build_hosts, registry_noauth, unique_name, tmp_path):
    from prefect_flyimage.ensure_many import ensure_prefect_yaml_flow

    seed = _push_seed(os.environ.get("FLYIMAGE_BUSYBOX_IMAGE", "flyimage/busybox:latest"), f"{registry_noauth.host}/{unique_name}/seed")
    for i in range(3):
        (tmp_path / f"app{i}").mkdir()
        (tmp_path / f"app{i}" / "Dockerfile").write_text(f"FROM {seed}\nCOPY marker /marker\nRUN sleep 2\n")
        (tmp_path / f"app{i}" / "marker").write_text(f"app {i}\n")
    path = tmp_path / "prefect.yaml"
    path.write_text("deployments:\n" + "".join(DEPLOYMENT.replace("NS", unique_name).replace("appN", f"app{i}") for i in range(3)))
    hosts = [d.url for d in build_hosts]
    outcomes = ensure_prefect_yaml_flow(str(path), docker_hosts=hosts, dask_address=cluster.address)
    assert [o["deployment"] for o in outcomes] == ["app0", "app1", "app2"]
    for o in outcomes:
        assert o["error"] is None and o["built"] and o["pushed"] and o["reference"].endswith(":v1"), o
        name = o["reference"].split("/", 1)[1].rsplit(":", 1)[0]
        resp = httpx.get(f"http://{registry_noauth.host}/v2/{name}/manifests/v1", headers={"Accept": MANIFEST_TYPES}, timeout=30)
        assert resp.headers["Docker-Content-Digest"] == o["digest"] and resp.json()["config"]["digest"] == o["image_id"]
    assert len({o["docker_host"] for o in outcomes}) >= 2
