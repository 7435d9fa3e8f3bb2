"""``azureml.data.datapath``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["DataPath"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import DataPath as DataPath

__getattr__, __dir__ = lazy(__name__, __all__)
