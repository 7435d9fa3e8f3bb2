"""``azureml.core.workspace``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["Workspace"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import Workspace as Workspace

__getattr__, __dir__ = lazy(__name__, __all__)
