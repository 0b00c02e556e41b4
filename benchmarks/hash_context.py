"""Benchmark: content hashing of a build context, cold and warm, against sha256sum.

Makes a tree of N files totalling S bytes (default 20,000 files, 1 GiB) plus a
``.dockerignore``, then measures in one run:

- ``sha256sum`` over the same included files (``xargs -0 -P1 sha256sum``), the baseline;
- our cold hash (empty stat cache): every file streamed through SHA-256;
- our warm hash (stat cache filled): the unchanged tree re-hashed from ``stat`` alone;
- warm after one file changed.

The page cache is warmed first (one read of every file) so both cold runs read
from memory and compare hashing, not the disk. Ratios are printed; nothing asserts.

    python3 benchmarks/hash_context.py [--files 20000] [--mib 1024] [--dir /var/tmp/flyimage-bench-tree]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect_flyimage.context import BuildContext  # noqa: E402


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
    for dirpath, _, names in os.walk(root):
        for n in names:
            os.utime(os.path.join(dirpath, n), (old, old))
    marker.write_text(f"{files} {total}")


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    value = fn()
    return time.perf_counter() - t, value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/flyimage-bench-tree"))
    args = ap.parse_args()
    root = args.dir
    print(f"tree: {args.files} files, {args.mib} MiB at {root}")
    make_tree(root, args.files, args.mib << 20)

    cache = Path(tempfile.mkdtemp(prefix="flyimage-bench-cache-"))
    os.environ["PREFECT_FLYIMAGE_CACHE_DIR"] = str(cache)
    try:
        paths = [p for p in BuildContext(root).paths() if (root / p).is_file()]
        listing = "\0".join(paths).encode()
        # Warm the page cache so both contenders hash from memory.
        subprocess.run(["xargs", "-0", "cat"], input=listing, cwd=root, stdout=subprocess.DEVNULL, check=True)

        t_sum, _ = timed(lambda: subprocess.run(
            ["xargs", "-0", "sha256sum"], input=listing, cwd=root, stdout=subprocess.DEVNULL, check=True))
        t_list, _ = timed(lambda: BuildContext(root, use_cache=False).paths())
        t_cold, d_cold = timed(lambda: BuildContext(root).digest())
        t_warm, d_warm = timed(lambda: BuildContext(root).digest())
        assert d_cold == d_warm
        target = root / paths[len(paths) // 2]
        target.write_bytes(target.read_bytes()[::-1])
        t_change, d_change = timed(lambda: BuildContext(root).digest())
        assert d_change != d_warm
        target.write_bytes(target.read_bytes()[::-1])
        old = time.time() - 3600
        os.utime(target, (old, old))
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    print(f"sha256sum (baseline)           {t_sum:8.3f} s")
    print(f"listing after .dockerignore    {t_list:8.3f} s")
    print(f"ours, cold (no stat cache)     {t_cold:8.3f} s   ratio to sha256sum: {t_cold / t_sum:5.2f}x (aim <= 1.3x)")
    print(f"ours, warm (stat cache)        {t_warm:8.3f} s   (aim < 0.3 s)  {t_sum / t_warm:6.1f}x faster than sha256sum")
    print(f"ours, warm, one file changed   {t_change:8.3f} s")


if __name__ == "__main__":
    main()
