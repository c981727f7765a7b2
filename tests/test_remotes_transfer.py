"""The fast transfer paths of remotes: kernel copies to and from a folder remote, and
pull's checkout that does not hash again what its fetch just verified.

Each test checks that speed took nothing away: a damaged object is still caught and
named, a killed pull leaves no object or working file with wrong content, objects that
were in the store before the pull are still hashed, hostile remote contents (a link,
a FIFO) are refused without a hang."""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import xxhash
from conftest import NAME2, VOLSEGSYNC, write_nii
from test_remotes import (
    _slow_dataset,
    clone,
    commit,
    indexed_files,
    make_dataset,
    store_objects,
    vs,
)

from volsegsync import store as store_module
from volsegsync.dataset import Dataset
from volsegsync.magic import HEAD_BYTES, sniff
from volsegsync.store import (
    LocalFS,
    ObjectDB,
    ObjectProblem,
    WrongContent,
    copy_object,
    copy_trusted,
    copy_verified,
    hash_cold,
    supported_links,
)


def _digest_of(root: Path, path: str) -> str:
    records = [rec for e in Dataset.open(root).read_index() for rec in e.records()]
    return next(rec.digest for rec in records if rec.path == path)


def _flip_last_byte(path: Path) -> None:
    """Same size, other content: only a hash check can tell."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def _pushed(tmp_path: Path) -> tuple[Path, Path]:
    root = make_dataset(tmp_path / "a")
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "origin", str(remote), "--default")
    assert vs(root, "push").returncode == 0
    commit(root, "dataset")
    return root, remote


def _no_temporaries(root: Path) -> None:
    assert not list((root / ".volsegsync" / "cache").glob("tmp/*"))
    assert not [p for p in root.rglob("*volsegsync-tmp*")]


def _objects_match_names(root: Path) -> None:
    for digest, data in store_objects(root).items():
        assert xxhash.xxh3_128_hexdigest(data) == digest


REFLINK_DIRS = (os.environ.get("VOLSEGSYNC_REFLINK_DIR", ""), "/mnt/xfs")


@pytest.fixture(params=["tmp", "reflink"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A folder for a test's dataset, remote and clone: the test's own (``copy_file_range``
    copies on most test machines), or one on a filesystem that shares extents
    (``$VOLSEGSYNC_REFLINK_DIR``, else /mnt/xfs, else the test's own if it can), where
    transfers are reflinks hashed with O_DIRECT reads; skipped where there is none."""
    if request.param == "tmp":
        yield tmp_path
        return
    for folder in (*REFLINK_DIRS, str(tmp_path)):
        if folder and os.path.isdir(folder) and os.access(folder, os.W_OK):
            made = Path(tempfile.mkdtemp(prefix="volsegsync-test-", dir=folder))
            if supported_links(made / "probe")["reflink"]:
                try:
                    yield made
                finally:
                    shutil.rmtree(made, ignore_errors=True)
                return
            shutil.rmtree(made, ignore_errors=True)
    pytest.skip("no folder on a filesystem with reflinks (set VOLSEGSYNC_REFLINK_DIR)")


def test_pull_rejects_a_corrupted_object_and_writes_no_working_file(base: Path) -> None:
    """The copy from a folder remote (a kernel copy, or a reflink hashed from the disk)
    is hashed as written: a damaged object is rejected and named with its path, its
    working file is not written, the rest is."""
    tmp_path = base
    root, remote = _pushed(tmp_path)
    seg = f"{NAME2}-v1.nrrd"
    digest = _digest_of(root, seg)
    _flip_last_byte(remote / "xxh3-128" / digest[:2] / digest[2:])
    copy = clone(root, tmp_path / "b")
    r = vs(copy, "pull")
    assert r.returncode == 1
    errors = [ln for ln in r.stdout.splitlines() if ln.startswith("error:")]
    assert any(digest in ln and seg in ln and "does not match" in ln for ln in errors), r.stdout
    assert digest not in store_objects(copy)
    assert not (copy / seg).exists()
    for path, data in indexed_files(root).items():
        if path != seg:
            assert (copy / path).read_bytes() == data
    _objects_match_names(copy)
    _no_temporaries(copy)


def test_pull_still_hashes_objects_it_did_not_fetch(tmp_path: Path) -> None:
    """Only what this pull fetched (and so hashed) skips the second hash: an object that
    was already in the store, damaged since, never reaches the working tree."""
    root, _remote = _pushed(tmp_path)
    copy = clone(root, tmp_path / "b")
    assert vs(copy, "fetch").returncode == 0
    seg = f"{NAME2}-v1.nrrd"
    digest = _digest_of(root, seg)
    _flip_last_byte(copy / ".volsegsync" / "cache" / "xxh3-128" / digest[:2] / digest[2:])
    r = vs(copy, "pull")
    assert r.returncode == 1
    assert "fetched 0 objects" in r.stdout, r.stdout
    assert seg in r.stdout + r.stderr and "damaged" in r.stdout + r.stderr
    assert not (copy / seg).exists()


@pytest.mark.parametrize("phase", ["fetch", "checkout"])
def test_pull_killed_part_way_leaves_nothing_wrong_and_resumes(tmp_path: Path, phase: str) -> None:
    """``kill -9`` while objects enter the store (fetch) or while working files are
    written (checkout): every object under its final name and every working file holds
    the right content, and the next pull completes."""
    root = _slow_dataset(tmp_path / "a", 40, 48)
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "origin", str(remote), "--default")
    assert vs(root, "push").returncode == 0
    commit(root, "dataset")
    want = indexed_files(root)
    copy = clone(root, tmp_path / "b")
    proc = subprocess.Popen(
        [VOLSEGSYNC, "-C", str(copy), "pull", "--jobs", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cache = copy / ".volsegsync" / "cache" / "xxh3-128"

    def progressed() -> bool:
        if phase == "fetch":
            return len(list(cache.glob("*/*"))) >= 3
        return sum((copy / p).exists() for p in want) >= 1

    deadline = time.monotonic() + 60
    while not progressed() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    present = [p for p in want if (copy / p).exists()]
    objects = store_objects(copy)
    assert objects, "the pull was killed before it started"
    if phase == "fetch":
        assert len(objects) < len(want), "the fetch was not interrupted part-way"
    else:
        assert len(present) < len(want), "the checkout was not interrupted part-way"
    _objects_match_names(copy)  # nothing under a final name with wrong content
    for p in present:
        assert (copy / p).read_bytes() == want[p]
    r = vs(copy, "pull")
    assert r.returncode == 0, r.stdout + r.stderr
    assert indexed_files(copy) == want
    _objects_match_names(copy)


def test_hostile_objects_on_a_folder_remote_are_refused(tmp_path: Path) -> None:
    """An object that is a symbolic link or a FIFO on the remote is refused by name
    (nothing is read through the link, the FIFO does not hang the run); the rest moves."""
    root, remote = _pushed(tmp_path)
    objects = sorted(remote.glob("xxh3-128/*/*"))
    linked, fifo = objects[0], objects[1]
    outside = tmp_path / "outside"
    shutil.copy(linked, outside)  # even the right content is not read through a link
    linked.unlink()
    linked.symlink_to(outside)
    fifo.unlink()
    os.mkfifo(fifo)
    copy = clone(root, tmp_path / "b")
    r = vs(copy, "fetch")  # run_script's timeout: a hang fails the test
    assert r.returncode == 1
    failed = [ln for ln in r.stdout.splitlines() if ln.startswith("error:")]
    for p in (linked, fifo):
        assert any(p.parent.name + p.name in ln for ln in failed), r.stdout
    got = store_objects(copy)
    assert len(got) == len(objects) - 2
    _objects_match_names(copy)
    _no_temporaries(copy)


def test_push_to_a_folder_hashes_what_it_wrote(base: Path) -> None:
    """A local object damaged in the store is not sent (its copy on the remote, a kernel
    copy or a reflink, is hashed before it gets its name); the others are, each
    matching its name."""
    tmp_path = base
    root = make_dataset(tmp_path / "a")
    seg = f"{NAME2}-v1.nrrd"
    digest = _digest_of(root, seg)
    _flip_last_byte(root / ".volsegsync" / "cache" / "xxh3-128" / digest[:2] / digest[2:])
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "nas", str(remote), "--default")
    r = vs(root, "push")
    assert r.returncode == 1
    assert any(digest in ln and "does not match" in ln for ln in r.stdout.splitlines())
    on_remote = {p.parent.name + p.name: p.read_bytes() for p in remote.glob("xxh3-128/*/*")}
    assert digest not in on_remote and len(on_remote) == len(store_objects(root)) - 1
    for name, data in on_remote.items():
        assert xxhash.xxh3_128_hexdigest(data) == name
    assert not list(remote.glob("tmp/*"))


def test_kernel_copy_across_filesystems(tmp_path: Path) -> None:
    """copy_file_range may refuse two filesystems (EXDEV): the copy falls back and is
    still whole and hashed as written. /dev/shm is a tmpfs, the test folder usually not."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm")
    data = os.urandom(3 * (1 << 20) + 17)  # several chunks and a partial one
    src = shm / f"volsegsync-test-{os.getpid()}"
    src.write_bytes(data)
    try:
        dst = tmp_path / "copy"
        assert copy_verified(src, dst, "xxh3-128", 0o640) == xxhash.xxh3_128_hexdigest(data)
        assert dst.read_bytes() == data and (dst.stat().st_mode & 0o777) == 0o640
        again = tmp_path / "again"
        copy_trusted(src, again, 0o600)
        assert again.read_bytes() == data
        with pytest.raises(FileExistsError):  # never over an existing file
            copy_trusted(src, again, 0o600)
    finally:
        src.unlink()


@pytest.mark.parametrize("copy", [copy_verified, copy_object])
def test_copies_hash_every_window_of_what_they_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy: Callable[..., str]
) -> None:
    """copy_verified hashes the written copy, copy_object (a store object: read once)
    each window of the source before writing it from the same mapping: through memory
    maps of MAP_WINDOW bytes, so with a small window a file spans several maps and a
    partial one; every algorithm; an empty file (which cannot be mapped); write_back
    (the push's hint) changes nothing written; the new file gets exactly the mode asked
    for, and is never created over a file or through a link."""
    monkeypatch.setattr(store_module, "MAP_WINDOW", 2 * mmap.ALLOCATIONGRANULARITY)
    data = os.urandom(5 * mmap.ALLOCATIONGRANULARITY + 123)
    src = tmp_path / "src"
    src.write_bytes(data)
    src.chmod(0o444)
    expected = {
        "xxh3-128": xxhash.xxh3_128_hexdigest(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    for i, (algorithm, digest) in enumerate(expected.items()):
        dst = tmp_path / f"copy{i}"
        assert copy(src, dst, algorithm, 0o640, write_back=bool(i)) == digest
        assert dst.read_bytes() == data and (dst.stat().st_mode & 0o777) == 0o640
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert copy(empty, tmp_path / "e2", "sha256", 0o644) == hashlib.sha256().hexdigest()
    with pytest.raises(FileExistsError):
        copy(src, tmp_path / "copy0", "sha256", 0o644)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        copy(src, tmp_path / "link", "sha256", 0o644)
    assert not (tmp_path / "elsewhere").exists()


def test_add_download_hashes_the_linked_file_and_rejects_wrong_content(tmp_path: Path) -> None:
    """A download (the S3 fetch's temporary file) is hard-linked into the store and
    hashed in place: wrong content gets no object and leaves no temporary."""
    db = ObjectDB(LocalFS(tmp_path / "store"))
    data = os.urandom(3 * mmap.ALLOCATIONGRANULARITY + 5)
    digest = xxhash.xxh3_128_hexdigest(data)
    (tmp_path / "store" / "tmp").mkdir(parents=True)
    download = tmp_path / "store" / "tmp" / "fetch-1"
    download.write_bytes(data[:-1] + b"x")
    with pytest.raises(WrongContent):
        db.add_download(download, "xxh3-128", digest)
    assert not db.has("xxh3-128", digest)
    assert [p.name for p in (tmp_path / "store" / "tmp").iterdir()] == ["fetch-1"]
    download.write_bytes(data)
    assert db.add_download(download, "xxh3-128", digest)
    stored = tmp_path / "store" / db.key("xxh3-128", digest)
    assert stored.read_bytes() == data and (stored.stat().st_mode & 0o777) == 0o444
    assert db.add_download(download, "xxh3-128", digest) is False


def test_place_of_a_verified_object_and_of_a_damaged_one(tmp_path: Path) -> None:
    """place(verified=True) copies without a second hash; without it a damaged object
    is refused and its destination untouched."""
    write_nii(tmp_path / "v.nii.gz")
    src = tmp_path / "v.nii.gz"
    digest = xxhash.xxh3_128_hexdigest(src.read_bytes())
    db = ObjectDB(LocalFS(tmp_path / "store"))
    assert db.add_copy(src, "xxh3-128", digest) is True
    assert db.add_copy(src, "xxh3-128", digest) is False  # already there
    dest = tmp_path / "out" / "v.nii.gz"
    dest.parent.mkdir()
    assert db.place("xxh3-128", digest, dest, ("copy",), 0o644, verified=True) == "copy"
    assert dest.read_bytes() == src.read_bytes()
    obj = tmp_path / "store" / db.object_path("xxh3-128", digest)
    assert (obj.stat().st_mode & 0o777) == 0o444  # sealed
    _flip_last_byte(obj)
    other = tmp_path / "out" / "w.nii.gz"
    with pytest.raises(Exception, match="damaged"):
        db.place("xxh3-128", digest, other, ("copy",), 0o644)
    assert not other.exists() and not list(other.parent.glob("*volsegsync-tmp*"))


def test_copy_object_refuses_a_source_changed_while_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object written to while it is copied (same size: only its stat tells) is
    refused: the bytes written may not be the bytes hashed. A push then sends nothing
    under its name and leaves no temporary on the remote."""
    root = make_dataset(tmp_path / "a")
    digest = _digest_of(root, f"{NAME2}-v1.nrrd")
    obj = root / ".volsegsync" / "cache" / "xxh3-128" / digest[:2] / digest[2:]
    real = store_module._hash_and_write

    def racing_writer(src: int, dst: int, size: int, algorithm: str) -> str:
        found = real(src, dst, size, algorithm)
        if os.path.samestat(os.fstat(src), os.stat(obj)):  # another process writes it
            os.utime(obj, ns=(1, 1))
        return found

    monkeypatch.setattr(store_module, "_hash_and_write", racing_writer)
    with pytest.raises(ObjectProblem, match="changed while being copied"):
        copy_object(obj, tmp_path / "out", "xxh3-128", 0o644)
    os.utime(obj)
    from volsegsync.ops.push import run_push

    remote = tmp_path / "remote"
    vs(root, "remote", "add", "nas", str(remote), "--default")
    report = run_push(Dataset.open(root))
    assert [f.ref.digest for f in report.failed] == [digest]
    assert "changed while being copied" in report.failed[0].reason
    assert not (remote / "xxh3-128" / digest[:2] / digest[2:]).exists()
    assert not list(remote.glob("tmp/*"))
    assert len(report.moved) == len(store_objects(root)) - 1


@pytest.mark.parametrize("direct", [True, False])
def test_hash_cold_reads_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """hash_cold (the hash of a new reflink, read with O_DIRECT) gives the hash of the
    whole file: several buffers and a partial one, pages still dirty (written, not yet
    on the disk), an empty file, every algorithm; the descriptor's flags are as before.
    Without O_DIRECT (another system) it reads through the page cache."""
    if not direct:
        monkeypatch.delattr(os, "O_DIRECT", raising=False)
    data = os.urandom(3 * (1 << 20) + 4097)
    for name, content in (("data", data), ("empty", b"")):
        path = tmp_path / name
        path.write_bytes(content)
        fd = os.open(path, os.O_RDWR)
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            assert hash_cold(fd, "xxh3-128") == xxhash.xxh3_128_hexdigest(content)
            assert hash_cold(fd, "sha256") == hashlib.sha256(content).hexdigest()
            assert fcntl.fcntl(fd, fcntl.F_GETFL) == flags
        finally:
            os.close(fd)


def test_pull_caches_each_written_file_as_a_fresh_hash_would(base: Path) -> None:
    """A pull's checkout takes each file's format check from the bytes its fetch read
    (a reflink's are on the disk only) instead of reading them again: every stat-cache
    row it writes matches the file (stat, digest) and what its own first bytes say."""
    root, _remote = _pushed(base)
    copy = clone(root, base / "b")
    assert vs(copy, "pull").returncode == 0
    rows = Dataset.open(copy).cached_hashes()
    want = indexed_files(root)
    assert sorted(rows) == sorted(want)
    for path, data in want.items():
        st = os.lstat(copy / path)
        size, mtime_ns, ino, digest, problem = rows[path]
        assert (size, mtime_ns, ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
        assert digest == xxhash.xxh3_128_hexdigest(data)
        assert problem == sniff(path, data[:HEAD_BYTES])
