"""The run layer: run config, mount policy, the plan, the local executor, the history.

Modules: :mod:`.config` (what a user asks for; parsing the CLI's strings),
:mod:`.policy` (which host paths may be mounted), :mod:`.planning` (a config
resolved without the engine), :mod:`.local` (one container on the local
engine), :mod:`.multi` (a distributed job: one container per node, on a
network of its own; :mod:`.distributed` gives each node its contract,
:mod:`.rank` is the PyTorch rank shim), :mod:`.history` (the SQLite run
history).

May import: build, engine. The names below are importable from the package
itself (``from envbuild.run import RunConfig, run``), loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from envbuild._callable import callable_package

if TYPE_CHECKING:
    from envbuild.run.config import (
        DEFAULT_SHM_SIZE as DEFAULT_SHM_SIZE,
    )
    from envbuild.run.config import (
        DEFAULT_STOP_TIMEOUT as DEFAULT_STOP_TIMEOUT,
    )
    from envbuild.run.config import (
        DEFAULT_WORKDIR as DEFAULT_WORKDIR,
    )
    from envbuild.run.config import (
        EXIT_TIMEOUT as EXIT_TIMEOUT,
    )
    from envbuild.run.config import (
        IMAGE_PREFIX as IMAGE_PREFIX,
    )
    from envbuild.run.config import (
        INPUTS_ROOT as INPUTS_ROOT,
    )
    from envbuild.run.config import (
        OUTPUTS_ROOT as OUTPUTS_ROOT,
    )
    from envbuild.run.config import (
        RUN_LABEL as RUN_LABEL,
    )
    from envbuild.run.config import (
        Input as Input,
    )
    from envbuild.run.config import (
        InputMode as InputMode,
    )
    from envbuild.run.config import (
        Log as Log,
    )
    from envbuild.run.config import (
        Mount as Mount,
    )
    from envbuild.run.config import (
        Output as Output,
    )
    from envbuild.run.config import (
        Output_ as Output_,
    )
    from envbuild.run.config import (
        RunConfig as RunConfig,
    )
    from envbuild.run.config import (
        RunResult as RunResult,
    )
    from envbuild.run.config import (
        config_from_options as config_from_options,
    )
    from envbuild.run.config import (
        parse_env_file as parse_env_file,
    )
    from envbuild.run.config import (
        parse_gpus as parse_gpus,
    )
    from envbuild.run.config import (
        parse_input as parse_input,
    )
    from envbuild.run.config import (
        parse_mount as parse_mount,
    )
    from envbuild.run.config import (
        parse_output as parse_output,
    )
    from envbuild.run.config import (
        parse_shm_size as parse_shm_size,
    )
    from envbuild.run.config import (
        parse_variable as parse_variable,
    )
    from envbuild.run.local import (
        run as run,
    )
    from envbuild.run.planning import (
        RunPlan as RunPlan,
    )
    from envbuild.run.planning import (
        plan as plan,
    )
    from envbuild.run.planning import (
        substitute as substitute,
    )
    from envbuild.run.policy import (
        check_host_path as check_host_path,
    )
    from envbuild.run.policy import (
        dangerous_reason as dangerous_reason,
    )

# Names re-exported from the package's modules, imported on first use (PEP 562):
# importing the package costs nothing until one is asked for.
_HOMES: dict[str, str] = {
    "DEFAULT_SHM_SIZE": "config",
    "DEFAULT_STOP_TIMEOUT": "config",
    "DEFAULT_WORKDIR": "config",
    "EXIT_TIMEOUT": "config",
    "IMAGE_PREFIX": "config",
    "INPUTS_ROOT": "config",
    "Input": "config",
    "InputMode": "config",
    "Log": "config",
    "Mount": "config",
    "OUTPUTS_ROOT": "config",
    "Output": "config",
    "Output_": "config",
    "RUN_LABEL": "config",
    "RunConfig": "config",
    "RunPlan": "planning",
    "RunResult": "config",
    "check_host_path": "policy",
    "config_from_options": "config",
    "dangerous_reason": "policy",
    "parse_env_file": "config",
    "parse_gpus": "config",
    "parse_input": "config",
    "parse_mount": "config",
    "parse_output": "config",
    "parse_shm_size": "config",
    "parse_variable": "config",
    "plan": "planning",
    "run": "local",
    "substitute": "planning",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


callable_package(__name__, "envbuild.run.local", "run")  # envbuild.run(config) runs
