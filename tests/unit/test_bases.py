"""Base images as plan inputs: FROM parsing, the added hash section, the pinned rewrite (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_flyimage import pipeline
from prefect_flyimage._bases import OFFLINE, external_bases, from_lines, pinned_dockerfile, resolve_plan
from prefect_flyimage.errors import BaseImageUnresolved, SpecError
from prefect_flyimage.plan import BuildPlan

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64

MULTI = """\
# syntax=docker/dockerfile:1
ARG REG=127.0.0.1:5001
ARG BASE=${REG}/team/base:1
ARG UNSET
FROM --platform=linux/amd64 ${BASE} AS build
RUN echo hi
FROM build AS test
FROM scratch AS empty
FROM ${REG}/team/runtime:${UNSET:-2} \\
    AS final
COPY --from=build /x /y
FROM Build
"""


def test_from_lines_apply_args_and_skip_stages_and_scratch():
    lines = from_lines(MULTI)
    assert [(f.image, f.alias, f.external) for f in lines] == [
        ("127.0.0.1:5001/team/base:1", "build", True),
        ("build", "test", False),
        ("scratch", "empty", False),
        ("127.0.0.1:5001/team/runtime:2", "final", True),
        ("Build", None, False),  # stage names are case-insensitive
    ]
    assert lines[0].flags == ("--platform=linux/amd64",)
    assert (lines[3].first, lines[3].last) == (8, 9)  # a continuation line
    assert external_bases(MULTI) == ["127.0.0.1:5001/team/base:1", "127.0.0.1:5001/team/runtime:2"]


def test_build_args_override_defaults_and_later_args_do_not_count():
    assert external_bases(MULTI, {"BASE": "other/img:3", "UNSET": "9"}) == ["other/img:3", "127.0.0.1:5001/team/runtime:9"]
    # An ARG after the first FROM belongs to a stage: it does not change a later FROM.
    text = "ARG V=1\nFROM img:${V}\nARG V=2\nFROM img:${V} AS b\n"
    assert external_bases(text) == ["img:1"]
    with pytest.raises(ValueError, match="NOPE"):
        external_bases("ARG NOPE\nFROM img:${NOPE}\n")


def test_pinned_rewrite_keeps_flags_alias_and_other_lines():
    pins = {"127.0.0.1:5001/team/base:1": A, "127.0.0.1:5001/team/runtime:2": B}
    out = pinned_dockerfile(MULTI, None, pins)
    lines = out.splitlines()
    assert lines[4] == f"FROM --platform=linux/amd64 127.0.0.1:5001/team/base@{A} AS build"
    assert lines[8] == f"FROM 127.0.0.1:5001/team/runtime@{B} AS final"
    assert lines[9] == "COPY --from=build /x /y"  # the continuation became one line; the rest is untouched
    assert out.count("\n") == MULTI.count("\n") - 1
    assert [f.image for f in from_lines(out) if f.external] == [f"127.0.0.1:5001/team/base@{A}", f"127.0.0.1:5001/team/runtime@{B}"]
    # Local ids and offline bases are not pinned; nothing to pin leaves the text as it is.
    assert pinned_dockerfile(MULTI, None, {"127.0.0.1:5001/team/base:1": "local:" + A}) == MULTI
    assert pinned_dockerfile(MULTI, None, {"127.0.0.1:5001/team/base:1": OFFLINE}) == MULTI
    # Build args choose which FROM gets which pin.
    out = pinned_dockerfile(MULTI, {"BASE": "x/y:1"}, {"x/y:1": A})
    assert f"FROM --platform=linux/amd64 x/y@{A} AS build" in out


def _plan(tmp_path: Path, text: str, **kw) -> BuildPlan:
    (tmp_path / "app.txt").write_text("v1\n")
    return BuildPlan(context=tmp_path, dockerfile_text=text, repository="127.0.0.1:5001/team/app", **kw)


def test_bases_enter_the_hash_only_when_present(tmp_path):
    plan = _plan(tmp_path, "FROM 127.0.0.1:5001/team/base:1\n")
    assert plan.bases is None and plan.build_dockerfile_text == plan.dockerfile_text
    assert plan.with_bases(()).hash == plan.hash  # nothing external (FROM scratch): today's hash
    a, b = plan.with_bases((("127.0.0.1:5001/team/base:1", A),)), plan.with_bases((("127.0.0.1:5001/team/base:1", B),))
    assert len({plan.hash, a.hash, b.hash}) == 3
    assert a.build_dockerfile_text == f"FROM 127.0.0.1:5001/team/base@{A}\n"
    assert a.dockerfile_text == plan.dockerfile_text  # the hash input keeps the text as written
    assert a.describe()["bases"] == {"127.0.0.1:5001/team/base:1": A}


def test_resolution_is_opt_in_and_offline_is_recorded(tmp_path, monkeypatch):
    plain = _plan(tmp_path, "FROM 127.0.0.1:5001/team/base:1\nFROM scratch\n")
    assert resolve_plan(plain, None) is plain  # pin_bases off: the plan as given
    planned = plain.with_(pin_bases=True)
    offline = pipeline.resolve_bases(planned)
    assert offline.bases == (("127.0.0.1:5001/team/base:1", OFFLINE),)
    assert resolve_plan(offline, None) is offline  # resolved once
    assert pipeline.resolve_bases(_plan(tmp_path, "FROM scratch\n", pin_bases=True)).bases == ()


def test_bad_from_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="MISSING"):
        pipeline.resolve_bases(_plan(tmp_path, "ARG MISSING\nFROM ${MISSING}\n", pin_bases=True))


def test_an_unreachable_registry_names_the_base(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_FLYIMAGE_OFFLINE_BASES")
    monkeypatch.setenv("PREFECT_FLYIMAGE_REGISTRY_TIMEOUT", "2")
    # A closed port on loopback: refused at once (a real fault, no mock).
    plan = _plan(tmp_path, "FROM 127.0.0.1:9/team/base:1\n", pin_bases=True, pull=True)
    with pytest.raises(BaseImageUnresolved) as info:
        pipeline.resolve_bases(plan)
    assert info.value.base == "127.0.0.1:9/team/base:1" and info.value.registry == "127.0.0.1:9"
    assert "127.0.0.1:9/team/base:1" in str(info.value) and "PREFECT_FLYIMAGE_OFFLINE_BASES" in str(info.value)


def test_offline_bases_are_said_in_the_result_and_the_artifact():
    from prefect_flyimage.artifacts import build_result_markdown
    from prefect_flyimage.plan import BuildResult

    result = BuildResult(reference="127.0.0.1:5001/team/app:abc", plan_hash="0" * 64, bases=(("busybox:1", OFFLINE),))
    assert result.as_dict()["bases"] == {"busybox:1": OFFLINE}
    text = build_result_markdown([result])
    assert "Base `busybox:1` of `127.0.0.1:5001/team/app:abc` was built by tag" in text
    resolved = BuildResult(reference="127.0.0.1:5001/team/app:abc", plan_hash="0" * 64, bases=(("busybox:1", A),))
    assert "built by tag" not in build_result_markdown([resolved.as_dict()])
