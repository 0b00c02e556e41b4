"""Code-only redeploys through every front door take the registry append (issue 12): the
``prefect.yaml`` step pair (run as ``prefect deploy`` runs it), the build/push task pair
and ``ensure_image_task`` in a flow, and an ``Image`` spec. The first deploy builds in the
daemon and publishes the dependency image; after a code-only change ``DOCKER_HOST`` points
at nothing and the redeploy still succeeds, with the registry confirming the new digest
under the plan's content tag."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_flyimage._append_path import path_of
from prefect_flyimage.pipeline import ensure, resolve_bases
from prefect_flyimage.plan import BuildPlan
from prefect_flyimage.registry import RegistryClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from split_project import split_project  # noqa: E402

pytestmark = pytest.mark.integration

NO_DAEMON = "unix:///nonexistent/docker.sock"
PLAN_LABEL = "io.prefect-flyimage.plan-hash"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # a fresh machine: no stat cache, no layer listings from other tests
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def base(busybox_image: str, registry_noauth, unique_name: str, docker_client) -> str:
    """The base image in the registry: a base is an input (resolved to its digest there), so a
    redeploy needs no daemon to know it."""
    ref = f"{registry_noauth.host}/{unique_name}-base:1"
    docker_client.images.get(busybox_image).tag(ref)
    docker_client.images.push(ref)
    return ref


def _project(root: Path, base: str) -> Path:
    return split_project(root, base, tail="ENV APP=1\n")


def _held(registry_host: str, ref: str) -> tuple[str | None, dict]:
    with RegistryClient(registry_host) as client:
        digest = client.manifest_digest(ref)
        return digest, (client.config(ref) if digest else {})


def _registry_has_dependency(plan: BuildPlan) -> bool:
    dep = path_of(resolve_bases(plan))[1].dependency
    assert dep is not None
    return _held(dep.content_ref.registry, str(dep.content_ref))[0] is not None


def _docker_cat(reference: str, path: str) -> str:
    done = subprocess.run(["docker", "run", "--rm", "--network", "none", reference, "cat", path],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_prefect_yaml_steps_append_a_code_only_change(tmp_path: Path, base: str, registry_noauth, unique_name: str,
                                                      prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.deployments.steps.core import run_steps

    daemon = os.environ["DOCKER_HOST"]
    project = _project(tmp_path / "proj", base)
    name = f"{registry_noauth.host}/{unique_name}"
    steps = "prefect_flyimage.deployments.steps"
    build = [{f"{steps}.build_docker_image": {
        "id": "build-image", "image_name": name, "dockerfile": "Dockerfile", "path": str(project),
        "network_mode": "none", "pull": True,
    }}]
    push = [{f"{steps}.push_docker_image": {
        "id": "push-image", "image_name": "{{ build-image.image_name }}", "tag": "{{ build-image.tag }}",
        "additional_tags": ["latest"],
    }}]

    def deploy() -> dict:
        """What `prefect deploy` does: the build steps, then the push steps, one process."""
        outputs = asyncio.run(run_steps(build, {}))
        outputs.update(asyncio.run(run_steps(push, outputs)))
        return outputs

    def step_plan() -> BuildPlan:  # the plan the build step makes (its base pinned: an input)
        from prefect_flyimage.docker_image import plan_for_build

        return plan_for_build(name, context=project, dockerfile="Dockerfile", build_kwargs={"pull": True})[0]

    plan = step_plan()
    assert path_of(plan)[0] == "append"
    first = deploy()
    assert first["build-image"]["built"] and first["build-image"]["image_id"]  # the first deploy builds
    assert first["push-image"]["pushed"]
    assert _registry_has_dependency(plan)  # ... and its push published the dependency image

    (project / "pkg" / "flow.py").write_text("VERSION = 2\n")
    changed = resolve_bases(step_plan())
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    second = deploy()
    built, pushed = second["build-image"], second["push-image"]
    # the build step appended in the registry (no daemon): Prefect's keys, image_id empty
    assert not built["built"] and built["image_id"] == "" and built["digest"]
    assert built["tag"] == changed.content_tag and built["image"] == f"{name}:{changed.content_tag}"
    # the push step only confirmed it, and put the tag it adds (latest) in the registry
    assert pushed["digest"] == built["digest"] and pushed["pinned"] == f"{name}@{built['digest']}"
    assert pushed["pushed"]  # `latest` was moved by this step
    digest, config = _held(registry_noauth.host, f"{name}:{changed.content_tag}")
    assert digest == built["digest"] and config["config"]["Labels"][PLAN_LABEL] == changed.hash
    assert _held(registry_noauth.host, f"{name}:latest")[0] == built["digest"]

    monkeypatch.setenv("DOCKER_HOST", daemon)
    assert _docker_cat(f"{name}@{built['digest']}", "/app/pkg/flow.py") == "VERSION = 2\n"

    # append: false opts out: the build step builds in the daemon (a local image, no digest)
    (project / "pkg" / "flow.py").write_text("VERSION = 3\n")
    build[0][f"{steps}.build_docker_image"]["append"] = False
    local = asyncio.run(run_steps(build, {}))["build-image"]
    assert local["built"] and local["image_id"] and local["digest"] is None


def test_task_pair_and_ensure_task_append_a_code_only_change(tmp_path: Path, base: str, registry_noauth, unique_name: str,
                                                            prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow

    from prefect_flyimage.tasks import build_image_task, ensure_image_task, push_image_task

    daemon = os.environ["DOCKER_HOST"]
    project = _project(tmp_path / "proj", base)
    name = f"{registry_noauth.host}/{unique_name}"

    def plan() -> BuildPlan:
        return BuildPlan.from_dockerfile(project, name, network="none", pull=True)

    @flow(name=f"release-{unique_name}")
    def release(p: BuildPlan):
        built = build_image_task(p)
        return built, push_image_task(built)

    built, pushed = release(plan())
    assert built.built and built.image_id and pushed.pushed  # first: a daemon build and a push
    assert _registry_has_dependency(plan())  # the push published the dependency image too

    (project / "pkg" / "flow.py").write_text("VERSION = 2\n")
    changed = resolve_bases(plan())
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    built, pushed = release(plan())
    assert not built.built and built.image_id is None and built.pushed and built.digest  # appended by the build task
    assert pushed.digest == built.digest and not pushed.pushed  # the push task confirmed it
    digest, config = _held(registry_noauth.host, f"{name}:{changed.content_tag}")
    assert digest == built.digest and config["config"]["Labels"][PLAN_LABEL] == changed.hash

    # ensure_image_task: the same, in one task (no verify hook making it build)
    (project / "pkg" / "flow.py").write_text("VERSION = 3\n")
    changed = resolve_bases(plan())

    @flow(name=f"ensure-{unique_name}")
    def ensure_flow(p: BuildPlan):
        return ensure_image_task(p)

    result = ensure_flow(plan())
    assert not result.built and result.pushed and result.image_id is None
    assert _held(registry_noauth.host, f"{name}:{changed.content_tag}")[0] == result.digest

    # a lone build task that wants the image in the daemon: append=False builds there
    monkeypatch.setenv("DOCKER_HOST", daemon)

    @flow(name=f"local-{unique_name}")
    def local_flow(p: BuildPlan):
        return build_image_task(p, append=False)

    (project / "pkg" / "flow.py").write_text("VERSION = 4\n")
    local = local_flow(plan())
    assert local.built and local.image_id and local.digest is None
    assert _docker_cat(local.image_id, "/app/pkg/flow.py") == "VERSION = 4\n"


_LISTING = (
    "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /etc/hostname -o -path /etc/hosts "
    "-o -path /etc/resolv.conf \\) -prune -o -print0 | xargs -0 stat -c '%n %a %u:%g %F %s' | sort; "
    "find /app /srv /installed -xdev -type f -print0 | xargs -0 -r sha256sum | sort"
)


def _tree(image: str) -> list[str]:
    done = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", _LISTING],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _effective_config(image: str) -> dict:
    done = subprocess.run(["docker", "image", "inspect", image, "--format", "{{json .Config}}"],
                          capture_output=True, text=True, timeout=60)
    config = json.loads(done.stdout)
    return {k: config.get(k) or None for k in ("Env", "WorkingDir", "Cmd", "Entrypoint", "User", "Labels")}


def test_image_spec_code_layers_append(tmp_path: Path, base: str, registry_noauth, unique_name: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_flyimage.spec import Image

    daemon = os.environ["DOCKER_HOST"]
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "flow.py").write_text("VERSION = 1\n")
    os.chmod(src / "pkg" / "flow.py", 0o600)
    (tmp_path / "main.py").write_text("print(1)\n")
    os.chmod(tmp_path / "main.py", 0o755)

    def image() -> Image:
        return (Image.from_base(base).clone(registry=registry_noauth.host, name=unique_name)
                .with_commands("mkdir -p /srv && echo installed > /installed").with_workdir("/app")
                .with_source_folder(src, "/app/src").with_source_file(tmp_path / "main.py", "/srv/")
                .with_env_vars({"MODE": "prod"}))

    plan = image().plan()
    path, split = path_of(plan)
    assert path == "append", split.reason
    first = image().build(push=True)  # builds and pushes the dependency image, then appends
    assert first.digest and first.image_id is None
    assert _held(registry_noauth.host, image().uri)[0] == first.digest
    # the same files, modes, owners and config as a build of the same spec
    monkeypatch.setenv("DOCKER_HOST", daemon)
    appended = f"{plan.repository}@{first.digest}"
    subprocess.run(["docker", "pull", "-q", appended], check=True, capture_output=True, timeout=300)
    built = ensure(plan.with_(append=False, repository=f"{registry_noauth.host}/{unique_name}-built"), push=False)
    assert built.built and built.image_id
    assert _tree(appended) == _tree(built.image_id)
    assert _effective_config(appended) == _effective_config(built.image_id)

    # a code-only change: no daemon at all
    (src / "pkg" / "flow.py").write_text("VERSION = 2\n")
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    again = image().build(push=True)
    assert again.digest and again.digest != first.digest and not again.built and again.pushed
    digest, config = _held(registry_noauth.host, image().uri)
    assert digest == again.digest and config["config"]["Labels"][PLAN_LABEL] == image().plan().hash

    # append=False opts out: a code-only change is built in the daemon and pushed
    monkeypatch.setenv("DOCKER_HOST", daemon)
    (src / "pkg" / "flow.py").write_text("VERSION = 3\n")
    built_again = image().build(push=True, append=False)
    assert built_again.built and built_again.image_id and built_again.pushed
    assert _held(registry_noauth.host, image().uri)[0] == built_again.digest


def test_inspect_spec_says_which_path_and_why(tmp_path: Path, base: str, registry_noauth, unique_name: str) -> None:
    import sys

    (tmp_path / "main.py").write_text("print(1)\n")
    (tmp_path / "images.py").write_text(
        "from prefect_flyimage.spec import Image\n"
        f"spec = Image.from_base({base!r}).clone(registry={registry_noauth.host!r}, name={unique_name!r})\n"
        "splits = spec.with_commands('echo deps > /installed').with_source_file('main.py', '/srv/')\n"
        "whole = splits.with_commands('cat /srv/main.py')\n"  # a RUN after the code: no code-only tail
    )

    def inspect(attr: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "prefect_flyimage.cli", "inspect", "--spec", f"images.py:{attr}", "--json"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    splits = inspect("splits")
    assert splits["path"] == "append" and splits["dependency_tag"]
    assert splits["reference"].startswith(f"{registry_noauth.host}/{unique_name}:")
    assert splits["registry_digest"] is None  # nothing built yet
    whole = inspect("whole")
    assert whole["path"] == "build" and whole["path_reason"].startswith("does not split")
