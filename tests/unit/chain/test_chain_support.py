"""Config loading, verification records, test.sh runs and run reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_flyimage.chain.config import DEFAULTS, credentials, read_config, setting
from prefect_flyimage.chain.records import VerificationRecords
from prefect_flyimage.chain.report import ImageOutcome, markdown_table, report_run
from prefect_flyimage.chain.verify import run_verification


def test_read_config_merges_defaults_user_file_and_proxy(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    (xdg / "docker-pkg.yaml").write_text("namespace: from-user\napt_options: -q\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text("registry: r.example\nnamespace: team\nhttp_proxy: http://proxy:3128\n")
    cfg = read_config(cfg_file)
    assert cfg["namespace"] == "team" and cfg["apt_options"] == "-q"
    assert cfg["apt_only_proxy"] == "http://proxy:3128"
    assert cfg["verify_args"] == DEFAULTS["verify_args"]
    (tmp_path / "empty.yaml").write_text("")
    assert read_config(tmp_path / "empty.yaml", user_config=False)["registry"] == ""


def test_setting_falls_back_to_defaults_without_touching_the_dict():
    cfg: dict = {}
    assert setting(cfg, "update_id") == "s" and cfg == {}


def test_credentials_only_when_complete():
    assert credentials({"registry": "r:5000", "username": "u"}) is None
    creds = credentials({"registry": "r:5000", "username": "u", "password": "pw-secret"})
    assert creds.registry == "r:5000" and creds.secret == "pw-secret" and "pw-secret" not in repr(creds)


def test_records_count_only_for_the_recorded_image(tmp_path):
    records = VerificationRecords(tmp_path)
    assert not records.is_verified("abc123", "sha256:1")
    records.record("abc123", "sha256:1", "img:1")
    assert records.is_verified("abc123", "sha256:1")
    assert not records.is_verified("abc123", "sha256:2")
    (tmp_path / "verified" / "abc123.json").write_text("{corrupt")
    assert not records.is_verified("abc123", "sha256:1")
    records.record("abc123", "sha256:1", "img:1")
    records.forget("abc123")
    records.forget("abc123")
    assert records.get("abc123") is None
    with pytest.raises(ValueError):
        records.get("../etc/passwd")


def _image_folder(tmp_path: Path, script: str | None) -> Path:
    folder = tmp_path / "img"
    folder.mkdir()
    if script is not None:
        (folder / "test.sh").write_text(script)
        (folder / "test.sh").chmod(0o755)
    return folder


def test_verification_passes_label_and_sees_only_safe_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYIMAGE_REGISTRY_PASSWORD", "hunter2")
    folder = _image_folder(tmp_path, '#!/bin/bash\necho "image=$1 proxy=$http_proxy"\nenv | grep -c hunter2 || true\n')
    out = run_verification(folder, "r/ns/img:1.0", {"http_proxy": "http://p:1"})
    assert out.ok and not out.skipped
    assert "image=r/ns/img:1.0 proxy=http://p:1" in out.output
    assert out.output.strip().endswith("0")  # the registry password is not in the test's environment


def test_verification_failure_and_redaction(tmp_path):
    folder = _image_folder(tmp_path, "#!/bin/bash\necho leaking s3cret\nexit 3\n")
    out = run_verification(folder, "img:1", {"password": "s3cret"})
    assert not out.ok and out.returncode == 3
    assert "s3cret" not in out.output and "***" in out.output


def test_no_test_script_means_verified(tmp_path):
    out = run_verification(_image_folder(tmp_path, None), "img:1", {})
    assert out.ok and out.skipped


def test_missing_verify_command_fails(tmp_path):
    out = run_verification(_image_folder(tmp_path, "#!/bin/sh\n"), "img:1", {"verify_command": "/no/such/cmd", "verify_args": []})
    assert not out.ok and "not found" in out.output


def test_verification_timeout(tmp_path):
    folder = _image_folder(tmp_path, "#!/bin/bash\nsleep 5\n")
    out = run_verification(folder, "img:1", {"verify_timeout": 0.5})
    assert not out.ok and "timed out" in out.output


def test_markdown_table_and_report_outside_a_flow():
    outcomes = [
        ImageOutcome("r/b:2", "2", "error", None, 1.25, "build failed: boom|x"),
        ImageOutcome("r/a:1", "1", "published", "sha256:abc", 3.0),
        ImageOutcome("r/c:1", "1", "to_build", None, 0.0, None, "b"),
    ]
    text = markdown_table(outcomes)
    lines = text.splitlines()
    assert lines[0] == "| image | version | state | digest | duration (s) |"
    assert lines[2] == "| r/a:1 | 1 | published | sha256:abc | 3.0 |"
    assert lines[3] == "| r/b:2 | 2 | error | - | 1.2 |" or lines[3] == "| r/b:2 | 2 | error | - | 1.3 |"
    assert "not built: parent b failed" in lines[4]
    assert "boom\\|x" in text
    assert report_run([], "build").startswith("## Image tree build")
