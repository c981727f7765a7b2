"""Issue 14 point 3: `status` with the file-system monitor, at 100k, 400k and 1M files.

For each size, a dataset of tiny real NIfTI/NRRD pairs in folders of ``--per-folder``
files (hard links of a few sources: quick to make; an edit replaces one link by a
copy with other content). Each figure is a median of ``--runs`` runs of the real
command (a whole process, as a user runs it), against baselines measured in the
same invocation:

- bare walk: ``os.scandir`` + ``lstat`` of every entry, in-process (the floor);
- status without the monitor (the walk), nothing changed and after one edit;
- status with the monitor (``[fsmonitor] enabled = true``, daemon started by
  ``volsegsync fsmonitor start``), nothing changed, first run after one edit, and
  the run after that;
- the daemon's start (it watches every folder) and its memory.

    python benchmarks/bench_fsmonitor.py --sizes 100000,400000,1000000 [--runs 5]

Each command's CPU seconds (user + system, from ``wait4``) are shown too: on a
loaded machine they say more than the wall time. Prints one markdown table row per
size (and the raw figures before it). Needs
``fs.inotify.max_user_watches`` above the number of folders.
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
import bench_incremental
import datasets
from bench_incremental import run
from datasets import bare_walk, timed

EXE = str(Path(sys.executable).parent / "volsegsync")


def folder(i: int, per_folder: int) -> str:
    return f"g{i * 2 // per_folder:05d}"


def make(root: Path, files: int, per_folder: int) -> None:
    """``files`` tiny files, ``per_folder`` a folder (pairs side by side): the hard links
    of bench_incremental's dataset, moved into folders."""
    bench_incremental.make(root, files)
    made: set[str] = set()
    for i in range(files // 2):
        f = root / folder(i, per_folder)
        if f.name not in made:
            f.mkdir()
            made.add(f.name)
        name = datasets.name(i)
        os.rename(root / "volumes" / f"{name}.nii.gz", f / f"{name}.nii.gz")
        os.rename(root / "segmentations" / f"{name}-v1.nrrd", f / f"{name}-v1.nrrd")
    (root / "volumes").rmdir()
    (root / "segmentations").rmdir()


def edit(root: Path, i: int, per_folder: int) -> None:
    """Replace one segmentation (a hard link) by a copy with other content, made old."""
    path = root / folder(i, per_folder) / f"{datasets.name(i)}-v1.nrrd"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # another label in the last voxel
    tmp = path.with_suffix(".tmp")
    datasets.write(tmp, bytes(data))
    os.replace(tmp, path)


def monitor(root: Path, enabled: bool) -> None:
    local = root / ".volsegsync" / "config.local.toml"
    local.write_text(f"[fsmonitor]\nenabled = {'true' if enabled else 'false'}\n")


def daemon_rss_mb(root: Path) -> float:
    out = subprocess.run(
        [EXE, "-C", str(root), "fsmonitor", "status", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    import json

    pid = json.loads(out)["pid"]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


CPU: dict[str, list[float]] = {}  # label -> CPU seconds (user + system) of each run


def cmd(label: str, root: Path, *args: str, ok: tuple[int, ...] = (0,)) -> float:
    """Wall seconds of one whole command; its CPU seconds are kept under ``label``
    (on a loaded machine the wall time says more about the neighbours)."""
    t = time.perf_counter()
    quiet = () if args == ("--version",) else ("-q",)
    proc = subprocess.Popen([EXE, "-C", str(root), *args, *quiet], stdout=subprocess.DEVNULL)
    _, code, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(code)
    if proc.returncode not in ok:
        raise SystemExit(f"volsegsync {' '.join(args)} exited {proc.returncode}")
    CPU.setdefault(label, []).append(usage.ru_utime + usage.ru_stime)
    return elapsed


def bench(root: Path, files: int, runs: int, per_folder: int) -> dict[str, float]:
    t = time.perf_counter()
    make(root, files, per_folder)
    print(f"[{files}] made in {time.perf_counter() - t:.1f} s", flush=True)
    CPU.clear()
    r: dict[str, float] = {}
    r["pair"] = run(root, "pair")
    print(f"[{files}] pair {r['pair']:.1f} s", flush=True)
    monitor(root, False)
    run(root, "status")
    r["walk"] = timed(lambda: bare_walk(str(root)), runs)
    r["status"] = timed(lambda: cmd("status", root, "status"), runs)
    r["version"] = timed(lambda: cmd("version", root, "--version"), runs)
    try:
        r["start"] = run(root, "fsmonitor", "start")
        r["daemon_mb"] = daemon_rss_mb(root)
        monitor(root, True)
        run(root, "status")  # walks, and records the monitor's token
        r["mon_status"] = timed(lambda: cmd("mon_status", root, "status"), runs)
        firsts, agains, walks = [], [], []
        for k in range(runs):  # each edit of a different file; time the first run after it
            edit(root, 7 + 1000 * k, per_folder)
            firsts.append(cmd("mon_edit", root, "status", ok=(1,)))
            agains.append(cmd("mon_again", root, "status", ok=(1,)))
            monitor(root, False)
            edit(root, 9 + 1000 * k, per_folder)
            walks.append(cmd("status_edit", root, "status", ok=(1,)))
            monitor(root, True)
            run(root, "status", ok=(1,))
        r["mon_edit"] = datasets.median(firsts)
        r["mon_again"] = datasets.median(agains)
        r["status_edit"] = datasets.median(walks)
    finally:
        subprocess.run([EXE, "-C", str(root), "fsmonitor", "stop", "-q"], check=False)
    for label, values in CPU.items():
        r[f"cpu_{label}"] = datasets.median(values)
    return r


def cell(r: dict[str, float], key: str) -> str:
    """Wall seconds (CPU seconds of the process)."""
    cpu = r.get(f"cpu_{key}")
    return f"{r[key]:.2f} s" + (f" ({cpu:.2f})" if cpu is not None else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,400000,1000000", help="file counts")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--per-folder", type=int, default=100, help="files in a folder")
    ap.add_argument("--dir", default="/tmp/vss-bench-fsmonitor")
    ap.add_argument("--keep", action="store_true", help="keep the datasets made")
    args = ap.parse_args()
    limit = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        if size // args.per_folder + 100 > limit:
            raise SystemExit(f"{size // args.per_folder} folders need more inotify watches")
        r = bench(Path(args.dir) / str(size), size, args.runs, args.per_folder)
        print(f"[{size}] {r}", flush=True)
        rows.append((size, r))
        if not args.keep:
            shutil.rmtree(Path(args.dir) / str(size), ignore_errors=True)
            shutil.rmtree(Path(args.dir) / f"{size}-sources", ignore_errors=True)
    print()
    print(
        "| files (folders) | bare walk | status, walk | after one edit, walk "
        "| status, monitor | first after one edit, monitor | again | daemon start | daemon RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size, r in rows:
        cells = " | ".join(
            cell(r, k) for k in ("status", "status_edit", "mon_status", "mon_edit", "mon_again")
        )
        print(
            f"| {size:,} ({size // args.per_folder:,}) | {r['walk']:.2f} s | {cells} "
            f"| {r['start']:.1f} s | {r['daemon_mb']:.0f} MB |"
        )
    print(f"(in parentheses: CPU seconds; `volsegsync --version`: {cell(rows[-1][1], 'version')})")


if __name__ == "__main__":
    main()
