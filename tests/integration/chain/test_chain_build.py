"""Image trees built for real: local dockerd, busybox base, test.sh runs, authenticated registry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_flyimage import AuthenticationError, Engine, RegistryCredentials
from prefect_flyimage.chain import DockerBuilder, ImageFSM
from prefect_flyimage.chain.records import VerificationRecords

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).parent))
from _chain_helpers import break_test  # noqa: E402


def states(builder: DockerBuilder) -> dict[str, str]:
    return {i.short_name: i.state for i in builder.all_images}


def creds_of(config) -> RegistryCredentials:
    return RegistryCredentials(config["registry"], config["username"], config["password"])


def test_tree_builds_in_parallel_verifies_and_publishes_exact_digests(chain_tree, chain_config, docker_client):
    builder = DockerBuilder(chain_tree, chain_config, client=docker_client)
    builder.scan(max_workers=4)
    assert set(states(builder).values()) == {ImageFSM.STATE_TO_BUILD}
    heard: list[tuple[str, str, str]] = []
    builder.listeners.append(lambda img, old, new: heard.append((img.short_name, old, new)))

    done = list(builder.build(max_workers=2))
    assert {i.short_name: i.state for i in done} == {n: ImageFSM.STATE_VERIFIED for n in states(builder)}
    assert ("beta-lib", "built", "verified") in heard
    published = list(builder.publish())
    assert len(published) == 7 and all(i.state == ImageFSM.STATE_PUBLISHED for i in published)

    engine, creds = Engine(docker_client), creds_of(chain_config)
    for img in published:
        assert img.digest and img.digest.startswith("sha256:")
        assert engine.registry_digest(img.label, creds) == img.digest
        assert engine.registry_digest(img.plan.content_ref, creds) == img.digest
    # The child really is built on its parent, and test.sh results hold in the image.
    code, out = engine.run(f"{chain_config['registry']}/{chain_config['namespace']}/alpha-app:3.0.0-2",
                           ["cat", "/etc/flyimage/alpha-base", "/etc/flyimage/alpha-tools", "/etc/flyimage/alpha-app"])
    assert code == 0 and "alpha-tools upstream=2.1.0" in out
    code, out = engine.run(f"{chain_config['registry']}/{chain_config['namespace']}/alpha-base:1.0.0-1", ["ls", "/etc/motd"])
    assert code == 0

    # A second run finds everything published: nothing to build.
    again = DockerBuilder(chain_tree, chain_config, client=docker_client)
    again.scan(max_workers=4)
    assert set(states(again).values()) == {ImageFSM.STATE_PUBLISHED}
    assert again.build_chain == []


def test_failing_test_stops_only_its_branch(chain_tree, chain_config, docker_client):
    break_test(chain_tree, "beta-lib")
    builder = DockerBuilder(chain_tree, chain_config, pull=False, client=docker_client)
    builder.scan()
    results = {i.short_name: i for i in builder.build(max_workers=2)}
    assert {n: i.state for n, i in results.items()} == {
        "alpha-base": "verified", "alpha-tools": "verified", "alpha-app": "verified",
        "beta-base": "verified", "beta-lib": "error", "beta-app": "to_build", "beta-cli": "to_build",
    }
    assert "verification failed" in results["beta-lib"].error and "deliberate failure" in results["beta-lib"].error
    assert results["beta-app"].blocked_by == results["beta-cli"].blocked_by == "beta-lib"
    engine = Engine(docker_client)
    assert engine.local_image(results["beta-app"].label) is None
    assert engine.local_image(results["beta-lib"].label) is not None  # built, but not verified
    assert chain_config["password"] not in results["beta-lib"].error


def test_rerun_after_a_crash_resumes(chain_tree, chain_config, write_config, docker_client):
    config_path = write_config(chain_config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect_flyimage.chain", "-c", str(config_path), "build", "--no-pull",
         "--no-publish", "--workers", "1", str(chain_tree)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "alpha-tools:2.1.0-1: built -> verified" in line:
            os.killpg(proc.pid, signal.SIGKILL)  # crash right after the second image
            break
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)

    builder = DockerBuilder(chain_tree, chain_config, pull=False, client=docker_client)
    builder.scan()
    st = states(builder)
    assert st["alpha-base"] == st["alpha-tools"] == "verified"
    survivors = {i.short_name: (i.image_id, i.plan.hash) for i in builder.all_images if i.state == "verified"}
    records = VerificationRecords(chain_config["state_dir"])
    stamps = {n: records.get(h)["verified_at"] for n, (_, h) in survivors.items()}
    chain = [i.short_name for i in builder.build_chain]
    assert "alpha-base" not in chain and "alpha-tools" not in chain and len(chain) == 7 - len(survivors)

    list(builder.build(max_workers=2))
    assert set(states(builder).values()) == {"verified"}
    for name, (image_id, plan_hash) in survivors.items():
        img = next(i for i in builder.all_images if i.short_name == name)
        assert img.image_id == image_id  # not rebuilt
        assert records.get(plan_hash)["verified_at"] == stamps[name]  # not verified again


def test_published_means_the_digest_built_from_this_plan(tmp_path, chain_config, docker_client, busybox_image):
    tree = tmp_path / "one"
    (tree / "solo").mkdir(parents=True)
    (tree / "solo" / "changelog").write_text(
        "solo (1.0) t; urgency=medium\n\n  * x\n\n -- T <t@example.org>  Mon, 03 Feb 2025 10:00:00 +0000\n")
    (tree / "solo" / "Dockerfile.template").write_text("FROM {{ seed_image }}\nRUN echo solo > /solo\n")
    builder = DockerBuilder(tree, chain_config, client=docker_client)
    builder.scan()
    list(builder.build())
    (img,) = list(builder.publish())
    good = img.digest
    engine, creds = Engine(docker_client), creds_of(chain_config)

    # Someone pushes other bytes under the same version: no longer "published".
    engine.tag(busybox_image, img.label)
    other = engine.push(img.label, creds)
    assert other != good
    rescan = DockerBuilder(tree, chain_config, client=docker_client)
    rescan.scan()
    (again,) = rescan.all_images
    assert again.state == ImageFSM.STATE_VERIFIED  # local image and its verification are still good
    (republished,) = list(rescan.publish())
    assert republished.state == ImageFSM.STATE_PUBLISHED and republished.digest == good
    assert engine.registry_digest(img.label, creds) == good


def test_wrong_password_is_an_authentication_error(chain_tree, chain_config, docker_client):
    builder = DockerBuilder(chain_tree, {**chain_config, "password": "not-the-password"}, client=docker_client)
    with pytest.raises(AuthenticationError) as info:
        builder.scan()
    assert "not-the-password" not in str(info.value)


def test_cli_build_prints_state_changes_and_fails_on_a_broken_branch(chain_tree, chain_config, write_config):
    break_test(chain_tree, "alpha-tools")
    config_path = write_config(chain_config)
    proc = subprocess.run(
        [sys.executable, "-m", "prefect_flyimage.chain", "-c", str(config_path), "build", "--workers", "2",
         "--select", "*alpha-app:*", str(chain_tree)],
        capture_output=True, text=True, timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    prefix = f"{chain_config['registry']}/{chain_config['namespace']}"
    assert f"* {prefix}/alpha-base:1.0.0-1: to_build -> built" in out
    assert f"* {prefix}/alpha-base:1.0.0-1: built -> verified" in out
    assert f"* {prefix}/alpha-tools:2.1.0-1: built -> error" in out
    assert f"NOT BUILT: image {prefix}/alpha-app:3.0.0-2, its parent alpha-tools failed" in out
    assert f"* {prefix}/alpha-base:1.0.0-1: verified -> published" in out
    assert "beta-" not in out  # not selected
    assert chain_config["password"] not in out + proc.stderr
