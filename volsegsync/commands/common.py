"""Shared pieces of the command layer: options, file lists, progress, problem rendering."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.output import FORMATS
from volsegsync.problems import Problem

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


class Outcome(Exception):
    """Raised by a command to leave with an exit code after rendering."""

    def __init__(self, code: int) -> None:
        self.code = code


def conclude(problems_found: bool) -> None:
    """The one place a command's result becomes its exit code: 1 when problems were
    found (usage and configuration errors are 2, raised as VolsegsyncError)."""
    if problems_found:
        raise Outcome(EXIT_PROBLEMS)


chdir_option = click.option(
    "-C",
    "chdir",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Run as if started in DIR (like git -C).",
)


def jobs_option(help_text: str) -> Callable[[F], F]:
    """``-j/--jobs N``: parallel readers or worker processes (default: all cores)."""
    return click.option(
        "-j", "--jobs", type=click.IntRange(min=1), default=None, metavar="N", help=help_text
    )


def common_options(func: F, formats: Sequence[str] = FORMATS) -> F:
    """``-C``, ``--format`` and ``-q`` on every command."""

    @chdir_option
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(formats),
        default="text",
        show_default=True,
        help="Output format.",
    )
    @click.option(
        "-q", "--quiet", is_flag=True, help="Print nothing in text mode; the exit code tells."
    )
    @functools.wraps(func)
    def wrapper(*args: Any, chdir: str | None, fmt: str, quiet: bool, **kw: Any) -> Any:
        ctx = click.get_current_context()
        for folder in ((ctx.obj or {}).get("chdir"), chdir):  # like git: each -C from the last
            if folder:
                if not os.path.isdir(folder):
                    raise VolsegsyncError(f"-C {folder}: no such folder")
                os.chdir(folder)
        return func(*args, fmt=fmt, quiet=quiet, **kw)

    return wrapper  # type: ignore[return-value]


def read_file_args(files: tuple[str, ...]) -> list[str] | None:
    """File arguments; a lone ``-`` reads one path per line (or NUL-separated) from stdin."""
    if not files:
        return None
    out: list[str] = []
    for f in files:
        if f == "-":
            data = sys.stdin.buffer.read()
            sep = b"\0" if b"\0" in data else b"\n"
            out.extend(os.fsdecode(p.rstrip(b"\r")) for p in data.split(sep) if p.strip())
        else:
            out.append(f)
    return out


@contextlib.contextmanager
def progress_factory(quiet: bool) -> Iterator[Callable[[str, int], Callable[[int], None]] | None]:
    """Progress bars on stderr, only when stderr is a terminal."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    bars: list[Any] = []

    def factory(label: str, total: int) -> Callable[[int], None]:
        bar = click.progressbar(length=total, label=label, file=sys.stderr)
        bar.__enter__()
        bars.append(bar)
        return bar.update

    try:
        yield factory
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)


def problem_lines(problems: list[Problem]) -> list[str]:
    return [f"{p.severity}: [{p.category}] {p.message}" for p in problems]


PROBLEM_COLUMNS = ["category", "severity", "files", "message", "details"]


def problem_rows(problems: list[Problem]) -> list[dict[str, Any]]:
    return [p.to_json() for p in problems]


def has_errors(problems: list[Problem]) -> bool:
    return any(p.severity == "error" for p in problems)


def open_dataset() -> Dataset:
    return Dataset.open(Path.cwd())


def summary_counts(problems: list[Problem]) -> dict[str, int]:
    return {
        "errors": sum(1 for p in problems if p.severity == "error"),
        "warnings": sum(1 for p in problems if p.severity == "warning"),
        "infos": sum(1 for p in problems if p.severity == "info"),
    }
