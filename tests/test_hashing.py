"""Content hashing (xxh3-128, streamed), the file-format sniffing and the stat cache."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import xxhash
from conftest import NAME1, overwrite_same_size, set_mtime, write_nii, write_nrrd

from volsegsync.dataset import Dataset
from volsegsync.hashing import CHUNK, Hashed, Stat, hash_file, hash_many
from volsegsync.magic import HEAD_BYTES, sniff
from volsegsync.ops.snapshot import Pipeline


def xxh(path: Path) -> str:
    return str(xxhash.xxh3_128(path.read_bytes()).hexdigest())


@pytest.mark.parametrize("size", [0, 1, 1000, CHUNK, CHUNK + 1, 2 * CHUNK + 12345])
def test_hash_file_equals_xxh3_128_of_the_bytes(tmp_path: Path, size: int) -> None:
    path = tmp_path / "blob.nrrd"
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    digest, st, head = hash_file(path)
    assert digest == xxhash.xxh3_128(data).hexdigest()
    assert len(digest) == 32
    assert head == data[:HEAD_BYTES]
    real = os.stat(path)
    assert st == Stat(size, real.st_mtime_ns, real.st_ino)


def test_sniff_real_files(tmp_path: Path) -> None:
    nii_gz = write_nii(tmp_path / "a.nii.gz")
    nrrd_file = write_nrrd(tmp_path / "a.nrrd")
    nii = tmp_path / "b.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)), str(nii))  # type: ignore[no-untyped-call]
    for path in (nii_gz, nrrd_file, nii):
        assert sniff(path.name, path.read_bytes()[:HEAD_BYTES]) is None, path


def test_sniff_garbage() -> None:
    assert sniff("x.nrrd", b"garbage") == "not a NRRD file (no NRRD000 magic)"
    assert sniff("x.seg.nrrd", b"") == "not a NRRD file (no NRRD000 magic)"
    assert sniff("x.nii.gz", b"garbage") == "not a gzip-compressed NIfTI file (no gzip magic)"
    assert sniff("x.nii.gz", gzip.compress(b"hello")) == (
        "not a NIfTI file (only 5 bytes, a header needs 348)"
    )
    assert sniff("x.nii.gz", gzip.compress(bytes(400))) == (
        "not a NIfTI file (bad header size or magic)"
    )
    reason = sniff("x.nii.gz", b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 50)
    assert reason is not None and reason.startswith("corrupt gzip stream: ")
    assert sniff("x.nii", bytes(10)) == "not a NIfTI file (only 10 bytes, a header needs 348)"
    assert sniff("x.txt", b"anything") is None


def test_hash_many_serial_and_parallel_agree(tmp_path: Path) -> None:
    names = [f"{NAME1}-v{i}.nrrd" for i in range(1, 7)]
    for name in names:
        write_nrrd(tmp_path / name)
    (tmp_path / "junk.nrrd").write_bytes(b"not an image")
    todo = [(n, Stat(0, 0, 0)) for n in [*names, "junk.nrrd", "missing.nrrd"]]
    ticks: list[int] = []
    serial = list(hash_many(tmp_path, todo, jobs=1, on_done=lambda: ticks.append(1)))
    parallel = list(hash_many(tmp_path, todo, jobs=4))
    assert serial == parallel
    assert len(ticks) == len(todo)
    by_path = {r.path if isinstance(r, Hashed) else r[0]: r for r in serial}
    for name in names:
        result = by_path[name]
        assert isinstance(result, Hashed)
        assert result.digest == xxh(tmp_path / name)
        assert result.problem is None
    junk = by_path["junk.nrrd"]
    assert isinstance(junk, Hashed)
    assert junk.problem == "not a NRRD file (no NRRD000 magic)"
    assert by_path["missing.nrrd"] == ("missing.nrrd", "cannot read: No such file or directory")


def test_pipeline_trusts_an_unchanged_stat(ds_root: Path) -> None:
    path = write_nii(ds_root / f"{NAME1}.nii.gz")
    mtime_ns = set_mtime(path)
    ds = Dataset.open(ds_root)
    original = xxh(path)
    assert Pipeline(ds).update(jobs=1).problem_count == 1  # unpaired
    assert Pipeline(ds).trusted_files()[f"{NAME1}.nii.gz"][1] == original
    # new content, same size, same inode, mtime put back: the stat is unchanged
    overwrite_same_size(path)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    assert xxh(path) != original
    [case] = Pipeline(ds).update(jobs=1).cases()
    assert case.members[0].digest == original  # from the memo, not read
    # a different mtime: read again
    os.utime(path, ns=(mtime_ns + 1_000_000_000, mtime_ns + 1_000_000_000))
    [case] = Pipeline(ds).update(jobs=1).cases()
    assert case.members[0].digest == xxh(path) != original


def test_pipeline_forgets_vanished_files(ds_root: Path) -> None:
    a = write_nrrd(ds_root / f"{NAME1}-v1.nrrd")
    b = write_nrrd(ds_root / f"{NAME1}-v2.nrrd")
    set_mtime(a)
    set_mtime(b)
    ds = Dataset.open(ds_root)
    Pipeline(ds).update()
    assert sorted(Pipeline(ds).trusted_files()) == [a.name, b.name]
    b.unlink()
    Pipeline(ds).update()
    assert sorted(Pipeline(ds).trusted_files()) == [a.name]


def test_small_files_of_a_folder_are_hashed_as_one_by_one(tmp_path: Path) -> None:
    """``hash_small_files`` takes only a file read in full at the size the walk gave;
    everything else goes to ``hash_many``, which checks the opened file's type."""
    from volsegsync.hashing import hash_small_files
    from volsegsync.magic import names_data_file

    write_nii(tmp_path / f"{NAME1}.nii.gz")
    write_nrrd(tmp_path / f"{NAME1}-v1.nrrd")
    (tmp_path / "garbage.nii.gz").write_bytes(b"not an image")
    (tmp_path / "detached.nrrd").write_bytes(b"NRRD0004\ndata file: x.raw\n\n")
    (tmp_path / "empty.nrrd").write_bytes(b"")
    (tmp_path / "grew.nrrd").write_bytes(b"NRRD0004\n" * 3)
    os.mkfifo(tmp_path / "fifo.nrrd")
    (tmp_path / "folder.nrrd").mkdir()
    (tmp_path / "link.nrrd").symlink_to(tmp_path / f"{NAME1}-v1.nrrd")
    (tmp_path / "large.nrrd").write_bytes(b"NRRD0004\n" + b"\0" * CHUNK)
    names = sorted(p.name for p in tmp_path.iterdir())
    sizes = [os.lstat(tmp_path / n).st_size for n in names]
    sizes[names.index("grew.nrrd")] -= 1  # as the walk saw it: grown since
    sizes[names.index("fifo.nrrd")] = 5  # a regular file when walked: a FIFO now
    done, rest = hash_small_files(str(tmp_path), names, sizes, range(len(names)))
    expected_done = {f"{NAME1}.nii.gz", f"{NAME1}-v1.nrrd", "garbage.nii.gz", "detached.nrrd"}
    assert {names[i] for i, *_ in done} == expected_done
    assert sorted(names[i] for i in rest) == sorted(set(names) - expected_done)
    for i, digest, problem, detached in done:
        path = tmp_path / names[i]
        want, _st, head = hash_file(path)
        assert (digest, problem, detached) == (
            want,
            sniff(names[i], head),
            names_data_file(names[i], head),
        )
    assert [p for _, _, p, _ in done if p] == [sniff("garbage.nii.gz", b"not an image")]
    # a folder that is a link now is not entered
    (tmp_path.parent / "via-link").symlink_to(tmp_path)
    done, rest = hash_small_files(str(tmp_path.parent / "via-link"), names, sizes, [0, 1])
    assert (done, rest) == ([], [0, 1])
