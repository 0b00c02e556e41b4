"""The DAG scheduler with real threads: parallelism, bounds, failure isolation."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from prefect_flyimage.chain.scheduler import run_dag

PARENTS = {"a": [], "b": ["a"], "c": ["b"], "x": [], "y": ["x"], "z": ["x"]}


def execute(parents, work, workers, fail=()):
    running, peak, lock = [0], [0], threading.Lock()
    started: dict[str, float] = {}
    finished: dict[str, float] = {}

    def job(name):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            started[name] = time.monotonic()
        time.sleep(work.get(name, 0.05))
        with lock:
            running[0] -= 1
            finished[name] = time.monotonic()
        if name in fail:
            raise RuntimeError(name)
        return name

    with ThreadPoolExecutor(workers) as pool:
        events = list(run_dag(list(parents), parents, lambda n, _: pool.submit(job, n),
                              lambda n, f: f.exception() is None, max_in_flight=workers))
    return events, peak[0], started, finished


def test_children_start_only_after_their_parents_finish_and_branches_overlap():
    events, peak, started, finished = execute(PARENTS, {}, 3)
    assert sorted(e.name for e in events) == sorted(PARENTS)
    assert all(e.status == "done" for e in events)
    for child, ps in PARENTS.items():
        for p in ps:
            assert started[child] >= finished[p]
    assert peak >= 2  # the two branches ran at the same time


def test_concurrency_never_exceeds_the_bound():
    wide = {f"n{i}": [] for i in range(8)}
    _, peak, _, _ = execute(wide, {}, 3)
    assert peak == 3


def test_failure_blocks_only_descendants():
    events, _, started, _ = execute(PARENTS, {}, 2, fail={"b"})
    status = {e.name: e.status for e in events}
    assert status == {"a": "done", "b": "failed", "c": "blocked", "x": "done", "y": "done", "z": "done"}
    assert next(e for e in events if e.name == "c").cause == "b"
    assert "c" not in started


def test_longest_chain_starts_first():
    # One worker: the head of the long chain must go before the lone leaf.
    parents = {"lone": [], "h": [], "m": ["h"], "t": ["m"]}
    events, _, started, _ = execute(parents, {}, 1)
    assert started["h"] < started["lone"]


def test_bad_bound():
    with pytest.raises(ValueError):
        list(run_dag(["a"], {"a": []}, lambda n, p: None, lambda n, f: True, max_in_flight=0))
