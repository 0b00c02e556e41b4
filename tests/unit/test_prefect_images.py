"""Unit tests for prefect_flyimage.prefect_images (official Prefect image names)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest
from packaging.version import InvalidVersion

from prefect_flyimage import prefect_images
from prefect_flyimage.names import ImageRef
from prefect_flyimage.prefect_images import (
    format_outlier_version_name,
    get_prefect_image_name,
    installed_prefect_version,
    python_version_minor,
)

pytestmark = pytest.mark.prefect_compat  # also run on the oldest supported Prefect (scripts/test.sh)

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture
def no_subprocess(monkeypatch):
    """Make every way of spawning a process fail the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a subprocess was spawned: {args!r}")

    for name in ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
        monkeypatch.setattr(subprocess, name, forbidden)
    for name in ("system", "popen", "posix_spawn", "posix_spawnp", "fork"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, forbidden)


@pytest.mark.parametrize(
    "args, expected",
    [
        (("3.8.8",), f"prefecthq/prefect:3.8.8-python{PY}"),
        (("3.8.8", "3.10"), "prefecthq/prefect:3.8.8-python3.10"),
        (("3.8.8", "3.12", "conda"), "prefecthq/prefect:3.8.8-python3.12-conda"),
        (("3.0.0rc1", "3.12"), "prefecthq/prefect:3.0.0rc1-python3.12"),
        (("3.0.0-RC1", "3.12"), "prefecthq/prefect:3.0.0rc1-python3.12"),  # PEP 440 normalised
        (("v3.8.8", "3.12"), "prefecthq/prefect:3.8.8-python3.12"),
        (("3.8.9.dev1", "3.11"), "prefecthq/prefect:3.8.9.dev1-python3.11"),  # no local part: a release image
        (("3.8.8+12.gabcdef0", "3.11"), "prefecthq/prefect-dev:sha-abcdef0-python3.11"),
        (("3.8.9.dev1+3.g0123456789ab", "3.11"), "prefecthq/prefect-dev:sha-0123456-python3.11"),
        (("3.8.8+12.gabcdef0.dirty", "3.12", "conda"), "prefecthq/prefect-dev:sha-abcdef0-python3.12-conda"),
        (("3.8.8+12-gabcdef0", "3.12"), "prefecthq/prefect-dev:sha-abcdef0-python3.12"),
        (("3.8.8", "3.12", "my flavor!"), "prefecthq/prefect:3.8.8-python3.12-my-flavor"),
        (("3.8.8", "3.12", "-ünïcode--x-"), "prefecthq/prefect:3.8.8-python3.12-unicode-x"),
    ],
)
def test_image_names(no_subprocess, args, expected):
    name = get_prefect_image_name(*args)
    assert name == expected
    ImageRef.parse(name)  # always a valid reference


def test_release_version_spawns_no_process(no_subprocess):
    assert get_prefect_image_name("3.8.8", "3.12") == "prefecthq/prefect:3.8.8-python3.12"


def test_dev_version_sha_comes_from_the_version_not_git(no_subprocess, monkeypatch, tmp_path):
    # Even inside another git repository, the sha is the one the version names.
    monkeypatch.chdir(tmp_path)
    assert get_prefect_image_name("3.8.8+1.gfeedbee", "3.12") == "prefecthq/prefect-dev:sha-feedbee-python3.12"


def test_dev_version_without_sha_falls_back_to_build_info(no_subprocess, monkeypatch):
    prefect = pytest.importorskip("prefect")
    info = dict(prefect.__version_info__, **{"full-revisionid": "0badc0ffee" + "0" * 30})
    monkeypatch.setattr(prefect, "__version_info__", info)
    assert get_prefect_image_name("3.8.8+local", "3.12") == "prefecthq/prefect-dev:sha-0badc0f-python3.12"


def test_dev_version_without_any_sha_raises(no_subprocess, monkeypatch):
    monkeypatch.setattr(prefect_images, "_installed_revision", lambda: None)
    with pytest.raises(ValueError, match="cannot tell which commit"):
        get_prefect_image_name("3.8.8+local", "3.12")


def test_defaults_follow_installed_prefect_and_python(no_subprocess, monkeypatch):
    prefect = pytest.importorskip("prefect")
    monkeypatch.setattr(prefect, "__version__", "3.9.1")
    assert installed_prefect_version() == "3.9.1"
    assert get_prefect_image_name() == f"prefecthq/prefect:3.9.1-python{python_version_minor()}"
    assert python_version_minor() == PY


def test_installed_version_read_from_metadata_without_importing_prefect(monkeypatch):
    monkeypatch.delitem(sys.modules, "prefect", raising=False)
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: "3.1.2")
    assert installed_prefect_version() == "3.1.2"
    assert "prefect" not in sys.modules


def test_prefect_not_installed(monkeypatch):
    monkeypatch.delitem(sys.modules, "prefect", raising=False)

    def missing(dist):
        raise importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(ValueError, match="pass prefect_version="):
        get_prefect_image_name()
    # An explicit version needs no Prefect at all.
    assert get_prefect_image_name("3.8.8", "3.12") == "prefecthq/prefect:3.8.8-python3.12"


def test_invalid_version():
    with pytest.raises(InvalidVersion):
        get_prefect_image_name("not a version")


def test_tag_is_truncated_to_128():
    name = get_prefect_image_name("3.8.8", "3.12", "x" * 200)
    tag = name.split(":", 1)[1]
    assert len(tag) == 128 and tag.startswith("3.8.8-python3.12-x")


@pytest.mark.parametrize(
    "raw, expected",
    [("20.10.0-ce", "20.10.0"), ("20.10.0-ee", "20.10.0"), ("24.0.7", "24.0.7"), ("", "")],
)
def test_format_outlier_version_name(raw, expected):
    assert format_outlier_version_name(raw) == expected
