"""``volsegsync report``: verify, draw (or reuse) a thumbnail per pair, write the page.

Thumbnails are cached in ``.volsegsync/state/thumbs/`` under
:func:`~volsegsync.view.report.thumbnail_key`, so after a change only pairs
whose files changed are drawn again; the output folder gets a copy of each
thumbnail it lacks. The page and thumbnails are written atomically.
"""

from __future__ import annotations

import functools
import marshal
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from volsegsync.dataset import Dataset, default_jobs
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import MEMO_LIMIT, atomic_write_bytes, read_small
from volsegsync.memo import load_memo, save_memo
from volsegsync.ops.monitoring import monitor_for
from volsegsync.ops.snapshot import ProgressFactory, Snapshot, take_snapshot
from volsegsync.ops.verify import run_verify
from volsegsync.pairing import Pair
from volsegsync.view import check_pillow
from volsegsync.view.report import (
    Row,
    ThumbnailTask,
    comparison_row,
    complete_png,
    draw_thumbnail,
    page,
    thumbnail_key,
)
from volsegsync.workers import Forked, can_fork, framed, parallel_map, read_framed

if TYPE_CHECKING:
    from volsegsync.ops.revcompare import VersionComparison

THUMBS = "thumbs"
COMPARE_DIR = "compare"  # the version comparisons' pictures (--rev)


class ReportResult(NamedTuple):
    html: str  # path of index.html
    pairs: int
    problems: int
    drawn: int
    cached: int
    failed: int
    comparisons: list[VersionComparison]  # with --rev: every re-annotated pair


def run_report(
    ds: Dataset,
    output: str | Path,
    rev: str | None = None,
    full: bool = False,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
) -> ReportResult:
    """The report's cost follows what changed: one walk (verify's snapshot), pairs
    and digests from the pipeline's memo (no re-scan, no re-hash), thumbnails drawn
    only for new content, and numpy and the decoders imported only to draw one
    (nibabel, pynrrd and Pillow not even then, for plain files: thumbnails have no
    text, and plain NIfTI-1 and NRRD headers are read by our own parsers)."""
    check_pillow()
    revs = _parse_rev(rev) if rev is not None else None
    out = Path(output)
    for folder in (out, out / THUMBS):
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise VolsegsyncError(f"{folder}: not a folder (a symbolic link is not followed)")
    comparisons = _comparisons(ds, revs, out, progress) if revs is not None else []
    memo = _CaseMemo(ds)
    drawer = _Drawer(jobs or default_jobs())
    try:
        # one walk, for verify and here (through the file-system monitor when enabled);
        # files changed since the last report: likely thumbnails to draw, so the
        # drawing child starts (imports numpy) while the snapshot hashes and pairs
        snap = take_snapshot(
            ds, jobs=jobs, progress=progress, monitor=monitor_for(ds), walked=memo.walked(drawer)
        )
        memo.update(snap)
        all_pairs, digests = memo.pairs()
        names, todo, tasks = _thumbnail_plan(ds, out, all_pairs, digests)
        tick = progress("drawing thumbnails", len(tasks)) if progress and tasks else None
        # a few thumbnails are drawn by a child process while this one verifies
        drawer.give(tasks, tick)
        report = run_verify(ds, fast=not full, jobs=jobs, progress=progress, snapshot=snap)
        # the page is made while the thumbnails are drawn, as if all could be;
        # made again in the rare run where some cannot
        by_file: dict[str, list[dict[str, object]]] = {}
        for p in report.problems:
            for f in dict.fromkeys(p.files):
                by_file.setdefault(f, []).append(p.to_json())
        distributions = _distributions(memo.summaries(), [p.volume for p in all_pairs if p.volume])
        pairs = sum(1 for p in all_pairs if p.volume and p.segmentation)
        summary: dict[str, object] = {
            "pairs": pairs,
            "files": report.files_checked,
            "errors": sum(1 for p in report.problems if p.severity == "error"),
            "warnings": sum(1 for p in report.problems if p.severity == "warning"),
            "checks": "all (content decoded)" if full else "header only (--full for all)",
        }

        def make_page(errors: dict[str, str]) -> tuple[list[Row], str]:
            rows = _rows(all_pairs, names, by_file, errors)
            text = page(
                f"volsegsync report: {ds.root.name}",
                summary,
                [p.to_json() for p in report.problems],
                distributions,
                rows,
                [comparison_row(c.to_json(), out) for c in comparisons],
                f"{revs[0]}..{revs[1]}" if revs else "",
            )
            return rows, text

        rows, text = make_page({})
        results = drawer.results()
        errors = {name: e for name, e in zip(todo, results, strict=True) if e is not None}
        failed = len(errors)
        if errors:
            rows, text = make_page(errors)
        index = out / "index.html"
        # derived from the dataset like its thumbnails: replaced atomically, not fsynced
        # (a power cut may cost the page, which the next run writes again)
        atomic_write_bytes(index, text.encode("utf-8"), durable=False)
    finally:
        drawer.close()  # the child that answered is reaped while the page was written
    drawn = len(todo) - failed
    cached = sum(1 for r in rows if r.thumbnail) - drawn
    return ReportResult(str(index), pairs, len(report.problems), drawn, cached, failed, comparisons)


def _thumbnail_plan(
    ds: Dataset, out: Path, all_pairs: list[Pair], digests: dict[str, str]
) -> tuple[list[str], list[str], list[ThumbnailTask]]:
    """Each pair's thumbnail name ("" when it has none), the names to draw (the others
    are in the output folder already, or copied there from the cache) and their tasks."""
    labels = dict(ds.config.verify.labels)
    cache = ds.state_dir / THUMBS
    cache.mkdir(parents=True, exist_ok=True)
    (out / THUMBS).mkdir(parents=True, exist_ok=True)
    cached_names = _names(cache)
    published = _names(out / THUMBS)  # named by content: one there is the same picture
    names: list[str] = []
    todo: list[str] = []
    for pair in all_pairs:
        name = ""
        if pair.volume in digests and pair.segmentation in digests:
            name = f"{thumbnail_key(digests[pair.volume], digests[pair.segmentation], labels)}.png"
            if name not in published:
                if not (name in cached_names and _publish(cache / name, out / THUMBS / name)):
                    todo.append(name)
                published.add(name)
        names.append(name)
    first = {name: i for i, name in reversed(list(enumerate(names)))}
    tasks = [
        (
            str(ds.root),
            str(all_pairs[first[name]].volume),
            str(all_pairs[first[name]].segmentation),
            sorted(labels.items()),
            [str(cache / name), str(out / THUMBS / name)],
        )
        for name in todo
    ]
    return names, todo, tasks


def _rows(
    all_pairs: list[Pair],
    names: list[str],
    by_file: dict[str, list[dict[str, object]]],
    errors: dict[str, str],
) -> list[Row]:
    """One row per pair: its thumbnail (or why there is none) and its problems."""
    rows: list[Row] = []
    for pair, name in zip(all_pairs, names, strict=True):
        files = [f for f in (pair.volume, pair.segmentation) if f]
        problems = [q for f in files for q in by_file.get(f, [])]
        problems = list({(q["category"], q["message"]): q for q in problems}.values())
        title = f"{pair.volume or '(no volume)'} -> {pair.segmentation or '(no segmentation)'}"
        path = pair.volume or pair.segmentation or ""
        if name in errors:  # every pair of that content
            rows.append(Row(title, path, None, errors[name], problems))
        else:
            rows.append(Row(title, path, name or None, "", problems))
    return rows


FORKED_THUMBNAILS = 256  # fewer are drawn by forked children while verify runs
INLINE_THUMBNAILS = 16  # fewer are not worth a pool (without fork: in-process)
MEMO_FORMAT = 4

Tasks = list[ThumbnailTask]


class _Drawer:
    """Draws thumbnails while the caller verifies.

    Fewer than :data:`FORKED_THUMBNAILS` (a re-run after a change of a few percent)
    are drawn by a forked child: it imports numpy and the drawing code (~55 ms)
    while the caller works, then takes its tasks through a pipe, forks up to
    ``workers - 1`` more children, which share the modules, and each draws its
    share. The child is started by :meth:`start` as soon as files are known to have
    changed (while the snapshot hashes and pairs them), else by :meth:`give` once
    the tasks are known; a run with nothing to draw never starts one (no numpy).
    More (a cold run) are drawn by a pool of ``workers`` processes after verify,
    numpy imported first by this process so that they share it, with progress ticks
    as they come; with one worker (or without ``fork``, or beside another thread)
    in this process. Each picture is written by the process that drew it; only the
    one-line reasons of those that could not be drawn come back. What a child that
    died did not answer is drawn by its parent.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.tasks: Tasks = []
        self.tick: Callable[[int], None] | None = None
        self.child: _Drawing | None = None

    def start(self) -> None:
        """Start the drawing child, which imports numpy and waits for its tasks."""
        if self.child is None and self.workers > 1 and can_fork():
            self.child = _Drawing(self.workers)

    def give(self, tasks: Tasks, tick: Callable[[int], None] | None) -> None:
        """The thumbnails to draw: handed to the child (started now if it was not)
        when they are few, else left to :meth:`results`."""
        self.tasks, self.tick = tasks, tick
        if not tasks or len(tasks) >= FORKED_THUMBNAILS:
            self.close()  # nothing for a child (or too much): it ends unused
            return
        self.start()
        if self.child is not None:
            self.child.send(tasks)

    def results(self) -> list[str | None]:
        """Each task's one-line reason, or None when its thumbnail was drawn."""
        if self.child is not None:
            outcome = _outcomes(self.child.result(), len(self.tasks))
            if outcome is None:  # it died: the tasks are drawn here
                self.close()
            if isinstance(outcome, str):
                raise VolsegsyncError(outcome)
            if outcome is not None:
                if self.tick:
                    self.tick(len(outcome))
                return outcome
        if len(self.tasks) >= INLINE_THUMBNAILS and self.workers > 1:
            _preload()  # forked workers share the parent's modules instead of importing them
        return list(
            parallel_map(
                draw_thumbnail, self.tasks, self.workers, self.tick, inline_limit=INLINE_THUMBNAILS
            )
        )

    def close(self) -> None:
        if self.child is not None:
            self.child.close()
            self.child = None


class _Drawing(Forked):
    """The drawing child (:func:`_draw_split`), forked before its tasks are known: it
    imports numpy and the drawing code meanwhile, and :meth:`send` hands it the tasks
    through a second pipe, framed by their length (a process forked meanwhile may hold
    the pipe open: the child reads what the frame says, never waits for the end)."""

    def __init__(self, workers: int) -> None:
        inbox, self.outbox = os.pipe()
        super().__init__(
            functools.partial(_draw_split, workers, functools.partial(_receive, inbox))
        )
        os.close(inbox)
        os.set_blocking(self.outbox, False)  # the child reads once it has prepared
        self.unsent = b""

    def send(self, tasks: Tasks) -> None:
        """Hand the child its tasks: what the pipe takes now, the rest in :meth:`result`."""
        self.unsent = framed(marshal.dumps(tasks))
        self._flush()

    def _flush(self) -> None:
        """Write what can be written of the tasks; all of it once the pipe blocks."""
        try:
            while self.unsent:
                self.unsent = self.unsent[os.write(self.outbox, self.unsent) :]
        except BlockingIOError:
            return
        except OSError:  # the child is gone: its answer will be missing
            self.unsent = b""
        os.close(self.outbox)
        self.outbox = -1

    def result(self) -> Any:
        if self.outbox >= 0:
            os.set_blocking(self.outbox, True)
            self._flush()
        return super().result()

    def close(self, kill: bool = True) -> None:
        if self.outbox >= 0:
            os.close(self.outbox)
            self.outbox = -1
        super().close(kill)


def _receive(inbox: int) -> Tasks:
    """In the drawing child: the tasks its parent sends (see :meth:`_Drawing.send`)."""
    data = read_framed(inbox)
    os.close(inbox)
    if data is None:
        raise EOFError("the report's process sent no tasks")
    tasks: Tasks = marshal.loads(data)
    return tasks


def _draw_list(tasks: Tasks) -> list[str | None] | str:
    """Each task's outcome, or the one-line error that stopped the drawing."""
    try:
        return [draw_thumbnail(t) for t in tasks]
    except VolsegsyncError as e:
        return str(e)


def _draw_split(workers: int, receive: Callable[[], Tasks]) -> list[str | None] | str:
    """In the drawing child: numpy and the drawing code imported, then the tasks
    received and split between this process and up to ``workers - 1`` more children,
    which share the modules (two tasks each at least). A short-lived process: without
    the cyclic garbage collector (its passes cost ~10% of numpy's import)."""
    import gc

    gc.disable()
    _preload()
    tasks = receive()
    parts = max(1, min(workers, len(tasks) // 2))
    size = -(-len(tasks) // parts)
    chunks = [tasks[i : i + size] for i in range(0, len(tasks), size)] or [[]]
    others = [Forked(functools.partial(_draw_list, chunk)) for chunk in chunks[1:]]
    try:
        answers = [_draw_list(chunks[0])]
        for other, chunk in zip(others, chunks[1:], strict=True):
            answer = _outcomes(other.result(), len(chunk))
            # a child that died: its share is drawn here
            answers.append(_draw_list(chunk) if answer is None else answer)
    finally:
        for other in others:
            other.close()
    outcomes: list[str | None] = []
    for answer in answers:
        if isinstance(answer, str):
            return answer
        outcomes.extend(answer)
    return outcomes


def _outcomes(answer: Any, count: int) -> list[str | None] | str | None:
    """A child's answer checked: ``count`` outcomes, a one-line error, or None."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, list) and len(answer) == count:
        return [e if isinstance(e, str) else None for e in answer]
    return None


class _CaseMemo:
    """The report's memo (``.volsegsync/state/report.marshal``, by the pipeline's
    generation): per case key its pairs and unpaired files (a verify report holds only
    those that problems touch), their files' digests, and the header summaries of its
    files that the dataset-level checks gathered. A re-run loads only the cases that
    changed since: pairs and digests from the pipeline's memo (no re-scan, no re-hash),
    summaries from the checks' shards of those keys."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.key = ds.state_key("report", str(MEMO_FORMAT), ds.config.pairing.by)
        self.path = ds.state_dir / "report.marshal"
        self.loaded = load_memo(self.path, self.key)

    def walked(self, drawer: _Drawer) -> Callable[[str], None]:
        """What the snapshot tells once it has walked the dataset: its fingerprint,
        which differs from the last report's when files changed since (or were
        touched): then thumbnails are likely to be drawn, and the drawing child starts.
        Not on a first run (no memo: many thumbnails, drawn by a pool)."""
        last = self.loaded["fp"] if self.loaded is not None else ""

        def seen(fp: str) -> None:
            if last and fp != last:
                drawer.start()

        return seen

    def update(self, snap: Snapshot) -> None:
        """The memo brought up to date with the snapshot."""
        self.snap = snap
        key, memo = self.key, self.loaded
        fp = snap.top["fp"]  # names and stats of every folder ("" when not known)
        moved = memo is None or not fp or memo["fp"] != fp
        # a pipeline memo started afresh has another epoch in its stamp: then todo is None
        todo = None if memo is None else snap.changed_since(memo["gen"])
        self.todo = todo
        self.cases: dict[str, Any] = {} if memo is None or todo is None else memo["cases"]
        self.summ: dict[str, Any] | None = None
        if memo is not None and todo is not None:
            self.summ = memo["summ"]
        self.dirty = todo is None or bool(todo) or moved
        if self.dirty:
            for k in todo or ():
                self.cases.pop(k, None)
            for case in snap.cases(None if todo is None else sorted(todo)):
                known = {m.path: m.digest for m in case.members if m.digest}
                self.cases[case.key] = [
                    (tuple(p), known.get(p.volume or ""), known.get(p.segmentation or ""))
                    for p in case.pairs
                ]
        self.memo = {"key": key, "fp": fp, "gen": snap.stamp, "cases": self.cases}

    def pairs(self) -> tuple[list[Pair], dict[str, str]]:
        """Every pair and unpaired file, and the digests of their files."""
        pairs: dict[Pair, None] = {}
        digests: dict[str, str] = {}
        for k in sorted(self.cases):
            for plain, vol_digest, seg_digest in self.cases[k]:
                pair = Pair(*plain)
                pairs[pair] = None
                if vol_digest and pair.volume:
                    digests[pair.volume] = vol_digest
                if seg_digest and pair.segmentation:
                    digests[pair.segmentation] = seg_digest
        return list(pairs), digests

    def summaries(self) -> dict[str, tuple[str | None, Any, Any]]:
        """Orientation, spacing and shape of each file the dataset-level checks
        summarised, from the facts ``verify`` just left in the state folder (only the
        changed keys' are read when the checks are at this snapshot's generation;
        all keys' in metadata mode, where a pair's files belong to two keys). Saves
        the memo when anything changed."""
        from volsegsync.dataset_checks import summaries_by_key

        summ = self.summ
        todo = self.todo
        if summ is not None and todo and self.snap.pipeline.mode != "metadata":
            found = summaries_by_key(self.ds, sorted(todo))
            if found is None or found[0] != self.snap.stamp:
                summ = None
            else:
                for k in todo:
                    summ.pop(k, None)
                summ.update((k, {p: s[:3] for p, s in v.items()}) for k, v in found[1].items())
        if summ is None or (todo and self.snap.pipeline.mode == "metadata"):
            found = summaries_by_key(self.ds)
            summ = (
                None
                if found is None
                else {k: {p: s[:3] for p, s in v.items()} for k, v in found[1].items()}
            )
            self.dirty = True
        if self.dirty:
            save_memo(self.path, {**self.memo, "summ": summ})
        return {p: s for v in (summ or {}).values() for p, s in v.items()}


def _preload() -> None:
    """Import what drawing needs (in a child started early)."""
    from volsegsync.view import import_numpy

    import_numpy()
    import volsegsync.decode
    import volsegsync.view.metrics
    import volsegsync.view.render
    import volsegsync.view.stream  # noqa: F401  (numpy, the decoders, the renderer)


def _names(folder: Path) -> set[str]:
    """The regular files' names in ``folder`` (one directory read instead of a stat each)."""
    with os.scandir(folder) as entries:
        return {e.name for e in entries if e.is_file(follow_symlinks=False)}


def _publish(cached: Path, target: Path) -> bool:
    """Copy a cached thumbnail into the output folder; False when the cached file is
    not a whole PNG (a power cut after it was written without fsync): draw it again."""
    try:
        data = read_small(cached, MEMO_LIMIT, "thumbnail")
    except (OSError, VolsegsyncError):
        return False
    if not complete_png(data):
        return False
    try:
        atomic_write_bytes(target, data, durable=False)
    except OSError as e:
        raise VolsegsyncError(f"{target}: cannot write: {e.strerror or e}") from None
    return True


def _distributions(
    summaries: dict[str, tuple[str | None, Any, Any]], volumes: list[str]
) -> dict[str, Counter[str]]:
    """Orientation, spacing and shape of the volumes (header summaries)."""
    orientation: Counter[str] = Counter()
    spacing: Counter[str] = Counter()
    shape: Counter[str] = Counter()
    for path in volumes:
        summary = summaries.get(path)
        if summary is None or not summary[2]:
            continue
        orientation[summary[0] or "unknown"] += 1
        spacing[" x ".join(f"{s:.3g}" for s in summary[1])] += 1
        shape[" x ".join(str(n) for n in summary[2])] += 1
    return {"orientation": orientation, "spacing (mm)": spacing, "shape": shape}


def _parse_rev(rev: str) -> tuple[str, str]:
    a, dots, b = rev.partition("..")
    if not dots or not a or not b or b.startswith("."):
        raise VolsegsyncError(f"--rev {rev}: expected A..B (two revisions)")
    return a, b


def _comparisons(
    ds: Dataset, revs: tuple[str, str], out: Path, progress: ProgressFactory | None
) -> list[VersionComparison]:
    """The version comparisons of every pair re-annotated between the two revisions."""
    from volsegsync.changes import diff
    from volsegsync.ops.revcompare import compare_changes, reannotations
    from volsegsync.view.sources import index_at

    old, new = index_at(ds, revs[0]), index_at(ds, revs[1])
    changes = diff(old.entries, new.entries)
    count = len(reannotations(changes))
    tick = progress("comparing versions", count) if progress and count else None
    return compare_changes(ds, changes, out / COMPARE_DIR, (old.algorithm, new.algorithm), tick)
