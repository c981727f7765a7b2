"""Shared fixtures and helpers: tiny real NIfTI / NRRD files and initialised datasets.

Every file is written for real (nibabel, pynrrd) and follows the default naming
convention unless a test says otherwise. Each file gets distinct voxel values
(seeded by its name) so that content hashes differ between files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pytest
from click.testing import CliRunner, Result

from volsegsync.cli import main
from volsegsync.ops.init import init_dataset

SHAPE = (4, 4, 3)
LPS = np.diag([-1.0, -1.0, 1.0])
VOLSEGSYNC = str(Path(sys.executable).parent / "volsegsync")
GIT = shutil.which("git") or "git"

NAME1 = "C01-LowerBack_FSE_T2w_V001-D22061998"
NAME2 = "C02-LowerBack_FSE_T2w_V002-D05031987"
NAME3 = "C03-Knee_PD_V001-D17112003"


# --------------------------------------------------------------------------- files


def make_affine(
    spacing: Sequence[float] = (1.0, 1.0, 2.0), origin: Sequence[float] = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """A RAS affine with the given spacing (axis aligned) and origin."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def _rng(seed: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(seed.encode("utf-8", "surrogateescape")))


def write_nii(
    path: Path,
    seed: str | None = None,
    affine: np.ndarray | None = None,
    shape: tuple[int, ...] = SHAPE,
) -> Path:
    """A tiny gzip NIfTI-1 volume with values seeded by ``seed`` (default: the file name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _rng(seed or path.name).integers(0, 1000, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(data, make_affine() if affine is None else affine), str(path))  # type: ignore[no-untyped-call]
    return path


def write_nrrd(
    path: Path,
    seed: str | None = None,
    affine: np.ndarray | None = None,
    fields: dict[str, Any] | None = None,
    shape: tuple[int, ...] = SHAPE,
) -> Path:
    """A tiny label map in NRRD, the RAS ``affine`` converted to LPS as 3D Slicer does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ras = make_affine() if affine is None else affine
    data = _rng(seed or path.name).integers(0, 3, shape).astype(np.uint8)
    header: dict[str, Any] = {
        "space": "left-posterior-superior",
        "space directions": (LPS @ ras[:3, :3]).T,
        "space origin": LPS @ ras[:3, 3],
        "kinds": ["domain", "domain", "domain"],
        "encoding": "raw",
    }
    header.update(fields or {})
    nrrd.write(str(path), data, header)
    return path


def write_pair(
    root: Path,
    name: str = NAME1,
    versions: Sequence[int | None] = (1,),
    vol_dir: str = "",
    seg_dir: str = "",
    seg_ext: str = ".nrrd",
) -> tuple[str, list[str]]:
    """A volume and its segmentation(s) named by convention; returns relative paths."""
    vol = f"{vol_dir}/{name}.nii.gz" if vol_dir else f"{name}.nii.gz"
    write_nii(root / vol)
    segs = []
    for v in versions:
        stem = name if v is None else f"{name}-v{v}"
        seg = f"{seg_dir}/{stem}{seg_ext}" if seg_dir else f"{stem}{seg_ext}"
        write_nrrd(root / seg)
        segs.append(seg)
    return vol, segs


def set_mtime(path: Path, age_s: float = 3600.0) -> int:
    """Set the mtime ``age_s`` seconds in the past (beyond the racy window); returns ns."""
    st = path.stat()
    mtime_ns = st.st_mtime_ns - int(age_s * 1e9)
    os.utime(path, ns=(st.st_atime_ns, mtime_ns))
    return mtime_ns


def age_all(root: Path, age_s: float = 3600.0) -> None:
    """Make every image below ``root`` look old, so the stat cache stores it."""
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and ".volsegsync" not in p.parts:
            set_mtime(p, age_s)


def overwrite_same_size(path: Path) -> None:
    """Change the content in place (same inode, same size), keeping the file valid.

    gzip (``.nii.gz``): the header's MTIME field; otherwise (raw NRRD): the last voxel.
    """
    offset = 4 if path.name.endswith(".gz") else path.stat().st_size - 1
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        f.seek(offset)
        f.write(bytes([old[0] ^ 0x01]))


# --------------------------------------------------------------------------- git


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real git binary in ``root``."""
    return subprocess.run(
        [GIT, "-C", str(root), *args], capture_output=True, text=True, check=check
    )


# --------------------------------------------------------------------------- CLI


def invoke(args: Sequence[str], input: str | bytes | None = None) -> Result:
    """Run the CLI in-process; the working directory is restored afterwards (-C chdirs)."""
    cwd = os.getcwd()
    try:
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=True)
    finally:
        os.chdir(cwd)


def run_script(
    args: Sequence[str],
    cwd: Path | None = None,
    input: bytes | None = None,
    **kw: Any,
) -> subprocess.CompletedProcess[bytes]:
    """Run the installed ``volsegsync`` console script for real."""
    env = {k: v for k, v in os.environ.items() if k != "VOLSEGSYNC_DEBUG"}
    env.update(kw.pop("env", {}))
    return subprocess.run(
        [VOLSEGSYNC, *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        env=env,
        timeout=60,
        **kw,
    )


def assert_clean_stderr(stderr: str | bytes) -> None:
    """No traceback and no internal error ever reaches a user."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    assert "Traceback" not in text
    assert "internal error" not in text


# --------------------------------------------------------------------------- datasets


def init_with_git_binary(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    init_dataset(root)
    return root


def init_with_dulwich(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    result = invoke(["-C", str(root), "init", "--git"])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(params=["dulwich", "git"])
def dataset(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """An initialised, empty dataset in a real git repository, made both ways."""
    root = tmp_path / "ds"
    if request.param == "dulwich":
        return init_with_dulwich(root)
    return init_with_git_binary(root)


@pytest.fixture
def ds_root(tmp_path: Path) -> Path:
    """An initialised, empty dataset in a git repository made by ``git init``."""
    return init_with_git_binary(tmp_path / "ds")


@pytest.fixture
def paired(ds_root: Path) -> Path:
    """A dataset holding two complete pairs, old mtimes, index written."""
    write_pair(ds_root, NAME1, versions=(1,))
    write_pair(ds_root, NAME2, versions=(1,))
    age_all(ds_root)
    result = invoke(["-C", str(ds_root), "pair"])
    assert result.exit_code == 0, result.output
    return ds_root


@pytest.fixture
def cwd_guard() -> Iterator[None]:
    """Restore the working directory after a test that calls code which chdirs."""
    cwd = os.getcwd()
    try:
        yield
    finally:
        os.chdir(cwd)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
