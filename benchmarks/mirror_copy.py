"""A second destination: registry-to-registry copy (ours) vs a re-push through the daemon.

    set -a; source /var/tmp/prefect-flyimage/env; set +a
    python3 benchmarks/mirror_copy.py [--mib 64] [--repeats 3] [--json out.json]

Builds one image with a ``--mib`` MiB layer of random bytes and pushes it to the
registry without auth ($FLYIMAGE_REGISTRY_NOAUTH). Then, per repeat, into fresh
repositories (so no contender finds the blobs in place):

- ``daemon``: what a user does without mirrors: ``docker tag`` + ``docker push`` (through
  docker-py, credentials passed) to the auth registry ($FLYIMAGE_REGISTRY) -- the daemon
  reads the layers from its store and uploads them;
- ``ours``: :func:`prefect_flyimage._mirror.mirror` to the auth registry (blobs streamed
  registry to registry, manifests put, confirmed by digest);
- ``ours, same registry``: :func:`mirror` within the no-auth registry (blobs mounted).

Reports medians and ratios (daemon / ours). Not a test: nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect_flyimage import BuildPlan, Engine, RegistryCredentials, ensure  # noqa: E402
from prefect_flyimage._mirror import mirror  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    noauth, auth = os.environ["FLYIMAGE_REGISTRY_NOAUTH"], os.environ["FLYIMAGE_REGISTRY"]
    creds = RegistryCredentials(auth, os.environ["FLYIMAGE_REGISTRY_USER"], os.environ["FLYIMAGE_REGISTRY_PASSWORD"])
    run = secrets.token_hex(3)
    engine = Engine()
    times: dict[str, list[float]] = {"daemon": [], "ours": [], "ours, same registry": []}
    for i in range(args.repeats):
        # a new image each repeat: the daemon remembers where it pushed a layer and would
        # mount it from there the second time, so only a first push of a layer is honest
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Path(tmp)
            (ctx / "blob.bin").write_bytes(os.urandom(args.mib << 20))
            (ctx / "Dockerfile").write_text(f"FROM {os.environ['FLYIMAGE_BUSYBOX_IMAGE']}\nCOPY blob.bin /blob.bin\n")
            result = ensure(BuildPlan.from_dockerfile(ctx, f"{noauth}/bench-mirror-{run}-{i}", pull=False), engine=engine)
        source = result.repository
        local = f"{source}:{result.tags[0]}"
        try:
            target = f"{auth}/bench-mirror-{run}-{i}-push:v1"
            started = time.perf_counter()
            engine.tag(local, target)  # `docker tag` + `docker push` (credentials passed, no login stored)
            engine.push(target, creds)
            times["daemon"].append(time.perf_counter() - started)
            engine.remove(target)

            started = time.perf_counter()
            copies = mirror(source, result.digest, ["v1"], [f"{auth}/bench-mirror-{run}-{i}-copy"],
                            mirror_credentials={auth: creds})
            times["ours"].append(time.perf_counter() - started)
            assert copies[0].streamed >= 2, copies

            started = time.perf_counter()
            copies = mirror(source, result.digest, ["v1"], [f"{noauth}/bench-mirror-{run}-{i}-mount"])
            times["ours, same registry"].append(time.perf_counter() - started)
            assert copies[0].mounted >= 2 and copies[0].streamed == 0, copies
        finally:
            for tag in result.tags:
                engine.remove(f"{source}:{tag}")
    engine.close()
    print("each repeat:", {k: [round(x, 3) for x in v] for k, v in times.items()})
    medians = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "mib": args.mib, "repeats": args.repeats, "median_seconds": medians,
        "ratio_daemon_over_ours": medians["daemon"] / medians["ours"],
        "ratio_daemon_over_mount": medians["daemon"] / medians["ours, same registry"],
    }
    for name, seconds in medians.items():
        print(f"{name:22s} {seconds:7.3f} s")
    print(f"daemon re-push / ours (streamed): {report['ratio_daemon_over_ours']:.2f}x; "
          f"/ ours (mounted): {report['ratio_daemon_over_mount']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
