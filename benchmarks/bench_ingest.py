"""``volsegsync ingest --by metadata`` of a delivery against ``cp`` of the same files.

Makes a dataset of N volumes (default 500, 256x256x64, each on its own voxel grid:
the z spacing differs) without segmentations, and a delivery folder of N renamed
segmentations (``Segmentation_000123.seg.nrrd``, raw NRRD, 4 MiB each) that only
their header can match. Then alternates, in one invocation: ``cp`` of the
delivery's files into an empty folder (the baseline: the cost of copying them)
and ``volsegsync ingest --by metadata`` into a reset dataset (no new files, the
index and store as before, state emptied). Prints medians and their ratio.

    python benchmarks/bench_ingest.py [--count 500] [--runs 3] [--dir /tmp/vss-bench-ingest]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import datasets

EXE = str(Path(sys.executable).parent / "volsegsync")
SHAPE = (256, 256, 64)


def spacing(i: int) -> tuple[float, float, float]:
    return (0.8, 0.8, 1.0 + 0.02 * i)  # one voxel grid per case


def make(root: Path, delivery: Path, count: int) -> None:
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(delivery, ignore_errors=True)
    (root / "volumes").mkdir(parents=True)
    delivery.mkdir(parents=True)
    volume = np.zeros(SHAPE, dtype=np.int16)
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[100:150, 90:160, 20:40] = 1
    seg[40:60, 40:60, 10:12] = 2
    for i in range(count):
        data = gzip.compress(datasets.nifti_bytes(volume, spacing(i)), 1)
        datasets.write(root / "volumes" / f"{datasets.name(i)}.nii.gz", data)
        seg[0, 0, 0] = i % 3  # distinct content per file
        seg[1, 0, 0] = (i // 3) % 3
        seg[2, 0, 0] = (i // 9) % 3
        seg[3, 0, 0] = (i // 27) % 3
        seg[4, 0, 0] = (i // 81) % 3
        seg[5, 0, 0] = (i // 243) % 3
        datasets.write(
            delivery / f"Segmentation_{i:06d}.seg.nrrd", datasets.nrrd_bytes(seg, spacing(i))
        )
    datasets.init(root)
    subprocess.run([EXE, "-C", str(root), "pair", "-q"], check=False)  # volumes only: exit 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=500, help="segmentations delivered")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/vss-bench-ingest")
    args = ap.parse_args()
    base = Path(args.dir)
    root, delivery, target = base / "ds", base / "delivery", base / "cp-target"
    make(root, delivery, args.count)
    index = (root / "volsegsync.index").read_bytes()
    files = sorted(str(p) for p in delivery.iterdir())
    size = sum(Path(f).stat().st_size for f in files)
    subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm the cache

    def cp() -> float:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        t = time.perf_counter()
        subprocess.run(["cp", *files, str(target)], check=True)
        return time.perf_counter() - t

    def reset() -> None:
        for p in (root / "volumes").glob("*.nrrd"):
            p.unlink()
        (root / "volsegsync.index").write_bytes(index)
        (root / ".volsegsync" / "provenance.tsv").unlink(missing_ok=True)
        shutil.rmtree(root / ".volsegsync" / "state", ignore_errors=True)
        shutil.rmtree(root / ".volsegsync" / "cache", ignore_errors=True)

    def ingest() -> float:
        reset()
        t = time.perf_counter()
        r = subprocess.run(
            [EXE, "-C", str(root), "ingest", str(delivery), "--by", "metadata", "--format", "json"],
            capture_output=True,
            check=False,
        )
        elapsed = time.perf_counter() - t
        summary = json.loads(r.stdout)["summary"] if r.stdout else {}
        if r.returncode != 0 or summary.get("new") != args.count:
            raise SystemExit(f"ingest exited {r.returncode}: {summary} {r.stderr[-500:]!r}")
        return elapsed

    cps, ingests = [], []
    for _ in range(args.runs):
        cps.append(cp())
        ingests.append(ingest())
    c, i = datasets.median(cps), datasets.median(ingests)
    mib = size / 2**20
    print(f"{len(files)} segmentations {SHAPE}, {mib:.0f} MiB, page cache warm")
    print(f"cp FILES DIR: median {c:.3f} s ({mib / c:.0f} MiB/s)")
    print(
        f"volsegsync ingest --by metadata: median {i:.3f} s ({mib / i:.0f} MiB/s, "
        f"{i / c:.1f}x cp) (runs: {', '.join(f'{x:.3f}' for x in ingests)})"
    )
    shutil.rmtree(target, ignore_errors=True)


if __name__ == "__main__":
    main()
