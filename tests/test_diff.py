"""``volsegsync diff``: revisions and the work tree, markdown for reviews, and the CI command
of docs/review.md run on a real repository with a branch; ``verify --rev``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from conftest import (
    NAME1,
    NAME2,
    NAME3,
    assert_clean_stderr,
    init_with_git_binary,
    invoke,
    overwrite_same_size,
    run_script,
    write_nrrd,
    write_pair,
)
from histutil import Repo, git, repo_fixture  # noqa: F401  (the repo fixture)

from volsegsync.dataset import Dataset
from volsegsync.ops.diff import run_diff
from volsegsync.ops.status import run_status

ROOT = Path(__file__).resolve().parent.parent
REVIEW_COMMAND = "volsegsync diff origin/main HEAD --format markdown"


def diff_json(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = invoke(["-C", str(root), "diff", "--format", "json", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def kinds(doc: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(c["kind"], c["paths"]) for c in doc["changes"]]


def test_head_against_the_work_tree(repo: Repo) -> None:
    write_pair(repo.root, NAME1)
    repo.pair()
    repo.commit("one pair")
    code, doc = diff_json(repo.root, "--exit-code")
    assert (code, doc["changes"]) == (0, [])
    assert (doc["old"], doc["new"]) == ("HEAD", "working tree")
    write_pair(repo.root, NAME2)  # on disk, not yet paired nor committed
    code, doc = diff_json(repo.root)
    assert code == 0  # without --exit-code, as git diff
    assert kinds(doc) == [("new_pair", [f"{NAME2}.nii.gz", f"{NAME2}-v1.nrrd"])]
    assert doc["summary"] == {
        "changes": {"new_pair": 1},
        "warnings": 0,
        "old_pairs": 1,
        "new_pairs": 2,
    }
    result = invoke(["-C", str(repo.root), "diff", "--exit-code"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"new pair: {NAME2}.nii.gz -> {NAME2}-v1.nrrd",
        "1 changes from HEAD → working tree: 1 pair added",
    ]


def test_two_revisions_and_a_range(repo: Repo) -> None:
    write_pair(repo.root, NAME1)
    repo.pair()
    c1 = repo.commit("one")
    write_nrrd(repo.root / f"{NAME1}-v2.nrrd", seed="v2")
    repo.pair()
    c2 = repo.commit("bump")
    for args in ([c1, c2], [f"{c1[:7]}..{c2[:7]}"], ["HEAD~1", "HEAD"]):
        _, doc = diff_json(repo.root, *args)
        assert kinds(doc) == [
            (
                "new_version",
                [f"{NAME1}.nii.gz", f"{NAME1}-v1.nrrd", f"{NAME1}-v2.nrrd"],
            )
        ], args
    _, doc = diff_json(repo.root, "HEAD", "HEAD~1")  # backwards: a version going down
    assert [c["kind"] for c in doc["changes"]] == ["pairing_changed"]
    bad = invoke(["-C", str(repo.root), "diff", "a", "b", "c"])
    assert bad.exit_code == 2 and "at most two revisions" in bad.output


def test_version_bump_and_silent_edit_between_revisions(repo: Repo) -> None:
    write_pair(repo.root, NAME1)
    write_pair(repo.root, NAME2)
    repo.pair()
    repo.commit("two pairs")
    overwrite_same_size(repo.root / f"{NAME2}-v1.nrrd")
    write_nrrd(repo.root / f"{NAME1}-v2.nrrd", seed="v2")
    repo.pair()
    repo.commit("a bump and a silent edit")
    code, doc = diff_json(repo.root, "HEAD~1", "HEAD", "--exit-code")
    assert code == 1
    assert [(c["kind"], c["warning"]) for c in doc["changes"]] == [
        ("new_version", False),
        ("modified", True),
    ]
    edit = doc["changes"][1]
    assert edit["old"]["segmentation"]["path"] == f"{NAME2}-v1.nrrd"
    assert edit["old"]["segmentation"]["hash"] == edit["details"]["old_hash"]
    assert edit["new"]["segmentation"]["hash"] == edit["details"]["new_hash"]
    assert doc["summary"]["warnings"] == 1
    text = invoke(["-C", str(repo.root), "diff", "HEAD~1", "HEAD"]).stdout
    assert f"warning: modified: {NAME2}-v1.nrrd" in text


def test_a_copy_is_not_a_rename(repo: Repo) -> None:
    """``cp X-v2 X-v3`` with v2 still on disk is a new version, in status and in diff."""
    write_pair(repo.root, NAME1, versions=(1, 2))
    repo.pair()
    repo.commit("v2")
    shutil.copyfile(repo.root / f"{NAME1}-v2.nrrd", repo.root / f"{NAME1}-v3.nrrd")
    want = [("new_version", [f"{NAME1}.nii.gz", f"{NAME1}-v2.nrrd", f"{NAME1}-v3.nrrd"])]
    _, doc = diff_json(repo.root)
    assert kinds(doc) == want
    report = run_status(Dataset.open(repo.root), jobs=1)
    assert [(c.kind, list(c.paths)) for c in report.changes] == want
    # a move is still a rename
    (repo.root / f"{NAME1}-v3.nrrd").unlink()
    shutil.move(repo.root / f"{NAME1}-v2.nrrd", repo.root / f"{NAME1}-v3.nrrd")
    _, doc = diff_json(repo.root)
    assert kinds(doc) == [("renamed", [f"{NAME1}-v2.nrrd", f"{NAME1}-v3.nrrd"])]


def test_a_revision_without_an_index_counts_everything_as_added(repo: Repo) -> None:
    (repo.root / "volsegsync.index").unlink(missing_ok=True)
    repo.commit("no index yet")  # only the config
    write_pair(repo.root, NAME1)
    repo.pair()
    repo.commit("index")
    _, doc = diff_json(repo.root, "HEAD~1", "HEAD")
    assert kinds(doc) == [("new_pair", [f"{NAME1}.nii.gz", f"{NAME1}-v1.nrrd"])]
    assert doc["notes"] == ["HEAD~1 has no volsegsync.index: every pair counts as added"]


def _digest(root: Path, rev: str, path: str) -> str:
    for e in Dataset.open(root).index_at(rev):
        if e.segmentation and e.segmentation.path == path:
            return e.segmentation.digest
    raise AssertionError(path)


def review_repo(tmp_path: Path) -> Path:
    """A clone of an 'origin' whose main has three pairs, on a branch 'feature' that adds a
    pair, bumps a version, edits a segmentation in place and moves one."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    work = tmp_path / "work"
    init_with_git_binary(work)
    r = Repo(work, work, "git")
    git(work, "checkout", "-q", "-b", "main")
    for name in (NAME1, NAME2):
        write_pair(work, name)
    write_pair(work, NAME3, seg_dir="labels")
    r.pair()
    r.commit("main: two pairs")
    git(work, "remote", "add", "origin", str(origin))
    git(work, "push", "-q", "origin", "main")
    git(work, "checkout", "-q", "-b", "feature")
    write_pair(work, "C04-Hip_V001-D01012001")
    write_nrrd(work / f"{NAME1}-v2.nrrd", seed="v2")
    overwrite_same_size(work / f"{NAME2}-v1.nrrd")
    (work / "segs").mkdir()
    shutil.move(work / "labels" / f"{NAME3}-v1.nrrd", work / "segs" / f"{NAME3}-v1.nrrd")
    r.pair()
    r.commit("feature: annotations")
    git(work, "fetch", "-q", "origin")
    return work


def expected_markdown(work: Path) -> list[str]:
    old = _digest(work, "origin/main", f"{NAME2}-v1.nrrd")[:12]
    new = _digest(work, "HEAD", f"{NAME2}-v1.nrrd")[:12]
    size = (work / f"{NAME2}-v1.nrrd").stat().st_size
    return [
        "### volsegsync diff `origin/main` → `HEAD`",
        "",
        "**4 changes**: 1 pair added, 1 version bump, 1 silent edit (!), 1 renamed",
        "",
        "| Change | Count |",
        "|---|---|",
        "| Pairs added | 1 |",
        "| Version bumps | 1 |",
        "| Content changed without a version bump (warning) | 1 |",
        "| Renamed or moved | 1 |",
        "",
        "> **Warning:** 1 file changed without a version bump: training data edited in place "
        "(save a new version instead, or confirm the edit is intended).",
        "",
        "#### Pairs added (1)",
        "",
        "| Volume | Segmentation | Version |",
        "|---|---|---|",
        "| `C04-Hip_V001-D01012001.nii.gz` | `C04-Hip_V001-D01012001-v1.nrrd` | v1 |",
        "",
        "#### Version bumps (1)",
        "",
        "| Volume | Was | Now | Version |",
        "|---|---|---|---|",
        f"| `{NAME1}.nii.gz` | `{NAME1}-v1.nrrd` | `{NAME1}-v2.nrrd` | v1 → v2 |",
        "",
        "#### Content changed without a version bump (warning) (1)",
        "",
        "| File | Size (bytes) | Hash |",
        "|---|---|---|",
        f"| `{NAME2}-v1.nrrd` | {size} → {size} | `{old}` → `{new}` |",
        "",
        "#### Renamed or moved (1)",
        "",
        "| From | To |",
        "|---|---|",
        f"| `labels/{NAME3}-v1.nrrd` | `segs/{NAME3}-v1.nrrd` |",
    ]


def test_review_command_of_the_docs_on_a_real_branch(tmp_path: Path) -> None:
    """The exact command in docs/review.md, as CI runs it: a real process, a real clone."""
    doc = (ROOT / "docs" / "review.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", doc, flags=re.DOTALL)
    assert len(blocks) == 2, "docs/review.md: a GitHub Actions and a GitLab CI snippet"
    github, gitlab = (yaml.safe_load(b) for b in blocks)
    steps = github["jobs"]["pairs"]["steps"]
    assert steps[0]["with"]["fetch-depth"] == 0
    assert any(REVIEW_COMMAND in s.get("run", "") for s in steps)
    assert any(REVIEW_COMMAND in line for line in gitlab["volsegsync-review"]["script"])
    work = review_repo(tmp_path)
    result = run_script(REVIEW_COMMAND.split()[1:], cwd=work)
    assert result.returncode == 0, result.stderr
    assert_clean_stderr(result.stderr)
    lines = result.stdout.decode("utf-8").splitlines()
    expected = expected_markdown(work)
    for number, (got, want) in enumerate(zip(lines, expected, strict=False), start=1):
        assert got == want, f"line {number}"
    assert len(lines) == len(expected)
    # the images need not be there: two revisions are compared from git alone
    for p in work.rglob("*.nrrd"):
        p.unlink()
    again = run_script(REVIEW_COMMAND.split()[1:], cwd=work)
    assert again.stdout.decode("utf-8").splitlines() == expected
    failing = run_script([*REVIEW_COMMAND.split()[1:], "--exit-code"], cwd=work)
    assert failing.returncode == 1


def test_markdown_without_changes_and_with_odd_names(repo: Repo) -> None:
    write_pair(repo.root, NAME1, seg_dir="a|b")
    repo.pair()
    repo.commit("one")
    result = invoke(["-C", str(repo.root), "diff", "HEAD", "HEAD", "--format", "markdown"])
    assert result.stdout.splitlines() == [
        "### volsegsync diff `HEAD` → `HEAD`",
        "",
        "No pairing change.",
    ]
    result = invoke(["-C", str(repo.root), "diff", "HEAD", "--format", "markdown"])
    assert "No pairing change." in result.stdout
    (repo.root / "a|b" / f"{NAME1}-v1.nrrd").unlink()
    # pair keeps a missing file's record (issue 7.3): the pair leaves only by `rm`
    result = invoke(["-C", str(repo.root), "diff", "--format", "markdown"])
    assert "No pairing change." in result.stdout
    assert invoke(["-C", str(repo.root), "rm", f"a|b/{NAME1}-v1.nrrd"]).exit_code == 0
    result = invoke(["-C", str(repo.root), "diff", "--format", "markdown"])
    assert f"| `{NAME1}.nii.gz` | `a\\|b/{NAME1}-v1.nrrd` |" in result.stdout


def test_verify_rev_checks_a_branch_against_the_disk(repo: Repo) -> None:
    write_pair(repo.root, NAME1)
    repo.pair()
    repo.commit("one")
    result = invoke(["-C", str(repo.root), "verify", "--rev", "HEAD", "--format", "json"])
    assert result.exit_code == 0, result.output
    drift = [p for p in json.loads(result.stdout)["problems"] if p["category"].startswith("drift")]
    assert drift == []
    overwrite_same_size(repo.root / f"{NAME1}-v1.nrrd")
    repo.pair()  # the work tree's index agrees with the disk again; HEAD does not
    assert invoke(["-C", str(repo.root), "verify"]).exit_code == 0
    result = invoke(["-C", str(repo.root), "verify", "--rev", "HEAD", "--format", "json"])
    assert result.exit_code == 1
    drift = [p for p in json.loads(result.stdout)["problems"] if p["category"].startswith("drift")]
    assert [(p["category"], p["files"]) for p in drift] == [
        ("drift_modified", [f"{NAME1}-v1.nrrd"])
    ]
    bad = invoke(["-C", str(repo.root), "verify", "--rev", "nope"])
    assert bad.exit_code == 2 and "nope: unknown revision" in bad.output


def test_run_diff_api(repo: Repo) -> None:
    write_pair(repo.root, NAME1)
    repo.pair()
    repo.commit("one")
    write_pair(repo.root, NAME2)
    report = run_diff(Dataset.open(repo.root))
    assert (report.old, report.new, report.old_pairs, report.new_pairs) == (
        "HEAD",
        "working tree",
        1,
        2,
    )
    (change,) = report.changes
    assert change.kind == "new_pair" and change.old is None
    assert change.new is not None and change.new.volume is not None
    assert change.new.volume.path == f"{NAME2}.nii.gz"
