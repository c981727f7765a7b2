"""``volsegsync pair`` of unseen tiny files: the per-file overhead (issue 14 point 2).

Makes ``--pairs`` tiny real pairs (NIfTI volumes of distinct content, NRRD
segmentations; 2 files a pair), then alternates, each a median of ``--runs``
runs, page cache warm:

- hash alone: read and xxh3-128 every file, in-process, one thread (the floor of
  ``pair``: what hashing the files costs without any bookkeeping);
- ``cp -r`` of both folders to a scratch folder (the floor of storing: what
  copying the same files costs);
- ``volsegsync pair --no-store`` with state, index and store removed (goal:
  at most 2x hash alone);
- ``volsegsync pair`` (storing every file into the content store), state,
  index and store removed (compared with hash alone + ``cp -r``).

    python benchmarks/bench_pair_unseen.py [--pairs 50000] [--runs 3] [--dir /tmp/vss-bench-unseen]
        [--baseline EXE] [--skip-store]

Each command's CPU time (user + system) is printed too: on a loaded machine it
leaves out the waiting. Session 7, 40,000 files (``--pairs 20000 --runs 5 --dir
/tmp/pf-unseen``, load 3-4): hash alone 0.56 s, ``pair --no-store`` 2.47 s =
4.4x (9.0x before). Session 8 (one pack of case shards, small files hashed per
folder, names parsed per folder; load 4.9, under load): hash alone 0.54 s
(0.44 s CPU), ``pair --no-store`` 1.76 s = 3.25x (CPU 1.40 s = 3.20x);
docs/performance.md says where the rest goes. Session 9 (the walk, the hashing
and the memo files shared with forked children; quiet, load 1.0-1.6, session 8's
build as ``--baseline``, ``--skip-store``): 40,000 files (``--runs 7``), hash
alone 0.41 s, ``pair --no-store`` 0.73 s = 1.79x (CPU 2.84x), session 8's build
1.09 s = 2.68x; 100,000 files (``--pairs 50000 --runs 5``), 1.05 s, 1.97 s =
1.87x (CPU 2.92x), session 8's 3.08 s = 2.93x. With the storing runs in the same
rounds, their new files keep the disk busy into the next rounds (1.74x to 2.24x).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import datasets
from bench_incremental import hash_alone  # read + xxh3-128, one thread

EXE = str(Path(sys.executable).parent / "volsegsync")
FOLDERS = ("volumes", "segmentations")  # where hash_alone reads


def reset(root: Path) -> None:
    """Nothing seen: no state, no index, no store."""
    meta = root / ".volsegsync"
    for sub in ("state", "cache"):
        shutil.rmtree(meta / sub, ignore_errors=True)
    (root / "volsegsync.index").unlink(missing_ok=True)


CPU: dict[str, list[float]] = {}  # CPU seconds (user + system) of each timed command


def timed_run(cmd: list[str], label: str = "") -> float:
    t = time.perf_counter()
    before = os.times()
    proc = subprocess.run(cmd, check=False)
    elapsed = time.perf_counter() - t
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    CPU.setdefault(label, []).append(cpu)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/vss-bench-unseen")
    ap.add_argument(
        "--skip-store",
        action="store_true",
        help="time hashing alone and pair --no-store only (no cp -r, no storing pair: "
        "their tens of thousands of new files keep the disk busy for the runs after)",
    )
    ap.add_argument(
        "--baseline",
        metavar="EXE",
        help="another build's volsegsync: its pair --no-store alternates with this one's",
    )
    args = ap.parse_args()
    base = Path(args.dir)
    root = base / f"ds{args.pairs}"
    scratch = base / "cp-target"
    if not (root / ".volsegsync").exists():
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        datasets.make_small(root, args.pairs)
        datasets.init(root)
        print(f"made {2 * args.pairs} files in {time.perf_counter() - t:.1f} s", flush=True)
    files = hash_alone(root)  # warms the page cache
    pair = [EXE, "-C", str(root), "pair", "-q"]
    cp = ["cp", "-r", *(str(root / f) for f in FOLDERS), str(scratch)]
    out: dict[str, list[float]] = {"hash": [], "cp": [], "nostore": [], "store": [], "base": []}
    base_pair = [args.baseline, "-C", str(root), "pair", "-q", "--no-store"]
    for _ in range(args.runs):
        t = time.perf_counter()
        c = time.process_time()
        hash_alone(root)
        out["hash"].append(time.perf_counter() - t)
        CPU.setdefault("hash", []).append(time.process_time() - c)
        if not args.skip_store:
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            out["cp"].append(timed_run(cp, "cp"))
            shutil.rmtree(scratch)
        if args.baseline:
            reset(root)
            out["base"].append(timed_run(base_pair, "base"))
        reset(root)
        out["nostore"].append(timed_run([*pair, "--no-store"], "nostore"))
        if not args.skip_store:
            reset(root)
            out["store"].append(timed_run(pair, "store"))
    m = {k: datasets.median(v) for k, v in out.items() if v}
    print(f"{files} unseen tiny files, page cache warm, medians of {args.runs} runs")
    print(f"hash alone (read + xxh3-128, one thread): {m['hash']:.2f} s")
    if "cp" in m:
        print(f"cp -r of the same files:                  {m['cp']:.2f} s")
    print(
        f"pair --no-store: {m['nostore']:.2f} s = {m['nostore'] / m['hash']:.2f}x hash alone "
        f"(goal <= 2x)"
    )
    if args.baseline:
        print(
            f"baseline pair --no-store ({args.baseline}): {m['base']:.2f} s = "
            f"{m['base'] / m['hash']:.2f}x hash alone"
        )
    if "store" in m:
        floor = m["hash"] + m["cp"]
        print(
            f"pair (storing):  {m['store']:.2f} s = {m['store'] / m['hash']:.2f}x hash alone, "
            f"{m['store'] / floor:.2f}x hash alone + cp -r ({floor:.2f} s)"
        )
    cpu = {k: datasets.median(v) for k, v in CPU.items()}
    stored = f", pair {cpu['store']:.2f} s" if "store" in cpu else ""
    print(
        f"CPU (user + system; what a loaded machine's waiting leaves out): hash alone "
        f"{cpu['hash']:.2f} s, pair --no-store {cpu['nostore']:.2f} s = "
        f"{cpu['nostore'] / cpu['hash']:.2f}x{stored}"
    )
    print(f"load average {os.getloadavg()[0]:.1f}")
    print("raw:", {k: [round(x, 2) for x in v] for k, v in out.items()})
    print("raw CPU:", {k: [round(x, 2) for x in v] for k, v in CPU.items()})


if __name__ == "__main__":
    main()
