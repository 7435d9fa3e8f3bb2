"""Each node's contract, run by hand on the real engine with real frameworks.

Below the local executor (envbuild.run.multi, tested in
test_distributed_run.py and test_distributed_mpi.py), these tests drive the
engine's own steps (a network labelled with the run, one container per
:meth:`RunPlan.node_specs`, start node 0 first, wait, remove everything
labelled) to prove that the per-node commands and variables envbuild computes
make torch 1.6's launcher, TensorFlow's TF_CONFIG and Open MPI over ssh
(as root and as a user) work across containers. They need the curated images
(built by `envbuild build curated/...`; `pytest -m catalog` builds them all);
absent, they skip and say so.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from envbuild.engine.docker import DockerEngine
from envbuild.engine.protocols import STDOUT
from envbuild.identity import RUN_LABEL
from envbuild.run.config import Mpi, PyTorch, RunConfig, TensorFlow
from envbuild.run.multi import ssh_key_folder
from envbuild.run.planning import RunPlan, plan
from envbuild.settings import load_settings

pytestmark = pytest.mark.docker

TORCH_IMAGE = "envbuild/pytorch-1.6-gpu:5"
TF_IMAGE = "envbuild/tensorflow-2.16-cpu:5"
MPI_ENV = Path(__file__).resolve().parents[2] / "curated" / "mpi-4.1-cpu"

ALLREDUCE = """\
import argparse, json, os
import torch, torch.distributed as dist
parser = argparse.ArgumentParser()
parser.add_argument("--local_rank", type=int)  # torch.distributed.launch appends it
args = parser.parse_args()
dist.init_process_group(os.environ["ENVBUILD_TORCH_BACKEND"])
total = torch.tensor([float(dist.get_rank())])
dist.all_reduce(total)
# One write per line: the node's two processes share its stdout.
os.write(1, json.dumps({
    "rank": dist.get_rank(), "world": dist.get_world_size(), "sum": total.item(),
    "local_rank_arg": args.local_rank,
    **{k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE",
                                  "WORLD_SIZE", "MASTER_ADDR")},
}).encode() + b"\\n")
"""

# Every task serves on its TF_CONFIG address and reaches every other task's,
# as TensorFlow's gRPC servers do: a barrier over the addresses envbuild wrote.
TF_TASK = """\
import json, os, socket, threading, time
config = json.loads(os.environ["TF_CONFIG"])
me = config["cluster"][config["task"]["type"]][config["task"]["index"]]
peers = [a for kind in ("worker", "ps") for a in config["cluster"].get(kind, []) if a != me]
server = socket.create_server(("", int(me.rsplit(":", 1)[1])))
heard = []

def serve():
    for _ in peers:
        conn, _ = server.accept()
        heard.append(conn.makefile().readline().strip())
        conn.close()

listener = threading.Thread(target=serve)
listener.start()
for peer in peers:
    host, port = peer.rsplit(":", 1)
    for _ in range(300):
        try:
            with socket.create_connection((host, int(port)), timeout=2) as conn:
                conn.sendall((me + "\\n").encode())
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise SystemExit("cannot reach " + peer)
listener.join(60)
print(json.dumps({"task": config["task"], "cluster": config["cluster"], "me": me,
                  "heard": sorted(heard)}), flush=True)
"""


def _image_id(engine: DockerEngine, ref: str) -> str:
    info = engine.inspect_image(ref)
    if info is None:
        name = ref.rsplit("/", 1)[-1].split(":")[0]
        pytest.skip(f"{ref} is not built here (envbuild build curated/{name})")
    return info.id


def _run_nodes(
    engine: DockerEngine,
    the_plan: RunPlan,
    image_id: str,
    *,
    ssh_dir: str | None = None,
    launcher_only: bool = False,
    deadline: float = 300,
) -> list[tuple[int, str]]:
    """Every node's exit code and stdout; nothing labelled with the run survives.

    With ``launcher_only`` the job is node 0's: once it exits the others
    (MPI's sshd, which never exits by itself) are stopped. Past ``deadline``
    seconds every node is stopped.
    """
    run_id = "t" + uuid.uuid4().hex[:11]
    label = f"{RUN_LABEL}={run_id}"
    outputs: list[list[bytes]] = []
    errors: list[bytes] = []
    try:
        engine.create_network(the_plan.container_name(run_id), {RUN_LABEL: run_id})
        ids = [
            engine.create_container(s)
            for s in the_plan.node_specs(image_id, run_id, ssh_dir=ssh_dir)
        ]
        readers = []
        for container_id in ids:
            chunks: list[bytes] = []
            outputs.append(chunks)
            stream = engine.attach_container(container_id)

            def read(stream: object = stream, chunks: list[bytes] = chunks) -> None:
                for kind, data in stream:  # type: ignore[attr-defined]
                    chunks.append(data if kind == STDOUT else b"")
                    if kind != STDOUT:
                        errors.append(data)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            readers.append(reader)
        for container_id in ids:  # node 0 first: the others resolve its name at once
            engine.start_container(container_id)

        def stop_all() -> None:
            for container_id in ids:
                engine.stop_container(container_id, 0)

        timer = threading.Timer(deadline, stop_all)
        timer.start()
        try:
            if launcher_only:
                engine.wait_container(ids[0])
                for container_id in ids[1:]:
                    engine.stop_container(container_id, 1)
            codes = [engine.wait_container(c) for c in ids]
        finally:
            timer.cancel()
        for reader in readers:
            reader.join(30)
    finally:
        engine.remove_labelled(label)
    left = engine.list_labelled(label)
    assert not left.containers and not left.networks
    print(b"".join(errors).decode(errors="replace"))  # shown when a test fails
    return [(code, b"".join(out).decode()) for code, out in zip(codes, outputs, strict=True)]


def _source(tmp_path: Path, name: str, text: str) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_text(text)
    src.chmod(0o755)
    return src


def _tagged(out: str, tag: str) -> list[tuple[int, dict[str, Any]]]:
    """``(rank in the tag, JSON)`` of each JSON line of ``out`` tagged as ``tag`` matches."""
    found = []
    for line in out.splitlines():
        match = re.match(tag + r"(\{.*)", line)
        if match is not None:
            found.append((int(match.group(1)), json.loads(match.group(2))))
    return found


def test_pytorch_1_6_two_nodes_two_processes_gloo(tmp_path: Path) -> None:
    engine = DockerEngine(load_settings().docker)
    image_id = _image_id(engine, TORCH_IMAGE)
    src = _source(tmp_path, "allreduce.py", ALLREDUCE)
    the_plan = plan(
        RunConfig(
            f"image:{TORCH_IMAGE}",
            "allreduce.py",
            source_directory=src,
            distribution=PyTorch(2, 2, "gloo", "launch"),
        )
    )
    results = _run_nodes(engine, the_plan, image_id)
    assert [code for code, _ in results] == [0, 0], results
    # The launcher prints its OMP_NUM_THREADS notice on stdout too.
    # The rank shim tags each rank's line [NODE_RANK/RANK].
    tagged = [(node, _tagged(out, rf"\[{node}/(\d+)\] ")) for node, (_, out) in enumerate(results)]
    assert all(rank == r["rank"] and rank // 2 == node for node, t in tagged for rank, r in t)
    ranks = [r for _, t in tagged for _, r in t]
    assert sorted(r["rank"] for r in ranks) == [0, 1, 2, 3]
    for r in ranks:
        assert (r["world"], r["sum"], r["WORLD_SIZE"], r["LOCAL_WORLD_SIZE"]) == (4, 6.0, "4", "2")
        assert r["RANK"] == str(r["rank"])
        assert r["LOCAL_RANK"] == str(r["local_rank_arg"]) == str(r["rank"] % 2)
        assert r["NODE_RANK"] == str(r["rank"] // 2)
        assert r["MASTER_ADDR"].endswith("-0")


def test_tensorflow_tasks_see_their_tf_config(tmp_path: Path) -> None:
    engine = DockerEngine(load_settings().docker)
    image_id = _image_id(engine, TF_IMAGE)
    src = _source(tmp_path, "task.py", TF_TASK)
    the_plan = plan(
        RunConfig(
            f"image:{TF_IMAGE}", "task.py", source_directory=src, distribution=TensorFlow(2, 1)
        )
    )
    results = _run_nodes(engine, the_plan, image_id)
    assert [code for code, _ in results] == [0, 0, 0], results
    tasks = [json.loads(out) for _, out in results]
    assert [t["task"] for t in tasks] == [
        {"type": "worker", "index": 0},
        {"type": "worker", "index": 1},
        {"type": "ps", "index": 0},
    ]
    for t in tasks:  # every task heard from every other one at its TF_CONFIG address
        everyone = [*t["cluster"]["worker"], *t["cluster"]["ps"]]
        assert t["heard"] == sorted(a for a in everyone if a != t["me"])
    assert len(tasks[0]["cluster"]["worker"]) == 2 and len(tasks[0]["cluster"]["ps"]) == 1


# Each rank reports what MPI and its environment say; the sum of rank + 1 over
# 4 ranks is 10.
MPI_ALLREDUCE = """\
import json, os, socket
from mpi4py import MPI
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1)
os.write(1, json.dumps({
    "rank": comm.Get_rank(), "size": comm.Get_size(), "sum": total, "host": socket.gethostname(),
    "uid": os.getuid(), "python": os.path.realpath(os.sys.executable),
    **{k: os.environ.get(k) for k in ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                                       "OMPI_COMM_WORLD_SIZE", "ENVBUILD_RUN_ID", "GREETING",
                                       "VIRTUAL_ENV")},
}).encode() + b"\\n")
"""


@pytest.mark.parametrize("user", ["0:0", "1000:0"], ids=["root", "user"])
def test_mpi_two_nodes_two_processes_over_ssh(tmp_path: Path, user: str) -> None:
    engine = DockerEngine(load_settings().docker)
    src = _source(tmp_path, "allreduce.py", MPI_ALLREDUCE)
    the_plan = plan(
        RunConfig(
            MPI_ENV,
            "allreduce.py",
            source_directory=src,
            environment_variables={"GREETING": "hello there"},
            distribution=Mpi(2, 2, rendezvous_timeout=60),
            user=user,
        )
    )
    image_id = _image_id(engine, the_plan.image)
    with ssh_key_folder(user) as ssh_dir:  # the local executor's key folder
        results = _run_nodes(engine, the_plan, image_id, ssh_dir=ssh_dir, launcher_only=True)
    assert results[0][0] == 0, results
    # mpirun prints every rank's output, the remote ones' too, on node 0.
    # (--tag-output: each line starts [JOBID,RANK]<stdout>:)
    tagged = _tagged(results[0][1], r"\[\d+,(\d+)\]<stdout>:")
    assert all(rank == r["rank"] for rank, r in tagged)
    ranks = [r for _, r in tagged]
    assert sorted(r["rank"] for r in ranks) == [0, 1, 2, 3], results
    assert len({r["host"] for r in ranks}) == 2  # two containers, two ranks each
    for r in ranks:
        assert (r["size"], r["sum"], r["OMPI_COMM_WORLD_SIZE"]) == (4, 10, "4")
        assert r["OMPI_COMM_WORLD_RANK"] == str(r["rank"])
        assert r["OMPI_COMM_WORLD_LOCAL_RANK"] == str(r["rank"] % 2)
        assert r["uid"] == int(user.partition(":")[0])
        # Ranks started through ssh get the run's and the image's variables.
        assert r["GREETING"] == "hello there" and r["ENVBUILD_RUN_ID"]
        assert r["VIRTUAL_ENV"] == "/opt/venv" and r["python"].startswith("/usr/bin/python3")
