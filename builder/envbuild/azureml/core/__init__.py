"""Azure ML's ``azureml.core``: the same names as :mod:`envbuild.azureml`."""

from envbuild.azureml import HOMES, lazy

__all__ = sorted(HOMES)
__getattr__, __dir__ = lazy(__name__, __all__)
