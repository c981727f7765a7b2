"""Versions from the content store and from git revisions: compare, report --rev,
diff --images, on real repositories (dulwich and the git binary) and real files."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import VOLSEGSYNC, assert_clean_stderr, invoke
from storetools import commit, store_objects

pytest.importorskip("PIL", reason="pictures need Pillow (the 'view' extra)")
from PIL import Image as PILImage
from test_view import NAME, _lps_seg, _volume

V1 = {1: [(3, 4, 5)], 2: [(x, y, 5) for x in (10, 11, 12) for y in (8, 9, 10)]}
V2 = {1: [(3, 4, 5)], 2: [(x, y, 5) for x in (10, 11) for y in (8, 9, 10)]}
SEG1 = f"segmentations/{NAME}-v1.seg.nrrd"
SEG2 = f"segmentations/{NAME}-v2.seg.nrrd"


@pytest.fixture(params=["dulwich", "git"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path) -> Iterator[Path]:
    """Materialised content goes to the system temp folder: watch a folder of our own."""
    folder = tmp_path / "systmp"
    folder.mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved


def _run(root: Path, *args: str) -> Any:
    return invoke(["-C", str(root), *args])


def _pair(root: Path) -> None:
    result = _run(root, "pair", "-q")
    assert result.exit_code == 0, result.output


@pytest.fixture
def history(kind: str, tmp_path: Path) -> Path:
    """v1 committed (branch ``base`` there), then v2 committed on top."""
    from storetools import make_repo

    root = make_repo(tmp_path / "ds", kind)
    _volume(root)
    _lps_seg(root, 1, V1)
    _pair(root)
    commit(root, kind, "v1")
    _branch(root, kind, "base")
    _lps_seg(root, 2, V2)
    _pair(root)
    commit(root, kind, "v2")
    return root


def _branch(root: Path, kind: str, name: str) -> None:
    if kind == "git":
        subprocess.run(["git", "-C", str(root), "branch", name], check=True)
    else:
        from dulwich import porcelain

        porcelain.branch_create(str(root), name)


def _numbers(doc: dict[str, Any]) -> None:
    """v1 -> v2 as computed by hand (test_view.test_compare_numbers_and_picture)."""
    rows = {r["value"]: r for r in doc["labels"]}
    assert rows[1]["dice"] == 1.0 and rows[1]["hausdorff_mm"] == 0.0
    assert rows[2]["voxels_a"] == 9 and rows[2]["voxels_b"] == 6
    assert rows[2]["dice"] == pytest.approx(2 * 6 / 15)
    assert rows[2]["hausdorff_mm"] == pytest.approx(1.0)
    assert rows[2]["ml_a"] == pytest.approx(0.009) and rows[2]["ml_b"] == pytest.approx(0.006)
    assert doc["changed_voxels"] == 3


def _has_red(path: Path) -> bool:
    colors: Any = PILImage.open(path).convert("RGB").getcolors(1 << 16) or []
    return any(r > 150 and g < 100 and b < 100 for _, (r, g, b) in colors)


def test_compare_v1_only_in_the_store_with_v2(history: Path, private_tmp: Path) -> None:
    (history / SEG1).unlink()  # v1 now lives only in the content store
    out = history / "change.png"
    result = _run(
        history, "compare", f"{NAME}@v1", f"{NAME}@v2", "-o", str(out), "--format", "json"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["a"]["source"] == "store" and doc["a"]["segmentation"] == SEG1
    assert doc["b"]["source"] == "working tree"
    _numbers(doc)
    assert _has_red(out)  # the removed column drawn
    assert not (history / SEG1).exists()  # never materialised into the working tree
    assert list(private_tmp.iterdir()) == []  # the private folder is gone
    # show reads a stored version the same way
    result = _run(history, "show", f"{NAME}@v1", "-o", str(history / "v1.png"))
    assert result.exit_code == 0, result.output
    assert not (history / SEG1).exists()


def test_compare_across_revisions(history: Path) -> None:
    (history / SEG1).unlink()
    for a, b in (
        (f"{NAME}@HEAD~1", f"{NAME}@HEAD"),
        (f"{NAME}@base", f"{NAME}@v2"),
        (f"{NAME}@v1@HEAD", f"{SEG2}@HEAD"),
    ):
        result = _run(history, "compare", a, b, "--format", "json")
        assert result.exit_code == 0, (a, b, result.output)
        doc = json.loads(result.output)
        _numbers(doc)
        assert doc["a"]["version"] == 1 and doc["b"]["version"] == 2
    doc = json.loads(
        _run(history, "compare", f"{NAME}@HEAD~1", f"{NAME}@v2", "--format", "json").output
    )
    assert doc["a"]["source"] == "revision HEAD~1"
    result = _run(history, "compare", f"{NAME}@v5@HEAD", f"{NAME}@v2")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "no segmentation version 5 at HEAD" in result.output and "v1, v2" in result.output
    result = _run(history, "compare", f"{NAME}@nosuchbranch", f"{NAME}@v2")
    assert result.exit_code == 2 and "unknown revision" in result.output


def test_report_rev_compares_the_bumped_pair(history: Path, kind: str) -> None:
    out = history / "review"
    result = _run(history, "report", "-o", str(out), "--rev", "base..HEAD", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert len(doc["comparisons"]) == 1
    c = doc["comparisons"][0]
    assert (c["kind"], c["key"], c["error"]) == ("new_version", NAME, None)
    assert (c["old"]["version"], c["new"]["version"]) == (1, 2)
    _numbers(c)
    picture = Path(c["picture"])
    assert picture.parent == out / "compare" and _has_red(picture)
    page = (out / "index.html").read_text()
    assert "Version comparisons base..HEAD" in page
    assert f"src='compare/{picture.name}'" in page and "0.8000" in page  # Dice of label 2
    # cached by content hash: with the content gone from store and disk, the re-run
    # still has the numbers and the picture
    for obj in store_objects(history).values():
        os.chmod(obj, 0o644)
        obj.unlink()
    (history / SEG1).unlink()
    picture.unlink()
    result = _run(history, "report", "-o", str(out), "--rev", "base..HEAD", "--format", "json")
    assert result.exit_code == 0, result.output
    again = json.loads(result.output)["comparisons"][0]
    assert again["labels"] == c["labels"] and Path(again["picture"]).is_file()
    # no change between the revisions: no comparison
    result = _run(history, "report", "-o", str(out), "--rev", "HEAD..HEAD", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.output)["comparisons"] == []
    result = _run(history, "report", "-o", str(out), "--rev", "HEAD")
    assert result.exit_code == 2 and "expected A..B" in result.output


def test_diff_images_writes_pictures_and_markdown_links_them(history: Path) -> None:
    """HEAD (v2) against the work tree: a bump to v3, written but not yet paired."""
    _lps_seg(history, 3, V1)  # v3 puts back what v2 removed
    images = history / "pr-images"
    result = _run(history, "diff", "--images", str(images), "--format", "markdown")
    assert result.exit_code == 0, result.output
    pictures = sorted(images.iterdir())
    assert [p.name for p in pictures] == [
        p.name for p in pictures if p.name.startswith(f"{NAME}-v2-v3-")
    ] and len(pictures) == 1
    assert f"![{NAME}]({pictures[0]})" in result.output
    assert "#### Re-annotated cases (1)" in result.output
    assert "| 2 | `spleen` | 0.006 → 0.009 | 0.8000 | 1.00 |" in result.output
    result = _run(history, "diff", "--images", str(images), "--format", "json")
    doc = json.loads(result.output)
    (image,) = doc["images"]
    assert image["kind"] == "new_version" and image["picture"] == str(pictures[0])
    rows = {r["value"]: r for r in image["labels"]}
    assert rows[2]["voxels_a"] == 6 and rows[2]["voxels_b"] == 9
    assert PILImage.open(pictures[0]).size[0] > 50


def test_diff_images_of_a_silent_edit(history: Path) -> None:
    _lps_seg(history, 2, V1)  # v2 edited in place: content changed, no version bump
    images = history / "imgs"
    result = _run(history, "diff", "--images", str(images), "--format", "json")
    assert result.exit_code == 0, result.output
    (image,) = json.loads(result.output)["images"]
    assert image["kind"] == "modified" and (image["old"]["version"], image["new"]["version"]) == (
        2,
        2,
    )
    rows = {r["value"]: r for r in image["labels"]}
    assert (rows[2]["voxels_a"], rows[2]["voxels_b"]) == (6, 9)
    assert Path(image["picture"]).is_file()


def test_missing_object_is_one_line(history: Path) -> None:
    (history / SEG1).unlink()
    index = (history / "volsegsync.index").read_text()
    digest = next(ln.split("\t")[4] for ln in index.splitlines() if ln.endswith(SEG1))
    obj = store_objects(history)[digest]
    os.chmod(obj, 0o644)
    obj.unlink()
    result = _run(history, "compare", f"{NAME}@v1", f"{NAME}@v2")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1, result.output
    line = result.output
    assert SEG1 in line and digest in line and "volsegsync fetch" in line and "pull" in line


def test_an_index_at_rev_pointing_outside_the_dataset_is_refused(
    history: Path, kind: str, tmp_path: Path
) -> None:
    secret = tmp_path / "outside.seg.nrrd"
    secret.write_bytes((history / SEG2).read_bytes())
    index = (history / "volsegsync.index").read_text()
    for bad in ("../outside.seg.nrrd", str(secret), ".volsegsync/cache/x.seg.nrrd"):
        (history / "volsegsync.index").write_text(index.replace(SEG2, bad))
        commit(history, kind, f"hostile {bad}")
        command = " ".join(f"'{a}'" for a in [VOLSEGSYNC, "compare", f"{NAME}@HEAD", f"{NAME}@v1"])
        result = subprocess.run(
            ["bash", "-c", f"ulimit -v 3000000; exec {command}"],
            cwd=history,
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 2, result
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert bad in lines[0] and (
            "escapes" in lines[0] or "absolute" in lines[0] or "points into" in lines[0]
        ), lines
        assert_clean_stderr(result.stderr)
