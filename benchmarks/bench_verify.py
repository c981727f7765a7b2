"""``volsegsync verify``: throughput, incremental cost, and header-only vs full load.

1. Header-only verification (``verify --fast``) of N tiny pairs (default 10,000)
   with our caches empty: pairs per second.
2. The same after changing 1% of the segmentations: cost relative to (1).
   Likewise for the full verification (content pass included).
3. Side by side on realistic images (default 12 pairs of 256x256x64 int16):
   a full-load check as nnU-Net does it (every image and label decoded per
   case, then shapes and spacings compared) against our header-only check of
   the same pair (two headers read, geometry compared). Per pair, medians.

    python benchmarks/bench_verify.py [--pairs 10000] [--runs 3] [--large 12]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import datasets

EXE = str(Path(sys.executable).parent / "volsegsync")
STATE_FILES = (
    "headers.db",
    "content.db",
    "stat.db",
    "snapshot.marshal",
    "index.marshal",
    "verify-fast.marshal",
    "verify-full.marshal",
)


def run(root: Path, *args: str) -> float:
    t = time.perf_counter()
    r = subprocess.run([EXE, "-C", str(root), "verify", "-q", *args], check=False)
    elapsed = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise SystemExit(f"verify exited {r.returncode}")
    return elapsed


def forget(root: Path) -> None:
    for name in STATE_FILES:
        (root / ".volsegsync" / "state" / name).unlink(missing_ok=True)


def change_one_percent(root: Path, pairs: int, round_: int) -> int:
    """Rewrite 1% of the segmentations with new content (and an old, new mtime)."""
    step = 100
    seg = np.zeros((8, 8, 4), dtype=np.uint8)
    seg[2:5, 2:5, 1:3] = 1
    changed = 0
    for i in range(0, pairs, step):
        seg.flat[7] = (round_ % 200) + 1
        path = root / "segmentations" / f"{datasets.name(i)}-v1.nrrd"
        path.write_bytes(datasets.nrrd_bytes(seg))
        os.utime(path, (datasets.OLD + round_, datasets.OLD + round_))
        changed += 1
    return changed


def incremental(
    root: Path, pairs: int, runs: int, fast: bool
) -> tuple[list[float], list[float], list[float]]:
    """Cold runs, runs after a 1% change, and runs with nothing changed (fixed cost)."""
    args = ("--fast",) if fast else ()
    cold, changed, unchanged = [], [], []
    for r in range(runs):
        forget(root)
        cold.append(run(root, *args))
        change_one_percent(root, pairs, r + 1 + (100 if fast else 0))
        changed.append(run(root, *args))
        unchanged.append(run(root, *args))
    return cold, changed, unchanged


def per_pair(
    func: Callable[[Path, Path], object], cases: list[tuple[Path, Path]], runs: int
) -> float:
    times = []
    for _ in range(runs):
        for vol, seg in cases:
            t = time.perf_counter()
            func(vol, seg)
            times.append(time.perf_counter() - t)
    return datasets.median(times)


def full_load(vol: Path, seg: Path) -> bool:
    """As nnU-Net's dataset integrity check: load image and label, compare."""
    import nibabel as nib
    import nrrd

    image = nib.load(vol)
    data = np.asanyarray(image.dataobj)
    labels, header = nrrd.read(str(seg))
    spacing = np.linalg.norm(header["space directions"], axis=1)
    ok = data.shape == labels.shape and np.allclose(spacing, image.header.get_zooms()[:3])
    np.unique(labels)
    return bool(ok)


def header_only(vol: Path, seg: Path) -> bool:
    from volsegsync.geometry import compare
    from volsegsync.headers import read_geometry

    return not compare(read_geometry(vol), read_geometry(seg))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--large", type=int, default=12)
    ap.add_argument("--dir", default="/tmp/vss-bench-verify")
    args = ap.parse_args()
    small = Path(args.dir) / "small"
    large = Path(args.dir) / "large"
    if not (small / ".volsegsync").exists():
        shutil.rmtree(small, ignore_errors=True)
        datasets.make_small(small, args.pairs)
        datasets.init(small)
    if not (large / ".volsegsync").exists():
        shutil.rmtree(large, ignore_errors=True)
        datasets.make_large(large, args.large, (256, 256, 64))
        datasets.init(large)

    for fast in (True, False):
        name = "verify --fast" if fast else "verify (full)"
        cold, changed, unchanged = incremental(small, args.pairs, args.runs, fast=fast)
        c, ch, un = (datasets.median(x) for x in (cold, changed, unchanged))
        print(
            f"{name}, {args.pairs} pairs, caches empty: median {c:.2f} s "
            f"= {args.pairs / c:.0f} pairs/s (runs: {', '.join(f'{x:.2f}' for x in cold)})"
        )
        print(
            f"{name} after changing 1% of the files: median {ch:.3f} s "
            f"= {100 * ch / c:.1f}% of the first run; with nothing changed: {un:.3f} s, "
            f"so the change itself costs {ch - un:.3f} s = {100 * (ch - un) / c:.1f}%"
        )

    cases = [
        (
            large / "volumes" / f"{datasets.name(i)}.nii.gz",
            large / "segmentations" / f"{datasets.name(i)}-v1.nrrd",
        )
        for i in range(args.large)
    ]
    assert all(header_only(v, s) for v, s in cases), "the large pairs should match"
    full = per_pair(full_load, cases, args.runs)
    head = per_pair(header_only, cases, args.runs)
    mib = sum(v.stat().st_size + s.stat().st_size for v, s in cases) / len(cases) / 2**20
    print(
        f"per pair of 256x256x64 ({mib:.1f} MiB on disk): full load (nnU-Net style) "
        f"median {full * 1000:.1f} ms, header-only {head * 1000:.2f} ms: "
        f"{full / head:.0f}x faster"
    )


if __name__ == "__main__":
    main()
