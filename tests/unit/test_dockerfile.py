"""Unit tests for prefect_flyimage.dockerfile (ImageBuilder and default Dockerfiles)."""

from __future__ import annotations

import hashlib
import io
import sys
import types
from pathlib import Path, PurePosixPath

import pytest

from prefect_flyimage import dockerfile as dockerfile_module
from prefect_flyimage.dockerfile import (
    ContextPathNotFoundError,
    DockerfileExistsError,
    ImageBuilder,
    default_dockerfile_text,
    generate_default_dockerfile,
    to_run_command,
)
from prefect_flyimage.errors import ContextError

pytestmark = pytest.mark.prefect_compat  # also run on the oldest supported Prefect (scripts/test.sh)


@pytest.fixture
def fake_build_image(monkeypatch):
    """Replace prefect_flyimage.dockerutils with a module whose build_image records calls."""
    calls: list[dict] = []

    def build_image(context, dockerfile="Dockerfile", tag=None, pull=False, platform=None,
                    stream_progress_to=None, **kwargs):
        path = Path(context) / dockerfile
        calls.append(
            dict(context=Path(context), text=path.read_text(), pull=pull, platform=platform,
                 stream=stream_progress_to, tag=tag, kwargs=kwargs)
        )
        return "sha256:fakeimageid"

    fake = types.ModuleType("prefect_flyimage.dockerutils")
    fake.build_image = build_image  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prefect_flyimage.dockerutils", fake)
    return calls


@pytest.fixture
def base(tmp_path):
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "requirements.txt").write_text("httpx\n")
    return root


@pytest.mark.parametrize(
    "command, expected",
    [
        ([], ""),
        (["ls"], "RUN ls"),
        (["pip", "install", "httpx"], "RUN pip 'install' 'httpx'"),
        (["echo", "it's"], 'RUN echo "it\'s"'),
        (["sh", "-c", "a && b"], "RUN sh '-c' 'a && b'"),
    ],
)
def test_to_run_command(command, expected):
    assert to_run_command(command) == expected


def test_lines_and_temporary_context(base):
    with ImageBuilder("python:3.12-slim", base_directory=base) as builder:
        context = builder.context
        assert context is not None and context.is_dir()
        builder.add_line("RUN echo hi")
        builder.add_lines(["ENV A=1", "ENV B=2"])
        builder.copy("requirements.txt", "/app/requirements.txt")
        builder.copy(base / "pkg", PurePosixPath("/app/pkg"))
        builder.write_text("hello", "/app/hello.txt")
        digest = hashlib.sha256(b"hello").hexdigest()
        assert builder.dockerfile_lines == [
            "FROM python:3.12-slim",
            "RUN echo hi",
            "ENV A=1",
            "ENV B=2",
            "COPY requirements.txt /app/requirements.txt",
            "COPY pkg /app/pkg",
            f"COPY .{digest} /app/hello.txt",
        ]
        assert (context / "requirements.txt").read_text() == "httpx\n"
        assert (context / "pkg" / "mod.py").read_text() == "x = 1\n"
        assert (context / f".{digest}").read_text() == "hello"
        builder.assert_has_file(base / "pkg", PurePosixPath("/app/pkg"))
        builder.assert_has_file(Path("requirements.txt"), PurePosixPath("/app/requirements.txt"))
    assert not context.exists()
    assert builder.context is None and builder.temporary_directory is None


def test_copy_nested_file_creates_parents(base):
    with ImageBuilder("img", base_directory=base) as builder:
        builder.copy("pkg/mod.py", "/app/mod.py")
        assert (builder.context / "pkg" / "mod.py").exists()
        builder.assert_has_line("COPY pkg/mod.py /app/mod.py")


def test_copy_whole_base_directory(base):
    with ImageBuilder("img", base_directory=base) as builder:
        builder.copy(".", "/app")
        assert (builder.context / "pkg" / "mod.py").exists()
        builder.assert_has_line("COPY . /app")


def test_copy_missing_source_names_the_path(base):
    with ImageBuilder("img", base_directory=base) as builder:
        with pytest.raises(ContextPathNotFoundError) as info:
            builder.copy("nope.txt", "/app/nope.txt")
    assert info.value.path == base / "nope.txt"
    assert "nope.txt" in str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ContextError)


@pytest.mark.parametrize("source", ["../outside.txt", "pkg/../../outside.txt", ".."])
def test_copy_refuses_relative_escape(base, source):
    (base.parent / "outside.txt").write_text("secret")
    with ImageBuilder("img", base_directory=base) as builder:
        with pytest.raises(ContextError, match="outside the base directory"):
            builder.copy(source, "/x")
        assert not (builder.context.parent / "outside.txt").exists()
        assert builder.dockerfile_lines == ["FROM img"]


def test_copy_refuses_absolute_path_outside_base(base, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("x")
    with ImageBuilder("img", base_directory=base) as builder:
        with pytest.raises(ValueError, match="outside the base directory"):
            builder.copy(other, "/x")


def test_copy_absolute_path_with_relative_base(base, monkeypatch):
    monkeypatch.chdir(base)
    with ImageBuilder("img", base_directory=Path(".")) as builder:
        builder.copy(base / "requirements.txt", "/r.txt")
        builder.assert_has_line("COPY requirements.txt /r.txt")


def test_no_context_without_with_block():
    builder = ImageBuilder("img")
    for action in (lambda: builder.copy("a", "/a"), lambda: builder.write_text("t", "/t"), builder.build):
        with pytest.raises(ContextError, match="No context available"):
            action()


def test_given_context_copy_only_adds_line(tmp_path):
    builder = ImageBuilder("img", context=tmp_path)
    assert builder.base_directory == tmp_path
    with builder as same:
        assert same is builder and builder.context == tmp_path and builder.temporary_directory is None
        builder.copy("not-yet-there.txt", "/x")  # Prefect does not check a given context either
    builder.assert_has_line("COPY not-yet-there.txt /x")
    assert builder.context == tmp_path  # a given context is never removed
    assert tmp_path.exists()


def test_given_context_with_dockerfile_is_refused(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    with pytest.raises(DockerfileExistsError) as info:
        ImageBuilder("img", context=tmp_path)
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeError)
    assert info.value.path == tmp_path / "Dockerfile"


def test_build_writes_dockerfile_calls_build_image_and_cleans_up(fake_build_image, base):
    stream = io.StringIO()
    with ImageBuilder("img", base_directory=base, platform="linux/arm64") as builder:
        builder.add_line("RUN true")
        image_id = builder.build(pull=True, stream_progress_to=stream)
        assert image_id == "sha256:fakeimageid"
        (call,) = fake_build_image
        assert call["context"] == builder.context
        assert call["text"] == "FROM img\nRUN true\n"
        assert (call["pull"], call["platform"], call["stream"], call["tag"]) == (True, "linux/arm64", stream, None)
        assert not (builder.context / "Dockerfile").exists()


def test_build_removes_dockerfile_on_failure(monkeypatch, tmp_path):
    def failing(context, **kwargs):
        raise RuntimeError("boom")

    fake = types.ModuleType("prefect_flyimage.dockerutils")
    fake.build_image = failing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prefect_flyimage.dockerutils", fake)
    builder = ImageBuilder("img", context=tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        builder.build()
    assert not (tmp_path / "Dockerfile").exists()


def test_build_with_missing_given_context(fake_build_image, tmp_path):
    builder = ImageBuilder("img", context=tmp_path / "gone")
    with pytest.raises(ContextPathNotFoundError, match="gone"):
        builder.build()


def test_assert_helpers():
    builder = ImageBuilder("img")
    builder.add_lines(["A", "B", "C", "D", "E"])
    builder.assert_has_line("A")
    builder.assert_line_absent("Z")
    builder.assert_line_before("A", "C")
    builder.assert_line_after("C", "A")
    with pytest.raises(AssertionError, match="Expected 'Z' not found"):
        builder.assert_has_line("Z")
    with pytest.raises(AssertionError, match=r"Unexpected 'A' found in Dockerfile at line 2") as info:
        builder.assert_line_absent("A")
    assert "    1: FROM img" in str(info.value) and "    2: A" in str(info.value)
    with pytest.raises(AssertionError, match="to appear before") as info:
        builder.assert_line_before("D", "B")
    assert "    3: B" in str(info.value) and "    5: D" in str(info.value)
    with pytest.raises(AssertionError):
        builder.assert_line_after("A", "C")
    with pytest.raises(AssertionError):
        builder.assert_has_file(Path("x"), PurePosixPath("/x"))


def test_default_dockerfile_text(base, tmp_path, monkeypatch):
    monkeypatch.setattr(dockerfile_module, "get_prefect_image_name", lambda: "prefecthq/prefect:3.8.8-python3.12")
    assert default_dockerfile_text(base) == (
        "FROM prefecthq/prefect:3.8.8-python3.12\n"
        "COPY requirements.txt /opt/prefect/project/requirements.txt\n"
        "RUN uv pip install -r /opt/prefect/project/requirements.txt\n"
        "COPY . /opt/prefect/project/\n"
        "WORKDIR /opt/prefect/project/\n"
    )
    bare = tmp_path / "bare"
    bare.mkdir()
    assert default_dockerfile_text(bare, base_image="python:3.12") == (
        "FROM python:3.12\nCOPY . /opt/prefect/bare/\nWORKDIR /opt/prefect/bare/\n"
    )
    assert not (base / "Dockerfile").exists() and list(bare.iterdir()) == []


def test_default_dockerfile_text_defaults_to_cwd_and_names_dot(base, monkeypatch):
    monkeypatch.chdir(base)
    assert "WORKDIR /opt/prefect/project/" in default_dockerfile_text(base_image="x")
    assert "WORKDIR /opt/prefect/project/" in default_dockerfile_text(Path("."), base_image="x")
    monkeypatch.chdir(base / "pkg")
    assert "WORKDIR /opt/prefect/project/" in default_dockerfile_text(Path(".."), base_image="x")


def test_default_dockerfile_text_missing_context(tmp_path):
    with pytest.raises(ContextPathNotFoundError) as info:
        default_dockerfile_text(tmp_path / "missing", base_image="x")
    assert info.value.path == tmp_path / "missing"
    assert "missing" in str(info.value)


def test_generate_default_dockerfile(base, monkeypatch):
    monkeypatch.setattr(dockerfile_module, "get_prefect_image_name", lambda: "prefecthq/prefect:3.8.8-python3.12")
    with generate_default_dockerfile(base) as path:
        assert path == base / "Dockerfile"
        assert path.read_text() == default_dockerfile_text(base)
    assert not path.exists()


def test_generate_default_dockerfile_removes_file_on_error(base):
    with pytest.raises(KeyError):
        with generate_default_dockerfile(base) as path:
            raise KeyError("x")
    assert not path.exists()


def test_generate_default_dockerfile_existing(base):
    (base / "Dockerfile").write_text("FROM mine\n")
    with pytest.raises(DockerfileExistsError) as info:
        with generate_default_dockerfile(base):
            pass  # pragma: no cover
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, ContextError)
    assert info.value.path == base / "Dockerfile"
    assert (base / "Dockerfile").read_text() == "FROM mine\n"  # never overwritten nor removed


def test_generate_default_dockerfile_missing_context(tmp_path):
    with pytest.raises(ContextPathNotFoundError):
        with generate_default_dockerfile(tmp_path / "missing"):
            pass  # pragma: no cover
    assert not (tmp_path / "missing").exists()
