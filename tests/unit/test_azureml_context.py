"""The in-container azureml.core: every Python from 3.6, many writers, what it refuses."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from envbuild.run import metrics
from envbuild.run.config import INPUTS_ROOT
from envbuild.run.files import context_dir
from envbuild.run.metrics import read

CONTEXT = context_dir()
SOURCES = sorted(CONTEXT.rglob("*.py"))

SCRIPT = """
import json, sys
from azureml.core import Run
from azureml.core.run import Run as Same
assert Run is Same
run = Run.get_context()
assert Run.get_context() is run
from azureml.core.run import _OfflineRun
assert not isinstance(run, _OfflineRun)  # tracked: its metrics reach envbuild
run.log("loss", 0.5)
run.log("loss", 0.4)
run.log("once", 7)
run.log_list("acc", [0.1, 0.2])
run.log_row("table", epoch=1, loss=0.5)
run.log_row("table", epoch=2, loss=0.25)
run.log_table("cm", {"a": [1, 2]})
run.log("bad", float("nan"))
run.tag("model", "cnn")
run.tag("empty")
run.complete()
print(json.dumps({"id": run.id, "metrics": run.get_metrics(), "tags": run.get_tags(),
                  "version": list(sys.version_info[:2])}))
"""


def interpreters() -> list[object]:
    """Every Python 3 on this machine (pyenv's included), one per version, oldest first."""
    found: dict[tuple[int, ...], str] = {}
    for exe in sorted((Path.home() / ".pyenv" / "versions").glob("3.*/bin/python3")):
        found.setdefault(tuple(map(int, exe.parent.parent.name.split(".")[:2])), str(exe))
    for minor in range(6, 15):
        which = shutil.which(f"python3.{minor}")
        if which:
            found.setdefault((3, minor), which)
    found.setdefault(sys.version_info[:2], sys.executable)
    return [pytest.param(found[v], id="py" + ".".join(map(str, v))) for v in sorted(found)]


def run_in(
    python: str, script: str, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(CONTEXT),
        "ENVBUILD_METRICS_FILE": str(tmp_path / "metrics.jsonl"),
        "ENVBUILD_RUN_ID": "abc123",
        **env,
    }
    return subprocess.run(
        [python, "-c", script], capture_output=True, text=True, env=environ, timeout=60
    )


@pytest.mark.parametrize("python", interpreters())
def test_every_python_logs_what_envbuild_reads(python: str, tmp_path: Path) -> None:
    done = run_in(python, SCRIPT, tmp_path)
    assert done.returncode == 0, done.stderr
    inside = json.loads(done.stdout)
    assert inside["id"] == "abc123"
    found = read(tmp_path / "metrics.jsonl")
    assert found.warnings == ()
    expected = {
        "loss": [0.5, 0.4],
        "once": 7,
        "acc": [0.1, 0.2],
        "table": [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}],
        "cm": {"a": [1, 2]},
        "bad": "nan",
    }
    assert dict(found.metrics) == expected
    assert dict(found.tags) == {"model": "cnn", "empty": ""}
    # The script's own get_metrics() follows the same rule as the host's merge.
    assert inside["metrics"] == expected and inside["tags"] == found.tags


def _annotations(tree: ast.AST) -> list[ast.expr]:
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
    return found


def test_the_source_is_python_3_6_syntax() -> None:
    builtins = {"list", "dict", "tuple", "set", "frozenset", "type"}
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path), feature_version=(3, 6))
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.ImportFrom) and node.module == "__future__"), (
                f"{path}: no __future__ imports (3.6 has no annotations future)"
            )
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                top = (module or "").split(".")[0]
                assert top in sys.stdlib_module_names or top == "azureml", f"{path}: {module}"
        for annotation in _annotations(tree):  # evaluated when the function is defined
            for node in ast.walk(annotation):
                if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
                    assert node.value.id not in builtins, f"{path}:{node.lineno}: builtin[...]"
                assert not isinstance(node, ast.BinOp), f"{path}:{node.lineno}: X | Y is 3.10"


def test_the_constants_agree_with_the_host() -> None:
    spec = importlib.util.spec_from_file_location(
        "_envbuild_test_azureml_run", CONTEXT / "azureml" / "core" / "run.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.METRICS_FILE_VARIABLE == metrics.METRICS_FILE_VARIABLE
    assert module.FORMAT == metrics.FORMAT
    assert module.MAX_LINE_BYTES == metrics.MAX_LINE_BYTES
    assert module.MAX_NAME_CHARS == metrics.MAX_NAME_CHARS
    assert module.RUN_ID_VARIABLE == "ENVBUILD_RUN_ID"  # planning's variable
    assert module.INPUTS_ROOT == INPUTS_ROOT


def test_many_processes_append_whole_lines(tmp_path: Path) -> None:
    script = """
import os
from azureml.core import Run
run = Run.get_context()
for i in range(200):
    run.log("m" + os.environ["RANK"], "x" * 3000 + str(i))
"""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env={
                "PYTHONPATH": str(CONTEXT),
                "ENVBUILD_METRICS_FILE": str(tmp_path / "metrics.jsonl"),
                "RANK": str(rank),
            },
        )
        for rank in range(4)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0] * 4
    found = read(tmp_path / "metrics.jsonl")
    assert found.warnings == ()
    for rank in range(4):
        assert found.metrics[f"m{rank}"] == ["x" * 3000 + str(i) for i in range(200)]
    lines = (tmp_path / "metrics.jsonl").read_bytes().splitlines()
    assert {json.loads(x)["rank"] for x in lines} == {"0", "1", "2", "3"}


def test_without_envbuild_it_logs_in_memory(tmp_path: Path) -> None:
    done = run_in(
        sys.executable,
        "from azureml.core import Run\nr = Run.get_context()\nr.log('a', 1)\n"
        "from azureml.core.run import _OfflineRun\n"
        "print(r.id.startswith('OfflineRun_'), isinstance(r, _OfflineRun), r.get_metrics())",
        tmp_path,
        ENVBUILD_METRICS_FILE="",
        ENVBUILD_RUN_ID="",
    )
    assert done.stdout.strip() == "True True {'a': 1}", done.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_numpy_like_values_become_json(tmp_path: Path) -> None:
    script = """
from azureml.core import Run
class Scalar:
    def item(self): return 0.25
class Array:
    def item(self): raise ValueError("only one element tensors")
    def tolist(self): return [1, 2]
Run.get_context().log("s", Scalar())
Run.get_context().log("a", Array())
Run.get_context().log("o", object())
"""
    done = run_in(sys.executable, script, tmp_path)
    assert done.returncode == 0, done.stderr
    found = read(tmp_path / "metrics.jsonl")
    assert found.metrics["s"] == 0.25 and found.metrics["a"] == [1, 2]
    assert str(found.metrics["o"]).startswith("<object object")


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("from azureml.core import Workspace", "azureml.core.Workspace is not available"),
        ("from azureml.core import Run\nRun.get_context().upload_file('a', 'b')", "./outputs"),
        ("from azureml.core import Run\nRun.get_context().log_image('a')", "./outputs"),
        (
            "from azureml.core import Run\nRun.get_context().experiment.workspace",
            "Experiment.workspace",
        ),
        ("from azureml.core import Run\nRun.get_context().log('', 1)", "metric or tag name"),
        ("from azureml.core import Run\nRun.get_context().log('x', 'a' * 2000000)", "./outputs"),
    ],
)
def test_what_it_does_not_do_is_an_error_naming_the_alternative(
    code: str, needle: str, tmp_path: Path
) -> None:
    done = run_in(sys.executable, code, tmp_path)
    assert done.returncode == 1 and needle in done.stderr, done.stderr


def test_hasattr_and_other_azureml_packages_still_work(tmp_path: Path) -> None:
    other = tmp_path / "site" / "azureml" / "other"
    other.mkdir(parents=True)
    (tmp_path / "site" / "azureml" / "__init__.py").write_text(
        "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    )
    (other / "__init__.py").write_text("VALUE = 42\n")
    done = run_in(
        sys.executable,
        "import azureml.core, azureml.other\nfrom azureml.core import Run\n"
        "print(hasattr(Run.get_context(), 'no_such'), azureml.other.VALUE)",
        tmp_path,
        PYTHONPATH=f"{CONTEXT}:{tmp_path / 'site'}",
    )
    assert done.stdout.strip() == "False 42", done.stderr
