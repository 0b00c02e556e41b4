"""BuildPlan: what enters the hash, tags, and input validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_flyimage.errors import ContextError, InvalidReferenceError
from prefect_flyimage.plan import PLAN_LABEL, TAG_LENGTH, BuildPlan, BuildResult, BuildSecret


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY . /app\n")
    (tmp_path / "app.py").write_text("x = 1\n")
    return tmp_path


def plan(project: Path, **kw) -> BuildPlan:
    return BuildPlan.from_dockerfile(project, "127.0.0.1:5000/team/app", **kw)


def test_same_inputs_same_hash(project):
    assert plan(project).hash == plan(project).hash
    assert len(plan(project).content_tag) == TAG_LENGTH


@pytest.mark.parametrize(
    "change",
    [
        {"build_args": {"A": "1"}},
        {"platform": "linux/arm64"},
        {"target": "final"},
        {"labels": {"team": "x"}},
        {"secrets": (BuildSecret("token", env="HOME"),)},
    ],
)
def test_each_input_changes_hash(project, change):
    assert plan(project, **change).hash != plan(project).hash


def test_dockerfile_text_changes_hash(project):
    base = plan(project).hash
    (project / "Dockerfile").write_text("FROM busybox\nCOPY . /srv\n")
    assert plan(project).hash != base


def test_how_to_build_does_not_change_hash(project):
    base = plan(project).hash
    assert plan(project, tag="v1", pull=True, no_cache=True, network="host", extra_tags=("latest",)).hash == base


def test_build_arg_order_is_irrelevant(project):
    assert plan(project, build_args={"A": "1", "B": "2"}).hash == plan(project, build_args={"B": "2", "A": "1"}).hash


def test_build_arg_boundaries_do_not_collide(project):
    assert plan(project, build_args={"AB": "C"}).hash != plan(project, build_args={"A": "BC"}).hash


def test_tags(project):
    p = plan(project, tag="v1", extra_tags=("latest",))
    assert str(p.ref) == "127.0.0.1:5000/team/app:v1"
    assert p.all_tags == ("v1", p.content_tag, "latest")
    assert str(plan(project).ref).endswith(":" + plan(project).content_tag)
    assert p.image_labels[PLAN_LABEL] == p.hash


def test_bad_inputs_are_typed(project, tmp_path):
    with pytest.raises(InvalidReferenceError) as err:
        BuildPlan.from_dockerfile(project, "127.0.0.1:5000/Team/App")
    assert err.value.part == "repository"
    with pytest.raises(InvalidReferenceError) as err:
        plan(project, tag="bad tag!")
    assert err.value.part == "tag"
    with pytest.raises(ContextError, match="Dockerfile 'Nope' not found"):
        plan(project, dockerfile="Nope")
    with pytest.raises(ContextError, match="does not exist"):
        BuildPlan.from_dockerfile(tmp_path / "missing", "app")


def test_dockerfile_outside_context_is_refused(project, tmp_path_factory):
    other = tmp_path_factory.mktemp("df") / "Dockerfile.ci"
    other.write_text("FROM busybox\n")
    with pytest.raises(ContextError, match="Dockerfile.ci.*is outside the build context") as err:
        BuildPlan.from_dockerfile(project, "app", dockerfile=other)
    assert err.value.path == other


def test_secret_repr_hides_source():
    s = BuildSecret("tok", env="MY_TOKEN")
    assert "MY_TOKEN" not in repr(s)
    with pytest.raises(ValueError):
        BuildSecret("tok")


def test_result_pinned_and_dict():
    r = BuildResult(reference="reg:5000/app:abc", plan_hash="h", digest="sha256:" + "0" * 64)
    assert r.pinned == "reg:5000/app@sha256:" + "0" * 64
    assert r.cached and r.as_dict()["repository"] == "reg:5000/app"
