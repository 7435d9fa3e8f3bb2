"""Lock files: the pure lock model that rendering reads, and the lock makers.

Modules: :mod:`.model` (file names, the pins, reading and staleness; pure),
:mod:`.makers` (pip via uv, conda via py-rattler or conda-lock, base pins).

The model may import :mod:`envbuild.definition`; the makers also
:mod:`envbuild.engine` and :mod:`envbuild.settings`. The names below are
importable from the package itself, loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from envbuild._callable import callable_package

if TYPE_CHECKING:
    from envbuild.lock.makers import (
        CONDA_VIRTUAL_PACKAGES as CONDA_VIRTUAL_PACKAGES,
    )
    from envbuild.lock.makers import (
        LockedPackage as LockedPackage,
    )
    from envbuild.lock.makers import (
        LockResult as LockResult,
    )
    from envbuild.lock.makers import (
        check as check,
    )
    from envbuild.lock.makers import (
        check_base as check_base,
    )
    from envbuild.lock.makers import (
        compile_pip as compile_pip,
    )
    from envbuild.lock.makers import (
        conda_prefix_tar as conda_prefix_tar,
    )
    from envbuild.lock.makers import (
        conda_resolver as conda_resolver,
    )
    from envbuild.lock.makers import (
        fetch_conda_packages as fetch_conda_packages,
    )
    from envbuild.lock.makers import (
        find_conda_solver as find_conda_solver,
    )
    from envbuild.lock.makers import (
        lock as lock,
    )
    from envbuild.lock.makers import (
        locked_packages as locked_packages,
    )
    from envbuild.lock.makers import (
        pin_base as pin_base,
    )
    from envbuild.lock.makers import (
        python_of_base as python_of_base,
    )
    from envbuild.lock.makers import (
        solve_conda as solve_conda,
    )
    from envbuild.lock.makers import (
        solve_conda_rattler as solve_conda_rattler,
    )
    from envbuild.lock.makers import (
        uv_binary as uv_binary,
    )
    from envbuild.lock.model import (
        CONDA_LOCK_FILE as CONDA_LOCK_FILE,
    )
    from envbuild.lock.model import (
        CONDA_PLATFORM as CONDA_PLATFORM,
    )
    from envbuild.lock.model import (
        DISTRO_PYTHON as DISTRO_PYTHON,
    )
    from envbuild.lock.model import (
        GENERATED as GENERATED,
    )
    from envbuild.lock.model import (
        INDEX_FILE as INDEX_FILE,
    )
    from envbuild.lock.model import (
        LOCK_VERSION as LOCK_VERSION,
    )
    from envbuild.lock.model import (
        PIP_LOCK_FILE as PIP_LOCK_FILE,
    )
    from envbuild.lock.model import (
        PIP_PLATFORMS as PIP_PLATFORMS,
    )
    from envbuild.lock.model import (
        BaseArchive as BaseArchive,
    )
    from envbuild.lock.model import (
        BasePin as BasePin,
    )
    from envbuild.lock.model import (
        CondaLock as CondaLock,
    )
    from envbuild.lock.model import (
        Drift as Drift,
    )
    from envbuild.lock.model import (
        LockError as LockError,
    )
    from envbuild.lock.model import (
        Locks as Locks,
    )
    from envbuild.lock.model import (
        Log as Log,
    )
    from envbuild.lock.model import (
        PipLock as PipLock,
    )
    from envbuild.lock.model import (
        conda_inputs as conda_inputs,
    )
    from envbuild.lock.model import (
        conda_pins as conda_pins,
    )
    from envbuild.lock.model import (
        conda_specs as conda_specs,
    )
    from envbuild.lock.model import (
        conda_store as conda_store,
    )
    from envbuild.lock.model import (
        current as current,
    )
    from envbuild.lock.model import (
        explicit_urls as explicit_urls,
    )
    from envbuild.lock.model import (
        needs_conda as needs_conda,
    )
    from envbuild.lock.model import (
        pip_inputs as pip_inputs,
    )
    from envbuild.lock.model import (
        pip_pins as pip_pins,
    )
    from envbuild.lock.model import (
        platform_tag as platform_tag,
    )
    from envbuild.lock.model import (
        read as read,
    )
    from envbuild.lock.model import (
        render_index as render_index,
    )
    from envbuild.lock.model import (
        stale_reasons as stale_reasons,
    )
    from envbuild.lock.model import (
        unlocked_reasons as unlocked_reasons,
    )

# Names re-exported from the package's modules, imported on first use (PEP 562):
# importing the package costs nothing until one is asked for.
_HOMES: dict[str, str] = {
    "BaseArchive": "model",
    "BasePin": "model",
    "CONDA_LOCK_FILE": "model",
    "CONDA_PLATFORM": "model",
    "CONDA_VIRTUAL_PACKAGES": "makers",
    "CondaLock": "model",
    "DISTRO_PYTHON": "model",
    "Drift": "model",
    "GENERATED": "model",
    "INDEX_FILE": "model",
    "LOCK_VERSION": "model",
    "LockError": "model",
    "LockResult": "makers",
    "LockedPackage": "makers",
    "Locks": "model",
    "Log": "model",
    "PIP_LOCK_FILE": "model",
    "PIP_PLATFORMS": "model",
    "PipLock": "model",
    "check": "makers",
    "check_base": "makers",
    "compile_pip": "makers",
    "conda_inputs": "model",
    "conda_pins": "model",
    "conda_prefix_tar": "makers",
    "conda_resolver": "makers",
    "conda_specs": "model",
    "conda_store": "model",
    "current": "model",
    "explicit_urls": "model",
    "fetch_conda_packages": "makers",
    "find_conda_solver": "makers",
    "lock": "makers",
    "locked_packages": "makers",
    "needs_conda": "model",
    "pin_base": "makers",
    "pip_inputs": "model",
    "pip_pins": "model",
    "platform_tag": "model",
    "python_of_base": "makers",
    "read": "model",
    "render_index": "model",
    "solve_conda": "makers",
    "solve_conda_rattler": "makers",
    "stale_reasons": "model",
    "unlocked_reasons": "model",
    "uv_binary": "makers",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


callable_package(__name__, "envbuild.lock.makers", "lock")  # envbuild.lock(env) locks
