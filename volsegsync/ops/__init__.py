"""The operations behind each command, usable from Python; the CLI only renders them."""
