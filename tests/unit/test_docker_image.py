"""``DockerImage`` without Docker: naming (Prefect's rules), the content tag, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.docker.docker_image import DockerImage as PrefectDockerImage
from prefect.settings import PREFECT_DEFAULT_DOCKER_BUILD_NAMESPACE, temporary_settings

from prefect_flyimage import ContextError, DockerImage, InvalidReferenceError, RegistryCredentials
from prefect_flyimage.docker_image import plan_for_build
from prefect_flyimage.dockerfile import DockerfileExistsError, default_dockerfile_text
from prefect_flyimage.plan import BuildPlan

pytestmark = pytest.mark.prefect_compat  # also run on the oldest supported Prefect (scripts/test.sh)


@pytest.fixture(autouse=True)
def _stat_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path_factory.mktemp("statcache")))


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "myproject"
    root.mkdir()
    (root / "flows.py").write_text("print('hello')\n")
    monkeypatch.chdir(root)
    return root


def test_is_a_prefect_docker_image():
    assert issubclass(DockerImage, PrefectDockerImage)


NAMES = [
    "app",
    "org/app",
    "127.0.0.1:5000/team/app",
    "registry.example.com:5050/a/b/c",
    "localhost:5000/app",
]


@pytest.mark.parametrize("namespace", [None, "127.0.0.1:5000/ns"])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("tag", [None, "dev"])
def test_names_match_prefect(project, name, namespace, tag):
    with temporary_settings({PREFECT_DEFAULT_DOCKER_BUILD_NAMESPACE: namespace}):
        ours = DockerImage(name, tag=tag)
        theirs = PrefectDockerImage(name, tag=tag, stream_progress_to=None)
        assert ours.name == theirs.name
        if tag:
            assert ours.tag == theirs.tag and ours.reference == theirs.reference
        in_name = DockerImage(f"{name}:v2")
        assert (in_name.name, in_name.tag) == (theirs.name, "v2")


def test_only_one_tag(project):
    with pytest.raises(ValueError, match="Only one tag can be provided - both 'v1' and 'v2'"):
        DockerImage("127.0.0.1:5000/app:v1", tag="v2")
    with pytest.raises(ValueError, match="Only one tag"):
        PrefectDockerImage("127.0.0.1:5000/app:v1", tag="v2")  # same rule as Prefect


@pytest.mark.parametrize(
    "name, part",
    [
        ("127.0.0.1:5000/Team/App", "repository"),
        ("app:bad tag!", "tag"),
        ("127.0.0.1:5000/app@sha256:" + "0" * 64, "digest"),
        ("", "repository"),
    ],
)
def test_bad_names_are_typed_errors_naming_the_input(project, name, part):
    with pytest.raises(InvalidReferenceError) as info:
        DockerImage(name)
    assert info.value.part == part
    assert isinstance(info.value, ValueError)  # what Prefect's callers catch


def test_bad_tag_argument_is_rejected_early(project):
    with pytest.raises(InvalidReferenceError):
        DockerImage("127.0.0.1:5000/app", tag="-bad")


def test_default_tag_is_the_content_tag_and_nothing_is_written(project):
    before = sorted(p.name for p in project.iterdir())
    image = DockerImage("127.0.0.1:5000/team/app", pull=False)
    plain = BuildPlan(
        context=project, dockerfile_text=default_dockerfile_text(project), repository="127.0.0.1:5000/team/app"
    )
    # The base image is an input too (offline here: recorded by tag, so the tag differs from the plain plan's).
    expected = plain.with_bases(((default_dockerfile_text(project).split()[1], "offline"),)).content_tag
    assert expected != plain.content_tag
    assert image.tag == expected and len(expected) == 16
    assert image.reference == f"127.0.0.1:5000/team/app:{expected}"
    assert DockerImage("127.0.0.1:5000/team/app").tag == expected  # stable, not a timestamp
    assert sorted(p.name for p in project.iterdir()) == before  # dockerfile="auto" wrote nothing
    assert image.digest is None and image.pinned == image.reference and image.result is None

    (project / "flows.py").write_text("print('changed')\n")
    assert DockerImage("127.0.0.1:5000/team/app").tag != expected
    # The plan's Dockerfile is Prefect's default one, naming the project folder.
    assert "COPY . /opt/prefect/myproject/" in image.plan.dockerfile_text


def test_custom_context_is_honoured(project, tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "job.py").write_text("x = 1\n")
    image = DockerImage("127.0.0.1:5000/app", context=other)
    assert image.plan.context == other.resolve()
    assert "COPY . /opt/prefect/elsewhere/" in image.plan.dockerfile_text
    assert image.tag != DockerImage("127.0.0.1:5000/app").tag  # cwd is a different context


def test_auto_with_an_existing_dockerfile_is_a_typed_error(project):
    (project / "Dockerfile").write_text("FROM busybox\n")
    image = DockerImage("127.0.0.1:5000/app")
    with pytest.raises(DockerfileExistsError) as info:
        image.reference
    assert isinstance(info.value, ContextError) and isinstance(info.value, ValueError)
    assert info.value.path == project / "Dockerfile"
    assert str(project / "Dockerfile") in str(info.value) and "dockerfile='Dockerfile'" in str(info.value)
    # The named Dockerfile is fine.
    assert DockerImage("127.0.0.1:5000/app", dockerfile="Dockerfile").plan.dockerfile_text == "FROM busybox\n"


def test_missing_dockerfile_or_context(project, tmp_path):
    with pytest.raises(ContextError, match="Dockerfile 'nope.Dockerfile' not found"):
        DockerImage("127.0.0.1:5000/app", dockerfile="nope.Dockerfile").reference
    with pytest.raises(ContextError, match="does not exist"):
        DockerImage("127.0.0.1:5000/app", context=tmp_path / "missing").reference


def test_build_kwargs_that_change_the_image_change_the_tag(project):
    base = DockerImage("127.0.0.1:5000/app").tag
    assert DockerImage("127.0.0.1:5000/app", buildargs={"A": "1"}).tag != base
    assert DockerImage("127.0.0.1:5000/app", labels={"team": "x"}).tag != base
    assert DockerImage("127.0.0.1:5000/app", target="final").tag != base
    # How to build, not what: same tag.
    assert DockerImage("127.0.0.1:5000/app", pull=False, nocache=True, network_mode="none", shmsize=1 << 20).tag == base


def test_build_kwargs_map_onto_the_plan(project):
    plan, extra = plan_for_build(
        "127.0.0.1:5000/app",
        build_kwargs={"buildargs": {"A": "1"}, "pull": False, "nocache": True, "network_mode": "none", "shmsize": 5,
                      "decode": True},
        backend="buildx",
    )
    assert plan.build_args == (("A", "1"),) and plan.pull is False and plan.no_cache is True
    assert plan.network == "none" and plan.backend == "buildkit"
    assert extra == {"shmsize": 5}  # passed to docker-py as is; "decode" is ours to set
    default, _ = plan_for_build("127.0.0.1:5000/app")
    assert default.pull is True  # Prefect's default


def test_options_we_set_ourselves_are_refused(project):
    with pytest.raises(ValueError, match="fileobj, path"):
        DockerImage("127.0.0.1:5000/app", path=".", fileobj=None).reference
    with pytest.raises(ValueError, match="build_backend"):
        DockerImage("127.0.0.1:5000/app", build_backend="kaniko")


def test_tag_setter(project):
    image = DockerImage("127.0.0.1:5000/app")
    content = image.tag
    image.tag = "release"
    assert image.reference == "127.0.0.1:5000/app:release"
    assert image.plan.tag == "release" and content in image.plan.all_tags
    with pytest.raises(InvalidReferenceError):
        image.tag = "bad tag"


def test_credentials_never_show(project):
    creds = RegistryCredentials("127.0.0.1:5000", "flyimage", "hunter2-secret")
    image = DockerImage("127.0.0.1:5000/app", credentials=creds)
    assert "hunter2-secret" not in repr(image) and "hunter2-secret" not in repr(vars(image))
    from_dict = DockerImage("127.0.0.1:5000/app", credentials={"username": "u", "password": "hunter2-secret"})
    assert from_dict.credentials.registry == "127.0.0.1:5000"  # filled from the image name
    assert "hunter2-secret" not in repr(from_dict.credentials)


def test_append_keyword_is_checked_and_not_hashed(project):
    from prefect_flyimage.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="append"):
        DockerImage("127.0.0.1:5000/app", append="no")
    on = DockerImage("127.0.0.1:5000/app", pull=False)
    off = DockerImage("127.0.0.1:5000/app", pull=False, append=False)
    assert on.plan.append and not off.plan.append
    assert off.tag == on.tag  # how, not what: the same image either way
    assert "append" not in off.build_kwargs
