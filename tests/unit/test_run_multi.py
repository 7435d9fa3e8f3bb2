"""The distributed executor (envbuild.run.multi) against a fake engine whose nodes act on cue.

Start order, the rendezvous deadline, the first failure, stopping the others,
signals, the output prefixes and logs, the history's per-node exit codes, and
that nothing labelled is left.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from envbuild.engine.protocols import STDERR, STDOUT, ContainerSpec, Labelled, label_matches
from envbuild.errors import EngineError
from envbuild.identity import NODE_LABEL, RUN_LABEL
from envbuild.process import OWNER_LABEL
from envbuild.run.config import Mpi, PyTorch, RunConfig, RunResult, TensorFlow
from envbuild.run.distributed import RANK_SHIM, SSH_DIR
from envbuild.run.history import History
from envbuild.run.local import run
from envbuild.settings import Settings, load_settings
from tests.run_fakes import FakeRunEngine

LISTENING = (STDERR, b"Server listening on 0.0.0.0 port 2222.\n")


def rank_exit(rank: int, code: int) -> tuple[int, bytes]:
    """The line envbuild/run/rank.py writes when a rank ends."""
    return (STDERR, f"envbuild: rank {rank} exited {code}\n".encode())


@dataclass
class Node:
    """How one fake node behaves."""

    frames: list[tuple[int, bytes]] = field(default_factory=list)
    exit_code: int = 0
    serve: bool = False  # runs until stopped or killed
    create_fails: bool = False
    start_hangs: bool = False  # start returns only once the container is stopped
    after_start_of: int | None = None  # its output comes once that node has started


class NodeStream:
    def __init__(self, engine: NodeEngine, cid: str) -> None:
        self.engine, self.cid = engine, cid

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        behaviour = self.engine.of(self.cid)
        deadline = time.monotonic() + 10
        while behaviour.after_start_of is not None:
            if f"start {behaviour.after_start_of}" in self.engine.events:
                break
            assert time.monotonic() < deadline, "that node never started"
            time.sleep(0.005)
        yield from behaviour.frames
        if self.engine.on_frames is not None:
            self.engine.on_frames(self.engine.index(self.cid))
        if behaviour.serve and not self.engine.halt[self.cid].wait(10):
            raise AssertionError("the fake node was never stopped")

    def close(self) -> None:
        pass


@dataclass
class NodeEngine(FakeRunEngine):
    """Each container is a node (its NODE_LABEL) acting as ``nodes[index]`` says."""

    nodes: dict[int, Node] = field(default_factory=dict)
    halt: dict[str, threading.Event] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    on_frames: Callable[[int], None] | None = None
    ignore_stop: bool = False  # a stop is recorded, but only a kill ends a node

    def index(self, cid: str) -> int:
        return int(self.specs[cid].labels[NODE_LABEL])

    def of(self, cid: str) -> Node:
        return self.nodes.get(self.index(cid), Node())

    def _event(self, text: str) -> None:
        with self._lock:
            self.events.append(text)

    def create_container(self, spec: ContainerSpec) -> str:
        index = int(spec.labels[NODE_LABEL])
        if self.nodes.get(index, Node()).create_fails:
            raise EngineError(f"fake engine: the container name {spec.name} is already in use")
        with self._lock:
            cid = f"c{len(self.specs) + 1:063d}"
            self.specs[cid] = spec
            self.live.add(cid)
            self.halt[cid] = threading.Event()
        self._event(f"create {index}")
        return cid

    def attach_container(self, container_id: str) -> NodeStream:  # type: ignore[override]
        return NodeStream(self, container_id)

    def start_container(self, container_id: str) -> None:
        index = self.index(container_id)
        if self.of(container_id).start_hangs:
            self.halt[container_id].wait(10)
        self._event(f"start {index}")

    def wait_container(self, container_id: str) -> int:
        behaviour = self.of(container_id)
        if container_id in self.killed:
            return 137
        if container_id in self.stopped and (behaviour.serve or behaviour.start_hangs):
            return 143
        return behaviour.exit_code

    def stop_container(self, container_id: str, timeout: float) -> None:
        self._event(f"stop {self.index(container_id)}")
        with self._lock:
            self.stopped.append(container_id)
        if not self.ignore_stop:
            self.halt[container_id].set()

    def kill_container(self, container_id: str, signal: str = "SIGKILL") -> None:
        self._event(f"kill {self.index(container_id)}")
        with self._lock:
            self.killed.append(container_id)
        self.halt[container_id].set()

    def remove_container(self, container_id: str) -> None:
        with self._lock:
            self.live.discard(container_id)

    def remove_labelled(self, label: str) -> Labelled:
        found = super().remove_labelled(label)
        for name in [n for n, labels in self.networks.items() if label_matches(labels, label)]:
            del self.networks[name]
        return found


class Captured:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chunks: list[tuple[str, bytes]] = []
        self.messages: list[str] = []

    def output(self, stream: str, data: bytes) -> None:
        with self.lock:
            self.chunks.append((stream, data))

    def log(self, line: str) -> None:
        self.messages.append(line)

    def text(self, stream: str = "stdout") -> str:
        return b"".join(d for s, d in self.chunks if s == stream).decode()


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text("")
    return folder


def go(
    engine: NodeEngine, settings: Settings, src: Path, distribution: object, **overrides: Any
) -> tuple[RunResult, Captured]:
    captured = Captured()
    engine.with_image()
    values: dict[str, Any] = {
        "environment": "image:example:1",
        "script": "train.py",
        "source_directory": src,
        "distribution": distribution,
        "stop_timeout": 2.0,
    }
    values.update(overrides)
    result = run(
        RunConfig(**values),
        settings=settings,
        engine=engine,
        output=captured.output,
        log=captured.log,
    )
    return result, captured


def assert_nothing_left(engine: NodeEngine, result: RunResult) -> None:
    assert not engine.live
    assert not engine.networks
    assert {"remove_network", "remove_labelled"} & set(engine.ops)
    assert all(s.labels[RUN_LABEL] == result.run_id for s in engine.specs.values())


def test_pytorch_2x2_start_order_prefixes_logs_and_history(settings: Settings, src: Path) -> None:
    engine = NodeEngine(
        nodes={
            # each rank's lines as the rank shim tags them: [NODE/RANK]
            0: Node([(STDOUT, b"[0/0] rank 0\n[0/1] rank 1\n"), rank_exit(0, 0), rank_exit(1, 0)]),
            1: Node(
                [
                    (STDOUT, b"[1/2] rank 2\n[1/3] ran"),
                    (STDOUT, b"k 3\n[1/2] again\n"),
                    (STDERR, b"[1/3] oops\nwarn"),
                ]
            ),
        }
    )
    result, captured = go(engine, settings, src, PyTorch(2, 2, launcher="launch"))
    assert (result.exit_code, result.status) == (0, "exited")
    # node 0 starts first: the others' launchers resolve its name at once
    assert engine.events.index("start 0") < engine.events.index("start 1")
    assert engine.networks == {} and engine.ops[0] == "network"
    out = captured.text().splitlines()
    assert sorted(out) == [
        "[0/0] rank 0",
        "[0/1] rank 1",
        "[1/2] again",
        "[1/2] rank 2",
        "[1/3] rank 3",
    ]
    # a line of no rank (the launcher's) has its node's prefix; the unterminated last line, ended
    assert captured.text("stderr") == "[1/3] oops\n[node 1] warn\n"
    assert "envbuild: rank" not in captured.text("stderr")  # the shim's reports are read, not shown
    # the job log holds the prefixed lines; each node's log its own bytes; each rank's
    # log its lines without the prefix
    assert result.log_path is not None
    job_log = result.log_path.read_text()
    assert "[1/3] rank 3\n" in job_log and "[0/0] rank 0\n" in job_log
    assert "[node 1] warn\n" in job_log
    folder = result.log_path.parent / result.run_id
    node_1 = (folder / "node-1.log").read_bytes()
    assert node_1 == b"[1/2] rank 2\n[1/3] rank 3\n[1/2] again\n[1/3] oops\nwarn"
    ranks = {p.name: p.read_bytes() for p in folder.glob("rank-*.log")}
    assert ranks == {
        "rank-0.log": b"rank 0\n",
        "rank-1.log": b"rank 1\n",
        "rank-2.log": b"rank 2\nagain\n",
        "rank-3.log": b"rank 3\noops\n",
    }
    # every container of the run is its node, on the run's network, with the rank shim
    specs = sorted(engine.specs.values(), key=lambda s: s.labels[NODE_LABEL])
    assert [s.name for s in specs] == [f"envbuild-{result.run_id}-{i}" for i in (0, 1)]
    for spec in specs:
        assert spec.network == f"envbuild-{result.run_id}"
        assert RANK_SHIM in spec.argv and any(m.target == RANK_SHIM for m in spec.mounts)
        assert OWNER_LABEL in spec.labels
    assert_nothing_left(engine, result)
    # every container went with its node: the network goes in one request, no sweep
    assert engine.ops[-1] == "remove_network" and "remove_labelled" not in engine.ops
    record = History.at(settings).get(result.run_id)
    assert record.status == "exited" and record.exit_code == 0
    assert [(n["index"], n["exit_code"], n["ranks"]) for n in record.nodes] == [
        (0, 0, {"0": 0, "1": 0}),
        (1, 0, {}),
    ]
    assert [dict(n) for n in result.nodes] == list(record.to_json()["nodes"])


def test_network_is_labelled_with_the_run_and_its_owner(settings: Settings, src: Path) -> None:
    seen: dict[str, dict[str, str]] = {}
    engine = NodeEngine()
    original = engine.create_network

    def create_network(name: str, labels: Any) -> str:
        seen[name] = dict(labels)
        return original(name, labels)

    engine.create_network = create_network  # type: ignore[method-assign]
    result, _ = go(engine, settings, src, PyTorch(2, 1))
    assert seen == {
        f"envbuild-{result.run_id}": {
            RUN_LABEL: result.run_id,
            OWNER_LABEL: seen[f"envbuild-{result.run_id}"][OWNER_LABEL],
        }
    }


def test_a_failing_rank_ends_the_job_with_its_code(settings: Settings, src: Path) -> None:
    # Node 1's rank 3 exits 7; its launcher would go on waiting (torch 1.6) and node 0 serves.
    engine = NodeEngine(
        nodes={0: Node(serve=True), 1: Node([rank_exit(2, 0), rank_exit(3, 7)], serve=True)}
    )
    started = time.monotonic()
    result, captured = go(engine, settings, src, PyTorch(2, 2))
    assert time.monotonic() - started < 5
    assert (result.exit_code, result.status) == (7, "exited")
    assert "envbuild: rank 3 (node 1) exited 7; stopping the job" in captured.messages
    assert {"stop 0", "stop 1"} <= set(engine.events)
    assert [n["ranks"] for n in result.nodes] == [{}, {"2": 0, "3": 7}]
    assert [n["exit_code"] for n in result.nodes] == [143, 143]
    assert_nothing_left(engine, result)


def test_a_failing_node_ends_the_job_with_its_code(settings: Settings, src: Path) -> None:
    engine = NodeEngine(nodes={0: Node(serve=True), 1: Node(exit_code=3)})
    result, captured = go(engine, settings, src, TensorFlow(2, 0))
    assert (result.exit_code, result.status) == (3, "exited")
    assert any("node 1" in m and "exited 3" in m for m in captured.messages)
    assert "stop 0" in engine.events
    assert_nothing_left(engine, result)


def test_tensorflow_parameter_servers_are_stopped_when_the_workers_are_done(
    settings: Settings, src: Path
) -> None:
    engine = NodeEngine(
        nodes={
            0: Node([(STDOUT, b"task 0\n")], after_start_of=2),
            1: Node([(STDOUT, b"task 1\n")], after_start_of=2),
            2: Node(serve=True),
        }
    )
    result, captured = go(engine, settings, src, TensorFlow(2, 1))
    assert (result.exit_code, result.status) == (0, "exited")
    # one task per node: its rank is the node's index
    assert sorted(captured.text().splitlines()) == ["[0/0] task 0", "[1/1] task 1"]
    assert result.log_path is not None
    rank_1 = result.log_path.parent / result.run_id / "rank-1.log"
    assert rank_1.read_bytes() == b"task 1\n"
    assert "stop 2" in engine.events and "stop 0" not in engine.events
    assert [n["role"] for n in result.nodes] == ["chief", "worker", "ps"]
    assert [n["exit_code"] for n in result.nodes] == [0, 0, 143]
    assert_nothing_left(engine, result)


def test_mpi_launcher_starts_once_every_sshd_listens(settings: Settings, src: Path) -> None:
    folders: list[str] = []
    engine = NodeEngine(
        nodes={
            # mpirun --tag-output: [JOBID,RANK]<stream>:; with 2 slots a host, rank 3 is on node 1
            0: Node(
                [
                    (STDOUT, b"[1,0]<stdout>:sum 6\n[1,3]<stdout>:[x] "),
                    (STDOUT, b"mine\nmpirun says\n"),
                    (STDERR, b"[1,5]<stderr>:late\n"),
                ]
            ),
            1: Node([(STDERR, b"noise\n"), LISTENING], serve=True),
            2: Node([LISTENING], serve=True),
        }
    )

    def look(index: int) -> None:
        spec = next(s for s in engine.specs.values() if s.labels[NODE_LABEL] == str(index))
        (key,) = [m for m in spec.mounts if m.target == SSH_DIR]
        assert key.read_only
        folders.append(key.source)
        assert sorted(os.listdir(key.source)) == ["authorized_keys", "id_rsa"]
        assert os.stat(key.source).st_mode & 0o777 == 0o700

    engine.on_frames = look
    result, captured = go(engine, settings, src, Mpi(3, 2))
    assert (result.exit_code, result.status) == (0, "exited")
    assert engine.events.index("start 0") > max(
        engine.events.index("start 1"), engine.events.index("start 2")
    )
    assert {"stop 1", "stop 2"} <= set(engine.events)  # their sshd serve until stopped
    assert captured.text() == "[0/0] sum 6\n[1/3] [x] mine\n[node 0] mpirun says\n"
    # the workers' sshd logs are kept, not shown
    assert captured.text("stderr") == "[2/5] late\n"
    folder = settings.home / "runs" / result.run_id
    assert (folder / "rank-3.log").read_bytes() == b"[x] mine\n"
    assert sorted(p.name for p in folder.glob("rank-*.log")) == [
        "rank-0.log",
        "rank-3.log",
        "rank-5.log",
    ]
    assert result.log_path is not None and "[node 1] noise\n" in result.log_path.read_text()
    assert folders and not any(os.path.exists(f) for f in folders)  # the key is gone
    assert_nothing_left(engine, result)
    history_files = list(settings.home.glob("runs.db*"))
    assert history_files
    for path in history_files:  # nor ever in the history
        assert b"PRIVATE KEY" not in path.read_bytes()
        assert folders[0].encode() not in path.read_bytes()


def test_an_mpi_worker_that_never_listens_fails_the_rendezvous(
    settings: Settings, src: Path
) -> None:
    engine = NodeEngine(nodes={1: Node(serve=True)})
    started = time.monotonic()
    result, captured = go(engine, settings, src, Mpi(2, 1, rendezvous_timeout=0.3))
    assert time.monotonic() - started < 5
    assert (result.exit_code, result.status) == (124, "timed-out")
    (message,) = [m for m in captured.messages if "rendezvous deadline" in m]
    assert "(0.3s)" in message
    assert f"node 1 (envbuild-{result.run_id}-1) running, its sshd not listening yet" in message
    assert f"node 0 (envbuild-{result.run_id}-0) created, waiting to start" in message
    assert "start 0" not in engine.events  # mpirun never ran
    assert_nothing_left(engine, result)


def test_a_node_that_never_starts_fails_the_rendezvous(settings: Settings, src: Path) -> None:
    engine = NodeEngine(nodes={0: Node(serve=True), 1: Node(start_hangs=True)})
    result, captured = go(engine, settings, src, PyTorch(2, 1, rendezvous_timeout=0.3))
    assert (result.exit_code, result.status) == (124, "timed-out")
    assert any("node 1" in m and "created, waiting to start" in m for m in captured.messages)
    assert {"stop 0", "stop 1"} <= set(engine.events)
    assert_nothing_left(engine, result)


def test_a_node_the_engine_cannot_create_fails_the_job(settings: Settings, src: Path) -> None:
    engine = NodeEngine(nodes={0: Node(serve=True), 1: Node(create_fails=True)})
    with pytest.raises(EngineError, match=r"node 1 .*already in use"):
        go(engine, settings, src, PyTorch(2, 1))
    assert not engine.live and not engine.networks
    assert "remove_labelled" in engine.ops  # a node's run failed: the run's label is swept
    (record,) = History.at(settings).list()
    assert (record.status, record.exit_code) == ("failed", 125)


def test_sigint_stops_every_node_and_reports_130(settings: Settings, src: Path) -> None:
    engine = NodeEngine(nodes={0: Node(serve=True), 1: Node(serve=True)})

    def interrupt(index: int) -> None:
        if index == 1:
            os.kill(os.getpid(), signal.SIGINT)

    engine.on_frames = interrupt
    before = signal.getsignal(signal.SIGINT)
    result, captured = go(engine, settings, src, PyTorch(2, 1))
    assert (result.exit_code, result.status) == (130, "interrupted")
    assert {"stop 0", "stop 1"} <= set(engine.events)
    assert signal.getsignal(signal.SIGINT) is before
    assert any("interrupted" in m for m in captured.messages)
    assert_nothing_left(engine, result)
    assert History.at(settings).get(result.run_id).status == "interrupted"


def test_timeout_stops_the_job(settings: Settings, src: Path) -> None:
    engine = NodeEngine(nodes={0: Node(serve=True), 1: Node(serve=True)})
    result, _ = go(engine, settings, src, PyTorch(2, 1), timeout=0.2)
    assert (result.exit_code, result.status) == (124, "timed-out")
    assert_nothing_left(engine, result)


def test_a_missing_torchrun_says_which_launcher_to_use(settings: Settings, src: Path) -> None:
    class NoTorchrun(NodeEngine):
        def start_container(self, container_id: str) -> None:
            raise EngineError('exec: "torchrun": executable file not found in $PATH')

    engine = NoTorchrun()
    result, captured = go(engine, settings, src, PyTorch(2, 1))
    assert result.exit_code == 127
    assert any("--torch-launcher launch" in m for m in captured.messages)
    assert_nothing_left(engine, result)


def test_only_the_shims_stderr_line_reports_a_rank(settings: Settings, src: Path) -> None:
    said = (STDOUT, b"envbuild: rank 1 exited 3\n")  # the script's own words, on stdout
    engine = NodeEngine(nodes={0: Node([said])})
    result, captured = go(engine, settings, src, PyTorch(1, 2))
    assert (result.exit_code, result.status) == (0, "exited")
    assert captured.text() == "[node 0] envbuild: rank 1 exited 3\n"
    assert result.nodes[0]["ranks"] == {}


def test_a_second_sigterm_kills_every_node(settings: Settings, src: Path) -> None:
    engine = NodeEngine(nodes={0: Node(serve=True), 1: Node(serve=True)}, ignore_stop=True)

    def terminate(index: int) -> None:
        if index == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 5
            while not {"stop 0", "stop 1"} <= set(engine.events):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)

    engine.on_frames = terminate
    result, _ = go(engine, settings, src, PyTorch(2, 1))
    assert (result.exit_code, result.status) == (143, "interrupted")
    assert {"kill 0", "kill 1"} <= set(engine.events)
    assert [n["exit_code"] for n in result.nodes] == [137, 137]
    assert_nothing_left(engine, result)


def test_a_failing_mpi_worker_quotes_its_sshd(settings: Settings, src: Path) -> None:
    said = (STDERR, b"sshd: no hostkeys available -- exiting.\n")
    engine = NodeEngine(nodes={1: Node([said], exit_code=1)})
    result, captured = go(engine, settings, src, Mpi(2, 1))
    assert (result.exit_code, result.status) == (1, "exited")
    (message,) = [m for m in captured.messages if "node 1" in m]
    assert message.endswith(
        "exited 1; stopping the job\nits last lines:\n  sshd: no hostkeys available -- exiting."
    )
    assert captured.text("stderr") == ""


def test_an_image_ref_mpi_run_forwards_what_the_image_sets(settings: Settings, src: Path) -> None:
    from envbuild.engine.protocols import ImageInfo
    from tests.run_fakes import IMAGE_ID

    engine = NodeEngine(nodes={1: Node([LISTENING], serve=True)})
    engine.images[IMAGE_ID] = ImageInfo(id=IMAGE_ID, variables=("PATH", "PYTHONPATH"))
    result, _ = go(engine, settings, src, Mpi(2, 1))
    assert result.exit_code == 0
    launcher = next(s for s in engine.specs.values() if s.labels[NODE_LABEL] == "0")
    forwarded = [launcher.argv[i + 1] for i, a in enumerate(launcher.argv) if a == "-x"]
    assert {"PATH", "PYTHONPATH", "ENVBUILD_RUN_ID"} <= set(forwarded)
