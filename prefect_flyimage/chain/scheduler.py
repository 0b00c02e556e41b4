"""Run a DAG of jobs with bounded concurrency, each job waiting only for its own parents.

The scheduler keeps at most ``max_in_flight`` jobs submitted and submits a job as soon
as all its parents succeeded, longest remaining chain first. It works with anything
that returns a future with ``add_done_callback`` (``concurrent.futures``, Prefect
futures), so the thread path and the Prefect flow share it. A failed job's
descendants are never submitted: they are reported as blocked.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Mapping, Optional, Protocol, Sequence, TypeVar

from .graph import children_of, critical_path, descendants

F = TypeVar("F", bound="_Future")


class _Future(Protocol):
    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...


@dataclass(frozen=True)
class Event(Generic[F]):
    """One job finished (``done``/``failed``) or was given up (``blocked`` by ``cause``)."""

    name: str
    status: str  #: "done", "failed" or "blocked"
    future: Optional[F] = None
    cause: Optional[str] = None  #: the failed ancestor, for "blocked"


def run_dag(
    names: Sequence[str],
    parents: Mapping[str, Sequence[str]],
    submit: Callable[[str, list[F]], F],
    succeeded: Callable[[str, F], bool],
    max_in_flight: int = 1,
    cost: Callable[[str], float] = lambda _: 1.0,
) -> Iterator[Event[F]]:
    """Submit every job of ``names`` once its parents (within ``names``) succeeded.

    ``submit(name, parent_futures)`` starts a job; ``succeeded(name, future)`` decides
    whether its children may run. Yields an :class:`Event` per job, in completion order.
    """
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    wanted = set(names)
    sub = {n: [p for p in parents.get(n, ()) if p in wanted] for n in wanted}
    kids = children_of(sub)
    priority = critical_path(wanted, sub, cost)
    waiting = {n: set(ps) for n, ps in sub.items()}
    pending = set(wanted)
    futures: dict[str, F] = {}
    in_flight: set[str] = set()
    finished: "queue.Queue[str]" = queue.Queue()
    while pending or in_flight:
        ready = sorted((n for n in pending if not waiting[n]), key=lambda n: (-priority[n], n))
        for name in ready[: max_in_flight - len(in_flight)]:
            pending.discard(name)
            fut = submit(name, [futures[p] for p in sub[name]])
            futures[name] = fut
            in_flight.add(name)
            fut.add_done_callback(lambda _f, name=name: finished.put(name))
        if not in_flight:
            break  # nothing runnable: only possible with a cycle, which the tree check rejects
        name = finished.get()
        in_flight.discard(name)
        fut = futures[name]
        if succeeded(name, fut):
            for child in kids[name]:
                waiting[child].discard(name)
            yield Event(name, "done", fut)
        else:
            yield Event(name, "failed", fut)
            for d in descendants(name, kids):
                if d in pending:
                    pending.discard(d)
                    yield Event(d, "blocked", None, name)
    for name in sorted(pending):  # defensive: report anything left rather than hang
        yield Event(name, "blocked", None, None)


__all__ = ["Event", "run_dag"]
