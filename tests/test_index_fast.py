"""The index's fast path (whole blocks checked per column) accepts exactly what the
line-by-line parser accepts: same entries, or the same error naming the same line."""

from __future__ import annotations

import random

import pytest
from test_index import BAD, HEADER2

from volsegsync.errors import IndexFormatError
from volsegsync.index import (
    Entry,
    FileRecord,
    IndexFile,
    SegVersion,
    format_index,
    parse_index_file,
    parse_index_lines,
)

H = ["0123456789abcdef" * 2, "f" * 32, "0" * 32]


def outcome(parse: object, text: str) -> IndexFile | str:
    try:
        return parse(text, "idx")  # type: ignore[operator,no-any-return]
    except IndexFormatError as e:
        return f"error: {e}"


def assert_same(text: str) -> IndexFile | str:
    fast, slow = outcome(parse_index_file, text), outcome(parse_index_lines, text)
    assert fast == slow, text
    return fast


def sample(rng: random.Random, n: int) -> str:
    """A valid index with every shape: pairs, versions, pins, channels, data, unpaired."""
    entries = []
    for i in range(n):
        key = f"C{i:04d}-X-D01012000"
        vol = FileRecord(f"v/{key}.nii.gz", rng.randrange(10**6), rng.choice(H))
        seg = FileRecord(f"s/{key}-v2.nrrd", i, rng.choice(H))
        kind = rng.randrange(6)
        if kind == 0:
            entries.append(Entry(vol, seg, 2, key=key))
        elif kind == 1:
            entries.append(Entry(vol, None, None, key=key))
        elif kind == 2:
            entries.append(Entry(None, seg, 2, pinned=rng.random() < 0.5, key=key))
        elif kind == 3:
            old = SegVersion(1, FileRecord(f"s/{key}-v1.nrrd", 3, H[0]))
            entries.append(Entry(vol, seg, 2, (old,), pinned=True, key=key))
        elif kind == 4:
            ch = tuple((c, vol._replace(path=f"v/{key}_{c}.nii.gz")) for c in ("0000", "0001"))
            entries.append(Entry(ch[0][1], seg, None, channels=ch, key=key))
        else:
            data = FileRecord(f"s/{key}-v2.raw", 5, H[1])
            entries.append(
                Entry(vol, seg._replace(path=f"s/{key}-v2.nhdr"), 2, seg_data=data, key=key)
            )
    return format_index(entries)


def test_valid_samples_take_the_fast_path_and_agree() -> None:
    rng = random.Random(14)
    for n in (0, 1, 2, 7, 300):
        text = sample(rng, n)
        got = assert_same(text)
        assert isinstance(got, IndexFile)
        assert format_index(got.entries) == text


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_hostile_samples_agree(text: str, expected: str) -> None:
    got = assert_same(text)
    assert isinstance(got, str) and expected in got


MUTATIONS = [
    "../",
    "/",
    "//",
    "\\",
    ".git/",
    ".volsegsync/",
    "./",
    "\t",
    "\n",
    "\r\n",
    "\x00",
    "\x1b",
    "\x7f",
    "\ud800",
    "C:",
    "-",
    "*",
    "!",
    "#",
    "\u00b2",
    "A",
    "",
    "<<<<<<< HEAD\n",
    "=======\n",
    "9" * 19,
]
PATHS = [
    "a/../b.nii.gz",
    "a/..",
    "..",
    "../a",
    "a/./b",
    "a/.",
    ".",
    "./a",
    "a/",
    "/a",
    "a//b",
    "",
    "a\\b",
    "C:a",
    "c:/a",
    ".git",
    ".git/x",
    ".volsegsync",
    ".volsegsync/x",
    "a/.git/x",
    "a/.volsegsync",
    "a/..b/c",
    "a/.x/..y",
    ".gitx/a",
    "..a",
    "a/b\x7f",
    "ok/x.nii.gz",
]


def test_random_mutations_agree() -> None:
    """Insert, replace or delete a piece anywhere in valid indexes: the fast path
    never accepts what the line-by-line parser refuses, nor differs on what it takes."""
    rng = random.Random(2026)
    base = sample(rng, 40)
    lines = base.split("\n")
    for _ in range(3000):
        text = base
        for _k in range(rng.randrange(1, 3)):
            op = rng.randrange(6)
            if op == 0:  # insert a hostile piece
                at = rng.randrange(len(text) + 1)
                text = text[:at] + rng.choice(MUTATIONS) + text[at:]
            elif op == 1:  # replace a piece
                at = rng.randrange(len(text))
                text = text[:at] + rng.choice(MUTATIONS) + text[at + rng.randrange(1, 40) :]
            elif op == 2:  # duplicate a line elsewhere
                ls = text.split("\n")
                ls.insert(rng.randrange(len(ls)), rng.choice(lines[3:-1]))
                text = "\n".join(ls)
            elif op == 3:  # move a line (unsorted index)
                ls = text.split("\n")
                ls.insert(rng.randrange(3, len(ls)), ls.pop(rng.randrange(3, len(ls) - 1)))
                text = "\n".join(ls)
            elif op == 4:  # a hostile path (or a harmless odd one)
                ls = text.split("\n")
                i = rng.randrange(3, len(ls) - 1)
                cols = ls[i].split("\t")
                cols[-1] = rng.choice(PATHS)
                ls[i] = "\t".join(cols)
                text = "\n".join(ls)
            else:  # change one column of one line
                ls = text.split("\n")
                i = rng.randrange(3, len(ls) - 1)
                cols = ls[i].split("\t")
                cols[rng.randrange(len(cols))] = rng.choice(
                    ["seg", "volume", "data", "volume:7", "1*", "2!", "-", "1", "", "x"]
                )
                ls[i] = "\t".join(cols)
                text = "\n".join(ls)
        assert_same(text)


@pytest.mark.parametrize("block", [40, 41, 50, 97, 128, 333, 1000])
def test_fast_path_is_not_fooled_by_block_bounds(
    monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """Tiny blocks: a case split across blocks is still one entry; a path listed twice
    in two blocks is still found; nothing at the end is forgotten."""
    import volsegsync.index as index

    monkeypatch.setattr(index, "_BLOCK_CHARS", block)
    rng = random.Random(block)
    for n in (1, 2, 3, 60):
        text = sample(rng, n)
        got = assert_same(text)
        assert isinstance(got, IndexFile) and format_index(got.entries) == text
    lines = text.split("\n")
    dup = "\n".join([*lines[:-1], "ZZZ" + lines[4][lines[4].index("\t") :], ""])
    assert "already listed on line 5" in str(assert_same(dup))
    assert HEADER2.startswith(text[:20])


def test_cut_to_changes_compares_like_the_whole_indexes() -> None:
    """``diff A B`` parses only the changed cases: its changes and pair counts equal
    those of the whole indexes, for random edits (bumps, renames, moves between
    cases, copies, silent edits, removals, additions)."""
    from volsegsync.changes import diff
    from volsegsync.index import cut_to_changes, parse_index

    rng = random.Random(99)
    for _round in range(60):
        old = sample(rng, 30)
        entries = parse_index(old)
        new_entries = list(entries)
        for _k in range(rng.randrange(1, 6)):
            i = rng.randrange(len(new_entries))
            e = new_entries[i]
            op = rng.randrange(5)
            if op == 0 and e.segmentation is not None:  # a silent edit
                seg = e.segmentation._replace(digest=rng.choice(H))
                new_entries[i] = e._replace(segmentation=seg)
            elif op == 1 and e.volume is not None and not e.channels:  # a rename
                new_entries[i] = e._replace(volume=e.volume._replace(path=f"moved/{i}.nii.gz"))
            elif op == 2:  # removed
                del new_entries[i]
            elif op == 3:  # content moves to another case (a rename across cases)
                j = rng.randrange(len(new_entries))
                other = new_entries[j]
                if e.volume and other.volume and i != j and not (e.channels or other.channels):
                    new_entries[j] = other._replace(
                        volume=other.volume._replace(digest=e.volume.digest)
                    )
                    new_entries[i] = e._replace(volume=None, channels=())
            else:  # a new case
                rec = FileRecord(f"new/{_round}-{_k}.nii.gz", 1, rng.choice(H))
                new_entries.append(Entry(rec, None, None, key=f"Z{_round}-{_k}"))
        new = format_index([e for e in new_entries if e.volume or e.segmentation])
        cut = cut_to_changes(old, new)
        assert cut is not None
        whole_old, whole_new = parse_index(old), parse_index(new)
        assert diff(parse_index(cut.old), parse_index(cut.new)) == diff(whole_old, whole_new)
        pairs = [sum(1 for e in x if e.volume and e.segmentation) for x in (whole_old, whole_new)]
        assert [cut.old_pairs, cut.new_pairs] == pairs
        assert len(cut.new) <= len(new)
    assert cut_to_changes(old, old.replace("xxh3-128", "sha256", 1)) is None
