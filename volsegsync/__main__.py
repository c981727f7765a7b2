"""``python -m volsegsync``: the command line (the git hooks run other commands so)."""

from volsegsync.cli import main

if __name__ == "__main__":
    main(prog_name="volsegsync")
