"""Ours next to Prefect's own functions on the real daemon and registries (issue 15).

Each test runs Prefect's (or prefect-docker's) function and ours on the same input and
compares what a caller sees: the error and its hint, the progress lines.
"""

from __future__ import annotations

import http.server
import io
import json
import re
import socket
import threading
from typing import Iterator

import pytest

from prefect_flyimage import BuildError, Engine, build_image, push_image
from prefect_flyimage.docker_image import plan_for_build
from prefect_flyimage.engine import choose_backend
from prefect_flyimage.errors import BaseImageDenied

pytestmark = [pytest.mark.integration, pytest.mark.prefect_compat]


class _DenyingRegistry(http.server.BaseHTTPRequestHandler):
    """Answers every request as a registry that refuses access (HTTP 403, code DENIED).

    The htpasswd registry of the services says 401 "no basic auth credentials"; a
    registry that says "denied" (Docker Hub, ECR, GHCR for a private base image) is
    what prefect-docker's hint is for.
    """

    def parse_request(self) -> bool:
        if self.raw_requestline[:1] == b"\x16":
            # A TLS ClientHello (Docker tries HTTPS first): answer as a registry (Go's
            # net/http) does, so the client sees an HTTP server and goes on over HTTP.
            # http.server would answer HTTP/0.9-style, which no client takes for HTTP.
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n400 Bad Request")
            self.close_connection = True
            return False
        return super().parse_request()

    def _deny(self) -> None:
        body = json.dumps({"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]})
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body.encode())

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _deny

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def denying_registry() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _DenyingRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_build_denied_carries_prefect_dockers_hint(tmp_path, monkeypatch, denying_registry, registry_noauth, unique_name):
    from prefect.utilities.dockerutils import BuildError as PrefectBuildError
    from prefect_docker.deployments import steps as theirs

    from prefect_flyimage.deployments import steps as ours

    (tmp_path / "Dockerfile").write_text(f"FROM {denying_registry}/private/base:1\n")
    monkeypatch.chdir(tmp_path)
    name = f"{registry_noauth.host}/{unique_name}"
    with pytest.raises(PrefectBuildError) as their_error:
        theirs.build_docker_image(name, dockerfile="Dockerfile", pull=False)
    with pytest.raises(BuildError) as our_error:
        ours.build_docker_image(name, dockerfile="Dockerfile", pull=False)
    hint = theirs._DENIED_MESSAGE_HINT
    if _containerd_image_store():
        # Docker 26's containerd resolver words the refusal "403 Forbidden", so Prefect's
        # own step loses its hint there; ours asks the registry and keeps it.
        assert "403 Forbidden" in str(their_error.value) and hint not in str(their_error.value)
    else:
        assert str(their_error.value).endswith(hint)
    assert str(our_error.value).endswith("\n" + hint)
    assert our_error.value.step and "FROM" in our_error.value.step  # still ours: names the step
    plan, extra = plan_for_build(name, context=tmp_path, dockerfile="Dockerfile", build_kwargs={"pull": False})
    if choose_backend(plan, bool(extra)) == "buildkit":
        # BuildKit's message does not say "denied": the engine asked the registry itself
        assert isinstance(our_error.value, BaseImageDenied)
        assert our_error.value.registry == denying_registry
        assert "HTTP 403" in str(our_error.value)
    else:
        assert "denied" in str(our_error.value).removesuffix(hint)  # the classic builder's own words
    assert Engine().local_image(f"{name}:latest") is None


def test_build_failing_otherwise_has_no_hint(tmp_path, monkeypatch, busybox_image, registry_noauth, unique_name):
    from prefect_flyimage.deployments import steps as ours

    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN exit 3\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BuildError) as error:
        ours.build_docker_image(f"{registry_noauth.host}/{unique_name}", dockerfile="Dockerfile", pull=False)
    assert "access denied" not in str(error.value)


def _containerd_image_store() -> bool:
    return "snapshotter" in json.dumps(Engine().client.info().get("DriverStatus") or [])


_LAYER_PREFIX = re.compile(r"^[0-9a-f]{12}: ")


def test_push_image_progress_lines_are_prefects(tmp_path, busybox_image, registry_noauth, unique_name):
    from prefect.utilities import dockerutils as P

    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo {unique_name} > /id\n")
    image_id = build_image(tmp_path, tag=f"{unique_name}:local")
    outputs = {}
    for label, fn in (("prefect", P.push_image), ("ours", push_image)):
        out = io.StringIO()
        ref = fn(image_id, f"http://{registry_noauth.host}", unique_name, tag=label, stream_progress_to=out)
        assert ref == f"{registry_noauth.host}/{unique_name}:{label}"
        outputs[label] = out.getvalue().splitlines()
    for label, lines in outputs.items():
        assert lines, label
        assert not any(_LAYER_PREFIX.match(line) for line in lines), (label, lines)
    # Prefect pushed the layers first; ours finds them there: same statuses either way.
    assert "Pushed" in outputs["prefect"]
    assert "Layer already exists" in outputs["ours"]
    Engine().remove(f"{unique_name}:local", force=True)
