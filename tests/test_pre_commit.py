"""Our .pre-commit-hooks.yaml with the real pre-commit framework.

Each dataset repository gets a ``.pre-commit-config.yaml`` naming this project
(its git checkout, at HEAD) as a user's would; pre-commit installs it into an
environment of its own once per test module (some seconds), then runs the hooks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import GIT, NAME1, invoke, make_affine, set_mtime, write_nrrd

ROOT = Path(__file__).resolve().parent.parent
PRE_COMMIT = shutil.which("pre-commit", path=str(Path(sys.executable).parent))
pytestmark = [
    pytest.mark.skipif(PRE_COMMIT is None, reason="pre-commit is a test extra"),
    pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs this project's git checkout"),
]


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("pre-commit-home")


def try_repo(repo: Path, home: Path, hook: str, *files: str) -> subprocess.CompletedProcess[str]:
    """``pre-commit run HOOK --files FILES`` with this project as the hooks' repository."""
    head = subprocess.run(
        [GIT, "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n- repo: {ROOT}\n  rev: {head}\n  hooks:\n"
        "  - id: volsegsync-verify\n  - id: volsegsync-check-names\n"
    )
    env = {**os.environ, "PRE_COMMIT_HOME": str(home)}
    return subprocess.run(
        [str(PRE_COMMIT), "run", hook, "--files", *files],
        cwd=repo, capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip


def commit_all(repo: Path) -> None:
    subprocess.run([GIT, "-C", str(repo), "add", "-A", "."], check=True)
    subprocess.run(
        [GIT, "-C", str(repo), "-c", "user.name=T", "-c", "user.email=t@example.org",
         "commit", "-q", "-m", "dataset"],
        check=True,
    )  # fmt: skip


def test_verify_hook_passes_then_blocks(paired: Path, pre_commit_home: Path) -> None:
    commit_all(paired)
    ok = try_repo(paired, pre_commit_home, "volsegsync-verify", "volsegsync.index")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "volsegsync verify (header-only)" in ok.stdout and "Passed" in ok.stdout

    seg = paired / f"{NAME1}-v1.nrrd"
    write_nrrd(seg, affine=make_affine(spacing=(0.9, 0.9, 3.0)))
    set_mtime(seg)
    assert invoke(["-C", str(paired), "pair", "-q"]).exit_code == 0
    bad = try_repo(paired, pre_commit_home, "volsegsync-verify", "volsegsync.index")
    assert bad.returncode == 1
    assert "Failed" in bad.stdout and "[geometry]" in bad.stdout
    assert f"{NAME1}-v1.nrrd" in bad.stdout


def test_hooks_run_only_for_the_index_or_config(paired: Path, pre_commit_home: Path) -> None:
    (paired / "notes.txt").write_text("unrelated\n")
    commit_all(paired)
    result = try_repo(paired, pre_commit_home, "volsegsync-check-names", "notes.txt")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Skipped" in result.stdout

    (paired / "C01-bad name.nii.gz").write_bytes(b"irrelevant")
    result = try_repo(paired, pre_commit_home, "volsegsync-check-names", ".volsegsync/config.toml")
    assert result.returncode == 1
    assert "C01-bad name.nii.gz" in result.stdout and "[naming]" in result.stdout
