"""Snapshot runs and the in-container azureml.core on the real engine, in real images.

A script written for Azure ML (``from azureml.core import Run``, ``log``,
``log_list``, ``log_row``, ``tag``, files under ``./outputs`` and ``./logs``)
runs unchanged in envbuild's Python 3.11 and 3.8 images and in the PyTorch 1.6
image (Python 3.8); its metrics reach ``RunResult`` and ``envbuild runs show
--json``, its outputs are kept, and the user's folder is never written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from envbuild.engine.docker import DockerEngine
from envbuild.run.config import RUN_LABEL, RunConfig
from envbuild.run.local import run
from envbuild.settings import load_settings
from tests.integration.test_run import _tree_digest

pytestmark = pytest.mark.docker

IMAGES = ("envbuild/python-3.11:3", "envbuild/python-3.8:3", "envbuild/pytorch-1.6-gpu:5")

TRAIN = """\
import os
import signal
import sys
from azureml.core import Run
from azureml.core.run import Run as SameRun

assert Run is SameRun
run = Run.get_context()
run.log("loss", 0.5)
run.log("loss", 0.4)
run.log_list("accuracy", [0.8, 0.9])
run.log_row("epochs", epoch=1, loss=0.5)
run.tag("model", "cnn")
if os.environ.get("WITH_TORCH"):
    import torch
    run.log("tensor", torch.tensor(0.25))
    run.tag("torch", torch.__version__)
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.txt", "w") as handle:
    handle.write("weights")
os.makedirs("logs", exist_ok=True)
with open("logs/x.log", "w") as handle:
    handle.write("a log line")
with open("scratch.txt", "w") as handle:
    handle.write("not kept")
with open("train.py", "a") as handle:
    handle.write("# the snapshot is writable; the user's folder is not touched")
print("run", run.id, "python", sys.version_info[0], sys.version_info[1])
"""

SLOW = """\
import os, time
os.makedirs("outputs", exist_ok=True)
with open("outputs/partial.txt", "w") as handle:
    handle.write("written before the timeout")
from azureml.core import Run
Run.get_context().log("step", 1)
time.sleep(60)
"""


def _image(ref: str) -> str:
    if DockerEngine(load_settings().docker).inspect_image(ref) is None:
        pytest.skip(f"no image {ref} in the engine")
    return ref


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("ENVBUILD_HOME", str(folder))
    return folder


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "train.py").write_text(TRAIN)
    (folder / "slow.py").write_text(SLOW)
    (folder / "outside").symlink_to("/etc/hostname")  # never followed into the snapshot
    folder.chmod(0o755)
    return folder


def _nothing_left(run_id: str) -> None:
    """No container or network of run ``run_id`` is left (others' runs may come and go)."""
    docker = load_settings().docker
    for kind in (["ps", "-aq"], ["network", "ls", "-q"]):
        proc = subprocess.run(
            [docker, *kind, "--filter", f"label={RUN_LABEL}={run_id}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert not proc.stdout.split(), f"run {run_id} left {kind[0]} {proc.stdout.split()}"


def _quiet(stream: str, data: bytes) -> None:
    pass


@pytest.mark.parametrize("image", IMAGES)
def test_an_azureml_script_runs_unchanged(image: str, src: Path, home: Path) -> None:
    ref = _image(image)
    before = _tree_digest(src)
    chunks: list[bytes] = []
    torch = "pytorch" in image
    result = run(
        RunConfig(
            environment=f"image:{ref}",
            script="train.py",
            source_directory=src,
            azureml_context=True,
            environment_variables={"WITH_TORCH": "1"} if torch else {},
        ),
        output=lambda stream, data: chunks.append(data),
        log=lambda line: None,
    )
    _nothing_left(result.run_id)
    printed = b"".join(chunks).decode()
    assert result.exit_code == 0, printed
    assert f"run {result.run_id} python 3" in printed
    expected: dict[str, object] = {
        "loss": [0.5, 0.4],
        "accuracy": [0.8, 0.9],
        "epochs": [{"epoch": 1, "loss": 0.5}],
    }
    if torch:
        expected["tensor"] = 0.25
        assert result.tags["torch"].startswith("1.6.0")
    assert dict(result.metrics) == expected
    assert result.tags["model"] == "cnn"
    assert _tree_digest(src) == before  # the user's folder is exactly as it was
    assert result.files_dir is not None
    kept = sorted(p.relative_to(result.files_dir).as_posix() for p in result.files_dir.rglob("*"))
    assert kept == ["logs", "logs/x.log", "outputs", "outputs/model.txt"]
    assert (result.files_dir / "outputs" / "model.txt").read_text() == "weights"
    assert sorted(p.name for p in (home / "runs" / result.run_id).iterdir()) == ["files"]


def test_runs_show_json_and_the_file_commands(src: Path, home: Path, tmp_path: Path) -> None:
    ref = _image(IMAGES[0])
    env = {**os.environ, "ENVBUILD_HOME": str(home)}

    def envbuild(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "envbuild", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    done = envbuild(
        "run", "--azureml-context", "--source-dir", str(src), f"image:{ref}", "train.py"
    )
    assert done.returncode == 0, done.stderr
    assert "outside: left out: a symlink to the absolute path" in done.stderr
    run_id = done.stdout.split()[1]
    _nothing_left(run_id)
    shown = envbuild("runs", "show", run_id, "--json")
    doc = json.loads(shown.stdout)
    assert doc["metrics"]["loss"] == [0.5, 0.4] and doc["tags"] == {"model": "cnn"}
    assert doc["files"] == ["logs/x.log", "outputs/model.txt"]
    assert doc["files_dir"] == str(home / "runs" / run_id / "files")
    text = envbuild("runs", "show", run_id).stdout
    assert "metric       loss: [0.5, 0.4]" in text and "file         outputs/model.txt" in text
    assert envbuild("runs", "files", run_id).stdout.split() == ["logs/x.log", "outputs/model.txt"]
    got = envbuild("runs", "download", run_id, "outputs/model.txt", "-o", str(tmp_path / "m.txt"))
    assert got.returncode == 0 and (tmp_path / "m.txt").read_text() == "weights"
    missing = envbuild("runs", "download", run_id, "../../etc/passwd")
    assert missing.returncode != 0 and "kept no file" in missing.stderr


def test_a_timed_out_run_keeps_what_it_wrote(src: Path, home: Path) -> None:
    ref = _image(IMAGES[0])
    result = run(
        RunConfig(
            environment=f"image:{ref}",
            script="slow.py",
            source_directory=src,
            azureml_context=True,
            timeout=3,
            stop_timeout=1,
        ),
        output=_quiet,
        log=lambda line: None,
    )
    _nothing_left(result.run_id)
    assert result.exit_code == 124 and result.status == "timed-out"
    assert result.files_dir is not None
    assert (
        result.files_dir / "outputs" / "partial.txt"
    ).read_text() == "written before the timeout"
    assert dict(result.metrics) == {"step": 1}


def test_a_plain_snapshot_run_without_the_context(src: Path, home: Path) -> None:
    ref = _image(IMAGES[0])
    (src / "plain.py").write_text(
        "import os\ntry:\n    import azureml.core\nexcept ImportError:\n    print('no azureml')\n"
        "os.makedirs('outputs')\nopen('outputs/o.txt', 'w').write('o')\n"
    )
    chunks: list[bytes] = []
    result = run(
        RunConfig(
            environment=f"image:{ref}", script="plain.py", source_directory=src, snapshot=True
        ),
        output=lambda stream, data: chunks.append(data),
        log=lambda line: None,
    )
    _nothing_left(result.run_id)
    assert result.exit_code == 0 and b"no azureml" in b"".join(chunks)
    assert result.files_dir is not None and (result.files_dir / "outputs" / "o.txt").exists()
    assert dict(result.metrics) == {}


RANKS = """\
import os
import signal
from azureml.core import Run
rank = int(os.environ["RANK"])
run = Run.get_context()
run.log("rank", rank)
run.log_row("ranks", rank=rank, node=int(os.environ["NODE_RANK"]))
os.makedirs("outputs", exist_ok=True)
with open("outputs/rank-{}.txt".format(rank), "w") as handle:
    handle.write(run.id)
"""


def test_every_rank_of_a_distributed_run_logs_into_one_history(src: Path, home: Path) -> None:
    from envbuild.run.config import PyTorch

    ref = _image(IMAGES[2])
    (src / "ranks.py").write_text(RANKS)
    result = run(
        RunConfig(
            environment=f"image:{ref}",
            script="ranks.py",
            source_directory=src,
            azureml_context=True,
            distribution=PyTorch(2, 2, "gloo", "launch"),
        ),
        output=_quiet,
        log=lambda line: None,
    )
    _nothing_left(result.run_id)
    assert result.exit_code == 0, [dict(n) for n in result.nodes]
    assert sorted(result.metrics["rank"]) == [0, 1, 2, 3]
    rows = sorted(result.metrics["ranks"], key=lambda row: row["rank"])
    assert [(r["rank"], r["node"]) for r in rows] == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert result.files_dir is not None
    kept = sorted(p.name for p in (result.files_dir / "outputs").iterdir())
    assert kept == ["rank-0.txt", "rank-1.txt", "rank-2.txt", "rank-3.txt"]
    assert (result.files_dir / "outputs" / "rank-3.txt").read_text() == result.run_id
    assert not (home / "runs" / result.run_id / "snapshot").exists()


MPI_ENV = Path(__file__).resolve().parents[2] / "curated" / "mpi-4.1-cpu"

MPI_RANKS = """\
import os
import signal
from azureml.core import Run
from mpi4py import MPI
rank = MPI.COMM_WORLD.Get_rank()
run = Run.get_context()
run.log("rank", rank)
os.makedirs("outputs", exist_ok=True)
with open("outputs/rank-{}.txt".format(rank), "w") as handle:
    handle.write(run.id)
"""


def test_mpi_ranks_started_over_ssh_log_too(src: Path, home: Path) -> None:
    from envbuild.run.config import Mpi
    from envbuild.run.planning import plan

    (src / "mpi_ranks.py").write_text(MPI_RANKS)
    config = RunConfig(
        MPI_ENV,
        "mpi_ranks.py",
        source_directory=src,
        azureml_context=True,
        distribution=Mpi(2, 2),
        timeout=300,
    )
    if DockerEngine(load_settings().docker).inspect_image(plan(config).image) is None:
        pytest.skip("curated/mpi-4.1-cpu is not built here")
    chunks: list[bytes] = []
    result = run(config, output=lambda stream, data: chunks.append(data), log=lambda line: None)
    _nothing_left(result.run_id)
    assert result.exit_code == 0, b"".join(chunks).decode(errors="replace")
    # Ranks 2 and 3 run on node 1, started by node 0's mpirun through ssh: the
    # context reaches them only through the launcher's forwarded variables.
    assert sorted(result.metrics["rank"]) == [0, 1, 2, 3]
    assert result.files_dir is not None
    kept = sorted(p.name for p in (result.files_dir / "outputs").iterdir())
    assert kept == ["rank-0.txt", "rank-1.txt", "rank-2.txt", "rank-3.txt"]


def test_ctrl_c_keeps_what_the_run_wrote(src: Path, home: Path) -> None:
    ref = _image(IMAGES[0])
    (src / "waits.py").write_text(
        "import os, time\nos.makedirs('outputs')\nopen('outputs/partial.txt', 'w').write('p')\n"
        "from azureml.core import Run\nRun.get_context().log('step', 1)\n"
        "print('ready', flush=True)\ntime.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "envbuild", "run", "--azureml-context"),
            *("--source-dir", str(src), f"image:{ref}", "waits.py"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "ENVBUILD_HOME": str(home)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode(errors="replace")
    (run_id,) = [p.name for p in (home / "runs").iterdir() if p.is_dir()]
    _nothing_left(run_id)
    assert sorted(p.name for p in (home / "runs" / run_id).iterdir()) == ["files"]
    assert (home / "runs" / run_id / "files" / "outputs" / "partial.txt").read_text() == "p"
    shown = subprocess.run(
        [sys.executable, "-m", "envbuild", "runs", "show", run_id, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "ENVBUILD_HOME": str(home)},
        timeout=60,
        check=True,
    )
    doc = json.loads(shown.stdout)
    assert (doc["status"], doc["metrics"], doc["files"]) == (
        "interrupted",
        {"step": 1},
        ["outputs/partial.txt"],
    )


@pytest.mark.skipif(
    os.geteuid() != 0, reason="a run as another user writes its snapshot only as root"
)
def test_a_run_as_another_user_writes_its_snapshot(src: Path, home: Path) -> None:
    ref = _image(IMAGES[0])
    chunks: list[bytes] = []
    result = run(
        RunConfig(
            environment=f"image:{ref}",
            script="train.py",
            source_directory=src,
            azureml_context=True,
            user="1000:1000",
        ),
        output=lambda stream, data: chunks.append(data),
        log=lambda line: None,
    )
    _nothing_left(result.run_id)
    assert result.exit_code == 0, b"".join(chunks).decode(errors="replace")
    assert result.metrics["loss"] == [0.5, 0.4]
    assert result.files_dir is not None
    model = result.files_dir / "outputs" / "model.txt"
    assert model.read_text() == "weights" and model.stat().st_uid == 1000
