"""Several destinations (issue 11, deliver 6): after the primary push, the image is copied
registry to registry (mounted within one registry, streamed between two), each mirror
confirmed by digest; a refused mirror is a typed error naming it."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_fixtures import registry_workdir, token_issuer, token_registry  # noqa: E402,F401

from prefect_flyimage import BuildPlan, RegistryCredentials, ensure  # noqa: E402
from prefect_flyimage.engine._process import buildx_available, docker_cli  # noqa: E402
from prefect_flyimage.errors import InvalidArgumentError, MirrorError  # noqa: E402
from prefect_flyimage.registry import RegistryClient  # noqa: E402

pytestmark = pytest.mark.integration

ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
))


@pytest.fixture
def project(tmp_path: Path, busybox_image: str) -> Path:
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY app.txt /app.txt\nCMD [\"cat\", \"/app.txt\"]\n")
    (tmp_path / "app.txt").write_text("mirrored\n")
    return tmp_path


def _digest(host: str, repo: str, ref: str, creds: RegistryCredentials | None = None) -> str | None:
    with RegistryClient(host, creds) as client:
        return client.manifest_digest(f"{host}/{repo}:{ref}" if not ref.startswith("sha256:") else f"{host}/{repo}@{ref}")


def test_mirrors_get_the_same_digest_streamed_or_mounted_and_are_skipped_when_held(
    project, registry, registry_noauth, creds, unique_name
):
    primary = f"{registry.host}/{unique_name}"
    elsewhere = f"{registry_noauth.host}/{unique_name}-mirror"
    same = f"{registry.host}/{unique_name}-same"
    out = io.StringIO()
    plan = BuildPlan.from_dockerfile(project, primary, tag="v1")
    result = ensure(plan, credentials=creds, stream_progress_to=out, mirrors=[elsewhere, same])
    assert result.pushed and result.mirrors == (elsewhere, same)
    for tag in result.tags:  # the content tag and v1, at the primary's digest
        assert _digest(registry_noauth.host, f"{unique_name}-mirror", tag) == result.digest
        assert _digest(registry.host, f"{unique_name}-same", tag, creds) == result.digest
    text = out.getvalue()
    manifest, _ = _index(registry.host, unique_name, plan.content_tag, (registry.username, registry.password))
    blobs = 1 + len(manifest["layers"])
    # another registry: every blob streamed; the same registry: mounted, no bytes sent
    assert f"mirrored to {elsewhere} ({result.digest}): {blobs} blob(s) streamed, 0 mounted" in text
    assert f"mirrored to {same} ({result.digest}): 0 blob(s) streamed, {blobs} mounted" in text
    assert registry.password not in text
    assert result.as_dict()["mirrors"] == [elsewhere, same]

    # the copy is a working image: the daemon pulls it from the mirror by digest and runs it
    pinned = f"{elsewhere}@{result.digest}"
    run = subprocess.run([docker_cli(), "run", "--rm", "--network", "none", pinned], capture_output=True, text=True, timeout=120)
    subprocess.run([docker_cli(), "rmi", pinned], capture_output=True)
    assert (run.returncode, run.stdout) == (0, "mirrored\n"), run.stderr

    # unchanged: nothing built or pushed, the mirrors already hold it: nothing copied
    out = io.StringIO()
    again = ensure(BuildPlan.from_dockerfile(project, primary, tag="v1"), credentials=creds, stream_progress_to=out, mirrors=[elsewhere, same])
    assert again.cached and again.mirrors == (elsewhere, same)
    assert f"mirror {elsewhere} already holds {result.digest}: nothing copied" in out.getvalue()

    # a new mirror tag only: the manifest is put, no blob moves
    out = io.StringIO()
    third = ensure(BuildPlan.from_dockerfile(project, primary, tag="v2"), credentials=creds, stream_progress_to=out, mirrors=[elsewhere])
    assert third.digest == result.digest and _digest(registry_noauth.host, f"{unique_name}-mirror", "v2") == result.digest
    assert f"mirrored to {elsewhere} ({result.digest}): 0 blob(s) streamed, 0 mounted, 0 already there, 1 manifest(s) put" in out.getvalue()


def test_a_refused_mirror_names_itself_and_the_ones_done(project, registry, registry_noauth, creds, unique_name):
    primary = f"{registry_noauth.host}/{unique_name}"
    ok = f"{registry_noauth.host}/{unique_name}-ok"
    refused = f"{registry.host}/{unique_name}-refused"
    plan = BuildPlan.from_dockerfile(project, primary)
    # no credentials for the auth registry (the test's docker config is empty)
    with pytest.raises(MirrorError) as caught:
        ensure(plan, mirrors=[ok, refused])
    err = caught.value
    assert err.destination == refused and err.published == (ok,) and err.registry == registry.host
    assert refused in str(err) and "anonymous" in str(err)
    assert _digest(registry.host, f"{unique_name}-refused", plan.content_tag, creds) is None  # nothing half-published
    assert _digest(registry_noauth.host, f"{unique_name}-ok", plan.content_tag) == err.digest

    # wrong credentials: refused too, the password never shown
    bad = RegistryCredentials(registry.host, registry.username, "not-the-password-123")
    with pytest.raises(MirrorError) as caught:
        ensure(plan, mirrors=[refused], mirror_credentials={registry.host: bad})
    assert "not-the-password-123" not in str(caught.value) and caught.value.published == ()

    # with the registry's credentials: published, same digest
    result = ensure(plan, mirrors=[ok, refused], mirror_credentials={registry.host: creds})
    assert result.cached and result.mirrors == (ok, refused)
    assert _digest(registry.host, f"{unique_name}-refused", plan.content_tag, creds) == result.digest


def test_mirrors_are_checked_before_anything_runs(project, registry_noauth, unique_name):
    repo = f"{registry_noauth.host}/{unique_name}"
    plan = BuildPlan.from_dockerfile(project, repo)
    with pytest.raises(InvalidArgumentError, match="mirrors"):
        ensure(plan, push=False, mirrors=[f"{repo}-m"])
    with pytest.raises(InvalidArgumentError, match=r"mirrors\[0\].*tag or digest"):
        ensure(plan, mirrors=[f"{repo}-m:v1"])
    with pytest.raises(InvalidArgumentError, match="own repository"):
        ensure(plan, mirrors=[repo])


def _index(host: str, repo: str, ref: str, auth: tuple[str, str] | None = None) -> tuple[dict, str]:
    r = httpx.get(f"http://{host}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, auth=auth)
    r.raise_for_status()
    return r.json(), r.headers["Docker-Content-Digest"]


def test_a_multi_platform_index_is_copied_whole(services, busybox_image, registry, registry_noauth, creds, unique_name, tmp_path):
    if not buildx_available():
        pytest.skip(f"{docker_cli()} has no buildx (classic daemon; the modern stack has it)")
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY a.txt /a.txt\n")
    (tmp_path / "a.txt").write_text("two platforms\n")
    primary = f"{registry_noauth.host}/{unique_name}"
    dest = f"{registry.host}/{unique_name}-mirror"
    plan = BuildPlan.from_dockerfile(tmp_path, primary, platform="linux/amd64,linux/arm64")
    out = io.StringIO()
    result = ensure(plan, stream_progress_to=out, mirrors=[dest], mirror_credentials={registry.host: creds})
    assert result.pushed and result.mirrors == (dest,)
    source, digest = _index(registry_noauth.host, unique_name, plan.content_tag)
    copied, copied_digest = _index(registry.host, f"{unique_name}-mirror", plan.content_tag, (registry.username, registry.password))
    assert digest == copied_digest == result.digest and copied == source
    platforms = {(m["platform"]["os"], m["platform"]["architecture"]) for m in copied["manifests"]}
    assert {("linux", "amd64"), ("linux", "arm64")} <= platforms
    for child in copied["manifests"]:  # each platform's (and attestation's) manifest and blobs came along
        body, child_digest = _index(registry.host, f"{unique_name}-mirror", child["digest"], (registry.username, registry.password))
        assert child_digest == child["digest"]
        for blob in [body["config"], *body["layers"]]:
            head = httpx.head(f"http://{registry.host}/v2/{unique_name}-mirror/blobs/{blob['digest']}",
                              auth=(registry.username, registry.password))
            assert head.status_code == 200
    assert f"{len(copied['manifests']) + 1} manifest(s) put" in out.getvalue()


def test_front_doors_take_mirrors(project, registry_noauth, unique_name, monkeypatch, capsys):
    import json

    from prefect_flyimage.cli import EXIT_OK, main
    from prefect_flyimage.deployments import steps
    from prefect_flyimage.docker_image import DockerImage

    host = registry_noauth.host
    # the CLI: --mirror, repeatable
    code = main(["ensure", str(project), "-r", f"{host}/{unique_name}", "--mirror", f"{host}/{unique_name}-cli",
                 "--mirror", f"{host}/{unique_name}-cli2", "--json", "-q"])
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK and out["mirrors"] == [f"{host}/{unique_name}-cli", f"{host}/{unique_name}-cli2"]
    tag = out["tags"][0]
    assert _digest(host, f"{unique_name}-cli2", tag) == out["digest"]
    assert main(["ensure", str(project), "-r", f"{host}/{unique_name}", "--mirror", f"{host}/{unique_name}:v1", "-q"]) == 2

    # the push step: mirrors of a pushed image
    monkeypatch.chdir(project)  # the step builds the working directory, as Prefect's
    built = steps.build_docker_image(f"{host}/{unique_name}-step", dockerfile="Dockerfile", pull=False)
    pushed = steps.push_docker_image(built["image_name"], tag=built["tag"], mirrors=[f"{host}/{unique_name}-step-m"])
    assert pushed["mirrors"] == [f"{host}/{unique_name}-step-m"]
    assert _digest(host, f"{unique_name}-step-m", built["tag"]) == pushed["digest"]

    # DockerImage: a keyword of ours beside Prefect's build kwargs (not hashed)
    image = DockerImage(f"{host}/{unique_name}-di", dockerfile="Dockerfile", stream_progress_to=None, context=project, pull=False,
                        mirrors=[f"{host}/{unique_name}-di-m"])
    plain = DockerImage(f"{host}/{unique_name}-di", dockerfile="Dockerfile", stream_progress_to=None, context=project, pull=False)
    assert image.tag == plain.tag
    image.build()
    image.push()
    assert image.result.mirrors == (f"{host}/{unique_name}-di-m",)
    assert _digest(host, f"{unique_name}-di-m", image.tag) == image.digest


def test_a_token_auth_mirror_gets_streamed_blobs(project, registry_noauth, unique_name, token_registry, token_issuer):
    """A Bearer-token registry (Docker Hub/GHCR style): the upload's POST fetches the push
    token, and the streamed PUT (a body that cannot be sent twice) goes with it."""
    token_creds = RegistryCredentials(token_registry.host, "ci", token_issuer.users["ci"])
    plan = BuildPlan.from_dockerfile(project, f"{registry_noauth.host}/{unique_name}")
    dest = f"{token_registry.host}/{unique_name}-mirror"
    out = io.StringIO()
    result = ensure(plan, stream_progress_to=out, mirrors=[dest], mirror_credentials={token_registry.host: token_creds})
    assert result.mirrors == (dest,) and "blob(s) streamed" in out.getvalue()
    assert _digest(token_registry.host, f"{unique_name}-mirror", plan.content_tag, token_creds) == result.digest
    assert token_issuer.users["ci"] not in out.getvalue()
