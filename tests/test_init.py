"""``init``: the files it writes, what git ignores, idempotence, and git or no git."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import NAME1, assert_clean_stderr, git, invoke, run_script, write_pair

from volsegsync.config import DEFAULT_CONFIG_TEXT
from volsegsync.errors import VolsegsyncError
from volsegsync.index import format_index
from volsegsync.ops.init import BEGIN, END, init_dataset

PATTERNS = [
    "*.nhdr",
    "*.nii",
    "*.nii.gz",
    "*.nrrd",
    "*.raw",
    "*.raw.gz",
    "*.seg.nhdr",
    "*.seg.nrrd",
]
BLOCK = "\n".join([BEGIN, *PATTERNS, END]) + "\n"
TRACKED = [
    ".volsegsync/config.toml",
    ".volsegsync/.gitignore",
    "volsegsync.index",
    ".gitignore",
    ".gitattributes",
]


def snapshot_files(root: Path) -> dict[str, bytes]:
    return {p: (root / p).read_bytes() for p in TRACKED}


def test_init_writes_the_files(dataset: Path) -> None:
    assert (dataset / ".volsegsync" / "config.toml").read_text() == DEFAULT_CONFIG_TEXT
    assert (dataset / ".volsegsync" / ".gitignore").read_text() == (
        "/state/\n/cache/\n/config.local.toml\n"
    )
    assert (dataset / ".volsegsync" / "state").is_dir()
    assert (dataset / "volsegsync.index").read_text() == format_index([])
    assert (
        (dataset / "volsegsync.index").read_text().startswith("volsegsync-index 2\nhash xxh3-128\n")
    )
    assert (dataset / ".gitignore").read_text() == BLOCK


def test_git_ignores_images_and_state_but_not_the_description(dataset: Path) -> None:
    write_pair(dataset, NAME1, vol_dir="vols", seg_dir="segs")
    assert invoke(["-C", str(dataset), "pair"]).exit_code == 0
    for path in (
        f"vols/{NAME1}.nii.gz",
        f"segs/{NAME1}-v1.nrrd",
        "x.seg.nrrd",
        "a/b/c.nii",
        "segs/x-v2.nhdr",  # a detached NRRD header and its data files
        "segs/x-v2.raw",
        "segs/x-v2.raw.gz",
        ".volsegsync/state/stat.db",
        ".volsegsync/state/lock",
    ):
        assert git(dataset, "check-ignore", "-q", path, check=False).returncode == 0, path
    for path in TRACKED:
        assert git(dataset, "check-ignore", "-q", path, check=False).returncode == 1, path
    # and git status shows exactly the description as untracked
    out = git(dataset, "status", "--porcelain", "--untracked-files=all").stdout
    assert sorted(line[3:] for line in out.splitlines()) == sorted(TRACKED)


def test_rerun_is_harmless_and_keeps_user_edits(dataset: Path) -> None:
    config = dataset / ".volsegsync" / "config.toml"
    config.write_text(DEFAULT_CONFIG_TEXT.replace('separator = "-"', 'separator = "_"'))
    gitignore = dataset / ".gitignore"
    gitignore.write_text("*.pyc\n" + gitignore.read_text() + "build/\n")
    before = snapshot_files(dataset)
    result = invoke(["-C", str(dataset), "init"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Dataset in {dataset} is already initialised; nothing to do\n"
    assert snapshot_files(dataset) == before
    assert 'separator = "_"' in config.read_text()
    assert gitignore.read_text().count(BEGIN) == 1


def test_rerun_follows_extension_changes_in_the_block(ds_root: Path) -> None:
    config = ds_root / ".volsegsync" / "config.toml"
    config.write_text('[roles]\nvolume_extensions = [".mha"]\n')
    gitignore = ds_root / ".gitignore"
    gitignore.write_text("# mine\n" + gitignore.read_text() + "# also mine\n")
    report = init_dataset(ds_root)
    assert report.created == [".gitignore"]
    assert gitignore.read_text() == (
        f"# mine\n{BEGIN}\n*.mha\n*.nhdr\n*.nrrd\n*.raw\n*.raw.gz\n*.seg.nhdr\n*.seg.nrrd\n"
        f"{END}\n# also mine\n"
    )


def test_init_appends_to_an_existing_gitignore(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("*.log")  # no final newline
    init_dataset(tmp_path)
    assert (tmp_path / ".gitignore").read_text() == "*.log\n" + BLOCK


def test_rerun_with_a_broken_config_fails_cleanly(ds_root: Path) -> None:
    (ds_root / ".volsegsync" / "config.toml").write_text("[roles]\nvolume_extensions = 1\n")
    result = invoke(["-C", str(ds_root), "init"])
    assert result.exit_code == 2
    assert "[roles.volume_extensions] must be a list of strings" in result.stderr


def test_outside_a_git_repository_is_an_error(tmp_path: Path) -> None:
    result = invoke(["-C", str(tmp_path), "init"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"volsegsync: error: {tmp_path}: not inside a git repository; run 'volsegsync init "
        "--git' to create one, or 'volsegsync init --no-git' to go without\n"
    )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(VolsegsyncError, match="not inside a git repository"):
        init_dataset(tmp_path)


def test_outside_a_git_repository_subprocess(tmp_path: Path) -> None:
    proc = run_script(["init"], cwd=tmp_path)
    assert proc.returncode == 2
    assert b"not inside a git repository" in proc.stderr
    assert_clean_stderr(proc.stderr)


def test_init_git_creates_a_repository_with_dulwich(tmp_path: Path) -> None:
    result = invoke(["-C", str(tmp_path), "init", "--git", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == {
        "schema": "volsegsync.init/1",
        "root": str(tmp_path),
        "git_root": str(tmp_path),
        "git_created": True,
        "created": [
            ".volsegsync/config.toml",
            ".volsegsync/.gitignore",
            "volsegsync.index",
            ".gitignore",
            ".gitattributes",
        ],
        "warnings": [],
        "layout": None,
        "detected": None,
    }
    assert (tmp_path / ".git").is_dir()
    status = git(tmp_path, "status", "--porcelain")
    assert status.returncode == 0
    assert git(tmp_path, "rev-parse", "--show-toplevel").stdout.strip() == str(tmp_path)
    # a second --git does not make another repository
    again = json.loads(invoke(["-C", str(tmp_path), "init", "--git", "--format", "json"]).stdout)
    assert (again["git_created"], again["created"]) == (False, [])


def test_init_text_output(tmp_path: Path) -> None:
    result = invoke(["-C", str(tmp_path), "init", "--git"])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"Created a git repository in {tmp_path}",
        f"Initialised volsegsync dataset in {tmp_path}",
        "  wrote .volsegsync/config.toml",
        "  wrote .volsegsync/.gitignore",
        "  wrote volsegsync.index",
        "  wrote .gitignore",
        "  wrote .gitattributes",
        "Track the dataset's description in git:",
        "  git add .volsegsync/config.toml .volsegsync/.gitignore volsegsync.index .gitignore "
        ".gitattributes",
    ]


def test_init_no_git(tmp_path: Path) -> None:
    result = invoke(["-C", str(tmp_path), "init", "--no-git", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["git_root"] is None
    assert not (tmp_path / ".git").exists()
    assert (tmp_path / ".volsegsync" / "config.toml").is_file()
    write_pair(tmp_path, NAME1)
    assert invoke(["-C", str(tmp_path), "pair"]).exit_code == 0
    assert invoke(["-C", str(tmp_path), "status"]).exit_code == 0


def test_init_in_a_subfolder_of_a_repository(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    sub = tmp_path / "data" / "spine"
    sub.mkdir(parents=True)
    report = init_dataset(sub)
    assert report.git_root == tmp_path.resolve()
    assert not report.git_created
    assert (sub / ".gitignore").read_text() == BLOCK
    write_pair(sub, NAME1)
    assert (
        git(tmp_path, "check-ignore", "-q", f"data/spine/{NAME1}.nii.gz", check=False).returncode
        == 0
    )
    assert (
        git(tmp_path, "check-ignore", "-q", "data/spine/volsegsync.index", check=False).returncode
        == 1
    )


def test_chdir_on_the_group_and_per_command(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    assert invoke(["-C", str(root), "init", "--git"]).exit_code == 0
    write_pair(root, NAME1)
    assert invoke(["-C", str(root), "pair"]).exit_code == 0
    group = invoke(["-C", str(root), "status"])
    per_command = invoke(["status", "-C", str(root)])
    assert group.exit_code == per_command.exit_code == 0
    assert group.stdout == per_command.stdout == "in sync with volsegsync.index (1 pairs)\n"
    missing = invoke(["status", "-C", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert f"-C {tmp_path / 'nope'}: no such folder" in missing.stderr
    # no dataset here
    lost = invoke(["-C", str(tmp_path), "status"])
    assert lost.exit_code == 2
    assert "not a volsegsync dataset (nor any parent folder); run 'volsegsync init' first" in (
        lost.stderr
    )


def test_chdir_subprocess(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    proc = run_script(["-C", str(root), "init", "--git", "-q"])
    assert proc.returncode == 0
    assert proc.stdout == b""
    proc = run_script(["status", "-C", str(root)], cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == b"in sync with volsegsync.index (0 pairs)\n"
    assert_clean_stderr(proc.stderr)


def test_init_warns_when_git_would_ignore_the_description(tmp_path: Path) -> None:
    """A .gitignore above the dataset hiding the index or the config is caught (by dulwich)."""
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("*.index\n")
    (tmp_path / "data").mkdir()
    result = invoke(["-C", str(tmp_path / "data"), "init", "--format", "json"])
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert warnings == [
        "git ignores volsegsync.index, which must be tracked: check the .gitignore files above it"
    ]
    assert git(tmp_path, "check-ignore", "-q", "data/volsegsync.index", check=False).returncode == 0
    text = invoke(["-C", str(tmp_path / "data"), "init"]).stdout
    assert "warning: git ignores volsegsync.index" in text
    (tmp_path / ".gitignore").write_text("")
    assert (
        json.loads(invoke(["-C", str(tmp_path / "data"), "init", "--format", "json"]).stdout)[
            "warnings"
        ]
        == []
    )


def test_git_and_no_git_together_are_a_usage_error(tmp_path: Path) -> None:
    proc = run_script(["init", "--git", "--no-git"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("volsegsync: error: --git and --no-git contradict")
    assert not (tmp_path / ".volsegsync").exists()


@pytest.mark.parametrize("what", ["file", "link"])
def test_a_file_where_the_state_folder_should_be(tmp_path: Path, what: str) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / ".volsegsync").mkdir()
    state = tmp_path / ".volsegsync" / "state"
    if what == "file":
        state.write_text("not a folder")
    else:
        state.symlink_to(tmp_path.parent)
    proc = run_script(["init"], cwd=tmp_path)
    assert_clean_stderr(proc.stderr)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert len(err.splitlines()) == 1 and str(state) in err
    assert ("not a regular file" in err or "is a" in err) and "FileExistsError" not in err


def test_example_inside_a_git_repository_makes_its_own(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    proc = run_script(["example", "demo", "--format", "json"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["git_root"] == str((tmp_path / "demo").resolve())
    assert (tmp_path / "demo" / ".git").is_dir()
    assert git(tmp_path / "demo", "rev-parse", "--show-toplevel").stdout.strip() == str(
        (tmp_path / "demo").resolve()
    )
