"""show / compare / report with real files: pixels land on the right voxels, numbers are
the hand-computed ones, hostile files end in one line."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pytest
from conftest import VOLSEGSYNC, assert_clean_stderr, invoke, make_affine

pytest.importorskip("PIL", reason="pictures need Pillow (the 'view' extra)")
from PIL import Image as PILImage

from volsegsync.view.metrics import dice, hausdorff

NAME = "C01-LowerBack_FSE_T2w_V001-D22061998"
SHAPE = (20, 16, 10)
GREY = 100.0  # the volume's constant intensity, drawn at the middle of window 0,200


def _volume(root: Path, name: str = NAME, affine: np.ndarray | None = None) -> str:
    rel = f"volumes/{name}.nii.gz"
    (root / "volumes").mkdir(parents=True, exist_ok=True)
    data = np.full(SHAPE, GREY, dtype=np.int16)
    nib.save(
        nib.Nifti1Image(data, make_affine((1, 1, 1)) if affine is None else affine), str(root / rel)
    )  # type: ignore[no-untyped-call]
    return rel


def _lps_seg(
    root: Path, version: int, ras_voxels: dict[int, list[tuple[int, int, int]]], shift: float = 0.0
) -> str:
    """A 3D Slicer .seg.nrrd stored in LPS voxel order: its voxel (i, j, k) lies at RAS
    voxel (19 - i + shift, 15 - j, k) of the volume."""
    rel = f"segmentations/{NAME}-v{version}.seg.nrrd"
    (root / "segmentations").mkdir(parents=True, exist_ok=True)
    data = np.zeros(SHAPE, dtype=np.uint8)
    for value, voxels in ras_voxels.items():
        for x, y, z in voxels:
            data[19 - x, 15 - y, z] = value
    header: dict[str, Any] = {
        "space": "left-posterior-superior",
        "space directions": np.eye(3),
        "space origin": np.array([-19.0 - shift, -15.0, 0.0]),
        "kinds": ["domain"] * 3,
        "encoding": "gzip",
        "Segment0_ID": "Segment_1",
        "Segment0_Name": "liver",
        "Segment0_LabelValue": "1",
        "Segment0_Layer": "0",
        "Segment0_Color": "1 0 0",
        "Segment1_ID": "Segment_2",
        "Segment1_Name": "spleen",
        "Segment1_LabelValue": "2",
        "Segment1_Layer": "0",
        "Segment1_Color": "0 0 1",
    }
    nrrd.write(str(root / rel), data, header)
    return rel


@pytest.fixture
def pair(ds_root: Path) -> Path:
    _volume(ds_root)
    _lps_seg(ds_root, 1, {1: [(3, 4, 5)], 2: [(x, y, 5) for x in (10, 11, 12) for y in (8, 9, 10)]})
    return ds_root


def _show(root: Path, *args: str) -> tuple[dict[str, Any], Any]:
    out = root / "shot.png"
    result = invoke(
        [
            "-C",
            str(root),
            "show",
            NAME,
            "-o",
            str(out),
            "--window",
            "0,200",
            "--format",
            "json",
            *args,
        ]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    return doc, PILImage.open(out).convert("RGB")


def _axial(picture: Any, panels: list[Any], x: int, y: int) -> tuple[int, int, int]:
    """The pixel at the centre of RAS voxel column (x, y) in the axial panel: radiological
    display, column 19 - x (the patient's right on the left), row 15 - y (anterior up)."""
    x0, y0, w, h = next(p for p in panels if p.plane == "axial").box
    colour: tuple[int, int, int] = picture.getpixel(
        (int(x0 + (19 - x + 0.5) * w / 20), int(y0 + (15 - y + 0.5) * h / 16))
    )
    return colour


def _panels(root: Path, spec: str, slices: str) -> tuple[Any, list[Any]]:
    """The figure itself, for the panels' boxes."""
    from volsegsync.dataset import Dataset
    from volsegsync.ops.show import run_show

    result = run_show(Dataset.open(root), spec, slices, "0,200")
    return result.figure.picture.convert("RGB"), result.figure.panels


def _fill(color: tuple[int, int, int]) -> tuple[int, int, int]:
    grey = round(GREY / 200 * 255)
    return tuple(round(grey * 0.55 + c * 0.45) for c in color)  # type: ignore[return-value]


def _close(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(x - y) <= 2 for x, y in zip(a, b, strict=True))


def test_lps_seg_nrrd_lands_on_the_right_ras_voxels(pair: Path) -> None:
    doc, _ = _show(pair, "--slice", "3,4,5")
    assert doc["alignment"]["kind"] == "reoriented"  # LPS voxel order on an RAS grid
    assert doc["slices"] == {"axial": 5, "coronal": 4, "sagittal": 3}
    assert [(r["value"], r["name"], r["voxels"]) for r in doc["labels"]] == [
        (1, "liver", 1),
        (2, "spleen", 9),
    ]
    picture, panels = _panels(pair, NAME, "3,4,5")
    axial = next(p for p in panels if p.plane == "axial")
    # radiological display: column = 19 - x (patient's right on the left), row = 15 - y
    assert axial.voxels == (16, 20)
    grey = round(GREY / 200 * 255)

    # the liver in red (its Slicer colour), the spleen's centre in blue
    assert _close(_axial(picture, panels, 3, 4), _fill((255, 0, 0)))
    assert _close(_axial(picture, panels, 11, 9), _fill((0, 0, 255)))
    # next to the liver voxel, and its mirror image: no label
    assert _close(_axial(picture, panels, 4, 4), (grey, grey, grey))
    assert _close(
        _axial(picture, panels, 16, 11), (grey, grey, grey)
    )  # the mirror image of (3, 4): no label
    coronal = next(p for p in panels if p.plane == "coronal")
    x0, y0, w, h = coronal.box  # column = 19 - x, row = 9 - z (superior at the top)
    assert _close(
        picture.getpixel((int(x0 + 16.5 * w / 20), int(y0 + 4.5 * h / 10))), _fill((255, 0, 0))
    )
    sagittal = next(p for p in panels if p.plane == "sagittal")
    x0, y0, w, h = sagittal.box  # column = 15 - y (anterior on the left), row = 9 - z
    assert sagittal.voxels == (10, 16)
    assert _close(
        picture.getpixel((int(x0 + 11.5 * w / 16), int(y0 + 4.5 * h / 10))), _fill((255, 0, 0))
    )
    assert _close(picture.getpixel((int(x0 + 4.5 * w / 16), int(y0 + 4.5 * h / 10))), (grey,) * 3)


def test_a_one_voxel_shift_is_visible(pair: Path) -> None:
    _lps_seg(pair, 2, {1: [(3, 4, 5)]}, shift=1.0)  # the origin one voxel further right
    doc, _ = _show(pair, "--slice", "3,4,5")
    assert doc["pair"]["version"] == 2
    assert doc["alignment"]["kind"] == "reoriented"
    picture, panels = _panels(pair, NAME, "4,4,5")
    grey = round(GREY / 200 * 255)
    assert _close(_axial(picture, panels, 4, 4), _fill((255, 0, 0)))
    assert _close(_axial(picture, panels, 3, 4), (grey, grey, grey))


def test_compare_numbers_and_picture(pair: Path) -> None:
    _lps_seg(pair, 2, {1: [(3, 4, 5)], 2: [(x, y, 5) for x in (10, 11) for y in (8, 9, 10)]})
    out = pair / "change.png"
    result = invoke(
        ["-C", str(pair), "compare", f"{NAME}@v1", f"{NAME}@v2", "-o", str(out), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    rows = {r["value"]: r for r in doc["labels"]}
    assert rows[1]["dice"] == 1.0 and rows[1]["hausdorff_mm"] == 0.0
    assert rows[2]["voxels_a"] == 9 and rows[2]["voxels_b"] == 6
    assert rows[2]["dice"] == pytest.approx(2 * 6 / 15)
    assert rows[2]["hausdorff_mm"] == pytest.approx(1.0)  # the x=12 column is 1 mm from x=11
    assert rows[2]["ml_a"] == pytest.approx(0.009)
    assert doc["changed_voxels"] == 3 and doc["added"] == [] and doc["removed"] == []
    picture = PILImage.open(out).convert("RGB")
    assert (235, 40, 40) in {c for _, c in picture.getcolors(1 << 16) or []} or any(
        r > 150 and g < 100 for _, (r, g, b) in picture.getcolors(1 << 16) or []
    )


@pytest.mark.parametrize("brute", [False, True])
def test_dice_and_hausdorff_hand_computed(brute: bool) -> None:
    a = np.zeros((10, 10, 10), dtype=bool)
    b = np.zeros_like(a)
    a[2:6, 2:6, 2:6] = True
    b[3:7, 2:6, 2:6] = True  # one voxel further along x
    affine = np.diag([2.0, 1.0, 1.0, 1.0])  # 2 mm along x
    assert dice(a, b) == 0.75  # 2 * 48 / (64 + 64)
    hd = hausdorff(a, b, affine, brute=brute)
    assert hd == pytest.approx(2.0)
    c = np.zeros_like(a)
    d = np.zeros_like(a)
    c[0, 0, 0] = d[3, 4, 0] = True
    one = np.eye(4)
    hd = hausdorff(c, d, one, brute=brute)
    assert hd == pytest.approx(5.0)
    assert dice(c, d) == 0.0 and dice(np.zeros_like(a), np.zeros_like(a)) is None


def test_example_dataset_pictures(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    assert invoke(["example", str(demo)]).exit_code == 0
    for name, kind in (
        ("C01-LowerBack_FSE_T2w_V001-D22061998", "same grid"),
        ("C02-LowerBack_FSE_T2w_V002-D05031987", "same grid"),
        ("C03-Knee_PD_V001-D17112003", "resampled"),
    ):
        out = tmp_path / f"{name}.png"
        result = invoke(["-C", str(demo), "show", name, "-o", str(out), "--format", "json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.output)
        assert doc["alignment"]["kind"] == kind
        assert [r["name"] for r in doc["labels"]] == ["vertebra", "disc"]
        assert PILImage.open(out).size[0] > 400


def test_report_thumbnails_are_cached_by_content(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    assert invoke(["example", str(demo)]).exit_code == 0
    first = invoke(["-C", str(demo), "report", "-o", str(tmp_path / "r"), "--format", "json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["thumbnails"] == {"drawn": 4, "cached": 0, "failed": 0}
    seg = demo / "segmentations" / "C01-LowerBack_FSE_T2w_V001-D22061998-v2.nrrd"
    data, header = nrrd.read(str(seg))
    data[data == 2] = 1
    nrrd.write(str(seg), data, header)
    again = invoke(["-C", str(demo), "report", "-o", str(tmp_path / "r"), "--format", "json"])
    assert json.loads(again.output)["thumbnails"] == {"drawn": 1, "cached": 3, "failed": 0}
    text = (tmp_path / "r" / "index.html").read_text()
    assert text.count("<img class='thumb'") == 4 and "data-categories='geometry'" in text
    broken = demo / "segmentations" / "C02-LowerBack_FSE_T2w_V002-D05031987-v1.seg.nrrd"
    broken.write_bytes(broken.read_bytes()[:-40])  # data cut short: no picture, one line
    third = invoke(["-C", str(demo), "report", "-o", str(tmp_path / "r"), "--format", "json"])
    assert third.exit_code == 0, third.output
    assert json.loads(third.output)["thumbnails"] == {"drawn": 0, "cached": 3, "failed": 1}
    text = (tmp_path / "r" / "index.html").read_text()
    assert (
        text.count("<img class='thumb'") == 3 and "C02-LowerBack_FSE_T2w_V002-D05031987-v1" in text
    )


# --------------------------------------------------------------------------- hostile input


def _attack(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """The real console script under a memory limit and a timeout."""
    command = " ".join(f"'{a}'" for a in [VOLSEGSYNC, *args])
    return subprocess.run(
        ["bash", "-c", f"ulimit -v 3000000; exec {command}"],
        cwd=cwd,
        capture_output=True,
        timeout=60,
    )


def test_a_symlink_out_of_the_dataset_is_not_read(pair: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.nii.gz"
    os.replace(pair / "volumes" / f"{NAME}.nii.gz", outside)
    os.symlink(outside, pair / "volumes" / f"{NAME}.nii.gz")
    result = _attack(["show", NAME, "-o", str(tmp_path / "x.png")], pair)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    # the scan already refuses the link (docs/security.md), so the pair has no volume
    assert len(lines) == 1, lines
    assert "outside the dataset" in lines[0] or "has no volume" in lines[0], lines
    assert_clean_stderr(result.stderr)
    assert not (tmp_path / "x.png").exists()


def test_a_huge_declared_size_is_refused_before_reading(pair: Path, tmp_path: Path) -> None:
    seg = pair / "segmentations" / f"{NAME}-v3.nrrd"
    seg.write_bytes(
        b"NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\n"
        b"sizes: 100000 100000 100000\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
        b"kinds: domain domain domain\nencoding: gzip\nspace origin: (0,0,0)\n\n"
        + b"\x1f\x8b"
        + b"\0" * 64
    )
    result = _attack(["show", f"{NAME}@v3"], pair)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "declares" in lines[0] and "v3.nrrd" in lines[0], lines
    result = _attack(["compare", f"{NAME}@v1", f"{NAME}@v3"], pair)
    assert result.returncode == 2 and len(result.stderr.decode().strip().splitlines()) == 1
    # a NIfTI volume declaring 32767**3 voxels in a small gzip file
    header = nib.Nifti1Header()
    header.set_data_shape((32767, 32767, 32767))
    header.set_data_dtype(np.int16)
    header.set_sform(np.eye(4), code=1)
    volume = pair / "volumes" / f"{NAME}.nii.gz"
    volume.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 4096))
    result = _attack(["show", f"{NAME}@v1"], pair)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "declares" in lines[0] and ".nii.gz" in lines[0], lines


def test_unknown_pair_and_bad_options_are_one_line(pair: Path) -> None:
    for args in (
        ["show", "nope"],
        ["show", NAME, "--window", "x"],
        ["show", NAME, "--slice", "99,0,0"],
        ["compare", f"{NAME}@v1", f"{NAME}@v7"],
    ):
        result = invoke(["-C", str(pair), *args])
        assert result.exit_code == 2, (args, result.output)
        assert result.output.count("\n") == 1 and "error" in result.output


def test_missing_pillow_names_the_extra(pair: Path) -> None:
    code = "import sys; sys.modules['PIL'] = None; from volsegsync.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "-C", str(pair), "show", NAME], capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip().count("\n") == 0
    assert "pip install 'volsegsync[view]'" in result.stderr.decode()


def test_layered_4d_slicer_segmentation(ds_root: Path) -> None:
    """Two overlapping segments in two layers (kind 'list' first), both drawn in their
    Slicer colours; the picture uses the segment names."""
    _volume(ds_root)
    layers = np.zeros((2, *SHAPE), dtype=np.uint8)
    layers[0, 2:9, 2:9, 5] = 1  # "bone", layer 0
    layers[1, 6:12, 6:12, 5] = 1  # "tumour", layer 1, overlapping the bone
    header: dict[str, Any] = {
        "space": "right-anterior-superior",
        "space directions": [[np.nan] * 3, [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]],
        "space origin": np.zeros(3),
        "kinds": ["list", "domain", "domain", "domain"],
        "encoding": "gzip",
    }
    for n, (name, color) in enumerate((("bone", "0 1 0"), ("tumour", "1 0 0"))):
        header.update(
            {
                f"Segment{n}_ID": f"S{n}",
                f"Segment{n}_Name": name,
                f"Segment{n}_LabelValue": "1",
                f"Segment{n}_Layer": str(n),
                f"Segment{n}_Color": color,
            }
        )
    rel = f"segmentations/{NAME}-v1.seg.nrrd"
    (ds_root / "segmentations").mkdir(parents=True, exist_ok=True)
    nrrd.write(str(ds_root / rel), layers, header)
    doc, _ = _show(ds_root, "--slice", "3,3,5")
    assert doc["alignment"]["kind"] == "same grid"
    assert [(r["name"], r["voxels"]) for r in doc["labels"]] == [("bone", 49 - 9), ("tumour", 36)]
    picture, panels = _panels(ds_root, NAME, "3,3,5")
    assert _close(_axial(picture, panels, 4, 4), _fill((0, 255, 0)))  # bone only
    assert _close(_axial(picture, panels, 10, 10), _fill((255, 0, 0)))  # tumour only
    assert _close(
        _axial(picture, panels, 7, 7), _fill((255, 0, 0))
    )  # both: the later segment on top


def test_compare_across_grids_resamples_b(ds_root: Path) -> None:
    """B written on a grid twice as coarse, covering the same world box: compared on A's."""
    _volume(ds_root)
    (ds_root / "segmentations").mkdir(parents=True, exist_ok=True)
    fine = np.zeros(SHAPE, dtype=np.uint8)
    fine[4:12, 4:12, 2:6] = 1
    coarse = np.zeros((10, 8, 5), dtype=np.uint8)
    coarse[2:6, 2:6, 1:3] = 1
    for version, data, spacing, origin in ((1, fine, 1.0, 0.0), (2, coarse, 2.0, 0.5)):
        nrrd.write(
            str(ds_root / f"segmentations/{NAME}-v{version}.nrrd"),
            data,
            {
                "space": "right-anterior-superior",
                "space directions": np.eye(3) * spacing,
                "space origin": np.full(3, origin),
                "kinds": ["domain"] * 3,
                "encoding": "raw",
            },
        )
    result = invoke(["-C", str(ds_root), "compare", f"{NAME}@v1", f"{NAME}@v2", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["alignment"]["kind"] == "resampled"
    row = doc["labels"][0]
    assert (row["voxels_a"], row["voxels_b"]) == (256, 32)
    assert row["ml_a"] == pytest.approx(0.256) and row["ml_b"] == pytest.approx(0.256)
    assert row["dice"] == pytest.approx(1.0) and row["hausdorff_mm"] == pytest.approx(0.0)


def _ras_seg(
    root: Path,
    version: int,
    data: np.ndarray,
    origin: tuple[float, ...],
    space: str = "right-anterior-superior",
) -> None:
    (root / "segmentations").mkdir(parents=True, exist_ok=True)
    nrrd.write(
        str(root / f"segmentations/{NAME}-v{version}.nrrd"),
        data,
        {
            "space": space,
            "space directions": np.eye(3),
            "space origin": np.array(origin),
            "kinds": ["domain"] * 3,
            "encoding": "raw",
        },
    )


def test_a_cropped_segmentation_is_placed_by_its_offset(ds_root: Path) -> None:
    _volume(ds_root)
    crop = np.zeros((6, 5, 4), dtype=np.uint8)
    crop[0, 0, 0] = 1  # the crop's first voxel: volume voxel (8, 6, 3)
    _ras_seg(ds_root, 1, crop, (8.0, 6.0, 3.0))
    doc, _ = _show(ds_root)
    assert doc["alignment"]["kind"] == "offset" and "[8, 6, 3]" in doc["alignment"]["note"]
    assert doc["slices"] == {"axial": 3, "coronal": 6, "sagittal": 8}  # through the label
    picture, panels = _panels(ds_root, NAME, None)
    grey = round(GREY / 200 * 255)
    assert _close(_axial(picture, panels, 8, 6), _fill(_palette(1)))
    assert _close(_axial(picture, panels, 9, 6), (grey,) * 3)


def _palette(value: int) -> tuple[int, int, int]:
    from volsegsync.view.load import default_color

    return default_color(value)


def test_no_shared_frame_is_refused(ds_root: Path) -> None:
    _volume(ds_root)
    _ras_seg(ds_root, 1, np.ones(SHAPE, dtype=np.uint8), (0.0, 0.0, 0.0), space="scanner-xyz")
    result = invoke(["-C", str(ds_root), "show", NAME, "-o", str(ds_root / "x.png")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "no anatomical frame shared" in result.output
    assert not (ds_root / "x.png").exists()


def test_hausdorff_kd_tree_and_brute_force_agree() -> None:
    pytest.importorskip("scipy", reason="the k-d tree path needs scipy")
    rng = np.random.default_rng(3)
    affine = np.array([[0.7, 0.3, 0, 5], [-0.3, 0.7, 0, 1], [0, 0, 2.5, -4], [0, 0, 0, 1]])
    for _ in range(5):
        a = rng.random((12, 11, 9)) < 0.3
        b = rng.random((12, 11, 9)) < 0.2
        assert hausdorff(a, b, affine) == pytest.approx(hausdorff(a, b, affine, brute=True))
