"""Azure ML's ``Workspace`` and compute targets: the local Docker engine, said once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envbuild.azureml._common import Shim, notice, unsupported

if TYPE_CHECKING:
    from envbuild.azureml.datasets import Datastore, FileDataset
    from envbuild.azureml.environment import Environment
    from envbuild.engine.protocols import RunEngine
    from envbuild.settings import Settings

DEFAULT_DATASTORE = "workspaceblobstore"
DATASTORES_FOLDER = "azureml/datastores"  # under ENVBUILD_HOME
CONFIG_FILE = "config.json"


LOCAL_NOTICE = (
    "the Azure ML workspace and its compute targets are this machine: runs go to the "
    "local Docker engine, nothing is sent to Azure (docs/migrating-from-azureml.md)"
)


def _say_local() -> None:
    notice("local-engine", LOCAL_NOTICE)  # one notice for the workspace and every target


class Workspace(Shim):
    """An Azure ML workspace, resolved to the local engine.

    Azure's arguments (subscription, resource group, name, auth) are accepted
    and only the name is kept. envbuild's own keyword arguments:

    Args:
        settings: envbuild's settings (default: :func:`envbuild.load_settings`, read once).
        engine: the engine runs use (default: the local Docker engine).
        catalog: the ``curated/`` folder that curated names resolve to
            (default: the one beside envbuild's source, else ``./curated``).
        datastore_root: the folder holding each datastore's files, one
            subfolder per datastore (default ``ENVBUILD_HOME/azureml/datastores``).
    """

    def __init__(
        self,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        workspace_name: str | None = None,
        auth: object = None,
        *,
        settings: Settings | None = None,
        engine: RunEngine | None = None,
        catalog: str | os.PathLike[str] | None = None,
        datastore_root: str | os.PathLike[str] | None = None,
        **azure: Any,
    ) -> None:
        _say_local()
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self._name = workspace_name or "local"
        self._settings = settings
        self.engine = engine
        self._catalog = Path(catalog) if catalog is not None else None
        self._datastore_root = Path(datastore_root) if datastore_root is not None else None
        self._environments: dict[str, Environment] = {}
        self._datasets: dict[str, FileDataset] = {}

    def __repr__(self) -> str:
        return f"Workspace(name={self._name!r}, engine='local')"

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        auth: object = None,
        _logger: object = None,
        _file_name: str | None = None,
        **kwargs: Any,
    ) -> Workspace:
        """The workspace of ``config.json`` (its name when the file is there; none is needed)."""
        name = None
        for candidate in _config_candidates(path, _file_name):
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and isinstance(data.get("workspace_name"), str):
                name = data["workspace_name"]
                break
        return cls(workspace_name=name, **kwargs)

    @classmethod
    def get(cls, name: str, auth: object = None, **kwargs: Any) -> Workspace:
        """The workspace called ``name``: the local engine."""
        settings = {k: kwargs.pop(k) for k in ("settings", "engine", "catalog") if k in kwargs}
        return cls(workspace_name=name, **settings)

    @classmethod
    def create(cls, name: str, *args: Any, **kwargs: Any) -> Workspace:
        """Unsupported: there is nothing to create."""
        unsupported(
            "Workspace.create", "Workspace(...) or Workspace.from_config(): the local engine"
        )

    def write_config(self, path: str | None = None, file_name: str | None = None) -> None:
        """Unsupported: a local workspace needs no config file."""
        unsupported("Workspace.write_config", "nothing: Workspace.from_config() needs no file here")

    @property
    def name(self) -> str:
        """The workspace's name (from ``config.json``, else ``local``)."""
        return self._name

    @property
    def settings(self) -> Settings:
        """envbuild's settings for this workspace's runs, read once."""
        if self._settings is None:
            from envbuild.settings import load_settings

            self._settings = load_settings()
        return self._settings

    @property
    def catalog(self) -> Path | None:
        """The curated catalog named at creation (``None``: found where envbuild is)."""
        return self._catalog

    @property
    def datastore_root(self) -> Path:
        """The folder holding the datastores' folders."""
        return self._datastore_root or self.settings.home / DATASTORES_FOLDER

    def get_default_datastore(self) -> Datastore:
        """The default datastore: a local folder (``datastore_root/workspaceblobstore``)."""
        from envbuild.azureml.datasets import Datastore

        return Datastore(self, DEFAULT_DATASTORE)

    @property
    def datastores(self) -> dict[str, Datastore]:
        """The datastores: each folder of ``datastore_root`` (and the default one)."""
        from envbuild.azureml.datasets import Datastore

        names = {DEFAULT_DATASTORE}
        if self.datastore_root.is_dir():
            names |= {p.name for p in self.datastore_root.iterdir() if p.is_dir()}
        return {name: Datastore(self, name) for name in sorted(names)}

    @property
    def environments(self) -> dict[str, Environment]:
        """The environments registered in this workspace (this process's)."""
        from envbuild.azureml.environment import Environment

        return Environment.list(self)

    @property
    def datasets(self) -> dict[str, FileDataset]:
        """The datasets registered in this workspace (this process's)."""
        return dict(self._datasets)

    @property
    def compute_targets(self) -> dict[str, ComputeTarget]:
        """No compute targets: every name resolves to the local engine."""
        return {}


def _config_candidates(path: str | os.PathLike[str] | None, file_name: str | None) -> list[Path]:
    name = file_name or CONFIG_FILE
    if path is not None and Path(path).is_file():
        return [Path(path)]
    start = Path(path) if path is not None else Path.cwd()
    found = []
    for folder in (start, *start.parents):
        found += [folder / name, folder / ".azureml" / name, folder / "aml_config" / name]
    return found


class ComputeTarget(Shim):
    """Azure ML's ``ComputeTarget``: any name resolves to the local engine (said once).

    ``gpus`` (envbuild's own argument) gives the runs on it this machine's GPUs,
    as ``envbuild run --gpus`` does: ``"all"``, a count ``"2"`` or device IDs
    ``"0,1"``; ``None`` (the default) hides every GPU.
    """

    def __init__(
        self, workspace: Workspace | None = None, name: str = "local", *, gpus: str | None = None
    ) -> None:
        say_compute_target(name)
        self.workspace = workspace
        self.name = name
        self.gpus = gpus

    def __repr__(self) -> str:
        return f"ComputeTarget(name={self.name!r}, engine='local')"

    @staticmethod
    def create(workspace: Workspace, name: str, provisioning_configuration: object) -> None:
        """Unsupported: nothing is provisioned."""
        unsupported(
            "ComputeTarget.create (provisioning a cluster)",
            "the local engine runs every job; `envbuild export kubernetes` hands a "
            "distributed run to an existing cluster",
        )

    def wait_for_completion(self, show_output: bool = False, **kwargs: Any) -> None:
        """Nothing to wait for."""


def say_compute_target(name: object) -> None:
    """Say once that compute targets (``name`` among them) are the local engine."""
    _say_local()
