"""A forked child's answer (workers.Forked): whole, or None, never a part of one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import alive

from volsegsync.workers import Forked, _read_into


def test_a_large_answer_comes_back_whole() -> None:
    """Larger than a pipe's buffer many times over: read into one buffer, whole."""
    names = [f"case-{i:07d}.nii.gz" for i in range(200_000)]
    child = Forked(lambda: (names, bytes(range(256)) * 1000))
    assert child.result() == (names, bytes(range(256)) * 1000)


def test_a_child_that_fails_or_dies_answers_none() -> None:
    def fail() -> object:
        raise RuntimeError("a bug in the child")

    assert Forked(fail).result() is None
    assert Forked(lambda: os.kill(os.getpid(), signal.SIGKILL)).result() is None


def test_an_answer_cut_short_is_no_answer() -> None:
    """What a child killed while writing leaves: its length, then fewer bytes."""
    read, write = os.pipe()
    os.write(write, (1000).to_bytes(8, "little") + b"\x00" * 10)
    os.close(write)
    try:
        head = _read_into(read, bytearray(8))
        assert int.from_bytes(head, "little") == 1000
        assert _read_into(read, bytearray(1000)) == bytearray(10)  # a prefix: refused
    finally:
        os.close(read)


def test_a_forked_child_dies_with_its_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, time
        from volsegsync.workers import Forked, _read_into

        def work():
            os.write(1, f"{os.getpid()}\\n".encode())
            time.sleep(60)

        Forked(work).result()
        """
    )
    (tmp_path / "f.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "f.py")], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(child):
        time.sleep(0.1)
    assert not alive(child)


def test_make_temp_takes_a_new_name_and_never_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make_temp`` (no ``tempfile``): a file of mode 0600 beside the target, named
    ``.NAME.RANDOM.tmp``; a name taken, even by a link (to a file it must not write),
    gives the next one."""
    from volsegsync import fsutil

    target = tmp_path / "volsegsync.index"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    draws = iter([b"\x00" * 6, b"\x00" * 6, b"\x01" * 6])
    monkeypatch.setattr(fsutil.os, "urandom", lambda n: next(draws))
    os.symlink(victim, tmp_path / ".volsegsync.index.000000000000.tmp")
    fd, tmp = fsutil.make_temp(target)
    os.write(fd, b"new")
    os.close(fd)
    assert Path(tmp).name == ".volsegsync.index.010101010101.tmp"
    assert os.stat(tmp).st_mode & 0o777 == 0o600
    assert victim.read_bytes() == b"keep"


def test_results_are_kept_until_exit_only_in_the_console_script(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command's result is kept alive (not freed object by object before an exit that
    frees nothing) only where the process ends with its command: the API keeps nothing."""
    import weakref

    from volsegsync import index

    class Result:
        pass

    monkeypatch.setattr(index, "_KEPT", [])
    api = Result()
    gone = weakref.ref(api)
    index.keep_until_exit(api)
    del api
    assert gone() is None
    monkeypatch.setattr(index, "FREEZE_SURVIVORS", True)
    script = Result()
    kept = weakref.ref(script)
    index.keep_until_exit(script)
    del script
    assert kept() is not None
