"""``envbuild.azureml``: Azure ML SDK v1's training API, run locally by envbuild.

Replace the ``azureml.core`` imports and the seed's code runs unchanged
otherwise (``docs/migrating-from-azureml.md``)::

    from envbuild.azureml import Environment, Experiment, ScriptRunConfig, Workspace

    ws = Workspace.from_config()              # the local Docker engine (said once)
    env = Environment.get(workspace=ws, name="AzureML-PyTorch-1.6-GPU")  # curated/pytorch-1.6-gpu
    src = ScriptRunConfig(source_directory=".", script="train.py", environment=env)
    run = Experiment(workspace=ws, name="demo").submit(src)
    run.wait_for_completion(show_output=True)

Modules: :mod:`.workspace` (the workspace and compute targets: the local
engine), :mod:`.environment` (``Environment``, ``CondaDependencies`` -> an
envbuild definition), :mod:`.datasets` (datasets and datastores over local
folders), :mod:`.runconfig` (``ScriptRunConfig`` -> ``envbuild.RunConfig``),
:mod:`.experiment` (``Experiment.submit`` -> a background ``envbuild.run``),
:mod:`.curated` (Azure ML's curated names and their ``curated/``
replacements). ``envbuild.azureml.core.*`` and ``envbuild.azureml.data.*``
mirror the ``azureml.core`` modules the seed imports from.

May import: everything below the command line (it is a front end, as
``cli`` is), never click and never the docker SDK. The names are loaded on
first use (PEP 562): importing the package costs nothing.
"""

import importlib  # (no __future__ import: importing this package loads nothing else)
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envbuild.azureml.datasets import DataPath as DataPath
    from envbuild.azureml.datasets import DataReference as DataReference
    from envbuild.azureml.datasets import Dataset as Dataset
    from envbuild.azureml.datasets import DatasetConsumptionConfig as DatasetConsumptionConfig
    from envbuild.azureml.datasets import Datastore as Datastore
    from envbuild.azureml.datasets import FileDataset as FileDataset
    from envbuild.azureml.environment import DEFAULT_CPU_IMAGE as DEFAULT_CPU_IMAGE
    from envbuild.azureml.environment import DEFAULT_GPU_IMAGE as DEFAULT_GPU_IMAGE
    from envbuild.azureml.environment import CondaDependencies as CondaDependencies
    from envbuild.azureml.environment import Environment as Environment
    from envbuild.azureml.experiment import Experiment as Experiment
    from envbuild.azureml.experiment import Run as Run
    from envbuild.azureml.runconfig import DockerConfiguration as DockerConfiguration
    from envbuild.azureml.runconfig import MpiConfiguration as MpiConfiguration
    from envbuild.azureml.runconfig import PyTorchConfiguration as PyTorchConfiguration
    from envbuild.azureml.runconfig import RunConfiguration as RunConfiguration
    from envbuild.azureml.runconfig import ScriptRunConfig as ScriptRunConfig
    from envbuild.azureml.runconfig import TensorflowConfiguration as TensorflowConfiguration
    from envbuild.azureml.workspace import ComputeTarget as ComputeTarget
    from envbuild.azureml.workspace import Workspace as Workspace
    from envbuild.errors import RunFailed as RunFailed
    from envbuild.errors import UnsupportedAzureMLFeature as UnsupportedAzureMLFeature

# Each public name and the module it lives in; loaded on first use.
HOMES: dict[str, str] = {
    "ComputeTarget": "envbuild.azureml.workspace",
    "CondaDependencies": "envbuild.azureml.environment",
    "DEFAULT_CPU_IMAGE": "envbuild.azureml.environment",
    "DEFAULT_GPU_IMAGE": "envbuild.azureml.environment",
    "DataPath": "envbuild.azureml.datasets",
    "DataReference": "envbuild.azureml.datasets",
    "Dataset": "envbuild.azureml.datasets",
    "DatasetConsumptionConfig": "envbuild.azureml.datasets",
    "Datastore": "envbuild.azureml.datasets",
    "DockerConfiguration": "envbuild.azureml.runconfig",
    "Environment": "envbuild.azureml.environment",
    "Experiment": "envbuild.azureml.experiment",
    "FileDataset": "envbuild.azureml.datasets",
    "MpiConfiguration": "envbuild.azureml.runconfig",
    "PyTorchConfiguration": "envbuild.azureml.runconfig",
    "Run": "envbuild.azureml.experiment",
    "RunConfiguration": "envbuild.azureml.runconfig",
    "RunFailed": "envbuild.errors",
    "ScriptRunConfig": "envbuild.azureml.runconfig",
    "TensorflowConfiguration": "envbuild.azureml.runconfig",
    "UnsupportedAzureMLFeature": "envbuild.errors",
    "Workspace": "envbuild.azureml.workspace",
}

__all__ = sorted(HOMES)


def lazy(module: str, names: list[str]) -> tuple[Any, Any]:
    """``(__getattr__, __dir__)`` for a module re-exporting ``names`` of :data:`HOMES` lazily."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return getattr(importlib.import_module(HOMES[name]), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__


__getattr__, __dir__ = lazy(__name__, __all__)
