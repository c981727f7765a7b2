"""read_geometry on real NIfTI and NRRD files written with nibabel and pynrrd."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pytest
from nibabel.testing import data_path

from volsegsync.errors import FileProblem
from volsegsync.headers import Geometry, HeaderProblem, read_geometry

NIBABEL_DATA = Path(data_path)

OBLIQUE = np.array(
    [
        [0.69, -0.12, 0.31, -120.3],
        [0.11, 0.78, -0.05, 95.7],
        [-0.17, 0.04, 3.28, -40.1],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def write_nifti(
    path: Path, affine: np.ndarray, shape: tuple[int, ...] = (4, 5, 6), dtype: str = "int16"
) -> Path:
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=dtype), affine), str(path))
    return path


def write_nrrd(
    path: Path, header: dict[str, Any], shape: tuple[int, ...] = (4, 5, 6), dtype: str = "int16"
) -> Path:
    nrrd.write(str(path), np.zeros(shape, dtype=dtype), header)
    return path


def as_array(g: Geometry) -> np.ndarray:
    return np.array(g.affine)


# --------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize(
    ("name", "spatial", "extra"),
    [
        ("anatomical.nii", (33, 41, 25), ()),
        ("example4d.nii.gz", (128, 96, 24), (2,)),
        ("example_nifti2.nii.gz", (32, 20, 12), (2,)),
    ],
)
def test_nibabel_sample_files_match_nibabel(
    name: str, spatial: tuple[int, ...], extra: tuple[int, ...]
) -> None:
    path = NIBABEL_DATA / name
    img = nib.load(path)
    g = read_geometry(path)
    assert g.shape == spatial
    assert g.extra_axes == extra
    assert g.shape + g.extra_axes == img.shape
    assert np.array_equal(as_array(g), img.affine)
    assert g.dtype == img.get_data_dtype().name
    assert (g.frame, g.anatomical, dict(g.fields)) == ("RAS", True, {})


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize(
    "affine",
    [np.diag([0.5, 0.6, 4.0, 1.0]), np.diag([-0.5, -0.6, 4.0, 1.0]), OBLIQUE],
    ids=["ras", "lps_like", "oblique"],
)
def test_written_nifti_geometry(tmp_path: Path, suffix: str, affine: np.ndarray) -> None:
    path = write_nifti(tmp_path / f"vol{suffix}", affine, shape=(7, 8, 9), dtype="uint8")
    g = read_geometry(path)
    assert g.shape == (7, 8, 9)
    assert g.extra_axes == ()
    assert g.dtype == "uint8"
    assert np.array_equal(as_array(g), nib.load(path).affine)
    assert np.allclose(as_array(g), affine, atol=1e-5)
    assert g.spacing == pytest.approx(np.linalg.norm(affine[:3, :3], axis=0), abs=1e-6)
    assert g.origin == pytest.approx(affine[:3, 3], abs=1e-4)


def test_nifti_4d_and_dtype(tmp_path: Path) -> None:
    g = read_geometry(write_nifti(tmp_path / "t.nii.gz", OBLIQUE, (3, 4, 5, 7), "float32"))
    assert (g.shape, g.extra_axes, g.dtype) == ((3, 4, 5), (7,), "float32")


def test_nifti_2d_gets_a_third_axis_of_one(tmp_path: Path) -> None:
    g = read_geometry(write_nifti(tmp_path / "slice.nii", np.eye(4), (6, 7)))
    assert g.shape == (6, 7, 1)
    assert len(g.affine) == 4


def test_nifti_without_sform_or_qform_is_not_anatomical(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((2, 3, 4), np.int16), None)
    img.header.set_zooms((2.0, 3.0, 4.0))
    nib.save(img, str(tmp_path / "nocode.nii"))
    g = read_geometry(tmp_path / "nocode.nii")
    assert (g.frame, g.anatomical) == ("unknown", False)
    assert g.spacing == (2.0, 3.0, 4.0)


def test_nifti_header_is_enough(tmp_path: Path) -> None:
    """Voxel data is never read: a .nii.gz cut right after its header still reads."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 30000, (40, 40, 40)).astype(np.int16)
    full = tmp_path / "full.nii.gz"
    nib.save(nib.Nifti1Image(data, OBLIQUE), str(full))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(full.read_bytes()[:2000])
    assert read_geometry(cut) == read_geometry(full)
    assert read_geometry(cut).shape == (40, 40, 40)


# --------------------------------------------------------------------------- NRRD


def test_nrrd_lps_is_converted_to_ras(tmp_path: Path) -> None:
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([0.5, 0.6, 4.0]),
        "space origin": np.array([10.0, 20.0, 30.0]),
    }
    g = read_geometry(write_nrrd(tmp_path / "seg.nrrd", header, dtype="uint8"))
    assert g.affine == (
        (-0.5, 0.0, 0.0, -10.0),
        (0.0, -0.6, 0.0, -20.0),
        (0.0, 0.0, 4.0, 30.0),
        (0.0, 0.0, 0.0, 1.0),
    )
    assert (g.frame, g.anatomical, g.dtype, g.shape) == ("RAS", True, "uint8", (4, 5, 6))
    assert g.spacing == (0.5, 0.6, 4.0)
    assert g.origin == (-10.0, -20.0, 30.0)
    assert g.directions == ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))


@pytest.mark.parametrize(
    ("space", "signs"),
    [
        ("RAS", (1, 1, 1)),
        ("right-anterior-superior", (1, 1, 1)),
        ("LAS", (-1, 1, 1)),
        ("left-anterior-superior", (-1, 1, 1)),
        ("LPS", (-1, -1, 1)),
    ],
)
def test_nrrd_anatomical_spaces(tmp_path: Path, space: str, signs: tuple[int, ...]) -> None:
    directions = OBLIQUE[:3, :3].T  # one row per axis
    header = {"space": space, "space directions": directions, "space origin": OBLIQUE[:3, 3]}
    g = read_geometry(write_nrrd(tmp_path / "x.nrrd", header))
    expected = OBLIQUE.copy()
    expected[:3] *= np.array(signs)[:, None]
    assert np.array_equal(as_array(g), expected)
    assert g.frame == "RAS"


@pytest.mark.parametrize("space", ["scanner-xyz", "3D-right-handed", "3D-left-handed"])
def test_nrrd_non_anatomical_space_kept_as_is(tmp_path: Path, space: str) -> None:
    header = {"space": space, "space directions": OBLIQUE[:3, :3].T, "space origin": [1.0, 2, 3]}
    g = read_geometry(write_nrrd(tmp_path / "x.nrrd", header))
    assert (g.frame, g.anatomical) == (space, False)
    assert np.array_equal(as_array(g)[:3, :3], OBLIQUE[:3, :3])
    assert g.origin == (1.0, 2.0, 3.0)


def test_nrrd_space_dimension_without_space(tmp_path: Path) -> None:
    header = {"space dimension": 3, "space directions": np.diag([2.0, 3.0, 4.0])}
    g = read_geometry(write_nrrd(tmp_path / "x.nrrd", header))
    assert (g.frame, g.anatomical, g.spacing) == ("unknown", False, (2.0, 3.0, 4.0))


def test_nrrd_spacings_only(tmp_path: Path) -> None:
    g = read_geometry(write_nrrd(tmp_path / "x.nrrd", {"spacings": [0.5, 0.75, 2.5]}))
    assert (g.frame, g.anatomical) == ("unknown", False)
    assert g.affine == (
        (0.5, 0.0, 0.0, 0.0),
        (0.0, 0.75, 0.0, 0.0),
        (0.0, 0.0, 2.5, 0.0),
        (0.0, 0.0, 0.0, 1.0),
    )


def test_slicer_layered_segmentation(tmp_path: Path) -> None:
    header = {
        "space": "left-posterior-superior",
        "space directions": np.array(
            [[np.nan] * 3, [0.5, 0.0, 0.0], [0.0, 0.6, 0.0], [0.0, 0.0, 4.0]]
        ),
        "space origin": np.array([-10.0, -20.0, 5.0]),
        "kinds": ["list", "domain", "domain", "domain"],
        "Segment0_ID": "Segment_1",
        "Segment0_Name": "vertebra L1",
        "Segment0_LabelValue": "1",
        "Segment0_Layer": "0",
        "Segment1_ID": "Segment_2",
        "Segment1_LabelValue": "1",
        "Segment1_Layer": "1",
    }
    path = write_nrrd(tmp_path / "case.seg.nrrd", header, (2, 4, 5, 6), "uint8")
    assert "space directions: none (0.5" in path.read_bytes()[:1000].decode("latin-1")
    g = read_geometry(path)
    assert g.shape == (4, 5, 6)
    assert g.extra_axes == (2,)
    assert g.spacing == (0.5, 0.6, 4.0)
    assert g.origin == (10.0, 20.0, 5.0)
    assert g.fields["Segment0_LabelValue"] == "1"
    assert g.fields["Segment0_Name"] == "vertebra L1"
    assert g.fields["Segment1_Layer"] == "1"
    assert "space" not in g.fields and "kinds" not in g.fields


def test_nrrd_key_value_escapes_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "kv.nrrd"
    path.write_bytes(
        b"NRRD0004\n# a comment: not a field\ntype: uint8\ndimension: 3\n"
        b"sizes: 2 2 2\nencoding: raw\nspace: RAS\n"
        b"space directions: (1,0,0) (0,1,0) (0,0,1)\n"
        b"Note:=line one\\nline two\nWeird:=a:b=c\n"
        + "Segment0_Name:=Läsion\n\n".encode()
        + bytes(8)
    )
    g = read_geometry(path)
    assert dict(g.fields) == {
        "Note": "line one\nline two",
        "Weird": "a:b=c",
        "Segment0_Name": "Läsion",
    }


def test_nrrd_detached_header(tmp_path: Path) -> None:
    header = {"space": "RAS", "space directions": np.diag([1.0, 2.0, 3.0])}
    nrrd.write(
        str(tmp_path / "d.nhdr"), np.zeros((4, 5, 6), np.int16), header, detached_header=True
    )
    (tmp_path / "d.raw.gz").unlink()  # the header alone is enough
    g = read_geometry(tmp_path / "d.nhdr")
    assert (g.shape, g.spacing, g.dtype) == ((4, 5, 6), (1.0, 2.0, 3.0), "int16")


def test_nrrd_header_is_enough(tmp_path: Path) -> None:
    """Garbage after the header's blank line is never looked at."""
    path = tmp_path / "x.nrrd"
    path.write_bytes(
        b"NRRD0005\ntype: short\ndimension: 3\nsizes: 300 300 300\nendian: little\n"
        b"encoding: gzip\nspace: LPS\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
        b"space origin: (0,0,0)\n\n\x1f\x8bnot really gzip"
    )
    g = read_geometry(path)
    assert (g.shape, g.dtype) == ((300, 300, 300), "int16")


# --------------------------------------------------------------------------- sniffing


def test_unknown_extension_is_sniffed(tmp_path: Path) -> None:
    nifti = write_nifti(tmp_path / "a.nii.gz", OBLIQUE)
    other = tmp_path / "volume.bin"
    other.write_bytes(nifti.read_bytes())
    assert read_geometry(other) == read_geometry(nifti)
    seg = write_nrrd(tmp_path / "b.nrrd", {"spacings": [1.0, 2.0, 3.0]})
    (tmp_path / "seg.dat").write_bytes(seg.read_bytes())
    assert read_geometry(tmp_path / "seg.dat").spacing == (1.0, 2.0, 3.0)


# --------------------------------------------------------------------------- failures


def problem(path: Path) -> HeaderProblem:
    with pytest.raises(FileProblem) as info:
        read_geometry(path)
    err = info.value
    assert isinstance(err, HeaderProblem)
    assert err.path == str(path)
    assert str(path) in str(err)
    assert "\n" not in str(err)
    return err


def test_missing_file(tmp_path: Path) -> None:
    err = problem(tmp_path / "nope.nii.gz")
    assert (err.category, err.reason) == ("unreadable", "file not found")


def test_broken_symlink(tmp_path: Path) -> None:
    (tmp_path / "link.nrrd").symlink_to(tmp_path / "gone.nrrd")
    assert problem(tmp_path / "link.nrrd").reason == "broken symbolic link"


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.nii").mkdir()
    assert problem(tmp_path / "dir.nii").category == "unreadable"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_permission_denied(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "locked.nii", np.eye(4))
    path.chmod(0)
    try:
        err = problem(path)
    finally:
        path.chmod(0o644)
    assert (err.category, err.reason) == ("unreadable", "permission denied")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.nrrd").write_bytes(b"")
    assert problem(tmp_path / "e.nrrd").reason == "file is empty"


@pytest.mark.parametrize("name", ["garbage.nii.gz", "garbage.nii", "garbage.nrrd", "garbage.xyz"])
def test_garbage_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    err = problem(path)
    assert err.category == "not_an_image"


def test_garbage_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(200)))
    err = problem(path)
    assert err.category == "corrupt"
    assert "gzip" in err.reason


def test_gzip_of_text_is_not_nifti(tmp_path: Path) -> None:
    path = tmp_path / "notes.nii.gz"
    path.write_bytes(gzip.compress(b"hello world, this is not an image" * 40))
    err = problem(path)
    assert (err.category, err.reason) == (
        "not_an_image",
        "not a NIfTI file: gzip data without a NIfTI header",
    )


def test_truncated_nifti_header(tmp_path: Path) -> None:
    full = write_nifti(tmp_path / "full.nii", OBLIQUE)
    cut = tmp_path / "cut.nii"
    cut.write_bytes(full.read_bytes()[:200])
    err = problem(cut)
    assert err.category == "corrupt"
    assert err.reason == "truncated NIfTI header: 200 of 348 bytes present"


def test_truncated_gzipped_nifti_header(tmp_path: Path) -> None:
    raw = write_nifti(tmp_path / "full.nii", OBLIQUE).read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(raw)[:60])
    err = problem(cut)
    assert err.category == "corrupt"
    assert err.reason.startswith("truncated NIfTI header")


def test_wrong_nifti_magic(tmp_path: Path) -> None:
    raw = bytearray(write_nifti(tmp_path / "ok.nii", OBLIQUE).read_bytes())
    raw[344:348] = b"xyz\x00"
    (tmp_path / "bad.nii").write_bytes(bytes(raw))
    err = problem(tmp_path / "bad.nii")
    assert err.category == "not_an_image"
    assert "magic" in err.reason


def test_nrrd_content_named_nifti(tmp_path: Path) -> None:
    seg = write_nrrd(tmp_path / "s.nrrd", {"spacings": [1.0, 1.0, 1.0]})
    (tmp_path / "v.nii.gz").write_bytes(seg.read_bytes())
    err = problem(tmp_path / "v.nii.gz")
    assert (err.category, err.reason) == ("not_an_image", "not a NIfTI file: content is NRRD")


def test_nifti_content_named_nrrd(tmp_path: Path) -> None:
    vol = write_nifti(tmp_path / "v.nii.gz", np.eye(4))
    (tmp_path / "s.seg.nrrd").write_bytes(vol.read_bytes())
    err = problem(tmp_path / "s.seg.nrrd")
    assert (err.category, err.reason) == ("not_an_image", "not a NRRD file: content is NIfTI")


def test_wrong_nrrd_magic(tmp_path: Path) -> None:
    (tmp_path / "x.nrrd").write_bytes(b"NRRD0009\ntype: uint8\n\n")
    err = problem(tmp_path / "x.nrrd")
    assert err.category == "corrupt"
    assert "version" in err.reason


def test_truncated_nrrd_header(tmp_path: Path) -> None:
    full = write_nrrd(tmp_path / "full.nrrd", {"space": "LPS", "space directions": np.eye(3)})
    text = full.read_bytes()
    cut = tmp_path / "cut.nrrd"
    cut.write_bytes(text[: text.index(b"space directions")])
    err = problem(cut)
    assert err.reason == "truncated NRRD header: no blank line before end of file"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"sizes: a b c\n", "cannot parse header"),
        (b"sizes: 2 2\n", "do not match dimension"),
        (b"this line has no colon\n", "cannot parse header"),
    ],
)
def test_garbage_nrrd_header(tmp_path: Path, line: bytes, expected: str) -> None:
    path = tmp_path / "g.nrrd"
    path.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nencoding: raw\n" + line + b"\n")
    err = problem(path)
    assert err.category == "corrupt"
    assert expected in err.reason


def test_nrrd_missing_required_field(tmp_path: Path) -> None:
    (tmp_path / "g.nrrd").write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nencoding: raw\n\n")
    assert problem(tmp_path / "g.nrrd").reason == "NRRD header lacks required field 'sizes'"


def test_nrrd_unknown_type(tmp_path: Path) -> None:
    (tmp_path / "g.nrrd").write_bytes(
        b"NRRD0004\ntype: quaternion\ndimension: 1\nencoding: raw\nsizes: 3\n\n"
    )
    assert problem(tmp_path / "g.nrrd").reason == "unknown NRRD type 'quaternion'"


def test_nrrd_binary_header(tmp_path: Path) -> None:
    (tmp_path / "g.nrrd").write_bytes(b"NRRD0004\ntype: uint8\n\x00\x01\x02\n\n")
    assert "binary" in problem(tmp_path / "g.nrrd").reason


# --------------------------------------------------------------------------- JSON


def test_json_round_trip_is_exact(tmp_path: Path) -> None:
    vol = read_geometry(write_nifti(tmp_path / "v.nii.gz", OBLIQUE, (3, 4, 5, 2)))
    seg = read_geometry(
        write_nrrd(
            tmp_path / "s.seg.nrrd",
            {
                "space": "LPS",
                "space directions": OBLIQUE[:3, :3].T / 3.0,
                "space origin": OBLIQUE[:3, 3] / 7.0,
                "Segment0_Name": "a name: with colon",
            },
        )
    )
    for g in (vol, seg):
        back = Geometry.from_json(json.loads(json.dumps(g.to_json())))
        assert back == g
        assert back.affine == g.affine  # bit for bit
        assert pickle.loads(pickle.dumps(g)) == g
    assert seg.to_json()["fields"] == {"Segment0_Name": "a name: with colon"}
    assert vol.to_json()["extra_axes"] == [2]


@pytest.mark.parametrize(
    "damage",
    [
        {"shape": "abc"},
        {"affine": [[1.0, "x"]]},
        {"anatomical": "yes"},
        {"fields": []},
        {"frame": None},
    ],
)
def test_from_json_rejects_malformed(damage: dict[str, Any]) -> None:
    good = Geometry((1, 2, 3), tuple(map(tuple, np.eye(4))), "RAS", True, "uint8").to_json()
    assert Geometry.from_json(good).shape == (1, 2, 3)
    with pytest.raises(ValueError, match="malformed geometry"):
        Geometry.from_json({**good, **damage})
    with pytest.raises(ValueError, match="malformed geometry"):
        Geometry.from_json({k: v for k, v in good.items() if k != "dtype"})


def test_geometry_properties() -> None:
    g = Geometry(
        shape=(2, 3, 4),
        affine=((0.0, -2.0, 0.0, 5.0), (3.0, 0.0, 0.0, 6.0), (0.0, 0.0, 0.5, 7.0), (0, 0, 0, 1)),
        frame="RAS",
        anatomical=True,
        dtype="int16",
    )
    assert g.spacing == (3.0, 2.0, 0.5)
    assert g.origin == (5.0, 6.0, 7.0)
    assert g.directions == ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    assert hash(g) == hash(Geometry(g.shape, g.affine, "RAS", True, "int16", (), {"a": "b"}))


def test_nrrd_time_space_drops_the_time_axis(tmp_path: Path) -> None:
    directions = np.array(
        [[0.5, 0, 0, 0], [0, 0.6, 0, 0], [0, 0, 4.0, 0], [0, 0, 0, 2.5]], dtype=float
    )
    header = {
        "space": "left-posterior-superior-time",
        "space directions": directions,
        "space origin": np.array([1.0, 2.0, 3.0, 0.0]),
        "kinds": ["domain", "domain", "domain", "time"],
    }
    g = read_geometry(write_nrrd(tmp_path / "t.nrrd", header, (4, 5, 6, 3)))
    assert (g.shape, g.extra_axes, g.frame) == ((4, 5, 6), (3,), "RAS")
    assert g.spacing == (0.5, 0.6, 4.0)
    assert g.origin == (-1.0, -2.0, 3.0)


def test_nrrd_zero_size(tmp_path: Path) -> None:
    (tmp_path / "z.nrrd").write_bytes(
        b"NRRD0004\ntype: uint8\ndimension: 3\nencoding: raw\nsizes: 2 0 2\n\n"
    )
    assert problem(tmp_path / "z.nrrd").reason == "NRRD sizes [2, 0, 2] must all be positive"


# ------------------------------------------------- plain NRRD headers without pynrrd/numpy

_BASE = [
    "NRRD0004",
    "type: unsigned char",
    "dimension: 3",
    "space: left-posterior-superior",
    "sizes: 8 8 6",
    "space directions: (-1,0,0) (0,-1.5,0) (0,0,2.25)",
    "kinds: domain domain domain",
    "endian: little",
    "encoding: raw",
    "space origin: (10.5,-3,7e-1)",
    "Segment0_Name:=vertebra",
]
_VARIANTS: list[tuple[str, list[str]]] = [
    ("as written", _BASE),
    ("comment", [*_BASE[:2], "# a comment", *_BASE[2:]]),
    ("none axis", [
        "NRRD0005", "type: float", "dimension: 4", "space: right-anterior-superior",
        "sizes: 3 8 8 6", "space directions: none (1,0,0) (0,1,0) (0,0,1)",
        "kinds: vector domain domain domain", "endian: little", "encoding: gzip",
    ]),
    ("spacings", ["NRRD0004", "type: short", "dimension: 3", "sizes: 4 5 6",
                  "spacings: 0.5 0.5 3", "kinds: domain domain domain", "encoding: raw",
                  "endian: big"]),
    ("space dimension", ["NRRD0004", "type: int", "dimension: 2", "space dimension: 2",
                         "sizes: 4 5", "space directions: (1,0) (0,2)", "encoding: raw",
                         "endian: little"]),
    ("duplicate", [*_BASE, "sizes: 8 8 7"]),
    ("dimension 17", [_BASE[0], _BASE[1], "dimension: 17", *_BASE[3:]]),
    ("dimension 003", [_BASE[0], _BASE[1], "dimension: 003", *_BASE[3:]]),
    ("dimension 0003", [_BASE[0], _BASE[1], "dimension: 0003", *_BASE[3:]]),
    ("dimension 00003", [_BASE[0], _BASE[1], "dimension: 00003", *_BASE[3:]]),
    ("sizes float", [*_BASE[:4], "sizes: 8 8.7 6", *_BASE[5:]]),
    ("sizes mismatch", [*_BASE[:4], "sizes: 8 8", *_BASE[5:]]),
    ("ragged directions", [*_BASE[:5], "space directions: (1,0,0) (0,1) (0,0,1)", *_BASE[6:]]),
    ("spaced directions", [*_BASE[:5], "space directions: (1, 0,0) (0,1,0) (0,0,1)", *_BASE[6:]]),
    ("nan direction", [*_BASE[:5], "space directions: (nan,nan,nan) (0,1,0) (0,0,1)", *_BASE[6:]]),
    ("inf origin", [*_BASE[:9], "space origin: (inf,0,0)"]),
    ("origin no parens", [*_BASE[:9], "space origin: 1,2,3"]),
    ("unknown field", [*_BASE, "measurement frame: (1,0,0) (0,1,0) (0,0,1)"]),
    ("no type", [_BASE[0], *_BASE[2:]]),
    ("magic 6", ["NRRD0006", *_BASE[1:]]),
    ("blank-ish line", [*_BASE[:3], "   ", *_BASE[3:]]),
    ("no colon", [*_BASE, "garbage"]),
    ("odd type", [_BASE[0], "type: complex", *_BASE[2:]]),
    ("capital Dimension", [_BASE[0], _BASE[1], "Dimension: 3", *_BASE[3:]]),
    ("colon-equals field", [_BASE[0], "type:= uchar", *_BASE[2:]]),
]  # fmt: skip


def _outcome(path: Path) -> Any:
    try:
        return read_geometry(path)
    except HeaderProblem as e:
        return (e.category, e.reason)


@pytest.mark.parametrize("name", [n for n, _ in _VARIANTS])
def test_plain_nrrd_parse_equals_pynrrd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A NRRD header read without pynrrd (and numpy) gives what pynrrd's parse gives:
    the same geometry, or the same problem (then pynrrd decides)."""
    import volsegsync.headers as headers

    lines = dict(_VARIANTS)[name]
    path = tmp_path / "x.nrrd"
    path.write_bytes(("\n".join(lines) + "\n\n").encode() + bytes(8 * 8 * 6 * 4))
    plain = _outcome(path)
    taken = headers._plain_nrrd_header(("\n".join(lines)).encode(), 0, True) is not None
    monkeypatch.setattr(headers, "_plain_nrrd_header", lambda *a: None)
    assert plain == _outcome(path)
    # the plain parse takes the well-formed ones (their problems, if any, come later)
    assert taken == (name in _PLAIN), taken


_PLAIN = {"as written", "comment", "none axis", "spacings", "space dimension"} | {
    "sizes mismatch",
    "nan direction",
    "inf origin",
    "odd type",
}


def test_reading_plain_headers_imports_no_numpy(tmp_path: Path) -> None:
    """What verify --fast reads after an edit (a Slicer NRRD, a NIfTI placed by its
    sform) and the comparison of a pair on one grid need neither numpy nor nibabel."""
    seg = tmp_path / "x.nrrd"
    seg.write_bytes(("\n".join(_BASE) + "\n\n").encode())
    vol = write_nifti(tmp_path / "x.nii.gz", OBLIQUE)
    code = (
        "import sys; from pathlib import Path; from volsegsync.headers import read_geometry; "
        "from volsegsync.geometry import compare; "
        f"g = read_geometry(Path({str(seg)!r})); assert not compare(g, g); "
        f"v = read_geometry(Path({str(vol)!r})); assert not compare(v, v); "
        "assert not {'numpy', 'nrrd', 'nibabel'} & set(sys.modules), 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _nifti_variants() -> list[tuple[str, bytes]]:
    out = []
    for name, shape, dtype, sform, qform, order in [
        ("sform", (4, 5, 6), "int16", 1, 1, "<"),
        ("sform only", (4, 5, 6), "uint8", 2, 0, "<"),
        ("negative sform code", (4, 5, 6), "float32", -1, 0, "<"),
        ("qform only", (4, 5, 6), "int16", 0, 1, "<"),
        ("no transform", (4, 5, 6), "int16", 0, 0, "<"),
        ("4D", (4, 5, 6, 3), "float64", 1, 1, "<"),
        ("2D", (4, 5), "int32", 1, 0, "<"),
        ("big-endian", (4, 5, 6), "int16", 1, 1, ">"),
        ("odd dtype", (4, 5, 6), "complex64", 1, 1, "<"),
        ("ico7", (27307, 1, 6), "float32", 1, 1, "<"),
    ]:
        header = nib.Nifti1Header(endianness=order)  # type: ignore[no-untyped-call]
        header.set_data_shape(shape)
        header.set_data_dtype(dtype)
        header.set_sform(OBLIQUE, code=max(sform, 0))
        header.set_qform(OBLIQUE @ np.diag([1.0, -1.0, 1.0, 1.0]), code=qform)
        block = bytearray(header.binaryblock)
        if sform < 0:
            block[254:256] = sform.to_bytes(2, "little" if order == "<" else "big", signed=True)
        out.append((name, bytes(block)))
    return out


@pytest.mark.parametrize("name", [n for n, _ in _nifti_variants()])
def test_plain_nifti_header_equals_nibabel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A NIfTI-1 header placed by its sform, read without nibabel, gives what nibabel
    gives; any other header is left to nibabel."""
    import volsegsync.headers as headers

    block = dict(_nifti_variants())[name]
    path = tmp_path / "x.nii"
    path.write_bytes(block + b"\0" * 4)
    plain = _outcome(path)
    taken = headers._plain_nifti1_geometry(block) is not None
    monkeypatch.setattr(headers, "_plain_nifti1_geometry", lambda block: None)
    assert plain == _outcome(path)
    sform_placed = {"sform", "sform only", "negative sform code", "4D", "2D", "big-endian"}
    assert taken == (name in sform_placed), taken
