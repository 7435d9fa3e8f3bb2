"""``azureml.core.environment``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["Environment"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import Environment as Environment

__getattr__, __dir__ = lazy(__name__, __all__)
