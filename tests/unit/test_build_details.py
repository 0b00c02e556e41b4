"""The build details section of the artifact (rendering only; the server test is
tests/integration/test_build_artifact.py)."""

from __future__ import annotations

from prefect_flyimage.artifacts import build_result_markdown
from prefect_flyimage.plan import BuildResult

DIGEST = "sha256:" + "1" * 64


def _result(**details):
    return BuildResult("127.0.0.1:5000/a:x", "ab" * 32, digest=DIGEST, built=True, pushed=True, details=details)


def test_no_details_no_section():
    assert "Build of" not in build_result_markdown([BuildResult("r/a:x", "ab" * 32, digest=DIGEST)])


def test_the_run_is_linked_only_with_a_url_and_text_is_escaped():
    run = {"id": "0b1c", "name": "brave-[otter]|x"}
    text = build_result_markdown([_result(built_by=run, platforms=[], provenance=[])])
    assert "- **Built by flow run**: brave-\\[otter\\]\\|x (`0b1c`)" in text
    assert "- **Platforms**: the daemon’s own" in text
    assert "- **Provenance**: none in the registry" in text
    linked = build_result_markdown([_result(built_by={**run, "url": "http://ui:4200/runs/flow-run/0b1c"})])
    assert "[brave-\\[otter\\]\\|x](http://ui:4200/runs/flow-run/0b1c) (`0b1c`)" in linked
    # a URL that could break out of the link is shown as text, not linked
    odd = build_result_markdown([_result(built_by={**run, "url": "javascript:alert(1)"})])
    assert "javascript:" not in odd


def test_provenance_unknown_and_attestations():
    assert "unknown (the registry could not be asked)" in build_result_markdown([_result(provenance=None)])
    text = build_result_markdown([_result(provenance=[{"platform": "linux/arm64", "digest": "sha256:22"}])])
    assert "- **Provenance**: BuildKit attestation `sha256:22` (linux/arm64)" in text
