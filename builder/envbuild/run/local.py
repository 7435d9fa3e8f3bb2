"""The local executor: one container on the engine, supervised from create to removal."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from envbuild.engine.api import socket_path
from envbuild.engine.docker import DockerEngine
from envbuild.engine.protocols import STDERR, RunEngine
from envbuild.engine.runner import run_to_completion
from envbuild.errors import (
    EngineError,
    EnvbuildError,
    RunConfigError,
    RunError,
)
from envbuild.identity import CUDA_LABEL
from envbuild.log import Log
from envbuild.process import HANDLED_SIGNALS, start_thread
from envbuild.process import current as current_owner
from envbuild.run.config import EXIT_TIMEOUT, Output_, RunConfig, RunResult
from envbuild.run.planning import RunPlan, plan
from envbuild.run.policy import check_host_path
from envbuild.run.reaper import reap
from envbuild.settings import Settings, load_settings

if TYPE_CHECKING:
    from envbuild.run.history import History

T = TypeVar("T")


# Running
# --------------------------------------------------------------------------


def _stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _ConsoleOutput:
    """The script's stdout/stderr to ours, byte for byte, flushed per chunk (live)."""

    def __init__(self) -> None:
        self.broken: set[str] = set()

    def __call__(self, stream: str, data: bytes) -> None:
        if stream in self.broken:
            return
        target = sys.stderr if stream == "stderr" else sys.stdout
        try:
            buffer = getattr(target, "buffer", None)
            if buffer is not None:
                buffer.write(data)
                buffer.flush()
            else:  # a text-only stream (e.g. captured in tests)
                target.write(data.decode("utf-8", errors="replace"))
                target.flush()
        except BrokenPipeError:
            # `envbuild run ... | head`: keep running and logging, stop printing.
            self.broken.add(stream)


class _Interrupted(Exception):
    """A signal arrived before the container was running."""


class _Supervisor:
    """Signals and the timeout, turned into engine calls on the run's container.

    First SIGINT/SIGTERM/SIGHUP: a graceful stop (the stop signal, then a kill
    after ``stop_timeout``); the second: a kill; a third gives up waiting (the
    container is still force-removed). The handlers only record and hand the
    engine call to a thread: the main thread keeps draining the log stream,
    which ends when the container does.
    """

    SIGNALS = HANDLED_SIGNALS

    def __init__(self, engine: RunEngine, stop_timeout: float, log: Log) -> None:
        self.engine = engine
        self.stop_timeout = stop_timeout
        self.log = log
        self.container_id: str | None = None
        self.received: list[int] = []
        self.timed_out = False
        self.finishing = False
        self._threads: list[threading.Thread] = []
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None

    @contextlib.contextmanager
    def installed(self, enabled: bool) -> Iterator[None]:
        """Handle the signals while the run is supervised (main thread only)."""
        if enabled and threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        try:
            yield
        finally:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            if self._timer is not None:
                self._timer.cancel()
            for thread in self._threads:
                thread.join(timeout=5)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.finishing or self.container_id is None:
            return  # checked by the main thread before it starts anything
        count = len(self.received)
        if count == 1:
            self.log(
                f"envbuild: {signal.Signals(signum).name}: stopping the run "
                f"(up to {self.stop_timeout:g}s; press Ctrl-C again to kill it)"
            )
            self._spawn(self.stop)
        elif count == 2:
            self.log("envbuild: killing the run")
            self._spawn(self.kill)
        else:
            raise KeyboardInterrupt

    def start_timer(self, timeout: float | None) -> None:
        """Stop the run after ``timeout`` seconds."""
        if timeout is None:
            return

        def expire() -> None:
            if self.finishing or self.received:
                return
            self.timed_out = True
            self.log(f"envbuild: the run timed out after {timeout:g}s; stopping it")
            self.stop()

        self._timer = threading.Timer(timeout, expire)
        self._timer.daemon = True
        start_thread(self._timer)

    def check(self) -> None:
        """Raise :class:`_Interrupted` if a signal came before the container ran."""
        if self.received:
            raise _Interrupted

    def resend(self) -> None:
        """A signal that raced ``start``: stop (or kill) the container now that it runs."""
        if self.received:
            self._spawn(self.stop if len(self.received) == 1 else self.kill)

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        self._threads.append(thread)
        start_thread(thread)

    def stop(self) -> None:
        """Gracefully stop the container (errors are reported, not raised)."""
        if self.container_id is not None:
            try:
                self.engine.stop_container(self.container_id, self.stop_timeout)
            except Exception as exc:  # a thread: report, the main path cleans up
                self.log(f"envbuild: could not stop the container: {exc}")

    def kill(self) -> None:
        """Kill the container (errors are reported, not raised)."""
        if self.container_id is not None:
            try:
                self.engine.kill_container(self.container_id)
            except Exception as exc:
                self.log(f"envbuild: could not kill the container: {exc}")


def _owner(user: str) -> tuple[int, int]:
    """The uid/gid given to ``download`` copies: the run user when numeric, else root."""
    uid, _, gid = user.partition(":")
    if uid.isdigit():
        return int(uid), int(gid) if gid.isdigit() else int(uid) if not gid else 0
    return 0, 0


def _download_tar(downloads: Sequence[tuple[Path, str]], user: str) -> Iterator[bytes]:
    """A tar stream of the ``download`` inputs, for ``put_archive`` at ``/``.

    Written by a thread into a pipe, so no temporary copy lands on the host's
    disk. Entries belong to the run user, so the script may change its copy.
    """
    import tarfile  # only runs with download inputs pay for it

    uid, gid = _owner(user)
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def owned(info: Any) -> Any:  # tarfile.TarInfo
        info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
        return info

    def produce() -> None:
        try:
            with (
                os.fdopen(write_fd, "wb", buffering=1 << 20) as pipe,
                tarfile.open(fileobj=pipe, mode="w|", format=tarfile.PAX_FORMAT) as tar,
            ):
                parents = sorted({str(PurePosixPath(t).parent).lstrip("/") for _, t in downloads})
                for parent in parents:
                    info = tarfile.TarInfo(parent)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                    tar.addfile(info)
                for host, target in downloads:
                    tar.add(str(host), arcname=target.lstrip("/"), recursive=True, filter=owned)
        except BaseException as exc:  # reported by the consumer below
            failure.append(exc)

    thread = threading.Thread(target=produce, daemon=True)
    start_thread(thread)
    try:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 20):
                yield chunk
    finally:
        thread.join()
    if failure and not isinstance(failure[0], BrokenPipeError):
        raise RunError(f"cannot copy the download inputs into the container: {failure[0]}")


def _recalled_image(
    the_plan: RunPlan, settings: Settings, engine: RunEngine
) -> tuple[str, str] | None:
    """The image (reference, ID) of a plan the memo answered, by the lookup ``build`` makes
    on a cache hit (:func:`envbuild.cache.lookup.lookup`: the hit rule, the version tag
    moved); ``None`` when the plan was not recalled or the image is not there."""
    found = the_plan.recalled
    if found is None or found.run is None:
        return None
    from envbuild.cache.lookup import lookup

    _check_gpu_driver(the_plan, found.run["cuda"])  # as before a build
    hit = lookup(
        engine, prefix=settings.prefix, name=found.name, version=found.version, digest=found.hash
    )
    return (hit.image, hit.id) if hit is not None else None


def _check_gpu_driver(the_plan: RunPlan, cuda: str | None) -> None:
    """With ``--gpus``, refuse a CUDA image the host's driver cannot serve, before it starts.

    Only a local engine's host is the one whose driver is read here; a remote
    engine (``DOCKER_HOST=tcp://``, ``ssh://``) is left to report for itself.
    """
    if the_plan.gpus is None or not cuda or socket_path() is None:
        return
    from envbuild.run.gpu import require_driver

    require_driver(cuda, gpus=the_plan.config.gpus or "")


def new_run_id() -> str:
    """A new run id: 12 hex digits (48 random bits)."""
    # os.urandom rather than `secrets`, whose import (hmac, hashlib) costs more
    # than a whole engine request.
    return os.urandom(6).hex()


_RUN_ID = re.compile(r"[0-9a-f]{12}")


def _check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise RunConfigError(
            f"run id {run_id!r}: expected 12 lowercase hex digits", hint="use new_run_id()"
        )
    return run_id


def run(
    config: RunConfig,
    *,
    settings: Settings | None = None,
    engine: RunEngine | None = None,
    output: Output_ | None = None,
    log: Log | None = None,
    handle_signals: bool = True,
    run_id: str | None = None,
) -> RunResult:
    """Run ``config`` in one container (a distributed run: one per node) and return when
    it is gone (a ``distribution`` goes to :func:`envbuild.run.multi.run_job`).

    Args:
        config: what to run.
        settings: envbuild's settings (default: :func:`load_settings`).
        engine: the engine (default: the local Docker engine).
        output: receives ``("stdout" | "stderr", bytes)`` chunks live, undecoded
            (default: written to this process's stdout/stderr).
        log: receives envbuild's own messages and a build log (default: stderr).
        handle_signals: take over SIGINT/SIGTERM/SIGHUP while the container
            exists (main thread only), so that they stop it instead of killing
            envbuild with the container left running.
        run_id: the run's id, for a caller that names the run before it starts
            (:func:`new_run_id`; default: a new one). Its resources carry it.

    Every resource is labelled ``io.envbuild.run=<run id>`` and removed before
    this returns or raises. The run is recorded in the history (see
    :mod:`envbuild.run.history`) and its whole output kept in ``result.log_path``.

    Raises:
        RunConfigError, ScriptNotFoundError, ScriptNotExecutableError: before
            anything starts (see :func:`plan`).
        DefinitionError, BuildError: the environment could not be built.
        EngineError, RunError: the engine failed; nothing is left behind.
    """
    settings = settings or load_settings()
    log = log or _stderr_log
    output = output or _ConsoleOutput()
    engine = engine or DockerEngine(settings.docker, state=settings.home)
    the_plan = plan(config, settings=settings, engine=engine, recall=True)
    for warning in the_plan.warnings:
        log(warning)

    recalled = _recalled_image(the_plan, settings, engine)
    if recalled is None and the_plan.recalled is not None:  # not in the engine: plan it whole
        the_plan = plan(config, settings=settings, engine=engine)
    if recalled is not None:
        image, image_id = recalled
    elif the_plan.resolved is not None:
        from envbuild.build.builder import build

        _check_gpu_driver(the_plan, the_plan.resolved.env.gpu.cuda)  # before a build, too
        built = build(the_plan.resolved, settings=settings, engine=engine, log=log)
        image, image_id = built.image, built.id
    else:
        info = engine.inspect_image(the_plan.image)
        if info is None:
            raise RunError(
                f"no image {the_plan.image} in the engine",
                hint=f"build or pull it first (docker pull {the_plan.image})",
            )
        image, image_id = the_plan.image, info.id
        _check_gpu_driver(the_plan, info.labels.get(CUDA_LABEL))

    # Outputs are made here, by the caller, so the engine does not create them as root.
    outputs: dict[str, Path] = {}
    for name, (host, _target) in the_plan.outputs.items():
        try:
            host.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunConfigError(
                f"--output {name}: cannot create the folder {host} ({exc.strerror or exc})",
                hint="name a folder you can write to",
            ) from exc
        check_host_path(host, what=f"--output {name}", allow_dangerous=config.allow_dangerous_mount)
        outputs[name] = host

    run_id = _check_run_id(run_id) if run_id is not None else new_run_id()
    if config.distribution is not None:  # one container per node: envbuild.run.multi
        from envbuild.run.multi import run_job

        return run_job(
            the_plan,
            image,
            image_id,
            outputs,
            settings=settings,
            engine=engine,
            output=output,
            log=log,
            handle_signals=handle_signals,
            run_id=run_id,
        )
    prepared = None
    if the_plan.run_files is not None:  # a snapshot run: copy the source (envbuild.run.files)
        from envbuild.run.files import Prepared

        prepared = Prepared.make(the_plan.run_files, run_id, log)
    # envbuild's own bookkeeping (removing what an earlier envbuild left when it
    # was killed, the history row) is done by threads started once the container
    # runs, not before: their imports and requests would hold the interpreter
    # while the main thread sends create, attach and start (~4 ms measured), and
    # nothing on the way to a running container depends on them. The row is
    # written before the job's first output is shown, and both are done (or
    # started, on a run that never got that far) before this returns.
    reaper = _Background(lambda: reap(engine, settings.home, log), start=False)
    # envbuild's own records (the log file, the history) are never worth the
    # user's job: a full disk or a broken state folder is reported once each,
    # and the run goes on (its outputs are on the host already).
    run_log = _RunLog(settings.home / "runs" / f"{run_id}.log", log)
    started, clock = time.time(), time.monotonic()
    recorder = _Background(
        lambda: _record_start(settings, the_plan, run_id, image, image_id, run_log.path, started),
        start=False,
    )

    supervisor = _Supervisor(engine, config.stop_timeout, log)
    spec = the_plan.container_spec(image_id, run_id)
    copy_in = None
    if the_plan.downloads:
        copy_in = ("/", _download_tar(the_plan.downloads, the_plan.user))
    status_code: int | None = None
    status, exit_code = "failed", 125

    def created(container_id: str) -> None:
        supervisor.container_id = container_id
        supervisor.check()  # a signal while it was created: it never starts

    def running(container_id: str) -> None:
        supervisor.resend()
        supervisor.start_timer(config.timeout)
        recorder.start()  # the main thread now only waits for the container's output
        reaper.start()

    def finishing() -> None:
        supervisor.finishing = True
        run_log.close()

    try:
        with supervisor.installed(handle_signals):
            try:
                done = run_to_completion(
                    engine,
                    spec,
                    copy_in=copy_in,
                    # A job that has shown output is in the history: killed after
                    # that (kill -9), its row is there for the reaper to mark lost.
                    on_output=_Drain(output, run_log, first=recorder.wait),
                    on_created=created,
                    on_started=running,
                    on_finishing=finishing,
                    missing_exit=None,
                    output_limit=0,  # the log file keeps it all
                )
                status_code = done.exit_code
            except _Interrupted:
                pass
            except KeyboardInterrupt:
                if not supervisor.received:  # not ours: signals were left to the caller
                    raise
            except EngineError as exc:
                if the_plan.gpus is not None and "device driver" in exc.message:
                    raise RunError(
                        f"{exc.message} (GPUs were asked for with --gpus {the_plan.config.gpus})",
                        hint="the engine has no GPU runtime: install the NVIDIA Container "
                        "Toolkit and restart the engine, or run without --gpus",
                    ) from exc
                raise
        if supervisor.received:
            exit_code, status = 128 + supervisor.received[0], "interrupted"
        elif supervisor.timed_out:
            exit_code, status = EXIT_TIMEOUT, "timed-out"
        elif status_code is not None:
            exit_code, status = status_code, "exited"
    finally:
        duration = time.monotonic() - clock
        _record_finish(recorder, run_id, status, exit_code, duration, log)
        kept = prepared.finish(log) if prepared is not None else None
        with contextlib.suppress(Exception):  # best effort, and quiet: never the run's failure
            reaper.result()
    if status == "interrupted":
        log(f"envbuild: run {run_id} interrupted; its container was removed")
    elif status == "timed-out":
        log(f"envbuild: run {run_id} timed out; its container was removed")
    return RunResult(
        run_id=run_id,
        exit_code=exit_code,
        status=status,
        duration=duration,
        log_path=None if run_log.failed else run_log.path,
        outputs=MappingProxyType(outputs),
        image=image,
        image_id=image_id,
        **({} if kept is None else kept.result_fields()),
    )


def _record_start(
    settings: Settings,
    the_plan: RunPlan,
    run_id: str,
    image: str,
    image_id: str,
    log_path: Path,
    started: float,
) -> History:
    """Write the history row of a starting run; return the history."""
    from envbuild.run.history import History, RunRecord, utc_iso

    doc = the_plan.to_json(run_id)
    history = History.at(settings)
    history.start(
        RunRecord(
            id=run_id,
            started_at=utc_iso(started),
            status="running",
            image=image,
            image_id=image_id,
            log_path=str(log_path),
            argv=the_plan.argv,
            arguments=the_plan.arguments,
            variables=tuple(doc["variables"]),
            mounts=tuple(doc["mounts"]),
            inputs=doc["inputs"],
            outputs=doc["outputs"],
            script=the_plan.config.script,
            env_name=the_plan.env_name,
            env_version=the_plan.env_version,
            env_hash=the_plan.env_hash,
            source_dir=the_plan.source.source if the_plan.source else None,
            workdir=the_plan.workdir,
            user=the_plan.user,
            owner=current_owner().label(),
        )
    )
    return history


def _record_finish(
    recorder: _Background[History],
    run_id: str,
    status: str,
    exit_code: int,
    duration: float,
    log: Log,
    *,
    nodes: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Complete the run's history row; any failure is reported once, never raised."""
    try:
        history = recorder.result()
    except Exception as exc:  # the start failed: one warning for both halves
        log(f"warning: could not record run {run_id} in the history: {_why(exc)}")
        return
    try:
        history.finish(
            run_id,
            status=status,
            exit_code=exit_code,
            duration=duration,
            finished=time.time(),
            nodes=nodes,
        )
    except Exception as exc:
        log(f"warning: could not record the end of run {run_id} in the history: {_why(exc)}")


def _why(exc: BaseException) -> str:
    if isinstance(exc, EnvbuildError):
        return exc.message
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    return f"{type(exc).__name__}: {exc}"


class _RunLog:
    """The run's log file. Failing to write it is reported once and never stops the run."""

    def __init__(self, path: Path, log: Log) -> None:
        self.path = path
        self.failed = False
        self._log = log
        self._file: Any = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("wb")
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        if not self.failed:
            self.failed = True
            self._log(
                f"warning: cannot write this run's log to {self.path} "
                f"({exc.strerror or exc}); the run goes on without it"
            )
        handle, self._file = self._file, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()

    def write(self, data: bytes) -> None:
        """Append ``data`` (dropped once the log has failed)."""
        if self._file is not None:
            try:
                self._file.write(data)
            except OSError as exc:
                self._fail(exc)

    def flush(self) -> None:
        """Hand what is buffered to the file (``envbuild logs`` elsewhere sees progress)."""
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        """Flush and close (safe to call twice)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self._file = None
                self._fail(exc)
            self._file = None


class _Background(Generic[T]):
    """Call ``work`` in a thread, now or from :meth:`start`; :meth:`result` waits (starting
    it if nothing did), returns its value or raises what it raised."""

    def __init__(self, work: Callable[[], T], *, start: bool = True) -> None:
        self._error: BaseException | None = None
        self._value: list[T] = []

        def target() -> None:
            try:
                self._value.append(work())
            except BaseException as exc:  # handed to result()
                self._error = exc

        self._thread = threading.Thread(target=target, daemon=True)
        self._started = False
        if start:
            self.start()

    def start(self) -> None:
        """Start the work (once; later calls do nothing)."""
        if not self._started:
            start_thread(self._thread)
            self._started = True

    def wait(self) -> None:
        """Wait for the work (starting it if nothing did); what it raised waits for
        :meth:`result`."""
        self.start()
        self._thread.join()

    def result(self) -> T:
        """Wait for the work; return its value, or raise what it raised."""
        self.wait()
        if self._error is not None:
            raise self._error
        return self._value[0]


class _Drain:
    """Each frame to the output and the log file, as it arrives; ``first`` is called
    once, before the first frame is shown."""

    def __init__(
        self, output: Output_, log_file: _RunLog, first: Callable[[], None] = lambda: None
    ) -> None:
        self.output = output
        self.log_file = log_file
        self.last_flush = time.monotonic()
        self.first: Callable[[], None] | None = first

    def __call__(self, kind: int, data: bytes) -> None:
        if self.first is not None:
            first, self.first = self.first, None
            first()
        self.log_file.write(data)
        self.output("stderr" if kind == STDERR else "stdout", data)
        now = time.monotonic()
        if now - self.last_flush > 0.5:  # `envbuild logs ID` elsewhere sees progress
            self.log_file.flush()
            self.last_flush = now
