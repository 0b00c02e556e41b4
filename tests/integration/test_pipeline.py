"""The content-addressed pipeline against the real daemon and registry."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_fixtures import ephemeral_registry, registry_workdir  # noqa: E402,F401

from prefect_flyimage import (  # noqa: E402
    AuthenticationError,
    BuildError,
    BuildPlan,
    BuildSecret,
    Engine,
    PushAuthenticationError,
    PushUnavailableError,
    RegistryCredentials,
    RegistryUnavailable,
    ensure,
    exists,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, busybox_image: str) -> Path:
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY app.txt /app.txt\nCMD [\"cat\", \"/app.txt\"]\n")
    (tmp_path / "app.txt").write_text("version 1\n")
    (tmp_path / "notes.log").write_text("ignored\n")
    (tmp_path / ".dockerignore").write_text("*.log\n")
    return tmp_path


def test_ensure_builds_once_then_skips(project, registry, creds, unique_name):
    engine = Engine()
    plan = BuildPlan.from_dockerfile(project, f"{registry.host}/{unique_name}")
    out = io.StringIO()
    first = ensure(plan, credentials=creds, stream_progress_to=out, engine=engine)
    assert first.built and first.pushed and first.digest.startswith("sha256:")
    assert re.search(r"(Step 2/\d+ : |#\d+ \[2/\d+\] )COPY app.txt", out.getvalue())  # build output streamed
    assert engine.registry_digest(plan.ref, creds) == first.digest

    again = ensure(BuildPlan.from_dockerfile(project, f"{registry.host}/{unique_name}"), credentials=creds, engine=engine)
    assert again.cached and again.digest == first.digest and again.reference == first.reference

    # An ignored file does not count; an included one does.
    (project / "notes.log").write_text("still ignored\n")
    assert ensure(BuildPlan.from_dockerfile(project, f"{registry.host}/{unique_name}"), credentials=creds).cached
    (project / "app.txt").write_text("version 2\n")
    changed = ensure(BuildPlan.from_dockerfile(project, f"{registry.host}/{unique_name}"), credentials=creds)
    assert changed.built and changed.pushed and changed.reference != first.reference
    code, output = engine.run(changed.image_id, ["cat", "/app.txt"])
    assert (code, output) == (0, "version 2\n")


def test_local_image_deleted_but_registry_holds_it(project, registry, creds, unique_name):
    engine = Engine()
    plan = BuildPlan.from_dockerfile(project, f"{registry.host}/{unique_name}")
    first = ensure(plan, credentials=creds, engine=engine)
    for tag in plan.all_tags:
        engine.remove(f"{plan.repository}:{tag}", force=True)
    assert exists(plan, creds, engine).local_id is None
    second = ensure(plan, credentials=creds, engine=engine)
    assert second.cached and second.digest == first.digest


def test_push_false_skips_registry_and_rebuild(project, registry, unique_name):
    plan = BuildPlan.from_dockerfile(project, f"{registry.host}/{unique_name}")
    first = ensure(plan, push=False)
    assert first.built and not first.pushed and first.digest is None
    second = ensure(plan, push=False)
    assert not second.built and second.image_id == first.image_id
    forced = ensure(plan, push=False, force=True)
    assert forced.built


def test_explicit_tag_pushes_content_tag_too_and_pull_by_digest(project, registry, creds, unique_name):
    engine = Engine()
    plan = BuildPlan.from_dockerfile(project, f"{registry.host}/{unique_name}", tag="v1", extra_tags=("latest",))
    result = ensure(plan, credentials=creds, engine=engine)
    for tag in ("v1", plan.content_tag, "latest"):
        assert engine.registry_digest(f"{plan.repository}:{tag}", creds) == result.digest
    # The pinned reference pulls back the very image.
    engine.remove(result.image_id, force=True)
    pulled = engine.pull(result.pinned, creds)
    assert pulled == result.image_id
    # A new explicit tag on an unchanged project only adds that tag.
    plan2 = plan.with_(tag="v2", extra_tags=())
    again = ensure(plan2, credentials=creds, engine=engine)
    assert not again.built and again.pushed
    assert engine.registry_digest(f"{plan.repository}:v2", creds) == result.digest


def test_wrong_credentials_are_authentication_errors(project, registry, unique_name):
    bad = RegistryCredentials(registry.host, registry.username, "wrong-password")
    engine = Engine()
    plan = BuildPlan.from_dockerfile(project, f"{registry.host}/{unique_name}")
    with pytest.raises(AuthenticationError) as err:
        ensure(plan, credentials=bad, engine=engine)
    assert "wrong-password" not in str(err.value)
    # The push itself is refused the same way, and is a PushError too.
    ensure(plan, push=False, engine=engine)
    with pytest.raises(PushAuthenticationError):
        engine.push(plan.ref, bad)
    with pytest.raises(AuthenticationError):
        engine.login(bad)


def test_stopped_registry_is_unavailable(project, ephemeral_registry, unique_name):
    engine = Engine()
    plan = BuildPlan.from_dockerfile(project, f"{ephemeral_registry.host}/{unique_name}")
    ensure(plan, push=False, engine=engine)
    ephemeral_registry.stop()
    with pytest.raises(RegistryUnavailable):
        engine.registry_digest(plan.ref)
    # ensure fails closed on the check (it still builds), then the push names the outage.
    with pytest.raises(PushUnavailableError):
        ensure(plan, engine=engine)


def test_build_failure_names_the_step_and_leaves_no_tag(project, unique_name, docker_client):
    (project / "Dockerfile").write_text(
        (project / "Dockerfile").read_text() + "RUN echo about-to-fail && exit 3\n"
    )
    plan = BuildPlan.from_dockerfile(project, f"127.0.0.1:5001/{unique_name}")
    before = {c.id for c in docker_client.containers.list(all=True)}
    with pytest.raises(BuildError) as err:
        ensure(plan, push=False)
    assert "RUN echo about-to-fail" in (err.value.step or "")
    assert "about-to-fail" in (err.value.output or "")
    assert Engine().local_image(plan.content_ref) is None
    # Only new containers count: others' may come and go on a shared daemon meanwhile.
    assert {c.id for c in docker_client.containers.list(all=True)} - before == set()


def test_build_timeout_cancels_the_build(project, unique_name, docker_client):
    (project / "Dockerfile").write_text((project / "Dockerfile").read_text() + "RUN sleep 30\n")
    plan = BuildPlan.from_dockerfile(project, f"127.0.0.1:5001/{unique_name}")
    with pytest.raises(BuildError, match="timed out"):
        ensure(plan, push=False, build_timeout=3)
    import time

    deadline = time.monotonic() + 20
    # The list's own "Command" (no inspect per container: others' containers come and go meanwhile).
    while any("sleep 30" in (c.get("Command") or "") for c in docker_client.api.containers(all=True)):
        assert time.monotonic() < deadline, "the build container outlived the timeout"
        time.sleep(0.5)
    assert Engine().local_image(plan.content_ref) is None


def test_buildkit_cache_mount_and_secret_stay_out_of_layers(project, unique_name, docker_client, monkeypatch, tmp_path):
    import hashlib

    secret = "s3cr3t-value-xyz"
    monkeypatch.setenv("FLYIMAGE_TEST_SECRET", secret)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    (project / "Dockerfile").write_text(
        (project / "Dockerfile").read_text()
        + "RUN --mount=type=cache,target=/cache echo cached > /cache/x && cat /cache/x > /cache-used\n"
        # Compare hashes so the Dockerfile itself never holds the secret.
        + f"RUN --mount=type=secret,id=tok test \"$(sha256sum /run/secrets/tok | cut -c1-64)\" = {digest} "
        + "&& echo secret-ok > /secret-ok\n"
    )
    plan = BuildPlan.from_dockerfile(
        project, f"127.0.0.1:5001/{unique_name}", secrets=(BuildSecret("tok", env="FLYIMAGE_TEST_SECRET"),)
    )
    assert plan.needs_buildkit()
    out = io.StringIO()
    result = ensure(plan, push=False, stream_progress_to=out)
    assert result.built
    assert "s3cr3t-value-xyz" not in out.getvalue()
    code, text = Engine().run(result.image_id, ["cat", "/cache-used", "/secret-ok"])
    assert code == 0 and text == "cached\nsecret-ok\n"
    saved = b"".join(docker_client.api.get_image(result.image_id))
    assert b"s3cr3t-value-xyz" not in saved
    assert not ensure(plan, push=False).built


def test_no_daemon_is_docker_unavailable(monkeypatch, project):
    from prefect_flyimage import DockerUnavailable

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(DockerUnavailable, match="nonexistent"):
        Engine().client


@pytest.mark.parametrize("generated", [False, True], ids=["dockerfile-in-context", "generated-dockerfile"])
def test_same_plan_builds_the_same_image(project, unique_name, generated):
    # A build must not inject anything random into the context (docker-py names an
    # outside Dockerfile ".dockerfile.<random>" and rewrites .dockerignore with it).
    text = (project / "Dockerfile").read_text() + "COPY . /src\n"
    if generated:
        (project / "Dockerfile").unlink()
        plan = BuildPlan(context=project, dockerfile_text=text, repository=f"127.0.0.1:5001/{unique_name}")
    else:
        (project / "Dockerfile").write_text(text)
        plan = BuildPlan.from_dockerfile(project, f"127.0.0.1:5001/{unique_name}")
    first = ensure(plan, push=False, force=True)
    second = ensure(plan, push=False, force=True)
    assert first.built and second.built
    assert second.image_id == first.image_id
    code, listing = Engine().run(first.image_id, ["ls", "-a", "/src"])
    assert code == 0 and "notes.log" not in listing and "app.txt" in listing


def test_buildkit_preference_from_the_environment(project, unique_name, monkeypatch):
    plan = BuildPlan.from_dockerfile(project, f"127.0.0.1:5001/{unique_name}")
    monkeypatch.setenv("PREFECT_FLYIMAGE_BUILD_BACKEND", "buildkit")
    out = io.StringIO()
    result = ensure(plan, push=False, stream_progress_to=out)
    assert result.built and re.search(r"^#\d+ \[2/2\] COPY app.txt", out.getvalue(), re.M)  # BuildKit's output
    code, text = Engine().run(result.image_id, None)
    assert (code, text) == (0, "version 1\n")
