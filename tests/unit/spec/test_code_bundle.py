"""with_code_bundle: which files of the project end up in the image."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from prefect_flyimage import Image
from prefect_flyimage.spec import loaded_module_files


def load(monkeypatch: pytest.MonkeyPatch, name: str, path: Path) -> ModuleType:
    """Import ``path`` as module ``name`` for the duration of the test."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, name, module)
    return module


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for rel, text in {
        "flows/etl.py": "VALUE = 0\n",
        "lib/helpers.py": "X = 1\n",
        "lib/unused.py": "Y = 2\n",
        "lib/private_keys.py": "KEY = 'x'\n",
        "notes.md": "# notes\n",
        "secret.env": "TOKEN=x\n",
        ".venv/lib/python3.11/site-packages/dep.py": "Z = 3\n",
        ".git/config": "[core]\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / ".dockerignore").write_text("*.env\nlib/private_*\n")
    return root


def staged_files(image: Image) -> list[str]:
    with image.staged_plan() as plan:
        layer = plan.context / "layers" / f"{len(image.layers) - 1:02d}-code"
        return sorted(p.relative_to(layer).as_posix() for p in layer.rglob("*") if p.is_file())


def named() -> Image:
    return Image.from_base("flyimage/python:3.11-bookworm").clone(name="app", registry="127.0.0.1:5000")


def test_loaded_modules_under_root_only(repo, tmp_path, monkeypatch):
    outside = tmp_path / "outside.py"
    outside.write_text("")
    load(monkeypatch, "spec_test_etl", repo / "flows" / "etl.py")
    load(monkeypatch, "spec_test_helpers", repo / "lib" / "helpers.py")
    load(monkeypatch, "spec_test_dep", repo / ".venv/lib/python3.11/site-packages/dep.py")
    load(monkeypatch, "spec_test_outside", outside)
    files = [p.relative_to(repo).as_posix() for p in loaded_module_files(repo)]
    assert files == ["flows/etl.py", "lib/helpers.py"]
    image = named().with_code_bundle(root_dir=repo)
    assert staged_files(image) == ["flows/etl.py", "lib/helpers.py"]
    assert 'COPY ["layers/00-code/", "./"]' in image.dockerfile_text()


def test_loaded_modules_follow_imports_and_dockerignore(repo, monkeypatch):
    load(monkeypatch, "spec_test_etl", repo / "flows" / "etl.py")
    image = named().with_code_bundle(root_dir=repo, dst="/opt/prefect/flows")
    before = image.uri
    load(monkeypatch, "spec_test_unused", repo / "lib" / "unused.py")
    assert image.uri != before, "a module imported later is part of the bundle"
    load(monkeypatch, "spec_test_private", repo / "lib" / "private_keys.py")  # .dockerignore'd
    assert staged_files(image) == ["flows/etl.py", "lib/unused.py"]
    assert 'COPY ["layers/00-code/", "/opt/prefect/flows/"]' in image.dockerfile_text()


def test_main_script_is_included(repo, monkeypatch):
    main = ModuleType("__main__")
    main.__file__ = str(repo / "flows" / "etl.py")
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert [p.name for p in loaded_module_files(repo)] == ["etl.py"]


def test_all_files(repo):
    image = named().with_code_bundle("all", root_dir=repo)
    assert staged_files(image) == [".dockerignore", "flows/etl.py", "lib/helpers.py", "lib/unused.py", "notes.md"]
    before = image.uri
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "lib" / "__pycache__").mkdir()
    (repo / "lib" / "__pycache__" / "helpers.cpython-311.pyc").write_bytes(b"x")
    assert image.uri == before
    (repo / "notes.md").write_text("# changed\n")
    assert image.uri != before


def test_root_defaults_to_cwd(repo, monkeypatch):
    monkeypatch.chdir(repo)
    image = named().with_code_bundle("all")
    monkeypatch.chdir(repo.parent)  # fixed when the spec is written
    assert image.layers[0].root_dir == repo
    assert "flows/etl.py" in staged_files(image)
