"""The options of ``envbuild run``, declared once.

:data:`RUN_OPTIONS` is the one list: :mod:`envbuild.cli.run` builds the click
command from it, and :mod:`envbuild.cli.run_fast` parses the plain forms of
the command line with it, without click. Both hand what they parsed to
:func:`run_config`, which turns the option strings into a
:class:`~envbuild.run.config.RunConfig` (through
:func:`envbuild.run.config_from_options`; the planner checks the rest), so
that a value means the same and is refused with the same words on both paths.
Click only splits the command line: no option has a click type, so no value
is checked twice, in different words.

Click-free, and cheap to import: the console script reads it on every run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from envbuild.run.config import RunConfig


class RunOption(NamedTuple):
    """One option of ``envbuild run``: its names, where its value goes, its help."""

    names: tuple[str, ...]  # as written on the command line: "-e", "--env"
    dest: str  # the keyword it becomes
    help: str
    metavar: str | None = None
    flag: bool = False  # a flag takes no value
    multiple: bool = False  # repeatable: the values are collected in order
    default: str | None = None
    show_default: bool = False
    # A run-config option goes to config_from_options; the others (--dry-run,
    # --json, -q) say what the command does with the config.
    config: bool = True
    # The click-free path takes only options whose meaning it shares; the rest
    # (--dry-run, --json) go to the full command line.
    fast: bool = True

    @property
    def initial(self) -> Any:
        """The value when the command line does not name the option."""
        return False if self.flag else () if self.multiple else self.default


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption(
        ("--source-dir",),
        "source_dir",
        "Mounted read-only at the environment's workdir (the working directory); "
        "SCRIPT is relative to it.",
        metavar="DIR",
        default=".",
        show_default=True,
    ),
    RunOption(
        ("-e", "--env"),
        "variables",
        "A variable for the script; NAME alone passes your value. Repeatable.",
        metavar="NAME[=VALUE]",
        multiple=True,
    ),
    RunOption(
        ("--env-file",),
        "env_files",
        "Read variables from a file (NAME=VALUE lines, as docker). Repeatable.",
        metavar="FILE",
        multiple=True,
    ),
    RunOption(
        ("--mount",),
        "mounts",
        "Bind mount (ro default).",
        metavar="SRC:DST[:ro|rw]",
        multiple=True,
    ),
    RunOption(
        ("--input",), "inputs", "Input data.", metavar="NAME=PATH[:mount|download]", multiple=True
    ),
    RunOption(("--output",), "outputs", "Output folder.", metavar="NAME=DIR", multiple=True),
    RunOption(("--gpus",), "gpus", "GPUs to use (default: none visible).", metavar="all|N|ID,..."),
    RunOption(
        ("--shm-size",),
        "shm_size",
        "Size of /dev/shm (default: the environment's, else 2g).",
        metavar="SIZE",
    ),
    RunOption(("--workdir", "-w"), "workdir", "Working directory in the container.", metavar="DIR"),
    RunOption(
        ("--user", "-u"), "user", "uid[:gid] or name to run as (default: yours).", metavar="USER"
    ),
    RunOption(("--timeout",), "timeout", "Stop after SECONDS.", metavar="SECONDS"),
    RunOption(("--name",), "name", "Container name (default: envbuild-<run id>).", metavar="NAME"),
    RunOption(
        ("--allow-dangerous-mount",),
        "allow_dangerous_mount",
        "Allow mounting /, the Docker socket, /proc, /sys, /dev, /etc, /var/lib/docker.",
        flag=True,
    ),
    RunOption(
        ("--privileges",),
        "privileges",
        "reduced: no-new-privileges, and without the capabilities a script does not need "
        "(NET_RAW, MKNOD, SYS_CHROOT, ...); default: Docker's defaults.",
        metavar="reduced|default",
        default="reduced",
        show_default=True,
    ),
    RunOption(
        ("--cap-add",),
        "cap_add",
        "Give back one of the capabilities --privileges reduced drops. Repeatable.",
        metavar="CAP",
        multiple=True,
    ),
    RunOption(
        ("--distribution",),
        "distribution",
        "Run on several containers (nodes), each rank given its framework's contract.",
        metavar="mpi|pytorch|tensorflow",
    ),
    RunOption(
        ("--nodes",),
        "nodes",
        "With --distribution: containers (tensorflow: workers). Default 1.",
        metavar="N",
    ),
    RunOption(
        ("--procs-per-node",),
        "procs_per_node",
        "With --distribution mpi|pytorch: processes in each container. Default 1.",
        metavar="M",
    ),
    RunOption(
        ("--parameter-servers",),
        "parameter_servers",
        "With --distribution tensorflow: parameter server tasks. Default 0.",
        metavar="K",
    ),
    RunOption(
        ("--backend",),
        "backend",
        "With --distribution pytorch: the torch.distributed backend. Default gloo.",
        metavar="gloo|nccl|mpi",
    ),
    RunOption(
        ("--torch-launcher", "--launcher"),
        "torch_launcher",
        "With --distribution pytorch: torchrun (torch >= 1.10, the default) "
        "or launch (python -m torch.distributed.launch).",
        metavar="torchrun|launch",
    ),
    RunOption(
        ("--rendezvous-timeout",),
        "rendezvous_timeout",
        "With --distribution: seconds for every node to join before the job fails. Default 300.",
        metavar="SECONDS",
    ),
    RunOption(
        ("--snapshot",),
        "snapshot",
        "Run in a writable copy of the source directory (never the folder itself); "
        "keep what the script writes under ./outputs and ./logs (`envbuild runs files ID`).",
        flag=True,
    ),
    RunOption(
        ("--azureml-context",),
        "azureml_context",
        "Give the script a minimal azureml.core (Run.get_context(), log, log_list, log_row, "
        "tag) whose metrics land in the run history; implies --snapshot.",
        flag=True,
    ),
    RunOption(
        ("--dry-run",),
        "dry_run",
        "Print the resolved run; start nothing.",
        flag=True,
        config=False,
        fast=False,
    ),
    RunOption(
        ("--json",),
        "as_json",
        "With --dry-run: print JSON.",
        flag=True,
        config=False,
        fast=False,
    ),
    RunOption(
        ("-q", "--quiet"),
        "quiet",
        "Do not show the build log on a cache miss.",
        flag=True,
        config=False,
    ),
)


def initial_values() -> dict[str, Any]:
    """Every option's value when the command line does not name it."""
    return {option.dest: option.initial for option in RUN_OPTIONS}


def _seconds(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        from envbuild.errors import RunConfigError

        raise RunConfigError(
            f"{option} {text!r}: not a number of seconds", hint=f"e.g. {option} 3600"
        ) from None


def run_config(
    environment: str, script: str, arguments: tuple[str, ...], values: Mapping[str, Any]
) -> RunConfig:
    """The run that ENV, SCRIPT, ARGS and the parsed ``values`` of :data:`RUN_OPTIONS` ask for."""
    from envbuild.run.config import config_from_options

    options = {o.dest: values[o.dest] for o in RUN_OPTIONS if o.config}
    options["timeout"] = _seconds(options["timeout"], "--timeout")
    options["rendezvous_timeout"] = _seconds(options["rendezvous_timeout"], "--rendezvous-timeout")
    return config_from_options(environment, script, arguments, **options)
