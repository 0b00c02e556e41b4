"""A fake Docker engine and registry for the pipeline's decision table.

Only faults that cannot be caused for real on demand are scripted here (another
writer overtaking a push at an exact moment); everything the real engine does is
modelled as state: images in the daemon, tags, and the registry's tag -> digest map.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from prefect_flyimage.engine import LocalImage
from prefect_flyimage.errors import AuthenticationError, BuildError, PushUnavailableError, RegistryUnavailable
from prefect_flyimage.names import ImageRef
from prefect_flyimage.plan import PLAN_LABEL

_ids = itertools.count(1)


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class FakeRegistry:
    """Tag -> manifest digest, plus digest -> image id (what a pull gives back)."""

    tags: dict[str, str] = field(default_factory=dict)
    images: dict[str, LocalImage] = field(default_factory=dict)  # manifest digest -> image
    unreachable: bool = False
    refuse: bool = False
    calls: list[str] = field(default_factory=list)
    #: Called after each push with (ref, digest): lets a test play another writer.
    after_push: Optional[Callable[[str, str], None]] = None

    def _check(self) -> None:
        if self.refuse:
            raise AuthenticationError("registry 127.0.0.1:5000 refused the credentials", "127.0.0.1:5000")
        if self.unreachable:
            raise RegistryUnavailable("registry 127.0.0.1:5000 is unreachable: connection refused", "127.0.0.1:5000")

    def manifest_digest(self, ref: str) -> Optional[str]:
        self.calls.append(f"manifest {ref}")
        self._check()
        return self.tags.get(str(ref))

    def put(self, ref: str, image: LocalImage) -> str:
        digest = _sha(f"manifest of {image.id}")
        self.tags[str(ref)] = digest
        self.images[digest] = image
        return digest


class FakeEngine:
    """The :class:`~prefect_flyimage.engine.EngineProtocol` over in-memory state."""

    def __init__(self, registry: Optional[FakeRegistry] = None) -> None:
        self.registry = registry or FakeRegistry()
        self.images: dict[str, LocalImage] = {}
        self.tags: dict[str, str] = {}  # ref -> image id
        self.calls: list[str] = []
        self.fail_build: Optional[Exception] = None
        self.closed = False

    # -- helpers for tests ---------------------------------------------------------------
    def add_image(self, ref: str, plan_hash: Optional[str], repo_digests: tuple[str, ...] = ()) -> LocalImage:
        image = LocalImage(id=_sha(f"image {next(_ids)}"), labels={PLAN_LABEL: plan_hash} if plan_hash else {}, repo_digests=repo_digests, size=42)
        self.images[image.id] = image
        self.tags[str(ref)] = image.id
        return image

    def did(self, verb: str) -> list[str]:
        return [c for c in self.calls if c.startswith(verb + " ")]

    # -- EngineProtocol ------------------------------------------------------------------
    def local_image(self, ref: Any) -> Optional[LocalImage]:
        self.calls.append(f"inspect {ref}")
        key = str(ref)
        image_id = key if key in self.images else self.tags.get(key)
        return self.images.get(image_id) if image_id else None

    def build(self, plan: Any, tags: Optional[list[str]] = None, stream: Any = None, timeout: Any = None, extra: Any = None) -> str:
        self.calls.append(f"build {plan.repository}")
        if self.fail_build is not None:
            raise self.fail_build
        image = LocalImage(id=_sha(f"image {next(_ids)}"), labels=dict(plan.image_labels), size=42)
        self.images[image.id] = image
        for tag in tags or plan.all_tags:
            self.tags[f"{plan.repository}:{tag}"] = image.id
        return image.id

    def tag(self, image: str, ref: Any) -> None:
        self.calls.append(f"tag {ref}")
        self.tags[str(ref)] = self.tags.get(image, image)

    def push(self, ref: Any, credentials: Any = None, stream: Any = None, timeout: Any = None) -> str:
        self.calls.append(f"push {ref}")
        try:
            self.registry._check()
        except RegistryUnavailable as exc:
            raise PushUnavailableError(str(exc), "127.0.0.1:5000") from None
        image = self.images[self.tags[str(ref)]]
        digest = self.registry.put(str(ref), image)
        r = ImageRef.parse(str(ref))
        self.images[image.id] = LocalImage(image.id, image.labels, (*image.repo_digests, f"{r.name}@{digest}"), size=image.size)
        if self.registry.after_push:
            self.registry.after_push(str(ref), digest)
        return digest

    def pull(self, ref: Any, credentials: Any = None) -> str:
        self.calls.append(f"pull {ref}")
        self.registry._check()
        r = ImageRef.parse(str(ref))
        digest = r.digest or self.registry.tags[str(ref)]
        source = self.registry.images[digest]
        image = LocalImage(source.id, source.labels, (f"{r.name}@{digest}",), size=source.size)
        self.images[image.id] = image
        return image.id

    def registry_digest(self, ref: Any, credentials: Any = None) -> Optional[str]:
        return self.registry.manifest_digest(str(ref))

    def close(self) -> None:
        self.closed = True


def build_error() -> BuildError:
    return BuildError("build of x failed at Step 2/2 : RUN false: exit 1", step="Step 2/2 : RUN false")


# ---- the decision table of ensure -----------------------------------------------------------

import pytest  # noqa: E402

from prefect_flyimage import pipeline  # noqa: E402
from prefect_flyimage.engine import EngineProtocol  # noqa: E402
from prefect_flyimage.errors import PushError  # noqa: E402
from prefect_flyimage.plan import BuildPlan  # noqa: E402

REPO = "127.0.0.1:5000/team/app"


@pytest.fixture
def plan(tmp_path, monkeypatch) -> BuildPlan:
    monkeypatch.setenv("PREFECT_FLYIMAGE_CACHE_DIR", str(tmp_path / "cache"))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY app.txt /\n")
    (ctx / "app.txt").write_text("v1\n")
    return BuildPlan.from_dockerfile(ctx, REPO)


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


def ensure(plan: BuildPlan, fake: FakeEngine, **kw: Any):
    return pipeline.ensure(plan, engine=fake, registry=fake.registry, **kw)


def content(plan: BuildPlan) -> str:
    return str(plan.content_ref)


def test_fake_is_an_engine(fake):
    assert isinstance(fake, EngineProtocol)


def test_registry_holds_it_nothing_else_is_asked(plan, fake):
    image = fake.add_image("elsewhere:1", plan.hash)
    digest = fake.registry.put(content(plan), image)
    result = ensure(plan, fake)
    assert result.cached and result.digest == digest and result.image_id is None
    assert fake.calls == []  # not one daemon call
    assert fake.registry.calls == [f"manifest {content(plan)}"]  # one registry request


def test_registry_holds_content_tag_only_the_other_tags_are_added(plan, fake):
    plan = plan.with_(tag="v1", extra_tags=("latest",))
    image = fake.add_image(content(plan), plan.hash)
    digest = fake.push(content(plan))
    fake.calls.clear()
    result = ensure(plan, fake)
    assert not result.built and result.pushed and result.digest == digest and result.image_id == image.id
    assert fake.did("push") == [f"push {REPO}:v1", f"push {REPO}:latest"]  # not the content tag again
    assert fake.did("build") == [] and fake.did("pull") == []
    assert {fake.registry.tags[f"{REPO}:{t}"] for t in ("v1", "latest", plan.content_tag)} == {digest}


def test_registry_holds_content_tag_only_and_daemon_lacks_it_pulls(plan, fake):
    plan = plan.with_(tag="v1")
    source = LocalImage(id=_sha("registry image"), labels={PLAN_LABEL: plan.hash}, size=7)
    digest = fake.registry.put(content(plan), source)
    result = ensure(plan, fake)
    assert fake.did("pull") == [f"pull {REPO}@{digest}"] and fake.did("build") == []
    assert result.image_id == source.id and result.digest == digest and fake.registry.tags[f"{REPO}:v1"] == digest


def test_registry_content_tag_with_a_foreign_image_is_not_adopted(plan, fake):
    plan = plan.with_(tag="v1")
    fake.registry.put(content(plan), LocalImage(id=_sha("foreign"), labels={PLAN_LABEL: "0" * 64}))
    with pytest.raises(PushError, match="not built from plan"):
        ensure(plan, fake)
    assert f"{REPO}:v1" not in fake.registry.tags


def test_daemon_holds_it_no_build_then_push(plan, fake):
    image = fake.add_image(content(plan), plan.hash)
    result = ensure(plan, fake)
    assert not result.built and result.pushed and result.image_id == image.id
    assert fake.did("build") == [] and fake.did("push") == [f"push {content(plan)}"]
    assert result.digest == fake.registry.tags[content(plan)]


def test_daemon_image_with_the_tag_but_another_plan_is_rebuilt(plan, fake):
    fake.add_image(content(plan), "f" * 64)
    result = ensure(plan, fake, push=False)
    assert result.built and fake.did("build") == [f"build {REPO}"]


def test_push_false_daemon_holds_it(plan, fake):
    image = fake.add_image(content(plan), plan.hash)
    result = ensure(plan, fake, push=False)
    assert not result.built and not result.pushed and result.image_id == image.id and result.size == 42
    assert fake.registry.calls == []  # the registry is not asked without a push


def test_neither_builds_and_pushes(plan, fake):
    result = ensure(plan, fake)
    assert result.built and result.pushed
    assert fake.registry.tags[content(plan)] == result.digest
    assert fake.images[result.image_id].built_from(plan.hash)


def test_force_rebuilds_and_repushes(plan, fake):
    image = fake.add_image(content(plan), plan.hash)
    fake.push(content(plan))
    fake.calls.clear()
    fake.registry.calls.clear()
    result = ensure(plan, fake, force=True)
    assert result.built and result.pushed and result.image_id != image.id
    assert fake.did("build") == [f"build {REPO}"]
    assert fake.registry.tags[content(plan)] == result.digest


def test_registry_unreachable_fails_closed(plan, fake):
    fake.registry.unreachable = True
    with pytest.raises(RegistryUnavailable):
        ensure(plan, fake)
    assert fake.did("build") == [f"build {REPO}"]  # the check failed closed: built
    assert content(plan) not in fake.registry.tags


def test_auth_refused_raises_before_building(plan, fake):
    fake.registry.refuse = True
    with pytest.raises(AuthenticationError):
        ensure(plan, fake)
    assert fake.did("build") == []


def test_verify_failure_stops_before_push(plan, fake):
    seen = []

    def verify(image_id: str) -> None:
        seen.append(image_id)
        raise RuntimeError("test.sh failed")

    with pytest.raises(RuntimeError, match="test.sh failed"):
        ensure(plan, fake, verify=verify)
    assert len(seen) == 1 and fake.did("push") == [] and fake.registry.tags == {}


def test_verify_runs_on_the_daemons_image_too(plan, fake):
    image = fake.add_image(content(plan), plan.hash)
    seen = []
    result = ensure(plan, fake, push=False, verify=seen.append)
    assert seen == [image.id] and not result.built


def test_build_failure_pushes_nothing(plan, fake):
    fake.fail_build = build_error()
    with pytest.raises(BuildError):
        ensure(plan, fake)
    assert fake.did("push") == []


def test_push_overtaken_by_another_build_of_the_plan_adopts_it(plan, fake):
    plan = plan.with_(tag="v1")
    other = LocalImage(id=_sha("other writer"), labels={PLAN_LABEL: plan.hash}, size=9)

    def overtake(ref: str, digest: str) -> None:
        if ref == content(plan) and fake.registry.after_push is not None:
            fake.registry.after_push = None
            fake.registry.put(content(plan), other)  # the other writer's push lands right after ours

    fake.registry.after_push = overtake
    result = ensure(plan, fake)
    theirs = fake.registry.tags[content(plan)]
    assert result.digest == theirs and result.image_id == other.id  # id and digest belong together
    assert fake.registry.tags[f"{REPO}:v1"] == theirs
    assert fake.did("pull") == [f"pull {REPO}@{theirs}"]


def test_push_confirmation_mismatch_on_a_plain_publish_raises(fake):
    image = fake.add_image(f"{REPO}:v1", None)

    def vanish(ref: str, digest: str) -> None:
        fake.registry.tags.pop(ref)

    fake.registry.after_push = vanish
    with pytest.raises(PushError, match="registry reports nothing"):
        pipeline.publish(fake, image.id, REPO, ["v1"], registry=fake.registry)


def test_observe_is_typed_and_asks_only_what_is_needed(plan, fake):
    plan = plan.with_(tag="v1")
    image = fake.add_image(content(plan), plan.hash)
    digest = fake.push(content(plan))
    seen = pipeline.observe(plan, engine=fake, registry=fake.registry)
    assert seen.local == fake.images[image.id] and seen.remote_digest == digest
    assert seen.tag_digests == {"v1": None} and seen.stale_tags == ("v1",) and not seen.published
    fake.calls.clear()
    remote_only = pipeline.observe(plan, engine=fake, registry=fake.registry, local=False)
    assert remote_only.local is None and fake.calls == []


def test_push_local_skips_when_registry_holds_this_image(fake):
    image = fake.add_image(f"{REPO}:v1", None)
    first = pipeline.push_local(REPO, ["v1", "latest"], engine=fake, registry=fake.registry)
    assert first.pushed and fake.registry.tags[f"{REPO}:latest"] == first.digest
    again = pipeline.push_local(REPO, ["v1", "latest"], engine=fake, registry=fake.registry)
    assert not again.pushed and again.digest == first.digest and again.image_id == image.id


def test_push_local_with_plan_hash_skips_without_the_daemon(plan, fake):
    image = fake.add_image(content(plan), plan.hash)
    first = pipeline.push_local(REPO, [plan.content_tag], plan_hash=plan.hash, engine=fake, registry=fake.registry)
    assert first.pushed and first.image_id == image.id
    fake.calls.clear()
    again = pipeline.push_local(REPO, [plan.content_tag], plan_hash=plan.hash, engine=fake, registry=fake.registry)
    assert not again.pushed and again.digest == first.digest and fake.calls == []


def test_an_own_engine_is_closed(plan, fake, monkeypatch):
    made = []

    class Tracked(FakeEngine):
        def __init__(self) -> None:
            super().__init__(fake.registry)
            made.append(self)

    from prefect_flyimage import _observe

    monkeypatch.setattr(_observe, "Engine", Tracked)
    pipeline.ensure(plan, registry=fake.registry, push=False)
    assert len(made) == 1 and made[0].closed
