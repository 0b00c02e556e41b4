"""prefect_flyimage.fly against the real daemon and the local authenticated registry.

The registry at ``fly_registry.host`` plays registry.fly.io: user ``x``, password = the
Fly token. ``FLY_REGISTRY_HOST`` points the module at it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from prefect_flyimage import errors, fly
from prefect_flyimage.credentials import RegistryCredentials
from prefect_flyimage.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from credential_fixtures import ArgvSampler, image_blobs  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def fly_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, fly_registry) -> Path:
    """Fly module pointed at the local registry; a private docker config; no ambient token."""
    for name in (fly.TOKEN_ENV, fly.CREDENTIALS_BLOCK_ENV, fly.TOKEN_SECRET_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(fly.REGISTRY_ENV, fly_registry.host)
    config = tmp_path_factory.mktemp("docker-config")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    return config


@pytest.fixture
def app_name() -> str:
    return f"fly-it-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def context(tmp_path: Path, busybox_image: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nCOPY app.txt /app.txt\nRUN wc -c /app.txt > /size\nCMD [\"cat\", \"/app.txt\"]\n"
    )
    (ctx / "app.txt").write_text("version 1\n")
    return ctx


@pytest.fixture
def creds(fly_registry) -> RegistryCredentials:
    return RegistryCredentials(fly_registry.host, "x", fly_registry.password)


@pytest.fixture
def cleanup_repo(docker_client) -> Iterator[list[str]]:
    """Repositories whose local tags are removed after the test."""
    repos: list[str] = []
    yield repos
    for repo in repos:
        for image in docker_client.images.list(name=repo):
            for tag in image.tags:
                if tag.startswith(repo + ":"):
                    docker_client.images.remove(tag, force=True)


def local_tags(docker_client, repo: str) -> list[str]:
    return sorted(t for image in docker_client.images.list(name=repo) for t in image.tags if t.startswith(repo + ":"))


# ---- the content-addressed ensure_image --------------------------------------------------------------


def test_ensure_image_builds_once_skips_unchanged_and_rebuilds_on_change(
    app_name, context, creds, fly_registry, docker_client, cleanup_repo, caplog
):
    repo = f"{fly_registry.host}/{app_name}"
    cleanup_repo.append(repo)
    engine = Engine()
    caplog.set_level(logging.INFO, logger="prefect_flyimage")

    ref = asyncio.run(
        fly.ensure_image(app_name, token=fly_registry.password, docker_context=context, network="none")
    )
    assert ref == f"{repo}:latest"
    first = engine.registry_digest(ref, creds)
    assert first and first.startswith("sha256:")
    assert "built and pushed" in caplog.text

    # Same context, empty daemon: the registry is the cache, so nothing is built or pulled.
    for tag in local_tags(docker_client, repo):
        docker_client.images.remove(tag)
    caplog.clear()
    started = time.monotonic()
    again = fly.ensure_image_result(app_name, token=fly_registry.password, docker_context=context, network="none")
    assert again.cached and not again.built and not again.pushed
    assert again.digest == first and again.reference == ref
    assert time.monotonic() - started < 10
    assert local_tags(docker_client, repo) == []  # no build happened
    assert "nothing built or pushed" in caplog.text

    # A changed file changes the content tag: rebuilt, pushed, and `latest` moves.
    (context / "app.txt").write_text("version 2\n")
    changed = fly.ensure_image_result(app_name, token=fly_registry.password, docker_context=context, network="none")
    assert changed.built and changed.pushed and changed.digest != first
    assert engine.registry_digest(ref, creds) == changed.digest
    out = docker_client.containers.run(ref, remove=True, network_mode="none")
    assert out == b"version 2\n"


def test_default_context_is_the_working_directory(
    app_name, context, fly_registry, monkeypatch, cleanup_repo
):
    cleanup_repo.append(f"{fly_registry.host}/{app_name}")
    monkeypatch.chdir(context)
    monkeypatch.setenv(fly.TOKEN_ENV, fly_registry.password)  # token from the environment
    result = fly.ensure_image_result(app_name, tag="v1", network="none")
    assert result.built and result.pushed and result.reference.endswith(f"/{app_name}:v1")


def test_flaude_style_build_login_push(app_name, context, creds, fly_registry, fly_env, cleanup_repo):
    """build -> login -> push, as flaude does it; the push uses the login docker stored."""
    cleanup_repo.append(f"{fly_registry.host}/{app_name}")
    ref = asyncio.run(fly.docker_build(app_name, tag="v1", docker_context=context, network="none"))
    assert ref == f"{fly_registry.host}/{app_name}:v1"
    with ArgvSampler() as sampler:
        asyncio.run(fly.docker_login_fly(token=fly_registry.password))
        assert asyncio.run(fly.docker_push(app_name, tag="v1")) == ref  # no token: docker config
    assert Engine().registry_digest(ref, creds)
    config = json.loads((fly_env / "config.json").read_text())
    assert fly_registry.host in config["auths"]
    # The login ran as a process (the sampler saw it), yet the token never was in an argv.
    assert any(" login " in args and "--password-stdin" in args for args in sampler.seen)
    assert not [args for args in sampler.seen if fly_registry.password in args]


def test_without_token_flyctl_login_is_used_by_ensure(
    app_name, context, creds, fly_registry, fly_env, tmp_path, monkeypatch, cleanup_repo
):
    """No token anywhere: `flyctl auth docker` stores the login, and the pipeline uses it.

    The stand-in flyctl does what the real one does (a docker login into $DOCKER_CONFIG);
    the token reaches it through a file, as flyctl reads its own config.
    """
    cleanup_repo.append(f"{fly_registry.host}/{app_name}")
    token_file = tmp_path / "fly-token"
    token_file.write_text(fly_registry.password)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    flyctl = bindir / "flyctl"
    flyctl.write_text(
        "#!/bin/sh\n"
        f'[ "$1 $2" = "auth docker" ] || exit 64\n'
        f"exec docker login --username x --password-stdin {fly_registry.host} < {token_file}\n"
    )
    flyctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    result = fly.ensure_image_result(app_name, docker_context=context, network="none")
    assert result.built and result.pushed
    assert Engine().registry_digest(result.reference, creds) == result.digest
    assert fly_registry.host in json.loads((fly_env / "config.json").read_text())["auths"]


def test_wrong_token_fails_fast_without_building(app_name, context, fly_registry, docker_client, caplog):
    wrong = "FlyV1 wrong-" + uuid.uuid4().hex
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(errors.AuthenticationError) as info:
        asyncio.run(fly.ensure_image(app_name, token=wrong, docker_context=context, network="none"))
    assert time.monotonic() - started < 15
    assert not fly.is_transient(info.value)
    assert local_tags(docker_client, f"{fly_registry.host}/{app_name}") == []  # refused before building
    assert wrong not in str(info.value) and wrong not in (info.value.stderr or "") and wrong not in caplog.text

    with pytest.raises(errors.AuthenticationError) as login_info:
        asyncio.run(fly.docker_login_fly(token=wrong))
    assert login_info.value.returncode not in (None, 0)
    assert wrong not in str(login_info.value) and wrong not in login_info.value.stderr


def test_token_is_in_no_log_exception_argv_or_layer(
    app_name, tmp_path, busybox_image, fly_registry, docker_client, cleanup_repo, caplog, monkeypatch
):
    token = fly_registry.password
    repo = f"{fly_registry.host}/{app_name}"
    cleanup_repo.append(repo)
    ctx = tmp_path / "leak"
    ctx.mkdir()
    # The build sees its whole environment: a leaked token would land in /env.txt.
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN env > /env.txt\n")
    monkeypatch.setenv(fly.TOKEN_ENV, token)
    caplog.set_level(logging.DEBUG)
    with ArgvSampler() as sampler:
        asyncio.run(fly.docker_login_fly())
        ref = asyncio.run(fly.ensure_image(app_name, docker_context=ctx, network="none"))
    assert token not in caplog.text
    assert not [args for args in sampler.seen if token in args]
    history, blobs = image_blobs(ref)
    assert "env > /env.txt" in history and token not in history
    assert any(b"PATH=" in blob for blob in blobs)  # we really looked inside the layers
    assert not [blob for blob in blobs if token.encode() in blob]


# ---- timeouts --------------------------------------------------------------------------------------------


def test_build_timeout_kills_the_build_and_leaves_nothing(
    app_name, tmp_path, busybox_image, fly_registry, creds, docker_client
):
    ctx = tmp_path / "slow"
    ctx.mkdir()
    marker = uuid.uuid4().hex[:8]
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN sleep 30 && echo {marker}\n")
    repo = f"{fly_registry.host}/{app_name}"
    before = {c.id for c in docker_client.containers.list(all=True)}
    started = time.monotonic()
    with pytest.raises(fly.ImageBuildError) as info:
        asyncio.run(
            fly.ensure_image(app_name, token=fly_registry.password, docker_context=ctx, build_timeout=3, network="none")
        )
    elapsed = time.monotonic() - started
    assert elapsed < 15, f"the build ran {elapsed:.0f}s despite timeout=3"
    # A timeout is a BuildTimeout: the one retry rule treats it as transient (slow mirrors recover).
    assert isinstance(info.value, errors.BuildTimeout) and fly.is_transient(info.value)
    assert "timed out" in str(info.value)
    assert "sleep 30" in info.value.stderr  # the tail of the build output names the step

    # Within a few seconds: no build container, no `sleep 30` process, no tag, nothing pushed.
    deadline = time.monotonic() + 10
    while True:
        leftover = [
            c for c in docker_client.containers.list(all=True)
            if c.id not in before and marker in " ".join(c.attrs.get("Config", {}).get("Cmd") or [])
        ]
        procs = [a for a in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
                 if marker in a]
        if not leftover and not procs:
            break
        assert time.monotonic() < deadline, f"left behind: containers {leftover}, processes {procs}"
        time.sleep(0.5)
    assert local_tags(docker_client, repo) == []
    assert Engine().registry_digest(f"{repo}:latest", creds) is None


class ThrottlingProxy:
    """A real TCP proxy to the registry that forwards uploads at ``rate`` bytes/s.

    Makes a push slow for real, so the push timeout can be exercised.
    """

    def __init__(self, upstream: str, rate: int) -> None:
        import socket

        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._rate = rate
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._sockets: list = []
        self.uploaded = 0  # bytes forwarded to the registry
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, throttle: bool) -> None:
        chunk = 16384
        try:
            while data := src.recv(chunk):
                dst.sendall(data)
                if throttle:
                    self.uploaded += len(data)
                    time.sleep(len(data) / self._rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass


def test_push_timeout_aborts_the_push(app_name, tmp_path, busybox_image, fly_registry, docker_client, cleanup_repo):
    ctx = tmp_path / "big"
    ctx.mkdir()
    # 6 MB of incompressible data: about 6 s through a 1 MB/s link.
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN head -c 6000000 /dev/urandom > /blob\n")
    proxy = ThrottlingProxy(fly_registry.host, rate=1024 * 1024)
    cleanup_repo.append(f"{proxy.host}/{app_name}")
    creds = RegistryCredentials(fly_registry.host, "x", fly_registry.password)
    fly.docker_build_sync(app_name, docker_context=ctx, registry=proxy.host, network="none")
    try:
        started = time.monotonic()
        with pytest.raises(errors.PushError) as info:
            fly.ensure_image_sync(
                app_name, token=fly_registry.password, docker_context=ctx, registry=proxy.host, push_timeout=2,
                network="none",
            )
        elapsed = time.monotonic() - started
        # Leave the link up well past when the push would have finished: an abandoned
        # push would complete and write the manifest; an aborted one never does.
        time.sleep(max(0.0, 15 - elapsed))
        uploaded = proxy.uploaded
    finally:
        proxy.close()
    assert elapsed < 10, f"the push ran {elapsed:.0f}s despite push_timeout=2"
    assert "timed out" in str(info.value)
    assert fly.is_transient(info.value)  # a slow link may be better next time
    assert uploaded > 1_000_000  # the push really was under way
    # Asked directly, not through the proxy: no manifest under any of the image's tags.
    assert Engine().registry_digest(f"{fly_registry.host}/{app_name}:latest", creds) is None
