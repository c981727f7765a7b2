"""The index merge driver: three-way per pair (format 1) or case (format 2), on its own
and run by the real git binary in repositories that ``init`` set up."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    GIT,
    NAME1,
    NAME2,
    NAME3,
    age_all,
    git,
    init_with_dulwich,
    init_with_git_binary,
    invoke,
    write_nrrd,
    write_pair,
)

from volsegsync.errors import IndexFormatError
from volsegsync.hooks import MERGE_DRIVER
from volsegsync.index import Entry, FileRecord, format_index, parse_index
from volsegsync.merge import merge_index

# --------------------------------------------------------------------------- unit


def rec(path: str, n: int) -> FileRecord:
    return FileRecord(path, 100 + n, f"{n:032x}")


def pair(name: str, version: int = 1, n: int = 0) -> Entry:
    return Entry(rec(f"{name}.nii.gz", n), rec(f"{name}-v{version}.nrrd", n + 1), version)


def pairs(text: str) -> set[tuple[object, ...]]:
    return {(e.volume, e.segmentation, e.version) for e in parse_index(text)}


def test_adjacent_additions_merge_cleanly() -> None:
    base = format_index([pair(NAME1)])
    ours = format_index([pair(NAME1), pair(NAME2)])
    theirs = format_index([pair(NAME1), pair(NAME3)])
    result = merge_index(base, ours, theirs)
    assert result.clean and result.conflicts == []
    assert pairs(result.text) == pairs(format_index([pair(NAME1), pair(NAME2), pair(NAME3)]))
    # the same bytes as the writer gives for the merged set: sorted, one truth
    assert result.text == format_index([pair(NAME1), pair(NAME2), pair(NAME3)])


def test_one_side_changes_a_pair_the_other_adds_one() -> None:
    base = format_index([pair(NAME1), pair(NAME2)])
    ours = format_index([pair(NAME1, version=2, n=7), pair(NAME2)])  # new version
    theirs = format_index([pair(NAME1), pair(NAME2), pair(NAME3)])
    result = merge_index(base, ours, theirs)
    assert result.clean
    assert result.text == format_index([pair(NAME1, 2, 7), pair(NAME2), pair(NAME3)])


def test_same_change_on_both_sides_is_no_conflict() -> None:
    base = format_index([pair(NAME1)])
    both = format_index([pair(NAME1, version=2, n=5)])
    assert merge_index(base, both, both) == merge_index(base, both, both)._replace(conflicts=[])
    assert merge_index(base, both, both).text == both


def test_deletion_against_an_unchanged_pair_deletes() -> None:
    base = format_index([pair(NAME1), pair(NAME2)])
    ours = format_index([pair(NAME1)])  # `pair --prune` or `rm` on this branch
    result = merge_index(base, ours, base)
    assert result.clean and result.text == ours


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ([pair(NAME1, 2, 5)], [pair(NAME1, 2, 9)]),  # both changed it differently
        ([], [pair(NAME1, 2, 9)]),  # deleted on one side, changed on the other
    ],
)
def test_real_conflicts_get_markers_and_the_parser_names_them(
    ours: list[Entry], theirs: list[Entry]
) -> None:
    base = format_index([pair(NAME1), pair(NAME2)])
    result = merge_index(
        base, format_index([*ours, pair(NAME2)]), format_index([*theirs, pair(NAME2), pair(NAME3)])
    )
    assert not result.clean
    assert len(result.conflicts) == 1 and result.conflicts[0].startswith(NAME1)  # pair or case
    text = result.text
    assert text.count("<<<<<<< ours") == 1 and text.count(">>>>>>> theirs") == 1
    assert "||||||| base" in text  # the base lines help decide
    assert f"{NAME3}.nii.gz" in text  # the clean part is merged around the conflict
    with pytest.raises(IndexFormatError, match="git merge conflict markers"):
        parse_index(text, "volsegsync.index")


def test_a_file_paired_differently_on_each_side_is_a_conflict() -> None:
    seg = f"{NAME1}-v1.nrrd"
    base = format_index([Entry(None, rec(seg, 1), 1), Entry(rec(f"{NAME1}.nii.gz", 0), None, None)])
    ours = format_index([Entry(rec(f"{NAME1}.nii.gz", 0), rec(seg, 1), 1)])
    theirs = format_index(
        [Entry(None, rec(seg, 1), 1), Entry(rec(f"{NAME1}.nii.gz", 9), None, None)]
    )
    result = merge_index(base, ours, theirs)
    assert not result.clean  # the volume changed on both sides: never a silent pick


def test_format_1_groups_by_volume_or_lone_segmentation() -> None:
    head = "volsegsync-index 1\n# volume -> segmentation\tversion\t...\n"
    h = "0" * 32
    line1 = f"a.nii.gz\t->\ta-v1.nrrd\t1\t1\t{h}\t1\t{h}\n"
    lone = f"-\t->\tb-v1.nrrd\t1\t-\t-\t1\t{h}\n"
    line3 = f"c.nii.gz\t->\tc-v1.nrrd\t1\t1\t{h}\t1\t{h}\n"
    result = merge_index(head + line1, head + line1 + lone, head + line1 + line3)
    assert result.clean
    assert result.text == head + line1 + lone + line3


FORMAT2_HEAD = "volsegsync-index 2\nhash xxh3-128\n# case\trole\tversion\tsize\thash\tpath\n"


def f2(case: str, *versions: str, vol: str = "1", active: str = "") -> str:
    """Format-2 lines of one case: a volume and seg versions (the last one active)."""
    h = "a" * 32
    lines = [f"{case}\tvolume\t-\t10\t{vol * 32}\tvolumes/{case}.nii.gz"]
    for v in versions:
        mark = "*" if v == (active or versions[-1]) else ""
        lines.append(f"{case}\tseg\t{v}{mark}\t20\t{h}\tsegs/{case}-v{v}.nrrd")
    return "\n".join(lines) + "\n"


def test_format_2_merges_per_case() -> None:
    base = FORMAT2_HEAD + f2("C01", "1") + f2("C02", "1")
    ours = FORMAT2_HEAD + f2("C01", "1", "2") + f2("C02", "1")  # a version bump in C01
    theirs = FORMAT2_HEAD + f2("C01", "1") + f2("C02", "1", vol="b") + f2("C03", "1")
    result = merge_index(base, ours, theirs)
    assert result.clean
    assert result.text == FORMAT2_HEAD + f2("C01", "1", "2") + f2("C02", "1", vol="b") + f2(
        "C03", "1"
    )
    # both sides move the active version of C01 differently: a conflict on that case only
    other = FORMAT2_HEAD + f2("C01", "1", "2", active="1") + f2("C02", "1")
    clash = merge_index(base, ours, other)
    assert clash.conflicts == ["C01"]
    assert f2("C02", "1") in clash.text


def test_unknown_input_becomes_one_whole_file_conflict() -> None:
    base = format_index([pair(NAME1)])
    newer = "volsegsync-index 9\nwhatever\n"
    result = merge_index(base, base, newer)
    assert not result.clean
    assert result.text.startswith("<<<<<<< ours\n") and "volsegsync-index 9" in result.text
    assert result.unmergeable == "line 1 is not 'volsegsync-index 1' or 'volsegsync-index 2'"


# --------------------------------------------------------------------------- real git


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A", ".")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@example.org", "commit", "-q", "-m", message)


def branch_with(repo: Path, ds: Path, branch: str, name: str, stash: Path) -> None:
    """From main: add the pair ``name`` on a new branch; its files go to ``stash``."""
    git(repo, "checkout", "-q", "-b", branch, "main")
    vol, segs = write_pair(ds, name)
    age_all(ds)
    assert invoke(["-C", str(ds), "pair", "-q"]).exit_code == 0
    commit_all(repo, f"add {name}")
    for path in (vol, *segs):  # ignored files stay on disk across checkouts: set aside
        shutil.move(ds / path, stash / path)


BARE_PATH = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if os.path.isdir(p))


def merge(repo: Path, branch: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """``git merge`` with the volsegsync of this test run on PATH (or ``path``)."""
    default = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path or default}
    return subprocess.run(
        [GIT, "-C", str(repo), "-c", "user.name=T", "-c", "user.email=t@example.org",
         "merge", "-q", "--no-edit", branch],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip


def setup_two_branches(repo: Path, tmp_path: Path, ds: Path | None = None) -> None:
    ds = ds or repo
    git(repo, "checkout", "-q", "-b", "main")
    write_pair(ds, NAME1)
    age_all(ds)
    assert invoke(["-C", str(ds), "pair", "-q"]).exit_code == 0
    commit_all(repo, "base")
    stash = tmp_path / "stash"
    stash.mkdir()
    branch_with(repo, ds, "a", NAME2, stash)
    branch_with(repo, ds, "b", NAME3, stash)
    for f in stash.iterdir():
        shutil.move(f, ds / f.name)


@pytest.mark.parametrize("maker", [init_with_git_binary, init_with_dulwich])
def test_git_merges_two_branches_that_add_neighbouring_cases(
    tmp_path: Path, maker: Callable[[Path], Path]
) -> None:
    repo = maker(tmp_path / "ds")
    assert "volsegsync.index merge=volsegsync" in (repo / ".gitattributes").read_text()
    assert git(repo, "config", "merge.volsegsync.driver").stdout.strip() == MERGE_DRIVER
    setup_two_branches(repo, tmp_path)
    # control: git's own line merge conflicts on these neighbouring additions
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text("volsegsync.index merge=text\n")
    assert merge(repo, "a").returncode == 1
    git(repo, "merge", "--abort")
    (repo / ".git" / "info" / "attributes").unlink()

    done = merge(repo, "a")
    assert done.returncode == 0, done.stderr
    merged = parse_index((repo / "volsegsync.index").read_text())
    assert sorted(e.volume.path for e in merged if e.volume) == sorted(
        f"{n}.nii.gz" for n in (NAME1, NAME2, NAME3)
    )
    status = invoke(["-C", str(repo), "status"])
    assert status.exit_code == 0, status.output


def test_git_merge_with_a_real_conflict(ds_root: Path, tmp_path: Path) -> None:
    setup_two_branches(ds_root, tmp_path)
    seg = ds_root / f"{NAME1}-v1.nrrd"
    for branch, seed in (("a", "from a"), ("b", "from b")):
        git(ds_root, "checkout", "-q", branch)
        write_nrrd(seg, seed=seed)
        age_all(ds_root)
        assert invoke(["-C", str(ds_root), "pair", "-q"]).exit_code == 0
        commit_all(ds_root, f"edit {NAME1} on {branch}")
    proc = merge(ds_root, "a")
    assert proc.returncode == 1
    assert "volsegsync.index: both sides changed 1 pair(s) differently" in proc.stderr
    text = (ds_root / "volsegsync.index").read_text()
    assert text.count("<<<<<<< ours") == 1
    assert f"{NAME2}.nii.gz" in text and f"{NAME3}.nii.gz" in text  # merged around it
    status = invoke(["-C", str(ds_root), "status"])
    assert status.exit_code == 2
    assert "git merge conflict markers: the merge is unfinished" in status.stderr
    assert "volsegsync pair" in status.stderr
    assert "Traceback" not in status.output


def test_a_side_still_in_format_1_is_upgraded_first() -> None:
    """One branch ran the new `pair` (format 2), the other still has format 1."""
    h = "0" * 32

    def v1(*names: str) -> str:
        lines = [f"{n}.nii.gz\t->\t{n}-v1.nrrd\t1\t1\t{h}\t2\t{h}" for n in names]
        return "volsegsync-index 1\n# volume -> segmentation ...\n" + "".join(
            f"{line}\n" for line in lines
        )

    base, ours = v1(NAME1), v1(NAME1, NAME2)
    theirs = format_index([*parse_index(base), pair(NAME3)])
    if theirs.startswith("volsegsync-index 1"):
        pytest.skip("this index module writes format 1")
    result = merge_index(base, ours, theirs)
    assert result.clean, result.text
    assert result.text.startswith("volsegsync-index 2\n")
    merged = parse_index(result.text)
    assert sorted(e.volume.path for e in merged if e.volume) == sorted(
        f"{n}.nii.gz" for n in (NAME1, NAME2, NAME3)
    )


def test_a_merge_that_would_not_be_a_valid_index_is_a_conflict() -> None:
    """One side moves to another hash algorithm, the other adds a case in the old one."""
    base = format_index([pair(NAME1)])
    if not base.startswith("volsegsync-index 2"):
        pytest.skip("needs index format 2")
    sha = (
        FileRecord(f"{NAME1}.nii.gz", 100, "a" * 64),
        FileRecord(f"{NAME1}-v1.nrrd", 101, "b" * 64),
    )
    ours = format_index([Entry(*sha, 1)], algorithm="sha256")
    theirs = format_index([pair(NAME1), pair(NAME2)])
    result = merge_index(base, ours, theirs)
    assert not result.clean and "<<<<<<< ours" in result.text
    assert "hash" in result.unmergeable


def test_git_merges_a_dataset_in_a_folder_with_spaces(tmp_path: Path) -> None:
    repo = tmp_path / "repo ü"
    ds = repo / "Wirbelsäule" / "my data"
    ds.mkdir(parents=True)
    git(repo, "init", "-q")
    assert invoke(["-C", str(ds), "init", "-q"]).exit_code == 0  # declares the driver
    setup_two_branches(repo, tmp_path, ds)
    done = merge(repo, "a")
    assert done.returncode == 0, done.stderr
    assert invoke(["-C", str(ds), "status"]).exit_code == 0
    assert len([e for e in parse_index((ds / "volsegsync.index").read_text()) if e.volume]) == 3


def test_merge_driver_command_on_files_it_cannot_merge(tmp_path: Path) -> None:
    base, ours, theirs = (tmp_path / n for n in ("base", "ours", "theirs"))
    base.write_text(format_index([pair(NAME1)]))
    ours.write_text(format_index([pair(NAME1), pair(NAME2)]))
    theirs.write_text("not an index\n")
    result = invoke(["merge-driver", str(base), str(ours), str(theirs), "ds/volsegsync.index"])
    assert result.exit_code == 1
    assert "ds/volsegsync.index: cannot merge per pair" in result.stderr
    assert ours.read_text().startswith("<<<<<<< ours\n") and "not an index" in ours.read_text()


def test_without_volsegsync_on_path_git_merges_lines_as_usual(ds_root: Path) -> None:
    """A GUI client without volsegsync: the driver falls back to git's own line merge."""
    if shutil.which("volsegsync", path=BARE_PATH):
        pytest.skip("a volsegsync is installed system-wide")
    git(ds_root, "checkout", "-q", "-b", "main")
    for name in (NAME1, NAME2, NAME3):
        write_pair(ds_root, name)
    age_all(ds_root)
    assert invoke(["-C", str(ds_root), "pair", "-q"]).exit_code == 0
    commit_all(ds_root, "base")
    edited: dict[str, bytes] = {}
    on_main = {n: (ds_root / f"{n}-v1.nrrd").read_bytes() for n in (NAME1, NAME3)}
    for branch, name in (("a", NAME1), ("b", NAME3)):  # cases apart in the sorted index
        git(ds_root, "checkout", "-q", "-b", branch, "main")
        for other in edited:  # images are not in git: put back what main has
            (ds_root / f"{other}-v1.nrrd").write_bytes(on_main[other])
        seg = ds_root / f"{name}-v1.nrrd"
        write_nrrd(seg, seed=f"edited on {branch}")
        edited[name] = seg.read_bytes()
        age_all(ds_root)
        assert invoke(["-C", str(ds_root), "pair", "-q"]).exit_code == 0
        commit_all(ds_root, f"edit {name}")
    done = merge(ds_root, "a", path=BARE_PATH)
    assert done.returncode == 0, done.stderr
    assert "not found" not in done.stderr
    for name, data in edited.items():
        (ds_root / f"{name}-v1.nrrd").write_bytes(data)
    age_all(ds_root)
    status = invoke(["-C", str(ds_root), "status"])
    assert status.exit_code == 0, status.output
