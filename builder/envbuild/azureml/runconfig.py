"""Azure ML's ``ScriptRunConfig``, ``RunConfiguration`` and distributed configurations,
translated to an envbuild :class:`~envbuild.run.config.RunConfig`.

``ScriptRunConfig(source_directory=".", script="train.py", arguments=[...],
compute_target=..., environment=env, distributed_job_config=...)`` keeps what
it is given in ``src.run_config`` (a :class:`RunConfiguration`, as in Azure
ML: change it there and the run changes); :func:`to_run_config` reads it:

* the environment: :func:`~envbuild.azureml.environment.resolve_environment`
  (a curated folder, a generated definition, or an image as it is), its
  ``environment_variables`` and ``run_config.environment_variables`` the run's;
* datasets and data references in the arguments (or in
  ``run_config.data_references`` / ``run_config.data``): inputs, each argument
  the container path of its data;
* ``MpiConfiguration`` / ``PyTorchConfiguration`` / ``TensorflowConfiguration``:
  :class:`~envbuild.run.config.Mpi`, :class:`~envbuild.run.config.PyTorch`,
  :class:`~envbuild.run.config.TensorFlow`;
* ``max_run_duration_seconds``: the timeout; ``DockerConfiguration(shm_size=...)``;
* Azure ML's run conventions (``azureml_context``): the script runs in a
  writable snapshot of ``source_directory``, what it writes under
  ``./outputs`` and ``./logs`` is kept with the run, and its own
  ``from azureml.core import Run`` logs metrics into the run's history.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envbuild.azureml._common import Shim, unsupported
from envbuild.azureml.datasets import (
    DATAREFERENCE_VARIABLE,
    DataReference,
    DatasetConsumptionConfig,
    FileDataset,
)
from envbuild.azureml.environment import (
    DEFAULT_CPU_IMAGE as DEFAULT_CPU_IMAGE,  # re-exported: azureml.core.runconfig has it
)
from envbuild.azureml.environment import (
    DEFAULT_GPU_IMAGE as DEFAULT_GPU_IMAGE,
)
from envbuild.azureml.environment import Environment, Target, resolve_environment
from envbuild.azureml.workspace import ComputeTarget, say_compute_target
from envbuild.errors import UsageError

if TYPE_CHECKING:
    from envbuild.azureml.workspace import Workspace
    from envbuild.run.config import Distribution, Input, Mount, RunConfig

DEFAULT_MAX_RUN_DURATION = 2592000  # Azure ML's default: 30 days
_INPUT_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_OLD_TORCH = re.compile(r"torch\s*==\s*1\.([0-9])(?:\.|$)")  # torch < 1.10 has no torchrun


# --------------------------------------------------------------------------
# Distributed configurations
# --------------------------------------------------------------------------


class MpiConfiguration(Shim):
    """An MPI job: ``node_count`` containers, ``process_count_per_node`` ranks on each."""

    def __init__(self, process_count_per_node: int = 1, node_count: int = 1) -> None:
        self.process_count_per_node = process_count_per_node
        self.node_count = node_count

    def __repr__(self) -> str:
        return (
            f"MpiConfiguration(process_count_per_node={self.process_count_per_node}, "
            f"node_count={self.node_count})"
        )


class PyTorchConfiguration(Shim):
    """A ``torch.distributed`` job: ``process_count`` processes over ``node_count`` nodes."""

    def __init__(
        self,
        communication_backend: str = "Nccl",
        process_count: int | None = None,
        node_count: int = 1,
    ) -> None:
        self.communication_backend = communication_backend
        self.process_count = process_count
        self.node_count = node_count

    def __repr__(self) -> str:
        return (
            f"PyTorchConfiguration(communication_backend={self.communication_backend!r}, "
            f"process_count={self.process_count}, node_count={self.node_count})"
        )


class TensorflowConfiguration(Shim):
    """A TensorFlow job: ``worker_count`` workers and ``parameter_server_count`` servers."""

    def __init__(self, worker_count: int = 1, parameter_server_count: int = 1) -> None:
        self.worker_count = worker_count
        self.parameter_server_count = parameter_server_count

    def __repr__(self) -> str:
        return (
            f"TensorflowConfiguration(worker_count={self.worker_count}, "
            f"parameter_server_count={self.parameter_server_count})"
        )


DistributedConfig = MpiConfiguration | PyTorchConfiguration | TensorflowConfiguration


class DockerConfiguration(Shim):
    """``docker_runtime_config``: ``shm_size``; ``use_docker`` is always true here."""

    def __init__(
        self,
        use_docker: bool = True,
        shm_size: str | None = None,
        shared_volumes: bool = True,
        arguments: Sequence[str] | None = None,
    ) -> None:
        self.use_docker = use_docker
        self.shm_size = shm_size
        self.shared_volumes = shared_volumes
        self.arguments = list(arguments or ())


class RunConfiguration(Shim):
    """Azure ML's ``RunConfiguration``: what a ``ScriptRunConfig`` holds (``src.run_config``).

    The attributes read by a run: ``script``, ``arguments``, ``command``,
    ``target``, ``environment``, ``environment_variables``, ``data_references``,
    ``data``, ``node_count``, ``max_run_duration_seconds``, ``docker``
    (:class:`DockerConfiguration`), ``mpi`` / ``pytorch`` / ``tensorflow``
    (the distributed configuration, the one ``communicator`` names).
    """

    def __init__(
        self,
        script: str | None = None,
        arguments: Sequence[Any] | None = None,
        framework: str | None = None,
        communicator: str | None = None,
        conda_dependencies: object = None,
        command: Sequence[str] | str | None = None,
    ) -> None:
        self.script = script
        self.arguments: list[Any] = list(arguments or [])
        self.command = command
        self.target: object = "local"
        self.environment = Environment("default-environment")
        self.environment_variables: dict[str, str] = {}
        self.data_references: dict[str, DataReference] = {}
        self.data: dict[str, DatasetConsumptionConfig] = {}
        self.node_count = 1
        self.max_run_duration_seconds: int | None = None
        self.docker = DockerConfiguration()
        self.framework = framework or "Python"
        self.communicator = communicator or "None"
        self.mpi: MpiConfiguration | None = None
        self.pytorch: PyTorchConfiguration | None = None
        self.tensorflow: TensorflowConfiguration | None = None
        self.history: object = None
        if conda_dependencies is not None:
            self.environment.python.conda_dependencies = conda_dependencies  # type: ignore[assignment]

    @property
    def distributed_job_config(self) -> DistributedConfig | None:
        """The distributed configuration ``communicator`` names (``None``: one container)."""
        if self.communicator == "IntelMpi":
            unsupported("Intel MPI", "MpiConfiguration (Open MPI)")
        by_communicator: Mapping[str, DistributedConfig | None] = {
            "Mpi": self.mpi,
            "ParameterServer": self.tensorflow,
            "Nccl": self.pytorch,
            "Gloo": self.pytorch,
        }
        if self.communicator not in ("None", *by_communicator):
            unsupported(
                f"communicator {self.communicator!r}",
                "MpiConfiguration, PyTorchConfiguration or TensorflowConfiguration",
            )
        return by_communicator.get(self.communicator)

    def set_distributed(self, config: DistributedConfig) -> None:
        """Set the distributed configuration (what ``distributed_job_config=`` does)."""
        self.mpi = self.pytorch = self.tensorflow = None
        if isinstance(config, MpiConfiguration):
            self.mpi, self.communicator, self.node_count = config, "Mpi", config.node_count
        elif isinstance(config, PyTorchConfiguration):
            self.pytorch, self.node_count = config, config.node_count
            self.communicator = "Gloo" if config.communication_backend.lower() == "gloo" else "Nccl"
            self.framework = "PyTorch"
        elif isinstance(config, TensorflowConfiguration):
            self.tensorflow, self.communicator = config, "ParameterServer"
            self.node_count = config.worker_count + config.parameter_server_count
            self.framework = "TensorFlow"
        else:
            raise UsageError(
                f"distributed_job_config {config!r}: expected MpiConfiguration, "
                "PyTorchConfiguration or TensorflowConfiguration"
            )


class ScriptRunConfig(Shim):
    """Azure ML's ``ScriptRunConfig``: a script, its arguments, an environment, a source folder.

    Submit it with ``Experiment(workspace=ws, name=...).submit(src)``, or turn
    it into envbuild's run configuration with :meth:`to_envbuild`.
    """

    def __init__(
        self,
        source_directory: str,
        script: str | None = None,
        arguments: Sequence[Any] | str | None = None,
        run_config: RunConfiguration | None = None,
        _telemetry_values: object = None,
        compute_target: object = None,
        environment: Environment | None = None,
        distributed_job_config: DistributedConfig | None = None,
        resume_from: object = None,
        max_run_duration_seconds: int | None = DEFAULT_MAX_RUN_DURATION,
        command: Sequence[str] | str | None = None,
        docker_runtime_config: DockerConfiguration | None = None,
    ) -> None:
        if resume_from is not None:
            unsupported(
                "ScriptRunConfig(resume_from=...)",
                "pass the checkpoint's folder as a dataset (Dataset.File.from_files) and "
                "resume from it in the script",
            )
        if script is not None and command is not None:
            raise UsageError("ScriptRunConfig: give script or command, not both")
        self.source_directory = source_directory
        rc = run_config if run_config is not None else RunConfiguration()
        if script is not None:
            rc.script = script
        if isinstance(arguments, str):
            arguments = shlex.split(arguments)
        if arguments is not None:
            rc.arguments = list(arguments)
        if command is not None:
            rc.command = command
        if compute_target is not None:
            rc.target = compute_target
        if environment is not None:
            rc.environment = environment
        if distributed_job_config is not None:
            rc.set_distributed(distributed_job_config)
        if max_run_duration_seconds is not None:
            rc.max_run_duration_seconds = max_run_duration_seconds
        if docker_runtime_config is not None:
            rc.docker = docker_runtime_config
        self.run_config = rc

    @property
    def script(self) -> str | None:
        """The script, relative to ``source_directory``."""
        return self.run_config.script

    @property
    def arguments(self) -> list[Any]:
        """The script's arguments."""
        return self.run_config.arguments

    @property
    def command(self) -> Sequence[str] | str | None:
        """The command run instead of a script."""
        return self.run_config.command

    @property
    def distributed_job_config(self) -> DistributedConfig | None:
        """The distributed configuration, if any."""
        return self.run_config.distributed_job_config

    def to_envbuild(self, workspace: Workspace | None = None) -> RunConfig:
        """envbuild's run configuration for this one (see :func:`to_run_config`)."""
        return to_run_config(self, workspace)


# --------------------------------------------------------------------------
# The translation
# --------------------------------------------------------------------------


class _Data:
    """The inputs and mounts a run's data become, each with its container path."""

    def __init__(self) -> None:
        self.inputs: list[Input] = []
        self.mounts: list[Mount] = []
        self.variables: dict[str, str] = {}
        self._by_key: dict[tuple[str, str, str | None], str] = {}

    def _name(self, wanted: str) -> str:
        name = _INPUT_NAME_BAD.sub("_", wanted).strip("_-")[:60] or "data"
        if not (name[0].isalpha() or name[0] == "_"):
            name = f"data_{name}"[:60]
        taken = {i.name for i in self.inputs}
        candidate, count = name, 1
        while candidate in taken:
            count += 1
            candidate = f"{name}_{count}"
        return candidate

    def add(self, wanted: str, path: Path, mode: str, path_on_compute: str | None) -> str:
        """The argument for ``path`` delivered by ``mode``: a placeholder or a container path."""
        from envbuild.run.config import INPUTS_ROOT, Input, Mount

        key = (str(path), mode, path_on_compute)
        if key in self._by_key:
            return self._by_key[key]
        if path_on_compute is not None:
            if mode == "download" or not path_on_compute.startswith("/"):
                unsupported(
                    f"path_on_compute={path_on_compute!r} with {mode}",
                    "leave path_on_compute out: the data's path is in the argument "
                    f"({INPUTS_ROOT}/NAME); or mount it read-only at an absolute path",
                )
            self.mounts.append(Mount(path, path_on_compute, read_only=True))
            argument = path_on_compute
        else:
            name = self._name(wanted)
            self.inputs.append(Input(name, path, "download" if mode == "download" else "mount"))
            argument = "${{inputs." + name + "}}"
        self._by_key[key] = argument
        return argument

    def container_path(self, argument: str) -> str:
        """The literal container path of an argument :meth:`add` returned."""
        from envbuild.run.config import INPUTS_ROOT

        if argument.startswith("${{inputs."):
            return f"{INPUTS_ROOT}/{argument[len('${{inputs.') : -2]}"
        return argument

    def dataset(self, item: DatasetConsumptionConfig | FileDataset) -> str:
        config = item if isinstance(item, DatasetConsumptionConfig) else item.as_mount()
        wanted = config.name or config.dataset.name or "dataset"
        return self.add(wanted, config.dataset.path, config.mode, config.path_on_compute)

    def reference(self, ref: DataReference) -> str:
        argument = self.add(ref.data_reference_name, ref.local_path, ref.mode, ref.path_on_compute)
        self.variables[DATAREFERENCE_VARIABLE + ref.data_reference_name] = self.container_path(
            argument
        )
        return argument


def _argument(item: object, data: _Data, references: Mapping[str, str]) -> str:
    if isinstance(item, DatasetConsumptionConfig | FileDataset):
        return data.dataset(item)
    if isinstance(item, DataReference):
        return data.reference(item)
    if isinstance(item, bool | int | float | str | Path):
        text = str(item)
        return references.get(text, text)
    unsupported(
        f"an argument of type {type(item).__name__} ({item!r})",
        "strings, numbers, datasets (as_mount/as_download) and data references",
    )


def distribution_for(
    config: DistributedConfig | None, target: Target, node_count: int = 1
) -> Distribution | None:
    """envbuild's distribution for Azure ML's distributed configuration."""
    from envbuild.run.config import Mpi, PyTorch, TensorFlow

    if config is None:
        if node_count != 1:
            unsupported(
                f"run_config.node_count = {node_count} without a distributed configuration",
                "distributed_job_config=MpiConfiguration(node_count=N) (or PyTorch/Tensorflow)",
            )
        return None
    if isinstance(config, MpiConfiguration):
        return Mpi(config.node_count, config.process_count_per_node)
    if isinstance(config, TensorflowConfiguration):
        return TensorFlow(config.worker_count, config.parameter_server_count)
    total = config.process_count if config.process_count is not None else config.node_count
    nodes = config.node_count
    if not isinstance(total, int) or not isinstance(nodes, int) or nodes < 1 or total % nodes:
        raise UsageError(
            f"PyTorchConfiguration(process_count={config.process_count}, node_count={nodes}): "
            "process_count must be a multiple of node_count",
            hint="e.g. PyTorchConfiguration(process_count=4, node_count=2): 2 processes per node",
        )
    return PyTorch(
        nodes,
        total // nodes,
        backend=config.communication_backend.lower(),
        launcher=_torch_launcher(target),
    )


def _torch_launcher(target: Target) -> str:
    """``launch`` for an environment with torch older than 1.10 (no torchrun), else ``torchrun``."""
    if target.folder is None:
        return "torchrun"
    from envbuild.definition.model import load

    packages = load(target.folder).pip.packages
    return "launch" if any(_OLD_TORCH.match(p.replace(" ", "")) for p in packages) else "torchrun"


def to_run_config(src: ScriptRunConfig, workspace: Workspace | None = None) -> RunConfig:
    """envbuild's :class:`~envbuild.run.config.RunConfig` for ``src``.

    Writes the environment's generated definition if it needs one (under
    ``ENVBUILD_HOME``); touches no engine. Raises
    :class:`~envbuild.errors.UnsupportedAzureMLFeature` for what has no
    local meaning, naming the alternative.
    """
    from envbuild.run.config import RunConfig

    rc = src.run_config
    if not isinstance(rc.environment, Environment):
        raise UsageError(
            f"environment {rc.environment!r}: expected an Environment",
            hint="Environment.get(workspace=ws, name=...) or Environment(name)",
        )
    if rc.target not in (None, "local"):
        say_compute_target(rc.target)
    if not rc.docker.use_docker:
        unsupported("DockerConfiguration(use_docker=False)", "envbuild always runs in a container")
    if rc.docker.arguments:
        unsupported(
            "DockerConfiguration(arguments=...) (docker run options)",
            "envbuild.RunConfig's own fields (mounts, gpus, shm_size, user, cap_add)",
        )
    target = resolve_environment(
        rc.environment,
        workspace.catalog if workspace else None,
        workspace,
        mpi=isinstance(rc.distributed_job_config, MpiConfiguration),
    )
    data = _Data()
    references: dict[str, str] = {}
    for name, ref in rc.data_references.items():
        if not isinstance(ref, DataReference):
            raise UsageError(f"run_config.data_references[{name!r}]: expected a DataReference")
        if ref.data_reference_name != name:
            ref = DataReference(
                ref.datastore, name, ref.path_on_datastore, ref.mode, ref.path_on_compute
            )
        references[str(ref)] = data.reference(ref)
    for name, consumption in rc.data.items():
        if isinstance(consumption, FileDataset):
            consumption = consumption.as_named_input(name)
        if not isinstance(consumption, DatasetConsumptionConfig):
            raise UsageError(f"run_config.data[{name!r}]: expected dataset.as_named_input(...)")
        data.dataset(DatasetConsumptionConfig(name, consumption.dataset, consumption.mode))
    arguments = [_argument(item, data, references) for item in rc.arguments]
    command: tuple[str, ...] | None = None
    if rc.command is not None:
        command = ("sh", "-c", rc.command) if isinstance(rc.command, str) else tuple(rc.command)
    elif rc.script is None:
        raise UsageError(
            "ScriptRunConfig: no script", hint="ScriptRunConfig(..., script='train.py')"
        )
    variables = {**rc.environment.environment_variables, **rc.environment_variables}
    variables.update(data.variables)
    return RunConfig(
        environment=target.run_environment,
        script=rc.script if command is None else None,
        arguments=tuple(arguments),
        command=command,
        # Absolute now: the run starts in the background, after the caller may have moved.
        source_directory=Path(src.source_directory).absolute(),
        environment_variables={str(k): str(v) for k, v in variables.items()},
        inputs=tuple(data.inputs),
        mounts=tuple(data.mounts),
        shm_size=rc.docker.shm_size or rc.environment.docker.shm_size,
        gpus=rc.target.gpus if isinstance(rc.target, ComputeTarget) else None,
        timeout=float(rc.max_run_duration_seconds) if rc.max_run_duration_seconds else None,
        distribution=distribution_for(rc.distributed_job_config, target, rc.node_count),
        # Azure ML's run conventions: a writable snapshot, ./outputs and ./logs kept,
        # the script's own azureml.core whose metrics land in the history.
        azureml_context=True,
    )
