"""Credential helpers, a private docker config and the secrets scan's tools, for the tests.

Imported like ``registry_fixtures`` (put this folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["ArgvSampler", "CredentialHelper", "DockerConfig", "docker_config", "image_blobs"]


# ---- credential helpers (the docker-credential-* protocol) ------------------------------------------------

_HELPER_SOURCE = '''#!{python}
"""A docker credential helper of the test suite: answers from {state}."""
import json, sys
state_path = {state!r}
if sys.argv[1:] != ["get"]:
    sys.exit(2)
server = sys.stdin.read().strip()
with open(state_path) as fh:
    state = json.load(fh)
state["calls"] += 1
state["servers"].append(server)
with open(state_path, "w") as fh:
    json.dump(state, fh)
if server not in state["registries"]:
    print("credentials not found in native keychain")
    sys.exit(1)
answers = state["answers"]
secret = answers[min(state["calls"], len(answers)) - 1]
json.dump({{"ServerURL": server, "Username": state["username"], "Secret": secret}}, sys.stdout)
'''


class CredentialHelper:
    """``docker-credential-<name>`` on PATH, answering ``answers[0]``, ``answers[1]``, ... (the last repeats).

    ``calls`` counts the ``get`` requests, ``servers`` lists what was asked for. Write
    ``answers`` to change what later calls return (a rotated token).
    """

    def __init__(self, bindir: Path, name: str, username: str, answers: list[str], registries: list[str]) -> None:
        self.name = name
        self.program = f"docker-credential-{name}"
        self.state_path = bindir / f"{name}.json"
        self._write({"calls": 0, "servers": [], "username": username, "answers": answers, "registries": registries})
        exe = bindir / self.program
        import sys

        exe.write_text(_HELPER_SOURCE.format(python=sys.executable, state=str(self.state_path)))
        exe.chmod(0o755)

    def _read(self) -> dict:
        return json.loads(self.state_path.read_text())

    def _write(self, state: dict) -> None:
        self.state_path.write_text(json.dumps(state))

    @property
    def calls(self) -> int:
        return self._read()["calls"]

    @property
    def servers(self) -> list[str]:
        return self._read()["servers"]

    def answer(self, *answers: str) -> None:
        """From the next call on, answer these (in turn; the last repeats)."""
        state = self._read()
        state["answers"] = [*(["unused"] * state["calls"]), *answers]
        self._write(state)


class DockerConfig:
    """Writes ``$DOCKER_CONFIG/config.json`` (the per-test empty dir) and makes helpers."""

    def __init__(self, path: Path, bindir: Path) -> None:
        self.dir = path
        self.bindir = bindir

    def write(self, config: dict) -> None:
        from prefect_flyimage import _docker_config

        (self.dir / "config.json").write_text(json.dumps(config))
        _docker_config.clear_cache()

    def helper(self, name: str, username: str, answers: list[str], registries: list[str]) -> CredentialHelper:
        from prefect_flyimage import _docker_config

        _docker_config.clear_cache()
        return CredentialHelper(self.bindir, name, username, answers, registries)


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DockerConfig]:
    """The test's private docker config dir, plus a bin dir on PATH for credential helpers."""
    from prefect_flyimage import _docker_config

    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    bindir = tmp_path / "helper-bin"
    bindir.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    _docker_config.clear_cache()
    yield DockerConfig(config_dir, bindir)
    _docker_config.clear_cache()


# ---- the secrets scan -------------------------------------------------------------------------------------


class ArgvSampler:
    """Samples every process's argv (what ``ps -eo args`` shows) in a tight loop."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as fh:
                            args = fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
                    except OSError:
                        continue
                    if args:
                        self.seen.add(args)

    def __enter__(self) -> "ArgvSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.seen.update(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines())


def image_blobs(ref: str) -> tuple[str, list[bytes]]:
    """``docker history --no-trunc`` of ``ref`` and every file of ``docker save`` (layers unpacked)."""
    import io
    import tarfile

    history = subprocess.run(["docker", "history", "--no-trunc", ref], capture_output=True, text=True, check=True).stdout
    saved = subprocess.run(["docker", "save", ref], capture_output=True, check=True).stdout
    blobs = [saved]
    with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
        for member in outer.getmembers():
            if member.isfile() and member.name.endswith(".tar"):
                with tarfile.open(fileobj=outer.extractfile(member)) as layer:
                    blobs += [layer.extractfile(e).read() for e in layer.getmembers() if e.isfile()]
    return history, blobs
