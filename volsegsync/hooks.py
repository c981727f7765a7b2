"""Git hooks and the index merge driver: the scripts, installing and removing them.

The hook scripts are thin ``sh`` wrappers around ``volsegsync hook NAME`` (the
work, git included, is done in Python). They are written into the hooks folder
git uses (``core.hooksPath`` honoured); a hook of someone else's that is already
there is renamed ``NAME.volsegsync-chained`` and called first, never clobbered,
and ``uninstall-hooks`` puts it back. Every script volsegsync writes carries
:data:`MARKER`, which is how it recognises its own.

The merge driver is declared in the repository's git config (``[merge
"volsegsync"]``, appended as text so the rest of the file stays as it is) and
selected for ``volsegsync.index`` by a ``.gitattributes`` line.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import NamedTuple

from volsegsync import history
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import CONFIG_LIMIT, atomic_write_bytes, read_small

HOOK_NAMES = ("pre-commit", "post-checkout", "post-merge", "pre-push")
MARKER = "# volsegsync-hook:"
LEGACY_MARKER = b"# volsegsync native git hook"  # the script of volsegsync 0.1, copied by hand
CHAINED = ".volsegsync-chained"
INDEX_NAME = "volsegsync.index"
CONFIG_PATH = ".volsegsync/config.toml"
ATTRIBUTES_LINE = f"{INDEX_NAME} merge=volsegsync"
MERGE_SECTION = 'merge "volsegsync"'
# without volsegsync on the PATH git sees (a GUI client), git's own line merge runs
MERGE_DRIVER = (
    "if command -v volsegsync >/dev/null 2>&1; then exec volsegsync merge-driver %O %A %B %P; "
    "else exec git merge-file -L ours -L base -L theirs %A %O %B; fi"
)
MERGE_NAME = "volsegsync index: three-way merge per pair"

_WHERE = "(a GUI git client may not see your shell's PATH)"
_FIX = (
    "run 'volsegsync install-hooks' from the environment volsegsync is installed in "
    "(the hooks remember its path), or put it on the PATH git sees"
)
_MISSING = {
    "pre-commit": f"""\
    # only a commit that touches a dataset needs volsegsync
    git diff --cached --quiet -- ':(glob)**/{INDEX_NAME}' ':(glob)**/{CONFIG_PATH}' && return 0
    echo "volsegsync: pre-commit hook: 'volsegsync' is not on PATH {_WHERE}: {_FIX}; \
'git commit --no-verify' skips the check" >&2
    return 1""",
    "post-checkout": f"""\
    echo "volsegsync: post-checkout hook: 'volsegsync' is not on PATH {_WHERE}, image files \
were not restored: {_FIX}, then run 'volsegsync checkout' in the dataset" >&2""",
    "post-merge": f"""\
    echo "volsegsync: post-merge hook: 'volsegsync' is not on PATH {_WHERE}, image files \
were not restored: {_FIX}, then run 'volsegsync checkout' in the dataset" >&2""",
    "pre-push": f"""\
    echo "volsegsync: pre-push hook: 'volsegsync' is not on PATH {_WHERE}, dataset content \
was not pushed: {_FIX}" >&2""",
}
_BODY = {
    # a check: the chained hook's failure stops the commit first
    "pre-commit": """\
if [ -x "$0%(chained)s" ]; then "$0%(chained)s" "$@" || exit $?; fi
run "$@"
""",
    # after the fact: ours never fails; git takes the chained hook's status
    "post-checkout": """\
status=0
if [ -x "$0%(chained)s" ]; then "$0%(chained)s" "$@"; status=$?; fi
run "$@"
exit $status
""",
    # git gives the refs being pushed on stdin: both hooks read them
    "pre-push": """\
refs=$(cat)
feed() { if [ -n "$refs" ]; then printf '%%s\\n' "$refs"; fi; }
if [ -x "$0%(chained)s" ]; then feed | "$0%(chained)s" "$@" || exit $?; fi
feed | run "$@"
""",
}
_BODY["post-merge"] = _BODY["post-checkout"]


def hook_script(name: str, fallback: str | None = None) -> str:
    """The ``sh`` script of hook ``name``; ``fallback``: the volsegsync executable to run
    when none is on PATH (the one that installed the hook)."""
    return f"""\
#!/bin/sh
{MARKER} {name} (written by 'volsegsync install-hooks'; 'volsegsync uninstall-hooks' removes it)
# A thin wrapper: the work is done by 'volsegsync hook {name}'. A hook that was here
# before is kept as {name}{CHAINED} and called first.
fallback={shlex.quote(fallback or "")}
run() {{
  if command -v volsegsync >/dev/null 2>&1; then
    volsegsync hook {name} "$@"
  elif [ -n "$fallback" ] && [ -x "$fallback" ]; then
    "$fallback" hook {name} "$@"
  else
{_MISSING[name]}
  fi
}}
{_BODY[name] % {"chained": CHAINED}}"""


class HookChange(NamedTuple):
    name: str  # hook name, or "merge driver", ".gitattributes"
    path: Path
    action: str  # installed, updated, unchanged, chained, removed, restored, left alone, ...


def require_git_root(start: Path) -> Path:
    git_root = history.find_git_root(start)
    if git_root is None:
        raise VolsegsyncError(f"{start}: not inside a git repository; hooks belong to one")
    return git_root


def hooks_dir(git_root: Path) -> Path:
    """The folder git runs hooks from: ``core.hooksPath`` (relative to the work tree),
    else ``hooks/`` in the common git dir."""
    configured = history.config_value(git_root, "core", "hooksPath")
    if configured:
        return git_root / os.path.expanduser(configured)
    return history.git_dirs(git_root)[1] / "hooks"


def is_ours(path: Path) -> bool:
    """Whether the hook at ``path`` is a script volsegsync wrote."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return MARKER.encode() in head or LEGACY_MARKER in head


def _write_executable(path: Path, text: str) -> None:
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"), mode=0o777 & ~umask)


def install_hooks(
    git_root: Path, fallback: str | None, names: tuple[str, ...] = HOOK_NAMES
) -> list[HookChange]:
    folder = hooks_dir(git_root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VolsegsyncError(f"{folder}: cannot create the hooks folder: {e.strerror}") from None
    changes: list[HookChange] = []
    for name in names:
        path = folder / name
        chained = folder / f"{name}{CHAINED}"
        script = hook_script(name, fallback)
        try:
            if not os.path.lexists(path):
                _write_executable(path, script)
                changes.append(HookChange(name, path, "installed"))
            elif is_ours(path):
                same = path.read_bytes() == script.encode("utf-8", "surrogateescape")
                if not same:
                    _write_executable(path, script)
                changes.append(HookChange(name, path, "unchanged" if same else "updated"))
            elif os.path.lexists(chained):
                raise VolsegsyncError(
                    f"{path}: a hook that is not volsegsync's, and {chained.name} exists too; "
                    "move one of them away, then run 'volsegsync install-hooks' again"
                )
            else:
                os.rename(path, chained)
                _write_executable(path, script)
                changes.append(
                    HookChange(name, path, f"installed; the existing hook runs first as {chained}")
                )
        except OSError as e:
            raise VolsegsyncError(f"{path}: cannot install the hook: {e.strerror or e}") from None
    return changes


def uninstall_hooks(git_root: Path, names: tuple[str, ...] = HOOK_NAMES) -> list[HookChange]:
    folder = hooks_dir(git_root)
    changes: list[HookChange] = []
    for name in names:
        path = folder / name
        chained = folder / f"{name}{CHAINED}"
        try:
            if os.path.lexists(path) and not is_ours(path):
                changes.append(HookChange(name, path, "left alone: not installed by volsegsync"))
                continue
            if os.path.lexists(path):
                path.unlink()
                if os.path.lexists(chained):
                    os.rename(chained, path)
                    changes.append(HookChange(name, path, "removed; the earlier hook is back"))
                else:
                    changes.append(HookChange(name, path, "removed"))
            elif os.path.lexists(chained):
                os.rename(chained, path)
                changes.append(HookChange(name, path, "restored the earlier hook"))
        except OSError as e:
            raise VolsegsyncError(f"{path}: cannot remove the hook: {e.strerror or e}") from None
    return changes


# -- the merge driver ---------------------------------------------------------------------


def _config_file(git_root: Path) -> Path:
    return history.git_dirs(git_root)[1] / "config"


def _ours(driver: str | None) -> bool:
    return driver is not None and "volsegsync merge-driver" in driver


_SECTION = re.compile(r'\s*\[\s*merge\s+"volsegsync"\s*\]\s*$')


def _rewrite_config(path: Path, block: str) -> None:
    """git's config without the ``[merge "volsegsync"]`` section, then ``block``."""
    try:
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines(True)
        kept: list[str] = []
        inside = False
        for line in lines:
            if line.lstrip().startswith("["):
                inside = bool(_SECTION.match(line))
            if not inside:
                kept.append(line)
        if kept and not kept[-1].endswith("\n"):
            kept[-1] += "\n"
        atomic_write_bytes(path, ("".join(kept) + block).encode("utf-8", "surrogateescape"))
    except OSError as e:
        raise VolsegsyncError(f"{path}: cannot write git's config: {e.strerror or e}") from None


def install_merge_driver(git_root: Path) -> HookChange:
    """Declare the driver in the repository's git config (a driver of someone else's
    is kept)."""
    path = _config_file(git_root)
    current = history.config_value(git_root, "merge.volsegsync", "driver", repo_only=True)
    if current == MERGE_DRIVER:
        return HookChange("merge driver", path, "unchanged")
    if current is not None and not _ours(current):
        return HookChange("merge driver", path, f"left alone: it is set to '{current}'")
    _rewrite_config(
        path, f'[{MERGE_SECTION}]\n\tname = {MERGE_NAME}\n\tdriver = "{MERGE_DRIVER}"\n'
    )
    return HookChange("merge driver", path, "installed" if current is None else "updated")


def uninstall_merge_driver(git_root: Path) -> HookChange | None:
    path = _config_file(git_root)
    current = history.config_value(git_root, "merge.volsegsync", "driver", repo_only=True)
    if current is None:
        return None
    if not _ours(current):
        return HookChange("merge driver", path, f"left alone: it is set to '{current}'")
    _rewrite_config(path, "")
    return HookChange("merge driver", path, "removed")


def ensure_attributes(folder: Path) -> HookChange:
    """A ``.gitattributes`` line in ``folder`` that selects the driver for the index."""
    path = folder / ".gitattributes"
    try:  # a tracked file, maybe from another branch: a regular file, capped, no link
        old = read_small(path, CONFIG_LIMIT, "git attributes").decode("utf-8")
    except FileNotFoundError:
        old = ""
    except UnicodeDecodeError as e:
        raise VolsegsyncError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    if any(line.split() == ATTRIBUTES_LINE.split() for line in old.splitlines()):
        return HookChange(".gitattributes", path, "unchanged")
    sep = "\n" if old and not old.endswith("\n") else ""
    try:
        atomic_write_bytes(path, f"{old}{sep}{ATTRIBUTES_LINE}\n".encode())
    except OSError as e:
        raise VolsegsyncError(f"{path}: cannot write: {e.strerror or e}") from None
    return HookChange(".gitattributes", path, "installed")


def dataset_root_of(path: str) -> str | None:
    """The dataset folder (POSIX, ``.`` for the top) that a tracked path describes: the
    folder of ``volsegsync.index``, or the one above ``.volsegsync/config.toml``."""
    parts = path.split("/")
    if parts[-1] == INDEX_NAME:
        rest = parts[:-1]
    elif parts[-2:] == CONFIG_PATH.split("/"):
        rest = parts[:-2]
    else:
        return None
    return "/".join(rest) or "."
