"""``python -m volsegsync``: the command line (the git hooks run other commands so)."""

from volsegsync.cli import run

if __name__ == "__main__":
    run()
