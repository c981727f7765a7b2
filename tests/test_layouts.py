"""``init --layout``: the frameworks' folder layouts, detection, and NIfTI label maps.

Real nnU-Net v2 / MSD / 3D Slicer folders are written with nibabel and pynrrd;
every check of ``verify`` is run on NIfTI label maps as on NRRD ones.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pytest
from conftest import assert_clean_stderr, git, invoke, run_script

from volsegsync.config import DEFAULT_CONFIG_TEXT, load_config
from volsegsync.layouts import LAYOUTS, config_text

AFFINE = np.diag([0.9, 0.9, 2.0, 1.0])
AFFINE[:3, 3] = (-50.0, 30.0, 12.0)
SHAPE = (6, 5, 4)
CASES = ("spine_001", "spine_002", "spine_003")


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))  # type: ignore[no-untyped-call]
    return path


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 500, SHAPE).astype(np.int16)


def label(seed: int, values: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    data = np.random.default_rng(seed).choice(np.array(values, dtype=np.uint8), SHAPE)
    data.reshape(-1)[: len(values)] = values
    return data


def nnunet_folder(root: Path, dataset_json: dict[str, Any] | None = None) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q")
    for i, case in enumerate(CASES):
        save(root / "imagesTr" / f"{case}_0000.nii.gz", image(i))
        save(root / "labelsTr" / f"{case}.nii.gz", label(i))
    save(root / "imagesTs" / "spine_101_0000.nii.gz", image(9))  # no label: a test image
    meta = dataset_json or {
        "channel_names": {"0": "T2"},
        "labels": {"background": 0, "vertebra": 1, "disc": 2},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def msd_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q")
    for i, case in enumerate(CASES):
        save(root / "imagesTr" / f"{case}.nii.gz", image(i))
        save(root / "labelsTr" / f"{case}.nii.gz", label(i))
    (root / "imagesTr" / f"._{CASES[0]}.nii.gz").write_bytes(b"\0\5\26\7 macOS junk")
    meta = {"labels": {"0": "background", "1": "vertebra", "2": "disc"}, "modality": {"0": "MRI"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def slicer_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q")
    lps = np.diag([-1.0, -1.0, 1.0])
    for i, case in enumerate(("Patient1", "Patient2")):
        header = {
            "space": "left-posterior-superior",
            "space directions": (lps @ AFFINE[:3, :3]).T,
            "space origin": lps @ AFFINE[:3, 3] + i * 50,
            "kinds": ["domain"] * 3,
            "encoding": "gzip",
        }
        nrrd.write(str(root / f"{case}.nrrd"), image(i), header)
        nrrd.write(str(root / f"{case}.seg.nrrd"), label(i), header)
    # Slicer's default name: pairs with the one volume on its grid (by metadata)
    header["space origin"] = lps @ AFFINE[:3, 3] + 200
    nrrd.write(str(root / "Scan3.nrrd"), image(7), header)
    nrrd.write(str(root / "Segmentation.seg.nrrd"), label(7), header)
    return root


def run(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = invoke(["-C", str(root), *args, "--format", "json"])
    assert_clean_stderr(result.output)
    return result.exit_code, json.loads(result.stdout)


# --------------------------------------------------------------------------- layouts


def test_every_layout_config_is_valid(tmp_path: Path) -> None:
    nnunet_folder(tmp_path / "nn")
    for layout in LAYOUTS:
        path = tmp_path / f"{layout}.toml"
        path.write_text(config_text(layout, tmp_path / "nn"))
        load_config(path)  # raises on any invalid key or value


def test_nnunet_layout_pairs_and_verifies_clean(tmp_path: Path) -> None:
    root = nnunet_folder(tmp_path / "Dataset001_Spine")
    code, doc = run(root, "init")
    assert code == 0 and doc["detected"] == "nnunet" and doc["layout"] is None
    code, doc = run(root, "init", "--layout", "nnunet")
    assert code == 0 and doc["layout"] == "nnunet"
    assert ".volsegsync/config.toml" in doc["created"]
    config = load_config(root / ".volsegsync" / "config.toml")
    assert dict(config.verify.labels) == {0: "background", 1: "vertebra", 2: "disc"}
    assert config.roles.volume_dirs == ("imagesTr",)
    code, doc = run(root, "pair")
    assert code == 0, doc
    assert [(p["volume"], p["segmentation"]) for p in doc["pairs"]] == [
        (f"imagesTr/{c}_0000.nii.gz", f"labelsTr/{c}.nii.gz") for c in CASES
    ]
    code, doc = run(root, "verify")
    assert code == 0 and doc["problems"] == [], doc["problems"]
    # export hands it back to nnU-Net with its channel names
    code, doc = run(root, "export", "nnunet", str(tmp_path / "out"))
    assert code == 0 and len(doc["exported"]) == 3
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T2"}
    assert meta["labels"] == {"background": 0, "vertebra": 1, "disc": 2}
    assert doc["placed"] == {"hardlink": 6} or set(doc["placed"]) <= {"reflink", "copy"}


def test_layout_replaces_only_an_untouched_default_config(tmp_path: Path) -> None:
    root = nnunet_folder(tmp_path / "ds")
    cfg = root / ".volsegsync" / "config.toml"
    assert run(root, "init")[0] == 0
    assert cfg.read_text() == DEFAULT_CONFIG_TEXT
    cfg.write_text(DEFAULT_CONFIG_TEXT + "\n# my edit\n")
    result = invoke(["-C", str(root), "init", "--layout", "nnunet"])
    assert result.exit_code == 2 and "--force" in result.output
    assert cfg.read_text().endswith("# my edit\n")
    code, _ = run(root, "init", "--layout", "nnunet", "--force")
    assert code == 0 and "layout: nnunet" in cfg.read_text()
    code, doc = run(root, "init", "--layout", "nnunet")
    assert code == 0 and ".volsegsync/config.toml" not in doc["created"]


def test_msd_layout(tmp_path: Path) -> None:
    root = msd_folder(tmp_path / "Task09_Spine")
    code, doc = run(root, "init")
    assert doc["detected"] == "msd"
    run(root, "init", "--layout", "msd", "--force")
    code, doc = run(root, "verify")
    assert code == 0 and doc["problems"] == [], doc["problems"]
    config = load_config(root / ".volsegsync" / "config.toml")
    assert dict(config.verify.labels) == {0: "background", 1: "vertebra", 2: "disc"}


def test_slicer_layout_pairs_by_name_and_by_grid(tmp_path: Path) -> None:
    root = slicer_folder(tmp_path / "scenes")
    code, doc = run(root, "init")
    assert doc["detected"] == "slicer"
    run(root, "init", "--layout", "slicer")
    code, doc = run(root, "pair")
    pairs = {(p["volume"], p["segmentation"], p["how"]) for p in doc["pairs"]}
    assert pairs == {
        ("Patient1.nrrd", "Patient1.seg.nrrd", "naming"),
        ("Patient2.nrrd", "Patient2.seg.nrrd", "naming"),
        ("Scan3.nrrd", "Segmentation.seg.nrrd", "metadata"),
    }
    code, doc = run(root, "verify")
    assert code == 0, doc["problems"]
    code, doc = run(root, "export", "nnunet", str(tmp_path / "out"))
    assert code == 0 and doc["placed"] == {"convert": 6}
    for case in ("Patient1", "Patient2"):
        img = nib.load(str(tmp_path / "out" / "imagesTr" / f"{case}_0000.nii.gz"))
        lab = nib.load(str(tmp_path / "out" / "labelsTr" / f"{case}.nii.gz"))
        source, _ = nrrd.read(str(root / f"{case}.nrrd"))
        assert np.array_equal(np.asarray(img.dataobj), source)
        assert np.allclose(img.affine, lab.affine)


def test_plain_default_folder_detects_nothing(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    code, doc = run(root, "init", "--no-git")
    assert code == 0 and doc["detected"] is None


@pytest.mark.parametrize(
    "content,message",
    [
        (b"[1, 2", "not valid JSON"),
        (b'{"file_ending": ".mha"}', "reads .nii.gz"),
        (b'{"labels": {"a": {"b": 1}}}', "neither a value nor a name"),
        (b'{"labels": []}', "labels must be an object"),
    ],
)
def test_bad_dataset_json_is_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    root = nnunet_folder(tmp_path / "ds")
    (root / "dataset.json").write_bytes(content)
    result = invoke(["-C", str(root), "init", "--layout", "nnunet"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.count("\n") == 1


def test_dataset_json_fifo_and_link_are_not_read(tmp_path: Path) -> None:
    import os

    root = nnunet_folder(tmp_path / "ds")
    (root / "dataset.json").unlink()
    os.mkfifo(root / "dataset.json")
    proc = run_script(["init", "--layout", "nnunet"], cwd=root)
    assert proc.returncode == 2 and b"not a regular file" in proc.stderr
    (root / "dataset.json").unlink()
    outside = tmp_path / "outside.json"
    outside.write_text('{"labels": {"secret": 7}}')
    os.symlink(outside, root / "dataset.json")
    proc = run_script(["init", "--layout", "nnunet"], cwd=root)
    assert proc.returncode == 2, proc.stderr
    assert_clean_stderr(proc.stderr)


# --------------------------------------------------------------------------- NIfTI labels


def _fault(root: Path, kind: str) -> None:
    target = root / "labelsTr" / f"{CASES[1]}.nii.gz"
    if kind == "unknown_label":
        save(target, label(1, (0, 1, 7)))
    elif kind == "non_integer_labels":
        save(target, label(1).astype(np.float32) + np.float32(0.5))
    elif kind == "only_background":
        save(target, np.zeros(SHAPE, dtype=np.uint8))
    elif kind == "geometry":
        wider = AFFINE.copy()
        wider[0, 0] = 1.0
        save(target, label(1), wider)
    elif kind == "extent":
        shifted = AFFINE.copy()
        shifted[:3, 3] += AFFINE[:3, :3] @ np.array([1.0, 0.0, 0.0])
        save(target, label(1), shifted)
    elif kind == "corrupt":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif kind == "not_an_image":
        target.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    elif kind == "unpaired_volume":
        target.unlink()


@pytest.mark.parametrize(
    "kind",
    [
        "unknown_label",
        "non_integer_labels",
        "only_background",
        "geometry",
        "extent",
        "corrupt",
        "not_an_image",
        "unpaired_volume",
    ],
)
def test_every_verify_check_works_on_nifti_label_maps(tmp_path: Path, kind: str) -> None:
    root = nnunet_folder(tmp_path / "ds")
    run(root, "init", "--layout", "nnunet")
    _fault(root, kind)
    code, doc = run(root, "verify")
    categories = {p["category"] for p in doc["problems"]}
    assert kind in categories, doc["problems"]
    assert code == (0 if kind == "only_background" else 1)
    code, doc = run(root, "export", "nnunet", str(tmp_path / "out"))
    exported = set(doc["exported"])
    if kind == "only_background":  # a warning: still exported
        assert CASES[1] in exported
    else:
        assert CASES[1] not in exported and {CASES[0], CASES[2]} <= exported


# --------------------------------------------------------------------------- channels


def brats_folder(root: Path) -> Path:
    """Four channels per case: complete, one missing, one off-grid, one extra."""
    meta = {
        "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
        "labels": {"background": 0, "edema": 1, "tumor": 2},
        "numTraining": 4,
        "file_ending": ".nii.gz",
    }
    root.mkdir(parents=True)
    git(root, "init", "-q")
    (root / "dataset.json").write_text(json.dumps(meta))
    moved = AFFINE.copy()
    moved[:3, 3] += 3.0
    for i, case in enumerate(("BRATS_001", "BRATS_002", "BRATS_003", "BRATS_004")):
        save(root / "labelsTr" / f"{case}.nii.gz", label(i))
        for ch in range(5 if case == "BRATS_004" else 4):
            if case == "BRATS_002" and ch == 2:
                continue
            a = moved if case == "BRATS_003" and ch == 3 else AFFINE
            save(root / "imagesTr" / f"{case}_{ch:04d}.nii.gz", image(10 * i + ch), a)
    return root


def test_multi_channel_cases(tmp_path: Path) -> None:
    root = brats_folder(tmp_path / "Dataset002_BraTS")
    assert run(root, "init", "--layout", "nnunet")[0] == 0
    config = load_config(root / ".volsegsync" / "config.toml")
    assert config.channels.required == ("0000", "0001", "0002", "0003")
    code, doc = run(root, "pair")
    assert [p["volume"] for p in doc["pairs"]] == [
        f"imagesTr/BRATS_00{i}_0000.nii.gz" for i in range(1, 5)
    ]
    index = (root / "volsegsync.index").read_text().splitlines()
    roles = [line.split("\t")[1] for line in index if line.startswith("BRATS_001\t")]
    assert roles == ["volume:0000", "volume:0001", "volume:0002", "volume:0003", "seg"]
    code, doc = run(root, "verify")
    assert code == 1
    channel_problems = {
        (p["details"].get("case") or Path(p["files"][0]).name[:9], p["message"])
        for p in doc["problems"]
        if p["category"] == "channels"
    }
    by_case = {case for case, _ in channel_problems}
    assert by_case == {"BRATS_002", "BRATS_003", "BRATS_004"}, channel_problems
    messages = " ".join(m for _, m in channel_problems)
    assert "lacks channel 0002" in messages
    assert "undeclared channel 0004" in messages
    assert "not on the grid of channel 0000" in messages and "origin differs" in messages
    assert {p["category"] for p in doc["problems"]} == {"channels"}
    # only the complete case is exported, with its four channels
    out = tmp_path / "out"
    code, doc = run(root, "export", "nnunet", str(out))
    assert code == 1 and doc["exported"] == ["BRATS_001"]
    assert sorted(s["case"] for s in doc["skipped"]) == ["BRATS_002", "BRATS_003", "BRATS_004"]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    images = sorted(p.name for p in (out / "imagesTr").iterdir())
    assert images == [f"BRATS_001_{c:04d}.nii.gz" for c in range(4)]
    from volsegsync.api import iter_pairs, load_pair

    (record,) = iter_pairs(root)
    assert sorted(record.channels) == ["0000", "0001", "0002", "0003"]
    stacked, lab, _ = load_pair(record)
    assert stacked.shape == (4, *SHAPE) and lab.shape == SHAPE
    # a format-1-free round trip: status sees the index as written
    code, doc = run(root, "status")
    assert code == 0, doc


def test_channels_config_is_validated(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    assert invoke(["-C", str(root), "init", "--no-git"]).exit_code == 0
    cfg = root / ".volsegsync" / "config.toml"
    base = cfg.read_text()
    for bad, message in (
        ('[channels]\nrequired = ["a"]\n', "digits"),
        ('[channels]\nsuffix = "_[0-9]+"\nrequired = ["0"]\n', "(?P<channel>"),
        ("[channels]\nnames = 1\n", "unknown key"),
    ):
        cfg.write_text(base + bad)
        result = invoke(["-C", str(root), "verify"])
        assert result.exit_code == 2 and message in result.output, result.output


def test_drift_of_a_nifti_label_map(tmp_path: Path) -> None:
    root = nnunet_folder(tmp_path / "ds")
    run(root, "init", "--layout", "nnunet")
    assert run(root, "pair")[0] == 0
    save(root / "labelsTr" / f"{CASES[0]}.nii.gz", label(77))
    code, doc = run(root, "verify")
    assert code == 1
    assert {p["category"] for p in doc["problems"]} == {"drift_modified"}
    assert doc["problems"][0]["files"] == [f"labelsTr/{CASES[0]}.nii.gz"]
