"""An imported Azure ML SDK v1 environment builds on the real engine and runs as it said.

A tiny one (Debian 12's Python 3.11, one small pure package from the index)
keeps it fast; the unit tests cover every format and field.
"""

from __future__ import annotations

import json
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
