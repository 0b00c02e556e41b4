"""Processes the engine runs: the docker CLI (BuildKit builds, ``docker login``) and others.

:func:`run_streaming` runs a command in its own process group, streams its output and
kills the whole group on timeout, so no child outlives the call.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
from collections import deque
from typing import Any, Optional, TextIO

from ..errors import DockerUnavailable
from ._docker import Watchdog

__all__ = ["TAIL_LINES", "buildkit_available", "buildx_available", "docker_cli", "run_streaming", "write"]

#: Lines of build output kept for error messages.
TAIL_LINES = 25


def docker_cli() -> str:
    """The docker CLI to run BuildKit builds with.

    ``$PREFECT_FLYIMAGE_DOCKER_CLI`` wins; otherwise Debian's ``/usr/bin/docker`` is
    preferred because newer CLIs need the separate buildx plugin for BuildKit.
    """
    env = os.environ.get("PREFECT_FLYIMAGE_DOCKER_CLI")
    if env:
        return env
    if os.path.exists("/usr/bin/docker"):
        return "/usr/bin/docker"
    found = shutil.which("docker")
    if not found:
        raise DockerUnavailable("no docker CLI found on PATH; BuildKit builds need it (install docker.io)")
    return found


@functools.lru_cache(maxsize=None)
def _cli_has_buildx(cli: str) -> bool:
    try:
        return subprocess.run([cli, "buildx", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.lru_cache(maxsize=None)
def _cli_can_buildkit(cli: str) -> bool:
    if _cli_has_buildx(cli):
        return True
    try:
        out = subprocess.run([cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    # Before Docker 23 the CLI drove BuildKit itself; later ones need the buildx plugin.
    match = re.match(r"(\d+)\.", out.stdout.strip())
    return bool(match) and int(match.group(1)) < 23


def buildkit_available() -> bool:
    """True when :func:`docker_cli` can run BuildKit builds (built in, or the buildx plugin)."""
    try:
        return _cli_can_buildkit(docker_cli())
    except DockerUnavailable:
        return False


def buildx_available() -> bool:
    """True when :func:`docker_cli` has ``buildx`` (Docker 23+ with the plugin): BuildKit
    builds then go through ``docker buildx build``, and BuildKit is the default backend."""
    try:
        return _cli_has_buildx(docker_cli())
    except DockerUnavailable:
        return False


def write(stream: Optional[TextIO], text: str) -> None:
    if stream is not None and text:
        stream.write(text)
        stream.flush()


def run_streaming(
    cmd: list[str],
    *,
    env: Optional[dict[str, str]] = None,
    stream: Optional[TextIO] = None,
    timeout: Optional[float] = None,
    stdin_text: Optional[str] = None,
    step_pattern: Optional[re.Pattern[str]] = None,
) -> tuple[int, list[str], Optional[str], bool]:
    """Run ``cmd`` in its own process group, echoing output to ``stream``.

    Returns (exit code, last lines of output, last step line seen, timed out). On timeout
    the whole process group is killed, so no child outlives the call.
    """
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
        env=env, text=True, errors="replace", start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    state: dict[str, Any] = {"step": None}

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    watchdog = Watchdog(timeout, kill)
    try:
        if stdin_text is not None and proc.stdin:
            proc.stdin.write(stdin_text)
            proc.stdin.close()
        assert proc.stdout is not None
        for line in proc.stdout:
            write(stream, line)
            stripped = line.rstrip()
            if stripped:
                tail.append(stripped)
            if step_pattern is not None and step_pattern.match(stripped):
                state["step"] = stripped
        code = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stdin):
            if pipe is not None:
                pipe.close()
    return code, list(tail), state["step"], watchdog.fired
