"""Benchmark: an image tree on 1 build host vs 3 build hosts (Dask) vs one image at a time.

The tree has the shape of Wikimedia's ``operations/docker-images/production-images``
(125 images, 68 dependency edges: a forest of many small trees, at most 4 deep) scaled
down to 16 images and 9 edges (the same edges per image, ~0.55, and the same depth):

    r1 -> a -> b -> c        r2 -> e -> f      r3 -> g    r4 -> h    r5  r6  r7
    r1 -> d -> i

Every image's build waits on I/O (``RUN sleep S``). Each build host is its own dockerd
(own data root: no shared layers, the store starts empty), bound to one Dask worker
building ``--builds-per-host`` images at once; images cross hosts through the local
registry, by digest. Runs, each into a fresh namespace, without the layer cache, publishing:

- ``sequential``: one host, one image at a time (docker-pkg's order);
- ``1 host, N/host``: one host, a local cluster started by the run, N builds at once;
- ``3 hosts, N/host``: three hosts, a local cluster started by the run (timed: its start included);
- ``3 hosts, started``: three hosts of a cluster started before (``dask scheduler`` and
  ``dask worker`` processes, as a user's cluster; ``--dask-address``): its first tree
  (``cold``: the workers import Prefect on their first task, unless ``--preload``) and a
  second one (``warm``).

The critical path of each 3-host run is the longest chain of its measured per-image
task durations (build, verify, publish in the task; no schedule can beat it). Usage
(services up, ``source /var/tmp/prefect-flyimage/env``)::

    python benchmarks/chain_dask.py [--sleep 2] [--builds-per-host 1,3] [--no-started] [--preload]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

import docker
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "chain"))

from _dask_hosts import dask_cluster, daemons  # noqa: E402
from _tree import longest_chain, write_tree  # noqa: E402

from prefect_flyimage.names import ImageRef  # noqa: E402

PARENTS = {
    "r1": [], "r2": [], "r3": [], "r4": [], "r5": [], "r6": [], "r7": [],
    "a": ["r1"], "b": ["a"], "c": ["b"], "d": ["r1"], "i": ["d"],
    "e": ["r2"], "f": ["e"], "g": ["r3"], "h": ["r4"],
}


def push_seed(registry: str, user: str, password: str, namespace: str) -> str:
    seed = f"{registry}/{namespace}/seed"
    client = docker.from_env()
    try:
        client.api.tag(os.environ.get("FLYIMAGE_BUSYBOX_IMAGE", "flyimage/busybox:latest"), seed, "latest")
        for event in client.api.push(seed, "latest", auth_config={"username": user, "password": password}, stream=True, decode=True):
            if "error" in event:
                raise RuntimeError(event["error"])
        client.api.remove_image(f"{seed}:latest")
    finally:
        client.close()
    return f"{seed}:latest"


def _config(tmp_path: Path, registry: str, user: str, password: str) -> Path:
    """A config for a fresh namespace with the seed image pushed there."""
    namespace = f"bench-dask-{uuid.uuid4().hex[:8]}"
    seed = push_seed(registry, user, password, namespace)
    config = tmp_path / f"{namespace}.yaml"
    config.write_text(yaml.safe_dump({
        "registry": registry, "namespace": namespace, "username": user, "password": password,
        "seed_image": seed, "base_images": [seed], "refresh_base_images": False,
        "state_dir": str(tmp_path / "state" / namespace), "build_network": "none",
    }))
    config.chmod(0o600)
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleep", type=float, default=2.0)
    parser.add_argument("--builds-per-host", default="1,3",
                        help="images a host builds at once; a list runs 1 host and 3 hosts for each (the started cluster: the last)")
    parser.add_argument("--no-started", dest="started", action="store_false", help="skip the pre-started cluster runs")
    parser.add_argument("--preload", action="store_true", help="the started workers import the task module as they start")
    args = parser.parse_args()
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from prefect_flyimage.chain.flows import build_tree_flow

    registry = os.environ["FLYIMAGE_REGISTRY"]
    user, password = os.environ["FLYIMAGE_REGISTRY_USER"], os.environ["FLYIMAGE_REGISTRY_PASSWORD"]
    per_host = [int(n) for n in str(args.builds_per_host).split(",")]
    if not per_host or min(per_host) < 1:
        parser.error("--builds-per-host: numbers of at least 1")
    bph = per_host[-1]
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180), daemons(3) as hosts:
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()  # the worker processes report here
        tmp_path = Path(tmp)
        tree = tmp_path / "tree"
        write_tree(tree, PARENTS, args.sleep)
        urls = [d.url for d in hosts]
        results: dict[str, tuple[float, list]] = {}

        def run(label: str, run_hosts: list[str], concurrency: Optional[int], slots: int, address: Optional[str] = None) -> None:
            config = _config(tmp_path, registry, user, password)
            started = time.monotonic()
            outcomes = build_tree_flow(str(tree), str(config), max_concurrency=concurrency, docker_hosts=run_hosts,
                                       dask_address=address, builds_per_host=1 if address else slots)
            elapsed = time.monotonic() - started
            assert all(o["state"] == "published" for o in outcomes), outcomes
            results[label] = (elapsed, outcomes)
            print(f"{label:>27}: {elapsed:6.1f} s  on {len({o['docker_host'] for o in outcomes})} host(s)", flush=True)

        print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        run("sequential", urls[:1], 1, 1)
        for n in per_host:
            run(f"1 host, {n}/host", urls[:1], None, n)  # as many at once as the hosts' slots
            run(f"3 hosts, {n}/host", urls, None, n)
        if args.started:
            env = {"PREFECT_API_URL": os.environ["PREFECT_API_URL"], "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
            preload = ("prefect_flyimage.distributed",) if args.preload else ()
            with dask_cluster(urls, env, tmp_path / "dask-logs", bph, preload) as cluster:
                run(f"3 hosts, {bph}/host, started", urls, None, bph, cluster.address)
                run("same cluster, warm", urls, None, bph, cluster.address)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(f"images {len(PARENTS)}, edges {sum(len(p) for p in PARENTS.values())}, RUN sleep {args.sleep:g}")
        seq = results["sequential"][0]
        for label in [k for k in results if k.startswith(("3 hosts", "same"))]:
            elapsed, outcomes = results[label]
            n = int(label.split(", ")[1].split("/")[0]) if label.startswith("3 hosts") else bph
            one = results[f"1 host, {n}/host"][0]
            durations = {ImageRef.parse(o["image"]).repository.rsplit("/", 1)[-1]: float(o["duration"] or 0) for o in outcomes}
            cp = longest_chain(PARENTS, durations)
            print(f"{label}: {elapsed:.1f} s; critical path {cp:.1f} s, ratio {elapsed / cp:.2f}; "
                  f"vs 1 host ({n}/host) {one / elapsed:.2f}x, vs sequential {seq / elapsed:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
