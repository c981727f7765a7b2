"""An index of N pairs (default 1M): parse, write and ``git diff`` time, and size.

Builds a synthetic index of ``--pairs`` complete pairs with paths of today's length
(``volumes/C000001-Bench_T2w-D01012000.nii.gz``), then times, as medians of
``--runs``:

- write: format the entries and write the file atomically (``index.write_index``);
- parse: read and parse it (``index.read_index``);
- git: commit it in a scratch repository, change one line, time ``git diff`` of
  it and ``git add`` + ``git commit`` of the change (what a reviewer and an
  annotator pay);
- a "split" variant: the same entries in 256 files by case prefix (one changed
  file per edit), to weigh splitting the index.

    python benchmarks/bench_index.py [--pairs 1000000] [--runs 3] [--dir /tmp/vss-bench-index]
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

sys.path.insert(0, str(Path(__file__).parent))
import datasets
import xxhash

from volsegsync.index import Entry, FileRecord, format_index, read_index, write_index


def entries(n: int) -> list[Entry]:
    out = []
    for i in range(n):
        name = datasets.name(i)
        vol = FileRecord(
            f"volumes/{name}.nii.gz", 1_048_576 + i, xxhash.xxh3_128_hexdigest(b"v%d" % i)
        )
        seg = FileRecord(
            f"segmentations/{name}-v2.nrrd", 2048 + i, xxhash.xxh3_128_hexdigest(b"s%d" % i)
        )
        out.append(Entry(vol, seg, 2))
    return out


def timed(func: Callable[[], object], runs: int) -> float:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        func()
        out.append(time.perf_counter() - t)
    return datasets.median(out)


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/vss-bench-index")
    args = ap.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    index = root / "volsegsync.index"
    t = time.perf_counter()
    es = entries(args.pairs)
    print(f"{args.pairs} entries made in {time.perf_counter() - t:.1f} s")
    write = timed(lambda: write_index(index, es), args.runs)
    size = index.stat().st_size
    parse = timed(lambda: read_index(index), args.runs)
    git(root, "init", "-q")
    git(root, "config", "user.email", "bench@example.org")
    git(root, "config", "user.name", "bench")
    git(root, "add", "volsegsync.index")
    t = time.perf_counter()
    git(root, "commit", "-qm", "index")
    first_commit = time.perf_counter() - t
    text = index.read_text()
    changed = text.replace("-v2.nrrd\t2\t", "-v3.nrrd\t3\t", 1)
    index.write_text(changed)
    diff = timed(lambda: git(root, "diff", "--stat"), args.runs)
    patch = git(root, "diff").stdout
    t = time.perf_counter()
    git(root, "add", "volsegsync.index")
    git(root, "commit", "-qm", "one new version")
    commit = time.perf_counter() - t
    log = timed(lambda: git(root, "log", "-p", "-1", "--format=%H"), args.runs)
    print(f"index of {args.pairs:,} pairs: {size / 1e6:.1f} MB")
    print(f"write (format + atomic write): {write:.2f} s")
    print(f"parse (read + parse):          {parse:.2f} s")
    print(f"git commit of the whole index: {first_commit:.2f} s")
    print(f"git diff --stat, one changed line: {diff:.2f} s ({len(patch)} bytes of patch)")
    print(f"git add + commit of the change:    {commit:.2f} s")
    print(f"git log -p -1 (the review):        {log:.2f} s")
    # the same entries split in 256 files by case prefix (a design weighed in the docs)
    split = root / "split"
    split.mkdir()
    t = time.perf_counter()
    groups: dict[str, list[Entry]] = {}
    for e in es:
        assert e.volume is not None
        groups.setdefault(xxhash.xxh3_64_hexdigest(e.volume.path.encode())[:2], []).append(e)
    for key, group in groups.items():
        (split / key).write_text(format_index(group))
    print(f"split into {len(groups)} files: {time.perf_counter() - t:.2f} s to write all")
    os.sync()


if __name__ == "__main__":
    main()
