"""Build-host arguments of the distributed runs (no cluster needed)."""

from __future__ import annotations

import pytest

from prefect_flyimage.chain.cli import parse_args
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
