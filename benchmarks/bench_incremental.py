"""Issue 14's table: incremental cost of one edit at 100k, 400k, 1M tiny files.

For each size, a dataset of tiny real NIfTI/NRRD pairs made of hard links of a few
sources (quick to make; an edit replaces one link by a copy with new content, since
changing a hard link in place would change every link). Each figure is a median of
``--runs`` runs of the real command (a whole process, as a user runs it, with its
bytecode compiled as an installed package has it), against a baseline measured in
the same invocation:

- bare walk: ``os.scandir`` + ``lstat`` of every entry, in-process (the floor);
- status, nothing changed; first status after one file edited; status again;
  status after a ``touch`` of one hard link (which changes the stat of every link
  of the same source: about 60,000 files);
- verify --fast, nothing changed; first verify --fast after one file edited;
- pair of unseen files (state and index removed) against hashing them alone
  (read + xxh3-128 of every file, in-process, one thread);
- peak memory (max RSS) of status;
- ``dvc status`` (``--dvc PATH``: the dvc executable; at sizes up to 100k only) on
  the same files after ``dvc add`` of both folders.

The load average of the machine is printed with each size: on a shared machine
the absolute times mean little, the ratios (each against its baseline run just
before) a bit more.

    python benchmarks/bench_incremental.py --sizes 100000,400000 [--runs 3] [--dir /tmp/vss-inc]
    python benchmarks/bench_incremental.py --sizes 100000 --dvc /path/to/venv/bin/dvc

SLOW: 100k files take about 3 minutes (10 with ``--dvc``), 400k about 12, 1M about
35 on a quiet 2-core machine (mostly ``pair`` of the unseen files and the first
``verify --fast``, which reads every header once); 1M needs ~2 GB of free disk for
the state and index. Prints one markdown table row per size (raw figures before).
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import datasets
import numpy as np
import xxhash

EXE = str(Path(sys.executable).parent / "volsegsync")
LINKS = 60_000
# the commands run as installed: with their bytecode compiled once, not each run
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def hash_alone(root: Path) -> int:
    """Read and hash every image file, in-process, one thread: the baseline of pair."""
    n = 0
    for folder in ("volumes", "segmentations"):
        with os.scandir(root / folder) as it:
            for entry in it:
                with open(entry.path, "rb") as f:
                    xxhash.xxh3_128_hexdigest(f.read())
                n += 1
    return n


def make(root: Path, files: int) -> None:
    """``files`` tiny files: hard links of a few sources, half volumes, half segmentations."""
    pairs = files // 2
    src = root.parent / f"{root.name}-sources"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    (root / "volumes").mkdir(parents=True)
    (root / "segmentations").mkdir()
    vol = np.zeros((8, 8, 4), dtype=np.int16)
    seg = np.zeros((8, 8, 4), dtype=np.uint8)
    seg[2:5, 2:5, 1:3] = 1
    for i in range(pairs):
        k = i // LINKS  # a file system allows so many links to one inode (ext4: 65,000)
        if i % LINKS == 0:
            vol.flat[0] = k
            datasets.write(
                src / f"v{k}.nii.gz", gzip.compress(datasets.nifti_bytes(vol), 1, mtime=0)
            )
            datasets.write(src / f"s{k}.nrrd", datasets.nrrd_bytes(seg))
        name = datasets.name(i)
        os.link(src / f"v{k}.nii.gz", root / "volumes" / f"{name}.nii.gz")
        os.link(src / f"s{k}.nrrd", root / "segmentations" / f"{name}-v1.nrrd")
    datasets.init(root)


def edit(root: Path, i: int) -> None:
    """Replace one segmentation (a hard link) by a copy with other content, made old."""
    path = root / "segmentations" / f"{datasets.name(i)}-v1.nrrd"
    seg = np.zeros((8, 8, 4), dtype=np.uint8)
    seg[1:4, 1:4, 0:2] = 1
    seg.flat[0] = i % 200 + 1
    tmp = path.with_suffix(".tmp")
    datasets.write(tmp, datasets.nrrd_bytes(seg))
    os.replace(tmp, path)


def run(root: Path, *args: str, ok: tuple[int, ...] = (0,)) -> float:
    t = time.perf_counter()
    proc = subprocess.run([EXE, "-C", str(root), *args, "-q"], check=False, env=ENV)
    elapsed = time.perf_counter() - t
    if proc.returncode not in ok:
        raise SystemExit(f"volsegsync {' '.join(args)} exited {proc.returncode}")
    return elapsed


def max_rss_mb(root: Path, *args: str) -> float:
    proc = subprocess.Popen([EXE, "-C", str(root), *args, "-q"], env=ENV)
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss / 1024


def bench(root: Path, files: int, runs: int, dvc: str | None) -> dict[str, float]:
    t = time.perf_counter()
    make(root, files)
    print(f"[{files}] made in {time.perf_counter() - t:.1f} s", flush=True)
    r: dict[str, float] = {"load_before": os.getloadavg()[0]}
    r["hash_alone"] = datasets.timed(lambda: hash_alone(root), 1)
    r["pair_unseen"] = run(root, "pair")
    print(f"[{files}] pair of unseen files {r['pair_unseen']:.2f} s", flush=True)
    run(root, "status")  # warm the page cache of the state files
    run(root, "verify", "--fast")
    walks, statuses, verifies = [], [], []
    for _ in range(runs):  # interleaved: a change of the machine's load hits all alike
        walks.append(datasets.timed(lambda: datasets.bare_walk(str(root)), 1))
        statuses.append(run(root, "status"))
        verifies.append(run(root, "verify", "--fast"))
    r["walk"] = datasets.median(walks)
    r["status"] = datasets.median(statuses)
    r["verify_fast"] = datasets.median(verifies)
    firsts, agains, vfirsts, vagains, vbases = [], [], [], [], []
    for k in range(runs):  # each edit of a different file; time the first run after it
        edit(root, 7 + 1000 * k)
        firsts.append(run(root, "status", ok=(1,)))
        agains.append(run(root, "status", ok=(1,)))
        run(root, "verify", "--fast", ok=(0, 1))  # catches up with that edit
        vbases.append(run(root, "verify", "--fast", ok=(0, 1)))  # unchanged, this state
        edit(root, 11 + 1000 * k)
        vfirsts.append(run(root, "verify", "--fast", ok=(0, 1)))
        vagains.append(run(root, "verify", "--fast", ok=(0, 1)))
        run(root, "pair")
        run(root, "status")
    r["status_edit"] = datasets.median(firsts)
    r["status_again"] = datasets.median(agains)
    r["verify_base"] = datasets.median(vbases)
    r["verify_edit"] = datasets.median(vfirsts)
    r["verify_again"] = datasets.median(vagains)
    # touch one hard link: its stat changes (and that of every link of the same source)
    touch = root / "segmentations" / f"{datasets.name(3)}-v1.nrrd"
    os.utime(touch, (datasets.OLD + 5, datasets.OLD + 5))
    r["status_touch"] = run(root, "status", ok=(0, 1))
    run(root, "pair")
    r["rss_mb"] = max_rss_mb(root, "status")
    r["load_after"] = os.getloadavg()[0]
    if dvc and files <= 100_000:
        r["dvc_status"] = dvc_status(dvc, root, runs)
        r["dvc_walk"] = datasets.timed(lambda: datasets.bare_walk(str(root)), runs)
    return r


def dvc_status(dvc: str, root: Path, runs: int) -> float:
    """``dvc status`` on the same files (after ``dvc add`` of both folders, untimed)."""
    env = {**ENV, "DVC_NO_ANALYTICS": "1"}

    def call(*args: str) -> None:
        subprocess.run([dvc, *args], cwd=root, check=True, env=env, stdout=subprocess.DEVNULL)

    subprocess.run(["git", "init", "-q", str(root)], check=True)
    call("init", "-q")
    call("config", "core.analytics", "false")
    t = time.perf_counter()
    call("add", "-q", "volumes", "segmentations")
    print(f"dvc add took {time.perf_counter() - t:.1f} s", flush=True)

    def status() -> None:
        subprocess.run([dvc, "status", "-q"], cwd=root, check=False, env=env)

    status()
    return datasets.timed(status, runs)


GOALS = "goals: status unchanged <= 1.5x walk; after an edit <= 1.3x unchanged (both commands)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,400000", help="file counts, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/vss-bench-incremental")
    ap.add_argument("--dvc", metavar="PATH", help="dvc executable: also time dvc status (<=100k)")
    args = ap.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        r = bench(Path(args.dir) / str(size), size, args.runs, args.dvc)
        print(f"[{size}] {r}", flush=True)
        rows.append((size, r))
        shutil.rmtree(Path(args.dir) / str(size), ignore_errors=True)
        shutil.rmtree(Path(args.dir) / f"{size}-sources", ignore_errors=True)
    print()
    print(GOALS)
    print(
        "| files | bare walk | status unchanged | first status after one edit | status again "
        "| after a touch | verify --fast unchanged | after the edit | pair unseen vs hash alone "
        "| status max RSS | dvc status | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, r in rows:
        w, s, v = r["walk"], r["status"], r["verify_base"]
        dvc = (
            f"{r['dvc_status']:.2f} s ({r['dvc_status'] / r['dvc_walk']:.1f}x walk)"
            if "dvc_status" in r
            else "-"
        )
        print(
            f"| {size:,} | {w:.2f} s | {s:.2f} s ({s / w:.2f}x walk) "
            f"| {r['status_edit']:.2f} s ({r['status_edit'] / s:.2f}x unchanged) "
            f"| {r['status_again']:.2f} s | {r['status_touch']:.2f} s "
            f"| {r['verify_fast']:.2f} s ({r['verify_fast'] / s:.2f}x status) "
            f"| {r['verify_edit']:.2f} s ({r['verify_edit'] / v:.2f}x unchanged) "
            f"| {r['pair_unseen']:.1f} s vs {r['hash_alone']:.1f} s "
            f"({r['pair_unseen'] / r['hash_alone']:.2f}x) | {r['rss_mb']:.0f} MB | {dvc} "
            f"| {r['load_before']:.1f} / {r['load_after']:.1f} |"
        )


if __name__ == "__main__":
    main()
