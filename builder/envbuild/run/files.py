"""A run's own files: its snapshot, its metrics file, and what it keeps.

Azure ML's run conventions, for runs that ask for them
(``RunConfig(snapshot=True)``, ``RunConfig(azureml_context=True)``, which
implies the snapshot; ``envbuild run --snapshot`` / ``--azureml-context``):

* the script runs in a writable copy of the source folder (:mod:`.snapshot`),
  ``ENVBUILD_HOME/runs/<run id>/snapshot``, mounted read-write where the
  source would be; the user's folder is never mounted;
* afterwards what it wrote under ``./outputs`` and ``./logs`` is kept in
  ``ENVBUILD_HOME/runs/<run id>/files/{outputs,logs}`` (``RunResult.files_dir``,
  recorded in the history) and the rest of the copy is removed;
* with ``azureml_context``, a minimal ``azureml.core`` (the folder
  ``azureml_context`` beside this module) is mounted read-only at
  :data:`CONTEXT_TARGET` and put first on ``PYTHONPATH``, and a metrics file
  is mounted writable (:data:`~envbuild.run.metrics.METRICS_FILE_VARIABLE`
  names it in the container); after the run its lines become
  ``RunResult.metrics`` and ``RunResult.tags`` (:mod:`.metrics`).

Every node of a distributed run inherits these mounts and variables (they are
part of the plan's container spec) and shares the one snapshot and metrics file.

:func:`kept_files`, :func:`kept_file` and :func:`fetch` read a finished run's
kept files by run id (``envbuild runs files ID``, ``envbuild runs download``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from envbuild.engine.protocols import BindMount
from envbuild.errors import HistoryError
from envbuild.log import Log
from envbuild.run.metrics import METRICS_FILE_VARIABLE

if TYPE_CHECKING:
    from envbuild.settings import Settings

RUNS = "runs"  # ENVBUILD_HOME/runs: run logs and run folders
SNAPSHOT = "snapshot"
FILES = "files"
METRICS = "metrics"
METRICS_FILE = "metrics.jsonl"
KEPT = ("outputs", "logs")  # the snapshot's folders a run keeps
CONTEXT_TARGET = "/run/envbuild/azureml"  # the in-container azureml.core, read-only
METRICS_TARGET = "/run/envbuild/metrics"  # the folder of the metrics file, writable
_CHUNK = 1 << 20


def run_dir(home: Path, run_id: str) -> Path:
    """The folder of run ``run_id``'s own files: ``ENVBUILD_HOME/runs/<run id>``."""
    return home / RUNS / run_id


def context_dir() -> Path:
    """The folder holding the in-container ``azureml`` package (shipped in the wheel)."""
    return Path(__file__).resolve().parent / "azureml_context"


@dataclass(frozen=True)
class RunFiles:
    """The snapshot and context of one planned run (:attr:`RunPlan.run_files`).

    ``source`` is the user's folder (what is copied), ``target`` where the
    copy is mounted; ``pythonpath`` is the ``PYTHONPATH`` the run would have
    had (``-e`` or the definition's ``[variables]``), kept after the context.
    """

    home: Path
    source: str
    target: str
    azureml_context: bool = False
    pythonpath: str | None = None
    user: str | None = None  # the run's user, when it is not the caller

    def snapshot_dir(self, run_id: str) -> Path:
        """Where the run's copy of the source folder is made."""
        return run_dir(self.home, run_id) / SNAPSHOT

    def files_dir(self, run_id: str) -> Path:
        """Where the run's kept ``outputs`` and ``logs`` end up."""
        return run_dir(self.home, run_id) / FILES

    def metrics_file(self, run_id: str) -> Path:
        """The host side of the run's metrics file."""
        return run_dir(self.home, run_id) / METRICS / METRICS_FILE

    def mounts(self, run_id: str, mounts: Sequence[BindMount]) -> tuple[BindMount, ...]:
        """``mounts`` with the source replaced by the run's snapshot, and the context's added."""
        snapshot = BindMount(str(self.snapshot_dir(run_id)), self.target, read_only=False)
        result = [
            snapshot if (m.source, m.target) == (self.source, self.target) else m for m in mounts
        ]
        if self.azureml_context:
            result.append(BindMount(str(context_dir()), CONTEXT_TARGET, read_only=True))
            result.append(
                BindMount(str(self.metrics_file(run_id).parent), METRICS_TARGET, read_only=False)
            )
        return tuple(result)

    def variables(self) -> tuple[tuple[str, str], ...]:
        """The variables the context adds (none for a plain snapshot)."""
        if not self.azureml_context:
            return ()
        path = CONTEXT_TARGET + (f":{self.pythonpath}" if self.pythonpath else "")
        return (
            ("PYTHONPATH", path),
            (METRICS_FILE_VARIABLE, f"{METRICS_TARGET}/{METRICS_FILE}"),
        )

    def environment(self, env: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        """``env`` with the context's variables in place of any of the same name."""
        ours = self.variables()
        names = {name for name, _ in ours}
        return (*(pair for pair in env if pair[0] not in names), *ours)

    def to_json(self, run_id: str) -> dict[str, Any]:
        """The ``snapshot`` part of ``--dry-run --json``."""
        return {
            "source": self.source,
            "path": str(self.snapshot_dir(run_id)),
            "kept": [f"{self.files_dir(run_id)}/{name}" for name in KEPT],
            "azureml_context": self.azureml_context,
            "metrics_file": str(self.metrics_file(run_id)) if self.azureml_context else None,
        }


@dataclass(frozen=True)
class Kept:
    """What a run kept: its files folder, and the metrics and tags it logged."""

    files_dir: Path | None
    metrics: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def result_fields(self) -> dict[str, Any]:
        """The :class:`~envbuild.run.config.RunResult` fields this fills."""
        return {"files_dir": self.files_dir, "metrics": self.metrics, "tags": self.tags}


def _give(path: Path, user: str) -> bool:
    """Give ``path`` and all below it to the run's user (``uid[:gid]``), as root can;
    ``False`` (nothing changed) when envbuild is not root or the user is a name."""
    from envbuild.run.local import _owner  # the rule download inputs are owned by

    if os.geteuid() != 0 or not user.partition(":")[0].isdigit():
        return False
    uid, gid = _owner(user)
    os.lchown(path, uid, gid)
    for folder, folders, names in os.walk(path):  # never into a symlink
        for name in (*folders, *names):
            os.lchown(Path(folder) / name, uid, gid)
    return True


class Prepared:
    """A run's snapshot (and metrics file), made; :meth:`finish` keeps and cleans up."""

    def __init__(self, files: RunFiles, run_id: str) -> None:
        self.files = files
        self.run_id = run_id

    @classmethod
    def make(cls, files: RunFiles, run_id: str, log: Log) -> Prepared:
        """Copy the source folder and make the metrics file; nothing stays if this fails.

        Raises :class:`~envbuild.errors.RunConfigError` when the source folder
        is over the snapshot's size limit.
        """
        from envbuild.run.snapshot import copy_tree, remove_tree

        folder = run_dir(files.home, run_id)
        folder.mkdir(parents=True)
        try:
            copy_tree(Path(files.source), files.snapshot_dir(run_id), avoid=(files.home,), log=log)
            given = files.user is not None and _give(files.snapshot_dir(run_id), files.user)
            if files.azureml_context:
                metrics = files.metrics_file(run_id)
                metrics.parent.mkdir()
                metrics.touch(mode=0o600)
                if files.user is not None and not _give(metrics, files.user):
                    metrics.chmod(0o666)  # the run's user appends to it (and cannot create it)
            if files.user is not None and not given:
                log(
                    f"warning: run {run_id} runs as {files.user}: its snapshot is yours, "
                    "readable as your folder was but not writable by that user"
                )
        except BaseException:
            remove_tree(folder)
            raise
        return cls(files, run_id)

    def finish(self, log: Log) -> Kept:
        """Keep ``outputs`` and ``logs``, remove the rest of the snapshot, read the metrics,
        and record it all in the history. Never raises: failures are warnings."""
        try:
            return self._finish(log)
        except Exception as exc:  # the run's result matters more than its files
            log(f"warning: could not keep the files of run {self.run_id}: {exc}")
            return Kept(None)

    def _finish(self, log: Log) -> Kept:
        from envbuild.run.metrics import read
        from envbuild.run.snapshot import remove_tree

        snapshot = self.files.snapshot_dir(self.run_id)
        files_dir = self.files.files_dir(self.run_id)
        files_dir.mkdir(exist_ok=True)
        for name in KEPT:
            made = snapshot / name
            try:
                mode = made.lstat().st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(mode):  # a symlink is never followed out of the run
                log(f"warning: run {self.run_id}: ./{name} is not a folder; not kept")
                continue
            with contextlib.suppress(OSError):  # moving a folder needs it writable
                made.chmod(stat.S_IMODE(mode) | 0o700)
            made.replace(files_dir / name)
        remove_tree(snapshot, log)
        metrics: Mapping[str, Any] = {}
        tags: Mapping[str, str] = {}
        if self.files.azureml_context:
            path = self.files.metrics_file(self.run_id)
            found = read(path, log)
            metrics, tags = found.metrics, found.tags
            remove_tree(path.parent, log)  # the history holds them now
        kept = Kept(files_dir, MappingProxyType(dict(metrics)), MappingProxyType(dict(tags)))
        self._record(kept, log)
        return kept

    def _record(self, kept: Kept, log: Log) -> None:
        from envbuild.run.history import DATABASE, History

        try:
            History(self.files.home / DATABASE).record_files(
                self.run_id, files_dir=kept.files_dir, metrics=kept.metrics, tags=kept.tags
            )
        except Exception as exc:
            why = getattr(exc, "message", None) or str(exc)
            log(f"warning: could not record the files and metrics of run {self.run_id}: {why}")


def settle(home: Path, run_ids: Iterable[str], log: Log) -> list[str]:
    """Keep what runs whose envbuild died wrote, as their end would have; return their ids.

    A run killed with its envbuild (``kill -9``, a crash) never ran
    :meth:`Prepared.finish`: the reaper calls this for the runs it marks
    lost, whose containers are gone. Their ``./outputs`` and ``./logs`` are
    kept, their metrics read and recorded, the rest of their snapshot removed.
    """
    settled = []
    for run_id in run_ids:
        folder = run_dir(home, run_id)
        if not (folder / SNAPSHOT).is_dir() and not (folder / METRICS).is_dir():
            continue
        files = RunFiles(home, source="", target="", azureml_context=(folder / METRICS).is_dir())
        Prepared(files, run_id).finish(log)
        settled.append(run_id)
    return settled


# --------------------------------------------------------------------------
# A finished run's kept files, by run id
# --------------------------------------------------------------------------


def _files_dir(run_id: str, settings: Settings | None) -> tuple[str, Path]:
    from envbuild.run.history import History
    from envbuild.settings import load_settings

    settings = settings or load_settings()
    record = History.at(settings).get(run_id)
    if not record.files_dir and record.status == "running":
        raise HistoryError(
            f"run {record.id} is still running",
            hint="its ./outputs and ./logs are kept when it ends",
        )
    if not record.files_dir:
        raise HistoryError(
            f"run {record.id} kept no files",
            hint="a run keeps ./outputs and ./logs with envbuild run --snapshot "
            "(or --azureml-context)",
        )
    return record.id, Path(record.files_dir)


def _walk(root: Path) -> list[str]:
    names: list[str] = []
    for folder, folders, files in os.walk(root):  # never into a symlinked folder
        folders.sort()
        base = PurePosixPath(Path(folder).relative_to(root).as_posix())
        for name in sorted(files):
            if stat.S_ISREG((Path(folder) / name).lstat().st_mode):  # links are not listed
                names.append(str(base / name) if str(base) != "." else name)
    return names


def kept_files(run_id: str, settings: Settings | None = None) -> list[str]:
    """The files run ``run_id`` kept, sorted: POSIX names such as ``outputs/model.txt``.

    ``run_id`` may be a unique prefix. Only regular files are listed (a
    symlink the script left is never followed). Raises :class:`HistoryError`
    for an unknown run or one that kept no files.
    """
    _, root = _files_dir(run_id, settings)
    if not root.is_dir():
        return []
    return _walk(root)


def kept_file(run_id: str, name: str, settings: Settings | None = None) -> Path:
    """The host path of the kept file ``name`` (as :func:`kept_files` lists it) of run ``run_id``.

    Refuses a name with ``..``, an absolute one, and one that reaches through
    a symlink or names anything but a regular file (:class:`HistoryError`).
    """
    found_id, root = _files_dir(run_id, settings)
    pure = PurePosixPath(name)
    missing = HistoryError(
        f"run {found_id} kept no file {name!r}", hint=f"envbuild runs files {found_id} lists them"
    )
    if not name or pure.is_absolute() or ".." in pure.parts or "\x00" in name:
        raise missing
    path = root
    for index, part in enumerate(pure.parts):
        path = path / part
        try:
            mode = path.lstat().st_mode
        except OSError:
            raise missing from None
        last = index == len(pure.parts) - 1
        if not (stat.S_ISREG(mode) if last else stat.S_ISDIR(mode)):
            raise missing
    return path


def fetch(run_id: str, name: str, destination: Path, settings: Settings | None = None) -> Path:
    """Copy the kept file ``name`` of run ``run_id`` to ``destination``; return the copy's path.

    ``destination`` may be an existing folder (the file keeps its base name
    there) or a file path (its folders are made). The kept file is opened
    without following links.
    """
    source = kept_file(run_id, name, settings)
    target = destination / source.name if destination.is_dir() else destination
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(source, flags)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise HistoryError(f"{source}: not a regular file")
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                while chunk := handle.read(_CHUNK):
                    out.write(chunk)
    except OSError as exc:
        raise HistoryError(
            f"cannot copy {name!r} of run {run_id} to {target}: {exc.strerror or exc}"
        ) from exc
    return target


def fetch_all(
    run_id: str, destination: Path, prefix: str = "", settings: Settings | None = None
) -> list[Path]:
    """Copy every kept file of run ``run_id`` whose name starts with ``prefix`` under
    ``destination``, keeping their relative paths; return the copies' paths."""
    return [
        fetch(run_id, name, destination / name, settings)
        for name in kept_files(run_id, settings)
        if name.startswith(prefix)
    ]
