"""Start-up and an unchanged ``status``: the fixed cost of a run (issue 14 point 1).

Times, interleaved in rounds (a change of the machine's load hits all alike), medians:

- a bare walk of the dataset (``os.scandir`` + ``lstat``, in-process: the floor);
- ``volsegsync status -q`` with nothing changed, of each executable given (this
  venv's by default; pass another build's with ``--exe`` to compare two builds on
  the same files, as an A/B);
- the same on a dataset of four pairs: almost all of it is start-up;
- ``python -c pass`` and ``python -c 'import click'`` of the first executable's
  interpreter: what no build of ours can go below.

    python benchmarks/bench_startup.py [--files 100000] [--runs 15] [--exe PATH ...]

Run it at real-time priority on a loaded machine (``chrt -f 50 python ...``).
Session 8, 100,000 files, load 4-5, ``chrt -f 50``, 15 rounds: bare walk 299 ms;
session 7's build 502 ms (1.68x the walk), session 8's 442 ms (1.48x); four pairs:
105 ms and 62 ms; ``python -c pass`` 11 ms, ``import click`` 45 ms.
Session 9 (a large tree walked by two processes), quiet, 11 rounds: bare walk
292 ms; session 8's build 435 ms (1.49x), session 9's 273 ms (0.93x); four
pairs 59 and 58 ms.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import datasets
from bench_incremental import ENV, EXE, make


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=ENV)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/vss-bench-startup"))
    ap.add_argument("--exe", action="append", help="a volsegsync executable (repeatable)")
    args = ap.parse_args()
    exes = args.exe or [EXE]
    # each build its own copy: builds differ in their memos, and would redo each other's
    copies = {exe: (args.dir / f"big{k}", args.dir / f"small{k}") for k, exe in enumerate(exes)}
    for exe, (big, small) in copies.items():
        make(big, args.files)
        make(small, 8)
        for root in (big, small):
            subprocess.run([exe, "-C", str(root), "pair", "-q", "--no-store"], check=True, env=ENV)
    python = str(Path(exes[0]).parent / "python")
    time.sleep(2.5)  # the index settles: its digest is then kept by its stat
    for exe, roots in copies.items():  # warm: memos written, page cache filled
        for root in roots:
            subprocess.run([exe, "-C", str(root), "status", "-q"], check=True, env=ENV)
    walks: list[float] = []
    times: dict[str, list[float]] = {}
    for _ in range(args.runs):
        walks.append(datasets.timed(lambda: datasets.bare_walk(str(copies[exes[0]][0])), 1))
        for exe, (big, small) in copies.items():
            for label, root in (("big", big), ("small", small)):
                cmd = [exe, "-C", str(root), "status", "-q"]
                times.setdefault(f"{label} {exe}", []).append(timed(cmd))
        for label, code in (("python -c pass", "pass"), ("import click", "import click")):
            times.setdefault(label, []).append(timed([python, "-c", code]))
    walk = datasets.median(walks)
    print(f"bare walk of {args.files} files: {walk * 1000:.0f} ms")
    for label, values in times.items():
        m = datasets.median(values)
        ratio = f" = {m / walk:.2f}x the walk" if label.startswith("big") else ""
        print(f"{m * 1000:7.0f} ms{ratio}  {label}")


if __name__ == "__main__":
    main()
