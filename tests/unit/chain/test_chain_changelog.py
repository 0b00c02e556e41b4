"""Changelog and control parsing (python-debian), version bumps and new entries."""

from __future__ import annotations

import datetime

import pytest
from debian.changelog import Changelog

from prefect_flyimage.chain.changelog import add_entry, new_tag, read_depends, read_spec


def test_read_spec_takes_name_and_version_from_the_newest_entry(make_image):
    folder = make_image("img", "my-image", "1.2.3-1", depends=("a", "b"))
    spec = read_spec(folder)
    assert (spec.name, spec.version, spec.depends, spec.folder) == ("my-image", "1.2.3-1", ("a", "b"), folder)


def test_depends_build_depends_first_multiline_and_version_constraints(tmp_path):
    (tmp_path / "control").write_text(
        "Source: x\nBuild-Depends: builder (>= 1.0),\n tools\n\nPackage: x\nDepends: base, tools,\n"
    )
    assert read_depends(tmp_path) == ("builder", "tools", "base")


def test_no_control_file_means_no_dependencies(tmp_path):
    assert read_depends(tmp_path) == ()


def test_nightly_suffix(make_image):
    folder = make_image("img", version="2.0")
    spec = read_spec(folder, "%Y%m%d", now=datetime.datetime(2025, 3, 4))
    assert spec.version == "2.0-20250304"


def test_malformed_changelog_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "changelog").write_text("this is not a changelog\n")
    with pytest.raises(ValueError, match="changelog"):
        read_spec(tmp_path)


@pytest.mark.parametrize(
    "old, ident, new",
    [("0.1.2", "s", "0.1.2-s1"), ("0.1.2-1-s8", "s", "0.1.2-1-s9"), ("0.1.2-1", "", "0.1.2-2"), ("3.0", "L", "3.0-L1")],
)
def test_new_tag_follows_docker_pkg(old, ident, new):
    assert new_tag(old, ident) == new


def test_new_tag_rejects_versions_it_cannot_bump():
    with pytest.raises(ValueError):
        new_tag("0.1.2-1~wmf2")


def test_add_entry_prepends_a_parseable_block(make_image, monkeypatch):
    monkeypatch.setenv("DEBFULLNAME", "Jane Doe")
    monkeypatch.setenv("DEBEMAIL", "jane@example.org")
    spec = read_spec(make_image("img", version="1.0-1"))
    when = datetime.datetime(2025, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    version = add_entry(spec, "Fix CVE-1\nand more", {"update_id": "s", "distribution": "bookworm"}, when=when)
    assert version == "1.0-1-s1"
    log = Changelog((spec.folder / "changelog").read_text())
    assert [str(b.version) for b in log] == ["1.0-1-s1", "1.0-1"]
    newest = log[0]
    assert newest.package == "img" and newest.distributions == "bookworm" and newest.urgency == "high"
    assert newest.author == "Jane Doe <jane@example.org>"
    assert "   Fix CVE-1" in newest.changes() and "   and more" in newest.changes()
    assert read_spec(spec.folder).version == "1.0-1-s1"


def test_add_entry_with_explicit_version(make_image, monkeypatch):
    monkeypatch.setenv("DEBFULLNAME", "J")
    monkeypatch.setenv("DEBEMAIL", "j@example.org")
    spec = read_spec(make_image("img", version="1.0"))
    assert add_entry(spec, "bump", {}, version="2.0") == "2.0"
    assert read_spec(spec.folder).version == "2.0"
