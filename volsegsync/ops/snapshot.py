"""The one scan -> hash -> pair pipeline that ``pair``, ``status`` and ``verify`` consume.

Every command sees the same files, the same hashes, the same pairing and the same
per-file problems, because they all come from here. The pipeline is incremental:

- **files**: one memo per folder (names, stats, digests, per-file problems) in
  ``.volsegsync/state/pipeline/``; a folder whose names and stats are unchanged is
  not even loaded, a changed one is compared name by name and only new or changed
  files are hashed.
- **cases** (all files of one pairing key): 256 shards by key; only the keys that
  a changed path touches are paired again, in place.
- **the index**: each case keeps the index's entry for its key, so the cases
  whose pair result differs from the index (``dirty``) are known without
  comparing the whole index; it is re-read only when its bytes change.

A whole run with nothing changed costs a walk and a digest of its names and stats.
The result never depends on the memo: a run without it gives the same result
(tests/test_pipeline.py compares both on random edits).

The index never silently loses a record: an indexed file that is missing, outside
the scan or unreadable keeps its record in the pair result (a *kept* record), until
``pair --prune`` or ``volsegsync rm``.
"""

from __future__ import annotations

import contextlib
import operator
import os
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import xxhash

from volsegsync.channels import group_channels
from volsegsync.dataset import Dataset, default_jobs
from volsegsync.detached import Changed, DataStage
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import INDEX_LIMIT, StateUnusable, check_state_dir, read_small, say_once
from volsegsync.hashing import (
    THREADS_FROM_BYTES,
    Hashed,
    Stat,
    hash_many,
    hash_small_files,
    racy_limit,
)
from volsegsync.index import (
    DIGEST_HEX,
    Entry,
    FileRecord,
    Pin,
    SegVersion,
    build_entry,
    case_key_of,
    format_entry,
    format_index,
    from_plain,
    no_collector,
    parse_index,
    pins,
    to_plain,
    with_data,
)
from volsegsync.memo import (
    SHARDS,
    PackReader,
    forget_memo,
    load_memo,
    save_memo,
    save_pack,
    shard_of,
)
from volsegsync.naming import SEGMENTATION, VOLUME, NameInfo
from volsegsync.pairing import Pair, Pairing, pair_by_metadata, pair_by_naming, pairing_scope
from volsegsync.problems import (
    Problem,
    apply_severities,
    make_problem,
    problems_from_plain,
    problems_to_plain,
)
from volsegsync.scan import Folder, ScanResult, fingerprint, folder_fingerprints

if TYPE_CHECKING:
    from volsegsync.headers import Geometry

Progress = Callable[[int], None]
ProgressFactory = Callable[[str, int], Progress]
MEMO_FORMAT = 8
LOG_LENGTH = 64  # generations of changed keys kept for incremental consumers (verify)
LOG_ALL_FROM = 1000  # a generation changing more keys than this and than half the cases: all
RACY_STAT = (-1, -1, -1)  # stored for files that must be looked at again next run
DATA = "data"  # the role of a detached NRRD data file (volsegsync.detached)
_new = tuple.__new__  # a NamedTuple from a tuple, without its Python-level __new__
_entry_key = operator.attrgetter("key")


class Monitor(Protocol):
    """A file-system monitor, as the pipeline uses one (volsegsync/ops/fsmonitor.py)."""

    token: str | None  # its token for this run, taken before anything was looked at

    def scan(self, pipeline: Pipeline, top: dict[str, Any] | None) -> ScanResult | None:
        """The folders changed since ``top`` was made (the others in ``unchanged``);
        None when the monitor cannot vouch for that: then the whole dataset is walked."""
        ...

    def vouches(self, prefix: str) -> bool:
        """Whether nothing in folder ``prefix`` changed since ``top`` was made."""
        ...


class Member(NamedTuple):
    """One file of a case, as the pipeline saw it."""

    path: str
    role: str  # VOLUME, SEGMENTATION, DATA, or "" when the name decides no role
    version: int | None
    size: int
    digest: str  # "" when the file could not be hashed
    problem: tuple[str, str] | None  # (category, reason): not_an_image or unreadable
    owner: str = ""  # DATA: the header whose data file this is (the problem names it)


class Kept(NamedTuple):
    """An indexed file that is not (readably) on disk and keeps its record."""

    path: str
    why: str  # "missing", "untracked" (on disk, outside the scan) or "unreadable"


class Case(NamedTuple):
    """Everything about one pairing key: its files, the index's entry, the result."""

    key: str
    members: tuple[Member, ...]
    indexed: Entry | None  # the index's entry for this key
    entry: Entry | None  # what ``pair`` records for this key
    pairs: tuple[Pair, ...]  # for reports: the pair, or unpaired files
    problems: tuple[Problem, ...]  # per-file and pairing problems of this key
    kept: tuple[Kept, ...]

    @property
    def dirty(self) -> bool:
        """The index does not record this case as it is now."""
        if self.kept:
            return True
        entry, indexed = self.entry, self.indexed
        if entry == indexed:
            return False
        if entry is None or indexed is None:  # the other one writes no line, or some
            one = entry if entry is not None else indexed
            assert one is not None
            # a volume or a segmentation is a line (Entry.lines), the usual case
            return one.volume is not None or one.segmentation is not None or bool(one.lines())
        return format_entry(entry) != format_entry(indexed)


# -- plain data for the memos -------------------------------------------------------------


def entry_to_plain(e: Entry | None) -> Any:
    if e is None:
        return None
    if e.older or e.channels or e.seg_data is not None:
        return to_plain([e])[0]
    vol, seg = e.volume, e.segmentation  # the usual shape: what to_plain gives, directly
    return (
        tuple(vol) if vol is not None else None,
        tuple(seg) if seg is not None else None,
        e.version,
        (),
        e.pinned,
        None,
        (),
        e.key,
    )


def entry_from_plain(p: Any) -> Entry | None:
    return from_plain([p])[0] if p is not None else None


def _case_to_plain(c: Case) -> Any:
    _key, members, indexed, entry, pairs, problems, kept = c
    plain = entry_to_plain(indexed)
    return (
        tuple(map(tuple, members)),
        plain,
        # the usual state after ``pair``: one object for both, which marshal stores once
        plain if entry is indexed or entry == indexed else entry_to_plain(entry),
        tuple(map(tuple, pairs)),
        problems_to_plain(list(problems)) if problems else [],
        tuple(map(tuple, kept)) if kept else (),
    )


def _case_from_plain(key: str, p: Any) -> Case:
    members, indexed, entry, pairs, problems, kept = p
    indexed_entry = entry_from_plain(indexed)
    return Case(
        key,
        tuple(Member(*m) for m in members),
        indexed_entry,
        indexed_entry if entry is indexed else entry_from_plain(entry),
        tuple(Pair(*x) for x in pairs),
        tuple(problems_from_plain(problems)) if problems else (),
        tuple(Kept(*k) for k in kept) if kept else (),
    )


def _plain(value: Any) -> Any:
    """A shard's value as its memo stores it: a case put in this run is kept as it is
    and turned into plain data only when its shard is written (once, not per put)."""
    return _case_to_plain(value) if type(value) is Case else value


def _decoded(key: str, value: Any) -> Case:
    return value if type(value) is Case else _case_from_plain(key, value)


# -- pairing one case ---------------------------------------------------------------------


class Rules(NamedTuple):
    """Everything besides the files that decides a case's result."""

    ds: Dataset
    scope: str
    role_dirs: frozenset[str]
    severity: dict[str, str]
    channel: re.Pattern[str] | None  # multi-channel volumes: ``CASE`` + channel suffix

    def key_of(self, path: str) -> tuple[str, NameInfo | None]:
        """A path's pairing key (scoped), and what its name says; a file whose role
        the name does not decide is a case of its own (key ``"\\0" + path``)."""
        info = self.ds.convention.parse(path)
        if info is None:
            return "\0" + path, None
        return self._case_key(info, pairing_scope(path, self.scope, self.role_dirs)), info

    def keys_of_folder(
        self, prefix: str, names: list[str]
    ) -> list[tuple[str, str, NameInfo | None]]:
        """``(path, key, info)`` of each of ``names`` (files of the folder ``prefix``), as
        :meth:`key_of` gives them: what the folder decides (role folders, the pairing
        scope) decided once."""
        scope = pairing_scope(prefix + "-", self.scope, self.role_dirs)  # the folder's
        case_key = self._case_key
        return [
            (info.path, case_key(info, scope), info)
            if info is not None
            else (prefix + name, "\0" + prefix + name, None)
            for name, info in zip(
                names, self.ds.convention.parse_folder(prefix, names), strict=True
            )
        ]

    def _case_key(self, info: NameInfo, scope: str) -> str:
        case = info.key
        if self.channel is not None and info.role == VOLUME:
            m = self.channel.fullmatch(case)
            if m is not None:  # every channel of a case is in the case's key
                case = m.group("case")
        return f"{scope}/{case}" if scope else case


def make_rules(ds: Dataset) -> Rules:
    roles = ds.config.roles
    return Rules(
        ds,
        ds.config.pairing.scope,
        frozenset(roles.volume_dirs) | frozenset(roles.segmentation_dirs),
        dict(ds.config.verify.severity),
        re.compile(f"(?P<case>.+?)(?:{ds.config.channels.suffix})$")
        if ds.config.channels.required
        else None,
    )


def _records(entry: Entry | None) -> Iterator[tuple[str, int | None, FileRecord]]:
    """``(role, version, record)`` of every file an index entry records."""
    if entry is None:
        return
    if entry.volume is not None:
        yield VOLUME, None, entry.volume
    if entry.segmentation is not None:
        yield SEGMENTATION, entry.version, entry.segmentation
    for v in entry.older:
        yield SEGMENTATION, v.version, v.record
    for _channel, rec in entry.channels:
        if entry.volume is None or rec.path != entry.volume.path:
            yield VOLUME, None, rec
    if entry.seg_data is not None:
        yield DATA, entry.version, entry.seg_data
    for v in entry.older:
        if v.data is not None:
            yield DATA, v.version, v.data


def entry_files(entry: Entry | None) -> list[FileRecord]:
    """Every file record of an index entry."""
    return [rec for _, _, rec in _records(entry)]


def pair_case(
    rules: Rules,
    key: str,
    members: tuple[Member, ...],
    indexed: Entry | None,
    locate: Callable[[str], str],
    prune: Callable[[str], bool] | None = None,
) -> Case:
    """Pair the files of one key, keeping the records of indexed files not on disk.

    ``locate(path)`` says where a file not among ``members`` is: ``scanned`` (a file
    of another key: an index entry paired by metadata holds files of two keys),
    ``untracked`` (on disk, outside the scan) or ``missing``."""
    simple = _pair_simple(rules, key, members, indexed)
    if simple is not None:
        return simple
    return _pair_general(rules, key, members, indexed, locate, prune)


def _pair_simple(
    rules: Rules, key: str, members: tuple[Member, ...], indexed: Entry | None
) -> Case | None:
    """The usual case without the general rules, None for any other: one volume and
    one segmentation, both read and of their format, no channels, and an index that
    records these files or nothing of the key (no pin). The result is the general
    path's (tests/test_pipeline.py compares both)."""
    if rules.channel is not None or len(members) != 2:
        return None
    vol, seg = members
    if vol.role == SEGMENTATION:
        vol, seg = seg, vol
    if vol.role != VOLUME or seg.role != SEGMENTATION:
        return None
    if vol.problem is not None or seg.problem is not None or not (vol.digest and seg.digest):
        return None
    if indexed is not None and (
        indexed.pinned
        or indexed.older
        or indexed.channels
        or indexed.seg_data is not None
        or (indexed.volume is not None and indexed.volume.path not in (vol.path, seg.path))
        or (
            indexed.segmentation is not None
            and indexed.segmentation.path not in (vol.path, seg.path)
        )
    ):
        return None
    # made as the tuples they are (no Python-level __new__ with defaults): the usual
    # case is most of a first run's work besides reading the files
    pair = _new(Pair, (vol.path, seg.path, seg.version, "naming", ()))
    vol_rec = _new(FileRecord, (vol.path, vol.size, vol.digest))
    seg_rec = _new(FileRecord, (seg.path, seg.size, seg.digest))
    entry = _new(Entry, (vol_rec, seg_rec, seg.version, (), False, None, (), key))
    return _new(Case, (key, members, indexed, entry, (pair,), (), ()))


def _pair_general(
    rules: Rules,
    key: str,
    members: tuple[Member, ...],
    indexed: Entry | None,
    locate: Callable[[str], str],
    prune: Callable[[str], bool] | None = None,
) -> Case:
    problems: list[Problem] = []
    infos: list[NameInfo] = []
    records: dict[str, FileRecord] = {}
    present = {m.path: m for m in members}
    channel = rules.channel

    def name_key(path: str) -> str:
        """Within a multi-channel case, pairing groups the channels by their own keys."""
        if channel is None:
            return key
        info = rules.ds.convention.parse(path)
        return info.key if info is not None else key

    data: dict[int | None, FileRecord] = {}  # version -> its detached data file
    for m in members:
        if m.role == DATA:
            if m.problem is not None:  # the message names the header
                problems.append(make_problem(m.problem[0], [m.owner], m.problem[1]))
            if m.digest:
                data[m.version] = FileRecord(m.path, m.size, m.digest)
            continue
        if m.problem is not None:
            category, reason = m.problem
            problems.append(make_problem(category, [m.path], f"{m.path}: {reason}"))
        if not m.role:
            if m.problem is None:
                problems.extend(rules.ds.convention.check(m.path))  # says why no role
            continue
        infos.append(NameInfo(m.path, m.role, "", name_key(m.path), m.version))
        if m.digest:
            records[m.path] = FileRecord(m.path, m.size, m.digest)
    kept: list[Kept] = []
    absent: list[Kept] = []  # every indexed file not readably on disk, pruned or not
    for role, version, rec in _records(indexed):
        member = present.get(rec.path)
        if member is not None and member.digest:
            continue
        if role == DATA:
            if _data_kept(rec, version, member, present, locate, absent, kept, prune):
                data.setdefault(version, rec)
            continue
        if member is not None:  # unreadable now: its record stays, whatever is asked
            kept.append(Kept(rec.path, "unreadable"))
            absent.append(kept[-1])
        else:
            where = locate(rec.path)
            if where == "scanned":
                continue  # a file of another key: that key's case has it
            absent.append(Kept(rec.path, where))
            if prune is not None and prune(rec.path):
                continue  # dropped on request
            kept.append(absent[-1])
            infos.append(NameInfo(rec.path, role, "", name_key(rec.path), version))
        records[rec.path] = rec
    if not infos:
        return Case(key, members, indexed, None, (), tuple(problems), tuple(kept))
    groups = group_channels(infos, rules.ds.config.channels)  # multi-channel: one volume
    pairing = pair_by_naming(groups.infos)
    problems.extend(pairing.problems)
    problems.extend(groups.problems)
    pair = pairing.pairs[0] if len(pairing.pairs) == 1 else None
    unreadable = {m.path for m in members if m.problem and m.problem[0] == "unreadable"}
    lone = pair is not None and not pair.older and _sides(pair) <= unreadable
    pairs: tuple[Pair, ...] = ()
    if (pair is None or lone) and prune is not None and len(kept) != len(absent):
        return _pair_general(rules, key, members, indexed, locate)  # as if nothing was pruned
    if pair is None or lone:
        # ambiguous: nothing decided, so the index keeps what it has (nothing is
        # pruned); or a lone file that cannot be read: its problem says all
        entry = indexed
        kept = absent
    else:
        pin = _pin_of(indexed)
        pair = _honour_pin(pair, pin, infos)
        versions = {i.path: i.version for i in infos}
        entry = _entry(key, pair, records, versions, pin)
        entry = with_data(entry, data) if entry is not None and data else entry
        group = groups.channels.get(pair.volume) if entry is not None and pair.volume else None
        if entry is not None and group:
            entry = entry._replace(
                channels=tuple((c, records[p]) for c, p in group.items() if p in records)
            )
        pairs = (pair,)
        problems.extend(  # a lone file that cannot be read has its one problem already
            p for p in unpaired_problems(Pairing([pair], [])) if p.files[0] not in unreadable
        )
    problems = apply_severities(problems, rules.severity)
    return Case(key, members, indexed, entry, pairs, tuple(problems), tuple(kept))


def _data_kept(
    rec: FileRecord,
    version: int | None,
    member: Member | None,
    present: dict[str, Member],
    locate: Callable[[str], str],
    absent: list[Kept],
    kept: list[Kept],
    prune: Callable[[str], bool] | None,
) -> bool:
    """Whether the index's record of a detached data file stays: yes while its header
    names it but it cannot be read (missing, unreadable), or while the header itself
    is not readably on disk; no when the header now names another file or none."""
    if member is None:
        header = [m for m in present.values() if m.role == SEGMENTATION and m.version == version]
        if any(m.digest for m in header):
            return False  # the header is read and names no such file now
        where = locate(rec.path)
        why = "missing" if where == "missing" else "untracked"
    else:  # its header names it; it is not readable now (its problem says why)
        why = "missing" if locate(rec.path) == "missing" else "unreadable"
    absent.append(Kept(rec.path, why))
    if why != "unreadable" and prune is not None and prune(rec.path):
        return False
    kept.append(absent[-1])
    return True


def _sides(pair: Pair) -> set[str]:
    return {p for p in (pair.volume, pair.segmentation) if p}


def _pin_of(indexed: Entry | None) -> Pin | None:
    """The rollback the index records for this case, if any."""
    if indexed is None or not indexed.pinned:
        return None
    return pins([indexed]).get(indexed.key or case_key_of(indexed))


def _honour_pin(pair: Pair, pin: Pin | None, infos: list[NameInfo]) -> Pair:
    """A version pinned by a rollback stays active while its file is recorded and no
    version newer than every one recorded then has appeared (that ends the rollback,
    as :func:`volsegsync.index.build_entry` decides)."""
    if pin is None:
        return pair
    segs = [i for i in infos if i.role == SEGMENTATION]
    if max((i.version or 0 for i in segs), default=0) > pin[1]:
        return pair
    chosen = next((i for i in segs if i.version == pin[0]), None)
    if chosen is None or chosen.path == pair.segmentation:
        return pair
    rest = sorted(
        (i for i in segs if i.path != chosen.path), key=lambda i: (i.version or 0, i.path)
    )
    return pair._replace(
        segmentation=chosen.path, version=pin[0], older=tuple(i.path for i in rest)
    )


def _entry(
    key: str,
    pair: Pair,
    records: dict[str, FileRecord],
    versions: dict[str, int | None],
    pin: Pin | None,
) -> Entry | None:
    """The index entry of a pair: every recorded segmentation version, the active one
    marked (the pin of a rollback honoured as :func:`build_entry` decides)."""
    vol = records.get(pair.volume) if pair.volume else None
    segs = [
        (versions[p], records[p])
        for p in (*pair.older, pair.segmentation)
        if p is not None and p in records
    ]
    if vol is None and not segs:
        return None
    if pair.segmentation is not None and pair.segmentation in records:
        active = pair.version
    else:  # the active file has no record (unreadable, new): the highest recorded one
        active = max(segs, key=lambda t: (t[0] or 0, t[1].path))[0] if segs else None
    return build_entry(key, vol, segs, active, pin)


def unpaired_problems(pairing: Pairing) -> list[Problem]:
    out = []
    for path in pairing.unpaired_volumes:
        out.append(make_problem("unpaired_volume", [path], f"{path}: volume without segmentation"))
    for path in pairing.unpaired_segmentations:
        out.append(
            make_problem("unpaired_segmentation", [path], f"{path}: segmentation without volume")
        )
    return out


# -- the pipeline -------------------------------------------------------------------------


def _fresh_top(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "fp": "",
        "folders": {},  # prefix -> [fingerprint or "" (look again), files, bytes]
        "unreadable": {},  # scan-level: path -> reason
        "index": None,  # digest of the index the cases' ``indexed`` reflect
        "dirty": [],
        "leftovers": [],  # metadata mode: keys that naming leaves unpaired
        "meta_problems": [],
        "data": 0,  # detached NRRD headers (volsegsync.detached): 0 costs nothing
        "counts": {},  # shard -> [pairs, unpaired vols, unpaired segs, problems, indexed pairs]
        "kept": {},  # key -> {path: "missing" or "untracked"}: indexed files not on disk
        "foreign": {},  # key -> paths of other keys that its index entry records
        "epoch": os.urandom(8).hex(),  # a memo started afresh counts generations anew
        "gen": 0,
        "log": [],  # [generation, changed keys or None (all)]
        # where each case shard is: a file of its own (shard -> the id written in it),
        # else the pack of the last full run (its id; None: no pack)
        "where": {},
        "pack": None,
    }


class Pipeline:
    """The incremental pipeline of one dataset (and pairing mode)."""

    def __init__(self, ds: Dataset, mode: str | None = None) -> None:
        self.ds = ds
        self.mode = mode or ds.config.pairing.by
        self.dir = ds.state_dir / "pipeline"
        self.algorithm = ds.config.store.hash
        self.key = ds.state_key("pipeline", str(MEMO_FORMAT), self.mode, self.algorithm)
        # file memos depend on nothing in the config but the hash algorithm
        self.files_key = f"pipeline-files/{MEMO_FORMAT}/{self.algorithm}"
        self.width = DIGEST_HEX.get(self.algorithm, 32)  # hex digits of a digest
        self.rules = make_rules(ds)
        self._shards: dict[int, dict[str, Any]] = {}
        self._changed_shards: set[int] = set()
        self._pack: PackReader | None = None
        self._updating = False  # within update: a missing shard makes update start afresh
        self._stale_counts: set[int] = set()  # shards whose counts the top lacks
        self._unsaved_gen: int | None = None  # a generation of update(save=False), unwritten
        self._save_after = True  # whether update wrote the memo files itself
        self.scan: ScanResult | None = None
        self.token: str | None = None  # a file-system monitor's token for this run
        self._top: dict[str, Any] = _fresh_top(self.key)
        self.data = DataStage(ds.root, self.dir / "data.marshal", self.files_key, self.algorithm)
        self._detached: set[str] = set()  # headers hashed in this run that may be detached
        self._pending: tuple[dict[str, Any], bool] | None = None  # memos not written yet
        self._index_stat: list[int] | None = None  # the index's, when its digest was taken

    # -- memo files --------------------------------------------------------------------

    @property
    def top_path(self) -> Path:
        return self.dir / "top.marshal"

    def _folder_path(self, prefix: str) -> Path:
        return self.dir / f"f-{xxhash.xxh3_64_hexdigest(prefix.encode('utf-8', 'surrogateescape'))}"

    def _shard_path(self, shard: int) -> Path:
        return self.dir / f"k-{shard:02x}"

    @property
    def _pack_path(self) -> Path:
        return self.dir / "k-pack"

    def _shard(self, shard: int, fresh: bool) -> dict[str, Any]:
        cases = self._shards.get(shard)
        if cases is None:
            cases = {} if fresh else self._load_shard(shard)
            if cases is None:
                if self._updating:
                    raise _Inconsistent  # update() starts afresh
                self._rebuild()
                return self._shards[shard]
            self._shards[shard] = cases
        return cases

    def _load_shard(self, shard: int) -> dict[str, Any] | None:
        """A shard's cases from the file the top names for it: its own file (written by
        an incremental run) or the pack of the last full run; None when that file is
        missing, damaged or of another generation (its id is not the top's)."""
        top = self._top
        where, pack = top.get("where"), top.get("pack")
        if not isinstance(where, dict) or not (pack is None or isinstance(pack, str)):
            return None  # a top of another make: start afresh
        written = where.get(shard)
        if written is not None:
            memo = load_memo(self._shard_path(shard), self.key)
            cases = memo.get("cases") if memo is not None and memo.get("id") == written else None
        elif pack:
            if self._pack is None or self._pack.pack_id != pack:
                self._pack = PackReader(self._pack_path, self.key, pack)
            cases = self._pack.load(shard)
        else:
            return None
        return cases if isinstance(cases, dict) else None

    def trusted_files(self) -> dict[str, tuple[Stat, str]]:
        """``path -> (stat, digest)`` of every file whose hash is trusted by its stat
        (for tests and diagnostics: reads every folder memo)."""
        out: dict[str, tuple[Stat, str]] = {}
        top = load_memo(self.top_path, self.key)
        for prefix in top["folders"] if top else ():
            memo = load_memo(self._folder_path(prefix), self.files_key)
            if memo is None:
                continue
            stats = array("q")
            stats.frombytes(memo["stats"])
            for i, name in enumerate(memo["names"]):
                if stats[3 * i + 1] >= 0:
                    st = Stat(*stats[3 * i : 3 * i + 3])
                    w = self.width
                    out[prefix + name] = (st, memo["digests"][w * i : w * i + w])
        return out

    def case(self, key: str) -> Case | None:
        value = self._shard(shard_of(key), False).get(key)
        return _decoded(key, value) if value is not None else None

    def all_cases(self, known: dict[str, Case] | None = None) -> Iterator[Case]:
        """Every case; those of ``known`` as given there (not decoded again)."""
        for shard in range(SHARDS):
            for key, value in self._shard(shard, False).items():
                case = known.get(key) if known else None
                yield case if case is not None else _decoded(key, value)

    # -- a run -------------------------------------------------------------------------

    def update(
        self,
        jobs: int | None = None,
        progress: ProgressFactory | None = None,
        scan: ScanResult | None = None,
        monitor: Monitor | None = None,
        save: bool = True,
        walked: Callable[[str], None] | None = None,
    ) -> Snapshot:
        """Bring the memo up to date with the dataset and the index; the snapshot.

        With a file-system ``monitor``, only the folders it reports changed are looked
        at (when it can vouch for the rest; see volsegsync/ops/fsmonitor.py). With
        ``save=False`` the memo files are written by :meth:`save` (or ``record_index``).
        ``walked`` is told the dataset's fingerprint (``top["fp"]``) before anything
        is hashed."""
        top = load_memo(self.top_path, self.key)
        if scan is None and monitor is not None:
            scan = monitor.scan(self, top)
        scan = scan if scan is not None else self.ds.scan(jobs)
        self.token = monitor.token if monitor is not None else None
        self.scan = scan
        fps = {**scan.unchanged, **folder_fingerprints(scan)}
        fp = fingerprint(scan, fps)
        if walked is not None:
            walked(fp)
        self._index_stat = index_stat = settled_stat(self.ds.index_path)
        if top is not None and monitor is not None and monitor.vouches(""):
            index = top["index"]  # its folder did not change: nor did the index
        elif top is not None and index_stat is not None and top.get("index_stat") == index_stat:
            index = top["index"]  # the same file, unchanged since its digest was taken
        else:
            index = digest_of(self.ds.index_path)
        moved: set[str] = set()
        if top is not None:
            # indexed files not on disk: their state ("missing" or "untracked") is
            # looked at every run, since no scan sees them change
            for key, absent in top["kept"].items():
                if any(self.locate(p) != why for p, why in absent.items()):
                    moved.add(key)
            same = top["fp"] == fp and fp and top["index"] == index and not moved
            if same and not (top.get("data") and self.data.stale()):  # data: volsegsync.detached
                noted = {"fsmonitor": self.token, "index_stat": index_stat}
                noted = {k: v for k, v in noted.items() if v and top.get(k) != v}
                if noted:
                    top.update(noted)
                    save_memo(self.top_path, top)
                self._top = top  # where its cases are
                return Snapshot(self, top, scan)
        self._save_after = save
        try:
            with self._within_update():
                return self._update(scan, fps, fp, index, top, moved, jobs, progress, save)
        except _Inconsistent:  # a memo file is damaged or missing: start afresh
            return self._afresh(scan, index, jobs, progress, save)

    @contextlib.contextmanager
    def _within_update(self) -> Iterator[None]:
        """No garbage collector (see ``no_collector``); a missing shard raises
        :class:`_Inconsistent` (the update starts afresh) instead of a rebuild."""
        self._updating = True
        try:
            with no_collector():
                yield
        finally:
            self._updating = False

    def _afresh(
        self,
        scan: ScanResult,
        index: str | None,
        jobs: int | None,
        progress: ProgressFactory | None,
        save: bool,
    ) -> Snapshot:
        """A full run, without the memo (a file of it is damaged or missing)."""
        self._shards.clear()
        self._changed_shards.clear()
        if scan.unchanged:  # a full run needs every folder
            self.scan = scan = self.ds.scan(jobs)
        fps = folder_fingerprints(scan)
        fp = fingerprint(scan, fps)
        with self._within_update():
            return self._update(scan, fps, fp, index, None, set(), jobs, progress, save)

    def _rebuild(self) -> None:
        """A case shard that the top names is missing or damaged, found after
        :meth:`update` returned (cases are loaded when asked for): a full run now,
        whose state replaces the top's content in place, so that the snapshot that
        holds the top sees it."""
        top = self._top
        assert self.scan is not None
        self._afresh(self.scan, digest_of(self.ds.index_path), None, None, self._save_after)
        rebuilt = self._top
        top.clear()
        top.update(rebuilt)
        self._top = top

    def _update(
        self,
        scan: ScanResult,
        fps: dict[str, str],
        fp: str,
        index: str | None,
        top: dict[str, Any] | None,
        moved: set[str],
        jobs: int | None,
        progress: ProgressFactory | None,
        save: bool,
    ) -> Snapshot:
        full = top is None
        top = top if top is not None else _fresh_top(self.key)
        self._top = top
        keys: dict[str, str] = {}  # path -> key, for the files the folders' work keyed
        changes, folder_memos, folders = self._file_changes(
            scan, fps, top, full, jobs, progress, keys
        )
        old_unreadable: dict[str, str] = top["unreadable"]
        for path, reason in scan.unreadable.items():
            if full or old_unreadable.get(path) != reason:
                changes[path] = Member(path, "", None, 0, "", ("unreadable", reason))
        for path in old_unreadable.keys() - scan.unreadable.keys():
            changes.setdefault(path, None)
        by_key: dict[str, dict[str, Member | None]] = {}
        holders = {p: k for k, paths in top["foreign"].items() for p in paths}
        for path in changes.keys() & holders.keys():
            by_key.setdefault(holders[path], {})
        key_of = self.rules.key_of
        for path, member in changes.items():
            key = keys.get(path)
            if key is None:
                key, info = key_of(path)
                if member is not None and info is not None:
                    member = Member(
                        path, info.role, info.version, member.size, member.digest, member.problem
                    )
            updates = by_key.get(key)
            if updates is None:
                by_key[key] = {path: member}
            else:
                updates[path] = member
        for key, updates in self._data_members(changes, full, jobs).items():
            by_key.setdefault(key, {}).update(updates)
        for key in moved:
            by_key.setdefault(key, {})
        index_changed = full or top["index"] != index
        indexed: dict[str, Entry] | None = None
        if index_changed:
            indexed = self._indexed_by_key()
            for shard in range(SHARDS):
                by_key.update({k: {} for k in self._shard(shard, full) if k not in by_key})
            for key in indexed:
                by_key.setdefault(key, {})
        dirty = set(top["dirty"])
        leftovers = set(top["leftovers"])
        affected = set(by_key)
        rules, locate = self.rules, self.locate
        for key, updates in by_key.items():
            shard = shard_of(key)
            value = self._shard(shard, full).get(key)
            if value is None and None not in updates.values():  # a new case: its files
                members = updates
                entry = indexed.get(key) if indexed is not None else None
            else:
                old = _decoded(key, value) if value is not None else None
                members = {m.path: m for m in old.members} if old else {}
                for path, member in updates.items():
                    if member is None:
                        members.pop(path, None)
                    else:
                        members[path] = member
                entry = indexed.get(key) if indexed is not None else (old.indexed if old else None)
            case = pair_case(rules, key, _sorted(members), entry, locate)  # type: ignore[arg-type]
            self._store(case, dirty, leftovers, shard)
        if self.mode == "metadata" and (
            index_changed or affected & (leftovers | set(top["leftovers"]))
        ):
            top["meta_problems"] = problems_to_plain(
                self._pair_by_metadata(leftovers, dirty, affected)
            )
        top["dirty"] = sorted(dirty)
        top["leftovers"] = sorted(leftovers)
        if full:
            top["counts"] = {}
            self._stale_counts = set(range(SHARDS))
        else:
            self._stale_counts |= self._changed_shards
        if affected:
            if not (full or index_changed):
                self.counted(top)  # how many cases there are decides how keys are logged
            _log_generation(top, None if full or index_changed else affected)
            self._unsaved_gen = None if save else top["gen"]
        top["fp"] = fp if all(f[0] for f in folders.values()) else ""
        top["folders"] = folders
        top["unreadable"] = dict(scan.unreadable)
        top["index"] = index
        top["index_stat"] = self._index_stat
        top["data"] = len(self.data.heads) if full or top.get("data") or self._detached else 0
        if self.token:  # the monitor's token, taken before the scan
            top["fsmonitor"] = self.token
        self._pending = (folder_memos, full)
        if save:
            self.save()
        return Snapshot(self, top, scan)

    def save(
        self,
        meanwhile: Callable[[], None] | None = None,
        parallel: bool = False,
        before: Callable[[], None] | None = None,
    ) -> None:
        """Write the memo files of the last :meth:`update` made with ``save=False`` (a
        ``pair`` that then records the index writes them once, in ``record_index``).

        ``before`` (changes of the cases in memory) runs first; ``meanwhile`` runs
        before the top is written: while a forked child writes the other memo files,
        when ``parallel`` and they are many (see :meth:`_save`)."""
        if self._pending is not None:
            folder_memos, full = self._pending
            self._pending = None
            self._save(self._top, folder_memos, full, meanwhile, parallel, before)
            return
        for step in (before, meanwhile):
            if step is not None:
                step()

    def _put(self, case: Case, dirty: set[str], shard: int | None = None) -> None:
        """Store a case; keep the dirty set and the absent files' states up to date."""
        key, members, indexed, kept = case.key, case.members, case.indexed, case.kept
        if shard is None:
            shard = shard_of(key)
        cases = self._shards.get(shard)
        if cases is None:
            cases = self._shard(shard, False)
        self._changed_shards.add(shard)
        if not members and indexed is None:
            cases.pop(key, None)
        else:
            cases[key] = case  # plain data when its shard is written
        if case.dirty or any(p.category == "unreadable" for p in case.problems):
            dirty.add(key)
        else:
            dirty.discard(key)
        top = self._top
        absent = {k.path: k.why for k in kept if k.why != "unreadable"} if kept else None
        if absent:
            top["kept"][key] = absent
        elif top["kept"]:
            top["kept"].pop(key, None)
        # indexed files of another key (an entry paired by metadata, or made under
        # another config): a change of theirs must bring this case up to date too
        foreign = []
        if indexed is not None:
            paths = [m.path for m in members]
            foreign = [
                r.path
                for r in _usual_records(indexed) or entry_files(indexed)
                if r.path not in paths and self.rules.key_of(r.path)[0] != key
            ]
        if foreign:
            top["foreign"][key] = foreign
        elif top["foreign"]:
            top["foreign"].pop(key, None)

    def _put_recorded(self, case: Case, indexed: Entry | None, dirty: set[str]) -> None:
        """:meth:`_put` of ``case`` with the index's entry ``indexed``: for the usual
        case after ``pair`` (the index records its entry as it is; no kept record, no
        problem; its entry's files are its members) what that gives, directly."""
        key, members, _indexed, entry, pairs, problems, kept = case  # one unpack: a hot path
        if indexed is not entry or entry is None or kept or problems:
            return self._put(case._replace(indexed=indexed), dirty)
        vol, seg, _version, older, _pinned, seg_data, channels, _key = entry
        paths = [m[0] for m in members]  # their paths
        if (
            older
            or channels
            or seg_data is not None
            or (vol is not None and vol[0] not in paths)
            or (seg is not None and seg[0] not in paths)
        ):
            return self._put(case._replace(indexed=indexed), dirty)
        shard = shard_of(key)
        cases = self._shards.get(shard)
        if cases is None:
            cases = self._shard(shard, False)
        self._changed_shards.add(shard)
        cases[key] = _new(Case, (key, members, entry, entry, pairs, (), ()))
        dirty.discard(key)
        top = self._top
        if top["kept"]:
            top["kept"].pop(key, None)
        if top["foreign"]:
            top["foreign"].pop(key, None)
        return None

    def counted(self, top: dict[str, Any]) -> dict[int, list[int]]:
        """The top's counts per shard, those of shards changed since counted first (once,
        whether by the snapshot or when the top is written)."""
        counts: dict[int, list[int]] = top["counts"]
        for shard in self._stale_counts:
            counts[shard] = _counts(self._shards.get(shard, {}))
        self._stale_counts.clear()
        return counts

    def _store(
        self, case: Case, dirty: set[str], leftovers: set[str], shard: int | None = None
    ) -> None:
        self._put(case, dirty, shard)
        e = case.entry
        if e is not None and (e.volume is None) != (e.segmentation is None) and not case.kept:
            leftovers.add(case.key)
        else:
            leftovers.discard(case.key)

    def _save(
        self,
        top: dict[str, Any],
        folder_memos: dict[str, Any],
        full: bool,
        meanwhile: Callable[[], None] | None = None,
        parallel: bool = False,
        before: Callable[[], None] | None = None,
    ) -> None:
        """Cases first, then files, then the top: a crash between leaves files that look
        changed (and are looked at again), never cases older than the files.

        ``before`` (changes of the cases in memory) runs first, and ``meanwhile``
        before the top is written. When ``parallel`` and there are many cases to write
        (a first run's pack), a forked child runs ``before`` too, in its own memory (the
        same code on the same data: the same cases), and writes the cases and files,
        while this process runs ``before`` and ``meanwhile`` (turning cases into bytes
        is most of the cost); a child that dies leaves them to this process."""
        try:
            check_state_dir(self.ds.state_dir)  # never written through a link
            self.dir.mkdir(exist_ok=True)
            if self.dir.is_symlink() or not os.access(self.dir, os.W_OK):
                raise StateUnusable(f"{self.dir}: not a writable folder")
        except (StateUnusable, OSError) as e:  # a memo is an optimisation: the run goes on
            say_once(f"caches are off for this run ({e})")
            for step in (before, meanwhile):
                if step is not None:
                    step()
            self._changed_shards.clear()
            return
        ok = self.data.save()  # before the files: their changes are then looked at again
        # a new id for what this run writes: a top of another generation (a run that
        # stopped before writing its top) never takes these files for its own
        written = os.urandom(8).hex()

        def write_cases() -> bool:
            done = True
            shards = [] if full else sorted(self._changed_shards)
            if full:  # every shard: one pack file (creating 256 files costs more than the rest)
                packed = (  # one shard at a time: plain data, then bytes
                    {k: _plain(v) for k, v in self._shard(n, True).items()} for n in range(SHARDS)
                )
                done &= save_pack(self._pack_path, self.key, written, packed)
            for shard in shards:
                cases = {k: _plain(v) for k, v in self._shard(shard, False).items()}
                done &= save_memo(
                    self._shard_path(shard), {"key": self.key, "id": written, "cases": cases}
                )
            for prefix, memo in folder_memos.items():
                if memo is None:
                    forget_memo(self._folder_path(prefix))
                else:
                    done &= save_memo(self._folder_path(prefix), memo)
            return done

        def record_and_write() -> bool:
            if before is not None:
                before()
            return write_cases()

        child = None
        many = full or len(self._changed_shards) >= FORK_SHARDS_FROM
        if meanwhile is not None and parallel and many:
            from volsegsync.workers import Forked, can_fork

            child = Forked(record_and_write) if can_fork() else None
        try:
            if before is not None:
                before()
            if child is None:
                ok &= write_cases()
                if meanwhile is not None:
                    meanwhile()
            else:
                assert meanwhile is not None
                meanwhile()
                self.counted(top)  # the top's counts, while the child writes
                answer = child.result()
                ok &= answer if isinstance(answer, bool) else write_cases()  # died: here
        finally:
            if child is not None:
                child.close()
        if full:
            top["pack"], top["where"] = written, {}
            self._forget_shard_files()
        for shard in [] if full else sorted(self._changed_shards):
            top["where"][shard] = written
        if ok:
            self.counted(top)
            save_memo(self.top_path, top)
        else:
            forget_memo(self.top_path)
        self._changed_shards.clear()

    def _forget_shard_files(self) -> None:
        """The shard files of earlier runs: a pack holds every shard now."""
        try:
            names = [n for n in os.listdir(self.dir) if len(n) == 4 and n.startswith("k-")]
        except OSError:
            return
        for name in names:
            forget_memo(self.dir / name)

    def locate(self, path: str) -> str:
        """Where a file is: ``scanned``, ``untracked`` (on disk, outside the scan) or
        ``missing``."""
        scan = self.scan
        if scan is not None and (scan.stat(path) is not None or path in scan.unreadable):
            return "scanned"
        return "untracked" if os.path.lexists(self.ds.root / path) else "missing"

    def _indexed_by_key(self) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for e in self.ds.read_index():
            if e.key:
                key = e.key
            else:
                rec = e.volume or e.segmentation or (e.older[0].record if e.older else None)
                if rec is None:
                    continue
                key = self.rules.key_of(rec.path)[0]
            if key in out:  # two index lines claim one key (an older index): keep both files
                out[key] = _merge_entries(out[key], e)
            else:
                out[key] = e
        return out

    # -- detached NRRD data files -------------------------------------------------------

    def _data_members(
        self, changes: dict[str, Member | None], full: bool, jobs: int | None
    ) -> dict[str, dict[str, Member | None]]:
        """The data stage (:mod:`volsegsync.detached`): the detached data files of the
        headers as members of their header's case (``key -> path -> member``, None:
        gone), for the headers whose data changed. Costs nothing without any."""
        detached = self._detached | {p for p in changes if p.endswith(".nhdr")}
        if not (full or self._top.get("data") or detached):
            return {}
        heads = self.data.heads
        changed = {
            p: (self.scan.stat(p) if m is not None and m.digest and self.scan else None)
            for p, m in changes.items()
            if p in detached or p in heads
        }
        out: dict[str, dict[str, Member | None]] = {}
        result: Changed = self.data.update(changed, detached, full, jobs or default_jobs())
        for header, (was, now) in result.items():
            key, info = self.rules.key_of(header)
            updates = out.setdefault(key, {})
            if was is not None:
                updates[was.path or header + "\0data"] = None
            if now is not None and info is not None and info.role == SEGMENTATION:
                path = now.path or header + "\0data"  # no file allowed: its problem only
                if now.path or now.problem:
                    updates[path] = Member(
                        path, DATA, info.version, now.size, now.digest, now.problem, header
                    )
        return out

    # -- files -------------------------------------------------------------------------

    def _file_changes(
        self,
        scan: ScanResult,
        fps: dict[str, str],
        top: dict[str, Any],
        full: bool,
        jobs: int | None,
        progress: ProgressFactory | None,
        keys: dict[str, str],
    ) -> tuple[dict[str, Member | None], dict[str, Any], dict[str, list[Any]]]:
        """Paths whose member changed (None: gone), new folder memos, folder states;
        ``keys`` gets the key of each file whose member is in its case's terms."""
        changes: dict[str, Member | None] = {}
        memos: dict[str, Any] = {}
        folders: dict[str, list[Any]] = {}
        pending: dict[str, _FolderWork] = {}
        old_folders: dict[str, list[Any]] = top["folders"]
        for prefix in sorted(fps.keys() | old_folders.keys()):
            old = old_folders.get(prefix)
            if prefix not in fps:  # the folder is gone, or holds no candidate any more
                memo = load_memo(self._folder_path(prefix), self.files_key)
                if memo is None or memo["prefix"] != prefix:
                    if not full:
                        raise _Inconsistent
                else:
                    changes.update((prefix + n, None) for n in memo["names"])
                memos[prefix] = None
                continue
            if not full and old is not None and old[0] and old[0] == fps[prefix]:
                folders[prefix] = old
                continue
            memo = load_memo(self._folder_path(prefix), self.files_key)
            if memo is not None and memo["prefix"] != prefix:
                memo = None
            if memo is None and old is not None and not full:
                raise _Inconsistent
            work = _FolderWork(prefix, scan.folders[prefix], memo, full, self.width)
            changes.update(work.removed())
            pending[prefix] = work
        count = sum(len(w.todo) for w in pending.values())
        tick = progress("hashing", count) if progress and count else None
        todo = self._hash_small(list(pending.values()), jobs, tick)
        if todo:
            done = (lambda: tick(1)) if tick else None
            jobs = jobs or default_jobs()
            for result in hash_many(self.ds.root, todo, jobs, done, self.algorithm):
                if isinstance(result, Hashed):
                    if result.detached:
                        self._detached.add(result.path)
                    prefix, _, name = result.path.rpartition("/")
                    pending[prefix + "/" if prefix else ""].hashed(name, result)
                else:
                    path, reason = result
                    prefix, _, name = path.rpartition("/")
                    pending[prefix + "/" if prefix else ""].failed(name, reason)
        for prefix, work in pending.items():
            changes.update(work.members(self.rules, keys))
            memos[prefix] = work.memo(self.files_key)
            folders[prefix] = work.state(fps[prefix])
        return changes, memos, folders

    def _hash_small(
        self, works: list[_FolderWork], jobs: int | None, tick: Progress | None
    ) -> list[tuple[str, Stat]]:
        """Hash the small files of ``works``; the other files, as :func:`hash_many`
        takes them. Many small files (a first run) are shared with a forked child, which
        hashes the last ``CHILD_SHARE`` of them meanwhile: a tiny file's open and read
        cost more than its hashing, and a second core halves them. The child's answer
        is what this process would have found (the same function, the same files); a
        child that dies leaves its share to this process."""
        root, algorithm, detached = self.ds.root, self.algorithm, self._detached
        plans = [(w, *w.small_todo()) for w in works]
        total = sum(len(small) for _, small, _ in plans)
        child = None
        theirs: list[tuple[_FolderWork, list[int]]] = []
        if total >= FORK_SMALL_FROM and (jobs or default_jobs()) > 1:
            from volsegsync.workers import Forked, can_fork

            if can_fork():
                plans, theirs = _split_plans(plans, int(total * CHILD_SHARE))
                child = Forked(
                    lambda: [
                        hash_small_files(
                            os.path.join(root, w.prefix),
                            w.folder.names,
                            w.folder.stats[0::3],
                            small,
                            algorithm,
                        )
                        for w, small in theirs
                    ]
                )
        unhashed: dict[str, list[int]] = {w.prefix: rest for w, _small, rest in plans}
        try:
            for w, small, _rest in plans:
                unhashed[w.prefix] += w.hash_small(root, small, algorithm, detached, tick)
            if child is not None:  # the names are parsed while the child hashes
                for w in works:
                    w.parse(self.rules)
            answer = child.result() if child is not None else None
        finally:
            if child is not None:
                child.close()
        if child is not None:
            if not (isinstance(answer, list) and len(answer) == len(theirs)):
                answer = None  # the child died: its share is hashed here
            for k, (w, small) in enumerate(theirs):
                if answer is None:
                    unhashed[w.prefix] += w.hash_small(root, small, algorithm, detached, tick)
                    continue
                done, not_done = answer[k]
                w.take_small(done, detached)
                unhashed[w.prefix] += not_done
                if tick:
                    tick(len(done))
        return [f for w in works for f in w.to_hash(sorted(unhashed[w.prefix]))]

    # -- metadata pairing --------------------------------------------------------------

    def _pair_by_metadata(
        self, leftovers: set[str], dirty: set[str], affected: set[str]
    ) -> list[Problem]:
        """Pair what names leave unpaired by header, over every such key at once."""
        cases = {k: c for k in sorted(leftovers) if (c := self.case(k)) is not None}
        # cases paired by metadata last time hold the metadata result: pair them afresh
        for key, case in list(cases.items()):
            fresh = pair_case(self.rules, key, case.members, case.indexed, self.locate)
            cases[key] = fresh
        pairs = [p for c in cases.values() for p in c.pairs]
        owner = {
            p: c.key
            for c in cases.values()
            for pr in c.pairs
            for p in (pr.volume, pr.segmentation)
            if p
        }
        broken = {m.path for c in cases.values() for m in c.members if m.problem is not None}
        v = self.ds.config.verify
        result = pair_by_metadata(
            Pairing(pairs, []),
            _geometry_reader(self.ds, broken),
            self.ds.config.pairing.reference_keys,
            v.position_tolerance,
            v.direction_tolerance,
        )
        joined: dict[str, Case] = {}
        for pair in result.pairs:
            if pair.how != "metadata" or not pair.volume or not pair.segmentation:
                continue
            vol_case, seg_case = cases[owner[pair.volume]], cases[owner[pair.segmentation]]
            joined[vol_case.key] = _join(vol_case, seg_case, pair)
            joined[seg_case.key] = seg_case._replace(
                entry=None,
                pairs=(pair,),  # listed here too: its entry is the volume's
                problems=tuple(
                    p for p in seg_case.problems if p.category != "unpaired_segmentation"
                ),
            )
        for key, case in cases.items():
            final = joined.get(key, case)
            if _plain(self._shard(shard_of(key), False).get(key)) != _case_to_plain(final):
                self._put(final, dirty)
                affected.add(key)
        return apply_severities(result.problems, self.rules.severity)


class _Inconsistent(Exception):
    """A memo file that should exist does not, or is damaged."""


def _sorted(members: dict[str, Member]) -> tuple[Member, ...]:
    """The members by path (two, a pair, by one comparison)."""
    if len(members) == 2:
        a, b = members
        return (members[a], members[b]) if a < b else (members[b], members[a])
    return tuple([members[p] for p in sorted(members)])


def _usual_records(e: Entry) -> list[FileRecord] | None:
    """The records of an entry of the usual shape (a volume and/or the active
    segmentation, nothing else), None for any other: :func:`entry_files` then."""
    if e.older or e.channels or e.seg_data is not None:
        return None
    return [r for r in (e.volume, e.segmentation) if r is not None]


def _join(vol_case: Case, seg_case: Case, pair: Pair) -> Case:
    v, s = vol_case.entry, seg_case.entry
    assert v is not None and s is not None
    entry = v._replace(
        segmentation=s.segmentation,
        version=s.version,
        older=s.older,
        pinned=s.pinned,
        seg_data=s.seg_data,
    )
    return vol_case._replace(
        entry=entry,
        pairs=(pair,),
        problems=tuple(p for p in vol_case.problems if p.category != "unpaired_volume"),
    )


def _merge_entries(a: Entry, b: Entry) -> Entry:
    """Two index lines of one key (an index that paired across folders, say): one entry
    that keeps every file, so that nothing recorded is lost."""
    recs = sorted(
        [(v, r) for role, v, r in (*_records(a), *_records(b)) if role == SEGMENTATION],
        key=lambda x: (x[0] or 0, x[1].path),
    )
    vol = a.volume or b.volume
    if not recs:
        return a._replace(volume=vol)
    data: dict[str, FileRecord | None] = {}  # a version's detached data file, by its header
    for e in (a, b):
        data.update((v.record.path, v.data) for v in e.older)
        if e.segmentation is not None:
            data[e.segmentation.path] = e.seg_data
    top_v, top_r = recs[-1]
    return a._replace(
        volume=vol,
        segmentation=top_r,
        version=top_v,
        older=tuple(SegVersion(v, r, data.get(r.path)) for v, r in recs[:-1]),
        pinned=False,
        seg_data=data.get(top_r.path),
    )


def _log_generation(top: dict[str, Any], keys: Iterable[str] | None, joined: bool = False) -> None:
    """A new generation, with the keys whose cases it changed (None: all). Most of the
    dataset's cases count as all: a consumer then redoes everything, which costs about
    as much, and the memo that every run loads stays small (50,000 keys: 1.4 MB).
    ``joined``: ``keys`` are the last generation's keys now (it was not written yet)."""
    listed = None if keys is None else sorted(set(keys) if joined else keys)
    if listed is not None and 2 * len(listed) > max(LOG_ALL_FROM, _case_total(top)):
        listed = None
    if joined:
        top["log"][-1][1] = listed
        return
    top["gen"] += 1
    top["log"] = [*top["log"], [top["gen"], listed]][-LOG_LENGTH:]


def _case_total(top: dict[str, Any]) -> int:
    """Pairs and unpaired files, from the shards' counts."""
    return sum(c[0] + c[1] + c[2] for c in top["counts"].values())


def _counts(cases: dict[str, Any]) -> list[int]:
    """[pairs, unpaired volumes, unpaired segmentations, problems, indexed pairs] of a
    shard, read from its cases or their plain data (see ``_case_to_plain``) without
    building cases. An entry's fields 0 and 1 are its volume and segmentation in both."""
    pairs = vols = segs = problems = indexed = 0
    for value in cases.values():
        if type(value) is Case:
            index_entry, entry, case_pairs, case_problems = value[2:6]
        else:
            _members, index_entry, entry, case_pairs, case_problems, _kept = value
        if entry is not None and entry[0] is not None and entry[1] is not None:
            pairs += 1
        for p in case_pairs:
            if p[0] and not p[1]:
                vols += 1
            elif p[1] and not p[0]:
                segs += 1
        problems += len(case_problems)
        if index_entry is not None and index_entry[0] is not None and index_entry[1] is not None:
            indexed += 1
    return [pairs, vols, segs, problems, indexed]


class _FolderWork:
    """One changed folder: which names are new or changed, and its new memo.

    The everyday case, a few files edited in a folder of many, is compared in
    chunks of stats at C speed; only differing chunks are looked at per file."""

    def __init__(
        self, prefix: str, folder: Folder, memo: dict[str, Any] | None, full: bool, width: int
    ):
        self.prefix = prefix
        self.w = w = width
        self.folder = folder
        names = folder.names
        self.stats = folder.stats[:]
        self.updates: dict[int, str] = {}  # index -> digest found in this run
        self.keyed: list[tuple[str, str, NameInfo | None]] | None = None  # see parse()
        self.gone: list[str] = []
        # taken before any file is read: a file is then rather too recent than not
        self.limit = limit = racy_limit()
        old = array("q")
        if memo is not None:
            old.frombytes(memo["stats"])
        todo: Sequence[int]
        if memo is None:  # a folder not seen before: every file is new
            self.digests: str = "-" * (w * len(names))
            self.problems: dict[str, tuple[str, str]] = {}
            todo = range(len(names))
        elif memo["names"] == names:  # same names, same order
            self.digests = memo["digests"]
            self.problems = dict(memo["problems"])
            todo = _differing(old, folder.stats, limit)
        else:
            self.problems = {}
            old_names: list[str] = memo["names"]
            old_digests: str = memo["digests"]
            old_problems: dict[str, tuple[str, str]] = memo["problems"]
            old_pos = dict(zip(old_names, range(len(old_names)), strict=True))
            digests: list[str] = []
            todo = []
            new = folder.stats
            for i, name in enumerate(names):
                j = old_pos.pop(name, -1)
                same = j >= 0 and old[3 * j : 3 * j + 3] == new[3 * i : 3 * i + 3]
                if same and new[3 * i + 1] < limit:
                    digests.append(old_digests[w * j : w * j + w])
                    if name in old_problems:
                        self.problems[name] = old_problems[name]
                    continue
                digests.append("-" * w)
                todo.append(i)
            self.digests = "".join(digests)
            self.gone = list(old_pos)
        self.index = {names[i]: i for i in todo}
        if self.problems:
            for name in self.index:
                self.problems.pop(name, None)
        self.todo = todo
        self.changed: Iterable[int] = range(len(names)) if full else todo

    def small_todo(self) -> tuple[list[int], list[int]]:
        """The files to hash split: small ones (:func:`hash_small_files`), the rest."""
        st, todo = self.folder.stats, self.todo
        small = [i for i in todo if st[3 * i] < THREADS_FROM_BYTES]
        rest = [i for i in todo if st[3 * i] >= THREADS_FROM_BYTES] if small else list(todo)
        return small, rest

    def take_small(self, done: list[Any], detached: set[str]) -> None:
        """Record what :func:`hash_small_files` found for files of this folder."""
        names, st, prefix = self.folder.names, self.folder.stats, self.prefix
        stats, limit, updates, problems = self.stats, self.limit, self.updates, self.problems
        for i, digest, problem, maybe_detached in done:
            updates[i] = digest
            if problem:  # one category per file everywhere: a cut-short stream is corrupt
                category = "corrupt" if problem.startswith("corrupt") else "not_an_image"
                problems[names[i]] = (category, problem)
            if maybe_detached:
                detached.add(prefix + names[i])
            if st[3 * i + 1] >= limit:  # the walk's stat is recorded: too recent to trust
                stats[3 * i : 3 * i + 3] = array("q", RACY_STAT)

    def hash_small(
        self,
        root: Path,
        small: list[int],
        algorithm: str,
        detached: set[str],
        tick: Progress | None,
    ) -> list[int]:
        """Hash the files ``small`` by one thread (:func:`hash_small_files`), in batches
        (a progress bar moves); the indices of the files it left."""
        folder, left_all = os.path.join(root, self.prefix), []
        sizes = self.folder.stats[0::3]
        for start in range(0, len(small), SMALL_BATCH):
            done, left = hash_small_files(
                folder, self.folder.names, sizes, small[start : start + SMALL_BATCH], algorithm
            )
            self.take_small(done, detached)
            left_all.extend(left)
            if tick:
                tick(len(done))
        return left_all

    def to_hash(self, rest: list[int]) -> list[tuple[str, Stat]]:
        """The files ``rest`` as :func:`hash_many` takes them."""
        names, st, prefix = self.folder.names, self.folder.stats, self.prefix
        return [(prefix + names[i], Stat(st[3 * i], st[3 * i + 1], st[3 * i + 2])) for i in rest]

    def removed(self) -> Iterator[tuple[str, None]]:
        return ((self.prefix + name, None) for name in self.gone)

    def hashed(self, name: str, h: Hashed) -> None:
        i = self.index[name]
        self.updates[i] = h.digest
        if h.problem:
            # one category per file everywhere: a cut-short stream is corrupt
            category = "corrupt" if h.problem.startswith("corrupt") else "not_an_image"
            self.problems[name] = (category, h.problem)
        st, k = self.stats, 3 * i
        if h.stat.mtime_ns >= self.limit or h.stat != (st[k], st[k + 1], st[k + 2]):
            st[k : k + 3] = array("q", RACY_STAT)

    def failed(self, name: str, reason: str) -> None:
        i = self.index[name]
        self.problems[name] = ("unreadable", reason)
        self.stats[3 * i : 3 * i + 3] = array("q", RACY_STAT)  # looked at again next run

    def digest(self, i: int) -> str:
        return self.updates.get(i) or self.digests[self.w * i : self.w * i + self.w]

    def members(self, rules: Rules, keys: dict[str, str]) -> Iterator[tuple[str, Member]]:
        """The changed files as members of their cases; ``keys`` gets each one's key."""
        names = self.folder.names
        stats = self.folder.stats
        changed = self.changed
        problems = self.problems
        none = "-" * self.w
        updates, digests, w = self.updates, self.digests, self.w
        keyed = self.keyed if self.keyed is not None else self.parse(rules)
        for i, (path, key, info) in zip(changed, keyed, strict=True):
            digest = updates.get(i) or digests[w * i : w * i + w]
            problem = problems.get(names[i]) if problems else None
            if digest == none or (problem is not None and problem[0] == "unreadable"):
                digest = ""
            keys[path] = key
            if info is None:
                yield path, _new(Member, (path, "", None, stats[3 * i], digest, problem, ""))
            else:
                member = (path, info.role, info.version, stats[3 * i], digest, problem, "")
                yield path, _new(Member, member)

    def parse(self, rules: Rules) -> list[tuple[str, str, NameInfo | None]]:
        """``(path, key, info)`` of each changed file (what its name says: no digest
        needed, so it can be done while a child hashes)."""
        names, changed = self.folder.names, self.changed
        sub = names if isinstance(changed, range) else [names[i] for i in changed]
        self.keyed = rules.keys_of_folder(self.prefix, sub)
        return self.keyed

    def memo(self, key: str) -> dict[str, Any]:
        pieces = []
        last = 0
        for i in sorted(self.updates):
            pieces.append(self.digests[self.w * last : self.w * i])
            pieces.append(self.updates[i])
            last = i + 1
        pieces.append(self.digests[self.w * last :])
        return {
            "key": key,
            "prefix": self.prefix,
            "names": self.folder.names,
            "stats": self.stats.tobytes(),
            "digests": "".join(pieces),
            "problems": self.problems,
        }

    def state(self, fp: str) -> list[Any]:
        racy = bool(self.folder.names) and min(self.stats[1::3]) < 0
        return ["" if racy else fp, len(self.folder.names), sum(self.folder.stats[0::3])]


SMALL_BATCH = 8192  # small files hashed between two moves of a progress bar
FORK_SMALL_FROM = 4096  # small files to hash from which a forked child shares them
FORK_SHARDS_FROM = 64  # shard files to write from which a forked child writes them
CHILD_SHARE = 0.58  # the share it hashes: this process parses the names meanwhile


def _split_plans(
    plans: list[tuple[_FolderWork, list[int], list[int]]], share: int
) -> tuple[list[tuple[_FolderWork, list[int], list[int]]], list[tuple[_FolderWork, list[int]]]]:
    """The small files of ``plans`` split: the last ``share`` of them (in folder order)
    for a child, as ``(work, small)``; the rest stay (with each folder's large files)."""
    mine: list[tuple[_FolderWork, list[int], list[int]]] = []
    theirs: list[tuple[_FolderWork, list[int]]] = []
    for w, small, rest in reversed(plans):
        take = min(share, len(small))
        if take:
            theirs.append((w, small[len(small) - take :]))
            share -= take
        mine.append((w, small[: len(small) - take], rest))
    return mine[::-1], theirs[::-1]


CHUNK = 3 * 512  # stats compared at once: three numbers a file


def _differing(old: array[int], new: array[int], limit: int) -> list[int]:
    """Indices of files whose stat differs (or is too recent to trust), the two arrays
    holding the same names in the same order."""
    out: list[int] = []
    for start in range(0, len(new), CHUNK):
        if old[start : start + CHUNK] != new[start : start + CHUNK]:
            for k in range(start, min(start + CHUNK, len(new)), 3):
                if old[k : k + 3] != new[k : k + 3]:
                    out.append(k // 3)
    if new and max(new[1::3]) >= limit:
        recent = {i for i, m in enumerate(new[1::3]) if m >= limit}
        out = sorted(recent.union(out))
    return out


def index_digest(data: bytes) -> str:
    """The digest by which memos know an index text (the store memo, the pipeline's top)."""
    return xxhash.xxh3_128_hexdigest(data)


def settled_stat(path: Path) -> list[int] | None:
    """``[size, mtime_ns, ino, ctime_ns]`` of a regular file not changed for a while, by
    which a digest taken after this stat stays known (None: digest it again). A later
    change of the file moves its ctime past this one, whatever its mtime says."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not S_ISREG(st.st_mode) or max(st.st_mtime_ns, st.st_ctime_ns) >= racy_limit():
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def digest_of(path: Path) -> str | None:
    try:  # a regular file only, capped: never a hang on a FIFO
        return index_digest(read_small(path, INDEX_LIMIT, "index"))
    except FileNotFoundError:
        return None
    except (OSError, VolsegsyncError):
        return "unreadable"


def _geometry_reader(ds: Dataset, broken: set[str]) -> Callable[[str], Geometry | None]:
    from volsegsync.errors import FileProblem
    from volsegsync.headers import read_geometry  # numpy: only for metadata pairing

    def read(path: str) -> Geometry | None:
        if path in broken:
            return None
        try:
            return read_geometry(ds.root / path, ds.root)
        except FileProblem:  # a broken header is reported once, by verify
            return None

    return read


# -- the result ---------------------------------------------------------------------------


class Snapshot:
    """The dataset now, as the pipeline sees it; bulk data is loaded when asked for."""

    def __init__(self, pipeline: Pipeline, top: dict[str, Any], scan: ScanResult) -> None:
        self.pipeline = pipeline
        self.top = top
        self.scan = scan
        self._totals: list[int] | None = None
        self.files = sum(f[1] for f in top["folders"].values())
        self.total_bytes = sum(f[2] for f in top["folders"].values())
        self._cases: list[Case] | None = None
        self._replaced: dict[str, Case] = {}

    def _total(self, i: int) -> int:
        """Column ``i`` of the counts (see :func:`_counts`) over every shard."""
        if self._totals is None:
            totals = [0] * 5
            for c in self.pipeline.counted(self.top).values():
                totals = [a + b for a, b in zip(totals, c, strict=True)]
            self._totals = totals
        return self._totals[i]

    @property
    def pairs(self) -> int:
        return self._total(0)

    @property
    def unpaired_volumes(self) -> int:
        return self._total(1)

    @property
    def unpaired_segmentations(self) -> int:
        return self._total(2)

    @property
    def problem_count(self) -> int:
        return self._total(3) + len(self.top["meta_problems"])

    @property
    def indexed_pairs(self) -> int:
        return self._total(4)

    def replace(self, cases: Iterable[Case]) -> None:
        """Use these cases instead of the memoised ones of their keys (as ``pair``
        records them: settled, pruned)."""
        self._replaced.update((c.key, c) for c in cases)
        self._cases = None

    def recorded(self) -> None:
        """The replaced cases are the memo's now (``record_index`` put them there)."""
        self._replaced.clear()
        self._cases = None

    @property
    def generation(self) -> int:
        return int(self.top["gen"])

    @property
    def dirty_keys(self) -> list[str]:
        return list(self.top["dirty"])

    @property
    def stamp(self) -> str:
        """This generation of this memo, for consumers to ask :meth:`changed_since`: a
        memo started afresh (another config, a damaged file) counts generations anew,
        so a number alone could name a generation of another memo."""
        return f"{self.top['epoch']}/{self.top['gen']}"

    def changed_since(self, stamp: str) -> set[str] | None:
        """Keys whose case changed after the generation ``stamp`` names; None when not
        known (all)."""
        epoch, _, number = str(stamp).partition("/")
        if epoch != self.top["epoch"] or not number.isdigit():
            return None
        generation = int(number)
        if generation == self.generation:
            return set()
        out: set[str] = set()
        log = self.top["log"]
        if not log or log[0][0] > generation + 1 or generation > self.generation:
            return None
        for gen, keys in log:
            if gen > generation:
                if keys is None:
                    return None
                out.update(keys)
        return out

    def cases(self, keys: Iterable[str] | None = None) -> list[Case]:
        if keys is None:
            if self._cases is None:
                self._cases = list(self.pipeline.all_cases(self._replaced))
            return self._cases
        return [
            c for k in keys if (c := self._replaced.get(k) or self.pipeline.case(k)) is not None
        ]

    @property
    def entries(self) -> list[Entry]:
        """What the index records now, in the index's order."""
        out = [c.entry for c in self.cases() if c.entry is not None]
        keys = [e.key for e in out]
        if all(keys) and len(set(keys)) == len(keys):  # one entry a key: the key orders
            out.sort(key=_entry_key)
        else:
            out.sort(key=lambda e: e.sort_key)
        return out

    @property
    def pairing(self) -> Pairing:
        ordered = sorted(self.cases(), key=lambda c: c.key)
        pairs = list(dict.fromkeys(p for c in ordered for p in c.pairs))
        return Pairing(pairs, self.problems)

    @property
    def problems(self) -> list[Problem]:
        if self._replaced or self._cases is not None:
            out = [p for c in self.cases() for p in c.problems]
        else:  # the cases of shards whose counts hold a problem (a clean dataset: none)
            pipeline = self.pipeline
            counts = pipeline.counted(self.top)
            out = [
                p
                for shard in range(SHARDS)
                if counts.get(shard, (0, 0, 0, 1))[3]
                for key, value in pipeline._shard(shard, False).items()
                for p in _decoded(key, value).problems
            ]
        out.extend(problems_from_plain(self.top["meta_problems"]))
        out.sort(key=lambda p: (p.files, p.category, p.message))
        return out


def take_snapshot(
    ds: Dataset,
    by: str | None = None,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
    scan: ScanResult | None = None,
    monitor: Monitor | None = None,
    walked: Callable[[str], None] | None = None,
) -> Snapshot:
    """Scan, hash and pair the dataset (incrementally: see the module's docstring)."""
    return Pipeline(ds, by).update(
        jobs=jobs, progress=progress, scan=scan, monitor=monitor, walked=walked
    )


def settle(pipeline: Pipeline, cases: list[Case], prune: bool = False) -> list[Case]:
    """The dirty cases as ``pair`` records them: an indexed file missing from disk
    whose content appears at a new path was moved (its record follows it, so status
    shows a rename); with ``prune`` every record of a file not on disk is dropped."""
    if not any(c.kept for c in cases):
        return list(cases)  # no record of a file not on disk: nothing to settle
    new_paths: dict[str, list[str]] = {}
    for c in cases:
        indexed = {r.path for r in entry_files(c.indexed)}
        for m in c.members:
            if m.digest and m.path not in indexed:
                new_paths.setdefault(m.digest, []).append(m.path)
    out = []
    for c in cases:
        gone: set[str] = set()
        for rec in entry_files(c.indexed):
            kept = next((k for k in c.kept if k.path == rec.path), None)
            if kept is None or kept.why == "unreadable":
                continue
            if prune or new_paths.get(rec.digest):
                gone.add(rec.path)
                if new_paths.get(rec.digest):
                    new_paths[rec.digest].pop(0)
        if gone:
            c = pair_case(
                pipeline.rules, c.key, c.members, c.indexed, pipeline.locate, gone.__contains__
            )
        out.append(c)
    return out


def pair_entries(snap: Snapshot) -> list[Entry]:
    """What ``pair`` would write now (without ``--prune``): the dirty cases settled, so
    that a moved file's record follows it."""
    snap.replace(settle(snap.pipeline, snap.cases(snap.dirty_keys)))
    return snap.entries


def as_indexed(entry: Entry | None, algorithm: str) -> Entry | None:
    """``entry`` as the index reads it back: what its format records, nothing more."""
    if entry is None:
        return None
    [back] = parse_index(format_index([entry], algorithm))
    return back


def as_indexed_all(entries: list[Entry | None], algorithm: str) -> list[Entry | None]:
    """:func:`as_indexed` of each entry, by one format and one parse of them all (a
    per-entry round trip costs more than the rest of a tiny file's pairing); an entry
    that its lines record entirely (:func:`_reads_back`) is its own round trip."""
    if all(e is None or _reads_back(e) for e in entries):
        return entries
    present = sorted((e for e in entries if e is not None), key=lambda e: e.sort_key)
    back = parse_index(format_index(present, algorithm))
    if [b.key for b in back] != [e.key or case_key_of(e) for e in present]:
        return [as_indexed(e, algorithm) for e in entries]  # two entries of one key
    by_entry = {id(e): b for e, b in zip(present, back, strict=True)}
    return [by_entry[id(e)] if e is not None else None for e in entries]


def _reads_back(e: Entry) -> bool:
    """Whether the index reads ``e`` back as it is: a volume and/or an active
    segmentation of a key, nothing else (no versions, channels, data files or pin),
    and nothing unprintable in its key or paths (a tab or line break would cut a line).
    Every other shape takes the round trip."""
    vol, seg, version, older, pinned, seg_data, channels, key = e  # one unpack: hot
    if older or channels or seg_data is not None or pinned or not key:
        return False
    if seg is None and (vol is None or version is not None):
        return False
    return (key + (vol[0] if vol else "") + (seg[0] if seg else "")).isprintable()


def record_index(
    pipeline: Pipeline,
    snap: Snapshot,
    cases: list[Case],
    digest: str | None,
    write_index: Callable[[], str] | None = None,
    parallel: bool = False,
) -> None:
    """After ``pair`` wrote the index: the given cases' entries are what it records now.

    With ``write_index`` (which writes the index and gives its digest), the index is
    written by it while the memo files are (by a forked child, when ``parallel`` and
    they are many): the top, which names the index's digest, is written after both."""
    top = snap.top
    pipeline._top = top

    def record() -> None:
        dirty = set(top["dirty"])
        indexed = as_indexed_all([case.entry for case in cases], pipeline.algorithm)
        for case, entry in zip(cases, indexed, strict=True):
            pipeline._put_recorded(case, entry, dirty)  # leftovers: as they were
        snap.recorded()
        last = top["log"][-1] if top["log"] else None
        if cases and last is not None and last[0] == top["gen"] == pipeline._unsaved_gen:
            # the generation of this run's update is not written yet, so no consumer
            # holds it: it takes these keys too (None, all, after a full run: nothing)
            if last[1] is not None:
                pipeline.counted(top)
                _log_generation(top, [*last[1], *(c.key for c in cases)], joined=True)
        elif cases:  # what consumers memoised for these cases (verify: drift) is out of date
            pipeline.counted(top)
            _log_generation(top, [c.key for c in cases])
        top["dirty"] = sorted(dirty)
        pipeline._stale_counts |= pipeline._changed_shards
        top["index"] = digest
        top["index_stat"] = None  # the file just written: its digest is taken again next run

    if pipeline._pending is None:
        pipeline._pending = ({}, False)
    if write_index is None:
        record()
        pipeline.save()
        return

    def meanwhile() -> None:
        top["index"] = write_index()

    # the cases recorded by this process and, when the memo files are many, by the
    # child that writes them (in its own memory), at the same time
    pipeline.save(meanwhile, parallel, before=record)
