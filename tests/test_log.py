"""``volsegsync log``: the version -> commit map, per-commit changes, ranges, the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from conftest import (
    NAME1,
    NAME2,
    NAME3,
    assert_clean_stderr,
    invoke,
    overwrite_same_size,
    run_script,
    write_nrrd,
    write_pair,
)
from histutil import Repo, git, repo_fixture  # noqa: F401  (the repo fixture)

from volsegsync.dataset import Dataset
from volsegsync.ops.log import parse_since, run_log

VOL1 = f"{NAME1}.nii.gz"


def three_versions(r: Repo) -> list[str]:
    """v1, v2, v3 of NAME1's segmentation over three commits (and NAME2 alongside)."""
    ids = []
    write_pair(r.root, NAME1, versions=(1,))
    write_pair(r.root, NAME2, versions=(1,))
    r.pair()
    ids.append(r.commit("first annotations", "Ann Otator <ann@example.org>"))
    write_nrrd(r.root / f"{NAME1}-v2.nrrd", seed="v2")
    r.pair()
    ids.append(r.commit("v2 of the lower back", "Bob Builder <bob@example.org>"))
    write_nrrd(r.root / f"{NAME1}-v3.nrrd", seed="v3")
    r.pair()
    ids.append(r.commit("v3: fix the L4 label", "Cy Press <cy@example.org>"))
    return ids


def test_three_versions_map_to_their_commits(repo: Repo) -> None:
    c1, c2, c3 = three_versions(repo)
    doc = repo.log(VOL1)
    versions = doc["versions"]
    assert [(v["version"], v["introduced"]["commit"]) for v in versions] == [
        (1, c1),
        (2, c2),
        (3, c3),
    ]
    v3 = versions[2]
    assert v3["segmentation"]["path"] == f"{NAME1}-v3.nrrd"
    assert v3["introduced"]["short"] == c3[:7]
    assert v3["introduced"]["author"] == "Cy Press <cy@example.org>"
    assert v3["introduced"]["subject"] == "v3: fix the L4 label"
    assert v3["introduced"]["date"] == "2023-11-16T23:13:20+01:00"
    assert len(v3["segmentation"]["hash"]) == 32
    assert versions[1]["kind"] == "new_version" and versions[0]["kind"] == "new_pair"
    # only the commits that touched this pair, newest first
    assert [c["commit"] for c in doc["commits"]] == [c3, c2, c1]
    # the same map when the pair is named by its segmentation or its name key
    for selector in (f"{NAME1}-v1.nrrd", NAME1):
        again = repo.log(selector)["versions"]
        assert [(v["version"], v["introduced"]["commit"]) for v in again] == [
            (1, c1),
            (2, c2),
            (3, c3),
        ]
    # NAME2 was only added
    other = repo.log(f"{NAME2}.nii.gz")
    assert [(v["version"], v["introduced"]["commit"]) for v in other["versions"]] == [(1, c1)]


def test_whole_dataset_log_text_reads_like_git_oneline(repo: Repo) -> None:
    c1, c2, c3 = three_versions(repo)
    result = invoke(["-C", str(repo.root), "log"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{c3[:7]} 2023-11-16 Cy Press: v3: fix the L4 label — 1 version bump",
        f"{c2[:7]} 2023-11-15 Bob Builder: v2 of the lower back — 1 version bump",
        f"{c1[:7]} 2023-11-14 Ann Otator: first annotations — 2 pairs added",
    ]
    shown = invoke(["-C", str(repo.root), "log", "-n", "1", "--changes"]).stdout.splitlines()
    assert shown[1] == (
        f"    new segmentation version: {VOL1} -> {NAME1}-v3.nrrd (v3, was {NAME1}-v2.nrrd)"
    )
    assert len(shown) == 2


def test_version_bump_and_silent_edit_are_told_apart(repo: Repo) -> None:
    write_pair(repo.root, NAME1, versions=(1,))
    repo.pair()
    c1 = repo.commit("v1")
    overwrite_same_size(repo.root / f"{NAME1}-v1.nrrd")  # edited in place: no new version
    repo.pair()
    c2 = repo.commit("quietly fixed a voxel")
    write_nrrd(repo.root / f"{NAME1}-v2.nrrd", seed="v2")
    repo.pair()
    c3 = repo.commit("v2")
    doc = repo.log()
    kinds = {c["commit"]: [ch["kind"] for ch in c["changes"]] for c in doc["commits"]}
    assert kinds == {c3: ["new_version"], c2: ["modified"], c1: ["new_pair"]}
    edit = doc["commits"][1]["changes"][0]
    assert edit["warning"] is True
    assert edit["old"]["segmentation"]["hash"] != edit["new"]["segmentation"]["hash"]
    versions = repo.log(VOL1)["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    assert [(e["commit"], e["kind"], e["warning"]) for e in versions[0]["later"]] == [
        (c2, "modified", True),
        (c3, "new_version", False),
    ]
    text = invoke(["-C", str(repo.root), "log"]).stdout
    assert "1 silent edit (!)" in text


def test_rename_across_commits_is_followed(repo: Repo) -> None:
    write_pair(repo.root, NAME1, versions=(1,), seg_dir="segs", vol_dir="vols")
    repo.pair()
    c1 = repo.commit("add")
    (repo.root / "labels").mkdir()
    shutil.move(repo.root / "segs" / f"{NAME1}-v1.nrrd", repo.root / "labels")
    repo.pair()
    c2 = repo.commit("move the labels")
    shutil.move(repo.root / "vols", repo.root / "images")
    repo.pair()
    c3 = repo.commit("move the volumes")
    doc = repo.log(f"images/{NAME1}.nii.gz")  # the pair as it is named now
    assert [c["commit"] for c in doc["commits"]] == [c3, c2, c1]
    assert doc["commits"][1]["changes"][0]["details"] == {
        "from": f"segs/{NAME1}-v1.nrrd",
        "to": f"labels/{NAME1}-v1.nrrd",
    }
    (v1,) = doc["versions"]
    assert v1["introduced"]["commit"] == c1
    assert [(e["commit"], e["kind"]) for e in v1["later"]] == [(c2, "renamed")]


def test_a_folder_selects_the_pairs_below_it(repo: Repo) -> None:
    write_pair(repo.root, NAME1, seg_dir="knee")
    write_pair(repo.root, NAME2, seg_dir="spine")
    repo.pair()
    c1 = repo.commit("two")
    write_nrrd(repo.root / "spine" / f"{NAME2}-v2.nrrd", seed="v2")
    repo.pair()
    c2 = repo.commit("spine v2")
    spine = repo.log("spine")
    assert [c["commit"] for c in spine["commits"]] == [c2, c1]
    assert [(v["version"], v["volume"]) for v in spine["versions"]] == [
        (1, f"{NAME2}.nii.gz"),
        (2, f"{NAME2}.nii.gz"),
    ]
    assert [c["commit"] for c in repo.log("knee")["commits"]] == [c1]
    assert repo.log(".")["versions"] is None  # the dataset root: the whole dataset


def test_ranges_limit_and_since(repo: Repo) -> None:
    c1, c2, c3 = three_versions(repo)
    assert [c["commit"] for c in repo.log(f"{c1}..{c3}")["commits"]] == [c3, c2]
    assert [c["commit"] for c in repo.log("HEAD~1..")["commits"]] == [c3]
    assert [c["commit"] for c in repo.log("HEAD~1")["commits"]] == [c2, c1]
    assert [c["commit"] for c in repo.log("-n", "2")["commits"]] == [c3, c2]
    assert [c["commit"] for c in repo.log("--since", "2023-11-16T00:00")["commits"]] == [c3]
    assert [c["commit"] for c in repo.log(c2[:8], VOL1)["commits"]] == [c2, c1]
    bad = invoke(["-C", str(repo.root), "log", "nosuchbranch..HEAD"])
    assert bad.exit_code == 2
    assert "nosuchbranch: unknown revision" in bad.output
    bad = invoke(["-C", str(repo.root), "log", "--since", "someday"])
    assert bad.exit_code == 2 and "--since someday: not a date" in bad.output


def test_branch_range_main_dot_dot_feature(ds_root: Path) -> None:
    r = Repo(ds_root, ds_root, "git")
    write_pair(r.root, NAME1)
    r.pair()
    r.commit("base")
    git(r.top, "branch", "-M", "main")
    git(r.top, "checkout", "-q", "-b", "feature")
    write_pair(r.root, NAME2)
    r.pair()
    f1 = r.commit("feature: NAME2")
    doc = r.log("main..feature")
    assert [c["commit"] for c in doc["commits"]] == [f1]
    assert [ch["kind"] for ch in doc["commits"][0]["changes"]] == ["new_pair"]


def test_no_commits_gives_a_clear_message(repo: Repo) -> None:
    write_pair(repo.root, NAME1)
    repo.pair()
    result = run_script(["log"], cwd=repo.root)
    assert result.returncode == 2
    assert_clean_stderr(result.stderr)
    assert b"the repository has no commits yet" in result.stderr
    assert result.stderr[-1:] == b"\n" and result.stderr.count(b"\n") == 1


def test_not_a_git_repository(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    assert invoke(["-C", str(root), "init", "--no-git"]).exit_code == 0
    result = invoke(["-C", str(root), "log"])
    assert result.exit_code == 2
    assert "not in a git repository" in result.output


def test_cache_gives_the_same_answer_and_survives_tampering(repo: Repo) -> None:
    three_versions(repo)
    ds = Dataset.open(repo.root)
    cache = ds.state_dir / "history.json"
    first = repo.log("--changes")
    assert cache.is_file()
    assert repo.log("--changes") == first  # from the cache
    assert repo.log(VOL1) == repo.log(VOL1)
    data = json.loads(cache.read_text())
    assert data["commits"] and data["walks"]
    # a hostile cache: paths escaping the dataset, wrong types, bad hashes
    for key, record in data["commits"].items():
        note, counts, rows = record
        data["commits"][key] = [note, counts, [r.replace(VOL1, "../../etc/passwd") for r in rows]]
    cache.write_text(json.dumps(data))
    assert repo.log("--changes") == first  # rejected records are recomputed from git
    assert "../../etc/passwd" not in json.dumps(repo.log(VOL1))
    for junk in ("[1,2", '{"key": 5}', json.dumps({**data, "walks": {"x": [[1]]}})):
        cache.write_text(junk)
        assert repo.log("--changes") == first
    cache.unlink()
    cache.mkdir()  # not a file: ignored, no crash
    assert repo.log("--changes") == first


def test_cache_is_never_read_through_a_link_or_fifo(repo: Repo, tmp_path: Path) -> None:
    import os

    three_versions(repo)
    first = repo.log()
    cache = Dataset.open(repo.root).state_dir / "history.json"
    cache.unlink()
    os.mkfifo(cache)  # reading a FIFO would hang
    result = run_script(["log", "--format", "json"], cwd=repo.root)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["commits"] == first["commits"]
    cache.unlink()
    secret = tmp_path / "elsewhere.json"
    secret.write_text("{}")
    cache.symlink_to(secret)
    assert repo.log() == first
    assert secret.read_text() == "{}"  # never written through the link


def test_json_fields(repo: Repo) -> None:
    three_versions(repo)
    doc = repo.log(VOL1)
    assert set(doc) == {"schema", "pairs", "commits", "versions", "notes"}
    assert doc["schema"] == "volsegsync.log/1"
    commit = doc["commits"][0]
    assert set(commit) == {
        "commit",
        "short",
        "author",
        "date",
        "subject",
        "parents",
        "path",
        "note",
        "summary",
        "changes",
    }
    change = commit["changes"][0]
    assert set(change) == {"kind", "paths", "message", "details", "warning", "old", "new"}
    assert set(change["new"]) == {"key", "volume", "segmentation", "version"}
    assert set(doc["versions"][0]) == {
        "version",
        "segmentation",
        "volume",
        "introduced",
        "kind",
        "later",
        "provenance",  # ingest (docs/ingest.md): null unless the version was ingested
    }


def test_csv_has_one_row_per_change(repo: Repo) -> None:
    three_versions(repo)
    result = invoke(["-C", str(repo.root), "log", "--format", "csv"])
    lines = result.stdout.splitlines()
    assert lines[0] == "commit,date,author,subject,kind,paths,message"
    assert len(lines) == 1 + 4  # 2 pairs added, 2 version bumps


def test_parse_since() -> None:
    assert parse_since("2023-11-15") == 1700006400
    assert parse_since("2023-11-15T01:00+01:00") == 1700006400
    assert parse_since("2.weeks", now=1_000_000_000) == 1_000_000_000 - 14 * 86400
    assert parse_since("3 days ago", now=1_000_000_000) == 1_000_000_000 - 3 * 86400


def test_log_of_three_pairs_in_one_commit_lists_each(repo: Repo) -> None:
    for name in (NAME1, NAME2, NAME3):
        write_pair(repo.root, name)
    repo.pair()
    c1 = repo.commit("three")
    report = run_log(Dataset.open(repo.root))
    (entry,) = report.entries
    assert entry.commit.id == c1
    assert entry.counts == {"new_pair": 3}
    assert sorted(c.details["volume"] for c in entry.changes) == sorted(
        f"{n}.nii.gz" for n in (NAME1, NAME2, NAME3)
    )


def _kinds(doc: dict[str, Any]) -> list[list[str]]:
    return [[ch["kind"] for ch in c["changes"]] for c in doc["commits"]]
