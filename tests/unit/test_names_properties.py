"""Property tests: ``ImageRef`` accepts exactly the Distribution reference grammar, and round-trips.

The oracle is written from distribution/reference's ``regexp.go`` (the grammar Docker and
registries use) plus the two checks ``reference.Parse`` adds on top of the regular
expression: the name is at most ``NameTotalLengthMax`` (255) characters, and a digest of a
registered algorithm (go-digest: sha256/sha384/sha512) has exactly its length of lower-case
hex. Go's ``\\w`` and ``[[:xdigit:]]`` are ASCII-only, hence ``re.ASCII``.

Valid references are generated from the grammar, then mutated (characters inserted,
deleted, replaced with ones that matter to the grammar), and ``ImageRef.parse`` must
accept a string exactly when the oracle does.
"""

from __future__ import annotations

import re
from typing import Optional

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from prefect_flyimage.errors import InvalidReferenceError
from prefect_flyimage.names import NAME_TOTAL_LENGTH_MAX, TAG_LENGTH_MAX, ImageRef

# ---- the oracle: distribution/reference regexp.go ------------------------------------------

alphanumeric = r"[a-z0-9]+"
separator = r"(?:[._]|__|[-]+)"
localhost = r"localhost"
domain_name_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
optional_port = r"(?::[0-9]+)?"
tag = r"[\w][\w.-]{0,127}"
digest_pat = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}"  # [[:xdigit:]]
ipv6address = r"\[(?:[a-fA-F0-9:]+)\]"
domain_name = domain_name_component + r"(?:\." + domain_name_component + r")*"
host = r"(?:" + domain_name + r"|" + ipv6address + r")"
domain_and_port = host + optional_port
path_component = alphanumeric + r"(?:" + separator + alphanumeric + r")*"
remote_name = path_component + r"(?:/" + path_component + r")*"
name_pat = r"(?:" + domain_and_port + r"/)?" + remote_name
reference_pat = r"(" + name_pat + r")(?::(" + tag + r"))?(?:@(" + digest_pat + r"))?"

REFERENCE = re.compile(reference_pat, re.ASCII)
# go-digest's registered algorithms: exact length, lower-case hex (digest.Parse in reference.Parse).
REGISTERED = {"sha256": 64, "sha384": 96, "sha512": 128}


def oracle(text: str) -> Optional[tuple[str, Optional[str], Optional[str]]]:
    """``(name, tag, digest)`` if reference.Parse accepts ``text``, else ``None``."""
    m = REFERENCE.fullmatch(text)
    if m is None:
        return None
    name, tag_, digest = m.group(1), m.group(2), m.group(3)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        return None
    if digest is not None:
        algorithm, _, encoded = digest.partition(":")
        size = REGISTERED.get(algorithm)
        if size is not None and not re.fullmatch(f"[a-f0-9]{{{size}}}", encoded):
            return None
    return name, tag_, digest


def check(text: str) -> None:
    """ImageRef agrees with the oracle on ``text``; accepted text round-trips."""
    expected = oracle(text)
    try:
        ref = ImageRef.parse(text)
    except InvalidReferenceError as exc:
        assert expected is None, f"{text!r} is valid per the grammar but was refused: {exc}"
        return
    assert expected is not None, f"{text!r} is invalid per the grammar but was accepted as {ref!r}"
    assert (ref.name, ref.tag, ref.digest) == expected
    assert str(ref) == text
    again = ImageRef.parse(str(ref))
    assert again == ref and str(again) == text


# ---- generators ----------------------------------------------------------------------------

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
alnum = st.text(ALNUM, min_size=1, max_size=8)
sep = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def path_components(draw) -> str:
    parts = [draw(alnum)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(sep), draw(alnum)]
    return "".join(parts)


@st.composite
def domains(draw) -> str:
    label = st.from_regex(re.compile(domain_name_component, re.ASCII), fullmatch=True).filter(lambda s: len(s) <= 12)
    kind = draw(st.sampled_from(["name", "ipv4", "ipv6", "localhost"]))
    if kind == "localhost":
        text = "localhost"
    elif kind == "ipv4":
        text = ".".join(str(draw(st.integers(0, 255))) for _ in range(4))
    elif kind == "ipv6":
        text = "[" + draw(st.text("0123456789abcdefABCDEF:", min_size=1, max_size=12)) + "]"
    else:
        text = ".".join(draw(st.lists(label, min_size=1, max_size=3)))
        if "." not in text and text != "localhost" and not draw(st.booleans()):
            text += ".io"  # mostly domain-looking; sometimes a bare label (then a port follows)
    if draw(st.booleans()) or ("." not in text and not text.startswith("[") and text != "localhost"):
        text += ":" + str(draw(st.integers(1, 65535)))
    return text


tags = st.from_regex(re.compile(tag, re.ASCII), fullmatch=True)
registered_digests = st.sampled_from(sorted(REGISTERED.items())).flatmap(
    lambda kv: st.text("0123456789abcdef", min_size=kv[1], max_size=kv[1]).map(lambda hexd: f"{kv[0]}:{hexd}")
)
other_digests = st.from_regex(re.compile(digest_pat, re.ASCII), fullmatch=True).filter(lambda d: len(d) < 120)


@st.composite
def references(draw) -> str:
    """Strings of the grammar (not always within the length limit)."""
    path = "/".join(draw(st.lists(path_components(), min_size=1, max_size=4)))
    text = f"{draw(domains())}/{path}" if draw(st.booleans()) else path
    if draw(st.booleans()):
        text += ":" + draw(tags)
    if draw(st.integers(0, 3)) == 0:
        text += "@" + draw(st.one_of(registered_digests, other_digests))
    return text


# Characters that matter to the grammar, and some that never belong.
MUTATION_CHARS = "aZ09-_.:/@[]!é \n\t+"


@st.composite
def mutated(draw) -> str:
    text = draw(references())
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        c = draw(st.sampled_from(MUTATION_CHARS))
        if op == "insert":
            text = text[:i] + c + text[i:]
        elif op == "delete" and text:
            text = text[: max(i - 1, 0)] + text[i:]
        elif op == "replace" and i < len(text):
            text = text[:i] + c + text[i + 1 :]
        elif op == "duplicate":
            text = text[:i] + text[i:] + text[i:]  # repeats a suffix: ':tag:tag', '@d@d', '//'
    return text


PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- properties ----------------------------------------------------------------------------


@PROPERTY
@given(references())
@example("Org/app")  # an upper-case first component is a domain
@example("a_b.c/app")  # looks like a domain, is a valid path
@example("localhost:5000")  # a name and a tag, not a host
@example("[::1]:5000/app:v1")
def test_generated_references_agree_with_the_grammar(text):
    check(text)


@PROPERTY
@given(mutated())
@example("a" * 40 + "!")  # exponential backtracking in an earlier pattern
@example("app:tag:tag")
@example("app@sha256:" + "A" * 64)
def test_mutated_references_agree_with_the_grammar(text):
    check(text)


@PROPERTY
@given(st.text(MUTATION_CHARS + "bcx1", max_size=40))
def test_arbitrary_text_agrees_with_the_grammar(text):
    check(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # from_regex is slow
@given(st.from_regex(REFERENCE, fullmatch=True))
def test_the_grammar_regex_itself_generates_accepted_references(text):
    check(text)


@PROPERTY
@given(st.integers(1, 40), path_components(), st.sampled_from([None, "ghcr.io", "127.0.0.1:5000"]))
def test_name_length_limit(extra, component, registry):
    prefix = f"{registry}/" if registry else ""
    # Pad to exactly the limit, then one character past it (the limit is on registry/path).
    base = prefix + component + "/"
    fill = NAME_TOTAL_LENGTH_MAX - len(base)
    at_limit = base + "a" * fill
    assert len(at_limit) == NAME_TOTAL_LENGTH_MAX
    check(at_limit)
    assert ImageRef.parse(at_limit + ":t").name == at_limit
    over = at_limit + "b" * extra
    with pytest.raises(InvalidReferenceError) as info:
        ImageRef.parse(over)
    if registry or "." not in component:  # else the first component is first reported as a bad host
        assert "at most 255" in str(info.value)
    check(over)


@PROPERTY
@given(st.integers(0, 5))
def test_tag_length_limit(extra):
    check("app:" + "t" * (TAG_LENGTH_MAX - extra))
    check("app:" + "t" * (TAG_LENGTH_MAX + 1 + extra))
    with pytest.raises(InvalidReferenceError, match="at most 128"):
        ImageRef.parse("app:" + "t" * (TAG_LENGTH_MAX + 1 + extra))
