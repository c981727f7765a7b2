"""Where the files of ``PAIR`` or ``PAIR@vN`` come from: the version sources.

``PAIR`` is a case key (a volume's name without extension) or the path of the
volume or of any of its segmentation versions. ``@vN`` picks segmentation
version N (without it: the active, highest version); ``@REV`` (anything else
after the ``@``) asks for the pair as recorded at a git revision.

Each source is a function ``(ds, spec) -> PairFiles | None`` tried in the order
of :data:`SOURCES`; the first to answer wins, ``None`` means "not mine". Today
the working tree answers; the content store (a version the index records but
the working tree no longer holds) and revisions (``Dataset.index_at(rev)``)
plug in as further sources that materialise the files under a folder of their
own and return it as :attr:`PairFiles.root`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.naming import SEGMENTATION, NameInfo
from volsegsync.pairing import pair_by_naming

_VERSION = re.compile(r"^v(\d+)$")


class Spec(NamedTuple):
    pair: str  # case key or path
    version: int | None  # @vN
    rev: str | None  # @REV

    @property
    def text(self) -> str:
        suffix = f"@v{self.version}" if self.version is not None else ""
        return self.pair + (f"@{self.rev}" if self.rev else suffix)


class PairFiles(NamedTuple):
    key: str
    volume: str | None  # relative to root
    segmentation: str
    version: int | None
    root: Path  # the folder the paths are relative to
    source: str  # "working tree", "store", "revision REV"

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "volume": self.volume,
            "segmentation": self.segmentation,
            "version": self.version,
            "source": self.source,
        }


VersionSource = Callable[[Dataset, Spec], "PairFiles | None"]


def parse_spec(text: str) -> Spec:
    pair, at, selector = text.rpartition("@") if "@" in text else (text, "", "")
    if not at:
        return Spec(text, None, None)
    if not pair or not selector:
        raise VolsegsyncError(f"{text}: expected PAIR, PAIR@vN or PAIR@REV")
    m = _VERSION.match(selector)
    return Spec(pair, int(m.group(1)), None) if m else Spec(pair, None, selector)


def working_tree(ds: Dataset, spec: Spec) -> PairFiles | None:
    """The pair as the files on disk are now (naming convention pairing)."""
    if spec.rev is not None:
        return None
    scan = ds.scan()
    infos = [i for p in sorted(scan.files) if (i := ds.convention.parse(p)) is not None]
    wanted = spec.pair.strip("/")
    with contextlib.suppress(VolsegsyncError):
        wanted = ds.relpath(wanted) if Path(wanted).exists() else wanted
    key = next((i.key for i in infos if wanted in (i.path, i.key)), None)
    if key is None:
        return None
    mine = [i for i in infos if i.key == key]
    pairing = pair_by_naming(mine)
    pair = next((p for p in pairing.pairs), None)
    segs = {i.version: i for i in mine if i.role == SEGMENTATION}
    chosen: NameInfo | None
    if spec.version is not None:
        chosen = segs.get(spec.version)
        if chosen is None:
            have = ", ".join(f"v{v}" for v in sorted(v for v in segs if v is not None)) or "none"
            raise VolsegsyncError(
                f"{spec.text}: no segmentation version {spec.version} in the working tree "
                f"(versions there: {have})"
            )
    else:
        active = pair.segmentation if pair is not None else None
        chosen = next((i for i in mine if i.path == active), None)
        if chosen is None:
            raise VolsegsyncError(f"{spec.text}: the pair has no (unambiguous) segmentation")
    volume = pair.volume if pair is not None else None
    if volume is None:
        volume = next((i.path for i in mine if i.role != SEGMENTATION), None)
    return PairFiles(key, volume, chosen.path, chosen.version, ds.root, "working tree")


def revision(ds: Dataset, spec: Spec) -> PairFiles | None:
    """``PAIR@REV``: needs ``Dataset.index_at`` (history) and the content store."""
    if spec.rev is None:
        return None
    if not hasattr(ds, "index_at"):
        raise VolsegsyncError(
            f"{spec.text}: reading a pair at a git revision needs the history support "
            "(Dataset.index_at), which this version lacks; use PAIR@vN from the working tree"
        )
    raise VolsegsyncError(
        f"{spec.text}: files of a past revision come from the content store, "
        "which this version does not read yet"
    )


SOURCES: list[VersionSource] = [working_tree, revision]


def find_pair(ds: Dataset, text: str) -> PairFiles:
    """The files of ``text`` (``PAIR``, ``PAIR@vN`` or ``PAIR@REV``) from the first source."""
    spec = parse_spec(text)
    for source in SOURCES:
        found = source(ds, spec)
        if found is not None:
            return found
    raise VolsegsyncError(f"{text}: no such pair in the dataset (give a case key or a file path)")
