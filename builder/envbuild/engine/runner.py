"""The container runner: one container from create to removal, whatever happens in between.

:func:`run_to_completion` is the one place the life of a container is
written: create (labelled), copy files in, attach, start, collect or stream
the output, wait (killing it after a timeout), remove. Every container it
creates carries :data:`RUNNER_LABEL` with a value of its own, so that a path
that lost the container's ID (a Ctrl-C while the engine was creating it, an
engine error) still finds and removes it. Removal runs on every exit path,
``KeyboardInterrupt`` included, and is itself not cut short by a second one.

Callers that need more than the default (the run layer's live output, its
signal handling and graceful stop) hook into the steps with the ``on_*``
callbacks; none of them calls the engine's container steps themselves.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from envbuild import identity
from envbuild.engine.protocols import STDOUT, ContainerRuntime, ContainerSpec
from envbuild.errors import EngineError
from envbuild.process import OWNER_LABEL, interruptible, start_thread
from envbuild.process import current as current_owner

#: The label of every container :func:`run_to_completion` creates (value: unique per container).
RUNNER_LABEL = identity.CONTAINER_LABEL
#: Bytes of output :class:`Completed` keeps per stream (the rest is dropped, counted).
OUTPUT_LIMIT = 1 << 20
# What the engine says when the command does not exist in the image.
_NOT_FOUND = ("executable file not found", "no such file or directory")
_CLEANUP_ATTEMPTS = 3

OutputHook = Callable[[int, bytes], None]
ContainerHook = Callable[[str], None]


@dataclass(frozen=True)
class Completed:
    """What a container run to its end left: exit code, output, and how it ended.

    ``stdout`` is the container's standard output; ``output`` is stdout and
    stderr interleaved as they arrived (each at most :data:`OUTPUT_LIMIT`
    bytes, ``truncated`` when more came). A command the image does not have
    ends with 127, as in a shell, and ``missing`` holds the engine's words.
    """

    exit_code: int
    stdout: bytes = b""
    output: bytes = b""
    timed_out: bool = False
    seconds: float = 0.0
    truncated: bool = False
    missing: str | None = None

    def text(self) -> str:
        """``stdout`` decoded (UTF-8, bad bytes replaced)."""
        return self.stdout.decode("utf-8", errors="replace")

    def tail(self, lines: int = 15) -> tuple[str, ...]:
        """The last ``lines`` lines of the interleaved output."""
        return tuple(self.output.decode("utf-8", errors="replace").splitlines()[-lines:])


def _keep(buffer: bytearray, data: bytes, limit: int) -> bool:
    """Append what fits of ``data`` to ``buffer``; whether some was dropped."""
    room = limit - len(buffer)
    buffer += data[: max(room, 0)]
    return len(data) > room


def shielded(work: Callable[[], None]) -> None:
    """Run ``work`` to its end even through Ctrl-C; re-raise the interrupt afterwards.

    The work runs in a thread the interrupt cannot reach; the main thread
    waits for it, and a ``KeyboardInterrupt`` that arrives while it waits is
    held and raised once the work is done.
    """
    failure: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=target, name="envbuild-cleanup", daemon=True)
    start_thread(thread)
    interrupted = False
    while thread.is_alive():
        try:
            thread.join()
        except KeyboardInterrupt:
            interrupted = True
    if failure:
        raise failure[0]
    if interrupted:
        raise KeyboardInterrupt


def _remove(engine: ContainerRuntime, container_id: str | None, label: str, sweep: bool) -> None:
    """Remove the container; with ``sweep`` (or a failed removal) all else carrying ``label``."""
    problems: list[str] = []
    for attempt in range(_CLEANUP_ATTEMPTS):
        problems = []
        if container_id is not None:
            try:
                engine.remove_container(container_id)
            except EngineError as exc:
                problems.append(exc.message)
        if sweep or problems or container_id is None:
            try:
                engine.remove_labelled(label)
            except EngineError as exc:
                problems.append(exc.message)
        if not problems:
            return
        time.sleep(0.5 * (attempt + 1))
    raise EngineError(
        f"could not remove the container labelled {label}: " + "; ".join(problems),
        hint=f"remove it by hand: docker rm -f $(docker ps -aq --filter label={label})",
    )


def run_to_completion(
    engine: ContainerRuntime,
    spec: ContainerSpec,
    *,
    timeout: float | None = None,
    copy_in: tuple[str, Iterable[bytes]] | None = None,
    on_output: OutputHook | None = None,
    on_created: ContainerHook | None = None,
    on_started: ContainerHook | None = None,
    on_finishing: Callable[[], None] | None = None,
    missing_exit: int | None = 127,
    output_limit: int = OUTPUT_LIMIT,
) -> Completed:
    """Run ``spec`` in a fresh container until it ends; the container is gone on return.

    Args:
        engine: the engine's container steps.
        spec: the container; :data:`RUNNER_LABEL` is added to its labels.
        timeout: seconds after start before the container is killed
            (``Completed.timed_out``); ``None`` waits as long as it runs.
        copy_in: ``(path, tar chunks)`` extracted into the created container
            before it starts.
        on_output: receives each ``(STDOUT|STDERR, bytes)`` frame as it arrives.
        on_created: called with the container's ID once it exists (and its
            files are in), before it starts; raising aborts the run.
        on_started: called with the ID once the container runs.
        on_finishing: called before the container is removed, on every path.
        missing_exit: the exit code of a command the image does not have
            (``None``: the engine's error is raised instead).
        output_limit: bytes of output kept per stream in the result.

    Raises:
        EngineError: the engine failed (the container is removed all the same).
    """
    label = f"{RUNNER_LABEL}={os.urandom(8).hex()}"
    key, _, value = label.partition("=")
    # The owner lets a later envbuild reap the container if this process is killed.
    owner = {OWNER_LABEL: current_owner().label()}
    spec = replace(spec, labels={**owner, **spec.labels, key: value})
    with interruptible():  # SIGTERM/SIGHUP unwind through the removal below
        return _run(
            engine,
            spec,
            label,
            timeout,
            copy_in,
            on_output,
            on_created,
            on_started,
            on_finishing,
            missing_exit,
            output_limit,
        )


def _run(
    engine: ContainerRuntime,
    spec: ContainerSpec,
    label: str,
    timeout: float | None,
    copy_in: tuple[str, Iterable[bytes]] | None,
    on_output: OutputHook | None,
    on_created: ContainerHook | None,
    on_started: ContainerHook | None,
    on_finishing: Callable[[], None] | None,
    missing_exit: int | None,
    output_limit: int,
) -> Completed:
    started = time.monotonic()
    container_id: str | None = None
    clean = False
    timed_out = threading.Event()
    timer: threading.Timer | None = None
    stdout = bytearray()
    output = bytearray()
    truncated = False
    try:
        container_id = engine.create_container(spec)
        if copy_in is not None:
            engine.put_archive(container_id, copy_in[0], copy_in[1])
        if on_created is not None:
            on_created(container_id)
        stream = engine.attach_container(container_id)
        try:
            try:
                engine.start_container(container_id)
            except EngineError as exc:
                if missing_exit is not None and any(t in exc.message.lower() for t in _NOT_FOUND):
                    clean = True
                    return Completed(
                        missing_exit,
                        seconds=time.monotonic() - started,
                        missing=exc.message,
                        output=exc.message.encode(),
                    )
                raise
            if timeout is not None:
                running = container_id

                def expire() -> None:
                    timed_out.set()
                    with contextlib.suppress(EngineError):  # gone: the stream ends anyway
                        engine.kill_container(running)

                timer = threading.Timer(timeout, expire)
                timer.daemon = True
                start_thread(timer)
            if on_started is not None:
                on_started(container_id)
            for kind, data in stream:
                if on_output is not None:
                    on_output(kind, data)
                truncated = _keep(output, data, output_limit) or truncated
                if kind == STDOUT:
                    truncated = _keep(stdout, data, output_limit) or truncated
        finally:
            stream.close()
        code = engine.wait_container(container_id)
        clean = True
    finally:
        if timer is not None:
            timer.cancel()
        try:
            if on_finishing is not None:
                on_finishing()
        finally:
            found = container_id
            shielded(lambda: _remove(engine, found, label, sweep=not clean))
    return Completed(
        code,
        stdout=bytes(stdout),
        output=bytes(output),
        timed_out=timed_out.is_set(),
        seconds=time.monotonic() - started,
        truncated=truncated,
    )


__all__ = ["OUTPUT_LIMIT", "RUNNER_LABEL", "Completed", "run_to_completion", "shielded"]
