"""Token-auth registries (Docker Hub, GHCR, ECR, Harbor style) for the existence check and the push.

A real Distribution registry configured with ``auth: token:`` trusts a token issuer the
suite runs (``registry_fixtures.TokenIssuer``): the registry answers 401 with a Bearer
challenge, our client (and the daemon, for pushes) fetch a JWT from the realm and retry.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from credential_fixtures import docker_config  # noqa: E402,F401
from registry_fixtures import (  # noqa: E402,F401
    push_image_to,
    registry_workdir,
    token_issuer,
    token_registry,
)

from prefect_flyimage import errors  # noqa: E402
from prefect_flyimage.credentials import RegistryCredentials  # noqa: E402
from prefect_flyimage.engine import Engine  # noqa: E402
from prefect_flyimage.registry import RegistryClient  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def token_creds(token_registry, token_issuer) -> RegistryCredentials:
    return RegistryCredentials(token_registry.host, "ci", token_issuer.users["ci"])


def test_registry_really_wants_a_bearer_token(token_registry, token_issuer):
    response = httpx.head(f"{token_registry.url}/v2/any/thing/manifests/v1")
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and token_issuer.realm in challenge


def test_push_through_the_daemon_and_check_with_the_client(token_registry, token_issuer, token_creds, busybox_image, unique_name):
    pushed = push_image_to(token_registry.host, unique_name, "v1", busybox_image, token_creds)
    assert pushed.digest.startswith("sha256:")
    daemon_tokens = token_issuer.requests
    assert daemon_tokens >= 1  # the daemon did the bearer flow itself

    with RegistryClient(token_registry.host, token_creds) as client:
        assert client.manifest_digest(pushed.ref) == pushed.digest
        after_first = token_issuer.requests
        assert after_first == daemon_tokens + 1  # one token for this repository's pull scope
        # Cached per scope: the next checks of the same repository fetch no token.
        assert client.manifest_digest(pushed.ref) == pushed.digest
        assert client.manifest_digest(f"{token_registry.host}/{unique_name}:absent") is None
        assert token_issuer.requests == after_first
        # Another repository is another scope: one more token.
        assert client.manifest_digest(f"{token_registry.host}/{unique_name}-other:v1") is None
        assert token_issuer.requests == after_first + 1


def test_engine_push_with_the_same_credentials(token_registry, token_creds, busybox_image, unique_name):
    ref = f"{token_registry.host}/{unique_name}:v2"
    with Engine() as engine:
        engine.tag(busybox_image, ref)
        digest = engine.push(ref, token_creds)
    with RegistryClient(token_registry.host, token_creds) as client:
        assert client.manifest_digest(ref) == digest


def test_wrong_password_at_the_token_server(token_registry, token_issuer, busybox_image, unique_name, token_creds):
    pushed = push_image_to(token_registry.host, unique_name, "v1", busybox_image, token_creds)
    wrong = "wrong-" + "s3cret" * 3
    bad = RegistryCredentials(token_registry.host, "ci", wrong)
    with RegistryClient(token_registry.host, bad) as client:
        with pytest.raises(errors.AuthenticationError) as info:
            client.manifest_digest(pushed.ref)
    assert token_issuer.realm in str(info.value) and "'ci'" in str(info.value)
    assert wrong not in str(info.value)
    assert not errors.is_transient(info.value)
    with Engine() as engine:
        engine.tag(busybox_image, f"{token_registry.host}/{unique_name}:v9")
        with pytest.raises(errors.AuthenticationError) as push_info:
            engine.push(f"{token_registry.host}/{unique_name}:v9", bad)
    assert wrong not in str(push_info.value)


def test_anonymous_token_grants_nothing(token_registry, token_creds, busybox_image, unique_name):
    pushed = push_image_to(token_registry.host, unique_name, "v1", busybox_image, token_creds)
    with RegistryClient(token_registry.host) as client:
        with pytest.raises(errors.AuthenticationError, match="anonymous"):
            client.manifest_digest(pushed.ref)


def test_expired_token_is_fetched_again(token_registry, token_issuer, token_creds, busybox_image, unique_name):
    pushed = push_image_to(token_registry.host, unique_name, "v1", busybox_image, token_creds)
    token_issuer.lifetime = 1  # the issuer says the token lasts 1 s: our cache must not keep it
    with RegistryClient(token_registry.host, token_creds) as client:
        before = token_issuer.requests
        assert client.manifest_digest(pushed.ref) == pushed.digest
        assert client.manifest_digest(pushed.ref) == pushed.digest
    assert token_issuer.requests == before + 2


def test_identity_token_from_a_credential_helper(token_registry, token_issuer, docker_config, token_creds, busybox_image, unique_name):
    """A helper answering ``Username: <token>`` hands out an identity (OAuth refresh) token:
    our client and the daemon both trade it for registry tokens (refresh-token grant)."""
    import secrets

    from prefect_flyimage.credentials import resolve_credentials

    identity = "identity-" + secrets.token_hex(12)
    token_issuer.refresh_tokens[identity] = "ci"
    docker_config.helper("oauth", "<token>", [identity], [token_registry.host])
    docker_config.write({"credHelpers": {token_registry.host: "oauth"}})
    creds = resolve_credentials(None, token_registry.host)
    assert creds.is_identity_token and "identity" not in repr(creds)
    ref = f"{token_registry.host}/{unique_name}:v1"
    with Engine() as engine:
        engine.tag(busybox_image, ref)
        digest = engine.push(ref, creds)  # the daemon does the refresh-token grant
    with RegistryClient(token_registry.host, creds) as client:
        assert client.manifest_digest(ref) == digest
    # A revoked identity token is an authentication error, naming no secret.
    del token_issuer.refresh_tokens[identity]
    with RegistryClient(token_registry.host, creds) as client:
        with pytest.raises(errors.AuthenticationError) as info:
            client.manifest_digest(ref)
    assert identity not in str(info.value)


def test_token_server_down_is_unavailable_naming_it(token_registry, token_issuer, token_creds):
    token_issuer.close()
    with RegistryClient(token_registry.host, token_creds, timeout=2) as client:
        with pytest.raises(errors.RegistryUnavailable) as info:
            client.manifest_digest(f"{token_registry.host}/some/repo:v1")
    assert f"token server {token_issuer.realm}" in str(info.value)
    assert errors.is_transient(info.value)
