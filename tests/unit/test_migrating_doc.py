"""docs/migrating-from-azureml.md: every Python block runs as written (no engine here).

The runs are stubbed at the one place envbuild.azureml starts them
(``Run._start``), so that what each example would run, its ``RunConfig``, is
checked; ``tests/integration/test_migrating_doc.py`` runs the same blocks,
and the ``sh`` blocks, on the real engine. The ``envbuild run`` command
lines are checked here with ``--dry-run``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from envbuild.run.config import Mpi, PyTorch, RunConfig, RunResult, TensorFlow

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "migrating-from-azureml.md"
SCRIPT_MARK = "# train.py\n"


def doc_blocks(kind: str = "python") -> list[str]:
    """The ``kind`` code blocks of the page, in order (the script's block included)."""
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"^```{kind}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def doc_commands() -> list[str]:
    """The command lines of the page's ``sh`` blocks."""
    return [line for block in doc_blocks("sh") for line in block.splitlines() if line.strip()]


def doc_workspace(folder: Path) -> None:
    """What the examples run from: the page's train.py, a mnist/ folder, the catalog."""
    folder.mkdir(parents=True, exist_ok=True)
    scripts = [b for b in doc_blocks() if b.startswith(SCRIPT_MARK)]
    assert len(scripts) == 1
    (folder / "train.py").write_text(scripts[0][len(SCRIPT_MARK) :])
    (folder / "mnist").mkdir()
    (folder / "mnist" / "labels.txt").write_text("0 1 2\n")
    (folder / "curated").symlink_to(ROOT / "curated")


def run_doc(namespace: dict[str, Any]) -> None:
    """Execute the page's Python blocks (all but the script) in one namespace."""
    for block in doc_blocks():
        if not block.startswith(SCRIPT_MARK):
            exec(compile(block, str(DOC), "exec"), namespace)


def test_the_docs_python_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import envbuild.run.files as files
    import envbuild.run.local as local
    from envbuild.azureml.experiment import COMPLETED, Experiment, Run

    submitted: list[RunConfig] = []

    def result(config: RunConfig, run_id: str) -> RunResult:
        return RunResult(
            run_id=run_id,
            exit_code=0,
            status="exited",
            duration=0.1,
            log_path=None,
            outputs=MappingProxyType({}),
            image="envbuild/fake:1",
            image_id="sha256:" + "0" * 64,
            metrics=MappingProxyType({"loss": [1.0]}),
        )

    def start(
        cls: type[Run], experiment: Experiment, config: RunConfig, tags: dict[str, str]
    ) -> Run:
        submitted.append(config)
        run = cls(experiment, local.new_run_id(), config, tags)
        run._result, run._status = result(config, run.id), COMPLETED
        return run

    def fetch(run_id: str, name: str, destination: Path, settings: object = None) -> Path:
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text("weights\n")
        return destination

    monkeypatch.setattr(Run, "_start", classmethod(start))
    monkeypatch.setattr(local, "run", lambda config, **kw: result(config, "0" * 12))
    monkeypatch.setattr(files, "kept_files", lambda run_id, settings=None: ["outputs/model.txt"])
    monkeypatch.setattr(files, "fetch", fetch)
    doc_workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    run_doc({})

    out = capsys.readouterr().out
    assert "Completed {'loss': [1.0]}" in out
    assert "myenv 1" in out
    assert (tmp_path / "model.txt").is_file() and (tmp_path / "results/outputs/model.txt").is_file()
    by_experiment = dict(zip(_experiments(), submitted, strict=True))
    assert str(by_experiment["curated"].environment).endswith("curated/pytorch-1.6-gpu")
    assert by_experiment["curated"].arguments == ("--epochs", "2")
    assert by_experiment["message"].environment_variables["MESSAGE"] == "Hello from Azure ML code"
    assert by_experiment["mount"].inputs[0].mode == "mount"
    assert by_experiment["download"].inputs[0].mode == "download"
    assert by_experiment["data-reference"].arguments == (
        "--data-folder",
        "${{inputs.workspaceblobstore_foo}}",
    )
    assert by_experiment["mpi"].distribution == Mpi(2, 2)
    assert str(by_experiment["mpi"].environment).endswith("curated/mpi-4.1-cpu")
    assert by_experiment["pytorch"].distribution == PyTorch(2, 2, "gloo", "launch")
    assert by_experiment["tensorflow"].distribution == TensorFlow(2, 1)
    assert all(config.azureml_context for config in submitted)


def _experiments() -> list[str]:
    """The experiment names the page submits to, in order."""
    text = "".join(b for b in doc_blocks() if not b.startswith(SCRIPT_MARK))
    return re.findall(r'Experiment\(workspace=ws, name="([^"]+)"\)\.submit', text)


def test_the_docs_run_commands_are_valid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from envbuild.cli.main import main

    doc_workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    commands = [c for c in doc_commands() if c.startswith("envbuild run ")]
    assert len(commands) >= 6
    for command in commands:
        argv = shlex.split(command)
        assert main(["run", "--dry-run", *argv[2:]]) == 0, command
    capsys.readouterr()


def test_the_table_of_contents_names_every_construct() -> None:
    text = DOC.read_text(encoding="utf-8")
    for construct in (
        "Environment.get(",
        "CondaDependencies.create(",
        "environment_variables",
        "as_mount()",
        "as_download()",
        "data_references",
        "MpiConfiguration(",
        "PyTorchConfiguration(",
        "TensorflowConfiguration(",
        "src.run_config",
    ):
        assert construct in text, construct
