"""compare() / same_grid() on geometries read from real NIfTI and NRRD files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pytest

from volsegsync.geometry import Difference, compare, same_grid
from volsegsync.headers import Geometry, read_geometry

SIGNS = {"LPS": (-1.0, -1.0, 1.0), "RAS": (1.0, 1.0, 1.0), "LAS": (-1.0, 1.0, 1.0)}
SPACE_NAMES = {
    "left-posterior-superior": "LPS",
    "right-anterior-superior": "RAS",
    "left-anterior-superior": "LAS",
}


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(
    spacing: tuple[float, ...] = (0.5, 0.5, 4.0),
    origin: tuple[float, ...] = (-120.3, 95.7, -40.1),
    rot: np.ndarray | None = None,
) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = (np.eye(3) if rot is None else rot) * np.array(spacing)
    affine[:3, 3] = origin
    return affine


# Oblique, with values float32 cannot hold exactly and a far-from-zero origin.
OBLIQUE = make_affine(
    (0.7031, 0.7031, 3.3), (-212.34567, 187.65432, -1234.56789), rotation(0.13, -0.21, 0.37)
)
AXIAL = make_affine()


def nifti(path: Path, affine: np.ndarray, shape: tuple[int, ...] = (8, 9, 10)) -> Geometry:
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), affine), str(path))
    return read_geometry(path)


def nrrd_header(affine: np.ndarray, space: str) -> dict[str, Any]:
    """A NRRD header describing the RAS ``affine`` correctly in ``space``."""
    signs = np.array(SIGNS[SPACE_NAMES.get(space, space)])[:, None]
    world = affine[:3] * signs
    return {"space": space, "space directions": world[:, :3].T, "space origin": world[:, 3]}


def seg(path: Path, header: dict[str, Any], shape: tuple[int, ...] = (8, 9, 10)) -> Geometry:
    nrrd.write(str(path), np.zeros(shape, np.uint8), header)
    return read_geometry(path)


def properties(found: list[Difference]) -> list[tuple[str, str]]:
    return [(d.category, d.property) for d in found]


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    "space", ["LPS", "left-posterior-superior", "RAS", "LAS", "left-anterior-superior"]
)
@pytest.mark.parametrize("affine", [AXIAL, OBLIQUE], ids=["axial", "oblique"])
def test_correct_nrrd_matches_its_nifti(tmp_path: Path, space: str, affine: np.ndarray) -> None:
    vol = nifti(tmp_path / "v.nii.gz", affine)
    s = seg(tmp_path / "s.seg.nrrd", nrrd_header(affine, space))
    assert compare(vol, s) == []
    assert same_grid(vol, s)
    assert same_grid(s, vol)


def test_float32_sform_rounding_is_no_false_alarm(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii", OBLIQUE)
    stored = np.array(vol.affine)
    assert not np.array_equal(stored, OBLIQUE)  # the header really rounded to float32
    assert np.array_equal(stored, OBLIQUE.astype(np.float32).astype(np.float64))
    s = seg(tmp_path / "s.nrrd", nrrd_header(OBLIQUE, "LPS"))
    assert np.array_equal(np.array(s.affine), OBLIQUE)  # NRRD keeps float64 exactly
    assert compare(vol, s, position_tolerance=0.0, direction_tolerance=0.0) == []
    assert compare(vol, s) == []


def test_float32_slack_does_not_hide_real_offsets(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii", OBLIQUE)
    moved = OBLIQUE.copy()
    moved[0, 3] += 0.01  # 10 µm; tolerance is 1e-3 * 0.7031 mm = 0.7 µm
    found = compare(vol, seg(tmp_path / "s.nrrd", nrrd_header(moved, "LPS")))
    assert properties(found) == [("geometry", "origin")]
    assert found[0].details["max_deviation"] == pytest.approx(0.01, rel=1e-3)
    assert found[0].details["tolerance"] == pytest.approx(0.7031e-3)


def test_layered_4d_segmentation_compares_on_spatial_axes(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", OBLIQUE)
    header = nrrd_header(OBLIQUE, "left-posterior-superior")
    header["space directions"] = np.vstack([np.full(3, np.nan), header["space directions"]])
    header["kinds"] = ["list", "domain", "domain", "domain"]
    header.update(Segment0_ID="Segment_1", Segment0_LabelValue="1", Segment0_Layer="0")
    s = seg(tmp_path / "s.seg.nrrd", header, (3, 8, 9, 10))
    assert (s.shape, s.extra_axes) == ((8, 9, 10), (3,))
    assert compare(vol, s) == []


# --------------------------------------------------------------------------- mismatches


@pytest.mark.parametrize("affine", [AXIAL, OBLIQUE], ids=["axial", "oblique"])
def test_lps_label_with_ras_numbers_mismatches(tmp_path: Path, affine: np.ndarray) -> None:
    vol = nifti(tmp_path / "v.nii.gz", affine)
    wrong = nrrd_header(affine, "RAS")
    wrong["space"] = "left-posterior-superior"  # RAS numbers, LPS label
    found = compare(vol, seg(tmp_path / "s.seg.nrrd", wrong))
    assert properties(found) == [("geometry", "origin"), ("geometry", "direction")]
    origin, direction = found
    assert origin.details["volume"] == pytest.approx(list(affine[:3, 3]), abs=1e-3)
    assert origin.details["segmentation"] == pytest.approx(
        [-affine[0, 3], -affine[1, 3], affine[2, 3]]
    )
    assert direction.details["max_deviation"] > 1.0
    assert not same_grid(vol, seg(tmp_path / "s.seg.nrrd", wrong))


def test_flipped_axes_message_names_axis_codes(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", AXIAL)
    wrong = nrrd_header(AXIAL, "RAS")
    wrong["space"] = "LPS"
    direction = compare(vol, seg(tmp_path / "s.nrrd", wrong))[-1]
    assert direction.property == "direction"
    assert "volume axes RAS vs segmentation LPS, up to 180° apart" in direction.message
    assert direction.details["max_angle_degrees"] == pytest.approx(180.0)


def test_spacing_difference_reports_both_values(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", make_affine((0.5, 0.5, 4.0)))
    s = seg(tmp_path / "s.nrrd", nrrd_header(make_affine((0.6, 0.6, 4.0)), "LPS"))
    found = compare(vol, s)
    assert properties(found) == [("geometry", "spacing")]
    d = found[0]
    assert d.message == (
        "spacing differs: volume (0.5, 0.5, 4) vs segmentation (0.6, 0.6, 4) mm "
        "(max deviation 0.1 mm, tolerance 0.0005 mm)"
    )
    assert d.details["volume"] == [0.5, 0.5, 4.0]
    assert d.details["segmentation"] == pytest.approx([0.6, 0.6, 4.0])
    assert d.details["max_deviation"] == pytest.approx(0.1)
    assert d.details["tolerance"] == pytest.approx(0.0005)


def test_tiny_spacing_difference_shows_enough_digits() -> None:
    a = Geometry((2, 2, 2), tuple(map(tuple, make_affine((0.5, 0.5, 4.0)))), "RAS", True, "u1")
    b = Geometry((2, 2, 2), tuple(map(tuple, make_affine((0.50001, 0.5, 4.0)))), "RAS", True, "u1")
    (d,) = compare(a, b, position_tolerance=1e-6)
    assert "volume (0.5, 0.5, 4) vs segmentation (0.50001, 0.5, 4) mm" in d.message


def test_position_tolerance_scales_with_smallest_spacing(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii", AXIAL)  # smallest spacing 0.5 mm -> 0.5 µm tolerance
    near, far = AXIAL.copy(), AXIAL.copy()
    near[2, 3] += 0.0004
    far[2, 3] += 0.0007
    assert compare(vol, seg(tmp_path / "near.nrrd", nrrd_header(near, "LPS"))) == []
    found = compare(vol, seg(tmp_path / "far.nrrd", nrrd_header(far, "LPS")))
    assert properties(found) == [("geometry", "origin")]
    assert found[0].details["offset_voxels"] == pytest.approx([0.0, 0.0, 0.0007 / 4.0], abs=1e-4)


def test_small_rotation_is_a_direction_difference(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", AXIAL)
    tilted = make_affine(rot=rotation(0.0, 0.0, np.radians(0.05)))
    found = compare(vol, seg(tmp_path / "s.nrrd", nrrd_header(tilted, "LPS")))
    assert properties(found) == [("geometry", "direction")]
    assert found[0].details["max_angle_degrees"] == pytest.approx(0.05, rel=1e-3)
    assert "volume axes RAS vs segmentation RAS, up to 0.05° apart" in found[0].message
    assert (
        compare(vol, seg(tmp_path / "s.nrrd", nrrd_header(tilted, "LPS")), direction_tolerance=1e-3)
        == []
    )


def test_half_voxel_shift_is_geometry_not_extent(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", OBLIQUE)
    shifted = OBLIQUE.copy()
    shifted[:3, 3] = OBLIQUE[:3] @ np.array([0.5, 0.5, 0.0, 1.0])
    found = compare(vol, seg(tmp_path / "s.nrrd", nrrd_header(shifted, "LPS")))
    assert properties(found) == [("geometry", "origin")]
    assert found[0].details["offset_voxels"] == pytest.approx([0.5, 0.5, 0.0], abs=1e-4)
    assert "offset (0.5, 0.5, 0) voxels" in found[0].message


def test_shape_difference_without_extent_is_geometry(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", AXIAL)
    s = seg(tmp_path / "s.nrrd", nrrd_header(make_affine((0.25, 0.25, 4.0)), "LPS"), (16, 18, 10))
    found = compare(vol, s)
    assert properties(found) == [("geometry", "shape"), ("geometry", "spacing")]
    assert found[0].message == "shape differs: volume (8, 9, 10) vs segmentation (16, 18, 10)"
    assert found[0].details == {"volume": [8, 9, 10], "segmentation": [16, 18, 10]}


def test_different_dimensionality(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", AXIAL)
    header = {"space": "RAS", "space directions": np.array([[0.5, 0, 0], [0, 0.5, 0]])}
    s = seg(tmp_path / "s.nrrd", header, (8, 9))
    found = compare(vol, s)
    assert properties(found) == [("geometry", "shape")]
    assert found[0].details["volume"] == [8, 9, 10]
    assert found[0].details["segmentation"] == [8, 9]


# --------------------------------------------------------------------------- extent


def test_cropped_segmentation_is_extent(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", OBLIQUE, (32, 32, 12))
    cropped = OBLIQUE.copy()
    cropped[:3, 3] = OBLIQUE[:3] @ np.array([10, 0, 2, 1.0])
    s = seg(tmp_path / "s.seg.nrrd", nrrd_header(cropped, "LPS"), (20, 24, 8))
    found = compare(vol, s)
    assert properties(found) == [("extent", "extent")]
    assert found[0].message == (
        "extent differs: segmentation starts at voxel (10, 0, 2) of the volume, "
        "shape (20, 24, 8) vs volume (32, 32, 12) (cropped: lies inside the volume)"
    )
    assert found[0].details == {
        "offset_voxels": [10, 0, 2],
        "volume_shape": [32, 32, 12],
        "segmentation_shape": [20, 24, 8],
        "kind": "cropped",
    }
    assert not same_grid(vol, s)


def test_padded_segmentation_is_extent(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", AXIAL, (8, 9, 10))
    padded = AXIAL.copy()
    padded[:3, 3] = AXIAL[:3] @ np.array([-2, -3, 0, 1.0])
    found = compare(vol, seg(tmp_path / "s.nrrd", nrrd_header(padded, "RAS"), (12, 14, 10)))
    assert properties(found) == [("extent", "extent")]
    assert found[0].details["offset_voxels"] == [-2, -3, 0]
    assert found[0].details["kind"] == "padded"


def test_same_origin_other_shape_is_extent(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", AXIAL, (8, 9, 10))
    found = compare(vol, seg(tmp_path / "s.nrrd", nrrd_header(AXIAL, "LPS"), (8, 9, 6)))
    assert properties(found) == [("extent", "extent")]
    assert found[0].details["offset_voxels"] == [0, 0, 0]


def test_whole_voxel_shift_without_overlap_is_geometry(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", AXIAL, (8, 9, 10))
    far = AXIAL.copy()
    far[:3, 3] = AXIAL[:3] @ np.array([100, 0, 0, 1.0])
    found = compare(vol, seg(tmp_path / "s.nrrd", nrrd_header(far, "LPS")))
    assert properties(found) == [("geometry", "origin")]
    assert found[0].details["offset_voxels"] == pytest.approx([100.0, 0.0, 0.0], abs=1e-4)


# --------------------------------------------------------------------------- frames


def test_scanner_xyz_segmentation_is_frame_unknown(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", AXIAL)
    header = nrrd_header(AXIAL, "RAS")
    header["space"] = "scanner-xyz"
    found = compare(vol, seg(tmp_path / "s.nrrd", header))
    assert properties(found) == [("frame_unknown", "frame")]
    d = found[0]
    assert d.details["volume_frame"] == "RAS"
    assert d.details["segmentation_frame"] == "scanner-xyz"
    assert d.details["not_compared"] == ["origin", "direction", "extent"]
    assert "compared shape and spacing only, not origin, direction or extent" in d.message
    assert not same_grid(vol, seg(tmp_path / "s.nrrd", header))


def test_frame_unknown_still_compares_shape_and_spacing(tmp_path: Path) -> None:
    vol = nifti(tmp_path / "v.nii.gz", AXIAL)
    s = seg(tmp_path / "s.nrrd", {"spacings": [0.5, 0.5, 3.0]}, (8, 9, 11))
    found = compare(vol, s)
    assert properties(found) == [
        ("geometry", "shape"),
        ("geometry", "spacing"),
        ("frame_unknown", "frame"),
    ]
    assert found[2].details["segmentation_frame"] == "unknown"


def test_spacings_only_pair_is_not_positioned(tmp_path: Path) -> None:
    a = seg(tmp_path / "a.nrrd", {"spacings": [0.5, 0.5, 3.0]})
    b = seg(tmp_path / "b.nrrd", {"spacings": [0.5, 0.5, 3.0]})
    found = compare(a, b)
    assert properties(found) == [("frame_unknown", "frame")]
    assert found[0].details["compared"] == ["shape", "spacing"]


def test_shared_non_anatomical_frame_compares_origin(tmp_path: Path) -> None:
    header = {
        "space": "scanner-xyz",
        "space directions": np.diag([1.0, 1.0, 2.0]),
        "space origin": np.array([0.0, 0.0, 0.0]),
    }
    a = seg(tmp_path / "a.nrrd", header)
    assert properties(compare(a, a)) == [("frame_unknown", "frame")]
    moved = {**header, "space origin": np.array([0.0, 0.3, 0.0])}
    found = compare(a, seg(tmp_path / "b.nrrd", moved))
    assert properties(found) == [("geometry", "origin"), ("frame_unknown", "frame")]
    assert found[1].details["not_compared"] == []
    assert "origin and direction compared in that frame only" in found[1].message


def test_differences_are_json_serializable(tmp_path: Path) -> None:
    import json

    vol = nifti(tmp_path / "v.nii.gz", OBLIQUE)
    wrong = nrrd_header(make_affine((0.6, 0.6, 4.0)), "RAS")
    wrong["space"] = "scanner-xyz"
    found = compare(vol, seg(tmp_path / "s.nrrd", wrong, (8, 9, 11)))
    assert [d.property for d in found] == ["shape", "spacing", "frame"]
    text = json.dumps([d.details for d in found])
    assert json.loads(text)[1]["segmentation"] == pytest.approx([0.6, 0.6, 4.0])
