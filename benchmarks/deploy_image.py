"""Benchmark: Prefect's ``DockerImage`` vs ours, build + push of a deployment image, in one run.

One project (default 2,000 source files, 20 MiB, plus a ``.dockerignore`` that excludes
``data/`` with 50 MiB and ``**/*.pyc``) is deployed to a local registry by both
contestants, with the same Dockerfile::

    FROM <prefect stand-in | busybox>
    COPY . /opt/prefect/app
    RUN find /opt/prefect/app -type f | wc -l > /opt/prefect/file-count

Each contestant runs what a deploy script runs, timed from the constructor to the
end of ``push()``::

    prefect.docker.DockerImage(name, dockerfile="Dockerfile", pull=False, ...).build(); .push()
    prefect_flyimage.DockerImage(name, dockerfile="Dockerfile", pull=False, ...).build(); .push()

for three scenarios, in this order, in a fresh repository per contestant and repeat:

(a) first deploy: a new project (a fresh salt file), our stat cache empty;
(b) unchanged redeploy: Prefect stamps a new timestamp tag (its default, what users
    get), so it rebuilds (all layers cached) and pushes (all layers present) again;
    ours computes the same content tag and finds the image in the daemon and registry;
(c) one source file changed: both build and push one new COPY layer.

Fairness: both get the same build kwargs (``pull=False``, ``network_mode="host"``,
because this daemon has no default bridge), no progress output, and the same registry
(logged in through a temporary ``DOCKER_CONFIG`` with ``Engine().cli_login``, which is
where Prefect's push takes credentials from; ours uses the same docker config). They
share the daemon and its layer cache: every (a) starts from a project salt no build
has seen, so neither contestant reuses the other's COPY layer; only the base image's
layers are common, and those are pushed once to the registry before timing so
neither contestant pays for uploading them. Contestants alternate who goes first in
each repeat. Differences that are the products' own are kept: ours hashes the
context (cold in (a)), checks the registry and re-reads the digest after a push,
and removes intermediate containers (docker-py's ``rm=True``); Prefect's build leaves
the RUN and LABEL steps' stopped containers behind (docker-py's default ``rm=False``;
``--prefect-rm`` gives Prefect ``rm=True`` too, to compare like with like).

Results are medians over ``--repeats`` runs and ratios Prefect time / our time
(> 1: ours faster). Nothing asserts; aims are printed next to the figures.
Everything made is removed afterwards: local tags and images, Prefect's leftover
containers, the registry manifests (their blobs stay until the registry's garbage
collection), temp dirs.

Usage (services up: ``source /var/tmp/prefect-flyimage/env``)::

    python3 benchmarks/deploy_image.py [--repeats 3] [--files 2000] [--mib 20] [--ignored-mib 50]
        [--base prefect|busybox] [--registry auth|noauth|HOST:PORT] [--prefect-rm] [--scenarios a|ab|abc]
        [--json out.json]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker.errors  # noqa: E402
import httpx  # noqa: E402
from prefect.docker import DockerImage as PrefectDockerImage  # noqa: E402

from prefect_flyimage import DockerImage as FlyDockerImage  # noqa: E402
from prefect_flyimage import Engine, RegistryCredentials  # noqa: E402
from prefect_flyimage.names import ImageRef  # noqa: E402
from prefect_flyimage.registry import RegistryClient  # noqa: E402

SCENARIOS = {
    "a": "(a) first deploy",
    "b": "(b) unchanged redeploy",
    "c": "(c) one file changed",
}
AIMS = {"a": 1.0, "b": 40.0, "c": 1.0}  # Prefect / ours at least this
CONTESTANTS = ("prefect", "ours")
BUILD_KWARGS = {"pull": False, "network_mode": "host"}

WORDS = (
    "def class return import from self None True False if else elif for while in not and or "
    "try except finally with as yield lambda async await pass raise assert global print len "
    "range dict list tuple set str int float value result items key data path config flow task "
    "deployment image registry build push state logger context name tag digest"
).split()


# ---- the project -------------------------------------------------------------------------
def make_project(root: Path, files: int, total: int, ignored: int, base_image: str) -> list[str]:
    """Write the project; return the relative paths of its source files."""
    rng = random.Random(1234)
    # Code-like text (compresses about like source code, which matters for the push).
    pool = "\n".join(
        "    " * rng.randint(0, 3) + " ".join(rng.choices(WORDS, k=rng.randint(3, 12))) for _ in range(60_000)
    ).encode()
    size = max(64, total // files)
    sources = []
    for i in range(files):
        rel = f"src/pkg{i // 100:03d}/mod{i:05d}.py"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        start = rng.randrange(0, len(pool) - size)
        path.write_bytes(f"# module {i}\n".encode() + pool[start:start + size])
        sources.append(rel)
        if i % 10 == 0:  # some bytecode, excluded by **/*.pyc
            pyc = path.parent / "__pycache__" / f"mod{i:05d}.cpython-311.pyc"
            pyc.parent.mkdir(exist_ok=True)
            pyc.write_bytes(os.urandom(size))
    data = root / "data"
    data.mkdir()
    chunk = 5 << 20
    for j in range(max(1, ignored // chunk)):
        (data / f"blob{j:02d}.bin").write_bytes(os.urandom(min(chunk, ignored)))
    (root / ".dockerignore").write_text("data\n**/*.pyc\n")
    (root / "salt.txt").write_text("salt\n")
    (root / "Dockerfile").write_text(
        f"FROM {base_image}\n"
        "COPY . /opt/prefect/app\n"
        "RUN find /opt/prefect/app -type f | wc -l > /opt/prefect/file-count\n"
    )
    # Back-date everything: a project that has existed for a while (files written in the
    # last 2 s are never trusted by our stat cache).
    old = time.time() - 3600
    for dirpath, dirnames, names in os.walk(root):
        for n in names + dirnames:
            os.utime(os.path.join(dirpath, n), (old, old))
    os.utime(root, (old, old))
    return sources


def rewrite_in_place(path: Path, text: str) -> None:
    """Change a file's contents without touching its folder (an editor saving a file)."""
    with open(path, "r+b") as fh:
        fh.seek(0)
        fh.write(text.encode())
        fh.truncate()


# ---- registry helpers --------------------------------------------------------------------
class Registry:
    """Deletes what the benchmark pushed: tags and digests through our registry client, then
    the manifests with a plain DELETE (the client has none: the product never deletes)."""

    def __init__(self, host: str, credentials: Optional[RegistryCredentials]) -> None:
        self.host = host
        self.credentials = credentials

    def delete_repository(self, repo: str) -> int:
        """Delete every manifest of ``repo`` (path without the host); return how many."""
        with RegistryClient(self.host, self.credentials, timeout=30) as client:
            digests = {client.manifest_digest(f"{self.host}/{repo}:{tag}") for tag in client.tags(repo)} - {None}
        auth = (self.credentials.username, self.credentials.secret) if self.credentials else None
        return sum(httpx.delete(f"http://{self.host}/v2/{repo}/manifests/{digest}", auth=auth, timeout=30).status_code == 202
                   for digest in digests)


# ---- one deploy ----------------------------------------------------------------------------
def deploy(contestant: str, name: str, project: Path, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Construct, build and push; return times and what happened."""
    cls: Callable[..., Any] = PrefectDockerImage if contestant == "prefect" else FlyDockerImage
    t0 = time.perf_counter()
    image = cls(name, dockerfile="Dockerfile", stream_progress_to=None, context=project, **BUILD_KWARGS, **(extra or {}))
    image.build()
    t1 = time.perf_counter()
    image.push()
    t2 = time.perf_counter()
    out: dict[str, Any] = {"total": t2 - t0, "build": t1 - t0, "push": t2 - t1, "reference": image.reference}
    if contestant == "ours":
        result = image.result
        out.update(built=result.built, pushed=result.pushed, digest=result.digest, timings=result.timings)
    return out


def check_run(runs: dict[str, dict[str, Any]], changed_marker: str, engine: Engine, changed_rel: str) -> list[str]:
    """What went wrong in one contestant's (a)-(b)-(c) sequence (empty: all as expected)."""
    problems = []
    ours = "built" in runs["a"]
    if ours:
        expect = {"a": (True, True), "b": (False, False), "c": (True, True)}
        for s, (built, pushed) in expect.items():
            if s not in runs:
                continue
            got = (runs[s]["built"], runs[s]["pushed"])
            if got != (built, pushed):
                problems.append(f"{s}: built/pushed {got}, expected {(built, pushed)}")
        if "b" in runs and runs["b"]["reference"] != runs["a"]["reference"]:
            problems.append("b: reference differs from a's although nothing changed")
        if "c" in runs and runs["c"]["reference"] == runs["a"]["reference"]:
            problems.append("c: reference equals a's although a file changed")
    if "c" not in runs:
        return problems
    # The changed file must be in (c)'s image.
    code, output = engine.run(
        runs["c"]["reference"], ["tail", "-n", "1", f"/opt/prefect/app/{changed_rel}"], timeout=120
    )
    if code != 0 or changed_marker not in output:
        problems.append(f"c: image does not hold the changed file ({code}: {output.strip()[-200:]})")
    return problems


# ---- cleanup ----------------------------------------------------------------------------
def image_chain(engine: Engine, ref: str) -> list[str]:
    """Ids of ``ref``'s image and its parents (the classic builder's intermediate images)."""
    ids = []
    info = engine.local_image(ref)
    while info:
        ids.append(info.id)
        info = engine.local_image(info.parent) if info.parent else None
    return ids


def cleanup(engine: Engine, registry: Registry, repos: list[str], keep_ids: set[str]) -> None:
    # Its own client with a long timeout: removing a 1 GiB image on a loaded daemon takes
    # longer than the engine's default API timeout.
    api = docker.APIClient(**docker.utils.kwargs_from_env(), version=engine.client.api.api_version, timeout=600)
    ours: set[str] = set()
    refs = []
    for repo in repos:
        for tag in engine.list_tags(repo):
            ref = f"{repo}:{tag}"
            refs.append(ref)
            ours.update(i for i in image_chain(engine, ref) if i not in keep_ids)
    # Stopped containers that builds left behind (Prefect's RUN steps) on our images.
    for container in api.containers(all=True):
        if container.get("ImageID") in ours:
            try:
                api.remove_container(container["Id"], force=True)
            except (docker.errors.APIError, OSError) as exc:
                print(f"cleanup: container {container['Id'][:12]}: {exc}", file=sys.stderr)
    for ref in refs:
        try:
            api.remove_image(ref)  # noprune=False: untagged parents go too
        except docker.errors.APIError as exc:
            print(f"cleanup: {ref}: {exc}", file=sys.stderr)
    for repo in repos:
        registry.delete_repository(ImageRef.parse(repo).repository)


# ---- main --------------------------------------------------------------------------------
def fmt_ratio(x: float) -> str:
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each scenario per contestant (default 3)")
    ap.add_argument("--files", type=int, default=2000, help="source files in the project (default 2000)")
    ap.add_argument("--mib", type=float, default=20, help="MiB of source files (default 20)")
    ap.add_argument("--ignored-mib", type=float, default=50, help="MiB in data/, excluded by .dockerignore (default 50)")
    ap.add_argument("--base", choices=("prefect", "busybox"), default="prefect",
                    help="FROM image: $FLYIMAGE_PREFECT_IMAGE (default) or $FLYIMAGE_BUSYBOX_IMAGE")
    ap.add_argument("--registry", default="auth",
                    help="auth ($FLYIMAGE_REGISTRY, logged in via a temp DOCKER_CONFIG; default), "
                         "noauth ($FLYIMAGE_REGISTRY_NOAUTH) or HOST:PORT (no auth)")
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where the temporary project goes")
    ap.add_argument("--prefect-rm", action="store_true",
                    help="pass rm=True, forcerm=True to Prefect's build too (ours always removes intermediate "
                         "containers; Prefect by default leaves them), to compare like with like")
    ap.add_argument("--ours-backend", choices=("auto", "docker-py", "buildkit"), default="auto",
                    help="our build backend (default auto: the classic builder unless the Dockerfile needs BuildKit)")
    ap.add_argument("--scenarios", default="abc", choices=("a", "ab", "abc"),
                    help="which scenarios to run, in order (default abc; ab skips the one-file change, "
                         "which on a 1 GiB project is another two 1 GiB pushes)")
    ap.add_argument("--json", type=Path, help="also write every measurement to this file")
    args = ap.parse_args()
    scenarios = {s: SCENARIOS[s] for s in args.scenarios}

    base_image = os.environ.get(
        "FLYIMAGE_PREFECT_IMAGE" if args.base == "prefect" else "FLYIMAGE_BUSYBOX_IMAGE",
        "prefecthq/prefect:3.8.8-python3.11" if args.base == "prefect" else "flyimage/busybox:latest",
    )
    creds: Optional[RegistryCredentials] = None
    if args.registry == "auth":
        host = os.environ.get("FLYIMAGE_REGISTRY", "127.0.0.1:5000")
        creds = RegistryCredentials(host, os.environ["FLYIMAGE_REGISTRY_USER"], os.environ["FLYIMAGE_REGISTRY_PASSWORD"])
    elif args.registry == "noauth":
        host = os.environ.get("FLYIMAGE_REGISTRY_NOAUTH", "127.0.0.1:5001")
    else:
        host = args.registry
    registry = Registry(host, creds)

    run = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix=f"flyimage-bench-deploy-{run}-", dir=args.dir))
    project, cache, docker_config = work / "project", work / "stat-cache", work / "docker-config"
    project.mkdir()
    docker_config.mkdir()
    saved_env = {k: os.environ.get(k) for k in ("DOCKER_CONFIG", "PREFECT_FLYIMAGE_CACHE_DIR")}
    os.environ["DOCKER_CONFIG"] = str(docker_config)  # read by every docker-py client made from now on

    engine = Engine()
    if engine.local_image(base_image) is None:
        raise SystemExit(f"base image {base_image} is not in the daemon (scripts/services.sh up)")
    keep_ids = set(image_chain(engine, base_image))
    base_repo = f"{host}/flyimage-bench-{run}-base"
    repos = [base_repo] + [f"{host}/flyimage-bench-{run}-{c}-r{r}" for r in range(args.repeats) for c in CONTESTANTS]
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {c: {s: [] for s in SCENARIOS} for c in CONTESTANTS}
    problems: list[str] = []
    started = time.time()
    try:
        if creds:
            engine.cli_login(creds, config_dir=str(docker_config))
            engine.close()
            engine = Engine()  # a client that has read the new docker config
        print(f"project: {args.files} files, {args.mib:g} MiB + data/ {args.ignored_mib:g} MiB ignored, at {project}")
        sources = make_project(project, args.files, int(args.mib * (1 << 20)), int(args.ignored_mib * (1 << 20)), base_image)
        print(f"base image {base_image}; registry {host} ({'auth, docker login' if creds else 'no auth'}); "
              f"{args.repeats} repeat(s); {os.cpu_count()} cores; docker {engine.client.version().get('Version')}; "
              f"load average {os.getloadavg()[0]:.2f}")
        if args.prefect_rm:
            print("Prefect's build gets rm=True, forcerm=True (--prefect-rm)")

        # Put the base image's layers in the registry once, so neither contestant's first
        # push pays for them (both then mount/skip them the same way).
        engine.tag(base_image, f"{base_repo}:warm")
        engine.push(f"{base_repo}:warm")
        # Load both classes' settings and modules before any timing.
        PrefectDockerImage(f"{host}/warmup", dockerfile="Dockerfile", stream_progress_to=None, context=project)
        FlyDockerImage(f"{host}/warmup", tag="warm", dockerfile="Dockerfile", stream_progress_to=None, context=project)

        rng = random.Random(run)
        for r in range(args.repeats):
            order = CONTESTANTS if r % 2 == 0 else CONTESTANTS[::-1]
            for contestant in order:
                name = f"{host}/flyimage-bench-{run}-{contestant}-r{r}"
                runs: dict[str, dict[str, Any]] = {}
                # (a) a project no build has seen, our stat cache empty.
                rewrite_in_place(project / "salt.txt", f"{run} {contestant} {r} {uuid.uuid4()}\n")
                shutil.rmtree(cache, ignore_errors=True)
                os.environ["PREFECT_FLYIMAGE_CACHE_DIR"] = str(cache)
                extra = {"rm": True, "forcerm": True} if args.prefect_rm and contestant == "prefect" else None
                if contestant == "ours" and args.ours_backend != "auto":
                    extra = {"build_backend": args.ours_backend}
                runs["a"] = deploy(contestant, name, project, extra)
                # (b) nothing changed.
                if "b" in scenarios:
                    runs["b"] = deploy(contestant, name, project, extra)
                # (c) one source file edited.
                changed = rng.choice(sources)
                marker = f"# edited {uuid.uuid4().hex}"
                if "c" in scenarios:
                    path = project / changed
                    rewrite_in_place(path, path.read_text() + f"\n{marker}\n")
                    runs["c"] = deploy(contestant, name, project, extra)
                problems += [f"{contestant} r{r} {p}" for p in check_run(runs, marker, engine, changed)]
                for s in scenarios:
                    samples[contestant][s].append(runs[s])
                print(f"  repeat {r + 1} {contestant:7s} " + "  ".join(
                    f"{s}: {runs[s]['total']:6.2f} s" for s in scenarios), flush=True)
    finally:
        print("cleaning up ...", flush=True)
        try:
            cleanup(engine, registry, repos, keep_ids)
        finally:
            engine.close()
            shutil.rmtree(work, ignore_errors=True)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    med = {c: {s: statistics.median(x["total"] for x in samples[c][s]) for s in scenarios} for c in CONTESTANTS}
    print()
    print(f"{'scenario':26s} {'Prefect':>10s} {'ours':>10s} {'Prefect/ours':>13s}  aim")
    for s, label in scenarios.items():
        ratio = med["prefect"][s] / med["ours"][s]
        aim = f">= {AIMS[s]:g}x" + ("" if ratio >= AIMS[s] else "  (missed)")
        print(f"{label:26s} {med['prefect'][s]:8.3f} s {med['ours'][s]:8.3f} s {fmt_ratio(ratio):>13s}  {aim}")
    print("(medians over", args.repeats, "repeat(s); times are constructor + build() + push())")
    print()
    print("build / push split (medians, s):")
    for s, label in scenarios.items():
        parts = []
        for c in CONTESTANTS:
            b = statistics.median(x["build"] for x in samples[c][s])
            p = statistics.median(x["push"] for x in samples[c][s])
            parts.append(f"{c} {b:6.3f} / {p:6.3f}")
        print(f"  {label:26s} " + "   ".join(parts))
    print("ours, pipeline timings of push() (medians, s):")
    for s, label in scenarios.items():
        keys = sorted({k for x in samples["ours"][s] for k in x["timings"]})
        vals = {k: statistics.median(x["timings"].get(k, 0.0) for x in samples["ours"][s]) for k in keys}
        print(f"  {label:26s} " + " ".join(f"{k}={v:.3f}" for k, v in vals.items()))
    print(f"wall time {time.time() - started:.0f} s; load average at the end {os.getloadavg()[0]:.2f}")
    if problems:
        print("\nPROBLEMS:\n  " + "\n  ".join(problems))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "medians": med,
                                         "samples": samples, "problems": problems}, indent=1, default=str))
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
