"""Run a script inside an environment's image: the run layer.

This module is the API other runners build on; ``envbuild run`` is a thin
layer over it::

    from envbuild.run import Input, Output, RunConfig, run

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

import contextlib
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from envbuild.engine import (
    STDERR,
    BindMount,
    ContainerSpec,
    ContainerStream,
    DockerEngine,
    GpuRequest,
    RunEngine,
)
from envbuild.errors import (
    EngineError,
    EnvbuildError,
    MountPolicyError,
    RunConfigError,
    RunError,
    ScriptNotExecutableError,
    ScriptNotFoundError,
)
from envbuild.settings import Settings, load_settings

if TYPE_CHECKING:
    from envbuild.build import Resolved
    from envbuild.history import History

__all__ = [
    "DEFAULT_SHM_SIZE",
    "INPUTS_ROOT",
    "OUTPUTS_ROOT",
    "RUN_LABEL",
    "Input",
    "Mount",
    "Output",
    "RunConfig",
    "RunPlan",
    "RunResult",
    "check_host_path",
    "config_from_options",
    "parse_env_file",
    "parse_gpus",
    "parse_input",
    "parse_mount",
    "parse_output",
    "parse_shm_size",
    "parse_variable",
    "plan",
    "run",
    "substitute",
]

IMAGE_PREFIX = "image:"
RUN_LABEL = "io.envbuild.run"
INPUTS_ROOT = "/inputs"  # input NAME appears at /inputs/NAME
OUTPUTS_ROOT = "/outputs"  # output NAME appears at /outputs/NAME
DEFAULT_WORKDIR = "/workspace"  # where the source goes for an image:REF run
DEFAULT_SHM_SIZE = "2g"  # Docker's 64 MB gives PyTorch DataLoaders a "Bus error"
DEFAULT_STOP_TIMEOUT = 10.0
EXIT_TIMEOUT = 124  # as GNU timeout(1)

T = TypeVar("T")
InputMode = Literal["mount", "download"]
Output_ = Callable[[str, bytes], None]
Log = Callable[[str], None]

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
        distribution: reserved for distributed runs (``None``: one container).
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
    distribution: object | None = None

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


@dataclass(frozen=True)
class RunResult:
    """What a run did.

    ``status`` is ``"exited"`` (the script ended on its own; ``exit_code`` is
    its code, 128+N if it died of signal N), ``"interrupted"`` (envbuild got
    SIGINT/SIGTERM/SIGHUP and stopped it; ``exit_code`` 128+that signal) or
    ``"timed-out"`` (``exit_code`` 124).
    """

    run_id: str
    exit_code: int
    status: str
    duration: float
    log_path: Path
    outputs: Mapping[str, Path]
    image: str
    image_id: str


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
    elif value.isdigit():
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
    )


def _check_variable_name(name: str, text: str) -> None:
    if not _VARIABLE.fullmatch(name):
        raise RunConfigError(
            f"variable {text!r}: {name!r} is not a variable name",
            hint="use NAME=VALUE with a name of letters, digits and _ (not starting with a digit)",
        )


# --------------------------------------------------------------------------
# Mount policy
# --------------------------------------------------------------------------

# Binding any of these (or a folder inside, or a folder holding one) gives the
# container the host: the engine's socket is root on the host (OWASP Docker
# rule #1), /proc, /sys and /dev reach the kernel and devices, /etc the host's
# users and services, /var/lib/docker every image and container.
_SYSTEM_PATHS = {
    "/proc": "the host's kernel and processes",
    "/sys": "the host's kernel",
    "/dev": "the host's devices",
    "/etc": "the host's configuration",
    "/var/lib/docker": "the Docker engine's data",
    "/var/lib/containerd": "containerd's data",
    "/run/docker.sock": "the Docker socket (root on the host)",
    "/var/run/docker.sock": "the Docker socket (root on the host)",
    "/run/containerd": "containerd's socket",
    "/var/run/containerd": "containerd's socket",
}


def _protected() -> list[tuple[Path, str, bool]]:
    """``(path, why, also refuse its parents)``, each in literal and resolved form."""
    entries: list[tuple[str, str, bool]] = [(p, why, True) for p, why in _SYSTEM_PATHS.items()]
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://") and Path(host[len("unix://") :]).exists():
        entries.append((host[len("unix://") :], "the Docker socket (root on the host)", True))
    # The client's credentials; a home folder holding them may still be mounted.
    entries.append((str(Path.home() / ".docker"), "the Docker client's credentials", False))
    out: list[tuple[Path, str, bool]] = []
    for raw, why, parents in entries:
        for form in {Path(raw), Path(os.path.realpath(raw))}:
            out.append((form, why, parents))
    return out


def dangerous_reason(real: Path) -> str | None:
    """Why binding the resolved path ``real`` would hand the host over, or ``None``."""
    if real == Path("/"):
        return "it is the host's root filesystem"
    for path, why, parents in _protected():
        if real == path or path in real.parents:
            return f"it is {path} or inside it: {why}"
        if parents and real in path.parents:
            return f"it contains {path}: {why}"
    return None


def check_host_path(
    path: Path, *, what: str, allow_dangerous: bool, warnings: list[str] | None = None
) -> Path:
    """Resolve ``path`` (symlinks, ``..``, relative to the current folder) and apply the policy.

    The path must exist. A dangerous path raises :class:`MountPolicyError`, or,
    with ``allow_dangerous``, adds a warning to ``warnings``. Returns the
    resolved path, which is what gets bound (not the name that was checked).
    """
    try:
        real = Path(os.path.realpath(path, strict=True))
    except OSError as exc:
        raise RunConfigError(
            f"{what}: {path} does not exist ({exc.strerror or exc})",
            hint="host paths must exist before the run; outputs are created by envbuild",
        ) from exc
    reason = dangerous_reason(real)
    if reason is not None:
        shown = f"{path}" if str(path) == str(real) else f"{path} (-> {real})"
        if not allow_dangerous:
            raise MountPolicyError(
                f"{what}: refusing to mount {shown}: {reason}",
                path=str(real),
                hint="mount a narrower folder, or pass --allow-dangerous-mount if you mean it",
            )
        if warnings is not None:
            warnings.append(f"warning: {what}: mounting {shown} although {reason}")
    return real


def _output_path(path: Path, *, what: str, allow_dangerous: bool, warnings: list[str]) -> Path:
    """An output folder that may not exist yet: vet its nearest existing ancestor."""
    absolute = path.resolve()  # symlinks of the existing part resolved, the rest kept
    existing = absolute
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    base = check_host_path(existing, what=what, allow_dangerous=allow_dangerous, warnings=warnings)
    real = base / absolute.relative_to(existing)
    if real.exists() and not real.is_dir():
        raise RunConfigError(f"{what}: {path} exists and is not a folder")
    return real


def _check_target(target: str, what: str) -> str:
    if _CONTROL.search(target) or not target.startswith("/"):
        raise RunConfigError(
            f"{what}: {target!r} is not an absolute container path", hint="e.g. /data"
        )
    pure = PurePosixPath(target)
    if ".." in pure.parts or str(pure) == "/":
        raise RunConfigError(f"{what}: {target!r}: use an absolute path without '..', not '/'")
    return str(pure)


# --------------------------------------------------------------------------
# Placeholders
# --------------------------------------------------------------------------


def substitute(
    arguments: Sequence[str], inputs: Mapping[str, str], outputs: Mapping[str, str]
) -> tuple[str, ...]:
    """Replace ``${{inputs.NAME}}`` / ``${{outputs.NAME}}`` by container paths.

    Every unknown or malformed placeholder is reported at once, before anything starts.
    """
    problems: list[str] = []
    tables = {"inputs": inputs, "outputs": outputs}

    def replace(match: re.Match[str]) -> str:
        ref = _PLACEHOLDER_REF.fullmatch(match.group(1))
        if ref is None:
            problems.append(f"{match.group(0)!r} is not a placeholder envbuild knows")
            return match.group(0)
        table = tables[ref.group(1)]
        if ref.group(2) not in table:
            problems.append(f"{match.group(0)!r} names no {ref.group(1)[:-1]} {ref.group(2)!r}")
            return match.group(0)
        return table[ref.group(2)]

    result = []
    for argument in arguments:
        replaced = _PLACEHOLDER.sub(replace, argument)
        if "${{" in _PLACEHOLDER.sub("", argument):
            problems.append(f"{argument!r} holds an unterminated placeholder '${{{{'")
        result.append(replaced)
    if problems:
        known = [f"${{{{inputs.{n}}}}}" for n in inputs] + [
            f"${{{{outputs.{n}}}}}" for n in outputs
        ]
        raise RunConfigError(
            "unknown placeholder in the arguments:\n" + "\n".join("  " + p for p in problems),
            hint="declare it with --input NAME=PATH or --output NAME=DIR; known: "
            + (", ".join(known) or "none"),
        )
    return tuple(result)


# --------------------------------------------------------------------------
# The plan: a RunConfig resolved without the engine
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """A :class:`RunConfig` resolved and checked, before any engine call.

    ``mounts`` are every bind (source, ``--mount``, ``mount`` inputs, outputs),
    already vetted and resolved; ``downloads`` are ``(host path, container
    path)`` pairs copied in before start; ``variables`` the final list handed
    to the engine (names and values).
    """

    config: RunConfig
    image: str
    argv: tuple[str, ...]
    arguments: tuple[str, ...]
    workdir: str
    source: BindMount | None
    mounts: tuple[BindMount, ...]
    downloads: tuple[tuple[Path, str], ...]
    inputs: Mapping[str, tuple[Path, str, str]]  # name -> (host, container, mode)
    outputs: Mapping[str, tuple[Path, str]]  # name -> (host, container)
    variables: tuple[tuple[str, str], ...]
    user: str
    shm_size: str
    gpus: GpuRequest | None
    env_name: str | None = None
    env_version: int | None = None
    env_hash: str | None = None
    env_path: Path | None = None
    warnings: tuple[str, ...] = ()
    resolved: Resolved | None = None

    def container_spec(self, image_id: str, run_id: str) -> ContainerSpec:
        """The container this plan runs as, for run ``run_id``."""
        return ContainerSpec(
            image=image_id,
            argv=self.argv,
            env=(*self.variables, ("ENVBUILD_RUN_ID", run_id)),
            labels={RUN_LABEL: run_id},
            user=self.user,
            workdir=self.workdir,
            mounts=self.mounts,
            shm_size=parse_shm_size(self.shm_size),
            gpus=self.gpus,
            init=True,
            name=self.config.name or f"envbuild-{run_id}",
        )

    def to_json(self) -> dict[str, Any]:
        """The ``--dry-run --json`` document (variable *names* only, never values)."""
        gpus: object = None
        if self.gpus is not None:
            gpus = (
                {"device_ids": list(self.gpus.device_ids)}
                if self.gpus.device_ids
                else {"count": self.gpus.count}
            )
        return {
            "schema": 1,
            "environment": {
                "path": str(self.env_path) if self.env_path else None,
                "name": self.env_name,
                "version": self.env_version,
                "hash": self.env_hash,
            },
            "image": self.image,
            "script": self.config.script,
            "argv": list(self.argv),
            "arguments": list(self.arguments),
            "workdir": self.workdir,
            "source": (
                {"host": self.source.source, "container": self.source.target}
                if self.source
                else None
            ),
            "user": self.user,
            "variables": sorted({name for name, _ in self.variables} | {"ENVBUILD_RUN_ID"}),
            "mounts": [
                {"source": m.source, "target": m.target, "read_only": m.read_only}
                for m in self.mounts
            ],
            "inputs": {
                name: {"host": str(host), "container": target, "mode": mode}
                for name, (host, target, mode) in self.inputs.items()
            },
            "outputs": {
                name: {"host": str(host), "container": target}
                for name, (host, target) in self.outputs.items()
            },
            "gpus": gpus,
            "shm_size": self.shm_size,
            "timeout": self.config.timeout,
            "stop_timeout": self.config.stop_timeout,
            "name": self.config.name,
            "init": True,
            "labels": [RUN_LABEL],
            "distribution": None,
            "warnings": list(self.warnings),
        }


def _script_argv(source: Path, target: str, script: str) -> tuple[str, ...]:
    pure = PurePosixPath(script)
    if not script or _CONTROL.search(script) or pure.is_absolute() or ".." in pure.parts:
        raise RunConfigError(
            f"script {script!r}: give a path relative to the source directory, without '..'",
            hint="e.g. envbuild run --source-dir src ENV train.py",
        )
    host = source / Path(*pure.parts)
    if not host.exists():
        raise ScriptNotFoundError(
            f"script {script!r} not found in the source directory {source}",
            hint="SCRIPT is relative to --source-dir (default: the current folder)",
        )
    if host.is_dir():
        raise ScriptNotExecutableError(f"script {script!r} is a directory")
    container_path = f"{target}/{pure.as_posix()}"
    if pure.suffix == ".py":
        return ("python", container_path)
    if not os.access(host, os.X_OK):
        raise ScriptNotExecutableError(
            f"script {script!r} is not executable",
            hint=f"make it executable (chmod +x {host}) and give it a #! line",
        )
    return (container_path,)


def _environment(config: RunConfig, settings: Settings) -> dict[str, Any]:
    """Image reference and run defaults of ``config.environment`` (no engine call)."""
    env = config.environment
    if isinstance(env, str) and env.startswith(IMAGE_PREFIX):
        ref = env[len(IMAGE_PREFIX) :]
        if not ref or _CONTROL.search(ref) or any(c.isspace() for c in ref):
            raise RunConfigError(f"environment {env!r}: expected image:REF, e.g. image:debian:12")
        return {
            "image": ref,
            "workdir": DEFAULT_WORKDIR,
            "shm_size": DEFAULT_SHM_SIZE,
            "resolved": None,
        }
    from envbuild.build import resolve  # the build side is imported only for a folder

    resolved = resolve(Path(env), settings)
    return {
        "image": resolved.hash_tag,
        "workdir": resolved.env.run.workdir,
        "shm_size": resolved.env.run.shm_size,
        "resolved": resolved,
    }


def plan(config: RunConfig, settings: Settings | None = None) -> RunPlan:
    """Resolve and check ``config`` without the engine; raise before anything starts.

    Raises :class:`RunConfigError` (bad option, mount policy, placeholder),
    :class:`ScriptNotFoundError` (127) or :class:`ScriptNotExecutableError` (126),
    and the definition's own errors for an environment folder.
    """
    settings = settings or load_settings()
    if config.distribution is not None:
        raise RunConfigError("distributed runs are not supported yet (distribution must be None)")
    if (config.script is None) == (config.command is None):
        raise RunConfigError("give exactly one of a script and a command")
    env = _environment(config, settings)
    warnings: list[str] = []
    allow = config.allow_dangerous_mount
    source_target: str = env["workdir"]
    mounts: list[BindMount] = []
    source: BindMount | None = None
    if config.source_directory is not None:
        real = check_host_path(
            config.source_directory, what="--source-dir", allow_dangerous=allow, warnings=warnings
        )
        if not real.is_dir():
            raise RunConfigError(f"--source-dir: {config.source_directory} is not a folder")
        source = BindMount(str(real), source_target, read_only=True)
        mounts.append(source)
    if config.script is not None:
        if source is None:
            raise RunConfigError("a script needs a source directory")
        argv = _script_argv(Path(source.source), source_target, config.script)
    else:
        assert config.command is not None
        if not config.command or not all(isinstance(a, str) for a in config.command):
            raise RunConfigError("command: give a non-empty list of strings")
        argv = tuple(config.command)

    for mount in config.mounts:
        real = check_host_path(
            mount.source, what="--mount", allow_dangerous=allow, warnings=warnings
        )
        target = _check_target(mount.target, f"--mount {mount.source}")
        mounts.append(BindMount(str(real), target, read_only=mount.read_only))

    inputs: dict[str, tuple[Path, str, str]] = {}
    downloads: list[tuple[Path, str]] = []
    for item in config.inputs:
        _check_name(item.name, "--input", inputs)
        if item.mode not in ("mount", "download"):
            raise RunConfigError(f"--input {item.name}: mode must be mount or download")
        real = check_host_path(
            item.path, what=f"--input {item.name}", allow_dangerous=allow, warnings=warnings
        )
        target = f"{INPUTS_ROOT}/{item.name}"
        inputs[item.name] = (real, target, item.mode)
        if item.mode == "mount":
            mounts.append(BindMount(str(real), target, read_only=True))
        else:
            downloads.append((real, target))

    outputs: dict[str, tuple[Path, str]] = {}
    for out in config.outputs:
        _check_name(out.name, "--output", outputs)
        real = _output_path(
            out.path, what=f"--output {out.name}", allow_dangerous=allow, warnings=warnings
        )
        target = f"{OUTPUTS_ROOT}/{out.name}"
        outputs[out.name] = (real, target)
        mounts.append(BindMount(str(real), target, read_only=False))

    targets = [m.target for m in mounts] + [t for _, t in downloads]
    duplicates = sorted({t for t in targets if targets.count(t) > 1})
    if duplicates:
        raise RunConfigError(f"two mounts share the container path {duplicates[0]}")

    arguments = substitute(
        config.arguments,
        {name: target for name, (_, target, _) in inputs.items()},
        {name: target for name, (_, target) in outputs.items()},
    )

    variables: list[tuple[str, str]] = [("PYTHONUNBUFFERED", "1")]  # live logs from print()
    gpus = parse_gpus(config.gpus) if config.gpus is not None else None
    if gpus is None:
        # Hidden unless asked: a CUDA image on a host whose default runtime is
        # nvidia would otherwise see every GPU.
        variables.append(("NVIDIA_VISIBLE_DEVICES", "void"))
    for name, value in config.environment_variables.items():
        _check_variable_name(name, name)
        if "\x00" in value:
            raise RunConfigError(f"variable {name}: a value cannot hold a NUL byte")
        variables.append((name, value))
    merged = dict(variables)  # later wins, as with repeated docker -e

    shm_size = config.shm_size or env["shm_size"]
    parse_shm_size(shm_size)
    if config.timeout is not None and not config.timeout > 0:
        raise RunConfigError("--timeout: give a number of seconds above 0")
    if config.stop_timeout < 0:
        raise RunConfigError("stop_timeout: give a number of seconds, 0 or more")
    if config.name is not None and not _CONTAINER_NAME.fullmatch(config.name):
        raise RunConfigError(
            f"--name {config.name!r}: not a container name",
            hint="letters, digits and _.- (starting with a letter or digit)",
        )
    user = config.user or f"{os.getuid()}:{os.getgid()}"
    if not _USER.fullmatch(user):
        raise RunConfigError(f"--user {user!r}: expected uid[:gid] or a user name")
    workdir = _check_target(config.workdir, "--workdir") if config.workdir else source_target

    resolved = env["resolved"]
    return RunPlan(
        config=config,
        image=env["image"],
        argv=(*argv, *arguments),
        arguments=arguments,
        workdir=workdir,
        source=source,
        mounts=tuple(mounts),
        downloads=tuple(downloads),
        inputs=MappingProxyType(inputs),
        outputs=MappingProxyType(outputs),
        variables=tuple(merged.items()),
        user=user,
        shm_size=shm_size,
        gpus=gpus,
        env_name=resolved.env.name if resolved else None,
        env_version=resolved.env.version if resolved else None,
        env_hash=resolved.hash if resolved else None,
        env_path=resolved.env.path if resolved else None,
        warnings=tuple(warnings),
        resolved=resolved,
    )


def _check_name(name: str, what: str, seen: Mapping[str, object]) -> None:
    if not _NAME.fullmatch(name):
        raise RunConfigError(
            f"{what} {name!r}: not a valid name",
            hint="letters, digits, _ and - (starting with a letter or _), e.g. data",
        )
    if name in seen:
        raise RunConfigError(f"{what} {name!r} is given twice")


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


def _stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _ConsoleOutput:
    """The script's stdout/stderr to ours, byte for byte, flushed per chunk (live)."""

    def __init__(self) -> None:
        self.broken: set[str] = set()

    def __call__(self, stream: str, data: bytes) -> None:
        if stream in self.broken:
            return
        target = sys.stderr if stream == "stderr" else sys.stdout
        try:
            buffer = getattr(target, "buffer", None)
            if buffer is not None:
                buffer.write(data)
                buffer.flush()
            else:  # a text-only stream (e.g. captured in tests)
                target.write(data.decode("utf-8", errors="replace"))
                target.flush()
        except BrokenPipeError:
            # `envbuild run ... | head`: keep running and logging, stop printing.
            self.broken.add(stream)


class _Interrupted(Exception):
    """A signal arrived before the container was running."""


class _Supervisor:
    """Signals and the timeout, turned into engine calls on the run's container.

    First SIGINT/SIGTERM/SIGHUP: a graceful stop (the stop signal, then a kill
    after ``stop_timeout``); the second: a kill; a third gives up waiting (the
    container is still force-removed). The handlers only record and hand the
    engine call to a thread: the main thread keeps draining the log stream,
    which ends when the container does.
    """

    SIGNALS = tuple(
        getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
    )

    def __init__(self, engine: RunEngine, stop_timeout: float, log: Log) -> None:
        self.engine = engine
        self.stop_timeout = stop_timeout
        self.log = log
        self.container_id: str | None = None
        self.received: list[int] = []
        self.timed_out = False
        self.finishing = False
        self._threads: list[threading.Thread] = []
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None

    @contextlib.contextmanager
    def installed(self, enabled: bool) -> Iterator[None]:
        """Handle the signals while the run is supervised (main thread only)."""
        if enabled and threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        try:
            yield
        finally:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            if self._timer is not None:
                self._timer.cancel()
            for thread in self._threads:
                thread.join(timeout=5)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.finishing or self.container_id is None:
            return  # checked by the main thread before it starts anything
        count = len(self.received)
        if count == 1:
            self.log(
                f"envbuild: {signal.Signals(signum).name}: stopping the run "
                f"(up to {self.stop_timeout:g}s; press Ctrl-C again to kill it)"
            )
            self._spawn(self.stop)
        elif count == 2:
            self.log("envbuild: killing the run")
            self._spawn(self.kill)
        else:
            raise KeyboardInterrupt

    def start_timer(self, timeout: float | None) -> None:
        """Stop the run after ``timeout`` seconds."""
        if timeout is None:
            return

        def expire() -> None:
            if self.finishing or self.received:
                return
            self.timed_out = True
            self.log(f"envbuild: the run timed out after {timeout:g}s; stopping it")
            self.stop()

        self._timer = threading.Timer(timeout, expire)
        self._timer.daemon = True
        self._timer.start()

    def check(self) -> None:
        """Raise :class:`_Interrupted` if a signal came before the container ran."""
        if self.received:
            raise _Interrupted

    def resend(self) -> None:
        """A signal that raced ``start``: stop (or kill) the container now that it runs."""
        if self.received:
            self._spawn(self.stop if len(self.received) == 1 else self.kill)

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Gracefully stop the container (errors are reported, not raised)."""
        if self.container_id is not None:
            try:
                self.engine.stop_container(self.container_id, self.stop_timeout)
            except Exception as exc:  # a thread: report, the main path cleans up
                self.log(f"envbuild: could not stop the container: {exc}")

    def kill(self) -> None:
        """Kill the container (errors are reported, not raised)."""
        if self.container_id is not None:
            try:
                self.engine.kill_container(self.container_id)
            except Exception as exc:
                self.log(f"envbuild: could not kill the container: {exc}")


def _owner(user: str) -> tuple[int, int]:
    """The uid/gid given to ``download`` copies: the run user when numeric, else root."""
    uid, _, gid = user.partition(":")
    if uid.isdigit():
        return int(uid), int(gid) if gid.isdigit() else int(uid) if not gid else 0
    return 0, 0


def _download_tar(downloads: Sequence[tuple[Path, str]], user: str) -> Iterator[bytes]:
    """A tar stream of the ``download`` inputs, for ``put_archive`` at ``/``.

    Written by a thread into a pipe, so no temporary copy lands on the host's
    disk. Entries belong to the run user, so the script may change its copy.
    """
    import tarfile  # only runs with download inputs pay for it

    uid, gid = _owner(user)
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def owned(info: Any) -> Any:  # tarfile.TarInfo
        info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
        return info

    def produce() -> None:
        try:
            with (
                os.fdopen(write_fd, "wb", buffering=1 << 20) as pipe,
                tarfile.open(fileobj=pipe, mode="w|", format=tarfile.PAX_FORMAT) as tar,
            ):
                parents = sorted({str(PurePosixPath(t).parent).lstrip("/") for _, t in downloads})
                for parent in parents:
                    info = tarfile.TarInfo(parent)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                    tar.addfile(info)
                for host, target in downloads:
                    tar.add(str(host), arcname=target.lstrip("/"), recursive=True, filter=owned)
        except BaseException as exc:  # reported by the consumer below
            failure.append(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 20):
                yield chunk
    finally:
        thread.join()
    if failure and not isinstance(failure[0], BrokenPipeError):
        raise RunError(f"cannot copy the download inputs into the container: {failure[0]}")


def _new_run_id() -> str:
    # 48 random bits; os.urandom rather than `secrets`, whose import (hmac,
    # hashlib) costs more than a whole engine request.
    return os.urandom(6).hex()


def run(
    config: RunConfig,
    *,
    settings: Settings | None = None,
    engine: RunEngine | None = None,
    output: Output_ | None = None,
    log: Log | None = None,
    handle_signals: bool = True,
) -> RunResult:
    """Run ``config`` in one container and return when it is gone.

    Args:
        config: what to run.
        settings: envbuild's settings (default: :func:`load_settings`).
        engine: the engine (default: the local Docker engine).
        output: receives ``("stdout" | "stderr", bytes)`` chunks live, undecoded
            (default: written to this process's stdout/stderr).
        log: receives envbuild's own messages and a build log (default: stderr).
        handle_signals: take over SIGINT/SIGTERM/SIGHUP while the container
            exists (main thread only), so that they stop it instead of killing
            envbuild with the container left running.

    Every resource is labelled ``io.envbuild.run=<run id>`` and removed before
    this returns or raises. The run is recorded in the history (see
    :mod:`envbuild.history`) and its whole output kept in ``result.log_path``.

    Raises:
        RunConfigError, ScriptNotFoundError, ScriptNotExecutableError: before
            anything starts (see :func:`plan`).
        DefinitionError, BuildError: the environment could not be built.
        EngineError, RunError: the engine failed; nothing is left behind.
    """
    settings = settings or load_settings()
    log = log or _stderr_log
    output = output or _ConsoleOutput()
    the_plan = plan(config, settings)
    for warning in the_plan.warnings:
        log(warning)
    engine = engine or DockerEngine(settings.docker)

    if the_plan.resolved is not None:
        from envbuild.build import build

        built = build(the_plan.resolved, settings=settings, engine=engine, log=log)
        image, image_id = built.image, built.id
    else:
        info = engine.inspect_image(the_plan.image)
        if info is None:
            raise RunError(
                f"no image {the_plan.image} in the engine",
                hint=f"build or pull it first (docker pull {the_plan.image})",
            )
        image, image_id = the_plan.image, info.id

    # Outputs are made here, by the caller, so the engine does not create them as root.
    outputs: dict[str, Path] = {}
    for name, (host, _target) in the_plan.outputs.items():
        host.mkdir(parents=True, exist_ok=True)
        check_host_path(host, what=f"--output {name}", allow_dangerous=config.allow_dangerous_mount)
        outputs[name] = host

    run_id = _new_run_id()
    label = f"{RUN_LABEL}={run_id}"
    runs_dir = settings.home / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    log_path = runs_dir / f"{run_id}.log"
    started, clock = time.time(), time.monotonic()
    # The history row is written while the engine creates the container: a
    # SQLite commit costs as much as an engine request, and nothing depends on it.
    recorder = _Background(
        lambda: _record_start(settings, the_plan, run_id, image, image_id, log_path, started)
    )

    supervisor = _Supervisor(engine, config.stop_timeout, log)
    spec = the_plan.container_spec(image_id, run_id)
    status_code: int | None = None
    status, exit_code = "failed", 125
    try:
        with supervisor.installed(handle_signals), log_path.open("wb") as log_file:
            stream: ContainerStream | None = None
            try:
                supervisor.container_id = engine.create_container(spec)
                supervisor.check()
                if the_plan.downloads:
                    engine.put_archive(
                        supervisor.container_id,
                        "/",
                        _download_tar(the_plan.downloads, the_plan.user),
                    )
                    supervisor.check()
                stream = engine.attach_container(supervisor.container_id)
                _start(engine, supervisor.container_id, the_plan)
                supervisor.resend()
                supervisor.start_timer(config.timeout)
                _drain(stream, output, log_file)
                status_code = engine.wait_container(supervisor.container_id)
            except _Interrupted:
                pass
            except KeyboardInterrupt:
                if not supervisor.received:  # not ours: signals were left to the caller
                    raise
            finally:
                supervisor.finishing = True
                if stream is not None:
                    stream.close()
                # A clean run created one container and knows its ID; any other
                # path also sweeps by label (a create cut short by a signal or
                # an error may have left a container whose ID never came back).
                clean = status_code is not None and not supervisor.received
                _cleanup(engine, supervisor.container_id, label, log, sweep=not clean)
        if supervisor.received:
            exit_code, status = 128 + supervisor.received[0], "interrupted"
        elif supervisor.timed_out:
            exit_code, status = EXIT_TIMEOUT, "timed-out"
        elif status_code is not None:
            exit_code, status = status_code, "exited"
    finally:
        duration = time.monotonic() - clock
        try:
            history = recorder.result()
            history.finish(
                run_id,
                status=status,
                exit_code=exit_code,
                duration=duration,
                finished=time.time(),
            )
        except EnvbuildError as exc:
            log(f"envbuild: could not record the end of run {run_id}: {exc.message}")
    if status == "interrupted":
        log(f"envbuild: run {run_id} interrupted; its container was removed")
    elif status == "timed-out":
        log(f"envbuild: run {run_id} timed out; its container was removed")
    return RunResult(
        run_id=run_id,
        exit_code=exit_code,
        status=status,
        duration=duration,
        log_path=log_path,
        outputs=MappingProxyType(outputs),
        image=image,
        image_id=image_id,
    )


def _record_start(
    settings: Settings,
    the_plan: RunPlan,
    run_id: str,
    image: str,
    image_id: str,
    log_path: Path,
    started: float,
) -> History:
    """Write the history row of a starting run; return the history."""
    from envbuild.history import History, RunRecord, utc_iso

    doc = the_plan.to_json()
    history = History.at(settings)
    history.start(
        RunRecord(
            id=run_id,
            started_at=utc_iso(started),
            status="running",
            image=image,
            image_id=image_id,
            log_path=str(log_path),
            argv=the_plan.argv,
            arguments=the_plan.arguments,
            variables=tuple(doc["variables"]),
            mounts=tuple(doc["mounts"]),
            inputs=doc["inputs"],
            outputs=doc["outputs"],
            script=the_plan.config.script,
            env_name=the_plan.env_name,
            env_version=the_plan.env_version,
            env_hash=the_plan.env_hash,
            source_dir=the_plan.source.source if the_plan.source else None,
            workdir=the_plan.workdir,
            user=the_plan.user,
        )
    )
    return history


def _start(engine: RunEngine, container_id: str, the_plan: RunPlan) -> None:
    try:
        engine.start_container(container_id)
    except EngineError as exc:
        if the_plan.gpus is not None and "device driver" in exc.message:
            raise RunError(
                f"{exc.message} (GPUs were asked for with --gpus {the_plan.config.gpus})",
                hint="the engine has no GPU runtime: install the NVIDIA Container Toolkit "
                "and restart the engine, or run without --gpus",
            ) from exc
        raise


class _Background(Generic[T]):
    """Call ``work`` in a thread now; :meth:`result` waits, returns its value or raises."""

    def __init__(self, work: Callable[[], T]) -> None:
        self._error: BaseException | None = None
        self._value: list[T] = []

        def target() -> None:
            try:
                self._value.append(work())
            except BaseException as exc:  # handed to result()
                self._error = exc

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def result(self) -> T:
        """Wait for the work; return its value, or raise what it raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value[0]


def _drain(stream: Iterable[tuple[int, bytes]], output: Output_, log_file: Any) -> None:
    """Copy every frame to the output and the log file until the stream ends."""
    last_flush = time.monotonic()
    for kind, data in stream:
        log_file.write(data)
        output("stderr" if kind == STDERR else "stdout", data)
        now = time.monotonic()
        if now - last_flush > 0.5:  # `envbuild logs ID` elsewhere sees progress
            log_file.flush()
            last_flush = now


def _cleanup(
    engine: RunEngine, container_id: str | None, label: str, log: Log, *, sweep: bool
) -> None:
    """Remove the run's container and, with ``sweep``, all else carrying its label (retried)."""
    problems: list[str] = []
    for attempt in range(3):
        problems = []
        if container_id is not None:
            try:
                engine.remove_container(container_id)
            except EngineError as exc:
                problems.append(exc.message)
        if sweep or problems:
            try:
                engine.remove_labelled(label)
            except EngineError as exc:
                problems.append(exc.message)
        if not problems:
            return
        log(f"envbuild: cleanup attempt {attempt + 1} failed: {'; '.join(problems)}")
        time.sleep(0.5 * (attempt + 1))
    raise RunError(
        f"could not remove everything labelled {label}: " + "; ".join(problems),
        hint=f"remove it by hand: docker rm -f $(docker ps -aq --filter label={label})",
    )
