"""The one pipeline: incremental results equal full runs; one truth for every command.

The randomised test edits a real dataset step by step (add, remove, rename, edit,
touch, config change, pair, prune, rm; detached NRRD headers and their data files:
edit, zero, remove, touch) and after every step compares what the
incremental pipeline (its memo carried over from the steps before) answers with
a run that starts from an empty state folder.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import nrrd
import numpy as np
import pytest
from conftest import (
    LPS,
    NAME1,
    NAME2,
    invoke,
    make_affine,
    write_nii,
    write_nrrd,
    write_pair,
)

from volsegsync.dataset import Dataset
from volsegsync.index import format_entry
from volsegsync.ops import snapshot
from volsegsync.ops.pair import run_pair, run_rm
from volsegsync.ops.snapshot import Pipeline
from volsegsync.ops.status import run_status
from volsegsync.ops.verify import run_verify

BASE_MTIME = 1_600_000_000 * 10**9  # long past: the memo may trust these stats


class FreshDataset(Dataset):
    """The same dataset with its own, empty state folder: a full run."""

    @property
    def state_dir(self) -> Path:
        return self.root.parent / "fresh-state"


def fresh(root: Path) -> Dataset:
    shutil.rmtree(root.parent / "fresh-state", ignore_errors=True)
    plain = Dataset.open(root)
    return FreshDataset(plain.root, plain.config)


def outcome(ds: Dataset) -> dict[str, Any]:
    """Everything a user can see from pair (dry run), status and verify --fast."""
    # asked first, the problems come from the shards whose counts hold one; asked
    # after every case was listed, from every case: the same
    first = Pipeline(ds).update(jobs=1).problems
    snap = Pipeline(ds).update(jobs=1)
    status = run_status(ds, jobs=1)
    verify = run_verify(ds, fast=True, jobs=1)
    pairing = snap.pairing
    assert first == snap.problems
    return {
        "entries": [format_entry(e) for e in snap.entries],
        "pairs": sorted(pairing.pairs, key=repr),
        "problems": sorted(snap.problems, key=repr),
        "counts": (snap.files, snap.total_bytes, snap.pairs, snap.problem_count),
        "status": (
            status.changes,
            status.kept,
            status.problems,
            status.indexed_pairs,
            status.current_pairs,
            status.known_problems,
            status.in_sync,
        ),
        "verify": sorted(verify.problems, key=repr),
        "verify_pairs": sorted(set(verify.pairs), key=repr),
    }


class Editor:
    """Random edits of a dataset of tiny real images."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.tick = 0

    def files(self) -> list[Path]:
        return sorted(
            p
            for p in self.root.rglob("*")
            if p.is_file()
            and ".volsegsync" not in p.parts
            and ".git" not in p.parts
            and p.name != "volsegsync.index"
        )

    def age(self, path: Path) -> None:
        self.tick += 1
        t = BASE_MTIME + self.tick * 10**9
        os.utime(path, ns=(t, t))

    def name(self) -> str:
        case = self.rng.choice(["C01-Back-D01012000", "C02-Knee-D02022002", "C03-Hip-D03032003"])
        return case

    def folder(self) -> str:
        return self.rng.choice(["", "a/", "b/", "D1/imagesTr/", "D2/labelsTr/"])

    def add(self) -> str:
        name = self.name()
        folder = self.folder()
        if self.rng.random() < 0.5:
            path = self.root / f"{folder}{name}.nii.gz"
            write_nii(path, seed=f"{path}{self.tick}")
        elif self.rng.random() < 0.4:  # a detached header and its data file
            version = self.rng.choice(["", "-v1", "-v2"])
            path = self.root / f"{folder}{name}{version}.nhdr"
            path.parent.mkdir(parents=True, exist_ok=True)
            labels = np.random.default_rng(self.tick).integers(0, 3, (4, 4, 3)).astype(np.uint8)
            encoding = self.rng.choice(["raw", "gzip"])
            nrrd.write(str(path), labels, {"encoding": encoding}, detached_header=True)
            self.age(path.with_name(str(nrrd.read_header(str(path))["data file"])))
        else:
            version = self.rng.choice(["", "-v1", "-v2", "-v3"])
            path = self.root / f"{folder}{name}{version}.nrrd"
            write_nrrd(path, seed=f"{path}{self.tick}")
        self.age(path)
        return f"add {path.relative_to(self.root)}"

    def step(self) -> str:
        files = self.files()
        action = self.rng.choice(
            ["add", "add", "remove", "rename", "edit", "touch", "garbage", "config", "pair"]
        )
        if action == "add" or not files:
            return self.add()
        data = [p for p in files if p.name.endswith((".raw", ".raw.gz"))]
        if data and self.rng.random() < 0.3:  # a detached data file: edit, zero, remove, touch
            return self.data_step(self.rng.choice(data))
        path = self.rng.choice(files)
        rel = path.relative_to(self.root)
        if action == "remove":
            path.unlink()
        elif action == "rename":
            target = self.root / self.folder() / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                return "rename onto itself: skipped"
            path.rename(target)
            return f"rename {rel} -> {target.relative_to(self.root)}"
        elif action == "edit":
            if path.name.endswith(".nii.gz"):
                write_nii(path, seed=f"edit{self.tick}")
            else:
                write_nrrd(path, seed=f"edit{self.tick}")
            self.age(path)
        elif action == "touch":
            self.age(path)
        elif action == "garbage":
            path.write_bytes(b"not an image at all" * self.rng.randint(1, 3))
            self.age(path)
        elif action == "config":
            return self.config()
        else:
            return self.pair()
        return f"{action} {rel}"

    def data_step(self, path: Path) -> str:
        action = self.rng.choice(["edit", "zero", "remove", "touch"])
        if action == "remove":
            path.unlink()
        else:
            raw = path.read_bytes()
            if action == "edit":
                path.write_bytes(bytes(self.rng.randrange(256) for _ in raw))
            elif action == "zero":
                path.write_bytes(b"\0" * len(raw))
            self.age(path)
        return f"data {action} {path.relative_to(self.root)}"

    def config(self) -> str:
        config = self.root / ".volsegsync" / "config.toml"
        text = config.read_text()
        choice = self.rng.choice(["exclude", "scope", "roles", "by"])
        if choice == "exclude":
            pattern = self.rng.choice(["[]", '["b/*"]', '["*-v3.nrrd"]'])
            text = text.replace(text[text.index("exclude = ") :], f"exclude = {pattern}\n")
        elif choice == "scope":
            scope = self.rng.choice(["auto", "dataset", "folder"])
            lines = [ln for ln in text.splitlines() if not ln.startswith("scope = ")]
            i = lines.index("[pairing]")
            text = "\n".join([*lines[: i + 1], f'scope = "{scope}"', *lines[i + 1 :]]) + "\n"
        elif choice == "roles":
            dirs = self.rng.choice(["[]", '["imagesTr"]'])
            segs = '["labelsTr"]' if dirs != "[]" else "[]"
            lines = text.splitlines()
            lines = [
                f"volume_dirs = {dirs}"
                if ln.startswith("volume_dirs")
                else f"segmentation_dirs = {segs}"
                if ln.startswith("segmentation_dirs")
                else ln
                for ln in lines
            ]
            text = "\n".join(lines) + "\n"
        else:
            by = self.rng.choice(["naming", "naming", "metadata"])
            lines = [f'by = "{by}"' if ln.startswith("by = ") else ln for ln in text.splitlines()]
            text = "\n".join(lines) + "\n"
        config.write_text(text)
        return f"config {choice}"

    def pair(self) -> str:
        ds = Dataset.open(self.root)
        how = self.rng.choice(["pair", "pair", "prune", "rm"])
        if how == "rm":
            indexed = sorted(
                r.path
                for e in ds.read_index()
                for r in (e.volume, e.segmentation)
                if r is not None and not (self.root / r.path).exists()
            )
            if indexed:
                run_rm(ds, indexed[:1])
                return f"rm {indexed[0]}"
            how = "pair"
        run_pair(ds, jobs=1, prune=how == "prune")
        return how


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 7, 20, 22])
def test_incremental_equals_full_on_random_edits(ds_root: Path, seed: int) -> None:
    rng = random.Random(seed)
    editor = Editor(ds_root, rng)
    for _ in range(6):
        editor.add()
    history = []
    for _ in range(30):
        history.append(editor.step())
        incremental = outcome(Dataset.open(ds_root))
        full = outcome(fresh(ds_root))
        for key in full:
            assert incremental[key] == full[key], (key, history)


def _old_pairs(root: Path, names: tuple[str, ...]) -> Dataset:
    """A pair of each name, its files made old (the memo may trust their stats)."""
    for name in names:
        write_nii(root / f"{name}.nii.gz")
        write_nrrd(root / f"{name}-v1.nrrd")
    for p in root.glob("C0*"):
        os.utime(p, ns=(BASE_MTIME, BASE_MTIME))
    return Dataset.open(root)


def test_unchanged_run_hashes_and_pairs_nothing(ds_root: Path) -> None:
    ds = _old_pairs(ds_root, (NAME1, NAME2))
    first = Pipeline(ds).update()
    again = Pipeline(ds).update()
    assert again.generation == first.generation  # nothing was redone
    os.utime(ds_root / f"{NAME1}-v1.nrrd", ns=(BASE_MTIME + 10**9, BASE_MTIME + 10**9))
    touched = Pipeline(ds).update()
    assert touched.generation == first.generation + 1
    assert touched.changed_since(first.stamp) == {NAME1}  # one key, not all


def test_a_generation_changing_most_cases_is_logged_as_all(
    ds_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Consumers redo everything after a generation that changed most cases, so its keys
    are not listed: the top memo every run loads stays small."""
    monkeypatch.setattr(snapshot, "LOG_ALL_FROM", 2)
    names = (NAME1, NAME2, "C03-Hip-D03032003")
    ds = _old_pairs(ds_root, names)
    first = Pipeline(ds).update()
    for k, name in enumerate(names[:2]):  # two of three cases
        os.utime(ds_root / f"{name}-v1.nrrd", ns=(BASE_MTIME + k + 1, BASE_MTIME + k + 1))
    most = Pipeline(ds).update()
    assert most.changed_since(first.stamp) is None
    assert most.top["log"][-1] == [most.generation, None]
    os.utime(ds_root / f"{NAME1}.nii.gz", ns=(BASE_MTIME + 5, BASE_MTIME + 5))
    one = Pipeline(ds).update()
    assert one.changed_since(most.stamp) == {NAME1}
    assert one.changed_since(first.stamp) is None


@pytest.mark.parametrize("seed", [5, 9])
def test_incremental_equals_full_when_generations_log_all(
    ds_root: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "LOG_ALL_FROM", 0)  # most changed cases: logged as all
    test_incremental_equals_full_on_random_edits(ds_root, seed)


# --------------------------------------------------------------------------- issue 7


def test_one_unreadable_segmentation_one_story_everywhere(paired_files: Path) -> None:
    """pair, verify --fast and verify agree: the pair keeps its place, the file gets
    one message, its volume is not "unpaired"."""
    root = paired_files
    seg = root / f"{NAME2}-v1.nrrd"
    seg.write_bytes(b"")  # empty: not an image
    pair = json.loads(invoke(["-C", str(root), "pair", "--format", "json"]).stdout)
    fast = json.loads(invoke(["-C", str(root), "verify", "--fast", "--format", "json"]).stdout)
    full = json.loads(invoke(["-C", str(root), "verify", "--format", "json"]).stdout)
    expected = [("not_an_image", [seg.name])]
    for doc in (pair, fast, full):
        assert [(p["category"], p["files"]) for p in doc["problems"]] == expected, doc
    assert pair["summary"]["pairs"] == fast["summary"]["pairs"] == full["summary"]["pairs"] == 2


def test_uncompressed_file_named_nii_gz_is_caught_by_verify_fast(paired_files: Path) -> None:
    vol = paired_files / f"{NAME1}.nii.gz"
    import gzip

    vol.write_bytes(gzip.decompress(vol.read_bytes()))
    doc = json.loads(
        invoke(["-C", str(paired_files), "verify", "--fast", "--format", "json"]).stdout
    )
    assert next((p["category"], p["files"]) for p in doc["problems"]) == (
        "not_an_image",
        [vol.name],
    )


def test_fresh_clone_keeps_every_line_and_says_what_to_do(paired_files: Path) -> None:
    """Index present, images absent (a clone: images are not in git)."""
    root = paired_files
    assert invoke(["-C", str(root), "pair"]).exit_code == 0
    index = (root / "volsegsync.index").read_text()
    for p in root.glob("C0*"):
        p.unlink()
    shutil.rmtree(root / ".volsegsync" / "state")  # a clone has no state either
    result = invoke(["-C", str(root), "status"])
    assert result.exit_code == 1
    assert "4 indexed files are missing from disk" in result.stdout
    assert "fresh clone" in result.stdout and "volsegsync pull" in result.stdout
    result = invoke(["-C", str(root), "pair"])
    assert result.exit_code == 1
    assert (root / "volsegsync.index").read_text() == index  # every line kept
    assert result.stdout.count("missing from disk; its record stays") == 4


def test_unreadable_file_keeps_its_line(paired_files: Path) -> None:
    root = paired_files
    assert invoke(["-C", str(root), "pair"]).exit_code == 0
    index = (root / "volsegsync.index").read_text()
    seg = root / f"{NAME1}-v1.nrrd"
    seg.unlink()
    seg.symlink_to(root / "nowhere.nrrd")  # present, cannot be read
    result = invoke(["-C", str(root), "pair", "--prune"])
    assert result.exit_code == 1
    assert (root / "volsegsync.index").read_text() == index
    status = invoke(["-C", str(root), "status", "--format", "json"])
    assert status.exit_code == 1
    assert json.loads(status.stdout)["kept"] == [{"path": seg.name, "state": "unreadable"}]


def test_excluded_files_are_no_longer_tracked_not_missing(paired_files: Path) -> None:
    root = paired_files
    assert invoke(["-C", str(root), "pair"]).exit_code == 0
    config = root / ".volsegsync" / "config.toml"
    config.write_text(config.read_text().replace("exclude = []", f'exclude = ["{NAME1}*"]'))
    doc = json.loads(invoke(["-C", str(root), "status", "--format", "json"]).stdout)
    assert doc["kept"] == [
        {"path": f"{NAME1}-v1.nrrd", "state": "untracked"},
        {"path": f"{NAME1}.nii.gz", "state": "untracked"},
    ]
    text = invoke(["-C", str(root), "status"]).stdout
    assert "missing" not in text and "no longer tracked" in text
    verify = json.loads(invoke(["-C", str(root), "verify", "--format", "json"]).stdout)
    assert {p["category"] for p in verify["problems"]} == {"drift_untracked"}


def test_pair_by_metadata_is_recorded_in_the_config(paired_files: Path) -> None:
    root = paired_files
    assert invoke(["-C", str(root), "pair", "--by", "metadata"]).exit_code == 0
    assert Dataset.open(root).config.pairing.by == "metadata"
    text = (root / ".volsegsync" / "config.toml").read_text()
    assert text.count('by = "metadata"') == 1 and 'by = "naming"' not in text
    assert invoke(["-C", str(root), "status"]).exit_code == 0
    assert invoke(["-C", str(root), "pair", "--by", "naming", "-n"]).exit_code == 0
    assert Dataset.open(root).config.pairing.by == "metadata"  # a dry run writes nothing


def test_two_nnunet_datasets_never_cross_pair(ds_root: Path) -> None:
    config = ds_root / ".volsegsync" / "config.toml"
    text = config.read_text()
    text = text.replace("volume_dirs = []", 'volume_dirs = ["imagesTr"]')
    text = text.replace("segmentation_dirs = []", 'segmentation_dirs = ["labelsTr"]')
    text = text.replace('volume_suffix = ""', 'volume_suffix = "_0000"')
    text = text.replace(
        'segmentation_extensions = [".seg.nrrd", ".nrrd", ".seg.nhdr", ".nhdr"]',
        'segmentation_extensions = [".nii.gz"]',
    )
    text = text.replace("[naming.dates]\n", "[naming.dates]\n# none\n").replace(
        'postfix = "D%d%m%Y"', ""
    )
    config.write_text(text)
    write_nii(ds_root / "Dataset001" / "imagesTr" / "chest_001_0000.nii.gz")
    write_nii(ds_root / "Dataset001" / "labelsTr" / "chest_001.nii.gz")
    write_nii(ds_root / "Dataset001" / "labelsTr" / "chest_002.nii.gz")
    write_nii(ds_root / "Dataset002" / "imagesTr" / "chest_002_0000.nii.gz")
    result = invoke(["-C", str(ds_root), "pair", "--format", "json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert [(p["volume"], p["segmentation"]) for p in doc["pairs"]] == [
        ("Dataset001/imagesTr/chest_001_0000.nii.gz", "Dataset001/labelsTr/chest_001.nii.gz")
    ]
    assert doc["unpaired_volumes"] == ["Dataset002/imagesTr/chest_002_0000.nii.gz"]
    assert doc["unpaired_segmentations"] == ["Dataset001/labelsTr/chest_002.nii.gz"]
    unpaired = [p["files"][0] for p in doc["problems"] if p["category"].startswith("unpaired")]
    assert sorted(unpaired) == sorted(doc["unpaired_volumes"] + doc["unpaired_segmentations"])
    # one scope for the whole dataset: as before, names pair across folders
    config.write_text(config.read_text().replace('scope = "auto"', 'scope = "dataset"'))
    doc = json.loads(invoke(["-C", str(ds_root), "pair", "--format", "json"]).stdout)
    assert len(doc["pairs"]) == 2


def test_pinned_version_stays_active(paired_files: Path) -> None:
    """A rollback pins an older version (index format 2, ``!``); pair keeps it."""
    root = paired_files
    assert invoke(["-C", str(root), "pair"]).exit_code == 0
    ds = Dataset.open(root)
    snap = Pipeline(ds).update()
    [case] = [c for c in snap.cases() if c.key == NAME1]
    assert case.entry is not None
    from volsegsync.index import FileRecord, SegVersion
    from volsegsync.ops.snapshot import Member, pair_case

    write_nrrd(root / f"{NAME1}-v2.nrrd")
    v2 = Member(f"{NAME1}-v2.nrrd", "segmentation", 2, 1, "ab" * 16, None)
    # as checkout NAME1@v1 records it (index format 2, ``!``): v1 active and pinned,
    # v2 recorded (main's pin semantics: the pin holds while no version newer than
    # every recorded one appears)
    indexed = case.entry._replace(
        pinned=True, older=(SegVersion(2, FileRecord(v2.path, 1, "ab" * 16)),)
    )
    rules = Pipeline(ds).rules
    result = pair_case(rules, NAME1, (*case.members, v2), indexed, str)
    assert result.entry is not None and result.entry.pinned
    assert result.entry.segmentation is not None
    assert result.entry.segmentation.path == f"{NAME1}-v1.nrrd"
    assert [v.record.path for v in result.entry.older] == [f"{NAME1}-v2.nrrd"]
    assert [p.segmentation for p in result.pairs] == [f"{NAME1}-v1.nrrd"]
    # a version newer than every recorded one ends the rollback (index.build_entry)
    v3 = Member(f"{NAME1}-v3.nrrd", "segmentation", 3, 1, "cd" * 16, None)
    result = pair_case(rules, NAME1, (*case.members, v2, v3), indexed, str)
    assert result.entry is not None and not result.entry.pinned
    assert result.entry.segmentation is not None
    assert result.entry.segmentation.path == v3.path


def test_older_versions_are_recorded_with_their_hashes(paired_files: Path) -> None:
    write_nrrd(paired_files / f"{NAME1}-v2.nrrd")
    snap = Pipeline(Dataset.open(paired_files)).update()
    [entry] = [e for e in snap.entries if e.key == NAME1]
    assert entry.version == 2
    assert [(v.version, v.record.path) for v in entry.older] == [(1, f"{NAME1}-v1.nrrd")]
    assert len(entry.older[0].record.digest) == 32


@pytest.fixture
def paired_files(ds_root: Path) -> Path:
    for name in (NAME1, NAME2):
        write_nii(ds_root / f"{name}.nii.gz")
        write_nrrd(ds_root / f"{name}-v1.nrrd")
    for p in ds_root.glob("C0*"):
        os.utime(p, ns=(BASE_MTIME, BASE_MTIME))
    return ds_root


# --------------------------------------------------------------------------- dataset level


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_incremental_dataset_checks_equal_a_full_run(ds_root: Path, seed: int) -> None:
    """Dataset-level problems (outliers, label names, tiny labels) of verify, kept up
    to date from the memo of their per-file facts, equal those of a run from nothing,
    after random edits that change, keep or remove what they read."""
    from test_dataset_checks import SHAPE, _name, _seg

    rng = random.Random(seed)
    editor = Editor(ds_root, rng)
    lps = make_affine((1.0, 1.0, 2.0))
    lps[:3, :3] = LPS @ lps[:3, :3]
    affines = [make_affine((1.0, 1.0, 2.0)), lps, make_affine((4.0, 4.0, 6.0))]
    names = [{1: "vertebra", 2: "disc"}, {1: "Liver", 2: "disc"}, {1: "vertebra", 3: "x"}]

    def write(i: int, affine: Any, labels: dict[int, str], shape: tuple[int, ...] = SHAPE) -> None:
        vol = ds_root / f"{_name(i)}.nii.gz"
        seg = ds_root / f"{_name(i)}-v1.seg.nrrd"
        write_nii(vol, seed=f"{i}{editor.tick}", affine=affine, shape=shape)
        _seg(seg, affine, labels, shape, tiny=rng.random() < 0.2)
        editor.age(vol)
        editor.age(seg)

    for i in range(24):
        write(i, affines[0], names[0])
    history = []
    for step in range(14):
        i = rng.randrange(26)
        action = rng.choice(["geometry", "names", "same", "remove", "touch", "pair", "config"])
        vol = ds_root / f"{_name(i)}.nii.gz"
        if action == "geometry" or not vol.exists():
            write(i, rng.choice(affines), names[0], rng.choice([SHAPE, (12, 12, 6)]))
        elif action == "names":
            write(i, affines[0], rng.choice(names))
        elif action == "same":  # new content, the same header
            write(i, affines[0], names[0])
        elif action == "remove":
            rng.choice([vol, ds_root / f"{_name(i)}-v1.seg.nrrd"]).unlink(missing_ok=True)
        elif action == "touch":
            editor.age(vol)
        elif action == "pair":
            run_pair(Dataset.open(ds_root), jobs=1)
        else:
            labels = rng.choice(["", '\n[verify.labels]\n1 = "vertebra"\n2 = "disc"\n'])
            config = ds_root / ".volsegsync" / "config.toml"
            text = config.read_text().split("\n[verify.labels]")[0]
            config.write_text(text + labels)
        history.append(f"{action} {i}")
        for fast in (True, False) if step % 4 == 3 else (True,):
            incremental = run_verify(Dataset.open(ds_root), fast=fast, jobs=1)
            full = run_verify(fresh(ds_root), fast=fast, jobs=1)
            a, b = set(map(repr, incremental.problems)), set(map(repr, full.problems))
            assert a == b, (fast, " | ".join(history), a - b, b - a)
    levels = {p.category for p in full.problems}
    assert levels & {"outlier_orientation", "outlier_spacing", "label_name_conflict"}, levels


def test_header_rewritten_within_one_mtime_tick_is_read_again(ds_root: Path) -> None:
    """A segmentation rewritten in place with the same size and mtime (a racy stat):
    the pipeline hashes it again, and the dataset-level checks read its header again
    instead of trusting the summary memoised under that stat."""
    from test_dataset_checks import _name, _seg

    for i in range(4):
        write_nii(ds_root / f"{_name(i)}.nii.gz", affine=make_affine((1.0, 1.0, 2.0)))
        _seg(ds_root / f"{_name(i)}-v1.seg.nrrd", make_affine((1.0, 1.0, 2.0)))
    seg = ds_root / f"{_name(0)}-v1.seg.nrrd"
    now = time.time_ns()
    os.utime(seg, ns=(now, now))
    stat = seg.stat()

    def conflicts() -> list[str]:
        found = run_verify(Dataset.open(ds_root), fast=True, jobs=1).problems
        return [p.files[0] for p in found if p.category == "label_name_conflict"]

    assert conflicts() == []
    _seg(seg, make_affine((1.0, 1.0, 2.0)), {1: "vertebrX", 2: "disc"})  # same size
    os.utime(seg, ns=(now, now))
    assert (seg.stat().st_size, seg.stat().st_ino) == (stat.st_size, stat.st_ino)
    assert conflicts() == [seg.name]


def test_usual_pair_shortcut_equals_the_general_rules(paired_files: Path) -> None:
    """``pair_case`` decides the usual case (one volume, one segmentation, an index
    recording them or nothing) without the general rules: the result must be theirs,
    and every other shape must go to them."""
    from volsegsync.index import Entry, FileRecord, SegVersion
    from volsegsync.ops.snapshot import Member, _pair_general, _pair_simple, pair_case

    rules = Pipeline(Dataset.open(paired_files)).rules
    vol = Member(f"{NAME1}.nii.gz", "volume", None, 10, "aa" * 16, None)
    seg = Member(f"{NAME1}-v3.nrrd", "segmentation", 3, 20, "bb" * 16, None)
    plain = Member(f"{NAME1}.nrrd", "segmentation", None, 20, "cc" * 16, None)
    other = Member(f"{NAME2}.nii.gz", "volume", None, 10, "dd" * 16, None)
    vrec, srec = FileRecord(vol.path, 10, "aa" * 16), FileRecord(seg.path, 20, "bb" * 16)
    old = FileRecord(f"{NAME1}-v1.nrrd", 5, "ee" * 16)
    indexes: list[Entry | None] = [
        None,
        Entry(vrec, srec, 3, key=NAME1),
        Entry(vrec, None, None, key=NAME1),
        Entry(vrec._replace(digest="ff" * 16), srec, 3, key=NAME1),  # content changed
        Entry(vrec, srec, 3, pinned=True, key=NAME1),  # a rollback: general rules
        Entry(vrec, srec, 3, (SegVersion(1, old),), key=NAME1),  # v1 missing now
        Entry(FileRecord(other.path, 10, "dd" * 16), srec, 3, key=NAME1),  # another volume
    ]
    shapes = [
        (seg, vol),
        (plain, vol),
        (vol, seg._replace(digest="")),  # unreadable segmentation
        (vol, seg._replace(problem=("not_an_image", "not a NRRD file"))),
        (vol, other),  # two volumes
        (vol, seg._replace(role="")),  # no role from the name
        (vol,),
        (seg, plain, vol),
    ]
    shortcuts = 0
    for members in shapes:
        for indexed in indexes:
            for where in ("missing", "untracked"):

                def locate(_path: str, where: str = where) -> str:
                    return where

                expect = _pair_general(rules, NAME1, members, indexed, locate)
                got = pair_case(rules, NAME1, members, indexed, locate)
                assert got == expect, (members, indexed)
                shortcuts += _pair_simple(rules, NAME1, members, indexed) is not None
    # (seg, vol) with the first four indexes, (plain, vol) with the two not naming v3
    assert shortcuts == (4 + 2) * 2


def test_entries_that_read_back_as_they_are_skip_the_round_trip() -> None:
    """``record_index`` takes an entry of the usual shape as what the index records;
    that must be what formatting and parsing it gives."""
    from volsegsync.index import Entry, FileRecord, SegVersion
    from volsegsync.ops.snapshot import _reads_back, as_indexed, as_indexed_all

    v = FileRecord("volumes/C01-A-D01012000.nii.gz", 10, "aa" * 16)
    s = FileRecord("segmentations/C01-A-D01012000-v2.nrrd", 20, "bb" * 16)
    entries = [
        Entry(v, s, 2, key="C01-A-D01012000"),
        Entry(v, s, None, key="C01-A-D01012000"),
        Entry(v, None, None, key="C01-A-D01012000"),
        Entry(None, s, 2, key="C01-A-D01012000"),
        Entry(None, s, None, key="C01-A-D01012000"),
        Entry(v, None, 3, key="C01-A-D01012000"),  # a version without a segmentation
        Entry(v, s, 2),  # no key: the format gives it one
        Entry(v, s, 2, pinned=True, key="C01-A-D01012000"),
        Entry(v, s, 2, (SegVersion(1, s._replace(path="s-v1.nrrd")),), key="C01-A-D01012000"),
        Entry(v._replace(path="volumes/a\u200eb.nii.gz"), s, 2, key="ab"),
    ]
    for e in entries:
        back = as_indexed(e, "xxh3-128")
        assert not _reads_back(e) or back == e, e
        assert as_indexed_all([e, None], "xxh3-128") == [back, None]
    assert [_reads_back(e) for e in entries] == [True] * 5 + [False] * 5


# --------------------------------------------------------------------------- issue 14 (2)


def shard_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / ".volsegsync" / "state" / "pipeline").glob("k-*"))


def test_first_run_writes_one_pack_and_later_edits_equal_a_full_run(ds_root: Path) -> None:
    """A full run writes its case shards as one pack; a later run writes the shards it
    changes as files of their own and reads the others from the pack: every result
    equals a run from an empty state folder."""
    rng = random.Random(14)
    editor = Editor(ds_root, rng)
    for _ in range(8):
        editor.add()
    run_pair(Dataset.open(ds_root), jobs=1)
    assert shard_files(ds_root) == ["k-pack"]
    victim = next(p for p in editor.files() if p.name.endswith(".nii.gz"))
    write_nii(victim, seed="one edit")
    editor.age(victim)
    assert outcome(Dataset.open(ds_root)) == outcome(fresh(ds_root))
    after = shard_files(ds_root)
    assert "k-pack" in after and len(after) == 2, after  # the edited case's shard
    history = []
    for _ in range(12):
        history.append(editor.step())
        incremental = outcome(Dataset.open(ds_root))
        assert incremental == outcome(fresh(ds_root)), history


@pytest.mark.parametrize(
    "damage",
    [
        "garbage",
        "truncated",
        "other id",
        "span past the end",
        "huge header",
        "link",
        "gone",
        "stale shard file",
        "top naming garbage",
    ],
)
def test_damaged_or_foreign_pack_is_a_miss_never_trusted(paired_files: Path, damage: str) -> None:
    """The pack is read only as the top names it (key and id), by spans checked against
    its size; anything else is a miss: the run starts afresh and answers as a full run."""
    import marshal

    from volsegsync.memo import PACK_MAGIC, PackReader, save_pack, shard_of

    ds = Dataset.open(paired_files)
    run_pair(ds, jobs=1)
    expected = outcome(fresh(paired_files))
    pipeline = Pipeline(ds)
    pipeline.update(jobs=1)
    pack = pipeline._pack_path
    top = pipeline._top
    real = PackReader(pack, pipeline.key, top["pack"])
    shards = [real.load(s) for s in range(256)]
    assert all(isinstance(s, dict) for s in shards)
    # what a hostile pack claims: every case records a file outside the dataset
    evil = [dict(s) for s in shards]
    for cases in evil:
        for key, value in cases.items():
            members = tuple(("../../../etc/passwd", *m[1:]) for m in value[0])
            cases[key] = (members, *value[1:])
    blob = pack.read_bytes()
    if damage == "garbage":
        pack.write_bytes(b"\0garbage" * 100)
    elif damage == "truncated":
        pack.write_bytes(blob[: len(blob) // 2])
    elif damage == "other id":  # a pack of another generation, well formed
        assert save_pack(pack, pipeline.key, "0" * 16, evil)
    elif damage == "span past the end":  # a body of 64 bytes, spans of a megabyte
        spans = [(0, 10**6)] * 256
        header = marshal.dumps({"key": pipeline.key, "id": top["pack"], "spans": spans})
        footer = (64).to_bytes(8, "little") + len(header).to_bytes(4, "little")
        pack.write_bytes(PACK_MAGIC + b"\0" * 64 + header + footer)
    elif damage == "huge header":  # a footer claiming a 2 GiB header
        footer = (64).to_bytes(8, "little") + (2**31).to_bytes(4, "little")
        pack.write_bytes(PACK_MAGIC + b"\0" * 64 + footer)
    elif damage == "link":  # the real pack elsewhere, linked: never read through a link
        outside = paired_files.parent / "elsewhere"
        outside.write_bytes(blob)
        pack.unlink()
        pack.symlink_to(outside)
    elif damage == "gone":
        pack.unlink()
    elif damage == "top naming garbage":  # a top of the right key, not of this make
        top_path = pack.parent / "top.marshal"
        top_memo = marshal.loads(top_path.read_bytes())
        top_memo["where"], top_memo["pack"] = "k-pack", 7
        top_path.write_bytes(marshal.dumps(top_memo))
    else:  # an edit: its shard is a file now; then one of another generation replaces it
        seg = paired_files / f"{NAME1}-v1.nrrd"
        write_nrrd(seg, seed="edited")
        os.utime(seg, ns=(BASE_MTIME + 10**9, BASE_MTIME + 10**9))
        expected = outcome(fresh(paired_files))
        Pipeline(ds).update(jobs=1)
        shard = shard_of(NAME1)
        assert shard_files(paired_files) == sorted(["k-pack", f"k-{shard:02x}"])
        (pack.parent / f"k-{shard:02x}").write_bytes(
            marshal.dumps({"key": pipeline.key, "id": "1" * 16, "cases": evil[shard]})
        )
    again = Pipeline(ds)
    again.update(jobs=1)
    assert [again.case(k) for k in (NAME1, NAME2)] == [
        Pipeline(fresh(paired_files)).update(jobs=1).pipeline.case(k) for k in (NAME1, NAME2)
    ]
    assert outcome(Dataset.open(paired_files)) == expected
    assert "passwd" not in repr(expected)


@pytest.mark.parametrize(("store", "data"), [(False, "mixed"), (True, "mixed"), (False, "usual")])
@pytest.mark.parametrize("child", ["answers", "dies"])
def test_work_shared_with_forked_children_equals_one_process(
    ds_root: Path, monkeypatch: pytest.MonkeyPatch, child: str, store: bool, data: str
) -> None:
    """A first ``pair`` shares its small files with a forked child (here from one file
    on), and writes its memo files by another while it writes the index: every result
    equals a run of one process, whether the children answer (problems and detached
    headers included) or die, when this process does their work itself; so do the
    results of a later run that starts from those memo files."""
    from volsegsync import workers

    editor = Editor(ds_root, random.Random(9))
    for _ in range(12 if data == "mixed" else 0):  # versions, detached data, ambiguity
        editor.add()
    for i in range(12):  # pairs: their index lines carry every digest
        versions = (1, 2)[: 1 + i % 2] if data == "mixed" else (1,)  # "usual": one each
        write_pair(ds_root, f"C{10 + i}-Knee_PD_V001-D17112003", versions, "v", "s")
    (ds_root / "C09-Bad-D01012000.nii.gz").write_bytes(b"not gzip at all")  # a problem
    for path in editor.files():  # stats old enough to trust: the next run reads the memo
        editor.age(path)
    forks: list[int] = []

    class Counted(workers.Forked):
        def __init__(self, work: Any) -> None:
            forks.append(1)
            super().__init__(work if child == "answers" else lambda: os._exit(3))

    monkeypatch.setattr(workers, "Forked", Counted)
    monkeypatch.setattr(snapshot, "FORK_SMALL_FROM", 1)
    report = run_pair(Dataset.open(ds_root), jobs=2, store=store)
    assert forks == [1, 1]  # the hashing child, the memo files' child
    monkeypatch.undo()
    again = Pipeline(Dataset.open(ds_root)).update(jobs=1)
    assert again.stamp == report.snapshot.stamp  # the memo files serve: nothing redone
    assert shard_files(ds_root) == ["k-pack"]  # written, by the child or (dead) here
    full = outcome(fresh(ds_root))
    assert outcome(Dataset.open(ds_root)) == full
    lines = [line.split("\t") for e in full["entries"] for line in e.splitlines()]
    assert len(lines) >= 25 and all(len(line[4]) == 32 for line in lines)  # every digest
    assert full["status"][3] >= 12  # indexed pairs: the shard counts the top names
    assert any(p.category == "not_an_image" for p in full["problems"])
    for _ in range(4):  # later runs start from the memo files the children wrote
        editor.step()
        assert outcome(Dataset.open(ds_root)) == outcome(fresh(ds_root))
