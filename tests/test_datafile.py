"""Detached NRRD data files (issue 6, point 1): a ``.nhdr`` header and its ``.raw``
(or ``.raw.gz``) data file are one segmentation, hashed and recorded together.

Files are real (pynrrd ``detached_header=True``, nibabel), the dataset lives in a
folder with spaces and non-ASCII letters inside a real git repository (the ``git``
binary), and hostile data files are checked under ``timeout`` and ``ulimit -v``
(:func:`test_security.hostile`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import nrrd
import numpy as np
import pytest
import xxhash
from conftest import NAME1, NAME2, age_all, git, init_with_git_binary, write_nii, write_nrrd
from test_security import hostile

from volsegsync.dataset import Dataset
from volsegsync.index import read_index
from volsegsync.ops.snapshot import Pipeline

LPS_HEADER: dict[str, Any] = {
    "space": "left-posterior-superior",
    "space directions": np.diag([-1.0, -1.0, 2.0]),
    "space origin": np.zeros(3),
}


def write_nhdr(path: Path, seed: int, encoding: str = "gzip") -> Path:
    """A label map as a detached header (``path``) and its data file; returns the data file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(0, 3, (4, 4, 3)).astype(np.uint8)
    nrrd.write(str(path), data, {**LPS_HEADER, "encoding": encoding}, detached_header=True)
    fields = nrrd.read_header(str(path))
    return path.parent / str(fields["data file"])


def digest(path: Path) -> str:
    return xxhash.xxh3_128_hexdigest(path.read_bytes())


def cli(root: Path, *args: str) -> Any:
    """``volsegsync ARGS --format json`` as a user runs it (bounded time and memory)."""
    run = hostile(root, *args, "--format", "json")
    assert run.code in (0, 1), (args, run.code, run.out, run.err)
    return run.json()


def data_lines(root: Path) -> dict[str, tuple[str, str]]:
    """path -> (version column, hash) of the index's data lines."""
    out = {}
    for line in (root / "volsegsync.index").read_text().splitlines():
        cols = line.split("\t")
        if len(cols) == 6 and cols[1] == "data":
            out[cols[5]] = (cols[2], cols[4])
    return out


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose dataset is its sub folder ``Bänder set``."""
    top = tmp_path / "my repo"
    top.mkdir()
    git(top, "init", "-q")
    git(top, "config", "user.email", "t@example.org")
    git(top, "config", "user.name", "T")
    return top


@pytest.fixture
def ds(repo: Path) -> Path:
    """Volume + segmentation v1 (gzip data) and v2 (raw data), in folders with spaces;
    a second, attached pair beside them."""
    root = repo / "Bänder set"
    root.mkdir()
    from volsegsync.ops.init import init_dataset

    init_dataset(root)
    write_nii(root / "vol s" / f"{NAME1}.nii.gz")
    write_nhdr(root / "seg ü" / f"{NAME1}-v1.nhdr", 1, "gzip")
    write_nhdr(root / "seg ü" / f"{NAME1}-v2.nhdr", 2, "raw")
    write_nii(root / "vol s" / f"{NAME2}.nii.gz")
    write_nrrd(root / "seg ü" / f"{NAME2}-v1.nrrd")
    age_all(root)
    return root


V1 = f"seg ü/{NAME1}-v1.nhdr"
V2 = f"seg ü/{NAME1}-v2.nhdr"
RAW1 = f"seg ü/{NAME1}-v1.raw.gz"
RAW2 = f"seg ü/{NAME1}-v2.raw"


def set_age(path: Path, seconds_ago: float) -> None:
    t = int((1_700_000_000 - seconds_ago) * 10**9)
    os.utime(path, ns=(t, t))


# --------------------------------------------------------------------------- recorded


def test_pair_records_header_and_data_of_every_version(ds: Path) -> None:
    doc = cli(ds, "pair")
    assert doc["problems"] == [] and doc["written"]
    assert data_lines(ds) == {
        RAW1: ("1", digest(ds / RAW1)),
        RAW2: ("2", digest(ds / RAW2)),
    }
    entry = next(e for e in read_index(ds / "volsegsync.index") if e.key == NAME1)
    assert entry.seg_data is not None and entry.seg_data.path == RAW2
    assert entry.older[0].data is not None and entry.older[0].data.path == RAW1
    assert entry.seg_data.size == (ds / RAW2).stat().st_size
    status = cli(ds, "status")
    assert status["in_sync"] and status["changes"] == []


def test_data_files_are_no_stray_files(ds: Path) -> None:
    """A data file belongs to its header: check-names and verify say nothing of it."""
    cli(ds, "pair")
    names = cli(ds, "check-names")
    assert names["problems"] == []
    verify = cli(ds, "verify")
    assert [p for p in verify["problems"] if p["category"] != "tiny_label"] == []
    assert not any(".raw" in f for p in verify["problems"] for f in p["files"])


def test_a_nrrd_holding_a_data_file_field_is_detached_too(ds: Path) -> None:
    """Not only ``.nhdr``: a ``.nrrd`` whose header names a data file (seen in the
    bytes read while hashing)."""
    seg = ds / "seg ü" / f"{NAME2}-v1.nrrd"
    (ds / "seg ü" / "labels.raw").write_bytes(bytes(range(48)))
    seg.write_bytes(
        b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 3\nencoding: raw\n"
        b"space: left-posterior-superior\nspace directions: (-1,0,0) (0,-1,0) (0,0,2)\n"
        b"space origin: (0,0,0)\ndata file: labels.raw\n\n"
    )
    cli(ds, "pair")
    assert data_lines(ds)["seg ü/labels.raw"] == ("1", digest(ds / "seg ü" / "labels.raw"))


def test_attached_nrrd_datasets_keep_no_data_memo(tmp_path: Path) -> None:
    """Without detached headers the data stage costs nothing: no memo, no header read."""
    root = init_with_git_binary(tmp_path / "plain")
    write_nii(root / f"{NAME1}.nii.gz")
    write_nrrd(root / f"{NAME1}-v1.nrrd")
    age_all(root)
    ds = Dataset.open(root)
    Pipeline(ds).update(jobs=1)
    pipeline = Pipeline(ds)
    snap = pipeline.update(jobs=1)
    assert snap.top["data"] == 0
    assert not (ds.state_dir / "pipeline" / "data.marshal").exists()
    assert "\tdata\t" not in (cli(root, "pair") and (root / "volsegsync.index").read_text())


# --------------------------------------------------------------------------- changes


@pytest.mark.parametrize("which", [RAW1, RAW2])
@pytest.mark.parametrize("how", ["zero", "edit"])
def test_a_data_file_change_is_a_change_of_the_pair(ds: Path, which: str, how: str) -> None:
    cli(ds, "pair")
    header = V1 if which == RAW1 else V2
    header_stat = (ds / header).stat()
    data = ds / which
    size = data.stat().st_size
    if how == "zero":  # same size, same mtime second: only the inode's content differs
        data.write_bytes(b"\0" * size)
    else:
        data.write_bytes(data.read_bytes()[:-1] + b"\x07")
    set_age(data, 100)
    assert (ds / header).stat().st_mtime_ns == header_stat.st_mtime_ns  # header untouched
    status = cli(ds, "status")
    assert not status["in_sync"]
    assert [(c["kind"], c["paths"]) for c in status["changes"]] == [("modified", [which])]
    verify = cli(ds, "verify", "--fast")
    assert ("drift_modified", [which]) in [(p["category"], p["files"]) for p in verify["problems"]]
    cli(ds, "pair")
    assert data_lines(ds)[which][1] == digest(data)
    assert cli(ds, "status")["in_sync"]


def test_touching_a_data_file_changes_nothing(ds: Path) -> None:
    cli(ds, "pair")
    index = (ds / "volsegsync.index").read_text()
    set_age(ds / RAW2, 50)
    assert cli(ds, "status")["in_sync"]
    cli(ds, "pair")
    assert (ds / "volsegsync.index").read_text() == index


def test_a_header_naming_another_data_file_records_it(ds: Path) -> None:
    cli(ds, "pair")
    other = ds / "seg ü" / "other.raw"
    shutil.copy(ds / RAW2, other)
    other.write_bytes(other.read_bytes()[::-1])
    header = ds / V2
    rename_data(header, "other.raw")
    changes = cli(ds, "status")["changes"]
    assert [(c["kind"], c["paths"], c["details"].get("segmentation")) for c in changes] == [
        ("modified", [V2], None),
        ("data_named", ["seg ü/other.raw"], V2),
        ("data_dropped", [RAW2], V2),
    ]
    cli(ds, "pair")
    lines = data_lines(ds)
    assert RAW2 not in lines and lines["seg ü/other.raw"] == ("2", digest(other))
    assert cli(ds, "status")["in_sync"]
    other.rename(ds / "seg ü" / "moved.raw")  # moved, and the header follows: a rename
    rename_data(header, "moved.raw")
    assert [(c["kind"], c["paths"]) for c in cli(ds, "status")["changes"]] == [
        ("modified", [V2]),
        ("renamed", ["seg ü/other.raw", "seg ü/moved.raw"]),
    ]


# --------------------------------------------------------------------------- hostile / broken


def rename_data(header: Path, name: str) -> None:
    """Make ``header`` name another data file."""
    text = header.read_text()
    old = next(ln for ln in text.splitlines() if ln.startswith("data file: "))
    header.write_text(text.replace(old, f"data file: {name}"))


def make_bad(ds: Path, kind: str, secret: Path) -> str:
    """Break v2's data file; returns the line's telling words."""
    data = ds / RAW2
    header = ds / V2
    if kind == "missing":
        data.unlink()
        return "file not found"
    data.unlink()
    if kind == "fifo":
        os.mkfifo(data)
        return "FIFO"
    if kind == "link_out":
        data.symlink_to(secret)
        return "leading out of the dataset"
    if kind == "dev_zero":
        data.symlink_to("/dev/zero")
        return "leading out of the dataset"
    name = {"outside": "../vol s/x.raw", "absolute": str(secret)}[kind]
    rename_data(header, name)
    return "only a single file in the header's own folder"


@pytest.mark.parametrize("kind", ["missing", "fifo", "link_out", "dev_zero", "outside", "absolute"])
def test_a_bad_data_file_is_one_line_naming_its_header(ds: Path, tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-data-file-content")
    cli(ds, "pair")
    words = make_bad(ds, kind, secret)
    for command in (["pair"], ["status"], ["verify", "--fast"], ["verify"]):
        doc = cli(ds, *command)
        lines = [p for p in doc["problems"] if p["files"] == [V2]]
        if command == ["status"] and kind in ("outside", "absolute"):
            continue  # status lists unreadable files only; this is corrupt (verify's)
        assert len(lines) == 1, (command, doc["problems"])
        assert words in lines[0]["message"] and lines[0]["message"].startswith(V2)
        assert lines[0]["category"] in ("unreadable", "corrupt")
        assert "TOP-SECRET" not in json.dumps(doc)
        if command == ["pair"]:  # the batch goes on: the other pair is recorded
            assert NAME2 in (ds / "volsegsync.index").read_text()
    index = (ds / "volsegsync.index").read_text()
    if kind in ("missing", "fifo", "link_out", "dev_zero"):
        assert RAW2 in data_lines(ds)  # its record stays, nothing is lost
        status = cli(ds, "status")
        assert [k["path"] for k in status["kept"]] == [RAW2]
    assert str(secret) not in index and "TOP-SECRET" not in index


# --------------------------------------------------------------------------- store, git


def object_path(ds: Path, path: str) -> Path:
    d = digest(ds / path)
    found = list((ds / ".volsegsync").rglob(d[2:]))
    assert len(found) == 1, found
    return found[0]


def test_store_checkout_fsck_gc_keep_the_data_file(ds: Path) -> None:
    doc = cli(ds, "pair")
    assert doc["store"]["problems"] == []
    raw1, raw2 = (ds / RAW1).read_bytes(), (ds / RAW2).read_bytes()
    stored = object_path(ds, RAW2)
    (ds / RAW2).unlink()
    (ds / RAW1).unlink()
    (ds / V1).unlink()
    checkout = cli(ds, "checkout")
    restored = {c["path"] for c in checkout["changes"]}
    assert {RAW1, RAW2, V1} <= restored
    assert (ds / RAW2).read_bytes() == raw2 and (ds / RAW1).read_bytes() == raw1
    # rollback to v1: header and data file of v1 are what the pair now uses
    (ds / RAW1).unlink()
    rollback = cli(ds, "checkout", f"{V2}@v1")
    assert rollback["index_written"]
    assert (ds / RAW1).read_bytes() == raw1
    assert data_lines(ds)[RAW1] == ("1", digest(ds / RAW1))
    assert cli(ds, "status")["in_sync"]
    assert cli(ds, "fsck")["problems"] == []
    gc = cli(ds, "gc", "--yes")
    assert gc["removed"] == [] and stored.exists()
    stored.chmod(0o644)
    stored.write_bytes(b"\0" * len(raw2))  # a damaged object is found by fsck
    fsck = cli(ds, "fsck")
    assert "corrupt" in [p["kind"] for p in fsck["problems"]]  # moved aside: then missing
    assert {p["digest"] for p in fsck["problems"]} == {digest(ds / RAW2)}


def test_git_revisions_diff_log_and_checkout_rev(repo: Path, ds: Path) -> None:
    cli(ds, "pair")
    git(repo, "add", "-A", ".")
    git(repo, "reset", "-q", "--", "Bänder set/vol s", "Bänder set/seg ü")
    git(repo, "commit", "-qm", "first")
    old = (ds / RAW2).read_bytes()
    (ds / RAW2).write_bytes(bytes(b ^ 1 for b in old))
    set_age(ds / RAW2, 10)
    cli(ds, "pair")
    git(repo, "commit", "-qam", "data only")
    diff = cli(ds, "diff", "HEAD~1", "HEAD")
    assert [(c["kind"], c["paths"], c["warning"]) for c in diff["changes"]] == [
        ("modified", [RAW2], True)
    ]
    change = diff["changes"][0]
    assert change["new"]["segmentation"]["path"] == V2  # a change of that pair
    log = cli(ds, "log", f"vol s/{NAME1}.nii.gz")
    assert [(c["kind"], c["paths"]) for c in log["commits"][0]["changes"]] == [("modified", [RAW2])]
    checkout = cli(ds, "checkout", "HEAD~1")
    assert {c["path"] for c in checkout["changes"]} == {RAW2}
    assert (ds / RAW2).read_bytes() == old
    assert cli(ds, "status")["in_sync"]


def test_a_header_naming_another_data_file_between_revisions(repo: Path, ds: Path) -> None:
    """``diff`` and ``log`` between commits made by the git binary name the data file a
    header stopped naming and the one it names now, beside the header's own change."""
    cli(ds, "pair")
    git(repo, "add", "-A", ".")
    git(repo, "reset", "-q", "--", "Bänder set/vol s", "Bänder set/seg ü")
    git(repo, "commit", "-qm", "first")
    other = ds / "seg ü" / "other.raw"
    other.write_bytes((ds / RAW2).read_bytes()[::-1])
    rename_data(ds / V2, "other.raw")
    cli(ds, "pair")
    git(repo, "commit", "-qam", "v2 names other.raw")
    expected = [
        ("modified", [V2]),
        ("data_named", ["seg ü/other.raw"]),
        ("data_dropped", [RAW2]),
    ]
    diff = cli(ds, "diff", "HEAD~1", "HEAD")
    assert [(c["kind"], c["paths"]) for c in diff["changes"]] == expected
    assert {c["details"].get("segmentation") for c in diff["changes"][1:]} == {V2}
    log = cli(ds, "log", V2)
    assert [(c["kind"], c["paths"]) for c in log["commits"][0]["changes"]] == expected
    markdown = hostile(ds, "diff", "HEAD~1", "HEAD", "--format", "markdown")
    assert markdown.code in (0, 1), markdown.err
    assert "Data files a header now names" in markdown.out and "other.raw" in markdown.out


def test_two_index_lines_of_one_key_keep_their_data_files() -> None:
    """An index that recorded one key twice (paired across folders, say) is merged into
    one entry that keeps every file: the detached data files of each version too."""
    from volsegsync.index import Entry, FileRecord, SegVersion
    from volsegsync.ops.snapshot import _merge_entries

    def rec(path: str) -> FileRecord:
        return FileRecord(path, 1, "0" * 32)

    a = Entry(
        rec("a/K.nii.gz"),
        rec("a/K-v2.nhdr"),
        2,
        older=(SegVersion(1, rec("a/K-v1.nhdr"), rec("a/K-v1.raw")),),
        seg_data=rec("a/K-v2.raw"),
        key="K",
    )
    b = Entry(None, rec("b/K-v3.nhdr"), 3, seg_data=rec("b/K-v3.raw"), key="K")
    merged = _merge_entries(a, b)
    assert merged.segmentation == rec("b/K-v3.nhdr") and merged.seg_data == rec("b/K-v3.raw")
    assert [(v.record.path, v.data) for v in merged.older] == [
        ("a/K-v1.nhdr", rec("a/K-v1.raw")),
        ("a/K-v2.nhdr", rec("a/K-v2.raw")),
    ]
    assert merged.volume == rec("a/K.nii.gz")
