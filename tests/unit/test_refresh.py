"""Unit tests of the refresh library: durations, Dockerfile bases, configuration, order, reports."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pendulum
import pytest

from prefect_flyimage.plan import BuildPlan
from prefect_flyimage.refresh import (
    BASE_LABEL,
    BaseDigest,
    CredentialBook,
    EntryShape,
    ImageReport,
    RefreshConfigError,
    RefreshState,
    RegistryLogin,
    base_label,
    entry_order,
    entry_shape,
    external_bases,
    labelled_plan,
    load_config,
    parse_base_label,
    parse_duration,
    stale_reasons,
    summary_markdown,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


# ---- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("P7D", 7 * 86400),
        ("PT36H", 36 * 3600),
        ("p1w", 7 * 86400),
        ("7 days", 7 * 86400),
        ("1 week 2 days", 9 * 86400),
        ("1 week, 2 days and 3 hours", 9 * 86400 + 3 * 3600),
        ("36h", 36 * 3600),
        ("90 minutes", 5400),
        ("1.5 hours", 5400),
        ("1 second", 1),
        (3600, 3600),
    ],
)
def test_parse_duration(text: object, seconds: int) -> None:
    duration = parse_duration(text)
    assert isinstance(duration, pendulum.Duration)
    assert duration.total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "7", "seven days", "7 fortnights", "7 days ago", "P1M", "P1Y", "PT0S", "0 days", True, None, "P"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="max_age"):
        parse_duration(text)


# ---- Dockerfile bases ---------------------------------------------------------------------------


def test_external_bases_simple_and_multistage() -> None:
    text = textwrap.dedent("""\
        # syntax=docker/dockerfile:1
        FROM --platform=$BUILDPLATFORM ghcr.io/astral-sh/uv:0.5 AS uv
        FROM python:3.11-slim AS build
        COPY --from=uv /uv /bin/uv
        RUN --mount=type=cache,target=/root/.cache \\
            --mount=type=bind,from=127.0.0.1:5001/wheels:1,target=/w uv pip install /w/*.whl
        FROM build AS test
        FROM scratch
        COPY --from=build /app /app
        COPY --from=0 /x /x
        COPY --from=busybox:1.36 /bin/sh /bin/sh
        """)
    assert external_bases(text) == [
        "ghcr.io/astral-sh/uv:0.5", "python:3.11-slim", "127.0.0.1:5001/wheels:1", "busybox:1.36",
    ]


def test_external_bases_substitutes_global_args() -> None:
    text = textwrap.dedent("""\
        ARG REGISTRY=127.0.0.1:5001
        ARG TAG
        ARG VARIANT=slim
        FROM ${REGISTRY}/base:${TAG:-latest}
        FROM $REGISTRY/other:3-${VARIANT}
        ARG LATE=ignored
        """)
    assert external_bases(text) == ["127.0.0.1:5001/base:latest", "127.0.0.1:5001/other:3-slim"]
    assert external_bases(text, {"TAG": "2", "VARIANT": "full"}) == [
        "127.0.0.1:5001/base:2", "127.0.0.1:5001/other:3-full",
    ]


def test_external_bases_joins_continuations_and_skips_comments() -> None:
    text = "FROM \\\n  # a comment inside the continuation\n  busybox:1 \\\n  AS one\nFROM one\n"
    assert external_bases(text) == ["busybox:1"]


def test_external_bases_without_a_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="BASE"):
        external_bases("ARG BASE\nFROM ${BASE}\n")
    with pytest.raises(ValueError, match="names no image"):
        external_bases("FROM --platform=linux/amd64\n")


def test_shipped_example_dockerfile_has_the_prefect_base() -> None:
    text = (REPO_ROOT / "flows" / "example" / "deploy.Dockerfile").read_text()
    assert external_bases(text) == ["prefecthq/prefect:3.8.8-python3.11"]


# ---- base labels ------------------------------------------------------------------------------


def test_base_label_round_trip_and_order() -> None:
    bases = [BaseDigest("b.io/x:1", D2, "registry"), BaseDigest("a/local:1", D1, "local")]
    label = base_label(bases)
    assert label == f"a/local:1=local:{D1},b.io/x:1={D2}"
    assert parse_base_label(label) == {"a/local:1": f"local:{D1}", "b.io/x:1": D2}
    assert parse_base_label(None) == {}


def test_labelled_plan_moves_the_content_tag_with_the_base(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    plan = BuildPlan.from_dockerfile(tmp_path, "127.0.0.1:5000/app", labels={"team": "x"})
    one = labelled_plan(plan, [BaseDigest("busybox", D1, "local")])
    again = labelled_plan(plan, [BaseDigest("busybox", D1, "local")])
    two = labelled_plan(plan, [BaseDigest("busybox", D2, "local")])
    assert one.content_tag == again.content_tag
    assert len({plan.content_tag, one.content_tag, two.content_tag}) == 3
    # The digests are the plan's bases (issue 16): hashed, and a derived image label, not a plan label.
    assert dict(two.labels) == {"team": "x"} and two.bases == (("busybox", f"local:{D2}"),)
    assert two.image_labels[BASE_LABEL] == f"busybox=local:{D2}"
    assert labelled_plan(two, []).content_tag == plan.content_tag  # no bases: no label
    assert labelled_plan(one, [BaseDigest("busybox", D1, "local")], no_cache=True).no_cache


# ---- configuration ------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("ARG BASE=127.0.0.1:5001/base:1\nFROM $BASE\n")
    (tmp_path / "images.py").write_text("app = None\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "config.yaml").write_text("registry: 127.0.0.1:5000\n")
    return tmp_path


def write_config(root: Path, text: str) -> Path:
    path = root / "refresh.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_load_config(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REGISTRY", "127.0.0.1:5000")
    monkeypatch.delenv("TEST_UNSET", raising=False)
    config = load_config(write_config(project, """\
        state_file: state/refresh.json
        defaults: {max_age: 7 days}
        registries:
        - {registry: "${TEST_REGISTRY}", username: u, password_env: TEST_PASSWORD}
        - {registry: "https://ghcr.io/acme", block: ghcr}
        images:
        - name: app
          dockerfile: Dockerfile
          context: app
          repository: ${TEST_REGISTRY}/team/app
          tags: [latest]
          build_args: {BASE: "${TEST_UNSET:-127.0.0.1:5001/base:2}"}
          verify: python -c 'import app'
          deployments: [app/prod]
          max_age: PT12H
        - {name: spec, spec: images.py:app, base_source: registry}
        - {name: tools, tree: tree, selection: "*tools*"}
        """))
    app, spec, tools = config.images
    assert config.state_file == project / "state" / "refresh.json"
    assert config.registries == (
        RegistryLogin("127.0.0.1:5000", "u", "TEST_PASSWORD"), RegistryLogin("ghcr.io", None, None, "ghcr"),
    )
    assert (app.kind, app.path, app.context, app.repository) == ("dockerfile", project / "app" / "Dockerfile", project / "app", "127.0.0.1:5000/team/app")
    assert app.tags == ("latest",) and app.build_args == (("BASE", "127.0.0.1:5001/base:2"),)
    assert app.verify == ("python", "-c", "import app") and app.deployments == ("app/prod",)
    assert app.max_age.total_seconds() == 12 * 3600
    assert (spec.kind, spec.path, spec.attribute, spec.base_source) == ("spec", project / "images.py", "app", "registry")
    assert spec.max_age.total_seconds() == 7 * 86400  # from defaults
    assert (tools.kind, tools.path, tools.tree_config, tools.selection) == ("tree", project / "tree", project / "tree" / "config.yaml", "*tools*")
    assert config.entry("spec") is spec


def test_load_config_lists_every_problem(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_UNSET", raising=False)
    path = write_config(project, """\
        colour: blue
        registries:
        - {registry: r.io, username: u, password: hunter2}
        - {registry: s.io, password_env: X}
        images:
        - {name: a, dockerfile: Dockerfile, context: app, repository: "${TEST_UNSET}/a"}
        - {name: b, dockerfile: Missing, context: app, repository: app}
        - {name: c, spec: images.py:app, tree: tree}
        - {name: d, tree: tree, verify: [true], context: app}
        - {name: e, spec: nothing}
        - {name: f, dockerfile: Dockerfile, context: app, repository: r.io/f:1, max_age: soon}
        - {name: f, spec: images.py:app, deployments: [no-slash]}
        """)
    with pytest.raises(RefreshConfigError) as info:
        load_config(path)
    text = str(info.value)
    for expected in (
        "TEST_UNSET not set", "refresh.yaml:1: colour: unknown key", "never write a password", "needs a username",
        "Missing' does not exist", "names no registry", "exactly one of", "'context' only applies",
        "'verify', 'tags' and 'deployments' do not apply", "must be 'file.py:name'", "must not carry a tag",
        "max_age 'soon'", "'flow-name/deployment-name'", "'f' is used more than once",
    ):
        assert expected in text, expected
    assert "hunter2" not in text


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RefreshConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(RefreshConfigError, match="images: list should have at least 1 item"):
        load_config(write_config(tmp_path, "images: []\n"))
    with pytest.raises(RefreshConfigError, match="not valid YAML"):
        load_config(write_config(tmp_path, "images: [\n"))


def test_shipped_refresh_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYIMAGE_REGISTRY", "127.0.0.1:5000/ns")
    config = load_config(REPO_ROOT / "flows" / "refresh.yaml")
    example = config.entry("example")
    assert example.repository == "127.0.0.1:5000/ns/prefect-flyimage-example"
    assert example.deployments == ("hello/example",) and example.verify
    assert config.registries[0].registry == "127.0.0.1:5000" and config.registries[0].password_env


def test_registry_login_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PASSWORD", "s3cret")
    creds = RegistryLogin("127.0.0.1:5000", "u", "TEST_PASSWORD").credentials()
    assert (creds.registry, creds.username, creds.secret) == ("127.0.0.1:5000", "u", "s3cret")
    monkeypatch.delenv("TEST_PASSWORD")
    with pytest.raises(RefreshConfigError, match="TEST_PASSWORD is not set"):
        RegistryLogin("127.0.0.1:5000", "u", "TEST_PASSWORD").credentials()


def test_credential_book(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_flyimage import RegistryCredentials

    local = RegistryCredentials("127.0.0.1:5000", "u", "p1")
    hub = RegistryCredentials("docker.io", "h", "p2")
    book = CredentialBook([local])
    assert book.for_ref("127.0.0.1:5000/a/b:1") is local
    assert book.for_ref("python:3.11") is None
    wider = book.including(hub).including(RegistryCredentials("127.0.0.1:5000", "other", "p3"))
    assert wider.for_ref("python:3.11") is hub and wider.for_ref("127.0.0.1:5000/x") is local
    assert sorted(wider.secrets) == ["p1", "p2"] and "p1" not in repr(wider)
    assert book.for_ref("python") is None  # the original is unchanged


# ---- order ------------------------------------------------------------------------------------


def _entries(project: Path, names: list[str]) -> list:
    lines = ["images:"] + [f"- {{name: {n}, dockerfile: Dockerfile, context: app, repository: 127.0.0.1:5000/{n}}}" for n in names]
    return list(load_config(write_config(project, "\n".join(lines) + "\n")).images)


def test_entry_order_puts_parents_first(project: Path) -> None:
    entries = _entries(project, ["leaf", "other", "mid", "root"])
    shapes = {
        "leaf": EntryShape(frozenset({"r/leaf"}), frozenset({"r/mid"})),
        "other": EntryShape(frozenset({"r/other"}), frozenset({"busybox"})),
        "mid": EntryShape(frozenset({"r/mid"}), frozenset({"r/root", "r/mid"})),  # itself: ignored
        "root": EntryShape(frozenset({"r/root"}), frozenset({"127.0.0.1:5001/base"})),
    }
    order, parents = entry_order(entries, shapes)
    assert [e.name for e in order] == ["root", "mid", "leaf", "other"]
    assert parents == {"leaf": ["mid"], "other": [], "mid": ["root"], "root": []}


def test_entry_order_keeps_the_configuration_order_for_ties(project: Path) -> None:
    entries = _entries(project, ["zeta", "alpha", "child"])
    shapes = {
        "zeta": EntryShape(frozenset({"r/zeta"}), frozenset()),
        "alpha": EntryShape(frozenset({"r/alpha"}), frozenset()),
        "child": EntryShape(frozenset({"r/child"}), frozenset({"r/zeta", "r/alpha"})),
    }
    order, parents = entry_order(entries, shapes)
    assert [e.name for e in order] == ["zeta", "alpha", "child"]
    assert parents["child"] == ["alpha", "zeta"]


def test_entry_order_refuses_cycles(project: Path) -> None:
    entries = _entries(project, ["a", "b"])
    shapes = {
        "a": EntryShape(frozenset({"r/a"}), frozenset({"r/b"})),
        "b": EntryShape(frozenset({"r/b"}), frozenset({"r/a"})),
    }
    with pytest.raises(RefreshConfigError, match="cycle: a -> b -> a"):
        entry_order(entries, shapes)


def test_entry_shape_of_a_dockerfile(project: Path) -> None:
    (entry,) = _entries(project, ["app"])
    assert entry_shape(entry) == EntryShape(frozenset({"127.0.0.1:5000/app"}), frozenset({"127.0.0.1:5001/base"}))


# ---- explanations, state, summary ----------------------------------------------------------------


def test_stale_reasons(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    plan = BuildPlan.from_dockerfile(tmp_path, "127.0.0.1:5000/app")
    bases = [BaseDigest("b:1", D2, "registry"), BaseDigest("c:1", D1, "registry")]
    assert "first check" in stale_reasons(plan, bases, None)[0]
    assert stale_reasons(plan, bases, {"bases": {"b:1": D1, "c:1": D1}}) == [
        "base b:1 changed: sha256:111111111111 → sha256:222222222222"
    ]
    assert stale_reasons(plan, bases, {"bases": {"b:1": D2}}) == ["new base c:1"]
    same = {"bases": {"b:1": D2, "c:1": D1}}
    assert "build inputs changed" in stale_reasons(plan, bases, {**same, "content_tag": "0" * 16})[0]
    assert "missing from the registry" in stale_reasons(plan, bases, {**same, "content_tag": plan.content_tag})[0]


def test_refresh_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    state = RefreshState(path)
    assert state.get("app") is None
    state.record("app", reference="r/app:1", content_tag="1", digest=D1, bases=[BaseDigest("b", D2, "registry")], built_at="2025-01-01T00:00:00+00:00")
    state.save()
    again = RefreshState(path)
    assert again.get("app")["bases"] == {"b": D2} and again.get("app")["built_at"].startswith("2025")
    again.record("app", reference="r/app:1", content_tag="1", digest=D1, bases=[])
    assert again.get("app")["built_at"].startswith("2025")  # same image: its date is kept
    again.record("app", reference="r/app:2", content_tag="2", digest=D2, bases=[])
    assert again.get("app")["built_at"] is None
    path.write_text("{not json")
    assert RefreshState(path).images == {}
    path.write_text(json.dumps({"version": 99, "images": {"x": {}}}))
    assert RefreshState(path).images == {}


def test_summary_markdown() -> None:
    reports = [
        ImageReport("app", "dockerfile", "rebuilt", "r/app:abc", ("base b:1 changed",), {"b:1": D1}, {"b:1": D2}, D1, D2, ("app/prod",)),
        ImageReport("lib|x", "spec", "fresh", "r/lib:def", (), {}, {"c": D1}, D2, D2),
        ImageReport("bad", "dockerfile", "failed", error="login with hunter2 refused\nsecond line"),
        ImageReport("after", "dockerfile", "blocked", error="not checked: bad failed"),
    ]
    text = summary_markdown(reports, config_path="flows/refresh.yaml", secrets=["hunter2"])
    assert text.startswith("## Image refresh: 2 of 4 image(s) stale\n")
    assert "1 rebuilt, 1 fresh, 1 failed, 1 blocked — configuration `flows/refresh.yaml`" in text
    assert "| **app**<br>`r/app:abc` | rebuilt | base b:1 changed<br>deployments updated: `app/prod` |" in text
    assert "`b:1` sha256:111111111111 → sha256:222222222222 | sha256:111111111111 → sha256:222222222222 |" in text
    assert "**lib\\|x**" in text and "| fresh | up to date |" in text
    assert f"- **app** `r/app:abc`: {D1} → {D2}" in text and f"  - base `b:1`: {D1} → {D2}" in text
    assert "hunter2" not in text and "login with *** refused second line" in text
    assert all(line.count("|") >= 6 for line in text.splitlines() if line.startswith("| **"))
    dry = summary_markdown([ImageReport("app", "dockerfile", "stale", reasons=("too old",))], dry_run=True)
    assert "(dry run): 1 of 1" in dry and "1 not rebuilt (dry run)" in dry
    assert ImageReport("x", "tree", "fresh").as_dict()["reasons"] == []
