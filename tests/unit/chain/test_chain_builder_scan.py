"""Scanning, checking and ordering trees without touching Docker (``scan(inspect=False)``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_flyimage.chain import DockerBuilder, ImageFSM, TreeSpecError
from prefect_flyimage.chain.changelog import read_spec

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "chain"

TREE_CONFIG = {
    "registry": "registry.example.org", "namespace": "ns", "seed_image": "busybox:1",
    "base_images": ["busybox:1"], "known_uid_mappings": {"root": 0, "nobody": 65534},
}


def scanned(root: Path, config: dict, selection: str | None = None) -> DockerBuilder:
    builder = DockerBuilder(root, config, selection, pull=False)
    builder.scan(inspect=False)
    return builder


def labels(images) -> list[str]:
    return [i.label for i in images]


def test_fixture_tree_order_puts_parents_first(chain_tree):
    chain = scanned(chain_tree, TREE_CONFIG).build_chain
    names = [i.short_name for i in chain]
    assert len(names) == 7
    for img in chain:
        for dep in img.depends:
            assert names.index(dep) < names.index(img.short_name)
    assert chain[0].label == "registry.example.org/ns/alpha-base:1.0.0-1"


def test_selection_brings_to_build_ancestors_along(chain_tree):
    chain = scanned(chain_tree, TREE_CONFIG, "*beta-app:*").build_chain
    assert [i.short_name for i in chain] == ["beta-base", "beta-lib", "beta-app"]


def test_relative_directory_and_folders_without_template_are_ignored(monkeypatch, caplog):
    monkeypatch.chdir(FIXTURES)
    builder = scanned(Path("dockerpkg"), {"base_images": ["test"]})
    assert builder.root == str(FIXTURES / "dockerpkg")
    assert sorted(builder.known_images) == [
        "foo-bar:0.0.1", "foobar-server:0.0.1~alpha1", "test", "upstream-version-extended:1.63.0-1-20241211",
        "upstream-version:1.63.0-1",
    ]
    assert "only-changelog since it lacks a Dockerfile.template" in caplog.text


def test_every_problem_is_reported_at_once_naming_folders(make_image):
    make_image("one", "dup")
    make_image("two", "dup")
    make_image("orphan", depends=("ghost",))
    make_image("c1", depends=("c2",))
    make_image("c2", depends=("c1",))
    make_image("broken", template="FROM {{ nothing_here }}\n")
    make_image("bad-filter", template='FROM {{ "ghost" | image_tag }}\n')
    with pytest.raises(TreeSpecError) as info:
        scanned(make_image.root, {"base_images": ["base:1"]})
    err = info.value
    assert {p.kind for p in err.issues} == {"duplicate", "missing-dependency", "cycle", "template"}
    root = make_image.root
    assert err.of_kind("duplicate")[0].folders == (str(root / "one"), str(root / "two"))
    assert err.of_kind("missing-dependency")[0].folders == (str(root / "orphan"),)
    assert err.of_kind("cycle")[0].folders == (str(root / "c1"), str(root / "c2"))
    assert sorted(p.folders[0] for p in err.of_kind("template")) == [str(root / "bad-filter"), str(root / "broken")]
    assert "nothing_here" in str(err) and "ghost" in str(err)


def test_unreadable_changelog_is_a_metadata_problem(make_image):
    folder = make_image("img")
    (folder / "changelog").write_text("garbage\n")
    with pytest.raises(TreeSpecError) as info:
        scanned(make_image.root, {})
    assert info.value.of_kind("metadata")[0].folders == (str(folder),)


def test_force_numeric_user(make_image):
    make_image("img", template="FROM base\nUSER nobody\n")
    with pytest.raises(TreeSpecError, match="numeric-user"):
        scanned(make_image.root, {"force_numeric_user": True, "base_images": ["base:1"]})
    make_image("img", template="FROM base\nUSER 65534\n")
    scanned(make_image.root, {"force_numeric_user": True})


def test_depending_on_a_base_image_is_allowed(make_image):
    make_image("img", depends=("debian",))
    builder = scanned(make_image.root, {"base_images": ["docker-registry.example/debian:12"]})
    assert labels(builder.build_chain) == ["img:1.0"]


def test_build_chain_skips_parents_not_to_build_and_detects_manual_cycles(make_image):
    make_image("a")
    make_image("b", depends=("a",))
    make_image("c", depends=("b",))
    builder = scanned(make_image.root, {})
    by = {i.short_name: i for i in builder.all_images}
    by["a"].state = ImageFSM.STATE_PUBLISHED
    assert labels(builder.build_chain) == ["b:1.0", "c:1.0"]
    builder.glob = "c*"
    by["b"].state = ImageFSM.STATE_VERIFIED
    assert labels(builder.build_chain) == ["c:1.0"]
    # A loop introduced behind the scan's back is still refused.
    by["a"].state = by["b"].state = ImageFSM.STATE_TO_BUILD
    by["a"].spec = by["a"].spec.__class__(by["a"].spec.folder, "a", "1.0", ("c",))
    with pytest.raises(TreeSpecError, match="cycle"):
        builder.build_chain


def test_prune_chain_is_reverse_order_of_selected(make_image):
    make_image("a1")
    make_image("b1", depends=("a1",))
    make_image("c2", depends=("b1",))
    make_image("d2", depends=("a1", "c2"))
    builder = scanned(make_image.root, {})
    assert labels(builder.prune_chain()) == ["d2:1.0", "c2:1.0", "b1:1.0", "a1:1.0"]
    builder.glob = "*2:*"
    assert labels(builder.prune_chain()) == ["d2:1.0", "c2:1.0"]


def test_images_in_state_rejects_unknown_states(chain_tree):
    builder = scanned(chain_tree, TREE_CONFIG)
    assert len(builder.images_in_state(ImageFSM.STATE_TO_BUILD)) == 7
    with pytest.raises(ValueError):
        builder.images_in_state("nope")


def test_update_bumps_the_image_and_its_descendants_like_docker_pkg(chain_tree, monkeypatch):
    monkeypatch.setenv("DEBFULLNAME", "Up Dater")
    monkeypatch.setenv("DEBEMAIL", "up@example.org")
    builder = DockerBuilder(chain_tree, TREE_CONFIG, "*beta-lib:*", pull=False)
    builder.scan(inspect=False)
    to_update = builder.images_to_update()
    assert sorted(i.short_name for i in to_update) == ["beta-app", "beta-cli", "beta-lib"]
    builder.update_images(to_update, "Security fix", "beta-lib", version="0.9.1-1")
    versions = {d.name: read_spec(d).version for d in chain_tree.iterdir() if d.is_dir()}
    assert versions == {
        "alpha-base": "1.0.0-1", "alpha-tools": "2.1.0-1", "alpha-app": "3.0.0-2",
        "beta-base": "1.4.2-1", "beta-lib": "0.9.1-1", "beta-app": "5.0.0-1-s1", "beta-cli": "5.0.0-1-s1",
    }
    child_log = (chain_tree / "beta-app" / "changelog").read_text()
    assert "Refresh for update in parent image beta-lib:" in child_log and "Security fix" in child_log
    # Children's FROM lines follow the new parent version on the next scan.
    rescanned = scanned(chain_tree, TREE_CONFIG)
    app = next(i for i in rescanned.all_images if i.short_name == "beta-app")
    assert app.render_dockerfile().startswith("FROM registry.example.org/ns/beta-lib:0.9.1-1\n")


def test_no_registry_disables_pulling(chain_tree, caplog):
    builder = DockerBuilder(chain_tree, {"registry": None})
    assert builder.pull is False
    assert "no registry is defined" in caplog.text
