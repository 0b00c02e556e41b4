"""The prefect-flyimage command: JSON output, exit codes, help examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_flyimage.cli import EXIT_AUTH, EXIT_INFRA, EXIT_OK, EXIT_USAGE, main

pytestmark = pytest.mark.integration


def run(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefect_flyimage.cli", *args], input=stdin, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=600,
    )


@pytest.fixture
def project(tmp_path: Path, busybox_image: str, monkeypatch) -> Path:
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY a.txt /a.txt\n")
    (tmp_path / "p" / "a.txt").write_text("a\n")
    return tmp_path / "p"


def test_ensure_json_then_cached(project, registry, unique_name):
    repo = f"{registry.host}/{unique_name}"
    first = run("ensure", str(project), "-r", repo, "-u", registry.username, "--password-stdin", "--json", stdin=registry.password + "\n")
    assert first.returncode == EXIT_OK, first.stderr
    data = json.loads(first.stdout)
    assert data["built"] and data["pushed"] and data["digest"].startswith("sha256:")
    assert registry.password not in first.stdout + first.stderr
    second = run("ensure", str(project), "-r", repo, "-u", registry.username, "--password-stdin", "--json", stdin=registry.password + "\n")
    assert json.loads(second.stdout)["cached"] is True
    inspect = run("inspect", str(project), "-r", repo, "--json", "-u", registry.username, "--password-stdin", stdin=registry.password + "\n")
    info = json.loads(inspect.stdout)
    assert info["registry_digest"] == data["digest"] and info["files"] == 2


def test_exit_codes(project, registry, unique_name):
    repo = f"{registry.host}/{unique_name}"
    bad = run("ensure", str(project), "-r", repo, "-u", registry.username, "--password-stdin", "--json", stdin="wrong\n")
    assert bad.returncode == EXIT_AUTH and json.loads(bad.stdout)["error"] == "AuthenticationError"
    assert run("build", str(project / "missing"), "-r", repo).returncode == EXIT_USAGE
    assert run("build", str(project), "-r", "Bad/Name").returncode == EXIT_USAGE
    down = run("build", str(project), "-r", repo, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert down.returncode == EXIT_INFRA and "DockerUnavailable" in down.stderr


def test_dockerfile_command_and_help_examples(project):
    assert main(["dockerfile", str(project)]) == EXIT_OK
    auto = run("dockerfile", str(project.parent), "-f", "auto")
    assert auto.returncode == EXIT_OK and auto.stdout.startswith("FROM prefecthq/prefect:")
    for command in ("build", "ensure", "push", "dockerfile", "inspect", "chain"):
        out = run(command, "--help")
        assert out.returncode == 0 and "Example: prefect-flyimage" in out.stdout, command
    fly_help = run("fly", "ensure", "--help")
    assert "Example:" in fly_help.stdout
