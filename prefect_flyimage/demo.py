"""The main job, end to end on this machine: deploy the example flow and run it once.

``python -m prefect_flyimage.demo`` (what ``scripts/demo.sh`` runs after starting the
services) does, with nothing to configure:

1. starts a local Prefect server (its default SQLite database, its own ``PREFECT_HOME``
   under the state dir) on a free loopback port, in the background;
2. creates a ``docker`` work pool whose worker pulls with a ``DockerRegistryCredentials``
   block for the local authenticated registry;
3. deploys ``flows/example`` with prefect-flyimage's ``DockerImage`` (Prefect's default
   Dockerfile, built from memory; built and pushed only if the registry lacks it);
4. deploys the same flow with Prefect's own ``DockerImage`` to another repository, timed,
   for comparison (Prefect builds and pushes every time);
5. runs a docker worker once (prefect-docker, in this process): it pulls the pushed
   image from the registry with the block's credentials and runs the flow in it with
   host networking;
6. prints the run's final state (Prefect's name, e.g. ``Completed``), the image
   reference, its digest and both deploy times; stops the server.

A second run finds the image in the registry: nothing is built or pushed.
Exit code 0 only when the flow run completed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

DEFAULT_PROJECT = Path(__file__).resolve().parent.parent / "flows" / "example"
ENTRYPOINT = "hello.py:hello"
SERVER_TIMEOUT = 120.0


@dataclass
class Timing:
    """Seconds one ``flow.deploy`` took, and the part of it spent in the image's build and push."""

    deploy: float
    image: float


@dataclass
class DemoResult:
    """What one demo run did (also what the test checks)."""

    state: str  #: the flow run's final state name, e.g. "Completed"
    reference: str
    digest: Optional[str]
    built: bool
    pushed: bool
    ours: Timing  #: flow.deploy with our DockerImage
    prefect: Optional[Timing]  #: flow.deploy with Prefect's DockerImage (None: skipped)
    flow_run_id: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_STARTED = time.monotonic()


def _say(message: str) -> None:
    print(f"[demo {time.monotonic() - _STARTED:5.1f}s] {message}", file=sys.stderr, flush=True)


def _stop_on_signal(signum: int, frame: Any) -> None:
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the server and worker are stopped on the way out.
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def prefect_server(home: Path, log_path: Path) -> Iterator[str]:
    """A ``prefect server start`` in the background (own session); yields the API URL.

    Stopped (its whole process group) on exit, whatever happens inside.
    """
    port = _free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
           "--no-services", "--no-ui", "--analytics-off"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        import prefect_docker.worker  # noqa: F401  (seconds of imports, while the server boots)
        import prefect.flows  # noqa: F401

        deadline = time.monotonic() + SERVER_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the Prefect server exited with {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not answer within {SERVER_TIMEOUT:.0f}s; see {log_path}")
            time.sleep(0.25)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _work_pool(pool: str, block_name: str, registry: str, username: str, password: str) -> None:
    """A ``docker`` pool whose jobs pull with the registry's credentials block (by reference)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect_docker.credentials import DockerRegistryCredentials
    from prefect_docker.worker import DockerWorker

    block_id = DockerRegistryCredentials(username=username, password=password, registry_url=registry).save(
        block_name, overwrite=True
    )
    template = DockerWorker.get_default_base_job_template()
    template["variables"]["properties"]["registry_credentials"]["default"] = {"$ref": {"block_document_id": str(block_id)}}

    async def create() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="docker", base_job_template=template), overwrite=True)

    run_coro_as_sync(create())


def _deploy(flow: Any, name: str, pool: str, image: Any) -> Timing:
    spent = [0.0]

    def timed(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            mark = time.monotonic()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.monotonic() - mark

        return call

    image.build, image.push = timed(image.build), timed(image.push)  # what flow.deploy calls
    started = time.monotonic()
    flow.deploy(
        name=name, work_pool_name=pool, image=image, build=True, push=True, print_next_steps=False,
        # host networking: the container reaches the server on 127.0.0.1; "Always": the
        # worker pulls the pushed image from the registry (with the pool's credentials);
        # auto_remove: no exited container is left behind.
        job_variables={"network_mode": "host", "image_pull_policy": "Always", "auto_remove": True},
    )
    return Timing(deploy=time.monotonic() - started, image=spent[0])


def _prefect_deploy_timed(project: Path, repository: str, pool: str, creds: Any, tmp: Path) -> Timing:
    """flow.deploy with Prefect's own DockerImage (copy of the project; docker login config)."""
    from prefect.docker import DockerImage as PrefectDockerImage
    from prefect.flows import load_flow_from_entrypoint

    from .engine import Engine

    copy = tmp / project.name
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("__pycache__", "Dockerfile"))
    config = tmp / "docker-config"
    config.mkdir()
    Engine().cli_login(creds, config_dir=str(config))  # Prefect pushes with the docker config's login
    saved = (os.getcwd(), os.environ.get("DOCKER_CONFIG"))
    os.chdir(copy)
    os.environ["DOCKER_CONFIG"] = str(config)
    try:
        flow = load_flow_from_entrypoint(str(copy / ENTRYPOINT))
        image = PrefectDockerImage(repository, pull=False, stream_progress_to=None)
        return _deploy(flow, "demo-prefect-dockerimage", pool, image)
    finally:
        os.chdir(saved[0])
        if saved[1] is None:
            os.environ.pop("DOCKER_CONFIG", None)
        else:
            os.environ["DOCKER_CONFIG"] = saved[1]


def _run_once(deployment: str, pool: str) -> tuple[str, str]:
    """Create a flow run and let one docker worker (in this process) run it; (state name, id)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect_docker.worker import DockerWorker

    flow_run = run_deployment(deployment, timeout=0)
    worker = DockerWorker(work_pool_name=pool, name="flyimage-demo-worker")
    run_coro_as_sync(worker.start(run_once=True, with_healthcheck=False))

    async def final() -> Any:
        async with get_client() as client:
            return await client.read_flow_run(flow_run.id)

    run = run_coro_as_sync(final())
    return run.state.name, str(run.id)


def run_demo(project: Path, registry: str, username: str, password: str, state_dir: Path, *,
             name: str = "prefect-flyimage-demo", compare: bool = True) -> DemoResult:
    """Start a server, deploy, run once; see the module docstring."""
    from .credentials import RegistryCredentials

    project = project.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    creds = RegistryCredentials(registry, username, password)
    home = state_dir / "prefect-home"
    with tempfile.TemporaryDirectory(prefix="flyimage-demo-") as tmp, \
            prefect_server(home, state_dir / "prefect-server.log") as api_url:
        _say(f"Prefect server at {api_url} (PREFECT_HOME {home})")
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # Only the API URL: the worker hands the settings it was given to the container.
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            from prefect.flows import load_flow_from_entrypoint

            from .docker_image import DockerImage

            pool = "flyimage-demo"
            _work_pool(pool, "flyimage-demo-registry", registry, username, password)
            saved_cwd = os.getcwd()
            os.chdir(project)  # flow.deploy records the entrypoint relative to here
            try:
                flow = load_flow_from_entrypoint(str(project / ENTRYPOINT))
                image = DockerImage(f"{registry}/{name}", dockerfile="auto", context=project, pull=False,
                                    stream_progress_to=sys.stderr, credentials=creds)
                ours = _deploy(flow, "demo", pool, image)
            finally:
                os.chdir(saved_cwd)
            result = image.result
            assert result is not None
            _say(f"deployed {flow.name}/demo with prefect-flyimage's DockerImage in {ours.deploy:.2f}s "
                 f"({'built' if result.built else 'nothing built'}, {'pushed' if result.pushed else 'nothing pushed'})")
            theirs = _prefect_deploy_timed(project, f"{registry}/{name}-prefect", pool, creds, Path(tmp)) if compare else None
            if theirs is not None:
                _say(f"deployed {flow.name}/demo-prefect-dockerimage with Prefect's DockerImage in {theirs.deploy:.2f}s")
            _say("running the deployment once with a docker worker")
            state, run_id = _run_once(f"{flow.name}/demo", pool)
    return DemoResult(state=state, reference=image.reference, digest=image.digest, built=result.built,
                      pushed=result.pushed, ours=ours, prefect=theirs, flow_run_id=run_id)


def main(argv: list[str] | None = None) -> int:
    """Deploy and run the example; print the state, the image and the timings. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m prefect_flyimage.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=DEFAULT_PROJECT, help="folder of the flow (build context)")
    parser.add_argument("--registry", default=os.environ.get("FLYIMAGE_REGISTRY", "127.0.0.1:5000"))
    parser.add_argument("--name", default="prefect-flyimage-demo", help="repository name in the registry")
    parser.add_argument("--no-compare", dest="compare", action="store_false",
                        help="skip the timed deploy with Prefect's own DockerImage")
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    username = os.environ.get("FLYIMAGE_REGISTRY_USER")
    password = os.environ.get("FLYIMAGE_REGISTRY_PASSWORD")
    if not username or not password:
        parser.error("FLYIMAGE_REGISTRY_USER and FLYIMAGE_REGISTRY_PASSWORD must be set (source the services' env)")
    state_dir = Path(os.environ.get("FLYIMAGE_STATE_DIR", "/var/tmp/prefect-flyimage")) / "demo"
    r = run_demo(args.project, args.registry, username, password, state_dir, name=args.name, compare=args.compare)
    what = "cached (nothing built or pushed)" if not r.built and not r.pushed else f"built={r.built} pushed={r.pushed}"
    _say("done; the Prefect server is stopped")
    print(f"flow run: {r.flow_run_id}")
    print(f"flow run state: {r.state}")
    print(f"image: {r.reference}")
    print(f"digest: {r.digest}")
    print(f"image status: {what}")
    print(f"deploy time (flow.deploy): prefect-flyimage's DockerImage {r.ours.deploy:.2f}s"
          + (f", Prefect's DockerImage {r.prefect.deploy:.2f}s" if r.prefect else ""))
    ratio = r.prefect.image / max(r.ours.image, 1e-3) if r.prefect else 0.0
    print(f"  of which image build and push: prefect-flyimage's {r.ours.image:.2f}s"
          + (f", Prefect's {r.prefect.image:.2f}s" if r.prefect else "")
          + (f" (ours {ratio:.0f}x faster)" if ratio >= 1.5 else ""))
    return 0 if r.state == "Completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
