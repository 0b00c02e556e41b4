"""Bad input at every public front door: a typed error naming the input, raised before anything runs.

One table over the public API (``prefect_flyimage.__all__``), the prefect.yaml steps, the
Prefect tasks (their functions), the Fly.io module and the spec. ``DOCKER_HOST`` points at
a closed port, so an input that slipped through validation would surface as
``DockerUnavailable`` instead of the expected error -- and fail the test. The command
line is covered by ``test_cli_usage.py``, the spec's parameters by
``spec/test_spec_types.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

import pytest

import prefect_flyimage as pf
from prefect_flyimage import (
    BuildPlan,
    ContextError,
    FlyImageError,
    InvalidArgumentError,
    InvalidReferenceError,
    SpecError,
)
from prefect_flyimage.fly import InvalidAppName

R = "127.0.0.1:5000/app"
SHA_ID = "sha256:" + "a" * 64


pytestmark = pytest.mark.usefixtures("no_daemon")


@pytest.fixture(autouse=True)
def _no_fly_token(monkeypatch):
    monkeypatch.delenv("FLY_API_TOKEN", raising=False)


@pytest.fixture
def ctx(cwd_project) -> Path:
    return cwd_project({"Dockerfile": "FROM busybox\n", "flows.py": "x = 1\n"})


def plan(ctx: Path) -> BuildPlan:
    return BuildPlan.from_dockerfile(ctx, R)


def _steps():
    from prefect_flyimage.deployments import steps

    return steps


def _tasks():
    from prefect_flyimage import tasks

    return tasks


def _fly():
    from prefect_flyimage import fly

    return fly


# (id, call(ctx), expected error class, text the message must contain: the input's name)
CASES: list[tuple[str, Callable[[Path], Any], type[FlyImageError], str]] = [
    # names
    ("ImageRef.parse(None)", lambda c: pf.ImageRef.parse(None), InvalidReferenceError, "must be a str"),
    ("ImageRef.parse('')", lambda c: pf.ImageRef.parse(""), InvalidReferenceError, "must not be empty"),
    ("parse_image_tag(5)", lambda c: pf.parse_image_tag(5), InvalidReferenceError, "must be a str"),
    ("parse_image_tag('a:b:c')", lambda c: pf.parse_image_tag("a:b:c"), InvalidReferenceError, "a:b:c"),
    ("split_repository_path('Bad Name')", lambda c: pf.split_repository_path("Bad Name"), InvalidReferenceError, "Bad Name"),
    # context
    ("BuildContext(None)", lambda c: pf.BuildContext(None), ContextError, "build context"),
    ("BuildContext(missing)", lambda c: pf.BuildContext(c / "missing"), ContextError, "does not exist"),
    ("BuildContext(a file)", lambda c: pf.BuildContext(c / "Dockerfile"), ContextError, "not a directory"),
    ("BuildContext(dockerfile=5)", lambda c: pf.BuildContext(c, 5), ContextError, "dockerfile"),
    ("BuildContext(extra_patterns='*.py')", lambda c: pf.BuildContext(c, extra_patterns="*.py"), ContextError, "extra_patterns"),
    # plans
    ("BuildPlan(context=None)", lambda c: BuildPlan(context=None, dockerfile_text="FROM x", repository=R), SpecError, "context"),
    ("BuildPlan(dockerfile_text='')", lambda c: BuildPlan(context=c, dockerfile_text="", repository=R), SpecError, "dockerfile_text"),
    ("from_dockerfile(None)", lambda c: BuildPlan.from_dockerfile(None, R), ContextError, "build context"),
    ("from_dockerfile(missing Dockerfile)", lambda c: BuildPlan.from_dockerfile(c, R, dockerfile="nope"), ContextError, "nope"),
    ("from_dockerfile(Dockerfile outside)", lambda c: BuildPlan.from_dockerfile(c, R, dockerfile="/etc/hostname"), ContextError, "outside"),
    ("from_dockerfile(repository=None)", lambda c: BuildPlan.from_dockerfile(c, None), SpecError, "repository"),
    ("from_dockerfile(repository with tag)", lambda c: BuildPlan.from_dockerfile(c, R + ":v1"), ContextError, "must not carry a tag"),
    ("from_dockerfile(repository='')", lambda c: BuildPlan.from_dockerfile(c, ""), InvalidReferenceError, "must not be empty"),
    ("from_dockerfile(tag=5)", lambda c: BuildPlan.from_dockerfile(c, R, tag=5), SpecError, "tag"),
    ("from_dockerfile(tag='')", lambda c: BuildPlan.from_dockerfile(c, R, tag=""), SpecError, "tag"),
    ("from_dockerfile(tag='bad tag')", lambda c: BuildPlan.from_dockerfile(c, R, tag="bad tag"), InvalidReferenceError, "bad tag"),
    ("from_dockerfile(extra_tags='v1')", lambda c: BuildPlan.from_dockerfile(c, R, extra_tags="v1"), SpecError, "extra_tags"),
    ("from_dockerfile(extra_tags=['-x'])", lambda c: BuildPlan.from_dockerfile(c, R, extra_tags=["-x"]), InvalidReferenceError, "-x"),
    ("from_dockerfile(platform='linux//x')", lambda c: BuildPlan.from_dockerfile(c, R, platform="linux//x"), InvalidArgumentError, "platform"),
    ("from_dockerfile(target='')", lambda c: BuildPlan.from_dockerfile(c, R, target=""), SpecError, "target"),
    ("from_dockerfile(backend='kaniko')", lambda c: BuildPlan.from_dockerfile(c, R, backend="kaniko"), InvalidArgumentError, "backend"),
    ("from_dockerfile(pull='yes')", lambda c: BuildPlan.from_dockerfile(c, R, pull="yes"), SpecError, "pull"),
    ("from_dockerfile(secrets='TOKEN')", lambda c: BuildPlan.from_dockerfile(c, R, secrets="TOKEN"), SpecError, "secrets"),
    ("from_dockerfile(build_args={'A': [1]})", lambda c: BuildPlan.from_dockerfile(c, R, build_args={"A": [1]}), SpecError, "'A'"),
    ("BuildSecret('')", lambda c: pf.BuildSecret("", env="X"), SpecError, "build secret id"),
    ("BuildSecret(no source)", lambda c: pf.BuildSecret("tok"), SpecError, "exactly one of src= or env="),
    ("BuildSecret(env=5)", lambda c: pf.BuildSecret("tok", env=5), SpecError, "env"),
    # credentials
    ("RegistryCredentials(None, ...)", lambda c: pf.RegistryCredentials(None, "u", "p"), InvalidArgumentError, "registry"),
    ("RegistryCredentials(user='')", lambda c: pf.RegistryCredentials("ghcr.io", "", "p"), InvalidArgumentError, "username"),
    ("RegistryCredentials(password='')", lambda c: pf.RegistryCredentials("ghcr.io", "u", ""), InvalidArgumentError, "password"),
    # pipeline
    ("ensure(None)", lambda c: pf.ensure(None), InvalidArgumentError, "plan"),
    ("ensure(build_timeout=-1)", lambda c: pf.ensure(plan(c), build_timeout=-1), InvalidArgumentError, "build_timeout"),
    ("ensure(push_timeout='10')", lambda c: pf.ensure(plan(c), push_timeout="10"), InvalidArgumentError, "push_timeout"),
    ("ensure(push='no')", lambda c: pf.ensure(plan(c), push="no"), InvalidArgumentError, "push"),
    ("ensure(credentials=5)", lambda c: pf.ensure(plan(c), credentials=5), InvalidArgumentError, "credentials"),
    ("ensure(credentials={})", lambda c: pf.ensure(plan(c), credentials={}), InvalidArgumentError, "credentials"),
    ("exists('app')", lambda c: pf.exists("app"), InvalidArgumentError, "plan"),
    ("observe('app')", lambda c: pf.observe("app"), InvalidArgumentError, "plan"),
    ("publish(tags='x')", lambda c: pf.publish(None, "sha256:" + "0" * 64, "127.0.0.1:1/app", "x"), InvalidArgumentError, "tags"),
    ("publish(tags=[])", lambda c: pf.publish(None, "sha256:" + "0" * 64, "127.0.0.1:1/app", []), InvalidArgumentError, "tags"),
    ("publish(repository=5)", lambda c: pf.publish(None, "sha256:" + "0" * 64, 5, ["t"]), InvalidArgumentError, "repository"),
    # Prefect's dockerutils API
    ("build_image(None)", lambda c: pf.build_image(None), ContextError, "context"),
    ("build_image(missing)", lambda c: pf.build_image(c / "missing"), ContextError, "missing"),
    ("build_image(dockerfile=5)", lambda c: pf.build_image(c, dockerfile=5), InvalidArgumentError, "dockerfile"),
    ("build_image(dockerfile missing)", lambda c: pf.build_image(c, dockerfile="nope"), ContextError, "nope"),
    ("build_image(tag='Bad Tag')", lambda c: pf.build_image(c, tag="Bad Tag"), InvalidReferenceError, "Bad Tag"),
    ("build_image(platform=5)", lambda c: pf.build_image(c, platform=5), InvalidArgumentError, "platform"),
    ("build_image(buildargs={'A': None, 'B': []})", lambda c: pf.build_image(c, buildargs={"A": None, "B": []}), SpecError, "'B'"),
    ("push_image(None, ...)", lambda c: pf.push_image(None, "127.0.0.1:5000", "app"), InvalidArgumentError, "image_id"),
    ("push_image(name='Bad Name')", lambda c: pf.push_image(SHA_ID, "127.0.0.1:5000", "Bad Name"), InvalidReferenceError, "Bad Name"),
    ("push_image(tag='bad tag')", lambda c: pf.push_image(SHA_ID, "127.0.0.1:5000", "app", tag="bad tag"), InvalidReferenceError, "bad tag"),
    ("get_prefect_image_name(5)", lambda c: pf.get_prefect_image_name(5), InvalidArgumentError, "prefect_version"),
    ("get_prefect_image_name('x y')", lambda c: pf.get_prefect_image_name("not a version"), InvalidArgumentError, "prefect_version"),
    ("get_prefect_image_name(python_version=3.11)", lambda c: pf.get_prefect_image_name(python_version=3.11), InvalidArgumentError, "python_version"),
    ("format_outlier_version_name(None)", lambda c: pf.format_outlier_version_name(None), InvalidArgumentError, "version"),
    ("to_run_command('pip install x')", lambda c: pf.to_run_command("pip install x"), InvalidArgumentError, "command"),
    ("to_run_command([1])", lambda c: pf.to_run_command([1]), InvalidArgumentError, "command[0]"),
    ("ImageBuilder(None)", lambda c: pf.ImageBuilder(None), InvalidArgumentError, "base_image"),
    ("ImageBuilder(context=5)", lambda c: pf.ImageBuilder("busybox", context=5), InvalidArgumentError, "context"),
    ("generate_default_dockerfile(missing)", lambda c: pf.generate_default_dockerfile(c / "missing").__enter__(), ContextError, "missing"),
    # DockerImage (flow.deploy)
    ("DockerImage(name=None)", lambda c: pf.DockerImage(name=None), InvalidReferenceError, "must be a str"),
    ("DockerImage(name='Bad Name')", lambda c: pf.DockerImage(name="Bad Name"), InvalidReferenceError, "Bad Name"),
    ("DockerImage(tag=5)", lambda c: pf.DockerImage(name=R, tag=5), InvalidArgumentError, "tag"),
    ("DockerImage(two tags)", lambda c: pf.DockerImage(name=R + ":a", tag="b"), InvalidArgumentError, "Only one tag"),
    ("DockerImage(dockerfile=None)", lambda c: pf.DockerImage(name=R, dockerfile=None), InvalidArgumentError, "dockerfile"),
    ("DockerImage(build_backend='kaniko')", lambda c: pf.DockerImage(name=R, build_backend="kaniko"), InvalidArgumentError, "build_backend"),
    ("DockerImage(platform='x//y').plan", lambda c: pf.DockerImage(name=R, dockerfile="Dockerfile", platform="x//y").plan, InvalidArgumentError, "platform"),
    ("DockerImage(buildargs=['A=1']).plan", lambda c: pf.DockerImage(name=R, dockerfile="Dockerfile", buildargs=["A=1"]).plan, SpecError, "build args"),
    ("DockerImage(fileobj=...).plan", lambda c: pf.DockerImage(name=R, dockerfile="Dockerfile", fileobj=b"x").plan, InvalidArgumentError, "fileobj"),
    # prefect.yaml steps
    ("build_docker_image(None)", lambda c: _steps().build_docker_image(None), InvalidArgumentError, "image_name"),
    ("build_docker_image('a b')", lambda c: _steps().build_docker_image("a b"), InvalidArgumentError, "image_name"),
    ("build_docker_image(tag=5)", lambda c: _steps().build_docker_image(R, tag=5), InvalidArgumentError, "tag"),
    ("build_docker_image(additional_tags='v1')", lambda c: _steps().build_docker_image(R, additional_tags="v1"), InvalidArgumentError, "additional_tags"),
    ("build_docker_image(additional_tags=['bad tag'])", lambda c: _steps().build_docker_image(R, additional_tags=["bad tag"]), InvalidReferenceError, "bad tag"),
    ("build_docker_image(path=5)", lambda c: _steps().build_docker_image(R, path=5), InvalidArgumentError, "path"),
    ("build_docker_image(path=missing)", lambda c: _steps().build_docker_image(R, path=str(c / "missing")), ContextError, "missing"),
    ("build_docker_image(ignore_cache='yes')", lambda c: _steps().build_docker_image(R, ignore_cache="yes"), InvalidArgumentError, "ignore_cache"),
    ("build_docker_image(build_backend='kaniko')", lambda c: _steps().build_docker_image(R, build_backend="kaniko"), InvalidArgumentError, "build_backend"),
    ("push_docker_image(None)", lambda c: _steps().push_docker_image(None), InvalidArgumentError, "image_name"),
    ("push_docker_image(tag='bad tag')", lambda c: _steps().push_docker_image(R, tag="bad tag"), InvalidReferenceError, "bad tag"),
    ("push_docker_image(additional_tags='v2')", lambda c: _steps().push_docker_image(R, tag="v1", additional_tags="v2"), InvalidArgumentError, "additional_tags"),
    ("push_docker_image(credentials=5)", lambda c: _steps().push_docker_image(R, tag="v1", credentials=5), InvalidArgumentError, "credentials"),
    ("ensure_image(push='no')", lambda c: _steps().ensure_image(R, dockerfile="Dockerfile", push="no"), InvalidArgumentError, "push"),
    ("ensure_image(buildargs={'A': {}})", lambda c: _steps().ensure_image(R, dockerfile="Dockerfile", buildargs={"A": {}}), SpecError, "'A'"),
    # Prefect tasks (their functions; the guards run before any run context is needed)
    ("build_image_task(None)", lambda c: _tasks().build_image_task.fn(None), InvalidArgumentError, "plan"),
    ("push_image_task(None)", lambda c: _tasks().push_image_task.fn(None), InvalidArgumentError, "image"),
    ("ensure_image_task('app')", lambda c: _tasks().ensure_image_task.fn("app"), InvalidArgumentError, "plan"),
    ("login_task(None)", lambda c: _tasks().login_task.fn(None), InvalidArgumentError, "credentials"),
    ("login_task(5)", lambda c: _tasks().login_task.fn(5), InvalidArgumentError, "credentials"),
    ("configure_retries(retries=-1)", lambda c: _tasks().configure_retries(_tasks().build_image_task, retries=-1), InvalidArgumentError, "retries"),
    ("configure_retries(backoff=-2)", lambda c: _tasks().configure_retries(_tasks().build_image_task, backoff=-2), InvalidArgumentError, "backoff"),
    ("retry_delays('3')", lambda c: _tasks().retry_delays("3"), InvalidArgumentError, "retries"),
    # Fly.io
    ("fly.ensure_image_sync('Bad')", lambda c: _fly().ensure_image_sync("Bad"), InvalidAppName, "Bad"),
    ("fly.ensure_image_sync(tag='bad tag')", lambda c: _fly().ensure_image_sync("app", tag="bad tag", token="t0ken"), InvalidReferenceError, "bad tag"),
    ("fly.ensure_image_sync(tag=5)", lambda c: _fly().ensure_image_sync("app", tag=5, token="t0ken"), InvalidReferenceError, "must be a str"),
    ("fly.ensure_image_sync(token=5)", lambda c: _fly().ensure_image_sync("app", token=5), InvalidArgumentError, "token"),
    ("fly.ensure_image_sync(build_timeout=-1)", lambda c: _fly().ensure_image_sync("app", token="t0ken", build_timeout=-1), InvalidArgumentError, "build_timeout"),
    ("fly.ensure_image_sync(push_timeout=0)", lambda c: _fly().ensure_image_sync("app", token="t0ken", push_timeout=0), InvalidArgumentError, "push_timeout"),
    ("fly.ensure_image_sync(docker_context=missing)", lambda c: _fly().ensure_image_sync("app", token="t0ken", docker_context=c / "missing"), ContextError, "missing"),
    ("fly.ensure_image_sync(docker_context=5)", lambda c: _fly().ensure_image_sync("app", token="t0ken", docker_context=5), InvalidArgumentError, "docker_context"),
    ("fly.ensure_image_sync(registry=5)", lambda c: _fly().ensure_image_sync("app", token="t0ken", registry=5), InvalidArgumentError, "registry"),
    ("fly.docker_build_sync(timeout=-1)", lambda c: _fly().docker_build_sync("app", timeout=-1), InvalidArgumentError, "timeout"),
    ("fly.docker_push_sync(tag='bad tag')", lambda c: _fly().docker_push_sync("app", tag="bad tag"), InvalidReferenceError, "bad tag"),
    ("fly.docker_login_fly_sync(token=5)", lambda c: _fly().docker_login_fly_sync(token=5), InvalidArgumentError, "token"),
    ("fly.image_ref(tag='-x')", lambda c: _fly().image_ref("app", tag="-x"), InvalidReferenceError, "-x"),
    ("fly.ensure_image (async)", lambda c: asyncio.run(_fly().ensure_image("app", token=5)), InvalidArgumentError, "token"),
    # the spec (the rest in spec/test_spec_types.py)
    ("Image.from_base(5)", lambda c: pf.Image.from_base(5), SpecError, "image_uri"),
    ("Image.from_debian_base(python_version=3.12)", lambda c: pf.Image.from_debian_base(python_version=3.12), SpecError, "python_version"),
]


@pytest.mark.parametrize("call, error, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_typed_error_naming_it(ctx, call, error, names):
    with pytest.raises(error) as info:
        call(ctx)
    assert isinstance(info.value, FlyImageError) and isinstance(info.value, ValueError)
    assert names in str(info.value), str(info.value)


def test_nothing_is_written_when_input_is_bad(ctx):
    """The persisted Dockerfile of the build step is written only after the input checks."""
    steps = _steps()
    before = sorted(p.name for p in ctx.iterdir())
    for kwargs in ({"additional_tags": "v1"}, {"buildargs": {"A": [1]}}, {"ignore_cache": "yes"}, {"tag": 5}):
        with pytest.raises(FlyImageError):
            steps.build_docker_image(R, dockerfile="auto", persist_dockerfile=True, path=str(ctx / "sub"), **kwargs)
    (ctx / "sub").mkdir()
    (ctx / "sub" / "flows.py").write_text("x = 1\n")
    with pytest.raises(SpecError):
        steps.build_docker_image(R, dockerfile="auto", persist_dockerfile=True, path=str(ctx / "sub"), buildargs={"A": [1]})
    assert sorted(p.name for p in ctx.iterdir()) == before + ["sub"]
    assert not (ctx / "Dockerfile.generated").exists()


def test_every_public_name_is_covered():
    """Each public callable of the package appears in the table (or is an exception/value type)."""
    covered = " ".join(c[0] for c in CASES)
    skip = {"Engine", "docker_client", "BuildResult", "LocalImage", "Observation"}  # daemon handles; results are outputs
    for name in pf.__all__:
        obj = getattr(pf, name)
        if isinstance(obj, type) and issubclass(obj, BaseException) or name in skip:
            continue
        assert name.split(".")[-1] in covered or name in {"ensure", "exists", "observe", "publish"} and f"{name}(" in covered, name
