"""``volsegsync handout``: work packages that ``ingest`` recognises when they come back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import NAME1, NAME2, git, invoke, write_nrrd, write_pair
from test_ingest import by_source, folder_digest


@pytest.fixture
def dataset(ds_root: Path) -> Path:
    write_pair(ds_root, NAME1, versions=(1,))
    write_pair(ds_root, NAME2, versions=(1,), vol_dir="vols", seg_dir="segs")
    assert invoke(["-C", str(ds_root), "pair"]).exit_code == 0
    git(ds_root, "add", "-A")
    git(ds_root, "commit", "-qm", "start")
    return ds_root


def handout(dataset: Path, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = invoke(["-C", str(dataset), "handout", *args, "--format", "json"])
    return result.exit_code, json.loads(result.stdout) if result.exit_code == 0 else {}


def test_handout_writes_volumes_segmentations_and_manifest(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "für anna"
    code, doc = handout(dataset, str(out), NAME2, "--with-segmentations")
    assert code == 0
    assert {(f["path"], f["role"]) for f in doc["files"]} == {
        (f"vols/{NAME2}.nii.gz", "volume"),
        (f"segs/{NAME2}-v1.nrrd", "segmentation"),
    }
    vol = out / "vols" / f"{NAME2}.nii.gz"
    assert os.path.samefile(vol, dataset / "vols" / f"{NAME2}.nii.gz")  # a hard link
    seg = out / "segs" / f"{NAME2}-v1.nrrd"
    assert not os.path.samefile(seg, dataset / "segs" / f"{NAME2}-v1.nrrd")  # a copy
    assert seg.read_bytes() == (dataset / "segs" / f"{NAME2}-v1.nrrd").read_bytes()
    manifest = json.loads((out / "handout.json").read_text())
    head = git(dataset, "rev-parse", "HEAD").stdout.strip()
    assert manifest["revision"] == head == doc["revision"]
    assert manifest["schema"] == "volsegsync.handout-manifest/1"
    [item] = manifest["items"]
    assert (item["key"], item["version"]) == (NAME2, 1)
    index = (dataset / "volsegsync.index").read_text()
    assert item["segmentation"]["hash"] in index and item["volumes"][0]["hash"] in index


def test_filter_and_refusals(tmp_path: Path, dataset: Path) -> None:
    code, doc = handout(dataset, str(tmp_path / "c01"), "--filter", "C01*")
    assert code == 0
    assert [f["path"] for f in doc["files"]] == [f"{NAME1}.nii.gz"]
    inside = invoke(["-C", str(dataset), "handout", "package"])
    assert inside.exit_code == 2 and "inside the dataset" in inside.output
    again = invoke(["-C", str(dataset), "handout", str(tmp_path / "c01")])
    assert again.exit_code == 2 and "not an empty folder" in again.output
    unknown = invoke(["-C", str(dataset), "handout", str(tmp_path / "x"), "C99-nothing"])
    assert unknown.exit_code == 2
    assert not (tmp_path / "x").exists()


def test_round_trip_warns_about_an_outdated_delivery(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "package"
    assert handout(dataset, str(out), "--with-segmentations")[0] == 0
    # meanwhile a colleague records v2 of NAME1
    other = tmp_path / "colleague"
    write_nrrd(other / f"{NAME1}.nrrd", seed="colleague")
    assert invoke(["-C", str(dataset), "ingest", str(other)]).exit_code == 0
    git(dataset, "add", "-A")
    git(dataset, "commit", "-qm", "v2 by a colleague")
    # the annotator corrects both handed-out segmentations (based on v1) and sends them back
    write_nrrd(out / f"{NAME1}-v1.nrrd", seed="annotator 1")
    write_nrrd(out / "segs" / f"{NAME2}-v1.nrrd", seed="annotator 2")
    before = folder_digest(out)
    result = invoke(["-C", str(dataset), "ingest", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    files = by_source(doc)
    assert files[f"{NAME1}-v1.nrrd"]["target"] == f"{NAME1}-v3.nrrd"
    assert files[f"segs/{NAME2}-v1.nrrd"]["target"] == f"segs/{NAME2}-v2.nrrd"
    assert files[f"vols/{NAME2}.nii.gz"]["status"] == "ignored"
    [warning] = doc["warnings"]
    assert warning.startswith(f"{NAME1}: the delivery was based on v1")
    assert "but v2 was recorded since" in warning
    assert folder_digest(out) == before
