"""Using the file-system monitor: start and stop its daemon, and give the pipeline
only the folders that changed (docs/fsmonitor.md).

The pipeline's top memo keeps the monitor's token of the run that made it. A run
asks the daemon what changed since that token, looks again at those folders only
(and at folders whose files were too recent to trust), and takes every other
folder's fingerprint from the memo. Whenever the daemon cannot vouch (not running,
restarted, its queue overflowed, the watch limit, a config change, no answer in
time), the whole dataset is walked as without a monitor.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
from typing import Any, NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.fsmonitor import LOG, MonitorError, open_state_dir, query, request, scope_of
from volsegsync.fsutil import check_state_dir
from volsegsync.hashing import Stat
from volsegsync.ops.snapshot import Pipeline
from volsegsync.scan import Folder, ScanResult, walk

START_TIMEOUT = 120.0  # seconds a started daemon may take to watch every folder


class PartialScan(ScanResult):
    """The changed folders, scanned; the others vouched for by the monitor."""

    def __init__(self, scan: ScanResult, unreadable: dict[str, str], ds: Dataset) -> None:
        super().__init__(scan.folders, unreadable)
        self._ds = ds
        self._looked: dict[str, Folder | None] = {}

    def stat(self, path: str) -> Stat | None:
        prefix = path.rpartition("/")[0]
        prefix = prefix + "/" if prefix else ""
        if prefix in self.folders or prefix not in self.unchanged:
            return super().stat(path)
        if prefix not in self._looked:  # an unchanged folder: look (rarely asked)
            ds = self._ds
            looked = walk(ds.root, ds.convention, ds.config.exclude, [prefix])
            self._looked[prefix] = looked.folders.get(prefix)
        folder = self._looked[prefix]
        if folder is None:
            return None
        name = path.rpartition("/")[2]
        return folder.stat(folder.names.index(name)) if name in folder.names else None


def _folder_of(path: str) -> str:
    head = path.rpartition("/")[0]
    return head + "/" if head else ""


def _as_folder(path: str) -> str:
    """The prefix of an unreadable path that names a folder the walk could not list."""
    return "" if path == "." else path + "/"


class Monitor:
    """The pipeline's view of the daemon for one run (see ``snapshot.Monitor``)."""

    def __init__(self, ds: Dataset, autostart: bool = False, timeout: float = 1.0) -> None:
        self.ds = ds
        self.autostart = autostart  # start a daemon when none runs (for the next runs)
        self.timeout = timeout
        self.token: str | None = None
        self.why = ""  # why the last run walked everything
        self.changed: frozenset[str] | None = None  # folders looked at again

    def vouches(self, prefix: str) -> bool:
        return self.changed is not None and prefix not in self.changed

    def scope(self) -> str:
        return scope_of(self.ds.config.exclude, self.ds.convention.extensions)

    def scan(self, pipeline: Pipeline, top: dict[str, Any] | None) -> ScanResult | None:
        since = top.get("fsmonitor") if top is not None else None
        try:
            answer = query(self.ds.state_dir, since, self.scope(), self.timeout)
        except MonitorError as e:
            self.why = str(e)
            if e.absent and self.autostart:
                with contextlib.suppress(VolsegsyncError, OSError):
                    spawn(self.ds)
            return None
        self.token = answer.token or None
        if answer.changed is None or top is None:
            self.why = answer.why or "no memo to start from"
            return None
        if not answer.changed:
            self.token = None  # the memo's token stays as good: no need to write it
        folders: dict[str, list[Any]] = top["folders"]
        changed = set(answer.changed)
        changed.update(p for p, state in folders.items() if not state[0])  # too recent
        self.changed = frozenset(changed)
        ds = self.ds
        scan = walk(ds.root, ds.convention, ds.config.exclude, sorted(changed))
        unreadable = {  # those of a folder looked at again are found again
            path: why
            for path, why in top["unreadable"].items()
            if _folder_of(path) not in changed and _as_folder(path) not in changed
        }
        unreadable.update(scan.unreadable)
        partial = PartialScan(scan, unreadable, ds)
        partial.unchanged = {p: state[0] for p, state in folders.items() if p not in changed}
        return partial


# -- the daemon's life --------------------------------------------------------------------


class DaemonStatus(NamedTuple):
    running: bool
    pid: int | None
    watches: int
    folders: int
    why: str  # what keeps it from vouching, or why it is not running


def status(ds: Dataset) -> DaemonStatus:
    try:
        a = request(ds.state_dir, {"op": "status"}, 2.0)
    except MonitorError as e:
        return DaemonStatus(False, None, 0, 0, str(e))
    pid, watches, folders, why = a.get("pid"), a.get("watches"), a.get("folders"), a.get("why")
    if not (isinstance(pid, int) and isinstance(watches, int) and isinstance(folders, int)):
        return DaemonStatus(False, None, 0, 0, "the monitor's answer is malformed")
    return DaemonStatus(True, pid, watches, folders, why if isinstance(why, str) else "")


def spawn(ds: Dataset, max_watches: int | None = None) -> subprocess.Popen[bytes]:
    """Start the daemon in the background (its own session: it outlives this run)."""
    if not sys.platform.startswith("linux"):
        raise MonitorError("the file-system monitor needs Linux (inotify)")
    check_state_dir(ds.state_dir)
    dir_fd = open_state_dir(ds.state_dir)  # refuses a linked state folder now, not later
    try:  # what the daemon says on stderr (why it stopped) goes to its log, never via a link
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        log = os.open(LOG, flags, 0o600, dir_fd=dir_fd)
    except OSError as e:
        raise MonitorError(f"{ds.state_dir / LOG}: cannot be written ({e.strerror})") from None
    finally:
        os.close(dir_fd)
    args = [sys.executable, "-m", "volsegsync", "fsmonitor", "run"]
    if max_watches is not None:
        args += ["--max-watches", str(max_watches)]
    try:
        return subprocess.Popen(
            args,
            cwd=ds.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(log)


def start(
    ds: Dataset, max_watches: int | None = None, timeout: float = START_TIMEOUT
) -> DaemonStatus:
    """Start the daemon and wait until it answers (it has watched every folder)."""
    now = status(ds)
    if now.running:
        return now
    proc = spawn(ds, max_watches)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = status(ds)
        if now.running:
            return now
        if proc.poll() is not None:
            raise MonitorError(f"the monitor stopped at once: {last_words(ds)}")
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        proc.kill()
    proc.wait()
    raise MonitorError(f"the monitor did not answer within {timeout:.0f} s")


def last_words(ds: Dataset) -> str:
    """The last line the daemon wrote to its log (why it stopped)."""
    try:
        dir_fd = open_state_dir(ds.state_dir)
        try:
            fd = os.open(LOG, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return "no log"
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = f.read(4096).decode("utf-8", "replace").strip().splitlines()
    except (OSError, MonitorError):
        return "no log"
    return lines[-1].removeprefix("volsegsync: error: ") if lines else "no log"


def stop(ds: Dataset, timeout: float = 10.0) -> bool:
    """Ask the daemon to stop and wait until it did; False when none was running."""
    now = status(ds)
    if not now.running:
        return False
    with contextlib.suppress(MonitorError):
        request(ds.state_dir, {"op": "stop"}, 2.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and status(ds).running:
        time.sleep(0.05)
    return True


def run(ds: Dataset, max_watches: int | None = None) -> None:
    """Be the daemon (``volsegsync fsmonitor run``): returns when stopped."""
    from volsegsync.fsmonitor import Daemon, run_daemon

    check_state_dir(ds.state_dir)
    config = ds.config
    run_daemon(Daemon(ds.root, ds.state_dir, config.exclude, ds.convention.extensions, max_watches))
