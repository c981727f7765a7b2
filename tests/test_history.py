"""history.py and the walk behind ``log``: revisions, merges, moved dataset folders,
subfolders with spaces and non-ASCII names, shallow and empty repositories."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import (
    NAME1,
    NAME2,
    NAME3,
    VOLSEGSYNC,
    assert_clean_stderr,
    invoke,
    overwrite_same_size,
    run_script,
    write_nrrd,
    write_pair,
)
from histutil import Repo, git

from volsegsync.changes import diff
from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.history import GitHistory
from volsegsync.index import parse_index
from volsegsync.ops.init import init_dataset
from volsegsync.ops.log import _Blob, run_log

NAME4 = "C04-Spine_T1_V001-D01012001"


def make_repo(tmp_path: Path, how: str, sub: str = "") -> Repo:
    top = tmp_path / "top"
    top.mkdir()
    if how == "git":
        git(top, "init", "-q", "-b", "main")
    else:
        from dulwich import porcelain

        porcelain.init(str(top)).close()
    root = top / sub if sub else top
    root.mkdir(parents=True, exist_ok=True)
    init_dataset(root)
    return Repo(top, root, how)


@pytest.mark.parametrize("how", ["git", "dulwich"])
def test_revisions_resolve(tmp_path: Path, how: str) -> None:
    r = make_repo(tmp_path, how)
    ids = []
    for name in (NAME1, NAME2, NAME3):
        write_pair(r.root, name)
        r.pair()
        ids.append(r.commit(f"add {name}"))
    git(r.top, "tag", "v1.0", ids[0])
    with GitHistory(r.root) as g:
        head = ids[2]
        assert g.head() == head
        for rev, want in [
            ("HEAD", head),
            ("@", head),
            (head, head),
            (head[:7], head),
            ("HEAD~2", ids[0]),
            ("HEAD^", ids[1]),
            ("HEAD~1^", ids[0]),
            ("HEAD^1~1", ids[0]),
            ("HEAD^0", head),
            ("v1.0", ids[0]),
        ]:
            assert g.resolve(rev) == want, rev
        assert g.parse_range("HEAD~2..HEAD") == ([head], [ids[0]])
        assert g.parse_range("HEAD~1..") == ([head], [ids[1]])
        for bad, message in [
            ("nope", "nope: unknown revision"),
            ("HEAD~3", "has no parent 1"),
            ("HEAD^2", "has no parent 2"),
            ("HEAD~x", "not a revision"),
            ("A...B", "symmetric ranges"),
        ]:
            with pytest.raises(VolsegsyncError, match=message):
                g.parse_range(bad)
        text = g.index_text("HEAD~1")
        assert text is not None
        assert [e.volume.path for e in parse_index(text) if e.volume] == [
            f"{NAME1}.nii.gz",
            f"{NAME2}.nii.gz",
        ]
    assert len(Dataset.open(r.root).index_at("v1.0")) == 1


@pytest.mark.parametrize("how", ["git", "dulwich"])
def test_empty_repository(tmp_path: Path, how: str) -> None:
    r = make_repo(tmp_path, how)
    with GitHistory(r.root) as g, pytest.raises(VolsegsyncError, match="no commits yet"):
        g.resolve("main")
    for args in (["log"], ["diff"], ["verify", "--rev", "HEAD"]):
        result = run_script(args, cwd=r.root)
        assert result.returncode == 2, args
        assert_clean_stderr(result.stderr)
        assert b"the repository has no commits yet" in result.stderr


def test_merge_reports_each_change_once_on_its_branch(tmp_path: Path) -> None:
    r = make_repo(tmp_path, "git")
    for name in (NAME1, NAME2, NAME3, NAME4):
        write_pair(r.root, name)
    r.pair()
    base = r.commit("four pairs")
    git(r.top, "checkout", "-q", "-b", "feature")
    write_nrrd(r.root / f"{NAME1}-v2.nrrd", seed="v2")
    r.pair()
    f1 = r.commit("feature: v2 of NAME1")
    aside = tmp_path / "aside.nrrd"
    shutil.move(r.root / f"{NAME1}-v2.nrrd", aside)  # images are not in git: as on main
    git(r.top, "checkout", "-q", "main")
    overwrite_same_size(r.root / f"{NAME4}-v1.nrrd")
    r.pair()
    m1 = r.commit("main: fix NAME4 in place")
    shutil.move(aside, r.root / f"{NAME1}-v2.nrrd")
    git(r.top, "merge", "-q", "--no-edit", "feature")
    merge = git(r.top, "rev-parse", "HEAD").stdout.strip()
    assert r.log()["commits"] and merge not in [c["commit"] for c in r.log()["commits"]]
    doc = r.log()
    got = {
        c["commit"]: [(ch["kind"], ch["paths"][0]) for ch in c["changes"]] for c in doc["commits"]
    }
    assert got == {
        f1: [("new_version", f"{NAME1}.nii.gz")],
        m1: [("modified", f"{NAME4}-v1.nrrd")],
        base: [("new_pair", f"{n}.nii.gz") for n in (NAME1, NAME2, NAME3, NAME4)],
    }
    # the merge itself changes a third pair (resolved by hand): only that is the merge's
    git(r.top, "checkout", "-q", "-b", "other", base)
    (r.top / "README").write_text("notes\n")
    git(r.top, "add", "README")
    git(r.top, "commit", "-q", "-m", "docs only")
    git(r.top, "checkout", "-q", "main")
    write_nrrd(r.root / f"{NAME3}-v2.nrrd", seed="NAME3 v2")
    git(r.top, "merge", "-q", "--no-commit", "--no-ff", "other")
    r.pair()  # picks up NAME3 v2 as part of the merge
    git(r.top, "add", "volsegsync.index")
    git(r.top, "commit", "-q", "--no-edit")
    top = r.log()["commits"][0]
    assert len(top["parents"]) == 2
    assert [(ch["kind"], ch["paths"][0]) for ch in top["changes"]] == [
        ("new_version", f"{NAME3}.nii.gz")
    ]
    # for one pair: the version map names the branch commit, not the merge
    versions = r.log(f"{NAME1}.nii.gz")["versions"]
    assert [(v["version"], v["introduced"]["commit"]) for v in versions] == [(1, base), (2, f1)]


@pytest.mark.parametrize("how", ["git", "dulwich"])
def test_dataset_in_a_subfolder_with_spaces_and_umlauts(tmp_path: Path, how: str) -> None:
    r = make_repo(tmp_path, how, sub="my data/Wirbelsäule")
    write_pair(r.root, NAME1)
    r.pair()
    c1 = r.commit("add")
    write_nrrd(r.root / f"{NAME1}-v2.nrrd", seed="v2")
    r.pair()
    c2 = r.commit("v2")
    doc = r.log(f"{NAME1}.nii.gz")
    assert [(v["version"], v["introduced"]["commit"]) for v in doc["versions"]] == [
        (1, c1),
        (2, c2),
    ]
    assert doc["commits"][0]["path"] == "my data/Wirbelsäule/volsegsync.index"
    assert len(Dataset.open(r.root).index_at("HEAD~1")) == 1
    result = run_script(["diff", "HEAD~1", "HEAD"], cwd=r.root)
    assert result.returncode == 0, result.stderr
    assert b"new segmentation version" in result.stdout


@pytest.mark.parametrize("how", ["git", "dulwich"])
def test_log_follows_a_renamed_dataset_folder(tmp_path: Path, how: str) -> None:
    r = make_repo(tmp_path, how, sub="old")
    write_pair(r.root, NAME1)
    r.pair()
    c1 = r.commit("add in old/")
    write_nrrd(r.root / f"{NAME1}-v2.nrrd", seed="v2")
    r.pair()
    c2 = r.commit("v2 in old/")
    if how == "git":
        git(r.top, "mv", "old", "Daten nëu")
    else:
        from dulwich import porcelain

        shutil.move(r.top / "old", r.top / "Daten nëu")
        tracked = [r.top / "old" / "volsegsync.index", r.top / "old" / ".volsegsync/config.toml"]
        porcelain.remove(str(r.top), paths=[str(p) for p in tracked], cached=True)
    r.root = r.top / "Daten nëu"
    c3 = r.commit("rename the dataset folder")
    write_nrrd(r.root / f"{NAME1}-v3.nrrd", seed="v3")
    r.pair()
    c4 = r.commit("v3")
    doc = r.log()
    assert [c["commit"] for c in doc["commits"]] == [c4, c3, c2, c1]
    assert doc["commits"][1]["note"] == "the dataset moved here from old/"
    assert doc["commits"][1]["changes"] == []
    assert [c["path"] for c in doc["commits"]] == [
        "Daten nëu/volsegsync.index",
        "Daten nëu/volsegsync.index",
        "old/volsegsync.index",
        "old/volsegsync.index",
    ]
    versions = r.log(f"{NAME1}.nii.gz")["versions"]
    assert [(v["version"], v["introduced"]["commit"]) for v in versions] == [
        (1, c1),
        (2, c2),
        (3, c4),
    ]


def test_shallow_clone_says_so(tmp_path: Path) -> None:
    r = make_repo(tmp_path, "git")
    ids = []
    for n, name in enumerate((NAME1, NAME2, NAME3)):
        write_pair(r.root, name)
        r.pair()
        ids.append(r.commit(f"commit {n}"))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth", "2", f"file://{r.top}", str(clone))
    result = invoke(["-C", str(clone), "log"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{ids[2][:7]} ") and lines[0].endswith("1 pair added")
    assert lines[1].startswith(f"{ids[1][:7]} ")
    assert "shallow" in lines[1]
    assert lines[-1] == (
        f"note: shallow clone: history before {ids[1][:7]} is not available (git fetch --unshallow)"
    )
    bad = invoke(["-C", str(clone), "diff", "HEAD~2", "HEAD"])
    assert bad.exit_code == 2 and "shallow clone" in bad.output


def test_partial_diff_equals_full_diff(tmp_path: Path) -> None:
    """Parsing only the changed lines gives the same changes as parsing everything."""
    r = make_repo(tmp_path, "git")
    names = [NAME1, NAME2, NAME3, NAME4]
    for name in names:
        write_pair(r.root, name)
    r.pair()
    texts = [(r.root / "volsegsync.index").read_text()]
    shutil.move(r.root / f"{NAME2}-v1.nrrd", r.root / "moved.nrrd")  # lost partner + lone seg
    write_nrrd(r.root / f"{NAME1}-v2.nrrd", seed="v2")
    overwrite_same_size(r.root / f"{NAME3}-v1.nrrd")
    (r.root / f"{NAME4}.nii.gz").unlink()
    write_nrrd(r.root / "C05-Hip_V001-D01012001-v1.nrrd")  # a lone segmentation
    r.pair()
    texts.append((r.root / "volsegsync.index").read_text())
    old, new = (_Blob(t.encode()) for t in texts)
    keys = {new.key(x) for x in new.set ^ old.set}
    partial = diff(parse_index(old.text(keys).decode()), parse_index(new.text(keys).decode()))
    full = diff(parse_index(texts[0]), parse_index(texts[1]))
    assert partial == full
    # an index not sorted by case key (edited by hand) is grouped the slow way, same result
    shuffled = []
    for t in texts:
        head, body = t.splitlines()[:3], t.splitlines()[3:]
        shuffled.append("\n".join([*head, *reversed(body)]) + "\n")
    old, new = (_Blob(t.encode()) for t in shuffled)
    assert old.text(keys) != _Blob(texts[0].encode()).text(keys) or len(keys) < 2
    unsorted = diff(parse_index(old.text(keys).decode()), parse_index(new.text(keys).decode()))
    assert unsorted == full
    assert {c.kind for c in full} >= {"new_version", "modified", "lost_partner", "new_file"}


def test_run_log_api(tmp_path: Path) -> None:
    r = make_repo(tmp_path, "dulwich")
    write_pair(r.root, NAME1)
    r.pair()
    c1 = r.commit("one")
    report = run_log(Dataset.open(r.root), pairs=[f"{NAME1}.nii.gz"])
    assert [e.commit.id for e in report.entries] == [c1]
    assert report.versions is not None
    assert [(v.version, v.commit.id) for v in report.versions] == [(1, c1)]


# --------------------------------------------------------------------------- hostile input


def _attack(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """The real console script under a memory limit and a timeout."""
    command = " ".join(shlex.quote(a) for a in [VOLSEGSYNC, *args])
    return subprocess.run(
        ["bash", "-c", f"ulimit -v 3000000; exec {command}"],
        cwd=cwd,
        capture_output=True,
        timeout=60,
    )


def test_a_hostile_index_in_history_is_reported_and_skipped(tmp_path: Path) -> None:
    r = make_repo(tmp_path, "git")
    write_pair(r.root, NAME1)
    r.pair()
    c1 = r.commit("good")
    index = r.root / "volsegsync.index"
    good = index.read_text()
    lines = good.splitlines()
    evil = [x.replace(f"{NAME1}-v1.nrrd", "../../etc/passwd") for x in lines]
    index.write_text("\n".join(evil) + "\n")
    c2 = r.commit("evil")
    index.write_text(good)
    write_pair(r.root, NAME2)
    r.pair()
    c3 = r.commit("good again")
    result = _attack(["log", "--format", "json"], r.root)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    by_id = {c["commit"]: c for c in doc["commits"]}
    assert [c["commit"] for c in doc["commits"]] == [c3, c2, c1]
    assert "../../etc/passwd" in by_id[c2]["note"] and by_id[c2]["changes"] == []
    assert "cannot read the index" in by_id[c2]["note"]
    assert "../../etc/passwd" not in json.dumps(by_id[c3]["changes"])
    bad = _attack(["diff", c1, c2], r.root)
    assert bad.returncode == 2
    assert_clean_stderr(bad.stderr)
    assert len(bad.stderr.splitlines()) == 1 and b"escapes" in bad.stderr


def test_an_index_committed_as_a_symlink_is_not_followed(tmp_path: Path) -> None:
    r = make_repo(tmp_path, "git")
    (r.root / "volsegsync.index").unlink()
    (r.top / "secret").write_text("volsegsync-index 2\n")
    os.symlink("secret", r.root / "volsegsync.index")
    git(r.top, "add", "-A")
    git(r.top, "commit", "-q", "-m", "a link")
    with GitHistory(r.root) as g:
        assert g.index_text("HEAD") is None  # not a regular file in git: no index
    result = _attack(["diff", "HEAD", "HEAD"], r.root)
    assert result.returncode == 0
    assert b"has no volsegsync.index" in result.stdout


def test_a_huge_cache_file_is_not_read(tmp_path: Path) -> None:
    r = make_repo(tmp_path, "git")
    write_pair(r.root, NAME1)
    r.pair()
    r.commit("one")
    cache = r.root / ".volsegsync" / "state" / "history.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "wb") as f:
        f.truncate(4 << 30)  # sparse: 4 GiB declared, more than the memory limit
    result = _attack(["log"], r.root)
    assert result.returncode == 0, result.stderr
    assert_clean_stderr(result.stderr)
    assert b"1 pair added" in result.stdout
