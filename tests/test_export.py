"""``volsegsync export``: real files in, real files out, checked independently.

The checks of the exported files (:func:`check_export`) use nibabel and pynrrd
only, never volsegsync's own export code: every image/label pair has the same
shape, spacing, origin and direction, the labels are exactly those of
dataset.json, and a converted segmentation overlays its volume voxel for voxel
in world space.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pytest
from conftest import assert_clean_stderr, init_with_git_binary, invoke, run_script

LPS_SPACE = "left-posterior-superior"
SIGNS = {
    LPS_SPACE: (-1.0, -1.0, 1.0),
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
}
SHAPE = (7, 6, 5)
N1 = "C01-Spine_T2_V001-D22061998"
N2 = "C02-Spine_T2_V002-D05031987"
N3 = "C01-Knee_PD_V003-D17112003"  # same patient prefix as N1
DOCS = Path(__file__).resolve().parent.parent / "docs"


# --------------------------------------------------------------------------- files


def ras_affine(
    spacing: Sequence[float] = (0.8, 0.9, 2.5),
    origin: Sequence[float] = (-40.0, 12.5, -7.0),
    axes: np.ndarray | None = None,
) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = (np.eye(3) if axes is None else axes) @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def blob_labels(shape: Sequence[int], seed: int, values: Sequence[int] = (1, 2)) -> np.ndarray:
    """A label map holding every value of ``values`` and background, asymmetric."""
    rng = np.random.default_rng(seed)
    data = rng.choice(np.array([0, *values], dtype=np.uint8), size=tuple(shape))
    data[0, 0, 0] = 0
    for i, v in enumerate(values):
        data.reshape(-1)[1 + i] = v
    return data


def save_nii(path: Path, a: np.ndarray, data: np.ndarray | None = None, gz: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = np.random.default_rng(len(path.name)).integers(0, 900, SHAPE).astype(np.int16)
    nib.save(nib.Nifti1Image(data, a), str(path))  # type: ignore[no-untyped-call]
    return path


def save_nrrd(
    path: Path,
    a: np.ndarray,
    data: np.ndarray,
    space: str = LPS_SPACE,
    fields: dict[str, Any] | None = None,
) -> Path:
    """``data`` on the RAS grid ``a``, written in ``space`` as a converter should."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sign = np.asarray(SIGNS[space])
    header: dict[str, Any] = {
        "space": space,
        "space directions": (sign[:, None] * a[:3, :3]).T,
        "space origin": sign * a[:3, 3],
        "kinds": ["domain"] * 3,
        "encoding": "gzip",
        **(fields or {}),
    }
    nrrd.write(str(path), data, header)
    return path


def reorder(data: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same grid stored another way: axes (z, x, y), the z axis reversed."""
    stored = np.flip(np.transpose(data, (2, 0, 1)), axis=0)
    m = np.zeros((4, 4))  # stored voxel -> original voxel
    m[0, 1] = 1
    m[1, 2] = 1
    m[2, 0] = -1
    m[2, 3] = data.shape[2] - 1
    m[3, 3] = 1
    return np.ascontiguousarray(stored), a @ m


def slicer_fields(segments: Sequence[tuple[str, int, int]]) -> dict[str, str]:
    out = {"Segmentation_MasterRepresentation": "Binary labelmap"}
    for n, (name, value, layer) in enumerate(segments):
        out[f"Segment{n}_ID"] = f"Segment_{n + 1}"
        out[f"Segment{n}_Name"] = name
        out[f"Segment{n}_LabelValue"] = str(value)
        out[f"Segment{n}_Layer"] = str(layer)
    return out


def save_layered(path: Path, a: np.ndarray, layers: list[np.ndarray], segments: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sign = np.asarray(SIGNS[LPS_SPACE])
    header: dict[str, Any] = {
        "space": LPS_SPACE,
        "space directions": np.vstack([np.full(3, np.nan), (sign[:, None] * a[:3, :3]).T]),
        "space origin": sign * a[:3, 3],
        "kinds": ["list", "domain", "domain", "domain"],
        "encoding": "gzip",
        **slicer_fields(segments),
    }
    nrrd.write(str(path), np.stack(layers), header)
    return path


def declare_labels(root: Path, labels: dict[int, str], extra: str = "") -> None:
    cfg = root / ".volsegsync" / "config.toml"
    text = cfg.read_text()
    table = "".join(f'{k} = "{v}"\n' for k, v in labels.items())
    cfg.write_text(text + f"\n[verify.labels]\n{table}" + extra)


def dataset(tmp_path: Path) -> Path:
    return init_with_git_binary(tmp_path / "ds")


def export(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = invoke(["-C", str(root), "export", *args, "--format", "json"])
    assert_clean_stderr(result.output)
    try:
        return result.exit_code, json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(result.output) from None


# --------------------------------------------------------------------------- the check


def nrrd_ras_affine(header: dict[str, Any]) -> np.ndarray:
    """Voxel -> RAS of a 3D NRRD, read here independently of volsegsync."""
    sign = np.asarray(SIGNS[header["space"]])
    a = np.eye(4)
    a[:3, :3] = sign[:, None] * np.asarray(header["space directions"], dtype=float).T
    a[:3, 3] = sign * np.asarray(header["space origin"], dtype=float)
    return a


def check_export(out: Path) -> dict[str, Any]:
    """Every exported image/label pair on one grid, labels exactly dataset.json's."""
    meta = json.loads((out / "dataset.json").read_text())
    labels_tr = sorted((out / "labelsTr").glob("*.nii.gz"))
    assert len(labels_tr) == meta["numTraining"]
    declared = set(meta["labels"].values())
    found: set[int] = set()
    channels = len(meta["channel_names"])
    for label_path in labels_tr:
        case = label_path.name[: -len(".nii.gz")]
        label = nib.load(str(label_path))
        values = np.unique(np.asarray(label.dataobj))
        assert np.all(values == np.rint(values))
        found |= {int(v) for v in values}
        images = sorted((out / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9].nii.gz"))
        assert len(images) == channels, (case, images)
        for image_path in images:
            image = nib.load(str(image_path))
            assert image.shape[:3] == label.shape[:3], (image_path, image.shape, label.shape)
            assert np.allclose(image.header.get_zooms()[:3], label.header.get_zooms()[:3])
            assert np.allclose(image.affine[:3, 3], label.affine[:3, 3], atol=1e-5)
            dirs = image.affine[:3, :3] / np.asarray(image.header.get_zooms()[:3])
            label_dirs = label.affine[:3, :3] / np.asarray(label.header.get_zooms()[:3])
            assert np.allclose(dirs, label_dirs, atol=1e-6)
            assert image.header.get_sform(coded=True)[1] == label.header.get_sform(coded=True)[1]
    # nnU-Net's own file rules: every image is CASE_NNNN + file_ending, every case has a label
    names = [p.name for p in (out / "imagesTr").iterdir()]
    assert all(re.fullmatch(r".+_[0-9]{4}\.nii\.gz", n) for n in names), names
    cases = {n[: -len("_0000.nii.gz")] for n in names}
    assert cases == {p.name[: -len(".nii.gz")] for p in labels_tr}
    assert len(names) == channels * len(cases)
    assert found <= declared, (found, declared)
    assert found == declared, f"dataset.json declares labels no file holds: {declared - found}"
    return meta


def overlays(label_path: Path, seg_path: Path) -> None:
    """Each voxel of the exported label map holds the source segmentation's value at
    the same world position (and the source's labelled voxels are all there)."""
    label = nib.load(str(label_path))
    exported = np.asarray(label.dataobj)
    data, header = nrrd.read(str(seg_path))
    to_source = np.linalg.inv(nrrd_ras_affine(header)) @ label.affine
    idx = np.indices(exported.shape).reshape(3, -1)
    src = to_source[:3, :3] @ idx + to_source[:3, 3:4]
    src_idx = np.rint(src).astype(int)
    assert np.allclose(src, src_idx, atol=1e-3), "not voxel-aligned"
    inside = np.all((src_idx >= 0) & (src_idx < np.array(data.shape)[:, None]), axis=0)
    expected = np.zeros(idx.shape[1], dtype=data.dtype)
    expected[inside] = data[tuple(src_idx[:, inside])]
    assert np.array_equal(exported[tuple(idx)], expected)
    assert int(np.count_nonzero(exported)) == int(np.count_nonzero(data))


# --------------------------------------------------------------------------- nnU-Net


def three_pairs(root: Path) -> dict[str, tuple[str, str]]:
    """An LPS Slicer-style pair, a RAS NRRD pair, a NIfTI .nii volume with an LAS seg."""
    a1 = ras_affine()
    a2 = ras_affine((1.0, 1.0, 1.0), (5.0, -3.0, 9.0), np.diag([-1.0, 1.0, 1.0]))
    a3 = ras_affine((0.5, 0.5, 3.0), (0.0, 0.0, 0.0), np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]]))
    pairs = {}
    for name, a, space, ext in (
        (N1, a1, LPS_SPACE, ".nii.gz"),
        (N2, a2, "right-anterior-superior", ".nii.gz"),
        (N3, a3, "left-anterior-superior", ".nii"),
    ):
        vol = f"volumes/{name}{ext}"
        seg = f"segmentations/{name}-v1.seg.nrrd"
        save_nii(root / vol, a)
        save_nrrd(root / seg, a, blob_labels(SHAPE, len(name) + ord(name[2])), space=space)
        pairs[name] = (vol, seg)
    return pairs


def test_nnunet_export_is_consistent_and_overlays(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    pairs = three_pairs(root)
    code, doc = export(root, "nnunet", str(tmp_path / "out"))
    assert code == 0, doc
    assert doc["schema"] == "volsegsync.export/1"
    assert sorted(doc["exported"]) == sorted(pairs)
    assert doc["skipped"] == []
    out = tmp_path / "out"
    meta = check_export(out)
    assert meta["file_ending"] == ".nii.gz"
    assert meta["labels"] == {"background": 0, "label_1": 1, "label_2": 2}
    assert meta["channel_names"] == {"0": "channel_0000"}
    for name, (vol, seg) in pairs.items():
        overlays(out / "labelsTr" / f"{name}.nii.gz", root / seg)
        image = nib.load(str(out / "imagesTr" / f"{name}_0000.nii.gz"))
        source = nib.load(str(root / vol))
        assert np.array_equal(np.asarray(image.dataobj), np.asarray(source.dataobj))
    # the .nii.gz volumes are linked (same inode on this filesystem) or reflinked
    linked = out / "imagesTr" / f"{N1}_0000.nii.gz"
    assert linked.read_bytes() == (root / pairs[N1][0]).read_bytes()
    assert doc["placed"].get("gzip") == 1  # the .nii volume, recompressed
    assert sum(doc["placed"].values()) == 6


def test_reordered_axes_and_crop_land_on_the_volume_grid(tmp_path: Path) -> None:
    """A segmentation stored with permuted, reversed axes and cropped by whole voxels
    (verify fails it: --include-failing) is moved onto the volume grid, no resampling."""
    root = dataset(tmp_path)
    a = ras_affine()
    save_nii(root / f"volumes/{N1}.nii.gz", a)
    full = blob_labels(SHAPE, 3)
    full[:, :, 0] = 0  # the crop below drops slice 0: it holds nothing
    stored, stored_affine = reorder(full[:, :, 1:], a @ _shift(0, 0, 1))
    seg = save_nrrd(root / f"segmentations/{N1}-v1.nrrd", stored_affine, stored)
    code, doc = export(root, "nnunet", str(tmp_path / "out"))
    assert code == 1 and doc["exported"] == []
    assert any("[geometry]" in r or "[extent]" in r for r in doc["skipped"][0]["reasons"])
    code, doc = export(root, "nnunet", str(tmp_path / "out"), "--include-failing")
    assert code == 0, doc
    exported = tmp_path / "out" / "labelsTr" / f"{N1}.nii.gz"
    overlays(exported, seg)
    assert np.array_equal(np.asarray(nib.load(str(exported)).dataobj), full)
    check_export(tmp_path / "out")


def _shift(*voxels: float) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = voxels
    return m


def test_off_grid_and_outside_labels_are_skipped_with_a_reason(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    a = ras_affine()
    save_nii(root / f"volumes/{N1}.nii.gz", a)
    save_nrrd(root / f"segmentations/{N1}-v1.nrrd", a @ _shift(0.5, 0, 0), blob_labels(SHAPE, 1))
    save_nii(root / f"volumes/{N2}.nii.gz", a)
    save_nrrd(root / f"segmentations/{N2}-v1.nrrd", a @ _shift(3, 0, 0), blob_labels(SHAPE, 2))
    code, doc = export(root, "nnunet", str(tmp_path / "out"), "--include-failing")
    assert code == 1
    reasons = {s["case"]: " ".join(s["reasons"]) for s in doc["skipped"]}
    assert "resampling" in reasons[N1]
    assert "outside its volume's grid" in reasons[N2]
    assert not list((tmp_path / "out" / "labelsTr").glob("*"))


def test_layered_slicer_segmentation_is_flattened(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    a = ras_affine()
    save_nii(root / f"volumes/{N1}.nii.gz", a)
    layer0 = blob_labels(SHAPE, 5, (1, 2))
    layer1 = np.zeros(SHAPE, dtype=np.uint8)
    layer1[2:5, 2:4, 1:3] = 3  # overlaps layer 0: the later layer wins
    seg = root / f"segmentations/{N1}-v1.seg.nrrd"
    save_layered(seg, a, [layer0, layer1], [("bone", 1, 0), ("disc", 2, 0), ("canal", 3, 1)])
    code, doc = export(root, "nnunet", str(tmp_path / "out"))
    assert code == 0, doc
    meta = check_export(tmp_path / "out")
    assert meta["labels"] == {"background": 0, "bone": 1, "disc": 2, "canal": 3}
    flat = np.asarray(nib.load(str(tmp_path / "out" / "labelsTr" / f"{N1}.nii.gz")).dataobj)
    expected = np.where(layer1 == 3, 3, layer0)
    assert np.array_equal(flat, expected)


def test_layers_sharing_label_values_need_declared_names(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    a = ras_affine()
    save_nii(root / f"volumes/{N1}.nii.gz", a)
    layer0 = blob_labels(SHAPE, 5, (1,))
    layer1 = np.zeros(SHAPE, dtype=np.uint8)
    layer1[1:3, 1:3, 1:3] = 1
    seg = root / f"segmentations/{N1}-v1.seg.nrrd"
    save_layered(seg, a, [layer0, layer1], [("bone", 1, 0), ("canal", 1, 1)])
    code, doc = export(root, "nnunet", str(tmp_path / "out"))
    assert code == 1
    assert "declare [verify.labels]" in " ".join(doc["skipped"][0]["reasons"])
    declare_labels(root, {0: "background", 1: "bone", 4: "canal"})
    code, doc = export(root, "nnunet", str(tmp_path / "out"))
    assert code == 0, doc
    flat = np.asarray(nib.load(str(tmp_path / "out" / "labelsTr" / f"{N1}.nii.gz")).dataobj)
    assert np.array_equal(flat, np.where(layer1 == 1, 4, layer0))
    assert doc["labels"] == {"background": 0, "bone": 1, "canal": 4}
    assert any("not consecutive" in w for w in doc["warnings"])


def test_failing_pairs_are_listed_not_exported(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    three_pairs(root)
    bad = np.full(SHAPE, 7, dtype=np.uint8)
    save_nrrd(root / f"segmentations/{N2}-v2.seg.nrrd", ras_affine((1, 1, 1)), bad)
    declare_labels(root, {0: "background", 1: "a", 2: "b"})
    code, doc = export(root, "nnunet", str(tmp_path / "out"))
    assert code == 1
    assert [s["case"] for s in doc["skipped"]] == [N2]
    assert any("[unknown_label]" in r for r in doc["skipped"][0]["reasons"])
    assert not (tmp_path / "out" / "labelsTr" / f"{N2}.nii.gz").exists()
    assert check_export(tmp_path / "out")["numTraining"] == 2


# --------------------------------------------------------------------------- idempotence


def test_rerun_writes_only_what_changed(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    pairs = three_pairs(root)
    out = tmp_path / "out"
    code, first = export(root, "nnunet", str(out))
    assert code == 0 and len(first["written"]) == 7  # 3 images, 3 labels, dataset.json
    stats = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    code, again = export(root, "nnunet", str(out))
    assert code == 0 and again["written"] == [] and again["summary"]["unchanged"] == 6
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == stats
    # a new segmentation version: only that label is rewritten
    a2 = ras_affine((1.0, 1.0, 1.0), (5.0, -3.0, 9.0), np.diag([-1.0, 1.0, 1.0]))
    save_nrrd(
        root / f"segmentations/{N2}-v2.seg.nrrd",
        a2,
        blob_labels(SHAPE, 99),
        space="right-anterior-superior",
    )
    code, third = export(root, "nnunet", str(out))
    assert code == 0 and third["written"] == [f"labelsTr/{N2}.nii.gz"]
    # a pair that goes away is removed from OUT (and from dataset.json)
    for rel in pairs[N3]:
        (root / rel).unlink()
    code, fourth = export(root, "nnunet", str(out))
    assert code == 0
    assert sorted(fourth["removed"]) == [f"imagesTr/{N3}_0000.nii.gz", f"labelsTr/{N3}.nii.gz"]
    assert check_export(out)["numTraining"] == 2
    # a file edited in OUT is noticed and rewritten
    victim = out / "labelsTr" / f"{N1}.nii.gz"
    victim.write_bytes(b"scribble")
    code, fifth = export(root, "nnunet", str(out))
    assert fifth["written"] == [f"labelsTr/{N1}.nii.gz"]
    check_export(out)


def test_files_not_written_by_export_are_left_alone(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    three_pairs(root)
    out = tmp_path / "out"
    (out / "labelsTr").mkdir(parents=True)
    mine = out / "labelsTr" / f"{N1}.nii.gz"
    mine.write_bytes(b"precious")
    result = invoke(["-C", str(root), "export", "nnunet", str(out)])
    assert result.exit_code == 2
    assert "not written by volsegsync export" in result.output
    assert mine.read_bytes() == b"precious"
    assert not (out / "imagesTr").exists()
    code, _ = export(root, "nnunet", str(out), "--force")
    assert code == 0 and mine.read_bytes() != b"precious"


# --------------------------------------------------------------------------- hostile


def test_symlink_out_of_the_dataset_is_not_read(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    three_pairs(root)
    secret = save_nii(tmp_path / "secret" / "outside.nii.gz", ras_affine())
    (root / f"volumes/{N1}.nii.gz").unlink()
    os.symlink(secret, root / f"volumes/{N1}.nii.gz")
    out = tmp_path / "out"
    proc = run_script(
        ["export", "nnunet", str(out), "--include-failing", "--format", "json"], cwd=root
    )
    assert_clean_stderr(proc.stderr)
    doc = json.loads(proc.stdout)
    # the scan leaves the link out (docs/security.md), or export skips the pair: never read
    assert N1 not in doc["exported"]
    skipped = {s["case"]: " ".join(s["reasons"]) for s in doc["skipped"]}
    assert N1 not in skipped or "outside the dataset" in skipped[N1]
    assert not list(out.glob(f"*/{N1}*"))
    assert sorted(doc["exported"]) == sorted([N2, N3])


def test_out_through_a_symlink_and_links_inside_out(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    three_pairs(root)
    real = tmp_path / "real_out"
    real.mkdir()
    os.symlink(real, tmp_path / "via")
    proc = run_script(["export", "nnunet", str(tmp_path / "via"), "--format", "json"], cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["out"] == str(real)
    check_export(real)
    # a folder inside OUT replaced by a link elsewhere: refused, nothing written there
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = tmp_path / "other_out"
    other.mkdir()
    os.symlink(elsewhere, other / "labelsTr")
    proc = run_script(["export", "nnunet", str(other)], cwd=root)
    assert proc.returncode in (1, 2)
    assert_clean_stderr(proc.stderr)
    assert list(elsewhere.iterdir()) == []
    # a file inside OUT replaced by a link: the link is replaced, its target untouched
    target = tmp_path / "target.nii.gz"
    target.write_bytes(b"keep")
    label = real / "labelsTr" / f"{N1}.nii.gz"
    label.unlink()
    os.symlink(target, label)
    proc = run_script(["export", "nnunet", str(real), "--force"], cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes() == b"keep" and not label.is_symlink()


@pytest.mark.parametrize("where", ["root", "inside", "parent", "state", "link"])
def test_out_may_not_touch_the_dataset(tmp_path: Path, where: str) -> None:
    root = dataset(tmp_path)
    three_pairs(root)
    os.symlink(root / "volumes", tmp_path / "link")  # OUT through a link into the dataset
    out = {
        "link": tmp_path / "link",
        "root": root,
        "inside": root / "export",
        "parent": tmp_path,
        "state": root / ".volsegsync" / "state" / "x",
    }[where]
    result = invoke(["-C", str(root), "export", "nnunet", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "error:" in result.output


def test_out_inside_the_dataset_when_excluded(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    three_pairs(root)
    cfg = root / ".volsegsync" / "config.toml"
    cfg.write_text(cfg.read_text().replace("exclude = []", 'exclude = ["export"]'))
    code, doc = export(root, "nnunet", str(root / "export"))
    assert code == 0, doc
    code, doc = export(root, "nnunet", str(root / "export"))
    assert doc["written"] == []  # the export is not scanned as part of the dataset
    check_export(root / "export")


# --------------------------------------------------------------------------- decathlon, csv


def folds_dataset(tmp_path: Path) -> Path:
    root = dataset(tmp_path)
    a = ras_affine()
    names = [
        f"P{p:02d}-Scan{s}_T2_V001-D0{s + 1}011999" for p in range(6) for s in range(1 + p % 3)
    ]
    for i, name in enumerate(names):
        save_nii(root / f"volumes/{name}.nii.gz", a)
        save_nrrd(root / f"segmentations/{name}-v1.nrrd", a, blob_labels(SHAPE, i))
    return root


def test_decathlon_datalist_with_grouped_folds(tmp_path: Path) -> None:
    root = folds_dataset(tmp_path)
    out = tmp_path / "msd"
    code, doc = export(root, "decathlon", str(out), "--folds", "3", "--group-by", "prefix")
    assert code == 0, doc
    datalist = json.loads((out / "dataset.json").read_text())
    assert datalist["numTraining"] == len(datalist["training"]) == 12
    fold_of_patient: dict[str, set[int]] = {}
    for item in datalist["training"]:
        for key in ("image", "label"):
            assert item[key].startswith("./") and (out / item[key]).is_file()
        patient = Path(item["label"]).name.split("-")[0]
        fold_of_patient.setdefault(patient, set()).add(item["fold"])
    assert all(len(f) == 1 for f in fold_of_patient.values()), fold_of_patient
    sizes = sorted(sum(1 for i in datalist["training"] if i["fold"] == k) for k in range(3))
    assert sizes == [4, 4, 4]
    assert datalist["labels"] == {"0": "background", "1": "label_1", "2": "label_2"}
    again = tmp_path / "msd2"
    code, doc = export(root, "decathlon", str(again), "--folds", "3", "--group-by", "prefix")
    assert code == 0, doc
    assert (again / "dataset.json").read_bytes() == (out / "dataset.json").read_bytes()
    # the same layout check as for nnU-Net, on the files the datalist names
    for item in datalist["training"]:
        image, label = nib.load(str(out / item["image"])), nib.load(str(out / item["label"]))
        assert image.shape == label.shape and np.allclose(image.affine, label.affine)


def test_nnunet_splits_and_bad_group_field(tmp_path: Path) -> None:
    root = folds_dataset(tmp_path)
    code, doc = export(root, "nnunet", str(tmp_path / "nn"), "--folds", "2")
    assert code == 0, doc
    splits = json.loads((tmp_path / "nn" / "splits_final.json").read_text())
    assert len(splits) == 2
    for split in splits:
        assert not set(split["train"]) & set(split["val"])
        train_patients = {c.split("-")[0] for c in split["train"]}
        assert not train_patients & {c.split("-")[0] for c in split["val"]}
    result = invoke(["-C", str(root), "export", "csv", str(tmp_path / "p.csv"), "--folds", "2",
                     "--group-by", "patient"])  # fmt: skip
    assert result.exit_code == 2 and "not a naming field" in result.output


def test_csv_rows_carry_paths_hashes_and_geometry(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    pairs = three_pairs(root)
    invoke(["-C", str(root), "pair"])
    index = (root / "volsegsync.index").read_text()
    out = tmp_path / "lists" / "pairs.csv"
    code, doc = export(root, "csv", str(out))
    assert code == 0 and doc["written"] == ["pairs.csv"]
    rows = list(csv.DictReader(out.open()))
    assert [r["case"] for r in rows] == sorted(pairs)
    for row in rows:
        vol, seg = pairs[row["case"]]
        assert (out.parent / row["volume"]).resolve() == (root / vol).resolve()
        assert (out.parent / row["segmentation"]).resolve() == (root / seg).resolve()
        assert row["volume_hash"] in index and row["segmentation_hash"] in index
        assert row["version"] == "1" and row["verified"] == "true"
        assert re.fullmatch(r"\d+x\d+x\d+", row["shape"])
    by_case = {r["case"]: r for r in rows}
    assert by_case[N1]["axes"] == "RAS" and by_case[N2]["axes"] == "LAS"
    assert by_case[N1]["spacing"] == "0.8 0.9 2.5"
    code, doc = export(root, "csv", str(out))
    assert doc["written"] == []
    other = tmp_path / "notes.csv"
    other.write_text("mine\n")
    result = invoke(["-C", str(root), "export", "csv", str(other)])
    assert result.exit_code == 2 and other.read_text() == "mine\n"


def test_text_output_lists_skipped_pairs(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    three_pairs(root)
    (root / f"segmentations/{N2}-v1.seg.nrrd").write_bytes(b"NRRD0004\ngarbage")
    result = invoke(["-C", str(root), "export", "nnunet", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"skipped {N2}:" in result.output
    assert re.search(r"exported 2 pairs to .* 1 pairs skipped", result.output)


# --------------------------------------------------------------------------- NIfTI labels


def test_nifti_label_maps_are_linked_when_on_the_same_header(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    cfg = root / ".volsegsync" / "config.toml"
    text = cfg.read_text()
    text = text.replace("volume_dirs = []", 'volume_dirs = ["imagesTr"]')
    text = text.replace("segmentation_dirs = []", 'segmentation_dirs = ["labelsTr"]')
    text = text.replace('segmentation_extensions = [".seg.nrrd", ".nrrd", ".seg.nhdr", ".nhdr"]',
                        'segmentation_extensions = [".nii.gz"]')  # fmt: skip
    text = text.replace(
        'volume_extensions = [".nii.gz", ".nii"]', 'volume_extensions = [".nii.gz"]'
    )
    text = text.replace('volume_suffix = ""', 'volume_suffix = "_0000"')
    cfg.write_text(text)
    a = ras_affine()
    for name in (N1, N2):
        save_nii(root / f"imagesTr/{name}_0000.nii.gz", a)
        save_nii(root / f"labelsTr/{name}.nii.gz", a, blob_labels(SHAPE, len(name)))
    code, doc = export(root, "nnunet", str(tmp_path / "out"))
    assert code == 0, doc
    assert doc["placed"].get("convert") is None
    check_export(tmp_path / "out")


# --------------------------------------------------------------------------- consumers


def _require(module: str) -> None:
    """Skip without the consumer, unless the opt-in job (VOLSEGSYNC_CONSUMERS=1) runs."""
    if importlib.util.find_spec(module) is None:
        why = f"{module} is not installed: pip install '.[consumers]' (needs torch)"
        if os.environ.get("VOLSEGSYNC_CONSUMERS") == "1":
            pytest.fail(why)
        pytest.skip(why)


@pytest.mark.consumers
def test_nnunet_verify_dataset_integrity(tmp_path: Path) -> None:
    _require("nnunetv2")
    from nnunetv2.experiment_planning.verify_dataset_integrity import (
        verify_dataset_integrity,
    )

    root = dataset(tmp_path)
    three_pairs(root)
    out = tmp_path / "Dataset001_Export"
    code, _ = export(root, "nnunet", str(out))
    assert code == 0
    verify_dataset_integrity(str(out), 1)


@pytest.mark.consumers
def test_monai_loads_the_decathlon_datalist(tmp_path: Path) -> None:
    _require("monai")
    from monai.data import load_decathlon_datalist

    root = folds_dataset(tmp_path)
    out = tmp_path / "msd"
    code, _ = export(root, "decathlon", str(out), "--folds", "3")
    assert code == 0
    items = load_decathlon_datalist(str(out / "dataset.json"), is_segmentation=True)
    assert len(items) == 12
    for item in items:
        assert Path(item["image"]).is_file() and Path(item["label"]).is_file()


# --------------------------------------------------------------------------- pipeline API


def test_docs_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / "export.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "docs/export.md has no ```python example"
    monkeypatch.chdir(tmp_path)
    assert invoke(["example", "demo"]).exit_code == 0
    namespace: dict[str, Any] = {}
    exec(compile(blocks[0], "docs/export.md", "exec"), namespace)
    pairs = namespace["pairs"]
    assert [p.case for p in pairs] == [
        "C01-LowerBack_FSE_T2w_V001-D22061998",
        "C02-LowerBack_FSE_T2w_V002-D05031987",
    ]
    first = pairs[0]
    assert first.version == 2 and first.labels == {0: "background", 1: "vertebra", 2: "disc"}
    assert first.shape == (48, 40, 12) and first.verified and first.problems == ()
    item = namespace["item"]
    assert item["label"].dtype.kind in "iu" and set(np.unique(item["label"])) == {0, 1, 2}


def test_api_signature_is_documented() -> None:
    import inspect

    from volsegsync.api import iter_pairs

    params = inspect.signature(iter_pairs).parameters.values()
    shown = ", ".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in params
    )
    text = " ".join((DOCS / "export.md").read_text(encoding="utf-8").split())
    assert f"iter_pairs({shown})" in text


def test_api_lists_failing_pairs_with_their_problems(tmp_path: Path) -> None:
    from volsegsync.api import iter_pairs, load_pair

    root = dataset(tmp_path)
    three_pairs(root)
    a = ras_affine()
    save_nii(root / f"volumes/{N1.replace('C01', 'C09')}.nii.gz", a)
    save_nrrd(root / f"segmentations/{N1.replace('C01', 'C09')}-v1.nrrd", a @ _shift(0.5, 0, 0),
              blob_labels(SHAPE, 4))  # fmt: skip
    verified = [p.case for p in iter_pairs(root)]
    everything = {p.case: p for p in iter_pairs(root, verified=False)}
    assert len(verified) == 3 and len(everything) == 4
    bad = everything[N1.replace("C01", "C09")]
    assert not bad.verified and any("[geometry]" in r for r in bad.problems)
    good = everything[N3]
    image, label, affine = load_pair(good)
    assert image.shape == label.shape == good.shape
    assert np.allclose(affine, np.array(good.affine))
    assert good.labels == {0: "background", 1: "label_1", 2: "label_2"}


def _bounded(args: list[str], cwd: Path) -> Any:
    """The real command under ``timeout`` and ``ulimit -v`` (a hang or a blow-up fails)."""
    import shlex
    import subprocess

    from conftest import VOLSEGSYNC

    command = f"ulimit -v 4000000; exec {shlex.quote(VOLSEGSYNC)} {shlex.join(args)}"
    return subprocess.run(
        ["timeout", "60", "bash", "-c", command], cwd=cwd, capture_output=True, timeout=90
    )


def test_fifos_in_out_never_block(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    three_pairs(root)
    out = tmp_path / "out"
    (out / "labelsTr").mkdir(parents=True)
    for rel in (".volsegsync-export.json", "dataset.json", f"labelsTr/{N1}.nii.gz"):
        os.mkfifo(out / rel)
    proc = _bounded(["export", "nnunet", str(out)], root)
    assert proc.returncode == 2, proc.stderr
    assert_clean_stderr(proc.stderr)
    assert b"not written by volsegsync export" in proc.stderr
    proc = _bounded(["export", "nnunet", str(out), "--force"], root)
    assert proc.returncode == 0, proc.stderr
    check_export(out)
    os.mkfifo(tmp_path / "pairs.csv")
    proc = _bounded(["export", "csv", str(tmp_path / "pairs.csv")], root)
    assert proc.returncode == 2 and b"not a volsegsync export CSV" in proc.stderr


def test_verdicts_are_reused_only_for_the_same_dataset(tmp_path: Path) -> None:
    from conftest import age_all

    root = dataset(tmp_path)
    pairs = three_pairs(root)
    age_all(root)
    out = tmp_path / "out"
    code, doc = export(root, "nnunet", str(out))
    assert code == 0
    memo = json.loads((out / ".volsegsync-export.json").read_text())["memo"]
    assert len(memo["cases"]["value"]) == 3
    # the same files: the remembered verdicts; a changed segmentation: verified again
    assert export(root, "nnunet", str(out))[1]["written"] == []
    a2 = ras_affine((1.0, 1.0, 1.0), (5.0, -3.0, 9.0), np.diag([-1.0, 1.0, 1.0]))
    bad = np.full(SHAPE, 0.5, dtype=np.float32)
    save_nrrd(root / pairs[N2][1], a2, bad, space="right-anterior-superior")
    age_all(root)
    code, doc = export(root, "nnunet", str(out))
    assert code == 1 and [s["case"] for s in doc["skipped"]] == [N2]
    assert any("[non_integer_labels]" in r for r in doc["skipped"][0]["reasons"])
    assert doc["removed"] == [f"imagesTr/{N2}_0000.nii.gz", f"labelsTr/{N2}.nii.gz"]
    # a changed config is a changed dataset too
    declare_labels(root, {0: "background", 1: "a"})
    code, doc = export(root, "nnunet", str(out))
    assert code == 1 and {s["case"] for s in doc["skipped"]} == set(pairs)
