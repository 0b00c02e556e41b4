"""Benchmark: listing and hashing a build context, cold and warm, against sha256sum.

Makes a tree of N files totalling S bytes (default 20,000 files, 1 GiB) plus a
``.dockerignore``, then measures in one run (median of ``--repeats``):

- ``sha256sum`` over the same included files, run the same way as ours: split over as many
  processes as there are CPUs (``xargs -0 -P<cpus>``), and in one process for reference;
- Python's ``hashlib`` in one process per CPU over the same files, pre-split, no
  bookkeeping: the floor for a SHA-256 of every byte on this machine;
- the listing after ``.dockerignore``: ours, and docker-py's ``exclude_paths`` (what the
  classic builder sends, the alternative);
- our cold hash (empty stat cache): every file read and hashed;
- ``lstat`` of every listed path: the floor for a warm hash;
- our warm hash (stat cache filled): the unchanged tree re-hashed from ``stat`` alone;
- warm after one file changed.

The page cache is warmed first (one read of every file) so every contender reads from
memory and the comparison is about hashing, not the disk. Ratios are printed; nothing
asserts. Pass ``--json`` for machine-readable output.

    python3 benchmarks/hash_context.py [--files 20000] [--mib 1024] [--dir /var/tmp/flyimage-bench-tree]
        [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from docker.utils.build import exclude_paths  # noqa: E402

from prefect_flyimage.context import BuildContext, read_dockerignore  # noqa: E402

try:
    from prefect_flyimage._filehash import cpu_count  # noqa: E402
except ImportError:  # older checkouts (for before/after runs)
    def cpu_count() -> int:
        return os.cpu_count() or 1


def make_tree(root: Path, files: int, total: int) -> None:
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == f"{files} {total}":
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    size = total // files
    block = os.urandom(size)
    for i in range(files):
        d = root / f"pkg{i // 500:03d}"
        d.mkdir(exist_ok=True)
        # Distinct contents per file (the counter), so no two files hash alike.
        (d / f"mod{i:05d}.py").write_bytes(i.to_bytes(8, "big") + block[8:])
    (root / "build").mkdir()
    (root / "build" / "ignored.bin").write_bytes(os.urandom(1 << 20))
    (root / ".dockerignore").write_text("build\n*.pyc\n")
    # Back-date so the stat cache trusts the files (it ignores files written in the last 2 s).
    old = time.time() - 3600
    for dirpath, dirnames, names in os.walk(root):
        for n in names + dirnames:
            os.utime(os.path.join(dirpath, n), (old, old))
    marker.write_text(f"{files} {total}")


def _hash_files(paths: list[str]) -> int:
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb", buffering=0) as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return len(paths)


def median_time(fn, repeats: int, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/flyimage-bench-tree"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    root = args.dir
    cpus = cpu_count()
    print(f"tree: {args.files} files, {args.mib} MiB at {root}; {cpus} CPUs; median of {args.repeats}")
    make_tree(root, args.files, args.mib << 20)

    cache = Path(tempfile.mkdtemp(prefix="flyimage-bench-cache-"))
    os.environ["PREFECT_FLYIMAGE_CACHE_DIR"] = str(cache)
    r = args.repeats
    t: dict[str, float] = {}
    try:
        listed = BuildContext(root, use_cache=False).paths()
        paths = [p for p in listed if (root / p).is_file()]
        listing = "\0".join(paths).encode()
        # Warm the page cache so every contender hashes from memory.
        subprocess.run(["xargs", "-0", "cat"], input=listing, cwd=root, stdout=subprocess.DEVNULL, check=True)

        per = -(-len(paths) // cpus)
        t["sha256sum"] = median_time(lambda: subprocess.run(
            ["xargs", "-0", f"-P{cpus}", f"-n{per}", "sha256sum"], input=listing, cwd=root,
            stdout=subprocess.DEVNULL, check=True), r)
        t["sha256sum_1"] = median_time(lambda: subprocess.run(
            ["xargs", "-0", "sha256sum"], input=listing, cwd=root, stdout=subprocess.DEVNULL, check=True), r)
        full = [str(root / p) for p in paths]
        with ProcessPoolExecutor(cpus) as ex:  # started outside the timing: the pure hashing floor
            list(ex.map(_hash_files, [[]] * cpus))
            t["hashlib"] = median_time(lambda: list(ex.map(_hash_files, [full[i::cpus] for i in range(cpus)])), r)

        patterns = read_dockerignore(root)
        t["list_docker_py"] = median_time(lambda: exclude_paths(str(root), list(patterns)), r)
        t["list"] = median_time(lambda: BuildContext(root, use_cache=False).paths(), r)

        def empty_cache() -> None:
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir()

        t["cold"] = median_time(lambda: BuildContext(root).digest(), r, before=empty_cache)
        d_cold = BuildContext(root).digest()  # fills the cache for the warm runs
        t["lstat"] = median_time(lambda: [os.lstat(os.path.join(root, p)) for p in listed], r)
        t["warm"] = median_time(lambda: BuildContext(root).digest(), r)
        assert BuildContext(root).digest() == d_cold

        target = root / paths[len(paths) // 2]
        original = target.read_bytes()
        target.write_bytes(original[::-1])
        t0 = time.perf_counter()
        d_change = BuildContext(root).digest()
        t["changed"] = time.perf_counter() - t0
        assert d_change != d_cold
        target.write_bytes(original)
        old = time.time() - 3600
        os.utime(target, (old, old))
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    s = t["sha256sum"]
    print(f"sha256sum, {cpus} processes (baseline)          {s:8.3f} s")
    print(f"sha256sum, 1 process                          {t['sha256sum_1']:8.3f} s")
    print(f"hashlib, {cpus} processes, pre-split (floor)       {t['hashlib']:8.3f} s")
    print(f"listing: docker-py exclude_paths              {t['list_docker_py']:8.3f} s")
    print(f"listing: ours                                 {t['list']:8.3f} s   {t['list_docker_py'] / t['list']:5.1f}x faster than docker-py (aim <= 0.15 s)")
    print(f"ours, cold (empty stat cache)                 {t['cold']:8.3f} s   {s / t['cold']:5.2f}x faster than sha256sum, "
          f"{t['cold'] / t['hashlib']:4.2f}x the floor (aim <= 0.8 s)")
    print(f"lstat of every path (floor for warm)          {t['lstat']:8.3f} s")
    print(f"ours, warm (stat cache)                       {t['warm']:8.3f} s   {s / t['warm']:5.1f}x faster than sha256sum, "
          f"{t['warm'] / t['lstat']:4.2f}x the lstat floor (aim <= 0.15 s)")
    print(f"ours, warm, one file changed (single run)     {t['changed']:8.3f} s")
    if args.json:
        args.json.write_text(json.dumps({"cpus": cpus, "files": len(paths), "seconds": t}, indent=2))


if __name__ == "__main__":
    main()
