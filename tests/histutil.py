"""Helpers for the history tests: commits made with the git binary or with dulwich."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import GIT, init_with_dulwich, init_with_git_binary, invoke
from dulwich import porcelain

T0 = 1_700_000_000  # commit times: one day apart from here


def git(
    top: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real git binary, with a fixed identity unless ``env`` gives one."""
    full = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ann Otator",
        "GIT_AUTHOR_EMAIL": "ann@example.org",
        "GIT_COMMITTER_NAME": "Ann Otator",
        "GIT_COMMITTER_EMAIL": "ann@example.org",
        **(env or {}),
    }
    return subprocess.run(
        [GIT, "-C", str(top), *args], capture_output=True, text=True, check=True, env=full
    )


class Repo:
    """A git repository at ``top`` holding a dataset at ``root`` (maybe a subfolder),
    committed with the git binary (``how="git"``) or dulwich (``how="dulwich"``)."""

    def __init__(self, top: Path, root: Path, how: str) -> None:
        self.top, self.root, self.how = top, root, how
        self.count = 0

    def pair(self) -> None:
        result = invoke(["-C", str(self.root), "pair", "-q"])
        assert result.exit_code in (0, 1), result.output

    def commit(self, message: str, author: str = "Ann Otator <ann@example.org>") -> str:
        """Commit the index and config (as a user would: images stay out of git)."""
        when = T0 + self.count * 86400
        self.count += 1
        files = [self.root / "volsegsync.index", self.root / ".volsegsync" / "config.toml"]
        rel = [os.path.relpath(f, self.top) for f in files if f.exists()]
        if self.how == "git":
            git(self.top, "add", "-A", "--", *rel)
            name, _, email = author.partition(" <")
            env = {
                "GIT_AUTHOR_DATE": f"@{when} +0100",
                "GIT_COMMITTER_DATE": f"@{when} +0100",
                "GIT_AUTHOR_NAME": name,
                "GIT_AUTHOR_EMAIL": email.rstrip(">"),
            }
            git(self.top, "commit", "-q", "--allow-empty", "-m", message, env=env)
            return git(self.top, "rev-parse", "HEAD").stdout.strip()
        porcelain.add(str(self.top), paths=[str(self.top / r) for r in rel])
        sha = porcelain.commit(
            str(self.top),
            message=message.encode(),
            author=author.encode(),
            committer=author.encode(),
            author_timestamp=when,
            commit_timestamp=when,
            author_timezone=3600,
            commit_timezone=3600,
        )
        return sha.decode("ascii")

    def log(self, *args: str) -> dict[str, Any]:
        result = invoke(["-C", str(self.root), "log", "--format", "json", *args])
        assert result.exit_code == 0, result.output
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc


@pytest.fixture(name="repo", params=["dulwich", "git"])
def repo_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Repo:
    """A dataset at the root of a repository made with dulwich, and with git."""
    root = tmp_path / "ds"
    if request.param == "dulwich":
        init_with_dulwich(root)
    else:
        init_with_git_binary(root)
    return Repo(root, root, request.param)
