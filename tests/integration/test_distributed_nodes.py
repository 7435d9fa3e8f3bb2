"""Each node's contract, run by hand on the real engine with real frameworks.

There is no local executor for distributed runs yet; these tests drive the
engine's own steps (a network labelled with the run, one container per
:meth:`RunPlan.node_specs`, start node 0 first, wait, remove everything
labelled) to prove that the per-node commands and variables envbuild computes
make torch 1.6's launcher and TensorFlow's TF_CONFIG work across containers.
They need the curated images (built by `envbuild build envs/...`); absent, they
skip and say so.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from envbuild.engine.docker import DockerEngine
from envbuild.engine.protocols import STDOUT
from envbuild.identity import RUN_LABEL
from envbuild.run.config import PyTorch, RunConfig, TensorFlow
from envbuild.run.planning import RunPlan, plan
from envbuild.settings import load_settings

pytestmark = pytest.mark.docker

TORCH_IMAGE = "envbuild/pytorch-1.6-gpu:5"
TF_IMAGE = "envbuild/tensorflow-2.16-cpu:5"

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
        pytest.skip(f"{ref} is not built here (envbuild build envs/{ref.split('/')[1]})")
    return info.id


def _run_nodes(engine: DockerEngine, the_plan: RunPlan, image_id: str) -> list[tuple[int, str]]:
    """Every node's exit code and stdout; nothing labelled with the run survives."""
    run_id = "t" + uuid.uuid4().hex[:11]
    label = f"{RUN_LABEL}={run_id}"
    outputs: list[list[bytes]] = []
    errors: list[bytes] = []
    try:
        engine.create_network(the_plan.container_name(run_id), {RUN_LABEL: run_id})
        ids = [engine.create_container(s) for s in the_plan.node_specs(image_id, run_id)]
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
        codes = [engine.wait_container(c) for c in ids]
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
    ranks = [json.loads(line) for _, out in results for line in out.splitlines() if line[:1] == "{"]
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
