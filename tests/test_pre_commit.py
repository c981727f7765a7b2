"""Our .pre-commit-hooks.yaml with the real pre-commit framework.

The hooks' repository is made from this WORKING TREE, not from a commit of it: the
manifest, pyproject.toml, README.md and the package are copied into a fresh git
repository and committed there, so an uncommitted change to the manifest or the
code is what is tested (a broken manifest fails here before it is committed).
Each dataset repository gets a ``.pre-commit-config.yaml`` naming that repository,
as a user's would; pre-commit installs it into an environment of its own once per
test module (some seconds; it installs the dependencies from the package index),
then runs the hooks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GIT, NAME1, NAME2, age_all, git, invoke, make_affine, set_mtime, write_nrrd
from conftest import write_pair as write_files

ROOT = Path(__file__).resolve().parent.parent
PRE_COMMIT = shutil.which("pre-commit", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(PRE_COMMIT is None, reason="pre-commit is a test extra")
COPIED = (".pre-commit-hooks.yaml", "pyproject.toml", "README.md", "volsegsync")
HOOKS = ("volsegsync-verify", "volsegsync-check-names")


def commit_all(repo: Path, message: str = "dataset") -> str:
    git(repo, "add", "-A", ".")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@example.org",
        "commit", "-q", "--no-verify", "-m", message)  # fmt: skip
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def hooks_repository(target: Path, manifest: str | None = None) -> tuple[Path, str]:
    """A git repository holding this working tree's hooks project; returns (path, rev)."""
    target.mkdir()
    git(target, "init", "-q")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, target / name)
    if manifest is not None:
        (target / ".pre-commit-hooks.yaml").write_text(manifest)
    return target, commit_all(target, "the hooks, as in the working tree")


@pytest.fixture(scope="module")
def hooks_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return hooks_repository(tmp_path_factory.mktemp("hooks") / "volsegsync")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pre-commit-home")


def configure(repo: Path, hooks: tuple[Path, str]) -> None:
    path, rev = hooks
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n- repo: {path}\n  rev: {rev}\n  hooks:\n"
        + "".join(f"  - id: {h}\n" for h in HOOKS)
    )


def pre_commit(repo: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["PRE_COMMIT_HOME"] = str(home)
    return subprocess.run(
        [str(PRE_COMMIT), *args], cwd=repo, capture_output=True, text=True, env=env,
        timeout=900, check=False,
    )  # fmt: skip


def dataset_in(repo: Path, folder: str) -> Path:
    """A dataset with two clean pairs in ``repo/folder``, indexed."""
    ds = repo / folder if folder != "." else repo
    ds.mkdir(parents=True, exist_ok=True)
    assert invoke(["-C", str(ds), "init", "-q"]).exit_code == 0
    write_files(ds, NAME1)
    write_files(ds, NAME2)
    age_all(ds)
    assert invoke(["-C", str(ds), "pair", "-q"]).exit_code == 0
    return ds


@pytest.fixture
def repo(tmp_path: Path, hooks_repo: tuple[Path, str]) -> Path:
    repo = tmp_path / "dataset repo"
    repo.mkdir()
    git(repo, "init", "-q")
    configure(repo, hooks_repo)
    return repo


@pytest.mark.parametrize("folder", [".", "ds", "Wirbelsäule/my data"])
def test_verify_hook_passes_then_blocks(repo: Path, home: Path, folder: str) -> None:
    ds = dataset_in(repo, folder)
    commit_all(repo)
    index = "volsegsync.index" if folder == "." else f"{folder}/volsegsync.index"
    ok = pre_commit(repo, home, "run", "volsegsync-verify", "--files", index)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Passed" in ok.stdout

    seg = ds / f"{NAME1}-v1.nrrd"
    write_nrrd(seg, affine=make_affine(spacing=(0.9, 0.9, 3.0)))
    set_mtime(seg)
    assert invoke(["-C", str(ds), "pair", "-q"]).exit_code == 0
    bad = pre_commit(repo, home, "run", "volsegsync-verify", "--files", index)
    assert bad.returncode == 1
    assert "Failed" in bad.stdout and "[geometry]" in bad.stdout
    assert f"checking the dataset in {folder}" in bad.stdout and f"{NAME1}-v1.nrrd" in bad.stdout


def test_check_names_checks_a_dataset_in_a_subfolder(repo: Path, home: Path) -> None:
    ds = dataset_in(repo, "data/spine")
    (repo / "notes.txt").write_text("unrelated\n")
    commit_all(repo)
    skipped = pre_commit(repo, home, "run", "volsegsync-check-names", "--files", "notes.txt")
    assert skipped.returncode == 0 and "Skipped" in skipped.stdout

    (ds / "C01-bad name.nii.gz").write_bytes(b"irrelevant")
    config = "data/spine/.volsegsync/config.toml"
    result = pre_commit(repo, home, "run", "volsegsync-check-names", "--files", config)
    assert result.returncode == 1, result.stdout
    assert "C01-bad name.nii.gz" in result.stdout and "[naming]" in result.stdout


def test_git_commit_through_the_framework_stops_a_stale_index(repo: Path, home: Path) -> None:
    ds = dataset_in(repo, "my data")
    installed = pre_commit(repo, home, "install")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    git(repo, "add", "-A", ".")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["PRE_COMMIT_HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"

    def commit() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GIT, "-C", str(repo), "-c", "user.name=T", "-c", "user.email=t@example.org",
             "commit", "-q", "-m", "change"],
            capture_output=True, text=True, env=env, check=False, timeout=900,
        )  # fmt: skip

    first = commit()
    assert first.returncode == 0, first.stdout + first.stderr
    write_nrrd(ds / f"{NAME1}-v3.nrrd")  # a new version the index does not record
    config = ds / ".volsegsync" / "config.toml"
    config.write_text(config.read_text() + "# touched\n")
    git(repo, "add", "my data/.volsegsync/config.toml")
    stale = commit()
    assert stale.returncode == 1
    out = stale.stdout + stale.stderr
    assert "the index does not record the files on disk" in out and f"{NAME1}-v3.nrrd" in out
    assert "volsegsync -C 'my data' pair" in out


def test_the_manifest_of_the_working_tree_is_what_is_tested(
    tmp_path: Path, home: Path, hooks_repo: tuple[Path, str]
) -> None:
    copied = (hooks_repo[0] / ".pre-commit-hooks.yaml").read_text()
    assert copied == (ROOT / ".pre-commit-hooks.yaml").read_text()  # uncommitted edits too
    valid = pre_commit(ROOT, home, "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml"))
    assert valid.returncode == 0, valid.stdout + valid.stderr


def test_a_broken_manifest_fails(tmp_path: Path, home: Path) -> None:
    """The proof that these tests can fail: a manifest without an entry is refused."""
    broken = (
        (ROOT / ".pre-commit-hooks.yaml")
        .read_text()
        .replace("  entry: volsegsync hook check-names\n", "")
    )
    hooks = hooks_repository(tmp_path / "broken", manifest=broken)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    configure(repo, hooks)
    dataset_in(repo, "ds")
    commit_all(repo)
    result = pre_commit(repo, home, "run", "--files", "ds/volsegsync.index")
    assert result.returncode != 0
    assert "entry" in result.stdout + result.stderr
