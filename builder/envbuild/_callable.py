"""Callable packages: ``envbuild.build(...)``, ``envbuild.lock(...)``, ``envbuild.run(...)``.

The public API has functions named like three stages of the pipeline, whose
subpackages carry the same names. Python sets ``envbuild.build`` to the
subpackage whenever anything imports ``envbuild.build.…``, so the name cannot
stay a function; instead the subpackage itself is made callable and calls the
function. ``import envbuild.run as runner`` (or ``from envbuild import run``)
is still the package, with everything in it.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def callable_package(package: str, module: str, function: str) -> None:
    """Make the imported ``package`` callable: calling it calls ``module.function``."""

    def __call__(self: types.ModuleType, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    __call__.__doc__ = f"Call :func:`{module}.{function}`."
    cls = type(
        "CallablePackage", (types.ModuleType,), {"__call__": __call__, "__module__": __name__}
    )
    sys.modules[package].__class__ = cls
