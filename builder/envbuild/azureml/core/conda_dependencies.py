"""``azureml.core.conda_dependencies``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["CondaDependencies"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import CondaDependencies as CondaDependencies

__getattr__, __dir__ = lazy(__name__, __all__)
