"""Benchmark: "does the registry hold this tag?" asked directly vs through the daemon, in one run.

The unchanged-redeploy path costs one existence check. Three ways to ask, each for the
same present tag on the authenticated registry, ``--rounds`` times:

- ``daemon``: ``Engine().registry_digest`` per call, as a front door did it (a new docker-py
  client: ``/_ping``, then the daemon's distribution endpoint, which logs in and asks the registry);
- ``daemon (reused engine)``: the same with one engine for every call;
- ``direct``: :func:`prefect_flyimage.registry.shared_client` (one ``HEAD`` per call on
  an open connection; the first call also opens it).

Prints the median per call and the ratios against ``direct``. Usage (services up:
``set -a; source /var/tmp/prefect-flyimage/env; set +a``)::

    python benchmarks/registry_check.py [--rounds 50]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect_flyimage.credentials import RegistryCredentials  # noqa: E402
from prefect_flyimage.engine import Engine  # noqa: E402
from prefect_flyimage.registry import close_shared_clients, shared_client  # noqa: E402


def timed(fn, rounds: int) -> tuple[float, object]:
    samples, value = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        value = fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    host = os.environ["FLYIMAGE_REGISTRY"]
    creds = RegistryCredentials(host, os.environ["FLYIMAGE_REGISTRY_USER"], os.environ["FLYIMAGE_REGISTRY_PASSWORD"])
    ref = f"{host}/bench-registry-check-{uuid.uuid4().hex[:8]}:v1"
    with Engine() as engine:
        engine.tag(os.environ["FLYIMAGE_BUSYBOX_IMAGE"], ref)
        pushed = engine.push(ref, creds)
        engine.remove(ref)

        def per_call_engine() -> object:
            with Engine() as own:
                return own.registry_digest(ref, creds)

        results = {
            "daemon": timed(per_call_engine, args.rounds),
            "daemon (reused engine)": timed(lambda: engine.registry_digest(ref, creds), args.rounds),
            "direct": timed(lambda: shared_client(host, creds).manifest_digest(ref), args.rounds),
        }
    close_shared_clients()
    assert all(value == pushed for _, value in results.values()), "the three ways disagree"
    direct = results["direct"][0]
    print(f"existence check of {ref}, median of {args.rounds} calls")
    for name, (median, _) in results.items():
        print(f"  {name:24s} {median * 1000:8.2f} ms   {median / direct:6.1f}x direct")


if __name__ == "__main__":
    main()
