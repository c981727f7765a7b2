"""``volsegsync log`` on a long history, against ``git log -p -- volsegsync.index``.

Builds (once, with ``git fast-import``) a repository whose index holds N pairs
(default 10,000) over C commits (default 1,000), each commit changing under 1%
of the lines: version bumps, silent edits, a pair added or removed. Then times,
as whole processes in the same invocation:

- the baseline ``git log -p -- volsegsync.index``,
- ``volsegsync log`` and ``volsegsync log PAIR`` with a cold cache (the history
  cache in ``.volsegsync/state/`` deleted before each run) and a warm one.

Prints medians and their ratios to the baseline (goals: cold within 3x, warm
within 0.3x).

    python benchmarks/bench_log.py [--pairs 10000] [--commits 1000] [--runs 3]
                                   [--dir /tmp/vss-bench-log]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import datasets

from volsegsync.config import DEFAULT_CONFIG_TEXT
from volsegsync.index import VERSION as INDEX_FORMAT
from volsegsync.index import Entry, FileRecord, format_index

CHANGED_PER_COMMIT = 40  # lines touched per commit: 0.4% of 10,000
EPOCH = 1_700_000_000


def _digest(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _entry(i: int, version: int, rng: random.Random) -> Entry:
    name = f"C{i:06d}-Back_V001-D22061998"
    vol = FileRecord(f"volumes/{name}.nii.gz", 1_048_576 + i, _digest(rng))
    seg = FileRecord(f"segmentations/{name}-v{version}.nrrd", 2048 + version, _digest(rng))
    return Entry(vol, seg, version)


def _lines(entry: Entry, header: int) -> list[str]:
    """The index lines of one entry (one per file in format 2, one per pair in format 1)."""
    return format_index([entry]).splitlines()[header:]


def build(root: Path, pairs: int, commits: int, seed: int = 7) -> str:
    """Make the benchmark repository at ``root``; return a pair to ``log``."""
    rng = random.Random(seed)
    header_lines = format_index([]).splitlines()
    header = len(header_lines)
    entries = {i: _entry(i, 1, rng) for i in range(pairs)}
    lines = {i: _lines(e, header) for i, e in entries.items()}
    next_id = pairs
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    proc = subprocess.Popen(
        ["git", "-C", str(root), "fast-import", "--quiet"], stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    out = proc.stdin

    def data(payload: bytes) -> None:
        out.write(b"data %d\n" % len(payload))
        out.write(payload)
        out.write(b"\n")

    config = DEFAULT_CONFIG_TEXT.encode()
    for n in range(commits):
        if n:
            for i in rng.sample(sorted(entries), CHANGED_PER_COMMIT // 2):
                e = entries[i]
                assert e.segmentation is not None and e.version is not None
                roll = rng.random()
                if roll < 0.5:  # a version bump
                    entries[i] = _entry(i, e.version + 1, rng)._replace(volume=e.volume)
                elif roll < 0.9:  # a silent edit of the segmentation
                    seg = e.segmentation._replace(digest=_digest(rng))
                    entries[i] = e._replace(segmentation=seg)
                else:  # a pair removed, another added
                    del entries[i]
                    del lines[i]
                    entries[next_id] = _entry(next_id, 1, rng)
                    i = next_id
                    next_id += 1
                lines[i] = _lines(entries[i], header)
        text = "\n".join([*header_lines, *(x for i in sorted(lines) for x in lines[i])]) + "\n"
        when = EPOCH + n * 60
        who = f"Annotator {n % 5} <a{n % 5}@example.org> {when} +0000"
        out.write(b"commit refs/heads/main\n")
        out.write(f"author {who}\ncommitter {who}\n".encode())
        data(f"annotations, round {n}".encode())
        if n == 0:
            out.write(b"M 100644 inline .volsegsync/config.toml\n")
            data(config)
            out.write(b"M 100644 inline .volsegsync/.gitignore\n")
            data(b"state/\n")
        out.write(b"M 100644 inline volsegsync.index\n")
        data(text.encode())
    out.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    subprocess.run(["git", "-C", str(root), "checkout", "-q", "-f", "main"], check=True)
    vol = entries[min(entries)].volume
    assert vol is not None
    return vol.path


def timed(argv: list[str], runs: int, before: object = None) -> list[float]:
    out = []
    for _ in range(runs):
        if before is not None:
            before()  # type: ignore[operator]
        t = time.perf_counter()
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, check=False)
        out.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {r.returncode}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--commits", type=int, default=1_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/vss-bench-log")
    args = ap.parse_args()
    root = Path(args.dir) / f"{args.pairs}x{args.commits}-format{INDEX_FORMAT}"
    exe = str(Path(sys.executable).parent / "volsegsync")
    marker = root / ".git" / "vss-bench-pair"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        t = time.perf_counter()
        pair = build(root, args.pairs, args.commits)
        marker.write_text(pair)
        print(
            f"built {args.commits} commits of {args.pairs} pairs in {time.perf_counter() - t:.1f} s"
        )
    pair = marker.read_text()
    cache = root / ".volsegsync" / "state"

    def cold() -> None:
        shutil.rmtree(cache, ignore_errors=True)

    git = ["git", "-C", str(root), "log", "-p", "--", "volsegsync.index"]
    vss = [exe, "-C", str(root), "log"]
    timed(git, 1)  # warm the page cache
    results = {
        "git log -p -- volsegsync.index": timed(git, args.runs),
        "volsegsync log (cold)": timed(vss, args.runs, cold),
        "volsegsync log (warm)": timed(vss, args.runs),
        f"volsegsync log {pair} (cold)": timed([*vss, pair], args.runs, cold),
        f"volsegsync log {pair} (warm)": timed([*vss, pair], args.runs),
    }
    base = datasets.median(results[git_label := next(iter(results))])
    print(
        f"{args.commits} commits, {args.pairs} pairs, {args.runs} runs each, cpus {os.cpu_count()}"
    )
    for label, runs in results.items():
        m = datasets.median(runs)
        ratio = "" if label == git_label else f"  {m / base:.2f}x baseline"
        print(f"{label:60s} median {m:7.3f} s{ratio}")


if __name__ == "__main__":
    main()
