"""Distributed runs through the local executor, on the real engine with real frameworks.

``envbuild.run(RunConfig(..., distribution=...))`` and ``envbuild run
--distribution ...``: torch 1.6's launcher over two containers, a rank that
fails, a rendezvous that cannot complete, SIGINT mid-job, TensorFlow's
MultiWorkerMirroredStrategy over TF_CONFIG; every test checks that nothing
labelled with the run is left and what the history recorded. The curated
images must be built (``envbuild build curated/...``); absent, the tests skip.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import envbuild
from envbuild.engine.docker import DockerEngine
from envbuild.errors import EngineError
from envbuild.identity import RUN_LABEL
from envbuild.run.config import Mpi, PyTorch, RunConfig, RunResult, TensorFlow
from envbuild.run.history import History
from envbuild.settings import load_settings

pytestmark = pytest.mark.docker

TORCH_IMAGE = "envbuild/pytorch-1.6-gpu:5"
TF_IMAGE = "envbuild/tensorflow-2.16-cpu:5"
MPI_IMAGE = "envbuild/mpi-4.1-cpu:1"

# Every rank: rendezvous, all-reduce its rank, one JSON line (one write: a
# node's two processes share its stdout). FAIL_RANK=R makes rank R exit 7
# after the all-reduce; SLEEP=S makes every rank print "ready" and sleep.
ALLREDUCE = """\
import argparse, json, os, sys, time
import torch, torch.distributed as dist
parser = argparse.ArgumentParser()
parser.add_argument("--local_rank", type=int)  # torch.distributed.launch passes it
args = parser.parse_args()
dist.init_process_group(os.environ["ENVBUILD_TORCH_BACKEND"])
total = torch.tensor([float(dist.get_rank())])
dist.all_reduce(total)
os.write(1, json.dumps({"rank": dist.get_rank(), "world": dist.get_world_size(),
                        "sum": total.item(), "local_rank_arg": args.local_rank}).encode() + b"\\n")
if os.environ.get("FAIL_RANK") == str(dist.get_rank()):
    sys.exit(7)
if os.environ.get("SLEEP"):
    os.write(1, b"ready\\n")
    time.sleep(float(os.environ["SLEEP"]))
"""

MWMS = """\
import json, os
import tensorflow as tf
task = json.loads(os.environ["TF_CONFIG"])["task"]
strategy = tf.distribute.MultiWorkerMirroredStrategy()
value = strategy.run(lambda: tf.constant(float(task["index"] + 1)))
total = strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
os.write(1, (json.dumps({"task": task, "replicas": strategy.num_replicas_in_sync,
                         "sum": float(total)}) + "\\n").encode())
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state folder of the test's own: its history holds only this test's runs."""
    folder = tmp_path / "home"
    monkeypatch.setenv("ENVBUILD_HOME", str(folder))
    return folder


@pytest.fixture
def engine() -> DockerEngine:
    return DockerEngine(load_settings().docker)


def _need(engine: DockerEngine, ref: str) -> None:
    if engine.inspect_image(ref) is None:
        pytest.skip(f"{ref} is not built here (envbuild build curated/{ref.split('/')[1]})")


def _source(tmp_path: Path, name: str, text: str) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_text(text)
    src.chmod(0o755)
    return src


class Captured:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: list[bytes] = []
        self.messages: list[str] = []

    def output(self, stream: str, data: bytes) -> None:
        with self.lock:
            self.data.append(data)

    def log(self, line: str) -> None:
        self.messages.append(line)

    def lines(self) -> list[str]:
        return b"".join(self.data).decode(errors="replace").splitlines()


def _ranks(lines: list[str]) -> dict[int, tuple[str, dict[str, object]]]:
    """rank -> (its line's prefix, its JSON) from the job's output."""
    found = {}
    for line in lines:
        prefix, _, rest = line.partition("] ")
        if rest.startswith("{"):
            doc = json.loads(rest)
            found[int(doc["rank"])] = (prefix + "]", doc)
    return found


def _nothing_left(engine: DockerEngine, run_id: str) -> None:
    left = engine.list_labelled(f"{RUN_LABEL}={run_id}")
    assert not left.containers and not left.networks, left


def _torch(src: Path, **fields: object) -> RunConfig:
    values: dict[str, object] = {
        "source_directory": src,
        "distribution": PyTorch(2, 2, "gloo", "launch"),
        "stop_timeout": 5.0,
    }
    values.update(fields)
    return RunConfig(f"image:{TORCH_IMAGE}", "allreduce.py", **values)  # type: ignore[arg-type]


def _go(config: RunConfig) -> tuple[RunResult, Captured]:
    captured = Captured()
    result = envbuild.run(config, output=captured.output, log=captured.log)
    return result, captured


def test_pytorch_2x2_through_the_api(tmp_path: Path, home: Path, engine: DockerEngine) -> None:
    _need(engine, TORCH_IMAGE)
    src = _source(tmp_path, "allreduce.py", ALLREDUCE)
    result, captured = _go(_torch(src))
    assert (result.exit_code, result.status) == (0, "exited"), captured.lines()
    ranks = _ranks(captured.lines())
    assert sorted(ranks) == [0, 1, 2, 3]
    for rank, (prefix, doc) in ranks.items():
        assert prefix == f"[{rank // 2}/{rank}]"  # [node/rank]
        assert (doc["world"], doc["sum"], doc["local_rank_arg"]) == (4, 6.0, rank % 2)
    _nothing_left(engine, result.run_id)
    # the job log, each node's and each rank's log, and the history with every rank's exit code
    assert result.log_path is not None
    assert "[1/3] {" in result.log_path.read_text()
    folder = home / "runs" / result.run_id
    node_log = (folder / "node-0.log").read_text()
    assert '[0/0] {"rank": 0' in node_log and "[node" not in node_log
    for rank in range(4):
        (line,) = (folder / f"rank-{rank}.log").read_text().splitlines()
        assert json.loads(line)["rank"] == rank
    record = History(home / "runs.db").get(result.run_id)
    assert (record.status, record.exit_code) == ("exited", 0)
    assert [(n["exit_code"], n["ranks"]) for n in record.nodes] == [
        (0, {"0": 0, "1": 0}),
        (0, {"2": 0, "3": 0}),
    ]


def test_a_rank_that_exits_7_ends_the_job_with_7(
    tmp_path: Path, home: Path, engine: DockerEngine
) -> None:
    _need(engine, TORCH_IMAGE)
    src = _source(tmp_path, "allreduce.py", ALLREDUCE)
    # Rank 3 fails; the others would sleep a minute: they must be stopped.
    config = _torch(src, environment_variables={"FAIL_RANK": "3", "SLEEP": "60"})
    started = time.monotonic()
    result, captured = _go(config)
    took = time.monotonic() - started
    assert (result.exit_code, result.status) == (7, "exited"), captured.lines()
    assert "envbuild: rank 3 (node 1) exited 7; stopping the job" in captured.messages
    assert took < 30 + config.stop_timeout, took  # not the sleeping ranks' minute
    _nothing_left(engine, result.run_id)
    record = History(home / "runs.db").get(result.run_id)
    assert record.exit_code == 7
    assert record.nodes[1]["ranks"]["3"] == 7


def test_a_rendezvous_that_cannot_complete_ends_the_job(
    tmp_path: Path, home: Path, engine: DockerEngine
) -> None:
    _need(engine, TORCH_IMAGE)
    src = _source(tmp_path, "allreduce.py", ALLREDUCE)
    # No engine creates and starts two containers in 10 ms.
    config = _torch(src, distribution=PyTorch(2, 2, "gloo", "launch", rendezvous_timeout=0.01))
    result, captured = _go(config)
    assert (result.exit_code, result.status) == (124, "timed-out")
    (message,) = [m for m in captured.messages if "rendezvous deadline" in m]
    assert "(0.01s)" in message and f"envbuild-{result.run_id}-1" in message
    _nothing_left(engine, result.run_id)
    assert History(home / "runs.db").get(result.run_id).status == "timed-out"


def test_a_node_the_engine_cannot_create_fails_the_job(
    tmp_path: Path, home: Path, engine: DockerEngine, docker_cli: str
) -> None:
    _need(engine, TORCH_IMAGE)
    src = _source(tmp_path, "allreduce.py", ALLREDUCE)
    name = f"envbuild-test-{os.urandom(4).hex()}"
    # Node 1's name is taken: the engine refuses to create it.
    subprocess.run(
        [docker_cli, "create", "--name", f"{name}-1", TORCH_IMAGE, "true"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        with pytest.raises(EngineError, match=f"node 1 \\({name}-1\\)"):
            _go(_torch(src, name=name))
    finally:
        subprocess.run([docker_cli, "rm", "-f", f"{name}-1"], capture_output=True, timeout=60)
    (record,) = History(home / "runs.db").list()
    assert (record.status, record.exit_code) == ("failed", 125)
    _nothing_left(engine, record.id)


def _cli(home: Path, src: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ENVBUILD_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "envbuild", "run", *args],
        cwd=src,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


CLI = (
    "--distribution",
    "pytorch",
    "--nodes",
    "2",
    "--procs-per-node",
    "2",
    "--launcher",  # --torch-launcher's short name
    "launch",
)


def test_pytorch_2x2_through_the_command_line(
    tmp_path: Path, home: Path, engine: DockerEngine
) -> None:
    _need(engine, TORCH_IMAGE)
    src = _source(tmp_path, "allreduce.py", ALLREDUCE)
    proc = _cli(home, src, *CLI, f"image:{TORCH_IMAGE}", "allreduce.py")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    ranks = _ranks(out.decode().splitlines())
    assert sorted(ranks) == [0, 1, 2, 3]
    assert all(d["world"] == 4 and d["sum"] == 6.0 for _, d in ranks.values())
    assert all(p == f"[{r // 2}/{r}]" for r, (p, _) in ranks.items())
    (record,) = History(home / "runs.db").list()
    _nothing_left(engine, record.id)


def _lines(stream: object) -> Iterator[str]:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        yield raw.decode(errors="replace")


def test_sigint_mid_job_leaves_no_container_and_no_network(
    tmp_path: Path, home: Path, engine: DockerEngine
) -> None:
    _need(engine, TORCH_IMAGE)
    src = _source(tmp_path, "allreduce.py", ALLREDUCE)
    proc = _cli(home, src, *CLI, "-e", "SLEEP=120", f"image:{TORCH_IMAGE}", "allreduce.py")
    try:
        ready = 0
        deadline = time.monotonic() + 240
        for line in _lines(proc.stdout):
            ready += line.endswith("] ready\n")
            if ready == 4 or time.monotonic() > deadline:
                break
        assert ready == 4
        (record,) = History(home / "runs.db").list()
        assert engine.list_labelled(f"{RUN_LABEL}={record.id}").networks  # mid-job indeed
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, proc.stderr.read().decode()  # type: ignore[union-attr]
    assert time.monotonic() - sent < 20
    _nothing_left(engine, record.id)
    assert History(home / "runs.db").get(record.id).status == "interrupted"


def test_tensorflow_multi_worker_strategy_over_tf_config(
    tmp_path: Path, home: Path, engine: DockerEngine
) -> None:
    _need(engine, TF_IMAGE)
    src = _source(tmp_path, "mwms.py", MWMS)
    config = RunConfig(
        f"image:{TF_IMAGE}", "mwms.py", source_directory=src, distribution=TensorFlow(2)
    )
    result, captured = _go(config)
    assert (result.exit_code, result.status) == (0, "exited"), captured.lines()
    docs = {}
    for line in captured.lines():
        prefix, _, rest = line.partition("] ")
        if rest.startswith('{"'):
            docs[prefix + "]"] = json.loads(rest)
    assert docs == {
        f"[{i}/{i}]": {"task": {"type": "worker", "index": i}, "replicas": 2, "sum": 3.0}
        for i in (0, 1)
    }
    _nothing_left(engine, result.run_id)
    record = History(home / "runs.db").get(result.run_id)
    assert [(n["role"], n["exit_code"]) for n in record.nodes] == [("chief", 0), ("worker", 0)]


MPI_ALLREDUCE = """\
import json, os
from mpi4py import MPI
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank())
os.write(1, json.dumps({"rank": comm.Get_rank(), "size": comm.Get_size(),
                        "sum": total}).encode() + b"\\n")
"""


def test_mpi_from_an_image_reference(tmp_path: Path, home: Path, engine: DockerEngine) -> None:
    # image:REF: envbuild knows the image's variables (PYTHONPATH for Debian's
    # mpi4py, the venv on PATH) only from the engine; ranks started through ssh
    # need them forwarded. (The environment folder's runs: test_distributed_mpi.py.)
    _need(engine, MPI_IMAGE)
    src = _source(tmp_path, "allreduce.py", MPI_ALLREDUCE)
    config = RunConfig(
        f"image:{MPI_IMAGE}",
        "allreduce.py",
        source_directory=src,
        distribution=Mpi(2, 2, rendezvous_timeout=60),
        stop_timeout=5.0,
    )
    result, captured = _go(config)
    assert (result.exit_code, result.status) == (0, "exited"), captured.lines()
    ranks = _ranks(captured.lines())
    assert sorted(ranks) == [0, 1, 2, 3]
    # mpirun --tag-output: each rank's line is filed under its node (2 slots a host) and rank
    assert all(p == f"[{r // 2}/{r}]" for r, (p, _) in ranks.items())
    assert all((d["size"], d["sum"]) == (4, 6) for _, d in ranks.values())
    for rank in range(4):
        (line,) = (home / "runs" / result.run_id / f"rank-{rank}.log").read_text().splitlines()
        assert json.loads(line)["rank"] == rank
    _nothing_left(engine, result.run_id)
