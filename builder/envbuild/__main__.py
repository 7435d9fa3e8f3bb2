"""``python -m envbuild``: the command line."""

from envbuild.cli.launcher import entry

entry()
