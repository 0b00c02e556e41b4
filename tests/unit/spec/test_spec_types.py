"""Wrong types in the Image spec are a SpecError naming the parameter, at the call;
requirement syntax is checked by validate(), naming the parameter or file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_flyimage import Image, SpecError
from prefect_flyimage.spec import config

BASE = "flyimage/python:3.11-bookworm"


def named() -> Image:
    return Image.from_base(BASE).clone(name="app", registry="127.0.0.1:5000")


WRONG_TYPES = [
    (lambda: Image.from_debian_base(python_version=3.12), "from_debian_base(): python_version"),
    (lambda: Image.from_debian_base(python_version=(3, "12")), "from_debian_base(): python_version"),
    (lambda: Image.from_debian_base(python_version=(True, 1)), "from_debian_base(): python_version"),
    (lambda: Image.from_debian_base(python_version="three"), "python_version 'three'"),
    (lambda: Image.from_debian_base(install_prefect="yes"), "from_debian_base(): install_prefect"),
    (lambda: Image.from_debian_base(registry=5), "from_debian_base(): registry"),
    (lambda: Image.from_debian_base(platform=64), "from_debian_base(): platform"),
    (lambda: Image.from_debian_base(platform=["linux/amd64", 1]), "from_debian_base(): platform item 1"),
    (lambda: Image.from_debian_base(prefect_version=3), "from_debian_base(): prefect_version"),
    (lambda: Image.from_base(None), "from_base(): image_uri"),
    (lambda: Image.from_ref_name(""), "from_ref_name(): name"),
    (lambda: Image.from_ref_name(None), "from_ref_name(): name"),
    (lambda: Image.from_dockerfile(None), "from_dockerfile(): file"),
    (lambda: Image.from_dockerfile(""), "from_dockerfile(): file"),
    (lambda: Image.from_uv_script("x.py", name=None), "from_uv_script(): name"),
    (lambda: Image.from_uv_script(3, name="x"), "from_uv_script(): script"),
    (lambda: named().clone(python_version=3.11), "clone(): python_version"),
    (lambda: named().clone(extendable="no"), "clone(): extendable"),
    (lambda: named().clone(addl_layer="RUN x"), "clone(): addl_layer"),
    (lambda: named().with_workdir(None), "with_workdir(): workdir"),
    (lambda: named().with_requirements(None), "with_requirements(): file"),
    (lambda: named().with_requirements("r.txt", extra_index_urls=5), "with_requirements(): extra_index_urls"),
    (lambda: named().with_requirements("r.txt", pre="yes"), "with_requirements(): pre"),
    (lambda: named().with_requirements("r.txt", index_url=""), "with_requirements(): index_url"),
    (lambda: named().with_requirements("r.txt", secret_mounts=5), "with_requirements(): secret_mounts"),
    (lambda: named().with_requirements("r.txt", secret_mounts=["A", 5]), "with_requirements(): secret_mounts item 1"),
    (lambda: named().with_pip_packages("six", 5), "with_pip_packages(): packages"),
    (lambda: named().with_pip_packages(["six"]), "separate arguments"),
    (lambda: named().with_pip_packages("six", extra_args=["--no-deps"]), "with_pip_packages(): extra_args"),
    (lambda: named().with_env_vars({"A": 1}), "with_env_vars(): env_vars"),
    (lambda: named().with_env_vars({"A": None}), "with_env_vars(): env_vars"),
    (lambda: named().with_env_vars({1: "x"}), "with_env_vars(): env_vars"),
    (lambda: named().with_env_vars(["A=1"]), "with_env_vars(): env_vars"),
    (lambda: named().with_source_folder(None), "with_source_folder(): src"),
    (lambda: named().with_source_folder(["a", "b"]), "with_source_folder(): src must be one folder"),
    (lambda: named().with_source_folder(".", dst=None), "with_source_folder(): dst"),
    (lambda: named().with_source_folder(".", copy_contents_only="yes"), "with_source_folder(): copy_contents_only"),
    (lambda: named().with_source_file([]), "with_source_file(): src"),
    (lambda: named().with_source_file(["a", 1]), "with_source_file(): src item 1"),
    (lambda: named().with_code_bundle(copy_style=1), "with_code_bundle(): copy_style"),
    (lambda: named().with_code_bundle(root_dir=5), "with_code_bundle(): root_dir"),
    (lambda: named().with_dockerignore(None), "with_dockerignore(): path"),
    (lambda: named().with_uv_project(None), "with_uv_project(): pyproject_file"),
    (lambda: named().with_uv_project("p.toml", uvlock=1), "with_uv_project(): uvlock"),
    (lambda: named().with_poetry_project("p.toml", project_install_mode=None), "with_poetry_project(): project_install_mode"),
    (lambda: named().with_apt_packages("git", None), "with_apt_packages(): packages"),
    (lambda: named().with_commands(5), "with_commands(): commands"),
    (lambda: named().with_commands(["ls", None]), "with_commands(): commands item 1"),
    (lambda: named().with_pip_packages("six").build(push="no"), "build(): push"),
    (lambda: named().with_pip_packages("six").build(build_timeout=-1), "build(): build_timeout"),
    (lambda: named().with_pip_packages("six").build(push_timeout="10"), "build(): push_timeout"),
    (lambda: named().with_pip_packages("six").build(append="no"), "build(): append"),
    (lambda: named().with_pip_packages("six").build(stream_progress_to="out.log"), "build(): stream_progress_to"),
    (lambda: named().with_pip_packages("six").to_plan(network=5), "to_plan(): network"),
    (lambda: named().with_pip_packages("six").to_plan(pull=1), "to_plan(): pull"),
]


@pytest.mark.parametrize("call, names", WRONG_TYPES, ids=[n for _, n in WRONG_TYPES])
def test_wrong_types_are_spec_errors_naming_the_parameter(call, names):
    with pytest.raises(SpecError) as info:
        call()
    assert names in str(info.value)


def test_all_wrong_parameters_of_one_call_are_listed():
    with pytest.raises(SpecError) as info:
        Image.from_debian_base(python_version=3.12, install_prefect=1, registry=2)
    assert len(info.value.problems) == 3


def test_right_types_pass():
    image = Image.from_debian_base(python_version=(3, 12), platform=["linux/arm64"], registry="r.io", name="x")
    assert image.python_version == (3, 12) and image.platform == ("linux/arm64",)
    assert Image.from_debian_base(python_version="3.11.4").python_version == (3, 11)
    assert len(named().with_env_vars({"A": "1"}).with_commands("true").with_source_file(Path("a")).layers) == 3


@pytest.mark.parametrize("platform", ["linux", "linux/AMD64", "linux//amd64", "", "linux/amd64/v8/x"])
def test_bad_platform_strings_are_reported_by_validate(platform):
    with pytest.raises(SpecError, match="platform"):
        named().clone(platform=(platform,)).with_pip_packages("six").validate()


# ---- requirement syntax ------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["pandas>=2,<3", "requests[socks]==2.*", "six; python_version < '4'",
                                  "pkg @ https://example.com/pkg-1.0.tar.gz", "git+https://github.com/a/b.git",
                                  "./local/pkg", "https://example.com/x-1.0-py3-none-any.whl", "Django~=4.2"])
def test_valid_pip_specs_pass(spec):
    assert named().with_pip_packages(spec).problems() == []


@pytest.mark.parametrize("spec", ["pandas>=>2", "six==", "numpy (>=1", "bad name", "pkg[extra", "a;;b", "==1.0"])
def test_invalid_pip_specs_are_reported(spec):
    problems = named().with_pip_packages("six", spec).problems()
    assert len(problems) == 1 and "with_pip_packages()" in problems[0] and repr(spec) in problems[0], problems


def test_requirements_file_lines_are_checked_with_their_line_numbers(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text(
        "# comment\n"
        "six==1.17.0  # trailing comment\n"
        "--index-url https://pypi.org/simple\n"
        "-r other.txt\n"
        "\n"
        "requests>=2 \\\n"
        "    --hash=sha256:0123456789abcdef\n"
        "pandas>=>2\n"
        "idna==${IDNA_VERSION}\n"
        "git+https://github.com/a/b.git#egg=b\n"
        "numpy (>=1\n"
    )
    problems = named().with_requirements(req).problems()
    assert len(problems) == 2, problems
    assert "line 8" in problems[0] and "pandas>=>2" in problems[0] and str(req) in problems[0]
    assert "line 11" in problems[1]
    with pytest.raises(SpecError, match="line 8"):
        named().with_requirements(req).validate()


def test_uv_script_dependencies_are_checked(tmp_path):
    script = tmp_path / "job.py"
    script.write_text('# /// script\n# dependencies = ["six", "pandas>=>2"]\n# ///\nprint(1)\n')
    problems = Image.from_uv_script(script, name="job", registry="r.io").problems()
    assert any("pandas>=>2" in p for p in problems), problems


# ---- [tool.prefect-flyimage] ---------------------------------------------------------------


@pytest.mark.parametrize("toml, match", [
    ('[tool.prefect-flyimage]\nregistry = 5\n', "registry in \\[tool.prefect-flyimage\\]"),
    ('[tool.prefect-flyimage]\nregistry = ["a"]\n', "must be a string"),
    ('[tool.prefect-flyimage.images]\ndefault = 3\n', "default must be an image URI"),
    ('[tool.prefect-flyimage]\nimages = "x"\n', "must be a table"),
    ('[tool]\nprefect-flyimage = "x"\n', "must be a table"),
    ('[tool.prefect-flyimage\nregistry = "x"\n', "not valid TOML"),
])
def test_bad_settings_name_the_file(tmp_path, monkeypatch, toml, match):
    (tmp_path / "pyproject.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=match) as info:
        settings = config.load_settings()
        settings.get("registry")
        settings.images
    assert str(tmp_path / "pyproject.toml") in str(info.value)
