"""Build hosts on a Dask cluster: one Dask worker per Docker host.

A build host is a Docker daemon; the Dask worker bound to it runs with that daemon's
``DOCKER_HOST`` in its environment (the :class:`~prefect_flyimage.engine.Engine` a task
makes reads it) and offers the worker resource ``docker-build``, so image tasks go only
to workers that own a daemon, ``builds-per-host`` at a time. Hosts share nothing but the
registry: a child built on another host than its parent pulls the parent by digest.

Without a scheduler address a local cluster is started: one worker process (a Nanny)
per host, forked from a server process that imported the image tasks once (where the
platform has ``forkserver``), else spawned and importing them as it starts
(:func:`dask_setup`, the preload a cluster of your own takes as ``dask worker --preload
prefect_flyimage.distributed``); :meth:`BuildCluster.start` lets them start while the
caller scans. With an address, the
workers are found on the cluster and asked for their ``DOCKER_HOST``; ``docker_hosts``
then selects among them.
"""

from __future__ import annotations

__all__ = ["BUILD_RESOURCE", "BuildCluster", "dask_setup", "future_result", "host_alive", "parse_docker_hosts", "worker_docker_host"]

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterable, Optional, Sequence

from .errors import InvalidArgumentError

log = logging.getLogger("prefect_flyimage.distributed")

#: Dask worker resource a worker bound to a Docker daemon offers (its value: builds at once).
BUILD_RESOURCE = "docker-build"
_DEFAULT_HOST = "unix:///var/run/docker.sock"
#: What a build worker runs: imported as it starts (:func:`dask_setup`), or once by the
#: local cluster's fork server (:func:`_worker_start_method`). The rest are otherwise
#: imported by the first image a worker runs (Prefect's engines, ~90 modules, ~0.5 s).
_TASK_MODULES = (
    "prefect_flyimage.chain.flows", "prefect_flyimage.ensure_many",
    "prefect.task_engine", "prefect.flow_engine", "prefect_dask.task_runners", "anyio._backends._asyncio",
)
_START_METHOD = "distributed.worker.multiprocessing-method"


def parse_docker_hosts(text: Optional[str | Sequence[str]]) -> list[str]:
    """``"H1,H2"`` (or a list) as a list of distinct Docker host URLs; ``None``/empty: ``[]``."""
    items = text.split(",") if isinstance(text, str) else list(text or [])
    hosts: list[str] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if "://" not in item:
            raise InvalidArgumentError("docker_hosts", f"{item!r} is not a URL (unix:///path, tcp://host:port, ssh://host)")
        if item not in hosts:
            hosts.append(item)
    return hosts


def worker_docker_host() -> str:
    """The Docker host of the process (a worker's own ``DOCKER_HOST``)."""
    return os.environ.get("DOCKER_HOST") or _DEFAULT_HOST


def _identity(dask_worker: Any) -> tuple[str, float]:
    """A worker's Docker host and its ``docker-build`` slots (run on the worker)."""
    return worker_docker_host(), float(dask_worker.state.total_resources.get(BUILD_RESOURCE, 0))


def future_result(future: Any) -> Any:
    """Wait for a Prefect future; its task's return value, or what ended it (never raises).

    A task that never ran on a worker (its submission or unpickling failed there) leaves
    no final state with Prefect: Dask's exception is returned instead of Prefect's
    ``UnfinishedRun`` for a state still pending.
    """
    future.wait()
    try:
        return future.state.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - UnfinishedRun: the worker never reported a state
        wrapped = getattr(future, "wrapped_future", None)
        try:
            return (wrapped.exception(timeout=0) if wrapped is not None else None) or exc
        except Exception:  # noqa: BLE001 - not a Dask future, or no exception of its own
            return exc


def host_alive(host: str, timeout: float = 5.0) -> bool:
    """True when the daemon at ``host`` answers a ping within ``timeout`` seconds."""
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=timeout)
    except Exception:  # noqa: BLE001 - an unusable URL is a dead host
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


class BuildCluster:
    """A Dask cluster of build hosts and a Prefect ``DaskTaskRunner`` on it (a context manager).

    Args:
        docker_hosts: Docker host URLs (default: the one ``DOCKER_HOST``). With
            ``dask_address``, only the workers bound to these hosts are used.
        dask_address: a running scheduler (``tcp://host:8786``); ``None`` starts a local
            cluster with one worker process per host.
        builds_per_host: images a host builds at once (local cluster only; a remote
            worker's ``--resources docker-build=N`` says it).
    """

    def __init__(
        self,
        docker_hosts: Optional[str | Sequence[str]] = None,
        dask_address: Optional[str] = None,
        builds_per_host: int = 1,
    ) -> None:
        self.docker_hosts = parse_docker_hosts(docker_hosts)
        self.dask_address = dask_address or None
        if builds_per_host < 1:
            raise InvalidArgumentError("builds_per_host", f"must be at least 1, not {builds_per_host!r}")
        if self.dask_address and builds_per_host != 1:  # silently ignored otherwise
            raise InvalidArgumentError(
                "builds_per_host", "applies to a local cluster only; a remote worker's --resources docker-build=N says it"
            )
        self.builds_per_host = builds_per_host
        self.hosts: dict[str, str] = {}  #: worker address -> its Docker host
        self._slots: dict[str, int] = {}  #: worker address -> its docker-build slots
        self.dead_hosts: set[str] = set()
        self._hosts_stale = False  #: a host died since the workers were last asked for their hosts
        self._cluster: Any = None
        self._starting: Optional[Future[Any]] = None  #: the local cluster starting in the background
        self.runner: Any = None

    # ---- lifecycle ------------------------------------------------------------------
    def start(self) -> "BuildCluster":
        """Start the local cluster's worker processes in the background, so they start (and
        import the image tasks) while the caller scans the tree; entering waits for them.
        Nothing to start with ``dask_address``. Exit (or leave a ``with``) to stop them."""
        if self.dask_address is None and self._cluster is None and self._starting is None:
            hosts = self.docker_hosts or [worker_docker_host()]
            pool = ThreadPoolExecutor(1, thread_name_prefix="flyimage-cluster")
            self._starting = pool.submit(self._local_cluster, hosts)
            pool.shutdown(wait=False)
        return self

    def __enter__(self) -> "BuildCluster":
        from prefect_dask import DaskTaskRunner

        address = self.dask_address
        try:
            if address is None:
                starting, self._starting = self._starting, None
                self._cluster = starting.result() if starting is not None else self._local_cluster(self.docker_hosts or [worker_docker_host()])
                address = self._cluster.scheduler_address
            self.runner = DaskTaskRunner(address=address)
            self.runner.__enter__()
            self.refresh_hosts(wait=len(self.docker_hosts) if self._cluster is not None else 1)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        """Stop what was started: the runner, and the local cluster (also one started but never entered)."""
        runner, self.runner = self.runner, None
        cluster, self._cluster = self._cluster, None
        starting, self._starting = self._starting, None
        try:
            if runner is not None:
                runner.__exit__(None, None, None)
        finally:
            if cluster is None and starting is not None:
                try:
                    cluster = starting.result()
                except Exception:  # noqa: BLE001 - it never started: nothing to stop
                    cluster = None
            if cluster is not None:
                cluster.close()

    def _local_cluster(self, hosts: list[str]) -> Any:
        import dask
        from distributed import Nanny, Scheduler, SpecCluster

        method = _worker_start_method()
        workers = {
            f"build-host-{i}": {
                "cls": Nanny,
                "options": {
                    "nthreads": self.builds_per_host,
                    "host": "127.0.0.1",
                    # A forked worker has the fork server's environment from when it started:
                    # it gets the caller's as it is now, as a spawned one would.
                    "env": {**os.environ, "DOCKER_HOST": host},
                    "resources": {BUILD_RESOURCE: self.builds_per_host},
                    # the image tasks (and Prefect) imported as the worker starts, not on its first image
                    "preload": [__name__],
                    "silence_logs": logging.WARNING,  # as LocalCluster's workers: no INFO chatter
                },
            }
            for i, host in enumerate(hosts)
        }
        scheduler = {"cls": Scheduler, "options": {"dashboard": False, "host": "127.0.0.1"}}
        with dask.config.set({_START_METHOD: method}):  # read as each Nanny starts its process
            return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.WARNING)

    @property
    def client(self) -> Any:
        return self.runner.client

    # ---- hosts ----------------------------------------------------------------------
    def refresh_hosts(self, wait: int = 0) -> dict[str, str]:
        """Ask the build workers for their ``DOCKER_HOST`` (waiting for ``wait`` of them)."""
        if wait:
            self.client.wait_for_workers(wait, timeout=120)
        identities = self.client.run(_identity)
        found = {a: host for a, (host, slots) in identities.items() if slots}
        if not found:
            raise InvalidArgumentError(
                "dask_address", f"no Dask worker of {self.dask_address or 'the local cluster'} offers the resource "
                f"{BUILD_RESOURCE!r} (start build workers with --resources {BUILD_RESOURCE}=1 and DOCKER_HOST set)"
            )
        hosts = {a: h for a, h in found.items() if not self.docker_hosts or h in self.docker_hosts}
        if not hosts:
            raise InvalidArgumentError(
                "docker_hosts", f"no Dask worker is bound to the docker hosts {','.join(self.docker_hosts)} (workers have {sorted(set(found.values()))})"
            )
        self.hosts = hosts
        self._slots = {a: int(identities[a][1]) for a in hosts}
        return hosts

    @property
    def slots(self) -> int:
        """Images the live hosts build at once (their workers' ``docker-build`` slots)."""
        return sum(n for a, n in self._slots.items() if self.hosts.get(a) not in self.dead_hosts)

    def live_hosts(self) -> list[str]:
        return sorted(set(self.hosts.values()) - self.dead_hosts)

    def mark_dead(self, host: str) -> None:
        """Stop sending images to ``host`` (its daemon stopped answering)."""
        self.dead_hosts.add(host)
        self._hosts_stale = True
        log.warning("docker host %s is not answering; its images go to the other hosts", host)

    # ---- submitting -----------------------------------------------------------------
    def submit(self, task: Any, parameters: dict[str, Any], wait_for: Iterable[Any] = (), priority: int = 0) -> Any:
        """Submit a Prefect task to a build worker (one of a live host when some host died).

        ``priority``: Dask runs queued tasks with a higher one first (a tree gives each
        image the length of its longest chain of descendants, so the critical path leads).
        """
        import dask

        annotations: dict[str, Any] = {"resources": {BUILD_RESOURCE: 1}}
        if priority:
            annotations["priority"] = priority
        if self.dead_hosts or self.docker_hosts:
            if self._hosts_stale:  # asked again only after a host died, not per image (a round trip to every worker)
                try:
                    self.refresh_hosts()
                    self._hosts_stale = False
                except Exception:  # noqa: BLE001 - e.g. a worker dying right now
                    pass  # keep the last known workers; the submission fails on its own if none is left
            workers = [a for a, h in self.hosts.items() if h not in self.dead_hosts]
            if not workers:
                raise InvalidArgumentError("docker_hosts", f"every docker host is down: {', '.join(sorted(self.dead_hosts))}")
            annotations.update(workers=workers, allow_other_workers=False)
        with dask.annotate(**annotations):
            return self.runner.submit(task, parameters, wait_for=list(wait_for) or None)


def _worker_start_method() -> str:
    """How the local cluster starts its worker processes: ``forkserver`` where the platform
    has it (unless Dask is configured otherwise than its default ``spawn``), the server
    importing the image tasks and Prefect (~2 s of CPU) once for every worker. Measured
    with 3 workers: start 2.1 s instead of 6.4 s spawned, a second cluster in the same
    process 0.2 s; stop 0.05 s instead of 1.3 s."""
    import multiprocessing

    import dask

    configured = dask.config.get(_START_METHOD)
    if configured != "spawn" or "forkserver" not in multiprocessing.get_all_start_methods():
        return configured
    from distributed.utils import get_mp_context

    with dask.config.set({_START_METHOD: "forkserver"}):
        # Dask sets its own preload list on first use; ours replaces it (effective until the
        # server starts, with the first worker; later clusters reuse the server).
        get_mp_context().set_forkserver_preload(["distributed", *_TASK_MODULES])
    return "forkserver"


def dask_setup(worker: Any) -> None:
    """Dask's preload hook: ``dask worker --preload prefect_flyimage.distributed`` imports
    the image tasks (and Prefect, ~2 s of CPU) as the worker starts, not on its first image."""
    import importlib

    for module in _TASK_MODULES:
        importlib.import_module(module)
