"""validate(): every problem at once, in one SpecError; immutability of the spec."""

from __future__ import annotations

import dataclasses

import pytest

from prefect_flyimage import Image, SpecError
from prefect_flyimage.plan import BuildSecret

BASE = "flyimage/python:3.11-bookworm"


def named() -> Image:
    return Image.from_base(BASE).clone(name="app", registry="127.0.0.1:5000")


def problems_of(image: Image) -> list[str]:
    with pytest.raises(SpecError) as info:
        image.validate()
    assert str(len(info.value.problems)) in str(info.value)
    return info.value.problems


def test_valid_spec_passes(project):
    image = named().with_source_folder(project / "src").with_requirements(project / "requirements.txt")
    image.validate()
    assert image.problems() == []


def test_all_problems_in_one_error(project, tmp_path):
    image = (
        Image.from_base(BASE)  # no name
        .with_source_folder(tmp_path / "missing-folder")
        .with_source_file(tmp_path / "missing.txt")
        .with_requirements(project / "requirements.txt")
        .with_poetry_project(project / "requirements.txt", poetry_lock=tmp_path / "poetry.lock")
        .with_workdir("relative/dir")
    )
    problems = problems_of(image)
    text = "\n".join(problems)
    assert len(problems) == 6, text
    assert "needs a name" in text
    assert "missing-folder' does not exist" in text
    assert "missing.txt' does not exist" in text
    assert "with_poetry_project() cannot be combined with Requirements" in text
    assert "poetry.lock" in text and "does not exist" in text
    assert "absolute path" in text
    # uri and the build entry points refuse an invalid spec the same way
    with pytest.raises(SpecError):
        image.uri
    with pytest.raises(SpecError):
        image.to_plan()


def test_layers_after_from_dockerfile_need_extendable(project):
    df = Image.from_dockerfile(project / "docker" / "Dockerfile", registry="127.0.0.1:5000", name="df")
    assert df.extendable is False
    df.validate()
    problems = problems_of(df.with_env_vars({"A": "1"}))
    assert len(problems) == 1 and "from_dockerfile() image" in problems[0] and "extendable=True" in problems[0]
    df.clone(extendable=True).with_env_vars({"A": "1"}).validate()


def test_missing_dockerfile_and_bad_names(tmp_path):
    problems = problems_of(Image.from_dockerfile(tmp_path / "nope" / "Dockerfile", registry="127.0.0.1:5000", name="App"))
    assert any("does not exist" in p for p in problems)
    assert any("lower-case" in p for p in problems), problems
    assert any("base image" in p for p in problems_of(Image.from_base("Bad Image:tag")))
    assert any("no base image" in p for p in problems_of(Image.from_base("")))


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda i: i.with_env_vars({"BAD-NAME": "x"}), "not a valid variable name"),
        (lambda i: i.with_env_vars({"A": "two\nlines"}), "line breaks"),
        (lambda i: i.with_commands(["RUN echo hi"]), "without the leading 'RUN'"),
        (lambda i: i.with_commands(["echo a\necho b"]), "several lines"),
        (lambda i: i.with_commands([]), "no commands"),
        (lambda i: i.with_pip_packages(), "no packages"),
        (lambda i: i.with_pip_packages("--no-deps", "six"), "pass options in extra_args"),
        (lambda i: i.with_pip_packages("six", index_url="https://user:hunter2@pypi.example/simple"), "embeds a password"),
        (lambda i: i.with_pip_packages("six", extra_args="--opt 'unclosed"), "cannot be split"),
        (lambda i: i.with_apt_packages("--allow-unauthenticated"), "not a package name"),
        (lambda i: i.with_apt_packages(), "no packages"),
        (lambda i: i.with_pip_packages("six", secret_mounts=[BuildSecret("bad id", env="HOME")]), "secret id"),
        (lambda i: i.with_commands(["true"], secret_mounts=["A", "A"]), "mounted twice"),
        (lambda i: i.clone(platform=("linux/amd64", "linux/arm64")), "one platform at a time"),
        (lambda i: i.clone(platform="amd64"), "expected values like"),
        (lambda i: i.with_code_bundle(copy_style="some"), "copy_style"),
    ],
)
def test_single_problems(build, expected):
    problems = problems_of(build(named()))
    assert len(problems) == 1 and expected in problems[0], problems


def test_index_password_never_in_the_error():
    problems = problems_of(named().with_pip_packages("six", index_url="https://user:hunter2@pypi.example/simple"))
    assert "hunter2" not in "\n".join(problems)


def test_duplicate_file_names(project, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "requirements.txt").write_text("")
    problems = problems_of(named().with_source_file([project / "requirements.txt", tmp_path / "a" / "requirements.txt"]))
    assert "overwrite each other" in problems[0]


def test_uv_script_problems(tmp_path):
    script = tmp_path / "job.py"
    script.write_text('# /// script\n# requires-python = ">=3.13"\n# dependencies = ["x @ file:///home/me/x"]\n# ///\n')
    problems = problems_of(Image.from_uv_script(script, name="job", python_version=(3, 11)))
    assert any("excludes the image's Python 3.11" in p for p in problems)
    assert any("local path" in p for p in problems)
    script.write_text("print('no header')\n")
    assert any("no '# /// script'" in p for p in problems_of(Image.from_uv_script(script, name="job")))
    script.write_text("# /// script\n# dependencies = [\n# ///\n")
    assert any("not valid TOML" in p for p in problems_of(Image.from_uv_script(script, name="job")))
    assert any("does not exist" in p for p in problems_of(Image.from_uv_script(tmp_path / "gone.py", name="job")))


def test_uv_and_poetry_projects(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\nversion='0'\n")
    named().with_uv_project(tmp_path / "pyproject.toml").validate()
    problems = problems_of(named().with_uv_project(tmp_path / "pyproject.toml", uvlock=tmp_path / "uv.lock"))
    assert "uv.lock' does not exist" in problems[0]
    problems = problems_of(
        named().with_uv_project(tmp_path / "pyproject.toml").with_poetry_project(tmp_path / "pyproject.toml")
    )
    assert any("cannot be combined with UVProject" in p for p in problems)
    assert any("poetry.lock" in p for p in problems)


def test_secret_sources_checked_at_build_time(monkeypatch):
    monkeypatch.delenv("SPEC_TEST_TOKEN", raising=False)
    image = named().with_commands(["true"], secret_mounts=["SPEC_TEST_TOKEN"])
    image.validate()  # a spec can be validated where the secret is not available
    with pytest.raises(SpecError) as info:
        image.to_plan()
    assert "environment variable SPEC_TEST_TOKEN is not set" in str(info.value)


def test_nothing_to_build_for_a_reference():
    with pytest.raises(SpecError, match="nothing to build"):
        Image.from_base(BASE).to_plan()


def test_direct_construction_is_refused():
    with pytest.raises(TypeError, match="from_debian_base"):
        Image(base_image=BASE)


def test_images_are_immutable(project):
    first = named()
    second = first.with_pip_packages("six")
    third = second.with_workdir("/app")
    assert first.layers == () and len(second.layers) == 1 and len(third.layers) == 2
    assert first is not second and second.layers[0] is third.layers[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        second.layers[0].packages = ()  # type: ignore[misc]
    with pytest.raises(TypeError, match="tuple"):
        type(second.layers[0])(packages=["six"])  # lists would make layers unhashable


def test_packages_must_be_separate_arguments():
    # A SpecError naming the parameter (was a bare TypeError before issue 14).
    with pytest.raises(SpecError, match="separate arguments"):
        named().with_pip_packages(["six", "idna"])  # type: ignore[arg-type]
