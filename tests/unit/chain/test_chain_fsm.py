"""ImageFSM identity, transitions and listeners (no Docker needed to reject a transition)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_flyimage.chain import IllegalTransitionError, ImageFSM
from prefect_flyimage.errors import FlyImageError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "chain"


def fsm(config=None, **kw) -> ImageFSM:
    return ImageFSM(FIXTURES / "dockerpkg" / "foo-bar", None, config or {}, inspect=False, **kw)


def test_identity_like_docker_pkg():
    img = fsm()
    assert (img.label, img.name, img.short_name, img.tag) == ("foo-bar:0.0.1", "foo-bar", "foo-bar", "0.0.1")
    img2 = fsm({"registry": "example.org", "namespace": "test"})
    assert img2.label == "example.org/test/foo-bar:0.0.1" and img2.name == "example.org/test/foo-bar"
    assert repr(img) == "ImageFSM(foo-bar:0.0.1, to_build)"
    assert ImageFSM.STATES == ["published", "built", "to_build", "verified", "error"]


@pytest.mark.parametrize(
    "state, action",
    [
        ("published", "build"), ("verified", "build"), ("error", "build"),
        ("to_build", "verify"), ("published", "verify"), ("error", "verify"),
        ("to_build", "publish"), ("built", "publish"), ("published", "publish"), ("error", "publish"),
    ],
)
def test_illegal_transitions_raise_a_typed_error(state, action):
    img = fsm()
    img.state = state
    with pytest.raises(IllegalTransitionError) as info:
        getattr(img, action)()
    err = info.value
    assert isinstance(err, FlyImageError) and isinstance(err, ValueError)
    assert (err.state, err.action) == (state, action)
    assert img.state == state


def test_no_op_transitions():
    img = fsm()
    img.state = ImageFSM.STATE_BUILT
    img.build()  # already built: nothing to do
    img.state = ImageFSM.STATE_VERIFIED
    img.verify()
    assert img.state == ImageFSM.STATE_VERIFIED


def test_publish_without_credentials_is_an_error_state():
    img = fsm({"registry": "example.org"})
    img.state = ImageFSM.STATE_VERIFIED
    img.publish()
    assert img.state == ImageFSM.STATE_ERROR and "username and password" in img.error


def test_state_listeners_hear_every_change_and_bad_states_are_refused():
    img = fsm()
    heard = []
    img.listeners.append(lambda i, old, new: heard.append((old, new)))
    img.state = ImageFSM.STATE_BUILT
    img.state = ImageFSM.STATE_BUILT
    img.state = ImageFSM.STATE_ERROR
    assert heard == [("to_build", "built"), ("built", "error")]
    with pytest.raises(ValueError):
        img.state = "bogus"


def test_all_children_is_loop_safe():
    a, b, c = fsm(), fsm(), fsm()
    a.add_child(b)
    b.add_child(c)
    c.add_child(a)
    assert set(a.all_children()) == {a, b, c}
    assert set(c.all_children()) == {a, b, c}


def test_plan_uses_rendered_text_folder_context_and_parent_hashes(tmp_path):
    cfg = {"base_images": ["test"], "state_dir": str(tmp_path)}
    parent = fsm(cfg)
    child = ImageFSM(FIXTURES / "dockerpkg" / "upstream-version", None, cfg, inspect=False, parents=[parent])
    plan = child.plan
    assert plan.dockerfile_text == child.render_dockerfile()
    assert plan.context == FIXTURES / "dockerpkg" / "upstream-version"
    assert plan.repository == "upstream-version" and plan.tag == "1.63.0-1"
    assert dict(plan.labels)["io.prefect-flyimage.chain.parents"] == f"foo-bar={parent.plan.hash}"
    # Same inputs, same hash; a different parent hash changes the child's hash.
    again = ImageFSM(FIXTURES / "dockerpkg" / "upstream-version", None, cfg, inspect=False, parents=[parent])
    assert again.plan.hash == plan.hash
    orphan = ImageFSM(FIXTURES / "dockerpkg" / "upstream-version", None, cfg, inspect=False)
    assert orphan.plan.hash != plan.hash


def test_version_docker_rejects_is_a_tag_problem():
    from prefect_flyimage.chain import TreeSpecError

    img = ImageFSM(FIXTURES / "dockerpkg" / "foobar-server", None, {"base_images": ["test"]}, inspect=False,
                   renderer=None)
    img.renderer.known_images["foo-bar"] = "foo-bar:0.0.1"
    with pytest.raises(TreeSpecError) as info:
        img.plan
    assert info.value.issues[0].kind == "tag" and "0.0.1~alpha1" in info.value.issues[0].message
