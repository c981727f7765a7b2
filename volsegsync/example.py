"""``volsegsync example``: a small, real dataset to try volsegsync on.

Writes NIfTI volumes (nibabel) and NRRD segmentations (pynrrd, in 3D Slicer's
left-posterior-superior space) that follow the default naming convention, and
plants problems for ``verify`` and ``check-names`` to find.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import nibabel as nib
import nrrd
import numpy as np

from volsegsync.errors import VolsegsyncError

LPS = np.diag([-1.0, -1.0, 1.0])
NDArray = np.ndarray[Any, Any]


class ExampleCase(NamedTuple):
    name: str  # the volume's name without extension
    versions: tuple[int, ...]
    spacing: tuple[float, float, float]
    seg_spacing: tuple[float, float, float] | None = None  # planted geometry problem
    slicer: bool = False


CASES = (
    ExampleCase("C01-LowerBack_FSE_T2w_V001-D22061998", (1, 2), (0.6, 0.6, 4.0)),
    ExampleCase("C02-LowerBack_FSE_T2w_V002-D05031987", (1,), (0.6, 0.6, 4.0), slicer=True),
    ExampleCase("C03-Knee_PD_V001-D17112003", (1,), (0.5, 0.5, 3.0), seg_spacing=(0.6, 0.6, 3.0)),
    ExampleCase("C04-Knee_PD_V002-D31022001", (1,), (0.5, 0.5, 3.0)),  # 31 February: bad name
)
SHAPE = (48, 40, 12)


class ExampleReport(NamedTuple):
    root: Path
    files: list[str]
    planted: list[str]


def make_example(root: Path, force: bool = False) -> ExampleReport:
    """Write the example files below ``root`` (refuses a non-empty folder unless ``force``)."""
    if root.exists() and any(root.iterdir()) and not force:
        raise VolsegsyncError(f"{root}: folder is not empty (use --force to write into it)")
    (root / "volumes").mkdir(parents=True, exist_ok=True)
    (root / "segmentations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    files: list[str] = []
    for i, case in enumerate(CASES):
        affine = _affine(case.spacing, origin=(-60.0 + 5 * i, -80.0, -20.0))
        labels = _labels(rng)
        volume = (labels.astype(np.float64) * 300 + rng.normal(500, 40, SHAPE)).astype(np.int16)
        vol_rel = f"volumes/{case.name}.nii.gz"
        nib.save(nib.Nifti1Image(volume, affine), root / vol_rel)  # type: ignore[no-untyped-call]
        files.append(vol_rel)
        seg_affine = (
            _affine(case.seg_spacing, (-60.0 + 5 * i, -80.0, -20.0)) if case.seg_spacing else affine
        )
        for version in case.versions:
            ext = ".seg.nrrd" if case.slicer else ".nrrd"
            seg_rel = f"segmentations/{case.name}-v{version}{ext}"
            seg = labels if version == case.versions[-1] else np.minimum(labels, 1)
            _write_nrrd(root / seg_rel, seg.astype(np.uint8), seg_affine, case.slicer)
            files.append(seg_rel)
    planted = [
        f"segmentations/{CASES[2].name}-v1.nrrd: voxel spacing 0.6 mm, its volume has 0.5 mm",
        f"volumes/{CASES[3].name}.nii.gz: 31 February is no date",
    ]
    return ExampleReport(root, files, planted)


LABELS = '[verify.labels]\n0 = "background"\n1 = "vertebra"\n2 = "disc"\n'


def declare_labels(config_path: Path) -> None:
    """Declare the example's label set in its config (uncommenting the template's)."""
    text = config_path.read_text(encoding="utf-8")
    commented = '# [verify.labels]\n# 0 = "background"\n# 1 = "vertebra"\n'
    if commented in text:
        text = text.replace(commented, LABELS)
    elif "[verify.labels]" not in text:
        text += "\n" + LABELS
    config_path.write_text(text, encoding="utf-8")


def _affine(spacing: tuple[float, float, float], origin: tuple[float, float, float]) -> NDArray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def _labels(rng: np.random.Generator) -> NDArray:
    """A "vertebra" (1) and a "disc" (2) as two ellipsoids, slightly jittered."""
    x, y, z = np.indices(SHAPE, dtype=float)
    cx, cy = SHAPE[0] / 2 + rng.uniform(-2, 2), SHAPE[1] / 2 + rng.uniform(-2, 2)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[((x - cx) / 12) ** 2 + ((y - cy) / 9) ** 2 + ((z - 4) / 3) ** 2 <= 1] = 1
    labels[((x - cx) / 10) ** 2 + ((y - cy) / 7) ** 2 + ((z - 9) / 1.5) ** 2 <= 1] = 2
    return labels


def _write_nrrd(path: Path, data: NDArray, affine: NDArray, slicer: bool) -> None:
    """Write ``data`` with the RAS ``affine`` converted to LPS, as 3D Slicer does."""
    header: dict[str, object] = {
        "space": "left-posterior-superior",
        "space directions": (LPS @ affine[:3, :3]).T,
        "space origin": LPS @ affine[:3, 3],
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }
    if slicer:
        for i, name in enumerate(("vertebra", "disc")):
            header[f"Segment{i}_ID"] = f"Segment_{i + 1}"
            header[f"Segment{i}_Name"] = name
            header[f"Segment{i}_LabelValue"] = str(i + 1)
            header[f"Segment{i}_Layer"] = "0"
    nrrd.write(str(path), data, header)
