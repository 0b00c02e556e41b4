"""prefect_flyimage.registry against the real registries (htpasswd on :5000, open on :5001)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_fixtures import (  # noqa: E402,F401
    PushedImage,
    ephemeral_registry,
    hanging_server,
    push_image_to,
    registry_workdir,
    tls_registry,
)

from prefect_flyimage import errors  # noqa: E402
from prefect_flyimage.credentials import RegistryCredentials  # noqa: E402
from prefect_flyimage.registry import RegistryClient, close_shared_clients, shared_client  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def pushed(registry, creds, busybox_image, unique_name) -> PushedImage:
    return push_image_to(registry.host, unique_name, "v1", busybox_image, creds)


@pytest.fixture
def pushed_noauth(registry_noauth, busybox_image, unique_name) -> PushedImage:
    return push_image_to(registry_noauth.host, unique_name, "v1", busybox_image)


def test_present_tag_has_the_digest_docker_push_reported(pushed, registry, creds):
    with RegistryClient(registry.host, creds) as client:
        assert client.manifest_digest(pushed.ref) == pushed.digest
        # by digest too, and a second question on the same connection
        assert client.manifest_digest(pushed.ref.rsplit(":", 1)[0] + "@" + pushed.digest) == pushed.digest


def test_absent_tag_and_absent_repository_are_none(pushed, registry, creds, unique_name):
    with RegistryClient(registry.host, creds) as client:
        assert client.manifest_digest(f"{registry.host}/{unique_name}:absent") is None
        assert client.manifest_digest(f"{registry.host}/{unique_name}-never-pushed:v1") is None


def test_registry_without_auth(pushed_noauth, registry_noauth, unique_name):
    with RegistryClient(registry_noauth.host) as client:
        assert client.manifest_digest(pushed_noauth.ref) == pushed_noauth.digest
        assert client.manifest_digest(f"{registry_noauth.host}/{unique_name}:absent") is None


def test_wrong_password_is_an_authentication_error_without_the_password(pushed, registry):
    wrong = "wrong-" + "p4ss" * 4
    bad = RegistryCredentials(registry.host, registry.username, wrong)
    with RegistryClient(registry.host, bad) as client:
        with pytest.raises(errors.AuthenticationError) as info:
            client.manifest_digest(pushed.ref)
    assert not errors.is_transient(info.value)
    assert registry.host in str(info.value) and registry.username in str(info.value)
    assert wrong not in str(info.value)


def test_no_credentials_for_an_auth_registry(pushed, registry):
    with RegistryClient(registry.host) as client:
        with pytest.raises(errors.AuthenticationError, match="anonymous"):
            client.manifest_digest(pushed.ref)


def test_stopped_registry_is_unavailable(ephemeral_registry, busybox_image, unique_name):
    image = push_image_to(ephemeral_registry.host, unique_name, "v1", busybox_image)
    with RegistryClient(ephemeral_registry.host) as client:
        assert client.manifest_digest(image.ref) == image.digest
        ephemeral_registry.stop()
        with pytest.raises(errors.RegistryUnavailable) as info:
            client.manifest_digest(image.ref)
    assert errors.is_transient(info.value)
    assert ephemeral_registry.host in str(info.value)


def test_silent_registry_is_unavailable_after_the_timeout(hanging_server):
    with RegistryClient(hanging_server.host, timeout=0.5) as client:
        with pytest.raises(errors.RegistryUnavailable, match=r"did not answer within 0.5s"):
            client.manifest_digest(f"{hanging_server.host}/app:v1")
    assert hanging_server.accepted >= 1  # it did connect: the read timed out


def test_timeout_from_the_environment(hanging_server, monkeypatch):
    monkeypatch.setenv("PREFECT_FLYIMAGE_REGISTRY_TIMEOUT", "0.3")
    with RegistryClient(hanging_server.host) as client:
        assert client.timeout == 0.3
        with pytest.raises(errors.RegistryUnavailable, match=r"within 0.3s"):
            client.manifest_digest(f"{hanging_server.host}/app:v1")


def test_shared_client_is_reused_per_registry_and_credentials(pushed, registry, creds):
    try:
        first = shared_client(registry.host, creds)
        assert shared_client(registry.host, creds) is first
        assert shared_client(registry.host, RegistryCredentials(registry.host, creds.username, "other")) is not first
        assert shared_client(registry.host) is not first
        assert first.manifest_digest(pushed.ref) == pushed.digest
        first.close()
        replacement = shared_client(registry.host, creds)
        assert replacement is not first and replacement.manifest_digest(pushed.ref) == pushed.digest
    finally:
        close_shared_clients()
    assert replacement.closed


def test_ref_in_another_registry_is_refused(registry, creds):
    with RegistryClient(registry.host, creds) as client:
        with pytest.raises(ValueError, match="is not in registry"):
            client.manifest_digest("127.0.0.1:5999/app:v1")


def test_loopback_registry_over_https(tls_registry, busybox_image, unique_name):
    """Loopback is asked over HTTP first (the common case); a TLS-only one is found over HTTPS."""
    image = push_image_to(tls_registry.host, unique_name, "v1", busybox_image)  # the daemon tries HTTPS first too
    with RegistryClient(tls_registry.host) as client:
        assert client.manifest_digest(image.ref) == image.digest
        assert client.manifest_digest(f"{tls_registry.host}/{unique_name}:absent") is None
        assert client._schemes[0] == "https"  # remembered: later checks go straight to HTTPS


def test_remote_registries_are_https_only(monkeypatch):
    with RegistryClient("registry.example.com") as client:
        assert client._schemes == ["https"]
    monkeypatch.setenv("PREFECT_FLYIMAGE_INSECURE_REGISTRIES", "registry.example.com")
    with RegistryClient("registry.example.com") as client:
        assert client._schemes == ["https", "http"]
