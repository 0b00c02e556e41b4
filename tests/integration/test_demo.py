"""The main job end to end: ``python -m prefect_flyimage.demo`` (what ``scripts/demo.sh`` runs).

Twice, as a user would: each run starts its own Prefect server, deploys the example flow
with our ``DockerImage`` (and with Prefect's, timed), runs it once with a docker worker
that pulls the image from the authenticated registry, and stops everything.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_flyimage import Engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]


def _demo(name: str, state_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "FLYIMAGE_STATE_DIR": str(state_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("PREFECT_API_URL", None)  # the demo starts its own server
    proc = subprocess.run(
        [sys.executable, "-m", "prefect_flyimage.demo", "--name", name],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert os.environ["FLYIMAGE_REGISTRY_PASSWORD"] not in proc.stdout + proc.stderr
    lines = dict(re.findall(r"^(flow run|flow run state|image|digest|image status): (.*)$", proc.stdout, re.M))
    lines["output"] = proc.stdout
    return lines


def _server_pids(state_dir: Path) -> list[int]:
    """Live processes whose command line names the demo's server home."""
    home = str(state_dir / "demo" / "prefect-home")
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if f"PREFECT_HOME={home}".encode() in environ.split(b"\0"):
                pids.append(int(proc.name))
    return pids


def test_demo_deploys_and_runs_then_redeploys_from_cache(tmp_path, registry, creds, unique_name, prefect_image):
    state_dir = tmp_path / "state"
    engine = Engine()

    first = _demo(unique_name, state_dir)
    assert first["flow run state"] == "Completed"
    reference = f"{registry.host}/{unique_name}:"
    assert first["image"].startswith(reference)
    assert first["digest"] == engine.registry_digest(first["image"], creds)
    assert first["image status"] == "built=True pushed=True"
    assert "Prefect's DockerImage" in first["output"]
    assert _server_pids(state_dir) == []  # the server it started is gone

    second = _demo(unique_name, state_dir)
    assert second["flow run state"] == "Completed"
    assert (second["image"], second["digest"]) == (first["image"], first["digest"])
    assert second["image status"] == "cached (nothing built or pushed)"
    assert re.search(r"image build and push: prefect-flyimage's [0-9.]+s, Prefect's [0-9.]+s", second["output"])
    assert _server_pids(state_dir) == []
    # auto_remove: the flow runs' containers are gone
    for run in (first, second):
        assert engine.client.containers.list(all=True, filters={"label": f"prefect.io/flow-run-id={run['flow run']}"}) == []
