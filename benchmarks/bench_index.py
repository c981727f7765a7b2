"""An index of N pairs (default 250k and 1M): parse, write, ``git diff`` and
``volsegsync log``/``diff`` time, and size (issue 14 point 4).

Builds a synthetic index of ``--pairs`` complete pairs with paths of today's length
(``volumes/C000001-Bench_T2w-D01012000.nii.gz``), then times, as medians of
``--runs``, for each size:

- write: format the entries and write the file atomically (``index.write_index``);
- parse: read and parse it (``index.read_index``; the line-by-line parser too, as
  the baseline it replaced);
- git (the binary), in a real repository: commit the index; then a one-line change
  (a version bump) and a 1% change (version bumps of 1% of the pairs), each
  committed: ``git diff`` of the work tree before committing, ``git add`` +
  ``git commit``, ``git log -p -1`` (the review);
- ``volsegsync diff HEAD~1 HEAD`` and ``volsegsync log -n 1`` (a whole process,
  cold cache) after a 10-line change, against the one-line change: they must cost
  about the same (linear in the changed lines, not in the index);

    python benchmarks/bench_index.py [--pairs 250000,1000000] [--runs 3]
                                     [--dir /tmp/vss-bench-index]
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
import xxhash

from volsegsync.index import Entry, FileRecord, read_index, write_index


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


EXE = str(Path(sys.executable).parent / "volsegsync")


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True)


def bump(text: str, every: int, limit: int) -> str:
    """Version bumps (``-v2.nrrd`` -> ``-v3.nrrd``) of every ``every``-th pair, at most
    ``limit``, in place in the text: the lines a real version bump changes."""
    lines = text.split("\n")
    done = 0
    for i in range(3, len(lines)):
        if done >= limit:
            break
        line = lines[i]
        if "\tseg\t2*\t" in line and (i // 2) % every == 0:
            lines[i] = line.replace("\tseg\t2*\t", "\tseg\t3*\t").replace("-v2.nrrd", "-v3.nrrd")
            done += 1
    return "\n".join(lines)


def commit_change(root: Path, index: Path, text: str, runs: int, message: str) -> dict[str, float]:
    """Write a changed index and time what a reviewer and an annotator pay for it."""
    index.write_text(text)
    r = {"diff": datasets.timed(lambda: git(root, "diff", "--stat"), runs)}
    r["patch_bytes"] = len(git(root, "diff").stdout)
    t = time.perf_counter()
    git(root, "add", "volsegsync.index")
    git(root, "commit", "-qm", message)
    r["commit"] = time.perf_counter() - t
    r["log_p"] = datasets.timed(lambda: git(root, "log", "-p", "-1", "--format=%H"), runs)
    return r


def vss(root: Path, *args: str) -> float:
    shutil.rmtree(root / ".volsegsync" / "state", ignore_errors=True)  # cold: no log cache
    t = time.perf_counter()
    subprocess.run([EXE, "-C", str(root), *args], capture_output=True, check=True)
    return time.perf_counter() - t


def bench(pairs: int, runs: int, root: Path) -> dict[str, float]:
    from volsegsync.index import parse_index_lines

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    datasets.init(root)
    index = root / "volsegsync.index"
    t = time.perf_counter()
    es = entries(pairs)
    print(f"[{pairs}] entries made in {time.perf_counter() - t:.1f} s", flush=True)
    r: dict[str, float] = {}
    r["write"] = datasets.timed(lambda: write_index(index, es), runs)
    r["mb"] = index.stat().st_size / 1e6
    r["parse"] = datasets.timed(lambda: read_index(index), runs)
    text = index.read_text()
    r["parse_lines"] = datasets.timed(lambda: parse_index_lines(text), 1)
    print(f"[{pairs}] write {r['write']:.2f} s, parse {r['parse']:.2f} s", flush=True)
    git(root, "init", "-q")
    git(root, "config", "user.email", "bench@example.org")
    git(root, "config", "user.name", "bench")
    git(root, "add", "-A")
    t = time.perf_counter()
    git(root, "commit", "-qm", "index")
    r["first_commit"] = time.perf_counter() - t
    one = commit_change(root, index, bump(text, 1, 1), runs, "one version bump")
    r.update({f"one_{k}": v for k, v in one.items()})
    r["vss_diff_1"] = datasets.timed(lambda: vss(root, "diff", "HEAD~1", "HEAD"), runs)
    r["vss_log_1"] = datasets.timed(lambda: vss(root, "log", "-n", "1"), runs)
    text = index.read_text()
    ten = commit_change(root, index, bump(text, 97, 10), runs, "ten version bumps")
    r.update({f"ten_{k}": v for k, v in ten.items()})
    r["vss_diff_10"] = datasets.timed(lambda: vss(root, "diff", "HEAD~1", "HEAD"), runs)
    r["vss_log_10"] = datasets.timed(lambda: vss(root, "log", "-n", "1"), runs)
    text = index.read_text()
    pct = commit_change(root, index, bump(text, 100, pairs), runs, "1% version bumps")
    r.update({f"pct_{k}": v for k, v in pct.items()})
    r["vss_diff_pct"] = datasets.timed(lambda: vss(root, "diff", "HEAD~1", "HEAD"), runs)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default="250000,1000000", help="sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/vss-bench-index")
    args = ap.parse_args()
    for pairs in (int(p) for p in args.pairs.split(",")):
        r = bench(pairs, args.runs, Path(args.dir) / str(pairs))
        print(f"[{pairs}] { ({k: round(v, 2) for k, v in r.items()}) }")
        print(f"index of {pairs:,} pairs: {r['mb']:.1f} MB")
        print(f"  write (format + atomic write): {r['write']:.2f} s")
        print(
            f"  parse (read + parse):          {r['parse']:.2f} s "
            f"(line by line: {r['parse_lines']:.2f} s)"
        )
        print(f"  git commit of the whole index: {r['first_commit']:.2f} s")
        for name, label in (("one", "1 line"), ("ten", "10 lines"), ("pct", "1% of pairs")):
            print(
                f"  {label} changed: git diff --stat {r[name + '_diff']:.2f} s "
                f"({r[name + '_patch_bytes']:.0f} bytes of patch), git add + commit "
                f"{r[name + '_commit']:.2f} s, git log -p -1 {r[name + '_log_p']:.2f} s"
            )
        print(
            f"  volsegsync diff HEAD~1 HEAD: 1 line {r['vss_diff_1']:.2f} s, 10 lines "
            f"{r['vss_diff_10']:.2f} s, 1% {r['vss_diff_pct']:.2f} s"
        )
        print(
            f"  volsegsync log -n 1: 1 line {r['vss_log_1']:.2f} s, "
            f"10 lines {r['vss_log_10']:.2f} s"
        )
        shutil.rmtree(Path(args.dir) / str(pairs), ignore_errors=True)


if __name__ == "__main__":
    main()
