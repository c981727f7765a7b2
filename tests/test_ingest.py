"""``volsegsync ingest``: deliveries matched by key and by geometry, with real files.

The dataset holds NAME1 and NAME2 on one voxel grid (each with a v1) and NAME3
alone on another grid, without a segmentation. Deliveries are folders outside
the dataset, written with nibabel/pynrrd; the delivery is hashed before and
after every run to prove it is never modified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import (
    NAME1,
    NAME2,
    NAME3,
    assert_clean_stderr,
    git,
    init_with_git_binary,
    invoke,
    make_affine,
    write_nii,
    write_nrrd,
    write_pair,
)
from test_security import SECRET, bz2_bomb, hostile, nrrd_header

from volsegsync.dataset import Dataset
from volsegsync.provenance import read_provenance

GRID3 = make_affine(spacing=(1.0, 1.0, 3.0), origin=(5.0, 0.0, 0.0))
NOWHERE = make_affine(spacing=(2.0, 2.0, 2.0), origin=(-40.0, 0.0, 0.0))


def folder_digest(folder: Path) -> dict[str, str]:
    """Every entry below ``folder``: file content hashes, link targets, kinds."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(folder).as_posix()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = "other"
    return out


@pytest.fixture
def dataset(ds_root: Path) -> Path:
    write_pair(ds_root, NAME1, versions=(1,))
    write_pair(ds_root, NAME2, versions=(1,))
    write_nii(ds_root / f"{NAME3}.nii.gz", affine=GRID3)
    assert invoke(["-C", str(ds_root), "pair"]).exit_code == 1  # NAME3 is unpaired
    git(ds_root, "add", "-A")
    git(ds_root, "commit", "-qm", "start")
    return ds_root


def delivery(tmp_path: Path, dataset: Path, name: str = "Lieferung Jörg 2026") -> Path:
    """The five cases of the issue, in a path with spaces and non-ASCII letters."""
    folder = tmp_path / name
    sub = folder / "Fall 1 é"
    write_nrrd(sub / "Segmentation.seg.nrrd", seed="slicer", affine=GRID3)  # renamed: NAME3
    write_nrrd(folder / f"{NAME1}-v1.nrrd", seed="corrected")  # by key: NAME1 v2
    shutil.copyfile(dataset / f"{NAME2}-v1.nrrd", folder / f"{NAME2}.nrrd")  # identical
    write_nrrd(folder / "mystery.nrrd", affine=NOWHERE)  # on no volume's grid
    write_nrrd(folder / "both.seg.nrrd", seed="both")  # NAME1's and NAME2's grid
    (folder / "notes.txt").write_text("done\n")
    return folder


def run(dataset: Path, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = invoke(["-C", str(dataset), "ingest", *args, "--format", "json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def by_source(doc: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {f["source"]: f for f in doc["files"]}


def test_delivery_is_matched_named_versioned_and_recorded(tmp_path: Path, dataset: Path) -> None:
    folder = delivery(tmp_path, dataset)
    before = folder_digest(folder)
    code, doc = run(dataset, str(folder), "--by", "metadata", "--annotator", "jörg", "-m", "fix")
    assert code == 1  # two files were not ingested
    files = by_source(doc)
    slicer = files["Fall 1 é/Segmentation.seg.nrrd"]
    assert (slicer["status"], slicer["how"]) == ("new", "metadata")
    assert (slicer["target"], slicer["version"]) == (f"{NAME3}-v1.nrrd", 1)
    keyed = files[f"{NAME1}-v1.nrrd"]
    assert (keyed["status"], keyed["how"]) == ("new", "name")
    assert (keyed["target"], keyed["version"]) == (f"{NAME1}-v2.nrrd", 2)
    assert files[f"{NAME2}.nrrd"]["status"] == "unchanged"
    assert files[f"{NAME2}.nrrd"]["target"] == f"{NAME2}-v1.nrrd"
    assert files["mystery.nrrd"]["status"] == "unmatched"
    both = files["both.seg.nrrd"]
    assert both["status"] == "ambiguous"
    assert both["candidates"] == [f"{NAME1}.nii.gz", f"{NAME2}.nii.gz"]
    assert "notes.txt" not in files
    assert doc["index_written"] is True
    assert folder_digest(folder) == before  # FOLDER is never modified

    entries = {e.key: e for e in Dataset.open(dataset).read_index()}
    assert entries[NAME1].segmentation.path == f"{NAME1}-v2.nrrd"  # type: ignore[union-attr]
    assert entries[NAME1].version == 2
    assert [v.version for v in entries[NAME1].older] == [1]
    assert entries[NAME3].segmentation.path == f"{NAME3}-v1.nrrd"  # type: ignore[union-attr]
    rows, notes = read_provenance(dataset / ".volsegsync")
    assert not notes
    row = rows[f"{NAME1}-v2.nrrd"]
    assert row.source == f"{folder.name}/{NAME1}-v1.nrrd"
    assert (row.annotator, row.message) == ("jörg", "fix")
    assert row.digest == entries[NAME1].segmentation.digest  # type: ignore[union-attr]
    assert set(rows) == {f"{NAME1}-v2.nrrd", f"{NAME3}-v1.nrrd"}

    index = (dataset / "volsegsync.index").read_bytes()
    code, again = run(dataset, str(folder), "--by", "metadata")  # idempotent
    assert code == 1
    assert again["summary"].get("new", 0) == 0
    assert by_source(again)[f"{NAME1}-v1.nrrd"]["status"] == "unchanged"
    assert by_source(again)["Fall 1 é/Segmentation.seg.nrrd"]["status"] == "unchanged"
    assert (dataset / "volsegsync.index").read_bytes() == index
    assert folder_digest(folder) == before


def test_dry_run_plans_and_writes_nothing(tmp_path: Path, dataset: Path) -> None:
    folder = delivery(tmp_path, dataset)
    index = (dataset / "volsegsync.index").read_bytes()
    result = invoke(["-C", str(dataset), "ingest", str(folder), "--by", "metadata", "--dry-run"])
    assert result.exit_code == 1
    assert f"plan: {NAME1}-v1.nrrd -> {NAME1}-v2.nrrd (v2; matched by name" in result.stdout
    assert "ambiguous: both.seg.nrrd: matches 2 volumes by geometry" in result.stdout
    assert "would add 2, unchanged 1, not ingested 2" in result.stdout
    assert not (dataset / f"{NAME1}-v2.nrrd").exists()
    assert (dataset / "volsegsync.index").read_bytes() == index
    assert not (dataset / ".volsegsync" / "provenance.tsv").exists()


def test_by_name_leaves_renamed_files_unmatched(tmp_path: Path, dataset: Path) -> None:
    folder = delivery(tmp_path, dataset)
    code, doc = run(dataset, str(folder), "--by", "name")
    files = by_source(doc)
    assert code == 1
    assert files["Fall 1 é/Segmentation.seg.nrrd"]["status"] == "unmatched"
    assert files[f"{NAME1}-v1.nrrd"]["target"] == f"{NAME1}-v2.nrrd"


def test_failing_checks_are_not_added_unless_accepted(tmp_path: Path, dataset: Path) -> None:
    folder = tmp_path / "bad"
    write_nrrd(folder / f"{NAME1}.nrrd", affine=NOWHERE)  # named right, wrong grid
    code, doc = run(dataset, str(folder))
    item = by_source(doc)[f"{NAME1}.nrrd"]
    assert code == 1 and item["status"] == "failed"
    assert {p["category"] for p in item["problems"]} & {"geometry"}
    assert not (dataset / f"{NAME1}-v2.nrrd").exists()
    code, doc = run(dataset, str(folder), "--accept-problems")
    assert code == 0
    assert by_source(doc)[f"{NAME1}.nrrd"]["target"] == f"{NAME1}-v2.nrrd"
    assert (dataset / f"{NAME1}-v2.nrrd").is_file()


def test_reference_field_matches_by_header(tmp_path: Path, dataset: Path) -> None:
    folder = tmp_path / "ref"
    write_nrrd(folder / "seg.nrrd", seed="ref", fields={"ReferenceVolume": f"{NAME2}.nii.gz"})
    code, doc = run(dataset, str(folder), "--by", "metadata")
    assert code == 0
    assert by_source(doc)["seg.nrrd"]["target"] == f"{NAME2}-v2.nrrd"


def test_two_files_for_one_pair_are_ambiguous(tmp_path: Path, dataset: Path) -> None:
    folder = tmp_path / "two"
    write_nrrd(folder / f"{NAME1}.nrrd", seed="a")
    write_nrrd(folder / "x" / f"{NAME1}-v7.nrrd", seed="b")
    code, doc = run(dataset, str(folder))
    assert code == 1
    assert {f["status"] for f in doc["files"]} == {"ambiguous"}


def test_another_dataset_keeps_names_and_versions(tmp_path: Path, dataset: Path) -> None:
    other = init_with_git_binary(tmp_path / "collaborator")
    write_pair(other, NAME1, versions=(1, 2, 3))
    shutil.copyfile(dataset / f"{NAME1}-v1.nrrd", other / f"{NAME1}-v1.nrrd")  # identical
    write_pair(other, NAME2, versions=(1,))
    write_nrrd(other / f"{NAME2}-v1.nrrd", seed="theirs")  # our v1 holds other content
    assert invoke(["-C", str(other), "pair"]).exit_code == 0
    before = folder_digest(other)
    code, doc = run(dataset, str(other))
    assert code == 1
    assert doc["from_dataset"] is True
    files = by_source(doc)
    assert files[f"{NAME1}-v1.nrrd"]["status"] == "unchanged"
    assert files[f"{NAME1}-v2.nrrd"]["target"] == f"{NAME1}-v2.nrrd"
    assert (files[f"{NAME1}-v3.nrrd"]["status"], files[f"{NAME1}-v3.nrrd"]["version"]) == ("new", 3)
    assert files[f"{NAME2}-v1.nrrd"]["status"] == "conflict"
    assert (dataset / f"{NAME1}-v3.nrrd").read_bytes() == (other / f"{NAME1}-v3.nrrd").read_bytes()
    assert folder_digest(other) == before
    assert run(dataset, str(other))[1]["summary"].get("new", 0) == 0


def test_folder_inside_the_dataset_is_refused(dataset: Path) -> None:
    (dataset / "incoming").mkdir()
    result = invoke(["-C", str(dataset), "ingest", "incoming"])
    assert result.exit_code == 2
    assert "inside the dataset" in result.output


def test_log_shows_where_a_version_came_from(tmp_path: Path, dataset: Path) -> None:
    folder = tmp_path / "delivery-7"
    write_nrrd(folder / f"{NAME1}.nrrd", seed="seven")
    code, _ = run(dataset, str(folder), "--annotator", "anna", "-m", "L4 fixed")
    assert code == 0
    git(dataset, "add", "-A")
    git(dataset, "commit", "-qm", "ingest delivery-7")
    result = invoke(["-C", str(dataset), "log", NAME1])
    assert result.exit_code == 0, result.output
    assert f"from delivery-7/{NAME1}.nrrd by anna" in result.stdout
    assert "L4 fixed" in result.stdout


def test_hostile_provenance_lines_are_skipped(dataset: Path) -> None:
    meta = dataset / ".volsegsync"
    (meta / "provenance.tsv").write_text(
        "volsegsync-provenance 1\n../../etc/passwd\tab12ab12\tx\ty\tz\td\n"
        f"{NAME1}-v1.nrrd\tnot-hex\tx\ty\tz\td\nshort\tline\n"
    )
    rows, notes = read_provenance(meta)
    assert rows == {} and len(notes) == 3


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_hostile_delivery(tmp_path: Path, dataset: Path) -> None:
    """Links out of FOLDER, a FIFO and a bomb: under timeout and ulimit -v."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.nrrd").write_text(SECRET)
    write_nrrd(outside / f"{NAME2}.nrrd", seed="outside")
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "leak.nrrd").symlink_to(outside / "secret.nrrd")
    (folder / f"{NAME2}.nrrd").symlink_to(outside / f"{NAME2}.nrrd")
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    os.mkfifo(folder / f"{NAME3}.nrrd")
    (folder / f"{NAME1}.nrrd").write_bytes(nrrd_header("bzip2") + bz2_bomb(1024))
    before = folder_digest(folder)
    r = hostile(dataset, "ingest", str(folder), "--by", "metadata", "--format", "json")
    assert r.code == 1
    assert SECRET not in r.out + r.err
    files = by_source(r.json())
    assert files["leak.nrrd"]["status"] == "skipped"
    assert files[f"{NAME2}.nrrd"]["status"] == "skipped"
    assert files[f"{NAME3}.nrrd"]["status"] == "skipped"
    assert "FIFO" in files[f"{NAME3}.nrrd"]["reason"]
    assert files[f"{NAME1}.nrrd"]["status"] == "failed"
    assert not any(f.startswith("linked/") for f in files)
    assert r.json()["summary"].get("new", 0) == 0
    assert folder_digest(folder) == before
    assert not (dataset / f"{NAME2}-v2.nrrd").exists()


def test_progress_and_text_output_run_in_a_subprocess(tmp_path: Path, dataset: Path) -> None:
    folder = delivery(tmp_path, dataset, "plain")
    proc = subprocess.run(
        ["volsegsync", "ingest", str(folder), "--by", "metadata"],
        cwd=dataset,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert_clean_stderr(proc.stderr)
    assert f"added: {NAME1}-v1.nrrd -> {NAME1}-v2.nrrd" in proc.stdout
