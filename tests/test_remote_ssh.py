"""Remotes over SSH/SFTP, against a real SFTP server on 127.0.0.1.

The server is asyncssh's (the library under sshfs), started by the tests with a
fresh host key and one authorised client key; the client side is the installed
``volsegsync`` with ``HOME`` pointing at a folder that holds the usual
``~/.ssh/config``, key and ``known_hosts``, exactly as a user's machine would.
Nothing is mocked. The tests skip, saying why, when sshfs is absent.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from test_remotes import (
    _pull_reproduces_every_file,
    make_dataset,
    store_objects,
    vs,
)

HAVE_SSH = importlib.util.find_spec("sshfs") is not None
pytestmark = pytest.mark.skipif(
    not HAVE_SSH, reason="SSH tests need sshfs (and its asyncssh): pip install -e '.[test]'"
)


class SSHServer(NamedTuple):
    port: int
    root: Path  # the server's file system root (an SFTP chroot)
    home: Path  # a client HOME whose ~/.ssh trusts the server and holds the client key
    env: dict[str, str]


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    import asyncssh

    base = tmp_path_factory.mktemp("ssh")
    root = base / "server-root"
    root.mkdir()
    home = base / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key.write_private_key(str(home / ".ssh" / "id_ed25519"))
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())

    class ChrootSFTP(asyncssh.SFTPServer):
        def __init__(self, chan: Any) -> None:
            super().__init__(chan, chroot=str(root).encode())

    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            authorized_client_keys=authorized,
            sftp_factory=ChrootSFTP,
            allow_scp=False,
        )
        holder["server"] = server
        holder["port"] = server.sockets[0].getsockname()[1]
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(30)
    assert started.wait(30)
    port = int(holder["port"])
    public = host_key.export_public_key().decode().strip()
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {public}\n")
    (home / ".ssh" / "config").write_text(f"Host 127.0.0.1\n  User tester\n  Port {port}\n")
    env = {"HOME": str(home), "SSH_AUTH_SOCK": ""}
    try:
        yield SSHServer(port, root, home, env)
    finally:

        async def stop() -> None:
            holder["server"].close()
            await holder["server"].wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def test_push_fetch_round_trip_over_ssh(tmp_path: Path, ssh_server: SSHServer) -> None:
    root = make_dataset(tmp_path / "a")
    url = f"ssh://127.0.0.1:{ssh_server.port}/remotes/spine data"
    assert vs(root, "remote", "add", "lab", url, "--default").returncode == 0
    objects = store_objects(root)
    r = vs(root, "push", env=ssh_server.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"pushed {len(objects)} objects" in r.stdout
    on_server = {
        p.parent.name + p.name: p.read_bytes()
        for p in (ssh_server.root / "remotes" / "spine data" / "xxh3-128").glob("*/*")
    }
    assert on_server == objects  # every object, whole, under its final name
    assert not any((ssh_server.root / "remotes" / "spine data" / "tmp").glob("*"))
    r = vs(root, "push", env=ssh_server.env)
    assert r.returncode == 0 and "pushed 0 objects" in r.stdout
    (root / ".volsegsync" / "cache").rename(tmp_path / "old-cache")
    r = vs(root, "fetch", env=ssh_server.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert store_objects(root) == objects


def test_fresh_clone_pull_reproduces_every_file_ssh(tmp_path: Path, ssh_server: SSHServer) -> None:
    url = f"sftp://127.0.0.1/clone-{tmp_path.name}"  # the port comes from ~/.ssh/config
    _pull_reproduces_every_file(tmp_path, url, ssh_server.env)


def test_corrupted_object_on_the_ssh_remote_is_rejected(
    tmp_path: Path, ssh_server: SSHServer
) -> None:
    root = make_dataset(tmp_path / "a", extra_versions=False)
    remote = ssh_server.root / f"bad-{tmp_path.name}"
    vs(root, "remote", "add", "lab", f"ssh://127.0.0.1/{remote.name}", "--default")
    assert vs(root, "push", env=ssh_server.env).returncode == 0
    victim = sorted((remote / "xxh3-128").glob("*/*"))[0]
    victim.chmod(0o644)
    victim.write_bytes(b"not the content")
    (root / ".volsegsync" / "cache").rename(tmp_path / "old-cache")
    r = vs(root, "fetch", env=ssh_server.env)
    assert r.returncode == 1
    assert victim.parent.name + victim.name in r.stdout + r.stderr
    assert victim.parent.name + victim.name not in store_objects(root)
    assert len(store_objects(root)) >= 1  # the rest came


def test_unknown_host_key_is_refused(tmp_path: Path, ssh_server: SSHServer) -> None:
    """sshfs turns host key checks off unless told: volsegsync keeps them on."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    for name in ("config", "id_ed25519"):
        (home / ".ssh" / name).write_bytes((ssh_server.home / ".ssh" / name).read_bytes())
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    root = make_dataset(tmp_path / "a", extra_versions=False)
    vs(root, "remote", "add", "lab", "ssh://127.0.0.1/mitm", "--default")
    r = vs(root, "push", env={"HOME": str(home), "SSH_AUTH_SOCK": ""})
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "cannot connect" in r.stderr and "lab" in r.stderr
    assert not (ssh_server.root / "mitm").exists()


def test_unreachable_ssh_host_is_one_line(tmp_path: Path, ssh_server: SSHServer) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = make_dataset(tmp_path / "a", extra_versions=False)
    vs(root, "remote", "add", "lab", f"ssh://127.0.0.1:{port}/x", "--default")
    r = vs(root, "push", env=ssh_server.env)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot connect" in r.stderr


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ssh://alice@lab.example.org/srv/data", "~/.ssh/config"),
        ("ssh://alice:hunter2@lab.example.org/srv/data", "~/.ssh/config"),
        ("ssh://lab.example.org", "absolute folder"),
        ("ssh://lab.example.org/srv/../etc", "absolute folder"),
        ("sftp:///srv/data", "no host"),
    ],
)
def test_bad_ssh_urls_are_refused(ds_root: Path, url: str, problem: str) -> None:
    config = ds_root / ".volsegsync" / "config.toml"
    before = config.read_bytes()
    r = vs(ds_root, "remote", "add", "x", url)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and problem in r.stderr, r.stderr
    assert "hunter2" not in r.stderr
    assert config.read_bytes() == before


def test_missing_ssh_extra_names_it(ds_root: Path) -> None:
    vs(ds_root, "remote", "add", "lab", "ssh://lab.example.org/srv/data", "--default")
    blocker = ds_root.parent / "block"
    blocker.mkdir()
    (blocker / "sshfs.py").write_text("raise ImportError('sshfs is not installed')\n")
    r = vs(ds_root, "push", env={"PYTHONPATH": str(blocker)})
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "pip install 'volsegsync[ssh]'" in r.stderr
