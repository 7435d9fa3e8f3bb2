"""``azureml.core.run``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["Run"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import Run as Run

__getattr__, __dir__ = lazy(__name__, __all__)
