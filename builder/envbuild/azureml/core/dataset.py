"""``azureml.core.dataset``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["Dataset"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import Dataset as Dataset

__getattr__, __dir__ = lazy(__name__, __all__)
