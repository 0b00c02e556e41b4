"""Build args: ``None`` means unset, scalars render as docker-py sends them, the rest is a SpecError.

Checked at every front door that takes build args, before any Docker daemon is contacted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefect_flyimage import SpecError
from prefect_flyimage.plan import BuildPlan, build_arg_pairs

pytestmark = pytest.mark.usefixtures("no_daemon")  # any daemon call would fail

REPO = "127.0.0.1:5000/team/app"


@pytest.fixture
def project(cwd_project) -> Path:
    return cwd_project({"Dockerfile": "FROM busybox\nARG A=default\nCOPY . /app\n", "app.py": "x = 1\n"})


def plan(project: Path, **kw) -> BuildPlan:
    return BuildPlan.from_dockerfile(project, REPO, **kw)


def test_none_is_unset_and_not_hashed(project):
    with_none = plan(project, build_args={"A": "1", "B": None})
    assert with_none.build_args == (("A", "1"),)
    assert with_none.hash == plan(project, build_args={"A": "1"}).hash
    assert plan(project, build_args={"B": None}).hash == plan(project).hash
    assert "B" not in with_none.describe()["build_args"]


def test_string_args_keep_their_text_and_hash(project):
    # The plan hash of plain-string args is what it was before None-dropping existed.
    assert plan(project, build_args={"A": "None"}).build_args == (("A", "None"),)
    assert plan(project, build_args={"A": "None"}).hash != plan(project).hash


@pytest.mark.parametrize("value", [True, False, 0, 3, -7, 1.5, 2.0, 1e20])
def test_scalars_render_as_docker_py_sends_them(value):
    # docker-py puts buildargs on the wire with json.dumps.
    assert build_arg_pairs({"A": value}) == (("A", json.dumps(value)),)


def test_bool_is_lower_case(project):
    assert plan(project, build_args={"A": True}).build_args == (("A", "true"),)


class Opaque:
    pass


@pytest.mark.parametrize("value", [["1", "2"], ("1",), {"x": 1}, {1}, b"bytes", bytearray(b"x"), Opaque(),
                                   float("nan"), float("inf"), Path("/x")])
def test_non_scalars_are_spec_errors_naming_the_key(project, value):
    with pytest.raises(SpecError, match="THE_KEY") as info:
        plan(project, build_args={"THE_KEY": value})
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("args", ["A=1", b"A=1", 42, ["A=1"], [("A", "1", "x")]])
def test_wrong_container_shapes(project, args):
    with pytest.raises(SpecError, match="build arg"):
        plan(project, build_args=args)


@pytest.mark.parametrize("key", ["", 1, None, "A=B"])
def test_bad_keys(project, key):
    with pytest.raises(SpecError, match="build arg name"):
        plan(project, build_args={key: "v"})


def test_pairs_and_mappings_agree(project):
    assert plan(project, build_args=[("B", 2), ("A", "1")]).build_args == plan(project, build_args={"A": "1", "B": 2}).build_args
    assert BuildPlan(context=project, dockerfile_text="FROM x\n", repository=REPO,
                     build_args=(("A", None), ("B", "2"))).build_args == (("B", "2"),)


def test_labels_follow_the_same_rules(project):
    assert plan(project, labels={"team": "x", "gone": None}).labels == (("team", "x"),)
    with pytest.raises(SpecError, match="label 'team'"):
        plan(project, labels={"team": ["x"]})


# ---- front doors ----------------------------------------------------------------------


def test_docker_image(project):
    from prefect_flyimage import DockerImage

    image = DockerImage(name=REPO, dockerfile="Dockerfile", buildargs={"A": None, "B": 1})
    assert image.plan.build_args == (("B", "1"),)
    with pytest.raises(SpecError, match="'A'"):
        DockerImage(name=REPO, dockerfile="Dockerfile", buildargs={"A": [1]}).plan
    with pytest.raises(SpecError, match="build args must be a mapping"):
        DockerImage(name=REPO, dockerfile="Dockerfile", buildargs=["A=1"]).plan


def test_plan_for_build_auto_dockerfile(tmp_path):
    from prefect_flyimage.docker_image import plan_for_build

    (tmp_path / "flows.py").write_text("x = 1\n")
    p, _ = plan_for_build(REPO, context=tmp_path, dockerfile="auto", build_kwargs={"buildargs": {"A": None, "B": False}})
    assert p.build_args == (("B", "false"),)
    with pytest.raises(SpecError, match="'A'"):
        plan_for_build(REPO, context=tmp_path, dockerfile="auto", build_kwargs={"buildargs": {"A": {"x": 1}}})


def test_prefect_yaml_steps(project):
    from prefect_flyimage.deployments import steps

    with pytest.raises(SpecError, match="'A'"):
        steps.build_docker_image(REPO, dockerfile="Dockerfile", buildargs={"A": ["1"]})
    with pytest.raises(SpecError, match="'A'"):
        steps.ensure_image(REPO, dockerfile="Dockerfile", buildargs={"A": object()})


def test_prefect_dockerutils_build_image(project):
    from prefect_flyimage.dockerutils import build_image

    with pytest.raises(SpecError, match="'A'"):
        build_image(project, buildargs={"A": ["1"]})


def test_cli_build_arg_values_are_strings(project):
    from prefect_flyimage.cli import _plan

    p = _plan(project, REPO, "Dockerfile", None, ["A=1", "B=", "C=x=y"], None, None, None, "auto")
    assert p.build_args == (("A", "1"), ("B", ""), ("C", "x=y"))
