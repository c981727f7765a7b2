"""The ``volsegsync`` command line: parses arguments and renders results, nothing more.

Each command lives in its own module under :mod:`volsegsync.commands`; the work
is done by :mod:`volsegsync.ops`. Exit codes: 0 ok, 1 problems found, 2 usage or
configuration error. No traceback reaches a user.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from volsegsync import __version__
from volsegsync.commands import COMMANDS, load_command
from volsegsync.commands.common import EXIT_OK, EXIT_USAGE, Outcome, chdir_option
from volsegsync.errors import VolsegsyncError
from volsegsync.output import quote_text


class VolsegsyncGroup(click.Group):
    """Turns every VolsegsyncError into one line and an exit code: no tracebacks.

    Commands load lazily (:data:`volsegsync.commands.COMMANDS`): list them with
    ``list_commands`` and get one with ``get_command``, not through ``.commands``.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name) or load_command(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        global _ran
        name, command, rest = super().resolve_command(ctx, args)
        _ran = name
        return name, command, rest

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Outcome as o:
            ctx.exit(o.code)
        except VolsegsyncError as e:
            click.echo(quote_text(f"volsegsync: error: {e}"), err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("volsegsync: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            ctx.exit(EXIT_OK)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as e:
            if _is_cache_error(e):
                click.echo(
                    f"volsegsync: error: a cache in .volsegsync/state/ cannot be used ({e}); "
                    "the folder may be read-only or damaged: delete it to start afresh",
                    err=True,
                )
                ctx.exit(EXIT_USAGE)
            # a bug of ours: say so in one line, without a traceback
            if os.environ.get("VOLSEGSYNC_DEBUG"):
                raise
            click.echo(
                f"volsegsync: internal error: {type(e).__name__}: {e} "
                "(set VOLSEGSYNC_DEBUG=1 for the traceback)",
                err=True,
            )
            ctx.exit(EXIT_USAGE)
        return None


def _is_cache_error(e: Exception) -> bool:
    """Whether ``e`` comes from a cache database (sqlite3 is imported only by a run
    that opens one: a run that did not cannot have raised its errors)."""
    sqlite3 = sys.modules.get("sqlite3")
    return sqlite3 is not None and isinstance(e, sqlite3.Error)


@click.group(cls=VolsegsyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@chdir_option
@click.version_option(__version__, prog_name="volsegsync")
@click.pass_context
def main(ctx: click.Context, chdir: str | None) -> None:
    """Keep volume/segmentation training pairs right, in git.

    \b
    Example:
      volsegsync example demo && cd demo
      volsegsync pair          # pair volumes with segmentations, write the index
      volsegsync status        # what changed since
    """
    ctx.obj = {"chdir": chdir}


# Commands that leave nothing to finish at exit (their memos and the index are written
# and closed before they return) and that run often: in hooks, in loops, after every
# edit. Freeing the objects of a pair of 40,000 files takes about 40 ms.
FAST_EXIT = frozenset({"status", "verify", "pair"})
_ran: str | None = None  # the command this process ran


def run() -> None:
    """The console script (and ``python -m volsegsync``): :func:`main`, then, after
    ``status`` or ``verify``, an exit without the interpreter's teardown (freeing every
    object of a run over 100,000 files takes longer than some runs), as mypy does. Only
    when nothing is registered to run at exit and no other thread is alive."""
    from volsegsync import index

    index.FREEZE_SURVIVORS = True  # this process ends with its command
    try:
        main(prog_name="volsegsync")
    except SystemExit as e:
        if _ran in FAST_EXIT and isinstance(e.code, int | None) and _nothing_left_to_do():
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except (OSError, ValueError):
                raise e from None
            os._exit(e.code or 0)
        raise
    finally:  # the interpreter's teardown as usual: every finaliser runs
        import gc

        gc.unfreeze()


def _nothing_left_to_do() -> bool:
    import atexit
    import threading

    count = getattr(atexit, "_ncallbacks", None)
    return count is not None and count() == 0 and threading.active_count() == 1
