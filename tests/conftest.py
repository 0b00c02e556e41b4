"""Shared pytest fixtures for prefect-flyimage.

Integration tests (``@pytest.mark.integration``) use the local services that
``scripts/services.sh up`` provides: a dockerd, a Distribution registry with htpasswd auth
on 127.0.0.1:5000 (users ``flyimage`` and ``x``, the "fly token" user), one without auth
on 127.0.0.1:5001, and base images made without pulling anything (busybox, python 3.11,
a stand-in for Prefect's official image).

The ``services`` fixture starts them once per session if ``services.sh status`` says
something is down.  When that fails the test is skipped, or failed when ``CI=true``.

Only pytest, docker (imported lazily) and the standard library are used here.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from unittest import mock

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from project_files import write_files  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES_SH = REPO_ROOT / "scripts" / "services.sh"
CHAIN_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "chain"
DEFAULT_STATE_DIR = "/var/tmp/prefect-flyimage"
SERVICES_UP_TIMEOUT = 1800  # a fresh machine installs packages, debootstraps, builds

#: variables that ``services.sh up`` writes to ``$STATE/env``
SERVICE_ENV_KEYS = (
    "DOCKER_HOST",
    "FLYIMAGE_STATE_DIR",
    "FLYIMAGE_REGISTRY",
    "FLYIMAGE_REGISTRY_USER",
    "FLYIMAGE_REGISTRY_PASSWORD",
    "FLYIMAGE_FLY_TOKEN",
    "FLYIMAGE_REGISTRY_STORAGE",
    "FLYIMAGE_REGISTRY_NOAUTH",
    "FLYIMAGE_REGISTRY_NOAUTH_STORAGE",
    "FLYIMAGE_BUSYBOX_IMAGE",
    "FLYIMAGE_PYTHON_IMAGE",
    "FLYIMAGE_PREFECT_IMAGE",
)
REQUIRED_ENV_KEYS = (
    "FLYIMAGE_REGISTRY",
    "FLYIMAGE_REGISTRY_USER",
    "FLYIMAGE_REGISTRY_PASSWORD",
    "FLYIMAGE_FLY_TOKEN",
    "FLYIMAGE_REGISTRY_NOAUTH",
    "FLYIMAGE_BUSYBOX_IMAGE",
    "FLYIMAGE_PYTHON_IMAGE",
    "FLYIMAGE_PREFECT_IMAGE",
)


def pytest_configure(config: pytest.Config) -> None:
    registered = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    if "integration" not in registered:
        config.addinivalue_line(
            "markers", "integration: needs the real dockerd and registry (scripts/services.sh up)"
        )


# ---------------------------------------------------------------------------------------
# services
# ---------------------------------------------------------------------------------------


def _state_dir() -> Path:
    return Path(os.environ.get("FLYIMAGE_STATE_DIR") or DEFAULT_STATE_DIR)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _unavailable(reason: str) -> None:
    """Skip, or fail when running in CI, where the services must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def parse_env_file(path: Path) -> dict[str, str]:
    """Read ``export KEY='value'`` lines (as written by services.sh)."""
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parts = shlex.split(line, comments=True)
        except ValueError:
            continue
        if parts and parts[0] == "export":
            parts = parts[1:]
        for part in parts:
            key, sep, value = part.partition("=")
            if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                env[key] = value
    return env


def _run_services(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SERVICES_SH), command],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


_SERVICES_CACHE: dict[str, Any] = {}


def _start_services() -> dict[str, str]:
    """Run ``services.sh up`` if needed and return the env file's variables.

    The outcome (env or failure reason) is cached for the whole session.
    """
    if "env" in _SERVICES_CACHE:
        return _SERVICES_CACHE["env"]
    if "error" in _SERVICES_CACHE:
        _unavailable(_SERVICES_CACHE["error"])

    def failed(reason: str) -> None:
        _SERVICES_CACHE["error"] = reason
        _unavailable(reason)

    if not SERVICES_SH.is_file():
        failed(f"{SERVICES_SH} is missing")
    try:
        status = _run_services("status", timeout=120)
        if status.returncode != 0:
            up = _run_services("up", timeout=SERVICES_UP_TIMEOUT)
            if up.returncode != 0:
                failed(
                    f"scripts/services.sh up failed (exit {up.returncode}); output tail:\n"
                    + _tail(up.stdout)
                )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode() if isinstance(exc.output, bytes) else (exc.output or "")
        failed(f"scripts/services.sh timed out after {exc.timeout}s; output tail:\n{_tail(out)}")
    except OSError as exc:
        failed(f"cannot run scripts/services.sh: {exc}")

    env_file = _state_dir() / "env"
    if not env_file.is_file():
        failed(f"scripts/services.sh left no env file at {env_file}")
    env = parse_env_file(env_file)
    if os.environ.get("FLYIMAGE_PREFECT_IMAGE"):
        # A stand-in for another Prefect version (scripts/test.sh's run on the oldest
        # supported Prefect: services.sh standin VERSION) overrides the env file's.
        env["FLYIMAGE_PREFECT_IMAGE"] = os.environ["FLYIMAGE_PREFECT_IMAGE"]
    missing = [key for key in REQUIRED_ENV_KEYS if not env.get(key)]
    if missing:
        failed(f"{env_file} lacks {', '.join(missing)}")
    _SERVICES_CACHE["env"] = env
    return env


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets a private stat cache and an empty docker config (no stored logins)."""
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path_factory.mktemp("statcache")))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path_factory.mktemp("docker-config")))


@pytest.fixture(scope="session")
def services() -> Iterator[dict[str, str]]:
    """The services' variables (see SERVICE_ENV_KEYS), also set in os.environ."""
    env = _start_services()
    with mock.patch.dict(os.environ, env):  # restores the environment at the end of the session
        yield dict(env)


@pytest.fixture(scope="session")
def docker_client(services: dict[str, str]) -> Iterator[Any]:
    """A docker-py ``DockerClient`` for the services' daemon."""
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # docker.errors.DockerException, requests errors
        _unavailable(f"dockerd does not answer at {os.environ.get('DOCKER_HOST')}: {exc}")
    try:
        yield client
    finally:
        client.close()


# ---------------------------------------------------------------------------------------
# registries and images
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registry:
    """A registry reachable at ``host`` (``127.0.0.1:PORT``), over plain HTTP."""

    host: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in pytest output
    storage: str | None = None  # its filesystem storage root, when known

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def auth_config(self) -> dict[str, str] | None:
        """docker-py's ``auth_config`` for this registry (None without credentials)."""
        if self.username is None:
            return None
        return {"username": self.username, "password": self.password or ""}


@pytest.fixture(scope="session")
def registry(services: dict[str, str]) -> Registry:
    """The registry with htpasswd auth, user ``flyimage``."""
    return Registry(
        host=services["FLYIMAGE_REGISTRY"],
        username=services["FLYIMAGE_REGISTRY_USER"],
        password=services["FLYIMAGE_REGISTRY_PASSWORD"],
        storage=services.get("FLYIMAGE_REGISTRY_STORAGE"),
    )


@pytest.fixture(scope="session")
def registry_noauth(services: dict[str, str]) -> Registry:
    """The registry without auth."""
    return Registry(
        host=services["FLYIMAGE_REGISTRY_NOAUTH"],
        storage=services.get("FLYIMAGE_REGISTRY_NOAUTH_STORAGE"),
    )


@pytest.fixture(scope="session")
def fly_registry(services: dict[str, str]) -> Registry:
    """The auth registry as Fly's is used: user ``x``, the API token as password."""
    return Registry(
        host=services["FLYIMAGE_REGISTRY"],
        username="x",
        password=services["FLYIMAGE_FLY_TOKEN"],
        storage=services.get("FLYIMAGE_REGISTRY_STORAGE"),
    )


@pytest.fixture(scope="session")
def busybox_image(services: dict[str, str]) -> str:
    return services["FLYIMAGE_BUSYBOX_IMAGE"]


@pytest.fixture(scope="session")
def python_image(services: dict[str, str]) -> str:
    return services["FLYIMAGE_PYTHON_IMAGE"]


@pytest.fixture(scope="session")
def prefect_image(services: dict[str, str]) -> str:
    return services["FLYIMAGE_PREFECT_IMAGE"]


# ---------------------------------------------------------------------------------------
# per-test helpers
# ---------------------------------------------------------------------------------------


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    slug = slug[:limit].strip("-")
    return slug or "test"


def _remove_images_named(name: str, daemon: str | None = None) -> None:
    """Force-remove every image of ``daemon`` (a DOCKER_HOST; default: this environment's)
    with a repo tag containing ``name``; never raises."""
    environment = dict(os.environ)
    if daemon is not None:
        environment["DOCKER_HOST"] = daemon
    host = environment.get("DOCKER_HOST") or ""
    if host.startswith("unix://") and not os.path.exists(host[len("unix://"):]):
        return  # docker-py leaks the socket of a failed unix connect
    try:
        import docker

        client = docker.from_env(timeout=120, environment=environment)
    except Exception:
        return
    try:
        for image in client.images.list():
            for tag in image.tags:
                if name in tag:
                    try:
                        client.images.remove(tag, force=True)
                    except Exception:
                        pass
    except Exception:
        pass
    finally:
        client.close()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """``t-<test-name-slug>-<8 hex>``: a fresh repository name, valid for Distribution.

    At teardown every image whose tags contain it is removed from the daemon DOCKER_HOST
    named when the test began (a test may point DOCKER_HOST elsewhere; its monkeypatch is
    undone only after this teardown).
    """
    suffix = secrets.token_hex(4)
    name = f"t-{_slug(request.node.name, 60 - len(suffix) - 3)}-{suffix}"
    daemon = os.environ.get("DOCKER_HOST")
    yield name
    _remove_images_named(name, daemon)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One temporary Prefect server (``prefect_test_harness``, ~20 s to start) for the session.

    Uses its own ``PREFECT_HOME``; yields the API URL (also set as ``PREFECT_API_URL``
    in this process's settings while the session runs).
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings({PREFECT_HOME: str(home)}), prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture
def creds(registry: Registry):
    """:class:`prefect_flyimage.RegistryCredentials` for the authenticated registry."""
    from prefect_flyimage import RegistryCredentials

    return RegistryCredentials(registry.host, registry.username, registry.password)


@pytest.fixture
def chain_tree(tmp_path: Path) -> Path:
    """A writable copy of the seven-image docker-pkg tree (tests break parts of it).

    Every image gets its ``test.sh`` here, all from one script (``image-test.sh``: it finds
    the image's name from its own folder), so the copy is a complete docker-pkg tree.
    """
    dest = tmp_path / "tree"
    shutil.copytree(CHAIN_FIXTURES / "tree", dest)
    for folder in dest.iterdir():
        if (folder / "Dockerfile.template").is_file():
            shutil.copy(CHAIN_FIXTURES / "image-test.sh", folder / "test.sh")  # keeps the executable bit
    return dest


@pytest.fixture
def cwd_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """``cwd_project(files, folder=None)``: write ``files`` (relative path -> text) into
    ``tmp_path`` (or a new ``tmp_path/folder``), make it the working directory, return it."""

    def make(files: dict[str, str], folder: str | None = None) -> Path:
        root = write_files(tmp_path / folder if folder else tmp_path, files)
        monkeypatch.chdir(root)
        return root

    return make
