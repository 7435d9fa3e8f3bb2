"""``azureml.data.file_dataset``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["FileDataset"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import FileDataset as FileDataset

__getattr__, __dir__ = lazy(__name__, __all__)
