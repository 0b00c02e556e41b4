"""The code tail appended in the registry gives what `docker build` gives: files, modes,
owners and the effective config -- and needs no daemon once the dependency image exists."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from prefect_flyimage._append_path import path_of
from prefect_flyimage.dockerfile import default_dockerfile_text
from prefect_flyimage.pipeline import ensure
from prefect_flyimage.plan import BuildPlan
from prefect_flyimage.registry import RegistryClient

pytestmark = pytest.mark.integration

_CONFIG_KEYS = ("Env", "WorkingDir", "Cmd", "Entrypoint", "User", "ExposedPorts", "Labels")
_LISTING = (
    "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /etc/hostname -o -path /etc/hosts "
    "-o -path /etc/resolv.conf \\) -prune -o -print0 | xargs -0 stat -c '%n %a %u:%g %F %s' | sort; "
    "find {paths} -xdev -type f -print0 | xargs -0 -r sha256sum | sort"
)


def _docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _tree(image: str, paths: str) -> list[str]:
    return _docker("run", "--rm", "--entrypoint", "sh", image, "-c", _LISTING.format(paths=paths)).splitlines()


def _config(image: str) -> dict:
    config = json.loads(_docker("image", "inspect", image, "--format", "{{json .Config}}"))
    return {k: config.get(k) or None for k in _CONFIG_KEYS}


def _compare(plan: BuildPlan, unique_name: str, registry_host: str, paths: str) -> str:
    assert path_of(plan)[0] == "append"
    appended = ensure(plan, push=True)
    assert appended.image_id is None and appended.digest  # no local image: made in the registry
    reference = f"{plan.repository}@{appended.digest}"
    _docker("pull", "-q", reference)
    built = ensure(plan.with_(append=False, repository=f"{registry_host}/{unique_name}-built"), push=False)
    assert built.built and built.image_id
    assert _tree(reference, paths) == _tree(built.image_id, paths)
    assert _config(reference) == _config(built.image_id)
    return appended.digest


def test_prefect_default_dockerfile(tmp_path: Path, prefect_image: str, registry_noauth, unique_name: str) -> None:
    project = tmp_path / "flows"
    (project / "pkg").mkdir(parents=True)
    (project / "requirements.txt").write_text("# nothing to install\n")
    (project / "flow.py").write_text("from prefect import flow\n")
    (project / "pkg" / "util.py").write_text("X = 1\n")
    os.chmod(project / "pkg" / "util.py", 0o600)
    text = default_dockerfile_text(project, base_image=prefect_image)
    plan = BuildPlan(context=project, dockerfile_text=text, repository=f"{registry_noauth.host}/{unique_name}")
    _compare(plan, unique_name, registry_noauth.host, "/opt/prefect")


def test_user_dockerfile_with_metadata_and_dockerignore(tmp_path: Path, busybox_image: str, registry, creds, unique_name: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "proj"
    (project / "src" / "pkg").mkdir(parents=True)
    (project / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (project / "src" / "debug.log").write_text("no\n")
    (project / "main.py").write_text("print(1)\n")
    os.chmod(project / "main.py", 0o755)
    (project / "conf.ini").write_text("[a]\n")
    (project / "deps.txt").write_text("dep\n")
    (project / ".dockerignore").write_text("src/*.log\n")
    (project / "Dockerfile").write_text(
        f"FROM {busybox_image}\nCOPY deps.txt /deps/\nRUN cat /deps/deps.txt > /installed\n"
        "WORKDIR /srv\nENV APP_ENV=prod GREETING=\"hello world\"\nLABEL team=data\n"
        "COPY --chown=1000:1000 src/ lib/\nCOPY main.py conf.ini ./\nUSER 1000\nEXPOSE 8080\n"
        "ENTRYPOINT [\"sh\", \"-c\"]\nCMD [\"cat main.py\"]\n"
    )
    # the auth registry, through the docker config's credentials as every other path
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    import base64

    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    plan = BuildPlan.from_dockerfile(project, f"{registry.host}/{unique_name}")
    digest = _compare(plan, unique_name, registry.host, "/srv /installed /deps")

    # code change only: the dependency image is reused, no daemon is needed at all
    (project / "main.py").write_text("print(2)\n")
    changed = BuildPlan.from_dockerfile(project, f"{registry.host}/{unique_name}")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = ensure(changed, push=True)
    assert result.digest and result.digest != digest and not result.built and result.pushed
    with RegistryClient(registry.host, creds) as client:
        assert client.manifest_digest(f"{registry.host}/{unique_name}:{changed.content_tag}") == result.digest
        config = client.config(f"{registry.host}/{unique_name}:{changed.content_tag}")
    assert config["config"]["Labels"]["io.prefect-flyimage.plan-hash"] == changed.hash


def test_same_code_same_layer_in_two_repositories(tmp_path: Path, busybox_image: str, registry_noauth, unique_name: str) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "app.py").write_text("print('same')\n")
    (project / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN true\nCOPY app.py /app/\n")
    layers = []
    for suffix in ("a", "b"):
        plan = BuildPlan.from_dockerfile(project, f"{registry_noauth.host}/{unique_name}-{suffix}")
        result = ensure(plan, push=True)
        with RegistryClient(registry_noauth.host) as client:
            body, _, _ = client.get_manifest(f"{plan.repository}@{result.digest}")
        layers.append(json.loads(body)["layers"][-1]["digest"])
    assert layers[0] == layers[1]
