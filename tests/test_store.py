"""The content store: ObjectDB over LocalFS, what pair stores, settings, caches."""

from __future__ import annotations

import importlib.util
import io
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from conftest import (
    NAME1,
    NAME2,
    assert_clean_stderr,
    git,
    invoke,
    run_script,
    write_pair,
)
from storetools import checkout, commit, h, make_repo, pair, snapshot_files, store_objects

from volsegsync.dataset import Dataset
from volsegsync.hashing import STAT_SCHEMA, StatCache
from volsegsync.index import read_index_file
from volsegsync.store import LocalFS, ObjectDB, ObjectProblem, supported_links


def _db(tmp_path: Path) -> ObjectDB:
    return ObjectDB(LocalFS(tmp_path / "store"))


# --------------------------------------------------------------------------- ObjectDB


def test_object_keys_are_sharded_and_objects_read_only(tmp_path: Path) -> None:
    db = _db(tmp_path)
    src = tmp_path / "a.bin"
    src.write_bytes(b"content")
    digest = h(b"content")
    assert db.add(src, "xxh3-128", digest) is True
    assert db.add(src, "xxh3-128", digest) is False  # already there
    obj = tmp_path / "store" / "xxh3-128" / digest[:2] / digest[2:]
    assert obj.read_bytes() == b"content"
    assert stat.S_IMODE(obj.stat().st_mode) == 0o444
    assert list(db.objects()) == [("xxh3-128", digest, 7)]
    assert not list((tmp_path / "store" / "tmp").iterdir())


@pytest.mark.parametrize("digest", ["../../etc/passwd", "0" * 31, "Z" * 32, "/" + "0" * 31])
def test_a_key_is_only_ever_a_digest(tmp_path: Path, digest: str) -> None:
    with pytest.raises(ObjectProblem):
        _db(tmp_path).has("xxh3-128", digest)
    with pytest.raises(ObjectProblem):
        _db(tmp_path).has("md5", "0" * 32)


def test_content_changed_since_hashing_gets_no_final_name(tmp_path: Path) -> None:
    db = _db(tmp_path)
    src = tmp_path / "a.bin"
    src.write_bytes(b"new content")
    with pytest.raises(ObjectProblem, match="changed while being stored"):
        db.add(src, "xxh3-128", h(b"old content"))
    assert list(db.objects()) == []
    assert not list((tmp_path / "store" / "tmp").iterdir())


@pytest.mark.parametrize("kind", ["hardlink", "symlink", "copy", "reflink"])
def test_link_types_place_verified_content(tmp_path: Path, kind: str) -> None:
    db = _db(tmp_path)
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 5000)
    digest = h(src.read_bytes())
    db.add(src, "xxh3-128", digest)
    dest = tmp_path / "work" / "b.bin"
    dest.parent.mkdir()
    used = db.place("xxh3-128", digest, dest, (kind, "copy"), 0o644)
    assert dest.read_bytes() == b"x" * 5000
    supported = supported_links(tmp_path / "probe")
    assert used == (kind if supported[kind] else "copy")
    obj = tmp_path / "store" / db.key("xxh3-128", digest)
    if used == "hardlink":
        assert dest.stat().st_ino == obj.stat().st_ino
    if used == "symlink":
        assert dest.is_symlink()
    # replaced, never written through: the object keeps its content
    other = tmp_path / "c.bin"
    other.write_bytes(b"other")
    db.add(other, "xxh3-128", h(b"other"))
    db.place("xxh3-128", h(b"other"), dest, (kind, "copy"), 0o644)
    assert dest.read_bytes() == b"other"
    assert obj.read_bytes() == b"x" * 5000


def test_hardlinked_working_file_is_replaced_by_checkout(paired: Path) -> None:
    (paired / ".volsegsync" / "config.local.toml").write_text('[store]\nlink = ["hardlink"]\n')
    vol = paired / f"{NAME1}.nii.gz"
    data = vol.read_bytes()
    vol.unlink()
    assert checkout(paired)[0] == 0
    obj = store_objects(paired)[h(data)]
    assert vol.stat().st_ino == obj.stat().st_ino  # no doubled disk use
    os.chmod(vol, 0o644)
    vol.unlink()
    vol.write_bytes(data + b"edit")  # an editor writes a new file: the object is untouched
    pair(paired)
    assert obj.read_bytes() == data


# --------------------------------------------------------------------------- pair stores


def test_pair_stores_every_recorded_version(ds_root: Path) -> None:
    write_pair(ds_root, NAME1, versions=(1, 2, 3))
    pair(ds_root)
    index = read_index_file(ds_root / "volsegsync.index")
    recorded = {r.digest for e in index.entries for r in e.records()}
    assert len(recorded) == 4
    assert set(store_objects(ds_root)) == recorded
    git_status = git(ds_root, "status", "--porcelain", "--untracked-files=all").stdout
    assert ".volsegsync/cache" not in git_status  # ignored by git
    assert "state" not in str(next(iter(store_objects(ds_root).values())))


def test_pair_no_store_and_the_config_switch(ds_root: Path) -> None:
    write_pair(ds_root, NAME1)
    result = invoke(["-C", str(ds_root), "pair", "--no-store", "--format", "json"])
    assert result.exit_code == 0
    assert '"store": null' in result.stdout
    assert store_objects(ds_root) == {}
    config = ds_root / ".volsegsync" / "config.toml"
    config.write_text(config.read_text() + "\n[store]\nenabled = false\n")
    pair(ds_root)
    assert store_objects(ds_root) == {}
    pair(ds_root, "--store")
    assert len(store_objects(ds_root)) == 2


@pytest.mark.parametrize("kind", ["dulwich", "git"])
def test_shared_store_dir_between_two_clones(tmp_path: Path, kind: str) -> None:
    shared = tmp_path / "nas" / "store"
    one = make_repo(tmp_path / "one", kind)
    local = f'[store]\ndir = "{shared}"\n'
    (one / ".volsegsync" / "config.local.toml").write_text(local)
    write_pair(one, NAME1, versions=(1, 2))
    write_pair(one, NAME2)
    pair(one)
    commit(one, kind, "data")
    assert not (one / ".volsegsync" / "cache").exists()
    two = tmp_path / "two"
    if kind == "git":
        git(tmp_path, "clone", "-q", str(one), str(two))
    else:
        from dulwich import porcelain

        porcelain.clone(str(one), str(two), errstream=io.BytesIO()).close()
    assert not (two / f"{NAME1}.nii.gz").exists()  # git does not carry the images
    (two / ".volsegsync" / "config.local.toml").write_text(local)
    code, out, err = checkout(two)
    assert code == 0, out + err
    assert snapshot_files(two) == snapshot_files(one)
    assert invoke(["-C", str(two), "status"]).exit_code == 0
    assert "config.local.toml" not in git(two, "status", "--porcelain").stdout


def test_bad_local_config_is_one_line(paired: Path) -> None:
    (paired / ".volsegsync" / "config.local.toml").write_text('[store]\nlink = ["teleport"]\n')
    proc = run_script(["checkout"], cwd=paired)
    assert proc.returncode == 2
    assert b"config.local.toml: [store.link] must be a non-empty list of" in proc.stderr
    assert_clean_stderr(proc.stderr)


# --------------------------------------------------------------------------- hash algorithms


def test_sha256_index_and_store_keys(ds_root: Path) -> None:
    config = ds_root / ".volsegsync" / "config.toml"
    config.write_text(config.read_text() + '\n[store]\nhash = "sha256"\n')
    write_pair(ds_root, NAME1)
    pair(ds_root)
    index = read_index_file(ds_root / "volsegsync.index")
    assert index.algorithm == "sha256"
    assert (ds_root / "volsegsync.index").read_text().splitlines()[1] == "hash sha256"
    import hashlib

    digest = hashlib.sha256((ds_root / f"{NAME1}.nii.gz").read_bytes()).hexdigest()
    assert index.entries[0].volume is not None and index.entries[0].volume.digest == digest
    assert (ds_root / ".volsegsync" / "cache" / "sha256" / digest[:2] / digest[2:]).is_file()
    (ds_root / f"{NAME1}.nii.gz").unlink()
    assert checkout(ds_root)[0] == 0
    assert invoke(["-C", str(ds_root), "status"]).exit_code == 0


@pytest.mark.skipif(importlib.util.find_spec("blake3") is not None, reason="blake3 installed")
def test_blake3_without_the_package_is_one_line(ds_root: Path) -> None:
    config = ds_root / ".volsegsync" / "config.toml"
    config.write_text(config.read_text() + '\n[store]\nhash = "blake3"\n')
    write_pair(ds_root, NAME1)
    proc = run_script(["pair"], cwd=ds_root)
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().splitlines() == [
        "volsegsync: error: hash algorithm blake3 needs the 'blake3' package: pip install blake3"
    ]


# --------------------------------------------------------------------------- index formats


def test_format1_index_is_upgraded_by_pair(paired: Path) -> None:
    entries = Dataset.open(paired).read_index()
    lines = ["volsegsync-index 1", "# v1"]
    for e in entries:
        assert e.volume and e.segmentation
        v, s = e.volume, e.segmentation
        cols = [v.path, "->", s.path, "1", str(v.size), v.digest, str(s.size), s.digest]
        lines.append("\t".join(cols))
    old = paired / "volsegsync.index"
    upgraded = old.read_bytes()
    old.write_text("\n".join(lines) + "\n")
    assert invoke(["-C", str(paired), "status"]).exit_code == 0  # read: the same pairs
    pair(paired)
    assert old.read_bytes() == upgraded


def test_newer_index_format_is_refused_never_overwritten(paired: Path) -> None:
    index = paired / "volsegsync.index"
    index.write_text("volsegsync-index 3\nsomething new\n")
    proc = run_script(["pair"], cwd=paired)
    assert proc.returncode == 2
    assert b"index format version '3' is not supported" in proc.stderr
    assert index.read_text() == "volsegsync-index 3\nsomething new\n"
    assert run_script(["checkout"], cwd=paired).returncode == 2


# --------------------------------------------------------------------------- caches


def test_stat_cache_of_another_schema_is_emptied(tmp_path: Path) -> None:
    db_path = tmp_path / "stat.db"
    db = sqlite3.connect(db_path)
    db.execute(
        "CREATE TABLE stat (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
        "ino INTEGER, digest TEXT, problem TEXT)"
    )
    db.execute("INSERT INTO stat VALUES ('a', 1, 2, 3, 'stale', NULL)")
    db.commit()
    db.close()
    cache = StatCache(db_path)
    try:
        assert cache.load() == {}
    finally:
        cache.close()
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == STAT_SCHEMA
    db.close()


def test_copy_between_object_databases_checks_the_hash(tmp_path: Path) -> None:
    """What push, pull and fetch build on: one ObjectDB to another, hash checked."""
    here, there = _db(tmp_path), ObjectDB(LocalFS(tmp_path / "remote"), "prefix/objects")
    src = tmp_path / "a.bin"
    src.write_bytes(b"payload")
    digest = h(b"payload")
    here.add(src, "xxh3-128", digest)
    assert there.copy_from(here, "xxh3-128", digest) is True
    assert there.copy_from(here, "xxh3-128", digest) is False
    remote_obj = tmp_path / "remote" / "prefix" / "objects" / here.key("xxh3-128", digest)
    assert remote_obj.read_bytes() == b"payload"
    from storetools import corrupt

    corrupt(remote_obj)
    here.remove("xxh3-128", digest)
    with pytest.raises(ObjectProblem, match="does not match its hash; rejected"):
        here.copy_from(there, "xxh3-128", digest)
    assert not here.has("xxh3-128", digest)
    assert not list((tmp_path / "store" / "tmp").iterdir())
