"""envbuild: transparent, versioned environment definitions turned into images.

The pipeline, one subpackage per stage::

    definition (load + validate env.toml) -> lock -> render (Dockerfile + context)
    -> cache (content hash, lookup) -> build (engine) -> run

The public API, what other job runners build on (``docs/api.md``)::

    load, Environment                   a definition, loaded and validated
    Settings, load_settings             where state lives, which docker, the platform
    resolve, build, BuildResult         the hash of an environment; its image
    lock                                pin an environment's inputs in lock files
    RunConfig, Input, Output, Mount     what to run, with what data
    plan, run, RunResult                check a run without the engine; run it
    EnvbuildError, ...                  the errors (envbuild.errors)

Every function that needs them takes keyword-only ``settings=None``,
``engine=None`` and ``log=None``: ``None`` means the settings of
:func:`load_settings`, the local Docker engine, and no log (stderr for
``run``), and what a caller passes is passed on, never read again behind it.

The names are loaded on first use (PEP 562), so ``import envbuild`` costs
nothing more than this file: the console script's cache-hit path imports it.
``build``, ``lock`` and ``run`` are also the names of subpackages; those
subpackages are callable, so ``envbuild.run(config)`` runs and
``envbuild.run.RunConfig`` is there too.
"""

import importlib  # (no __future__ import: importing this package loads nothing else)
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from envbuild.build.builder import build as build
    from envbuild.build.builder import resolve as resolve
    from envbuild.build.result import BuildResult as BuildResult
    from envbuild.definition.model import Environment as Environment
    from envbuild.definition.model import load as load
    from envbuild.errors import BuildError as BuildError
    from envbuild.errors import DefinitionError as DefinitionError
    from envbuild.errors import EngineError as EngineError
    from envbuild.errors import EnvbuildError as EnvbuildError
    from envbuild.errors import LockError as LockError
    from envbuild.errors import RegistryError as RegistryError
    from envbuild.errors import RunConfigError as RunConfigError
    from envbuild.errors import RunError as RunError
    from envbuild.errors import UsageError as UsageError
    from envbuild.lock.makers import lock as lock
    from envbuild.run.config import Input as Input
    from envbuild.run.config import Mount as Mount
    from envbuild.run.config import Output as Output
    from envbuild.run.config import RunConfig as RunConfig
    from envbuild.run.config import RunResult as RunResult
    from envbuild.run.local import run as run
    from envbuild.run.planning import plan as plan
    from envbuild.settings import Settings as Settings
    from envbuild.settings import load_settings as load_settings

# Each public name and the module it lives in; loaded on first use.
_HOMES: dict[str, str] = {
    "load": "envbuild.definition.model",
    "Environment": "envbuild.definition.model",
    "Settings": "envbuild.settings",
    "load_settings": "envbuild.settings",
    "resolve": "envbuild.build.builder",
    "BuildResult": "envbuild.build.result",
    "RunConfig": "envbuild.run.config",
    "Input": "envbuild.run.config",
    "Output": "envbuild.run.config",
    "Mount": "envbuild.run.config",
    "RunResult": "envbuild.run.config",
    "plan": "envbuild.run.planning",
    "EnvbuildError": "envbuild.errors",
    "UsageError": "envbuild.errors",
    "DefinitionError": "envbuild.errors",
    "LockError": "envbuild.errors",
    "BuildError": "envbuild.errors",
    "EngineError": "envbuild.errors",
    "RegistryError": "envbuild.errors",
    "RunError": "envbuild.errors",
    "RunConfigError": "envbuild.errors",
}
# Functions whose name is a subpackage's: the callable subpackage is the answer.
_PACKAGES = ("build", "lock", "run")

__all__ = sorted([*_HOMES, *_PACKAGES])


def __getattr__(name: str) -> Any:
    if name in _PACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
