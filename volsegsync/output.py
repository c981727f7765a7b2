"""One output helper for every command: human text, JSON, CSV (or markdown).

A command builds a :class:`Rendered` (text lines, a JSON document, the rows of
its main table, and markdown lines for commands that offer ``--format markdown``)
and :func:`emit` prints the one the user asked for. Text and markdown are
quoted for the terminal (:func:`quote_text`): a file name from someone's branch
cannot send escape sequences to it. The JSON
documents carry ``"schema": "volsegsync.<command>/1"`` so scripts can rely on them.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import click

FORMATS = ("text", "json", "csv")


class Rendered(NamedTuple):
    text: list[str]  # printed unless -q (summary lines included)
    document: Mapping[str, Any]  # --format json
    rows: Sequence[Mapping[str, Any]]  # --format csv: the command's main table
    columns: Sequence[str] = ()  # its header, printed even when there are no rows
    markdown: Sequence[str] = ()  # --format markdown (commands that offer it)


def emit(rendered: Rendered, fmt: str, quiet: bool) -> None:
    if fmt == "json":
        import json  # csv and json: loaded by the runs that print them

        click.echo(json.dumps(rendered.document, indent=2, sort_keys=False, default=_default))
    elif fmt == "csv":
        click.echo(_csv(rendered.rows, rendered.columns), nl=False)
    elif fmt == "markdown":
        for line in rendered.markdown:
            click.echo(quote_text(line))
    elif not quiet:
        for line in rendered.text:
            click.echo(quote_text(line))


_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def quote_text(text: str) -> str:
    """``text`` safe for a terminal: control, format (bidi overrides such as U+202E)
    and line/paragraph separator characters become octal escapes of their UTF-8
    bytes, as git quotes file names (ESC is ``\\033``). JSON and CSV stay exact."""
    if text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE else c for c in text)


def _escape(c: str) -> str:
    return "".join(f"\\{b:03o}" for b in c.encode("utf-8", "surrogateescape"))


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GitHub-flavoured markdown table; cells are used as given (see :func:`md_code`)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def md_code(text: str) -> str:
    """``text`` as a code span that is safe in a table cell: no markup, links or HTML
    take effect, a ``|`` does not end the cell."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    fields = list(columns) or (list(rows[0].keys()) if rows else [])
    if not fields:
        return ""
    import csv

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if isinstance(value, Mapping):
        import json

        return json.dumps(value, sort_keys=True, default=_default)
    return value


def _default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
