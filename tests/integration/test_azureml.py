"""The seed's samples, run through envbuild.azureml on the real engine.

Each test is one of the seed guide's constructs (environment variables,
datasets as mount and download, a DataReference, the curated PyTorch
environment, a distributed configuration) written as the seed writes it,
with only the import changed. Environments are the curated images the engine
holds (a cache hit: nothing is built), so the whole file takes seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import envbuild
from envbuild.azureml import (
    Dataset,
    Environment,
    Experiment,
    MpiConfiguration,
    PyTorchConfiguration,
    ScriptRunConfig,
    Workspace,
)
from envbuild.azureml.curated import curated_folder
from envbuild.run.config import RUN_LABEL
from envbuild.run.history import History

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, docker_cli: str) -> Iterator[Workspace]:
    """A workspace of the test's own ENVBUILD_HOME; afterwards, no run of it left a container."""
    monkeypatch.setenv("ENVBUILD_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    workspace = Workspace.from_config()
    yield workspace
    if (tmp_path / "home" / "runs.db").exists():
        for record in History.at(workspace.settings).list(limit=None):
            _nothing_left(docker_cli, record.id)


def _nothing_left(docker_cli: str, run_id: str) -> None:
    left = subprocess.run(
        [docker_cli, "ps", "-aq", "--filter", f"label={RUN_LABEL}={run_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert left == "", f"containers of run {run_id} survived: {left}"


def _script(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(text)
    return folder


def test_message_reaches_the_script(
    ws: Workspace, tmp_path: Path, docker_cli: str, capfd: pytest.CaptureFixture[str]
) -> None:
    src_dir = _script(
        tmp_path / "src",
        "import os, sys\nprint('MESSAGE=' + os.environ['MESSAGE'], *sys.argv[1:])\n",
    )
    myenv = Environment(name="myenv")
    myenv.environment_variables = {"MESSAGE": "Hello from Azure Machine Learning"}
    src = ScriptRunConfig(
        source_directory=str(src_dir),
        script="train.py",
        arguments=["--epochs", 2],
        compute_target="cpu-cluster",
        environment=myenv,
    )
    run = Experiment(workspace=ws, name="message").submit(src)
    details = run.wait_for_completion(show_output=True)
    out = capfd.readouterr().out
    assert "MESSAGE=Hello from Azure Machine Learning --epochs 2" in out
    assert run.get_status() == "Completed" and details["envbuild"]["exitCode"] == 0
    record = History.at(ws.settings).get(run.id)
    assert record.exit_code == 0 and "MESSAGE" in record.variables
    _nothing_left(docker_cli, run.id)


def test_metrics_and_outputs_of_the_script(
    ws: Workspace, tmp_path: Path, docker_cli: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """The training script unchanged: its own azureml.core logs into envbuild's history."""
    src_dir = _script(
        tmp_path / "src",
        "import os\n"
        "from azureml.core import Run\n"
        "run = Run.get_context()\n"
        "print('experiment', run.experiment.name)\n"
        "for loss in (0.5, 0.25):\n"
        "    run.log('loss', loss)\n"
        "run.log('accuracy', 0.9)\n"
        "run.tag('model', 'cnn')\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/model.txt', 'w').write('weights')\n"
        "open('scratch.txt', 'w').write('not kept')\n",
    )
    src = ScriptRunConfig(
        source_directory=str(src_dir), script="train.py", environment=Environment("myenv")
    )
    run = Experiment(workspace=ws, name="metrics").submit(src)
    run.wait_for_completion(show_output=True)
    assert "experiment metrics" in capfd.readouterr().out
    assert run.get_metrics() == {"loss": [0.5, 0.25], "accuracy": 0.9}
    assert run.get_tags()["model"] == "cnn"
    assert run.get_file_names() == ["outputs/model.txt"]
    run.download_file("outputs/model.txt", output_file_path=str(tmp_path / "model.txt"))
    assert (tmp_path / "model.txt").read_text() == "weights"
    assert sorted(p.name for p in src_dir.iterdir()) == ["train.py"]  # the source is untouched
    record = History.at(ws.settings).get(run.id)
    assert record.metrics == {"loss": [0.5, 0.25], "accuracy": 0.9}
    shown = subprocess.run(
        [sys.executable, "-m", "envbuild", "runs", "show", run.id, "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(shown)["metrics"] == {"loss": [0.5, 0.25], "accuracy": 0.9}
    _nothing_left(docker_cli, run.id)


def test_cancel_stops_a_running_script(ws: Workspace, tmp_path: Path, docker_cli: str) -> None:
    src_dir = _script(
        tmp_path / "src", "import time\nprint('started', flush=True)\ntime.sleep(300)\n"
    )
    src = ScriptRunConfig(
        source_directory=str(src_dir), script="train.py", environment=Environment("myenv")
    )
    run = Experiment(ws, "cancel").submit(src)
    deadline = time.monotonic() + 60
    while not run._chunks and time.monotonic() < deadline:  # its first line: it runs
        time.sleep(0.05)
    started = time.monotonic()
    run.cancel()
    run.wait_for_completion(raise_on_error=False)
    assert run.get_status() == "Canceled"
    assert time.monotonic() - started < 20  # the stop, not the script's 300 s
    _nothing_left(docker_cli, run.id)


def test_datasets_mount_read_only_and_download_a_copy(
    ws: Workspace, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "mnist"
    data.mkdir()
    (data / "numbers.txt").write_text("1 2 3\n")
    src_dir = _script(
        tmp_path / "src",
        "import sys\n"
        "folder = sys.argv[2]\n"
        "print('read', open(folder + '/numbers.txt').read().strip())\n"
        "try:\n"
        "    open(folder + '/numbers.txt', 'w').write('changed')\n"
        "    print('wrote', sys.argv[1])\n"
        "except OSError as exc:\n"
        "    print('refused', sys.argv[1], exc.errno)\n",
    )
    mnist_ds = Dataset.File.from_files(path=str(data))
    for mode, consumption in (("mount", mnist_ds.as_mount()), ("download", mnist_ds.as_download())):
        src = ScriptRunConfig(
            source_directory=str(src_dir),
            script="train.py",
            arguments=[mode, consumption],
            environment=Environment("myenv"),
        )
        Experiment(ws, "data").submit(src).wait_for_completion(show_output=True)
    out = capfd.readouterr().out
    assert out.count("read 1 2 3") == 2
    assert "refused mount 30" in out  # EROFS: the mounted dataset is read-only
    assert "wrote download" in out  # the downloaded one is the script's own copy
    assert (data / "numbers.txt").read_text() == "1 2 3\n"  # the host data never changes


def test_a_datastore_path_as_a_data_reference(
    ws: Workspace, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "labels.csv").write_text("a,b\n")
    src_dir = _script(
        tmp_path / "src",
        "import os, sys\n"
        "print('files', sorted(os.listdir(sys.argv[2])), sys.argv[2] == os.environ["
        "'AZUREML_DATAREFERENCE_data'])\n",
    )
    def_blob_store = ws.get_default_datastore()
    def_blob_store.upload(src_dir=str(upload), target_path="foo")
    data_ref = def_blob_store.path("./foo", data_reference_name="data").as_mount()
    src = ScriptRunConfig(
        source_directory=str(src_dir),
        script="train.py",
        arguments=["--data", str(data_ref)],
        environment=Environment("myenv"),
    )
    src.run_config.data_references = {data_ref.data_reference_name: data_ref.to_config()}
    Experiment(ws, "data-reference").submit(src).wait_for_completion(show_output=True)
    assert "files ['labels.csv'] True" in capfd.readouterr().out


def test_the_curated_pytorch_environment(
    ws: Workspace, tmp_path: Path, docker_cli: str, capfd: pytest.CaptureFixture[str]
) -> None:
    folder = curated_folder("AzureML-PyTorch-1.6-GPU")
    resolved = envbuild.resolve(folder, settings=ws.settings)
    held = subprocess.run(
        [docker_cli, "image", "inspect", resolved.hash_tag], capture_output=True, check=False
    )
    if held.returncode != 0:
        pytest.skip(f"the engine does not hold {resolved.hash_tag} (build curated/ first)")
    src_dir = _script(tmp_path / "src", "import torch\nprint('torch', torch.__version__)\n")
    pytorch_env = Environment.get(workspace=ws, name="AzureML-PyTorch-1.6-GPU")
    src = ScriptRunConfig(source_directory=str(src_dir), script="train.py", environment=pytorch_env)
    run = Experiment(ws, "pytorch").submit(src)
    details = run.wait_for_completion(show_output=True)
    assert "torch 1.6.0" in capfd.readouterr().out
    # The catalog's own image: a cache hit, nothing built.
    assert details["envbuild"]["image"] == resolved.hash_tag
    assert envbuild.build(folder, settings=ws.settings).cached


def _curated_image_or_skip(ws: Workspace, docker_cli: str, folder: Path) -> None:
    resolved = envbuild.resolve(folder, settings=ws.settings)
    held = subprocess.run(
        [docker_cli, "image", "inspect", resolved.hash_tag], capture_output=True, check=False
    )
    if held.returncode != 0:
        pytest.skip(f"the engine does not hold {resolved.hash_tag} (build curated/ first)")


def test_pytorch_two_nodes_two_processes_each(
    ws: Workspace, tmp_path: Path, docker_cli: str, capfd: pytest.CaptureFixture[str]
) -> None:
    folder = curated_folder("AzureML-PyTorch-1.6-GPU")
    _curated_image_or_skip(ws, docker_cli, folder)
    src_dir = _script(
        tmp_path / "src",
        "import sys, torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "t = torch.tensor([dist.get_rank() + 1.0])\n"
        "dist.all_reduce(t)\n"
        # One write per line: two processes share a node's stdout.
        "line = f'rank {dist.get_rank()} of {dist.get_world_size()} sum {t.item()}\\n'\n"
        "sys.stdout.write(line)\n"
        "sys.stdout.flush()\n",
    )
    src = ScriptRunConfig(
        source_directory=str(src_dir),
        script="train.py",
        environment=Environment.get(workspace=ws, name="AzureML-PyTorch-1.6-GPU"),
        distributed_job_config=PyTorchConfiguration(
            communication_backend="Gloo", process_count=4, node_count=2
        ),
    )
    run = Experiment(ws, "pytorch-ddp").submit(src)
    run.wait_for_completion(show_output=True)
    out = capfd.readouterr().out
    for rank in range(4):
        assert f"rank {rank} of 4 sum 10.0" in out
    _nothing_left(docker_cli, run.id)


def test_mpi_two_nodes_two_processes_each_runs_four_ranks(
    ws: Workspace, tmp_path: Path, docker_cli: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """The seed's MpiConfiguration(node_count=2, process_count_per_node=2) on Azure's
    default image, which carried Open MPI: curated/mpi-4.1-cpu here."""
    _curated_image_or_skip(ws, docker_cli, ROOT / "curated" / "mpi-4.1-cpu")
    src_dir = _script(
        tmp_path / "src",
        "import sys\n"
        "from mpi4py import MPI\n"
        "comm = MPI.COMM_WORLD\n"
        "total = comm.allreduce(comm.Get_rank() + 1)\n"
        "sys.stdout.write(f'rank {comm.Get_rank()} of {comm.Get_size()} sum {total}\\n')\n"
        "sys.stdout.flush()\n",
    )
    distr_config = MpiConfiguration(node_count=2, process_count_per_node=2)
    src = ScriptRunConfig(
        source_directory=str(src_dir),
        script="train.py",
        environment=Environment("myenv"),
        distributed_job_config=distr_config,
    )
    run = Experiment(ws, "mpi").submit(src)
    details = run.wait_for_completion(show_output=True)
    out = capfd.readouterr().out
    for rank in range(4):
        assert f"rank {rank} of 4 sum 10" in out
    assert details["runDefinition"]["nodeCount"] == 2
    _nothing_left(docker_cli, run.id)
