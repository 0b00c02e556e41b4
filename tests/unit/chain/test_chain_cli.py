"""The docker-pkg compatible command line (parts that need no Docker)."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from prefect_flyimage.chain.changelog import read_spec
from prefect_flyimage.chain.cli import main, parse_args


def test_parses_docker_pkg_arguments():
    args = parse_args(["-c", "cfg.yaml", "--info", "build", "--select", "*python*", "--use-cache", "--no-pull", "images"])
    assert (args.configfile, args.mode, args.select, args.nocache, args.pull, args.directory, args.info) == (
        "cfg.yaml", "build", "*python*", False, False, "images", True)
    assert args.workers is None and args.publish is True
    up = parse_args(["update", "python3", "--reason", "CVE", "-v", "2.0", "images"])
    assert (up.select, up.reason, up.version) == ("python3", "CVE", "2.0")
    pr = parse_args(["prune", "--nightly", "%Y", "images"])
    assert pr.nightly == "%Y"
    assert parse_args(["publish", "images"]).mode == "publish"
    with pytest.raises(SystemExit):
        parse_args(["build", "--nightly", "--snapshot", "images"])


def _config(tmp_path, text="seed_image: busybox:1\nbase_images: [busybox:1]\n"):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_update_command_bumps_the_tree(chain_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("DEBFULLNAME", "C Li")
    monkeypatch.setenv("DEBEMAIL", "c@example.org")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    out = io.StringIO()
    code = main(["-c", _config(tmp_path), "update", "alpha-tools", "--reason", "bump", str(chain_tree)], out=out)
    assert code == 0
    assert "* alpha-app" in out.getvalue() and "* alpha-tools" in out.getvalue()
    assert read_spec(chain_tree / "alpha-tools").version == "2.1.0-1-s1"
    assert read_spec(chain_tree / "alpha-app").version == "3.0.0-2-s1"
    assert read_spec(chain_tree / "alpha-base").version == "1.0.0-1"


def test_invalid_tree_exits_2_listing_every_problem_before_any_docker_call(chain_tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")  # any Docker call would fail differently
    (chain_tree / "beta-app" / "control").write_text("Package: beta-app\nDepends: beta-lib, nowhere\n")
    (chain_tree / "alpha-app" / "Dockerfile.template").write_text("FROM {{ undefined_thing }}\n")
    code = main(["-c", _config(tmp_path), "build", str(chain_tree)], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2
    assert "missing-dependency" in err and "nowhere" in err and str(chain_tree / "beta-app") in err
    assert "undefined_thing" in err and str(chain_tree / "alpha-app") in err


def test_bad_config_file_exits_2(tmp_path, capsys):
    assert main(["-c", str(tmp_path / "missing.yaml"), "build", str(tmp_path)]) == 2
    assert "cannot read config" in capsys.readouterr().err


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "prefect_flyimage.chain", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "build" in proc.stdout and "update" in proc.stdout
