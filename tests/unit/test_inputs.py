"""The inputs manifest (image label) and its comparison, without Docker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefect_flyimage import inputs
from prefect_flyimage.inputs import INPUTS_LABEL, compare, decode, encode, inputs_of, label_for, why_markdown
from prefect_flyimage.plan import PLAN_LABEL, BuildPlan


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "p"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (root / "a.txt").write_text("a\n")
    (root / "src" / "m.py").write_text("m\n")
    (root / "src" / "deep" / "d.py").write_text("d\n")
    return root


def _plan(root: Path, **kwargs) -> BuildPlan:
    return BuildPlan.from_dockerfile(root, "127.0.0.1:5000/app", **kwargs)


def test_label_is_not_part_of_the_plan_hash(project):
    plan = _plan(project, build_args={"A": "1"})
    before = plan.hash
    labels = plan.image_labels
    assert labels[PLAN_LABEL] == before and INPUTS_LABEL in labels
    assert _plan(project, build_args={"A": "1"}).hash == before  # a fresh plan: same hash
    assert label_for(plan) == label_for(_plan(project, build_args={"A": "1"}))  # deterministic
    assert decode(labels[INPUTS_LABEL]) == inputs_of(plan)


def test_compare_names_each_kind_of_change(project):
    old = decode(label_for(_plan(project, build_args={"A": "1", "B": "x"})))
    (project / "a.txt").write_text("changed\n")
    (project / "new.txt").write_text("new\n")
    (project / "src" / "m.py").unlink()
    os.chmod(project / "src" / "deep" / "d.py", 0o755)
    changes = compare(old, _plan(project, build_args={"A": "2", "C": "y"}, platform="linux/arm64", target="t"))
    assert changes.files_added == ["new.txt"]
    assert changes.files_removed == ["src/m.py"]
    assert changes.files_changed == ["a.txt", "src/deep/d.py"]  # content, then mode
    assert changes.args == {"A": ("1", "2"), "B": ("x", None), "C": (None, "y")}
    assert changes.platform == (None, "linux/arm64") and changes.target == (None, "t")
    assert not changes.dockerfile and not changes.empty
    assert "build arg B: 'x' -> (unset)" in changes.lines()


def test_same_inputs_no_changes(project):
    plan = _plan(project)
    changes = compare(decode(label_for(plan)), plan)
    assert changes.empty and changes.lines() == []


def test_large_context_is_described_by_folder(project, monkeypatch):
    for i in range(300):
        (project / "src" / "deep" / f"f{i:03}.py").write_text(f"{i}\n")
    full = encode(inputs_of(_plan(project)))
    monkeypatch.setattr(inputs, "MAX_LABEL_BYTES", len(full) // 4)
    label = label_for(_plan(project))
    assert len(label) <= len(full) // 4
    old = decode(label)
    # the deepest folder level that fits: src/deep/ becomes one entry, src/m.py stays a file
    assert old["grouped"] == 2 and set(old["files"]) == {"Dockerfile", "a.txt", "src/m.py", "src/deep/"}
    (project / "src" / "deep" / "f007.py").write_text("changed\n")
    changes = compare(old, _plan(project))
    assert changes.grouped
    assert changes.files_changed == ["src/deep/"]
    assert "a.txt" not in changes.files_changed


@pytest.mark.parametrize("garbage", ["", "not base64!", "aGVsbG8="])
def test_decode_refuses_what_is_not_ours(garbage):
    with pytest.raises(ValueError):
        decode(garbage)


def test_why_markdown(project):
    old = decode(label_for(_plan(project)))
    (project / "a.txt").write_text("changed\n")
    changes = compare(old, _plan(project))
    text = why_markdown({"status": "changed", "compared_with": "127.0.0.1:5000/app:abc", "changes": changes})
    assert text == "**Why rebuilt** (compared with `127.0.0.1:5000/app:abc`):\n\n- file changed: a.txt\n"
    assert "first image" in why_markdown({"status": "no-previous-image", "compared_with": None, "changes": None})
