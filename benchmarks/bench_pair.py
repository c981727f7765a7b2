"""``volsegsync pair`` on a dataset it has not seen, against ``cat FILES > /dev/null``.

Makes N realistic pairs (default 32 pairs of 256x256x64, copied 8 times under
new names: 512 pairs, ~4.4 GiB), warms the
page cache, then alternates: ``cat`` over every file (the baseline: the speed of
reading them) and ``volsegsync pair`` with its state emptied (no stat cache, no
memo: every file is read and hashed). Prints medians and their ratio.

    python benchmarks/bench_pair.py [--pairs 32] [--runs 5] [--dir /tmp/vss-bench-pair]
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

EXE = str(Path(sys.executable).parent / "volsegsync")


def copy_pairs(root: Path, pairs: int, copies: int) -> None:
    """More pairs, quickly: copies of the generated ones under new names."""
    for c in range(1, copies):
        for i in range(pairs):
            src, dst = datasets.name(i), datasets.name(c * pairs + i)
            shutil.copyfile(root / "volumes" / f"{src}.nii.gz", root / "volumes" / f"{dst}.nii.gz")
            shutil.copyfile(
                root / "segmentations" / f"{src}-v1.nrrd", root / "segmentations" / f"{dst}-v1.nrrd"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--copies", type=int, default=16, help="copies of each pair (new names)")
    ap.add_argument("--dir", default="/tmp/vss-bench-pair")
    args = ap.parse_args()
    root = Path(args.dir)
    if not (root / ".volsegsync").exists():
        shutil.rmtree(root, ignore_errors=True)
        datasets.make_large(root, args.pairs, (256, 256, 64))
        copy_pairs(root, args.pairs, args.copies)
        datasets.init(root)
    files = sorted(str(p) for p in root.rglob("*") if p.name.endswith((".nii.gz", ".nrrd")))
    size = sum(Path(f).stat().st_size for f in files)
    subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm the cache

    def cat() -> float:
        t = time.perf_counter()
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - t

    def pair() -> float:
        shutil.rmtree(root / ".volsegsync" / "state")
        t = time.perf_counter()
        r = subprocess.run([EXE, "-C", str(root), "pair", "-q"], check=False)
        elapsed = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"pair exited {r.returncode}")
        return elapsed

    cats, pairs = [], []
    for _ in range(args.runs):
        cats.append(cat())
        pairs.append(pair())
    c, p = datasets.median(cats), datasets.median(pairs)
    mib = size / 2**20
    print(f"{len(files)} files, {mib:.0f} MiB, page cache warm")
    print(f"cat FILES > /dev/null: median {c:.3f} s ({mib / c:.0f} MiB/s)")
    print(
        f"volsegsync pair (nothing cached): median {p:.3f} s ({mib / p:.0f} MiB/s) "
        f"(runs: {', '.join(f'{x:.3f}' for x in pairs)})"
    )
    print(f"ratio pair / cat: {p / c:.2f}x")


if __name__ == "__main__":
    main()
