"""Walking a dataset: candidates by extension, skipped folders, excludes, bad entries."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import NAME1, NAME2, write_nii, write_nrrd

from volsegsync.config import NamingConfig, RolesConfig
from volsegsync.hashing import Stat
from volsegsync.naming import Convention
from volsegsync.scan import walk

CONV = Convention(NamingConfig(), RolesConfig())


def stat_of(path: Path) -> Stat:
    st = path.stat()
    return Stat(st.st_size, st.st_mtime_ns, st.st_ino)


def test_walk_finds_candidates_with_stat(tmp_path: Path) -> None:
    a = write_nii(tmp_path / "vols" / f"{NAME1}.nii.gz")
    b = write_nrrd(tmp_path / "segs" / "deep" / f"{NAME1}-v1.seg.nrrd")
    c = write_nrrd(tmp_path / f"{NAME2}.nrrd")
    (tmp_path / "README.md").write_text("hi")
    (tmp_path / "notes.nii.gz.txt").write_text("hi")
    write_nii(tmp_path / ".git" / "x.nii.gz")
    write_nii(tmp_path / ".volsegsync" / "state" / "x.nii.gz")
    write_nii(tmp_path / "sub" / ".git" / "y.nii.gz")
    result = walk(tmp_path, CONV)
    assert result.files == {
        f"vols/{NAME1}.nii.gz": stat_of(a),
        f"segs/deep/{NAME1}-v1.seg.nrrd": stat_of(b),
        f"{NAME2}.nrrd": stat_of(c),
    }
    assert result.unreadable == {}


def test_walk_exclude_patterns(tmp_path: Path) -> None:
    write_nii(tmp_path / "keep" / "a.nii.gz")
    write_nii(tmp_path / "scratch" / "b.nii.gz")
    write_nrrd(tmp_path / "keep" / "c.tmp.nrrd")
    result = walk(tmp_path, CONV, exclude=["scratch", "*.tmp.nrrd"])
    assert sorted(result.files) == ["keep/a.nii.gz"]


def test_walk_reports_bad_entries_and_goes_on(tmp_path: Path) -> None:
    write_nii(tmp_path / f"{NAME1}.nii.gz")
    os.symlink(tmp_path / "gone.nii.gz", tmp_path / f"{NAME2}.nii.gz")
    os.mkfifo(tmp_path / "pipe.nrrd")
    bad = os.fsencode(tmp_path) + b"/C09-Bad\xff-D01012000.nii.gz"
    with open(bad, "wb") as f:
        f.write(b"x")
    good_link_target = write_nrrd(tmp_path / "target" / "t.nrrd")
    os.symlink(good_link_target, tmp_path / f"{NAME1}-v1.nrrd")
    result = walk(tmp_path, CONV)
    assert sorted(result.files) == [f"{NAME1}-v1.nrrd", f"{NAME1}.nii.gz", "target/t.nrrd"]
    assert result.unreadable == {
        f"{NAME2}.nii.gz": "broken symbolic link",
        "pipe.nrrd": "not a regular file",
        os.fsdecode(b"C09-Bad\xff-D01012000.nii.gz"): "the name is not valid UTF-8",
    }


def test_walk_folders_named_like_images_and_bad_names_of_every_kind(tmp_path: Path) -> None:
    """A folder named ``x.nii.gz`` is entered (a link to one is no file); a name the
    index cannot hold is reported as such whatever the entry is, also in a folder of
    otherwise good names and below a folder whose own name is bad."""
    inner = write_nrrd(tmp_path / "odd.nii.gz" / f"{NAME1}-v1.nrrd")
    write_nii(tmp_path / ".git.nii.gz" / "kept.nii.gz")  # not one of the skipped folders
    os.symlink(tmp_path / "odd.nii.gz", tmp_path / "to-folder.nrrd")
    write_nii(tmp_path / f"{NAME1}.nii.gz")
    write_nii(tmp_path / "tab\there.nii.gz")
    os.mkfifo(tmp_path / "fifo\nname.nrrd")
    write_nii(tmp_path / "new\nline" / "a.nii.gz")
    result = walk(tmp_path, CONV)
    assert sorted(result.files) == [
        ".git.nii.gz/kept.nii.gz",
        f"{NAME1}.nii.gz",
        f"odd.nii.gz/{NAME1}-v1.nrrd",
    ]
    assert result.stat(f"odd.nii.gz/{NAME1}-v1.nrrd") == stat_of(inner)
    control = "the name holds a control character (tab, newline...)"
    assert result.unreadable == {
        "to-folder.nrrd": "not a regular file",
        "tab\there.nii.gz": control,
        "fifo\nname.nrrd": control,
        "new\nline/a.nii.gz": control,
    }


def _tree(root: Path) -> None:
    """Every kind of entry, spread over folders at several depths."""
    for sub in ("D1/imagesTr", "D1/labelsTr", "a", "b/deep/er", "odd.nii.gz"):
        write_nii(root / sub / f"{NAME1}.nii.gz")
        write_nrrd(root / sub / f"{NAME1}-v1.nrrd")
        write_nrrd(root / sub / f"{NAME2}.seg.nrrd")
    os.symlink(root / "gone.nii.gz", root / "a" / f"{NAME2}.nii.gz")
    os.symlink(root / "D1" / "imagesTr" / f"{NAME1}.nii.gz", root / "b" / f"{NAME2}.nii.gz")
    os.symlink("/etc/hostname", root / "b" / "deep" / "out.nrrd")  # out of the dataset
    os.symlink(root / "a", root / "b" / "to-folder.nrrd")
    os.mkfifo(root / "a" / "pipe.nrrd")
    write_nii(root / "a" / "tab\there.nii.gz")
    write_nii(root / "b" / "new\nline" / "x.nii.gz")
    write_nii(root / "scratch" / "skip.nii.gz")
    write_nii(root / "a" / ".git" / "y.nii.gz")


@pytest.mark.parametrize("layout", ["flat", "one folder deeper"])
@pytest.mark.parametrize("child", ["answers", "dies"])
def test_walk_shared_with_a_forked_child_equals_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child: str, layout: str
) -> None:
    """Folders walked by a forked child: the same files, stats, problems and folder
    order as one process, whether the child answers or dies (its share is then walked
    here); a lone folder at the top is entered before the folders are shared."""
    from volsegsync import scan, workers

    root = tmp_path / "ds" / ("D0" if layout == "one folder deeper" else "")
    _tree(root)
    top = tmp_path / "ds"
    monkeypatch.setattr(scan, "FORK_DIR_BYTES", 1 << 60)
    alone = walk(top, CONV, exclude=["scratch"])
    assert len(alone.files) >= 16 and len(alone.unreadable) == 6
    forks: list[int] = []

    class Counted(workers.Forked):
        def __init__(self, work: Any) -> None:
            forks.append(1)
            super().__init__(work)

    monkeypatch.setattr(workers, "Forked", Counted)
    monkeypatch.setattr(scan, "FORK_DIR_BYTES", 0)
    if child == "dies":
        parent = os.getpid()

        def dying(*args: Any) -> Any:
            assert os.getpid() != parent
            os._exit(3)

        monkeypatch.setattr(scan, "_walked", dying)
    assert walk(top, CONV, exclude=["scratch"], shared=False).folders == alone.folders
    assert forks == []  # one process asked for (-j 1): none forked
    shared = walk(top, CONV, exclude=["scratch"])
    assert forks == [1]
    assert list(shared.folders) == list(alone.folders)
    assert shared.folders == alone.folders and shared.unreadable == alone.unreadable
