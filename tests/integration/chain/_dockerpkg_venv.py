"""docker-pkg 4.0.4 in its own virtualenv, for differential tests and the benchmark.

docker-pkg pins docker<6 and requests<2.29, which conflict with our dependencies, so
it lives in ``$FLYIMAGE_STATE_DIR/venv-docker-pkg`` (created once, guarded by a lock)
and is driven through small Python snippets run with that venv's interpreter.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

VERSION = "4.0.4"


def venv_dir() -> Path:
    """Where the venv lives."""
    return Path(os.environ.get("FLYIMAGE_STATE_DIR") or "/var/tmp/prefect-flyimage") / "venv-docker-pkg"


def python() -> Path:
    """The venv's interpreter, creating the venv on first use."""
    root = venv_dir()
    exe = root / "bin" / "python"
    marker = root / f".docker-pkg-{VERSION}"
    if marker.exists():
        return exe
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".venv-docker-pkg.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers create it once
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
            subprocess.run(
                [str(exe), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"docker-pkg=={VERSION}"],
                check=True, timeout=900,
            )
            marker.touch()
    return exe


def run(snippet: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Any:
    """Run ``snippet`` with docker-pkg's interpreter; it must print one JSON document last."""
    proc = subprocess.run(
        [str(python()), "-c", textwrap.dedent(snippet), *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"docker-pkg snippet failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: Scan a tree with pull disabled and no Docker daemon; print build chain, deps and renders.
RENDER_SNIPPET = r"""
import json, sys
from unittest.mock import MagicMock, patch
from docker_pkg import cli, dockerfile
from docker_pkg.builder import DockerBuilder, ImageFSM

directory, configfile, select = sys.argv[1], sys.argv[2], (sys.argv[3] or None)
config = cli.read_config(configfile)
with patch("docker.from_env", MagicMock()), \
     patch("docker_pkg.drivers.DockerDriver.exists", return_value=False), \
     patch("docker_pkg.builder.ImageFSM._is_published", return_value=False):
    builder = DockerBuilder(directory, config, select, True, False)
    dockerfile.TemplateEngine.setup(builder.config, builder.known_images)
    builder.scan(max_workers=1)
    chain = [img.label for img in builder.build_chain]
    renders = {}
    for img in builder.all_images:
        try:
            renders[img.label] = img.image.render_dockerfile()
        except Exception as exc:
            renders[img.label] = {"error": type(exc).__name__}
    deps = {img.label: img.image.depends for img in builder.all_images}
print(json.dumps({"chain": chain, "renders": renders, "depends": deps}))
"""


def render_tree(directory: str | Path, configfile: str | Path, select: str | None = None, xdg: str | None = None) -> dict[str, Any]:
    """docker-pkg's build chain, rendered Dockerfiles and dependencies for a tree."""
    env = {"XDG_CONFIG_HOME": xdg} if xdg else None
    return run(RENDER_SNIPPET, str(directory), str(configfile), select or "", env=env)
