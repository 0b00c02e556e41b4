"""The secrets scan for the new credential paths: helper passwords and bearer tokens.

``ensure`` runs with credentials from a credential helper only (stale first, then the
current one), against a registry with htpasswd auth and one with token auth. Neither the
passwords (plain or base64 as in a Basic header) nor any token the issuer handed out may
appear in log records (every logger, DEBUG), exception messages and stderr, progress
output, the result and its artifact markdown, any process's argv, or the image's history
and layers. (test_fly_registry.py scans the Fly token path the same way.)
"""

from __future__ import annotations

import base64
import io
import logging
import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from credential_fixtures import ArgvSampler, docker_config, image_blobs  # noqa: E402,F401
from registry_fixtures import (  # noqa: E402,F401
    htpasswd_registry,
    registry_workdir,
    token_issuer,
    token_registry,
)

from prefect_flyimage import _docker_config, errors  # noqa: E402
from prefect_flyimage.artifacts import build_result_markdown  # noqa: E402
from prefect_flyimage.credentials import resolve_credentials  # noqa: E402
from prefect_flyimage.pipeline import ensure  # noqa: E402
from prefect_flyimage.plan import BuildPlan  # noqa: E402
from prefect_flyimage.registry import RegistryClient  # noqa: E402

pytestmark = pytest.mark.integration


def _forms(user: str, secret: str) -> list[str]:
    return [secret, base64.b64encode(f"{user}:{secret}".encode()).decode()]


def _scan(host: str, user: str, passwords: list[str], tokens_of, tmp_path: Path, busybox_image: str,
          unique_name: str, docker_config, caplog) -> None:
    stale, current, wrong = passwords
    helper = docker_config.helper("rotating", user, [stale, current], [host])
    docker_config.write({"credHelpers": {host: "rotating"}})
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    # The build sees its whole environment: a leaked credential would land in /env.txt.
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY app.txt /app.txt\nRUN env > /env.txt\n")
    (ctx / "app.txt").write_text("one\n")
    plan = BuildPlan.from_dockerfile(ctx, f"{host}/{unique_name}", tag="v1", network="none")
    progress = io.StringIO()
    caplog.set_level(logging.DEBUG)
    with ArgvSampler() as sampler:
        result = ensure(plan, stream_progress_to=progress)
        assert result.built and result.pushed and helper.calls >= 2  # the stale one was refused
        with RegistryClient(host, resolve_credentials(None, host)) as client:
            assert client.manifest_digest(result.reference) == result.digest
        again = ensure(plan)
        assert not again.built and not again.pushed and again.digest == result.digest
        # A helper that only has a wrong password: refused, fetched again once, reported.
        _docker_config.clear_cache()
        helper.answer(wrong)
        (ctx / "app.txt").write_text("two\n")
        changed = BuildPlan.from_dockerfile(ctx, f"{host}/{unique_name}", tag="v2", network="none")
        with pytest.raises(errors.AuthenticationError) as info:
            ensure(changed)
    tokens = tokens_of()
    leaks = [form for p in passwords for form in _forms(user, p)] + tokens
    history, blobs = image_blobs(result.reference)
    assert "env > /env.txt" in history and any(b"PATH=" in blob for blob in blobs)  # we really looked
    places = {
        "logs": caplog.text,
        "log args": " ".join(repr(r.args) for r in caplog.records),
        "error": str(info.value) + (info.value.stderr or "") + repr(info.value.args),
        "progress": progress.getvalue(),
        "result": repr(result) + repr(again),
        "artifact": build_result_markdown([result, again]),
        "argv": "\n".join(sampler.seen),
        "history": history,
    }
    for place, text in places.items():
        found = [i for i, leak in enumerate(leaks) if leak in text]
        assert not found, f"secret #{found} of {len(leaks)} appears in {place}"
    assert not [blob for blob in blobs for leak in leaks if leak.encode() in blob], "a secret is in an image layer"


def test_helper_password_never_leaks(htpasswd_registry, docker_config, tmp_path, busybox_image, unique_name, caplog):
    current = htpasswd_registry.users["ci"]
    passwords = ["stale-" + secrets.token_hex(8), current, "wrong-" + secrets.token_hex(8)]
    _scan(htpasswd_registry.host, "ci", passwords, lambda: [], tmp_path, busybox_image, unique_name, docker_config, caplog)


def test_helper_password_and_bearer_tokens_never_leak(
    token_registry, token_issuer, docker_config, tmp_path, busybox_image, unique_name, caplog
):
    current = token_issuer.users["ci"]
    passwords = ["stale-" + secrets.token_hex(8), current, "wrong-" + secrets.token_hex(8)]

    def tokens() -> list[str]:
        assert token_issuer.issued, "no bearer token was ever issued: the scan would prove nothing"
        return list(token_issuer.issued)

    _scan(token_registry.host, "ci", passwords, tokens, tmp_path, busybox_image, unique_name, docker_config, caplog)


def test_token_is_redacted_from_a_registry_error_body(token_registry, token_issuer, monkeypatch):
    """An error body that quotes the token (some registries echo the request) is redacted."""
    import httpx

    from prefect_flyimage.credentials import RegistryCredentials

    creds = RegistryCredentials(token_registry.host, "ci", token_issuer.users["ci"])
    with RegistryClient(token_registry.host, creds) as client:
        assert client.manifest_digest(f"{token_registry.host}/some/repo:v1") is None  # gets a token
        token = token_issuer.issued[-1]
        echo = httpx.Response(418, content=f"bad request, token {token} password {creds.secret}".encode())
        error = client._fail(echo, "some/repo:v1")
    assert token not in str(error) and creds.secret not in str(error) and "***" in str(error)
