"""Every command in README.md runs, as written, against the real services.

Each ```bash and ```python block is one test, run from the repository root with the
services' environment (and a Prefect server's ``PREFECT_API_URL``). Two adjustments,
both to keep the suite from running itself: ``scripts/test.sh`` lines only collect
(``--collect-only -q``), since CI runs the real thing. ```yaml blocks are checked to be
what the root ``prefect.yaml`` really says.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```(bash|python|yaml)\n(.*?)^```", re.M | re.S)


def readme_blocks() -> list[tuple[str, str, str]]:
    """(id, language, code) of every fenced block, the id naming the section it is in."""
    text = (ROOT / "README.md").read_text()
    blocks = []
    for n, m in enumerate(BLOCK.finditer(text)):
        heading = re.findall(r"^#+ (.+)$", text[: m.start()], re.M)
        slug = re.sub(r"[^a-z0-9]+", "-", (heading[-1] if heading else "top").lower()).strip("-")
        blocks.append((f"{n:02d}-{m.group(1)}-{slug}", m.group(1), m.group(2)))
    return blocks


BLOCKS = readme_blocks()


@pytest.fixture(scope="module")
def readme_env(services, prefect_server) -> dict[str, str]:
    """The environment a README reader has after sourcing the services' env file."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect_docker.worker import DockerWorker

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(
                WorkPoolCreate(name="readme-pool", type="docker", base_job_template=DockerWorker.get_default_base_job_template())
            )
        except Exception as exc:  # already there from an earlier module: fine
            if "already exists" not in str(exc).lower():
                raise
    env = {**os.environ, **services, "PREFECT_API_URL": prefect_server, "PYTHONPATH": str(ROOT)}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def test_readme_has_blocks_for_every_front_door():
    ids = " ".join(i for i, _, _ in BLOCKS)
    for section in ("quick-start", "dockerimage", "prefect-yaml", "image-spec", "fly-io", "docker-pkg", "command-line"):
        assert section in ids, f"README lost its {section} example"


@pytest.mark.parametrize("block_id, lang, code", [b for b in BLOCKS if b[1] != "yaml"], ids=[b[0] for b in BLOCKS if b[1] != "yaml"])
def test_readme_block_runs(block_id, lang, code, readme_env):
    if lang == "bash":
        # The suite must not run itself: scripts/test.sh only collects here.
        code = re.sub(r"^(bash scripts/test\.sh[^#\n]*?)(\s*(#.*)?)$", r"\1 --collect-only -q\2", code, flags=re.M)
        cmd = ["bash", "-euo", "pipefail", "-c", code]
    else:
        cmd = [sys.executable, "-c", code]
    proc = subprocess.run(cmd, cwd=ROOT, env=readme_env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"README block {block_id} failed ({proc.returncode}):\n{output[-4000:]}"
    for secret in (readme_env.get("FLYIMAGE_REGISTRY_PASSWORD"), readme_env.get("FLYIMAGE_FLY_TOKEN")):
        assert not secret or secret not in output, f"README block {block_id} printed a secret"


@pytest.mark.parametrize("block_id, code", [(b[0], b[2]) for b in BLOCKS if b[1] == "yaml"])
def test_readme_yaml_matches_prefect_yaml(block_id, code):
    shown = yaml.safe_load(code)
    real = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    steps = {
        name: args
        for d in real["deployments"]
        for section in ("build", "push")
        for step in d.get(section) or []
        for name, args in step.items()
    }
    for section in ("build", "push"):
        for step in shown[section]:
            for name, args in step.items():
                assert name in steps, f"{name} is not a step of prefect.yaml"
                for key, value in args.items():
                    assert steps[name].get(key) == value, f"README shows {name}.{key}={value!r}, prefect.yaml says {steps[name].get(key)!r}"
