"""``azureml.core.runconfig``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = [
    "DEFAULT_CPU_IMAGE",
    "DEFAULT_GPU_IMAGE",
    "DockerConfiguration",
    "MpiConfiguration",
    "PyTorchConfiguration",
    "RunConfiguration",
    "TensorflowConfiguration",
]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import DEFAULT_CPU_IMAGE as DEFAULT_CPU_IMAGE
    from envbuild.azureml import DEFAULT_GPU_IMAGE as DEFAULT_GPU_IMAGE
    from envbuild.azureml import DockerConfiguration as DockerConfiguration
    from envbuild.azureml import MpiConfiguration as MpiConfiguration
    from envbuild.azureml import PyTorchConfiguration as PyTorchConfiguration
    from envbuild.azureml import RunConfiguration as RunConfiguration
    from envbuild.azureml import TensorflowConfiguration as TensorflowConfiguration

__getattr__, __dir__ = lazy(__name__, __all__)
