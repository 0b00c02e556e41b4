"""Benchmark: a code-only redeploy, Prefect's ``DockerImage`` vs ours (the code appended in the registry).

One project, Prefect's default Dockerfile shape with a slow dependency step::

    FROM <prefect stand-in>
    COPY requirements.txt tinypkg-0.1-py3-none-any.whl /opt/prefect/bench/
    RUN sleep 20 && uv pip install --offline -r /opt/prefect/bench/requirements.txt
    COPY . /opt/prefect/bench/
    WORKDIR /opt/prefect/bench/

(``requirements.txt`` names a small local wheel, built here: a real pip install, no network.)
Both contestants deploy it once (not timed: the dependency image exists afterwards in the
registry, and in the daemon's cache), then one ``.py`` file changes and each redeploys, timed
from the constructor to the end of ``push()``:

- **warm daemon**: the daemon still has every image and the layer cache;
- **fresh daemon** (a new CI runner): this benchmark's images are removed from the daemon
  first (only its own repositories' tags and the dangling layers of its builds; nothing shared
  is pruned), so Prefect's build runs the dependency step again; ours never asks the daemon.

Prefect: ``prefect.docker.DockerImage(name, tag=<new>, dockerfile="Dockerfile", pull=False,
network_mode="host").build(); .push()``. Ours: ``prefect_flyimage.DockerImage(name,
dockerfile="Dockerfile", pull=False, network_mode="host").build(); .push()``. One run per
scenario; the ratio is Prefect's time / ours. Nothing asserts.

Usage (services up; ``source /var/tmp/prefect-flyimage/env``)::

    python3 benchmarks/code_redeploy.py [--sleep 20] [--registry 127.0.0.1:5001] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import secrets
import sys
import tempfile
import time
import zipfile
from pathlib import Path


def _wheel(folder: Path) -> str:
    """A tiny valid wheel (``tinypkg``), written with zipfile: what pip installs from."""
    name = "tinypkg-0.1-py3-none-any.whl"
    files = {
        "tinypkg/__init__.py": b"VALUE = 42\n",
        "tinypkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        "tinypkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append("tinypkg-0.1.dist-info/RECORD,,")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
        z.writestr("tinypkg-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    (folder / name).write_bytes(buf.getvalue())
    return name


def _project(folder: Path, base: str, sleep: int) -> None:
    wheel = _wheel(folder)
    (folder / "requirements.txt").write_text(f"/opt/prefect/bench/{wheel}\n")
    (folder / "flow.py").write_text("from prefect import flow\n\n@flow\ndef hello():\n    return 1\n")
    for i in range(50):
        (folder / f"mod_{i}.py").write_text(f"X = {i}\n")
    (folder / "Dockerfile").write_text(
        f"FROM {base}\nCOPY requirements.txt {wheel} /opt/prefect/bench/\n"
        f"RUN sleep {sleep} && uv pip install --offline -r /opt/prefect/bench/requirements.txt\n"
        "COPY . /opt/prefect/bench/\nWORKDIR /opt/prefect/bench/\n"
    )


def _remove_repo_images(repos: list[str]) -> None:
    """Remove this benchmark's images (by repository), the stopped build containers Prefect's
    build leaves on them (docker-py's ``rm=False``) and so their build cache; nothing else."""
    import docker

    client = docker.from_env(timeout=300)
    try:
        ours = [i for i in client.images.list() if any(t.startswith(r + ":") for t in i.tags for r in repos)]
        chain: set[str] = set()
        for image in ours:
            current = image.id
            while current and current not in chain:
                chain.add(current)
                try:
                    current = client.images.get(current).attrs.get("Parent") or ""
                except docker.errors.NotFound:
                    break
        for container in client.containers.list(all=True):
            # Prefect's build leaves "created" (nop steps) and "exited" (RUN steps) containers
            if container.attrs.get("Image") in chain and container.status in ("created", "exited"):
                container.remove(force=True)
        for image in ours:
            for tag in image.tags:
                if any(tag.startswith(r + ":") for r in repos):
                    client.images.remove(tag, force=True)
    finally:
        client.close()


def _prefect(name: str, project: Path) -> float:
    from prefect.docker import DockerImage

    started = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(project)
    try:
        image = DockerImage(name, tag=secrets.token_hex(4), dockerfile="Dockerfile", pull=False, network_mode="host")
        image.build()
        image.push()
    finally:
        os.chdir(cwd)
    return time.perf_counter() - started


def _ours(name: str, project: Path) -> float:
    from prefect_flyimage import DockerImage

    started = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(project)
    try:
        image = DockerImage(name, dockerfile="Dockerfile", stream_progress_to=None, pull=False, network_mode="host")
        image.build()
        image.push()
    finally:
        os.chdir(cwd)
    elapsed = time.perf_counter() - started
    print(f"  ours: {image.result.timings} built={image.result.built} pushed={image.result.pushed}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sleep", type=int, default=20)
    parser.add_argument("--registry", default=os.environ.get("FLYIMAGE_REGISTRY_NOAUTH", "127.0.0.1:5001"))
    parser.add_argument("--base", default=os.environ.get("FLYIMAGE_PREFECT_IMAGE", "prefecthq/prefect:3.9.1-python3.11"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    salt = secrets.token_hex(4)
    repos = {"prefect": f"{args.registry}/bench-code-prefect-{salt}", "ours": f"{args.registry}/bench-code-ours-{salt}"}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="flyimage-bench-code-") as tmp:
        projects = {k: Path(tmp) / k for k in repos}
        for folder in projects.values():
            folder.mkdir()
            _project(folder, args.base, args.sleep)
            (folder / "salt.py").write_text(f"SALT = {salt!r}\n")
        run = {"prefect": _prefect, "ours": _ours}
        try:
            setup = {k: run[k](repos[k], projects[k]) for k in repos}  # first deploy, not compared
            print(f"first deploy (setup): prefect {setup['prefect']:.1f}s, ours {setup['ours']:.1f}s")
            for scenario in ("warm", "fresh"):
                for k in repos:
                    (projects[k] / "flow.py").write_text(f"# {scenario}\nfrom prefect import flow\n")
                if scenario == "fresh":
                    # `docker rmi` of a tag also removes its untagged parents: the build cache of these images
                    _remove_repo_images(list(repos.values()))
                    # ours on a new runner: no stat cache and no layer listings either
                    os.environ["PREFECT_FLYIMAGE_CACHE_DIR"] = str(Path(tmp) / "fresh-cache")
                results[scenario] = {k: run[k](repos[k], projects[k]) for k in repos}
                r = results[scenario]
                print(f"{scenario} daemon, one .py changed: prefect {r['prefect']:.2f}s, ours {r['ours']:.2f}s, "
                      f"ratio {r['prefect'] / r['ours']:.1f}x (aim: {'>= 5x' if scenario == 'warm' else '>= 20x'})")
        finally:
            _remove_repo_images(list(repos.values()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
