"""Azure ML's ``Experiment`` and ``Run``: a submitted run is an envbuild run in the background.

``Experiment(workspace=ws, name="x").submit(src)`` translates ``src``
(:func:`~envbuild.azureml.runconfig.to_run_config`) and checks it
(:func:`envbuild.plan`) at once, so a bad configuration raises there, then
returns a :class:`Run` while :func:`envbuild.run` runs it in a background
thread, as Azure ML's ``submit`` returns while the job runs remotely.
``run.wait_for_completion(show_output=True)`` joins it, streaming the
build's and the script's output from the start; Ctrl-C while waiting stops
the run's container (as ``envbuild run`` does) and raises
``KeyboardInterrupt``. ``run.id`` is envbuild's run id from the start:
``envbuild runs show ID`` shows the run.

A run that is never waited for still runs to its end: when the program is
done, envbuild says so and waits for it (Ctrl-C, SIGTERM or SIGHUP there stop
it, as while waiting), so that no container outlives its program unnoticed.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from envbuild.azureml._common import Shim, unsupported
from envbuild.azureml.runconfig import ScriptRunConfig, to_run_config
from envbuild.errors import EnvbuildError, Interrupted, RunFailed, UsageError

if TYPE_CHECKING:
    from envbuild.azureml.workspace import Workspace
    from envbuild.run.config import RunConfig, RunResult
    from envbuild.run.history import RunRecord
    from envbuild.settings import Settings

# Azure ML's run states, as get_status() answers them.
QUEUED, RUNNING, COMPLETED, FAILED, CANCELED = (
    "Queued",
    "Running",
    "Completed",
    "Failed",
    "Canceled",
)
TERMINAL = (COMPLETED, FAILED, CANCELED)
# The history's statuses as Azure ML's (an exit code other than 0 makes "exited" Failed).
_STATUS = {
    "running": RUNNING,
    "exited": COMPLETED,
    "interrupted": CANCELED,
    "timed-out": FAILED,
    "failed": FAILED,
    "lost": FAILED,
}
# The experiment's name, for the script's run.experiment.name: the in-container
# azureml.core (envbuild/run/azureml_context/azureml/core/run.py) reads it.
EXPERIMENT_VARIABLE = "ENVBUILD_EXPERIMENT"
CANCEL_WAIT = 30.0  # seconds cancel() keeps stopping the run's containers while it has not ended


class Experiment(Shim):
    """An Azure ML experiment: a name that groups the runs submitted through it."""

    def __init__(
        self, workspace: Workspace, name: str, _skip_name_validation: bool = False, **kwargs: Any
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise UsageError(
                f"Experiment name {name!r}: expected a name",
                hint="Experiment(workspace=ws, name='my-experiment')",
            )
        self.workspace = workspace
        self.name = name
        self._runs: list[Run] = []

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"

    def submit(self, config: object, tags: Mapping[str, str] | None = None, **kwargs: Any) -> Run:
        """Start ``config`` (a :class:`ScriptRunConfig`) and return its :class:`Run` at once."""
        if not isinstance(config, ScriptRunConfig):
            unsupported(
                f"Experiment.submit({type(config).__name__})",
                "a ScriptRunConfig (Estimators, HyperDrive, AutoML and pipelines have no "
                "local equivalent)",
            )
        if kwargs:
            unsupported(f"Experiment.submit options {sorted(kwargs)}", "ScriptRunConfig's own")
        envbuild_config = to_run_config(config, self.workspace)
        variables = {**envbuild_config.environment_variables, EXPERIMENT_VARIABLE: self.name}
        envbuild_config = dataclasses.replace(envbuild_config, environment_variables=variables)
        run = Run._start(self, envbuild_config, dict(tags or {}))
        self._runs.append(run)
        return run

    def get_runs(self) -> list[Run]:
        """The runs submitted through this experiment in this process, newest first."""
        return list(reversed(self._runs))


class Run(Shim):
    """A submitted run (Azure ML's ``Run``/``ScriptRun``), or the script's offline context.

    ``id`` is envbuild's run id. Inside a container, the script's own
    ``azureml.core.Run.get_context()`` is envbuild's in-container module, not this class.
    """

    def __init__(
        self,
        experiment: Experiment | None,
        run_id: str,
        config: RunConfig | None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.experiment = experiment
        self.id = run_id
        self._config = config
        self._tags: dict[str, str] = dict(tags or {})
        self._cond = threading.Condition()
        self._chunks: list[tuple[str, bytes]] = []
        self._status = QUEUED
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._thread: threading.Thread | None = None
        self._cancelled = False
        self._record: RunRecord | None = None  # a past run (Run.get): the history's row

    def __repr__(self) -> str:
        name = self.experiment.name if self.experiment else None
        return f"Run(experiment={name!r}, id={self.id!r}, status={self.get_status()!r})"

    # -- starting -----------------------------------------------------------------

    @classmethod
    def _start(cls, experiment: Experiment, config: RunConfig, tags: Mapping[str, str]) -> Run:
        from envbuild.run.local import new_run_id
        from envbuild.run.planning import plan

        workspace = experiment.workspace
        plan(config, settings=workspace.settings, engine=workspace.engine)  # raises here, at once
        run = cls(experiment, new_run_id(), config, tags)
        # A daemon thread, waited for at exit by _wait_at_exit (where Ctrl-C stops the run),
        # never by the interpreter's own join, which an interrupt would abandon.
        run._thread = threading.Thread(target=run._work, name=f"envbuild-run-{run.id}", daemon=True)
        _pending(run)
        run._thread.start()
        return run

    def _work(self) -> None:
        from envbuild.run.local import run as envbuild_run

        assert self.experiment is not None and self._config is not None
        workspace = self.experiment.workspace
        with self._cond:
            self._status, self._started_at = RUNNING, time.time()
            self._cond.notify_all()
        result: RunResult | None = None
        error: BaseException | None = None
        try:
            result = envbuild_run(
                self._config,
                settings=workspace.settings,
                engine=workspace.engine,
                output=self._output,
                log=self._log,
                handle_signals=False,
                run_id=self.id,
            )
        except BaseException as exc:  # kept for wait_for_completion, never lost in the thread
            error = exc
        with self._cond:
            self._result, self._error, self._ended_at = result, error, time.time()
            if (result is not None and result.status == "interrupted") or self._cancelled:
                self._status = CANCELED
            elif result is not None and result.exit_code == 0:
                self._status = COMPLETED
            else:
                self._status = FAILED
            self._cond.notify_all()
        with _PENDING_LOCK:  # ended: nothing to wait for at exit
            if self in _PENDING:
                _PENDING.remove(self)

    def _output(self, stream: str, data: bytes) -> None:
        with self._cond:
            self._chunks.append((stream, data))
            self._cond.notify_all()

    def _log(self, line: str) -> None:
        self._output("stderr", (line + "\n").encode("utf-8", "replace"))

    # -- waiting ------------------------------------------------------------------

    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
    ) -> dict[str, Any]:
        """Wait for the run's end and return :meth:`get_details`.

        With ``show_output``, the run's output (its build, then the script) is
        written to this process's stdout/stderr as it comes, from the start.
        A run that did not complete raises :class:`RunFailed` (or the error
        that kept it from running) unless ``raise_on_error`` is false.
        """
        if self._thread is None and self.get_status() not in TERMINAL:
            raise UsageError(
                f"run {self.id} runs in another process: it cannot be waited for here",
                hint=f"envbuild runs show {self.id}",
            )
        try:
            with _terminations_interrupt():
                self._follow(show_output)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP (Interrupted): stop the run
            self.cancel()
            if self._thread is not None:
                self._thread.join(timeout=30)
            raise
        if self._thread is not None:
            self._thread.join()
        if raise_on_error:
            self._raise_failure()
        return self.get_details()

    def _follow(self, show_output: bool) -> None:
        """Wait for the run's end, writing its output as it comes with ``show_output``."""
        shown = 0
        while True:
            with self._cond:
                while len(self._chunks) == shown and self._status not in TERMINAL:
                    self._cond.wait(timeout=0.5)
                chunks, shown = self._chunks[shown:], len(self._chunks)
                done = self._status in TERMINAL
            if show_output:
                _write(chunks)
            if done:
                return

    def _raise_failure(self) -> None:
        if self._error is not None:
            if isinstance(self._error, EnvbuildError | KeyboardInterrupt):
                raise self._error
            raise RunFailed(
                f"run {self.id} failed: {self._error!r}",
                run_id=self.id,
                exit_code=None,
                status=self._status,
                hint="envbuild's own failure: see the traceback above",
            ) from self._error
        if self._status != COMPLETED:
            result = self._result
            code = result.exit_code if result is not None else None
            raise RunFailed(
                f"run {self.id} {self._status.lower()}: the script exited with code {code}",
                run_id=self.id,
                exit_code=code,
                status=self._status,
                hint=f"its output: envbuild runs logs {self.id}",
            )

    def cancel(self) -> None:
        """Stop the run's container (gracefully, then killed after the stop timeout)."""
        from envbuild.engine.docker import DockerEngine
        from envbuild.run.config import RUN_LABEL

        with self._cond:
            if self._status in TERMINAL:
                return
            self._cancelled = True
        assert self.experiment is not None and self._config is not None
        workspace = self.experiment.workspace
        engine = workspace.engine or DockerEngine(workspace.settings.docker)
        # The container may not exist yet (the image is being built): look again
        # for a while; the run ends once its container stops.
        deadline = time.monotonic() + CANCEL_WAIT
        while self.get_status() not in TERMINAL and time.monotonic() < deadline:
            for container in engine.list_labelled(f"{RUN_LABEL}={self.id}").containers:
                # A container gone already was removed by the run's own cleanup.
                with contextlib.suppress(EnvbuildError):
                    engine.stop_container(container, self._config.stop_timeout)
            with self._cond:
                self._cond.wait(timeout=0.2)

    # -- what Azure ML's Run answers ----------------------------------------------

    def get_status(self) -> str:
        """``Queued``, ``Running``, ``Completed``, ``Failed`` or ``Canceled``."""
        with self._cond:
            return self._status

    @property
    def status(self) -> str:
        """The same as :meth:`get_status`."""
        return self.get_status()

    def get_details(self) -> dict[str, Any]:
        """The run's details, with Azure ML's keys and envbuild's own under ``envbuild``."""
        from envbuild.run.history import utc_iso

        config = self._config
        result = self._result
        details: dict[str, Any] = {
            "runId": self.id,
            "target": "local",
            "status": self.get_status(),
            "startTimeUtc": utc_iso(self._started_at) if self._started_at else None,
            "endTimeUtc": utc_iso(self._ended_at) if self._ended_at else None,
            "properties": dict(self._tags),
            "runDefinition": {
                "script": config.script if config else None,
                "command": list(config.command) if config and config.command else None,
                "arguments": list(config.arguments) if config else [],
                "environment": str(config.environment) if config else None,
                "environmentVariables": sorted(config.environment_variables) if config else [],
                "inputs": {
                    i.name: {"path": str(i.path), "mode": i.mode}
                    for i in (config.inputs if config else ())
                },
                "nodeCount": _node_count(config),
            },
            "logFiles": {},
            "envbuild": {
                "exitCode": result.exit_code if result else None,
                "status": result.status if result else None,
                "image": result.image if result else None,
                "duration": result.duration if result else None,
            },
        }
        record = self._record
        if record is not None:  # a past run: what the history holds
            details["startTimeUtc"] = record.started_at
            details["endTimeUtc"] = record.finished_at
            details["runDefinition"].update(
                script=record.script,
                arguments=list(record.arguments),
                environment=record.env_name or record.image,
                environmentVariables=list(record.variables),
            )
            details["envbuild"].update(
                exitCode=record.exit_code,
                status=record.status,
                image=record.image,
                duration=record.duration,
            )
        log_path = result.log_path if result is not None else None
        if record is not None and record.log_path:
            log_path = Path(record.log_path)
        if log_path is not None:
            details["logFiles"]["azureml-logs/70_driver_log.txt"] = str(log_path)
        if self._error is not None:
            details["error"] = {"message": _describe(self._error)}
        return details

    def get_tags(self) -> dict[str, str]:
        """The tags given to ``submit`` or :meth:`tag`, and those the script set (``run.tag``)."""
        return {**self._tags, **self._finished_field("tags")}

    def tag(self, key: str, value: str | None = None) -> None:
        """Tag the run (kept on this object)."""
        self._tags[key] = "" if value is None else str(value)

    def get_metrics(
        self,
        name: str | None = None,
        recursive: bool = False,
        run_type: str | None = None,
        populate: bool = False,
    ) -> dict[str, Any]:
        """What the script logged: ``name -> value``, or the list of values of a name
        logged several times (``run.log``), read when the run has ended."""
        metrics = self._finished_field("metrics")
        if name is not None:
            return {name: metrics[name]} if name in metrics else {}
        return metrics

    def _finished_field(self, key: str) -> dict[str, Any]:
        """``metrics`` or ``tags`` of the ended run (the history's, for :meth:`get`)."""
        if self._result is not None:
            return dict(getattr(self._result, key))
        if self._record is not None:
            return dict(getattr(self._record, key))
        return {}

    def get_file_names(self) -> list[str]:
        """The files the script wrote under ``./outputs`` and ``./logs`` (``outputs/model.pt``)."""
        from envbuild.run.files import kept_files

        self._require_end("get_file_names")
        return kept_files(self.id, self._settings)

    def download_file(
        self,
        name: str,
        output_file_path: str | os.PathLike[str] | None = None,
        _validate_checksum: bool = False,
    ) -> None:
        """Copy the kept file ``name`` to ``output_file_path`` (default: its base name here)."""
        from envbuild.run.files import fetch

        self._require_end("download_file")
        target = Path(output_file_path) if output_file_path is not None else Path(Path(name).name)
        fetch(self.id, name, target, self._settings)

    def download_files(
        self,
        prefix: str | None = None,
        output_directory: str | os.PathLike[str] | None = None,
        output_paths: Sequence[str] | None = None,
        batch_size: int = 100,
        append_prefix: bool = True,
        timeout_seconds: int | None = None,
    ) -> None:
        """Copy the kept files whose names start with ``prefix`` under ``output_directory``
        (default: here), keeping their paths (without ``prefix`` unless ``append_prefix``)."""
        from envbuild.run.files import fetch, kept_files

        self._require_end("download_files")
        if output_paths is not None:
            unsupported("Run.download_files(output_paths=...)", "download_file(name, path) each")
        root = Path(output_directory) if output_directory is not None else Path()
        start = prefix or ""
        for name in kept_files(self.id, self._settings):
            if name.startswith(start):
                relative = name if append_prefix else name[len(start) :].lstrip("/")
                fetch(self.id, name, root / relative, self._settings)

    def _require_end(self, what: str) -> None:
        if self.get_status() not in TERMINAL:
            raise UsageError(
                f"Run.{what}: run {self.id} has not ended",
                hint="run.wait_for_completion() first: the files are kept when the run ends",
            )

    @property
    def _settings(self) -> Settings | None:
        return self.experiment.workspace.settings if self.experiment is not None else None

    @classmethod
    def get(cls, workspace: Workspace, run_id: str) -> Run:
        """A run of the history by id (a unique prefix is enough): its status, metrics, files."""
        from envbuild.run.history import History

        record = History.at(workspace.settings).get(run_id)
        run = cls(Experiment(workspace, "envbuild"), record.id, None)
        run._record = record
        run._status = _STATUS.get(record.status, RUNNING)
        if run._status == COMPLETED and record.exit_code:
            run._status = FAILED
        return run

    @staticmethod
    def get_context(allow_offline: bool = True, used_for_context_manager: bool = False) -> Any:
        """Unsupported on the host; inside a run, the script's ``azureml.core`` answers."""
        unsupported(
            "Run.get_context() outside a run",
            "call it in the training script: runs started by envbuild.azureml give the "
            "script its own azureml.core",
        )


_PENDING: list[Run] = []
_PENDING_LOCK = threading.Lock()


def _pending(run: Run) -> None:
    """Remember ``run`` for :func:`_wait_at_exit` (registered with the first run)."""
    with _PENDING_LOCK:
        if not _PENDING:
            atexit.register(_wait_at_exit)
        _PENDING.append(run)


def _wait_at_exit() -> None:
    """At interpreter exit: wait for the runs nobody waited for; an interrupt stops them."""
    with _PENDING_LOCK:
        running = [run for run in _PENDING if run.get_status() not in TERMINAL]
        _PENDING.clear()
    try:
        for run in running:
            print(
                f"envbuild.azureml: waiting for run {run.id} to end (Ctrl-C stops it)",
                file=sys.stderr,
                flush=True,
            )
            run.wait_for_completion(raise_on_error=False)  # an interrupt stops this one
    except KeyboardInterrupt:
        for run in running:  # and the others
            run.cancel()


@contextlib.contextmanager
def _terminations_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`~envbuild.errors.Interrupted` (a KeyboardInterrupt)
    while the main thread waits, so that the run is stopped as on Ctrl-C, not left running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    wanted = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {signum: signal.signal(signum, interrupt) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _node_count(config: RunConfig | None) -> int:
    from envbuild.run.config import TensorFlow

    distribution = config.distribution if config is not None else None
    if distribution is None:
        return 1
    if isinstance(distribution, TensorFlow):
        return distribution.workers + distribution.parameter_servers
    return distribution.nodes


def _describe(error: BaseException) -> str:
    if isinstance(error, EnvbuildError):
        return error.render()
    return f"{type(error).__name__}: {error}"


def _write(chunks: list[tuple[str, bytes]]) -> None:
    for stream, data in chunks:
        target = sys.stderr if stream == "stderr" else sys.stdout
        buffer = getattr(target, "buffer", None)
        if buffer is not None:
            target.flush()
            buffer.write(data)
            buffer.flush()
        else:
            target.write(data.decode("utf-8", "replace"))
            target.flush()
