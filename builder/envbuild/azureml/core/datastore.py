"""``azureml.core.datastore``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["Datastore"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import Datastore as Datastore

__getattr__, __dir__ = lazy(__name__, __all__)
