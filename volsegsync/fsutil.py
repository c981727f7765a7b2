"""Filesystem primitives: the one safe way to open a file, atomic writes, the state
folder, memos, cache databases and the dataset write lock.

Everything volsegsync reads may come from someone else's branch (see
docs/security.md). So every file is opened through :func:`open_regular`: without
following a final symbolic link, without blocking on a FIFO, and refused unless
``fstat`` after opening says it is a regular file. Small files of a trusted format
(index, config, memos) are read with :func:`read_small`, which caps their size.
Nothing in ``.volsegsync/`` is written through a symbolic link.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import marshal
import os
import stat as statmod
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volsegsync.errors import LockedError, VolsegsyncError

if TYPE_CHECKING:
    import sqlite3

INDEX_LIMIT = 256 * 1024 * 1024  # volsegsync.index: ~1.5 million lines
CONFIG_LIMIT = 1024 * 1024  # config.toml
MEMO_LIMIT = 512 * 1024 * 1024  # memos in the state folder

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# read-only, never blocking (FIFO), the final component not followed (a link): the
# flags of open_fd; who opens without it checks the opened file's type itself
READ_FLAGS = os.O_RDONLY | _NONBLOCK | _CLOEXEC | _NOFOLLOW
# a folder to open files relative to, itself not followed if it is a link
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC | _NOFOLLOW


def is_plain_folder(path: Path) -> bool:
    """Whether ``path`` is a folder itself (not a link to one, not missing)."""
    try:
        return statmod.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


class NotRegularFile(OSError):
    """The path is a FIFO, device, socket, folder or a symbolic link not to be followed."""


def _kind(mode: int) -> str:
    if statmod.S_ISDIR(mode):
        return "a folder"
    if statmod.S_ISFIFO(mode):
        return "a FIFO"
    if statmod.S_ISCHR(mode) or statmod.S_ISBLK(mode):
        return "a device"
    if statmod.S_ISSOCK(mode):
        return "a socket"
    if statmod.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def open_fd(path: str | os.PathLike[str], follow: bool = False) -> int:
    """Open ``path`` read-only: a regular file or :class:`NotRegularFile` (an OSError).

    The final component is not followed when it is a symbolic link (unless
    ``follow``, for paths already resolved and checked by the caller); the open
    never blocks (FIFO); the type is checked on the opened file, so a file
    swapped after a check is caught too.
    """
    flags = READ_FLAGS & ~_NOFOLLOW if follow else READ_FLAGS
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP or (not follow and os.path.islink(path)):  # ELOOP: a link
            why = "is a symbolic link, not followed"
            raise NotRegularFile(
                errno.ELOOP, why if os.path.exists(path) else "broken symbolic link", str(path)
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if not statmod.S_ISREG(st.st_mode):
            raise NotRegularFile(
                errno.EINVAL, f"is {_kind(st.st_mode)}, not a regular file", str(path)
            )
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str | os.PathLike[str], follow: bool = False) -> io.FileIO:
    """:func:`open_fd` as an unbuffered binary file object."""
    return io.FileIO(open_fd(path, follow), "rb")


def read_small(path: Path, limit: int, what: str) -> bytes:
    """The whole content of a small trusted-format file (index, config, memo), capped.

    Raises FileNotFoundError when absent, :class:`VolsegsyncError` (one line)
    when it is not a regular file, unreadable or larger than ``limit`` bytes.
    """
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(limit + 1) if size <= limit else b""
    except FileNotFoundError:
        raise
    except OSError as e:
        raise VolsegsyncError(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    if size > limit or len(data) > limit:
        raise VolsegsyncError(
            f"{path}: the {what} is larger than {limit // (1024 * 1024)} MiB; refusing to read it"
        )
    return data


def inside(root: Path, path: str | os.PathLike[str]) -> Path | None:
    """``path`` with every symbolic link resolved, if it stays inside ``root`` (itself
    resolved) and outside its ``.git``/``.volsegsync`` folders; else None."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    rel = os.path.relpath(real, real_root)
    if rel == "." or rel == ".." or rel.startswith("../") or os.path.isabs(rel):
        return None
    if rel.split("/", 1)[0] in (".git", ".volsegsync"):
        return None
    return Path(real)


def open_in_dataset(root: Path, rel: str) -> io.FileIO:
    """Open a dataset file for reading under the symbolic link policy: a link is
    followed only when it resolves inside the dataset (docs/security.md)."""
    path = root / rel
    try:
        return open_regular(path)
    except NotRegularFile:
        if not os.path.islink(path):
            raise
    return open_regular(source_in_dataset(root, rel))


def source_in_dataset(root: Path, rel: str) -> Path:
    """The file whose content ``rel`` stands for under the symbolic link policy: itself,
    or the target of a link that resolves inside the dataset (docs/security.md)."""
    path = root / rel
    if not os.path.islink(path):
        return path
    target = inside(root, path)
    if target is None and os.path.exists(path):
        raise NotRegularFile(
            errno.ELOOP, "is a symbolic link leading out of the dataset", str(path)
        )
    return target if target is not None else path


# --------------------------------------------------------------------------- writes


def new_file_mode() -> int:
    """The mode a plain ``open`` gives a new file: 0666 less the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(
    path: Path, data: bytes, mode: int | None = None, durable: bool = True
) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file.

    The new file gets the mode of the file it replaces, else ``mode``, else the
    umask's (0666 & ~umask), as a plain ``open`` would: teammates can read it.
    A symbolic link at ``path`` is replaced, never written through. ``durable=False``
    skips the fsync (~1 ms here): for files derived from others and checked when
    read, where a power cut costs a redraw, not data.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = os.lstat(path)
        keep = statmod.S_IMODE(st.st_mode) if statmod.S_ISREG(st.st_mode) else None
    except FileNotFoundError:
        keep = None
    final = keep if keep is not None else (mode if mode is not None else new_file_mode())
    fd, tmp = make_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), final)
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC


def make_temp(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` (mode 0600, opened): ``(fd, its path)``,
    named ``.NAME.RANDOM.tmp``. As ``tempfile.mkstemp`` makes one (created, never
    opened through a link, a new name on a clash), without importing ``tempfile``
    (with ``shutil``, ``random``, ``bz2`` and ``lzma``: ~5 ms of every writing run)."""
    for _ in range(100):
        tmp = os.path.join(path.parent, f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, TEMP_FLAGS, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- state folder

_said: set[str] = set()


def say_once(message: str) -> None:
    """A note on stderr, printed once per run (e.g. that caches are off)."""
    if message not in _said:
        _said.add(message)
        from volsegsync.output import quote_text

        print(quote_text(f"volsegsync: note: {message}"), file=sys.stderr)


class StateUnusable(VolsegsyncError):
    """The state folder cannot be used: read-only, a link, or a file in its place."""


def check_state_dir(state: Path, create: bool = True) -> Path:
    """``state`` as a real folder inside a real ``.volsegsync`` folder (created if
    missing); :class:`StateUnusable` (one line) when it cannot be one."""
    for folder in (state.parent, state):
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            if not create:
                raise StateUnusable(f"{folder}: does not exist") from None
            try:
                os.mkdir(folder)
            except FileExistsError:
                pass
            except OSError as e:
                raise StateUnusable(f"{folder}: cannot create: {e.strerror}") from None
            st = os.lstat(folder)
        if statmod.S_ISLNK(st.st_mode):
            raise StateUnusable(
                f"{folder}: is a symbolic link; volsegsync never writes through one "
                "(delete it: it is recreated as a folder)"
            )
        if not statmod.S_ISDIR(st.st_mode):
            raise StateUnusable(
                f"{folder}: is {_kind(st.st_mode)} where volsegsync keeps a folder "
                "(move it away: the folder is recreated)"
            )
    return state


def _state_token(state: Path) -> str:
    """What ties a memo to this state folder on this machine: a memo committed to git
    or copied from elsewhere does not carry it, and is ignored."""
    st = os.lstat(state)
    return f"{st.st_dev}:{st.st_ino}:{os.getuid()}"


def read_memo(path: Path) -> Any:
    """The data a :func:`write_memo` stored at ``path``, or None when absent, damaged,
    too large, not a regular file, or written for another state folder."""
    try:
        blob = read_small(path, MEMO_LIMIT, "memo")
        data = marshal.loads(blob)
        if data["owner"] != _state_token(path.parent):
            return None
        return data["data"]
    except (OSError, VolsegsyncError, EOFError, ValueError, TypeError, KeyError):
        return None


def write_memo(path: Path, data: Any) -> None:
    """Store plain ``data`` (marshal: loading runs no code) in the state folder; a memo
    is an optimisation, so failing to write one is silent."""
    try:
        check_state_dir(path.parent)
        blob = marshal.dumps({"owner": _state_token(path.parent), "data": data})
        atomic_write_bytes(path, blob, mode=0o600)
    except (OSError, ValueError, VolsegsyncError):
        return


@contextlib.contextmanager
def write_lock(lock_path: Path, timeout: float = 5.0) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` for the duration of the block.

    The lock file is opened without following a link and must be a regular file.
    """
    check_state_dir(lock_path.parent)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _CLOEXEC, 0o644)
    except OSError as e:
        why = "is a symbolic link" if os.path.islink(lock_path) else e.strerror
        raise VolsegsyncError(f"{lock_path}: cannot take the write lock: {why}") from None
    try:
        if not statmod.S_ISREG(os.fstat(fd).st_mode):
            raise VolsegsyncError(f"{lock_path}: cannot take the write lock: not a regular file")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"{lock_path}: another volsegsync run is writing this dataset; "
                        "try again when it has finished"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def _claim(db: sqlite3.Connection, token: str) -> bool:
    """Whether ``db`` belongs to this state folder: it carries ``token``, or it is
    empty and now carries it."""
    db.execute("CREATE TABLE IF NOT EXISTS volsegsync_owner (token TEXT NOT NULL)")
    owners = [r[0] for r in db.execute("SELECT token FROM volsegsync_owner")]
    if owners:
        return set(owners) == {token}
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        if db.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone() is not None:
            return False
    db.execute("INSERT INTO volsegsync_owner VALUES (?)", (token,))
    return True


def open_cache_db(db_path: Path, schema: str, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (or create) a cache database in the state folder.

    Caches are disposable: a file that is not a database (damaged, truncated), a
    symbolic link (never written through) or a database written for another state
    folder (committed to git, copied from elsewhere: its rows could vouch for any
    content) is replaced by an empty one. When the state folder cannot be used
    (read-only dataset, a link in its place), the cache lives in memory for this
    run, and a note says so once.
    """
    import sqlite3  # only a run that keeps a cache pays for it

    try:
        check_state_dir(db_path.parent)
        for suffix in ("", "-journal", "-wal", "-shm"):
            side = db_path.with_name(db_path.name + suffix)
            if side.is_symlink() or (side.exists() and not side.is_file()):
                side.unlink()
        if not os.access(db_path.parent, os.W_OK):
            raise StateUnusable(f"{db_path.parent}: not writable")
        if db_path.exists() and not os.access(db_path, os.W_OK):
            raise StateUnusable(f"{db_path}: not writable")
        for attempt in (1, 2):
            db = sqlite3.connect(db_path, timeout=30, check_same_thread=check_same_thread)
            try:
                with db:
                    db.execute(schema)
                    if _claim(db, _state_token(db_path.parent)):
                        return db
                db.close()
                db_path.unlink()
                continue
            except sqlite3.DatabaseError:
                db.close()
                if attempt == 2 or not db_path.is_file():
                    raise
                db_path.unlink()
    except (OSError, StateUnusable, sqlite3.Error) as e:
        reason = str(e) if isinstance(e, StateUnusable) else f"{db_path.parent}: {e}"
        say_once(f"caches are off for this run ({reason})")
    db = sqlite3.connect(":memory:", check_same_thread=check_same_thread)
    db.execute(schema)
    return db
