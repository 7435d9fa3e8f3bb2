"""``azureml.core.experiment``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["Experiment"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import Experiment as Experiment

__getattr__, __dir__ = lazy(__name__, __all__)
