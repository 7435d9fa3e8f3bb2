"""``azureml.core.compute``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["ComputeTarget"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import ComputeTarget as ComputeTarget

__getattr__, __dir__ = lazy(__name__, __all__)
