"""Run a script inside an environment's image: the run layer.

This module is the API other runners build on; ``envbuild run`` is a thin
layer over it::

    from envbuild.run.config import Input, Output, RunConfig
    from envbuild.run.local import run

    result = run(
        RunConfig(
            environment="envs/hello",            # a folder (built on a miss) or "image:REF"
            script="train.py",                   # relative to source_directory
            arguments=("--data-folder", "${{inputs.data}}", "--out", "${{outputs.model}}"),
            source_directory=Path("."),
            environment_variables={"MESSAGE": "Hello"},
            inputs=(Input("data", Path("mnist"), mode="mount"),),
            outputs=(Output("model", Path("out/model")),),
        )
    )
    result.exit_code, result.run_id, result.log_path, result.outputs

Three steps, each usable on its own:

* :class:`RunConfig` says what to run (frozen; what a user or another runner asks for);
* :func:`plan` resolves it without touching the engine: the mount policy,
  placeholders, the script, the argv, the variables (``--dry-run`` prints this);
* :func:`run` resolves the image (building it on a cache miss), then drives one
  container: create -> copy ``download`` inputs -> attach -> start -> stream the
  logs to their end -> wait -> remove. It never builds a shell string, never uses
  ``auto_remove`` (which loses the last lines, docker-py#1813), labels everything
  with ``io.envbuild.run=<run id>``, and removes it all on every exit path,
  Ctrl-C and SIGTERM included.

Exit codes follow ``docker run``: the script's own; 128+N when it died of
signal N; 125 when envbuild or the engine failed, 126 when the script cannot be
executed, 127 when it does not exist (checked on the host before anything
starts); 130/143 when envbuild itself was interrupted; 124 on ``timeout``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from envbuild.engine.docker import (
    GpuRequest,
)
from envbuild.errors import (
    RunConfigError,
)
from envbuild.identity import RUN_LABEL as RUN_LABEL  # re-exported
from envbuild.log import Log as Log  # re-exported: the package's names include it

if TYPE_CHECKING:
    pass


IMAGE_PREFIX = "image:"

INPUTS_ROOT = "/inputs"  # input NAME appears at /inputs/NAME
OUTPUTS_ROOT = "/outputs"  # output NAME appears at /outputs/NAME
DEFAULT_WORKDIR = "/workspace"  # where the source goes for an image:REF run
DEFAULT_SHM_SIZE = "2g"  # Docker's 64 MB gives PyTorch DataLoaders a "Bus error"
DEFAULT_STOP_TIMEOUT = 10.0
EXIT_TIMEOUT = 124  # as GNU timeout(1)
MAX_TIMEOUT = 365 * 86400.0  # --timeout's ceiling: finite (no inf, no nan), and a timer can hold it

# The capabilities Docker gives a container by default (moby's
# oci/caps/defaults.go), and the part of them a script does not need. A script
# keeps what working with files and processes takes (CHOWN, DAC_OVERRIDE,
# FOWNER, FSETID, KILL, SETGID, SETUID: pip and apt as root, chown of outputs,
# an entrypoint that drops to another user); it loses raw sockets (NET_RAW:
# spoofing on the bridge), device nodes (MKNOD), file capabilities and the
# bounding set (SETFCAP, SETPCAP), chroot, the audit log and ports below 1024.
# Runs also get no-new-privileges: no setuid binary or file capability in the
# image raises them. `--cap-add CAP` restores one of these,
# `--privileges default` gives Docker's defaults back.
DOCKER_DEFAULT_CAPS = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
DROPPED_CAPS = (
    "AUDIT_WRITE",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETPCAP",
    "SYS_CHROOT",
)
PRIVILEGES = ("reduced", "default")  # --privileges: envbuild's reduced set, or Docker's

InputMode = Literal["mount", "download"]
Output_ = Callable[[str, bytes], None]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
_PLACEHOLDER = re.compile(r"\$\{\{(.*?)\}\}")
_PLACEHOLDER_REF = re.compile(r"\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_-]*)\s*")
_SIZE = re.compile(r"([0-9]+)\s*([bkmgt]?)b?", re.IGNORECASE)
_GPU_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_:.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --------------------------------------------------------------------------
# What a user asks for
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """A host path bound into the container; read-only unless ``read_only=False``."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class Input:
    """Data for the script, at ``/inputs/<name>`` (``${{inputs.<name>}}`` in arguments).

    ``mount`` binds the host data read-only; ``download`` copies it into the
    container before the script starts, so the script may change its copy but
    can never change the host data.
    """

    name: str
    path: Path
    mode: InputMode = "mount"


@dataclass(frozen=True)
class Output:
    """A writable folder at ``/outputs/<name>`` (``${{outputs.<name>}}``) whose files end up
    in ``path`` on the host, owned by the calling user."""

    name: str
    path: Path


# --------------------------------------------------------------------------
# Distributed runs (see envbuild.run.distributed for each rank's contract)
# --------------------------------------------------------------------------

DEFAULT_RENDEZVOUS_TIMEOUT = 300.0  # torch's own default waits 30 minutes for a missing node
MAX_NODES = 256  # one machine's engine, or one Job's pods: far beyond either is a typo
MAX_PROCESSES_PER_NODE = 256
TORCH_BACKENDS = ("gloo", "nccl", "mpi")
TORCH_LAUNCHERS = ("torchrun", "launch")  # torchrun needs torch >= 1.10
DISTRIBUTIONS = ("mpi", "pytorch", "tensorflow")


@dataclass(frozen=True)
class Mpi:
    """An MPI job (the seed's ``MpiConfiguration``): ``mpirun`` on node 0 starts
    ``nodes * processes_per_node`` ranks over ssh."""

    nodes: int = 1
    processes_per_node: int = 1
    rendezvous_timeout: float = DEFAULT_RENDEZVOUS_TIMEOUT


@dataclass(frozen=True)
class PyTorch:
    """A ``torch.distributed`` job (the seed's ``PyTorchConfiguration``).

    Each node runs torch's launcher, which starts ``processes_per_node``
    processes. ``launcher`` is ``"torchrun"`` (torch >= 1.10) or ``"launch"``
    (``python -m torch.distributed.launch``, for older torch such as 1.6).
    """

    nodes: int = 1
    processes_per_node: int = 1
    backend: str = "gloo"
    launcher: str = "torchrun"
    rendezvous_timeout: float = DEFAULT_RENDEZVOUS_TIMEOUT


@dataclass(frozen=True)
class TensorFlow:
    """A TensorFlow job (the seed's ``TensorflowConfiguration``): one task per
    container, each with its ``TF_CONFIG``; worker 0 is the chief."""

    workers: int = 1
    parameter_servers: int = 0
    rendezvous_timeout: float = DEFAULT_RENDEZVOUS_TIMEOUT


Distribution = Mpi | PyTorch | TensorFlow


def check_distribution(distribution: object) -> Distribution:
    """``distribution`` checked: counts in range, a known backend and launcher.

    Raises :class:`RunConfigError` naming the field, what was expected and a hint.
    """
    if not isinstance(distribution, Mpi | PyTorch | TensorFlow):
        raise RunConfigError(
            f"distribution {distribution!r}: expected Mpi(...), PyTorch(...) or TensorFlow(...)",
            hint="from envbuild.run.config import Mpi, PyTorch, TensorFlow",
        )
    if isinstance(distribution, TensorFlow):
        _check_count("--nodes (workers)", distribution.workers, 1, MAX_NODES)
        _check_count("--parameter-servers", distribution.parameter_servers, 0, MAX_NODES)
        if distribution.workers + distribution.parameter_servers > MAX_NODES:
            raise RunConfigError(
                f"{distribution.workers} workers and {distribution.parameter_servers} "
                f"parameter servers: at most {MAX_NODES} tasks in all"
            )
    else:
        _check_count("--nodes", distribution.nodes, 1, MAX_NODES)
        _check_count("--procs-per-node", distribution.processes_per_node, 1, MAX_PROCESSES_PER_NODE)
    if isinstance(distribution, PyTorch):
        if distribution.backend not in TORCH_BACKENDS:
            raise RunConfigError(
                f"--backend {distribution.backend!r}: expected one of {', '.join(TORCH_BACKENDS)}",
                hint="gloo works on CPUs; nccl needs GPUs",
            )
        if distribution.launcher not in TORCH_LAUNCHERS:
            raise RunConfigError(
                f"--torch-launcher {distribution.launcher!r}: expected one of "
                f"{', '.join(TORCH_LAUNCHERS)}",
                hint="torchrun for torch >= 1.10, launch (torch.distributed.launch) before",
            )
    timeout = distribution.rendezvous_timeout
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (0 < timeout <= MAX_TIMEOUT)
    ):
        raise RunConfigError(
            f"--rendezvous-timeout {timeout!r}: give a number of seconds above 0 "
            f"and at most {MAX_TIMEOUT:g}",
            hint=f"the default is {DEFAULT_RENDEZVOUS_TIMEOUT:g}",
        )
    return distribution


def _check_count(what: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RunConfigError(
            f"{what} {value!r}: expected a whole number from {low} to {high}",
            hint="e.g. --nodes 2 --procs-per-node 4",
        )


def _parse_int(text: str, what: str) -> int:
    value = text.strip()
    if not (value.isascii() and value.isdigit()):
        raise RunConfigError(f"{what} {text!r}: expected a whole number", hint=f"e.g. {what} 2")
    return int(value)


def parse_distribution(
    kind: str | None,
    *,
    nodes: str | None = None,
    procs_per_node: str | None = None,
    parameter_servers: str | None = None,
    backend: str | None = None,
    launcher: str | None = None,
    rendezvous_timeout: float | None = None,
) -> Distribution | None:
    """The distribution ``envbuild run --distribution KIND --nodes N ...`` asks for.

    ``None`` for a single-container run; an option that only a distributed run
    (or another framework) reads is an error, never silently ignored.
    """
    given = {
        "--nodes": nodes,
        "--procs-per-node": procs_per_node,
        "--parameter-servers": parameter_servers,
        "--backend": backend,
        "--torch-launcher": launcher,
        "--rendezvous-timeout": rendezvous_timeout,
    }
    if kind is None:
        stray = [name for name, value in given.items() if value is not None]
        if stray:
            raise RunConfigError(
                f"{stray[0]} is for distributed runs",
                hint="add --distribution mpi|pytorch|tensorflow",
            )
        return None
    if kind not in DISTRIBUTIONS:
        raise RunConfigError(
            f"--distribution {kind!r}: expected one of {', '.join(DISTRIBUTIONS)}",
            hint="e.g. --distribution pytorch --nodes 2 --procs-per-node 2",
        )
    foreign = {
        "mpi": ("--parameter-servers", "--backend", "--torch-launcher"),
        "pytorch": ("--parameter-servers",),
        "tensorflow": ("--procs-per-node", "--backend", "--torch-launcher"),
    }[kind]
    for name in foreign:
        if given[name] is not None:
            raise RunConfigError(f"{name} does not apply to --distribution {kind}")
    count = _parse_int(nodes, "--nodes") if nodes is not None else 1
    timeout = DEFAULT_RENDEZVOUS_TIMEOUT if rendezvous_timeout is None else rendezvous_timeout
    distribution: Distribution
    if kind == "tensorflow":
        servers = _parse_int(parameter_servers, "--parameter-servers") if parameter_servers else 0
        distribution = TensorFlow(count, servers, timeout)
    else:
        per_node = _parse_int(procs_per_node, "--procs-per-node") if procs_per_node else 1
        if kind == "mpi":
            distribution = Mpi(count, per_node, timeout)
        else:
            distribution = PyTorch(
                count, per_node, backend or "gloo", launcher or "torchrun", timeout
            )
    return check_distribution(distribution)


@dataclass(frozen=True)
class RunConfig:
    """One run: which environment, what to run, with which data. Frozen; see :func:`run`.

    Attributes:
        environment: an environment folder (holding ``env.toml``; built on a
            cache miss) or ``"image:REF"`` for an existing image.
        script: the script to run, relative to ``source_directory``; a ``.py``
            script runs with the environment's ``python``, anything else is
            executed as it is. Exactly one of ``script`` and ``command``.
        arguments: passed to the script verbatim, after ``${{inputs.NAME}}`` /
            ``${{outputs.NAME}}`` placeholders are replaced by container paths.
        command: instead of a script, an argv run as it is (``arguments`` are
            appended).
        source_directory: mounted read-only at the environment's ``[run].workdir``
            (``/workspace`` by default), which is also the working directory;
            ``None`` mounts no source (only with ``command``).
        environment_variables: variables set on top of the image's own.
        mounts, inputs, outputs: see :class:`Mount`, :class:`Input`, :class:`Output`.
        gpus: ``None`` hides every GPU; ``"all"``, a count ``"2"``, or device IDs
            ``"0,1"`` / ``"device=1"``.
        shm_size: ``/dev/shm`` size (``"2g"``); default the environment's ``[run]``.
        timeout: seconds before the run is stopped (exit code 124).
        workdir: the working directory in the container (default: the source path).
        user: ``uid[:gid]`` or a name; default the caller's ``uid:gid``.
        name: the container's name (default ``envbuild-<run id>``).
        allow_dangerous_mount: allow mounting ``/``, the Docker socket, ``/etc``, ...
            (prints a warning).
        stop_timeout: seconds between the graceful stop signal and the kill.
        privileges: ``"reduced"`` (default: no-new-privileges, and Docker's
            default capabilities less :data:`DROPPED_CAPS`) or ``"default"``
            (Docker's defaults).
        cap_add: capabilities from :data:`DROPPED_CAPS` to give back (``NET_RAW``).
        distribution: ``None`` (one container) or :class:`Mpi`, :class:`PyTorch`,
            :class:`TensorFlow`: several containers ("nodes"), each rank given its
            framework's contract (:mod:`envbuild.run.distributed`).
        snapshot: run in a writable copy of ``source_directory`` (made under
            ``ENVBUILD_HOME/runs/<run id>``), never the folder itself; what the
            script writes under ``./outputs`` and ``./logs`` is kept
            (``RunResult.files_dir``), the rest removed (:mod:`envbuild.run.files`).
        azureml_context: put a minimal ``azureml.core`` on the script's path
            (``Run.get_context()``, ``log``, ``log_list``, ``log_row``, ``tag``)
            whose metrics and tags land in ``RunResult`` and the history.
            Implies ``snapshot``.
    """

    environment: str | Path
    script: str | None = None
    arguments: Sequence[str] = ()
    command: Sequence[str] | None = None
    source_directory: Path | None = Path()
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    mounts: Sequence[Mount] = ()
    inputs: Sequence[Input] = ()
    outputs: Sequence[Output] = ()
    gpus: str | None = None
    shm_size: str | None = None
    timeout: float | None = None
    workdir: str | None = None
    user: str | None = None
    name: str | None = None
    allow_dangerous_mount: bool = False
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    privileges: str = "reduced"
    cap_add: Sequence[str] = ()
    distribution: Distribution | None = None
    snapshot: bool = False
    azureml_context: bool = False

    def __post_init__(self) -> None:
        # Freeze what callers may hand over as lists or dicts.
        object.__setattr__(self, "arguments", tuple(self.arguments))
        if self.command is not None:
            object.__setattr__(self, "command", tuple(self.command))
        if self.source_directory is not None:
            object.__setattr__(self, "source_directory", Path(self.source_directory))
        object.__setattr__(
            self, "environment_variables", MappingProxyType(dict(self.environment_variables))
        )
        object.__setattr__(self, "mounts", tuple(self.mounts))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "cap_add", tuple(self.cap_add))
        if self.azureml_context:  # Azure ML's conventions come together
            object.__setattr__(self, "snapshot", True)


@dataclass(frozen=True)
class RunResult:
    """What a run did.

    ``status`` is ``"exited"`` (the script ended on its own; ``exit_code`` is
    its code, 128+N if it died of signal N), ``"interrupted"`` (envbuild got
    SIGINT/SIGTERM/SIGHUP and stopped it; ``exit_code`` 128+that signal) or
    ``"timed-out"`` (``exit_code`` 124). A distributed run's ``nodes`` hold
    each node's ``index``, ``container``, ``role``, ``exit_code`` and
    ``ranks`` (rank -> exit code, where envbuild could read them).

    With ``snapshot``, ``files_dir`` holds what the script wrote under
    ``./outputs`` and ``./logs``; with ``azureml_context``, ``metrics`` and
    ``tags`` are what it logged (see :mod:`envbuild.run.metrics` for the rules).
    """

    run_id: str
    exit_code: int
    status: str
    duration: float
    log_path: Path | None  # None when the log could not be written (a warning said so)
    outputs: Mapping[str, Path]
    image: str
    image_id: str
    nodes: tuple[Mapping[str, Any], ...] = ()
    files_dir: Path | None = None
    metrics: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


# --------------------------------------------------------------------------
# Parsing the command line's strings (shared by every front end)
# --------------------------------------------------------------------------


def parse_variable(text: str, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``NAME=VALUE``, or ``NAME`` alone for the caller's value (``None`` if unset, as docker)."""
    name, sep, value = text.partition("=")
    _check_variable_name(name, text)
    if sep:
        return name, value
    env = os.environ if environ is None else environ
    return (name, env[name]) if name in env else None


def parse_env_file(path: Path, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Read a docker-style env file: ``NAME=VALUE`` or ``NAME`` lines, ``#`` comments.

    Values are taken literally (no quote removal, no ``$`` expansion), as
    ``docker run --env-file`` does.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunConfigError(f"cannot read the env file {path}: {exc}") from exc
    pairs = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        try:
            pair = parse_variable(line, environ)
        except RunConfigError as exc:
            raise RunConfigError(f"{path}:{number}: {exc.message}", hint=exc.hint) from exc
        if pair is not None:
            pairs.append(pair)
    return pairs


def parse_mount(text: str) -> Mount:
    """``SRC:DST[:ro|rw]`` (read-only unless ``rw``)."""
    rest, mode = text, "ro"
    for suffix in (":ro", ":rw"):
        if text.endswith(suffix):
            rest, mode = text[: -len(suffix)], suffix[1:]
    source, sep, target = rest.rpartition(":")
    if not sep or not source or not target:
        raise RunConfigError(
            f"--mount {text!r}: expected SRC:DST[:ro|rw]",
            hint="e.g. --mount ./data:/data or --mount /scratch:/scratch:rw",
        )
    return Mount(Path(source), target, read_only=mode == "ro")


def parse_input(text: str) -> Input:
    """``NAME=PATH[:mount|download]`` (``mount`` by default)."""
    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise RunConfigError(
            f"--input {text!r}: expected NAME=PATH[:mount|download]",
            hint="e.g. --input data=./mnist:download, then ${{inputs.data}} in the arguments",
        )
    mode: InputMode = "mount"
    if rest.endswith(":download"):
        rest, mode = rest[: -len(":download")], "download"
    elif rest.endswith(":mount"):
        rest = rest[: -len(":mount")]
    return Input(name, Path(rest), mode)


def parse_output(text: str) -> Output:
    """``NAME=DIR``."""
    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise RunConfigError(
            f"--output {text!r}: expected NAME=DIR",
            hint="e.g. --output model=./out, then ${{outputs.model}} in the arguments",
        )
    return Output(name, Path(rest))


def parse_shm_size(text: str) -> int:
    """``2g``, ``512m``, ``1073741824`` -> bytes (binary units, as docker)."""
    match = _SIZE.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise RunConfigError(f"shm size {text!r}: expected a size", hint="e.g. 2g or 512m")
    power = "bkmgt".index(match.group(2).lower() or "b")
    return int(match.group(1)) << (10 * power)


def parse_gpus(text: str) -> GpuRequest:
    """``all``, a count ``N``, or device IDs ``0,1`` / ``device=1`` / ``GPU-uuid``."""
    value = text.strip()
    if value.startswith("device="):
        ids = value[len("device=") :].split(",")
    elif value == "all":
        return GpuRequest(count=-1)
    elif value.isascii() and value.isdigit():  # str.isdigit() says yes to "²"
        if int(value) < 1:
            raise RunConfigError("--gpus 0: ask for at least one GPU, or leave --gpus out")
        return GpuRequest(count=int(value))
    else:
        ids = value.split(",")
    if not ids or not all(_GPU_ID.fullmatch(i) for i in ids):
        raise RunConfigError(
            f"--gpus {text!r}: expected all, a count, or device IDs",
            hint="e.g. --gpus all, --gpus 2, --gpus 0,1 or --gpus device=1",
        )
    return GpuRequest(device_ids=tuple(ids))


def config_from_options(
    environment: str,
    script: str,
    arguments: Sequence[str] = (),
    *,
    source_dir: str | Path = ".",
    variables: Sequence[str] = (),
    env_files: Sequence[str | Path] = (),
    mounts: Sequence[str] = (),
    inputs: Sequence[str] = (),
    outputs: Sequence[str] = (),
    gpus: str | None = None,
    shm_size: str | None = None,
    workdir: str | None = None,
    user: str | None = None,
    timeout: float | None = None,
    name: str | None = None,
    allow_dangerous_mount: bool = False,
    privileges: str = "reduced",
    cap_add: Sequence[str] = (),
    distribution: str | None = None,
    nodes: str | None = None,
    procs_per_node: str | None = None,
    parameter_servers: str | None = None,
    backend: str | None = None,
    torch_launcher: str | None = None,
    rendezvous_timeout: float | None = None,
    snapshot: bool = False,
    azureml_context: bool = False,
    environ: Mapping[str, str] | None = None,
) -> RunConfig:
    """A :class:`RunConfig` from ``envbuild run``'s option strings.

    What every front end of the command line calls, so that they all mean the
    same: env files first, then ``-e`` (a later value wins, as with docker).
    """
    pairs: list[tuple[str, str]] = []
    for env_file in env_files:
        pairs += parse_env_file(Path(env_file), environ)
    for text in variables:
        pair = parse_variable(text, environ)
        if pair is not None:
            pairs.append(pair)
    return RunConfig(
        environment=environment,
        script=script,
        arguments=tuple(arguments),
        source_directory=Path(source_dir),
        environment_variables=dict(pairs),
        mounts=tuple(parse_mount(m) for m in mounts),
        inputs=tuple(parse_input(i) for i in inputs),
        outputs=tuple(parse_output(o) for o in outputs),
        gpus=gpus,
        shm_size=shm_size,
        timeout=timeout,
        workdir=workdir,
        user=user,
        name=name,
        allow_dangerous_mount=allow_dangerous_mount,
        privileges=privileges,
        cap_add=tuple(cap_add),
        distribution=parse_distribution(
            distribution,
            nodes=nodes,
            procs_per_node=procs_per_node,
            parameter_servers=parameter_servers,
            backend=backend,
            launcher=torch_launcher,
            rendezvous_timeout=rendezvous_timeout,
        ),
        snapshot=snapshot,
        azureml_context=azureml_context,
    )


def parse_capabilities(privileges: str, cap_add: Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """``(capabilities to drop, no-new-privileges)`` for ``--privileges`` and ``--cap-add``."""
    if privileges not in PRIVILEGES:
        raise RunConfigError(
            f"--privileges {privileges!r}: expected one of {', '.join(PRIVILEGES)}",
            hint="reduced (the default) drops what a script does not need; "
            "default gives Docker's defaults",
        )
    restored = set()
    for text in cap_add:
        name = text.strip().upper()
        name = name[len("CAP_") :] if name.startswith("CAP_") else name
        if name not in DOCKER_DEFAULT_CAPS:
            raise RunConfigError(
                f"--cap-add {text!r}: envbuild gives back only Docker's default capabilities",
                hint="one of " + ", ".join(DROPPED_CAPS) + "; or --privileges default",
            )
        restored.add(name)
    if privileges == "default":
        return (), False
    return tuple(c for c in DROPPED_CAPS if c not in restored), True


def _check_variable_name(name: str, text: str) -> None:
    if not _VARIABLE.fullmatch(name):
        raise RunConfigError(
            f"variable {text!r}: {name!r} is not a variable name",
            hint="use NAME=VALUE with a name of letters, digits and _ (not starting with a digit)",
        )


# --------------------------------------------------------------------------
