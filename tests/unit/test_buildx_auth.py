"""The private docker config a buildx build gets for a registry cache of an auth registry."""

from __future__ import annotations

import base64
import json
import stat

from prefect_flyimage.credentials import RegistryCredentials
from prefect_flyimage.engine._buildx import CACHE_AUTH, buildx_auth_env, buildx_flags


def test_no_credentials_no_config(tmp_path):
    assert buildx_auth_env({"cache_to": "type=registry,ref=r/x"}, tmp_path) == {}
    assert list(tmp_path.iterdir()) == []


def test_private_config_holds_the_registry_auth_and_keeps_the_users_other_logins(tmp_path, monkeypatch):
    user = tmp_path / "user"
    (user / "cli-plugins").mkdir(parents=True)
    (user / "config.json").write_text(json.dumps({
        "auths": {"127.0.0.1:5200": {"auth": "b2xkOm9sZA=="}, "other.example": {"auth": "eDp5"}, "store.example": {}},
        "credsStore": "desktop",
        "credHelpers": {"127.0.0.1:5200": "ecr-login", "gcr.io": "gcloud"},
    }))
    monkeypatch.setenv("DOCKER_CONFIG", str(user))
    monkeypatch.delenv("BUILDX_CONFIG", raising=False)
    build_tmp = tmp_path / "build"
    build_tmp.mkdir()
    creds = RegistryCredentials("127.0.0.1:5200", "flyimage", "s3cr3t-pw")
    opts = {"cache_to": "type=registry,ref=127.0.0.1:5200/app-buildcache:cache", CACHE_AUTH: creds}
    env = buildx_auth_env(opts, build_tmp)
    folder = build_tmp / "docker-config"
    assert env == {"DOCKER_CONFIG": str(folder), "BUILDX_CONFIG": str(user / "buildx")}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    config_file = folder / "config.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    config = json.loads(config_file.read_text())
    assert base64.b64decode(config["auths"]["127.0.0.1:5200"]["auth"]).decode() == "flyimage:s3cr3t-pw"
    assert config["auths"]["other.example"] == {"auth": "eDp5"}  # other logins kept
    # the registry's own helper would win over the auth entry: dropped; the store answers per registry
    assert config["credHelpers"] == {"gcr.io": "gcloud", "store.example": "desktop"}
    assert "credsStore" not in config
    assert (folder / "cli-plugins").resolve() == (user / "cli-plugins").resolve()
    # the secret is nowhere but in that file: not in the flags, not in the environment
    assert not any("s3cr3t" in f for f in buildx_flags(opts))
    assert not any("s3cr3t" in v for v in env.values())
    assert "s3cr3t" not in repr(creds)
