"""From configured entries to build plans and trees, and the order to check them in."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence

from ..errors import RefreshConfigError
from ..names import ImageRef
from ..plan import BuildPlan
from .bases import external_bases
from .config import ImageEntry

if TYPE_CHECKING:
    from ..chain.builder import DockerBuilder
    from ..engine import Engine

__all__ = [
    "EntryShape",
    "entry_order",
    "entry_shape",
    "load_spec",
    "prepared_plan",
    "scan_tree",
    "tree_external_bases",
]


def load_spec(entry: ImageEntry) -> Any:
    """The :class:`~prefect_flyimage.spec.Image` a ``spec`` entry names."""
    import runpy

    from ..spec import Image

    try:
        if str(entry.path).endswith(".py"):
            namespace = runpy.run_path(str(entry.path))
        else:
            namespace = vars(import_module(str(entry.path)))
    except Exception as exc:  # noqa: BLE001 - whatever the user's file raises
        raise RefreshConfigError([f"image {entry.name!r}: cannot load {entry.path}: {type(exc).__name__}: {exc}"]) from None
    image = namespace.get(entry.attribute or "")
    if not isinstance(image, Image):
        raise RefreshConfigError([f"image {entry.name!r}: {entry.path}:{entry.attribute} is not a prefect_flyimage Image "
                                  f"(got {type(image).__name__})"])
    return image


@contextmanager
def prepared_plan(entry: ImageEntry) -> Iterator[BuildPlan]:
    """The build plan of a ``dockerfile`` or ``spec`` entry, before base labels.

    A spec's context is staged in a temporary folder, removed on exit.
    """
    if entry.kind == "dockerfile":
        assert entry.context is not None and entry.repository
        yield BuildPlan.from_dockerfile(
            entry.context, entry.repository, dockerfile=entry.path, tag=entry.tag,
            build_args=dict(entry.build_args), extra_tags=entry.tags, network=entry.network, pull=False,
        )
    elif entry.kind == "spec":
        image = load_spec(entry)
        with image.staged_plan(network=entry.network) as plan:
            yield plan.with_(extra_tags=tuple(t for t in entry.tags if t != plan.tag)) if entry.tags else plan
    else:
        raise ValueError(f"image {entry.name!r} is a tree; trees have one plan per image")


def scan_tree(entry: ImageEntry, engine: Optional["Engine"] = None) -> "DockerBuilder":
    """The entry's docker-pkg tree, scanned and checked without any Docker call.

    ``engine`` is the one its images will use later (default: one each, from the environment).
    """
    from ..chain.builder import DockerBuilder
    from ..chain.config import read_config

    assert entry.tree_config is not None
    config = read_config(entry.tree_config, user_config=False)
    builder = DockerBuilder(entry.path, config, entry.selection, nocache=True, pull=True, engine=engine)
    builder.scan(inspect=False)
    return builder


def tree_external_bases(builder: "DockerBuilder") -> dict[str, list[str]]:
    """For each image of a scanned tree: the bases it builds from that the tree does not make."""
    from ..chain.verify import proxy_env

    own = {img.name for img in builder.all_images}
    result = {}
    for img in builder.all_images:
        bases = external_bases(img.render_dockerfile(), proxy_env(builder.config))
        result[img.short_name] = [b for b in bases if ImageRef.parse(b).name not in own]
    return result


@dataclass(frozen=True)
class EntryShape:
    """What an entry produces and needs, for ordering entries (no Docker call)."""

    outputs: frozenset[str]  #: repositories it publishes
    needs: frozenset[str]  #: repositories of the images it builds from


def _names(refs: Any) -> frozenset[str]:
    return frozenset(ImageRef.parse(r).name for r in refs)


def entry_shape(entry: ImageEntry) -> EntryShape:
    """Outputs and external base names of ``entry``, from its files alone."""
    if entry.kind == "tree":
        builder = scan_tree(entry)
        outputs = frozenset(img.name for img in builder.all_images)
        return EntryShape(outputs, _names(b for bases in tree_external_bases(builder).values() for b in bases))
    if entry.kind == "spec":
        image = load_spec(entry)
        return EntryShape(frozenset({image.repository}), _names(external_bases(image.dockerfile_text())))
    assert entry.repository
    text = entry.path.read_text()
    return EntryShape(frozenset({entry.repository}), _names(external_bases(text, dict(entry.build_args))))


def entry_order(
    entries: Sequence[ImageEntry], shapes: Mapping[str, EntryShape]
) -> tuple[list[ImageEntry], dict[str, list[str]]]:
    """Entries parents first (an entry building FROM another's output comes after it), and
    each entry's parent entries. Ties keep the configuration's order.

    Raises:
        RefreshConfigError: the entries depend on each other in a cycle.
    """
    from ..chain.graph import build_order, find_cycles

    producers: dict[str, str] = {}
    for entry in entries:
        for repo in shapes[entry.name].outputs:
            producers.setdefault(repo, entry.name)
    parents = {
        e.name: sorted({producers[n] for n in shapes[e.name].needs if n in producers and producers[n] != e.name})
        for e in entries
    }
    cycles = find_cycles(parents)
    if cycles:
        raise RefreshConfigError([f"images build from each other in a cycle: {' -> '.join([*c, c[0]])}" for c in cycles])
    by_name = {e.name: e for e in entries}
    return [by_name[n] for n in build_order([e.name for e in entries], parents, sort=False)], parents
