"""docs/api.md's example, run as written against the real engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_api import doc_blocks, doc_workspace

pytestmark = pytest.mark.docker


def test_the_docs_example_runs_for_real(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    doc_workspace(tmp_path / "work")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("ENVBUILD_HOME", str(tmp_path / "home"))
    namespace: dict[str, object] = {}
    for block in doc_blocks():
        exec(compile(block, "docs/api.md", "exec"), namespace)
    out = capfd.readouterr().out
    assert "exit code 0" in out
    # The script's own output, from inside the container: the variable and the input's path.
    assert "Hello from the API --data /inputs/data" in out
    assert "ScriptNotFoundError 127" in out
