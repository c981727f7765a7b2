"""Hostile input (issue 6): every attack, run for real in a subprocess.

Each attack runs the installed ``volsegsync`` under ``timeout`` and ``ulimit -v``
(see :func:`hostile`), so a regression fails (exit 124 or a MemoryError) instead
of hanging CI or exhausting the machine. Files, FIFOs, links, repositories and
users are real; docs/security.md describes the policy these tests hold.
"""

from __future__ import annotations

import bz2
import gzip
import json
import marshal
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import xxhash
from conftest import (
    NAME1,
    NAME2,
    VOLSEGSYNC,
    age_all,
    alive,
    assert_clean_stderr,
    init_with_git_binary,
    write_nii,
    write_nrrd,
    write_pair,
)

from volsegsync.headers import HeaderProblem, detached_data_paths

MEMORY_KB = 2_000_000  # ulimit -v for every attack: a bomb that is decoded whole fails
SECONDS = 30
SECRET = "TOP-SECRET-0123456789abcdef-credentials-do-not-leak"


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[bytes]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout.decode("utf-8", "surrogateescape")
        self.err = proc.stderr.decode("utf-8", "surrogateescape")
        self.raw_out = proc.stdout

    def json(self) -> Any:
        return json.loads(self.out)


def hostile(root: Path, *args: str, seconds: int = SECONDS) -> Run:
    """``volsegsync ARGS`` in ``root`` under ``ulimit -v`` and ``timeout``."""
    script = f'ulimit -v {MEMORY_KB}; exec timeout {seconds} "$0" "$@"'
    env = {k: v for k, v in os.environ.items() if k != "VOLSEGSYNC_DEBUG"}
    proc = subprocess.run(
        ["bash", "-c", script, VOLSEGSYNC, *args],
        cwd=root,
        capture_output=True,
        timeout=seconds + 30,
        env=env,
    )
    run = Run(proc)
    assert run.code != 124, f"volsegsync {' '.join(args)} timed out after {seconds} s"
    assert_clean_stderr(run.err)
    return run


def one_line_error(run: Run, *words: str) -> None:
    assert run.code == 2, (run.code, run.out, run.err)
    lines = run.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("volsegsync: error: "), run.err
    for word in words:
        assert word in lines[0], run.err


def problems(run: Run) -> list[tuple[str, str, str]]:
    return [(p["category"], p["files"][0], p["message"]) for p in run.json()["problems"]]


def messages(run: Run) -> str:
    return "\n".join(m for _, _, m in problems(run))


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    root = init_with_git_binary(tmp_path / "ds")
    write_pair(root, NAME1)
    age_all(root)
    return root


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


def nrrd_header(
    encoding: str, sizes: str = "4 4 3", extra: str = "", type_: str = "uint8"
) -> bytes:
    text = f"NRRD0004\ntype: {type_}\ndimension: {len(sizes.split())}\nsizes: {sizes}\n"
    return (text + f"encoding: {encoding}\nendian: little\n{extra}\n").encode()


# --------------------------------------------------------------------------- 1. detached data


def write_detached(ds: Path, data_file: str) -> Path:
    seg = ds / f"{NAME1}-v1.nrrd"
    seg.write_bytes(nrrd_header("raw", extra=f"data file: {data_file}\n"))
    return seg


@pytest.mark.parametrize("how", ["absolute", "dotdot", "folder"])
def test_detached_data_outside_the_header_folder_is_refused(
    ds: Path, secret: Path, how: str
) -> None:
    target = {
        "absolute": str(secret),
        "dotdot": os.path.relpath(secret, ds),
        "folder": "sub/x.raw",
    }[how]
    (ds / "sub").mkdir()
    (ds / "sub" / "x.raw").write_bytes(SECRET.encode()[:48])
    write_detached(ds, target)
    run = hostile(ds, "verify", "--format", "json")
    assert run.code == 1
    assert SECRET not in run.out and SECRET[:10] not in run.out
    assert "only a single file in the header's own folder" in messages(run)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "link_out"])
def test_detached_data_must_be_a_regular_file_in_the_dataset(
    ds: Path, secret: Path, kind: str
) -> None:
    data = ds / "x.raw"
    if kind == "fifo":
        os.mkfifo(data)
    elif kind == "dev_zero":
        data.symlink_to("/dev/zero")
    else:
        data.symlink_to(secret)
    write_detached(ds, "x.raw")
    run = hostile(ds, "verify", "--format", "json")
    assert run.code == 1
    expected = "not a regular file" if kind == "fifo" else "leading out of the dataset"
    assert "detached data file x.raw: " in messages(run) and expected in messages(run)
    assert SECRET not in run.out


def test_detached_data_in_the_header_folder_is_read(ds: Path) -> None:
    (ds / "x.raw").write_bytes(bytes([0, 1, 2]) * 16)
    write_detached(ds, "x.raw")
    assert detached_data_paths(ds, f"{NAME1}-v1.nrrd") == ("x.raw",)
    run = hostile(ds, "verify", "--format", "json")
    cats = {c for c, _, _ in problems(run)}
    assert not cats & {"corrupt", "unreadable", "not_an_image"}, run.out
    (ds / "x.raw").write_bytes(b"\0" * 10)  # too short: the content pass says so
    run = hostile(ds, "verify", "--format", "json")
    assert "data holds 10 bytes, header declares 48" in messages(run)


def test_detached_data_paths_refuse_escapes(ds: Path, secret: Path) -> None:
    write_detached(ds, str(secret))
    with pytest.raises(HeaderProblem, match="header's own folder"):
        detached_data_paths(ds, f"{NAME1}-v1.nrrd")
    write_detached(ds, "LIST")
    with pytest.raises(HeaderProblem, match="only a single file"):
        detached_data_paths(ds, f"{NAME1}-v1.nrrd")


# --------------------------------------------------------------------------- 2. links, FIFOs


@pytest.mark.parametrize("target", ["/etc/passwd", "/proc/self/environ", "/proc/self/pagemap"])
def test_links_out_of_the_dataset_are_not_followed(ds: Path, target: str) -> None:
    link = ds / f"{NAME2}-v1.nrrd"
    link.symlink_to(target)
    write_nii(ds / f"{NAME2}.nii.gz")
    for command in (["pair"], ["status"], ["verify", "--format", "json"]):
        run = hostile(ds, *command)
        assert run.code in (0, 1), (command, run.err)
    index = (ds / "volsegsync.index").read_text()
    assert f"{NAME2}-v1.nrrd" not in index
    if target == "/etc/passwd":
        digest = xxhash.xxh3_128_hexdigest(Path(target).read_bytes())
        assert digest not in index and str(Path(target).stat().st_size) not in index.split()
    run = hostile(ds, "verify", "--format", "json")
    assert (
        "unreadable",
        f"{NAME2}-v1.nrrd",
        f"{NAME2}-v1.nrrd: symbolic link leading out of the dataset (not followed)",
    ) in problems(run)


def test_links_inside_the_dataset_are_followed(ds: Path) -> None:
    real = ds / "store" / "blob.bin"  # no image extension: not scanned itself
    write_nrrd(ds / "store" / "x.nrrd").rename(real)
    (ds / f"{NAME2}-v1.nrrd").symlink_to(real)
    write_nii(ds / f"{NAME2}.nii.gz")
    run = hostile(ds, "pair", "--format", "json")
    assert run.code == 0, run.out
    assert f"{NAME2}-v1.nrrd" in (ds / "volsegsync.index").read_text()


def test_fifo_image_does_not_hang(ds: Path) -> None:
    os.mkfifo(ds / f"{NAME2}-v1.nrrd")
    write_nii(ds / f"{NAME2}.nii.gz")
    for command in ("pair", "status", "verify"):
        run = hostile(ds, command, "--format", "json")
        assert run.code == 1
    assert ("unreadable", f"{NAME2}-v1.nrrd") in {(c, f) for c, f, _ in problems(run)}


@pytest.mark.parametrize("what", ["volsegsync.index", ".volsegsync/config.toml"])
@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_index_or_config_that_is_no_regular_file(ds: Path, what: str, kind: str) -> None:
    path = ds / what
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    for command in ("status", "verify"):
        run = hostile(ds, command)
        one_line_error(run, what.rpartition("/")[2])
        assert "not a regular file" in run.err or "symbolic link" in run.err
    # pair reads the old index too (pins, kept records): it refuses, it never replaces it
    for args in (["--dry-run"], []):
        one_line_error(hostile(ds, "pair", *args), what.rpartition("/")[2])
    assert path.is_symlink() or stat.S_ISFIFO(path.lstat().st_mode)
    if kind == "dev_zero":
        assert Path("/dev/zero").is_char_device()


def test_huge_index_and_config_are_refused(ds: Path) -> None:
    index = ds / "volsegsync.index"
    with open(index, "ab") as f:
        f.truncate(300 * 1024 * 1024)  # sparse: costs no disk
    one_line_error(hostile(ds, "status"), "volsegsync.index", "larger than 256 MiB")
    index.unlink()
    config = ds / ".volsegsync" / "config.toml"
    with open(config, "ab") as f:
        f.write(b"#" * (2 * 1024 * 1024))
    one_line_error(hostile(ds, "status"), "config.toml", "larger than 1 MiB")


# ------------------------------------------------------------------ 3. writes in .volsegsync


def test_lock_link_never_truncates_its_target(ds: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    lock = ds / ".volsegsync" / "state" / "lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(victim)
    run = hostile(ds, "pair")
    one_line_error(run, "lock", "symbolic link")
    assert victim.read_text() == "precious\n"


def test_linked_state_folder_is_not_written(ds: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    state = ds / ".volsegsync" / "state"
    for p in state.iterdir():
        p.unlink()
    state.rmdir()
    state.symlink_to(outside)
    run = hostile(ds, "status")
    assert run.code == 1  # not paired yet
    assert run.err.count("caches are off") == 1 and "symbolic link" in run.err
    one_line_error(hostile(ds, "pair"), "symbolic link")
    assert list(outside.iterdir()) == []


def test_linked_cache_database_is_replaced_not_written(ds: Path, tmp_path: Path) -> None:
    import sqlite3

    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE mine (x)")
    con.commit()
    con.close()
    before = foreign.read_bytes()
    # pair keeps its hashes in the pipeline memo (no database): verify's header cache
    db = ds / ".volsegsync" / "state" / "headers.db"
    db.unlink(missing_ok=True)
    db.symlink_to(foreign)
    assert hostile(ds, "pair").code == 0
    assert hostile(ds, "verify").code == 0
    assert foreign.read_bytes() == before
    assert not db.is_symlink() and db.is_file()


def test_committed_memo_is_ignored(ds: Path) -> None:
    assert hostile(ds, "pair").code == 0
    index = (ds / "volsegsync.index").read_bytes()
    digest = xxhash.xxh3_128_hexdigest(index)
    evil = ("../../../etc/passwd", 1, "0" * 32)
    entries = [(evil, None, None)]
    memo = ds / ".volsegsync" / "state" / "index.marshal"
    for owner in ("1:2:0", None):  # another machine's memo, and the old unsigned format
        data: Any = {"digest": digest, "entries": entries}
        if owner is not None:
            data = {"owner": owner, "data": data}
        memo.write_bytes(marshal.dumps(data))
        (ds / ".volsegsync" / "state" / "snapshot.marshal").unlink(missing_ok=True)
        for command in ("status", "verify"):
            run = hostile(ds, command, "--format", "json")
            assert "etc/passwd" not in run.out, run.out


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_pipeline_pack_that_is_no_regular_file(ds: Path, kind: str) -> None:
    """The pipeline's pack of case shards (written by a first run) is opened only as a
    regular file, never through a link: a FIFO or a link to a device in its place is
    a miss (the run starts afresh), not a hang."""
    assert hostile(ds, "pair").code == 0
    pack = ds / ".volsegsync" / "state" / "pipeline" / "k-pack"
    assert pack.is_file()
    pack.unlink()
    if kind == "fifo":
        os.mkfifo(pack)
    else:
        pack.symlink_to("/dev/zero")
    write_nii(ds / f"{NAME1}.nii.gz", seed="edited")  # its case is read: from the pack
    age_all(ds)
    for command in ("status", "verify", "pair"):
        run = hostile(ds, command, "--format", "json")
        assert run.code in (0, 1), (command, run.out)
    assert hostile(ds, "status").code == 0


# --------------------------------------------------------------------------- 4. bombs


def bz2_bomb(total_mib: int) -> bytes:
    one = bz2.compress(b"\0" * (1 << 20), 9)  # streams concatenate: a 45-byte MiB
    return one * total_mib


def gz_bomb(total_mib: int) -> bytes:
    one = gzip.compress(b"\0" * (1 << 20), 9)  # members concatenate: a 1 KiB MiB
    return one * total_mib


def test_bzip2_nrrd_bomb_stops_at_the_declared_size(ds: Path) -> None:
    seg = ds / f"{NAME1}-v1.nrrd"
    seg.write_bytes(nrrd_header("bzip2") + bz2_bomb(1024))  # 48 bytes declared, 1 GiB inside
    run = hostile(ds, "verify", "--format", "json", seconds=20)
    assert any("data holds more than" in m for _, _, m in problems(run)), run.out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nrrd-bzip2", "nifti-gzip"])
def test_bomb_declared_whole_is_streamed_in_bounded_memory(ds: Path, kind: str) -> None:
    """1 GiB declared and present: decoded a chunk at a time under ulimit -v 2 GB
    (before: 2.15 GB RSS for the bzip2 NRRD, 1.68 GB for the NIfTI)."""
    if kind == "nrrd-bzip2":
        path = ds / f"{NAME1}-v1.nrrd"
        path.write_bytes(nrrd_header("bzip2", sizes="1024 1024 1024") + bz2_bomb(1024))
        expected = "only_background"
    else:
        path = ds / f"{NAME1}.nii.gz"
        img = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), np.eye(4))
        img.header.set_data_shape((1024, 1024, 1024))
        img.header.set_data_offset(352)
        path.write_bytes(gzip.compress(img.header.binaryblock + b"\0" * 4) + gz_bomb(1024))
        expected = "geometry"  # decoded fine: its shape differs from the segmentation's
    run = hostile(ds, "verify", "-j", "1", "--format", "json", seconds=120)
    found = {(c, f) for c, f, _ in problems(run)}
    assert expected in {c for c, _ in found}, run.out
    assert not any(c in ("corrupt", "too_large", "unreadable") for c, _ in found), run.out


def test_gzip_nifti_bomb_stops_at_the_declared_size(ds: Path) -> None:
    vol = ds / f"{NAME1}.nii.gz"
    img = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.eye(4))
    vol.write_bytes(gzip.compress(img.header.binaryblock + b"\0" * 100) + gz_bomb(1500))
    run = hostile(ds, "verify", "--format", "json", seconds=20)
    assert any("data holds more than" in m for _, _, m in problems(run)), run.out


def test_declared_size_beyond_the_limit_is_not_decoded(ds: Path) -> None:
    seg = ds / f"{NAME1}-v1.nrrd"
    seg.write_bytes(nrrd_header("bzip2", sizes="4096 4096 4096") + bz2_bomb(8))
    run = hostile(ds, "verify", "--format", "json", seconds=20)
    found = [m for c, _, m in problems(run) if c == "too_large"]
    assert found and "max_image_bytes" in found[0]
    config = ds / ".volsegsync" / "config.toml"
    config.write_text(
        config.read_text().replace("max_image_bytes = 4294967296", "max_image_bytes = 10")
    )
    seg.write_bytes(nrrd_header("raw") + b"\0" * 48)
    run = hostile(ds, "verify", "--format", "json")
    assert ("too_large", f"{NAME1}-v1.nrrd") in {(c, f) for c, f, _ in problems(run)}


def test_nrrd_dimension_8000_is_refused_before_any_matrix(ds: Path) -> None:
    seg = ds / f"{NAME1}-v1.nrrd"
    sizes = " ".join(["1"] * 8000)
    directions = " ".join("(" + ",".join(["0"] * 8000) + ")" for _ in range(8))
    seg.write_bytes(nrrd_header("raw", sizes=sizes, extra=f"space directions: {directions}\n"))
    started = time.monotonic()
    run = hostile(ds, "verify", "--fast", "--format", "json", seconds=15)
    assert time.monotonic() - started < 10
    assert "NRRD dimension '8000' is not between 1 and 16" in messages(run)
    db = ds / ".volsegsync" / "state" / "headers.db"
    assert db.stat().st_size < 1024 * 1024


def test_nifti_dimension_count_above_7_is_refused(ds: Path) -> None:
    vol = ds / f"{NAME1}.nii.gz"
    raw = bytearray(gzip.decompress(vol.read_bytes()))
    raw[40:42] = (8).to_bytes(2, "little")  # dim[0]
    vol.write_bytes(gzip.compress(bytes(raw)))
    run = hostile(ds, "verify", "--format", "json")
    assert "invalid NIfTI dimensions" in messages(run)


def test_header_of_16_mib_without_blank_line_is_linear(ds: Path) -> None:
    seg = ds / f"{NAME1}-v1.nrrd"
    seg.write_bytes(b"NRRD0004\n" + b"# x\n" * (4 * 1024 * 1024))
    started = time.monotonic()
    run = hostile(ds, "verify", "--fast", "--format", "json", seconds=15)
    assert time.monotonic() - started < 8
    assert "no blank line ends the NRRD header within 1024 KiB" in messages(run)


# --------------------------------------------------------------------------- 5. patterns


def set_config(ds: Path, old: str, new: str) -> None:
    config = ds / ".volsegsync" / "config.toml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))


def test_catastrophic_pattern_is_linear(ds: Path) -> None:
    set_config(ds, 'prefix = "[A-Za-z0-9]+"', 'prefix = "(a+)+"')
    write_nii(ds / ("a" * 200 + "!-B-D01012000.nii.gz"))  # 2**200 paths to backtrack
    for command in ("check-names", "verify"):
        run = hostile(ds, command, "--format", "json", seconds=15)
        assert run.code == 1


def test_catastrophic_version_pattern_is_linear(ds: Path) -> None:
    set_config(ds, 'version = "v(?P<n>[0-9]+)"', 'version = "v(?P<n>[0-9]+)(a+)+"')
    write_nrrd(ds / (f"{NAME1}-v1" + "a" * 200 + "!.nrrd"))
    for command in ("pair", "status"):
        run = hostile(ds, command, "--format", "json", seconds=15)
        assert run.code in (0, 1)


def test_huge_pattern_and_backreference_are_one_line_errors(ds: Path) -> None:
    set_config(ds, 'prefix = "[A-Za-z0-9]+"', 'prefix = "' + "a" * 5_000_000 + '"')
    one_line_error(hostile(ds, "check-names"), "config.toml", "larger than 1 MiB")
    set_config(ds, 'prefix = "' + "a" * 5_000_000 + '"', 'prefix = "' + "a" * 5000 + '"')
    one_line_error(hostile(ds, "check-names"), "[naming.patterns.prefix]", "at most 1000")
    set_config(ds, 'prefix = "' + "a" * 5000 + '"', 'prefix = "(a)\\\\1"')
    one_line_error(hostile(ds, "check-names"), "[naming.patterns.prefix]", "RE2")


# --------------------------------------------------------------------------- 6. terminal output

NASTY = {
    "esc": "\x1b]0;pwned\x07\x1b[31m",
    "c1": "\x9b31m",
    "rlo": "\u202e",
    "ls": "\u2028",
}


@pytest.mark.parametrize("kind", list(NASTY))
def test_names_are_quoted_in_text_and_exact_in_json(ds: Path, kind: str) -> None:
    name = f"C09-Evil{NASTY[kind]}x-D01012000.nii.gz"
    write_nii(ds / name)
    run = hostile(ds, "pair")
    hostile(ds, "status")
    for text in (run.out, run.err, hostile(ds, "verify").out, hostile(ds, "check-names").out):
        assert not any(c in text for c in "\x1b\x07\x9b\u202e\u2028"), repr(text)
    doc = hostile(ds, "verify", "--format", "json").json()
    assert any(name in p["files"] for p in doc["problems"])


def test_line_separator_name_gives_no_phantom_changes(ds: Path) -> None:
    write_pair(ds, "C09-Sep\u2028x-D01012000")
    age_all(ds)
    first = hostile(ds, "pair")
    assert first.code in (0, 1)
    again = hostile(ds, "pair")
    assert not [line for line in again.out.splitlines() if line.startswith(("+", "-"))], again.out


# --------------------------------------------------------------------------- 7. smaller crashes


@pytest.mark.parametrize("column", ["size", "version"])
@pytest.mark.parametrize("value", ["²", "9" * 5000])
def test_index_numbers_that_are_no_numbers(ds: Path, column: str, value: str) -> None:
    assert hostile(ds, "pair").code == 0
    index = ds / "volsegsync.index"
    lines = index.read_text().split("\n")
    n = next(i for i, line in enumerate(lines) if "\tseg\t" in line)  # format 2: per file
    cols = lines[n].split("\t")
    cols[2 if column == "version" else 3] = value
    lines[n] = "\t".join(cols)
    index.write_text("\n".join(lines))
    run = hostile(ds, "status")
    one_line_error(run, f"volsegsync.index:{n + 1}:", f"bad {column}")


def test_empty_index_file_is_refused(ds: Path) -> None:
    (ds / "volsegsync.index").write_bytes(b"")
    one_line_error(hostile(ds, "status"), "volsegsync.index", "empty file")


def test_optional_version_group_is_a_config_error(ds: Path) -> None:
    set_config(ds, 'version = "v(?P<n>[0-9]+)"', 'version = "v(?P<n>[0-9]+)?"')
    one_line_error(hostile(ds, "pair"), "[naming.version]", "must not be optional")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_die_with_their_parent(tmp_path: Path, sig: int) -> None:
    script = textwrap.dedent(
        """
        import os, sys, time
        from volsegsync.workers import parallel_map

        def task(_):
            os.write(1, f"{os.getpid()}\\n".encode())  # one write: lines never interleave
            time.sleep(60)

        for _ in parallel_map(task, list(range(8)), workers=2, inline_limit=1):
            pass
        """
    )
    (tmp_path / "w.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "w.py")], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    workers = {int(parent.stdout.readline()) for _ in range(2)}
    os.kill(parent.pid, sig)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(alive(p) for p in workers)


# --------------------------------------------------------------------------- 8. read-only, modes


def test_written_files_get_the_umask_mode_and_keep_theirs(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    old = os.umask(0o022)
    try:
        subprocess.run([VOLSEGSYNC, "init", "--no-git", "-q"], cwd=root, check=True)
        for name in (
            "volsegsync.index",
            ".volsegsync/config.toml",
            ".volsegsync/.gitignore",
            ".gitignore",
        ):
            assert stat.S_IMODE((root / name).stat().st_mode) == 0o644, name
        write_pair(root, NAME1)
        os.chmod(root / "volsegsync.index", 0o664)
        subprocess.run([VOLSEGSYNC, "pair", "-q"], cwd=root, check=True)
        assert stat.S_IMODE((root / "volsegsync.index").stat().st_mode) == 0o664
    finally:
        os.umask(old)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_read_only_dataset_as_another_user(tmp_path: Path) -> None:
    from test_cli import demote, unprivileged_command, world_dir  # noqa: F401

    base = Path("/tmp") / f"volsegsync-ro-{os.getpid()}"
    base.mkdir(mode=0o755)
    try:
        root = init_with_git_binary(base / "ds")
        write_pair(root, NAME1)
        age_all(root)
        subprocess.run([VOLSEGSYNC, "pair", "-q"], cwd=root, check=True)
        state = root / ".volsegsync" / "state"
        shutil.rmtree(state)  # the pipeline memo is a folder
        for p in [root, *root.rglob("*")]:
            if not p.is_symlink():
                os.chmod(p, 0o755 if p.is_dir() else 0o644)
        command = unprivileged_command()
        for args in (["status"], ["verify"], ["pair", "--dry-run"]):
            proc = subprocess.run(
                [
                    "bash",
                    "-c",
                    f'ulimit -v {MEMORY_KB}; exec timeout {SECONDS} "$0" "$@"',
                    *command,
                    *args,
                ],
                cwd=root,
                capture_output=True,
                preexec_fn=demote,
                env={"HOME": str(base), "PATH": "/usr/bin:/bin"},
                timeout=SECONDS + 30,
            )
            err = proc.stderr.decode()
            assert proc.returncode == 0, (args, err, proc.stdout)
            assert_clean_stderr(err)
            assert err.count("caches are off") == 1, err
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_committed_content_cache_cannot_vouch_for_a_file(ds: Path, tmp_path: Path) -> None:
    """A content.db made elsewhere (a branch can commit one) is not trusted: its
    rows would otherwise declare any content clean."""
    other = init_with_git_binary(tmp_path / "other")
    write_pair(other, NAME1)
    assert hostile(other, "verify").code == 0
    seg = ds / f"{NAME1}-v1.nrrd"
    seg.write_bytes(nrrd_header("raw") + b"\x07" * 48)  # a label nobody declared: 7
    set_config(ds, '# [verify.labels]\n# 0 = "background"\n', '[verify.labels]\n0 = "bg"\n')
    state = ds / ".volsegsync" / "state"
    state.mkdir(exist_ok=True)
    import shutil
    import sqlite3

    shutil.copy(other / ".volsegsync" / "state" / "content.db", state / "content.db")
    digest = xxhash.xxh3_128_hexdigest(seg.read_bytes())
    con = sqlite3.connect(state / "content.db")
    with con:  # the planted row: this content is a clean segmentation of label 0
        row = con.execute("SELECT role, version, report FROM content LIMIT 1").fetchone()
        report = json.loads(row[2])
        report.update(values=[0], role="segmentation", error=None, error_kind=None)
        for role in {row[0], "segmentation"}:
            con.execute(
                "INSERT OR REPLACE INTO content VALUES (?, ?, ?, ?)",
                (digest, role, row[1], json.dumps(report)),
            )
    con.close()
    run = hostile(ds, "verify", "--format", "json")
    assert ("unknown_label", f"{NAME1}-v1.nrrd") in {(c, f) for c, f, _ in problems(run)}


def test_linked_metadata_folder_is_refused(ds: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (ds / ".volsegsync").rename(elsewhere)
    (ds / ".volsegsync").symlink_to(elsewhere)
    for command in ("status", "verify", "pair"):
        one_line_error(hostile(ds, command), ".volsegsync", "symbolic link")


def test_header_pass_refuses_bad_detached_data_too(ds: Path, secret: Path) -> None:
    """``verify --fast`` (what the hooks run) flags it without the content pass."""
    write_detached(ds, str(secret))
    run = hostile(ds, "verify", "--fast", "--format", "json")
    assert run.code == 1
    assert "only a single file in the header's own folder" in messages(run)
    assert SECRET not in run.out
