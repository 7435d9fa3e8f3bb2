"""The run plan: a RunConfig resolved without the engine (mounts, placeholders, argv, variables)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from envbuild.engine.docker import (
    BindMount,
    ContainerSpec,
    Engine,
    GpuRequest,
)
from envbuild.errors import (
    RunConfigError,
    ScriptNotExecutableError,
    ScriptNotFoundError,
)
from envbuild.identity import NODE_LABEL, hash_tag
from envbuild.process import OWNER_LABEL
from envbuild.run.config import (
    _CONTAINER_NAME,
    _CONTROL,
    _NAME,
    _PLACEHOLDER,
    _PLACEHOLDER_REF,
    _USER,
    DEFAULT_SHM_SIZE,
    DEFAULT_WORKDIR,
    IMAGE_PREFIX,
    INPUTS_ROOT,
    MAX_TIMEOUT,
    OUTPUTS_ROOT,
    RUN_LABEL,
    Mpi,
    PyTorch,
    RunConfig,
    _check_variable_name,
    check_distribution,
    parse_capabilities,
    parse_gpus,
    parse_shm_size,
)
from envbuild.run.distributed import (
    RANK_SHIM,
    SSH_DIR,
    NodePlan,
    is_root,
    node_count,
    node_names,
    node_plans,
    world_size,
)
from envbuild.run.policy import _check_target, _output_path, check_host_path
from envbuild.settings import Settings, load_settings

if TYPE_CHECKING:
    from envbuild.build.builder import Resolved
    from envbuild.cache.memo import Memo
    from envbuild.run.files import RunFiles


# What a dry run's names show where a real run has its run id.
DRY_RUN_ID = "RUNID"
# The rank shim a PyTorch node's launcher starts (mounted at RANK_SHIM).
RANK_SHIM_SOURCE = Path(__file__).with_name("rank.py")

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
    cap_drop: tuple[str, ...] = ()
    no_new_privileges: bool = True
    env_name: str | None = None
    env_version: int | None = None
    env_hash: str | None = None
    env_path: Path | None = None
    warnings: tuple[str, ...] = ()
    resolved: Resolved | None = None
    # A snapshot run's copy of the source, and the azureml context (envbuild.run.files).
    run_files: RunFiles | None = None
    # plan(..., recall=True) of a folder the memo still answers: its record, in place
    # of ``resolved`` (the image is looked up, not built; a miss plans again).
    recalled: Memo | None = None

    def container_spec(self, image_id: str, run_id: str) -> ContainerSpec:
        """The container this plan runs as, for run ``run_id``."""
        env: tuple[tuple[str, str], ...] = (*self.variables, ("ENVBUILD_RUN_ID", run_id))
        mounts = self.mounts
        if self.run_files is not None:  # the snapshot in place of the source; the context
            env = self.run_files.environment(env)
            mounts = self.run_files.mounts(run_id, mounts)
        return ContainerSpec(
            image=image_id,
            argv=self.argv,
            env=env,
            labels={RUN_LABEL: run_id},  # the runner adds the owner (envbuild.process)
            user=self.user,
            workdir=self.workdir,
            mounts=mounts,
            shm_size=parse_shm_size(self.shm_size),
            gpus=self.gpus,
            init=True,
            name=self.container_name(run_id),
            cap_drop=self.cap_drop,
            no_new_privileges=self.no_new_privileges,
        )

    def container_name(self, run_id: str) -> str:
        """The container's name (a distributed run's node ``i`` adds ``-i``)."""
        return self.config.name or f"envbuild-{run_id}"

    def nodes(self, run_id: str, image_variables: Sequence[str] = ()) -> tuple[NodePlan, ...]:
        """Every node of a distributed run, named after ``run_id``; ``()`` for one container.

        ``image_variables``: the names of the variables the image sets, as the
        engine reports them (an ``image:REF`` run's, which envbuild cannot
        know from a definition), forwarded to MPI ranks too.
        """
        distribution = self.config.distribution
        if distribution is None:
            return ()
        hosts = node_names(self.container_name(run_id), node_count(distribution))
        return node_plans(
            distribution,
            hosts,
            self.argv,
            root=is_root(self.user),
            forward=self.forwarded_variables(image_variables),
            rank_shim=RANK_SHIM if isinstance(distribution, PyTorch) else None,
        )

    def forwarded_variables(self, image_variables: Sequence[str] = ()) -> tuple[str, ...]:
        """The variables an MPI launcher passes on to every rank (``mpirun -x``),
        sorted: the run's (:meth:`variable_names`), and those the image sets
        (:func:`~envbuild.render.dockerfile.image_variables`; for an
        ``image:REF`` run, ``PATH`` and the ``image_variables`` the engine
        reports, when given)."""
        # Imported here: a plain run (planned from the memo) loads no rendering.
        from envbuild.render.dockerfile import image_variables as defined

        image = defined(self.resolved.env) if self.resolved else ("PATH",)
        return tuple(sorted({*self.variable_names(), *image, *image_variables}))

    def node_specs(
        self,
        image_id: str,
        run_id: str,
        *,
        ssh_dir: str | None = None,
        image_variables: Sequence[str] = (),
    ) -> tuple[ContainerSpec, ...]:
        """The containers of a distributed run ``run_id``, node 0 first.

        Each is this plan's container (mounts, user, privileges, shm) with its
        node's name, argv and added variables (:func:`node_plan`), on the
        run's network (named like the run), labelled with its node index.
        ``ssh_dir``, the host folder holding the run's ssh key, is mounted
        read-only at :data:`~envbuild.run.distributed.SSH_DIR` (MPI needs it):
        ``id_rsa`` (the private key, also the workers' sshd host key) and
        ``authorized_keys`` (its public key), owned by the user the ranks run
        as, the private key mode 0600 (ssh and sshd refuse a key their own
        user's group or others can read). A node that needs a capability back
        (:attr:`NodePlan.capabilities`: an MPI worker's root sshd) gets it.
        A PyTorch node also gets envbuild's rank shim, read-only at
        :data:`~envbuild.run.distributed.RANK_SHIM`. ``image_variables``: see
        :meth:`nodes`.
        """
        base = self.container_spec(image_id, run_id)
        distribution = self.config.distribution
        if isinstance(distribution, Mpi) and ssh_dir is None:
            raise ValueError("an MPI run's containers need the run's ssh key folder")
        mounts = base.mounts
        if ssh_dir is not None:
            mounts = (*mounts, BindMount(ssh_dir, SSH_DIR, read_only=True))
        if isinstance(distribution, PyTorch):
            mounts = (*mounts, BindMount(str(RANK_SHIM_SOURCE), RANK_SHIM, read_only=True))
        return tuple(
            dataclasses.replace(
                base,
                argv=node.argv,
                env=(*base.env, *node.environment),
                labels={**base.labels, NODE_LABEL: str(node.index)},
                name=node.host,
                network=self.container_name(run_id),
                mounts=mounts,
                cap_drop=tuple(c for c in base.cap_drop if c not in node.capabilities),
            )
            for node in self.nodes(run_id, image_variables)
        )

    def variable_names(self) -> list[str]:
        """The names of every variable the run's containers get from envbuild, sorted."""
        names = {name for name, _ in self.variables} | {"ENVBUILD_RUN_ID"}
        if self.run_files is not None:
            names |= {name for name, _ in self.run_files.variables()}
        return sorted(names)

    def distribution_json(self, run_id: str = DRY_RUN_ID) -> dict[str, Any] | None:
        """The distributed part of ``--dry-run --json``: the job, and every node's
        container, argv and the variables the distribution adds (with values)."""
        distribution = self.config.distribution
        if distribution is None:
            return None
        fields = {key: getattr(distribution, key) for key in distribution.__dataclass_fields__}
        return {
            "kind": type(distribution).__name__.lower(),
            **fields,
            "world_size": world_size(distribution),
            "network": self.container_name(run_id),
            "containers": [
                {"container": node.host, **node.to_json()} for node in self.nodes(run_id)
            ],
        }

    def to_json(self, run_id: str = DRY_RUN_ID) -> dict[str, Any]:
        """The ``--dry-run --json`` document (variable *names* only, never values);
        ``run_id`` names a snapshot's folders."""
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
            "variables": self.variable_names(),
            "mounts": [
                {"source": m.source, "target": m.target, "read_only": m.read_only}
                for m in (
                    self.run_files.mounts(run_id, self.mounts)
                    if self.run_files is not None
                    else self.mounts
                )
            ],
            "snapshot": (self.run_files.to_json(run_id) if self.run_files is not None else None),
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
            "privileges": {
                "mode": self.config.privileges,
                "no_new_privileges": self.no_new_privileges,
                "cap_drop": list(self.cap_drop),
            },
            "labels": [RUN_LABEL, OWNER_LABEL],
            "distribution": self.distribution_json(),
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


def _environment(
    config: RunConfig, settings: Settings, engine: Engine | None, *, recall: bool = False
) -> dict[str, Any]:
    """Image reference and run defaults of ``config.environment`` (no engine call but an
    unlocked base's inspect).

    With ``recall``, an environment folder whose memo still holds
    (:func:`envbuild.cache.memo.recall_with`, the rule ``build`` uses) is answered
    from it, without loading the definition: its hash, name, version and run
    defaults (``"recalled"``); the caller then looks the image up, and plans
    again without ``recall`` on a miss.
    """
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
    if recall and engine is not None and not config.snapshot and config.distribution is None:
        from envbuild.cache import memo

        folder = memo.env_folder(env)
        found = memo.recall_with(engine, settings.home, folder, settings.platform)
        if found is not None and found.run is not None:
            return {
                "image": hash_tag(settings.prefix, found.name, found.hash),
                "workdir": found.run["workdir"],
                "shm_size": found.run["shm_size"],
                "resolved": None,
                "recalled": (found, folder),
            }
    from envbuild.build.builder import resolve  # the build side is imported only for a folder

    resolved = resolve(Path(env), settings=settings, engine=engine)
    return {
        "image": resolved.hash_tag,
        "workdir": resolved.env.run.workdir,
        "shm_size": resolved.env.run.shm_size,
        "resolved": resolved,
    }


def plan(
    config: RunConfig,
    *,
    settings: Settings | None = None,
    engine: Engine | None = None,
    recall: bool = False,
) -> RunPlan:
    """Resolve and check ``config``; raise before anything starts.

    Nothing touches the engine but the one inspect of an environment folder's
    unlocked base image (part of its hash), through ``engine`` (default: the
    settings' engine). With ``recall`` (``envbuild run``'s own use), a folder
    the memo still answers is planned from it (see :attr:`RunPlan.recalled`).

    Raises :class:`RunConfigError` (bad option, mount policy, placeholder),
    :class:`ScriptNotFoundError` (127) or :class:`ScriptNotExecutableError` (126),
    and the definition's own errors for an environment folder.
    """
    settings = settings or load_settings()
    if config.distribution is not None:
        check_distribution(config.distribution)
    if (config.script is None) == (config.command is None):
        raise RunConfigError("give exactly one of a script and a command")
    env = _environment(config, settings, engine, recall=recall)
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
    if config.timeout is not None and not 0 < config.timeout <= MAX_TIMEOUT:
        raise RunConfigError(
            f"--timeout {config.timeout:g}: give a number of seconds above 0 "
            f"and at most {MAX_TIMEOUT:g} (a year)",
            hint="leave --timeout out for no limit",
        )
    if not 0 <= config.stop_timeout <= MAX_TIMEOUT:
        raise RunConfigError(
            f"stop_timeout {config.stop_timeout:g}: give a number of seconds, "
            f"0 or more and at most {MAX_TIMEOUT:g}"
        )
    if config.name is not None and not _CONTAINER_NAME.fullmatch(config.name):
        raise RunConfigError(
            f"--name {config.name!r}: not a container name",
            hint="letters, digits and _.- (starting with a letter or digit)",
        )
    user = config.user or f"{os.getuid()}:{os.getgid()}"
    if not _USER.fullmatch(user):
        raise RunConfigError(f"--user {user!r}: expected uid[:gid] or a user name")
    workdir = _check_target(config.workdir, "--workdir") if config.workdir else source_target
    cap_drop, no_new_privileges = parse_capabilities(config.privileges, config.cap_add)

    resolved = env["resolved"]
    recalled = env.get("recalled")
    run_files = None
    if config.snapshot:
        if source is None:
            raise RunConfigError(
                "--snapshot copies the source directory: this run has none",
                hint="give --source-dir (a script always has one)",
            )
        from envbuild.run.files import RunFiles  # only snapshot runs pay for it

        defined = dict(resolved.env.variables) if resolved is not None else {}
        run_files = RunFiles(
            home=settings.home,
            source=source.source,
            target=source.target,
            azureml_context=config.azureml_context,
            pythonpath=merged.get("PYTHONPATH", defined.get("PYTHONPATH")),
            user=None if user == f"{os.getuid()}:{os.getgid()}" else user,
        )
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
        cap_drop=cap_drop,
        no_new_privileges=no_new_privileges,
        env_name=resolved.env.name if resolved else recalled[0].name if recalled else None,
        env_version=resolved.env.version if resolved else recalled[0].version if recalled else None,
        env_hash=resolved.hash if resolved else recalled[0].hash if recalled else None,
        env_path=resolved.env.path if resolved else recalled[1] if recalled else None,
        warnings=tuple(warnings),
        resolved=resolved,
        run_files=run_files,
        recalled=recalled[0] if recalled else None,
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
