"""``volsegsync status`` on unchanged data, warm stat cache, against a bare walk.

Makes N pairs (default 50,000 = 100,000 files), runs ``pair`` once to fill the
stat cache, then times ``volsegsync status`` (a whole process, as a user runs it)
and, as the baseline in the same invocation, a bare ``os.scandir`` + ``lstat``
walk of the same tree. Prints medians and their ratio.

    python benchmarks/bench_status.py [--pairs 50000] [--runs 5] [--dir /tmp/vss-bench-status]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import datasets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default="/tmp/vss-bench-status")
    args = ap.parse_args()
    root = Path(args.dir)
    exe = str(Path(sys.executable).parent / "volsegsync")
    if not (root / "volsegsync.index").exists():
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        datasets.make_small(root, args.pairs)
        datasets.init(root)
        print(f"made {args.pairs} pairs in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        subprocess.run([exe, "-C", str(root), "pair", "-q"], check=False)
        print(f"first pair (hash everything, fill the stat cache): {time.perf_counter() - t:.2f} s")

    def status() -> None:
        r = subprocess.run([exe, "-C", str(root), "status", "-q"], check=False)
        if r.returncode != 0:
            raise SystemExit(f"status exited {r.returncode}: dataset not in sync?")

    status()  # warm the page cache of our own state files
    walk = datasets.run_times(lambda: datasets.bare_walk(str(root)), args.runs)
    stat = datasets.run_times(status, args.runs)
    files = datasets.bare_walk(str(root))
    print(f"files: {files}")
    print(f"bare scandir+lstat walk: median {datasets.median(walk):.3f} s")
    print(
        f"volsegsync status:       median {datasets.median(stat):.3f} s "
        f"(runs: {', '.join(f'{s:.3f}' for s in stat)})"
    )
    print(f"ratio status / bare walk: {datasets.median(stat) / datasets.median(walk):.2f}x")


if __name__ == "__main__":
    main()
