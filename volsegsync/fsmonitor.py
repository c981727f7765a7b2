"""A file-system monitor for one dataset: an inotify daemon that says which folders changed.

The daemon watches every folder the walk would enter (scan excludes and the link
policy respected: links to folders are never followed) and numbers what it sees
with a token. A client asks "which folders changed since token T?" over a Unix
socket in the state folder and gets either the folders or *cannot vouch* (``null``
plus a reason), in which case it walks the whole dataset as without a monitor.
docs/fsmonitor.md describes the design; the protocol is one JSON line each way::

    {"op": "query", "since": "TOKEN" | null, "scope": "..."}
      -> {"token": "TOKEN", "changed": ["a/", ""...] | null, "why": "..."}
    {"op": "status"} -> {"pid": N, "token": ..., "watches": N, "why": ...}
    {"op": "stop"}   -> {"stopping": true}

Before answering a query the daemon creates a cookie file in a folder it watches
and reads events until it sees that file appear: every change made before the
query is then counted (git's fsmonitor and watchman do the same). The token it
answers is taken at that point, before the client looks at any changed folder,
so a change made while the client looks is reported again next time.

Only Linux inotify (through ``ctypes``, no dependency). Hostile state folders: the
socket is connected to only when it is a socket owned by the current user in a
real state folder, and its peer must run as the current user too.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import resource
import secrets
import select
import signal
import socket
import stat as statmod
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import xxhash

from volsegsync.errors import VolsegsyncError
from volsegsync.scan import SKIP_DIRS, excluded

SOCKET = "fsmonitor.sock"
LOCK = "fsmonitor.lock"
LOG = "fsmonitor.log"
COOKIES = "fsmonitor-cookies"
MAX_ANSWER = 64 << 20  # bytes of one answer: ample for every folder of a large dataset
MAX_REQUEST = 1 << 16

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
CHANGES = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
DIR_MASK = (
    CHANGES
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
)
# watched through /proc/self/fd/N of an O_PATH descriptor: followed to the file itself
INODE_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF
EVENT = struct.Struct("iIII")


class MonitorError(VolsegsyncError):
    """The monitor cannot be used (not Linux, no inotify, a hostile state folder)."""

    def __init__(self, message: str, absent: bool = False) -> None:
        super().__init__(message)
        self.absent = absent  # no daemon runs: one may be started


# -- inotify through ctypes ---------------------------------------------------------------


class Inotify:
    """An inotify instance (Linux), non-blocking."""

    def __init__(self) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._add = libc.inotify_add_watch
            self._rm = libc.inotify_rm_watch
            init = libc.inotify_init1
        except (OSError, AttributeError) as e:
            raise MonitorError(f"no inotify on this system ({e})") from None
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = init(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise MonitorError(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        self.fd: int = fd

    def add(self, path: str, mask: int) -> int:
        """The watch descriptor; OSError (ENOSPC: the watch limit) when it cannot be."""
        wd: int = self._add(self.fd, os.fsencode(path), mask)
        if wd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)
        return wd

    def remove(self, wd: int) -> None:
        self._rm(self.fd, wd)  # EINVAL for a watch already gone: nothing to do

    def read(self) -> Iterator[tuple[int, int, str]]:
        """``(wd, mask, name)`` of every queued event (none when the queue is empty)."""
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            off = 0
            while off < len(data):
                wd, mask, _cookie, length = EVENT.unpack_from(data, off)
                off += EVENT.size
                raw = data[off : off + length].split(b"\0", 1)[0]
                off += length
                yield wd, mask, os.fsdecode(raw)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


# -- the state folder: the socket and how to reach it safely ------------------------------


def open_state_dir(state: Path) -> int:
    """A descriptor of the state folder, never through a link (``O_NOFOLLOW`` on it and
    on ``.volsegsync``): paths below are then used relative to it."""
    try:
        meta = os.open(state.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise MonitorError(f"{state.parent}: not a usable folder ({e.strerror})") from None
    try:
        return os.open(state.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=meta)
    except OSError as e:
        raise MonitorError(f"{state}: not a usable folder ({e.strerror})") from None
    finally:
        os.close(meta)


def socket_problem(dir_fd: int, name: str = SOCKET) -> str | None:
    """Why the socket in the state folder must not be trusted (None: it may be)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return "not running (no socket)"
    except OSError as e:
        return f"socket unusable: {e.strerror}"
    if not statmod.S_ISSOCK(st.st_mode):
        return f"{name} is not a socket (a link or a file from elsewhere): not used"
    if st.st_uid != os.getuid():
        return f"{name} belongs to another user: not used"
    if st.st_mode & 0o077:
        return f"{name} is open to other users (mode {st.st_mode & 0o777:o}): not used"
    return None


def request(state: Path, message: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one request to the daemon of this state folder; its answer.

    :class:`MonitorError` (one line) when there is no trustworthy daemon to ask or it
    does not answer in time."""
    dir_fd = open_state_dir(state)
    try:
        problem = socket_problem(dir_fd)
        if problem:
            raise MonitorError(problem, absent=problem.startswith("not running"))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            deadline = time.monotonic() + timeout
            try:  # through the descriptor: no link on the way, no length limit on the path
                s.connect(f"/proc/self/fd/{dir_fd}/{SOCKET}")
                creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                _pid, uid, _gid = struct.unpack("3i", creds)
                if uid != os.getuid():
                    raise MonitorError("the monitor's socket is served by another user: not used")
                s.sendall(json.dumps(message).encode() + b"\n")
                data = _read_line(s, MAX_ANSWER, deadline)
            except ConnectionRefusedError:
                raise MonitorError("not running (a socket left behind)", absent=True) from None
            except (TimeoutError, OSError) as e:
                raise MonitorError(f"no answer from the monitor ({e})") from None
    finally:
        os.close(dir_fd)
    try:
        answer = json.loads(data)
    except ValueError:
        raise MonitorError("the monitor's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise MonitorError("the monitor's answer is not an object")
    return answer


def _read_line(s: socket.socket, limit: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        s.settimeout(left)
        chunk = s.recv(1 << 16)
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)
        if size > limit:
            raise ConnectionError("answer too long")


class Answer(NamedTuple):
    token: str
    changed: frozenset[str] | None  # None: cannot vouch, walk everything
    why: str


def query(state: Path, since: str | None, scope: str, timeout: float = 1.0) -> Answer:
    """Which folders changed since token ``since`` (MonitorError: no monitor to ask)."""
    answer = request(state, {"op": "query", "since": since, "scope": scope}, timeout)
    token, changed, why = answer.get("token"), answer.get("changed"), answer.get("why", "")
    if not isinstance(token, str) or len(token) > 100 or not isinstance(why, str):
        raise MonitorError("the monitor's answer is malformed")
    if changed is None:
        return Answer(token, None, why)
    if not isinstance(changed, list) or not all(
        isinstance(p, str) and (not p or p.endswith("/")) for p in changed
    ):
        raise MonitorError("the monitor's answer is malformed")
    return Answer(token, frozenset(changed), why)


def scope_of(exclude: Iterable[str], extensions: Iterable[str]) -> str:
    """What decides which folders and files the daemon looks at: a query made under
    another scope (the config changed) cannot be vouched for."""
    text = json.dumps([sorted(SKIP_DIRS), list(exclude), sorted(extensions)])
    return xxhash.xxh3_64_hexdigest(text.encode("utf-8", "surrogateescape"))


# -- the daemon ---------------------------------------------------------------------------


class _Inode:
    """A file with several names (hard links): a change through one name changes them
    all, but inotify reports it only in the folder of the name used."""

    __slots__ = ("fd", "folders", "mtime_ns", "size", "wd")

    def __init__(self, fd: int, wd: int, st: os.stat_result) -> None:
        self.fd = fd  # O_PATH: fstat without opening the file
        self.wd = wd
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.folders: set[str] = set()


class Daemon:
    """Watches one dataset; answers queries on its socket until asked to stop."""

    def __init__(
        self,
        root: Path,
        state: Path,
        exclude: tuple[str, ...],
        extensions: tuple[str, ...],
        max_watches: int | None = None,
    ) -> None:
        self.root = os.path.realpath(root)
        self.state = state
        self.exclude = exclude
        self.extensions = extensions
        self.scope = scope_of(exclude, extensions)
        self.max_watches = max_watches
        self.instance = secrets.token_hex(6)
        self.seq = 0
        self.floor = 0  # tokens older than this cannot be vouched for
        self.why = ""  # set: nothing can be vouched for (watch limit, root gone)
        self.running = True
        self.resets = 0
        self.cookie_n = 0
        self.cookie_seen: str | None = None
        self.cookie_token = 0
        self.need_reset = ""
        self.ino: Inotify | None = None
        self.sock_ino = -1
        self.last_reset = ""
        self._clear()

    def _clear(self) -> None:
        self.changed: dict[str, int] = {}  # prefix -> seq of its last change
        self.dirs: dict[int, str] = {}  # wd -> prefix
        self.wds: dict[str, int] = {}  # prefix -> wd
        self.links: dict[str, set[str]] = {}  # prefix -> names of symbolic links in it
        self.unwatched: set[str] = set()  # folders that could not be watched: always changed
        self.inodes: dict[int, _Inode] = {}  # inode -> hard-linked file
        self.inode_wds: dict[int, int] = {}  # wd -> inode
        self.cookie_wd = -1

    # -- tokens --------------------------------------------------------------------------

    def token(self, seq: int) -> str:
        return f"{self.instance}:{seq}"

    def _since(self, token: Any) -> int | None:
        if not isinstance(token, str):
            return None
        instance, _, seq = token.partition(":")
        if instance != self.instance or not seq.isdigit() or int(seq) < self.floor:
            return None
        return int(seq)

    # -- watching ------------------------------------------------------------------------

    def _path(self, prefix: str) -> str:
        return f"{self.root}/{prefix}" if prefix else self.root

    def reset(self, why: str) -> None:
        """Forget everything and watch the dataset afresh (start, queue overflow): tokens
        from before cannot be vouched for."""
        self.resets += 1
        self.need_reset = ""
        if self.ino is not None:
            self.ino.close()
        for rec in self.inodes.values():
            with contextlib.suppress(OSError):
                os.close(rec.fd)
        self._clear()
        self.ino = Inotify()
        self.why = ""
        self.seq += 1
        try:
            self.cookie_wd = self.ino.add(f"{self.state}/{COOKIES}", DIR_MASK)
        except OSError as e:
            self.why = f"cannot watch {COOKIES}: {e.strerror}"
            return
        self._crawl("")
        self.seq += 1
        self.floor = self.seq
        self.last_reset = why

    def _watch_count(self) -> int:
        return len(self.dirs) + len(self.inode_wds) + 1

    def _crawl(self, start: str) -> None:
        """Watch ``start`` and every folder below it the walk would enter; each is marked
        changed (a folder seen for the first time may hold anything)."""
        assert self.ino is not None
        stack = [start]
        while stack and not self.why:
            prefix = stack.pop()
            self.changed[prefix] = self.seq
            if self.max_watches is not None and self._watch_count() >= self.max_watches:
                self.why = f"watch limit reached ({self.max_watches} watches)"
                return
            try:
                wd = self.ino.add(self._path(prefix), DIR_MASK)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    self.why = (
                        "the system's inotify watch limit is reached "
                        "(raise fs.inotify.max_user_watches)"
                    )
                    return
                if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                    self.unwatched.add(prefix)
                continue
            old = self.dirs.get(wd)
            if old is not None and old != prefix and old in self.wds:
                self.unwatched.update((old, prefix))  # one folder at two places (a bind mount)
                continue
            self.dirs[wd] = prefix
            self.wds[prefix] = wd
            try:
                entries = os.scandir(self._path(prefix))
            except OSError:
                self.unwatched.add(prefix)
                continue
            with entries:
                for entry in entries:
                    name = entry.name
                    rel = prefix + name
                    if self.exclude and excluded(rel, self.exclude):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if name not in SKIP_DIRS:
                                stack.append(rel + "/")
                        elif entry.is_symlink():
                            self.links.setdefault(prefix, set()).add(name)
                        elif name.endswith(self.extensions):
                            st = entry.stat(follow_symlinks=False)
                            if st.st_nlink > 1:
                                self._linked(prefix, name, st, known_only=False)
                    except OSError:
                        self.changed[prefix] = self.seq

    def _linked(self, prefix: str, name: str, st: os.stat_result, known_only: bool) -> None:
        """A file with several names: watch its inode, remember the folders holding it.
        With ``known_only``, a file not seen before means its other names are unknown:
        everything is looked at again."""
        rec = self.inodes.get(st.st_ino)
        if rec is None:
            if known_only:
                self.need_reset = "a new hard link"
                return
            assert self.ino is not None
            if self.max_watches is not None and self._watch_count() >= self.max_watches:
                self.why = f"watch limit reached ({self.max_watches} watches)"
                return
            path = f"{self._path(prefix)}{name}"
            try:
                fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                self.changed[prefix] = self.seq
                return
            try:
                wd = self.ino.add(f"/proc/self/fd/{fd}", INODE_MASK)
            except OSError as e:
                os.close(fd)
                if e.errno == errno.ENOSPC:
                    self.why = "the system's inotify watch limit is reached"
                else:
                    self.need_reset = f"cannot watch a hard-linked file: {e.strerror}"
                return
            rec = _Inode(fd, wd, st)
            self.inodes[st.st_ino] = rec
            self.inode_wds[wd] = st.st_ino
        rec.folders.add(prefix)

    def _drop(self, top: str) -> None:
        """Folder ``top`` and everything below it left the dataset (moved away, deleted):
        unwatched, and marked changed so that a client forgets them."""
        assert self.ino is not None
        for prefix in [p for p in self.wds if p.startswith(top)]:
            wd = self.wds.pop(prefix)
            self.dirs.pop(wd, None)
            self.ino.remove(wd)
            self.changed[prefix] = self.seq
            self.links.pop(prefix, None)
        for prefix in [p for p in self.unwatched if p.startswith(top)]:
            self.unwatched.discard(prefix)
            self.changed[prefix] = self.seq
        self.changed[top] = self.seq

    def _event(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            self.need_reset = "the event queue overflowed"
            return
        prefix = self.dirs.get(wd)
        if prefix is None:
            if wd == self.cookie_wd:
                if mask & IN_CREATE and name == str(self.cookie_n):
                    self.cookie_seen = name
                    self.cookie_token = self.seq
                    self.seq += 1  # what follows the cookie is newer than its token
            elif wd in self.inode_wds:
                self._inode_event(wd, mask)
            return
        if mask & IN_UNMOUNT:
            self.why = "the dataset's file system was unmounted"
            return
        if mask & IN_IGNORED:
            if self.wds.get(prefix) == wd:
                self._drop(prefix)
            return
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            if prefix == "":
                self.why = "the dataset folder was moved or deleted"
                self.running = False
            else:
                self._drop(prefix)
            return
        self.changed[prefix] = self.seq
        rel = prefix + name
        if mask & IN_ISDIR:
            if mask & (IN_DELETE | IN_MOVED_FROM):
                self._drop(rel + "/")
            skipped = name in SKIP_DIRS or (self.exclude and excluded(rel, self.exclude))
            if mask & (IN_CREATE | IN_MOVED_TO) and not skipped:
                self._drop(rel + "/")  # a folder moved here anew: its old watches go
                self._crawl(rel + "/")
            return
        if mask & (IN_DELETE | IN_MOVED_FROM):
            self.links.get(prefix, set()).discard(name)
        if mask & (IN_CREATE | IN_MOVED_TO):
            try:
                st = os.lstat(self._path(rel))
            except OSError:
                return
            if statmod.S_ISLNK(st.st_mode):
                self.links.setdefault(prefix, set()).add(name)
            else:
                self.links.get(prefix, set()).discard(name)
                if st.st_nlink > 1 and name.endswith(self.extensions):
                    self._linked(prefix, name, st, known_only=True)

    def _inode_event(self, wd: int, mask: int) -> None:
        """A hard-linked file changed through some name: its folders changed when its
        size or modification time did (a link count change alone changes neither)."""
        ino = self.inode_wds[wd]
        rec = self.inodes[ino]
        try:
            st = os.fstat(rec.fd)
        except OSError:
            st = None
        gone = st is None or mask & (IN_DELETE_SELF | IN_IGNORED) or st.st_nlink == 0
        if gone or st is None or (st.st_size, st.st_mtime_ns) != (rec.size, rec.mtime_ns):
            for prefix in rec.folders:
                self.changed[prefix] = self.seq
            if st is not None:
                rec.size, rec.mtime_ns = st.st_size, st.st_mtime_ns
        if gone:
            assert self.ino is not None
            self.ino.remove(wd)
            self.inode_wds.pop(wd, None)
            self.inodes.pop(ino, None)
            with contextlib.suppress(OSError):
                os.close(rec.fd)

    def pump(self) -> None:
        """Read and apply every queued event."""
        assert self.ino is not None
        self.seq += 1
        for wd, mask, name in self.ino.read():
            self._event(wd, mask, name)
        if self.need_reset:
            self.reset(self.need_reset)

    # -- answering -----------------------------------------------------------------------

    def barrier(self, dir_fd: int, timeout: float = 2.0) -> int | None:
        """The token after every change made before now is counted; None on timeout."""
        assert self.ino is not None
        self.cookie_n += 1
        name = str(self.cookie_n)
        cookies = os.open(COOKIES, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600, dir_fd=cookies)
            os.close(fd)
            self.cookie_seen = None
            deadline = time.monotonic() + timeout
            while self.cookie_seen != name:
                left = deadline - time.monotonic()
                if left <= 0 or self.why:
                    return None
                resets = self.resets
                select.select([self.ino.fd], [], [], left)
                self.pump()
                if self.resets != resets:  # the cookie's event went with the old instance
                    return None
            return self.cookie_token
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=cookies)
            os.close(cookies)

    def answer(self, message: dict[str, Any], dir_fd: int) -> dict[str, Any]:
        op = message.get("op")
        if op == "stop":
            self.running = False
            return {"stopping": True}
        if op == "status":
            return {
                "pid": os.getpid(),
                "token": self.token(self.seq),
                "watches": self._watch_count(),
                "folders": len(self.wds),
                "hard_linked": len(self.inodes),
                "resets": self.resets,
                "why": self.why,
            }
        if op != "query":
            return {"error": f"unknown request {op!r}"}
        if message.get("scope") != self.scope:  # watched under another config: make way
            self.running = False  # for a monitor started with the new one
            return {"token": "", "changed": None, "why": "the config changed since it started"}
        token = self.barrier(dir_fd)
        if token is None or self.why:
            return {"token": "", "changed": None, "why": self.why or "no answer in time"}
        since = self._since(message.get("since"))
        if since is None:
            return {"token": self.token(token), "changed": None, "why": "unknown token"}
        changed = {p for p, seq in self.changed.items() if seq > since}
        changed.update(p for p, names in self.links.items() if names)
        changed.update(self.unwatched)
        return {"token": self.token(token), "changed": sorted(changed), "why": ""}

    # -- the loop ------------------------------------------------------------------------

    def serve(self, listener: socket.socket, dir_fd: int) -> None:
        assert self.ino is not None
        while self.running:
            ino_fd = self.ino.fd
            ready, _, _ = select.select([ino_fd, listener.fileno()], [], [], 1.0)
            if ino_fd in ready:
                self.pump()
            if listener.fileno() in ready:
                self._serve_one(listener, dir_fd)
            if not os.path.isdir(self.root) or not _socket_is(self.sock_ino, dir_fd):
                self.running = False  # the dataset or our socket went away

    def _serve_one(self, listener: socket.socket, dir_fd: int) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                if struct.unpack("3i", creds)[1] != os.getuid():
                    return
                data = _read_line(conn, MAX_REQUEST, time.monotonic() + 1.0)
                message = json.loads(data)
                if not isinstance(message, dict):
                    return
                reply = self.answer(message, dir_fd)
                conn.settimeout(5.0)
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except (TimeoutError, OSError, ValueError):
                return


def run_daemon(daemon: Daemon) -> None:
    """Watch the daemon's dataset until stopped (the ``fsmonitor run`` command)."""
    if not sys.platform.startswith("linux"):
        raise MonitorError("the file-system monitor needs Linux (inotify)")
    state = daemon.state
    dir_fd = open_state_dir(state)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    lock = os.open(LOCK, flags, 0o600, dir_fd=dir_fd)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        os.close(dir_fd)
        raise MonitorError("a monitor is already running for this dataset") from None
    with contextlib.suppress(ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one per hard-linked file
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            os.mkdir(COOKIES, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            st = os.stat(COOKIES, dir_fd=dir_fd, follow_symlinks=False)
            if not statmod.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                raise MonitorError(f"{state / COOKIES}: not a folder of yours") from None
        problem = socket_problem(dir_fd)
        if problem is None or problem.startswith("socket unusable"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(SOCKET, dir_fd=dir_fd)  # left by a killed daemon: the lock is ours
        elif not problem.startswith("not running"):
            raise MonitorError(problem)
        daemon.reset("started")
        old = os.umask(0o177)
        try:
            listener.bind(f"/proc/self/fd/{dir_fd}/{SOCKET}")
        finally:
            os.umask(old)
        daemon.sock_ino = os.stat(SOCKET, dir_fd=dir_fd, follow_symlinks=False).st_ino
        listener.listen(16)
        signal.signal(signal.SIGTERM, lambda *_: setattr(daemon, "running", False))
        daemon.serve(listener, dir_fd)
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            if _socket_is(daemon.sock_ino, dir_fd):
                os.unlink(SOCKET, dir_fd=dir_fd)
        if daemon.ino is not None:
            daemon.ino.close()
        os.close(lock)
        os.close(dir_fd)


def _socket_is(ino: int, dir_fd: int) -> bool:
    """Whether the socket in the state folder is still the one this daemon bound."""
    try:
        return ino >= 0 and os.stat(SOCKET, dir_fd=dir_fd, follow_symlinks=False).st_ino == ino
    except OSError:
        return False
