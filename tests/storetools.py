"""Helpers of the store, checkout, fsck and gc tests: real repositories, real commits."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import xxhash
from conftest import git, init_with_dulwich, init_with_git_binary, invoke

TRACKED = ["volsegsync.index", ".gitignore", ".volsegsync/config.toml", ".volsegsync/.gitignore"]


def make_repo(root: Path, kind: str) -> Path:
    """An initialised dataset in a git repository made by ``kind`` (dulwich or git)."""
    return init_with_dulwich(root) if kind == "dulwich" else init_with_git_binary(root)


def commit(root: Path, kind: str, message: str, tag: str | None = None) -> None:
    """Commit the dataset's tracked files, with dulwich or the git binary."""
    if kind == "git":
        git(root, "add", "-A")
        git(root, "-c", "user.name=T", "-c", "user.email=t@example.org", "commit", "-qm", message)
        if tag:
            git(root, "tag", tag)
        return
    from dulwich import porcelain

    paths = [str(root / p) for p in TRACKED if (root / p).exists()]
    porcelain.add(str(root), paths=paths)
    who = b"T <t@example.org>"
    porcelain.commit(str(root), message=message.encode(), author=who, committer=who)
    if tag:
        porcelain.tag_create(str(root), tag.encode())


def pair(root: Path, *args: str) -> None:
    result = invoke(["-C", str(root), "pair", *args])
    assert result.exit_code == 0, result.output


def checkout(root: Path, *args: str) -> tuple[int, str, str]:
    result = invoke(["-C", str(root), "checkout", *args])
    return result.exit_code, result.stdout, result.stderr


def h(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def snapshot_files(root: Path) -> dict[str, bytes]:
    """Every image below ``root`` (outside .git and .volsegsync) with its bytes."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith((".git/", ".volsegsync/", ".git", ".volsegsync")):
            continue
        if p.name.endswith(".volsegsync-tmp"):  # a killed checkout's leftover
            continue
        if p.is_file() and not p.name.endswith((".index", ".gitignore")):
            out[rel] = p.read_bytes()
    return out


def store_objects(root: Path) -> dict[str, Path]:
    """``digest -> object file`` in a dataset's default store."""
    base = root / ".volsegsync" / "cache" / "xxh3-128"
    if not base.is_dir():
        return {}
    return {p.parent.name + p.name: p for p in base.glob("*/*") if p.is_file()}


def corrupt(path: Path) -> None:
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
