"""build_tree_flow on a real Prefect run: parallel tasks, failure isolation, artifact."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_flyimage import Engine, RegistryCredentials
from prefect_flyimage.chain import ChainBuildError
from prefect_flyimage.chain.flows import build_tree_flow
from prefect_flyimage.chain.report import ARTIFACT_KEY

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).parent))
from _chain_helpers import break_test  # noqa: E402


# prefect_server: the session-wide fixture in tests/conftest.py


def test_flow_builds_branches_in_parallel_and_isolates_a_failure(prefect_server, chain_tree, chain_config, write_config):
    break_test(chain_tree, "beta-lib")
    config_path = write_config(chain_config)
    flow = build_tree_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=4))
    state = flow(str(chain_tree), str(config_path), max_concurrency=2, return_state=True)
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert isinstance(err, ChainBuildError)
    assert err.failed == [f"{chain_config['registry']}/{chain_config['namespace']}/beta-lib:0.9.0-1"]
    assert sorted(b.rsplit("/", 1)[1] for b in err.blocked) == ["beta-app:5.0.0-1", "beta-cli:5.0.0-1"]

    outcomes = flow(str(chain_tree), str(config_path), max_concurrency=2, raise_on_failure=False)
    by = {o["image"].rsplit("/", 1)[1].split(":")[0]: o for o in outcomes}
    # Second run: the alpha branch and beta-base were published by the first run.
    assert set(by) == {"beta-lib", "beta-app", "beta-cli"}
    assert by["beta-lib"]["state"] == "error" and by["beta-app"]["blocked_by"] == "beta-lib"

    engine = Engine()
    creds = RegistryCredentials(chain_config["registry"], chain_config["username"], chain_config["password"])
    alpha = f"{chain_config['registry']}/{chain_config['namespace']}/alpha-app:3.0.0-2"
    assert engine.registry_digest(alpha, creds) is not None

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY])))
    assert len(artifacts) >= 2
    latest = max(artifacts, key=lambda a: a.created)
    table = latest.data
    assert "| image | version | state | digest | duration (s) |" in table
    assert f"| {alpha} | 3.0.0-2 | published | sha256:" in table
    assert "not built: parent beta-lib failed" in table
    assert chain_config["password"] not in table


def test_flow_publishes_a_healthy_tree(prefect_server, chain_tree, chain_config, write_config):
    config_path = write_config(chain_config)
    outcomes = build_tree_flow(str(chain_tree), str(config_path), max_concurrency=3)
    assert len(outcomes) == 7
    assert {o["state"] for o in outcomes} == {"published"}
    engine = Engine()
    creds = RegistryCredentials(chain_config["registry"], chain_config["username"], chain_config["password"])
    for o in outcomes:
        assert engine.registry_digest(o["image"], creds) == o["digest"]
