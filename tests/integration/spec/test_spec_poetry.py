"""with_poetry_project, built for real.

Poetry comes from PyPI over the host network; the project's dependency is a local wheel,
because Poetry resolves through PyPI's per-version JSON API, which this machine's PyPI
proxy does not serve.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from prefect_flyimage import Image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PYPROJECT = """\
[tool.poetry]
name = "flyimage-poetrydemo"
version = "0.1.0"
description = "test project"
authors = ["Test <test@example.invalid>"]
packages = [{ include = "flyimage_poetrydemo" }]

[tool.poetry.dependencies]
python = ">=3.10"
flyimage-extra = { path = "wheels/flyimage_extra-2.0.0-py3-none-any.whl" }

[build-system]
requires = ["poetry-core>=1.0"]
build-backend = "poetry.core.masonry.api"
"""


@pytest.fixture
def poetry_project(tmp_path: Path, engine, python_image, wheelhouse) -> Path:
    root = tmp_path / "poetrydemo"
    (root / "flyimage_poetrydemo").mkdir(parents=True)
    (root / "wheels").mkdir()
    shutil.copy(wheelhouse / "flyimage_extra-2.0.0-py3-none-any.whl", root / "wheels")
    (root / "flyimage_poetrydemo" / "__init__.py").write_text("GREETING = 'from poetry'\n")
    (root / "pyproject.toml").write_text(PYPROJECT)
    # `poetry lock` runs in a container: the lock is real, and Poetry stays off this machine.
    code, output = engine.run(
        python_image,
        ["sh", "-c", "python3 -m venv /tmp/p && /tmp/p/bin/pip install -q 'poetry>=1.8,<3' && cd /proj && /tmp/p/bin/poetry lock"],
        network="host",
        environment={"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"},  # the host's CA, in the image's store
        volumes={str(root): {"bind": "/proj", "mode": "rw"}},
        timeout=600,
    )
    assert code == 0 and (root / "poetry.lock").is_file(), output
    return root


def test_poetry_project_installed(poetry_project, unique_name, run_in):
    base = Image.from_debian_base(install_prefect=False, python_version=(3, 11), name=unique_name)
    image = base.with_poetry_project(poetry_project / "pyproject.toml", project_install_mode="install_project")
    assert image.build(push=False).built
    out = run_in(image.uri, "cd / && python3 -c 'import flyimage_poetrydemo as p, flyimage_extra as e; print(p.GREETING, e.ANSWER)'; "
                            "command -v poetry || echo no-poetry; find /tmp -type f")
    assert out.splitlines() == ["from poetry 42", "no-poetry"], "installed (not editable); poetry and work files gone: " + out

    # In dependencies_only mode only pyproject.toml and poetry.lock count: code edits keep the image.
    deps = base.with_poetry_project(poetry_project / "pyproject.toml")
    before = deps.uri
    (poetry_project / "flyimage_poetrydemo" / "__init__.py").write_text("GREETING = 'edited'\n")
    assert deps.uri == before and image.uri != before
