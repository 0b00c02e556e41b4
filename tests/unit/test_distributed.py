"""Build-host arguments of the distributed runs (no cluster needed)."""

from __future__ import annotations

import io
import os

import pytest

from prefect_flyimage.chain.cli import main, parse_args
from prefect_flyimage.distributed import BuildCluster, parse_docker_hosts
from prefect_flyimage.errors import InvalidArgumentError


def test_docker_hosts_are_split_trimmed_and_deduplicated():
    assert parse_docker_hosts(" unix:///a.sock, tcp://b:2376,,unix:///a.sock ") == ["unix:///a.sock", "tcp://b:2376"]
    assert parse_docker_hosts(["ssh://builder"]) == ["ssh://builder"]
    assert parse_docker_hosts(None) == [] and parse_docker_hosts("") == []


def test_a_docker_host_that_is_not_a_url_is_named():
    with pytest.raises(InvalidArgumentError) as err:
        parse_docker_hosts("unix:///a.sock,builder1")
    assert err.value.argument == "docker_hosts" and "'builder1'" in str(err.value)


def test_builds_per_host_must_be_positive():
    with pytest.raises(InvalidArgumentError, match="builds_per_host"):
        BuildCluster(["unix:///a.sock"], builds_per_host=0)


def test_cli_takes_hosts_and_scheduler():
    args = parse_args(["-c", "c.yaml", "build", "tree", "--docker-hosts", "unix:///a,tcp://b:1", "--dask-address", "tcp://s:8786"])
    assert args.docker_hosts == ["unix:///a", "tcp://b:1"] and args.dask_address == "tcp://s:8786"
    assert parse_args(["build", "tree"]).docker_hosts is None


@pytest.mark.parametrize("bad", [["--docker-hosts", "builder"], ["--docker-hosts", " , "], ["--dask-address", " "]])
def test_cli_rejects_bad_hosts_with_usage(bad, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["build", "tree", *bad])
    assert exit_.value.code == 2 and "usage:" in capsys.readouterr().err


# ---- parents pinned by digest on a build host ------------------------------------------------

PARENT = "127.0.0.1:5000/ns/parent"
DIGEST = "sha256:" + "a" * 64


class _PinEngine:
    """A daemon's images (id -> repo digests) and the registry's (digest -> image id)."""

    def __init__(self, local: dict[str, tuple[str, ...]], registry: dict[str, str]) -> None:
        self.local, self.registry, self.calls = dict(local), registry, []

    def local_image(self, ref):
        from prefect_flyimage.engine import LocalImage

        for image_id, digests in self.local.items():
            if str(ref) == image_id or str(ref) in digests:
                return LocalImage(id=image_id, labels={}, repo_digests=digests)
        return None

    def pull(self, ref, credentials=None):
        self.calls.append(f"pull {ref}")
        image_id = self.registry[str(ref).rsplit("@", 1)[1]]
        self.local[image_id] = (*self.local.get(image_id, ()), str(ref))
        return image_id

    def tag(self, image, ref):
        self.calls.append(f"tag {image} {ref}")


def _pin(engine: _PinEngine, image_id):
    from types import SimpleNamespace

    from prefect_flyimage.chain.flows import _pin_parents

    job = SimpleNamespace(base_pulls=(), parent_pins=((f"{PARENT}:1.0", f"{PARENT}@{DIGEST}", image_id),))
    _pin_parents(SimpleNamespace(engine=engine), job, None)


def test_a_parent_the_host_pushed_itself_is_not_pulled_again():
    engine = _PinEngine({"sha256:p": (f"{PARENT}@{DIGEST}",)}, {DIGEST: "sha256:p"})
    _pin(engine, "sha256:p")
    assert engine.calls == [f"tag sha256:p {PARENT}:1.0"]


def test_a_parent_missing_on_the_host_is_pulled_by_digest():
    engine = _PinEngine({}, {DIGEST: "sha256:p"})
    _pin(engine, "sha256:p")
    assert engine.calls == [f"pull {PARENT}@{DIGEST}", f"tag sha256:p {PARENT}:1.0"]


def test_a_local_image_under_the_digest_but_not_the_verified_one_is_not_trusted():
    from prefect_flyimage.errors import FlyImageError

    engine = _PinEngine({"sha256:other": (f"{PARENT}@{DIGEST}",)}, {DIGEST: "sha256:other"})
    with pytest.raises(FlyImageError, match="not the verified parent sha256:p"):
        _pin(engine, "sha256:p")
    assert engine.calls == [f"pull {PARENT}@{DIGEST}"]  # asked the registry, which disagrees too


def test_cli_takes_builds_per_host():
    args = parse_args(["build", "tree", "--docker-hosts", "unix:///a", "--builds-per-host", "3"])
    assert args.builds_per_host == 3 and parse_args(["build", "tree"]).builds_per_host is None


@pytest.mark.parametrize("where", [[], ["--dask-address", "tcp://127.0.0.1:1"],
                                   ["--docker-hosts", "unix:///a.sock", "--dask-address", "tcp://127.0.0.1:1"]])
def test_cli_refuses_builds_per_host_where_it_would_be_ignored(where, tmp_path, capsys, monkeypatch):
    # no cluster to size (no hosts), or a remote one whose workers say their own slots
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")  # nothing may reach Docker
    config = tmp_path / "config.yaml"
    config.write_text("seed_image: busybox:1\nbase_images: [busybox:1]\n")
    (tmp_path / "tree").mkdir()
    code = main(["-c", str(config), "build", "--builds-per-host", "2", *where, str(tmp_path / "tree")], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("usage:") and "--builds-per-host needs --docker-hosts and no --dask-address" in err


def test_builds_per_host_is_refused_with_a_remote_cluster():
    with pytest.raises(InvalidArgumentError) as err:
        BuildCluster(["unix:///a.sock"], "tcp://127.0.0.1:1", builds_per_host=2)
    assert err.value.argument == "builds_per_host" and "local cluster" in str(err.value)
    assert BuildCluster(["unix:///a.sock"], "tcp://127.0.0.1:1").builds_per_host == 1  # the default is fine


def test_build_tree_flow_refuses_builds_per_host_without_hosts(tmp_path):
    from prefect_flyimage.chain.flows import build_tree_flow

    config = tmp_path / "config.yaml"
    config.write_text("seed_image: busybox:1\nbase_images: [busybox:1]\n")
    with pytest.raises(InvalidArgumentError) as err:
        build_tree_flow.fn(str(tmp_path), str(config), builds_per_host=3)
    assert err.value.argument == "builds_per_host" and "max_concurrency" in str(err.value)


def test_cli_rejects_builds_per_host_below_one(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["build", "tree", "--builds-per-host", "0"])
    assert exit_.value.code == 2 and "at least 1" in capsys.readouterr().err


# ---- the local cluster starting in the background ---------------------------------------------


class _FakeLocal:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_cluster_started_but_never_entered_is_stopped_on_exit(monkeypatch):
    made: list[tuple[list[str], _FakeLocal]] = []

    def local(self, hosts):
        made.append((hosts, _FakeLocal()))
        return made[-1][1]

    monkeypatch.setattr(BuildCluster, "_local_cluster", local)
    cluster = BuildCluster(["unix:///a.sock", "unix:///b.sock"], builds_per_host=2)
    assert cluster.start() is cluster and cluster.start() is cluster  # a second start starts nothing
    cluster.__exit__(None, None, None)  # e.g. the tree scan failed
    assert [(hosts, c.closed) for hosts, c in made] == [(["unix:///a.sock", "unix:///b.sock"], 1)]
    cluster.__exit__(None, None, None)
    assert made[0][1].closed == 1  # idempotent


def test_a_cluster_that_failed_to_start_exits_quietly(monkeypatch):
    def local(self, hosts):
        raise RuntimeError("Nanny failed to start.")

    monkeypatch.setattr(BuildCluster, "_local_cluster", local)
    BuildCluster(["unix:///a.sock"]).start().__exit__(None, None, None)


def test_a_given_scheduler_starts_no_local_cluster(monkeypatch):
    monkeypatch.setattr(BuildCluster, "_local_cluster", lambda self, hosts: pytest.fail("started a local cluster"))
    cluster = BuildCluster(["unix:///a.sock"], dask_address="tcp://s:8786").start()
    assert cluster._starting is None
    cluster.__exit__(None, None, None)


def test_local_workers_preload_the_image_tasks(monkeypatch):
    """Each local worker preloads this module, whose hook imports the task module (checked in
    a fresh interpreter, where nothing imported it before)."""
    import subprocess
    import sys

    captured = {}

    class _Spec:
        def __init__(self, workers, scheduler, silence_logs):
            captured.update(workers)

    monkeypatch.setattr("distributed.SpecCluster", _Spec)
    BuildCluster(["unix:///a.sock"], builds_per_host=3)._local_cluster(["unix:///a.sock"])
    options = captured["build-host-0"]["options"]
    assert options["preload"] == ["prefect_flyimage.distributed"] and options["resources"] == {"docker-build": 3}
    assert options["nthreads"] == 3 and options["env"]["DOCKER_HOST"] == "unix:///a.sock"
    assert options["env"]["PATH"] == os.environ["PATH"]  # the caller's environment, as a spawned worker's
    code = (
        "import sys; from prefect_flyimage.distributed import dask_setup; "
        "assert 'prefect_flyimage.chain.flows' not in sys.modules; dask_setup(None); "
        "assert 'prefect_flyimage.chain.flows' in sys.modules and 'prefect_flyimage.ensure_many' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_slots_count_the_live_hosts_workers_only():
    cluster = BuildCluster(["unix:///a.sock", "unix:///b.sock"])
    cluster.hosts = {"tcp://w1": "unix:///a.sock", "tcp://w2": "unix:///b.sock"}
    cluster._slots = {"tcp://w1": 3, "tcp://w2": 2}
    assert cluster.slots == 5
    cluster.dead_hosts.add("unix:///a.sock")
    assert cluster.slots == 2


def _worker_view() -> tuple[str, int, str]:
    import os as _os

    return _os.environ["DOCKER_HOST"], _os.getppid(), _os.environ.get("FLYIMAGE_TEST_MARK", "")


@pytest.mark.skipif("forkserver" not in __import__("multiprocessing").get_all_start_methods(), reason="no forkserver on this platform")
def test_local_workers_fork_from_one_server_with_the_callers_environment(monkeypatch):
    """A real local cluster (no Docker needed): each worker has its host's DOCKER_HOST, all
    are children of one fork server (not spawned by this process), and an environment change
    made after the server started reaches the next cluster's workers."""
    import uuid

    hosts = ["unix:///a.sock", "unix:///b.sock"]
    seen = []
    for _ in range(2):
        mark = uuid.uuid4().hex
        monkeypatch.setenv("FLYIMAGE_TEST_MARK", mark)
        with BuildCluster(hosts).start() as cluster:
            views = list(cluster.client.run(_worker_view).values())
        assert sorted(v[0] for v in views) == hosts
        assert {v[2] for v in views} == {mark}
        parents = {v[1] for v in views}
        assert len(parents) == 1 and os.getpid() not in parents
        seen.append(parents.pop())
    assert seen[0] == seen[1]  # the second cluster reused the server


def test_local_workers_keep_dasks_info_chatter_off_the_terminal(capfd):
    # a CLI user sees the tree's progress, not each worker's start and stop banner
    with BuildCluster(["unix:///a.sock"]).start() as cluster:
        assert list(cluster.client.run(_worker_view).values())[0][0] == "unix:///a.sock"
    err = capfd.readouterr().err
    assert "distributed.worker - INFO" not in err and "distributed.nanny - INFO" not in err
