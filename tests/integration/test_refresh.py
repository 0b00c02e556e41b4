"""The image-refresh flow against the real dockerd, both registries and a Prefect server.

A throwaway base image lives in the no-auth registry. Images built from it — a
Dockerfile project, a descendant built FROM that project's image, a two-image docker-pkg
tree — and a spec image built from a local-only base are kept fresh by the flow: the
first run builds everything, an unchanged world rebuilds nothing, a re-pushed base
rebuilds exactly the images that build on it (descendants included), and the next run is
quiet again.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_flyimage import BuildPlan, Engine, Image, RegistryCredentials, ensure
from prefect_flyimage.engine import choose_backend
from prefect_flyimage.plan import PLAN_LABEL
from prefect_flyimage.refresh import BASE_LABEL, parse_base_label

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prefect_helpers import read_all_logs  # noqa: E402

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
image_refresh = load_flow_from_entrypoint(str(REPO_ROOT / "flows" / "image_refresh.py:image_refresh"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def push_base(root: Path, repository: str, busybox: str, version: str) -> str:
    """Build ``repository:latest`` (busybox plus a version file) and push it; return its digest."""
    write(root / "version", f"{version}\n")
    write(root / "Dockerfile", f"FROM {busybox}\nCOPY version /base-version\n")
    result = ensure(BuildPlan.from_dockerfile(root, repository, tag="latest"))
    assert result.digest
    return result.digest


def run(config: Path, **params: Any) -> tuple[Any, dict[str, dict[str, Any]], str]:
    """Run the flow; return its final state, the reports by image name and the summary
    artifact (followed by every log line of the run, so one ``not in`` checks both for secrets)."""
    state = image_refresh(str(config), return_state=True, **params)
    flow_run_id = state.state_details.flow_run_id

    async def artifact_and_logs() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
            logs = await read_all_logs(client, LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        summary = "\n".join(a.data for a in found if a.key == "image-refresh")
        assert summary, "the run left no image-refresh artifact"
        return summary + "\n--- logs ---\n" + "\n".join(log.message for log in logs)

    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)  # run logs are shipped in batches: send what is still queued
    reports = state.result(raise_on_failure=False)
    by_name = {r["name"]: r for r in reports} if isinstance(reports, list) else {}
    return state, by_name, run_coro_as_sync(artifact_and_logs())


def statuses(reports: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: r["status"] for name, r in reports.items()}


@pytest.fixture
def world(tmp_path: Path, unique_name: str, registry: Any, registry_noauth: Any, busybox_image: str) -> dict[str, Any]:
    """The base, four configured images (a tree of two among them) and their configuration."""
    base_repo = f"{registry_noauth.host}/{unique_name}-base"
    base_v1 = push_base(tmp_path / "base", base_repo, busybox_image, "v1")
    ns = f"{registry.host}/{unique_name}"
    write(tmp_path / "child" / "Dockerfile", f"""\
        ARG BASE={base_repo}:latest
        FROM ${{BASE}}
        COPY child.txt /child.txt
        """)
    write(tmp_path / "child" / "child.txt", "child\n")
    write(tmp_path / "grandchild" / "Dockerfile", f"FROM {ns}/child:latest\nCOPY g.txt /g.txt\n")
    write(tmp_path / "grandchild" / "g.txt", "grandchild\n")
    write(tmp_path / "images.py", f"""\
        from prefect_flyimage import Image

        app = Image.from_base({busybox_image!r}).clone(name="{unique_name}/spec", registry={registry.host!r}).with_env_vars({{"APP": "1"}})
        """)
    tree = tmp_path / "tree"
    write(tree / "config.yaml", f"""\
        registry: "{registry.host}"
        namespace: {unique_name}-tree
        username: {registry.username}
        password: "{registry.password}"
        seed_image: {base_repo}:latest
        state_dir: {tmp_path / 'chain-state'}
        """)
    changelog = "{name} (1.0-1) test; urgency=medium\n\n  * Initial release.\n\n -- Tests <t@example.org>  Mon, 03 Feb 2025 10:00:00 +0000\n"
    write(tree / "troot" / "Dockerfile.template", "FROM {{ seed_image }}\nCOPY motd /motd\n")
    write(tree / "troot" / "motd", "troot\n")
    write(tree / "troot" / "changelog", changelog.format(name="troot"))
    write(tree / "troot" / "test.sh", """\
        #!/bin/bash
        # the image must carry its motd (run with no network)
        set -euo pipefail
        [[ "$(docker run --rm --network none "$1" cat /motd)" == troot ]]
        """).chmod(0o755)
    write(tree / "tleaf" / "Dockerfile.template", 'FROM {{ "troot" | image_tag }}\nCOPY leaf /leaf\n')
    write(tree / "tleaf" / "leaf", "leaf\n")
    write(tree / "tleaf" / "changelog", changelog.format(name="tleaf"))
    write(tree / "tleaf" / "control", "Package: tleaf\nDescription: leaf\nDepends: troot\n")
    # The descendant comes first here: the flow must order it after its parent.
    config = write(tmp_path / "refresh.yaml", f"""\
        state_file: state.json
        registries:
        - registry: {registry.host}
          username: {registry.username}
          password_env: FLYIMAGE_REGISTRY_PASSWORD
        images:
        - name: grandchild
          dockerfile: Dockerfile
          context: grandchild
          repository: {ns}/grandchild
        - name: child
          dockerfile: Dockerfile
          context: child
          repository: {ns}/child
          tags: [latest]
          verify: [cat, /base-version, /child.txt]
        - name: spec
          spec: images.py:app
          max_age: P7D
        - name: tree
          tree: tree
        """)
    return dict(
        root=tmp_path, config=config, base_repo=base_repo, base_v1=base_v1, ns=ns,
        tree_ns=f"{registry.host}/{unique_name}-tree",
    )


def test_refresh_rebuilds_what_builds_on_a_changed_base(world: dict[str, Any], prefect_server: str, creds: RegistryCredentials, busybox_image: str) -> None:
    engine = Engine()
    names = ["child", "grandchild", "spec", "tree/tleaf", "tree/troot"]
    base_ref = f"{world['base_repo']}:latest"
    child_ref = f"{world['ns']}/child:latest"

    # First run: nothing exists yet, everything is built, verified and published.
    state, reports, output = run(world["config"])
    assert state.is_completed(), state
    assert "checking 4 image(s)" in output and "verified (labels" in output  # the run's logs are there...
    assert creds.secret not in output  # ...and neither they nor the artifact hold the password
    assert statuses(reports) == dict.fromkeys(names, "rebuilt")
    published = {n: reports[n]["digest_after"] for n in names}
    assert all(published.values())
    # Each image records the base digest it was built from (a label, so in its content tag).
    child = engine.local_image(reports["child"]["reference"])
    assert parse_base_label(child["Config"]["Labels"][BASE_LABEL]) == {base_ref: world["base_v1"]}
    assert engine.registry_digest(child_ref, creds) == published["child"]
    spec_bases = reports["spec"]["bases_after"]
    assert spec_bases == {busybox_image: engine.local_image(busybox_image)["Id"]}  # local-only base: its image id

    # Nothing changed: nothing is rebuilt or pushed.
    created = {n: engine.local_image(reports[n]["reference"])["Created"] for n in names}
    state, reports, summary = run(world["config"])
    assert state.is_completed(), state
    assert statuses(reports) == dict.fromkeys(names, "fresh")
    assert {n: reports[n]["digest_after"] for n in names} == published
    assert {n: engine.local_image(reports[n]["reference"])["Created"] for n in names} == created
    assert "0 of 5 image(s) stale" in summary

    # The base moves: the images on it and their descendants are rebuilt; the spec is not.
    base_v2 = push_base(world["root"] / "base", world["base_repo"], busybox_image, "v2")
    assert base_v2 != world["base_v1"]
    state, reports, summary = run(world["config"])
    assert state.is_completed(), state
    assert statuses(reports) == {**dict.fromkeys(names, "rebuilt"), "spec": "fresh"}
    for name in ("child", "grandchild", "tree/troot", "tree/tleaf"):
        assert reports[name]["digest_before"] == published[name]
        assert reports[name]["digest_after"] not in (None, published[name])
    assert reports["child"]["bases_before"] == {base_ref: world["base_v1"]}
    assert reports["child"]["bases_after"] == {base_ref: base_v2}
    assert any(base_ref in r and "changed" in r for r in reports["child"]["reasons"])
    assert any(child_ref in r and "changed" in r for r in reports["grandchild"]["reasons"])
    assert reports["tree/tleaf"]["reasons"] == ["parent troot is rebuilt"]
    # The rebuilt images really are on the new base, and the registry holds them.
    child = engine.local_image(reports["child"]["reference"])
    assert parse_base_label(child["Config"]["Labels"][BASE_LABEL]) == {base_ref: base_v2}
    code, output = engine.run(reports["grandchild"]["reference"], ["cat", "/base-version", "/g.txt"])
    assert (code, output.split()) == (0, ["v2", "grandchild"])
    code, output = engine.run(f"{world['tree_ns']}/tleaf:1.0-1", ["cat", "/base-version", "/leaf"])
    assert (code, output.split()) == (0, ["v2", "leaf"])
    assert engine.registry_digest(child_ref, creds) == reports["child"]["digest_after"]
    # The summary says what was stale and why, with digests before and after.
    assert "4 of 5 image(s) stale" in summary and "4 rebuilt, 1 fresh" in summary
    for digest in (world["base_v1"], base_v2, published["child"], reports["child"]["digest_after"]):
        assert digest in summary
    assert "parent troot is rebuilt" in summary
    assert creds.secret not in summary

    # And quiet again.
    state, reports, _ = run(world["config"])
    assert statuses(reports) == dict.fromkeys(names, "fresh")
    rebuilt = {n: reports[n]["digest_after"] for n in names}

    # force=True rebuilds images whose plan did not change (as max_age does): new images, same tags.
    # Except where the builder is reproducible: BuildKit makes the spec's metadata-only image
    # (ENV on the base, no layer) with the base's `created`, so rebuilding it gives it again.
    state, reports, _ = run(world["config"], force=True)
    assert statuses(reports) == dict.fromkeys(names, "rebuilt")
    spec_plan = Image.from_base(busybox_image).clone(name="spec").with_env_vars({"APP": "1"}).plan(no_cache=True)
    same = {"spec"} if choose_backend(spec_plan) == "buildkit" else set()
    assert all(reports[n]["digest_after"] is not None for n in names)
    assert {n for n in names if reports[n]["digest_after"] == rebuilt[n]} == same
    assert reports["tree/troot"]["reasons"] == ["rebuild forced (force=True)"]
    assert reports["tree/tleaf"]["reasons"] == ["parent troot is rebuilt"]
    assert engine.registry_digest(f"{world['tree_ns']}/tleaf:1.0-1", creds) == reports["tree/tleaf"]["digest_after"]


def test_refresh_rebuilds_an_image_older_than_max_age(tmp_path: Path, prefect_server: str, unique_name: str, registry_noauth: Any, busybox_image: str) -> None:
    engine = Engine()
    repository = f"{registry_noauth.host}/{unique_name}"
    write(tmp_path / "app" / "Dockerfile", f"FROM {busybox_image}\nCOPY app.txt /app.txt\n")
    write(tmp_path / "app" / "app.txt", "app\n")

    def config(max_age: str) -> Path:
        return write(tmp_path / "refresh.yaml", f"""\
            state_file: state.json
            images:
            - name: app
              dockerfile: Dockerfile
              context: app
              repository: {repository}
              max_age: {max_age}
            """)

    _, reports, _ = run(config("1 hour"))
    assert reports["app"]["status"] == "rebuilt"
    first = reports["app"]["digest_after"]
    reference = reports["app"]["reference"]
    time.sleep(1.5)

    # A dry run only reports.
    _, reports, summary = run(config("PT1S"), dry_run=True)
    assert reports["app"]["status"] == "stale" and "older than max_age" in reports["app"]["reasons"][0]
    assert engine.registry_digest(reference, None) == first
    assert "(dry run)" in summary

    # Too old: rebuilt under the same content tag (same inputs), as a new image.
    _, reports, _ = run(config("1 second"))
    assert reports["app"]["status"] == "rebuilt" and reports["app"]["reference"] == reference
    assert reports["app"]["digest_before"] == first
    assert reports["app"]["digest_after"] not in (None, first)
    assert engine.registry_digest(reference, None) == reports["app"]["digest_after"]

    _, reports, _ = run(config("1 hour"))
    assert reports["app"]["status"] == "fresh"


def test_refresh_isolates_failures(tmp_path: Path, prefect_server: str, unique_name: str, registry: Any, registry_noauth: Any, creds: RegistryCredentials, busybox_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine()
    noauth = f"{registry_noauth.host}/{unique_name}"
    # A base in the auth registry, which this configuration has a wrong password for.
    locked = f"{registry.host}/{unique_name}/locked"
    write(tmp_path / "locked" / "Dockerfile", f"FROM {busybox_image}\nCOPY x /x\n")
    write(tmp_path / "locked" / "x", "x\n")
    assert ensure(BuildPlan.from_dockerfile(tmp_path / "locked", locked, tag="latest"), credentials=creds).digest
    wrong = "not-the-password-" + unique_name
    monkeypatch.setenv("REFRESH_TEST_WRONG_PASSWORD", wrong)
    for name, dockerfile in (
        ("bad", f"FROM {busybox_image}\nCOPY x /x\n"),
        ("after-bad", f"FROM {noauth}/bad:latest\nCOPY x /y\n"),
        ("ok", f"FROM {busybox_image}\nCOPY x /ok\n"),
        ("on-locked", f"FROM {locked}:latest\nCOPY x /z\n"),
    ):
        write(tmp_path / name / "Dockerfile", dockerfile)
        write(tmp_path / name / "x", f"{name}\n")
    config = write(tmp_path / "refresh.yaml", f"""\
        state_file: state.json
        registries:
        - registry: {registry.host}
          username: {registry.username}
          password_env: REFRESH_TEST_WRONG_PASSWORD
        images:
        - {{name: bad, dockerfile: Dockerfile, context: bad, repository: {noauth}/bad, tags: [latest], verify: "sh -c 'echo broken; exit 3'"}}
        - {{name: after-bad, dockerfile: Dockerfile, context: after-bad, repository: {noauth}/after-bad}}
        - {{name: ok, dockerfile: Dockerfile, context: ok, repository: {noauth}/ok}}
        - {{name: on-locked, dockerfile: Dockerfile, context: on-locked, repository: {noauth}/on-locked}}
        """)

    state, _, summary = run(config)
    assert state.is_failed()
    reports = {r["name"]: r["status"] for r in _reports_from(summary)}
    assert reports == {"bad": "failed", "after-bad": "blocked", "ok": "rebuilt", "on-locked": "failed"}
    assert "exited 3" in summary and "broken" in summary  # the verification's output tail
    assert "refused the credentials" in summary
    assert wrong not in summary
    # The image that failed verification was built but never published.
    bad = engine.local_image(f"{noauth}/bad:latest")
    assert bad is not None and engine.registry_digest(f"{noauth}/bad:{bad['Config']['Labels'][PLAN_LABEL][:16]}", None) is None
    assert engine.registry_digest(f"{noauth}/bad:latest", None) is None


def _reports_from(summary: str) -> list[dict[str, str]]:
    """(name, status) of every row of a summary table."""
    rows = []
    for line in summary.split("--- logs ---")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| **") and len(cells) >= 2:
            rows.append({"name": cells[0].split("**")[1], "status": cells[1]})
    return rows
