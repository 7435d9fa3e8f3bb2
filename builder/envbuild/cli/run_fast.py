"""``envbuild run`` without click, for the plain forms of the command.

A run's whole envbuild cost is interpreter start plus imports, paid before the
first engine request; click and the full command line are about a quarter of
it. So the console script first offers the arguments to :func:`fast_run`,
which takes ``run`` with the options of
:data:`~envbuild.cli.run_options.RUN_OPTIONS` that are marked ``fast``, each
written as ``OPTION VALUE`` (or a flag), before ENV.

Anything else (``--help``, ``--dry-run``, ``--opt=value``, ``--``, grouped
short flags, an unknown option, missing arguments) returns ``None`` and the
full command line in :mod:`envbuild.cli.run` takes over. Both read the same
option list and build the run with
:func:`~envbuild.cli.run_options.run_config`, and both report errors with
:func:`envbuild.cli.exits.report`: a property test holds them to the same
result on command lines generated from the click command's own parameters.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from envbuild.cli.run_options import RUN_OPTIONS, RunOption, initial_values, run_config

_BY_NAME: dict[str, RunOption] = {name: o for o in RUN_OPTIONS if o.fast for name in o.names}


def parse(argv: Sequence[str]) -> tuple[str, str, tuple[str, ...], dict[str, Any]] | None:
    """ENV, SCRIPT, ARGS and the option values of a plain ``run`` command line, else ``None``."""
    if not argv or argv[0] != "run":
        return None
    values = initial_values()
    index = 1
    while index < len(argv):
        option = _BY_NAME.get(argv[index])
        if option is None:
            if argv[index].startswith("-"):
                return None
            break
        if option.flag:
            values[option.dest] = True
            index += 1
            continue
        if index + 1 >= len(argv):
            return None
        value = argv[index + 1]
        if option.multiple:
            values[option.dest] += (value,)
        else:
            values[option.dest] = value  # the last one wins, as with click
        index += 2
    rest = argv[index:]
    if len(rest) < 2:
        return None
    return rest[0], rest[1], tuple(rest[2:]), values


def fast_run(argv: Sequence[str]) -> int | None:
    """Run a plain ``envbuild run`` command line; ``None`` means "use the full CLI"."""
    parsed = parse(argv)
    if parsed is None:
        return None
    environment, script, arguments, values = parsed
    quiet = values["quiet"]

    def log(line: str) -> None:
        if quiet and not line.startswith(("envbuild:", "warning:")):
            return
        print(line, file=sys.stderr, flush=True)

    try:
        import envbuild.run as runner

        config = run_config(environment, script, arguments, values)
        result = runner.run(config, log=log)
    except (Exception, KeyboardInterrupt) as exc:
        from envbuild.cli.exits import report

        return report(exc, run=True)
    return result.exit_code
