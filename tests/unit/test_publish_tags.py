"""The tags after the first push move in the registry (manifest put), not by more daemon pushes.

A registry client that can put manifests (the pipeline's ``RegistryClient``) gets the
other tags of an image it holds by its manifest put again under each: one daemon push per
image. A registry that cannot (only ``manifest_digest``) still gets one push per tag. The
fake engine and registry of the decision table (``test_pipeline_decisions``) stand in,
with manifests added.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pipeline_decisions import REPO, FakeEngine, FakeRegistry, _sha, content, plan  # noqa: E402,F401 - plan is a fixture

from prefect_flyimage import pipeline  # noqa: E402
from prefect_flyimage import errors  # noqa: E402
from prefect_flyimage.errors import PushError, PushUnavailableError, RegistryUnavailable  # noqa: E402
from prefect_flyimage.names import ImageRef  # noqa: E402


@dataclass
class ManifestRegistry(FakeRegistry):
    """The fake registry with manifest bodies: ``get_manifest``/``put_manifest`` as ``RegistryClient``'s."""

    bodies: dict[str, bytes] = field(default_factory=dict)  # digest -> body
    #: a put reports this digest instead of the body's (a registry that rewrote it)
    put_reports: Optional[str] = None
    manifests_down: bool = False  #: manifest gets and puts find the registry unreachable
    #: a put answers as the registry client does for this HTTP status (403: pull-only credentials)
    put_status: Optional[int] = None

    def _check_manifests(self) -> None:
        self._check()
        if self.manifests_down:
            raise RegistryUnavailable("registry 127.0.0.1:5000 is unreachable: connection reset", "127.0.0.1:5000")

    def put(self, ref: str, image) -> str:  # a daemon push: the body is the image's manifest
        digest = super().put(ref, image)
        self.bodies[digest] = f"manifest of {image.id}".encode()
        return digest

    def get_manifest(self, ref: str) -> Optional[tuple[bytes, str, str]]:
        self.calls.append(f"get {ref}")
        self._check_manifests()
        digest = ImageRef.parse(ref).digest or self.tags.get(ref)
        body = self.bodies.get(digest or "")
        return (body, "application/vnd.docker.distribution.manifest.v2+json", digest) if body is not None else None

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        self.calls.append(f"put {repository}:{reference}")
        self._check_manifests()
        if self.put_status == 403:
            raise errors.AuthenticationError(f"registry 127.0.0.1:5000 refused the credentials of user 'u' for {repository}:{reference} (HTTP 403)", "127.0.0.1:5000")
        if self.put_status is not None:
            raise errors.RegistryError(f"registry 127.0.0.1:5000 answered HTTP {self.put_status} for {repository}:{reference}", "127.0.0.1:5000")
        digest = _sha(body.decode())
        self.tags[f"{REPO}:{reference}"] = digest
        return self.put_reports or digest


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine(ManifestRegistry())


def _chain_publish(plan, fake: FakeEngine, **kw):
    """What the tree's ``ImageFSM.publish`` does after its own build: content tag, latest, version."""
    return pipeline.push_local(
        REPO, [plan.content_tag, "latest", "v1"], plan_hash=plan.hash, force=True, engine=fake, registry=fake.registry, **kw
    )


def test_one_daemon_push_then_the_other_tags_move_in_the_registry(plan, fake):
    image = fake.add_image(content(plan), plan.hash)
    result = _chain_publish(plan, fake)
    assert fake.did("push") == [f"push {content(plan)}"]  # the content tag only
    assert [c for c in fake.registry.calls if c.startswith("put ")] == [f"put team/app:{t}" for t in ("latest", "v1")]
    assert [c for c in fake.registry.calls if c.startswith("get ")] == [f"get {REPO}@{result.digest}"]  # fetched once
    assert {fake.registry.tags[f"{REPO}:{t}"] for t in (plan.content_tag, "latest", "v1")} == {result.digest}
    assert result.pushed and result.image_id == image.id
    assert {fake.local_image(f"{REPO}:{t}").id for t in ("latest", "v1")} == {image.id}  # the daemon has every tag too


def test_a_half_finished_publish_gets_only_its_missing_tag_moved(plan, fake):
    image = fake.add_image(content(plan), plan.hash)
    digest = fake.push(content(plan))
    fake.registry.tags[f"{REPO}:latest"] = digest
    fake.calls.clear()
    result = _chain_publish(plan, fake)
    assert result.digest == digest and fake.did("push") == [] and fake.did("pull") == []
    assert [c for c in fake.registry.calls if c.startswith("put ")] == ["put team/app:v1"]
    assert fake.registry.tags[f"{REPO}:v1"] == digest and result.image_id == image.id


def test_a_plain_publish_pushes_its_first_tag_and_moves_the_rest(fake):
    image = fake.add_image(f"{REPO}:v1", None)
    digest = pipeline.publish(fake, image.id, REPO, ["v1", "latest"], registry=fake.registry)
    assert fake.did("push") == [f"push {REPO}:v1"]
    assert fake.registry.tags[f"{REPO}:latest"] == digest == fake.registry.tags[f"{REPO}:v1"]


def test_a_registry_without_manifest_puts_gets_a_push_per_tag(plan):
    fake = FakeEngine(FakeRegistry())
    fake.add_image(content(plan), plan.hash)
    _chain_publish(plan, fake)
    assert fake.did("push") == [f"push {REPO}:{t}" for t in (plan.content_tag, "latest", "v1")]


def test_an_outage_while_moving_a_tag_is_a_push_outage(plan, fake):
    fake.add_image(content(plan), plan.hash)
    fake.registry.manifests_down = True
    with pytest.raises(PushUnavailableError, match="latest"):
        _chain_publish(plan, fake)
    assert fake.did("push") == [f"push {content(plan)}"]


def test_a_moved_tag_the_registry_stores_as_another_digest_raises(plan, fake):
    fake.add_image(content(plan), plan.hash)
    fake.registry.put_reports = _sha("something else")
    with pytest.raises(PushError, match="latest"):
        _chain_publish(plan, fake)


@pytest.mark.parametrize("status, error", [(403, errors.PushAuthenticationError), (400, PushError)])
def test_a_refused_tag_move_is_the_push_s_error(plan, fake, status, error):
    # Credentials that may pull but not push, or a registry that refuses the manifest: the
    # push failed, as a daemon push of the tag would have said.
    fake.add_image(content(plan), plan.hash)
    fake.registry.put_status = status
    with pytest.raises(error, match=r"latest,v1") as raised:
        _chain_publish(plan, fake)
    assert isinstance(raised.value.__cause__, (errors.AuthenticationError if status == 403 else errors.RegistryError))
