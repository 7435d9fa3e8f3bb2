"""torchrun (torch >= 1.10), the default PyTorch launcher, over two containers.

The curated PyTorch environment is torch 1.6, which predates torchrun: these
tests build an environment of their own on ``curated/python-3.8`` with torch
1.12 from PyPI (about 800 MB, minutes on a cold cache), so they run only with
``pytest -m slow``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import envbuild
from envbuild.engine.docker import DockerEngine
from envbuild.identity import RUN_LABEL
from envbuild.run.config import PyTorch, RunConfig
from envbuild.run.history import History
from envbuild.settings import load_settings

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PARENT = Path(__file__).resolve().parents[2] / "curated" / "python-3.8"

# env:// only: torchrun passes no --local_rank argument, every rank reads its variables.
ALLREDUCE = """\
import json, os, sys, time
import torch, torch.distributed as dist
dist.init_process_group(os.environ["ENVBUILD_TORCH_BACKEND"])
total = torch.tensor([float(dist.get_rank())])
dist.all_reduce(total)
os.write(1, json.dumps({
    "rank": dist.get_rank(), "world": dist.get_world_size(), "sum": total.item(),
    "argv": sys.argv[1:], "torch": torch.__version__,
    **{k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE",
                                  "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")},
}).encode() + b"\\n")
if os.environ.get("FAIL_RANK") == str(dist.get_rank()):
    sys.exit(7)
if os.environ.get("SLEEP"):
    time.sleep(float(os.environ["SLEEP"]))
"""


@pytest.fixture(autouse=True)
def _only_when_asked(request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("builds a torch 1.12 environment (800 MB): run `pytest -m slow`")


@pytest.fixture(scope="module")
def torch_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("torchrun") / "torchrun-check"
    folder.mkdir()
    (folder / "env.toml").write_text(
        'schema = 1\nname = "torchrun-check"\nversion = 1\n'
        f'extends = "{os.path.relpath(PARENT, folder)}"\n'
        '[pip]\npackages = ["torch==1.12.1", "numpy==1.24.4"]\n',
        encoding="utf-8",
    )
    envbuild.build(folder)
    return folder


def _run(env: Path, tmp_path: Path, **variables: str) -> tuple[envbuild.RunResult, list[str]]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "allreduce.py").write_text(ALLREDUCE)
    chunks: list[bytes] = []
    result = envbuild.run(
        RunConfig(
            str(env),
            "allreduce.py",
            source_directory=src,
            distribution=PyTorch(2, 2),  # torchrun, gloo: the defaults
            environment_variables=variables,
            stop_timeout=5.0,
        ),
        output=lambda stream, data: chunks.append(data),
        log=lambda line: None,
    )
    return result, b"".join(chunks).decode(errors="replace").splitlines()


def _nothing_left(run_id: str) -> None:
    left = DockerEngine(load_settings().docker).list_labelled(f"{RUN_LABEL}={run_id}")
    assert not left.containers and not left.networks, left


def test_torchrun_2x2_gives_every_rank_its_contract(
    torch_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVBUILD_HOME", str(tmp_path / "home"))
    result, lines = _run(torch_env, tmp_path)
    assert (result.exit_code, result.status) == (0, "exited"), lines
    ranks = {}
    for line in lines:
        prefix, _, rest = line.partition("] ")
        if rest.startswith("{"):
            doc = json.loads(rest)
            ranks[doc["rank"]] = (prefix + "]", doc)
    assert sorted(ranks) == [0, 1, 2, 3], lines
    for rank, (prefix, doc) in ranks.items():
        assert prefix == f"[{rank // 2}/{rank}]"
        assert doc["torch"].startswith("1.12.")
        assert (doc["world"], doc["sum"], doc["argv"]) == (4, 6.0, [])  # no --local_rank
        assert (doc["RANK"], doc["LOCAL_RANK"], doc["NODE_RANK"]) == (
            str(rank),
            str(rank % 2),
            str(rank // 2),
        )
        assert (doc["WORLD_SIZE"], doc["LOCAL_WORLD_SIZE"]) == ("4", "2")
    _nothing_left(result.run_id)


def test_torchrun_a_rank_that_exits_7_ends_the_job_with_7(
    torch_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("ENVBUILD_HOME", str(home))
    started = time.monotonic()
    result, lines = _run(torch_env, tmp_path, FAIL_RANK="3", SLEEP="60")
    assert (result.exit_code, result.status) == (7, "exited"), lines
    assert time.monotonic() - started < 45  # the sleeping ranks were stopped
    record = History(home / "runs.db").get(result.run_id)
    assert record.nodes[1]["ranks"]["3"] == 7
    _nothing_left(result.run_id)
