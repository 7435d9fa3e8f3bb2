"""An imported Azure ML SDK v1 environment builds on the real engine and runs as it said.

A tiny one (Debian 12's Python 3.11, one small pure package from the index)
keeps it fast; the unit tests cover every format and field.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_build import Envbuild, eb  # noqa: F401 - eb is a fixture

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "fixtures" / "azureml" / "v1-tiny-build"

pytestmark = pytest.mark.docker


def test_imported_v1_environment_builds_and_runs(
    eb: Envbuild,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = tmp_path / "tiny"
    imported = eb("import", "azureml", str(SOURCE), "-o", str(folder), "--json")
    report = json.loads(imported.stdout)
    assert report["files"] == ["env.toml"]
    # azureml-defaults is left out, with a warning naming its place in the conda file
    assert [w["field"] for w in report["warnings"]] == ["dependencies[1].pip[1]"]
    result = json.loads(eb("build", "--json", "-q", str(folder), timeout=900).stdout)
    assert result["image"].startswith(f"{eb.prefix}/tiny-build:")
    out = eb.run_in(
        result["image"],
        "python",
        "-c",
        "import os, sys, six; print(sys.version_info[:2], six.__version__, os.environ['MESSAGE'])",
    )
    assert out.strip() == '(3, 11) 1.16.0 Hello "from" Azure ML'


def test_imported_runconfig_runs_with_its_script(eb: Envbuild, tmp_path: Path) -> None:  # noqa: F811
    """The run.sh an imported .runconfig gets runs the project's script as Azure ML did."""
    runconfig = ROOT / "tests" / "fixtures" / "azureml" / "tiny-project" / ".azureml"
    folder = tmp_path / "hello"
    eb("import", "azureml", str(runconfig / "hello.runconfig"), "-o", str(folder))
    data = folder / "data" / "greetings"  # the placeholder the import's warning names
    data.mkdir(parents=True)
    (data / "greeting.txt").write_text("Hi there\n")
    env = {**eb.env, "PATH": f"{_envbuild_on_path(tmp_path)}:{eb.env['PATH']}"}
    proc = subprocess.run(
        [str(folder / "run.sh")], capture_output=True, text=True, env=env, timeout=900, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [line for line in proc.stdout.splitlines() if line.startswith("Hi there")]
    assert said == ["Hi there / Hello from the environment / loud"] * 2
    # the script's own Run.get_context().log landed in the run history (--azureml-context)
    (latest, *_) = json.loads(eb("runs", "--json").stdout)
    assert latest["metrics"] == {"times": 2}
    assert latest["exit_code"] == 0


@pytest.mark.slow
def test_azure_openmpi_environment_runs_mpi_across_containers(
    eb: Envbuild,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Azure's openmpi Ubuntu image, imported, carries what an MPI job needs: 2 nodes x 2 ranks.

    Builds Ubuntu 20.04 with Open MPI and OpenSSH from apt (about 90 s on the
    CI machine with the base in the engine).
    """
    runconfig = ROOT / "tests" / "fixtures" / "azureml" / "mpi-project" / ".azureml"
    folder = tmp_path / "mpi"
    eb("import", "azureml", str(runconfig / "mpi.runconfig"), "-o", str(folder))
    proc = subprocess.run(
        [str(folder / "run.sh")],
        capture_output=True,
        text=True,
        env={**eb.env, "PATH": f"{_envbuild_on_path(tmp_path)}:{eb.env['PATH']}"},
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # mpirun forwards each rank's output on node 0; lines of ranks may interleave
    ranks = sorted(re.findall(r"rank (\d) of 4", proc.stdout))
    assert ranks == ["0", "1", "2", "3"], proc.stdout + proc.stderr[-2000:]


def _envbuild_on_path(tmp_path: Path) -> Path:
    """A folder holding an `envbuild` that runs this checkout's (for run.sh)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "envbuild").write_text(f'#!/bin/sh\nexec {sys.executable} -m envbuild "$@"\n')
    (bin_dir / "envbuild").chmod(0o755)
    return bin_dir
