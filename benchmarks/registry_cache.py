"""Benchmark: a fresh CI runner (an empty Docker data root) deploying a one-file change,
with the registry layer cache vs without, in one run.

A project whose dependency layer installs packages from PyPI::

    FROM <python image>
    COPY requirements.txt /app/requirements.txt
    RUN python3 -m venv /venv && /venv/bin/pip install -q -r /app/requirements.txt
    COPY src /app/src

is deployed once through the services' daemon (``ensure(push=True)``, which exports the
registry cache ``<repository>-buildcache:cache`` by default: the "previous CI run").
Then one source file changes, and two fresh Docker 26 daemons (new data root each, the
base image loaded before timing, as a runner would have pulled it) deploy it with
``ensure(push=True)``: one with ``PREFECT_FLYIMAGE_REGISTRY_CACHE=off``, one with the
default cache. Timed: ``ensure`` (hash, check, build, push). Goal: ratio >= 3.

Needs the modern services (``FLYIMAGE_DOCKER=modern``; ``source $STATE/env``) and
``/opt/flyimage-docker26`` (``FLYIMAGE_DOCKER26_PREFIX``). Starts its daemons on its own
sockets and roots, stops them and removes them afterwards. Not part of the test suite.

    python3 benchmarks/registry_cache.py [--packages "httpx pydantic rich"]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator
from unittest import mock

PREFIX = Path(os.environ.get("FLYIMAGE_DOCKER26_PREFIX", "/opt/flyimage-docker26"))
CLI = os.environ.get("PREFECT_FLYIMAGE_DOCKER_CLI", "docker")


@contextlib.contextmanager
def fresh_daemon(root: Path, base_tar: Path) -> Iterator[str]:
    """A Docker 26 daemon with an empty data root (containerd image store) and the base image."""
    root.mkdir(parents=True)
    (root / "daemon.json").write_text('{"features": {"containerd-snapshotter": true}}\n')
    host = f"unix://{root}/docker.sock"
    env = {**os.environ, "PATH": f"{PREFIX}/usr/bin:{PREFIX}/usr/sbin:{os.environ['PATH']}"}
    log = open(root / "dockerd.log", "w")
    proc = subprocess.Popen(
        [str(PREFIX / "usr/sbin/dockerd"), "--config-file", str(root / "daemon.json"), "-H", host,
         "--data-root", str(root / "data"), "--exec-root", str(root / "exec"), "--pidfile", str(root / "pid"),
         "--iptables=false", "--bridge=none"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        denv = {**os.environ, "DOCKER_HOST": host}
        for _ in range(120):
            if subprocess.run([CLI, "info"], env=denv, capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"fresh dockerd did not start; see {root}/dockerd.log")
        subprocess.run([CLI, "load", "-q", "-i", str(base_tar)], env=denv, check=True, capture_output=True)
        yield host
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["sh", "-c", f"grep ' {root}/' /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r umount -l"], check=False)
        log.close()


def deploy(project: Path, repository: str, host: str, cache: str) -> tuple[float, str]:
    """``ensure(push=True)`` on ``host``; ``cache``: PREFECT_FLYIMAGE_REGISTRY_CACHE."""
    from prefect_flyimage.pipeline import ensure
    from prefect_flyimage.plan import BuildPlan

    out = io.StringIO()
    with mock.patch.dict(os.environ, {"DOCKER_HOST": host, "PREFECT_FLYIMAGE_REGISTRY_CACHE": cache}):
        t0 = time.perf_counter()
        result = ensure(BuildPlan.from_dockerfile(project, repository), push=True, stream_progress_to=out)
        elapsed = time.perf_counter() - t0
    assert result.built and result.pushed, result
    return elapsed, out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packages", default="httpx pydantic rich")
    args = ap.parse_args()
    registry = os.environ["FLYIMAGE_REGISTRY_NOAUTH"]
    base = os.environ["FLYIMAGE_PYTHON_IMAGE"]
    main_host = os.environ["DOCKER_HOST"]
    repository = f"{registry}/bench-cache-{secrets.token_hex(4)}"
    work = Path(tempfile.mkdtemp(prefix="flyimage-bench-cache-", dir="/var/tmp"))
    try:
        project = work / "project"
        (project / "src").mkdir(parents=True)
        (project / "requirements.txt").write_text("\n".join(args.packages.split()) + "\n")
        for i in range(50):
            (project / "src" / f"m{i}.py").write_text(f"X = {i}\n")
        (project / "Dockerfile").write_text(
            f"FROM {base}\nCOPY requirements.txt /app/requirements.txt\n"
            "RUN python3 -m venv /venv && /venv/bin/pip install -q --disable-pip-version-check -r /app/requirements.txt\n"
            "COPY src /app/src\n"
        )
        base_tar = work / "base.tar"
        subprocess.run([CLI, "save", "-o", str(base_tar), base], env={**os.environ, "DOCKER_HOST": main_host}, check=True)
        cache_ref = f"{repository}-buildcache:cache"
        first, _ = deploy(project, repository, main_host, cache_ref)
        print(f"previous CI run (services daemon, exports the cache): {first:.1f}s")
        (project / "src" / "m7.py").write_text("X = 'changed'\n")
        with fresh_daemon(work / "d-nocache", base_tar) as host:
            without, _ = deploy(project, repository, host, "off")
        # another fresh runner deploys the same change (to a second repository, which
        # does not hold it yet) with the registry cache of the first deploy
        with fresh_daemon(work / "d-cache", base_tar) as host:
            with_cache, out = deploy(project, f"{repository}-b", host, cache_ref)
        cached_steps = out.count("CACHED")
        print(f"fresh runner, one file changed, no registry cache:   {without:.1f}s")
        print(f"fresh runner, one file changed, with registry cache: {with_cache:.1f}s ({cached_steps} steps CACHED)")
        print(f"ratio without/with: {without / with_cache:.2f}x (goal >= 3x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
