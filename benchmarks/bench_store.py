"""The cost of the content store: ``pair`` with and without storing, ``checkout`` vs ``cp``.

Makes 1,000 new files (500 pairs: an uncompressed NIfTI volume and a raw NRRD
segmentation each, distinct content; ``--size`` in all, default 4 GiB), then
alternates in one run, ``--runs`` times:

- ``pair --no-store`` with the state folder emptied (every file hashed: the
  cost of ``pair`` before the store existed, the baseline);
- ``pair`` with the state folder and the store emptied (every file hashed and
  stored): the ratio to the baseline is the cost of storing (goal: <= 1.3);
- ``cp`` of the 1,000 store objects to their working paths (the baseline of a
  restore), and ``checkout`` of the same 1,000 files after deleting them.

Prints medians and ratios, and which link types this filesystem supports.

    python benchmarks/bench_store.py [--size 4GiB] [--runs 3] [--dir /tmp/vss-bench-store]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import datasets

from volsegsync.index import read_index_file
from volsegsync.store import supported_links

EXE = str(Path(sys.executable).parent / "volsegsync")
PAIRS = 500
UNITS = {"k": 2**10, "m": 2**20, "g": 2**30}


def parse_size(text: str) -> int:
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in UNITS:
        return int(float(t[:-1]) * UNITS[t[-1]])
    return int(t)


def make(root: Path, size: int) -> None:
    """500 pairs, ``size`` bytes in all: volumes int16, segmentations uint8, same grid."""
    (root / "volumes").mkdir(parents=True, exist_ok=True)
    (root / "segmentations").mkdir(parents=True, exist_ok=True)
    depth = max(1, size // (PAIRS * 3 * 64 * 64))
    rng = np.random.default_rng(1)
    vol = rng.integers(0, 2000, size=(64, 64, depth), dtype=np.int16)
    seg = rng.integers(0, 3, size=(64, 64, depth), dtype=np.uint8)
    for i in range(PAIRS):
        vol.flat[0], seg.flat[0] = i, i % 3  # distinct content: no deduplication
        vol.flat[1], seg.flat[1] = i // 3, (i // 3) % 3
        seg.flat[2] = (i // 9) % 3
        name = datasets.name(i)
        datasets.write(root / "volumes" / f"{name}.nii", datasets.nifti_bytes(vol))
        datasets.write(root / "segmentations" / f"{name}-v1.nrrd", datasets.nrrd_bytes(seg))
    datasets.init(root)


def settle() -> None:
    """Write back what earlier runs left dirty, so that no run pays for another."""
    os.sync()


def run(root: Path, *args: str) -> float:
    settle()
    t = time.perf_counter()
    r = subprocess.run([EXE, "-C", str(root), *args, "-q"], check=False)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"volsegsync {' '.join(args)} exited {r.returncode}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4GiB", help="total size of the 1,000 files")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/vss-bench-store")
    args = ap.parse_args()
    root = Path(args.dir)
    size = parse_size(args.size)
    marker = root / ".volsegsync" / f"bench-{size}"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        make(root, size)
        marker.write_text("")
    state, cache = root / ".volsegsync" / "state", root / ".volsegsync" / "cache"
    files = sorted(p for p in root.rglob("*") if p.name.endswith((".nii", ".nrrd")))
    total = sum(p.stat().st_size for p in files)
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)

    def no_store() -> float:
        shutil.rmtree(state, ignore_errors=True)
        return run(root, "pair", "--no-store")

    def store() -> float:
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        return run(root, "pair")

    local = root / ".volsegsync" / "config.local.toml"

    def store_hardlink() -> float:
        """Storing by hard links (store.link = ["hardlink", "copy"]): no data written."""
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        local.write_text('[store]\nlink = ["hardlink", "copy"]\n')
        try:
            return run(root, "pair")
        finally:
            local.unlink()
            for p in files:  # working files again independent of the store
                data = p.read_bytes()
                p.unlink()
                datasets.write(p, data)

    def objects() -> list[tuple[Path, Path]]:
        index = read_index_file(root / "volsegsync.index")
        out = []
        for e in index.entries:
            for r in e.records():
                key = f"{index.algorithm}/{r.digest[:2]}/{r.digest[2:]}"
                out.append((cache / key, root / r.path))
        return out

    def cp() -> float:
        """One ``cp`` per file, as a shell script restoring them would."""
        pairs = objects()
        for _obj, dest in pairs:
            dest.unlink()
        settle()
        t = time.perf_counter()
        subprocess.run(
            ["sh", "-c", 'while read -r a b; do cp "$a" "$b"; done'],
            input="".join(f"{a} {b}\n" for a, b in pairs).encode(),
            check=True,
        )
        return time.perf_counter() - t

    def copyfile() -> float:
        """The same copies in one process (shutil.copyfile: no process per file)."""
        pairs = objects()
        for _obj, dest in pairs:
            dest.unlink()
        settle()
        t = time.perf_counter()
        for obj, dest in pairs:
            shutil.copyfile(obj, dest)
        return time.perf_counter() - t

    def checkout() -> float:
        for _obj, dest in objects():
            dest.unlink()
        return run(root, "checkout")

    base, stored, linked, cps, copies, checkouts = [], [], [], [], [], []
    for _ in range(args.runs):
        base.append(no_store())
        linked.append(store_hardlink())
        stored.append(store())
        cps.append(cp())
        copies.append(copyfile())
        checkouts.append(checkout())
    med = datasets.median
    b, s, c, f, k = med(base), med(stored), med(cps), med(copies), med(checkouts)
    h = med(linked)
    mib = total / 2**20

    def show(xs: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in xs)

    print(f"{len(files)} files, {mib:.0f} MiB, page cache warm, {args.runs} runs")
    print(f"link types here: {supported_links(root / '.volsegsync' / 'probe')}")
    print(f"pair --no-store (baseline): median {b:.2f} s ({show(base)})")
    print(f"pair (hash + store):        median {s:.2f} s ({show(stored)})  ratio {s / b:.2f}x")
    print(f"pair, store by hardlink:    median {h:.2f} s ({show(linked)})  ratio {h / b:.2f}x")
    print(f"cp, one per file:           median {c:.2f} s ({show(cps)})")
    print(f"shutil.copyfile, 1 process: median {f:.2f} s ({show(copies)})")
    print(
        f"checkout of 1,000 files:    median {k:.2f} s ({show(checkouts)})  "
        f"ratio {k / c:.2f}x to cp, {k / f:.2f}x to copyfile"
    )


if __name__ == "__main__":
    main()
