"""Benchmark: docker-pkg's sequential tree build vs our parallel one, in one run.

The tree has eight images whose builds wait on I/O (``RUN sleep 2``):

    base -> x1 -> y1 -> z
         -> x2 -> y2
         -> x3 -> y3

docker-pkg 4.0.4 (in its own venv, see tests/integration/chain/_dockerpkg_venv.py)
builds it one image at a time; ``DockerBuilder.build(max_workers=N)`` starts every
image as soon as its parent is done. Both build without the layer cache from the local
busybox image, into fresh namespaces, with pulling off. The critical path is the
longest chain of our measured per-image build times: no schedule can beat it.

Usage (services up: ``source /var/tmp/prefect-flyimage/env``)::

    python benchmarks/chain_parallel.py [--workers 3] [--sleep 2]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "chain"))

import _dockerpkg_venv  # noqa: E402
from _tree import longest_chain, write_tree  # noqa: E402

from prefect_flyimage import Engine  # noqa: E402
from prefect_flyimage.chain import DockerBuilder, read_config  # noqa: E402

PARENTS = {"base": [], "x1": ["base"], "x2": ["base"], "x3": ["base"], "y1": ["x1"], "y2": ["x2"], "y3": ["x3"], "z": ["y1"]}


def config_file(tmp: Path, namespace: str, seed: str) -> Path:
    """A docker-pkg config: no registry (so nothing is pulled or pushed), a fresh namespace."""
    path = tmp / f"config-{namespace}.yaml"
    path.write_text(yaml.safe_dump({
        "namespace": namespace, "seed_image": seed, "base_images": [seed],
        "refresh_base_images": False, "state_dir": str(tmp / "state"), "build_network": "none",
    }))
    return path


#: docker-pkg's CLI, with RUN steps on network "none": this machine's daemon has no bridge
#: and docker-pkg has no network option (the scheduling is untouched).
DOCKER_PKG_MAIN = """
import sys
import docker.api.build as api
_build = api.BuildApiMixin.build
def build(self, *args, **kwargs):
    kwargs.setdefault("network_mode", "none")
    return _build(self, *args, **kwargs)
api.BuildApiMixin.build = build
from docker_pkg import cli
sys.exit(cli.main(cli.parse_args(sys.argv[1:])))
"""


def run_docker_pkg(tree: Path, config: Path, cwd: Path) -> float:
    """Wall time of ``docker-pkg build --no-pull`` (sequential)."""
    started = time.monotonic()
    proc = subprocess.run([str(_dockerpkg_venv.python()), "-c", DOCKER_PKG_MAIN, "-c", str(config), "--info", "build",
                           "--no-pull", str(tree)],
                          cwd=cwd, capture_output=True, text=True, env={**os.environ, "XDG_CONFIG_HOME": str(cwd)})
    elapsed = time.monotonic() - started
    built = proc.stdout.count("* Built image")
    if proc.returncode != 0 or built != len(PARENTS):
        raise SystemExit(f"docker-pkg build failed ({proc.returncode}, {built} built):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def run_ours(tree: Path, config: Path, workers: int) -> tuple[float, dict[str, float]]:
    """Wall time of our parallel build, and each image's build time."""
    started = time.monotonic()
    builder = DockerBuilder(tree, read_config(config, user_config=False), pull=False)
    builder.scan(max_workers=4)
    results = list(builder.build(max_workers=workers))
    elapsed = time.monotonic() - started
    bad = [f"{i.label}: {i.state} {i.error or ''}" for i in results if i.state != "verified"]
    if bad or len(results) != len(PARENTS):
        raise SystemExit("our build failed:\n" + "\n".join(bad))
    return elapsed, {i.short_name: i.durations.get("build", 0.0) for i in results}


def cleanup(engine: Engine, namespace: str) -> None:
    """Untag what a run built, children first (the layers go with the last tag)."""
    for name in reversed(list(PARENTS)):
        for image in engine.client.images.list(name=f"{namespace}/{name}"):
            for tag in image.tags:
                try:
                    engine.remove(tag)
                except Exception as exc:  # noqa: BLE001 - best effort
                    print(f"cleanup: could not remove {tag}: {exc}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=3, help="our parallel builds (default 3: the tree's width)")
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds each build waits")
    args = parser.parse_args()
    seed = os.environ.get("FLYIMAGE_BUSYBOX_IMAGE", "flyimage/busybox:latest")
    _dockerpkg_venv.python()  # create the venv before timing anything
    with Engine() as engine, tempfile.TemporaryDirectory(prefix="chain-bench-") as tmpdir:
        tmp = Path(tmpdir)
        tree = tmp / "tree"
        write_tree(tree, PARENTS, args.sleep)
        run = uuid.uuid4().hex[:8]
        ns_theirs, ns_ours = f"bench-dockerpkg-{run}", f"bench-ours-{run}"
        try:
            theirs = run_docker_pkg(tree, config_file(tmp, ns_theirs, seed), tmp)
            ours, durations = run_ours(tree, config_file(tmp, ns_ours, seed), args.workers)
        finally:
            cleanup(engine, ns_theirs)
            cleanup(engine, ns_ours)
    cp = longest_chain(PARENTS, durations)
    print(f"tree: {len(PARENTS)} images, RUN sleep {args.sleep:g}, critical path base->x1->y1->z (4 images)")
    print(f"docker-pkg 4.0.4 sequential build : {theirs:7.2f} s")
    print(f"prefect-flyimage, {args.workers} workers     : {ours:7.2f} s")
    print(f"speed-up (docker-pkg / ours)       : {theirs / ours:7.2f}x")
    print(f"critical path of our build times   : {cp:7.2f} s (sum of all builds {sum(durations.values()):.2f} s)")
    print(f"ours / critical path               : {ours / cp:7.2f} (1.00 = as fast as any schedule can be)")


if __name__ == "__main__":
    main()
