"""Azure ML's datasets and datastores over local folders, delivered as envbuild inputs.

* ``Dataset.File.from_files(path)`` is a :class:`FileDataset` over a local
  folder (or a datastore's path); ``.as_mount()`` becomes an input mounted
  read-only, ``.as_download()`` an input copied into the container first
  (the script may change its copy, never the data);
* a :class:`Datastore` is a local folder (``Workspace.datastore_root/<name>``):
  ``upload`` copies files into it, ``path("./foo")`` is a :class:`DataReference`
  whose ``.as_mount()`` / ``.as_download()`` deliver that folder the same way.

In a run's arguments each of them becomes the container path the data is at
(``${{inputs.NAME}}``); ``str(data_reference)`` is Azure ML's
``$AZUREML_DATAREFERENCE_<name>``, which is replaced in the arguments and set
as a variable, as Azure ML does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from envbuild.azureml._common import Shim, notice, unsupported
from envbuild.errors import UsageError

if TYPE_CHECKING:
    from envbuild.azureml.workspace import Workspace

Mode = Literal["mount", "download"]
DATAREFERENCE_VARIABLE = "AZUREML_DATAREFERENCE_"


def _local_path(path: str | os.PathLike[str], what: str) -> Path:
    text = os.fspath(path)
    if "://" in text:
        unsupported(
            f"{what} from a URL ({text})",
            "download the files to a local folder first, then Dataset.File.from_files(folder)",
        )
    if any(ch in text for ch in "*?["):
        unsupported(
            f"{what} with a wildcard ({text})",
            "name the folder that holds the files: a run input is one folder",
        )
    return Path(text).expanduser()


# --------------------------------------------------------------------------
# Datastores and data references
# --------------------------------------------------------------------------


class Datastore(Shim):
    """An Azure ML datastore, kept as a local folder: ``workspace.datastore_root / name``."""

    def __init__(self, workspace: Workspace, name: str | None = None) -> None:
        from envbuild.azureml.workspace import DEFAULT_DATASTORE

        self.workspace = workspace
        self.name = name or DEFAULT_DATASTORE
        if "/" in self.name or self.name in ("", ".", ".."):
            raise UsageError(
                f"Datastore name {self.name!r}: expected a plain name",
                hint="e.g. Datastore(ws, 'workspaceblobstore')",
            )
        self.datastore_type = "Local"

    def __repr__(self) -> str:
        return f"Datastore(name={self.name!r}, folder={str(self.root)!r})"

    @property
    def root(self) -> Path:
        """The local folder holding this datastore's files."""
        return self.workspace.datastore_root / self.name

    @staticmethod
    def get(workspace: Workspace, datastore_name: str) -> Datastore:
        """The datastore ``datastore_name`` of ``workspace``."""
        return Datastore(workspace, datastore_name)

    @staticmethod
    def get_default(workspace: Workspace) -> Datastore:
        """The workspace's default datastore."""
        return workspace.get_default_datastore()

    @staticmethod
    def register_azure_blob_container(*args: Any, **kwargs: Any) -> Datastore:
        """Unsupported: blob storage is not reached from here."""
        unsupported(
            "Datastore.register_azure_blob_container",
            "copy the data to a local folder (azcopy, az storage blob download-batch), then "
            "Dataset.File.from_files(folder) or Datastore(ws, name).upload(folder)",
        )

    @staticmethod
    def register_azure_file_share(*args: Any, **kwargs: Any) -> Datastore:
        """Unsupported: file shares are not reached from here."""
        unsupported(
            "Datastore.register_azure_file_share",
            "mount the share on this machine, then Dataset.File.from_files(mounted_folder)",
        )

    def _inside(self, relative: str | None) -> Path:
        text = (relative or "").strip()
        parts = Path(text).parts
        if text.startswith("/") or ".." in parts:
            raise UsageError(
                f"datastore path {text!r}: expected a path inside the datastore {self.name!r}",
                hint="a relative path without '..', e.g. 'mnist'",
            )
        return self.root.joinpath(*[p for p in parts if p != "."])

    def upload(
        self,
        src_dir: str | os.PathLike[str],
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> DataReference:
        """Copy the folder ``src_dir`` into the datastore at ``target_path``."""
        source = Path(src_dir)
        if not source.is_dir():
            raise UsageError(f"Datastore.upload: {source} is not a folder")
        target = self._inside(target_path)
        target.mkdir(parents=True, exist_ok=True)
        for item in sorted(source.rglob("*")):
            destination = target / item.relative_to(source)
            if item.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
            elif overwrite or not destination.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(item, destination)
        return self.path(target_path)

    def upload_files(
        self,
        files: Sequence[str | os.PathLike[str]],
        relative_root: str | os.PathLike[str] | None = None,
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> DataReference:
        """Copy ``files`` into the datastore at ``target_path`` (kept below ``relative_root``)."""
        target = self._inside(target_path)
        for name in files:
            item = Path(name)
            relative = item.relative_to(relative_root) if relative_root else Path(item.name)
            destination = target / relative
            if overwrite or not destination.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(item, destination)
        return self.path(target_path)

    def download(
        self,
        target_path: str | os.PathLike[str],
        prefix: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> int:
        """Copy the datastore's files (below ``prefix``) to ``target_path``; return how many."""
        source = self._inside(prefix)
        count = 0
        for item in sorted(source.rglob("*")) if source.is_dir() else []:
            if item.is_file():
                destination = (
                    Path(target_path) / prefix / item.relative_to(source)
                    if prefix
                    else (Path(target_path) / item.relative_to(source))
                )
                if overwrite or not destination.exists():
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(item, destination)
                    count += 1
        return count

    def path(
        self, path: str | None = None, data_reference_name: str | None = None
    ) -> DataReference:
        """A reference to ``path`` in this datastore (``.as_mount()`` / ``.as_download()``)."""
        return DataReference(self, data_reference_name, path)

    def as_mount(self) -> DataReference:
        """The whole datastore, mounted read-only."""
        return self.path().as_mount()

    def as_download(self, path_on_compute: str | None = None) -> DataReference:
        """The whole datastore, copied in."""
        return self.path().as_download(path_on_compute)


class DataReference(Shim):
    """A path in a datastore, delivered to a run by mount (read-only) or download (a copy)."""

    def __init__(
        self,
        datastore: Datastore,
        data_reference_name: str | None = None,
        path_on_datastore: str | None = None,
        mode: str = "mount",
        path_on_compute: str | None = None,
        overwrite: bool = False,
    ) -> None:
        if mode not in ("mount", "download"):
            unsupported(
                f"DataReference mode {mode!r}",
                "mode='mount' (read-only) or 'download' (a copy); outputs go to ./outputs",
            )
        datastore._inside(path_on_datastore)  # a path outside the datastore is refused now
        self.datastore = datastore
        self.path_on_datastore = path_on_datastore
        self.data_reference_name = data_reference_name or _reference_name(
            datastore.name, path_on_datastore
        )
        self.mode: Mode = "mount" if mode == "mount" else "download"
        self.path_on_compute = path_on_compute
        self.overwrite = overwrite

    def __str__(self) -> str:
        return f"${DATAREFERENCE_VARIABLE}{self.data_reference_name}"

    def __repr__(self) -> str:
        return (
            f"DataReference(datastore={self.datastore.name!r}, "
            f"path_on_datastore={self.path_on_datastore!r}, mode={self.mode!r})"
        )

    @property
    def local_path(self) -> Path:
        """The folder on this machine the reference delivers."""
        return self.datastore._inside(self.path_on_datastore)

    def as_mount(self) -> DataReference:
        """The same path, mounted read-only."""
        return DataReference(
            self.datastore, self.data_reference_name, self.path_on_datastore, "mount", None
        )

    def as_download(
        self, path_on_compute: str | None = None, overwrite: bool = False
    ) -> DataReference:
        """The same path, copied into the container before the script starts."""
        return DataReference(
            self.datastore,
            self.data_reference_name,
            self.path_on_datastore,
            "download",
            path_on_compute,
            overwrite,
        )

    def path(
        self, path: str | None = None, data_reference_name: str | None = None
    ) -> DataReference:
        """A path below this one."""
        joined = "/".join(p for p in (self.path_on_datastore, path) if p)
        return DataReference(self.datastore, data_reference_name, joined or None)

    def to_config(self) -> DataReference:
        """What ``run_config.data_references`` holds: the reference itself here."""
        return self


def _reference_name(datastore: str, path: str | None) -> str:
    import re

    parts = [p for p in Path(path or "").parts if p not in (".", "/")]
    name = re.sub(r"[^A-Za-z0-9_]+", "_", "_".join([datastore, *parts])).strip("_")
    return name if name and not name[0].isdigit() else f"data_{name}"


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------


class DataPath(Shim):
    """Azure ML's ``DataPath(datastore, path_on_datastore)``."""

    def __init__(self, datastore: Datastore, path_on_datastore: str | None = None) -> None:
        self.datastore = datastore
        self.path_on_datastore = path_on_datastore


class FileDataset(Shim):
    """A dataset of files: one local folder (or file)."""

    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = path
        self.name = name
        self.version: int | None = None

    def __repr__(self) -> str:
        return f"FileDataset(name={self.name!r}, path={str(self.path)!r})"

    def as_named_input(self, name: str) -> DatasetConsumptionConfig:
        """This dataset as the run input ``name``."""
        return DatasetConsumptionConfig(name, self)

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """Mounted read-only; in arguments, the folder's path in the container."""
        return DatasetConsumptionConfig(None, self).as_mount(path_on_compute)

    def as_download(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """Copied into the container first; in arguments, the copy's path."""
        return DatasetConsumptionConfig(None, self).as_download(path_on_compute)

    def to_path(self) -> list[str]:
        """The dataset's files, as ``/relative/path`` (Azure ML's form)."""
        if self.path.is_file():
            return [f"/{self.path.name}"]
        return sorted(
            "/" + p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
        )

    def download(self, target_path: str | os.PathLike[str], overwrite: bool = False) -> list[str]:
        """Copy the files to ``target_path``; return the paths written."""
        written = []
        for relative in self.to_path():
            source = self.path if self.path.is_file() else self.path / relative.lstrip("/")
            destination = Path(target_path) / relative.lstrip("/")
            if destination.exists() and not overwrite:
                raise UsageError(
                    f"FileDataset.download: {destination} exists", hint="pass overwrite=True"
                )
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
            written.append(str(destination))
        return written

    def mount(self, mount_point: str | None = None) -> Any:
        """Unsupported on the host: the path is already local."""
        unsupported("FileDataset.mount() on the host", f"read the files at {self.path} directly")

    def register(
        self,
        workspace: Workspace,
        name: str,
        description: str | None = None,
        tags: object = None,
        create_new_version: bool = False,
    ) -> FileDataset:
        """Keep the dataset in ``workspace`` (this process) for ``Dataset.get_by_name``."""
        registered = FileDataset(self.path, name)
        previous = workspace._datasets.get(name)
        registered.version = (previous.version or 1) + 1 if previous and create_new_version else 1
        workspace._datasets[name] = registered
        return registered


class DatasetConsumptionConfig(Shim):
    """A dataset as a run input: a name, a mode (mount or download), a path in the container."""

    def __init__(
        self,
        name: str | None,
        dataset: FileDataset,
        mode: str = "mount",
        path_on_compute: str | None = None,
    ) -> None:
        if mode not in ("mount", "download", "direct"):
            unsupported(f"dataset mode {mode!r}", "as_mount() or as_download()")
        self.name = name
        self.dataset = dataset
        self.mode: Mode = "download" if mode == "download" else "mount"
        self.path_on_compute = path_on_compute

    def __repr__(self) -> str:
        return f"DatasetConsumptionConfig(name={self.name!r}, mode={self.mode!r})"

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """Mounted read-only."""
        return DatasetConsumptionConfig(self.name, self.dataset, "mount", path_on_compute)

    def as_download(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """Copied into the container before the script starts."""
        return DatasetConsumptionConfig(self.name, self.dataset, "download", path_on_compute)


class _FileFactory(Shim):
    """``Dataset.File``."""

    def from_files(
        self,
        path: object,
        validate: bool = True,
        partition_format: str | None = None,
        is_file: bool = False,
    ) -> FileDataset:
        """A file dataset over one local folder or file, or one datastore path.

        ``path`` is a local path, a ``(datastore, "relative/path")`` tuple, a
        :class:`DataPath` or a :class:`DataReference`, or a list holding one of them.
        """
        if isinstance(path, list):
            if len(path) != 1:
                unsupported(
                    "Dataset.File.from_files with several paths",
                    "put the files in one folder: a run input is one folder",
                )
            path = path[0]
        local: Path
        if isinstance(path, tuple) and len(path) == 2 and isinstance(path[0], Datastore):
            local = path[0]._inside(str(path[1]))
        elif isinstance(path, DataPath):
            local = path.datastore._inside(path.path_on_datastore)
        elif isinstance(path, DataReference):
            local = path.local_path
        elif isinstance(path, str | os.PathLike):
            local = _local_path(path, "Dataset.File.from_files")
        else:
            raise UsageError(
                f"Dataset.File.from_files({path!r}): expected a path, (datastore, path) or DataPath"
            )
        if validate and not local.exists():
            raise UsageError(
                f"Dataset.File.from_files: {local} does not exist",
                hint="name an existing folder (or pass validate=False)",
            )
        if partition_format:
            notice(
                "partition-format", "partition_format is ignored: the files are used as they are"
            )
        return FileDataset(local.resolve() if local.exists() else local.absolute())


class _TabularFactory(Shim):
    """``Dataset.Tabular``: unsupported."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        unsupported(
            f"Dataset.Tabular.{name}",
            "Dataset.File.from_files(folder) and read the table in the script (pandas)",
        )


class Dataset(Shim):
    """Azure ML's ``Dataset``: ``Dataset.File.from_files``, ``Dataset.get_by_name``."""

    File = _FileFactory()
    Tabular = _TabularFactory()

    @staticmethod
    def get_by_name(workspace: Workspace, name: str, version: str | int = "latest") -> FileDataset:
        """The dataset registered as ``name`` in ``workspace`` (by ``dataset.register``)."""
        found = workspace._datasets.get(name)
        if found is None:
            raise UsageError(
                f"Dataset.get_by_name: no dataset {name!r} in this workspace",
                hint="register it first in this process: "
                "Dataset.File.from_files(folder).register(ws, name)",
            )
        return found

    @staticmethod
    def get_by_id(workspace: Workspace, id: str) -> FileDataset:
        """Unsupported: local datasets have names, no ids."""
        unsupported("Dataset.get_by_id", "Dataset.get_by_name(ws, name)")
