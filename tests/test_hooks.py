"""The native git hooks, installed by ``volsegsync install-hooks``, run by the real git
binary: what a commit stages is checked (dulwich reads git's index), datasets in any
folder (spaces, non-ASCII), chaining of a foreign hook, ``core.hooksPath``, a
GUI client's PATH, post-checkout / post-merge / pre-push."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    GIT,
    NAME1,
    NAME2,
    age_all,
    git,
    init_with_dulwich,
    init_with_git_binary,
    invoke,
    make_affine,
    set_mtime,
    write_nii,
    write_nrrd,
    write_pair,
)

from volsegsync.hooks import CHAINED, HOOK_NAMES, hook_script, hooks_dir

ROOT = Path(__file__).resolve().parent.parent
BIN = str(Path(sys.executable).parent)
BARE_PATH = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if os.path.isdir(p))


def env_with(path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "VOLSEGSYNC_"))}
    env["PATH"] = path
    return env


WITH_VOLSEGSYNC = env_with(f"{BIN}{os.pathsep}{os.environ['PATH']}")


def run_git(
    repo: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GIT, "-C", str(repo), "-c", "user.name=T", "-c", "user.email=t@example.org", *args],
        capture_output=True, text=True, env=env or WITH_VOLSEGSYNC, check=False, timeout=120,
        input=input,
    )  # fmt: skip


def commit(
    repo: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_git(repo, "commit", "-q", "-m", "change", *extra, env=env)


def install(repo: Path, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [f"{BIN}/volsegsync", "install-hooks"], cwd=cwd or repo, capture_output=True,
        text=True, env=WITH_VOLSEGSYNC, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def stage(repo: Path, *paths: str) -> None:
    assert run_git(repo, "add", "--", *paths).returncode == 0


def commits(repo: Path) -> int:
    return len(git(repo, "log", "--oneline", check=False).stdout.splitlines())


DESCRIPTION = (".volsegsync/config.toml", ".volsegsync/.gitignore", "volsegsync.index",
               ".gitignore", ".gitattributes")  # fmt: skip


def described(root: Path, prefix: str = "") -> list[str]:
    return [f"{prefix}{p}" for p in DESCRIPTION]


def test_the_scripts_in_hooks_are_what_install_hooks_writes() -> None:
    for name in HOOK_NAMES:
        path = ROOT / "hooks" / name
        assert path.read_text() == hook_script(name), (
            f'hooks/{name} is stale: python -c "from volsegsync.hooks import hook_script; '
            f"print(hook_script('{name}'), end='')\" > hooks/{name}"
        )
        assert os.access(path, os.X_OK)
        sh = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
        assert sh.returncode == 0, sh.stderr


@pytest.mark.parametrize("maker", [init_with_git_binary, init_with_dulwich])
def test_clean_commit_passes_a_broken_one_is_stopped(tmp_path: Path, maker: object) -> None:
    repo = maker(tmp_path / "ds")  # type: ignore[operator]
    write_pair(repo, NAME1)
    write_pair(repo, NAME2)
    age_all(repo)
    assert invoke(["-C", str(repo), "pair", "-q"]).exit_code == 0
    install(repo)
    stage(repo, *described(repo))
    ok = commit(repo)
    assert ok.returncode == 0, ok.stderr
    assert "checking the dataset in ." in ok.stderr

    seg = repo / f"{NAME1}-v1.nrrd"
    write_nrrd(seg, affine=make_affine(spacing=(0.9, 0.9, 3.0)))
    set_mtime(seg)
    assert invoke(["-C", str(repo), "pair", "-q"]).exit_code == 0
    stage(repo, "volsegsync.index")
    blocked = commit(repo)
    assert blocked.returncode == 1
    assert "[geometry]" in blocked.stderr and f"{NAME1}-v1.nrrd" in blocked.stderr
    assert "git commit --no-verify" in blocked.stderr
    assert commits(repo) == 1
    assert commit(repo, "--no-verify").returncode == 0


def test_a_commit_that_touches_no_dataset_is_not_checked(paired: Path) -> None:
    install(paired)
    stage(paired, *described(paired))
    assert commit(paired).returncode == 0
    write_nrrd(paired / f"{NAME1}-v1.nrrd", affine=make_affine(spacing=(5.0, 5.0, 5.0)))
    (paired / "notes.txt").write_text("unrelated\n")
    stage(paired, "notes.txt")
    result = commit(paired)
    assert result.returncode == 0, result.stderr
    assert "checking" not in result.stderr


@pytest.mark.parametrize("index_kind", ["plain", "version 4", "split index"])
def test_the_staged_index_is_checked_not_the_working_tree(paired: Path, index_kind: str) -> None:
    """The attack of issue 7: a staged index naming ../../etc/passwd, a clean tree."""
    install(paired)
    stage(paired, *described(paired))
    assert commit(paired).returncode == 0
    if index_kind == "version 4":  # path prefix compression
        git(paired, "update-index", "--index-version", "4")
    elif index_kind == "split index":  # dulwich does not read it: git is asked
        git(paired, "config", "core.splitIndex", "true")
        git(paired, "update-index", "--split-index")
    index = paired / "volsegsync.index"
    clean = index.read_bytes()
    if clean.startswith(b"volsegsync-index 1"):
        line = "../../etc/passwd\t->\t-\t-\t1\t" + "0" * 32 + "\t-\t-\n"
    else:  # format 2: case, role, version, size, hash, path
        line = "ZZ-evil\tvolume\t-\t1\t" + "0" * 32 + "\t../../etc/passwd\n"
    index.write_bytes(clean + line.encode())
    stage(paired, "volsegsync.index")
    index.write_bytes(clean)  # the working tree is clean again; the staged index is not
    assert invoke(["-C", str(paired), "status"]).exit_code == 0
    blocked = commit(paired)
    assert blocked.returncode == 1, blocked.stderr
    assert "volsegsync.index (staged)" in blocked.stderr and "etc/passwd" in blocked.stderr
    assert commits(paired) == 1
    show = git(paired, "show", ":volsegsync.index").stdout
    assert "etc/passwd" in show  # git still holds it staged: nothing was touched


def test_a_deleted_index_is_checked(paired: Path) -> None:
    install(paired)
    stage(paired, *described(paired))
    assert commit(paired).returncode == 0
    assert run_git(paired, "rm", "-q", "--cached", "volsegsync.index").returncode == 0
    blocked = commit(paired)
    assert blocked.returncode == 1
    assert "volsegsync.index: deleted (or not added) in this commit" in blocked.stderr
    assert "git restore --staged volsegsync.index" in blocked.stderr
    # removing the whole description from git is what the user asked: it passes
    assert run_git(paired, "rm", "-q", "-r", "--cached", ".volsegsync").returncode == 0
    done = commit(paired)
    assert done.returncode == 0, done.stderr
    assert "leaves git" in done.stderr


def test_a_stale_staged_index_is_stopped_with_the_command_that_fixes_it(paired: Path) -> None:
    install(paired)
    stage(paired, *described(paired))
    assert commit(paired).returncode == 0
    (paired / ".volsegsync" / "config.toml").open("a").write("# a comment\n")
    write_nrrd(paired / f"{NAME1}-v3.nrrd")  # on disk, not in the index
    stage(paired, ".volsegsync/config.toml")
    stale = commit(paired)
    assert stale.returncode == 1
    assert "the index does not record the files on disk" in stale.stderr
    assert f"{NAME1}-v3.nrrd" in stale.stderr
    assert "run 'volsegsync pair', then 'git add volsegsync.index'" in stale.stderr

    assert invoke(["-C", str(paired), "pair", "-q"]).exit_code == 0
    unstaged = commit(paired)  # pair ran, but the new index is not staged
    assert unstaged.returncode == 1
    assert "volsegsync.index: the staged copy is not the file on disk" in unstaged.stderr
    assert "git add volsegsync.index" in unstaged.stderr
    # `git commit -a` commits through a temporary index (GIT_INDEX_FILE): that one counts
    ok = commit(paired, "-a")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("folder", ["Wirbelsäule", "données", "my data", "a b/ü ö"])
def test_datasets_in_folders_git_quotes_or_splits(tmp_path: Path, folder: str) -> None:
    repo = tmp_path / "repo with spaces ü"
    repo.mkdir()
    git(repo, "init", "-q")
    good, bad = repo / folder, repo / "other one"
    for ds in (good, bad):
        ds.mkdir(parents=True)
        assert invoke(["-C", str(ds), "init", "-q"]).exit_code == 0
        write_pair(ds, NAME1)
        age_all(ds)
        assert invoke(["-C", str(ds), "pair", "-q"]).exit_code == 0
    install(repo, cwd=good)
    stage(repo, *described(good, f"{folder}/"))
    ok = commit(repo)
    assert ok.returncode == 0, ok.stderr
    assert f"checking the dataset in {folder}\n" in ok.stderr
    assert "other one" not in ok.stderr  # not part of the commit: not checked

    (good / f"{NAME2}.nii.gz").write_bytes(b"not an image at all")
    assert invoke(["-C", str(good), "pair", "-q"]).exit_code == 1
    stage(repo, f"{folder}/volsegsync.index")
    blocked = commit(repo)
    assert blocked.returncode == 1
    assert f"checking the dataset in {folder}\n" in blocked.stderr
    assert f"{NAME2}.nii.gz" in blocked.stderr


def test_volsegsync_missing_from_path(paired: Path) -> None:
    """A GUI git client without the shell's PATH: one line saying so, and how to fix it."""
    if shutil.which("volsegsync", path=BARE_PATH):
        pytest.skip("a volsegsync is installed system-wide")
    hook = paired / ".git" / "hooks" / "pre-commit"
    shutil.copyfile(ROOT / "hooks" / "pre-commit", hook)  # the copy remembers no path
    hook.chmod(0o755)
    (paired / "notes.txt").write_text("unrelated\n")
    stage(paired, "notes.txt")
    assert commit(paired, env=env_with(BARE_PATH)).returncode == 0  # nothing to check
    stage(paired, *described(paired))
    blocked = commit(paired, env=env_with(BARE_PATH))
    assert blocked.returncode == 1
    lines = blocked.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "'volsegsync' is not on PATH" in lines[0] and "volsegsync install-hooks" in lines[0]
    # installed by install-hooks, the hook remembers the volsegsync that installed it
    install(paired)
    ok = commit(paired, env=env_with(BARE_PATH))
    assert ok.returncode == 0, ok.stderr
    assert "checking the dataset in ." in ok.stderr


def test_a_foreign_hook_is_chained_and_restored(paired: Path) -> None:
    hooks = paired / ".git" / "hooks"
    foreign = (
        '#!/bin/sh\necho foreign hook ran >&2\n[ ! -e "$(git rev-parse --show-toplevel)/block" ]\n'
    )
    (hooks / "pre-commit").write_text(foreign)
    (hooks / "pre-commit").chmod(0o755)
    out = install(paired)
    assert f"runs first as {hooks / ('pre-commit' + CHAINED)}" in out
    assert (hooks / f"pre-commit{CHAINED}").read_text() == foreign
    stage(paired, *described(paired))
    ok = commit(paired)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr.index("foreign hook ran") < ok.stderr.index("checking the dataset")
    (paired / "block").write_text("")
    (paired / ".volsegsync" / "config.toml").open("a").write("# x\n")
    stage(paired, ".volsegsync/config.toml")
    blocked = commit(paired)  # the foreign hook's verdict counts
    assert blocked.returncode == 1 and "checking the dataset" not in blocked.stderr
    # re-running changes nothing, and never chains our own hook
    again = install(paired)
    assert "pre-commit: unchanged" in again and "merge driver: unchanged" in again
    assert not (hooks / f"pre-commit{CHAINED}{CHAINED}").exists()

    proc = subprocess.run([f"{BIN}/volsegsync", "uninstall-hooks"], cwd=paired,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (hooks / "pre-commit").read_text() == foreign
    assert not (hooks / f"pre-commit{CHAINED}").exists()
    for name in ("post-checkout", "post-merge", "pre-push"):
        assert not (hooks / name).exists()
    assert "volsegsync" not in git(paired, "config", "--local", "--list").stdout


def test_uninstall_leaves_a_hook_that_is_not_ours(paired: Path) -> None:
    install(paired)
    hooks = paired / ".git" / "hooks"
    (hooks / "post-merge").write_text("#!/bin/sh\nexit 0\n")
    proc = subprocess.run([f"{BIN}/volsegsync", "uninstall-hooks"], cwd=paired,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0
    assert "post-merge: left alone: not installed by volsegsync" in proc.stdout
    assert (hooks / "post-merge").read_text() == "#!/bin/sh\nexit 0\n"
    assert not (hooks / "pre-commit").exists()


def test_core_hooks_path_is_honoured(paired: Path) -> None:
    git(paired, "config", "core.hooksPath", "my hooks")
    install(paired)
    assert hooks_dir(paired.resolve()) == paired.resolve() / "my hooks"
    assert (paired / "my hooks" / "pre-commit").is_file()
    assert not (paired / ".git" / "hooks" / "pre-commit").exists()
    write_nrrd(paired / f"{NAME1}-v1.nrrd", affine=make_affine(spacing=(0.9, 0.9, 3.0)))
    assert invoke(["-C", str(paired), "pair", "-q"]).exit_code == 0
    stage(paired, *described(paired))
    blocked = commit(paired)
    assert blocked.returncode == 1 and "[geometry]" in blocked.stderr


def test_post_checkout_and_post_merge_never_fail_git(paired: Path) -> None:
    install(paired)
    stage(paired, *described(paired))
    assert commit(paired).returncode == 0
    assert run_git(paired, "checkout", "-q", "-b", "v2").returncode == 0
    write_nrrd(paired / f"{NAME1}-v2.nrrd")
    assert invoke(["-C", str(paired), "pair", "-q"]).exit_code == 0
    stage(paired, "volsegsync.index")
    assert commit(paired).returncode == 0
    back = run_git(paired, "checkout", "-q", "-")  # the index differs: checkout runs
    assert back.returncode == 0, back.stderr
    merged = run_git(paired, "merge", "-q", "--ff-only", "v2")
    assert merged.returncode == 0, merged.stderr
    for out in (back.stderr, merged.stderr):
        assert "Traceback" not in out
    same = run_git(paired, "checkout", "-q", "-b", "again")  # the index is the same: quiet
    assert same.returncode == 0 and same.stderr == ""


def test_pre_push_is_opt_in(paired: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    install(paired)
    stage(paired, *described(paired))
    assert commit(paired).returncode == 0
    off = run_git(paired, "push", "-q", str(remote), "HEAD:refs/heads/main")
    assert off.returncode == 0, off.stderr
    assert "volsegsync" not in off.stderr
    config = paired / ".volsegsync" / "config.toml"
    config.write_text(config.read_text() + "\n[hooks]\npre_push = true\n")
    stage(paired, ".volsegsync/config.toml")
    assert commit(paired).returncode == 0
    on = run_git(paired, "push", "-q", str(remote), "HEAD:refs/heads/main")
    assert "Traceback" not in on.stderr


def test_bad_pre_push_setting_is_a_config_error(paired: Path) -> None:
    config = paired / ".volsegsync" / "config.toml"
    config.write_text(config.read_text() + "\n[hooks]\npre_push = 1\n")
    result = invoke(["-C", str(paired), "status"])
    assert result.exit_code == 2
    assert "[hooks.pre_push] must be true or false, found 1" in result.stderr


def test_hook_commands_outside_git_fail_cleanly(tmp_path: Path) -> None:
    result = invoke(["-C", str(tmp_path), "install-hooks"])
    assert result.exit_code == 2
    assert "not inside a git repository" in result.stderr
    hook = invoke(["-C", str(tmp_path), "hook", "pre-commit"])
    assert hook.exit_code == 2 and "not inside a git repository" in hook.stderr


def test_pre_commit_with_file_names_maps_them_to_datasets(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    ds = repo / "data" / "spine"
    ds.mkdir(parents=True)
    assert invoke(["-C", str(ds), "init", "-q"]).exit_code == 0
    write_nii(ds / f"{NAME1}.nii.gz")
    write_nrrd(ds / f"{NAME1}-v1.nrrd")
    age_all(ds)
    assert invoke(["-C", str(ds), "pair", "-q"]).exit_code == 0
    ok = invoke(["-C", str(repo), "hook", "pre-commit", "data/spine/volsegsync.index"])
    assert ok.exit_code == 0, ok.output
    (ds / "C01 bad.nii.gz").write_bytes(b"x")
    names = invoke(["-C", str(repo), "hook", "check-names", "data/spine/.volsegsync/config.toml"])
    assert names.exit_code == 1
    assert "C01 bad.nii.gz" in names.stderr and "[naming]" in names.stderr


def test_git_checkout_of_an_old_tag_brings_the_images_along(paired: Path) -> None:
    """Issue 8.4: the installed post-checkout hook runs `volsegsync checkout`."""
    install(paired)
    stage(paired, *described(paired))
    assert commit(paired).returncode == 0
    git(paired, "tag", "v1.0")
    seg = paired / f"{NAME1}-v1.nrrd"
    old = seg.read_bytes()
    write_nrrd(seg, seed="edited in place")
    set_mtime(seg)
    new = seg.read_bytes()
    assert new != old
    assert invoke(["-C", str(paired), "pair", "-q"]).exit_code == 0  # stores the new content
    stage(paired, "volsegsync.index")
    assert commit(paired).returncode == 0
    back = run_git(paired, "checkout", "-q", "v1.0")
    assert back.returncode == 0, back.stderr
    assert seg.read_bytes() == old, back.stderr
    assert invoke(["-C", str(paired), "status"]).exit_code == 0
    forth = run_git(paired, "checkout", "-q", "-")
    assert forth.returncode == 0, forth.stderr
    assert seg.read_bytes() == new, forth.stderr
    # content the store does not hold: said, and git's checkout still succeeds
    shutil.rmtree(paired / ".volsegsync" / "cache")
    missing = run_git(paired, "checkout", "-q", "v1.0")
    assert missing.returncode == 0
    assert "not every file of the dataset in . was restored" in missing.stderr
    assert "run 'volsegsync checkout'" in missing.stderr
    assert seg.read_bytes() == new  # nothing was overwritten with what is not stored


def test_a_linked_gitattributes_is_not_read_through(paired: Path, tmp_path: Path) -> None:
    """.gitattributes is tracked (another branch's): a link to a secret is not copied."""
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2\n")
    attributes = paired / ".gitattributes"
    attributes.unlink()
    attributes.symlink_to(secret)
    result = invoke(["-C", str(paired), "install-hooks"])
    assert result.exit_code == 2
    assert ".gitattributes" in result.stderr and "Traceback" not in result.output
    assert attributes.is_symlink() and secret.read_text() == "password=hunter2\n"


def test_a_fifo_in_place_of_the_index_does_not_hang_the_hook(paired: Path) -> None:
    install(paired)
    stage(paired, *described(paired))
    index = paired / "volsegsync.index"
    index.unlink()
    os.mkfifo(index)
    proc = subprocess.run(
        ["timeout", "60", GIT, "-C", str(paired), "-c", "user.name=T", "-c",
         "user.email=t@example.org", "commit", "-q", "-m", "x"],
        capture_output=True, text=True, env=WITH_VOLSEGSYNC, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "volsegsync.index" in proc.stderr and "Traceback" not in proc.stderr


def test_merge_driver_declaration_is_updated_but_a_foreign_one_kept(paired: Path) -> None:
    from volsegsync.hooks import MERGE_DRIVER

    git(paired, "config", "merge.volsegsync.driver", "volsegsync merge-driver %O %A %B %P")
    assert "merge driver: updated" in install(paired)
    assert git(paired, "config", "merge.volsegsync.driver").stdout.strip() == MERGE_DRIVER
    assert git(paired, "config", "--get-all", "merge.volsegsync.driver").stdout.count("\n") == 1
    git(paired, "config", "merge.volsegsync.driver", "my-own-driver %A")
    assert "merge driver: left alone: it is set to 'my-own-driver %A'" in install(paired)
    assert git(paired, "config", "merge.volsegsync.driver").stdout.strip() == "my-own-driver %A"
