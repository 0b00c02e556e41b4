"""Unit tests for prefect_flyimage.names (image reference grammar)."""

from __future__ import annotations

import pytest

from prefect_flyimage.errors import InvalidReferenceError
from prefect_flyimage.names import (
    ImageRef,
    join_image_tag,
    parse_image_tag,
    split_repository_path,
    validate_digest,
    validate_registry,
    validate_repository,
    validate_tag,
)

SHA = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, registry, repository, tag, digest",
    [
        ("busybox", None, "busybox", None, None),
        ("busybox:1.36", None, "busybox", "1.36", None),
        ("library/busybox:latest", None, "library/busybox", "latest", None),
        ("docker.io/library/busybox", "docker.io", "library/busybox", None, None),
        ("prefecthq/prefect:3-latest", None, "prefecthq/prefect", "3-latest", None),
        ("localhost:5000/app:1", "localhost:5000", "app", "1", None),
        ("localhost/app", "localhost", "app", None, None),
        ("localhost:5000", None, "localhost", "5000", None),  # tag, not a port: no '/'
        ("hostname.io:5050/folder/subfolder:latest", "hostname.io:5050", "folder/subfolder", "latest", None),
        ("Registry.Example.COM/org/app", "Registry.Example.COM", "org/app", None, None),
        ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", None, None),
        ("[::1]:5000/app:v1", "[::1]:5000", "app", "v1", None),
        ("ghcr.io/org/team/app:v1.2.3_rc-1", "ghcr.io", "org/team/app", "v1.2.3_rc-1", None),
        ("a__b/c.d/e-f/g---h", None, "a__b/c.d/e-f/g---h", None, None),
        (f"app@{SHA}", None, "app", None, SHA),
        (f"ghcr.io/org/app:v1@{SHA}", "ghcr.io", "org/app", "v1", SHA),
        ("app:" + "T" * 128, None, "app", "T" * 128, None),
        ("app@sha512:" + "0" * 128, None, "app", None, "sha512:" + "0" * 128),
        ("app@custom+alg:" + "A" * 32, None, "app", None, "custom+alg:" + "A" * 32),
        ("example.com", None, "example.com", None, None),  # no '/': a repository, not a domain
    ],
)
def test_parse_and_round_trip(text, registry, repository, tag, digest):
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert str(ref) == text
    assert ImageRef.parse(str(ref)) == ref
    assert ref.name == (f"{registry}/{repository}" if registry else repository)


@pytest.mark.parametrize(
    "text, part, value, reason_contains",
    [
        ("", "repository", "", "must not be empty"),
        ("Org/App:1", "repository", "Org/App", "did you mean 'org/app'"),
        ("ghcr.io/MyOrg/app", "repository", "MyOrg/app", "must be lower-case"),
        ("org//app", "repository", "org//app", "empty path component"),
        ("org/app/", "repository", "org/app/", "empty path component"),
        ("/app", "repository", "/app", "empty path component"),
        ("org/-app", "repository", "org/-app", "bad component '-app'"),
        ("org/app_", "repository", "org/app_", "bad component 'app_'"),
        ("org/a___b", "repository", "org/a___b", "bad component"),
        ("a:b:c", "repository", "a:b", "only one ':tag'"),
        ("x/" + "a" * 254, "repository", "x/" + "a" * 254, "at most 255"),
        ("my_host:5000/app", "registry", "my_host:5000", "host[:port]"),
        ("localhost:port/app", "registry", "localhost:port", "host[:port]"),
        ("-bad.io/app", "registry", "-bad.io", "host[:port]"),
        ("app:bad tag!", "tag", "bad tag!", "may contain only"),
        ("app:", "tag", "", "must not be empty"),
        ("app:-x", "tag", "-x", "must not start"),
        ("app:.x", "tag", ".x", "must not start"),
        ("app:" + "a" * 129, "tag", "a" * 129, "at most 128"),
        ("app:café", "tag", "café", "may contain only"),  # Unicode \w is not Docker's \w
        ("app@sha256:abc", "digest", "sha256:abc", "exactly 64"),
        ("app@sha256:" + "AB" * 32, "digest", "sha256:" + "AB" * 32, "lower-case hex"),
        ("app@", "digest", "", "must look like"),
        ("app@" + "ab" * 32, "digest", "ab" * 32, "must look like"),
        ("app@1sha:" + "a" * 32, "digest", "1sha:" + "a" * 32, "must look like"),
        ("app@md5:abcd", "digest", "md5:abcd", "at least 32"),
        (f"app@{SHA}@{SHA}", "digest", f"{SHA}@{SHA}", "exactly 64"),
    ],
)
def test_parse_errors_name_the_part(text, part, value, reason_contains):
    with pytest.raises(InvalidReferenceError) as info:
        ImageRef.parse(text)
    err = info.value
    assert (err.part, err.value, err.reference) == (part, value, text)
    assert reason_contains in err.reason
    assert isinstance(err, ValueError)
    assert repr(text) in str(err)


def test_parse_rejects_non_strings():
    # A typed error naming the input (was a bare TypeError before issue 14).
    for value in (None, 5, b"app", ["app"]):
        with pytest.raises(InvalidReferenceError, match="must be a str"):
            ImageRef.parse(value)  # type: ignore[arg-type]
    for check in (validate_tag, validate_digest, validate_registry, validate_repository):
        with pytest.raises(InvalidReferenceError, match="must be a str"):
            check(None)  # type: ignore[arg-type]


def test_name_length_limit_is_255_including_registry():
    path = "a" * (255 - len("reg.io/"))
    assert ImageRef.parse(f"reg.io/{path}:t").name == f"reg.io/{path}"
    with pytest.raises(InvalidReferenceError) as info:
        ImageRef.parse(f"reg.io/{path}a")
    assert info.value.part == "repository"


def test_direct_construction_is_validated():
    assert str(ImageRef("ghcr.io", "org/app", "v1", SHA)) == f"ghcr.io/org/app:v1@{SHA}"
    with pytest.raises(InvalidReferenceError) as info:
        ImageRef(None, "Org/App")
    assert info.value.part == "repository"
    with pytest.raises(InvalidReferenceError) as info:
        ImageRef("bad host", "app")
    assert info.value.part == "registry"


def test_frozen():
    ref = ImageRef.parse("app:1")
    with pytest.raises(AttributeError):
        ref.tag = "2"  # type: ignore[misc]
    assert hash(ref) == hash(ImageRef.parse("app:1"))


def test_with_methods_return_validated_copies():
    ref = ImageRef.parse("org/app:1")
    assert str(ref.with_tag("2")) == "org/app:2"
    assert str(ref.with_tag(None)) == "org/app"
    assert str(ref.with_digest(SHA)) == f"org/app:1@{SHA}"
    assert str(ref.with_digest(SHA).with_digest(None)) == "org/app:1"
    assert str(ref.with_registry("localhost:5000")) == "localhost:5000/org/app:1"
    assert str(ref.with_registry("ghcr.io").with_registry(None)) == "org/app:1"
    assert str(ref) == "org/app:1"  # the original is untouched
    with pytest.raises(InvalidReferenceError) as info:
        ref.with_tag("bad tag")
    assert info.value.part == "tag"
    with pytest.raises(InvalidReferenceError) as info:
        ref.with_digest("sha256:xyz")
    assert info.value.part == "digest"
    with pytest.raises(InvalidReferenceError) as info:
        ref.with_registry("no_underscores.io")
    assert info.value.part == "registry"


@pytest.mark.parametrize(
    "text, namespace, basename",
    [
        ("app", None, "app"),
        ("org/app:1", "org", "app"),
        ("ghcr.io/org/app", "ghcr.io/org", "app"),
        ("localhost:5000/app", "localhost:5000", "app"),
        ("a/b/c/d", "a/b", "c/d"),
        (f"reg.io/org/app:1@{SHA}", "reg.io/org", "app"),
    ],
)
def test_namespace_and_basename(text, namespace, basename):
    ref = ImageRef.parse(text)
    assert (ref.namespace, ref.basename) == (namespace, basename)


def test_validate_tag():
    assert validate_tag("v1.2_3-x") == "v1.2_3-x"
    for bad in ["", "-x", "a b", "a:b", "x" * 129]:
        with pytest.raises(InvalidReferenceError) as info:
            validate_tag(bad)
        assert info.value.part == "tag"


def test_validate_repository():
    for good in ["app", "org/app", "ghcr.io/org/app", "localhost:5000/a/b/c"]:
        assert validate_repository(good) == good
    with pytest.raises(InvalidReferenceError) as info:
        validate_repository("Org/App")
    assert info.value.part == "repository" and "did you mean 'org/app'" in info.value.reason
    # An upper-case first component is a registry host for Docker (splitDockerDomain) and
    # the Distribution grammar: valid since issue 14 (was refused as an upper-case path).
    assert validate_repository("Org/app") == "Org/app"
    assert ImageRef.parse("Org/app").registry == "Org"
    for with_extra in ["org/app:1", f"org/app@{SHA}"]:
        with pytest.raises(InvalidReferenceError, match="must not include a tag or digest"):
            validate_repository(with_extra)
    with pytest.raises(InvalidReferenceError) as info:
        validate_repository("bad_host:1/app")
    assert info.value.part == "registry"


def test_validate_digest_and_registry():
    assert validate_digest(SHA) == SHA
    assert validate_registry("localhost:5000") == "localhost:5000"
    with pytest.raises(InvalidReferenceError):
        validate_digest("sha256:" + "a" * 63)
    with pytest.raises(InvalidReferenceError):
        validate_registry("host:")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("prefecthq/prefect:latest", ("prefecthq/prefect", "latest")),
        ("hostname.io:5050/folder/subfolder:latest", ("hostname.io:5050/folder/subfolder", "latest")),
        ("localhost:5000/app", ("localhost:5000/app", None)),
        ("app", ("app", None)),
        # Prefect's documented digest case (issue 15): the digest comes back second.
        (f"app@{SHA}", ("app", SHA)),
        (f"reg.io/org/app:v1@{SHA}", ("reg.io/org/app:v1", SHA)),
    ],
)
def test_parse_image_tag(text, expected):
    name, tag = parse_image_tag(text)
    assert (name, tag) == expected
    # The name is a reference by itself, and join_image_tag gives the input back.
    ImageRef.parse(name)
    assert join_image_tag(name, tag) == text


@pytest.mark.parametrize("bad", ["app:bad tag!", "Org/App", "", "a:b:c", "app@sha256:short"])
def test_parse_image_tag_and_split_raise_on_invalid(bad):
    with pytest.raises(InvalidReferenceError):
        parse_image_tag(bad)
    with pytest.raises(InvalidReferenceError):
        split_repository_path(bad)


def test_split_repository_path_keeps_a_digest_on_the_repository():
    assert split_repository_path(f"org/app@{SHA}") == ("org", f"app@{SHA}")
