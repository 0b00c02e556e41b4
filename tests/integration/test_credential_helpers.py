"""Credentials from the docker config, as Docker resolves them, for existence checks and pushes.

A credential helper of the suite's (``docker-credential-<name>`` on PATH, the real
``get`` protocol) hands out passwords for a registry with htpasswd auth that the test
rotates, as cloud registries (ECR, GCR, ACR) rotate short-lived tokens.
"""

from __future__ import annotations

import base64
import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from credential_fixtures import docker_config  # noqa: E402,F401
from registry_fixtures import (  # noqa: E402,F401
    htpasswd_registry,
    push_image_to,
    registry_workdir,
)

from prefect_flyimage import _docker_config, errors  # noqa: E402
from prefect_flyimage.credentials import (  # noqa: E402
    RegistryCredentials,
    docker_config_credentials,
    resolve_credentials,
)
from prefect_flyimage.engine import Engine  # noqa: E402
from prefect_flyimage.registry import RegistryClient  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def pushed(htpasswd_registry, busybox_image, unique_name):
    creds = RegistryCredentials(htpasswd_registry.host, "ci", htpasswd_registry.users["ci"])
    return push_image_to(htpasswd_registry.host, unique_name, "v1", busybox_image, creds)


def test_stale_then_current_password_from_a_helper(htpasswd_registry, docker_config, pushed):
    current = htpasswd_registry.users["ci"]
    helper = docker_config.helper("rotating", "ci", ["stale-" + secrets.token_hex(8), current], [htpasswd_registry.host])
    docker_config.write({"credHelpers": {htpasswd_registry.host: "rotating"}})

    creds = resolve_credentials(None, htpasswd_registry.host)
    assert creds is not None and creds.helper == "docker-credential-rotating" and helper.calls == 1
    with RegistryClient(htpasswd_registry.host, creds) as client:
        assert client.manifest_digest(pushed.ref) == pushed.digest  # refused once, fetched again
        assert helper.calls == 2 and helper.servers == [htpasswd_registry.host] * 2
        assert client.manifest_digest(pushed.ref) == pushed.digest  # the fresh one is kept
    assert helper.calls == 2
    # Within the process the helper's last answer is reused: no third call.
    assert resolve_credentials(None, htpasswd_registry.host).secret == current and helper.calls == 2


def test_push_refetches_a_refused_helper_password(htpasswd_registry, docker_config, busybox_image, unique_name):
    current = htpasswd_registry.users["ci"]
    helper = docker_config.helper("rotating", "ci", ["stale-" + secrets.token_hex(8), current], [htpasswd_registry.host])
    docker_config.write({"credsStore": "rotating"})  # the store, this time
    ref = f"{htpasswd_registry.host}/{unique_name}:v1"
    with Engine() as engine:
        engine.tag(busybox_image, ref)
        digest = engine.push(ref, resolve_credentials(None, htpasswd_registry.host))
    assert helper.calls == 2
    with RegistryClient(htpasswd_registry.host, RegistryCredentials(htpasswd_registry.host, "ci", current)) as client:
        assert client.manifest_digest(ref) == digest


def test_registry_rotates_the_password_while_we_hold_the_old_one(htpasswd_registry, docker_config, pushed):
    first = htpasswd_registry.users["ci"]
    helper = docker_config.helper("rotating", "ci", [first], [htpasswd_registry.host])
    docker_config.write({"credHelpers": {htpasswd_registry.host: "rotating"}})
    creds = resolve_credentials(None, htpasswd_registry.host)
    with RegistryClient(htpasswd_registry.host, creds) as client:
        assert client.manifest_digest(pushed.ref) == pushed.digest
        rotated = "rotated-" + secrets.token_hex(8)
        htpasswd_registry.set_password("ci", rotated)
        helper.answer(rotated)
        assert client.manifest_digest(pushed.ref) == pushed.digest
    assert helper.calls == 2


def test_always_wrong_helper_is_an_authentication_error_after_one_refetch(htpasswd_registry, docker_config, pushed, busybox_image):
    wrong = "wrong-" + secrets.token_hex(8)
    helper = docker_config.helper("broken", "ci", [wrong], [htpasswd_registry.host])
    docker_config.write({"credHelpers": {htpasswd_registry.host: "broken"}})
    with RegistryClient(htpasswd_registry.host, resolve_credentials(None, htpasswd_registry.host)) as client:
        with pytest.raises(errors.AuthenticationError) as info:
            client.manifest_digest(pushed.ref)
    assert helper.calls == 2
    assert wrong not in str(info.value) and "'ci'" in str(info.value)

    # The push, in a process that has not asked the helper yet: one fetch, one refetch.
    _docker_config.clear_cache()
    ref = pushed.ref.replace(":v1", ":v2")
    with Engine() as engine:
        engine.tag(busybox_image, ref)
        with pytest.raises(errors.AuthenticationError) as push_info:
            engine.push(ref, resolve_credentials(None, htpasswd_registry.host))
    assert isinstance(push_info.value, errors.PushError)
    assert helper.calls == 4
    assert wrong not in str(push_info.value)


def test_explicit_credentials_win_over_the_config(htpasswd_registry, docker_config, pushed):
    helper = docker_config.helper("unused", "ci", ["never-used"], [htpasswd_registry.host])
    docker_config.write({"credHelpers": {htpasswd_registry.host: "unused"}})
    given = RegistryCredentials(htpasswd_registry.host, "ci", htpasswd_registry.users["ci"])
    assert resolve_credentials(given, htpasswd_registry.host) is given
    assert resolve_credentials({"username": "ci", "password": "x"}, htpasswd_registry.host).helper is None
    assert helper.calls == 0


def test_auths_entry_as_docker_login_writes_it(htpasswd_registry, docker_config, pushed):
    pair = base64.b64encode(f"ci:{htpasswd_registry.users['ci']}".encode()).decode()
    docker_config.write({"auths": {f"http://{htpasswd_registry.host}/v2/": {"auth": pair}}})
    creds = resolve_credentials(None, htpasswd_registry.host)
    assert creds.username == "ci" and creds.helper is None
    with RegistryClient(htpasswd_registry.host, creds) as client:
        assert client.manifest_digest(pushed.ref) == pushed.digest


def test_helper_that_knows_nothing_falls_back_to_auths(htpasswd_registry, docker_config, pushed):
    helper = docker_config.helper("empty", "ci", ["x"], ["some.other.registry"])
    pair = base64.b64encode(f"ci:{htpasswd_registry.users['ci']}".encode()).decode()
    docker_config.write({"credsStore": "empty", "auths": {htpasswd_registry.host: {"auth": pair}}})
    creds = docker_config_credentials(htpasswd_registry.host)
    assert creds.secret == htpasswd_registry.users["ci"] and creds.helper is None and helper.calls == 1


def test_missing_helper_fails_only_what_pushes(htpasswd_registry, docker_config, busybox_image, unique_name, tmp_path):
    """A config naming a helper that is not installed (``credsStore: desktop`` copied onto a
    CI runner). With BuildKit a build that never pushes goes on (the registry is asked
    anonymously); the classic builder gets every registry's credentials from docker-py,
    which stops at the helper: a typed AuthenticationError naming it. A push is an
    AuthenticationError naming the helper either way, and nothing is published."""
    from prefect_flyimage.engine import choose_backend
    from prefect_flyimage.pipeline import ensure
    from prefect_flyimage.plan import BuildPlan

    docker_config.write({"credHelpers": {htpasswd_registry.host: "flyimage-not-installed"}})
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo {unique_name} > /id\n")
    plan = BuildPlan.from_dockerfile(tmp_path / "ctx", f"{htpasswd_registry.host}/{unique_name}")
    if choose_backend(plan) == "buildkit":
        built = ensure(plan, push=False)
        assert built.built and built.image_id and not built.pushed
    else:
        with pytest.raises(errors.AuthenticationError, match="docker-credential-flyimage-not-installed"):
            ensure(plan, push=False)
    with pytest.raises(errors.AuthenticationError, match="flyimage-not-installed"):
        ensure(plan, push=True)
    admin = RegistryClient(htpasswd_registry.host, RegistryCredentials(htpasswd_registry.host, "ci", htpasswd_registry.users["ci"]))
    assert admin.manifest_digest(f"{htpasswd_registry.host}/{unique_name}:{plan.tag}") is None
