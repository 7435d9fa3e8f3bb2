"""MPI jobs through the local executor, on the real engine: ``envbuild.run`` with
``distribution=Mpi(2, 2)`` in ``curated/mpi-4.1-cpu``, as root and as a user.

The image is built by ``pytest -m catalog`` (or ``envbuild build
curated/mpi-4.1-cpu``); absent, these tests skip and say so rather than
spend minutes on apt in the default run.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from envbuild.engine.docker import DockerEngine
from envbuild.identity import RUN_LABEL
from envbuild.run.config import Mpi, RunConfig, RunResult
from envbuild.run.local import run
from envbuild.run.planning import plan
from envbuild.settings import Settings, load_settings

pytestmark = pytest.mark.docker

MPI_ENV = Path(__file__).resolve().parents[2] / "curated" / "mpi-4.1-cpu"

ALLREDUCE = """\
import json, os, socket, sys
from mpi4py import MPI
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1)
os.write(1, json.dumps({
    "rank": comm.Get_rank(), "size": comm.Get_size(), "sum": total,
    "host": socket.gethostname(), "uid": os.getuid(), "args": sys.argv[1:],
    "local": os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK"),
    "greeting": os.environ.get("GREETING"),
}).encode() + b"\\n")
"""

# Rank 3 (on node 1, started through ssh) dies with 7 without finalizing (as a
# crash does: sys.exit would run mpi4py's MPI_Finalize, which waits for the
# others); the others wait in a barrier until mpirun aborts the job.
FAIL = """\
import os
from mpi4py import MPI
comm = MPI.COMM_WORLD
if comm.Get_rank() == 3:
    os._exit(7)
comm.Barrier()
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings()._replace(home=tmp_path / "home")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "allreduce.py").write_text(ALLREDUCE)
    (folder / "fail.py").write_text(FAIL)
    folder.chmod(0o755)
    return folder


@pytest.fixture(autouse=True)
def _image(settings: Settings, src: Path) -> None:
    the_plan = plan(RunConfig(MPI_ENV, "allreduce.py", source_directory=src), settings=settings)
    if DockerEngine(settings.docker).inspect_image(the_plan.image) is None:
        pytest.skip(f"{the_plan.image} is not built here (envbuild build curated/mpi-4.1-cpu)")


@pytest.fixture(autouse=True)
def _nothing_left(settings: Settings) -> Iterator[None]:
    yield
    for kind in (["ps", "-aq"], ["network", "ls", "-q"]):
        proc = subprocess.run(
            [settings.docker, *kind, "--filter", f"label={RUN_LABEL}={_last_run_id[0]}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert not proc.stdout.split(), f"the run left {kind[0]} {proc.stdout.split()}"


_last_run_id = [""]


def _run(settings: Settings, config: RunConfig) -> tuple[RunResult, str]:
    chunks: list[bytes] = []
    result = run(
        config,
        settings=settings,
        output=lambda _stream, data: chunks.append(data),
        log=lambda _message: None,
        handle_signals=False,
    )
    _last_run_id[0] = result.run_id
    return result, b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("user", ["0:0", "1000:0"], ids=["root", "user"])
def test_mpi4py_allreduce_2_nodes_2_processes(settings: Settings, src: Path, user: str) -> None:
    config = RunConfig(
        MPI_ENV,
        "allreduce.py",
        ["a b", "$HOME"],
        source_directory=src,
        environment_variables={"GREETING": "hi"},
        distribution=Mpi(2, 2),
        user=user,
        timeout=300,
    )
    result, out = _run(settings, config)
    assert (result.status, result.exit_code) == ("exited", 0), out
    # Every rank's line comes through node 0's mpirun, prefixed [node/rank] (--tag-output).
    tagged = [line.partition("] ") for line in out.splitlines() if "] {" in line]
    ranks = [json.loads(doc) for _, _, doc in tagged]
    assert sorted(r["rank"] for r in ranks) == [0, 1, 2, 3], out
    assert [p for p, _, _ in tagged] == [f"[{r['rank'] // 2}/{r['rank']}" for r in ranks], out
    assert len({r["host"] for r in ranks}) == 2
    hosts = {r["rank"]: r["host"] for r in ranks}  # the node a prefix names is where it ran
    assert hosts[0] == hosts[1] != hosts[2] == hosts[3]
    folder = settings.home / "runs" / result.run_id
    for rank in range(4):
        (line,) = (folder / f"rank-{rank}.log").read_text().splitlines()
        assert json.loads(line)["rank"] == rank
    for r in ranks:
        assert (r["size"], r["sum"], r["uid"]) == (4, 10, int(user.partition(":")[0]))
        assert (r["args"], r["greeting"], r["local"]) == (
            ["a b", "$HOME"],
            "hi",
            str(r["rank"] % 2),
        )
    assert result.nodes[0]["exit_code"] == 0  # the launcher: the job


def test_a_failing_rank_on_a_worker_fails_the_job_with_its_code(
    settings: Settings, src: Path
) -> None:
    config = RunConfig(
        MPI_ENV, "fail.py", source_directory=src, distribution=Mpi(2, 2), timeout=120
    )
    result, out = _run(settings, config)
    assert (result.status, result.exit_code) == ("exited", 7), out
