"""docker-pkg compatible configuration: defaults, ``config.yaml`` loading, naming helpers.

The keys and defaults are docker-pkg 4.0.4's, so an existing ``config.yaml`` works
unchanged. A few keys of our own (marked below) steer what docker-pkg could not do.
"""

from __future__ import annotations

import copy
import os
import posixpath
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..credentials import RegistryCredentials
from ..yamlconfig import read_yaml, validate

DEFAULTS: dict[str, Any] = {
    "registry": "",
    "username": None,
    "password": None,
    "base_images": [],
    "apt_options": "",
    "http_proxy": None,
    "apt_only_proxy": None,
    "namespace": "",
    "scan_workers": 8,
    "fallback_author": "Author",
    "fallback_email": "email@domain",
    "distribution": "wikimedia",
    "update_id": "s",
    "ca_bundle": None,
    "force_numeric_user": False,
    "known_uid_mappings": {"root": 0, "www-data": 33, "nobody": 65534},
    "verify_command": "/bin/bash",
    "verify_args": ["-c", "{path}/test.sh {image}"],
    # --- ours ---
    # Pull base_images before building (docker-pkg always did when pulling was on).
    "refresh_base_images": True,
    # Network of RUN steps during builds (None: the daemon's default).
    "build_network": None,
    # Seconds a verification (test.sh) may take before it counts as failed.
    "verify_timeout": 600,
    # Seconds a single image build may take (None: no limit).
    "build_timeout": None,
    # Where verification records live (default: $FLYIMAGE_STATE_DIR/chain).
    "state_dir": None,
    # Parallel image builds for `build` (1 = docker-pkg's sequential order).
    "build_workers": 1,
}


def setting(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]``, or our default when the caller's dict lacks it.

    docker-pkg read some keys without a default and crashed on partial dicts; we
    fall back instead, but never add keys to the dict templates render with.
    """
    if key in config:
        return config[key]
    return copy.deepcopy(DEFAULTS.get(key))


class ConfigSchema(BaseModel):
    """The types of the keys :data:`DEFAULTS` knows. Other keys are the tree's own (its
    templates read them, e.g. ``seed_image``) and pass unchecked, as in docker-pkg."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    registry: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = None
    base_images: list[str] = []
    apt_options: Optional[str] = None
    http_proxy: Optional[str] = None
    apt_only_proxy: Optional[str] = None
    namespace: Optional[str] = None
    scan_workers: Annotated[int, Field(ge=1)] = 8
    fallback_author: str = ""
    fallback_email: str = ""
    distribution: str = ""
    update_id: str = ""
    ca_bundle: Optional[str] = None
    force_numeric_user: bool = False
    known_uid_mappings: dict[str, int] = {}
    verify_command: str = ""
    verify_args: list[str] = []
    refresh_base_images: bool = True
    build_network: Optional[str] = None
    verify_timeout: Annotated[float, Field(gt=0)] = 600
    build_timeout: Optional[Annotated[float, Field(gt=0)]] = None
    state_dir: Optional[str] = None
    build_workers: Annotated[int, Field(ge=1)] = 1


def _read_yaml(path: Path) -> dict[str, Any]:
    """The keys ``path`` sets, checked against :class:`ConfigSchema`.

    Raises:
        ConfigError: the file cannot be read, is not valid YAML, or a key has the wrong
            type (each problem names the file and line).
    """
    doc = read_yaml(path)
    checked = validate(doc, ConfigSchema)
    # The file's own values, as typed (numbers where a string is expected become text).
    return checked.model_dump(include=set(doc.data or {}))


def read_config(configfile: str | os.PathLike[str], *, user_config: bool = True) -> dict[str, Any]:
    """Load ``configfile`` over the defaults, like ``docker-pkg -c``.

    As in docker-pkg, ``$XDG_CONFIG_HOME/docker-pkg.yaml`` (when present and
    ``user_config``) is merged below the file, and ``http_proxy`` doubles as the apt
    proxy unless ``apt_only_proxy`` is set.

    Raises:
        ConfigError: a file is unreadable, not valid YAML or of the wrong shape (the
            message names the file and line).
    """
    config = copy.deepcopy(DEFAULTS)
    if user_config:
        xdg = os.environ.get("XDG_CONFIG_HOME", os.path.expanduser("~/.config/"))
        user_file = Path(xdg) / "docker-pkg.yaml"
        if user_file.exists():
            config.update(_read_yaml(user_file))
    config.update(_read_yaml(Path(configfile)))
    if config.get("http_proxy") is not None and config.get("apt_only_proxy") is None:
        config["apt_only_proxy"] = config["http_proxy"]
    return config


def image_name(config: Mapping[str, Any], short_name: str) -> str:
    """``$registry/$namespace/$name`` with empty parts left out (docker-pkg's ``name``)."""
    return posixpath.join(config.get("registry") or "", config.get("namespace") or "", short_name)


def image_label(config: Mapping[str, Any], short_name: str, version: str) -> str:
    """``$registry/$namespace/$name:$version`` (docker-pkg's ``label``)."""
    return f"{image_name(config, short_name)}:{version}"


def credentials(config: Mapping[str, Any]) -> Optional[RegistryCredentials]:
    """Registry credentials from ``registry``/``username``/``password``, or ``None``."""
    registry, user, password = config.get("registry"), config.get("username"), config.get("password")
    if registry and user and password:
        return RegistryCredentials(registry, str(user), str(password))
    return None


def secrets(config: Mapping[str, Any]) -> list[str]:
    """Values that must never reach a log line, an error or an artifact."""
    return [str(config["password"])] if config.get("password") else []


def state_dir(config: Mapping[str, Any]) -> Path:
    """Folder of the verification records."""
    configured = config.get("state_dir")
    if configured:
        return Path(configured)
    return Path(os.environ.get("FLYIMAGE_STATE_DIR") or "/var/tmp/prefect-flyimage") / "chain"


__all__ = [
    "DEFAULTS",
    "ConfigSchema",
    "credentials",
    "image_label",
    "image_name",
    "read_config",
    "secrets",
    "setting",
    "state_dir",
]
