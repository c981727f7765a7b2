"""Synthetic datasets for the benchmarks: real NIfTI and NRRD files, made fast.

Tiny files are built from a header template (nibabel writes the NIfTI header
once), so 100,000 files take seconds; large files are written whole.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from nibabel.nifti1 import Nifti1Header

OLD = time.time() - 3600  # mtime for files that the stat cache may trust at once
SPACING = (0.8, 0.8, 3.0)
ORIGIN = (-100.0, -120.0, -40.0)


def affine(spacing: tuple[float, float, float] = SPACING) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = ORIGIN
    return a


def nifti_bytes(data: np.ndarray, spacing: tuple[float, float, float] = SPACING) -> bytes:
    header = Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_sform(affine(spacing), code=1)
    header.set_qform(affine(spacing), code=1)
    header.set_zooms(spacing)
    header["vox_offset"] = 352
    return header.binaryblock + b"\0\0\0\0" + data.tobytes()


def nrrd_bytes(data: np.ndarray, spacing: tuple[float, float, float] = SPACING) -> bytes:
    """A raw NRRD in 3D Slicer's LPS space with the same grid as ``nifti_bytes``."""
    sx, sy, sz = spacing
    ox, oy, oz = ORIGIN
    shape = " ".join(str(n) for n in data.shape)
    text = (
        "NRRD0004\n"
        f"type: {'uint8' if data.dtype == np.uint8 else 'short'}\n"
        "dimension: 3\n"
        "space: left-posterior-superior\n"
        f"sizes: {shape}\n"
        f"space directions: ({-sx},0,0) (0,{-sy},0) (0,0,{sz})\n"
        "kinds: domain domain domain\n"
        "endian: little\n"
        "encoding: raw\n"
        f"space origin: ({-ox},{-oy},{oz})\n\n"
    )
    return text.encode() + np.asfortranarray(data).tobytes(order="F")


def name(i: int) -> str:
    return f"C{i:06d}-Bench_T2w-D01012000"


def write(path: Path, data: bytes, old: bool = True) -> None:
    path.write_bytes(data)
    if old:
        os.utime(path, (OLD, OLD))


def make_small(root: Path, pairs: int, shape: tuple[int, int, int] = (8, 8, 4)) -> None:
    """``pairs`` tiny pairs below ``root``/volumes and ``root``/segmentations."""
    (root / "volumes").mkdir(parents=True, exist_ok=True)
    (root / "segmentations").mkdir(parents=True, exist_ok=True)
    vol = np.zeros(shape, dtype=np.int16)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[2:5, 2:5, 1:3] = 1
    for i in range(pairs):
        vol.flat[0] = i % 30000
        vol.flat[1] = i // 30000
        write(root / "volumes" / f"{name(i)}.nii.gz", gzip.compress(nifti_bytes(vol), 1, mtime=0))
        seg.flat[0] = i % 2
        seg.flat[1] = (i // 2) % 250
        write(root / "segmentations" / f"{name(i)}-v1.nrrd", nrrd_bytes(seg))


def make_large(root: Path, pairs: int, shape: tuple[int, int, int]) -> None:
    """``pairs`` realistic pairs: smooth int16 volumes with noise, gzip-compressed."""
    (root / "volumes").mkdir(parents=True, exist_ok=True)
    (root / "segmentations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    x, y, z = np.indices(shape, dtype=np.float32)
    c = np.array(shape, dtype=np.float32) / 2
    r2 = (
        ((x - c[0]) / (shape[0] / 3)) ** 2
        + ((y - c[1]) / (shape[1] / 3)) ** 2
        + ((z - c[2]) / (shape[2] / 3)) ** 2
    )
    seg = (r2 <= 1).astype(np.uint8) + (r2 <= 0.3).astype(np.uint8)
    base = (seg.astype(np.float32) * 400 + 300).astype(np.int16)
    for i in range(pairs):
        noise = rng.integers(-60, 60, size=shape, dtype=np.int16)
        vol = base + noise
        write(root / "volumes" / f"{name(i)}.nii.gz", gzip.compress(nifti_bytes(vol), 6, mtime=0))
        write(root / "segmentations" / f"{name(i)}-v1.nrrd", nrrd_bytes(seg))


def init(root: Path) -> None:
    from volsegsync.ops.init import init_dataset

    init_dataset(root, no_git=True)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def bare_walk(root: str) -> int:
    """The baseline of every walk: scandir + lstat of each file, nothing else."""
    count = 0
    stack = [root]
    while stack:
        for entry in os.scandir(stack.pop()):
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                entry.stat(follow_symlinks=False)
                count += 1
    return count


def run_times(func: Callable[[], object], runs: int) -> list[float]:
    """Wall seconds of each of ``runs`` calls of ``func``."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        func()
        out.append(time.perf_counter() - t)
    return out


def timed(func: Callable[[], object], runs: int) -> float:
    """The median wall seconds of ``runs`` calls of ``func``."""
    return median(run_times(func, runs))
