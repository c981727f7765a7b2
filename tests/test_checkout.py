"""checkout: every recorded version restorable byte for byte, and never losing work.

Real git repositories (dulwich and the git binary), real images, the real CLI;
the kill -9 tests run the installed console script in a subprocess.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    NAME1,
    NAME2,
    VOLSEGSYNC,
    age_all,
    assert_clean_stderr,
    invoke,
    run_script,
    write_nii,
    write_nrrd,
    write_pair,
)
from storetools import checkout, commit, h, make_repo, pair, snapshot_files, store_objects

from volsegsync.dataset import Dataset
from volsegsync.hashing import StatCache
from volsegsync.index import read_index_file

KINDS = ["dulwich", "git"]
SEG = f"{NAME1}-v{{}}.nrrd"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def versions(root: Path, n: int) -> list[bytes]:
    """Versions 1..n of NAME1's segmentation, each with other content."""
    out = []
    for v in range(1, n + 1):
        write_nrrd(root / SEG.format(v), seed=f"v{v}")
        out.append((root / SEG.format(v)).read_bytes())
    return out


def active(root: Path) -> str:
    """The version column of the active segmentation line (``3*``, ``1!``)."""
    for line in (root / "volsegsync.index").read_text().splitlines():
        cols = line.split("\t")
        if len(cols) == 6 and cols[1] == "seg" and cols[2][-1] in "*!":
            return cols[2]
    raise AssertionError("no active segmentation")


# --------------------------------------------------------------------------- rollback


def test_rollback_v3_v1_v3_is_byte_identical_and_stable(tmp_path: Path, kind: str) -> None:
    root = make_repo(tmp_path / "ds", kind)
    write_nii(root / f"{NAME1}.nii.gz")
    data = versions(root, 3)
    pair(root)
    commit(root, kind, "three versions")
    assert active(root) == "3*"

    (root / SEG.format(1)).unlink()  # v1 only in the store now
    code, out, err = checkout(root, f"{SEG.format(3)}@v1")
    assert code == 0, out + err
    assert f"restore: {SEG.format(1)}" in out
    assert (root / SEG.format(1)).read_bytes() == data[0]
    assert active(root) == "1!"
    index = (root / "volsegsync.index").read_bytes()

    # stable: pair and status agree with the rollback, they do not re-pick v3
    result = invoke(["-C", str(root), "pair"])
    assert result.exit_code == 0 and "volsegsync.index unchanged" in result.stdout
    assert (root / "volsegsync.index").read_bytes() == index
    assert invoke(["-C", str(root), "status"]).exit_code == 0
    entry = Dataset.open(root).read_index()[0]
    assert (entry.version, entry.pinned) == (1, True)
    assert [v.version for v in entry.older] == [2, 3]

    # and back: by case key
    code, out, err = checkout(root, f"{NAME1}@v3")
    assert code == 0, out + err
    assert active(root) == "3*"
    for v in (1, 2, 3):
        assert (root / SEG.format(v)).read_bytes() == data[v - 1]
    pair(root)
    assert active(root) == "3*"


def test_a_new_version_ends_a_rollback(ds_root: Path) -> None:
    write_nii(ds_root / f"{NAME1}.nii.gz")
    versions(ds_root, 2)
    pair(ds_root)
    assert checkout(ds_root, f"{NAME1}@v1")[0] == 0
    write_nrrd(ds_root / SEG.format(3), seed="v3")
    pair(ds_root)
    assert active(ds_root) == "3*"


def test_rollback_to_an_unknown_version_or_pair_is_a_usage_error(paired: Path) -> None:
    code, _out, err = checkout(paired, f"{NAME1}@v7")
    assert code == 2
    assert "no recorded version 7 (recorded: v1)" in err
    code, _out, err = checkout(paired, "nope.nii.gz@v1")
    assert code == 2
    assert "nope.nii.gz: no such pair in the index" in err
    assert_clean_stderr(err)


# --------------------------------------------------------------------------- REV


def test_checkout_rev_across_three_commits(tmp_path: Path, kind: str) -> None:
    root = make_repo(tmp_path / "ds", kind)
    write_pair(root, NAME1, versions=(1,))
    pair(root)
    commit(root, kind, "one", tag="one")
    first = snapshot_files(root)
    write_nrrd(root / SEG.format(2), seed="second")
    write_nii(root / f"{NAME1}.nii.gz", seed="new volume content")
    pair(root)
    commit(root, kind, "two")
    second = snapshot_files(root)
    write_pair(root, NAME2, versions=(1,))
    pair(root)
    commit(root, kind, "three")
    third = snapshot_files(root)
    branch = "master" if kind == "dulwich" else _branch(root)

    for rev, expected, blob_rev in (
        ("HEAD~2", first, "one"),
        (branch, third, branch),
        ("HEAD~1", second, "HEAD~1"),
        ("one", first, "one"),
        ("HEAD", third, "HEAD"),
    ):
        code, out, err = checkout(root, rev)
        assert code == 0, (rev, out, err)
        assert snapshot_files(root) == expected, rev
        assert (root / "volsegsync.index").read_bytes() == _blob(root, blob_rev)
        assert invoke(["-C", str(root), "status"]).exit_code == 0


def _branch(root: Path) -> str:
    from conftest import git

    return git(root, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()


def _blob(root: Path, rev: str) -> bytes:
    from volsegsync import history

    raw = history.read_at(root, rev, "volsegsync.index")
    assert raw is not None
    return raw


def test_unknown_rev_is_a_usage_error(paired: Path) -> None:
    code, _out, err = checkout(paired, "no-such-branch")
    assert code == 2
    assert "no-such-branch: unknown revision" in err
    assert_clean_stderr(err)


# --------------------------------------------------------------------------- never lose work


def test_unrecorded_edit_is_refused_and_force_keeps_it_restorable(
    tmp_path: Path, kind: str
) -> None:
    root = make_repo(tmp_path / "ds", kind)
    write_pair(root, NAME1, versions=(1,))
    write_pair(root, NAME2, versions=(1,))
    pair(root)
    commit(root, kind, "one")
    seg, other = root / SEG.format(1), root / f"{NAME2}.nii.gz"
    recorded = seg.read_bytes()
    seg.write_bytes(recorded + b"edit")  # an edit pair has not recorded
    edited = seg.read_bytes()
    other.unlink()  # would be restored, but the whole checkout is refused

    code, out, err = checkout(root)
    assert code == 1
    assert err.splitlines() == [
        f"volsegsync: refused: {SEG.format(1)}: holds content that is not in the store (an "
        "unrecorded edit); not overwritten: record it with 'volsegsync pair', or use --force "
        "to store it and overwrite"
    ]
    assert seg.read_bytes() == edited and not other.exists()

    code, out, err = checkout(root, "--force")
    assert code == 0, out + err
    assert seg.read_bytes() == recorded and other.exists()
    assert h(edited) in store_objects(root)  # the edit can still be restored
    assert store_objects(root)[h(edited)].read_bytes() == edited


def test_deleted_file_is_restored_and_recorded_in_the_stat_cache(paired: Path) -> None:
    vol = paired / f"{NAME1}.nii.gz"
    data = vol.read_bytes()
    vol.unlink()
    code, out, _err = checkout(paired)
    assert code == 0
    assert out.splitlines()[0] == f"restore: {NAME1}.nii.gz"
    assert vol.read_bytes() == data
    ds = Dataset.open(paired)
    cache = StatCache(ds.stat_db)
    try:
        row = cache.load()[f"{NAME1}.nii.gz"]
    finally:
        cache.close()
    st = vol.stat()
    assert row[:4] == (st.st_size, st.st_mtime_ns, st.st_ino, h(data))  # status: no rehash
    assert checkout(paired)[1].splitlines() == ["0 files changed, 0 problems"]


def test_missing_object_is_reported_and_the_rest_goes_on(paired: Path) -> None:
    vol1, vol2 = paired / f"{NAME1}.nii.gz", paired / f"{NAME2}.nii.gz"
    gone = h(vol1.read_bytes())
    store_objects(paired)[gone].unlink()
    vol1.unlink()
    vol2.unlink()
    result = invoke(["-C", str(paired), "checkout", "--format", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert [c["path"] for c in doc["changes"]] == [f"{NAME2}.nii.gz"]
    [problem] = doc["problems"]
    assert (problem["path"], problem["action"], problem["hash"]) == (
        f"{NAME1}.nii.gz",
        "missing",
        gone,
    )
    assert f"xxh3-128:{gone} is not in the store" in problem["message"]
    assert vol2.exists() and not vol1.exists()


def test_corrupt_object_is_never_copied_into_the_working_tree(paired: Path) -> None:
    vol = paired / f"{NAME1}.nii.gz"
    from storetools import corrupt

    corrupt(store_objects(paired)[h(vol.read_bytes())])
    vol.unlink()
    code, _out, err = checkout(paired)
    assert code == 1
    assert f"damaged: {NAME1}.nii.gz: content xxh3-128:" in err
    assert not vol.exists()
    assert not [p for p in paired.iterdir() if "volsegsync-tmp" in p.name]


def test_dry_run_lists_and_changes_nothing(paired: Path) -> None:
    (paired / f"{NAME1}.nii.gz").unlink()
    result = invoke(["-C", str(paired), "checkout", "--dry-run", "--format", "json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["schema"] == "volsegsync.checkout/1" and doc["dry_run"] is True
    assert [(c["path"], c["action"]) for c in doc["changes"]] == [(f"{NAME1}.nii.gz", "restore")]
    assert not (paired / f"{NAME1}.nii.gz").exists()


# --------------------------------------------------------------------------- hostile index


def test_index_line_pointing_outside_the_dataset_is_refused(tmp_path: Path, kind: str) -> None:
    root = make_repo(tmp_path / "ds", kind)
    write_pair(root, NAME1, versions=(1,))
    pair(root)
    digest = h((root / f"{NAME1}.nii.gz").read_bytes())
    text = (root / "volsegsync.index").read_text()
    hostile = text + f"X\tvolume\t-\t5\t{digest}\t../outside.nii.gz\n"
    (root / "volsegsync.index").write_text(hostile)
    commit(root, kind, "hostile", tag="evil")
    (root / "volsegsync.index").write_text(text)
    proc = run_script(["checkout", "evil"], cwd=root)
    assert proc.returncode == 2
    assert b"'../outside.nii.gz' escapes" in proc.stderr
    assert_clean_stderr(proc.stderr)
    assert not (tmp_path / "outside.nii.gz").exists()
    assert (root / "volsegsync.index").read_text() == text


def test_never_writes_through_a_symlinked_folder(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "ds", "git")
    write_pair(root, NAME1, versions=(1,), seg_dir="segs")
    pair(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    for p in (root / "segs").iterdir():
        p.unlink()
    (root / "segs").rmdir()
    (root / "segs").symlink_to(outside)
    code, _out, err = checkout(root)
    assert code == 1
    assert "segs is a symbolic link; not followed" in err
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- kill -9


def _big_dataset(root: Path, n: int) -> None:
    for i in range(n):
        write_nii(root / f"C{i:02d}-Big-D01012000.nii.gz", shape=(96, 96, 48))
    age_all(root)


def _kill_at_random(args: list[str], cwd: Path, rng: random.Random, span: float) -> bool:
    """Run volsegsync and kill -9 it at a random moment of a run that takes ``span``
    seconds when left alone; True when it was killed part-way."""
    proc = subprocess.Popen(
        [VOLSEGSYNC, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(rng.uniform(0.3, 0.95) * span)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return killed


def _duration(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    assert run_script(args, cwd=cwd).returncode in (0, 1)
    return time.perf_counter() - start


def _store_is_consistent(root: Path) -> None:
    for digest, path in store_objects(root).items():
        assert h(path.read_bytes()) == digest, f"{path} holds other content"


@pytest.mark.slow
def test_kill_9_during_pair_and_checkout_leaves_a_consistent_store(ds_root: Path) -> None:
    _big_dataset(ds_root, 12)
    rng = random.Random(8)
    meta = ds_root / ".volsegsync"

    def afresh() -> None:  # pair has everything to hash and store again
        shutil.rmtree(meta / "cache", ignore_errors=True)
        shutil.rmtree(meta / "state", ignore_errors=True)

    span = _duration(["pair", "-j", "2"], ds_root)
    kills = attempts = 0
    while attempts < 4 or (kills < 2 and attempts < 10):  # a run faster than the first
        attempts += 1  # one may end before its kill: try again, up to a bound
        afresh()
        kills += _kill_at_random(["pair", "-j", "2"], ds_root, rng, span)
        _store_is_consistent(ds_root)
    assert run_script(["pair"], cwd=ds_root).returncode in (0, 1)
    _store_is_consistent(ds_root)
    files = snapshot_files(ds_root)
    index = read_index_file(ds_root / "volsegsync.index")
    assert {r.digest for e in index.entries for r in e.records()} <= set(store_objects(ds_root))

    def remove() -> None:
        for name in files:
            (ds_root / name).unlink(missing_ok=True)

    remove()
    span = _duration(["checkout"], ds_root)
    paired_kills, attempts = kills, 0
    while attempts < 4 or (kills - paired_kills < 2 and attempts < 10):
        attempts += 1
        remove()
        kills += _kill_at_random(["checkout"], ds_root, rng, span)
        _store_is_consistent(ds_root)
        for name, data in snapshot_files(ds_root).items():
            if name in files:
                assert data == files[name], f"{name}: partly written under its final name"
    proc = run_script(["checkout"], cwd=ds_root)
    assert proc.returncode == 0, proc.stderr
    assert snapshot_files(ds_root) == files
    assert kills >= 4, "too few runs were killed part-way"


def test_quiet_checkout_as_hooks_run_it_reports_problems_on_stderr(paired: Path) -> None:
    vol1, vol2 = paired / f"{NAME1}.nii.gz", paired / f"{NAME2}.nii.gz"
    gone = h(vol1.read_bytes())
    store_objects(paired)[gone].unlink()
    vol1.unlink()
    vol2.unlink()
    proc = run_script(["checkout", "--quiet"], cwd=paired)
    assert proc.returncode == 1  # a hook ignores it; git's command goes on
    assert proc.stdout == b""
    assert proc.stderr.decode().splitlines() == [
        f"volsegsync: missing: {NAME1}.nii.gz: content xxh3-128:{gone} is not in the store; "
        "fetch it from a remote or restore the file from a copy, then run 'volsegsync pair'"
    ]
    assert vol2.exists()


def test_previous_removes_what_the_branch_left_behind_records(tmp_path: Path) -> None:
    """What a post-checkout hook does after ``git checkout``: the index is the new
    commit's; the files only the previous commit's index records go."""
    from conftest import git

    root = make_repo(tmp_path / "ds", "git")
    write_pair(root, NAME1, versions=(1,))
    pair(root)
    commit(root, "git", "one", tag="one")
    first = snapshot_files(root)
    write_nrrd(root / SEG.format(2), seed="second")
    write_pair(root, NAME2)
    pair(root)
    commit(root, "git", "two", tag="two")
    second = snapshot_files(root)
    git(root, "checkout", "-q", "one")
    code, out, err = checkout(root, "--previous", "two")
    assert code == 0, out + err
    assert snapshot_files(root) == first
    git(root, "checkout", "-q", "two")
    code, out, err = checkout(root, "--previous", "one")
    assert code == 0, out + err
    assert snapshot_files(root) == second


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a terminal")
def test_progress_bar_on_a_terminal_only(paired: Path) -> None:
    for name in (NAME1, NAME2):
        (paired / f"{name}.nii.gz").unlink()
    tty = subprocess.run(
        ["script", "-qec", f"{VOLSEGSYNC} checkout", "/dev/null"],
        cwd=paired,
        capture_output=True,
        timeout=60,
    )
    assert tty.returncode == 0
    assert b"checkout  [" in tty.stdout and b"100%" in tty.stdout
    for name in (NAME1, NAME2):
        (paired / f"{name}.nii.gz").unlink()
    piped = run_script(["checkout"], cwd=paired)
    assert piped.returncode == 0
    assert b"[" not in piped.stderr and b"%" not in piped.stdout


def test_fifo_at_a_recorded_path_does_not_hang_checkout_or_fsck(paired: Path) -> None:
    """Attack test: a FIFO where the index records an image, under timeout and ulimit -v."""
    vol = paired / f"{NAME1}.nii.gz"
    vol.unlink()
    os.mkfifo(vol)
    for command in ("checkout", "fsck --working"):
        proc = subprocess.run(
            ["bash", "-c", f"ulimit -v 3000000; exec {VOLSEGSYNC} {command}"],
            cwd=paired,
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 1, proc.stderr
        assert f"{NAME1}.nii.gz".encode() in proc.stdout + proc.stderr
        assert_clean_stderr(proc.stderr)
    assert stat.S_ISFIFO(os.lstat(vol).st_mode)  # not replaced: not ours to remove


def test_dataset_in_a_subfolder_of_the_repository(tmp_path: Path) -> None:
    from conftest import git

    from volsegsync.ops.init import init_dataset

    git(tmp_path, "init", "-q")
    root = tmp_path / "data" / "spine"
    root.mkdir(parents=True)
    init_dataset(root)
    write_pair(root, NAME1, versions=(1,))
    pair(root)
    commit(tmp_path, "git", "one", tag="one")
    first = snapshot_files(root)
    write_nrrd(root / SEG.format(2), seed="second")
    pair(root)
    commit(tmp_path, "git", "two")
    code, out, err = checkout(root, "one")
    assert code == 0, out + err
    assert snapshot_files(root) == first
    assert invoke(["-C", str(root), "gc", "--yes"]).exit_code == 0
    code, out, err = checkout(root, "HEAD")
    assert code == 0, out + err
    assert (root / SEG.format(2)).exists()
