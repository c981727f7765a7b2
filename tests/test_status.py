"""``status``: every kind of change since the index, and the stat cache behind it."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    NAME1,
    NAME2,
    NAME3,
    age_all,
    invoke,
    overwrite_same_size,
    write_nii,
    write_nrrd,
    write_pair,
)

from volsegsync.dataset import Dataset
from volsegsync.ops.snapshot import Pipeline
from volsegsync.ops.status import run_status

V1, S1 = f"{NAME1}.nii.gz", f"{NAME1}-v1.nrrd"
V2, S2 = f"{NAME2}.nii.gz", f"{NAME2}-v1.nrrd"


def status(root: Path) -> tuple[int, dict[str, Any]]:
    result = invoke(["-C", str(root), "status", "--format", "json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def kinds(doc: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(c["kind"], c["paths"]) for c in doc["changes"]]


def test_in_sync(paired: Path) -> None:
    code, doc = status(paired)
    assert code == 0
    assert doc["schema"] == "volsegsync.status/1"
    assert doc["in_sync"] is True
    assert doc["changes"] == []
    assert doc["summary"] == {
        "indexed_pairs": 2,
        "current_pairs": 2,
        "changes": {},
        "missing": 0,
        "untracked": 0,
        "known_problems": 0,
        "errors": 0,
        "warnings": 0,
        "infos": 0,
    }
    result = invoke(["-C", str(paired), "status"])
    assert result.exit_code == 0
    assert result.stdout == "in sync with volsegsync.index (2 pairs)\n"


def test_in_sync_on_both_kinds_of_git_repo(dataset: Path) -> None:
    write_pair(dataset, NAME1)
    assert invoke(["-C", str(dataset), "pair"]).exit_code == 0
    assert status(dataset)[0] == 0
    write_pair(dataset, NAME2)
    code, doc = status(dataset)
    assert code == 1
    assert kinds(doc) == [("new_pair", [V2, S2])]


def test_new_pair(paired: Path) -> None:
    write_pair(paired, NAME3)
    code, doc = status(paired)
    assert code == 1
    assert doc["in_sync"] is False
    assert kinds(doc) == [("new_pair", [f"{NAME3}.nii.gz", f"{NAME3}-v1.nrrd"])]
    assert doc["changes"][0]["message"] == f"new pair: {NAME3}.nii.gz -> {NAME3}-v1.nrrd"
    assert doc["summary"]["changes"] == {"new_pair": 1}
    assert (doc["summary"]["indexed_pairs"], doc["summary"]["current_pairs"]) == (2, 3)


def test_removed_pair_is_missing_until_pruned(paired: Path) -> None:
    """A deleted pair keeps its records: status says so and what to do; pair keeps the
    lines (exit 1); only --prune drops them."""
    (paired / V2).unlink()
    (paired / S2).unlink()
    code, doc = status(paired)
    assert code == 1
    assert kinds(doc) == []
    assert doc["kept"] == [{"path": S2, "state": "missing"}, {"path": V2, "state": "missing"}]
    assert doc["summary"]["missing"] == 2
    before = (paired / "volsegsync.index").read_text()
    result = invoke(["-C", str(paired), "pair"])
    assert result.exit_code == 1
    assert f"kept: {V2}: missing from disk; its record stays in the index" in result.stdout
    assert (paired / "volsegsync.index").read_text() == before
    result = invoke(["-C", str(paired), "pair", "--prune"])
    assert result.exit_code == 0, result.output
    assert f"pruned: {S2}" in result.stdout
    assert f"- {V2} -> {S2}" in result.stdout
    assert V2 not in (paired / "volsegsync.index").read_text()
    assert status(paired)[0] == 0


def test_modified_same_size(paired: Path) -> None:
    size = (paired / S1).stat().st_size
    overwrite_same_size(paired / S1)
    assert (paired / S1).stat().st_size == size
    code, doc = status(paired)
    assert code == 1
    assert kinds(doc) == [("modified", [S1])]
    details = doc["changes"][0]["details"]
    assert details["old_size"] == details["new_size"] == size
    assert details["old_hash"] != details["new_hash"]


def test_modified_other_size(paired: Path) -> None:
    write_nii(paired / V2, shape=(5, 4, 3))
    code, doc = status(paired)
    assert kinds(doc) == [("modified", [V2])]
    assert code == 1


def test_new_segmentation_version(paired: Path) -> None:
    write_nrrd(paired / f"{NAME1}-v2.nrrd")
    code, doc = status(paired)
    assert code == 1
    assert kinds(doc) == [("new_version", [V1, S1, f"{NAME1}-v2.nrrd"])]
    assert doc["changes"][0]["details"] == {
        "volume": V1,
        "old": S1,
        "new": f"{NAME1}-v2.nrrd",
        "old_version": 1,
        "new_version": 2,
    }


def test_deleted_segmentation_is_missing_then_rm_drops_it(paired: Path) -> None:
    (paired / S1).unlink()
    code, doc = status(paired)
    assert code == 1
    assert kinds(doc) == []
    assert doc["kept"] == [{"path": S1, "state": "missing"}]
    result = invoke(["-C", str(paired), "rm", str(paired / S1)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"removed from volsegsync.index: {S1}\n"
    lines = (paired / "volsegsync.index").read_text().splitlines()
    # index format 2 (one line per file): V1's volume line stays, S1's seg line is gone
    assert any(line.split("\t")[1:2] == ["volume"] and line.endswith(f"\t{V1}") for line in lines)
    assert not any(line.endswith(f"\t{S1}") for line in lines)
    code, doc = status(paired)  # the index records the tree: V1 alone is verify's business
    assert code == 0
    assert doc["summary"]["known_problems"] == 1


def test_rm_refuses_a_file_still_on_disk_and_an_unknown_path(paired: Path) -> None:
    result = invoke(["-C", str(paired), "rm", str(paired / S1)])
    assert result.exit_code == 2
    assert "still on disk" in result.stderr and "never deletes image data" in result.stderr
    result = invoke(["-C", str(paired), "rm", str(paired / "nothing.nrrd")])
    assert result.exit_code == 2
    assert "the index records no such file or folder" in result.stderr


def test_lost_partner_after_the_volume_is_dropped(paired: Path) -> None:
    (paired / V1).unlink()
    assert invoke(["-C", str(paired), "pair", "--prune"]).exit_code == 1  # S1 now unpaired
    code, doc = status(paired)
    assert code == 0
    assert doc["summary"]["known_problems"] == 1


def test_renamed_moved_file(paired: Path) -> None:
    (paired / "moved").mkdir()
    os.rename(paired / V1, paired / "moved" / V1)
    code, doc = status(paired)
    assert code == 1
    assert kinds(doc) == [("renamed", [V1, f"moved/{V1}"])]
    assert doc["changes"][0]["details"] == {"from": V1, "to": f"moved/{V1}"}


def test_new_and_removed_unpaired_files(paired: Path) -> None:
    write_nii(paired / f"{NAME3}.nii.gz")
    write_nrrd(paired / "orphan-v1.nrrd")
    code, doc = status(paired)
    assert code == 1
    assert kinds(doc) == [("new_file", [f"{NAME3}.nii.gz"]), ("new_file", ["orphan-v1.nrrd"])]
    assert invoke(["-C", str(paired), "pair"]).exit_code == 1  # unpaired files
    (paired / "orphan-v1.nrrd").unlink()
    assert invoke(["-C", str(paired), "pair", "--prune"]).exit_code == 1
    assert "orphan" not in (paired / "volsegsync.index").read_text()


def test_status_without_index_lists_everything_new(ds_root: Path) -> None:
    write_pair(ds_root, NAME1)
    (ds_root / "volsegsync.index").unlink()
    code, doc = status(ds_root)
    assert code == 1
    assert kinds(doc) == [("new_pair", [V1, S1])]


def test_status_text_and_quiet(paired: Path) -> None:
    write_nrrd(paired / f"{NAME1}-v2.nrrd")
    (paired / "junk-D01012000.nii.gz").write_bytes(b"garbage")
    result = invoke(["-C", str(paired), "status"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"new segmentation version: {V1} -> {NAME1}-v2.nrrd (v2, was {S1})",
        "new unpaired volume: junk-D01012000.nii.gz",
        "2 changes since volsegsync.index was written (2 pairs indexed, 2 now); "
        "run 'volsegsync pair' to record them",
        "2 known problems in the dataset: run 'volsegsync verify'",
    ]
    quiet = invoke(["-C", str(paired), "status", "-q"])
    assert quiet.exit_code == 1
    assert quiet.output == ""


def test_status_counts_content_problems_and_leaves_them_to_verify(paired: Path) -> None:
    (paired / f"{NAME3}.nii.gz").write_bytes(b"garbage")
    code, doc = status(paired)
    assert code == 1
    assert kinds(doc) == [("new_file", [f"{NAME3}.nii.gz"])]
    assert doc["problems"] == []
    assert doc["summary"]["known_problems"] == 2  # not an image; unpaired
    # once indexed as it is, the garbage file is in sync: verify reports it
    assert invoke(["-C", str(paired), "pair"]).exit_code == 1
    code, doc = status(paired)
    assert code == 0 and doc["in_sync"] is True
    result = invoke(["-C", str(paired), "status"])
    assert result.stdout.splitlines()[-1] == (
        "2 known problems in the dataset: run 'volsegsync verify'"
    )


def test_status_is_not_in_sync_with_an_unreadable_file(paired: Path) -> None:
    """Nothing indexed changed, but a file that cannot be read cannot be called in sync."""
    (paired / f"{NAME3}.nii.gz").symlink_to(paired / "nowhere.nii.gz")
    code, doc = status(paired)
    assert code == 1
    assert doc["changes"] == [] and doc["in_sync"] is False
    [p] = doc["problems"]
    assert (p["category"], p["files"]) == ("unreadable", [f"{NAME3}.nii.gz"])


def test_volume_corrupted_in_place(paired: Path) -> None:
    """A volume whose content is no longer an image: modified, flagged, still paired."""
    path = paired / V1
    path.write_bytes(b"\x1f\x8b" + bytes(path.stat().st_size - 2))
    code, doc = status(paired)
    assert code == 1
    assert kinds(doc) == [("modified", [V1])]
    assert doc["problems"] == [] and doc["summary"]["known_problems"] == 1


# --------------------------------------------------------------------------- stat cache


def test_unchanged_stat_is_not_read_again(paired: Path) -> None:
    """Content changed behind an unchanged (size, mtime_ns, inode): the cache answers."""
    path = paired / V1
    st = path.stat()
    code, _ = status(paired)  # fills the cache (already filled by pair)
    assert code == 0
    overwrite_same_size(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    )
    code, doc = status(paired)
    assert code == 0, doc  # not read again: still in sync
    # another file appears: the dataset is scanned and paired anew, yet the
    # unchanged stat of V1 still answers from the stat cache
    write_pair(paired, NAME3)
    code, doc = status(paired)
    assert kinds(doc) == [("new_pair", [f"{NAME3}.nii.gz", f"{NAME3}-v1.nrrd"])]
    assert code == 1
    # a different mtime and the file is read again
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    code, doc = status(paired)
    assert code == 1
    assert kinds(doc) == [
        ("new_pair", [f"{NAME3}.nii.gz", f"{NAME3}-v1.nrrd"]),
        ("modified", [V1]),
    ]


def test_new_inode_is_read_again(paired: Path) -> None:
    path = paired / V1
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[4] ^= 0x01  # the gzip MTIME field: still a valid file
    tmp = paired / "tmp.bin"
    tmp.write_bytes(bytes(data))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)  # same size and mtime, another inode
    assert path.stat().st_ino != st.st_ino
    code, doc = status(paired)
    assert kinds(doc) == [("modified", [V1])]
    assert code == 1


def test_recently_modified_files_are_not_cached(ds_root: Path) -> None:
    """Racy-clean protection: a file written < 2 s ago is not trusted by its stat."""
    write_pair(ds_root, NAME1)
    # "just written", however slow this machine is: an mtime a little ahead of now
    for p in (ds_root / V1, ds_root / S1):
        ahead = time.time_ns() + 30_000_000_000
        os.utime(p, ns=(ahead, ahead))
    assert invoke(["-C", str(ds_root), "pair"]).exit_code == 0
    ds = Dataset.open(ds_root)
    assert Pipeline(ds).trusted_files() == {}
    path = ds_root / V1
    st = path.stat()
    overwrite_same_size(path)  # within the same clock tick, as far as stat can tell
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, doc = status(ds_root)
    assert code == 1
    assert kinds(doc) == [("modified", [V1])]
    assert Pipeline(ds).trusted_files() == {}
    # once old, files are cached
    age_all(ds_root)
    status(ds_root)
    assert sorted(Pipeline(ds).trusted_files()) == [S1, V1]


# --------------------------------------------------------------------------- Python API


def test_run_status_api(paired: Path) -> None:
    ds = Dataset.open(paired / ".volsegsync")  # any folder inside finds the root
    assert ds.root == paired
    report = run_status(ds, jobs=1)
    assert report.in_sync
    assert (report.indexed_pairs, report.current_pairs) == (2, 2)
    shutil.move(paired / S2, paired / f"{NAME2}-v2.nrrd")  # renamed and a new version
    report = run_status(ds, jobs=2)
    assert not report.in_sync
    assert [(c.kind, c.paths) for c in report.changes] == [("renamed", (S2, f"{NAME2}-v2.nrrd"))]


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_status_jobs_option(paired: Path, jobs: str) -> None:
    overwrite_same_size(paired / S2)
    result = invoke(["-C", str(paired), "status", "-j", jobs, "--format", "json"])
    assert result.exit_code == 1
    assert [c["kind"] for c in json.loads(result.stdout)["changes"]] == ["modified"]


def test_renamed_out_of_its_pair_names_both_paths(paired: Path) -> None:
    """A segmentation renamed so that it no longer pairs: moved, and its volume lost it."""
    (paired / S1).rename(paired / "C01-Other-D22061998-v1.nrrd")
    code, doc = status(paired)
    assert code == 1
    assert kinds(doc) == [("lost_partner", [V1]), ("renamed", [S1, "C01-Other-D22061998-v1.nrrd"])]
    [lost] = [c for c in doc["changes"] if c["kind"] == "lost_partner"]
    assert lost["message"] == (
        f"lost its partner: {V1} (was paired with {S1}, since moved to C01-Other-D22061998-v1.nrrd)"
    )


def test_index_changed_in_place_behind_its_old_stat_is_seen(paired: Path) -> None:
    """The index's digest is kept by its stat once the file has settled; an edit in
    place that restores size and mtime still moves the ctime, and is seen."""
    from volsegsync.memo import load_memo

    index = paired / "volsegsync.index"
    old = index.stat()
    time.sleep(max(0.0, old.st_ctime + 2.2 - time.time()))  # settled: older than 2 s
    assert status(paired)[0] == 0
    pipeline = Pipeline(Dataset.open(paired))
    top = load_memo(pipeline.top_path, pipeline.key)
    assert top is not None and top["index_stat"][:3] == [old.st_size, old.st_mtime_ns, old.st_ino]
    text = index.read_text()
    line = next(x for x in text.splitlines() if x.endswith(V1))
    digest = line.split("\t")[4]
    flipped = ("0" if digest[0] != "0" else "1") + digest[1:]
    with index.open("r+") as f:  # same inode, same size
        f.write(text.replace(digest, flipped))
    os.utime(index, ns=(old.st_atime_ns, old.st_mtime_ns))
    new = index.stat()
    assert (new.st_size, new.st_mtime_ns, new.st_ino) == (old.st_size, old.st_mtime_ns, old.st_ino)
    code, doc = status(paired)
    assert kinds(doc) == [("modified", [V1])]
    assert code == 1
