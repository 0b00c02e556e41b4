"""Tree checks and ordering, on image names only."""

from __future__ import annotations

from pathlib import Path

from prefect_flyimage.chain.changelog import ImageSpec
from prefect_flyimage.chain.graph import build_order, check_tree, critical_path, descendants, children_of, external_names, find_cycles


def spec(name: str, *deps: str, folder: str | None = None) -> ImageSpec:
    return ImageSpec(Path(folder or f"/t/{name}"), name, "1.0", deps)


def test_all_problems_reported_together():
    specs = [
        spec("a"), spec("a", folder="/t/a-copy"),
        spec("b", "ghost"),
        spec("c", "d"), spec("d", "e"), spec("e", "c"),
        spec("f", "base"),
    ]
    problems = check_tree(specs, external_names(["registry.example/ns/base:12"]))
    kinds = sorted(p.kind for p in problems)
    assert kinds == ["cycle", "duplicate", "missing-dependency"]
    dup = next(p for p in problems if p.kind == "duplicate")
    assert dup.folders == ("/t/a", "/t/a-copy")
    missing = next(p for p in problems if p.kind == "missing-dependency")
    assert "ghost" in missing.message and missing.folders == ("/t/b",)
    cycle = next(p for p in problems if p.kind == "cycle")
    assert cycle.message == "dependency cycle: c -> d -> e -> c"
    assert cycle.folders == ("/t/c", "/t/d", "/t/e")


def test_self_dependency_is_a_cycle():
    assert find_cycles({"a": ["a"], "b": []}) == [["a"]]


def test_two_separate_cycles_are_both_found():
    cycles = find_cycles({"a": ["b"], "b": ["a"], "x": ["y"], "y": ["x"], "z": ["a"]})
    assert cycles == [["a", "b"], ["x", "y"]]


def test_build_order_parents_first_and_deterministic():
    parents = {"a": [], "b": ["a"], "c": ["b"], "d": ["a", "c"], "e": []}
    assert build_order(parents, parents) == ["a", "b", "c", "d", "e"]
    assert build_order(["c"], parents) == ["a", "b", "c"]


def test_descendants_and_critical_path():
    parents = {"a": [], "b": ["a"], "c": ["b"], "d": ["a"], "x": []}
    kids = children_of(parents)
    assert descendants("a", kids) == ["b", "c", "d"]
    cp = critical_path(parents, parents, lambda n: 2.0)
    assert cp == {"a": 6.0, "b": 4.0, "c": 2.0, "d": 2.0, "x": 2.0}
