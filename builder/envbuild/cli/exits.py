"""How the command line reports a failure: one message, and the code from the one map.

Click-free, so that the console script's fast paths report exactly as the full
command line does. The codes come from :func:`envbuild.errors.exit_code_for`.
"""

from __future__ import annotations

import sys
import traceback

from envbuild.errors import EnvbuildError, exit_code_for, printable

DEBUG_HINT = "run `envbuild --debug ...` for the traceback, and report it"


def message(error: BaseException) -> str:
    """What a person reads about ``error``: its own words, or one line for a bug."""
    if isinstance(error, KeyboardInterrupt):
        return "envbuild: interrupted"
    if isinstance(error, EnvbuildError):  # user text in it is shown, never obeyed
        return f"error: {printable(error.render(), keep=chr(10))}"
    what = printable(" ".join(str(error).split())) or "(no message)"
    return f"error: internal error in envbuild: {type(error).__name__}: {what}"


def report(error: BaseException, *, run: bool = False, debug: bool = False) -> int:
    """Print ``error`` to stderr (its traceback only with ``debug``); return its exit code.

    ``run`` gives the codes of ``envbuild run`` (see :func:`exit_code_for`).
    """
    internal = not isinstance(error, (EnvbuildError, KeyboardInterrupt))
    if debug:
        traceback.print_exception(type(error), error, error.__traceback__)
    text = message(error)
    if internal and not debug:
        text += f" ({DEBUG_HINT})"
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
    return exit_code_for(error, run=run)
