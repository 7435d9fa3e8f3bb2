"""The benchmarks' own checks (bench/ holds scripts, not a package: imported by path)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def build_cold() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("build_cold")
    finally:
        sys.path.remove(str(BENCH))


def _log(cached: str) -> str:
    """A cold BuildKit log (Engine 20.10, plain progress) with step ``cached`` shown cached."""
    steps = {
        "4": "[stage-0 1/3] FROM docker.io/library/debian:bookworm-slim",
        "5": "[stage-0 2/3] COPY envbuild/requirements.txt /envbuild/requirements.txt",
        "6": "[stage-0 3/3] RUN apt-get update",
    }
    lines = []
    for num, title in steps.items():
        lines.append(f"#{num} {title}")
        lines.append(f"#{num} CACHED" if num == cached else f"#{num} DONE 1.5s")
        lines.append("")
    lines += ["#7 exporting to image", "#7 DONE 0.2s"]
    return "\n".join(lines)


@pytest.mark.parametrize("num", ["4", "5"])
def test_a_cold_build_may_show_the_base_and_a_copy_cached(build_cold: ModuleType, num: str) -> None:
    # The base is local and kept: BuildKit reports its FROM cached on a machine
    # that holds it. Neither that nor a COPY stops the benchmark.
    log = build_cold.BuildLog()
    log(_log(cached=num))
    assert len(log.cached) == 1
    assert "RUN apt-get update" in "".join(log.runs[0])


def test_a_cached_run_step_stops_a_cold_benchmark(build_cold: ModuleType) -> None:
    log = build_cold.BuildLog()
    with pytest.raises(RuntimeError, match=r"hit the cache: \[3/3\] RUN apt-get update"):
        log(_log(cached="6"))


@pytest.fixture
def common() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("_common")
    finally:
        sys.path.remove(str(BENCH))


def test_startup_hooks_are_the_pth_files_that_run_code(common: ModuleType, tmp_path: Path) -> None:
    # site runs a .pth line that starts with "import"; other lines only extend sys.path.
    (tmp_path / "hook.pth").write_text("import os; os.getpid()\n")
    (tmp_path / "tabbed.pth").write_text("/some/path\nimport\tsys\n")
    (tmp_path / "paths.pth").write_text("/some/path\n# import nothing\n")
    (tmp_path / "notes.txt").write_text("import os\n")
    found = common.startup_hooks([str(tmp_path), str(tmp_path / "missing")])
    assert found == [str(tmp_path / "hook.pth"), str(tmp_path / "tabbed.pth")]


def test_the_interpreter_facts_name_this_interpreter(common: ModuleType) -> None:
    facts = common.interpreter()
    assert facts["executable"] == sys.executable
    assert facts["virtualenv"] == (sys.prefix != sys.base_prefix)
    assert isinstance(facts["start_ms"], float) and facts["start_ms"] > 0
