"""``azureml.data.data_reference``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["DataReference"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import DataReference as DataReference

__getattr__, __dir__ = lazy(__name__, __all__)
