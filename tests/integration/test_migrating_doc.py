"""docs/migrating-from-azureml.md, run as written on the real engine: its Python, then its
command lines.

The curated environments are the images the engine holds (cache hits); the
custom environment's build adds one pip package to ``curated/python-3.11``'s
layers. Every run's containers are gone afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from envbuild.run.history import History
from envbuild.settings import load_settings
from tests.integration.test_azureml import _nothing_left
from tests.unit.test_migrating_doc import doc_commands, doc_workspace, run_doc

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_the_docs_examples_run_for_real(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    docker_cli: str,
) -> None:
    work, home = tmp_path / "work", tmp_path / "home"
    doc_workspace(work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("ENVBUILD_HOME", str(home))
    run_doc({})
    out = capfd.readouterr().out
    assert "Completed {'loss': [1.0, 0.5]}" in out  # the curated PyTorch environment
    assert "MESSAGE: Hello from Azure ML code" in out
    assert out.count("data: ['labels.txt']") >= 3  # mount, download, the data reference
    assert "{'loss': [1.0, 0.5, 0.3333333333333333]}" in out
    assert "['outputs/model.txt']" in out
    assert (work / "model.txt").read_text() == "weights\n"
    assert (work / "results" / "outputs" / "model.txt").is_file()
    runs = History.at(load_settings()).list(limit=None)
    assert runs and all(r.exit_code == 0 for r in runs), [(r.id, r.exit_code) for r in runs]
    for record in runs:
        _nothing_left(docker_cli, record.id)

    # The same constructs in envbuild's own terms: the page's command lines.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "envbuild"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m envbuild "$@"\n')
    wrapper.chmod(0o755)
    environ = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for command in doc_commands():
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=work,
            env=environ,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        if "-e MESSAGE=" in command:
            assert "MESSAGE: Hello from the command line" in done.stdout
        if "--input data=mnist" in command:
            assert "data: ['labels.txt']" in done.stdout
    later = History.at(load_settings()).list(limit=None)
    for record in later:
        _nothing_left(docker_cli, record.id)
