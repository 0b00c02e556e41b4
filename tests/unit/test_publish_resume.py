"""A half-finished publish (content tag pushed, the other tags not) is finished, never redone.

A build host that dies between pushing the content tag and the version tag leaves the
registry holding the plan's image under its content tag only. Whoever publishes the
plan next (a retry on another host, with its own new build) must adopt that digest and
push only the missing tags: the plan is never published under two digests. The fake
engine and registry of the decision table (``test_pipeline_decisions``) stand in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pipeline_decisions import REPO, FakeEngine, _sha, content, plan  # noqa: E402,F401 - plan is a fixture

from prefect_flyimage import pipeline  # noqa: E402
from prefect_flyimage.engine import LocalImage  # noqa: E402
from prefect_flyimage.errors import PushError  # noqa: E402
from prefect_flyimage.plan import PLAN_LABEL  # noqa: E402


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


def _half_published(plan, fake: FakeEngine, *tags: str) -> tuple[LocalImage, str]:
    """The registry as a dead host left it: its image of ``plan`` under the content tag (and ``tags``)."""
    dead = LocalImage(id=_sha("the dead host's image"), labels={PLAN_LABEL: plan.hash}, size=7)
    digest = fake.registry.put(content(plan), dead)
    for tag in tags:
        fake.registry.tags[f"{REPO}:{tag}"] = digest
    return dead, digest


def _chain_publish(plan, fake: FakeEngine, **kw):
    """What the tree's ``ImageFSM.publish`` does after its own build: content tag, latest, version."""
    return pipeline.push_local(
        REPO, [plan.content_tag, "latest", "v1"], plan_hash=plan.hash, force=True, engine=fake, registry=fake.registry, **kw
    )


def test_retry_with_a_new_build_adopts_the_content_tag_and_pushes_only_the_missing_tags(plan, fake):
    dead, digest = _half_published(plan, fake, "latest")
    rebuilt = fake.add_image(content(plan), plan.hash)  # the retry built the plan again: another image
    result = _chain_publish(plan, fake)
    assert result.digest == digest and result.image_id == dead.id != rebuilt.id
    assert fake.did("pull") == [f"pull {REPO}@{digest}"]
    assert fake.did("push") == [f"push {REPO}:v1"]  # neither the content tag nor latest again
    assert {fake.registry.tags[f"{REPO}:{t}"] for t in (plan.content_tag, "latest", "v1")} == {digest}
    assert fake.local_image(f"{REPO}:v1").id == dead.id  # the daemon's tags name the published image


def test_retry_on_the_host_that_pushed_the_content_tag_pulls_nothing(plan, fake):
    image = fake.add_image(content(plan), plan.hash)
    digest = fake.push(content(plan))  # this daemon pushed it, then the run died
    fake.calls.clear()
    result = _chain_publish(plan, fake)
    assert result.digest == digest and result.image_id == image.id
    assert fake.did("pull") == [] and fake.did("push") == [f"push {REPO}:latest", f"push {REPO}:v1"]


def test_ensure_that_built_while_the_registry_was_unreachable_adopts_on_publish(plan, fake):
    """The check failed closed (registry unreachable: build), the publish finds the content tag."""
    plan = plan.with_(tag="v1")
    dead, digest = _half_published(plan, fake)
    real = fake.registry.manifest_digest
    refused = iter([True])

    def flaky(ref: str):
        if next(refused, False):
            fake.registry.unreachable = True
            try:
                return real(ref)
            finally:
                fake.registry.unreachable = False
        return real(ref)

    fake.registry.manifest_digest = flaky
    result = pipeline.ensure(plan, engine=fake, registry=fake.registry)
    assert fake.did("build") == [f"build {REPO}"]  # built: the registry could not be asked
    assert result.digest == digest and result.image_id == dead.id
    assert fake.did("push") == [f"push {REPO}:v1"] and fake.registry.tags[f"{REPO}:v1"] == digest


def test_a_foreign_image_under_the_content_tag_is_not_adopted_and_nothing_is_pushed(plan, fake):
    fake.registry.put(content(plan), LocalImage(id=_sha("foreign"), labels={PLAN_LABEL: "0" * 64}))
    fake.add_image(content(plan), plan.hash)
    with pytest.raises(PushError, match="not built from plan"):
        _chain_publish(plan, fake)
    assert fake.did("push") == [] and f"{REPO}:v1" not in fake.registry.tags


def test_a_forced_rebuild_replaces_the_digest_it_was_asked_to_replace(plan, fake):
    _, old = _half_published(plan, fake, "latest", "v1")
    rebuilt = fake.add_image(content(plan), plan.hash)
    result = _chain_publish(plan, fake, replace=old)
    assert result.image_id == rebuilt.id and result.digest != old
    assert {fake.registry.tags[f"{REPO}:{t}"] for t in (plan.content_tag, "latest", "v1")} == {result.digest}


def test_a_retried_forced_rebuild_adopts_its_earlier_attempt(plan, fake):
    """The rebuild replaced the old image's content tag, then died; its retry finishes that publish."""
    old = fake.registry.put(content(plan), LocalImage(id=_sha("old image"), labels={PLAN_LABEL: plan.hash}))
    fake.registry.tags[f"{REPO}:v1"] = old
    _, first_attempt = _half_published(plan, fake)  # the first attempt's content tag push
    fake.add_image(content(plan), plan.hash)  # the retry's build
    result = _chain_publish(plan, fake, replace=old)
    assert result.digest == first_attempt != old
    assert fake.did("push") == [f"push {REPO}:latest", f"push {REPO}:v1"]
    assert {fake.registry.tags[f"{REPO}:{t}"] for t in (plan.content_tag, "latest", "v1")} == {first_attempt}


def test_ensure_force_still_replaces_the_registry_image(plan, fake):
    _, old = _half_published(plan, fake)
    result = pipeline.ensure(plan.with_(tag="v1"), force=True, engine=fake, registry=fake.registry)
    assert result.built and result.digest != old and fake.registry.tags[f"{REPO}:v1"] == result.digest


def test_ensure_force_with_replace_pushes_over_only_the_digest_it_replaces(plan, fake):
    plan = plan.with_(tag="v1")
    _, old = _half_published(plan, fake, "v1")
    result = pipeline.ensure(plan, force=True, replace=old, engine=fake, registry=fake.registry)
    assert result.built and result.digest != old
    assert fake.registry.tags[content(plan)] == fake.registry.tags[f"{REPO}:v1"] == result.digest


def test_a_retried_forced_ensure_adopts_its_earlier_attempt(plan, fake):
    """The refresh's forced rebuild pushed the content tag, then failed; its task retry must not publish a third image."""
    plan = plan.with_(tag="v1")
    old = fake.registry.put(content(plan), LocalImage(id=_sha("old image"), labels={PLAN_LABEL: plan.hash}))
    fake.registry.tags[f"{REPO}:v1"] = old
    first, attempt = _half_published(plan, fake)  # the first attempt's content tag
    result = pipeline.ensure(plan, force=True, replace=old, engine=fake, registry=fake.registry)
    assert result.built  # a forced rebuild builds; its publish then finds the earlier attempt
    assert result.digest == attempt and result.image_id == first.id
    assert fake.did("push") == [f"push {REPO}:v1"]
    assert fake.registry.tags[content(plan)] == fake.registry.tags[f"{REPO}:v1"] == attempt
