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


def draw_thumbnail(task: tuple[str, str, str, list[tuple[int, str]], str]) -> str | None:
    """Draw one pair's thumbnail to ``dest``; the one-line reason when it cannot."""
    from volsegsync.errors import VolsegsyncError
    from volsegsync.fsutil import atomic_write_bytes
    from volsegsync.view.align import align
    from volsegsync.view.load import load_segmentation, load_volume
    from volsegsync.view.render import (
        auto_window,
        render,
        segmentation_painter,
        segmented_centre,
    )

    root, vol, seg_path, labels, dest = task
    try:
        volume = load_volume(Path(root), vol)
        seg = load_segmentation(Path(root), seg_path, dict(labels))
        alignment = align(volume, seg)
        figure = render(
            volume,
            segmentation_painter(seg, alignment),
            segmented_centre(volume, seg, alignment),
            auto_window(volume),
            pixels=THUMB_PIXELS,
            captions=False,
        )
    except VolsegsyncError as e:
        return str(e)
    except Exception as e:  # one pair that cannot be drawn must not stop the report
        text = " ".join(str(e).split())[:200] or type(e).__name__
        return f"{seg_path}: cannot draw: {text}"
    import io

    buf = io.BytesIO()
    figure.picture.save(buf, format="PNG", compress_level=6)
    atomic_write_bytes(Path(dest), buf.getvalue())
    return None


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
    comparisons: Sequence[str] = (),
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
    if comparisons:
        parts += ["<h2>Version comparisons</h2><ul>"]
        parts += [f"<li>{e(c)}</li>" for c in comparisons]
        parts += ["</ul>"]
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
