"""Trees and configs for the chain integration tests (real dockerd and registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import yaml


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))  # no stray docker-pkg.yaml


@pytest.fixture
def chain_config(tmp_path: Path, registry, busybox_image: str, unique_name: str) -> dict[str, Any]:
    """docker-pkg config for the authenticated registry, in a namespace of this test only."""
    return {
        "registry": registry.host,
        "namespace": f"chain-{unique_name}".lower(),
        "username": registry.username,
        "password": registry.password,
        "seed_image": busybox_image,
        "base_images": [busybox_image],
        "known_uid_mappings": {"root": 0, "nobody": 65534},
        "refresh_base_images": False,  # local base image; never pull from Docker Hub
        "build_network": "none",
        "state_dir": str(tmp_path / "state"),
        "scan_workers": 4,
    }


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Write a config dict as config.yaml and return its path."""
    def write(config: dict[str, Any]) -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path
    return write

