"""Docker 26 + buildx (scripts/services.sh FLYIMAGE_DOCKER=modern): one image index for
two platforms, the arm64 variant running under qemu, a registry layer cache, Prefect's
buildx options. Skipped on a daemon whose CLI has no buildx (the classic 20.10 one)."""

from __future__ import annotations

import io
import subprocess

import httpx
import pytest

from prefect_flyimage.docker_image import DockerImage
from prefect_flyimage.engine._process import buildx_available, docker_cli

pytestmark = pytest.mark.integration

INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture
def modern(services):
    if not buildx_available():
        reason = f"{docker_cli()} has no buildx (classic daemon; FLYIMAGE_DOCKER=modern has it)"
        if services.get("FLYIMAGE_DOCKER") == "modern":
            pytest.fail(f"the modern stack's {reason}", pytrace=False)  # broken stack, not a skip
        pytest.skip(reason)


def _manifest(registry: str, repo: str, ref: str) -> tuple[dict, str]:
    accept = f"{INDEX}, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    r = httpx.get(f"http://{registry}/v2/{repo}/manifests/{ref}", headers={"Accept": accept})
    r.raise_for_status()
    body = r.json()
    body.setdefault("mediaType", r.headers.get("Content-Type"))  # optional in an OCI index
    return body, r.headers["Docker-Content-Digest"]


def test_two_platforms_one_index_secret_and_cache(modern, busybox_image, registry_noauth, unique_name, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-value")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("hello\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nCOPY a.txt /a.txt\n"
        "RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /len && uname -m > /arch\n"
    )
    out = io.StringIO()
    repo = f"{registry_noauth.host}/{unique_name}"
    image = DockerImage(
        repo, dockerfile="Dockerfile", build_backend="buildx", stream_progress_to=out, context=ctx, pull=False,
        platforms=["linux/amd64", "linux/arm64"], push=True, secrets=[f"id=tok,src={secret}"],
        cache_to=f"type=registry,ref={repo}:buildcache,mode=max",
    )
    image.build()
    assert image.result.built and image.result.pushed
    index, digest = _manifest(registry_noauth.host, unique_name, image.tag)
    assert index["mediaType"] == INDEX
    platforms = {(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]
                 if m.get("annotations", {}).get("vnd.docker.reference.type") != "attestation-manifest"}
    assert platforms == {("linux", "amd64"), ("linux", "arm64")}
    assert image.digest == digest and image.pinned == f"{repo}@{digest}"
    assert "s3cr3t-value" not in out.getvalue()
    # the layer cache went to the registry beside the image
    _manifest(registry_noauth.host, unique_name, "buildcache")
    # push() after a pushing build does nothing (Prefect's buildx semantics)
    before = image.result
    image.push()
    assert image.result is before
    # the arm64 variant runs under qemu and saw the secret's length, not its text
    run = subprocess.run(
        [docker_cli(), "run", "--rm", "--network", "none", "--platform", "linux/arm64", f"{repo}@{digest}",
         "sh", "-c", "cat /arch /len"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["aarch64", str(len("s3cr3t-value"))]
    # unchanged: found in the registry (the index), nothing built
    again = DockerImage(
        repo, dockerfile="Dockerfile", build_backend="buildx", stream_progress_to=None, context=ctx, pull=False,
        platforms=["linux/amd64", "linux/arm64"],
    )
    again.push()
    assert again.tag == image.tag and not again.result.built and not again.result.pushed and again.digest == digest


def _ensure(plan, **kwargs):
    from prefect_flyimage.pipeline import ensure

    out = io.StringIO()
    return ensure(plan, push=True, stream_progress_to=out, **kwargs), out.getvalue()


def test_pushing_build_exports_the_registry_cache_and_a_refused_one_is_reported(
    modern, busybox_image, registry_noauth, registry, unique_name, tmp_path, monkeypatch, caplog
):
    from prefect_flyimage.plan import BuildPlan

    monkeypatch.delenv("PREFECT_FLYIMAGE_REGISTRY_CACHE", raising=False)
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b\n")
    result, _ = _ensure(BuildPlan.from_dockerfile(tmp_path, f"{registry_noauth.host}/{unique_name}"))
    assert result.pushed
    _manifest(registry_noauth.host, f"{unique_name}-buildcache", "cache")
    # A cache in a registry buildx has no login for (nothing in this docker config) is
    # refused: the build and the push go on, and the refusal is reported.
    monkeypatch.setenv("PREFECT_FLYIMAGE_REGISTRY_CACHE", f"{registry.host}/{unique_name}-elsewhere:cache")
    (tmp_path / "a.txt").write_text("b\n")
    with caplog.at_level("WARNING", logger="prefect_flyimage"):
        result, out = _ensure(BuildPlan.from_dockerfile(tmp_path, f"{registry_noauth.host}/{unique_name}"))
    assert result.pushed and result.digest
    assert "registry cache not exported" in out
    assert any("registry cache not" in r.getMessage() for r in caplog.records)


def test_registry_cache_of_an_auth_registry_gets_the_push_credentials(
    modern, busybox_image, registry, unique_name, tmp_path, monkeypatch
):
    """buildx reads logins only from the docker config (empty here): the cache of an auth
    registry is exported, then imported, with the push's credentials in a private config."""
    import tempfile

    from prefect_flyimage.credentials import RegistryCredentials
    from prefect_flyimage.plan import BuildPlan

    monkeypatch.delenv("PREFECT_FLYIMAGE_REGISTRY_CACHE", raising=False)
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # where the build's temporary folders go
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a\n")
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b\n")
    creds = RegistryCredentials(username=registry.username, password=registry.password, registry=registry.host)
    result, out = _ensure(BuildPlan.from_dockerfile(ctx, f"{registry.host}/{unique_name}"), credentials=creds)
    assert result.pushed and "registry cache not" not in out
    cache = httpx.get(
        f"http://{registry.host}/v2/{unique_name}-buildcache/manifests/cache", auth=(registry.username, registry.password),
        headers={"Accept": f"{INDEX}, application/vnd.oci.image.manifest.v1+json"},
    )
    assert cache.status_code == 200 and cache.json()["manifests"]  # the cache's layers are listed
    # a changed file: the cache manifest is read back from the auth registry (no 401)
    (ctx / "a.txt").write_text("b\n")
    again, out = _ensure(BuildPlan.from_dockerfile(ctx, f"{registry.host}/{unique_name}"), credentials=creds)
    assert again.built and again.pushed and "registry cache not" not in out
    assert f"importing cache manifest from {registry.host}/{unique_name}-buildcache:cache" in out
    assert "cache importer" not in out and "401" not in out
    assert registry.password not in out
    assert list(private.iterdir()) == []  # the private docker config went with the build's folder


def test_existence_check_wants_every_platform_in_the_index(modern, busybox_image, registry_noauth, unique_name, tmp_path):
    from dataclasses import replace

    from prefect_flyimage._observe import Target, observe
    from prefect_flyimage.plan import BuildPlan

    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY Dockerfile /d\n")
    plan = BuildPlan.from_dockerfile(tmp_path, f"{registry_noauth.host}/{unique_name}", platform="linux/amd64,linux/arm64/v8")
    result, _ = _ensure(plan)
    target = Target.of(plan)
    assert target.platforms == ("linux/amd64", "linux/arm64/v8")
    assert observe(target).remote_digest == result.digest
    # the same tag, asked for a platform the index lacks: not published
    assert observe(replace(target, platforms=(*target.platforms, "linux/s390x"))).remote_digest is None
    again, _ = _ensure(plan)
    assert not again.built and not again.pushed and again.digest == result.digest


def test_the_default_registry_cache_only_where_the_daemon_can_export_it(services):
    # buildx's docker driver exports a cache only with the containerd image store (the
    # modern stack); on the classic store a pushing build with one would fail outright.
    from prefect_flyimage import Engine

    with Engine() as engine:
        assert engine.registry_cache is (services.get("FLYIMAGE_DOCKER") == "modern")
