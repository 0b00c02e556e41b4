"""uv scripts, uv projects and Prefect code bundles, built for real (packages from PyPI over the host network)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from prefect_flyimage import Image

pytestmark = pytest.mark.integration


def test_from_uv_script(tmp_path, unique_name, run_in):
    script = tmp_path / "job.py"
    script.write_text(
        "# /// script\n"
        '# requires-python = ">=3.11"\n'
        '# dependencies = ["six==1.17.0"]\n'
        "# ///\n"
        "import six\nprint('six', six.__version__)\n"
    )
    image = Image.from_uv_script(script, name=unique_name, registry="127.0.0.1:5001").with_source_file(script, "/app")
    assert image.python_version == (3, 11) and image.dockerfile_text().startswith("FROM flyimage/python:3.11-bookworm\n")
    assert image.build(push=False).built
    assert run_in(image.uri, "python3 /app/job.py").strip() == "six 1.17.0"


@pytest.fixture
def uv_project(tmp_path: Path) -> Path:
    root = tmp_path / "uvdemo"
    (root / "flyimage_uvdemo").mkdir(parents=True)
    (root / "flyimage_uvdemo" / "__init__.py").write_text("GREETING = 'from the uv project'\n")
    (root / "pyproject.toml").write_text(
        "[project]\n"
        'name = "flyimage-uvdemo"\n'
        'version = "0.1.0"\n'
        'requires-python = ">=3.10"\n'
        'dependencies = ["six==1.17.0"]\n\n'
        "[build-system]\n"
        'requires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n\n'
        "[tool.setuptools]\n"
        'packages = ["flyimage_uvdemo"]\n'
    )
    return root


def test_uv_project_dependencies_then_project(uv_project, unique_name, run_in):
    base = Image.from_debian_base(install_prefect=False, python_version=(3, 11), name=unique_name)
    deps = base.with_uv_project(uv_project / "pyproject.toml")
    assert deps.build(push=False).built
    out = run_in(deps.uri, "python3 -c 'import six; print(six.__version__)'; python3 -c 'import flyimage_uvdemo' 2>/dev/null "
                           "|| echo no-project; command -v uv || echo no-uv; find /tmp -type f")
    assert out.split() == ["1.17.0", "no-project", "no-uv"], "uv, its work files and the sources are gone: " + out

    # Code edits do not touch a dependencies-only layer...
    before = deps.uri
    (uv_project / "flyimage_uvdemo" / "__init__.py").write_text("GREETING = 'edited'\n")
    assert deps.uri == before
    # ...but the project itself is installed (non-editable) in install_project mode.
    full = base.with_uv_project(uv_project / "pyproject.toml", project_install_mode="install_project")
    assert full.build(push=False).built
    out = run_in(full.uri, "cd / && python3 -c 'import flyimage_uvdemo, six; print(flyimage_uvdemo.GREETING)'")
    assert out.strip() == "edited"


def test_prefect_image_with_code_bundle_runs_the_entrypoint(tmp_path, unique_name, run_in, prefect_image, monkeypatch, request):
    project = tmp_path / "proj"
    package = project / "bundled_flows"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "hello.py").write_text(
        "from prefect import flow\n\n"
        "from bundled_flows.helpers import greeting\n\n\n"
        "@flow\n"
        "def hello(name: str = 'image') -> str:\n"
        "    return greeting(name)\n"
    )
    (package / "helpers.py").write_text("def greeting(name):\n    return f'hello {name}'\n")
    (package / "unused.py").write_text("never imported\n")
    (project / "notes.txt").write_text("not code\n")
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    request.addfinalizer(lambda: [sys.modules.pop(m) for m in list(sys.modules) if m.startswith("bundled_flows")])
    importlib.import_module("bundled_flows.hello")  # as `python bundled_flows/hello.py` would, with its imports

    image = Image.from_debian_base(python_version=(3, 11), prefect_version="3.8.8", name=unique_name).with_code_bundle()
    # the pinned version's stand-in (services.sh builds the oldest supported Prefect's too)
    assert image.dockerfile_text().startswith("FROM prefecthq/prefect:3.8.8-python3.11\n")
    assert image.build(push=False).built
    # Prefect's deployment entrypoints are relative to the project root: they load in the image's WORKDIR.
    out = run_in(
        image.uri,
        "pwd; ls -A . bundled_flows; python3 -c \"from prefect.flows import load_flow_from_entrypoint as load; "
        "f = load('bundled_flows/hello.py:hello'); print(f.name, '|', f.fn('bundle'))\"",
    )
    lines = [line for line in out.strip().splitlines() if line]
    assert lines[0] == "/opt/prefect"
    assert lines[1:7] == [".:", "bundled_flows", "bundled_flows:", "__init__.py", "hello.py", "helpers.py"], out
    assert lines[-1] == "hello | hello bundle"
