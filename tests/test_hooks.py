"""The native git hook (hooks/pre-commit) with the real git binary, and the
pre-commit framework's hook manifest."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import GIT, NAME1, invoke, make_affine, set_mtime, write_nrrd

from volsegsync.cli import main

ROOT = Path(__file__).resolve().parent.parent
HOOK = ROOT / "hooks" / "pre-commit"


def commit(repo: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [GIT, "-C", str(repo), "-c", "user.name=T", "-c", "user.email=t@example.org",
         "commit", "-q", "-m", "change", *extra],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip


def install(repo: Path) -> None:
    target = repo / ".git" / "hooks" / "pre-commit"
    shutil.copyfile(HOOK, target)
    target.chmod(0o755)


def stage(repo: Path, *paths: str) -> None:
    subprocess.run([GIT, "-C", str(repo), "add", *paths], check=True)


def test_hook_lets_a_clean_dataset_through_and_stops_a_broken_one(paired: Path) -> None:
    install(paired)
    stage(paired, ".volsegsync/config.toml", "volsegsync.index", ".gitignore")
    ok = commit(paired)
    assert ok.returncode == 0, ok.stderr
    assert "verifying the dataset in ." in ok.stderr

    seg = paired / f"{NAME1}-v1.nrrd"
    write_nrrd(seg, affine=make_affine(spacing=(0.9, 0.9, 3.0)))
    set_mtime(seg)
    assert invoke(["-C", str(paired), "pair", "-q"]).exit_code == 0
    stage(paired, "volsegsync.index")
    blocked = commit(paired)
    assert blocked.returncode == 1
    # git shows a hook's output on stderr
    assert "[geometry]" in blocked.stderr and f"{NAME1}-v1.nrrd" in blocked.stderr
    log = subprocess.run([GIT, "-C", str(paired), "log", "--oneline"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert len(log.splitlines()) == 1  # the broken index was not committed

    assert commit(paired, "--no-verify").returncode == 0


def test_hook_ignores_commits_that_do_not_touch_a_dataset(paired: Path) -> None:
    install(paired)
    (paired / "notes.txt").write_text("unrelated\n")
    write_nrrd(paired / f"{NAME1}-v1.nrrd", affine=np.diag([5.0, 5.0, 5.0, 1.0]))
    stage(paired, "notes.txt")
    result = commit(paired)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verifying" not in result.stderr


def test_hook_finds_a_dataset_in_a_subfolder(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run([GIT, "init", "-q", str(repo)], check=True)
    data = repo / "data" / "spine"
    data.mkdir(parents=True)
    assert invoke(["-C", str(data), "init"]).exit_code == 0
    (data / f"{NAME1}.nii.gz").write_bytes(b"not an image at all")
    assert invoke(["-C", str(data), "pair", "-q"]).exit_code == 1
    install(repo)
    stage(repo, "data/spine/volsegsync.index", "data/spine/.volsegsync/config.toml")
    result = commit(repo)
    assert result.returncode == 1
    assert "verifying the dataset in data/spine" in result.stderr
    assert "[not_an_image]" in result.stderr


def test_pre_commit_manifest_names_real_commands() -> None:
    text = (ROOT / ".pre-commit-hooks.yaml").read_text()
    entries = re.findall(r"^\s+entry: volsegsync (\S+)", text, flags=re.M)
    ids = re.findall(r"^- id: (\S+)", text, flags=re.M)
    assert ids == ["volsegsync-verify", "volsegsync-check-names"]
    assert entries == ["verify", "check-names"]
    assert all(e in main.commands for e in entries)
    assert text.count("pass_filenames: false") == len(ids)
