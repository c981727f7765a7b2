"""Dataset-level checks of verify, on real files: the one odd case among 30 is found,
a clean dataset of 30 gives nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nrrd
import numpy as np
import pytest
from conftest import LPS, invoke, make_affine, write_nii

from volsegsync.dataset_checks import segment_fields

SHAPE = (8, 8, 6)
OUTLIERS = ("outlier_orientation", "outlier_spacing", "outlier_shape")


def _name(i: int) -> str:
    return f"C{i:02d}-Spine_V001-D01012000"


def _seg(
    path: Path,
    affine: np.ndarray,
    labels: dict[int, str] | None = None,
    shape: tuple[int, ...] = SHAPE,
    tiny: bool = False,
) -> None:
    data = np.zeros(shape, dtype=np.uint8)
    data[2:6, 2:6, 1:5] = 1
    data[1, 1, 1] = 2 if tiny else 0
    if not tiny:
        data[1:7, 1:7, 5:6] = 2
    header: dict[str, Any] = {
        "space": "left-posterior-superior",
        "space directions": (LPS @ affine[:3, :3]).T,
        "space origin": LPS @ affine[:3, 3],
        "kinds": ["domain"] * 3,
        "encoding": "gzip",
    }
    for n, (value, name) in enumerate(sorted((labels or {1: "vertebra", 2: "disc"}).items())):
        header[f"Segment{n}_Name"] = name
        header[f"Segment{n}_LabelValue"] = str(value)
        header[f"Segment{n}_Layer"] = "0"
    nrrd.write(str(path), data, header)


def _dataset(root: Path, odd: dict[int, dict[str, Any]]) -> Path:
    for i in range(30):
        kind = odd.get(i, {})
        affine = kind.get("affine", make_affine((1.0, 1.0, 2.0)))
        shape = kind.get("shape", SHAPE)
        write_nii(root / f"{_name(i)}.nii.gz", affine=affine, shape=shape)
        _seg(
            root / f"{_name(i)}-v1.seg.nrrd",
            affine,
            kind.get("labels"),
            shape,
            kind.get("tiny", False),
        )
    return root


def _verify(root: Path, *args: str) -> list[dict[str, Any]]:
    result = invoke(["-C", str(root), "verify", "--format", "json", *args])
    assert result.exit_code in (0, 1), result.output
    return list(json.loads(result.output)["problems"])


@pytest.mark.parametrize("fast", [True, False])
def test_a_clean_dataset_of_30_gives_nothing(ds_root: Path, fast: bool) -> None:
    _dataset(ds_root, {})
    found = _verify(ds_root, *(["--fast"] if fast else []))
    assert found == [], found


def test_the_one_odd_case_among_30_is_found(ds_root: Path) -> None:
    lps = make_affine((1.0, 1.0, 2.0))
    lps[:3, :3] = LPS @ lps[:3, :3]
    coarse = make_affine((4.0, 4.0, 6.0))
    _dataset(
        ds_root,
        {
            3: {"affine": lps},
            7: {"affine": coarse},
            11: {"shape": (40, 40, 30)},
            13: {"labels": {1: "Liver", 2: "disc"}},
            17: {"labels": {1: "vertebra", 2: "disc", 5: "tumour"}},
            21: {"tiny": True},
        },
    )
    (ds_root / ".volsegsync" / "config.toml").open("a").write(
        '\n[verify.labels]\n0 = "background"\n1 = "vertebra"\n2 = "disc"\n'
    )
    found = _verify(ds_root)
    by_cat: dict[str, list[str]] = {}
    for p in found:
        by_cat.setdefault(p["category"], []).extend(p["files"])
    assert by_cat["outlier_orientation"] == [f"{_name(3)}.nii.gz"]
    assert by_cat["outlier_spacing"] == [f"{_name(7)}.nii.gz"]
    assert by_cat["outlier_shape"] == [f"{_name(11)}.nii.gz"]
    assert by_cat["label_name_conflict"] == [f"{_name(13)}-v1.seg.nrrd"]
    assert by_cat["undeclared_label"] == [f"{_name(17)}-v1.seg.nrrd"]
    assert by_cat["tiny_label"] == [f"{_name(21)}-v1.seg.nrrd"]
    new = {*OUTLIERS, "label_name_conflict", "undeclared_label", "tiny_label"}
    assert all(p["severity"] == "warning" for p in found if p["category"] in new)
    assert {p["category"] for p in found} - new == {"segment_labels"}  # tumour: no voxel
    fast = {p["category"] for p in _verify(ds_root, "--fast")}
    assert "tiny_label" not in fast and "outlier_orientation" in fast
    again = _verify(ds_root)  # label counts come from their cache now
    assert sorted(p["message"] for p in again) == sorted(p["message"] for p in found)
    assert (ds_root / ".volsegsync" / "state" / "label-counts.marshal").is_file()


def test_names_disagreeing_without_a_declared_set(ds_root: Path) -> None:
    _dataset(ds_root, {5: {"labels": {1: "spleen", 2: "disc"}}})
    found = [p for p in _verify(ds_root, "--fast") if p["category"] == "label_name_conflict"]
    assert [p["files"] for p in found] == [[f"{_name(5)}-v1.seg.nrrd"]]
    assert "'spleen'" in found[0]["message"] and "29 other files" in found[0]["message"]


def test_segment_fields() -> None:
    fields = {
        "Segment1_Name": "b",
        "Segment0_Name": "a",
        "Segment0_LabelValue": "3",
        "Segment0_Color": "1 0.5 0",
        "Segment1_LabelValue": "x",
        "Segment2_Color": "0 0 0",
    }
    assert [(s.number, s.name, s.value, s.color) for s in segment_fields(fields)] == [
        (0, "a", 3, (255, 128, 0)),
        (1, "b", -1, None),
    ]


def test_similarity_in_plain_python_equals_numpy() -> None:
    """Few distinct spacings/shapes are compared in plain Python (no numpy import),
    many with numpy: both count the same neighbours, factor-2 ties included."""
    import math
    import random

    from volsegsync.dataset_checks import SIMILAR_FACTOR, _within_factor

    rng = random.Random(1)
    steps = [0.0, 0.1, 0.4, 0.5, 0.8, 1.0, 1.6, 2.0, 3.0, 4.0, 6.0]
    for _ in range(200):
        values = {
            tuple(float(f"{rng.choice(steps) * rng.choice([1, 2, 0.5]):.2g}") for _ in range(3))
            for _ in range(rng.randint(1, 64))
        }
        distinct = sorted(values)
        counts = [rng.randint(1, 9) for _ in distinct]
        logs = np.log(np.maximum(np.array(distinct, dtype=np.float64), 1e-300))
        limit = math.log(SIMILAR_FACTOR) + 1e-9
        near = np.all(np.abs(logs[:, None, :] - logs[None, :, :]) <= limit, axis=2)
        assert _within_factor(distinct, counts) == [int(v) for v in near @ np.array(counts)]
