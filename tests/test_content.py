"""Tests for the content pass: real files written with nibabel and pynrrd."""

from __future__ import annotations

import gzip
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pytest

from volsegsync.content import (
    ANALYSIS_VERSION,
    MAX_VALUES,
    ContentCache,
    ContentReport,
    analyse,
    content_key,
    label_problems,
)
from volsegsync.problems import CATEGORIES

LABELS = {0: "background", 1: "vertebra", 2: "disc"}


# --------------------------------------------------------------------------- helpers


def seg_array(dtype: Any = np.uint8, values: tuple[float, ...] = (0, 1, 2)) -> np.ndarray:
    data = np.zeros((8, 7, 6), dtype=dtype)
    for i, v in enumerate(values):
        data[i, :, :] = v
    return data


def write_nii(path: Path, data: np.ndarray, **header: float) -> Path:
    img: Any = nib.Nifti1Image(data, np.eye(4))  # type: ignore[no-untyped-call]
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, str(path))
    return path


def write_nrrd(path: Path, data: np.ndarray, encoding: str = "gzip", **fields: Any) -> Path:
    header: dict[str, Any] = {"encoding": encoding, **fields}
    nrrd.write(str(path), data, header)
    return path


def slicer_fields(segments: list[tuple[str, int, int]], layered: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if layered:
        fields["kinds"] = ["list", "domain", "domain", "domain"]
    for n, (name, label, layer) in enumerate(segments):
        fields[f"Segment{n}_ID"] = f"Segment_{n + 1}"
        fields[f"Segment{n}_Name"] = name
        fields[f"Segment{n}_LabelValue"] = str(label)
        fields[f"Segment{n}_Layer"] = str(layer)
    return fields


def cut(path: Path, keep: int) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    return path


def categories(path: Path, labels: dict[int, str] | None = None) -> list[str]:
    report = analyse(path, "segmentation")
    return [p.category for p in label_problems(str(path), report, labels or {})]


# --------------------------------------------------------------------------- good files


def test_good_integer_segmentation(tmp_path: Path) -> None:
    path = write_nii(tmp_path / "seg.nii.gz", seg_array(np.uint8, (0, 1, 2)))
    report = analyse(path, "segmentation")
    assert report.error is None
    assert report.dtype == "uint8"
    assert report.integer_valued
    assert report.values == (0, 1, 2)
    assert report.shape == (8, 7, 6)
    assert label_problems(str(path), report, LABELS) == []


def test_negative_and_wide_integer_values(tmp_path: Path) -> None:
    data = seg_array(np.int32, (-5, 0, 3, 200_000))
    report = analyse(write_nii(tmp_path / "seg.nii.gz", data), "segmentation")
    assert report.values == (-5, 0, 3, 200_000)


def test_int16_nrrd_big_endian(tmp_path: Path) -> None:
    data = seg_array(np.dtype(">i2"), (-3, 0, 1000))
    path = write_nrrd(tmp_path / "seg.nrrd", data, encoding="raw", endian="big")
    assert path.read_bytes().count(b"endian: big") == 1
    report = analyse(path, "segmentation")
    assert report.error is None
    assert report.values == (-3, 0, 1000)


def test_float_segmentation_with_integer_values_is_fine(tmp_path: Path) -> None:
    path = write_nii(tmp_path / "seg.nii.gz", seg_array(np.float32, (0, 1, 2)))
    report = analyse(path, "segmentation")
    assert report.dtype == "float32"
    assert report.integer_valued
    assert report.values == (0, 1, 2)
    assert label_problems(str(path), report, LABELS) == []


def test_float_segmentation_with_fractions(tmp_path: Path) -> None:
    path = write_nii(tmp_path / "seg.nii.gz", seg_array(np.float32, (0, 1, 0.5)))
    report = analyse(path, "segmentation")
    assert not report.integer_valued
    assert report.non_integer_example == 0.5
    [problem] = label_problems(str(path), report, LABELS)
    assert problem.category == "non_integer_labels"
    assert "0.5" in problem.message
    assert problem.details["example"] == 0.5


def test_nan_and_inf_are_not_integers(tmp_path: Path) -> None:
    for name, bad in (("nan.nii.gz", math.nan), ("inf.nii.gz", math.inf)):
        path = write_nii(tmp_path / name, seg_array(np.float32, (0, 1, bad)))
        report = analyse(path, "segmentation")
        assert report.error is None
        assert not report.integer_valued, name
        assert report.non_integer_example is not None
        assert [p.category for p in label_problems(str(path), report, {})] == ["non_integer_labels"]


def test_scaled_nifti_values_are_scaled(tmp_path: Path) -> None:
    raw = bytearray(write_nii(tmp_path / "seg.nii", seg_array(np.uint8, (0, 1, 2))).read_bytes())
    raw[112:120] = np.array([0.5, 0.0], "<f4").tobytes()  # scl_slope, scl_inter
    path = tmp_path / "scaled.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    img: Any = nib.load(str(path))
    assert img.dataobj.slope == 0.5
    report = analyse(path, "segmentation")
    assert not report.integer_valued
    assert report.non_integer_example == 0.5


def test_values_outside_declared_set(tmp_path: Path) -> None:
    path = write_nii(tmp_path / "seg.nii.gz", seg_array(np.uint8, (0, 1, 3, 7)))
    report = analyse(path, "segmentation")
    [problem] = label_problems(str(path), report, LABELS)
    assert problem.category == "unknown_label"
    assert problem.message == (
        f"{problem.files[0]}: values 3, 7 not in label set {{0: background, 1: vertebra, 2: disc}}"
    )
    assert problem.details["unexpected"] == [3, 7]
    assert problem.files == (str(path),)


def test_no_label_set_means_no_unknown_label(tmp_path: Path) -> None:
    path = write_nii(tmp_path / "seg.nii.gz", seg_array(np.uint8, (0, 1, 3, 7)))
    assert categories(path, {}) == []


def test_only_background(tmp_path: Path) -> None:
    path = write_nii(tmp_path / "seg.nii.gz", np.zeros((4, 4, 4), np.uint8))
    report = analyse(path, "segmentation")
    assert report.values == (0,)
    [problem] = label_problems(str(path), report, LABELS)
    assert problem.category == "only_background"
    assert problem.severity == "warning"


def test_distinct_values_are_capped(tmp_path: Path) -> None:
    data = np.arange(2 * MAX_VALUES, dtype=np.int32).reshape(20, 10, -1)
    report = analyse(write_nii(tmp_path / "seg.nii.gz", data), "segmentation")
    assert report.values_capped
    assert report.values == tuple(range(MAX_VALUES))


def test_value_counting_matches_numpy_unique(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    for i, (dtype, lo, hi) in enumerate(
        [(np.uint8, 0, 256), (np.int16, -300, 300), (np.int32, -(10**6), 10**6)]
    ):
        data = rng.integers(lo, hi, size=(16, 16, 8)).astype(dtype)
        report = analyse(write_nii(tmp_path / f"r{i}.nii.gz", data), "segmentation")
        expected = tuple(int(v) for v in np.unique(data)[:MAX_VALUES])
        assert report.values == expected


def test_volume_role_reports_no_label_problems(tmp_path: Path) -> None:
    data = np.linspace(0, 1, 8 * 7 * 6, dtype=np.float32).reshape(8, 7, 6)
    path = write_nii(tmp_path / "vol.nii.gz", data)
    report = analyse(path, "volume")
    assert report.error is None
    assert report.role == "volume"
    assert report.values == ()
    assert label_problems(str(path), report, LABELS) == []


def test_unknown_role_is_a_programming_error(tmp_path: Path) -> None:
    path = write_nii(tmp_path / "vol.nii.gz", seg_array())
    with pytest.raises(ValueError):
        analyse(path, "mask")


def test_large_gzip_stream_decodes(tmp_path: Path) -> None:
    data = np.zeros((256, 256, 300), np.uint8)  # 19.7 MB inflated from a few KB
    data[100, 100, 299] = 2
    report = analyse(write_nii(tmp_path / "big.nii.gz", data), "segmentation")
    assert report.error is None
    assert report.values == (0, 2)


def test_uncompressed_nii(tmp_path: Path) -> None:
    path = write_nii(tmp_path / "seg.nii", seg_array(np.int16, (0, 1)))
    report = analyse(path, "segmentation")
    assert report.error is None
    assert report.values == (0, 1)


def test_multi_member_gzip_and_zero_padding_are_valid(tmp_path: Path) -> None:
    raw = write_nii(tmp_path / "seg.nii", seg_array(np.uint8, (0, 1))).read_bytes()
    half = len(raw) // 2
    path = tmp_path / "multi.nii.gz"
    path.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]) + b"\0" * 16)
    report = analyse(path, "segmentation")
    assert report.error is None
    assert report.values == (0, 1)


# --------------------------------------------------------------------------- Slicer


def test_slicer_3d_labelmap_matching(tmp_path: Path) -> None:
    fields = slicer_fields([("vertebra", 1, 0), ("disc", 2, 0)], layered=False)
    path = write_nrrd(tmp_path / "a.seg.nrrd", seg_array(np.uint8, (0, 1, 2)), **fields)
    report = analyse(path, "segmentation")
    assert report.segments == (("vertebra", 1), ("disc", 2))
    assert report.segment_layers == (0, 0)
    assert label_problems(str(path), report, LABELS) == []


def test_slicer_3d_labelmap_mismatching(tmp_path: Path) -> None:
    fields = slicer_fields([("vertebra", 1, 0), ("disc", 2, 0)], layered=False)
    path = write_nrrd(tmp_path / "a.seg.nrrd", seg_array(np.uint8, (0, 1, 3)), **fields)
    report = analyse(path, "segmentation")
    [problem] = label_problems(str(path), report, {})
    assert problem.category == "segment_labels"
    assert "segment 'disc' declares label 2 but no voxel holds it" in problem.message
    assert "voxel value 3 is declared by no segment" in problem.message
    assert problem.details["missing"] == [{"segment": "disc", "label": 2, "layer": 0}]
    assert problem.details["undeclared"] == [{"value": 3, "layer": 0}]


def layered_array(layer0: tuple[int, ...], layer1: tuple[int, ...]) -> np.ndarray:
    data = np.zeros((2, 8, 7, 6), np.uint8)  # (layers, X, Y, Z)
    for i, v in enumerate(layer0):
        data[0, i] = v
    for i, v in enumerate(layer1):
        data[1, -1 - i] = v
    return data


def test_slicer_4d_layered_matching(tmp_path: Path) -> None:
    # overlapping segments: both carry label 1, each in its own layer
    fields = slicer_fields([("vertebra", 1, 0), ("disc", 2, 0), ("canal", 1, 1)], layered=True)
    path = write_nrrd(tmp_path / "a.seg.nrrd", layered_array((1, 2), (1,)), **fields)
    report = analyse(path, "segmentation")
    assert report.error is None
    assert report.shape == (2, 8, 7, 6)
    assert report.layer_values == ((0, 1, 2), (0, 1))
    assert report.values == (0, 1, 2)
    assert label_problems(str(path), report, LABELS) == []


def test_slicer_4d_layered_mismatch_is_per_layer(tmp_path: Path) -> None:
    # label 2 exists in layer 0, but the segment declaring it lives in layer 1
    fields = slicer_fields([("vertebra", 1, 0), ("disc", 2, 1)], layered=True)
    path = write_nrrd(tmp_path / "a.seg.nrrd", layered_array((1, 2), (1,)), **fields)
    report = analyse(path, "segmentation")
    [problem] = label_problems(str(path), report, {})
    assert problem.category == "segment_labels"
    assert problem.details["missing"] == [{"segment": "disc", "label": 2, "layer": 1}]
    assert problem.details["undeclared"] == [
        {"value": 2, "layer": 0},
        {"value": 1, "layer": 1},
    ]
    assert "in layer 1" in problem.message


# --------------------------------------------------------------------------- damage


@pytest.fixture
def good_gz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)  # noisy data: the compressed stream is long
    return write_nii(tmp_path / "seg.nii.gz", rng.integers(0, 3, (32, 32, 16)).astype(np.uint8))


def test_truncated_nii_gz_half(good_gz: Path) -> None:
    cut(good_gz, good_gz.stat().st_size // 2)
    report = analyse(good_gz, "segmentation")
    assert report.error is not None
    assert report.error.startswith("truncated gzip stream")
    assert report.error_kind == "corrupt"


def test_truncated_nii_gz_last_bytes_with_readable_header(good_gz: Path) -> None:
    size = good_gz.stat().st_size
    cut(good_gz, size - 4)  # drops part of the gzip trailer only
    img: Any = nib.load(str(good_gz))
    assert np.asanyarray(img.dataobj).shape == (32, 32, 16)  # nibabel alone does not notice
    report = analyse(good_gz, "segmentation")
    assert report.error == f"truncated gzip stream (compressed data ends after {size - 4} bytes)"


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (b"GARBAGE!", "8 bytes of trailing garbage after the gzip stream"),
        (b"x", "1 byte of trailing garbage after the gzip stream"),
        (b"\0\0\0junk", "7 bytes of trailing garbage after the gzip stream"),
    ],
)
def test_nii_gz_with_garbage_appended(good_gz: Path, tail: bytes, expected: str) -> None:
    good_gz.write_bytes(good_gz.read_bytes() + tail)
    report = analyse(good_gz, "segmentation")
    assert report.error == expected


def test_nii_gz_with_truncated_second_member(good_gz: Path) -> None:
    good_gz.write_bytes(good_gz.read_bytes() + gzip.compress(b"more data")[:-6])
    report = analyse(good_gz, "segmentation")
    assert report.error is not None
    assert report.error.startswith("truncated gzip stream")


def test_nii_gz_with_bad_crc(good_gz: Path) -> None:
    data = bytearray(good_gz.read_bytes())
    data[-8] ^= 0xFF  # first byte of the CRC32 in the trailer
    good_gz.write_bytes(bytes(data))
    report = analyse(good_gz, "segmentation")
    assert report.error is not None
    assert "CRC" in report.error


def test_nii_gz_whose_data_is_short(tmp_path: Path) -> None:
    raw = write_nii(tmp_path / "seg.nii", seg_array(np.uint8, (0, 1))).read_bytes()
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(raw[:-100]))  # a complete stream, too little data
    report = analyse(path, "segmentation")
    assert report.error == "data holds 236 bytes, header declares 336 (8x7x6 uint8)"


def test_garbage_named_nii_gz(tmp_path: Path) -> None:
    path = tmp_path / "seg.nii.gz"
    path.write_bytes(b"this is not an image at all\n" * 50)
    report = analyse(path, "segmentation")
    assert report.error == "not a gzip stream (bad magic)"
    assert report.error_kind == "not_an_image"


def test_gzip_of_garbage_named_nii_gz(tmp_path: Path) -> None:
    path = tmp_path / "seg.nii.gz"
    path.write_bytes(gzip.compress(b"\x07" * 2000))
    report = analyse(path, "segmentation")
    assert report.error == "not a NIfTI file (bad header size or magic)"
    assert report.error_kind == "not_an_image"


def test_garbage_named_nrrd(tmp_path: Path) -> None:
    path = tmp_path / "seg.nrrd"
    path.write_bytes(bytes(range(256)) * 4)
    report = analyse(path, "segmentation")
    assert report.error == "not a NRRD file (bad magic)"
    assert report.error_kind == "not_an_image"


@pytest.mark.parametrize("name", ["empty.nii.gz", "empty.nii", "empty.seg.nrrd"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    report = analyse(path, "segmentation")
    assert report.error == "empty file (0 bytes)"


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    report = analyse(tmp_path / "nope.nii.gz", "segmentation")
    assert report.error_kind == "unreadable"
    assert report.error is not None and report.error.startswith("cannot read")


@pytest.mark.parametrize("encoding", ["raw", "gzip"])
def test_nrrd_header_sizes_exceed_data(tmp_path: Path, encoding: str) -> None:
    path = write_nrrd(tmp_path / "seg.nrrd", seg_array(np.uint8, (0, 1)), encoding=encoding)
    text = path.read_bytes()
    assert b"sizes: 8 7 6\n" in text
    path.write_bytes(text.replace(b"sizes: 8 7 6\n", b"sizes: 8 7 9\n"))
    report = analyse(path, "segmentation")
    assert report.error == "data holds 336 bytes, header declares 504 (8x7x9 uint8)"


def test_raw_nrrd_truncated(tmp_path: Path) -> None:
    path = write_nrrd(tmp_path / "seg.nrrd", seg_array(np.int16, (0, 1)), encoding="raw")
    cut(path, path.stat().st_size - 10)
    report = analyse(path, "segmentation")
    assert report.error == "data holds 662 bytes, header declares 672 (8x7x6 int16)"


def test_gzip_nrrd_truncated(tmp_path: Path) -> None:
    path = write_nrrd(tmp_path / "seg.nrrd", seg_array(np.uint8, (0, 1)), encoding="gzip")
    cut(path, path.stat().st_size - 3)
    report = analyse(path, "segmentation")
    assert report.error is not None
    assert report.error.startswith("truncated gzip stream")


def test_ascii_nrrd_uses_pynrrd_and_checks_size(tmp_path: Path) -> None:
    path = write_nrrd(tmp_path / "seg.nrrd", seg_array(np.uint8, (0, 1, 2)), encoding="ascii")
    assert analyse(path, "segmentation").values == (0, 1, 2)
    text = path.read_bytes()
    path.write_bytes(text.replace(b"sizes: 8 7 6\n", b"sizes: 8 7 7\n"))
    report = analyse(path, "segmentation")
    assert report.error is not None
    assert report.error_kind == "corrupt"


# --------------------------------------------------------------------------- one problem per fault


def _write_fault(tmp_path: Path, fault: str) -> Path:
    if fault == "corrupt":
        path = write_nii(tmp_path / "f.nii.gz", seg_array())
        return cut(path, path.stat().st_size - 5)
    if fault == "not_an_image":
        path = tmp_path / "f.nrrd"
        path.write_bytes(b"\x00garbage" * 10)
        return path
    if fault == "non_integer_labels":
        return write_nii(tmp_path / "f.nii.gz", seg_array(np.float64, (0, 1, 2.25)))
    if fault == "unknown_label":
        return write_nii(tmp_path / "f.nii.gz", seg_array(np.uint8, (0, 1, 9)))
    if fault == "only_background":
        return write_nii(tmp_path / "f.nii.gz", np.zeros((5, 5, 5), np.int16))
    if fault == "segment_labels":
        fields = slicer_fields([("vertebra", 1, 0), ("disc", 2, 0)], layered=False)
        return write_nrrd(tmp_path / "f.seg.nrrd", seg_array(np.uint8, (0, 1)), **fields)
    raise AssertionError(fault)


FAULTS = [
    "corrupt",
    "not_an_image",
    "non_integer_labels",
    "unknown_label",
    "only_background",
    "segment_labels",
]


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_yields_exactly_one_problem(tmp_path: Path, fault: str) -> None:
    good = write_nii(tmp_path / "good.nii.gz", seg_array(np.uint8, (0, 1, 2)))
    bad = _write_fault(tmp_path, fault)
    problems = label_problems(str(bad), analyse(bad, "segmentation"), LABELS)
    assert [(p.category, p.files) for p in problems] == [(fault, (str(bad),))]
    assert problems[0].severity == CATEGORIES[fault][0]
    assert "\n" not in problems[0].message
    json.dumps(problems[0].to_json(), allow_nan=False)
    assert label_problems(str(good), analyse(good, "segmentation"), LABELS) == []


# --------------------------------------------------------------------------- report JSON and cache


def _sample_report() -> ContentReport:
    return ContentReport(
        error=None,
        dtype="uint8",
        integer_valued=True,
        values=(0, 1, 2),
        non_integer_example=None,
        segments=(("vertebra", 1), ("disc", 2)),
        shape=(2, 4, 4, 4),
        segment_layers=(0, 1),
        layer_values=((0, 1), (0, 2)),
    )


def test_report_json_round_trip(tmp_path: Path) -> None:
    reports = [
        _sample_report(),
        analyse(_write_fault(tmp_path, "corrupt"), "segmentation"),
        analyse(_write_fault(tmp_path, "non_integer_labels"), "segmentation"),
    ]
    for report in reports:
        text = json.dumps(report.to_json(), allow_nan=False)
        assert ContentReport.from_json(json.loads(text)) == report


def test_report_json_keeps_infinity_as_strict_json() -> None:
    report = ContentReport(None, "float32", False, (), math.inf, ())
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["non_integer_example"] == "inf"
    assert ContentReport.from_json(data) == report


def test_report_from_json_rejects_malformed() -> None:
    data = _sample_report().to_json()
    data["values"] = ["1"]
    with pytest.raises(TypeError):
        ContentReport.from_json(data)


def test_cache_round_trip_and_role_miss(tmp_path: Path) -> None:
    report = _sample_report()
    with ContentCache(tmp_path / "state" / "content.sqlite") as cache:
        assert cache.get("abc", "segmentation") is None
        cache.put("abc", "segmentation", report)
        assert cache.get("abc", "segmentation") == report
        assert cache.get("abc", "volume") is None
        assert cache.get("abd", "segmentation") is None


def test_cache_persists_across_instances(tmp_path: Path) -> None:
    db = tmp_path / "content.sqlite"
    report = analyse(_write_fault(tmp_path, "corrupt"), "segmentation")
    cache = ContentCache(db)
    cache.put("h1", "segmentation", report)
    cache.close()
    with ContentCache(db) as again:
        assert again.get("h1", "segmentation") == report


def test_cache_ignores_other_analysis_versions_and_bad_rows(tmp_path: Path) -> None:
    db = tmp_path / "content.sqlite"
    with ContentCache(db) as cache:
        cache.put("h1", "segmentation", _sample_report())
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE content SET version = ?", (ANALYSIS_VERSION + 1,))
        con.execute(
            "INSERT INTO content VALUES (?, ?, ?, ?)",
            ("h2", "segmentation", ANALYSIS_VERSION, "{not json"),
        )
    con.close()
    with ContentCache(db) as cache:
        assert cache.get("h1", "segmentation") is None
        assert cache.get("h2", "segmentation") is None


def test_cache_replaces_a_damaged_database(tmp_path: Path) -> None:
    db = tmp_path / "content.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    with ContentCache(db) as cache:
        assert cache.get("h1", "segmentation") is None
        cache.put("h1", "segmentation", _sample_report())
        assert cache.get("h1", "segmentation") == _sample_report()


# --------------------------------------------------------------------------- issue 7.2


ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"


@pytest.mark.parametrize("first", ["A.nii.gz", "B.nii"])
def test_identical_bytes_under_two_names_get_their_own_verdicts(tmp_path: Path, first: str) -> None:
    """The cache key holds the format the name claims: a valid .nii and the same
    bytes misnamed .nii.gz never share a verdict, whichever comes first."""
    blob = ANATOMICAL.read_bytes()
    (tmp_path / "A.nii.gz").write_bytes(blob)
    (tmp_path / "B.nii").write_bytes(blob)
    digest = "f" * 32
    with ContentCache(tmp_path / "state" / "content.db") as cache:
        for name in (first, *({"A.nii.gz", "B.nii"} - {first})):
            if cache.get(digest, "volume", name) is None:
                cache.put(digest, "volume", analyse(tmp_path / name, "volume"), name)
        assert cache.get(digest, "volume", "B.nii") == analyse(tmp_path / "B.nii", "volume")
        misnamed = cache.get(digest, "volume", "A.nii.gz")
    assert analyse(tmp_path / "B.nii", "volume").error is None
    assert misnamed is not None and misnamed.error == "not a gzip stream (bad magic)"


def test_content_key_holds_role_format_and_limit() -> None:
    keys = {
        content_key("volume", "x.nii"),
        content_key("volume", "x.nii.gz"),
        content_key("segmentation", "x.nii"),
        content_key("volume", "x.nii", max_bytes=10),
    }
    assert len(keys) == 4


@pytest.mark.parametrize("name", ["UChar", "unsigned  char", "UINT8_T"])
def test_nrrd_type_names_are_read_alike_in_header_and_content(tmp_path: Path, name: str) -> None:
    from volsegsync.headers import read_geometry

    path = tmp_path / "seg.nrrd"
    header = f"NRRD0004\ntype: {name}\ndimension: 3\nsizes: 2 2 1\nencoding: raw\n\n"
    path.write_bytes(header.encode() + bytes([0, 1, 1, 0]))
    assert read_geometry(path).dtype == "uint8"
    report = analyse(path, "segmentation")
    assert (report.error, report.dtype, report.values) == (None, "uint8", (0, 1))


def test_nifti_pair_magic_is_refused_alike_in_every_pass(tmp_path: Path) -> None:
    from volsegsync.headers import HeaderProblem, read_geometry
    from volsegsync.magic import NIFTI_PAIR_REASON, sniff

    raw = bytearray(write_nii(tmp_path / "x.nii", seg_array()).read_bytes())
    raw[344:348] = b"ni1\0"
    path = tmp_path / "pair.nii"
    path.write_bytes(bytes(raw))
    assert sniff("pair.nii", bytes(raw[:1024])) == NIFTI_PAIR_REASON
    with pytest.raises(HeaderProblem) as err:
        read_geometry(path)
    assert (err.value.category, err.value.reason) == ("not_an_image", NIFTI_PAIR_REASON)
    report = analyse(path, "segmentation")
    assert (report.error_kind, report.error) == ("not_an_image", NIFTI_PAIR_REASON)


def test_bzip2_nrrd_is_decoded_without_pynrrd(tmp_path: Path) -> None:
    path = write_nrrd(tmp_path / "seg.nrrd", seg_array(np.uint8, (0, 1, 2)), encoding="bzip2")
    assert analyse(path, "segmentation").values == (0, 1, 2)
    cut(path, path.stat().st_size - 20)
    report = analyse(path, "segmentation")
    assert report.error_kind == "corrupt" and report.error is not None


def test_streamed_values_match_a_whole_array_scan(tmp_path: Path) -> None:
    """Values spanning many chunks: the streamed summary equals numpy's."""
    rng = np.random.default_rng(3)
    data = rng.integers(0, 1200, (256, 256, 40)).astype(np.uint16)  # ~5 MiB, > one chunk
    data[0, 0, 0] = 5000
    path = write_nrrd(tmp_path / "seg.nrrd", data, encoding="gzip")
    report = analyse(path, "segmentation")
    expected = np.unique(data)
    assert report.values == tuple(int(v) for v in expected[:MAX_VALUES])
    assert report.values_capped is (expected.size > MAX_VALUES)


@pytest.mark.parametrize("order", ["gz-first", "nii-first"])
def test_verify_gives_identical_copies_their_own_verdicts(tmp_path: Path, order: str) -> None:
    """Issue 7.2 end to end: nibabel's anatomical.nii copied to a .nii.gz name and
    a .nii name in one dataset; only the misnamed copy is reported, in either order
    (the verify run deduplicates decodes by the full cache key)."""
    from conftest import init_with_git_binary, invoke

    root = init_with_git_binary(tmp_path / "ds")
    blob = ANATOMICAL.read_bytes()
    names = ["C01-A-D01012000.nii.gz", "C02-B-D01012000.nii"]
    for name in names if order == "gz-first" else names[::-1]:
        (root / name).write_bytes(blob)
    result = invoke(["-C", str(root), "verify", "--format", "json"])
    doc = json.loads(result.stdout)
    content = {
        (p["category"], p["files"][0])
        for p in doc["problems"]
        if p["category"] in ("not_an_image", "corrupt")
    }
    assert content == {("not_an_image", "C01-A-D01012000.nii.gz")}, doc["problems"]
