"""Command-line mistakes: the usage message on stderr and exit 2, never a traceback.

Runs the installed ``prefect-flyimage`` entry point in real subprocesses (the
environment, PYTHONPATH included, is inherited). Every case fails while parsing or
validating arguments, before any Docker daemon or registry is contacted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ENTRY = shutil.which("prefect-flyimage")


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    (tmp_path / "broken.py").write_text("def app(:\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "notimage.py").write_text("app = 1\n")
    (tmp_path / "bad-values.yaml").write_text("scan_workers: abc\nbuild_timeout: -5\n")
    return tmp_path


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [ENTRY] if ENTRY else [sys.executable, "-m", "prefect_flyimage.cli"]
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock", "COLUMNS": "200"}
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)


USAGE_ERRORS = [
    # unknown options and commands, no command
    (),
    ("--bogus",),
    ("nocommand",),
    ("build", "--bogus", "."),
    ("ensure", ".", "-r", "app", "--bogus"),
    ("push", "--bogus", "app:1"),
    ("inspect", ".", "-r", "app", "--bogus"),
    ("dockerfile", "--bogus"),
    ("fly",),
    ("fly", "nocommand"),
    ("fly", "ensure", "my-app", "--bogus"),
    # missing required options and arguments
    ("build", "."),
    ("ensure", "."),
    ("inspect", "."),
    ("push",),
    ("fly", "ensure"),
    ("build", ".", "-r"),
    # bad option values
    ("build", ".", "-r", "app", "--force=yes"),
    ("inspect", ".", "-r", "app", "--remote=3"),
    ("build", ".", "-r", "Bad/Name"),
    ("build", ".", "-r", "app:tag"),
    ("build", ".", "-r", ""),
    ("build", ".", "-r", "app", "--tag", "-leading-dash"),
    ("build", ".", "-r", "app", "--tag", ""),
    ("build", ".", "-r", "app", "--build-arg", "NOEQUALS"),
    ("build", ".", "-r", "app", "--build-arg", "=value"),
    ("build", ".", "-r", "app", "--backend", "podman"),
    ("build", ".", "-r", "app", "--platform", "linux//amd64"),
    ("build", ".", "-r", "app", "--target", ""),
    ("build", ".", "-r", "app", "--dockerfile", ""),
    ("build", ".", "-r", "app", "--dockerfile", "Missing.Dockerfile"),
    ("build", "no-such-dir", "-r", "app"),
    ("ensure", "Dockerfile", "-r", "app"),  # a file, not a folder
    ("push", "Bad:ref"),
    ("push", "app:bad tag"),
    ("fly", "ensure", "Bad_App"),
    ("fly", "ensure", "my-app", "--tag", "bad tag"),
    ("fly", "ensure", "my-app", "--context", "no-such-dir"),
    ("dockerfile", "--spec", "nocolon"),
    ("dockerfile", "--spec", "no_such_module:app"),
    ("dockerfile", "--spec", "missing.py:app"),
    ("dockerfile", "--spec", "broken.py:app"),
    ("dockerfile", "--spec", "raises.py:app"),
    ("dockerfile", "--spec", "notimage.py:app"),
    ("dockerfile", "--spec", "notimage.py:other"),
    ("dockerfile", ".", "-f", "Missing.Dockerfile"),
    ("inspect", ".", "-r", "app", "--spec", "images.py:app"),  # one of them, not both
    ("inspect", "--spec", "nocolon"),
    ("inspect", "--spec", "notimage.py:app"),
    ("inspect", "--spec", "broken.py:app"),
    # chain: docker-pkg's argparse command line
    ("chain",),
    ("chain", "--bogus", "build", "."),
    ("chain", "build"),
    ("chain", "nomode", "."),
    ("chain", "build", "--workers", "0", "."),
    ("chain", "build", "--workers", "x", "."),
    ("chain", "build", "no-such-dir"),
    ("chain", "-c", "no-such-config.yaml", "build", "."),
    ("chain", "update", "", "."),
    ("chain", "-c", "bad-values.yaml", "build", "."),
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=lambda a: " ".join(a) or "<none>")
def test_usage_error_prints_usage_and_exits_2(args: tuple[str, ...], ctx: Path) -> None:
    proc = run(*args, cwd=ctx)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "usage:" in proc.stderr.lower(), proc.stderr


def test_usage_error_names_the_bad_value(ctx: Path) -> None:
    proc = run("build", ".", "-r", "Bad/Name", cwd=ctx)
    assert "--repository" in proc.stderr and "Bad/Name" in proc.stderr
    proc = run("build", ".", "-r", "app", "--build-arg", "NOEQUALS", cwd=ctx)
    assert "--build-arg" in proc.stderr and "NOEQUALS" in proc.stderr
    proc = run("chain", "build", "--workers", "0", ".", cwd=ctx)
    assert "--workers" in proc.stderr


@pytest.mark.parametrize("args", [("--help",), ("build", "--help"), ("fly", "ensure", "--help"), ("chain", "--help")])
def test_help_exits_0(args: tuple[str, ...], ctx: Path) -> None:
    proc = run(*args, cwd=ctx)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout.lower()


def test_in_process_main_returns_2(ctx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prefect_flyimage.cli import main

    assert main(["build", str(ctx), "--bogus"]) == 2
    assert "Usage:" in capsys.readouterr().err


def test_dockerfile_of_a_spec(ctx: Path) -> None:
    (ctx / "images.py").write_text(
        "from prefect_flyimage import Image\n"
        "app = Image.from_base('busybox:1').clone(name='x').with_commands('echo spec-ok')\n"
    )
    proc = run("dockerfile", "--spec", "images.py:app", cwd=ctx)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "FROM busybox:1" and "RUN echo spec-ok" in proc.stdout
