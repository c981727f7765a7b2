"""``volsegsync show`` and ``volsegsync report``: how long a picture and a page take.

1. ``show`` on one 512x512x300 CT-like pair (int16 .nii.gz volume, uint8 NRRD
   label map), the whole command as a user runs it (process start included),
   against a baseline in the same invocation: nibabel reading the volume's voxels
   alone (``np.asarray(img.dataobj)``). Goal: under 1 s.
2. ``report`` of N pairs (default 1,000; 64x64x24 volumes): cold (caches and
   output removed), after changing 1% of the segmentations, and unchanged; the
   cost of the change is (1% change - unchanged) / cold, and the whole re-run's
   time is printed as a share of the cold run's too. ``--baseline DIR`` (a folder
   holding another revision's ``volsegsync`` package, e.g. from ``git archive REV
   volsegsync | tar -x -C DIR``) runs that code on its own copy of the dataset,
   alternating with this one's in the same invocation (A/B on a shared machine).

Session 8 (report8, 2026-11-27), measured under load 5-8 from the other helpers,
``--skip-show --runs 5 --realtime --baseline DIR`` (DIR = the package before the
session): the re-run after the 1% change 0.35 -> 0.25 s wall (0.38 -> 0.28 s
CPU), unchanged 0.16 -> 0.14 s, cold 4.83 -> 3.27 s (6.29 -> 5.53 s CPU); the
change's cost (change - unchanged) / cold 3.9% -> 3.1% wall, 3.5% -> 2.6% CPU.
See docs/view.md (Performance) for where the time goes.

Session 9 (report9): ``--report-shape X,Y,Z`` sets the report's volume shape
(default 64,64,24; 128,128,64 is a cold run of ~6 s here); the change's cost is
printed in ms too. Under load 2-7, ``--runs 5`` (64) and ``--runs 3`` (128)
against main before the session: 64x64x24 0.22 -> 0.20 s after the change,
128x128x64 0.26 -> 0.25 s (the unchanged re-run 0.11 s both).

The package's bytecode is compiled first (``compileall``), as an installed wheel
has it: with ``PYTHONDONTWRITEBYTECODE=1`` in the environment an editable install
would otherwise compile every module it imports in every run, and the modules
only a drawing run imports would count as the cost of the change.

Wall times count waiting for a core on a shared machine: the machine's load
average is printed before and after each part, and the CPU time beside each.
``--realtime`` runs the timed commands at real-time priority (``chrt -f``, as
root): the machine's other jobs wait meanwhile, which approximates an unloaded
machine (use it for the short ``show`` runs; it starves the others while it runs).

    python benchmarks/bench_view.py [--pairs 1000] [--runs 3] [--shape 512,512,300]
                                    [--report-shape 64,64,24] [--reruns 1] [--skip-show]
                                    [--skip-report] [--realtime] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import datasets

EXE = str(Path(sys.executable).parent / "volsegsync")


CPU: list[float] = []  # CPU seconds (user + system) of each timed command, in order
PREFIX: list[str] = []  # ["chrt", "-f", "10"] with --realtime


def timed(args: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of a command; its CPU seconds (children included) go to CPU.

    On a shared machine the wall time also counts waiting for a core; the CPU
    time is what the command itself costs.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([*PREFIX, *args], check=False, capture_output=True, env=env, cwd="/")
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if r.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} exited {r.returncode}: {r.stderr.decode()}")
    return elapsed


def compile_package(baseline: str | None = None) -> None:
    """Write the bytecode of the volsegsync the command runs (``__pycache__``): the
    installed one's, and with a baseline this repository's (what "this code" runs,
    by ``PYTHONPATH``; an installed copy is another folder) and the baseline's."""
    import compileall

    import volsegsync

    compileall.compile_dir(str(Path(volsegsync.__file__).parent), quiet=1)
    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "volsegsync"), quiet=1)
    if baseline:
        compileall.compile_dir(str(Path(baseline) / "volsegsync"), quiet=1)


def load() -> str:
    return "machine load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def bench_show(base: Path, shape: tuple[int, int, int], runs: int) -> None:
    root = base / "ct"
    root.mkdir()
    datasets.init(root)
    t = time.perf_counter()
    datasets.make_large(root, 1, shape)
    print(f"show: wrote a {'x'.join(map(str, shape))} pair in {time.perf_counter() - t:.1f} s")
    key = datasets.name(0)
    volume = root / "volumes" / f"{key}.nii.gz"
    baseline_code = (
        "import sys, numpy as np, nibabel as nib; np.asarray(nib.load(sys.argv[1]).dataobj).sum()"
    )
    baseline, show = [], []
    start = len(CPU)
    print(f"  {load()}")
    for _ in range(runs):
        baseline.append(timed([sys.executable, "-c", baseline_code, str(volume)]))
        show.append(timed([EXE, "-C", str(root), "show", key, "-o", str(base / "ct.png")]))
    b, s = datasets.median(baseline), datasets.median(show)
    bc, sc = (datasets.median(CPU[start + i :: 2][:runs]) for i in (0, 1))
    print(f"  medians of {runs}, wall (CPU user+system):")
    print(f"  baseline, nibabel reads the volume (own process): {b:.3f} s ({bc:.3f} s CPU)")
    print(
        f"  volsegsync show, whole command, PNG written:      {s:.3f} s ({sc:.3f} s CPU), "
        f"{s / b:.2f}x wall, {sc / bc:.2f}x CPU"
    )
    print(f"  {load()}")


def change_one_percent(root: Path, pairs: int, round_: int, shape: tuple[int, int, int]) -> int:
    """Every 100th segmentation replaced by a box with one voxel marked by the round
    (a new picture each round: no thumbnail of an earlier round is reused)."""
    seg = np.zeros(shape, dtype=np.uint8)
    box = tuple(
        slice(min(a, n - 2), min(b, n))
        for a, b, n in zip((8, 8, 4), (40, 40, 16), shape, strict=True)
    )
    seg[box] = 1
    mark = [min(c, n - 1) for c, n in zip((20, 20, 10), shape, strict=True)]
    mark[0] = min(mark[0] + round_ // 20 % 20, shape[0] - 1)
    mark[1] = min(mark[1] + round_ % 20, shape[1] - 1)
    changed = 0
    for i in range(0, pairs, 100):
        seg[tuple(mark)] = 2
        path = root / "segmentations" / f"{datasets.name(i)}-v1.nrrd"
        path.write_bytes(datasets.nrrd_bytes(seg))
        os.utime(path, (datasets.OLD + round_ + 1, datasets.OLD + round_ + 1))
        changed += 1
    return changed


def bench_report(
    base: Path,
    pairs: int,
    runs: int,
    baseline: str | None = None,
    shape: tuple[int, int, int] = (64, 64, 24),
    reruns: int = 1,
) -> None:
    source = base / "many"
    source.mkdir()
    datasets.init(source)
    datasets.make_small(source, pairs, shape)
    # each variant on its own copy of the dataset, alternating (A/B) in one invocation
    variants: dict[str, tuple[list[str], dict[str, str] | None]] = {"this code": ([EXE], None)}
    if baseline:
        code = "from volsegsync.cli import main; main()"
        here = str(Path(__file__).resolve().parent.parent)
        variants = {
            "this code": ([sys.executable, "-c", code], {**os.environ, "PYTHONPATH": here}),
            "baseline": ([sys.executable, "-c", code], {**os.environ, "PYTHONPATH": baseline}),
        }
    roots = {}
    for i, name in enumerate(variants):
        roots[name] = base / f"dataset{i}"
        shutil.copytree(source, roots[name], symlinks=True)
    times: dict[str, dict[str, list[tuple[float, float]]]] = {
        name: {"cold": [], "change": [], "same": []} for name in variants
    }

    def run(name: str, kind: str) -> None:
        command, env = variants[name]
        out = base / f"review-{list(variants).index(name)}"
        wall = timed([*command, "-C", str(roots[name]), "report", "-q", "-o", str(out)], env)
        times[name][kind].append((wall, CPU[-1]))

    print(f"  {load()}")
    n = 0
    for r in range(runs):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for name in order:
            shutil.rmtree(roots[name] / ".volsegsync" / "state", ignore_errors=True)
            shutil.rmtree(base / f"review-{list(variants).index(name)}", ignore_errors=True)
            run(name, "cold")
        for j in range(reruns):  # after each cold run, this many changes (new content each)
            for name in order:
                n = change_one_percent(roots[name], pairs, r * reruns + j, shape)
            for kind in ("change", "same"):
                for name in order:
                    run(name, kind)
    print(
        f"report: {pairs} pairs of {'x'.join(map(str, shape))}, medians of {runs} cold runs "
        f"and {runs * reruns} re-runs"
    )
    for name in variants:
        (c, cc), (d, dc), (u, uc) = (
            (
                datasets.median([t[0] for t in times[name][k]]),
                datasets.median([t[1] for t in times[name][k]]),
            )
            for k in ("cold", "change", "same")
        )
        if baseline:
            print(f" {name}:")
        print(f"  cold (no caches, no output):         {c:.2f} s wall, {cc:.2f} s CPU")
        print(
            f"  after changing {n} segmentations (1%): {d:.3f} s wall ({d / c:.1%}), "
            f"{dc:.3f} s CPU ({dc / cc:.1%} of cold)"
        )
        print(
            f"  unchanged re-run (fixed cost):       {u:.3f} s wall ({u / c:.1%}), "
            f"{uc:.3f} s CPU ({uc / cc:.1%} of cold)"
        )
        print(
            f"  cost of the 1% change, (change - unchanged) / cold: {(d - u) / c:.1%} wall "
            f"({(d - u) * 1000:.0f} ms), {(dc - uc) / cc:.1%} CPU ({(dc - uc) * 1000:.0f} ms)"
        )
    print(f"  {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shape", default="512,512,300", help="show's volume shape")
    parser.add_argument(
        "--report-shape", default="64,64,24", help="the shape of report's volumes (X,Y,Z)"
    )
    parser.add_argument(
        "--reruns", type=int, default=1, help="change and unchanged re-runs after each cold run"
    )
    parser.add_argument("--skip-show", action="store_true")
    parser.add_argument("--skip-report", action="store_true")
    parser.add_argument("--realtime", action="store_true", help="time at chrt -f priority")
    parser.add_argument(
        "--baseline", metavar="DIR", help="also time the volsegsync package in DIR, alternating"
    )
    args = parser.parse_args()
    if args.realtime:
        PREFIX.extend(["chrt", "-f", "10"])
    shape = tuple(int(n) for n in args.shape.split(","))
    report_shape = tuple(int(n) for n in args.report_shape.split(","))
    assert len(shape) == 3 and len(report_shape) == 3
    compile_package(args.baseline)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_show:
            bench_show(Path(tmp), shape, args.runs)  # type: ignore[arg-type]
        if not args.skip_report:
            bench_report(
                Path(tmp),
                args.pairs,
                args.runs,
                args.baseline,
                report_shape,  # type: ignore[arg-type]
                args.reruns,
            )


if __name__ == "__main__":
    main()
