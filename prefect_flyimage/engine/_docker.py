"""The docker-py shim: client construction, timeouts, transport errors, cutting a stream.

Everything here that leans on docker-py or urllib3 beyond their documented API sits in
this one module (tested in ``tests/unit/test_engine_shim.py``), so a docker-py upgrade
(pinned ``<8`` in ``pyproject.toml``) has one place to look at.

Timeouts (``$PREFECT_FLYIMAGE_DOCKER_TIMEOUT``, seconds, default :data:`DEFAULT_TIMEOUT`)
bound connecting to the daemon and every short call (inspect, tag, the distribution
check). Long streaming calls (build, push, pull) have no read timeout of their own:
docker-py sends them with ``timeout=None``; their total duration is bounded by the
caller's ``build_timeout``/``push_timeout``, enforced by :class:`StreamAborter`.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any, Callable, Optional

import docker
import docker.constants
import docker.errors
import requests.exceptions
import urllib3.exceptions

from .._args import env_seconds
from ..errors import DockerUnavailable

__all__ = [
    "DEFAULT_TIMEOUT",
    "TIMEOUT_ENV",
    "StreamAborter",
    "TRANSPORT_ERRORS",
    "Watchdog",
    "daemon_timeout",
    "docker_host",
    "new_client",
    "streaming_api",
]

#: Environment variable with the daemon timeout in seconds.
TIMEOUT_ENV = "PREFECT_FLYIMAGE_DOCKER_TIMEOUT"
#: Default seconds to connect to the daemon and for each short call: a daemon that
#: accepts connections but never answers is reported after this, not docker-py's 60 s.
DEFAULT_TIMEOUT = 10.0

#: Failures of the *transport* to the daemon: only these become DockerUnavailable.
#: (An AttributeError or a KeyError is a bug and must surface as one.)
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,  # refused, reset, DNS (and ReadTimeout's sibling ConnectTimeout)
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,  # connection dropped mid-stream
    urllib3.exceptions.TimeoutError,
    ConnectionError,  # ConnectionRefusedError, ConnectionResetError, BrokenPipeError
    TimeoutError,  # socket.timeout
)

# API version per daemon URL: negotiated once per process (docker-py's "auto" costs a
# GET /version on every client otherwise).
_VERSIONS: dict[str, str] = {}
_VERSIONS_LOCK = threading.Lock()


def daemon_timeout() -> float:
    """Seconds from ``$PREFECT_FLYIMAGE_DOCKER_TIMEOUT`` (default :data:`DEFAULT_TIMEOUT`)."""
    return env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT)


def docker_host() -> str:
    """The daemon address in use (for messages)."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _unavailable(exc: BaseException) -> DockerUnavailable:
    return DockerUnavailable(
        f"cannot reach the Docker daemon at {docker_host()}: {exc}. Start dockerd (scripts/services.sh up) "
        f"or point DOCKER_HOST at a running daemon (timeout {daemon_timeout():g}s, ${TIMEOUT_ENV})."
    )


def _env_kwargs() -> dict[str, Any]:
    return dict(docker.utils.kwargs_from_env())


def _negotiate(kwargs: dict[str, Any], seconds: float) -> str:
    """The daemon's API version (docker-py's "auto", on a client that is always closed)."""
    url = str(kwargs.get("base_url") or "unix:///var/run/docker.sock")
    if url.startswith("unix://") and not os.path.exists(url[len("unix://"):]):
        # Checked here: docker-py leaks the socket of a failed unix connect.
        raise FileNotFoundError(f"no socket at {url[len('unix://'):]}")
    probe = docker.APIClient(**kwargs, version=docker.constants.MINIMUM_DOCKER_API_VERSION, timeout=seconds)
    try:
        return str(probe.version(api_version=False)["ApiVersion"])
    finally:
        probe.close()


def new_client(timeout: Optional[float] = None) -> docker.DockerClient:
    """A docker-py client for the environment's daemon, with :func:`daemon_timeout`.

    The API version is negotiated once per process and daemon (docker-py's "auto"
    would ask on every client); no ``/_ping``: that request already proves the
    daemon answers.
    """
    seconds = timeout if timeout is not None else daemon_timeout()
    try:
        kwargs = _env_kwargs()
        key = str(kwargs.get("base_url") or "unix:///var/run/docker.sock")
        with _VERSIONS_LOCK:
            version = _VERSIONS.get(key)
        if version is None:
            version = _negotiate(kwargs, seconds)
            with _VERSIONS_LOCK:
                _VERSIONS[key] = version
        return docker.DockerClient(**kwargs, version=version, timeout=seconds)
    except (docker.errors.DockerException, FileNotFoundError, *TRANSPORT_ERRORS) as exc:
        raise _unavailable(exc) from None


def streaming_api(client: docker.DockerClient) -> docker.APIClient:
    """A dedicated low-level client for one long streaming call (build, push).

    Dedicated so that a timeout can cut its connection (the daemon then cancels the
    build or push) without disturbing other users of ``client``.
    """
    base = client.api
    kwargs: dict[str, Any]
    # docker-py keeps a unix socket's path only on its private adapter.
    adapter = getattr(base, "_custom_adapter", None)
    socket_path = getattr(adapter, "socket_path", None)
    if base.base_url == "http+docker://localhost" and socket_path:
        kwargs = {"base_url": "unix://" + socket_path}
    elif base.base_url.startswith("http://"):
        kwargs = {"base_url": base.base_url}
    else:
        kwargs = _env_kwargs()
    return docker.APIClient(**kwargs, version=base.api_version, timeout=base.timeout)


class StreamAborter:
    """Remembers the responses of a dedicated API client so a timeout can cut them.

    Uses requests' public response hooks (no patching of docker-py). ``api.close()``
    alone only drops idle pooled connections: a thread blocked reading a quiet build
    (``RUN sleep``) keeps waiting and the daemon finishes the build. Shutting the
    response's socket down ends the read at once and makes the daemon cancel.
    """

    def __init__(self, api: docker.APIClient) -> None:
        self._api = api
        self._responses: list[Any] = []
        api.hooks["response"].append(self._capture)

    def _capture(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        self._responses.append(response)
        return response

    def close(self) -> None:
        """Close every response seen (their connections with them) and the client."""
        for response in self._responses:
            response.close()
        self._api.close()

    def __call__(self) -> None:
        for response in self._responses:
            conn = getattr(response.raw, "connection", None)  # urllib3 2: the live connection
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed
        self._api.close()


class Watchdog:
    """Calls ``on_timeout`` after ``timeout`` seconds unless cancelled; remembers whether it fired."""

    def __init__(self, timeout: Optional[float], on_timeout: Callable[[], None]) -> None:
        self.fired = False
        self._timer: Optional[threading.Timer] = None
        if timeout:
            def fire() -> None:
                self.fired = True
                on_timeout()
            self._timer = threading.Timer(timeout, fire)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        """Stop the timer (no-op when it never started or already fired)."""
        if self._timer:
            self._timer.cancel()
