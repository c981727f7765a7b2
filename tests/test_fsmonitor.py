"""The file-system monitor: a real inotify daemon on real datasets.

Every test starts the real daemon (``volsegsync fsmonitor run`` in a subprocess)
and stops it again, whatever happens; status with the monitor must equal status
from a full walk after every edit, and the monitor must give way to the walk
whenever it cannot vouch for the dataset (killed, overflowed, out of watches, a
hostile socket).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import NAME1, NAME2, VOLSEGSYNC, write_nii, write_nrrd
from test_pipeline import BASE_MTIME, Editor, fresh

from volsegsync.dataset import Dataset
from volsegsync.fsmonitor import SOCKET, MonitorError, query
from volsegsync.ops.fsmonitor import Monitor, start, status, stop
from volsegsync.ops.pair import run_pair
from volsegsync.ops.status import run_status
from volsegsync.ops.verify import run_verify

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="Linux only")


@contextlib.contextmanager
def daemon(root: Path, max_watches: int | None = None) -> Iterator[Dataset]:
    """A running monitor for the dataset at ``root``; stopped (or killed) afterwards."""
    ds = Dataset.open(root)
    pids: set[int] = set()
    try:
        s = start(ds, max_watches, timeout=30)
        assert s.pid is not None
        pids.add(s.pid)
        yield ds
    finally:
        now = status(ds)
        if now.pid is not None:
            pids.add(now.pid)
        with contextlib.suppress(MonitorError):
            stop(ds, timeout=5)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def restart_if_gone(ds: Dataset, pids: list[int]) -> None:
    if not status(ds).running:
        s = start(Dataset.open(ds.root), timeout=30)
        assert s.pid is not None
        pids.append(s.pid)


def report(ds: Dataset, monitor: Monitor | None = None, use: bool = False) -> tuple[Any, ...]:
    r = run_status(ds, jobs=1, fsmonitor=use, monitor=monitor)
    return (
        r.changes,
        r.kept,
        r.problems,
        r.indexed_pairs,
        r.current_pairs,
        r.known_problems,
        r.in_sync,
    )


def verified(ds: Dataset, monitor: Monitor | None = None) -> tuple[Any, ...]:
    r = run_verify(ds, fast=True, jobs=1, monitor=monitor)
    return (
        sorted(r.problems, key=repr),
        sorted(set(r.pairs), key=repr),
        r.files_checked,
        r.pair_count,
    )


Outcome = Callable[[Dataset, "Monitor | None"], tuple[Any, ...]]


def monitored(root: Path, outcome: Outcome = report) -> tuple[tuple[Any, ...], Monitor]:
    ds = Dataset.open(root)
    mon = Monitor(ds, timeout=5.0)
    return outcome(ds, mon), mon


def walked(root: Path) -> tuple[Any, ...]:
    return report(fresh(root))


def equal_on_random_edits(root: Path, seed: int, steps: int, outcome: Outcome) -> int:
    """After each random edit, ``outcome`` with the monitor equals ``outcome`` of a full
    walk (a fresh state); returns how many runs the monitor vouched for."""
    editor = Editor(root, random.Random(seed))
    for _ in range(6):
        editor.add()
    pids: list[int] = []
    history: list[str] = []
    vouched = 0
    try:
        with daemon(root) as ds:
            monitored(root, outcome)  # the first run walks and records the token
            for _ in range(steps):
                step = editor.step()
                history.append(step)
                if step.startswith("config"):  # the daemon gives way, a new one starts
                    monitored(root, outcome)
                    restart_if_gone(ds, pids)
                    monitored(root, outcome)
                got, mon = monitored(root, outcome)
                vouched += mon.changed is not None
                assert got == outcome(fresh(root), None), history
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return vouched


@pytest.mark.parametrize("seed", [1, 7, 22])
def test_status_with_monitor_equals_walk_on_random_edits(ds_root: Path, seed: int) -> None:
    vouched = equal_on_random_edits(ds_root, seed, 25, report)
    assert vouched >= 10, "the monitor was hardly ever used"


@pytest.mark.parametrize("seed", [3, 11])
def test_verify_with_monitor_equals_walk_on_random_edits(ds_root: Path, seed: int) -> None:
    """What the pre-commit hook runs (verify --fast) looks at the changed folders only,
    and finds what a full walk finds."""
    vouched = equal_on_random_edits(ds_root, seed, 20, verified)
    assert vouched >= 8, "the monitor was hardly ever used"


def tree(root: Path, folders: int = 4) -> None:
    for i in range(folders):
        for name in (NAME1, NAME2):
            name = name.replace("-", f"{i}-", 1)  # one case per folder and name
            write_nii(root / f"f{i}" / f"{name}.nii.gz", seed=f"{i}{name}")
            write_nrrd(root / f"f{i}" / f"{name}-v1.nrrd", seed=f"{i}{name}s")
    for p in root.rglob("*.n*"):
        aged(p)


def case(i: int, name: str) -> str:
    return name.replace("-", f"{i}-", 1)


def aged(path: Path, seconds: int = 0) -> Path:
    """Too old to be looked at again for being recent (a folder with a file modified in
    the last seconds is looked at every run, monitor or not)."""
    t = BASE_MTIME + seconds * 10**9
    os.utime(path, ns=(t, t))
    return path


def test_edits_moves_and_deletes_of_folders_are_seen(ds_root: Path) -> None:
    tree(ds_root)
    run_pair(Dataset.open(ds_root), jobs=1)
    with daemon(ds_root):
        got, mon = monitored(ds_root)
        assert got == walked(ds_root) and got[-1]  # in sync
        got, mon = monitored(ds_root)
        assert mon.changed is not None and not mon.changed  # nothing looked at
        os.rename(ds_root / "f1", ds_root / "g1")  # a folder moved
        (ds_root / "f2" / "sub").mkdir()
        (ds_root / "f2" / f"{case(2, NAME1)}.nii.gz").rename(
            ds_root / "f2" / "sub" / f"{case(2, NAME1)}.nii.gz"
        )
        for p in (ds_root / "f3").iterdir():
            p.unlink()
        (ds_root / "f3").rmdir()  # a folder deleted
        aged(
            write_nii(ds_root / "new" / "deep" / "C77-New_V001-D22061998.nii.gz", seed="x")
        )  # made at once
        got, mon = monitored(ds_root)
        assert mon.changed is not None and {"g1/", "f1/", "f3/", "new/deep/"} <= mon.changed
        assert got == walked(ds_root)
        assert "f0/" not in mon.changed
        # an edit in place keeps size and name: only its time tells
        p = aged(write_nii(ds_root / "f0" / f"{case(0, NAME2)}.nii.gz", seed="edited"), 1)
        got, mon = monitored(ds_root)
        assert mon.changed == {"f0/"}
        assert got == walked(ds_root)
        assert any(p.name in c.message for c in got[0]), got[0]


def test_hard_links_and_symbolic_links_are_followed(ds_root: Path) -> None:
    tree(ds_root, 2)
    (ds_root / "links").mkdir()
    (ds_root / "hard").mkdir()
    source = ds_root / "f0" / f"{case(0, NAME1)}.nii.gz"
    os.link(source, ds_root / "hard" / source.name)
    os.symlink(
        f"../f1/{case(1, NAME1)}.nii.gz", ds_root / "links" / "C88-Link_V001-D22061998.nii.gz"
    )
    run_pair(Dataset.open(ds_root), jobs=1)
    with daemon(ds_root):
        monitored(ds_root)
        write_nii(source, seed="edited in place through one name")  # same inode
        got, mon = monitored(ds_root)
        assert mon.changed is not None and "hard/" in mon.changed
        assert got == walked(ds_root)
        write_nii(ds_root / "f1" / f"{case(1, NAME1)}.nii.gz", seed="the link's target")
        got, mon = monitored(ds_root)
        assert mon.changed is not None and "links/" in mon.changed
        assert got == walked(ds_root)
        os.link(ds_root / "f1" / f"{case(1, NAME2)}.nii.gz", ds_root / "hard" / "new.nii.gz")
        got, mon = monitored(ds_root)  # a new hard link: the daemon watches afresh
        assert got == walked(ds_root)
        got, mon = monitored(ds_root)
        assert mon.changed is not None
        write_nii(ds_root / "hard" / "new.nii.gz", seed="through the new name")
        got, mon = monitored(ds_root)
        assert mon.changed is not None and "f1/" in mon.changed
        assert got == walked(ds_root)


def test_killed_daemon_means_a_walk_then_a_new_daemon(ds_root: Path) -> None:
    tree(ds_root, 2)
    run_pair(Dataset.open(ds_root), jobs=1)
    with daemon(ds_root) as ds:
        monitored(ds_root)
        pid = status(ds).pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.02)
        assert (ds.state_dir / SOCKET).is_socket()  # left behind
        write_nii(ds_root / "f0" / f"{case(0, NAME1)}.nii.gz", seed="while nobody watched")
        got, mon = monitored(ds_root)
        assert mon.changed is None and "not running" in mon.why
        assert got == walked(ds_root)
        start(ds, timeout=30)  # takes over the socket left behind
        got, mon = monitored(ds_root)
        assert mon.changed is None and "unknown token" in mon.why  # another daemon's token
        got, mon = monitored(ds_root)
        assert mon.changed is not None
        assert got == walked(ds_root)


def test_queue_overflow_means_a_walk(ds_root: Path) -> None:
    tree(ds_root, 2)
    run_pair(Dataset.open(ds_root), jobs=1)
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    with daemon(ds_root) as ds:
        flood = ds_root / "flood"
        flood.mkdir()
        monitored(ds_root)  # the daemon watches the new folder now
        pid = status(ds).pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # it reads nothing: the kernel's queue fills up
        try:
            for i in range(limit // 2 + 100):  # two events each (create, close)
                (flood / f"{i}.txt").write_bytes(b"")
            write_nii(ds_root / "f1" / f"{case(1, NAME2)}.nii.gz", seed="lost in the flood")
        finally:
            os.kill(pid, signal.SIGCONT)
        got, mon = monitored(ds_root)
        assert mon.changed is None, mon.changed
        assert got == walked(ds_root)
        assert any(case(1, NAME2) in c.message for c in got[0])
        got, mon = monitored(ds_root)  # watched afresh: vouched for again
        assert mon.changed is not None
        assert got == walked(ds_root)


def test_watch_limit_means_a_walk(ds_root: Path) -> None:
    tree(ds_root, 6)
    with daemon(ds_root, max_watches=4) as ds:
        s = status(ds)
        assert s.running and "watch limit" in s.why
        got, mon = monitored(ds_root)
        assert mon.changed is None and "watch limit" in mon.why
        assert got == walked(ds_root)
        r = subprocess.run(
            [VOLSEGSYNC, "fsmonitor", "status"], cwd=ds_root, capture_output=True, timeout=30
        )
        assert r.returncode == 1 and b"watch limit" in r.stdout


def test_hostile_socket_is_never_used(ds_root: Path) -> None:
    ds = Dataset.open(ds_root)
    state = ds.state_dir
    state.mkdir(parents=True, exist_ok=True)
    elsewhere = ds_root.parent / "elsewhere.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(elsewhere))
        s.listen(1)
        (state / SOCKET).symlink_to(elsewhere)
        with pytest.raises(MonitorError, match="not a socket"):
            query(state, None, "x")
        (state / SOCKET).unlink()
        (state / SOCKET).write_bytes(b"")
        with pytest.raises(MonitorError, match="not a socket"):
            query(state, None, "x")
        (state / SOCKET).unlink()
    with socket.socket(socket.AF_UNIX) as s:  # a socket of another user
        s.bind(str(state / SOCKET))
        s.listen(1)
        os.chmod(state / SOCKET, 0o600)
        if os.getuid() == 0:
            os.chown(state / SOCKET, 12345, 12345, follow_symlinks=False)
            with pytest.raises(MonitorError, match="another user"):
                query(state, None, "x")
            os.chown(state / SOCKET, 0, 0, follow_symlinks=False)
        os.chmod(state / SOCKET, 0o666)
        with pytest.raises(MonitorError, match="open to other users"):
            query(state, None, "x")
    # a daemon refuses to replace what is not its socket (run bounded: time, memory)
    (state / SOCKET).unlink()
    (state / SOCKET).symlink_to(elsewhere)
    r = subprocess.run(
        ["bash", "-c", f"ulimit -v 4000000; exec {VOLSEGSYNC} fsmonitor run"],
        cwd=ds_root,
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 2 and b"not a socket" in r.stderr, r
    assert (state / SOCKET).is_symlink()


def test_linked_state_folder_is_refused(ds_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-state"
    other.mkdir()
    state = Dataset.open(ds_root).state_dir
    if state.exists():
        import shutil

        shutil.rmtree(state)
    state.symlink_to(other)
    r = subprocess.run(
        [VOLSEGSYNC, "fsmonitor", "start"], cwd=ds_root, capture_output=True, timeout=60
    )
    assert r.returncode == 2, r
    assert not any(other.iterdir())


def test_config_enables_and_starts_the_monitor(ds_root: Path) -> None:
    tree(ds_root, 2)
    local = ds_root / ".volsegsync" / "config.local.toml"
    local.write_text("[fsmonitor]\nenabled = true\n")
    ds = Dataset.open(ds_root)
    pids: list[int] = []
    try:
        first = report(ds, use=None)  # type: ignore[arg-type]
        deadline = time.monotonic() + 30
        while not status(ds).running and time.monotonic() < deadline:
            time.sleep(0.05)
        s = status(ds)
        assert s.running and s.pid is not None
        pids.append(s.pid)
        assert first == walked(ds_root)
        r = subprocess.run(
            [VOLSEGSYNC, "status", "--format", "json"], cwd=ds_root, capture_output=True, timeout=60
        )
        assert r.returncode == 1
        r = subprocess.run(
            [VOLSEGSYNC, "fsmonitor", "stop"], cwd=ds_root, capture_output=True, timeout=60
        )
        assert r.returncode == 0 and not status(ds).running
        local.write_text("[fsmonitor]\nenabled = 1\n")
        r = subprocess.run([VOLSEGSYNC, "status"], cwd=ds_root, capture_output=True, timeout=60)
        assert r.returncode == 2 and b"[fsmonitor.enabled]" in r.stderr
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Racing(Monitor):
    """A monitor whose run is overtaken: a file changes after the daemon answered,
    while the run looks at the folders it reported."""

    def __init__(self, ds: Dataset, change: Path) -> None:
        super().__init__(ds, timeout=5.0)
        self.change = change

    def scan(self, pipeline: Any, top: dict[str, Any] | None) -> Any:
        partial = super().scan(pipeline, top)
        aged(write_nii(self.change, seed="changed while the run looked"), 2)
        return partial


def test_a_change_during_a_run_is_seen_by_the_next(ds_root: Path) -> None:
    tree(ds_root, 3)
    run_pair(Dataset.open(ds_root), jobs=1)
    with daemon(ds_root) as ds:
        monitored(ds_root)
        aged(write_nii(ds_root / "f0" / f"{case(0, NAME1)}.nii.gz", seed="before"), 1)
        racing = Racing(ds, ds_root / "f2" / f"{case(2, NAME2)}.nii.gz")
        report(ds, racing)
        assert racing.changed == {"f0/"}  # f2 changed after the answer: not looked at
        got, mon = monitored(ds_root)
        assert mon.changed is not None and "f2/" in mon.changed
        assert got == walked(ds_root)
        assert any(case(2, NAME2) in c.message for c in got[0])


def test_daemon_stops_on_sigterm_and_when_its_socket_goes(ds_root: Path) -> None:
    tree(ds_root, 1)
    ds = Dataset.open(ds_root)
    for how in ("sigterm", "socket removed"):
        s = start(ds, timeout=30)
        assert s.pid is not None
        try:
            if how == "sigterm":
                os.kill(s.pid, signal.SIGTERM)
            else:
                (ds.state_dir / SOCKET).unlink()
            deadline = time.monotonic() + 15  # it looks every second
            while Path(f"/proc/{s.pid}").exists() and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(s.pid, os.WNOHANG)
                time.sleep(0.05)
            assert not Path(f"/proc/{s.pid}").exists(), how
            assert not (ds.state_dir / SOCKET).exists()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(s.pid, signal.SIGKILL)
