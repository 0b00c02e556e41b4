"""Differential tests: docker-pkg 4.0.4 (own venv) and our chain agree on renders and order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from prefect_flyimage.chain import DockerBuilder, read_config

sys.path.insert(0, str(Path(__file__).parent))
import _dockerpkg_venv  # noqa: E402

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "chain"

TREE = {
    "registry": "registry.example.org", "namespace": "ns", "seed_image": "flyimage/busybox:latest",
    "base_images": ["flyimage/busybox:latest"], "known_uid_mappings": {"root": 0, "nobody": 65534},
}
FILTERS = {
    "registry": "registry.example.org", "namespace": "ns", "apt_options": "-o APT::Get::Assume-Yes=true",
    "base_images": ["registry.example.org/ns/debian:12"],
    "known_uid_mappings": {"root": 0, "www-data": 33, "nobody": 65534},
}
CASES = {
    "dockerpkg-defaults": ("dockerpkg", {"base_images": ["test"]}, None),
    "dockerpkg-proxy": ("dockerpkg", {"base_images": ["test"], "http_proxy": "http://proxy.example:3128", "apt_options": "-q"}, None),
    "dockerpkg-select": ("dockerpkg", {"base_images": ["test"]}, "*server*"),
    "tree": ("tree", TREE, None),
    "tree-select-leaf": ("tree", TREE, "*beta-cli:*"),
    "tree-select-middle": ("tree", TREE, "*alpha-tools*"),
    "filters": ("filters", FILTERS, None),
    "filters-proxy": ("filters", {**FILTERS, "http_proxy": "http://proxy.example:3128"}, None),
}


def ours(directory: Path, configfile: Path, select: str | None) -> dict:
    builder = DockerBuilder(directory, read_config(configfile), select, pull=False)
    builder.scan(inspect=False)
    return {
        "chain": [i.label for i in builder.build_chain],
        "renders": {i.label: i.render_dockerfile() for i in builder.all_images},
        "depends": {i.label: i.depends for i in builder.all_images},
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_renders_and_order_constraints_as_docker_pkg(case, tmp_path, monkeypatch, chain_tree):
    folder, config, select = CASES[case]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # neither side reads a user config
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    directory = chain_tree if folder == "tree" else FIXTURES / folder  # the tree with its test.sh files
    theirs = _dockerpkg_venv.render_tree(directory, configfile, select, xdg=str(tmp_path))
    mine = ours(directory, configfile, select)

    assert mine["renders"] == theirs["renders"]
    assert {k: sorted(v) for k, v in mine["depends"].items()} == {k: sorted(v) for k, v in theirs["depends"].items()}
    assert sorted(mine["chain"]) == sorted(theirs["chain"])
    # Same constraints: in both orders every in-chain parent comes before its child.
    by_name = {label.rsplit("/", 1)[-1].split(":")[0]: label for label in mine["chain"]}
    edges = [(by_name[d], label) for label in mine["chain"] for d in mine["depends"][label] if d in by_name]
    for order in (mine["chain"], theirs["chain"]):
        for parent, child in edges:
            assert order.index(parent) < order.index(child), (parent, child, order)
    if case.startswith("tree"):
        assert edges  # the constraint check is not vacuous
