"""``volsegsync init``: make a folder a dataset (idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from volsegsync import history, layouts
from volsegsync.config import load_config
from volsegsync.dataset import CONFIG_FILE, INDEX_FILE, META_DIR, STATE_DIR
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import CONFIG_LIMIT, atomic_write_text, check_state_dir, read_small
from volsegsync.hooks import ensure_attributes, install_merge_driver
from volsegsync.index import format_index
from volsegsync.layouts import Detected

BEGIN = "# >>> volsegsync: data files live in the content store and on remotes, not in git"
END = "# <<< volsegsync"

DETACHED_DATA_EXTENSIONS = (".raw", ".raw.gz")  # what 3D Slicer and pynrrd name them


class InitReport(NamedTuple):
    root: Path
    git_root: Path | None
    created: list[str]  # files written or changed, relative to root
    git_created: bool
    warnings: list[str]  # e.g. a file that must be tracked but that git ignores
    layout: str | None = None  # the layout whose config was written (volsegsync.layouts)
    detected: Detected | None = None  # the layout the folder looks like (without --layout)


def init_dataset(
    root: Path,
    git: bool = False,
    no_git: bool = False,
    own_repo: bool = False,
    layout: str | None = None,
    force: bool = False,
) -> InitReport:
    """Make ``root`` a dataset. ``own_repo`` (with ``git``): create a repository at
    ``root`` even inside another one (``volsegsync example`` does). ``layout``: write
    that layout's config (volsegsync.layouts); ``force``: even over an edited one."""
    if git and no_git:
        raise VolsegsyncError("--git and --no-git contradict each other: give one of them")
    root = root.resolve()
    if not root.is_dir():
        raise VolsegsyncError(f"{root}: no such folder")
    git_root = None if no_git and own_repo else history.find_git_root(root)
    git_created = False
    if git and own_repo and git_root != root:
        git_root = history.init_git(root)
        git_created = True
    elif git_root is None:
        if git:
            git_root = history.init_git(root)
            git_created = True
        elif not no_git:
            raise VolsegsyncError(
                f"{root}: not inside a git repository; run 'volsegsync init --git' to create "
                "one, or 'volsegsync init --no-git' to go without"
            )
    created: list[str] = []
    meta = root / META_DIR
    check_state_dir(meta / STATE_DIR)  # a file or link in its place: one clear line
    if layouts.write_config(meta / CONFIG_FILE, layout, root, force):
        created.append(f"{META_DIR}/{CONFIG_FILE}")
    if _ensure_lines(meta / ".gitignore", LOCAL_ONLY):
        created.append(f"{META_DIR}/.gitignore")
    _write_if_missing(root / INDEX_FILE, format_index([]), root, created)
    config = load_config(meta / CONFIG_FILE)  # validates an existing config on re-runs
    roles = config.roles
    extensions = set(roles.volume_extensions) | set(roles.segmentation_extensions)
    if any(ext.endswith(".nhdr") for ext in extensions):  # their detached data files too
        extensions |= set(DETACHED_DATA_EXTENSIONS)
    if _update_ignore_block(root / ".gitignore", [f"*{ext}" for ext in sorted(extensions)]):
        created.append(".gitignore")
    warnings = _tracking_warnings(root, git_root) if git_root else []
    try:  # the index merge driver, per pair
        if ensure_attributes(root).action != "unchanged":
            created.append(".gitattributes")
        if git_root:
            install_merge_driver(git_root)
    except VolsegsyncError as e:  # e.g. a read-only repository: the dataset still works
        warnings.append(f"the index merge driver is not declared: {e}")
    detected = layouts.detect(root) if layout is None else None
    return InitReport(root, git_root, created, git_created, warnings, layout, detected)


TRACKED = (f"{META_DIR}/{CONFIG_FILE}", INDEX_FILE, f"{META_DIR}/.gitignore", ".gitattributes")


def _tracking_warnings(root: Path, git_root: Path) -> list[str]:
    """The dataset's description must be tracked: say so if some ignore rule hides it."""
    prefix = root.relative_to(git_root).as_posix()
    paths = {f"{prefix}/{p}" if prefix != "." else p: p for p in TRACKED}
    hidden = [paths[p] for p, ignored in history.ignored(git_root, list(paths)).items() if ignored]
    return [
        f"git ignores {p}, which must be tracked: check the .gitignore files above it"
        for p in hidden
    ]


def _write_if_missing(path: Path, text: str, root: Path, created: list[str]) -> None:
    if not path.exists():
        atomic_write_text(path, text)
        created.append(path.relative_to(root).as_posix())


LOCAL_ONLY = (f"/{STATE_DIR}/", "/cache/", "/config.local.toml")  # never tracked


def _ensure_lines(path: Path, lines: tuple[str, ...]) -> bool:
    """Add the missing ``lines`` to a file; True when it changed."""
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = ""
    missing = [ln for ln in lines if ln not in old.splitlines()]
    if not missing:
        return False
    sep = "\n" if old and not old.endswith("\n") else ""
    atomic_write_text(path, old + sep + "\n".join(missing) + "\n")
    return True


def _update_ignore_block(path: Path, patterns: list[str]) -> bool:
    """Put the volsegsync block into ``.gitignore``; True when the file changed."""
    try:
        old = read_small(path, CONFIG_LIMIT, ".gitignore").decode("utf-8")
    except FileNotFoundError:
        old = ""
    except UnicodeDecodeError:
        raise VolsegsyncError(f"{path}: not valid UTF-8") from None
    block = "\n".join([BEGIN, *patterns, END]) + "\n"
    if BEGIN in old and END in old:
        start = old.index(BEGIN)
        stop = old.index(END, start) + len(END)
        new = old[:start] + block.rstrip("\n") + old[stop:]
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + block
    if new == old:
        return False
    atomic_write_text(path, new)
    return True
