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
    COLUMNS_V1,
    Entry,
    FileRecord,
    SegVersion,
    format_index,
    parse_index,
    parse_index_file,
    read_index,
    write_index,
)
from volsegsync.ops.pair import run_pair

H1, H2 = "0123456789abcdef" * 2, "f" * 32
HEADER = f"volsegsync-index 1\n# {COLUMNS_V1}\n"  # format 1: still read
HEADER2 = f"volsegsync-index 2\nhash xxh3-128\n# {COLUMNS}\n"


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
        Entry(
            FileRecord("b/vol.nii.gz", 5, H1),
            FileRecord("b/seg-v2.nrrd", 7, H2),
            2,
            older=(SegVersion(1, FileRecord("b/seg-v1.nrrd", 6, H1)),),
            key="b",
        ),
        Entry(FileRecord("a/lonely.nii.gz", 3, H2), None, None, key="a-lonely"),
        Entry(None, FileRecord("c/orphan.seg.nrrd", 1, H1), None, key="c-orphan"),
        Entry(FileRecord("a/x.nii", 0, H1), FileRecord("a/x.nrrd", 9, H2), None, key="a-x"),
    ]
    text = format_index(entries)
    assert text == (
        HEADER2
        + f"a-lonely\tvolume\t-\t3\t{H2}\ta/lonely.nii.gz\n"
        + f"a-x\tvolume\t-\t0\t{H1}\ta/x.nii\n"
        + f"a-x\tseg\t-*\t9\t{H2}\ta/x.nrrd\n"
        + f"b\tvolume\t-\t5\t{H1}\tb/vol.nii.gz\n"
        + f"b\tseg\t1\t6\t{H1}\tb/seg-v1.nrrd\n"
        + f"b\tseg\t2*\t7\t{H2}\tb/seg-v2.nrrd\n"
        + f"c-orphan\tseg\t-*\t1\t{H1}\tc/orphan.seg.nrrd\n"
    )
    assert parse_index(text) == sorted(entries, key=lambda e: e.sort_key)
    assert format_index(reversed(entries)) == text
    assert parse_index("") == []
    assert format_index([]) == HEADER2


def test_format2_channels_pins_and_data_round_trip() -> None:
    ch = [
        ("0000", FileRecord("imagesTr/B_0000.nii.gz", 1, H1)),
        ("0001", FileRecord("imagesTr/B_0001.nii.gz", 2, H2)),
    ]
    seg1 = FileRecord("s/B-v1.nhdr", 3, H1)
    data1 = FileRecord("s/B-v1.raw", 30, H2)
    seg2 = FileRecord("s/B-v2.nhdr", 4, H2)
    data2 = FileRecord("s/B-v2.raw", 40, H1)
    entry = Entry(ch[0][1], seg1, 1, (SegVersion(2, seg2, data2),), True, data1, tuple(ch), "B")
    text = format_index([entry])
    assert text.splitlines()[3:] == [
        f"B\tvolume:0000\t-\t1\t{H1}\timagesTr/B_0000.nii.gz",
        f"B\tvolume:0001\t-\t2\t{H2}\timagesTr/B_0001.nii.gz",
        f"B\tseg\t1!\t3\t{H1}\ts/B-v1.nhdr",
        f"B\tseg\t2\t4\t{H2}\ts/B-v2.nhdr",
        f"B\tdata\t1\t30\t{H2}\ts/B-v1.raw",
        f"B\tdata\t2\t40\t{H1}\ts/B-v2.raw",
    ]
    assert parse_index(text) == [entry]
    assert {r.path for r in entry.records()} == {
        "imagesTr/B_0000.nii.gz",
        "imagesTr/B_0001.nii.gz",
        seg1.path,
        data1.path,
        seg2.path,
        data2.path,
    }


def test_format1_is_still_read() -> None:
    text = HEADER + "\t".join(["v.nii.gz", "->", "s-v2.nrrd", "2", "10", H1, "20", H2]) + "\n"
    index = parse_index_file(text)
    assert (index.format, index.algorithm) == (1, "xxh3-128")
    assert index.entries == [
        Entry(FileRecord("v.nii.gz", 10, H1), FileRecord("s-v2.nrrd", 20, H2), 2)
    ]


def test_sha256_index_checks_digest_length() -> None:
    h64 = "ab" * 32
    text = f"volsegsync-index 2\nhash sha256\n# x\nK\tvolume\t-\t1\t{h64}\tk.nii.gz\n"
    index = parse_index_file(text)
    assert index.algorithm == "sha256"
    assert index.entries[0].volume == FileRecord("k.nii.gz", 1, h64)
    assert format_index(index.entries, "sha256") == text.replace("# x", f"# {COLUMNS}")
    with pytest.raises(IndexFormatError, match="expected 64 hex digits of sha256"):
        parse_index(text.replace(h64, H1))


def test_missing_index_is_empty(tmp_path: Path) -> None:
    assert read_index(tmp_path / "volsegsync.index") == []


def test_pair_writes_plain_index_with_real_hashes(ds_root: Path) -> None:
    build(ds_root, [NAME1, NAME2, NAME3])
    result = invoke(["-C", str(ds_root), "pair"])
    assert result.exit_code == 1  # the orphan segmentation
    raw = (ds_root / "volsegsync.index").read_bytes()
    text = raw.decode("utf-8")
    lines = text.split("\n")
    assert lines[:3] == ["volsegsync-index 2", "hash xxh3-128", f"# {COLUMNS}"]
    assert lines[-1] == ""
    records = [ln.split("\t") for ln in lines[3:-1]]
    # sorted by case key, then volumes, then versions ascending: v1 is kept, v2 active
    assert [(r[0], r[1], r[2], r[5]) for r in records] == [
        (NAME1, "volume", "-", f"volumes/{NAME1}.nii.gz"),
        (NAME1, "seg", "1", f"segmentations/{NAME1}-v1.nrrd"),
        (NAME1, "seg", "2*", f"segmentations/{NAME1}-v2.nrrd"),
        (NAME2, "volume", "-", f"volumes/{NAME2}.nii.gz"),
        (NAME2, "seg", "1*", f"segmentations/{NAME2}-v1.nrrd"),
        (NAME3, "volume", "-", f"volumes/{NAME3}.nii.gz"),
        (NAME3, "seg", "1*", f"segmentations/{NAME3}-v1.nrrd"),
        ("orphan", "seg", "1*", "segmentations/orphan-v1.nrrd"),
    ]
    for _key, _role, _version, size, digest, path in records:
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
    build(tmp_path / "one", [NAME1, NAME2, NAME3])
    files = sorted(p for p in (tmp_path / "one").rglob("*") if p.is_file())
    for src in reversed(files):  # the same bytes (pynrrd writes the time), other order
        dst = tmp_path / "two" / src.relative_to(tmp_path / "one")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    for name in ("one", "two"):
        root = tmp_path / name
        invoke(["-C", str(root), "init", "--no-git"])
        invoke(["-C", str(root), "pair", "-j", "1" if name == "one" else "2"])
        roots.append(root)
    a = (roots[0] / "volsegsync.index").read_bytes()
    b = (roots[1] / "volsegsync.index").read_bytes()
    assert a.count(b"\n") == 11  # magic, hash, comment and 8 file lines
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
    assert path.read_text() == HEADER2


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
    ("volsegsync-index 3\n", ":1: index format version '3' is not supported"),
    ("volsegsync-index 2\n", ":2: expected 'hash ALGORITHM'"),
    ("volsegsync-index 2\nhash md5\n", ":2: unknown hash algorithm 'md5'"),
    (HEADER2 + f"k\tvolume\t-\t1\t{H1}\t../x.nii.gz\n", ":4: '../x.nii.gz' escapes"),
    (HEADER2 + f"k\tvolume\t-\t1\t{H1}\t/etc/passwd\n", ":4: '/etc/passwd' is absolute"),
    (HEADER2 + f"k\tvolume\t-\t1\t{H1}\tx.nii.gz\n" * 2, ":5: x.nii.gz is already listed"),
    (HEADER2 + f"k\tvolume\t-\t1\t{H1}\n", ":4: malformed line: expected 6"),
    (HEADER2 + f"k\tblob\t-\t1\t{H1}\tx.nii.gz\n", ":4: bad role 'blob'"),
    (HEADER2 + f"k\tvolume\t-\t\u00b2\t{H1}\tx.nii.gz\n", ":4: bad size"),
    (HEADER2 + f"k\tvolume\t1\t1\t{H1}\tx.nii.gz\n", ":4: a volume line has version '-'"),
    (HEADER2 + f"k\tseg\t1x\t1\t{H1}\tx.nrrd\n", ":4: bad version '1x'"),
    (HEADER2 + f"k\tseg\t1\t1\t{H1}\tx.nrrd\n", "case k: no active segmentation"),
    (
        HEADER2 + f"k\tseg\t1*\t1\t{H1}\tx.nrrd\nk\tseg\t2!\t1\t{H1}\ty.nrrd\n",
        ":5: case k has a second active version",
    ),
    (
        HEADER2 + f"k\tseg\t1*\t1\t{H1}\tx.nrrd\nk\tseg\t1\t1\t{H1}\ty.nrrd\n",
        ":5: case k lists version 1 twice",
    ),
    (HEADER2 + f"k\tvolume:x1\t-\t1\t{H1}\tx.nii.gz\n", ":4: bad channel 'x1'"),
    (HEADER2 + f"k\tvolume\t-\t1\t{H1.upper()}\tx.nii.gz\n", ":4: bad hash"),
    (HEADER2 + f"k\tvolume\t-\t1\t{H1}\t.git/hooks/x.nii.gz\n", "points into .git/"),
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
            key=NAME1,
        ),
        Entry(
            FileRecord("copy.nii.gz", len(data_v), h(data_v).hexdigest()), None, None, key="copy"
        ),
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
    entry = Entry(rec, seg, 2, key="C01-X-D01012000")
    text = format_index([entry])
    assert parse_index(text.replace("\n", "\r\n")) == parse_index(text) == [entry]
