"""The dependency graph of an image tree: checks, order, descendants, critical path.

Pure functions over image names, so they are tested without Docker.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable, Mapping, Sequence

from .changelog import ImageSpec
from .errors import TreeProblem
from .templates import split_label


def external_names(base_images: Iterable[str]) -> set[str]:
    """Names a ``control`` file may depend on without the tree defining them.

    A base image ``registry/ns/debian:12`` satisfies ``Depends: debian`` and
    ``Depends: registry/ns/debian``.
    """
    names: set[str] = set()
    for label in base_images:
        full, _ = split_label(str(label))
        names.add(full)
        names.add(full.rsplit("/", 1)[-1])
    return names


def check_tree(specs: Sequence[ImageSpec], external: Iterable[str] = ()) -> list[TreeProblem]:
    """Every structural problem of the tree: duplicate names, missing parents, cycles."""
    problems: list[TreeProblem] = []
    by_name: dict[str, list[ImageSpec]] = defaultdict(list)
    for spec in specs:
        by_name[spec.name].append(spec)
    for name, same in sorted(by_name.items()):
        if len(same) > 1:
            folders = tuple(sorted(str(s.folder) for s in same))
            problems.append(TreeProblem("duplicate", f"image {name} is defined {len(same)} times", folders, name))
    allowed = set(by_name) | set(external)
    for spec in sorted(specs, key=lambda s: str(s.folder)):
        for dep in spec.depends:
            if dep not in allowed:
                problems.append(
                    TreeProblem(
                        "missing-dependency",
                        f"image {spec.name} depends on {dep}, which no folder defines and base_images does not list",
                        (str(spec.folder),),
                        spec.name,
                    )
                )
    parents = {name: [d for d in same[0].depends if d in by_name] for name, same in by_name.items()}
    for cycle in find_cycles(parents):
        folders = tuple(sorted(str(s.folder) for n in cycle for s in by_name[n]))
        problems.append(TreeProblem("cycle", "dependency cycle: " + " -> ".join([*cycle, cycle[0]]), folders, cycle[0]))
    return problems


def find_cycles(parents: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(parents):
        if root in index:
            continue
        work = [(root, iter(sorted(parents.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in parents:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(parents.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1 or node in parents.get(node, ()):
                    components.append(_cycle_in(sorted(comp), parents))
    return sorted(components)


def _cycle_in(members: list[str], parents: Mapping[str, Sequence[str]]) -> list[str]:
    # Walk parent edges inside the component from its smallest name until a repeat.
    inside = set(members)
    path = [members[0]]
    seen = {members[0]: 0}
    while True:
        nxt = min(p for p in parents[path[-1]] if p in inside)
        if nxt in seen:
            return path[seen[nxt]:]
        seen[nxt] = len(path)
        path.append(nxt)


def build_order(names: Iterable[str], parents: Mapping[str, Sequence[str]], *, sort: bool = True) -> list[str]:
    """``names`` and their ancestors among ``parents``' keys, parents before children.

    Deterministic: a depth-first walk in name order (docker-pkg walked a set), or in the
    order given with ``sort=False`` (ties keep it). The graph must be acyclic (see
    :func:`check_tree` and :func:`find_cycles`).
    """
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        done.add(name)
        for parent in parents.get(name, ()):
            if parent in parents:
                visit(parent)
        order.append(name)

    for name in sorted(names) if sort else names:
        visit(name)
    return order


def children_of(parents: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Invert a parents mapping."""
    children: dict[str, list[str]] = {n: [] for n in parents}
    for child, ps in parents.items():
        for p in ps:
            if p in children:
                children[p].append(child)
    return children


def descendants(name: str, children: Mapping[str, Sequence[str]]) -> list[str]:
    """Every direct and indirect child of ``name`` (not ``name`` itself), sorted."""
    seen: set[str] = set()
    todo = list(children.get(name, ()))
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(children.get(n, ()))
    return sorted(seen)


def critical_path(
    names: Iterable[str], parents: Mapping[str, Sequence[str]], cost: Callable[[str], float] = lambda _: 1.0
) -> dict[str, float]:
    """For each name, the costliest chain from it down to a leaf (itself included).

    Used as scheduling priority: starting the image with the longest tail first
    keeps the makespan close to the critical path.
    """
    wanted = set(names)
    sub = {n: [p for p in parents.get(n, ()) if p in wanted] for n in wanted}
    kids = children_of(sub)
    memo: dict[str, float] = {}
    for name in reversed(build_order(wanted, sub)):
        memo[name] = cost(name) + max((memo[c] for c in kids[name]), default=0.0)
    return memo


__all__ = ["build_order", "check_tree", "children_of", "critical_path", "descendants", "external_names", "find_cycles"]
