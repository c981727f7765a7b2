"""The index file: deterministic, plain, atomic, and parsed as untrusted input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import xxhash
from conftest import (
    NAME1,
    NAME2,
    NAME3,
    assert_clean_stderr,
    invoke,
    run_script,
    write_nii,
    write_nrrd,
    write_pair,
)

from volsegsync.dataset import Dataset
from volsegsync.errors import IndexFormatError, VolsegsyncError
from volsegsync.index import (
    COLUMNS,
    Entry,
    FileRecord,
    format_index,
    parse_index,
    read_index,
    write_index,
)
from volsegsync.ops.pair import run_pair

H1, H2 = "0123456789abcdef" * 2, "f" * 32
HEADER = f"volsegsync-index 1\n# {COLUMNS}\n"


def line(vol: str, seg: str, version: str = "1", h1: str = H1, h2: str = H2) -> str:
    return "\t".join([vol, "->", seg, version, "10", h1, "20", h2]) + "\n"


def build(root: Path, order: list[str]) -> None:
    """The same three-pair dataset, files created in the given order of names."""
    for name in order:
        write_pair(
            root,
            name,
            versions=(1, 2) if name == NAME1 else (1,),
            vol_dir="volumes",
            seg_dir="segmentations",
        )
    write_nrrd(root / "segmentations" / "orphan-v1.nrrd")


# --------------------------------------------------------------------------- format


def test_format_round_trip() -> None:
    entries = [
        Entry(FileRecord("b/vol.nii.gz", 5, H1), FileRecord("b/seg-v2.nrrd", 7, H2), 2),
        Entry(FileRecord("a/lonely.nii.gz", 3, H2), None, None),
        Entry(None, FileRecord("c/orphan.seg.nrrd", 1, H1), None),
        Entry(FileRecord("a/x.nii", 0, H1), FileRecord("a/x.nrrd", 9, H2), None),
    ]
    text = format_index(entries)
    assert text == (
        HEADER
        + f"a/lonely.nii.gz\t->\t-\t-\t3\t{H2}\t-\t-\n"
        + f"a/x.nii\t->\ta/x.nrrd\t-\t0\t{H1}\t9\t{H2}\n"
        + f"b/vol.nii.gz\t->\tb/seg-v2.nrrd\t2\t5\t{H1}\t7\t{H2}\n"
        + f"-\t->\tc/orphan.seg.nrrd\t-\t-\t-\t1\t{H1}\n"
    )
    assert sorted(parse_index(text), key=lambda e: e.sort_key) == sorted(
        entries, key=lambda e: e.sort_key
    )
    assert format_index(reversed(entries)) == text
    assert parse_index("") == []
    assert format_index([]) == HEADER


def test_missing_index_is_empty(tmp_path: Path) -> None:
    assert read_index(tmp_path / "volsegsync.index") == []


def test_pair_writes_plain_index_with_real_hashes(ds_root: Path) -> None:
    build(ds_root, [NAME1, NAME2, NAME3])
    result = invoke(["-C", str(ds_root), "pair"])
    assert result.exit_code == 1  # the orphan segmentation
    raw = (ds_root / "volsegsync.index").read_bytes()
    text = raw.decode("utf-8")
    lines = text.split("\n")
    assert lines[0] == "volsegsync-index 1"
    assert lines[-1] == ""
    records = [ln.split("\t") for ln in lines[1:-1] if not ln.startswith("#")]
    # sorted by volume path; an unpaired segmentation sorts by its own path
    assert [r[0] for r in records] == [
        "-",
        f"volumes/{NAME1}.nii.gz",
        f"volumes/{NAME2}.nii.gz",
        f"volumes/{NAME3}.nii.gz",
    ]
    assert [r[2] for r in records] == [
        "segmentations/orphan-v1.nrrd",
        f"segmentations/{NAME1}-v2.nrrd",
        f"segmentations/{NAME2}-v1.nrrd",
        f"segmentations/{NAME3}-v1.nrrd",
    ]
    assert [r[3] for r in records] == ["1", "2", "1", "1"]
    for vol, arrow, seg, _version, vsize, vhash, ssize, shash in records:
        assert arrow == "->"
        for path, size, digest in ((vol, vsize, vhash), (seg, ssize, shash)):
            if path == "-":
                assert (size, digest) == ("-", "-")
                continue
            assert not path.startswith("/") and "\\" not in path
            data = (ds_root / path).read_bytes()
            assert int(size) == len(data)
            assert digest == xxhash.xxh3_128(data).hexdigest()


def test_pair_twice_is_byte_identical(ds_root: Path) -> None:
    build(ds_root, [NAME1, NAME2, NAME3])
    index = ds_root / "volsegsync.index"
    invoke(["-C", str(ds_root), "pair"])
    first = index.read_bytes()
    st = index.stat()
    result = invoke(["-C", str(ds_root), "pair"])
    assert "volsegsync.index unchanged" in result.stdout
    assert index.read_bytes() == first
    assert index.stat().st_ino == st.st_ino  # not even rewritten


def test_same_dataset_in_two_folders_gives_identical_index(tmp_path: Path) -> None:
    roots = []
    for name, order in (("one", [NAME1, NAME2, NAME3]), ("two", [NAME3, NAME1, NAME2])):
        root = tmp_path / name
        build(root, order)
        invoke(["-C", str(root), "init", "--no-git"])
        invoke(["-C", str(root), "pair", "-j", "1" if name == "one" else "2"])
        roots.append(root)
    a = (roots[0] / "volsegsync.index").read_bytes()
    b = (roots[1] / "volsegsync.index").read_bytes()
    assert a.count(b"\n") == 6  # magic, comment and 4 records
    assert a == b


def test_write_is_atomic(ds_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_pair(ds_root, NAME1)
    ds = Dataset.open(ds_root)
    run_pair(ds)
    index = ds_root / "volsegsync.index"
    before = index.read_bytes()
    write_pair(ds_root, NAME2)

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(VolsegsyncError, match="cannot write the index: No space left"):
        run_pair(ds)
    monkeypatch.undo()
    assert index.read_bytes() == before
    assert sorted(p.name for p in ds_root.iterdir()) == sorted(
        [
            ".git",
            ".gitattributes",
            ".gitignore",
            ".volsegsync",
            "volsegsync.index",
            f"{NAME1}.nii.gz",
            f"{NAME1}-v1.nrrd",
            f"{NAME2}.nii.gz",
            f"{NAME2}-v1.nrrd",
        ]
    )
    # and the lock is free again: the next run works
    assert run_pair(ds).written


def test_write_index_creates_no_stray_files(tmp_path: Path) -> None:
    path = tmp_path / "volsegsync.index"
    write_index(path, [Entry(FileRecord("a.nii.gz", 1, H1), None, None)])
    write_index(path, [])
    assert [p.name for p in tmp_path.iterdir()] == ["volsegsync.index"]
    assert path.read_text() == HEADER


# --------------------------------------------------------------------------- untrusted input

BAD = [
    (HEADER + line("../x.nii.gz", "x.nrrd"), ":3: '../x.nii.gz' escapes"),
    (HEADER + line("a/../../x.nii.gz", "x.nrrd"), ":3: 'a/../../x.nii.gz' escapes"),
    (HEADER + line("/abs/x.nii.gz", "x.nrrd"), ":3: '/abs/x.nii.gz' is absolute"),
    (
        HEADER + line("x.nii.gz", "C:/x.nrrd"),
        ":3: 'C:/x.nii.gz' is absolute".replace("nii.gz", "nrrd"),
    ),
    (HEADER + line("x.nii.gz", "a\\..\\x.nrrd"), ":3: 'a\\\\..\\\\x.nrrd' is absolute"),
    (HEADER + line(".git/config", "x.nrrd"), ":3: '.git/config' points into .git/"),
    (HEADER + line("x.nii.gz", ".volsegsync/config.toml"), "points into .volsegsync/"),
    (HEADER + line("./x.nii.gz", "x.nrrd"), ":3: './x.nii.gz' escapes"),
    (HEADER + line("a//x.nii.gz", "x.nrrd"), ":3: 'a//x.nii.gz' escapes"),
    (HEADER + "x.nii.gz -> x.nrrd 1\n", ":3: malformed line: expected 8 tab-separated"),
    (HEADER + line("x.nii.gz", "x.nrrd").replace("->", "=>"), ":3: malformed line"),
    (HEADER + line("x.nii.gz", "x.nrrd", h1="XYZ"), ":3: bad volume hash 'XYZ'"),
    (HEADER + line("x.nii.gz", "x.nrrd", h2=H2.upper()), ":3: bad segmentation hash"),
    (HEADER + line("x.nii.gz", "x.nrrd").replace("\t10\t", "\t-1\t"), ":3: bad volume size"),
    (HEADER + line("x.nii.gz", "x.nrrd", version="two"), ":3: bad version 'two'"),
    (
        HEADER
        + line("-", "-", version="-")
        .replace("\t10\t", "\t-\t")
        .replace("\t20\t", "\t-\t")
        .replace(H1, "-")
        .replace(H2, "-"),
        ":3: a line needs a volume",
    ),
    (
        HEADER + line("x.nii.gz", "x.nrrd") + line("x.nii.gz", "y.nrrd"),
        ":4: x.nii.gz is already listed on line 3",
    ),
    (
        HEADER + line("x.nii.gz", "x.nrrd") + "\n# note\n" + line("y.nii.gz", "x.nrrd"),
        ":6: x.nrrd is already listed on line 3",
    ),
    ("volsegsync-index\n", ":1: not a volsegsync index"),
    ("dvc-index 1\n" + line("x.nii.gz", "x.nrrd"), ":1: not a volsegsync index"),
    ("volsegsync-index 2\n", ":1: index format version '2' is not supported"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_untrusted_index_is_rejected_naming_the_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "volsegsync.index"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(IndexFormatError) as err:
        read_index(path)
    assert str(err.value).startswith(f"{path}:")
    assert expected in str(err.value)


def test_non_utf8_index(tmp_path: Path) -> None:
    path = tmp_path / "volsegsync.index"
    path.write_bytes(HEADER.encode() + b"\xff\n")
    with pytest.raises(IndexFormatError) as err:
        read_index(path)
    assert str(err.value) == f"{path}: not valid UTF-8 (byte {len(HEADER)})"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEADER + line("../x.nii.gz", "x.nrrd"), "volsegsync.index:3: '../x.nii.gz' escapes"),
        (HEADER + line("/etc/x.nii.gz", "x.nrrd"), "volsegsync.index:3: '/etc/x.nii.gz' is abs"),
        (HEADER + line(".git/config", "x.nrrd"), "volsegsync.index:3: '.git/config' points"),
        (HEADER + "garbage\n", "volsegsync.index:3: malformed line"),
        (HEADER + line("x.nii.gz", "x.nrrd", h1="nothex"), "volsegsync.index:3: bad volume hash"),
        (HEADER + line("x.nii.gz", "x.nrrd") * 2, "volsegsync.index:4: x.nii.gz is already"),
        ("not-an-index\n", "volsegsync.index:1: not a volsegsync index"),
        ("volsegsync-index 99\n", "volsegsync.index:1: index format version '99'"),
    ],
)
def test_untrusted_index_via_cli_exits_2(ds_root: Path, text: str, expected: str) -> None:
    write_pair(ds_root, NAME1)
    (ds_root / "volsegsync.index").write_text(text, encoding="utf-8")
    result = invoke(["-C", str(ds_root), "status"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("volsegsync: error: ")
    assert expected in result.stderr
    assert_clean_stderr(result.stderr)


def test_untrusted_index_via_real_subprocess(ds_root: Path) -> None:
    write_pair(ds_root, NAME1)
    (ds_root / "volsegsync.index").write_text(
        HEADER + line("../../etc/passwd", "-", "-", h2="-").replace("\t20\t", "\t-\t")
    )
    proc = run_script(["status", "--format", "json"], cwd=ds_root)
    assert proc.returncode == 2
    assert proc.stdout == b""
    assert b"volsegsync.index:3: '../../etc/passwd' escapes" in proc.stderr
    assert_clean_stderr(proc.stderr)


def test_api_read_index(ds_root: Path) -> None:
    vol, [seg] = write_pair(ds_root, NAME1, versions=(3,))
    shutil.copy(ds_root / vol, ds_root / "copy.nii.gz")  # unpaired volume, same content
    ds = Dataset.open(ds_root)
    run_pair(ds)
    data_v = (ds_root / vol).read_bytes()
    data_s = (ds_root / seg).read_bytes()
    h = xxhash.xxh3_128
    assert ds.read_index() == [
        Entry(
            FileRecord(vol, len(data_v), h(data_v).hexdigest()),
            FileRecord(seg, len(data_s), h(data_s).hexdigest()),
            3,
        ),
        Entry(FileRecord("copy.nii.gz", len(data_v), h(data_v).hexdigest()), None, None),
    ]


def test_write_nii_is_deterministic(tmp_path: Path) -> None:
    """The determinism tests above rely on this."""
    a = write_nii(tmp_path / "a" / "x.nii.gz", seed="s")
    b = write_nii(tmp_path / "b" / "x.nii.gz", seed="s")
    assert a.read_bytes() == b.read_bytes()


def test_crlf_checkout_reads_the_same() -> None:
    """A checkout with CRLF line ends (git autocrlf on Windows) parses to the same entries."""
    rec = FileRecord("a/C01-X-D01012000.nii.gz", 12, "0" * 32)
    seg = FileRecord("a/C01-X-D01012000-v2.nrrd", 34, "f" * 32)
    text = format_index([Entry(rec, seg, 2)])
    assert parse_index(text.replace("\n", "\r\n")) == parse_index(text) == [Entry(rec, seg, 2)]
