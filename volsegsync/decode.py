"""Decoding image data for the content pass, streamed and bounded.

:func:`open_image` reads an image's header and returns an :class:`Image` whose
``chunks`` yield the voxel values in file order (NIfTI and NRRD both store the
first axis fastest), a few MiB at a time. Memory is bounded by the chunk size,
never by what a stream expands to: decompression stops at the size the header
declares plus :data:`MARGIN` (more data is itself an error), and a header that
declares more than ``max_bytes`` is refused before anything is decoded.

Every stream is checked completely: a gzip stream to its end (CRC, length,
trailing bytes), the decoded size against the header's, exactly. Detached NRRD
data is read only from a regular file in the header's own folder
(:func:`volsegsync.headers.check_data_file`).
"""

from __future__ import annotations

import bz2
import io
import math
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from volsegsync.config import DEFAULT_MAX_IMAGE_BYTES
from volsegsync.fsutil import open_in_dataset, open_regular
from volsegsync.headers import (
    NIFTI_MAX_DIMENSION,
    HeaderProblem,
    check_data_file,
    detached_data_name,
    nrrd_type_code,
    plain_nifti1,
    read_nrrd_header,
)
from volsegsync.magic import (
    NIFTI1_SIZE,
    NIFTI2_SIZE,
    NIFTI_BAD_REASON,
    nifti_header_size,
    nifti_magic_problem,
)

_isal_zlib: Any
try:  # ISA-L's inflate, 2-3x zlib's speed (the ``view`` extra); zlib when absent
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    _isal_zlib = None

DEFAULT_MAX_BYTES = DEFAULT_MAX_IMAGE_BYTES  # declared data larger is refused
MARGIN = 16 * 1024 * 1024  # decoded bytes past the declared size still counted exactly
_READ_CHUNK = 1 << 20  # bytes read from disk at a time
_FAST_READ = 1 << 18  # ... by the fast inflate (its output stays in the CPU's caches)
_INFLATE_MAX = 1 << 22  # bytes inflated per call (bounds memory on a bomb)
_AHEAD = 64 << 20  # bytes a threaded inflate may hold ready for its reader
_GZIP_MAGIC = b"\x1f\x8b"
_SPATIAL_KINDS = {"domain", "space", "time"}

NDArray = np.ndarray[Any, Any]


class Bad(Exception):
    """The content is bad: ``kind`` is the problem category, ``reason`` one line."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class Image:
    """An image being decoded: its layout, and its values as a stream of chunks."""

    dtype: np.dtype[Any]  # of the values the chunks hold (after NIfTI scaling)
    shape: tuple[int, ...]
    segments: list[tuple[str, int, int]]  # Slicer segments: name, label value, layer
    layer_axis: int | None  # axis holding Slicer layers (4D files)
    chunks: Iterator[NDArray]  # flat, file order; raises Bad when the data is wrong
    detached: bool = False  # the values come from a separate data file
    scale: tuple[float, float] = (1.0, 0.0)  # slope, intercept not applied (scaled=False)


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def open_image(
    path: Path,
    root: Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    fast: bool = False,
    scaled: bool = True,
    threaded: bool = False,
) -> tuple[IO[bytes], Image]:
    """Open ``path`` (dataset-relative when ``root`` is given) and start decoding it.

    Returns the open file (close it when done) and the :class:`Image`; raises
    :class:`Bad` for content problems and OSError when the file cannot be read.
    ``fast``: inflate gzip with ISA-L when the ``isal`` package is installed (the
    same bounds and checks; a damaged stream's reason may be worded differently).
    ``scaled=False``: NIfTI values as stored, their slope and intercept in
    :attr:`Image.scale`. ``threaded``: a gzip NIfTI stream is inflated in a thread
    from the first byte on (see :func:`ahead`), while its header is parsed and
    the data consumed.
    """
    if root is None:
        root, rel = path.parent, path.name
        fh: IO[bytes] = open_regular(path)
    else:
        rel = path.as_posix()
        fh = open_in_dataset(root, rel)
    try:
        head = fh.read(8)
        fh.seek(0)
        if not head:
            raise Bad("corrupt", "empty file (0 bytes)")
        name = path.name.lower()
        nrrd_name = name.endswith((".nrrd", ".nhdr"))
        if nrrd_name or (not name.endswith((".nii", ".nii.gz")) and head[:4] == b"NRRD"):
            return fh, _open_nrrd(root, rel, fh, head, max_bytes, fast)
        return fh, _open_nifti(name, fh, head, max_bytes, fast, scaled, threaded)
    except BaseException:
        fh.close()
        raise


def _check_declared(
    count: int, dtype: np.dtype[Any], shape: tuple[int, ...], max_bytes: int
) -> int:
    declared = count * dtype.itemsize
    if declared > max_bytes:
        raise Bad(
            "too_large",
            f"header declares {declared} bytes of data ({describe(shape, dtype)}), more than "
            f"the limit of {max_bytes} bytes (raise [limits] max_image_bytes to check it)",
        )
    return declared


def describe(shape: tuple[int, ...], dtype: np.dtype[Any]) -> str:
    return f"{'x'.join(str(n) for n in shape) or 'scalar'} {dtype.name}"


# --------------------------------------------------------------------------- byte streams


def raw_chunks(fh: IO[bytes], size: int = _READ_CHUNK) -> Iterator[bytes]:
    while chunk := fh.read(size):
        yield chunk


def inflater(fast: bool = False) -> Any:
    """A gzip decompressor object: ISA-L's when ``fast`` and installed, else zlib's."""
    if fast and _isal_zlib is not None:
        return _isal_zlib.decompressobj(31)
    return zlib.decompressobj(31)


def _inflate_errors() -> tuple[type[Exception], ...]:
    if _isal_zlib is None:
        return (zlib.error,)
    isal_error: type[Exception] = _isal_zlib.error
    return (zlib.error, isal_error)


def gunzip(fh: IO[bytes], fast: bool = False) -> Iterator[bytes]:
    """Inflate a gzip stream (one or more members) to its end, checking CRC and length.

    Trailing zero padding is tolerated (as gzip does); anything else after the
    last member is trailing garbage. Lazy: a reader that stops early stops it.
    ``fast``: see :func:`inflater`.
    """
    start = fh.tell()
    errors = _inflate_errors()
    d: Any = inflater(fast)
    members, member_start, good_end, pos = 1, start, start, start
    for chunk in raw_chunks(fh, _FAST_READ if fast else _READ_CHUNK):
        pos += len(chunk)
        data = chunk
        while data:
            if d is None:  # between members
                data = data.lstrip(b"\0")
                if not data:
                    break
                d, members, member_start = inflater(fast), members + 1, pos - len(data)
            try:
                out = d.decompress(data, _INFLATE_MAX)
            except errors as e:
                raise _gzip_error(e, members, pos, good_end, fh) from None
            if out:
                yield out
            if d.eof:
                data, d = d.unused_data, None
                good_end = pos - len(data)
            else:
                data = d.unconsumed_tail
    if d is not None:
        yield from _finish_member(d, members, member_start, good_end, pos, fh)


def _finish_member(
    d: Any, members: int, member_start: int, good_end: int, pos: int, fh: IO[bytes]
) -> Iterator[bytes]:
    """All input was fed: drain what zlib still holds, then the member must be complete."""
    try:
        while out := d.decompress(d.unconsumed_tail, _INFLATE_MAX):
            yield out
        if tail := d.flush():
            yield tail
    except _inflate_errors() as e:
        raise _gzip_error(e, members, pos, good_end, fh) from None
    if d.eof:
        if d.unused_data.strip(b"\0"):
            raise _garbage(pos - good_end)
        return
    if members > 1 and not _starts_with_gzip_magic(fh, member_start):
        raise _garbage(pos - good_end)
    raise Bad("corrupt", f"truncated gzip stream (compressed data ends after {pos} bytes)")


def _starts_with_gzip_magic(fh: IO[bytes], offset: int) -> bool:
    fh.seek(offset)
    return fh.read(2) == _GZIP_MAGIC


def _garbage(n: int) -> Bad:
    unit = "byte" if n == 1 else "bytes"
    return Bad("corrupt", f"{n} {unit} of trailing garbage after the gzip stream")


# ISA-L's wording of zlib's messages (it does not tell a bad CRC from a bad length)
_ISAL_MESSAGES = {
    "Invalid gzip/zlib wrapper found": "incorrect header check",
    "Gzip/zlib wrapper specifies unsupported compress method": "unknown compression method",
    "Incorrect checksum found": "incorrect data check",
}


def _gzip_error(e: Exception, members: int, pos: int, good_end: int, fh: IO[bytes]) -> Bad:
    msg = str(e).split(": ", 1)[-1]
    if msg.startswith("Error -"):  # ISA-L: "Error -N Message"
        msg = msg.split(" ", 2)[-1]
    msg = _ISAL_MESSAGES.get(msg, msg)
    if members > 1:  # what follows a complete stream does not inflate: garbage
        fh.seek(0, io.SEEK_END)
        return _garbage(fh.tell() - good_end)
    if msg in ("incorrect header check", "unknown compression method"):
        return Bad("not_an_image", "not a gzip stream (bad magic)")
    if msg == "incorrect data check":
        return Bad("corrupt", "gzip CRC mismatch: the compressed data is damaged")
    if msg == "incorrect length check":
        return Bad("corrupt", "gzip length check failed: the compressed data is damaged")
    return Bad("corrupt", f"corrupt gzip stream ({msg}) within the first {pos} bytes")


def ahead(pieces: Iterator[bytes], budget: int = _AHEAD) -> Iterator[bytes]:
    """``pieces``, made in a thread while the reader works on the earlier ones; at
    most ``budget`` bytes wait (memory stays bounded whatever the stream holds).
    An error of ``pieces`` is raised to the reader after the pieces before it;
    closing the reader stops the thread."""
    ready: deque[bytes] = deque()
    cond = threading.Condition()
    state: dict[str, Any] = {"held": 0, "done": False, "error": None, "stop": False}

    def make() -> None:
        try:
            for piece in pieces:
                with cond:
                    while state["held"] >= budget and not state["stop"]:
                        cond.wait()
                    if state["stop"]:
                        return
                    ready.append(piece)
                    state["held"] += len(piece)
                    cond.notify_all()
        except BaseException as e:  # handed to the reader
            state["error"] = e
        finally:
            with cond:
                state["done"] = True
                cond.notify_all()

    thread = threading.Thread(target=make, daemon=True)
    thread.start()
    try:
        while True:
            with cond:
                while not ready and not state["done"]:
                    cond.wait()
                if not ready:
                    if state["error"] is not None:
                        raise state["error"]
                    return
                piece = ready.popleft()
                state["held"] -= len(piece)
                cond.notify_all()
            yield piece
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()
        thread.join()


def bunzip(fh: IO[bytes]) -> Iterator[bytes]:
    """Decompress a bzip2 stream (one or more streams), a bounded piece at a time."""
    d = bz2.BZ2Decompressor()
    for chunk in raw_chunks(fh):
        data = chunk
        while True:
            try:
                out = d.decompress(data, _INFLATE_MAX)
            except OSError as e:
                raise Bad("corrupt", f"corrupt bzip2 stream: {e}") from None
            if out:
                yield out
            if d.eof:
                rest = d.unused_data
                if not rest:
                    break
                d, data = bz2.BZ2Decompressor(), rest
            elif d.needs_input:
                break
            else:
                data = b""
    while not d.eof and not d.needs_input:  # input ended: drain what is buffered
        if out := d.decompress(b"", _INFLATE_MAX):
            yield out
    if not d.eof:
        raise Bad("corrupt", "truncated bzip2 stream")


class Counter:
    """Hands on the first ``declared`` bytes of a stream and counts the rest (up to
    :data:`MARGIN`): a stream holding more than that stops being read at once.
    ``known``: how many bytes the data holds, when the file's size tells (raw data);
    reading then stops at the declared size."""

    def __init__(self, declared: int, what: str, known: int | None = None) -> None:
        self.declared = declared
        self.what = what
        self.known = known
        self.total = 0

    def take(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            room = self.declared - self.total
            self.total += len(piece)
            if room > 0:
                yield piece if len(piece) <= room else piece[:room]
            if self.known is not None and self.total >= self.declared:
                return
            if self.total > self.declared + MARGIN:
                raise Bad(
                    "corrupt",
                    f"data holds more than {self.declared + MARGIN} bytes, header declares "
                    f"{self.declared} ({self.what})",
                )

    def check(self) -> None:
        holds = self.total if self.known is None else self.known
        if holds != self.declared:
            raise Bad(
                "corrupt",
                f"data holds {holds} bytes, header declares {self.declared} ({self.what})",
            )


def values(pieces: Iterator[bytes], dtype: np.dtype[Any], counter: Counter) -> Iterator[NDArray]:
    """The first ``counter.declared`` bytes of ``pieces`` as arrays of ``dtype``, then
    the size check."""
    if counter.known is not None:
        counter.check()  # the file's size tells already: fail before decoding
    size = dtype.itemsize
    rest = b""  # fewer than ``size`` bytes left over from the last piece
    for piece in counter.take(pieces):
        if rest:
            piece, rest = rest + piece, b""
        cut = len(piece) - len(piece) % size
        if cut:  # a view of the piece, no copy
            yield np.frombuffer(piece, dtype=dtype, count=cut // size)
        if cut < len(piece):
            rest = piece[cut:]
    counter.check()


# --------------------------------------------------------------------------- NIfTI


def _open_nifti(
    name: str,
    fh: IO[bytes],
    head: bytes,
    max_bytes: int,
    fast: bool = False,
    scaled: bool = True,
    threaded: bool = False,
) -> Image:
    is_gz = head.startswith(_GZIP_MAGIC)
    gz_name = name.endswith(".gz")
    if gz_name and not is_gz:
        raise Bad("not_an_image", "not a gzip stream (bad magic)")
    if is_gz and not gz_name:
        raise Bad("not_an_image", f"gzip-compressed data, but {name} does not end in .gz")
    stream = gunzip(fh, fast) if is_gz else raw_chunks(fh)
    if is_gz and threaded:
        stream = ahead(stream)
    try:
        buf = bytearray()
        for piece in stream:  # the header: at most NIFTI2_SIZE bytes are kept
            buf += piece
            if len(buf) >= NIFTI2_SIZE:
                break
        header_bytes = bytes(buf[:NIFTI2_SIZE])
        (slope, inter), offset, shape, dtype = _nifti_layout(header_bytes)
        count = math.prod(shape)
        declared = _check_declared(count, dtype, shape, max_bytes)
        if offset > max_bytes:
            raise Bad("corrupt", f"NIfTI data offset {offset} is beyond the size limit")
        known = None if is_gz else max(os.fstat(fh.fileno()).st_size - offset, 0)
        counter = Counter(declared, describe(shape, dtype), known)

        def data() -> Iterator[bytes]:
            skip = offset
            for piece in _chain(bytes(buf), stream):
                if skip >= len(piece):
                    skip -= len(piece)
                    continue
                yield piece[skip:] if skip else piece
                skip = 0

        chunks = values(data(), dtype, counter)
        if (slope is None or slope == 1.0) and (inter is None or inter == 0.0):
            return Image(dtype, shape, [], None, chunks)
        if not scaled:
            scale = (
                1.0 if slope is None or not np.isfinite(slope) else float(slope),
                0.0 if inter is None or not np.isfinite(inter) else float(inter),
            )
            return Image(dtype, shape, [], None, chunks, scale=scale)
        from nibabel.volumeutils import apply_read_scaling

        scaled_dtype = apply_read_scaling(np.zeros(1, dtype), slope, inter).dtype
        scaled_chunks = (apply_read_scaling(c, slope, inter) for c in chunks)
        return Image(scaled_dtype, shape, [], None, scaled_chunks)
    except BaseException:
        if isinstance(stream, Generator):
            stream.close()  # a threaded read-ahead stops now
        raise


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


Scale = tuple[float | None, float | None]  # NIfTI slope, intercept as nibabel gives them


def _nifti_layout(raw: bytes) -> tuple[Scale, int, tuple[int, ...], np.dtype[Any]]:
    """(slope, intercept), data offset, shape and dtype of a single-file NIfTI header."""
    if len(raw) < 4:
        raise Bad("not_an_image", f"not a NIfTI file (only {len(raw)} bytes)")
    size = nifti_header_size(raw)
    if size is None:
        raise Bad("not_an_image", NIFTI_BAD_REASON)
    if len(raw) < size:
        raise Bad("corrupt", f"file ends inside the NIfTI header ({len(raw)} of {size} bytes)")
    problem = nifti_magic_problem(raw, size)
    if problem:
        raise Bad("not_an_image", problem)
    plain = _plain_nifti1_layout(raw) if size == NIFTI1_SIZE else None
    if plain is not None:
        return plain
    from nibabel import Nifti1Header, Nifti2Header

    klass: Any = Nifti1Header if size == NIFTI1_SIZE else Nifti2Header
    try:
        hdr = klass.from_fileobj(io.BytesIO(raw[:size]))
        dims = hdr["dim"]
        if not 1 <= int(dims[0]) <= NIFTI_MAX_DIMENSION:
            raise ValueError(f"dimension count {int(dims[0])} is not between 1 and 7")
        shape = tuple(int(n) for n in hdr.get_data_shape())
        scale = hdr.get_slope_inter()
        return scale, int(hdr.get_data_offset()), shape, hdr.get_data_dtype()
    except Exception as e:
        raise Bad("corrupt", f"invalid NIfTI header: {one_line(e)}") from None


def _plain_nifti1_layout(raw: bytes) -> tuple[Scale, int, tuple[int, ...], np.dtype[Any]] | None:
    """:func:`_nifti_layout` of a plain NIfTI-1 header (:func:`headers.plain_nifti1`:
    a numeric datatype, 1 to 7 non-negative dimensions; the data after the header, a
    finite scaling), as nibabel reads it; None for anything else (nibabel decides,
    and words any problem). Spares importing nibabel (~60 ms) to draw a picture."""
    plain = plain_nifti1(raw)
    if plain is None:
        return None
    order, shape, name = plain
    offset, slope, inter = struct.unpack_from(order + "3f", raw, 108)
    if not (math.isfinite(offset) and offset >= NIFTI1_SIZE + 4):  # nibabel checks these
        return None
    if slope == 0 or not math.isfinite(slope):
        scale: Scale = (None, None)
    elif math.isfinite(inter):
        scale = (slope, inter)
    else:  # nibabel refuses it, in its words
        return None
    return scale, int(offset), shape, np.dtype(name).newbyteorder(order)


# --------------------------------------------------------------------------- NRRD


def _open_nrrd(
    root: Path, rel: str, fh: IO[bytes], head: bytes, max_bytes: int, fast: bool = False
) -> Image:
    if not head.startswith(b"NRRD"):
        raise Bad("not_an_image", "not a NRRD file (bad magic)")
    try:
        parsed = read_nrrd_header(rel, fh.read(8192), fh)
    except HeaderProblem as e:
        raise Bad(e.category, e.reason) from None
    except Exception as e:
        raise Bad("corrupt", f"invalid NRRD header: {one_line(e)}") from None
    header = parsed.fields
    sizes = tuple(int(n) for n in header["sizes"])
    if len(sizes) != header["dimension"] or any(n < 0 for n in sizes):
        raise Bad("corrupt", f"NRRD sizes {sizes} do not match dimension {header['dimension']}")
    dtype = _nrrd_dtype(header)
    count = math.prod(sizes)
    declared = _check_declared(count, dtype, sizes, max_bytes)
    name = detached_data_name(header)
    source: IO[bytes] = fh
    if name is not None:
        try:
            target = check_data_file(root, rel, name)
        except HeaderProblem as e:
            raise Bad(e.category, e.reason) from None
        source = open_in_dataset(root, target)
    else:
        fh.seek(parsed.data_offset)
    chunks = _nrrd_values(source, header, dtype, count, declared, sizes, fast)
    if source is not fh:
        chunks = _closing(chunks, source)
    layer_axis = _layer_axis(header, len(sizes))
    segments = _slicer_segments(header, parsed.key_values, layer_axis is not None)
    return Image(dtype, sizes, segments, layer_axis, chunks, detached=name is not None)


def _closing(chunks: Iterator[NDArray], fh: IO[bytes]) -> Iterator[NDArray]:
    with fh:
        yield from chunks


def _nrrd_dtype(header: dict[str, Any]) -> np.dtype[Any]:
    code = nrrd_type_code(header["type"])
    if code is None or code == "block":
        raise Bad("corrupt", f"unsupported NRRD type {header['type']!r}")
    if code.endswith("1"):
        return np.dtype(code)
    endian = header.get("endian")
    if endian not in ("little", "big"):
        raise Bad("corrupt", f"NRRD header needs endian little or big, found {endian!r}")
    return np.dtype(("<" if endian == "little" else ">") + code)


def _nrrd_values(
    fh: IO[bytes],
    header: dict[str, Any],
    dtype: np.dtype[Any],
    count: int,
    declared: int,
    sizes: tuple[int, ...],
    fast: bool = False,
) -> Iterator[NDArray]:
    encoding = str(header["encoding"]).lower()
    what = describe(sizes, dtype)
    line_skip = int(header.get("lineskip", header.get("line skip", 0)))
    byte_skip = int(header.get("byteskip", header.get("byte skip", 0)))
    if line_skip < 0 or byte_skip < -1:
        raise Bad("corrupt", f"invalid NRRD line skip {line_skip} or byte skip {byte_skip}")
    for _ in range(line_skip):
        if not fh.readline(1 << 20):
            break
    compressed = encoding in ("gzip", "gz", "bzip2", "bz2")
    if byte_skip == -1 and not compressed:
        if encoding != "raw":
            raise Bad("corrupt", "NRRD byte skip -1 needs raw or compressed data")
        fh.seek(0, io.SEEK_END)
        end = fh.tell()
        fh.seek(max(0, end - declared))
    elif byte_skip > 0:
        fh.seek(byte_skip, io.SEEK_CUR)
    if encoding == "raw":
        start = fh.tell()
        size = os.fstat(fh.fileno()).st_size
        counter = Counter(declared, what, known=max(size - start, 0))
        return values(raw_chunks(fh), dtype, counter)
    if compressed:
        gz = encoding in ("gzip", "gz")
        if gz:
            magic = fh.read(2)
            fh.seek(-len(magic), io.SEEK_CUR)
            if not magic.startswith(_GZIP_MAGIC):
                raise Bad(
                    "corrupt", "NRRD declares gzip encoding but its data is not a gzip stream"
                )
        stream = gunzip(fh, fast) if gz else bunzip(fh)
        if byte_skip == -1:  # the last ``declared`` bytes of the decompressed data
            stream = _tail(stream, declared, what)
        return values(stream, dtype, Counter(declared, what))
    if encoding in ("ascii", "text", "txt"):
        return _ascii_values(fh, dtype, count, what)
    raise Bad("corrupt", f"unsupported NRRD encoding {header['encoding']!r}")


def _tail(stream: Iterator[bytes], declared: int, what: str) -> Iterator[bytes]:
    keep = bytearray()
    for piece in Counter(declared + MARGIN, what).take(stream):
        keep += piece
        if len(keep) > declared:
            del keep[: len(keep) - declared]
    yield bytes(keep)


def _ascii_values(fh: IO[bytes], dtype: np.dtype[Any], count: int, what: str) -> Iterator[NDArray]:
    """Whitespace-separated numbers, a chunk of text at a time, exactly ``count`` of them."""
    seen = 0
    carry = b""
    target = dtype.newbyteorder("=")
    for chunk in raw_chunks(fh):
        text = carry + chunk
        cut = max(text.rfind(b" "), text.rfind(b"\n"), text.rfind(b"\t"), text.rfind(b"\r"))
        carry, text = (text[cut + 1 :], text[: cut + 1]) if cut >= 0 else (text, b"")
        arr = _parse_numbers(text, target)
        seen += arr.size
        if seen > count:
            break
        if arr.size:
            yield arr
    if seen <= count and carry.strip():
        arr = _parse_numbers(carry, target)
        seen += arr.size
        if seen <= count and arr.size:
            yield arr
    if seen != count:
        more = "more than " if seen > count else ""
        raise Bad("corrupt", f"data holds {more}{seen} values, header declares {count} ({what})")


def _parse_numbers(text: bytes, dtype: np.dtype[Any]) -> NDArray:
    tokens = text.split()
    if not tokens:
        return np.empty(0, dtype)
    try:
        parsed: NDArray = np.array([float(t) for t in tokens])
    except ValueError as e:
        raise Bad("corrupt", f"cannot decode NRRD ascii data: {one_line(e)}") from None
    if dtype.kind in "iu" and not np.array_equal(parsed, np.round(parsed)):
        raise Bad("corrupt", f"NRRD ascii data holds non-integer values for type {dtype.name}")
    result: NDArray = parsed.astype(dtype)
    return result


def _layer_axis(header: dict[str, Any], ndim: int) -> int | None:
    """The axis of a Slicer 4D layered segmentation that holds the layers."""
    if ndim != 4:
        return None
    kinds = [str(k).lower() for k in header.get("kinds", [])]
    for axis, kind in enumerate(kinds):
        if kind not in _SPATIAL_KINDS:
            return axis
    return 0


def _slicer_segments(
    header: dict[str, Any], key_values: dict[str, str], layered: bool
) -> list[tuple[str, int, int]]:
    """Slicer segments as (name or ID, label value, layer), in segment order.

    Older Slicer files omit LabelValue/Layer: the label is then 1 and a layered
    file keeps segment N in layer N. An unparsable number becomes -1.
    """
    fields: dict[int, dict[str, str]] = {}
    for key, value in (*header.items(), *key_values.items()):
        key = str(key)
        if not key.startswith("Segment"):
            continue
        number, _, part = key[len("Segment") :].partition("_")
        if number.isascii() and number.isdigit() and part in ("ID", "Name", "LabelValue", "Layer"):
            fields.setdefault(int(number), {})[part] = str(value).strip()
    segments = []
    for n in sorted(fields):
        f = fields[n]
        name = f.get("Name") or f.get("ID") or f"Segment{n}"
        label = _parse_int(f.get("LabelValue"), 1)
        layer = _parse_int(f.get("Layer"), n if layered else 0)
        segments.append((name, label, layer))
    return segments


def _parse_int(text: str | None, default: int) -> int:
    if text is None or text == "":
        return default
    if len(text) > 18:
        return -1
    try:
        return int(text)
    except ValueError:
        return -1


def read_array(
    path: Path, root: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES, fast: bool = False
) -> tuple[NDArray, Image]:
    """The whole image as an array of its declared shape (first axis fastest), read
    with every bound and check of :func:`open_image`; for pictures and export.

    Raises :class:`Bad` for content problems and OSError when the file cannot be read.
    """
    fh, image = open_image(path, root, max_bytes, fast)
    with fh:
        out = np.empty(math.prod(image.shape), dtype=image.dtype)
        pos = 0
        for chunk in image.chunks:
            end = pos + chunk.size
            if end > out.size:
                raise Bad("corrupt", f"more data than the header declares ({out.size} values)")
            out[pos:end] = chunk
            pos = end
        if pos != out.size:
            raise Bad("corrupt", f"the data ends after {pos} of {out.size} declared values")
    return out.reshape(image.shape, order="F"), image
