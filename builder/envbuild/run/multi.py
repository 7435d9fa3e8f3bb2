"""The local executor of a distributed run: one container per node, on a network of its own.

:func:`run_job` is what :func:`envbuild.run.local.run` hands a run with a
``distribution`` to, once the image is there. Each node is the run's own
container (:meth:`RunPlan.node_specs`: mounts, user, privileges, the node's
command and variables from :func:`~envbuild.run.distributed.node_plan`),
driven from create to removal by :func:`~envbuild.engine.runner.run_to_completion`
in a thread of its own; this module decides when each starts and when the
job is over.

Start order
    Every node is created at once. PyTorch and TensorFlow: node 0 starts
    first, the others once it runs (their launcher resolves its name at once
    and gives up when it does not resolve yet). MPI: the workers start first
    and node 0 (``mpirun``) once every worker's ``sshd`` says it listens.
Rendezvous deadline (``rendezvous_timeout``, ``--rendezvous-timeout``)
    The job has *joined* when every node's container runs and, for an MPI
    worker, its ``sshd`` listens. A job that has not joined within the
    deadline (a node that cannot be created, never starts, or never listens)
    is stopped: exit 124, status ``timed-out``, and a message naming each
    node that did not join and where it was. What happens inside the
    framework after that (a rank that never calls ``init_process_group``) is
    the framework's own timeout, or ``--timeout``.
Failure
    The job's exit code is the first failure seen: a rank's exit code where
    envbuild can read it (a PyTorch rank, through the rank shim of
    :mod:`envbuild.run.rank`; an MPI job's ``mpirun`` passes on its first
    failing rank's), else the node's; a node the engine cannot create or
    start fails the job with 125 (raised as :class:`EngineError`). The other
    nodes are then stopped (the stop signal, a kill after ``stop_timeout``).
    The job succeeds when every *essential* node exited 0: all PyTorch nodes,
    the MPI launcher (node 0; the workers' ``sshd`` are then stopped), the
    TensorFlow workers (parameter servers serve until stopped).
Output
    Each rank's line goes out as it ends with a ``[node/rank]`` prefix
    (:func:`_tagger`). A node's ranks share its stdout, so the rank is told
    inside: a PyTorch rank's lines come tagged ``[NODE/RANK] `` by the rank
    shim and go out as they came; ``mpirun --tag-output`` (node 0) starts a
    rank's line with ``[JOBID,RANK]<stdout>:``, shown as ``[R // M/R]``
    (``--host HOST0:M,...`` fills each host's M slots in order); a
    TensorFlow task's rank is its node's index. A line of no rank (the
    launcher's own) gets ``[node I]``. An MPI worker's own output is its
    sshd's log: kept in the logs, not shown, its last lines quoted if it
    fails. The job log (``runs/ID.log``) holds the prefixed lines as they
    came; ``runs/ID/rank-R.log`` each rank's lines without the prefix;
    ``runs/ID/node-I.log`` each node's output as the engine gave it.
Cleanup
    The network carries the run's label and the owner label; each container
    is removed as it ends, the network and anything else labelled with the
    run once every node is gone, on every path (SIGINT/SIGTERM/SIGHUP as for
    one container: the first stops every node, the second kills them). An MPI
    run's ssh key lives in a private temporary folder (mode 0700) for the
    job's life only.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from envbuild.engine.protocols import STDERR, STDOUT, ContainerSpec, RunEngine
from envbuild.engine.runner import run_to_completion, shielded
from envbuild.errors import EngineError, RunError
from envbuild.log import Log
from envbuild.process import OWNER_LABEL, start_thread, sweep_temp, temp_prefix
from envbuild.process import current as current_owner
from envbuild.run.config import (
    EXIT_TIMEOUT,
    RUN_LABEL,
    Distribution,
    Mpi,
    Output_,
    PyTorch,
    RunResult,
    TensorFlow,
)
from envbuild.run.distributed import SSH_AUTHORIZED_KEYS, SSH_KEY
from envbuild.run.local import (
    _Background,
    _download_tar,
    _Interrupted,
    _record_finish,
    _record_start,
    _RunLog,
    _Supervisor,
    new_run_id,
)
from envbuild.run.planning import RunPlan
from envbuild.run.reaper import reap
from envbuild.settings import Settings

#: What a rank's line says through the rank shim (envbuild/run/rank.py).
RANK_EXIT = re.compile(rb"envbuild: rank (\d+) exited (\d+)")
#: A PyTorch rank's line, tagged by the rank shim: ``[NODE/RANK] `` (envbuild/run/rank.py).
SHIM_TAG = re.compile(rb"\[(\d+)/(\d+)\] ")
#: A rank's line through ``mpirun --tag-output``: ``[JOBID,RANK]<stdout>:`` (or ``<stderr>:``).
MPI_TAG = re.compile(rb"\[\d+,(\d+)\]<(?:stdout|stderr)>:")
#: What an MPI worker's ``sshd -D -e`` says once it accepts connections.
SSHD_LISTENING = b"Server listening on"
#: A partial line longer than this goes out without waiting for its end.
_LONGEST_LINE = 1 << 16
_TEMP_KIND = "ssh"


@dataclass(eq=False)
class _Node:
    """One node's container and what the job knows of it (guarded by the job's lock)."""

    index: int
    role: str
    spec: ContainerSpec
    essential: bool  # the job is done once every essential node exited 0
    after: tuple[int, ...]  # nodes that must have joined before this one starts
    ready_line: bytes | None  # what its output says once it joined (None: running is enough)
    log: _RunLog
    # An MPI worker's sshd: its own log lines go to the logs, not the console;
    # its last lines are kept for the message if it fails.
    quiet: bool = False
    tail: collections.deque[bytes] = field(default_factory=lambda: collections.deque(maxlen=10))
    container_id: str | None = None
    started: bool = False
    joined: bool = False
    done: bool = False
    exit_code: int | None = None
    clean: bool = False  # its container was removed by its own run (no sweep needed)
    ranks: dict[int, int] = field(default_factory=dict)

    def where(self) -> str:
        """Where a node that has not joined is, for the rendezvous message."""
        if self.done:
            return "ended"
        if self.started:
            return "running, its sshd not listening yet"
        if self.container_id is not None:
            return "created, waiting to start"
        return "not created yet"

    def to_json(self) -> dict[str, Any]:
        """The node in the history and in :attr:`RunResult.nodes`."""
        return {
            "index": self.index,
            "container": self.spec.name,
            "role": self.role,
            "exit_code": self.exit_code,
            "ranks": {str(rank): code for rank, code in sorted(self.ranks.items())},
        }


@dataclass(frozen=True)
class _Failure:
    code: int
    status: str  # exited | timed-out | failed
    message: str
    engine: bool = False  # the engine failed: raised as EngineError once all is gone
    detail: str = ""  # lines shown after the message (a failed sshd's last words)


class _Job:
    """The nodes' shared state: who joined, the first failure, stopping them all."""

    def __init__(
        self,
        engine: RunEngine,
        nodes: list[_Node],
        stop_timeout: float,
        log: Log,
        emit: Callable[[int, bytes, bool], None],
        open_rank_log: Callable[[int], _RunLog],
    ) -> None:
        self.engine = engine
        self.nodes = nodes
        self.stop_timeout = stop_timeout
        self.log = log
        self.emit = emit
        self.open_rank_log = open_rank_log
        self.cond = threading.Condition(threading.RLock())
        self.rank_logs: dict[int, _RunLog] = {}
        self.stopping = False
        self.failure: _Failure | None = None
        self._threads: list[threading.Thread] = []

    # The nodes' threads call these -------------------------------------------

    def created(self, node: _Node, container_id: str) -> None:
        """Hold a created node until the nodes it comes after have joined."""
        with self.cond:
            node.container_id = container_id
            self.cond.wait_for(
                lambda: self.stopping or all(self.nodes[i].joined for i in node.after)
            )
            if self.stopping:
                raise _Interrupted  # never started; run_to_completion removes it

    def started(self, node: _Node) -> None:
        """The node runs; one that started as the job was stopping stops at once."""
        with self.cond:
            node.started = True
            if node.ready_line is None:
                node.joined = True
            stop = self.stopping
            self.cond.notify_all()
        if stop:
            self._spawn(lambda: self._stop(node, kill=False))

    def line(self, node: _Node, kind: int, line: bytes) -> bool:
        """Read one line of ``node``'s output; whether it is shown (rank reports are not)."""
        if node.ready_line is not None and not node.joined and node.ready_line in line:
            with self.cond:
                node.joined = True
                self.cond.notify_all()
        match = RANK_EXIT.search(line) if kind == STDERR else None
        if match is None:
            return True
        rank, code = int(match.group(1)), int(match.group(2))
        with self.cond:
            node.ranks[rank] = code
        if code != 0:
            self.fail(_Failure(code, "exited", f"rank {rank} (node {node.index}) exited {code}"))
        return False

    def ended(self, node: _Node, code: int | None, problem: str | None = None) -> None:
        """``node``'s container is gone: ``code`` its exit code, ``problem`` an engine error."""
        with self.cond:
            node.done, node.exit_code = True, code
            self.cond.notify_all()
            if self.stopping:
                return
            name = f"node {node.index} ({node.spec.name})"
            if problem is not None:
                self.fail(_Failure(125, "failed", f"{name}: {problem}", engine=True))
            elif code != 0:
                said = b"".join(b"\n  " + line for line in node.tail).decode(errors="replace")
                detail = f"\nits last lines:{said}" if node.quiet and said else ""
                self.fail(_Failure(code or 0, "exited", f"{name} exited {code}", detail=detail))
            elif all(n.done and n.exit_code == 0 for n in self.nodes if n.essential):
                self.stop_all()  # what is left serves the others (sshd, parameter servers)

    def rank_line(self, rank: int, line: bytes) -> None:
        """Append one of ``rank``'s lines (unprefixed) to its log, ``rank-R.log``."""
        with self.cond:
            rank_log = self.rank_logs.get(rank)
            if rank_log is None:
                rank_log = self.rank_logs[rank] = self.open_rank_log(rank)
            rank_log.write(line + b"\n")

    def close_rank_logs(self) -> None:
        """Close every rank's log (once every node's output is in)."""
        with self.cond:
            for rank_log in self.rank_logs.values():
                rank_log.close()

    # Anyone ------------------------------------------------------------------

    def fail(self, failure: _Failure) -> None:
        """Record ``failure`` if it is the first, and stop every node."""
        with self.cond:
            if self.stopping:
                return
            self.failure = failure
        self.log(f"envbuild: {failure.message}; stopping the job{failure.detail}")
        self.stop_all()

    def stop_all(self, *, kill: bool = False) -> None:
        """Stop (or kill) every node that exists; hold back every node not started yet.

        A created node is stopped too: its start may be what hangs.
        """
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
            targets = [n for n in self.nodes if n.container_id is not None and not n.done]
        for node in targets:
            self._spawn(lambda node=node: self._stop(node, kill=kill))  # type: ignore[misc]

    def joined(self) -> bool:
        """Whether every node has joined (call with the lock held)."""
        return all(n.joined or n.done for n in self.nodes)

    def _stop(self, node: _Node, *, kill: bool) -> None:
        if node.container_id is None:
            return
        try:
            if kill:
                self.engine.kill_container(node.container_id)
            else:
                self.engine.stop_container(node.container_id, self.stop_timeout)
        except Exception as exc:  # a thread: report; the node's own removal still runs
            self.log(f"envbuild: could not stop node {node.index}: {exc}")

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        with self.cond:
            self._threads.append(thread)
        start_thread(thread)

    def join_threads(self, timeout: float) -> None:
        """Wait for the stop and kill requests in flight."""
        with self.cond:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)


class _JobSupervisor(_Supervisor):
    """The single run's signal and timeout handling, applied to every node of the job."""

    def __init__(self, job: _Job, engine: RunEngine, stop_timeout: float, log: Log) -> None:
        super().__init__(engine, stop_timeout, log)
        self.job = job

    def stop(self) -> None:
        """Stop every node (the first signal, or ``--timeout``)."""
        self.job.stop_all()

    def kill(self) -> None:
        """Kill every node (the second signal)."""
        self.job.stop_all(kill=True)


def _tagger(distribution: Distribution, index: int) -> Callable[[bytes], tuple[bytes, int | None]]:
    """How node ``index`` tells a line's rank: ``line -> (line shown, rank or None)``.

    A line of no rank (a launcher's own, an sshd's) is shown as ``[node I] LINE``.
    """
    node_prefix = f"[node {index}] ".encode()
    if isinstance(distribution, PyTorch):

        def tag(line: bytes) -> tuple[bytes, int | None]:
            match = SHIM_TAG.match(line)  # the shim tagged it already: shown as it came
            return (line, int(match.group(2))) if match else (node_prefix + line, None)

    elif isinstance(distribution, Mpi):
        per_node = distribution.processes_per_node

        def tag(line: bytes) -> tuple[bytes, int | None]:
            match = MPI_TAG.match(line)
            if match is None:
                return node_prefix + line, None
            # --host a:M,b:M fills each host's M slots in order: rank R runs on node R // M.
            rank = int(match.group(1))
            return f"[{rank // per_node}/{rank}] ".encode() + line[match.end() :], rank

    else:  # TensorFlow: one task per node, its rank the node's index
        rank_prefix = f"[{index}/{index}] ".encode()

        def tag(line: bytes) -> tuple[bytes, int | None]:
            return rank_prefix + line, index

    return tag


def _unprefixed(shown: bytes) -> bytes:
    """``shown`` without its leading ``[...] `` prefix."""
    return shown.partition(b"] ")[2]


class _NodeOutput:
    """One node's frames: to its own log as they are, and out line by line, each with its
    ``[node/rank]`` prefix (``[node I]`` for a line of no rank) and into its rank's log."""

    def __init__(
        self, job: _Job, node: _Node, tag: Callable[[bytes], tuple[bytes, int | None]]
    ) -> None:
        self.job = job
        self.node = node
        self.tag = tag
        self.pending: dict[int, bytes] = {STDOUT: b"", STDERR: b""}

    def __call__(self, kind: int, data: bytes) -> None:
        self.node.log.write(data)
        *lines, rest = (self.pending.get(kind, b"") + data).split(b"\n")
        if len(rest) > _LONGEST_LINE:
            lines.append(rest)
            rest = b""
        self.pending[kind] = rest
        self._out(kind, lines)

    def _out(self, kind: int, lines: list[bytes]) -> None:
        shown = [line for line in lines if self.job.line(self.node, kind, line)]
        if self.node.quiet:
            self.node.tail.extend(shown)
        if shown:
            tagged = [self.tag(line) for line in shown]
            for line, rank in tagged:
                if rank is not None:
                    self.job.rank_line(rank, _unprefixed(line))
            data = b"".join(line + b"\n" for line, _ in tagged)
            self.job.emit(kind, data, not self.node.quiet)

    def finish(self) -> None:
        """Send what is left of an unterminated last line; close the node's log."""
        for kind, rest in self.pending.items():
            if rest:
                self._out(kind, [rest])
        self.pending = {STDOUT: b"", STDERR: b""}
        self.node.log.close()


# --------------------------------------------------------------------------
# The job's shape: who starts after whom, who must succeed, what says "joined"
# --------------------------------------------------------------------------


def _shape(
    distribution: Distribution, index: int, count: int
) -> tuple[bool, tuple[int, ...], bytes | None]:
    """``(essential, after, ready_line)`` of node ``index`` of ``count``."""
    if isinstance(distribution, Mpi):
        if index == 0:
            return True, tuple(range(1, count)), None
        return False, (), SSHD_LISTENING
    essential = not isinstance(distribution, TensorFlow) or index < distribution.workers
    return essential, (() if index == 0 else (0,)), None


def _torchrun_hint(distribution: Distribution) -> str:
    if isinstance(distribution, PyTorch) and distribution.launcher == "torchrun":
        return " (torch before 1.10 has no torchrun: add --torch-launcher launch)"
    return ""


# --------------------------------------------------------------------------
# The run's ssh key (MPI)
# --------------------------------------------------------------------------


@contextlib.contextmanager
def ssh_key_folder(user: str) -> Iterator[str]:
    """A private folder (mode 0700) holding a fresh key pair for one MPI run; removed on exit.

    ``id_rsa`` (an ed25519 key, under the file name Kubeflow's MPIJob uses)
    is both the client key and the workers' sshd host key;
    ``authorized_keys`` holds its public half. The files belong to the run's
    user when envbuild runs as root and the run does not.
    """
    import subprocess  # only MPI runs pay for it

    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise RunError(
            "an MPI run needs ssh-keygen on this machine to make the run's ssh key",
            hint="install OpenSSH's client (e.g. apt-get install openssh-client)",
        )
    folder = tempfile.mkdtemp(prefix=temp_prefix(_TEMP_KIND))  # mode 0700
    try:
        key = Path(folder) / Path(SSH_KEY).name
        try:
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "envbuild-run", "-f", str(key)],
                check=True,
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            raise RunError(
                f"could not make the run's ssh key with {keygen}: "
                f"{detail.decode(errors='replace').strip() or exc}"
            ) from exc
        public = key.with_name(key.name + ".pub")
        authorized = Path(folder) / Path(SSH_AUTHORIZED_KEYS).name
        public.replace(authorized)
        uid, _, gid = user.partition(":")
        if os.getuid() == 0 and uid.isdigit() and int(uid) != 0:
            for path in (Path(folder), key, authorized):
                os.chown(path, int(uid), int(gid) if gid.isdigit() else -1)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------


def run_job(
    the_plan: RunPlan,
    image: str,
    image_id: str,
    outputs: Mapping[str, Path],
    *,
    settings: Settings,
    engine: RunEngine,
    output: Output_,
    log: Log,
    handle_signals: bool = True,
    run_id: str | None = None,
) -> RunResult:
    """Run the distributed job ``the_plan`` describes on ``engine``; return when all is gone.

    ``image``/``image_id`` are the built or found image, ``outputs`` the
    output folders already made. See the module's documentation for the
    order, the deadline and the failure rules; :func:`envbuild.run.local.run`
    documents the arguments.

    Raises:
        EngineError: the engine could not create the network or a node
            (recorded in the history as ``failed``; nothing is left behind).
        RunError: an MPI run's ssh key could not be made.
    """
    distribution = the_plan.config.distribution
    assert distribution is not None
    run_id = run_id or new_run_id()
    prepared = None
    if the_plan.run_files is not None:  # one snapshot that every node mounts (envbuild.run.files)
        from envbuild.run.files import Prepared

        prepared = Prepared.make(the_plan.run_files, run_id, log)

    def reap_all() -> None:
        reap(engine, settings.home, log)
        sweep_temp([_TEMP_KIND])

    reaper = _Background(reap_all)
    started, clock = time.time(), time.monotonic()
    runs = settings.home / "runs"
    job_log = _RunLog(runs / f"{run_id}.log", log)
    recorder = _Background(
        lambda: _record_start(settings, the_plan, run_id, image, image_id, job_log.path, started)
    )
    status, exit_code = "failed", 125
    nodes: list[_Node] = []
    failure: _Failure | None = None
    try:
        with contextlib.ExitStack() as stack:
            ssh_dir = None
            if isinstance(distribution, Mpi):
                ssh_dir = stack.enter_context(ssh_key_folder(the_plan.user))
            status, exit_code, failure, nodes = _supervise(
                the_plan,
                distribution,
                run_id,
                image_id,
                ssh_dir,
                engine=engine,
                output=output,
                log=log,
                job_log=job_log,
                node_logs=runs / run_id,
                handle_signals=handle_signals,
            )
    finally:
        duration = time.monotonic() - clock
        job_log.close()
        _record_finish(
            recorder, run_id, status, exit_code, duration, log, nodes=[n.to_json() for n in nodes]
        )
        kept = prepared.finish(log) if prepared is not None else None
        with contextlib.suppress(Exception):
            reaper.result()
    if failure is not None and failure.engine:
        raise EngineError(failure.message)
    if status == "interrupted":
        log(f"envbuild: run {run_id} interrupted; its containers and network were removed")
    elif status == "timed-out":
        log(f"envbuild: run {run_id} timed out; its containers and network were removed")
    return RunResult(
        run_id=run_id,
        exit_code=exit_code,
        status=status,
        duration=duration,
        log_path=None if job_log.failed else job_log.path,
        outputs=MappingProxyType(dict(outputs)),
        image=image,
        image_id=image_id,
        nodes=tuple(MappingProxyType(n.to_json()) for n in nodes),
        **({} if kept is None else kept.result_fields()),
    )


def _supervise(
    the_plan: RunPlan,
    distribution: Distribution,
    run_id: str,
    image_id: str,
    ssh_dir: str | None,
    *,
    engine: RunEngine,
    output: Output_,
    log: Log,
    job_log: _RunLog,
    node_logs: Path,
    handle_signals: bool,
) -> tuple[str, int, _Failure | None, list[_Node]]:
    """Create the network and the nodes, supervise them to their end, remove everything."""
    config = the_plan.config
    known: tuple[str, ...] = ()
    if isinstance(distribution, Mpi) and the_plan.resolved is None:
        # An image:REF run: what the image sets is known from the engine only (its
        # ranks started through ssh need it forwarded: PYTHONPATH, a venv...).
        info = engine.inspect_image(image_id)
        known = info.variables if info is not None else ()
    specs = the_plan.node_specs(image_id, run_id, ssh_dir=ssh_dir, image_variables=known)
    plans = the_plan.nodes(run_id, known)
    nodes = []
    for index, (spec, node_plan) in enumerate(zip(specs, plans, strict=True)):
        essential, after, ready_line = _shape(distribution, index, len(specs))
        nodes.append(
            _Node(
                index,
                node_plan.role,
                spec,
                essential,
                after,
                ready_line,
                _RunLog(node_logs / f"node-{index}.log", log),
                quiet=ready_line is not None,
            )
        )
    write_lock = threading.Lock()
    last_flush = [time.monotonic()]

    def emit(kind: int, data: bytes, console: bool) -> None:
        with write_lock:
            job_log.write(data)
            if console:
                output("stderr" if kind == STDERR else "stdout", data)
            now = time.monotonic()
            if now - last_flush[0] > 0.5:  # `envbuild logs ID` elsewhere sees progress
                job_log.flush()
                last_flush[0] = now

    job = _Job(
        engine,
        nodes,
        config.stop_timeout,
        log,
        emit,
        lambda rank: _RunLog(node_logs / f"rank-{rank}.log", log),
    )
    supervisor = _JobSupervisor(job, engine, config.stop_timeout, log)
    label = f"{RUN_LABEL}={run_id}"
    network = the_plan.container_name(run_id)
    threads: list[threading.Thread] = []
    network_id: list[str] = []

    def drive(node: _Node) -> None:
        drain = _NodeOutput(job, node, _tagger(distribution, node.index))
        copy_in = None
        if the_plan.downloads:
            copy_in = ("/", _download_tar(the_plan.downloads, the_plan.user))
        try:
            done = run_to_completion(
                engine,
                node.spec,
                copy_in=copy_in,
                on_output=drain,
                on_created=lambda cid: job.created(node, cid),
                on_started=lambda cid: job.started(node),
                on_finishing=drain.finish,
                output_limit=0,  # the log files keep it all
            )
        except _Interrupted:
            node.clean = True  # never started; run_to_completion removed it
            job.ended(node, None)
        except EngineError as exc:
            job.ended(node, None, exc.message)
        except BaseException as exc:  # a thread: the job ends on it, never hangs
            job.ended(node, None, f"{type(exc).__name__}: {exc}")
        else:
            if done.missing is not None:
                log(f"envbuild: node {node.index}: {done.missing}{_torchrun_hint(distribution)}")
            node.clean = True  # run_to_completion returned: its container is removed
            job.ended(node, done.exit_code)

    def cleanup() -> None:
        job.stop_all(kill=True)  # only what still runs: an interrupted wait, an error
        for thread in threads:
            thread.join()
        job.join_threads(config.stop_timeout + 30)
        job.close_rank_logs()
        if network_id and all(n.done and n.clean for n in nodes):
            # Every container is gone already (each node's own removal): one request.
            with contextlib.suppress(EngineError):
                engine.remove_network(network_id[0])
                return
        engine.remove_labelled(label)  # whatever is left, found by the run's label

    try:
        with supervisor.installed(handle_signals):
            try:
                supervisor.check()
                network_id.append(
                    engine.create_network(
                        network, {RUN_LABEL: run_id, OWNER_LABEL: current_owner().label()}
                    )
                )
                supervisor.container_id = network  # signals now stop the nodes
                supervisor.resend()
                supervisor.start_timer(config.timeout)
                deadline = time.monotonic() + distribution.rendezvous_timeout
                for node in nodes:
                    thread = threading.Thread(
                        target=drive, args=(node,), name=f"envbuild-node-{node.index}", daemon=True
                    )
                    threads.append(thread)
                    start_thread(thread)
                _wait(job, deadline, distribution.rendezvous_timeout)
                supervisor.finishing = True
            except _Interrupted:
                pass
            except KeyboardInterrupt:
                if not supervisor.received:  # not ours: signals were left to the caller
                    raise
    finally:
        shielded(cleanup)
    if supervisor.received:
        return "interrupted", 128 + supervisor.received[0], None, nodes
    if supervisor.timed_out:
        return "timed-out", EXIT_TIMEOUT, None, nodes
    if job.failure is not None:
        return job.failure.status, job.failure.code, job.failure, nodes
    return "exited", 0, None, nodes


def _wait(job: _Job, deadline: float, rendezvous_timeout: float) -> None:
    """Wait until every node is gone; fail the job if it has not joined by ``deadline``."""
    with job.cond:
        joined = False
        while not all(n.done for n in job.nodes):
            if not joined:
                joined = job.joined()
            if not joined and not job.stopping and time.monotonic() >= deadline:
                missing = "; ".join(
                    f"node {n.index} ({n.spec.name}) {n.where()}"
                    for n in job.nodes
                    if not (n.joined or n.done)
                )
                job.fail(
                    _Failure(
                        EXIT_TIMEOUT,
                        "timed-out",
                        f"the job's nodes did not all join within the rendezvous deadline "
                        f"({rendezvous_timeout:g}s): {missing} (a slow start needs a "
                        "longer --rendezvous-timeout)",
                    )
                )
                joined = True  # reported once
            wait = 0.5 if joined else max(0.0, min(0.5, deadline - time.monotonic()))
            job.cond.wait(wait)
