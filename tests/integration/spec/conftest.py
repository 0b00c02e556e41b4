"""Fixtures for building declarative Image specs in the real daemon."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from prefect_flyimage.engine import Engine


def make_wheel(folder: Path, name: str, version: str, modules: dict[str, str], scripts: dict[str, str] | None = None) -> Path:
    """Write a pure-Python wheel by hand: a zip with METADATA, WHEEL, entry points and RECORD."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = dict(modules)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    files[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: prefect-flyimage-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    if scripts:
        files[f"{info}/entry_points.txt"] = "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items())
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two local wheels: ``flyimage-demo`` (with a console script) and ``flyimage-extra``."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    make_wheel(
        folder, "flyimage-demo", "0.1.0",
        {"flyimage_demo/__init__.py": "def main():\n    print('demo says hi')\n\nVERSION = '0.1.0'\n"},
        scripts={"flyimage-demo": "flyimage_demo:main"},
    )
    make_wheel(folder, "flyimage-extra", "2.0.0", {"flyimage_extra.py": "ANSWER = 42\n"})
    return folder


@pytest.fixture(autouse=True)
def spec_settings(services: dict[str, str], python_image: str, tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds use the host network (no bridge here) and the local Debian Python stand-in."""
    monkeypatch.setenv("PREFECT_FLYIMAGE_BUILD_NETWORK", "host")
    # flyimage/python:3.11-bookworm -> flyimage/python:{python_version}-bookworm
    monkeypatch.setenv("PREFECT_FLYIMAGE_DEBIAN_BASE", python_image.replace("3.11", "{python_version}"))
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path_factory.mktemp("stat-cache")))
    monkeypatch.delenv("PREFECT_FLYIMAGE_REGISTRY", raising=False)


@pytest.fixture
def engine(docker_client: Any) -> Engine:
    return Engine(docker_client)


@pytest.fixture
def run_in(engine: Engine) -> Iterator[Any]:
    """``run_in(image, "shell command")`` -> output; fails the test on a non-zero exit."""

    def run(image: str, command: str, network: str = "none") -> str:
        code, output = engine.run(image, ["sh", "-c", command], network=network, timeout=300)
        assert code == 0, f"`{command}` exited {code} in {image}:\n{output}"
        return output

    yield run
