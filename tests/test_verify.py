"""``verify`` end to end: real datasets of NIfTI volumes and NRRD segmentations.

A clean dataset (NRRDs in LPS, RAS and LAS, oblique float32 sforms, a 4D layered
Slicer ``.seg.nrrd``, volumes from nibabel's own test data) must give no problem
at all; then each fault, one at a time, must be reported exactly once, for the
right file, in the right category, with its numbers.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pytest
from conftest import (
    NAME1,
    NAME2,
    NAME3,
    age_all,
    assert_clean_stderr,
    init_with_git_binary,
    invoke,
    overwrite_same_size,
    run_script,
    set_mtime,
    write_pair,
)
from nibabel.testing import data_path

import volsegsync.content as content_mod
import volsegsync.ops.verify as verify_mod
from volsegsync.content import ContentCache
from volsegsync.dataset import Dataset
from volsegsync.hashing import hash_file
from volsegsync.ops.verify import VerifyReport, run_verify
from volsegsync.problems import Problem

SHAPE = (6, 5, 4)
LPS_SPACE = "left-posterior-superior"
RAS_SPACE = "right-anterior-superior"
LAS_SPACE = "left-anterior-superior"
SIGNS = {
    LPS_SPACE: (-1.0, -1.0, 1.0),
    RAS_SPACE: (1.0, 1.0, 1.0),
    LAS_SPACE: (-1.0, 1.0, 1.0),
    "scanner-xyz": (1.0, 1.0, 1.0),
}
SPACING = (0.8, 0.8, 2.5)
ORIGIN = (-10.0, 20.5, -30.0)
FAULT = "C12-Knee_PD_V002-D18112003"
SLICER_FIELDS = {
    "Segmentation_MasterRepresentation": "Binary labelmap",
    "Segmentation_ContainedRepresentationNames": "Binary labelmap|Closed surface|",
}


# --------------------------------------------------------------------------- geometry


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """A rotation by the given angles (degrees) about x, then y, then z."""
    x, y, z = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    result: np.ndarray = rz @ ry @ rx
    return result


def affine(
    spacing: Sequence[float] = SPACING,
    origin: Sequence[float] = ORIGIN,
    rot: np.ndarray | None = None,
) -> np.ndarray:
    """A float64 voxel-to-RAS affine."""
    a = np.eye(4)
    a[:3, :3] = (np.eye(3) if rot is None else rot) @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def shifted(a: np.ndarray, voxels: Sequence[float]) -> np.ndarray:
    """The affine of a grid starting at voxel ``voxels`` of ``a``'s grid."""
    b: np.ndarray = a.copy()
    b[:3, 3] = a[:3, :3] @ np.asarray(voxels, dtype=float) + a[:3, 3]
    return b


# --------------------------------------------------------------------------- files


def rng(seed: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(seed.encode()))


def labels(seed: str, shape: Sequence[int], values: Sequence[int]) -> np.ndarray:
    """A label map holding exactly ``values`` (each at least once)."""
    data = rng(seed).choice(np.asarray(values, dtype=np.uint8), size=tuple(shape))
    flat = data.reshape(-1)
    flat[: len(values)] = values
    return data


def save_nii(
    path: Path, a: np.ndarray | None = None, shape: Sequence[int] = SHAPE, seed: str = ""
) -> Path:
    """A NIfTI-1 volume (sform stored as float32 by the format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = rng(seed or path.name).integers(0, 1000, tuple(shape)).astype(np.int16)
    img = nib.Nifti1Image(data, affine() if a is None else a)  # type: ignore[no-untyped-call]
    nib.save(img, str(path))
    return path


def save_nrrd(
    path: Path,
    a: np.ndarray | None = None,
    shape: Sequence[int] = SHAPE,
    space: str = LPS_SPACE,
    data: np.ndarray | None = None,
    fields: dict[str, Any] | None = None,
    encoding: str = "gzip",
    signs: Sequence[float] | None = None,
) -> Path:
    """A label map whose RAS affine ``a`` is written in ``space``, as a converter should.

    ``signs`` overrides the RAS -> space conversion (to write wrong numbers on purpose).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    ras = affine() if a is None else a
    sign = np.asarray(SIGNS[space] if signs is None else signs)
    if data is None:
        data = labels(path.name, shape, [0, 1, 2])
    header: dict[str, Any] = {
        "space": space,
        "space directions": (sign[:, None] * ras[:3, :3]).T,
        "space origin": sign * ras[:3, 3],
        "kinds": ["domain"] * 3,
        "encoding": encoding,
    }
    header.update(fields or {})
    nrrd.write(str(path), data, header)
    return path


def slicer_fields(segments: Sequence[tuple[str, int, int]]) -> dict[str, str]:
    """Slicer segment fields for (name, label value, layer)."""
    out = dict(SLICER_FIELDS)
    for n, (name, label, layer) in enumerate(segments):
        out[f"Segment{n}_ID"] = f"Segment_{n + 1}"
        out[f"Segment{n}_Name"] = name
        out[f"Segment{n}_LabelValue"] = str(label)
        out[f"Segment{n}_Layer"] = str(layer)
        out[f"Segment{n}_Extent"] = "0 5 0 4 0 3"
    return out


def save_layered_seg(path: Path, a: np.ndarray, shape: Sequence[int] = SHAPE) -> Path:
    """A Slicer .seg.nrrd with overlapping segments: 4D, leading list axis (layers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    layer0 = labels(path.name + "0", shape, [0, 1, 2])
    layer1 = labels(path.name + "1", shape, [0, 1])
    data = np.stack([layer0, layer1])
    sign = np.asarray(SIGNS[LPS_SPACE])
    directions = np.vstack([np.full(3, np.nan), (sign[:, None] * a[:3, :3]).T])
    header: dict[str, Any] = {
        "space": LPS_SPACE,
        "space directions": directions,
        "space origin": sign * a[:3, 3],
        "kinds": ["list", "domain", "domain", "domain"],
        "encoding": "gzip",
        **slicer_fields([("vertebra", 1, 0), ("disc", 2, 0), ("canal", 1, 1)]),
    }
    nrrd.write(str(path), data, header)
    return path


def good_pair(
    root: Path,
    name: str,
    a: np.ndarray | None = None,
    space: str = LPS_SPACE,
    folder: str = "",
    version: int | None = 1,
) -> tuple[str, str]:
    """A volume and its matching segmentation; returns their relative paths."""
    prefix = f"{folder}/" if folder else ""
    vol = f"{prefix}{name}.nii.gz"
    seg = f"{prefix}{name}-v{version}.nrrd" if version else f"{prefix}{name}.nrrd"
    save_nii(root / vol, a)
    save_nrrd(root / seg, a, space=space)
    return vol, seg


# --------------------------------------------------------------------------- running


def verify_json(root: Path, *args: str, input: str | None = None) -> tuple[int, dict[str, Any]]:
    """``volsegsync verify --format json`` in-process: exit code and document."""
    result = invoke(["-C", str(root), "verify", "--format", "json", "--jobs", "1", *args], input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert_clean_stderr(result.stderr)
    return result.exit_code, json.loads(result.stdout)


def verify_api(root: Path, fast: bool = False, jobs: int = 1, **kw: Any) -> VerifyReport:
    return run_verify(Dataset.open(root), fast=fast, jobs=jobs, **kw)


def summary(problems: Sequence[Problem]) -> list[tuple[str, str, tuple[str, ...]]]:
    return sorted((p.category, p.severity, p.files) for p in problems)


def config_append(root: Path, text: str) -> None:
    path = root / ".volsegsync" / "config.toml"
    path.write_text(path.read_text() + "\n" + text)


# --------------------------------------------------------------------------- clean dataset


def nibabel_pair(root: Path, source: str, name: str, ext: str) -> tuple[str, str]:
    """A volume copied from nibabel's test data and a NRRD built from its affine."""
    vol = f"{name}{ext}"
    shutil.copyfile(os.path.join(data_path, source), root / vol)
    img: Any = nib.load(str(root / vol))
    seg = f"{name}-v1.nrrd"
    save_nrrd(root / seg, img.header.get_best_affine(), shape=img.shape[:3])
    return vol, seg


def build_clean(root: Path) -> list[tuple[str, str]]:
    """Good pairs of every kind a real dataset holds."""
    pairs = [
        good_pair(root, NAME1, space=LPS_SPACE),
        good_pair(root, NAME2, affine(origin=(5.5, -3.25, 12.0)), space=RAS_SPACE),
        good_pair(
            root,
            NAME3,
            affine((1.1, 0.9, 3.0), (100.0, -50.0, 7.5)),
            space=LAS_SPACE,
            folder="knee",
        ),
        good_pair(root, "C04-Spine_T1w_V001-D01022003", version=None),
    ]
    # oblique, float64 numbers no float32 holds exactly; the NIfTI keeps them as float32
    oblique = affine(
        (0.4296875, 0.4296875, 3.3), (-118.713456, 86.215793, 41.8806), rotation(17.3, -11.9, 23.7)
    )
    pairs.append(good_pair(root, "C05-Spine_T2w_Oblique-D03042005", oblique))
    # far from the scanner origin: float32 rounds the origin by more than the tolerance
    far = affine(
        (0.3, 0.35, 0.5), (-12345.6796, 23456.7904, -3456.1238), rotation(-31.0, 8.5, 44.4)
    )
    pairs.append(good_pair(root, "C06-Phantom_Far-D04052006", far, space=RAS_SPACE))
    # a Slicer .seg.nrrd with segments in one layer, and a layered (4D) one
    a = affine(origin=(1.0, 2.0, 3.0), rot=rotation(0.0, 0.0, 90.0))
    vol = "C07-Hip_CT-D05062007.nii.gz"
    save_nii(root / vol, a)
    seg = "C07-Hip_CT-D05062007-v2.seg.nrrd"
    save_nrrd(
        root / seg,
        a,
        data=labels(seg, SHAPE, [0, 1, 2]),
        fields=slicer_fields([("femur", 1, 0), ("pelvis", 2, 0)]),
    )
    pairs.append((vol, seg))
    vol = "C08-Hip_CT-D06072008.nii.gz"
    save_nii(root / vol, oblique)
    seg = "C08-Hip_CT-D06072008-v1.seg.nrrd"
    save_layered_seg(root / seg, oblique)
    pairs.append((vol, seg))
    # differences inside the tolerances: 0.4 of the position tolerance, 3e-5 in cosines
    near = affine(
        origin=(ORIGIN[0] + 0.4 * 0.8e-3, ORIGIN[1], ORIGIN[2]),
        rot=rotation(0.0, 0.0, np.degrees(3e-5)),
    )
    vol = "C13-Spine_T2w_Near-D10112012.nii.gz"
    save_nii(root / vol)
    seg = "C13-Spine_T2w_Near-D10112012-v1.nrrd"
    save_nrrd(root / seg, near)
    pairs.append((vol, seg))
    # real NIfTI files of other orientations and layouts, from nibabel's test data
    pairs.append(nibabel_pair(root, "anatomical.nii", "C09-Brain_T1-D07082009", ".nii"))
    pairs.append(nibabel_pair(root, "example4d.nii.gz", "C10-Brain_fMRI-D08092010", ".nii.gz"))
    pairs.append(
        nibabel_pair(root, "reoriented_anat_moved.nii", "C11-Brain_Moved-D09102011", ".nii")
    )
    return pairs


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clean dataset, shared by tests that only read it (caches may fill)."""
    root = init_with_git_binary(tmp_path_factory.mktemp("clean") / "ds")
    build_clean(root)
    # a zoo of spaces, orientations and shapes on purpose: no outliers among them
    with (root / ".volsegsync" / "config.toml").open("a") as f:
        f.write(
            "\n[verify.severity]\n"
            'outlier_orientation = "off"\noutlier_spacing = "off"\noutlier_shape = "off"\n'
        )
    age_all(root)
    return root


def test_float32_sform_really_rounds(clean_root: Path) -> None:
    """The oblique volumes' headers do not hold the NRRD's float64 numbers exactly."""
    img: Any = nib.load(str(clean_root / "C05-Spine_T2w_Oblique-D03042005.nii.gz"))
    seg = nrrd.read_header(str(clean_root / "C05-Spine_T2w_Oblique-D03042005-v1.nrrd"))
    lps = np.diag([-1.0, -1.0, 1.0])
    exact = lps @ seg["space directions"].T
    stored = img.header.get_best_affine()[:3, :3]
    assert not np.array_equal(stored, exact)
    assert np.abs(stored - exact).max() < 1e-6
    # far from the origin the float32 rounding exceeds the position tolerance itself
    far: Any = nib.load(str(clean_root / "C06-Phantom_Far-D04052006.nii.gz"))
    far_seg = nrrd.read_header(str(clean_root / "C06-Phantom_Far-D04052006-v1.nrrd"))
    rounding = np.abs(far.header.get_best_affine()[:3, 3] - far_seg["space origin"]).max()
    assert rounding > 1e-3 * 0.3


@pytest.mark.parametrize("fast", [False, True], ids=["full", "fast"])
def test_clean_dataset_has_no_problem(clean_root: Path, fast: bool) -> None:
    report = verify_api(clean_root, fast=fast)
    assert report.problems == [], [p.message for p in report.problems]
    assert report.files_checked == 24
    assert report.pair_count == 12
    args = ["--fast"] if fast else []
    code, doc = verify_json(clean_root, *args)
    assert code == 0
    assert doc["problems"] == []
    assert doc["fast"] is fast
    assert doc["summary"] == {
        "files": 24,
        "pairs": 12,
        "errors": 0,
        "warnings": 0,
        "infos": 0,
        "by_category": {},
    }


def test_clean_dataset_real_process(clean_root: Path) -> None:
    proc = run_script(["verify", "--jobs", "2"], cwd=clean_root)
    assert proc.returncode == 0, proc.stderr
    assert_clean_stderr(proc.stderr)
    assert proc.stdout.decode().splitlines() == [
        "24 files, 12 pairs (all checks): 0 errors, 0 warnings"
    ]


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """What one fault must produce: (category, severity, files) and its numbers."""

    expected: list[tuple[str, str, tuple[str, ...]]]
    exit_code: int = 1
    in_fast: bool = True  # reported by --fast (header-only checks) as well
    check: Callable[[list[Problem]], None] | None = None
    config: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _vol(name: str = FAULT, ext: str = ".nii.gz") -> str:
    return f"{name}{ext}"


def _seg(name: str = FAULT, version: int = 1, ext: str = ".nrrd") -> str:
    return f"{name}-v{version}{ext}"


def f_naming(root: Path) -> Fault:
    name = "C12-Knee_PD_V002-D31021998"  # 31 February
    vol, seg = good_pair(root, name)

    def check(problems: list[Problem]) -> None:
        for p in problems:
            assert p.details["field"] == "postfix"
            assert p.details["found"] == "D31021998"

    return Fault([("naming", "error", (seg,)), ("naming", "error", (vol,))], check=check)


def f_unpaired_volume(root: Path) -> Fault:
    save_nii(root / _vol())
    return Fault([("unpaired_volume", "error", (_vol(),))])


def f_unpaired_segmentation(root: Path) -> Fault:
    save_nrrd(root / _seg())
    return Fault([("unpaired_segmentation", "error", (_seg(),))])


def f_ambiguous(root: Path) -> Fault:
    save_nii(root / _vol())
    save_nii(root / _vol(ext=".nii"))
    save_nrrd(root / _seg())

    def check(problems: list[Problem]) -> None:
        assert problems[0].details["key"] == FAULT

    return Fault([("ambiguous", "error", (_vol(ext=".nii"), _vol()))], check=check)


def f_duplicate_version(root: Path) -> Fault:
    save_nii(root / _vol())
    save_nrrd(root / _seg())
    save_nrrd(root / _seg(ext=".seg.nrrd"))

    def check(problems: list[Problem]) -> None:
        assert problems[0].details["version"] == 1

    return Fault([("duplicate_version", "error", (_seg(), _seg(ext=".seg.nrrd")))], check=check)


def f_version_gap(root: Path) -> Fault:
    save_nii(root / _vol())
    save_nrrd(root / _seg(version=1))
    save_nrrd(root / _seg(version=3))

    def check(problems: list[Problem]) -> None:
        assert problems[0].details == {"versions": [1, 3], "missing": [2]}

    files = (_seg(version=1), _seg(version=3))
    return Fault([("version_gap", "warning", files)], exit_code=0, check=check)


def _geometry_fault(root: Path, seg_affine: np.ndarray, prop: str, **kw: Any) -> Fault:
    save_nii(root / _vol())
    save_nrrd(root / _seg(), seg_affine, **kw)

    def check(problems: list[Problem]) -> None:
        assert problems[0].details["property"] == prop

    return Fault([("geometry", "error", (_seg(), _vol()))], check=check)


def f_geometry_spacing(root: Path) -> Fault:
    fault = _geometry_fault(root, affine((0.8, 0.8, 3.0)), "spacing")

    def check(problems: list[Problem]) -> None:
        p = problems[0]
        assert p.details["property"] == "spacing"
        assert "(0.8, 0.8, 2.5)" in p.message and "(0.8, 0.8, 3)" in p.message
        assert p.details["volume"] == pytest.approx([0.8, 0.8, 2.5])
        assert p.details["segmentation"] == pytest.approx([0.8, 0.8, 3.0])
        assert p.details["max_deviation"] == pytest.approx(0.5)
        assert p.details["tolerance"] == pytest.approx(0.8e-3)

    fault.check = check
    return fault


def f_geometry_origin(root: Path) -> Fault:
    fault = _geometry_fault(root, affine(origin=(-9.7, 20.5, -30.0)), "origin")

    def check(problems: list[Problem]) -> None:
        p = problems[0]
        assert p.details["property"] == "origin"
        assert p.details["max_deviation"] == pytest.approx(0.3, abs=1e-6)
        assert p.details["segmentation"] == pytest.approx([-9.7, 20.5, -30.0])
        assert "origin differs" in p.message

    fault.check = check
    return fault


def f_geometry_direction(root: Path) -> Fault:
    fault = _geometry_fault(root, affine(rot=rotation(0.0, 0.0, 2.0)), "direction")

    def check(problems: list[Problem]) -> None:
        p = problems[0]
        assert p.details["property"] == "direction"
        assert p.details["max_angle_degrees"] == pytest.approx(2.0, abs=1e-6)
        assert p.details["max_deviation"] == pytest.approx(np.sin(np.radians(2.0)), rel=1e-6)

    fault.check = check
    return fault


def f_lps_with_ras_numbers(root: Path) -> Fault:
    """Space says LPS, numbers are RAS (x and y not flipped): a 180° turn about z."""
    a = affine(origin=(0.0, 0.0, -30.0))
    save_nii(root / _vol(), a)
    save_nrrd(root / _seg(), a, space=LPS_SPACE, signs=(1.0, 1.0, 1.0))

    def check(problems: list[Problem]) -> None:
        p = problems[0]
        assert p.details["property"] == "direction"
        assert p.details["volume_axes"] == "RAS"
        assert p.details["segmentation_axes"] == "LPS"
        assert p.details["max_angle_degrees"] == pytest.approx(180.0)

    return Fault([("geometry", "error", (_seg(), _vol()))], check=check)


def f_lps_with_ras_numbers_offset(root: Path) -> Fault:
    """The same with an origin off the z axis: direction and origin both differ."""
    save_nii(root / _vol())
    save_nrrd(root / _seg(), space=LPS_SPACE, signs=(1.0, 1.0, 1.0))

    def check(problems: list[Problem]) -> None:
        assert sorted(p.details["property"] for p in problems) == ["direction", "origin"]
        origin = next(p for p in problems if p.details["property"] == "origin")
        assert origin.details["segmentation"] == pytest.approx([10.0, -20.5, -30.0])

    files = (_seg(), _vol())
    return Fault([("geometry", "error", files), ("geometry", "error", files)], check=check)


def f_extent(root: Path) -> Fault:
    a = affine(rot=rotation(10.0, 0.0, -5.0))
    save_nii(root / _vol(), a)
    save_nrrd(root / _seg(), shifted(a, (1, 2, 0)), shape=(4, 3, 4))

    def check(problems: list[Problem]) -> None:
        p = problems[0]
        assert p.details["offset_voxels"] == [1, 2, 0]
        assert p.details["volume_shape"] == [6, 5, 4]
        assert p.details["segmentation_shape"] == [4, 3, 4]
        assert p.details["kind"] == "cropped"

    return Fault([("extent", "error", (_seg(), _vol()))], check=check)


def f_frame_unknown(root: Path) -> Fault:
    save_nii(root / _vol())
    save_nrrd(root / _seg(), space="scanner-xyz")

    def check(problems: list[Problem]) -> None:
        p = problems[0]
        assert p.details["segmentation_frame"] == "scanner-xyz"
        assert p.details["compared"] == ["shape", "spacing"]
        assert "origin" in p.details["not_compared"]
        assert "scanner-xyz" in p.message

    return Fault([("frame_unknown", "warning", (_seg(), _vol()))], exit_code=0, check=check)


def f_frame_unknown_no_space(root: Path) -> Fault:
    """A NRRD with spacings only: no space, no origin."""
    save_nii(root / _vol())
    nrrd.write(
        str(root / _seg()),
        labels(_seg(), SHAPE, [0, 1]),
        {"spacings": list(SPACING), "kinds": ["domain"] * 3, "encoding": "gzip"},
    )

    def check(problems: list[Problem]) -> None:
        assert problems[0].details["segmentation_frame"] == "unknown"
        assert problems[0].details["compared"] == ["shape", "spacing"]

    return Fault([("frame_unknown", "warning", (_seg(), _vol()))], exit_code=0, check=check)


def f_frame_unknown_spacing(root: Path) -> Fault:
    """Without a common frame, spacing is still compared."""
    save_nii(root / _vol())
    save_nrrd(root / _seg(), affine((0.8, 0.9, 2.5)), space="scanner-xyz")

    def check(problems: list[Problem]) -> None:
        spacing = next(p for p in problems if p.category == "geometry")
        assert spacing.details["property"] == "spacing"
        assert spacing.details["segmentation"] == pytest.approx([0.8, 0.9, 2.5])

    files = (_seg(), _vol())
    return Fault([("frame_unknown", "warning", files), ("geometry", "error", files)], check=check)


def f_non_integer_labels(root: Path) -> Fault:
    save_nii(root / _vol())
    data = labels(_seg(), SHAPE, [0, 1, 2]).astype(np.float32)
    data[3, 2, 1] = 1.5
    save_nrrd(root / _seg(), data=data)

    def check(problems: list[Problem]) -> None:
        assert problems[0].details == {"dtype": "float32", "example": 1.5}

    return Fault([("non_integer_labels", "error", (_seg(),))], in_fast=False, check=check)


def f_unknown_label(root: Path) -> Fault:
    save_nii(root / _vol())
    save_nrrd(root / _seg(), data=labels(_seg(), SHAPE, [0, 1, 2, 7]))

    def check(problems: list[Problem]) -> None:
        p = problems[0]
        assert p.details["unexpected"] == [7]
        assert p.details["declared"] == [0, 1, 2]
        assert "7" in p.message

    config = '[verify.labels]\n0 = "background"\n1 = "vertebra"\n2 = "disc"\n'
    return Fault([("unknown_label", "error", (_seg(),))], in_fast=False, check=check, config=config)


def f_only_background(root: Path) -> Fault:
    save_nii(root / _vol())
    save_nrrd(root / _seg(), data=np.zeros(SHAPE, np.uint8))

    def check(problems: list[Problem]) -> None:
        assert problems[0].details == {"values": [0], "shape": list(SHAPE)}

    return Fault(
        [("only_background", "warning", (_seg(),))], exit_code=0, in_fast=False, check=check
    )


def f_segment_labels(root: Path) -> Fault:
    seg = _seg(ext=".seg.nrrd")
    save_nii(root / _vol())
    fields = slicer_fields([("vertebra", 1, 0), ("disc", 2, 0)])
    save_nrrd(root / seg, data=labels(seg, SHAPE, [0, 1, 3]), fields=fields)

    def check(problems: list[Problem]) -> None:
        p = problems[0]
        assert p.details["missing"] == [{"segment": "disc", "label": 2, "layer": 0}]
        assert p.details["undeclared"] == [{"value": 3, "layer": 0}]
        assert "'disc'" in p.message

    return Fault([("segment_labels", "error", (seg,))], in_fast=False, check=check)


def f_segment_labels_layered(root: Path) -> Fault:
    """A 4D layered .seg.nrrd whose layer 1 holds 2 where its segment declares 1."""
    seg = _seg(ext=".seg.nrrd")
    a = affine(rot=rotation(3.0, 4.0, 5.0))
    save_nii(root / _vol(), a)
    save_layered_seg(root / seg, a)
    data, header = nrrd.read(str(root / seg))
    data[1][data[1] == 1] = 2
    nrrd.write(str(root / seg), data, header)

    def check(problems: list[Problem]) -> None:
        p = problems[0]
        assert p.details["missing"] == [{"segment": "canal", "label": 1, "layer": 1}]
        assert p.details["undeclared"] == [{"value": 2, "layer": 1}]
        assert "layer 1" in p.message

    return Fault([("segment_labels", "error", (seg,))], in_fast=False, check=check)


def f_geometry_layered(root: Path) -> Fault:
    """A 4D layered .seg.nrrd is compared on its three spatial axes."""
    seg = _seg(ext=".seg.nrrd")
    save_nii(root / _vol(), affine())
    save_layered_seg(root / seg, affine(origin=(-10.0, 20.5, -29.0)))

    def check(problems: list[Problem]) -> None:
        assert problems[0].details["property"] == "origin"
        assert problems[0].details["max_deviation"] == pytest.approx(1.0)

    return Fault([("geometry", "error", (seg, _vol()))], check=check)


def f_corrupt_truncated_nii(root: Path) -> Fault:
    vol = _vol()
    save_nii(root / vol, shape=(24, 24, 24))
    save_nrrd(root / _seg(), shape=(24, 24, 24))
    raw = (root / vol).read_bytes()
    (root / vol).write_bytes(raw[: len(raw) * 2 // 3])

    def check(problems: list[Problem]) -> None:
        assert "truncated" in problems[0].message

    return Fault([("corrupt", "error", (vol,))], in_fast=False, check=check)


def f_not_an_image(root: Path) -> Fault:
    save_nii(root / _vol())
    (root / _seg()).write_bytes(rng("garbage").integers(0, 256, 500).astype(np.uint8).tobytes())
    return Fault([("not_an_image", "error", (_seg(),))])


def f_wrong_magic(root: Path) -> Fault:
    """A gzip stream that inflates to no NIfTI header."""
    save_nrrd(root / _seg())
    (root / _vol()).write_bytes(gzip.compress(b"this is not a NIfTI header " * 40))
    return Fault([("not_an_image", "error", (_vol(),))])


def f_corrupt_nrrd_sizes(root: Path) -> Fault:
    save_nii(root / _vol())
    path = save_nrrd(root / _seg(), encoding="raw")
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])

    def check(problems: list[Problem]) -> None:
        p = problems[0]
        assert "110" in p.message and "120" in p.message

    return Fault([("corrupt", "error", (_seg(),))], in_fast=False, check=check)


def f_drift_modified(root: Path) -> Fault:
    save_nii(root / _vol())
    path = save_nrrd(root / _seg(), encoding="raw")
    age_all(root)
    assert invoke(["-C", str(root), "pair"]).exit_code == 0
    index = (root / "volsegsync.index").read_text()
    overwrite_same_size(path)

    def check(problems: list[Problem]) -> None:
        p = problems[0]
        assert p.details["index_size"] == p.details["size"] == path.stat().st_size
        assert p.details["index_hash"] != p.details["hash"]
        assert p.details["index_hash"] in index

    # --fast uses the one pipeline, which hashes: a same-size change is drift there too
    return Fault([("drift_modified", "error", (_seg(),))], check=check)


def f_drift_missing(root: Path) -> Fault:
    save_nii(root / _vol())
    save_nrrd(root / _seg())
    age_all(root)
    assert invoke(["-C", str(root), "pair"]).exit_code == 0
    (root / _vol()).unlink()
    (root / _seg()).unlink()
    return Fault([("drift_missing", "error", (_seg(),)), ("drift_missing", "error", (_vol(),))])


FAULTS: dict[str, Callable[[Path], Fault]] = {
    name[2:]: func for name, func in globals().items() if name.startswith("f_")
}


def build_base(root: Path) -> None:
    """Two good pairs next to the fault: they must stay silent."""
    good_pair(root, NAME1)
    good_pair(root, NAME2, affine(rot=rotation(5.0, -7.0, 12.0)), space=RAS_SPACE)


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_reported_once(ds_root: Path, name: str) -> None:
    build_base(ds_root)
    fault = FAULTS[name](ds_root)
    if fault.config:
        config_append(ds_root, fault.config)
    if name != "drift_modified":  # old files: the runs after the first use the caches
        age_all(ds_root)

    report = verify_api(ds_root)
    assert summary(report.problems) == sorted(fault.expected), [p.message for p in report.problems]
    for p in report.problems:
        assert p.message and "\n" not in p.message
    if fault.check:
        fault.check(report.problems)

    fast = verify_api(ds_root, fast=True)
    assert summary(fast.problems) == (sorted(fault.expected) if fault.in_fast else [])

    code, doc = verify_json(ds_root)
    assert code == fault.exit_code
    assert [(p["category"], p["severity"], tuple(p["files"])) for p in doc["problems"]] == [
        (p.category, p.severity, p.files) for p in report.problems
    ]
    assert [p["details"] for p in doc["problems"]] == json.loads(
        json.dumps([dict(p.details) for p in report.problems])
    )
    code, _ = verify_json(ds_root, "--fast")
    assert code == (fault.exit_code if fault.in_fast else 0)


# --------------------------------------------------------------------------- output


@pytest.fixture
def mixed(ds_root: Path) -> Path:
    """Good pairs, a geometry fault, an orphan segmentation and a version gap."""
    build_base(ds_root)
    save_nii(ds_root / "sub" / _vol())
    save_nrrd(ds_root / "sub" / _seg(), affine((0.8, 0.8, 3.0)))
    save_nrrd(ds_root / "C04-Orphan_T2-D01012001-v1.nrrd")
    save_nrrd(ds_root / f"{NAME1}-v3.nrrd")
    age_all(ds_root)
    return ds_root


def test_json_schema(mixed: Path) -> None:
    code, doc = verify_json(mixed)
    assert code == 1
    assert doc["schema"] == "volsegsync.verify/1"
    assert doc["fast"] is False
    for p in doc["problems"]:
        assert set(p) == {"category", "severity", "files", "message", "details"}
        assert isinstance(p["files"], list) and isinstance(p["details"], dict)
    assert doc["summary"] == {
        "files": 8,
        "pairs": 3,
        "errors": 2,
        "warnings": 1,
        "infos": 0,
        "by_category": {"geometry": 1, "unpaired_segmentation": 1, "version_gap": 1},
    }


def test_text_groups_problems_by_pair(mixed: Path) -> None:
    result = invoke(["-C", str(mixed), "verify", "--jobs", "1"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    pair = f"sub/{_vol()} -> sub/{_seg()}"
    assert lines[lines.index(pair) + 1].startswith("  error [geometry] sub/")
    orphan = "(no volume) -> C04-Orphan_T2-D01012001-v1.nrrd"
    assert lines[lines.index(orphan) + 1].startswith("  error [unpaired_segmentation] ")
    gap = f"{NAME1}.nii.gz -> {NAME1}-v3.nrrd"
    assert lines[lines.index(gap) + 1].startswith("  warning [version_gap] ")
    assert lines[-1] == "8 files, 3 pairs (all checks): 2 errors, 1 warnings"
    assert len(lines) == 7


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (["sub"], None, ["geometry"]),
        (["sub/"], None, ["geometry"]),
        ([f"sub/{_vol()}"], None, ["geometry"]),
        ([f"{NAME1}-v1.nrrd"], None, ["version_gap"]),
        ([f"{NAME2}.nii.gz"], None, []),
        (["."], None, ["geometry", "unpaired_segmentation", "version_gap"]),
        (
            ["-"],
            f"{NAME1}-v3.nrrd\nC04-Orphan_T2-D01012001-v1.nrrd\n",
            ["unpaired_segmentation", "version_gap"],
        ),
    ],
)
def test_paths_select_problems(
    mixed: Path, args: list[str], stdin: str | None, expected: list[str]
) -> None:
    code, doc = verify_json(mixed, *args, input=stdin)
    assert sorted(p["category"] for p in doc["problems"]) == expected
    assert code == (1 if {"geometry", "unpaired_segmentation"} & set(expected) else 0)


def test_paths_api_filter(mixed: Path) -> None:
    report = verify_api(mixed, paths=["sub"])
    assert summary(report.problems) == [("geometry", "error", (f"sub/{_seg()}", f"sub/{_vol()}"))]


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(("level", "code"), [("warning", 0), ("info", 0), ("off", 0), ("error", 1)])
def test_severity_override(ds_root: Path, level: str, code: int) -> None:
    build_base(ds_root)
    f_geometry_spacing(ds_root)
    config_append(ds_root, f'[verify.severity]\ngeometry = "{level}"\n')
    status, doc = verify_json(ds_root)
    assert status == code
    if level == "off":
        assert doc["problems"] == []
    else:
        assert [(p["category"], p["severity"]) for p in doc["problems"]] == [("geometry", level)]


def test_tolerance_config(ds_root: Path) -> None:
    """An origin 0.3 mm off passes with position_tolerance 0.5 (of 0.8 mm)."""
    build_base(ds_root)
    f_geometry_origin(ds_root)
    path = ds_root / ".volsegsync" / "config.toml"
    path.write_text(
        path.read_text().replace("position_tolerance = 1e-3", "position_tolerance = 0.5")
    )
    assert verify_api(ds_root).problems == []


# --------------------------------------------------------------------------- jobs


def test_jobs_give_identical_results(ds_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pools: list[int] = []
    import concurrent.futures

    real_pool: Any = concurrent.futures.ProcessPoolExecutor

    class CountingPool(real_pool):  # type: ignore[misc]
        def __init__(self, *args: Any, **kw: Any) -> None:
            pools.append(kw.get("max_workers", 0))
            super().__init__(*args, **kw)

    # volsegsync.workers imports the pool class from there when it starts one
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", CountingPool)
    # header reads are cheap: verify may keep them in-process up to a higher limit
    monkeypatch.setattr(verify_mod, "HEADER_INLINE_LIMIT", 64, raising=False)
    for i in range(72):
        good_pair(ds_root, f"P{i:03d}-Spine_T2w-D01012000", folder=f"g{i % 4}")
    # a few faults among them
    save_nrrd(ds_root / "g0" / "P000-Spine_T2w-D01012000-v1.nrrd", affine((0.8, 0.8, 3.0)))
    save_nrrd(ds_root / "g1" / "P001-Spine_T2w-D01012000-v1.nrrd", data=np.zeros(SHAPE, np.uint8))
    cut = save_nrrd(ds_root / "g2" / "P002-Spine_T2w-D01012000-v1.nrrd", encoding="raw")
    cut.write_bytes(cut.read_bytes()[:-7])
    save_nii(ds_root / "g3" / "Q999-Lone-D01012000.nii.gz")
    age_all(ds_root)
    state = ds_root / ".volsegsync" / "state"

    one = verify_api(ds_root, jobs=1)
    assert pools == []
    shutil.rmtree(state)
    two = verify_api(ds_root, jobs=2)
    assert pools and all(n == 2 for n in pools)
    assert one.problems == two.problems
    assert one.pairs == two.pairs
    assert summary(one.problems) == [
        ("corrupt", "error", ("g2/P002-Spine_T2w-D01012000-v1.nrrd",)),
        (
            "geometry",
            "error",
            ("g0/P000-Spine_T2w-D01012000-v1.nrrd", "g0/P000-Spine_T2w-D01012000.nii.gz"),
        ),
        ("only_background", "warning", ("g1/P001-Spine_T2w-D01012000-v1.nrrd",)),
        ("unpaired_volume", "error", ("g3/Q999-Lone-D01012000.nii.gz",)),
    ]
    shutil.rmtree(state)
    fast_one = verify_api(ds_root, jobs=1, fast=True)
    shutil.rmtree(state)
    fast_two = verify_api(ds_root, jobs=2, fast=True)
    assert fast_one.problems == fast_two.problems


# --------------------------------------------------------------------------- caches


@pytest.fixture
def count_analyse(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every call of ``analyse`` (a full decode), wherever verify looks it up."""
    calls: list[str] = []
    real = content_mod.analyse

    def counting(path: Path, role: str, *args: Any) -> Any:
        calls.append(Path(path).name)
        return real(path, role, *args)

    monkeypatch.setattr(content_mod, "analyse", counting)
    monkeypatch.setattr(verify_mod, "analyse", counting, raising=False)
    yield calls


def test_content_decoded_once_ever(ds_root: Path, count_analyse: list[str]) -> None:
    build_base(ds_root)
    vol, seg = good_pair(ds_root, NAME3)
    # same content under another name: decoded once
    twin = f"{FAULT}-v1.nrrd"
    save_nii(ds_root / _vol())
    shutil.copyfile(ds_root / seg, ds_root / twin)
    age_all(ds_root)
    ds = Dataset.open(ds_root)

    first = run_verify(ds, jobs=1)
    assert first.problems == []
    assert len(count_analyse) == 7  # 8 files, two share a content and a role
    cache = ContentCache(ds_root / ".volsegsync" / "state" / "content.db")
    try:
        for path in (vol, seg, twin):
            role = "volume" if path.endswith(".nii.gz") else "segmentation"
            assert cache.get(hash_file(ds_root / path)[0], role, path) is not None
    finally:
        cache.close()

    count_analyse.clear()
    second = run_verify(Dataset.open(ds_root), jobs=1)
    assert count_analyse == []
    assert second == first

    # a changed file is checked again, and only it
    save_nrrd(ds_root / seg, data=np.zeros(SHAPE, np.uint8))
    third = run_verify(Dataset.open(ds_root), jobs=1)
    assert count_analyse == [Path(seg).name]
    assert summary(third.problems) == [("only_background", "warning", (seg,))]

    # changed again, then made to look old: still re-checked, then served from the caches
    count_analyse.clear()
    save_nrrd(ds_root / seg, data=np.full(SHAPE, 0.5, np.float32))
    set_mtime(ds_root / seg, 7200.0)
    fourth = run_verify(Dataset.open(ds_root), jobs=1)
    assert count_analyse == [Path(seg).name]
    assert summary(fourth.problems) == [("non_integer_labels", "error", (seg,))]
    count_analyse.clear()
    assert run_verify(Dataset.open(ds_root), jobs=1) == fourth
    assert count_analyse == []


def test_second_run_identical_via_cli(mixed: Path, count_analyse: list[str]) -> None:
    first = verify_json(mixed)
    assert count_analyse
    count_analyse.clear()
    second = verify_json(mixed)
    assert count_analyse == []
    assert first == second


def test_header_cache_does_not_hide_a_change(ds_root: Path) -> None:
    """A segmentation rewritten with another spacing is re-read (header cache by stat)."""
    build_base(ds_root)
    vol, seg = good_pair(ds_root, NAME3)
    age_all(ds_root)
    assert verify_api(ds_root, fast=True).problems == []
    save_nrrd(ds_root / seg, affine((0.8, 0.8, 3.0)))
    report = verify_api(ds_root, fast=True)
    assert summary(report.problems) == [("geometry", "error", (seg, vol))]


# --------------------------------------------------------------------------- usage


def test_outside_a_dataset_is_usage_error(tmp_path: Path) -> None:
    proc = run_script(["verify"], cwd=tmp_path)
    assert proc.returncode == 2
    assert_clean_stderr(proc.stderr)
    err = proc.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "not a volsegsync dataset" in err
    assert proc.stdout == b""


def test_bad_jobs_is_usage_error(ds_root: Path) -> None:
    result = invoke(["-C", str(ds_root), "verify", "--jobs", "0"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_real_process_reports_fault_json(ds_root: Path) -> None:
    build_base(ds_root)
    f_corrupt_truncated_nii(ds_root)
    fast = run_script(["verify", "--fast", "--format", "json"], cwd=ds_root)
    assert fast.returncode == 0, fast.stderr
    assert json.loads(fast.stdout)["problems"] == []
    full = run_script(["verify", "--format", "json", "-j", "2"], cwd=ds_root)
    assert full.returncode == 1
    assert_clean_stderr(full.stderr)
    doc = json.loads(full.stdout)
    assert [(p["category"], p["files"]) for p in doc["problems"]] == [("corrupt", [_vol()])]


def test_unknown_path_is_a_usage_error(ds_root: Path) -> None:
    """A typo in PATHS is not a clean bill of health: exit 2, naming the path."""
    result = invoke(["-C", str(ds_root), "verify", "no/such/file.nrrd"])
    assert result.exit_code == 2
    assert "no/such/file.nrrd: no such file or folder in the dataset" in result.stderr


def test_deleted_indexed_file_can_be_asked_about(ds_root: Path) -> None:
    _, [seg] = write_pair(ds_root, NAME1)
    assert invoke(["-C", str(ds_root), "pair", "-q"]).exit_code == 0
    (ds_root / seg).unlink()
    result = invoke(["-C", str(ds_root), "verify", "--format", "json", seg])
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert [(p["category"], p["files"]) for p in problems] == [("drift_missing", [seg])]


def test_metadata_pairing_in_verify(ds_root: Path) -> None:
    """With pairing.by = "metadata", verify pairs as pair does: a Slicer-named segmentation
    on the volume's grid is its pair (only its name is a problem), a broken one is reported
    once and does not make its would-be partner "unpaired" twice."""
    from conftest import make_affine, write_nii, write_nrrd

    config = ds_root / ".volsegsync" / "config.toml"
    config.write_text(config.read_text().replace('by = "naming"', 'by = "metadata"'))
    a1 = make_affine((1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    a2 = make_affine((1.0, 1.0, 2.0), (10.0, -5.0, 3.0))
    write_nii(ds_root / f"{NAME1}.nii.gz", affine=a1)
    write_nii(ds_root / f"{NAME2}.nii.gz", affine=a2)
    write_nrrd(ds_root / "masks" / "Segmentation.seg.nrrd", affine=a1)
    (ds_root / "masks" / "broken.nrrd").write_bytes(b"garbage, not a NRRD")
    age_all(ds_root)
    report = run_verify(Dataset.open(ds_root), jobs=1)
    found = sorted((p.category, p.files) for p in report.problems)
    assert found == [
        ("naming", ("masks/Segmentation.seg.nrrd",)),
        ("naming", ("masks/broken.nrrd",)),
        ("not_an_image", ("masks/broken.nrrd",)),
        ("unpaired_segmentation", ("masks/broken.nrrd",)),
        ("unpaired_volume", (f"{NAME2}.nii.gz",)),
    ]
    pairs = [(p.volume, p.segmentation, p.how) for p in report.pairs if p.volume and p.segmentation]
    assert pairs == [(f"{NAME1}.nii.gz", "masks/Segmentation.seg.nrrd", "metadata")]
