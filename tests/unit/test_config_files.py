"""YAML configuration files (the refresh configuration, a tree's config.yaml): every
malformed or wrongly shaped file is a ConfigError naming the file and the line, and the
command lines exit 2 with that message."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from prefect_flyimage.chain.config import read_config
from prefect_flyimage.errors import ConfigError, RefreshConfigError, SpecError
from prefect_flyimage.refresh import load_config
from prefect_flyimage.yamlconfig import read_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def only_problem(info: pytest.ExceptionInfo[ConfigError]) -> str:
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0]


# ---- the loader ------------------------------------------------------------------------------


def test_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", """\
        images:
          - name: a
           bad: 1
        """)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert only_problem(info).startswith(f"{path}:3:4: not valid YAML: ")
    assert "started at line 2" in str(info.value)
    assert not isinstance(info.value, yaml.YAMLError) and info.value.__suppress_context__
    assert isinstance(info.value, SpecError) and isinstance(info.value, ValueError)
    assert info.value.path == path


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_yaml(tmp_path / "missing.yaml")


def test_good_file_keeps_lines(tmp_path: Path) -> None:
    doc = read_yaml(write(tmp_path / "ok.yaml", "a: 1\nlist:\n  - x: 1\n  - x: 2\n    y: [1, 2]\n"))
    assert doc.data == {"a": 1, "list": [{"x": 1}, {"x": 2, "y": [1, 2]}]}
    assert doc.line(("list", 1, "y", 0)) == 5
    assert doc.line(("list", 1, "missing")) == 4  # the deepest part present
    assert doc.where(("list", 1, "y")) == f"{doc.path}:5: list[1].y"


# ---- the refresh configuration ---------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM busybox\n")
    return tmp_path


def test_refresh_syntax_error(project: Path) -> None:
    path = write(project / "refresh.yaml", "images: [\n  {name: a, dockerfile: Dockerfile\n")
    with pytest.raises(RefreshConfigError) as info:
        load_config(path)
    assert only_problem(info).startswith(f"{path}:3:1: not valid YAML")


def test_refresh_wrong_type_names_file_line_and_key(project: Path) -> None:
    path = write(project / "refresh.yaml", """\
        images:
        - name: app
          dockerfile: Dockerfile
          context: app
          repository: 127.0.0.1:5000/app
          verify_timeout: soon
          tags: {latest: true}
        """)
    with pytest.raises(RefreshConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert problems[0].startswith(f"{path}:6: images[0].verify_timeout: input should be a valid number")
    assert problems[1] == f"{path}:7: images[0].tags: wrong type: expected str or list[union[str,int,float]], got dict"
    assert len(problems) == 2


def test_refresh_unknown_and_missing_keys(project: Path) -> None:
    path = write(project / "refresh.yaml", """\
        defaults:
          max_age: P1D
          colour: blue
        images:
        - dockerfile: Dockerfile
          context: app
          repository: 127.0.0.1:5000/app
        """)
    with pytest.raises(RefreshConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}:3: defaults.colour: unknown key (known: base_source, max_age, network, verify_timeout)",
        f"{path}:5: images[0].name: missing key (required)",
    ]


def test_refresh_build_args_none_is_unset_and_lists_are_refused(project: Path) -> None:
    good = write(project / "refresh.yaml", """\
        images:
        - {name: app, dockerfile: Dockerfile, context: app, repository: 127.0.0.1:5000/app, build_args: {A: 1, B: null}}
        """)
    assert load_config(good).entry("app").build_args == (("A", "1"),)
    bad = write(project / "bad.yaml", """\
        images:
        - name: app
          dockerfile: Dockerfile
          context: app
          repository: 127.0.0.1:5000/app
          build_args:
            A: [1, 2]
        """)
    with pytest.raises(RefreshConfigError) as info:
        load_config(bad)
    assert only_problem(info) == f"{bad}:7: images[0].build_args.A: wrong type: expected str or int or float or bool, got list"


def test_refresh_file_that_is_not_a_mapping(project: Path) -> None:
    path = write(project / "refresh.yaml", "- just\n- a list\n")
    with pytest.raises(RefreshConfigError, match=r"refresh.yaml:1: the file must hold a mapping"):
        load_config(path)


def test_refresh_good_file(project: Path) -> None:
    config = load_config(write(project / "refresh.yaml", """\
        defaults: {max_age: 36h, verify_timeout: 20}
        images:
        - {name: app, dockerfile: Dockerfile, context: app, repository: 127.0.0.1:5000/app, tag: 1.5, verify: "sh -c 'exit 0'"}
        """))
    (app,) = config.images
    assert (app.tag, app.verify, app.verify_timeout, app.max_age.total_seconds()) == (
        "1.5", ("sh", "-c", "exit 0"), 20.0, 36 * 3600,
    )


# ---- a tree's config.yaml --------------------------------------------------------------------


def test_chain_config_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "registry: 127.0.0.1:5000\nbase_images: [busybox:1\n")
    with pytest.raises(ConfigError) as info:
        read_config(path, user_config=False)
    assert only_problem(info).startswith(f"{path}:3:1: not valid YAML")


def test_chain_config_wrong_types_name_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", """\
        registry: 127.0.0.1:5000
        base_images: busybox:1
        scan_workers: many
        known_uid_mappings: {root: zero}
        """)
    with pytest.raises(ConfigError) as info:
        read_config(path, user_config=False)
    assert info.value.problems == [
        f"{path}:2: base_images: input should be a valid list (got str)",
        f"{path}:3: scan_workers: input should be a valid integer, unable to parse string as an integer",
        f"{path}:4: known_uid_mappings.root: input should be a valid integer, unable to parse string as an integer",
    ]


def test_chain_config_keeps_the_trees_own_keys(tmp_path: Path) -> None:
    # Templates read keys docker-pkg does not know (seed_image); numbers where text is
    # expected (a numeric password) are text.
    path = write(tmp_path / "config.yaml", "registry: r.example\npassword: 1234\nseed_image: busybox:1\nmirrors: [a, b]\n")
    config = read_config(path, user_config=False)
    assert (config["password"], config["seed_image"], config["mirrors"]) == ("1234", "busybox:1", ["a", "b"])
    assert config["scan_workers"] == 8  # defaults still below the file


def test_chain_config_user_file_is_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    user = write(xdg / "docker-pkg.yaml", "build_workers: 0\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    with pytest.raises(ConfigError) as info:
        read_config(write(tmp_path / "config.yaml", "registry: r\n"))
    assert only_problem(info).startswith(f"{user}:1: build_workers: input should be greater than or equal to 1")


# ---- the command lines: exit 2 with the message -----------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _cli() -> list[str]:
    script = shutil.which("prefect-flyimage")
    return [script] if script else [sys.executable, "-m", "prefect_flyimage.cli"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("registry: 127.0.0.1:5000\nbase_images: [busybox:1\n", ":3:1: not valid YAML"),
        ("registry: 127.0.0.1:5000\nbase_images: busybox:1\n", ":2: base_images: input should be a valid list"),
    ],
)
def test_chain_cli_exits_2_on_a_malformed_config(tmp_path: Path, text: str, expected: str) -> None:
    config = write(tmp_path / "bad.yaml", text)
    (tmp_path / "tree").mkdir()
    proc = subprocess.run([*_cli(), "chain", "-c", str(config), "build", str(tmp_path / "tree")],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{config}{expected}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_refresh_entry_point_exits_2_on_a_malformed_config(tmp_path: Path) -> None:
    config = write(tmp_path / "refresh.yaml", "images:\n  - name: [\n")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "flows" / "image_refresh.py"), str(config)],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{config}:3:1: not valid YAML" in proc.stderr
    assert "Traceback" not in proc.stderr
    usage = subprocess.run([sys.executable, str(REPO_ROOT / "flows" / "image_refresh.py"), "--nope"],
                           capture_output=True, text=True, env=_env(), timeout=120)
    assert usage.returncode == 2 and "usage:" in usage.stderr
