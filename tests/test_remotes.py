"""Remotes: config, push, fetch, pull to a folder and to a real S3-protocol server.

The S3 tests start moto's standalone server on 127.0.0.1 (a real HTTP server
speaking the S3 protocol) and talk to it with the real client library (s3fs,
boto3); nothing is mocked. They skip, saying why, when s3fs or moto is absent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import xxhash
from conftest import (
    NAME1,
    NAME2,
    NAME3,
    VOLSEGSYNC,
    age_all,
    assert_clean_stderr,
    git,
    init_with_git_binary,
    run_script,
    write_nii,
    write_nrrd,
    write_pair,
)

from volsegsync.dataset import Dataset

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzzSECRETzz"
KEY_ID = "AKIAVOLSEGSYNCTESTKEY"
HAVE_S3 = all(importlib.util.find_spec(m) for m in ("s3fs", "moto", "boto3"))
needs_s3 = pytest.mark.skipif(
    not HAVE_S3, reason="S3 tests need s3fs, boto3 and moto[server]: pip install -e '.[test]'"
)


# --------------------------------------------------------------------------- fixtures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    def __init__(self, endpoint: str, env: dict[str, str]) -> None:
        self.endpoint = endpoint
        self.env = env
        self._n = 0

    def bucket(self) -> str:
        """A new, empty bucket."""
        import boto3

        self._n += 1
        name = f"bucket-{self._n}-{os.getpid()}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a free port of 127.0.0.1, for the whole session."""
    if not HAVE_S3:
        pytest.skip("S3 tests need s3fs, boto3 and moto[server]: pip install -e '.[test]'")
    port = _free_port()
    exe = Path(sys.executable).parent / "moto_server"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen(
        [*cmd, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("moto_server did not start")
                time.sleep(0.1)
        yield S3Server(endpoint, env)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def vs(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed volsegsync, for real, in ``root``."""
    r = run_script(["-C", str(root), *args], env=env or {})
    assert_clean_stderr(r.stderr)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


def make_dataset(root: Path, extra_versions: bool = True) -> Path:
    init_with_git_binary(root)
    write_pair(root, NAME1, versions=(1, 2) if extra_versions else (1,))
    write_pair(root, NAME2, versions=(1,))
    write_nii(root / f"{NAME3}.nii.gz")  # unpaired
    age_all(root)
    r = vs(root, "pair")
    assert r.returncode in (0, 1), r.stderr
    return root


def indexed_files(root: Path) -> dict[str, bytes]:
    ds = Dataset.open(root)
    return {
        rec.path: (root / rec.path).read_bytes() for e in ds.read_index() for rec in e.records()
    }


def store_objects(root: Path) -> dict[str, bytes]:
    base = root / ".volsegsync" / "cache" / "xxh3-128"
    if not base.is_dir():
        return {}
    return {p.parent.name + p.name: p.read_bytes() for p in base.glob("*/*") if p.is_file()}


# --------------------------------------------------------------------------- config


def test_remote_add_list_remove(ds_root: Path) -> None:
    config = ds_root / ".volsegsync" / "config.toml"
    before = config.read_text()
    r = vs(ds_root, "remote", "add", "nas", str(ds_root.parent / "nas"), "--default")
    assert r.returncode == 0, r.stderr
    r = vs(
        ds_root,
        "remote",
        "add",
        "s3",
        "s3://lab-data/spine",
        "--endpoint-url",
        "http://127.0.0.1:9000",
    )
    assert r.returncode == 0, r.stderr
    text = config.read_text()
    assert text.startswith(before.rstrip("\n"))  # comments and other tables kept
    assert "[remotes.nas]" in text and '[core]\nremote = "nas"' in text
    r = vs(ds_root, "remote", "list", "--format", "json")
    import json

    rows = {row["name"]: row for row in json.loads(r.stdout)["remotes"]}
    assert rows["nas"]["default"] and not rows["s3"]["default"]
    assert rows["s3"]["endpoint_url"] == "http://127.0.0.1:9000"
    r = vs(ds_root, "remote", "add", "nas", "/elsewhere")
    assert r.returncode == 2 and "exists" in r.stderr
    r = vs(ds_root, "remote", "remove", "nas")
    assert r.returncode == 0
    ds = Dataset.open(ds_root)
    assert set(ds.config.remotes) == {"s3"} and ds.config.default_remote is None
    r = vs(ds_root, "remote", "remove", "nas")
    assert r.returncode == 2 and "no remote" in r.stderr


def test_local_remote_overrides_and_stays_untracked(ds_root: Path) -> None:
    r = vs(ds_root, "remote", "add", "mine", "/data/mine", "--local", "--default")
    assert r.returncode == 0, r.stderr
    local = ds_root / ".volsegsync" / "config.local.toml"
    assert local.is_file()
    assert "mine" not in (ds_root / ".volsegsync" / "config.toml").read_text()
    ds = Dataset.open(ds_root)
    assert ds.config.default_remote == "mine"
    assert ds.config.remotes["mine"].url == "/data/mine"


@pytest.mark.parametrize(
    "url",
    [
        f"s3://{KEY_ID}:{SECRET}@bucket/prefix",
        f"s3://{KEY_ID}@bucket/prefix",
        f"s3://bucket/prefix?X-Amz-Credential={KEY_ID}",
        f"{KEY_ID}:{SECRET}@host:/srv/data",
        f"file://{KEY_ID}:{SECRET}@localhost/srv",
    ],
)
def test_urls_with_credentials_are_refused(ds_root: Path, url: str) -> None:
    config = ds_root / ".volsegsync" / "config.toml"
    before = config.read_bytes()
    r = vs(ds_root, "remote", "add", "x", url)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert (len(lines) == 1 and "credentials" in lines[0]) or "query" in lines[0]
    assert SECRET not in r.stderr
    assert config.read_bytes() == before


@pytest.mark.parametrize(
    "table,problem",
    [
        ('[remotes.x]\nurl = "s3://k:s@bucket/p"\n', "credentials"),
        ('[remotes."../x"]\nurl = "/tmp/x"\n', "invalid remote name"),
        ('[remotes.x]\nurl = "ftp://host/x"\n', "unsupported scheme"),
        ('[remotes.x]\nurl = "/x"\nendpoint_url = "file:///x"\n', "endpoint"),
        ('[remotes.x]\nurl = "/x"\npassword = "p"\n', "unknown key"),
        ('[remotes]\nx = "/x"\n', "must be a table"),
        ("[core]\nremote = 3\n", "must be a string"),
    ],
)
def test_hostile_remote_config_is_one_line(ds_root: Path, table: str, problem: str) -> None:
    config = ds_root / ".volsegsync" / "config.toml"
    config.write_text(config.read_text() + "\n" + table)
    r = vs(ds_root, "remote", "list")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert problem in r.stderr and "config.toml" in r.stderr


def test_missing_s3_extra_names_it(ds_root: Path) -> None:
    vs(ds_root, "remote", "add", "s3", "s3://bucket/prefix", "--default")
    blocker = ds_root.parent / "block"
    blocker.mkdir()
    (blocker / "s3fs.py").write_text("raise ImportError('s3fs is not installed')\n")
    env = {"PYTHONPATH": str(blocker)}
    r = vs(ds_root, "push", env=env)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "pip install 'volsegsync[s3]'" in r.stderr


def test_no_remote_is_a_usage_error(ds_root: Path) -> None:
    r = vs(ds_root, "push")
    assert r.returncode == 2 and "no default remote" in r.stderr


# --------------------------------------------------------------------------- folder remote


def test_push_fetch_round_trip_on_a_folder(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "a")
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "nas", str(remote), "--default")
    objects = store_objects(root)
    assert len(objects) == 6  # 3 volumes, segmentations v1 and v2 of one case, v1 of another
    r = vs(root, "push")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"pushed {len(objects)} objects" in r.stdout
    on_remote = {p.parent.name + p.name: p.read_bytes() for p in remote.glob("xxh3-128/*/*")}
    assert on_remote == objects
    r = vs(root, "push")  # nothing to send
    assert r.returncode == 0 and "pushed 0 objects" in r.stdout
    shutil.rmtree(root / ".volsegsync" / "cache")
    r = vs(root, "fetch")
    assert r.returncode == 0, r.stdout + r.stderr
    assert store_objects(root) == objects
    for digest, data in objects.items():
        assert xxhash.xxh3_128_hexdigest(data) == digest


def test_push_of_paths_only(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "a")
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "nas", str(remote), "--default")
    r = vs(root, "push", f"{NAME2}.nii.gz", "--format", "json")
    assert r.returncode == 0, r.stderr
    import json

    doc = json.loads(r.stdout)
    assert [o["path"] for o in doc["objects"]] == [f"{NAME2}.nii.gz"]
    assert len(list(remote.glob("xxh3-128/*/*"))) == 1


def test_corrupted_object_on_the_remote_is_rejected(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "a")
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "nas", str(remote), "--default")
    assert vs(root, "push").returncode == 0
    objects = store_objects(root)
    seg = f"{NAME2}-v1.nrrd"
    digest = next(
        rec.digest
        for e in Dataset.open(root).read_index()
        for rec in e.records()
        if rec.path == seg
    )
    victim = remote / "xxh3-128" / digest[:2] / digest[2:]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))
    shutil.rmtree(root / ".volsegsync" / "cache")
    r = vs(root, "fetch")
    assert r.returncode == 1
    errors = [ln for ln in r.stdout.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and digest in errors[0] and seg in errors[0]
    assert "does not match" in errors[0]
    got = store_objects(root)
    assert digest not in got  # rejected
    assert got == {d: b for d, b in objects.items() if d != digest}  # the rest went on
    assert not list((root / ".volsegsync" / "cache").glob("tmp/*"))  # no leftovers


def test_fetch_names_objects_the_remote_lacks(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "a")
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "nas", str(remote), "--default")
    assert vs(root, "push").returncode == 0
    one = next(remote.glob("xxh3-128/*/*"))
    one.unlink()
    shutil.rmtree(root / ".volsegsync" / "cache")
    r = vs(root, "fetch")
    assert r.returncode == 1
    assert f"{one.parent.name}{one.name}" in r.stdout and "not on remote nas" in r.stdout
    assert len(store_objects(root)) == 5


def _slow_dataset(root: Path, n: int, size: int) -> Path:
    init_with_git_binary(root)
    for i in range(n):
        name = f"C{i:03d}-Big_V001-D01012000"
        write_nii(root / f"{name}.nii.gz", shape=(size, size, size))
    age_all(root)
    assert vs(root, "pair").returncode in (0, 1)
    return root


def test_push_killed_part_way_then_resumed(tmp_path: Path) -> None:
    root = _slow_dataset(tmp_path / "a", 40, 48)
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "nas", str(remote), "--default")
    objects = store_objects(root)
    proc = subprocess.Popen(
        [VOLSEGSYNC, "-C", str(root), "push", "--jobs", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(list(remote.glob("xxh3-128/*/*"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finals = list(remote.glob("xxh3-128/*/*"))  # temporaries live in remote/tmp/
    assert 0 < len(finals) < len(objects), "the push was not interrupted part-way"
    for p in finals:  # no object under its final name with wrong content
        assert xxhash.xxh3_128_hexdigest(p.read_bytes()) == p.parent.name + p.name
    r = vs(root, "push", "--format", "json")
    assert r.returncode == 0, r.stdout
    import json

    summary = json.loads(r.stdout)["summary"]
    assert summary["present"] >= len(finals)  # what had moved is not sent again
    assert summary["moved"] == len(objects) - summary["present"]
    on_remote = {p.parent.name + p.name: p.read_bytes() for p in remote.glob("xxh3-128/*/*")}
    assert on_remote == objects


def test_a_failed_upload_is_named_and_exits_1(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "a")
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "nas", str(remote), "--default")
    objects = store_objects(root)
    shards = {d[:2] for d in sorted(objects)[:2]}
    blocked = [d for d in objects if d[:2] in shards]  # every object in those shards
    for shard_name in shards:  # a file where the shard folder should be: uploads fail
        shard = remote / "xxh3-128" / shard_name
        shard.parent.mkdir(parents=True, exist_ok=True)
        shard.write_bytes(b"")
    r = vs(root, "push")
    assert r.returncode == 1
    failed = [ln for ln in r.stdout.splitlines() if "not pushed" in ln]
    assert len(failed) == len(blocked) and all(any(d in ln for ln in failed) for d in blocked)
    n = len(blocked)
    assert f"pushed {len(objects) - n} objects" in r.stdout and f"{n} failed" in r.stdout
    for shard_name in shards:
        (remote / "xxh3-128" / shard_name).unlink()
    r = vs(root, "push")
    assert r.returncode == 0 and f"pushed {n} objects" in r.stdout


# --------------------------------------------------------------------------- S3


@needs_s3
def test_push_fetch_round_trip_on_s3(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    root = make_dataset(tmp_path / "a")
    r = vs(root, "remote", "add", "s3", f"s3://{bucket}/spine", "--default")
    assert r.returncode == 0, r.stderr
    objects = store_objects(root)
    r = vs(root, "push", env=s3_server.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"pushed {len(objects)} objects" in r.stdout
    r = vs(root, "push", env=s3_server.env)
    assert r.returncode == 0 and "pushed 0 objects" in r.stdout
    shutil.rmtree(root / ".volsegsync" / "cache")
    r = vs(root, "fetch", env=s3_server.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert store_objects(root) == objects


@needs_s3
def test_s3_endpoint_from_the_config(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    root = make_dataset(tmp_path / "a", extra_versions=False)
    vs(
        root,
        "remote",
        "add",
        "minio",
        f"s3://{bucket}",
        "--endpoint-url",
        s3_server.endpoint,
        "--local",
        "--default",
    )
    env = {k: v for k, v in s3_server.env.items() if k != "AWS_ENDPOINT_URL"}
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:1"  # the per-remote setting wins
    r = vs(root, "push", env=env)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_s3
def test_credentials_absent_from_every_file_volsegsync_writes(
    tmp_path: Path, s3_server: S3Server
) -> None:
    bucket = s3_server.bucket()
    root = make_dataset(tmp_path / "a")
    vs(root, "remote", "add", "s3", f"s3://{bucket}/p", "--default")
    vs(root, "remote", "add", "nas", str(tmp_path / "remote"), "--local")
    for args in (["push"], ["fetch"], ["push", "--remote", "nas"], ["remote", "list"]):
        r = vs(root, *args, env=s3_server.env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert SECRET not in r.stdout + r.stderr and KEY_ID not in r.stdout + r.stderr
    for folder in (root, tmp_path / "remote"):
        for p in folder.rglob("*"):
            if p.is_file() and ".git" not in p.relative_to(folder).parts[:1]:
                data = p.read_bytes()
                assert SECRET.encode() not in data, p
                assert KEY_ID.encode() not in data, p


@needs_s3
def test_unreachable_s3_is_one_line(tmp_path: Path, s3_server: S3Server) -> None:
    root = make_dataset(tmp_path / "a", extra_versions=False)
    vs(
        root,
        "remote",
        "add",
        "s3",
        "s3://no-such-bucket-here/p",
        "--default",
        "--endpoint-url",
        f"http://127.0.0.1:{_free_port()}",
    )
    env = dict(s3_server.env, AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard")
    r = vs(root, "push", env=env)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot list" in r.stderr


# --------------------------------------------------------------------------- clone + pull


def commit(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(
        root,
        "-c",
        "user.name=T",
        "-c",
        "user.email=t@example.org",
        "commit",
        "-q",
        "--no-verify",
        "-m",
        message,
    )


def clone(origin: Path, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(origin), str(dest)], check=True, capture_output=True)
    return dest


def _pull_reproduces_every_file(tmp_path: Path, url: str, env: dict[str, str]) -> None:
    root = make_dataset(tmp_path / "a")
    assert vs(root, "remote", "add", "origin", url, "--default").returncode == 0
    r = vs(root, "push", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    commit(root, "dataset")
    copy = clone(root, tmp_path / "b")
    assert not (copy / f"{NAME1}.nii.gz").exists()  # git holds no image
    r = vs(copy, "push", env=env)  # nothing local, but the remote has it all: fine
    assert r.returncode == 0 and "pushed 0 objects" in r.stdout, r.stdout
    r = vs(copy, "pull", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert indexed_files(copy) == indexed_files(root)
    r = vs(copy, "status")
    assert r.returncode == 0, r.stdout  # in sync: no rehash needed, nothing changed
    r = vs(copy, "pull", env=env)  # again: nothing to do
    assert r.returncode == 0 and "fetched 0 objects" in r.stdout


def test_fresh_clone_pull_reproduces_every_file_folder(tmp_path: Path) -> None:
    _pull_reproduces_every_file(tmp_path, str(tmp_path / "remote"), {})


@needs_s3
def test_fresh_clone_pull_reproduces_every_file_s3(tmp_path: Path, s3_server: S3Server) -> None:
    _pull_reproduces_every_file(tmp_path, f"s3://{s3_server.bucket()}/ds", s3_server.env)


def test_pull_lists_what_the_remote_lacks_and_restores_the_rest(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "a")
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "origin", str(remote), "--default")
    assert vs(root, "push").returncode == 0
    commit(root, "dataset")
    lost = next(remote.glob("xxh3-128/*/*"))
    lost.unlink()
    digest = lost.parent.name + lost.name
    copy = clone(root, tmp_path / "b")
    r = vs(copy, "pull")
    assert r.returncode == 1
    assert digest in r.stdout and "not on remote origin" in r.stdout
    want = indexed_files(root)
    ds = Dataset.open(root)
    lost_paths = {rec.path for e in ds.read_index() for rec in e.records() if rec.digest == digest}
    for path, data in want.items():
        if path in lost_paths:
            assert not (copy / path).exists()
        else:
            assert (copy / path).read_bytes() == data


def test_two_clones_exchange_a_new_segmentation_version(tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    a = make_dataset(tmp_path / "a")
    vs(a, "remote", "add", "origin", str(tmp_path / "remote"), "--default")
    assert vs(a, "push").returncode == 0
    commit(a, "dataset")
    git(a, "push", "-q", str(origin), "HEAD:refs/heads/main")
    b = tmp_path / "b"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(b)], check=True)
    assert vs(b, "pull").returncode == 0
    # B annotates version 3 of the first case and shares it
    v3 = b / f"{NAME1}-v3.nrrd"
    write_nrrd(v3, seed="a new annotation")
    age_all(b)
    assert vs(b, "pair").returncode in (0, 1)
    assert vs(b, "push").returncode == 0
    commit(b, "v3")
    git(b, "push", "-q", "origin", "HEAD:main")
    # A gets it
    git(a, "pull", "-q", str(origin), "main")
    r = vs(a, "pull")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (a / v3.name).read_bytes() == v3.read_bytes()
    assert indexed_files(a) == indexed_files(b)
    entry = next(e for e in Dataset.open(a).read_index() if e.segmentation and NAME1 in e.key)
    assert entry.version == 3


# --------------------------------------------------------------------------- status, gc


def test_status_remote_names_what_each_side_lacks(tmp_path: Path) -> None:
    import json

    root = make_dataset(tmp_path / "a")
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "origin", str(remote), "--default")
    r = vs(root, "status", "--remote", "origin", "--format", "json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["summary"]["missing_on_remote"] == 6 and doc["summary"]["missing_locally"] == 0
    assert vs(root, "push").returncode == 0
    assert vs(root, "status", "--remote", "origin").returncode == 0
    victim = next((root / ".volsegsync" / "cache" / "xxh3-128").glob("*/*"))
    victim.chmod(0o644)
    victim.unlink()
    r = vs(root, "status", "--remote", "origin", "--format", "json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["summary"]["missing_locally"] == 1
    assert doc["objects"][0]["object"].endswith(victim.parent.name + victim.name)


def test_gc_remote_keeps_history_and_recent_objects(tmp_path: Path) -> None:
    import json

    root = make_dataset(tmp_path / "a")
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "origin", str(remote), "--default")
    assert vs(root, "push").returncode == 0
    commit(root, "v1")
    # an unreferenced object, old; another unreferenced one, just written
    (remote / "xxh3-128" / "ab").mkdir(exist_ok=True)
    old = remote / "xxh3-128" / "ab" / ("c" * 30)
    old.write_bytes(b"orphan")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    young = remote / "xxh3-128" / "ab" / ("d" * 30)
    young.write_bytes(b"in flight")
    (remote / "tmp").mkdir(exist_ok=True)
    stale_tmp = remote / "tmp" / ("e" * 32)
    stale_tmp.write_bytes(b"partial")
    os.utime(stale_tmp, (time.time() - 7200,) * 2)
    # a version only the history references
    (root / f"{NAME2}-v1.nrrd").unlink()
    assert vs(root, "pair").returncode in (0, 1)
    r = vs(root, "gc", "--remote", "origin")
    assert r.returncode == 2 and "--yes" in r.stderr  # the local gc's guard
    r = vs(root, "gc", "--remote", "origin", "--dry-run", "--format", "json")
    doc = json.loads(r.stdout)
    assert [row["digest"] for row in doc["removed"]] == ["ab" + "c" * 30]
    assert old.exists()
    r = vs(root, "gc", "--remote", "origin", "--yes")
    assert r.returncode == 0, r.stderr
    assert not old.exists() and young.exists() and not stale_tmp.exists()
    assert len(list(remote.glob("xxh3-128/*/*"))) == 7  # 6 referenced + the young one


def test_revs_and_all_commits_carry_old_versions(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "a")
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "origin", str(remote), "--default")
    commit(root, "first")
    seg = root / f"{NAME2}-v1.nrrd"
    old_digest = xxhash.xxh3_128_hexdigest(seg.read_bytes())
    write_nrrd(seg, seed="edited in place")
    age_all(root)
    assert vs(root, "pair").returncode in (0, 1)
    commit(root, "second")
    on_remote = lambda: {p.parent.name + p.name for p in remote.glob("xxh3-128/*/*")}  # noqa: E731
    assert vs(root, "push").returncode == 0
    assert old_digest not in on_remote()  # the working index no longer records it
    r = vs(root, "push", "--revs", "HEAD~1")
    assert r.returncode == 0 and "pushed 1 objects" in r.stdout
    assert old_digest in on_remote()
    r = vs(root, "push", "--all-commits")
    assert r.returncode == 0 and "pushed 0 objects" in r.stdout
    r = vs(root, "push", "--revs", "no-such-branch")
    assert r.returncode == 2 and "no-such-branch" in r.stderr
    copy = clone(root, tmp_path / "b")
    r = vs(copy, "fetch", "--all-commits")
    assert r.returncode == 0, r.stdout
    assert old_digest in store_objects(copy)


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    import pty

    root = make_dataset(tmp_path / "a")
    vs(root, "remote", "add", "origin", str(tmp_path / "remote"), "--default")
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [VOLSEGSYNC, "-C", str(root), "push"],
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=60,
        )
        os.close(slave)
        seen = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(master, 65536):
                seen += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    text = seen.decode("utf-8", "replace")
    assert "push 6 files" in text and "6/6 files" in text
    r = vs(root, "fetch")  # stderr not a terminal: no bar
    assert r.stderr == ""


def test_pre_push_hook_sends_the_content_first(tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    root = make_dataset(tmp_path / "a")
    remote = tmp_path / "remote"
    vs(root, "remote", "add", "origin", str(remote), "--default")
    config = root / ".volsegsync" / "config.toml"
    config.write_text(config.read_text() + "\n[hooks]\npre_push = true\n")
    r = vs(root, "install-hooks")
    assert r.returncode == 0, r.stdout + r.stderr
    commit(root, "dataset")
    env = {**os.environ, "PATH": f"{Path(VOLSEGSYNC).parent}:{os.environ['PATH']}"}
    push = subprocess.run(
        ["git", "-C", str(root), "push", "-q", str(origin), "HEAD:refs/heads/main"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert push.returncode == 0, push.stderr
    assert {p.parent.name + p.name for p in remote.glob("xxh3-128/*/*")} == set(store_objects(root))
    # a remote that cannot take the content stops git's push, with a reason
    shutil.rmtree(remote)
    remote.write_bytes(b"not a folder")
    write_nrrd(root / f"{NAME1}-v3.nrrd", seed="unpushed")
    age_all(root)
    vs(root, "pair")
    commit(root, "v3")
    push = subprocess.run(
        ["git", "-C", str(root), "push", "-q", str(origin), "HEAD:refs/heads/main"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert push.returncode != 0
    assert "git's push is stopped" in push.stderr
    assert_clean_stderr(push.stderr)
