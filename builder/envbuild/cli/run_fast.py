"""``envbuild run`` without click, for the plain forms of the command.

A run's whole envbuild cost is interpreter start plus imports, paid before the
first engine request; click and the full command line are about a quarter of
it. So the console script first offers the arguments to :func:`fast_run`, which
accepts only ``run`` with the options below, each written as ``OPTION VALUE``
(or a flag), before ENV::

    --source-dir -e/--env --env-file --mount --input --output --gpus
    --shm-size -w/--workdir -u/--user --timeout --name
    --privileges --cap-add -q/--quiet --allow-dangerous-mount

Anything else (``--help``, ``--dry-run``, ``--opt=value``, ``--``, a bad
``--timeout``, an unknown option, missing arguments) returns ``None`` and the
full command line in :mod:`envbuild.cli.run` takes over, which parses, reports
usage errors and runs the same way. Both build the run with
:func:`envbuild.run.config_from_options` and report errors with the same
words and exit codes; a unit test holds them to the same result.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

_VALUE_OPTIONS = {
    "--source-dir": "source_dir",
    "-e": "variables",
    "--env": "variables",
    "--env-file": "env_files",
    "--mount": "mounts",
    "--input": "inputs",
    "--output": "outputs",
    "--gpus": "gpus",
    "--shm-size": "shm_size",
    "-w": "workdir",
    "--workdir": "workdir",
    "-u": "user",
    "--user": "user",
    "--timeout": "timeout",
    "--name": "name",
    "--privileges": "privileges",
    "--cap-add": "cap_add",
}
_REPEATED = frozenset({"variables", "env_files", "mounts", "inputs", "outputs", "cap_add"})
_FLAGS = {"-q": "quiet", "--quiet": "quiet", "--allow-dangerous-mount": "allow_dangerous_mount"}


def parse(argv: Sequence[str]) -> dict[str, Any] | None:
    """The options, ENV, SCRIPT and ARGS of a plain ``run`` command line, else ``None``."""
    if not argv or argv[0] != "run":
        return None
    values: dict[str, Any] = {key: [] for key in _REPEATED}
    values.update(quiet=False, allow_dangerous_mount=False)
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg in _FLAGS:
            values[_FLAGS[arg]] = True
            index += 1
        elif arg in _VALUE_OPTIONS:
            if index + 1 >= len(argv):
                return None
            key, value = _VALUE_OPTIONS[arg], argv[index + 1]
            if key in _REPEATED:
                values[key].append(value)
            else:
                values[key] = value  # the last one wins, as with click
            index += 2
        elif arg.startswith("-"):
            return None
        else:
            break
    rest = argv[index:]
    if len(rest) < 2:
        return None
    if "timeout" in values:
        try:
            values["timeout"] = float(values["timeout"])
        except ValueError:
            return None
        if not values["timeout"] > 0:
            return None
    values["environment"], values["script"] = rest[0], rest[1]
    values["arguments"] = tuple(rest[2:])
    return values


def fast_run(argv: Sequence[str]) -> int | None:
    """Run a plain ``envbuild run`` command line; ``None`` means "use the full CLI"."""
    parsed = parse(argv)
    if parsed is None:
        return None
    quiet = parsed.pop("quiet")

    def log(line: str) -> None:
        if quiet and not line.startswith(("envbuild:", "warning:")):
            return
        print(line, file=sys.stderr, flush=True)

    try:
        from envbuild import run as runner

        config = runner.config_from_options(**parsed)
        result = runner.run(config, log=log)
    except (Exception, KeyboardInterrupt) as exc:
        from envbuild.cli.exits import report

        return report(exc, run=True)
    return result.exit_code
