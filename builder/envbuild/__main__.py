"""``python -m envbuild``: the command line."""

from envbuild.launcher import entry

entry()
