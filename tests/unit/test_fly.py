"""prefect_flyimage.fly without a Docker daemon: names, token lookup, flyctl fallback, errors."""

from __future__ import annotations

import asyncio
import inspect
import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from prefect_flyimage import errors, fly

TOKEN = "FlyV1 fm2_unit-test-token-3c9e1f"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (fly.TOKEN_ENV, fly.CREDENTIALS_BLOCK_ENV, fly.TOKEN_SECRET_ENV, fly.REGISTRY_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


def write_flyctl(bindir: Path, body: str) -> Path:
    """A real executable named flyctl (the fallback is exercised by running it)."""
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / "flyctl"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# ---- flaude compatibility -------------------------------------------------------------


@pytest.mark.parametrize(
    "func, expected",
    [
        ("ensure_image", dict(tag="latest", token=None, docker_context=None, build_timeout=600, push_timeout=600)),
        ("docker_build", dict(tag="latest", platform="linux/amd64", docker_context=None, timeout=600)),
        ("docker_push", dict(tag="latest", timeout=600)),
        ("docker_login_fly", dict(token=None)),
    ],
)
def test_flaude_signatures_are_kept(func: str, expected: dict) -> None:
    fn = getattr(fly, func)
    assert inspect.iscoroutinefunction(fn)
    params = inspect.signature(fn).parameters
    if func != "docker_login_fly":
        first = next(iter(params.values()))
        assert first.name == "app_name" and first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    for name, default in expected.items():
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params[name].default == default, name
    # Our extras are keyword-only with defaults, so flaude call sites keep working.
    extras = [p for n, p in params.items() if n not in expected and n != "app_name"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not p.empty for p in extras)


def test_default_tag_and_error_type_match_flaude() -> None:
    assert fly.DEFAULT_TAG == "latest"
    assert fly.ImageBuildError is errors.ImageBuildError
    for sub in (errors.BuildError, errors.PushError, errors.AuthenticationError, fly.FlyContextError, fly.MissingFlyToken):
        assert issubclass(sub, fly.ImageBuildError)


# ---- app names and references ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "my-app", "app2", "a-1-b", "x" * 63, "a--b"])
def test_valid_app_names(name: str) -> None:
    assert fly.validate_app_name(name) == name


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "non-empty"),
        ("My-App", "start with a lower-case letter"),
        ("1app", "start with a lower-case letter"),
        ("-app", "start with a lower-case letter"),
        ("my_app", "'_'"),
        ("my.app", "'.'"),
        ("myApp", "'A'"),
        ("app/x", "'/'"),
        ("ä-app", "start with a lower-case letter"),
        ("x" * 64, "64 characters"),
    ],
)
def test_invalid_app_names_are_rejected_clearly(name: str, reason: str) -> None:
    with pytest.raises(fly.InvalidAppName) as info:
        fly.validate_app_name(name)
    assert isinstance(info.value, ValueError) and isinstance(info.value, errors.FlyImageError)
    message = str(info.value)
    assert reason in message and "lower-case letters, digits and '-'" in message


def test_invalid_app_name_fails_before_any_work(tmp_path: Path) -> None:
    # No Dockerfile, no token, no daemon needed: the name is checked first.
    with pytest.raises(fly.InvalidAppName):
        asyncio.run(fly.ensure_image("Bad_Name", docker_context=tmp_path))
    with pytest.raises(fly.InvalidAppName):
        asyncio.run(fly.docker_push("Bad_Name"))


def test_image_ref_and_registry_host(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fly.image_ref("my-app") == "registry.fly.io/my-app:latest"
    assert fly.image_ref("my-app", "v2") == "registry.fly.io/my-app:v2"
    monkeypatch.setenv(fly.REGISTRY_ENV, "127.0.0.1:5000")
    assert fly.image_ref("my-app") == "127.0.0.1:5000/my-app:latest"
    assert fly.image_ref("my-app", registry="https://reg.example.com/") == "reg.example.com/my-app:latest"
    monkeypatch.setenv(fly.REGISTRY_ENV, "https://registry.fly.io/v2/")
    assert fly.fly_registry_host() == "registry.fly.io"


# ---- token lookup --------------------------------------------------------------------------


def test_no_token_anywhere_gives_none() -> None:
    assert fly.fly_credentials() is None
    assert fly.resolve_fly_token() is None


def test_token_argument_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fly.TOKEN_ENV, "from-env")
    creds = fly.fly_credentials(TOKEN)
    assert creds is not None
    assert (creds.registry, creds.username, creds.secret) == ("registry.fly.io", "x", TOKEN)
    assert TOKEN not in repr(creds)
    assert fly.fly_credentials(SecretStr(f"  {TOKEN}\n")).secret == TOKEN  # pasted with a newline
    assert fly.fly_credentials().secret == "from-env"
    assert fly.fly_credentials("   ").secret == "from-env"  # blank argument = not given


def test_credentials_follow_the_registry_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fly.REGISTRY_ENV, "127.0.0.1:5000")
    assert fly.fly_credentials(TOKEN).registry == "127.0.0.1:5000"
    assert fly.fly_credentials(TOKEN, registry="other:1").registry == "other:1"


def test_unloadable_block_is_an_authentication_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Point Prefect at an API that refuses connections: loading the block must fail
    # with a message naming the block and the variable (and no retry loop).
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
    monkeypatch.setenv(fly.TOKEN_SECRET_ENV, "no-such-secret")
    with pytest.raises(errors.AuthenticationError) as info:
        fly.fly_credentials()
    assert "no-such-secret" in str(info.value) and fly.TOKEN_SECRET_ENV in str(info.value)
    assert not fly.is_transient(info.value)


# ---- login without a token: flyctl fallback or a clear error --------------------------------------


def test_no_token_and_no_flyctl_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(fly.MissingFlyToken) as info:
        asyncio.run(fly.docker_login_fly())
    exc = info.value
    assert isinstance(exc, fly.ImageBuildError) and isinstance(exc, errors.AuthenticationError)
    assert exc.returncode is None
    for hint in ("token=", "FLY_API_TOKEN", fly.CREDENTIALS_BLOCK_ENV, fly.TOKEN_SECRET_ENV, "flyctl auth login"):
        assert hint in str(exc)
    assert not fly.is_transient(exc)


def test_flyctl_auth_docker_is_the_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log = tmp_path / "flyctl.log"
    write_flyctl(tmp_path / "bin", f'echo "$@" >> {log}\necho "Authentication successful"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    asyncio.run(fly.docker_login_fly())
    assert log.read_text().split("\n")[0] == "auth docker"


def test_token_means_flyctl_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # With a token the login goes to `docker login`; flyctl must not run. The registry
    # host is unroutable, so docker login fails, but flyctl's log stays empty.
    log = tmp_path / "flyctl.log"
    write_flyctl(tmp_path / "bin", f'echo "$@" >> {log}\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(fly.ImageBuildError) as info:
        asyncio.run(fly.docker_login_fly(token=TOKEN, registry="127.0.0.1:9"))
    assert not log.exists()
    assert TOKEN not in str(info.value) and TOKEN not in (info.value.stderr or "")


def test_failing_flyctl_reports_returncode_and_stderr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_flyctl(tmp_path / "bin", 'echo "Error: no access token available. Please login with flyctl auth login" >&2\nexit 3\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(errors.AuthenticationError) as info:
        asyncio.run(fly.docker_login_fly())
    assert info.value.returncode == 3
    assert "no access token available" in info.value.stderr
    assert "no access token available" in str(info.value)
    assert not fly.is_transient(info.value)


# ---- context errors: no process runs, returncode None ---------------------------------------------


def test_missing_context_directory(tmp_path: Path) -> None:
    with pytest.raises(fly.FlyContextError) as info:
        asyncio.run(fly.ensure_image("my-app", token=TOKEN, docker_context=tmp_path / "nope"))
    assert isinstance(info.value, errors.ContextError) and info.value.returncode is None
    assert str(tmp_path / "nope") in str(info.value)


def test_missing_dockerfile_in_default_context_names_the_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(fly.ImageBuildError) as info:
        asyncio.run(fly.docker_build("my-app"))
    assert info.value.returncode is None and info.value.stderr == ""
    assert str(tmp_path / "Dockerfile") in str(info.value)


# ---- retry policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc, transient",
    [
        (errors.RegistryUnavailable("down", "r"), True),
        (errors.PushUnavailableError("down", "r"), True),
        (errors.PushTimeout("aborted", "r"), True),
        (errors.BuildTimeout("timed out"), True),
        (errors.PushError("manifest invalid", "r"), False),
        (errors.DockerUnavailable("no daemon"), True),
        (errors.AuthenticationError("denied", "r"), False),
        (errors.PushAuthenticationError("denied", "r"), False),
        (fly.MissingFlyToken("none", "r"), False),
        (errors.BuildError("RUN false failed"), False),
        (fly.InvalidAppName("A", "bad"), False),
        (fly.FlyContextError("no Dockerfile"), False),
        (RuntimeError("?"), False),
    ],
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert fly.is_transient(exc) is transient


def test_retry_condition_reads_the_failed_state() -> None:
    from prefect.states import Failed

    from prefect_flyimage import fly_tasks

    assert fly_tasks.retry_on_transient(None, None, Failed(data=errors.RegistryUnavailable("down", "r"))) is True
    assert fly_tasks.retry_on_transient(None, None, Failed(data=errors.PushAuthenticationError("no", "r"))) is False
    # One retry policy: the tasks module's (fly_tasks imports fly, never the reverse).
    from prefect_flyimage import tasks

    assert fly_tasks.retry_on_transient is tasks.retry_on_transient
    assert fly_tasks.ensure_fly_image.retry_condition_fn is tasks.retry_on_transient
    assert fly_tasks.ensure_fly_image.retries >= 1
    assert not hasattr(fly, "ensure_fly_image")
