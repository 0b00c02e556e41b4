"""Real build hosts for the distributed tests: extra dockerd daemons and a Dask cluster.

Each daemon has its own socket, data root, exec root and pidfile under
``/var/tmp/flyimage-dask-hosts/<run>/hN`` (no shared layer store) and the flags
``scripts/services.sh`` gives the shared daemon. The Dask scheduler and workers are
separate processes (``dask scheduler`` / ``dask worker``), each worker with its own
``DOCKER_HOST`` and the ``docker-build`` resource. Everything is stopped and removed
by the context managers.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import docker

ROOT = Path("/var/tmp/flyimage-dask-hosts")


@dataclass
class Daemon:
    name: str
    root: Path
    proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--iptables=false", "--bridge=none", "-H", self.url,
             "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "dockerd.pid")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()

    def wait(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"dockerd {self.name} exited: {(self.root / 'dockerd.log').read_text()[-2000:]}")
            if alive(self.url):
                return
            time.sleep(0.3)
        raise RuntimeError(f"dockerd {self.name} not answering at {self.url}")

    def kill(self) -> None:
        """Stop the daemon at once (the fault tests' crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        _kill_left_behind(self.root)
        for mount in reversed(Path("/proc/mounts").read_text().splitlines()):
            point = mount.split()[1]
            if point.startswith(str(self.root)):
                subprocess.run(["umount", "-l", point], check=False)


def _kill_left_behind(root: Path) -> None:
    """The containerd and shims this daemon started (their command lines name its roots)."""
    mine = str(root)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if mine in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
    time.sleep(0.5)


def alive(url: str) -> bool:
    try:
        client = docker.DockerClient(base_url=url, timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001
        return False


@contextlib.contextmanager
def daemons(n: int) -> Iterator[list[Daemon]]:
    run = ROOT / f"r{os.getpid()}-{secrets.token_hex(3)}"
    hosts = [Daemon(f"h{i + 1}", run / f"h{i + 1}") for i in range(n)]
    try:
        for d in hosts:
            d.start()
        for d in hosts:
            d.wait()
        yield hosts
    finally:
        for d in hosts:
            d.stop()
        shutil.rmtree(run, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DaskCluster:
    address: str
    scheduler: subprocess.Popen
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)  #: docker host -> worker process

    def kill_worker(self, host: str) -> None:
        proc = self.workers[host]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextlib.contextmanager
def dask_cluster(
    docker_hosts: list[str], env: dict[str, str], logdir: Path, builds_per_host: int = 1, preload: tuple[str, ...] = (),
) -> Iterator[DaskCluster]:
    """``dask scheduler`` and one ``dask worker`` per docker host, as separate processes
    (``builds_per_host`` threads and ``docker-build`` slots each; ``preload``: modules the
    workers import as they start)."""
    from distributed import Client

    logdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    base = {**os.environ, **env}

    def spawn(args: list[str], log: str, extra: dict[str, str]) -> subprocess.Popen:
        with open(logdir / log, "ab") as out:
            return subprocess.Popen(args, env={**base, **extra}, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    cluster = DaskCluster(address, spawn(
        ["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], "scheduler.log", {},
    ))
    try:
        for i, host in enumerate(docker_hosts):
            cluster.workers[host] = spawn(
                ["dask", "worker", address, "--nthreads", str(builds_per_host), "--nworkers", "1", "--no-dashboard",
                 "--name", f"build-h{i + 1}", "--resources", f"docker-build={builds_per_host}", "--host", "127.0.0.1",
                 *(arg for module in preload for arg in ("--preload", module))],
                f"worker-h{i + 1}.log", {"DOCKER_HOST": host},
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(len(docker_hosts), timeout=120)
        yield cluster
    finally:
        for proc in cluster.workers.values():
            _stop(proc)
        _stop(cluster.scheduler)
