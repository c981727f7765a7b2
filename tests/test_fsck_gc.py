"""fsck finds damaged objects and moves them aside; gc keeps what any index references."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import (
    NAME1,
    NAME2,
    assert_clean_stderr,
    git,
    invoke,
    run_script,
    write_nrrd,
    write_pair,
)
from storetools import checkout, commit, corrupt, h, make_repo, pair, store_objects

KINDS = ["dulwich", "git"]


def test_fsck_clean_store(paired: Path) -> None:
    result = invoke(["-C", str(paired), "fsck", "--working"])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["checked 4 objects and 4 working files: 0 problems"]


def test_fsck_moves_a_corrupt_object_aside_and_checkout_never_uses_it(paired: Path) -> None:
    vol = paired / f"{NAME1}.nii.gz"
    digest = h(vol.read_bytes())
    corrupt(store_objects(paired)[digest])
    result = invoke(["-C", str(paired), "fsck", "--format", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    kinds = sorted((p["kind"], p["digest"]) for p in doc["problems"])
    assert kinds == [("corrupt", digest), ("missing", digest)]
    assert digest not in store_objects(paired)
    aside = list((paired / ".volsegsync" / "cache" / "corrupt").iterdir())
    assert len(aside) == 1 and digest in aside[0].name
    vol.unlink()
    code, _out, err = checkout(paired)
    assert code == 1 and f"missing: {NAME1}.nii.gz: content xxh3-128:{digest}" in err
    assert not vol.exists()


def test_fsck_working_finds_modified_and_absent_files(paired: Path) -> None:
    seg = paired / f"{NAME1}-v1.nrrd"
    seg.write_bytes(seg.read_bytes() + b"x")
    (paired / f"{NAME2}.nii.gz").unlink()
    result = invoke(["-C", str(paired), "fsck", "--working"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert f"absent: {NAME2}.nii.gz: recorded in the index, absent" in lines
    assert any(ln.startswith(f"modified: {NAME1}-v1.nrrd: content differs") for ln in lines)


@pytest.mark.parametrize("kind", KINDS)
def test_gc_keeps_what_branches_tags_and_the_working_index_reference(
    tmp_path: Path, kind: str
) -> None:
    root = make_repo(tmp_path / "ds", kind)
    write_pair(root, NAME1, versions=(1,))
    pair(root)
    commit(root, kind, "one", tag="v1")
    v1 = h((root / f"{NAME1}-v1.nrrd").read_bytes())
    # a version recorded once, then deleted and never committed: unreferenced
    write_nrrd(root / f"{NAME1}-v2.nrrd", seed="scratch")
    pair(root)
    scratch = h((root / f"{NAME1}-v2.nrrd").read_bytes())
    (root / f"{NAME1}-v2.nrrd").unlink()
    pair(root, "--prune")  # pair keeps a missing file's record unless told (issue 7.3)
    # a version committed, then removed from the working tree and the index: kept (history)
    write_nrrd(root / f"{NAME1}-v2.nrrd", seed="committed")
    pair(root)
    committed = h((root / f"{NAME1}-v2.nrrd").read_bytes())
    commit(root, kind, "two")
    (root / f"{NAME1}-v2.nrrd").unlink()
    write_pair(root, NAME2)  # only in the working index
    pair(root, "--prune")
    working = h((root / f"{NAME2}.nii.gz").read_bytes())
    before = set(store_objects(root))
    assert {v1, scratch, committed, working} <= before

    dry = invoke(["-C", str(root), "gc", "--dry-run", "--format", "json"])
    assert dry.exit_code == 0
    assert [r["digest"] for r in json.loads(dry.stdout)["removed"]] == [scratch]
    assert set(store_objects(root)) == before

    proc = run_script(["gc"], cwd=root)  # not a terminal: --yes is needed
    assert proc.returncode == 2 and b"pass --yes" in proc.stderr
    assert_clean_stderr(proc.stderr)
    assert set(store_objects(root)) == before

    result = invoke(["-C", str(root), "gc", "--yes"])
    assert result.exit_code == 0, result.output
    assert set(store_objects(root)) == before - {scratch}
    code, out, err = checkout(root, "HEAD")  # every committed version still restorable
    assert code == 0, out + err
    assert h((root / f"{NAME1}-v2.nrrd").read_bytes()) == committed


def test_gc_removes_stale_temporaries(paired: Path) -> None:
    tmp = paired / ".volsegsync" / "cache" / "tmp"
    tmp.mkdir(exist_ok=True)
    stale, fresh = tmp / "stale", tmp / "fresh"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"in progress")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert invoke(["-C", str(paired), "gc", "--yes"]).exit_code == 0
    assert not stale.exists() and fresh.exists()


def test_gc_refuses_a_shared_store_without_shared(paired: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (paired / ".volsegsync" / "config.local.toml").write_text(f'[store]\ndir = "{shared}"\n')
    pair(paired)
    result = invoke(["-C", str(paired), "gc", "--yes"])
    assert result.exit_code == 2
    assert "may be shared with other clones" in result.stderr
    assert invoke(["-C", str(paired), "gc", "--yes", "--shared"]).exit_code == 0


def test_gc_stops_when_an_index_in_history_is_unreadable(ds_root: Path) -> None:
    write_pair(ds_root, NAME1)
    pair(ds_root)
    good = (ds_root / "volsegsync.index").read_text()
    (ds_root / "volsegsync.index").write_text("garbage\n")
    commit(ds_root, "git", "broken")
    (ds_root / "volsegsync.index").write_text(good)
    before = set(store_objects(ds_root))
    result = invoke(["-C", str(ds_root), "gc", "--yes"])
    assert result.exit_code == 2
    assert "gc removes nothing while an index it must honour is unreadable" in result.stderr
    assert set(store_objects(ds_root)) == before
    assert git(ds_root, "log", "--oneline").stdout.count("\n") == 1


def test_an_object_removed_by_hand_is_stored_again_by_pair_after_fsck(paired: Path) -> None:
    vol = paired / f"{NAME1}.nii.gz"
    digest = h(vol.read_bytes())
    store_objects(paired)[digest].unlink()
    # pair skips an unchanged index it stored completely before (one memo, no stats)
    pair(paired)
    assert digest not in store_objects(paired)
    result = invoke(["-C", str(paired), "fsck"])
    assert result.exit_code == 1
    assert f"missing: {NAME1}.nii.gz: content xxh3-128:{digest}" in result.stdout
    pair(paired)  # fsck forgot the memo: every file is checked again
    assert store_objects(paired)[digest].read_bytes() == vol.read_bytes()
