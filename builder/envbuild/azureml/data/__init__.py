"""``azureml.data``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["DataPath", "DataReference", "FileDataset"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import DataPath as DataPath
    from envbuild.azureml import DataReference as DataReference
    from envbuild.azureml import FileDataset as FileDataset

__getattr__, __dir__ = lazy(__name__, __all__)
