"""The command line: output formats, help, exit codes, bad input, the Python API, example.

In-process through click's CliRunner, and for real through the installed console
script, to prove that exit codes are right and that no traceback reaches a user.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash
from conftest import (
    NAME1,
    NAME2,
    NAME3,
    VOLSEGSYNC,
    age_all,
    assert_clean_stderr,
    init_with_git_binary,
    invoke,
    run_script,
    write_nii,
    write_pair,
)

from volsegsync.dataset import Dataset
from volsegsync.errors import LockedError, NotADatasetError
from volsegsync.fsutil import write_lock
from volsegsync.index import Entry, FileRecord, format_entry
from volsegsync.ops.pair import run_pair
from volsegsync.ops.snapshot import Kept, take_snapshot
from volsegsync.ops.status import run_status

COMMANDS = ["init", "check-names", "pair", "status", "example"]
BAD_NAME = os.fsdecode(b"C09-Bad\xff-D01012000.nii.gz")


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_an_example(command: str | None) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = invoke(args)
    assert result.exit_code == 0
    assert "Example:\n" in result.stdout
    assert "  volsegsync " in result.stdout.split("Example:")[1]
    if command:
        assert "-C DIRECTORY" in result.stdout or "-C " in result.stdout
        assert "--format [text|json|csv]" in result.stdout
        assert "-q, --quiet" in result.stdout


def test_help_subprocess_and_version() -> None:
    proc = run_script(["-h"])
    assert proc.returncode == 0
    for command in COMMANDS:
        assert command.encode() in proc.stdout
    version = run_script(["--version"])
    assert version.returncode == 0
    assert version.stdout == b"volsegsync, version 0.2.0\n"


def test_usage_errors_exit_2_without_traceback(ds_root: Path) -> None:
    for args in (
        ["pair", "--bogus"],
        ["frobnicate"],
        ["pair", "--format", "xml"],
        ["pair", "-j", "0"],
        ["pair", "--by", "guess"],
    ):
        proc = run_script(args, cwd=ds_root)
        assert proc.returncode == 2, args
        assert b"Usage:" in proc.stderr
        assert_clean_stderr(proc.stderr)


def test_outside_a_dataset_subprocess(tmp_path: Path) -> None:
    for command in ("pair", "status"):
        proc = run_script([command], cwd=tmp_path)
        assert proc.returncode == 2
        assert proc.stdout == b""
        assert (
            proc.stderr
            == (
                f"volsegsync: error: {tmp_path}: not a volsegsync dataset (nor any parent folder); "
                "run 'volsegsync init' first\n"
            ).encode()
        )


# --------------------------------------------------------------------------- formats


@pytest.fixture
def mixed(ds_root: Path) -> Path:
    """Two indexed pairs; then a new pair, a naming problem and an unpaired volume."""
    write_pair(ds_root, NAME1)
    write_pair(ds_root, NAME2)
    assert invoke(["-C", str(ds_root), "pair"]).exit_code == 0
    write_pair(ds_root, NAME3)
    write_nii(ds_root / "C04-Knee_PD_V002-D31022001.nii.gz")
    return ds_root


def run_fmt(root: Path, command: str, fmt: str, *extra: str) -> Any:
    result = invoke(["-C", str(root), command, "--format", fmt, *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_json_check_names(mixed: Path) -> None:
    result = run_fmt(mixed, "check-names", "json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert set(doc) == {"schema", "checked", "problems", "summary"}
    assert doc["schema"] == "volsegsync.check-names/1"
    assert doc["checked"] == 7
    assert [p["files"] for p in doc["problems"]] == [["C04-Knee_PD_V002-D31022001.nii.gz"]]
    assert set(doc["problems"][0]) == {"category", "severity", "files", "message", "details"}


def test_json_pair(mixed: Path) -> None:
    result = run_fmt(mixed, "pair", "json", "--dry-run")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert set(doc) == {
        "schema",
        "index",
        "changed",
        "written",
        "pairs",
        "unpaired_volumes",
        "unpaired_segmentations",
        "kept",
        "pruned",
        "problems",
        "store",
        "summary",
    }
    assert doc["schema"] == "volsegsync.pair/1"
    assert doc["index"] == "volsegsync.index"
    assert (doc["changed"], doc["written"]) == (True, False)
    assert [p["volume"] for p in doc["pairs"]] == [f"{n}.nii.gz" for n in (NAME1, NAME2, NAME3)]
    assert doc["unpaired_volumes"] == ["C04-Knee_PD_V002-D31022001.nii.gz"]
    assert doc["unpaired_segmentations"] == []
    assert [p["category"] for p in doc["problems"]] == ["unpaired_volume"]
    summary = doc["summary"]
    assert (summary["files"], summary["pairs"], summary["errors"]) == (7, 3, 1)
    assert summary["bytes"] == sum(
        (mixed / p).stat().st_size for p in os.listdir(mixed) if p.endswith((".gz", ".nrrd"))
    )


def test_json_status(mixed: Path) -> None:
    result = run_fmt(mixed, "status", "json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert set(doc) == {"schema", "in_sync", "changes", "kept", "problems", "summary"}
    assert doc["schema"] == "volsegsync.status/1"
    assert doc["in_sync"] is False
    assert [c["kind"] for c in doc["changes"]] == ["new_pair", "new_file"]
    assert set(doc["changes"][0]) == {"kind", "paths", "message", "details"}
    assert doc["summary"]["changes"] == {"new_pair": 1, "new_file": 1}


def test_json_init_and_example(tmp_path: Path) -> None:
    result = invoke(["example", str(tmp_path / "demo"), "--format", "json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert set(doc) == {"schema", "root", "files", "planted", "git_root"}
    assert doc["schema"] == "volsegsync.example/1"
    assert doc["root"] == str(tmp_path / "demo")
    assert doc["git_root"] == str((tmp_path / "demo").resolve())
    assert len(doc["files"]) == 9
    assert all((tmp_path / "demo" / f).is_file() for f in doc["files"])
    init = json.loads(invoke(["-C", str(tmp_path / "demo"), "init", "--format", "json"]).stdout)
    assert init["schema"] == "volsegsync.init/1"
    assert init["created"] == []


@pytest.mark.parametrize("command", ["check-names", "pair", "status"])
def test_json_subprocess_is_valid(mixed: Path, command: str) -> None:
    proc = run_script([command, "--format", "json"], cwd=mixed)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["schema"] == f"volsegsync.{command}/1"
    assert_clean_stderr(proc.stderr)
    assert proc.stderr == b""


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_formats(mixed: Path) -> None:
    rows = parse_csv(run_fmt(mixed, "pair", "csv", "--dry-run").stdout)
    assert list(rows[0]) == ["volume", "segmentation", "version", "how", "older"]
    assert [(r["volume"], r["segmentation"], r["version"], r["how"]) for r in rows] == [
        (f"{NAME1}.nii.gz", f"{NAME1}-v1.nrrd", "1", "naming"),
        (f"{NAME2}.nii.gz", f"{NAME2}-v1.nrrd", "1", "naming"),
        (f"{NAME3}.nii.gz", f"{NAME3}-v1.nrrd", "1", "naming"),
        ("C04-Knee_PD_V002-D31022001.nii.gz", "", "", ""),
    ]
    rows = parse_csv(run_fmt(mixed, "status", "csv").stdout)
    assert [(r["kind"], r["paths"]) for r in rows] == [
        ("new_pair", f"{NAME3}.nii.gz;{NAME3}-v1.nrrd"),
        ("new_file", "C04-Knee_PD_V002-D31022001.nii.gz"),
    ]
    assert json.loads(rows[0]["details"]) == {
        "volume": f"{NAME3}.nii.gz",
        "segmentation": f"{NAME3}-v1.nrrd",
    }
    rows = parse_csv(run_fmt(mixed, "check-names", "csv").stdout)
    assert [(r["category"], r["severity"], r["files"]) for r in rows] == [
        ("naming", "error", "C04-Knee_PD_V002-D31022001.nii.gz")
    ]
    assert json.loads(rows[0]["details"])["found"] == "D31022001"


def test_csv_handles_commas_and_quotes(ds_root: Path) -> None:
    write_nii(ds_root / 'odd, "name".nii.gz')
    rows = parse_csv(run_fmt(ds_root, "pair", "csv").stdout)
    assert [r["volume"] for r in rows] == ['odd, "name".nii.gz']


@pytest.mark.parametrize("command", ["check-names", "pair", "status"])
def test_quiet_prints_nothing(mixed: Path, command: str) -> None:
    result = invoke(["-C", str(mixed), command, "-q"])
    assert result.exit_code == 1
    assert result.output == ""
    proc = run_script([command, "-q"], cwd=mixed)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, b"", b"")


def test_quiet_init_and_example(tmp_path: Path) -> None:
    assert invoke(["example", str(tmp_path / "demo"), "-q"]).output == ""
    result = invoke(["-C", str(tmp_path / "demo"), "init", "-q"])
    assert (result.exit_code, result.output) == (0, "")


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_input(ds_root: Path) -> Path:
    """Two good pairs among a broken symlink, garbage images and a non-UTF-8 name."""
    write_pair(ds_root, NAME1)
    write_pair(ds_root, NAME2)
    os.symlink(ds_root / "nowhere.nii.gz", ds_root / f"{NAME3}.nii.gz")
    (ds_root / "C05-Garbage-D01012000.nii.gz").write_bytes(os.urandom(64))
    (ds_root / "C05-Garbage-D01012000-v1.nrrd").write_bytes(b"\x00garbage\xff" * 8)
    with open(os.fsencode(ds_root) + b"/C09-Bad\xff-D01012000.nii.gz", "wb") as f:
        f.write(b"irrelevant")
    return ds_root


BAD_PROBLEMS = [  # in order of the file
    ("unreadable", f"{NAME3}.nii.gz", "broken symbolic link"),
    ("not_an_image", "C05-Garbage-D01012000-v1.nrrd", "not a NRRD file (no NRRD000 magic)"),
    (
        "not_an_image",
        "C05-Garbage-D01012000.nii.gz",
        "not a gzip-compressed NIfTI file (no gzip magic)",
    ),
    ("unreadable", BAD_NAME, "the name is not valid UTF-8"),
]


def problem_triples(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for p in doc["problems"]:
        [path] = p["files"]
        assert p["message"].startswith(f"{path}: ")
        out.append((p["category"], path, p["message"][len(path) + 2 :]))
    return out


def test_bad_input_is_reported_and_the_scan_goes_on(bad_input: Path) -> None:
    result = invoke(["-C", str(bad_input), "pair", "--format", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert problem_triples(doc) == BAD_PROBLEMS  # one each: an unreadable file is not unpaired
    # the garbage pair is reported and still paired: neither file is left "unpaired"
    assert [(p["volume"], p["segmentation"]) for p in doc["pairs"]] == [
        (f"{NAME1}.nii.gz", f"{NAME1}-v1.nrrd"),
        (f"{NAME2}.nii.gz", f"{NAME2}-v1.nrrd"),
        ("C05-Garbage-D01012000.nii.gz", "C05-Garbage-D01012000-v1.nrrd"),
    ]
    assert doc["written"] is True
    assert_clean_stderr(result.stderr)
    index = (bad_input / "volsegsync.index").read_text()
    assert index.count("\n") == 9  # magic, hash, comment and two lines per pair


def test_bad_input_subprocess_every_format(bad_input: Path) -> None:
    proc = run_script(["pair", "--format", "json"], cwd=bad_input)
    assert proc.returncode == 1
    assert problem_triples(json.loads(proc.stdout)) == BAD_PROBLEMS
    assert_clean_stderr(proc.stderr)
    for args in (
        ["pair"],
        ["pair", "--format", "csv"],
        ["status"],
        ["check-names"],
        ["status", "--format", "csv"],
        ["check-names", "--format", "csv"],
    ):
        for env in ({}, {"LC_ALL": "C", "LANG": "C"}, {"PYTHONIOENCODING": "ascii"}):
            proc = run_script(args, cwd=bad_input, env=env)
            assert_clean_stderr(proc.stderr)
            assert proc.stderr == b"", (args, env, proc.stderr)
            # status: nothing indexed changed, but unreadable files keep it from "in sync"
            assert proc.returncode == 1, (args, env)
    text = run_script(["pair"], cwd=bad_input).stdout.decode("utf-8", "replace")
    assert f"error: [unreadable] {NAME3}.nii.gz: broken symbolic link" in text
    assert "C09-Bad" in text and "the name is not valid UTF-8" in text
    assert "error: [not_an_image] C05-Garbage-D01012000.nii.gz: not a gzip-compressed" in text
    assert text.splitlines()[-1].startswith("3 pairs, 0 volumes and 0 segmentations unpaired")


def test_bad_input_check_names(bad_input: Path) -> None:
    result = invoke(["-C", str(bad_input), "check-names", "--format", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert problem_triples(doc) == [BAD_PROBLEMS[0], BAD_PROBLEMS[3]]


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A folder under /tmp that an unprivileged user may enter and write."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="volsegsync-test-"))
    try:
        yield path
    finally:
        for p in [path, *path.rglob("*")]:
            if not p.is_symlink():
                os.chmod(p, 0o777 if p.is_dir() else 0o666)
        shutil.rmtree(path)


def demote() -> None:
    os.setgid(65534)
    os.setuid(65534)


def _world_reachable(path: str) -> bool:
    """Whether every folder above ``path`` lets others through and ``path`` lets them run."""
    real = Path(os.path.realpath(path))
    folders_ok = all(os.stat(p).st_mode & stat.S_IXOTH for p in real.parents)
    return folders_ok and bool(os.stat(real).st_mode & stat.S_IXOTH)


def unprivileged_command() -> list[str]:
    """How an unprivileged user runs volsegsync here.

    The installed console script, if its interpreter is reachable by others; else
    (a venv made from a Python under /root) a system Python of the same version
    loading the same site-packages, which holds the editable install.
    """
    if _world_reachable(sys.executable):
        return [VOLSEGSYNC]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if os.path.exists(candidate) and _world_reachable(candidate):
            site_dir = sysconfig.get_paths()["purelib"]
            if not _world_reachable(site_dir):
                break
            code = (
                f"import site; site.addsitedir({site_dir!r}); "
                "from volsegsync.cli import main; main(prog_name='volsegsync')"
            )
            return [candidate, "-c", code]
    pytest.skip("no Python interpreter that an unprivileged user may run")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_unreadable_file_and_folder_as_unprivileged_user(world_dir: Path) -> None:
    os.chmod(world_dir, 0o777)
    root = init_with_git_binary(world_dir / "ds")
    write_pair(root, NAME1)
    write_pair(root, NAME2)
    write_pair(root, NAME3, vol_dir="locked", seg_dir="locked")
    age_all(root)
    for p in [root, *root.rglob("*")]:
        os.chmod(p, 0o777 if p.is_dir() else 0o666)
    os.chmod(root / f"{NAME2}-v1.nrrd", 0)
    os.chmod(root / "locked", 0)
    command = unprivileged_command()

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*command, *args],
            cwd=root,
            capture_output=True,
            timeout=60,
            preexec_fn=demote,
            env={"HOME": str(world_dir), "PATH": "/usr/bin"},
        )

    proc = run("pair", "--format", "json")
    assert_clean_stderr(proc.stderr)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert problem_triples(doc) == [  # the unreadable file keeps its place: no "unpaired"
        ("unreadable", f"{NAME2}-v1.nrrd", "cannot read: Permission denied"),
        ("unreadable", "locked", "cannot list folder: Permission denied"),
    ]
    assert [(p["volume"], p["segmentation"]) for p in doc["pairs"]] == [
        (f"{NAME1}.nii.gz", f"{NAME1}-v1.nrrd"),
        (f"{NAME2}.nii.gz", f"{NAME2}-v1.nrrd"),
    ]
    assert doc["written"] is True
    text = run("status")
    assert_clean_stderr(text.stderr)
    assert text.returncode == 1  # an unreadable file may hide a change
    assert (
        f"error: [unreadable] {NAME2}-v1.nrrd: cannot read: Permission denied".encode()
        in text.stdout
    )
    # started inside a folder whose parent this user may not enter: a clean error
    os.chmod(world_dir, 0o700)
    denied = run("status")
    assert_clean_stderr(denied.stderr)
    assert denied.returncode == 2
    assert denied.stderr == (
        f"volsegsync: error: {root}: cannot look for a dataset: Permission denied\n".encode()
    )


def test_lock_is_exclusive(ds_root: Path) -> None:
    ds = Dataset.open(ds_root)
    with (
        ds.lock(),
        pytest.raises(LockedError, match="another volsegsync run is writing"),
        write_lock(ds.state_dir / "lock", timeout=0.1),
    ):
        pass  # pragma: no cover
    with write_lock(ds.state_dir / "lock", timeout=0.1):
        pass  # free again


# --------------------------------------------------------------------------- Python API


def test_python_api_without_the_cli(ds_root: Path) -> None:
    vol, [seg_v1, seg_v2] = write_pair(ds_root, NAME1, versions=(1, 2), vol_dir="v", seg_dir="s")
    write_nii(ds_root / "v" / f"{NAME2}.nii.gz")
    (ds_root / "deep").mkdir()
    ds = Dataset.open(ds_root / "deep")
    assert ds.root == ds_root
    assert ds.read_index() == []
    snap = take_snapshot(ds, jobs=1)
    files = [vol, seg_v1, seg_v2, f"v/{NAME2}.nii.gz"]
    assert snap.files == 4
    assert [
        (
            e.volume.path if e.volume else None,
            e.segmentation.path if e.segmentation else None,
            e.version,
        )
        for e in snap.entries
    ] == [(vol, seg_v2, 2), (f"v/{NAME2}.nii.gz", None, None)]
    assert [p.category for p in snap.problems] == ["unpaired_volume"]
    assert snap.total_bytes == sum((ds_root / p).stat().st_size for p in files)
    assert ds.read_index() == []  # a snapshot writes nothing
    report = run_pair(ds)
    assert report.written and report.index_changed
    entries = ds.read_index()
    assert [type(e) for e in entries] == [Entry, Entry]
    data = (ds_root / vol).read_bytes()
    assert entries[0].volume == FileRecord(vol, len(data), xxhash.xxh3_128_hexdigest(data))
    assert [format_entry(e) for e in entries] == [format_entry(e) for e in snap.entries]
    assert run_status(ds).in_sync
    (ds_root / seg_v2).unlink()
    report = run_status(ds)
    assert report.changes == [] and report.kept == [Kept(seg_v2, "missing")]
    assert run_pair(ds, prune=True).pruned == [seg_v2]
    [first, _] = ds.read_index()
    assert first.segmentation is not None and first.segmentation.path == seg_v1
    with pytest.raises(NotADatasetError):
        Dataset.open(ds_root.parent)


# --------------------------------------------------------------------------- example


def test_example_then_pair_and_check_names(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    proc = run_script(["example", str(demo)], cwd=tmp_path)
    assert proc.returncode == 0
    assert_clean_stderr(proc.stderr)
    assert (demo / ".git").is_dir()
    pair = run_script(["pair", "--format", "json"], cwd=demo)
    assert pair.returncode == 0, pair.stdout
    doc = json.loads(pair.stdout)
    assert doc["summary"]["pairs"] == 4
    assert doc["problems"] == []
    assert doc["pairs"][0]["older"] == [
        "segmentations/C01-LowerBack_FSE_T2w_V001-D22061998-v1.nrrd"
    ]
    names = run_script(["check-names", "--format", "json"], cwd=demo)
    assert names.returncode == 1
    found = json.loads(names.stdout)["problems"]
    assert sorted(p["files"][0] for p in found) == [
        "segmentations/C04-Knee_PD_V002-D31022001-v1.nrrd",
        "volumes/C04-Knee_PD_V002-D31022001.nii.gz",
    ]
    assert {p["details"]["found"] for p in found} == {"D31022001"}
    assert run_script(["status"], cwd=demo).returncode == 0
    verify = run_script(["verify", "--format", "json"], cwd=demo)
    assert verify.returncode == 1
    planted = [(p["category"], p["files"][0]) for p in json.loads(verify.stdout)["problems"]]
    assert sorted(planted) == [
        ("geometry", "segmentations/C03-Knee_PD_V001-D17112003-v1.nrrd"),
        ("naming", "segmentations/C04-Knee_PD_V002-D31022001-v1.nrrd"),
        ("naming", "volumes/C04-Knee_PD_V002-D31022001.nii.gz"),
    ]
    config = (demo / ".volsegsync" / "config.toml").read_text()
    assert '[verify.labels]\n0 = "background"\n1 = "vertebra"\n2 = "disc"\n' in config


def test_example_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = invoke(["example", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"volsegsync: error: {tmp_path}: folder is not empty (use --force to write into it)\n"
    )
    forced = invoke(["example", str(tmp_path), "--force", "--no-git"])
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert not (tmp_path / ".git").exists()
    assert stat.S_ISDIR((tmp_path / ".volsegsync").stat().st_mode)


# --------------------------------------------------------------------------- output details


def test_csv_has_its_header_even_without_rows(paired: Path) -> None:
    result = run_fmt(paired, "status", "csv")
    assert result.exit_code == 0
    assert result.stdout == "kind,paths,message,details\n"
    result = run_fmt(paired, "check-names", "csv")
    assert result.stdout == "category,severity,files,message,details\n"


def test_severity_overrides_apply_to_check_names_and_pair(ds_root: Path) -> None:
    write_pair(ds_root, "C04-Knee_PD_V002-D31022001")
    write_nii(ds_root / f"{NAME2}.nii.gz")
    config = ds_root / ".volsegsync" / "config.toml"
    config.write_text(
        config.read_text().replace("[scan]", '[verify.severity]\nnaming = "warning"\n'
                                   'unpaired_volume = "off"\n\n[scan]')
    )  # fmt: skip
    names = run_fmt(ds_root, "check-names", "json")
    assert names.exit_code == 0  # warnings only
    assert {p["severity"] for p in json.loads(names.stdout)["problems"]} == {"warning"}
    pair = run_fmt(ds_root, "pair", "json")
    assert pair.exit_code == 0
    assert json.loads(pair.stdout)["problems"] == []  # the unpaired volume is switched off


def test_progress_bar_only_on_a_terminal(paired: Path) -> None:
    """A progress bar goes to stderr when it is a terminal, and nowhere otherwise."""
    import pty

    write_pair(paired, NAME3)  # something to hash
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [VOLSEGSYNC, "-C", str(paired), "status"],
            stdout=subprocess.PIPE, stderr=slave, timeout=60, check=False,
        )  # fmt: skip
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert proc.returncode == 1
    assert b"hashing" in seen and b"100%" in seen
    assert b"hashing" not in proc.stdout
    piped = subprocess.run(
        [VOLSEGSYNC, "-C", str(paired), "status"], capture_output=True, timeout=60, check=False
    )
    assert piped.stderr == b""


def test_damaged_cache_is_rebuilt(paired: Path) -> None:
    """Caches are disposable: a damaged one is replaced, the answer is the same."""
    state = paired / ".volsegsync" / "state"
    (state / "headers.db").write_bytes(b"this is not sqlite" * 100)
    for memo in (state / "pipeline").iterdir():
        memo.write_bytes(b"\x00garbage")
    (state / "verify-full.marshal").write_bytes(b"garbage")
    proc = subprocess.run(
        [VOLSEGSYNC, "-C", str(paired), "status"], capture_output=True, text=True, check=False
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "in sync" in proc.stdout
    proc = subprocess.run(
        [VOLSEGSYNC, "-C", str(paired), "verify"], capture_output=True, text=True, check=False
    )
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stdout
    assert (state / "headers.db").read_bytes().startswith(b"SQLite format 3")


def test_unusable_cache_is_one_note_and_the_run_goes_on(paired: Path) -> None:
    state = paired / ".volsegsync" / "state"
    (state / "headers.db").mkdir()  # cannot be a database, cannot be replaced
    (state / "headers.db" / "x").write_text("keep")  # not empty: cannot be removed either
    proc = subprocess.run(
        [VOLSEGSYNC, "-C", str(paired), "verify"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("volsegsync: note: caches are off for this run")
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


def test_index_that_cannot_be_written_is_one_line(ds_root: Path) -> None:
    write_pair(ds_root, NAME1)
    (ds_root / "volsegsync.index").unlink()
    (ds_root / "volsegsync.index").mkdir()
    proc = subprocess.run(
        [VOLSEGSYNC, "-C", str(ds_root), "pair"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    # a folder where the index should be is found when the old index is read for pins
    assert "volsegsync.index: cannot" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_dash_c_composes_like_git(paired: Path, cwd_guard: None) -> None:
    """``volsegsync -C A status -C B`` runs in A/B, as ``git -C A -C B`` would."""
    result = invoke(["-C", str(paired.parent), "status", "-C", paired.name, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["in_sync"] is True


def _heavy_imports(root: Path, args: list[str], heavy: list[str]) -> list[str]:
    """Which of the modules ``heavy`` a run of ``args`` (exit 0) imported."""
    code = (
        "import sys\n"
        "from volsegsync.cli import main\n"
        "try:\n"
        f"    main(['-C', {str(root)!r}, *{args!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.replace("'", '"')))


def test_status_with_nothing_changed_imports_only_what_it_needs(paired: Path) -> None:
    """Start-up is most of a small run: an unchanged ``status`` loads no cache
    database, no temp-file machinery, no thread or process pool, no git, no numpy, and
    (its config memoised by the run before) no TOML parser, RE2 or strptime."""
    heavy = ["sqlite3", "tempfile", "hashlib", "concurrent.futures", "dulwich", "numpy"]
    heavy += ["multiprocessing", "tomllib", "re2", "_strptime"]
    assert _heavy_imports(paired, ["status", "-q"], heavy) == []


def test_pair_without_the_store_imports_no_pool_and_no_toml_parser(paired: Path) -> None:
    """``pair --no-store`` starts no thread pool (tiny files are hashed by one thread
    and a forked child) and, without a local config, loads no TOML parser."""
    heavy = ["concurrent.futures", "tomllib", "dulwich", "numpy", "multiprocessing"]
    assert _heavy_imports(paired, ["pair", "--no-store", "-q"], heavy) == []


def test_a_cache_database_error_is_told_from_a_bug() -> None:
    import sqlite3

    from volsegsync.cli import _is_cache_error

    db = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.Error) as err:
        db.execute("SELECT * FROM no_such_table")
    assert _is_cache_error(err.value)
    assert not _is_cache_error(ValueError("a bug"))


def _run_script(
    root: Path, *args: str, atexit_hook: bool = False
) -> subprocess.CompletedProcess[str]:
    """The console script's entry in a child, with an object whose finaliser says when
    the interpreter tears down (an exit without teardown never runs it)."""
    code = (
        "import atexit, sys\n"
        "class Teardown:\n"
        "    def __del__(self):\n"
        "        sys.stderr.write('teardown\\n')\n"
        "marker = Teardown()\n"
        + ("atexit.register(lambda: sys.stderr.write('atexit\\n'))\n" if atexit_hook else "")
        + f"sys.argv = ['volsegsync', '-C', {str(root)!r}, *{list(args)!r}]\n"
        "from volsegsync.cli import run\n"
        "run()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_status_exits_without_teardown_and_loses_no_output(paired: Path) -> None:
    write_pair(paired, NAME3, versions=(1,))
    done = _run_script(paired, "status", "--format", "json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)  # all of it, flushed before the exit
    assert [c["kind"] for c in doc["changes"]] == ["new_pair"]
    assert "teardown" not in done.stderr
    # something registered to run at exit: the usual exit, which runs it
    done = _run_script(paired, "status", "--format", "json", atexit_hook=True)
    assert done.returncode == 1
    assert json.loads(done.stdout)["changes"]
    assert "atexit" in done.stderr and "teardown" in done.stderr
    # a command that is not on the list exits as usual
    done = _run_script(paired, "remote", "list")
    assert done.returncode == 0, done.stderr
    assert "teardown" in done.stderr
    # pair: its index and memos are written before the exit without teardown
    done = _run_script(paired, "pair", "--no-store", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert "teardown" not in done.stderr
    assert NAME3 in (paired / "volsegsync.index").read_text()
    doc = json.loads(done.stdout)  # all of it, flushed before the exit
    assert doc["written"] and len(doc["pairs"]) == 3 and doc["summary"]["pairs"] == 3
    assert invoke(["-C", str(paired), "status", "-q"]).exit_code == 0
    done = _run_script(paired, "verify", "--fast", "-q")
    assert done.returncode == 0, done.stderr
    assert "teardown" not in done.stderr
