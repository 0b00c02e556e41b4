"""Constructors that read configuration: from_ref_name, from_debian_base, from_uv_script."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from prefect_flyimage import Image, SpecError
from prefect_flyimage.spec.config import (
    choose_python_version,
    env_key_for_ref_name,
    find_pyproject,
    python_satisfies,
    read_script_metadata,
)


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository whose pyproject names two images; cwd is a nested sub-project without the table."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "repo"\n\n'
        "[tool.prefect-flyimage]\n"
        'registry = "registry.example:5000/acme"\n'
        'debian_base = "flyimage/python:{python_version}-bookworm"\n'
        'build_network = "host"\n\n'
        "[tool.prefect-flyimage.images]\n"
        'default = "flyimage/python:3.11-bookworm"\n'
        '"gpu-base" = "registry.example:5000/acme/gpu:2024"\n'
    )
    nested = tmp_path / "services" / "etl"
    nested.mkdir(parents=True)
    (nested / "pyproject.toml").write_text('[project]\nname = "etl"\n')
    monkeypatch.chdir(nested)
    return tmp_path


def test_ref_name_found_from_cwd_upwards(configured):
    assert find_pyproject() == configured / "pyproject.toml"
    image = Image.from_ref_name("gpu-base")
    assert image.uri == "registry.example:5000/acme/gpu:2024"
    assert image.is_reference and image.base_image is None
    assert image.resolved_base_image == "registry.example:5000/acme/gpu:2024"


def test_environment_overrides_the_file(configured, monkeypatch):
    assert env_key_for_ref_name("gpu-base") == "PREFECT_FLYIMAGE_IMAGE_GPU_BASE"
    monkeypatch.setenv("PREFECT_FLYIMAGE_IMAGE_GPU_BASE", "other.example/gpu:7")
    assert Image.from_ref_name("gpu-base").uri == "other.example/gpu:7"
    monkeypatch.setenv("PREFECT_FLYIMAGE_IMAGE_ONLY_ENV", "other.example/env:1")
    assert Image.from_ref_name("only-env").uri == "other.example/env:1"


def test_unknown_ref_name_lists_known_names(configured, monkeypatch):
    monkeypatch.setenv("PREFECT_FLYIMAGE_IMAGE_FROM_ENV", "x.example/y:1")
    image = Image.from_ref_name("nope")  # resolved lazily: defining it never fails
    with pytest.raises(SpecError) as info:
        image.uri
    (problem,) = info.value.problems
    assert "unknown image reference name 'nope'" in problem
    assert "'default'" in problem and "'gpu-base'" in problem and "'from_env'" in problem
    assert "PREFECT_FLYIMAGE_IMAGE_NOPE" in problem


def test_ref_name_with_layers_gets_its_own_uri(configured):
    image = Image.from_ref_name("default").with_pip_packages("six")
    assert image.uri.startswith("registry.example:5000/acme/default:")
    assert image.dockerfile_text().startswith("FROM flyimage/python:3.11-bookworm\n")


def test_settings_from_pyproject(configured):
    image = Image.from_debian_base(install_prefect=False, python_version="3.12", name="py")
    assert image.base_image == "flyimage/python:3.12-bookworm"
    assert image.uri.startswith("registry.example:5000/acme/py:")
    with image.with_workdir("/app").staged_plan() as plan:
        assert plan.network == "host"


def test_debian_base_defaults(monkeypatch):
    image = Image.from_debian_base(install_prefect=False, python_version=(3, 12))
    assert image.base_image == "python:3.12-slim-bookworm" and image.is_reference
    monkeypatch.setenv("PREFECT_FLYIMAGE_DEBIAN_BASE", "flyimage/python:{python_version}-bookworm")
    assert Image.from_debian_base(install_prefect=False, python_version="3.11").base_image == "flyimage/python:3.11-bookworm"


def test_prefect_base_matches_prefects_image_names():
    from prefect.utilities.dockerutils import get_prefect_image_name

    image = Image.from_debian_base(prefect_version="3.8.8", python_version=(3, 11))
    assert image.base_image == get_prefect_image_name("3.8.8", "3.11") == "prefecthq/prefect:3.8.8-python3.11"
    current = Image.from_debian_base()
    assert current.python_version == sys.version_info[:2]
    assert current.base_image == get_prefect_image_name(python_version="{}.{}".format(*sys.version_info[:2]))
    copy = Image.from_debian_base(registry="127.0.0.1:5000", python_version=(3, 11), prefect_version="3.8.8")
    assert not copy.is_reference and copy.name == "prefect-flyimage" and copy.extendable


def test_pep723_header(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        "#!/usr/bin/env -S uv run --script\n"
        "# /// script\n"
        '# requires-python = ">=3.12"\n'
        "# dependencies = [\n"
        '#   "httpx>=0.27",\n'
        '#   "rich",\n'
        "# ]\n"
        "#\n"
        "# [tool.uv]\n"
        '# exclude-newer = "2024-01-01T00:00:00Z"\n'
        "# ///\n"
        "import httpx\n"
    )
    meta = read_script_metadata(script)
    assert meta.requires_python == ">=3.12" and meta.dependencies == ("httpx>=0.27", "rich")
    image = Image.from_uv_script(script, name="job", registry="127.0.0.1:5000")
    expected = choose_python_version(">=3.12", sys.version_info[:2])
    assert image.python_version == expected and expected >= (3, 12)
    assert "python3 -m pip install 'httpx>=0.27' rich" in image.dockerfile_text()
    pinned = Image.from_uv_script(script, name="job", python_version="3.13")
    assert pinned.python_version == (3, 13)


def test_python_choice():
    assert python_satisfies((3, 11), ">=3.11.4")
    assert not python_satisfies((3, 10), ">=3.11")
    assert choose_python_version(">=3.12", (3, 11)) == (3, 14)
    assert choose_python_version("<3.12", (3, 11)) == (3, 11)
    assert choose_python_version(None, (3, 11)) == (3, 11)
