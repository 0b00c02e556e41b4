"""Docker-config credential resolution, the challenge parser and insecure-registry rules (no services).

Credential helpers here are real executables speaking the ``get`` protocol.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from prefect_flyimage import _docker_config, errors
from prefect_flyimage._registry_auth import parse_challenge
from prefect_flyimage.credentials import RegistryCredentials, docker_config_credentials, refetch, resolve_credentials
from prefect_flyimage.registry import RegistryClient, _is_loopback, _listed_insecure, registry_endpoint


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    _docker_config.clear_cache()

    def write(data) -> None:
        (tmp_path / "config.json").write_text(data if isinstance(data, str) else json.dumps(data))
        _docker_config.clear_cache()

    def helper(name: str, body: str) -> Path:
        exe = bindir / f"docker-credential-{name}"
        exe.write_text(f"#!{sys.executable}\nimport json, sys, time\nserver = sys.stdin.read()\n{body}\n")
        exe.chmod(0o755)
        return exe

    write.helper = helper  # type: ignore[attr-defined]
    yield write
    _docker_config.clear_cache()


def _answer(user: str, secret: str) -> str:
    return f"json.dump({{'ServerURL': server, 'Username': {user!r}, 'Secret': {secret!r} + ':' + server}}, sys.stdout)"


def test_cred_helpers_beat_creds_store_beat_auths(config):
    config.helper("one", _answer("u1", "s1"))
    config.helper("store", _answer("u2", "s2"))
    pair = base64.b64encode(b"u3:s3").decode()
    config({"credHelpers": {"a.example:5000": "one"}, "credsStore": "store", "auths": {"a.example:5000": {"auth": pair}, "c.example": {"auth": pair}}})
    a = docker_config_credentials("a.example:5000")
    assert (a.username, a.secret, a.helper) == ("u1", "s1:a.example:5000", "docker-credential-one")
    b = docker_config_credentials("b.example")
    assert (b.username, b.secret, b.helper) == ("u2", "s2:b.example", "docker-credential-store")
    assert "s1" not in repr(a) and "**" in repr(a)


def test_auths_only_and_docker_hub_keys(config):
    pair = base64.b64encode(b"hubuser:hubpass").decode()
    config({"auths": {"https://index.docker.io/v1/": {"auth": pair}}})
    for name in (None, "docker.io", "index.docker.io"):
        found = docker_config_credentials(name)
        assert (found.username, found.secret, found.helper) == ("hubuser", "hubpass", None)
    assert docker_config_credentials("ghcr.io") is None


def test_hub_helper_is_asked_for_the_index_url(config):
    config.helper("hub", _answer("u", "s"))
    config({"credHelpers": {"https://index.docker.io/v1/": "hub"}})
    assert docker_config_credentials("docker.io").secret == "s:https://index.docker.io/v1/"


def test_identity_token_from_a_helper(config):
    config.helper("oauth", _answer("<token>", "refresh"))
    config({"credsStore": "oauth"})
    creds = docker_config_credentials("r.example")
    assert creds.is_identity_token
    assert creds.auth_config() == {"identitytoken": "refresh:r.example", "serveraddress": "r.example"}


def test_explicit_credentials_win_and_no_registry_means_none(config):
    config.helper("store", _answer("u", "s"))
    config({"credsStore": "store"})
    given = RegistryCredentials("r.example", "me", "mine")
    assert resolve_credentials(given, "r.example") is given
    assert resolve_credentials(None, None) is None
    assert resolve_credentials(None, "r.example").username == "u"


def test_no_config_file(config):
    assert docker_config_credentials("r.example") is None


def test_malformed_config_is_ignored_with_a_warning_naming_the_file(config, caplog):
    config('{"auths": {')
    caplog.set_level(logging.WARNING, logger="prefect_flyimage")
    assert docker_config_credentials("r.example") is None
    assert "config.json" in caplog.text and "ignoring docker config" in caplog.text


def test_missing_helper_is_an_authentication_error_naming_it(config):
    config({"credsStore": "nowhere"})
    with pytest.raises(errors.AuthenticationError, match="docker-credential-nowhere.*not on PATH"):
        docker_config_credentials("r.example")


def test_hanging_helper_times_out(config, monkeypatch):
    config.helper("slow", "time.sleep(30)")
    config({"credsStore": "slow"})
    monkeypatch.setenv("PREFECT_FLYIMAGE_CREDENTIAL_HELPER_TIMEOUT", "0.5")
    with pytest.raises(errors.AuthenticationError, match="did not answer within 0.5s"):
        docker_config_credentials("r.example")


def test_helper_failure_and_garbage_are_errors_that_do_not_echo_secrets(config):
    config.helper("fails", "print('keychain locked'); sys.exit(3)")
    config({"credsStore": "fails"})
    with pytest.raises(errors.AuthenticationError, match=r"exit 3\): keychain locked"):
        docker_config_credentials("r.example")
    config.helper("garbage", "print('hunter2-not-json')")
    config({"credsStore": "garbage"})
    with pytest.raises(errors.AuthenticationError) as info:
        docker_config_credentials("r.example")
    assert "hunter2" not in str(info.value)


def test_not_found_answers_are_none(config):
    config.helper("none", "print('credentials not found in native keychain'); sys.exit(1)")
    config({"credsStore": "none"})
    assert docker_config_credentials("r.example") is None
    config.helper("empty", "json.dump({'Username': '', 'Secret': ''}, sys.stdout)")
    config({"credsStore": "empty"})
    assert docker_config_credentials("r.example") is None


def test_answers_are_cached_and_refetch_asks_again(config, tmp_path):
    counter = tmp_path / "count"
    counter.write_text("0")
    config.helper("count", f"n = int(open({str(counter)!r}).read()) + 1\nopen({str(counter)!r}, 'w').write(str(n))\n" + _answer("u", "s") .replace("'s'", "str(n)"))
    config({"credsStore": "count"})
    first = docker_config_credentials("r.example")
    assert docker_config_credentials("r.example").secret == first.secret == "1:r.example"
    fresh = refetch(first)
    assert fresh is not None and fresh.secret == "2:r.example"
    assert docker_config_credentials("r.example").secret == "2:r.example"  # the fresh answer is kept
    assert refetch(RegistryCredentials("r.example", "u", "given")) is None  # not from a helper: nothing to refetch


def test_parse_challenge():
    scheme, params = parse_challenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_insecure_registries(monkeypatch):
    assert _is_loopback("127.0.0.1:5000") and _is_loopback("127.3.4.5") and _is_loopback("localhost:5000")
    assert _is_loopback("[::1]:5000") and not _is_loopback("10.0.0.1:5000") and not _is_loopback("ghcr.io")
    monkeypatch.setenv("PREFECT_FLYIMAGE_INSECURE_REGISTRIES", "reg.lan:5000, 10.1.0.0/16")
    assert _listed_insecure("reg.lan:5000") and _listed_insecure("10.1.2.3:443") and not _listed_insecure("10.2.0.1")
    assert not _listed_insecure("ghcr.io")


def test_docker_hub_endpoint_and_bad_timeout(monkeypatch):
    assert registry_endpoint(None) == registry_endpoint("docker.io") == "registry-1.docker.io"
    assert registry_endpoint("https://ghcr.io/v2/") == "ghcr.io"
    monkeypatch.setenv("PREFECT_FLYIMAGE_REGISTRY_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="PREFECT_FLYIMAGE_REGISTRY_TIMEOUT"):
        RegistryClient("ghcr.io")


def test_docker_hub_names_map_to_library_repositories():
    with RegistryClient(None) as client:
        assert client._repository("busybox:1")[1] == "library/busybox"
        assert client._repository("docker.io/org/app:1")[1] == "org/app"
        with pytest.raises(ValueError, match="is not in registry registry-1.docker.io"):
            client._repository("ghcr.io/org/app:1")
