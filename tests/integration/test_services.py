"""The local services that integration tests rely on (scripts/services.sh, tests/conftest.py)."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_fixtures import ephemeral_registry, registry_workdir  # noqa: E402,F401

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def _request(url: str, *, method: str = "GET", auth: tuple[str, str] | None = None, headers=None):
    """(status, headers, body) of a plain HTTP request; status None if unreachable."""
    req = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except (urllib.error.URLError, OSError):
        return None, {}, b""


def _auth(reg) -> tuple[str, str] | None:
    return (reg.username, reg.password) if reg.username else None


def _tags(reg, name: str) -> list[str]:
    status, _, body = _request(f"{reg.url}/v2/{name}/tags/list", auth=_auth(reg))
    if status != 200:
        return []
    return json.loads(body).get("tags") or []


def _delete_remote(reg, name: str, tag: str) -> None:
    """Delete a tag's manifest from a registry (storage.delete is enabled); best effort."""
    status, headers, _ = _request(
        f"{reg.url}/v2/{name}/manifests/{tag}",
        method="HEAD",
        auth=_auth(reg),
        headers={"Accept": MANIFEST_TYPES},
    )
    digest = {k.lower(): v for k, v in headers.items()}.get("docker-content-digest")
    if status == 200 and digest:
        _request(f"{reg.url}/v2/{name}/manifests/{digest}", method="DELETE", auth=_auth(reg))


def _push(api, repository: str, tag: str, auth_config=None) -> tuple[list[dict], str | None]:
    """Push with docker-py's low-level API; (events, error text or None)."""
    kwargs = {"stream": True, "decode": True}
    if auth_config is not None:
        kwargs["auth_config"] = auth_config
    events = list(api.push(repository, tag=tag, **kwargs))
    errors = [str(e.get("error") or e.get("errorDetail", {}).get("message")) for e in events
              if "error" in e or "errorDetail" in e]
    return events, ("; ".join(errors) if errors else None)


@pytest.fixture
def isolated_client(services, tmp_path, monkeypatch):
    """A docker-py client that sees no ~/.docker/config.json credentials."""
    import docker

    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text("{}")
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    client = docker.from_env(timeout=600)
    yield client
    client.close()


# ---------------------------------------------------------------------------------------
# services.sh and fixtures
# ---------------------------------------------------------------------------------------


def test_status_reports_everything_up(services):
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "services.sh"), "status"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) >= 6
    assert all(line.endswith(": up") or ": up (" in line for line in lines), result.stdout


def test_services_env_is_exported(services):
    import os

    for key in ("FLYIMAGE_REGISTRY", "FLYIMAGE_REGISTRY_PASSWORD", "FLYIMAGE_FLY_TOKEN",
                "FLYIMAGE_PREFECT_IMAGE", "FLYIMAGE_STATE_DIR"):
        assert services[key]
        assert os.environ[key] == services[key]
    assert services["FLYIMAGE_REGISTRY"].startswith("127.0.0.1:")
    assert services["FLYIMAGE_REGISTRY_NOAUTH"].startswith("127.0.0.1:")
    assert Path(services["FLYIMAGE_REGISTRY_STORAGE"]).is_dir()


def test_registry_fixtures_shape(registry, registry_noauth, fly_registry):
    assert registry.host == registry.url.removeprefix("http://")
    assert registry.username == "flyimage" and registry.password
    assert registry_noauth.username is None and registry_noauth.password is None
    assert registry_noauth.auth_config() is None
    assert fly_registry.host == registry.host
    assert fly_registry.username == "x" and fly_registry.password
    assert fly_registry.password != registry.password
    with pytest.raises(Exception):
        registry.host = "elsewhere"  # frozen


def test_unique_name_is_a_valid_repository(unique_name, request):
    assert re.fullmatch(r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*", unique_name)
    assert unique_name.startswith("t-test-unique-name-is-a-valid")
    assert len(unique_name) <= 60
    assert re.search(r"-[0-9a-f]{8}$", unique_name)


def test_registries_answer_v2(registry, registry_noauth):
    assert _request(f"{registry.url}/v2/")[0] == 401
    assert _request(f"{registry.url}/v2/", auth=("flyimage", "wrong"))[0] == 401
    assert _request(f"{registry.url}/v2/", auth=_auth(registry))[0] == 200
    assert _request(f"{registry_noauth.url}/v2/")[0] == 200


# ---------------------------------------------------------------------------------------
# daemon and base images
# ---------------------------------------------------------------------------------------


def test_daemon_answers(docker_client):
    assert docker_client.ping() is True
    version = docker_client.version()
    assert version.get("ApiVersion")


def test_busybox_runs_without_network(docker_client, busybox_image):
    out = docker_client.containers.run(
        busybox_image, ["echo", "ok"], network_mode="none", remove=True
    )
    assert out == b"ok\n"


def test_python_image_has_python_311_and_ca_bundle(docker_client, python_image):
    script = (
        "import sys, os, ssl; "
        "print('%d.%d' % sys.version_info[:2]); "
        "print(os.path.getsize('/etc/ssl/certs/ca-certificates.crt')); "
        "ssl.create_default_context(cafile='/etc/ssl/certs/ca-certificates.crt'); print('ssl-ok')"
    )
    out = docker_client.containers.run(
        python_image, ["python", "-c", script], network_mode="none", remove=True
    ).decode()
    version, size, ok = out.split()
    assert version == "3.11"
    assert int(size) > 10_000
    assert ok == "ssl-ok"
    out = docker_client.containers.run(
        python_image, ["sh", "-c", "python3 -m venv /tmp/v && /tmp/v/bin/pip --version"],
        network_mode="none", remove=True,
    ).decode()
    assert "python 3.11" in out


def test_prefect_image_matches_host_prefect(prefect_image):
    dockerutils = pytest.importorskip("prefect.utilities.dockerutils")
    assert prefect_image == dockerutils.get_prefect_image_name()


def test_prefect_standin_runs_prefect_and_uv(docker_client, prefect_image):
    out = docker_client.containers.run(
        prefect_image, ["prefect", "version"], network_mode="none", remove=True
    ).decode()
    match = re.search(r"Version:\s+(\S+)", out)
    assert match, out
    try:
        host_version = importlib.metadata.version("prefect")
    except importlib.metadata.PackageNotFoundError:
        host_version = None
    if host_version:
        assert match.group(1) == host_version
    assert "prefect-docker" in out
    out = docker_client.containers.run(
        prefect_image, ["uv", "--version"], network_mode="none", remove=True
    ).decode()
    assert out.startswith("uv ")
    attrs = docker_client.images.get(prefect_image).attrs["Config"]
    assert attrs["WorkingDir"] == "/opt/prefect"
    assert "VIRTUAL_ENV=/opt/prefect-venv" in attrs["Env"]


# ---------------------------------------------------------------------------------------
# pushes
# ---------------------------------------------------------------------------------------


def test_push_to_auth_registry_needs_login(
    isolated_client, busybox_image, registry, fly_registry, unique_name
):
    api = isolated_client.api
    repository = f"{registry.host}/{unique_name}"
    api.tag(busybox_image, repository, "v1")
    try:
        _, error = _push(api, repository, "v1")
        assert error is not None
        assert "no basic auth credentials" in error or "unauthorized" in error.lower(), error
        assert "v1" not in _tags(registry, unique_name)

        _, error = _push(api, repository, "v1", auth_config={"username": "flyimage", "password": "nope"})
        assert error is not None and (
            "unauthorized" in error.lower() or "authentication required" in error.lower()
        ), error

        events, error = _push(api, repository, "v1", auth_config=registry.auth_config())
        assert error is None, error
        # the digest: an aux event (classic image store), the status line (containerd store)
        assert any("Digest" in (e.get("aux") or {}) or "digest: sha256:" in str(e.get("status")) for e in events), events
        assert _tags(registry, unique_name) == ["v1"]

        # the Fly-style user (x + API token) is accepted as well
        api.tag(busybox_image, repository, "fly")
        _, error = _push(api, repository, "fly", auth_config=fly_registry.auth_config())
        assert error is None, error
        assert sorted(_tags(fly_registry, unique_name)) == ["fly", "v1"]
    finally:
        _delete_remote(registry, unique_name, "v1")
        _delete_remote(registry, unique_name, "fly")


def test_push_to_noauth_registry(isolated_client, busybox_image, registry_noauth, unique_name):
    api = isolated_client.api
    repository = f"{registry_noauth.host}/{unique_name}"
    api.tag(busybox_image, repository, "v1")
    try:
        _, error = _push(api, repository, "v1")
        assert error is None, error
        assert _tags(registry_noauth, unique_name) == ["v1"]
    finally:
        _delete_remote(registry_noauth, unique_name, "v1")
    assert _tags(registry_noauth, unique_name) == []


def test_unique_name_teardown_removes_local_tags(docker_client, busybox_image, registry_noauth):
    """The helper behind unique_name's teardown, on a name of our own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_flyimage_conftest_copy", REPO_ROOT / "tests" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)

    name = "t-teardown-check-0123abcd"
    docker_client.api.tag(busybox_image, f"{registry_noauth.host}/{name}", "a")
    docker_client.api.tag(busybox_image, name, "b")
    module._remove_images_named(name)
    tags = {t for image in docker_client.images.list() for t in image.tags}
    assert not any(name in t for t in tags)
    assert docker_client.images.get(busybox_image)  # the base image stays


# ---------------------------------------------------------------------------------------
# ephemeral registry
# ---------------------------------------------------------------------------------------


def test_ephemeral_registry_accepts_push_and_stops(isolated_client, busybox_image, ephemeral_registry, unique_name):
    reg = ephemeral_registry
    assert reg.host.startswith("127.0.0.1:") and reg.url == f"http://{reg.host}"
    assert _request(f"{reg.url}/v2/")[0] == 200

    api = isolated_client.api
    repository = f"{reg.host}/{unique_name}"
    api.tag(busybox_image, repository, "v1")
    _, error = _push(api, repository, "v1")
    assert error is None, error
    assert _tags(reg, unique_name) == ["v1"]

    reg.stop()
    reg.stop()  # idempotent
    assert _request(f"{reg.url}/v2/")[0] is None
    _, error = _push(api, repository, "v1")
    assert error is not None  # connection refused

    reg.start()  # comes back on the same port, with the same storage
    assert _tags(reg, unique_name) == ["v1"]
