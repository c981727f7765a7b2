"""The fast read path of ``show`` and the report's thumbnails: the streamed volume gives
the very pixels the whole volume gives, ISA-L and zlib give the same picture, and the
bounds of the hostile-input rules hold with the fast inflate."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
import pytest
from conftest import VOLSEGSYNC, age_all, assert_clean_stderr, invoke, make_affine

pytest.importorskip("PIL", reason="pictures need Pillow (the 'view' extra)")

from volsegsync import decode
from volsegsync.view.align import align
from volsegsync.view.load import load_segmentation, load_volume
from volsegsync.view.metrics import label_counts, label_profiles
from volsegsync.view.render import (
    auto_window,
    label_legend,
    parse_slice,
    profile_centre,
    render,
    segmentation_painter,
    volume_voxel,
)
from volsegsync.view.report import PNG_END
from volsegsync.view.stream import draw_pair

NAME = "C01-LowerBack_FSE_T2w_V001-D22061998"


def reference_centre(labels: np.ndarray) -> tuple[float, float, float] | None:
    """Per axis, the labelled slice nearest the labelled voxels' centroid (the first on a
    tie), from their coordinates in integers: an oracle independent of the slab pass."""
    where = np.argwhere(labels != 0)
    if not len(where):
        return None
    total, sums = len(where), where.sum(axis=0)
    centre = []
    for axis in range(3):
        filled = np.unique(where[:, axis])
        centre.append(float(filled[np.argmin(np.abs(filled * total - sums[axis]))]))
    return centre[0], centre[1], centre[2]


def whole_volume_picture(
    root: Path, vol: str, seg_rel: str, slices: str | None = None, pixels: Any = None
) -> np.ndarray:
    """The picture drawn the old way: both files read whole, centre and window from them."""
    volume = load_volume(root, vol)
    seg = load_segmentation(root, seg_rel)
    alignment = align(volume, seg)
    centre = list(volume_voxel(reference_centre(seg.data), volume, alignment))
    for axis, given in enumerate(parse_slice(slices, volume.data.shape)):
        if given is not None:
            centre[axis] = given
    counts = label_counts(seg.data)
    kwargs = {"pixels": pixels, "captions": False} if pixels else {}
    figure = render(
        volume,
        segmentation_painter(seg, alignment),
        centre,
        auto_window(volume),
        f"{seg_rel}\non {vol}: {alignment.note}" if not pixels else "",
        label_legend(seg, sorted(counts)) if not pixels else (),
        **kwargs,
    )
    return np.asarray(figure.picture)


def streamed_picture(
    root: Path, vol: str, seg_rel: str, slices: str | None = None, pixels: Any = None
) -> np.ndarray:
    drawn = draw_pair(root, vol, seg_rel, slices=slices, pixels=pixels, captions=not pixels)
    return np.asarray(drawn.figure.picture)


def noisy(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.indices(shape[:3]).sum(axis=0).astype(np.int16) * 7
    base = base.reshape(shape[:3] + (1,) * (len(shape) - 3))
    return (base + rng.integers(-300, 300, size=shape)).astype(np.int16)


def blob_seg(shape: tuple[int, int, int], at: tuple[int, int, int]) -> np.ndarray:
    seg = np.zeros(shape, dtype=np.uint8)
    x, y, z = at
    seg[x - 6 : x + 6, y - 5 : y + 4, z - 3 : z + 4] = 1
    seg[x - 2 : x + 3, y - 2 : y + 2, z - 1 : z + 2] = 2
    return seg


def lps_seg_nrrd(path: Path, ras: np.ndarray, affine: np.ndarray, **fields: Any) -> None:
    """A 3D Slicer style .seg.nrrd in LPS of the label map ``ras`` on ``affine``'s grid,
    stored with its first two axes reversed (voxel order LPS)."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    n = np.array(ras.shape, dtype=float)
    reverse = np.eye(4)
    reverse[0, 0], reverse[1, 1], reverse[0, 3], reverse[1, 3] = -1, -1, n[0] - 1, n[1] - 1
    lps = flip @ affine @ reverse  # LPS world of the reversed voxels
    header: dict[str, Any] = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,
        "space origin": lps[:3, 3],
        "kinds": ["domain"] * 3,
        "encoding": "gzip",
        "Segment0_Name": "liver",
        "Segment0_LabelValue": "1",
        "Segment0_Color": "1 0 0",
        "Segment1_Name": "spleen",
        "Segment1_LabelValue": "2",
        "Segment1_Color": "0 0 1",
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    nrrd.write(str(path), np.ascontiguousarray(ras[::-1, ::-1, :]), header)


def write_nifti(root: Path, data: np.ndarray, affine: np.ndarray, **scale: float) -> str:
    rel = f"volumes/{NAME}.nii.gz"
    (root / "volumes").mkdir(parents=True, exist_ok=True)
    image: Any = nib.Nifti1Image(data, affine)
    if scale:
        image.header.set_slope_inter(scale["slope"], scale["inter"])
    nib.save(image, str(root / rel))
    return rel


SEG = f"segmentations/{NAME}-v1.seg.nrrd"


def test_ras_nifti_with_lps_seg_and_window_subsample(ds_root: Path) -> None:
    """3.6M voxels: the window subsample takes every second voxel; scaled intensities."""
    shape = (160, 160, 140)
    affine = make_affine((0.8, 0.8, 1.5), (-60.0, -70.0, -100.0))
    vol = write_nifti(ds_root, noisy(shape), affine, slope=2.0, inter=-1000.0)
    lps_seg_nrrd(ds_root / SEG, blob_seg(shape, (70, 90, 60)), affine)
    assert decode.DEFAULT_MAX_BYTES > 0
    old = whole_volume_picture(ds_root, vol, SEG)
    new = streamed_picture(ds_root, vol, SEG)
    assert old.shape == new.shape and np.array_equal(old, new)
    slices = "10,-,139"
    assert np.array_equal(
        whole_volume_picture(ds_root, vol, SEG, slices), streamed_picture(ds_root, vol, SEG, slices)
    )


@pytest.fixture(params=["inline", "threaded"])
def read_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A small volume is read in the calling thread; a large one by a thread (here
    forced for a small one): both give the same picture."""
    from volsegsync.view import stream

    if request.param == "threaded":
        monkeypatch.setattr(stream, "INLINE_BYTES", -1)
    return str(request.param)


@pytest.mark.usefixtures("read_mode")
def test_oblique_volume_resampled_seg(ds_root: Path) -> None:
    shape = (40, 36, 30)
    angle = np.deg2rad(20)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.2, 1.0, 2.0])
    affine[:3, 3] = (-20.0, -15.0, -30.0)
    vol = write_nifti(ds_root, noisy(shape), affine)
    lps_seg_nrrd(ds_root / SEG, blob_seg((30, 30, 20), (15, 14, 10)), make_affine((1, 1, 2.5)))
    drawn = draw_pair(ds_root, vol, SEG)
    assert drawn.alignment.kind == "resampled"
    assert np.array_equal(whole_volume_picture(ds_root, vol, SEG), np.asarray(drawn.figure.picture))


@pytest.mark.usefixtures("read_mode")
def test_4d_volume_reads_only_its_first_volume(ds_root: Path) -> None:
    shape = (30, 28, 20, 3)
    affine = make_affine((1, 1, 2))
    data = noisy(shape)
    vol = write_nifti(ds_root, data, affine)
    lps_seg_nrrd(ds_root / SEG, blob_seg(shape[:3], (12, 14, 9)), affine)
    assert np.array_equal(
        whole_volume_picture(ds_root, vol, SEG), streamed_picture(ds_root, vol, SEG)
    )
    # damage the stream past the first volume: the picture never reads that far
    raw = gzip.decompress((ds_root / vol).read_bytes())
    cut = len(raw) - data[..., 1:].nbytes // 2
    (ds_root / vol).write_bytes(gzip.compress(raw[:cut]) + b"\x1f\x8b garbage")
    assert streamed_picture(ds_root, vol, SEG).size > 0


@pytest.mark.usefixtures("read_mode")
def test_nrrd_vector_volume_big_endian_and_layered_slicer_seg(ds_root: Path) -> None:
    """A raw big-endian NRRD volume with a leading component axis (the first is drawn),
    a 4D layered Slicer segmentation (layer axis first)."""
    shape = (24, 22, 16)
    vol = f"volumes/{NAME}.nrrd"
    (ds_root / "volumes").mkdir(parents=True)
    data = noisy((2, *shape))
    nrrd.write(
        str(ds_root / vol),
        data.astype(">i2"),
        {
            "space": "right-anterior-superior",
            "space directions": [[np.nan] * 3, [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.5]],
            "space origin": np.zeros(3),
            "kinds": ["vector", "domain", "domain", "domain"],
            "encoding": "raw",
            "endian": "big",
        },
    )
    layers = np.zeros((2, *shape), dtype=np.uint8)
    layers[0, 4:12, 5:14, 6:10] = 1
    layers[1, 9:18, 8:16, 7:12] = 1
    header: dict[str, Any] = {
        "space": "right-anterior-superior",
        "space directions": [[np.nan] * 3, [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.5]],
        "space origin": np.zeros(3),
        "kinds": ["list", "domain", "domain", "domain"],
        "encoding": "gzip",
    }
    for n, name in enumerate(("bone", "tumour")):
        header.update({f"Segment{n}_Name": name, f"Segment{n}_LabelValue": "1"})
        header[f"Segment{n}_Layer"] = str(n)
    (ds_root / "segmentations").mkdir()
    nrrd.write(str(ds_root / SEG), layers, header)
    drawn = draw_pair(ds_root, vol, SEG)
    assert drawn.counts == {1: int(layers[0].sum() - (layers[0] & layers[1]).sum()), 2: 360}
    assert np.array_equal(whole_volume_picture(ds_root, vol, SEG), np.asarray(drawn.figure.picture))
    thumbs = (96, 96)
    assert np.array_equal(
        whole_volume_picture(ds_root, vol, SEG, pixels=thumbs),
        streamed_picture(ds_root, vol, SEG, pixels=thumbs),
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.bool_])
def test_slab_pass_counts_and_centre(dtype: Any) -> None:
    rng = np.random.default_rng(7)
    labels = np.zeros((37, 23, 300), dtype=dtype, order="F")
    labels[3:30, 5:9, 40:45] = 1
    labels[10:12, 1:20, 200:290] = 1 if dtype is np.bool_ else 3
    labels[rng.integers(0, 37, 50), rng.integers(0, 23, 50), rng.integers(0, 300, 50)] = 1
    counts, profiles = label_profiles(labels)
    assert counts == label_counts(labels)
    assert profile_centre(profiles) == reference_centre(labels)
    empty = np.zeros((4, 5, 6), dtype=dtype)
    assert label_profiles(empty)[0] == {} and profile_centre(label_profiles(empty)[1]) is None


# --------------------------------------------------------------------------- isal / zlib


@pytest.fixture
def shown_pair(ds_root: Path) -> Path:
    shape = (48, 40, 30)
    affine = make_affine((1, 1, 2))
    write_nifti(ds_root, noisy(shape), affine)
    lps_seg_nrrd(
        ds_root / f"segmentations/{NAME}-v1.seg.nrrd", blob_seg(shape, (20, 20, 15)), affine
    )
    return ds_root


def _show_process(root: Path, out: Path, block_isal: bool) -> dict[str, Any]:
    block = "sys.modules['isal'] = None; " if block_isal else ""
    code = (
        f"import sys; {block}from volsegsync.cli import main; "
        "from volsegsync import decode; "
        "assert (decode._isal_zlib is None) == " + str(block_isal) + "; main()"
    )
    args = ["-C", str(root), "show", NAME, "-o", str(out), "--format", "json"]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_zlib_fallback_draws_the_same_picture(shown_pair: Path, tmp_path: Path) -> None:
    pytest.importorskip("isal", reason="compares ISA-L's inflate with zlib's")
    with_isal = _show_process(shown_pair, tmp_path / "isal.png", block_isal=False)
    with_zlib = _show_process(shown_pair, tmp_path / "zlib.png", block_isal=True)
    assert with_isal["labels"] == with_zlib["labels"] and with_isal["window"] == with_zlib["window"]
    assert (tmp_path / "isal.png").read_bytes() == (tmp_path / "zlib.png").read_bytes()


@pytest.mark.parametrize("fast", [False, True])
def test_gzip_damage_is_named_with_either_inflate(tmp_path: Path, fast: bool) -> None:
    good = gzip.compress(np.arange(50_000, dtype=np.int32).tobytes())
    cases = {
        "crc": (good[:-8] + bytes([good[-8] ^ 1]) + good[-7:], "CRC"),
        "magic": (b"\x1f\x8c" + good[2:], "not a gzip stream"),
        "truncated": (good[: len(good) // 2], "truncated gzip stream"),
        "garbage": (good + b"junk", "4 bytes of trailing garbage"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / f"{name}.gz"
        path.write_bytes(data)
        with path.open("rb") as fh, pytest.raises(decode.Bad) as caught:
            b"".join(decode.gunzip(fh, fast))
        assert reason in caught.value.reason, (name, caught.value.reason)
    path = tmp_path / "two.gz"
    path.write_bytes(good + gzip.compress(b"more") + b"\0\0")
    with path.open("rb") as fh:
        assert len(b"".join(decode.gunzip(fh, fast))) == 200_004


def test_read_ahead_is_bounded_passes_errors_and_stops_when_closed() -> None:
    made: list[int] = []

    def pieces() -> Any:
        for i in range(1000):
            made.append(i)
            yield b"x" * 1000

    reader = decode.ahead(pieces(), budget=10_000)
    assert next(reader) == b"x" * 1000
    time.sleep(0.3)  # the thread runs ahead as far as it may
    assert 2 <= len(made) <= 12  # the budget's ten pieces, the one read, one in hand
    reader.close()  # joins the thread
    stopped = len(made)
    time.sleep(0.1)
    assert len(made) == stopped < 1000

    def failing() -> Any:
        yield b"a"
        yield b"b"
        raise decode.Bad("corrupt", "damaged")

    got: list[bytes] = []
    with pytest.raises(decode.Bad, match="damaged"):
        for piece in decode.ahead(failing()):
            got.append(piece)
    assert got == [b"a", b"b"]


# --------------------------------------------------------------------------- hostile input


def _bomb_members(first: bytes, members: int) -> bytes:
    """``first`` then ``members`` gzip members of 64 MiB of zeros each (64 KiB apiece)."""
    zeros = gzip.compress(b"\0" * (64 << 20), 9)
    return gzip.compress(first) + zeros * members


def test_volume_gzip_bomb_stops_at_the_declared_size(shown_pair: Path, tmp_path: Path) -> None:
    """4 GiB of zeros after the declared voxels, under a 1.5 GB address-space limit: the
    picture reads the declared size and stops."""
    volume = shown_pair / "volumes" / f"{NAME}.nii.gz"
    raw = gzip.decompress(volume.read_bytes())
    volume.write_bytes(_bomb_members(raw, 64))
    out = tmp_path / "bomb.png"
    result = subprocess.run(
        ["bash", "-c", f"ulimit -v 1500000; exec '{VOLSEGSYNC}' show {NAME} -o '{out}'"],
        cwd=shown_pair,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert_clean_stderr(result.stderr)
    assert out.stat().st_size > 1000


def test_segmentation_gzip_bomb_is_one_line(shown_pair: Path) -> None:
    seg = shown_pair / "segmentations" / f"{NAME}-v1.seg.nrrd"
    text = seg.read_bytes()
    header, _, body = text.partition(b"\n\n")
    seg.write_bytes(header + b"\n\n" + _bomb_members(gzip.decompress(body), 64))
    result = subprocess.run(
        ["bash", "-c", f"ulimit -v 1500000; exec '{VOLSEGSYNC}' show {NAME} -o x.png"],
        cwd=shown_pair,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "holds more than" in lines[0] and "v1.seg.nrrd" in lines[0], lines
    assert_clean_stderr(result.stderr)


def _report_imports(root: Path, out: Path, *more: str) -> tuple[dict[str, Any], str]:
    """The report's JSON and which heavy modules its process imported."""
    code = (
        "import sys; from volsegsync.cli import main\n"
        "try:\n    main()\nfinally:\n"
        "    print(sorted(m for m in ('numpy', 'numpy.ma', 'PIL.Image', 'nibabel', 'nrrd')"
        " if m in sys.modules), file=sys.stderr)"
    )
    args = ["-C", str(root), "report", "-o", str(out), "--format", "json", *more]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, timeout=120, check=False
    )
    return json.loads(result.stdout), result.stderr.decode().strip()


def _relabel(root: Path) -> None:
    """Change the pair's segmentation (label 2 becomes 1) and age the files."""
    seg = root / "segmentations" / f"{NAME}-v1.seg.nrrd"
    data, header = nrrd.read(str(seg))
    data[data == 2] = 1
    nrrd.write(str(seg), data, header)
    age_all(root)


def test_report_rerun_reads_its_memo(shown_pair: Path, tmp_path: Path) -> None:
    """A re-run after no change draws nothing and imports neither numpy nor Pillow; one
    that draws in its own process (``-j 1``; a Slicer NRRD on a NIfTI placed by its
    sform) imports numpy alone: not nibabel, pynrrd, numpy.ma or Pillow (a thumbnail
    has no text to draw)."""
    out = tmp_path / "r"
    age_all(shown_pair)  # recent files are looked at again (racy stats): not these
    doc, imported = _report_imports(shown_pair, out, "-j", "1")
    assert doc["thumbnails"] == {"drawn": 1, "cached": 0, "failed": 0}
    assert imported == "['numpy']"
    doc, imported = _report_imports(shown_pair, out)
    assert doc["thumbnails"] == {"drawn": 0, "cached": 1, "failed": 0}
    assert imported == "[]"
    assert (out / "index.html").read_text().count("<img class='thumb'") == 1


def _page_and_thumbnails(out: Path) -> tuple[str, dict[str, bytes]]:
    """The page and the thumbnails it shows."""
    text = (out / "index.html").read_text()
    names = sorted(p.name for p in (out / "thumbs").iterdir() if f"thumbs/{p.name}" in text)
    assert names
    return text, {n: (out / "thumbs" / n).read_bytes() for n in names}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_report_rerun_equals_a_cold_run(shown_pair: Path, tmp_path: Path, jobs: str) -> None:
    """The thumbnail a re-run draws after a change (in this process with one worker,
    in a forked child with two) is the cold run's, bit for bit, and so is the page."""
    age_all(shown_pair)
    args = ["-C", str(shown_pair), "report", "--format", "json", "-j", jobs]
    first = invoke([*args, "-o", str(tmp_path / "rerun")])
    assert json.loads(first.output)["thumbnails"]["drawn"] == 1
    before = _page_and_thumbnails(tmp_path / "rerun")[1]
    _relabel(shown_pair)
    again = invoke([*args, "-o", str(tmp_path / "rerun")])
    assert json.loads(again.output)["thumbnails"] == {"drawn": 1, "cached": 0, "failed": 0}
    shutil.rmtree(shown_pair / ".volsegsync" / "state")
    cold = invoke([*args, "-o", str(tmp_path / "cold")])
    assert json.loads(cold.output)["thumbnails"] == {"drawn": 1, "cached": 0, "failed": 0}
    text, thumbs = _page_and_thumbnails(tmp_path / "cold")
    rerun_text, rerun_thumbs = _page_and_thumbnails(tmp_path / "rerun")
    assert rerun_text == text
    (name,) = thumbs
    assert name not in before and rerun_thumbs[name] == thumbs[name]
    assert PNG_END in thumbs[name][-12:]


def test_a_torn_cached_thumbnail_is_drawn_again(shown_pair: Path, tmp_path: Path) -> None:
    """Thumbnails are cached without fsync: one that a power cut left cut short (or
    empty) is not copied into a report but drawn again."""
    age_all(shown_pair)
    args = ["-C", str(shown_pair), "report", "--format", "json"]
    assert json.loads(invoke([*args, "-o", str(tmp_path / "a")]).output)["thumbnails"]["drawn"]
    (cached,) = (shown_pair / ".volsegsync" / "state" / "thumbs").iterdir()
    whole = cached.read_bytes()
    for torn in (whole[: len(whole) // 2], b""):
        cached.write_bytes(torn)
        out = tmp_path / f"b{len(torn)}"
        doc = json.loads(invoke([*args, "-o", str(out)]).output)
        assert doc["thumbnails"] == {"drawn": 1, "cached": 0, "failed": 0}
        assert (out / "thumbs" / cached.name).read_bytes() == whole == cached.read_bytes()
    # a whole cached thumbnail is copied, not drawn
    doc = json.loads(invoke([*args, "-o", str(tmp_path / "c")]).output)
    assert doc["thumbnails"] == {"drawn": 0, "cached": 1, "failed": 0}
    assert (tmp_path / "c" / "thumbs" / cached.name).read_bytes() == whole


def test_report_memo_is_not_trusted_after_the_pipeline_starts_afresh(
    shown_pair: Path, tmp_path: Path
) -> None:
    """The pipeline's generations restart when its memo is made anew: the report's own
    memo must not take the old digests for the new files."""
    out = tmp_path / "r"
    args = ["-C", str(shown_pair), "report", "-o", str(out), "--format", "json"]
    assert json.loads(invoke(args).output)["thumbnails"]["drawn"] == 1
    shutil.rmtree(shown_pair / ".volsegsync" / "state" / "pipeline")
    seg = shown_pair / "segmentations" / f"{NAME}-v1.seg.nrrd"
    data, header = nrrd.read(str(seg))
    data[data == 2] = 1
    nrrd.write(str(seg), data, header)
    assert json.loads(invoke(args).output)["thumbnails"] == {"drawn": 1, "cached": 0, "failed": 0}


def _layout_variants() -> dict[str, bytes]:
    """NIfTI-1 headers, plain and odd, as bytes (with 4 bytes of extension flags)."""
    out = {}
    for name, shape, dtype, order, fields in [
        ("int16", (4, 5, 6), "int16", "<", {}),
        ("uint8 2D", (4, 5), "uint8", "<", {}),
        ("float32 4D scaled", (4, 5, 6, 2), "float32", "<", {"scl_slope": 2.5, "scl_inter": -3}),
        ("big-endian scaled", (4, 5, 6), ">i2", ">", {"scl_slope": 0.5, "scl_inter": 7}),
        ("slope zero", (4, 5, 6), "int16", "<", {"scl_slope": 0.0, "scl_inter": 5}),
        ("slope nan", (4, 5, 6), "int16", "<", {"scl_slope": np.nan, "scl_inter": 5}),
        ("inter inf", (4, 5, 6), "int16", "<", {"scl_slope": 1.0, "scl_inter": np.inf}),
        ("offset 0", (4, 5, 6), "int16", "<", {"vox_offset": 0}),
        ("offset too low", (4, 5, 6), "int16", "<", {"vox_offset": 300}),
        ("offset fraction", (4, 5, 6), "int16", "<", {"vox_offset": 360.7}),
        ("offset inf", (4, 5, 6), "int16", "<", {"vox_offset": np.inf}),
        ("complex", (4, 5, 6), "complex64", "<", {}),
        ("rgb", (4, 5, 6), "int16", "<", {"datatype": 128, "bitpix": 24}),
        ("ico7", (27307, 1, 6), "float32", "<", {}),
        ("no dimensions", (4, 5, 6), "int16", "<", {"dim": [0, 4, 5, 6, 1, 1, 1, 1]}),
        ("8 dimensions", (4, 5, 6), "int16", "<", {"dim": [8, 4, 5, 6, 1, 1, 1, 1]}),
        ("negative size", (4, 5, 6), "int16", "<", {"dim": [3, 4, -5, 6, 1, 1, 1, 1]}),
        ("unknown datatype", (4, 5, 6), "int16", "<", {"datatype": 9999}),
    ]:
        header = nib.Nifti1Header(endianness=order)  # type: ignore[no-untyped-call]
        header.set_data_shape(shape)
        header.set_data_dtype(dtype)
        header["vox_offset"] = 352
        for key, value in fields.items():
            header[key] = value
        out[name] = header.binaryblock + b"\0" * 4
    return out


@pytest.mark.parametrize("name", list(_layout_variants()))
def test_plain_nifti_layout_equals_nibabel(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """A plain NIfTI-1 header is laid out without nibabel exactly as nibabel lays it out
    (shape, dtype with byte order, data offset, slope and intercept); any other is left
    to nibabel, which gives the same result or the same one-line problem as before."""
    block = _layout_variants()[name]

    def outcome() -> Any:
        try:
            scale, offset, shape, dtype = decode._nifti_layout(block)
        except decode.Bad as e:
            return e.kind, e.reason
        return scale, offset, shape, dtype.str

    taken = decode._plain_nifti1_layout(block) is not None
    plain = outcome()
    monkeypatch.setattr(decode, "_plain_nifti1_layout", lambda raw: None)
    assert plain == outcome()
    plain_kinds = {"int16", "uint8 2D", "float32 4D scaled", "big-endian scaled"}
    plain_kinds |= {"slope zero", "slope nan", "offset fraction"}
    assert taken == (name in plain_kinds), taken


def test_percentiles_equal_numpys_to_the_bit() -> None:
    """The window's percentiles, taken without ``np.percentile`` (whose ``np.unique``
    imports numpy.ma), are numpy's to the last bit, for integers and floats."""
    from volsegsync.view.render import percentiles

    rng = np.random.default_rng(0)
    for trial in range(400):
        n = int(rng.integers(1, 2000))
        values = [
            rng.integers(-32768, 32767, n, dtype=np.int16),
            rng.integers(0, 255, n, dtype=np.uint8),
            rng.normal(0, 1e3, n),
            rng.integers(-(2**40), 2**40, n, dtype=np.int64),
        ][trial % 4]
        qs = [(1.0, 99.0), (0.0, 100.0), (50.0, 37.3), (12.5, 87.5)][trial // 4 % 4]
        expected = np.percentile(np.asarray(values, dtype=np.float64), qs).tolist()
        assert percentiles(values, qs) == expected, (n, values.dtype, qs)


def test_png_without_pillow_decodes_to_the_same_pixels() -> None:
    """A picture without captions is written as PNG without Pillow: Pillow reads back
    the very pixels, for any size (one row, one column, random and flat content)."""
    import io

    from PIL import Image as PILImage

    from volsegsync.view.render import png_bytes

    rng = np.random.default_rng(3)
    for height, width in [(1, 1), (1, 7), (9, 1), (97, 208), (31, 64)]:
        for rgb in (
            rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            np.full((height, width, 3), 16, dtype=np.uint8),
        ):
            decoded = PILImage.open(io.BytesIO(png_bytes(rgb)))
            assert decoded.mode == "RGB" and decoded.size == (width, height)
            assert np.array_equal(np.asarray(decoded), rgb)


def test_whole_voxel_sampling_equals_the_float_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapped alignment (signed axis permutation, whole-voxel shift) samples the
    segmentation by integer indices: the same values as the floating-point mapping,
    with 0 outside the segmentation (partly outside: the float mapping decides)."""
    import itertools

    from volsegsync.view import align as align_mod

    rng = np.random.default_rng(5)
    seg = rng.integers(0, 6, (7, 5, 4), dtype=np.uint8)
    grid = np.stack(np.meshgrid(np.arange(3), np.arange(3), np.arange(2), indexing="ij"))
    cases = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            matrix = np.eye(4)
            matrix[:3, :3] = 0
            for row, col in enumerate(perm):
                matrix[row, col] = signs[row]
            matrix[:3, 3] = rng.integers(-1, 5, 3)
            cases.append(matrix)
    fast = [align_mod.sample(seg, m, grid) for m in cases]
    taken = sum(align_mod._whole_voxel_map(m, grid, seg.shape) is not None for m in cases)
    monkeypatch.setattr(align_mod, "_whole_voxel_map", lambda *a: None)
    for m, got in zip(cases, fast, strict=True):
        expected = align_mod.sample(seg, m, grid)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), m
    assert 0 < taken < len(cases)
    oblique = np.eye(4)
    oblique[0, 1] = 0.5
    assert align_mod._whole_voxel_map(oblique, grid, seg.shape) is None


@pytest.mark.parametrize("who", ["the child", "its second child"])
def test_a_drawing_child_that_dies_leaves_the_drawing_to_its_parent(
    shown_pair: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, who: str
) -> None:
    """The forked child that draws a re-run's thumbnails, or the second child it forks
    for half of them, ends without answering (as when killed): its parent draws what
    it did not, and the pictures are those of a run in one process."""
    import os

    import volsegsync.ops.report as report_ops
    from volsegsync.view.report import draw_thumbnail

    for n in range(2, 5):  # four pairs: the drawing is split between two children
        name = NAME.replace("C01-", f"C0{n}-").replace("V001", f"V00{n}")
        shutil.copy(
            shown_pair / "volumes" / f"{NAME}.nii.gz", shown_pair / "volumes" / f"{name}.nii.gz"
        )
        seg = shown_pair / "segmentations" / f"{name}-v1.seg.nrrd"
        shutil.copy(shown_pair / "segmentations" / f"{NAME}-v1.seg.nrrd", seg)
        data, header = nrrd.read(str(seg))
        data[n, n, n] = 1  # four different pictures
        nrrd.write(str(seg), data, header)
    age_all(shown_pair)
    report = os.getpid()

    def dies(task: Any) -> str | None:
        if os.getpid() != report and (who == "the child" or os.getppid() != report):
            (tmp_path / f"died-{os.getpid()}").touch()
            os._exit(3)
        return draw_thumbnail(task)

    args = ["-C", str(shown_pair), "report", "--format", "json"]
    with monkeypatch.context() as patched:
        patched.setattr(report_ops, "draw_thumbnail", dies)
        doc = json.loads(invoke([*args, "-j", "2", "-o", str(tmp_path / "r")]).output)
    assert doc["thumbnails"] == {"drawn": 4, "cached": 0, "failed": 0}
    assert list(tmp_path.glob("died-*")), "no child drew (or died)"
    shutil.rmtree(shown_pair / ".volsegsync" / "state")
    alone = json.loads(invoke([*args, "-j", "1", "-o", str(tmp_path / "one")]).output)
    assert alone["thumbnails"] == {"drawn": 4, "cached": 0, "failed": 0}
    assert _page_and_thumbnails(tmp_path / "r") == _page_and_thumbnails(tmp_path / "one")


_FORK_PROBE = """
import json, os, sys, traceback
report = os.getpid()
forks = []  # per fork of the report's process: whether the snapshot was under way


def before():
    if os.getpid() == report:
        forks.append(any(f.name == "take_snapshot" for f in traceback.extract_stack()))


os.register_at_fork(before=before)
if os.environ.get("PRELOAD_DIES"):  # the drawing child dies while it imports numpy
    import volsegsync.ops.report as report_ops

    real = report_ops._preload

    def dies():
        if os.getpid() != report:
            open(os.environ["PRELOAD_DIES"], "w").close()
            os._exit(3)
        real()

    report_ops._preload = dies
from volsegsync.cli import main

try:
    main()
finally:
    try:
        os.waitpid(-1, os.WNOHANG)
        left = True
    except ChildProcessError:
        left = False
    print(json.dumps({"forks": forks, "children_left": left, "numpy": "numpy" in sys.modules}),
          file=sys.stderr)
"""


def _report_forks(
    root: Path, out: Path, *more: str, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's JSON, and its process's forks (whether each happened while the
    snapshot ran), children left unreaped at its end, and whether it imported numpy."""
    import os

    args = ["-C", str(root), "report", "-o", str(out), "--format", "json", "-j", "2", *more]
    result = subprocess.run(
        [sys.executable, "-c", _FORK_PROBE, *args],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout), json.loads(result.stderr.decode().strip().splitlines()[-1])


def test_the_drawing_child_starts_during_the_walk_only_when_files_changed(
    shown_pair: Path, tmp_path: Path
) -> None:
    """The child that draws a re-run's thumbnails is forked while the snapshot runs
    (its numpy import overlaps the hashing, pairing and verify) when the walk finds
    files changed since the last report; an unchanged re-run forks nothing and imports
    no numpy (the Slicer header of a changed file is read with it: verify's, not the
    drawing's); a file touched without a change starts the child, which ends unused.
    Every run leaves no child behind, and the re-run's page and thumbnail are a cold
    run's, byte for byte."""
    import os

    out = tmp_path / "r"
    age_all(shown_pair)
    doc, probe = _report_forks(shown_pair, out)  # first run: no memo, the child after
    assert doc["thumbnails"] == {"drawn": 1, "cached": 0, "failed": 0}
    assert probe["forks"] == [False] and not probe["children_left"]
    doc, probe = _report_forks(shown_pair, out)
    assert doc["thumbnails"] == {"drawn": 0, "cached": 1, "failed": 0}
    assert probe == {"forks": [], "children_left": False, "numpy": False}
    _relabel(shown_pair)
    doc, probe = _report_forks(shown_pair, out)
    assert doc["thumbnails"] == {"drawn": 1, "cached": 0, "failed": 0}
    assert probe["forks"] == [True] and not probe["children_left"]
    seg = shown_pair / "segmentations" / f"{NAME}-v1.seg.nrrd"
    os.utime(seg, ns=(seg.stat().st_atime_ns, seg.stat().st_mtime_ns - 10**9))
    doc, probe = _report_forks(shown_pair, out)  # touched: nothing to draw after all
    assert doc["thumbnails"] == {"drawn": 0, "cached": 1, "failed": 0}
    assert probe["forks"] == [True] and not probe["children_left"]
    shutil.rmtree(shown_pair / ".volsegsync" / "state")
    doc, probe = _report_forks(shown_pair, tmp_path / "cold")
    assert doc["thumbnails"] == {"drawn": 1, "cached": 0, "failed": 0}
    assert _page_and_thumbnails(out) == _page_and_thumbnails(tmp_path / "cold")


def test_an_early_drawing_child_that_dies_leaves_the_drawing_to_its_parent(
    shown_pair: Path, tmp_path: Path
) -> None:
    """The child started during the walk dies while it imports numpy (before or after
    its tasks were sent): the report's process draws the thumbnail itself, the same
    picture as a cold run's, and reaps the child."""
    out = tmp_path / "r"
    age_all(shown_pair)
    _report_forks(shown_pair, out)
    _relabel(shown_pair)
    died = tmp_path / "died"
    doc, probe = _report_forks(shown_pair, out, env={"PRELOAD_DIES": str(died)})
    assert died.exists(), "the child did not start"
    assert doc["thumbnails"] == {"drawn": 1, "cached": 0, "failed": 0}
    assert probe["forks"] == [True] and not probe["children_left"]
    shutil.rmtree(shown_pair / ".volsegsync" / "state")
    _report_forks(shown_pair, tmp_path / "cold")
    assert _page_and_thumbnails(out) == _page_and_thumbnails(tmp_path / "cold")
