"""``volsegsync export nnunet`` of N pairs, against ``cp`` of the same files.

Makes N pairs (default 1,000: NIfTI volumes and raw LPS NRRD label maps,
64x64x32), pairs and verifies them once (so the dataset's caches are warm, as
after any ``verify``), warms the page cache, then alternates:

- ``cp FILES DIR/`` of every volume and segmentation into an empty folder (the
  baseline: the cost of putting the same bytes somewhere else);
- ``volsegsync export nnunet OUT`` into an empty OUT (volumes linked, NRRD
  segmentations converted to NIfTI on the volume grid, dataset.json);
- the same export again with nothing changed (must stay under 1 s).

Also times one export with the dataset's state emptied (verify from scratch).
Prints medians and the ratio export / cp.

    python benchmarks/bench_export.py [--pairs 1000] [--runs 5] [--dir /tmp/vss-bench-export]
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


def run(*args: str) -> float:
    t = time.perf_counter()
    r = subprocess.run([EXE, *args], check=False, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"volsegsync {' '.join(args)} exited {r.returncode}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default="/tmp/vss-bench-export")
    args = ap.parse_args()
    base = Path(args.dir)
    root, out, copy = base / "ds", base / "out", base / "cp"
    if not (root / ".volsegsync").exists():
        shutil.rmtree(base, ignore_errors=True)
        datasets.make_small(root, args.pairs, (64, 64, 32))
        datasets.init(root)
    files = sorted(str(p) for p in root.rglob("*") if p.name.endswith((".nii.gz", ".nrrd")))
    size = sum(Path(f).stat().st_size for f in files)
    shutil.rmtree(root / ".volsegsync" / "state", ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    cold = run("-C", str(root), "export", "nnunet", str(out), "-q")
    run("-C", str(root), "verify", "-q")  # caches warm, as after any verify

    def cp() -> float:
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir(parents=True)
        t = time.perf_counter()
        subprocess.run(["cp", *files, str(copy)], check=True)
        return time.perf_counter() - t

    def export() -> float:
        shutil.rmtree(out, ignore_errors=True)
        return run("-C", str(root), "export", "nnunet", str(out), "-q")

    def rerun() -> float:
        return run("-C", str(root), "export", "nnunet", str(out), "-q")

    cps, exports, reruns = [], [], []
    for _ in range(args.runs):
        cps.append(cp())
        exports.append(export())
        reruns.append(rerun())
    c, e, r = datasets.median(cps), datasets.median(exports), datasets.median(reruns)
    mib = size / 2**20
    print(f"{args.pairs} pairs, {len(files)} files, {mib:.0f} MiB, page cache warm")
    print(f"cp FILES DIR/: median {c:.3f} s")
    print(
        f"volsegsync export nnunet (empty OUT, dataset caches warm): median {e:.3f} s "
        f"(runs: {', '.join(f'{x:.3f}' for x in exports)})"
    )
    print(f"ratio export / cp: {e / c:.2f}x")
    print(
        f"re-run, nothing changed: median {r:.3f} s (runs: {', '.join(f'{x:.3f}' for x in reruns)})"
    )
    print(f"first export with the dataset's state emptied (verify from scratch): {cold:.3f} s")


if __name__ == "__main__":
    main()
