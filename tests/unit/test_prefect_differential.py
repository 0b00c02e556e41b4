"""Differential tests: ours vs Prefect's ``prefect.utilities.dockerutils`` on the same inputs.

Every row must give identical results, except the documented deviations, each of which
has its own test showing what Prefect does and why ours is right.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path, PurePosixPath

import pytest

P = pytest.importorskip("prefect.utilities.dockerutils")
import prefect  # noqa: E402  (after importorskip on purpose)

from prefect_flyimage import dockerfile as ours_dockerfile  # noqa: E402
from prefect_flyimage import names, prefect_images  # noqa: E402
from prefect_flyimage.errors import InvalidReferenceError  # noqa: E402
from prefect_flyimage.names import ImageRef  # noqa: E402

pytestmark = pytest.mark.prefect_compat  # also run on the oldest supported Prefect (scripts/test.sh)

SHA = "sha256:" + "0123456789abcdef" * 4


@pytest.fixture
def git_unavailable(monkeypatch):
    """Prefect shells out to git; make that fail so it uses its build-info fallback."""

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "check_output", no_git)


@pytest.fixture
def spawn_log(monkeypatch):
    """Record (and refuse) every subprocess spawned; Prefect's try/except swallows the refusal."""
    log: list[object] = []

    def record(*args, **kwargs):
        log.append(args[0] if args else kwargs.get("args"))
        raise FileNotFoundError("spawning is disabled in this test")

    for name in ("Popen", "run", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, record)
    for name in ("system", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, record)
    return log


# --- image references -------------------------------------------------------------------

REFERENCES = [
    "localhost:5000/app:1",
    "localhost:5000/app",
    "localhost/app:dev",
    "localhost:5000",
    "hostname.io:5050/folder/subfolder:latest",
    "hostname.io:5050/folder/subfolder/deeper/app:v1",
    "org/team/app:1.0",
    "a/b/c/d",
    "busybox",
    "busybox:1.36",
    "library/busybox",
    "docker.io/library/busybox",
    "docker.io/library/busybox:latest",
    "prefecthq/prefect:3-latest",
    "prefecthq/prefect:3.8.8-python3.12",
    "ghcr.io/org/app:sha-abc_DEF.1",
    "127.0.0.1:5000/app:x",
    "[::1]:5000/app:x",
    "my-registry.example.com/app",
]


@pytest.mark.parametrize("reference", REFERENCES)
def test_parse_image_tag_matches(reference):
    assert names.parse_image_tag(reference) == P.parse_image_tag(reference)


@pytest.mark.parametrize("reference", REFERENCES)
def test_split_repository_path_matches(reference):
    assert names.split_repository_path(reference) == P.split_repository_path(reference)


@pytest.mark.parametrize("reference", REFERENCES)
def test_split_after_parse_matches(reference):
    # How Prefect's DockerImage combines the two.
    ours_name, _ = names.parse_image_tag(reference)
    theirs_name, _ = P.parse_image_tag(reference)
    assert names.split_repository_path(ours_name) == P.split_repository_path(theirs_name)


DIGEST_REFERENCES = [f"app@{SHA}", f"ghcr.io/org/app@{SHA}", f"org/app:v1@{SHA}", f"localhost:5000/a/b@{SHA}"]


@pytest.mark.parametrize("reference", DIGEST_REFERENCES)
def test_parse_image_tag_digest_matches(reference):
    # Prefect's documented third example: 'prefecthq/prefect@sha256:abc123' ->
    # ('prefecthq/prefect', 'sha256:abc123'). Same result here.
    assert names.parse_image_tag(reference) == P.parse_image_tag(reference)
    assert names.parse_image_tag(reference)[1] == SHA
    assert names.join_image_tag(*names.parse_image_tag(reference)) == reference


@pytest.mark.parametrize("reference", DIGEST_REFERENCES)
def test_deviation_docker_image_refuses_a_digest(reference, tmp_path, monkeypatch):
    from prefect.docker.docker_image import DockerImage as PrefectDockerImage

    from prefect_flyimage import DockerImage

    monkeypatch.chdir(tmp_path)
    # Prefect's DockerImage turns the digest into a tag: name:sha256:... is no reference.
    theirs = PrefectDockerImage(reference)
    with pytest.raises(InvalidReferenceError):
        ImageRef.parse(theirs.reference)
    # Ours says at once that a digest names an existing image (nothing to build).
    with pytest.raises(InvalidReferenceError, match="digest"):
        DockerImage(reference)


@pytest.mark.parametrize(
    "reference, prefect_result",
    [
        ("app:bad tag!", ("app", "bad tag!")),
        ("Org/App:1", ("Org/App", "1")),
        ("org/app:-leading-dash", ("org/app", "-leading-dash")),
        ("", ("", None)),
    ],
)
def test_deviation_invalid_reference_raises(reference, prefect_result):
    assert P.parse_image_tag(reference) == prefect_result  # Prefect returns garbage
    with pytest.raises(InvalidReferenceError):
        names.parse_image_tag(reference)
    with pytest.raises(InvalidReferenceError):
        names.split_repository_path(reference)


def test_deviation_invalid_reference_error_is_still_a_value_error():
    # Prefect raises ValueError (failed tuple unpacking) for 'a:b:c'; ours still is one.
    with pytest.raises(ValueError):
        P.parse_image_tag("a:b:c")
    with pytest.raises(ValueError):
        names.parse_image_tag("a:b:c")


# --- Prefect image names -----------------------------------------------------------------

IMAGE_NAME_ARGS = [
    ("3.8.8", None, None),
    ("3.8.8", "3.10", None),
    ("3.8.8", "3.12", None),
    ("3.8.8", "3.12", "conda"),
    ("3.0.0rc1", None, None),
    ("3.0.0rc1", "3.10", "conda"),
    ("3.0.0-RC1", "3.12", None),
    ("2.20.2", "3.9", None),
    ("3.8.9.dev1", "3.11", None),
    ("3.8.8", "3.12", "my flavor!"),
    ("3.8.8", "3.12", "x" * 200),
]


@pytest.mark.parametrize("version, python, flavor", IMAGE_NAME_ARGS)
def test_get_prefect_image_name_matches(git_unavailable, version, python, flavor):
    assert prefect_images.get_prefect_image_name(version, python, flavor) == P.get_prefect_image_name(
        version, python, flavor
    )


@pytest.mark.parametrize("python, flavor", [(None, None), ("3.10", None), ("3.12", "conda")])
@pytest.mark.parametrize(
    "version, revision",
    [
        ("3.8.9.dev1+12.gabcdef0", "abcdef0123456789abcdef0123456789abcdef01"),
        ("3.8.8+3.g1234567.dirty", "1234567890abcdef1234567890abcdef12345678"),
        ("3.8.8", "b73b09dc3699489c799dbb40ac5ed2da459e391c"),
    ],
)
def test_get_prefect_image_name_matches_for_installed_dev_build(
    git_unavailable, monkeypatch, version, revision, python, flavor
):
    # An installed dev build: __version__ and its recorded revision agree.
    monkeypatch.setattr(prefect, "__version__", version)
    monkeypatch.setattr(prefect, "__version_info__", dict(prefect.__version_info__, **{"full-revisionid": revision}))
    expected = P.get_prefect_image_name(None, python, flavor)
    assert prefect_images.get_prefect_image_name(None, python, flavor) == expected
    assert prefect_images.get_prefect_image_name(version, python, flavor) == expected


def test_deviation_no_git_subprocess_for_release_version(spawn_log):
    expected = "prefecthq/prefect:3.8.8-python3.12"
    assert P.get_prefect_image_name("3.8.8", "3.12") == expected
    assert spawn_log and "git" in spawn_log[0]  # Prefect shells out to git even for a release
    spawn_log.clear()
    assert prefect_images.get_prefect_image_name("3.8.8", "3.12") == expected
    assert spawn_log == []


def test_deviation_dev_sha_comes_from_version_not_cwd_repository(monkeypatch):
    # Prefect runs `git rev-parse HEAD` in the *current directory*: inside a user's flow
    # project it names the user's commit, an image that does not exist.
    monkeypatch.setattr(subprocess, "check_output", lambda *a, **k: b"usersha\n")
    assert P.get_prefect_image_name("3.8.9.dev1+12.gabcdef0", "3.12") == "prefecthq/prefect-dev:sha-usersha-python3.12"

    def forbidden(*args, **kwargs):
        raise AssertionError("subprocess spawned")

    monkeypatch.setattr(subprocess, "check_output", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    assert (
        prefect_images.get_prefect_image_name("3.8.9.dev1+12.gabcdef0", "3.12")
        == "prefecthq/prefect-dev:sha-abcdef0-python3.12"
    )


@pytest.mark.parametrize("version", ["20.10.0-ce", "20.10.0-ee", "24.0.7", "19.03.13-ce-beta", ""])
def test_format_outlier_version_name_matches(version):
    assert prefect_images.format_outlier_version_name(version) == P.format_outlier_version_name(version)


# --- Dockerfiles -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["ls"],
        ["pip", "install", "httpx"],
        ["echo", "it's", 'say "hi"'],
        ["sh", "-c", "a && b | c > d"],
        ["python", "-m", "pkg", "--flag=1", ""],
        ["echo", "back\\slash", "tab\there", "ünï"],
    ],
)
def test_to_run_command_matches(command):
    assert ours_dockerfile.to_run_command(command) == P.to_run_command(command)


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "my-project"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "data.json").write_text("{}")
    (root / "requirements.txt").write_text("httpx\n")
    return root


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _exercise(builder_cls, project: Path):
    with builder_cls("python:3.12-slim", base_directory=project, platform="linux/amd64") as builder:
        builder.add_line("ENV PYTHONUNBUFFERED=1")
        builder.add_lines(["RUN apt-get update", "RUN true"])
        builder.copy("requirements.txt", "/opt/app/requirements.txt")
        builder.copy(project / "pkg", PurePosixPath("/opt/app/pkg"))
        builder.copy(Path("pkg/sub/data.json"), "/data.json")
        builder.write_text("print('hi')\n", "/opt/app/main.py")
        builder.write_text("print('hi')\n", PurePosixPath("/opt/app/again.py"))
        builder.add_line(P.to_run_command(["pip", "install", "-r", "/opt/app/requirements.txt"]))
        builder.assert_has_file(project / "pkg", PurePosixPath("/opt/app/pkg"))
        builder.assert_line_before("RUN apt-get update", "RUN true")
        builder.assert_line_after("RUN true", "RUN apt-get update")
        builder.assert_line_absent("RUN false")
        return list(builder.dockerfile_lines), _tree(builder.context)


def test_image_builder_lines_and_context_match(project, monkeypatch):
    monkeypatch.chdir(project)  # Prefect's copy() needs it for directories (next test)
    assert _exercise(ours_dockerfile.ImageBuilder, project) == _exercise(P.ImageBuilder, project)


def test_image_builder_build_matches(project, monkeypatch):
    seen: dict[str, tuple] = {}

    def recorder(label):
        def build_image(context, dockerfile="Dockerfile", tag=None, pull=False, platform=None,
                        stream_progress_to=None, **kwargs):
            seen[label] = ((Path(context) / dockerfile).read_text(), tag, pull, platform, stream_progress_to, kwargs)
            return "sha256:id"

        return build_image

    monkeypatch.setattr(P, "build_image", recorder("prefect"))
    fake = types.ModuleType("prefect_flyimage.dockerutils")
    fake.build_image = recorder("ours")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prefect_flyimage.dockerutils", fake)

    results = {}
    for label, cls in (("prefect", P.ImageBuilder), ("ours", ours_dockerfile.ImageBuilder)):
        with cls("img", base_directory=project, platform="linux/arm64") as builder:
            builder.copy("requirements.txt", "/r.txt")
            results[label] = (builder.build(pull=True, stream_progress_to=sys.stdout), _tree(builder.context))
    assert results["ours"] == results["prefect"]
    assert seen["ours"] == seen["prefect"]


def test_image_builder_given_context_matches(tmp_path):
    lines = {}
    for label, cls in (("prefect", P.ImageBuilder), ("ours", ours_dockerfile.ImageBuilder)):
        context = tmp_path / label
        context.mkdir()
        with cls("img", context=context) as builder:
            builder.copy("app.py", "/app.py")
            builder.write_text("x", "/x")
            lines[label] = builder.dockerfile_lines
        assert builder.context == context and context.exists()
    assert lines["ours"] == lines["prefect"]


def test_existing_dockerfile_raises_compatible_errors(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM mine\n")
    with pytest.raises(ValueError):
        P.ImageBuilder("img", context=tmp_path)
    with pytest.raises(ValueError):
        ours_dockerfile.ImageBuilder("img", context=tmp_path)
    with pytest.raises(RuntimeError):
        with P.generate_default_dockerfile(tmp_path):
            pass  # pragma: no cover
    with pytest.raises(RuntimeError):
        with ours_dockerfile.generate_default_dockerfile(tmp_path):
            pass  # pragma: no cover
    assert (tmp_path / "Dockerfile").read_text() == "FROM mine\n"


def _prefect_default_dockerfile(context: Path) -> str:
    with P.generate_default_dockerfile(context) as path:
        return Path(path).read_text()


@pytest.mark.parametrize("with_requirements", [True, False])
def test_default_dockerfile_text_matches(git_unavailable, project, with_requirements):
    if not with_requirements:
        (project / "requirements.txt").unlink()
    expected = _prefect_default_dockerfile(project)
    assert ("uv pip install" in expected) is with_requirements
    assert ours_dockerfile.default_dockerfile_text(project) == expected
    assert not (project / "Dockerfile").exists()
    with ours_dockerfile.generate_default_dockerfile(project) as path:
        assert path == project / "Dockerfile"
        assert path.read_text() == expected
    assert not path.exists()


def test_default_dockerfile_cwd_matches(git_unavailable, project, monkeypatch):
    monkeypatch.chdir(project)
    assert ours_dockerfile.default_dockerfile_text() == _prefect_default_dockerfile(None)  # type: ignore[arg-type]


def test_deviation_default_dockerfile_dot_context_names_the_folder(git_unavailable, project, monkeypatch):
    monkeypatch.chdir(project)
    assert "WORKDIR /opt/prefect//" in _prefect_default_dockerfile(Path("."))
    assert "WORKDIR /opt/prefect/my-project/" in ours_dockerfile.default_dockerfile_text(Path("."))


def test_deviation_missing_context_raises_context_error(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError):  # Prefect: a bare error from open()
        with P.generate_default_dockerfile(missing):
            pass  # pragma: no cover
    with pytest.raises(ours_dockerfile.ContextPathNotFoundError) as info:  # still a FileNotFoundError
        with ours_dockerfile.generate_default_dockerfile(missing):
            pass  # pragma: no cover
    assert info.value.path == missing


def test_deviation_copy_missing_source_names_it(project):
    with P.ImageBuilder("img", base_directory=project) as builder:
        with pytest.raises(FileNotFoundError):
            builder.copy("nope.txt", "/nope.txt")
    with ours_dockerfile.ImageBuilder("img", base_directory=project) as builder:
        with pytest.raises(ours_dockerfile.ContextPathNotFoundError, match="nope.txt"):
            builder.copy("nope.txt", "/nope.txt")


def test_deviation_copy_refuses_escaping_the_context(project, tmp_path, monkeypatch):
    (project.parent / "outside.txt").write_text("not for the image")
    temp_root = tmp_path / "temp-root"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    # Prefect writes ../outside.txt next to (not into) its temporary build context.
    with P.ImageBuilder("img", base_directory=project) as builder:
        builder.copy("../outside.txt", "/x")
        builder.assert_has_line("COPY ../outside.txt /x")
    assert (temp_root / "outside.txt").exists()
    # Ours refuses with a ContextError (a ValueError, as Prefect raises for absolute paths).
    with ours_dockerfile.ImageBuilder("img", base_directory=project) as builder:
        with pytest.raises(ValueError, match="outside the base directory"):
            builder.copy("../outside.txt", "/x")
    with P.ImageBuilder("img", base_directory=project) as builder:
        with pytest.raises(ValueError):
            builder.copy(project.parent / "outside.txt", "/x")


def test_deviation_copy_whole_base_directory(project):
    with P.ImageBuilder("img", base_directory=project) as builder:
        with pytest.raises(FileExistsError):  # copytree onto the existing context
            builder.copy(".", "/app")
    with ours_dockerfile.ImageBuilder("img", base_directory=project) as builder:
        builder.copy(".", "/app")
        assert builder.dockerfile_lines[-1] == "COPY . /app"
        assert _tree(builder.context) == _tree(project)


def test_deviation_copy_directory_from_another_cwd(project, tmp_path, monkeypatch):
    # Prefect checks source.is_dir() relative to the *current directory*, not base_directory.
    monkeypatch.chdir(tmp_path)
    with P.ImageBuilder("img", base_directory=project) as builder:
        with pytest.raises(IsADirectoryError):
            builder.copy("pkg", "/app/pkg")
    with ours_dockerfile.ImageBuilder("img", base_directory=project) as builder:
        builder.copy("pkg", "/app/pkg")
        assert (builder.context / "pkg" / "sub" / "data.json").exists()


# --- DockerImage and prefect-docker's steps ----------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"build_backend": "docker-py"}])
def test_docker_image_attributes_match(kwargs, tmp_path, monkeypatch):
    from prefect.docker.docker_image import DockerImage as PrefectDockerImage

    from prefect_flyimage import DockerImage

    monkeypatch.chdir(tmp_path)
    theirs = PrefectDockerImage("127.0.0.1:5000/team/app", tag="v1", **kwargs)
    ours = DockerImage("127.0.0.1:5000/team/app", tag="v1", **kwargs)
    for attribute in ("name", "tag", "reference", "dockerfile", "build_backend", "build_kwargs", "stream_progress_to"):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    assert ours.build_backend == "docker-py"
    assert ours.plan.backend == "auto"  # our choice lives on the plan: BuildKit only when needed


def test_docker_image_buildx_keeps_prefects_value(tmp_path, monkeypatch):
    from prefect_flyimage import DockerImage

    monkeypatch.chdir(tmp_path)
    image = DockerImage("127.0.0.1:5000/app", build_backend="buildx")
    assert image.build_backend == "buildx" and image.plan.backend == "buildkit"


@pytest.mark.parametrize("name", ["build_docker_image", "push_docker_image"])
def test_step_defaults_match_prefect_dockers(name):
    import inspect

    from prefect_docker.deployments import steps as theirs

    from prefect_flyimage.deployments import steps as ours

    their_params = inspect.signature(inspect.unwrap(getattr(theirs, name))).parameters
    our_params = inspect.signature(getattr(ours, name)).parameters
    for param, spec in their_params.items():
        assert our_params[param].default == spec.default, param


def test_auto_dockerfile_over_an_existing_one_same_wording(tmp_path, monkeypatch):
    from prefect_docker.deployments import steps as theirs

    from prefect_flyimage.deployments import steps as ours

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")  # neither may reach a daemon
    with pytest.raises(ValueError, match="Dockerfile already exists") as their_error:
        theirs.build_docker_image("127.0.0.1:5000/app", dockerfile="auto")
    with pytest.raises(ValueError, match="Dockerfile already exists") as our_error:
        ours.build_docker_image("127.0.0.1:5000/app", dockerfile="auto")
    assert str(our_error.value).startswith(str(their_error.value).rstrip("."))
    assert (tmp_path / "Dockerfile").read_text() == "FROM scratch\n"  # neither touched it


def test_denied_hint_is_prefect_dockers():
    from prefect_docker.deployments import steps as theirs

    from prefect_flyimage.deployments import steps as ours

    assert ours.DENIED_HINT == theirs._DENIED_MESSAGE_HINT
