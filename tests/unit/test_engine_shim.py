"""The docker-py shim: daemon timeouts, which errors mean "daemon unavailable", stream aborts."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from prefect_flyimage.engine import DEFAULT_TIMEOUT, TIMEOUT_ENV, Engine, daemon_timeout, docker_client
from prefect_flyimage.engine._docker import TRANSPORT_ERRORS
from prefect_flyimage.engine._engine import _transport
from prefect_flyimage.errors import DockerUnavailable


@pytest.fixture
def silent_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A unix socket that accepts connections and never answers (a hung dockerd)."""
    path = tmp_path / "hung.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)  # hold it open, say nothing
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    yield accepted
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    server.close()


def test_timeout_from_the_environment(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert daemon_timeout() == DEFAULT_TIMEOUT
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    assert daemon_timeout() == 2.5
    for bad in ("soon", "0", "-1"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=TIMEOUT_ENV):
            daemon_timeout()


def test_a_daemon_that_never_answers_is_unavailable_after_the_timeout(silent_daemon, monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    outcome: list[BaseException] = []

    def probe() -> None:
        try:
            with Engine() as engine:
                engine.local_image("busybox:latest")
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(60)  # a guard against hanging the suite, not a performance claim
    assert not thread.is_alive(), "the engine kept waiting for a daemon that never answers"
    assert silent_daemon, "the engine never connected"
    assert len(outcome) == 1 and isinstance(outcome[0], DockerUnavailable)
    assert "hung.sock" in str(outcome[0]) and TIMEOUT_ENV in str(outcome[0])


def test_docker_client_reports_a_missing_daemon(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/absent.sock")
    with pytest.raises(DockerUnavailable, match="absent.sock"):
        with docker_client():
            pass


@pytest.mark.parametrize("error", [ConnectionRefusedError(), ConnectionResetError(), TimeoutError()])
def test_transport_errors_become_docker_unavailable(error):
    assert isinstance(error, TRANSPORT_ERRORS)
    with pytest.raises(DockerUnavailable, match="lost the Docker daemon while testing"):
        with _transport("testing"):
            raise error


@pytest.mark.parametrize("error", [AttributeError("bug"), KeyError("Id"), ValueError("bad")])
def test_bugs_are_not_outages(error):
    with pytest.raises(type(error)):
        with _transport("testing"):
            raise error


def test_an_engine_never_asked_never_connects():
    engine = Engine()
    engine.close()
    assert not engine.connected


def test_streaming_api_is_a_dedicated_client_on_the_same_socket(tmp_path):
    import docker

    from prefect_flyimage.engine._docker import streaming_api

    shared = docker.DockerClient(base_url=f"unix://{tmp_path}/d.sock", version="1.41", timeout=3)
    try:
        api = streaming_api(shared)
        try:
            assert api is not shared.api and api.api_version == "1.41"
            assert api._custom_adapter.socket_path == f"{tmp_path}/d.sock"  # the private attribute the shim reads
        finally:
            api.close()
    finally:
        shared.close()


def test_stream_aborter_cuts_a_quiet_stream(tmp_path):
    """A daemon that starts a chunked answer and goes quiet (a build's ``RUN sleep``)."""
    import docker

    from prefect_flyimage.engine._docker import StreamAborter, streaming_api

    path = tmp_path / "quiet.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    held: list[socket.socket] = []

    def serve() -> None:
        conn, _ = server.accept()
        held.append(conn)
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    shared = docker.DockerClient(base_url=f"unix://{path}", version="1.41", timeout=3)
    api = streaming_api(shared)
    abort = StreamAborter(api)
    ended: list[object] = []

    def read() -> None:
        response = api.get("http+docker://localhost/v1.41/build", stream=True, timeout=None)
        try:
            for _ in response.iter_content(chunk_size=1):
                pass
            ended.append("eof")
        except Exception as exc:  # noqa: BLE001 - any end of the read will do
            ended.append(exc)
        finally:
            response.close()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(1.0)
    assert reader.is_alive(), "the read should be blocked on the quiet stream"
    abort()
    reader.join(30)  # a guard, not a performance claim
    try:
        assert not reader.is_alive() and ended, "aborting did not end the blocked read"
    finally:
        shared.close()
        for conn in held:
            conn.close()
        server.close()
