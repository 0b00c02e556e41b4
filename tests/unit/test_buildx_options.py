"""Prefect's buildx options: what enters the plan hash, the flags they become, and the
typed error when the docker CLI has no buildx (no daemon needed)."""

from __future__ import annotations

import pytest

from prefect_flyimage.docker_image import plan_for_build
from prefect_flyimage.engine import Engine
from prefect_flyimage.engine._buildx import buildx_flags
from prefect_flyimage.errors import BuildxUnavailable, InvalidArgumentError
from prefect_flyimage.plan import BuildPlan


@pytest.fixture
def project(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\n")
    (tmp_path / "a.txt").write_text("a\n")
    return tmp_path


def _plan(project, **kwargs):
    return plan_for_build("127.0.0.1:5999/p", context=project, dockerfile="Dockerfile", build_kwargs=kwargs, backend="buildx")


def test_platforms_enter_the_hash_cache_refs_do_not(project):
    base, _ = _plan(project)
    multi, _ = _plan(project, platforms=["linux/amd64", "linux/arm64"])
    assert multi.platform == "linux/amd64,linux/arm64"
    assert multi.hash != base.hash
    cached, extra = _plan(project, platforms=["linux/amd64", "linux/arm64"], cache_to="type=registry,ref=r:cache,mode=max",
                          cache_from="r:cache", secrets=["id=a,src=/x"], ssh="default")
    assert cached.hash == multi.hash
    assert extra == {"cache_to": "type=registry,ref=r:cache,mode=max", "cache_from": "r:cache", "secrets": ["id=a,src=/x"], "ssh": "default"}


def test_platform_list_equals_platforms(project):
    a, _ = _plan(project, platform=["linux/amd64", "linux/arm64"])
    b, _ = _plan(project, platforms=["linux/amd64", "linux/arm64"])
    assert a.hash == b.hash


@pytest.mark.parametrize("bad", [["linux/amd64", 3], [None], "linux/amd64,linux/"])
def test_bad_platforms_name_the_input(project, bad):
    with pytest.raises(InvalidArgumentError, match="platform"):
        _plan(project, platforms=bad) if not isinstance(bad, str) else BuildPlan.from_dockerfile(project, "r/p", platform=bad)


def test_buildx_flags():
    assert buildx_flags({
        "secrets": ["id=a,env=TOKEN", "id=b,src=/run/b"], "ssh": "default",
        "cache_from": ["127.0.0.1:5000/r:cache"], "cache_to": {"type": "registry", "ref": "x:c", "mode": "max"},
    }) == [
        "--secret", "id=a,env=TOKEN", "--secret", "id=b,src=/run/b", "--ssh", "default",
        "--cache-from", "type=registry,ref=127.0.0.1:5000/r:cache", "--cache-to", "type=registry,ref=x:c,mode=max",
    ]
    with pytest.raises(ValueError, match="secrets"):
        buildx_flags({"secrets": "just-a-value"})


@pytest.mark.parametrize("kwargs", [{"platforms": ["linux/amd64", "linux/arm64"]}, {"cache_to": "r:cache"}])
def test_no_buildx_is_a_typed_error(project, monkeypatch, kwargs):
    # /bin/false stands for a docker CLI without buildx (Docker 20.10's): nothing is built
    monkeypatch.setenv("PREFECT_FLYIMAGE_DOCKER_CLI", "/bin/false")
    plan, extra = _plan(project, **kwargs)
    with pytest.raises(BuildxUnavailable, match="buildx"):
        Engine().build(plan, extra=extra)


def test_registry_cache_options(monkeypatch):
    from prefect_flyimage.engine._buildx import registry_cache_options

    monkeypatch.delenv("PREFECT_FLYIMAGE_REGISTRY_CACHE", raising=False)
    assert registry_cache_options("127.0.0.1:5000/team/app") == {
        "cache_from": "type=registry,ref=127.0.0.1:5000/team/app-buildcache:cache",
        "cache_to": "type=registry,ref=127.0.0.1:5000/team/app-buildcache:cache,mode=max,ignore-error=true",
    }
    monkeypatch.setenv("PREFECT_FLYIMAGE_REGISTRY_CACHE", "{repository}:buildcache")
    assert registry_cache_options("r/app")["cache_from"] == "type=registry,ref=r/app:buildcache"
    monkeypatch.setenv("PREFECT_FLYIMAGE_REGISTRY_CACHE", "off")
    assert registry_cache_options("r/app") is None


def test_cache_refused_reads_buildx_output():
    from prefect_flyimage.engine._buildx import cache_refused

    imported_missing = ["#4 importing cache manifest from r-buildcache:cache", "#4 ERROR: r-buildcache:cache: not found",
                        "#10 exporting cache to registry", "#10 DONE 0.1s"]
    assert cache_refused(imported_missing) is None
    refused = ["#10 exporting cache to registry", "#10 ERROR: error writing layer blob: 401 Unauthorized"]
    assert cache_refused(refused) == refused[1]


def test_buildkit_command_keeps_secret_values_out_of_argv(project, tmp_path, monkeypatch):
    """The BuildKit command: tags, labels, network; an env secret is copied to a private
    file (the 20.10 CLI has no env= source), so its value never reaches argv."""
    from prefect_flyimage.engine._buildkit import buildkit_command
    from prefect_flyimage.plan import BuildSecret

    monkeypatch.setenv("PREFECT_FLYIMAGE_DOCKER_CLI", "/bin/false")  # `buildx version` fails: the old CLI's `build`
    monkeypatch.setenv("FLYIMAGE_TEST_TOKEN", "s3cr3t-value")
    plan = BuildPlan.from_dockerfile(
        project, "127.0.0.1:5999/p", secrets=[BuildSecret(id="tok", env="FLYIMAGE_TEST_TOKEN")], build_args={"A": "1"},
    )
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    cmd = buildkit_command(plan, project, ["r:a", "r:b"], tmp_path / "Df", tmp_path / "iid", secrets_dir, "host")
    assert cmd[:2] == ["/bin/false", "build"]
    assert cmd[-1] == str(project)
    assert [cmd[i + 1] for i, v in enumerate(cmd) if v == "-t"] == ["r:a", "r:b"]
    assert cmd[cmd.index("--network") + 1] == "host"
    assert cmd[cmd.index("--build-arg") + 1] == "A=1"
    assert "s3cr3t-value" not in " ".join(cmd)
    (secret_file,) = secrets_dir.iterdir()
    assert secret_file.read_text() == "s3cr3t-value"
    assert secret_file.stat().st_mode & 0o077 == 0
    assert cmd[cmd.index("--secret") + 1] == f"id=tok,src={secret_file}"


def test_layers_loaded_into_the_daemon_are_gzipped_fast_by_default(monkeypatch):
    from prefect_flyimage.engine._buildx import load_output
    from prefect_flyimage.errors import InvalidArgumentError

    monkeypatch.delenv("PREFECT_FLYIMAGE_LAYER_COMPRESSION", raising=False)
    assert load_output() == ["--output", "type=docker,compression=gzip,compression-level=1"]
    monkeypatch.setenv("PREFECT_FLYIMAGE_LAYER_COMPRESSION", "9")
    assert load_output() == ["--output", "type=docker,compression=gzip,compression-level=9"]
    monkeypatch.setenv("PREFECT_FLYIMAGE_LAYER_COMPRESSION", "default")
    assert load_output() == ["--load"]
    monkeypatch.setenv("PREFECT_FLYIMAGE_LAYER_COMPRESSION", "fast")
    with pytest.raises(InvalidArgumentError, match="PREFECT_FLYIMAGE_LAYER_COMPRESSION"):
        load_output()
