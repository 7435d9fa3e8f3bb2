"""A minimal ``azureml.core`` for scripts that envbuild runs with ``--azureml-context``.

Only what a training script uses from inside its run: ``Run.get_context()``
and the run's ``log``, ``log_list``, ``log_row``, ``log_table``, ``tag``,
``set_tags``, ``get_metrics``, ``get_tags``, ``id`` and ``complete()``. Metrics
land in envbuild's run history (``envbuild runs show ID``). Anything else of
Azure ML raises an error that names the feature and envbuild's alternative.
"""

from typing import Any

from azureml.core.run import Run, UnsupportedFeatureError

__all__ = ["Run", "UnsupportedFeatureError"]
__version__ = "1.0.0+envbuild"


def __getattr__(name: str) -> Any:  # Python 3.7+ asks it for a name the module lacks
    from azureml.core.run import unsupported

    if name.startswith("_"):
        raise AttributeError(name)
    raise unsupported("azureml.core." + name)
