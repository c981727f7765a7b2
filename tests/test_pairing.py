"""Pairing volumes with segmentations: by naming, versions, ambiguity, and by metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import (
    NAME1,
    NAME2,
    NAME3,
    invoke,
    make_affine,
    write_nii,
    write_nrrd,
    write_pair,
)

from volsegsync.config import NamingConfig, RolesConfig
from volsegsync.dataset import Dataset
from volsegsync.naming import Convention
from volsegsync.ops.pair import run_pair
from volsegsync.pairing import Pair, Pairing, pair_by_naming

CONV = Convention(NamingConfig(), RolesConfig())


def pairing_of(*paths: str) -> Pairing:
    infos = [CONV.parse(p) for p in paths]
    assert all(i is not None for i in infos)
    return pair_by_naming(i for i in infos if i is not None)


def pair_json(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = invoke(["-C", str(root), "pair", "--format", "json", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def categories(doc: dict[str, Any]) -> list[str]:
    return [p["category"] for p in doc["problems"]]


# --------------------------------------------------------------------------- by naming


def test_pairs_by_name_across_folders() -> None:
    result = pairing_of(
        f"vols/{NAME1}.nii.gz", f"segs/{NAME1}.nrrd", f"{NAME2}.nii", f"x/{NAME2}-v1.seg.nrrd"
    )
    assert result.pairs == [
        Pair(f"vols/{NAME1}.nii.gz", f"segs/{NAME1}.nrrd", None, "naming"),
        Pair(f"{NAME2}.nii", f"x/{NAME2}-v1.seg.nrrd", 1, "naming"),
    ]
    assert result.problems == []


def test_highest_version_wins_older_are_listed() -> None:
    result = pairing_of(
        f"{NAME1}.nii.gz",
        f"{NAME1}-v2.nrrd",
        f"{NAME1}-v10.nrrd",
        f"{NAME1}-v1.nrrd",
        f"{NAME1}-v3.seg.nrrd",
        f"{NAME1}.nrrd",
    )
    # v1..v3 and v10: a gap of v4..v9
    assert result.pairs == [
        Pair(
            f"{NAME1}.nii.gz",
            f"{NAME1}-v10.nrrd",
            10,
            "naming",
            (f"{NAME1}.nrrd", f"{NAME1}-v1.nrrd", f"{NAME1}-v2.nrrd", f"{NAME1}-v3.seg.nrrd"),
        ),
    ]
    [gap] = result.problems
    assert gap.category == "version_gap"
    assert gap.severity == "warning"
    assert gap.details == {"versions": [1, 2, 3, 10], "missing": [4, 5, 6, 7, 8, 9]}


def test_two_volume_files_for_one_name_are_ambiguous() -> None:
    result = pairing_of(
        f"{NAME1}.nii", f"{NAME1}.nii.gz", f"{NAME1}-v1.nrrd", f"{NAME2}.nii.gz", f"{NAME2}-v1.nrrd"
    )
    assert result.pairs == [Pair(f"{NAME2}.nii.gz", f"{NAME2}-v1.nrrd", 1, "naming")]
    [p] = result.problems
    assert p.category == "ambiguous"
    assert p.severity == "error"
    assert p.files == (f"{NAME1}.nii", f"{NAME1}.nii.gz")
    assert p.message == (
        f"2 volumes share one name, so none is paired: {NAME1}.nii, {NAME1}.nii.gz"
    )


def test_two_segmentation_files_of_one_version() -> None:
    result = pairing_of(
        f"{NAME1}.nii.gz", f"{NAME1}-v1.nrrd", f"{NAME1}-v2.nrrd", f"{NAME1}-v2.seg.nrrd"
    )
    assert result.pairs == []
    [p] = result.problems
    assert p.category == "duplicate_version"
    assert p.files == (f"{NAME1}-v2.nrrd", f"{NAME1}-v2.seg.nrrd")
    assert p.details == {"version": 2}
    assert p.message == f"2 files claim version 2: {NAME1}-v2.nrrd, {NAME1}-v2.seg.nrrd"


def test_duplicate_older_version_still_pairs_the_newest() -> None:
    result = pairing_of(
        f"{NAME1}.nii.gz", f"{NAME1}-v1.nrrd", f"{NAME1}-v1.seg.nrrd", f"{NAME1}-v2.nrrd"
    )
    assert [(p.volume, p.segmentation) for p in result.pairs] == [
        (f"{NAME1}.nii.gz", f"{NAME1}-v2.nrrd")
    ]
    assert [p.category for p in result.problems] == ["duplicate_version"]


def test_unpaired_files() -> None:
    result = pairing_of(
        f"{NAME1}.nii.gz", f"{NAME2}-v1.nrrd", f"{NAME3}.nii.gz", f"{NAME3}-v1.nrrd"
    )
    assert result.unpaired_volumes == [f"{NAME1}.nii.gz"]
    assert result.unpaired_segmentations == [f"{NAME2}-v1.nrrd"]
    assert result.problems == []


# --------------------------------------------------------------------------- end to end


def test_pair_cli_by_naming(ds_root: Path) -> None:
    write_pair(ds_root, NAME1, versions=(1, 2), vol_dir="volumes", seg_dir="segmentations")
    write_pair(ds_root, NAME2, versions=(1,), seg_ext=".seg.nrrd")
    code, doc = pair_json(ds_root)
    assert code == 0
    assert doc["schema"] == "volsegsync.pair/1"
    assert doc["pairs"] == [  # in order of the name, whatever the folder
        {
            "volume": f"volumes/{NAME1}.nii.gz",
            "segmentation": f"segmentations/{NAME1}-v2.nrrd",
            "version": 2,
            "how": "naming",
            "older": [f"segmentations/{NAME1}-v1.nrrd"],
        },
        {
            "volume": f"{NAME2}.nii.gz",
            "segmentation": f"{NAME2}-v1.seg.nrrd",
            "version": 1,
            "how": "naming",
            "older": [],
        },
    ]
    assert doc["problems"] == []
    assert doc["written"] is True
    assert doc["changed"] is True
    assert doc["summary"]["files"] == 5
    assert doc["summary"]["pairs"] == 2
    assert doc["summary"]["errors"] == 0
    text = invoke(["-C", str(ds_root), "pair"]).stdout.splitlines()
    assert len(text) == 1  # nothing gained or lost: no pair is listed
    assert text[0].startswith("2 pairs, 0 volumes and 0 segmentations unpaired, 5 files (")
    assert text[0].endswith("; volsegsync.index unchanged")
    write_nrrd(ds_root / "segmentations" / f"{NAME1}-v3.nrrd")
    (ds_root / f"{NAME2}.nii.gz").unlink()
    result = invoke(["-C", str(ds_root), "pair"])
    assert result.exit_code == 1  # a recorded file is missing
    text = result.stdout.splitlines()
    assert text[:2] == [  # as the index's diff shows it, sorted by volume
        f"- volumes/{NAME1}.nii.gz -> segmentations/{NAME1}-v2.nrrd",
        f"+ volumes/{NAME1}.nii.gz -> segmentations/{NAME1}-v3.nrrd  (v3)",
    ]
    assert f"kept: {NAME2}.nii.gz: missing from disk; its record stays in the index" in text
    assert text[-1].endswith("; wrote volsegsync.index")


def test_pair_cli_ambiguity_nii_and_nii_gz(ds_root: Path) -> None:
    write_pair(ds_root, NAME1)
    write_nii(ds_root / f"{NAME1}.nii", seed="other")
    write_pair(ds_root, NAME2)
    code, doc = pair_json(ds_root)
    assert code == 1
    assert categories(doc) == ["ambiguous"]
    assert doc["problems"][0]["files"] == [f"{NAME1}.nii", f"{NAME1}.nii.gz"]
    assert [p["volume"] for p in doc["pairs"]] == [f"{NAME2}.nii.gz"]
    index = (ds_root / "volsegsync.index").read_text()
    assert NAME1 not in index


def test_pair_cli_duplicate_version(ds_root: Path) -> None:
    write_pair(ds_root, NAME1, versions=(2,))
    write_nrrd(ds_root / f"{NAME1}-v2.seg.nrrd")
    code, doc = pair_json(ds_root)
    assert code == 1
    assert categories(doc) == ["duplicate_version"]
    assert doc["pairs"] == []


def test_pair_cli_version_gap_is_a_warning(ds_root: Path) -> None:
    write_pair(ds_root, NAME1, versions=(1, 3))
    code, doc = pair_json(ds_root)
    assert code == 0
    [p] = doc["problems"]
    assert p["category"] == "version_gap"
    assert p["severity"] == "warning"
    assert p["message"] == "segmentation versions v1, v3 skip v2"
    assert doc["summary"]["warnings"] == 1
    assert doc["pairs"][0]["segmentation"] == f"{NAME1}-v3.nrrd"
    result = invoke(["-C", str(ds_root), "pair"])
    assert "warning: [version_gap] segmentation versions v1, v3 skip v2" in result.stdout


def test_pair_cli_unpaired_listed_exit_1(ds_root: Path) -> None:
    write_pair(ds_root, NAME1)
    write_nii(ds_root / f"{NAME2}.nii.gz")
    write_nrrd(ds_root / f"{NAME3}-v1.nrrd")
    code, doc = pair_json(ds_root)
    assert code == 1
    assert doc["unpaired_volumes"] == [f"{NAME2}.nii.gz"]
    assert doc["unpaired_segmentations"] == [f"{NAME3}-v1.nrrd"]
    assert sorted(categories(doc)) == ["unpaired_segmentation", "unpaired_volume"]
    result = invoke(["-C", str(ds_root), "pair"])
    assert result.exit_code == 1
    assert f"error: [unpaired_volume] {NAME2}.nii.gz: volume without segmentation" in (
        result.stdout
    )
    assert f"error: [unpaired_segmentation] {NAME3}-v1.nrrd: segmentation without volume" in (
        result.stdout
    )
    assert "1 pairs, 1 volumes and 1 segmentations unpaired" in result.stdout


def test_pair_dry_run_writes_nothing(ds_root: Path) -> None:
    write_pair(ds_root, NAME1)
    before = (ds_root / "volsegsync.index").read_bytes()
    code, doc = pair_json(ds_root, "--dry-run")
    assert code == 0
    assert (doc["changed"], doc["written"]) == (True, False)
    assert (ds_root / "volsegsync.index").read_bytes() == before


def test_pair_nnunet_layout(ds_root: Path) -> None:
    (ds_root / ".volsegsync" / "config.toml").write_text(
        """
[naming]
fields = ["case"]
[naming.patterns]
case = "case[0-9]{3}"
[roles]
volume_extensions = [".nii.gz"]
segmentation_extensions = [".nii.gz"]
volume_dirs = ["imagesTr"]
segmentation_dirs = ["labelsTr"]
volume_suffix = "_0000"
"""
    )
    for case in ("case001", "case002"):
        write_nii(ds_root / "imagesTr" / f"{case}_0000.nii.gz")
        write_nii(ds_root / "labelsTr" / f"{case}.nii.gz")
    write_nii(ds_root / "other" / "case003.nii.gz")
    code, doc = pair_json(ds_root)
    assert code == 1  # the file in other/ has no role
    assert doc["pairs"] == [
        {
            "volume": f"imagesTr/{c}_0000.nii.gz",
            "segmentation": f"labelsTr/{c}.nii.gz",
            "version": None,
            "how": "naming",
            "older": [],
        }
        for c in ("case001", "case002")
    ]
    [p] = doc["problems"]
    assert p["category"] == "naming"
    assert p["files"] == ["other/case003.nii.gz"]
    assert "used by volumes and segmentations alike" in p["message"]
    assert invoke(["-C", str(ds_root), "check-names"]).exit_code == 1


# --------------------------------------------------------------------------- by metadata

A1 = make_affine((1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
A2 = make_affine((1.0, 1.0, 2.0), (10.0, -5.0, 3.0))


def test_metadata_pairs_by_matching_geometry(ds_root: Path) -> None:
    write_nii(ds_root / f"{NAME1}.nii.gz", affine=A1)
    write_nii(ds_root / f"{NAME2}.nii.gz", affine=A2)
    write_nrrd(ds_root / "masks" / "liver mask.nrrd", affine=A2)
    write_nrrd(ds_root / "masks" / "Segmentation.seg.nrrd", affine=A1)
    code, doc = pair_json(ds_root)  # by naming: nothing pairs
    assert code == 1
    assert doc["pairs"] == []
    code, doc = pair_json(ds_root, "--by", "metadata")
    assert code == 0, doc["problems"]
    assert doc["pairs"] == [
        {
            "volume": f"{NAME1}.nii.gz",
            "segmentation": "masks/Segmentation.seg.nrrd",
            "version": None,
            "how": "metadata",
            "older": [],
        },
        {
            "volume": f"{NAME2}.nii.gz",
            "segmentation": "masks/liver mask.nrrd",
            "version": None,
            "how": "metadata",
            "older": [],
        },
    ]
    result = invoke(["-C", str(ds_root), "pair", "--by", "metadata", "--dry-run"])
    assert "unchanged" in result.stdout  # the JSON run above wrote this index
    (ds_root / "volsegsync.index").unlink()
    result = invoke(["-C", str(ds_root), "pair", "--by", "metadata"])
    assert f"+ {NAME1}.nii.gz -> masks/Segmentation.seg.nrrd  [by metadata]" in result.stdout


def test_metadata_from_config(ds_root: Path) -> None:
    config = ds_root / ".volsegsync" / "config.toml"
    config.write_text(config.read_text().replace('by = "naming"', 'by = "metadata"'))
    write_nii(ds_root / f"{NAME1}.nii.gz", affine=A1)
    write_nrrd(ds_root / "mask.nrrd", affine=A1)
    ds = Dataset.open(ds_root)
    assert ds.config.pairing.by == "metadata"
    report = run_pair(ds)
    assert report.snapshot.pairing.pairs == [Pair(f"{NAME1}.nii.gz", "mask.nrrd", None, "metadata")]
    assert report.snapshot.problems == []
    # --by naming overrides the config
    assert run_pair(ds, by="naming").snapshot.pairing.unpaired_volumes == [f"{NAME1}.nii.gz"]


def test_metadata_explicit_reference_field(ds_root: Path) -> None:
    write_nii(ds_root / f"{NAME1}.nii.gz", affine=A1)
    write_nii(ds_root / "sub" / f"{NAME2}.nii.gz", affine=A1)  # same geometry
    write_nrrd(ds_root / "mask.nrrd", affine=A1, fields={"volume": f"{NAME2}.nii.gz"})
    assert f"volume:={NAME2}.nii.gz".encode() in (ds_root / "mask.nrrd").read_bytes()
    code, doc = pair_json(ds_root, "--by", "metadata")
    assert doc["pairs"] == [
        {
            "volume": f"sub/{NAME2}.nii.gz",
            "segmentation": "mask.nrrd",
            "version": None,
            "how": "metadata",
            "older": [],
        },
    ]
    assert categories(doc) == ["unpaired_volume"]
    assert doc["unpaired_volumes"] == [f"{NAME1}.nii.gz"]
    assert code == 1


def test_metadata_same_geometry_twice_is_ambiguous(ds_root: Path) -> None:
    write_nii(ds_root / f"{NAME1}.nii.gz", affine=A1)
    write_nii(ds_root / f"{NAME2}.nii.gz", affine=A1)
    write_nrrd(ds_root / "mask.nrrd", affine=A1)
    code, doc = pair_json(ds_root, "--by", "metadata")
    assert code == 1
    assert doc["pairs"] == []
    ambiguous = [p for p in doc["problems"] if p["category"] == "ambiguous"]
    assert [p["files"] for p in ambiguous] == [["mask.nrrd", f"{NAME1}.nii.gz", f"{NAME2}.nii.gz"]]
    assert ambiguous[0]["message"] == (
        f"mask.nrrd matches 2 volumes by geometry, so it is not paired: "
        f"{NAME1}.nii.gz, {NAME2}.nii.gz"
    )
    assert doc["unpaired_segmentations"] == ["mask.nrrd"]


def test_metadata_two_segmentations_for_one_volume_are_ambiguous(ds_root: Path) -> None:
    write_nii(ds_root / f"{NAME1}.nii.gz", affine=A1)
    write_nrrd(ds_root / "a.nrrd", affine=A1)
    write_nrrd(ds_root / "b.nrrd", affine=A1)
    code, doc = pair_json(ds_root, "--by", "metadata")
    assert code == 1
    assert doc["pairs"] == []
    [p] = [p for p in doc["problems"] if p["category"] == "ambiguous"]
    assert p["files"] == [f"{NAME1}.nii.gz", "a.nrrd", "b.nrrd"]


def test_metadata_does_not_undo_naming_pairs(ds_root: Path) -> None:
    write_pair(ds_root, NAME1)
    write_nii(ds_root / f"{NAME2}.nii.gz", affine=A2)
    write_nrrd(ds_root / "mask.nrrd", affine=A2)
    code, doc = pair_json(ds_root, "--by", "metadata")
    assert code == 0
    assert [(p["volume"], p["how"]) for p in doc["pairs"]] == [
        (f"{NAME1}.nii.gz", "naming"),
        (f"{NAME2}.nii.gz", "metadata"),
    ]
