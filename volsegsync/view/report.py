"""The static HTML review report: one page, its thumbnails beside it, no server.

:func:`thumbnail_key` names a pair's thumbnail by everything that decides its
pixels (both content hashes, the label set, the drawing code's version), so a
cached thumbnail is reused until one of those changes. :func:`page` renders the
HTML: a summary with small inline SVG bar charts, then one row per pair with its
thumbnail and problems, and a category filter in a few lines of inline script.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import xxhash

THUMB_VERSION = "1"  # bump when thumbnails are drawn differently
THUMB_PIXELS = (96, 96)  # a panel's longer side


class Row(NamedTuple):
    title: str  # "volume -> segmentation"
    key: str
    thumbnail: str | None  # file name below thumbs/, None when none could be drawn
    note: str  # why there is no thumbnail, or how the segmentation was placed
    problems: list[dict[str, Any]]  # Problem.to_json()


def thumbnail_key(volume_digest: str, seg_digest: str, labels: Mapping[int, str]) -> str:
    text = json.dumps([THUMB_VERSION, volume_digest, seg_digest, sorted(labels.items())])
    return xxhash.xxh3_128_hexdigest(text.encode())


# root, volume, segmentation, label set, files to write
ThumbnailTask = tuple[str, str, str, list[tuple[int, str]], list[str]]


def draw_thumbnail(task: ThumbnailTask) -> str | None:
    """Draw one pair's thumbnail to each of ``dests`` (the cache's file, then the
    report's); the one-line reason when it cannot.

    Written without fsync: a thumbnail is derived from the dataset's files, and one
    that a power cut leaves torn is found by :func:`complete_png` and drawn again."""
    from volsegsync.errors import VolsegsyncError
    from volsegsync.fsutil import atomic_write_bytes
    from volsegsync.view import import_numpy

    import_numpy()
    from volsegsync.view.stream import draw_pair

    root, vol, seg_path, labels, dests = task
    try:
        drawn = draw_pair(
            Path(root), vol, seg_path, dict(labels), pixels=THUMB_PIXELS, captions=False
        )
    except VolsegsyncError as e:
        return str(e)
    except Exception as e:  # one pair that cannot be drawn must not stop the report
        text = " ".join(str(e).split())[:200] or type(e).__name__
        return f"{seg_path}: cannot draw: {text}"
    png = drawn.figure.png()
    for dest in dests:
        try:
            atomic_write_bytes(Path(dest), png, durable=False)
        except OSError as e:
            raise VolsegsyncError(f"{dest}: cannot write: {e.strerror or e}") from None
    return None


PNG_START = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\0\0\0\0IEND\xaeB`\x82"  # the IEND chunk: length, type, CRC


def complete_png(data: bytes) -> bool:
    """Whether ``data`` is a whole PNG file from start to its end chunk (a thumbnail
    cut short by a power cut is not)."""
    return data.startswith(PNG_START) and data.endswith(PNG_END)


# --------------------------------------------------------------------------- page

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:1px solid #ddd;
vertical-align:top;text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:1.5em}.chart{background:#fff;padding:.5em;
border:1px solid #ddd}.error{color:#b00}.warning{color:#a60}.info{color:#468}
.ok{color:#272}img.thumb{image-rendering:pixelated;background:#111;display:block}
.cat{font-family:monospace}.hidden{display:none}
.comparison{background:#fff;border:1px solid #ddd;padding:.5em 1em;margin:1em 0}
img.change{max-width:100%;background:#111;display:block;margin:.5em 0}
"""

_SCRIPT = """
function applyFilter(){
  var want=document.getElementById('filter').value, shown=0;
  var rows=document.querySelectorAll('#pairs tbody tr');
  for(var i=0;i<rows.length;i++){
    var cats=rows[i].getAttribute('data-categories').split(' ');
    var show=want==='all'||cats.indexOf(want)>=0;
    rows[i].classList.toggle('hidden',!show); if(show){shown++;}
  }
  document.getElementById('shown').textContent=shown;
}
document.getElementById('filter').addEventListener('change',applyFilter);
applyFilter();
"""


def page(
    title: str,
    summary: Mapping[str, object],
    problems: Sequence[Mapping[str, Any]],
    distributions: Mapping[str, Counter[str]],
    rows: Sequence[Row],
    comparisons: Sequence[Mapping[str, Any]] = (),
    revs: str = "",
) -> str:
    e = html.escape
    by_cat = Counter((p["category"], p["severity"]) for p in problems)
    categories = sorted({c for c, _ in by_cat})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        "<h2>Summary</h2><table id='summary'>",
        *(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in summary.items()),
        "</table>",
        "<h2>Problems by category</h2><table id='categories'><tr><th>category</th>"
        "<th>severity</th><th>count</th></tr>",
        *(
            f"<tr><td class='cat'>{e(c)}</td><td class='{e(s)}'>{e(s)}</td><td>{n}</td></tr>"
            for (c, s), n in sorted(by_cat.items())
        ),
        "</table>",
        "<h2>Volumes</h2><div class='charts'>",
        *(
            f"<div class='chart'><div>{e(name)}</div>{bar_chart(counts)}</div>"
            for name, counts in distributions.items()
        ),
        "</div>",
    ]
    if revs:
        parts += [
            f"<h2>Version comparisons {e(revs)}</h2>",
            f"<p>{len(comparisons)} re-annotated pairs (version bumps and content changed "
            "in place). Green: voxels the new version adds or relabels; red: voxels it "
            "removes; white outline: unchanged.</p>",
            "<div id='comparisons'>",
            *(_comparison(c) for c in comparisons),
            "</div>",
        ]
    options = "".join(f"<option value='{e(c)}'>{e(c)}</option>" for c in categories)
    parts += [
        "<h2>Pairs</h2>",
        "<label>Show <select id='filter'><option value='all'>all pairs</option>"
        f"<option value='ok'>without problems</option>{options}</select></label> "
        "(<span id='shown'></span> shown)",
        "<table id='pairs'><thead><tr><th>picture</th><th>pair</th><th>problems</th></tr>"
        "</thead><tbody>",
        *(_row(r) for r in rows),
        "</tbody></table>",
        f"<script>{_SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts) + "\n"


def comparison_row(doc: Mapping[str, Any], out: Path) -> dict[str, Any]:
    """A :class:`~volsegsync.ops.revcompare.VersionComparison` JSON document with its
    picture made relative to the report folder ``out``."""
    row = dict(doc)
    if row.get("picture"):
        row["picture"] = Path(row["picture"]).relative_to(out).as_posix()
    return row


def _v(version: object) -> str:
    return "-" if version is None else f"v{version}"


def _comparison(c: Mapping[str, Any]) -> str:
    e = html.escape
    kind = "version bump" if c["kind"] == "new_version" else "content changed in place"
    head = (
        f"<h3>{e(str(c['key']))}: {_v(c['old']['version'])} → {_v(c['new']['version'])} "
        f"<small>({e(kind)})</small></h3><div><small class='cat'>"
        f"{e(c['old']['segmentation'])} → {e(c['new']['segmentation'])}</small></div>"
    )
    if c.get("error"):
        return f"<div class='comparison'>{head}<p class='error'>{e(c['error'])}</p></div>"
    picture = (
        f"<img class='change' src='{e(c['picture'])}' alt='{e(str(c['key']))}'>"
        if c.get("picture")
        else ""
    )
    cells = "".join(
        f"<tr><td>{r['value']}</td><td>{e(str(r['name']))}</td><td>{r['voxels_a']} → "
        f"{r['voxels_b']}</td><td>{r['ml_a']:.3f} → {r['ml_b']:.3f}</td>"
        f"<td>{'-' if r['dice'] is None else format(r['dice'], '.4f')}</td>"
        f"<td>{'-' if r['hausdorff_mm'] is None else format(r['hausdorff_mm'], '.2f')}</td>"
        f"<td>{e(r['status'])}</td></tr>"
        for r in c.get("labels") or []
    )
    table = (
        "<table class='numbers'><tr><th>value</th><th>label</th><th>voxels</th><th>mL</th>"
        f"<th>Dice</th><th>Hausdorff (mm)</th><th>status</th></tr>{cells}</table>"
        f"<div><small>{c.get('changed_voxels')} voxels changed label</small></div>"
    )
    return f"<div class='comparison'>{head}{picture}{table}</div>"


def _row(row: Row) -> str:
    e = html.escape
    cats = sorted({p["category"] for p in row.problems}) or ["ok"]
    picture = (
        f"<img class='thumb' src='thumbs/{e(row.thumbnail)}' alt='{e(row.key)}'>"
        if row.thumbnail
        else "<span>-</span>"
    )
    items = "".join(
        f"<li class='{e(p['severity'])}'><span class='cat'>[{e(p['category'])}]</span> "
        f"{e(p['message'])}</li>"
        for p in row.problems
    )
    problems = f"<ul>{items}</ul>" if items else "<span class='ok'>no problems</span>"
    note = f"<div><small>{e(row.note)}</small></div>" if row.note else ""
    return (
        f"<tr data-categories='{e(' '.join(cats))}'><td>{picture}</td>"
        f"<td>{e(row.title)}{note}</td><td>{problems}</td></tr>"
    )


def bar_chart(counts: Counter[str], most: int = 8, width: int = 260) -> str:
    """A small horizontal bar chart as inline SVG: the ``most`` commonest values."""
    top = counts.most_common(most)
    rest = sum(counts.values()) - sum(n for _, n in top)
    if rest:
        top.append(("other", rest))
    if not top:
        return "<svg width='10' height='10'></svg>"
    high = max(n for _, n in top)
    bar_h, label_w = 16, 120
    height = bar_h * len(top) + 4
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>"]
    for i, (name, n) in enumerate(top):
        y = 2 + i * bar_h
        w = max(1, round((width - label_w - 40) * n / high))
        out.append(
            f"<text x='0' y='{y + 12}' font-size='11'>{html.escape(name)}</text>"
            f"<rect x='{label_w}' y='{y + 2}' width='{w}' height='{bar_h - 4}' fill='#4a7ab5'/>"
            f"<text x='{label_w + w + 4}' y='{y + 12}' font-size='11'>{n}</text>"
        )
    out.append("</svg>")
    return "".join(out)
