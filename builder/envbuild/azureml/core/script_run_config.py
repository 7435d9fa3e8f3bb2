"""``azureml.core.script_run_config``: the names of :mod:`envbuild.azureml` it holds."""

__all__ = ["ScriptRunConfig"]

from typing import TYPE_CHECKING

from envbuild.azureml import lazy

if TYPE_CHECKING:
    from envbuild.azureml import ScriptRunConfig as ScriptRunConfig

__getattr__, __dir__ = lazy(__name__, __all__)
